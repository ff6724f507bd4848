//! Peers' names, over the tunnel.
//!
//! Once a second, for every peer: ask its DNS server (its gateway address,
//! reached through the tunnel) for the SOA serial of `_names.<domain>`;
//! when the serial differs from the last one transferred, fetch the zone
//! with AXFR over TCP. Only addresses inside that peer's subnet are kept,
//! under the name this host knows the peer by (never a name the peer
//! claims), so a member can publish names only for its own containers.
//! A peer that does not answer keeps its last names: the tunnel outlives a
//! Lighthouse outage, and so do the names.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use flatnet_wire::catalog::is_container_address;
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};
use ipnet::Ipv4Net;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use tracing::{debug, info};

use super::{answer::NAMES_LABEL, table::Entry, Dns};
use crate::{ipam::Pool, service::SharedService};

/// How often peers are asked for their serial.
pub const PERIOD: Duration = Duration::from_secs(1);
const SOA_TIMEOUT: Duration = Duration::from_millis(700);
const AXFR_TIMEOUT: Duration = Duration::from_secs(2);
/// Most names one peer may publish.
pub const MAX_PEER_NAMES: usize = 4096;

/// The names a peer's AXFR answer carries, kept only if inside `subnet`.
pub fn entries_from_axfr(m: &Message, zone: &Name, subnet: Ipv4Net) -> Vec<Entry> {
    let mut out = Vec::new();
    for r in &m.answers {
        let RData::A(a) = &r.data else { continue };
        let name = r.name.to_lowercase();
        if !zone.zone_of(&name) || name.num_labels() != zone.num_labels() + 1 {
            continue;
        }
        // Its own containers only: not another subnet, and not its network,
        // gateway (the host itself) or broadcast address.
        if !is_container_address(subnet, a.0) || out.len() >= MAX_PEER_NAMES {
            continue;
        }
        let Some(label) = name.iter().next() else {
            continue;
        };
        // A DNS label only: one raw label may hold dots ("web.h1") or
        // anything else; the name table would drop it too.
        let Some(label) = super::table::label(&String::from_utf8_lossy(label)) else {
            continue;
        };
        // The peer lists each container's own name first.
        let primary = !out.iter().any(|e: &Entry| e.ip == a.0);
        out.push(Entry {
            name: label,
            ip: a.0,
            primary,
        });
    }
    out
}

fn query(zone: &Name, rt: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::query();
    m.add_query(Query::query(zone.clone(), rt));
    m.to_vec().ok()
}

async fn soa_serial(server: SocketAddr, zone: &Name) -> Option<u32> {
    let q = query(zone, RecordType::SOA)?;
    let s = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    s.connect(server).await.ok()?;
    s.send(&q).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(SOA_TIMEOUT, s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.metadata.id == u16::from_be_bytes([q[0], q[1]])).then_some(())?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

async fn axfr(server: SocketAddr, zone: &Name) -> Option<Message> {
    let q = query(zone, RecordType::AXFR)?;
    let work = async {
        let mut s = TcpStream::connect(server).await.ok()?;
        s.write_all(&u16::try_from(q.len()).ok()?.to_be_bytes())
            .await
            .ok()?;
        s.write_all(&q).await.ok()?;
        let n = s.read_u16().await.ok()?;
        let mut r = vec![0u8; usize::from(n)];
        s.read_exact(&mut r).await.ok()?;
        Message::from_vec(&r).ok()
    };
    tokio::time::timeout(AXFR_TIMEOUT, work).await.ok()?
}

/// One peer as the sync sees it.
#[derive(Debug, Clone)]
struct PeerRef {
    name: String,
    subnet: Ipv4Net,
}

/// Fetch one peer's names if its serial moved; returns the new serial.
async fn sync_peer(dns: &Arc<Dns>, zone: &Name, p: &PeerRef, last: Option<u32>) -> Option<u32> {
    let server = SocketAddr::from((Pool::new(p.subnet).gateway(), 53));
    let serial = soa_serial(server, zone).await?;
    if Some(serial) == last {
        return last;
    }
    let m = axfr(server, zone).await?;
    let entries = entries_from_axfr(&m, zone, p.subnet);
    let n = entries.len();
    // set_peer may save (and fsync) the first-seen times: not on the
    // runtime's threads.
    let (d, name) = (dns.clone(), p.name.clone());
    let changed =
        tokio::task::spawn_blocking(move || d.set_peer(&name, &entries, crate::unix_now()))
            .await
            .unwrap_or(false);
    if changed {
        info!(peer = %p.name, names = n, "DNS: names from peer updated");
    }
    Some(serial)
}

/// Keep the peers' names current, forever.
pub async fn run(dns: Arc<Dns>, service: SharedService) {
    let Ok(zone) = Name::from_ascii(NAMES_LABEL).and_then(|n| n.append_domain(&dns.domain()))
    else {
        return;
    };
    let mut serials: HashMap<String, u32> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let peers: Vec<PeerRef> = service
            .overlay()
            .map(|o| o.peers())
            .unwrap_or_default()
            .into_iter()
            // A /32 is a remote member (docs/members.md), a WireGuard app
            // with no Flatnet DNS to ask.
            .filter(|p| p.subnet.prefix_len() < 32)
            .map(|p| PeerRef {
                name: p.name,
                subnet: p.subnet,
            })
            .collect();
        let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        dns.retain_peers(&names);
        serials.retain(|k, _| names.contains(k));
        let results = futures::future::join_all(
            peers
                .iter()
                .map(|p| sync_peer(&dns, &zone, p, serials.get(&p.name).copied())),
        )
        .await;
        for (p, r) in peers.iter().zip(results) {
            match r {
                Some(s) => {
                    serials.insert(p.name.clone(), s);
                }
                None => debug!(peer = %p.name, "DNS: peer did not answer; keeping its last names"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{rdata::A, Record};

    use super::*;

    #[test]
    fn a_peer_publishes_only_its_own_subnet_and_one_label_names() {
        let zone = Name::from_ascii("_names.flatnet.").unwrap();
        let mut m = Message::query();
        let rec = |n: &str, ip: [u8; 4]| {
            Record::from_rdata(Name::from_ascii(n).unwrap(), 1, RData::A(A(ip.into())))
        };
        m.answers = vec![
            rec("web._names.flatnet.", [10, 87, 2, 2]),
            rec("DB._names.flatnet.", [10, 87, 2, 3]),
            rec("evil._names.flatnet.", [10, 87, 1, 9]), // someone else's subnet
            rec("host._names.flatnet.", [10, 87, 2, 1]), // its gateway: the host itself
            rec("a.b._names.flatnet.", [10, 87, 2, 4]),  // not one label
            rec("web.example.com.", [10, 87, 2, 5]),     // not the zone
        ];
        // One label that holds a dot ("web.h1"): it would read as <name>.<node>.
        let dotted = Name::from_labels(
            [&b"web.h1"[..], b"_names", b"flatnet"]
                .into_iter()
                .map(|l| hickory_proto::rr::Label::from_raw_bytes(l).unwrap()),
        )
        .unwrap();
        m.answers.push(Record::from_rdata(
            dotted,
            1,
            RData::A(A([10, 87, 2, 6].into())),
        ));
        let got = entries_from_axfr(&m, &zone, "10.87.2.0/24".parse().unwrap());
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["web", "db"]);
    }
}
