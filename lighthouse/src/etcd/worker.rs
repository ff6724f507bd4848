//! The etcd side of [`super::EtcdStore`]: a thread with its own tokio
//! runtime that owns the client, answers the store's requests (one etcd
//! transaction each), watches the registry's prefix and keeps this
//! Lighthouse's presence lease alive. What it reads goes to the store as
//! [`Feed`] items, which the server applies under its registry lock.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        mpsc::SyncSender,
        Arc,
    },
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

use super::keys::{Ev, Keys, Meta};
use flatnet_wire::lighthouse::LighthousePin;

/// Presence keys live on a lease this long: a Lighthouse that dies takes
/// its presence with it within this time.
pub const LEASE_TTL: i64 = 10;
/// Every etcd call gives up after this...
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// ...and a transaction is tried again until this has passed: a request
/// caught in a leader election (a member died) is lost by etcd and only
/// times out, while the next one, a second later, succeeds.
pub const TXN_PATIENCE: Duration = Duration::from_secs(9);

/// What the worker tells the store.
#[derive(Debug)]
pub enum Feed {
    /// Everything under the prefix at `revision` (at start-up, and when
    /// the watch was lost and had to start again).
    Snapshot { events: Vec<Ev>, revision: i64 },
    /// One watch response's events, in order.
    Events { events: Vec<Ev>, revision: i64 },
    /// The presence lease expired and a new one was granted: write all of
    /// this Lighthouse's presence again.
    LeaseRenewed,
}

/// A request from the store, answered on `reply`.
pub enum Req {
    /// A conditional transaction; on failure the revisions of `check` are
    /// read, so the store knows how far to catch up before retrying.
    Txn {
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        check: Vec<String>,
        reply: SyncSender<Result<i64, TxnError>>,
    },
    /// etcd's current revision (a linearizable read); the watch is asked
    /// to report its progress, so this copy can catch up to it.
    Revision {
        reply: SyncSender<Result<i64, TxnError>>,
    },
    /// Puts on the presence lease, and deletes.
    Presence {
        puts: Vec<(String, String)>,
        dels: Vec<String>,
        reply: SyncSender<Result<(), TxnError>>,
    },
}

#[derive(Debug)]
pub enum TxnError {
    /// The compares failed; catch up to this revision and try again.
    Conflict(i64),
    Failed(String),
}

pub struct Config {
    pub endpoints: Vec<String>,
    pub keys: Keys,
    pub me: String,
    pub pin: LighthousePin,
    pub meta: Meta,
    /// Records to seed an empty etcd with (this Lighthouse's own registry,
    /// when it moves from redb to etcd): `(key, value)`.
    pub seed: Vec<(String, String)>,
}

fn plain(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn timed<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(plain),
        Err(_) => Err(format!(
            "no answer within {} s (is a majority of the etcd members up?)",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// Connect, check or write `meta`, register this Lighthouse, read
/// everything and start the watch and the lease. `ready` gets the outcome
/// of all that; then requests are served until the store goes away.
pub async fn run(
    cfg: Config,
    mut reqs: mpsc::UnboundedReceiver<Req>,
    feed: std::sync::mpsc::Sender<Feed>,
    signal: Arc<Notify>,
    ready: SyncSender<Result<(), String>>,
) {
    let started = start(&cfg).await;
    let (client, lease, revision, events) = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = feed.send(Feed::Snapshot { events, revision });
    signal.notify_one();
    let _ = ready.send(Ok(()));
    let lease = Arc::new(AtomicI64::new(lease));
    let (progress, progress_rx) = mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_loop(
        client.clone(),
        cfg.keys.clone(),
        revision + 1,
        feed.clone(),
        signal.clone(),
        progress_rx,
    ));
    let keep = tokio::spawn(lease_loop(client.clone(), lease.clone(), feed, signal));
    while let Some(r) = reqs.recv().await {
        let mut c = client.clone();
        match r {
            Req::Txn {
                compares,
                ops,
                check,
                reply,
            } => {
                let _ = reply.send(txn(&mut c, compares, ops, check).await);
            }
            Req::Revision { reply } => {
                let r = timed(c.get(cfg.keys.meta(), None))
                    .await
                    .map(|g| g.header().map_or(0, |h| h.revision()))
                    .map_err(TxnError::Failed);
                let _ = progress.send(());
                let _ = reply.send(r);
            }
            Req::Presence { puts, dels, reply } => {
                let id = lease.load(Ordering::Relaxed);
                let mut ops: Vec<TxnOp> = puts
                    .into_iter()
                    .map(|(k, v)| TxnOp::put(k, v, Some(PutOptions::new().with_lease(id))))
                    .collect();
                ops.extend(dels.into_iter().map(|k| TxnOp::delete(k, None)));
                let r = txn(&mut c, vec![], ops, vec![]).await.map(|_| ());
                let _ = reply.send(r);
            }
        }
    }
    watch.abort();
    keep.abort();
    // Going away cleanly: this Lighthouse's presence goes at once.
    let _ = timed(client.clone().lease_revoke(lease.load(Ordering::Relaxed))).await;
}

async fn start(cfg: &Config) -> Result<(Client, i64, i64, Vec<Ev>), String> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let mut client = timed(Client::connect(&cfg.endpoints, Some(opts)))
        .await
        .map_err(|e| format!("cannot connect to etcd at {}: {e}", cfg.endpoints.join(",")))?;
    let meta = serde_json::to_string(&cfg.meta).map_err(plain)?;
    let k = &cfg.keys;
    let got = timed(client.get(k.meta(), None)).await?;
    match got.kvs().first() {
        Some(kv) => {
            let theirs: Meta = serde_json::from_slice(kv.value()).map_err(|e| {
                format!(
                    "the Flatnet settings in etcd ({}) are corrupt: {e}",
                    k.meta()
                )
            })?;
            if theirs != cfg.meta {
                return Err(format!(
                    "etcd holds a Flatnet of {} with /{} subnets under {}, not {} with /{}: \
                     start this Lighthouse with the same --cidr and --host-prefix as the \
                     others, or use another --etcd-prefix",
                    theirs.cidr,
                    theirs.host_prefix,
                    k.prefix(),
                    cfg.meta.cidr,
                    cfg.meta.host_prefix
                ));
            }
        }
        None => seed(&mut client, cfg, meta).await?,
    }
    let pin = serde_json::to_string(&cfg.pin).map_err(plain)?;
    timed(client.put(k.lighthouse(&cfg.me), pin, None)).await?;
    let lease = timed(client.lease_grant(LEASE_TTL, None)).await?.id();
    let (revision, events) = read_all(&mut client, k).await?;
    info!(endpoints = %cfg.endpoints.join(","), prefix = k.prefix(), revision, "registry on etcd");
    Ok((client, lease, revision, events))
}

/// A new Flatnet in etcd: this Lighthouse's records (if it had any), then
/// `next_id` and `meta` together, only if no other Lighthouse wrote `meta`
/// in the meantime.
async fn seed(client: &mut Client, cfg: &Config, meta: String) -> Result<(), String> {
    let k = &cfg.keys;
    let mut next = "1".to_string();
    let mut records = Vec::new();
    for (key, value) in &cfg.seed {
        if *key == k.next_id() {
            next = value.clone();
        } else {
            records.push(TxnOp::put(key.clone(), value.clone(), None));
        }
    }
    for chunk in records.chunks(100) {
        let t = Txn::new()
            .when(vec![Compare::create_revision(
                k.meta(),
                CompareOp::Equal,
                0,
            )])
            .and_then(chunk.to_vec());
        timed(client.txn(t)).await?;
    }
    let t = Txn::new()
        .when(vec![Compare::create_revision(
            k.meta(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![
            TxnOp::put(k.next_id(), next, None),
            TxnOp::put(k.meta(), meta, None),
        ]);
    let r = timed(client.txn(t)).await?;
    if r.succeeded() && !cfg.seed.is_empty() {
        info!(
            records = cfg.seed.len(),
            "seeded etcd with this Lighthouse's registry"
        );
    }
    Ok(())
}

/// Everything under the prefix, and the revision it was read at.
async fn read_all(client: &mut Client, k: &Keys) -> Result<(i64, Vec<Ev>), String> {
    let r = timed(client.get(k.prefix(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = r.header().map_or(0, |h| h.revision());
    let mut events = Vec::new();
    for kv in r.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match k.parse(&key, Some(kv.value()), kv.mod_revision()) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => {}
            Err(e) => corrupt(&e),
        }
    }
    Ok((revision, events))
}

/// A record no Lighthouse could have written: it is left out of this
/// Lighthouse's registry (and said so), the rest goes on.
fn corrupt(e: &str) {
    error!(
        "ignoring a corrupt record in etcd: {e}; fix or delete it with etcdctl \
         (docs/lighthouse.md, Several Lighthouses)"
    );
}

async fn txn(
    c: &mut Client,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    check: Vec<String>,
) -> Result<i64, TxnError> {
    let reads: Vec<TxnOp> = check.iter().map(|k| TxnOp::get(k.clone(), None)).collect();
    let t = Txn::new().when(compares).and_then(ops).or_else(reads);
    let until = tokio::time::Instant::now() + TXN_PATIENCE;
    let r = loop {
        match timed(c.txn(t.clone())).await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < until => {
                // Safe to repeat: if the lost attempt was applied after
                // all, the compares fail now and the caller catches up.
                warn!("an etcd transaction failed ({e}); trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(TxnError::Failed(e)),
        }
    };
    let revision = r.header().map_or(0, |h| h.revision());
    if r.succeeded() {
        return Ok(revision);
    }
    // How far to catch up: the newest of the keys compared (their change
    // is what failed the compare), at least the revision read.
    let mut newest = 0;
    for op in r.op_responses() {
        if let etcd_client::TxnOpResponse::Get(g) = op {
            for kv in g.kvs() {
                newest = newest.max(kv.mod_revision());
            }
        }
    }
    Err(TxnError::Conflict(if newest > 0 {
        newest
    } else {
        revision
    }))
}

/// Watch the prefix from `from`; when the watch breaks (a member died,
/// history compacted), read everything again and watch on from there.
async fn watch_loop(
    mut client: Client,
    keys: Keys,
    mut from: i64,
    feed: std::sync::mpsc::Sender<Feed>,
    signal: Arc<Notify>,
    mut progress: mpsc::UnboundedReceiver<()>,
) {
    loop {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let why = match timed(client.watch(keys.prefix(), Some(opts))).await {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    Some(()) = progress.recv() => {
                        // Answered by a response without events whose
                        // revision says how far the watch has come.
                        if let Err(e) = stream.request_progress().await {
                            break e.to_string();
                        }
                        continue;
                    }
                };
                match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            break format!("the watch was cancelled: {}", resp.cancel_reason());
                        }
                        let revision = resp.header().map_or(0, |h| h.revision());
                        let mut events = Vec::new();
                        for e in resp.events() {
                            let Some(kv) = e.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key());
                            let value = match e.event_type() {
                                EventType::Put => Some(kv.value()),
                                EventType::Delete => None,
                            };
                            match keys.parse(&key, value, kv.mod_revision()) {
                                Ok(Some(ev)) => events.push(ev),
                                Ok(None) => {}
                                Err(e) => corrupt(&e),
                            }
                        }
                        from = from.max(revision + 1);
                        if feed.send(Feed::Events { events, revision }).is_err() {
                            return;
                        }
                        signal.notify_one();
                    }
                    Ok(None) => break "the watch ended".to_string(),
                    Err(e) => break e.to_string(),
                }
            },
            Err(e) => e,
        };
        warn!("watching the registry in etcd: {why}; reading it again in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        match read_all(&mut client, &keys).await {
            Ok((revision, events)) => {
                from = revision + 1;
                if feed.send(Feed::Snapshot { events, revision }).is_err() {
                    return;
                }
                signal.notify_one();
            }
            Err(e) => warn!("reading the registry from etcd: {e}; trying again"),
        }
    }
}

/// Keep the presence lease alive every third of its TTL; if it expired
/// (etcd unreachable for that long), grant a new one and have all
/// presence written again.
async fn lease_loop(
    mut client: Client,
    lease: Arc<AtomicI64>,
    feed: std::sync::mpsc::Sender<Feed>,
    signal: Arc<Notify>,
) {
    let every = Duration::from_secs((LEASE_TTL / 3).max(1) as u64);
    let mut warned = false;
    loop {
        tokio::time::sleep(every).await;
        let id = lease.load(Ordering::Relaxed);
        let alive = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map_or(0, |m| m.ttl()))
        };
        match timed(alive).await {
            Ok(ttl) if ttl > 0 => warned = false,
            Ok(_) => match timed(client.lease_grant(LEASE_TTL, None)).await {
                Ok(g) => {
                    warn!("the presence lease in etcd had expired; writing presence again");
                    lease.store(g.id(), Ordering::Relaxed);
                    if feed.send(Feed::LeaseRenewed).is_err() {
                        return;
                    }
                    signal.notify_one();
                }
                Err(e) => warn!("granting a presence lease in etcd: {e}; trying again"),
            },
            Err(e) => {
                if !warned {
                    warn!("keeping the presence lease in etcd alive: {e}; trying again");
                    warned = true;
                }
            }
        }
    }
}
