//! Remote members, the Lighthouse's side (docs/members.md): the admin
//! commands (`lighthouse member …`, `lighthouse policy …`), what a
//! member's WireGuard app is told (the wg-quick config, as text and as a QR
//! code), and the expiry of members whose time is up.
//!
//! The registry part (records, addresses, policies) is in
//! [`crate::registry`]; this module adds what needs the running server.

use std::{net::Ipv4Addr, sync::Weak, time::Duration};

use flatnet_wire::policy::{gateway_of, parse_rules, Rule, Target};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    registry::{NewMember, Registry},
    server::{now, Lighthouse},
};

/// How often expired members are looked for: removal reaches every host
/// within this plus one announcement.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// The admin requests about members and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum MemberRequest {
    Add {
        name: String,
        /// The member's WireGuard public key (base64); the CLI made the
        /// pair, or the member supplied it.
        public_key: String,
        hub: String,
        policy: String,
        expires_in_secs: Option<u64>,
        /// `host:port` the member's app sends to; default: the hub's
        /// public endpoint as this Lighthouse sees it.
        endpoint: Option<String>,
    },
    List,
    Remove {
        name: String,
    },
    Rotate {
        name: String,
        public_key: String,
        endpoint: Option<String>,
    },
    PolicySet {
        name: String,
        allow: Vec<String>,
    },
    PolicyList,
    PolicyRemove {
        name: String,
    },
}

impl MemberRequest {
    pub fn action(&self) -> &'static str {
        match self {
            MemberRequest::Add { .. } => "member_add",
            MemberRequest::List => "member_list",
            MemberRequest::Remove { .. } => "member_remove",
            MemberRequest::Rotate { .. } => "member_rotate",
            MemberRequest::PolicySet { .. } => "policy_set",
            MemberRequest::PolicyList => "policy_list",
            MemberRequest::PolicyRemove { .. } => "policy_remove",
        }
    }
}

/// A member as the admin sees it, with what its wg-quick config needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub id: u32,
    pub address: Ipv4Net,
    pub public_key: String,
    pub hub: String,
    /// The hub's public key (the config's `[Peer]`).
    pub hub_public_key: String,
    /// Where the app sends; `None` when the hub has no known public
    /// endpoint and none was given.
    pub endpoint: Option<String>,
    /// Flatnet DNS on the hub.
    pub dns: Ipv4Addr,
    /// What the app routes into the tunnel: what the policy may allow.
    pub allowed_ips: Vec<Ipv4Net>,
    pub policy: String,
    pub allow: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// The routes a member needs for `rules`: a node's subnet for its rules, a
/// CIDR as given, and the whole Flatnet for a service that may run on any
/// node; the hub's DNS address always. The policy, not these, decides
/// what passes.
pub fn allowed_ips(r: &Registry, rules: &[Rule], dns: Ipv4Addr) -> Vec<Ipv4Net> {
    let subnet_of = |node: &str| {
        r.nodes()
            .find(|n| n.name == node && n.member.is_none())
            .map(|n| n.subnet)
    };
    let mut out = vec![Ipv4Net::from(dns)];
    for rule in rules {
        match &rule.target {
            Target::Cidr(c) => out.push(*c),
            Target::Node(n) | Target::Service { node: Some(n), .. } => out.extend(subnet_of(n)),
            Target::Service { node: None, .. } => out.push(r.cidr()),
        }
    }
    Ipv4Net::aggregate(&out)
}

fn view(r: &Registry, id: u32, endpoint: Option<String>) -> Result<MemberView, String> {
    let n = r.node(id).ok_or("the member is gone")?;
    let m = n.member.as_ref().ok_or("not a member")?;
    let hub = r.node(m.hub).ok_or("its hub was removed")?;
    let dns = gateway_of(hub.subnet);
    let allow = r
        .policy(&m.policy)
        .map(|p| p.allow.clone())
        .unwrap_or_default();
    let endpoint = endpoint.or_else(|| {
        r.peer_info(hub.id)
            .and_then(|p| p.observed)
            .map(|a| a.to_string())
    });
    Ok(MemberView {
        name: n.name.clone(),
        id,
        address: n.subnet,
        public_key: n.public_key.clone(),
        hub: hub.name.clone(),
        hub_public_key: hub.public_key.clone(),
        endpoint,
        dns,
        allowed_ips: allowed_ips(r, &allow, dns),
        policy: m.policy.clone(),
        allow,
        expires: m.expires,
    })
}

fn check_key(k: &str) -> Result<(), String> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(k) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(format!(
            "{k:?} is not a WireGuard public key (44 characters of base64, as `wg pubkey` prints)"
        )),
    }
}

/// Handle one member or policy request.
pub fn dispatch(lh: &Lighthouse, req: MemberRequest) -> Result<Value, String> {
    let msg = |e: crate::registry::RegistryError| e.message;
    match req {
        MemberRequest::Add {
            name,
            public_key,
            hub,
            policy,
            expires_in_secs,
            endpoint,
        } => {
            check_key(&public_key)?;
            let t = now();
            let expires = expires_in_secs.map(|s| t.saturating_add(s));
            let id = lh.mutate(|r| {
                let m = NewMember {
                    name: &name,
                    public_key: &public_key,
                    hub: &hub,
                    policy: &policy,
                    expires,
                };
                match r.add_member(m, t) {
                    Ok((id, ch)) => (Ok(id), ch),
                    Err(e) => (Err(msg(e)), vec![]),
                }
            })??;
            lh.view(|r| view(r, id, endpoint)).map(|v| json!(v))
        }
        MemberRequest::Rotate {
            name,
            public_key,
            endpoint,
        } => {
            check_key(&public_key)?;
            let t = now();
            let id = lh.mutate(|r| match r.rotate_member(&name, &public_key, t) {
                Ok((id, ch)) => (Ok(id), ch),
                Err(e) => (Err(msg(e)), vec![]),
            })??;
            lh.view(|r| view(r, id, endpoint)).map(|v| json!(v))
        }
        MemberRequest::Remove { name } => {
            lh.mutate(|r| match r.remove_member(&name) {
                Ok(ch) => (Ok(()), ch),
                Err(e) => (Err(msg(e)), vec![]),
            })??;
            Ok(json!({ "removed": name }))
        }
        MemberRequest::List => lh.view(|r| {
            let ids: Vec<u32> = r.members().map(|(n, _)| n.id).collect();
            let all: Result<Vec<MemberView>, String> =
                ids.into_iter().map(|id| view(r, id, None)).collect();
            all.map(|v| json!(v))
        }),
        MemberRequest::PolicySet { name, allow } => {
            let rules = parse_rules(allow.iter().map(|s| s.as_str())).map_err(|e| e.to_string())?;
            let members = lh.mutate(|r| match r.set_policy(&name, rules.clone()) {
                Ok(ch) => {
                    let n = r.members().filter(|(_, m)| m.policy == name).count();
                    (Ok(n), ch)
                }
                Err(e) => (Err(msg(e)), vec![]),
            })??;
            Ok(json!({ "policy": name, "allow": rules, "members": members }))
        }
        MemberRequest::PolicyList => Ok(lh.view(|r| {
            json!(r
                .policies()
                .map(|p| {
                    let members: Vec<&str> = r
                        .members()
                        .filter(|(_, m)| m.policy == p.name)
                        .map(|(n, _)| n.name.as_str())
                        .collect();
                    json!({ "name": p.name, "allow": p.allow, "members": members })
                })
                .collect::<Vec<_>>())
        })),
        MemberRequest::PolicyRemove { name } => {
            lh.mutate(|r| match r.remove_policy(&name) {
                Ok(ch) => (Ok(()), ch),
                Err(e) => (Err(msg(e)), vec![]),
            })??;
            Ok(json!({ "removed": name }))
        }
    }
}

/// Remove members whose expiry has come, every [`EXPIRY_EVERY`].
pub async fn expire(this: Weak<Lighthouse>) {
    let mut iv = tokio::time::interval(EXPIRY_EVERY);
    loop {
        iv.tick().await;
        let Some(lh) = this.upgrade() else { return };
        let t = now();
        let due = lh.view(|r| r.members().any(|(_, m)| m.expires.is_some_and(|e| e <= t)));
        if !due {
            continue;
        }
        match lh.mutate(|r| {
            let ch = r.expire_members(t);
            (ch.len(), ch)
        }) {
            Ok(n) if n > 0 => tracing::info!(members = n, "expired remote members removed"),
            Ok(_) => {}
            Err(e) => tracing::error!(
                "removing expired remote members failed: {e}; trying again in a second"
            ),
        }
    }
}

/// The wg-quick config for a member: `private_key` when the CLI made the
/// pair (it is printed, never stored), else a placeholder for the key the
/// member kept.
pub fn wg_quick(v: &MemberView, private_key: Option<&str>, dns_domain: &str) -> String {
    let key = private_key.unwrap_or("<the private key that belongs to the public key you gave>");
    let mut dns = v.dns.to_string();
    if !dns_domain.is_empty() {
        dns.push_str(", ");
        dns.push_str(dns_domain);
    }
    let allowed: Vec<String> = v.allowed_ips.iter().map(|n| n.to_string()).collect();
    let endpoint = v
        .endpoint
        .clone()
        .unwrap_or_else(|| "<the hub's public host:port>".into());
    format!(
        "# Flatnet member {name}, through hub {hub}; policy {policy}\n\
         [Interface]\n\
         PrivateKey = {key}\n\
         Address = {addr}\n\
         DNS = {dns}\n\
         \n\
         [Peer]\n\
         PublicKey = {hub_key}\n\
         Endpoint = {endpoint}\n\
         AllowedIPs = {allowed}\n\
         PersistentKeepalive = 25\n",
        name = v.name,
        hub = v.hub,
        policy = v.policy,
        addr = v.address,
        hub_key = v.hub_public_key,
        allowed = allowed.join(", "),
    )
}

/// `text` as a QR code drawn with Unicode half blocks (two rows of modules
/// per line), for the WireGuard app's "scan from QR code".
pub fn qr(text: &str) -> Result<String, String> {
    use qrcode::{render::unicode::Dense1x2, EcLevel, QrCode};
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)
        .map_err(|e| format!("the config does not fit in a QR code: {e}"))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::{join, reg};

    fn rules(r: &[&str]) -> Vec<Rule> {
        parse_rules(r.iter().copied()).unwrap()
    }

    #[test]
    fn allowed_ips_cover_what_the_policy_may_allow() {
        let mut r = reg();
        join(&mut r, "h1", "K1");
        join(&mut r, "h2", "K2");
        let dns: Ipv4Addr = "10.87.1.1".parse().unwrap();
        let got = |rs: &[&str]| -> Vec<String> {
            allowed_ips(&r, &rules(rs), dns)
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(got(&["node:h2:443"]), ["10.87.1.1/32", "10.87.2.0/24"]);
        assert_eq!(
            got(&["forgejo.h2:80", "192.168.7.0/24"]),
            ["10.87.1.1/32", "10.87.2.0/24", "192.168.7.0/24"]
        );
        assert_eq!(got(&["forgejo:80"]), ["10.87.0.0/16"]);
        assert_eq!(got(&["node:nosuch"]), ["10.87.1.1/32"]);
    }

    #[test]
    fn the_config_is_what_wg_quick_reads_and_fits_a_qr_code() {
        let v = MemberView {
            name: "alice".into(),
            id: 3,
            address: "10.87.255.1/32".parse().unwrap(),
            public_key: "A".repeat(43) + "=",
            hub: "h1".into(),
            hub_public_key: "H".repeat(43) + "=",
            endpoint: Some("203.0.113.5:51820".into()),
            dns: "10.87.1.1".parse().unwrap(),
            allowed_ips: vec!["10.87.0.0/16".parse().unwrap()],
            policy: "web".into(),
            allow: rules(&["forgejo:80"]),
            expires: None,
        };
        let c = wg_quick(&v, Some("PRIV"), "flatnet");
        for line in [
            "PrivateKey = PRIV",
            "Address = 10.87.255.1/32",
            "DNS = 10.87.1.1, flatnet",
            "Endpoint = 203.0.113.5:51820",
            "AllowedIPs = 10.87.0.0/16",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} in\n{c}");
        }
        let q = qr(&c).unwrap();
        assert!(q.lines().count() > 20 && q.contains('▀'), "{q}");
    }
}
