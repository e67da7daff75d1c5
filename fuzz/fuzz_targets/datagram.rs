//! Any bytes as a VXLAN datagram through the receive-side stages (VXLAN
//! check, decode, AWS rules, tcpdump expression, record encoding), and as
//! a captured outer packet of each supported link type (replay's
//! strip_outer). Nothing may panic, loop or allocate without bound, and
//! the hand-written decoder must agree with etherparse on every frame.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mirrorcap::config::Config;
use mirrorcap::wire::decode::decode;
use mirrorcap::filter::OwnAddresses;
use mirrorcap::capture::encode::{OutputFormat, RecordHeader};
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

fuzz_target!(|data: &[u8]| {
    let cfg = config();
    let own = OwnAddresses {
        outer: IpAddr::from([10, 0, 1, 5]),
        extra: vec!["2001:db8::/64".parse().unwrap()],
    };
    if let Ok(v) = Vxlan::new_checked(data) {
        let _ = cfg.vnis.accepts(v.vni());
        let frame = v.inner();
        mirrorcap::wire::decode::assert_fast_path_agrees(frame);
        let d = decode(frame);
        let wire = d.wire_len(frame.len());
        assert!(wire >= frame.len());
        if let Some(f) = &cfg.filter {
            let _ = f.evaluate(&d, frame, wire, &own);
        }
        for format in [OutputFormat::Pcap, OutputFormat::Pcapng] {
            let h = RecordHeader::new(format, 1, frame.len() as u32, wire as u32);
            let _ = h.tail();
        }
    }
    for linktype in [0u16, 1, 12, 101, 108, 113, 228, 229, 276] {
        if let Ok(u) = mirrorcap::ingest::replay::strip_outer(linktype, data) {
            assert!(u.payload.len() <= data.len());
        }
    }
});
