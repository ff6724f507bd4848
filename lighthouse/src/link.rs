//! One Lighthouse session's transport: QUIC over UDP (the normal case) or,
//! for networks that block UDP, TLS over TCP ([`crate::tcp`]). Both carry
//! the same two things: the control stream (length-prefixed JSON frames,
//! `flatnet_wire::lighthouse`) and relay datagrams (opaque WireGuard
//! packets with a node id). The server's sessions and flatnetd's client
//! are written against this type, not against quinn.

use std::net::SocketAddr;

use bytes::Bytes;
use quinn::VarInt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tcp::TcpLink;

/// The relay datagram size a node on TCP sends (its packets are split into
/// pieces this large and put together by the receiver): below what QUIC
/// carries on a minimum (1,200-byte) path.
pub const TCP_RELAY_PIECE: usize = 1100;

/// The read half of a control stream.
pub type ControlRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a control stream.
pub type ControlWrite = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Clone)]
pub enum Link {
    Quic(quinn::Connection),
    Tcp(TcpLink),
}

impl Link {
    /// `quic` or `tcp` (status, metrics, logs).
    pub fn transport(&self) -> &'static str {
        match self {
            Link::Quic(_) => "quic",
            Link::Tcp(_) => "tcp",
        }
    }

    /// The other side's address as this side sees it (the NAT mapping).
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Link::Quic(c) => c.remote_address(),
            Link::Tcp(t) => t.remote_address(),
        }
    }

    /// Send one relay datagram; like UDP, it may be dropped.
    pub fn send_datagram(&self, d: Bytes) -> Result<(), String> {
        match self {
            Link::Quic(c) => c.send_datagram(d).map_err(|e| e.to_string()),
            Link::Tcp(t) => t.send_datagram(d),
        }
    }

    /// Send a relay datagram, waiting while the connection's buffer is
    /// full (QUIC) instead of dropping the oldest; TCP queues it.
    pub async fn send_datagram_wait(&self, d: Bytes) -> Result<(), String> {
        match self {
            Link::Quic(c) => c.send_datagram_wait(d).await.map_err(|e| e.to_string()),
            Link::Tcp(t) => t.send_datagram(d),
        }
    }

    /// Room left in the connection's own buffer of datagrams to send
    /// (TCP queues on its own: always room).
    pub fn datagram_send_buffer_space(&self) -> usize {
        match self {
            Link::Quic(c) => c.datagram_send_buffer_space(),
            Link::Tcp(_) => usize::MAX,
        }
    }

    /// Whether the link has ended.
    pub fn is_closed(&self) -> bool {
        match self {
            Link::Quic(c) => c.close_reason().is_some(),
            Link::Tcp(t) => t.is_closed(),
        }
    }

    /// The next relay datagram; an error when the link is gone.
    pub async fn read_datagram(&self) -> Result<Bytes, String> {
        match self {
            Link::Quic(c) => c.read_datagram().await.map_err(|e| e.to_string()),
            Link::Tcp(t) => t.read_datagram().await,
        }
    }

    /// The largest relay datagram to send. Over TCP any size would do, but
    /// the Lighthouse forwards it as it is, maybe to a node on QUIC whose
    /// path takes no more than QUIC's minimum: so pieces stay below that.
    pub fn max_datagram_size(&self) -> Option<usize> {
        match self {
            Link::Quic(c) => c.max_datagram_size(),
            Link::Tcp(_) => Some(TCP_RELAY_PIECE),
        }
    }

    /// Close with an application code and reason.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Link::Quic(c) => c.close(VarInt::from_u32(code), reason),
            Link::Tcp(t) => t.close(),
        }
    }

    /// Wait until the link is closed (by either side).
    pub async fn closed(&self) {
        match self {
            Link::Quic(c) => {
                c.closed().await;
            }
            Link::Tcp(t) => t.closed().await,
        }
    }

    /// The client's side: open the control stream.
    pub async fn open_control(&self) -> Result<(ControlWrite, ControlRead), String> {
        match self {
            Link::Quic(c) => {
                let (s, r) = c.open_bi().await.map_err(|e| e.to_string())?;
                Ok((Box::new(s), Box::new(r)))
            }
            Link::Tcp(t) => t.control(),
        }
    }

    /// The server's side: accept the control stream.
    pub async fn accept_control(&self) -> Result<(ControlWrite, ControlRead), String> {
        match self {
            Link::Quic(c) => {
                let (s, r) = c.accept_bi().await.map_err(|e| e.to_string())?;
                Ok((Box::new(s), Box::new(r)))
            }
            Link::Tcp(t) => t.control(),
        }
    }
}
