//! flatnetd's own WireGuard data plane: a TUN device, one UDP socket and
//! three threads.
//!
//! - `flatnet-tun`: TUN → route by destination → encrypt → UDP
//!   ([`egress`]);
//! - `flatnet-udp`: UDP → classify → find the peer → decrypt → TUN, then
//!   the answers the kernel queued meanwhile, when the TUN thread sleeps;
//! - `flatnet-timers`: every [`TICK`] drives each peer's timers.
//!
//! The hot paths are plain loops on dedicated threads, blocking in
//! `recvmsg` and `poll`: no async runtime, no allocation per packet
//! (buffers live for the thread's life). With offloads on, one TUN read is
//! a TCP super-packet of up to 64 KiB that `offload::segment` cuts to MTU
//! size; the encrypted datagrams are laid end
//! to end and leave in one `sendmsg` (UDP GSO). The receive side gets runs
//! of datagrams in one `recvmsg` (UDP GRO).
//! The peer set is swapped atomically on reload; each thread notices by a
//! generation counter and picks up the new set between packets.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Instant,
};

use boringtun::noise::{rate_limiter::RateLimiter, TunnResult};
use flatnet_wire::PeerStatus;
use tracing::{debug, info};

use super::{
    classify::{classify, receiver_index, Datagram, WgKind},
    gate::Gate,
    keys::Identity,
    link, netwatch,
    offload::Coalescer,
    peer::{Dest, Output, PathState, PeerError, MIN_OUT, TICK},
    peers::{lock, PeerRef, PeerSet},
    pmtu_io,
    relayed::{cookie_addr, HandshakeBudget},
    tun::Tun,
    udp, Backend, DataplaneError, QuicHandler, RelaySink,
};
use crate::{
    config::{Config, PeerConfig},
    metrics::{counters, Drop},
};

mod egress;

/// Largest packet the TUN device hands us (its MTU is at most 9000).
const BUF: usize = 65536;
/// Handshake messages per second (all peers) before cookies are demanded.
/// Each initiation is counted twice (here and in its `Tunn`).
const HANDSHAKES_PER_SEC: u64 = 2 * 100;

struct Shared {
    identity: Identity,
    tun: Tun,
    udp: UdpSocket,
    set: RwLock<Arc<PeerSet>>,
    generation: AtomicU64,
    next_index: AtomicU32,
    quic: Box<dyn QuicHandler>,
    junk: AtomicU64,
    /// Checks MAC1 of handshakes before any Diffie-Hellman and answers
    /// floods with cookies; shared by every peer's `Tunn`.
    limiter: Arc<RateLimiter>,
    gso: std::sync::atomic::AtomicBool,
    gro: bool,
    /// Held by whichever thread reads the TUN device ([`egress`]).
    tun_reader: Mutex<()>,
    relay: RwLock<Option<Arc<dyn RelaySink>>>,
    /// Relayed handshake initiations, per source node.
    relayed: Mutex<HandshakeBudget>,
    /// The timer thread's last turn, in ms since `born`: the watchdog's
    /// sign that peer locks and timers still move.
    born: Instant,
    last_tick_ms: AtomicU64,
    /// A running `flatnetctl netcheck`: datagrams from the Lighthouse's
    /// address that are not WireGuard, QUIC or a peer's MTU ack go to it.
    netcheck_on: std::sync::atomic::AtomicBool,
    netcheck: Mutex<Option<NetcheckTap>>,
    /// Remote members' policy on what leaves the tunnels.
    gate: Gate,
}

/// Where a netcheck wants its answers: from this IP, into this channel.
type NetcheckTap = (
    std::net::IpAddr,
    std::sync::mpsc::SyncSender<(SocketAddr, Vec<u8>)>,
);

impl Shared {
    fn current(&self) -> Arc<PeerSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A thread's cached view of the peer set, refreshed when it changes.
struct View {
    generation: u64,
    set: Arc<PeerSet>,
}

impl View {
    fn new(sh: &Shared) -> Self {
        View {
            generation: sh.generation.load(Ordering::Acquire),
            set: sh.current(),
        }
    }
    #[inline]
    fn get(&mut self, sh: &Shared) -> &PeerSet {
        let g = sh.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.set = sh.current();
        }
        &self.set
    }
}

pub struct Userspace {
    shared: Arc<Shared>,
}

impl Userspace {
    /// Create the TUN device, address and route it, bind the socket and
    /// start the threads. Peers are added by [`Backend::update_peers`].
    pub fn start(
        config: &Config,
        identity: Identity,
        quic: Box<dyn QuicHandler>,
    ) -> Result<Self, DataplaneError> {
        let wg = &config.wireguard;
        let tun = Tun::open(&wg.interface, wg.offloads).map_err(DataplaneError::io(format!(
            "creating TUN device {}",
            wg.interface
        )))?;
        let name = tun.name().to_owned();
        link::set_mtu(&name, config.mtu).map_err(DataplaneError::io(format!(
            "setting mtu {} on {name}",
            config.mtu
        )))?;
        link::set_address(&name, config.gateway()).map_err(DataplaneError::io(format!(
            "adding {} to {name}",
            config.gateway()
        )))?;
        link::set_up(&name).map_err(DataplaneError::io(format!("bringing {name} up")))?;
        link::add_route(config.cidr, &name).map_err(DataplaneError::io(format!(
            "route {} dev {name}",
            config.cidr
        )))?;
        link::add_unreachable(config.subnet).map_err(DataplaneError::io(format!(
            "route unreachable {}",
            config.subnet
        )))?;
        let udp = udp::bind(wg.listen_port).map_err(DataplaneError::io(format!(
            "binding UDP port {}",
            wg.listen_port
        )))?;
        let gro = wg.offloads && udp::enable_gro(&udp).is_ok();
        let mut seed = [0u8; 4];
        getrandom(&mut seed);
        let limiter = Arc::new(RateLimiter::new(&identity.public, HANDSHAKES_PER_SEC));
        let shared = Arc::new(Shared {
            identity,
            limiter,
            tun,
            udp,
            set: RwLock::new(Arc::new(PeerSet::default())),
            generation: AtomicU64::new(0),
            next_index: AtomicU32::new(u32::from_le_bytes(seed) & 0x00ff_ffff),
            quic,
            junk: AtomicU64::new(0),
            born: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            netcheck_on: std::sync::atomic::AtomicBool::new(false),
            netcheck: Mutex::new(None),
            gate: Gate::default(),
            gso: wg.offloads.into(),
            gro,
            tun_reader: Mutex::new(()),
            relay: RwLock::new(None),
            relayed: Mutex::new(HandshakeBudget::default()),
        });
        for (n, f) in [
            ("flatnet-tun", egress::tun_loop as fn(Arc<Shared>)),
            ("flatnet-udp", udp_loop),
            ("flatnet-timers", timer_loop),
        ] {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name(n.into())
                .spawn(move || f(sh))
                .map_err(DataplaneError::io(format!("spawning {n}")))?;
        }
        info!(
            interface = %name,
            port = wg.listen_port,
            mtu = config.mtu,
            route = %config.cidr,
            tso = shared.tun.vnet_hdr(),
            gro,
            "userspace WireGuard data plane up"
        );
        Ok(Userspace { shared })
    }

    /// Datagrams dropped before decryption (junk, unknown peer).
    pub fn junk(&self) -> u64 {
        self.shared.junk.load(Ordering::Relaxed)
    }

    /// Another handle on the data plane's UDP socket (same socket, so the
    /// same port and NAT mapping): the Lighthouse's QUIC sends through it.
    pub fn socket(&self) -> std::io::Result<UdpSocket> {
        self.shared.udp.try_clone()
    }

    /// Send one datagram from the WireGuard port (netcheck's probes: the
    /// Lighthouse must see the port peers see).
    pub fn send_from_port(&self, d: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        self.shared.udp.send_to(d, to)
    }

    /// Start taking the non-WireGuard datagrams that arrive from `from`
    /// (netcheck replies); a previous tap is replaced. At most 64 wait.
    pub fn netcheck_tap(
        &self,
        from: std::net::IpAddr,
    ) -> std::sync::mpsc::Receiver<(SocketAddr, Vec<u8>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        *self
            .shared
            .netcheck
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((from, tx));
        self.shared.netcheck_on.store(true, Ordering::Release);
        rx
    }

    /// Stop the tap.
    pub fn netcheck_untap(&self) {
        self.shared.netcheck_on.store(false, Ordering::Release);
        *self
            .shared
            .netcheck
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Put remote members' policy in force ([`crate::policy`]).
    pub fn set_policy(&self, t: crate::policy::PolicyTable, range: Option<ipnet::Ipv4Net>) {
        self.shared.gate.set(t, range);
    }

    /// Where relayed peers' datagrams go.
    pub fn set_relay_sink(&self, sink: Arc<dyn RelaySink>) {
        *self.shared.relay.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// A WireGuard datagram that came through the Lighthouse relay from
    /// node `src`: handled like one from the network, except that it does
    /// not move the peer's endpoint, and replies go back through the relay.
    pub fn relay_in(&self, src: u32, d: &[u8]) {
        let sh = &self.shared;
        let c = counters();
        c.relay_rx_datagrams.inc();
        c.relay_rx_bytes.inc_by(d.len() as u64);
        let Datagram::WireGuard(kind) = classify(d) else {
            rejected(sh, Drop::Junk);
            return;
        };
        if kind == WgKind::HandshakeInit {
            // The source node's own budget, then MAC1 (and under load a
            // cookie for its stand-in address), before the X25519 lookup.
            let allowed = sh
                .relayed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allow(src, Instant::now());
            if !allowed {
                rejected(sh, Drop::HandshakeLimited);
                return;
            }
            let mut cookie = [0u8; 64];
            match sh
                .limiter
                .verify_packet(Some(cookie_addr(src)), d, &mut cookie)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(c)) => {
                    relay_send(sh, src, c);
                    return;
                }
                Err(_) => {
                    rejected(sh, Drop::HandshakeLimited);
                    return;
                }
            }
        }
        let set = sh.current();
        let Some(peer) = find_peer(&set, &sh.identity, kind, d) else {
            rejected(sh, Drop::UnknownPeer);
            return;
        };
        let mut g = lock(peer);
        if g.node_id != Some(src) {
            counters().drop(Drop::WrongRelaySource);
            debug!(peer = %g.name, src, "relayed datagram from another node; dropped");
            return;
        }
        // One buffer per thread, not 64 KiB zeroed per relayed datagram.
        thread_local! {
            static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BUF]);
        }
        OUT.with_borrow_mut(|out| {
            // Written after the peer's lock is released, as in `datagram`.
            let mut tunnel = 0;
            let r = g.decapsulate_relayed(src, kind, d, out, |p, o| match o {
                Output::Network(x) => relay_send(sh, src, x),
                Output::Initiate(x) => send_dest(sh, x, p.dest()),
                Output::Tunnel(x) => tunnel = x.len(),
            });
            if let Err(e) = r {
                counters().drop(peer_drop(&e));
                debug!(peer = %g.name, src, "relayed datagram dropped: {e}");
            }
            drop(g);
            let x = &out[..tunnel];
            // One plain packet: `Tun::send` adds the no-offload header.
            if tunnel > 0 && sh.gate.admits(x, crate::unix_now) {
                if let Err(e) = sh.tun.send(x) {
                    counters().drop(Drop::TunWrite);
                    debug!("writing to tun: {e}");
                }
            }
        });
    }

    /// Send one probe (keepalive, or handshake initiation before the first
    /// session) straight over UDP to each candidate address of a
    /// Lighthouse peer, whatever its current path.
    pub fn probe(&self, node_id: u32, candidates: &[SocketAddr]) {
        let sh = &self.shared;
        let set = sh.current();
        let Some(p) = set
            .peers()
            .iter()
            .find(|p| lock(p).node_id == Some(node_id))
        else {
            return;
        };
        let mut out = [0u8; MIN_OUT];
        let n = lock(p).probe(&mut out);
        if let Some(n) = n {
            for c in candidates {
                send(&sh.udp, &out[..n], *c);
            }
        }
    }

    /// Counters the hole-punching logic samples, per Lighthouse peer.
    pub fn path_samples(&self) -> Vec<PathSample> {
        self.shared
            .current()
            .peers()
            .iter()
            .filter_map(|p| {
                let g = lock(p);
                Some(PathSample {
                    node_id: g.node_id?,
                    direct_rx: g.direct_rx,
                    relay_rx: g.relay_rx,
                    endpoint: g.endpoint,
                })
            })
            .collect()
    }

    /// Switch a Lighthouse peer between direct and relayed sending.
    ///
    /// Moving onto the relay sends a probe through it at once (a handshake
    /// initiation when there is no session yet, else a keepalive), instead
    /// of leaving the first relayed handshake to WireGuard's 5 s retransmit
    /// timer: the relay is what carries traffic from this moment on.
    pub fn set_path(&self, node_id: u32, state: PathState, relayed: bool) {
        let mut out = [0u8; MIN_OUT];
        for p in self.shared.current().peers() {
            let mut g = lock(p);
            if g.node_id == Some(node_id) {
                let moved_to_relay = relayed && !g.relayed;
                if g.relayed != relayed {
                    info!(peer = %g.name, relayed, endpoint = %g.endpoint, "path changed");
                }
                g.path = Some(state);
                g.relayed = relayed;
                if moved_to_relay {
                    if let Some(n) = g.probe(&mut out) {
                        drop(g);
                        relay_send(&self.shared, node_id, &out[..n]);
                    }
                }
            }
        }
    }
}

/// The timer thread is stuck when it has not turned for this long.
const STALL_MS: u64 = 5_000;

/// What [`Userspace::path_samples`] reports for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSample {
    pub node_id: u32,
    pub direct_rx: u64,
    pub relay_rx: u64,
    pub endpoint: SocketAddr,
}

fn relay_send(sh: &Shared, node_id: u32, d: &[u8]) {
    let sink = sh.relay.read().unwrap_or_else(|e| e.into_inner()).clone();
    match sink {
        Some(s) => {
            let c = counters();
            c.relay_tx_datagrams.inc();
            c.relay_tx_bytes.inc_by(d.len() as u64);
            s.send(node_id, d)
        }
        None => {
            counters().drop(Drop::NoRelay);
            debug!(node_id, "no relay available; dropped")
        }
    }
}

#[inline]
fn send_dest(sh: &Shared, d: &[u8], to: Dest) {
    match to {
        Dest::Udp(a) => send(&sh.udp, d, a),
        Dest::Relay(id) => relay_send(sh, id, d),
    }
}

pub(super) fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(b);
    }
}

impl Backend for Userspace {
    fn kind(&self) -> &'static str {
        "userspace"
    }

    fn update_peers(&self, peers: &[PeerConfig], keepalive: u16) -> Result<(), DataplaneError> {
        let sh = &self.shared;
        let (set, fresh, changes) = {
            let old = sh.current();
            old.rebuild(&sh.identity, peers, keepalive, Some(&sh.limiter), || {
                sh.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff
            })
        };
        *sh.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        sh.generation.fetch_add(1, Ordering::AcqRel);
        info!(
            kept = ?changes.kept, added = ?changes.added, removed = ?changes.removed,
            "peers updated"
        );
        // Handshake with new peers now, not on their first packet.
        let mut out = [0u8; MIN_OUT];
        for p in fresh {
            let mut g = lock(&p);
            if g.member {
                continue;
            }
            if let Some(n) = g.initiate(&mut out) {
                send_dest(sh, &out[..n], g.dest());
            }
        }
        Ok(())
    }

    fn peers(&self) -> Vec<PeerStatus> {
        self.shared
            .current()
            .peers()
            .iter()
            .map(|p| lock(p).status())
            .collect()
    }

    fn stalled(&self) -> Option<String> {
        let sh = &self.shared;
        let now = u64::try_from(sh.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let idle = now.saturating_sub(sh.last_tick_ms.load(Ordering::Relaxed));
        (idle > STALL_MS).then(|| {
            format!(
                "its timer thread last ran {} s ago (it runs every {} ms)",
                idle / 1000,
                TICK.as_millis()
            )
        })
    }
}

#[inline]
fn send(udp: &UdpSocket, d: &[u8], to: SocketAddr) {
    if let Err(e) = udp.send_to(d, to) {
        counters().drop(Drop::UdpSend);
        debug!(%to, "udp send: {e}");
    }
}

/// A datagram refused before decryption: counted in [`Userspace::junk`]
/// and in the drop metrics under its reason.
#[inline]
fn rejected(sh: &Shared, why: Drop) {
    sh.junk.fetch_add(1, Ordering::Relaxed);
    counters().drop(why);
}

fn find_peer<'a>(set: &'a PeerSet, me: &Identity, kind: WgKind, d: &[u8]) -> Option<&'a PeerRef> {
    match kind {
        WgKind::HandshakeInit => set.by_handshake(me, d),
        _ => receiver_index(kind, d).and_then(|i| set.by_receiver(i)),
    }
}

fn udp_loop(sh: Arc<Shared>) {
    let mut view = View::new(&sh);
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    // Merge decrypted TCP segments when the TUN device takes GSO writes.
    let mut gro = sh.tun.vnet_hdr().then(Coalescer::new);
    let mut egress = egress::Egress::new(&sh);
    loop {
        let (n, from, seg) = if sh.gro {
            match udp::recv_gro(&sh.udp, &mut buf) {
                Ok(r) => r,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        debug!("udp recv: {e}");
                    }
                    continue;
                }
            }
        } else {
            match sh.udp.recv_from(&mut buf) {
                Ok((n, from)) => (n, from, None),
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        debug!("udp recv: {e}");
                    }
                    continue;
                }
            }
        };
        let mut wrote = false;
        for d in buf[..n].chunks(seg.unwrap_or(n).max(1)) {
            wrote |= datagram(&sh, &mut view, from, d, &mut out, &mut gro);
        }
        if let Some(c) = gro.as_mut() {
            c.flush(|f| tun_write(&sh, f));
        }
        // Only a write into the TUN device can have queued an answer.
        if wrote {
            egress.drain(&sh);
        }
    }
}

/// Hand a datagram to a running netcheck if it waits for one from there.
#[cold]
fn netcheck_tap(sh: &Shared, from: SocketAddr, d: &[u8]) -> bool {
    if !sh.netcheck_on.load(Ordering::Acquire) {
        return false;
    }
    let g = sh.netcheck.lock().unwrap_or_else(|e| e.into_inner());
    match g.as_ref() {
        Some((ip, tx)) if *ip == from.ip() && d.len() <= 64 => {
            tx.try_send((from, d.to_vec())).is_ok()
        }
        _ => false,
    }
}

/// The drop reason of a datagram a peer refused.
fn peer_drop(e: &PeerError) -> Drop {
    match e {
        PeerError::Wg(_) => Drop::Invalid,
        PeerError::NotAllowed(..) => Drop::NotAllowed,
        PeerError::Ipv6 => Drop::Ipv6,
    }
}

#[inline]
fn tun_write(sh: &Shared, frame: &[u8]) {
    if let Err(e) = sh.tun.send_raw(frame) {
        counters().drop(Drop::TunWrite);
        debug!("writing to tun: {e}");
    }
}

/// Handle one received datagram; true when it put a packet into the TUN
/// device (or the coalescer in front of it).
#[inline]
fn datagram(
    sh: &Shared,
    view: &mut View,
    from: SocketAddr,
    d: &[u8],
    out: &mut [u8],
    gro: &mut Option<Coalescer>,
) -> bool {
    let mut wrote = false;
    {
        let kind = match classify(d) {
            Datagram::WireGuard(k) => k,
            Datagram::Quic => {
                sh.quic.datagram(from, d);
                return false;
            }
            Datagram::MtuProbe => {
                if !pmtu_io::on_probe(&sh.udp, view.get(sh), from, d) {
                    rejected(sh, Drop::Junk);
                }
                return false;
            }
            Datagram::MtuAck => {
                if !pmtu_io::on_ack(view.get(sh), from, d) && !netcheck_tap(sh, from, d) {
                    rejected(sh, Drop::Junk);
                }
                return false;
            }
            Datagram::Junk => {
                if !netcheck_tap(sh, from, d) {
                    rejected(sh, Drop::Junk);
                }
                return false;
            }
        };
        if kind == WgKind::HandshakeInit {
            // MAC1 (and under load, a cookie) before the expensive lookup.
            let mut cookie = [0u8; 64];
            match sh.limiter.verify_packet(Some(from.ip()), d, &mut cookie) {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(c)) => {
                    send(&sh.udp, c, from);
                    return false;
                }
                Err(_) => {
                    rejected(sh, Drop::HandshakeLimited);
                    return false;
                }
            }
        }
        let set = view.get(sh);
        let Some(peer) = find_peer(set, &sh.identity, kind, d) else {
            rejected(sh, Drop::UnknownPeer);
            return false;
        };
        let mut g = lock(peer);
        // The decrypted packet goes into the TUN device after the peer's
        // lock is released: the write runs the receiving host's whole
        // path (forwarding, the container's stack), and an answer queued
        // meanwhile must not find its sender waiting for this lock.
        let mut tunnel = 0;
        let r = g.decapsulate(from, kind, d, out, |p, o| match o {
            Output::Network(x) => send(&sh.udp, x, from),
            Output::Initiate(x) => send_dest(sh, x, p.dest()),
            Output::Tunnel(x) => tunnel = x.len(),
        });
        if let Err(e) = r {
            counters().drop(peer_drop(&e));
            match e {
                PeerError::Wg(e) => debug!(peer = %g.name, %from, "dropped: {e:?}"),
                e => debug!(peer = %g.name, %from, "dropped: {e}"),
            }
        }
        drop(g);
        let x = &out[..tunnel];
        if tunnel > 0 && sh.gate.admits(x, crate::unix_now) {
            wrote = true;
            match gro.as_mut() {
                Some(c) => c.push(x, |f| tun_write(sh, f)),
                None => tun_write(sh, x),
            }
        }
    }
    wrote
}

fn timer_loop(sh: Arc<Shared>) {
    let mut view = View::new(&sh);
    let mut out = vec![0u8; BUF];
    let mut ticks = 0u32;
    let mut pmtu_ticks = 0u32;
    let mut watch_ticks = 0u32;
    let mut watch = netwatch::AddrWatch::default();
    loop {
        std::thread::sleep(TICK);
        let turned = sh.born.elapsed().as_millis();
        sh.last_tick_ms
            .store(u64::try_from(turned).unwrap_or(u64::MAX), Ordering::Relaxed);
        ticks += 1;
        if ticks >= 10 {
            ticks = 0;
            sh.limiter.reset_count();
        }
        // A renumbered host tells its peers at once (see netwatch).
        watch_ticks += 1;
        if watch_ticks >= netwatch::EVERY_TICKS {
            watch_ticks = 0;
            let addrs = crate::ifaddrs::all().into_iter().map(|(_, a)| a).collect();
            if watch.update(addrs) {
                info!("this host's addresses changed; telling every direct peer at once");
                for p in view.get(&sh).peers() {
                    let mut g = lock(p);
                    if g.relayed {
                        continue;
                    }
                    if let Some(n) = g.probe(&mut out) {
                        let ep = g.endpoint;
                        drop(g);
                        send(&sh.udp, &out[..n], ep);
                    }
                }
            }
        }
        // The local route toward each peer is looked at again every 5 s.
        pmtu_ticks += 1;
        let recheck = pmtu_ticks >= 50;
        if recheck {
            pmtu_ticks = 0;
        }
        let now = Instant::now();
        for p in view.get(&sh).peers() {
            let mut g = lock(p);
            pmtu_io::tick(&sh.udp, &mut g, now, recheck, &mut out);
            if let Some(n) = g.tick(&mut out) {
                let ep = g.dest();
                drop(g);
                send_dest(&sh, &out[..n], ep);
            }
        }
    }
}
