//! Receive-side cost per packet, on one core, from in-memory datagrams:
//! VXLAN check, VNI filter, inner decode, AWS rule evaluation and pcap
//! record encoding into a write chunk (what the receive loop does for each
//! datagram; the socket and the disk are measured by the live and offline
//! benchmarks in BENCHMARKS.md).
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use mirrorcap::capture::encode::{OutputFormat, RecordHeader};
use mirrorcap::config::Config;
use mirrorcap::filter::OwnAddresses;
use mirrorcap::wire::decode::decode;
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

fn stages(c: &mut Criterion) {
    let cfg = Config::parse(RULES, std::path::Path::new("bench.toml")).unwrap();
    let filter = cfg.filter.clone().unwrap();
    let own = OwnAddresses {
        outer: "10.0.1.5".parse::<IpAddr>().unwrap(),
        extra: Vec::new(),
    };
    let mut group = c.benchmark_group("decap+filter+encode");
    for size in [64usize, 128, 512, 1400] {
        let dgrams: Vec<Vec<u8>> = (0..256).map(|i| datagram(size, i)).collect();
        let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
        group.throughput(Throughput::Elements(dgrams.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                for d in &dgrams {
                    let v = Vxlan::new_checked(black_box(d.as_slice())).unwrap();
                    if !cfg.vnis.accepts(v.vni()) {
                        continue;
                    }
                    let frame = v.inner();
                    let decoded = decode(frame);
                    let wire = decoded.wire_len(frame.len());
                    if filter.evaluate(&decoded, frame, wire, &own).is_err() {
                        continue;
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
                black_box(chunk.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
