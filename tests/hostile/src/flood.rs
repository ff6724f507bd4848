//! `join-flood` and `joins`: the join lockout of the second audit, and the
//! honest nodes it locked out.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use flatnet_lighthouse::client::{client_config, join};
use flatnet_wire::lighthouse::SERVER_NAME;

use crate::lighthouse_of;

/// `a.b.c.X-Y` → every address from X to Y.
fn range(spec: &str) -> Result<Vec<IpAddr>> {
    let (base, last) = spec
        .rsplit_once('-')
        .ok_or_else(|| anyhow!("expected a.b.c.X-Y, got {spec}"))?;
    let first: std::net::Ipv4Addr = base.parse()?;
    let last: u8 = last.parse()?;
    let o = first.octets();
    Ok((o[3]..=last)
        .map(|d| IpAddr::from([o[0], o[1], o[2], d]))
        .collect())
}

/// From every address of ADDRS, keep PER connections open that finish the
/// QUIC/TLS handshake but never say Hello, reopening each as soon as it
/// closes (timeout, eviction), for SECS seconds.
pub async fn join_flood(token: &str, addrs: &str, per: usize, secs: u64) -> Result<()> {
    let (t, lh) = lighthouse_of(token)?;
    let mut cfg = client_config(&t.fingerprint)?;
    // Give up on a handshake that stalls within a second (and keep a held
    // connection alive meanwhile), so no flooding task sits idle.
    let mut tc = quinn::TransportConfig::default();
    tc.max_idle_timeout(Some(Duration::from_secs(1).try_into()?))
        .keep_alive_interval(Some(Duration::from_millis(300)));
    cfg.transport_config(Arc::new(tc));
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for ip in range(addrs)? {
        for _ in 0..per {
            let (cfg, opened, failed) = (cfg.clone(), opened.clone(), failed.clone());
            tasks.spawn(async move {
                while tokio::time::Instant::now() < end {
                    let Ok(ep) = quinn::Endpoint::client(SocketAddr::new(ip, 0)) else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let conn = match ep.connect_with(cfg.clone(), lh, SERVER_NAME) {
                        Ok(c) => c.await.ok(),
                        Err(_) => None,
                    };
                    match conn {
                        Some(c) => {
                            opened.fetch_add(1, Ordering::Relaxed);
                            let _ = tokio::time::timeout_at(end, c.closed()).await;
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "flood connections opened {} refused or failed {}",
        opened.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// N honest joins one after another with a reusable TOKEN, each retrying
/// every 250 ms (as a node would, faster) for up to WITHIN seconds and at
/// most MAX_TRIES times; prints how many got in and how long they took.
pub async fn joins(token: &str, n: usize, within: u64, max_tries: usize) -> Result<()> {
    let (t, lh) = lighthouse_of(token)?;
    let (mut ok, mut times) = (0usize, Vec::new());
    for i in 0..n {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(within);
        let mut tries = 0;
        let mut took = None;
        while Instant::now() < deadline && tries < max_tries {
            tries += 1;
            let ep = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
            let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
            let left = deadline.saturating_duration_since(Instant::now());
            let name = format!("honest{i}");
            let attempt = join(
                &ep,
                lh,
                &t.fingerprint,
                &secret,
                &name,
                Some(token.into()),
                vec![],
            );
            if let Ok(Ok(_)) = tokio::time::timeout(left, attempt).await {
                ok += 1;
                times.push(start.elapsed().as_millis());
                took = Some(start.elapsed().as_millis());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match took {
            Some(ms) => println!("join {i}: in after {ms} ms, {tries} tries"),
            None => println!("join {i}: not in after {within} s, {tries} tries"),
        }
    }
    times.sort_unstable();
    let fast = times.iter().filter(|t| **t < 1000).count();
    println!(
        "honest joins {ok} of {n} within {within} s, {fast} within 1 s; median {} ms, slowest {} ms",
        times.get(times.len() / 2).copied().unwrap_or(0),
        times.last().copied().unwrap_or(0)
    );
    Ok(())
}
