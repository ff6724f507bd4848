//! Endpoint discovery, hole punching and relay fallback, sans I/O.
//!
//! One [`Punch`] tracks every Lighthouse peer. The caller feeds it what
//! happened (peer info from the Lighthouse, `PunchNow`, the data plane's
//! count of authenticated datagrams that arrived straight over UDP) with
//! the current time, and calls [`Punch::tick`] for what to do now:
//!
//! ```text
//!            direct datagram                     no direct datagram for
//!   Connecting ─────────────▶ Direct ──────────── DIRECT_TIMEOUT ──┐
//!       │  RELAY_AFTER                 ▲                           ▼
//!       └─────────────────────────────────── direct datagram ── Relay
//!                                                (re-punch every REPUNCH_EVERY)
//! ```
//!
//! Punching: ask the Lighthouse (`Punch{peer}`), which tells both sides
//! (`PunchNow`) at once; both then send probes to every candidate for
//! `PROBE_WINDOW`, so each NAT sees an outgoing packet to the other before
//! (or while) the other's arrives: simultaneous open through cone NATs.
//! The data plane's WireGuard roaming moves the endpoint to whichever
//! candidate answered first with an authenticated packet.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use flatnet_lighthouse::budget::Bucket;
use flatnet_wire::lighthouse::{candidate_ok, PeerInfo};
use ipnet::Ipv4Net;

use super::probe_limit::ProbeLimit;
use crate::dataplane::peer::PathState;

/// The timing knobs; [`Timing::default`] is what flatnetd runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// No direct path this long after (re)starting to connect: relay.
    pub relay_after: Duration,
    /// How long probes are sent after a punch.
    pub probe_window: Duration,
    /// Gap between probe rounds inside the window.
    pub probe_every: Duration,
    /// A direct path with no authenticated datagram for this long is dead
    /// (peers send keepalives every 5 s).
    pub direct_timeout: Duration,
    /// While relaying, try punching again this often.
    pub repunch_every: Duration,
    /// At most one punch request per peer per this interval.
    pub punch_gap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            relay_after: Duration::from_secs(3),
            probe_window: Duration::from_secs(3),
            probe_every: Duration::from_millis(250),
            direct_timeout: Duration::from_secs(12),
            repunch_every: Duration::from_secs(30),
            punch_gap: Duration::from_secs(1),
        }
    }
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `Punch{peer}` to the Lighthouse.
    RequestPunch(u32),
    /// Send one probe datagram to each of these addresses.
    Probe(u32, Vec<SocketAddr>),
    /// Switch the peer's path (`relayed` = send through the Lighthouse).
    SetPath {
        peer: u32,
        state: PathState,
        relayed: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    candidates: Vec<SocketAddr>,
    /// Where the Lighthouse saw the peer: the peer itself, not limited by
    /// [`ProbeLimit`] as its claimed addresses are.
    observed: Option<SocketAddr>,
    state: PathState,
    /// When the current state was entered.
    since: Instant,
    last_direct: Option<Instant>,
    direct_count: u64,
    probe_until: Option<Instant>,
    next_probe: Instant,
    next_punch: Option<Instant>,
    last_punch: Option<Instant>,
    /// Punches requested since the path last became direct.
    punches: u32,
}

/// The punching state of every Lighthouse peer.
#[derive(Debug)]
pub struct Punch {
    t: Timing,
    peers: HashMap<u32, Entry>,
    my_public_ip: Option<IpAddr>,
    /// The Flatnet: never a candidate.
    cidr: Ipv4Net,
    /// Probe datagrams we may still send (all peers together).
    probes: Bucket,
    /// What each claimed address that never answered may still get.
    limit: ProbeLimit,
}

/// Candidates probed per peer, at most.
pub const MAX_CANDIDATES: usize = 8;
/// Probe datagrams per second, all peers together, and in one burst: plenty
/// for punching to a few peers at once, and a ceiling on what any member
/// (or many) can make this host send.
pub const PROBES_PER_SEC: (f64, f64) = (64.0, 128.0);

/// `2m 10s`, `45s`, `1h 3m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Where to look for a peer: its LAN addresses first when it is behind the
/// same public address as we are (same LAN, or at least same NAT), else its
/// public mapping first. Duplicates removed, order kept.
pub fn candidates(my_public_ip: Option<IpAddr>, peer: &PeerInfo, cidr: Ipv4Net) -> Vec<SocketAddr> {
    let same_nat = matches!((my_public_ip, peer.observed), (Some(a), Some(o)) if a == o.ip());
    let mut out: Vec<SocketAddr> = Vec::new();
    let observed = peer.observed.into_iter();
    let local = peer.local_addrs.iter().copied();
    let ordered: Vec<SocketAddr> = if same_nat {
        local.chain(observed).collect()
    } else {
        observed.chain(local).collect()
    };
    for a in ordered {
        // Plausible only: a member (or a Lighthouse) cannot aim our probes
        // at loopback, multicast, the Flatnet or a public address that is
        // not the peer's observed one.
        if !out.contains(&a) && candidate_ok(a, peer.observed, cidr) {
            out.push(a);
        }
    }
    out.truncate(MAX_CANDIDATES);
    out
}

impl Punch {
    pub fn new(t: Timing, cidr: Ipv4Net) -> Self {
        Punch {
            t,
            peers: HashMap::new(),
            my_public_ip: None,
            cidr,
            probes: Bucket::new(PROBES_PER_SEC.0, PROBES_PER_SEC.1, Instant::now()),
            limit: ProbeLimit::default(),
        }
    }

    /// Our own public IP as the Lighthouse sees it.
    pub fn set_my_public_ip(&mut self, ip: IpAddr) {
        self.my_public_ip = Some(ip);
    }

    pub fn state(&self, peer: u32) -> Option<PathState> {
        self.peers.get(&peer).map(|e| e.state)
    }

    pub fn candidates_of(&self, peer: u32) -> Option<&[SocketAddr]> {
        self.peers.get(&peer).map(|e| e.candidates.as_slice())
    }

    /// Punch toward `peer` at the next tick (someone is waiting: `flatnetctl
    /// ping`), unless its path is direct; the punch gap still applies.
    pub fn punch_soon(&mut self, peer: u32, now: Instant) {
        if let Some(e) = self.peers.get_mut(&peer) {
            if e.state != PathState::Direct {
                e.next_punch = Some(now);
            }
        }
    }

    /// [`Punch::why_not_direct`] of every peer that is not direct.
    pub fn notes(&self, now: Instant) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .peers
            .keys()
            .filter_map(|id| Some((*id, self.why_not_direct(*id, now)?)))
            .collect();
        v.sort();
        v
    }

    /// Why the peer is not on a direct path, in words for `flatnetctl
    /// status`; `None` when it is direct.
    pub fn why_not_direct(&self, peer: u32, now: Instant) -> Option<String> {
        let e = self.peers.get(&peer)?;
        let ago = |t: Instant| human(now.saturating_duration_since(t));
        let next = e
            .next_punch
            .map(|n| format!("; next try in {}", human(n.saturating_duration_since(now))))
            .unwrap_or_default();
        match e.state {
            PathState::Direct => None,
            PathState::Connecting => Some(format!(
                "connecting for {}: probing its addresses",
                ago(e.since)
            )),
            PathState::Relay if e.candidates.is_empty() => Some(
                "relay: the Lighthouse knows no address to punch to (the peer has not \
                 reported one)"
                    .into(),
            ),
            PathState::Relay => {
                let lost = match e.last_direct {
                    Some(d) => format!("direct path lost {} ago; ", ago(d)),
                    None => String::new(),
                };
                match e.last_punch {
                    Some(_) => Some(format!(
                        "relay: {lost}no reply to punching for {} ({} {}){next}",
                        ago(e.since),
                        e.punches,
                        if e.punches == 1 { "try" } else { "tries" }
                    )),
                    None => Some(format!("relay: {lost}not punched yet{next}")),
                }
            }
        }
    }

    /// A peer appeared or its endpoints changed. New peers start
    /// connecting; changed endpoints trigger a new punch.
    pub fn upsert(&mut self, info: &PeerInfo, now: Instant) {
        let cands = candidates(self.my_public_ip, info, self.cidr);
        match self.peers.get_mut(&info.node_id) {
            Some(e) => {
                e.observed = info.observed;
                if e.candidates != cands {
                    e.candidates = cands;
                    e.next_punch = Some(now);
                }
            }
            None => {
                self.peers.insert(
                    info.node_id,
                    Entry {
                        candidates: cands,
                        observed: info.observed,
                        state: PathState::Connecting,
                        since: now,
                        last_direct: None,
                        direct_count: 0,
                        // Probe what we know at once: same-LAN peers and
                        // open NATs need no Lighthouse round trip.
                        probe_until: Some(now + self.t.probe_window),
                        next_probe: now,
                        next_punch: Some(now),
                        last_punch: None,
                        punches: 0,
                    },
                );
            }
        }
    }

    pub fn remove(&mut self, peer: u32) {
        self.peers.remove(&peer);
    }

    /// Drop peers not in `keep` (after a full peer list arrives).
    pub fn retain(&mut self, keep: &[u32]) {
        self.peers.retain(|id, _| keep.contains(id));
    }

    /// The Lighthouse says: punch towards `peer` now, at these endpoints.
    pub fn punch_now(&mut self, peer: u32, endpoints: &[SocketAddr], now: Instant) {
        let t = self.t;
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        // Only endpoints the peer advertised (its PeerInfo): a PunchNow
        // cannot add new targets. One Peers update later they arrive the
        // regular way, if they are real.
        if !endpoints.iter().any(|a| e.candidates.contains(a)) {
            return;
        }
        e.probe_until = Some(now + t.probe_window);
        e.next_probe = now;
    }

    /// The data plane's count of authenticated datagrams that came from
    /// this peer straight over UDP, and where the last one came from.
    pub fn sample(&mut self, peer: u32, direct_rx: u64, endpoint: SocketAddr, now: Instant) {
        if let Some(e) = self.peers.get_mut(&peer) {
            if direct_rx > e.direct_count {
                e.last_direct = Some(now);
                self.limit.answered(endpoint.ip(), now);
            }
            e.direct_count = direct_rx;
        }
    }

    /// What to do now.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let t = self.t;
        let mut out = Vec::new();
        let mut ids: Vec<u32> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            let fresh = e.last_direct.is_some_and(|d| d >= e.since);
            let alive = e
                .last_direct
                .is_some_and(|d| now.saturating_duration_since(d) < t.direct_timeout);
            let next = match e.state {
                PathState::Connecting if fresh => Some(PathState::Direct),
                PathState::Connecting
                    if now.saturating_duration_since(e.since) >= t.relay_after =>
                {
                    Some(PathState::Relay)
                }
                PathState::Direct if !alive => Some(PathState::Relay),
                PathState::Relay if fresh && alive => Some(PathState::Direct),
                _ => None,
            };
            if let Some(s) = next {
                let was = e.state;
                e.state = s;
                e.since = now;
                out.push(Action::SetPath {
                    peer: id,
                    state: s,
                    relayed: s == PathState::Relay,
                });
                match s {
                    // A direct path just died: look for a new one at once.
                    PathState::Relay if was == PathState::Direct => e.next_punch = Some(now),
                    PathState::Relay => e.next_punch = Some(now + t.repunch_every),
                    _ => {
                        e.next_punch = None;
                        e.punches = 0;
                    }
                }
            }
            if let Some(at) = e.next_punch {
                let gap_ok = e
                    .last_punch
                    .is_none_or(|l| now.saturating_duration_since(l) >= t.punch_gap);
                if at <= now && gap_ok {
                    out.push(Action::RequestPunch(id));
                    e.last_punch = Some(now);
                    e.punches += 1;
                    e.probe_until = Some(now + t.probe_window);
                    e.next_probe = now;
                    e.next_punch = match e.state {
                        PathState::Direct => None,
                        _ => Some(now + t.repunch_every),
                    };
                }
            }
            if let Some(until) = e.probe_until {
                if now >= until {
                    e.probe_until = None;
                } else if now >= e.next_probe
                    && !e.candidates.is_empty()
                    && self.probes.take(e.candidates.len() as f64, now)
                {
                    let limit = &mut self.limit;
                    let to: Vec<SocketAddr> = e
                        .candidates
                        .iter()
                        .filter(|a| Some(**a) == e.observed || limit.allow(a.ip(), now))
                        .copied()
                        .collect();
                    if !to.is_empty() {
                        out.push(Action::Probe(id, to));
                    }
                    e.next_probe = now + t.probe_every;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u32, observed: &str, local: &[&str]) -> PeerInfo {
        PeerInfo {
            node_id: id,
            name: format!("h{id}"),
            public_key: "k".into(),
            subnet: format!("10.87.{id}.0/24").parse().unwrap(),
            observed: Some(observed.parse().unwrap()),
            local_addrs: local.iter().map(|a| a.parse().unwrap()).collect(),
            online: true,
            via: vec![],
            member: None,
        }
    }

    fn cidr() -> Ipv4Net {
        "10.87.0.0/16".parse().unwrap()
    }

    /// Where peer 2's authenticated datagrams come from in these tests.
    fn ep() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn paths(a: &[Action]) -> Vec<(PathState, bool)> {
        a.iter()
            .filter_map(|x| match x {
                Action::SetPath { state, relayed, .. } => Some((*state, *relayed)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn relayed_paths_say_why_and_ping_punches_sooner() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "198.51.100.7:40000", &[]), t0);
        p.tick(t0);
        let note = p.why_not_direct(2, t0 + ms(1000)).unwrap();
        assert!(note.starts_with("connecting for 1s"), "{note}");
        // No direct datagram: relay after 3 s, punched again every 30 s.
        let mut now = t0;
        for _ in 0..100 {
            now += ms(100);
            p.tick(now);
        }
        assert_eq!(p.state(2), Some(PathState::Relay));
        let note = p.why_not_direct(2, now + ms(5000)).unwrap();
        assert!(
            note.starts_with("relay: no reply to punching for 12s (1 try); next try in"),
            "{note}"
        );
        assert_eq!(p.notes(now).len(), 1);
        // A ping asks for a punch now rather than at the 30 s mark.
        let later = now + ms(2000);
        assert_eq!(punches(&p.tick(later)), 0);
        p.punch_soon(2, later);
        assert_eq!(punches(&p.tick(later)), 1);
        // Direct again: no note, and punch_soon does nothing.
        p.sample(2, 1, ep(), later + ms(100));
        p.tick(later + ms(100));
        assert_eq!(p.state(2), Some(PathState::Direct));
        assert_eq!(p.why_not_direct(2, later + ms(200)), None);
        p.punch_soon(2, later + ms(200));
        assert_eq!(punches(&p.tick(later + ms(1500))), 0);
        assert_eq!(human(Duration::from_secs(130)), "2m 10s");
        assert_eq!(human(Duration::from_secs(3720)), "1h 2m");
    }

    fn punches(a: &[Action]) -> usize {
        a.iter()
            .filter(|x| matches!(x, Action::RequestPunch(_)))
            .count()
    }

    fn probes(a: &[Action]) -> Vec<Vec<SocketAddr>> {
        a.iter()
            .filter_map(|x| match x {
                Action::Probe(_, c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Peer 2 at 203.0.113.7:40000, direct since t0 + 100 ms.
    fn direct_peer() -> (Instant, Punch) {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "203.0.113.7:40000", &[]), t0);
        p.tick(t0);
        p.sample(2, 1, ep(), t0 + ms(100));
        p.tick(t0 + ms(100));
        (t0, p)
    }

    #[test]
    fn candidates_prefer_lan_behind_the_same_nat() {
        let p = info(2, "203.0.113.7:40000", &["192.168.1.5:51820"]);
        let me_elsewhere = Some("203.0.113.9".parse().unwrap());
        let me_same = Some("203.0.113.7".parse().unwrap());
        let s = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s(candidates(me_elsewhere, &p, cidr())),
            ["203.0.113.7:40000", "192.168.1.5:51820"]
        );
        assert_eq!(
            s(candidates(me_same, &p, cidr())),
            ["192.168.1.5:51820", "203.0.113.7:40000"]
        );
        let dup = info(3, "192.168.1.5:51820", &["192.168.1.5:51820", "0.0.0.0:1"]);
        assert_eq!(s(candidates(None, &dup, cidr())), ["192.168.1.5:51820"]);
    }

    #[test]
    fn implausible_candidates_are_never_probed() {
        let p = info(
            2,
            "198.51.100.7:40000",
            &[
                "192.168.1.5:51820",
                "203.0.113.99:1", // public, but not what the Lighthouse saw
                "127.0.0.1:51820",
                "10.87.3.4:51820",
                "224.0.0.1:51820",
                "169.254.0.1:51820",
            ],
        );
        let s: Vec<String> = candidates(None, &p, cidr())
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(s, ["198.51.100.7:40000", "192.168.1.5:51820"]);
        let many: Vec<String> = (1..40).map(|i| format!("192.168.1.{i}:51820")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            candidates(None, &info(3, "198.51.100.8:1", &many), cidr()).len(),
            MAX_CANDIDATES
        );
    }

    #[test]
    fn punch_now_cannot_add_targets() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "198.51.100.7:40000", &[]), t0);
        let later = t0 + Duration::from_secs(10);
        p.tick(later);
        let never: SocketAddr = "192.168.50.50:9".parse().unwrap();
        p.punch_now(2, &[never], later);
        assert!(!p.candidates_of(2).unwrap().contains(&never));
        assert!(probes(&p.tick(later)).iter().flatten().all(|a| *a != never));
    }

    #[test]
    fn probes_are_capped_across_all_peers() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        let lan: Vec<String> = (1..=7).map(|i| format!("192.168.1.{i}:51820")).collect();
        let lan: Vec<&str> = lan.iter().map(String::as_str).collect();
        for id in 2..60 {
            p.upsert(&info(id, &format!("198.51.100.{id}:40000"), &lan), t0);
        }
        let mut sent = 0;
        let mut to_lan = HashMap::<IpAddr, usize>::new();
        for step in 0..40u64 {
            let now = t0 + ms(step * 50);
            for a in probes(&p.tick(now)).into_iter().flatten() {
                sent += 1;
                if a.port() == 51820 {
                    *to_lan.entry(a.ip()).or_default() += 1;
                }
            }
        }
        // Two seconds: the burst plus two seconds' worth, not 58 peers x 8
        // candidates x 4 probes per second.
        let cap = (PROBES_PER_SEC.1 + 2.0 * PROBES_PER_SEC.0) as usize;
        assert!(sent <= cap, "{sent} > {cap}");
        // Each claimed LAN address, named by all 58 peers, had its own burst.
        assert_eq!(to_lan.len(), 7);
        assert!(to_lan
            .values()
            .all(|n| *n <= super::super::probe_limit::UNPROVEN_BURST as usize));
        // The peers' observed addresses got probes too.
        assert!(sent > to_lan.values().sum::<usize>());
    }

    #[test]
    fn a_private_address_many_peers_claim_gets_a_small_budget_per_minute() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        // Ten hostile members claim the same bystander, on seven ports each.
        let claims: Vec<String> = (1..=7)
            .map(|i| format!("192.168.77.7:{}", 1000 + i))
            .collect();
        let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
        let bystander: IpAddr = "192.168.77.7".parse().unwrap();
        for id in 2..12 {
            p.upsert(&info(id, &format!("198.51.100.{id}:40000"), &claims), t0);
        }
        // Each asks the Lighthouse to have us punch, every 100 ms, for a minute.
        let mut at_bystander = 0;
        for step in 0..600u64 {
            let now = t0 + ms(step * 100);
            for id in 2..12 {
                let eps: Vec<SocketAddr> = claims.iter().map(|c| c.parse().unwrap()).collect();
                p.punch_now(id, &eps, now);
            }
            at_bystander += probes(&p.tick(now))
                .into_iter()
                .flatten()
                .filter(|a| a.ip() == bystander)
                .count();
        }
        let most = (super::super::probe_limit::UNPROVEN_BURST
            + super::super::probe_limit::UNPROVEN_PER_MIN) as usize;
        assert!(
            at_bystander <= most,
            "{at_bystander} probes at the bystander in a minute"
        );
        assert!(at_bystander >= 12, "the first punch still probes it");
    }

    #[test]
    fn a_lan_candidate_that_answers_is_probed_freely() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "198.51.100.7:40000", &["192.168.1.7:51820"]), t0);
        let lan: SocketAddr = "192.168.1.7:51820".parse().unwrap();
        let count = |p: &mut Punch, from: Instant, secs: u64| -> usize {
            (0..secs * 20)
                .map(|i| {
                    let now = from + ms(i * 50);
                    p.punch_now(2, &[lan], now);
                    probes(&p.tick(now))
                        .into_iter()
                        .flatten()
                        .filter(|a| *a == lan)
                        .count()
                })
                .sum()
        };
        // Its burst, and the trickle of 12 a minute.
        let silent = count(&mut p, t0, 10);
        assert!((12..=14).contains(&silent), "{silent}");
        // It answers: an authenticated datagram straight from it.
        p.sample(2, 1, lan, t0 + Duration::from_secs(10));
        let answered = count(&mut p, t0 + Duration::from_secs(10), 10);
        assert!(answered >= 38, "{answered}: one probe per 250 ms round");
    }

    #[test]
    fn new_peer_punches_probes_and_goes_direct() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "203.0.113.7:40000", &[]), t0);
        let a = p.tick(t0);
        assert_eq!(punches(&a), 1);
        assert_eq!(probes(&a).len(), 1);
        // Probes repeat every 250 ms inside the window, not faster.
        assert!(probes(&p.tick(t0 + ms(100))).is_empty());
        assert_eq!(probes(&p.tick(t0 + ms(260))).len(), 1);
        p.punch_now(2, &["203.0.113.7:40000".parse().unwrap()], t0 + ms(300));
        assert_eq!(probes(&p.tick(t0 + ms(300))).len(), 1);
        // An authenticated datagram arrives directly: direct.
        p.sample(2, 1, ep(), t0 + ms(400));
        let a = p.tick(t0 + ms(400));
        assert_eq!(paths(&a), [(PathState::Direct, false)]);
        assert_eq!(p.state(2), Some(PathState::Direct));
        // Keepalives keep it direct; no more punches.
        for i in 1..10u64 {
            p.sample(2, 1 + i, ep(), t0 + Duration::from_secs(5 * i));
            let a = p.tick(t0 + Duration::from_secs(5 * i));
            assert!(paths(&a).is_empty() && punches(&a) == 0, "{a:?}");
        }
    }

    #[test]
    fn no_direct_path_within_three_seconds_means_relay_then_repunch() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "203.0.113.7:40000", &[]), t0);
        p.tick(t0);
        assert!(paths(&p.tick(t0 + ms(2900))).is_empty());
        let a = p.tick(t0 + ms(3000));
        assert_eq!(paths(&a), [(PathState::Relay, true)]);
        // Probing stopped with the window; punching again after 30 s.
        assert!(probes(&p.tick(t0 + ms(3500))).is_empty());
        assert_eq!(punches(&p.tick(t0 + Duration::from_secs(20))), 0);
        let a = p.tick(t0 + Duration::from_secs(33));
        assert_eq!(punches(&a), 1);
        assert_eq!(probes(&a).len(), 1);
        // Relayed traffic does not count as direct; a direct probe answer does.
        p.sample(2, 0, ep(), t0 + Duration::from_secs(34));
        assert!(paths(&p.tick(t0 + Duration::from_secs(34))).is_empty());
        p.sample(2, 1, ep(), t0 + Duration::from_secs(35));
        let a = p.tick(t0 + Duration::from_secs(35));
        assert_eq!(paths(&a), [(PathState::Direct, false)]);
    }

    #[test]
    fn dead_direct_path_falls_back_to_relay_and_repunches_at_once() {
        let (t0, mut p) = direct_peer();
        assert_eq!(p.state(2), Some(PathState::Direct));
        // Silence for 12 s (three keepalive intervals are missing).
        let a = p.tick(t0 + ms(100) + Duration::from_secs(12));
        assert_eq!(paths(&a), [(PathState::Relay, true)]);
        assert_eq!(punches(&a), 1);
        assert_eq!(probes(&a).len(), 1);
    }

    #[test]
    fn endpoint_change_triggers_a_new_punch() {
        let (t0, mut p) = direct_peer();
        // Same info again: nothing to do.
        p.upsert(&info(2, "203.0.113.7:40000", &[]), t0 + ms(2000));
        assert_eq!(punches(&p.tick(t0 + ms(2000))), 0);
        // Its NAT mapping moved: punch towards the new one.
        p.sample(2, 2, ep(), t0 + ms(3000));
        p.upsert(&info(2, "203.0.113.7:20005", &[]), t0 + ms(3000));
        let a = p.tick(t0 + ms(3000));
        assert_eq!(punches(&a), 1);
        assert_eq!(
            probes(&a),
            [vec!["203.0.113.7:20005".parse::<SocketAddr>().unwrap()]]
        );
        // Punch requests are rate limited.
        p.upsert(&info(2, "203.0.113.7:20006", &[]), t0 + ms(3100));
        assert_eq!(punches(&p.tick(t0 + ms(3100))), 0);
        assert_eq!(punches(&p.tick(t0 + ms(4000))), 1);
    }

    #[test]
    fn removed_peers_are_forgotten() {
        let t0 = Instant::now();
        let mut p = Punch::new(Timing::default(), cidr());
        p.upsert(&info(2, "203.0.113.7:40000", &[]), t0);
        p.upsert(&info(3, "203.0.113.8:40000", &[]), t0);
        p.retain(&[3]);
        assert!(p.state(2).is_none());
        p.remove(3);
        assert!(p.tick(t0).is_empty());
    }
}
