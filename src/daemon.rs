//! The live loop: a bound [`Receiver`] feeds the [`Pipeline`] until a stop
//! future resolves (SIGTERM/SIGINT in `main`, anything in tests), then every
//! file is flushed, closed and renamed and the summary returned.
//!
//! Readiness comes from tokio's `AsyncFd` on the socket; once readable, the
//! loop drains it with `recvmmsg` batches until the kernel says
//! `EWOULDBLOCK`, yielding to the timer and the stop signal every few
//! batches. Once a second it closes idle sessions and ended time slots, and
//! copies the kernel's drop count; every ten seconds it logs the drops seen
//! since the last report, by reason (never a line per packet).

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::metrics::{DropReason, DropReport};
use crate::pipeline::Pipeline;
use crate::socket::{Receiver, now_ns};

/// Batches read before the loop lets the timer and the stop signal run.
const BATCHES_PER_TURN: usize = 32;

/// Runs until `stop` resolves, then returns the pipeline for the caller to
/// finish (so several workers can finish together). The socket must be
/// bound already (so the caller can log its address, and tests can bind
/// port 0).
pub async fn serve(
    rx: Receiver,
    mut pipeline: Pipeline,
    stop: impl Future<Output = ()>,
    mut reload: tokio::sync::watch::Receiver<Option<std::sync::Arc<crate::config::Config>>>,
) -> io::Result<Pipeline> {
    // SAFETY: the Receiver owns the socket, so its fd stays open and the
    // same for as long as the AsyncFd holds it.
    let mut rx = unsafe { AsyncFd::register_with_interest(rx, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = DropReport::new(Duration::from_secs(10));
    let counters = pipeline.counters().clone();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Ok(()) = reload.changed() => {
                let cfg = reload.borrow_and_update().clone();
                if let Some(cfg) = cfg {
                    pipeline.reconfigure(&cfg);
                }
            }
            _ = tick.tick() => {
                pipeline.tick(now_ns());
                counters.kernel_drops.fetch_add(rx.get_mut().new_kernel_drops(), Relaxed);
                report.maybe_log(&counters);
            }
            ready = rx.readable_mut() => {
                let mut guard = ready?;
                for _ in 0..BATCHES_PER_TURN {
                    let r = guard.get_inner_mut().recv_batch(|data, meta, truncated| {
                        if truncated {
                            pipeline.counters().received(data.len());
                            pipeline.counters().count_drop(DropReason::DatagramTruncated);
                        } else {
                            pipeline.push(data, meta);
                        }
                    });
                    match r {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // ICMP errors queued on the socket and the like:
                            // not fatal for a receiver.
                            tracing::warn!(error = %e, "recvmmsg failed; continuing");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
        }
    }
    counters
        .kernel_drops
        .fetch_add(rx.get_mut().new_kernel_drops(), Relaxed);
    Ok(pipeline)
}
