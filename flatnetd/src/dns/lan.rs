//! The LAN zone: `<service>.<gateway domain>` answered with the gateway's
//! own LAN address, so office machines reach Flatnet services through the
//! gateway with no hosts-file entries. Pure, like [`super::answer`].
//!
//! The gateway (nginx's stream proxy) forwards LAN DNS to this host's
//! Flatnet DNS; the office DNS server delegates or conditionally forwards
//! the gateway domain to the gateway (docs/dns.md, "From the LAN").
//!
//! What is answered, authoritatively, to anyone who asks:
//! - `<name>.<lan>` when `<name>` is a bare Flatnet name (the same ownership
//!   rule as inside the Flatnet), one of `[dns.lan] names` (static gateway
//!   routes) or `gateway` (the status page): A = the gateway address;
//! - `<name>.<node>.<lan>` when that node has `<name>`;
//! - other types of a known name: empty NOERROR; the apex: SOA and NS;
//! - anything else under `<lan>`: NXDOMAIN. No zone transfer.
//!
//! Only the gateway's address ever leaves: never a Flatnet address, so the
//! LAN learns nothing about the Flatnet beyond which names exist (which the
//! gateway's 404 page lists anyway).

use std::{collections::BTreeSet, net::Ipv4Addr};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{
        rdata::{A, NS, SOA},
        Name, RData, Record, RecordType,
    },
};

use super::{
    answer::{encode, Outcome, Transport},
    table::NameTable,
};

/// TTL of LAN answers: office resolvers may cache a little longer than
/// containers do, since the answer (the gateway) rarely changes.
pub const LAN_TTL: u32 = 10;
/// The name of the gateway itself (its status page, and the zone's NS).
pub const GATEWAY_LABEL: &str = "gateway";

/// The LAN zone's fixed facts (from `[dns.lan]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanZone {
    /// The gateway domain, fully qualified, lowercase.
    pub domain: Name,
    /// The gateway's LAN address: the only address ever answered.
    pub address: Ipv4Addr,
    /// Extra names (the gateway's static routes), lowercase labels.
    pub names: BTreeSet<String>,
}

impl LanZone {
    /// Whether `name` (lowercase) is inside this zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.domain.zone_of(name)
    }

    fn known(&self, labels: &[String], table: &NameTable) -> bool {
        match labels {
            [name] => {
                name == GATEWAY_LABEL || self.names.contains(name) || !table.bare(name).is_empty()
            }
            [name, node] => !table.on_node(name, node).is_empty(),
            _ => false,
        }
    }

    fn soa(&self) -> Record {
        let gw = self.gateway_name();
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone());
        Record::from_rdata(
            self.domain.clone(),
            LAN_TTL,
            RData::SOA(SOA::new(gw, rname, 1, 60, 60, 3600, LAN_TTL)),
        )
    }

    fn gateway_name(&self) -> Name {
        Name::from_ascii(GATEWAY_LABEL)
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone())
    }
}

/// Answer `q` (already known to be inside `lan`) into `resp`.
pub fn answer(
    mut resp: Message,
    req: &Message,
    q: &Query,
    table: &NameTable,
    lan: &LanZone,
    t: Transport,
) -> Outcome {
    resp.metadata.authoritative = true;
    resp.metadata.recursion_available = false;
    let qname = q.name().to_lowercase();
    let n = usize::from(qname.num_labels() - lan.domain.num_labels());
    let labels: Vec<String> = qname
        .iter()
        .take(n)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    if labels.is_empty() {
        match q.query_type() {
            RecordType::SOA => {
                resp.add_answer(lan.soa());
            }
            RecordType::NS => {
                resp.add_answer(Record::from_rdata(
                    lan.domain.clone(),
                    LAN_TTL,
                    RData::NS(NS(lan.gateway_name())),
                ));
            }
            RecordType::AXFR | RecordType::IXFR => {
                resp.metadata.response_code = ResponseCode::Refused;
            }
            _ => {
                resp.add_authority(lan.soa());
            }
        }
        return encode(resp, req, t);
    }
    if !lan.known(&labels, table) {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(lan.soa());
        return encode(resp, req, t);
    }
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        resp.add_answer(Record::from_rdata(
            q.name().clone(),
            LAN_TTL,
            RData::A(A(lan.address)),
        ));
    } else {
        resp.add_authority(lan.soa());
    }
    encode(resp, req, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{
        answer::{
            domain_name,
            testing::{self, a},
            Scope, Zone,
        },
        table::Entry,
    };

    fn zone() -> Zone {
        Zone {
            domain: domain_name("flatnet").unwrap(),
            cidr: "10.87.0.0/16".parse().unwrap(),
            node: "h1".into(),
            serial: 7,
            lan: Some(LanZone {
                domain: domain_name("flatnet.example").unwrap(),
                address: "192.168.10.5".parse().unwrap(),
                names: ["wiki".to_string()].into(),
            }),
        }
    }

    fn table() -> NameTable {
        let mut t = NameTable::default();
        let e = |n: &str, ip: &str| Entry {
            name: n.into(),
            ip: ip.parse().unwrap(),
            primary: true,
        };
        t.set_node("h1", &[e("web", "10.87.1.2")], |_| 1);
        t.set_node("h2", &[e("web", "10.87.2.2"), e("db", "10.87.2.3")], |_| 2);
        t
    }

    fn ask(name: &str, rt: RecordType, scope: Scope) -> Result<Message, Outcome> {
        testing::ask(name, rt, &table(), &zone(), Transport::Udp, scope)
    }

    #[test]
    fn known_names_get_the_gateway_address_only() {
        for name in [
            "web.flatnet.example",
            "WEB.Flatnet.Example.",
            "db.flatnet.example",
            "web.h2.flatnet.example",
            "wiki.flatnet.example",
            "gateway.flatnet.example",
        ] {
            let m = ask(name, RecordType::A, Scope::Lan).unwrap();
            assert_eq!(a(&m), ["192.168.10.5"], "{name}");
            assert!(m.metadata.authoritative, "{name}");
            assert!(!m.metadata.recursion_available, "{name}");
            assert_eq!(m.answers[0].ttl, LAN_TTL);
        }
    }

    #[test]
    fn unknown_names_are_nxdomain_and_other_types_empty() {
        for name in [
            "nope.flatnet.example",
            "db.h1.flatnet.example",
            "a.b.c.flatnet.example",
        ] {
            let m = ask(name, RecordType::A, Scope::Lan).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert_eq!(m.authorities.len(), 1, "{name}: SOA for negative caching");
        }
        let m = ask("web.flatnet.example", RecordType::AAAA, Scope::Lan).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn apex_has_soa_and_ns_but_no_transfer() {
        let m = ask("flatnet.example", RecordType::NS, Scope::Lan).unwrap();
        match &m.answers[0].data {
            RData::NS(ns) => assert_eq!(ns.0.to_ascii(), "gateway.flatnet.example."),
            other => panic!("{other:?}"),
        }
        let m = ask("flatnet.example", RecordType::SOA, Scope::Lan).unwrap();
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        let m = ask("flatnet.example", RecordType::AXFR, Scope::Lan).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn outsiders_get_the_lan_zone_and_nothing_else() {
        // Inside the Flatnet everything still works, the LAN zone included.
        let m = ask("web.flatnet", RecordType::A, Scope::All).unwrap();
        assert_eq!(a(&m), ["10.87.1.2"]);
        let m = ask("web.flatnet.example", RecordType::A, Scope::All).unwrap();
        assert_eq!(a(&m), ["192.168.10.5"]);
        // From the LAN: no Flatnet names, no PTR, no forwarding.
        for name in [
            "web.flatnet",
            "web",
            "2.1.87.10.in-addr.arpa",
            "example.com",
            "_names.flatnet",
        ] {
            assert_eq!(
                ask(name, RecordType::A, Scope::Lan).unwrap_err(),
                Outcome::Refuse,
                "{name}"
            );
        }
    }
}
