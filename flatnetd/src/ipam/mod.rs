//! IP address management: which container attachment holds which address.
//!
//! [`pool`] decides (pure, no I/O); [`store`] remembers (redb, one write
//! transaction per change, so a crash or `kill -9` never leaves a half-made
//! lease and never loses a committed one).

pub mod pool;
pub mod store;

pub use pool::Pool;
pub use store::{IpamError, LeaseStore};
