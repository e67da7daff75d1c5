//! Counters for the whole pipeline: what was received, what was written,
//! and every datagram that was dropped, by reason.
//!
//! In: `Counters::drop(reason)` / `add_*` calls from every stage.
//! Out: a [`Summary`] printed at shutdown (and, later, the metrics endpoint).
//! Every path that discards a datagram ends in [`Counters::drop`], so the books
//! balance: `datagrams_received = frames_written + sum(drops)` (replay also
//! counts the capture records it skipped before they became datagrams).
//!
//! Counters are relaxed atomics so that a metrics reader on another thread can
//! read them while the receive loop adds; the hot path only does `fetch_add`.

use std::fmt;
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

const N_REASONS: usize = DropReason::ALL.len();

/// Process-wide counters, shared by reference between the stages.
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
    drops: [AtomicU64; N_REASONS],
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

/// One session's counters, shared with the metrics endpoint and the
/// writer thread.
#[derive(Debug)]
pub struct SessionStats {
    /// Never reused: tells apart two sessions that had the same slot or
    /// the same key one after the other.
    pub id: u64,
    pub vni: u32,
    pub source: std::net::IpAddr,
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
    live: foldhash::HashMap<u64, std::sync::Arc<SessionStats>>,
    next_id: u64,
    /// Live sessions with their own series, and the most allowed
    /// (`metrics_max_sessions`).
    labelled: usize,
    max_labelled: usize,
    /// Every freed session (idle or evicted).
    retired: SessionTotals,
    /// Freed sessions that had no series of their own: the `other` series
    /// goes on counting them, so it never decreases.
    retired_other: SessionTotals,
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

    fn registry(&self) -> std::sync::MutexGuard<'_, SessionRegistry> {
        self.session_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new session's counters (once per session, not per
    /// packet).
    pub fn new_session(&self, vni: u32, source: std::net::IpAddr) -> std::sync::Arc<SessionStats> {
        let mut reg = self.registry();
        let labelled = reg.labelled < reg.max_labelled;
        reg.labelled += usize::from(labelled);
        let st = std::sync::Arc::new(SessionStats {
            id: reg.next_id,
            vni,
            source,
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

/// One session's packets by kind: kept by the live session (the
/// pipeline's `Session`) and listed in its [`SessionSummary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub packets: u64,
    /// Bytes of the inner frames as sent (original length).
    pub bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
}

/// Per-session figures for the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    /// The session's [`SessionStats::id`].
    pub id: u64,
    pub vni: u32,
    pub source: std::net::IpAddr,
    pub counts: SessionCounts,
    pub files: u64,
}

/// What `run` and `replay` print when they stop, like tcpdump's
/// "N packets captured / N dropped by kernel".
#[derive(Debug, Default)]
pub struct Summary {
    /// Files the run left complete on disk (closed and renamed).
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub frames_written: u64,
    pub kernel_drops: u64,
    pub host_backlog_drops: u64,
    pub drops: Vec<(DropReason, u64)>,
    /// The sessions in the tables at the end.
    pub sessions: Vec<SessionSummary>,
    /// Sessions freed before the end (idle or evicted): how many, their
    /// packets and bytes; and of them, how many were evicted or idle.
    pub sessions_retired: SessionTotals,
    pub sessions_evicted: u64,
    pub sessions_freed: u64,
    /// Most sessions listed one by one (`metrics_max_sessions`): the
    /// busiest; the rest are summed in one line.
    pub sessions_listed: usize,
    /// Packets each mirror-filter rule decided.
    pub rules: Vec<RuleCount>,
    pub files_written: u64,
    pub files_deleted: u64,
    pub flow_records: u64,
    pub flow_nodata: u64,
    pub flow_early_flushes: u64,
    pub flow_records_lost: u64,
}

impl Summary {
    /// The summary of the counters and of `sessions` (the sessions in the
    /// tables at the end). Their file counts are read again here: the
    /// writer thread counts a file when it is renamed, which for the
    /// first of several workers can be after its sessions were listed.
    pub fn from_counters(
        c: &Counters,
        mut sessions: Vec<SessionSummary>,
        rules: Vec<RuleCount>,
    ) -> Summary {
        let reg = c.registry();
        for s in &mut sessions {
            if let Some(st) = reg.live.get(&s.id) {
                s.files = st.files.load(Relaxed);
            }
        }
        let (sessions_retired, sessions_listed) = (reg.retired, reg.max_labelled);
        drop(reg);
        Summary {
            sessions_retired,
            sessions_listed,
            sessions_evicted: c.sessions_evicted.load(Relaxed),
            sessions_freed: c.sessions_freed.load(Relaxed),
            datagrams_received: c.datagrams_received.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            frames_written: c.frames_written.load(Relaxed),
            kernel_drops: c.kernel_drops.load(Relaxed),
            host_backlog_drops: c.host_backlog_drops.load(Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r, c.drops(r)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            sessions,
            rules,
            // Made minus lost: what is in the flow files.
            flow_records: (c.flow_records.load(Relaxed) + c.flow_nodata.load(Relaxed))
                .saturating_sub(c.flow_records_lost.load(Relaxed)),
            flow_nodata: c.flow_nodata.load(Relaxed),
            flow_early_flushes: c.flow_early_flushes.load(Relaxed),
            flow_records_lost: c.flow_records_lost.load(Relaxed),
            files_written: c.files_closed.load(Relaxed),
            files_deleted: c.files_deleted.load(Relaxed),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} datagrams received ({} bytes)",
            self.datagrams_received, self.bytes_received
        )?;
        writeln!(f, "{} frames written", self.frames_written)?;
        writeln!(f, "{} datagrams dropped by kernel", self.kernel_drops)?;
        if self.host_backlog_drops > 0 {
            writeln!(
                f,
                "{} packets dropped by the host's network backlog before reaching any socket \
                 (all traffic on this host, not only mirrored; raise net.core.netdev_max_backlog)",
                self.host_backlog_drops
            )?;
        }
        let dropped: u64 = self.drops.iter().map(|d| d.1).sum();
        writeln!(f, "{dropped} datagrams dropped or skipped by mirrorcap")?;
        for (reason, n) in &self.drops {
            let kind = if reason.intentional() {
                "skipped"
            } else {
                "dropped"
            };
            writeln!(f, "  {n:>10} {kind} {reason} (stage {})", reason.stage())?;
        }
        for r in &self.rules {
            writeln!(
                f,
                "  {:>10} {} by {} {} rule {} ({})",
                r.packets,
                if r.action == "accept" {
                    "kept"
                } else {
                    "dropped"
                },
                r.filter,
                r.direction,
                r.rule,
                r.action
            )?;
        }
        let seen = self.sessions.len() as u64 + self.sessions_retired.sessions;
        writeln!(
            f,
            "{seen} sessions, {} files written, {} files deleted by retention",
            self.files_written, self.files_deleted
        )?;
        if self.sessions_evicted > 0 {
            writeln!(
                f,
                "  {:>10} sessions evicted (least recently active, to make room: max_sessions or max_open_files reached)",
                self.sessions_evicted
            )?;
        }
        if self.sessions_freed > 0 {
            writeln!(
                f,
                "  {:>10} sessions freed after idle_timeout without a packet",
                self.sessions_freed
            )?;
        }
        if self.flow_records + self.flow_records_lost > 0 {
            writeln!(
                f,
                "{} flow records written ({} NODATA), {} windows written early (flows.max_flows)",
                self.flow_records, self.flow_nodata, self.flow_early_flushes
            )?;
        }
        if self.flow_records_lost > 0 {
            writeln!(
                f,
                "{} flow records lost (flow files could not be written)",
                self.flow_records_lost
            )?;
        }
        // The busiest sessions one by one, the rest (and the freed) summed.
        let mut busiest: Vec<&SessionSummary> = self.sessions.iter().collect();
        busiest.sort_by_key(|s| (std::cmp::Reverse(s.counts.packets), s.vni, s.source));
        let listed = busiest.len().min(self.sessions_listed);
        for s in &busiest[..listed] {
            let c = &s.counts;
            writeln!(
                f,
                "  vni {} source {}: {} packets, {} bytes (ipv4 {}, ipv6 {}, tcp {}, udp {}, other {}), {} files",
                s.vni, s.source, c.packets, c.bytes, c.ipv4, c.ipv6, c.tcp, c.udp, c.other, s.files
            )?;
        }
        let mut rest = self.sessions_retired;
        for s in &busiest[listed..] {
            rest.sessions += 1;
            rest.packets += s.counts.packets;
            rest.bytes += s.counts.bytes;
        }
        if rest.sessions > 0 {
            writeln!(
                f,
                "  … and {} more sessions: {} packets, {} bytes{}",
                rest.sessions,
                rest.packets,
                rest.bytes,
                if self.sessions_retired.sessions > 0 {
                    format!(
                        " ({} of them freed before the end)",
                        self.sessions_retired.sessions
                    )
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}

/// Lets a log line through at most once per `every`, and says how many were
/// held back in between: per-packet problems become periodic summaries.
#[derive(Debug)]
pub struct LogLimiter {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(every: std::time::Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were held back
    /// since the last one), `None` when this one is held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
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

/// Logs, at most once per interval, how many datagrams were dropped since
/// the last report, by reason.
#[derive(Debug)]
pub struct DropReport {
    every: std::time::Duration,
    last: std::time::Instant,
    seen: [u64; N_REASONS],
    kernel_seen: u64,
    host_backlog_seen: u64,
}

impl DropReport {
    pub fn new(every: std::time::Duration) -> DropReport {
        DropReport {
            every,
            last: std::time::Instant::now(),
            seen: [0; N_REASONS],
            kernel_seen: 0,
            host_backlog_seen: 0,
        }
    }

    pub fn maybe_log(&mut self, c: &Counters) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = std::time::Instant::now();
        let mut parts = Vec::new();
        for r in DropReason::ALL {
            let now = c.drops(r);
            let new = now - self.seen[r as usize];
            self.seen[r as usize] = now;
            if new > 0 && !r.intentional() {
                parts.push(format!("{r}={new}"));
            }
        }
        let k = c.kernel_drops.load(Relaxed);
        if k > self.kernel_seen {
            parts.push(format!("kernel_overflow={}", k - self.kernel_seen));
            self.kernel_seen = k;
        }
        let h = c.host_backlog_drops.load(Relaxed);
        if h > self.host_backlog_seen {
            parts.push(format!(
                "host_backlog={} (before any socket, all traffic; net.core.netdev_max_backlog)",
                h - self.host_backlog_seen
            ));
            self.host_backlog_seen = h;
        }
        if !parts.is_empty() {
            tracing::warn!(
                "datagrams dropped in the last {:?}: {}",
                self.every,
                parts.join(" ")
            );
        }
    }
}

/// The Prometheus text exposition of every counter (format 0.0.4).
/// Names follow `mirrorcap_<name>_<unit>_total`; label values come from
/// small fixed sets, except the session labels (vni, source).
pub fn render_prometheus(c: &Counters) -> String {
    use std::fmt::Write as _;
    let mut o = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let one = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
    metric(
        "mirrorcap_received_datagrams_total",
        "counter",
        "Datagrams received (live) or capture records read (replay).",
        &one(&c.datagrams_received),
    );
    metric(
        "mirrorcap_received_bytes_total",
        "counter",
        "Bytes of the datagrams received.",
        &one(&c.bytes_received),
    );
    metric(
        "mirrorcap_written_frames_total",
        "counter",
        "Inner frames written to capture files.",
        &one(&c.frames_written),
    );
    metric(
        "mirrorcap_written_bytes_total",
        "counter",
        "Bytes of inner frames written (captured length).",
        &one(&c.frame_bytes_written),
    );
    let mut drops: Vec<(String, u64)> = DropReason::ALL
        .iter()
        .map(|r| {
            (
                format!(
                    "{{stage=\"{}\",reason=\"{}\",intentional=\"{}\"}}",
                    r.stage(),
                    r.name(),
                    r.intentional()
                ),
                c.drops(*r),
            )
        })
        .collect();
    drops.push((
        "{stage=\"socket\",reason=\"kernel_overflow\",intentional=\"false\"}".into(),
        c.kernel_drops.load(Relaxed),
    ));
    metric(
        "mirrorcap_dropped_datagrams_total",
        "counter",
        "Datagrams not written, by stage and reason.",
        &drops,
    );
    metric(
        "mirrorcap_host_backlog_drops_total",
        "counter",
        "Packets the host's per-CPU network backlog dropped since start, before any socket (all traffic on the host; net.core.netdev_max_backlog).",
        &one(&c.host_backlog_drops),
    );
    // At most `metrics_max_sessions` sessions have their own series; the
    // others (live or freed) are summed in `vni="other"`.
    let reg = c.registry();
    let mut own: Vec<&SessionStats> = reg
        .live
        .values()
        .filter(|s| s.labelled)
        .map(|s| &**s)
        .collect();
    own.sort_by_key(|s| (s.vni, s.source, s.id));
    let label = |s: &SessionStats| format!("{{vni=\"{}\",source=\"{}\"}}", s.vni, s.source);
    let mut packets: Vec<_> = own
        .iter()
        .map(|s| (label(s), s.packets.load(Relaxed)))
        .collect();
    let mut bytes: Vec<_> = own
        .iter()
        .map(|s| (label(s), s.bytes.load(Relaxed)))
        .collect();
    let mut other = (reg.retired_other.packets, reg.retired_other.bytes);
    for s in reg.live.values().filter(|s| !s.labelled) {
        other.0 += s.packets.load(Relaxed);
        other.1 += s.bytes.load(Relaxed);
    }
    let tracked = reg.live.len() as u64;
    drop(own);
    drop(reg);
    let other_label = "{vni=\"other\",source=\"other\"}".to_string();
    packets.push((other_label.clone(), other.0));
    bytes.push((other_label, other.1));
    metric(
        "mirrorcap_session_packets_total",
        "counter",
        "Inner frames kept per mirror session (at most metrics_max_sessions sessions; vni=\"other\" sums the rest, freed ones included).",
        &packets,
    );
    metric(
        "mirrorcap_session_bytes_total",
        "counter",
        "Bytes (on the wire) of the inner frames kept per mirror session (vni=\"other\": the rest).",
        &bytes,
    );
    metric(
        "mirrorcap_sessions_total",
        "counter",
        "Mirror sessions seen.",
        &one(&c.sessions),
    );
    metric(
        "mirrorcap_tracked_sessions",
        "gauge",
        "Sessions in the session tables now (a session is freed after idle_timeout without a packet).",
        &[(String::new(), tracked)],
    );
    metric(
        "mirrorcap_sessions_evicted_total",
        "counter",
        "Sessions freed to make room for a new one (max_sessions or max_open_files reached): the least recently active, never one named in [[session]] or vnis.",
        &one(&c.sessions_evicted),
    );
    metric(
        "mirrorcap_sessions_freed_total",
        "counter",
        "Sessions freed after idle_timeout without a packet.",
        &one(&c.sessions_freed),
    );
    metric(
        "mirrorcap_active_sessions",
        "gauge",
        "Sessions with a capture file open now.",
        &one(&c.open_files),
    );
    metric(
        "mirrorcap_files_opened_total",
        "counter",
        "Capture files created.",
        &one(&c.files_opened),
    );
    metric(
        "mirrorcap_files_rotated_total",
        "counter",
        "Capture files closed and renamed (rotation, idle timeout, shutdown).",
        &one(&c.files_closed),
    );
    metric(
        "mirrorcap_files_deleted_total",
        "counter",
        "Capture files deleted by retention.",
        &one(&c.files_deleted),
    );
    metric(
        "mirrorcap_output_bytes",
        "gauge",
        "Bytes of capture files under the output directory.",
        &one(&c.output_bytes),
    );
    metric(
        "mirrorcap_hook_runs_total",
        "counter",
        "on_rotate commands started.",
        &one(&c.hook_runs),
    );
    metric(
        "mirrorcap_hook_failures_total",
        "counter",
        "on_rotate commands that failed or were not run.",
        &one(&c.hook_failures),
    );
    metric(
        "mirrorcap_flow_write_errors_total",
        "counter",
        "Flow files that could not be created, written, synced or renamed.",
        &one(&c.flow_write_errors),
    );
    metric(
        "mirrorcap_flow_records_lost_total",
        "counter",
        "Flow records lost because their file could not be written.",
        &one(&c.flow_records_lost),
    );
    let mut rules = Vec::new();
    for f in c.filters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for r in f.rule_counts() {
            rules.push((
                format!(
                    "{{filter=\"{}\",direction=\"{}\",rule=\"{}\",action=\"{}\"}}",
                    r.filter, r.direction, r.rule, r.action
                ),
                r.packets,
            ));
        }
    }
    metric(
        "mirrorcap_filter_rule_packets_total",
        "counter",
        "Packets each mirror-filter rule decided (kept if accept, dropped if reject).",
        &rules,
    );
    let healthy = u64::from(c.unhealthy().is_none());
    metric(
        "mirrorcap_healthy",
        "gauge",
        "1 while capture and flow files can be written.",
        &[(String::new(), healthy)],
    );
    o
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
        assert!(render_prometheus(&c).contains("mirrorcap_healthy 0"));
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
