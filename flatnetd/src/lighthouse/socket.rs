//! QUIC over the data plane's WireGuard socket.
//!
//! quinn normally owns its UDP socket. Here the socket belongs to the data
//! plane, whose receive thread reads every datagram and sorts them
//! (`dataplane::classify`): QUIC packets (first byte >= 0x40) are handed to
//! [`InboxHandler`], which queues them in a bounded [`QuicInbox`] and wakes
//! quinn. [`SharedUdp`] implements `quinn::AsyncUdpSocket`: `poll_recv`
//! drains the inbox, `try_send` does a non-blocking `sendto` on the same
//! socket. So the Lighthouse sees the NAT mapping of the very socket that
//! carries WireGuard, which is what peers must punch towards.

use std::{
    collections::VecDeque,
    fmt,
    io::{self, IoSliceMut},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
};

use quinn::udp::{RecvMeta, Transmit};

use crate::dataplane::QuicHandler;

/// Most QUIC datagrams queued between the data plane and quinn; more are
/// dropped (QUIC treats that as loss).
pub const INBOX_CAPACITY: usize = 1024;

#[derive(Default)]
struct Inner {
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    waker: Option<Waker>,
}

/// QUIC datagrams the data plane received, waiting for quinn.
#[derive(Default)]
pub struct QuicInbox {
    inner: Mutex<Inner>,
    pub dropped: AtomicU64,
}

impl fmt::Debug for QuicInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicInbox").finish_non_exhaustive()
    }
}

impl QuicInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one datagram and wake the receiver.
    pub fn push(&self, from: SocketAddr, d: &[u8]) {
        let waker = {
            let mut g = self.lock();
            if g.queue.len() >= INBOX_CAPACITY {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            g.queue.push_back((d.to_vec(), from));
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Move queued datagrams into quinn's buffers, or register `cx` to be
    /// woken by the next [`QuicInbox::push`].
    pub fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut g = self.lock();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((d, from)) = g.queue.pop_front() else {
                break;
            };
            let len = d.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&d[..len]);
            meta[n] = RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The data plane's [`QuicHandler`] when the node has joined a Lighthouse.
pub struct InboxHandler(pub Arc<QuicInbox>);

impl QuicHandler for InboxHandler {
    fn datagram(&self, from: SocketAddr, datagram: &[u8]) {
        self.0.push(from, datagram);
    }
}

/// quinn's view of the shared socket.
pub struct SharedUdp {
    socket: UdpSocket,
    inbox: Arc<QuicInbox>,
}

impl fmt::Debug for SharedUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedUdp")
            .field("local", &self.socket.local_addr().ok())
            .finish()
    }
}

impl SharedUdp {
    /// `socket` is a handle on the data plane's socket (`try_clone`); it
    /// must stay blocking for the data plane, so sends here pass
    /// `MSG_DONTWAIT` instead of changing the socket's mode.
    pub fn new(socket: UdpSocket, inbox: Arc<QuicInbox>) -> Self {
        SharedUdp { socket, inbox }
    }
}

/// Send one datagram without blocking. Whatever goes wrong, the datagram
/// is lost and that is all, as quinn-udp does it: a full send buffer,
/// no route (the host's address is being renumbered), a firewall refusing
/// it. QUIC's loss recovery and idle timeout take it from there. An error
/// returned to quinn would end the connection's driver task, and with it
/// every timer of the connection: the Lighthouse session would hang
/// forever instead of timing out and reconnecting (the soak found it: a
/// send during a LAN renumber, ENETUNREACH, left a relayed peer cut off).
fn send_nonblocking(s: &UdpSocket, d: &[u8], to: SocketAddr) -> io::Result<()> {
    use nix::sys::socket::{sendto, MsgFlags, SockaddrStorage};
    let addr = SockaddrStorage::from(to);
    match sendto(s.as_raw_fd(), d, &addr, MsgFlags::MSG_DONTWAIT) {
        Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
        Err(e) => tracing::debug!(%to, "QUIC datagram not sent ({e}); QUIC will retransmit"),
    }
    Ok(())
}

#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for SharedUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        match t.segment_size {
            Some(seg) if seg > 0 && t.contents.len() > seg => {
                for c in t.contents.chunks(seg) {
                    send_nonblocking(&self.socket, c, t.destination)?;
                }
                Ok(())
            }
            _ => send_nonblocking(&self.socket, t.contents, t.destination),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inbox.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A quinn client endpoint running over the data plane's socket.
///
/// It does not advertise `grease_quic_bit` (RFC 9287): a peer allowed to
/// grease would send short-header packets with the fixed bit 0x40 clear,
/// whose first byte then looks like WireGuard or junk to the classifier.
pub fn endpoint(socket: UdpSocket, inbox: Arc<QuicInbox>) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    config.grease_quic_bit(false);
    quinn::Endpoint::new_with_abstract_socket(
        config,
        None,
        Arc::new(SharedUdp::new(socket, inbox)),
        Arc::new(quinn::TokioRuntime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_refused_send_is_a_lost_datagram_not_an_error() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Broadcast without SO_BROADCAST: the kernel refuses (EACCES) at once.
        let to: SocketAddr = "255.255.255.255:9".parse().unwrap();
        assert!(
            sock.send_to(b"x", to).is_err(),
            "the kernel should refuse this"
        );
        assert!(send_nonblocking(&sock, b"x", to).is_ok());
    }

    #[test]
    fn inbox_wakes_the_receiver_and_is_bounded() {
        let inbox = QuicInbox::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut b1 = [0u8; 64];
        let mut b2 = [0u8; 64];
        let mut meta = [RecvMeta::default(), RecvMeta::default()];
        {
            let mut bufs = [IoSliceMut::new(&mut b1), IoSliceMut::new(&mut b2)];
            assert!(inbox.poll_recv(&mut cx, &mut bufs, &mut meta).is_pending());
        }
        let from: SocketAddr = "192.0.2.1:7871".parse().unwrap();
        inbox.push(from, &[0xc0, 1, 2]);
        assert!(flag.0.load(Ordering::SeqCst), "push wakes quinn");
        inbox.push(from, &[0x40, 9]);
        {
            let mut bufs = [IoSliceMut::new(&mut b1), IoSliceMut::new(&mut b2)];
            match inbox.poll_recv(&mut cx, &mut bufs, &mut meta) {
                Poll::Ready(Ok(2)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((meta[0].len, meta[0].addr), (3, from));
        assert_eq!(&b1[..3], &[0xc0, 1, 2]);
        assert_eq!(&b2[..2], &[0x40, 9]);
        for _ in 0..INBOX_CAPACITY + 10 {
            inbox.push(from, &[0x40]);
        }
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 10);
    }
}
