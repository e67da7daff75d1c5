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

/// Why a datagram (or, in replay, a capture record) was not written.
///
/// `stage` and `intentional` label the reason for metrics: an intentional drop
/// is the operator's choice (a VNI excluded, a port that is not VXLAN); the
/// others are losses or malformed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Replay: a record whose link type or EtherType is not IPv4/IPv6.
    NotIp,
    /// Replay: an IP packet that is not UDP.
    NotUdp,
    /// Replay: a UDP datagram to a port not in `vxlan_ports`.
    NotVxlanPort,
    /// Replay: the outer IP/UDP headers are malformed or cut by the capture's
    /// snap length before the end of the VXLAN header.
    OuterMalformed,
    /// Replay: an outer IP fragment that could not be reassembled.
    OuterFragment,
    /// Live: the kernel cut the datagram (larger than the receive buffer).
    DatagramTruncated,
    /// Shorter than the 8-byte VXLAN header.
    VxlanTooShort,
    /// The VXLAN I flag (0x08) is not set.
    VxlanNoIFlag,
    /// The inner frame is shorter than an Ethernet header (14 bytes).
    InnerTooShort,
    /// The VNI is not in `vnis` or is in `exclude_vnis`.
    VniExcluded,
    /// Mirror-filter rules exist and none of the packet's direction accepts it.
    NoRuleMatched,
    /// The first matching mirror-filter rule rejects it.
    RuleRejected,
    /// The session's tcpdump expression does not accept it.
    Bpf,
    /// Writing the frame failed (I/O error other than disk full).
    WriteError,
    /// The output file system is full.
    DiskFull,
    /// Live: the writer thread is behind (disk slower than the traffic)
    /// and no buffer was free.
    WriteBacklog,
    /// The outer source address is not in `allow_sources`.
    SourceNotAllowed,
    /// A new session beyond `max_sessions`.
    SessionLimit,
    /// A file beyond `max_open_files` would have been opened.
    OpenFileLimit,
    /// Live: still queued in the socket when the daemon stopped and the
    /// drain after SIGTERM ran out of time; read and counted, not written.
    UnreadAtStop,
}

impl DropReason {
    pub const ALL: [DropReason; 20] = [
        DropReason::NotIp,
        DropReason::NotUdp,
        DropReason::NotVxlanPort,
        DropReason::OuterMalformed,
        DropReason::OuterFragment,
        DropReason::DatagramTruncated,
        DropReason::VxlanTooShort,
        DropReason::VxlanNoIFlag,
        DropReason::InnerTooShort,
        DropReason::VniExcluded,
        DropReason::NoRuleMatched,
        DropReason::RuleRejected,
        DropReason::Bpf,
        DropReason::WriteError,
        DropReason::DiskFull,
        DropReason::WriteBacklog,
        DropReason::SourceNotAllowed,
        DropReason::SessionLimit,
        DropReason::OpenFileLimit,
        DropReason::UnreadAtStop,
    ];

    /// The `reason` label: lowercase, stable, used in metrics and the summary.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotIp => "not_ip",
            DropReason::NotUdp => "not_udp",
            DropReason::NotVxlanPort => "not_vxlan_port",
            DropReason::OuterMalformed => "outer_malformed",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::DatagramTruncated => "datagram_truncated",
            DropReason::VxlanTooShort => "vxlan_too_short",
            DropReason::VxlanNoIFlag => "vxlan_no_i_flag",
            DropReason::InnerTooShort => "inner_too_short",
            DropReason::VniExcluded => "vni_excluded",
            DropReason::NoRuleMatched => "no_rule_matched",
            DropReason::RuleRejected => "rule_rejected",
            DropReason::Bpf => "bpf",
            DropReason::WriteError => "write_error",
            DropReason::DiskFull => "disk_full",
            DropReason::WriteBacklog => "write_backlog",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::SessionLimit => "session_limit",
            DropReason::OpenFileLimit => "open_file_limit",
            DropReason::UnreadAtStop => "unread_at_stop",
        }
    }

    /// The `stage` label: which pipeline stage dropped it.
    pub fn stage(self) -> &'static str {
        match self {
            DropReason::NotIp
            | DropReason::NotUdp
            | DropReason::NotVxlanPort
            | DropReason::OuterMalformed
            | DropReason::OuterFragment => "replay",
            DropReason::DatagramTruncated | DropReason::UnreadAtStop => "socket",
            DropReason::VxlanTooShort | DropReason::VxlanNoIFlag | DropReason::InnerTooShort => {
                "vxlan"
            }
            DropReason::VniExcluded
            | DropReason::NoRuleMatched
            | DropReason::RuleRejected
            | DropReason::Bpf => "filter",
            DropReason::WriteError
            | DropReason::DiskFull
            | DropReason::WriteBacklog
            | DropReason::OpenFileLimit => "writer",
            DropReason::SourceNotAllowed => "source",
            DropReason::SessionLimit => "session",
        }
    }

    /// Whether the drop is the operator's choice rather than a loss.
    pub fn intentional(self) -> bool {
        matches!(
            self,
            DropReason::NotIp
                | DropReason::NotUdp
                | DropReason::NotVxlanPort
                | DropReason::VniExcluded
                | DropReason::NoRuleMatched
                | DropReason::RuleRejected
                | DropReason::Bpf
                | DropReason::SourceNotAllowed
        )
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
    /// Mirror sessions seen.
    pub sessions: AtomicU64,
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
    drops: [AtomicU64; N_REASONS],
    /// Every session's packet and byte counters, for the metrics endpoint.
    pub session_stats: std::sync::Mutex<Vec<std::sync::Arc<SessionStats>>>,
    /// The filters in force (replaced on reload), for per-rule metrics.
    pub filters: std::sync::Mutex<Vec<std::sync::Arc<crate::filter::MirrorFilter>>>,
    /// Why output cannot be written now (`None` while writing works): read
    /// by `/healthz` and the TCP health check.
    pub output_error: std::sync::Mutex<Option<String>>,
    output_failing: std::sync::atomic::AtomicBool,
}

/// One session's counters, shared with the metrics endpoint.
#[derive(Debug)]
pub struct SessionStats {
    pub vni: u32,
    pub source: std::net::IpAddr,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
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

    /// Registers a new session's counters.
    pub fn new_session(&self, vni: u32, source: std::net::IpAddr) -> std::sync::Arc<SessionStats> {
        let st = std::sync::Arc::new(SessionStats {
            vni,
            source,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        self.sessions.fetch_add(1, Relaxed);
        self.session_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(st.clone());
        st
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

    /// `None` while healthy, else why not.
    pub fn unhealthy(&self) -> Option<String> {
        self.output_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

/// Per-session figures for the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub vni: u32,
    pub source: std::net::IpAddr,
    pub packets: u64,
    pub bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
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
    pub sessions: Vec<SessionSummary>,
    /// Packets each mirror-filter rule decided.
    pub rules: Vec<crate::filter::RuleCount>,
    pub files_written: u64,
    pub files_deleted: u64,
    pub flow_records: u64,
    pub flow_nodata: u64,
    pub flow_early_flushes: u64,
}

impl Summary {
    pub fn from_counters(
        c: &Counters,
        sessions: Vec<SessionSummary>,
        rules: Vec<crate::filter::RuleCount>,
    ) -> Summary {
        Summary {
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
            flow_records: c.flow_records.load(Relaxed) + c.flow_nodata.load(Relaxed),
            flow_nodata: c.flow_nodata.load(Relaxed),
            flow_early_flushes: c.flow_early_flushes.load(Relaxed),
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
        writeln!(
            f,
            "{} sessions, {} files written, {} files deleted by retention",
            self.sessions.len(),
            self.files_written,
            self.files_deleted
        )?;
        if self.flow_records > 0 {
            writeln!(
                f,
                "{} flow records written ({} NODATA), {} windows written early (flows.max_flows)",
                self.flow_records, self.flow_nodata, self.flow_early_flushes
            )?;
        }
        for s in &self.sessions {
            writeln!(
                f,
                "  vni {} source {}: {} packets, {} bytes (ipv4 {}, ipv6 {}, tcp {}, udp {}, other {}), {} files",
                s.vni, s.source, s.packets, s.bytes, s.ipv4, s.ipv6, s.tcp, s.udp, s.other, s.files
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
    let stats = c.session_stats.lock().unwrap_or_else(|e| e.into_inner());
    let label = |s: &SessionStats| format!("{{vni=\"{}\",source=\"{}\"}}", s.vni, s.source);
    let packets: Vec<_> = stats
        .iter()
        .map(|s| (label(s), s.packets.load(Relaxed)))
        .collect();
    let bytes: Vec<_> = stats
        .iter()
        .map(|s| (label(s), s.bytes.load(Relaxed)))
        .collect();
    drop(stats);
    metric(
        "mirrorcap_session_packets_total",
        "counter",
        "Inner frames kept per mirror session.",
        &packets,
    );
    metric(
        "mirrorcap_session_bytes_total",
        "counter",
        "Bytes (on the wire) of the inner frames kept per mirror session.",
        &bytes,
    );
    metric(
        "mirrorcap_sessions_total",
        "counter",
        "Mirror sessions seen.",
        &one(&c.sessions),
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
        "1 while capture files can be written.",
        &[(String::new(), healthy)],
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

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
