//! The Lighthouse's Prometheus metrics (`lighthouse serve --metrics-listen`):
//! event counters kept in [`Stats`] as things happen, and a collector that
//! reads the registry (nodes registered and online, tokens) on each scrape.

use std::sync::{Arc, Weak};

use flatnet_wire::lighthouse::LhErrorCode;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::server::Lighthouse;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JoinLabels {
    /// `accepted` or `refused`.
    pub result: &'static str,
    /// Why a join was refused (`bad_token`, `bad_proof`, `version`,
    /// `timeout`, ...); empty when accepted.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Everything the Lighthouse counts as it goes.
#[derive(Debug)]
pub struct Stats {
    pub joins: Family<JoinLabels, Counter>,
    /// Seconds one announcement round took (encoding and queueing the
    /// changes for every session).
    pub fanout_round: Histogram,
    /// Nodes disconnected because their update queue was full.
    pub queue_drops: Counter,
    pub relay_bytes: Counter,
    pub relay_datagrams: Counter,
    pub relay_drops: Family<ReasonLabels, Counter>,
    pub admin: Family<ActionLabels, Counter>,
    pub netcheck: Family<ReasonLabels, Counter>,
    /// Welcomes by kind (`full`, `delta`) and the bytes they took.
    pub welcomes: Family<KindLabels, Counter>,
    pub welcome_bytes: Family<KindLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            joins: Family::default(),
            // 50 µs .. ~0.8 s.
            fanout_round: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            queue_drops: Counter::default(),
            relay_bytes: Counter::default(),
            relay_datagrams: Counter::default(),
            relay_drops: Family::default(),
            admin: Family::default(),
            netcheck: Family::default(),
            welcomes: Family::default(),
            welcome_bytes: Family::default(),
        }
    }
}

impl Stats {
    pub fn join_accepted(&self) {
        self.joins
            .get_or_create(&JoinLabels {
                result: "accepted",
                reason: "",
            })
            .inc();
    }

    /// A refused join, by its error code; `None` for a handshake that did
    /// not finish in time.
    pub fn join_refused(&self, code: Option<LhErrorCode>) {
        let reason = code.map_or("timeout", code_str);
        self.joins
            .get_or_create(&JoinLabels {
                result: "refused",
                reason,
            })
            .inc();
    }

    pub fn relay_drop(&self, reason: &'static str) {
        self.relay_drops
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One datagram on the netcheck port: `observe`, `reach`, `mtu`,
    /// `ignored`, `rate_limited`.
    pub fn netcheck(&self, what: &'static str) {
        self.netcheck
            .get_or_create(&ReasonLabels { reason: what })
            .inc();
    }

    /// A Welcome sent: the whole peer list or a delta, and its bytes with
    /// the frames that complete it.
    pub fn welcome(&self, delta: bool, bytes: usize) {
        let l = KindLabels {
            kind: if delta { "delta" } else { "full" },
        };
        self.welcomes.get_or_create(&l).inc();
        self.welcome_bytes.get_or_create(&l).inc_by(bytes as u64);
    }

    pub fn admin_action(&self, action: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.admin
            .get_or_create(&ActionLabels { action, result })
            .inc();
    }
}

/// The wire name of an error code (`bad_token`, ...).
pub fn code_str(c: LhErrorCode) -> &'static str {
    c.as_str()
}

/// Reads the registry on each scrape. Weak: metrics must not keep a
/// stopped Lighthouse (and its database) alive.
#[derive(Debug)]
struct RegistryCollector(Weak<Lighthouse>);

impl Collector for RegistryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(lh) = self.0.upgrade() else {
            return Ok(());
        };
        let (registered, online, tokens, version) = lh.view(|r| {
            (
                r.nodes().count() as i64,
                r.nodes().filter(|n| r.is_online(n.id)).count() as i64,
                r.tokens().count() as i64,
                i64::try_from(r.log().version()).unwrap_or(i64::MAX),
            )
        });
        for (name, help, v) in [
            (
                "flatnet_lighthouse_nodes_registered",
                "Nodes that joined and were not removed",
                registered,
            ),
            (
                "flatnet_lighthouse_nodes_online",
                "Nodes with a live session now",
                online,
            ),
            (
                "flatnet_lighthouse_tokens",
                "Join tokens on record (unused, reusable or not yet expired)",
                tokens,
            ),
            (
                "flatnet_lighthouse_registry_version",
                "The registry's delta-sync version (grows with every change)",
                version,
            ),
        ] {
            let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)?;
        }
        let (unproven, evicted) = lh.unproven();
        let m = enc.encode_descriptor(
            "flatnet_lighthouse_unproven_connections",
            "Connections that have not proven their key yet (at most 64)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(unproven as i64).encode(m)?;
        let m = enc.encode_descriptor(
            "flatnet_lighthouse_unproven_evicted",
            "Unproven connections closed to make room for a newcomer (the oldest of the address holding the most)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(evicted).encode(m)?;
        let (quic, tcp) = lh.transports();
        let mut m = enc.encode_descriptor(
            "flatnet_lighthouse_sessions",
            "Live sessions by transport: quic, or tcp for networks without UDP",
            None,
            MetricType::Gauge,
        )?;
        for (t, n) in [("quic", quic), ("tcp", tcp)] {
            ConstGauge::new(n as i64).encode(m.encode_family(&[("transport", t)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "flatnet_lighthouse_build_info",
            "Always 1; labels: this Lighthouse's version",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        Ok(())
    }
}

/// The registry `/metrics` serves.
pub fn registry(lh: &Arc<Lighthouse>) -> Registry {
    let s = &lh.stats;
    let mut r = Registry::default();
    r.register(
        "flatnet_lighthouse_joins",
        "Join and reconnect handshakes, by result and refusal reason",
        s.joins.clone(),
    );
    r.register(
        "flatnet_lighthouse_fanout_round_seconds",
        "Time to queue one round of peer updates for every session",
        s.fanout_round.clone(),
    );
    r.register(
        "flatnet_lighthouse_queue_drops",
        "Nodes disconnected because they did not read their updates",
        s.queue_drops.clone(),
    );
    r.register(
        "flatnet_lighthouse_relay_bytes",
        "WireGuard bytes relayed between nodes",
        s.relay_bytes.clone(),
    );
    r.register(
        "flatnet_lighthouse_relay_datagrams",
        "WireGuard datagrams relayed between nodes",
        s.relay_datagrams.clone(),
    );
    r.register(
        "flatnet_lighthouse_relay_drops",
        "Relay datagrams not forwarded, by reason",
        s.relay_drops.clone(),
    );
    r.register(
        "flatnet_lighthouse_admin_actions",
        "Admin socket requests, by action and result",
        s.admin.clone(),
    );
    r.register(
        "flatnet_lighthouse_netcheck_datagrams",
        "Datagrams on the netcheck port, by what was done with them",
        s.netcheck.clone(),
    );
    r.register(
        "flatnet_lighthouse_welcomes",
        "Welcomes sent to connecting nodes, by kind: full peer list or delta",
        s.welcomes.clone(),
    );
    r.register(
        "flatnet_lighthouse_welcome_bytes",
        "Bytes of Welcomes and the frames that complete them, by kind",
        s.welcome_bytes.clone(),
    );
    r.register_collector(Box::new(RegistryCollector(Arc::downgrade(lh))));
    r
}

/// Renders [`registry`] as Prometheus text (format 0.0.4), for the HTTP endpoint.
pub fn renderer(lh: &Arc<Lighthouse>) -> flatnet_wire::metrics_http::Render {
    let reg = Arc::new(registry(lh));
    Arc::new(move || {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)
            .map_err(|_| "encoding the metrics failed".to_string())?;
        Ok(out)
    })
}
