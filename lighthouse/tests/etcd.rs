#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test
//! Two Lighthouses sharing one registry in a real etcd (Debian's
//! `etcd-server`, started here on loopback): joins racing at both get
//! distinct subnets, a single-use token admits exactly one node, a
//! removal at one reaches a node connected to the other, and each knows
//! which Lighthouse a node is connected to.
//!
//! Needs `/usr/bin/etcd` (`apt-get install etcd-server`; `scripts/deps.sh`
//! installs it).

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    admin::{handle, AdminRequest},
    client::{join, JoinError, Joined},
    etcd::EtcdConfig,
    server::{read_frame, Lighthouse},
    token::Token,
};
use flatnet_wire::lighthouse::{lighthouse_id, LhErrorCode, LighthouseMsg};
use rand_core::OsRng;
use tokio::time::timeout;
use x25519_dalek::StaticSecret;

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Etcd {
    assert!(
        Path::new("/usr/bin/etcd").exists(),
        "these tests need etcd: apt-get install etcd-server (scripts/deps.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(Instant::now() < until, "etcd did not start within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Etcd {
        child,
        url,
        _dir: dir,
    }
}

struct Lh {
    lh: Arc<Lighthouse>,
    addr: SocketAddr,
    client: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

async fn lighthouse(e: &Etcd) -> Lh {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EtcdConfig {
        endpoints: vec![e.url.clone()],
        prefix: "/flatnet-test/".into(),
    };
    let lh = Lighthouse::open_with(
        dir.path(),
        "10.87.0.0/16".parse().unwrap(),
        24,
        "127.0.0.1:7871".into(),
        Some(&cfg),
    )
    .unwrap();
    let ep = lh.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(lh.clone().serve(ep));
    Lh {
        lh,
        addr,
        client: quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap(),
        _dir: dir,
    }
}

impl Lh {
    fn token(&self, reusable: bool) -> String {
        let v = handle(
            &self.lh,
            AdminRequest::TokenCreate {
                ttl_secs: None,
                reusable,
            },
        )
        .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    fn join(
        &self,
        name: &str,
        token: Option<String>,
    ) -> impl std::future::Future<Output = Result<Joined, JoinError>> + Send + 'static {
        let (client, addr, fp, name) = (
            self.client.clone(),
            self.addr,
            self.lh.identity.fingerprint(),
            name.to_string(),
        );
        async move {
            join(
                &client,
                addr,
                &fp,
                &StaticSecret::random_from_rng(OsRng),
                &name,
                token,
                vec![],
            )
            .await
        }
    }

    fn nodes(&self) -> Vec<(u32, String, String)> {
        let mut v: Vec<_> = self.lh.view(|r| {
            r.nodes()
                .map(|n| (n.id, n.name.clone(), n.subnet.to_string()))
                .collect()
        });
        v.sort();
        v
    }
}

/// Wait up to 5 s for `f`.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < until, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_at_two_lighthouses_get_distinct_ids_and_subnets() {
    let e = etcd();
    let (a, b) = (lighthouse(&e).await, lighthouse(&e).await);
    let t = a.token(true);
    // The token pins both Lighthouses, the one that made it first.
    let tok = Token::decode(&t).unwrap();
    assert_eq!(tok.fingerprint, a.lh.identity.fingerprint());
    assert_eq!(tok.also.len(), 1);
    assert_eq!(tok.also[0].fingerprint, b.lh.identity.fingerprint());
    // The token made at a is good at b.
    let mut joins = Vec::new();
    for i in 0..12 {
        let at = if i % 2 == 0 { &a } else { &b };
        joins.push(at.join(&format!("n{i}"), Some(t.clone())));
    }
    // Spawned: every join is in flight at once.
    let handles: Vec<_> = joins.into_iter().map(tokio::spawn).collect();
    let mut got = Vec::new();
    for h in handles {
        got.push(h.await.unwrap().unwrap());
    }
    let mut subnets: Vec<String> = got.iter().map(|j| j.subnet.to_string()).collect();
    let mut ids: Vec<u32> = got.iter().map(|j| j.node_id).collect();
    subnets.sort();
    subnets.dedup();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(subnets.len(), 12, "every node got its own subnet");
    assert_eq!(ids.len(), 12, "every node got its own id");
    eventually("both Lighthouses hold the same 12 nodes", || {
        a.nodes().len() == 12 && a.nodes() == b.nodes()
    })
    .await;
    // The Welcome lists both Lighthouses.
    assert_eq!(got[0].lighthouses.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_admits_exactly_one_node_across_lighthouses() {
    let e = etcd();
    let (a, b) = (lighthouse(&e).await, lighthouse(&e).await);
    for round in 0..5 {
        let t = a.token(false);
        let (x, y) = tokio::join!(
            a.join(&format!("x{round}"), Some(t.clone())),
            b.join(&format!("y{round}"), Some(t.clone()))
        );
        let ok = [x.is_ok(), y.is_ok()];
        assert_eq!(
            ok.iter().filter(|o| **o).count(),
            1,
            "round {round}: {ok:?}"
        );
        let refused = if x.is_ok() { y.err() } else { x.err() };
        match refused {
            Some(JoinError::Refused { code, message }) => {
                assert_eq!(code, LhErrorCode::BadToken);
                assert!(message.contains("already used"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    eventually("5 nodes at both", || {
        a.nodes().len() == 5 && a.nodes() == b.nodes()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_at_one_lighthouse_reaches_a_node_on_the_other_and_presence_is_shared() {
    let e = etcd();
    let (a, b) = (lighthouse(&e).await, lighthouse(&e).await);
    let t = a.token(true);
    let mut n1 = a.join("n1", Some(t.clone())).await.unwrap();
    let mut n2 = b.join("n2", Some(t)).await.unwrap();
    // b learns that n1 is online at a, and says so in `via`.
    let a_id = lighthouse_id(&a.lh.identity.fingerprint());
    let b_id = lighthouse_id(&b.lh.identity.fingerprint());
    eventually("b sees n1 online via a", || {
        b.lh.view(|r| r.peer_info(n1.node_id))
            .is_some_and(|p| p.online && p.via == vec![a_id.clone()])
    })
    .await;
    // n2 (at b) is told that n1 is reachable through a.
    let seen = timeout(Duration::from_secs(5), async {
        loop {
            if let LighthouseMsg::Peers { upsert, .. } = read_frame(&mut n2.recv).await.unwrap() {
                if upsert
                    .iter()
                    .any(|p| p.name == "n1" && p.via.contains(&a_id))
                {
                    return;
                }
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "n2 was not told n1 is at a within 5 s");
    assert!(b
        .lh
        .view(|r| r.peer_info(n2.node_id))
        .is_some_and(|p| p.via == vec![b_id.clone()]));
    // Removed at b; n1's session at a ends with "removed".
    handle(&b.lh, AdminRequest::NodesRemove { name: "n1".into() }).unwrap();
    let removed = timeout(Duration::from_secs(5), async {
        loop {
            match read_frame::<LighthouseMsg, _>(&mut n1.recv).await {
                Ok(LighthouseMsg::Error { code, .. }) => return code,
                Ok(_) => {}
                Err(e) => panic!("session ended without a reason: {e}"),
            }
        }
    })
    .await
    .expect("n1 was not told within 5 s");
    assert_eq!(removed, LhErrorCode::Removed);
    eventually("n1 gone from a", || a.nodes().len() == 1).await;
    // And its key no longer joins anywhere without a token.
    drop(n1);
}

/// The next `Peers` upsert of a member named `name` that a node reads.
async fn member_upsert(j: &mut Joined, name: &str) -> flatnet_wire::lighthouse::PeerInfo {
    timeout(Duration::from_secs(5), async {
        loop {
            if let LighthouseMsg::Peers { upsert, .. } = read_frame(&mut j.recv).await.unwrap() {
                if let Some(p) = upsert.into_iter().find(|p| p.name == name) {
                    return p;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no record of member {name} within 5 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_policies_made_at_one_lighthouse_reach_nodes_on_the_other() {
    use flatnet_lighthouse::members::MemberRequest;
    let e = etcd();
    let (a, b) = (lighthouse(&e).await, lighthouse(&e).await);
    let t = a.token(true);
    let _hub = a.join("hub", Some(t.clone())).await.unwrap();
    let mut n = b.join("n", Some(t)).await.unwrap();
    let m = |r: MemberRequest| handle(&a.lh, AdminRequest::Member(r));
    m(MemberRequest::PolicySet {
        name: "web".into(),
        allow: vec!["forgejo:80".into()],
    })
    .unwrap();
    eventually("b has the hub", || b.nodes().len() == 2).await;
    let v = m(MemberRequest::Add {
        name: "alice".into(),
        public_key: "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=".into(),
        hub: "hub".into(),
        policy: "web".into(),
        expires_in_secs: None,
        endpoint: None,
    })
    .unwrap();
    assert_eq!(v["address"], "10.87.255.1/32");
    let p = member_upsert(&mut n, "alice").await;
    let info = p.member.expect("announced as a member");
    assert_eq!(info.allow, vec!["forgejo:80".parse().unwrap()]);
    // A policy changed at b reaches the node through b, rules resolved.
    handle(
        &b.lh,
        AdminRequest::Member(MemberRequest::PolicySet {
            name: "web".into(),
            allow: vec!["forgejo:80".into(), "node:hub".into()],
        }),
    )
    .unwrap();
    let p = member_upsert(&mut n, "alice").await;
    assert_eq!(p.member.unwrap().allow.len(), 2);
    eventually("a has b's policy", || {
        a.lh.view(|r| r.policy("web").is_some_and(|p| p.allow.len() == 2))
    })
    .await;
    // Removed at b: gone at a too.
    handle(
        &b.lh,
        AdminRequest::Member(MemberRequest::Remove {
            name: "alice".into(),
        }),
    )
    .unwrap();
    eventually("alice gone at a", || {
        a.lh.view(|r| r.members().count() == 0)
    })
    .await;
}

/// Two registries on one etcd, driven by hand so that one is stale: a
/// join at b with a token a revoked a moment ago must not be stored
/// (only the token's revision tells, no node or id clashes), and once b
/// has caught up the join is refused.
#[test]
fn a_join_on_a_stale_copy_of_a_revoked_token_is_a_conflict_not_a_member() {
    use flatnet_lighthouse::{
        backend::Backend, etcd::EtcdStore, etcd::Meta, registry::Registry, store::Store,
        store::StoreError,
    };
    let e = etcd();
    let cfg = EtcdConfig {
        endpoints: vec![e.url.clone()],
        prefix: "/stale/".into(),
    };
    let open = |dir: &tempfile::TempDir, me: &str| {
        let mirror = Store::open(&dir.path().join("m.redb")).unwrap();
        let pin = flatnet_wire::lighthouse::LighthousePin {
            address: format!("{me}:1"),
            fingerprint: me.repeat(32),
        };
        let meta = Meta {
            cidr: "10.87.0.0/16".parse().unwrap(),
            host_prefix: 24,
        };
        let mut r = Registry::new(meta.cidr, 24);
        r.set_me(me);
        let mut s = EtcdStore::open(mirror, &cfg, me, pin, meta).unwrap();
        s.absorb(&mut r).unwrap();
        (r, s)
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut ra, mut sa) = open(&da, "aa");
    let (mut rb, mut sb) = open(&db, "bb");
    let t = Token::generate("aa:1", &"aa".repeat(32));
    let ch = ra.add_token(&t, 1, None, true);
    sa.commit(&ch, ra.next_id(), ra.log()).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while rb.tokens().count() == 0 {
        assert!(Instant::now() < until, "b never saw the token");
        sb.absorb(&mut rb).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    // a revokes; b has not seen it yet.
    let ch = ra.revoke_token(&t.id()).unwrap();
    sa.commit(&ch, ra.next_id(), ra.log()).unwrap();
    let (_, ch) = rb.admit("late", "KL", Some(&t.encode()), 2).unwrap();
    match sb.commit(&ch, rb.next_id(), rb.log()) {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Caught up (as the server does: back to the copy, then absorb), b
    // refuses the token.
    let (nodes, tokens, next) = sb.load().unwrap();
    rb.reload(nodes, tokens, next);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        sb.absorb(&mut rb).unwrap();
        if rb.tokens().any(|t| t.revoked) {
            break;
        }
        assert!(Instant::now() < until, "b never saw the revocation");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = rb.admit("late", "KL", Some(&t.encode()), 3).unwrap_err();
    assert!(refused.message.contains("revoked"), "{}", refused.message);
}
