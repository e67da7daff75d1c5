//! `[output.s3]`: closed capture and flow files uploaded to S3 (or any
//! S3-compatible store), confirmed, and only then deleted locally.
//!
//! In: closed files, from the capture writer thread ([`Uploads::created`]
//! when a file is created, [`Uploads::closed`] once it has its final
//! name) and from the flow writer ([`Uploads::closed_flow_file`]). Out:
//! objects in the bucket under the key [`key::KeyTemplate`] gives, the
//! local file deleted (unless `keep_local`), and the counters in
//! [`crate::telemetry::counters::UploadCounters`].
//!
//! Nothing is lost silently:
//! - every file to upload has an entry in the [`journal`] (under
//!   `DIR/.uploads/`) before the uploader hears of it, removed only once
//!   S3 confirmed the upload (the `PUT` or the `CompleteMultipartUpload`
//!   answered OK) and the local file was deleted; a restart uploads every
//!   entry left, under the key recorded, so a file is never stored under
//!   two keys (an upload repeated after a SIGKILL writes the same object);
//! - a failed attempt is counted (`upload_failures`), logged (at most every
//!   10 s) and retried with jittered exponential backoff (1 s doubling to
//!   60 s; a backlog oldest first); the file stays local meanwhile and
//!   counts as pending (`uploads_pending`, `upload_bytes_pending`);
//!   `/healthz` answers 503 once the oldest pending file has waited
//!   `unhealthy_after`, or at once while S3 refuses a pending file for
//!   good ([`Failure::Refused`]: no such bucket, access denied, …); the
//!   error shown is a still-pending file's, never cleared by another
//!   file's success;
//! - retention (`max_total_bytes`, `max_files`) deletes uploaded files
//!   first (after a restart, also the files found that the journal does
//!   not list); a file it must delete before its upload is counted
//!   (`upload_abandoned`), logged by name, and its entry removed;
//! - keys never repeat: [`Uploads::reserve_key`] within a run, the wait
//!   for the next second in [`Uploader::start`] across runs (each run
//!   holds a lock on the output directory); with `[output]
//!   fsync` a capture file's entry is synced with the file at its close.
//!
//! The writer threads never wait for the uploader: they write a journal
//! entry (a small file, once per capture file) and offer the path on a
//! bounded channel; when it is full the file is still in the pending set
//! and its journal, and is picked up by the next sweep (every 5 s).
//!
//! Uploads run on a tokio runtime on the uploader's own thread, at most
//! `upload_jobs` at once. A file above `multipart_threshold` goes up in
//! `part_size` parts read from disk as they are sent (at most two parts
//! in flight and one being read per upload), a smaller one in one `PUT`
//! read whole, so memory stays within `upload_jobs` x the larger of
//! `multipart_threshold` and 3 x `part_size`, whatever the file sizes.
//!
//! `{host}`: `host_id` from the config, else the instance ID from instance
//! metadata (IMDSv2, [`imds`]), else the host name (logged once and
//! counted in `mirrorcap_upload_host_fallbacks_total`). Asked only when
//! `[output.s3]` is set.
//!
//! Credentials: the `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN` environment variables; else static keys of a
//! profile in `~/.aws/credentials` (`AWS_PROFILE`, else `default`), read
//! here as object_store reads no profile; else the rest of object_store's
//! chain: web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`),
//! the ECS container endpoint, then the instance role through IMDSv2.

pub mod imds;
pub mod journal;
pub mod key;
pub mod settings;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use tokio::io::AsyncReadExt;

use crate::output::template::PathFields;
use crate::telemetry::counters::Counters;
use crate::telemetry::log_limit::LogLimiter;
use journal::{Entry, Journal, unix_now};
use key::{KeyContext, KeyTemplate};
pub use settings::S3Config;

/// Closed files offered to the uploader at once before the writers stop
/// offering (they are then found by the sweep).
pub const UPLOAD_QUEUE: usize = 4096;
/// First retry after a failure, and the longest wait between attempts.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often pending files not offered (queue full, retries due) are
/// looked at.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the uploader could not start.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "[output.s3] region: not set, and neither AWS_REGION, AWS_DEFAULT_REGION nor instance metadata ({endpoint}) gave one ({why}): set `region` in [output.s3]"
    )]
    NoRegion { endpoint: String, why: String },
    #[error("[output.s3]: cannot make the S3 client for bucket {bucket:?}: {source}")]
    Client {
        bucket: String,
        source: object_store::Error,
    },
    #[error("{path}: cannot create the upload journal: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the uploader: {0}")]
    Start(std::io::Error),
}

/// A file waiting to be uploaded.
#[derive(Clone, Debug)]
struct Pending {
    entry: Entry,
    bytes: u64,
    /// Being uploaded, or waiting for its next attempt.
    busy: bool,
    /// An attempt is under way (its file being read and sent).
    in_flight: bool,
    /// Retention deleted it while an attempt was under way: if that
    /// attempt fails, it is abandoned.
    doomed: bool,
    /// Why its last attempt failed, and whether S3 refused it for good
    /// (see [`Failure::Refused`]).
    error: Option<(String, bool)>,
}

/// What the writers, retention and the uploader share.
#[derive(Debug)]
pub struct Uploads {
    pub(crate) journal: Journal,
    keys: KeyTemplate,
    cx: KeyContext,
    keep_local: bool,
    counters: Arc<Counters>,
    offer: tokio::sync::mpsc::Sender<PathBuf>,
    state: Mutex<State>,
    log: Mutex<LogLimiter>,
    recent_keys: Mutex<RecentKeys>,
}

/// How long (in capture time, from the newest file's start) a capture
/// file's key is remembered by [`Uploads::reserve_key`]. Keys repeat only
/// within one second of `{start}`; the margin covers files of many
/// sessions created out of order.
pub const KEY_MEMORY_S: u64 = 10;

/// Keys given to capture files in the last [`KEY_MEMORY_S`] seconds.
#[derive(Debug, Default)]
struct RecentKeys {
    set: std::collections::HashSet<String>,
    /// `(start second, key)` in the order given, to forget the old ones.
    order: std::collections::VecDeque<(u64, String)>,
    newest_s: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Closed files not uploaded yet, by path. Changed only through
    /// [`State::add`], [`State::take`] and [`State::set_error`], which
    /// keep the sums below, so the gauges cost no scan of a backlog of
    /// many thousand files at each close.
    pending: HashMap<PathBuf, Pending>,
    pending_bytes: u64,
    /// How many pending files were closed at each Unix second (the
    /// oldest is the first key).
    since: std::collections::BTreeMap<u64, usize>,
    /// Pending files whose last attempt failed, and of those, refused
    /// for good; the last such error of each kind.
    errored: usize,
    refused: usize,
    last_error: Option<String>,
    last_refusal: Option<String>,
    /// Capture files uploaded and kept (`keep_local`) since the capture
    /// writer's retention last looked: it marks them, to delete them first.
    kept: Vec<PathBuf>,
    /// Capture files uploaded and deleted by the uploader, for the
    /// capture writer's retention to forget.
    removed: Vec<PathBuf>,
}

impl State {
    fn add(&mut self, path: PathBuf, p: Pending) {
        // The same file again (its close retried) replaces the first.
        self.take(&path);
        self.pending_bytes += p.bytes;
        *self.since.entry(p.entry.since).or_default() += 1;
        self.pending.insert(path, p);
    }

    fn take(&mut self, path: &Path) -> Option<Pending> {
        let p = self.pending.remove(path)?;
        self.pending_bytes -= p.bytes;
        if let std::collections::btree_map::Entry::Occupied(mut n) = self.since.entry(p.entry.since)
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        self.count_error(p.error.as_ref().map(|e| e.1), -1);
        Some(p)
    }

    /// `path`'s last attempt failed with `why`.
    fn set_error(&mut self, path: &Path, why: String, refused: bool) {
        let Some(p) = self.pending.get_mut(path) else {
            return;
        };
        p.in_flight = false;
        let old = p.error.replace((why.clone(), refused)).map(|e| e.1);
        self.count_error(old, -1);
        self.count_error(Some(refused), 1);
        if refused {
            self.last_refusal = Some(why.clone());
        }
        self.last_error = Some(why);
    }

    /// Counts a pending file's error in or out (`by` 1 or -1); `refused`
    /// is `None` for a file without one.
    fn count_error(&mut self, refused: Option<bool>, by: isize) {
        if let Some(refused) = refused {
            self.errored = self.errored.saturating_add_signed(by);
            if refused {
                self.refused = self.refused.saturating_add_signed(by);
            }
        }
        if self.errored == 0 {
            self.last_error = None;
        }
        if self.refused == 0 {
            self.last_refusal = None;
        }
    }
}

impl Uploads {
    /// For tests: uploads under `root` with no uploader behind them.
    #[cfg(test)]
    pub(crate) fn for_test(root: &Path, keep_local: bool, counters: Arc<Counters>) -> Uploads {
        counters.uploads.enabled.store(true, Relaxed);
        Uploads {
            journal: Journal::open(root).expect("journal"),
            keys: KeyTemplate::default(),
            cx: KeyContext {
                prefix: String::new(),
                host: "test".into(),
                run: "run".into(),
            },
            keep_local,
            counters,
            offer: tokio::sync::mpsc::channel(1).0,
            state: Mutex::new(State::default()),
            log: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
            recent_keys: Mutex::default(),
        }
    }

    /// For tests: `path` was uploaded (as the uploader does on S3's OK).
    #[cfg(test)]
    pub(crate) fn confirm(&self, path: &Path) {
        self.done(path);
    }

    /// The key for a new capture file, `None` when a file created in the
    /// last [`KEY_MEMORY_S`] seconds of capture time got it (the writer
    /// then tries the next `{seq}`). Local names alone cannot tell: with
    /// `keep_local = false` a file rotated, uploaded and deleted within
    /// the second its session's next file starts leaves that name free,
    /// and the next file would overwrite its object. (A new run starts
    /// its files in a later second than the last run's: see
    /// [`Uploader::start`].)
    pub fn reserve_key(&self, f: &PathFields) -> Option<String> {
        let key = self.keys.render(&self.cx, f);
        let start_s = f.start_ns / 1_000_000_000;
        let mut r = self.recent_keys.lock().unwrap_or_else(|e| e.into_inner());
        r.newest_s = r.newest_s.max(start_s);
        while let Some((s, _)) = r.order.front()
            && s + KEY_MEMORY_S < r.newest_s
        {
            let (_, k) = r.order.pop_front().expect("front exists");
            r.set.remove(&k);
        }
        if !r.set.insert(key.clone()) {
            return None;
        }
        r.order.push_back((start_s, key.clone()));
        Some(key)
    }

    /// A capture file was created at `.part`, to be named `final_path`:
    /// its journal entry, written now so a SIGKILL while it is written
    /// still uploads it after the restart (recovery gives it its final
    /// name). `None` (logged, counted in `upload_failures`) when the entry
    /// cannot be written: it is written again when the file is closed.
    pub fn created(&self, final_path: &Path, key: &str) -> Option<Entry> {
        self.record(final_path, key)
    }

    pub(crate) fn record(&self, path: &Path, key: &str) -> Option<Entry> {
        match self.journal.add(path, key) {
            Ok(e) => Some(e),
            Err(e) => {
                self.failed(&format!(
                    "{}: cannot write its upload journal entry in {}: {e}",
                    path.display(),
                    self.journal.dir().display()
                ));
                None
            }
        }
    }

    /// A file was closed (and has its final name): pending from now on.
    pub fn closed(&self, mut entry: Entry, bytes: u64) {
        let path = entry.path.clone();
        // Pending from its close, not from its creation (the journal's
        // time), for `unhealthy_after`.
        entry.since = unix_now();
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.add(
                path.clone(),
                Pending {
                    entry,
                    bytes,
                    busy: false,
                    in_flight: false,
                    doomed: false,
                    error: None,
                },
            );
            self.publish(&s);
        }
        let _ = self.offer.try_send(path);
    }

    /// A capture file that was not published (empty): its entry goes.
    pub fn discard(&self, entry: &Entry) {
        let _ = self.journal.remove(&entry.id);
    }

    /// A flow file was closed: journaled and pending. `folder` is its
    /// folder under `DIR/flows/` (the flow layout's), the same under
    /// `PREFIX/` in S3.
    pub fn closed_flow_file(&self, path: &Path, folder: &str, bytes: u64) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = key::flow_key(&self.cx, folder, &name);
        if let Some(e) = self.record(path, &key) {
            self.closed(e, bytes);
        }
    }

    /// For retention: the capture files uploaded since the last call,
    /// kept (`keep_local`) and deleted by the uploader.
    pub fn take_uploaded(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut s.kept), std::mem::take(&mut s.removed))
    }

    /// Retention deletes `path`: if it was not uploaded yet, that is
    /// counted (`upload_abandoned`), logged by name, and its entry goes.
    /// A file whose attempt is under way is left to it: the open file is
    /// still read whole, so it is stored and counted as uploaded; if that
    /// attempt fails, it is abandoned then. A file waiting for its next
    /// attempt is abandoned now.
    pub fn deleted_by_retention(&self, path: &Path) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = s.pending.get_mut(path)
            && p.in_flight
        {
            p.doomed = true;
            return;
        }
        self.abandon(&mut s, path);
    }

    /// Retention deleted `path` before its upload: counted, logged by
    /// name, its entry gone.
    fn abandon(&self, s: &mut State, path: &Path) {
        if let Some(p) = s.take(path) {
            self.counters.uploads.abandoned.fetch_add(1, Relaxed);
            let _ = self.journal.remove(&p.entry.id);
            self.publish(s);
            tracing::error!(
                path = %path.display(),
                key = %p.entry.key,
                "retention deleted a file before it was uploaded to S3 (counted in mirrorcap_upload_abandoned_total)"
            );
        }
    }

    /// The pending gauges and the errors `/healthz` shows, from `s`: the
    /// errors are those of files still pending (a file refused for good
    /// stays visible whatever other files succeed).
    fn publish(&self, s: &State) {
        let u = &self.counters.uploads;
        (*u.last_error.lock().unwrap_or_else(|e| e.into_inner())).clone_from(&s.last_error);
        (*u.refused.lock().unwrap_or_else(|e| e.into_inner())).clone_from(&s.last_refusal);
        u.pending.store(s.pending.len() as u64, Relaxed);
        u.pending_bytes.store(s.pending_bytes, Relaxed);
        u.oldest_pending
            .store(s.since.keys().next().copied().unwrap_or(0), Relaxed);
    }

    /// Counts and logs (at most every 10 s) a failure.
    fn failed(&self, why: &str) {
        let u = &self.counters.uploads;
        u.failures.fetch_add(1, Relaxed);
        let allow = self.log.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if let Some(held) = allow {
            tracing::error!(held_back = held, "upload to S3 failed, will retry: {why}");
        }
    }

    /// An attempt to upload `path` failed: counted, logged, and kept with
    /// the file for `/healthz` until it is uploaded.
    fn failed_upload(&self, path: &Path, why: String, refused: bool) {
        self.failed(&why);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.pending.get(path).is_some_and(|p| p.doomed) {
            return self.abandon(&mut s, path);
        }
        s.set_error(path, why, refused);
        self.publish(&s);
    }

    /// The upload of `path` is confirmed: the local file goes (unless
    /// `keep_local`), then its entry.
    fn done(&self, path: &Path) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = s.take(path) else {
            return;
        };
        let u = &self.counters.uploads;
        u.uploaded.fetch_add(1, Relaxed);
        u.uploaded_bytes.fetch_add(p.bytes, Relaxed);
        // Only capture files are reported: the capture writer's retention
        // takes these lists (the flow writer's counts no bytes).
        let capture = path
            .extension()
            .is_some_and(|x| x == "pcap" || x == "pcapng");
        // The entry first: a stop between the two then leaves a local copy
        // of a stored object (retention's to delete), never an entry whose
        // file is gone (which the next start would report as abandoned).
        if let Err(e) = self.journal.remove(&p.entry.id) {
            tracing::error!(entry = %p.entry.id, error = %e, "uploaded to S3, but cannot remove its journal entry (it will be uploaded again, to the same key, at the next start)");
            u.failures.fetch_add(1, Relaxed);
        }
        if self.keep_local {
            if capture {
                s.kept.push(path.to_path_buf());
            }
        } else {
            // Reached without following a link under the output directory.
            match crate::output::outdir::unlink_under(self.journal.root(), path) {
                Err(e)
                    if e.io()
                        .is_none_or(|e| e.kind() != std::io::ErrorKind::NotFound) =>
                {
                    tracing::error!(path = %path.display(), error = %e, "uploaded to S3, but cannot delete the local file");
                    u.failures.fetch_add(1, Relaxed);
                }
                _ if capture => s.removed.push(path.to_path_buf()),
                _ => {}
            }
        }
        self.publish(&s);
    }

    /// The file is gone (deleted by hand): nothing to upload, the entry goes.
    /// (Deleted by retention as its attempt began: abandoned as such.)
    fn gone(&self, path: &Path) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.pending.get(path).is_some_and(|p| p.doomed) {
            return self.abandon(&mut s, path);
        }
        if let Some(p) = s.take(path) {
            self.counters.uploads.abandoned.fetch_add(1, Relaxed);
            let _ = self.journal.remove(&p.entry.id);
            tracing::error!(path = %path.display(), key = %p.entry.key, "a file to upload to S3 is gone from disk (counted in mirrorcap_upload_abandoned_total)");
        }
        self.publish(&s);
    }

    /// Pending files not being uploaded nor waiting for a retry.
    /// Oldest first, so a backlog goes up in the order it was written.
    fn idle(&self) -> Vec<PathBuf> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut idle: Vec<(u64, &PathBuf)> = s
            .pending
            .iter()
            .filter(|(_, p)| !p.busy)
            .map(|(k, p)| (p.entry.since, k))
            .collect();
        idle.sort_unstable();
        idle.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Marks `path` busy; `false` when it is no longer pending or already
    /// busy.
    fn claim(&self, path: &Path) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.pending.get_mut(path) {
            Some(p) if !p.busy => {
                p.busy = true;
                true
            }
            _ => false,
        }
    }

    /// Whether `path` is still to be uploaded.
    pub fn is_pending(&self, path: &Path) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending.contains_key(path)
    }

    fn pending_count(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending.len()
    }
}

/// The uploader: its thread and what it shares.
pub struct Uploader {
    shared: Arc<Uploads>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop_wait: Duration,
}

/// `{host}`: `host_id`, else the instance ID, else the host name (the
/// fallback logged and counted).
pub fn resolve_host(host_id: Option<&str>, metadata: &str, counters: &Counters) -> String {
    if let Some(h) = host_id {
        return h.to_owned();
    }
    match imds::get(metadata, "instance-id") {
        Ok(id) if !id.is_empty() => imds::key_safe(&id),
        r => {
            let why = r.err().unwrap_or_else(|| "empty instance ID".into());
            let name = imds::key_safe(&imds::host_name());
            counters.uploads.host_fallbacks.fetch_add(1, Relaxed);
            tracing::warn!(
                "[output.s3]: no instance ID from instance metadata ({why}); {{host}} is the host name {name:?} (set host_id to choose)"
            );
            name
        }
    }
}

/// The region: `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, then
/// instance metadata.
fn resolve_region(cfg: &S3Config, metadata: &str) -> Result<String, UploadError> {
    if let Some(r) = &cfg.region {
        return Ok(r.clone());
    }
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = std::env::var(var)
            && !r.is_empty()
        {
            return Ok(r);
        }
    }
    imds::get(metadata, "placement/region").map_err(|why| UploadError::NoRegion {
        endpoint: metadata.to_owned(),
        why,
    })
}

/// Static keys from `~/.aws/credentials` (`AWS_PROFILE`, else
/// `default`), when the environment has none.
fn profile_keys() -> Option<(String, String, Option<String>)> {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        return None;
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let want = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut inside = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for l in text.lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == want;
        } else if inside && let Some((k, v)) = l.split_once('=') {
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

fn build_store(cfg: &S3Config, region: &str, metadata: &str) -> Result<AmazonS3, UploadError> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_region(region)
        .with_metadata_endpoint(metadata)
        .with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(300))
                .with_allow_http(
                    cfg.endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                ),
        );
    if let Some(e) = &cfg.endpoint {
        b = b
            .with_endpoint(e)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(e.starts_with("http://"));
    }
    if let Some((id, secret, token)) = profile_keys() {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
        if let Some(t) = token {
            b = b.with_token(t);
        }
    }
    b.build().map_err(|source| UploadError::Client {
        bucket: cfg.bucket.clone(),
        source,
    })
}

/// An S3 client for reading `bucket` (`mirrorcap extract`): `cfg`'s
/// endpoint, its region resolved as the uploader's is (`region`,
/// `AWS_REGION`, `AWS_DEFAULT_REGION`, instance metadata) and the same
/// credential chain.
pub fn read_client(cfg: &S3Config, bucket: &str) -> Result<AmazonS3, UploadError> {
    let metadata = imds::metadata_endpoint(cfg.metadata_endpoint.as_deref());
    let region = resolve_region(cfg, &metadata)?;
    let cfg = S3Config {
        bucket: bucket.to_owned(),
        ..cfg.clone()
    };
    build_store(&cfg, &region, &metadata)
}

impl Uploader {
    /// Starts the uploader for files under `root` (the output directory):
    /// resolves `{host}` and the region, makes the client, and queues every
    /// entry the journal holds from earlier runs (call it after crash
    /// recovery, so their files have their final names).
    pub fn start(
        cfg: &S3Config,
        host_id: Option<&str>,
        root: &Path,
        counters: Arc<Counters>,
    ) -> Result<Uploader, UploadError> {
        let metadata = imds::metadata_endpoint(cfg.metadata_endpoint.as_deref());
        let region = resolve_region(cfg, &metadata)?;
        let host = resolve_host(host_id, &metadata, &counters);
        let store = Arc::new(build_store(cfg, &region, &metadata)?);
        let journal = Journal::open(root).map_err(|source| UploadError::Journal {
            path: root.join(journal::JOURNAL_DIR),
            source,
        })?;
        // The last run's files all started before this run locked the
        // output directory (`check_output_dir`):
        // in the next whole second, every file of this run starts later
        // than those, so `{seq}` at 0 cannot give a key of theirs (a
        // restart within one second would otherwise reuse the key of a
        // file uploaded and deleted in that second).
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Duration::ZERO, |d| {
                Duration::from_nanos(d.subsec_nanos().into())
            });
        std::thread::sleep(Duration::from_secs(1).saturating_sub(into_second));
        let u = &counters.uploads;
        u.enabled.store(true, Relaxed);
        u.unhealthy_after_s
            .store(cfg.unhealthy_after.as_secs(), Relaxed);
        let (offer, rx) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
        let shared = Arc::new(Uploads {
            journal,
            keys: cfg.key_template.clone(),
            cx: KeyContext {
                prefix: cfg.prefix.clone(),
                host: host.clone(),
                run: key::run_id(),
            },
            keep_local: cfg.keep_local,
            counters,
            offer,
            state: Mutex::new(State::default()),
            log: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
            recent_keys: Mutex::default(),
        });
        shared.resume();
        tracing::info!(
            bucket = %cfg.bucket,
            region = %region,
            host = %host,
            pending = shared.pending_count(),
            "uploading closed files to S3"
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(UploadError::Start)?;
        let job = Job {
            shared: shared.clone(),
            store,
            bucket: cfg.bucket.clone(),
            part_size: cfg.part_size as usize,
            threshold: cfg.multipart_threshold,
            storage_class: cfg.storage_class.clone(),
        };
        let jobs = cfg.upload_jobs;
        let thread = std::thread::Builder::new()
            .name("mirrorcap-upload".into())
            .spawn(move || rt.block_on(run(job, jobs, rx, stop_rx)))
            .map_err(UploadError::Start)?;
        Ok(Uploader {
            shared,
            stop,
            thread: Some(thread),
            stop_wait: cfg.stop_wait,
        })
    }

    /// What the writers and retention hold.
    pub fn shared(&self) -> Arc<Uploads> {
        self.shared.clone()
    }

    /// At stop, after the writers closed their files: waits up to
    /// `stop_wait` for the pending uploads, then stops; what is left stays
    /// journaled for the next start (an interrupted multipart upload is
    /// left incomplete in the bucket: a lifecycle rule
    /// `AbortIncompleteMultipartUpload` cleans those up).
    pub fn finish(self) {
        let until = std::time::Instant::now() + self.stop_wait;
        while self.shared.pending_count() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.shared.pending_count();
        if left > 0 {
            tracing::warn!(
                pending = left,
                "stopping with files not uploaded to S3 yet; they are uploaded at the next start"
            );
        }
        // `Drop` stops the thread.
    }
}

impl Drop for Uploader {
    /// Stops the uploader's thread (an upload under way is cut; its file
    /// stays journaled). Without `finish` (the daemon failed to start
    /// after the uploader did), nothing is waited for.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Uploads {
    /// At start: every journal entry whose file is there becomes pending;
    /// an entry whose file is gone (nor its `.part`) is removed, counted
    /// as abandoned and logged; unreadable entries are logged and left.
    fn resume(&self) {
        let (entries, bad) = self.journal.list();
        for (p, why) in bad {
            self.failed(&format!(
                "{}: unreadable upload journal entry, left alone: {why}",
                p.display()
            ));
        }
        for e in entries {
            match std::fs::symlink_metadata(&e.path) {
                Ok(md) if md.is_file() => {
                    // Pending since its last write (its close).
                    let mut e = e;
                    if let Ok(t) = md.modified()
                        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
                    {
                        e.since = d.as_secs();
                    }
                    let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    s.add(
                        e.path.clone(),
                        Pending {
                            entry: e,
                            bytes: md.len(),
                            busy: false,
                            in_flight: false,
                            doomed: false,
                            error: None,
                        },
                    );
                    self.publish(&s);
                }
                _ => {
                    let _ = self.journal.remove(&e.id);
                    self.counters.uploads.abandoned.fetch_add(1, Relaxed);
                    tracing::error!(path = %e.path.display(), key = %e.key, "a file journaled for upload to S3 is gone (counted in mirrorcap_upload_abandoned_total)");
                }
            }
        }
    }
}

/// What each upload task needs.
#[derive(Clone)]
struct Job {
    shared: Arc<Uploads>,
    store: Arc<AmazonS3>,
    bucket: String,
    part_size: usize,
    threshold: u64,
    storage_class: Option<String>,
}

/// The uploader's loop: takes offered paths and sweeps the pending set,
/// at most `jobs` uploads at once, until told to stop.
async fn run(
    job: Job,
    jobs: usize,
    mut rx: tokio::sync::mpsc::Receiver<PathBuf>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let start = |p: PathBuf, tasks: &mut tokio::task::JoinSet<()>| {
        if job.shared.claim(&p) {
            tasks.spawn(upload_until_done(job.clone(), p, permits.clone()));
        }
    };
    loop {
        tokio::select! {
            Some(p) = rx.recv() => start(p, &mut tasks),
            Some(_) = tasks.join_next() => {}
            _ = sweep.tick() => {
                for p in job.shared.idle() {
                    start(p, &mut tasks);
                }
            }
            _ = stop.changed() => break,
        }
    }
    tasks.abort_all();
}

/// Uploads `path` until S3 confirms it (or it is no longer pending),
/// with backoff between attempts.
async fn upload_until_done(job: Job, path: PathBuf, permits: Arc<tokio::sync::Semaphore>) {
    let mut wait = FIRST_RETRY;
    loop {
        let permit = permits.acquire().await;
        let Some(key) = job.shared.attempt(&path) else {
            return;
        };
        let r = upload_once(&job, &path, &key).await;
        drop(permit);
        let at = format!("{} -> s3://{}/{key}", path.display(), job.bucket);
        let (why, refused) = match r {
            Ok(()) => return job.shared.done(&path),
            Err(Failure::Gone) => return job.shared.gone(&path),
            Err(Failure::Refused(why)) => (
                format!(
                    "{at}: refused ({why}); check `bucket`, the credentials' rights on it and `storage_class`"
                ),
                true,
            ),
            Err(Failure::Other(why)) => (format!("{at}: {why}"), false),
        };
        job.shared.failed_upload(&path, why, refused);
        tokio::time::sleep(jitter(wait)).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

impl Uploads {
    /// An attempt to upload `path` starts: its key, `None` when it is no
    /// longer pending.
    fn attempt(&self, path: &Path) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = s.pending.get_mut(path)?;
        p.in_flight = true;
        Some(p.entry.key.clone())
    }
}

/// `d` plus up to a quarter more, so many targets that failed together
/// do not retry together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d / 4 * (nanos % 1000) / 1000
}

enum Failure {
    /// The local file is gone.
    Gone,
    /// S3 refused for a reason retrying will not mend by itself (no such
    /// bucket, access denied, bad credentials, a storage class it does
    /// not take): still retried (the operator may mend it), but shown in
    /// `/healthz` at once.
    Refused(String),
    Other(String),
}

/// S3 error codes that retrying alone does not mend.
const REFUSALS: [&str; 9] = [
    "KeyTooLongError",
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidStorageClass",
    "InvalidBucketName",
    "AllAccessDisabled",
    "ExpiredToken",
];

/// The instance metadata paths of the S3 client's credential requests.
const CREDENTIAL_PATHS: [&str; 2] = [
    "/latest/meta-data/iam/security-credentials",
    "/latest/api/token",
];

impl From<object_store::Error> for Failure {
    fn from(e: object_store::Error) -> Failure {
        use object_store::Error as E;
        let text = e.to_string();
        match e {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::NotFound { .. } => {
                Failure::Refused(text)
            }
            _ if REFUSALS.iter().any(|code| text.contains(code)) => Failure::Refused(text),
            // The credential chain's last link, instance metadata, failed:
            // no keys in the environment or profile, and no role (or no
            // metadata service). Off EC2 or without a role it never mends.
            _ if CREDENTIAL_PATHS.iter().any(|p| text.contains(p)) => Failure::Refused(format!(
                "no credentials: no AWS keys in the environment or ~/.aws/credentials, and instance metadata gave none (has the instance a role?): {text}"
            )),
            _ => Failure::Other(text),
        }
    }
}

/// S3 takes at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a file of `len` bytes: `part_size`, or larger (whole
/// MiB) when `part_size` would need more than [`MAX_PARTS`] parts (a
/// 100 GB file: 10 MiB), so no file is too big to upload.
fn part_size_for(len: u64, part_size: usize) -> usize {
    let needed = len.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    part_size.max(usize::try_from(needed).unwrap_or(usize::MAX))
}

/// One attempt: a `PUT` of the whole file, or a multipart upload of it
/// read part by part.
async fn upload_once(job: &Job, path: &Path, key: &str) -> Result<(), Failure> {
    let other = |e: &dyn std::fmt::Display| Failure::Other(e.to_string());
    let location = object_store::path::Path::parse(key)
        .map_err(|e| Failure::Refused(format!("not a valid S3 key: {e}")))?;
    // Reached without following a link under the output directory (a
    // link there is not a file of ours: treated as gone).
    let opened = crate::output::outdir::open_parent(job.shared.journal.root(), path, false, 0)
        .and_then(|(dir, name)| dir.open_file(name));
    let mut file = match opened {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(crate::output::outdir::OutDirError::Link { .. }) => return Err(Failure::Gone),
        Err(e)
            if e.io()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Err(Failure::Gone);
        }
        Err(e) => return Err(other(&format!("cannot open: {e}"))),
    };
    let len = file.metadata().await.map_err(|e| other(&e))?.len();
    let mut attributes = object_store::Attributes::new();
    if let Some(c) = &job.storage_class {
        attributes.insert(object_store::Attribute::StorageClass, c.clone().into());
    }
    if len <= job.threshold {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).await.map_err(|e| other(&e))?;
        let opts = object_store::PutOptions {
            attributes,
            ..Default::default()
        };
        job.store.put_opts(&location, buf.into(), opts).await?;
        return Ok(());
    }
    let opts = object_store::PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let upload = job.store.put_multipart_opts(&location, opts).await?;
    let part_size = part_size_for(len, job.part_size);
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, part_size);
    let mut buf = vec![0u8; part_size];
    loop {
        if let Err(e) = w.wait_for_capacity(2).await {
            // Not left incomplete in the bucket (best effort).
            let _ = w.abort().await;
            return Err(e.into());
        }
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(other(&format!("cannot read: {e}")));
                }
            }
        }
        if filled == 0 {
            break;
        }
        w.write(&buf[..filled]);
        if filled < buf.len() {
            break;
        }
    }
    w.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 16: a file needing more than S3's 10,000 parts at
    /// `part_size` (a 90 GB hourly file at 8 MiB) was refused at part
    /// 10,001 on every retry, for ever; its parts now grow to fit.
    #[test]
    fn part_size_grows_so_no_file_needs_more_than_10000_parts() {
        let mib = 1usize << 20;
        assert_eq!(part_size_for(16 << 20, 8 * mib), 8 * mib);
        for len in [78u64 << 30, 90_000_000_000, 5 << 40] {
            let p = part_size_for(len, 8 * mib);
            assert!(len.div_ceil(p as u64) <= MAX_PARTS, "{len}: {p}");
            assert_eq!(p % mib, 0);
        }
        assert_eq!(part_size_for(90_000_000_000, 8 * mib), 9 * mib);
    }

    /// Review of issue 16: retention deleting a file whose upload is under
    /// way counted it abandoned (and logged it as lost) though the upload
    /// then stored it.
    #[test]
    fn retention_during_an_upload_leaves_it_to_the_upload() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let u = Uploads::for_test(tmp.path(), false, counters.clone());
        let (busy, idle) = (tmp.path().join("a.pcap"), tmp.path().join("b.pcap"));
        for p in [&busy, &idle] {
            std::fs::write(p, b"x").unwrap();
            let e = u.record(p, "k").unwrap();
            u.closed(e, 1);
        }
        assert!(u.claim(&busy) && u.claim(&idle));
        assert!(u.attempt(&busy).is_some());
        u.deleted_by_retention(&busy);
        u.deleted_by_retention(&idle);
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 1);
        u.confirm(&busy);
        assert_eq!(counters.uploads.uploaded.load(Relaxed), 1);
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 1);
        assert_eq!(u.pending_count(), 0);
    }

    /// Review of issue 16: a capture file's key is never given twice in a
    /// run, though the local name is free again (the file uploaded and
    /// deleted); keys are forgotten `KEY_MEMORY_S` after their start.
    #[test]
    fn a_key_is_reserved_once() {
        let tmp = tempfile::tempdir().unwrap();
        let u = Uploads::for_test(tmp.path(), false, Arc::new(Counters::default()));
        let mut f = crate::output::template::tests::sample_fields();
        let first = u.reserve_key(&f).expect("free");
        assert_eq!(u.reserve_key(&f), None);
        f.seq += 1;
        assert_ne!(u.reserve_key(&f).expect("next seq is free"), first);
        let mut later = f.clone();
        later.start_ns += (KEY_MEMORY_S + 1) * 1_000_000_000;
        u.reserve_key(&later).expect("a later start is free");
        f.seq -= 1;
        assert_eq!(u.reserve_key(&f), Some(first), "forgotten by now");
    }
}
