//! Retention: `max_files` per group and `max_total_bytes` over every
//! closed file it is given under the output directory, oldest deleted
//! first. The capture writer groups its files by session ([`SessionTag`],
//! the default); the flow writer puts its flow files in one group (`()`),
//! so `output.max_files` keeps that many flow files. In: closed files (and
//! those found at start). Out: deletions; a deletion that fails (other
//! than a file already gone) is logged and counted in
//! [`Retention::not_deleted`].

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::output::outdir::{self, OutDirError};
use crate::output::upload::Uploads;
use crate::telemetry::counters::Counters;
use crate::telemetry::events::RetentionNotDeleted;

/// A session as retention counts its files (`max_files`): (VNI, source),
/// the same whichever worker or table slot it had, and after it was freed.
pub type SessionTag = (u32, std::net::IpAddr);

pub(crate) fn session_tag(s: &crate::telemetry::counters::SessionStats) -> SessionTag {
    (s.vni, s.source)
}

/// A complete capture file found on disk at start (`lstat` size and time:
/// links are not followed, so nothing outside the output directory is
/// counted or, later, deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// A closed file that retention may delete.
#[derive(Debug)]
pub(crate) struct ClosedFile<K> {
    path: PathBuf,
    bytes: u64,
    /// The group (session) that wrote it; `None` for files found on disk
    /// from an earlier run.
    session: Option<K>,
    /// Uploaded to S3 and kept (`keep_local`): deleted before the others.
    uploaded: bool,
}

/// Retention over closed files under the output directory, `max_files`
/// counted per group `K` (a session for capture files).
#[derive(Debug)]
pub struct Retention<K = SessionTag> {
    /// The directory the files are under ([`Retention::under`]: the
    /// capture writer's output directory, the flow writer's): files are
    /// deleted on their directory's descriptor, reached without following
    /// links.
    pub(crate) root: Option<PathBuf>,
    files: VecDeque<ClosedFile<K>>,
    /// Closed files in `files` per group (a capture session; one group for
    /// all flow files), so a close costs no scan of every file (a flood of
    /// one-file sessions makes `files` long).
    per_session: foldhash::HashMap<K, usize>,
    closed_bytes: u64,
    max_files: Option<u32>,
    max_total_bytes: Option<u64>,
    /// Deletions that failed (the file was not already gone).
    not_deleted: u64,
    /// Where a failed deletion is counted (`mirrorcap_errors_total{kind=
    /// "retention"}`) as it is logged; set by the writer that owns it.
    counters: Option<Arc<Counters>>,
    /// `[output.s3]`: uploaded files go first; a file deleted before its
    /// upload is counted as abandoned there.
    uploads: Option<Arc<Uploads>>,
}

impl<K> Default for Retention<K> {
    fn default() -> Self {
        Retention {
            root: None,
            files: VecDeque::new(),
            per_session: Default::default(),
            closed_bytes: 0,
            max_files: None,
            max_total_bytes: None,
            not_deleted: 0,
            counters: None,
            uploads: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Retention<K> {
    pub fn new(max_files: Option<u32>, max_total_bytes: Option<u64>) -> Retention<K> {
        Retention {
            max_files,
            max_total_bytes,
            ..Default::default()
        }
    }

    /// Failed deletions are counted in `counters` (and logged).
    pub fn counted_in(mut self, counters: Arc<Counters>) -> Retention<K> {
        self.counters = Some(counters);
        self
    }

    /// Files are deleted under `root` (the output directory), on their
    /// directory's descriptor, reached without following links.
    pub fn under(mut self, root: PathBuf) -> Retention<K> {
        self.root = Some(root);
        self
    }

    /// Deletions that failed so far (logged each time).
    pub fn not_deleted(&self) -> u64 {
        self.not_deleted
    }

    /// `[output.s3]`: files are uploaded; retention deletes uploaded ones
    /// first and tells `u` of the others it deletes. Files found at start
    /// that `u` is not to upload (uploaded and kept by an earlier run, or
    /// written with S3 off) count as uploaded: they go first, as they did
    /// before the restart. Call it after the uploader read its journal.
    pub fn set_uploads(&mut self, u: Arc<Uploads>) {
        for f in &mut self.files {
            if f.session.is_none() {
                f.uploaded = !u.is_pending(&f.path);
            }
        }
        self.uploads = Some(u);
    }

    /// Marks the files uploaded and kept (deleted first from now on), and
    /// forgets those the uploader deleted after their upload.
    fn note_uploads(&mut self) {
        let Some(u) = &self.uploads else { return };
        let (kept, gone) = u.take_uploaded();
        if kept.is_empty() && gone.is_empty() {
            return;
        }
        let kept: std::collections::HashSet<PathBuf> = kept.into_iter().collect();
        let gone: std::collections::HashSet<PathBuf> = gone.into_iter().collect();
        let mut i = 0;
        while i < self.files.len() {
            if gone.contains(&self.files[i].path) {
                self.forget_at(i);
                continue;
            }
            if kept.contains(&self.files[i].path) {
                self.files[i].uploaded = true;
            }
            i += 1;
        }
    }

    pub fn set_limits(&mut self, max_files: Option<u32>, max_total_bytes: Option<u64>) {
        self.max_files = max_files;
        self.max_total_bytes = max_total_bytes;
    }

    /// Adds the complete capture files found under the output directory
    /// at start (from earlier runs; see
    /// [`crate::output::recovery::recover_parts`], which walks the tree
    /// once), oldest first by modification time, so `max_total_bytes`
    /// counts them too.
    pub fn add_existing(&mut self, mut found: Vec<ExistingFile>) {
        found.sort_by(|a, b| (a.modified, &a.path, a.bytes).cmp(&(b.modified, &b.path, b.bytes)));
        for f in found {
            self.closed_bytes += f.bytes;
            self.files.push_back(ClosedFile {
                path: f.path,
                bytes: f.bytes,
                session: None,
                uploaded: false,
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
    /// the number of files deleted (not those that were already gone or
    /// could not be deleted: they leave the books all the same).
    pub fn add(&mut self, path: PathBuf, bytes: u64, session: K, open_bytes: u64) -> u64 {
        self.closed_bytes += bytes;
        self.files.push_back(ClosedFile {
            path,
            bytes,
            session: Some(session),
            uploaded: false,
        });
        // After the push: this file's upload may have been confirmed
        // already (the uploader runs on its own thread).
        self.note_uploads();
        *self.per_session.entry(session).or_default() += 1;
        let mut deleted = 0;
        if let Some(max) = self.max_files {
            while self.per_session.get(&session).copied().unwrap_or(0) > max as usize {
                // The session's uploaded files first, oldest first.
                let of_session = |f: &ClosedFile<K>| f.session == Some(session);
                let Some(i) = self
                    .files
                    .iter()
                    .position(|f| of_session(f) && f.uploaded)
                    .or_else(|| self.files.iter().position(of_session))
                else {
                    break;
                };
                deleted += u64::from(self.delete_at(i));
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
        self.note_uploads();
        let mut deleted = 0;
        while self.closed_bytes + open_bytes > max && !self.files.is_empty() {
            // Uploaded files (kept by `keep_local`) first, oldest first.
            let i = self.files.iter().position(|f| f.uploaded).unwrap_or(0);
            deleted += u64::from(self.delete_at(i));
        }
        deleted
    }

    /// Forgets the closed file at `i` and deletes it; whether it was.
    fn delete_at(&mut self, i: usize) -> bool {
        let Some(f) = self.forget_at(i) else {
            return false;
        };
        if let Some(u) = &self.uploads {
            u.deleted_by_retention(&f.path);
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
            Ok(()) => {
                tracing::debug!(path = %f.path.display(), "retention: deleted");
                true
            }
            Err(e) if e.io().is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => false,
            Err(e) => {
                self.not_deleted += 1;
                match &self.counters {
                    Some(c) => RetentionNotDeleted { error: &e }.emit(c),
                    None => tracing::warn!("retention: not deleted: {e}"),
                }
                false
            }
        }
    }

    /// Takes the closed file at `i` off the books (not from the disk).
    fn forget_at(&mut self, i: usize) -> Option<ClosedFile<K>> {
        let f = self.files.remove(i)?;
        self.closed_bytes -= f.bytes;
        if let Some(tag) = f.session
            && let Some(n) = self.per_session.get_mut(&tag)
        {
            *n -= 1;
            if *n == 0 {
                self.per_session.remove(&tag);
            }
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::counters::ErrorKind;

    /// A file retention cannot delete is not counted as deleted: it is
    /// counted (and logged) as a retention error; one already gone is
    /// neither.
    #[test]
    fn a_file_not_deleted_is_an_error_not_a_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let mut r: Retention<()> = Retention::new(Some(1), None)
            .under(dir.path().to_path_buf())
            .counted_in(counters.clone());
        // A directory in a file's place: unlink fails (EISDIR).
        let stuck = dir.path().join("a.pcap");
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("inside"), b"x").unwrap();
        let gone = dir.path().join("b.pcap");
        let kept = dir.path().join("c.pcap");
        std::fs::write(&kept, b"c").unwrap();
        assert_eq!(r.add(stuck.clone(), 1, (), 0), 0);
        assert_eq!(r.add(gone.clone(), 1, (), 0), 0, "a.pcap could not go");
        assert_eq!(r.not_deleted(), 1);
        assert_eq!(counters.errors(ErrorKind::Retention), 1);
        assert_eq!(r.add(kept.clone(), 1, (), 0), 0, "b.pcap was already gone");
        let last = dir.path().join("d.pcap");
        std::fs::write(&last, b"d").unwrap();
        assert_eq!(r.add(last, 1, (), 0), 1, "c.pcap deleted");
        assert!(!kept.exists());
        assert!(stuck.exists());
    }

    /// Issue 16, item 2: with `[output.s3]` and `keep_local`, retention
    /// deletes files already uploaded first, even when a file still
    /// waiting for its upload is older; a file it must delete before its
    /// upload is counted as abandoned (and its journal entry goes).
    #[test]
    fn retention_deletes_uploaded_files_first_and_counts_abandoned() {
        use std::sync::atomic::Ordering::Relaxed;
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let u = Arc::new(Uploads::for_test(tmp.path(), true, counters.clone()));
        let mut r: Retention<u32> = Retention::new(None, Some(300))
            .under(tmp.path().to_path_buf())
            .counted_in(counters.clone());
        r.set_uploads(u.clone());
        let file = |n: &str| {
            let p = tmp.path().join(n);
            std::fs::write(&p, [0u8; 100]).unwrap();
            p
        };
        let entry = |p: &PathBuf| {
            let e = u.record(p, &format!("k/{}", p.display())).unwrap();
            u.closed(e, 100);
        };
        // a: old and not uploaded; b, c: uploaded (kept locally).
        let (a, b, c) = (file("a.pcap"), file("b.pcap"), file("c.pcap"));
        for p in [&a, &b, &c] {
            entry(p);
            r.add(p.clone(), 100, 1, 0);
        }
        u.confirm(&b);
        u.confirm(&c);
        assert_eq!(counters.uploads.pending.load(Relaxed), 1);
        let d = file("d.pcap");
        assert_eq!(r.add(d.clone(), 100, 1, 0), 1);
        assert!(a.exists() && !b.exists() && c.exists());
        let e = file("e.pcap");
        r.add(e, 100, 1, 0);
        assert!(a.exists() && !c.exists());
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 0);
        // Nothing uploaded is left: the oldest, not uploaded, goes and is
        // counted; its journal entry with it.
        r.add(file("f.pcap"), 100, 1, 0);
        assert!(!a.exists());
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 1);
        assert_eq!(counters.uploads.pending.load(Relaxed), 0);
        assert!(u.journal.list().0.is_empty());
    }

    /// Review of issue 16: after a restart with `keep_local`, the files
    /// found on disk that are not waiting for an upload (uploaded and kept
    /// by the last run) still go first; they were all treated as not
    /// uploaded, so the oldest file, still waiting for its upload, went
    /// first and was lost (counted abandoned).
    #[test]
    fn retention_after_a_restart_deletes_uploaded_files_first() {
        use std::sync::atomic::Ordering::Relaxed;
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let u = Arc::new(Uploads::for_test(tmp.path(), true, counters.clone()));
        let found: Vec<ExistingFile> = ["waiting.pcap", "kept1.pcap", "kept2.pcap"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = tmp.path().join(n);
                std::fs::write(&p, [0u8; 100]).unwrap();
                ExistingFile {
                    path: p,
                    bytes: 100,
                    modified: Some(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(i as u64),
                    ),
                }
            })
            .collect();
        // The last run's journal: only `waiting.pcap` is still to upload.
        let e = u.record(&found[0].path, "k/waiting").unwrap();
        u.closed(e, 100);
        let mut r: Retention<u32> = Retention::new(None, Some(300))
            .under(tmp.path().to_path_buf())
            .counted_in(counters.clone());
        r.add_existing(found);
        r.set_uploads(u.clone());
        let new = tmp.path().join("new.pcap");
        std::fs::write(&new, [0u8; 100]).unwrap();
        assert_eq!(r.add(new, 100, 1, 0), 1);
        assert!(tmp.path().join("waiting.pcap").exists());
        assert!(!tmp.path().join("kept1.pcap").exists());
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 0);
    }

    /// Review of issue 16: `max_files` deletes a session's uploaded files
    /// before its oldest one still waiting for its upload (an S3 outage
    /// with `keep_local`): the waiting one went, though uploaded copies of
    /// newer ones could go at no loss.
    #[test]
    fn max_files_deletes_a_sessions_uploaded_files_first() {
        use std::sync::atomic::Ordering::Relaxed;
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let u = Arc::new(Uploads::for_test(tmp.path(), true, counters.clone()));
        let mut r: Retention<u32> = Retention::new(Some(2), None)
            .under(tmp.path().to_path_buf())
            .counted_in(counters.clone());
        r.set_uploads(u.clone());
        let mut paths = Vec::new();
        for n in ["a.pcap", "b.pcap", "c.pcap"] {
            let p = tmp.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            let e = u.record(&p, n).unwrap();
            u.closed(e, 1);
            paths.push(p);
        }
        r.add(paths[0].clone(), 1, 7, 0);
        r.add(paths[1].clone(), 1, 7, 0);
        u.confirm(&paths[1]);
        assert_eq!(r.add(paths[2].clone(), 1, 7, 0), 1);
        assert!(paths[0].exists() && !paths[1].exists() && paths[2].exists());
        assert_eq!(counters.uploads.abandoned.load(Relaxed), 0);
    }
}
