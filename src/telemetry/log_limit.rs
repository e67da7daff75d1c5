//! Rate-limited logging: per-packet problems become periodic lines.
//!
//! In: calls on every occurrence ([`LogLimiter::allow`]) or once a tick
//! ([`DropReport::maybe_log`] with the counters).
//! Out: at most one log line per interval, saying how many were held back
//! ([`LogLimiter`]) or how many datagrams were dropped since the last
//! report, by reason ([`DropReport`]). Lines held back are dropped (their
//! number is reported with the next one); counting is not done here but by
//! [`crate::telemetry::counters`] and [`crate::telemetry::events`].

use std::sync::atomic::Ordering::Relaxed;

use crate::telemetry::counters::{Counters, DropReason, N_REASONS};

/// Lets a log line through at most once per `every`, and says how many were
/// held back in between: per-packet problems become periodic summaries.
#[derive(Debug)]
pub struct LogLimiter {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(every: std::time::Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were held back
    /// since the last one), `None` when this one is held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Logs, at most once per interval, how many datagrams were dropped since
/// the last report, by reason.
#[derive(Debug)]
pub struct DropReport {
    every: std::time::Duration,
    last: std::time::Instant,
    seen: [u64; N_REASONS],
    kernel_seen: u64,
    host_backlog_seen: u64,
}

impl DropReport {
    pub fn new(every: std::time::Duration) -> DropReport {
        DropReport {
            every,
            last: std::time::Instant::now(),
            seen: [0; N_REASONS],
            kernel_seen: 0,
            host_backlog_seen: 0,
        }
    }

    pub fn maybe_log(&mut self, c: &Counters) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = std::time::Instant::now();
        let mut parts = Vec::new();
        for r in DropReason::ALL {
            let now = c.drops(r);
            let new = now - self.seen[r as usize];
            self.seen[r as usize] = now;
            if new > 0 && !r.intentional() {
                parts.push(format!("{r}={new}"));
            }
        }
        let k = c.kernel_drops.load(Relaxed);
        if k > self.kernel_seen {
            parts.push(format!("kernel_overflow={}", k - self.kernel_seen));
            self.kernel_seen = k;
        }
        let h = c.host_backlog_drops.load(Relaxed);
        if h > self.host_backlog_seen {
            parts.push(format!(
                "host_backlog={} (before any socket, all traffic; net.core.netdev_max_backlog)",
                h - self.host_backlog_seen
            ));
            self.host_backlog_seen = h;
        }
        if !parts.is_empty() {
            tracing::warn!(
                "datagrams dropped in the last {:?}: {}",
                self.every,
                parts.join(" ")
            );
        }
    }
}
