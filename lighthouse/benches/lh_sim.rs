#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right
//! Lighthouse at scale: N simulated nodes join a real `lighthouse serve`
//! over QUIC on loopback and stay connected; then, round after round, one
//! more node joins (time until every connected node has heard of it) and is
//! removed with `lighthouse nodes remove` (time until every node has heard).
//! The Lighthouse's memory is read from /proc.
//!
//! Baseline, side by side in the same run: a bare quinn server with the same
//! TLS and transport settings that holds the same number of connections and,
//! when a probe connection says hello, sends one frame of the same kind to
//! every other connection. It has no registry, no store, no key proof and
//! sends nothing while the N nodes connect: the floor that QUIC itself sets
//! for "hold N nodes" and "tell everyone".
//!
//! ```sh
//! cargo bench -p lighthouse --bench lh_sim -- --nodes 10000 --lighthouse target/release/lighthouse
//! ```
//! (`tests/bench/lighthouse-bench.sh` runs exactly that.) Prints a Markdown
//! table; asserts nothing.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use flatnet_lighthouse::{
    cert::{server_tls, Identity},
    client::{client_config, join},
    fanout::{outbox, Outbox},
    proof::encode_key,
    server::{grow_buffers, read_frame},
    token::Token,
};
use flatnet_wire::lighthouse::{
    check_len, decode_body, encode_frame, LighthouseMsg, NodeMsg, PeerInfo, PROTOCOL_VERSION,
    SERVER_NAME,
};
use quinn::{Connection, RecvStream};
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

struct Opts {
    nodes: usize,
    rounds: usize,
    concurrency: usize,
    lighthouse: PathBuf,
}

fn parse_args() -> (Option<String>, Opts, Vec<String>) {
    let mut o = Opts {
        nodes: 10_000,
        rounds: 5,
        concurrency: 32,
        lighthouse: PathBuf::from("target/release/lighthouse"),
    };
    let mut mode = None;
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--nodes" => o.nodes = it.next().unwrap().parse().unwrap(),
            "--rounds" => o.rounds = it.next().unwrap().parse().unwrap(),
            "--concurrency" => o.concurrency = it.next().unwrap().parse().unwrap(),
            "--lighthouse" => o.lighthouse = it.next().unwrap().into(),
            "baseline-server" => mode = Some(a),
            other => rest.push(other.to_string()),
        }
    }
    (mode, o, rest)
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------- tracking

/// What the simulated nodes have heard, for the names and ids being watched.
#[derive(Default)]
struct Tracker {
    watching: AtomicBool,
    /// name → (how many nodes heard of it, when the last one did)
    joined: Mutex<HashMap<String, (usize, Instant)>>,
    removed: Mutex<HashMap<u32, (usize, Instant)>>,
    bytes: AtomicU64,
    disconnected: AtomicUsize,
}

impl Tracker {
    fn frame(&self, body: &[u8]) {
        self.bytes
            .fetch_add(body.len() as u64 + 4, Ordering::Relaxed);
        // Parsing every frame of a join storm would measure serde in the
        // simulator; only frames that arrive while a round is measured are
        // parsed.
        if !self.watching.load(Ordering::Relaxed) {
            return;
        }
        let Ok(LighthouseMsg::Peers { upsert, remove }) = decode_body::<LighthouseMsg>(body) else {
            return;
        };
        let now = Instant::now();
        if !upsert.is_empty() {
            let mut j = self.joined.lock().unwrap();
            for p in upsert {
                if let Some(e) = j.get_mut(&p.name) {
                    *e = (e.0 + 1, now);
                }
            }
        }
        if !remove.is_empty() {
            let mut r = self.removed.lock().unwrap();
            for id in remove {
                if let Some(e) = r.get_mut(&id) {
                    *e = (e.0 + 1, now);
                }
            }
        }
    }

    fn watch_join(&self, name: &str) {
        let t = Instant::now();
        self.joined.lock().unwrap().insert(name.into(), (0, t));
    }

    fn watch_remove(&self, id: u32) {
        let t = Instant::now();
        self.removed.lock().unwrap().insert(id, (0, t));
    }

    /// Wait until `want` nodes heard; the time the last one did.
    async fn wait(&self, f: impl Fn(&Tracker) -> (usize, Instant), want: usize) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (n, at) = f(self);
            if n >= want {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "only {n} of {want} nodes heard within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Wait until no frame has arrived for `quiet`.
    async fn settle(&self, quiet: Duration) {
        let mut last = self.bytes.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.bytes.load(Ordering::Relaxed);
            if now == last {
                return;
            }
            last = now;
        }
    }
}

/// Read raw frames from a node's control stream until it ends.
fn spawn_reader(mut recv: RecvStream, t: Arc<Tracker>) {
    tokio::spawn(async move {
        loop {
            let mut len = [0u8; 4];
            if recv.read_exact(&mut len).await.is_err() {
                break;
            }
            let Ok(n) = check_len(len) else { break };
            let mut body = vec![0u8; n];
            if recv.read_exact(&mut body).await.is_err() {
                break;
            }
            t.frame(&body);
        }
        t.disconnected.fetch_add(1, Ordering::Relaxed);
    });
}

/// Client sockets, 100 simulated nodes each, with the same large buffers
/// as the Lighthouse's.
fn endpoints(n: usize) -> Vec<quinn::Endpoint> {
    (0..n.div_ceil(100).max(1))
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            grow_buffers(&s);
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                s,
                Arc::new(quinn::TokioRuntime),
            )
            .unwrap()
        })
        .collect()
}

/// Joins that failed and were retried (after 1 s), as flatnetd would.
static RETRIES: AtomicUsize = AtomicUsize::new(0);
static JOINED: AtomicUsize = AtomicUsize::new(0);

fn progress(started: Instant) {
    let n = JOINED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_multiple_of(1000) {
        eprintln!(
            "  {n} connected after {:.1} s ({} retries)",
            started.elapsed().as_secs_f64(),
            RETRIES.load(Ordering::Relaxed)
        );
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The N nodes connected, before the measured rounds.
struct Phase {
    connect_secs: f64,
    lat: Vec<Duration>,
    /// The connections, kept open until the run ends.
    keep: Vec<(Connection, quinn::SendStream)>,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Phase {
    /// The run's result, once its rounds are done; closes the connections.
    fn finish(
        mut self,
        t: &Tracker,
        join_fanout: Vec<Duration>,
        remove_fanout: Vec<Duration>,
    ) -> Run {
        let dropped = t.disconnected.load(Ordering::Relaxed);
        drop(std::mem::take(&mut self.keep));
        Run {
            connect_secs: self.connect_secs,
            connect_p50: percentile(&mut self.lat, 0.5),
            connect_p99: percentile(&mut self.lat, 0.99),
            rss_kib: self.rss_kib,
            hwm_kib: self.hwm_kib,
            join_fanout,
            remove_fanout,
            dropped,
            retries: RETRIES.load(Ordering::Relaxed),
        }
    }
}

/// Connect `o.nodes` simulated nodes, `o.concurrency` at a time, each with
/// a reader feeding `t`, wait for the traffic to settle and read the
/// server's (`pid`) memory.
async fn connect_all<F, Fut>(o: &Opts, t: Arc<Tracker>, pid: u32, connect: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Connection, quinn::SendStream, RecvStream)> + Send,
{
    JOINED.store(0, Ordering::Relaxed);
    RETRIES.store(0, Ordering::Relaxed);
    let connect = Arc::new(connect);
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..o.nodes {
        let (connect, sem, t) = (connect.clone(), sem.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let t0 = Instant::now();
            let (conn, send, recv) = connect(i).await;
            let took = t0.elapsed();
            progress(started);
            spawn_reader(recv, t);
            (took, conn, send)
        }));
    }
    let mut lat = Vec::new();
    let mut keep = Vec::new();
    for task in tasks {
        let (d, conn, send) = task.await.unwrap();
        lat.push(d);
        keep.push((conn, send));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    t.settle(Duration::from_secs(2)).await;
    let (rss_kib, hwm_kib) = memory_kib(pid);
    Phase {
        connect_secs,
        lat,
        keep,
        rss_kib,
        hwm_kib,
    }
}

// -------------------------------------------------------------- lighthouse

struct Run {
    connect_secs: f64,
    connect_p50: Duration,
    connect_p99: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    join_fanout: Vec<Duration>,
    remove_fanout: Vec<Duration>,
    dropped: usize,
    retries: usize,
}

struct LhProc {
    child: Child,
    admin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LhProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lighthouse_cli(bin: &Path, admin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .env("LIGHTHOUSE_ADMIN_SOCKET", admin)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "lighthouse {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn start_lighthouse(bin: &Path, listen: SocketAddr) -> LhProc {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.sock");
    let child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &listen.to_string(),
            "--cidr",
            "10.0.0.0/8",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--admin-socket")
        .arg(&admin)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if admin.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    LhProc {
        child,
        admin,
        _dir: dir,
    }
}

async fn run_lighthouse(o: &Opts) -> Run {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let lh = start_lighthouse(&o.lighthouse, addr);
    let token = lighthouse_cli(
        &o.lighthouse,
        &lh.admin,
        &["token", "create", "--reusable", "--ttl", "2h"],
    );
    let fp = Token::decode(&token).unwrap().fingerprint;
    let eps = endpoints(o.nodes + o.rounds);
    let t = Arc::new(Tracker::default());
    let (eps_all, fp1, token1) = (eps.clone(), fp.clone(), token.clone());

    // Phase 1: N nodes join, `concurrency` at a time, and stay connected.
    let phase = connect_all(o, t.clone(), lh.child.id(), move |i| {
        let (ep, fp, token) = (
            eps_all[i % eps_all.len()].clone(),
            fp1.clone(),
            token1.clone(),
        );
        async move {
            let secret = StaticSecret::random_from_rng(OsRng);
            let lan: SocketAddr = format!("192.168.{}.{}:51820", i / 250 % 250, i % 250 + 1)
                .parse()
                .unwrap();
            loop {
                let name = format!("sim-{i}");
                match join(
                    &ep,
                    addr,
                    &fp,
                    &secret,
                    &name,
                    Some(token.clone()),
                    vec![lan],
                )
                .await
                {
                    Ok(j) => break (j.conn, j.send, j.recv),
                    Err(e) => {
                        let n = RETRIES.fetch_add(1, Ordering::Relaxed);
                        assert!(n < 1000, "too many failed joins; last: node {i}: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    })
    .await;

    // Phase 2: rounds of one more node joining, then being removed.
    let mut join_fanout = Vec::new();
    let mut remove_fanout = Vec::new();
    t.watching.store(true, Ordering::Relaxed);
    for r in 0..o.rounds {
        let name = format!("probe-{r}");
        t.watch_join(&name);
        let t0 = Instant::now();
        let secret = StaticSecret::random_from_rng(OsRng);
        let j = join(
            &eps[r % eps.len()],
            addr,
            &fp,
            &secret,
            &name,
            Some(token.clone()),
            vec![],
        )
        .await
        .unwrap();
        let last = t.wait(|t| t.joined.lock().unwrap()[&name], o.nodes).await;
        join_fanout.push(last - t0);
        let id = j.node_id;
        t.watch_remove(id);
        let t0 = Instant::now();
        lighthouse_cli(&o.lighthouse, &lh.admin, &["nodes", "remove", &name]);
        let last = t.wait(|t| t.removed.lock().unwrap()[&id], o.nodes).await;
        remove_fanout.push(last - t0);
        drop(j);
        t.settle(Duration::from_millis(300)).await;
    }
    phase.finish(&t, join_fanout, remove_fanout)
}

// ---------------------------------------------------------------- baseline

/// The bare server: on each hello, one `Peers` frame to everyone else.
async fn baseline_server(listen: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::load_or_create(dir.path()).unwrap();
    println!("{}", id.fingerprint());
    let tls = server_tls(&id).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut tc = quinn::TransportConfig::default();
    tc.max_idle_timeout(Some(Duration::from_secs(30).try_into().unwrap()));
    tc.max_concurrent_uni_streams(0u32.into());
    tc.max_concurrent_bidi_streams(1u32.into());
    tc.datagram_receive_buffer_size(Some(4 << 20));
    sc.transport_config(Arc::new(tc));
    let ep = quinn::Endpoint::server(sc, listen).unwrap();
    let all: Arc<Mutex<Vec<(usize, Outbox)>>> = Arc::default();
    let mut next = 0usize;
    while let Some(inc) = ep.accept().await {
        next += 1;
        let (me, all) = (next, all.clone());
        tokio::spawn(async move {
            let Ok(conn) = inc.await else { return };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let Ok(NodeMsg::Hello {
                name, public_key, ..
            }) = read_frame(&mut recv).await
            else {
                return;
            };
            let (out, mut rx) = outbox();
            let probe = name.starts_with("probe-");
            let info = PeerInfo {
                node_id: me as u32,
                name,
                public_key,
                subnet: "10.0.1.0/24".parse().unwrap(),
                observed: Some(conn.remote_address()),
                local_addrs: vec![],
                online: true,
            };
            let frame = Bytes::from(
                encode_frame(&LighthouseMsg::Peers {
                    upsert: vec![info],
                    remove: vec![],
                })
                .unwrap(),
            );
            {
                // Only the measured rounds broadcast: while the N nodes
                // connect, the baseline does nothing but hold connections.
                let mut a = all.lock().unwrap();
                if probe {
                    for (_, o) in a.iter() {
                        let _ = o.push(frame.clone());
                    }
                }
                a.push((me, out));
            }
            while let Some(f) = rx.recv().await {
                if send.write_chunk(f).await.is_err() {
                    break;
                }
            }
            all.lock().unwrap().retain(|(i, _)| *i != me);
        });
    }
}

async fn baseline_connect(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    fp: &str,
    name: String,
) -> (Connection, quinn::SendStream, RecvStream) {
    let conn = ep
        .connect_with(client_config(fp).unwrap(), addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let secret = StaticSecret::random_from_rng(OsRng);
    let hello = NodeMsg::Hello {
        version: PROTOCOL_VERSION,
        name,
        public_key: encode_key(&PublicKey::from(&secret)),
        token: None,
        local_addrs: vec![],
    };
    send.write_all(&encode_frame(&hello).unwrap())
        .await
        .unwrap();
    (conn, send, recv)
}

async fn run_baseline(o: &Opts) -> Run {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["baseline-server", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fp = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    let eps = endpoints(o.nodes + o.rounds);
    let t = Arc::new(Tracker::default());
    let (eps_all, fp1) = (eps.clone(), fp.clone());
    let phase = connect_all(o, t.clone(), child.id(), move |i| {
        let (ep, fp) = (eps_all[i % eps_all.len()].clone(), fp1.clone());
        async move { baseline_connect(&ep, addr, &fp, format!("sim-{i}")).await }
    })
    .await;
    let mut join_fanout = Vec::new();
    t.watching.store(true, Ordering::Relaxed);
    for r in 0..o.rounds {
        let name = format!("probe-{r}");
        t.watch_join(&name);
        let t0 = Instant::now();
        let c = baseline_connect(&eps[r % eps.len()], addr, &fp, name.clone()).await;
        let last = t.wait(|t| t.joined.lock().unwrap()[&name], o.nodes).await;
        join_fanout.push(last - t0);
        drop(c);
        t.settle(Duration::from_millis(300)).await;
    }
    let run = phase.finish(&t, join_fanout, vec![]);
    let _ = child.kill();
    let _ = child.wait();
    run
}

// -------------------------------------------------------------------- main

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn main() {
    let (mode, o, rest) = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if mode.is_some() {
        let listen: SocketAddr = rest.first().expect("listen address").parse().unwrap();
        rt.block_on(baseline_server(listen));
        return;
    }
    assert!(
        o.lighthouse.exists(),
        "{} missing: cargo build --release first",
        o.lighthouse.display()
    );
    eprintln!("lighthouse: {} nodes joining ...", o.nodes);
    let lh = rt.block_on(run_lighthouse(&o));
    eprintln!("baseline: {} connections ...", o.nodes);
    let base = rt.block_on(run_baseline(&o));
    let (mut lj, mut bj, mut lr) = (
        lh.join_fanout.clone(),
        base.join_fanout.clone(),
        lh.remove_fanout.clone(),
    );
    let (lj50, bj50) = (percentile(&mut lj, 0.5), percentile(&mut bj, 0.5));
    let (ljmax, bjmax) = (percentile(&mut lj, 1.0), percentile(&mut bj, 1.0));
    let (lr50, lrmax) = (percentile(&mut lr, 0.5), percentile(&mut lr, 1.0));
    let f = |d: Duration| d.as_secs_f64();
    println!(
        "\n{} simulated nodes, {} rounds, loopback, {} cores\n",
        o.nodes,
        o.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| metric | Lighthouse | bare quinn fan-out | Lighthouse / bare |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| {} nodes connected in (s) | {:.1} | {:.1} | {} |",
        o.nodes,
        lh.connect_secs,
        base.connect_secs,
        ratio(lh.connect_secs, base.connect_secs)
    );
    println!(
        "| connect (join) p50 / p99 (ms) | {} / {} | {} / {} | {} |",
        ms(lh.connect_p50),
        ms(lh.connect_p99),
        ms(base.connect_p50),
        ms(base.connect_p99),
        ratio(f(lh.connect_p50), f(base.connect_p50))
    );
    println!(
        "| server RSS after connect (MiB) | {:.1} | {:.1} | {} |",
        lh.rss_kib as f64 / 1024.0,
        base.rss_kib as f64 / 1024.0,
        ratio(lh.rss_kib as f64, base.rss_kib as f64)
    );
    println!(
        "| server peak RSS (MiB) | {:.1} | {:.1} | {} |",
        lh.hwm_kib as f64 / 1024.0,
        base.hwm_kib as f64 / 1024.0,
        ratio(lh.hwm_kib as f64, base.hwm_kib as f64)
    );
    println!(
        "| RSS per node (KiB) | {:.1} | {:.1} | |",
        lh.rss_kib as f64 / o.nodes as f64,
        base.rss_kib as f64 / o.nodes as f64
    );
    println!(
        "| new node known to all, median / max (ms) | {} / {} | {} / {} | {} |",
        ms(lj50),
        ms(ljmax),
        ms(bj50),
        ms(bjmax),
        ratio(f(lj50), f(bj50))
    );
    println!(
        "| removal known to all, median / max (ms) | {} / {} | - | |",
        ms(lr50),
        ms(lrmax)
    );
    println!(
        "| joins retried (failed, tried again after 1 s) | {} | {} | |",
        lh.retries, base.retries
    );
    println!(
        "| nodes disconnected during the run | {} | {} | |",
        lh.dropped, base.dropped
    );
}
