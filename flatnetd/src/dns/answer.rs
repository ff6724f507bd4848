//! Building DNS answers from the name table. Pure: a query's bytes in, an
//! [`Outcome`] out; hickory-proto does all of the wire format, so no DNS
//! parsing is written by hand here.
//!
//! What is answered (the domain defaults to `flatnet`):
//! - `<name>`, `<name>.<domain>`: A by the ownership rule ([`super::table`]);
//! - `<name>.<node>.<domain>`: A of that node's container;
//! - AAAA (or any other type) of a known name: empty NOERROR, never NXDOMAIN;
//! - an unknown name under `<domain>`: NXDOMAIN, authoritatively;
//! - PTR of a Flatnet address: `<name>.<node>.<domain>`;
//! - SOA of `<domain>` and of `_names.<domain>`, and AXFR of `_names.<domain>`
//!   (TCP only): this host's own names, which peers fetch over the tunnel;
//! - names under the gateway domain (`[dns.lan]`): see [`super::lan`];
//! - anything else: [`Outcome::Forward`] to the host's resolvers.
//!
//! Askers outside the Flatnet ([`Scope::Lan`]) get the LAN zone and nothing
//! else: [`Outcome::Refuse`].

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, PTR, SOA},
        DNSClass, Name, RData, Record, RecordType,
    },
};
use ipnet::Ipv4Net;

use super::{lan::LanZone, table::NameTable};

/// TTL of Flatnet answers: short, so a removed container is forgotten at
/// once by any caching resolver in front of us.
pub const TTL: u32 = 1;
/// The label under the domain whose SOA/AXFR carry this host's own names.
pub const NAMES_LABEL: &str = "_names";
/// The largest UDP answer without EDNS (RFC 1035).
const UDP_CLASSIC: usize = 512;
/// The largest UDP answer we send with EDNS (the DNS flag day value).
const UDP_EDNS: u16 = 1232;

/// Where an answer is going: UDP answers must fit, TCP ones may be long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The zone's fixed facts.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `flatnet.` (fully qualified, lowercase).
    pub domain: Name,
    /// The Flatnet CIDR, for PTR.
    pub cidr: Ipv4Net,
    /// This host's node name.
    pub node: String,
    /// Serial of this host's own names (changes with them).
    pub serial: u32,
    /// The gateway's LAN zone, when configured.
    pub lan: Option<LanZone>,
}

/// Who asked: the Flatnet, this host or the allow list get everything;
/// anyone else only the LAN zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Lan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: ask the host's resolvers.
    Forward,
    /// Not even a DNS header: say nothing.
    Drop,
    /// Not for this asker: REFUSED.
    Refuse,
}

/// Answer one query from the Flatnet, this host or the allow list.
pub fn answer(packet: &[u8], table: &NameTable, zone: &Zone, transport: Transport) -> Outcome {
    answer_scoped(packet, table, zone, transport, Scope::All)
}

/// Answer one query from an asker in `scope`.
pub fn answer_scoped(
    packet: &[u8],
    table: &NameTable,
    zone: &Zone,
    transport: Transport,
    scope: Scope,
) -> Outcome {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return formerr(packet),
    };
    if req.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(UDP_EDNS);
        resp.edns = Some(e);
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return encode(resp, &req, transport);
    }
    let [q] = req.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(resp, &req, transport);
    };
    resp.add_query(q.clone());
    let qname = q.name().to_lowercase();
    let lan = zone
        .lan
        .as_ref()
        .filter(|l| q.query_class() == DNSClass::IN && l.contains(&qname));
    match (lan, scope) {
        (Some(lan), _) => return super::lan::answer(resp, &req, q, table, lan, transport),
        (None, Scope::Lan) => return Outcome::Refuse,
        (None, Scope::All) => {}
    }
    if q.query_class() != DNSClass::IN {
        return Outcome::Forward;
    }
    if let Some(ip) = reverse_v4(&qname) {
        if !zone.cidr.contains(&ip) {
            return Outcome::Forward;
        }
        resp.metadata.authoritative = true;
        match table.reverse(ip) {
            Some((name, node)) if q.query_type() == RecordType::PTR => {
                if let Ok(target) = fqdn(&[name, node], &zone.domain) {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
            }
            Some(_) => {}
            None => resp.metadata.response_code = ResponseCode::NXDomain,
        }
        return encode(resp, &req, transport);
    }
    let labels = match relative(&qname, &zone.domain) {
        Some(l) => l,
        None if qname.num_labels() == 1 => {
            // A bare single label: ours if we know it, else the upstream's.
            let name = label_str(&qname, 0);
            let ips = table.bare(&name);
            if ips.is_empty() {
                return Outcome::Forward;
            }
            return addresses(resp, &req, q, &ips, transport);
        }
        None => return Outcome::Forward,
    };
    resp.metadata.authoritative = true;
    let ips = match labels.as_slice() {
        [] => return apex(resp, &req, q, zone, transport),
        [l] if l == NAMES_LABEL => return names(resp, &req, q, table, zone, transport),
        [name] => table.bare(name),
        [name, node] => table.on_node(name, node),
        _ => vec![],
    };
    if ips.is_empty() {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(soa(zone, &zone.domain));
        return encode(resp, &req, transport);
    }
    addresses(resp, &req, q, &ips, transport)
}

/// A records for a known name; other types get an empty NOERROR.
fn addresses(
    mut resp: Message,
    req: &Message,
    q: &Query,
    ips: &[Ipv4Addr],
    transport: Transport,
) -> Outcome {
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        for ip in ips {
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*ip))));
        }
    }
    encode(resp, req, transport)
}

/// The domain itself: SOA when asked, else an empty NOERROR.
fn apex(mut resp: Message, req: &Message, q: &Query, zone: &Zone, t: Transport) -> Outcome {
    if q.query_type() == RecordType::SOA {
        resp.add_answer(soa(zone, &zone.domain));
    } else {
        resp.add_authority(soa(zone, &zone.domain));
    }
    encode(resp, req, t)
}

/// `_names.<domain>`: SOA (its serial tells peers whether to fetch again)
/// and AXFR (this host's own names), the latter over TCP only.
fn names(
    mut resp: Message,
    req: &Message,
    q: &Query,
    table: &NameTable,
    zone: &Zone,
    t: Transport,
) -> Outcome {
    let origin = q.name().to_lowercase();
    match q.query_type() {
        RecordType::SOA => resp.add_answer(soa(zone, &origin)),
        RecordType::AXFR if t == Transport::Tcp => {
            resp.add_answer(soa(zone, &origin));
            for e in table.entries_of(&zone.node) {
                if let Ok(n) = Name::from_ascii(&e.name).and_then(|n| n.append_domain(&origin)) {
                    resp.add_answer(Record::from_rdata(n, TTL, RData::A(A(e.ip))));
                }
            }
            resp.add_answer(soa(zone, &origin))
        }
        RecordType::AXFR => {
            resp.metadata.response_code = ResponseCode::Refused;
            &mut resp
        }
        _ => resp.add_authority(soa(zone, &origin)),
    };
    encode(resp, req, t)
}

fn soa(zone: &Zone, origin: &Name) -> Record {
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(&zone.domain))
        .unwrap_or_else(|_| zone.domain.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(&zone.domain))
        .unwrap_or_else(|_| zone.domain.clone());
    Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(mname, rname, zone.serial, 1, 1, 60, TTL)),
    )
}

/// Serialise, truncating (TC) when a UDP answer does not fit.
pub(super) fn encode(resp: Message, req: &Message, t: Transport) -> Outcome {
    let limit = match (t, &req.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, UDP_EDNS)),
        (Transport::Udp, None) => UDP_CLASSIC,
    };
    match resp.to_vec() {
        Ok(b) if b.len() <= limit => Outcome::Reply(b),
        Ok(_) => resp
            .truncate()
            .to_vec()
            .map(Outcome::Reply)
            .unwrap_or(Outcome::Drop),
        Err(_) => servfail(req.metadata.id),
    }
}

fn servfail(id: u16) -> Outcome {
    Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .map(Outcome::Reply)
        .unwrap_or(Outcome::Drop)
}

/// A packet hickory cannot parse: FORMERR if it has a header to answer.
fn formerr(packet: &[u8]) -> Outcome {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Outcome::Drop; // too short, or itself a response
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .map(Outcome::Reply)
        .unwrap_or(Outcome::Drop)
}

/// The labels of `name` in front of `domain`, or `None` when it is not
/// inside `domain`.
fn relative(name: &Name, domain: &Name) -> Option<Vec<String>> {
    if !domain.zone_of(name) {
        return None;
    }
    let n = usize::from(name.num_labels() - domain.num_labels());
    Some((0..n).map(|i| label_str(name, i)).collect())
}

fn label_str(name: &Name, i: usize) -> String {
    name.iter()
        .nth(i)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .unwrap_or_default()
}

/// `d.c.b.a.in-addr.arpa.` → `a.b.c.d`.
fn reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    let labels: Vec<String> = (0..usize::from(name.num_labels()))
        .map(|i| label_str(name, i))
        .collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &String| s.parse::<u8>().ok();
            Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
        }
        _ => None,
    }
}

/// `a.b.<domain>`.
pub fn fqdn(labels: &[&str], domain: &Name) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))?.append_domain(domain)
}

/// `<domain>` as a fully qualified lowercase name.
pub fn domain_name(domain: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(domain.trim_end_matches('.'))?.to_lowercase();
    n.set_fqdn(true);
    Ok(n)
}

/// Query helpers for unit tests of the answer code.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Ask `name`/`rt` of `table` and `zone`: the parsed reply, or what
    /// else came out.
    pub fn ask(
        name: &str,
        rt: RecordType,
        table: &NameTable,
        zone: &Zone,
        t: Transport,
        scope: Scope,
    ) -> Result<Message, Outcome> {
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), rt));
        match answer_scoped(&q.to_vec().unwrap(), table, zone, t, scope) {
            Outcome::Reply(b) => Ok(Message::from_vec(&b).unwrap()),
            other => Err(other),
        }
    }

    /// The A records of an answer, as strings.
    pub fn a(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::a, *};
    use crate::dns::table::Entry;

    fn zone() -> Zone {
        Zone {
            domain: domain_name("flatnet").unwrap(),
            cidr: "10.87.0.0/16".parse().unwrap(),
            node: "h1".into(),
            serial: 7,
            lan: None,
        }
    }

    fn table() -> NameTable {
        let mut t = NameTable::default();
        let e = |n: &str, ip: &str| Entry {
            name: n.into(),
            ip: ip.parse().unwrap(),
            primary: true,
        };
        t.set_node("h1", &[e("web", "10.87.1.2"), e("db", "10.87.1.3")], |_| 1);
        t.set_node("h2", &[e("web", "10.87.2.2")], |_| 2);
        t
    }

    fn ask(name: &str, rt: RecordType, t: Transport) -> Result<Message, Outcome> {
        testing::ask(name, rt, &table(), &zone(), t, Scope::All)
    }

    #[test]
    fn bare_domain_and_per_node_names() {
        let m = ask("web", RecordType::A, Transport::Udp).unwrap();
        assert_eq!(a(&m), ["10.87.1.2"]);
        assert_eq!(m.answers[0].ttl, TTL);
        let m = ask("WEB.flatnet.", RecordType::A, Transport::Udp).unwrap();
        assert_eq!(a(&m), ["10.87.1.2"]);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        let m = ask("web.h2.flatnet", RecordType::A, Transport::Udp).unwrap();
        assert_eq!(a(&m), ["10.87.2.2"]);
    }

    #[test]
    fn aaaa_of_a_known_name_is_empty_noerror_and_unknown_is_nxdomain() {
        let m = ask("web.flatnet", RecordType::AAAA, Transport::Udp).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask("nope.flatnet", RecordType::A, Transport::Udp).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "NXDOMAIN carries the SOA");
        let m = ask("db.h2.flatnet", RecordType::A, Transport::Udp).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn ptr_for_flatnet_addresses_and_outside_names_forwarded() {
        let m = ask("3.1.87.10.in-addr.arpa", RecordType::PTR, Transport::Udp).unwrap();
        match &m.answers[0].data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "db.h1.flatnet."),
            other => panic!("{other:?}"),
        }
        let m = ask("9.9.87.10.in-addr.arpa", RecordType::PTR, Transport::Udp).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        for outside in ["example.com", "1.0.0.127.in-addr.arpa", "localhost"] {
            assert_eq!(
                ask(outside, RecordType::A, Transport::Udp).unwrap_err(),
                Outcome::Forward,
                "{outside}"
            );
        }
    }

    #[test]
    fn names_zone_serves_soa_everywhere_and_axfr_over_tcp_only() {
        let m = ask("_names.flatnet", RecordType::SOA, Transport::Udp).unwrap();
        match &m.answers[0].data {
            RData::SOA(s) => assert_eq!(s.serial, 7),
            other => panic!("{other:?}"),
        }
        let m = ask("_names.flatnet", RecordType::AXFR, Transport::Udp).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let m = ask("_names.flatnet", RecordType::AXFR, Transport::Tcp).unwrap();
        // SOA, this host's two names, SOA: never another node's.
        assert_eq!(m.answers.len(), 4);
        assert_eq!(a(&m), ["10.87.1.3", "10.87.1.2"]);
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        assert_eq!(
            answer(b"", &table(), &zone(), Transport::Udp),
            Outcome::Drop
        );
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xc0, 0x0c]); // a compression pointer to itself
        let Outcome::Reply(b) = answer(&junk, &table(), &zone(), Transport::Udp) else {
            panic!("no FORMERR")
        };
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered (no reflection loops).
        let mut resp = junk.clone();
        resp[2] |= 0x80;
        assert_eq!(
            answer(&resp, &table(), &zone(), Transport::Udp),
            Outcome::Drop
        );
    }

    #[test]
    fn big_udp_answers_are_truncated() {
        let mut t = NameTable::new(crate::dns::table::Policy {
            replicas: ["many".to_string()].into(),
            ..Default::default()
        });
        for i in 0..60u8 {
            t.set_node(
                &format!("n{i}"),
                &[Entry {
                    name: "many".into(),
                    ip: Ipv4Addr::new(10, 87, i, 2),
                    primary: true,
                }],
                |_| 1,
            );
        }
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("many.flatnet").unwrap(),
            RecordType::A,
        ));
        let bytes = q.to_vec().unwrap();
        let Outcome::Reply(b) = answer(&bytes, &t, &zone(), Transport::Udp) else {
            panic!()
        };
        let m = Message::from_vec(&b).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty());
        let Outcome::Reply(b) = answer(&bytes, &t, &zone(), Transport::Tcp) else {
            panic!()
        };
        assert_eq!(Message::from_vec(&b).unwrap().answers.len(), 60);
    }
}
