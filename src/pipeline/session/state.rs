//! One mirror session's state: its key (source, VNI, and the Gateway Load
//! Balancer endpoint for GENEVE-borne traffic), the settings
//! the configuration gives it (filter, the ENI's addresses, protected),
//! its counters and the capture file it has open.
//!
//! In: each decoded frame of the session ([`Session::count`]). Out: its
//! [`SessionCounts`] for the summary ([`Session::summary`]) and the header
//! of each new file ([`Session::file_header`]). Nothing is dropped here.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::capture::encode::{
    OutputFormat, pcap_file_header, pcapng_file_header, session_interface,
};
use crate::config::OutputConfig;
use crate::filter::{MirrorFilter, OwnAddresses};
use crate::output::chunk::FileId;
use crate::telemetry::counters::SessionStats;
use crate::telemetry::summary::{SessionCounts, SessionSummary};
use crate::wire::decode::Decoded;
use crate::wire::geneve::EndpointId;

/// What tells one mirror session from another: the mirrored ENI's address
/// and the VNI, and for traffic through a Gateway Load Balancer the
/// endpoint it came through (address ranges behind different endpoints
/// may overlap). `None` for direct traffic and for GENEVE without an
/// endpoint option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionKey {
    pub source: IpAddr,
    pub vni: u32,
    pub endpoint: Option<EndpointId>,
}

/// Hashed by hand, once per datagram: the derived hash wrote five words
/// (the address's kind, the address, the VNI, the endpoint's presence and
/// the endpoint), each a multiply in foldhash; a direct IPv4 session's key
/// is one word here, a GENEVE-borne one two (BENCHMARKS.md, issue 14).
/// Equal keys hash alike; an IPv4 and an IPv6 key may share a hash, never
/// compare equal.
impl std::hash::Hash for SessionKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self.source {
            IpAddr::V4(a) => h.write_u64((u64::from(a.to_bits()) << 32) | u64::from(self.vni)),
            IpAddr::V6(a) => {
                h.write_u128(a.to_bits());
                h.write_u32(self.vni);
            }
        }
        if let Some(e) = self.endpoint {
            h.write_u64(e.0);
        }
    }
}

/// One mirror session's state.
pub struct Session {
    pub key: SessionKey,
    /// [`SessionStats::id`]: never reused, so the flow table tells this
    /// session from a later one in the same slot.
    pub id: u64,
    /// In the table (else its slot is free, kept for its key and `seq`).
    pub(super) live: bool,
    /// Named in `[[session]]` or `vnis`: never evicted.
    pub(super) protected: bool,
    /// Time of the last datagram looked up for it (filtered or not), for
    /// eviction and for freeing it when idle.
    pub(super) seen_ns: u64,
    /// When it was last moved to the front of its lists: at most once per
    /// [`super::MOVE_EVERY_NS`], so interleaved sessions do not relink on
    /// every packet (the lists only need to be about right: eviction
    /// checks `seen_ns`).
    pub(super) moved_ns: u64,
    /// Packets by kind, for the summary.
    pub counts: SessionCounts,
    /// The filter that applies to this session (`[[session]]`'s, else
    /// `[filter]`'s), and the ENI's addresses, for direction.
    pub filter: Option<Arc<MirrorFilter>>,
    pub own: OwnAddresses,
    /// Packets, bytes and files, shared with the metrics endpoint and the
    /// writer thread.
    pub stats: Arc<SessionStats>,
    /// Number of the next file (`{seq}`).
    pub(super) seq: u32,
    pub(super) file: Option<CurrentFile>,
    /// Timestamp of the last packet, for the idle timeout.
    pub last_ns: u64,
    /// Which live subscribers want this session ([`crate::stream::Tap`]).
    pub tap: crate::stream::SessionTap,
}

/// The session's open file, as the receive side tracks it for rotation.
pub(super) struct CurrentFile {
    pub(super) id: FileId,
    /// Bytes queued for it, header included.
    pub(super) bytes: u64,
    pub(super) packets: u64,
    /// Time slot (`ts / rotate_interval`) of its first packet.
    pub(super) slot: u64,
}

impl Session {
    pub(super) fn new(
        key: SessionKey,
        settings: SessionSettings,
        stats: Arc<SessionStats>,
        seq: u32,
        now_ns: u64,
    ) -> Session {
        let SessionSettings {
            filter,
            extra,
            protected,
        } = settings;
        Session {
            key,
            id: stats.id,
            live: true,
            protected,
            seen_ns: now_ns,
            moved_ns: now_ns,
            stats,
            filter,
            own: OwnAddresses {
                outer: key.source,
                extra,
            },
            counts: SessionCounts::default(),
            seq,
            file: None,
            last_ns: 0,
            tap: Default::default(),
        }
    }

    pub fn count(&mut self, d: &Decoded, wire_len: usize, ts_ns: u64) {
        let c = &mut self.counts;
        c.packets += 1;
        c.bytes += wire_len as u64;
        self.stats.add(wire_len as u64);
        self.last_ns = self.last_ns.max(ts_ns);
        match d.ip {
            Some(ip) => {
                if ip.src.is_ipv4() {
                    c.ipv4 += 1
                } else {
                    c.ipv6 += 1
                }
                match ip.protocol {
                    crate::wire::decode::PROTO_TCP => c.tcp += 1,
                    crate::wire::decode::PROTO_UDP => c.udp += 1,
                    _ => c.other += 1,
                }
            }
            None => c.other += 1,
        }
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id,
            vni: self.key.vni,
            source: self.key.source,
            endpoint: self.key.endpoint.map(|e| e.to_string()),
            counts: self.counts,
            files: self.stats.files.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The header of this session's next capture file (pcapng names its
    /// interface after the session).
    pub(super) fn file_header(&self, out: &OutputConfig) -> Vec<u8> {
        let mut header = Vec::with_capacity(256);
        match out.format {
            OutputFormat::Pcap => pcap_file_header(&mut header, out.snaplen),
            OutputFormat::Pcapng => {
                let (name, description) =
                    session_interface(self.key.vni, self.key.source, self.key.endpoint);
                pcapng_file_header(&mut header, out.snaplen, &name, &description)
            }
        }
        header
    }
}

/// What the configuration says about a new session: its filter, the
/// ENI's other addresses, and whether it is named in `[[session]]` or
/// `vnis` (then never evicted).
pub struct SessionSettings {
    pub filter: Option<Arc<MirrorFilter>>,
    pub extra: Vec<IpNet>,
    pub protected: bool,
}
