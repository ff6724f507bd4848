//! Prometheus metrics: `GET /metrics` on `[metrics] listen` (off unless
//! set; see docs/operations.md for every metric).
//!
//! Two sources, one registry:
//! - [`counters`]: events counted as they happen (drops by reason, relay
//!   traffic, punching, Lighthouse sessions, API requests, DNS answers),
//!   process-wide atomics the data plane bumps without knowing whether
//!   metrics are served;
//! - [`collect`]: a `prometheus-client` collector that reads the same
//!   status `flatnetctl status` shows (peers, leases, the Lighthouse
//!   session) on each scrape, so nothing per-packet is added for metrics.
//!
//! The HTTP side is [`flatnet_wire::metrics_http`], shared with the
//! Lighthouse.

pub mod collect;
pub mod counters;

use std::sync::Arc;

use prometheus_client::{encoding::prometheus_text, registry::Registry};

pub use counters::{counters, Drop};

use crate::service::SharedService;

/// The registry of one flatnetd: the event counters and the status
/// collector.
pub fn registry(service: SharedService) -> Registry {
    let mut r = Registry::default();
    let c = counters();
    r.register_collector(Box::new(DropCollector));
    r.register(
        "flatnet_relay_transmit_bytes",
        "WireGuard bytes sent to peers through the Lighthouse relay",
        c.relay_tx_bytes.clone(),
    );
    r.register(
        "flatnet_relay_transmit_datagrams",
        "WireGuard datagrams sent to peers through the Lighthouse relay",
        c.relay_tx_datagrams.clone(),
    );
    r.register(
        "flatnet_relay_receive_bytes",
        "WireGuard bytes received from peers through the Lighthouse relay",
        c.relay_rx_bytes.clone(),
    );
    r.register(
        "flatnet_relay_receive_datagrams",
        "WireGuard datagrams received from peers through the Lighthouse relay",
        c.relay_rx_datagrams.clone(),
    );
    r.register(
        "flatnet_punch_requests",
        "Hole-punch requests sent to the Lighthouse",
        c.punch_requests.clone(),
    );
    r.register(
        "flatnet_path_to_direct",
        "Peers moved to a direct path (a punch or first contact worked)",
        c.path_to_direct.clone(),
    );
    r.register(
        "flatnet_path_to_relay",
        "Peers moved to the relay (no direct path yet, or it died)",
        c.path_to_relay.clone(),
    );
    r.register(
        "flatnet_lighthouse_sessions",
        "Lighthouse sessions started (the first, then every reconnect)",
        c.lh_sessions.clone(),
    );
    r.register(
        "flatnet_lighthouse_session_ends",
        "Lighthouse sessions that ended (the Lighthouse went away, or the network)",
        c.lh_session_ends.clone(),
    );
    r.register(
        "flatnet_api_requests",
        "Local API requests (plugin, flatnetctl) by operation and result",
        c.api.clone(),
    );
    r.register(
        "flatnet_dns_responses",
        "Flatnet DNS responses by transport and response code",
        c.dns.clone(),
    );
    r.register_collector(Box::new(collect::StatusCollector { service }));
    r
}

/// `flatnet_dataplane_drops_total{reason}`: every reason, zeros included,
/// so a rate() never starts from a missing series.
#[derive(Debug)]
struct DropCollector;

impl prometheus_client::collector::Collector for DropCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::{counter::ConstCounter, MetricType};
        collect::family(
            &mut enc,
            "flatnet_dataplane_drops",
            "Datagrams and packets the data plane dropped, by reason",
            MetricType::Counter,
            Drop::ALL.map(|d| {
                (
                    [("reason", d.as_str())],
                    ConstCounter::new(counters().drops(d)),
                )
            }),
        )
    }
}

/// Renders the registry as Prometheus text (format 0.0.4), for the HTTP endpoint.
pub fn renderer(registry: Registry) -> flatnet_wire::metrics_http::Render {
    let registry = Arc::new(registry);
    Arc::new(move || {
        let mut out = String::with_capacity(8192);
        prometheus_text::encode(&mut out, &registry)
            .map_err(|_| "encoding the metrics failed".to_string())?;
        Ok(out)
    })
}
