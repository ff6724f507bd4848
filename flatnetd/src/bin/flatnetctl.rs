//! `flatnetctl`: inspect a running flatnetd.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use flatnet_wire::{client::Client, HostStatus, Reply, Request};
use flatnetd::{api::catalog, config::DEFAULT_SOCKET, gwroute, status};

#[derive(Parser)]
#[command(version, about = "Inspect and control the local flatnetd")]
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
    /// Check that flatnetd answers, and its version.
    Ping,
    /// This node's WireGuard public key (base64), for peers' `[[peers]]`.
    Pubkey,
    /// The route command a machine outside the Flatnet (the Windows host of
    /// a WSL2 VM running the gateway, a LAN router) needs to reach Flatnet
    /// IPs through this host.
    GatewayRoute,
}

fn main() -> std::process::ExitCode {
    flatnet_wire::exit_code("flatnetctl", run())
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

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
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
        Cmd::Ping => match client.call(&Request::Ping)? {
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
    }
    Ok(())
}
