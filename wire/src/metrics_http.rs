//! The `/metrics` endpoint flatnetd and the Lighthouse serve: HTTP/1.1 on
//! hyper, `GET /metrics` answered with whatever the daemon's renderer
//! returns (Prometheus text from `prometheus-client`), anything else with
//! a plain 404 or 405.
//!
//! The renderer runs on the blocking pool: it may take the daemons' locks
//! (the lease database, the peer table) for a moment, and a slow scrape
//! must not stall the runtime. Connections are capped and each one gets a
//! deadline, so a scraper that stalls cannot pile up tasks.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// Builds the exposition on each scrape.
pub type Render = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Prometheus' text format 0.0.4, which
/// `prometheus_client::encoding::prometheus_text` writes: what every
/// Prometheus version, promtool and most collectors read.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes served at once; more wait for a free slot.
pub const MAX_CONNS: usize = 16;
/// A connection lives at most this long (Prometheus scrapes every 15 s or so).
pub const CONN_DEADLINE: Duration = Duration::from_secs(30);

/// Bind the metrics listener; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot listen for metrics on {addr}: {e}; pick a free address \
             (the metrics listen setting) or turn metrics off"
        )
    })
}

/// Serve `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Render) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, render.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONN_DEADLINE, conn).await;
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(
    req: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let started = Instant::now();
    let body = tokio::task::spawn_blocking(move || render())
        .await
        .unwrap_or_else(|_| Err("the metrics renderer panicked".into()));
    Ok(match body {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
            if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", started.elapsed().as_secs_f64()))
            {
                r.headers_mut().insert("x-render-seconds", v);
            }
            r
        }
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("metrics unavailable: {e}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, head: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let l = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = n.clone();
        let render: Render = Arc::new(move || {
            let v = n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if v == 1 {
                Err("database busy".into())
            } else {
                Ok(format!("x_total {v}\n# EOF\n"))
            }
        });
        tokio::spawn(serve(l, render));
        let close = "Connection: close\r\n\r\n";
        let ok = get(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.ends_with("x_total 0\n# EOF\n"), "{ok}");
        let err = get(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(err.starts_with("HTTP/1.1 500"), "{err}");
        assert!(err.contains("metrics unavailable: database busy"), "{err}");
        let nf = get(addr, &format!("GET /admin HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let post = get(
            addr,
            &format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{close}"),
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );
        let junk = get(addr, "\x16\x03\x01garbage\r\n\r\n").await;
        assert!(
            junk.starts_with("HTTP/1.1 400") || junk.is_empty(),
            "{junk}"
        );
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
