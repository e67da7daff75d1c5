//! mirrorcap: AWS VPC Traffic Mirroring (VXLAN, UDP 4789) in, per-session
//! rotating pcap files out, live from a socket or replayed from a capture.
//!
//! The pipeline, one folder per stage or concern, data flowing one way:
//!
//! ```text
//! ingest::socket + ingest::live ─┐
//!                                ├─> pipeline::Pipeline::push
//! ingest::replay (capture::read)─┘     wire::vxlan -> filter (VNIs) -> wire::decode
//!                                      -> filter (rules, bpf) -> pipeline::session
//!                                      -> output::handle (capture::encode) and flows
//! ```
//!
//! [`pipeline::Pipeline::push`] is the single entry both feeds call.
//!
//! Folders, and which way imports point: a module may import the ones
//! below it, never one above or beside it (`tests/architecture.rs` checks
//! this on every test run):
//!
//! 0. `app/` the commands as calls: `app::daemon::run(config, reload
//!    source, control, on_ready) -> DaemonOutcome` (the exit summary) and
//!    `app::replay::run`, `app::extract::run`. `main.rs` sits above it: command line, logging,
//!    signals turned into `app::Control` messages, exit codes.
//! 1. `ingest/` the feeds: live socket and loop, replay.
//! 2. `pipeline/` `Pipeline::push` and the session table.
//! 3. `config/` the validated settings; it builds filters, flow formats and
//!    output templates, so those sit below it.
//! 4. `flows/` flow records, table, files and the `flows` report;
//!    `stream/` live subscribers: the control socket, the per-worker tap,
//!    the `stream` client (flows and stream do not import each other).
//! 5. `output/` capture files on disk (and read back: `output::store`).
//! 6. `filter/` VNI lists, AWS rules, libpcap expressions.
//! 7. `capture/` pcap/pcapng read and encode; `wire/` pure parsers (outer
//!    layers, VXLAN, inner decode).
//! 8. `telemetry/` counters, Prometheus, health, notify.
//!
//! The leaf any layer may use: [`pipeline::DropReason`] (in
//! `pipeline/drop.rs`, importing nothing of mirrorcap's). The per-packet
//! maps use `foldhash::HashMap` (seeded per process).

pub mod app;
pub mod capture;
pub mod config;
pub mod filter;
pub mod flows;
pub mod ingest;
pub mod output;
pub mod pipeline;
pub mod stream;
pub mod telemetry;
pub mod wire;
