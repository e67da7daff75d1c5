//! Helpers shared by the integration tests: the built binary, the real
//! tshark/capinfos (required: the README's test command installs them), and
//! builders for VXLAN datagrams and pcap files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use md5::{Digest, Md5};

pub mod s3;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mirrorcap")
}

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Files of a testdata folder, sorted.
pub fn testdata_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(testdata(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Runs a Wireshark tool; panics (never skips) when it is missing.
pub fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install it (Debian/Ubuntu: apt-get install -y tshark), or run ./scripts/test which does")
    })
}

/// stderr without tshark's warning about running as root.
pub fn clean_stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("Running as user \"root\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tshark ARGS`, asserting success and an empty stderr (no warning).
pub fn tshark(args: &[&str]) -> String {
    let out = tool("tshark", args);
    let err = clean_stderr(&out);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "tshark {args:?}: {err}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `capinfos` must read the file with no error or warning.
pub fn capinfos_ok(file: &Path) -> String {
    let f = file.to_str().unwrap();
    let out = tool("capinfos", &["-c", "-M", f]);
    let err = clean_stderr(&out);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "capinfos {f}: {err}"
    );
    let so = String::from_utf8(out.stdout).unwrap();
    assert!(!so.to_lowercase().contains("warning"), "capinfos {f}: {so}");
    so
}

/// One frame as tshark sees it: (epoch time with 9 decimals, frame.len,
/// frame.cap_len, md5 of the captured bytes).
pub type FrameRow = (String, u64, u64, String);

/// Every frame of a capture file, in order, read by tshark.
pub fn tshark_frames(file: &Path) -> Vec<FrameRow> {
    tshark_frames_filtered(file, "frame")
}

/// The frames of a capture file that the display filter `expr` selects
/// (IP reassembly off, so a fragment stands alone as mirrorcap sees it).
pub fn tshark_frames_filtered(file: &Path, expr: &str) -> Vec<FrameRow> {
    let f = file.to_str().unwrap();
    let text = tshark(&[
        "-r",
        f,
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-Y",
        expr,
        "-o",
        "frame.generate_md5_hash:TRUE",
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.len",
        "-e",
        "frame.cap_len",
        "-e",
        "frame.md5_hash",
    ]);
    text.lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 4, "{l}");
            (
                norm_time(c[0]),
                c[1].parse().unwrap(),
                c[2].parse().unwrap(),
                c[3].to_string(),
            )
        })
        .collect()
}

/// tshark prints epoch times with 9 decimals; make sure of it.
pub fn norm_time(t: &str) -> String {
    let (s, f) = t.split_once('.').unwrap_or((t, ""));
    format!("{s}.{f:0<9}")
}

pub fn md5_hex(b: &[u8]) -> String {
    let d = Md5::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Every `*.pcap`/`*.pcapng` under `dir`, sorted by path.
pub fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The session of an output file under the default template:
/// `DIR/<vni>/<source>/<file>`.
pub fn session_of(dir: &Path, file: &Path) -> (u32, String) {
    let rel = file.strip_prefix(dir).unwrap();
    let parts: Vec<_> = rel
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    assert_eq!(parts.len(), 3, "{rel:?}");
    (parts[0].parse().unwrap(), parts[1].clone())
}

/// Output frames per session (vni, source as spelled in the path), files in
/// name order (start time, then sequence number).
pub fn output_by_session(dir: &Path) -> BTreeMap<(u32, String), Vec<FrameRow>> {
    let mut m: BTreeMap<(u32, String), Vec<FrameRow>> = BTreeMap::new();
    for f in output_files(dir) {
        let name = f.to_str().unwrap();
        assert!(
            name.ends_with(".pcap") || name.ends_with(".pcapng"),
            "unexpected file {name}"
        );
        capinfos_ok(&f);
        m.entry(session_of(dir, &f))
            .or_default()
            .extend(tshark_frames(&f));
    }
    m
}

/// Runs `mirrorcap ARGS`, returning (exit code, stdout, stderr).
pub fn mirrorcap(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A VXLAN header for `vni` with the I flag.
pub fn vxlan_header(vni: u32) -> [u8; 8] {
    [
        0x08,
        0,
        0,
        0,
        (vni >> 16) as u8,
        (vni >> 8) as u8,
        vni as u8,
        0,
    ]
}

/// A VXLAN datagram: the header for `vni`, then `frame`.
pub fn datagram(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut d = vxlan_header(vni).to_vec();
    d.extend_from_slice(frame);
    d
}

/// An Ethernet/IPv4/UDP frame of `len` bytes (at least 42) whose payload
/// starts with `seq`.
pub fn inner_frame(seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(50);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    let udp_len = ip_len - 20;
    f.extend_from_slice(&[
        0x9c,
        0x40,
        0x00,
        0x35,
        (udp_len >> 8) as u8,
        udp_len as u8,
        0,
        0,
    ]);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() % 251) as u8);
    }
    f
}

/// Outer Ethernet + IPv4/IPv6 + UDP headers around `payload`, as a mirror
/// target's NIC would capture them.
pub fn outer_packet(
    src: IpAddr,
    dst_port: u16,
    payload: &[u8],
    wire_payload_len: usize,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 70);
    let udp_len = (8 + wire_payload_len) as u16;
    match src {
        IpAddr::V4(s) => {
            p.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0x02, 0x0a, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
            let tot = 20 + udp_len;
            p.extend_from_slice(&[
                0x45,
                0,
                (tot >> 8) as u8,
                tot as u8,
                0,
                0,
                0,
                0,
                255,
                17,
                0,
                0,
            ]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&[172, 31, 17, 188]);
        }
        IpAddr::V6(s) => {
            p.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0x02, 0x0a, 0, 0, 0, 0, 0x01, 0x86, 0xdd]);
            p.extend_from_slice(&[0x60, 0, 0, 0, (udp_len >> 8) as u8, udp_len as u8, 17, 255]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(
                &"2001:db8::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
        }
    }
    p.extend_from_slice(&[0xff, 0x00, (dst_port >> 8) as u8, dst_port as u8]);
    p.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Bytes of outer headers `outer_packet` adds.
pub fn outer_len(src: IpAddr) -> usize {
    if src.is_ipv4() {
        14 + 20 + 8
    } else {
        14 + 40 + 8
    }
}

/// A nanosecond pcap of (timestamp ns, bytes, original length) records.
pub fn write_pcap(path: &Path, linktype: u32, recs: &[(u64, Vec<u8>, u32)]) {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&262_144u32.to_le_bytes());
    v.extend_from_slice(&linktype.to_le_bytes());
    for (ts, data, orig) in recs {
        v.extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        v.extend_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&orig.to_le_bytes());
        v.extend_from_slice(data);
    }
    std::fs::write(path, v).unwrap();
}

/// The frames of an input capture as tshark decodes their VXLAN on `port`:
/// `tshark ARGS -T fields -e FIELD...`: one tab-separated line per frame.
pub fn tshark_fields(args: &[&str], fields: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["-T", "fields"]);
    for f in fields {
        all.extend_from_slice(&["-e", f]);
    }
    tshark(&all)
}

/// per (VNI, outer source as spelled in output paths), in order, rows of
/// (time, inner frame length on the wire, captured length, md5).
pub fn tshark_vxlan(file: &Path, port: u16) -> BTreeMap<(u32, String), Vec<FrameRow>> {
    tshark_vxlan_filtered(file, port, "frame")
}

/// Like [`tshark_vxlan`], only the frames the display filter `expr` selects.
pub fn tshark_vxlan_filtered(
    file: &Path,
    port: u16,
    expr: &str,
) -> BTreeMap<(u32, String), Vec<FrameRow>> {
    let f = file.to_str().unwrap();
    let decode = format!("udp.port=={port},vxlan");
    let filter = format!("udp.dstport == {port} && vxlan && ({expr})");
    let text = tshark_fields(
        &["-r", f, "-d", &decode, "-Y", &filter, "-E", "occurrence=f"],
        &[
            "frame.time_epoch",
            "vxlan.vni",
            "ip.src",
            "ipv6.src",
            "udp.payload",
            "frame.len",
            "frame.cap_len",
            "frame.protocols",
        ],
    );
    let mut m: BTreeMap<(u32, String), Vec<FrameRow>> = BTreeMap::new();
    for l in text.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        // The outer source: whichever IP layer comes first.
        let outer_v6 = c[7].split(':').find(|p| *p == "ip" || *p == "ipv6") == Some("ipv6");
        let src = if outer_v6 { c[3] } else { c[2] };
        let payload = unhex(c[4]);
        let inner = &payload[8..];
        // Bytes the record lost to the capture's snap length.
        let lost: u64 = c[5].parse::<u64>().unwrap() - c[6].parse::<u64>().unwrap();
        let key = (c[1].parse().unwrap(), src.replace(':', "_"));
        m.entry(key).or_default().push((
            norm_time(c[0]),
            inner.len() as u64 + lost,
            inner.len() as u64,
            md5_hex(inner),
        ));
    }
    m
}

/// A running `mirrorcap run`, its stderr collected as it comes.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts `mirrorcap run --listen 127.0.0.1:0 ARGS` and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Writes `config` to `cfg`, then starts with `--dir DIR --config CFG`.
    pub fn start_with_config(dir: &Path, cfg: &Path, config: &str) -> Daemon {
        std::fs::write(cfg, config).unwrap();
        Daemon::start(&[
            "--dir",
            dir.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
    }

    /// Like `start`, with environment variables set for the daemon.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--listen", "127.0.0.1:0"]).args(args);
        cmd.envs(env.iter().copied());
        Daemon::start_command(cmd)
    }

    /// Starts `cmd` (a `mirrorcap run` the caller has set up, e.g. with
    /// limits set in `pre_exec`) and waits for its `listening on` line.
    pub fn start_command(mut cmd: Command) -> Daemon {
        use std::io::BufRead;
        cmd.stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                // Kept before the address is announced, so a test that
                // reads stderr right after `start` sees this line.
                {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
                if let Some(i) = line.find("listening on ") {
                    let a = line[i + 13..].split([',', ' ']).next().unwrap().to_string();
                    let _ = tx.send(a);
                }
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no `listening on` line: {}", stderr.lock().unwrap()));
        Daemon {
            child,
            addr: addr.parse().unwrap(),
            stderr,
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn stderr_now(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, then wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait; returns (exit code, seconds it took, stderr).
    pub fn stop(mut self) -> (i32, f64, String) {
        let t = std::time::Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed().as_secs() > 20 {
                let _ = self.child.kill();
                panic!("daemon did not exit on SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let secs = t.elapsed().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), secs, err)
    }
}

/// A daemon a test did not stop (it failed before its `stop`) is killed,
/// so failing tests leave no process behind.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A number from the summary line that ends in `suffix`, e.g.
/// `summary_count(err, "frames written")`.
pub fn summary_count(stderr: &str, suffix: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_suffix(suffix)
                .and_then(|n| n.trim().parse().ok())
                .or_else(|| {
                    l.contains(suffix)
                        .then(|| l.split_whitespace().next()?.parse().ok())
                        .flatten()
                })
        })
        .unwrap_or_else(|| panic!("no `{suffix}` in summary: {stderr}"))
}

/// Wraps every frame of an Ethernet capture in VXLAN (`vni`, outer source
/// `src`), keeping timestamps and original lengths; writes `out`.
pub fn wrap_ethernet_capture(input: &Path, out: &Path, vni: u32, src: IpAddr) {
    let f = std::fs::File::open(input).unwrap();
    let mut r = mirrorcap::capture::CaptureReader::new(f, "x").unwrap();
    let mut recs = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        assert_eq!(rec.linktype, 1);
        let mut payload = vxlan_header(vni).to_vec();
        payload.extend_from_slice(rec.data);
        let wire_payload = 8 + rec.orig_len as usize;
        let pkt = outer_packet(src, 4789, &payload, wire_payload);
        let orig = (outer_len(src) + wire_payload) as u32;
        recs.push((rec.ts_ns, pkt, orig));
    }
    write_pcap(out, 1, &recs);
}

/// `mirrorcap replay --config CFG --dir DIR INPUT` with the config text
/// given, into a fresh temp dir, asserting success; returns the dir's guard,
/// the output dir and stderr.
pub fn replay_to_dir(config: &str, input: &Path) -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let err = replay_into_dir(config, input, &dir);
    (tmp, dir, err)
}

/// `mirrorcap replay --config CFG --dir DIR INPUT` with the config text
/// given (written beside `dir`), asserting success; returns stderr. `dir`
/// may hold files of earlier replays.
pub fn replay_into_dir(config: &str, input: &Path, dir: &Path) -> String {
    let cfg = dir.with_extension("toml");
    std::fs::write(&cfg, config).unwrap();
    let (code, _, err) = mirrorcap(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{config}\n{err}");
    err
}

/// Like [`replay_to_dir`]; returns the output frames of every session,
/// concatenated in session order, and stderr.
pub fn replay_config(config: &str, input: &Path) -> (Vec<FrameRow>, String) {
    let (_tmp, dir, err) = replay_to_dir(config, input);
    (
        output_by_session(&dir).into_values().flatten().collect(),
        err,
    )
}

/// Every `*.log` flow file under `dir`, parsed with its own header.
pub fn flow_records(dir: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut files: Vec<PathBuf> = output_files(&dir.join("flows"))
        .into_iter()
        .filter(|f| f.to_str().unwrap().ends_with(".log"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no flow files under {dir:?}");
    let mut header = Vec::new();
    let mut recs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut lines = text.lines();
        header = lines.next().unwrap().split(' ').map(String::from).collect();
        for l in lines {
            let v: Vec<&str> = l.split(' ').collect();
            assert_eq!(v.len(), header.len(), "{f:?}: {l}");
            recs.push(
                header
                    .iter()
                    .cloned()
                    .zip(v.iter().map(|s| s.to_string()))
                    .collect(),
            );
        }
    }
    (header, recs)
}

/// Every `*.jsonl` flow file under `dir`, one JSON object per record.
pub fn flow_json(dir: &Path) -> Vec<serde_json::Value> {
    output_files(&dir.join("flows"))
        .into_iter()
        .filter(|f| f.to_str().unwrap().ends_with(".jsonl"))
        .flat_map(|f| {
            std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{f:?}: {l}: {e}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The address `/metrics` is served on, from the daemon's log line.
pub fn metrics_addr(d: &Daemon) -> String {
    for _ in 0..100 {
        let err = d.stderr_now();
        if let Some(l) = err.lines().find(|l| l.contains("metrics on http://")) {
            let rest = &l[l.find("http://").unwrap() + 7..];
            return rest.split('/').next().unwrap().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no `metrics on` line: {}", d.stderr_now());
}

/// A GET with curl (a real HTTP client); returns (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is needed for the metrics tests (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
