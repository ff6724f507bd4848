//! The registry on etcd, shared by several Lighthouses.
//!
//! etcd is the authority for nodes (and members), tokens, members' access
//! policies, the next node id and which
//! Lighthouse each node is connected to. Each Lighthouse keeps its
//! registry in memory as before and a redb copy of it on its own disk
//! (the "mirror"), which also holds its delta-sync log: versions are per
//! Lighthouse, and a restarted Lighthouse compares etcd with its copy so
//! that its nodes get only what changed (docs/lighthouse.md).
//!
//! A change made here is one etcd transaction whose compares make racing
//! changes at other Lighthouses fail instead of both winning:
//! - a new node: its key must not exist and `next_id` must still be the
//!   id it took (so ids, names, keys and subnets, all chosen from a copy
//!   that is complete up to that `next_id`, stay unique);
//! - a token used or revoked: its key must be at the revision this copy
//!   last saw;
//! - a new token: its key must not exist.
//!
//! A failed compare is [`StoreError::Conflict`]: the server waits until
//! the watch has brought this copy up to the conflicting revision and runs
//! the change again on it (a second single-use join is then refused).

mod keys;
mod worker;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{mpsc as std_mpsc, Arc},
    time::Duration,
};

use etcd_client::{Compare, CompareOp, TxnOp};
use flatnet_wire::lighthouse::LighthousePin;
use tokio::sync::{mpsc, Notify};
use tracing::error;

pub use keys::Meta;
use keys::{Ev, Keys};
use worker::{Feed, Req, TxnError};

use crate::{
    backend::Backend,
    presence::Stored,
    registry::{Change, Registry},
    store::{Loaded, LoadedSync, Store, StoreError},
    sync::SyncLog,
};

/// How often this Lighthouse's presence goes to etcd: the other
/// Lighthouses learn within this which nodes it serves.
pub const PRESENCE_EVERY: Duration = Duration::from_millis(500);
/// How long a caller waits for the worker's answer (beyond its own
/// per-call timeout).
const REPLY_WAIT: Duration = Duration::from_secs(14);

/// `lighthouse serve --etcd ...`.
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

pub struct EtcdStore {
    mirror: Store,
    keys: Keys,
    me: String,
    reqs: mpsc::UnboundedSender<Req>,
    feed: std_mpsc::Receiver<Feed>,
    signal: Arc<Notify>,
    /// Token id → the revision this copy has it at.
    token_revs: HashMap<String, i64>,
    lighthouses: BTreeMap<String, LighthousePin>,
    /// The etcd revision this copy is complete up to.
    applied: i64,
}

impl EtcdStore {
    /// Connect (a thread of its own runs the client), agree on `meta`
    /// with the other Lighthouses, register `pin` as this Lighthouse. An
    /// empty etcd is seeded from the mirror.
    pub fn open(
        mirror: Store,
        cfg: &EtcdConfig,
        me: &str,
        pin: LighthousePin,
        meta: Meta,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(&cfg.prefix);
        let seed = seed_from(&mirror, &keys)?;
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (feed_tx, feed_rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let signal = Arc::new(Notify::new());
        let wcfg = worker::Config {
            endpoints: cfg.endpoints.clone(),
            keys: keys.clone(),
            me: me.to_string(),
            pin,
            meta,
            seed,
        };
        let sig = signal.clone();
        std::thread::Builder::new()
            .name("etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(worker::run(wcfg, req_rx, feed_tx, sig, ready_tx));
            })
            .map_err(|e| StoreError::Shared(e.to_string()))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StoreError::Shared(e)),
            Err(_) => return Err(StoreError::Shared("etcd did not answer within 30 s".into())),
        }
        Ok(Self {
            mirror,
            keys,
            me: me.to_string(),
            reqs: req_tx,
            feed: feed_rx,
            signal,
            token_revs: HashMap::new(),
            lighthouses: BTreeMap::new(),
            applied: 0,
        })
    }

    /// Woken whenever the watch delivered something to [`Backend::absorb`].
    pub fn signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(std_mpsc::SyncSender<Result<T, TxnError>>) -> Req,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.reqs
            .send(make(tx))
            .map_err(|_| StoreError::Shared("the etcd client stopped".into()))?;
        match rx.recv_timeout(REPLY_WAIT) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(TxnError::Conflict(revision))) => Err(StoreError::Conflict { revision }),
            Ok(Err(TxnError::Failed(e))) => Err(StoreError::Shared(e)),
            Err(_) => Err(StoreError::Shared("the etcd client did not answer".into())),
        }
    }

    /// The transaction for `changes` made here (see the module docs).
    fn plan(&self, changes: &[Change], next_id: u32) -> Result<Plan, StoreError> {
        let k = &self.keys;
        let mut p = Plan::default();
        let mut first_new: Option<u32> = None;
        for c in changes {
            match c {
                Change::NodeSaved(n) => {
                    let key = k.node(n.id);
                    p.compares
                        .push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                    p.check.push(key.clone());
                    p.put(key, serde_json::to_string(n)?);
                    first_new = Some(first_new.map_or(n.id, |f| f.min(n.id)));
                }
                Change::TokenSaved(t) => {
                    let key = k.token(&t.id);
                    p.compares.push(match self.token_revs.get(&t.id) {
                        Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                        None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    });
                    p.check.push(key.clone());
                    p.put(key, serde_json::to_string(t)?);
                }
                Change::NodeRemoved(id) => {
                    p.ops.push(TxnOp::delete(k.node(*id), None));
                    p.ops.push(TxnOp::delete(
                        k.presence_of(*id),
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    ));
                }
                // An admin's edit: the last one written wins.
                Change::PolicySaved(pol) => p.put(k.policy(&pol.name), serde_json::to_string(pol)?),
                Change::PolicyRemoved(name) => p.ops.push(TxnOp::delete(k.policy(name), None)),
                Change::NodeLive(_) => {}
            }
        }
        if let Some(first) = first_new {
            p.compares.push(Compare::value(
                k.next_id(),
                CompareOp::Equal,
                first.to_string(),
            ));
            p.check.push(k.next_id());
            p.put(k.next_id(), next_id.to_string());
        }
        Ok(p)
    }
}

#[derive(Default)]
struct Plan {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    check: Vec<String>,
}

impl Plan {
    fn put(&mut self, key: String, value: String) {
        self.ops.push(TxnOp::put(key, value, None));
    }
}

/// The mirror's registry as etcd records, to seed an empty etcd with.
fn seed_from(mirror: &Store, k: &Keys) -> Result<Vec<(String, String)>, StoreError> {
    let (nodes, tokens, next_id) = mirror.load()?;
    let mut out = Vec::new();
    for n in &nodes {
        out.push((k.node(n.id), serde_json::to_string(n)?));
    }
    for t in &tokens {
        out.push((k.token(&t.id), serde_json::to_string(t)?));
    }
    if let Some(n) = next_id {
        out.push((k.next_id(), n.to_string()));
    }
    for p in mirror.load_policies()? {
        out.push((k.policy(&p.name), serde_json::to_string(&p)?));
    }
    Ok(out)
}

/// etcd's default limit of operations in one transaction.
const MAX_TXN_OPS: usize = 128;

impl Backend for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.mirror.load()
    }
    fn load_sync(&self) -> Result<LoadedSync, StoreError> {
        self.mirror.load_sync()
    }
    fn load_policies(&self) -> Result<Vec<crate::registry::PolicyRecord>, StoreError> {
        self.mirror.load_policies()
    }

    fn commit(
        &mut self,
        changes: &[Change],
        next_id: u32,
        log: &SyncLog,
    ) -> Result<(), StoreError> {
        let Plan {
            compares,
            mut ops,
            check,
        } = self.plan(changes, next_id)?;
        if !ops.is_empty() {
            // Removing many nodes at once (a revoked token): the compares
            // and the first operations together, the rest (deletes, which
            // may be repeated) behind them.
            let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
            let revision = self.ask(|reply| Req::Txn {
                compares,
                ops,
                check,
                reply,
            })?;
            for chunk in rest.chunks(MAX_TXN_OPS) {
                let chunk = chunk.to_vec();
                self.ask(|reply| Req::Txn {
                    compares: vec![],
                    ops: chunk,
                    check: vec![],
                    reply,
                })?;
            }
            for c in changes {
                if let Change::TokenSaved(t) = c {
                    self.token_revs.insert(t.id.clone(), revision);
                }
            }
        }
        self.mirror.commit(changes, next_id, log)
    }

    fn save_presence(&mut self, rows: &[(u32, Stored)], log: &SyncLog) -> Result<(), StoreError> {
        self.mirror.save_presence(rows, log)?;
        // Put while online here, deleted otherwise.
        let mut writes: Vec<(String, Option<String>)> = Vec::new();
        for (id, st) in rows {
            let key = self.keys.presence(*id, &self.me);
            let value = match st.presence.online {
                true => Some(serde_json::to_string(&st.presence)?),
                false => None,
            };
            writes.push((key, value));
        }
        for chunk in writes.chunks(MAX_TXN_OPS) {
            let (mut puts, mut dels) = (Vec::new(), Vec::new());
            for (k, v) in chunk.iter().cloned() {
                match v {
                    Some(v) => puts.push((k, v)),
                    None => dels.push(k),
                }
            }
            self.ask(|reply| Req::Presence { puts, dels, reply })?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        self.mirror.reopen()
    }

    fn presence_every(&self) -> Duration {
        PRESENCE_EVERY
    }

    fn lighthouses(&self) -> Vec<LighthousePin> {
        self.lighthouses.values().cloned().collect()
    }

    fn retire(&mut self, id: &str) -> Result<(), StoreError> {
        if id == self.me {
            return Err(StoreError::Shared(
                "this is the Lighthouse answering: stop it, then retire it from another one".into(),
            ));
        }
        if !self.lighthouses.contains_key(id) {
            return Err(StoreError::Shared(format!(
                "no Lighthouse {id} (see lighthouse lighthouses list)"
            )));
        }
        let key = self.keys.lighthouse(id);
        self.ask(|reply| Req::Txn {
            compares: vec![],
            ops: vec![TxnOp::delete(key, None)],
            check: vec![],
            reply,
        })?;
        Ok(())
    }

    fn absorb(&mut self, registry: &mut Registry) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        let mut any = false;
        while let Ok(item) = self.feed.try_recv() {
            any = true;
            match item {
                Feed::Snapshot { events, revision } => {
                    let snap = self.snapshot(events);
                    out.extend(registry.sync_to(snap));
                    self.applied = revision;
                }
                Feed::Events { events, revision } => {
                    for e in events {
                        out.extend(self.apply(registry, e));
                    }
                    self.applied = self.applied.max(revision);
                }
                Feed::LeaseRenewed => registry.mark_all_live(),
            }
        }
        if any {
            // The mirror is a copy: if it cannot be written, a restart
            // compares etcd with it and versions the difference again, so
            // nodes still get everything. The caller says so in the log.
            let durable: Vec<Change> = out
                .iter()
                .filter(|c| !matches!(c, Change::NodeLive(_)))
                .cloned()
                .collect();
            if let Err(e) = self
                .mirror
                .commit(&durable, registry.next_id(), registry.log())
            {
                error!(
                    "recording the other Lighthouses' changes in the local copy failed: {}; \
                     they are announced anyway and compared again after a restart. Check \
                     free space and the disk of the state dir",
                    flatnet_wire::plain_error(&e)
                );
                let _ = self.mirror.reopen();
            }
        }
        Ok(out)
    }

    fn applied(&self) -> i64 {
        self.applied
    }

    fn freshen(&mut self) -> Result<i64, StoreError> {
        self.ask(|reply| Req::Revision { reply })
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}

impl EtcdStore {
    fn apply(&mut self, r: &mut Registry, e: Ev) -> Vec<Change> {
        match e {
            Ev::Node(n) => r.apply_node(n),
            Ev::NodeGone(id) => r.apply_node_removed(id),
            Ev::Token(t, rev) => {
                self.token_revs.insert(t.id.clone(), rev);
                r.apply_token(t)
            }
            Ev::NextId(n) => {
                r.apply_next_id(n);
                vec![]
            }
            Ev::Presence(id, lh, p) => r.apply_presence(id, &lh, p),
            Ev::Policy(name, p) => r.apply_policy(&name, p),
            Ev::Lighthouse(id, pin) => {
                match pin {
                    Some(p) => self.lighthouses.insert(id, p),
                    None => self.lighthouses.remove(&id),
                };
                vec![]
            }
        }
    }

    /// A full read as a [`Snapshot`] (token revisions and Lighthouses
    /// are taken here).
    fn snapshot(&mut self, events: Vec<Ev>) -> crate::registry::Snapshot {
        let mut snap = crate::registry::Snapshot::default();
        self.lighthouses.clear();
        for e in events {
            match e {
                Ev::Node(n) => snap.nodes.push(n),
                Ev::Token(t, rev) => {
                    self.token_revs.insert(t.id.clone(), rev);
                    snap.tokens.push(t);
                }
                Ev::NextId(n) => snap.next_id = n,
                Ev::Presence(id, lh, Some(p)) => {
                    snap.presence.entry(id).or_default().insert(lh, p);
                }
                Ev::Lighthouse(id, Some(p)) => {
                    self.lighthouses.insert(id, p);
                }
                Ev::Policy(_, Some(p)) => snap.policies.push(p),
                Ev::NodeGone(_)
                | Ev::Presence(_, _, None)
                | Ev::Lighthouse(_, None)
                | Ev::Policy(_, None) => {}
            }
        }
        snap
    }
}
