//! `flatnetctl`: inspect a running flatnetd.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flatnet_wire::{client::Client, Reply, Request};
use flatnetd::{api::catalog, config::DEFAULT_SOCKET, gwroute, status};

#[derive(Parser)]
#[command(version, about = "Inspect and control the local flatnetd")]
struct Args {
    /// flatnetd's API socket.
    #[arg(long, env = "FLATNET_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// This host, its subnet and its containers.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The service catalog this host publishes (what the gateway sees).
    Catalog,
    /// The names Flatnet DNS serves: this host's containers and every peer's.
    Names {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check that flatnetd answers.
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

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.socket);
    match args.cmd {
        Cmd::Status { json } => {
            let Reply::Status(st) = client.call(&Request::Status).context("status")? else {
                bail!("unexpected reply to status");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", status::render(&st));
            }
        }
        Cmd::Catalog => {
            let Reply::Status(st) = client.call(&Request::Status).context("status")? else {
                bail!("unexpected reply to status");
            };
            let c = catalog::build(&st.node, &st.leases);
            println!("{}", serde_json::to_string_pretty(&c)?);
        }
        Cmd::Names { json } => {
            let Reply::Names {
                domain,
                enabled,
                names,
            } = client.call(&Request::Names).context("names")?
            else {
                bail!("unexpected reply to names");
            };
            if json {
                let v = serde_json::json!({"domain": domain, "enabled": enabled, "names": names});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", status::render_names(&domain, enabled, &names));
            }
        }
        Cmd::Pubkey => {
            let Reply::Status(st) = client.call(&Request::Status).context("status")? else {
                bail!("unexpected reply to status");
            };
            let Some(k) = st.public_key else {
                bail!("flatnetd reported no public key (too old?)");
            };
            println!("{k}");
        }
        Cmd::GatewayRoute => {
            let Reply::Status(st) = client.call(&Request::Status).context("status")? else {
                bail!("unexpected reply to status");
            };
            print!(
                "{}",
                gwroute::render(&gwroute::gather(st.network.cidr, st.forward_from.clone()))
            );
        }
        Cmd::Ping => {
            let reply = client.call(&Request::Ping).context("ping")?;
            println!("{}", serde_json::to_string(&reply)?);
        }
    }
    Ok(())
}
