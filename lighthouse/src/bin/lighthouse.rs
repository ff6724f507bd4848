//! `lighthouse`: run the Flatnet Lighthouse and administer it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flatnet_lighthouse::{
    admin::{self, AdminRequest, DEFAULT_ADMIN_SOCKET},
    etcd::EtcdConfig,
    members::{self, MemberRequest, MemberView},
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
        /// Share the registry with other Lighthouses through etcd: its
        /// client URLs, comma-separated (http://10.0.0.5:2379,...). Without
        /// it the registry is in the state dir, for a single Lighthouse.
        #[arg(long, value_name = "URLS", value_delimiter = ',')]
        etcd: Vec<String>,
        /// Where in etcd the registry lives (one etcd can hold several
        /// Flatnets under different prefixes).
        #[arg(long, default_value = "/flatnet/")]
        etcd_prefix: String,
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
    /// The Lighthouses sharing this registry (with --etcd).
    Lighthouses {
        #[command(subcommand)]
        cmd: LighthousesCmd,
    },
    /// Remote members: people off the LAN with the stock WireGuard app,
    /// through a hub node, held to a policy (docs/members.md).
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// What members may reach: named lists of allow rules.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a member and print its wg-quick config, as text and as a QR
    /// code. The key pair is made here and printed, never stored.
    Add {
        name: String,
        /// The node that accepts the member's WireGuard (publicly reachable).
        #[arg(long)]
        hub: String,
        /// The policy it is held to (`lighthouse policy set`).
        #[arg(long, value_name = "POLICY")]
        access: String,
        /// Validity, e.g. `12h`, `30d`; default: no expiry.
        #[arg(long, value_name = "TTL", value_parser = parse_ttl)]
        expires: Option<u64>,
        /// Use this public key (the member made the pair) instead of
        /// making one.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        out: ConfigOut,
    },
    /// Every member, its address, hub, policy and expiry.
    List,
    /// Remove a member: every host drops it within seconds.
    Remove { name: String },
    /// Give a member a new key pair (same address, hub and policy) and
    /// print its new config; the old key stops working at once.
    Rotate {
        name: String,
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        out: ConfigOut,
    },
}

#[derive(clap::Args)]
struct ConfigOut {
    /// `host:port` the member's app sends to; default: the hub's public
    /// endpoint as the Lighthouse sees it.
    #[arg(long)]
    endpoint: Option<String>,
    /// Search domain in the config's DNS line (flatnetd's [dns] domain).
    #[arg(long, default_value = "flatnet")]
    dns_domain: String,
    /// Print the config only, no QR code.
    #[arg(long)]
    no_qr: bool,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Create or replace a policy; its members get the new rules at once.
    /// Rules: `forgejo`, `forgejo:80,22`, `forgejo.h2:3000-3010/tcp`,
    /// `node:h2`, `node:h2:443`, `10.87.5.0/24:443`.
    Set {
        name: String,
        #[arg(required = true, value_name = "RULE")]
        allow: Vec<String>,
    },
    List,
    /// Delete a policy no member holds.
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum LighthousesCmd {
    /// Every Lighthouse registered in etcd, this one marked.
    List,
    /// Take a Lighthouse that was stopped for good off the list: tokens
    /// stop naming it and nodes end their sessions with it.
    Retire { id: String },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new join token (it pins this Lighthouse's certificate).
    Create {
        /// Validity, e.g. `3600`, `30m`, `12h`, `7d`; default: no expiry.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
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

/// A duration on the command line (`90`, `30m`, `24h`, `7d`), in seconds;
/// clap reports a bad one as a usage error naming the flag.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| "give a duration such as 3600, 30m, 24h or 7d".to_string())
}

/// A new WireGuard key pair, base64 (private, public), as `wg genkey` makes.
fn wg_keypair() -> (String, String) {
    use base64::Engine;
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    let public = x25519_dalek::PublicKey::from(&secret);
    let b = base64::engine::general_purpose::STANDARD;
    (b.encode(secret.to_bytes()), b.encode(public.as_bytes()))
}

/// Print a member's config (add, rotate).
fn print_member(
    v: serde_json::Value,
    private: Option<String>,
    out: &ConfigOut,
    json: bool,
) -> anyhow::Result<()> {
    let view: MemberView = serde_json::from_value(v).context("the Lighthouse's answer")?;
    let conf = members::wg_quick(&view, private.as_deref(), &out.dns_domain);
    if json {
        let v = serde_json::json!({ "member": view, "private_key": private, "config": conf });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{conf}");
    if !out.no_qr {
        println!("\n{}", members::qr(&conf).map_err(anyhow::Error::msg)?);
    }
    if view.endpoint.is_none() {
        eprintln!(
            "the hub {} has no known public endpoint: fill in Endpoint, or run this again with --endpoint HOST:PORT",
            view.hub
        );
    }
    if private.is_some() {
        eprintln!(
            "member {} at {}: this config holds its private key, which is not stored anywhere; \
             hand it over privately (wg-quick, or the WireGuard app's QR scan)",
            view.name, view.address
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match flatnet_wire::cli::parse::<Args>("lighthouse") {
        Ok(args) => flatnet_wire::cli::exit("lighthouse", run(args)),
        Err(code) => code,
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // The state dir, database, key and admin socket are the Lighthouse's
    // alone, from the moment they exist.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
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
            etcd,
            etcd_prefix,
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
                let etcd = (!etcd.is_empty()).then(|| EtcdConfig {
                    endpoints: etcd.clone(),
                    prefix: etcd_prefix.clone(),
                });
                // A state dir this start makes goes again if opening it
                // fails (a full disk): the next start begins from nothing.
                let lh = flatnet_wire::fs::or_remove_new_dir(&state_dir, || {
                    Lighthouse::open_with(
                        &state_dir,
                        cidr,
                        host_prefix,
                        public_addr,
                        etcd.as_ref(),
                    )
                })?;
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
                info!(%listen, fingerprint = %lh.identity.fingerprint(), id = %lh.id(), registry = lh.backend(), "lighthouse ready");
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
            let ttl_secs = ttl;
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
        Cmd::Lighthouses {
            cmd: LighthousesCmd::List,
        } => {
            let v = admin(AdminRequest::LighthousesList)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<17} {:<28} THIS", "ID", "ADDRESS");
                for l in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<17} {:<28} {}",
                        l["id"].as_str().unwrap_or(""),
                        l["address"].as_str().unwrap_or(""),
                        if l["this"].as_bool() == Some(true) {
                            "*"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        Cmd::Lighthouses {
            cmd: LighthousesCmd::Retire { id },
        } => {
            admin(AdminRequest::LighthousesRetire { id: id.clone() })?;
            println!("retired Lighthouse {id}; nodes end their sessions with it within seconds");
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
        Cmd::Member { cmd } => member_cmd(cmd, &admin, json),
        Cmd::Policy { cmd } => {
            let (req, done) = match cmd {
                PolicyCmd::Set { name, allow } => (MemberRequest::PolicySet { name, allow }, "set"),
                PolicyCmd::List => (MemberRequest::PolicyList, ""),
                PolicyCmd::Remove { name } => (MemberRequest::PolicyRemove { name }, "removed"),
            };
            let v = admin(AdminRequest::Member(req))?;
            if json || done.is_empty() {
                return print_json(&v);
            }
            match done {
                "set" => println!(
                    "policy {} set: {}; {} member(s) hold it",
                    v["policy"].as_str().unwrap_or(""),
                    v["allow"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default(),
                    v["members"]
                ),
                _ => println!("policy {} removed", v["removed"].as_str().unwrap_or("")),
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

fn member_cmd(
    cmd: MemberCmd,
    admin: &dyn Fn(AdminRequest) -> anyhow::Result<serde_json::Value>,
    json: bool,
) -> anyhow::Result<()> {
    let key = |given: Option<String>| match given {
        Some(k) => (None, k),
        None => {
            let (private, public) = wg_keypair();
            (Some(private), public)
        }
    };
    match cmd {
        MemberCmd::Add {
            name,
            hub,
            access,
            expires,
            public_key,
            out,
        } => {
            let expires_in_secs = expires;
            let (private, public_key) = key(public_key);
            let v = admin(AdminRequest::Member(MemberRequest::Add {
                name,
                public_key,
                hub,
                policy: access,
                expires_in_secs,
                endpoint: out.endpoint.clone(),
            }))?;
            print_member(v, private, &out, json)
        }
        MemberCmd::Rotate {
            name,
            public_key,
            out,
        } => {
            let (private, public_key) = key(public_key);
            let v = admin(AdminRequest::Member(MemberRequest::Rotate {
                name,
                public_key,
                endpoint: out.endpoint.clone(),
            }))?;
            print_member(v, private, &out, json)
        }
        MemberCmd::Remove { name } => {
            admin(AdminRequest::Member(MemberRequest::Remove {
                name: name.clone(),
            }))?;
            println!("removed member {name}; every host drops it within seconds");
            Ok(())
        }
        MemberCmd::List => {
            let v = admin(AdminRequest::Member(MemberRequest::List))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let list: Vec<MemberView> =
                serde_json::from_value(v).context("the Lighthouse's answer")?;
            println!(
                "{:<20} {:<18} {:<12} {:<16} EXPIRES",
                "NAME", "ADDRESS", "HUB", "POLICY"
            );
            for m in list {
                let exp = match m.expires {
                    Some(t) => match t.saturating_sub(flatnet_lighthouse::server::now()) {
                        // Removed by the next expiry sweep, within a second or two.
                        0 => "expired, being removed".into(),
                        left => format!("in {}", human_secs(left)),
                    },
                    None => "never".into(),
                };
                println!(
                    "{:<20} {:<18} {:<12} {:<16} {exp}",
                    m.name,
                    m.address.to_string(),
                    m.hub,
                    m.policy
                );
            }
            Ok(())
        }
    }
}

/// `3d 4h`, `5h 2m`, `12m`, `40s`.
fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}
