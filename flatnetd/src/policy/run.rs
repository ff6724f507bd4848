//! Keeps the data plane's policy current: every second the table is
//! compiled again from the Lighthouse's peer list (members, their policies,
//! node subnets) and Flatnet DNS's names, and put in force if it changed.
//! A container started or renamed is covered by its service's rules
//! within a second of its name arriving.

use std::{sync::Arc, time::Duration};

use crate::{dataplane::userspace::Userspace, lighthouse::LhClient, service::Service};

pub const EVERY: Duration = Duration::from_secs(1);

pub async fn run(lh: Arc<LhClient>, us: Arc<Userspace>, service: Arc<Service>) {
    let mut iv = tokio::time::interval(EVERY);
    loop {
        iv.tick().await;
        let mut inputs = lh.policy_inputs();
        if let Some(dns) = service.dns() {
            inputs.names = dns
                .list()
                .into_iter()
                .map(|(node, name, ip, _)| (node, name, ip))
                .collect();
        }
        us.set_policy(super::compile(&inputs), inputs.members_range);
    }
}
