//! The netcheck responder: a plain UDP port beside the QUIC one (by default
//! the QUIC port + 1) that tells a node how the Lighthouse sees it, for
//! `flatnetctl netcheck`:
//! - an observe request is answered with the address and port it came
//!   from; comparing that with what the QUIC session sees (another port of
//!   ours) shows whether the node's NAT maps by destination (symmetric);
//! - a reach request is answered from a third port the node never sent
//!   to: the answer arrives only if the node's port takes datagrams from
//!   strangers;
//! - MTU probes are acknowledged, so the node learns the underlay MTU.
//!
//! Unauthenticated like STUN, and shaped not to be abused: every answer is
//! no longer than the request, one answer per request, all answers together
//! capped by a token bucket (a spoofed flood toward a victim gets at most
//! [`ANSWERS_PER_SEC`] small datagrams a second). [`answer`] is the pure part.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use flatnet_wire::probe::{self, Kind};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::budget::Bucket;

/// Answers per second, all senders together, and the burst.
pub const ANSWERS_PER_SEC: (f64, f64) = (200.0, 400.0);

/// What to send back for one datagram, and from which socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// From the socket the request came in on.
    Same(Vec<u8>),
    /// From the other socket (a reach request).
    Other(Vec<u8>),
}

/// The answer to datagram `d` from `from`, if any (pure).
pub fn answer(d: &[u8], from: SocketAddr) -> Option<Answer> {
    let SocketAddr::V4(from) = from else {
        return None;
    };
    if let Some((nonce, size)) = probe::parse_probe(d) {
        return Some(Answer::Same(probe::ack(nonce, size).to_vec()));
    }
    let (nonce, kind) = probe::parse_request(d)?;
    let r = probe::reply(nonce, kind, from).to_vec();
    Some(match kind {
        Kind::Observe => Answer::Same(r),
        Kind::Reach => Answer::Other(r),
    })
}

/// The default netcheck address for a QUIC listen address: port + 1.
pub fn default_listen(quic: SocketAddr) -> SocketAddr {
    SocketAddr::new(quic.ip(), quic.port().wrapping_add(1))
}

/// Bind the netcheck port and the reach socket (an ephemeral port on the
/// same address).
pub async fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let main = UdpSocket::bind(listen).await?;
    let other = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await?;
    Ok((main, other))
}

/// Serve netcheck requests forever.
pub async fn serve(main: UdpSocket, other: UdpSocket, lh: Arc<crate::server::Lighthouse>) {
    if let Ok(a) = main.local_addr() {
        info!(listen = %a, "serving netcheck");
    }
    let mut budget = Bucket::new(ANSWERS_PER_SEC.0, ANSWERS_PER_SEC.1, Instant::now());
    let mut buf = vec![0u8; 9000];
    loop {
        let (n, from) = match main.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                debug!("netcheck recv: {e}");
                continue;
            }
        };
        let Some(a) = answer(&buf[..n], from) else {
            lh.stats.netcheck("ignored");
            continue;
        };
        if !budget.allow(Instant::now()) {
            lh.stats.netcheck("rate_limited");
            continue;
        }
        let (sock, bytes, what) = match &a {
            Answer::Same(b) if b[0] == probe::ACK => (&main, b, "mtu"),
            Answer::Same(b) => (&main, b, "observe"),
            Answer::Other(b) => (&other, b, "reach"),
        };
        lh.stats.netcheck(what);
        if let Err(e) = sock.send_to(bytes, from).await {
            debug!(%from, "netcheck answer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_what_it_should_and_nothing_else() {
        let from: SocketAddr = "203.0.113.11:40000".parse().expect("addr");
        let q = probe::request(9, Kind::Observe);
        let Some(Answer::Same(r)) = answer(&q, from) else {
            panic!("observe not answered on the same port")
        };
        let seen = probe::parse_reply(&r).map(|(_, _, a)| a);
        assert_eq!(seen, Some("203.0.113.11:40000".parse().expect("addr")));
        assert!(r.len() <= q.len());
        let q = probe::request(9, Kind::Reach);
        assert!(matches!(answer(&q, from), Some(Answer::Other(_))));
        let mut p = [0u8; 1500];
        let n = probe::write_probe(3, 1400, &mut p).expect("probe");
        let Some(Answer::Same(a)) = answer(&p[..n], from) else {
            panic!("probe not acked")
        };
        assert_eq!(probe::parse_ack(&a), Some((3, 1400)));
        for junk in [&b""[..], b"\x22\0\0\0", &[0x16, 3, 1, 0, 5], &[0x23; 19]] {
            assert_eq!(answer(junk, from), None, "{junk:?}");
        }
        let v6: SocketAddr = "[2001:db8::1]:5".parse().expect("addr");
        assert_eq!(answer(&probe::request(1, Kind::Observe), v6), None);
        assert_eq!(
            default_listen("0.0.0.0:7871".parse().expect("addr")).port(),
            7872
        );
    }
}
