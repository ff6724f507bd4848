#![allow(clippy::unwrap_used)] // a benchmark harness: a failed unwrap is a failed run
//! Fan-out with one Lighthouse vs two on etcd (not a test; asserts only
//! that every node heard). Three set-ups are built side by side, each with
//! N simulated nodes held connected at once:
//!
//! - `one (redb)`: one Lighthouse, its registry on its own disk;
//! - `one (etcd)`: one Lighthouse with its registry on etcd (what etcd
//!   alone costs);
//! - `two (etcd)`: two Lighthouses on one etcd, every node with a session
//!   to each, as flatnetd keeps them.
//!
//! Then, in interleaved rounds, a probe node joins and is removed; the
//! time until every node has heard (on any of its sessions) is measured.
//! With two, the probe joins at one Lighthouse and is removed at the other,
//! so both changes cross etcd to reach half the sessions.
//!
//! tests/bench/lighthouse-ha-bench.sh [NODES] [ROUNDS]

#[path = "common/mod.rs"]
mod common;

use common::{client_endpoint, free_port, lighthouse_cli as cli};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    client::{join, JoinError, Joined},
    server::read_frame,
    token::Token,
};
use flatnet_wire::lighthouse::{LhErrorCode, LighthouseMsg};
use rand_core::OsRng;
use x25519_dalek::StaticSecret;

struct Opts {
    nodes: usize,
    rounds: usize,
    lighthouse: PathBuf,
}

fn opts() -> Opts {
    let mut o = Opts {
        nodes: 1000,
        rounds: 10,
        lighthouse: "target/release/lighthouse".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => o.nodes = it.next().unwrap().parse().unwrap(),
            "--rounds" => o.rounds = it.next().unwrap().parse().unwrap(),
            "--lighthouse" => o.lighthouse = it.next().unwrap().into(),
            _ => {}
        }
    }
    o
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcd(dir: &Path) -> (Proc, String) {
    let (c, p) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "b", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &format!("b={peer}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd: apt-get install etcd-server");
    while std::net::TcpStream::connect(("127.0.0.1", c)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), url)
}

struct Lh {
    _proc: Proc,
    pid: u32,
    addr: SocketAddr,
    admin: PathBuf,
    fp: String,
}

fn lighthouse(o: &Opts, dir: &Path, name: &str, etcd: Option<(&str, &str)>) -> Lh {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new(&o.lighthouse);
    cmd.args(["serve", "--listen", &addr.to_string(), "--public-addr"])
        .arg(addr.to_string())
        .args([
            "--cidr",
            "10.0.0.0/8",
            "--netcheck-listen",
            "off",
            "--tcp-listen",
            "off",
        ])
        .arg("--state-dir")
        .arg(dir.join(name))
        .arg("--admin-socket")
        .arg(&admin);
    if let Some((url, prefix)) = etcd {
        cmd.args(["--etcd", url, "--etcd-prefix", prefix]);
    }
    let child = cmd
        .env("FLATNET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    for _ in 0..400 {
        if admin.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let t = cli(&o.lighthouse, &admin, &["token", "create", "--ttl", "1h"]);
    let fp = Token::decode(&t).unwrap().fingerprint;
    Lh {
        _proc: Proc(child),
        pid,
        addr,
        admin,
        fp,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One measured change: who has heard of it yet.
struct Round {
    name: String,
    id: Option<u32>,
    heard: Vec<AtomicBool>,
    count: AtomicUsize,
    last: Mutex<Instant>,
}

type Current = Arc<Mutex<Option<Arc<Round>>>>;

fn reader(i: usize, mut j: Joined, cur: Current) {
    tokio::spawn(async move {
        let _keep = (j.conn.clone(), j.send);
        while let Ok(m) = read_frame::<LighthouseMsg, _>(&mut j.recv).await {
            let LighthouseMsg::Peers { upsert, remove, .. } = m else {
                continue;
            };
            let Some(r) = cur.lock().unwrap().clone() else {
                continue;
            };
            let hit = match r.id {
                None => upsert.iter().any(|p| p.name == r.name),
                Some(id) => remove.contains(&id),
            };
            if hit && !r.heard[i].swap(true, Ordering::Relaxed) {
                r.count.fetch_add(1, Ordering::Relaxed);
                *r.last.lock().unwrap() = Instant::now();
            }
        }
    });
}

/// Client sockets, 100 nodes each, on their own loopback addresses.
fn endpoint(k: usize) -> quinn::Endpoint {
    client_endpoint(std::net::Ipv4Addr::new(
        127,
        2,
        (k / 250) as u8,
        (k % 250 + 1) as u8,
    ))
}

async fn session(
    ep: &quinn::Endpoint,
    lh: &Lh,
    key: &StaticSecret,
    name: &str,
    token: Option<String>,
) -> Joined {
    loop {
        match join(ep, lh.addr, &lh.fp, key, name, token.clone(), vec![]).await {
            Ok(j) => return j,
            // The other Lighthouse has not seen the join yet, or too many
            // handshakes at once: as flatnetd, try again.
            Err(JoinError::Refused {
                code: LhErrorCode::BadToken,
                ..
            })
            | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A set-up: its Lighthouses and N nodes connected to each of them.
struct Setup {
    label: &'static str,
    lhs: Vec<Lh>,
    cur: Current,
    nodes: usize,
    eps: Vec<quinn::Endpoint>,
}

async fn setup(o: &Opts, label: &'static str, lhs: Vec<Lh>, base: usize) -> Setup {
    let cur: Current = Arc::new(Mutex::new(None));
    let eps: Vec<quinn::Endpoint> = (0..o.nodes.div_ceil(100))
        .map(|k| endpoint(base + k))
        .collect();
    let token = cli(
        &o.lighthouse,
        &lhs[0].admin,
        &["token", "create", "--reusable", "--ttl", "2h"],
    );
    let lhs = Arc::new(lhs);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..o.nodes {
        let (lhs, cur, sem, token) = (lhs.clone(), cur.clone(), sem.clone(), token.clone());
        let ep = eps[i / 100].clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            let key = StaticSecret::random_from_rng(OsRng);
            let name = format!("n{i}");
            for (k, lh) in lhs.iter().enumerate() {
                let t = (k == 0).then(|| token.clone());
                let j = session(&ep, lh, &key, &name, t).await;
                reader(i, j, cur.clone());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "  {label}: {} nodes connected in {:.1} s",
        o.nodes,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    Setup {
        label,
        lhs: Arc::try_unwrap(lhs).ok().unwrap(),
        cur,
        nodes: o.nodes,
        eps,
    }
}

impl Setup {
    /// From `start` until every node has heard of `r`.
    async fn measure(&self, r: Arc<Round>, start: Instant) -> Duration {
        let deadline = start + Duration::from_secs(60);
        while r.count.load(Ordering::Relaxed) < self.nodes {
            assert!(
                Instant::now() < deadline,
                "{}: only {} of {} nodes heard within 60 s",
                self.label,
                r.count.load(Ordering::Relaxed),
                self.nodes
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let last = *r.last.lock().unwrap();
        last - start
    }

    /// A probe joins at one Lighthouse and is removed at the other (or
    /// the same, with one): (join fan-out, removal fan-out).
    async fn round(&self, o: &Opts, n: usize) -> (Duration, Duration) {
        let name = format!("probe{n}");
        let at = n % self.lhs.len();
        let other = (n + 1) % self.lhs.len();
        let round = |id| {
            Arc::new(Round {
                name: name.clone(),
                id,
                heard: (0..self.nodes).map(|_| AtomicBool::new(false)).collect(),
                count: AtomicUsize::new(0),
                last: Mutex::new(Instant::now()),
            })
        };
        let r = round(None);
        *self.cur.lock().unwrap() = Some(r.clone());
        let token = cli(&o.lighthouse, &self.lhs[at].admin, &["token", "create"]);
        let key = StaticSecret::random_from_rng(OsRng);
        let t0 = Instant::now();
        let probe = session(&self.eps[0], &self.lhs[at], &key, &name, Some(token)).await;
        let joined = self.measure(r, t0).await;
        let r = round(Some(probe.node_id));
        *self.cur.lock().unwrap() = Some(r.clone());
        drop(probe);
        let t0 = Instant::now();
        cli(
            &o.lighthouse,
            &self.lhs[other].admin,
            &["nodes", "remove", &name],
        );
        let removed = self.measure(r, t0).await;
        *self.cur.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (joined, removed)
    }
}

fn stats(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

fn main() {
    let o = opts();
    assert!(
        o.lighthouse.exists(),
        "{} missing: cargo build --release first",
        o.lighthouse.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_etcd, url) = etcd(dir.path());
        eprintln!("connecting {} nodes to each set-up", o.nodes);
        let a = setup(
            &o,
            "one (redb)",
            vec![lighthouse(&o, dir.path(), "a", None)],
            0,
        )
        .await;
        let b = setup(
            &o,
            "one (etcd)",
            vec![lighthouse(&o, dir.path(), "b", Some((&url, "/b/")))],
            50,
        )
        .await;
        let c = setup(
            &o,
            "two (etcd)",
            vec![
                lighthouse(&o, dir.path(), "c1", Some((&url, "/c/"))),
                lighthouse(&o, dir.path(), "c2", Some((&url, "/c/"))),
            ],
            100,
        )
        .await;
        let all = [&a, &b, &c];
        let mut joins = vec![Vec::new(); 3];
        let mut removes = vec![Vec::new(); 3];
        for n in 0..o.rounds {
            // Interleaved: each round visits every set-up, in turn.
            for (k, s) in all.iter().enumerate() {
                let (j, r) = s.round(&o, n).await;
                joins[k].push(j);
                removes[k].push(r);
            }
            eprintln!("  round {} of {}", n + 1, o.rounds);
        }
        let (base_j, _, _) = stats(&mut joins[0].clone());
        let (base_r, _, _) = stats(&mut removes[0].clone());
        println!(
            "\n### Fan-out, {} nodes, {} interleaved rounds\n",
            o.nodes, o.rounds
        );
        println!("| set-up | join fan-out median ms (min–max) | ratio | removal fan-out median ms (min–max) | ratio | Lighthouse RSS MiB |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (k, s) in all.iter().enumerate() {
            let (jm, jlo, jhi) = stats(&mut joins[k]);
            let (rm, rlo, rhi) = stats(&mut removes[k]);
            let rss: Vec<String> = s
                .lhs
                .iter()
                .map(|l| format!("{:.0}", rss_kib(l.pid) as f64 / 1024.0))
                .collect();
            println!(
                "| {} | {jm:.1} ({jlo:.1}–{jhi:.1}) | {:.2}x | {rm:.1} ({rlo:.1}–{rhi:.1}) | {:.2}x | {} |",
                s.label,
                jm / base_j,
                rm / base_r,
                rss.join(" + ")
            );
        }
    });
}
