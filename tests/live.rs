//! The daemon, live on loopback: real UDP datagrams from two source
//! addresses, SIGTERM, then the files checked with tshark and capinfos.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use common::*;

/// 100,000 datagrams over 4 VNIs from 127.0.0.2 and 127.0.0.3: 8 sessions,
/// every frame exactly once, in order, in its session's files.
#[test]
fn live_100k_datagrams_8_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let d = Daemon::start(&["--dir", dir.to_str().unwrap()]);
    let sources = ["127.0.0.2", "127.0.0.3"];
    let socks: Vec<UdpSocket> = sources
        .iter()
        .map(|s| UdpSocket::bind((*s, 0)).unwrap())
        .collect();
    let vnis = [7u32, 100, 5_569_041, 0xff_ffff];
    let mut want: BTreeMap<(u32, String), Vec<String>> = BTreeMap::new();
    const N: u64 = 100_000;
    for seq in 0..N {
        let src = (seq % 2) as usize;
        let vni = vnis[(seq / 2 % 4) as usize];
        let len = 60 + (seq as usize * 37) % 1400;
        let frame = inner_frame(seq, len);
        let dgram = datagram(vni, &frame);
        socks[src].send_to(&dgram, d.addr).unwrap();
        want.entry((vni, sources[src].to_string()))
            .or_default()
            .push(md5_hex(&frame));
        // Bounded pace (about 100k/s at most): the test is about
        // correctness, not speed; the benchmarks measure speed.
        if seq % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, secs, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert!(secs < 2.0, "took {secs:.2}s to stop");
    assert_eq!(
        summary_count(&err, "datagrams dropped by kernel"),
        0,
        "{err}"
    );
    assert_eq!(summary_count(&err, "frames written"), N, "{err}");
    assert!(err.contains("8 sessions"), "{err}");

    let got = output_by_session(&dir);
    assert_eq!(got.len(), 8);
    for (key, frames) in &want {
        let rows = &got[key];
        let md5s: Vec<&String> = rows.iter().map(|r| &r.3).collect();
        assert_eq!(md5s.len(), frames.len(), "{key:?}");
        assert!(
            md5s.iter().zip(frames).all(|(a, b)| *a == b),
            "{key:?}: frames differ"
        );
        // Timestamps are the kernel's receive times: near now, not zero.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let t: f64 = rows[0].0.parse().unwrap();
        assert!((now - t).abs() < 120.0, "timestamp {t} vs now {now}");
    }
}

/// Hostile datagrams never crash the daemon nor lose what was written:
/// empty, 1-byte, 65,507-byte, wrong flags, garbage after a valid header.
#[test]
fn bad_datagrams_are_counted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let d = Daemon::start(&["--dir", dir.to_str().unwrap()]);
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    let good = |seq| datagram(42, &inner_frame(seq, 100));
    s.send_to(&good(1), d.addr).unwrap();
    s.send_to(&[], d.addr).unwrap();
    s.send_to(&[0x08], d.addr).unwrap();
    let mut noflag = good(2);
    noflag[0] = 0x00;
    s.send_to(&noflag, d.addr).unwrap();
    s.send_to(&vxlan_header(42)[..], d.addr).unwrap(); // header, no inner frame
    let mut garbage = vxlan_header(42).to_vec();
    garbage.extend((0..3000u32).map(|i| (i * 7919 % 256) as u8));
    s.send_to(&garbage, d.addr).unwrap();
    let mut huge = vxlan_header(42).to_vec();
    huge.extend(std::iter::repeat_n(0xab, 65_507 - 8));
    s.send_to(&huge, d.addr).unwrap();
    s.send_to(&good(3), d.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_count(&err, "datagrams received"), 8, "{err}");
    assert_eq!(summary_count(&err, "frames written"), 4, "{err}");
    assert_eq!(summary_count(&err, "dropped vxlan_too_short"), 2, "{err}");
    assert_eq!(summary_count(&err, "dropped vxlan_no_i_flag"), 1, "{err}");
    assert_eq!(summary_count(&err, "dropped inner_too_short"), 1, "{err}");
    let got = output_by_session(&dir);
    let rows = &got[&(42, "127.0.0.2".to_string())];
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].3, md5_hex(&inner_frame(1, 100)));
    assert_eq!(rows[1].2, 3000);
    assert_eq!(rows[2].2, 65_499);
    assert_eq!(rows[3].3, md5_hex(&inner_frame(3, 100)));
}

/// An idle session's file is closed and renamed while the daemon runs; the
/// next packet opens a new file.
#[test]
fn idle_session_closes_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(&dir, &cfg, "[output]\nidle_timeout = \"1s\"\n");
    let s = UdpSocket::bind("127.0.0.3:0").unwrap();
    let g = datagram(9, &inner_frame(1, 80));
    s.send_to(&g, d.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let files = output_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_str().unwrap().ends_with(".pcap.part"),
        "{files:?}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let files = output_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_str().unwrap().ends_with("-000000.pcap"),
        "{files:?}"
    );
    assert_eq!(tshark_frames(&files[0]).len(), 1);
    s.send_to(&g, d.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    let files = output_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[1].to_str().unwrap().ends_with("-000001.pcap"),
        "{files:?}"
    );
}

/// `workers = 2`: two sockets in a SO_REUSEPORT group. Each session's
/// datagrams come from several source ports (AWS varies the outer source
/// port per inner flow), yet all of them land in one file, in order.
#[test]
fn workers_keep_each_session_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let cfg = tmp.path().join("c.toml");
    let d = Daemon::start_with_config(&dir, &cfg, "workers = 2\n");
    assert!(d.stderr.lock().unwrap().contains("2 worker(s)"));
    let sources = ["127.0.0.2", "127.0.0.3"];
    let socks: Vec<Vec<UdpSocket>> = sources
        .iter()
        .map(|s| (0..4).map(|_| UdpSocket::bind((*s, 0)).unwrap()).collect())
        .collect();
    let vnis = [11u32, 12, 13, 14];
    let mut want: BTreeMap<(u32, String), Vec<String>> = BTreeMap::new();
    for seq in 0..16_000u64 {
        let src = (seq % 2) as usize;
        let vni = vnis[(seq / 2 % 4) as usize];
        let frame = inner_frame(seq, 100 + (seq as usize % 300));
        let dgram = datagram(vni, &frame);
        socks[src][(seq / 8 % 4) as usize]
            .send_to(&dgram, d.addr)
            .unwrap();
        want.entry((vni, sources[src].to_string()))
            .or_default()
            .push(md5_hex(&frame));
        if seq % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_count(&err, "frames written"), 16_000, "{err}");
    let files = output_files(&dir);
    assert_eq!(files.len(), 8, "one file per session: {files:?}");
    // Both workers got sessions.
    let on = |w: &str| {
        err.lines()
            .filter(|l| l.contains("new mirror session") && l.contains(w))
            .count()
    };
    assert_eq!(on("worker=\"rx0\"") + on("worker=\"rx1\""), 8, "{err}");
    assert!(
        on("worker=\"rx0\"") > 0 && on("worker=\"rx1\"") > 0,
        "{err}"
    );
    let got = output_by_session(&dir);
    for (key, frames) in &want {
        let md5s: Vec<&String> = got[key].iter().map(|r| &r.3).collect();
        assert_eq!(md5s.len(), frames.len(), "{key:?}");
        assert!(
            md5s.iter().zip(frames).all(|(a, b)| *a == b),
            "{key:?}: out of order"
        );
    }
}

/// A flood of bad datagrams gives counters and at most a summary line per
/// 10 s, never a log line per packet.
#[test]
fn bad_datagrams_are_not_logged_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let d = Daemon::start(&["--dir", dir.to_str().unwrap()]);
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    for i in 0..3000u32 {
        s.send_to(&i.to_be_bytes()[..3], d.addr).unwrap();
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary_count(&err, "dropped vxlan_too_short"),
        3000,
        "{err}"
    );
    let lines = err
        .lines()
        .filter(|l| l.contains("vxlan_too_short"))
        .count();
    assert!(lines <= 2, "{lines} lines mention the drop:\n{err}");
}

/// Issue 12, item 7: SIGTERM right after a burst loses nothing silently.
/// 2,000 datagrams are sent as fast as the socket takes them and SIGTERM
/// follows the last send at once: every one of them is either written or
/// counted under a drop reason, and all 2,000 are counted as received
/// (the daemon reads its socket empty before it closes it).
#[test]
fn sigterm_loses_nothing_that_was_queued() {
    for round in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cap");
        let d = Daemon::start(&["--dir", dir.to_str().unwrap()]);
        let tx = UdpSocket::bind("127.0.0.2:0").unwrap();
        const N: u64 = 2_000;
        let dgrams: Vec<Vec<u8>> = (0..N)
            .map(|seq| datagram(9, &inner_frame(seq, 300)))
            .collect();
        for g in &dgrams {
            tx.send_to(g, d.addr).unwrap();
        }
        let (code, _, err) = d.stop();
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            summary_count(&err, "datagrams dropped by kernel"),
            0,
            "round {round}: {err}"
        );
        let received = summary_count(&err, "datagrams received");
        let written = summary_count(&err, "frames written");
        let dropped = summary_count(&err, "datagrams dropped or skipped by mirrorcap");
        assert_eq!(received, N, "round {round}: {err}");
        assert_eq!(written + dropped, received, "round {round}: {err}");
        let got = output_by_session(&dir);
        let n: usize = got.values().map(Vec::len).sum();
        assert_eq!(n as u64, written, "round {round}");
    }
}

/// Hostile review of issue 14, item 13: a second daemon with `workers` > 1
/// on the same port joined the first one's SO_REUSEPORT group silently
/// (and took part of its traffic); it must fail to start instead, naming
/// the address.
#[test]
fn a_second_daemon_on_the_same_port_fails_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "workers = 2\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let run = |dir: &str| {
        std::process::Command::new(bin())
            .args([
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                &listen,
                "--dir",
            ])
            .arg(tmp.path().join(dir))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = run("a");
    std::thread::sleep(Duration::from_millis(500));
    let mut second = run("b");
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = second.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let second = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    let _ = first.kill();
    let _ = first.wait();
    let status = status.unwrap_or_else(|| panic!("the second daemon started: {err}"));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot bind UDP {listen}")) && err.contains("in use"),
        "{err}"
    );
}

/// Found by a benchmark run: a daemon whose stderr reader goes away (a
/// closed pipe; here the test that started it) ignored SIGTERM for good:
/// tracing reports a failed log write with eprintln!, which panics on the
/// same error, so the signal thread died logging "SIGTERM: stopping"
/// before it could pass the stop on. Now it stops, exits 0 and its files
/// hold every frame.
#[test]
fn a_closed_stderr_does_not_stop_sigterm_or_lose_frames() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(bin())
        .args(["run", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&out)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && err.read_line(&mut line).unwrap() > 0 {
        if let Some(i) = line.find("listening on ") {
            addr = Some(line[i + 13..].split([',', ' ']).next().unwrap().to_string());
        }
        line.clear();
    }
    drop(err);
    let addr: std::net::SocketAddr = addr.expect("no `listening on` line").parse().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..500u64 {
        s.send_to(&datagram(7, &inner_frame(seq, 200)), addr)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the daemon ignored SIGTERM with its stderr closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
    let frames: usize = output_files(&out)
        .iter()
        .map(|f| tshark_frames(f).len())
        .sum();
    assert_eq!(frames, 500);
}
