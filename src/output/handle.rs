//! The receive side of the writer ([`Output`]): opens files, copies
//! records into chunks (a lane per busy file, one shared chunk for the
//! rest) and sends them to the writer thread, which it starts. In: records
//! per file from the sessions. Out: chunks and commands to the writer
//! thread. Dropped: a record when no chunk is free and the policy is
//! [`Backlog::Drop`] (counted as `write_backlog`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

use crate::output::chunk::{FileId, RunHeader};
use crate::output::disk::{
    Command, Disk, DiskFile, LONG_RUN, Retry, Staged, TEST_WRITER_PANIC_AT_OPEN, panic_text,
    writer_died,
};
use crate::output::hook::RotateHook;
use crate::output::retention::Retention;
use crate::output::template::{OutputTemplate, PathFields};
use crate::pipeline::DropReason;
use crate::telemetry::counters::Counters;
use crate::telemetry::log_limit::LogLimiter;

/// Bytes per chunk of records on their way to the writer thread.
pub const CHUNK_LEN: usize = 1 << 20;
/// Chunks in the pool: the most record bytes in flight.
pub const DEFAULT_CHUNKS: usize = 16;
/// Files per receive-side handle that get a chunk of their own.
pub const MAX_LANES: usize = 4;

/// What the receive side does when no chunk is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backlog {
    /// Live: drop the record and count it as `write_backlog`.
    Drop,
    /// Replay: wait for the writer thread.
    Wait,
}

/// A file with a chunk of its own: one run, whose prefix is filled in when
/// the chunk is sent.
pub(crate) struct Lane {
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
pub(crate) struct OutputShared {
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
        retention: Retention,
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
        let retention = retention
            .under(dir.to_path_buf())
            .counted_in(counters.clone());
        let mut disk = Disk {
            root: dir.to_path_buf(),
            files: Default::default(),
            retention,
            hook,
            uploads: None,
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
                        let r = crate::output::disk::sync_closed(&file, &closed);
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
        session: Arc<crate::telemetry::counters::SessionStats>,
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
            upload: None,
            upload_key: None,
            vni_source: Some((fields.vni, fields.source.to_string())),
            header,
            buf: Vec::new(),
            staged: Staged::default(),
            retry: Some(Retry {
                dir: self.dir.clone(),
                template: self.template.clone(),
                fields,
                at: std::time::Instant::now(),
                why: DropReason::WriteError,
            }),
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

    /// `[output.s3]`: closed files are journaled and handed to `u`.
    pub fn set_uploads(&mut self, u: Arc<crate::output::upload::Uploads>) {
        let _ = self.commands.send(Command::SetUploads(u));
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

/// For tests: a writer under `dir` with a pool of `chunks`, no retention,
/// no hook, no fsync, and its counters.
#[cfg(test)]
pub(crate) fn test_output(dir: &Path, chunks: usize, backlog: Backlog) -> (Output, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let mut out = Output::spawn(
        dir,
        OutputTemplate::default(),
        Retention::new(None, None),
        RotateHook::default(),
        counters.clone(),
        chunks,
        backlog,
    );
    out.set_fsync(false);
    (out, counters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::encode::OutputFormat;

    /// Issue 12, item 1: opening, writing one record to and closing 200
    /// files in a burst (a time slot ending for many sessions, or
    /// `rotate_packets = 1`) with the smallest pool (2 chunks) and the live
    /// policy (drop when no chunk is free) loses nothing: closing costs no
    /// chunk, a retired lane gives its chunk straight back.
    #[test]
    fn closing_many_files_in_a_burst_takes_no_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut out, counters) = super::test_output(tmp.path(), 2, Backlog::Drop);
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
                    endpoint: None,
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

    /// Review of issue 12, item 1: a file that wrote into the shared chunk
    /// and then got a lane freed by another file's close keeps its records
    /// in order (its lane, sent when long, used to overtake the shared
    /// chunk holding its first record).
    #[test]
    fn a_file_that_moves_to_a_lane_keeps_its_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut out, counters) = super::test_output(tmp.path(), 16, Backlog::Wait);
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
                endpoint: None,
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
