//! mirrorcap: AWS VPC Traffic Mirroring (VXLAN, UDP 4789) in, per-session
//! rotating pcap files out, live from a socket or replayed from a capture.
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! socket (live) ─┐
//!                ├─> vxlan -> filter (VNIs) -> decode -> filter (rules, bpf) -> session -> writer
//! replay (file) ─┘
//! ```
//!
//! [`pipeline::Pipeline::push`] is the single entry both feeds call.

pub mod bpf;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod fasthash;
pub mod filter;
pub mod flow_report;
pub mod flows;
pub mod format;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod outdir;
pub mod pipeline;
pub mod replay;
pub mod session;
pub mod socket;
pub mod vxlan;
pub mod writer;
