//! One Lighthouse's session, of the one or several this node keeps: its
//! own connection (QUIC, or TCP where UDP is blocked), status, sync point
//! and outbox. The peer list, punching and the data plane are shared in
//! [`super::LhClient`]; relayed datagrams and punch requests for a peer go
//! through a seat the peer is also connected to ([`pick`]).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use flatnet_lighthouse::link::Link;
use flatnet_wire::lighthouse::{lighthouse_id, relay_encode, LighthousePin, NodeMsg};
use tokio::sync::mpsc;
use tracing::debug;

use super::{lock, relay, transport::TcpFallback};

#[derive(Debug, Clone)]
pub struct SeatStatus {
    pub state: &'static str,
    pub since: Instant,
    pub node_id: Option<u32>,
    pub observed: Option<SocketAddr>,
    pub last_error: Option<String>,
    /// `quic` or `tcp` while connected.
    pub transport: Option<&'static str>,
}

pub struct Seat {
    /// [`lighthouse_id`] of its certificate.
    pub id: String,
    pub address: String,
    pub fingerprint: String,
    pub tcp: TcpFallback,
    pub status: Mutex<SeatStatus>,
    pub outbox: Mutex<Option<mpsc::UnboundedSender<NodeMsg>>>,
    /// The connection while a session runs (relay goes out on it).
    pub link: Mutex<Option<Link>>,
    /// A QUIC connection found while on TCP: the next session's.
    pub next: Mutex<Option<Link>>,
    /// No longer one of the Flatnet's Lighthouses: its loop ends.
    pub retired: AtomicBool,
    /// When the session last heard anything from the Lighthouse.
    last_rx: Mutex<Option<Instant>>,
    next_id: AtomicU16,
}

/// With several Lighthouses, each is pinged this often...
pub const PING_SEVERAL: Duration = Duration::from_secs(1);
/// ...and one not heard from for this long is passed over for relaying
/// and punching while another one is heard (a dead Lighthouse's QUIC
/// connection takes its 15 s idle timeout to end).
pub const QUIET: Duration = Duration::from_millis(2500);
/// ...and its session is ended (and reconnected) after this much silence,
/// so that status says so instead of waiting for QUIC's idle timeout.
pub const SILENT_END: Duration = Duration::from_secs(5);

impl Seat {
    pub fn new(pin: &LighthousePin, tcp: TcpFallback) -> Arc<Self> {
        Arc::new(Seat {
            id: lighthouse_id(&pin.fingerprint),
            address: pin.address.clone(),
            fingerprint: pin.fingerprint.clone(),
            tcp,
            status: Mutex::new(SeatStatus {
                state: "connecting",
                since: Instant::now(),
                node_id: None,
                observed: None,
                last_error: None,
                transport: None,
            }),
            outbox: Mutex::new(None),
            link: Mutex::new(None),
            next: Mutex::new(None),
            retired: AtomicBool::new(false),
            last_rx: Mutex::new(None),
            next_id: AtomicU16::new(0),
        })
    }

    pub fn connected(&self) -> bool {
        lock(&self.link).is_some()
    }

    /// Something arrived from the Lighthouse.
    pub fn heard(&self) {
        *lock(&self.last_rx) = Some(Instant::now());
    }

    /// How long since the Lighthouse was last heard.
    pub fn quiet_for(&self, now: Instant) -> Duration {
        lock(&self.last_rx).map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Connected and heard from within [`QUIET`].
    pub fn lively(&self, now: Instant) -> bool {
        self.connected()
            && lock(&self.last_rx).is_some_and(|t| now.saturating_duration_since(t) < QUIET)
    }

    pub fn set_state(&self, state: &'static str, err: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.state = state;
            s.since = Instant::now();
        }
        if err.is_some() {
            s.last_error = err;
        }
    }

    /// Queue a message on the running session, if any.
    pub fn send(&self, m: NodeMsg) -> bool {
        lock(&self.outbox)
            .as_ref()
            .is_some_and(|tx| tx.send(m).is_ok())
    }

    /// Relay a WireGuard datagram to node `node_id` through this
    /// Lighthouse, in pieces that fit its datagrams.
    pub fn relay(&self, node_id: u32, d: &[u8]) {
        let Some(c) = lock(&self.link).clone() else {
            return;
        };
        let Some(max) = c.max_datagram_size() else {
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for piece in relay::split(d, max.saturating_sub(4), id) {
            if let Err(e) = c.send_datagram(relay_encode(node_id, &piece).into()) {
                debug!(node_id, lighthouse = %self.address, "relay send: {e}");
            }
        }
    }
}

/// The seat to reach a peer through: the first lively one the peer is
/// also connected to (`via`), else the first lively one, else the first
/// connected one (a single Lighthouse sends no `via`).
pub fn pick(seats: &[Arc<Seat>], via: &[String]) -> Option<Arc<Seat>> {
    let now = Instant::now();
    let up: Vec<Up> = seats
        .iter()
        .map(|s| Up {
            id: s.id.as_str(),
            connected: s.connected(),
            lively: s.lively(now),
        })
        .collect();
    choose(&up, via).map(|i| seats[i].clone())
}

/// What [`choose`] knows of a seat.
pub struct Up<'a> {
    pub id: &'a str,
    pub connected: bool,
    pub lively: bool,
}

/// [`pick`] on seats in order.
pub fn choose(seats: &[Up], via: &[String]) -> Option<usize> {
    let on = |f: fn(&Up) -> bool| seats.iter().enumerate().filter(move |(_, s)| f(s));
    on(|s| s.lively)
        .find(|(_, s)| via.iter().any(|v| v == s.id))
        .or_else(|| on(|s| s.lively).next())
        .or_else(|| on(|s| s.connected).next())
        .map(|(i, _)| i)
}

/// How long a seat waits after a refusal that another seat's session
/// contradicts (this Lighthouse has not seen the node's join yet).
pub const REFUSED_RETRY: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(fp: char) -> Arc<Seat> {
        Seat::new(
            &LighthousePin {
                address: format!("{fp}:1"),
                fingerprint: fp.to_string().repeat(64),
            },
            TcpFallback::Off,
        )
    }

    fn up(id: &str, connected: bool, lively: bool) -> Up<'_> {
        Up {
            id,
            connected,
            lively,
        }
    }

    #[test]
    fn a_peer_is_reached_through_a_lighthouse_it_is_connected_to() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let both = [up("a", true, true), up("b", true, true)];
        // Both up: the first one the peer is at.
        assert_eq!(choose(&both, &v(&["b"])), Some(1));
        assert_eq!(choose(&both, &v(&["a", "b"])), Some(0));
        // The peer's Lighthouse is down here: our first one that is up
        // (it may know the peer through the shared registry).
        let a_only = [up("a", true, true), up("b", false, false)];
        assert_eq!(choose(&a_only, &v(&["b"])), Some(0));
        // A single Lighthouse sends no via.
        let b_only = [up("a", false, false), up("b", true, true)];
        assert_eq!(choose(&b_only, &[]), Some(1));
        let none = [up("a", false, false), up("b", false, false)];
        assert_eq!(choose(&none, &v(&["a"])), None);
        // a went quiet (dead, its connection not timed out yet): b.
        let quiet = [up("a", true, false), up("b", true, true)];
        assert_eq!(choose(&quiet, &v(&["a", "b"])), Some(1));
        // Everything quiet: still the first connected one.
        let all_quiet = [up("a", true, false), up("b", true, false)];
        assert_eq!(choose(&all_quiet, &v(&["b"])), Some(0));
        let s = seat('a');
        assert_eq!(s.id, "a".repeat(16));
        assert!(pick(&[s], &[]).is_none(), "nothing connected");
    }
}
