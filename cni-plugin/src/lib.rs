//! The `flatnet` plugin's library: CNI ([`cni`]) and netavark
//! ([`netavark`]) front ends over one attach path ([`attach`]) and its
//! netlink edge ([`netlink`]). The binary (`src/main.rs`) is the process
//! entry; the library exists so parsers can be fuzzed (tests/fuzz).

pub mod attach;
pub mod cni;
pub mod netavark;
pub mod netlink;
