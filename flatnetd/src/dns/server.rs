//! The DNS server: UDP and TCP port 53 on this host's gateway address.
//!
//! It is bound with `IP_FREEBIND`, since the gateway address appears on the
//! host only with the first container's veth (or the tunnel device).
//! It answers only the Flatnet (containers and peers), this host itself and
//! the `[dns] allow` list; anyone else gets the gateway's LAN zone
//! (`[dns.lan]`, authoritative data only) and REFUSED for everything else,
//! so it is never an open resolver. Forwarded queries and TCP connections are capped, and TCP
//! connections that go quiet are closed, so a flood cannot starve other
//! clients or grow memory without bound.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::OwnedFd,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use ipnet::Ipv4Net;
use nix::sys::socket::{self as ns, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

use super::{
    answer::{Outcome, Scope, Transport},
    batch::{send_all, Batch, BATCH},
    upstream::Upstream,
    Dns,
};

/// Forwarded queries in flight at once; past this, SERVFAIL at once.
pub const MAX_FORWARDS: usize = 256;
/// TCP connections at once; past this, new ones are closed.
pub const MAX_TCP: usize = 64;
/// A TCP connection that sends nothing for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// Queries on one TCP connection before it is closed.
const TCP_MAX_QUERIES: usize = 100;

/// Who may ask.
#[derive(Debug, Clone)]
pub struct Acl {
    pub cidr: Ipv4Net,
    pub allow: Vec<Ipv4Net>,
}

impl Acl {
    /// `local`: whether the address is one of this host's own.
    pub fn allows(&self, src: IpAddr, local: impl Fn(Ipv4Addr) -> bool) -> bool {
        let v4 = match src {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return v6.is_loopback(),
            },
        };
        v4.is_loopback()
            || self.cidr.contains(&v4)
            || self.allow.iter().any(|n| n.contains(&v4))
            || local(v4)
    }
}

/// What `src` may ask: everything if `acl` (port 53's) trusts it, else the
/// LAN zone only. Without an ACL (the LAN zone's listener) nobody is trusted.
fn scope_of(acl: Option<&Acl>, src: IpAddr, local: impl Fn(Ipv4Addr) -> bool) -> Scope {
    if acl.is_some_and(|a| a.allows(src, local)) {
        Scope::All
    } else {
        Scope::Lan
    }
}

/// This host's own IPv4 addresses, re-read at most every few seconds.
struct LocalAddrs {
    at: std::sync::Mutex<(Instant, Vec<Ipv4Addr>)>,
}

impl LocalAddrs {
    fn new() -> Self {
        Self {
            at: std::sync::Mutex::new((Instant::now(), read_local())),
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mut g = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0.elapsed() > Duration::from_secs(5) {
            *g = (Instant::now(), read_local());
        }
        g.1.contains(&ip)
    }
}

fn read_local() -> Vec<Ipv4Addr> {
    crate::ifaddrs::all()
        .into_iter()
        .map(|(_, ip)| ip)
        .collect()
}

/// A header-only answer with `code` (REFUSED, SERVFAIL) to `query`.
pub fn error_reply(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let mut m = Message::error_msg(id, OpCode::Query, code);
    // Echo the question when it parses, as resolvers expect.
    if let Ok(q) = Message::from_vec(query) {
        m.queries = q.queries;
        m.metadata.recursion_desired = q.metadata.recursion_desired;
    }
    m.metadata.recursion_available = true;
    m.to_vec().ok()
}

/// A socket bound to `addr` with `IP_FREEBIND` (`ip` need not exist yet).
/// UDP sockets also get `SO_REUSEPORT`, so each receive loop has its own
/// socket and the kernel spreads clients across them.
fn freebind(addr: SocketAddrV4, ty: SockType) -> std::io::Result<OwnedFd> {
    let fd = ns::socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    ns::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    ns::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if ty == SockType::Datagram {
        ns::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    ns::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    Ok(fd)
}

/// How many UDP sockets (and receive loops) serve port 53: one per core.
fn udp_loops() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

/// Bind UDP (one blocking socket per receive thread) and TCP on `addr`.
pub fn bind(addr: SocketAddrV4) -> std::io::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    let mut udp = Vec::new();
    for _ in 0..udp_loops() {
        udp.push(std::net::UdpSocket::from(freebind(
            addr,
            SockType::Datagram,
        )?));
    }
    let t = freebind(addr, SockType::Stream)?;
    ns::listen(&t, ns::Backlog::new(128).map_err(std::io::Error::from)?)?;
    let t = std::net::TcpListener::from(t);
    t.set_nonblocking(true)?;
    Ok((udp, TcpListener::from_std(t)?))
}

pub struct Server {
    dns: Arc<Dns>,
    upstream: Arc<Upstream>,
    /// Who gets [`Scope::All`]; `None` on the LAN zone's own listener,
    /// where everyone gets [`Scope::Lan`].
    acl: Option<Acl>,
    local: LocalAddrs,
    forwards: Arc<Semaphore>,
    tcp: Arc<Semaphore>,
}

impl Server {
    /// Port 53: everything for the Flatnet, this host and `acl.allow`.
    pub fn new(dns: Arc<Dns>, upstream: Arc<Upstream>, acl: Acl) -> Arc<Self> {
        Self::build(dns, upstream, Some(acl))
    }

    fn build(dns: Arc<Dns>, upstream: Arc<Upstream>, acl: Option<Acl>) -> Arc<Self> {
        Arc::new(Self {
            dns,
            upstream,
            acl,
            local: LocalAddrs::new(),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp: Arc::new(Semaphore::new(MAX_TCP)),
        })
    }

    /// The `[dns.lan]` listener: the LAN zone and REFUSED for everything
    /// else, to every source, trusted or not. The gateway's DNS relay points
    /// here, since through it every office machine has the gateway's address,
    /// which port 53 trusts when the gateway is on this host or in `[dns] allow`.
    pub fn lan_only(dns: Arc<Dns>, upstream: Arc<Upstream>) -> Arc<Self> {
        Self::build(dns, upstream, None)
    }

    /// Everything for the Flatnet, this host and the allow list; the LAN
    /// zone only for anyone else, and for everyone on the LAN listener.
    fn scope(&self, src: IpAddr) -> Scope {
        scope_of(self.acl.as_ref(), src, |ip| self.local.contains(ip))
    }

    /// Serve until the process ends: the TCP listener on the runtime, and
    /// a plain thread per UDP socket (batched blocking receive, answer,
    /// batched send), which keeps a runtime's wake-ups out of the hot path;
    /// forwarded queries go to the runtime.
    pub async fn serve(self: Arc<Self>, udp: Vec<std::net::UdpSocket>, tcp: TcpListener) {
        let rt = tokio::runtime::Handle::current();
        for (i, u) in udp.into_iter().enumerate() {
            let me = self.clone();
            let rt = rt.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || me.serve_udp(&Arc::new(u), &rt));
            if let Err(e) = spawned {
                warn!("DNS: starting a UDP receive thread: {e}");
            }
        }
        self.serve_tcp(tcp).await;
    }

    fn serve_udp(&self, udp: &Arc<std::net::UdpSocket>, rt: &tokio::runtime::Handle) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&**udp);
        let mut batch = Batch::new();
        let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
        loop {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        warn!("DNS: receiving on UDP port 53: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            out.clear();
            for i in 0..n {
                let Some((q, src)) = batch.get(i) else {
                    continue;
                };
                let scope = self.scope(src.ip());
                match self.dns.answer_scoped(q, Transport::Udp, scope) {
                    Outcome::Reply(r) => out.push((r, src)),
                    Outcome::Drop => count("udp", None),
                    Outcome::Forward if scope == Scope::All => {
                        self.spawn_forward(q.to_vec(), src, udp.clone(), rt)
                    }
                    Outcome::Forward | Outcome::Refuse => {
                        debug!(%src, "DNS: refused a query from outside the Flatnet");
                        if let Some(r) = error_reply(q, ResponseCode::Refused) {
                            out.push((r, src));
                        }
                    }
                }
            }
            for (r, _) in &out {
                count("udp", Some(r));
            }
            send_all(fd, &out);
        }
    }

    fn spawn_forward(
        &self,
        q: Vec<u8>,
        src: SocketAddr,
        udp: Arc<std::net::UdpSocket>,
        rt: &tokio::runtime::Handle,
    ) {
        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
            if let Some(r) = error_reply(&q, ResponseCode::ServFail) {
                count("udp", Some(&r));
                let _ = udp.send_to(&r, src);
            }
            return;
        };
        let up = self.upstream.clone();
        rt.spawn(async move {
            let r = match up.forward(&q).await {
                Some(r) => Some(r),
                None => error_reply(&q, ResponseCode::ServFail),
            };
            count("udp", r.as_deref());
            if let Some(r) = r {
                // One datagram on a socket with room: does not block.
                let _ = udp.send_to(&r, src);
            }
            drop(permit);
        });
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, src) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    warn!("DNS: accepting on TCP port 53: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.tcp.clone().try_acquire_owned() else {
                debug!(%src, "DNS: too many TCP connections; closing a new one");
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.tcp_connection(stream, src).await {
                    debug!(%src, "DNS over TCP: {e}");
                }
                drop(permit);
            });
        }
    }

    async fn tcp_connection(&self, mut s: TcpStream, src: SocketAddr) -> std::io::Result<()> {
        let scope = self.scope(src.ip());
        for _ in 0..TCP_MAX_QUERIES {
            let len = match tokio::time::timeout(TCP_IDLE, s.read_u16()).await {
                Ok(Ok(n)) => usize::from(n),
                _ => return Ok(()),
            };
            let mut q = vec![0u8; len];
            if tokio::time::timeout(TCP_IDLE, s.read_exact(&mut q))
                .await
                .is_err()
            {
                return Ok(());
            }
            let reply = match self.dns.answer_scoped(&q, Transport::Tcp, scope) {
                Outcome::Reply(r) => Some(r),
                Outcome::Drop => None,
                Outcome::Forward if scope == Scope::All => match self.upstream.forward(&q).await {
                    Some(r) => Some(r),
                    None => error_reply(&q, ResponseCode::ServFail),
                },
                Outcome::Forward | Outcome::Refuse => error_reply(&q, ResponseCode::Refused),
            };
            count("tcp", reply.as_deref());
            let Some(r) = reply else { return Ok(()) };
            let Ok(n) = u16::try_from(r.len()) else {
                return Ok(());
            };
            s.write_all(&n.to_be_bytes()).await?;
            s.write_all(&r).await?;
        }
        Ok(())
    }
}

/// Count one response in the metrics by its header's RCODE, or a
/// dropped query (garbage, or a response sent to us) as `dropped`.
fn count(transport: &'static str, reply: Option<&[u8]>) {
    let rcode = match reply.and_then(|r| r.get(3)) {
        None => "dropped",
        Some(b) => match b & 0x0f {
            0 => "noerror",
            1 => "formerr",
            2 => "servfail",
            3 => "nxdomain",
            4 => "notimp",
            5 => "refused",
            _ => "other",
        },
    };
    crate::metrics::counters().dns_answer(transport, rcode);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_flatnet_the_host_and_the_allow_list_may_ask() {
        let acl = Acl {
            cidr: "10.87.0.0/16".parse().unwrap(),
            allow: vec!["192.168.1.10/32".parse().unwrap()],
        };
        let none = |_| false;
        for ok in [
            "10.87.3.4",
            "127.0.0.1",
            "192.168.1.10",
            "::1",
            "::ffff:10.87.1.2",
        ] {
            assert!(acl.allows(ok.parse().unwrap(), none), "{ok}");
        }
        for no in ["192.168.1.11", "203.0.113.5", "fd00::1"] {
            assert!(!acl.allows(no.parse().unwrap(), none), "{no}");
        }
        assert!(acl.allows("192.168.1.11".parse().unwrap(), |ip| ip
            == Ipv4Addr::new(192, 168, 1, 11)));
    }

    #[test]
    fn the_lan_listener_trusts_nobody() {
        let acl = Acl {
            cidr: "10.87.0.0/16".parse().unwrap(),
            allow: vec!["192.168.1.254/32".parse().unwrap()],
        };
        let local = |ip| ip == Ipv4Addr::new(192, 168, 1, 20);
        // The gateway's relay on this host (a local source), or in the allow
        // list, or a container: everything on port 53 ...
        for src in ["192.168.1.20", "192.168.1.254", "10.87.1.1", "127.0.0.1"] {
            let src = src.parse().unwrap();
            assert_eq!(scope_of(Some(&acl), src, local), Scope::All);
            // ... and the LAN zone only on the LAN listener.
            assert_eq!(scope_of(None, src, local), Scope::Lan);
        }
        assert_eq!(
            scope_of(Some(&acl), "192.168.1.30".parse().unwrap(), local),
            Scope::Lan
        );
    }

    #[test]
    fn error_replies_keep_id_and_question() {
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("example.com").unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let bytes = q.to_vec().unwrap();
        let r = Message::from_vec(&error_reply(&bytes, ResponseCode::Refused).unwrap()).unwrap();
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(r.queries.len(), 1);
        assert!(error_reply(b"short", ResponseCode::Refused).is_none());
    }
}
