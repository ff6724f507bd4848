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
    server::read_frame,
    token::Token,
};
#[path = "common/mod.rs"]
mod common;
use common::lighthouse_cli;
#[path = "lh_sim/storm.rs"]
mod storm;

use storm::{Node, Storm};

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
    /// Handshakes in flight during a restart storm.
    storm_concurrency: usize,
    /// Restart storms of each kind (full, delta), alternating.
    storms: usize,
    /// Nodes that keep a full copy of their list, checked after storms.
    sample: usize,
    /// An older build, for the storm before delta sync.
    before: Option<PathBuf>,
}

fn parse_args() -> (Option<String>, Opts, Vec<String>) {
    let mut o = Opts {
        nodes: 10_000,
        rounds: 5,
        concurrency: 32,
        lighthouse: PathBuf::from("target/release/lighthouse"),
        storm_concurrency: 256,
        storms: 1,
        sample: 50,
        before: None,
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
            "--storm-concurrency" => o.storm_concurrency = it.next().unwrap().parse().unwrap(),
            "--storms" => o.storms = it.next().unwrap().parse().unwrap(),
            "--sample" => o.sample = it.next().unwrap().parse().unwrap(),
            "--before" => o.before = Some(it.next().unwrap().into()),
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
        let Ok(LighthouseMsg::Peers { upsert, remove, .. }) = decode_body::<LighthouseMsg>(body)
        else {
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

/// The next raw frame body of a control stream; none when it ended.
async fn next_raw<R: tokio::io::AsyncRead + Unpin>(recv: &mut R) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.ok()?;
    let n = check_len(len).ok()?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Read raw frames from a node's control stream until it ends.
fn spawn_reader(mut recv: RecvStream, t: Arc<Tracker>) {
    tokio::spawn(async move {
        while let Some(body) = next_raw(&mut recv).await {
            t.frame(&body);
        }
        t.disconnected.fetch_add(1, Ordering::Relaxed);
    });
}

/// Client sockets, 100 simulated nodes each, with the same large buffers
/// as the Lighthouse's, each on its own loopback address (127.1.x.y): the
/// Lighthouse caps handshakes in flight per source address, as it would
/// see real hosts.
fn endpoints(n: usize) -> Vec<quinn::Endpoint> {
    (0..n.div_ceil(100).max(1))
        .map(|k| {
            common::client_endpoint(std::net::Ipv4Addr::new(
                127,
                1,
                (k / 250) as u8,
                (k % 250 + 1) as u8,
            ))
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
            probe_join: Vec::new(),
        }
    }
}

/// Connect `o.nodes` simulated nodes, `o.concurrency` at a time, each with
/// a reader feeding `t`, wait for the traffic to settle and read the
/// server's (`pid`) memory.
async fn connect_all<F, Fut>(o: &Opts, t: Arc<Tracker>, pid: u32, connect: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<(Connection, quinn::SendStream)>> + Send,
{
    JOINED.store(0, Ordering::Relaxed);
    RETRIES.store(0, Ordering::Relaxed);
    let connect = Arc::new(connect);
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..o.nodes {
        let (connect, sem) = (connect.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let t0 = Instant::now();
            let held = connect(i).await;
            let took = t0.elapsed();
            progress(started);
            (took, held)
        }));
    }
    let mut lat = Vec::new();
    let mut keep = Vec::new();
    for task in tasks {
        let (d, held) = task.await.unwrap();
        lat.push(d);
        keep.extend(held);
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
    /// With N nodes connected: how long a new node's join took (Welcome
    /// with the whole list).
    probe_join: Vec<Duration>,
}

struct LhProc {
    child: Child,
    bin: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
    admin: PathBuf,
    dir: tempfile::TempDir,
    /// Whether this build has `--metrics-listen` (older ones may not).
    with_metrics: bool,
}

impl Drop for LhProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_lighthouse(
    bin: &Path,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    dir: &Path,
    admin: &Path,
) -> Child {
    let _ = std::fs::remove_file(admin);
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        &listen.to_string(),
        "--cidr",
        "10.0.0.0/8",
    ])
    .arg("--state-dir")
    .arg(dir.join("state"))
    .arg("--admin-socket")
    .arg(admin)
    .args(["--netcheck-listen", "off"]);
    if let Some(m) = metrics {
        cmd.args(["--metrics-listen", &m.to_string()]);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if admin.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child
}

fn start_lighthouse(bin: &Path, listen: SocketAddr, with_metrics: bool) -> LhProc {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.sock");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let child = spawn_lighthouse(
        bin,
        listen,
        with_metrics.then_some(metrics),
        dir.path(),
        &admin,
    );
    LhProc {
        child,
        bin: bin.to_path_buf(),
        listen,
        metrics,
        admin,
        dir,
        with_metrics,
    }
}

impl LhProc {
    /// Stop it as `systemctl restart` does (SIGTERM, wait) and start it
    /// again on the same state dir and port; returns when the new process
    /// was spawned.
    fn restart(&mut self) -> Instant {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let began = Instant::now();
        self.child = spawn_lighthouse(
            &self.bin,
            self.listen,
            self.with_metrics.then_some(self.metrics),
            self.dir.path(),
            &self.admin,
        );
        began
    }

    /// One counter's value (summed over its labels matching `label`).
    fn metric(&self, name: &str, label: &str) -> Option<u64> {
        use std::io::{Read, Write};
        if !self.with_metrics {
            return None;
        }
        let mut s = std::net::TcpStream::connect(self.metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with(name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }

    fn nodes(&self) -> Vec<PeerInfo> {
        let out = lighthouse_cli(&self.bin, &self.admin, &["nodes", "list", "--json"]);
        serde_json::from_str(&out).unwrap()
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The simulated nodes, `sample` of them keeping a full copy of their list.
fn make_nodes(o: &Opts, eps: &[quinn::Endpoint], t: &Arc<Tracker>) -> Vec<Arc<Node>> {
    let every = (o.nodes / o.sample.max(1)).max(1);
    (0..o.nodes)
        .map(|i| {
            Arc::new(Node {
                name: format!("sim-{i}"),
                secret: StaticSecret::random_from_rng(OsRng),
                lan: format!("192.168.{}.{}:51820", i / 250 % 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
                ep: eps[i % eps.len()].clone(),
                since: Mutex::new(None),
                book: (i % every == 0).then(|| Mutex::new(Default::default())),
                conn: Mutex::new(None),
                tracker: t.clone(),
            })
        })
        .collect()
}

/// Phase 1 for a Lighthouse: every node joins with the token and stays.
async fn join_all(
    o: &Opts,
    lh: &LhProc,
    nodes: &[Arc<Node>],
    t: &Arc<Tracker>,
    fp: &str,
    token: &str,
) -> Phase {
    let (nodes1, fp1, token1, addr) =
        (nodes.to_vec(), fp.to_string(), token.to_string(), lh.listen);
    connect_all(o, t.clone(), lh.child.id(), move |i| {
        let (n, fp, token) = (nodes1[i].clone(), fp1.clone(), token1.clone());
        async move {
            loop {
                match join(
                    &n.ep,
                    addr,
                    &fp,
                    &n.secret,
                    &n.name,
                    Some(token.clone()),
                    vec![n.lan],
                )
                .await
                {
                    // The node holds its connection and stream.
                    Ok(j) => break n.start(j),
                    Err(e) => {
                        let r = RETRIES.fetch_add(1, Ordering::Relaxed);
                        assert!(r < 1000, "too many failed joins; last: {}: {e}", n.name);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    })
    .await
}
async fn run_lighthouse(o: &Opts, bin: &Path, storms: &[bool]) -> (Run, Vec<(bool, Storm)>) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut lh = start_lighthouse(bin, addr, true);
    let token = lighthouse_cli(
        bin,
        &lh.admin,
        &["token", "create", "--reusable", "--ttl", "2h"],
    );
    let fp = Token::decode(&token).unwrap().fingerprint;
    let eps = endpoints(o.nodes + o.rounds);
    let t = Arc::new(Tracker::default());
    let nodes = make_nodes(o, &eps, &t);

    // Phase 1: N nodes join, `concurrency` at a time, and stay connected.
    let phase = join_all(o, &lh, &nodes, &t, &fp, &token).await;

    // Phase 2: rounds of one more node joining (how long its join takes,
    // and until everyone heard), then being removed.
    let mut join_fanout = Vec::new();
    let mut remove_fanout = Vec::new();
    let mut joins = Vec::new();
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
        joins.push(t0.elapsed());
        let last = t.wait(|t| t.joined.lock().unwrap()[&name], o.nodes).await;
        join_fanout.push(last - t0);
        let id = j.node_id;
        t.watch_remove(id);
        let t0 = Instant::now();
        lighthouse_cli(bin, &lh.admin, &["nodes", "remove", &name]);
        let last = t.wait(|t| t.removed.lock().unwrap()[&id], o.nodes).await;
        remove_fanout.push(last - t0);
        drop(j);
        t.settle(Duration::from_millis(300)).await;
    }
    t.watching.store(false, Ordering::Relaxed);
    let mut run = phase.finish(&t, join_fanout, remove_fanout);
    run.probe_join = joins;

    // Phase 3: restart storms, each kind in turn.
    let mut out = Vec::new();
    for with_since in storms {
        let kind = if *with_since { "delta" } else { "full" };
        eprintln!("  restart storm ({kind}) ...");
        out.push((
            *with_since,
            restart_storm(o, &mut lh, &nodes, &t, &fp, *with_since).await,
        ));
    }
    storm::drop_all(&nodes);
    (run, out)
}

/// The storm before delta sync: an older `lighthouse` build, N nodes
/// joined, restarted, every node reconnecting for the whole list.
async fn run_before(o: &Opts, bin: &Path) -> Storm {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut lh = start_lighthouse(bin, addr, false);
    let token = lighthouse_cli(
        bin,
        &lh.admin,
        &["token", "create", "--reusable", "--ttl", "2h"],
    );
    let fp = Token::decode(&token).unwrap().fingerprint;
    let eps = endpoints(o.nodes);
    let t = Arc::new(Tracker::default());
    let nodes = make_nodes(o, &eps, &t);
    let _phase = join_all(o, &lh, &nodes, &t, &fp, &token).await;
    t.settle(Duration::from_secs(2)).await;
    eprintln!("  restart storm (older build) ...");
    let st = restart_storm(o, &mut lh, &nodes, &t, &fp, false).await;
    storm::drop_all(&nodes);
    st
}

/// Restart the Lighthouse and have every node reconnect (`with_since`: by
/// delta), then check the sampled lists.
async fn restart_storm(
    o: &Opts,
    lh: &mut LhProc,
    nodes: &[Arc<Node>],
    t: &Tracker,
    fp: &str,
    with_since: bool,
) -> Storm {
    storm::ANNOUNCED.store(0, Ordering::Relaxed);
    let began = lh.restart();
    let (_, mut lat, deltas, retries) =
        storm::reconnect_all(nodes, lh.listen, fp, with_since, o.storm_concurrency).await;
    let secs = began.elapsed().as_secs_f64();
    t.settle(Duration::from_secs(2)).await;
    let welcome_bytes = lh
        .metric("flatnet_lighthouse_welcome_bytes_total", "")
        .unwrap_or(0);
    let (correct, sampled) = storm::check_sample(nodes, &lh.nodes());
    eprintln!("  ... {secs:.1} s");
    Storm {
        secs,
        p50: percentile(&mut lat, 0.5),
        p99: percentile(&mut lat, 0.99),
        deltas,
        welcome_bytes,
        announced_bytes: storm::ANNOUNCED.load(Ordering::Relaxed),
        retries,
        correct,
        sampled,
    }
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
                via: vec![],
                member: None,
            };
            let frame = Bytes::from(
                encode_frame(&LighthouseMsg::Peers {
                    upsert: vec![info],
                    remove: vec![],
                    version: None,
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
        since: None,
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
    let t1 = t.clone();
    let phase = connect_all(o, t.clone(), child.id(), move |i| {
        let (ep, fp, t) = (eps_all[i % eps_all.len()].clone(), fp1.clone(), t1.clone());
        async move {
            let (c, s, r) = baseline_connect(&ep, addr, &fp, format!("sim-{i}")).await;
            spawn_reader(r, t);
            Some((c, s))
        }
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
    let kinds: Vec<bool> = (0..o.storms).flat_map(|_| [false, true]).collect();
    let (lh, storms) = rt.block_on(run_lighthouse(&o, &o.lighthouse, &kinds));
    let before = o.before.as_ref().map(|b| {
        eprintln!("older build {}: {} nodes joining ...", b.display(), o.nodes);
        rt.block_on(run_before(&o, b))
    });
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
    let mut pj = lh.probe_join.clone();
    println!(
        "\nA new node's join with {} nodes connected ({} joins): p50 {} ms, p99 {} ms, max {} ms\n",
        o.nodes,
        pj.len(),
        ms(percentile(&mut pj, 0.5)),
        ms(percentile(&mut pj, 0.99)),
        ms(percentile(&mut pj, 1.0)),
    );
    println!(
        "Restart storm: the Lighthouse restarted (SIGTERM, same state), {} nodes reconnect, {} handshakes in flight\n",
        o.nodes, o.storm_concurrency
    );
    println!("| storm | all complete (s) | reconnect p50 / p99 (ms) | deltas | Welcome bytes | announced bytes | retries | sampled lists correct |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let row = |label: &str, st: &Storm| {
        let wb = if st.welcome_bytes > 0 {
            format!("{:.1} MB", st.welcome_bytes as f64 / 1e6)
        } else {
            "-".into()
        };
        println!(
            "| {label} | {:.1} | {} / {} | {} | {wb} | {:.1} MB | {} | {}/{} |",
            st.secs,
            ms(st.p50),
            ms(st.p99),
            st.deltas,
            st.announced_bytes as f64 / 1e6,
            st.retries,
            st.correct,
            st.sampled
        );
    };
    if let Some(b) = &before {
        row("older build, whole list", b);
    }
    for (with_since, st) in &storms {
        row(
            if *with_since {
                "this build, delta"
            } else {
                "this build, whole list (no sync point)"
            },
            st,
        );
    }
}
