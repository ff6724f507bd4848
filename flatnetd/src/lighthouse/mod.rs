//! The node side of the Lighthouse: join, the long-lived session over the
//! data plane's own UDP socket, peers learnt from the registry, hole
//! punching and the relay fallback.
//!
//! - [`punch`]: the per-peer path state machine (sans I/O);
//! - [`reconnect`]: overlapping attempts to reach the Lighthouse again;
//! - [`relay`]: fragmenting relayed datagrams (sans I/O);
//! - [`seat`]: one Lighthouse's session state, and which one reaches a peer;
//! - `session`: one Lighthouse's session loop;
//! - [`socket`]: quinn over the shared WireGuard socket;
//! - [`state`]: what is persisted in `<state_dir>/lighthouse.json`;
//! - this module: the tokio tasks that tie them to the data plane.
//!
//! See `docs/lighthouse.md` ("The node side").

pub mod members;
pub mod probe_limit;
pub mod punch;
pub mod reconnect;
pub mod relay;
pub mod seat;
mod session;
pub mod socket;
pub mod state;
pub mod transport;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard, Weak},
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    client::{authenticate, JoinError},
    token::Token,
};
use flatnet_wire::{
    lighthouse::{lighthouse_id, relay_decode, LighthousePin, NodeMsg, PeerInfo, SyncPoint},
    LighthouseStatus,
};
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use crate::{
    config::{decode_key, PeerConfig},
    dataplane::{keys::Identity, userspace::Userspace, Backend, RelaySink},
};
use punch::{Action, Punch, Timing};
use seat::Seat;
use state::LhState;
use transport::TcpFallback;

/// How often the punching state machine runs.
const TICK: Duration = Duration::from_millis(100);
/// How often we ping the Lighthouse (learns our observed endpoint).
const PING_EVERY: Duration = Duration::from_secs(5);
/// The peer list is written to `lighthouse.json` at most this often: with
/// many nodes it is megabytes, and updates come in rounds every few tens
/// of milliseconds.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How often local addresses are re-read and reported when changed (a
/// renumbered host is found again by its peers within this).
const LOCAL_ADDRS_EVERY: Duration = Duration::from_secs(2);
/// The longest wait between starting attempts to reach the Lighthouse
/// (they overlap: [`reconnect`]); relayed peers depend on it, so one back
/// from an outage is found again within 3 s.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Joining (QUIC + TLS + key proof) must finish within this.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LhError {
    #[error("invalid join token: {0}")]
    Token(String),
    #[error("cannot resolve Lighthouse address {0:?}: {1}")]
    Resolve(String, String),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("no answer from the Lighthouse at {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(
        "the Lighthouse allocated {subnet}, which is not a subnet of its Flatnet {cidr}; \
         refusing it (check the Lighthouse's --cidr)"
    )]
    BadSubnet { subnet: Ipv4Net, cidr: Ipv4Net },
}

/// Resolve `host:port` (IPv4 preferred: the data plane's socket is IPv4),
/// on tokio's blocking pool: a slow resolver never stalls the runtime.
pub async fn resolve(addr: &str) -> Result<SocketAddr, LhError> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LhError::Resolve(addr.into(), flatnet_wire::plain_error(&e)))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| LhError::Resolve(addr.into(), "no addresses".into()))
}

/// This host's IPv4 addresses outside the Flatnet and loopback, with the
/// WireGuard port: what same-LAN peers can use.
pub fn local_addrs(port: u16, cidr: Ipv4Net) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for (_, ip) in crate::ifaddrs::outside(cidr) {
        let sa = SocketAddr::from((ip, port));
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    out.truncate(flatnet_wire::lighthouse::MAX_LOCAL_ADDRS);
    out
}

/// Join with a token on a temporary QUIC endpoint (own ephemeral socket):
/// used by `flatnetd join` and by a first start with `[lighthouse] token`.
/// Nothing is stored here; the caller saves the returned state.
pub async fn join_with_token(
    token: &str,
    identity: &Identity,
    name: &str,
    local: Vec<SocketAddr>,
) -> Result<LhState, LhError> {
    let t = Token::decode(token.trim()).map_err(|e| LhError::Token(e.to_string()))?;
    let ep =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(LhError::Endpoint)?;
    // Any Lighthouse the token lists (the first ones first), over QUIC, or
    // TCP on the Lighthouse's port 443 where UDP is blocked.
    let all = t.lighthouses();
    let (at, link) = transport::connect_first(&ep, &all)
        .await
        .map_err(|e| LhError::Join(JoinError::Connect(e)))?;
    let addr = link.remote_address();
    let j = tokio::time::timeout(
        JOIN_TIMEOUT,
        authenticate(
            link,
            &identity.secret,
            name,
            Some(token.trim().to_string()),
            local,
            None,
        ),
    )
    .await
    .map_err(|_| LhError::Timeout(addr, JOIN_TIMEOUT))??;
    if !j.cidr.contains(&j.subnet) || j.subnet.prefix_len() < j.cidr.prefix_len() {
        return Err(LhError::BadSubnet {
            subnet: j.subnet,
            cidr: j.cidr,
        });
    }
    let mut st = LhState {
        address: t.lighthouse.clone(),
        fingerprint: t.fingerprint.clone(),
        node_id: j.node_id,
        subnet: j.subnet,
        cidr: j.cidr,
        peers: j.peers.clone(),
        sync: None,
        also: t
            .also
            .iter()
            .map(|o| LighthousePin {
                address: o.lighthouse.clone(),
                fingerprint: o.fingerprint.clone(),
            })
            .collect(),
        syncs: Default::default(),
    };
    info!(lighthouse = %all[at].0, "joined through this Lighthouse");
    // The peer list goes as far as the Lighthouse that answered says.
    st.set_sync(&lighthouse_id(&all[at].1), j.sync);
    j.conn.close(0, b"joined");
    // Long enough for the close to go out; attempts at Lighthouses that
    // did not answer are not waited for.
    let _ = tokio::time::timeout(Duration::from_millis(300), ep.wait_idle()).await;
    Ok(st)
}

/// Exponential backoff with jitter: 1 s doubling to 30 s, ±20 %.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The delay before the next attempt; `jitter` in [0, 1).
    pub fn next(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

fn jitter() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(n % 1000) / 1000.0
}

/// Static peers plus the Lighthouse's, merged into one peer list.
#[derive(Debug, Default)]
pub struct PeerBook {
    pub static_peers: Vec<PeerConfig>,
    pub lighthouse: BTreeMap<u32, PeerInfo>,
    /// How far `lighthouse` goes (delta sync), per Lighthouse id, kept
    /// under the same lock so a saved list and its points always match.
    pub syncs: BTreeMap<String, SyncPoint>,
}

impl PeerBook {
    /// Static peers first; a Lighthouse peer whose key, name or subnet
    /// clashes with a static one (or with our own subnet) is left out.
    /// Remote members come last ([`members::attach`]): a peer of their
    /// own on their hub (`my_id`), an address behind the hub elsewhere.
    pub fn merged(
        &self,
        my_id: Option<u32>,
        my_subnet: Ipv4Net,
        cidr: Ipv4Net,
        my_public_ip: Option<IpAddr>,
    ) -> Vec<PeerConfig> {
        let mut out = self.static_peers.clone();
        for p in self.lighthouse.values().filter(|p| p.member.is_none()) {
            let Ok(key) = decode_key(&p.public_key) else {
                warn!(peer = %p.name, "Lighthouse peer with a bad key; ignored");
                continue;
            };
            if !cidr.contains(&p.subnet) {
                warn!(
                    peer = %p.name, subnet = %p.subnet, flatnet = %cidr,
                    "Lighthouse peer with a subnet outside the Flatnet; ignored"
                );
                continue;
            }
            let clash = my_subnet.contains(&p.subnet)
                || p.subnet.contains(&my_subnet)
                || out.iter().any(|q| {
                    q.public_key == key
                        || q.subnet.contains(&p.subnet)
                        || p.subnet.contains(&q.subnet)
                });
            if clash {
                debug!(peer = %p.name, "Lighthouse peer clashes with a static peer; ignored");
                continue;
            }
            let endpoint = punch::candidates(my_public_ip, p, cidr)
                .first()
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            out.push(PeerConfig {
                name: p.name.clone(),
                public_key: key,
                endpoint,
                subnet: p.subnet,
                node_id: Some(p.node_id),
                member: false,
                also: vec![],
            });
        }
        members::attach(
            self.lighthouse.values(),
            my_id,
            crate::policy::members_range(cidr, my_subnet.prefix_len()),
            crate::unix_now(),
            &mut out,
        );
        out
    }
}

/// The relay path: datagrams for relayed peers leave as datagrams on a
/// Lighthouse connection the peer is connected to as well ([`seat::pick`]).
pub struct RelayLink {
    seats: Arc<Mutex<Vec<Arc<Seat>>>>,
    via: Arc<Mutex<HashMap<u32, Vec<String>>>>,
}

impl RelaySink for RelayLink {
    fn send(&self, node_id: u32, d: &[u8]) {
        let seat = {
            let seats = lock(&self.seats);
            let via = lock(&self.via);
            seat::pick(&seats, via.get(&node_id).map_or(&[], |v| v.as_slice()))
        };
        if let Some(s) = seat {
            s.relay(node_id, d);
        }
    }
}

/// The running Lighthouse client: one session per Lighthouse ([`Seat`]),
/// one peer list, one punching state machine.
pub struct LhClient {
    us: Arc<Userspace>,
    identity: Identity,
    name: String,
    state_dir: PathBuf,
    port: u16,
    keepalive: u16,
    subnet: Ipv4Net,
    cidr: Ipv4Net,
    st: Mutex<LhState>,
    book: Mutex<PeerBook>,
    punch: Mutex<Punch>,
    seats: Arc<Mutex<Vec<Arc<Seat>>>>,
    /// Which Lighthouses each peer is connected to (its `via`).
    via: Arc<Mutex<HashMap<u32, Vec<String>>>>,
    reassembly: Mutex<relay::Reassembler>,
    /// The peer list or session data changed since the last save.
    unsaved: std::sync::atomic::AtomicBool,
    /// A Lighthouse said this node is no longer a member.
    removed: std::sync::atomic::AtomicBool,
    /// This host's NAT as the last netcheck found it (`symmetric`, ...).
    nat: Mutex<Option<String>>,
    /// The QUIC endpoint (the data plane's socket), once running.
    endpoint: std::sync::OnceLock<quinn::Endpoint>,
    /// To start sessions with Lighthouses added later.
    this: Weak<LhClient>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything [`LhClient::new`] needs.
pub struct ClientParams {
    pub us: Arc<Userspace>,
    pub identity: Identity,
    pub name: String,
    pub state_dir: PathBuf,
    pub port: u16,
    pub keepalive: u16,
    pub state: LhState,
    pub static_peers: Vec<PeerConfig>,
    /// `[lighthouse] tcp`: `off`, `host:port`, or unset (the
    /// Lighthouse's host, port 443). For the first Lighthouse; the others
    /// use their host's port 443.
    pub tcp: Option<String>,
}

impl LhClient {
    /// Set up the client and give the data plane the last known peers
    /// (so traffic flows before, or without, the Lighthouse).
    pub fn new(p: ClientParams) -> Arc<Self> {
        let pins = p.state.lighthouses();
        let seats: Vec<Arc<Seat>> = pins
            .iter()
            .enumerate()
            .map(|(i, pin)| {
                let cfg = if i == 0 { p.tcp.as_deref() } else { None };
                Seat::new(pin, TcpFallback::new(cfg, &pin.address))
            })
            .collect();
        let mut book = PeerBook {
            static_peers: p.static_peers,
            ..Default::default()
        };
        for s in &seats {
            if let Some(sp) = p.state.sync_of(&s.id) {
                book.syncs.insert(s.id.clone(), sp);
            }
        }
        let now = Instant::now();
        let mut punch = Punch::new(Timing::default(), p.state.cidr);
        let mut via = HashMap::new();
        for peer in &p.state.peers {
            book.lighthouse.insert(peer.node_id, peer.clone());
            via.insert(peer.node_id, peer.via.clone());
            punch.upsert(peer, now);
        }
        let seats = Arc::new(Mutex::new(seats));
        let via = Arc::new(Mutex::new(via));
        p.us.set_relay_sink(Arc::new(RelayLink {
            seats: seats.clone(),
            via: via.clone(),
        }));
        let c = Arc::new_cyclic(|this| LhClient {
            us: p.us,
            identity: p.identity,
            name: p.name,
            state_dir: p.state_dir,
            port: p.port,
            keepalive: p.keepalive,
            subnet: p.state.subnet,
            cidr: p.state.cidr,
            st: Mutex::new(p.state),
            book: Mutex::new(book),
            punch: Mutex::new(punch),
            seats,
            via,
            reassembly: Mutex::new(relay::Reassembler::default()),
            unsaved: false.into(),
            removed: false.into(),
            nat: Mutex::new(None),
            endpoint: std::sync::OnceLock::new(),
            this: this.clone(),
        });
        c.apply_peers();
        c
    }

    fn seats(&self) -> Vec<Arc<Seat>> {
        lock(&self.seats).clone()
    }

    /// For `flatnetctl status`: the first connected Lighthouse's session
    /// (or the first one's), and with several, each of them.
    pub fn status(&self) -> LighthouseStatus {
        let saved_id = lock(&self.st).node_id;
        let one = |s: &Seat| {
            let x = lock(&s.status).clone();
            LighthouseStatus {
                address: s.address.clone(),
                state: x.state.to_string(),
                node_id: x.node_id.or(Some(saved_id)),
                observed: x.observed.map(|o| o.to_string()),
                last_error: x.last_error,
                since_secs: x.since.elapsed().as_secs(),
                transport: x.transport.map(str::to_string),
                lighthouses: vec![],
            }
        };
        let seats = self.seats();
        let all: Vec<LighthouseStatus> = seats.iter().map(|s| one(s)).collect();
        let mut main = all
            .iter()
            .find(|s| s.state == "connected")
            .or(all.first())
            .cloned()
            .unwrap_or_else(|| LighthouseStatus {
                address: String::new(),
                state: "connecting".into(),
                node_id: Some(saved_id),
                observed: None,
                last_error: None,
                since_secs: 0,
                transport: None,
                lighthouses: vec![],
            });
        if all.len() > 1 {
            main.lighthouses = all;
        }
        main
    }

    /// Why each peer that is not direct is not, by node id (for status).
    /// A symmetric NAT found by netcheck is named first: it is the reason.
    pub fn path_notes(&self) -> Vec<(u32, String)> {
        let symmetric = lock(&self.nat).as_deref() == Some("symmetric");
        let mut notes = lock(&self.punch).notes(Instant::now());
        if symmetric {
            for (_, n) in &mut notes {
                if let Some(rest) = n.strip_prefix("relay: ") {
                    *n = format!("relay: symmetric NAT on this side (flatnetctl netcheck); {rest}");
                }
            }
        }
        notes
    }

    /// Remember what netcheck found this host's NAT to be.
    pub fn set_nat(&self, nat: &str) {
        *lock(&self.nat) = Some(nat.to_string());
    }

    /// Punch toward node `peer` now, if it is not direct (`flatnetctl ping`).
    pub fn punch_soon(&self, peer: u32) {
        lock(&self.punch).punch_soon(peer, Instant::now());
    }

    /// New static peers (SIGHUP).
    pub fn set_static_peers(&self, peers: Vec<PeerConfig>) {
        lock(&self.book).static_peers = peers;
        self.apply_peers();
    }

    fn my_public_ip(&self) -> Option<IpAddr> {
        let seats = self.seats();
        let connected = seats.iter().find(|s| s.connected()).or(seats.first());
        connected.and_then(|s| lock(&s.status).observed.map(|o| o.ip()))
    }

    /// What the members' policy is compiled from, but names
    /// ([`crate::policy::run`]).
    pub fn policy_inputs(&self) -> crate::policy::Inputs {
        let my_id = lock(&self.st).node_id;
        let book = lock(&self.book);
        members::policy_inputs(
            book.lighthouse.values(),
            (&self.name, self.subnet),
            crate::policy::members_range(self.cidr, self.subnet.prefix_len()),
            my_id,
        )
    }

    fn apply_peers(&self) {
        let my_id = Some(lock(&self.st).node_id);
        let merged = lock(&self.book).merged(my_id, self.subnet, self.cidr, self.my_public_ip());
        if let Err(e) = self.us.update_peers(&merged, self.keepalive) {
            warn!("updating peers: {e}");
        }
    }

    fn persist_peers(&self) {
        let (peers, syncs) = {
            let book = lock(&self.book);
            (
                book.lighthouse.values().cloned().collect(),
                book.syncs.clone(),
            )
        };
        let ids: Vec<String> = self.seats().iter().map(|s| s.id.clone()).collect();
        let mut st = lock(&self.st);
        st.peers = peers;
        st.syncs.retain(|id, _| ids.contains(id));
        for id in &ids {
            st.set_sync(id, syncs.get(id).copied());
        }
        if let Err(e) = state::save(&self.state_dir, &st) {
            warn!("saving Lighthouse state: {e}");
        }
    }

    /// Replace (`full`) or update the peers, from Lighthouse `seat`; the
    /// ticker saves them within [`PERSIST_EVERY`]. `sync`: how far that
    /// Lighthouse's changes go once this is applied (a full list without
    /// one clears it).
    fn on_peers(
        &self,
        seat: &str,
        mut upsert: Vec<PeerInfo>,
        remove: &[u32],
        full: bool,
        sync: Option<SyncPoint>,
    ) {
        let now = Instant::now();
        // Never peer with ourselves, whatever the Lighthouse says.
        let me = lock(&self.st).node_id;
        upsert.retain(|p| p.node_id != me);
        {
            let mut book = lock(&self.book);
            let mut punch = lock(&self.punch);
            let mut via = lock(&self.via);
            if full || sync.is_some() {
                match sync {
                    Some(p) => book.syncs.insert(seat.to_string(), p),
                    None => book.syncs.remove(seat),
                };
            }
            if full {
                book.lighthouse.clear();
                via.clear();
                let keep: Vec<u32> = upsert.iter().map(|p| p.node_id).collect();
                punch.retain(&keep);
            }
            for id in remove {
                book.lighthouse.remove(id);
                via.remove(id);
                punch.remove(*id);
            }
            for p in upsert {
                punch.upsert(&p, now);
                via.insert(p.node_id, p.via.clone());
                book.lighthouse.insert(p.node_id, p);
            }
        }
        if !remove.is_empty() {
            info!(removed = ?remove, "peers removed by the Lighthouse");
        }
        self.apply_peers();
        self.unsaved.store(true, Ordering::Relaxed);
    }

    /// Run the punching state machine every [`TICK`], forever.
    pub async fn ticker(self: Arc<Self>) {
        let mut iv = tokio::time::interval(TICK);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = Instant::now();
        loop {
            iv.tick().await;
            let now = Instant::now();
            if now.saturating_duration_since(saved) >= PERSIST_EVERY
                && self.unsaved.swap(false, Ordering::Relaxed)
            {
                // Writes and fsyncs a file: not on the runtime's threads.
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.persist_peers()).await;
                saved = now;
            }
            let samples = self.us.path_samples();
            let actions = {
                let mut p = lock(&self.punch);
                for s in &samples {
                    p.sample(s.node_id, s.direct_rx, s.endpoint, now);
                }
                p.tick(now)
            };
            for a in actions {
                match a {
                    Action::RequestPunch(peer) => {
                        crate::metrics::counters().punch_requests.inc();
                        // Through a Lighthouse the peer is connected to.
                        let via = lock(&self.via).get(&peer).cloned().unwrap_or_default();
                        if let Some(s) = seat::pick(&self.seats(), &via) {
                            s.send(NodeMsg::Punch { peer });
                        }
                    }
                    Action::Probe(peer, cands) => self.us.probe(peer, &cands),
                    Action::SetPath {
                        peer,
                        state,
                        relayed,
                    } => {
                        let c = crate::metrics::counters();
                        match state {
                            crate::dataplane::peer::PathState::Direct => c.path_to_direct.inc(),
                            crate::dataplane::peer::PathState::Relay => c.path_to_relay.inc(),
                            crate::dataplane::peer::PathState::Connecting => 0,
                        };
                        self.us.set_path(peer, state, relayed)
                    }
                }
            }
        }
    }

    /// Stay connected to every Lighthouse, until this node is removed.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let _ = self.endpoint.set(endpoint);
        let mut set = tokio::task::JoinSet::new();
        for s in self.seats() {
            set.spawn(self.clone().run_seat(s));
        }
        while set.join_next().await.is_some() {}
        // Seats added later run on their own; wait for removal.
        while !self.removed.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Follow the Lighthouses' own list of Lighthouses (a Welcome's): start
    /// sessions with new ones, end those with Lighthouses no longer in it.
    fn follow_lighthouses(&self, list: &[LighthousePin]) {
        if list.is_empty() {
            return;
        }
        let (added, retired) = {
            let mut seats = lock(&self.seats);
            let retired: Vec<Arc<Seat>> = seats
                .iter()
                .filter(|s| !list.iter().any(|p| p.fingerprint == s.fingerprint))
                .cloned()
                .collect();
            seats.retain(|s| list.iter().any(|p| p.fingerprint == s.fingerprint));
            let added: Vec<Arc<Seat>> = list
                .iter()
                .filter(|p| !seats.iter().any(|s| s.fingerprint == p.fingerprint))
                .map(|p| Seat::new(p, TcpFallback::new(None, &p.address)))
                .collect();
            seats.extend(added.iter().cloned());
            (added, retired)
        };
        if added.is_empty() && retired.is_empty() {
            return;
        }
        for s in &retired {
            info!(lighthouse = %s.address, "no longer one of the Flatnet's Lighthouses; leaving it");
            s.retired.store(true, Ordering::Relaxed);
            if let Some(l) = lock(&s.link).take() {
                l.close(0, b"retired");
            }
        }
        {
            let pins: Vec<LighthousePin> = self
                .seats()
                .iter()
                .map(|s| LighthousePin {
                    address: s.address.clone(),
                    fingerprint: s.fingerprint.clone(),
                })
                .collect();
            let mut st = lock(&self.st);
            if let Some(first) = pins.first() {
                if !pins.iter().any(|p| p.fingerprint == st.fingerprint) {
                    st.address = first.address.clone();
                    st.fingerprint = first.fingerprint.clone();
                    st.sync = None;
                }
            }
            let primary = st.fingerprint.clone();
            st.also = pins
                .into_iter()
                .filter(|p| p.fingerprint != primary)
                .collect();
        }
        self.unsaved.store(true, Ordering::Relaxed);
        if let (Some(me), Some(_)) = (self.this.upgrade(), self.endpoint.get()) {
            for s in added {
                info!(lighthouse = %s.address, "a new Lighthouse of the Flatnet; connecting");
                tokio::spawn(me.clone().run_seat(s));
            }
        }
    }

    /// Whether some Lighthouse session is up now.
    fn any_connected(&self) -> bool {
        self.seats().iter().any(|s| s.connected())
    }

    /// This node is no longer a member: stop every session.
    fn removed_now(&self, why: &str) {
        self.removed.store(true, Ordering::Relaxed);
        self.on_peers("", vec![], &[], true, None);
        let msg = format!(
            "this node was removed from the Flatnet ({why}); it no longer connects \
             to the Lighthouse. To rejoin, get a new token (`lighthouse token create` \
             on the Lighthouse) and run `flatnetd join <token>`, then restart flatnetd"
        );
        tracing::error!("{msg}");
        for s in self.seats() {
            s.set_state("removed", Some(msg.clone()));
            if let Some(l) = lock(&s.link).take() {
                l.close(0, b"removed");
            }
        }
    }

    fn relayed(&self, d: &[u8]) {
        let Some((src, payload)) = relay_decode(d) else {
            return;
        };
        let whole = lock(&self.reassembly).push(src, payload, Instant::now());
        if let Some(w) = whole {
            self.us.relay_in(src, &w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let seq: Vec<u64> = (0..7).map(|_| b.next(0.5).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        let lo = b.next(0.0);
        assert_eq!(lo, Duration::from_millis(800));
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.next(0.999).as_millis(), 1199);
    }

    fn info(id: u32, key: u8, subnet: &str) -> PeerInfo {
        PeerInfo {
            node_id: id,
            name: format!("n{id}"),
            public_key: crate::config::encode_key(&[key; 32]),
            subnet: subnet.parse().unwrap(),
            observed: Some("203.0.113.5:40000".parse().unwrap()),
            local_addrs: vec!["192.168.1.5:51820".parse().unwrap()],
            online: true,
            via: vec![],
            member: None,
        }
    }

    #[test]
    fn peer_book_merges_and_skips_clashes() {
        let mut book = PeerBook::default();
        book.static_peers.push(PeerConfig {
            name: "static".into(),
            public_key: [9; 32],
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            subnet: "10.87.9.0/24".parse().unwrap(),
            node_id: None,
            member: false,
            also: vec![],
        });
        book.lighthouse.insert(2, info(2, 2, "10.87.2.0/24"));
        book.lighthouse.insert(3, info(3, 9, "10.87.3.0/24")); // key of the static peer
        book.lighthouse.insert(4, info(4, 4, "10.87.9.0/24")); // its subnet
        book.lighthouse.insert(5, info(5, 5, "10.87.1.0/24")); // ours
        let mut bad = info(6, 6, "10.87.6.0/24");
        bad.public_key = "nope".into();
        book.lighthouse.insert(6, bad);
        // Outside the Flatnet: a LAN or the internet, never routed to a peer.
        book.lighthouse.insert(7, info(7, 7, "192.168.0.0/16"));
        book.lighthouse.insert(8, info(8, 8, "0.0.0.0/0"));
        let m = book.merged(
            Some(1),
            "10.87.1.0/24".parse().unwrap(),
            "10.87.0.0/16".parse().unwrap(),
            None,
        );
        let names: Vec<&str> = m.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["static", "n2"]);
        assert_eq!(m[1].node_id, Some(2));
        assert_eq!(m[1].endpoint.to_string(), "203.0.113.5:40000");
        // Behind the same NAT: start with its LAN address.
        let m = book.merged(
            Some(1),
            "10.87.1.0/24".parse().unwrap(),
            "10.87.0.0/16".parse().unwrap(),
            Some("203.0.113.5".parse().unwrap()),
        );
        assert_eq!(m[1].endpoint.to_string(), "192.168.1.5:51820");
    }

    #[test]
    fn bad_tokens_are_refused_before_any_network() {
        let id = Identity::generate().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(join_with_token("flatnet1_garbage", &id, "h1", vec![]))
            .unwrap_err();
        assert!(matches!(e, LhError::Token(_)), "{e}");
    }
}
