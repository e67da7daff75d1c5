//! No allocation per packet, counted: a global allocator that counts the
//! allocations made on the receiving thread, around the real live loop
//! (`daemon::serve` on a loopback UDP socket) and the real replay loop.
//! Sessions and files allocate when they start; after that, tens of
//! thousands of datagrams through socket -> vxlan -> filter -> decode ->
//! session -> writer hand-off must allocate (almost) nothing: the only
//! allowance is the channel to the writer thread, which allocates a block
//! per 31 chunks of 1 MiB, and the once-a-second housekeeping.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::*;
use mirrorcap::config::Config;
use mirrorcap::ingest::live::Encap;
use mirrorcap::output::handle::Backlog;
use mirrorcap::pipeline::Pipeline;
use mirrorcap::telemetry::counters::Counters;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counter is global: the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(dir: &std::path::Path) -> Config {
    let text = format!("dir = {:?}\n", dir.to_str().unwrap());
    Config::parse(&text, std::path::Path::new("alloc.toml")).unwrap()
}

/// 8 sessions (2 sources x 4 VNIs) interleaved datagram by datagram, so
/// both the per-file lanes and the shared chunk are used. With `geneve`,
/// each VXLAN datagram goes inside IPv4 or IPv6 (the two mirrored ENIs)
/// in GENEVE with the three Amazon options, as a GWLB sends it.
fn send(socks: &[UdpSocket], to: std::net::SocketAddr, from_seq: u64, n: u64, geneve: bool) {
    let vnis = [7u32, 100, 5_569_041, 0xff_ffff];
    let sources: [std::net::IpAddr; 2] =
        ["10.0.0.1".parse().unwrap(), "2001:db8::7".parse().unwrap()];
    for seq in from_seq..from_seq + n {
        let mut d = datagram(
            vnis[(seq / 2 % 4) as usize],
            &inner_frame(seq, 60 + (seq as usize * 37) % 1400),
        );
        if geneve {
            let src = sources[(seq % 2) as usize];
            let ip = &outer_packet(src, 4789, &d, d.len())[14..];
            let protocol: u16 = if src.is_ipv4() { 0x0800 } else { 0x86dd };
            // Version 0, 8 words of options; protocol type; GENEVE VNI 0.
            let mut g = vec![8, 0];
            g.extend_from_slice(&protocol.to_be_bytes());
            g.extend_from_slice(&[0, 0, 0, 0]);
            g.extend_from_slice(&[1, 8, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0x2a]);
            g.extend_from_slice(&[1, 8, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0x07]);
            g.extend_from_slice(&[1, 8, 3, 1, 0xc0, 0xff, 0xee, 0x01]);
            g.extend_from_slice(ip);
            d = g;
        }
        socks[(seq % 2) as usize].send_to(&d, to).unwrap();
        if seq % 500 == 499 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn wait_received(c: &Counters, n: u64) {
    let t = Instant::now();
    while c.datagrams_received.load(Relaxed) < n {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "received {} of {n}",
            c.datagrams_received.load(Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn live_loop_allocates_nothing_per_datagram() {
    live_loop_allocations(Encap::Vxlan);
}

/// Issue 14: the GENEVE receive loop (`geneve_listen`) does no more.
#[test]
fn live_geneve_loop_allocates_nothing_per_datagram() {
    let tmp = tempfile::tempdir().unwrap();
    live_loop_allocations(Encap::geneve(&config(tmp.path())));
}

fn live_loop_allocations(encap: Encap) {
    let geneve = encap != Encap::Vxlan;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&tmp.path().join("cap"));
    let rx = mirrorcap::ingest::socket::Receiver::bind(
        "127.0.0.1:0".parse().unwrap(),
        32 << 20,
        64,
        false,
    )
    .unwrap();
    let addr = rx.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let pipeline = Pipeline::new(&cfg, counters.clone(), Backlog::Drop);
    let stop = Arc::new(AtomicBool::new(false));
    let (_reload_tx, reload) = tokio::sync::watch::channel(None);
    let control = mirrorcap::ingest::live::Control {
        stop: stop.clone(),
        reload,
        batch_wait: cfg.batch_wait,
    };
    let start = ALLOCATIONS.load(Relaxed);
    let worker = std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let p = mirrorcap::ingest::live::serve(rx, pipeline, encap, control).unwrap();
        COUNTED.with(|c| c.set(false));
        p
    });
    let socks: Vec<UdpSocket> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|s| UdpSocket::bind((*s, 0)).unwrap())
        .collect();

    // Warm-up: every session and file starts here.
    send(&socks, addr, 0, 4_000, geneve);
    wait_received(&counters, 4_000);
    let before = ALLOCATIONS.load(Relaxed);
    let warm_up = before - start;
    const N: u64 = 60_000;
    send(&socks, addr, 4_000, N, geneve);
    wait_received(&counters, 4_000 + N);
    let during = ALLOCATIONS.load(Relaxed) - before;
    stop.store(true, Relaxed);
    let summary = worker.join().unwrap().finish();
    assert_eq!(summary.frames_written, 4_000 + N, "{summary}");
    // Warm-up allocated (sessions, files), so the counter does count.
    assert!(warm_up > 8, "warm-up allocated only {warm_up} times");
    assert!(
        during <= N / 1000,
        "{during} allocations for {N} datagrams (allowed: one per 1000)"
    );
    assert_eq!(summary.sessions.len(), 8, "{summary}");
    let kind = if geneve { "GENEVE" } else { "VXLAN" };
    eprintln!("live ({kind}): warm-up {warm_up} allocations; {N} datagrams after it: {during}");
}

#[test]
fn replay_loop_allocates_nothing_per_record() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&tmp.path().join("cap"));
    let vnis = [7u32, 100, 5_569_041, 0xff_ffff];
    let sources = ["10.0.0.1".parse().unwrap(), "2001:db8::7".parse().unwrap()];
    let records = |from: u64, n: u64| -> Vec<(u64, Vec<u8>, u32)> {
        (from..from + n)
            .map(|seq| {
                let d = datagram(
                    vnis[(seq / 2 % 4) as usize],
                    &inner_frame(seq, 60 + (seq as usize * 37) % 1400),
                );
                let p = outer_packet(sources[(seq % 2) as usize], 4789, &d, d.len());
                let len = p.len() as u32;
                (1_700_000_000_000_000_000 + seq * 1_000, p, len)
            })
            .collect()
    };
    let (warm, main) = (tmp.path().join("warm.pcap"), tmp.path().join("main.pcap"));
    const N: u64 = 60_000;
    write_pcap(&warm, 1, &records(0, 4_000));
    write_pcap(&main, 1, &records(4_000, N));
    let ports = mirrorcap::ingest::replay::ReplayPorts::new(&[4789], &[6081]);
    let counters = Arc::new(Counters::default());
    let mut pipeline = Pipeline::new(&cfg, counters, Backlog::Wait);
    let mut replay = |path: &std::path::Path| -> u64 {
        let f = std::fs::File::open(path).unwrap();
        let mut r = mirrorcap::capture::CaptureReader::open_file(f, "t").unwrap();
        let before = ALLOCATIONS.load(Relaxed);
        COUNTED.with(|c| c.set(true));
        mirrorcap::ingest::replay::replay(&mut r, &mut pipeline, &ports).unwrap();
        COUNTED.with(|c| c.set(false));
        ALLOCATIONS.load(Relaxed) - before
    };
    let warm_up = replay(&warm);
    let during = replay(&main);
    let summary = pipeline.finish();
    assert_eq!(summary.frames_written, 4_000 + N, "{summary}");
    assert!(warm_up > 8, "warm-up allocated only {warm_up} times");
    assert!(
        during <= N / 1000,
        "{during} allocations for {N} records (allowed: one per 1000)"
    );
    eprintln!("replay: warm-up {warm_up} allocations; {N} records after it: {during}");
}
