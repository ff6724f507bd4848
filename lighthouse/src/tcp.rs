//! The Lighthouse over TCP, for networks that block UDP (many office
//! networks do; Tailscale's DERP and NetBird's relay fall back the same
//! way). TLS with the same pinned certificate as QUIC, on port 443 by
//! default so that it looks like, and passes as, HTTPS; inside it an
//! HTTP/1.1 upgrade (hyper on both sides) to `flatnet-lh/1`; then frames
//! that carry the control stream's bytes and relay datagrams
//! (`flatnet_wire::lighthouse::tcp_header`).
//!
//! [`TcpLink`] turns one such connection into what a QUIC connection gives
//! the session code ([`crate::link::Link`]): a control stream (an in-memory
//! pipe the link's tasks feed) and datagrams (bounded queues that drop
//! when full, as UDP would, so relayed traffic never queues up behind a
//! slow TCP connection).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use flatnet_wire::lighthouse::{
    tcp_header, tcp_parse_header, SERVER_NAME, TCP_CONTROL, TCP_DATAGRAM, TCP_MAX_PAYLOAD,
    TCP_PATH, TCP_UPGRADE,
};
use http_body_util::Empty;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream},
    sync::{mpsc, watch},
};

use crate::{
    cert::{client_tls, server_tls, CertError, Identity},
    link::{ControlRead, ControlWrite},
};

/// Relay datagrams queued each way before new ones are dropped.
const DATAGRAM_QUEUE: usize = 1024;
/// The control pipe's buffer.
const CONTROL_PIPE: usize = 256 << 10;
/// Control bytes per frame.
const CONTROL_CHUNK: usize = 16 << 10;
/// How long the TLS handshake and the upgrade may take.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("connecting to {0} over TCP: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("{0} did not take the Flatnet upgrade: {1}")]
    Upgrade(SocketAddr, String),
}

/// One Lighthouse session over TCP; clones share it.
#[derive(Clone)]
pub struct TcpLink(Arc<Inner>);

struct Inner {
    remote: SocketAddr,
    out: mpsc::Sender<Bytes>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    /// The session's end of the control pipe, taken once.
    control: Mutex<Option<DuplexStream>>,
    /// Set when either task ends or the last handle is dropped; the
    /// tasks end on it, which closes the TCP connection.
    closed: Arc<watch::Sender<bool>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.send_replace(true);
    }
}

/// Run `work` until it ends or the link is closed; then close the link.
fn supervise<F>(closed: Arc<watch::Sender<bool>>, remote: SocketAddr, work: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut rx = closed.subscribe();
        let r = tokio::select! {
            r = work => r,
            _ = rx.wait_for(|c| *c) => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!(%remote, "TCP link: {e}");
        }
        closed.send_replace(true);
    });
}

impl TcpLink {
    /// Run the framing over an upgraded stream `io` to `remote`.
    pub fn start<S>(io: S, remote: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mine, theirs) = tokio::io::duplex(CONTROL_PIPE);
        let (out_tx, out_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let closed = Arc::new(watch::channel(false).0);
        let (rd, wr) = tokio::io::split(io);
        let (pipe_rd, pipe_wr) = tokio::io::split(theirs);
        // The tasks hold no handle of the link: when the last one is
        // dropped, they end and the connection closes.
        supervise(closed.clone(), remote, read_frames(rd, pipe_wr, in_tx));
        supervise(closed.clone(), remote, write_frames(wr, pipe_rd, out_rx));
        TcpLink(Arc::new(Inner {
            remote,
            out: out_tx,
            incoming: tokio::sync::Mutex::new(in_rx),
            control: Mutex::new(Some(mine)),
            closed,
        }))
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.0.remote
    }

    /// Queue a relay datagram; dropped (Ok) when the queue is full.
    pub fn send_datagram(&self, d: Bytes) -> Result<(), String> {
        if *self.0.closed.borrow() {
            return Err("the TCP link is closed".into());
        }
        if d.len() > TCP_MAX_PAYLOAD {
            return Err(format!("datagram of {} bytes is too large", d.len()));
        }
        let _ = self.0.out.try_send(d);
        Ok(())
    }

    pub async fn read_datagram(&self) -> Result<Bytes, String> {
        let mut rx = self.0.incoming.lock().await;
        tokio::select! {
            d = rx.recv() => d.ok_or_else(|| "the TCP link is closed".to_string()),
            () = self.closed() => Err("the TCP link is closed".to_string()),
        }
    }

    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.0.closed.borrow()
    }

    pub async fn closed(&self) {
        let mut rx = self.0.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// The control stream (once).
    pub fn control(&self) -> Result<(ControlWrite, ControlRead), String> {
        let pipe = self
            .0
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the control stream is already open")?;
        let (r, w) = tokio::io::split(pipe);
        Ok((Box::new(w), Box::new(r)))
    }
}

/// Wire → control pipe and datagram queue.
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    mut pipe: impl AsyncWrite + Unpin,
    datagrams: mpsc::Sender<Bytes>,
) -> Result<(), String> {
    loop {
        let mut h = [0u8; 5];
        if let Err(e) = rd.read_exact(&mut h).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e.to_string()),
            };
        }
        let (kind, len) = tcp_parse_header(h)?;
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        if kind == TCP_CONTROL {
            pipe.write_all(&body).await.map_err(|e| e.to_string())?;
        } else {
            // A full queue drops the datagram, as a UDP socket would.
            let _ = datagrams.try_send(Bytes::from(body));
        }
    }
}

/// Control pipe and datagram queue → wire.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut pipe: impl AsyncRead + Unpin,
    mut datagrams: mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    let mut buf = vec![0u8; CONTROL_CHUNK];
    let mut pipe_open = true;
    loop {
        tokio::select! {
            n = pipe.read(&mut buf), if pipe_open => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 {
                    // The session finished its stream; datagrams may go on.
                    pipe_open = false;
                    continue;
                }
                wr.write_all(&tcp_header(TCP_CONTROL, n)).await.map_err(|e| e.to_string())?;
                wr.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            }
            d = datagrams.recv() => {
                let Some(d) = d else { return Ok(()) };
                wr.write_all(&tcp_header(TCP_DATAGRAM, d.len())).await.map_err(|e| e.to_string())?;
                wr.write_all(&d).await.map_err(|e| e.to_string())?;
            }
        }
        wr.flush().await.map_err(|e| e.to_string())?;
    }
}

fn with_http_alpn(mut c: rustls::ServerConfig) -> rustls::ServerConfig {
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

/// The TLS acceptor for the TCP port: the Lighthouse's own certificate.
pub fn acceptor(id: &Identity) -> Result<tokio_rustls::TlsAcceptor, CertError> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(with_http_alpn(
        server_tls(id)?,
    ))))
}

/// The server's side of one TCP connection: TLS, then the upgrade. Any
/// other request gets a plain HTTP error and the connection ends.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    sock: tokio::net::TcpStream,
    remote: SocketAddr,
) -> Result<TcpLink, TcpError> {
    let _ = sock.set_nodelay(true);
    let tls = acceptor
        .accept(sock)
        .await
        .map_err(|e| TcpError::Tls(remote, e))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let ok = req.uri().path() == TCP_PATH
                && req
                    .headers()
                    .get(header::UPGRADE)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(TCP_UPGRADE.as_bytes()));
            let mut res = Response::new(Empty::<Bytes>::new());
            if !ok {
                *res.status_mut() = StatusCode::NOT_FOUND;
                return Ok::<_, std::convert::Infallible>(res);
            }
            if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(hyper::upgrade::on(&mut req));
            }
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            res.headers_mut().insert(
                header::UPGRADE,
                header::HeaderValue::from_static(TCP_UPGRADE),
            );
            res.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("upgrade"),
            );
            Ok(res)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let upgrade = rx
        .await
        .map_err(|_| TcpError::Upgrade(remote, "no upgrade request".into()))?;
    let io = upgrade
        .await
        .map_err(|e| TcpError::Upgrade(remote, e.to_string()))?;
    Ok(TcpLink::start(TokioIo::new(io), remote))
}

/// The node's side: TCP to `addr`, TLS pinned to `fingerprint`, the
/// upgrade.
pub async fn connect(addr: SocketAddr, fingerprint: &str) -> Result<TcpLink, TcpError> {
    let mut tls = client_tls(fingerprint)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| TcpError::Connect(addr, e))?;
    let _ = sock.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
        .map_err(|e| TcpError::Upgrade(addr, e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, sock)
        .await
        .map_err(|e| TcpError::Tls(addr, e))?;
    let up = |e: hyper::Error| TcpError::Upgrade(addr, e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(up)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = Request::get(TCP_PATH)
        .header(header::HOST, SERVER_NAME)
        .header(header::UPGRADE, TCP_UPGRADE)
        .header(header::CONNECTION, "upgrade")
        .body(Empty::<Bytes>::new())
        .map_err(|e| TcpError::Upgrade(addr, e.to_string()))?;
    let res = sender.send_request(req).await.map_err(up)?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(TcpError::Upgrade(
            addr,
            format!(
                "it answered HTTP {} (is this a Flatnet Lighthouse?)",
                res.status()
            ),
        ));
    }
    let io = hyper::upgrade::on(res).await.map_err(up)?;
    Ok(TcpLink::start(TokioIo::new(io), addr))
}
