//! `flatnetctl`: inspect a running flatnetd.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use flatnet_wire::{client::Client, HostStatus, ProbeResult, Reply, Request};
use flatnetd::{api::catalog, config::DEFAULT_SOCKET, gwroute, status};

#[derive(Parser)]
#[command(
    name = "flatnetctl",
    version,
    about = "Inspect and control the local flatnetd"
)]
struct Args {
    /// flatnetd's API socket.
    #[arg(long, env = "FLATNET_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Machine-readable output (JSON) for any command.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// This host, its subnet, its containers and its peers.
    Status,
    /// The service catalog this host publishes (what the gateway sees); JSON.
    Catalog,
    /// The names Flatnet DNS serves: this host's containers and every peer's.
    Names,
    /// Ping a node, Flatnet IP or container name through the tunnel, and
    /// say which path each reply took (direct endpoint or relay) and its
    /// round-trip time. Without a target: check that flatnetd answers.
    Ping {
        /// A peer's node name, a Flatnet IP, or a name Flatnet DNS serves.
        target: Option<String>,
        /// Probes to send.
        #[arg(short = 'c', long, default_value_t = 10)]
        count: u16,
        /// Stop at the first reply over a direct path; fail if none comes.
        /// Relayed peers are asked to punch at once.
        #[arg(long)]
        until_direct: bool,
        /// Seconds between probes.
        #[arg(short = 'i', long, default_value_t = 1.0)]
        interval: f64,
    },
    /// What this host's network does to Flatnet traffic: UDP to the
    /// Lighthouse, the public address it sees, whether the NAT maps by
    /// destination (symmetric), whether the port takes datagrams from
    /// strangers, the underlay MTU toward the Lighthouse.
    Netcheck,
    /// This node's WireGuard public key (base64), for peers' `[[peers]]`.
    Pubkey,
    /// The route command a machine outside the Flatnet (the Windows host of
    /// a WSL2 VM running the gateway, a LAN router) needs to reach Flatnet
    /// IPs through this host.
    GatewayRoute,
}

fn main() -> std::process::ExitCode {
    match flatnet_wire::cli::parse::<Args>("flatnetctl") {
        Ok(args) => flatnet_wire::cli::exit("flatnetctl", run(args)),
        Err(code) => code,
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn host_status(client: &Client) -> anyhow::Result<HostStatus> {
    match client.call(&Request::Status)? {
        Reply::Status(st) => Ok(st),
        _ => bail!("flatnetd answered status with something else; is flatnetctl the same version?"),
    }
}

/// One line per probe: who answered, over which path, how fast.
fn probe_line(r: &ProbeResult) -> String {
    let who = match &r.peer {
        Some(p) if p != &r.target => format!("{} ({} on {p})", r.target, r.ip),
        _ => format!("{} ({})", r.target, r.ip),
    };
    let via = match (r.path.as_str(), &r.endpoint) {
        ("direct", Some(ep)) => format!("direct {ep}"),
        (path, _) => path.to_string(),
    };
    match r.rtt_us {
        Some(us) => format!("pong from {who} via {via} in {:.1} ms", us as f64 / 1000.0),
        None => format!("no reply from {who} within 1 s (path: {via})"),
    }
}

fn ping(
    client: &Client,
    target: &str,
    count: u16,
    until_direct: bool,
    interval: f64,
    json: bool,
) -> anyhow::Result<()> {
    if !(0.01..=60.0).contains(&interval) {
        bail!("--interval {interval}: give seconds between 0.01 and 60");
    }
    let mut replies = 0;
    for seq in 1..=count.max(1) {
        let started = std::time::Instant::now();
        let Reply::Probe(r) = client.call(&Request::Probe {
            target: target.to_string(),
            seq,
        })?
        else {
            bail!("flatnetd answered ping with something else; is flatnetctl the same version?");
        };
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", probe_line(&r));
        }
        if r.rtt_us.is_some() {
            replies += 1;
            if until_direct && matches!(r.path.as_str(), "direct" | "local") {
                return Ok(());
            }
        }
        if seq < count {
            let gap = std::time::Duration::from_secs_f64(interval);
            std::thread::sleep(gap.saturating_sub(started.elapsed()));
        }
    }
    if until_direct {
        bail!(
            "{target} is still not reached over a direct path after {count} probes \
             ({replies} replied); `flatnetctl status` says why its path is relayed"
        );
    }
    if replies == 0 {
        bail!(
            "no reply from {target} to {count} probes; `flatnetctl status` shows the peer's state"
        );
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::new(&args.socket);
    let json = args.json;
    match args.cmd {
        Cmd::Status => {
            let st = host_status(&client)?;
            if json {
                print_json(&st)?;
            } else {
                print!("{}", status::render(&st));
            }
        }
        Cmd::Catalog => {
            let st = host_status(&client)?;
            print_json(&catalog::build(&st.node, &st.leases))?;
        }
        Cmd::Names => {
            let Reply::Names {
                domain,
                enabled,
                names,
            } = client.call(&Request::Names)?
            else {
                bail!(
                    "flatnetd answered names with something else; is flatnetctl the same version?"
                );
            };
            if json {
                print_json(
                    &serde_json::json!({"domain": domain, "enabled": enabled, "names": names}),
                )?;
            } else {
                print!("{}", status::render_names(&domain, enabled, &names));
            }
        }
        Cmd::Netcheck => {
            let Reply::Netcheck(r) = client.call(&Request::Netcheck)? else {
                bail!("flatnetd answered netcheck with something else; is flatnetctl the same version?");
            };
            if json {
                print_json(&r)?;
            } else {
                print!("{}", flatnetd::netcheck::render(&r));
            }
        }
        Cmd::Pubkey => {
            let st = host_status(&client)?;
            let Some(k) = st.public_key else {
                bail!(
                    "flatnetd reported no public key: it is older than this flatnetctl; upgrade it"
                );
            };
            if json {
                print_json(&serde_json::json!({"public_key": k}))?;
            } else {
                println!("{k}");
            }
        }
        Cmd::GatewayRoute => {
            let st = host_status(&client)?;
            let facts = gwroute::gather(st.network.cidr, st.forward_from.clone());
            if json {
                print_json(&facts)?;
            } else {
                print!("{}", gwroute::render(&facts));
            }
        }
        Cmd::Ping { target: None, .. } => match client.call(&Request::Ping)? {
            Reply::Pong {
                api_version,
                version,
            } => {
                if json {
                    print_json(
                        &serde_json::json!({"version": version, "api_version": api_version}),
                    )?;
                } else {
                    println!("flatnetd {version} answers (API version {api_version})");
                }
            }
            _ => {
                bail!("flatnetd answered ping with something else; is flatnetctl the same version?")
            }
        },
        Cmd::Ping {
            target: Some(target),
            count,
            until_direct,
            interval,
        } => ping(&client, &target, count, until_direct, interval, json)?,
    }
    Ok(())
}
