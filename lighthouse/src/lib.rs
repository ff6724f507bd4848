//! The Flatnet Lighthouse: where nodes join with a token, get a host subnet,
//! learn each other's endpoints, get hole-punching brokered, and relay
//! WireGuard packets when punching fails.
//!
//! Sans-IO core first: [`registry`] (membership, subnets, tokens, peer
//! views), [`token`] (join tokens that pin the certificate), [`proof`]
//! (proof that a node holds its WireGuard private key, without revealing
//! it), [`budget`] (what one member may ask of the others, per second). The I/O edges: [`store`] (redb), [`cert`] (self-signed certificate
//! and the pinning verifier nodes use), [`server`] (QUIC), [`admin`] (local
//! unix socket used by the `lighthouse` CLI), [`metrics`] (Prometheus), [`netcheck`] (what a node learns about its NAT).

pub mod admin;
pub mod admission;
pub mod backend;
pub mod backup;
pub mod budget;
pub mod cert;
pub mod client;
pub mod etcd;
pub mod fanout;
pub mod link;
pub mod members;
pub mod metrics;
pub mod netcheck;
pub mod presence;
pub mod proof;
pub mod registry;
pub mod relay_queue;
pub mod server;
pub mod store;
pub mod sync;
pub mod tcp;
pub mod token;
