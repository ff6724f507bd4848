//! Netlink operations used to wire a container, one module per object in
//! the style of rtnetlink: [`link`] (`ip link`), [`addr`] (`ip addr`),
//! [`route`] (`ip route`), and [`netns`] (`ip netns exec`).
//!
//! A [`Netlink`] is bound to the network namespace of the thread that
//! creates it: the kernel fixes a netlink socket's namespace at creation.

pub mod addr;
pub mod link;
pub mod netns;
pub mod route;

use std::future::Future;

use tokio::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("{op}: {}", flatnet_wire::plain_error(source))]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("{op}: {}", flatnet_wire::plain_error(source))]
    Io { op: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl NlError {
    /// The errno of a kernel NACK, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            NlError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attach an operation description to a netlink result.
pub(crate) trait Ctx<T> {
    fn ctx(self, op: impl FnOnce() -> String) -> Result<T, NlError>;
}

impl<T> Ctx<T> for Result<T, rtnetlink::Error> {
    fn ctx(self, op: impl FnOnce() -> String) -> Result<T, NlError> {
        self.map_err(|source| NlError::Netlink { op: op(), source })
    }
}

impl<T> Ctx<T> for Result<T, std::io::Error> {
    fn ctx(self, op: impl FnOnce() -> String) -> Result<T, NlError> {
        self.map_err(|source| NlError::Io { op: op(), source })
    }
}

/// An rtnetlink connection plus the single-threaded runtime that drives it.
pub struct Netlink {
    rt: Runtime,
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Open a route netlink socket in the calling thread's namespace.
    pub fn new() -> Result<Self, NlError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .ctx(|| "creating runtime".into())?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().ctx(|| "opening netlink socket".into())?
        };
        rt.spawn(conn);
        Ok(Self { rt, handle })
    }

    pub(crate) fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}
