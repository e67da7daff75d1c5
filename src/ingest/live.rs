//! The live loop: one thread per worker reads its socket with blocking
//! `recvmmsg(MSG_WAITFORONE)` (one syscall per wakeup, as the C reference
//! receiver does: no epoll round trip) and feeds its [`Pipeline`] until the
//! stop flag is set; then the caller finishes the pipelines together.
//! After a call that emptied the socket the thread sleeps `batch_wait`
//! (1 ms) before the next one, so it wakes about a thousand times a second
//! however fast datagrams come, and reads what came meanwhile in batches.
//!
//! The socket has a 100 ms receive timeout, so the loop notices the stop
//! flag and runs its once-a-second housekeeping even when no traffic comes:
//! close idle sessions and ended time slots, copy the kernel's drop count,
//! and every ten seconds log the drops seen since the last report, by
//! reason (never a line per packet). A reloaded config is applied before
//! the next batch.
//!
//! A socket group receives one encapsulation ([`Encap`]): VXLAN datagrams
//! (`listen`), or GENEVE around an IP/UDP/VXLAN datagram (`geneve_listen`,
//! a Gateway Load Balancer endpoint's traffic), taken down to the VXLAN
//! datagram by [`crate::wire::geneve::decap`] before the pipeline: the
//! inner IP source (the mirrored ENI) is the session's source and the
//! endpoint ID part of its key. A GENEVE datagram that stops is counted
//! under its `geneve_*` reason; one whose inner UDP length says more than
//! the datagram holds is `geneve_inner_malformed` (a receive is never cut
//! short, unlike a capture's record).
//!
//! On stop the socket is read empty before the pipelines are finished:
//! what the kernel had queued when SIGTERM came was sent before the stop
//! and is written like any other datagram, for up to [`DRAIN_DEADLINE`];
//! what is still queued after that is read and counted as `unread_at_stop`
//! (for up to [`COUNT_DEADLINE`] more), so every datagram the kernel
//! accepted is either written or counted.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ingest::socket::{Receiver, now_ns};
use crate::pipeline::DropReason;
use crate::pipeline::Pipeline;
use crate::pipeline::RecvMeta;
use crate::telemetry::events::{DrainFailed, ReceiveFailed};
use crate::telemetry::log_limit::{DropReport, LogLimiter};
use crate::wire::geneve;

/// On stop, how long queued datagrams are still fed to the pipeline.
pub const DRAIN_DEADLINE: Duration = Duration::from_millis(200);
/// After that, how long what is left is read and counted (reading without
/// decoding takes well under a microsecond a datagram, so a full 32 MiB
/// socket buffer is counted in a few milliseconds).
pub const COUNT_DEADLINE: Duration = Duration::from_millis(100);

/// File descriptors kept for what is not a capture file: the sockets, the
/// metrics and health listeners and their connections, flow files, the
/// runtime, `on_rotate` pipes.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit (capped by
/// `fs.nr_open` when the hard limit is unlimited) and returns the soft
/// limit in force. Capture files are one descriptor each, and systemd's
/// default soft limit (1024) is far below `max_open_files`' default.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut want = lim.rlim_max;
    if want == libc::RLIM_INFINITY {
        want = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if want > lim.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = want;
    }
    Ok(lim.rlim_cur)
}

/// Raises the descriptor limit ([`raise_fd_limit`]) and warns when
/// `max_open_files` plus [`FD_RESERVE`] does not fit in it: files beyond it
/// then fail with "Too many open files" (counted, `/healthz` 503).
pub fn check_fd_limit(max_open_files: usize) {
    match raise_fd_limit() {
        Ok(limit) => {
            let need = max_open_files as u64 + FD_RESERVE;
            if need > limit {
                tracing::warn!(
                    "max_open_files = {max_open_files} needs {need} file descriptors ({FD_RESERVE} more for sockets and listeners), over RLIMIT_NOFILE {limit} (the hard limit): raise it (LimitNOFILE= in the unit, ulimit -Hn) or lower max_open_files; files beyond it cannot be created"
                );
            } else {
                tracing::debug!(limit, "RLIMIT_NOFILE");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
}

/// What the datagrams of a socket group carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN datagrams (`listen`).
    Vxlan,
    /// GENEVE around an IP/UDP datagram to one of `vxlan_ports`
    /// (`geneve_listen`); the ports follow a reload.
    Geneve { vxlan_ports: Vec<u16> },
}

impl Encap {
    /// A GENEVE group's inner VXLAN ports from `cfg` (`vxlan_ports`).
    pub fn geneve(cfg: &Config) -> Encap {
        Encap::Geneve {
            vxlan_ports: cfg.vxlan_ports.clone(),
        }
    }

    /// After a reload: the new config's ports.
    fn reconfigure(&mut self, cfg: &Config) {
        if let Encap::Geneve { vxlan_ports } = self {
            vxlan_ports.clone_from(&cfg.vxlan_ports);
        }
    }
}

/// How the main thread tells the workers to stop or to reload.
#[derive(Clone)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: tokio::sync::watch::Receiver<Option<Arc<Config>>>,
    /// Sleep after a receive call that emptied the socket (`batch_wait`).
    pub batch_wait: Duration,
}

/// Runs until `control.stop` is set, then returns the pipeline for the
/// caller to finish. The socket must be bound already (so the caller can
/// log its address, and tests can bind port 0).
pub fn serve(
    mut rx: Receiver,
    mut pipeline: Pipeline,
    mut encap: Encap,
    mut control: Control,
) -> io::Result<Pipeline> {
    rx.set_receive_timeout(Duration::from_millis(100))?;
    let counters = pipeline.counters().clone();
    let mut report = DropReport::new(Duration::from_secs(10));
    let mut errors = LogLimiter::new(Duration::from_secs(10));
    let mut last_tick = Instant::now();
    let batch = rx.batch();
    while !control.stop.load(Relaxed) {
        let r = rx
            .recv_batch(|data, meta, truncated| take(&mut pipeline, &encap, data, meta, truncated));
        pipeline.publish_counts();
        match r {
            // The socket is empty: sleep instead of blocking in the next
            // call, so what arrives meanwhile is taken in one batch. Waking
            // for every datagram or two costs more than the datagram (a
            // wakeup is an interrupt and a VM exit here), and softirq work
            // that lands while we sleep is not done on our time.
            Ok(n) if n < batch && !control.batch_wait.is_zero() => {
                std::thread::sleep(control.batch_wait)
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // ICMP errors queued on the socket and the like: not fatal
                // for a receiver.
                ReceiveFailed { error: &e }.emit(&counters, &mut errors);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            pipeline.tick(now_ns());
            counters
                .kernel_drops
                .fetch_add(rx.new_kernel_drops(), Relaxed);
            report.maybe_log(&counters);
        }
        // A reload takes effect at the next batch (one atomic load to see).
        if control.reload.has_changed().unwrap_or(false) {
            let cfg = control.reload.borrow_and_update().clone();
            if let Some(cfg) = cfg {
                encap.reconfigure(&cfg);
                pipeline.reconfigure(cfg);
            }
        }
    }
    drain(&mut rx, &mut pipeline, &encap);
    counters
        .kernel_drops
        .fetch_add(rx.new_kernel_drops(), Relaxed);
    Ok(pipeline)
}

/// Reads the socket empty on stop (see the module doc): into the pipeline
/// until [`DRAIN_DEADLINE`], then counted as `unread_at_stop` until the
/// socket is empty or [`COUNT_DEADLINE`] has passed too.
fn drain(rx: &mut Receiver, pipeline: &mut Pipeline, encap: &Encap) {
    let counters = pipeline.counters().clone();
    if let Err(error) = rx.set_nonblocking(true) {
        DrainFailed { error: &error }.emit(&counters);
        return;
    }
    let start = Instant::now();
    let mut written_phase = true;
    let mut unread = 0u64;
    loop {
        let r = if written_phase {
            rx.recv_batch(|data, meta, truncated| take(pipeline, encap, data, meta, truncated))
        } else {
            rx.recv_batch(|data, _, _| {
                counters.received(data.len());
                counters.count_drop(DropReason::UnreadAtStop);
                unread += 1;
            })
        };
        pipeline.publish_counts();
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // ICMP errors queued on the socket and the like: read on.
            _ => {}
        }
        if written_phase && start.elapsed() >= DRAIN_DEADLINE {
            written_phase = false;
        } else if start.elapsed() >= DRAIN_DEADLINE + COUNT_DEADLINE {
            break;
        }
    }
    if unread > 0 {
        tracing::warn!(
            datagrams = unread,
            "stopping: datagrams still queued after {DRAIN_DEADLINE:?} were counted as unread_at_stop, not written"
        );
    }
}

/// One received datagram into the pipeline, taken out of its GENEVE
/// wrapping first in a GENEVE group; one the kernel cut (longer than a
/// receive slot) is counted as `datagram_truncated` instead.
#[inline]
fn take(pipeline: &mut Pipeline, encap: &Encap, data: &[u8], meta: &RecvMeta, truncated: bool) {
    let reason = if truncated {
        DropReason::DatagramTruncated
    } else {
        match encap {
            Encap::Vxlan => return pipeline.push(data, meta),
            // `allow_sources` before any decoding, as for VXLAN.
            Encap::Geneve { .. } if !pipeline.peer_allowed(meta.peer) => {
                DropReason::SourceNotAllowed
            }
            Encap::Geneve { vxlan_ports } => match geneve::decap(data, vxlan_ports) {
                Ok(g) if g.datagram.len() == g.datagram_len => {
                    let inner = RecvMeta {
                        source: g.source,
                        endpoint: g.meta.endpoint_id(),
                        ..*meta
                    };
                    return pipeline.push_unwrapped(g.datagram, data.len(), &inner);
                }
                Ok(_) => DropReason::GeneveInnerMalformed,
                Err(reason) => reason,
            },
        }
    };
    pipeline.counters().received(data.len());
    pipeline.counters().count_drop(reason);
}
