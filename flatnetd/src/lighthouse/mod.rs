//! The node side of the Lighthouse: join, the long-lived session over the
//! data plane's own UDP socket, peers learnt from the registry, hole
//! punching and the relay fallback.
//!
//! - [`punch`]: the per-peer path state machine (sans I/O);
//! - [`reconnect`]: overlapping attempts to reach the Lighthouse again;
//! - [`relay`]: fragmenting relayed datagrams (sans I/O);
//! - [`socket`]: quinn over the shared WireGuard socket;
//! - [`state`]: what is persisted in `<state_dir>/lighthouse.json`;
//! - this module: the tokio tasks that tie them to the data plane.
//!
//! See `docs/lighthouse.md` ("The node side").

pub mod punch;
pub mod reconnect;
pub mod relay;
pub mod socket;
pub mod state;
pub mod transport;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    client::{authenticate, JoinError, Joined},
    link::Link,
    server::{spawn_frame_reader, write_frame},
    token::Token,
};
use flatnet_wire::{
    lighthouse::{
        relay_decode, relay_encode, LhErrorCode, LighthouseMsg, NodeMsg, PeerInfo, SyncPoint,
    },
    LighthouseStatus,
};
use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    config::{decode_key, PeerConfig},
    dataplane::{keys::Identity, userspace::Userspace, Backend, RelaySink},
};
use punch::{Action, Punch, Timing};
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
    let addr = resolve(&t.lighthouse).await?;
    let ep =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(LhError::Endpoint)?;
    // QUIC, or TCP on the Lighthouse's port 443 where UDP is blocked.
    let tcp = TcpFallback::new(None, &t.lighthouse);
    let link = transport::connect_any(&ep, &t.lighthouse, &tcp, &t.fingerprint)
        .await
        .map_err(|e| LhError::Join(JoinError::Connect(e)))?;
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
    let st = LhState {
        address: t.lighthouse.clone(),
        fingerprint: t.fingerprint.clone(),
        node_id: j.node_id,
        subnet: j.subnet,
        cidr: j.cidr,
        peers: j.peers.clone(),
        sync: j.sync,
    };
    j.conn.close(0, b"joined");
    ep.wait_idle().await;
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
    /// How far `lighthouse` goes (delta sync), kept under the same lock so
    /// a saved list and its point always match.
    pub sync: Option<SyncPoint>,
}

impl PeerBook {
    /// Static peers first; a Lighthouse peer whose key, name or subnet
    /// clashes with a static one (or with our own subnet) is left out.
    pub fn merged(
        &self,
        my_subnet: Ipv4Net,
        cidr: Ipv4Net,
        my_public_ip: Option<IpAddr>,
    ) -> Vec<PeerConfig> {
        let mut out = self.static_peers.clone();
        for p in self.lighthouse.values() {
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
            });
        }
        out
    }
}

/// The relay path: datagrams for relayed peers leave as QUIC datagrams on
/// the current Lighthouse connection.
#[derive(Default)]
pub struct RelayLink {
    conn: Mutex<Option<Link>>,
    next_id: AtomicU16,
}

impl RelayLink {
    fn set(&self, c: Option<Link>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
}

impl RelaySink for RelayLink {
    fn send(&self, node_id: u32, d: &[u8]) {
        let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Some(max) = c.max_datagram_size() else {
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for piece in relay::split(d, max.saturating_sub(4), id) {
            if let Err(e) = c.send_datagram(relay_encode(node_id, &piece).into()) {
                debug!(node_id, "relay send: {e}");
            }
        }
    }
}

#[derive(Debug, Clone)]
struct StatusInner {
    state: &'static str,
    since: Instant,
    node_id: Option<u32>,
    observed: Option<SocketAddr>,
    last_error: Option<String>,
    /// `quic` or `tcp` while connected.
    transport: Option<&'static str>,
}

/// The running Lighthouse client.
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
    status: Mutex<StatusInner>,
    outbox: Mutex<Option<mpsc::UnboundedSender<NodeMsg>>>,
    relay: Arc<RelayLink>,
    reassembly: Mutex<relay::Reassembler>,
    /// The peer list or session data changed since the last save.
    unsaved: std::sync::atomic::AtomicBool,
    /// The Lighthouse said this node is no longer a member.
    removed: std::sync::atomic::AtomicBool,
    /// This host's NAT as the last netcheck found it (`symmetric`, ...).
    nat: Mutex<Option<String>>,
    /// Where to go over TCP when UDP to the Lighthouse fails.
    tcp: TcpFallback,
    /// A QUIC connection found while on TCP: the next session's.
    next: Mutex<Option<Link>>,
    /// The QUIC endpoint (the data plane's socket), once running.
    endpoint: std::sync::OnceLock<quinn::Endpoint>,
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
    /// Lighthouse's host, port 443).
    pub tcp: Option<String>,
}

impl LhClient {
    /// Set up the client and give the data plane the last known peers
    /// (so traffic flows before, or without, the Lighthouse).
    pub fn new(p: ClientParams) -> Arc<Self> {
        let relay = Arc::new(RelayLink::default());
        p.us.set_relay_sink(relay.clone());
        let mut book = PeerBook {
            static_peers: p.static_peers,
            sync: p.state.sync,
            ..Default::default()
        };
        let now = Instant::now();
        let mut punch = Punch::new(Timing::default(), p.state.cidr);
        for peer in &p.state.peers {
            book.lighthouse.insert(peer.node_id, peer.clone());
            punch.upsert(peer, now);
        }
        let tcp = TcpFallback::new(p.tcp.as_deref(), &p.state.address);
        let c = Arc::new(LhClient {
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
            status: Mutex::new(StatusInner {
                state: "connecting",
                since: now,
                node_id: None,
                observed: None,
                last_error: None,
                transport: None,
            }),
            outbox: Mutex::new(None),
            relay,
            reassembly: Mutex::new(relay::Reassembler::default()),
            unsaved: false.into(),
            removed: false.into(),
            nat: Mutex::new(None),
            tcp,
            next: Mutex::new(None),
            endpoint: std::sync::OnceLock::new(),
        });
        c.apply_peers();
        c
    }

    /// For `flatnetctl status`.
    pub fn status(&self) -> LighthouseStatus {
        let s = lock(&self.status).clone();
        // One guard at a time: a second `lock(&self.st)` in the same
        // expression would deadlock on the first one's temporary.
        let (address, saved_id) = {
            let st = lock(&self.st);
            (st.address.clone(), st.node_id)
        };
        LighthouseStatus {
            address,
            state: s.state.to_string(),
            node_id: s.node_id.or(Some(saved_id)),
            observed: s.observed.map(|o| o.to_string()),
            last_error: s.last_error,
            since_secs: s.since.elapsed().as_secs(),
            transport: s.transport.map(str::to_string),
        }
    }

    fn set_state(&self, state: &'static str, err: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.state = state;
            s.since = Instant::now();
        }
        if err.is_some() {
            s.last_error = err;
        }
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
        lock(&self.status).observed.map(|o| o.ip())
    }

    fn apply_peers(&self) {
        let merged = lock(&self.book).merged(self.subnet, self.cidr, self.my_public_ip());
        if let Err(e) = self.us.update_peers(&merged, self.keepalive) {
            warn!("updating peers: {e}");
        }
    }

    fn persist_peers(&self) {
        let (peers, sync) = {
            let book = lock(&self.book);
            (book.lighthouse.values().cloned().collect(), book.sync)
        };
        let mut st = lock(&self.st);
        st.peers = peers;
        st.sync = sync;
        if let Err(e) = state::save(&self.state_dir, &st) {
            warn!("saving Lighthouse state: {e}");
        }
    }

    /// Replace (`full`) or update the Lighthouse's peers; the ticker saves
    /// them within [`PERSIST_EVERY`]. `sync`: how far the list goes once
    /// this is applied (a full list without one clears it).
    fn on_peers(
        &self,
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
            if full || sync.is_some() {
                book.sync = sync;
            }
            if full {
                book.lighthouse.clear();
                let keep: Vec<u32> = upsert.iter().map(|p| p.node_id).collect();
                punch.retain(&keep);
            }
            for id in remove {
                book.lighthouse.remove(id);
                punch.remove(*id);
            }
            for p in upsert {
                punch.upsert(&p, now);
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
                    p.sample(s.node_id, s.direct_rx, now);
                }
                p.tick(now)
            };
            for a in actions {
                match a {
                    Action::RequestPunch(peer) => {
                        crate::metrics::counters().punch_requests.inc();
                        if let Some(tx) = lock(&self.outbox).as_ref() {
                            let _ = tx.send(NodeMsg::Punch { peer });
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

    /// Stay connected to the Lighthouse, forever: connect (overlapping
    /// attempts, [`reconnect::race`]), authenticate, serve the session,
    /// repeat.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let mut short_sessions = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut last_logged: Option<String> = None;
        let _ = self.endpoint.set(endpoint.clone());
        loop {
            let (address, fingerprint) = {
                let st = lock(&self.st);
                (st.address.clone(), st.fingerprint.clone())
            };
            let attempt = || {
                let (endpoint, address, fingerprint, tcp) = (
                    endpoint.clone(),
                    address.clone(),
                    fingerprint.clone(),
                    self.tcp.clone(),
                );
                async move { transport::connect_any(&endpoint, &address, &tcp, &fingerprint).await }
            };
            let upgraded = lock(&self.next).take();
            let conn = match upgraded {
                Some(c) => c,
                None => {
                    let cadence = Backoff::new(Duration::from_secs(1), RECONNECT_MAX);
                    reconnect::race(attempt, cadence, jitter, |err: String| {
                        if last_logged.as_deref() != Some(err.as_str()) {
                            warn!(lighthouse = %address, "cannot reach the Lighthouse: {err}; still trying");
                            last_logged = Some(err.clone());
                        }
                        self.set_state("reconnecting", Some(err));
                    })
                    .await
                }
            };
            let local = local_addrs(self.port, self.cidr);
            let began = Instant::now();
            let since = lock(&self.book).sync;
            let auth = authenticate(
                conn,
                &self.identity.secret,
                &self.name,
                None,
                local.clone(),
                since,
            );
            let err = match tokio::time::timeout(JOIN_TIMEOUT, auth).await {
                Ok(Ok(j)) => {
                    last_logged = None;
                    crate::metrics::counters().lh_sessions.inc();
                    let r = self.clone().session(j, local).await;
                    crate::metrics::counters().lh_session_ends.inc();
                    self.relay.set(None);
                    *lock(&self.outbox) = None;
                    r.err().unwrap_or_else(|| "connection closed".into())
                }
                Ok(Err(e)) => {
                    if let JoinError::Refused {
                        code: LhErrorCode::Removed | LhErrorCode::BadToken,
                        ..
                    } = &e
                    {
                        // Our key is unknown there: removed while we
                        // were away (we send no token once joined).
                        self.removed.store(true, Ordering::Relaxed);
                    }
                    e.to_string()
                }
                Err(_) => format!(
                    "the Lighthouse did not finish the join within {} s",
                    JOIN_TIMEOUT.as_secs()
                ),
            };
            if self.removed.load(Ordering::Relaxed) {
                self.on_peers(vec![], &[], true, None);
                let msg = format!(
                    "this node was removed from the Flatnet ({err}); it no longer connects \
                     to the Lighthouse. To rejoin, get a new token (`lighthouse token create` \
                     on the Lighthouse) and run `flatnetd join <token>`, then restart flatnetd"
                );
                tracing::error!(lighthouse = %address, "{msg}");
                self.set_state("removed", Some(msg));
                return;
            }
            if lock(&self.next).is_some() {
                // Moving from TCP to QUIC: at once.
                info!(lighthouse = %address, "{err}");
                continue;
            }
            warn!(lighthouse = %address, "Lighthouse session: {err}; reconnecting");
            self.set_state("reconnecting", Some(err));
            let wait = reconnect::after_session(began.elapsed(), &mut short_sessions, jitter());
            tokio::time::sleep(wait).await;
        }
    }

    async fn session(self: Arc<Self>, j: Joined, mut local: Vec<SocketAddr>) -> Result<(), String> {
        let Joined {
            conn,
            mut send,
            recv,
            node_id,
            subnet,
            cidr,
            observed,
            peers,
            removed,
            delta,
            sync,
        } = j;
        let sync_kind = if delta { "delta" } else { "full list" };
        let transport = conn.transport();
        info!(
            node_id, %subnet, %observed, peers = peers.len(), removed = removed.len(), transport,
            "connected to the Lighthouse ({sync_kind})"
        );
        if transport == "tcp" {
            warn!(
                "UDP to the Lighthouse is blocked on this network: its session and relayed \
                 traffic go over TCP; QUIC is tried again every {} s",
                transport::UPGRADE_EVERY.as_secs()
            );
        }
        if subnet != self.subnet || cidr != self.cidr {
            warn!(
                %subnet, current = %self.subnet,
                "the Lighthouse now allocates a different subnet; restart flatnetd to use it"
            );
        }
        {
            let mut st = lock(&self.st);
            st.node_id = node_id;
            st.subnet = subnet;
            st.cidr = cidr;
        }
        {
            let mut s = lock(&self.status);
            s.node_id = Some(node_id);
            s.observed = Some(observed);
            s.transport = Some(transport);
        }
        lock(&self.punch).set_my_public_ip(observed.ip());
        self.set_state("connected", None);
        self.relay.set(Some(conn.clone()));
        self.on_peers(peers, &removed, !delta, sync);
        let (tx, mut outbox) = mpsc::unbounded_channel();
        *lock(&self.outbox) = Some(tx);
        let (reader, mut frames) = spawn_frame_reader::<LighthouseMsg, _>(recv);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut addrs = tokio::time::interval(LOCAL_ADDRS_EVERY);
        addrs.tick().await;
        // Over TCP: try QUIC again in the background, and move to it.
        let quic_back = async {
            match (&conn, self.endpoint.get()) {
                (Link::Tcp(_), Some(ep)) => {
                    let (address, fp) = {
                        let st = lock(&self.st);
                        (st.address.clone(), st.fingerprint.clone())
                    };
                    transport::quic_again(ep, &address, &fp).await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(quic_back);
        let result = loop {
            tokio::select! {
                f = frames.recv() => match f {
                    Some(Ok(m)) => if let Err(e) = self.on_message(m) { break Err(e) },
                    Some(Err(e)) => break Err(e),
                    None => break Err("control stream closed".into()),
                },
                m = outbox.recv() => if let Some(m) = m {
                    if let Err(e) = write_frame(&mut send, &m).await { break Err(e) }
                },
                d = conn.read_datagram() => match d {
                    Ok(d) => self.relayed(&d),
                    Err(e) => break Err(e.to_string()),
                },
                _ = ping.tick() => {
                    if let Err(e) = write_frame(&mut send, &NodeMsg::Ping).await { break Err(e) }
                }
                l = &mut quic_back => {
                    *lock(&self.next) = Some(l);
                    break Err("UDP to the Lighthouse works again: moving the session from TCP to QUIC".into());
                }
                _ = addrs.tick() => {
                    let now = local_addrs(self.port, self.cidr);
                    if now != local {
                        local = now;
                        if let Err(e) = write_frame(&mut send, &NodeMsg::Update { local_addrs: local.clone() }).await {
                            break Err(e);
                        }
                    }
                }
            }
        };
        reader.abort();
        conn.close(0, b"bye");
        lock(&self.status).transport = None;
        result
    }

    fn on_message(&self, m: LighthouseMsg) -> Result<(), String> {
        match m {
            LighthouseMsg::Peers {
                upsert,
                remove,
                version,
            } => {
                // A round's last frame says how far the list now goes.
                let epoch = lock(&self.book).sync.map(|p| p.epoch);
                let sync = epoch
                    .zip(version)
                    .map(|(epoch, version)| SyncPoint { epoch, version });
                self.on_peers(upsert, &remove, false, sync)
            }
            LighthouseMsg::PunchNow { peer, endpoints } => {
                debug!(peer, ?endpoints, "punch now");
                lock(&self.punch).punch_now(peer, &endpoints, Instant::now());
            }
            LighthouseMsg::Pong { observed } => {
                let moved = lock(&self.status).observed.replace(observed) != Some(observed);
                if moved {
                    info!(%observed, "our public endpoint changed");
                    lock(&self.punch).set_my_public_ip(observed.ip());
                }
            }
            LighthouseMsg::Error { code, message } => {
                if code == LhErrorCode::Removed {
                    self.removed.store(true, Ordering::Relaxed);
                }
                return Err(format!("the Lighthouse said: {message}"));
            }
            other => debug!("unexpected message {other:?}"),
        }
        Ok(())
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
