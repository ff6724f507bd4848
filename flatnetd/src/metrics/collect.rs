//! What a scrape reads from the running daemon: peers, leases and the
//! Lighthouse session, taken from the same [`HostStatus`] that
//! `flatnetctl status` shows, so the two always agree.

use flatnet_wire::HostStatus;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{ipam::Pool, service::SharedService};

/// A peer whose last handshake is older than this has no session
/// (WireGuard's reject-after time): `flatnet_peer_up` is 0.
pub const PEER_UP_SECS: u64 = 180;

/// The paths a peer can be on, for `flatnet_peer_path`.
const PATHS: [&str; 3] = ["direct", "relay", "connecting"];
/// The Lighthouse session states, for `flatnet_lighthouse_state`.
const LH_STATES: [&str; 4] = ["connecting", "connected", "reconnecting", "removed"];

/// Reads the service's status on every scrape.
#[derive(Clone)]
pub struct StatusCollector {
    pub service: SharedService,
}

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

/// One metric family: a descriptor, then one sample per label set.
pub(crate) fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.service.status() {
            Ok(st) => encode_status(&st, &mut enc),
            // The lease database failed: say so in a metric rather than
            // fail the whole scrape (the counters are still worth having).
            Err(_) => family(
                &mut enc,
                "flatnet_status_errors",
                "Scrapes whose status read failed (the lease database did not answer)",
                MetricType::Gauge,
                [([("reason", "lease_store")], ConstGauge::new(1i64))],
            ),
        }
    }
}

/// Encode one status snapshot.
pub fn encode_status(st: &HostStatus, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "flatnet_build_info",
        "Always 1; labels: this flatnetd's version and node name",
        MetricType::Gauge,
        [(
            [("version", st.version.as_str()), ("node", st.node.as_str())],
            ConstGauge::new(1i64),
        )],
    )?;
    let peers = &st.peers;
    let name = |p: &flatnet_wire::PeerStatus| [("peer", p.name.clone())];
    family(
        enc,
        "flatnet_peer_up",
        "1 when the peer's WireGuard session is fresh (a handshake within 180 s)",
        MetricType::Gauge,
        peers.iter().map(|p| {
            let up = p.last_handshake_secs.is_some_and(|s| s < PEER_UP_SECS);
            (name(p), gauge(u64::from(up)))
        }),
    )?;
    family(
        enc,
        "flatnet_peer_path",
        "How packets reach the peer: 1 for its current path (direct, relay, connecting)",
        MetricType::Gauge,
        peers.iter().flat_map(|p| {
            let cur = p.path.as_deref().unwrap_or("direct");
            PATHS.iter().map(move |path| {
                (
                    [("peer", p.name.clone()), ("path", path.to_string())],
                    gauge(u64::from(cur == *path)),
                )
            })
        }),
    )?;
    family(
        enc,
        "flatnet_peer_last_handshake_seconds",
        "Seconds since the peer's last completed handshake (absent before the first)",
        MetricType::Gauge,
        peers
            .iter()
            .filter_map(|p| Some((name(p), gauge(p.last_handshake_secs?)))),
    )?;
    family(
        enc,
        "flatnet_peer_handshakes",
        "Handshakes completed with the peer",
        MetricType::Counter,
        peers
            .iter()
            .map(|p| (name(p), ConstCounter::new(p.handshakes))),
    )?;
    for (metric, help, get) in [
        (
            "flatnet_peer_receive_bytes",
            "WireGuard UDP payload bytes received from the peer (authenticated)",
            (|p| Some(p.rx_bytes)) as fn(&flatnet_wire::PeerStatus) -> Option<u64>,
        ),
        (
            "flatnet_peer_transmit_bytes",
            "WireGuard UDP payload bytes sent to the peer",
            |p| Some(p.tx_bytes),
        ),
        (
            "flatnet_peer_receive_packets",
            "WireGuard datagrams received from the peer (authenticated)",
            |p| p.rx_packets,
        ),
        (
            "flatnet_peer_transmit_packets",
            "WireGuard datagrams sent to the peer",
            |p| p.tx_packets,
        ),
    ] {
        family(
            enc,
            metric,
            help,
            MetricType::Counter,
            peers
                .iter()
                .filter_map(|p| Some((name(p), ConstCounter::new(get(p)?)))),
        )?;
    }
    family(
        enc,
        "flatnet_peer_path_mtu_bytes",
        "Probed path MTU toward the peer's endpoint (outer IPv4 packets)",
        MetricType::Gauge,
        peers
            .iter()
            .filter_map(|p| Some((name(p), gauge(u64::from(p.path_mtu?))))),
    )?;
    let mut by_net: std::collections::BTreeMap<&str, u64> = Default::default();
    for l in &st.leases {
        *by_net.entry(l.key.network.as_str()).or_default() += 1;
    }
    family(
        enc,
        "flatnet_leases",
        "Flatnet IP leases held, per Podman network",
        MetricType::Gauge,
        by_net
            .into_iter()
            .map(|(n, c)| ([("network", n.to_string())], gauge(c))),
    )?;
    family(
        enc,
        "flatnet_lease_pool_addresses",
        "Addresses this host can lease in its subnet (all networks share them)",
        MetricType::Gauge,
        [(
            [("subnet", st.network.subnet.to_string())],
            gauge(u64::from(Pool::new(st.network.subnet).capacity())),
        )],
    )?;
    family(
        enc,
        "flatnet_lease_pool_used",
        "Addresses of the subnet leased now",
        MetricType::Gauge,
        [(
            [("subnet", st.network.subnet.to_string())],
            gauge(st.leases.len() as u64),
        )],
    )?;
    if let Some(lh) = &st.lighthouse {
        family(
            enc,
            "flatnet_lighthouse_state",
            "The Lighthouse session: 1 for the current state",
            MetricType::Gauge,
            LH_STATES
                .iter()
                .map(|s| ([("state", s.to_string())], gauge(u64::from(lh.state == *s)))),
        )?;
        family(
            enc,
            "flatnet_lighthouse_state_seconds",
            "Seconds in the current Lighthouse session state",
            MetricType::Gauge,
            [([("state", lh.state.clone())], gauge(lh.since_secs))],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatnet_wire::{LighthouseStatus, NetworkInfo, PeerStatus};
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixed(HostStatus);
    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_status(&self.0, &mut enc)
        }
    }

    fn peer(name: &str, path: Option<&str>, hs: Option<u64>) -> PeerStatus {
        PeerStatus {
            last_handshake_secs: hs,
            handshakes: 3,
            rx_bytes: 1000,
            tx_bytes: 2000,
            rx_packets: Some(10),
            tx_packets: Some(20),
            path: path.map(Into::into),
            node_id: Some(2),
            path_mtu: Some(1500),
            ..crate::test_peer(name, "10.87.2.0/24")
        }
    }

    fn render(st: HostStatus) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixed(st)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn status_becomes_metrics() {
        let mut lease = crate::test_lease("c1", "10.87.1.2");
        lease.key.network = "web".into();
        let st = HostStatus {
            node: "h1".into(),
            version: "0.1.0".into(),
            network: NetworkInfo {
                cidr: "10.87.0.0/16".parse().expect("net"),
                subnet: "10.87.1.0/24".parse().expect("net"),
                gateway: "10.87.1.1".parse().expect("ip"),
                mtu: 1420,
                dns: None,
            },
            leases: vec![lease],
            public_key: None,
            peers: vec![
                peer("h2", Some("relay"), Some(7)),
                peer("h\"3", None, Some(400)),
                peer("h4", Some("connecting"), None),
            ],
            lighthouse: Some(LighthouseStatus {
                address: "lh:7871".into(),
                state: "connected".into(),
                node_id: Some(1),
                observed: None,
                last_error: None,
                since_secs: 42,
                transport: Some("quic".into()),
                lighthouses: vec![],
            }),
            forward_from: vec![],
        };
        let out = render(st);
        for want in [
            r#"flatnet_build_info{version="0.1.0",node="h1"} 1"#,
            r#"flatnet_peer_up{peer="h2"} 1"#,
            // A stale session, and a hostile name escaped.
            r#"flatnet_peer_up{peer="h\"3"} 0"#,
            r#"flatnet_peer_up{peer="h4"} 0"#,
            r#"flatnet_peer_path{peer="h2",path="relay"} 1"#,
            r#"flatnet_peer_path{peer="h2",path="direct"} 0"#,
            r#"flatnet_peer_path{peer="h\"3",path="direct"} 1"#,
            r#"flatnet_peer_last_handshake_seconds{peer="h2"} 7"#,
            r#"flatnet_peer_receive_bytes_total{peer="h2"} 1000"#,
            r#"flatnet_peer_transmit_packets_total{peer="h2"} 20"#,
            r#"flatnet_peer_handshakes_total{peer="h2"} 3"#,
            r#"flatnet_peer_path_mtu_bytes{peer="h2"} 1500"#,
            r#"flatnet_leases{network="web"} 1"#,
            r#"flatnet_lease_pool_addresses{subnet="10.87.1.0/24"} 253"#,
            r#"flatnet_lease_pool_used{subnet="10.87.1.0/24"} 1"#,
            r#"flatnet_lighthouse_state{state="connected"} 1"#,
            r#"flatnet_lighthouse_state{state="reconnecting"} 0"#,
            r#"flatnet_lighthouse_state_seconds{state="connected"} 42"#,
            "# TYPE flatnet_peer_receive_bytes_total counter",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        assert!(
            !out.contains(r#"flatnet_peer_last_handshake_seconds{peer="h4"}"#),
            "{out}"
        );
    }
}
