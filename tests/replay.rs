//! `mirrorcap replay` against tshark's own decode of the same captures.

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::*;

fn replay(dir: &Path, extra: &[&str], input: &Path) -> (i32, String) {
    let mut args = vec!["replay", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(input.to_str().unwrap());
    let (code, _, err) = mirrorcap(&args);
    (code, err)
}

/// Every VXLAN fixture: the inner frames per session equal, byte for byte,
/// in order and with the same timestamps, what tshark's VXLAN dissector
/// shows for UDP 4789.
#[test]
fn every_vxlan_fixture_matches_tshark() {
    let mut nonempty = 0;
    for input in testdata_files("vxlan") {
        let tmp = tempfile::tempdir().unwrap();
        let (code, err) = replay(tmp.path(), &[], &input);
        assert_eq!(code, 0, "{input:?}: {err}");
        let want = tshark_vxlan(&input, 4789);
        let got = output_by_session(tmp.path());
        assert_eq!(got, want, "{input:?}");
        if !want.is_empty() {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 5, "fixtures with VXLAN on 4789: {nonempty}");
}

/// The port-8472 capture: ignored on the default ports, decoded when
/// `vxlan_ports` names 8472, matching tshark told to decode 8472 as VXLAN.
#[test]
fn vxlan_ports_selects_the_port() {
    let input = testdata("vxlan/tcpdump-vxlan_port_8472.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = replay(tmp.path(), &[], &input);
    assert_eq!(code, 0);
    assert!(output_files(tmp.path()).is_empty());
    assert!(err.contains("10 skipped not_vxlan_port"), "{err}");

    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "vxlan_ports = [4789, 8472]\n").unwrap();
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, &["--config", cfg.to_str().unwrap()], &input);
    assert_eq!(code, 0, "{err}");
    let want = tshark_vxlan(&input, 8472);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 10);
    assert_eq!(output_by_session(&out), want);
}

/// The same capture converted to pcapng by editcap, and fed on stdin,
/// gives byte-identical output files.
#[test]
fn pcapng_and_stdin_inputs_give_identical_files() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let (code, err) = replay(&a, &[], &input);
    assert_eq!(code, 0, "{err}");

    let ng = tmp.path().join("in.pcapng");
    let out = tool(
        "editcap",
        &[
            "-F",
            "pcapng",
            input.to_str().unwrap(),
            ng.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", clean_stderr(&out));
    let b = tmp.path().join("b");
    let (code, err) = replay(&b, &[], &ng);
    assert_eq!(code, 0, "{err}");

    let c = tmp.path().join("c");
    let status = std::process::Command::new(bin())
        .args(["replay", "--dir", c.to_str().unwrap(), "-"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(status.status.success());

    let d = tmp.path().join("d");
    let (code, _) = replay(&d, &[], &input);
    assert_eq!(code, 0);

    let files = |dir: &Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        output_files(dir)
            .into_iter()
            .map(|f| {
                (
                    f.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&f).unwrap(),
                )
            })
            .collect()
    };
    let fa = files(&a);
    assert_eq!(fa.len(), 1);
    assert_eq!(fa, files(&b), "pcapng input differs");
    assert_eq!(fa, files(&c), "stdin input differs");
    assert_eq!(fa, files(&d), "a second run differs");
}

/// Every Ethernet fixture (pcap µs and ns, pcapng, VLAN/QinQ, IPv6,
/// fragments, frames below 60 bytes, snaplen-truncated records) wrapped in
/// VXLAN by the test, over IPv4 and IPv6 outer headers, comes back as the
/// original frames with the original timestamps and lengths.
#[test]
fn ethernet_fixtures_round_trip_through_vxlan() {
    let files = testdata_files("ethernet");
    assert!(files.len() >= 7);
    for (i, input) in files.iter().enumerate() {
        let original = tshark_frames(input);
        let src: IpAddr = if i % 2 == 0 {
            "172.31.0.238".parse().unwrap()
        } else {
            "2001:db8::b".parse().unwrap()
        };
        let vni = 1000 + i as u32;
        // Read with the library's reader; tshark checks the frames below.
        let tmp = tempfile::tempdir().unwrap();
        let wrapped = tmp.path().join("wrapped.pcap");
        wrap_ethernet_capture(input, &wrapped, vni, src);
        let out = tmp.path().join("out");
        let (code, err) = replay(&out, &[], &wrapped);
        assert_eq!(code, 0, "{input:?}: {err}");
        let got = output_by_session(&out);
        let key = (vni, src.to_string().replace(':', "_"));
        assert_eq!(got.len(), 1, "{input:?}: {got:?}");
        assert_eq!(got[&key], original, "{input:?}");
    }
}

/// Outer link types other than Ethernet: Linux cooked v2 (as the SLL2
/// fixture's header) and raw IP, each giving the same frames as Ethernet.
#[test]
fn cooked_and_raw_outer_link_types() {
    let input = testdata("vxlan/tcpdump-vxlan.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let eth = tmp.path().join("eth");
    assert_eq!(replay(&eth, &[], &input).0, 0);
    let want = output_by_session(&eth);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 10);

    // The SLL2 header of the cooked fixture's first record, re-used with
    // protocol IPv4.
    let f = std::fs::File::open(testdata("cooked/zeek-linux_dlt_sll2.pcap")).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "sll2").unwrap();
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(rec.linktype, 276);
    let mut sll2 = rec.data[..20].to_vec();
    sll2[0..2].copy_from_slice(&[0x08, 0x00]);

    let f = std::fs::File::open(&input).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "eth").unwrap();
    let (mut cooked, mut raw) = (Vec::new(), Vec::new());
    while let Some(rec) = r.next_record().unwrap() {
        let ip = &rec.data[14..];
        let mut c = sll2.clone();
        c.extend_from_slice(ip);
        cooked.push((rec.ts_ns, c, rec.orig_len + 6));
        raw.push((rec.ts_ns, ip.to_vec(), rec.orig_len - 14));
    }
    for (name, linktype, recs) in [("sll2", 276, cooked), ("raw", 101, raw)] {
        let file = tmp.path().join(format!("{name}.pcap"));
        write_pcap(&file, linktype, &recs);
        let out = tmp.path().join(name);
        let (code, err) = replay(&out, &[], &file);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(output_by_session(&out), want, "{name}");
    }
}

/// A capture cut inside a record: every whole record before the cut is
/// written to complete files, the error names the file, exit code 1.
#[test]
fn truncated_capture_keeps_what_was_read() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let bytes = std::fs::read(&input).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, &[], &cut);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cut.pcap: truncated at byte"), "{err}");
    let got = output_by_session(&out);
    let n: usize = got.values().map(Vec::len).sum();
    let whole = tshark_vxlan(&input, 4789);
    let first: Vec<_> = whole.values().next().unwrap()[..n].to_vec();
    assert!(n > 10, "only {n} frames");
    assert_eq!(got.values().next().unwrap(), &first);
    assert!(
        output_files(&out)
            .iter()
            .all(|f| !f.to_str().unwrap().ends_with(".part"))
    );

    // Empty and non-capture inputs: a clear error, no panic.
    let empty = tmp.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let (code, err) = replay(&out, &[], &empty);
    assert_eq!(code, 1);
    assert!(
        err.contains("empty.pcap: not a pcap or pcapng file"),
        "{err}"
    );
    let (code, err) = replay(&out, &[], Path::new("/nonexistent/x.pcap"));
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/x.pcap: cannot open"), "{err}");
}

/// `snaplen` cuts frames and keeps their original length; pcapng output
/// names the session in its interface.
#[test]
fn snaplen_and_pcapng_output() {
    let input = testdata("vxlan/suricata-verify-vxlan-decoder-03-vxlan.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[output]\nsnaplen = 64\nformat = \"pcapng\"\n").unwrap();
    let out = tmp.path().join("out");
    let (code, err) = replay(&out, &["--config", cfg.to_str().unwrap()], &input);
    assert_eq!(code, 0, "{err}");
    let files = output_files(&out);
    assert_eq!(files.len(), 1);
    assert!(files[0].to_str().unwrap().ends_with(".pcapng"));
    capinfos_ok(&files[0]);
    let want = tshark_vxlan(&input, 4789);
    let want = want.values().next().unwrap();
    let rows = tshark(&[
        "-r",
        files[0].to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.len",
        "-e",
        "frame.cap_len",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.interface_description",
    ]);
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), want.len());
    for (row, w) in rows.iter().zip(want) {
        let c: Vec<&str> = row.split('\t').collect();
        assert_eq!(norm_time(c[0]), w.0);
        assert_eq!(c[1].parse::<u64>().unwrap(), w.1);
        assert_eq!(c[2].parse::<u64>().unwrap(), w.2.min(64));
        assert_eq!(c[3], "vxlan-5569041-172.31.0.238");
        assert!(c[4].contains("VNI 5569041 from 172.31.0.238"), "{}", c[4]);
    }
}

/// Issue 12, item 10: a capture file that is cut while replay reads it
/// (mapped into memory) is an error naming the file and the offset, exit
/// 1, never a SIGBUS. The replay is stopped (SIGSTOP) as soon as it has
/// mapped the input, the file is cut to 1000 bytes, then it goes on.
#[test]
fn input_truncated_while_read_is_an_error_not_sigbus() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.pcap");
    let src: IpAddr = "10.0.0.7".parse().unwrap();
    let recs: Vec<(u64, Vec<u8>, u32)> = (0..200_000u64)
        .map(|seq| {
            let d = datagram(5, &inner_frame(seq, 200));
            let p = outer_packet(src, 4789, &d, d.len());
            let len = p.len() as u32;
            (1_700_000_000_000_000_000 + seq * 1_000, p, len)
        })
        .collect();
    write_pcap(&input, 1, &recs);
    let out = tmp.path().join("out");
    let child = std::process::Command::new(bin())
        .args([
            "replay",
            "--dir",
            out.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let maps = format!("/proc/{pid}/maps");
    let name = input.to_str().unwrap().to_string();
    let t = std::time::Instant::now();
    loop {
        let m = std::fs::read_to_string(&maps).unwrap_or_default();
        if m.contains(&name) {
            break;
        }
        assert!(t.elapsed().as_secs() < 10, "the input was never mapped");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let res = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{:?}: {err}", res.status);
    assert!(
        err.contains("big.pcap: truncated while being read"),
        "{err}"
    );
    assert!(err.contains("1000 bytes"), "{err}");
    // What was written is complete.
    for f in output_files(&out) {
        assert!(!f.to_str().unwrap().ends_with(".part"), "{f:?}");
        capinfos_ok(&f);
    }
}
