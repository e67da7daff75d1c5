//! Stage 6: capture files. Encodes records as pcap or pcapng, writes each
//! session's frames to its own file set, rotates, and enforces retention.
//!
//! In: (timestamp, frame bytes, original length) for one session. Out: files
//! under the output directory, at the path the [`OutputTemplate`] gives.
//! A file being written is named `<path>.part` and is renamed to `<path>`
//! when closed, so every `*.pcap` / `*.pcapng` on disk is complete.
//!
//! Formats: classic pcap with nanosecond timestamps (magic `a1b23c4d`),
//! link type Ethernet; or pcapng with one interface per file whose name and
//! description carry the VNI and source address, `if_tsresol` = 9
//! (nanoseconds), and the application name in the section header. Nothing
//! time- or host-dependent is written, so the same input gives the same bytes.
//!
//! Rotation: by size (the next record would make the file larger than
//! `rotate_size`), by packet count, and by time aligned to the clock (a file
//! holds the packets of one `rotate_interval`-long slot of UTC time, as
//! `tcpdump -G` does, counted from the Unix epoch). Time is always the
//! packets' own time, so a replay rotates exactly as the live capture did.
//! Retention: `max_files` closed files per session and `max_total_bytes`
//! under the output directory (closed files of this and earlier runs plus the
//! open ones); the oldest closed file is deleted first.
//!
//! Writes go through a large buffer per open file ([`WRITE_BUFFER`]); the
//! only syscalls are buffer flushes, opens, renames and deletes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Size of the buffer in front of each open file.
pub const WRITE_BUFFER: usize = 256 * 1024;
/// Files are created with these permissions, directories with [`DIR_MODE`].
pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;
/// pcap/pcapng link type of every output file.
pub const LINKTYPE_ETHERNET: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Pcap,
    Pcapng,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Pcap => "pcap",
            OutputFormat::Pcapng => "pcapng",
        }
    }
}

/// The layout of output paths under the output directory.
///
/// Placeholders: `{vni}` (decimal), `{source}` (the outer source address;
/// IPv6 with `_` for `:`, e.g. `2001_db8__1`), `{start}` (UTC time of the
/// file's first packet, `20261125T032000Z`), `{date}` (`2026-11-25`),
/// `{time}` (`032000`), `{seq}` (the session's file number, 6 digits),
/// `{ext}` (`pcap` or `pcapng`). Literal text may use only ASCII letters,
/// digits, `.`, `_`, `-` and `/`; the template must be relative, have no
/// empty, `.` or `..` component, contain `{vni}`, `{source}` and `{seq}`
/// (so sessions and files never collide) and end in `.{ext}`. So every path
/// it produces is under the output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Vni,
    Source,
    Start,
    Date,
    Time,
    Seq,
    Ext,
}

pub const DEFAULT_TEMPLATE: &str = "{vni}/{source}/{start}-{seq}.{ext}";

impl Default for OutputTemplate {
    fn default() -> Self {
        OutputTemplate::parse(DEFAULT_TEMPLATE).expect("default template is valid")
    }
}

/// What a template is filled with.
pub struct PathFields {
    pub vni: u32,
    pub source: std::net::IpAddr,
    pub start_ns: u64,
    pub seq: u32,
    pub format: OutputFormat,
}

impl OutputTemplate {
    pub fn parse(s: &str) -> Result<OutputTemplate, &'static str> {
        if s.starts_with('/') {
            return Err("must be a relative path (it is placed under `dir`)");
        }
        for comp in s.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(
                    "has an empty, `.` or `..` path component; paths must stay under `dir`",
                );
            }
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after.find('}').ok_or("has a `{` without `}`")?;
                parts.push(match &after[..end] {
                    "vni" => Part::Vni,
                    "source" => Part::Source,
                    "start" => Part::Start,
                    "date" => Part::Date,
                    "time" => Part::Time,
                    "seq" => Part::Seq,
                    "ext" => Part::Ext,
                    _ => return Err("has an unknown placeholder; accepted: {vni} {source} {start} {date} {time} {seq} {ext}"),
                });
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let lit = &rest[..end];
                if !lit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
                {
                    return Err(
                        "may only hold ASCII letters, digits, `.`, `_`, `-`, `/` and placeholders {vni} {source} {start} {date} {time} {seq} {ext}",
                    );
                }
                parts.push(Part::Lit(lit.to_string()));
                rest = &rest[end..];
            }
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

    /// The relative path for `f`.
    pub fn render(&self, f: &PathFields) -> PathBuf {
        use std::fmt::Write as _;
        let t = UtcTime::from_unix(f.start_ns / 1_000_000_000);
        let mut s = String::with_capacity(64);
        for p in &self.parts {
            let _ = match p {
                Part::Lit(l) => write!(s, "{l}"),
                Part::Vni => write!(s, "{}", f.vni),
                Part::Source => write!(s, "{}", source_for_path(f.source)),
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
        PathBuf::from(s)
    }
}

/// An address as a path component: IPv4 dotted, IPv6 with `_` for `:`.
pub fn source_for_path(a: std::net::IpAddr) -> String {
    a.to_string().replace(':', "_")
}

/// A UTC calendar time (no time zone database needed).
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
    /// Howard Hinnant's `civil_from_days`.
    pub fn from_unix(secs: u64) -> UtcTime {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
        }
    }
}

/// Appends a pcap file header (nanosecond magic, little-endian).
pub fn pcap_file_header(out: &mut Vec<u8>, snaplen: u32) {
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&snaplen.to_le_bytes());
    out.extend_from_slice(&u32::from(LINKTYPE_ETHERNET).to_le_bytes());
}

/// pcap record header: 16 bytes.
fn pcap_record_header(ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&caplen.to_le_bytes());
    h[12..16].copy_from_slice(&orig_len.to_le_bytes());
    h
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + pad4(value.len()), 0);
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends a pcapng section header block and one interface description
/// block for the session.
pub fn pcapng_file_header(out: &mut Vec<u8>, snaplen: u32, if_name: &str, if_description: &str) {
    let mut shb = Vec::with_capacity(64);
    shb.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
    shb.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    let appl = format!("mirrorcap {}", env!("CARGO_PKG_VERSION"));
    push_option(&mut shb, 4, appl.as_bytes()); // shb_userappl
    push_option(&mut shb, 0, &[]);
    finish_block(&mut shb);
    out.extend_from_slice(&shb);

    let mut idb = Vec::with_capacity(128);
    idb.extend_from_slice(&1u32.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    push_option(&mut idb, 2, if_name.as_bytes()); // if_name
    push_option(&mut idb, 3, if_description.as_bytes()); // if_description
    push_option(&mut idb, 9, &[9]); // if_tsresol: 10^-9
    push_option(&mut idb, 0, &[]);
    finish_block(&mut idb);
    out.extend_from_slice(&idb);
}

fn finish_block(b: &mut Vec<u8>) {
    let len = (b.len() + 4) as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

/// pcapng enhanced packet block header (28 bytes); the frame, its padding
/// and the 4-byte trailing length follow.
fn pcapng_epb_header(ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; 28] {
    let total = 32 + caplen + pad4(caplen as usize) as u32;
    let mut h = [0u8; 28];
    h[0..4].copy_from_slice(&6u32.to_le_bytes());
    h[4..8].copy_from_slice(&total.to_le_bytes());
    h[8..12].copy_from_slice(&0u32.to_le_bytes());
    h[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
    h[20..24].copy_from_slice(&caplen.to_le_bytes());
    h[24..28].copy_from_slice(&orig_len.to_le_bytes());
    h
}

/// Bytes a record of `caplen` takes in a file of `format`.
pub fn record_len(format: OutputFormat, caplen: usize) -> u64 {
    match format {
        OutputFormat::Pcap => 16 + caplen as u64,
        OutputFormat::Pcapng => 32 + (caplen + pad4(caplen)) as u64,
    }
}

/// Errors opening, writing or closing capture files.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{path}: cannot create directory: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path}: cannot create file: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("{path}: write failed: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: cannot rename to {to}: {source}")]
    Rename {
        path: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

impl WriterError {
    /// True when the cause is a full file system (or quota).
    pub fn is_disk_full(&self) -> bool {
        let e = match self {
            WriterError::CreateDir { source, .. }
            | WriterError::Create { source, .. }
            | WriterError::Write { source, .. }
            | WriterError::Rename { source, .. } => source,
        };
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

/// One open capture file.
pub struct OpenFile {
    out: BufWriter<File>,
    part_path: PathBuf,
    final_path: PathBuf,
    /// Bytes written so far, header included.
    pub bytes: u64,
    pub packets: u64,
    /// Time slot (`ts / rotate_interval`) of the file's first packet.
    pub slot: u64,
    format: OutputFormat,
}

impl OpenFile {
    /// Creates `<dir>/<rel>.part` (parents too) and writes the file header.
    /// When `<rel>` or its `.part` exists (a restart within the same second),
    /// `seq` is increased until the name is free.
    pub fn create(
        dir: &Path,
        template: &OutputTemplate,
        fields: &mut PathFields,
        snaplen: u32,
        slot: u64,
    ) -> Result<OpenFile, WriterError> {
        let (final_path, part_path, file) = loop {
            let final_path = dir.join(template.render(fields));
            let part_path = part_path_of(&final_path);
            if let Some(parent) = final_path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(parent)
                    .map_err(|source| WriterError::CreateDir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
            }
            if final_path.exists() {
                fields.seq += 1;
                continue;
            }
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&part_path)
            {
                Ok(f) => break (final_path, part_path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fields.seq += 1,
                Err(source) => {
                    return Err(WriterError::Create {
                        path: part_path,
                        source,
                    });
                }
            }
        };
        let mut header = Vec::with_capacity(256);
        match fields.format {
            OutputFormat::Pcap => pcap_file_header(&mut header, snaplen),
            OutputFormat::Pcapng => {
                let name = format!("vxlan-{}-{}", fields.vni, fields.source);
                let desc = format!(
                    "mirror session: VXLAN VNI {} from {}",
                    fields.vni, fields.source
                );
                pcapng_file_header(&mut header, snaplen, &name, &desc)
            }
        }
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        out.write_all(&header)
            .map_err(|source| WriterError::Write {
                path: part_path.clone(),
                source,
            })?;
        Ok(OpenFile {
            out,
            part_path,
            final_path,
            bytes: header.len() as u64,
            packets: 0,
            slot,
            format: fields.format,
        })
    }

    /// Appends one record.
    pub fn write_record(
        &mut self,
        ts_ns: u64,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), WriterError> {
        let caplen = frame.len() as u32;
        let r = match self.format {
            OutputFormat::Pcap => self
                .out
                .write_all(&pcap_record_header(ts_ns, caplen, orig_len))
                .and_then(|_| self.out.write_all(frame)),
            OutputFormat::Pcapng => {
                let pad = pad4(frame.len());
                let total = 32 + caplen + pad as u32;
                self.out
                    .write_all(&pcapng_epb_header(ts_ns, caplen, orig_len))
                    .and_then(|_| self.out.write_all(frame))
                    .and_then(|_| self.out.write_all(&[0u8; 3][..pad]))
                    .and_then(|_| self.out.write_all(&total.to_le_bytes()))
            }
        };
        r.map_err(|source| WriterError::Write {
            path: self.part_path.clone(),
            source,
        })?;
        self.bytes += record_len(self.format, frame.len());
        self.packets += 1;
        Ok(())
    }

    /// Flushes, closes and renames `.part` to the final name. Returns the
    /// final path and size.
    pub fn close(mut self) -> Result<(PathBuf, u64), WriterError> {
        self.out.flush().map_err(|source| WriterError::Write {
            path: self.part_path.clone(),
            source,
        })?;
        fs::rename(&self.part_path, &self.final_path).map_err(|source| WriterError::Rename {
            path: self.part_path.clone(),
            to: self.final_path.clone(),
            source,
        })?;
        Ok((self.final_path, self.bytes))
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }
}

/// `x.pcap` -> `x.pcap.part`.
pub fn part_path_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// A closed file that retention may delete.
#[derive(Debug)]
struct ClosedFile {
    path: PathBuf,
    bytes: u64,
    /// The session (index into the session table) that wrote it; `None`
    /// for files found on disk from an earlier run.
    session: Option<usize>,
}

/// Retention over every closed file under the output directory.
#[derive(Debug, Default)]
pub struct Retention {
    files: VecDeque<ClosedFile>,
    closed_bytes: u64,
    max_files: Option<u32>,
    max_total_bytes: Option<u64>,
}

impl Retention {
    pub fn new(max_files: Option<u32>, max_total_bytes: Option<u64>) -> Retention {
        Retention {
            max_files,
            max_total_bytes,
            ..Default::default()
        }
    }

    pub fn set_limits(&mut self, max_files: Option<u32>, max_total_bytes: Option<u64>) {
        self.max_files = max_files;
        self.max_total_bytes = max_total_bytes;
    }

    /// Adds the complete capture files already under `dir` (from earlier
    /// runs), oldest first by modification time, so `max_total_bytes` counts
    /// them too.
    pub fn scan_existing(&mut self, dir: &Path) {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file()
                    && matches!(
                        p.extension().and_then(|x| x.to_str()),
                        Some("pcap" | "pcapng")
                    )
                    && let Ok(md) = e.metadata()
                {
                    found.push((md.modified().ok(), p, md.len()));
                }
            }
        }
        found.sort();
        for (_, path, bytes) in found {
            self.closed_bytes += bytes;
            self.files.push_back(ClosedFile {
                path,
                bytes,
                session: None,
            });
        }
    }

    pub fn max_total_bytes_set(&self) -> bool {
        self.max_total_bytes.is_some()
    }

    pub fn closed_bytes(&self) -> u64 {
        self.closed_bytes
    }

    /// Records a closed file of `session` and deletes what the limits
    /// require. `open_bytes` is the size of every file still open. Returns
    /// the number of files deleted.
    pub fn add(&mut self, path: PathBuf, bytes: u64, session: usize, open_bytes: u64) -> u64 {
        self.closed_bytes += bytes;
        self.files.push_back(ClosedFile {
            path,
            bytes,
            session: Some(session),
        });
        let mut deleted = 0;
        if let Some(max) = self.max_files {
            let mut count = self
                .files
                .iter()
                .filter(|f| f.session == Some(session))
                .count();
            while count > max as usize {
                let i = self
                    .files
                    .iter()
                    .position(|f| f.session == Some(session))
                    .expect("counted above");
                self.delete_at(i);
                deleted += 1;
                count -= 1;
            }
        }
        deleted + self.enforce_total(open_bytes)
    }

    /// Deletes the oldest closed files until the total is within
    /// `max_total_bytes`.
    pub fn enforce_total(&mut self, open_bytes: u64) -> u64 {
        let Some(max) = self.max_total_bytes else {
            return 0;
        };
        let mut deleted = 0;
        while self.closed_bytes + open_bytes > max && !self.files.is_empty() {
            self.delete_at(0);
            deleted += 1;
        }
        deleted
    }

    fn delete_at(&mut self, i: usize) {
        if let Some(f) = self.files.remove(i) {
            self.closed_bytes -= f.bytes;
            if let Err(e) = fs::remove_file(&f.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %f.path.display(), error = %e, "retention: cannot delete file");
                }
            } else {
                tracing::debug!(path = %f.path.display(), "retention: deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_ipv4_and_ipv6() {
        let t = OutputTemplate::default();
        let mut f = PathFields {
            vni: 5569041,
            source: "172.31.0.238".parse().unwrap(),
            start_ns: 1_764_040_800_123_456_789, // 2025-11-25T03:20:00Z
            seq: 3,
            format: OutputFormat::Pcap,
        };
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

    #[test]
    fn pcapng_blocks_are_aligned() {
        let mut h = Vec::new();
        pcapng_file_header(&mut h, 262144, "vxlan-1-10.0.0.1", "abc");
        assert_eq!(h.len() % 4, 0);
        for caplen in 0..8 {
            assert_eq!(record_len(OutputFormat::Pcapng, caplen) % 4, 0);
        }
    }
}
