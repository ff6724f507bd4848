//! The shared registry's layout in etcd, under a prefix (default
//! `/flatnet/`), and the parsing of what the watch delivers:
//!
//! | key | value |
//! | --- | --- |
//! | `meta` | `{"cidr": .., "host_prefix": ..}`, written once |
//! | `next_id` | the id the next new node takes, decimal |
//! | `nodes/<id>` | a node record (JSON) |
//! | `tokens/<id>` | a token record (JSON) |
//! | `policies/<name>` | a members' access policy (JSON) |
//! | `presence/<node>/<lighthouse>` | a node's presence there (JSON, on that Lighthouse's lease) |
//! | `lighthouses/<lighthouse>` | address and certificate fingerprint (JSON) |

use flatnet_wire::lighthouse::LighthousePin;
use serde::{Deserialize, Serialize};

use crate::{
    presence::Presence,
    registry::{NodeRecord, PolicyRecord},
    token::TokenRecord,
};

/// The Flatnet's shape, which every Lighthouse sharing the registry must
/// agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub cidr: ipnet::Ipv4Net,
    pub host_prefix: u8,
}

/// One key's news, as the watch (or a full read) delivers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Node(NodeRecord),
    NodeGone(u32),
    /// A token record and the revision it was written at.
    Token(TokenRecord, i64),
    NextId(u32),
    Presence(u32, String, Option<Presence>),
    Lighthouse(String, Option<LighthousePin>),
    Policy(String, Option<PolicyRecord>),
}

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }
    pub fn next_id(&self) -> String {
        format!("{}next_id", self.prefix)
    }
    pub fn node(&self, id: u32) -> String {
        format!("{}nodes/{id}", self.prefix)
    }
    pub fn token(&self, id: &str) -> String {
        format!("{}tokens/{id}", self.prefix)
    }
    pub fn policy(&self, name: &str) -> String {
        format!("{}policies/{name}", self.prefix)
    }
    pub fn presence_of(&self, node: u32) -> String {
        format!("{}presence/{node}/", self.prefix)
    }
    pub fn presence(&self, node: u32, lh: &str) -> String {
        format!("{}presence/{node}/{lh}", self.prefix)
    }
    pub fn lighthouse(&self, lh: &str) -> String {
        format!("{}lighthouses/{lh}", self.prefix)
    }

    /// What a put (`value` = `Some`) or delete of `key` means. `Ok(None)`
    /// for keys that are not the registry's (`meta`, unknown ones); `Err`
    /// for a registry key whose value does not parse.
    pub fn parse(&self, key: &str, value: Option<&[u8]>, rev: i64) -> Result<Option<Ev>, String> {
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return Ok(None);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let json = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let bad = |e: &dyn std::fmt::Display| format!("{key}: {e}");
        let ev = match (parts.as_slice(), value) {
            (["next_id"], Some(v)) => Ev::NextId(json(v).trim().parse().map_err(|e| bad(&e))?),
            (["nodes", id], v) => {
                let id: u32 = id.parse().map_err(|e| bad(&e))?;
                match v {
                    Some(v) => {
                        let n: NodeRecord = serde_json::from_slice(v).map_err(|e| bad(&e))?;
                        if n.id != id {
                            return Err(bad(&"the record's id differs from its key"));
                        }
                        Ev::Node(n)
                    }
                    None => Ev::NodeGone(id),
                }
            }
            (["tokens", _], Some(v)) => {
                Ev::Token(serde_json::from_slice(v).map_err(|e| bad(&e))?, rev)
            }
            (["presence", node, lh], v) => {
                let node: u32 = node.parse().map_err(|e| bad(&e))?;
                let p = match v {
                    Some(v) => Some(serde_json::from_slice(v).map_err(|e| bad(&e))?),
                    None => None,
                };
                Ev::Presence(node, (*lh).to_string(), p)
            }
            (["policies", name], v) => {
                let p: Option<PolicyRecord> = match v {
                    Some(v) => Some(serde_json::from_slice(v).map_err(|e| bad(&e))?),
                    None => None,
                };
                if p.as_ref().is_some_and(|p| p.name != *name) {
                    return Err(bad(&"the policy's name differs from its key"));
                }
                Ev::Policy((*name).to_string(), p)
            }
            (["lighthouses", lh], v) => {
                let pin = match v {
                    Some(v) => Some(serde_json::from_slice(v).map_err(|e| bad(&e))?),
                    None => None,
                };
                Ev::Lighthouse((*lh).to_string(), pin)
            }
            _ => return Ok(None),
        };
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_garbage_is_an_error_naming_the_key() {
        let k = Keys::new("/flatnet");
        assert_eq!(k.node(7), "/flatnet/nodes/7");
        let n = NodeRecord {
            id: 7,
            name: "a".into(),
            public_key: "K".into(),
            subnet: "10.87.1.0/24".parse().unwrap(),
            token_id: "t".into(),
            joined: 1,
            member: None,
        };
        let v = serde_json::to_vec(&n).unwrap();
        assert_eq!(k.parse(&k.node(7), Some(&v), 3), Ok(Some(Ev::Node(n))));
        assert_eq!(k.parse(&k.node(7), None, 3), Ok(Some(Ev::NodeGone(7))));
        assert!(k.parse(&k.node(8), Some(&v), 3).is_err(), "id mismatch");
        assert_eq!(
            k.parse(&k.next_id(), Some(b"12"), 3),
            Ok(Some(Ev::NextId(12)))
        );
        assert_eq!(
            k.parse(&k.presence(7, "ab"), None, 3),
            Ok(Some(Ev::Presence(7, "ab".into(), None)))
        );
        let e = k.parse(&k.token("x"), Some(b"{oops"), 3).unwrap_err();
        assert!(e.starts_with("/flatnet/tokens/x"));
        assert_eq!(k.parse(&k.meta(), Some(b"{}"), 3), Ok(None));
        let p = PolicyRecord {
            name: "web".into(),
            allow: vec!["forgejo:80".parse().unwrap()],
        };
        let v = serde_json::to_vec(&p).unwrap();
        assert_eq!(
            k.parse(&k.policy("web"), Some(&v), 3),
            Ok(Some(Ev::Policy("web".into(), Some(p))))
        );
        assert!(k.parse(&k.policy("other"), Some(&v), 3).is_err());
        assert!(k
            .parse(
                &k.policy("web"),
                Some(br#"{"name":"web","allow":["x:0"]}"#),
                3
            )
            .is_err());
        assert_eq!(k.parse("/other/nodes/1", Some(b"x"), 3), Ok(None));
        assert!(k.parse("/flatnet/nodes/x", None, 3).is_err());
    }
}
