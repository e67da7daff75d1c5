//! The summary `run` and `replay` print when they stop, like tcpdump's
//! "N packets captured / N dropped by kernel".
//!
//! In: the [`Counters`] at the end, the sessions still in the tables and
//! the per-rule counts. Out: a [`Summary`] value (tests and exit codes read
//! its fields) and its text ([`std::fmt::Display`]). The busiest
//! `metrics_max_sessions` sessions are listed one by one; the rest are
//! summed in one line, nothing is left out of the totals.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use crate::telemetry::counters::{Counters, DropReason, RuleCount, SessionTotals};

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
    /// The session's [`crate::telemetry::counters::SessionStats::id`].
    pub id: u64,
    pub vni: u32,
    pub source: std::net::IpAddr,
    /// The Gateway Load Balancer endpoint (`vpce-…`) of a GENEVE-borne
    /// session; `None` for direct traffic.
    pub endpoint: Option<String>,
    pub counts: SessionCounts,
    pub files: u64,
}

/// What `run` and `replay` print when they stop, like tcpdump's
/// "N packets captured / N dropped by kernel".
#[derive(Debug, Default)]
pub struct Summary {
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
    /// Files the run left complete on disk (closed and renamed).
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
        self.fmt_traffic(f)?;
        self.fmt_rules(f)?;
        self.fmt_sessions(f)?;
        self.fmt_flows(f)?;
        self.fmt_busiest(f)
    }
}

impl Summary {
    /// Received, written, and dropped by the kernel, the host and us.
    fn fmt_traffic(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }

    /// Packets each mirror-filter rule decided.
    fn fmt_rules(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }

    /// Sessions seen, evicted and freed; files written and deleted.
    fn fmt_sessions(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }

    /// Flow records written, and lost.
    fn fmt_flows(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }

    /// The busiest sessions one by one, the rest (and the freed) summed.
    fn fmt_busiest(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The busiest sessions one by one, the rest (and the freed) summed.
        let mut busiest: Vec<&SessionSummary> = self.sessions.iter().collect();
        busiest.sort_by(|a, b| {
            (
                std::cmp::Reverse(a.counts.packets),
                a.vni,
                a.source,
                &a.endpoint,
            )
                .cmp(&(
                    std::cmp::Reverse(b.counts.packets),
                    b.vni,
                    b.source,
                    &b.endpoint,
                ))
        });
        let listed = busiest.len().min(self.sessions_listed);
        for s in &busiest[..listed] {
            let c = &s.counts;
            writeln!(
                f,
                "  vni {} source {}{}{}: {} packets, {} bytes (ipv4 {}, ipv6 {}, tcp {}, udp {}, other {}), {} files",
                s.vni,
                s.source,
                if s.endpoint.is_some() {
                    " endpoint "
                } else {
                    ""
                },
                s.endpoint.as_deref().unwrap_or(""),
                c.packets,
                c.bytes,
                c.ipv4,
                c.ipv6,
                c.tcp,
                c.udp,
                c.other,
                s.files
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
