//! The local API's request handler.
//!
//! [`Service::handle`] turns one [`Request`] into one [`Response`]. It owns
//! no sockets, so every request path is unit-tested directly; the socket
//! server in [`crate::api`] only moves lines in and out.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use flatnet_wire::{
    api::{AllocateRequest, API_VERSION},
    ApiError, AttachmentKey, ErrorKind, HostStatus, Lease, LighthouseStatus, Reply, Request,
    Response,
};
use tracing::{info, warn};

use crate::{
    config::Config,
    dataplane::Backend,
    ipam::{IpamError, LeaseStore, Pool},
    ports, unix_now as now,
};

/// Host networking that follows the leases: forwarding, masquerade,
/// published ports and internal networks. Applied before an allocation is
/// answered, after releases, and periodically to repair what someone else
/// flushed.
pub trait HostSetup: Send + Sync {
    /// Make the host match `leases`. Without `force` an implementation may
    /// skip work when nothing changed since its last successful apply.
    fn apply(&self, config: &Config, leases: &[Lease], force: bool) -> Result<(), String>;
}

/// A [`HostSetup`] that does nothing (unit tests, or hosts whose firewall
/// other tools own: `flatnetd --no-host-setup`).
pub struct NoHostSetup;

impl HostSetup for NoHostSetup {
    fn apply(&self, _: &Config, _: &[Lease], _: bool) -> Result<(), String> {
        Ok(())
    }
}

pub struct Service {
    config: Config,
    pool: Pool,
    store: LeaseStore,
    host: Box<dyn HostSetup>,
    /// Serialises "change leases, then apply the host table from the
    /// list", so the last table applied always matches the newest list,
    /// and port-clash checks cannot race.
    host_lock: Mutex<()>,
    public_key: OnceLock<String>,
    overlay: OnceLock<Arc<dyn Backend>>,
    lighthouse: OnceLock<LighthouseProbe>,
    punch: OnceLock<PunchHook>,
    notes: OnceLock<PathNotes>,
    netcheck: OnceLock<NetcheckHook>,
    dns: OnceLock<Arc<crate::dns::Dns>>,
}

/// Asks the Lighthouse client to punch toward a node now (`flatnetctl ping`).
pub type PunchHook = Arc<dyn Fn(u32) + Send + Sync>;

/// Runs `flatnetctl netcheck` (needs the Lighthouse client and data plane).
pub type NetcheckHook = Arc<dyn Fn() -> flatnet_wire::NetcheckReport + Send + Sync>;

/// Why each Lighthouse peer that is not direct is not, by node id.
pub type PathNotes = Arc<dyn Fn() -> Vec<(u32, String)> + Send + Sync>;

/// Reports the Lighthouse session for status.
pub type LighthouseProbe = Arc<dyn Fn() -> LighthouseStatus + Send + Sync>;

const MAX_ID: usize = 256;

/// Validate a name coming from a CNI runtime before it reaches the store.
fn check_field(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!(
                "{what} {v:?} is empty, longer than {max} bytes, or has '/' or control characters"
            ),
        ));
    }
    Ok(())
}

fn check_key(k: &AttachmentKey) -> Result<(), ApiError> {
    check_field("network", &k.network, MAX_ID)?;
    check_field("container id", &k.container_id, MAX_ID)?;
    check_field("ifname", &k.ifname, 15)
}

impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::Exhausted(_) => ApiError::new(ErrorKind::Exhausted, e.to_string()),
            IpamError::Db(_) | IpamError::Corrupt(_) => {
                ApiError::new(ErrorKind::Internal, e.to_string())
            }
            IpamError::OutOfPool { .. } | IpamError::InUse { .. } | IpamError::Held { .. } => {
                ApiError::new(ErrorKind::InvalidRequest, e.to_string())
            }
        }
    }
}

impl Service {
    pub fn new(config: Config, store: LeaseStore, host: Box<dyn HostSetup>) -> Self {
        Self {
            pool: Pool::new(config.subnet),
            config,
            store,
            host,
            host_lock: Mutex::new(()),
            public_key: OnceLock::new(),
            overlay: OnceLock::new(),
            lighthouse: OnceLock::new(),
            punch: OnceLock::new(),
            notes: OnceLock::new(),
            netcheck: OnceLock::new(),
            dns: OnceLock::new(),
        }
    }

    /// Report this node's WireGuard public key (base64) in status.
    pub fn set_public_key(&self, key: String) {
        let _ = self.public_key.set(key);
    }

    /// Attach the running data plane; its peers show up in status.
    pub fn set_overlay(&self, overlay: Arc<dyn Backend>) {
        let _ = self.overlay.set(overlay);
    }

    /// Attach the Lighthouse client; its state shows up in status.
    pub fn set_lighthouse(&self, probe: LighthouseProbe) {
        let _ = self.lighthouse.set(probe);
    }

    /// Attach the Lighthouse client's "punch now" (probes toward relayed peers).
    pub fn set_punch(&self, hook: PunchHook) {
        let _ = self.punch.set(hook);
    }

    /// Attach netcheck (nodes joined to a Lighthouse).
    pub fn set_netcheck(&self, hook: NetcheckHook) {
        let _ = self.netcheck.set(hook);
    }

    /// Attach the Lighthouse client's explanations of relayed paths.
    pub fn set_path_notes(&self, notes: PathNotes) {
        let _ = self.notes.set(notes);
    }

    /// Attach Flatnet DNS: this host's names follow its leases from now on.
    pub fn set_dns(&self, dns: Arc<crate::dns::Dns>) -> Result<(), ApiError> {
        let _ = self.dns.set(dns);
        let _g = self.lock_host()?;
        let leases = self.store.list()?;
        if let Some(d) = self.dns.get() {
            d.set_local(&leases, now());
        }
        Ok(())
    }

    /// Flatnet DNS, once attached.
    pub fn dns(&self) -> Option<Arc<crate::dns::Dns>> {
        self.dns.get().cloned()
    }

    pub fn overlay(&self) -> Option<&Arc<dyn Backend>> {
        self.overlay.get()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &LeaseStore {
        &self.store
    }

    fn lock_host(&self) -> Result<MutexGuard<'_, ()>, ApiError> {
        self.host_lock
            .lock()
            .map_err(|_| ApiError::new(ErrorKind::Internal, "host setup lock poisoned"))
    }

    /// Make DNS and the host table follow `leases`, the store's current
    /// list (read by the caller under the host lock).
    fn apply_host_locked(&self, leases: &[Lease], force: bool) -> Result<(), ApiError> {
        if let Some(d) = self.dns.get() {
            d.set_local(leases, now());
        }
        self.host.apply(&self.config, leases, force).map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("host network setup (forwarding, nftables table ip flatnet): {e}"),
            )
        })
    }

    /// Apply the host networking for the current leases. `force` re-applies
    /// even when nothing changed (start-up, periodic repair).
    pub fn sync_host(&self, force: bool) -> Result<(), ApiError> {
        let _g = self.lock_host()?;
        self.apply_host_locked(&self.store.list()?, force)
    }

    /// Lease reconciliation: release each of `stale` that is still exactly
    /// what the store holds (never one the runtime renewed since), then
    /// re-apply the host table once, forced (the periodic repair). Returns
    /// how many were released; a store error is returned after the table
    /// has been applied for the rest.
    pub fn reclaim(&self, stale: &[&Lease]) -> Result<usize, ApiError> {
        let _g = self.lock_host()?;
        let mut released = 0;
        let mut failed = None;
        for l in stale {
            match self.store.release_if_unchanged(l) {
                Ok(true) => {
                    released += 1;
                    info!(
                        ip = %l.ip,
                        container = %l.key.container_id,
                        network = %l.key.network,
                        "reclaimed the lease of a container that is gone (its host veth vanished)"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.apply_host_locked(&self.store.list()?, true)?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(released),
        }
    }

    /// The watchdog's check: the host lock is free within the call and the
    /// lease store answers.
    pub fn health(&self) -> Result<(), ApiError> {
        let _g = self.lock_host()?;
        self.store.list().map(|_| ()).map_err(ApiError::from)
    }

    pub fn handle(&self, req: Request) -> Response {
        let op = req.op();
        let r = self.dispatch(req);
        let result = r.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok");
        crate::metrics::counters().api_request(op, result);
        r.into()
    }

    fn dispatch(&self, req: Request) -> Result<Reply, ApiError> {
        match req {
            Request::Ping => Ok(Reply::Pong {
                api_version: API_VERSION,
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::Allocate(r) => self.allocate(r),
            Request::Release(key) => {
                check_key(&key)?;
                let _g = self.lock_host()?;
                let lease = self.store.release(&key)?;
                if let Some(l) = &lease {
                    info!(ip = %l.ip, container = %key.container_id, ifname = %key.ifname, "released");
                    self.after_release()?;
                }
                Ok(Reply::Released { lease })
            }
            Request::Get(key) => {
                check_key(&key)?;
                Ok(Reply::Lease {
                    lease: self.store.get(&key)?,
                    network: self.config.network_info(),
                })
            }
            Request::Gc { network, valid } => {
                check_field("network", &network, MAX_ID)?;
                let _g = self.lock_host()?;
                // Leases younger than the grace period stay: their ADD may
                // still be running, unknown to the runtime's list.
                let keep_since = now().saturating_sub(self.config.lease_grace_secs);
                let released = self.store.gc(&network, &valid, keep_since)?;
                for l in &released {
                    info!(ip = %l.ip, container = %l.key.container_id, "collected stale lease");
                }
                if !released.is_empty() {
                    self.after_release()?;
                }
                Ok(Reply::Collected { released })
            }
            Request::Status => Ok(Reply::Status(self.status()?)),
            Request::Probe { target, seq } => self.probe(&target, seq).map(Reply::Probe),
            Request::Netcheck => match self.netcheck.get() {
                Some(run) => Ok(Reply::Netcheck(run())),
                None => Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "netcheck measures the path to the Lighthouse, and this host has not \
                     joined one (`flatnetd join <token>`)",
                )),
            },
            Request::Names => Ok(Reply::Names {
                domain: self.config.dns.domain.clone(),
                enabled: self.dns.get().is_some(),
                names: self
                    .dns
                    .get()
                    .map(|d| d.list())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(node, name, ip, owner)| flatnet_wire::api::NameRecord {
                        name,
                        node,
                        ip,
                        owner,
                    })
                    .collect(),
            }),
        }
    }

    /// The lease is gone; the host table must follow. The release itself
    /// stands (the container is gone either way), so a failure here is
    /// reported to the caller and repaired by the next periodic apply.
    fn after_release(&self) -> Result<(), ApiError> {
        self.apply_host_locked(&self.store.list()?, false)
            .inspect_err(|e| warn!("{}; the periodic repair retries it", e.message))
    }

    fn allocate(&self, r: AllocateRequest) -> Result<Reply, ApiError> {
        check_key(&r.key)?;
        if let Some(n) = &r.container_name {
            check_field("container name", n, MAX_ID)?;
        }
        let _g = self.lock_host()?;
        let before = self.store.get(&r.key)?;
        let a = self.store.allocate(&self.pool, &r, now())?;
        let leases = self.store.list()?;
        let checked = ports::check_free(&leases, &a.lease)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::vethname::check_unique(&leases, &a.lease, crate::vethname::host_ifname)
            })
            .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e))
            .and_then(|()| self.apply_host_locked(&leases, false));
        if let Err(e) = checked {
            // Undo: a fresh lease is dropped, a renewed one gets its old
            // record back, so a refused request changes nothing.
            let undo = match &before {
                None => self.store.release(&r.key).map(|_| ()),
                Some(old) => self.store.restore(old),
            };
            if let Err(u) = undo {
                warn!(
                    "undoing the refused allocation of {}: {u}",
                    r.key.container_id
                );
            }
            if e.kind != ErrorKind::InvalidRequest {
                warn!("{}", e.message);
            }
            return Err(e);
        }
        if a.fresh {
            info!(ip = %a.lease.ip, container = %r.key.container_id, ifname = %r.key.ifname, "leased");
        }
        Ok(Reply::Allocated {
            lease: a.lease,
            network: self.config.network_info(),
        })
    }

    /// The data plane's peers, each relayed one with why it is.
    fn peers_with_notes(&self) -> Vec<flatnet_wire::PeerStatus> {
        let mut peers = self.overlay.get().map(|o| o.peers()).unwrap_or_default();
        if let Some(notes) = self.notes.get() {
            let notes = notes();
            for p in &mut peers {
                p.path_note = p
                    .node_id
                    .and_then(|id| notes.iter().find(|(n, _)| *n == id).map(|(_, t)| t.clone()));
            }
        }
        peers
    }

    /// One ICMP echo through the tunnel (`flatnetctl ping`); see [`crate::ping`].
    fn probe(&self, target: &str, seq: u16) -> Result<flatnet_wire::ProbeResult, ApiError> {
        if target.len() > 255 || target.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "the ping target is longer than 255 bytes or has control characters",
            ));
        }
        let peers = self.overlay.get().map(|o| o.peers()).unwrap_or_default();
        let names = self.dns.get().map(|d| d.list()).unwrap_or_default();
        let ctx = crate::ping::Context {
            cidr: self.config.cidr,
            subnet: self.config.subnet,
            peers: &peers,
            domain: &self.config.dns.domain,
            names: &names,
        };
        let t = crate::ping::resolve(&ctx, target)
            .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e))?;
        let find = |peers: &[flatnet_wire::PeerStatus]| {
            t.peer
                .as_ref()
                .and_then(|n| peers.iter().find(|p| &p.name == n).cloned())
        };
        if let Some(p) = find(&peers) {
            if let (Some(id), Some("relay" | "connecting")) = (p.node_id, p.path.as_deref()) {
                if let Some(punch) = self.punch.get() {
                    punch(id);
                }
            }
        }
        let id = (std::process::id() & 0xffff) as u16;
        let rtt = crate::ping::icmp::echo(
            self.config.gateway(),
            t.ip,
            id,
            seq,
            std::time::Duration::from_secs(1),
        )
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("sending an ICMP echo to {}: {e}", t.ip),
            )
        })?;
        // The path as it is now, when the reply came.
        let now = self.overlay.get().map(|o| o.peers()).unwrap_or_default();
        let (path, endpoint) = match find(&now) {
            Some(p) => {
                let path = p.path.clone().unwrap_or_else(|| "direct".into());
                let ep = (path == "direct").then(|| p.endpoint.clone());
                (path, ep)
            }
            None => ("local".to_string(), None),
        };
        Ok(flatnet_wire::ProbeResult {
            target: target.to_string(),
            ip: t.ip,
            peer: t.peer,
            seq,
            rtt_us: rtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            path,
            endpoint,
        })
    }

    pub fn status(&self) -> Result<HostStatus, ApiError> {
        Ok(HostStatus {
            node: self.config.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            network: self.config.network_info(),
            leases: self.store.list()?,
            public_key: self.public_key.get().cloned(),
            peers: self.peers_with_notes(),
            lighthouse: self.lighthouse.get().map(|f| f()),
            forward_from: self.config.forward_from.clone(),
        })
    }
}

/// Shared handle used by the servers.
pub type SharedService = Arc<Service>;

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::open(&dir.path().join("ipam.redb")).unwrap();
        let cfg = Config::parse("node_name = \"t\"").unwrap();
        (dir, Service::new(cfg, store, Box::new(NoHostSetup)))
    }

    fn key(id: &str) -> AttachmentKey {
        AttachmentKey {
            network: "flatnet".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn alloc(id: &str) -> Request {
        Request::Allocate(AllocateRequest::new(key(id)))
    }

    #[test]
    fn allocate_get_release() {
        let (_d, s) = service();
        let Response::Ok(Reply::Allocated { lease, network }) = s.handle(alloc("a")) else {
            panic!("allocate failed")
        };
        assert!(network.subnet.contains(&lease.ip));
        let Response::Ok(Reply::Lease { lease: got, .. }) = s.handle(Request::Get(key("a"))) else {
            panic!("get failed")
        };
        assert_eq!(got, Some(lease.clone()));
        assert_eq!(
            s.handle(Request::Release(key("a"))),
            Response::Ok(Reply::Released { lease: Some(lease) })
        );
    }

    #[test]
    fn hostile_fields_rejected_without_state_change() {
        let (_d, s) = service();
        for bad in ["", "../../etc", "a\nb", &"x".repeat(300)] {
            let r = s.handle(alloc(bad));
            assert!(
                matches!(&r, Response::Error(e) if e.kind == ErrorKind::InvalidRequest),
                "{bad:?} -> {r:?}"
            );
        }
        let mut long_if = key("a");
        long_if.ifname = "sixteen-chars-xx".into();
        assert!(matches!(
            s.handle(Request::Get(long_if)),
            Response::Error(_)
        ));
        assert!(s.store().list().unwrap().is_empty());
    }

    struct FailingHost;
    impl HostSetup for FailingHost {
        fn apply(&self, _: &Config, _: &[Lease], _: bool) -> Result<(), String> {
            Err("nft missing".into())
        }
    }

    fn publishing(id: &str, host_port: u16) -> Request {
        Request::Allocate(AllocateRequest {
            ports: vec![flatnet_wire::PortMapping::simple(
                80,
                Some(host_port),
                "tcp",
            )],
            publish: true,
            ..AllocateRequest::new(key(id))
        })
    }

    #[test]
    fn a_host_port_clash_is_refused_and_stores_nothing() {
        let (_d, s) = service();
        assert!(matches!(s.handle(publishing("a", 8080)), Response::Ok(_)));
        let r = s.handle(publishing("b", 8080));
        let Response::Error(e) = r else {
            panic!("clash accepted: {r:?}")
        };
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(
            e.message.contains("8080/tcp is already published"),
            "{}",
            e.message
        );
        assert_eq!(s.store().list().unwrap().len(), 1);
        // A repeated ADD of the owner is not a clash, and a refused change
        // of an existing lease keeps its old record.
        assert!(matches!(s.handle(publishing("a", 8080)), Response::Ok(_)));
        assert!(matches!(s.handle(publishing("b", 9090)), Response::Ok(_)));
        let before = s.store().get(&key("b")).unwrap();
        assert!(matches!(
            s.handle(publishing("b", 8080)),
            Response::Error(_)
        ));
        assert_eq!(s.store().get(&key("b")).unwrap(), before);
    }

    #[test]
    fn host_setup_failure_is_unavailable_and_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::open(&dir.path().join("ipam.redb")).unwrap();
        let cfg = Config::parse("node_name = \"t\"").unwrap();
        let s = Service::new(cfg, store, Box::new(FailingHost));
        assert!(
            matches!(s.handle(alloc("a")), Response::Error(e) if e.kind == ErrorKind::Unavailable)
        );
        assert!(s.store().list().unwrap().is_empty());
    }
}
