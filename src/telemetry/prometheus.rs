//! The `/metrics` text: every counter, rendered at scrape time.
//!
//! In: the [`Counters`] (read, never reset). Out: the Prometheus text
//! exposition (format 0.0.4, [`render_prometheus`]) or OpenMetrics 1.0
//! ([`render_openmetrics`], for scrapers that ask for it), both encoded by
//! `prometheus-client`: a scrape copies the counters into a [`Scrape`]
//! (one [`Family`] per metric) and hands it to the crate as a
//! [`Collector`] in a registry made for that scrape, so the hot path keeps
//! its own atomics and the crate does the names, escaping and format.
//! Nothing is dropped: every drop reason, error kind and rule has a series,
//! zero included; sessions beyond `metrics_max_sessions` are summed in the
//! `vni="other"` series.
//!
//! Names are `mirrorcap_<name>_<unit>_total` for counters (the crate adds
//! `_total`, so the families below are named without it) and
//! `mirrorcap_<name>` for gauges; label values come from small fixed sets,
//! except the session labels (vni, source) and the rule labels.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::telemetry::counters::{Counters, DropReason, ErrorKind, SessionStats};

/// `Content-Type` of [`render_prometheus`].
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of [`render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of one series: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// One metric: its name (counters without `_total`), help, type and series.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, u64)>,
}

/// The counters as they were at one scrape.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn counter(&mut self, name: &'static str, help: &'static str, series: Vec<(Labels, u64)>) {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder adds _total");
        self.families.push(Family {
            name,
            help,
            kind: MetricType::Counter,
            series,
        });
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.families.push(Family {
            name,
            help,
            kind: MetricType::Gauge,
            series: vec![(Labels::new(), v)],
        });
    }

    fn one(&mut self, name: &'static str, help: &'static str, v: &AtomicU64) {
        self.counter(name, help, vec![(Labels::new(), v.load(Relaxed))]);
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in &self.families {
            let mut m = encoder.encode_descriptor(fam.name, fam.help, None, fam.kind)?;
            for (labels, v) in &fam.series {
                if labels.is_empty() {
                    value(&mut m, fam.kind, *v)?;
                } else {
                    value(&mut m.encode_family(labels)?, fam.kind, *v)?;
                }
            }
        }
        Ok(())
    }
}

fn value(m: &mut MetricEncoder, kind: MetricType, v: u64) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => m.encode_counter::<NoLabelSet, u64, u64>(&v, None),
        _ => m.encode_gauge(&v),
    }
}

/// The Prometheus text exposition (format 0.0.4) of every counter.
pub fn render_prometheus(c: &Counters) -> String {
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail, nor can encoding plain integers.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry(c));
    out
}

/// The OpenMetrics 1.0 text of every counter (ends in `# EOF`).
pub fn render_openmetrics(c: &Counters) -> String {
    let mut out = String::with_capacity(8192);
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry(c));
    out
}

/// `/metrics`' answer: OpenMetrics when the scraper's `Accept` header asks
/// for it (Prometheus does), else the 0.0.4 text; (content type, body).
pub fn render_for(accept: &str, c: &Counters) -> (&'static str, String) {
    if accept.contains("application/openmetrics-text") {
        (OPENMETRICS_CONTENT_TYPE, render_openmetrics(c))
    } else {
        (PROMETHEUS_CONTENT_TYPE, render_prometheus(c))
    }
}

/// A registry for one scrape, holding the counters as they are now.
fn registry(c: &Counters) -> Registry {
    let mut s = Scrape::default();
    traffic(&mut s, c);
    sessions(&mut s, c);
    files(&mut s, c);
    rules_errors_health(&mut s, c);
    let mut r = Registry::default();
    r.register_collector(Box::new(s));
    r
}

/// Received, written and dropped.
fn traffic(s: &mut Scrape, c: &Counters) {
    s.one(
        "mirrorcap_received_datagrams",
        "Datagrams received (live) or capture records read (replay).",
        &c.datagrams_received,
    );
    s.one(
        "mirrorcap_received_bytes",
        "Bytes of the datagrams received.",
        &c.bytes_received,
    );
    s.one(
        "mirrorcap_written_frames",
        "Inner frames written to capture files.",
        &c.frames_written,
    );
    s.one(
        "mirrorcap_written_bytes",
        "Bytes of inner frames written (captured length).",
        &c.frame_bytes_written,
    );
    let label = |stage: &str, reason: &str, intentional: bool| -> Labels {
        vec![
            ("stage", stage.to_string()),
            ("reason", reason.to_string()),
            ("intentional", intentional.to_string()),
        ]
    };
    let mut drops: Vec<(Labels, u64)> = DropReason::ALL
        .iter()
        .map(|r| (label(r.stage(), r.name(), r.intentional()), c.drops(*r)))
        .collect();
    drops.push((
        label("socket", "kernel_overflow", false),
        c.kernel_drops.load(Relaxed),
    ));
    s.counter(
        "mirrorcap_dropped_datagrams",
        "Datagrams not written, by stage and reason.",
        drops,
    );
    s.one(
        "mirrorcap_host_backlog_drops",
        "Packets the host's per-CPU network backlog dropped since start, before any socket (all traffic on the host; net.core.netdev_max_backlog).",
        &c.host_backlog_drops,
    );
}

/// Per-session series: at most `metrics_max_sessions` sessions have their
/// own; the others (live or freed) are summed in `vni="other"`.
fn sessions(s: &mut Scrape, c: &Counters) {
    let reg = c.registry();
    let mut own: Vec<&SessionStats> = reg
        .live
        .values()
        .filter(|s| s.labelled)
        .map(|s| &**s)
        .collect();
    own.sort_by_key(|s| (s.vni, s.source, s.id));
    let label = |s: &SessionStats| -> Labels {
        vec![("vni", s.vni.to_string()), ("source", s.source.to_string())]
    };
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
    let other_label = || -> Labels { vec![("vni", "other".into()), ("source", "other".into())] };
    packets.push((other_label(), other.0));
    bytes.push((other_label(), other.1));
    s.counter(
        "mirrorcap_session_packets",
        "Inner frames kept per mirror session (at most metrics_max_sessions sessions; vni=\"other\" sums the rest, freed ones included).",
        packets,
    );
    s.counter(
        "mirrorcap_session_bytes",
        "Bytes (on the wire) of the inner frames kept per mirror session (vni=\"other\": the rest).",
        bytes,
    );
    s.one("mirrorcap_sessions", "Mirror sessions seen.", &c.sessions);
    s.gauge(
        "mirrorcap_tracked_sessions",
        "Sessions in the session tables now (a session is freed after idle_timeout without a packet).",
        tracked,
    );
    s.one(
        "mirrorcap_sessions_evicted",
        "Sessions freed to make room for a new one (max_sessions or max_open_files reached): the least recently active, never one named in [[session]] or vnis.",
        &c.sessions_evicted,
    );
    s.one(
        "mirrorcap_sessions_freed",
        "Sessions freed after idle_timeout without a packet.",
        &c.sessions_freed,
    );
}

/// Capture files, `on_rotate` hooks and flow files.
fn files(s: &mut Scrape, c: &Counters) {
    s.gauge(
        "mirrorcap_active_sessions",
        "Sessions with a capture file open now.",
        c.open_files.load(Relaxed),
    );
    s.one(
        "mirrorcap_files_opened",
        "Capture files created.",
        &c.files_opened,
    );
    s.one(
        "mirrorcap_files_rotated",
        "Capture files closed and renamed (rotation, idle timeout, shutdown).",
        &c.files_closed,
    );
    s.one(
        "mirrorcap_files_deleted",
        "Capture files deleted by retention.",
        &c.files_deleted,
    );
    s.gauge(
        "mirrorcap_output_bytes",
        "Bytes of capture files under the output directory.",
        c.output_bytes.load(Relaxed),
    );
    s.one(
        "mirrorcap_hook_runs",
        "on_rotate commands started.",
        &c.hook_runs,
    );
    s.one(
        "mirrorcap_hook_failures",
        "on_rotate commands that failed or were not run.",
        &c.hook_failures,
    );
    s.one(
        "mirrorcap_flow_write_errors",
        "Flow files that could not be created, written, synced or renamed.",
        &c.flow_write_errors,
    );
    s.one(
        "mirrorcap_flow_records_lost",
        "Flow records lost because their file could not be written.",
        &c.flow_records_lost,
    );
}

/// Per-rule counts, the errors the internal events counted, and health.
fn rules_errors_health(s: &mut Scrape, c: &Counters) {
    let mut rules = Vec::new();
    for f in c.filters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for r in f.rule_counts() {
            let labels: Labels = vec![
                ("filter", r.filter),
                ("direction", r.direction.to_string()),
                ("rule", r.rule),
                ("action", r.action.to_string()),
            ];
            rules.push((labels, r.packets));
        }
    }
    s.counter(
        "mirrorcap_filter_rule_packets",
        "Packets each mirror-filter rule decided (kept if accept, dropped if reject).",
        rules,
    );
    let errors = ErrorKind::ALL
        .iter()
        .map(|&k| (vec![("kind", k.name().to_string())], c.errors(k)))
        .collect();
    s.counter(
        "mirrorcap_errors",
        "Errors logged that are not a dropped datagram, by kind (accept and bind failures of the listeners, receive errors, reloads refused).",
        errors,
    );
    s.gauge(
        "mirrorcap_healthy",
        "1 while capture and flow files can be written.",
        u64::from(c.unhealthy().is_none()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series keeps its name: one `_total` on counters (the encoder
    /// adds it), none on gauges; OpenMetrics ends in `# EOF`.
    #[test]
    fn names_keep_one_total_suffix() {
        let c = Counters::default();
        c.received(100);
        c.count_error(ErrorKind::Reload);
        let text = render_prometheus(&c);
        assert!(!text.contains("_total_total"), "{text}");
        assert!(
            text.contains("# TYPE mirrorcap_received_datagrams_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nmirrorcap_received_datagrams_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nmirrorcap_received_bytes_total 100\n"),
            "{text}"
        );
        assert!(
            text.contains("\nmirrorcap_errors_total{kind=\"reload\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nmirrorcap_healthy 1\n"), "{text}");
        assert!(text.contains(
            "\nmirrorcap_dropped_datagrams_total{stage=\"socket\",reason=\"kernel_overflow\",intentional=\"false\"} 0\n"
        ), "{text}");
        assert!(!text.contains("# EOF"));
        let om = render_openmetrics(&c);
        assert!(!om.contains("_total_total"), "{om}");
        assert!(
            om.contains("# TYPE mirrorcap_received_datagrams counter\n"),
            "{om}"
        );
        assert!(
            om.contains("\nmirrorcap_received_datagrams_total 1\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert_eq!(render_for("*/*", &c).0, PROMETHEUS_CONTENT_TYPE);
        assert_eq!(
            render_for("application/openmetrics-text;version=1.0.0", &c).0,
            OPENMETRICS_CONTENT_TYPE
        );
    }
}
