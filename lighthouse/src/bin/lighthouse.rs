//! `lighthouse`: run the Flatnet Lighthouse and administer it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flatnet_lighthouse::{
    admin::{self, AdminRequest, DEFAULT_ADMIN_SOCKET},
    server::Lighthouse,
};
use flatnet_wire::logging::LogFormat;
use ipnet::Ipv4Net;
use tracing::info;

#[derive(Parser)]
#[command(
    version,
    about = "Flatnet Lighthouse: registry, hole-punching broker and relay"
)]
struct Args {
    /// Admin socket of the running Lighthouse.
    #[arg(long, global = true, env = "LIGHTHOUSE_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    admin_socket: PathBuf,
    /// Machine-readable output (JSON) for any command.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the Lighthouse.
    Serve {
        /// UDP address for QUIC.
        #[arg(long, default_value = "0.0.0.0:7871")]
        listen: SocketAddr,
        /// `host:port` nodes use to reach this Lighthouse (written into tokens).
        #[arg(long)]
        public_addr: Option<String>,
        #[arg(long, default_value = "/var/lib/flatnet-lighthouse")]
        state_dir: PathBuf,
        /// The whole Flatnet.
        #[arg(long, default_value = "10.87.0.0/16")]
        cidr: Ipv4Net,
        /// Prefix length of each host's subnet.
        #[arg(long, default_value_t = 24)]
        host_prefix: u8,
        /// UDP address answering `flatnetctl netcheck` (NAT type, MTU,
        /// reachability); default: the QUIC port + 1. `off` disables it.
        #[arg(long, value_name = "ADDR|off")]
        netcheck_listen: Option<String>,
        /// TCP address for nodes on networks that block UDP (TLS with the
        /// same certificate, then the same protocol); default: the QUIC
        /// address's IP, port 443. `off` disables it.
        #[arg(long, value_name = "ADDR|off")]
        tcp_listen: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (off unless set;
        /// e.g. 127.0.0.1:9588).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        /// `text` or `json` (one object per line, for log collectors).
        #[arg(long, default_value = "text")]
        log_format: LogFormat,
        /// Log filter (`info`, `debug`, ...); FLATNET_LOG overrides it, and
        /// `lighthouse log-level` changes it at run time.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Write a backup of the running Lighthouse (nodes, subnets, tokens, its
    /// key and certificate) to FILE, mode 0600. Keep it secret.
    Backup { file: PathBuf },
    /// Build a state dir from a backup (the Lighthouse must not run on it);
    /// then `lighthouse serve` with the --cidr and --host-prefix it prints.
    Restore {
        file: PathBuf,
        #[arg(long, default_value = "/var/lib/flatnet-lighthouse")]
        state_dir: PathBuf,
    },
    /// Show or set the running Lighthouse's log filter.
    LogLevel {
        /// `info`, `debug`, `warn`, or a filter like `info,flatnet_lighthouse=debug`.
        filter: Option<String>,
    },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Registered nodes.
    Nodes {
        #[command(subcommand)]
        cmd: NodesCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new join token (it pins this Lighthouse's certificate).
    Create {
        /// Validity, e.g. `3600`, `30m`, `12h`, `7d`; default: no expiry.
        #[arg(long)]
        ttl: Option<String>,
        /// Allow several nodes to join with it.
        #[arg(long)]
        reusable: bool,
    },
    List,
    /// Revoke a token (id or unique prefix of >= 8 digits); nodes that
    /// joined with it are removed.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum NodesCmd {
    List,
    Remove { name: String },
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("bad --ttl {s:?}"))?;
    Ok(n * mult)
}

fn main() -> std::process::ExitCode {
    flatnet_wire::exit_code("lighthouse", run())
}

fn run() -> anyhow::Result<()> {
    // The state dir, database, key and admin socket are the Lighthouse's
    // alone, from the moment they exist.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    let admin =
        |req: AdminRequest| admin::call(&args.admin_socket, &req).map_err(anyhow::Error::msg);
    let json = args.json;
    let print_json = |v: &serde_json::Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match args.cmd {
        Cmd::Serve {
            listen,
            public_addr,
            state_dir,
            cidr,
            host_prefix,
            metrics_listen,
            netcheck_listen,
            tcp_listen,
            log_format,
            log_level,
        } => {
            let tcp = match tcp_listen.as_deref() {
                None => Some(SocketAddr::new(
                    listen.ip(),
                    flatnet_wire::lighthouse::TCP_DEFAULT_PORT,
                )),
                Some("off") => None,
                Some(a) => Some(
                    a.parse::<SocketAddr>()
                        .with_context(|| format!("--tcp-listen {a:?}: give ip:port, or off"))?,
                ),
            };
            let netcheck =
                match netcheck_listen.as_deref() {
                    None => Some(flatnet_lighthouse::netcheck::default_listen(listen)),
                    Some("off") => None,
                    Some(a) => Some(a.parse::<SocketAddr>().with_context(|| {
                        format!("--netcheck-listen {a:?}: give ip:port, or off")
                    })?),
                };
            let log =
                flatnet_wire::logging::init(log_format, &log_level).map_err(anyhow::Error::msg)?;
            if !(cidr.prefix_len() < host_prefix && host_prefix <= 29) {
                bail!(
                    "--host-prefix {host_prefix} must be longer than the CIDR's /{} and at most 29",
                    cidr.prefix_len()
                );
            }
            let public_addr = match public_addr {
                Some(p) => p,
                None if !listen.ip().is_unspecified() => listen.to_string(),
                None => bail!("--public-addr is required when listening on {listen}"),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let lh = Lighthouse::open(&state_dir, cidr, host_prefix, public_addr)?;
                let _ = lh.log.set(log);
                let ep = lh.endpoint(listen)?;
                let admin_path = args.admin_socket.clone();
                let lh2 = lh.clone();
                tokio::spawn(async move {
                    if let Err(e) = admin::serve(&admin_path, lh2).await {
                        tracing::error!("admin socket {}: {e}", admin_path.display());
                    }
                });
                if let Some(addr) = netcheck {
                    let (main, other) = flatnet_lighthouse::netcheck::bind(addr)
                        .await
                        .with_context(|| {
                            format!(
                                "binding the netcheck port {addr} (UDP); free it, or pass \
                                 --netcheck-listen with another address, or off"
                            )
                        })?;
                    tokio::spawn(flatnet_lighthouse::netcheck::serve(main, other, lh.clone()));
                }
                if let Some(addr) = tcp {
                    let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                        format!(
                            "binding the TCP port {addr} (for nodes whose networks block UDP); \
                             free it, or pass --tcp-listen with another address, or off"
                        )
                    })?;
                    info!(%addr, "serving nodes over TCP too");
                    tokio::spawn(lh.clone().serve_tcp(l));
                }
                if let Some(addr) = metrics_listen {
                    let l = flatnet_wire::metrics_http::bind(addr)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    info!(%addr, "serving metrics at /metrics");
                    tokio::spawn(flatnet_wire::metrics_http::serve(
                        l,
                        flatnet_lighthouse::metrics::renderer(&lh),
                    ));
                }
                info!(%listen, fingerprint = %lh.identity.fingerprint(), "lighthouse ready");
                flatnet_wire::systemd::ready(&format!("serving on {listen}"));
                let lh3 = lh.clone();
                tokio::spawn(flatnet_wire::systemd::watchdog(std::sync::Arc::new(
                    move || lh3.health(),
                )));
                tokio::select! {
                    _ = lh.clone().serve(ep.clone()) => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async {
                        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                            Ok(mut s) => { s.recv().await; }
                            Err(_) => std::future::pending::<()>().await,
                        }
                    } => {}
                }
                flatnet_wire::systemd::stopping();
                // Who was where, so that the nodes coming back to the next
                // start change (and cost) nothing.
                lh.save_presence();
                ep.close(0u32.into(), b"lighthouse shutting down");
                tokio::time::sleep(Duration::from_millis(100)).await;
                anyhow::Ok(())
            })
        }
        Cmd::Backup { file } => {
            let v = admin(AdminRequest::Backup)?;
            let text = serde_json::to_string_pretty(&v)?;
            flatnet_wire::fs::write_atomic(&file, text.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", file.display()))?;
            let nodes = v["nodes"].as_array().map_or(0, Vec::len);
            if json {
                return print_json(&serde_json::json!({"file": file, "nodes": nodes}));
            }
            println!("backed up {nodes} node(s) to {}", file.display());
            Ok(())
        }
        Cmd::Restore { file, state_dir } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let b = flatnet_lighthouse::backup::parse(&text, &file.display().to_string())?;
            flatnet_lighthouse::backup::restore(&b, &state_dir)?;
            if json {
                return print_json(&serde_json::json!({
                    "state_dir": state_dir, "nodes": b.nodes.len(),
                    "cidr": b.cidr, "host_prefix": b.host_prefix,
                }));
            }
            println!(
                "restored {} node(s) and {} token(s) into {}; start it with \
                 lighthouse serve --state-dir {} --cidr {} --host-prefix {} (and your --listen, --public-addr)",
                b.nodes.len(),
                b.tokens.len(),
                state_dir.display(),
                state_dir.display(),
                b.cidr,
                b.host_prefix
            );
            Ok(())
        }
        Cmd::LogLevel { filter } => {
            let v = admin(AdminRequest::LogLevel { filter })?;
            if json {
                return print_json(&v);
            }
            println!("{}", v["log_level"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Token {
            cmd: TokenCmd::Create { ttl, reusable },
        } => {
            let ttl_secs = ttl.as_deref().map(parse_ttl).transpose()?;
            let v = admin(AdminRequest::TokenCreate { ttl_secs, reusable })?;
            if json {
                return print_json(&v);
            }
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!(
                "token id {} ({}{})",
                v["id"].as_str().unwrap_or_default(),
                if reusable { "reusable" } else { "single use" },
                ttl_secs
                    .map(|t| format!(", expires in {t} s"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Token {
            cmd: TokenCmd::List,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&admin(AdminRequest::TokenList)?)?
            );
            Ok(())
        }
        Cmd::Token {
            cmd: TokenCmd::Revoke { id },
        } => {
            let v = admin(AdminRequest::TokenRevoke { id })?;
            if json {
                return print_json(&v);
            }
            println!("revoked; {} node(s) removed", v["nodes_removed"]);
            Ok(())
        }
        Cmd::Nodes {
            cmd: NodesCmd::List,
        } => {
            let v = admin(AdminRequest::NodesList)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<4} {:<20} {:<16} {:<8} {:<22} PUBLIC KEY",
                    "ID", "NAME", "SUBNET", "ONLINE", "OBSERVED"
                );
                for n in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<4} {:<20} {:<16} {:<8} {:<22} {}",
                        // Value's Display ignores width: pad strings.
                        n["node_id"].to_string(),
                        n["name"].as_str().unwrap_or(""),
                        n["subnet"].as_str().unwrap_or(""),
                        n["online"].to_string(),
                        n["observed"].as_str().unwrap_or("-"),
                        n["public_key"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Cmd::Nodes {
            cmd: NodesCmd::Remove { name },
        } => {
            let v = admin(AdminRequest::NodesRemove { name: name.clone() })?;
            if json {
                return print_json(&v);
            }
            println!("removed {name}");
            Ok(())
        }
    }
}
