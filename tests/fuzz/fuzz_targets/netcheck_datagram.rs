//! Datagrams anyone can send to the Lighthouse's netcheck port, and replies
//! (or lookalikes) a node's data plane hands to netcheck: no panic, and an
//! answer never longer than what provoked it (the port is no amplifier).
#![no_main]
use std::net::SocketAddr;

use flatnet_lighthouse::netcheck::{answer, Answer};
use flatnet_wire::probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let from = SocketAddr::from(([203, 0, 113, 9], 40000));
    if let Some(a) = answer(data, from) {
        let (Answer::Same(b) | Answer::Other(b)) = &a;
        assert!(b.len() <= data.len(), "{} bytes answered with {}", data.len(), b.len());
    }
    let _ = probe::parse_reply(data);
    let _ = probe::parse_ack(data);
    let _ = probe::parse_probe(data);
    let _ = probe::parse_request(data);
});
