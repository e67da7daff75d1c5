//! Operators' view of a running daemon: an HTTP listener (`metrics_listen`)
//! serving Prometheus text at `/metrics` and a health check at `/healthz`,
//! and a TCP health port (`health_tcp_listen`) for a Network Load Balancer.
//!
//! Healthy means capture files can be written: `/healthz` answers `200 ok`,
//! or `503` with the writer's last error (disk full, permission, …) until a
//! write succeeds again. With `[output.s3]`, `/healthz` also answers `503`
//! while a closed file has waited longer than `unhealthy_after` to be
//! uploaded (the TCP health port does not close for it: capture works,
//! and an outage of S3 would otherwise take every target out at once). An NLB health-checks a UDP target group over TCP,
//! by default on the traffic port, and counts a completed handshake as
//! healthy; so the TCP health port is listening only while healthy: when
//! output fails it is closed (connections are refused) and the target leaves
//! the NLB's rotation by itself, and it is opened again once writing works.
//!
//! HTTP/1.1 by `hyper` (http1, no keep-alive: one request per connection),
//! GET only, bounded request size (8 KiB of head) and time (5 s); enough
//! for Prometheus and load balancers. `/metrics` is the Prometheus text
//! (0.0.4), or OpenMetrics when the scraper's `Accept` asks for it
//! ([`crate::telemetry::prometheus::render_for`]). The accept loop stays
//! ours, not hyper-util's server: it holds the spare descriptor below, and
//! a connection accepted with it is answered before the next accept.
//!
//! Both listeners keep answering when the process has run out of file
//! descriptors (sessions hold capture files open): each keeps one spare
//! descriptor (`/dev/null`); when `accept` fails with EMFILE or ENFILE the
//! spare is closed so the waiting connection can be taken and answered
//! (503 then, as the writer cannot create files either), and it is opened
//! again once that connection is closed.
//!
//! At most [`MAX_CONNECTIONS`] (64) connections to `metrics_listen` are
//! open at once: each may take up to 5 s, and slow or idle clients
//! without a limit would each hold a descriptor that capture files need.
//! At the limit the listener waits to accept until one of them is done
//! (answered, or closed after the 5 s), rather than accepting and closing
//! the new one at once: a waiting connection sits in the kernel's listen
//! backlog and costs the process no descriptor, and a scraper or health
//! check behind a burst of idle clients is answered, within about 5 s,
//! instead of refused. What this guarantees: the listener never holds
//! more than 64 (+1 on the spare) descriptors, the daemon is unaffected,
//! and a request is answered once the connections ahead of it are done;
//! not that it is answered at once (a client that keeps 64 idle
//! connections open delays every request by up to 5 s). The TCP health
//! port closes each connection as it accepts it, so it needs no limit. Other accept errors, and EMFILE
//! with no spare left, back off 100 ms instead of spinning; they are
//! logged at most every 10 s.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::telemetry::counters::Counters;
use crate::telemetry::events::{AcceptFailed, HealthListenerFailed};
use crate::telemetry::log_limit::LogLimiter;
use crate::telemetry::prometheus::render_for;

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
/// Most connections to `metrics_listen` open at once (see the module doc).
pub const MAX_CONNECTIONS: usize = 64;
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
/// process has no other, backing off after other errors (counted and
/// logged as [`AcceptFailed`]).
async fn accept(
    l: &TcpListener,
    spare: &mut Spare,
    log: &mut LogLimiter,
    c: &Counters,
    listener: &'static str,
) -> Accepted {
    spare.refill();
    let e = match l.accept().await {
        Ok((conn, _)) => return Accepted::Conn { conn, spare: false },
        Err(e) => e,
    };
    let failed = |error, after_release| AcceptFailed {
        listener,
        error,
        after_release,
        retry_in: ACCEPT_BACKOFF,
    };
    if out_of_descriptors(&e) && spare.release() {
        match l.accept().await {
            Ok((conn, _)) => return Accepted::Conn { conn, spare: true },
            Err(e2) => failed(&e2, true).emit(c, log),
        }
    } else {
        failed(&e, false).emit(c, log);
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
    Accepted::Retry
}

/// Serves `/metrics` and `/healthz` forever, at most [`MAX_CONNECTIONS`]
/// connections at once.
pub async fn serve_metrics(listener: TcpListener, counters: Arc<Counters>) {
    let mut spare = Spare::new();
    let mut log = LogLimiter::new(Duration::from_secs(10));
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first: at the limit, new connections wait in the backlog.
        let Ok(slot) = limit.clone().acquire_owned().await else {
            return; // never closed
        };
        match accept(&listener, &mut spare, &mut log, &counters, "metrics_listen").await {
            Accepted::Conn { conn, spare: true } => {
                // Answered here, so the descriptor is free again for the
                // spare before the next accept.
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(conn, counters.clone())).await;
            }
            Accepted::Conn { conn, spare: false } => {
                let c = counters.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(conn, c)).await;
                    drop(slot);
                });
            }
            Accepted::Retry => {}
        }
    }
}

/// Most bytes of a request head hyper reads (its smallest setting).
const MAX_REQUEST_HEAD: usize = 8192;

/// Answers the one request of `conn` and closes it.
async fn answer(conn: TcpStream, c: Arc<Counters>) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let resp = respond(&req, &c);
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
        .await
}

/// The answer to one request: `/metrics`, `/healthz` (200 `ok`, or 503
/// with why capture files cannot be written), 404 for other paths, 405
/// for other methods.
fn respond(req: &Request<Incoming>, c: &Counters) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let accept = req.headers().get(header::ACCEPT);
            let accept = accept.and_then(|a| a.to_str().ok()).unwrap_or("");
            let (ctype, body) = render_for(accept, c);
            (StatusCode::OK, ctype, body)
        }
        (&Method::GET, "/healthz") => match (c.unhealthy(), c.uploads.unhealthy()) {
            (None, None) => (StatusCode::OK, TEXT, "ok\n".to_string()),
            (Some(why), _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("unhealthy: capture files cannot be written: {why}\n"),
            ),
            (None, Some(why)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("unhealthy: {why}\n"),
            ),
        },
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
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
                Err(error) => HealthListenerFailed {
                    addr,
                    error: &error,
                }
                .emit(&counters, &mut bind_log),
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
                    accept(l, &mut spare, &mut log, &counters, "health_tcp_listen"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 request (keep-alive by default) on a new
    /// connection; the answer is read to the end, so the server must close.
    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
            .await
            .expect("the connection was not closed after the answer")
            .unwrap();
        text
    }

    /// Status codes, bodies and content types of `/metrics` and `/healthz`
    /// as before hyper: one request per connection, GET only; OpenMetrics
    /// only when asked for.
    #[test]
    fn answers_and_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = bind_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = l.local_addr().unwrap();
            let c = Arc::new(Counters::default());
            tokio::spawn(serve_metrics(l, c.clone()));
            let ok = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
            c.set_output_error(Some("disk full".into()));
            let bad = get(addr, "GET /healthz?x=1 HTTP/1.1\r\n\r\n").await;
            assert!(bad.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{bad}");
            assert!(
                bad.ends_with("unhealthy: capture files cannot be written: disk full\n"),
                "{bad}"
            );
            let m = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(m.contains("content-type: text/plain; version=0.0.4"), "{m}");
            assert!(m.contains("\nmirrorcap_healthy 0\n"), "{m}");
            let om = get(
                addr,
                "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
            )
            .await;
            assert!(om.contains("content-type: application/openmetrics-text"), "{om}");
            assert!(om.ends_with("# EOF\n"), "{om}");
            let nf = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
            assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");
            let post = get(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
            assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
            assert!(post.ends_with("GET only\n"), "{post}");
        });
    }
}
