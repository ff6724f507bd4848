//! flatnetd: the per-host Flatnet daemon.
//!
//! Layout, from the inside out:
//! - [`ipam`]: address allocation. [`ipam::pool`] is the pure allocator,
//!   [`ipam::store`] keeps leases in redb, crash-safe and transactional.
//! - [`service`]: answers local API [`flatnet_wire::Request`]s; no I/O of its own
//!   beyond the lease store, so it is tested without sockets.
//! - [`api`]: the unix-socket server and the HTTP catalog endpoint.
//! - [`hostnet`]: host-level networking flatnetd owns (forwarding, masquerade).
//! - [`config`] reads `/etc/flatnet/flatnetd.toml`.
//! - [`lighthouse`]: joining a Lighthouse, peers from it, hole punching, relay.

pub mod api;
pub mod config;
pub mod dataplane;
pub mod hostnet;
pub mod ipam;
pub mod lighthouse;
pub mod service;
pub mod status;
