//! Stage 6: capture files on disk. The receive loop hands encoded records
//! to a writer thread, which owns every file, so opening, writing,
//! renaming and deleting never stall the receive loop.
//!
//! In (receive side, [`Output`]): `open` a file for a session, `append`
//! records to it, `close` it; each call only copies bytes into a chunk or
//! queues a command. Out (writer thread): files under the output directory
//! at the path the [`OutputTemplate`] gives. A file being written is named
//! `<path>.part` and renamed to `<path>` when closed, so every `*.pcap` /
//! `*.pcapng` on disk is complete; with `[output] fsync` (the default) a
//! third thread `fdatasync`s the closed file first and reports back, so the
//! rename waits for the disk and nothing else does.
//!
//! Memory is bounded whatever the number of sessions: records travel in
//! chunks ([`CHUNK_LEN`] each, a fixed pool of them). The first
//! [`MAX_LANES`] files written to after each flush get a chunk of their own
//! (a lane: the whole chunk is one run, written with one `write`, even when
//! sessions interleave packet by packet); further files share one chunk,
//! where consecutive records of a file form a run, and the writer thread
//! writes long runs straight to their file and stages short ones per file,
//! within [`STAGING_BUDGET`] shared by the open files, so a file is written
//! in large writes either way. When the disk is slower than
//! the traffic and no chunk is free, the live daemon drops the record and
//! counts it (`write_backlog`) instead of blocking the socket; replay waits.
//! A chunk that is not full is sent once a second, so files are at most
//! about a second behind.
//!
//! Retention also runs in the writer thread: `max_files` closed files per
//! session and `max_total_bytes` under the output directory (closed files
//! of this and earlier runs, the open ones, those being synced and the
//! records staged for them); before each write the oldest closed files are
//! deleted until the write fits, so the limit holds while running unless
//! the open files alone exceed it. A write that fails (disk full, I/O
//! error) drops that chunk's records for the file and truncates it back to
//! its last whole record, so every file stays readable; later chunks are
//! tried again, so writing resumes when space returns.
//!
//! Below the output directory no symbolic link is followed: directories,
//! files, renames and deletions go through [`crate::output::outdir`]; a file whose
//! path meets a link is not created, and its frames are dropped and counted
//! as `output_symlink`.
//!
//! A writer thread that dies (a panic) is caught: it counts what it held
//! as lost, marks the counters (health 503 for good, see
//! [`Counters::writer_died`]; `run` then stops with exit code 2), and from
//! then on counts every frame sent to it as `write_error` and answers
//! `Finish`, so the receive side neither blocks nor loses count.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

use crate::capture::encode::OutputFormat;
use crate::output::outdir::{self, OutDirError};
use crate::telemetry::metrics::{Counters, DropReason, LogLimiter};

/// Bytes per chunk of records on their way to the writer thread.
pub const CHUNK_LEN: usize = 1 << 20;
/// Chunks in the pool: the most record bytes in flight.
pub const DEFAULT_CHUNKS: usize = 16;
/// Files per receive-side handle that get a chunk of their own.
pub const MAX_LANES: usize = 4;
/// What the writer may stage for files whose records arrive interleaved
/// with other sessions' (shared by the open files).
pub const STAGING_BUDGET: usize = 16 << 20;
/// Files open in the writer beyond which a new file is created only when
/// its first records arrive (see `Disk::open`).
const EAGER_CREATE_LIMIT: u64 = 64;
/// Closed files waiting for the sync thread, at most (see `Disk::close`).
const MAX_PENDING_SYNCS: usize = 256;
/// A run this long is written as it is, not staged.
const LONG_RUN: usize = 64 << 10;

/// Test only: with this environment variable set to N, the writer thread
/// panics when it is asked to open its N-th file, so that the tests can
/// check what a dead writer does to health and to the exit code on the
/// real binary. Read once when the writer starts; unset, it costs nothing.
pub const TEST_WRITER_PANIC_AT_OPEN: &str = "MIRRORCAP_TEST_WRITER_PANIC_AT_OPEN";

/// Records that the writer thread died, and logs it the first time.
fn writer_died(counters: &Counters, why: &str, frames_lost: u64) {
    if counters.writer_died(why.to_string()) {
        tracing::error!(
            frames_lost,
            "the capture writer thread died ({why}): nothing more is written; /healthz answers 503 \
             and mirrorcap stops with exit code 2 so that its service manager restarts it (the \
             next start recovers the files left open)"
        );
    }
}

/// The message of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Files are created with these permissions, directories with [`DIR_MODE`].
pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;

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
#[derive(Clone, Debug)]
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

/// Errors creating, writing or renaming capture files.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// Reaching the file's directory (or creating it) failed, or a link
    /// was found on the way ([`OutDirError::Link`]).
    #[error(transparent)]
    OutDir(#[from] OutDirError),
    #[error("{path}: cannot create file: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("{path}: write failed: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// Creating the file failed less than a second ago, for this reason.
    #[error("a file that could not be created is retried once a second")]
    NotYet(DropReason),
    #[error("{path}: cannot rename to {to}: {source}")]
    Rename {
        path: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("{path}: fdatasync before closing failed (the data may not be on disk): {source}")]
    Sync { path: PathBuf, source: io::Error },
}

impl WriterError {
    /// True when the cause is a full file system (or quota).
    pub fn is_disk_full(&self) -> bool {
        let e = match self {
            WriterError::Create { source, .. }
            | WriterError::Write { source, .. }
            | WriterError::Rename { source, .. }
            | WriterError::Sync { source, .. } => source,
            WriterError::OutDir(e) => match e.io() {
                Some(e) => e,
                None => return false,
            },
            WriterError::NotYet(reason) => return *reason == DropReason::DiskFull,
        };
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }

    /// The reason frames lost to this error are counted under.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            WriterError::NotYet(reason) => *reason,
            WriterError::OutDir(OutDirError::Link { .. }) => DropReason::OutputSymlink,
            e if e.is_disk_full() => DropReason::DiskFull,
            _ => DropReason::WriteError,
        }
    }
}

/// One open capture file.
pub fn part_path_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Why the output directory cannot be used (checked once at start).
#[derive(Debug, thiserror::Error)]
pub enum OutputDirError {
    #[error("output directory {path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("output directory {path}: cannot create it: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("output directory {path}: cannot write in it (creating {probe} failed): {source}")]
    Probe {
        path: PathBuf,
        probe: PathBuf,
        source: io::Error,
    },
}

/// Checks at start that capture files can be created under `dir`: creates
/// it (and its parents, mode [`DIR_MODE`]) when missing, then creates and
/// removes an empty probe file in it. So a `dir` that is a regular file, on
/// a read-only file system or not writable by the daemon's user fails
/// before any socket is bound, naming it, instead of dropping every frame.
/// The probe is empty: a full disk still passes (capture resumes when space
/// returns), since creating an empty file needs no data block.
pub fn check_output_dir(dir: &Path) -> Result<(), OutputDirError> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if dir.exists() && !dir.is_dir() {
        return Err(OutputDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| OutputDirError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    let probe = dir.join(format!(".mirrorcap-probe-{}", std::process::id()));
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&probe)
    };
    // One left by a crashed run that had the same process id: replace it.
    let r = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&probe);
            create()
        }
        r => r,
    };
    match r {
        Ok(f) => {
            drop(f);
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(OutputDirError::Probe {
            path: dir.to_path_buf(),
            probe,
            source,
        }),
    }
}

/// What the receive side does when no chunk is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backlog {
    /// Live: drop the record and count it as `write_backlog`.
    Drop,
    /// Replay: wait for the writer thread.
    Wait,
}

/// Names one open file between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(u32);

/// The header before each run of records of one file in a chunk. Records
/// that follow each other for the same file extend the run, so the writer
/// writes one contiguous slice per run (one for a whole chunk of a single
/// busy session) instead of one per record.
///
/// Layout (little-endian `u32`s, [`RunHeader::LEN`] bytes): file id, run
/// length in bytes, frames in the run, their frame bytes (for the
/// counters). A run with no bytes and `frames == u32::MAX` is a close
/// marker: the file is closed once the records before it are written, so
/// closing a file travels in the data stream and costs 16 bytes, not a
/// chunk of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunHeader {
    file: FileId,
    len: u32,
    frames: u32,
    frame_bytes: u32,
}

impl RunHeader {
    const LEN: usize = 16;
    const CLOSE_FRAMES: u32 = u32::MAX;

    fn close(file: FileId) -> RunHeader {
        RunHeader {
            file,
            len: 0,
            frames: Self::CLOSE_FRAMES,
            frame_bytes: 0,
        }
    }

    fn is_close(&self) -> bool {
        self.len == 0 && self.frames == Self::CLOSE_FRAMES
    }

    fn write_to(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.file.0.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.frames.to_le_bytes());
        b[12..16].copy_from_slice(&self.frame_bytes.to_le_bytes());
    }

    fn read_from(b: &[u8]) -> RunHeader {
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        RunHeader {
            file: FileId(word(0)),
            len: word(4),
            frames: word(8),
            frame_bytes: word(12),
        }
    }
}

enum Command {
    /// A file to create, as the writer will hold it.
    Open(FileId, DiskFile),
    Data(Vec<u8>),
    Close(FileId),
    /// Write what is staged for every file (once a second).
    FlushFiles,
    /// A reloaded config's retention limits and `on_rotate` hook.
    SetRetention(Option<u32>, Option<u64>),
    /// Whether files are synced before their rename (`[output] fsync`).
    SetFsync(bool),
    /// From the sync thread: a closed file's data is on disk (or the sync
    /// failed); it can get its final name.
    Synced(DiskFile, Option<io::Error>),
    SetHook(RotateHook),
    /// Closing time: the writer thread answers on the channel, then ends.
    Finish(mpsc::Sender<()>),
}

/// A file with a chunk of its own: one run, whose prefix is filled in when
/// the chunk is sent.
struct Lane {
    id: FileId,
    chunk: Option<Vec<u8>>,
    frames: u32,
    frame_bytes: u32,
    /// The lane began while the shared chunk held records (perhaps of
    /// this file): that chunk must reach the writer before this lane's.
    after_current: bool,
}

/// The receive side of the writer. With several workers, each has its own
/// `Output` (see [`Output::sibling`]) feeding the one writer thread.
pub struct Output {
    commands: mpsc::Sender<Command>,
    /// Files with a chunk of their own, until the next flush.
    lanes: Vec<Lane>,
    /// The chunk the other files share.
    current: Option<Vec<u8>>,
    /// Where the prefix of the current chunk's last run is, and its file.
    last_run: Option<(usize, FileId)>,
    backlog: Backlog,
    dir: Arc<Path>,
    template: Arc<OutputTemplate>,
    shared: Arc<OutputShared>,
    /// Set once this handle has finished.
    finished: bool,
}

/// What the handles of one writer thread share.
struct OutputShared {
    /// Free chunks; taken once per chunk, so the lock is cold.
    free: std::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Returns chunks to `free` from the receive side (a lane's chunk whose
    /// records were copied into the shared chunk).
    give_back: mpsc::Sender<Vec<u8>>,
    next_id: std::sync::atomic::AtomicU32,
    /// Handles not finished yet; the last to finish stops the thread.
    live: std::sync::atomic::AtomicUsize,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// To report a writer thread found dead at the end.
    counters: Arc<Counters>,
}

impl Output {
    /// Starts the writer thread for files under `dir`. Files already there
    /// count toward `max_total_bytes`.
    pub fn spawn(
        dir: &Path,
        template: OutputTemplate,
        mut retention: Retention,
        hook: RotateHook,
        counters: Arc<Counters>,
        chunks: usize,
        backlog: Backlog,
    ) -> Output {
        let (commands, rx) = mpsc::channel();
        let (free_tx, free) = mpsc::channel();
        let counters_for_handles = counters.clone();
        for _ in 0..chunks.max(2) {
            let _ = free_tx.send(Vec::with_capacity(CHUNK_LEN));
        }
        let give_back_tx = free_tx.clone();
        retention.root = Some(dir.to_path_buf());
        let mut disk = Disk {
            root: dir.to_path_buf(),
            files: Default::default(),
            retention,
            hook,
            counters,
            free: free_tx.clone(),
            error_log: LogLimiter::new(std::time::Duration::from_secs(10)),
            iov_ranges: Vec::new(),
            closes: Vec::new(),
            fsync: true,
            syncer: None,
            syncer_thread: None,
            pending_syncs: 0,
            syncing_bytes: 0,
            panic_at_open: std::env::var(TEST_WRITER_PANIC_AT_OPEN)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &u64| n > 0),
        };
        let (sync_tx, sync_rx) = mpsc::channel::<(File, DiskFile)>();
        let back = commands.clone();
        disk.syncer = Some(sync_tx);
        disk.syncer_thread = Some(
            std::thread::Builder::new()
                .name("mirrorcap-sync".into())
                .spawn(move || {
                    for (file, closed) in sync_rx {
                        let r = file.sync_data();
                        drop(file);
                        let _ = back.send(Command::Synced(closed, r.err()));
                    }
                })
                .expect("spawning the sync thread"),
        );
        let thread = std::thread::Builder::new()
            .name("mirrorcap-writer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.run(&rx)));
                let why = match ran {
                    Ok(true) => return,
                    Ok(false) => "its command channel closed before the end".to_string(),
                    Err(p) => format!("it panicked: {}", panic_text(p.as_ref())),
                };
                disk.died(&why);
                // A second panic here ends the thread for good; the
                // receive side notices (see `Output::finish_inner`).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.drain(&rx)));
            })
            .expect("spawning the writer thread");
        Output {
            commands,
            lanes: Vec::new(),
            current: None,
            last_run: None,
            backlog,
            dir: Arc::from(dir),
            template: Arc::new(template),
            shared: Arc::new(OutputShared {
                free: std::sync::Mutex::new(free),
                give_back: give_back_tx,
                next_id: std::sync::atomic::AtomicU32::new(0),
                live: std::sync::atomic::AtomicUsize::new(1),
                thread: std::sync::Mutex::new(Some(thread)),
                counters: counters_for_handles,
            }),
            finished: false,
        }
    }

    /// Another handle on the same writer thread and chunk pool, for another
    /// worker.
    pub fn sibling(&self) -> Output {
        self.shared.live.fetch_add(1, Relaxed);
        // Each handle holds up to a chunk per lane and the shared one: the
        // pool grows by that much, so a worker never starves the others.
        for _ in 0..=MAX_LANES {
            let _ = self.shared.give_back.send(Vec::with_capacity(CHUNK_LEN));
        }
        Output {
            commands: self.commands.clone(),
            lanes: Vec::new(),
            current: None,
            last_run: None,
            backlog: self.backlog,
            dir: self.dir.clone(),
            template: self.template.clone(),
            shared: self.shared.clone(),
            finished: false,
        }
    }

    /// Queues the creation of a file for `session`; `header` is its file
    /// header. The writer thread picks the next free `{seq}` if the name is
    /// taken (a restart within the same second), and counts the file in
    /// `session.files` once it is closed and renamed.
    pub fn open(
        &mut self,
        session: Arc<crate::telemetry::metrics::SessionStats>,
        fields: PathFields,
        header: Vec<u8>,
    ) -> FileId {
        let id = FileId(self.shared.next_id.fetch_add(1, Relaxed));
        let f = DiskFile {
            file: None,
            part: PathBuf::new(),
            final_path: PathBuf::new(),
            good_len: 0,
            session,
            vni_source: Some((fields.vni, fields.source.to_string())),
            header,
            buf: Vec::new(),
            staged: (0, 0),
            retry: Some((
                self.dir.clone(),
                self.template.clone(),
                fields,
                std::time::Instant::now(),
                DropReason::WriteError,
            )),
        };
        let _ = self.commands.send(Command::Open(id, f));
        id
    }

    /// Copies one record (`parts` concatenated; `frame_len` of them is the
    /// frame) into the current chunk. Fails with `WriteBacklog` when no
    /// chunk is free (live only).
    #[inline]
    pub fn append(
        &mut self,
        id: FileId,
        parts: [&[u8]; 3],
        frame_len: usize,
    ) -> Result<(), DropReason> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let lane = match self.lanes.iter().position(|l| l.id == id) {
            Some(i) => Some(i),
            None if self.lanes.len() < MAX_LANES => {
                let after_current = self.current.as_ref().is_some_and(|c| !c.is_empty());
                self.lanes.push(Lane {
                    id,
                    chunk: None,
                    frames: 0,
                    frame_bytes: 0,
                    after_current,
                });
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        if let Some(i) = lane {
            return self.append_to_lane(i, parts, len, frame_len);
        }
        if !self.make_room(RunHeader::LEN + len) {
            return Err(DropReason::WriteBacklog);
        }
        let c = self.current.as_mut().expect("made room above");
        match self.last_run {
            Some((at, run_id)) if run_id == id => {
                let mut h = RunHeader::read_from(&c[at..]);
                h.len += len as u32;
                h.frames += 1;
                h.frame_bytes += frame_len as u32;
                h.write_to(&mut c[at..]);
            }
            _ => {
                self.last_run = Some((c.len(), id));
                let h = RunHeader {
                    file: id,
                    len: len as u32,
                    frames: 1,
                    frame_bytes: frame_len as u32,
                };
                let at = c.len();
                c.resize(at + RunHeader::LEN, 0);
                h.write_to(&mut c[at..]);
            }
        }
        for p in parts {
            c.extend_from_slice(p);
        }
        Ok(())
    }

    /// Makes sure the current chunk has room for `need` more bytes: a full
    /// one is sent first. False when no chunk is free (live only).
    #[inline]
    fn make_room(&mut self, need: usize) -> bool {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.len() + need > c.capacity())
        {
            self.send_current();
        }
        if self.current.is_none() {
            self.current = self.take_chunk();
        }
        self.current.is_some()
    }

    #[inline]
    fn append_to_lane(
        &mut self,
        i: usize,
        parts: [&[u8]; 3],
        len: usize,
        frame_len: usize,
    ) -> Result<(), DropReason> {
        let full = self.lanes[i]
            .chunk
            .as_ref()
            .is_some_and(|c| c.len() + len > c.capacity());
        if full {
            self.send_lane(i);
        }
        if self.lanes[i].chunk.is_none() {
            let mut c = self.take_chunk().ok_or(DropReason::WriteBacklog)?;
            c.resize(RunHeader::LEN, 0);
            self.lanes[i].chunk = Some(c);
        }
        let lane = &mut self.lanes[i];
        let c = lane.chunk.as_mut().expect("taken above");
        for p in parts {
            c.extend_from_slice(p);
        }
        lane.frames += 1;
        lane.frame_bytes += frame_len as u32;
        Ok(())
    }

    /// A free chunk: waits for one in replay, none when there is none live.
    fn take_chunk(&self) -> Option<Vec<u8>> {
        let free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
        match self.backlog {
            Backlog::Drop => free.try_recv().ok(),
            Backlog::Wait => free.recv().ok(),
        }
    }

    /// Puts a chunk back in the pool without a round trip through the
    /// writer thread.
    fn give_back(&self, mut c: Vec<u8>) {
        c.clear();
        let _ = self.shared.give_back.send(c);
    }

    /// Sends lane `i`'s chunk as one run, if it holds a record.
    fn send_lane(&mut self, i: usize) {
        if self.lanes[i].after_current
            && self.lanes[i]
                .chunk
                .as_ref()
                .is_some_and(|c| c.len() > RunHeader::LEN)
        {
            // Earlier records of this file may be in the shared chunk.
            self.send_current();
        }
        let lane = &mut self.lanes[i];
        if let Some(mut c) = lane.chunk.take() {
            if c.len() == RunHeader::LEN {
                lane.chunk = Some(c);
                return;
            }
            RunHeader {
                file: lane.id,
                len: (c.len() - RunHeader::LEN) as u32,
                frames: lane.frames,
                frame_bytes: lane.frame_bytes,
            }
            .write_to(&mut c);
            (lane.frames, lane.frame_bytes) = (0, 0);
            let _ = self.commands.send(Command::Data(c));
        }
    }

    /// Ends lane `i` (a flush, or its file closing) and hands its records
    /// on in proportion to their size: a lane holding little is copied
    /// into the shared chunk as one run and its chunk goes straight back to
    /// the pool, so a second's worth of a quiet session, or a file closed
    /// early, does not take a 1 MiB chunk to the writer thread; a lane
    /// holding [`LONG_RUN`] or more is sent as it is (no copy).
    fn retire_lane(&mut self, i: usize) {
        let mut lane = self.lanes.swap_remove(i);
        let Some(chunk) = lane.chunk.take() else {
            return;
        };
        let run_len = chunk.len() - RunHeader::LEN;
        if run_len == 0 {
            return self.give_back(chunk);
        }
        if run_len < LONG_RUN && self.make_room(RunHeader::LEN + run_len) {
            let c = self.current.as_mut().expect("made room above");
            let at = c.len();
            c.resize(at + RunHeader::LEN, 0);
            RunHeader {
                file: lane.id,
                len: run_len as u32,
                frames: lane.frames,
                frame_bytes: lane.frame_bytes,
            }
            .write_to(&mut c[at..]);
            c.extend_from_slice(&chunk[RunHeader::LEN..]);
            self.last_run = Some((at, lane.id));
            return self.give_back(chunk);
        }
        lane.chunk = Some(chunk);
        self.lanes.push(lane);
        let last = self.lanes.len() - 1;
        self.send_lane(last);
        self.lanes.pop();
    }

    /// Hands every record to the writer thread, and frees the lanes for
    /// whichever files come next. Sends at most one chunk besides the
    /// lanes holding [`LONG_RUN`] or more.
    pub fn flush(&mut self) {
        while !self.lanes.is_empty() {
            self.retire_lane(self.lanes.len() - 1);
        }
        if self.current.as_ref().is_some_and(|c| !c.is_empty()) {
            self.send_current();
        }
    }

    /// Hands over the current chunk and has the writer write every file's
    /// staged records: called once a second, so files are at most about a
    /// second behind.
    pub fn flush_to_disk(&mut self) {
        self.flush();
        let _ = self.commands.send(Command::FlushFiles);
    }

    fn send_current(&mut self) {
        self.last_run = None;
        if let Some(c) = self.current.take() {
            let _ = self.commands.send(Command::Data(c));
        }
        for lane in &mut self.lanes {
            lane.after_current = false;
        }
    }

    /// A reloaded config: new files use `template`; the writer applies the
    /// new retention limits.
    pub fn reconfigure(
        &mut self,
        template: OutputTemplate,
        max_files: Option<u32>,
        max_total_bytes: Option<u64>,
        hook: RotateHook,
    ) {
        self.template = Arc::new(template);
        let _ = self
            .commands
            .send(Command::SetRetention(max_files, max_total_bytes));
        let _ = self.commands.send(Command::SetHook(hook));
    }

    /// Whether the writer syncs each file before renaming it.
    pub fn set_fsync(&mut self, on: bool) {
        let _ = self.commands.send(Command::SetFsync(on));
    }

    /// Queues closing (and renaming) a file, after its records. The close
    /// goes into the shared chunk as a marker behind them, so it sends no
    /// chunk of its own: rotating many sessions at once (a time slot
    /// ending) costs buffers in proportion to the records, not to the
    /// number of files. The writer closes the file when that chunk arrives
    /// (at the latest with the once-a-second flush).
    pub fn close(&mut self, id: FileId) {
        if let Some(i) = self.lanes.iter().position(|l| l.id == id) {
            self.retire_lane(i);
        }
        if self.make_room(RunHeader::LEN) {
            let c = self.current.as_mut().expect("made room above");
            let at = c.len();
            c.resize(at + RunHeader::LEN, 0);
            RunHeader::close(id).write_to(&mut c[at..]);
            // The next record starts a run after the marker.
            self.last_run = None;
        } else {
            // No chunk free (live, the disk behind): every record of the
            // file is in chunks already sent, so the command can follow
            // them on the channel.
            let _ = self.commands.send(Command::Close(id));
        }
    }

    /// Flushes everything, waits until the writer thread has closed every
    /// file and ended.
    pub fn finish(mut self) {
        self.finish_inner();
    }

    /// Flushes; the last handle to finish also closes every file and ends
    /// the writer thread.
    fn finish_inner(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.flush();
        if self
            .shared
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            != 1
        {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let answered = self.commands.send(Command::Finish(tx)).is_ok() && rx.recv().is_ok();
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let joined = thread.map(|t| t.join());
        let counters = &self.shared.counters;
        if let Some(Err(p)) = joined {
            writer_died(
                counters,
                &format!("it panicked: {}", panic_text(p.as_ref())),
                0,
            );
        } else if !answered {
            writer_died(counters, "it ended without closing its files", 0);
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.finish_inner();
    }
}

/// One file, as the writer thread holds it.
struct DiskFile {
    /// `None` when creating it failed; retried on the next chunk.
    file: Option<File>,
    part: PathBuf,
    final_path: PathBuf,
    /// Bytes known to be on disk: whole records only.
    good_len: u64,
    /// The session's counters: its files are counted here when renamed.
    session: Arc<crate::telemetry::metrics::SessionStats>,
    /// (vni, source as text) for the `on_rotate` placeholders.
    vni_source: Option<(u32, String)>,
    header: Vec<u8>,
    /// Records staged for this file when its runs are short (many sessions
    /// interleaved), so it is written in large writes, not one per record;
    /// `staged` counts its frames and their bytes for the counters.
    buf: Vec<u8>,
    staged: (u64, u64),
    /// Until it is created: what to create, when to try, and why the last
    /// attempt failed (frames lost meanwhile count under it).
    retry: Option<Retry>,
}

/// Where one run of records of a file lies in a chunk.
#[derive(Clone, Copy, Debug)]
struct RunRange {
    file: FileId,
    start: usize,
    len: usize,
    frames: u64,
    frame_bytes: u64,
}

/// (output directory, template, fields, next attempt, last failure).
type Retry = (
    Arc<Path>,
    Arc<OutputTemplate>,
    PathFields,
    std::time::Instant,
    DropReason,
);

/// The writer thread's state.
struct Disk {
    /// The output directory: files are reached from it without following
    /// links ([`crate::output::outdir`]).
    root: PathBuf,
    files: foldhash::HashMap<FileId, DiskFile>,
    retention: Retention,
    hook: RotateHook,
    counters: Arc<Counters>,
    free: mpsc::Sender<Vec<u8>>,
    error_log: LogLimiter,
    /// Per chunk: where each run of records is, reused.
    iov_ranges: Vec<RunRange>,
    /// Per chunk: the files whose close marker it holds, reused.
    closes: Vec<FileId>,
    /// `fdatasync` a file before renaming it. The sync runs on its own
    /// thread (it can take as long as the disk needs to write the file
    /// out), which sends `Synced` back; the writer keeps writing meanwhile.
    fsync: bool,
    syncer: Option<mpsc::Sender<(File, DiskFile)>>,
    syncer_thread: Option<std::thread::JoinHandle<()>>,
    pending_syncs: usize,
    /// Bytes of the files handed to the sync thread and not renamed yet:
    /// on disk, neither open nor closed, and counted for `max_total_bytes`.
    syncing_bytes: u64,
    /// Test only ([`TEST_WRITER_PANIC_AT_OPEN`]): files left to open
    /// before the thread panics; `None` (always, unless the variable is
    /// set) does nothing.
    panic_at_open: Option<u64>,
}

impl Disk {
    /// Handles commands until `Finish` (true), or until the channel
    /// closes without one (false: the writer is not expected to end so).
    fn run(&mut self, rx: &mpsc::Receiver<Command>) -> bool {
        self.update_output_bytes();
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Open(id, f) => self.open(id, f),
                Command::Data(chunk) => {
                    self.write_chunk(&chunk);
                    self.update_output_bytes();
                    let mut chunk = chunk;
                    chunk.clear();
                    let _ = self.free.send(chunk);
                }
                Command::Close(id) => {
                    self.close(id);
                    self.update_output_bytes();
                }
                Command::SetHook(h) => {
                    let running = std::mem::take(&mut self.hook.running);
                    self.hook = h;
                    self.hook.running = running;
                }
                Command::SetFsync(on) => self.fsync = on,
                Command::Synced(c, err) => self.sync_done(c, err),
                Command::SetRetention(files, bytes) => {
                    self.retention.set_limits(files, bytes);
                    self.make_room(0);
                }
                Command::FlushFiles => {
                    self.flush_all();
                    self.update_output_bytes();
                    self.hook.reap(&self.counters);
                }
                Command::Finish(done) => {
                    self.finish(rx);
                    let _ = done.send(());
                    return true;
                }
            }
        }
        false
    }

    /// Closes every file, waits for the syncs still queued and renames
    /// those files, and waits for the `on_rotate` commands.
    fn finish(&mut self, rx: &mpsc::Receiver<Command>) {
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        drop(self.syncer.take());
        while self.pending_syncs > 0 {
            match rx.recv() {
                Ok(Command::Synced(c, err)) => self.sync_done(c, err),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if let Some(t) = self.syncer_thread.take() {
            let _ = t.join();
        }
        self.update_output_bytes();
        self.hook.finish(&self.counters);
    }

    /// The sync thread is done with a closed file: rename it.
    fn sync_done(&mut self, c: DiskFile, err: Option<io::Error>) {
        self.pending_syncs -= 1;
        self.syncing_bytes -= c.good_len;
        self.synced(c, err);
        self.update_output_bytes();
    }

    /// After `run` ended without `Finish` (`why`: a panic, or the channel
    /// closed): nothing more is written. Health turns 503 for good and the
    /// daemon stops with an error (see `main.rs`); the frames staged in
    /// open files are counted as lost; the open files are left as `.part`
    /// (the next start cuts them to their last whole record and renames
    /// them); retention deletes nothing more.
    fn died(&mut self, why: &str) {
        let lost: u64 = self.files.values().map(|f| f.staged.0).sum();
        self.counters.count_drops(DropReason::WriteError, lost);
        self.files.clear();
        self.retention.set_limits(None, None);
        writer_died(&self.counters, why, lost);
    }

    /// What a dead writer still does, until `Finish`: every frame sent is
    /// counted as lost (`write_error`: no file is open any more, so
    /// `write_chunk` counts each run of records as it would for a file
    /// that does not exist), chunks go back to the pool (so the receive
    /// side neither blocks nor counts `write_backlog`), and syncs already
    /// queued still end in a rename, since their files are whole.
    fn drain(&mut self, rx: &mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Data(mut chunk) => {
                    self.write_chunk(&chunk);
                    chunk.clear();
                    let _ = self.free.send(chunk);
                }
                Command::Synced(c, err) => self.sync_done(c, err),
                Command::Finish(done) => {
                    self.finish(rx);
                    let _ = done.send(());
                    return;
                }
                Command::Open(..)
                | Command::Close(_)
                | Command::FlushFiles
                | Command::SetRetention(..)
                | Command::SetFsync(_)
                | Command::SetHook(_) => {}
            }
        }
    }

    /// Bytes of capture files under the output directory that are not
    /// closed: open files and files being synced before their rename.
    fn open_bytes(&self) -> u64 {
        self.files.values().map(|f| f.good_len).sum::<u64>() + self.syncing_bytes
    }

    /// Deletes the oldest closed files, when `max_total_bytes` is set,
    /// until what is on disk, what is staged to be written and `incoming`
    /// more bytes fit. Called before each write (a chunk, a file header),
    /// so the total under the output directory stays within the limit
    /// while running, as long as closed files remain to be deleted.
    fn make_room(&mut self, incoming: u64) {
        if !self.retention.max_total_bytes_set() {
            return;
        }
        let pending: u64 = self
            .files
            .values()
            .map(|f| f.good_len + f.buf.len() as u64)
            .sum::<u64>()
            + self.syncing_bytes;
        let n = self.retention.enforce_total(pending + incoming);
        self.counters.files_deleted.fetch_add(n, Relaxed);
    }

    fn update_output_bytes(&self) {
        self.counters
            .output_bytes
            .store(self.retention.closed_bytes() + self.open_bytes(), Relaxed);
    }

    /// Takes a file the receive side opened and creates it at once (so a
    /// session's `.part` appears with its first packet), unless
    /// [`EAGER_CREATE_LIMIT`] files are open already: then it is created
    /// when its first records arrive ([`Disk::write_records`]). The close
    /// markers of earlier files may still be on their way in the shared
    /// chunk, so a burst of rotations would otherwise hold every old file
    /// open beside every new one until that chunk came. Creating is
    /// retried once a second when it fails.
    fn open(&mut self, id: FileId, mut f: DiskFile) {
        if let Some(n) = &mut self.panic_at_open {
            *n -= 1;
            if *n == 0 {
                panic!(
                    "{TEST_WRITER_PANIC_AT_OPEN} is set: the test asked the writer thread to die"
                );
            }
        }
        if self.counters.open_files.load(Relaxed) < EAGER_CREATE_LIMIT {
            self.make_room(f.header.len() as u64);
            if let Err(e) = Self::create(&mut f, &self.counters) {
                self.fail(&e, 0);
            }
        }
        self.files.insert(id, f);
    }

    /// Creates the file and writes its header, unless it exists already or
    /// the last failed attempt was less than a second ago (so a broken
    /// output costs one attempt per second, not one per chunk).
    fn create(f: &mut DiskFile, counters: &Counters) -> Result<(), WriterError> {
        let Some((dir, template, fields, at, why)) = &mut f.retry else {
            return Ok(());
        };
        if std::time::Instant::now() < *at {
            return Err(WriterError::NotYet(*why));
        }
        *at = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let (file, part, final_path) = create_file(dir, template, fields).inspect_err(|e| {
            *why = e.drop_reason();
        })?;
        f.part = part;
        f.final_path = final_path;
        f.file = Some(file);
        f.retry = None;
        counters.files_opened.fetch_add(1, Relaxed);
        counters.open_files.fetch_add(1, Relaxed);
        let header = std::mem::take(&mut f.header);
        let r = write_at_end(f, &[IoSlice::new(&header)]);
        f.header = header;
        r
    }

    fn write_chunk(&mut self, chunk: &[u8]) {
        // `max_total_bytes`: room for the chunk before it is written.
        self.make_room(chunk.len() as u64);
        let mut ranges = std::mem::take(&mut self.iov_ranges);
        ranges.clear();
        let mut closes = std::mem::take(&mut self.closes);
        closes.clear();
        let mut at = 0;
        while at + RunHeader::LEN <= chunk.len() {
            let h = RunHeader::read_from(&chunk[at..]);
            if h.is_close() {
                closes.push(h.file);
            } else {
                ranges.push(RunRange {
                    file: h.file,
                    start: at + RunHeader::LEN,
                    len: h.len as usize,
                    frames: h.frames as u64,
                    frame_bytes: h.frame_bytes as u64,
                });
            }
            at += RunHeader::LEN + h.len as usize;
        }
        // Group by file, keeping each file's records in order.
        ranges.sort_by_key(|r| r.file.0);
        // A close marker follows every record of its file, so a file with
        // no run here is closed first, and one with runs right after them:
        // files are let go before others are created.
        closes.sort_by_key(|id| id.0);
        for &id in &closes {
            if ranges.binary_search_by_key(&id.0, |r| r.file.0).is_err() {
                self.close(id);
            }
        }
        let mut i = 0;
        while i < ranges.len() {
            let id = ranges[i].file;
            let mut j = i;
            while j < ranges.len() && ranges[j].file == id {
                j += 1;
            }
            self.write_records(id, chunk, &ranges[i..j]);
            if closes.binary_search_by_key(&id.0, |c| c.0).is_ok() {
                self.close(id);
            }
            i = j;
        }
        self.iov_ranges = ranges;
        self.closes = closes;
    }

    /// The staging size per file: the budget shared by the open files, at
    /// least 16 KiB, at most 1 MiB.
    fn stage_cap(&self) -> usize {
        (STAGING_BUDGET / self.files.len().max(1)).clamp(16 << 10, 1 << 20)
    }

    fn write_records(&mut self, id: FileId, chunk: &[u8], recs: &[RunRange]) {
        let cap = self.stage_cap();
        let frames: u64 = recs.iter().map(|r| r.frames).sum();
        let Some(f) = self.files.get_mut(&id) else {
            self.counters.count_drops(DropReason::WriteError, frames);
            return;
        };
        if f.file.is_none()
            && let Err(e) = Self::create(f, &self.counters)
        {
            self.fail(&e, frames);
            return;
        }
        for &RunRange {
            start,
            len,
            frames: n,
            frame_bytes: bytes,
            ..
        } in recs
        {
            let run = &chunk[start..start + len];
            let long = len >= cap.min(LONG_RUN);
            if (long && !f.buf.is_empty()) || f.buf.len() + len > cap {
                let r = Self::flush_file(f, &self.counters);
                if let Err((e, lost)) = r {
                    let lost = lost + n + Self::frames_after(recs, start);
                    self.fail(&e, lost);
                    return;
                }
                if f.buf.capacity() > 2 * cap {
                    // More files are open than when it grew: give the
                    // memory back to the budget.
                    f.buf.shrink_to(cap);
                }
            }
            if long {
                // A long run (a busy session, a lane's chunk) goes straight
                // to the file, after what was staged before it.
                match write_at_end(f, &[IoSlice::new(run)]) {
                    Ok(()) => {
                        self.counters.set_output_error(None);
                        self.counters.frames_written.fetch_add(n, Relaxed);
                        self.counters.frame_bytes_written.fetch_add(bytes, Relaxed);
                    }
                    Err(e) => {
                        self.fail(&e, n + Self::frames_after(recs, start));
                        return;
                    }
                }
            } else {
                f.buf.extend_from_slice(run);
                f.staged.0 += n;
                f.staged.1 += bytes;
            }
        }
    }

    /// Frames of the runs after `failed_at` in `recs`: lost with the
    /// failed write, since their file was cut back.
    fn frames_after(recs: &[RunRange], failed_at: usize) -> u64 {
        recs.iter()
            .filter(|r| r.start > failed_at)
            .map(|r| r.frames)
            .sum()
    }

    /// Writes what is staged for `f`. On failure returns the error and the
    /// frames lost.
    fn flush_file(f: &mut DiskFile, counters: &Counters) -> Result<(), (WriterError, u64)> {
        if f.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut f.buf);
        let (n, bytes) = std::mem::take(&mut f.staged);
        let r = write_at_end(f, &[IoSlice::new(&buf)]);
        f.buf = buf;
        f.buf.clear();
        match r {
            Ok(()) => {
                counters.frames_written.fetch_add(n, Relaxed);
                counters.frame_bytes_written.fetch_add(bytes, Relaxed);
                counters.set_output_error(None);
                Ok(())
            }
            Err(e) => Err((e, n)),
        }
    }

    /// Writes every file's staged records (once a second, and at the end).
    fn flush_all(&mut self) {
        let mut failures = Vec::new();
        for f in self.files.values_mut() {
            if let Err(x) = Self::flush_file(f, &self.counters) {
                failures.push(x);
            }
        }
        for (e, lost) in failures {
            self.fail(&e, lost);
        }
    }

    fn close(&mut self, id: FileId) {
        let Some(mut f) = self.files.remove(&id) else {
            return;
        };
        if let Err((e, lost)) = Self::flush_file(&mut f, &self.counters) {
            self.fail(&e, lost);
        }
        let Some(file) = f.file.take() else { return };
        // Its staging memory goes back now, not after the sync.
        f.buf = Vec::new();
        // With `fsync`, the data reaches the disk before the file gets its
        // final name, so after a power loss a `*.pcap` is whole (a `*.part`
        // is cut back to its last record at the next start). The sync
        // thread does it; the rename follows when it reports back.
        if self.fsync {
            // At most MAX_PENDING_SYNCS closed files wait for the sync
            // thread (each holds its descriptor); beyond that the writer
            // syncs inline, so closing many files at once cannot run the
            // process out of descriptors.
            let bytes = f.good_len;
            let (file, f) = match &self.syncer {
                Some(tx) if self.pending_syncs < MAX_PENDING_SYNCS => match tx.send((file, f)) {
                    Ok(()) => {
                        self.pending_syncs += 1;
                        self.syncing_bytes += bytes;
                        return;
                    }
                    Err(mpsc::SendError(back)) => back,
                },
                _ => (file, f),
            };
            let r = file.sync_data();
            drop(file);
            return self.synced(f, r.err());
        }
        drop(file);
        self.synced(f, None);
    }

    /// Renames a closed file to its final name (after its sync, when
    /// `fsync` is on), then runs the hook and retention for it.
    fn synced(&mut self, c: DiskFile, sync_error: Option<io::Error>) {
        if let Some(source) = sync_error {
            let e = WriterError::Sync {
                path: c.part.clone(),
                source,
            };
            self.fail(&e, 0);
        }
        self.counters.open_files.fetch_sub(1, Relaxed);
        match rename_part(&self.root, &c.part, &c.final_path) {
            Ok(()) => {
                self.counters.files_closed.fetch_add(1, Relaxed);
                c.session.files.fetch_add(1, Relaxed);
                self.hook
                    .queue_for(&c.final_path, c.vni_source.as_ref(), &self.counters);
                let open = self.open_bytes();
                let n = self
                    .retention
                    .add(c.final_path, c.good_len, session_tag(&c.session), open);
                self.counters.files_deleted.fetch_add(n, Relaxed);
            }
            Err(e) => self.fail(&e, 0),
        }
    }

    fn fail(&mut self, e: &WriterError, frames: u64) {
        if !matches!(e, WriterError::NotYet(_)) {
            self.counters.set_output_error(Some(e.to_string()));
        }
        let reason = e.drop_reason();
        self.counters.count_drops(reason, frames);
        if let Some(held) = self.error_log.allow() {
            tracing::error!(error = %e, frames_lost = frames, held_back = held, "cannot write capture file; frames are dropped and counted as {reason}");
        }
    }
}

/// Writes `iov` at the end of `f`'s whole records. On failure the file is
/// truncated back to its last whole record.
fn write_at_end(f: &mut DiskFile, iov: &[IoSlice<'_>]) -> Result<(), WriterError> {
    let file = f.file.as_mut().expect("open");
    let total: usize = iov.iter().map(|s| s.len()).sum();
    let mut bufs: Vec<IoSlice> = iov.to_vec();
    let mut slices: &mut [IoSlice] = &mut bufs;
    let mut written = 0;
    while written < total {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(truncate_back(f, io::Error::from(io::ErrorKind::WriteZero)));
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(truncate_back(f, e)),
        }
    }
    f.good_len += total as u64;
    Ok(())
}

/// Cuts `f` back to its last whole record after a failed write.
fn truncate_back(f: &mut DiskFile, source: io::Error) -> WriterError {
    if let Some(file) = &f.file {
        let _ = file.set_len(f.good_len);
        use std::io::Seek;
        let _ = (&*file).seek(io::SeekFrom::Start(f.good_len));
    }
    WriterError::Write {
        path: f.part.clone(),
        source,
    }
}

/// Creates `<dir>/<rel>.part` (parents too), following no link below
/// `dir` (see [`crate::output::outdir`]): a link on the way is an error
/// ([`OutDirError::Link`]). When `<rel>` or its `.part` exists (a link
/// included), `seq` is increased until the name is free.
fn create_file(
    dir: &Path,
    template: &OutputTemplate,
    fields: &mut PathFields,
) -> Result<(File, PathBuf, PathBuf), WriterError> {
    let root = outdir::Dir::open_root(dir, true, DIR_MODE)?;
    loop {
        let rel = template.render(fields);
        let final_path = dir.join(&rel);
        let part = part_path_of(&final_path);
        let parent = root.sub(rel.parent().unwrap_or(Path::new("")), true, DIR_MODE)?;
        let name = rel.file_name().expect("a template ends in `.{ext}`");
        let taken = parent.exists(name).map_err(|source| WriterError::Create {
            path: final_path.clone(),
            source,
        })?;
        if taken {
            fields.seq += 1;
            continue;
        }
        match parent.create_file(&outdir::part_name(name), FILE_MODE) {
            Ok(f) => return Ok((f, part, final_path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fields.seq += 1,
            Err(source) => return Err(WriterError::Create { path: part, source }),
        }
    }
}

/// Renames the `.part` of `final_path` (a file under `root`) to it, on
/// its directory's descriptor, reached without following links.
fn rename_part(root: &Path, part: &Path, final_path: &Path) -> Result<(), WriterError> {
    let (dir, name) = outdir::open_parent(root, part, false, DIR_MODE)?;
    let to = final_path.file_name().unwrap_or_default();
    dir.rename(name, to).map_err(|source| WriterError::Rename {
        path: part.to_path_buf(),
        to: final_path.to_path_buf(),
        source,
    })
}

/// What crash recovery did with one leftover `.part` file.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Cut to its last whole record (`kept` bytes, `records` records) and
    /// renamed to `path`.
    Renamed {
        path: PathBuf,
        kept: u64,
        records: u64,
    },
    /// Not even a whole file header: deleted.
    Deleted(PathBuf),
    /// A file header and no record (opened just before the crash):
    /// deleted, as a capture of nothing.
    Empty(PathBuf),
}

/// Recovered files logged one by one; the rest are summed up in one line.
const RECOVERY_LOG_LINES: usize = 20;

/// After a crash or power loss: every `*.part` file under `dir` (left by a
/// writer that did not close it) is cut to its last whole record and
/// renamed to its final name, so it opens without a warning; one with no
/// record is deleted. Runs before the writer starts, so no file of this
/// run can be mistaken for one. Links under `dir` are neither followed nor
/// touched: directories are listed by entry type (a link is not a
/// directory), and each file is opened, cut, renamed or deleted on its
/// directory's descriptor ([`crate::output::outdir`]).
pub fn recover_parts(dir: &Path) -> Vec<Recovered> {
    let mut done = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                // Capture files only: a flow file's `.part` (under
                // `flows/`, `.log[.gz].part`) is not a capture and is left
                // alone.
                Ok(t)
                    if t.is_file()
                        && p.extension().is_some_and(|x| x == "part")
                        && p.file_stem()
                            .map(Path::new)
                            .and_then(Path::extension)
                            .is_some_and(|x| x == "pcap" || x == "pcapng") =>
                {
                    if let Some(r) = recover_one(dir, &p, done.len() < RECOVERY_LOG_LINES) {
                        done.push(r);
                    }
                }
                _ => {}
            }
        }
    }
    done.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    if done.len() > RECOVERY_LOG_LINES {
        let renamed = done
            .iter()
            .filter(|r| matches!(r, Recovered::Renamed { .. }))
            .count();
        tracing::warn!(
            renamed,
            deleted = done.len() - renamed,
            "recovery: capture files left open by an earlier run (the first {RECOVERY_LOG_LINES} are logged above)"
        );
    }
    done
}

fn recover_one(root: &Path, part: &Path, log: bool) -> Option<Recovered> {
    let final_path = part.with_extension("");
    let (dir, name) = match outdir::open_parent(root, part, false, DIR_MODE) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("recovery: {e}");
            return None;
        }
    };
    let file = match dir.open_file(name) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("recovery: {e}");
            return None;
        }
    };
    let delete = |what: &str, r: Recovered| match dir.unlink(name) {
        Ok(()) => {
            if log {
                tracing::warn!(path = %part.display(), "recovery: a capture file left open by an earlier run {what}; deleted");
            }
            Some(r)
        }
        Err(e) => {
            tracing::error!(path = %part.display(), error = %e, "recovery: cannot delete");
            None
        }
    };
    let reader = match file.try_clone() {
        Ok(f) => crate::capture::CaptureReader::new(f, "").ok(),
        Err(e) => {
            tracing::error!(path = %part.display(), error = %e, "recovery: cannot read");
            return None;
        }
    };
    let Some(mut r) = reader else {
        return delete(
            "has no whole file header",
            Recovered::Deleted(part.to_path_buf()),
        );
    };
    let mut kept = r.offset();
    let mut records = 0;
    while let Ok(Some(_)) = r.next_record() {
        records += 1;
        kept = r.offset();
    }
    drop(r);
    if records == 0 {
        return delete("holds no record", Recovered::Empty(part.to_path_buf()));
    }
    let to = final_path.file_name().unwrap_or_default();
    if let Err(e) = file.set_len(kept).and_then(|()| dir.rename(name, to)) {
        tracing::error!(path = %part.display(), error = %e, "recovery: cannot cut and rename");
        return None;
    }
    if log {
        tracing::warn!(
            path = %final_path.display(),
            records,
            bytes = kept,
            "recovery: a capture file left open by an earlier run was cut to its last whole record and renamed"
        );
    }
    Some(Recovered::Renamed {
        path: final_path,
        kept,
        records,
    })
}

/// `on_rotate`: a command run after each file is closed and renamed, like
/// `tcpdump -z`, without a shell. At most `jobs` run at once; the others
/// wait in a queue (at most [`HOOK_QUEUE`]; beyond it a file's command is
/// not run, and counted as failed). The writer thread only starts and reaps
/// them, so a slow upload never blocks capture.
#[derive(Debug, Default)]
pub struct RotateHook {
    argv: Vec<String>,
    jobs: usize,
    queue: VecDeque<Vec<String>>,
    running: Vec<(std::process::Child, String)>,
}

/// Most commands waiting for a free job.
pub const HOOK_QUEUE: usize = 10_000;

impl RotateHook {
    pub fn new(argv: Vec<String>, jobs: usize) -> RotateHook {
        RotateHook {
            argv,
            jobs: jobs.max(1),
            ..Default::default()
        }
    }

    fn queue_for(&mut self, path: &Path, vni_source: Option<&(u32, String)>, counters: &Counters) {
        if self.argv.is_empty() {
            return;
        }
        let (vni, source) = vni_source
            .map(|(v, s)| (v.to_string(), s.clone()))
            .unwrap_or_default();
        let path = path.to_string_lossy();
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{path}", &path)
                    .replace("{vni}", &vni)
                    .replace("{source}", &source)
            })
            .collect();
        if self.queue.len() >= HOOK_QUEUE {
            counters.hook_failures.fetch_add(1, Relaxed);
            tracing::error!(path = %path, "on_rotate: {HOOK_QUEUE} commands already waiting; not run for this file");
            return;
        }
        self.queue.push_back(argv);
        self.reap(counters);
    }

    /// Reaps finished commands and starts queued ones.
    fn reap(&mut self, counters: &Counters) {
        self.running
            .retain_mut(|(child, what)| match child.try_wait() {
                Ok(Some(status)) if status.success() => false,
                Ok(Some(status)) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: `{what}` failed: {status}");
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: `{what}`: {e}");
                    false
                }
            });
        while self.running.len() < self.jobs {
            let Some(argv) = self.queue.pop_front() else {
                break;
            };
            let what = argv.join(" ");
            counters.hook_runs.fetch_add(1, Relaxed);
            match std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => self.running.push((child, what)),
                Err(e) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: cannot start `{what}`: {e}");
                }
            }
        }
    }

    /// At shutdown: runs what is queued and waits up to 10 s for it.
    fn finish(&mut self, counters: &Counters) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (!self.running.is_empty() || !self.queue.is_empty())
            && std::time::Instant::now() < until
        {
            self.reap(counters);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !self.running.is_empty() || !self.queue.is_empty() {
            tracing::warn!(
                running = self.running.len(),
                queued = self.queue.len(),
                "on_rotate: commands still running or queued at shutdown are left as they are"
            );
        }
    }
}

/// A session as retention counts its files (`max_files`): (VNI, source),
/// the same whichever worker or table slot it had, and after it was freed.
pub type SessionTag = (u32, std::net::IpAddr);

fn session_tag(s: &crate::telemetry::metrics::SessionStats) -> SessionTag {
    (s.vni, s.source)
}

/// A closed file that retention may delete.
#[derive(Debug)]
struct ClosedFile {
    path: PathBuf,
    bytes: u64,
    /// The session that wrote it; `None` for files found on disk from an
    /// earlier run.
    session: Option<SessionTag>,
}

/// Retention over every closed file under the output directory.
#[derive(Debug, Default)]
pub struct Retention {
    /// The output directory (set by [`Output::spawn`]): files are deleted
    /// on their directory's descriptor, reached without following links.
    root: Option<PathBuf>,
    files: VecDeque<ClosedFile>,
    /// Closed files in `files` per session, so a close costs no scan of
    /// every file (a flood of one-file sessions makes `files` long).
    per_session: foldhash::HashMap<SessionTag, usize>,
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
    /// them too. Links are not followed (entry types and `lstat` sizes), so
    /// nothing outside `dir` is counted or, later, deleted.
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
    pub fn add(&mut self, path: PathBuf, bytes: u64, session: SessionTag, open_bytes: u64) -> u64 {
        self.closed_bytes += bytes;
        self.files.push_back(ClosedFile {
            path,
            bytes,
            session: Some(session),
        });
        *self.per_session.entry(session).or_default() += 1;
        let mut deleted = 0;
        if let Some(max) = self.max_files {
            while self.per_session.get(&session).copied().unwrap_or(0) > max as usize {
                let Some(i) = self.files.iter().position(|f| f.session == Some(session)) else {
                    break;
                };
                self.delete_at(i);
                deleted += 1;
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
            if let Some(tag) = f.session
                && let Some(n) = self.per_session.get_mut(&tag)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_session.remove(&tag);
                }
            }
            let r = match &self.root {
                Some(root) => outdir::unlink_under(root, &f.path),
                None => fs::remove_file(&f.path).map_err(|source| OutDirError::Io {
                    path: f.path.clone(),
                    what: "delete",
                    source,
                }),
            };
            match r {
                Ok(()) => tracing::debug!(path = %f.path.display(), "retention: deleted"),
                Err(e) if e.io().is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {}
                Err(e) => tracing::warn!("retention: not deleted: {e}"),
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

    /// Issue 12, item 1: opening, writing one record to and closing 200
    /// files in a burst (a time slot ending for many sessions, or
    /// `rotate_packets = 1`) with the smallest pool (2 chunks) and the live
    /// policy (drop when no chunk is free) loses nothing: closing costs no
    /// chunk, a retired lane gives its chunk straight back.
    #[test]
    fn closing_many_files_in_a_burst_takes_no_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let mut out = Output::spawn(
            tmp.path(),
            OutputTemplate::default(),
            Retention::new(None, None),
            RotateHook::default(),
            counters.clone(),
            2,
            Backlog::Drop,
        );
        out.set_fsync(false);
        let header = {
            let mut h = Vec::new();
            crate::capture::encode::pcap_file_header(&mut h, 65535);
            h
        };
        let frame = [0u8; 60];
        for round in 0..20u32 {
            for vni in 0..10u32 {
                let fields = PathFields {
                    vni,
                    source: "127.0.0.2".parse().unwrap(),
                    start_ns: 1_764_040_800_000_000_000 + u64::from(round) * 1_000_000_000,
                    seq: round,
                    format: OutputFormat::Pcap,
                };
                let stats = counters.new_session(vni, fields.source);
                let id = out.open(stats, fields, header.clone());
                let rec = crate::capture::encode::RecordHeader::new(OutputFormat::Pcap, 0, 60, 60);
                let (tail, n) = rec.tail();
                out.append(id, [rec.header(), &frame, &tail[..n]], 60)
                    .expect("a chunk is free");
                out.close(id);
            }
        }
        out.finish();
        assert_eq!(counters.frames_written.load(Relaxed), 200);
        assert_eq!(counters.files_closed.load(Relaxed), 200);
    }

    /// Review of issue 12, item 1: the writer does not hold every new file
    /// open beside every old one. 2,000 files opened, written and closed
    /// one after another (`rotate_packets = 1`, or eviction churn) while
    /// their close markers wait in the shared chunk: at most
    /// `EAGER_CREATE_LIMIT` are held open before the chunk arrives (it
    /// used to create each at once and hold it until the marker came, up
    /// to 1 s later).
    #[test]
    fn files_are_created_with_their_records_not_before() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let mut out = Output::spawn(
            tmp.path(),
            OutputTemplate::default(),
            Retention::new(None, None),
            RotateHook::default(),
            counters.clone(),
            4,
            Backlog::Wait,
        );
        out.set_fsync(false);
        let mut header = Vec::new();
        crate::capture::encode::pcap_file_header(&mut header, 65535);
        let frame = [0u8; 60];
        for n in 0..2000u32 {
            let fields = PathFields {
                vni: n,
                source: "127.0.0.2".parse().unwrap(),
                start_ns: 1_764_040_800_000_000_000,
                seq: 0,
                format: OutputFormat::Pcap,
            };
            let stats = counters.new_session(n, fields.source);
            let id = out.open(stats, fields, header.clone());
            let rec = crate::capture::encode::RecordHeader::new(OutputFormat::Pcap, 0, 60, 60);
            let (tail, len) = rec.tail();
            out.append(id, [rec.header(), &frame, &tail[..len]], 60)
                .expect("replay waits for a chunk");
            out.close(id);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let held = counters.open_files.load(Relaxed);
        out.finish();
        assert!(
            held <= EAGER_CREATE_LIMIT,
            "{held} files held open by the writer before their records came"
        );
        assert_eq!(counters.frames_written.load(Relaxed), 2000);
        assert_eq!(counters.files_closed.load(Relaxed), 2000);
    }

    /// Review of issue 12, item 1: a file that wrote into the shared chunk
    /// and then got a lane freed by another file's close keeps its records
    /// in order (its lane, sent when long, used to overtake the shared
    /// chunk holding its first record).
    #[test]
    fn a_file_that_moves_to_a_lane_keeps_its_order() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let mut out = Output::spawn(
            tmp.path(),
            OutputTemplate::default(),
            Retention::new(None, None),
            RotateHook::default(),
            counters.clone(),
            16,
            Backlog::Wait,
        );
        out.set_fsync(false);
        let mut header = Vec::new();
        crate::capture::encode::pcap_file_header(&mut header, 65535);
        let frame = [0u8; 1000];
        let mut open = |vni: u32| {
            let fields = PathFields {
                vni,
                source: "127.0.0.2".parse().unwrap(),
                start_ns: 1_764_040_800_000_000_000,
                seq: 0,
                format: OutputFormat::Pcap,
            };
            let stats = counters.new_session(vni, fields.source);
            out.open(stats, fields, header.clone())
        };
        let ids: Vec<FileId> = (0..5).map(&mut open).collect();
        let mut ts = 0u64;
        let mut append = |out: &mut Output, id: FileId| {
            ts += 1_000;
            let rec = crate::capture::encode::RecordHeader::new(OutputFormat::Pcap, ts, 1000, 1000);
            let (tail, len) = rec.tail();
            out.append(id, [rec.header(), &frame, &tail[..len]], 1000)
                .unwrap();
        };
        // Files 0-3 take the lanes; file 4 writes into the shared chunk.
        for &id in &ids {
            append(&mut out, id);
        }
        // File 0 closes: its lane is free; file 4 takes it and writes more
        // than a long run.
        out.close(ids[0]);
        for _ in 0..100 {
            append(&mut out, ids[4]);
        }
        out.finish();
        let file = crate::capture::CaptureReader::open_file(
            std::fs::File::open(tmp.path().join("4/127.0.0.2/20251125T032000Z-000000.pcap"))
                .unwrap(),
            "x",
        )
        .unwrap();
        let mut r = file;
        let mut last = 0;
        let mut n = 0;
        while let Some(rec) = r.next_record().unwrap() {
            assert!(rec.ts_ns > last, "record {n} at {} after {last}", rec.ts_ns);
            last = rec.ts_ns;
            n += 1;
        }
        assert_eq!(n, 101);
    }
}
