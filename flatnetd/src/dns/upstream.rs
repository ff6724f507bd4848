//! The host's own resolvers, and forwarding to them.
//!
//! Read from `/etc/resolv.conf` as aardvark-dns does: every `nameserver`
//! line, including systemd-resolved's stub at 127.0.0.53 (flatnetd runs in
//! the host's network namespace, so the stub is reachable from here even
//! though it is not from a container). The file is re-read when it changes.
//! Our own listening addresses are skipped, so a resolv.conf that points
//! back at flatnetd cannot make a loop.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How long one upstream server gets before the next is tried.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
/// glibc uses at most three nameservers; so do we.
const MAX_SERVERS: usize = 3;

/// The `nameserver` addresses of a resolv.conf, minus `exclude`.
pub fn parse_resolv(text: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next())?
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !exclude.contains(ip) && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_SERVERS)
        .collect()
}

pub struct Upstream {
    path: PathBuf,
    exclude: Vec<IpAddr>,
    cache: Mutex<Option<(SystemTime, Vec<SocketAddr>)>>,
}

impl Upstream {
    pub fn new(path: PathBuf, exclude: Vec<IpAddr>) -> Self {
        Self {
            path,
            exclude,
            cache: Mutex::new(None),
        }
    }

    /// The current servers (the file is re-read when its mtime changes).
    pub fn servers(&self) -> Vec<SocketAddr> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut c = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((t, s)) = c.as_ref() {
            if *t == mtime {
                return s.clone();
            }
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let servers = parse_resolv(&text, &self.exclude);
        *c = Some((mtime, servers.clone()));
        servers
    }

    /// Ask the servers in turn; the first answer wins. `None` when every
    /// server failed or timed out (the caller answers SERVFAIL).
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in self.servers() {
            if let Some(r) = ask(server, query).await {
                return Some(r);
            }
        }
        None
    }
}

/// One server: UDP, then TCP if the answer was truncated.
async fn ask(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(server).await.ok()?;
    sock.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let r = &buf[..n];
        // Only a response to this very query (connected socket: from the server).
        if n < 12 || &r[..2] != id || r[2] & 0x80 == 0 {
            continue;
        }
        if r[2] & 0x02 != 0 {
            return ask_tcp(server, query).await.or_else(|| Some(r.to_vec()));
        }
        return Some(r.to_vec());
    }
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(server).await.ok()?;
        let len = u16::try_from(query.len()).ok()?;
        s.write_all(&len.to_be_bytes()).await.ok()?;
        s.write_all(query).await.ok()?;
        let n = s.read_u16().await.ok()?;
        let mut r = vec![0u8; usize::from(n)];
        s.read_exact(&mut r).await.ok()?;
        (r.get(..2) == query.get(..2)).then_some(r)
    };
    tokio::time::timeout(TIMEOUT, work).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_like_aardvark() {
        let text = "# generated\nsearch corp.example\nnameserver 127.0.0.53\n\
                    nameserver 10.87.1.1\nnameserver fe80::1%eth0\nnameserver  192.0.2.53 \n\
                    nameserver bogus\nnameserver 198.51.100.1\noptions edns0\n";
        let got = parse_resolv(text, &["10.87.1.1".parse().unwrap()]);
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "192.0.2.53:53".parse().unwrap(),
            ]
        );
        assert!(parse_resolv("", &[]).is_empty());
    }
}
