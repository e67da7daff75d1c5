//! GENEVE (RFC 8926) as a Gateway Load Balancer endpoint delivers VPC
//! Traffic Mirroring to the appliances behind it: the mirror datagram an
//! ENI target would get, wrapped once more.
//!
//! ```text
//! IPv4 / UDP 6081 / GENEVE + Amazon options / IPv4 or IPv6 / UDP 4789 / VXLAN / frame
//! ```
//!
//! In: the UDP payload of a datagram to the GENEVE port.
//! Out: [`GeneveVxlan`]: the VXLAN datagram inside (the inner UDP payload,
//! for [`crate::wire::vxlan`]), the inner IP source (the mirrored ENI's
//! address) and the Gateway Load Balancer options ([`GwlbMeta`]: endpoint
//! ID, attachment ID, flow cookie; class 0x0108, types 1 to 3).
//! Dropped, each under its own reason for the caller to count:
//! shorter than the header or its declared options (`geneve_truncated`),
//! a version other than 0 (`geneve_version`), a control message, O bit set
//! (`geneve_control`), an option running past the options area or an Amazon
//! option of the wrong length (`geneve_option_malformed`), an unknown option
//! with the critical bit set (`geneve_critical_option`, as RFC 8926 asks),
//! a protocol type other than IPv4 or IPv6, e.g. Ethernet 0x6558
//! (`geneve_protocol`), a malformed or cut inner IP/UDP header
//! (`geneve_inner_malformed`), an inner IP fragment (`geneve_inner_fragment`,
//! never decoded), and an inner packet that is not UDP to a VXLAN port
//! (`geneve_not_vxlan`: inline traffic, not a mirror).
//!
//! Options are walked by their lengths whatever their class; the critical
//! bit is the high bit of the option's type. The header's C flag is not
//! trusted: every option is looked at. The inner IP header goes through the
//! same walker as the outer one ([`crate::wire::outer`]: IPv4 options by
//! IHL, IPv6 extension headers), with GENEVE's reasons.
//! No I/O, no counters, no allocation; no input can make it panic.

use std::fmt;
use std::net::IpAddr;

use crate::pipeline::DropReason;
use crate::wire::outer::{IpDrops, port_listed, strip_ip_version};

mod field {
    use std::ops::Range;
    /// Version (2 bits), Opt Len (6 bits, in 4-byte words).
    pub const VER_OPT_LEN: usize = 0;
    /// O (control), C (critical options present), 6 reserved bits.
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const VNI: Range<usize> = 4..7;
}

/// The IANA port for GENEVE, where a Gateway Load Balancer sends.
pub const PORT: u16 = 6081;
/// Length of the fixed GENEVE header, before its options.
pub const HEADER_LEN: usize = 8;
/// Length of an option's header (class, type, length), before its data.
pub const OPTION_HEADER_LEN: usize = 4;
/// The O flag: a control message, not data.
pub const FLAG_O: u8 = 0x80;
/// The option class Amazon's Gateway Load Balancer uses.
pub const CLASS_AMAZON: u16 = 0x0108;
/// Amazon option type 1: the GWLB endpoint ID (8 bytes).
pub const TYPE_ENDPOINT: u8 = 1;
/// Amazon option type 2: the attachment ID (8 bytes).
pub const TYPE_ATTACHMENT: u8 = 2;
/// Amazon option type 3: the flow cookie (4 bytes).
pub const TYPE_FLOW_COOKIE: u8 = 3;
/// The critical bit of an option's type (RFC 8926 section 3.5).
pub const CRITICAL: u8 = 0x80;
/// Protocol type: an IPv4 packet follows (no Ethernet header).
pub const PROTOCOL_IPV4: u16 = 0x0800;
/// Protocol type: an IPv6 packet follows (no Ethernet header).
pub const PROTOCOL_IPV6: u16 = 0x86dd;

/// The inner IP packet's reasons for [`strip_ip_version`].
const INNER: IpDrops = IpDrops {
    malformed: DropReason::GeneveInnerMalformed,
    not_udp: DropReason::GeneveNotVxlan,
    fragment: DropReason::GeneveInnerFragment,
};

/// A Gateway Load Balancer endpoint ID, shown as the console shows it:
/// `vpce-` and 17 hex digits (zero-padded, as AWS's own tunnel handler
/// renders it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

/// What an endpoint ID looks like, for error messages.
pub const ENDPOINT_EXPECTED: &str =
    "\"vpce-\" and 1 to 17 hex digits (at most 64 bits), e.g. \"vpce-0123456789abcdef0\"";

impl std::str::FromStr for EndpointId {
    type Err = ();

    /// `vpce-` and 1 to 17 hex digits that fit in 64 bits.
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("vpce-")
            .filter(|hex| {
                !hex.is_empty() && hex.len() <= 17 && hex.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(EndpointId)
            .ok_or(())
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vpce-{:017x}", self.0)
    }
}

/// What the Gateway Load Balancer's options say (class 0x0108). Each is
/// `None` when its option is absent (traffic not from a GWLB, such as
/// zeek's GENEVE test traces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GwlbMeta {
    /// Type 1: the endpoint the traffic came through.
    pub endpoint: Option<u64>,
    /// Type 2: the attachment ID.
    pub attachment: Option<u64>,
    /// Type 3: the flow cookie.
    pub flow_cookie: Option<u32>,
}

impl GwlbMeta {
    /// The endpoint ID, which displays as `vpce-…`.
    pub fn endpoint_id(&self) -> Option<EndpointId> {
        self.endpoint.map(EndpointId)
    }
}

/// A GENEVE header whose options were walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geneve<'a> {
    /// The protocol type of what follows the options.
    pub protocol: u16,
    /// The header's 24-bit VNI.
    pub vni: u32,
    /// The Amazon options found.
    pub meta: GwlbMeta,
    /// How many options were walked (of any class).
    pub options: usize,
    /// What follows the options.
    pub payload: &'a [u8],
}

impl<'a> Geneve<'a> {
    /// Checks the version, the O flag and the length, and walks the options.
    /// The protocol type is left to the caller ([`decap`] checks it).
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, DropReason> {
        if buf.len() < HEADER_LEN {
            return Err(DropReason::GeneveTruncated);
        }
        if buf[field::VER_OPT_LEN] >> 6 != 0 {
            return Err(DropReason::GeneveVersion);
        }
        if buf[field::FLAGS] & FLAG_O != 0 {
            return Err(DropReason::GeneveControl);
        }
        let end = HEADER_LEN + usize::from(buf[field::VER_OPT_LEN] & 0x3f) * 4;
        let Some(opts) = buf.get(HEADER_LEN..end) else {
            return Err(DropReason::GeneveTruncated);
        };
        let (meta, options) = match aws_layout(opts) {
            Some(meta) => (meta, 3),
            None => walk_options(opts)?,
        };
        let p = &buf[field::PROTOCOL];
        let v = &buf[field::VNI];
        Ok(Geneve {
            protocol: u16::from_be_bytes([p[0], p[1]]),
            vni: (u32::from(v[0]) << 16) | (u32::from(v[1]) << 8) | u32::from(v[2]),
            meta,
            options,
            payload: &buf[end..],
        })
    }
}

/// The options area as every Gateway Load Balancer sends it: exactly the
/// endpoint ID, the attachment ID and the flow cookie, in that order, with
/// no reserved bit set. Read at fixed offsets (three 4-byte compares), the
/// same values [`walk_options`] finds; anything else is left to it.
#[inline(always)]
fn aws_layout(opts: &[u8]) -> Option<GwlbMeta> {
    /// Class 0x0108, type, reserved bits 0 and the length in 4-byte words.
    const fn header(kind: u8, words: u8) -> u32 {
        u32::from_be_bytes([0x01, 0x08, kind, words])
    }
    let o: &[u8; 32] = opts.try_into().ok()?;
    let word = |at: usize| u32::from_be_bytes([o[at], o[at + 1], o[at + 2], o[at + 3]]);
    let quad = |at: usize| (u64::from(word(at)) << 32) | u64::from(word(at + 4));
    if word(0) != header(TYPE_ENDPOINT, 2)
        || word(12) != header(TYPE_ATTACHMENT, 2)
        || word(24) != header(TYPE_FLOW_COOKIE, 1)
    {
        return None;
    }
    Some(GwlbMeta {
        endpoint: Some(quad(4)),
        attachment: Some(quad(16)),
        flow_cookie: Some(word(28)),
    })
}

/// Walks an options area by the options' lengths, whatever their class:
/// the Amazon options found and how many options there were.
fn walk_options(mut opts: &[u8]) -> Result<(GwlbMeta, usize), DropReason> {
    let mut meta = GwlbMeta::default();
    let mut options = 0;
    while !opts.is_empty() {
        let Some(&[c0, c1, kind, len]) = opts.get(..OPTION_HEADER_LEN) else {
            return Err(DropReason::GeneveOptionMalformed);
        };
        let next = OPTION_HEADER_LEN + usize::from(len & 0x1f) * 4;
        let Some(data) = opts.get(OPTION_HEADER_LEN..next) else {
            return Err(DropReason::GeneveOptionMalformed);
        };
        match (u16::from_be_bytes([c0, c1]), kind) {
            (CLASS_AMAZON, TYPE_ENDPOINT) => meta.endpoint = Some(be64(data)?),
            (CLASS_AMAZON, TYPE_ATTACHMENT) => meta.attachment = Some(be64(data)?),
            (CLASS_AMAZON, TYPE_FLOW_COOKIE) => {
                let d: [u8; 4] = data
                    .try_into()
                    .map_err(|_| DropReason::GeneveOptionMalformed)?;
                meta.flow_cookie = Some(u32::from_be_bytes(d));
            }
            _ if kind & CRITICAL != 0 => return Err(DropReason::GeneveCriticalOption),
            _ => {}
        }
        options += 1;
        opts = &opts[next..];
    }
    Ok((meta, options))
}

/// For the fuzzer: panics when the fixed-offset reading of the Gateway
/// Load Balancer's options ([`Geneve::parse`]'s fast path) and the walk by
/// lengths disagree on the options area `opts` (the unit test checks the
/// AWS layout and its mutations; the fuzzer checks whatever it finds).
#[doc(hidden)]
pub fn assert_fast_options_agree(opts: &[u8]) {
    if let Some(fast) = aws_layout(opts) {
        assert_eq!(Ok((fast, 3)), walk_options(opts), "{opts:02x?}");
    }
}

fn be64(data: &[u8]) -> Result<u64, DropReason> {
    let d: [u8; 8] = data
        .try_into()
        .map_err(|_| DropReason::GeneveOptionMalformed)?;
    Ok(u64::from_be_bytes(d))
}

/// The VXLAN mirror datagram a GENEVE packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveVxlan<'a> {
    /// The Gateway Load Balancer options.
    pub meta: GwlbMeta,
    /// The GENEVE header's VNI (not the mirror session's: that is in the
    /// VXLAN header).
    pub geneve_vni: u32,
    /// The inner IP source: the mirrored ENI's address.
    pub source: IpAddr,
    /// The inner UDP destination port (one of `vxlan_ports`).
    pub dst_port: u16,
    /// The VXLAN datagram (inner UDP payload) as received or captured.
    pub datagram: &'a [u8],
    /// Its length as sent (from the inner UDP header): more than
    /// `datagram.len()` when a capture's snap length cut it.
    pub datagram_len: usize,
}

/// Takes a GENEVE datagram (a UDP payload) down to the VXLAN datagram
/// inside: inner IPv4 or IPv6, then UDP to a port in `vxlan_ports`.
/// Inlined into its callers (one per feed, once per datagram): as a call
/// it cost 165 instructions a datagram, its prologue and the result
/// written out and read back among them.
#[inline(always)]
pub fn decap<'a>(payload: &'a [u8], vxlan_ports: &[u16]) -> Result<GeneveVxlan<'a>, DropReason> {
    let g = Geneve::parse(payload)?;
    let version = match g.protocol {
        PROTOCOL_IPV4 => 4,
        PROTOCOL_IPV6 => 6,
        _ => return Err(DropReason::GeneveProtocol),
    };
    match g.payload.first() {
        Some(b) if b >> 4 == version => {}
        _ => return Err(DropReason::GeneveInnerMalformed),
    }
    let udp = strip_ip_version(g.payload, version, &INNER)?;
    if !port_listed(vxlan_ports, udp.dst_port) {
        return Err(DropReason::GeneveNotVxlan);
    }
    Ok(GeneveVxlan {
        meta: g.meta,
        geneve_vni: g.vni,
        source: udp.source,
        dst_port: udp.dst_port,
        datagram: udp.payload,
        datagram_len: udp.payload_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;
    use crate::wire::hex;
    use crate::wire::outer::strip_outer;
    use crate::wire::vxlan::Vxlan;

    const PORTS: &[u16] = &[4789];

    /// Every record of `testdata/geneve/NAME`, stripped to the outer UDP
    /// payload (all go to port 6081).
    fn fixture(name: &str) -> Vec<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/geneve")
            .join(name);
        let f = std::fs::File::open(&path).unwrap();
        let mut r = CaptureReader::new(f, name).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            let u = strip_outer(rec.linktype, rec.data).unwrap();
            assert_eq!(u.dst_port, PORT, "{name}");
            out.push(u.payload.to_vec());
        }
        assert!(!out.is_empty(), "{name}");
        out
    }

    /// The three Amazon options as a GWLB sends them: endpoint ID, attachment
    /// ID, flow cookie (32 bytes, Opt Len 8).
    fn aws_options() -> Vec<u8> {
        hex("0108 01 02 0123456789abcdef
             0108 02 02 0a0b0c0d0e0f1011
             0108 03 01 c0ffee01")
    }

    /// A GENEVE header with `options` and protocol type `protocol`, then `inner`.
    fn geneve(options: &[u8], protocol: u16, inner: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let mut g = vec![(options.len() / 4) as u8, 0];
        g.extend_from_slice(&protocol.to_be_bytes());
        g.extend_from_slice(&[0x00, 0x00, 0x2a, 0x00]); // VNI 42
        g.extend_from_slice(options);
        g.extend_from_slice(inner);
        g
    }

    /// VXLAN VNI 123 around a 60-byte Ethernet frame.
    fn vxlan_datagram() -> Vec<u8> {
        let mut v = hex("0800 0000 0000 7b00");
        v.extend_from_slice(&hex("0a1a2b3c4d5e 0a6b7c8d9eaf 0800"));
        v.extend((0..46).map(|i| i as u8));
        v
    }

    /// Inner IPv4 10.0.1.23 -> 10.0.2.9 / UDP 40000 -> 4789 / `payload`.
    fn inner_v4(payload: &[u8]) -> Vec<u8> {
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = hex("4500 0000 0000 4000 ff11 0000 0a000117 0a000209");
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&udp(4789, payload));
        ip
    }

    /// Inner IPv6 2001:db8::17 -> 2001:db8::9 / UDP 40000 -> 4789 / `payload`.
    fn inner_v6(payload: &[u8]) -> Vec<u8> {
        let mut ip = hex("6000 0000 0000 11ff
                          20010db8000000000000000000000017
                          20010db8000000000000000000000009");
        ip[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&udp(4789, payload));
        ip
    }

    fn udp(dst: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = hex("9c40");
        u.extend_from_slice(&dst.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn gwlb_v4() -> Vec<u8> {
        geneve(&aws_options(), PROTOCOL_IPV4, &inner_v4(&vxlan_datagram()))
    }

    fn gwlb_v6() -> Vec<u8> {
        geneve(&aws_options(), PROTOCOL_IPV6, &inner_v6(&vxlan_datagram()))
    }

    /// (a) zeek's GWLB-style trace (no options): the VXLAN datagram of VNI
    /// 4242 comes out, with the inner source and lengths tshark shows
    /// (`tshark -T fields -e ip.src -e udp.length -e vxlan.vni`:
    /// `127.0.0.1,127.0.0.1,…  148,112,…  4242` and `…  168,132,…  4242`).
    #[test]
    fn zeek_gwlb_style_trace_gives_vni_4242() {
        let recs = fixture("zeek-geneve-vxlan-dns-truncated.pcap");
        assert_eq!(recs.len(), 2);
        for (rec, udp_len) in recs.iter().zip([112, 132]) {
            let g = decap(rec, PORTS).unwrap();
            assert_eq!(g.source, "127.0.0.1".parse::<IpAddr>().unwrap());
            assert_eq!(g.geneve_vni, 4242);
            assert_eq!(g.meta, GwlbMeta::default());
            assert_eq!(g.meta.endpoint_id(), None);
            assert_eq!(g.dst_port, 4789);
            assert_eq!(g.datagram_len, udp_len - 8);
            // The records are cut at 176 bytes: 14+20+8 outer, 8 GENEVE,
            // 20+8 inner, the rest is the VXLAN datagram as captured.
            assert_eq!(g.datagram.len(), 176 - 78);
            assert_eq!(g.datagram, &rec[8 + 28..]);
            let v = Vxlan::new_checked(g.datagram).unwrap();
            assert_eq!(v.vni(), 4242);
        }
        // Not a VXLAN port: the same packets are inline traffic.
        assert_eq!(decap(&recs[0], &[8472]), Err(DropReason::GeneveNotVxlan));
    }

    /// (b) GENEVE carrying Ethernet (0x6558), some with an option of class 0.
    #[test]
    fn ethernet_protocol_type_is_refused() {
        let recs = fixture("zeek-geneve.pcap");
        assert_eq!(recs.len(), 6);
        for rec in &recs {
            let g = Geneve::parse(rec).unwrap();
            assert_eq!(g.protocol, 0x6558);
            assert_eq!(decap(rec, PORTS), Err(DropReason::GeneveProtocol));
        }
        assert!(recs.iter().any(|r| Geneve::parse(r).unwrap().options == 1));
    }

    /// (b) Bare IPv6/UDP inside (ports 40000/40001): inline traffic.
    #[test]
    fn ipv6_inner_udp_is_not_vxlan() {
        let recs = fixture("zeek-geneve-ipv6.pcap");
        assert_eq!(recs.len(), 2);
        for rec in &recs {
            assert_eq!(Geneve::parse(rec).unwrap().protocol, PROTOCOL_IPV6);
            assert_eq!(decap(rec, PORTS), Err(DropReason::GeneveNotVxlan));
        }
    }

    /// (b) Three options of class 0x0100 (20, 40, 16 bytes) are walked to
    /// the Ethernet frame after them; then the protocol type stops it.
    #[test]
    fn many_options_are_walked() {
        let recs = fixture("zeek-geneve-many-options.pcap");
        assert_eq!(recs.len(), 10);
        for rec in &recs {
            let g = Geneve::parse(rec).unwrap();
            assert_eq!(g.options, 3);
            assert_eq!(g.payload, &rec[HEADER_LEN + 76..]);
            assert_eq!(g.meta, GwlbMeta::default());
            assert_eq!(decap(rec, PORTS), Err(DropReason::GeneveProtocol));
        }
    }

    /// (c) The Amazon options and the VXLAN datagram, IPv4 inside.
    #[test]
    fn gwlb_options_and_ipv4_inner() {
        let p = gwlb_v4();
        let g = decap(&p, PORTS).unwrap();
        assert_eq!(g.meta.endpoint, Some(0x0123_4567_89ab_cdef));
        assert_eq!(g.meta.attachment, Some(0x0a0b_0c0d_0e0f_1011));
        assert_eq!(g.meta.flow_cookie, Some(0xc0ff_ee01));
        assert_eq!(
            g.meta.endpoint_id().unwrap().to_string(),
            "vpce-00123456789abcdef"
        );
        assert_eq!(g.geneve_vni, 42);
        assert_eq!(g.source, "10.0.1.23".parse::<IpAddr>().unwrap());
        assert_eq!(g.datagram, vxlan_datagram());
        assert_eq!(g.datagram_len, vxlan_datagram().len());
        assert_eq!(Vxlan::new_checked(g.datagram).unwrap().vni(), 123);
        assert_eq!(Geneve::parse(&p).unwrap().options, 3);
    }

    /// (c) The same with an IPv6 inner header (an IPv6 mirrored ENI).
    #[test]
    fn gwlb_options_and_ipv6_inner() {
        let p = gwlb_v6();
        let g = decap(&p, PORTS).unwrap();
        assert_eq!(g.meta.endpoint, Some(0x0123_4567_89ab_cdef));
        assert_eq!(g.meta.flow_cookie, Some(0xc0ff_ee01));
        assert_eq!(g.source, "2001:db8::17".parse::<IpAddr>().unwrap());
        assert_eq!(g.datagram, vxlan_datagram());
    }

    /// Inner IPv4 options are skipped by IHL; an IPv6 hop-by-hop header is
    /// walked; Ethernet padding after the inner packet is not VXLAN.
    #[test]
    fn inner_ipv4_options_and_ipv6_extension_headers() {
        let mut ip = inner_v4(&vxlan_datagram());
        ip[0] = 0x46;
        ip.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        let total = (ip.len() as u16).to_be_bytes();
        ip[2..4].copy_from_slice(&total);
        let mut p = geneve(&aws_options(), PROTOCOL_IPV4, &ip);
        p.extend_from_slice(&[0; 6]);
        let g = decap(&p, PORTS).unwrap();
        assert_eq!(g.datagram, vxlan_datagram());

        let mut ip6 = inner_v6(&vxlan_datagram());
        ip6[6] = 0; // hop-by-hop, then UDP
        ip6.splice(40..40, hex("1100 0104 0000 0000"));
        let plen = ((ip6.len() - 40) as u16).to_be_bytes();
        ip6[4..6].copy_from_slice(&plen);
        let p6 = geneve(&[], PROTOCOL_IPV6, &ip6);
        let g = decap(&p6, PORTS).unwrap();
        assert_eq!(g.datagram, vxlan_datagram());
        assert_eq!(g.meta, GwlbMeta::default());
    }

    /// Options of other classes are skipped unless critical; an Amazon
    /// option with another type and the critical bit is unknown, hence
    /// refused.
    #[test]
    fn unknown_options_skipped_unless_critical() {
        let mut opts = hex("0100 05 01 01020304");
        opts.extend_from_slice(&aws_options());
        let p = geneve(&opts, PROTOCOL_IPV4, &inner_v4(&vxlan_datagram()));
        let g = decap(&p, PORTS).unwrap();
        assert_eq!(g.meta.attachment, Some(0x0a0b_0c0d_0e0f_1011));
        assert_eq!(Geneve::parse(&p).unwrap().options, 4);

        for critical in [hex("0100 85 01 01020304"), hex("0108 81 00")] {
            let mut opts = aws_options();
            opts.extend_from_slice(&critical);
            let p = geneve(&opts, PROTOCOL_IPV4, &inner_v4(&vxlan_datagram()));
            assert_eq!(decap(&p, PORTS), Err(DropReason::GeneveCriticalOption));
        }
    }

    /// (d) Hostile headers, each stopped under its own reason.
    #[test]
    fn hostile_geneve_is_refused_by_reason() {
        let good = gwlb_v4();
        let check = |p: &[u8], want: DropReason| assert_eq!(decap(p, PORTS), Err(want), "{p:02x?}");

        let mut v = good.clone();
        v[0] |= 0x40; // version 1
        check(&v, DropReason::GeneveVersion);
        v[0] = (v[0] & 0x3f) | 0xc0; // version 3
        check(&v, DropReason::GeneveVersion);

        let mut o = good.clone();
        o[1] = FLAG_O;
        check(&o, DropReason::GeneveControl);
        o[1] = 0x40; // C: critical options present, none unknown: fine
        assert!(decap(&o, PORTS).is_ok());

        // Opt Len past the end of the packet.
        let mut l = geneve(&aws_options(), PROTOCOL_IPV4, &[]);
        check(&l, DropReason::GeneveInnerMalformed);
        l[0] = 0x3f;
        check(&l, DropReason::GeneveTruncated);
        // An option's own length past the options area.
        let mut ol = good.clone();
        ol[HEADER_LEN + 24 + 3] = 0x1f;
        check(&ol, DropReason::GeneveOptionMalformed);
        // An Amazon option of the wrong length.
        for wrong in [
            hex("0108 01 01 01234567"),
            hex("0108 02 03 0a0b0c0d0e0f101112131415"),
            hex("0108 03 02 c0ffee0100000000"),
        ] {
            let p = geneve(&wrong, PROTOCOL_IPV4, &inner_v4(&vxlan_datagram()));
            check(&p, DropReason::GeneveOptionMalformed);
        }

        // Protocol types neither IPv4 nor IPv6.
        for proto in [0x6558u16, 0x0000, 0x8100, 0x0806] {
            let mut p = good.clone();
            p[2..4].copy_from_slice(&proto.to_be_bytes());
            check(&p, DropReason::GeneveProtocol);
        }
        // IPv6 said, IPv4 inside.
        let mut p = good.clone();
        p[2..4].copy_from_slice(&PROTOCOL_IPV6.to_be_bytes());
        check(&p, DropReason::GeneveInnerMalformed);

        // Inner fragments: MF set, a later offset, an IPv6 fragment header.
        let ip = HEADER_LEN + 32;
        for (off, b) in [(6, 0x20), (7, 0x10)] {
            let mut f = good.clone();
            f[ip + off] = b;
            check(&f, DropReason::GeneveInnerFragment);
        }
        let mut f6 = inner_v6(&vxlan_datagram());
        f6[6] = 44;
        f6.splice(40..40, hex("1100 0001 0000 0001"));
        let plen = ((f6.len() - 40) as u16).to_be_bytes();
        f6[4..6].copy_from_slice(&plen);
        check(
            &geneve(&aws_options(), PROTOCOL_IPV6, &f6),
            DropReason::GeneveInnerFragment,
        );

        // Inner UDP to another port; inner TCP.
        let mut dns = inner_v4(&[0; 20]);
        dns[20 + 2..20 + 4].copy_from_slice(&53u16.to_be_bytes());
        check(
            &geneve(&aws_options(), PROTOCOL_IPV4, &dns),
            DropReason::GeneveNotVxlan,
        );
        let mut tcp = good.clone();
        tcp[ip + 9] = 6;
        check(&tcp, DropReason::GeneveNotVxlan);
        // The port set decides.
        assert!(decap(&good, &[8472, 4789]).is_ok());
        assert_eq!(decap(&good, &[]), Err(DropReason::GeneveNotVxlan));
    }

    /// (d) Cut at every byte of its headers (GENEVE 8, options 32, inner IP,
    /// UDP 8): an error each, by where the cut falls; cut inside the VXLAN
    /// datagram, what is there comes out with the length as sent.
    #[test]
    fn truncated_at_every_header_byte() {
        for (p, ip_len) in [(gwlb_v4(), 20), (gwlb_v6(), 40)] {
            let headers = HEADER_LEN + 32 + ip_len + 8;
            for len in 0..headers {
                let want = if len < HEADER_LEN + 32 {
                    DropReason::GeneveTruncated
                } else {
                    DropReason::GeneveInnerMalformed
                };
                assert_eq!(decap(&p[..len], PORTS), Err(want), "cut at {len}");
            }
            for len in headers..=p.len() {
                let g = decap(&p[..len], PORTS).unwrap();
                assert_eq!(g.datagram, &p[headers..len]);
                assert_eq!(g.datagram_len, vxlan_datagram().len());
            }
        }
    }

    /// No input panics: every cut and random bytes over the headers of
    /// the built datagrams and of the fixtures.
    #[test]
    fn no_input_panics() {
        let mut inputs = vec![gwlb_v4(), gwlb_v6()];
        for name in [
            "zeek-geneve-vxlan-dns-truncated.pcap",
            "zeek-geneve-many-options.pcap",
            "zeek-geneve-ipv6.pcap",
            "zeek-geneve.pcap",
        ] {
            inputs.extend(fixture(name));
        }
        let mut x = 0x9e37_79b9u32;
        for p in &inputs {
            for len in 0..=p.len() {
                let _ = decap(&p[..len], PORTS);
            }
            for _ in 0..2000 {
                let mut m = p.clone();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let at = (x as usize) % m.len().min(128);
                    m[at] = (x >> 24) as u8;
                }
                let _ = decap(&m, PORTS);
            }
        }
    }

    /// Issue 14 item 6 (speed): the fixed-offset reading of the three
    /// Amazon options gives what the walk by lengths gives, on the layout a
    /// GWLB sends and on every one-byte change of it (a changed header
    /// leaves the packet to the walk; a changed value is read alike), and
    /// on the options of every GENEVE fixture.
    #[test]
    fn fast_aws_options_read_agrees_with_the_walk() {
        let opts = aws_options();
        assert_eq!(
            aws_layout(&opts),
            Some(GwlbMeta {
                endpoint: Some(0x0123_4567_89ab_cdef),
                attachment: Some(0x0a0b_0c0d_0e0f_1011),
                flow_cookie: Some(0xc0ff_ee01),
            })
        );
        assert_fast_options_agree(&opts);
        for at in 0..opts.len() {
            for bit in 0..8 {
                let mut m = opts.clone();
                m[at] ^= 1 << bit;
                assert_fast_options_agree(&m);
                let header = at % 12 < 4;
                assert_eq!(aws_layout(&m).is_none(), header, "byte {at} bit {bit}");
            }
        }
        // Reordered, or a fourth option: the walk decides.
        let mut swapped = opts[12..24].to_vec();
        swapped.extend_from_slice(&opts[..12]);
        swapped.extend_from_slice(&opts[24..]);
        assert_eq!(aws_layout(&swapped), None);
        assert_eq!(
            walk_options(&swapped).unwrap().0,
            aws_layout(&opts).unwrap()
        );
        assert_eq!(aws_layout(&opts[..28]), None);
        for name in [
            "zeek-geneve-vxlan-dns-truncated.pcap",
            "zeek-geneve-many-options.pcap",
            "zeek-geneve-ipv6.pcap",
            "zeek-geneve.pcap",
        ] {
            for rec in fixture(name) {
                let end = HEADER_LEN + usize::from(rec[0] & 0x3f) * 4;
                assert_fast_options_agree(&rec[HEADER_LEN..end]);
            }
        }
    }
}
