//! `names`: a member host's name-sync zone, poisoned. Answers the SOA
//! serial over UDP and the whole zone (AXFR) over TCP, as flatnetd's DNS
//! does, with whatever records it is given.

use std::{net::SocketAddr, time::Duration};

use anyhow::{anyhow, Context, Result};
use hickory_proto::{
    op::{Message, MessageType, OpCode},
    rr::{
        rdata::{A, SOA},
        Label, Name, RData, Record, RecordType,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

/// `LABEL=IP` → one A record `LABEL.<zone>`; LABEL is one label even if it
/// holds dots.
fn records(zone: &Name, specs: &[String]) -> Result<Vec<Record>> {
    specs
        .iter()
        .map(|s| {
            let (label, ip) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("expected LABEL=IP, got {s}"))?;
            let label = Label::from_raw_bytes(label.as_bytes())
                .map_err(|e| anyhow!("label {label}: {e}"))?;
            let mut labels = vec![label];
            labels.extend(
                zone.iter()
                    .map(|l| Label::from_raw_bytes(l).expect("zone label")),
            );
            let name = Name::from_labels(labels).map_err(|e| anyhow!("name for {s}: {e}"))?;
            let ip: std::net::Ipv4Addr = ip.parse().with_context(|| format!("address in {s}"))?;
            Ok(Record::from_rdata(name, 10, RData::A(A(ip))))
        })
        .collect()
}

fn soa(zone: &Name, serial: u32) -> Record {
    Record::from_rdata(
        zone.clone(),
        10,
        RData::SOA(SOA::new(zone.clone(), zone.clone(), serial, 1, 1, 60, 10)),
    )
}

/// The answer to one query: SOA, or the whole zone for AXFR (and ANY).
fn answer(q: &[u8], zone: &Name, recs: &[Record], serial: u32) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    let query = req.queries.first()?;
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.add_query(query.clone());
    resp.add_answer(soa(zone, serial));
    if query.query_type() == RecordType::AXFR {
        for r in recs {
            resp.add_answer(r.clone());
        }
        resp.add_answer(soa(zone, serial));
    }
    resp.to_vec().ok()
}

pub async fn serve(addr: SocketAddr, zone: &str, secs: u64, specs: &[String]) -> Result<()> {
    let zone = Name::from_ascii(format!("{}.", zone.trim_end_matches('.')))?;
    let recs = records(&zone, specs)?;
    let serial = 7;
    let udp = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding UDP {addr}"))?;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding TCP {addr}"))?;
    println!("serving {} poisoned names in {zone} on {addr}", recs.len());
    let (mut soas, mut axfrs) = (0u64, 0u64);
    let end = tokio::time::sleep(Duration::from_secs(secs));
    tokio::pin!(end);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            () = &mut end => break,
            r = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if let Some(a) = answer(&buf[..n], &zone, &recs, serial) {
                    soas += 1;
                    let _ = udp.send_to(&a, from).await;
                }
            }
            r = tcp.accept() => {
                let Ok((mut s, _)) = r else { continue };
                let Ok(n) = s.read_u16().await else { continue };
                let mut q = vec![0u8; usize::from(n)];
                if s.read_exact(&mut q).await.is_err() {
                    continue;
                }
                if let Some(a) = answer(&q, &zone, &recs, serial) {
                    axfrs += 1;
                    let len = u16::try_from(a.len()).unwrap_or(u16::MAX);
                    let _ = s.write_all(&len.to_be_bytes()).await;
                    let _ = s.write_all(&a).await;
                }
            }
        }
    }
    println!("SOA answers {soas} zone transfers {axfrs}");
    Ok(())
}
