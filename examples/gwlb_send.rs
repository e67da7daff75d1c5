//! A Gateway Load Balancer stand-in for the live benchmark (issue 14):
//! sends the UDP payloads of a capture's records, in order, to one
//! address and port, paced to a rate, with `sendmmsg` as `vxgen` sends.
//!
//! Fed a capture made by `vxgen -w` and wrapped by
//! `benchmarks/geneve_wrap.py`, it sends vxgen's sequence-stamped VXLAN
//! datagrams inside GENEVE with the three Amazon options, to a daemon's
//! `geneve_listen`; `pcapcount -e N` then checks the daemon's files for
//! loss and duplicates, as for `vxgen` itself. Every record is sent once
//! (a repeated record would read as a duplicate), so the capture holds
//! the run's whole count. Records that are not UDP are skipped.
//!
//! ```text
//! cargo run --release --example gwlb_send -- ADDR:PORT FILE [-r PPS] [-T SECS] [-b BATCH]
//! ```
//!
//! `-r 0` (the default) sends as fast as it can; `-T` stops after that many
//! seconds (default 60); `-b` is the `sendmmsg` batch (default 64). Prints
//! one line as `vxgen` does: `gwlb_send: sent=N errors=E elapsed_s=S pps=P`;
//! exits 3 when it could not send every record in time.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

struct Args {
    to: SocketAddr,
    file: String,
    rate: f64,
    max_secs: f64,
    batch: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut pos = Vec::new();
    let (mut rate, mut max_secs, mut batch) = (0.0, 60.0, 64usize);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "-r" => rate = value("-r")?.parse().context("-r: packets per second")?,
            "-T" => max_secs = value("-T")?.parse().context("-T: seconds")?,
            "-b" => batch = value("-b")?.parse().context("-b: batch size")?,
            _ => pos.push(a),
        }
    }
    let [to, file] = <[String; 2]>::try_from(pos).map_err(|_| {
        anyhow::anyhow!("usage: gwlb_send ADDR:PORT FILE [-r PPS] [-T SECS] [-b BATCH]")
    })?;
    if !(1..=1024).contains(&batch) {
        bail!("-b {batch}: expected 1 to 1024");
    }
    Ok(Args {
        to: to
            .parse()
            .with_context(|| format!("{to:?}: expected ADDR:PORT"))?,
        file,
        rate,
        max_secs,
        batch,
    })
}

/// The UDP payloads of every record of `file`, in order.
fn payloads(file: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let f = std::fs::File::open(file).with_context(|| format!("{file}: cannot open"))?;
    let mut r = mirrorcap::capture::CaptureReader::new(f, file)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        if let Ok(u) = mirrorcap::wire::outer::strip_outer(rec.linktype, rec.data) {
            out.push(u.payload.to_vec());
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dgrams = payloads(&a.file)?;
    let bind: SocketAddr = if a.to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(a.to)
        .with_context(|| format!("connect to {}", a.to))?;
    let fd = sock.as_raw_fd();
    let sndbuf: libc::c_int = 4 << 20;
    // SAFETY: a valid socket and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&sndbuf as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers,
    // zero lengths); each is pointed at a datagram before it is sent.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; a.batch];
    let mut mm: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; a.batch];
    let (mut sent, mut errors) = (0usize, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.max_secs);
    while sent < dgrams.len() {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        let mut n = (dgrams.len() - sent).min(a.batch);
        if a.rate > 0.0 {
            // How many are due by now on the ideal schedule.
            let due = now.duration_since(start).as_secs_f64() * a.rate - sent as f64;
            if due < 1.0 {
                let next = start + Duration::from_secs_f64((sent + 1) as f64 / a.rate);
                std::thread::sleep(next.saturating_duration_since(now));
                continue;
            }
            n = n.min(due as usize);
        }
        for k in 0..n {
            let d = &dgrams[sent + k];
            iov[k].iov_base = d.as_ptr() as *mut libc::c_void;
            iov[k].iov_len = d.len();
            mm[k].msg_hdr.msg_iov = &mut iov[k];
            mm[k].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `mm[..n]` point at `iov[..n]`, which point at datagrams
        // that outlive the call; the socket is connected (no address).
        let r = unsafe { libc::sendmmsg(fd, mm.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ECONNREFUSED | libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    errors += 1;
                    continue;
                }
                _ => return Err(e).context("sendmmsg"),
            }
        }
        sent += r as usize;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "gwlb_send: sent={sent} errors={errors} elapsed_s={el:.6} pps={:.0} records={} target_pps={:.0}",
        if el > 0.0 { sent as f64 / el } else { 0.0 },
        dgrams.len(),
        a.rate
    );
    if sent < dgrams.len() {
        std::process::exit(3);
    }
    Ok(())
}
