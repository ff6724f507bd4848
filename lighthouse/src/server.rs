//! The Lighthouse's QUIC server: one connection per node, one control
//! stream per connection, relay over QUIC datagrams.
//!
//! All membership decisions are made by [`Registry`]; this module moves
//! frames, keeps the session table, persists changes and fans them out.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flatnet_wire::lighthouse::{
    self as proto, check_len, decode_body, encode_frame, relay_decode, relay_encode, LhErrorCode,
    LighthouseMsg, NodeMsg, PeerInfo,
};
use ipnet::Ipv4Net;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, warn};

use crate::{
    admission::{Slot, Unproven},
    backend::Backend,
    budget::Bucket,
    cert::{server_tls, CertError, Identity},
    etcd::{EtcdConfig, EtcdStore, Meta},
    fanout::{
        encode_all, outbox, peers_messages, stamp, Outbox, OutboxRx, Pending, PEERS_PER_FRAME,
    },
    link::{ControlRead, ControlWrite, Link},
    presence::RECONNECT_GRACE,
    proof::{parse_key, Challenge},
    registry::{Change, Registry},
    relay_queue::RelayQueue,
    store::{Store, StoreError},
};

/// How long a node has to say Hello and prove its key.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub use crate::admission::{MAX_UNPROVEN, MAX_UNPROVEN_PER_IP};
/// With this many unproven connections, new clients must first prove their
/// address with a QUIC Retry (one more round trip), which spoofed sources
/// cannot.
const RETRY_ABOVE: usize = 16;
/// QUIC's own buffer of datagrams to send, per connection: small, so that
/// relayed traffic queues in the fair [`RelayQueue`] instead.
const RELAY_SEND_BUFFER: usize = 64 << 10;
/// Idle connections are dropped after this (nodes ping every few seconds).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a session checks whether the node's NAT mapping moved.
const OBSERVE_EVERY: Duration = Duration::from_millis(500);
/// Changes are collected this long before they are announced together.
const FANOUT_DELAY: Duration = Duration::from_millis(25);
/// How long a change that lost a race at etcd waits for this Lighthouse
/// to catch up before it is tried again, and how often it is tried.
const CATCH_UP: Duration = Duration::from_secs(3);
const CONFLICT_TRIES: usize = 5;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("QUIC: {0}")]
    Quic(String),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

struct Session {
    conn: Link,
    out: Outbox,
    /// Relayed datagrams waiting for this node, a fair share per source
    /// (crate::relay_queue); its sending task runs with the session.
    relay: Arc<RelayQueue>,
    serial: u64,
    /// `Update`s (each one is fanned out to every member) and `Punch`es
    /// (each one makes another member probe) this node may still send.
    updates: Bucket,
    punches: Bucket,
    /// The list of Lighthouses this node was last given.
    told: Vec<proto::LighthousePin>,
}

/// Address updates per node: a few at once, then one per 10 s.
const UPDATES: (f64, f64) = (0.1, 5.0);
/// Punch requests per node: ten at once, then two per second.
const PUNCHES: (f64, f64) = (2.0, 10.0);

struct Shared {
    registry: Registry,
    store: Box<dyn Backend>,
    sessions: HashMap<u32, Session>,
    next_serial: u64,
    /// Changes not announced yet; `wake` tells the announcer.
    pending: Pending,
    wake: Arc<Notify>,
}

/// A running Lighthouse.
pub struct Lighthouse {
    shared: Mutex<Shared>,
    pub identity: Identity,
    /// `host:port` nodes use to reach us; goes into join tokens.
    pub public_addr: String,
    /// Event counters for `/metrics`.
    pub stats: crate::metrics::Stats,
    /// The running log filter, for `lighthouse log-level`.
    pub log: std::sync::OnceLock<flatnet_wire::logging::LogHandle>,
    /// Connections still proving their keys, over QUIC and TCP together.
    unproven: Unproven,
    /// With etcd: woken when other Lighthouses' changes arrived.
    feed: Option<Arc<Notify>>,
}

/// Why a change was not stored.
enum Refused {
    /// Another Lighthouse changed the registry first: catch up to this
    /// etcd revision and run the change again.
    Conflict(i64),
    Failed(String),
}

impl Lighthouse {
    /// A Lighthouse with its registry on its own disk (redb).
    pub fn open(
        state_dir: &Path,
        cidr: Ipv4Net,
        host_prefix: u8,
        public_addr: String,
    ) -> Result<Arc<Self>, ServerError> {
        Self::open_with(state_dir, cidr, host_prefix, public_addr, None)
    }

    /// A Lighthouse with its registry on redb, or on etcd shared with
    /// other Lighthouses (with a redb copy in `state_dir`).
    pub fn open_with(
        state_dir: &Path,
        cidr: Ipv4Net,
        host_prefix: u8,
        public_addr: String,
        etcd: Option<&EtcdConfig>,
    ) -> Result<Arc<Self>, ServerError> {
        flatnet_wire::fs::create_private_dir(state_dir)
            .map_err(|e| CertError::Io(state_dir.display().to_string(), e))?;
        let identity = Identity::load_or_create(state_dir)?;
        let mirror = Store::open(&state_dir.join("lighthouse.redb"))?;
        let me = proto::lighthouse_id(&identity.fingerprint());
        let mut registry = Registry::new(cidr, host_prefix);
        if etcd.is_some() {
            // Peers learn where each node is connected only when there is
            // more than one place (a single Lighthouse sends no `via`).
            registry.set_me(&me);
        }
        let (nodes, tokens, next_id) = mirror.load()?;
        registry.restore(nodes, tokens, next_id);
        registry.restore_policies(mirror.load_policies()?);
        let sync = mirror.load_sync()?;
        registry.resume(sync.log, sync.presence);
        let (mut store, feed): (Box<dyn Backend>, _) = match etcd {
            None => (Box::new(mirror), None),
            Some(cfg) => {
                let pin = proto::LighthousePin {
                    address: public_addr.clone(),
                    fingerprint: identity.fingerprint(),
                };
                let meta = Meta {
                    cidr: registry.cidr(),
                    host_prefix,
                };
                let e = EtcdStore::open(mirror, cfg, &me, pin, meta)?;
                let signal = e.signal();
                (Box::new(e), Some(signal))
            }
        };
        // What the other Lighthouses changed while this one was away.
        let caught_up = store.absorb(&mut registry)?;
        if !caught_up.is_empty() {
            info!(
                changes = caught_up.len(),
                "caught up with the shared registry"
            );
        }
        Ok(Arc::new(Self {
            shared: Mutex::new(Shared {
                registry,
                store,
                sessions: HashMap::new(),
                next_serial: 0,
                pending: Pending::default(),
                wake: Arc::new(Notify::new()),
            }),
            identity,
            public_addr,
            stats: crate::metrics::Stats::default(),
            log: std::sync::OnceLock::new(),
            unproven: Unproven::default(),
            feed,
        }))
    }

    /// This Lighthouse's id ([`proto::lighthouse_id`]).
    pub fn id(&self) -> String {
        proto::lighthouse_id(&self.identity.fingerprint())
    }

    /// Every Lighthouse sharing the registry, this one first.
    pub fn lighthouses(&self) -> Vec<proto::LighthousePin> {
        let mut all = self.lock().store.lighthouses();
        let fp = self.identity.fingerprint();
        all.retain(|p| p.fingerprint != fp);
        all.insert(
            0,
            proto::LighthousePin {
                address: self.public_addr.clone(),
                fingerprint: fp,
            },
        );
        all
    }

    /// Every Lighthouse (this one first) when there are several, else
    /// none: what a Welcome carries.
    fn all_lighthouses(&self, s: &Shared) -> Vec<proto::LighthousePin> {
        if s.store.kind() != "etcd" {
            return vec![];
        }
        let fp = self.identity.fingerprint();
        let mut all = s.store.lighthouses();
        all.sort_by_key(|p| p.fingerprint != fp);
        all
    }

    /// The list of Lighthouses for node `id`'s next Pong, if it changed
    /// since the node was last told.
    fn news_for(&self, id: u32) -> Vec<proto::LighthousePin> {
        let mut s = self.lock();
        let all = self.all_lighthouses(&s);
        match s.sessions.get_mut(&id) {
            Some(sess) if sess.told != all && !all.is_empty() => {
                sess.told = all.clone();
                all
            }
            _ => vec![],
        }
    }

    /// Catch up with everything the other Lighthouses did so far (before
    /// an admin command). Without etcd there is nothing to catch up with.
    pub fn freshen(&self) -> Result<(), String> {
        let r = self
            .lock()
            .store
            .freshen()
            .map_err(|e| flatnet_wire::plain_error(&e))?;
        if r > i64::MIN {
            self.catch_up(r);
        }
        Ok(())
    }

    /// Take Lighthouse `id` off the shared list.
    pub fn retire(&self, id: &str) -> Result<(), String> {
        let mut s = self.lock();
        s.store
            .retire(id)
            .map_err(|e| flatnet_wire::plain_error(&e))
    }

    /// `redb` or `etcd`.
    pub fn backend(&self) -> &'static str {
        self.lock().store.kind()
    }

    /// Take in what the other Lighthouses changed and announce it.
    fn absorb(&self) {
        let mut s = self.lock();
        let sh = &mut *s;
        match sh.store.absorb(&mut sh.registry) {
            Ok(ch) => apply(&mut s, ch),
            Err(e) => error!(
                "taking in the other Lighthouses' changes failed: {}; they are taken in \
                 again after a restart",
                flatnet_wire::plain_error(&e)
            ),
        }
    }

    /// Apply the other Lighthouses' changes as they arrive, forever.
    async fn follow(this: std::sync::Weak<Self>, signal: Arc<Notify>) {
        loop {
            signal.notified().await;
            let Some(lh) = this.upgrade() else { return };
            lh.absorb();
        }
    }

    /// After a conflict at etcd: take in the other Lighthouses' changes
    /// until this copy has `revision` (or [`CATCH_UP`] passed).
    fn catch_up(&self, revision: i64) {
        let until = Instant::now() + CATCH_UP;
        loop {
            self.absorb();
            if self.lock().store.applied() >= revision || Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the registry, store what it changed (one transaction)
    /// and announce it. If the store refuses, the registry goes back to
    /// what the store holds and the error is returned: nothing is answered
    /// or announced that was not stored.
    /// With etcd, a change another Lighthouse's change beat is run again
    /// on the caught-up registry.
    pub fn mutate<T>(&self, f: impl Fn(&mut Registry) -> (T, Vec<Change>)) -> Result<T, String> {
        let mut tries = 0;
        loop {
            let mut s = self.lock();
            let (out, changes) = f(&mut s.registry);
            match persist(&mut s, &changes) {
                Ok(()) => {
                    apply(&mut s, changes);
                    return Ok(out);
                }
                Err(Refused::Conflict(rev)) if tries < CONFLICT_TRIES => {
                    drop(s);
                    tries += 1;
                    self.catch_up(rev);
                }
                Err(Refused::Conflict(_)) => return Err(busy()),
                Err(Refused::Failed(e)) => return Err(e),
            }
        }
    }

    /// Run `f`, whose changes are live data only (endpoints, online), and
    /// announce them; nothing to store.
    fn mutate_live(&self, f: impl FnOnce(&mut Registry) -> Vec<Change>) {
        let mut s = self.lock();
        let changes = f(&mut s.registry);
        debug_assert!(!changes.iter().any(durable));
        apply(&mut s, changes);
    }

    /// Read-only access to the registry.
    /// The watchdog's check: the registry lock is free within the call.
    pub fn health(&self) -> Result<(), String> {
        let s = self.lock();
        drop(s);
        Ok(())
    }

    /// Connections that have not proven their key yet, and how many of
    /// them newcomers evicted so far (crate::admission).
    pub fn unproven(&self) -> (usize, u64) {
        (self.unproven.busy(), self.unproven.evicted())
    }

    /// Live sessions over (QUIC, TCP).
    pub fn transports(&self) -> (usize, usize) {
        let s = self.lock();
        let tcp = s
            .sessions
            .values()
            .filter(|x| matches!(x.conn, Link::Tcp(_)))
            .count();
        (s.sessions.len() - tcp, tcp)
    }

    pub fn view<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(&self.lock().registry)
    }

    /// The QUIC endpoint configuration.
    pub fn endpoint(&self, listen: SocketAddr) -> Result<quinn::Endpoint, ServerError> {
        let tls = server_tls(&self.identity)?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ServerError::Quic(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut tc = quinn::TransportConfig::default();
        tc.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(
            |e: quinn::VarIntBoundsExceeded| ServerError::Quic(e.to_string()),
        )?));
        tc.max_concurrent_uni_streams(0u32.into());
        tc.max_concurrent_bidi_streams(1u32.into());
        // The control stream carries small frames (at most MAX_FRAME):
        // no megabytes of unread stream data per connection.
        tc.stream_receive_window((256u32 << 10).into());
        tc.receive_window((512u32 << 10).into());
        tc.datagram_receive_buffer_size(Some(4 << 20));
        // Relayed datagrams wait in crate::relay_queue, fairly, not here.
        tc.datagram_send_buffer_size(RELAY_SEND_BUFFER);
        sc.transport_config(Arc::new(tc));
        sc.migration(true);
        let socket = std::net::UdpSocket::bind(listen).map_err(|e| ServerError::Bind(listen, e))?;
        grow_buffers(&socket);
        // Reset key and connection-ID key both survive restarts, so a node
        // still talking to the previous process is told at once (see
        // Identity::reset_key).
        let mut ec = quinn::EndpointConfig::new(Arc::new(self.identity.reset_key()));
        let cid_key = self.identity.cid_key();
        ec.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        quinn::Endpoint::new(ec, Some(sc), socket, Arc::new(quinn::TokioRuntime))
            .map_err(|e| ServerError::Bind(listen, e))
    }

    /// Accept nodes forever. At most [`MAX_UNPROVEN`] connections may be
    /// between their first packet and a verified key proof; past
    /// [`RETRY_ABOVE`] of them, new clients must answer a QUIC Retry first.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let announcer = tokio::spawn(Self::announce(Arc::downgrade(&self)));
        let snapshots = tokio::spawn(Self::snapshots(Arc::downgrade(&self)));
        let expiry = tokio::spawn(crate::members::expire(Arc::downgrade(&self)));
        let follow = self
            .feed
            .clone()
            .map(|f| tokio::spawn(Self::follow(Arc::downgrade(&self), f)));
        let unproven = self.unproven.clone();
        while let Some(incoming) = endpoint.accept().await {
            let remote = incoming.remote_address();
            if unproven.busy() >= RETRY_ABOVE && !incoming.remote_address_validated() {
                if let Err(e) = incoming.retry() {
                    debug!(%remote, "QUIC retry: {e}");
                }
                continue;
            }
            let Some(permit) = unproven.enter(remote.ip()) else {
                debug!(%remote, "too many connections still proving their keys; refusing");
                incoming.refuse();
                continue;
            };
            let lh = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => lh.session(Link::Quic(conn), permit).await,
                    Err(e) => debug!(%remote, "QUIC handshake failed: {e}"),
                }
            });
        }
        announcer.abort();
        snapshots.abort();
        expiry.abort();
        if let Some(f) = follow {
            f.abort();
        }
    }

    /// Accept nodes over TCP (for networks without UDP) forever, under the
    /// same caps on unproven connections as QUIC.
    pub async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let acceptor = match crate::tcp::acceptor(&self.identity) {
            Ok(a) => a,
            Err(e) => {
                error!("the TCP port cannot serve TLS: {e}");
                return;
            }
        };
        loop {
            let (sock, remote) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors, most likely: wait, do not spin.
                    warn!("accepting a TCP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = self.unproven.enter(remote.ip()) else {
                debug!(%remote, "too many connections still proving their keys; refusing");
                continue;
            };
            let (lh, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let up = crate::tcp::accept(&acceptor, sock, remote);
                match tokio::time::timeout(crate::tcp::UPGRADE_TIMEOUT, up).await {
                    Ok(Ok(link)) => lh.session(Link::Tcp(link), permit).await,
                    Ok(Err(e)) => debug!(%remote, "TCP: {e}"),
                    Err(_) => debug!(%remote, "TCP: no upgrade in time"),
                }
            });
        }
    }

    /// `unproven` is held until the node's key proof verified (or failed).
    async fn session(self: Arc<Self>, conn: Link, unproven: Slot) {
        let remote = conn.remote_address();
        // Datagrams (relay traffic) are for proven nodes only: until then
        // they are read and dropped, so none pile up in quinn's buffer.
        let hs = tokio::select! {
            hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&conn)) => hs,
            () = discard_datagrams(&conn) => return,
            () = unproven.evicted() => {
                // A newcomer took its place (crate::admission): the oldest
                // connection of the address holding the most slots.
                self.stats.join_refused(None);
                debug!(%remote, "unproven connection evicted for a newcomer");
                conn.close(2, b"busy: too many joins in progress; try again");
                return;
            }
        };
        drop(unproven);
        let (id, serial, send, recv, rx) = match hs {
            Ok(Ok(v)) => {
                self.stats.join_accepted();
                v
            }
            Ok(Err((code, msg))) => {
                self.stats.join_refused(Some(code));
                info!(%remote, code = crate::metrics::code_str(code), "refused node: {msg}");
                linger_then_close(&conn, msg.as_bytes()).await;
                return;
            }
            Err(_) => {
                self.stats.join_refused(None);
                info!(%remote, "node did not finish the handshake in time");
                conn.close(1, b"handshake timeout");
                return;
            }
        };
        if let Err(e) = self.clone().run_session(&conn, id, send, recv, rx).await {
            debug!(node = id, "session ended: {e}");
        }
        let mut s = self.lock();
        if s.sessions.get(&id).is_some_and(|x| x.serial == serial) {
            s.sessions.remove(&id);
            let ch = s.registry.disconnected(id);
            apply(&mut s, ch);
            info!(node = id, "node went offline");
        }
    }

    #[allow(clippy::type_complexity)]
    async fn handshake(
        &self,
        conn: &Link,
    ) -> Result<(u32, u64, ControlWrite, ControlRead, OutboxRx), (LhErrorCode, String)> {
        let perr = |e: String| (LhErrorCode::Protocol, e);
        let (mut send, mut recv) = conn.accept_control().await.map_err(perr)?;
        let hello = match read_frame(&mut recv).await {
            Ok(m) => m,
            Err(e) => {
                let _ = refuse(&mut send, &error(LhErrorCode::Protocol, &e)).await;
                return Err(perr(e));
            }
        };
        let NodeMsg::Hello {
            version,
            name,
            public_key,
            token,
            local_addrs,
            since,
        } = hello
        else {
            let m = "expected hello".to_string();
            let _ = refuse(&mut send, &error(LhErrorCode::Protocol, &m)).await;
            return Err((LhErrorCode::Protocol, m));
        };
        let fail = |code: LhErrorCode, m: String| (code, m);
        if let Err(m) = proto::check_version(version) {
            let _ = refuse(&mut send, &error(LhErrorCode::Version, &m)).await;
            return Err(fail(LhErrorCode::Version, m));
        }
        let Some(key) = parse_key(&public_key) else {
            let m = "public_key is not a base64 x25519 key".to_string();
            let _ = refuse(&mut send, &error(LhErrorCode::Protocol, &m)).await;
            return Err(fail(LhErrorCode::Protocol, m));
        };
        let ch = Challenge::new();
        let (nonce, server_key) = ch.message();
        write_frame(&mut send, &LighthouseMsg::Challenge { nonce, server_key })
            .await
            .map_err(perr)?;
        let proof_ok = match read_frame(&mut recv).await {
            Ok(NodeMsg::Proof { mac }) => ch.verify(&key, &mac),
            Ok(_) => false,
            Err(e) => return Err(perr(e)),
        };
        if !proof_ok {
            let m =
                "key proof failed: this node does not hold the private key it claims".to_string();
            let _ = refuse(&mut send, &error(LhErrorCode::BadProof, &m)).await;
            return Err(fail(LhErrorCode::BadProof, m));
        }
        let (out, rx) = outbox();
        let admitted = self.admit(
            conn,
            &name,
            &public_key,
            token.as_deref(),
            local_addrs,
            since,
            out,
        );
        let (id, serial, welcome) = match admitted {
            Ok(v) => v,
            Err((code, message)) => {
                let _ = refuse(&mut send, &error(code, &message)).await;
                return Err((code, message));
            }
        };
        write_frame(&mut send, &welcome).await.map_err(perr)?;
        Ok((id, serial, send, recv, rx))
    }

    /// Admit a proven node, register its session and build its Welcome.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        conn: &Link,
        name: &str,
        public_key: &str,
        token: Option<&str>,
        local_addrs: Vec<SocketAddr>,
        since: Option<proto::SyncPoint>,
        out: Outbox,
    ) -> Result<(u32, u64, LighthouseMsg), (LhErrorCode, String)> {
        // Stored before the Welcome: a node never gets a subnet (or an id)
        // the Lighthouse would not have after a restart, or that another
        // Lighthouse gave out at the same time.
        let mut tries = 0;
        let (mut s, id, changes) = loop {
            let mut s = self.lock();
            let (id, changes) = s
                .registry
                .admit(name, public_key, token, now())
                .map_err(|e| (e.code, e.message))?;
            match persist(&mut s, &changes) {
                Ok(()) => break (s, id, changes),
                Err(Refused::Conflict(rev)) if tries < CONFLICT_TRIES => {
                    drop(s);
                    tries += 1;
                    self.catch_up(rev);
                }
                Err(Refused::Conflict(_)) => return Err((LhErrorCode::Internal, busy())),
                Err(Refused::Failed(e)) => return Err((LhErrorCode::Internal, e)),
            }
        };
        // Live data first, so the first announcement already carries it.
        let live = s.registry.connected(id, conn.remote_address(), local_addrs);
        apply(&mut s, changes.into_iter().chain(live).collect());
        s.next_serial += 1;
        let serial = s.next_serial;
        let told = self.all_lighthouses(&s);
        if let Some(old) = s.sessions.insert(
            id,
            Session {
                conn: conn.clone(),
                out: out.clone(),
                relay: Arc::new(RelayQueue::default()),
                serial,
                updates: Bucket::new(UPDATES.0, UPDATES.1, Instant::now()),
                punches: Bucket::new(PUNCHES.0, PUNCHES.1, Instant::now()),
                told: told.clone(),
            },
        ) {
            old.conn.close(3, b"replaced by a newer connection");
        }
        let node = s
            .registry
            .node(id)
            .cloned()
            .ok_or((LhErrorCode::Internal, "node vanished".to_string()))?;
        info!(
            node = id, name = %node.name, subnet = %node.subnet,
            remote = %conn.remote_address(), transport = conn.transport(), "node online"
        );
        // The whole list, or what changed since the node's sync point. The
        // first slice goes in the Welcome, the rest right behind it:
        // queued now, under the lock, so nothing can come in between.
        let (mut peers, removed, delta) = s.registry.catchup(id, since);
        let rest = peers.split_off(peers.len().min(PEERS_PER_FRAME));
        let rest = peers_messages(&rest, &removed);
        let mut bytes = 0;
        for m in &rest {
            // Encoded once, counted and queued (push_msg would encode again).
            if let Ok(f) = proto::encode_frame(m) {
                bytes += f.len();
                let _ = out.push(bytes::Bytes::from(f));
            }
        }
        let welcome = LighthouseMsg::Welcome {
            node_id: id,
            subnet: node.subnet,
            cidr: s.registry.cidr(),
            observed: conn.remote_address(),
            peers,
            more: u32::try_from(rest.len()).unwrap_or(u32::MAX),
            sync: Some(s.registry.log().point()),
            lighthouses: told,
            delta,
        };
        bytes += proto::encode_frame(&welcome).map_or(0, |f| f.len());
        self.stats.welcome(delta, bytes);
        Ok((id, serial, welcome))
    }

    async fn run_session(
        self: Arc<Self>,
        conn: &Link,
        id: u32,
        mut send: ControlWrite,
        recv: ControlRead,
        mut rx: OutboxRx,
    ) -> Result<(), String> {
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        let (reader, mut frx) = spawn_frame_reader::<NodeMsg, _>(recv);
        let relay_q = self.lock().sessions.get(&id).map(|s| s.relay.clone());
        let sender = relay_q.map(|q| tokio::spawn(self.clone().send_relayed(conn.clone(), q)));
        let result = loop {
            tokio::select! {
                f = frx.recv() => match f {
                    Some(Ok(msg)) => {
                        if let Some(reply) = self.on_message(conn, id, msg) {
                            if let LighthouseMsg::Error { .. } = reply {
                                let _ = write_frame(&mut send, &reply).await;
                                break Err("protocol error".to_string());
                            }
                            write_frame(&mut send, &reply).await?;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = refuse(&mut send, &error(LhErrorCode::Protocol, &e)).await;
                        break Err(e);
                    }
                    None => break Ok(()),
                },
                m = rx.recv() => match m {
                    Some(frame) => send.write_all(&frame).await.map_err(|e| e.to_string())?,
                    // Removed (after its error) or replaced: let the node
                    // read what was sent before closing.
                    None => break Err("session ended by the Lighthouse".to_string()),
                },
                d = conn.read_datagram() => match d {
                    Ok(d) => self.relay(id, &d),
                    Err(e) => break Err(e.to_string()),
                },
                _ = tick.tick() => {
                    let observed = conn.remote_address();
                    self.mutate_live(|r| r.observed(id, observed));
                }
            }
        };
        reader.abort();
        if let Some(t) = sender {
            t.abort();
        }
        let _ = send.shutdown().await;
        if let Err(e) = &result {
            linger_then_close(conn, e.as_bytes()).await;
        } else {
            conn.close(0, b"bye");
        }
        result
    }

    /// Take one from node `id`'s bucket (`which`), if it has any left.
    fn within_budget(&self, id: u32, which: impl FnOnce(&mut Session) -> &mut Bucket) -> bool {
        let mut s = self.lock();
        s.sessions
            .get_mut(&id)
            .is_some_and(|sess| which(sess).allow(Instant::now()))
    }

    fn on_message(&self, conn: &Link, id: u32, msg: NodeMsg) -> Option<LighthouseMsg> {
        match msg {
            NodeMsg::Ping => {
                let observed = conn.remote_address();
                self.mutate_live(|r| r.observed(id, observed));
                Some(LighthouseMsg::Pong {
                    observed,
                    lighthouses: self.news_for(id),
                })
            }
            NodeMsg::Update { local_addrs } => {
                if self.within_budget(id, |s| &mut s.updates) {
                    self.mutate_live(|r| r.update_local(id, local_addrs));
                } else {
                    debug!(node = id, "address update over budget; ignored");
                }
                None
            }
            NodeMsg::Punch { peer } => {
                if !self.within_budget(id, |s| &mut s.punches) {
                    debug!(node = id, "punch request over budget; ignored");
                    return None;
                }
                let s = self.lock();
                let other = s.sessions.get(&peer)?;
                let to_me = s.registry.punch_endpoints(id, peer);
                let to_peer = s.registry.punch_endpoints(peer, id);
                let _ = other.out.push_msg(&LighthouseMsg::PunchNow {
                    peer: id,
                    endpoints: to_peer,
                });
                Some(LighthouseMsg::PunchNow {
                    peer,
                    endpoints: to_me,
                })
            }
            NodeMsg::Hello { .. } | NodeMsg::Proof { .. } => {
                Some(error(LhErrorCode::Protocol, "already authenticated"))
            }
        }
    }

    /// Send one node's relayed datagrams, round robin over their sources,
    /// as fast as its connection takes them.
    async fn send_relayed(self: Arc<Self>, conn: Link, q: Arc<RelayQueue>) {
        loop {
            let d = q.next().await;
            if let Err(e) = conn.send_datagram_wait(d).await {
                self.stats.relay_drop("send_failed");
                debug!("relay: sending to a node: {e}");
                if conn.is_closed() {
                    return;
                }
            }
        }
    }

    /// Forward an opaque (still encrypted) WireGuard packet to another node.
    fn relay(&self, from: u32, datagram: &[u8]) {
        let Some((to, packet)) = relay_decode(datagram) else {
            self.stats.relay_drop("malformed");
            return;
        };
        let target = self
            .lock()
            .sessions
            .get(&to)
            .map(|s| (s.relay.clone(), s.conn.clone()));
        let Some((q, conn)) = target else {
            self.stats.relay_drop("target_offline");
            return;
        };
        let d: bytes::Bytes = relay_encode(from, packet).into();
        // Nothing waiting and room in the connection's own buffer: send at
        // once, as fast as before the queue; it is used only when there
        // is a backlog to share fairly.
        let sent = if q.is_empty() && conn.datagram_send_buffer_space() >= d.len() {
            conn.send_datagram(d).map_err(|e| {
                debug!(from, to, "relay drop: {e}");
                "send_failed"
            })
        } else if q.push(from, d) {
            Ok(())
        } else {
            // This source's share of the target's queue is full: the hog
            // loses its own excess, nobody else's.
            Err("fair_share")
        };
        match sent {
            Ok(()) => {
                self.stats.relay_datagrams.inc();
                self.stats.relay_bytes.inc_by(packet.len() as u64);
            }
            Err(reason) => self.stats.relay_drop(reason),
        }
    }
}

/// Socket buffers for one UDP socket serving thousands of nodes.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Grow the socket's buffers to [`SOCKET_BUFFER`]: one announcement makes
/// every node acknowledge at once, and the default ~200 KiB receive buffer
/// drops most of that burst (and the new nodes' handshakes with it). As
/// root the `*BUFFORCE` options pass `net.core.rmem_max`; otherwise the
/// kernel caps the request there.
pub fn grow_buffers(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    let got = nix::sys::socket::getsockopt(socket, sockopt::RcvBuf).unwrap_or(0);
    debug!(receive_buffer = got, "UDP socket buffers");
}

/// Read and drop datagrams until the connection ends.
async fn discard_datagrams(conn: &Link) {
    while conn.read_datagram().await.is_ok() {}
}

/// Give the peer a moment to read what we wrote (an Error frame) and hang
/// up itself; closing at once would discard the unsent frame.
async fn linger_then_close(conn: &Link, reason: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(1, reason);
}

fn error(code: LhErrorCode, message: &str) -> LighthouseMsg {
    LighthouseMsg::Error {
        code,
        message: message.to_string(),
    }
}

/// Whether a change must be stored.
fn durable(c: &Change) -> bool {
    !matches!(c, Change::NodeLive(_))
}

/// Store the durable ones of `changes` in one transaction (called with the
/// lock held, after the registry took them). After a failure the database
/// is opened again, since redb refuses all writes after an I/O error, and
/// the registry goes back to what it holds; if even that fails the process
/// exits, for its supervisor to restart it on a healthy disk. (Undoing from
/// the store, not from a copy taken before every change, keeps joins from
/// copying the whole registry.)
fn persist(s: &mut Shared, changes: &[Change]) -> Result<(), Refused> {
    if !changes.iter().any(durable) {
        return Ok(());
    }
    let Err(e) = s
        .store
        .commit(changes, s.registry.next_id(), s.registry.log())
    else {
        return Ok(());
    };
    let refused = match &e {
        StoreError::Conflict { revision } => {
            debug!(
                revision,
                "a change lost a race with another Lighthouse; catching up"
            );
            Refused::Conflict(*revision)
        }
        StoreError::Shared(why) => {
            error!(
                "storing a registry change in etcd failed: {why}; the change was refused \
                 and nothing was changed. Check that a majority of the etcd members is up \
                 (etcdctl endpoint health)"
            );
            Refused::Failed(format!(
                "the Lighthouse could not store this change in etcd ({why}); nothing was \
                 changed. Try again when etcd is healthy"
            ))
        }
        _ => {
            let e = flatnet_wire::plain_error(&e);
            error!(
                "storing a registry change failed: {e}; the change was refused and nothing \
                 was changed. Check free space and the disk of the state dir"
            );
            Refused::Failed(format!(
                "the Lighthouse could not store this change ({e}); nothing was changed. \
                 Its state dir may be full: free space there and try again"
            ))
        }
    };
    let reloaded = s
        .store
        .reopen()
        .and_then(|()| Ok((s.store.load()?, s.store.load_policies()?)));
    match reloaded {
        Ok(((nodes, tokens, next_id), policies)) => {
            s.registry.reload(nodes, tokens, next_id);
            s.registry.restore_policies(policies);
        }
        Err(re) => {
            let re = flatnet_wire::plain_error(&re);
            error!(
                "reopening the Lighthouse database failed too: {re}; exiting so that the \
                 service manager restarts the Lighthouse"
            );
            std::process::exit(1);
        }
    }
    Err(refused)
}

fn busy() -> String {
    "other Lighthouses kept changing the registry at the same time; nothing was changed. \
     Try again"
        .to_string()
}

/// Queue stored (or live) changes for announcement (called with the lock
/// held).
fn apply(s: &mut Shared, changes: Vec<Change>) {
    for c in changes {
        match c {
            // Its members are announced by their own NodeLive.
            Change::TokenSaved(_) | Change::PolicySaved(_) | Change::PolicyRemoved(_) => {}
            Change::NodeSaved(n) => s.pending.upsert(n.id),
            Change::NodeLive(id) => s.pending.upsert(id),
            Change::NodeRemoved(id) => {
                // The error goes out through the session's own queue, and
                // dropping the session's sender ends that queue: the
                // writer sends the error, then lingers until the node
                // closes (or 2 s), so the node hears why.
                if let Some(sess) = s.sessions.remove(&id) {
                    let _ = sess.out.push_msg(&error(
                        LhErrorCode::Removed,
                        "this node was removed from the Flatnet by an administrator",
                    ));
                }
                s.pending.remove(id);
                info!(node = id, "node removed");
            }
        }
    }
    if !s.pending.is_empty() {
        s.wake.notify_one();
    }
}

impl Lighthouse {
    /// Announce pending changes, forever: wait for one, give others
    /// [`FANOUT_DELAY`] to join it, then send them all in one round.
    /// Holds only a weak reference: it must not keep a stopped Lighthouse
    /// (and its database) alive.
    async fn announce(this: std::sync::Weak<Self>) {
        let Some(wake) = this.upgrade().map(|lh| lh.lock().wake.clone()) else {
            return;
        };
        loop {
            wake.notified().await;
            tokio::time::sleep(FANOUT_DELAY).await;
            match this.upgrade() {
                Some(lh) => lh.flush(),
                None => return,
            }
        }
    }

    /// Write changed presence rows every [`PRESENCE_EVERY`]; after
    /// [`RECONNECT_GRACE`], announce nodes restored as online that did not
    /// come back as offline.
    async fn snapshots(this: std::sync::Weak<Self>) {
        let started = tokio::time::Instant::now();
        let mut grace_over = false;
        let every = match this.upgrade() {
            Some(lh) => lh.lock().store.presence_every(),
            None => return,
        };
        let mut iv = tokio::time::interval(every.min(RECONNECT_GRACE));
        loop {
            iv.tick().await;
            let Some(lh) = this.upgrade() else { return };
            if !grace_over && started.elapsed() >= RECONNECT_GRACE {
                grace_over = true;
                lh.mutate_live(|r| r.expire_presumed());
            }
            lh.save_presence();
        }
    }

    /// Write the presence rows changed since the last write (and the
    /// version). A failure is logged and retried with the next snapshot:
    /// presence is a hint, and a Lighthouse that lost it only announces
    /// more when nodes come back.
    pub fn save_presence(&self) {
        let mut s = self.lock();
        let rows = s.registry.take_dirty();
        if rows.is_empty() {
            return;
        }
        let sh = &mut *s;
        if let Err(e) = sh.store.save_presence(&rows, sh.registry.log()) {
            let e = flatnet_wire::plain_error(&e);
            warn!(
                "writing the presence snapshot failed: {e}; it is retried in {} ms. \
                 Check free space and the disk of the state dir (and etcd, if used)",
                s.store.presence_every().as_millis()
            );
            // Not lost: the next snapshot writes these rows again.
            s.registry.mark_dirty(rows.iter().map(|(id, _)| *id));
            if s.store.reopen().is_err() {
                warn!("reopening the Lighthouse database failed; the next write retries");
            }
        }
    }

    /// One announcement round: every session gets the same encoded frames,
    /// except that a node never hears about itself.
    pub fn flush(&self) {
        let began = std::time::Instant::now();
        if self.flush_round() {
            self.stats
                .fanout_round
                .observe(began.elapsed().as_secs_f64());
        }
    }

    /// Returns whether there was anything to announce.
    fn flush_round(&self) -> bool {
        let mut s = self.lock();
        let (ids, removed) = s.pending.take();
        if ids.is_empty() && removed.is_empty() {
            return false;
        }
        let infos: Vec<PeerInfo> = ids
            .iter()
            .filter_map(|id| s.registry.peer_info(*id))
            .collect();
        let version = s.registry.log().version();
        let mut msgs = peers_messages(&infos, &removed);
        stamp(&mut msgs, version);
        let frames = match encode_all(&msgs) {
            Ok(f) => f,
            Err(e) => {
                warn!("announcing changes: {e}");
                return true;
            }
        };
        let mut slow = Vec::new();
        for (id, sess) in &s.sessions {
            let r = if ids.binary_search(id).is_ok() {
                let others: Vec<PeerInfo> =
                    infos.iter().filter(|p| p.node_id != *id).cloned().collect();
                let mut mine = peers_messages(&others, &removed);
                stamp(&mut mine, version);
                mine.iter().try_for_each(|m| sess.out.push_msg(m))
            } else {
                frames.iter().try_for_each(|f| sess.out.push(f.clone()))
            };
            if r.is_err() {
                slow.push(*id);
            }
        }
        for id in slow {
            if let Some(sess) = s.sessions.get(&id) {
                self.stats.queue_drops.inc();
                warn!(
                    node = id,
                    queued = sess.out.queued(),
                    "node does not read its updates; disconnecting it"
                );
                sess.conn.close(4, b"too slow");
            }
        }
        true
    }
}

/// Write a final Error frame and finish the stream.
async fn refuse<W: AsyncWrite + Unpin>(send: &mut W, msg: &LighthouseMsg) -> Result<(), String> {
    write_frame(send, msg).await?;
    send.shutdown().await.map_err(|e| e.to_string())
}

/// Write one length-prefixed frame.
pub async fn write_frame<T: serde::Serialize, W: AsyncWrite + Unpin + ?Sized>(
    send: &mut W,
    msg: &T,
) -> Result<(), String> {
    let f = encode_frame(msg).map_err(|e| e.to_string())?;
    send.write_all(&f).await.map_err(|e| e.to_string())
}

/// Read frames in a task of their own (reading is not cancel-safe, so it
/// cannot sit in a `select!`): they arrive on the returned channel, which
/// ends after the first error. Abort the handle to stop reading.
pub fn spawn_frame_reader<T, R>(
    mut recv: R,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<Result<T, String>>,
)
where
    T: serde::de::DeserializeOwned + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        loop {
            let r = read_frame(&mut recv).await;
            let stop = r.is_err();
            if tx.send(r).await.is_err() || stop {
                break;
            }
        }
    });
    (task, rx)
}

/// Read one length-prefixed frame, refusing oversized ones before reading
/// their body.
pub async fn read_frame<T: serde::de::DeserializeOwned, R: AsyncRead + Unpin + ?Sized>(
    recv: &mut R,
) -> Result<T, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let n = check_len(len).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    decode_body(&body).map_err(|e: proto::FrameError| e.to_string())
}
