//! `flatnetd`: the Flatnet per-host daemon.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use clap::Parser;
use flatnetd::{
    api,
    config::{Config, DEFAULT_CONFIG},
    dataplane::{self, Identity},
    hostnet::NftHostSetup,
    ipam::LeaseStore,
    service::{HostSetup, NoHostSetup, Service},
};
use tracing::{info, warn};

#[derive(Parser)]
#[command(version, about = "Flatnet per-host daemon")]
struct Args {
    /// Configuration file.
    #[arg(short, long, env = "FLATNETD_CONFIG")]
    config: Option<PathBuf>,
    /// Do not touch host forwarding or nftables (for hosts where another
    /// tool owns them).
    #[arg(long)]
    no_host_setup: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLATNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let config = Config::load(&path, explicit)?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
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
        Box::new(NftHostSetup)
    };
    let identity = Identity::load_or_create(&config.state_dir)?;
    let service = Arc::new(Service::new(config.clone(), store, host));
    service.set_public_key(identity.public_base64());
    if let Err(e) = service.ensure_host() {
        // Not fatal: retried on the next allocation.
        warn!("{e}");
    }
    if config.wireguard.enabled {
        let dp = dataplane::start(&config, &identity).context("starting the data plane")?;
        service.set_overlay(Arc::from(dp));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = api::unix::bind(&config.socket, config.socket_group.as_deref())
            .with_context(|| format!("binding {}", config.socket.display()))?;
        info!(
            node = %config.node_name,
            subnet = %config.subnet,
            socket = %config.socket.display(),
            "flatnetd ready"
        );
        tokio::spawn(api::unix::serve(listener, service.clone()));
        if let Some(addr) = config.catalog_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding catalog listener {addr}"))?;
            info!(%addr, "serving catalog at /v1/catalog");
            tokio::spawn(api::catalog::serve(l, service.clone()));
        }
        run_until_shutdown(&path, explicit, &service, &identity).await;
        info!("shutting down");
        let _ = std::fs::remove_file(&config.socket);
        anyhow::Ok(())
    })
}

/// Wait for SIGTERM/SIGINT; on SIGHUP re-read the config and apply what
/// can change live (the peer list), keeping running sessions.
async fn run_until_shutdown(path: &Path, explicit: bool, service: &Service, identity: &Identity) {
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
                if let Err(e) = reload(path, explicit, service, identity) {
                    warn!("reload failed, keeping the running configuration: {e:#}");
                }
            }
        }
    }
}

fn reload(
    path: &Path,
    explicit: bool,
    service: &Service,
    identity: &Identity,
) -> anyhow::Result<()> {
    let new = Config::load(path, explicit)?;
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
            "reload: only [[peers]] and keepalive_secs change live; restart flatnetd for the rest"
        );
    }
    match service.overlay() {
        Some(o) => o.update_peers(&new.peers, new.wireguard.keepalive_secs)?,
        None if new.wireguard.enabled => {
            let dp = dataplane::start(&new, identity).context("starting the data plane")?;
            service.set_overlay(Arc::from(dp));
        }
        None => {}
    }
    info!(peers = new.peers.len(), "configuration reloaded");
    Ok(())
}
