//! I/O edges of the daemon: the local unix-socket API and the HTTP catalog.

pub mod catalog;
pub mod federation;
pub mod unix;
