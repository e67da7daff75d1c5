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

use criterion::{Criterion, Throughput, criterion_group};

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

/// What every benchmark needs: the rules, the ENI's address, the chunk.
struct Setup {
    cfg: Config,
    filter: std::sync::Arc<MirrorFilter>,
    own: OwnAddresses,
    chunk: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let cfg = Config::parse(RULES, std::path::Path::new("bench.toml")).unwrap();
        let filter = cfg.filter.clone().unwrap();
        Setup {
            cfg,
            filter,
            own: OwnAddresses {
                outer: "10.0.1.5".parse::<IpAddr>().unwrap(),
                extra: Vec::new(),
            },
            chunk: Vec::with_capacity(1 << 20),
        }
    }

    /// One pass over direct datagrams.
    #[inline(always)]
    fn direct(&mut self, dgrams: &[Vec<u8>]) -> usize {
        for d in dgrams {
            let d = black_box(d.as_slice());
            stages(d, &self.cfg, &self.filter, &self.own, &mut self.chunk);
        }
        self.chunk.len()
    }

    /// One pass over GENEVE-wrapped datagrams: decap, then the same stages.
    #[inline(always)]
    fn geneve(&mut self, wrapped: &[Vec<u8>]) -> usize {
        for p in wrapped {
            let g = geneve::decap(black_box(p.as_slice()), &VXLAN_PORTS).unwrap();
            black_box(g.meta.endpoint_id());
            stages(
                g.datagram,
                &self.cfg,
                &self.filter,
                &self.own,
                &mut self.chunk,
            );
        }
        self.chunk.len()
    }
}

const VXLAN_PORTS: [u16; 1] = [4789];
const SIZES: [usize; 4] = [64, 128, 512, 1400];

fn direct_dgrams(size: usize) -> Vec<Vec<u8>> {
    (0..256).map(|i| datagram(size, i)).collect()
}

fn wrapped_dgrams(size: usize) -> Vec<Vec<u8>> {
    (0..256).map(|i| gwlb_wrapped(&datagram(size, i))).collect()
}

fn stages_bench(c: &mut Criterion) {
    let mut s = Setup::new();
    // Direct, then the same datagrams through a Gateway Load Balancer:
    // GENEVE decap first (options, inner IPv4/UDP, the VXLAN port), then
    // the same stages.
    for (name, gwlb) in [
        ("decap+filter+encode", false),
        ("geneve+decap+filter+encode", true),
    ] {
        let mut group = c.benchmark_group(name);
        for size in SIZES {
            let dgrams = if gwlb {
                wrapped_dgrams(size)
            } else {
                direct_dgrams(size)
            };
            group.throughput(Throughput::Elements(dgrams.len() as u64));
            group.bench_function(format!("{size}B"), |b| {
                if gwlb {
                    b.iter(|| black_box(s.geneve(&dgrams)))
                } else {
                    b.iter(|| black_box(s.direct(&dgrams)))
                }
            });
        }
        group.finish();
    }
}

/// `PIPELINE_PASSES=KIND:SIZE:N` (KIND `direct` or `geneve`): no
/// criterion, N passes over the 256 datagrams of that size and kind, to
/// count instructions under cachegrind (deterministic where wall time on a
/// shared VM is not: run two N and take the difference per datagram, see
/// BENCHMARKS.md).
fn passes(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [kind, size, n] = parts[..] else {
        panic!("PIPELINE_PASSES={spec:?}: expected KIND:SIZE:N, e.g. geneve:64:1000");
    };
    let size: usize = size.parse().expect("SIZE: an inner frame size, e.g. 64");
    let n: usize = n.parse().expect("N: a number of passes");
    let mut s = Setup::new();
    let mut total = 0;
    match kind {
        "direct" => {
            let d = direct_dgrams(size);
            for _ in 0..n {
                total += s.direct(&d);
            }
        }
        "geneve" => {
            let w = wrapped_dgrams(size);
            for _ in 0..n {
                total += s.geneve(&w);
            }
        }
        _ => panic!("PIPELINE_PASSES={spec:?}: KIND is direct or geneve"),
    }
    println!("{kind} {size}B: {n} passes of 256 datagrams ({total})");
}

criterion_group!(benches, stages_bench);

fn main() {
    if let Ok(spec) = std::env::var("PIPELINE_PASSES") {
        return passes(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
