//! The offline feed: `mirrorcap replay`. Reads captures of the
//! *encapsulated* traffic (as `tcpdump -w` or Wireshark saves it), strips the
//! outer layers and pushes each VXLAN datagram into the same [`Pipeline`] the
//! live socket feeds, with the record's timestamp as the receive time.
//!
//! In: [`CaptureReader`] records. Link types: Ethernet (with 802.1Q/802.1ad
//! tags), Linux cooked v1 and v2, raw IP (101, and 12/14 as some systems
//! write it), IPv4 (228), IPv6 (229), BSD loopback (0, 108). Outer IPv4 and
//! IPv6 (extension headers walked).
//! Out: `push(udp_payload, meta)` for UDP datagrams to a port in
//! `vxlan_ports`. Skipped and counted: other link types and EtherTypes
//! (`not_ip`), other protocols (`not_udp`), other ports (`not_vxlan_port`),
//! malformed outer headers (`outer_malformed`), and outer IP fragments
//! (`outer_fragment`: reassembly is not done; AWS sends datagrams whole to
//! a target whose MTU fits them, and a partial datagram is never decoded).
//!
//! A datagram to a port in `geneve_ports` (a Gateway Load Balancer
//! endpoint's traffic) goes through [`crate::wire::geneve::decap`] first:
//! the VXLAN datagram inside is pushed with the inner IP source (the
//! mirrored ENI's address) as its source and the endpoint ID as its
//! endpoint (part of the session key); one that stops is counted under
//! its `geneve_*` reason.

use std::io::Read;

use crate::capture::{CaptureError, CaptureReader};
use crate::pipeline::DropReason;
use crate::pipeline::{Pipeline, RecvMeta};
use crate::wire::geneve;
use crate::wire::outer::port_listed;
pub use crate::wire::outer::{OuterUdp, strip_outer};

/// Which UDP destination ports carry what in the replayed captures. A
/// few ports each: a list, looked through per record (no set needed).
#[derive(Clone, Debug, Default)]
pub struct ReplayPorts {
    /// VXLAN on the outer UDP, and on the inner UDP of GENEVE-borne
    /// traffic (`vxlan_ports`).
    pub vxlan: Vec<u16>,
    /// GENEVE around the VXLAN datagram (`geneve_ports`).
    pub geneve: Vec<u16>,
}

impl ReplayPorts {
    pub fn new(vxlan: &[u16], geneve: &[u16]) -> Self {
        ReplayPorts {
            vxlan: vxlan.to_vec(),
            geneve: geneve.to_vec(),
        }
    }
}

/// `orig_len` for [`RecvMeta`]: the length as sent when the capture cut it.
fn orig_len(captured: usize, sent: usize) -> usize {
    if captured < sent { sent } else { 0 }
}

/// Feeds every record of `reader` into `pipeline`. Returns the error that
/// ended the input early, if any (every whole record before it was pushed).
pub fn replay<R: Read>(
    reader: &mut CaptureReader<R>,
    pipeline: &mut Pipeline,
    ports: &ReplayPorts,
) -> Result<(), CaptureError> {
    let mut since_publish = 0u32;
    while let Some(rec) = reader.next_record()? {
        since_publish += 1;
        if since_publish == 1024 {
            since_publish = 0;
            pipeline.publish_counts();
        }
        // Bytes the outer headers took, to derive the datagram's length
        // on the wire when the capture's snap length cut the record.
        match strip_outer(rec.linktype, rec.data) {
            Ok(udp) if port_listed(&ports.vxlan, udp.dst_port) => {
                let meta = RecvMeta {
                    source: udp.source,
                    peer: udp.source,
                    endpoint: None,
                    timestamp_ns: rec.ts_ns,
                    orig_len: orig_len(udp.payload.len(), udp.payload_len),
                };
                pipeline.push(udp.payload, &meta);
            }
            Ok(udp) if port_listed(&ports.geneve, udp.dst_port) => {
                match geneve::decap(udp.payload, &ports.vxlan) {
                    Ok(g) => {
                        let meta = RecvMeta {
                            source: g.source,
                            peer: udp.source,
                            endpoint: g.meta.endpoint_id(),
                            timestamp_ns: rec.ts_ns,
                            orig_len: orig_len(g.datagram.len(), g.datagram_len),
                        };
                        pipeline.push(g.datagram, &meta);
                    }
                    Err(reason) => {
                        let c = pipeline.counters();
                        c.received(rec.data.len());
                        c.count_drop(reason);
                    }
                }
            }
            Ok(_) => {
                let c = pipeline.counters();
                c.received(rec.data.len());
                c.count_drop(DropReason::NotVxlanPort);
            }
            Err(reason) => {
                let c = pipeline.counters();
                c.received(rec.data.len());
                c.count_drop(reason);
            }
        }
    }
    pipeline.publish_counts();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;
    use std::net::IpAddr;

    /// Outer headers of the real AWS mirror capture (suricata-verify
    /// vxlan-decoder-03, frame 1): 172.31.0.238 -> 172.31.17.188, UDP 65519 ->
    /// 4789, then a VXLAN header for VNI 5569041 and 14 bytes of inner frame.
    fn aws_outer() -> Vec<u8> {
        hex("0a9e5e8d2e3a 0aa1f1e0d0e4 0800
             4500 0032 0000 0000 ff11 0000 ac1f00ee ac1f11bc
             ffef 12b5 001e 0000
             0800 0000 54fa 1100
             0a1a2b3c4d5e 0a6b7c8d9eaf 0800")
    }

    #[test]
    fn ethernet_ipv4_udp() {
        let p = aws_outer();
        let u = strip_outer(1, &p).unwrap();
        assert_eq!(u.source, "172.31.0.238".parse::<IpAddr>().unwrap());
        assert_eq!(u.dst_port, 4789);
        assert_eq!(u.payload_len, 22);
        assert_eq!(u.payload, &p[42..]);
    }

    #[test]
    fn padding_is_trimmed_and_vlan_skipped() {
        let mut p = aws_outer();
        p.extend_from_slice(&[0; 6]); // Ethernet padding
        let mut tagged = p[..12].to_vec();
        tagged.extend_from_slice(&hex("8100 0064"));
        tagged.extend_from_slice(&p[12..]);
        let u = strip_outer(1, &tagged).unwrap();
        assert_eq!(u.payload.len(), 22);
    }

    #[test]
    fn cut_record_keeps_wire_length() {
        let p = aws_outer();
        let u = strip_outer(1, &p[..50]).unwrap();
        assert_eq!(u.payload.len(), 8);
        assert_eq!(u.payload_len, 22);
    }

    #[test]
    fn drop_reasons() {
        let p = aws_outer();
        assert_eq!(strip_outer(1, &p[..13]), Err(DropReason::OuterMalformed));
        let mut arp = p.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(strip_outer(1, &arp), Err(DropReason::NotIp));
        let mut tcp = p.clone();
        tcp[14 + 9] = 6;
        assert_eq!(strip_outer(1, &tcp), Err(DropReason::NotUdp));
        let mut frag = p.clone();
        frag[14 + 6] = 0x20; // MF
        assert_eq!(strip_outer(1, &frag), Err(DropReason::OuterFragment));
        assert_eq!(strip_outer(147, &p), Err(DropReason::NotIp));
        assert_eq!(strip_outer(101, &[]), Err(DropReason::OuterMalformed));
    }

    #[test]
    fn raw_ip_and_cooked() {
        let p = aws_outer();
        assert_eq!(strip_outer(101, &p[14..]).unwrap().dst_port, 4789);
        let mut sll2 = hex("0800 0000 00000002 0001 00 06 0a9e5e8d2e3a 0000");
        sll2.extend_from_slice(&p[14..]);
        assert_eq!(strip_outer(276, &sll2).unwrap().dst_port, 4789);
        let mut sll = hex("0000 0001 0006 0a9e5e8d2e3a 0000 0800");
        sll.extend_from_slice(&p[14..]);
        assert_eq!(strip_outer(113, &sll).unwrap().dst_port, 4789);
    }
}
