//! Flow records, end to end: replays of the fixtures against tshark's
//! conversation statistics, the Logs Insights parse pattern, window edges
//! and NODATA, and the `mirrorcap flows` report.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::*;

const FORMAT: &str = "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${tcp-flags} ${type} ${flow-direction}";

type Tuple = (String, String, u16, String, u16); // protocol, src, sport, dst, dport

fn replay_flows(input: &Path, extra: &str) -> (tempfile::TempDir, PathBuf, String) {
    replay_to_dir(
        &format!("[flows]\nenabled = true\ninterval = \"1s\"\nformat = \"{FORMAT}\"\n{extra}"),
        input,
    )
}

/// tshark `-z conv,tcp` / `conv,udp`: frames per direction.
fn tshark_conv(file: &Path, proto: &str) -> BTreeMap<Tuple, u64> {
    let text = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-q",
        "-z",
        &format!("conv,{proto}"),
    ]);
    let num = if proto == "tcp" { "6" } else { "17" };
    let mut m = BTreeMap::new();
    for l in text.lines().filter(|l| l.contains("<->")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let split = |ep: &str| {
            let (a, p) = ep.rsplit_once(':').unwrap();
            (a.to_string(), p.parse::<u16>().unwrap())
        };
        let (a, ap) = split(w[0]);
        let (b, bp) = split(w[2]);
        // "<-" frames (B to A), then "->" frames (A to B).
        let b_to_a: u64 = w[3].parse().unwrap();
        let a_to_b: u64 = w[6].parse().unwrap();
        for (k, n) in [
            ((num.into(), a.clone(), ap, b.clone(), bp), a_to_b),
            ((num.into(), b, bp, a, ap), b_to_a),
        ] {
            if n > 0 {
                *m.entry(k).or_insert(0) += n;
            }
        }
    }
    m
}

/// IP bytes per 5-tuple from tshark's own fields (IPv4 total length; IPv6
/// 40 + payload length).
fn tshark_ip_bytes(file: &Path) -> BTreeMap<Tuple, u64> {
    let text = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-Y",
        "tcp || udp",
        "-T",
        "fields",
        "-E",
        "occurrence=f",
        "-e",
        "ip.proto",
        "-e",
        "ipv6.nxt",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "udp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "udp.dstport",
        "-e",
        "ip.len",
        "-e",
        "ipv6.plen",
    ]);
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        let pick = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        let proto = if c[6].is_empty() { "17" } else { "6" };
        let bytes: u64 = if !c[10].is_empty() {
            c[10].parse().unwrap()
        } else {
            40 + c[11].parse::<u64>().unwrap()
        };
        let k = (
            proto.to_string(),
            pick(c[2], c[3]),
            pick(c[6], c[7]).parse().unwrap(),
            pick(c[4], c[5]),
            pick(c[8], c[9]).parse().unwrap(),
        );
        *m.entry(k).or_insert(0) += bytes;
    }
    m
}

/// The fixtures of the tshark oracle: Ethernet captures, wrapped in VXLAN.
const ORACLE_FIXTURES: &[&str] = &[
    "zeek-wikipedia.pcap",
    "arkime-v6-http.pcap",
    "zeek-vlan-collisions.pcap",
    "zeek-get-to-ssh-server.pcap",
    "zeek-truncated-header.pcap",
    "zeek-cooper-grill-dvwa.pcapng",
];

/// Packets and IP bytes per TCP/UDP 5-tuple of the OK records.
fn tuple_sums(recs: &[BTreeMap<String, String>]) -> (BTreeMap<Tuple, u64>, BTreeMap<Tuple, u64>) {
    let mut packets: BTreeMap<Tuple, u64> = BTreeMap::new();
    let mut bytes: BTreeMap<Tuple, u64> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["log-status"] == "OK") {
        if r["protocol"] != "6" && r["protocol"] != "17" {
            continue;
        }
        let k = (
            r["protocol"].clone(),
            r["srcaddr"].clone(),
            r["srcport"].parse().unwrap(),
            r["dstaddr"].clone(),
            r["dstport"].parse().unwrap(),
        );
        *packets.entry(k.clone()).or_insert(0) += r["packets"].parse::<u64>().unwrap();
        *bytes.entry(k).or_insert(0) += r["bytes"].parse::<u64>().unwrap();
    }
    (packets, bytes)
}

/// The oracle: packets per TCP/UDP 5-tuple from tshark's `conv,tcp` and
/// `conv,udp`, and IP bytes per 5-tuple from tshark's fields.
fn tshark_tuple_sums(input: &Path) -> (BTreeMap<Tuple, u64>, BTreeMap<Tuple, u64>) {
    let mut want = tshark_conv(input, "tcp");
    want.extend(tshark_conv(input, "udp"));
    // tshark's conversation tap skips a TCP segment whose header the
    // capture cut (its dissector stops first); the flow log, like AWS,
    // counts the packet, whose ports were captured. Add those frames.
    let cut = tshark(&[
        "-r",
        input.to_str().unwrap(),
        "-Y",
        "!vlan && ip && tcp.hdr_len > frame.cap_len - 14 - ip.hdr_len",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
    ]);
    for l in cut.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        let k = (
            "6".to_string(),
            c[0].to_string(),
            c[1].parse().unwrap(),
            c[2].to_string(),
            c[3].parse().unwrap(),
        );
        *want.entry(k).or_insert(0) += 1;
    }
    (want, tshark_ip_bytes(input))
}

#[test]
fn flow_sums_match_tshark_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    for fixture in ORACLE_FIXTURES {
        let input = testdata(&format!("ethernet/{fixture}"));
        let wrapped = tmp.path().join(format!("{fixture}.wrapped.pcap"));
        wrap_ethernet_capture(&input, &wrapped, 9, "10.99.0.1".parse().unwrap());
        let (_t, dir, _) = replay_flows(&wrapped, "");
        let (_, recs) = flow_records(&dir);
        let (packets, bytes) = tuple_sums(&recs);
        assert_tshark_sums(fixture, &input, &packets, &bytes);
    }
}

/// Packets and bytes per 5-tuple are tshark's ([`tshark_tuple_sums`]).
fn assert_tshark_sums(
    fixture: &str,
    input: &Path,
    packets: &BTreeMap<Tuple, u64>,
    bytes: &BTreeMap<Tuple, u64>,
) {
    let (want, want_bytes) = tshark_tuple_sums(input);
    assert!(!want.is_empty(), "{fixture}");
    assert_eq!(packets, &want, "{fixture}: packets per 5-tuple");
    assert_eq!(bytes, &want_bytes, "{fixture}: bytes per 5-tuple");
}

/// The AWS capture: per-record fields parse back, metadata and direction
/// are right, and the Logs Insights pattern `parse @message "* * ..."` (one
/// `*` per field) yields the same columns.
#[test]
fn records_parse_back_and_with_logs_insights_pattern() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let (_t, dir, err) = replay_flows(
        &input,
        "json = true\n[[flows.session]]\nvni = 5569041\ninterface_id = \"eni-0123456789abcdef0\"\n",
    );
    assert!(err.contains("flow records written"), "{err}");
    let (header, recs) = flow_records(&dir);
    assert_eq!(header.len(), 16);
    let ok: Vec<_> = recs.iter().filter(|r| r["log-status"] == "OK").collect();
    assert_eq!(
        ok.iter()
            .map(|r| r["packets"].parse::<u64>().unwrap())
            .sum::<u64>(),
        100
    );
    for r in &ok {
        assert_eq!(r["version"], "5");
        assert_eq!(r["interface-id"], "eni-0123456789abcdef0");
        assert_eq!(r["action"], "ACCEPT");
        assert_eq!(r["type"], "IPv4");
        let dir = if r["dstaddr"] == "172.31.0.238" {
            "ingress"
        } else {
            "egress"
        };
        assert_eq!(r["flow-direction"], dir, "{r:?}");
        assert!(r["start"] <= r["end"]);
    }
    // SYN|ACK|FIN|PSH of an SSH session: AWS's tcp-flags values OR'ed.
    assert!(
        ok.iter()
            .any(|r| r["protocol"] == "6" && r["tcp-flags"].parse::<u8>().unwrap() & 0x02 != 0)
    );

    // Logs Insights: parse @message "* * * ..." with one * per field.
    let pattern = vec!["*"; header.len()].join(" ");
    let text = std::fs::read_to_string(
        output_files(&dir.join("flows"))
            .into_iter()
            .find(|f| f.to_str().unwrap().ends_with(".log"))
            .unwrap(),
    )
    .unwrap();
    for (line, r) in text.lines().skip(1).zip(&recs) {
        let cols = insights_parse(&pattern, line).expect("pattern matches");
        let want: Vec<&String> = header.iter().map(|h| &r[h]).collect();
        assert_eq!(cols.iter().collect::<Vec<_>>(), want);
    }
    // JSON Lines beside it.
    let json = output_files(&dir.join("flows"))
        .into_iter()
        .find(|f| f.to_str().unwrap().ends_with(".jsonl"))
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(json)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["interface-id"], "eni-0123456789abcdef0");
    assert!(first["packets"].is_u64());
}

/// CloudWatch Logs Insights `parse` with a glob: literal text between `*`s
/// must match in order; each `*` captures the shortest run up to the next
/// literal (the last one, the rest of the line).
fn insights_parse(pattern: &str, line: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = line.strip_prefix(parts[0])?;
    let mut cols = Vec::new();
    for (i, lit) in parts[1..].iter().enumerate() {
        if i == parts.len() - 2 && lit.is_empty() {
            cols.push(rest.to_string());
            rest = "";
        } else {
            let at = rest.find(lit)?;
            cols.push(rest[..at].to_string());
            rest = &rest[at + lit.len()..];
        }
    }
    rest.is_empty().then_some(cols)
}

/// A flow spanning three 1 s windows gives three records whose sums are the
/// total; a session silent in a window gets NODATA for it.
#[test]
fn window_edges_and_nodata() {
    let tmp = tempfile::tempdir().unwrap();
    let base = 1_764_000_000u64 * 1_000_000_000;
    let a: IpAddr = "172.31.0.10".parse().unwrap();
    let b: IpAddr = "172.31.0.20".parse().unwrap();
    let mut recs = Vec::new();
    let mut push = |src: IpAddr, vni: u32, t_ms: u64, seq: u64, len: usize| {
        let p = datagram(vni, &inner_frame(seq, len));
        let pkt = outer_packet(src, 4789, &p, p.len());
        let n = pkt.len() as u32;
        recs.push((base + t_ms * 1_000_000, pkt, n));
    };
    push(b, 2, 200, 0, 100);
    push(a, 1, 500, 1, 100);
    push(a, 1, 1500, 2, 200);
    push(a, 1, 2500, 3, 300);
    push(b, 2, 2700, 4, 100);
    let cap = tmp.path().join("w.pcap");
    write_pcap(&cap, 1, &recs);
    let (_t, dir, _) = replay_flows(&cap, "");
    let (_, recs) = flow_records(&dir);
    let ok: Vec<_> = recs.iter().filter(|r| r["log-status"] == "OK").collect();
    // Session A's flow (10.0.0.1:40000 -> 10.0.0.2:53) in three windows.
    assert_eq!(ok.len(), 5, "{recs:?}");
    let a_packets: u64 = ok
        .iter()
        .filter(|r| r["bytes"] != "86")
        .map(|r| r["packets"].parse::<u64>().unwrap())
        .sum();
    let total_bytes: u64 = ok.iter().map(|r| r["bytes"].parse::<u64>().unwrap()).sum();
    assert_eq!(a_packets, 2, "{ok:?}");
    assert_eq!(total_bytes, 86 + 86 + 186 + 286 + 86);
    let starts: Vec<u64> = ok.iter().map(|r| r["start"].parse().unwrap()).collect();
    assert_eq!(
        starts,
        vec![
            1_764_000_000,
            1_764_000_000,
            1_764_000_001,
            1_764_000_002,
            1_764_000_002
        ]
    );
    // Session B was silent in window [1, 2): one NODATA record for it.
    let nodata: Vec<_> = recs
        .iter()
        .filter(|r| r["log-status"] == "NODATA")
        .collect();
    assert_eq!(nodata.len(), 1, "{recs:?}");
    assert_eq!(nodata[0]["start"], "1764000001");
    assert_eq!(nodata[0]["end"], "1764000002");
    assert_eq!(nodata[0]["packets"], "-");
}

/// `mirrorcap flows` on the flow files and directly on the capture agree.
#[test]
fn flows_report_top_talkers() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let (_t, dir, _) = replay_flows(&input, "");
    let files: Vec<String> = output_files(&dir.join("flows"))
        .into_iter()
        .map(|f| f.to_str().unwrap().to_string())
        .collect();
    let mut args = vec![
        "flows",
        "--by",
        "srcaddr,dstaddr",
        "--top",
        "2",
        "--format",
        "json",
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, from_files, err) = mirrorcap(&args);
    assert_eq!(code, 0, "{err}");
    let (code, from_capture, err) = mirrorcap(&[
        "flows",
        "--by",
        "srcaddr,dstaddr",
        "--top",
        "2",
        "--format",
        "json",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let a: serde_json::Value = serde_json::from_str(&from_files).unwrap();
    let b: serde_json::Value = serde_json::from_str(&from_capture).unwrap();
    assert_eq!(a[0]["srcaddr"], "172.31.0.238");
    assert_eq!(a[0]["dstaddr"], "18.196.145.224");
    for g in 0..2 {
        for k in ["srcaddr", "dstaddr", "bytes", "packets"] {
            assert_eq!(a[g][k], b[g][k], "{k}");
        }
    }
    let (code, table, _) = mirrorcap(&[
        "flows",
        "--by",
        "dstport",
        "--filter",
        "dstport=22 protocol=6",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("dstport"));
    assert!(lines[1].starts_with("22 "));
    let (code, _, err) = mirrorcap(&["flows", "--filter", "dstport", input.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("expected terms field=value"), "{err}");
}

/// The flow files under `dir`: some, and every one's name ends in `ext`.
fn flow_files_ending(dir: &Path, ext: &str, stderr: &str) -> Vec<PathBuf> {
    let files = output_files(&dir.join("flows"));
    assert!(
        !files.is_empty() && files.iter().all(|f| f.to_str().unwrap().ends_with(ext)),
        "{files:?} {stderr}"
    );
    files
}

/// `gzip = true`: `.log.gz` files that zcat and `mirrorcap flows` read.
#[test]
fn gzip_flow_files() {
    let input = testdata("vxlan/tcpdump-vxlan.pcap");
    let (_t, dir, err) = replay_flows(&input, "gzip = true\n");
    let files = flow_files_ending(&dir, ".log.gz", &err);
    let out = std::process::Command::new("zcat")
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("version interface-id srcaddr dstaddr"),
        "{text}"
    );
    let (code, table, err) = mirrorcap(&["flows", "--by", "protocol", files[0].to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // 8 ICMP echo packets (ARP is not IP: not flow-logged).
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("1 ") && l.split_whitespace().nth(2) == Some("8")),
        "{table}"
    );
}

/// Issue 12, item 10: `flows` and `replay` agree on an input they cannot
/// read to its end: both exit 1 naming the file and the offset, after
/// using every record before the cut (flows prints its report of them);
/// a missing input is 1 for both as well.
#[test]
fn flows_and_replay_agree_on_a_truncated_capture() {
    let input = testdata("vxlan/tcpdump-vxlan.pcap");
    let bytes = std::fs::read(&input).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let c = cut.to_str().unwrap();
    let out = tmp.path().join("out");
    let (rcode, _, rerr) = mirrorcap(&["replay", "--dir", out.to_str().unwrap(), c]);
    assert_eq!(rcode, 1, "{rerr}");
    let (code, table, err) = mirrorcap(&["flows", "--by", "protocol", c]);
    assert_eq!(code, rcode, "{err}");
    assert!(err.contains("cut.pcap: truncated at byte"), "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with("protocol"),
        "{table}"
    );
    let missing = tmp.path().join("missing.pcap");
    let m = missing.to_str().unwrap();
    let (rcode, _, _) = mirrorcap(&["replay", "--dir", out.to_str().unwrap(), m]);
    let (code, _, err) = mirrorcap(&["flows", m]);
    assert_eq!((rcode, code), (1, 1), "{err}");
    assert!(err.contains("missing.pcap: cannot read"), "{err}");
}

/// Hostile review of issue 14 (flows JSON): a value made of digits was
/// written as a bare JSON number, so an account ID with a leading zero
/// (`012345678901`, a valid AWS account ID) made the line invalid JSON
/// (`"account-id":012345678901`). It must stay a string, whole.
#[test]
fn json_flow_record_keeps_an_account_id_with_a_leading_zero() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let (_t, dir, _) = replay_to_dir(
        "[flows]\nenabled = true\ninterval = \"1s\"\njson = true\nformat = \"${version} ${account-id} ${srcaddr} ${packets} ${log-status}\"\n[[flows.session]]\nvni = 5569041\naccount_id = \"012345678901\"\n",
        &input,
    );
    let recs = flow_json(&dir);
    assert!(!recs.is_empty());
    assert!(
        recs.iter().all(|r| r["account-id"] == "012345678901"),
        "{recs:?}"
    );
}

/// Hostile review of issue 14 (`mirrorcap flows` on JSON Lines): the
/// report read a `.jsonl` flow file as a text one, its first record as the
/// header and every other as one field, and printed a table of `-` with
/// exit 0. It must give what the same records in the text file give.
/// (Issue 18 item 2: the JSON copies are outside `flows/AWSLogs/`.)
#[test]
fn flows_report_reads_json_lines_files() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let (_t, dir, _) = replay_flows(&input, "json = true\n");
    let files = output_files(&dir.join("flows"));
    let of = |ext: &str| -> Vec<String> {
        files
            .iter()
            .map(|f| f.to_str().unwrap().to_string())
            .filter(|f| f.ends_with(ext))
            .collect()
    };
    let report = |inputs: Vec<String>| {
        let mut args = vec!["flows", "--by", "srcaddr,dstport", "--format", "json"];
        args.extend(inputs.iter().map(String::as_str));
        let (code, stdout, stderr) = mirrorcap(&args);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let text = report(of(".log"));
    assert!(text.as_array().unwrap().len() > 1, "{text}");
    assert_eq!(report(of(".jsonl")), text);
    // The JSON copies sit beside AWS's folders (`flows/jsonl/AWSLogs/…`),
    // so a table over `flows/AWSLogs/` meets only the text files.
    for f in &files {
        let rel = f.strip_prefix(dir.join("flows")).unwrap().to_str().unwrap();
        let json = rel.ends_with(".jsonl");
        let under = if json { "jsonl/AWSLogs/" } else { "AWSLogs/" };
        assert!(rel.starts_with(under), "{rel}");
    }
}

type Rows = Vec<Vec<serde_json::Value>>;

/// Runs each query in DuckDB (PyPI `duckdb`; `scripts/test` installs it),
/// in one Python process, and returns the rows of each, a row a JSON
/// array of its columns.
fn duckdb(queries: &[String]) -> Vec<Rows> {
    duckdb_try(queries).unwrap_or_else(|e| {
        panic!("DuckDB failed (python3 -c 'import duckdb' must work: scripts/test installs PyPI duckdb): {queries:?}\n{e}")
    })
}

/// [`duckdb`], its error (DuckDB's message) when a query fails.
fn duckdb_try(queries: &[String]) -> Result<Vec<Rows>, String> {
    let script = "import duckdb, json, sys\nprint(json.dumps([[list(r) for r in duckdb.sql(q).fetchall()] for q in sys.argv[1:]]))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args(queries)
        .output()
        .expect("python3 (scripts/test installs it)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

type GroupSums = BTreeMap<Vec<String>, (u64, u64)>;

/// (bytes, packets) by the `by` fields over the OK records (`-` for none),
/// as `mirrorcap flows` and the Logs Insights queries sum them.
fn text_group_sums(recs: &[BTreeMap<String, String>], by: &[&str]) -> GroupSums {
    let mut m = GroupSums::new();
    for r in recs.iter().filter(|r| r["log-status"] == "OK") {
        let key = by.iter().map(|f| r[*f].clone()).collect();
        let e = m.entry(key).or_insert((0, 0));
        e.0 += r["bytes"].parse::<u64>().unwrap();
        e.1 += r["packets"].parse::<u64>().unwrap();
    }
    m
}

/// The query for the same sums, by DuckDB over the Parquet files (columns
/// named with underscores, as AWS names them).
fn group_sums_sql(files: &str, by: &[&str]) -> String {
    let cols: Vec<String> = by
        .iter()
        .map(|f| format!("\"{}\"", f.replace('-', "_")))
        .collect();
    format!(
        "SELECT {}, sum(bytes), sum(packets) FROM read_parquet('{files}') WHERE log_status = 'OK' GROUP BY ALL",
        cols.join(", ")
    )
}

/// Its rows as [`GroupSums`] (a null key `-`, as the text has it).
fn group_sums(rows: &Rows, by: &[&str]) -> GroupSums {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let n = by.len();
    rows.iter()
        .map(|row| {
            let key = row[..n].iter().map(cell).collect();
            (
                key,
                (row[n].as_u64().unwrap(), row[n + 1].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Issue 18 items 1 and 4: `parquet = true` writes `.parquet` files
/// (published whole, no `.part` left) that DuckDB reads with AWS's column
/// names and types, nulls where the text has `-`; its sums by 5-tuple,
/// by srcaddr/dstaddr and by dstport and its counts of records, of NODATA
/// records (with nulls; some fixture has one) and of ACCEPT records (all
/// others: mirrorcap writes no REJECT) are the text records' of the same
/// replay, and its sums are tshark's conversations'.
#[test]
fn parquet_flow_files_give_duckdb_the_sums_of_text_and_tshark() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodata_seen = 0;
    for (i, fixture) in ORACLE_FIXTURES.iter().enumerate() {
        let input = testdata(&format!("ethernet/{fixture}"));
        let wrapped = tmp.path().join(format!("{fixture}.wrapped.pcap"));
        wrap_ethernet_capture(&input, &wrapped, 9, "10.99.0.1".parse().unwrap());
        let (_t, text_dir, _) = replay_flows(&wrapped, "");
        let (_p, pq_dir, err) = replay_flows(&wrapped, "parquet = true\n");
        flow_files_ending(&pq_dir, ".parquet", &format!("{fixture}: {err}"));
        let glob = format!("{}/flows/**/*.parquet", pq_dir.display());
        let (_, text) = flow_records(&text_dir);

        let groupings: [&[&str]; 3] = [
            &["srcaddr", "dstaddr"],
            &["dstport"],
            &["protocol", "srcaddr", "srcport", "dstaddr", "dstport"],
        ];
        let mut queries = vec![
            format!(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{glob}'))"
            ),
            // Every record, NODATA ones with nulls where the text has `-`.
            format!(
                "SELECT count(*), count(*) FILTER (WHERE log_status = 'NODATA' AND srcaddr IS NULL AND packets IS NULL AND interface_id IS NULL), count(*) FILTER (WHERE action = 'ACCEPT') FROM read_parquet('{glob}')"
            ),
        ];
        queries.extend(groupings.iter().map(|by| group_sums_sql(&glob, by)));
        let answers = duckdb(&queries);
        if i == 0 {
            // AWS's names and types (DuckDB's INTEGER is Parquet INT32,
            // BIGINT INT64, VARCHAR a UTF-8 BYTE_ARRAY).
            let schema: Vec<String> = answers[0]
                .iter()
                .map(|r| format!("{} {}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
                .collect();
            assert_eq!(
                schema,
                [
                    "version INTEGER",
                    "interface_id VARCHAR",
                    "srcaddr VARCHAR",
                    "dstaddr VARCHAR",
                    "srcport INTEGER",
                    "dstport INTEGER",
                    "protocol INTEGER",
                    "packets BIGINT",
                    "bytes BIGINT",
                    "start BIGINT",
                    "end BIGINT",
                    "action VARCHAR",
                    "log_status VARCHAR",
                    "tcp_flags INTEGER",
                    "type VARCHAR",
                    "flow_direction VARCHAR",
                ]
            );
        }
        let nodata = text.iter().filter(|r| r["log-status"] == "NODATA").count();
        let accepted = text.iter().filter(|r| r["action"] == "ACCEPT").count();
        assert!(accepted > 0 && accepted + nodata == text.len(), "{fixture}");
        nodata_seen += nodata;
        assert_eq!(
            answers[1][0],
            [text.len(), nodata, accepted].map(serde_json::Value::from),
            "{fixture}: records, NODATA records, ACCEPT records"
        );
        for (by, rows) in groupings.iter().zip(&answers[2..]) {
            assert_eq!(
                group_sums(rows, by),
                text_group_sums(&text, by),
                "{fixture}: by {by:?}"
            );
        }
        // And tshark's conversations, through the Parquet records alone.
        let mut packets = BTreeMap::new();
        let mut bytes = BTreeMap::new();
        for (k, (b, p)) in group_sums(&answers[4], groupings[2]) {
            if k[0] == "6" || k[0] == "17" {
                let t: Tuple = (
                    k[0].clone(),
                    k[1].clone(),
                    k[2].parse().unwrap(),
                    k[3].clone(),
                    k[4].parse().unwrap(),
                );
                packets.insert(t.clone(), p);
                bytes.insert(t, b);
            }
        }
        assert_tshark_sums(fixture, &input, &packets, &bytes);
    }
    assert!(nodata_seen > 0, "no fixture had a NODATA record to compare");
}

/// Issue 18 item 3: `mirrorcap flows` reads `.parquet` flow files as it
/// reads text ones: the same report from the Parquet and the text records
/// of one replay, metadata (strings) and ports (integers) included.
#[test]
fn flows_report_reads_parquet_files() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let meta = "[[flows.session]]\nvni = 5569041\ninterface_id = \"eni-0123456789abcdef0\"\n";
    let (_t, text_dir, _) = replay_flows(&input, meta);
    let (_p, pq_dir, _) = replay_flows(&input, &format!("parquet = true\n{meta}"));
    let files = |dir: &Path| -> Vec<String> {
        output_files(&dir.join("flows"))
            .into_iter()
            .map(|f| f.to_str().unwrap().to_string())
            .collect()
    };
    let pq = files(&pq_dir);
    assert!(pq.iter().all(|f| f.ends_with(".parquet")), "{pq:?}");
    for (by, filter) in [
        ("srcaddr,dstaddr", ""),
        ("interface-id,dstport,flow-direction", ""),
        ("dstport", "protocol=6"),
    ] {
        let report = |inputs: Vec<String>| {
            let mut args = vec!["flows", "--by", by, "--format", "json"];
            if !filter.is_empty() {
                args.extend(["--filter", filter]);
            }
            args.extend(inputs.iter().map(String::as_str));
            let (code, stdout, stderr) = mirrorcap(&args);
            assert_eq!(code, 0, "{stderr}");
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
        };
        let text = report(files(&text_dir));
        assert!(!text.as_array().unwrap().is_empty(), "{text}");
        assert_eq!(report(pq.clone()), text, "--by {by} --filter '{filter}'");
    }
}

/// Issue 18 item 2: with `hive_compatible_partitions` and
/// `per_hour_partition`, Parquet files go under AWS's Hive layout
/// (`AWSLogs/aws-account-id=…/aws-service=vpcflowlogs/aws-region=…/
/// year=/month=/day=/hour=/`); DuckDB's `read_parquet(…, hive_partitioning
/// = true)` shows those partitions, its sums per hour are the text
/// records', and `WHERE hour = …` reads only that hour's files (DuckDB's
/// EXPLAIN ANALYZE: 1 of 3 files scanned, the hour's; 3 without it).
/// The input: a real capture, and two copies of it one hour and five
/// hours later (`editcap -t`), merged: three hours over two days.
#[test]
fn hive_partitions_let_duckdb_read_only_the_hours_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = testdata("ethernet/zeek-wikipedia.pcap");
    let wrapped = tmp.path().join("wrapped.pcap");
    wrap_ethernet_capture(&input, &wrapped, 9, "10.99.0.1".parse().unwrap());
    let mut copies = vec![wrapped.to_str().unwrap().to_string()];
    for shift in ["3600", "18000"] {
        let out = tmp.path().join(format!("shifted-{shift}.pcap"));
        let o = tool(
            "editcap",
            &[
                "-t",
                shift,
                wrapped.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", clean_stderr(&o));
        copies.push(out.to_str().unwrap().to_string());
    }
    let merged = tmp.path().join("three-hours.pcap");
    let mut args = vec!["-F", "pcap", "-w", merged.to_str().unwrap()];
    args.extend(copies.iter().map(String::as_str));
    let o = tool("mergecap", &args);
    assert!(o.status.success(), "{}", clean_stderr(&o));

    // `file_interval` longer than an hour: each new hour still starts a
    // new file (the time slot alone would not split the hours).
    let layout = "hive_compatible_partitions = true\nper_hour_partition = true\naccount_id = \"123456789012\"\nregion = \"eu-west-1\"\nfile_interval = \"1d\"\n";
    let (_t, text_dir, _) = replay_flows(&merged, layout);
    let (_p, pq_dir, err) = replay_flows(&merged, &format!("parquet = true\n{layout}"));
    let files = flow_files_ending(&pq_dir, ".parquet", &err);
    let base = pq_dir.join(
        "flows/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1",
    );
    let mut folders: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f.parent().unwrap().strip_prefix(&base).unwrap();
            rel.to_str().unwrap().to_string()
        })
        .collect();
    folders.dedup();
    assert_eq!(
        folders,
        [
            "year=2011/month=03/day=18/hour=19",
            "year=2011/month=03/day=18/hour=20",
            "year=2011/month=03/day=19/hour=00",
        ],
        "{files:?}"
    );
    // The text records of the same replay, in the same folders.
    let text_files = flow_files_ending(&text_dir, ".log", "");
    assert!(
        text_files
            .iter()
            .all(|f| f.starts_with(text_dir.join("flows/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=2011/month=03/"))),
        "{text_files:?}"
    );
    let (_, text) = flow_records(&text_dir);
    let mut text_by_hour: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for r in text.iter().filter(|r| r["log-status"] == "OK") {
        let e = text_by_hour
            .entry(r["start"].parse::<u64>().unwrap() / 3600 % 24)
            .or_default();
        e.0 += 1;
        e.1 += r["packets"].parse::<u64>().unwrap();
        e.2 += r["bytes"].parse::<u64>().unwrap();
    }
    assert_eq!(text_by_hour.keys().collect::<Vec<_>>(), [&0, &19, &20]);

    let glob = format!("{}/flows/AWSLogs/**/*.parquet", pq_dir.display());
    // Zero-padded like AWS's (`month=03`, `hour=00`): typed as integers,
    // as Athena's partition projection does with `digits`.
    let from = format!(
        "read_parquet('{glob}', hive_partitioning = true, hive_types = {{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}})"
    );
    let hour_sums = |hour: u64| {
        format!(
            "SELECT count(*), sum(packets), sum(bytes) FROM {from} WHERE log_status = 'OK' AND hour = {hour}"
        )
    };
    let answers = duckdb(&[
        format!(
            "SELECT DISTINCT \"aws-account-id\"::VARCHAR, \"aws-service\", \"aws-region\", year, month, day, hour FROM {from} ORDER BY ALL"
        ),
        hour_sums(0),
        hour_sums(19),
        hour_sums(20),
    ]);
    assert_eq!(
        answers[0],
        [[2011, 3, 18, 19], [2011, 3, 18, 20], [2011, 3, 19, 0],].map(|[y, m, d, h]| {
            let mut row = ["123456789012", "vpcflowlogs", "eu-west-1"]
                .map(serde_json::Value::from)
                .to_vec();
            row.extend([y, m, d, h].map(serde_json::Value::from));
            row
        })
    );
    for (hour, rows) in [0, 19, 20].into_iter().zip(&answers[1..]) {
        let (n, p, b) = text_by_hour[&hour];
        assert_eq!(
            rows[0],
            [n, p, b].map(serde_json::Value::from),
            "hour {hour}"
        );
    }

    // DuckDB's own account of the scan (EXPLAIN ANALYZE): the partition
    // filter leaves one file of the three, the hour's, and only it is
    // read; without the filter, all three are.
    let plan = |filter: &str| {
        let rows = duckdb(&[format!(
            "EXPLAIN ANALYZE SELECT count(*) FROM {from} {filter}"
        )]);
        rows[0]
            .iter()
            .map(|r| r[1].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let hour_20 = plan("WHERE hour = 20");
    assert!(
        hour_20.contains("Scanning Files: 1/3") && hour_20.contains("Total Files Read: 1"),
        "{hour_20}"
    );
    let named: Vec<&str> = hour_20.lines().filter(|l| l.contains(".parquet")).collect();
    assert!(
        named.len() == 1 && named[0].contains("/hour=20/"),
        "{hour_20}"
    );
    let every = plan("");
    assert!(every.contains("Total Files Read: 3"), "{every}");
}

/// Issue 18 item 2, the account and region: without `[output.s3]` the
/// daemon never asks instance metadata (a listener standing in for it
/// sees no connection); with neither given, the flow files go under
/// `AWSLogs/unknown/vpcflowlogs/unknown/` and the start says which keys
/// to set; given in `[flows]`, they are the folders of AWS's default
/// layout (`…/YYYY/MM/DD/`, no hour), named by the UTC date of the
/// records.
#[test]
fn account_and_region_come_from_the_config_and_never_from_metadata_without_s3() {
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    metadata.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", metadata.local_addr().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    for (name, keys, base) in [
        ("unknown", "", "AWSLogs/unknown/vpcflowlogs/unknown"),
        (
            "given",
            "account_id = \"012345678901\"\nregion = \"ap-southeast-2\"\n",
            "AWSLogs/012345678901/vpcflowlogs/ap-southeast-2",
        ),
    ] {
        let dir = tmp.path().join(name);
        let cfg = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!("[flows]\nenabled = true\ninterval = \"1s\"\n{keys}"),
        )
        .unwrap();
        let d = Daemon::start_with_env(
            &[
                "--dir",
                dir.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)],
        );
        let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        for seq in 0..50 {
            sock.send_to(&datagram(7, &inner_frame(seq, 120)), d.addr)
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (code, _, err) = d.stop();
        assert_eq!(code, 0, "{err}");
        let warned = err.contains("no `account_id` or `region` given");
        assert_eq!(warned, keys.is_empty(), "{err}");
        let files = flow_files_ending(&dir, ".log", &err);
        let (_, recs) = flow_records(&dir);
        let packets: u64 = recs
            .iter()
            .filter(|r| r["log-status"] == "OK")
            .map(|r| r["packets"].parse::<u64>().unwrap())
            .sum();
        assert_eq!(packets, 50, "{err}");
        for f in &files {
            // Its folder is the UTC date of its first record's start.
            let text = std::fs::read_to_string(f).unwrap();
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split(' ').collect();
            let at = header.iter().position(|h| *h == "start").unwrap();
            let start: u64 = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(at)
                .unwrap()
                .parse()
                .unwrap();
            let rel = f.strip_prefix(dir.join("flows")).unwrap();
            let folder = format!("{base}/{}", utc_day_folder(start));
            assert!(
                rel.parent() == Some(Path::new(&folder)),
                "{rel:?} not in {folder}"
            );
        }
    }
    assert!(
        metadata.accept().is_err(),
        "instance metadata was asked without [output.s3]"
    );
}

/// `YYYY/MM/DD` of Unix time `t` (days from the civil calendar
/// algorithm, no library), to check folder names against.
fn utc_day_folder(t: u64) -> String {
    let z = (t / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}/{m:02}/{d:02}")
}

/// Review of issue 18, item 3: `mirrorcap flows` reads AWS's own Parquet
/// flow logs, which AWS writes GZIP-compressed: a file written by DuckDB
/// with AWS's column names and types and `COMPRESSION gzip` gives the
/// report its records hold.
#[test]
fn flows_report_reads_gzip_compressed_parquet_as_aws_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("aws.parquet");
    let rows = "(2::INTEGER, '123456789012', 'eni-0a', '10.0.0.1', '10.0.0.2', 40000::INTEGER, 443::INTEGER, 6::INTEGER, 10::BIGINT, 1500::BIGINT, 1764000000::BIGINT, 1764000060::BIGINT, 'ACCEPT', 'OK'), \
                (2, '123456789012', 'eni-0a', '10.0.0.1', '10.0.0.3', 40001, 53, 17, 2, 150, 1764000000, 1764000060, 'ACCEPT', 'OK'), \
                (2, '123456789012', 'eni-0a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1764000000, 1764000060, NULL, 'NODATA')";
    duckdb(&[format!(
        "COPY (SELECT * FROM (VALUES {rows}) t(version, account_id, interface_id, srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, start, \"end\", action, log_status)) TO '{}' (FORMAT parquet, COMPRESSION gzip)",
        file.display()
    )]);
    let codecs = duckdb(&[format!(
        "SELECT DISTINCT compression FROM parquet_metadata('{}')",
        file.display()
    )]);
    assert_eq!(codecs[0], [[serde_json::Value::from("GZIP")]]);
    let (code, stdout, stderr) = mirrorcap(&[
        "flows",
        "--by",
        "dstaddr,dstport",
        "--format",
        "json",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let groups: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let got: Vec<(String, String, u64, u64)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["dstaddr"].as_str().unwrap().to_string(),
                g["dstport"].as_str().unwrap().to_string(),
                g["packets"].as_u64().unwrap(),
                g["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.2".into(), "443".into(), 10, 1500),
            ("10.0.0.3".into(), "53".into(), 2, 150),
        ],
        "{stdout}"
    );
}

/// Hostile run of issue 18: a foreign Parquet file whose `bytes` are not
/// whole numbers (DOUBLE) is an error naming the file, the row and the
/// value, exit 1; it used to be summed as 0 without a word.
#[test]
fn flows_report_refuses_bytes_that_are_not_whole_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("doubles.parquet");
    duckdb(&[format!(
        "COPY (SELECT '10.0.0.1' AS srcaddr, 2::BIGINT AS packets, b AS bytes, 'OK' AS log_status FROM (VALUES (100.0::DOUBLE), (1.5::DOUBLE)) t(b)) TO '{}' (FORMAT parquet)",
        file.display()
    )]);
    let (code, _, stderr) = mirrorcap(&["flows", "--by", "srcaddr", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap())
            && stderr.contains("row 1: bytes = \"100.0\"")
            && stderr.contains("is not a whole number of bytes"),
        "{stderr}"
    );
}

/// Hostile run 2 of issue 18: sums past `u64::MAX` (three records of
/// `i64::MAX` bytes, which DuckDB sums to 27670116110564327421) are an
/// error naming the file, exit 1; they used to wrap to 9223372036854775805
/// without a word.
#[test]
fn flows_report_refuses_sums_past_u64_max() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("huge.parquet");
    duckdb(&[format!(
        "COPY (SELECT '10.0.0.1' AS srcaddr, 1::BIGINT AS packets, 9223372036854775807::BIGINT AS bytes, 'OK' AS log_status FROM range(3)) TO '{}' (FORMAT parquet)",
        file.display()
    )]);
    let (code, stdout, stderr) = mirrorcap(&["flows", "--by", "srcaddr", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap())
            && stderr.contains("row 3")
            && stderr.contains("sum(bytes)")
            && stderr.contains("18446744073709551615"),
        "{stderr}"
    );
    assert!(!stdout.contains("9223372036854775805"), "{stdout}");
}

/// Hostile run 2 of issue 18: a value wider than 65535 characters (a
/// foreign file's long field) is printed in the table; the alignment
/// used to panic ("Formatting argument out of range", exit 101).
#[test]
fn flows_report_prints_values_wider_than_65535_characters() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("long.txt");
    let long = "b".repeat(70_000);
    std::fs::write(
        &file,
        format!("srcaddr dstaddr bytes packets\na {long} 5 1\nc d 1 1\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = mirrorcap(&["flows", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[1].starts_with(&format!("a        {long}  5 ")),
        "{}",
        &lines[1][..80]
    );
    assert!(lines[2].starts_with("c        d"), "{}", &lines[2][..20]);
}
