#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test
//! The node side against a real Lighthouse on loopback: joining with a
//! token (and the refusals), and QUIC running over a socket that is shared
//! with WireGuard traffic, demultiplexed by the data plane's classifier.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{mpsc, Arc},
    time::Duration,
};

use flatnet_lighthouse::{
    client::join,
    server::{now, Lighthouse},
    token::Token,
};
use flatnet_wire::lighthouse::{relay_decode, relay_encode};
use flatnetd::{
    dataplane::{
        classify::{classify, Datagram},
        Identity,
    },
    lighthouse::{
        join_with_token,
        socket::{endpoint, QuicInbox},
        LhError,
    },
};

struct Lab {
    _dir: tempfile::TempDir,
    lh: Arc<Lighthouse>,
    addr: SocketAddr,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let lh = Lighthouse::open(
        dir.path(),
        "10.87.0.0/16".parse().unwrap(),
        24,
        "unused".into(),
    )
    .unwrap();
    let ep = lh.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(lh.clone().serve(ep));
    Lab {
        _dir: dir,
        lh,
        addr,
    }
}

impl Lab {
    fn token(&self, ttl: Option<u64>, fingerprint: Option<&str>) -> (String, String) {
        let fp = fingerprint
            .map(str::to_string)
            .unwrap_or_else(|| self.lh.identity.fingerprint());
        let t = Token::generate(&self.addr.to_string(), &fp);
        self.lh
            .mutate(|r| ((), r.add_token(&t, now(), ttl, false)))
            .unwrap();
        (t.encode(), t.id())
    }
}

/// A socket shared like the data plane's: QUIC to the inbox, the rest
/// (WireGuard) to a channel.
fn shared_socket() -> (UdpSocket, Arc<QuicInbox>, mpsc::Receiver<Vec<u8>>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let inbox = Arc::new(QuicInbox::default());
    let (tx, rx) = mpsc::channel();
    let (r, i) = (s.try_clone().unwrap(), inbox.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = r.recv_from(&mut buf) {
            match classify(&buf[..n]) {
                Datagram::Quic => i.push(from, &buf[..n]),
                _ => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (s, inbox, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_token_allocates_a_subnet_and_refuses_bad_tokens() {
    let lab = lab().await;
    let a = Identity::generate().unwrap();
    let (tok, _) = lab.token(None, None);
    let st = join_with_token(&tok, &a, "h1", vec![]).await.unwrap();
    assert_eq!(st.subnet.to_string(), "10.87.1.0/24");
    assert_eq!(st.cidr.to_string(), "10.87.0.0/16");
    assert_eq!(st.address, lab.addr.to_string());
    assert_eq!(st.fingerprint, lab.lh.identity.fingerprint());

    // Single use: a second key cannot use it.
    let b = Identity::generate().unwrap();
    let e = join_with_token(&tok, &b, "h2", vec![]).await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");

    // Expired.
    let (old, _) = lab.token(Some(0), None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = join_with_token(&old, &b, "h2", vec![]).await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // Revoked.
    let (revoked, id) = lab.token(None, None);
    lab.lh
        .mutate(|r| ((), r.revoke_token(&id).unwrap()))
        .unwrap();
    let e = join_with_token(&revoked, &b, "h2", vec![])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");

    // A token pinning another certificate: TLS fails, clearly.
    let (wrong, _) = lab.token(None, Some(&"ab".repeat(32)));
    let e = join_with_token(&wrong, &b, "h2", vec![]).await.unwrap_err();
    assert!(
        matches!(e, LhError::Join(_)) && e.to_string().contains("certificate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_over_a_shared_socket_sees_its_address_and_relays() {
    let lab = lab().await;
    let (ka, kb) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (ta, _) = lab.token(None, None);
    let (tb, _) = lab.token(None, None);
    join_with_token(&ta, &ka, "a", vec![]).await.unwrap();
    join_with_token(&tb, &kb, "b", vec![]).await.unwrap();
    let fp = lab.lh.identity.fingerprint();

    let (sa, ia, wg_a) = shared_socket();
    let (sb, ib, _wg_b) = shared_socket();
    let ea = endpoint(sa.try_clone().unwrap(), ia).unwrap();
    let eb = endpoint(sb.try_clone().unwrap(), ib).unwrap();
    let ja = join(&ea, lab.addr, &fp, &ka.secret, "a", None, vec![])
        .await
        .unwrap();
    let jb = join(&eb, lab.addr, &fp, &kb.secret, "b", None, vec![])
        .await
        .unwrap();
    // The Lighthouse sees the shared socket itself.
    assert_eq!(ja.observed, sa.local_addr().unwrap());
    assert_eq!(jb.observed, sb.local_addr().unwrap());
    assert!(jb.peers.iter().any(|p| p.node_id == ja.node_id));

    // WireGuard datagrams on the same socket still reach the data plane.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wg = [
        4u8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25, 26, 27, 28,
    ];
    probe.send_to(&wg, sa.local_addr().unwrap()).unwrap();
    assert_eq!(
        wg_a.recv_timeout(Duration::from_secs(2)).unwrap(),
        wg.to_vec()
    );

    // Relay: a's datagram for b arrives at b tagged with a's id.
    ja.conn
        .send_datagram(relay_encode(jb.node_id, &wg).into())
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), jb.conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relay_decode(&d), Some((ja.node_id, &wg[..])));
}
