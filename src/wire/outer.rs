//! The outer layers of a captured mirror packet: link header (Ethernet
//! with 802.1Q/802.1ad tags, Linux cooked v1/v2, raw IP, BSD loopback),
//! outer IPv4/IPv6 (extension headers walked) and UDP, down to the UDP
//! payload. A pure parser: a packet it cannot strip gives the
//! [`DropReason`] the caller counts. Its IP/UDP walker (`strip_ip`) also
//! strips the inner IP packet a GENEVE header carries
//! ([`crate::wire::geneve`]), with that layer's reasons.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pipeline::DropReason;

/// Where the UDP payload of an outer packet is.
#[derive(Debug, PartialEq, Eq)]
pub struct OuterUdp<'a> {
    pub source: IpAddr,
    pub dst_port: u16,
    /// UDP payload as captured.
    pub payload: &'a [u8],
    /// UDP payload length as sent (from the UDP header).
    pub payload_len: usize,
}

/// Strips link, IP and UDP headers from one captured packet.
pub fn strip_outer(linktype: u16, pkt: &[u8]) -> Result<OuterUdp<'_>, DropReason> {
    let ip = match linktype {
        1 => {
            if pkt.len() < 14 {
                return Err(DropReason::OuterMalformed);
            }
            let mut et = u16::from_be_bytes([pkt[12], pkt[13]]);
            let mut off = 14;
            while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                if pkt.len() < off + 4 {
                    return Err(DropReason::OuterMalformed);
                }
                et = u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]);
                off += 4;
            }
            match et {
                0x0800 | 0x86dd => &pkt[off..],
                _ => return Err(DropReason::NotIp),
            }
        }
        113 => {
            // Linux cooked v1: protocol at 14..16.
            if pkt.len() < 16 {
                return Err(DropReason::OuterMalformed);
            }
            match u16::from_be_bytes([pkt[14], pkt[15]]) {
                0x0800 | 0x86dd => &pkt[16..],
                _ => return Err(DropReason::NotIp),
            }
        }
        276 => {
            // Linux cooked v2: protocol at 0..2, 20-byte header.
            if pkt.len() < 20 {
                return Err(DropReason::OuterMalformed);
            }
            match u16::from_be_bytes([pkt[0], pkt[1]]) {
                0x0800 | 0x86dd => &pkt[20..],
                _ => return Err(DropReason::NotIp),
            }
        }
        101 | 12 | 14 | 228 | 229 => pkt,
        0 | 108 => {
            if pkt.len() < 4 {
                return Err(DropReason::OuterMalformed);
            }
            &pkt[4..]
        }
        _ => return Err(DropReason::NotIp),
    };
    strip_ip(ip, &OUTER)
}

/// Whether `port` is in `list` (a few ports: `vxlan_ports`,
/// `geneve_ports`), once or twice per datagram. A loop the compiler
/// inlines: the library's `contains` for `u16` was a call of 21
/// instructions per lookup for a list of one port (cachegrind, replay,
/// BENCHMARKS.md "GENEVE (issue 14)"), which clippy's advice does not know.
#[inline(always)]
#[allow(clippy::manual_contains)]
pub fn port_listed(list: &[u16], port: u16) -> bool {
    list.iter().any(|&p| p == port)
}

/// The reasons [`strip_ip`] gives, per layer: the outer headers of a
/// captured packet, or the inner IP packet a GENEVE header carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpDrops {
    /// A header malformed or cut short.
    pub malformed: DropReason,
    /// Not UDP.
    pub not_udp: DropReason,
    /// An IP fragment.
    pub fragment: DropReason,
}

/// The outer layers' reasons (replay).
const OUTER: IpDrops = IpDrops {
    malformed: DropReason::OuterMalformed,
    not_udp: DropReason::NotUdp,
    fragment: DropReason::OuterFragment,
};

/// Strips an IPv4 header (options skipped by IHL) or an IPv6 header (its
/// extension headers walked) and the UDP header after it. Fragments are
/// refused, never decoded. `why` names the reason of each kind of stop.
#[inline]
pub(crate) fn strip_ip<'a>(ip: &'a [u8], why: &IpDrops) -> Result<OuterUdp<'a>, DropReason> {
    let Some(&first) = ip.first() else {
        return Err(why.malformed);
    };
    strip_ip_version(ip, first >> 4, why)
}

/// [`strip_ip`] for a caller that has read the IP version (the first
/// byte's high nibble) already: GENEVE's protocol type says which one to
/// expect. `ip` is not empty.
#[inline(always)]
pub(crate) fn strip_ip_version<'a>(
    ip: &'a [u8],
    version: u8,
    why: &IpDrops,
) -> Result<OuterUdp<'a>, DropReason> {
    let (source, udp) = match version {
        4 => {
            let first = ip[0];
            if ip.len() < 20 {
                return Err(why.malformed);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < 20 || ip.len() < ihl || total < ihl {
                return Err(why.malformed);
            }
            if ip[9] != 17 {
                return Err(why.not_udp);
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                return Err(why.fragment);
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            // Trim Ethernet padding: the IP total length ends the packet.
            // (A GSO super-frame may carry total length 0: keep all.)
            let end = if total == 0 {
                ip.len()
            } else {
                total.min(ip.len())
            };
            (IpAddr::V4(src), &ip[ihl..end])
        }
        6 => {
            if ip.len() < 40 {
                return Err(why.malformed);
            }
            let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let end = if payload_len == 0 {
                ip.len()
            } else {
                (40 + payload_len).min(ip.len())
            };
            let mut next = ip[6];
            let mut off = 40;
            loop {
                match next {
                    17 => break,
                    0 | 43 | 60 | 135 | 139 | 140 => {
                        if end < off + 8 {
                            return Err(why.malformed);
                        }
                        next = ip[off];
                        off += (usize::from(ip[off + 1]) + 1) * 8;
                    }
                    51 => {
                        if end < off + 8 {
                            return Err(why.malformed);
                        }
                        next = ip[off];
                        off += (usize::from(ip[off + 1]) + 2) * 4;
                    }
                    44 => return Err(why.fragment),
                    _ => return Err(why.not_udp),
                }
            }
            if off > end {
                return Err(why.malformed);
            }
            (IpAddr::V6(Ipv6Addr::from(src)), &ip[off..end])
        }
        _ => return Err(why.malformed),
    };
    if udp.len() < 8 {
        return Err(why.malformed);
    }
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // UDP length 0 is legal for IPv6 jumbograms and appears in GSO captures:
    // the IP layer's length then stands.
    let payload_len = if udp_len == 0 {
        udp.len() - 8
    } else if udp_len < 8 {
        return Err(why.malformed);
    } else {
        udp_len - 8
    };
    let captured_end = (8 + payload_len).min(udp.len());
    Ok(OuterUdp {
        source,
        dst_port,
        payload: &udp[8..captured_end],
        payload_len,
    })
}
