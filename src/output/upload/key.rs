//! S3 object keys: `[output.s3] key_template` parsed once ([`KeyTemplate`])
//! and filled per capture file from the session's
//! [`PathFields`] plus the host and the prefix; flow files keep their
//! local folder under the prefix ([`flow_key`]). In: a template string, then fields per file.
//! Out: a key. Nothing is dropped here; a template that could make two
//! files of two hosts or two sessions share a key is refused when parsed.
//!
//! The calendar and the address spelling are the local template's
//! ([`crate::output::template`]), so a file's key and its local path agree.

use crate::output::template::{Part as LocalPart, PathFields, Piece, UtcTime, pieces};

/// The default key layout: Hive-style partitions (`name=value`
/// directories) so Athena, Spark and DuckDB prune by VNI, source and hour;
/// `endpoint=<vpce-…>/` first for a session that came through a Gateway
/// Load Balancer endpoint (nothing for direct traffic).
pub const DEFAULT_KEY_TEMPLATE: &str = "{prefix}/{endpoint_dir}vni={vni}/source={source}/year={year}/month={month}/day={day}/hour={hour}/{host}-{start}-{seq}.{ext}";

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Every placeholder a key template may use.
pub const KEY_PLACEHOLDERS: &str = "{prefix} {host} {endpoint_dir} {endpoint} {vni} {source} {year} {month} {day} {hour} {start} {date} {time} {seq} {ext}";

/// A key template's part: one of the local template's, or one only keys
/// have.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Local(LocalPart),
    Prefix,
    Host,
    EndpointDir,
    Year,
    Month,
    Day,
    Hour,
}

/// A parsed `key_template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl Default for KeyTemplate {
    fn default() -> Self {
        KeyTemplate::parse(DEFAULT_KEY_TEMPLATE).expect("the default key template is valid")
    }
}

/// What a key is made of besides a file's [`PathFields`]: the same for
/// every file of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyContext {
    /// `[output.s3] prefix`, without leading or trailing `/`.
    pub prefix: String,
    /// `{host}`: `host_id`, else the instance ID, else the host name.
    pub host: String,
    /// This run of the daemon (its start, UTC, and process ID:
    /// `20261130T194500Z-1234`), in flow file keys: a flow file's name
    /// restarts at `-000000` with each run, so without it a restart
    /// within the same time slot would overwrite the last run's object.
    pub run: String,
}

/// [`KeyContext::run`] for a daemon started now.
pub fn run_id() -> String {
    let now = crate::output::upload::journal::unix_now();
    let t = UtcTime::from_unix(now);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        std::process::id()
    )
}

impl KeyTemplate {
    /// Parses `s`. It must contain `{host}`, `{vni}`, `{source}`, `{start}`
    /// and `{seq}` (so two hosts, two sessions, two runs and two files
    /// never share a key), `{endpoint_dir}` or `{endpoint}` (so two
    /// endpoints' sessions of one source and VNI never do), and end in
    /// `.{ext}`; literal text may hold ASCII letters, digits and
    /// `. _ - = /`.
    pub fn parse(s: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        for piece in pieces(s)? {
            parts.push(match piece {
                Piece::Name("prefix") => Part::Prefix,
                Piece::Name("host") => Part::Host,
                Piece::Name("endpoint_dir") => Part::EndpointDir,
                Piece::Name("year") => Part::Year,
                Piece::Name("month") => Part::Month,
                Piece::Name("day") => Part::Day,
                Piece::Name("hour") => Part::Hour,
                Piece::Name(n) => Part::Local(LocalPart::named(n).ok_or_else(|| {
                    format!("has an unknown placeholder {{{n}}}; accepted: {KEY_PLACEHOLDERS}")
                })?),
                Piece::Lit(lit) => {
                    if !lit.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '=')
                    }) {
                        return Err(format!(
                            "may only hold ASCII letters, digits, `.`, `_`, `-`, `=`, `/` and the placeholders {KEY_PLACEHOLDERS}"
                        ));
                    }
                    Part::Local(LocalPart::Lit(lit.to_string()))
                }
            });
        }
        for (need, name) in [
            (Part::Host, "{host}"),
            (Part::Local(LocalPart::Vni), "{vni}"),
            (Part::Local(LocalPart::Source), "{source}"),
            (Part::Local(LocalPart::Start), "{start}"),
            (Part::Local(LocalPart::Seq), "{seq}"),
        ] {
            if !parts.contains(&need) {
                return Err(format!(
                    "must contain {name} (with {{host}}, {{vni}}, {{source}}, {{start}} and {{seq}}, no two hosts, sessions or files share a key)"
                ));
            }
        }
        if !parts.contains(&Part::EndpointDir) && !parts.contains(&Part::Local(LocalPart::Endpoint))
        {
            return Err(
                "must contain {endpoint_dir} or {endpoint}, so that two Gateway Load Balancer endpoints' sessions never share a key".into(),
            );
        }
        if !s.ends_with(".{ext}") {
            return Err("must end in `.{ext}`, so that the extension matches the format".into());
        }
        if s.starts_with('/') {
            return Err("must not start with `/` (S3 keys are relative to the bucket)".into());
        }
        if s.split('/').any(|c| c == "." || c == "..") {
            return Err(
                "must not have a `.` or `..` path component (S3 keys cannot hold them)".into(),
            );
        }
        // Two placeholders side by side could make two keys equal (host
        // `h1` with VNI 42 and host `h14` with VNI 2); `{endpoint_dir}` may
        // render empty, so it separates nothing.
        let mut last: Option<&Part> = None;
        for p in parts.iter().filter(|p| **p != Part::EndpointDir) {
            let placeholder = |p: &Part| !matches!(p, Part::Local(LocalPart::Lit(_)));
            if let Some(l) = last
                && placeholder(l)
                && placeholder(p)
            {
                return Err(
                    "has two placeholders with no text between them (`{endpoint_dir}` may be empty): put a `-`, `_`, `.` or `/` between them, or two files' keys could be equal".into(),
                );
            }
            last = Some(p);
        }
        Ok(KeyTemplate { parts })
    }

    /// The key for a capture file. Empty path components (an empty
    /// `{prefix}` or `{endpoint}`) disappear, so the key never holds `//`
    /// nor starts with `/`.
    pub fn render(&self, cx: &KeyContext, f: &PathFields) -> String {
        use std::fmt::Write as _;
        let t = UtcTime::from_unix(f.start_ns / 1_000_000_000);
        let mut s = String::with_capacity(160);
        for p in &self.parts {
            let _ = match p {
                Part::Local(l) => {
                    l.write(&mut s, f, &t);
                    Ok(())
                }
                Part::Prefix => write!(s, "{}", cx.prefix),
                Part::Host => write!(s, "{}", cx.host),
                Part::EndpointDir => match f.endpoint {
                    Some(e) => write!(s, "endpoint={e}/"),
                    None => Ok(()),
                },
                Part::Year => write!(s, "{:04}", t.year),
                Part::Month => write!(s, "{:02}", t.month),
                Part::Day => write!(s, "{:02}", t.day),
                Part::Hour => write!(s, "{:02}", t.hour),
            };
        }
        collapse(&s)
    }
}

impl KeyTemplate {
    /// The longest key this template can render under `prefix`: every
    /// placeholder at its longest (a 64-byte `{host}`, an IPv6 source, a
    /// GWLB endpoint, the largest VNI and `{seq}`, `pcapng`).
    pub fn longest_key(&self, prefix: &str) -> usize {
        let cx = KeyContext {
            prefix: prefix.to_owned(),
            host: "h".repeat(64),
            run: String::new(),
        };
        let f = PathFields {
            vni: 16_777_215,
            source: std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            )),
            start_ns: u64::MAX,
            seq: u32::MAX,
            format: crate::capture::encode::OutputFormat::Pcapng,
            endpoint: Some(crate::wire::geneve::EndpointId(u64::MAX)),
        };
        self.render(&cx, &f).len()
    }
}

/// `s` without empty path components.
fn collapse(s: &str) -> String {
    s.split('/')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The key of a flow file: `PREFIX/<folder>/<host>-<run>-<file name>`,
/// `folder` its folder under `DIR/flows/` (one of AWS's flow log layouts,
/// `AWSLogs/…`: see `flows::layout`), so a table made for AWS's flow
/// logs reads them with only its location changed; `<host>-<run>-` keeps
/// two hosts' and two runs' files apart.
pub fn flow_key(cx: &KeyContext, folder: &str, file_name: &str) -> String {
    collapse(&format!(
        "{}/{folder}/{}-{}-{file_name}",
        cx.prefix, cx.host, cx.run
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::template::tests::sample_fields as fields;

    /// Issue 16, item 3: the default layout is Hive style, `endpoint=` first
    /// for GWLB sessions, `{host}` in the name; an empty prefix leaves no
    /// empty component.
    #[test]
    fn default_key_layout_is_hive_style() {
        let t = KeyTemplate::default();
        let mut cx = KeyContext {
            prefix: String::new(),
            host: "i-0123456789abcdef0".into(),
            run: "20251125T030000Z-42".into(),
        };
        let mut f = fields();
        assert_eq!(
            t.render(&cx, &f),
            "vni=5569041/source=172.31.0.238/year=2025/month=11/day=25/hour=03/i-0123456789abcdef0-20251125T032000Z-000003.pcap"
        );
        cx.prefix = "caps/prod".into();
        f.endpoint = Some(crate::wire::geneve::EndpointId(0x0123_4567_89ab_cdef));
        f.source = "2001:db8::1".parse().unwrap();
        assert_eq!(
            t.render(&cx, &f),
            "caps/prod/endpoint=vpce-00123456789abcdef/vni=5569041/source=2001_db8__1/year=2025/month=11/day=25/hour=03/i-0123456789abcdef0-20251125T032000Z-000003.pcap"
        );
        assert_eq!(
            flow_key(
                &cx,
                "AWSLogs/123456789012/vpcflowlogs/eu-west-1/2025/11/25",
                "mirrorcap_flows_x-000000.log"
            ),
            "caps/prod/AWSLogs/123456789012/vpcflowlogs/eu-west-1/2025/11/25/i-0123456789abcdef0-20251125T030000Z-42-mirrorcap_flows_x-000000.log"
        );
    }

    #[test]
    fn key_templates_that_could_collide_are_refused() {
        for bad in [
            // Hostile run of issue 16: accepted, then every upload failed.
            "{prefix}/../{host}/{endpoint_dir}{vni}/{source}/{start}-{seq}.{ext}",
            // Hostile run: host h1 + VNI 42 = host h14 + VNI 2.
            "{prefix}/{host}{vni}{source}{start}{seq}{endpoint_dir}.{ext}",
            "{prefix}/{host}-{endpoint_dir}{vni}/{source}/{start}{seq}.{ext}",
            "{prefix}/{endpoint_dir}{vni}/{source}/{start}-{seq}.{ext}",
            "{prefix}/{vni}/{source}/{host}-{start}-{seq}.{ext}",
            "{prefix}/{endpoint_dir}{vni}/{source}/{host}-{seq}.{ext}",
            "{prefix}/{endpoint_dir}{vni}/{source}/{host}-{start}-{seq}.pcap",
            "{prefix}/{endpoint_dir}{vni}/{source}/{host} {start}-{seq}.{ext}",
            "{prefix}/{endpoint_dir}{vni}/{source}/{host}-{start}-{seq}{bogus}.{ext}",
            "/{endpoint_dir}{vni}/{source}/{host}-{start}-{seq}.{ext}",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
