//! Lease reconciliation without GC.
//!
//! netavark never calls a GC, and a `podman rm` while flatnetd is down
//! removes the container without releasing its lease. So flatnetd itself
//! reclaims leases whose container is gone: the plugin names each host veth
//! after its attachment ([`flatnet_wire::veth::host_ifname`]), and the
//! kernel deletes that veth with the container's network namespace. A
//! lease whose host veth has vanished, and which the runtime has not asked
//! for within a grace period (an ADD in flight has its lease before its
//! veth exists), is released. A live container's veth exists, so its lease
//! is never touched; and while the network namespace recorded with the
//! lease is still a live namespace (when flatnetd can see that path), the
//! lease is kept too, so a flatnetd started in the wrong network namespace
//! cannot mistake every container for a dead one. The grace also runs from
//! flatnetd's own start: after a reboot every veth is gone, and the runtime
//! (podman-restart.service, `--restart=always`) starts the containers again
//! with the same IDs, so each gets its old address back instead of a new
//! one. The same loop re-applies the host's nftables table,
//! repairing it when a firewall reload or `nft flush ruleset` removed it.
//!
//! [`stale`] is the pure decision; [`run`] is the I/O loop around it.

use std::time::Duration;

use flatnet_wire::{veth::host_ifname, Lease};
use tracing::warn;

use crate::service::SharedService;

/// When leases may be reclaimed: `now`, the grace in seconds, and when
/// flatnetd started (unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    pub now: u64,
    pub secs: u64,
    pub started: u64,
}

/// The leases to reclaim: last asked for, and flatnetd started, more than
/// the grace ago; whose host veth `wired` says is gone; and whose recorded
/// network namespace `ns_alive` does not vouch for.
pub fn stale(
    leases: &[Lease],
    g: Grace,
    wired: impl Fn(&str) -> bool,
    ns_alive: impl Fn(&str) -> bool,
) -> Vec<&Lease> {
    leases
        .iter()
        .filter(|l| g.now.saturating_sub(l.touched().max(g.started)) >= g.secs)
        .filter(|l| !wired(&host_ifname(&l.key.container_id, &l.key.ifname)))
        .filter(|l| !l.netns.as_deref().is_some_and(&ns_alive))
        .collect()
}

/// Whether `path` is a live network namespace (an nsfs mount or
/// `/proc/PID/ns/net`). A path flatnetd cannot see (another mount
/// namespace) or that was removed is not.
pub fn netns_alive(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Whether a network interface of that name exists in flatnetd's network
/// namespace (`ip link show NAME`), asked of the kernel by name.
pub fn link_exists(name: &str) -> bool {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => true,
        // ENODEV: no such link. Any other error is not evidence that the
        // container is gone: keep the lease.
        Err(e) => e != nix::errno::Errno::ENODEV,
    }
}

/// One pass: reclaim stale leases and re-apply the host table (one nft
/// transaction however many were reclaimed).
pub fn pass(service: &SharedService, started: u64) {
    let grace = Grace {
        now: crate::unix_now(),
        secs: service.config().lease_grace_secs,
        started,
    };
    let leases = service.store().list().unwrap_or_else(|e| {
        warn!("lease reconciliation could not read the lease database: {e}");
        Vec::new()
    });
    let stale = stale(&leases, grace, link_exists, netns_alive);
    if let Err(e) = service.reclaim(&stale) {
        warn!(
            "lease reconciliation: {}; retrying in {}s",
            e.message,
            service.config().reconcile_secs
        );
    }
}

/// Reconcile at start and then every `reconcile_secs`.
pub async fn run(service: SharedService) {
    let period = Duration::from_secs(service.config().reconcile_secs);
    let started = crate::unix_now();
    loop {
        let svc = service.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || pass(&svc, started)).await {
            warn!("lease reconciliation pass failed: {e}");
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, created: u64, refreshed: u64) -> Lease {
        Lease {
            created,
            refreshed,
            ..crate::test_lease(id, "10.87.1.5")
        }
    }

    #[test]
    fn only_old_unwired_leases_are_stale() {
        let live = lease("live", 0, 0);
        let gone = lease("gone", 0, 0);
        let young = lease("young", 95, 0);
        let renewed = lease("renewed", 0, 95);
        let leases = [live.clone(), gone, young, renewed];
        let live_if = host_ifname("live", "eth0");
        let at = |now| Grace {
            now,
            secs: 60,
            started: 0,
        };
        let got: Vec<&str> = stale(&leases, at(100), |n| n == live_if, |_| false)
            .iter()
            .map(|l| l.key.container_id.as_str())
            .collect();
        assert_eq!(got, ["gone"]);
        // At the grace boundary exactly, it is stale; one second before, not.
        assert_eq!(stale(&leases[2..3], at(155), |_| false, |_| false).len(), 1);
        assert!(stale(&leases[2..3], at(154), |_| false, |_| false).is_empty());
        // A namespace that is still alive keeps the lease, veth or not.
        let mut in_ns = lease("ns", 0, 0);
        in_ns.netns = Some("/run/netns/alive".into());
        let ls = [in_ns];
        assert!(stale(&ls, at(100), |_| false, |p| p == "/run/netns/alive").is_empty());
        assert_eq!(stale(&ls, at(100), |_| false, |_| false).len(), 1);
    }

    #[test]
    fn after_a_start_every_lease_gets_the_grace_again() {
        // A reboot: the lease was last asked for long ago and its veth is
        // gone with the old boot, but flatnetd started 10 s ago: the
        // runtime's restart of the container still finds its address.
        let old = [lease("web", 0, 0)];
        let booted = |now| Grace {
            now,
            secs: 60,
            started: 1000,
        };
        assert!(stale(&old, booted(1010), |_| false, |_| false).is_empty());
        assert!(stale(&old, booted(1059), |_| false, |_| false).is_empty());
        assert_eq!(stale(&old, booted(1060), |_| false, |_| false).len(), 1);
    }

    #[test]
    fn namespaces_are_told_from_plain_paths() {
        assert!(netns_alive("/proc/self/ns/net"));
        assert!(!netns_alive("/proc/self/status"));
        assert!(!netns_alive("/nonexistent/netns"));
    }

    #[test]
    fn loopback_exists_and_a_random_name_does_not() {
        assert!(link_exists("lo"));
        assert!(!link_exists("fnnope0000"));
    }
}
