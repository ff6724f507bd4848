//! The Lighthouse's membership state, sans I/O: which nodes exist, their
//! subnets, tokens, what each node may see of the others. Every method takes
//! the current time as an argument, so tests control time.
//!
//! Mutations return [`Change`]s; the server persists them and fans them out
//! to connected nodes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
};

use flatnet_wire::lighthouse::{candidate_ok, LhErrorCode, PeerInfo, SyncPoint, MAX_LOCAL_ADDRS};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    presence::{Presence as Live, Stored},
    sync::{Catchup, SyncLog},
    token::{Token, TokenRecord},
};

mod members;
mod remote;
pub use members::{MemberRecord, NewMember, PolicyRecord, MEMBER_TOKEN};
pub use remote::Snapshot;

/// A node's durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u32,
    pub name: String,
    pub public_key: String,
    pub subnet: Ipv4Net,
    /// The token it joined with.
    pub token_id: String,
    pub joined: u64,
    /// Set for a remote member (plain WireGuard through a hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberRecord>,
}

/// What a mutation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Persist this node and tell the others about it.
    NodeSaved(NodeRecord),
    /// Live data (endpoint, online) changed: tell the others.
    NodeLive(u32),
    /// Delete this node, disconnect it and tell the others.
    NodeRemoved(u32),
    /// Persist this token.
    TokenSaved(TokenRecord),
    /// Persist this access policy.
    PolicySaved(PolicyRecord),
    /// Delete the access policy of this name.
    PolicyRemoved(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub code: LhErrorCode,
    pub message: String,
}

fn err(code: LhErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError {
        code,
        message: message.into(),
    }
}

pub struct Registry {
    cidr: Ipv4Net,
    host_prefix: u8,
    nodes: BTreeMap<u32, NodeRecord>,
    live: HashMap<u32, Live>,
    tokens: HashMap<String, TokenRecord>,
    /// Indexes over `nodes`, so admitting a node costs the same with ten
    /// nodes as with ten thousand.
    by_key: HashMap<String, u32>,
    by_name: HashMap<String, u32>,
    used_subnets: HashSet<Ipv4Net>,
    /// No subnet below this index is free.
    free_hint: u64,
    /// The id the next new node gets; ids are never reused.
    next_id: u32,
    /// Versions for delta sync.
    log: SyncLog,
    /// Nodes whose presence (or version) changed since the last snapshot.
    dirty: HashSet<u32>,
    /// Restored as online from a snapshot and not reconnected yet.
    presumed: HashSet<u32>,
    /// This Lighthouse's id ([`flatnet_wire::lighthouse::lighthouse_id`]).
    me: String,
    /// Presence at the other Lighthouses sharing the registry (etcd), by
    /// node and Lighthouse id; `live` is this Lighthouse's own.
    remote: HashMap<u32, BTreeMap<String, Live>>,
    /// Access policies of remote members, by name.
    policies: BTreeMap<String, PolicyRecord>,
}

/// Node names: 1-63 of `[A-Za-z0-9._-]`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl Registry {
    pub fn new(cidr: Ipv4Net, host_prefix: u8) -> Self {
        Self {
            cidr: cidr.trunc(),
            host_prefix,
            nodes: BTreeMap::new(),
            live: HashMap::new(),
            tokens: HashMap::new(),
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            used_subnets: HashSet::new(),
            free_hint: 1,
            next_id: 1,
            log: SyncLog::new(0),
            dirty: HashSet::new(),
            presumed: HashSet::new(),
            me: String::new(),
            remote: HashMap::new(),
            policies: BTreeMap::new(),
        }
    }

    /// This Lighthouse's id, named in the `via` of the nodes it serves.
    pub fn set_me(&mut self, id: &str) {
        self.me = id.to_string();
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The delta-sync log (versions, removals).
    pub fn log(&self) -> &SyncLog {
        &self.log
    }

    /// Continue from a stored log and presence snapshot. Nodes that were
    /// online are presumed online until they reconnect or
    /// [`Registry::expire_presumed`] runs.
    pub fn resume(&mut self, log: SyncLog, presence: Vec<(u32, Live)>) {
        self.log = log;
        for (id, p) in presence {
            if !self.nodes.contains_key(&id) {
                continue;
            }
            if p.online {
                self.presumed.insert(id);
            }
            self.live.insert(id, p);
        }
    }

    /// Presumed-online nodes that did not come back are offline now.
    pub fn expire_presumed(&mut self) -> Vec<Change> {
        let gone: Vec<u32> = self.presumed.drain().collect();
        let mut out = Vec::new();
        for id in gone {
            out.extend(self.disconnected(id));
        }
        out
    }

    /// The presence rows changed since the last call (removed nodes are
    /// dropped from the store with their record).
    pub fn take_dirty(&mut self) -> Vec<(u32, Stored)> {
        let ids: Vec<u32> = self.dirty.drain().collect();
        ids.into_iter()
            .filter(|id| self.nodes.contains_key(id))
            .map(|id| (id, self.presence_row(id)))
            .collect()
    }

    /// Node `id`'s presence snapshot row.
    fn presence_row(&self, id: u32) -> Stored {
        Stored {
            presence: self.live.get(&id).cloned().unwrap_or_default(),
            changed: self.log.changed_at(id),
        }
    }

    /// Write every node's presence here again (a new presence lease).
    pub fn mark_all_live(&mut self) {
        let ids: Vec<u32> = self.live.keys().copied().collect();
        self.dirty.extend(ids);
    }

    /// Write these rows with the next snapshot.
    pub fn mark_dirty(&mut self, ids: impl Iterator<Item = u32>) {
        self.dirty.extend(ids);
    }

    /// Give every change its version in the log.
    fn versioned(&mut self, changes: Vec<Change>) -> Vec<Change> {
        for c in &changes {
            match c {
                Change::NodeSaved(NodeRecord { id, .. }) | Change::NodeLive(id) => {
                    self.log.touch(*id);
                    self.dirty.insert(*id);
                }
                Change::NodeRemoved(id) => {
                    self.log.remove(*id);
                    self.dirty.remove(id);
                    self.presumed.remove(id);
                }
                Change::TokenSaved(_) | Change::PolicySaved(_) | Change::PolicyRemoved(_) => {}
            }
        }
        changes
    }

    /// What node `id`, complete up to `since`, must be sent: the full list
    /// of the others, or the records changed and ids removed since.
    pub fn catchup(&self, id: u32, since: Option<SyncPoint>) -> (Vec<PeerInfo>, Vec<u32>, bool) {
        let others = self.nodes.keys().copied().filter(|k| *k != id);
        match self.log.catchup(since, others) {
            Catchup::Full => (self.peers_of(id), vec![], false),
            Catchup::Delta { changed, removed } => (
                changed
                    .into_iter()
                    .filter_map(|k| self.peer_info(k))
                    .collect(),
                removed.into_iter().filter(|r| *r != id).collect(),
                true,
            ),
        }
    }

    fn index(&mut self, n: &NodeRecord) {
        self.by_key.insert(n.public_key.clone(), n.id);
        self.by_name.insert(n.name.clone(), n.id);
        self.used_subnets.insert(n.subnet);
    }

    /// Load persisted state; `next_id` as stored (older stores have none).
    pub fn restore(
        &mut self,
        nodes: Vec<NodeRecord>,
        tokens: Vec<TokenRecord>,
        next_id: Option<u32>,
    ) {
        let highest = nodes.iter().map(|n| n.id).max().unwrap_or(0);
        self.next_id = next_id.unwrap_or(1).max(highest.saturating_add(1));
        for n in nodes {
            self.index(&n);
            self.nodes.insert(n.id, n);
        }
        for t in tokens {
            self.tokens.insert(t.id.clone(), t);
        }
    }

    /// Go back to what the store holds (after a change it refused): the
    /// persisted part is rebuilt from it; live data of nodes still there
    /// is kept.
    pub fn reload(
        &mut self,
        nodes: Vec<NodeRecord>,
        tokens: Vec<TokenRecord>,
        next_id: Option<u32>,
    ) {
        let mut live = std::mem::take(&mut self.live);
        let mut fresh = Registry::new(self.cidr, self.host_prefix);
        fresh.me = std::mem::take(&mut self.me);
        fresh.restore(nodes, tokens, next_id);
        fresh.remote = std::mem::take(&mut self.remote);
        fresh.policies = std::mem::take(&mut self.policies);
        fresh.remote.retain(|id, _| fresh.nodes.contains_key(id));
        live.retain(|id, _| fresh.nodes.contains_key(id));
        fresh.live = live;
        // The versions handed out stay handed out; a node the refused
        // change would have removed is announced again, as it is.
        fresh.log = std::mem::replace(&mut self.log, SyncLog::new(0));
        fresh.presumed = std::mem::take(&mut self.presumed);
        fresh.presumed.retain(|id| fresh.nodes.contains_key(id));
        let revived: Vec<u32> = fresh
            .log
            .tombstones()
            .map(|(_, id)| id)
            .filter(|id| fresh.nodes.contains_key(id))
            .collect();
        for id in revived {
            fresh.log.revive(id);
            fresh.dirty.insert(id);
        }
        *self = fresh;
    }

    /// The id the next new node will get (stored with every change).
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn host_prefix(&self) -> u8 {
        self.host_prefix
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn node(&self, id: u32) -> Option<&NodeRecord> {
        self.nodes.get(&id)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Online here or at another Lighthouse.
    pub fn is_online(&self, id: u32) -> bool {
        self.live.get(&id).is_some_and(|l| l.online)
            || self
                .remote
                .get(&id)
                .is_some_and(|m| m.values().any(|l| l.online))
    }

    /// Register a token (the server made it; we keep only its id).
    pub fn add_token(
        &mut self,
        token: &Token,
        now: u64,
        ttl: Option<u64>,
        reusable: bool,
    ) -> Vec<Change> {
        let rec = TokenRecord {
            id: token.id(),
            created: now,
            expires: ttl.map(|t| now.saturating_add(t)),
            reusable,
            revoked: false,
            uses: 0,
        };
        self.tokens.insert(rec.id.clone(), rec.clone());
        vec![Change::TokenSaved(rec)]
    }

    /// Revoke a token (by id or id prefix of at least 8 hex digits) and
    /// remove every node that joined with it.
    pub fn revoke_token(&mut self, id_prefix: &str) -> Result<Vec<Change>, RegistryError> {
        let id = self.resolve_token(id_prefix)?;
        let mut changes = Vec::new();
        if let Some(t) = self.tokens.get_mut(&id) {
            t.revoked = true;
            changes.push(Change::TokenSaved(t.clone()));
        }
        let victims: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| n.token_id == id)
            .map(|n| n.id)
            .collect();
        for v in victims {
            changes.extend(self.remove_id(v));
        }
        Ok(changes)
    }

    fn resolve_token(&self, prefix: &str) -> Result<String, RegistryError> {
        if prefix.len() < 8 {
            return Err(err(
                LhErrorCode::Protocol,
                "give at least 8 hex digits of the token id",
            ));
        }
        let hits: Vec<&String> = self
            .tokens
            .keys()
            .filter(|k| k.starts_with(prefix))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(err(LhErrorCode::BadToken, format!("no token {prefix}"))),
            _ => Err(err(
                LhErrorCode::BadToken,
                format!("{prefix} matches several tokens"),
            )),
        }
    }

    /// Remove a node by name.
    pub fn remove_node(&mut self, name: &str) -> Result<Vec<Change>, RegistryError> {
        let id = self
            .by_name
            .get(name)
            .copied()
            .ok_or_else(|| err(LhErrorCode::Protocol, format!("no node named {name:?}")))?;
        Ok(self.remove_id(id))
    }

    fn remove_id(&mut self, id: u32) -> Vec<Change> {
        if let Some(n) = self.nodes.remove(&id) {
            self.by_key.remove(&n.public_key);
            self.by_name.remove(&n.name);
            self.used_subnets.remove(&n.subnet);
            // Hand the lowest free subnet out first, as before the removal.
            self.free_hint = 1;
        }
        self.live.remove(&id);
        self.remote.remove(&id);
        self.versioned(vec![Change::NodeRemoved(id)])
    }

    /// Admit a node whose key proof has already been verified. Known keys
    /// come back without a token; new keys need a valid one.
    pub fn admit(
        &mut self,
        name: &str,
        public_key: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<(u32, Vec<Change>), RegistryError> {
        if !valid_name(name) {
            return Err(err(
                LhErrorCode::Protocol,
                format!("invalid node name {name:?}"),
            ));
        }
        if let Some(n) = self
            .by_key
            .get(public_key)
            .and_then(|id| self.nodes.get(id))
        {
            if n.member.is_some() {
                return Err(err(
                    LhErrorCode::Removed,
                    "this key belongs to a remote member: members connect with WireGuard to \
                     their hub, never to the Lighthouse",
                ));
            }
            if n.name != name {
                return Err(err(
                    LhErrorCode::NameTaken,
                    format!("this key is registered as {:?}, not {name:?}", n.name),
                ));
            }
            return Ok((n.id, vec![]));
        }
        if self.by_name.contains_key(name) {
            return Err(err(
                LhErrorCode::NameTaken,
                format!("the name {name:?} belongs to another node"),
            ));
        }
        let token = token.ok_or_else(|| {
            err(
                LhErrorCode::BadToken,
                "a join token is required for a new node",
            )
        })?;
        let token = Token::decode(token).map_err(|e| err(LhErrorCode::BadToken, e.to_string()))?;
        let rec = self
            .tokens
            .get(&token.id())
            .cloned()
            .ok_or_else(|| err(LhErrorCode::BadToken, "unknown join token"))?;
        if let Some(why) = rec.refuse(now) {
            return Err(err(LhErrorCode::BadToken, why));
        }
        let subnet = self.free_subnet().ok_or_else(|| {
            err(
                LhErrorCode::Exhausted,
                format!("no free /{} left in {}", self.host_prefix, self.cidr),
            )
        })?;
        let id = self.take_id()?;
        let node = NodeRecord {
            id,
            name: name.to_string(),
            public_key: public_key.to_string(),
            subnet,
            token_id: rec.id.clone(),
            joined: now,
            member: None,
        };
        let mut rec = rec;
        rec.uses += 1;
        self.tokens.insert(rec.id.clone(), rec.clone());
        self.index(&node);
        self.nodes.insert(id, node.clone());
        Ok((
            id,
            self.versioned(vec![Change::TokenSaved(rec), Change::NodeSaved(node)]),
        ))
    }

    /// A new node or member id; ids are never reused.
    fn take_id(&mut self) -> Result<u32, RegistryError> {
        let id = self.next_id;
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or_else(|| err(LhErrorCode::Exhausted, "node ids are exhausted"))?;
        Ok(id)
    }

    /// The first host subnet not in use. The CIDR's first /N is skipped: its
    /// `.0.1` gateway is easily mistaken for a router; so is the last, the
    /// members' range.
    fn free_subnet(&mut self) -> Option<Ipv4Net> {
        let size = 1u64 << (32 - self.host_prefix);
        let base = u64::from(u32::from(self.cidr.network()));
        let count = 1u64 << (self.host_prefix.saturating_sub(self.cidr.prefix_len()));
        for i in self.free_hint.max(1)..count {
            let Some(s) = u32::try_from(base + i * size)
                .ok()
                .and_then(|a| Ipv4Net::new(Ipv4Addr::from(a), self.host_prefix).ok())
            else {
                continue;
            };
            if !self.used_subnets.contains(&s) && !self.is_members_range(&s) {
                self.free_hint = i;
                return Some(s);
            }
        }
        None
    }

    /// A node connected (or its observed endpoint moved). Nothing changes,
    /// and nothing is announced, when it comes back as it was (after a
    /// Lighthouse restart, from the presence snapshot).
    pub fn connected(
        &mut self,
        id: u32,
        observed: SocketAddr,
        local: Vec<SocketAddr>,
    ) -> Vec<Change> {
        let local = self.plausible(local, Some(observed));
        self.presumed.remove(&id);
        let now = Live {
            online: true,
            observed: Some(observed),
            local_addrs: local,
        };
        if self.live.get(&id) == Some(&now) {
            return vec![];
        }
        self.live.insert(id, now);
        self.versioned(vec![Change::NodeLive(id)])
    }

    pub fn observed(&mut self, id: u32, observed: SocketAddr) -> Vec<Change> {
        match self.live.get_mut(&id) {
            Some(l) if l.observed != Some(observed) => {
                l.observed = Some(observed);
                self.versioned(vec![Change::NodeLive(id)])
            }
            _ => vec![],
        }
    }

    /// The addresses of `local` other members may be told (see
    /// [`candidate_ok`]), without repeats, at most [`MAX_LOCAL_ADDRS`].
    fn plausible(&self, local: Vec<SocketAddr>, observed: Option<SocketAddr>) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in local {
            if candidate_ok(a, observed, self.cidr) && !out.contains(&a) {
                out.push(a);
            }
        }
        out.truncate(MAX_LOCAL_ADDRS);
        out
    }

    pub fn update_local(&mut self, id: u32, local: Vec<SocketAddr>) -> Vec<Change> {
        let observed = self.live.get(&id).and_then(|l| l.observed);
        let local = self.plausible(local, observed);
        match self.live.get_mut(&id) {
            Some(l) if l.local_addrs != local => {
                l.local_addrs = local;
                self.versioned(vec![Change::NodeLive(id)])
            }
            _ => vec![],
        }
    }

    /// A node's connection ended. Its last endpoints are kept (peers may
    /// still reach it directly), but it is marked offline (no relay).
    pub fn disconnected(&mut self, id: u32) -> Vec<Change> {
        match self.live.get_mut(&id) {
            Some(l) if l.online => {
                l.online = false;
                self.versioned(vec![Change::NodeLive(id)])
            }
            _ => vec![],
        }
    }

    /// How the others see node `id`: its presence here if it is online
    /// here, else at the first Lighthouse it is online at, else the last
    /// known; `via` names every Lighthouse it is online at.
    pub fn peer_info(&self, id: u32) -> Option<PeerInfo> {
        let n = self.nodes.get(&id)?;
        if let Some(m) = &n.member {
            return Some(PeerInfo {
                node_id: n.id,
                name: n.name.clone(),
                public_key: n.public_key.clone(),
                subnet: n.subnet,
                observed: None,
                local_addrs: vec![],
                online: false,
                via: vec![],
                member: Some(self.member_info(m)),
            });
        }
        let l = self.merged_presence(id);
        Some(PeerInfo {
            node_id: n.id,
            name: n.name.clone(),
            public_key: n.public_key.clone(),
            subnet: n.subnet,
            observed: l.observed,
            local_addrs: l.local_addrs,
            online: l.online,
            via: self.via(id),
            member: None,
        })
    }

    /// Node `id`'s presence over every Lighthouse (see [`Self::peer_info`]).
    fn merged_presence(&self, id: u32) -> Live {
        let here = self.live.get(&id);
        let there = self.remote.get(&id);
        here.filter(|l| l.online)
            .or_else(|| there.and_then(|m| m.values().find(|l| l.online)))
            .or(here)
            .or_else(|| there.and_then(|m| m.values().next()))
            .cloned()
            .unwrap_or_default()
    }

    /// The Lighthouses node `id` is online at, sorted.
    fn via(&self, id: u32) -> Vec<String> {
        let mut out: Vec<String> = self
            .remote
            .get(&id)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(_, l)| l.online)
            .map(|(lh, _)| lh.clone())
            .collect();
        if self.live.get(&id).is_some_and(|l| l.online) && !self.me.is_empty() {
            out.push(self.me.clone());
        }
        out.sort();
        out.dedup();
        out
    }

    /// Everyone but `id`.
    pub fn peers_of(&self, id: u32) -> Vec<PeerInfo> {
        self.nodes
            .keys()
            .filter(|k| **k != id)
            .filter_map(|k| self.peer_info(*k))
            .collect()
    }

    /// Endpoints to punch towards `target` from `from`: its observed public
    /// endpoint, plus its local addresses when both sit behind the same
    /// public address (same LAN).
    pub fn punch_endpoints(&self, from: u32, target: u32) -> Vec<SocketAddr> {
        let (f, t) = (self.merged_presence(from), self.merged_presence(target));
        let mut out = Vec::new();
        let same_nat = matches!((f.observed, t.observed), (Some(a), Some(b)) if a.ip() == b.ip());
        if same_nat {
            out.extend(t.local_addrs.iter().copied());
        }
        out.extend(t.observed);
        if !same_nat {
            out.extend(t.local_addrs.iter().copied());
        }
        out.dedup();
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FP: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    pub(crate) fn reg() -> Registry {
        Registry::new("10.87.0.0/16".parse().unwrap(), 24)
    }

    /// A fresh reusable token of `r`.
    pub(crate) fn token(r: &mut Registry) -> String {
        tok(r, None, true)
    }

    /// Node `name` with key `key` joins `r`; its id.
    pub(crate) fn join(r: &mut Registry, name: &str, key: &str) -> u32 {
        let t = token(r);
        r.admit(name, key, Some(&t), 100).unwrap().0
    }

    fn tok(r: &mut Registry, ttl: Option<u64>, reusable: bool) -> String {
        let t = Token::generate("lh:7871", FP);
        r.add_token(&t, 100, ttl, reusable);
        t.encode()
    }

    #[test]
    fn join_gets_distinct_stable_subnets() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        assert_eq!(r.node(a).unwrap().subnet.to_string(), "10.87.1.0/24");
        assert_eq!(r.node(b).unwrap().subnet.to_string(), "10.87.2.0/24");
        // Coming back with the same key: same id and subnet, no token needed.
        let (a2, ch) = r.admit("a", "KA", None, 200).unwrap();
        assert_eq!(a2, a);
        assert!(ch.is_empty());
    }

    #[test]
    fn single_use_token_admits_once() {
        let mut r = reg();
        let t = tok(&mut r, None, false);
        r.admit("a", "KA", Some(&t), 100).unwrap();
        let e = r.admit("b", "KB", Some(&t), 100).unwrap_err();
        assert_eq!(e.code, LhErrorCode::BadToken);
        assert!(e.message.contains("already used"));
    }

    #[test]
    fn expired_unknown_and_missing_tokens_refused_and_nothing_stored() {
        let mut r = reg();
        let t = tok(&mut r, Some(60), true);
        assert!(r
            .admit("a", "KA", Some(&t), 161)
            .unwrap_err()
            .message
            .contains("expired"));
        let other = Token::generate("lh:7871", FP).encode();
        assert!(r
            .admit("a", "KA", Some(&other), 100)
            .unwrap_err()
            .message
            .contains("unknown"));
        assert_eq!(
            r.admit("a", "KA", None, 100).unwrap_err().code,
            LhErrorCode::BadToken
        );
        assert_eq!(
            r.admit("a", "KA", Some("garbage"), 100).unwrap_err().code,
            LhErrorCode::BadToken
        );
        assert_eq!(r.nodes().count(), 0);
    }

    #[test]
    fn cannot_claim_another_nodes_name_or_rename_a_key() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        r.admit("a", "KA", Some(&t), 100).unwrap();
        assert_eq!(
            r.admit("a", "KX", Some(&t), 100).unwrap_err().code,
            LhErrorCode::NameTaken
        );
        assert_eq!(
            r.admit("z", "KA", Some(&t), 100).unwrap_err().code,
            LhErrorCode::NameTaken
        );
        assert_eq!(
            r.admit("bad name", "KB", Some(&t), 100).unwrap_err().code,
            LhErrorCode::Protocol
        );
    }

    #[test]
    fn revoking_a_token_removes_its_nodes() {
        let mut r = reg();
        let t1 = tok(&mut r, None, true);
        let t2 = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t1), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t2), 100).unwrap();
        let id1 = Token::decode(&t1).unwrap().id();
        let ch = r.revoke_token(&id1[..12]).unwrap();
        assert!(ch.contains(&Change::NodeRemoved(a)));
        assert!(r.node(a).is_none() && r.node(b).is_some());
        assert_eq!(
            r.admit("c", "KC", Some(&t1), 100).unwrap_err().code,
            LhErrorCode::BadToken
        );
        assert!(r.revoke_token("abc").is_err());
    }

    #[test]
    fn removed_node_needs_a_new_token() {
        let mut r = reg();
        let t = tok(&mut r, None, false);
        r.admit("a", "KA", Some(&t), 100).unwrap();
        r.remove_node("a").unwrap();
        assert_eq!(
            r.admit("a", "KA", None, 100).unwrap_err().code,
            LhErrorCode::BadToken
        );
        assert!(r.remove_node("a").is_err());
    }

    #[test]
    fn node_ids_are_never_reused() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        r.remove_node("b").unwrap();
        let (c, _) = r.admit("c", "KC", Some(&t), 100).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        // After a restart, from the stored counter, not the highest id
        // left (which would hand c's id out again).
        r.remove_node("c").unwrap();
        let nodes: Vec<NodeRecord> = r.nodes().cloned().collect();
        let tokens: Vec<_> = r.tokens().cloned().collect();
        let mut again = reg();
        again.restore(nodes, tokens, Some(r.next_id()));
        let (d, _) = again.admit("d", "KD", Some(&t), 100).unwrap();
        assert_eq!(d, 4);
    }

    #[test]
    fn reload_goes_back_to_the_store_and_keeps_live_data() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        r.connected(a, "198.51.100.7:4000".parse().unwrap(), vec![]);
        let stored: (Vec<NodeRecord>, Vec<_>, u32) = (
            r.nodes().cloned().collect(),
            r.tokens().cloned().collect(),
            r.next_id(),
        );
        // A join the store then refused.
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        r.connected(b, "198.51.100.8:4000".parse().unwrap(), vec![]);
        r.reload(stored.0, stored.1, Some(stored.2));
        assert!(r.node(b).is_none() && r.peer_info(b).is_none());
        assert!(r.is_online(a), "a's live data survives");
        assert_eq!(r.next_id(), b, "b's id was never handed out");
        let (b2, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        assert_eq!(b2, b);
    }

    #[test]
    fn peers_and_punch_endpoints() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        r.connected(
            a,
            "203.0.113.1:4000".parse().unwrap(),
            vec!["192.168.1.2:51820".parse().unwrap()],
        );
        r.connected(
            b,
            "203.0.113.2:5000".parse().unwrap(),
            vec!["192.168.2.2:51820".parse().unwrap()],
        );
        let peers = r.peers_of(a);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].name, "b");
        assert!(peers[0].online);
        // Different NATs: the public mapping first.
        assert_eq!(
            r.punch_endpoints(a, b)[0],
            "203.0.113.2:5000".parse::<SocketAddr>().unwrap()
        );
        // Same public IP (same LAN behind one NAT): local addresses first.
        r.observed(b, "203.0.113.1:5001".parse().unwrap());
        assert_eq!(
            r.punch_endpoints(a, b)[0],
            "192.168.2.2:51820".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(r.disconnected(b), vec![Change::NodeLive(b)]);
        assert!(!r.peer_info(b).unwrap().online);
    }

    #[test]
    fn every_change_gets_a_version_and_a_reconnect_as_before_changes_nothing() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        let seen: SocketAddr = "203.0.113.1:4000".parse().unwrap();
        assert_eq!(r.connected(b, seen, vec![]), vec![Change::NodeLive(b)]);
        let p = r.log().point();
        assert!(r.connected(b, seen, vec![]).is_empty(), "nothing changed");
        assert_eq!(r.log().point(), p);
        // a is complete up to p: nothing to send.
        assert_eq!(r.catchup(a, Some(p)), (vec![], vec![], true));
        r.disconnected(b);
        let (c, _) = r.admit("c", "KC", Some(&t), 100).unwrap();
        r.remove_node("c").unwrap();
        let (peers, removed, delta) = r.catchup(a, Some(p));
        assert!(delta);
        assert_eq!(peers.iter().map(|p| p.node_id).collect::<Vec<_>>(), vec![b]);
        assert!(!peers[0].online);
        assert_eq!(removed, vec![c]);
        // No point, or one from another registry: everything.
        assert_eq!(r.catchup(a, None).0.len(), 1);
        let other = SyncPoint {
            epoch: r.log().epoch() + 1,
            version: 1,
        };
        assert!(!r.catchup(a, Some(other)).2);
    }

    #[test]
    fn restored_presence_is_presumed_until_the_grace_ends() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        let seen: SocketAddr = "203.0.113.1:4000".parse().unwrap();
        r.connected(a, seen, vec![]);
        r.connected(b, "203.0.113.2:4000".parse().unwrap(), vec![]);
        let rows = r.take_dirty();
        assert_eq!(rows.len(), 2);
        assert!(r.take_dirty().is_empty());
        // A restart: the same records, the snapshot, a resumed log.
        let nodes: Vec<NodeRecord> = r.nodes().cloned().collect();
        let mut again = reg();
        again.restore(nodes, r.tokens().cloned().collect(), Some(r.next_id()));
        let changed = rows.iter().map(|(id, s)| (*id, s.changed)).collect();
        let log = SyncLog::resume(7, r.log().version(), 0, changed, Default::default());
        again.resume(
            log,
            rows.into_iter().map(|(id, s)| (id, s.presence)).collect(),
        );
        assert!(again.is_online(a) && again.is_online(b));
        let before = again.log().version();
        assert!(
            again.connected(a, seen, vec![]).is_empty(),
            "a came back as it was"
        );
        assert_eq!(again.expire_presumed(), vec![Change::NodeLive(b)]);
        assert!(again.is_online(a) && !again.is_online(b));
        assert!(again.log().changed_at(b) > before);
    }

    #[test]
    fn a_removal_the_store_refused_is_announced_again() {
        let mut r = reg();
        let t = tok(&mut r, None, true);
        let (a, _) = r.admit("a", "KA", Some(&t), 100).unwrap();
        let (b, _) = r.admit("b", "KB", Some(&t), 100).unwrap();
        let stored: Vec<NodeRecord> = r.nodes().cloned().collect();
        let p = r.log().point();
        r.remove_node("b").unwrap();
        r.reload(stored, r.tokens().cloned().collect(), Some(r.next_id()));
        let (peers, removed, delta) = r.catchup(a, Some(p));
        assert!(delta);
        assert!(removed.is_empty(), "b was not removed after all");
        assert_eq!(peers[0].node_id, b);
    }

    #[test]
    fn subnets_run_out() {
        let mut r = Registry::new("10.87.0.0/22".parse().unwrap(), 24);
        let t = tok(&mut r, None, true);
        // The first /24 is skipped, the last is the members' range.
        for i in 0..2 {
            r.admit(&format!("n{i}"), &format!("K{i}"), Some(&t), 100)
                .unwrap();
        }
        assert_eq!(
            r.admit("n9", "K9", Some(&t), 100).unwrap_err().code,
            LhErrorCode::Exhausted
        );
    }
}
