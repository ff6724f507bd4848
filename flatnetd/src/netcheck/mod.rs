//! `flatnetctl netcheck`: what this host's network does to Flatnet traffic,
//! measured against the Lighthouse's netcheck port (see
//! `flatnet_lighthouse::netcheck`):
//! - whether the Lighthouse answers over UDP at all;
//! - this host's WireGuard port as the Lighthouse sees it, through the QUIC
//!   session and through the netcheck port: if the two differ, the NAT
//!   maps by destination (symmetric) and hole punching cannot work from here
//!   toward other NATed hosts;
//! - whether a datagram from a port this host never sent to gets in (no
//!   NAT, or a full-cone one: peers can reach it without punching);
//! - the underlay MTU toward the Lighthouse (the largest padded probe
//!   answered with the don't-fragment bit set).
//!
//! [`analyse`] turns the measurements into the report (pure, unit-tested);
//! [`io::measure`] takes them through the data plane's socket.

pub mod io;

use std::net::{IpAddr, SocketAddr};

use flatnet_wire::NetcheckReport;

/// What [`io::measure`] found, plus what the Lighthouse client knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    pub lighthouse: String,
    pub session: String,
    pub netcheck_addr: Option<SocketAddr>,
    /// This host's own addresses and WireGuard port.
    pub local_ips: Vec<IpAddr>,
    pub wg_port: u16,
    pub observed_session: Option<SocketAddr>,
    pub observed_probe: Option<SocketAddr>,
    pub reached: Option<bool>,
    pub mtu: Option<u16>,
    pub mtu_route: Option<u16>,
    /// Why measuring failed early (no address for the Lighthouse, ...).
    pub error: Option<String>,
}

/// The report, with its conclusions in words.
pub fn analyse(m: &Measured) -> NetcheckReport {
    let mut notes = Vec::new();
    if let Some(e) = &m.error {
        notes.push(e.clone());
    }
    let udp = m.observed_probe.is_some();
    if !udp && m.error.is_none() {
        notes.push(format!(
            "no answer from the Lighthouse's netcheck port {}: UDP to it is blocked on the way, \
             or the Lighthouse runs with --netcheck-listen off",
            m.netcheck_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    if m.session != "connected" {
        notes.push(format!(
            "the Lighthouse session is {}: `flatnetctl status` shows its last error",
            m.session
        ));
    }
    let no_nat = m
        .observed_probe
        .is_some_and(|o| m.local_ips.contains(&o.ip()) && o.port() == m.wg_port);
    let mapping = match (m.observed_session, m.observed_probe) {
        (Some(a), Some(b)) if a == b => "endpoint-independent",
        (Some(_), Some(_)) => "varies by destination",
        _ => "unknown",
    };
    let nat = if no_nat {
        "none"
    } else {
        match (mapping, m.reached) {
            ("varies by destination", _) => "symmetric",
            ("endpoint-independent", Some(true)) => "full-cone",
            ("endpoint-independent", _) => "cone",
            _ => "unknown",
        }
    };
    match nat {
        "none" => notes.push(
            "no NAT: peers reach this host at its own address; hole punching is not needed".into(),
        ),
        "full-cone" => notes.push(
            "full-cone NAT: any peer can reach this host at its public mapping without punching"
                .into(),
        ),
        "cone" => notes.push(
            "cone NAT (the same public port for every destination): hole punching works \
             with peers behind cone NATs; a peer behind a symmetric NAT is relayed"
                .into(),
        ),
        "symmetric" => notes.push(format!(
            "symmetric NAT: the public port changes with the destination ({} for the \
             Lighthouse session, {} for the netcheck port), so peers cannot punch through \
             it; they reach this host through the relay unless they have no NAT or a \
             full-cone one",
            opt(m.observed_session),
            opt(m.observed_probe)
        )),
        _ => {}
    }
    if let (Some(mtu), Some(route)) = (m.mtu, m.mtu_route) {
        if mtu < route {
            notes.push(format!(
                "the path to the Lighthouse carries {mtu}-byte packets, less than this \
                 host's route ({route}): flatnetd sizes the tunnel from per-peer probes"
            ));
        }
    } else if udp && m.mtu.is_none() {
        notes.push("no MTU probe was answered, not even the smallest (576 bytes)".into());
    }
    NetcheckReport {
        lighthouse: m.lighthouse.clone(),
        session: m.session.clone(),
        netcheck_addr: m.netcheck_addr.map(|a| a.to_string()),
        udp,
        observed_session: m.observed_session.map(|a| a.to_string()),
        observed_probe: m.observed_probe.map(|a| a.to_string()),
        mapping: mapping.into(),
        nat: nat.into(),
        port_reachable: m.reached,
        mtu: m.mtu,
        mtu_route: m.mtu_route,
        notes,
    }
}

fn opt(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
}

/// `flatnetctl netcheck` as text.
pub fn render(r: &NetcheckReport) -> String {
    let yes_no = |b: Option<bool>, yes: &str, no: &str| match b {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "unknown".to_string(),
    };
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line(
        &mut out,
        "Lighthouse:",
        format!("{} ({})", r.lighthouse, r.session),
    );
    line(
        &mut out,
        "UDP to netcheck port:",
        format!(
            "{} ({})",
            if r.udp { "yes" } else { "no answer" },
            r.netcheck_addr.as_deref().unwrap_or("-")
        ),
    );
    line(
        &mut out,
        "Seen by the session:",
        r.observed_session.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        &mut out,
        "Seen by netcheck:",
        r.observed_probe.clone().unwrap_or_else(|| "-".into()),
    );
    line(&mut out, "Mapping:", r.mapping.clone());
    line(&mut out, "NAT:", r.nat.clone());
    line(
        &mut out,
        "Port reachable:",
        yes_no(
            r.port_reachable,
            "yes (datagrams from new ports get in)",
            "no (only from addresses this host sent to)",
        ),
    );
    line(
        &mut out,
        "MTU to Lighthouse:",
        match (r.mtu, r.mtu_route) {
            (Some(m), Some(route)) => format!("{m} (route {route})"),
            (Some(m), None) => m.to_string(),
            (None, _) => "unknown".into(),
        },
    );
    for n in &r.notes {
        out.push_str(&format!("\n- {n}"));
    }
    if !r.notes.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Measured {
        Measured {
            lighthouse: "203.0.113.1:7871".into(),
            session: "connected".into(),
            netcheck_addr: Some("203.0.113.1:7872".parse().unwrap()),
            local_ips: vec!["192.168.1.1".parse().unwrap()],
            wg_port: 51820,
            observed_session: Some("203.0.113.11:51820".parse().unwrap()),
            observed_probe: Some("203.0.113.11:51820".parse().unwrap()),
            reached: Some(false),
            mtu: Some(1500),
            mtu_route: Some(1500),
            error: None,
        }
    }

    #[test]
    fn tells_cone_from_symmetric_from_none() {
        let r = analyse(&base());
        assert_eq!(
            (r.nat.as_str(), r.mapping.as_str()),
            ("cone", "endpoint-independent")
        );
        assert!(r.udp);
        let sym = analyse(&Measured {
            observed_probe: Some("203.0.113.11:30211".parse().unwrap()),
            ..base()
        });
        assert_eq!(sym.nat, "symmetric");
        assert!(sym.notes.iter().any(|n| n.contains("203.0.113.11:30211")));
        let full = analyse(&Measured {
            reached: Some(true),
            ..base()
        });
        assert_eq!(full.nat, "full-cone");
        let none = analyse(&Measured {
            local_ips: vec!["203.0.113.11".parse().unwrap()],
            reached: Some(true),
            ..base()
        });
        assert_eq!(none.nat, "none");
        let blocked = analyse(&Measured {
            observed_probe: None,
            reached: None,
            mtu: None,
            ..base()
        });
        assert!(!blocked.udp);
        assert_eq!(blocked.nat, "unknown");
        assert!(blocked.notes[0].contains("no answer from the Lighthouse's netcheck port"));
        let narrow = analyse(&Measured {
            mtu: Some(1400),
            ..base()
        });
        assert!(narrow.notes.iter().any(|n| n.contains("1400-byte packets")));
        let text = render(&sym);
        assert!(text.contains("NAT:                  symmetric\n"), "{text}");
        assert!(!text.contains("Some("), "{text}");
    }
}
