//! Output paths: the `[output] template` parsed once ([`OutputTemplate`])
//! and filled per file from a session's [`PathFields`]; `UtcTime` (jiff) does the
//! calendar maths for `{start}`, `{date}` and `{time}`. In: a template
//! string, then fields per file. Out: a path relative to the output
//! directory. Nothing is dropped here: a template that could leave the
//! directory is refused when parsed.

use std::path::PathBuf;

use crate::capture::encode::OutputFormat;

/// The layout of output paths under the output directory.
///
/// Placeholders: `{vni}` (decimal), `{source}` (the mirrored ENI's
/// address; IPv6 with `_` for `:`, e.g. `2001_db8__1`), `{endpoint}` (the
/// Gateway Load Balancer endpoint of a GENEVE-borne session,
/// `vpce-0123456789abcdef0`; empty for direct traffic, and a path component
/// left empty by it disappears), `{start}` (UTC time of the
/// file's first packet, `20261125T032000Z`), `{date}` (`2026-11-25`),
/// `{time}` (`032000`), `{seq}` (the session's file number, 6 digits),
/// `{ext}` (`pcap` or `pcapng`). Literal text may use only ASCII letters,
/// digits, `.`, `_`, `-` and `/`; the template must be relative, have no
/// empty, `.` or `..` component, contain `{vni}`, `{source}` and `{seq}`
/// (so sessions and files never collide) and end in `.{ext}`. So every path
/// it produces is under the output directory. A template without
/// `{endpoint}` puts a GENEVE-borne session under `<endpoint>/` first, so
/// two endpoints' sessions of the same source and VNI never share a path.
/// The default puts it first: `DIR/<endpoint>/<vni>/<source>/…` through a
/// Gateway Load Balancer, `DIR/<vni>/<source>/…` direct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(String),
    Vni,
    Source,
    Endpoint,
    Start,
    Date,
    Time,
    Seq,
    Ext,
}

/// A template cut into literal text and `{name}` placeholders (shared
/// with the S3 key template, [`crate::output::upload::key`]).
pub(crate) enum Piece<'a> {
    Lit(&'a str),
    Name(&'a str),
}

/// Cuts `s` into [`Piece`]s; fails on a `{` without `}`.
pub(crate) fn pieces(s: &str) -> Result<Vec<Piece<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let end = after.find('}').ok_or("has a `{` without `}`")?;
            out.push(Piece::Name(&after[..end]));
            rest = &after[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            out.push(Piece::Lit(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

impl Part {
    /// The placeholder `{name}`, if it is one of the local template's.
    pub(crate) fn named(name: &str) -> Option<Part> {
        Some(match name {
            "vni" => Part::Vni,
            "source" => Part::Source,
            "endpoint" => Part::Endpoint,
            "start" => Part::Start,
            "date" => Part::Date,
            "time" => Part::Time,
            "seq" => Part::Seq,
            "ext" => Part::Ext,
            _ => return None,
        })
    }

    /// Appends this part's text for `f` (`t`: `f`'s start, in UTC).
    pub(crate) fn write(&self, s: &mut String, f: &PathFields, t: &UtcTime) {
        use std::fmt::Write as _;
        let _ = match self {
            Part::Lit(l) => write!(s, "{l}"),
            Part::Vni => write!(s, "{}", f.vni),
            Part::Source => write!(s, "{}", source_for_path(f.source)),
            Part::Endpoint => match f.endpoint {
                Some(e) => write!(s, "{e}"),
                None => Ok(()),
            },
            Part::Start => write!(
                s,
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            ),
            Part::Date => write!(s, "{:04}-{:02}-{:02}", t.year, t.month, t.day),
            Part::Time => write!(s, "{:02}{:02}{:02}", t.hour, t.minute, t.second),
            Part::Seq => write!(s, "{:06}", f.seq),
            Part::Ext => write!(s, "{}", f.format.extension()),
        };
    }
}

pub const DEFAULT_TEMPLATE: &str = "{endpoint}/{vni}/{source}/{start}-{seq}.{ext}";

impl Default for OutputTemplate {
    fn default() -> Self {
        OutputTemplate::parse(DEFAULT_TEMPLATE).expect("default template is valid")
    }
}

/// What a template is filled with.
#[derive(Clone, Debug)]
pub struct PathFields {
    pub vni: u32,
    pub source: std::net::IpAddr,
    pub start_ns: u64,
    pub seq: u32,
    pub format: OutputFormat,
    /// The Gateway Load Balancer endpoint; `None` for direct traffic.
    pub endpoint: Option<crate::wire::geneve::EndpointId>,
}

impl OutputTemplate {
    pub fn parse(s: &str) -> Result<OutputTemplate, &'static str> {
        if s.starts_with('/') {
            return Err("must be a relative path (it is placed under `dir`)");
        }
        for comp in s.split('/') {
            // `{endpoint}` is empty for direct traffic: `..{endpoint}` is
            // then `..` (and a component of `{endpoint}` alone disappears).
            let direct = comp.replace("{endpoint}", "");
            if comp.is_empty() || [".", ".."].contains(&comp) || [".", ".."].contains(&&*direct) {
                return Err(
                    "has an empty, `.` or `..` path component (also once `{endpoint}`, empty for direct traffic, is left out); paths must stay under `dir`",
                );
            }
        }
        let mut parts = Vec::new();
        for piece in pieces(s)? {
            parts.push(match piece {
                Piece::Name(n) => Part::named(n).ok_or("has an unknown placeholder; accepted: {vni} {source} {endpoint} {start} {date} {time} {seq} {ext}")?,
                Piece::Lit(lit) => {
                    if !lit
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
                    {
                        return Err(
                            "may only hold ASCII letters, digits, `.`, `_`, `-`, `/` and placeholders {vni} {source} {endpoint} {start} {date} {time} {seq} {ext}",
                        );
                    }
                    Part::Lit(lit.to_string())
                }
            });
        }
        for need in [Part::Vni, Part::Source, Part::Seq] {
            if !parts.contains(&need) {
                return Err(
                    "must contain {vni}, {source} and {seq}, so that sessions and files never share a path",
                );
            }
        }
        if !s.ends_with(".{ext}") {
            return Err("must end in `.{ext}`, so that the extension matches the format");
        }
        Ok(OutputTemplate { parts })
    }

    /// The relative path for `f`. A component `{endpoint}` leaves empty
    /// (direct traffic) disappears; a GENEVE-borne session under a template
    /// without `{endpoint}` goes under `<endpoint>/`.
    pub fn render(&self, f: &PathFields) -> PathBuf {
        use std::fmt::Write as _;
        let t = UtcTime::from_unix(f.start_ns / 1_000_000_000);
        let mut s = String::with_capacity(96);
        if let Some(e) = f.endpoint
            && !self.parts.contains(&Part::Endpoint)
        {
            let _ = write!(s, "{e}/");
        }
        for p in &self.parts {
            p.write(&mut s, f, &t);
        }
        if f.endpoint.is_none() && self.parts.contains(&Part::Endpoint) {
            return s.split('/').filter(|c| !c.is_empty()).collect();
        }
        PathBuf::from(s)
    }
}

/// An address as a path component: IPv4 dotted, IPv6 with `_` for `:`.
pub fn source_for_path(a: std::net::IpAddr) -> String {
    a.to_string().replace(':', "_")
}

/// A UTC calendar time, for file names and flow-file directories. The
/// calendar is `jiff`'s (UTC only: no time zone database is compiled in or
/// read); a time past jiff's range (year 9999, a garbage pcapng
/// timestamp) is clamped to its last second.
#[derive(Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    pub fn from_unix(secs: u64) -> UtcTime {
        let t = i64::try_from(secs)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map_or(jiff::civil::DateTime::MAX, |ts| {
                jiff::tz::Offset::UTC.to_datetime(ts)
            });
        UtcTime {
            year: i64::from(t.year()),
            month: t.month() as u32,
            day: t.day() as u32,
            hour: t.hour() as u32,
            minute: t.minute() as u32,
            second: t.second() as u32,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A session's fields, for template tests (also the S3 key's).
    pub(crate) fn sample_fields() -> PathFields {
        PathFields {
            vni: 5569041,
            source: "172.31.0.238".parse().unwrap(),
            start_ns: 1_764_040_800_123_456_789, // 2025-11-25T03:20:00Z
            seq: 3,
            format: OutputFormat::Pcap,
            endpoint: None,
        }
    }

    #[test]
    fn template_renders_ipv4_and_ipv6() {
        let t = OutputTemplate::default();
        let mut f = sample_fields();
        assert_eq!(
            t.render(&f),
            PathBuf::from("5569041/172.31.0.238/20251125T032000Z-000003.pcap")
        );
        f.source = "2604:1380:4091:ce00::b".parse().unwrap();
        f.format = OutputFormat::Pcapng;
        assert_eq!(
            t.render(&f),
            PathBuf::from("5569041/2604_1380_4091_ce00__b/20251125T032000Z-000003.pcapng")
        );
    }

    /// Issue 14, step 2: `{endpoint}` is the `vpce-` ID; for direct
    /// traffic it is empty and its path component disappears, so the
    /// default gives direct sessions today's `<vni>/<source>/` and GENEVE
    /// sessions `<endpoint>/<vni>/<source>/`; a template without it puts
    /// a GENEVE session under `<endpoint>/`.
    #[test]
    fn endpoint_placeholder() {
        let mut f = PathFields {
            vni: 7,
            source: "10.0.1.23".parse().unwrap(),
            start_ns: 1_764_040_800_123_456_789,
            seq: 0,
            format: OutputFormat::Pcap,
            endpoint: None,
        };
        let d = OutputTemplate::default();
        assert_eq!(
            d.render(&f),
            PathBuf::from("7/10.0.1.23/20251125T032000Z-000000.pcap")
        );
        let mid =
            OutputTemplate::parse("{vni}/{endpoint}/{source}/x{endpoint}-{seq}.{ext}").unwrap();
        assert_eq!(mid.render(&f), PathBuf::from("7/10.0.1.23/x-000000.pcap"));
        let plain = OutputTemplate::parse("{vni}/{source}/{start}-{seq}.{ext}").unwrap();
        assert_eq!(plain.render(&f), d.render(&f));

        f.endpoint = Some(crate::wire::geneve::EndpointId(0x0123_4567_89ab_cdef));
        assert_eq!(
            d.render(&f),
            PathBuf::from("vpce-00123456789abcdef/7/10.0.1.23/20251125T032000Z-000000.pcap")
        );
        assert_eq!(
            mid.render(&f),
            PathBuf::from("7/vpce-00123456789abcdef/10.0.1.23/xvpce-00123456789abcdef-000000.pcap")
        );
        assert_eq!(plain.render(&f), d.render(&f));

        for bad in [
            "{endpoint}/{source}/{seq}.{ext}",
            "{endpoint}//{vni}/{source}/{seq}.{ext}",
            "{endpoint}/{vni}/{source}.{ext}",
        ] {
            assert!(OutputTemplate::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn template_rejects_paths_outside_dir() {
        for bad in [
            "/abs/{vni}/{source}/{seq}.{ext}",
            "../{vni}/{source}/{seq}.{ext}",
            "{vni}/../{source}/{seq}.{ext}",
            "{vni}//{source}/{seq}.{ext}",
            "{vni}/{source}/{seq}.pcap",
            "{vni}/{seq}.{ext}",
            "{vni}/{source}/{seq}{bogus}.{ext}",
            "{vni}/{source} x/{seq}.{ext}",
            "{vni}/{source}/{seq.{ext}",
        ] {
            assert!(OutputTemplate::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(OutputTemplate::parse("{date}/vni-{vni}_{source}_{time}_{seq}.{ext}").is_ok());
    }

    /// A garbage timestamp names a file too: the last second jiff knows.
    #[test]
    fn utc_calendar_clamps_past_year_9999() {
        let t = UtcTime::from_unix(u64::MAX);
        assert_eq!((t.year, t.month, t.day), (9999, 12, 31));
        assert_eq!((t.hour, t.minute, t.second), (23, 59, 59));
    }

    #[test]
    fn utc_calendar() {
        assert_eq!(
            UtcTime::from_unix(0),
            UtcTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        assert_eq!(
            UtcTime::from_unix(951_782_400), // 2000-02-29
            UtcTime {
                year: 2000,
                month: 2,
                day: 29,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        assert_eq!(
            UtcTime::from_unix(4_102_444_799),
            UtcTime {
                year: 2099,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
    }
}
