//! `mirrorcap extract` (issue 17) on real traffic: a real capture split
//! between two mirror targets by inner flow, as a load balancer does,
//! written by `mirrorcap replay` with rotation into two directories, then
//! extracted and compared with what `mergecap`, `editcap -A/-B` and
//! `tcpdump -r - -w - EXPR` make of the same files.

mod common;

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::s3::*;
use common::*;

/// Real HTTP traffic: 136 frames, 10 TCP connections, 6.4 s.
const WIKIPEDIA: &str = "ethernet/zeek-wikipedia.pcap";
const SOURCE: &str = "10.0.1.5";

/// (timestamp ns, frame, original length) of an Ethernet capture.
fn records(path: &Path) -> Vec<(u64, Vec<u8>, u32)> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "x").unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        v.push((rec.ts_ns, rec.data.to_vec(), rec.orig_len));
    }
    v
}

/// A TCP connection: its two (address, port) ends, lower first.
type Conn = (Vec<u8>, Vec<u8>);

/// The target a load balancer would send a frame to: a hash of its inner
/// 5-tuple as it is (not ordered), so the two directions of a connection
/// may go to different targets. Frames that are not TCP/UDP go to 0.
fn target_of(frame: &[u8]) -> (usize, Option<Conn>) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return (0, None);
    };
    let (src, dst, proto) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
            ip.header().protocol().0,
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
            ip.header().next_header().0,
        ),
        _ => return (0, None),
    };
    let (sp, dp) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    let mut h: u32 = 0x811c_9dc5; // FNV-1a
    for b in src
        .iter()
        .chain(&dst)
        .chain(&sp.to_be_bytes())
        .chain(&dp.to_be_bytes())
        .chain(&[proto])
    {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    let mut a = src.clone();
    a.extend_from_slice(&sp.to_be_bytes());
    let mut b = dst.clone();
    b.extend_from_slice(&dp.to_be_bytes());
    let conn = if proto == 6 {
        Some(if a < b { (a, b) } else { (b, a) })
    } else {
        None
    };
    // A high bit: the low bit of FNV-1a is the XOR of the bytes' low
    // bits, the same both ways.
    (((h >> 16) % 2) as usize, conn)
}

/// Replays the Ethernet `recs` wrapped in VXLAN (`vni`, outer source
/// [`SOURCE`]) into `dir` with the `[output]` settings `output`.
fn replay_into(tmp: &Path, dir: &Path, vni: u32, recs: &[(u64, Vec<u8>, u32)], output: &str) {
    let eth = tmp.join(format!(
        "eth-{vni}-{}.pcap",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    write_pcap(&eth, 1, recs);
    let vx = eth.with_extension("vxlan.pcap");
    wrap_ethernet_capture(&eth, &vx, vni, SOURCE.parse::<IpAddr>().unwrap());
    replay_into_dir(&format!("[output]\n{output}\n"), &vx, dir);
}

/// Two targets' directories: session (7, SOURCE) holds the wikipedia
/// traffic split by flow (target A writes pcap, target B pcapng, both
/// rotating every 5 packets); session (8, SOURCE) holds all of it again in
/// A, to be left out.
struct Targets {
    tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    first_ns: u64,
}

fn two_targets() -> Targets {
    let tmp = tempfile::tempdir().unwrap();
    let all = records(&testdata(WIKIPEDIA));
    let mut parts: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    let mut conns: std::collections::BTreeMap<_, [usize; 2]> = Default::default();
    for r in &all {
        let (t, conn) = target_of(&r.1);
        if let Some(c) = conn {
            conns.entry(c).or_default()[t] += 1;
        }
        parts[t].push(r.clone());
    }
    let split = conns.values().filter(|n| n[0] > 0 && n[1] > 0).count();
    assert!(
        split >= 1,
        "no TCP connection has its directions on two targets: {conns:?}"
    );
    assert!(!parts[0].is_empty() && !parts[1].is_empty());
    let a = tmp.path().join("target-a");
    let b = tmp.path().join("target-b");
    replay_into(tmp.path(), &a, 7, &parts[0], "rotate_packets = 5");
    replay_into(
        tmp.path(),
        &b,
        7,
        &parts[1],
        "rotate_packets = 5\nformat = \"pcapng\"",
    );
    replay_into(tmp.path(), &a, 8, &all, "rotate_packets = 5");
    assert!(output_files(&a).len() > 10 && output_files(&b).len() > 5);
    Targets {
        first_ns: all[0].0,
        tmp,
        a,
        b,
    }
}

/// Session 7's files of a target, in name order (start, then seq).
fn session_files(dir: &Path, vni: u32) -> Vec<PathBuf> {
    output_files(&dir.join(vni.to_string()).join(SOURCE))
}

fn rfc3339(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .unwrap()
        .to_string()
}

/// `mirrorcap extract ARGS -w OUT`: (exit code, stderr).
fn extract(args: &[&str], out: &Path) -> (i32, String) {
    let mut all = vec!["extract", "-w", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, _, err) = mirrorcap(&all);
    (code, err)
}

/// A shell pipeline, asserting success; its stdout.
fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What `mergecap` of session 7's files of both targets, cut to
/// `[from, to)` with `editcap -A/-B` and filtered with `tcpdump ... tcp`,
/// holds.
fn reference_tcp(t: &Targets, from: u64, to: u64) -> Vec<FrameRow> {
    let inputs: Vec<String> = session_files(&t.a, 7)
        .into_iter()
        .chain(session_files(&t.b, 7))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let secs = |ns: u64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let reference = t.tmp.path().join("ref.pcap");
    sh(&format!(
        "mergecap -w - {} | editcap -A {} -B {} - - | tcpdump -r - -w {} tcp",
        inputs.join(" "),
        secs(from),
        secs(to),
        reference.display()
    ));
    tshark_frames(&reference)
}

/// Session (7, SOURCE), `[from, to)`, TCP: the selection the reference
/// ([`reference_tcp`]) is compared with.
fn tcp_window(from: u64, to: u64) -> Vec<String> {
    ["--vni", "7", "--source", SOURCE, "--from", &rfc3339(from)]
        .into_iter()
        .map(str::to_string)
        .chain(["--to".into(), rfc3339(to), "--filter".into(), "tcp".into()])
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Issue 17 items 1-3: one session, a window and a filter out of two
/// targets' rotated files equal `mergecap` of those files cut with
/// `editcap -A/-B` and filtered with `tcpdump`: same frames, same order,
/// same timestamps; the other session is left out.
#[test]
fn extract_equals_mergecap_editcap_tcpdump_over_two_targets() {
    let t = two_targets();
    let from = t.first_ns + 1_700_000_000;
    let to = t.first_ns + 4_000_000_000;
    let out = t.tmp.path().join("x.pcap");
    let window = tcp_window(from, to);
    let dirs = [t.a.to_str().unwrap(), t.b.to_str().unwrap()];
    let (code, err) = extract(&[&strs(&window)[..], &dirs[..]].concat(), &out);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    capinfos_ok(&out);
    let got = tshark_frames(&out);
    let want = reference_tcp(&t, from, to);
    assert!(want.len() > 20, "{} frames in the window", want.len());
    assert_eq!(got, want);
    // Not every frame of the window: the filter and the session count.
    let unfiltered = t.tmp.path().join("all.pcap");
    let (code, err) = extract(
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            t.a.to_str().unwrap(),
            t.b.to_str().unwrap(),
        ],
        &unfiltered,
    );
    assert_eq!(code, 0, "{err}");
    assert!(tshark_frames(&unfiltered).len() > 2 * want.len());
}

/// tshark's TCP analysis flags of a capture (out of order, retransmission,
/// lost segment, ACKed unseen segment).
fn tcp_flags(file: &Path) -> usize {
    let f = file.to_str().unwrap();
    tshark(&[
        "-r",
        f,
        "-Y",
        "tcp.analysis.out_of_order || tcp.analysis.retransmission || tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment || tcp.analysis.spurious_retransmission",
    ])
    .lines()
    .count()
}

/// Issue 17 item 3: both directions of a TCP connection that went to
/// different targets come out interleaved in time order: tshark flags no
/// more out-of-order or lost segments than in the source capture (one
/// target alone flags more), and every timestamp is in order. pcapng out:
/// one interface per session, named as the capture files name it.
#[test]
fn extract_interleaves_both_directions_of_split_connections() {
    let t = two_targets();
    let out = t.tmp.path().join("x.pcapng");
    let args = ["--vni", "7", "--format", "pcapng"];
    let dirs = [t.a.to_str().unwrap(), t.b.to_str().unwrap()];
    let (code, err) = extract(&[&args[..], &dirs[..]].concat(), &out);
    assert_eq!(code, 0, "{err}");
    let source = testdata(WIKIPEDIA);
    assert_eq!(tshark_frames(&out), tshark_frames(&source));
    let base = tcp_flags(&source);
    eprintln!(
        "tcp.analysis flags: source {base}, extract {}",
        tcp_flags(&out)
    );
    assert!(tcp_flags(&out) <= base, "{} > {base}", tcp_flags(&out));
    // The same files one target after the other (`mergecap -a`): tshark
    // flags the split connections.
    let files: Vec<String> = session_files(&t.a, 7)
        .into_iter()
        .chain(session_files(&t.b, 7))
        .map(|p| p.display().to_string())
        .collect();
    let cat = t.tmp.path().join("cat.pcapng");
    sh(&format!(
        "mergecap -a -w {} {}",
        cat.display(),
        files.join(" ")
    ));
    eprintln!("tcp.analysis flags: concatenated {}", tcp_flags(&cat));
    assert!(tcp_flags(&cat) > base, "concatenated: {}", tcp_flags(&cat));
    let names = tshark(&[
        "-r",
        out.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ]);
    assert!(
        names.lines().all(|l| l == format!("vxlan-7-{SOURCE}")),
        "{names}"
    );
    let both = t.tmp.path().join("both.pcapng");
    let (code, err) = extract(&["--format", "pcapng", dirs[0], dirs[1]], &both);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> = tshark(&[
        "-r",
        both.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        vec![format!("vxlan-7-{SOURCE}"), format!("vxlan-8-{SOURCE}")]
    );
}

/// Issue 17 item 3, window edges: a record exactly at `--from` is in, one
/// exactly at `--to` is out (as `editcap -A` inclusive, `-B` exclusive),
/// also where the edges fall on file boundaries. The files are laid out by
/// a template of the config's own, which extract reads with `--config`.
#[test]
fn extract_window_from_inclusive_to_exclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = 1_700_000_000_000_000_000u64;
    let u = t + 1_000_000_000;
    let times = [t - 1, t, t + 1, u - 1, u, u + 1];
    let recs: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, ts)| (*ts, inner_frame(i as u64, 60), 60))
        .collect();
    let dir = tmp.path().join("d");
    replay_into(
        tmp.path(),
        &dir,
        7,
        &recs,
        "rotate_packets = 2\ntemplate = \"{date}/vni-{vni}_{source}_{time}_{seq}.{ext}\"",
    );
    assert_eq!(output_files(&dir).len(), 3);
    // The config replay used (`replay_into_dir` writes it beside the dir).
    let config = dir.with_extension("toml");
    let out = tmp.path().join("x.pcap");
    // With the default template, none of these paths is a capture file.
    let (code, err) = extract(&["--stats", dir.to_str().unwrap()], &out);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(" 0 files considered"), "{err}");
    let (code, err) = extract(
        &[
            "--config",
            config.to_str().unwrap(),
            "--from",
            &rfc3339(t),
            "--to",
            &rfc3339(u),
            dir.to_str().unwrap(),
        ],
        &out,
    );
    assert_eq!(code, 0, "{err}");
    let got: Vec<String> = tshark_frames(&out).into_iter().map(|r| r.0).collect();
    let ns = |x: u64| format!("{}.{:09}", x / 1_000_000_000, x % 1_000_000_000);
    assert_eq!(got, vec![ns(t), ns(t + 1), ns(u - 1)]);
    let files: Vec<String> = output_files(&dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let reference = tmp.path().join("ref.pcap");
    sh(&format!(
        "mergecap -w - {} | editcap -A {} -B {} - {}",
        files.join(" "),
        ns(t),
        ns(u),
        reference.display()
    ));
    let want: Vec<String> = tshark_frames(&reference).into_iter().map(|r| r.0).collect();
    assert_eq!(want, got, "editcap -A is inclusive and -B exclusive");
}

/// Offsets of the records of a classic pcap: (start of record, caplen).
fn pcap_records(b: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        v.push((at, caplen));
        at += 16 + caplen;
    }
    v
}

/// Issue 17 item 4: a `.part` (cut inside its last record: still being
/// written) is read to its last whole record and not reported, nor are
/// `.part` files with no whole file header yet; a truncated
/// file and one with a corrupt record are reported by name and byte
/// offset, everything else is extracted, and the exit code is 1.
#[test]
fn extract_reads_part_reports_truncated_and_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    let all = records(&testdata(WIKIPEDIA));
    let dir = tmp.path().join("d");
    replay_into(tmp.path(), &dir, 7, &all, "rotate_packets = 10");
    let files = session_files(&dir, 7);
    assert_eq!(files.len(), 14);
    let per_file: Vec<Vec<FrameRow>> = files.iter().map(|f| tshark_frames(f)).collect();

    // File 3 cut inside its 5th record; file 6's 3rd record claims 2 GiB.
    let cut = &files[3];
    let b = std::fs::read(cut).unwrap();
    let (at, _) = pcap_records(&b)[4];
    std::fs::write(cut, &b[..at + 16 + 5]).unwrap();
    let bad = &files[6];
    let mut b = std::fs::read(bad).unwrap();
    let (bad_at, _) = pcap_records(&b)[2];
    b[bad_at + 8..bad_at + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    std::fs::write(bad, &b).unwrap();
    // The last file is still being written: `.part`, its last record cut.
    let last = files.last().unwrap();
    let b = std::fs::read(last).unwrap();
    let recs = pcap_records(&b);
    let part = PathBuf::from(format!("{}.part", last.display()));
    std::fs::write(&part, &b[..recs.last().unwrap().0 + 20]).unwrap();
    std::fs::remove_file(last).unwrap();
    // A `.part` just created, and one with half a file header.
    let session_dir = last.parent().unwrap();
    std::fs::write(session_dir.join("20991231T000000Z-000098.pcap.part"), b"").unwrap();
    std::fs::write(
        session_dir.join("20991231T000000Z-000099.pcap.part"),
        &b[..10],
    )
    .unwrap();

    let out = tmp.path().join("x.pcap");
    let (code, err) = extract(&["--stats", dir.to_str().unwrap()], &out);
    assert_eq!(code, 1, "{err}");
    let want: Vec<FrameRow> = per_file
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            let keep = match i {
                3 => 4,
                6 => 2,
                13 => f.len() - 1,
                _ => f.len(),
            };
            f[..keep].to_vec()
        })
        .collect();
    assert_eq!(tshark_frames(&out), want);
    assert!(
        err.contains(&format!(
            "mirrorcap: {}: truncated at byte {}:",
            cut.display(),
            at + 16
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "mirrorcap: {}: malformed at byte {}: record length 2147483647",
            bad.display(),
            bad_at + 16
        )),
        "{err}"
    );
    assert!(!err.contains(".part"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("mirrorcap: ")).count(),
        2,
        "{err}"
    );
}

/// A store of 200 rotated files, 10 records each 10 s apart (so 100 s a
/// file), of one session.
fn store_of_200(tmp: &Path) -> (PathBuf, u64) {
    let t0 = 1_700_000_000_000_000_000u64 + 500_000_000;
    let recs: Vec<_> = (0..2000u64)
        .map(|i| (t0 + i * 10_000_000_000, inner_frame(i, 120), 120))
        .collect();
    let dir = tmp.join("store");
    replay_into(tmp, &dir, 7, &recs, "rotate_packets = 10");
    assert_eq!(output_files(&dir).len(), 200);
    (dir, t0)
}

/// Issue 17 item 5: on a store of 200 rotated files, a window touching 3
/// of them opens those 3 (`--stats`), reads no more than their bytes, and
/// extracts exactly the records in the window.
#[test]
fn extract_stats_opens_only_the_files_a_window_touches() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, t0) = store_of_200(tmp.path());
    let file_ns = 100_000_000_000;
    let from = t0 + 50 * file_ns + 5_000_000_000;
    let to = t0 + 52 * file_ns + 50_000_000_000;
    let out = tmp.path().join("x.pcap");
    let (code, err) = extract(
        &[
            "--stats",
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            dir.to_str().unwrap(),
        ],
        &out,
    );
    assert_eq!(code, 0, "{err}");
    eprint!("{err}");
    assert!(
        err.contains("200 files considered, 3 chosen by time, 3 opened"),
        "{err}"
    );
    let files = output_files(&dir);
    let sizes: u64 = files[50..53]
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    let read: u64 = err
        .split(", ")
        .find_map(|p| p.strip_suffix(" bytes read"))
        .unwrap()
        .parse()
        .unwrap();
    // File 52 is read only up to its first record past the window.
    assert!(
        read < sizes && read > sizes / 2,
        "{read} bytes read of {sizes}"
    );
    // 9 records of file 50, 10 of 51, 5 of 52.
    assert_eq!(tshark_frames(&out).len(), 24);
}

/// Issue 17 item 3: a reader that goes away (EPIPE, `| head`) ends
/// extract quietly with exit 0.
#[test]
fn extract_stops_quietly_when_the_reader_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = store_of_200(tmp.path());
    let mut child = Command::new(bin())
        .args(["extract", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 1000];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

// S3 inputs (issue 17 items 1, 2 and 4 for `s3://bucket/prefix`): the
// objects are the files written above, put under the keys the uploader
// gives them (tests/s3.rs checks those keys against the daemon's), into
// moto's S3 server inside a network namespace of the test's own (root).

/// Uploads every capture file under `dir` to the bucket under its
/// default key for `host` below `prefix`; `cut` replaces a file's body.
fn upload_dir(endpoint: &str, dir: &Path, prefix: &str, host: &str) -> Vec<(PathBuf, String)> {
    let files: Vec<(PathBuf, String)> = output_files(dir)
        .into_iter()
        .filter(|f| !f.to_str().unwrap().ends_with(".toml"))
        .map(|f| {
            let k = expected_key(dir, &f, prefix, host);
            (f, k)
        })
        .collect();
    let mut args = vec!["put".to_string(), BUCKET.to_string()];
    for (f, k) in &files {
        args.push(k.clone());
        args.push(f.to_str().unwrap().to_string());
    }
    s3py(
        endpoint,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    files
}

/// `mirrorcap extract ARGS -w OUT` with test credentials, and the S3
/// endpoint and region in the environment (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`) unless `endpoint` is `None` (then `--config` gives them):
/// (exit code, stderr).
fn extract_s3(args: &[&str], out: &Path, endpoint: Option<&str>) -> (i32, String) {
    let mut c = Command::new(bin());
    c.args(["extract", "-w", out.to_str().unwrap()])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(e) = endpoint {
        c.env("AWS_ENDPOINT_URL", e).env("AWS_REGION", "us-east-1");
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Issue 17 item 1 (S3 inputs): the two targets' files in one bucket
/// under their hosts' keys (`target-a`, `target-b`), extracted from
/// `s3://caps/fleet` for one session, a window and a filter, equal what
/// `mergecap | editcap -A -B | tcpdump tcp` makes of the local files (same
/// frames, order, timestamps); a local directory and an S3 prefix mix.
#[test]
#[ignore = "needs root: runs in a network namespace of its own (unshare -n)"]
fn extract_s3_prefix_equals_mergecap_editcap_tcpdump_over_two_hosts() {
    let moto = s3_server();
    let ep = moto.endpoint();
    let t = two_targets();
    upload_dir(&ep, &t.a, "fleet", "target-a");
    upload_dir(&ep, &t.b, "fleet", "target-b");
    upload_dir(&ep, &t.b, "mix", "target-b");
    let from = t.first_ns + 1_700_000_000;
    let to = t.first_ns + 4_000_000_000;
    let want = reference_tcp(&t, from, to);
    assert!(want.len() > 20, "{} frames in the window", want.len());
    let window = tcp_window(from, to);
    let window = strs(&window);
    let out = t.tmp.path().join("s3.pcap");
    let (code, err) = extract_s3(
        &[&window[..], &["s3://caps/fleet"]].concat(),
        &out,
        Some(&ep),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    capinfos_ok(&out);
    assert_eq!(tshark_frames(&out), want);
    let mixed = t.tmp.path().join("mixed.pcap");
    let (code, err) = extract_s3(
        &[&window[..], &[t.a.to_str().unwrap(), "s3://caps/mix/"]].concat(),
        &mixed,
        Some(&ep),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(tshark_frames(&mixed), want);
}

/// A store of 8 hours: 80 records 6 min apart from 00:00:30 of an hour,
/// 15 a file, so 6 files of 90 min starting 00:00:30, 01:30:30, 03:00:30,
/// 04:30:30, 06:00:30, 07:30:30 (hours 2 and 5 hold no file's start).
fn store_of_8_hours(tmp: &Path) -> (PathBuf, u64) {
    let h0 = 1_699_999_200_000_000_000u64; // 2023-11-14T22:00:00Z
    let step = 360_000_000_000;
    let recs: Vec<_> = (0..80u64)
        .map(|i| (h0 + 30_000_000_000 + i * step, inner_frame(i, 120), 120))
        .collect();
    let dir = tmp.join("hours");
    replay_into(
        tmp,
        &dir,
        7,
        &recs,
        "rotate_packets = 15\nidle_timeout = \"1h\"",
    );
    assert_eq!(session_files(&dir, 7).len(), 6);
    (dir, h0)
}

/// An S3 server (in a network namespace of the test's own) and a local
/// [`store_of_8_hours`], not uploaded yet.
fn hours_in_s3() -> (Moto, tempfile::TempDir, PathBuf, u64) {
    let moto = s3_server();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, h0) = store_of_8_hours(tmp.path());
    (moto, tmp, dir, h0)
}

/// Issue 17 item 2 (S3): listing is pruned by the Hive partitions. Over
/// 8 hours of objects, the window [02:10, 03:20) lists hour 3 (it meets
/// the window), hour 2 (empty) and, stepping back to the first hour
/// that holds a file, hour 1, whose file covers 02:10: 2 files
/// considered of 6, 2 opened; the records are those of the window, as
/// the local directory gives them. The endpoint comes from `--config`.
#[test]
#[ignore = "needs root: runs in a network namespace of its own (unshare -n)"]
fn extract_s3_lists_only_the_hour_partitions_a_window_meets() {
    let (moto, tmp, dir, h0) = hours_in_s3();
    let ep = moto.endpoint();
    upload_dir(&ep, &dir, "hours", "i-0123456789abcdef0");
    let min = 60_000_000_000;
    let (from, to) = (h0 + 130 * min, h0 + 200 * min);
    let config = tmp.path().join("extract.toml");
    std::fs::write(
        &config,
        format!("[output.s3]\nbucket = \"unused\"\nregion = \"us-east-1\"\nendpoint = \"{ep}\"\n"),
    )
    .unwrap();
    let args = ["--stats", "--from", &rfc3339(from), "--to", &rfc3339(to)];
    let out = tmp.path().join("s3.pcap");
    let cfg = ["--config", config.to_str().unwrap(), "s3://caps/hours"];
    let (code, err) = extract_s3(&[&args[..], &cfg[..]].concat(), &out, None);
    assert_eq!(code, 0, "{err}");
    eprint!("{err}");
    assert!(
        err.contains(" 2 files considered, 2 chosen by time, 2 opened"),
        "{err}"
    );
    let local = tmp.path().join("local.pcap");
    let (code, lerr) = extract(&[&args[..], &[dir.to_str().unwrap()]].concat(), &local);
    assert_eq!(code, 0, "{lerr}");
    assert!(
        lerr.contains(" 6 files considered, 2 chosen by time, 2 opened"),
        "{lerr}"
    );
    let got = tshark_frames(&out);
    // Records 22 (02:12:30) to 33 (03:18:30).
    assert_eq!(got.len(), 12);
    assert_eq!(got, tshark_frames(&local));
    let bytes = |e: &str| -> u64 {
        e.split(", ")
            .find_map(|p| p.strip_suffix(" bytes read"))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(bytes(&err), bytes(&lerr));
}

/// The frames of `per_file` (each file's), all but the files `cut` names
/// (index, frames kept).
fn kept(per_file: &[Vec<FrameRow>], cut: &[(usize, usize)]) -> Vec<FrameRow> {
    per_file
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            let n = cut.iter().find(|c| c.0 == i).map_or(f.len(), |c| c.1);
            f[..n].to_vec()
        })
        .collect()
}

/// Lines of extract's stderr that report an input.
fn reported(err: &str) -> usize {
    err.lines().filter(|l| l.starts_with("mirrorcap: ")).count()
}

/// Issue 17 item 4 (S3): an object whose body is cut inside a record is
/// reported by its `s3://` name and the byte offset, every other record
/// is still extracted, and the exit code is 1.
#[test]
#[ignore = "needs root: runs in a network namespace of its own (unshare -n)"]
fn extract_s3_reports_a_cut_object_by_key_and_offset() {
    let (moto, tmp, dir, _) = hours_in_s3();
    let ep = moto.endpoint();
    let files = session_files(&dir, 7);
    let per_file: Vec<Vec<FrameRow>> = files.iter().map(|f| tshark_frames(f)).collect();
    // File 2 cut inside its 5th record.
    let b = std::fs::read(&files[2]).unwrap();
    let (at, _) = pcap_records(&b)[4];
    std::fs::write(&files[2], &b[..at + 16 + 5]).unwrap();
    let uploaded = upload_dir(&ep, &dir, "cut", "target-a");
    let key = &uploaded.iter().find(|(f, _)| *f == files[2]).unwrap().1;
    let out = tmp.path().join("s3.pcap");
    let (code, err) = extract_s3(&["s3://caps/cut"], &out, Some(&ep));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "mirrorcap: s3://caps/{key}: truncated at byte {}:",
            at + 16
        )),
        "{err}"
    );
    assert_eq!(reported(&err), 1, "{err}");
    assert_eq!(tshark_frames(&out), kept(&per_file, &[(2, 4)]));
}

/// Issue 17 item 4 (S3): an object deleted after it was listed (its `GET`
/// answers 404) and one whose download fails mid-read (the connection
/// closed after part of the body, and asking again fails too) are
/// reported by their `s3://` names and byte offsets (0; the record the
/// body stopped in), the records before and every other object are
/// extracted, and the exit code is 1. A download cut, whose ranged `GET`s
/// from object_store's retry fail too but whose `GET` from the byte
/// reached on the same ETag (mirrorcap's) succeeds, is read whole,
/// unreported.
#[test]
#[ignore = "needs root: runs in a network namespace of its own (unshare -n)"]
fn extract_s3_reports_a_vanished_object_and_a_download_cut_mid_read() {
    let (moto, tmp, dir, _) = hours_in_s3();
    let files = session_files(&dir, 7);
    let per_file: Vec<Vec<FrameRow>> = files.iter().map(|f| tshark_frames(f)).collect();
    let uploaded = upload_dir(&moto.endpoint(), &dir, "spoil", "target-a");
    let key = |i: usize| {
        uploaded
            .iter()
            .find(|(f, _)| *f == files[i])
            .unwrap()
            .1
            .clone()
    };
    let name = |i: usize| files[i].file_name().unwrap().to_str().unwrap().to_string();
    // File 3's download stops 10 bytes into its 7th record's header.
    let (at, _) = pcap_records(&std::fs::read(&files[3]).unwrap())[6];
    let proxy = spoiling_proxy(moto.port, &name(1), &name(3), &name(4), at + 10);
    let out = tmp.path().join("s3.pcap");
    let ep = format!("http://127.0.0.1:{proxy}");
    let (code, err) = extract_s3(&["s3://caps/spoil"], &out, Some(&ep));
    eprint!("{err}");
    assert_eq!(code, 1, "{err}");
    let line = |k: String| {
        err.lines()
            .find(|l| l.starts_with(&format!("mirrorcap: s3://caps/{k}: cannot read: ")))
            .unwrap_or_else(|| panic!("no line for {k}: {err}"))
            .to_string()
    };
    assert!(line(key(1)).ends_with("(at byte 0)"), "{err}");
    assert!(line(key(3)).ends_with(&format!("(at byte {at})")), "{err}");
    assert_eq!(reported(&err), 2, "{err}");
    assert_eq!(tshark_frames(&out), kept(&per_file, &[(1, 0), (3, 6)]));
}
