//! Flow records in the VPC Flow Logs format, from every captured packet.
//!
//! In: each inner frame the pipeline keeps (after the filters), with its
//! session, decode and timestamp. Out: text files under `DIR/flows/` as AWS
//! delivers flow logs to S3: a header line of field names, then one
//! space-separated record per line, `-` for a field mirrorcap cannot know;
//! optionally gzipped, optionally also JSON Lines.
//!
//! Counting and timing follow AWS's definitions: a flow is (session,
//! protocol, source and destination address and port; ICMP and other
//! protocols without ports have ports 0), aggregated over a window of
//! `flows.interval` aligned to the clock (by packet time, so a replay gives
//! the windows the live capture had); `packets` and `bytes` count the inner
//! IP packets and their IP total length; `start`/`end` are the Unix seconds
//! of the first and last packet in the window; `tcp-flags` ORs the TCP flags
//! seen (AWS's bit values: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32);
//! `flow-direction` is ingress/egress relative to the session's addresses;
//! `type` IPv4/IPv6; `action` ACCEPT (the packet was mirrored and kept);
//! `log-status` OK, or NODATA for a session that had no packet in a window
//! (until the session is freed, `idle_timeout` after its last datagram:
//! sessions are told apart by a never-reused id, not by table slot).
//! Frames that are not IP are not flow-logged (AWS logs IP traffic only).
//!
//! Memory is bounded by `flows.max_flows`: when a window has that many
//! flows, it is written out early (counted) and aggregation starts again;
//! the sums over records stay exact.
//!
//! One module per job: [`table`] (aggregation into windows), [`format`](mod@format)
//! (the field list, custom formats, rendering a record), [`writer`] (flow
//! files on disk, through [`crate::output`]'s `.part`, rename and
//! retention code), [`report`] (the `mirrorcap flows` command). This
//! module holds the validated `[flows]` settings.

pub mod format;
pub mod record;
pub mod report;
pub mod table;
pub mod writer;

use std::net::IpAddr;

pub use format::{DEFAULT_FORMAT, Field, FlowFormat};
pub use record::FlowBatch;
pub use table::FlowTable;
pub use writer::{FlowFileError, FlowShared, FlowWriter};

/// What AWS would know about a session's ENI, from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMetadata {
    pub interface_id: Option<String>,
    pub instance_id: Option<String>,
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
}

/// A `[[flows.session]]` entry: metadata for a VNI, a source, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSessionMeta {
    pub vni: Option<u32>,
    pub source: Option<IpAddr>,
    pub meta: FlowMetadata,
}

/// The `[flows]` settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    pub enabled: bool,
    /// Aggregation window, at least 1 s.
    pub interval_s: u64,
    pub format: FlowFormat,
    /// A new file every this many seconds (aligned to the clock).
    pub file_interval_s: u64,
    pub gzip: bool,
    pub json: bool,
    pub max_flows: usize,
    pub sessions: Vec<FlowSessionMeta>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            enabled: false,
            interval_s: 60,
            format: FlowFormat::parse(DEFAULT_FORMAT).expect("default format"),
            file_interval_s: 600,
            gzip: false,
            json: false,
            max_flows: 100_000,
            sessions: Vec::new(),
        }
    }
}

impl FlowConfig {
    /// Metadata for a session: an entry naming both VNI and source first,
    /// then the VNI, then the source.
    pub fn metadata(&self, vni: u32, source: IpAddr) -> FlowMetadata {
        let find = |f: &dyn Fn(&FlowSessionMeta) -> bool| self.sessions.iter().find(|s| f(s));
        find(&|s| s.vni == Some(vni) && s.source == Some(source))
            .or_else(|| find(&|s| s.vni == Some(vni) && s.source.is_none()))
            .or_else(|| find(&|s| s.vni.is_none() && s.source == Some(source)))
            .map(|s| s.meta.clone())
            .unwrap_or_default()
    }
}
