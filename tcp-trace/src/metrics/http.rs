//! The `/metrics` endpoint: a minimal HTTP/1.x responder on tokio's `TcpListener`, run
//! on the tracer's own runtime.
//!
//! No HTTP framework (hyper, axum …) on purpose: a scrape is one small GET answered
//! with one body and the connection closed, so reading a request head, matching the
//! method and path and writing a response with `Content-Length` is all that is needed;
//! a framework would add dozens of crates to a privileged binary (and to what the
//! static `dist` build links) for features nobody uses here — keep-alive,
//! chunking, TLS, routing. Requests are one per connection (`Connection: close`),
//! heads are limited in size and time, and connections are served concurrently so
//! that a slow client cannot hold up a scrape.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The OpenMetrics 1.0 text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed unanswered.
const MAX_CONNS: usize = 32;

/// Listens on `addr`; the error names the flag and the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics {addr}: cannot listen: {e}"))
}

/// Serves `/metrics` from `registry` on `listener` until the runtime ends.
pub fn spawn(listener: TcpListener, registry: Arc<Registry>) {
    let active = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    eprintln!("tcp-trace: metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Past MAX_CONNS slow clients, new ones are closed at once.
            if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNS {
                active.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let registry = Arc::clone(&registry);
            let active = Arc::clone(&active);
            tokio::spawn(async move {
                let _ = serve(stream, &registry).await;
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

async fn serve(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream, &mut head)).await;
    let response = match read {
        Ok(Ok(true)) => respond(&head, registry),
        Ok(Ok(false)) => simple(431, "Request Header Fields Too Large", &[]),
        // Closed early or timed out: nothing to answer.
        Ok(Err(_)) | Err(_) => return Ok(()),
    };
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// Reads until the blank line that ends the head: Ok(false) when it is too long,
/// an error when the peer closes first.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head_complete(head) {
            return Ok(true);
        }
        if head.len() > MAX_HEAD {
            return Ok(false);
        }
    }
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole response to a request head: 200 with the metrics for `GET /metrics`
/// (a query string is ignored; `HEAD` gets the headers only), 404 for another path,
/// 405 for another method, 400 for what is not an HTTP/1 request line.
pub fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return simple(400, "Bad Request", &[]);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return simple(400, "Bad Request", &[]);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path != "/metrics" {
        return simple(404, "Not Found", &[]);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return simple(405, "Method Not Allowed", &[("Allow", "GET, HEAD")]),
    };
    let body = super::encode(registry);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A response with a one-line plain-text body.
fn simple(code: u16, reason: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    let mut out = format!("HTTP/1.1 {code} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}
