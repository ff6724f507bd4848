//! `lighthouse`: run the Flatnet Lighthouse and administer it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flatnet_lighthouse::{
    admin::{self, AdminRequest, DEFAULT_ADMIN_SOCKET},
    server::Lighthouse,
};
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
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        name: String,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLATNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The state dir, database, key and admin socket are the Lighthouse's
    // alone, from the moment they exist.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    let admin =
        |req: AdminRequest| admin::call(&args.admin_socket, &req).map_err(anyhow::Error::msg);
    match args.cmd {
        Cmd::Serve {
            listen,
            public_addr,
            state_dir,
            cidr,
            host_prefix,
        } => {
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
                let ep = lh.endpoint(listen)?;
                info!(%listen, fingerprint = %lh.identity.fingerprint(), "lighthouse ready");
                let admin_path = args.admin_socket.clone();
                let lh2 = lh.clone();
                tokio::spawn(async move {
                    if let Err(e) = admin::serve(&admin_path, lh2).await {
                        tracing::error!("admin socket {}: {e}", admin_path.display());
                    }
                });
                tokio::select! {
                    _ = lh.serve(ep.clone()) => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async {
                        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                            Ok(mut s) => { s.recv().await; }
                            Err(_) => std::future::pending::<()>().await,
                        }
                    } => {}
                }
                ep.close(0u32.into(), b"lighthouse shutting down");
                tokio::time::sleep(Duration::from_millis(100)).await;
                anyhow::Ok(())
            })
        }
        Cmd::Token {
            cmd: TokenCmd::Create { ttl, reusable },
        } => {
            let ttl_secs = ttl.as_deref().map(parse_ttl).transpose()?;
            let v = admin(AdminRequest::TokenCreate { ttl_secs, reusable })?;
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
            println!("revoked; {} node(s) removed", v["nodes_removed"]);
            Ok(())
        }
        Cmd::Nodes {
            cmd: NodesCmd::List { json },
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
            admin(AdminRequest::NodesRemove { name: name.clone() })?;
            println!("removed {name}");
            Ok(())
        }
    }
}
