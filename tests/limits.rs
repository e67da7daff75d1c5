//! Limits under a flood (issue 12, items 2, 6 and 10): the daemon, live on
//! loopback, fed by one allowed source sending thousands of one-packet
//! sessions with random VNIs (as a spoofer would); what a real session
//! gets afterwards, and how big `/metrics` and the summary grow.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

/// A small deterministic generator of VNIs (xorshift), never `avoid`.
struct Vnis {
    state: u64,
    avoid: u32,
}

impl Iterator for Vnis {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        loop {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let vni = (self.state >> 20) as u32 & 0xff_ffff;
            if vni != self.avoid {
                return Some(vni);
            }
        }
    }
}

/// Sends one datagram per VNI, paced (about 100,000 per second at most).
fn flood(tx: &UdpSocket, to: std::net::SocketAddr, vnis: &mut Vnis, n: usize) {
    for i in 0..n {
        let vni = vnis.next().unwrap();
        tx.send_to(&datagram(vni, &inner_frame(i as u64, 100)), to)
            .unwrap();
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Issue 12 item 2 (sessions are never freed): a flood of 10,000 one-packet
/// sessions with random VNIs from an allowed source fills `max_sessions`
/// and `max_open_files`; a real session from the same source afterwards,
/// while the flood goes on (slower), still gets every one of its frames
/// written:
/// the least recently active sessions are evicted (and counted) instead of
/// the new one being refused.
#[test]
fn session_flood_does_not_lock_out_a_real_session() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(
        &dir,
        &cfg,
        "allow_sources = [\"127.0.0.2/32\"]\nmax_sessions = 1000\nmax_open_files = 100\n",
    );
    const REAL_VNI: u32 = 4242;
    let tx = UdpSocket::bind("127.0.0.2:0").unwrap();
    let mut vnis = Vnis {
        state: 0x9e37_79b9_7f4a_7c15,
        avoid: REAL_VNI,
    };
    flood(&tx, d.addr, &mut vnis, 10_000);
    // The flood's sessions are now more than a second old: the least
    // recently active of them may be evicted.
    std::thread::sleep(Duration::from_millis(1500));
    let mut want = Vec::new();
    for seq in 0..300u64 {
        let frame = inner_frame(1_000_000 + seq, 200);
        tx.send_to(&datagram(REAL_VNI, &frame), d.addr).unwrap();
        want.push(md5_hex(&frame));
        // The flood goes on meanwhile, slower: a new session every ten
        // real frames (each evicts an old one).
        if seq % 10 == 9 {
            flood(&tx, d.addr, &mut vnis, 1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary_count(&err, "datagrams dropped by kernel"),
        0,
        "{err}"
    );
    let files: Vec<_> = output_files(&dir)
        .into_iter()
        .filter(|f| session_of(&dir, f).0 == REAL_VNI)
        .collect();
    assert!(!files.is_empty(), "no file for the real session:\n{err}");
    let got: Vec<String> = files
        .iter()
        .flat_map(|f| tshark_frames(f))
        .map(|r| r.3)
        .collect();
    assert_eq!(got.len(), want.len(), "frames of the real session:\n{err}");
    assert!(
        got == want,
        "the real session's frames differ or are out of order"
    );
    assert!(summary_count(&err, "sessions evicted") > 0, "{err}");
}

/// Issue 12 item 6 (unbounded output per session): with 1,000 sessions,
/// `/metrics` has per-session series for at most `metrics_max_sessions`
/// (default 100) of them plus one `vni="other"` series that sums the rest,
/// so the sums still add up; the shutdown summary lists the top 100
/// sessions by packets and says "… and 900 more".
#[test]
fn metrics_and_summary_stay_bounded_with_many_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(&dir, &cfg, "metrics_listen = \"127.0.0.1:0\"\n");
    let addr = metrics_addr(&d);
    let tx = UdpSocket::bind("127.0.0.2:0").unwrap();
    // 1,000 sessions; VNI 1 gets 5 packets, the others 1.
    for vni in 1..=1000u32 {
        let n = if vni == 1 { 5 } else { 1 };
        for seq in 0..n {
            tx.send_to(&datagram(vni, &inner_frame(seq, 100)), d.addr)
                .unwrap();
        }
        if vni % 250 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = http_get(&format!("http://{addr}/metrics"));
    assert_eq!(code, 200, "{body}");
    let series: Vec<(&str, u64)> = body
        .lines()
        .filter(|l| l.starts_with("mirrorcap_session_packets_total{"))
        .map(|l| {
            let (s, v) = l.rsplit_once(' ').unwrap();
            (s, v.parse().unwrap())
        })
        .collect();
    assert!(
        series.len() <= 101,
        "{} per-session series ({} bytes of metrics)",
        series.len(),
        body.len()
    );
    assert_eq!(series.iter().map(|s| s.1).sum::<u64>(), 1004, "{body}");
    assert!(
        series
            .iter()
            .any(|s| s.0.contains("vni=\"other\"") && s.1 >= 900),
        "{body}"
    );
    assert!(body.len() < 64 * 1024, "{} bytes of metrics", body.len());
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    let listed = err.lines().filter(|l| l.trim().starts_with("vni ")).count();
    assert_eq!(listed, 100, "{err}");
    assert!(err.contains("… and 900 more sessions"), "{err}");
    // The busiest session comes first.
    let first = err.lines().find(|l| l.trim().starts_with("vni ")).unwrap();
    assert!(first.contains("vni 1 source 127.0.0.2: 5 packets"), "{err}");
}

/// Issue 12 item 10 ("1 files" for a session that wrote none): a session
/// whose file cannot be created (`DIR/7` is a regular file, so
/// `DIR/7/127.0.0.2/` cannot be made) is listed with 0 files; a session
/// that wrote one, with 1.
#[test]
fn summary_counts_no_file_for_a_session_that_wrote_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("7"), b"not a directory").unwrap();
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(&dir, &cfg, "");
    let tx = UdpSocket::bind("127.0.0.2:0").unwrap();
    for seq in 0..5u64 {
        tx.send_to(&datagram(7, &inner_frame(seq, 100)), d.addr)
            .unwrap();
        tx.send_to(&datagram(8, &inner_frame(seq, 100)), d.addr)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, err) = d.stop();
    let line = |vni: u32| {
        err.lines()
            .find(|l| l.trim().starts_with(&format!("vni {vni} source")))
            .unwrap_or_else(|| panic!("no line for vni {vni}: {err}"))
            .to_string()
    };
    assert!(line(7).ends_with(" 0 files"), "{err}");
    assert!(line(8).ends_with(" 1 files"), "{err}");
    let written: u64 = err
        .lines()
        .find_map(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" files written")?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no `files written` in: {err}"));
    assert_eq!(written, 1, "{err}");
}

/// Issue 12 item 2 (retention keyed by session slot): `max_files` counts
/// the files of each session, (VNI, source), whichever worker has it and
/// whichever slot of its table. Two sessions on two workers (each the
/// first of its worker's table) keep `max_files` files each.
#[test]
fn max_files_is_per_session_across_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(
        &dir,
        &cfg,
        "workers = 2\n[output]\nrotate_packets = 1\nmax_files = 2\n",
    );
    let sources = ["127.0.0.2", "127.0.0.3"];
    let socks: Vec<UdpSocket> = sources
        .iter()
        .map(|s| UdpSocket::bind((*s, 0)).unwrap())
        .collect();
    for seq in 0..6u64 {
        for s in &socks {
            s.send_to(&datagram(5, &inner_frame(seq, 100)), d.addr)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    let on = |w: &str| {
        err.lines()
            .filter(|l| l.contains("new mirror session") && l.contains(w))
            .count()
    };
    assert!(
        on("worker=\"rx0\"") == 1 && on("worker=\"rx1\"") == 1,
        "the two sources should land on different workers:\n{err}"
    );
    let files = output_files(&dir);
    for src in sources {
        let n = files
            .iter()
            .filter(|f| session_of(&dir, f).1 == src)
            .count();
        assert_eq!(n, 2, "files of 5/{src}: {files:?}\n{err}");
    }
    assert!(err.contains("8 files deleted by retention"), "{err}");
}
