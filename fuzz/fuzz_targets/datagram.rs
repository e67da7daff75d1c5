//! Any bytes as a VXLAN datagram through the receive-side stages (VXLAN
//! check, decode, AWS rules, tcpdump expression, record encoding); as a
//! GENEVE datagram from a Gateway Load Balancer (`geneve::decap`, and the
//! VXLAN datagram it yields through the same stages); and as a captured
//! outer packet of each supported link type (replay's strip_outer, then
//! GENEVE decap of the UDP payload, as replay does for `geneve_ports`).
//! Nothing may panic, loop or allocate without bound, the hand-written
//! decoder must agree with etherparse on every frame, and the fixed-offset
//! reading of the Amazon options must agree with the walk by lengths.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mirrorcap::config::Config;
use mirrorcap::wire::decode::decode;
use mirrorcap::filter::OwnAddresses;
use mirrorcap::capture::encode::{OutputFormat, RecordHeader};
use mirrorcap::wire::geneve;
use mirrorcap::wire::vxlan::Vxlan;

const RULES: &str = r#"
[filter]
network_services = ["amazon-dns"]
vpc_cidrs = ["10.0.0.0/16"]
[[filter.ingress]]
rule_number = 10
rule_action = "reject"
protocol = "udp"
source_cidr_block = "0.0.0.0/0"
destination_cidr_block = "0.0.0.0/0"
source_port_range = { from_port = 0, to_port = 1023 }
[[filter.ingress]]
rule_number = 20
rule_action = "accept"
source_cidr_block = "0.0.0.0/0"
destination_cidr_block = "0.0.0.0/0"
[[filter.egress]]
rule_number = 10
rule_action = "accept"
protocol = "tcp"
source_cidr_block = "::/0"
destination_cidr_block = "::/0"
destination_port_range = { from_port = 443, to_port = 443 }
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(RULES, std::path::Path::new("fuzz.toml")).unwrap())
}

/// The receive-side stages for one VXLAN datagram (UDP payload).
fn stages(cfg: &Config, own: &OwnAddresses, data: &[u8]) {
    if let Ok(v) = Vxlan::new_checked(data) {
        let _ = cfg.vnis.accepts(v.vni());
        let frame = v.inner();
        mirrorcap::wire::decode::assert_fast_path_agrees(frame);
        let d = decode(frame);
        let wire = d.wire_len(frame.len());
        assert!(wire >= frame.len());
        if let Some(f) = &cfg.filter {
            let _ = f.evaluate(&d, frame, wire, own);
        }
        for format in [OutputFormat::Pcap, OutputFormat::Pcapng] {
            let h = RecordHeader::new(format, 1, frame.len() as u32, wire as u32);
            let _ = h.tail();
        }
    }
}

/// GENEVE decap of a UDP payload to the GENEVE port; what it yields lies
/// within the input and goes on through the stages.
fn geneve_path(cfg: &Config, own: &OwnAddresses, data: &[u8]) {
    if data.len() >= geneve::HEADER_LEN {
        let end = geneve::HEADER_LEN + usize::from(data[0] & 0x3f) * 4;
        if let Some(opts) = data.get(geneve::HEADER_LEN..end) {
            geneve::assert_fast_options_agree(opts);
        }
    }
    if let Ok(g) = geneve::decap(data, &[4789, 8472]) {
        assert!(g.datagram.len() <= data.len());
        assert!(g.datagram.len() <= g.datagram_len);
        let _ = g.meta.endpoint_id().map(|e| e.to_string());
        stages(cfg, own, g.datagram);
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = config();
    let own = OwnAddresses {
        outer: IpAddr::from([10, 0, 1, 5]),
        extra: vec!["2001:db8::/64".parse().unwrap()],
    };
    stages(cfg, &own, data);
    geneve_path(cfg, &own, data);
    for linktype in [0u16, 1, 12, 101, 108, 113, 228, 229, 276] {
        if let Ok(u) = mirrorcap::ingest::replay::strip_outer(linktype, data) {
            assert!(u.payload.len() <= data.len());
            geneve_path(cfg, &own, u.payload);
        }
    }
});
