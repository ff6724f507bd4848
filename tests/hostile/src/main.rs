//! A misbehaving Flatnet member, for the security suite
//! (`tests/integration/080-security.bats`). Each subcommand reproduces one
//! attack against the real Lighthouse; it prints what it managed to do and
//! asserts nothing (the suite checks the victim).
//!
//! ```text
//! flatnet-hostile quic-idle TOKEN CONNS DATAGRAMS HOLD_SECS
//! flatnet-hostile relay-frags TOKEN NAME TARGET RATE SECS
//! flatnet-hostile relay-handshakes TOKEN NAME TARGET RATE SECS
//! flatnet-hostile relay-flood TOKEN NAME TARGET RATE SECS
//! flatnet-hostile aim TOKEN NAME TARGET BYSTANDER_IP SECS
//! flatnet-hostile names ADDR ZONE SECS LABEL=IP...
//! flatnet-hostile join-flood TOKEN a.b.c.X-Y PER SECS
//! flatnet-hostile joins TOKEN N WITHIN_SECS [TRIES]
//! ```
//! - `quic-idle`: open CONNS QUIC connections to the Lighthouse of TOKEN
//!   that finish the TLS handshake but never say Hello, each sending
//!   DATAGRAMS full-size datagrams, and hold them for HOLD_SECS.
//! - `relay-frags`: join as member NAME (a real member: valid token, real
//!   key proof), then send node TARGET, through the Lighthouse's relay,
//!   RATE fresh first fragments per second for SECS seconds.
//! - `relay-handshakes`: the same, with WireGuard handshake initiations
//!   that carry a valid MAC1 for TARGET's key (from made-up static keys):
//!   each costs the target an X25519 if it looks before it limits.
//! - `relay-flood`: the same with RATE full-size (1200-byte) datagrams a
//!   second: the relay hog, trying to starve other members' relayed traffic
//!   to TARGET.
//! - `aim`: join claiming local addresses at BYSTANDER_IP (not a member),
//!   loopback and the Flatnet, then for SECS seconds send 50 `Update`s a
//!   second (new ports each time, on the bystander and on its own address)
//!   and 50 `Punch` requests a second for TARGET: trying to aim TARGET's
//!   probes at the bystander and to make it probe and rebuild nonstop.
//! - `names`: be a member host's Flatnet DNS on ADDR (its gateway
//!   address, port 53) and serve the name-sync zone ZONE (`_names.flatnet`)
//!   with the given records for SECS seconds: labels may hold dots
//!   (`web.h1` is one label), addresses may be anywhere. Peers sync it over
//!   the tunnel; the suite checks what they kept.
//! - `join-flood`: from every address a.b.c.X to a.b.c.Y, keep PER QUIC
//!   connections to the Lighthouse that never say Hello, reopening each
//!   the moment it closes, for SECS seconds: the join lockout.
//! - `joins`: N honest joins (reusable TOKEN) one after another, each
//!   retrying for up to WITHIN_SECS (and at most TRIES times); prints how
//!   many got in.

mod flood;
mod names;

use std::{net::ToSocketAddrs, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;

use flatnet_lighthouse::{
    client::{client_config, join, Joined},
    server::write_frame,
    token::Token,
};
use flatnet_wire::lighthouse::{relay_encode, NodeMsg, SERVER_NAME};

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
        Some("relay-frags") => {
            let (t, name, target) = (&args[2], &args[3], &args[4]);
            let j = member(t, name, vec![]).await?;
            relay_frags(&j, target, arg(&args, 5, "RATE")?, arg(&args, 6, "SECS")?).await
        }
        Some("relay-flood") => {
            let (t, name, victim) = (&args[2], &args[3], &args[4]);
            let j = member(t, name, vec![]).await?;
            let (to, _) = target(&j, victim)?;
            // Full-size datagrams that look like WireGuard data (type 4):
            // the target's data plane drops them after a lookup, the relay
            // carries every byte.
            let junk: Vec<Vec<u8>> = (0..256u32)
                .map(|i| {
                    let mut p = vec![0x5a; 1200];
                    p[..4].copy_from_slice(&[4, 0, 0, 0]);
                    p[4..8].copy_from_slice(&i.to_le_bytes());
                    p
                })
                .collect();
            let sent = relay_flood(
                &j,
                to,
                &junk,
                arg(&args, 5, "RATE")?,
                arg(&args, 6, "SECS")?,
            )
            .await;
            println!("relay datagrams sent {sent}");
            Ok(())
        }
        Some("relay-handshakes") => {
            let (t, name, target) = (&args[2], &args[3], &args[4]);
            let j = member(t, name, vec![]).await?;
            relay_handshakes(&j, target, arg(&args, 5, "RATE")?, arg(&args, 6, "SECS")?).await
        }
        Some("aim") => {
            let (t, name, target) = (&args[2], &args[3], &args[4]);
            let by: std::net::IpAddr = arg(&args, 5, "BYSTANDER_IP")?;
            let secs: u64 = arg(&args, 6, "SECS")?;
            let mut claims: Vec<SocketAddr> = (1..=8).map(|p| SocketAddr::new(by, p)).collect();
            claims.push("127.0.0.1:51820".parse()?);
            claims.push("10.87.9.9:51820".parse()?);
            let j = member(t, name, claims).await?;
            aim(j, target, by, secs).await
        }
        Some("names") => {
            let addr: SocketAddr = arg(&args, 2, "ADDR")?;
            let zone = args.get(3).ok_or_else(|| anyhow!("ZONE missing"))?;
            let secs: u64 = arg(&args, 4, "SECS")?;
            names::serve(addr, zone, secs, &args[5..]).await
        }
        Some("join-flood") => {
            let (t, addrs) = (&args[2], &args[3]);
            flood::join_flood(t, addrs, arg(&args, 4, "PER")?, arg(&args, 5, "SECS")?).await
        }
        Some("joins") => {
            let tries = if args.len() > 5 {
                arg(&args, 5, "TRIES")?
            } else {
                usize::MAX
            };
            flood::joins(
                &args[2],
                arg(&args, 3, "N")?,
                arg(&args, 4, "WITHIN_SECS")?,
                tries,
            )
            .await
        }
        _ => bail!(
            "usage: flatnet-hostile quic-idle TOKEN CONNS DATAGRAMS HOLD_SECS\n       \
             flatnet-hostile relay-frags TOKEN NAME TARGET RATE SECS\n       \
             flatnet-hostile relay-handshakes TOKEN NAME TARGET RATE SECS\n       \
             flatnet-hostile relay-flood TOKEN NAME TARGET RATE SECS\n       \
             flatnet-hostile aim TOKEN NAME TARGET BYSTANDER_IP SECS\n       \
             flatnet-hostile names ADDR ZONE SECS LABEL=IP...\n       \
             flatnet-hostile join-flood TOKEN a.b.c.X-Y PER SECS\n       \
             flatnet-hostile joins TOKEN N WITHIN_SECS [TRIES]"
        ),
    }
}

fn lighthouse_of(token: &str) -> Result<(Token, SocketAddr)> {
    let t = Token::decode(token).context("token")?;
    let addr = t
        .lighthouse
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {}", t.lighthouse))?;
    Ok((t, addr))
}

/// Join as a real member with a fresh key, claiming `local_addrs`.
async fn member(token: &str, name: &str, local_addrs: Vec<SocketAddr>) -> Result<Joined> {
    let (t, addr) = lighthouse_of(token)?;
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    let ep = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
    let j = join(
        &ep,
        addr,
        &t.fingerprint,
        &secret,
        name,
        Some(token.to_string()),
        local_addrs,
    )
    .await?;
    println!(
        "joined as node {} ({}), seen at {}",
        j.node_id, j.subnet, j.observed
    );
    Ok(j)
}

/// Update and Punch spam (see the `aim` subcommand).
async fn aim(mut j: Joined, target_name: &str, by: std::net::IpAddr, secs: u64) -> Result<()> {
    let (to, _) = target(&j, target_name)?;
    let me = j.observed.ip();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut updates, mut punches, mut k) = (0u64, 0u64, 0u16);
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        k = k.wrapping_add(1);
        let mut local: Vec<SocketAddr> = (0..8)
            .map(|i| SocketAddr::new(by, 1000 + (k.wrapping_mul(8) + i) % 30000))
            .collect();
        local.extend((0..8).map(|i| SocketAddr::new(me, 2000 + (k.wrapping_mul(8) + i) % 30000)));
        if write_frame(&mut j.send, &NodeMsg::Update { local_addrs: local })
            .await
            .is_ok()
        {
            updates += 1;
        }
        if write_frame(&mut j.send, &NodeMsg::Punch { peer: to })
            .await
            .is_ok()
        {
            punches += 1;
        }
    }
    println!("updates sent {updates} punches sent {punches}");
    Ok(())
}

/// The node id and WireGuard key of member `name`.
fn target(j: &Joined, name: &str) -> Result<(u32, [u8; 32])> {
    use base64::Engine;
    let p = j
        .peers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow!("no member named {name}"))?;
    let key = base64::engine::general_purpose::STANDARD.decode(&p.public_key)?;
    let key: [u8; 32] = key.try_into().map_err(|_| anyhow!("bad key"))?;
    Ok((p.node_id, key))
}

/// Send `packets` (cycling) to node `to` through the relay, `rate` per
/// second for `secs` seconds; returns how many went out.
async fn relay_flood(j: &Joined, to: u32, packets: &[Vec<u8>], rate: u64, secs: u64) -> u64 {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut sent = 0u64;
    let mut next = packets.iter().cycle();
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let Some(p) = next.next() else { return sent };
            if j.conn.send_datagram(relay_encode(to, p).into()).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// Handshake initiations to `target` (valid MAC1), from made-up keys.
async fn relay_handshakes(j: &Joined, target_name: &str, rate: u64, secs: u64) -> Result<()> {
    use boringtun::{
        noise::{Tunn, TunnResult},
        x25519::{PublicKey, StaticSecret},
    };
    let (to, key) = target(j, target_name)?;
    let mut inits = Vec::new();
    for i in 0..256u32 {
        let me = StaticSecret::random_from_rng(rand_core::OsRng);
        let mut t = Tunn::new(me, PublicKey::from(key), None, None, i, None);
        let mut out = vec![0u8; 256];
        if let TunnResult::WriteToNetwork(p) = t.format_handshake_initiation(&mut out, true) {
            inits.push(p.to_vec());
        }
    }
    let sent = relay_flood(j, to, &inits, rate, secs).await;
    println!("handshake initiations sent {sent}");
    Ok(())
}

/// Fresh first fragments (`[0xF0][id][0][2]`, see flatnetd's relay.rs) to
/// `target`, `rate` per second.
async fn relay_frags(j: &Joined, target_name: &str, rate: u64, secs: u64) -> Result<()> {
    let (to, _) = target(j, target_name)?;
    let frags: Vec<Vec<u8>> = (0..=u16::MAX)
        .map(|id| {
            let [hi, lo] = id.to_be_bytes();
            vec![0xF0, hi, lo, 0, 2, 0x5a, 0x5a, 0x5a]
        })
        .collect();
    let sent = relay_flood(j, to, &frags, rate, secs).await;
    println!("first fragments sent {sent}");
    Ok(())
}

async fn quic_idle(token: &str, conns: usize, datagrams: usize, hold: u64) -> Result<()> {
    let (t, addr) = lighthouse_of(token)?;
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
