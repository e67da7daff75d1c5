//! Flow records in the VPC Flow Logs format, from every captured packet.
//!
//! In: each inner frame the pipeline keeps (after the filters), with its
//! session, decode and timestamp. Out: text files under `DIR/flows/` as AWS
//! delivers flow logs to S3: a header line of field names, then one
//! space-separated record per line, `-` for a field mirrorcap cannot know;
//! optionally gzipped, optionally also JSON Lines; or, with
//! `flows.parquet`, Parquet files with AWS's column names and types
//! ([`parquet`](mod@parquet)).
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
//! A Gateway Load Balancer (GENEVE-borne) session is one of its own per
//! (endpoint, source, VNI), so the same 5-tuple through two endpoints is
//! two flows; its records carry the endpoint where the format allows (the
//! JSON `endpoint` key, mirrorcap's own `${endpoint}` text field: see
//! [`format`](mod@format)), and `[[flows.session]]` entries may name it.
//!
//! Memory is bounded by `flows.max_flows`: when a window has that many
//! flows, it is written out early (counted) and aggregation starts again;
//! the sums over records stay exact.
//!
//! One module per job: [`table`] (aggregation into windows), [`format`](mod@format)
//! (the field list, custom formats, rendering a record), [`writer`] (flow
//! files on disk, through [`crate::output`]'s `.part`, rename and
//! retention code), [`layout`] (AWS's folder layouts, on disk and in S3), [`parquet`](mod@parquet) (the Parquet files' schema,
//! row groups and encoding), [`report`] (the `mirrorcap flows` command). This
//! module holds the validated `[flows]` settings.

pub mod format;
pub mod layout;
pub mod parquet;
pub mod record;
pub mod report;
pub mod table;
pub mod writer;

use std::net::IpAddr;

use crate::wire::geneve::EndpointId;

pub use format::{DEFAULT_FORMAT, Field, FlowFormat};
pub use layout::FlowLayout;
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

/// A `[[flows.session]]` entry: metadata for a VNI, a source, a Gateway
/// Load Balancer endpoint, or several of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSessionMeta {
    pub vni: Option<u32>,
    pub source: Option<IpAddr>,
    /// `None` = any endpoint, and direct traffic; an entry naming one
    /// matches only sessions through it (as `[[session]] endpoint`).
    pub endpoint: Option<EndpointId>,
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
    /// `.parquet` files instead of text (never with `gzip` or `json`: the
    /// config refuses them together).
    pub parquet: bool,
    pub max_flows: usize,
    pub sessions: Vec<FlowSessionMeta>,
    /// Where files go under `DIR/flows/` and `PREFIX/` in S3.
    pub layout: FlowLayout,
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
            parquet: false,
            max_flows: 100_000,
            sessions: Vec::new(),
            layout: FlowLayout::default(),
        }
    }
}

impl FlowConfig {
    /// Metadata for a session (its VNI, source and endpoint) from the
    /// entries that match it: one naming both VNI and source first, then
    /// the VNI, then the source, then one naming neither (an endpoint
    /// alone); at each of these, one naming the session's endpoint before
    /// one for any endpoint; the first in the file among equals.
    pub fn metadata(&self, vni: u32, source: IpAddr, endpoint: Option<EndpointId>) -> FlowMetadata {
        let mut best: Option<(&FlowSessionMeta, (u8, bool))> = None;
        for s in &self.sessions {
            let matches = s.vni.is_none_or(|v| v == vni)
                && s.source.is_none_or(|a| a == source)
                && s.endpoint.is_none_or(|e| Some(e) == endpoint);
            let rank = (
                match (s.vni.is_some(), s.source.is_some()) {
                    (true, true) => 3,
                    (true, false) => 2,
                    (false, true) => 1,
                    (false, false) => 0,
                },
                s.endpoint.is_some(),
            );
            if matches && best.is_none_or(|(_, r)| rank > r) {
                best = Some((s, rank));
            }
        }
        best.map(|(s, _)| s.meta.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        vni: Option<u32>,
        source: Option<&str>,
        endpoint: Option<u64>,
        id: &str,
    ) -> FlowSessionMeta {
        FlowSessionMeta {
            vni,
            source: source.map(|s| s.parse().unwrap()),
            endpoint: endpoint.map(EndpointId),
            meta: FlowMetadata {
                interface_id: Some(id.into()),
                ..Default::default()
            },
        }
    }

    /// Issue 14 item 3: a `[[flows.session]]` entry naming an endpoint
    /// matches only sessions through it (never direct traffic); at each
    /// level (VNI and source, VNI, source, neither) one naming the
    /// session's endpoint wins over one for any endpoint.
    #[test]
    fn flows_session_entries_name_an_endpoint() {
        let cfg = FlowConfig {
            sessions: vec![
                entry(Some(7), None, None, "vni"),
                entry(None, None, Some(0xaa), "aa"),
                entry(Some(7), None, Some(0xbb), "vni-bb"),
                entry(Some(7), Some("10.0.0.9"), None, "vni-source"),
            ],
            ..Default::default()
        };
        let id = |vni, source: &str, endpoint: Option<u64>| {
            cfg.metadata(vni, source.parse().unwrap(), endpoint.map(EndpointId))
                .interface_id
                .unwrap_or_else(|| "-".into())
        };
        assert_eq!(id(7, "10.0.0.1", None), "vni");
        assert_eq!(id(7, "10.0.0.1", Some(0xaa)), "vni");
        assert_eq!(id(7, "10.0.0.1", Some(0xbb)), "vni-bb");
        assert_eq!(id(7, "10.0.0.9", Some(0xbb)), "vni-source");
        assert_eq!(id(8, "10.0.0.1", Some(0xaa)), "aa");
        assert_eq!(id(8, "10.0.0.1", Some(0xbb)), "-");
        assert_eq!(id(8, "10.0.0.1", None), "-");
    }
}
