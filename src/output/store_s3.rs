//! An S3 prefix read back for `mirrorcap extract`: `s3://bucket/prefix`
//! holding the objects the uploader ([`crate::output::upload`]) wrote in
//! the default key layout
//! `PREFIX/[endpoint=<id>/]vni=<vni>/source=<addr>/year=YYYY/month=MM/day=DD/hour=HH/<host>-<start>-<seq>.<ext>`.
//!
//! In: the URL, `[output.s3]` of the config when given (its `endpoint`,
//! `region`, `metadata_endpoint`; the bucket and prefix are the URL's),
//! else the environment (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
//! `AWS_REGION`, ...), and a [`Selection`]. Out: [`StoreFile`]s named
//! `s3://bucket/key`, their writer the key's `{host}` (so each target's
//! files follow one another, and targets merge as separate writers), and
//! a streamed reader per object. Dropped: keys of another layout (flow
//! files under `AWSLogs/` and `jsonl/`, another `key_template`), partitions the
//! selection leaves out.
//!
//! Listing walks the Hive partitions with `list_with_delimiter`, one
//! request per partition: `endpoint=`, `vni=`, `source=` as the selection
//! keeps sessions, then the `year=`/`month=`/`day=`/`hour=` partitions
//! that meet `[from, to)`, and, going back hour by hour from the one
//! before `from`'s, the hours up to the first that holds a file of every
//! host seen in the window (at most [`MAX_HOURS_BACK`] hours holding
//! files): a file that started before the window may cover its start.
//!
//! Reading: a `GET` whose body is pulled chunk by chunk (what the HTTP
//! client hands out, tens of KiB) through a blocking bridge onto a
//! current-thread tokio runtime the store owns, so memory per open object
//! is one chunk plus the capture reader's buffer, whatever its size. A
//! body that fails mid-read is asked again from the byte reached on the
//! same ETag by object_store itself (its retries, within 30 s of the
//! `GET`), then here, at most [`RESUMES`] times in a row: a body read for
//! longer (the client's 300 s request timeout ends it) goes on. When that
//! fails too, or the object is gone, the read error names the object and
//! the extract reports it with the offset.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::capture::{CaptureError, CaptureReader};
use crate::output::store::{FileReader, Selection, SessionKey, Store, StoreFile};
use crate::output::upload::settings::{
    DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, DEFAULT_STOP_WAIT, DEFAULT_UNHEALTHY_AFTER,
    DEFAULT_UPLOAD_JOBS,
};
use crate::output::upload::{S3Config, UploadError, read_client};
use crate::wire::geneve::EndpointId;

/// Hour partitions holding files looked at before the window at most.
pub const MAX_HOURS_BACK: usize = 24;
/// A body that fails mid-read is asked again from where it stopped this
/// many times in a row (a chunk received starts the count again).
pub const RESUMES: u32 = 3;

const NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * NS;
/// The time partitions, outermost first.
const LEVELS: [&str; 4] = ["year", "month", "day", "hour"];

#[derive(Debug, thiserror::Error)]
pub enum S3StoreError {
    #[error("{url:?}: not an S3 URL: expected s3://bucket or s3://bucket/prefix")]
    Url { url: String },
    #[error("{url}: {source}")]
    Client { url: String, source: UploadError },
    #[error("{url}: cannot start the S3 client's runtime: {source}")]
    Runtime { url: String, source: io::Error },
}

/// An S3 prefix in the default key layout.
pub struct S3Store {
    /// As the user wrote it.
    name: String,
    /// `s3://bucket/`: an object's name is this and its key.
    head: String,
    /// Without leading or trailing `/`; empty = the bucket's root.
    prefix: String,
    client: AmazonS3,
    /// Drives the client, in `block_on` from the extract's thread.
    rt: Arc<tokio::runtime::Runtime>,
}

impl S3Store {
    /// A store for `url` (`s3://bucket[/prefix]`): endpoint, region and
    /// instance metadata endpoint from `s3` (the config's `[output.s3]`),
    /// an endpoint it does not set from `AWS_ENDPOINT_URL_S3`, then
    /// `AWS_ENDPOINT_URL`; credentials as the uploader finds them.
    pub fn new(url: &str, s3: Option<&S3Config>) -> Result<S3Store, S3StoreError> {
        let bad = || S3StoreError::Url { url: url.into() };
        let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || bucket.contains(|c: char| c.is_whitespace()) {
            return Err(bad());
        }
        let prefix = prefix.trim_matches('/').to_owned();
        let mut cfg = s3.cloned().unwrap_or_else(|| S3Config {
            bucket: bucket.into(),
            prefix: prefix.clone(),
            region: None,
            endpoint: None,
            key_template: crate::output::upload::key::KeyTemplate::default(),
            keep_local: false,
            storage_class: None,
            upload_jobs: DEFAULT_UPLOAD_JOBS,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            stop_wait: DEFAULT_STOP_WAIT,
            metadata_endpoint: None,
        });
        if cfg.endpoint.is_none() {
            cfg.endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .into_iter()
                .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
        }
        let client = read_client(&cfg, bucket).map_err(|source| S3StoreError::Client {
            url: url.into(),
            source,
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| S3StoreError::Runtime {
                url: url.into(),
                source,
            })?;
        Ok(S3Store {
            name: url.into(),
            head: format!("s3://{bucket}/"),
            prefix,
            client,
            rt: Arc::new(rt),
        })
    }

    /// The sub-partitions (last component) and objects right under `dir`.
    fn children(
        &self,
        dir: &str,
        problem: &mut dyn FnMut(String),
    ) -> Option<(Vec<String>, Vec<String>)> {
        let fail = |e: &dyn std::fmt::Display| format!("{}{dir}/: cannot list: {e}", self.head);
        let at = if dir.is_empty() {
            None
        } else {
            match Path::parse(dir) {
                Ok(p) => Some(p),
                Err(e) => {
                    problem(fail(&e));
                    return None;
                }
            }
        };
        match self
            .rt
            .block_on(self.client.list_with_delimiter(at.as_ref()))
        {
            Ok(l) => Some((
                l.common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_owned))
                    .collect(),
                l.objects
                    .into_iter()
                    .map(|o| o.location.to_string())
                    .collect(),
            )),
            Err(e) => {
                problem(fail(&e));
                None
            }
        }
    }

    /// The files of one session, under `dir` (its `source=` partition).
    fn session(
        &self,
        dir: &str,
        session: SessionKey,
        sel: &Selection,
        out: &mut Vec<StoreFile>,
        problem: &mut dyn FnMut(String),
    ) {
        let (from, to) = (sel.from_ns, sel.to_ns);
        let first = out.len();
        self.walk(
            dir,
            0,
            [0; 4],
            &mut |s, e| s < to && e > from,
            &mut |files| {
                out.extend(files.into_iter().map(|f| StoreFile { session, ..f }));
                false
            },
            problem,
        );
        let bound = from - from % HOUR_NS;
        if bound == 0 {
            return;
        }
        // Back from the hour before `from`'s, to the first hour holding a
        // file of every host seen in the window.
        let want: BTreeSet<String> = out[first..].iter().map(|f| f.writer.clone()).collect();
        let mut seen = BTreeSet::new();
        let mut hours = 0;
        self.walk(
            dir,
            0,
            [0; 4],
            &mut |s, _| s < bound,
            &mut |files| {
                if files.is_empty() {
                    return false;
                }
                hours += 1;
                seen.extend(files.iter().map(|f| f.writer.clone()));
                out.extend(files.into_iter().map(|f| StoreFile { session, ..f }));
                want.is_subset(&seen) || hours >= MAX_HOURS_BACK
            },
            problem,
        );
    }

    /// Walks the time partitions under `dir` from `level` (the values of
    /// the outer ones in `v`), latest first, into those whose span `keep`
    /// takes, handing each hour's files to `visit` until it returns true
    /// (then returns true).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        dir: &str,
        level: usize,
        v: [i16; 4],
        keep: &mut dyn FnMut(u64, u64) -> bool,
        visit: &mut dyn FnMut(Vec<StoreFile>) -> bool,
        problem: &mut dyn FnMut(String),
    ) -> bool {
        let Some((dirs, objects)) = self.children(dir, problem) else {
            return false;
        };
        if level == LEVELS.len() {
            return visit(objects.iter().filter_map(|k| self.file(k)).collect());
        }
        let mut kids: Vec<(i16, String)> = dirs
            .into_iter()
            .filter_map(|d| {
                let n = d
                    .strip_prefix(LEVELS[level])?
                    .strip_prefix('=')?
                    .parse()
                    .ok()?;
                Some((n, d))
            })
            .collect();
        kids.sort_unstable_by(|a, b| b.cmp(a));
        for (n, d) in kids {
            let mut v = v;
            v[level] = n;
            let Some((s, e)) = span(level, v) else {
                continue;
            };
            if keep(s, e) && self.walk(&format!("{dir}/{d}"), level + 1, v, keep, visit, problem) {
                return true;
            }
        }
        false
    }

    /// The file a key names (`…/<host>-<start>-<seq>.<ext>`); its session
    /// is filled in by the caller.
    fn file(&self, key: &str) -> Option<StoreFile> {
        let name = key.rsplit('/').next()?;
        let stem = name
            .strip_suffix(".pcap")
            .or_else(|| name.strip_suffix(".pcapng"))?;
        let (rest, seq) = stem.rsplit_once('-')?;
        let (host, start) = rest.rsplit_once('-')?;
        if host.is_empty() || seq.len() < 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(StoreFile {
            name: format!("{}{key}", self.head),
            writer: host.into(),
            session: SessionKey {
                vni: 0,
                source: std::net::Ipv4Addr::UNSPECIFIED.into(),
                endpoint: None,
            },
            start_ns: Some(start_ns(start)?),
            start_resolution_s: 1,
            seq: seq.parse().ok()?,
            part: false,
        })
    }
}

/// `YYYYMMDDTHHMMSSZ` in ns since the epoch.
fn start_ns(s: &str) -> Option<u64> {
    if s.len() != 16 || &s[8..9] != "T" || &s[15..] != "Z" {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i16>().ok();
    utc_ns(
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(9..11)?,
        n(11..13)?,
        n(13..15)?,
    )
}

fn utc_ns(y: i16, mo: i16, d: i16, h: i16, mi: i16, s: i16) -> Option<u64> {
    let dt =
        jiff::civil::DateTime::new(y, mo as i8, d as i8, h as i8, mi as i8, s as i8, 0).ok()?;
    let ts = jiff::tz::Offset::UTC.to_timestamp(dt).ok()?;
    u64::try_from(ts.as_second()).ok()?.checked_mul(NS)
}

/// The time span `[start, end)` in ns of the partition at `level` whose
/// values (year, month, day, hour, the outer ones first) are `v`.
fn span(level: usize, v: [i16; 4]) -> Option<(u64, u64)> {
    let [y, mo, d, h] = v;
    let (mo, d, h) = match level {
        0 => (1, 1, 0),
        1 => (mo, 1, 0),
        2 => (mo, d, 0),
        _ => (mo, d, h),
    };
    let start = utc_ns(y, mo, d, h, 0, 0)?;
    let end = match level {
        0 => utc_ns(y + 1, 1, 1, 0, 0, 0),
        1 if mo == 12 => utc_ns(y + 1, 1, 1, 0, 0, 0),
        1 => utc_ns(y, mo + 1, 1, 0, 0, 0),
        2 => Some(start + 24 * HOUR_NS),
        _ => Some(start + HOUR_NS),
    };
    Some((start, end.unwrap_or(u64::MAX)))
}

/// `vni=`, `source=` and `endpoint=` partitions read back.
fn value<'a>(dir: &'a str, name: &str) -> Option<&'a str> {
    dir.strip_prefix(name)?.strip_prefix('=')
}

impl Store for S3Store {
    fn name(&self) -> &str {
        &self.name
    }

    fn list(&self, sel: &Selection, problem: &mut dyn FnMut(String)) -> Vec<StoreFile> {
        let mut out = Vec::new();
        let Some((top, objects)) = self.children(&self.prefix, problem) else {
            return out;
        };
        if top.is_empty() && objects.is_empty() {
            // As a missing local directory is: most likely a typo.
            problem(format!(
                "{}{}: nothing under this prefix (no such prefix, or an empty one)",
                self.head, self.prefix
            ));
            return out;
        }
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_owned()
            } else {
                format!("{a}/{b}")
            }
        };
        // (directory holding `vni=` partitions, endpoint): direct
        // sessions at the top, a Gateway Load Balancer endpoint's below.
        let mut roots = Vec::new();
        if sel.endpoints.is_empty() && top.iter().any(|d| value(d, "vni").is_some()) {
            roots.push((self.prefix.clone(), None));
        }
        for d in &top {
            if let Some(Ok(e)) = value(d, "endpoint").map(str::parse::<EndpointId>)
                && (sel.endpoints.is_empty() || sel.endpoints.contains(&e))
            {
                roots.push((join(&self.prefix, d), Some(e)));
            }
        }
        for (root, endpoint) in roots {
            let vnis = if endpoint.is_some() {
                match self.children(&root, problem) {
                    Some((d, _)) => d,
                    None => continue,
                }
            } else {
                top.clone()
            };
            for vd in vnis {
                let Some(vni) = value(&vd, "vni").and_then(|v| v.parse().ok()) else {
                    continue;
                };
                if !sel.vnis.is_empty() && !sel.vnis.contains(&vni) {
                    continue;
                }
                let vdir = join(&root, &vd);
                let Some((sources, _)) = self.children(&vdir, problem) else {
                    continue;
                };
                for sd in sources {
                    let Some(source) =
                        value(&sd, "source").and_then(|s| s.replace('_', ":").parse().ok())
                    else {
                        continue;
                    };
                    let session = SessionKey {
                        vni,
                        source,
                        endpoint,
                    };
                    if sel.keeps(&session) {
                        self.session(&join(&vdir, &sd), session, sel, &mut out, problem);
                    }
                }
            }
        }
        out
    }

    fn open(&self, f: &StoreFile) -> Result<FileReader, CaptureError> {
        let io = |source| CaptureError::Io {
            input: f.name.clone(),
            source,
        };
        let key = f.name.strip_prefix(&self.head).unwrap_or(&f.name);
        let path = Path::parse(key).map_err(|e| io(io::Error::other(e)))?;
        let mut body = ObjectBody {
            rt: self.rt.clone(),
            client: self.client.clone(),
            path,
            e_tag: None,
            stream: None,
            chunk: Bytes::new(),
            at: 0,
            resumes: 0,
        };
        body.get()
            .map_err(|e| io(io::Error::new(e.kind(), format!("{e} (at byte 0)"))))?;
        CaptureReader::new(Box::new(body) as Box<dyn Read + Send>, &f.name).map(FileReader::Stream)
    }
}

/// An object's body as a blocking reader.
struct ObjectBody {
    rt: Arc<tokio::runtime::Runtime>,
    client: AmazonS3,
    path: Path,
    /// The object's ETag, from the first answer: a resumed read must get
    /// the same object.
    e_tag: Option<String>,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    /// Received and not read yet.
    chunk: Bytes,
    /// Bytes handed out so far.
    at: u64,
    /// Resumed since the last chunk received.
    resumes: u32,
}

impl ObjectBody {
    /// (Re)starts the `GET` at the byte reached.
    fn get(&mut self) -> io::Result<()> {
        let opts = GetOptions {
            range: (self.at > 0).then_some(GetRange::Offset(self.at)),
            if_match: self.e_tag.clone(),
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(self.client.get_opts(&self.path, opts))
            .map_err(io::Error::from)?;
        if self.e_tag.is_none() {
            self.e_tag = r.meta.e_tag.clone();
        }
        self.stream = Some(r.into_stream());
        Ok(())
    }
}

impl Read for ObjectBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(stream) = &mut self.stream else {
                return Ok(0);
            };
            match self.rt.block_on(stream.next()) {
                None => {
                    self.stream = None;
                    return Ok(0);
                }
                Some(Ok(b)) => {
                    self.chunk = b;
                    self.resumes = 0;
                }
                Some(Err(e)) if self.resumes < RESUMES => {
                    self.resumes += 1;
                    tracing::debug!(
                        "{}: body failed at byte {}: {e}; asking again",
                        self.path,
                        self.at
                    );
                    self.get()?;
                }
                Some(Err(e)) => return Err(io::Error::other(format!("the body failed: {e}"))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::upload::key::DEFAULT_KEY_TEMPLATE;

    /// Issue 17 item 2 (S3): partitions' spans, for pruning by hour.
    #[test]
    fn partition_spans_and_key_names() {
        let h = |y, mo, d, h| utc_ns(y, mo, d, h, 0, 0).unwrap();
        for (level, v, start, end) in [
            (0, [2025, 0, 0, 0], (2025, 1, 1, 0), (2026, 1, 1, 0)),
            (1, [2025, 12, 0, 0], (2025, 12, 1, 0), (2026, 1, 1, 0)),
            (1, [2025, 2, 0, 0], (2025, 2, 1, 0), (2025, 3, 1, 0)),
            (2, [2025, 2, 28, 0], (2025, 2, 28, 0), (2025, 3, 1, 0)),
            (3, [2025, 2, 28, 23], (2025, 2, 28, 23), (2025, 3, 1, 0)),
        ] {
            let (a, b) = (
                h(start.0, start.1, start.2, start.3),
                h(end.0, end.1, end.2, end.3),
            );
            assert_eq!(span(level, v), Some((a, b)), "{level} {v:?}");
        }
        assert_eq!(span(1, [2025, 13, 0, 0]), None);
        assert!(DEFAULT_KEY_TEMPLATE.ends_with("{host}-{start}-{seq}.{ext}"));
        assert_eq!(start_ns("20251125T032000Z"), Some(1_764_040_800 * NS));
        assert_eq!(start_ns("20251125T032000"), None);
    }
}
