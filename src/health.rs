//! Operators' view of a running daemon: an HTTP listener (`metrics_listen`)
//! serving Prometheus text at `/metrics` and a health check at `/healthz`,
//! and a TCP health port (`health_tcp_listen`) for a Network Load Balancer.
//!
//! Healthy means capture files can be written: `/healthz` answers `200 ok`,
//! or `503` with the writer's last error (disk full, permission, …) until a
//! write succeeds again. An NLB health-checks a UDP target group over TCP,
//! by default on the traffic port, and counts a completed handshake as
//! healthy; so the TCP health port is listening only while healthy: when
//! output fails it is closed (connections are refused) and the target leaves
//! the NLB's rotation by itself, and it is opened again once writing works.
//!
//! A minimal HTTP/1.1 server: one request per connection, GET only, bounded
//! request size and time; enough for Prometheus and load balancers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{Counters, render_prometheus};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on TCP {addr} for `{key}`: {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
}

/// Binds the metrics listener (so a bad address fails at start).
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, HealthError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind {
            addr,
            key: "metrics_listen",
            source,
        })
}

/// Serves `/metrics` and `/healthz` forever.
pub async fn serve_metrics(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let c = counters.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(conn, &c)).await;
        });
    }
}

async fn answer(mut conn: TcpStream, c: &Counters) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || req.len() > 8192 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(c),
        ),
        ("GET", "/healthz") => match c.unhealthy() {
            None => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
            Some(why) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("unhealthy: capture files cannot be written: {why}\n"),
            ),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// The TCP health port: listening while healthy, closed while not.
pub async fn serve_tcp_health(addr: SocketAddr, counters: Arc<Counters>) {
    let mut listener: Option<TcpListener> = None;
    loop {
        let healthy = counters.unhealthy().is_none();
        match (&listener, healthy) {
            (None, true) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!("health_tcp_listen: accepting on {addr}");
                    listener = Some(l);
                }
                Err(e) => tracing::warn!("health_tcp_listen: cannot listen on {addr}: {e}"),
            },
            (Some(_), false) => {
                tracing::warn!(
                    "health_tcp_listen: output cannot be written; closing {addr} so the load balancer takes this target out"
                );
                listener = None;
            }
            _ => {}
        }
        match &listener {
            Some(l) => {
                if let Ok(Ok((conn, _))) =
                    tokio::time::timeout(Duration::from_millis(500), l.accept()).await
                {
                    drop(conn); // the handshake is the answer
                }
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
