//! What the Lighthouse benches share.

use std::{
    net::{Ipv4Addr, TcpListener, UdpSocket},
    path::Path,
    process::Command,
    sync::Arc,
};

use flatnet_lighthouse::server::grow_buffers;

/// A QUIC client endpoint on its own loopback address, with the same large
/// buffers as the Lighthouse's: the Lighthouse caps handshakes in flight
/// per source address, as it would see real hosts.
pub fn client_endpoint(ip: Ipv4Addr) -> quinn::Endpoint {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    grow_buffers(&s);
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        s,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap()
}

/// A TCP port free on loopback now.
#[allow(dead_code)] // not every bench starts servers of its own
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lighthouse ARGS` against the admin socket `admin`; its output.
pub fn lighthouse_cli(bin: &Path, admin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .env("LIGHTHOUSE_ADMIN_SOCKET", admin)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "lighthouse {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
