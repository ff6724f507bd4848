//! The `CNI_*` environment.

use std::collections::HashMap;

use super::{error::code, CniError};

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The variables for one invocation, read through a lookup function so
/// tests need not touch the process environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: HashMap<String, String>,
}

fn invalid(details: String) -> CniError {
    CniError::new(code::INVALID_ENV, "invalid environment variables", details)
}

/// `CNI_IFNAME` must be a valid Linux interface name.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
}

impl Env {
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let cmd_raw = get("CNI_COMMAND").ok_or_else(|| invalid("CNI_COMMAND is not set".into()))?;
        let command = Command::parse(&cmd_raw).ok_or_else(|| {
            invalid(format!(
                "CNI_COMMAND {cmd_raw:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            ))
        })?;
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let env = Env {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS"),
            ifname: nonempty("CNI_IFNAME"),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default()),
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| nonempty(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "required for {cmd_raw} but missing or empty: {}",
                missing.join(", ")
            )));
        }
        if let Some(i) = &env.ifname {
            if !valid_ifname(i) {
                return Err(invalid(format!(
                    "CNI_IFNAME {i:?} is not a valid interface name"
                )));
            }
        }
        if let Some(c) = &env.container_id {
            if c.len() > 256 || c.chars().any(|c| c.is_control() || c == '/') {
                return Err(invalid(format!(
                    "CNI_CONTAINERID {c:?} is not a valid container id"
                )));
            }
        }
        Ok(env)
    }

    /// The container name Podman passes as `K8S_POD_NAME`.
    pub fn container_name(&self) -> Option<String> {
        self.args
            .get("K8S_POD_NAME")
            .filter(|v| !v.is_empty())
            .cloned()
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// `K=V;K=V` (malformed pairs are ignored, as libcni's runtimes tolerate).
pub fn parse_args(s: &str) -> HashMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_all_three() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.details.contains("CNI_CONTAINERID") && e.details.contains("CNI_NETNS"));
        assert!(!e.details.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_without_netns_is_fine() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Del);
        assert_eq!(e.netns, None);
    }

    #[test]
    fn unknown_or_missing_command() {
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn bad_ifname_rejected() {
        for bad in ["../x", "way-too-long-ifname", "a:b", "a b"] {
            let e = env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", bad),
            ])
            .unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{bad}");
        }
    }

    #[test]
    fn podman_args() {
        let e = env(&[
            ("CNI_COMMAND", "VERSION"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=web;junk",
            ),
        ])
        .unwrap();
        assert_eq!(e.container_name().as_deref(), Some("web"));
    }
}
