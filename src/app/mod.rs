//! The commands as library calls, above every other layer: [`daemon::run`]
//! (the capture daemon: sockets, worker threads, signals as [`Control`]
//! messages, metrics and health, the exit summary), [`replay::run`]
//! (captures through the same pipeline) and [`extract::run`] (one
//! time-ordered capture out of the files of several output directories).
//! `main.rs` keeps only the command
//! line, logging and exit codes, so tests can drive the daemon in process.

pub mod daemon;
pub mod extract;
pub mod replay;

pub use daemon::{Bound, Control, DaemonError, DaemonOutcome, Overrides, ReloadSource};
