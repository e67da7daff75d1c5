//! What a flow is, between the table that counts it and the format that
//! writes it: its key ([`FlowKey`]), its totals ([`FlowAgg`]), and a window's
//! rendered records ([`FlowBatch`]) on their way to the flow writer.

use std::net::IpAddr;

use crate::filter::Direction;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FlowKey {
    /// The session's id ([`crate::telemetry::counters::SessionStats::id`]): never
    /// reused, so two sessions that had the same table slot one after the
    /// other are never mixed.
    pub(super) session: u64,
    pub(super) protocol: u8,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) sport: u16,
    pub(super) dport: u16,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct FlowAgg {
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    pub(super) tcp_flags: u8,
    pub(super) direction: Option<Direction>,
}

/// One window's records (or a part of it, when `max_flows` cut it).
pub struct FlowBatch {
    /// Window start, Unix seconds: decides the file.
    pub window_s: u64,
    pub lines: String,
    pub json: String,
    /// With `flows.parquet` (and then `lines` stays empty): the records'
    /// values as the text renders them, one per field of the format for
    /// each record in turn.
    pub values: Vec<String>,
    /// Records in the batch.
    pub records: u64,
}
