//! The local admin API on a unix socket (default
//! `/run/flatnet/lighthouse.sock`, mode 0600): the `lighthouse token …` and
//! `lighthouse nodes …` commands talk to the running server through it, so
//! changes take effect at once and reach every node immediately.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
};
use tracing::warn;

use crate::{
    server::{now, Lighthouse},
    token::Token,
};

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/flatnet/lighthouse.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    TokenCreate {
        ttl_secs: Option<u64>,
        reusable: bool,
    },
    TokenList,
    TokenRevoke {
        id: String,
    },
    NodesList,
    NodesRemove {
        name: String,
    },
    /// Every Lighthouse sharing the registry.
    LighthousesList,
    /// Take a stopped Lighthouse off the shared list.
    LighthousesRetire {
        id: String,
    },
    /// A consistent snapshot of the registry and the identity
    /// ([`crate::backup`]).
    Backup,
    /// Set the log filter (`info`, `debug`, ...); without one, report it.
    LogLevel {
        filter: Option<String>,
    },
    /// Remote members and their policies ([`crate::members`]).
    Member(crate::members::MemberRequest),
}

/// Handle one admin request against the running Lighthouse.
pub fn handle(lh: &Lighthouse, req: AdminRequest) -> Result<Value, String> {
    let action = req.action();
    // With several Lighthouses: see what the others did first (a node that
    // joined there a moment ago can be removed here).
    if let Err(e) = lh.freshen() {
        tracing::warn!(
            "catching up with etcd before an admin command failed: {e}; \
             going on with what this Lighthouse has"
        );
    }
    let r = dispatch(lh, req);
    lh.stats.admin_action(action, r.is_ok());
    r
}

impl AdminRequest {
    /// The metrics label of this request.
    pub fn action(&self) -> &'static str {
        match self {
            AdminRequest::TokenCreate { .. } => "token_create",
            AdminRequest::TokenList => "token_list",
            AdminRequest::TokenRevoke { .. } => "token_revoke",
            AdminRequest::NodesList => "nodes_list",
            AdminRequest::NodesRemove { .. } => "nodes_remove",
            AdminRequest::LighthousesList => "lighthouses_list",
            AdminRequest::LighthousesRetire { .. } => "lighthouses_retire",
            AdminRequest::LogLevel { .. } => "log_level",
            AdminRequest::Backup => "backup",
            AdminRequest::Member(m) => m.action(),
        }
    }
}

fn dispatch(lh: &Lighthouse, req: AdminRequest) -> Result<Value, String> {
    match req {
        AdminRequest::TokenCreate { ttl_secs, reusable } => {
            let mut t = Token::generate(&lh.public_addr, &lh.identity.fingerprint());
            // With several Lighthouses: all of them, this one first.
            t.also = lh
                .lighthouses()
                .into_iter()
                .skip(1)
                .map(|p| crate::token::OtherLighthouse {
                    lighthouse: p.address,
                    fingerprint: p.fingerprint,
                })
                .collect();
            lh.mutate(|r| ((), r.add_token(&t, now(), ttl_secs, reusable)))?;
            Ok(
                json!({"token": t.encode(), "id": t.id(), "expires_in_secs": ttl_secs, "reusable": reusable}),
            )
        }
        AdminRequest::TokenList => Ok(lh.view(|r| {
            let mut v: Vec<_> = r.tokens().cloned().collect();
            v.sort_by_key(|t| t.created);
            json!(v)
        })),
        AdminRequest::TokenRevoke { id } => {
            let removed = lh.mutate(|r| match r.revoke_token(&id) {
                Ok(ch) => {
                    let n = ch
                        .iter()
                        .filter(|c| matches!(c, crate::registry::Change::NodeRemoved(_)))
                        .count();
                    (Ok(n), ch)
                }
                Err(e) => (Err(e.message), vec![]),
            })??;
            Ok(json!({"revoked": id, "nodes_removed": removed}))
        }
        AdminRequest::NodesList => Ok(lh.view(|r| {
            json!(r
                .nodes()
                .filter(|n| n.member.is_none())
                .filter_map(|n| r.peer_info(n.id))
                .collect::<Vec<_>>())
        })),
        AdminRequest::LighthousesList => {
            let me = lh.identity.fingerprint();
            Ok(json!(lh
                .lighthouses()
                .into_iter()
                .map(|p| json!({
                    "id": flatnet_wire::lighthouse::lighthouse_id(&p.fingerprint),
                    "address": p.address,
                    "fingerprint": p.fingerprint,
                    "this": p.fingerprint == me,
                }))
                .collect::<Vec<_>>()))
        }
        AdminRequest::LighthousesRetire { id } => {
            lh.retire(&id)?;
            Ok(json!({"retired": id}))
        }
        AdminRequest::Backup => {
            serde_json::to_value(crate::backup::snapshot(lh, now())).map_err(|e| e.to_string())
        }
        AdminRequest::LogLevel { filter } => {
            let log = lh
                .log
                .get()
                .ok_or("this Lighthouse's logging cannot be changed at run time")?;
            if let Some(f) = filter {
                log.force_level(&f)?;
                tracing::info!(log_level = %f, "log level changed");
            }
            Ok(json!({"log_level": log.current()}))
        }
        AdminRequest::Member(m) => crate::members::dispatch(lh, m),
        AdminRequest::NodesRemove { name } => {
            lh.mutate(|r| match r.remove_node(&name) {
                Ok(ch) => (Ok(()), ch),
                Err(e) => (Err(e.message), vec![]),
            })??;
            Ok(json!({"removed": name}))
        }
    }
}

/// Serve the admin socket.
pub async fn serve(path: &Path, lh: Arc<Lighthouse>) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let lh = lh.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = Vec::new();
            let mut rd = tokio::io::BufReader::new(rd).take(64 * 1024);
            if rd.read_until(b'\n', &mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_slice::<AdminRequest>(&line) {
                Ok(req) => match handle(&lh, req) {
                    Ok(v) => json!({ "ok": v }),
                    Err(e) => json!({ "error": e }),
                },
                Err(e) => json!({ "error": format!("bad request: {e}") }),
            };
            if let Err(e) = wr.write_all(format!("{resp}\n").as_bytes()).await {
                warn!("admin reply: {e}");
            }
        });
    }
}

/// Client side for the CLI.
pub fn call(path: &Path, req: &AdminRequest) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        let p = path.display();
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
                "the Lighthouse is not running (nothing listens on {p}); start it with \
                 `systemctl start lighthouse`, or give its socket with --admin-socket"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("no permission to use the Lighthouse's admin socket {p}: run as root")
            }
            _ => format!(
                "cannot reach the Lighthouse at {p}: {}",
                flatnet_wire::plain_error(&e)
            ),
        }
    })?;
    let body = serde_json::to_string(req).map_err(|e| e.to_string())?;
    s.write_all(format!("{body}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad reply: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(e.as_str().unwrap_or("error").to_string());
    }
    Ok(v.get("ok").cloned().unwrap_or(Value::Null))
}
