//! The service catalog over HTTP: `GET /v1/catalog` returns
//! [`flatnet_wire::catalog::Catalog`] as JSON, built from the leases of
//! containers that have a DNS-safe name and publish at least one port.
//!
//! The server is deliberately tiny (HTTP/1.1, one request per connection,
//! bounded head, timeouts): it serves one read-only document to gateways.

use std::time::Duration;

use flatnet_wire::{
    catalog::{is_dns_label, Catalog, Service, ServicePort, CATALOG_VERSION},
    Lease,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use crate::service::SharedService;

const MAX_HEAD: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Build the catalog of `node` from its leases.
pub fn build(node: &str, leases: &[Lease]) -> Catalog {
    let mut services: Vec<Service> = leases
        .iter()
        .filter_map(|l| {
            let name = l.container_name.as_deref()?.to_ascii_lowercase();
            if !is_dns_label(&name) || l.ports.is_empty() {
                return None;
            }
            let mut ports: Vec<ServicePort> = l
                .ports
                .iter()
                .map(|p| ServicePort {
                    port: p.container_port,
                    protocol: p.protocol.to_ascii_lowercase(),
                })
                .filter(|p| p.port != 0)
                .collect();
            ports.dedup();
            Some(Service {
                name,
                node: node.to_string(),
                ip: l.ip,
                ports,
            })
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name).then(a.ip.cmp(&b.ip)));
    Catalog {
        version: CATALOG_VERSION,
        node: node.to_string(),
        services,
    }
}

/// Serve the catalog until the task is dropped.
pub async fn serve(listener: TcpListener, service: SharedService) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let svc = service.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(IO_TIMEOUT, handle(stream, svc)).await {
                        Ok(Err(e)) => debug!(%peer, "catalog request: {e}"),
                        Err(_) => debug!(%peer, "catalog request timed out"),
                        Ok(Ok(())) => {}
                    }
                });
            }
            Err(e) => {
                warn!("accept on catalog listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The status line and body for a request head.
pub fn respond(head: &[u8], catalog: impl FnOnce() -> Result<Catalog, String>) -> (u16, String) {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/v1/catalog") => match catalog() {
            Ok(c) => match serde_json::to_string(&c) {
                Ok(body) => (200, body),
                Err(e) => (500, error_body(&e.to_string())),
            },
            Err(e) => (503, error_body(&e)),
        },
        (_, "/v1/catalog") => (405, error_body("only GET is allowed")),
        _ => (404, error_body("not found; the catalog is at /v1/catalog")),
    }
}

fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

async fn handle(mut stream: TcpStream, service: SharedService) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            let resp = "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
            return stream.write_all(resp.as_bytes()).await;
        }
    }
    let svc = service.clone();
    let (code, body) = tokio::task::spawn_blocking(move || {
        respond(&head, || {
            let st = svc.status().map_err(|e| e.message)?;
            Ok(build(&st.node, &st.leases))
        })
    })
    .await
    .unwrap_or_else(|e| (500, error_body(&e.to_string())));
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use flatnet_wire::{AttachmentKey, PortMapping};

    use super::*;

    fn lease(name: Option<&str>, ip: &str, ports: &[u16]) -> Lease {
        Lease {
            key: AttachmentKey {
                network: "flatnet".into(),
                container_id: format!("id-{ip}"),
                ifname: "eth0".into(),
            },
            ip: ip.parse().unwrap(),
            netns: None,
            container_name: name.map(String::from),
            ports: ports
                .iter()
                .map(|p| PortMapping {
                    container_port: *p,
                    host_port: None,
                    protocol: "TCP".into(),
                })
                .collect(),
            created: 0,
        }
    }

    #[test]
    fn only_named_containers_with_ports() {
        let c = build(
            "h1",
            &[
                lease(Some("Forgejo"), "10.87.1.5", &[3000, 22]),
                lease(None, "10.87.1.6", &[80]),
                lease(Some("quiet"), "10.87.1.7", &[]),
                lease(Some("bad_name"), "10.87.1.8", &[80]),
            ],
        );
        assert_eq!(c.version, 1);
        assert_eq!(c.services.len(), 1);
        let s = &c.services[0];
        assert_eq!(s.name, "forgejo");
        assert_eq!(s.node, "h1");
        assert_eq!(s.ports[0].port, 3000);
        assert_eq!(s.ports[0].protocol, "tcp");
    }

    #[test]
    fn routes_and_methods() {
        let ok = || Ok(build("h1", &[]));
        assert_eq!(respond(b"GET /v1/catalog HTTP/1.1\r\n\r\n", ok).0, 200);
        assert_eq!(respond(b"POST /v1/catalog HTTP/1.1\r\n\r\n", ok).0, 405);
        assert_eq!(respond(b"GET /etc/passwd HTTP/1.1\r\n\r\n", ok).0, 404);
        assert_eq!(respond(b"\xff\xfe garbage", ok).0, 404);
        assert_eq!(
            respond(b"GET /v1/catalog HTTP/1.1\r\n\r\n", || Err("db".into())).0,
            503
        );
    }
}
