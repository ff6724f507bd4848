//! Which way the node reaches its Lighthouse: QUIC over UDP whenever it
//! works, TLS over TCP (port 443 by default) only when it does not, as in
//! office networks that block outbound UDP.
//!
//! - [`connect_any`] starts QUIC; if QUIC has not connected after
//!   [`TCP_AFTER`], or failed, it tries TCP beside it and takes whichever
//!   connects first, QUIC preferred when both are ready.
//! - While a session runs over TCP, [`quic_again`] keeps trying QUIC every
//!   [`UPGRADE_EVERY`]; once it connects the session moves to it (the
//!   Lighthouse drops the TCP session as replaced), and punching for a
//!   direct path starts again with UDP. WireGuard's sessions are end to end
//!   and do not care which way their packets went, so connections inside
//!   the tunnel survive each move.

use std::{net::SocketAddr, time::Duration};

use flatnet_lighthouse::{client::connect, link::Link, tcp};
use flatnet_wire::lighthouse::TCP_DEFAULT_PORT;

use super::{resolve, JOIN_TIMEOUT};

/// How long QUIC may try alone before TCP is tried beside it.
pub const TCP_AFTER: Duration = Duration::from_secs(4);
/// While on TCP, how often QUIC is tried again.
pub const UPGRADE_EVERY: Duration = Duration::from_secs(10);
/// One QUIC try while on TCP.
const UPGRADE_TRY: Duration = Duration::from_secs(5);

/// Where the TCP fallback goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpFallback {
    /// Never over TCP (`[lighthouse] tcp = "off"`).
    Off,
    /// `host:port`.
    To(String),
}

impl TcpFallback {
    /// From `[lighthouse] tcp`: `off`, `host:port`, or (unset) the
    /// Lighthouse's host on port 443.
    pub fn new(configured: Option<&str>, lighthouse: &str) -> Self {
        match configured.map(str::trim) {
            Some("off") => TcpFallback::Off,
            Some(a) if !a.is_empty() => TcpFallback::To(a.to_string()),
            _ => TcpFallback::To(default_tcp(lighthouse)),
        }
    }
}

/// The Lighthouse's host (`host:port`, `[v6]:port`) with the TCP port.
pub fn default_tcp(lighthouse: &str) -> String {
    let host = lighthouse.rsplit_once(':').map_or(lighthouse, |(h, _)| h);
    format!("{host}:{TCP_DEFAULT_PORT}")
}

async fn quic(endpoint: &quinn::Endpoint, address: &str, fp: &str) -> Result<Link, String> {
    let addr = resolve(address).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(JOIN_TIMEOUT, connect(endpoint, addr, fp)).await {
        Ok(Ok(c)) => Ok(Link::Quic(c)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from {addr} over UDP within {} s",
            JOIN_TIMEOUT.as_secs()
        )),
    }
}

async fn tcp_link(address: &str, fp: &str) -> Result<Link, String> {
    let addr: SocketAddr = resolve(address).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(JOIN_TIMEOUT, tcp::connect(addr, fp)).await {
        Ok(Ok(l)) => Ok(Link::Tcp(l)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from {addr} over TCP within {} s",
            JOIN_TIMEOUT.as_secs()
        )),
    }
}

/// Reach the Lighthouse at `address` (QUIC) or, failing that, over TCP.
pub async fn connect_any(
    endpoint: &quinn::Endpoint,
    address: &str,
    tcp: &TcpFallback,
    fp: &str,
) -> Result<Link, String> {
    let q = quic(endpoint, address, fp);
    let TcpFallback::To(tcp_addr) = tcp else {
        return q.await;
    };
    tokio::pin!(q);
    let first = tokio::select! {
        r = &mut q => Some(r),
        () = tokio::time::sleep(TCP_AFTER) => None,
    };
    let quic_err = match first {
        Some(Ok(l)) => return Ok(l),
        Some(Err(e)) => Some(e),
        None => None,
    };
    let t = tcp_link(tcp_addr, fp);
    tokio::pin!(t);
    if let Some(qe) = quic_err {
        return t.await.map_err(|te| format!("{qe}; over TCP: {te}"));
    }
    // QUIC is still trying: whichever connects first.
    tokio::select! {
        biased;
        r = &mut q => match r {
            Ok(l) => Ok(l),
            Err(qe) => t.await.map_err(|te| format!("{qe}; over TCP: {te}")),
        },
        r = &mut t => match r {
            Ok(l) => Ok(l),
            Err(te) => q.await.map_err(|qe| format!("{qe}; over TCP: {te}")),
        },
    }
}

/// With several Lighthouses, how long each may try before the next is
/// tried beside it (joins go on within seconds when one is down).
pub const NEXT_LIGHTHOUSE_AFTER: Duration = Duration::from_millis(1500);

/// Reach any of `lighthouses` (`(address, fingerprint)`, in order): the
/// first is tried at once, the next one [`NEXT_LIGHTHOUSE_AFTER`] later
/// (or when the one before failed), and so on; the first connection wins.
/// Returns its index.
pub async fn connect_first(
    endpoint: &quinn::Endpoint,
    lighthouses: &[(String, String)],
) -> Result<(usize, Link), String> {
    use tokio::task::JoinSet;
    let mut set = JoinSet::new();
    let mut errors: Vec<String> = Vec::new();
    let mut next = 0;
    loop {
        if next < lighthouses.len() {
            let (address, fp) = lighthouses[next].clone();
            let (ep, i) = (endpoint.clone(), next);
            let tcp = TcpFallback::new(None, &address);
            set.spawn(async move {
                let r = connect_any(&ep, &address, &tcp, &fp).await;
                (i, r.map_err(|e| format!("{address}: {e}")))
            });
            next += 1;
        }
        let more = next < lighthouses.len();
        let done = tokio::select! {
            r = set.join_next() => r,
            () = tokio::time::sleep(NEXT_LIGHTHOUSE_AFTER), if more => continue,
        };
        match done {
            Some(Ok((i, Ok(link)))) => return Ok((i, link)),
            Some(Ok((_, Err(e)))) => errors.push(e),
            Some(Err(e)) => errors.push(e.to_string()),
            None if !more => return Err(errors.join("; ")),
            None => {}
        }
    }
}

/// Try QUIC every [`UPGRADE_EVERY`] until it connects (while a session
/// runs over TCP).
pub async fn quic_again(endpoint: &quinn::Endpoint, address: &str, fp: &str) -> Link {
    loop {
        tokio::time::sleep(UPGRADE_EVERY).await;
        if let Ok(Ok(l)) = tokio::time::timeout(UPGRADE_TRY, quic(endpoint, address, fp)).await {
            return l;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_fallback_defaults_to_the_lighthouse_host_on_443() {
        assert_eq!(
            TcpFallback::new(None, "lh.example:7871"),
            TcpFallback::To("lh.example:443".into())
        );
        assert_eq!(
            TcpFallback::new(Some(""), "203.0.113.1:7871"),
            TcpFallback::To("203.0.113.1:443".into())
        );
        assert_eq!(
            TcpFallback::new(Some("relay.example:8443"), "lh:7871"),
            TcpFallback::To("relay.example:8443".into())
        );
        assert_eq!(TcpFallback::new(Some("off"), "lh:7871"), TcpFallback::Off);
        assert_eq!(default_tcp("[2001:db8::1]:7871"), "[2001:db8::1]:443");
    }
}
