#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test
//! The Lighthouse server over real QUIC on loopback: joins, peer fan-out,
//! hostile input, removal, relay and punching.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flatnet_lighthouse::{
    admin::{handle, AdminRequest},
    client::{authenticate, client_config, connect, join, JoinError, Joined},
    link::Link,
    proof::{answer, encode_key},
    server::{read_frame, write_frame, Lighthouse},
};
use flatnet_wire::lighthouse::{
    relay_decode, relay_encode, LhErrorCode, LighthouseMsg, NodeMsg, SyncPoint, PROTOCOL_VERSION,
    SERVER_NAME,
};
use rand_core::OsRng;
use tokio::time::timeout;
use x25519_dalek::{PublicKey, StaticSecret};

struct Lab {
    _dir: tempfile::TempDir,
    lh: Arc<Lighthouse>,
    addr: SocketAddr,
    client: quinn::Endpoint,
    server: quinn::Endpoint,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    lab_in(dir).await
}

async fn lab_in(dir: tempfile::TempDir) -> Lab {
    let lh = Lighthouse::open(
        dir.path(),
        "10.87.0.0/16".parse().unwrap(),
        24,
        "127.0.0.1:0".into(),
    )
    .unwrap();
    let ep = lh.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(lh.clone().serve(ep.clone()));
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    Lab {
        _dir: dir,
        lh,
        addr,
        client,
        server: ep,
    }
}

impl Lab {
    /// A QUIC connection to the Lighthouse and its first stream, with no
    /// handshake sent yet (tests write their own, often wrong, frames).
    async fn raw_stream(&self, fp: &str) -> (quinn::SendStream, quinn::RecvStream) {
        let conn = self
            .client
            .connect_with(client_config(fp).unwrap(), self.addr, SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        conn.open_bi().await.unwrap()
    }

    fn token(&self, ttl: Option<u64>, reusable: bool) -> String {
        let v = handle(
            &self.lh,
            AdminRequest::TokenCreate {
                ttl_secs: ttl,
                reusable,
            },
        )
        .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    async fn join(
        &self,
        name: &str,
        secret: &StaticSecret,
        token: Option<String>,
    ) -> Result<Joined, JoinError> {
        join(
            &self.client,
            self.addr,
            &self.lh.identity.fingerprint(),
            secret,
            name,
            token,
            vec!["192.168.5.10:51820".parse().unwrap()],
        )
        .await
    }

    fn node_count(&self) -> usize {
        self.lh.view(|r| r.nodes().count())
    }
}

/// Stop a Lighthouse completely (its database is single-process), as
/// `lighthouse serve` does on SIGTERM; give back its state dir.
async fn stop(lab: Lab) -> tempfile::TempDir {
    let Lab {
        _dir,
        lh,
        client,
        server,
        ..
    } = lab;
    lh.save_presence();
    client.close(0u32.into(), b"");
    server.close(0u32.into(), b"");
    server.wait_idle().await;
    let weak = Arc::downgrade(&lh);
    drop(lh);
    for _ in 0..50 {
        if weak.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        weak.strong_count(),
        0,
        "sessions must end when the endpoint closes"
    );
    _dir
}

fn key() -> StaticSecret {
    StaticSecret::random_from_rng(OsRng)
}

async fn next_msg(j: &mut Joined) -> LighthouseMsg {
    timeout(Duration::from_secs(5), read_frame(&mut j.recv))
        .await
        .expect("no message within 5 s")
        .unwrap()
}

/// Wait for a Peers message matching `f`, skipping others.
async fn wait_peers(j: &mut Joined, f: impl Fn(&LighthouseMsg) -> bool) -> LighthouseMsg {
    loop {
        let m = next_msg(j).await;
        if f(&m) {
            return m;
        }
    }
}

#[tokio::test]
async fn nodes_join_get_subnets_and_see_each_other() {
    let lab = lab().await;
    let t = lab.token(None, true);
    let mut a = lab.join("a", &key(), Some(t.clone())).await.unwrap();
    assert_eq!(a.subnet.to_string(), "10.87.1.0/24");
    assert!(a.peers.is_empty());
    assert_eq!(a.observed.ip().to_string(), "127.0.0.1");
    let b = lab.join("b", &key(), Some(t)).await.unwrap();
    assert_eq!(b.subnet.to_string(), "10.87.2.0/24");
    assert_eq!(b.peers.len(), 1);
    assert_eq!(b.peers[0].name, "a");
    assert!(b.peers[0].online);
    let m = wait_peers(&mut a, |m| matches!(m, LighthouseMsg::Peers { upsert, .. } if upsert.iter().any(|p| p.name == "b"))).await;
    let LighthouseMsg::Peers { upsert, .. } = m else {
        unreachable!()
    };
    assert_eq!(upsert[0].subnet.to_string(), "10.87.2.0/24");
    assert_eq!(
        upsert[0].local_addrs,
        vec!["192.168.5.10:51820".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_and_nothing_is_stored() {
    let lab = lab().await;
    let refused = |r: Result<Joined, JoinError>| match r {
        Err(JoinError::Refused { code, message }) => (code, message),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("joined"),
    };
    let (c, _) = refused(lab.join("a", &key(), None).await);
    assert_eq!(c, LhErrorCode::BadToken);
    let (c, m) = refused(lab.join("a", &key(), Some("flatnet1_garbage".into())).await);
    assert_eq!(c, LhErrorCode::BadToken, "{m}");
    // A well-formed token this Lighthouse never issued.
    let foreign =
        flatnet_lighthouse::token::Token::generate("x:1", &lab.lh.identity.fingerprint()).encode();
    let (_, m) = refused(lab.join("a", &key(), Some(foreign)).await);
    assert!(m.contains("unknown"), "{m}");
    // Expired.
    let t = lab.token(Some(0), false);
    let (_, m) = refused(lab.join("a", &key(), Some(t)).await);
    assert!(m.contains("expired"), "{m}");
    // Revoked.
    let t = lab.token(None, false);
    let id = flatnet_lighthouse::token::Token::decode(&t).unwrap().id();
    handle(&lab.lh, AdminRequest::TokenRevoke { id }).unwrap();
    let (_, m) = refused(lab.join("a", &key(), Some(t)).await);
    assert!(m.contains("revoked"), "{m}");
    // Single use.
    let t = lab.token(None, false);
    lab.join("a", &key(), Some(t.clone())).await.unwrap();
    let (_, m) = refused(lab.join("b", &key(), Some(t)).await);
    assert!(m.contains("already used"), "{m}");
    assert_eq!(lab.node_count(), 1);
}

#[tokio::test]
async fn a_node_cannot_claim_another_nodes_key_or_name() {
    let lab = lab().await;
    let t = lab.token(None, true);
    let victim = key();
    lab.join("victim", &victim, Some(t.clone())).await.unwrap();
    // Claim the victim's public key, but prove with our own secret.
    let conn = lab
        .client
        .connect_with(
            client_config(&lab.lh.identity.fingerprint()).unwrap(),
            lab.addr,
            SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &NodeMsg::Hello {
            version: 1,
            name: "victim".into(),
            public_key: encode_key(&PublicKey::from(&victim)),
            token: Some(t.clone()),
            local_addrs: vec![],
            since: None,
        },
    )
    .await
    .unwrap();
    let LighthouseMsg::Challenge { nonce, server_key } = read_frame(&mut recv).await.unwrap()
    else {
        panic!()
    };
    let mac = answer(&key(), &nonce, &server_key).unwrap();
    write_frame(&mut send, &NodeMsg::Proof { mac })
        .await
        .unwrap();
    let m: LighthouseMsg = read_frame(&mut recv).await.unwrap();
    assert!(
        matches!(
            m,
            LighthouseMsg::Error {
                code: LhErrorCode::BadProof,
                ..
            }
        ),
        "{m:?}"
    );
    // Its own key under the victim's name.
    match lab.join("victim", &key(), Some(t)).await {
        Err(JoinError::Refused {
            code: LhErrorCode::NameTaken,
            ..
        }) => {}
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(lab.node_count(), 1);
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let lab = lab().await;
    let fp = lab.lh.identity.fingerprint();
    for evil in [
        vec![0xff, 0xff, 0xff, 0xff],
        b"\x00\x00\x00\x05{{{{{".to_vec(),
        b"\x00\x00\x00\x15{\"type\":\"root_shell\"}".to_vec(),
    ] {
        let conn = lab
            .client
            .connect_with(client_config(&fp).unwrap(), lab.addr, SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&evil).await.unwrap();
        let m: Result<LighthouseMsg, String> =
            timeout(Duration::from_secs(5), read_frame(&mut recv))
                .await
                .unwrap();
        assert!(
            matches!(
                m,
                Ok(LighthouseMsg::Error {
                    code: LhErrorCode::Protocol,
                    ..
                })
            ),
            "{m:?}"
        );
        timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
    }
    // Hellos from a protocol the Lighthouse does not speak: refused with
    // `Version` and which side to upgrade.
    for (version, want) in [
        (0, "upgrade flatnetd on this node"),
        (PROTOCOL_VERSION + 1, "upgrade the Lighthouse first"),
    ] {
        let (mut send, mut recv) = lab.raw_stream(&fp).await;
        let hello = NodeMsg::Hello {
            version,
            name: "old".into(),
            public_key: encode_key(&PublicKey::from(&key())),
            token: Some(lab.token(None, false)),
            local_addrs: vec![],
            since: None,
        };
        write_frame(&mut send, &hello).await.unwrap();
        let m: LighthouseMsg = read_frame(&mut recv).await.unwrap();
        let LighthouseMsg::Error {
            code: LhErrorCode::Version,
            message,
        } = m
        else {
            panic!("protocol {version} not refused with Version: {m:?}")
        };
        assert!(message.contains(want), "{message}");
    }
    // A hello whose key is not a key.
    let (mut send, mut recv) = lab.raw_stream(&fp).await;
    write_frame(
        &mut send,
        &NodeMsg::Hello {
            version: 1,
            name: "x".into(),
            public_key: "nope".into(),
            token: None,
            local_addrs: vec![],
            since: None,
        },
    )
    .await
    .unwrap();
    let m: LighthouseMsg = read_frame(&mut recv).await.unwrap();
    assert!(matches!(
        m,
        LighthouseMsg::Error {
            code: LhErrorCode::Protocol,
            ..
        }
    ));
    // Still serving.
    let t = lab.token(None, false);
    lab.join("ok", &key(), Some(t)).await.unwrap();
    assert_eq!(lab.node_count(), 1);
}

#[tokio::test]
async fn wrong_certificate_fingerprint_is_refused_by_the_node() {
    let lab = lab().await;
    let r = join(
        &lab.client,
        lab.addr,
        &"00".repeat(32),
        &key(),
        "a",
        None,
        vec![],
    )
    .await;
    assert!(matches!(r, Err(JoinError::Connect(_))), "{:?}", r.err());
}

#[tokio::test]
async fn removal_and_revocation_reach_other_nodes_within_5s() {
    let lab = lab().await;
    let t1 = lab.token(None, true);
    let t2 = lab.token(None, true);
    let mut a = lab.join("a", &key(), Some(t1.clone())).await.unwrap();
    let b = lab.join("b", &key(), Some(t1)).await.unwrap();
    let _c = lab.join("c", &key(), Some(t2.clone())).await.unwrap();
    handle(&lab.lh, AdminRequest::NodesRemove { name: "b".into() }).unwrap();
    let b_id = b.node_id;
    wait_peers(
        &mut a,
        |m| matches!(m, LighthouseMsg::Peers { remove, .. } if remove.contains(&b_id)),
    )
    .await;
    timeout(Duration::from_secs(5), b.conn.closed())
        .await
        .unwrap();
    let id2 = flatnet_lighthouse::token::Token::decode(&t2).unwrap().id();
    let v = handle(
        &lab.lh,
        AdminRequest::TokenRevoke {
            id: id2[..10].to_string(),
        },
    )
    .unwrap();
    assert_eq!(v["nodes_removed"], 1);
    wait_peers(
        &mut a,
        |m| matches!(m, LighthouseMsg::Peers { remove, .. } if !remove.is_empty()),
    )
    .await;
    assert_eq!(lab.node_count(), 1);
}

#[tokio::test]
async fn relay_forwards_opaque_datagrams_and_punch_reaches_both() {
    let lab = lab().await;
    let t = lab.token(None, true);
    let mut a = lab.join("a", &key(), Some(t.clone())).await.unwrap();
    let mut b = lab.join("b", &key(), Some(t)).await.unwrap();
    a.conn
        .send_datagram(relay_encode(b.node_id, b"\x04opaque-wireguard").into())
        .unwrap();
    let d = timeout(Duration::from_secs(5), b.conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        relay_decode(&d),
        Some((a.node_id, &b"\x04opaque-wireguard"[..]))
    );
    // To a node that does not exist: dropped, nothing breaks.
    a.conn
        .send_datagram(relay_encode(999, b"x").into())
        .unwrap();
    write_frame(&mut a.send, &NodeMsg::Punch { peer: b.node_id })
        .await
        .unwrap();
    let a_id = a.node_id;
    let b_id = b.node_id;
    let m = wait_peers(&mut a, |m| matches!(m, LighthouseMsg::PunchNow { .. })).await;
    assert!(
        matches!(m, LighthouseMsg::PunchNow { peer, ref endpoints } if peer == b_id && !endpoints.is_empty())
    );
    let m = wait_peers(&mut b, |m| matches!(m, LighthouseMsg::PunchNow { .. })).await;
    assert!(matches!(m, LighthouseMsg::PunchNow { peer, .. } if peer == a_id));
    write_frame(&mut a.send, &NodeMsg::Ping).await.unwrap();
    let m = wait_peers(&mut a, |m| matches!(m, LighthouseMsg::Pong { .. })).await;
    assert!(matches!(m, LighthouseMsg::Pong { observed, .. } if observed == a.observed));
}

#[tokio::test]
async fn subnets_are_stable_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = key();
    let lab1 = lab_in(dir).await;
    let t = lab1.token(None, true);
    lab1.join("filler", &key(), Some(t.clone())).await.unwrap();
    let first = lab1.join("a", &secret, Some(t)).await.unwrap().subnet;
    let fp = lab1.lh.identity.fingerprint();
    let _dir = stop(lab1).await;
    let lab2 = lab_in(_dir).await;
    assert_eq!(
        lab2.lh.identity.fingerprint(),
        fp,
        "certificate must persist (tokens pin it)"
    );
    let again = lab2.join("a", &secret, None).await.unwrap();
    assert_eq!(again.subnet, first);
}

#[tokio::test]
async fn many_nodes_one_round_of_frames_and_a_welcome_that_spans_frames() {
    use flatnet_lighthouse::{fanout::PEERS_PER_FRAME, server::now};
    let lab = lab().await;
    let t = lab.token(None, true);
    let mut watcher = lab.join("watcher", &key(), Some(t.clone())).await.unwrap();
    // 150 nodes registered in one registry mutation: one announcement round.
    let n = 150;
    lab.lh
        .mutate(|r| {
            let mut all = Vec::new();
            for i in 0..n {
                let k = encode_key(&PublicKey::from(&key()));
                let (id, ch) = r.admit(&format!("bulk-{i}"), &k, Some(&t), now()).unwrap();
                all.extend(ch);
                // Fat records (16 LAN addresses): the late joiner's peer list
                // is then far beyond one 64 KiB frame.
                let lan = (1..=16)
                    .map(|h| SocketAddr::from(([192, 168, 100, h], 51820)))
                    .collect();
                all.extend(r.connected(id, "198.51.100.7:40000".parse().unwrap(), lan));
            }
            ((), all)
        })
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut frames = 0;
    while seen.len() < n {
        let LighthouseMsg::Peers { upsert, remove, .. } = next_msg(&mut watcher).await else {
            panic!("expected Peers");
        };
        assert!(remove.is_empty());
        assert!(upsert.len() <= PEERS_PER_FRAME);
        assert!(
            upsert.iter().all(|p| p.name != "watcher"),
            "never told about itself"
        );
        seen.extend(upsert.into_iter().map(|p| p.name));
        frames += 1;
    }
    assert_eq!(
        frames,
        n.div_ceil(PEERS_PER_FRAME),
        "coalesced into full frames"
    );
    // Nothing else is pending for the watcher.
    assert!(timeout(
        Duration::from_millis(300),
        read_frame::<LighthouseMsg, _>(&mut watcher.recv)
    )
    .await
    .is_err());

    // A node joining now gets all 151 others (~100 KB), across frames.
    let late = lab.join("late", &key(), Some(t)).await.unwrap();
    assert_eq!(late.peers.len(), n + 1);
    let names: std::collections::BTreeSet<_> = late.peers.iter().map(|p| &p.name).collect();
    assert_eq!(names.len(), n + 1);
    assert!(names.contains(&"watcher".to_string()) && !names.contains(&"late".to_string()));
    // …and the watcher hears of it in one frame.
    let m = next_msg(&mut watcher).await;
    assert!(
        matches!(&m, LighthouseMsg::Peers { upsert, .. } if upsert.len() == 1 && upsert[0].name == "late"),
        "{m:?}"
    );
}

#[tokio::test]
async fn a_restarted_lighthouse_sends_reconnecting_nodes_only_what_changed() {
    use flatnet_lighthouse::server::now;
    let lab1 = lab_in(tempfile::tempdir().unwrap()).await;
    let t = lab1.token(None, true);
    // 150 members, connected as far as the registry knows.
    lab1.lh
        .mutate(|r| {
            let mut all = Vec::new();
            for i in 0..150u8 {
                let k = encode_key(&PublicKey::from(&key()));
                let (id, ch) = r.admit(&format!("bulk-{i}"), &k, Some(&t), now()).unwrap();
                all.extend(ch);
                let seen = SocketAddr::from(([198, 51, 100, i], 40000));
                all.extend(r.connected(id, seen, vec![]));
            }
            ((), all)
        })
        .unwrap();
    let a_key = key();
    let mut a = lab1.join("a", &a_key, Some(t.clone())).await.unwrap();
    assert!(!a.delta);
    assert_eq!(a.peers.len(), 150);
    let epoch = a.sync.unwrap().epoch;
    let b = lab1.join("b", &key(), Some(t.clone())).await.unwrap();
    // a hears of b; the round's last frame says how far a's list goes.
    let version = loop {
        if let LighthouseMsg::Peers {
            version: Some(v), ..
        } = next_msg(&mut a).await
        {
            break v;
        }
    };
    let since = SyncPoint { epoch, version };
    a.conn.close(0, b"");
    // While a is away: b is removed, a new node joins.
    handle(&lab1.lh, AdminRequest::NodesRemove { name: "b".into() }).unwrap();
    drop(b);
    let c = lab1.join("c", &key(), Some(t.clone())).await.unwrap();
    let c_id = c.node_id;
    drop(c);
    let dir = stop(lab1).await;

    // The Lighthouse restarts; a comes back with its point.
    let lab2 = lab_in(dir).await;
    let fp = lab2.lh.identity.fingerprint();
    let conn = connect(&lab2.client, lab2.addr, &fp).await.unwrap();
    let back = authenticate(Link::Quic(conn), &a_key, "a", None, vec![], Some(since))
        .await
        .unwrap();
    assert!(back.delta, "a delta, not the whole list");
    let got: Vec<&str> = back.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        got,
        vec!["c"],
        "only what changed: c joined (and went away)"
    );
    assert_eq!(back.removed.len(), 1, "b's removal");
    // The 150 others are presumed still online until they reconnect.
    assert!(
        lab2.lh
            .view(|r| r.nodes().filter(|n| r.is_online(n.id)).count())
            >= 150
    );
    assert!(back.sync.unwrap().version > version);
    assert_eq!(back.sync.unwrap().epoch, epoch);
    assert_ne!(c_id, back.removed[0]);

    // A point from another registry, or none: the whole list.
    let conn = connect(&lab2.client, lab2.addr, &fp).await.unwrap();
    let other = SyncPoint {
        epoch: epoch.wrapping_add(1),
        version,
    };
    let full = authenticate(Link::Quic(conn), &a_key, "a", None, vec![], Some(other))
        .await
        .unwrap();
    assert!(!full.delta);
    assert_eq!(full.peers.len(), 151);
    let text = flatnet_lighthouse::metrics::renderer(&lab2.lh)().unwrap();
    assert!(
        text.contains("flatnet_lighthouse_welcomes_total{kind=\"delta\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flatnet_lighthouse_welcomes_total{kind=\"full\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_node_over_tcp_joins_relays_to_a_quic_node_and_the_port_refuses_other_requests() {
    use flatnet_lighthouse::tcp;
    let lab = lab().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = l.local_addr().unwrap();
    tokio::spawn(lab.lh.clone().serve_tcp(l));
    let t = lab.token(None, true);
    let fp = lab.lh.identity.fingerprint();
    // A new node joins over TCP (TLS pinned, HTTP upgrade), with a token.
    let link = tcp::connect(tcp_addr, &fp).await.unwrap();
    assert_eq!(link.remote_address(), tcp_addr);
    let mut a = authenticate(Link::Tcp(link), &key(), "a", Some(t.clone()), vec![], None)
        .await
        .unwrap();
    assert_eq!(a.conn.transport(), "tcp");
    let mut b = lab.join("b", &key(), Some(t)).await.unwrap();
    assert_eq!(b.peers.len(), 1, "b sees a");
    // Relay both ways between the TCP node and the QUIC node (a node on
    // TCP sends pieces of at most TCP_RELAY_PIECE, which QUIC carries).
    let big = vec![7u8; flatnet_lighthouse::link::TCP_RELAY_PIECE - 4];
    a.conn
        .send_datagram(relay_encode(b.node_id, &big).into())
        .unwrap();
    let d = timeout(Duration::from_secs(5), b.conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relay_decode(&d), Some((a.node_id, &big[..])));
    b.conn
        .send_datagram(relay_encode(a.node_id, b"back").into())
        .unwrap();
    let d = timeout(Duration::from_secs(5), a.conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relay_decode(&d), Some((b.node_id, &b"back"[..])));
    // The control stream works both ways too.
    write_frame(&mut a.send, &NodeMsg::Ping).await.unwrap();
    let m = wait_peers(&mut a, |m| matches!(m, LighthouseMsg::Pong { .. })).await;
    assert!(matches!(m, LighthouseMsg::Pong { observed, .. } if observed.ip() == tcp_addr.ip()));
    // A wrong pin is refused by the node.
    let wrong = "00".repeat(32);
    assert!(tcp::connect(tcp_addr, &wrong).await.is_err());
    // Garbage instead of TLS: that connection ends, the Lighthouse serves on.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
        s.write_all(&[0x16, 3, 1, 0xff, 0xff, 1, 2, 3])
            .await
            .unwrap();
        s.write_all(&vec![0u8; 70_000]).await.ok();
    }
    write_frame(&mut b.send, &NodeMsg::Ping).await.unwrap();
    wait_peers(&mut b, |m| matches!(m, LighthouseMsg::Pong { .. })).await;
    // Closing the TCP node's link makes it offline for the others.
    a.conn.close(0, b"bye");
    let a_id = a.node_id;
    wait_peers(&mut b, |m| {
        matches!(m, LighthouseMsg::Peers { upsert, .. } if upsert.iter().any(|p| p.node_id == a_id && !p.online))
    })
    .await;
}
