//! Why a datagram was not written: a leaf type. It imports nothing of
//! mirrorcap's, so every layer may name it: the wire parsers return it
//! without knowing about counters, and telemetry counts and labels it.

use std::fmt;

/// Why a datagram (or, in replay, a capture record) was not written.
///
/// `stage` and `intentional` label the reason for metrics: an intentional drop
/// is the operator's choice (a VNI excluded, a port that is not VXLAN); the
/// others are losses or malformed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Replay: a record whose link type or EtherType is not IPv4/IPv6.
    NotIp,
    /// Replay: an IP packet that is not UDP.
    NotUdp,
    /// Replay: a UDP datagram to a port not in `vxlan_ports`.
    NotVxlanPort,
    /// Replay: the outer IP/UDP headers are malformed or cut by the capture's
    /// snap length before the end of the VXLAN header.
    OuterMalformed,
    /// Replay: an outer IP fragment that could not be reassembled.
    OuterFragment,
    /// Live: the kernel cut the datagram (larger than the receive buffer).
    DatagramTruncated,
    /// Shorter than the 8-byte VXLAN header.
    VxlanTooShort,
    /// The VXLAN I flag (0x08) is not set.
    VxlanNoIFlag,
    /// The inner frame is shorter than an Ethernet header (14 bytes).
    InnerTooShort,
    /// The VNI is not in `vnis` or is in `exclude_vnis`.
    VniExcluded,
    /// Mirror-filter rules exist and none of the packet's direction accepts it.
    NoRuleMatched,
    /// The first matching mirror-filter rule rejects it.
    RuleRejected,
    /// The session's tcpdump expression does not accept it.
    Bpf,
    /// Writing the frame failed (I/O error other than disk full).
    WriteError,
    /// The output file system is full.
    DiskFull,
    /// Live: the writer thread is behind (disk slower than the traffic)
    /// and no buffer was free.
    WriteBacklog,
    /// The outer source address is not in `allow_sources`.
    SourceNotAllowed,
    /// A new session beyond `max_sessions`.
    SessionLimit,
    /// A file beyond `max_open_files` would have been opened.
    OpenFileLimit,
    /// The file's path under the output directory goes through a symbolic
    /// link, which mirrorcap never follows.
    OutputSymlink,
    /// Live: still queued in the socket when the daemon stopped and the
    /// drain after SIGTERM ran out of time; read and counted, not written.
    UnreadAtStop,
    /// GENEVE input: shorter than the 8-byte GENEVE header, or than the
    /// options its Opt Len declares.
    GeneveTruncated,
    /// GENEVE input: a version other than 0.
    GeneveVersion,
    /// GENEVE input: the O bit is set: a control message between tunnel
    /// endpoints, whose payload RFC 8926 says is not data.
    GeneveControl,
    /// GENEVE input: an option runs past the options area, or an Amazon
    /// option (class 0x0108, types 1 to 3) has the wrong length.
    GeneveOptionMalformed,
    /// GENEVE input: an option mirrorcap does not know with the critical
    /// bit (0x80 of its type) set; RFC 8926 says to drop the packet.
    GeneveCriticalOption,
    /// GENEVE input: a protocol type other than IPv4 (0x0800) or IPv6
    /// (0x86DD), e.g. Ethernet (0x6558): not what a Gateway Load Balancer
    /// sends.
    GeneveProtocol,
    /// GENEVE input: the inner IP or UDP header is malformed or cut short,
    /// or its IP version disagrees with the protocol type.
    GeneveInnerMalformed,
    /// GENEVE input: the inner IP packet is a fragment (not reassembled,
    /// never mis-decoded).
    GeneveInnerFragment,
    /// GENEVE input: the inner packet is not UDP to a VXLAN port: Gateway
    /// Load Balancer inline traffic, not a mirror; mirrorcap is not an
    /// inline appliance.
    GeneveNotVxlan,
}

impl DropReason {
    pub const ALL: [DropReason; 30] = [
        DropReason::NotIp,
        DropReason::NotUdp,
        DropReason::NotVxlanPort,
        DropReason::OuterMalformed,
        DropReason::OuterFragment,
        DropReason::DatagramTruncated,
        DropReason::VxlanTooShort,
        DropReason::VxlanNoIFlag,
        DropReason::InnerTooShort,
        DropReason::VniExcluded,
        DropReason::NoRuleMatched,
        DropReason::RuleRejected,
        DropReason::Bpf,
        DropReason::WriteError,
        DropReason::DiskFull,
        DropReason::WriteBacklog,
        DropReason::SourceNotAllowed,
        DropReason::SessionLimit,
        DropReason::OpenFileLimit,
        DropReason::OutputSymlink,
        DropReason::UnreadAtStop,
        DropReason::GeneveTruncated,
        DropReason::GeneveVersion,
        DropReason::GeneveControl,
        DropReason::GeneveOptionMalformed,
        DropReason::GeneveCriticalOption,
        DropReason::GeneveProtocol,
        DropReason::GeneveInnerMalformed,
        DropReason::GeneveInnerFragment,
        DropReason::GeneveNotVxlan,
    ];

    /// The `reason` label: lowercase, stable, used in metrics and the summary.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotIp => "not_ip",
            DropReason::NotUdp => "not_udp",
            DropReason::NotVxlanPort => "not_vxlan_port",
            DropReason::OuterMalformed => "outer_malformed",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::DatagramTruncated => "datagram_truncated",
            DropReason::VxlanTooShort => "vxlan_too_short",
            DropReason::VxlanNoIFlag => "vxlan_no_i_flag",
            DropReason::InnerTooShort => "inner_too_short",
            DropReason::VniExcluded => "vni_excluded",
            DropReason::NoRuleMatched => "no_rule_matched",
            DropReason::RuleRejected => "rule_rejected",
            DropReason::Bpf => "bpf",
            DropReason::WriteError => "write_error",
            DropReason::DiskFull => "disk_full",
            DropReason::WriteBacklog => "write_backlog",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::SessionLimit => "session_limit",
            DropReason::OpenFileLimit => "open_file_limit",
            DropReason::OutputSymlink => "output_symlink",
            DropReason::UnreadAtStop => "unread_at_stop",
            DropReason::GeneveTruncated => "geneve_truncated",
            DropReason::GeneveVersion => "geneve_version",
            DropReason::GeneveControl => "geneve_control",
            DropReason::GeneveOptionMalformed => "geneve_option_malformed",
            DropReason::GeneveCriticalOption => "geneve_critical_option",
            DropReason::GeneveProtocol => "geneve_protocol",
            DropReason::GeneveInnerMalformed => "geneve_inner_malformed",
            DropReason::GeneveInnerFragment => "geneve_inner_fragment",
            DropReason::GeneveNotVxlan => "geneve_not_vxlan",
        }
    }

    /// The `stage` label: which pipeline stage dropped it.
    pub fn stage(self) -> &'static str {
        match self {
            DropReason::NotIp
            | DropReason::NotUdp
            | DropReason::NotVxlanPort
            | DropReason::OuterMalformed
            | DropReason::OuterFragment => "replay",
            DropReason::DatagramTruncated | DropReason::UnreadAtStop => "socket",
            DropReason::VxlanTooShort | DropReason::VxlanNoIFlag | DropReason::InnerTooShort => {
                "vxlan"
            }
            DropReason::VniExcluded
            | DropReason::NoRuleMatched
            | DropReason::RuleRejected
            | DropReason::Bpf => "filter",
            DropReason::WriteError
            | DropReason::DiskFull
            | DropReason::WriteBacklog
            | DropReason::OpenFileLimit
            | DropReason::OutputSymlink => "writer",
            DropReason::SourceNotAllowed => "source",
            DropReason::SessionLimit => "session",
            DropReason::GeneveTruncated
            | DropReason::GeneveVersion
            | DropReason::GeneveControl
            | DropReason::GeneveOptionMalformed
            | DropReason::GeneveCriticalOption
            | DropReason::GeneveProtocol
            | DropReason::GeneveInnerMalformed
            | DropReason::GeneveInnerFragment
            | DropReason::GeneveNotVxlan => "geneve",
        }
    }

    /// Whether the drop is the operator's choice rather than a loss.
    pub fn intentional(self) -> bool {
        matches!(
            self,
            DropReason::NotIp
                | DropReason::NotUdp
                | DropReason::NotVxlanPort
                | DropReason::VniExcluded
                | DropReason::NoRuleMatched
                | DropReason::RuleRejected
                | DropReason::Bpf
                | DropReason::SourceNotAllowed
                | DropReason::GeneveNotVxlan
        )
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters index by `reason as usize`: `ALL` must list the variants in
    /// declaration order, each once, and every name must be distinct.
    #[test]
    fn all_is_in_declaration_order_with_distinct_names() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
