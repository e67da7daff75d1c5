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
        let parts = parts_of(s)?;
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

/// A path under the output directory read back: the [`PathFields`] the
/// template was filled with (the reverse of [`OutputTemplate::render`]).
#[derive(Clone, Debug)]
pub struct ParsedPath {
    /// `start_ns` is the start's whole second (a name holds no more), 0
    /// when the template has no time in it.
    pub fields: PathFields,
    /// How precisely the name gives the start: `Some(1)` (seconds, from
    /// `{start}` or `{date}` with `{time}`), `Some(86400)` (`{date}` only),
    /// `None` (no time in the name).
    pub start_resolution_s: Option<u64>,
}

/// Reads paths back with a template: [`OutputTemplate::path_parser`].
/// Holds the template and the part lists a path can follow: as written
/// (a GENEVE-borne session) and with `{endpoint}` left out (direct
/// traffic), or with `<endpoint>/` put first when the template has no
/// `{endpoint}`.
#[derive(Clone, Debug)]
pub struct PathParser {
    template: OutputTemplate,
    shapes: Vec<Vec<Part>>,
}

impl OutputTemplate {
    /// A parser for the paths this template renders.
    pub fn path_parser(&self) -> PathParser {
        let mut shapes = vec![self.parts.clone()];
        if self.parts.contains(&Part::Endpoint) {
            let direct: String = self
                .parts
                .iter()
                .filter(|p| **p != Part::Endpoint)
                .map(Part::text)
                .collect::<String>()
                .split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            if let Ok(p) = parts_of(&direct) {
                shapes.push(p);
            }
        } else {
            let mut p = vec![Part::Endpoint, Part::Lit("/".into())];
            p.extend(self.parts.iter().cloned());
            shapes.push(p);
        }
        PathParser {
            template: self.clone(),
            shapes,
        }
    }
}

impl PathParser {
    /// The fields `rel` (a path relative to the output directory, `/`
    /// separated, without `.part`) was rendered from; `None` when the
    /// template does not render it (another file, another layout).
    pub fn parse(&self, rel: &str) -> Option<ParsedPath> {
        self.shapes.iter().find_map(|shape| {
            let mut found = Found::default();
            if !match_parts(shape, rel, &mut found) {
                return None;
            }
            let parsed = found.into_parsed()?;
            // Only what renders back to the same path is this template's.
            (self.template.render(&parsed.fields) == std::path::Path::new(rel)).then_some(parsed)
        })
    }
}

impl Part {
    /// The part as template text.
    fn text(&self) -> &str {
        match self {
            Part::Lit(l) => l,
            Part::Vni => "{vni}",
            Part::Source => "{source}",
            Part::Endpoint => "{endpoint}",
            Part::Start => "{start}",
            Part::Date => "{date}",
            Part::Time => "{time}",
            Part::Seq => "{seq}",
            Part::Ext => "{ext}",
        }
    }

    /// Whether `c` can be in the text this placeholder renders.
    fn allows(&self, c: char) -> bool {
        match self {
            Part::Lit(_) => false,
            Part::Vni | Part::Seq | Part::Time => c.is_ascii_digit(),
            Part::Source => c.is_ascii_hexdigit() || c == '.' || c == '_',
            Part::Endpoint => c.is_ascii_alphanumeric() || c == '-',
            Part::Start => c.is_ascii_digit() || c == 'T' || c == 'Z',
            Part::Date => c.is_ascii_digit() || c == '-',
            Part::Ext => c.is_ascii_lowercase(),
        }
    }
}

/// Placeholder texts found in a path, one slot per placeholder.
#[derive(Default)]
struct Found<'a> {
    slots: [Option<&'a str>; 8],
}

impl<'a> Found<'a> {
    fn slot(p: &Part) -> usize {
        match p {
            Part::Vni => 0,
            Part::Source => 1,
            Part::Endpoint => 2,
            Part::Start => 3,
            Part::Date => 4,
            Part::Time => 5,
            Part::Seq => 6,
            Part::Ext | Part::Lit(_) => 7,
        }
    }

    fn into_parsed(self) -> Option<ParsedPath> {
        let [vni, source, endpoint, start, date, time, seq, ext] = self.slots;
        let num = |s: &str, at: std::ops::Range<usize>| s.get(at)?.parse::<i16>().ok();
        let second = |y: i16, mo: i16, d: i16, h: i16, mi: i16, s: i16| {
            let dt =
                jiff::civil::DateTime::new(y, mo as i8, d as i8, h as i8, mi as i8, s as i8, 0)
                    .ok()?;
            let ts = jiff::tz::Offset::UTC.to_timestamp(dt).ok()?;
            u64::try_from(ts.as_second()).ok()
        };
        let (start_s, start_resolution_s) = match (start, date, time) {
            (Some(s), _, _) if s.len() == 16 => (
                second(
                    num(s, 0..4)?,
                    num(s, 4..6)?,
                    num(s, 6..8)?,
                    num(s, 9..11)?,
                    num(s, 11..13)?,
                    num(s, 13..15)?,
                )?,
                Some(1),
            ),
            (Some(_), _, _) => return None,
            (None, Some(d), t) => {
                let (y, mo, dd) = (num(d, 0..4)?, num(d, 5..7)?, num(d, 8..10)?);
                match t {
                    Some(t) => (
                        second(y, mo, dd, num(t, 0..2)?, num(t, 2..4)?, num(t, 4..6)?)?,
                        Some(1),
                    ),
                    None => (second(y, mo, dd, 0, 0, 0)?, Some(86_400)),
                }
            }
            (None, None, _) => (0, None),
        };
        let format = match ext? {
            "pcap" => OutputFormat::Pcap,
            "pcapng" => OutputFormat::Pcapng,
            _ => return None,
        };
        Some(ParsedPath {
            fields: PathFields {
                vni: vni?.parse().ok()?,
                source: source?.replace('_', ":").parse().ok()?,
                start_ns: start_s.checked_mul(1_000_000_000)?,
                seq: seq?.parse().ok()?,
                format,
                endpoint: match endpoint {
                    None | Some("") => None,
                    Some(e) => Some(e.parse().ok()?),
                },
            },
            start_resolution_s,
        })
    }
}

/// Matches `s` against `parts`, filling `found`; a placeholder seen twice
/// must have the same text both times. Backtracks over the placeholders'
/// lengths (paths are short).
fn match_parts<'a>(parts: &[Part], s: &'a str, found: &mut Found<'a>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return s.is_empty();
    };
    if let Part::Lit(l) = first {
        return s
            .strip_prefix(l.as_str())
            .is_some_and(|t| match_parts(rest, t, found));
    }
    let slot = Found::slot(first);
    let max = s.find(|c| !first.allows(c)).unwrap_or(s.len());
    for n in (1..=max).rev() {
        let v = &s[..n];
        let before = found.slots[slot];
        if before.is_some_and(|b| b != v) {
            continue;
        }
        found.slots[slot] = Some(v);
        if match_parts(rest, &s[n..], found) {
            return true;
        }
        found.slots[slot] = before;
    }
    false
}

/// The placeholders and literal runs of a template string (not yet checked
/// as a whole: see [`OutputTemplate::parse`]).
fn parts_of(s: &str) -> Result<Vec<Part>, &'static str> {
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
    Ok(parts)
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
    /// Issue 17: paths are read back with the same template that wrote
    /// them (default, custom, GENEVE, IPv6), and nothing else is taken.
    #[test]
    fn paths_parse_back_to_their_fields() {
        let f = PathFields {
            vni: 5569041,
            source: "2604:1380:4091:ce00::b".parse().unwrap(),
            start_ns: 1_764_040_801_000_000_000,
            seq: 12,
            format: OutputFormat::Pcapng,
            endpoint: None,
        };
        let geneve = PathFields {
            endpoint: Some(crate::wire::geneve::EndpointId(0x0123_4567_89ab_cdef)),
            source: "10.0.1.5".parse().unwrap(),
            format: OutputFormat::Pcap,
            ..f.clone()
        };
        for t in [
            DEFAULT_TEMPLATE,
            "{vni}/{source}/{start}-{seq}.{ext}",
            "{date}/vni-{vni}_{source}_{time}_{seq}.{ext}",
            "{vni}/{endpoint}/{source}/x{endpoint}-{date}-{seq}.{ext}",
            "s/{source}/{vni}/{seq}.{ext}",
        ] {
            let tpl = OutputTemplate::parse(t).unwrap();
            let parser = tpl.path_parser();
            for fields in [&f, &geneve] {
                let rel = tpl.render(fields);
                let p = parser
                    .parse(rel.to_str().unwrap())
                    .unwrap_or_else(|| panic!("{t}: {rel:?} not parsed"));
                assert_eq!(tpl.render(&p.fields), rel, "{t}");
                assert_eq!(
                    (
                        p.fields.vni,
                        p.fields.source,
                        p.fields.seq,
                        p.fields.endpoint
                    ),
                    (fields.vni, fields.source, fields.seq, fields.endpoint),
                    "{t}"
                );
                let res = p.start_resolution_s;
                match res {
                    Some(1) => assert_eq!(p.fields.start_ns, fields.start_ns, "{t}"),
                    Some(86_400) => assert_eq!(p.fields.start_ns, 1_764_028_800_000_000_000),
                    _ => assert_eq!(res, None, "{t}"),
                }
            }
            for other in [
                "x.txt",
                "5569041/10.0.0.1/notatime-000001.pcap",
                "a/b/c/d/e.pcap",
            ] {
                assert!(parser.parse(other).is_none(), "{t}: {other} parsed");
            }
        }
    }
}
