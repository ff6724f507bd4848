//! The service catalog over HTTP: `GET /v1/catalog` returns
//! [`flatnet_wire::catalog::Catalog`] as JSON, built from the leases of
//! containers that have a DNS-safe name and publish at least one port;
//! `GET /v1/catalog/all` adds every peer's (see [`super::federation`]);
//! `GET /v1/route` tells the gateway next to this host which address to
//! route the Flatnet through ([`crate::gwroute::route_answer`]).
//!
//! The server is deliberately tiny (HTTP/1.1, one request per connection,
//! bounded head, timeouts): it serves read-only documents to gateways.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flatnet_wire::{
    catalog::{is_dns_label, Catalog, Service, ServicePort, CATALOG_VERSION},
    policy::gateway_of,
    Lease,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use super::federation::{Peer, PeerCatalogs, MAX_BODY};
use crate::service::SharedService;

const MAX_HEAD: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; gateways need one each per refresh.
pub const MAX_CONNS: usize = 128;
/// A request head must arrive this soon after the connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer's catalog must arrive within this (the gateway waits for ours).
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

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
                owner: None,
            })
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name).then(a.ip.cmp(&b.ip)));
    Catalog {
        version: CATALOG_VERSION,
        node: node.to_string(),
        services,
        peers: vec![],
        gateways: vec![],
    }
}

/// What the catalog server shares between requests.
struct Server {
    service: SharedService,
    /// The port peers serve their catalogs on: ours.
    port: u16,
    peers: Mutex<PeerCatalogs>,
}

/// Serve the catalog until the task is dropped.
///
/// At most [`MAX_CONNS`] connections at once (more are closed at once), and
/// a request head must arrive within [`HEAD_TIMEOUT`], so idle connections
/// cannot pile up and take the process's file descriptors (which the API
/// socket needs too).
pub async fn serve(listener: TcpListener, service: SharedService) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let server = Arc::new(Server {
        service,
        port,
        peers: Mutex::new(PeerCatalogs::default()),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "catalog: {MAX_CONNS} connections open; closing a new one");
                    continue;
                };
                let svc = server.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(IO_TIMEOUT, handle(stream, peer, svc)).await {
                        Ok(Err(e)) => debug!(%peer, "catalog request: {e}"),
                        Err(_) => debug!(%peer, "catalog request timed out"),
                        Ok(Ok(())) => {}
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(
                    "accepting on the catalog listener: {}; retrying",
                    flatnet_wire::plain_error(&e)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The status line and body for a request head.
pub fn respond(head: &[u8], catalog: impl FnOnce() -> Result<Catalog, String>) -> (u16, String) {
    let (method, path) = request_line(head);
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/catalog" | "/v1/catalog/all") => match catalog() {
            Ok(c) => match serde_json::to_string(&c) {
                Ok(body) => (200, body),
                Err(e) => (500, error_body(&e.to_string())),
            },
            Err(e) => (503, error_body(&e)),
        },
        (_, "/v1/catalog" | "/v1/catalog/all") => (405, error_body("only GET is allowed")),
        _ => (
            404,
            error_body("not found; the catalog is at /v1/catalog (this host) and /v1/catalog/all (the Flatnet), the gateway route at /v1/route"),
        ),
    }
}

/// Whether a request needs a catalog built (and peers asked, for `all`):
/// only a GET of one of the two catalog paths does.
fn wants_catalog(head: &[u8]) -> Option<bool> {
    match request_line(head) {
        (m, p) if m == "GET" && p == "/v1/catalog" => Some(false),
        (m, p) if m == "GET" && p == "/v1/catalog/all" => Some(true),
        _ => None,
    }
}

/// Method and path (without query) of a request head.
fn request_line(head: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    (method, path.to_string())
}

/// The request head (up to the blank line, or just past [`MAX_HEAD`]);
/// `None` if the client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(head))
}

/// This host's catalog, and with `all` every peer's merged in.
async fn catalog_for(server: &Arc<Server>, all: bool) -> Result<Catalog, String> {
    let svc = server.service.clone();
    let st = tokio::task::spawn_blocking(move || svc.status())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.message)?;
    let mut own = build(&st.node, &st.leases);
    // Where this host and its peers listen themselves: never gateway targets.
    own.gateways = std::iter::once(st.network.gateway)
        .chain(st.peers.iter().map(|p| gateway_of(p.subnet)))
        .collect();
    let dns = server.service.dns();
    let owned = |mut c: Catalog| {
        if let Some(d) = &dns {
            for s in &mut c.services {
                s.owner = Some(d.owns(&s.name, s.ip));
            }
        }
        c
    };
    if !all {
        return Ok(owned(own));
    }
    let peers: Vec<Peer> = st
        .peers
        .iter()
        .map(|p| Peer {
            name: p.name.clone(),
            subnet: p.subnet,
        })
        .collect();
    let due = server
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .claim_due(&peers, Instant::now());
    let mut fetches = tokio::task::JoinSet::new();
    for p in due {
        let port = server.port;
        fetches.spawn(async move {
            let addr = SocketAddr::from((gateway_of(p.subnet), port));
            let r = match tokio::time::timeout(PEER_TIMEOUT, fetch(addr)).await {
                Ok(r) => r,
                Err(_) => Err(format!("{addr}: no answer within {PEER_TIMEOUT:?}")),
            };
            (p, r)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = fetches.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    let now = Instant::now();
    let mut pc = server.peers.lock().unwrap_or_else(|e| e.into_inner());
    for (p, r) in results {
        if let Err(e) = &r {
            debug!(peer = %p.name, "peer catalog: {e}");
        }
        pc.record(&p, r, now);
    }
    Ok(owned(pc.merge(own, &peers, now)))
}

/// `GET http://addr/v1/catalog`: a peer's own catalog.
async fn fetch(addr: SocketAddr) -> Result<Catalog, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let req = format!("GET /v1/catalog HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
        if resp.len() > MAX_BODY + MAX_HEAD {
            return Err(format!("{addr}: catalog larger than {MAX_BODY} bytes"));
        }
    }
    parse_response(&resp).map_err(|e| format!("{addr}: {e}"))
}

/// Status and JSON body of a catalog response (read until close).
pub fn parse_response(resp: &[u8]) -> Result<Catalog, String> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP head")?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status:?}"));
    }
    serde_json::from_slice(&resp[split + 4..]).map_err(|e| format!("malformed catalog: {e}"))
}

fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: Arc<Server>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    if head.len() > MAX_HEAD {
        let resp = "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        return stream.write_all(resp.as_bytes()).await;
    }
    if request_line(&head) == ("GET".to_string(), "/v1/route".to_string()) {
        let cfg = server.service.config();
        let facts = crate::gwroute::gather(cfg.cidr, cfg.forward_from.clone());
        let answer = crate::gwroute::route_answer(&facts, &cfg.node_name, peer.ip());
        let body = serde_json::to_string(&answer).unwrap_or_else(|e| error_body(&e.to_string()));
        return write_response(&mut stream, 200, &body).await;
    }
    let catalog = match wants_catalog(&head) {
        Some(all) => catalog_for(&server, all).await,
        None => Err(String::new()), // answered 404/405 without it
    };
    let (code, body) = respond(&head, move || catalog);
    write_response(&mut stream, code, &body).await
}

async fn write_response(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
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

    #[test]
    fn only_a_get_of_a_catalog_path_builds_one() {
        assert_eq!(
            wants_catalog(b"GET /v1/catalog/all HTTP/1.1\r\n\r\n"),
            Some(true)
        );
        assert_eq!(
            wants_catalog(b"GET /v1/catalog?x=1 HTTP/1.1\r\n\r\n"),
            Some(false)
        );
        for head in [
            &b"POST /v1/catalog/all HTTP/1.1\r\n\r\n"[..],
            b"HEAD /v1/catalog/all HTTP/1.1\r\n\r\n",
            b"GET /v1/other HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(
                wants_catalog(head),
                None,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

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
                .map(|p| PortMapping::simple(*p, None, "TCP"))
                .collect(),
            aliases: vec![],
            publish: false,
            internal: false,
            created: 0,
            refreshed: 0,
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

    #[test]
    fn the_flatnet_wide_path_is_served_and_recognised() {
        let ok = || Ok(build("h1", &[]));
        assert_eq!(respond(b"GET /v1/catalog/all HTTP/1.1\r\n\r\n", ok).0, 200);
        assert_eq!(respond(b"PUT /v1/catalog/all HTTP/1.1\r\n\r\n", ok).0, 405);
        assert_eq!(
            request_line(b"GET /v1/catalog/all?x=1 HTTP/1.1\r\n\r\n").1,
            "/v1/catalog/all"
        );
        assert_eq!(
            request_line(b"GET /v1/catalog HTTP/1.1\r\n\r\n").1,
            "/v1/catalog"
        );
        assert_eq!(request_line(b"").1, "");
    }

    #[test]
    fn peer_responses_are_parsed_strictly() {
        let body =
            serde_json::to_string(&build("h2", &[lease(Some("web"), "10.87.2.5", &[80])])).unwrap();
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let c = parse_response(ok.as_bytes()).unwrap();
        assert_eq!(c.services[0].name, "web");
        assert!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}")
                .unwrap_err()
                .contains("503")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n{\"version\":").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nno end of head").is_err());
        assert!(parse_response(b"").is_err());
    }
}
