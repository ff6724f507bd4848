//! `flatnetd`: the Flatnet per-host daemon.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flatnetd::{
    api,
    config::{Config, WgBackendKind, DEFAULT_CONFIG},
    dataplane::{self, userspace::Userspace, Identity},
    hostnet::NftHostSetup,
    ipam::LeaseStore,
    lighthouse::{
        self as lh,
        socket::{InboxHandler, QuicInbox},
        state::{self, LhState},
        ClientParams, LhClient, LhError,
    },
    service::{HostSetup, NoHostSetup, Service},
};
use ipnet::Ipv4Net;
use tracing::{info, warn};

#[derive(Parser)]
#[command(version, about = "Flatnet per-host daemon")]
struct Args {
    /// Configuration file.
    #[arg(short, long, env = "FLATNETD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Do not touch host forwarding or nftables (for hosts where another
    /// tool owns them).
    #[arg(long)]
    no_host_setup: bool,
    /// Machine-readable output: `join`'s result, and any error (on
    /// stderr), as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Run in the background, for starts without systemd (WSL2's
    /// `[boot] command=`, a shell): exits 0 once the daemon serves, or 1
    /// with the reason it could not start. Logs go to --log-file.
    #[arg(long)]
    detach: bool,
    /// Append the log to this file instead of stderr (with --detach:
    /// default /var/log/flatnet/flatnetd.log).
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Join a Lighthouse with a token from `lighthouse token create`, then
    /// exit. Saves the Lighthouse address, its pinned certificate
    /// fingerprint and the allocated subnet in the state dir (never the
    /// token); start (or restart) flatnetd afterwards.
    Join {
        /// `flatnet1_…`
        token: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `--log-file` without `--detach`: stderr (the log, panics included) is
/// appended to the file.
fn redirect_stderr(f: &Path) -> anyhow::Result<()> {
    let file = flatnetd::detach::open_log(f)
        .with_context(|| format!("opening log file {}", f.display()))?;
    nix::unistd::dup2_stderr(&file).with_context(|| format!("logging to {}", f.display()))?;
    Ok(())
}

/// The state dir and this host's key pair, made on the first start. When
/// that fails (a full disk, a read-only file system), a state dir this call
/// made goes again, so the next start begins from nothing, not from half.
fn first_state(dir: &Path) -> anyhow::Result<Identity> {
    flatnet_wire::fs::or_remove_new_dir(dir, || {
        flatnet_wire::fs::create_private_dir(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        Ok(Identity::load_or_create(dir)?)
    })
}

/// `flatnetd join TOKEN`: one attempt; refusals and TLS errors are final.
/// Validate first, then act: the token and any earlier join are checked
/// before anything is written, the key pair lives in memory until the
/// Lighthouse has admitted this host, and a failure to store the result
/// takes back what this command created (state dir, key, state file).
fn join_cmd(config: &Config, token: &str, json: bool) -> anyhow::Result<()> {
    flatnet_lighthouse::token::Token::decode(token.trim())
        .map_err(|e| anyhow::anyhow!("invalid join token: {e}"))?;
    let dir = &config.state_dir;
    if let Some(st) = state::load(dir)? {
        bail!(
            "already joined {} as node {} with subnet {}; remove {} to join again",
            st.address,
            st.node_id,
            st.subnet,
            state::path(dir).display()
        );
    }
    let (identity, new_key) = match Identity::load(dir)? {
        Some(id) => (id, false),
        None => (
            Identity::generate().context("making a WireGuard key pair")?,
            true,
        ),
    };
    let st = join_remote(&runtime()?, config, &identity, token)?;
    store_join(dir, &identity, new_key, &st)?;
    if json {
        let v = serde_json::json!({
            "lighthouse": st.address, "node": config.node_name, "node_id": st.node_id,
            "subnet": st.subnet, "cidr": st.cidr, "peers": st.peers.len(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "joined {} as {} (node {}): subnet {} of {}, {} peer(s)",
        st.address,
        config.node_name,
        st.node_id,
        st.subnet,
        st.cidr,
        st.peers.len()
    );
    Ok(())
}

/// Save a successful join: the state dir (if new), the key (if new), the
/// state file, all or none of them.
fn store_join(dir: &Path, identity: &Identity, new_key: bool, st: &LhState) -> anyhow::Result<()> {
    flatnet_wire::fs::or_remove_new_dir(dir, || {
        let saved = flatnet_wire::fs::create_private_dir(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))
            .and_then(|()| {
                if new_key {
                    identity.save(dir)?;
                }
                Ok(())
            })
            .and_then(|()| Ok(state::save(dir, st)?));
        if saved.is_err() && new_key {
            let _ = std::fs::remove_file(dir.join(dataplane::keys::PRIVATE_KEY_FILE));
        }
        saved.context(
            "the Lighthouse admitted this host, but its state could not be stored; \
             the token is used up: create a new one and join again once the disk is fixed",
        )
    })
}

/// One join attempt with this host's current addresses; nothing is stored.
fn join_remote(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    identity: &Identity,
    token: &str,
) -> Result<LhState, LhError> {
    let local = lh::local_addrs(config.wireguard.listen_port, config.cidr);
    rt.block_on(lh::join_with_token(
        token,
        identity,
        &config.node_name,
        local,
    ))
}

/// [`join_remote`], then the state saved (the daemon's first start).
fn join_once(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    identity: &Identity,
    token: &str,
) -> Result<LhState, LhError> {
    let st = join_remote(rt, config, identity, token)?;
    state::save(&config.state_dir, &st)?;
    Ok(st)
}

/// The join token has done its job: take it out of the config file.
fn forget_token(path: &std::path::Path) {
    let note = "used to join the Lighthouse; flatnetd removed it (it is not needed again)";
    match flatnetd::token_file::forget(path, note) {
        Ok(true) => info!(
            config = %path.display(),
            "joined: the join token was removed from the config file, which other users may read"
        ),
        Ok(false) => {}
        Err(e) => warn!(
            config = %path.display(),
            "joined, but the join token could not be removed from the config file ({}); \
             delete the token line yourself",
            flatnet_wire::plain_error(&e)
        ),
    }
}

/// First start with `[lighthouse] token`: join before anything else (the
/// subnet comes from the Lighthouse). Network trouble is retried with
/// backoff; a refusal is fatal.
fn first_join(config: &Config, identity: &Identity, token: &str) -> anyhow::Result<LhState> {
    let rt = runtime()?;
    let mut backoff = lh::Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    loop {
        match join_once(&rt, config, identity, token) {
            Ok(st) => {
                info!(lighthouses = st.lighthouses().len(), node_id = st.node_id, subnet = %st.subnet, "joined");
                return Ok(st);
            }
            Err(e @ (LhError::Token(_) | LhError::State(_))) => return Err(e.into()),
            Err(LhError::Join(e @ flatnet_lighthouse::client::JoinError::Refused { .. })) => {
                return Err(e.into())
            }
            Err(e) => {
                let d = backoff.next(0.5);
                warn!("joining the Lighthouse: {e}; retrying in {d:?}");
                std::thread::sleep(d);
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    match flatnet_wire::cli::parse::<Args>("flatnetd") {
        Ok(args) => {
            let r = run(args);
            if let Err(e) = &r {
                // A detached start: the waiting parent prints it too.
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                flatnetd::detach::failed(&flatnet_wire::cli::line("flatnetd", e));
            }
            flatnet_wire::cli::exit("flatnetd", r)
        }
        Err(code) => code,
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    // Everything flatnetd creates (state, keys, database, socket) is for
    // root alone unless it says otherwise: no window where a file or the
    // socket is wider open than meant.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = Config::load(&path, explicit)?;
    if (args.detach || args.log_file.is_some()) && args.cmd.is_some() {
        bail!("--detach and --log-file are for running the daemon, not for `join`");
    }
    // The configuration is valid: only now fork or move the log.
    let log_file = args.log_file.clone().or_else(|| {
        args.detach
            .then(|| PathBuf::from(flatnetd::detach::DEFAULT_LOG_FILE))
    });
    if args.detach {
        let f = log_file
            .as_deref()
            .unwrap_or(Path::new(flatnetd::detach::DEFAULT_LOG_FILE));
        flatnetd::detach::detach(f)
            .with_context(|| format!("starting in the background with log {}", f.display()))?;
    } else if let Some(f) = &log_file {
        redirect_stderr(f)?;
    }
    let log = flatnet_wire::logging::init(config.log_format, &config.log_level)
        .map_err(anyhow::Error::msg)?;
    if let Some(Cmd::Join { token }) = &args.cmd {
        return join_cmd(&config, token, args.json);
    }
    let identity = first_state(&config.state_dir)?;
    // Before anything shared is touched (socket, leases, nftables).
    let _pid = flatnetd::pidfile::acquire(&config.state_dir)?;
    let lh_state = match state::load(&config.state_dir)? {
        Some(s) => Some(s),
        None => match config.lighthouse_token.clone() {
            Some(t) => {
                let st = first_join(&config, &identity, &t)?;
                forget_token(&path);
                Some(st)
            }
            None => None,
        },
    };
    let lh_net = lh_state.as_ref().map(|s| (s.cidr, s.subnet));
    if let Some((cidr, subnet)) = lh_net {
        config = config.with_lighthouse_subnet(cidr, subnet)?;
        if config.wireguard.backend != WgBackendKind::Userspace {
            bail!("a Lighthouse node needs backend = \"userspace\" (QUIC shares its UDP socket)");
        }
    }
    let db = config.state_dir.join("ipam.redb");
    let store = LeaseStore::open(&db).with_context(|| {
        format!(
            "opening lease database {} (is another flatnetd running?)",
            db.display()
        )
    })?;
    let host: Box<dyn HostSetup> = if args.no_host_setup {
        Box::new(NoHostSetup)
    } else {
        Box::new(NftHostSetup::default())
    };
    let service = Arc::new(Service::new(config.clone(), store, host));
    service.set_public_key(identity.public_base64());
    if let Err(e) = service.sync_host(true) {
        // Not fatal: retried on the next allocation and by the periodic repair.
        warn!("{}", e.message);
    }
    let mut client = None;
    match lh_state {
        Some(st) => {
            let inbox = Arc::new(QuicInbox::default());
            let us = Arc::new(
                Userspace::start(
                    &config,
                    identity.clone(),
                    Box::new(InboxHandler(inbox.clone())),
                )
                .context("starting the data plane")?,
            );
            service.set_overlay(us.clone());
            let c = LhClient::new(ClientParams {
                us: us.clone(),
                identity: identity.clone(),
                name: config.node_name.clone(),
                state_dir: config.state_dir.clone(),
                port: config.wireguard.listen_port,
                keepalive: config.wireguard.keepalive_secs,
                state: st,
                static_peers: config.peers.clone(),
                tcp: config.lighthouse_tcp.clone(),
            });
            let c2 = c.clone();
            service.set_lighthouse(Arc::new(move || c2.status()));
            let c3 = c.clone();
            service.set_punch(Arc::new(move |id| c3.punch_soon(id)));
            let c4 = c.clone();
            service.set_path_notes(Arc::new(move || c4.path_notes()));
            let (c5, us5, wg_port) = (c.clone(), us.clone(), config.wireguard.listen_port);
            // One netcheck at a time: each takes the data plane's tap.
            let one_at_a_time = std::sync::Mutex::new(());
            service.set_netcheck(Arc::new(move || {
                let _turn = one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
                use flatnetd::netcheck::{analyse, io::measure, Measured};
                let st = c5.status();
                let m = Measured {
                    lighthouse: st.address,
                    session: st.state,
                    observed_session: st.observed.and_then(|o| o.parse().ok()),
                    local_ips: flatnetd::ifaddrs::all()
                        .into_iter()
                        .map(|(_, a)| std::net::IpAddr::V4(a))
                        .collect(),
                    wg_port,
                    ..Measured::default()
                };
                let r = analyse(&measure(&us5, m));
                if r.nat != "unknown" {
                    c5.set_nat(&r.nat);
                }
                r
            }));
            client = Some((c, us, inbox));
        }
        None if config.wireguard.enabled => {
            let dp = dataplane::start(&config, &identity).context("starting the data plane")?;
            service.set_overlay(Arc::from(dp));
        }
        None => {}
    }

    let rt = runtime()?;
    rt.block_on(async move {
        let lhc = match client {
            Some((c, us, inbox)) => {
                let sock = us.socket().context("sharing the WireGuard socket")?;
                let ep = lh::socket::endpoint(sock, inbox).context("QUIC endpoint")?;
                tokio::spawn(c.clone().run(ep));
                tokio::spawn(c.clone().ticker());
                tokio::spawn(flatnetd::policy::run::run(
                    c.clone(),
                    us.clone(),
                    service.clone(),
                ));
                Some(c)
            }
            None => None,
        };
        let listener = api::unix::bind(&config.socket, config.socket_group.as_deref())
            .with_context(|| format!("binding {}", config.socket.display()))?;
        tokio::spawn(api::unix::serve(listener, service.clone()));
        if config.dns.enabled {
            start_dns(&config, &service)?;
        }
        tokio::spawn(flatnetd::reconcile::run(service.clone()));
        if config.wireguard.enabled && config.wireguard.backend == WgBackendKind::Userspace {
            tokio::spawn(dataplane::peer_routes::run(
                service.clone(),
                config.wireguard.interface.clone(),
                config.mtu,
            ));
        }
        if let Some(addr) = config.catalog_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding catalog listener {addr}"))?;
            info!(%addr, "serving catalog at /v1/catalog");
            tokio::spawn(api::catalog::serve(l, service.clone()));
        }
        if let Some(addr) = config.metrics_listen {
            let l = flatnet_wire::metrics_http::bind(addr)
                .await
                .map_err(anyhow::Error::msg)?;
            let render = flatnetd::metrics::renderer(flatnetd::metrics::registry(service.clone()));
            info!(%addr, "serving metrics at /metrics");
            tokio::spawn(flatnet_wire::metrics_http::serve(l, render));
        }
        // Everything is up: the socket answers, the data plane and the
        // host table are set up, DNS and the listeners are bound.
        info!(
            node = %config.node_name,
            subnet = %config.subnet,
            socket = %config.socket.display(),
            "flatnetd ready"
        );
        flatnet_wire::systemd::ready(&format!(
            "serving {} on {}",
            config.subnet,
            config.socket.display()
        ));
        flatnetd::detach::ready();
        if lhc.is_some() {
            // One netcheck soon after start, so status can name a symmetric
            // NAT as the reason a path is relayed without anyone asking.
            let svc = service.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let _ = tokio::task::spawn_blocking(move || {
                    svc.handle(flatnet_wire::Request::Netcheck)
                })
                .await;
            });
        }
        let svc = service.clone();
        tokio::spawn(flatnet_wire::systemd::watchdog(Arc::new(move || {
            flatnetd::health::check(&svc)
        })));
        let reload = Reload {
            path: &path,
            explicit,
            service: &service,
            identity: &identity,
            lh_net,
            lh: lhc.as_deref(),
            log: &log,
        };
        run_until_shutdown(&reload).await;
        flatnet_wire::systemd::stopping();
        info!("shutting down");
        let _ = std::fs::remove_file(&config.socket);
        anyhow::Ok(())
    })
}

/// Flatnet DNS on the gateway address: the server, and the peers' names.
fn start_dns(config: &Config, service: &Arc<Service>) -> anyhow::Result<()> {
    use flatnetd::dns::{
        server::{self, Acl, Server},
        upstream::Upstream,
        Dns,
    };
    let dns = Arc::new(
        Dns::new(config, flatnetd::unix_now())
            .map_err(anyhow::Error::msg)?
            .with_state_file(config.state_dir.join(flatnetd::dns::SEEN_FILE)),
    );
    service
        .set_dns(dns.clone())
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let addr = std::net::SocketAddrV4::new(config.gateway(), 53);
    let (udp, tcp) = server::bind(addr).with_context(|| {
        format!(
            "binding Flatnet DNS on {addr} (UDP and TCP): another DNS server may hold port 53 \
             on every address; make it listen on its own addresses only, or set \
             [dns] enabled = false in the config"
        )
    })?;
    let upstream = Arc::new(Upstream::new(
        config.dns.resolv_conf.clone(),
        vec![std::net::IpAddr::V4(config.gateway())],
    ));
    let acl = Acl {
        cidr: config.cidr,
        allow: config.dns.allow.clone(),
    };
    info!(%addr, domain = %config.dns.domain, "serving Flatnet DNS");
    if let Some(lan) = &config.dns.lan {
        let lan_addr = std::net::SocketAddrV4::new(config.gateway(), lan.port);
        let (lu, lt) = server::bind(lan_addr).with_context(|| {
            format!(
                "binding the LAN zone's DNS listener on {lan_addr} (UDP and TCP): another \
                 program holds that port; pick a free one with [dns.lan] port and point the \
                 gateway's dns_upstream at it"
            )
        })?;
        info!(addr = %lan_addr, domain = %lan.domain, "serving the LAN zone for the gateway's DNS relay");
        tokio::spawn(Server::lan_only(dns.clone(), upstream.clone()).serve(lu, lt));
    }
    tokio::spawn(Server::new(dns.clone(), upstream, acl).serve(udp, tcp));
    tokio::spawn(flatnetd::dns::sync::run(dns, service.clone()));
    Ok(())
}

/// Wait for SIGTERM/SIGINT; on SIGHUP re-read the config and apply what
/// can change live (the peer list), keeping running sessions.
struct Reload<'a> {
    path: &'a Path,
    explicit: bool,
    service: &'a Service,
    identity: &'a Identity,
    lh_net: Option<(Ipv4Net, Ipv4Net)>,
    lh: Option<&'a LhClient>,
    log: &'a flatnet_wire::logging::LogHandle,
}

async fn run_until_shutdown(r: &Reload<'_>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                flatnet_wire::systemd::reloading();
                if let Err(e) = reload(r) {
                    warn!("reload failed, keeping the running configuration: {e:#}");
                }
                flatnet_wire::systemd::ready("configuration reloaded");
            }
        }
    }
}

fn reload(r: &Reload<'_>) -> anyhow::Result<()> {
    let (service, identity) = (r.service, r.identity);
    let mut new = Config::load(r.path, r.explicit)?;
    if let Some((cidr, subnet)) = r.lh_net {
        new = new.with_lighthouse_subnet(cidr, subnet)?;
    }
    match r.log.set_level(&new.log_level) {
        Ok(true) => info!(log_level = %new.log_level, "log level changed"),
        Ok(false) => {}
        Err(e) => warn!("reload: {e}; keeping the current log level"),
    }
    let old = service.config();
    if (new.cidr, new.subnet, new.mtu, &new.state_dir, &new.socket)
        != (old.cidr, old.subnet, old.mtu, &old.state_dir, &old.socket)
        || (
            new.wireguard.listen_port,
            new.wireguard.backend,
            &new.wireguard.interface,
        ) != (
            old.wireguard.listen_port,
            old.wireguard.backend,
            &old.wireguard.interface,
        )
    {
        warn!(
            "reload: only [[peers]], keepalive_secs and log_level change live; restart flatnetd for the rest"
        );
    }
    match (r.lh, service.overlay()) {
        (Some(lh), _) => lh.set_static_peers(new.peers.clone()),
        (None, Some(o)) => o.update_peers(&new.peers, new.wireguard.keepalive_secs)?,
        (None, None) if new.wireguard.enabled => {
            let dp = dataplane::start(&new, identity).context("starting the data plane")?;
            service.set_overlay(Arc::from(dp));
        }
        (None, None) => {}
    }
    info!(peers = new.peers.len(), "configuration reloaded");
    Ok(())
}
