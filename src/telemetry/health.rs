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
//!
//! Both listeners keep answering when the process has run out of file
//! descriptors (sessions hold capture files open): each keeps one spare
//! descriptor (`/dev/null`); when `accept` fails with EMFILE or ENFILE the
//! spare is closed so the waiting connection can be taken and answered
//! (503 then, as the writer cannot create files either), and it is opened
//! again once that connection is closed. Other accept errors, and EMFILE
//! with no spare left, back off 100 ms instead of spinning; they are
//! logged at most every 10 s.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::telemetry::metrics::{Counters, LogLimiter, render_prometheus};

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

/// How long one connection may take to send its request and read the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after an accept error that retrying at once would not cure.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A descriptor held in reserve for accepting one connection when the
/// process has none left (see the module doc).
struct Spare(Option<OwnedFd>);

impl Spare {
    fn new() -> Spare {
        let mut s = Spare(None);
        s.refill();
        s
    }

    /// Opens the spare again if it was used (no-op when held).
    fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
        }
    }

    /// Closes the spare, freeing one descriptor; false if there was none.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }
}

/// The process (or the system) is out of file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// What [`accept`] got.
enum Accepted {
    /// A connection; `spare` says the spare descriptor was used for it, so
    /// it is to be answered and closed before anything else is accepted.
    Conn { conn: TcpStream, spare: bool },
    /// Nothing (an error, after a back-off); try again.
    Retry,
}

/// Accepts one connection on `l`, using the spare descriptor when the
/// process has no other, backing off after other errors.
async fn accept(l: &TcpListener, spare: &mut Spare, log: &mut LogLimiter, what: &str) -> Accepted {
    spare.refill();
    let e = match l.accept().await {
        Ok((conn, _)) => return Accepted::Conn { conn, spare: false },
        Err(e) => e,
    };
    if out_of_descriptors(&e) && spare.release() {
        match l.accept().await {
            Ok((conn, _)) => return Accepted::Conn { conn, spare: true },
            Err(e2) => {
                if let Some(held) = log.allow() {
                    tracing::warn!(error = %e2, held_back = held, "{what}: accept failed although a descriptor was freed; retrying in {ACCEPT_BACKOFF:?}");
                }
            }
        }
    } else if let Some(held) = log.allow() {
        tracing::warn!(error = %e, held_back = held, "{what}: accept failed; retrying in {ACCEPT_BACKOFF:?}");
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
    Accepted::Retry
}

/// Serves `/metrics` and `/healthz` forever.
pub async fn serve_metrics(listener: TcpListener, counters: Arc<Counters>) {
    let mut spare = Spare::new();
    let mut log = LogLimiter::new(Duration::from_secs(10));
    loop {
        match accept(&listener, &mut spare, &mut log, "metrics_listen").await {
            Accepted::Conn { conn, spare: true } => {
                // Answered here, so the descriptor is free again for the
                // spare before the next accept.
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(conn, &counters)).await;
            }
            Accepted::Conn { conn, spare: false } => {
                let c = counters.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(conn, &c)).await;
                });
            }
            Accepted::Retry => {}
        }
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
    let mut spare = Spare::new();
    let mut log = LogLimiter::new(Duration::from_secs(10));
    let mut bind_log = LogLimiter::new(Duration::from_secs(10));
    loop {
        let healthy = counters.unhealthy().is_none();
        match (&listener, healthy) {
            (None, true) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!("health_tcp_listen: accepting on {addr}");
                    listener = Some(l);
                }
                Err(e) => {
                    if let Some(held) = bind_log.allow() {
                        tracing::warn!(
                            held_back = held,
                            "health_tcp_listen: cannot listen on {addr}: {e}"
                        )
                    }
                }
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
                if let Ok(Accepted::Conn { conn, .. }) = tokio::time::timeout(
                    Duration::from_millis(500),
                    accept(l, &mut spare, &mut log, "health_tcp_listen"),
                )
                .await
                {
                    drop(conn); // the handshake is the answer
                }
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
