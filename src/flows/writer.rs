//! The flow files on disk: the writer thread that the flow tables of every
//! worker send their [`FlowBatch`]es to, and [`FlowShared`], which lets
//! the last of those workers end it.
//!
//! In: batches of rendered records. Out: `DIR/flows/<folder>/
//! mirrorcap_flows_<start>-<seq>.log[.gz]` (and `.jsonl[.gz]` in
//! `DIR/flows/jsonl/<folder>/`), `<folder>` one of AWS's layouts ([`super::layout`]: by default
//! `AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD`), or with
//! `parquet` `….parquet` ([`super::parquet`]), each written as `.part`
//! and renamed when closed. Dropped: a batch whose write fails (counted
//! as lost records, `/healthz` 503 until a write works again; for a
//! Parquet file, every record in it, as a file without its footer is
//! deleted); closed files beyond `output.max_files` (oldest first).
//!
//! The `.part` file, its cut-back, sync and rename are
//! [`crate::output::part::PartFile`]; retention is
//! [`crate::output::retention::Retention`] with the flow files as one
//! group. A `.part` left by a crash is not recovered (crash recovery reads
//! capture files only) and its name is not reused.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};

use super::FlowConfig;
use super::parquet::ParquetFile;
use super::record::FlowBatch;
use super::table::FlowTable;
use crate::output::files::DIR_MODE;
use crate::output::outdir::{Dir, part_name};
use crate::output::part::{PartFile, name_taken};
use crate::output::retention::Retention;
use crate::telemetry::counters::Counters;
use crate::telemetry::log_limit::LogLimiter;

/// The folder of the flow files in the output directory; below it, the
/// layout's folders ([`super::FlowLayout::folder`]).
pub const FLOWS_DIR: &str = "flows";

/// The folder of the JSON Lines copies (`json = true`) in [`FLOWS_DIR`],
/// with the same layout below it: beside `AWSLogs/`, not in it, so a
/// table over `AWSLogs/` (Athena's text DDL) meets only the text files,
/// as in AWS's folders.
pub const JSON_DIR: &str = "jsonl";

/// A flow file's name: `mirrorcap_flows_<start, UTC>-<seq><ext>`.
pub fn file_name(start_s: u64, seq: u32, ext: &str) -> String {
    let t = crate::output::template::UtcTime::from_unix(start_s);
    format!(
        "mirrorcap_flows_{:04}{:02}{:02}T{:02}{:02}{:02}Z-{seq:06}{ext}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The longest folder and name a flow file of `layout` can have (under
/// `flows/`, and after the prefix in S3), for the key length check: an
/// account or region not given at its longest (64 bytes: it may come
/// from instance metadata), the JSON copy's folder, every date part at
/// its widest (9999-12-31T23:59:59Z), the largest `seq`.
pub fn longest_path(layout: &super::FlowLayout) -> (String, String) {
    let mut layout = layout.clone();
    let longest = "x".repeat(64);
    layout.account_id.get_or_insert_with(|| longest.clone());
    layout.region.get_or_insert(longest);
    let end = 253_402_300_799;
    (
        format!("{JSON_DIR}/{}", layout.folder(end)),
        file_name(end, u32::MAX, ".jsonl.gz"),
    )
}

/// The flow writer shared by a set of sibling pipelines (workers): the
/// last one to finish ends the writer thread.
pub struct FlowShared {
    writer: std::sync::Mutex<Option<FlowWriter>>,
    live: std::sync::atomic::AtomicUsize,
}

impl FlowShared {
    pub fn new(writer: FlowWriter) -> Arc<FlowShared> {
        Arc::new(FlowShared {
            writer: std::sync::Mutex::new(Some(writer)),
            live: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A table for one more pipeline.
    pub fn table(self: &Arc<Self>, cfg: Arc<FlowConfig>, counters: Arc<Counters>) -> FlowTable {
        self.live.fetch_add(1, Relaxed);
        let tx = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.sender())
            .expect("writer running while tables are made");
        FlowTable::new(cfg, tx, counters)
    }

    /// `[output.s3]`: closed flow files are uploaded too (under
    /// [`crate::output::upload::key::flow_key`]).
    pub fn set_uploads(&self, u: Arc<crate::output::upload::Uploads>) {
        if let Some(w) = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = w.uploads.set(u);
        }
    }

    /// Called by each pipeline after its table wrote its last records.
    pub fn done(&self) {
        if self.live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1
            && let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            w.finish();
        }
    }
}

/// The flow files' writer thread: `DIR/flows/<folder>/
/// mirrorcap_flows_<start>-<seq>.log[.gz]` (and `.jsonl[.gz]`), or
/// `….parquet` with `parquet` (row groups written as they fill, see
/// [`super::parquet`]), a new file
/// every `file_interval` and at each new folder of the layout (a day, or
/// an hour with `per_hour_partition`: [`super::FlowLayout`]), written as `.part`
/// and renamed when closed;
/// `max_files` closed flow files are kept (oldest deleted first).
///
/// Each batch (a window's records) is appended with one write; with
/// `gzip` it is one gzip member of its own (a file of several members is
/// one valid gzip stream: `gzip -t`, zcat, Athena and `mirrorcap flows`
/// read it whole). A write that fails (disk full) cuts the file back to
/// its last whole batch, counts the batch's records as lost
/// (`mirrorcap_flow_records_lost_total`), turns `/healthz` to 503 until a
/// write succeeds again, and the next batch is tried anew; so a flow file
/// on disk is always whole, and it gets its final name only after its
/// data is synced. A file that holds no batch is removed, not published.
pub struct FlowWriter {
    tx: Option<mpsc::Sender<FlowBatch>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// To count the thread's panic as a flow write error.
    counters: Arc<Counters>,
    /// `[output.s3]`, set once after the start.
    uploads: Arc<std::sync::OnceLock<Arc<crate::output::upload::Uploads>>>,
}

impl FlowWriter {
    pub fn spawn(
        dir: &Path,
        cfg: Arc<FlowConfig>,
        max_files: Option<u32>,
        counters: Arc<Counters>,
    ) -> FlowWriter {
        let layout = &cfg.layout;
        if layout.account_id.is_none() || layout.region.is_none() {
            tracing::warn!(
                "[flows]: no `account_id` or `region` given, nor found in instance metadata (asked only by `run` with [output.s3], never by replay): flow files go under {}/{}/",
                dir.join(FLOWS_DIR).display(),
                layout.base()
            );
        }
        let (tx, rx) = mpsc::channel::<FlowBatch>();
        let root = dir.to_path_buf();
        let thread_counters = counters.clone();
        let uploads = Arc::new(std::sync::OnceLock::new());
        let thread_uploads = uploads.clone();
        let thread = std::thread::Builder::new()
            .name("mirrorcap-flows".into())
            .spawn(move || {
                FlowFiles {
                    retention: Retention::new(max_files, None)
                        .under(root.clone())
                        .counted_in(thread_counters.clone()),
                    root,
                    cfg,
                    counters: thread_counters,
                    current: None,
                    seq: 0,
                    gz_buf: Vec::new(),
                    errors: LogLimiter::new(std::time::Duration::from_secs(10)),
                    uploads: thread_uploads,
                    retention_knows_uploads: false,
                }
                .run(rx)
            })
            .expect("spawning the flow writer");
        FlowWriter {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            uploads,
        }
    }

    pub fn sender(&self) -> mpsc::Sender<FlowBatch> {
        self.tx.clone().expect("running")
    }

    /// Waits until every table's sender is gone and the files are closed.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            self.counters.flow_write_errors.fetch_add(1, Relaxed);
            tracing::error!("flows: the flow writer thread panicked");
        }
    }
}

/// Errors writing flow files; each is counted and logged by the flow
/// writer thread.
#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    #[error(transparent)]
    Dir(#[from] crate::output::outdir::OutDirError),
    #[error("{path}: cannot create flow file: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: write failed (the file is cut back to its last whole batch): {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot sync or rename to its final name: {source}")]
    Close {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A Parquet file keeps its records in memory until its close writes
    /// them: most of its close failures are that write's (disk full).
    #[error(
        "{path}: cannot write its last row group and footer, or sync and rename it (all its records are lost): {source}"
    )]
    ParquetClose {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A flow file being written: the shared `.part`-and-rename file of
/// [`crate::output::part`], which keeps only whole batches in it; errors
/// are named here with the file's `.part` path.
struct FlowFile(PartFile);

impl FlowFile {
    fn create(dir: Dir, name: String) -> Result<FlowFile, FlowFileError> {
        let part = dir.path().join(part_name(name.as_ref()));
        PartFile::create(dir, name)
            .map(FlowFile)
            .map_err(|source| FlowFileError::Create { path: part, source })
    }

    /// Appends `bytes` whole, or cuts the file back to where it was.
    fn append(&mut self, bytes: &[u8]) -> Result<(), FlowFileError> {
        self.0.append(bytes).map_err(|source| FlowFileError::Write {
            path: self.0.part_path(),
            source,
        })
    }

    /// Syncs and renames the file to its final name; one with no batch in
    /// it is removed instead, and so is one that cannot be synced or
    /// renamed (flow `.part`s are never recovered: its records are counted
    /// as lost by the caller, and its space is freed). Returns the final
    /// path and size when published.
    fn close(self) -> Result<Option<(PathBuf, u64)>, FlowFileError> {
        let path = self.0.part_path();
        self.0
            .close()
            .map_err(|source| FlowFileError::Close { path, source })
    }
}

/// The file of a slot's records: text (a header line, then a line per
/// record; gzip members with `gzip`) or, with `parquet`, Parquet.
enum RecordFile {
    Text(FlowFile),
    /// Boxed: its writer state is large, and one is open at a time.
    Parquet(Box<ParquetFile>),
}

impl RecordFile {
    fn create(dir: Dir, name: String, cfg: &FlowConfig) -> Result<RecordFile, FlowFileError> {
        if !cfg.parquet {
            return FlowFile::create(dir, name).map(RecordFile::Text);
        }
        let path = dir.path().join(part_name(name.as_ref()));
        ParquetFile::create(dir, name, &cfg.format)
            .map(|f| RecordFile::Parquet(Box::new(f)))
            .map_err(|source| FlowFileError::Create { path, source })
    }

    /// As [`FlowFile::close`]; with the records lost if it fails: the
    /// `text_records` appended to a text file, or a Parquet file's, whose
    /// footer it could not write.
    fn close(self, text_records: u64) -> (Result<Option<(PathBuf, u64)>, FlowFileError>, u64) {
        match self {
            RecordFile::Text(f) => (f.close(), text_records),
            RecordFile::Parquet(f) => {
                let (path, records) = (f.part_path(), f.records());
                let r = f.close();
                (
                    r.map_err(|source| FlowFileError::ParquetClose { path, source }),
                    records,
                )
            }
        }
    }
}

struct OpenFlowFile {
    slot: u64,
    /// The start of its day or hour ([`super::FlowLayout::partition_start`]).
    partition: u64,
    /// Its folder under `flows/` ([`super::FlowLayout::folder`]).
    folder: String,
    records: RecordFile,
    /// Records in the text file (lost with it if it cannot be published).
    text_records: u64,
    json: Option<FlowFile>,
}

/// The flow writer thread's state.
struct FlowFiles {
    /// The output directory; flow files go under `flows/` in it.
    root: PathBuf,
    cfg: Arc<FlowConfig>,
    counters: Arc<Counters>,
    current: Option<OpenFlowFile>,
    /// `output.max_files` over the closed flow files of this run, all in
    /// one group (the output's shared retention code).
    retention: Retention<()>,
    seq: u32,
    /// A batch compressed as one gzip member, reused.
    gz_buf: Vec<u8>,
    errors: LogLimiter,
    /// `[output.s3]`: closed flow files are handed over here.
    uploads: Arc<std::sync::OnceLock<Arc<crate::output::upload::Uploads>>>,
    retention_knows_uploads: bool,
}

impl FlowFiles {
    fn run(mut self, rx: mpsc::Receiver<FlowBatch>) {
        while let Ok(batch) = rx.recv() {
            self.write_batch(&batch);
        }
        if let Some(f) = self.current.take() {
            self.close(f);
        }
    }

    fn write_batch(&mut self, batch: &FlowBatch) {
        let slot = batch.window_s / self.cfg.file_interval_s;
        let partition = self.cfg.layout.partition_start(batch.window_s);
        if let Some(f) = self
            .current
            .take_if(|c| c.slot != slot || c.partition != partition)
        {
            self.close(f);
        }
        if self.current.is_none() {
            match self.open(slot, partition) {
                Ok(f) => self.current = Some(f),
                Err(e) => return self.fail(&e, batch.records),
            }
        }
        let c = self.current.as_mut().expect("opened");
        let fields = self.cfg.format.fields.len();
        let text_len = match &mut c.records {
            RecordFile::Text(f) => f.0.good_len(),
            RecordFile::Parquet(p) => {
                let before = p.records();
                match p.push(&batch.values, fields) {
                    Err(source) => {
                        let e = FlowFileError::Write {
                            path: p.part_path(),
                            source,
                        };
                        // The file is deleted: the records it had are lost too.
                        self.current = None;
                        self.fail(&e, before + batch.records);
                    }
                    // Health is back only when bytes reach the disk (a row
                    // group, or a file closed), not when records are
                    // buffered in memory while the disk is still full.
                    Ok(true) => self.counters.set_flow_output_error(None),
                    Ok(false) => {}
                }
                return;
            }
        };
        let mut text = String::new();
        if text_len == 0 {
            text.push_str(&self.cfg.format.header());
            text.push('\n');
        }
        text.push_str(&batch.lines);
        let r = self.append(false, text.as_bytes());
        if let Err(e) = r {
            return self.fail(&e, batch.records);
        }
        if let Some(c) = self.current.as_mut() {
            c.text_records += batch.records;
        }
        if self.cfg.json
            && let Err(e) = self.append(true, batch.json.as_bytes())
        {
            // The text file has the records; the JSON copy lost them, and
            // health stays 503 until a JSON write works again.
            return self.fail(&e, 0);
        }
        self.counters.set_flow_output_error(None);
    }

    /// Appends `bytes` to the text (or JSON) file, as one gzip member
    /// with `gzip`.
    fn append(&mut self, json: bool, bytes: &[u8]) -> Result<(), FlowFileError> {
        let c = self.current.as_mut().expect("opened");
        let Some(f) = (match (json, &mut c.records) {
            (true, _) => c.json.as_mut(),
            (false, RecordFile::Text(f)) => Some(f),
            (false, RecordFile::Parquet(_)) => None,
        }) else {
            return Ok(());
        };
        if !self.cfg.gzip {
            return f.append(bytes);
        }
        use std::io::Write;
        self.gz_buf.clear();
        let mut gz = flate2::write::GzEncoder::new(
            std::mem::take(&mut self.gz_buf),
            flate2::Compression::default(),
        );
        let compressed = gz.write_all(bytes).and_then(|()| gz.finish());
        match compressed {
            Ok(member) => {
                let r = f.append(&member);
                self.gz_buf = member;
                r
            }
            Err(source) => Err(FlowFileError::Write {
                path: f.0.part_path(),
                source,
            }),
        }
    }

    /// Opens the file of time slot `slot` for the windows of the
    /// partition (day or hour) starting at `partition` (Unix seconds),
    /// named after the later of the two starts.
    fn open(&mut self, slot: u64, partition: u64) -> Result<OpenFlowFile, FlowFileError> {
        let gz = if self.cfg.gzip { ".gz" } else { "" };
        let ext = if self.cfg.parquet { ".parquet" } else { ".log" };
        let start = (slot * self.cfg.file_interval_s).max(partition);
        let folder = self.cfg.layout.folder(start);
        let open_dir = |sub: &str| {
            let rel = Path::new(FLOWS_DIR).join(sub).join(&folder);
            Dir::open_root(&self.root, true, DIR_MODE)?.sub(&rel, true, DIR_MODE)
        };
        let dir = open_dir("")?;
        let json_dir = if self.cfg.json {
            Some(open_dir(JSON_DIR)?)
        } else {
            None
        };
        loop {
            let seq = self.seq;
            self.seq += 1;
            let text = file_name(start, seq, &format!("{ext}{gz}"));
            let json = file_name(start, seq, &format!(".jsonl{gz}"));
            // An error looking (EIO, EACCES) is a failure, not a name taken.
            let taken = |dir: &Dir, n: &str| {
                name_taken(dir, n.as_ref()).map_err(|source| FlowFileError::Create {
                    path: dir.path().join(n),
                    source,
                })
            };
            if taken(&dir, &text)?
                || json_dir.as_ref().map(|d| taken(d, &json)).transpose()? == Some(true)
            {
                continue;
            }
            let json = json_dir.map(|d| FlowFile::create(d, json)).transpose()?;
            let records = RecordFile::create(dir, text, &self.cfg)?;
            return Ok(OpenFlowFile {
                slot,
                partition,
                folder,
                records,
                text_records: 0,
                json,
            });
        }
    }

    fn close(&mut self, f: OpenFlowFile) {
        let json_folder = format!("{JSON_DIR}/{}", f.folder);
        let json = f.json.map(|j| (j.close(), 0, json_folder.as_str()));
        let (closed, lost) = f.records.close(f.text_records);
        for (closed, lost, folder) in std::iter::once((closed, lost, f.folder.as_str())).chain(json)
        {
            match closed {
                // A file retention cannot delete is logged and counted
                // there (`mirrorcap_errors_total{kind="retention"}`).
                Ok(Some((path, bytes))) => {
                    if self.cfg.parquet && lost > 0 {
                        // A Parquet file written (its records were in
                        // memory until now): the disk takes writes again.
                        self.counters.set_flow_output_error(None);
                    }
                    if let Some(u) = self.uploads.get() {
                        if !std::mem::replace(&mut self.retention_knows_uploads, true) {
                            self.retention.set_uploads(u.clone());
                        }
                        u.closed_flow_file(&path, folder, bytes);
                    }
                    self.retention.add(path, bytes, (), 0);
                }
                Ok(None) => {}
                Err(e) => self.fail(&e, lost),
            }
        }
    }

    /// Counts a failure (and the records it lost), marks the output
    /// unhealthy and logs it, at most once per 10 s.
    fn fail(&mut self, e: &FlowFileError, records_lost: u64) {
        self.counters.flow_write_errors.fetch_add(1, Relaxed);
        self.counters
            .flow_records_lost
            .fetch_add(records_lost, Relaxed);
        self.counters.set_flow_output_error(Some(e.to_string()));
        if let Some(held) = self.errors.allow() {
            tracing::error!(error = %e, records_lost, held_back = held, "flows: cannot write flow records; they are counted as lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn batch(window_s: u64) -> FlowBatch {
        FlowBatch {
            window_s,
            lines: format!("record of {window_s}\n"),
            json: String::new(),
            values: Vec::new(),
            records: 1,
        }
    }

    fn wait_for(p: &Path) {
        let until = Instant::now() + Duration::from_secs(10);
        while !p.exists() {
            assert!(Instant::now() < until, "{} never appeared", p.display());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Issue 13: the flow writer goes through the output's shared
    /// `.part`-and-rename and retention code: files are published whole
    /// under their final name, `output.max_files` deletes the oldest, a
    /// deletion that fails is counted, and a `.part` left by a crash is
    /// neither reused nor touched (crash recovery is for capture files).
    #[test]
    fn flow_files_go_through_the_shared_part_and_retention_code() {
        let tmp = tempfile::tempdir().unwrap();
        let day = tmp
            .path()
            .join("flows/AWSLogs/unknown/vpcflowlogs/unknown/1970/01/01");
        std::fs::create_dir_all(&day).unwrap();
        let name = |t: u64, seq: u32| {
            day.join(format!("mirrorcap_flows_19700101T0000{t:02}Z-{seq:06}.log"))
        };
        let crash_left = day.join("mirrorcap_flows_19700101T000000Z-000000.log.part");
        std::fs::write(&crash_left, b"left by a crash").unwrap();
        let cfg = Arc::new(FlowConfig {
            enabled: true,
            file_interval_s: 10,
            ..Default::default()
        });
        let counters = Arc::new(Counters::default());
        let w = FlowWriter::spawn(tmp.path(), cfg.clone(), Some(1), counters.clone());
        let tx = w.sender();
        tx.send(batch(0)).unwrap();
        tx.send(batch(10)).unwrap();
        // The first file is published; make it undeletable (a directory
        // that is not empty) before retention gets to it.
        wait_for(&name(0, 1));
        std::fs::remove_file(name(0, 1)).unwrap();
        std::fs::create_dir(name(0, 1)).unwrap();
        std::fs::write(name(0, 1).join("x"), b"").unwrap();
        tx.send(batch(20)).unwrap();
        drop(tx);
        w.finish();

        let mut left: Vec<String> = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "mirrorcap_flows_19700101T000000Z-000000.log.part",
                "mirrorcap_flows_19700101T000000Z-000001.log",
                "mirrorcap_flows_19700101T000020Z-000003.log",
            ]
        );
        assert_eq!(std::fs::read(&crash_left).unwrap(), b"left by a crash");
        let text = std::fs::read_to_string(name(20, 3)).unwrap();
        assert_eq!(text, format!("{}\nrecord of 20\n", cfg.format.header()));
        // Logged and counted in one place, with the capture files' failures.
        assert_eq!(
            counters.errors(crate::telemetry::counters::ErrorKind::Retention),
            1
        );
        assert_eq!(counters.flow_write_errors.load(Relaxed), 0);
    }

    /// Issue 18 item 1 (hostile run): a Parquet file whose close fails
    /// (disk full at the footer; here its rename, onto a directory) turns
    /// `/healthz` to 503, and buffering the next window's records in
    /// memory does not turn it back: only a Parquet file (or row group)
    /// that reaches the disk does. Before, health was 503 for less than
    /// the next window, while the disk stayed full.
    #[test]
    fn parquet_health_stays_503_until_a_parquet_file_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Arc::new(FlowConfig {
            enabled: true,
            parquet: true,
            file_interval_s: 10,
            ..Default::default()
        });
        let fields = cfg.format.fields.len();
        let counters = Arc::new(Counters::default());
        let mut files = FlowFiles {
            retention: Retention::new(None, None),
            root: tmp.path().to_path_buf(),
            cfg,
            counters: counters.clone(),
            current: None,
            seq: 0,
            gz_buf: Vec::new(),
            errors: LogLimiter::new(Duration::from_secs(10)),
            uploads: Arc::new(std::sync::OnceLock::new()),
            retention_knows_uploads: false,
        };
        let batch = |window_s: u64| FlowBatch {
            window_s,
            lines: String::new(),
            json: String::new(),
            values: vec!["-".to_string(); fields],
            records: 1,
        };
        let day = tmp
            .path()
            .join("flows/AWSLogs/unknown/vpcflowlogs/unknown/1970/01/01");
        files.write_batch(&batch(0));
        // The first file cannot get its final name.
        let first = day.join("mirrorcap_flows_19700101T000000Z-000000.parquet");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("x"), b"").unwrap();
        files.write_batch(&batch(10));
        assert_eq!(counters.flow_records_lost.load(Relaxed), 1);
        // Its records count as lost, so its `.part` is not left behind
        // (whole, never published, never uploaded, taking space).
        let part = day.join("mirrorcap_flows_19700101T000000Z-000000.parquet.part");
        assert!(!part.exists(), "{} left", part.display());
        let why = counters.unhealthy();
        assert!(
            why.as_deref().is_some_and(|w| w.contains("000000.parquet")),
            "health after a Parquet file was lost and the next window only buffered: {why:?}"
        );
        files.write_batch(&batch(20));
        assert_eq!(counters.unhealthy(), None, "a Parquet file was written");
        assert!(
            day.join("mirrorcap_flows_19700101T000010Z-000001.parquet")
                .exists()
        );
    }

    /// Issue 18 item 2: a file never spans two folders of the layout: with
    /// `per_hour_partition` and a `file_interval` of 2 h, the window that
    /// starts the next hour starts a new file there, named by that hour,
    /// so `WHERE hour = …` over the folders sees every record of the hour.
    #[test]
    fn a_new_partition_starts_a_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Arc::new(FlowConfig {
            enabled: true,
            file_interval_s: 7_200,
            layout: crate::flows::FlowLayout {
                hive: true,
                per_hour: true,
                account_id: Some("123456789012".into()),
                region: Some("eu-west-1".into()),
            },
            ..Default::default()
        });
        let w = FlowWriter::spawn(tmp.path(), cfg, None, Arc::new(Counters::default()));
        let tx = w.sender();
        for t in [3_540, 3_600, 3_660] {
            tx.send(batch(t)).unwrap();
        }
        drop(tx);
        w.finish();
        let base = tmp.path().join(
            "flows/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=1970/month=01/day=01",
        );
        let read = |hour: &str, name: &str| {
            let text = std::fs::read_to_string(base.join(hour).join(name)).unwrap();
            text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(
            read("hour=00", "mirrorcap_flows_19700101T000000Z-000000.log"),
            ["record of 3540"]
        );
        assert_eq!(
            read("hour=01", "mirrorcap_flows_19700101T010000Z-000001.log"),
            ["record of 3600", "record of 3660"]
        );
        assert_eq!(std::fs::read_dir(base.join("hour=01")).unwrap().count(), 1);
    }

    /// Review of issue 18: a text flow file that cannot be renamed to its
    /// final name is never published (flow `.part`s are not recovered):
    /// its records are counted as lost, and its `.part` is deleted, as a
    /// Parquet file's is.
    #[test]
    fn a_text_file_that_cannot_be_published_counts_its_records_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Arc::new(FlowConfig {
            enabled: true,
            ..Default::default()
        });
        let counters = Arc::new(Counters::default());
        let w = FlowWriter::spawn(tmp.path(), cfg, None, counters.clone());
        let tx = w.sender();
        let mut b = batch(0);
        b.records = 3;
        tx.send(b).unwrap();
        let day = tmp
            .path()
            .join("flows/AWSLogs/unknown/vpcflowlogs/unknown/1970/01/01");
        let name = day.join("mirrorcap_flows_19700101T000000Z-000000.log");
        wait_for(&day.join("mirrorcap_flows_19700101T000000Z-000000.log.part"));
        // The final name taken by a directory that is not empty.
        std::fs::create_dir(&name).unwrap();
        std::fs::write(name.join("x"), b"").unwrap();
        drop(tx);
        w.finish();
        assert_eq!(counters.flow_records_lost.load(Relaxed), 3);
        assert_eq!(counters.flow_write_errors.load(Relaxed), 1);
        let left: Vec<_> = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [name.file_name().unwrap()], "the .part was left");
    }
}
