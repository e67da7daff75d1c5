//! The writer thread ([`Disk`]): owns every open capture file, writes the
//! chunks' runs (long ones straight, short ones staged per file), closes,
//! syncs (on the sync thread) and renames files, and applies retention
//! before each write. In: [`Command`]s from the handles. Out: files on
//! disk, counters. Dropped (and counted): records whose write or file
//! creation failed, and everything sent after the thread died.

use std::fs::File;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

use crate::output::chunk::{FileId, RunHeader, RunRange};
use crate::output::files::{WriterError, create_file, rename_part, write_whole};
use crate::output::hook::RotateHook;
use crate::output::retention::{Retention, session_tag};
use crate::output::template::{OutputTemplate, PathFields};
use crate::output::upload::Uploads;
use crate::output::upload::journal::Entry;
use crate::pipeline::DropReason;
use crate::telemetry::counters::Counters;
use crate::telemetry::log_limit::LogLimiter;

/// What the writer may stage for files whose records arrive interleaved
/// with other sessions' (shared by the open files).
pub const STAGING_BUDGET: usize = 16 << 20;
/// Files open in the writer beyond which a new file is created only when
/// its first records arrive (see `Disk::open`).
pub(crate) const EAGER_CREATE_LIMIT: u64 = 64;
/// Closed files waiting for the sync thread, at most (see `Disk::close`).
pub(crate) const MAX_PENDING_SYNCS: usize = 256;
/// A run this long is written as it is, not staged.
pub(crate) const LONG_RUN: usize = 64 << 10;

/// Test only: with this environment variable set to N, the writer thread
/// panics when it is asked to open its N-th file, so that the tests can
/// check what a dead writer does to health and to the exit code on the
/// real binary. Read once when the writer starts; unset, it costs nothing.
pub const TEST_WRITER_PANIC_AT_OPEN: &str = "MIRRORCAP_TEST_WRITER_PANIC_AT_OPEN";

/// Records that the writer thread died, and logs it the first time.
pub(crate) fn writer_died(counters: &Counters, why: &str, frames_lost: u64) {
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
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

pub(crate) enum Command {
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
    /// `[output.s3]`: closed files are journaled and handed to the uploader.
    SetUploads(Arc<Uploads>),
    /// Closing time: the writer thread answers on the channel, then ends.
    Finish(mpsc::Sender<()>),
}

/// One file, as the writer thread holds it.
pub(crate) struct DiskFile {
    /// `None` when creating it failed; retried on the next chunk.
    pub(crate) file: Option<File>,
    pub(crate) part: PathBuf,
    pub(crate) final_path: PathBuf,
    /// Bytes known to be on disk: whole records only.
    pub(crate) good_len: u64,
    /// The session's counters: its files are counted here when renamed.
    pub(crate) session: Arc<crate::telemetry::counters::SessionStats>,
    /// Its upload journal entry (`[output.s3]`), made when it is created.
    pub(crate) upload: Option<Entry>,
    /// Its S3 key (`[output.s3]`): when the entry could not be written at
    /// its creation (a full disk), it is written again at its close.
    pub(crate) upload_key: Option<String>,
    /// (vni, source as text) for the `on_rotate` placeholders.
    pub(crate) vni_source: Option<(u32, String)>,
    pub(crate) header: Vec<u8>,
    /// Records staged for this file when its runs are short (many sessions
    /// interleaved), so it is written in large writes, not one per record;
    /// `staged` counts its frames and their bytes for the counters.
    pub(crate) buf: Vec<u8>,
    pub(crate) staged: Staged,
    /// Until it is created: what to create, when to try, and why the last
    /// attempt failed (frames lost meanwhile count under it).
    pub(crate) retry: Option<Retry>,
}

impl DiskFile {
    /// Writes `iov` after the file's whole records; on failure the file
    /// is cut back to them ([`write_whole`]). While nothing is on disk yet
    /// (its header's write failed: a full disk), the header goes first, so
    /// a file never starts with a record.
    fn write_at_end(&mut self, iov: &[IoSlice<'_>]) -> Result<(), WriterError> {
        let file = self.file.as_mut().expect("open");
        if self.good_len == 0 {
            let mut with_header = Vec::with_capacity(iov.len() + 1);
            with_header.push(IoSlice::new(&self.header));
            with_header.extend_from_slice(iov);
            return write_whole(file, &mut self.good_len, &self.part, &with_header);
        }
        write_whole(file, &mut self.good_len, &self.part, iov)
    }

    /// Whether no record reached the file (nothing, or its header alone).
    fn holds_no_record(&self) -> bool {
        self.good_len <= self.header.len() as u64
    }
}

/// `[output] fsync` at a file's close: its data, then its upload journal
/// entry (`[output.s3]`), so a whole file after a power loss is uploaded.
pub(crate) fn sync_closed(file: &File, closed: &DiskFile) -> io::Result<()> {
    file.sync_data()?;
    match &closed.upload {
        Some(e) => e.sync_to_disk(),
        None => Ok(()),
    }
}

/// A file not created yet: what to create, and when to try again.
pub(crate) struct Retry {
    /// The output directory.
    pub(crate) dir: Arc<Path>,
    pub(crate) template: Arc<OutputTemplate>,
    pub(crate) fields: PathFields,
    /// The next attempt, not before.
    pub(crate) at: std::time::Instant,
    /// Why the last attempt failed (frames lost meanwhile count under it).
    pub(crate) why: DropReason,
}

/// Frames staged for a file and their bytes, for the counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Staged {
    pub(crate) frames: u64,
    pub(crate) frame_bytes: u64,
}

/// The writer thread's state.
pub(crate) struct Disk {
    /// The output directory: files are reached from it without following
    /// links ([`crate::output::outdir`]).
    pub(crate) root: PathBuf,
    pub(crate) files: foldhash::HashMap<FileId, DiskFile>,
    pub(crate) retention: Retention,
    pub(crate) hook: RotateHook,
    /// `[output.s3]`: where closed files go after their rename.
    pub(crate) uploads: Option<Arc<Uploads>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) free: mpsc::Sender<Vec<u8>>,
    pub(crate) error_log: LogLimiter,
    /// Per chunk: where each run of records is, reused.
    pub(crate) iov_ranges: Vec<RunRange>,
    /// Per chunk: the files whose close marker it holds, reused.
    pub(crate) closes: Vec<FileId>,
    /// `fdatasync` a file before renaming it. The sync runs on its own
    /// thread (it can take as long as the disk needs to write the file
    /// out), which sends `Synced` back; the writer keeps writing meanwhile.
    pub(crate) fsync: bool,
    pub(crate) syncer: Option<mpsc::Sender<(File, DiskFile)>>,
    pub(crate) syncer_thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) pending_syncs: usize,
    /// Bytes of the files handed to the sync thread and not renamed yet:
    /// on disk, neither open nor closed, and counted for `max_total_bytes`.
    pub(crate) syncing_bytes: u64,
    /// Test only ([`TEST_WRITER_PANIC_AT_OPEN`]): files left to open
    /// before the thread panics; `None` (always, unless the variable is
    /// set) does nothing.
    pub(crate) panic_at_open: Option<u64>,
}

impl Disk {
    /// Handles commands until `Finish` (true), or until the channel
    /// closes without one (false: the writer is not expected to end so).
    pub(crate) fn run(&mut self, rx: &mpsc::Receiver<Command>) -> bool {
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
                Command::SetUploads(u) => {
                    self.retention.set_uploads(u.clone());
                    self.uploads = Some(u);
                }
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
    pub(crate) fn finish(&mut self, rx: &mpsc::Receiver<Command>) {
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
    pub(crate) fn died(&mut self, why: &str) {
        let lost: u64 = self.files.values().map(|f| f.staged.frames).sum();
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
    pub(crate) fn drain(&mut self, rx: &mpsc::Receiver<Command>) {
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
                | Command::SetUploads(_)
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
            if let Err(e) = Self::create(&mut f, &self.counters, self.uploads.as_deref()) {
                self.fail(&e, 0);
            }
        }
        self.files.insert(id, f);
    }

    /// Creates the file and writes its header, unless it exists already or
    /// the last failed attempt was less than a second ago (so a broken
    /// output costs one attempt per second, not one per chunk).
    fn create(
        f: &mut DiskFile,
        counters: &Counters,
        uploads: Option<&Uploads>,
    ) -> Result<(), WriterError> {
        let Some(Retry {
            dir,
            template,
            fields,
            at,
            why,
        }) = &mut f.retry
        else {
            return Ok(());
        };
        if std::time::Instant::now() < *at {
            return Err(WriterError::NotYet(*why));
        }
        *at = std::time::Instant::now() + std::time::Duration::from_secs(1);
        // The key is rendered once, reserved with the name: the entry now,
        // and again at close if that failed.
        let mut key = None;
        let mut key_free = |fields: &PathFields| match uploads {
            Some(u) => {
                key = u.reserve_key(fields);
                key.is_some()
            }
            None => true,
        };
        let (file, part, final_path) = create_file(dir, template, fields, &mut key_free)
            .inspect_err(|e| {
                *why = e.drop_reason();
            })?;
        f.upload_key = key;
        f.upload = match (uploads, &f.upload_key) {
            (Some(u), Some(k)) => u.created(&final_path, k),
            _ => None,
        };
        f.part = part;
        f.final_path = final_path;
        f.file = Some(file);
        f.retry = None;
        counters.files_opened.fetch_add(1, Relaxed);
        counters.open_files.fetch_add(1, Relaxed);
        // The header alone (`good_len` is 0).
        f.write_at_end(&[])
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
            && let Err(e) = Self::create(f, &self.counters, self.uploads.as_deref())
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
                match f.write_at_end(&[IoSlice::new(run)]) {
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
                f.staged.frames += n;
                f.staged.frame_bytes += bytes;
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
        let Staged {
            frames: n,
            frame_bytes: bytes,
        } = std::mem::take(&mut f.staged);
        let r = f.write_at_end(&[IoSlice::new(&buf)]);
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
            let r = sync_closed(&file, &f);
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
        if c.holds_no_record() {
            // No record could be written (disk full), maybe not even its
            // header: no capture file to publish (a flood of header-only
            // files helps no one). Its frames were counted as lost when
            // they failed; the `.part` goes, as recovery and the flow
            // writer's `PartFile` do with an empty file.
            if let Err(e) = crate::output::outdir::unlink_under(&self.root, &c.part) {
                tracing::debug!(error = %e, "empty capture file not deleted");
            }
            if let (Some(u), Some(e)) = (&self.uploads, &c.upload) {
                u.discard(e);
            }
            return;
        }
        match rename_part(&self.root, &c.part, &c.final_path) {
            Ok(()) => {
                self.counters.files_closed.fetch_add(1, Relaxed);
                c.session.files.fetch_add(1, Relaxed);
                self.hook
                    .queue_for(&c.final_path, c.vni_source.as_ref(), &self.counters);
                if let Some(u) = &self.uploads {
                    // An entry that could not be written at creation is
                    // tried again now, so the file is not left behind.
                    let entry = c.upload.or_else(|| {
                        c.upload_key
                            .as_deref()
                            .and_then(|k| u.record(&c.final_path, k))
                    });
                    if let Some(e) = entry {
                        u.closed(e, c.good_len);
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::encode::OutputFormat;
    use crate::output::handle::Backlog;

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
        let (mut out, counters) = crate::output::handle::test_output(tmp.path(), 4, Backlog::Wait);
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
                endpoint: None,
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
}
