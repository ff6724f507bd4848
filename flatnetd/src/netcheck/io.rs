//! Taking netcheck's measurements: observe and reach requests from the
//! WireGuard port (through the data plane's socket, whose replies the data
//! plane hands over through a tap), MTU probes from a fresh socket with
//! `IP_PMTUDISC_PROBE` (the don't-fragment bit, no local fragmentation and
//! no cached path MTU: every probe measures the path).

use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use flatnet_wire::probe::{self, Kind};

use super::Measured;
use crate::dataplane::{pmtu::LADDER, pmtu_io::nonce, udp::setsockopt_int, userspace::Userspace};

/// How long each step waits for answers.
const WAIT: Duration = Duration::from_millis(1200);

/// Resolve the Lighthouse's `host:port` and the netcheck address (port + 1).
pub fn netcheck_addr(lighthouse: &str) -> Result<SocketAddr, String> {
    let a = lighthouse
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the Lighthouse address {lighthouse}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("the Lighthouse address {lighthouse} has no IPv4 address"))?;
    Ok(SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
}

/// Wait for a reply to `nonce`; returns the address it says it saw.
fn await_reply(
    rx: &Receiver<(SocketAddr, Vec<u8>)>,
    nonce: u64,
    until: Instant,
) -> Option<SocketAddr> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let (_, d) = rx.recv_timeout(left).ok()?;
        if let Some((n, _, seen)) = probe::parse_reply(&d) {
            if n == nonce {
                return Some(SocketAddr::V4(seen));
            }
        }
    }
}

/// Send `kind` from the WireGuard port (twice, 200 ms apart, against a
/// lost datagram) and wait for its answer.
fn ask(
    us: &Userspace,
    rx: &Receiver<(SocketAddr, Vec<u8>)>,
    to: SocketAddr,
    kind: Kind,
) -> Option<SocketAddr> {
    let n = nonce();
    let until = Instant::now() + WAIT;
    let req = probe::request(n, kind);
    let _ = us.send_from_port(&req, to);
    let first = await_reply(rx, n, Instant::now() + Duration::from_millis(200));
    if first.is_some() {
        return first;
    }
    let _ = us.send_from_port(&req, to);
    await_reply(rx, n, until)
}

/// The largest probe the netcheck port acknowledges, and the route's MTU.
fn mtu(to: SocketAddr) -> (Option<u16>, Option<u16>) {
    let route = crate::dataplane::udp::route_mtu(to).ok();
    let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
        return (None, route);
    };
    let probe_mode = setsockopt_int(
        &sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if probe_mode.is_err()
        || sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .is_err()
    {
        return (None, route);
    }
    let ceiling = route.unwrap_or(1500);
    let base = nonce();
    let mut buf = vec![0u8; 9000];
    let sizes: Vec<u16> = LADDER.iter().copied().filter(|s| *s <= ceiling).collect();
    for _ in 0..2 {
        for (i, s) in sizes.iter().enumerate() {
            if let Some(n) = probe::write_probe(base + i as u64, *s, &mut buf) {
                let _ = sock.send_to(&buf[..n], to);
            }
        }
    }
    let until = Instant::now() + WAIT;
    let mut best = None;
    let mut ack = [0u8; 64];
    while Instant::now() < until {
        if let Ok((n, from)) = sock.recv_from(&mut ack) {
            if from != to {
                continue;
            }
            if let Some((nonce, size)) = probe::parse_ack(&ack[..n]) {
                let i = nonce.wrapping_sub(base);
                if sizes.get(i as usize) == Some(&size) {
                    best = best.max(Some(size));
                }
            }
        }
    }
    (best, route)
}

/// Take every measurement; `m` comes with what the Lighthouse client knows.
pub fn measure(us: &Userspace, mut m: Measured) -> Measured {
    let to = match netcheck_addr(&m.lighthouse) {
        Ok(a) => a,
        Err(e) => {
            m.error = Some(e);
            return m;
        }
    };
    m.netcheck_addr = Some(to);
    let rx = us.netcheck_tap(to.ip());
    m.observed_probe = ask(us, &rx, to, Kind::Observe);
    if m.observed_probe.is_some() {
        m.reached = Some(ask(us, &rx, to, Kind::Reach).is_some());
    }
    us.netcheck_untap();
    let (mtu, route) = mtu(to);
    m.mtu = mtu;
    m.mtu_route = route;
    m
}
