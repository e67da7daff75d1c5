//! The hot-path counters of the whole pipeline: what was received, what
//! was written, every datagram that was dropped (by reason), the per-session
//! counters, the per-rule counts, and the errors counted by
//! [`crate::telemetry::events`].
//!
//! In: `count_drop(reason)`, `received`, `written`, `SessionStats::add`
//! from every stage (relaxed atomics: the hot path only does `fetch_add`,
//! or a load and a store where one worker owns the value).
//! Out: read at scrape time by [`crate::telemetry::prometheus`], at exit
//! by [`crate::telemetry::summary`], and by the health checks.
//! Every path that discards a datagram ends in [`Counters::count_drop`], so
//! the books balance: `datagrams_received = frames_written + sum(drops)`
//! (replay also counts the capture records it skipped before they became
//! datagrams). Nothing is dropped here.
//!
//! The counters stay our own atomics rather than `prometheus-client`'s
//! metric types: those are registered once by name, while ours are indexed
//! by [`DropReason`] and made per session on the hot path; the crate only
//! renders them, at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use crate::pipeline::DropReason;

/// Packets one rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCount {
    pub filter: String,
    pub direction: &'static str,
    pub rule: String,
    pub action: &'static str,
    pub packets: u64,
}

/// What can report per-rule counts (the mirror filters): telemetry reads
/// them without depending on the filter module.
pub trait RuleCounts: Send + Sync + std::fmt::Debug {
    fn rule_counts(&self) -> Vec<RuleCount>;
}

pub(crate) const N_REASONS: usize = DropReason::ALL.len();

/// What went wrong, for the `kind` label of `mirrorcap_errors_total`:
/// errors that are logged by an internal event
/// ([`crate::telemetry::events`]) and are not a dropped datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `accept` failed on the `metrics_listen` listener.
    MetricsAccept,
    /// `accept` failed on the `health_tcp_listen` listener.
    HealthAccept,
    /// The TCP health port could not be bound (again).
    HealthBind,
    /// A receive call on the capture socket failed (not a timeout).
    Recv,
    /// The socket could not be read empty on stop.
    Drain,
    /// SIGHUP did not reload the config (no file, or an invalid one).
    Reload,
    /// Retention could not delete a closed file (capture or flow file).
    Retention,
    /// Crash recovery at start could not read, cut, rename or delete a
    /// `.part` file left by an earlier run.
    Recovery,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::MetricsAccept,
        ErrorKind::HealthAccept,
        ErrorKind::HealthBind,
        ErrorKind::Recv,
        ErrorKind::Drain,
        ErrorKind::Reload,
        ErrorKind::Retention,
        ErrorKind::Recovery,
    ];

    /// The `kind` label value.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::MetricsAccept => "metrics_accept",
            ErrorKind::HealthAccept => "health_accept",
            ErrorKind::HealthBind => "health_bind",
            ErrorKind::Recv => "recv",
            ErrorKind::Drain => "drain",
            ErrorKind::Reload => "reload",
            ErrorKind::Retention => "retention",
            ErrorKind::Recovery => "recovery",
        }
    }
}

/// Process-wide counters, shared by reference between the stages.
/// Why the control socket turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRefusal {
    /// `max_subscribers` plus the spare connections were already served.
    Connections,
    /// No request line in time, over 8 KiB, not UTF-8 or not valid JSON.
    Request,
    /// `max_subscribers` reached, or the daemon stopping.
    Subscribers,
    /// A libpcap expression that does not compile or is too long, or an
    /// endpoint that is not one.
    Selection,
}

impl StreamRefusal {
    pub const ALL: [StreamRefusal; 4] = [
        StreamRefusal::Connections,
        StreamRefusal::Request,
        StreamRefusal::Subscribers,
        StreamRefusal::Selection,
    ];

    /// Its metric label.
    pub fn name(self) -> &'static str {
        match self {
            StreamRefusal::Connections => "connections",
            StreamRefusal::Request => "request",
            StreamRefusal::Subscribers => "subscribers",
            StreamRefusal::Selection => "selection",
        }
    }
}

#[derive(Default, Debug)]
pub struct Counters {
    /// Datagrams handed to the pipeline (live: received on the socket;
    /// replay: capture records read).
    pub datagrams_received: AtomicU64,
    /// Bytes of those datagrams (UDP payload for live, record for replay).
    pub bytes_received: AtomicU64,
    /// Inner frames written to a capture file.
    pub frames_written: AtomicU64,
    /// Bytes of inner frames written (captured length).
    pub frame_bytes_written: AtomicU64,
    /// Datagrams the kernel dropped because the socket buffer was full
    /// (SO_RXQ_OVFL): never seen by the pipeline, so not in `drops`.
    pub kernel_drops: AtomicU64,
    /// Packets the host's per-CPU network backlog dropped since the daemon
    /// started (`/proc/net/softnet_stat`): before IP and UDP ran, so before
    /// any socket; host-wide (all traffic, every namespace), which is why it
    /// is reported apart from the datagrams this daemon lost.
    pub host_backlog_drops: AtomicU64,
    /// Frames live subscribers could not take (their queue was full):
    /// not written to them, still written to the capture files.
    pub stream_dropped: AtomicU64,
    /// Live subscribers connected now (gauge).
    pub stream_subscribers: AtomicU64,
    /// Connections the control socket turned away, by
    /// [`StreamRefusal`] (index = its value).
    pub stream_refused: [AtomicU64; StreamRefusal::ALL.len()],
    /// Mirror sessions seen (each entry made in a session table: a session
    /// freed and seen again counts again).
    pub sessions: AtomicU64,
    /// Sessions freed to make room for a new one (`max_sessions` or
    /// `max_open_files` reached), and freed after `idle_timeout` without
    /// a packet.
    pub sessions_evicted: AtomicU64,
    pub sessions_freed: AtomicU64,
    /// Capture files opened, rotated (closed and renamed), deleted by retention.
    pub files_opened: AtomicU64,
    pub files_closed: AtomicU64,
    pub files_deleted: AtomicU64,
    /// Files open now (gauge), and the bytes of capture files under the
    /// output directory, open and closed (gauge, kept by the writer).
    pub open_files: AtomicU64,
    /// Files the receive side has asked to open and not yet closed, for
    /// `max_open_files` (the writer's `open_files` lags behind it).
    pub files_requested: AtomicU64,
    pub output_bytes: AtomicU64,
    /// `on_rotate` commands started, and those that failed (could not
    /// start, exited non-zero, or were not run because too many were queued).
    pub hook_runs: AtomicU64,
    pub hook_failures: AtomicU64,
    /// Flow records written (OK and NODATA), NODATA records, and windows
    /// written out early because `flows.max_flows` was reached.
    pub flow_records: AtomicU64,
    pub flow_nodata: AtomicU64,
    pub flow_early_flushes: AtomicU64,
    /// Flow files that could not be created, written, synced or renamed,
    /// and the flow records lost with them (`[flows]`).
    pub flow_write_errors: AtomicU64,
    pub flow_records_lost: AtomicU64,
    /// Starts where instance metadata did not give the flow layout's
    /// account or region (`[flows] account_id`/`region` unset,
    /// `[output.s3]` set): that folder is `unknown`.
    pub flow_layout_fallbacks: AtomicU64,
    /// `[output.s3]`: uploads of closed files (see
    /// [`UploadCounters`]); their metrics are shown only when it is set.
    pub uploads: UploadCounters,
    drops: [AtomicU64; N_REASONS],
    /// Errors logged by the internal events, by [`ErrorKind`].
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// The counters of the sessions in the tables now, for the metrics
    /// endpoint and the summary, and the totals of those freed.
    pub session_stats: std::sync::Mutex<SessionRegistry>,
    /// The filters in force (replaced on reload), for per-rule metrics.
    pub filters: std::sync::Mutex<Vec<std::sync::Arc<dyn RuleCounts>>>,
    /// Why output cannot be written now (`None` while writing works): read
    /// by `/healthz` and the TCP health check.
    pub output_error: std::sync::Mutex<Option<String>>,
    output_failing: std::sync::atomic::AtomicBool,
    /// Why flow files cannot be written now (`None` while they can).
    flow_output_error: std::sync::Mutex<Option<String>>,
    flow_output_failing: std::sync::atomic::AtomicBool,
    /// Set once, for good, when the capture writer thread has died (a
    /// panic, or its channel closed before the end): health stays 503 and
    /// `run` stops with an error.
    writer_dead: std::sync::OnceLock<String>,
}

/// Uploads to S3 (`[output.s3]`), kept by the uploader: what is waiting,
/// what went, what failed and what retention had to delete before it
/// went. Off (and absent from `/metrics`) unless `enabled`.
#[derive(Default, Debug)]
pub struct UploadCounters {
    pub enabled: std::sync::atomic::AtomicBool,
    /// Files uploaded (confirmed by S3) and their bytes.
    pub uploaded: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    /// Upload attempts that failed (each is retried with backoff).
    pub failures: AtomicU64,
    /// Files retention deleted before they were uploaded (logged by name).
    pub abandoned: AtomicU64,
    /// Closed files waiting to be uploaded, and their bytes (gauges).
    pub pending: AtomicU64,
    pub pending_bytes: AtomicU64,
    /// Unix time (s) the oldest pending file was closed; 0 = none.
    pub oldest_pending: AtomicU64,
    /// `[output.s3] unhealthy_after` in seconds: `/healthz` turns 503 when
    /// the oldest pending file has waited longer.
    pub unhealthy_after_s: AtomicU64,
    /// `{host}` fell back to the host name (metadata service unreachable).
    pub host_fallbacks: AtomicU64,
    /// The error of the last failed attempt of a file still pending
    /// (`None` when no pending file has failed).
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The error of a pending file S3 refused for good (no such bucket,
    /// access denied, …): `/healthz` is 503 at once, not after
    /// `unhealthy_after`.
    pub refused: std::sync::Mutex<Option<String>>,
}

impl UploadCounters {
    /// `Some(why)` when an upload has been pending longer than
    /// `unhealthy_after`.
    pub fn unhealthy(&self) -> Option<String> {
        if !self.enabled.load(Relaxed) {
            return None;
        }
        if let Some(why) = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(format!(
                "{} file(s) not uploaded: S3 refuses them: {why}",
                self.pending.load(Relaxed)
            ));
        }
        let since = self.oldest_pending.load(Relaxed);
        let after = self.unhealthy_after_s.load(Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if since == 0 || now.saturating_sub(since) <= after {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "no attempt finished yet".into());
        Some(format!(
            "{} file(s) not uploaded to S3, the oldest for {} s (over unhealthy_after = {after} s); last error: {last}",
            self.pending.load(Relaxed),
            now.saturating_sub(since)
        ))
    }
}

/// One session's counters, shared with the metrics endpoint and the
/// writer thread.
#[derive(Debug)]
pub struct SessionStats {
    /// Never reused: tells apart two sessions that had the same slot or
    /// the same key one after the other.
    pub id: u64,
    pub vni: u32,
    pub source: std::net::IpAddr,
    /// The Gateway Load Balancer endpoint (`vpce-…`) of a GENEVE-borne
    /// session, its `endpoint` label; `None` for direct traffic.
    pub endpoint: Option<String>,
    /// Whether the session has its own `/metrics` series (decided when it
    /// is made, so no series moves in or out of the `other` sum).
    pub labelled: bool,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Files of this session closed and renamed (counted by the writer
    /// thread, so a file that could not be written is not counted).
    pub files: AtomicU64,
}

/// Packets and bytes of a set of sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionTotals {
    pub sessions: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// The sessions in the session tables now, by id, and what the freed
/// ones counted: `/metrics` shows at most `max_labelled` sessions with
/// their own series and sums the others in one `vni="other"` series.
/// Its size follows the live sessions, not every session ever seen.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    pub(crate) live: foldhash::HashMap<u64, std::sync::Arc<SessionStats>>,
    next_id: u64,
    /// Live sessions with their own series, and the most allowed
    /// (`metrics_max_sessions`).
    labelled: usize,
    pub(crate) max_labelled: usize,
    /// Every freed session (idle or evicted).
    pub(crate) retired: SessionTotals,
    /// Freed sessions that had no series of their own: the `other` series
    /// goes on counting them, so it never decreases.
    pub(crate) retired_other: SessionTotals,
}

impl SessionStats {
    /// Counts one packet. A session is only ever handled by one worker, so
    /// there is one writer: a plain load and store (no locked
    /// read-modify-write per packet); readers see whole values.
    #[inline]
    pub fn add(&self, bytes: u64) {
        self.packets.store(self.packets.load(Relaxed) + 1, Relaxed);
        self.bytes.store(self.bytes.load(Relaxed) + bytes, Relaxed);
    }
}

impl Counters {
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn count_drops(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason as usize].fetch_add(n, Relaxed);
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// Counts one error of `kind` (called by the internal events).
    pub fn count_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Relaxed)
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, SessionRegistry> {
        self.session_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live sessions, sorted: (VNI, source, endpoint).
    pub fn live_sessions(&self) -> Vec<(u32, std::net::IpAddr, Option<String>)> {
        let mut v: Vec<_> = self
            .registry()
            .live
            .values()
            .map(|s| (s.vni, s.source, s.endpoint.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Registers a new session's counters (once per session, not per
    /// packet).
    pub fn new_session(&self, vni: u32, source: std::net::IpAddr) -> std::sync::Arc<SessionStats> {
        self.new_session_via(vni, source, None)
    }

    /// [`Counters::new_session`] for a session through a Gateway Load
    /// Balancer `endpoint` (`vpce-…`), or direct when `None`.
    pub fn new_session_via(
        &self,
        vni: u32,
        source: std::net::IpAddr,
        endpoint: Option<String>,
    ) -> std::sync::Arc<SessionStats> {
        let mut reg = self.registry();
        let labelled = reg.labelled < reg.max_labelled;
        reg.labelled += usize::from(labelled);
        let st = std::sync::Arc::new(SessionStats {
            id: reg.next_id,
            vni,
            source,
            endpoint,
            labelled,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
        });
        reg.next_id += 1;
        reg.live.insert(st.id, st.clone());
        self.sessions.fetch_add(1, Relaxed);
        st
    }

    /// A session's entry was freed (`evicted`: to make room; else idle):
    /// its series ends, its packets and bytes go to the totals of the
    /// freed sessions.
    pub fn retire_session(&self, st: &SessionStats, evicted: bool) {
        let mut reg = self.registry();
        if reg.live.remove(&st.id).is_none() {
            return;
        }
        let (packets, bytes) = (st.packets.load(Relaxed), st.bytes.load(Relaxed));
        let add = |t: &mut SessionTotals| {
            t.sessions += 1;
            t.packets += packets;
            t.bytes += bytes;
        };
        add(&mut reg.retired);
        if st.labelled {
            reg.labelled -= 1;
        } else {
            add(&mut reg.retired_other);
        }
        drop(reg);
        if evicted {
            self.sessions_evicted.fetch_add(1, Relaxed);
        } else {
            self.sessions_freed.fetch_add(1, Relaxed);
        }
    }

    /// Sets `metrics_max_sessions`: sessions made from now on get their own
    /// series while fewer than `n` live sessions have one.
    pub fn set_metrics_max_sessions(&self, n: usize) {
        self.registry().max_labelled = n;
    }

    pub fn metrics_max_sessions(&self) -> usize {
        self.registry().max_labelled
    }

    /// Takes one of the `max` open-file slots (`files_requested`); `false`
    /// when all are taken. Workers share the slots, so the check and the
    /// taking are one atomic step (a load and a separate add let two
    /// workers take the last slot).
    pub fn reserve_file(&self, max: usize) -> bool {
        self.files_requested
            .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
            .is_ok()
    }

    /// Gives back a slot taken by [`Counters::reserve_file`].
    pub fn release_file(&self) {
        self.files_requested.fetch_sub(1, Relaxed);
    }

    /// Records that output cannot be written (or, with `None`, that it
    /// can). Cheap when nothing changes: one atomic load.
    pub fn set_output_error(&self, why: Option<String>) {
        if self.output_failing.load(Relaxed) == why.is_some() {
            return;
        }
        self.output_failing.store(why.is_some(), Relaxed);
        *self.output_error.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Like [`Counters::set_output_error`], for the flow files.
    pub fn set_flow_output_error(&self, why: Option<String>) {
        if self.flow_output_failing.load(Relaxed) == why.is_some() {
            return;
        }
        self.flow_output_failing.store(why.is_some(), Relaxed);
        *self
            .flow_output_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Records that the capture writer thread died, and why; true the
    /// first time (the caller logs it then).
    pub fn writer_died(&self, why: String) -> bool {
        self.writer_dead.set(why).is_ok()
    }

    /// Why the capture writer thread died, if it did.
    pub fn writer_death(&self) -> Option<&str> {
        self.writer_dead.get().map(String::as_str)
    }

    /// `None` while healthy (the writer thread runs, capture and flow
    /// files can be written), else why not.
    pub fn unhealthy(&self) -> Option<String> {
        if let Some(why) = self.writer_death() {
            return Some(format!("the writer thread died: {why}"));
        }
        let capture = self
            .output_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        capture.or_else(|| {
            self.flow_output_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }

    #[inline]
    pub fn received(&self, bytes: usize) {
        self.datagrams_received.fetch_add(1, Relaxed);
        self.bytes_received.fetch_add(bytes as u64, Relaxed);
    }

    #[inline]
    pub fn written(&self, bytes: usize) {
        self.frames_written.fetch_add(1, Relaxed);
        self.frame_bytes_written.fetch_add(bytes as u64, Relaxed);
    }
}

/// Packets dropped by the host's per-CPU backlog queues so far: the sum
/// of the second column of `/proc/net/softnet_stat` (one hex line per
/// CPU). `None` when the file cannot be read.
pub fn host_backlog_drops() -> Option<u64> {
    parse_softnet_drops(&std::fs::read_to_string("/proc/net/softnet_stat").ok()?)
}

fn parse_softnet_drops(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    for line in text.lines() {
        let col = line.split_whitespace().nth(1)?;
        sum += u64::from_str_radix(col, 16).ok()?;
    }
    Some(sum)
}

/// Keeps [`Counters::host_backlog_drops`] as the drops since it was made.
#[derive(Clone, Copy)]
pub struct HostBacklog {
    start: Option<u64>,
}

impl HostBacklog {
    pub fn start() -> HostBacklog {
        HostBacklog {
            start: host_backlog_drops(),
        }
    }

    pub fn update(&self, c: &Counters) {
        if let (Some(start), Some(now)) = (self.start, host_backlog_drops()) {
            c.host_backlog_drops
                .store(now.saturating_sub(start), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, item 9: a dead writer keeps health at 503, whatever a
    /// later successful write (of flow files, say) reports.
    #[test]
    fn dead_writer_is_unhealthy_for_good() {
        let c = Counters::default();
        assert!(c.unhealthy().is_none());
        assert!(c.writer_died("it panicked: x".into()));
        assert!(!c.writer_died("again".into()));
        c.set_output_error(Some("disk full".into()));
        c.set_output_error(None);
        let why = c.unhealthy().expect("unhealthy");
        assert!(why.contains("writer thread died: it panicked: x"), "{why}");
        assert!(
            crate::telemetry::prometheus::render_prometheus(&c).contains("mirrorcap_healthy 0")
        );
    }

    /// Issue 12 item 10: `max_open_files` is one atomic reservation, so
    /// workers racing for the last slot never take more than `max`
    /// between them. Rounds: two threads spin until a round starts, both
    /// try to take the one free slot at the same moment; more than one
    /// winner in any round is a slot over the limit.
    #[test]
    fn open_file_reservation_is_atomic_across_workers() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        const ROUNDS: usize = 50_000;
        const THREADS: usize = 2;
        let c = Arc::new(Counters::default());
        let round = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        let winners = Arc::new(AtomicU64::new(0));
        let over = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, round, arrived, winners, over) = (
                    c.clone(),
                    round.clone(),
                    arrived.clone(),
                    winners.clone(),
                    over.clone(),
                );
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        while round.load(std::sync::atomic::Ordering::Acquire) != r {
                            std::hint::spin_loop();
                        }
                        if c.reserve_file(1) {
                            winners.fetch_add(1, Relaxed);
                        }
                        arrived.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        if t == 0 {
                            while arrived.load(std::sync::atomic::Ordering::Acquire)
                                < THREADS * (r + 1)
                            {
                                std::hint::spin_loop();
                            }
                            if winners.swap(0, Relaxed) > 1 {
                                over.fetch_add(1, Relaxed);
                            }
                            c.files_requested.store(0, Relaxed);
                            round.store(r + 1, std::sync::atomic::Ordering::Release);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let over = over.load(Relaxed);
        assert_eq!(
            over, 0,
            "{over} of {ROUNDS} rounds gave out 2 slots where 1 was free"
        );
    }

    #[test]
    fn softnet_drops_are_summed_over_cpus() {
        let text = "00291ac9 00000000 00000000 00000000\n174eed22 002bc76c 000022a2 00000000\n";
        assert_eq!(parse_softnet_drops(text), Some(0x2bc76c));
        assert_eq!(parse_softnet_drops(""), Some(0));
        assert_eq!(parse_softnet_drops("zz"), None);
        // This machine's own file reads.
        assert!(host_backlog_drops().is_some());
    }
}
