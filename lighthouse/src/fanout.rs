//! Announcing registry changes to connected nodes, at scale.
//!
//! With N nodes every change must reach N-1 of them, so the cost of one
//! announcement matters more than anything else the Lighthouse does:
//!
//! - **Coalescing**: changes are collected in [`Pending`] (a set of node ids
//!   per kind) and announced together every few milliseconds; ten nodes
//!   joining at once cost one round of frames, not ten.
//! - **Encode once**: a round is serialised once into [`bytes::Bytes`]
//!   frames and the same buffers are queued for every session (only a node
//!   whose own record is in the round gets a copy without itself).
//! - **Frames that fit**: peer lists are cut into [`LighthouseMsg::Peers`]
//!   frames of at most [`PEERS_PER_FRAME`] records, each well under
//!   [`MAX_FRAME`](flatnet_wire::lighthouse::MAX_FRAME); a Welcome carries the
//!   first slice and says how many frames complete it.
//! - **Bounded queues**: each session's [`Outbox`] counts the bytes it holds;
//!   a node that does not read falls behind by at most [`MAX_QUEUED`] before
//!   it is disconnected, after which it reconnects and gets a fresh Welcome.
//!
//! Nothing here does I/O except handing buffers to a channel.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use flatnet_wire::lighthouse::{encode_frame, FrameError, LighthouseMsg, PeerInfo};
use tokio::sync::mpsc;

/// Peer records per `Peers` frame. A record is at most ~650 bytes of JSON
/// (63-byte name, 16 local addresses), so 64 stay under the 64 KiB frame cap.
pub const PEERS_PER_FRAME: usize = 64;
/// Removed ids per `Peers` frame.
pub const REMOVES_PER_FRAME: usize = 4096;
/// Most bytes queued for one node before it is dropped as too slow.
pub const MAX_QUEUED: usize = 16 << 20;

/// Node ids whose records changed, or that were removed, since the last
/// announcement.
#[derive(Debug, Default)]
pub struct Pending {
    upserts: BTreeSet<u32>,
    removes: BTreeSet<u32>,
}

impl Pending {
    pub fn upsert(&mut self, id: u32) {
        self.upserts.insert(id);
    }

    pub fn remove(&mut self, id: u32) {
        self.upserts.remove(&id);
        self.removes.insert(id);
    }

    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }

    /// Everything pending: (changed ids, removed ids).
    pub fn take(&mut self) -> (Vec<u32>, Vec<u32>) {
        let p = std::mem::take(self);
        (
            p.upserts.into_iter().collect(),
            p.removes.into_iter().collect(),
        )
    }
}

/// Cut records and removals into `Peers` messages that each fit a frame.
/// Removals come first, so a node that is removed and re-added under the
/// same id within one round ends up present.
pub fn peers_messages(upsert: &[PeerInfo], remove: &[u32]) -> Vec<LighthouseMsg> {
    let mut out: Vec<LighthouseMsg> = remove
        .chunks(REMOVES_PER_FRAME)
        .map(|r| LighthouseMsg::Peers {
            upsert: vec![],
            remove: r.to_vec(),
            version: None,
        })
        .collect();
    out.extend(
        upsert
            .chunks(PEERS_PER_FRAME)
            .map(|u| LighthouseMsg::Peers {
                upsert: u.to_vec(),
                remove: vec![],
                version: None,
            }),
    );
    out
}

/// Mark the last of a round's messages with the registry version the node
/// is complete up to once it has applied them all (delta sync).
pub fn stamp(msgs: &mut [LighthouseMsg], at: u64) {
    if let Some(LighthouseMsg::Peers { version, .. }) = msgs.last_mut() {
        *version = Some(at);
    }
}

/// Encode messages into frames, once.
pub fn encode_all(msgs: &[LighthouseMsg]) -> Result<Vec<Bytes>, FrameError> {
    msgs.iter()
        .map(|m| encode_frame(m).map(Bytes::from))
        .collect()
}

/// The sending half of a session's queue of encoded frames.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// The receiving half, drained by the session's writer.
#[derive(Debug)]
pub struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The session is gone.
    Closed,
    /// The node has not read [`MAX_QUEUED`] bytes: drop it.
    TooSlow,
}

pub fn outbox() -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: queued.clone(),
        },
        OutboxRx { rx, queued },
    )
}

impl Outbox {
    /// Queue an encoded frame.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let len = frame.len();
        if self.queued.load(Ordering::Relaxed) + len > MAX_QUEUED {
            return Err(PushError::TooSlow);
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.send(frame).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            PushError::Closed
        })
    }

    /// Encode and queue one message.
    pub fn push_msg(&self, msg: &LighthouseMsg) -> Result<(), PushError> {
        match encode_frame(msg) {
            Ok(f) => self.push(Bytes::from(f)),
            // Our own messages are built to fit; this cannot happen short
            // of a bug, and dropping the message is the safe outcome.
            Err(_) => Ok(()),
        }
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl OutboxRx {
    pub async fn recv(&mut self) -> Option<Bytes> {
        let f = self.rx.recv().await?;
        self.queued.fetch_sub(f.len(), Ordering::Relaxed);
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatnet_wire::lighthouse::{decode_body, MAX_FRAME, MAX_LOCAL_ADDRS};

    fn fat_peer(id: u32) -> PeerInfo {
        PeerInfo {
            node_id: id,
            name: "n".repeat(63),
            public_key: "k".repeat(44),
            subnet: "10.255.255.0/24".parse().unwrap(),
            observed: Some("255.255.255.255:65535".parse().unwrap()),
            local_addrs: vec!["255.255.255.255:65535".parse().unwrap(); MAX_LOCAL_ADDRS],
            online: true,
            via: vec![],
            member: None,
        }
    }

    #[test]
    fn pending_coalesces_and_removal_wins() {
        let mut p = Pending::default();
        assert!(p.is_empty());
        for id in [3, 1, 3, 2, 1] {
            p.upsert(id);
        }
        p.remove(2);
        p.remove(9);
        assert_eq!(p.take(), (vec![1, 3], vec![2, 9]));
        assert!(p.is_empty());
    }

    #[test]
    fn every_frame_fits_even_with_the_largest_records() {
        let peers: Vec<PeerInfo> = (0..1000).map(fat_peer).collect();
        let removes: Vec<u32> = (u32::MAX - 10_000..u32::MAX).collect();
        let msgs = peers_messages(&peers, &removes);
        assert_eq!(msgs.len(), 3 + 1000usize.div_ceil(PEERS_PER_FRAME));
        let frames = encode_all(&msgs).unwrap();
        let mut seen_peers = 0;
        let mut seen_removes = 0;
        for f in &frames {
            assert!(f.len() - 4 <= MAX_FRAME, "{} bytes", f.len());
            match decode_body::<LighthouseMsg>(&f[4..]).unwrap() {
                LighthouseMsg::Peers { upsert, remove, .. } => {
                    // Removals all precede the first upsert.
                    assert!(remove.is_empty() || seen_peers == 0);
                    seen_peers += upsert.len();
                    seen_removes += remove.len();
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((seen_peers, seen_removes), (1000, 10_000));
        assert!(peers_messages(&[], &[]).is_empty());
    }

    #[tokio::test]
    async fn outbox_counts_bytes_and_refuses_a_reader_that_fell_behind() {
        let (tx, mut rx) = outbox();
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        for _ in 0..16 {
            tx.push(chunk.clone()).unwrap();
        }
        assert_eq!(tx.queued(), MAX_QUEUED);
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(PushError::TooSlow));
        rx.recv().await.unwrap();
        assert_eq!(tx.queued(), MAX_QUEUED - (1 << 20));
        tx.push(Bytes::from_static(b"x")).unwrap();
        drop(rx);
        assert_eq!(tx.push(Bytes::from_static(b"y")), Err(PushError::Closed));
    }
}
