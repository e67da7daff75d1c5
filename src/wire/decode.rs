//! Stage 4: decode an inner Ethernet frame far enough to classify it.
//!
//! In: the inner frame of a VXLAN datagram (possibly cut by the mirror
//! session's `PacketLength` or the capture's snap length). Out: a small
//! `Copy` [`Decoded`] summary (VLAN tags, EtherType, IP addresses, protocol,
//! ports, fragment position, the length the frame had on the wire), which the
//! session counters and, later, the filter rules read. Nothing is dropped
//! here: a frame that is not IP, or is cut short, decodes as far as it goes
//! and is still written.
//!
//! The common frame (untagged, a plain IPv4 header or IPv6 followed directly
//! by a transport header) is read straight off the bytes; every other frame
//! goes through etherparse's lax slicing (zero-copy, no allocation), which
//! keeps every layer it could read. Both give the same result
//! (`fast_path_equals_etherparse`). Ports, TCP flags and ICMP type are read
//! from the raw transport bytes, because a cut TCP header still has its ports
//! but etherparse will not give a transport slice for it.

use std::net::IpAddr;

use etherparse::{EtherType, IpNumber, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, LinkSlice};

/// What one inner frame is, as far as it could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Number of 802.1Q / 802.1ad tags (QinQ = 2).
    pub vlan_tags: u8,
    /// The innermost EtherType (after VLAN tags).
    pub ether_type: u16,
    /// Bytes before the network header: 14 + 4 per VLAN tag.
    pub l2_len: u16,
    /// The IP layer, when the frame is IPv4 or IPv6 and its header was whole.
    pub ip: Option<IpInfo>,
}

/// The IP header facts that filters and counters need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IANA protocol number of the payload (after IPv6 extension headers).
    pub protocol: u8,
    /// The packet is a fragment whose offset is not zero: it has no ports.
    pub later_fragment: bool,
    /// The length the IP packet had when sent: IPv4 total length, IPv6
    /// 40 + payload length (0 when the header says 0, a jumbogram).
    pub total_len: u32,
    /// Source and destination port, for TCP, UDP, SCTP and UDP-Lite when the
    /// first 4 bytes of the transport header were captured.
    pub ports: Option<(u16, u16)>,
    /// TCP flags byte (FIN 0x01 … CWR 0x80), when captured.
    pub tcp_flags: Option<u8>,
    /// ICMP / ICMPv6 type and code, when captured.
    pub icmp: Option<(u8, u8)>,
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;
const PROTO_UDPLITE: u8 = 136;

impl Decoded {
    /// The length the frame had on the wire, for the pcap record's original
    /// length: when the IP header says the packet is longer than the bytes
    /// that arrived (AWS cut it to the session's `PacketLength`, or to the
    /// target's MTU), `l2_len + total_len`; otherwise the bytes that arrived.
    pub fn wire_len(&self, captured: usize) -> usize {
        match self.ip {
            Some(ip) if ip.total_len > 0 => {
                captured.max(self.l2_len as usize + ip.total_len as usize)
            }
            _ => captured,
        }
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self.ip, Some(ip) if ip.protocol == PROTO_TCP)
    }

    pub fn is_udp(&self) -> bool {
        matches!(self.ip, Some(ip) if ip.protocol == PROTO_UDP)
    }
}

/// Decodes `frame`, an Ethernet II frame of at least 14 bytes (shorter ones
/// were dropped by the VXLAN stage; a shorter one here decodes as nothing).
#[inline]
pub fn decode(frame: &[u8]) -> Decoded {
    decode_common(frame).unwrap_or_else(|| decode_any(frame))
}

/// The common case read straight off the bytes: an untagged frame with a
/// whole IPv4 header (no AH) or an IPv6 header followed directly by TCP,
/// UDP, ICMPv6, SCTP or UDP-Lite. `None` for anything else, which
/// [`decode_any`] reads with etherparse. Gives exactly what `decode_any`
/// gives (`fast_path_equals_etherparse` checks it on real and mutated
/// frames); it exists because etherparse's slices are large values whose
/// copies cost more than the rest of the pipeline (replay profile:
/// etherparse and its `memcpy` were 30 % of the time).
#[inline]
fn decode_common(frame: &[u8]) -> Option<Decoded> {
    let ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let info = match ether_type {
        0x0800 => {
            let (&vihl, rest) = ip.split_first()?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl || rest.len() < 19 {
                return None;
            }
            let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let protocol = ip[9];
            if total_len < ihl || protocol == 51 {
                return None;
            }
            let later_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
            let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let end = total_len.min(ip.len());
            ip_info(
                IpAddr::V4(src),
                IpAddr::V4(dst),
                IpNumber(protocol),
                later_fragment,
                total_len as u32,
                &ip[ihl..end],
            )
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let protocol = ip[6];
            let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if payload_len == 0
                || !matches!(
                    protocol,
                    PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 | PROTO_SCTP | PROTO_UDPLITE
                )
            {
                return None;
            }
            let addr = |at: usize| {
                let b: [u8; 16] = ip[at..at + 16].try_into().expect("40 bytes checked");
                IpAddr::V6(std::net::Ipv6Addr::from(b))
            };
            let end = (40 + payload_len).min(ip.len());
            ip_info(
                addr(8),
                addr(24),
                IpNumber(protocol),
                false,
                40 + payload_len as u32,
                &ip[40..end],
            )
        }
        _ => return None,
    };
    Some(Decoded {
        vlan_tags: 0,
        ether_type,
        l2_len: 14,
        ip: Some(info),
    })
}

/// For the fuzzer: panics when the hand-written path and etherparse
/// disagree on `frame` (the unit test checks fixtures and mutations; the
/// fuzzer checks whatever it finds).
#[doc(hidden)]
pub fn assert_fast_path_agrees(frame: &[u8]) {
    if let Some(fast) = decode_common(frame) {
        assert_eq!(fast, decode_any(frame), "{frame:02x?}");
    }
}

/// Decodes any frame with etherparse's lax slicing.
fn decode_any(frame: &[u8]) -> Decoded {
    let mut out = Decoded {
        vlan_tags: 0,
        ether_type: 0,
        l2_len: 14,
        ip: None,
    };
    let Ok(pkt) = LaxSlicedPacket::from_ethernet(frame) else {
        return out;
    };
    if let Some(LinkSlice::Ethernet2(eth)) = &pkt.link {
        out.ether_type = eth.ether_type().0;
    }
    for ext in &pkt.link_exts {
        if let LaxLinkExtSlice::Vlan(vlan) = ext {
            out.vlan_tags += 1;
            out.l2_len += 4;
            out.ether_type = vlan.ether_type().0;
        }
    }
    let base = frame.as_ptr() as usize;
    out.ip = match &pkt.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            out.l2_len = (h.slice().as_ptr() as usize - base) as u16;
            out.ether_type = EtherType::IPV4.0;
            let later_fragment = h.fragments_offset().value() != 0;
            let payload = v4.payload();
            Some(ip_info(
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                payload.ip_number,
                later_fragment,
                u32::from(h.total_len()),
                payload.payload,
            ))
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            out.l2_len = (h.slice().as_ptr() as usize - base) as u16;
            out.ether_type = EtherType::IPV6.0;
            // Walked on the raw bytes: etherparse 0.21's extension iterator
            // reads past a cut extension header (found by fuzzing).
            let later_fragment = ipv6_later_fragment(h.slice(), &frame[out.l2_len as usize..]);
            let payload_len = u32::from(h.payload_length());
            let total_len = if payload_len == 0 {
                0
            } else {
                40 + payload_len
            };
            let payload = v6.payload();
            Some(ip_info(
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                payload.ip_number,
                later_fragment,
                total_len,
                payload.payload,
            ))
        }
        _ => None,
    };
    out
}

/// Whether an IPv6 packet is a fragment with a non-zero offset: walks the
/// extension headers in `packet` (the IPv6 header onwards, as captured),
/// stopping at the first one that is cut.
fn ipv6_later_fragment(header: &[u8], packet: &[u8]) -> bool {
    let Some(&first) = header.get(6) else {
        return false;
    };
    let (mut next, mut at) = (first, 40usize);
    for _ in 0..16 {
        let Some(ext) = packet.get(at..) else {
            return false;
        };
        match next {
            44 => {
                return ext.len() >= 4 && u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0;
            }
            0 | 43 | 60 | 135 | 139 | 140 if ext.len() >= 2 => {
                next = ext[0];
                at += (usize::from(ext[1]) + 1) * 8;
            }
            51 if ext.len() >= 2 => {
                next = ext[0];
                at += (usize::from(ext[1]) + 2) * 4;
            }
            _ => return false,
        }
    }
    false
}

fn ip_info(
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    later_fragment: bool,
    total_len: u32,
    l4: &[u8],
) -> IpInfo {
    let protocol = protocol.0;
    let mut info = IpInfo {
        src,
        dst,
        protocol,
        later_fragment,
        total_len,
        ports: None,
        tcp_flags: None,
        icmp: None,
    };
    if later_fragment {
        return info;
    }
    match protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE if l4.len() >= 4 => {
            info.ports = Some((
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ));
            if protocol == PROTO_TCP && l4.len() >= 14 {
                info.tcp_flags = Some(l4[13]);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 if l4.len() >= 2 => info.icmp = Some((l4[0], l4[1])),
        _ => {}
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    /// Frame 1 of tcpdump's `vxlan.pcap`, inner: ICMP echo request
    /// 192.168.203.3 -> 192.168.203.5 (98 bytes).
    fn icmp_echo() -> Vec<u8> {
        hex(
            "00308801000200163e37f604080045000054000040004001234fc0a8cb03c0a8cb050800f6f2050c0001fce2975100000000a6f8020000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
        )
    }

    /// A TCP SYN 10.0.0.1:40000 -> 10.0.0.2:22 built by hand (IPv4, 20-byte TCP).
    fn tcp_syn() -> Vec<u8> {
        hex("020000000002 020000000001 0800
             4500 0028 0001 0000 4006 0000 0a000001 0a000002
             9c40 0016 00000001 00000000 5002 ffff 0000 0000")
    }

    #[test]
    fn icmp_from_real_capture() {
        let d = decode(&icmp_echo());
        assert_eq!(d.vlan_tags, 0);
        assert_eq!(d.ether_type, 0x0800);
        let ip = d.ip.unwrap();
        assert_eq!(ip.src, "192.168.203.3".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "192.168.203.5".parse::<IpAddr>().unwrap());
        assert_eq!(ip.protocol, PROTO_ICMP);
        assert_eq!(ip.icmp, Some((8, 0)));
        assert_eq!(ip.ports, None);
        assert_eq!(d.wire_len(98), 98);
    }

    #[test]
    fn tcp_ports_and_flags() {
        let d = decode(&tcp_syn());
        let ip = d.ip.unwrap();
        assert_eq!(ip.ports, Some((40000, 22)));
        assert_eq!(ip.tcp_flags, Some(0x02));
        assert!(d.is_tcp());
    }

    #[test]
    fn cut_tcp_header_still_has_ports_and_wire_len() {
        // Cut 8 bytes into the TCP header, as a small PacketLength would.
        let f = tcp_syn();
        let cut = &f[..14 + 20 + 8];
        let d = decode(cut);
        let ip = d.ip.unwrap();
        assert_eq!(ip.ports, Some((40000, 22)));
        assert_eq!(ip.tcp_flags, None);
        assert_eq!(d.wire_len(cut.len()), 14 + 40);
    }

    #[test]
    fn vlan_and_qinq() {
        let f = tcp_syn();
        let mut one = f[..12].to_vec();
        one.extend_from_slice(&hex("8100 002a"));
        one.extend_from_slice(&f[12..]);
        let d = decode(&one);
        assert_eq!((d.vlan_tags, d.l2_len), (1, 18));
        assert_eq!(d.ip.unwrap().ports, Some((40000, 22)));
        assert_eq!(d.wire_len(one.len()), one.len());

        let mut two = f[..12].to_vec();
        two.extend_from_slice(&hex("88a8 000a 8100 0014"));
        two.extend_from_slice(&f[12..]);
        let d = decode(&two);
        assert_eq!((d.vlan_tags, d.l2_len), (2, 22));
        assert_eq!(d.ip.unwrap().dst, "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let mut f = tcp_syn();
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x03; // offset 3 * 8 bytes
        let d = decode(&f);
        let ip = d.ip.unwrap();
        assert!(ip.later_fragment);
        assert_eq!(ip.ports, None);
    }

    #[test]
    fn arp_is_not_ip() {
        // Frame 2 of tcpdump's vxlan.pcap: ARP request.
        let f = hex(
            "ffffffffffff00308801000208060001080006040001003088010002c0a8cb05000000000000c0a8cb03",
        );
        let d = decode(&f);
        assert_eq!(d.ether_type, 0x0806);
        assert_eq!(d.ip, None);
        assert_eq!(d.wire_len(f.len()), f.len());
    }

    #[test]
    fn ipv6_udp() {
        let f = hex("333300000001 020000000001 86dd
             6000 0000 0008 1140 fe800000000000000000000000000001 ff020000000000000000000000000001
             0035 0035 0008 0000");
        let d = decode(&f);
        let ip = d.ip.unwrap();
        assert_eq!(ip.protocol, PROTO_UDP);
        assert_eq!(ip.ports, Some((53, 53)));
        assert_eq!(ip.total_len, 48);
    }

    /// Found by `cargo fuzz run datagram`: an IPv6 packet whose extension
    /// headers are cut made etherparse 0.21's extension iterator read past
    /// the frame (AddressSanitizer: heap-buffer-overflow).
    #[test]
    fn fuzz_regression_cut_ipv6_extension_header() {
        let d: [u8; 79] = [
            0x08, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0xcb, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x30, 0x88, 0x01, 0x00, 0x02, 0x08, 0x00, 0x6e, 0x75, 0x45, 0x6c, 0x65, 0x5f,
            0x00, 0x6d, 0x76, 0x70, 0x63, 0x5f, 0x63, 0x69, 0x64, 0x72, 0x73, 0x62, 0x65, 0x40,
            0x75, 0x6d, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19, 0xff, 0xe6, 0x00, 0x00, 0x00,
            0x00, 0x25, 0x6c, 0x65, 0x5f, 0x16, 0x00, 0x00, 0x5f, 0x16, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x71, 0xcf, 0x00, 0x4d, 0x75, 0x08, 0xff, 0x02,
        ];
        let _ = decode(&d[8..]);
        // An IPv6 fragment header with offset 8, cut or whole.
        let mut f = hex("333300000001 020000000001 86dd
             6000 0000 0010 2c40 fe800000000000000000000000000001 ff020000000000000000000000000001
             1100 0008 00000001 0035 0035 0008 0000");
        assert!(decode(&f).ip.unwrap().later_fragment);
        f[14 + 40 + 3] = 0; // offset 0: the first fragment, with ports
        let d = decode(&f);
        assert!(!d.ip.unwrap().later_fragment);
        for len in 14..f.len() {
            let _ = decode(&f[..len]);
        }
    }

    /// The hand-written common path gives what etherparse gives, on every
    /// frame of the Ethernet fixtures and on mutations of them: every
    /// length cut, and random bytes in the IP and transport headers.
    #[test]
    fn fast_path_equals_etherparse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ethernet");
        let mut frames: Vec<Vec<u8>> = vec![tcp_syn(), icmp_echo()];
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(f) = std::fs::File::open(&path) else {
                continue;
            };
            let Ok(mut r) = crate::capture::CaptureReader::new(f, "") else {
                continue;
            };
            while let Ok(Some(rec)) = r.next_record() {
                if rec.linktype == 1 {
                    frames.push(rec.data.to_vec());
                }
            }
        }
        assert!(frames.len() > 100, "{} frames", frames.len());
        let (mut fast, mut x) = (0, 0x9e37_79b9u32);
        let mut check = |f: &[u8]| {
            if let Some(d) = decode_common(f) {
                fast += 1;
                assert_eq!(d, decode_any(f), "{f:02x?}");
            }
        };
        for f in &frames {
            for len in 0..=f.len().min(120) {
                check(&f[..len]);
            }
            check(f);
            for _ in 0..50 {
                let mut m = f.clone();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let at = 14 + (x as usize >> 8) % 60;
                    if at < m.len() {
                        m[at] = x as u8;
                    }
                }
                check(&m);
                let cut = (x as usize >> 4) % (m.len() + 1);
                check(&m[..cut]);
            }
        }
        assert!(fast > 10_000, "the fast path took only {fast} frames");
    }

    #[test]
    fn garbage_never_panics() {
        let f = tcp_syn();
        for len in 0..f.len() {
            let _ = decode(&f[..len]);
        }
        let mut x: u32 = 1;
        let mut buf = [0u8; 80];
        for _ in 0..2000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            buf[12] = 0x08;
            buf[13] = 0x00;
            buf[14] = 0x45;
            let _ = decode(&buf);
        }
    }
}
