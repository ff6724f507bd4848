//! A peer's catalog as flatnetd fetches it: an HTTP response with a JSON
//! body, then the federation check against the peer's subnet.
#![no_main]
use flatnetd::api::{
    catalog::parse_response,
    federation::{accept, Peer},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_response(data) {
        let peer = Peer {
            name: "h2".into(),
            subnet: "10.87.2.0/24".parse().expect("literal"),
        };
        if let Ok(services) = accept(&peer, c) {
            for s in services {
                assert!(peer.subnet.contains(&s.ip));
                assert_eq!(s.node, "h2");
            }
        }
    }
});
