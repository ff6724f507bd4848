//! A misbehaving Flatnet member, for the security suite
//! (`tests/integration/080-security.bats`). Each subcommand reproduces one
//! attack against the real Lighthouse; it prints what it managed to do and
//! asserts nothing (the suite checks the victim).
//!
//! ```text
//! flatnet-hostile quic-idle TOKEN CONNS DATAGRAMS HOLD_SECS
//! ```
//! - `quic-idle`: open CONNS QUIC connections to the Lighthouse of TOKEN
//!   that finish the TLS handshake but never say Hello, each sending
//!   DATAGRAMS full-size datagrams, and hold them for HOLD_SECS.

use std::{net::ToSocketAddrs, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use flatnet_lighthouse::{client::client_config, token::Token};
use flatnet_wire::lighthouse::SERVER_NAME;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .ok_or_else(|| anyhow!("missing {what}"))?
        .parse()
        .map_err(|_| anyhow!("bad {what}: {}", args[i]))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("quic-idle") => {
            quic_idle(
                &arg::<String>(&args, 2, "TOKEN")?,
                arg(&args, 3, "CONNS")?,
                arg(&args, 4, "DATAGRAMS")?,
                arg(&args, 5, "HOLD_SECS")?,
            )
            .await
        }
        _ => bail!("usage: flatnet-hostile quic-idle TOKEN CONNS DATAGRAMS HOLD_SECS"),
    }
}

async fn quic_idle(token: &str, conns: usize, datagrams: usize, hold: u64) -> Result<()> {
    let t = Token::decode(token).context("token")?;
    let addr = t
        .lighthouse
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {}", t.lighthouse))?;
    let cfg = client_config(&t.fingerprint)?;
    let mut held = Vec::new();
    let mut sent = 0usize;
    let mut refused = 0usize;
    for _ in 0..conns {
        // One endpoint (one source port) per connection, like many clients.
        let ep = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
        let conn = match ep.connect_with(cfg.clone(), addr, SERVER_NAME)?.await {
            Ok(c) => c,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        if let Some(max) = conn.max_datagram_size() {
            let payload = bytes::Bytes::from(vec![0x5a; max]);
            for _ in 0..datagrams {
                if conn.send_datagram(payload.clone()).is_ok() {
                    sent += 1;
                }
            }
        }
        held.push((ep, conn));
    }
    println!(
        "connections {} refused {refused} datagrams {sent}",
        held.len()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    Ok(())
}
