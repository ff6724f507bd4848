//! Persistent leases in a redb database (`<state_dir>/ipam.redb`).
//!
//! Two tables, always changed together in one write transaction:
//! - `leases`: (network, container id, ifname) → lease as JSON
//! - `addresses`: IPv4 address as u32 → (network, container id, ifname)
//!
//! plus `meta` holding the round-robin cursor. redb commits are durable
//! (fsync) and atomic; write transactions are serialised by redb itself, so
//! concurrent allocations can never hand out one address twice.

use std::{collections::HashSet, net::Ipv4Addr, path::Path};

use flatnet_wire::{api::AllocateRequest, AttachmentId, AttachmentKey, Lease};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Pool;

type KeyTuple<'a> = (&'a str, &'a str, &'a str);

const LEASES: TableDefinition<KeyTuple, &str> = TableDefinition::new("leases");
const ADDRESSES: TableDefinition<u32, KeyTuple> = TableDefinition::new("addresses");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const CURSOR: &str = "cursor";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {0}")]
    Exhausted(ipnet::Ipv4Net),
    #[error("lease database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt lease record: {0}")]
    Corrupt(String),
    #[error("address {ip} is not assignable on this host: use one of {subnet} except its network, gateway (first) and broadcast addresses")]
    OutOfPool {
        ip: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error("address {ip} is already leased to container {holder}; pick another address or remove that container first")]
    InUse { ip: Ipv4Addr, holder: String },
    #[error("this attachment already holds {held}, not {asked}; disconnect it before asking for another address")]
    Held { held: Ipv4Addr, asked: Ipv4Addr },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for IpamError {
            fn from(e: $t) -> Self {
                IpamError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub lease: Lease,
    /// False when the key already held a lease (a repeated ADD).
    pub fresh: bool,
}

pub struct LeaseStore {
    db: Database,
}

fn key_of(k: &AttachmentKey) -> KeyTuple<'_> {
    (&k.network, &k.container_id, &k.ifname)
}

fn decode(json: &str) -> Result<Lease, IpamError> {
    serde_json::from_str(json).map_err(|e| IpamError::Corrupt(e.to_string()))
}

/// The lease stored under `key` in `leases`, decoded.
fn lease_at(
    leases: &impl ReadableTable<KeyTuple<'static>, &'static str>,
    key: KeyTuple<'_>,
) -> Result<Option<Lease>, IpamError> {
    match leases.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn encode(lease: &Lease) -> Result<String, IpamError> {
    serde_json::to_string(lease).map_err(|e| IpamError::Corrupt(e.to_string()))
}

impl LeaseStore {
    /// Open (or create) the lease database at `path`.
    pub fn open(path: &Path) -> Result<Self, IpamError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(LEASES)?;
            tx.open_table(ADDRESSES)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// Lease an address from `pool` to `req.key`. Idempotent: a key that
    /// already holds an address in the pool keeps it (its name and ports
    /// are refreshed); a lease outside the pool (the subnet changed) is
    /// replaced.
    pub fn allocate(
        &self,
        pool: &Pool,
        req: &AllocateRequest,
        now: u64,
    ) -> Result<Allocation, IpamError> {
        let tx = self.db.begin_write()?;
        let result = {
            let mut leases = tx.open_table(LEASES)?;
            let mut addrs = tx.open_table(ADDRESSES)?;
            let mut meta = tx.open_table(META)?;
            let key = key_of(&req.key);

            if let Some(mut lease) = lease_at(&leases, key)? {
                if pool.contains(lease.ip) {
                    if let Some(asked) = req.ip.filter(|ip| *ip != lease.ip) {
                        return Err(IpamError::Held {
                            held: lease.ip,
                            asked,
                        });
                    }
                    lease.netns = req.netns.clone().or(lease.netns);
                    lease.container_name = req.container_name.clone().or(lease.container_name);
                    if !req.ports.is_empty() {
                        lease.ports = req.ports.clone();
                    }
                    if !req.aliases.is_empty() {
                        lease.aliases = req.aliases.clone();
                    }
                    lease.publish = req.publish;
                    lease.internal = req.internal;
                    lease.refreshed = now;
                    leases.insert(key, encode(&lease)?.as_str())?;
                    Allocation {
                        lease,
                        fresh: false,
                    }
                } else {
                    addrs.remove(u32::from(lease.ip))?;
                    self::fresh(pool, req, now, &mut leases, &mut addrs, &mut meta)?
                }
            } else {
                self::fresh(pool, req, now, &mut leases, &mut addrs, &mut meta)?
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Drop the lease of `key`; returns it, or `None` when there was none.
    pub fn release(&self, key: &AttachmentKey) -> Result<Option<Lease>, IpamError> {
        let tx = self.db.begin_write()?;
        let old = {
            let mut leases = tx.open_table(LEASES)?;
            let mut addrs = tx.open_table(ADDRESSES)?;
            let old = match leases.remove(key_of(key))? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            if let Some(l) = &old {
                addrs.remove(u32::from(l.ip))?;
            }
            old
        };
        tx.commit()?;
        Ok(old)
    }

    /// Put back `old` exactly as it was, replacing whatever its key holds
    /// now (undoing a refused renewal).
    pub fn restore(&self, old: &Lease) -> Result<(), IpamError> {
        let tx = self.db.begin_write()?;
        {
            let mut leases = tx.open_table(LEASES)?;
            let mut addrs = tx.open_table(ADDRESSES)?;
            if let Some(c) = lease_at(&leases, key_of(&old.key))? {
                addrs.remove(u32::from(c.ip))?;
            }
            leases.insert(key_of(&old.key), encode(old)?.as_str())?;
            addrs.insert(u32::from(old.ip), key_of(&old.key))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drop `lease` only if the store still holds exactly it: a
    /// reconciliation that decided from an older list never removes a lease
    /// the runtime has renewed or replaced since. Returns whether it did.
    pub fn release_if_unchanged(&self, lease: &Lease) -> Result<bool, IpamError> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut leases = tx.open_table(LEASES)?;
            let mut addrs = tx.open_table(ADDRESSES)?;
            if lease_at(&leases, key_of(&lease.key))?.as_ref() == Some(lease) {
                leases.remove(key_of(&lease.key))?;
                addrs.remove(u32::from(lease.ip))?;
                true
            } else {
                false
            }
        };
        tx.commit()?;
        Ok(removed)
    }

    /// The lease of `key`, if any.
    pub fn get(&self, key: &AttachmentKey) -> Result<Option<Lease>, IpamError> {
        let tx = self.db.begin_read()?;
        let leases = tx.open_table(LEASES)?;
        lease_at(&leases, key_of(key))
    }

    /// Every lease, ordered by key.
    pub fn list(&self) -> Result<Vec<Lease>, IpamError> {
        let tx = self.db.begin_read()?;
        let leases = tx.open_table(LEASES)?;
        let mut out = Vec::new();
        for row in leases.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// GC: release every lease of `network` whose attachment is not in
    /// `valid`, in one transaction, except those created or renewed at or
    /// after `keep_since` (unix seconds): an ADD may be in flight that the
    /// runtime's list of valid attachments, made a moment earlier, does not
    /// know yet. Returns what was released.
    pub fn gc(
        &self,
        network: &str,
        valid: &[AttachmentId],
        keep_since: u64,
    ) -> Result<Vec<Lease>, IpamError> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let tx = self.db.begin_write()?;
        let released = {
            let mut leases = tx.open_table(LEASES)?;
            let mut addrs = tx.open_table(ADDRESSES)?;
            let mut stale = Vec::new();
            for row in leases.iter()? {
                let (_, v) = row?;
                let lease = decode(v.value())?;
                if lease.key.network == network
                    && lease.touched() < keep_since
                    && !keep.contains(&(lease.key.container_id.as_str(), lease.key.ifname.as_str()))
                {
                    stale.push(lease);
                }
            }
            for l in &stale {
                leases.remove(key_of(&l.key))?;
                addrs.remove(u32::from(l.ip))?;
            }
            stale
        };
        tx.commit()?;
        Ok(released)
    }
}

/// Pick and record a new address for `req` inside an open transaction.
fn fresh(
    pool: &Pool,
    req: &AllocateRequest,
    now: u64,
    leases: &mut redb::Table<KeyTuple, &str>,
    addrs: &mut redb::Table<u32, KeyTuple>,
    meta: &mut redb::Table<&str, u32>,
) -> Result<Allocation, IpamError> {
    if let Some(ip) = req.ip {
        return fixed(pool, req, ip, now, leases, addrs);
    }
    let cursor = meta.get(CURSOR)?.map(|v| Ipv4Addr::from(v.value()));
    let mut lookup_err = None;
    let ip = pool.next_free(cursor, |ip| match addrs.get(u32::from(ip)) {
        Ok(v) => v.is_some(),
        Err(e) => {
            lookup_err.get_or_insert(e);
            true
        }
    });
    if let Some(e) = lookup_err {
        return Err(e.into());
    }
    let ip = ip.ok_or(IpamError::Exhausted(pool.subnet()))?;
    let a = record(req, ip, now, leases, addrs)?;
    meta.insert(CURSOR, u32::from(ip))?;
    Ok(a)
}

/// Record the address the request names (`--ip`), if it is in the pool and
/// free. The round-robin cursor is left alone.
fn fixed(
    pool: &Pool,
    req: &AllocateRequest,
    ip: Ipv4Addr,
    now: u64,
    leases: &mut redb::Table<KeyTuple, &str>,
    addrs: &mut redb::Table<u32, KeyTuple>,
) -> Result<Allocation, IpamError> {
    if !pool.contains(ip) {
        return Err(IpamError::OutOfPool {
            ip,
            subnet: pool.subnet(),
        });
    }
    if let Some(holder) = addrs.get(u32::from(ip))? {
        let (network, container, ifname) = holder.value();
        return Err(IpamError::InUse {
            ip,
            holder: format!("{container} ({network}, {ifname})"),
        });
    }
    record(req, ip, now, leases, addrs)
}

fn record(
    req: &AllocateRequest,
    ip: Ipv4Addr,
    now: u64,
    leases: &mut redb::Table<KeyTuple, &str>,
    addrs: &mut redb::Table<u32, KeyTuple>,
) -> Result<Allocation, IpamError> {
    let lease = Lease {
        key: req.key.clone(),
        ip,
        netns: req.netns.clone(),
        container_name: req.container_name.clone(),
        ports: req.ports.clone(),
        aliases: req.aliases.clone(),
        publish: req.publish,
        internal: req.internal,
        created: now,
        refreshed: 0,
    };
    leases.insert(key_of(&req.key), encode(&lease)?.as_str())?;
    addrs.insert(u32::from(ip), key_of(&req.key))?;
    Ok(Allocation { lease, fresh: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str) -> AllocateRequest {
        AllocateRequest {
            netns: Some(format!("/run/netns/{id}")),
            container_name: Some(format!("name-{id}")),
            ..AllocateRequest::new(AttachmentKey {
                network: "flatnet".into(),
                container_id: id.into(),
                ifname: "eth0".into(),
            })
        }
    }

    fn store() -> (tempfile::TempDir, LeaseStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LeaseStore::open(&dir.path().join("ipam.redb")).unwrap();
        (dir, s)
    }

    fn pool() -> Pool {
        Pool::new("10.87.1.0/24".parse().unwrap())
    }

    #[test]
    fn allocate_is_idempotent_per_key() {
        let (_d, s) = store();
        let a = s.allocate(&pool(), &req("a"), 1).unwrap();
        assert!(a.fresh);
        assert_eq!(a.lease.ip, "10.87.1.2".parse::<Ipv4Addr>().unwrap());
        let again = s.allocate(&pool(), &req("a"), 2).unwrap();
        assert!(!again.fresh);
        assert_eq!(again.lease.ip, a.lease.ip);
        assert_eq!(again.lease.created, 1);
        let b = s.allocate(&pool(), &req("b"), 3).unwrap();
        assert_ne!(b.lease.ip, a.lease.ip);
    }

    #[test]
    fn a_requested_address_is_honoured_when_free_and_in_the_pool() {
        let (_d, s) = store();
        let mut r = req("a");
        r.ip = Some("10.87.1.77".parse().unwrap());
        let a = s.allocate(&pool(), &r, 1).unwrap();
        assert_eq!(a.lease.ip, r.ip.unwrap());
        // Asking again (Podman's reload) is the same lease.
        let again = s.allocate(&pool(), &r, 5).unwrap();
        assert!(!again.fresh);
        assert_eq!((again.lease.ip, again.lease.touched()), (a.lease.ip, 5));
        // The cursor did not move: the next dynamic address is the first.
        let b = s.allocate(&pool(), &req("b"), 1).unwrap();
        assert_eq!(b.lease.ip, "10.87.1.2".parse::<Ipv4Addr>().unwrap());
        // Taken, out of the pool, the gateway, or another address for a held key.
        let mut taken = req("c");
        taken.ip = Some("10.87.1.77".parse().unwrap());
        assert!(matches!(
            s.allocate(&pool(), &taken, 1),
            Err(IpamError::InUse { .. })
        ));
        for bad in ["10.87.1.1", "10.87.1.255", "10.87.2.9"] {
            taken.ip = Some(bad.parse().unwrap());
            let e = s.allocate(&pool(), &taken, 1).unwrap_err();
            assert!(matches!(e, IpamError::OutOfPool { .. }), "{bad}: {e}");
        }
        let mut other = r.clone();
        other.ip = Some("10.87.1.78".parse().unwrap());
        assert!(matches!(
            s.allocate(&pool(), &other, 1),
            Err(IpamError::Held { .. })
        ));
        assert_eq!(s.list().unwrap().len(), 2, "failed requests store nothing");
    }

    #[test]
    fn same_container_other_ifname_gets_another_address() {
        let (_d, s) = store();
        let a = s.allocate(&pool(), &req("a"), 1).unwrap();
        let mut r = req("a");
        r.key.ifname = "eth1".into();
        let b = s.allocate(&pool(), &r, 1).unwrap();
        assert_ne!(a.lease.ip, b.lease.ip);
    }

    #[test]
    fn release_frees_and_is_idempotent() {
        let (_d, s) = store();
        let a = s.allocate(&pool(), &req("a"), 1).unwrap();
        assert_eq!(s.release(&a.lease.key).unwrap(), Some(a.lease.clone()));
        assert_eq!(s.release(&a.lease.key).unwrap(), None);
        assert_eq!(s.get(&a.lease.key).unwrap(), None);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn conditional_release_spares_a_renewed_lease() {
        let (_d, s) = store();
        let old = s.allocate(&pool(), &req("a"), 1).unwrap().lease;
        let renewed = s.allocate(&pool(), &req("a"), 9).unwrap().lease;
        assert!(!s.release_if_unchanged(&old).unwrap());
        assert_eq!(s.list().unwrap(), vec![renewed.clone()]);
        assert!(s.release_if_unchanged(&renewed).unwrap());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn round_robin_does_not_reuse_freed_address_at_once() {
        let (_d, s) = store();
        let a = s.allocate(&pool(), &req("a"), 1).unwrap();
        s.release(&a.lease.key).unwrap();
        let b = s.allocate(&pool(), &req("b"), 1).unwrap();
        assert_ne!(a.lease.ip, b.lease.ip);
    }

    #[test]
    fn exhaustion_is_an_error_and_changes_nothing() {
        let (_d, s) = store();
        let p = Pool::new("10.87.1.0/29".parse().unwrap());
        for i in 0..p.capacity() {
            s.allocate(&p, &req(&format!("c{i}")), 1).unwrap();
        }
        let before = s.list().unwrap();
        assert!(matches!(
            s.allocate(&p, &req("one-too-many"), 1),
            Err(IpamError::Exhausted(_))
        ));
        assert_eq!(s.list().unwrap(), before);
    }

    #[test]
    fn gc_keeps_valid_and_other_networks() {
        let (_d, s) = store();
        for id in ["a", "b", "c"] {
            s.allocate(&pool(), &req(id), 1).unwrap();
        }
        let mut other = req("z");
        other.key.network = "other".into();
        s.allocate(&pool(), &other, 1).unwrap();
        let valid = vec![AttachmentId {
            container_id: "b".into(),
            ifname: "eth0".into(),
        }];
        // Leases from t=1; one more arrives at t=100, as GC runs.
        s.allocate(&pool(), &req("new"), 100).unwrap();
        let mut gone: Vec<String> = s
            .gc("flatnet", &valid, 100)
            .unwrap()
            .into_iter()
            .map(|l| l.key.container_id)
            .collect();
        gone.sort();
        assert_eq!(gone, ["a", "c"]);
        let left: Vec<String> = s
            .list()
            .unwrap()
            .into_iter()
            .map(|l| l.key.container_id)
            .collect();
        assert_eq!(left, ["b", "new", "z"], "the ADD in flight keeps its lease");
    }

    #[test]
    fn leases_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.redb");
        let ip = {
            let s = LeaseStore::open(&path).unwrap();
            s.allocate(&pool(), &req("a"), 1).unwrap().lease.ip
        };
        let s = LeaseStore::open(&path).unwrap();
        let again = s.allocate(&pool(), &req("a"), 2).unwrap();
        assert!(!again.fresh);
        assert_eq!(again.lease.ip, ip);
    }

    #[test]
    fn subnet_change_moves_lease_into_new_pool() {
        let (_d, s) = store();
        let old = s.allocate(&pool(), &req("a"), 1).unwrap();
        let newpool = Pool::new("10.87.9.0/24".parse().unwrap());
        let moved = s.allocate(&newpool, &req("a"), 2).unwrap();
        assert!(moved.fresh);
        assert!(newpool.contains(moved.lease.ip));
        assert_ne!(moved.lease.ip, old.lease.ip);
        assert_eq!(s.list().unwrap().len(), 1);
    }
}
