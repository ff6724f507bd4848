//! The restart storm: every simulated node is connected, the Lighthouse is
//! stopped (SIGTERM, as `systemctl restart` does) and started again on the
//! same state dir and port, and every node reconnects at once
//! (`concurrency` handshakes in flight). Measured: the time from the new
//! process's start until the last node has its whole Welcome, the
//! reconnect latencies, the bytes of Welcomes (from the Lighthouse's own
//! `flatnet_lighthouse_welcome_bytes_total`) and of announcements the nodes
//! received meanwhile; then a sample of nodes that kept a full copy of
//! their peer list is checked against `lighthouse nodes list --json`.
//!
//! A node reconnects with the sync point it last heard (delta) or without
//! one (the whole list, as every node did before delta sync).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    client::{authenticate, connect, Joined},
    link::{ControlRead, ControlWrite, Link},
};
use flatnet_wire::lighthouse::{decode_body, LighthouseMsg, PeerInfo, SyncPoint};
use x25519_dalek::StaticSecret;

/// One simulated node that can come back.
pub struct Node {
    pub name: String,
    pub secret: StaticSecret,
    pub lan: SocketAddr,
    pub ep: quinn::Endpoint,
    /// The last point heard (Welcome, or a round's last frame).
    pub since: Mutex<Option<SyncPoint>>,
    /// Only for the sample: the node's whole peer list, as it applies it.
    pub book: Option<Mutex<BTreeMap<u32, PeerInfo>>>,
    pub conn: Mutex<Option<(Link, ControlWrite)>>,
    /// The probe-round tracker, fed every frame.
    pub tracker: Arc<super::Tracker>,
}

/// Bytes of announcements all nodes received.
pub static ANNOUNCED: AtomicU64 = AtomicU64::new(0);

impl Node {
    /// Take a Welcome (full or delta) and read the session's frames until
    /// it ends, tracking the sync point (and the book, for the sample).
    /// The node holds the connection; nothing is left for the caller.
    pub fn start(self: &Arc<Self>, j: Joined) -> Option<(quinn::Connection, quinn::SendStream)> {
        let Joined {
            conn,
            send,
            recv,
            peers,
            removed,
            delta,
            sync,
            ..
        } = j;
        *self.since.lock().unwrap() = sync;
        if let Some(b) = &self.book {
            let mut b = b.lock().unwrap();
            if !delta {
                b.clear();
            }
            for r in removed {
                b.remove(&r);
            }
            for p in peers {
                b.insert(p.node_id, p);
            }
        }
        *self.conn.lock().unwrap() = Some((conn, send));
        let me = self.clone();
        tokio::spawn(async move { me.read(recv).await });
        None
    }

    async fn read(self: Arc<Self>, mut recv: ControlRead) {
        while let Some(body) = super::next_raw(&mut recv).await {
            ANNOUNCED.fetch_add(body.len() as u64 + 4, Ordering::Relaxed);
            self.tracker.frame(&body);
            if let Some(v) = trailing_version(&body) {
                let mut s = self.since.lock().unwrap();
                if let Some(p) = s.as_mut() {
                    p.version = v;
                }
            }
            if let Some(b) = &self.book {
                if let Ok(LighthouseMsg::Peers { upsert, remove, .. }) = decode_body(&body) {
                    let mut b = b.lock().unwrap();
                    for r in remove {
                        b.remove(&r);
                    }
                    for p in upsert {
                        b.insert(p.node_id, p);
                    }
                }
            }
        }
        self.tracker.disconnected.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `version` of a round's last `Peers` frame, found at the end of the
/// JSON without parsing the frame (`…,"version":123}`): parsing every frame
/// of a storm would measure serde in the simulator.
pub fn trailing_version(body: &[u8]) -> Option<u64> {
    let body = body.strip_suffix(b"}")?;
    let at = body.len() - body.iter().rev().position(|c| *c == b':')?;
    let digits = &body[at..];
    body[..at]
        .ends_with(b",\"version\":")
        .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
        .flatten()
}

/// One storm's result.
pub struct Storm {
    pub secs: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub deltas: usize,
    pub welcome_bytes: u64,
    pub announced_bytes: u64,
    pub retries: usize,
    /// Sampled nodes whose list matched the Lighthouse's exactly.
    pub correct: usize,
    pub sampled: usize,
}

/// Reconnect every node (`with_since`: with its point) to `addr`,
/// `concurrency` at once, retrying each failure after 1 s, as flatnetd
/// does. Returns (time, latencies, deltas, retries).
pub async fn reconnect_all(
    nodes: &[Arc<Node>],
    addr: SocketAddr,
    fp: &str,
    with_since: bool,
    concurrency: usize,
) -> (f64, Vec<Duration>, usize, usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in nodes {
        let (n, sem, fp) = (n.clone(), sem.clone(), fp.to_string());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            let t0 = Instant::now();
            let mut retries = 0;
            loop {
                let since = if with_since {
                    *n.since.lock().unwrap()
                } else {
                    None
                };
                let r = match connect(&n.ep, addr, &fp).await {
                    Ok(c) => {
                        authenticate(Link::Quic(c), &n.secret, &n.name, None, vec![n.lan], since)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(j) => {
                        let delta = j.delta;
                        let _ = n.start(j);
                        break (t0.elapsed(), delta, retries);
                    }
                    Err(e) => {
                        retries += 1;
                        assert!(retries < 100, "{}: {e}", n.name);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }
    let mut lat = Vec::new();
    let (mut deltas, mut retries) = (0, 0);
    for t in tasks {
        let (d, delta, r) = t.await.unwrap();
        lat.push(d);
        deltas += usize::from(delta);
        retries += r;
    }
    (started.elapsed().as_secs_f64(), lat, deltas, retries)
}

/// Compare the sampled nodes' lists with the Lighthouse's (`truth`, from
/// `lighthouse nodes list --json`): the same ids, names, keys, subnets,
/// endpoints and online flags.
pub fn check_sample(nodes: &[Arc<Node>], truth: &[PeerInfo]) -> (usize, usize) {
    let mut sampled = 0;
    let mut correct = 0;
    for n in nodes {
        let Some(b) = &n.book else { continue };
        sampled += 1;
        let b = b.lock().unwrap();
        let want: BTreeMap<u32, &PeerInfo> = truth
            .iter()
            .filter(|p| p.name != n.name)
            .map(|p| (p.node_id, p))
            .collect();
        let same = want.len() == b.len()
            && want
                .iter()
                .all(|(id, p)| b.get(id).is_some_and(|q| q == *p));
        if same {
            correct += 1;
        } else {
            let missing = want.keys().filter(|k| !b.contains_key(k)).count();
            let extra = b.keys().filter(|k| !want.contains_key(k)).count();
            let differ = want
                .iter()
                .filter(|(id, p)| b.get(id).is_some_and(|q| q != **p))
                .count();
            eprintln!(
                "  {}: {missing} missing, {extra} extra, {differ} different",
                n.name
            );
        }
    }
    (correct, sampled)
}

/// Close every node's connection (before the next storm's restart).
pub fn drop_all(nodes: &[Arc<Node>]) {
    for n in nodes {
        if let Some((c, _)) = n.conn.lock().unwrap().take() {
            c.close(0, b"");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_at_the_end() {
        use super::trailing_version as v;
        assert_eq!(
            v(br#"{"type":"peers","upsert":[],"remove":[3],"version":42}"#),
            Some(42)
        );
        assert_eq!(v(br#"{"type":"peers","upsert":[],"remove":[3]}"#), None);
        assert_eq!(v(br#"{"type":"pong","observed":"1.2.3.4:5"}"#), None);
    }
}
