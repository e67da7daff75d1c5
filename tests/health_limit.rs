//! `/metrics` and `/healthz` under many idle connections: the listener
//! holds at most `MAX_CONNECTIONS` (64) of them, so slow clients cannot
//! take the descriptors capture files need, and a request waiting behind
//! them is answered once one of them times out (5 s).
//!
//! Alone in its test binary because it counts the process's descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mirrorcap::telemetry::counters::Counters;
use mirrorcap::telemetry::health::{bind_metrics, serve_metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn healthz(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

#[test]
fn idle_connections_are_limited_and_healthz_is_still_answered() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = bind_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_metrics(l, Arc::new(Counters::default())));
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200 OK\r\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = open_fds();
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept all it will.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = open_fds() - before - idle.len();
        assert!(
            held <= 64,
            "the server holds {held} descriptors for 100 idle connections"
        );
        // The 101st: answered once a slot is free (the idle ones time out
        // after 5 s), not refused.
        let start = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(15), healthz(addr))
            .await
            .expect("/healthz not answered behind 100 idle connections");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        eprintln!("101st /healthz answered after {:?}", start.elapsed());
        // And the daemon is fine once they are gone.
        drop(idle);
        let start = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(2), healthz(addr))
            .await
            .expect("/healthz not answered after the idle connections left");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(start.elapsed() < Duration::from_secs(1));
    });
}
