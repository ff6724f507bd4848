//! A node's live state as the Lighthouse knows it: connected or not, the
//! endpoint it is seen at, the LAN addresses it reported. It changes with
//! every connection, so it is not part of a durable change: the server
//! writes a snapshot of it every few seconds and on shutdown
//! ([`crate::store::Store::save_presence`]), and a restarted Lighthouse
//! starts from that snapshot instead of from nothing. Reconnecting nodes
//! that come back as they were then change nothing, and nothing is
//! announced for them (docs/lighthouse.md, Delta sync).

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// How long nodes restored as online may take to reconnect before they are
/// announced as offline.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub online: bool,
    pub observed: Option<SocketAddr>,
    #[serde(default)]
    pub local_addrs: Vec<SocketAddr>,
}

/// One row of a presence snapshot: a node's presence and the version its
/// record last changed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(flatten)]
    pub presence: Presence,
    pub changed: u64,
}
