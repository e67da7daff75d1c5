//! Issue 14: Gateway Load Balancer traffic (GENEVE around the VXLAN mirror
//! datagram) replayed, against tshark's own GENEVE and VXLAN dissectors.
//! The captures are built here from the fixtures: every VXLAN datagram of
//! a capture wrapped in outer IPv4/UDP 6081/GENEVE with the three Amazon
//! options (class 0x0108: endpoint, attachment, flow cookie).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::*;

/// The GWLB node that sends to the appliance (outer source).
const GWLB: &str = "192.168.77.5";

/// The three Amazon options: endpoint ID `endpoint`, an attachment ID, a
/// flow cookie (32 bytes).
fn aws_options(endpoint: u64) -> Vec<u8> {
    let mut o = vec![0x01, 0x08, 0x01, 0x02];
    o.extend_from_slice(&endpoint.to_be_bytes());
    o.extend_from_slice(&[0x01, 0x08, 0x02, 0x02]);
    o.extend_from_slice(&0x0a0b_0c0d_0e0f_1011u64.to_be_bytes());
    o.extend_from_slice(&[0x01, 0x08, 0x03, 0x01, 0xc0, 0xff, 0xee, 0x01]);
    o
}

/// A GENEVE header (version 0, GENEVE VNI 0) with `options` before `inner`,
/// protocol type `protocol`.
fn geneve(options: &[u8], protocol: u16, inner: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut g = vec![(options.len() / 4) as u8, 0];
    g.extend_from_slice(&protocol.to_be_bytes());
    g.extend_from_slice(&[0, 0, 0, 0]);
    g.extend_from_slice(options);
    g.extend_from_slice(inner);
    g
}

/// Wraps every record of an Ethernet capture of VXLAN mirror traffic
/// (untagged IPv4 or IPv6 to UDP 4789) in GENEVE with `options`, from the
/// GWLB node over UDP 6081; `endpoint_of(i)` picks each record's options.
/// Timestamps and original lengths are kept; writes `out`.
fn wrap_in_geneve(input: &Path, out: &Path, options_of: impl Fn(usize) -> Vec<u8>) {
    let f = std::fs::File::open(input).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "x").unwrap();
    let gwlb: IpAddr = GWLB.parse().unwrap();
    let mut recs = Vec::new();
    let mut i = 0;
    while let Some(rec) = r.next_record().unwrap() {
        assert_eq!(rec.linktype, 1);
        let ethertype = u16::from_be_bytes([rec.data[12], rec.data[13]]);
        assert!(ethertype == 0x0800 || ethertype == 0x86dd, "{input:?}");
        let ip = &rec.data[14..];
        let options = options_of(i);
        let payload = geneve(&options, ethertype, ip);
        let wire_payload = 8 + options.len() + rec.orig_len as usize - 14;
        let pkt = outer_packet(gwlb, 6081, &payload, wire_payload);
        let orig = (outer_len(gwlb) + wire_payload) as u32;
        recs.push((rec.ts_ns, pkt, orig));
        i += 1;
    }
    write_pcap(out, 1, &recs);
}

/// What tshark's GENEVE and VXLAN dissectors extract from a GWLB-style
/// capture: per (VNI, inner source as spelled in output paths, endpoint
/// ID), in order, rows of (time, frame length on the wire, captured
/// length, md5). The inner VXLAN datagram is the second `udp.payload`, the
/// mirrored ENI the second `ip.src` (or the first `ipv6.src`, the outer
/// being IPv4).
fn tshark_geneve(file: &Path) -> BTreeMap<(u32, String, String), Vec<FrameRow>> {
    let text = tshark_fields(
        &[
            "-r",
            file.to_str().unwrap(),
            "-o",
            "ip.defragment:FALSE",
            "-Y",
            "geneve && vxlan",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=;",
        ],
        &[
            "frame.time_epoch",
            "vxlan.vni",
            "ip.src",
            "ipv6.src",
            "udp.payload",
            "frame.len",
            "frame.cap_len",
            "geneve.option.class",
            "geneve.option.type",
            "geneve.option.unknown.data",
            "frame.protocols",
        ],
    );
    let mut m: BTreeMap<_, Vec<FrameRow>> = BTreeMap::new();
    for l in text.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        let ip4: Vec<&str> = c[2].split(';').collect();
        // The layer after GENEVE: `ip` (the second ip.src) or `ipv6` (the
        // first ipv6.src, the outer being IPv4).
        let after = c[10].split("geneve:").nth(1).unwrap_or("");
        let src = if after.starts_with("ip:") {
            assert!(ip4.len() >= 2, "{l}");
            ip4[1].to_string()
        } else {
            assert!(after.starts_with("ipv6:"), "{l}");
            c[3].split(';').next().unwrap().replace(':', "_")
        };
        let payload = unhex(c[4].split(';').nth(1).expect("an inner udp.payload"));
        let inner = &payload[8..];
        let lost: u64 = c[5].parse::<u64>().unwrap() - c[6].parse::<u64>().unwrap();
        // The endpoint: the data of the option of class 0x0108, type 1
        // (tshark 4.0 shows Amazon options as unknown ones, each with its
        // data, so the lists line up).
        let classes: Vec<&str> = c[7].split(';').collect();
        let types: Vec<&str> = c[8].split(';').collect();
        let datas: Vec<&str> = c[9].split(';').collect();
        let endpoint = (0..classes.len())
            .find(|&i| {
                u32::from_str_radix(classes[i].trim_start_matches("0x"), 16) == Ok(0x0108)
                    && u32::from_str_radix(types[i].trim_start_matches("0x"), 16) == Ok(1)
            })
            .map(|i| {
                let d = unhex(&datas[i].replace(':', ""));
                format!("vpce-{:017x}", u64::from_be_bytes(d.try_into().unwrap()))
            })
            .unwrap_or_default();
        let vni = c[1].split(';').next().unwrap().parse().unwrap();
        m.entry((vni, src, endpoint)).or_default().push((
            norm_time(c[0]),
            inner.len() as u64 + lost,
            inner.len() as u64,
            md5_hex(inner),
        ));
    }
    m
}

/// tshark's rows keyed (VNI, source) only, for the layout of direct
/// sessions.
fn without_endpoint(
    m: BTreeMap<(u32, String, String), Vec<FrameRow>>,
) -> BTreeMap<(u32, String), Vec<FrameRow>> {
    let mut out: BTreeMap<(u32, String), Vec<FrameRow>> = BTreeMap::new();
    for ((vni, src, _), rows) in m {
        out.entry((vni, src)).or_default().extend(rows);
    }
    out
}

/// Output frames per (VNI, source, endpoint) under the default template:
/// `DIR/<endpoint>/<vni>/<source>/<file>`, or `DIR/<vni>/<source>/<file>`
/// (endpoint empty) for direct sessions. Flow files (`DIR/flows/`) are
/// left out.
fn output_by_key(dir: &Path) -> BTreeMap<(u32, String, String), Vec<FrameRow>> {
    let mut m: BTreeMap<_, Vec<FrameRow>> = BTreeMap::new();
    for f in output_files(dir) {
        let rel = f.strip_prefix(dir).unwrap();
        if rel.starts_with("flows") {
            continue;
        }
        capinfos_ok(&f);
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_str().unwrap().into()).collect();
        if parts.len() == 3 {
            parts.insert(0, String::new());
        }
        assert_eq!(parts.len(), 4, "{rel:?}");
        assert!(
            parts[0].is_empty() || parts[0].starts_with("vpce-"),
            "{rel:?}"
        );
        let key = (
            parts[1].parse().unwrap(),
            parts[2].clone(),
            parts[0].clone(),
        );
        m.entry(key).or_default().extend(tshark_frames(&f));
    }
    m
}

fn replay(dir: &Path, config: Option<&str>, input: &Path) -> (i32, String) {
    let mut args = vec!["replay", "--dir", dir.to_str().unwrap()];
    let cfg = dir.with_extension("toml");
    if let Some(text) = config {
        std::fs::write(&cfg, text).unwrap();
        args.extend_from_slice(&["--config", cfg.to_str().unwrap()]);
    }
    args.push(input.to_str().unwrap());
    let (code, _, err) = mirrorcap(&args);
    (code, err)
}

/// Issue 14, steps 1 and 2: the real AWS mirror capture and a wrapped
/// IPv6 fixture, each wrapped by a GWLB in GENEVE with the Amazon options,
/// give per session (VNI, mirrored ENI, endpoint), in
/// `DIR/<endpoint>/<vni>/<source>/`, the frames tshark's GENEVE and VXLAN
/// dissectors show: same order, timestamps, lengths and bytes.
#[test]
fn gwlb_geneve_capture_matches_tshark() {
    let tmp = tempfile::tempdir().unwrap();
    // An Ethernet fixture wrapped in VXLAN from an IPv6 mirrored ENI, to
    // have an IPv6 inner packet (protocol type 0x86DD) too.
    let v6 = tmp.path().join("v6-vxlan.pcap");
    wrap_ethernet_capture(
        &testdata("ethernet/zeek-truncated-header.pcap"),
        &v6,
        77,
        "2001:db8::b".parse().unwrap(),
    );
    let inputs = [
        testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap"),
        v6,
    ];
    for (n, input) in inputs.iter().enumerate() {
        let wrapped = tmp.path().join(format!("gwlb-{n}.pcap"));
        wrap_in_geneve(input, &wrapped, |_| aws_options(0x0123_4567_89ab_cdef));
        let want = tshark_geneve(&wrapped);
        let frames: usize = want.values().map(Vec::len).sum();
        assert!(frames >= 10, "{input:?}: tshark found {frames} frames");
        assert!(
            want.keys().all(|k| k.2 == "vpce-00123456789abcdef"),
            "{:?}",
            want.keys()
        );
        // The VXLAN decode of the unwrapped capture agrees (same frames).
        let direct = tshark_vxlan(input, 4789);
        assert_eq!(without_endpoint(want.clone()), direct, "{input:?}");

        let out = tmp.path().join(format!("out-{n}"));
        let (code, err) = replay(&out, None, &wrapped);
        assert_eq!(code, 0, "{input:?}: {err}");
        assert_eq!(output_by_key(&out), want, "{input:?}");
        assert_eq!(summary_count(&err, "frames written"), frames as u64);
    }
}

/// Issue 14, step 1: zeek's GENEVE trace (no Amazon options, VNI 4242
/// inside) replays into one session of its inner source; with 6081 out of
/// `geneve_ports` it is skipped as another port.
#[test]
fn zeek_geneve_trace_replays_into_a_session() {
    let input = testdata("geneve/zeek-geneve-vxlan-dns-truncated.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, None, &input);
    assert_eq!(code, 0, "{err}");
    let want = without_endpoint(tshark_geneve(&input));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        [&(4242, "127.0.0.1".into())]
    );
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 2);
    assert_eq!(output_by_session(&out), want);

    let off = tmp.path().join("off");
    let (code, err) = replay(&off, Some("geneve_ports = []\n"), &input);
    assert_eq!(code, 0, "{err}");
    assert!(output_files(&off).is_empty());
    assert_eq!(summary_count(&err, "skipped not_vxlan_port"), 2, "{err}");
}

/// A good GWLB datagram (VNI 9, inner source 10.0.1.23, endpoint 7) and
/// the hostile ones of the issue, each with the reason it must be counted
/// under.
fn hostile_cases() -> (Vec<u8>, Vec<(Vec<u8>, &'static str)>) {
    let frame = inner_frame(1, 100);
    let vx = datagram(9, &frame);
    // Inner IPv4 10.0.1.23 -> 10.0.2.9 / UDP -> `port` / `payload`.
    let inner = |port: u16, payload: &[u8]| -> Vec<u8> {
        let total = (28 + payload.len()) as u16;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&[10, 0, 1, 23, 10, 0, 2, 9]);
        let ulen = (8 + payload.len()) as u16;
        ip.extend_from_slice(&[0x9c, 0x40, (port >> 8) as u8, port as u8]);
        ip.extend_from_slice(&[(ulen >> 8) as u8, ulen as u8, 0, 0]);
        ip.extend_from_slice(payload);
        ip
    };
    let good = geneve(&aws_options(7), 0x0800, &inner(4789, &vx));
    let mut cases: Vec<(Vec<u8>, &'static str)> = Vec::new();
    let mut v = good.clone();
    v[0] |= 0x40;
    cases.push((v, "geneve_version"));
    let mut o = good.clone();
    o[1] = 0x80;
    cases.push((o, "geneve_control"));
    let mut l = good.clone();
    l[0] = 0x3f;
    cases.push((l[..100].to_vec(), "geneve_truncated"));
    let mut ol = good.clone();
    ol[8 + 24 + 3] = 0x1f;
    cases.push((ol, "geneve_option_malformed"));
    let mut crit = aws_options(7);
    crit.extend_from_slice(&[0x01, 0x00, 0x85, 0x00]);
    cases.push((
        geneve(&crit, 0x0800, &inner(4789, &vx)),
        "geneve_critical_option",
    ));
    let mut eth = good.clone();
    eth[2..4].copy_from_slice(&[0x65, 0x58]);
    cases.push((eth, "geneve_protocol"));
    cases.push((good[..8 + 32 + 10].to_vec(), "geneve_inner_malformed"));
    let mut frag = good.clone();
    frag[8 + 32 + 6] = 0x20;
    cases.push((frag, "geneve_inner_fragment"));
    cases.push((
        geneve(&aws_options(7), 0x0800, &inner(53, &vx)),
        "geneve_not_vxlan",
    ));
    (good, cases)
}

/// Issue 14, step 1: hostile GENEVE, each packet counted under its own
/// reason, no crash, and the good packets between them written.
#[test]
fn hostile_geneve_is_counted_by_reason() {
    let gwlb: IpAddr = GWLB.parse().unwrap();
    let (good, cases) = hostile_cases();
    let mut recs = Vec::new();
    let mut ts = 1_700_000_000_000_000_000u64;
    for (bad, _) in &cases {
        for p in [&good, bad] {
            let pkt = outer_packet(gwlb, 6081, p, p.len());
            let len = pkt.len() as u32;
            recs.push((ts, pkt, len));
            ts += 1000;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("hostile.pcap");
    write_pcap(&input, 1, &recs);
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, None, &input);
    assert_eq!(code, 0, "{err}");
    for (_, reason) in &cases {
        assert_eq!(
            summary_count(&err, &format!("{reason} (stage geneve)")),
            1,
            "{reason}: {err}"
        );
    }
    let got = output_by_key(&out);
    let key = (
        9,
        "10.0.1.23".to_string(),
        "vpce-00000000000000007".to_string(),
    );
    assert_eq!(got.keys().collect::<Vec<_>>(), [&key]);
    assert_eq!(got[&key].len(), cases.len());
    assert_eq!(summary_count(&err, "frames written"), cases.len() as u64);
}

/// The AWS mirror fixture wrapped in GENEVE through two endpoints,
/// `vpce-…aa` (every third datagram) and `vpce-…bb`, carrying the same
/// source and VNI: the temporary directory, the direct input, the wrapped
/// capture.
fn two_endpoint_capture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let wrapped = tmp.path().join("two.pcap");
    let (a, b) = (0x0e11_0000_0000_00aa_u64, 0x0e22_0000_0000_00bb_u64);
    wrap_in_geneve(&input, &wrapped, |i| {
        aws_options(if i % 3 == 0 { a } else { b })
    });
    (tmp, input, wrapped)
}

/// Issue 14, step 2: two Gateway Load Balancer endpoints carrying the same
/// mirrored ENI and VNI (overlapping VPCs) are two sessions in two
/// directories, each with its own frames as tshark shows them; the
/// summary names each endpoint, pcapng names it in the interface
/// description; the same traffic direct stays one session in today's
/// `DIR/<vni>/<source>/`.
#[test]
fn two_endpoints_same_source_and_vni_are_two_sessions() {
    let (tmp, input, wrapped) = two_endpoint_capture();
    let want = tshark_geneve(&wrapped);
    let (ea, eb) = ("vpce-00e110000000000aa", "vpce-00e220000000000bb");
    let keys: Vec<_> = want.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            (5569041, "172.31.0.238".to_string(), ea.to_string()),
            (5569041, "172.31.0.238".to_string(), eb.to_string()),
        ]
    );
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, None, &wrapped);
    assert_eq!(code, 0, "{err}");
    assert_eq!(output_by_key(&out), want);
    for (e, n) in [(ea, want[&keys[0]].len()), (eb, want[&keys[1]].len())] {
        assert!(out.join(e).join("5569041").join("172.31.0.238").is_dir());
        let line = format!("vni 5569041 source 172.31.0.238 endpoint {e}: {n} packets");
        assert!(err.contains(&line), "no `{line}` in {err}");
    }
    assert_eq!(summary_count(&err, "sessions,"), 2, "{err}");
    // Each session's log line names its endpoint.
    let logged = std::process::Command::new(bin())
        .args(["replay", "--dir"])
        .arg(tmp.path().join("logged"))
        .arg(&wrapped)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&logged.stderr);
    for e in [ea, eb] {
        let line = format!("new mirror session vni=5569041 source=172.31.0.238 endpoint={e}");
        assert!(log.contains(&line), "no `{line}` in {log}");
    }

    let ng = tmp.path().join("ng");
    let (code, err) = replay(&ng, Some("[output]\nformat = \"pcapng\"\n"), &wrapped);
    assert_eq!(code, 0, "{err}");
    for f in output_files(&ng) {
        let e = f
            .strip_prefix(&ng)
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let d = tshark(&[
            "-r",
            f.to_str().unwrap(),
            "-c",
            "1",
            "-T",
            "fields",
            "-e",
            "frame.interface_description",
        ]);
        assert!(
            d.contains(&format!("VNI 5569041 from 172.31.0.238 through {e}")),
            "{f:?}: {d}"
        );
    }

    let direct = tmp.path().join("direct");
    let (code, err) = replay(&direct, None, &input);
    assert_eq!(code, 0, "{err}");
    let d = output_by_key(&direct);
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        [&(5569041, "172.31.0.238".to_string(), String::new())]
    );
    assert!(!err.contains(" endpoint "), "{err}");
}

/// Issue 14, step 2: a `[[session]]` entry naming an endpoint applies to
/// that endpoint's session only: its filter (keeping nothing here) drops
/// the frames of `vpce-…aa`, while the same source and VNI through
/// `vpce-…bb` is written whole.
#[test]
fn session_entry_names_an_endpoint() {
    let (tmp, _, wrapped) = two_endpoint_capture();
    let want = tshark_geneve(&wrapped);
    let kb = (
        5569041,
        "172.31.0.238".to_string(),
        "vpce-00e220000000000bb".to_string(),
    );
    let config = "[[session]]\nvni = 5569041\nsource = \"172.31.0.238\"\nendpoint = \"vpce-00e110000000000aa\"\n[session.filter]\nbpf = \"ether proto 0x1234\"\n";
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, Some(config), &wrapped);
    assert_eq!(code, 0, "{err}");
    let got = output_by_key(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&kb], "{err}");
    assert_eq!(got[&kb], want[&kb]);
    assert!(!out.join("vpce-00e110000000000aa").exists());

    let (code, err) = replay(
        &tmp.path().join("bad"),
        Some("[[session]]\nvni = 1\nendpoint = \"vpc-12\"\n"),
        &wrapped,
    );
    assert_ne!(code, 0);
    assert!(err.contains(":3: `session.endpoint`: \"vpc-12\""), "{err}");
    assert!(err.contains("\"vpce-\" and 1 to 17 hex digits"), "{err}");
}

/// Every record of `input` for which `keep(i)` holds (its index), written
/// to `out` as they were (timestamps, lengths).
fn select_records(input: &Path, out: &Path, keep: impl Fn(usize) -> bool) {
    let f = std::fs::File::open(input).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "x").unwrap();
    let mut recs = Vec::new();
    let mut i = 0;
    while let Some(rec) = r.next_record().unwrap() {
        if keep(i) {
            recs.push((rec.ts_ns, rec.data.to_vec(), rec.orig_len));
        }
        i += 1;
    }
    write_pcap(out, 1, &recs);
}

/// The mirrored ENI of the AWS capture.
const ENI: &str = "172.31.0.238";

/// Flow records of a replay: the text records (with the header's names)
/// and the JSON Lines objects.
type Flows = (Vec<BTreeMap<String, String>>, Vec<serde_json::Value>);

fn flows_of(dir: &Path) -> Flows {
    (flow_records(dir).1, flow_json(dir))
}

const FLOW_FORMAT: &str = "${version} ${account-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${tcp-flags} ${type} ${flow-direction}";

/// Issue 14 item 4: AWS filter rules (both directions), a `bpf`
/// expression and flow records act on a GENEVE session exactly as on the
/// same traffic sent direct: direction from the mirrored ENI's address
/// (the inner source, not the GWLB node), the same frames written (those
/// tshark selects with the same rules), and the same flow records, apart
/// from the endpoint: the GENEVE session's directory, and an `endpoint`
/// key in each of its JSON records (the AWS text format has no such
/// field, so the text records are the same). The real AWS capture (IPv4),
/// and an IPv6 fixture mirrored from an IPv6 ENI (protocol type 0x86DD).
#[test]
fn gwlb_sessions_filter_and_flow_like_direct_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let any = "source_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"0.0.0.0/0\"";
    let any6 = "source_cidr_block = \"::/0\"\ndestination_cidr_block = \"::/0\"";
    let flows = format!(
        "[flows]\nenabled = true\ninterval = \"1s\"\njson = true\nformat = \"{FLOW_FORMAT}\"\n"
    );
    // Ingress: TCP from source ports 37180-37184; egress: UDP into the VPC
    // (DNS), TCP to 18.196/16 (so 37186 is kept one way only); then the
    // bpf drops port 37182 both ways; NTP matches no rule.
    let aws = (
        testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap"),
        format!(
            "[filter]\nbpf = \"not tcp port 37182\"\n\
             [[filter.ingress]]\nrule_number = 100\nrule_action = \"accept\"\nprotocol = \"tcp\"\n{any}\nsource_port_range = {{ from_port = 37180, to_port = 37184 }}\n\
             [[filter.egress]]\nrule_number = 10\nrule_action = \"accept\"\nprotocol = \"udp\"\nsource_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"172.31.0.0/16\"\n\
             [[filter.egress]]\nrule_number = 20\nrule_action = \"accept\"\nprotocol = 6\nsource_cidr_block = \"0.0.0.0/0\"\ndestination_cidr_block = \"18.196.0.0/16\"\n"
        ),
        format!(
            "((ip.dst#2 == {ENI} && tcp.srcport >= 37180 && tcp.srcport <= 37184) || \
             (ip.src#2 == {ENI} && ip.dst#2 != {ENI} && ((ip.proto#2 == 17 && ip.dst#2 == 172.31.0.0/16) || (ip.proto#2 == 6 && ip.dst#2 == 18.196.0.0/16)))) \
             && !(tcp.port == 37182)"
        ),
    );
    // IPv6: the ENI 2001:6f8:102d:0:2d0:9ff:fee3:e8de; ingress TCP only,
    // egress anything; traffic of neither direction (mDNS, ICMPv6 of
    // other hosts) is kept when either list accepts; the bpf drops ICMPv6.
    let eni6 = "2001:6f8:102d:0:2d0:9ff:fee3:e8de";
    let v6 = tmp.path().join("v6-vxlan.pcap");
    wrap_ethernet_capture(
        &testdata("ethernet/arkime-v6-http.pcap"),
        &v6,
        77,
        eni6.parse().unwrap(),
    );
    let ipv6 = (
        v6,
        format!(
            "[filter]\nbpf = \"not icmp6\"\n\
             [[filter.ingress]]\nrule_number = 1\nrule_action = \"accept\"\nprotocol = \"tcp\"\n{any6}\n\
             [[filter.egress]]\nrule_number = 1\nrule_action = \"accept\"\n{any6}\n"
        ),
        // libpcap's `icmp6` looks at the IPv6 next header only: ICMPv6
        // behind a hop-by-hop header (MLD) is not `icmp6` to tcpdump.
        "!(icmpv6 && !ipv6.hopopts)".to_string(),
    );
    for (n, (input, filter, expr)) in [aws, ipv6].into_iter().enumerate() {
        let config = format!("{filter}{flows}");
        let wrapped = tmp.path().join(format!("gwlb-{n}.pcap"));
        wrap_in_geneve(&input, &wrapped, |_| aws_options(0x0123_4567_89ab_cdef));
        let endpoint = "vpce-00123456789abcdef";
        let want = tshark_vxlan_filtered(&input, 4789, &expr);
        let kept: usize = want.values().map(Vec::len).sum();
        assert!(kept >= 10, "{expr} keeps {kept}");
        assert!(
            kept < tshark_vxlan(&input, 4789)
                .values()
                .map(Vec::len)
                .sum::<usize>()
        );

        let direct = tmp.path().join(format!("direct-{n}"));
        let (code, err) = replay(&direct, Some(&config), &input);
        assert_eq!(code, 0, "{err}");
        let gwlb = tmp.path().join(format!("gwlb-{n}"));
        let (code, gerr) = replay(&gwlb, Some(&config), &wrapped);
        assert_eq!(code, 0, "{gerr}");

        // The frames: those tshark selects, in `DIR/<vni>/<source>/`
        // direct and `DIR/<endpoint>/<vni>/<source>/` through the GWLB.
        let frames = output_by_key(&direct);
        assert_eq!(without_endpoint(frames.clone()), want, "{input:?}");
        let mut through: BTreeMap<_, _> = BTreeMap::new();
        for ((vni, src, e), rows) in output_by_key(&gwlb) {
            assert_eq!(e, endpoint);
            through.insert((vni, src, String::new()), rows);
        }
        assert_eq!(through, frames, "{input:?}");
        // The summary's counts of what each stage kept or skipped.
        let counts = |err: &str| -> Vec<String> {
            err.lines()
                .filter(|l| {
                    ["skipped", "written", "kept by", "by filter"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .map(|l| l.trim().to_string())
                .collect()
        };
        assert_eq!(counts(&gerr), counts(&err), "{input:?}");
        assert!(summary_count(&gerr, "skipped bpf") > 0, "{gerr}");

        // The flow records: the text ones alike; each JSON record of the
        // GENEVE session has the endpoint, the direct ones none.
        let (text, json) = flows_of(&direct);
        let (gtext, gjson) = flows_of(&gwlb);
        for d in ["ingress", "egress"] {
            assert!(
                text.iter().any(|r| r["flow-direction"] == d),
                "{d}: {text:?}"
            );
        }
        let packets: u64 = text
            .iter()
            .filter_map(|r| r["packets"].parse::<u64>().ok())
            .sum();
        assert_eq!(packets, kept as u64, "{input:?}");
        assert_eq!(gtext, text, "{input:?}");
        assert_eq!(gjson.len(), json.len());
        for (g, d) in gjson.iter().zip(&json) {
            assert_eq!(d.get("endpoint"), None, "{d}");
            let mut g = g.clone();
            let e = g.as_object_mut().unwrap().remove("endpoint");
            assert_eq!(e, Some(endpoint.into()), "{g}");
            assert_eq!(&g, d);
        }
    }
}

/// Issue 14 items 3 and 4: two Gateway Load Balancer endpoints carrying
/// the same mirrored ENI, VNI and 5-tuples give two sets of flow records,
/// never merged into one flow: each set is what the same endpoint's share
/// of the traffic gives sent direct, each record names its endpoint
/// (`${endpoint}` in the text format, `endpoint` in JSON), and each
/// endpoint's `[[flows.session]]` entry gives its metadata.
/// `mirrorcap flows` reads the field back from the files, and computes
/// the same from the capture itself.
#[test]
fn two_endpoints_same_flows_give_two_sets_of_records() {
    let (tmp, input, wrapped) = two_endpoint_capture();
    let (ea, eb) = ("vpce-00e110000000000aa", "vpce-00e220000000000bb");
    let format = format!("{FLOW_FORMAT} ${{endpoint}}");
    let config = format!(
        "[flows]\nenabled = true\ninterval = \"1s\"\njson = true\nformat = \"{format}\"\n\
         [[flows.session]]\nendpoint = \"{ea}\"\naccount_id = \"111111111111\"\n\
         [[flows.session]]\nvni = 5569041\nendpoint = \"vpce-e220000000000bb\"\naccount_id = \"222222222222\"\n"
    );
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, Some(&config), &wrapped);
    assert_eq!(code, 0, "{err}");
    let (text, json) = flows_of(&out);
    assert_eq!(text.len(), json.len());
    for (t, j) in text.iter().zip(&json) {
        assert_eq!(j["endpoint"], t["endpoint"].as_str(), "{j} {t:?}");
    }

    // Direct, each endpoint's share alone: the OK records (NODATA ones
    // follow the windows the other endpoint's packets closed).
    let tuple = |r: &BTreeMap<String, String>| {
        ["protocol", "srcaddr", "srcport", "dstaddr", "dstport"].map(|k| r[k].clone())
    };
    let mut tuples = Vec::new();
    for (e, account, share) in [(ea, "111111111111", 0), (eb, "222222222222", 1)] {
        let part = tmp.path().join(format!("share-{share}.pcap"));
        select_records(&input, &part, |i| (i % 3 == 0) == (share == 0));
        let d = tmp.path().join(format!("direct-{share}"));
        let (code, err) = replay(&d, Some(&config), &part);
        assert_eq!(code, 0, "{err}");
        let ok = |recs: &[BTreeMap<String, String>]| -> Vec<BTreeMap<String, String>> {
            recs.iter()
                .filter(|r| r["log-status"] == "OK")
                .cloned()
                .collect()
        };
        let want: Vec<_> = ok(&flow_records(&d).1)
            .into_iter()
            .map(|mut r| {
                assert_eq!(r["endpoint"], "-");
                assert_eq!(r["account-id"], "-");
                r.insert("endpoint".into(), e.into());
                r.insert("account-id".into(), account.into());
                r
            })
            .collect();
        let got: Vec<_> = text
            .iter()
            .filter(|r| r["endpoint"] == e)
            .cloned()
            .collect();
        assert!(got.iter().all(|r| r["account-id"] == account), "{got:?}");
        assert_eq!(ok(&got), want, "{e}");
        tuples.push(
            want.iter()
                .map(tuple)
                .collect::<std::collections::BTreeSet<_>>(),
        );
    }
    assert!(
        text.iter()
            .all(|r| r["endpoint"] == ea || r["endpoint"] == eb)
    );
    // The same 5-tuples went through both endpoints: kept apart.
    assert!(
        tuples[0].intersection(&tuples[1]).count() >= 5,
        "{tuples:?}"
    );

    // `mirrorcap flows` reads the endpoint back from the flow files, and
    // computes the same sums from the GENEVE capture.
    let logs: Vec<String> = output_files(&out.join("flows"))
        .into_iter()
        .filter(|f| f.to_str().unwrap().ends_with(".log"))
        .map(|f| f.to_str().unwrap().to_string())
        .collect();
    let report = |inputs: &[&str]| {
        let mut args = vec!["flows", "--by", "endpoint", "--format", "json"];
        args.extend_from_slice(inputs);
        let (code, stdout, stderr) = mirrorcap(&args);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for g in v.as_array().unwrap() {
            m.insert(
                g["endpoint"].as_str().unwrap().into(),
                g["packets"].as_u64().unwrap(),
            );
        }
        m
    };
    let from_files = report(&logs.iter().map(String::as_str).collect::<Vec<_>>());
    let frames = tshark_geneve(&wrapped);
    let by_endpoint: BTreeMap<String, u64> = frames
        .iter()
        .map(|((_, _, e), rows)| (e.clone(), rows.len() as u64))
        .collect();
    assert_eq!(from_files, by_endpoint);
    assert_eq!(report(&[wrapped.to_str().unwrap()]), by_endpoint);
}

/// Issue 14 item 3: a `[[flows.session]]` endpoint that is not a `vpce-`
/// ID is refused with the file, line, key and what is accepted.
#[test]
fn flows_session_bad_endpoint_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let (code, err) = replay(
        &tmp.path().join("bad"),
        Some("[flows]\nenabled = true\n[[flows.session]]\nendpoint = \"vpce-xyz\"\n"),
        &input,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(".toml:4: `flows.session.endpoint`: \"vpce-xyz\""),
        "{err}"
    );
    assert!(err.contains("\"vpce-\" and 1 to 17 hex digits"), "{err}");
}

/// The outer UDP payloads of a capture's records (GENEVE or VXLAN
/// datagrams), in order.
fn udp_payloads(capture: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(capture).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "x").unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        let u = mirrorcap::ingest::replay::strip_outer(rec.linktype, rec.data).unwrap();
        assert_eq!(u.payload.len(), u.payload_len, "{capture:?}: a cut record");
        out.push(u.payload.to_vec());
    }
    out
}

/// Rows without their time (a live daemon stamps its own receive time).
fn untimed<K: Ord>(m: BTreeMap<K, Vec<FrameRow>>) -> BTreeMap<K, Vec<(u64, u64, String)>> {
    m.into_iter()
        .map(|(k, rows)| (k, rows.into_iter().map(|r| (r.1, r.2, r.3)).collect()))
        .collect()
}

/// Issue 14, step 3: the same GWLB traffic sent live over loopback to
/// `geneve_listen`, with two workers and from eight outer source ports (a
/// GWLB node varies the port per inner flow, which the kernel's default
/// hash would spread over both workers): every frame once, in order, in
/// one file per session in the right `<endpoint>/<vni>/<source>` tree;
/// the two endpoints carrying the same source and VNI are two sessions,
/// and an IPv6 mirrored ENI (protocol type 0x86DD) steers and keys as well.
/// The VXLAN socket of `listen` keeps taking direct traffic beside it.
#[test]
fn live_geneve_listen_writes_every_frame_once_in_order() {
    let (tmp, direct_input, two) = two_endpoint_capture();
    let v6_vxlan = tmp.path().join("v6-vxlan.pcap");
    wrap_ethernet_capture(
        &testdata("ethernet/arkime-v6-http.pcap"),
        &v6_vxlan,
        77,
        "2001:db8::b".parse().unwrap(),
    );
    let v6 = tmp.path().join("v6-gwlb.pcap");
    wrap_in_geneve(&v6_vxlan, &v6, |_| aws_options(0x0e33_0000_0000_00cc));
    let mut want = tshark_geneve(&two);
    want.extend(tshark_geneve(&v6));
    assert_eq!(want.len(), 3, "{:?}", want.keys());

    let (d, out, gaddr) = gwlb_daemon(tmp.path());
    let senders: Vec<_> = (0..8)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent = 0;
    for (i, p) in udp_payloads(&two)
        .iter()
        .chain(&udp_payloads(&v6))
        .enumerate()
    {
        senders[i % senders.len()].send_to(p, gaddr).unwrap();
        sent += 1;
        if i % 50 == 49 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    // Direct traffic to `listen` at the same time: its own session.
    let direct = udp_payloads(&direct_input);
    for p in &direct {
        senders[0].send_to(p, d.addr).unwrap();
    }
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary_count(&err, "frames written"),
        (sent + direct.len()) as u64,
        "{err}"
    );
    let mut got = output_by_key(&out);
    let direct_rows = got
        .remove(&(5569041, "127.0.0.1".into(), String::new()))
        .expect("the direct session");
    assert_eq!(direct_rows.len(), direct.len());
    assert_eq!(untimed(got), untimed(want));
    for f in output_files(&out) {
        let siblings = std::fs::read_dir(f.parent().unwrap()).unwrap().count();
        assert_eq!(siblings, 1, "{f:?}: a session split over workers");
    }
}

/// Issue 14, hostile GENEVE, live: the same datagrams sent to
/// `geneve_listen` (two workers, so the steering program meets them too),
/// then the good datagram cut at every byte of its headers (GENEVE 8,
/// options 32, inner IPv4 20, UDP 8, VXLAN 8): each bad one counted under
/// its reason, every cut one under a `geneve_*` reason or `vxlan_*` (a
/// VXLAN header cut short), the good ones written, the daemon still up.
#[test]
fn hostile_geneve_live_is_counted_by_reason() {
    let (good, cases) = hostile_cases();
    let tmp = tempfile::tempdir().unwrap();
    let (d, out, gaddr) = gwlb_daemon(tmp.path());
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (bad, _) in &cases {
        tx.send_to(&good, gaddr).unwrap();
        tx.send_to(bad, gaddr).unwrap();
    }
    let headers = 8 + 32 + 20 + 8 + 8;
    for cut in 0..headers {
        tx.send_to(&good[..cut], gaddr).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    for (_, reason) in &cases {
        let n = summary_count(&err, &format!("{reason} (stage geneve)"));
        let cut_too = ["geneve_truncated", "geneve_inner_malformed"].contains(reason);
        assert!(n == 1 || (cut_too && n > 1), "{reason}: {n}: {err}");
    }
    assert_eq!(summary_count(&err, "frames written"), cases.len() as u64);
    let got = output_by_key(&out);
    let key = (9, "10.0.1.23".into(), "vpce-00000000000000007".into());
    assert_eq!(got.keys().collect::<Vec<_>>(), [&key]);
    assert_eq!(got[&key].len(), cases.len());
    let sent = (2 * cases.len() + headers) as u64;
    assert_eq!(summary_count(&err, "datagrams received"), sent, "{err}");
    assert_eq!(
        summary_count(&err, "datagrams dropped or skipped by mirrorcap"),
        (cases.len() + headers) as u64,
        "{err}"
    );
}

/// A daemon with two workers and `geneve_listen` on a free loopback port,
/// writing to `TMP/out`: the daemon, its output directory, and the GENEVE
/// address it logged.
fn gwlb_daemon(tmp: &Path) -> (Daemon, PathBuf, std::net::SocketAddr) {
    gwlb_daemon_with(tmp, "workers = 2\n")
}

/// [`gwlb_daemon`] with `config` (a config without `geneve_listen`).
fn gwlb_daemon_with(tmp: &Path, config: &str) -> (Daemon, PathBuf, std::net::SocketAddr) {
    let out = tmp.join("out");
    let d = Daemon::start_with_config(
        &out,
        &tmp.join("c.toml"),
        &format!("geneve_listen = \"127.0.0.1:0\"\n{config}"),
    );
    let line = d.stderr_now();
    let gaddr = line
        .split("GENEVE on ")
        .nth(1)
        .and_then(|t| t.split([',', ' ']).next())
        .unwrap_or_else(|| panic!("no `GENEVE on` in {line}"))
        .parse()
        .unwrap();
    (d, out, gaddr)
}

/// Inner IPv4 `src` -> 172.31.17.188 / UDP -> 4789 / `vxlan` (the VXLAN
/// datagram), as a GENEVE packet of protocol type 0x0800 carries it.
fn inner_v4(src: &str, vxlan: &[u8]) -> Vec<u8> {
    outer_packet(src.parse().unwrap(), 4789, vxlan, vxlan.len())[14..].to_vec()
}

/// Hostile review of issue 14 (steering): the steering programs hashed the
/// whole VXLAN word 4..8, VNI *and* reserved byte, while the session key
/// has the VNI only (reserved bits are ignored, RFC 7348): one session
/// whose reserved byte varies was split over the workers, two file sets
/// in one session directory, on `listen` and on `geneve_listen` alike.
#[test]
fn steering_ignores_the_vxlan_reserved_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, out, gaddr) = gwlb_daemon(tmp.path());
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..16u8 {
        let mut vx = datagram(9, &inner_frame(u64::from(i), 100));
        vx[7] = i;
        tx.send_to(&vx, d.addr).unwrap();
        let g = geneve(&aws_options(7), 0x0800, &inner_v4("10.0.1.23", &vx));
        tx.send_to(&g, gaddr).unwrap();
    }
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_count(&err, "frames written"), 32, "{err}");
    let got = output_by_key(&out);
    assert_eq!(got.len(), 2, "{:?}", got.keys());
    assert!(got.values().all(|rows| rows.len() == 16));
    for f in output_files(&out) {
        let siblings = std::fs::read_dir(f.parent().unwrap()).unwrap().count();
        assert_eq!(siblings, 1, "{f:?}: a session split over workers: {err}");
    }
}

/// Hostile review of issue 14 (steering): an inner IPv6 packet with an
/// extension header (hop-by-hop here) made the GENEVE steering program
/// read the VNI at a fixed offset, inside the UDP header (its length,
/// which varies with the frame), so one session went to every worker.
#[test]
fn steering_keeps_an_ipv6_session_with_extension_headers_on_one_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, out, gaddr) = gwlb_daemon_with(tmp.path(), "workers = 3\n");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..12u64 {
        let vx = datagram(9, &inner_frame(i, 100 + i as usize));
        // IPv6 2001:db8::17 / UDP -> 4789, then a hop-by-hop header (8
        // bytes: next 17, length 0, PadN) put between them.
        let mut ip =
            outer_packet("2001:db8::17".parse().unwrap(), 4789, &vx, vx.len())[14..].to_vec();
        let plen = u16::from_be_bytes([ip[4], ip[5]]) + 8;
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
        ip[6] = 0;
        ip.splice(40..40, [17, 0, 1, 4, 0, 0, 0, 0]);
        tx.send_to(&geneve(&aws_options(2), 0x86dd, &ip), gaddr)
            .unwrap();
    }
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_count(&err, "frames written"), 12, "{err}");
    let files = output_files(&out);
    assert_eq!(
        files.len(),
        1,
        "a session split over workers: {files:?}\n{err}"
    );
    assert!(files[0].starts_with(out.join("vpce-00000000000000002/9/2001_db8__17")));
}

/// Hostile review of issue 14 (trust): `allow_sources` is the outer
/// source's allow-list ("drops datagrams from any other outer source").
/// For GENEVE it was checked against the inner source, which whoever
/// reaches `geneve_listen` writes: a sender outside the list got in by
/// naming an allowed address inside, and a list naming the Gateway Load
/// Balancer nodes dropped all their traffic.
#[test]
fn allow_sources_applies_to_the_gwlb_node_not_the_inner_source() {
    let vx = datagram(9, &inner_frame(1, 100));
    let g = geneve(&aws_options(7), 0x0800, &inner_v4("10.0.1.23", &vx));
    for (allow, written) in [("10.0.0.0/8", 0), ("127.0.0.1", 5)] {
        let tmp = tempfile::tempdir().unwrap();
        let (d, _, gaddr) =
            gwlb_daemon_with(tmp.path(), &format!("allow_sources = [\"{allow}\"]\n"));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..5 {
            tx.send_to(&g, gaddr).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (code, _, err) = d.stop();
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            summary_count(&err, "frames written"),
            written,
            "{allow}: {err}"
        );
        if written == 0 {
            assert_eq!(
                summary_count(&err, "skipped source_not_allowed"),
                5,
                "{err}"
            );
        }
    }
}

/// Hostile review of issue 14 (config): `geneve_listen` on the IPv4-mapped
/// form of `listen`'s address (`[::ffff:127.0.0.1]` vs `127.0.0.1`, same
/// port) is the same socket address for IPv4 senders; with `workers` > 1
/// (SO_REUSEPORT) both groups bound, and every GENEVE datagram went to the
/// VXLAN group, written as frames of VNI 0 (32 bytes of GWLB options start
/// with a byte that reads as VXLAN's I flag). It must be refused like any
/// other overlap.
#[test]
fn geneve_listen_on_the_ipv4_mapped_form_of_listen_overlaps() {
    let tmp = tempfile::tempdir().unwrap();
    for (listen, geneve) in [
        ("127.0.0.1:16082", "[::ffff:127.0.0.1]:16082"),
        ("[::ffff:127.0.0.1]:16082", "127.0.0.1:16082"),
        ("[::ffff:0.0.0.0]:16082", "127.0.0.1:16082"),
    ] {
        let cfg = tmp.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("listen = \"{listen}\"\ngeneve_listen = \"{geneve}\"\nworkers = 2\n"),
        )
        .unwrap();
        let (code, _, err) = mirrorcap(&["check-config", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{listen} {geneve}: {err}");
        assert!(err.contains("overlaps `listen`"), "{err}");
    }
}

/// Hostile review of issue 14 (templates): `{endpoint}` is empty for
/// direct traffic, so a component such as `..{endpoint}` or `.{endpoint}`
/// passed the template check but became `..` or `.` for every direct
/// session: `check-config` said ok and the daemon then lost all direct
/// traffic as `write_error` ("only plain names are allowed"). Refused when
/// the config is read, naming the template.
#[test]
fn template_endpoint_cannot_leave_a_dot_component() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |t: &str| {
        let cfg = tmp.path().join("c.toml");
        std::fs::write(&cfg, format!("[output]\ntemplate = \"{t}\"\n")).unwrap();
        let (code, _, err) = mirrorcap(&["check-config", cfg.to_str().unwrap()]);
        (code, err)
    };
    for t in [
        "..{endpoint}/{vni}/{source}/{seq}.{ext}",
        "{vni}/.{endpoint}/{source}/{seq}.{ext}",
        "{vni}/{source}/{endpoint}./{seq}.{ext}",
        "{vni}/{source}/.{endpoint}./{seq}.{ext}",
    ] {
        let (code, err) = check(t);
        assert_eq!(code, 2, "{t}: {err}");
        assert!(
            err.contains("template") && err.contains("`..`"),
            "{t}: {err}"
        );
    }
    // An `{endpoint}` component alone, or beside other text, stays valid.
    for t in [
        "{endpoint}/{vni}/{source}/{seq}.{ext}",
        "x{endpoint}/{vni}/{source}/{seq}.{ext}",
        "{vni}/{source}/{endpoint}.{seq}.{ext}",
    ] {
        let (code, err) = check(t);
        assert_eq!(code, 0, "{t}: {err}");
    }
}

/// Hostile review of issue 14, item 8: `max_open_files` was divided among
/// every worker of both socket groups, so with only GENEVE traffic half of
/// it could never be used (8 files allowed, 4 ever open, the rest dropped
/// as `open_file_limit`). Each group now shares it among its own workers.
#[test]
fn geneve_only_traffic_can_use_every_file_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, out, gaddr) = gwlb_daemon_with(tmp.path(), "workers = 1\nmax_open_files = 8\n");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for round in 0..5u64 {
        for vni in 1..=8u32 {
            let vx = datagram(vni, &inner_frame(round * 8 + u64::from(vni), 100));
            let g = geneve(&aws_options(5), 0x0800, &inner_v4("10.0.1.23", &vx));
            tx.send_to(&g, gaddr).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_count(&err, "frames written"), 40, "{err}");
    assert_eq!(output_files(&out).len(), 8);
}

/// Hostile review of issue 14, items 10 and 11: `allow_sources` is checked
/// before any GENEVE decoding (a malformed datagram from a sender not on
/// the list is `source_not_allowed`, not a `geneve_*` reason), and the
/// bytes received are the GENEVE datagrams' as they came, written or not.
#[test]
fn geneve_allow_sources_first_and_bytes_as_received() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, _) = hostile_cases();
    let mut bad = good.clone();
    bad[0] |= 0x40; // version 1
    let (d, _, gaddr) = gwlb_daemon_with(tmp.path(), "allow_sources = [\"10.0.0.0/8\"]\n");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&good, gaddr).unwrap();
    tx.send_to(&bad, gaddr).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary_count(&err, "source_not_allowed (stage source)"),
        2,
        "{err}"
    );
    assert!(!err.contains("geneve_version"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let (d, _, gaddr) = gwlb_daemon_with(tmp.path(), "");
    for p in [&good, &good, &bad] {
        tx.send_to(p, gaddr).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    let want = format!("3 datagrams received ({} bytes)", 3 * good.len());
    assert!(err.contains(&want), "no `{want}` in {err}");
}
