//! Internal events, after Vector's `internal_events`: each error the
//! daemon logs is a small type whose `emit` writes the log line and counts
//! it (`mirrorcap_errors_total{kind}`) in one place, so an error that is
//! logged is always counted, with the same kind in both.
//!
//! In: the event's fields, the [`Counters`], and for errors that can come
//! once a packet or once an accept, a [`LogLimiter`]. Out: one `tracing`
//! line (per limiter interval for the rate-limited ones, saying how many
//! were held back) and one count per event. Nothing is dropped: a line
//! held back by the limiter is still counted.
//!
//! Errors with a counter of their own log next to it instead: frames a
//! capture file could not take are counted by [`DropReason`] (`disk_full`,
//! `write_error`; [`Counters::count_drop`]), flow files that could not be
//! written in `flow_write_errors`/`flow_records_lost`, `on_rotate` commands
//! that failed in `hook_failures`. These events are the errors that have
//! no other counter.
//!
//! [`DropReason`]: crate::pipeline::DropReason

use std::time::Duration;

use crate::telemetry::counters::{Counters, ErrorKind};
use crate::telemetry::log_limit::LogLimiter;

/// `accept` failed on a listener (`metrics_listen` or
/// `health_tcp_listen`); the caller backs off for `retry_in`.
/// `after_release`: it failed again although the spare descriptor had
/// been freed for it.
pub struct AcceptFailed<'a> {
    pub listener: &'static str,
    pub error: &'a std::io::Error,
    pub after_release: bool,
    pub retry_in: Duration,
}

impl AcceptFailed<'_> {
    pub fn emit(self, c: &Counters, log: &mut LogLimiter) {
        c.count_error(if self.listener == "health_tcp_listen" {
            ErrorKind::HealthAccept
        } else {
            ErrorKind::MetricsAccept
        });
        let Some(held) = log.allow() else { return };
        let (what, e, retry) = (self.listener, self.error, self.retry_in);
        if self.after_release {
            tracing::warn!(error = %e, held_back = held, "{what}: accept failed although a descriptor was freed; retrying in {retry:?}");
        } else {
            tracing::warn!(error = %e, held_back = held, "{what}: accept failed; retrying in {retry:?}");
        }
    }
}

/// The TCP health port could not be bound; it is tried again.
pub struct HealthListenerFailed<'a> {
    pub addr: std::net::SocketAddr,
    pub error: &'a std::io::Error,
}

impl HealthListenerFailed<'_> {
    pub fn emit(self, c: &Counters, log: &mut LogLimiter) {
        c.count_error(ErrorKind::HealthBind);
        if let Some(held) = log.allow() {
            let (addr, e) = (self.addr, self.error);
            tracing::warn!(
                held_back = held,
                "health_tcp_listen: cannot listen on {addr}: {e}"
            );
        }
    }
}

/// A receive call on the capture socket failed with an error that is not
/// a timeout (ICMP errors queued on the socket and the like); the loop
/// goes on.
pub struct ReceiveFailed<'a> {
    pub error: &'a std::io::Error,
}

impl ReceiveFailed<'_> {
    pub fn emit(self, c: &Counters, log: &mut LogLimiter) {
        c.count_error(ErrorKind::Recv);
        if let Some(held) = log.allow() {
            tracing::warn!(error = %self.error, held_back = held, "recvmmsg failed; continuing");
        }
    }
}

/// On stop, the socket could not be switched to non-blocking to be read
/// empty: what it still holds is not counted.
pub struct DrainFailed<'a> {
    pub error: &'a std::io::Error,
}

impl DrainFailed<'_> {
    pub fn emit(self, c: &Counters) {
        c.count_error(ErrorKind::Drain);
        tracing::warn!(error = %self.error, "cannot read the socket empty on stop");
    }
}

/// SIGHUP did not reload the config: there is no file (the embedded
/// default runs), or the file is invalid; the running config stays.
pub enum ReloadFailed<'a> {
    NoFile,
    Invalid(&'a dyn std::fmt::Display),
}

impl ReloadFailed<'_> {
    pub fn emit(self, c: &Counters) {
        c.count_error(ErrorKind::Reload);
        match self {
            ReloadFailed::NoFile => tracing::warn!(
                "SIGHUP: running on the embedded default config; there is no file to reload"
            ),
            ReloadFailed::Invalid(e) => {
                tracing::error!("SIGHUP: config not reloaded, the running one stays: {e}")
            }
        }
    }
}

/// Retention could not delete a closed file (it was not already gone):
/// the file stays, and the limits may be exceeded by it.
pub struct RetentionNotDeleted<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl RetentionNotDeleted<'_> {
    pub fn emit(self, c: &Counters) {
        c.count_error(ErrorKind::Retention);
        tracing::warn!("retention: not deleted: {}", self.error);
    }
}

/// Crash recovery could not handle a `.part` file left by an earlier run
/// (`what`: "cannot delete", "cannot read", ...); the file stays as it is.
pub struct RecoveryFailed<'a> {
    pub path: &'a std::path::Path,
    pub what: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl RecoveryFailed<'_> {
    pub fn emit(self, c: &Counters) {
        c.count_error(ErrorKind::Recovery);
        let (path, what, e) = (self.path.display(), self.what, self.error);
        tracing::error!(path = %path, error = %e, "recovery: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line held back by the limiter is still counted.
    #[test]
    fn rate_limited_events_count_every_occurrence() {
        let c = Counters::default();
        let mut log = LogLimiter::new(Duration::from_secs(3600));
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        for _ in 0..3 {
            ReceiveFailed { error: &e }.emit(&c, &mut log);
        }
        assert_eq!(c.errors(ErrorKind::Recv), 3);
        AcceptFailed {
            listener: "health_tcp_listen",
            error: &e,
            after_release: false,
            retry_in: Duration::ZERO,
        }
        .emit(&c, &mut log);
        assert_eq!(c.errors(ErrorKind::HealthAccept), 1);
        assert_eq!(c.errors(ErrorKind::MetricsAccept), 0);
        ReloadFailed::NoFile.emit(&c);
        assert_eq!(c.errors(ErrorKind::Reload), 1);
    }
}
