//! What the daemon tells the outside: counters, the Prometheus text and
//! the shutdown summary, rate-limited logs ([`metrics`]), `/metrics`,
//! `/healthz` and the TCP health check ([`health`]), and the systemd
//! notify protocol ([`notify`]).

pub mod health;
pub mod metrics;
pub mod notify;
