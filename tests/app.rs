//! The daemon driven in process through `mirrorcap::app::daemon::run`: no
//! child process, control messages instead of signals, the exit summary
//! as a value. Datagrams go over loopback UDP to the port it bound.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use mirrorcap::app::{Control, ReloadSource};
use mirrorcap::config::Config;
use tokio::sync::mpsc;

/// Starts the daemon on `config` (TOML, `listen` on 127.0.0.1:0) in a
/// thread; returns its address, the control sender and the thread.
fn start(
    config: &str,
    file: &Path,
) -> (
    SocketAddr,
    mpsc::UnboundedSender<Control>,
    std::thread::JoinHandle<Result<mirrorcap::app::DaemonOutcome, mirrorcap::app::DaemonError>>,
) {
    std::fs::write(file, config).unwrap();
    let cfg = Config::load(file).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let source = ReloadSource {
        path: Some(file.to_path_buf()),
        overrides: Default::default(),
    };
    let h = std::thread::spawn(move || {
        mirrorcap::app::daemon::run(cfg, source, rx, move |a| addr_tx.send(a.vxlan).unwrap())
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the daemon reports its address");
    (addr, tx, h)
}

fn send(addr: SocketAddr, vni: u32, seqs: std::ops::Range<u64>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in seqs {
        s.send_to(&datagram(vni, &inner_frame(seq, 120)), addr)
            .unwrap();
        if seq % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Stop returns the summary as a value: every datagram received and
/// written, per session, and the files read by capinfos and tshark.
#[test]
fn in_process_daemon_stops_with_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndir = \"{}\"\nworkers = 2\n",
        out.display()
    );
    let (addr, tx, h) = start(&config, &dir.path().join("c.toml"));
    send(addr, 7, 0..300);
    send(addr, 8, 0..200);
    std::thread::sleep(Duration::from_millis(300));
    tx.send(Control::Stop).unwrap();
    let outcome = h.join().unwrap().expect("the daemon ran");
    let s = &outcome.summary;
    assert!(outcome.writer_death.is_none());
    assert_eq!(s.datagrams_received, 500, "{s}");
    assert_eq!(s.frames_written, 500, "{s}");
    let per: Vec<(u32, u64)> = s
        .sessions
        .iter()
        .map(|x| (x.vni, x.counts.packets))
        .collect();
    assert_eq!(per, vec![(7, 300), (8, 200)], "{s}");
    let files = output_files(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    let mut frames = 0;
    for f in &files {
        capinfos_ok(f);
        frames += tshark_frames(f).len();
    }
    assert_eq!(frames, 500);
}

/// A reload message reads the file again: a new `vnis` list applies to the
/// next datagrams; an invalid file keeps the running config.
#[test]
fn in_process_reload_applies_the_new_file_and_keeps_the_old_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = dir.path().join("c.toml");
    let base = format!(
        "listen = \"127.0.0.1:0\"\ndir = \"{}\"\nworkers = 1\n",
        out.display()
    );
    let (addr, tx, h) = start(&format!("{base}vnis = [7]\n"), &file);
    send(addr, 7, 0..100);
    send(addr, 8, 0..100);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&file, format!("{base}vnis = [8]\n")).unwrap();
    tx.send(Control::Reload).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(addr, 7, 100..150);
    send(addr, 8, 100..150);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&file, "vnis = \"not a list\"\n").unwrap();
    tx.send(Control::Reload).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The running `vnis = [8]` stays: vni 7 is still excluded (the default
    // config would take both).
    send(addr, 8, 150..160);
    send(addr, 7, 150..170);
    std::thread::sleep(Duration::from_millis(300));
    tx.send(Control::Stop).unwrap();
    let s = h.join().unwrap().expect("the daemon ran").summary;
    assert_eq!(s.datagrams_received, 330, "{s}");
    // vni 7: 100 before the reload; vni 8: 50 after it and 10 after the
    // failed one.
    assert_eq!(s.frames_written, 160, "{s}");
    let excluded: u64 = s
        .drops
        .iter()
        .filter(|(r, _)| r.to_string() == "vni_excluded")
        .map(|(_, n)| n)
        .sum();
    // vni 8 before the reload, vni 7 after it and after the failed one.
    assert_eq!(excluded, 170, "{s}");
}
