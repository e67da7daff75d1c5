//! What the daemon tells the outside, the bottom layer (it imports only
//! `pipeline::DropReason`): the hot-path counters ([`counters`]), the
//! errors logged and counted in one place ([`events`]), rate-limited logs
//! ([`log_limit`]), the `/metrics` text ([`prometheus`]), the shutdown
//! summary ([`summary`]), `/metrics`, `/healthz` and the TCP health check
//! ([`health`]), and the systemd notify protocol ([`notify`]).

pub mod counters;
pub mod events;
pub mod health;
pub mod log_limit;
pub mod notify;
pub mod prometheus;
pub mod summary;
