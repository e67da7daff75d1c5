//! The paths the rest of the crate imports telemetry by
//! (`telemetry::metrics::Counters`, ...), kept while other folders move:
//! the code lives in [`super::counters`], [`super::summary`],
//! [`super::log_limit`] and [`super::prometheus`].

pub use super::counters::{
    Counters, DropReason, ErrorKind, HostBacklog, RuleCount, RuleCounts, SessionRegistry,
    SessionStats, SessionTotals, host_backlog_drops,
};
pub use super::log_limit::{DropReport, LogLimiter};
pub use super::prometheus::render_prometheus;
pub use super::summary::{SessionCounts, SessionSummary, Summary};
