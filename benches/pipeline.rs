//! Receive-side cost per packet, on one core, from in-memory datagrams:
//! VXLAN check, VNI filter, inner decode, AWS rule evaluation and pcap
//! record encoding into a write chunk (what the receive loop does for each
//! datagram; the socket and the disk are measured by the live and offline
//! benchmarks in BENCHMARKS.md). The same datagrams again wrapped as a
//! Gateway Load Balancer endpoint delivers them (GENEVE with the three
//! Amazon options, inner IPv4/UDP 4789: 68 bytes more), through
//! `geneve::decap` first: issue 14 asks that to cost at most 15 % more per
//! packet than direct.
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use mirrorcap::capture::encode::{OutputFormat, RecordHeader};
use mirrorcap::config::Config;
use mirrorcap::filter::{MirrorFilter, OwnAddresses};
use mirrorcap::wire::decode::decode;
use mirrorcap::wire::geneve;
use mirrorcap::wire::vxlan::Vxlan;

/// A VXLAN datagram with an Ethernet/IPv4/TCP inner frame of `len` bytes.
fn datagram(len: usize, seq: u32) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    d.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    d.extend_from_slice(&[
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    d.extend_from_slice(&[10, 0, 1, 5, 192, 0, 2, (seq % 200) as u8]);
    d.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    d.resize(8 + len, 0xab);
    d
}

/// `dgram` as a GWLB endpoint sends it (the UDP payload to port 6081):
/// GENEVE version 0, protocol IPv4, the endpoint ID, attachment ID and
/// flow cookie options (class 0x0108), then IPv4 10.0.1.5 -> 10.0.2.9 and
/// UDP to 4789 around the VXLAN datagram.
fn gwlb_wrapped(dgram: &[u8]) -> Vec<u8> {
    let mut g = vec![8, 0, 0x08, 0x00, 0, 0, 0, 0];
    for (kind, words, value) in [(1u8, 2u8, 0x0123_4567_89ab_cdefu64), (2, 2, 0x0a0b_0c0d)] {
        g.extend_from_slice(&[0x01, 0x08, kind, words]);
        g.extend_from_slice(&value.to_be_bytes());
    }
    g.extend_from_slice(&[0x01, 0x08, 3, 1, 0xc0, 0xff, 0xee, 0x01]);
    let udp_len = (8 + dgram.len()) as u16;
    let ip_len = (20 + udp_len).to_be_bytes();
    g.extend_from_slice(&[0x45, 0, ip_len[0], ip_len[1], 0, 0, 0x40, 0, 64, 17, 0, 0]);
    g.extend_from_slice(&[10, 0, 1, 5, 10, 0, 2, 9, 0xc3, 0x50, 0x12, 0xb5]);
    g.extend_from_slice(&udp_len.to_be_bytes());
    g.extend_from_slice(&[0, 0]);
    g.extend_from_slice(dgram);
    g
}

const RULES: &str = r#"
[[filter.egress]]
rule_number = 100
rule_action = "reject"
protocol = "udp"
source_cidr_block = "0.0.0.0/0"
destination_cidr_block = "0.0.0.0/0"
[[filter.egress]]
rule_number = 200
rule_action = "accept"
protocol = "tcp"
source_cidr_block = "10.0.0.0/8"
destination_cidr_block = "0.0.0.0/0"
destination_port_range = { from_port = 443, to_port = 443 }
[[filter.ingress]]
rule_number = 100
rule_action = "accept"
source_cidr_block = "0.0.0.0/0"
destination_cidr_block = "0.0.0.0/0"
"#;

/// What the receive loop does with one VXLAN datagram: VXLAN check, VNI
/// filter, decode, the AWS rules, the record into the chunk.
#[inline(always)]
fn stages(d: &[u8], cfg: &Config, filter: &MirrorFilter, own: &OwnAddresses, chunk: &mut Vec<u8>) {
    let v = Vxlan::new_checked(d).unwrap();
    if !cfg.vnis.accepts(v.vni()) {
        return;
    }
    let frame = v.inner();
    let decoded = decode(frame);
    let wire = decoded.wire_len(frame.len());
    if filter.evaluate(&decoded, frame, wire, own).is_err() {
        return;
    }
    let h = RecordHeader::new(
        OutputFormat::Pcap,
        1_764_000_000_000_000_000,
        frame.len() as u32,
        wire as u32,
    );
    if chunk.len() + frame.len() + 32 > chunk.capacity() {
        chunk.clear();
    }
    chunk.extend_from_slice(h.header());
    chunk.extend_from_slice(frame);
}

fn stages_bench(c: &mut Criterion) {
    let cfg = Config::parse(RULES, std::path::Path::new("bench.toml")).unwrap();
    let filter = cfg.filter.clone().unwrap();
    let own = OwnAddresses {
        outer: "10.0.1.5".parse::<IpAddr>().unwrap(),
        extra: Vec::new(),
    };
    let vxlan_ports = [4789u16];
    let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut group = c.benchmark_group("decap+filter+encode");
    for size in [64usize, 128, 512, 1400] {
        let dgrams: Vec<Vec<u8>> = (0..256).map(|i| datagram(size, i)).collect();
        group.throughput(Throughput::Elements(dgrams.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                for d in &dgrams {
                    stages(black_box(d.as_slice()), &cfg, &filter, &own, &mut chunk);
                }
                black_box(chunk.len())
            })
        });
    }
    group.finish();
    // The same datagrams through a Gateway Load Balancer: GENEVE decap
    // first (options, inner IPv4/UDP, the VXLAN port), then the same stages.
    let mut group = c.benchmark_group("geneve+decap+filter+encode");
    for size in [64usize, 128, 512, 1400] {
        let wrapped: Vec<Vec<u8>> = (0..256).map(|i| gwlb_wrapped(&datagram(size, i))).collect();
        group.throughput(Throughput::Elements(wrapped.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                for p in &wrapped {
                    let g = geneve::decap(black_box(p.as_slice()), &vxlan_ports).unwrap();
                    black_box(g.meta.endpoint_id());
                    stages(g.datagram, &cfg, &filter, &own, &mut chunk);
                }
                black_box(chunk.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages_bench);
criterion_main!(benches);
