//! Wire types shared by every Flatnet component.
//!
//! Everything that crosses a process boundary is defined here, once:
//! - [`api`]: the local API spoken on flatnetd's unix socket by the `flatnet`
//!   plugin and `flatnetctl` (one JSON request line, one JSON response line);
//! - [`catalog`]: the service catalog the gateway reads over HTTP;
//! - [`client`]: the one blocking client of the local API.
//!
//! Keeping them in one small crate means every side agrees on the
//! format at compile time and the types can be unit-tested without sockets.

pub mod api;
pub mod catalog;
pub mod client;
pub mod framing;
pub mod lighthouse;

pub use api::{
    ApiError, AttachmentId, AttachmentKey, ErrorKind, HostStatus, Lease, LighthouseStatus,
    NetworkInfo, PeerStatus, PortMapping, Reply, Request, Response,
};
