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

/// `/metrics`' answer: OpenMetrics when the scraper's `Accept` header
/// prefers it ([`prefers_openmetrics`]; Prometheus does), else the 0.0.4
/// text; (content type, body).
pub fn render_for(accept: &str, c: &Counters) -> (&'static str, String) {
    if prefers_openmetrics(accept) {
        (OPENMETRICS_CONTENT_TYPE, render_openmetrics(c))
    } else {
        (PROMETHEUS_CONTENT_TYPE, render_prometheus(c))
    }
}

/// Whether an `Accept` header (RFC 9110 media ranges with q-values) asks
/// for OpenMetrics: it must be named (`application/openmetrics-text`, any
/// version; a wildcard alone does not ask for it), acceptable (q > 0), and
/// wanted at least as much as the text, whose q is that of its most
/// specific range (`text/plain`, else `text/*`, else `*/*`; 0 if none).
/// Without a header, or with one not naming it: the text.
pub fn prefers_openmetrics(accept: &str) -> bool {
    // Best q of openmetrics, and of text/plain, text/*, */*.
    let mut om: Option<f32> = None;
    let mut text: [Option<f32>; 3] = [None; 3];
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut om,
            "text/plain" => &mut text[0],
            "text/*" => &mut text[1],
            "*/*" => &mut text[2],
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    let text = text.into_iter().flatten().next().unwrap_or(0.0);
    om.is_some_and(|om| om > 0.0 && om >= text)
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
    s.counter(
        "mirrorcap_stream_dropped_frames",
        "Frames live subscribers (mirrorcap stream) could not take because their queue was full; still written to the capture files.",
        vec![(
            vec![("reason", "stream_backlog".to_string())],
            c.stream_dropped.load(Relaxed),
        )],
    );
    s.counter(
        "mirrorcap_stream_refused_connections",
        "Connections the control socket turned away, by reason: connections (too many at once), request (none in time, too long, not valid), subscribers (max_subscribers reached or stopping), selection (bad filter or endpoint).",
        crate::telemetry::counters::StreamRefusal::ALL
            .iter()
            .map(|r| {
                (
                    vec![("reason", r.name().to_string())],
                    c.stream_refused[*r as usize].load(Relaxed),
                )
            })
            .collect(),
    );
    s.gauge(
        "mirrorcap_stream_subscribers",
        "Live subscribers connected now.",
        c.stream_subscribers.load(Relaxed),
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
    own.sort_by(|a, b| {
        (a.vni, a.source, &a.endpoint, a.id).cmp(&(b.vni, b.source, &b.endpoint, b.id))
    });
    // `endpoint` only on sessions through a Gateway Load Balancer.
    let label = |s: &SessionStats| -> Labels {
        let mut l = vec![("vni", s.vni.to_string()), ("source", s.source.to_string())];
        if let Some(e) = &s.endpoint {
            l.push(("endpoint", e.clone()));
        }
        l
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
    // Two live sessions can share their labels (a GENEVE session without
    // an endpoint option beside a direct one of the same source and VNI,
    // on other workers): one series each label set, summed, as the text
    // format allows a series once.
    packets = merge_same_labels(packets);
    bytes = merge_same_labels(bytes);
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

/// Sums the values of adjacent series with the same labels.
fn merge_same_labels(series: Vec<(Labels, u64)>) -> Vec<(Labels, u64)> {
    let mut out: Vec<(Labels, u64)> = Vec::with_capacity(series.len());
    for (labels, v) in series {
        match out.last_mut() {
            Some((l, sum)) if *l == labels => *sum += v,
            _ => out.push((labels, v)),
        }
    }
    out
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
    uploads(s, &c.uploads);
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
    s.one(
        "mirrorcap_flow_layout_fallbacks",
        "Starts where instance metadata gave no account or region for the flow folders (they are `unknown`).",
        &c.flow_layout_fallbacks,
    );
}

/// `[output.s3]` uploads, only when it is set.
fn uploads(s: &mut Scrape, u: &crate::telemetry::counters::UploadCounters) {
    if !u.enabled.load(Relaxed) {
        return;
    }
    s.one(
        "mirrorcap_uploads",
        "Closed files uploaded to S3 (confirmed).",
        &u.uploaded,
    );
    s.one(
        "mirrorcap_upload_bytes",
        "Bytes of the files uploaded to S3.",
        &u.uploaded_bytes,
    );
    s.one(
        "mirrorcap_upload_failures",
        "Upload attempts that failed (each retried with backoff).",
        &u.failures,
    );
    s.one(
        "mirrorcap_upload_abandoned",
        "Files retention deleted before they were uploaded.",
        &u.abandoned,
    );
    s.one(
        "mirrorcap_upload_host_fallbacks",
        "Starts where {host} fell back to the host name (no instance ID from instance metadata).",
        &u.host_fallbacks,
    );
    s.gauge(
        "mirrorcap_uploads_pending",
        "Closed files waiting to be uploaded.",
        u.pending.load(Relaxed),
    );
    s.gauge(
        "mirrorcap_upload_bytes_pending",
        "Bytes of the closed files waiting to be uploaded.",
        u.pending_bytes.load(Relaxed),
    );
    let since = u.oldest_pending.load(Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    s.gauge(
        "mirrorcap_upload_oldest_pending_seconds",
        "How long the oldest file waiting to be uploaded has waited.",
        if since == 0 {
            0
        } else {
            now.saturating_sub(since)
        },
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
        "Errors logged that are not a dropped datagram, by kind (every kind has a series, zero included; README.md lists the kinds).",
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

    /// Hostile review of issue 14, item 9: two live sessions with the same
    /// labels (direct, and GENEVE without an endpoint option, on other
    /// workers) gave the same series twice, which the text format forbids;
    /// they are one series with the sum.
    #[test]
    fn sessions_with_the_same_labels_are_one_series() {
        let c = Counters::default();
        c.set_metrics_max_sessions(100);
        let src = "10.0.0.9".parse().unwrap();
        c.new_session(9, src).add(100);
        c.new_session(9, src).add(50);
        let text = render_prometheus(&c);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mirrorcap_session_bytes_total{vni=\"9\""))
            .collect();
        assert_eq!(
            lines,
            ["mirrorcap_session_bytes_total{vni=\"9\",source=\"10.0.0.9\"} 150"],
            "{text}"
        );
    }

    /// The `Accept` header decides by its q-values: OpenMetrics only when
    /// it is acceptable (q > 0) and wanted at least as much as the text.
    #[test]
    fn accept_header_q_values_choose_the_format() {
        let c = Counters::default();
        let choose = |accept: &str| render_for(accept, &c).0;
        // Prometheus's own default scrape header.
        assert_eq!(
            choose(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            OPENMETRICS_CONTENT_TYPE
        );
        assert_eq!(
            choose("application/openmetrics-text;q=0"),
            PROMETHEUS_CONTENT_TYPE
        );
        assert_eq!(
            choose("application/openmetrics-text; version=1.0.0; q=0.0, text/plain"),
            PROMETHEUS_CONTENT_TYPE
        );
        assert_eq!(
            choose("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            PROMETHEUS_CONTENT_TYPE
        );
        assert_eq!(
            choose("*/*;q=0.9, application/openmetrics-text;q=0.5"),
            PROMETHEUS_CONTENT_TYPE
        );
        assert_eq!(
            choose("text/plain;q=0.5, APPLICATION/OpenMetrics-Text;q=0.5"),
            OPENMETRICS_CONTENT_TYPE
        );
        assert_eq!(choose(""), PROMETHEUS_CONTENT_TYPE);
        assert_eq!(choose("text/plain"), PROMETHEUS_CONTENT_TYPE);
        assert_eq!(choose("*/*"), PROMETHEUS_CONTENT_TYPE);
    }

    /// A filter with one rule, for the rule labels.
    #[derive(Debug)]
    struct OneRule;

    impl crate::telemetry::counters::RuleCounts for OneRule {
        fn rule_counts(&self) -> Vec<crate::telemetry::counters::RuleCount> {
            vec![crate::telemetry::counters::RuleCount {
                filter: "web".into(),
                direction: "ingress",
                rule: "100".into(),
                action: "accept",
                packets: 5,
            }]
        }
    }

    /// The whole 0.0.4 text for a fixed state, names, HELP and TYPE lines
    /// and label order included, against tests/data/metrics-0.0.4.prom:
    /// any change of the format shows here. `MIRRORCAP_BLESS=1` rewrites
    /// the file (then read the diff).
    /// Issue 14, step 2: a session through a Gateway Load Balancer
    /// endpoint has an `endpoint` label; a direct one has none.
    #[test]
    fn gwlb_session_has_an_endpoint_label() {
        let c = Counters::default();
        c.set_metrics_max_sessions(10);
        let direct = c.new_session(5, "10.0.0.1".parse().unwrap());
        direct.add(100);
        let gwlb = c.new_session_via(
            5,
            "10.0.0.1".parse().unwrap(),
            Some("vpce-00123456789abcdef".into()),
        );
        gwlb.add(60);
        let text = render_prometheus(&c);
        assert!(
            text.contains(
                "mirrorcap_session_packets_total{vni=\"5\",source=\"10.0.0.1\",endpoint=\"vpce-00123456789abcdef\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("mirrorcap_session_packets_total{vni=\"5\",source=\"10.0.0.1\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_text_matches_the_golden_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics-0.0.4.prom");
        let c = Counters::default();
        c.set_metrics_max_sessions(1);
        c.received(1500);
        c.received(500);
        c.written(1400);
        c.count_drop(DropReason::ALL[0]);
        c.count_drops(DropReason::UnreadAtStop, 3); // a named reason: new ones append rows only
        c.kernel_drops.store(7, Relaxed);
        let own = c.new_session(42, "10.0.0.1".parse().unwrap());
        own.add(1400);
        let other = c.new_session(7, "2001:db8::1".parse().unwrap());
        other.add(60);
        c.files_opened.store(2, Relaxed);
        c.open_files.store(1, Relaxed);
        c.output_bytes.store(4096, Relaxed);
        c.count_error(ErrorKind::Reload);
        c.count_error(ErrorKind::MetricsAccept);
        c.filters.lock().unwrap().push(std::sync::Arc::new(OneRule));
        let text = render_prometheus(&c);
        if std::env::var_os("MIRRORCAP_BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        if text != want {
            let first = text
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(text.lines().count().min(want.lines().count()));
            panic!(
                "render_prometheus differs from {path} at line {}:\n got: {:?}\nwant: {:?}\n--- got in full:\n{text}",
                first + 1,
                text.lines().nth(first),
                want.lines().nth(first)
            );
        }
    }
}
