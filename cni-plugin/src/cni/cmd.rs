//! One CNI invocation: environment + stdin in, JSON out.

use std::path::PathBuf;

use flatnet_wire::{AttachmentId, PortMapping};
use serde_json::{json, Value};

use super::{
    conf::NetConf,
    env::{Command, Env},
    error::code,
    result::{prev_addresses, CniResult, Interface, IpConfig, RouteOut},
    version::{Version, LATEST, SUPPORTED},
    CniError,
};
use crate::attach::{self, Spec};

/// Run one command. `Ok(Some(v))` is printed on stdout; `Ok(None)` prints
/// nothing (DEL, CHECK, STATUS, GC succeed silently).
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        let asked = super::conf::sniff_version(stdin);
        return Ok(Some(
            json!({"cniVersion": asked, "supportedVersions": SUPPORTED}),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    let spec = || Spec {
        network: conf.name.clone(),
        container_id: env.container_id().to_string(),
        ifname: env.ifname().to_string(),
        netns: env.netns.as_ref().map(PathBuf::from),
        container_name: env.container_name(),
        ports: conf
            .runtime_config
            .port_mappings
            .iter()
            .map(|p| {
                PortMapping::simple(
                    p.container_port,
                    (p.host_port != 0).then_some(p.host_port),
                    &p.protocol.to_ascii_lowercase(),
                )
            })
            .collect(),
        routes: conf.routes,
        mtu: conf.mtu,
        socket: conf.socket(),
        ip: None,
        mac: None,
        aliases: conf
            .runtime_config
            .aliases
            .get(&conf.name)
            .cloned()
            .unwrap_or_default(),
        // On the CNI path the conflist's `portmap` plugin publishes ports.
        publish: false,
        internal: false,
    };
    match env.command {
        Command::Add => {
            let a = attach::add(&spec())?;
            Ok(Some(
                result_of(&a, env).to_json(&conf.cni_version, conf.prev_result.as_ref()),
            ))
        }
        Command::Del => attach::del(&spec()).map(|()| None),
        Command::Check => {
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "CHECK needs prevResult",
                )
            })?;
            attach::check(&spec(), &prev_addresses(prev, env.ifname())).map(|()| None)
        }
        Command::Status => {
            need_1_1(&conf, "STATUS")?;
            attach::status(&conf.socket()).map(|()| None)
        }
        Command::Gc => {
            need_1_1(&conf, "GC")?;
            let valid = conf
                .gc_attachments()
                .unwrap_or_default()
                .iter()
                .map(|a| AttachmentId {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect();
            attach::gc(&conf.socket(), &conf.name, valid).map(|_| None)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn need_1_1(conf: &NetConf, what: &str) -> Result<(), CniError> {
    if conf.version() < Version(1, 1, 0) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "{what} needs cniVersion 1.1.0 or later, got {}",
                conf.cni_version
            ),
        ));
    }
    Ok(())
}

fn result_of(a: &attach::Attached, env: &Env) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: a.host.name.clone(),
                mac: a.host.mac.clone(),
                sandbox: None,
                mtu: Some(a.mtu),
            },
            Interface {
                name: a.container.name.clone(),
                mac: a.container.mac.clone(),
                sandbox: env.netns.clone(),
                mtu: Some(a.mtu),
            },
        ],
        ips: vec![IpConfig {
            address: ipnet::Ipv4Net::new(a.lease.ip, a.network.subnet.prefix_len())
                .unwrap_or_else(|_| ipnet::Ipv4Net::from(a.lease.ip)),
            gateway: a.network.gateway,
            interface: 1,
        }],
        routes: a
            .routes
            .iter()
            .map(|(dst, gw)| RouteOut {
                dst: *dst,
                gw: Some(*gw),
            })
            .collect(),
        dns: a.network.dns.clone(),
    }
}

/// The version to put in an error reply.
pub fn error_version(stdin: &[u8]) -> String {
    let v = super::conf::sniff_version(stdin);
    if v.is_empty() {
        LATEST.into()
    } else {
        v
    }
}
