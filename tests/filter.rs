//! Mirror-filter rules and tcpdump expressions, end to end: replays of real
//! captures compared with what tshark's display filters and tcpdump's own
//! expressions select from the same frames.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use common::*;

const AWS: &str = "vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap";
/// The mirrored ENI of the AWS capture (outer source and inner address).
const ENI: &str = "172.31.0.238";

fn rules_toml(table: &str, dir: &str, rules: &[&str]) -> String {
    rules
        .iter()
        .map(|r| format!("[[{table}.{dir}]]\n{r}\n"))
        .collect()
}

/// Rule sets on the real AWS capture against the equivalent tshark display
/// filter on its inner layer (`#2`; the outer is IPv4).
#[test]
fn aws_capture_rules_match_tshark() {
    let input = testdata(AWS);
    let any = "source_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"0.0.0.0/0\"";
    let cases: Vec<(String, String)> = vec![
        (
            // SSH into the ENI only.
            rules_toml("filter", "ingress", &[&format!("rule_number = 100\nrule_action = \"accept\"\nprotocol = \"tcp\"\n{any}\ndestination_port_range = {{ from_port = 22, to_port = 22 }}")]),
            format!("ip.dst#2 == {ENI} && tcp.dstport == 22"),
        ),
        (
            // Egress: reject UDP (10), accept to 18.196/16 (20); ingress:
            // source ports 37180-37182 inclusive (100).
            rules_toml("filter", "egress", &[
                "rule_number = 20\nrule_action = \"accept\"\nsource_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"18.196.0.0/16\"",
                &format!("rule_number = 10\nrule_action = \"reject\"\nprotocol = 17\n{any}"),
            ]) + &rules_toml("filter", "ingress", &[&format!("rule_number = 100\nrule_action = \"accept\"\nprotocol = 6\n{any}\nsource_port_range = {{ from_port = 37180, to_port = 37182 }}")]),
            format!(
                "(ip.dst#2 == {ENI} && tcp.srcport >= 37180 && tcp.srcport <= 37182) || \
                 (ip.src#2 == {ENI} && ip.dst#2 != {ENI} && ip.proto#2 != 17 && ip.dst#2 == 18.196.0.0/16)"
            ),
        ),
        (
            // amazon-dns keeps the VPC resolver's DNS both ways although
            // every rule rejects.
            "[filter]\nnetwork_services = [\"amazon-dns\"]\nvpc_cidrs = [\"172.31.0.0/16\"]\n".to_string()
                + &rules_toml("filter", "ingress", &[&format!("rule_number = 1\nrule_action = \"reject\"\n{any}")])
                + &rules_toml("filter", "egress", &[&format!("rule_number = 1\nrule_action = \"reject\"\n{any}")]),
            "((ip.dst#2 == 172.31.0.2 || ip.dst#2 == 169.254.169.253) && (udp.dstport#2 == 53 || tcp.dstport == 53)) || \
             ((ip.src#2 == 172.31.0.2 || ip.src#2 == 169.254.169.253) && (udp.srcport#2 == 53 || tcp.srcport == 53))".to_string(),
        ),
        (
            // A [[session]] filter replaces [filter]: only NTP.
            rules_toml("filter", "ingress", &[&format!("rule_number = 1\nrule_action = \"accept\"\n{any}")])
                + "[[session]]\nvni = 5569041\nsource = \"172.31.0.238\"\n"
                + &rules_toml("session.filter", "ingress", &[&format!("rule_number = 1\nrule_action = \"accept\"\nprotocol = \"udp\"\n{any}\nsource_port_range = {{ from_port = 123, to_port = 123 }}")])
                + &rules_toml("session.filter", "egress", &[&format!("rule_number = 1\nrule_action = \"accept\"\nprotocol = \"udp\"\n{any}\ndestination_port_range = {{ from_port = 123, to_port = 123 }}")]),
            format!("(ip.dst#2 == {ENI} && udp.srcport#2 == 123) || (ip.src#2 == {ENI} && ip.dst#2 != {ENI} && udp.dstport#2 == 123)"),
        ),
    ];
    for (config, expr) in cases {
        let want: Vec<FrameRow> = tshark_vxlan_filtered(&input, 4789, &expr)
            .into_values()
            .flatten()
            .collect();
        let (got, _) = replay_config(&config, &input);
        assert!(!want.is_empty(), "{expr} selects nothing");
        assert!(want.len() < 100, "{expr} selects everything");
        assert_eq!(got, want, "config:\n{config}\ntshark: {expr}");
    }
}

/// Rule sets on Ethernet fixtures wrapped in VXLAN: direction from the
/// session's configured `addresses`, VLAN/QinQ, IPv6, fragments, truncated
/// TCP headers.
#[test]
fn wrapped_fixture_rules_match_tshark() {
    let any4 = "source_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"0.0.0.0/0\"";
    let any6 = "source_cidr_block = \"::/0\"\ndestination_cidr_block = \"::/0\"";
    let client = "141.142.220.118";
    // (fixture, config, tshark filter on the original frames)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "zeek-wikipedia.pcap",
            format!("[[session]]\nvni = 77\naddresses = [\"{client}/32\"]\n")
                + &rules_toml(
                    "session.filter",
                    "ingress",
                    &[&format!(
                        "rule_number = 100\nrule_action = \"accept\"\nprotocol = \"tcp\"\n{any4}\nsource_port_range = {{ from_port = 80, to_port = 80 }}"
                    )],
                )
                + &rules_toml(
                    "session.filter",
                    "egress",
                    &[
                        &format!(
                            "rule_number = 100\nrule_action = \"accept\"\nprotocol = \"udp\"\n{any4}\ndestination_port_range = {{ from_port = 53, to_port = 53 }}"
                        ),
                        "rule_number = 200\nrule_action = \"reject\"\nprotocol = \"tcp\"\nsource_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"208.80.152.2/32\"",
                        "rule_number = 300\nrule_action = \"accept\"\nprotocol = \"tcp\"\nsource_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"208.80.152.0/24\"\ndestination_port_range = { from_port = 80, to_port = 80 }",
                    ],
                ),
            format!(
                "(ip.dst == {client} && tcp.srcport == 80) || \
                 (ip.src == {client} && ip.dst != {client} && (udp.dstport == 53 || (tcp && ip.dst != 208.80.152.2 && ip.dst == 208.80.152.0/24 && tcp.dstport == 80))) || \
                 (ip && ip.src != {client} && ip.dst != {client} && (tcp.srcport == 80 || udp.dstport == 53 || (tcp && ip.dst != 208.80.152.2 && ip.dst == 208.80.152.0/24 && tcp.dstport == 80)))"
            ),
        ),
        (
            "zeek-vlan-collisions.pcap",
            rules_toml(
                "filter",
                "ingress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\n{any4}\ndestination_port_range = {{ from_port = 80, to_port = 80 }}"
                )],
            ),
            "tcp.dstport == 80".to_string(),
        ),
        (
            "arkime-v6-http.pcap",
            rules_toml(
                "filter",
                "egress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\n{any6}\ndestination_port_range = {{ from_port = 80, to_port = 80 }}"
                )],
            ) + &rules_toml(
                "filter",
                "ingress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = \"icmpv6\"\n{any6}"
                )],
            ),
            "(ipv6 && tcp.dstport == 80) || icmpv6".to_string(),
        ),
        (
            "arkime-v6-http.pcap",
            rules_toml(
                "filter",
                "ingress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\n{any4}"
                )],
            ),
            "ip".to_string(),
        ),
        (
            "arkime-socks5-http-302-frag.pcap",
            rules_toml(
                "filter",
                "ingress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\n{any4}\ndestination_port_range = {{ from_port = 21477, to_port = 21477 }}"
                )],
            ) + &rules_toml(
                "filter",
                "egress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\n{any4}\nsource_port_range = {{ from_port = 21477, to_port = 21477 }}"
                )],
            ),
            "tcp.dstport == 21477 || tcp.srcport == 21477".to_string(),
        ),
        (
            "arkime-socks5-http-302-frag.pcap",
            // Later fragments have no ports but match a rule without ports.
            rules_toml(
                "filter",
                "ingress",
                &[
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\nsource_cidr_block = \"10.0.0.1/32\"\ndestination_cidr_block = \"10.0.0.0/24\"",
                ],
            ),
            "ip.proto == 6 && ip.src == 10.0.0.1".to_string(),
        ),
        (
            "zeek-truncated-header.pcap",
            rules_toml(
                "filter",
                "ingress",
                &[&format!(
                    "rule_number = 5\nrule_action = \"accept\"\nprotocol = 6\n{any4}\nsource_port_range = {{ from_port = 25, to_port = 25 }}"
                )],
            ),
            "tcp.srcport == 25".to_string(),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (fixture, config, expr)) in cases.iter().enumerate() {
        let input = testdata(&format!("ethernet/{fixture}"));
        let wrapped = tmp.path().join(format!("w{i}.pcap"));
        // The outer source is none of the inner addresses: direction comes
        // only from `addresses`.
        wrap_ethernet_capture(&input, &wrapped, 77, "10.99.0.1".parse().unwrap());
        let want = tshark_frames_filtered(&input, expr);
        let all = tshark_frames(&input);
        // `ip` on the IPv6-only capture: an IPv4 rule keeps nothing there.
        assert!(
            (!want.is_empty() || expr == "ip") && want.len() < all.len(),
            "{fixture}: `{expr}` selects {} of {}",
            want.len(),
            all.len()
        );
        let (got, _) = replay_config(config, &wrapped);
        assert_eq!(got, want, "{fixture}\nconfig:\n{config}\ntshark: {expr}");
    }
}

/// `aws ec2 describe-traffic-mirror-filters` output, selected by filter id,
/// applied end to end; the rule counters in the summary add up.
#[test]
fn describe_traffic_mirror_filters_json() {
    let input = testdata(AWS);
    let json = testdata("aws/describe-traffic-mirror-filters.json");
    let config = format!(
        "[filter]\naws_json = \"{}\"\naws_filter_id = \"tmf-0a1b2c3d4e5f60718\"\n",
        json.display()
    );
    // The JSON: ingress 100 accept TCP dport 22, 200 reject all; egress 100
    // accept TCP sport 22; network services amazon-dns (VPC 172.31.0.0/16
    // given in the config below).
    let config = config.replace("[filter]\n", "[filter]\nvpc_cidrs = [\"172.31.0.0/16\"]\n");
    let expr = format!(
        "(ip.dst#2 == {ENI} && tcp.dstport == 22) || (ip.src#2 == {ENI} && ip.dst#2 != {ENI} && tcp.srcport == 22) || \
         (ip.dst#2 == 172.31.0.2 && udp.dstport#2 == 53) || (ip.src#2 == 172.31.0.2 && udp.srcport#2 == 53)"
    );
    let want: Vec<FrameRow> = tshark_vxlan_filtered(&input, 4789, &expr)
        .into_values()
        .flatten()
        .collect();
    let (got, err) = replay_config(&config, &input);
    assert_eq!(got, want);
    let rejected = summary_count(&err, "skipped rule_rejected");
    let unmatched = summary_count(&err, "skipped no_rule_matched");
    assert_eq!(got.len() as u64 + rejected + unmatched, 100, "{err}");
    let line = |needle: &str| -> u64 {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}`: {err}"))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(line("by filter ingress rule 200 (reject)"), rejected);
    assert_eq!(
        line("by filter ingress rule 100 (accept)")
            + line("by filter egress rule 100 (accept)")
            + line("rule amazon-dns"),
        got.len() as u64
    );

    // Several filters and no id: the error lists them.
    let (code, _, err) = mirrorcap(&[
        "check-config",
        &write_tmp(&format!("[filter]\naws_json = \"{}\"\n", json.display())),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "holds 2 filters (tmf-0a1b2c3d4e5f60718, tmf-0fedcba9876543210): set aws_filter_id"
        ),
        "{err}"
    );
}

fn write_tmp(text: &str) -> String {
    let p: PathBuf =
        std::env::temp_dir().join(format!("mirrorcap-test-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `bpf` against `tcpdump -r FILE -w - EXPR` on the same inner frames.
#[test]
fn bpf_matches_tcpdump() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "zeek-wikipedia.pcap",
            &[
                "tcp port 80",
                "udp",
                "host 208.80.152.3",
                "net 141.142.0.0/16 and not arp",
                "tcp[tcpflags] & tcp-syn != 0",
                "port 53 or arp",
                "not tcp",
                "tcp dst port 80 and len > 100",
                "ether broadcast",
            ],
        ),
        (
            "zeek-vlan-collisions.pcap",
            &["vlan", "vlan 42", "vlan and vlan 20", "not vlan"],
        ),
        (
            "arkime-v6-http.pcap",
            &["ip6 and udp", "icmp6", "ip6 and tcp port 80"],
        ),
        (
            "arkime-socks5-http-302-frag.pcap",
            &["ip[6:2] & 0x1fff != 0", "ip[6] & 0x20 != 0"],
        ),
        ("zeek-truncated-header.pcap", &["tcp src port 25"]),
    ];
    let mut n = 0;
    for (i, (fixture, exprs)) in cases.iter().enumerate() {
        let input = testdata(&format!("ethernet/{fixture}"));
        let wrapped = tmp.path().join(format!("w{i}.pcap"));
        let src: IpAddr = "10.99.0.1".parse().unwrap();
        wrap_ethernet_capture(&input, &wrapped, 5, src);
        let all = tshark_frames(&input).len();
        for expr in *exprs {
            let out = tmp.path().join(format!("tcpdump-{n}.pcap"));
            n += 1;
            let r = tool(
                "tcpdump",
                &[
                    "-r",
                    input.to_str().unwrap(),
                    "-w",
                    out.to_str().unwrap(),
                    expr,
                ],
            );
            assert!(r.status.success(), "tcpdump {expr}: {}", clean_stderr(&r));
            let want = tshark_frames(&out);
            assert!(
                !want.is_empty() && want.len() < all,
                "{fixture}: `{expr}` selects {} of {all}",
                want.len()
            );
            let config = format!("[filter]\nbpf = {:?}\n", expr);
            let (got, err) = replay_config(&config, &wrapped);
            assert_eq!(got, want, "{fixture}: bpf = {expr:?}");
            assert_eq!(
                summary_count(&err, "skipped bpf") as usize,
                all - want.len()
            );
        }
    }
    assert!(n >= 12);
}

/// A bad expression fails the config with libpcap's reason.
#[test]
fn bad_bpf_is_a_config_error() {
    let (code, _, err) = mirrorcap(&[
        "check-config",
        &write_tmp("[filter]\nbpf = \"tcp prot 80\"\n"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":2: `filter.bpf`: \"tcp prot 80\" is not a valid tcpdump expression"),
        "{err}"
    );
}

/// When AWS cut packets (the session's PacketLength: the datagram is whole,
/// the inner frame short), the records keep the original length from the
/// inner IP header: tshark shows frame.len > frame.cap_len.
#[test]
fn aws_truncated_frames_keep_original_length() {
    let input = testdata(AWS);
    let f = std::fs::File::open(&input).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "aws").unwrap();
    let src: IpAddr = ENI.parse().unwrap();
    let mut recs = Vec::new();
    const PACKET_LENGTH: usize = 64;
    while let Some(rec) = r.next_record().unwrap() {
        let vx = &rec.data[42..];
        let cut = &vx[..vx.len().min(8 + PACKET_LENGTH)];
        let pkt = outer_packet(src, 4789, cut, cut.len());
        let len = pkt.len() as u32;
        recs.push((rec.ts_ns, pkt, len));
    }
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pcap");
    write_pcap(&cut, 1, &recs);
    let (got, _) = replay_config("", &cut);
    let want: Vec<FrameRow> = tshark_vxlan(&input, 4789).into_values().flatten().collect();
    assert_eq!(got.len(), want.len());
    let mut cut_frames = 0;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert_eq!(g.2, w.2.min(PACKET_LENGTH as u64), "cap_len");
        assert_eq!(g.1, w.1, "frame.len is the original length");
        if g.1 > g.2 {
            cut_frames += 1;
        }
    }
    assert!(cut_frames > 30, "{cut_frames}");
}
