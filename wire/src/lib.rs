//! Wire types shared by every Flatnet component.
//!
//! Everything that crosses a process boundary is defined here, once:
//! - [`api`]: the local API spoken on flatnetd's unix socket by the `flatnet`
//!   plugin and `flatnetctl` (one JSON request line, one JSON response line);
//! - [`catalog`]: the service catalog the gateway reads over HTTP;
//! - [`client`]: the one blocking client of the local API;
//! - [`cli`]: how every binary prints an error and ends (once per cause,
//!   JSON under `--json`);
//! - [`veth`]: the host-side interface names the plugin creates;
//! - [`probe`]: MTU probes and netcheck messages on the WireGuard port;
//! - [`fs`]: private state files, written atomically (both daemons);
//! - `logging`, `metrics_http` and `systemd` (feature `daemon`): log
//!   format and live log levels, the `/metrics` endpoint both daemons
//!   serve, and their readiness and watchdog notifications.
//!
//! Keeping them in one small crate means every side agrees on the
//! format at compile time and the types can be unit-tested without sockets.

pub mod api;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod framing;
pub mod fs;
pub mod lighthouse;
#[cfg(feature = "daemon")]
pub mod logging;
#[cfg(feature = "daemon")]
pub mod metrics_http;
pub mod policy;
pub mod probe;
#[cfg(feature = "daemon")]
pub mod systemd;
pub mod veth;

pub use api::{
    ApiError, AttachmentId, AttachmentKey, DnsConfig, ErrorKind, HostStatus, Lease,
    LighthouseStatus, NetcheckReport, NetworkInfo, PeerStatus, PortMapping, ProbeResult, Reply,
    Request, Response,
};

/// An error's message as a user should read it: Rust's io errors end in
/// " (os error N)", which says nothing to a user, so it is dropped.
pub fn plain_error(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " (os error ".len()..];
        match tail.find(')') {
            Some(j) if j > 0 && tail[..j].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &tail[j + 1..];
            }
            _ => {
                out.push_str(" (os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_error_numbers_are_dropped() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(super::plain_error(&e), "No such file or directory");
        assert_eq!(
            super::plain_error(&"a (os error 19): b (os error x)"),
            "a: b (os error x)"
        );
    }
}
