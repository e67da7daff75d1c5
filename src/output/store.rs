//! Capture stores read back, for `mirrorcap extract`: where the files of a
//! mirrorcap output are, which session and time each holds, and a reader
//! over one of them.
//!
//! In: a store (today [`LocalStore`], an output directory read with the
//! config's [`OutputTemplate`]; an S3 prefix comes next, as another
//! [`Store`]) and a [`Selection`] (sessions, time window). Out: the files
//! worth opening ([`choose`]) and a [`FileReader`] per file. Dropped:
//! files whose path the template does not render (another layout, flow
//! files, the control socket), and files no record of which can be in the
//! window (pruned by name: a file's start is in its name, and it ends no
//! later than the next file of its session starts).

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::capture::{CaptureError, CaptureReader, Record};
use crate::output::template::{OutputTemplate, PathParser};
use crate::wire::geneve::EndpointId;

/// A mirror session as files name it. Ordered so that the files of one
/// store are read in a fixed order (ties in time keep it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub vni: u32,
    pub source: IpAddr,
    /// The Gateway Load Balancer endpoint; `None` for direct traffic.
    pub endpoint: Option<EndpointId>,
}

/// What to extract: sessions (an empty list keeps all) and a time window,
/// `from_ns` inclusive, `to_ns` exclusive. A store may prune its listing
/// by it (S3: by the Hive partitions); [`choose`] prunes by time.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub vnis: Vec<u32>,
    pub sources: Vec<IpAddr>,
    pub endpoints: Vec<EndpointId>,
    pub from_ns: u64,
    pub to_ns: u64,
}

impl Selection {
    /// Whether the session is one asked for.
    pub fn keeps(&self, s: &SessionKey) -> bool {
        (self.vnis.is_empty() || self.vnis.contains(&s.vni))
            && (self.sources.is_empty() || self.sources.contains(&s.source))
            && (self.endpoints.is_empty()
                || s.endpoint.is_some_and(|e| self.endpoints.contains(&e)))
    }
}

/// One capture file of a store.
#[derive(Clone, Debug)]
pub struct StoreFile {
    /// Where it is (a path; an object key for S3), also its name in messages.
    pub name: String,
    /// Which writer (a mirrorcap host) wrote it: the files of one writer
    /// and session follow one another in time, and are read one after the
    /// other. A local directory is one writer (empty); an S3 prefix holds
    /// several, named in the object keys.
    pub writer: String,
    pub session: SessionKey,
    /// The start its name gives, rounded down to `start_resolution_s`
    /// (`None`: the name holds no time; the file is always opened).
    pub start_ns: Option<u64>,
    pub start_resolution_s: u64,
    pub seq: u32,
    /// Still being written (`.part`): read up to its last whole record; its
    /// end is unknown.
    pub part: bool,
}

/// A reader over one file: mapped (a local file) or streamed (an object
/// being downloaded).
pub enum FileReader {
    Mapped(CaptureReader<File>),
    Stream(CaptureReader<Box<dyn Read + Send>>),
}

impl FileReader {
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        match self {
            FileReader::Mapped(r) => r.next_record(),
            FileReader::Stream(r) => r.next_record(),
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        match self {
            FileReader::Mapped(r) => r.offset(),
            FileReader::Stream(r) => r.offset(),
        }
    }
}

/// Where capture files are: lists them with their session and start, and
/// opens one. `extract` merges what any store gives the same way.
pub trait Store {
    /// The store as the user named it (`DIR`, `s3://bucket/prefix`).
    fn name(&self) -> &str;
    /// The files of the sessions `sel` keeps (a store may prune more, by
    /// time). Problems listing (a folder that cannot be read) go to
    /// `problem`, and the rest is still listed.
    fn list(&self, sel: &Selection, problem: &mut dyn FnMut(String)) -> Vec<StoreFile>;
    /// A reader over `f`, its file header read.
    fn open(&self, f: &StoreFile) -> Result<FileReader, CaptureError>;
}

/// A mirrorcap output directory, its paths laid out by a template.
pub struct LocalStore {
    name: String,
    root: PathBuf,
    parser: PathParser,
}

impl LocalStore {
    pub fn new(root: &Path, template: &OutputTemplate) -> LocalStore {
        LocalStore {
            name: root.display().to_string(),
            root: root.to_path_buf(),
            parser: template.path_parser(),
        }
    }

    fn walk(
        &self,
        dir: &Path,
        sel: &Selection,
        out: &mut Vec<StoreFile>,
        problem: &mut dyn FnMut(String),
    ) {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return problem(format!("{}: cannot list: {e}", dir.display())),
        };
        for e in rd {
            let e = match e {
                Ok(e) => e,
                Err(e) => return problem(format!("{}: cannot list: {e}", dir.display())),
            };
            let path = e.path();
            // Links are not followed (the daemon makes none).
            match e.file_type() {
                Ok(t) if t.is_dir() => self.walk(&path, sel, out, problem),
                Ok(t) if t.is_file() => {
                    let Some(rel) = path.strip_prefix(&self.root).ok().and_then(Path::to_str)
                    else {
                        continue;
                    };
                    let (rel, part) = match rel.strip_suffix(".part") {
                        Some(r) => (r, true),
                        None => (rel, false),
                    };
                    let Some(p) = self.parser.parse(rel) else {
                        continue;
                    };
                    let session = SessionKey {
                        vni: p.fields.vni,
                        source: p.fields.source,
                        endpoint: p.fields.endpoint,
                    };
                    if !sel.keeps(&session) {
                        continue;
                    }
                    out.push(StoreFile {
                        name: path.display().to_string(),
                        writer: String::new(),
                        session,
                        start_ns: p.start_resolution_s.map(|_| p.fields.start_ns),
                        start_resolution_s: p.start_resolution_s.unwrap_or(0),
                        seq: p.fields.seq,
                        part,
                    });
                }
                _ => {}
            }
        }
    }
}

impl Store for LocalStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn list(&self, sel: &Selection, problem: &mut dyn FnMut(String)) -> Vec<StoreFile> {
        let mut out = Vec::new();
        self.walk(&self.root, sel, &mut out, problem);
        out
    }

    fn open(&self, f: &StoreFile) -> Result<FileReader, CaptureError> {
        let io = |source| CaptureError::Io {
            input: f.name.clone(),
            source,
        };
        let file = match File::open(&f.name) {
            Ok(file) => file,
            // Renamed since it was listed: closed by the daemon, complete.
            Err(e) if f.part && e.kind() == std::io::ErrorKind::NotFound => {
                File::open(f.name.trim_end_matches(".part")).map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        CaptureReader::open_file(file, &f.name).map(FileReader::Mapped)
    }
}

/// The files that can hold a record of `[from_ns, to_ns)`, each writer's
/// and session's in order (start, then seq), sessions in order. A file
/// listed both as `<name>.part` and `<name>` (renamed while listed) is
/// kept once, complete. A file holds records
/// from its start (its name's, rounded down) to no later than the next
/// file's first record, which is before the next name's start plus its
/// rounding; the last file of a session (or a `.part`, or a name without a
/// time) has no known end, and is read until a record at or past `to_ns`.
pub fn choose(mut files: Vec<StoreFile>, from_ns: u64, to_ns: u64) -> Vec<StoreFile> {
    let order = |f: &StoreFile| (f.session, f.writer.clone(), f.start_ns, f.seq, f.part);
    files.sort_by_key(order);
    files.dedup_by(|later, earlier| {
        later.part
            && (
                earlier.session,
                &earlier.writer,
                earlier.start_ns,
                earlier.seq,
            ) == (later.session, &later.writer, later.start_ns, later.seq)
    });
    let mut keep = vec![false; files.len()];
    for i in 0..files.len() {
        let f = &files[i];
        let next = files
            .get(i + 1)
            .filter(|n| n.session == f.session && n.writer == f.writer && !f.part);
        let starts_before_end = f.start_ns.is_none_or(|s| s < to_ns);
        let end = next.and_then(|n| {
            let s = n.start_ns?;
            Some(s.saturating_add(n.start_resolution_s.saturating_mul(1_000_000_000)))
        });
        let ends_after_start = end.is_none_or(|e| e > from_ns);
        keep[i] = starts_before_end && ends_after_start;
    }
    let mut k = keep.into_iter();
    files.retain(|_| k.next().unwrap_or(false));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(seq: u32, start_s: u64) -> StoreFile {
        StoreFile {
            name: format!("f{seq}"),
            writer: String::new(),
            session: SessionKey {
                vni: 1,
                source: "10.0.0.1".parse().unwrap(),
                endpoint: None,
            },
            start_ns: Some(start_s * 1_000_000_000),
            start_resolution_s: 1,
            seq,
            part: false,
        }
    }

    /// Issue 17, item 2: a file is chosen when its span (its start to the
    /// next file's start plus a second) meets the window; the last one is
    /// open-ended.
    #[test]
    fn only_overlapping_files_are_chosen() {
        let files: Vec<_> = (0..10).map(|i| file(i, 100 * u64::from(i))).collect();
        let s = 1_000_000_000;
        let names = |v: Vec<StoreFile>| v.into_iter().map(|f| f.seq).collect::<Vec<_>>();
        assert_eq!(
            names(choose(files.clone(), 150 * s, 350 * s)),
            vec![1, 2, 3]
        );
        // A window starting within the second after file 2's start can
        // still hold the end of file 1 (names are rounded down).
        assert_eq!(
            names(choose(files.clone(), 200 * s + 5, 201 * s)),
            vec![1, 2]
        );
        assert_eq!(names(choose(files.clone(), 201 * s, 202 * s)), vec![2]);
        assert_eq!(names(choose(files.clone(), 5000 * s, 6000 * s)), vec![9]);
        assert_eq!(names(choose(files.clone(), 0, 1)), vec![0]);
        // Renamed while listed: once, complete.
        let mut both = files.clone();
        both.push(StoreFile {
            part: true,
            ..files[9].clone()
        });
        let last = choose(both, 5000 * s, 6000 * s);
        assert_eq!((last.len(), last[0].part), (1, false));
        let mut untimed = files.clone();
        untimed[4].start_ns = None;
        assert!(names(choose(untimed, 0, 1)).contains(&4));
    }
}
