//! The pending-upload journal: one small JSON file per capture or flow
//! file that is to be uploaded, `DIR/.uploads/<id>.json`, holding the
//! file's path (relative to `DIR`), its S3 key and when it was recorded.
//! Written atomically (a `.tmp` then a rename) before the file is handed
//! to the uploader (for a capture file: when it is created, so a SIGKILL
//! while it is written still leaves the entry, and crash recovery gives
//! the file its final name); removed only after S3 confirmed the upload
//! and the local file was deleted (unless `keep_local`), or when
//! retention deleted the file first (counted as abandoned).
//!
//! So a restart re-uploads exactly what was pending, under the key
//! recorded here: a file is never stored under two keys, and uploading
//! it twice (a SIGKILL between S3's answer and the removal) writes the
//! same object again. In: paths and keys. Out: entries on disk. Entries
//! that cannot be read are logged, counted and left alone.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// The journal's folder under the output directory.
pub const JOURNAL_DIR: &str = ".uploads";

/// One pending upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's file name in the journal folder.
    pub id: String,
    /// The local file (absolute: the output directory joined with the
    /// relative path recorded).
    pub path: PathBuf,
    /// Its S3 key.
    pub key: String,
    /// Unix time (s) the entry was made.
    pub since: u64,
    /// The journal's folder.
    pub dir: PathBuf,
}

impl Entry {
    /// Puts the entry on disk (its file and its folder synced), for a
    /// capture file synced at its close (`[output] fsync`): after a power
    /// loss, a whole capture file then has its entry, and is uploaded.
    pub fn sync_to_disk(&self) -> io::Result<()> {
        match std::fs::File::open(self.dir.join(&self.id)) {
            Ok(f) => f.sync_all()?,
            // Gone: uploaded, or deleted by retention, already.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    path: PathBuf,
    key: String,
    since: u64,
}

/// The journal of one output directory.
#[derive(Debug)]
pub struct Journal {
    root: PathBuf,
    dir: PathBuf,
    next: AtomicU64,
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Journal {
    /// The journal under `root` (the output directory), its folder
    /// created if missing.
    pub fn open(root: &Path) -> io::Result<Journal> {
        let dir = root.join(JOURNAL_DIR);
        // As the output's folders and files: no other user reads the
        // paths and keys: at most 0750/0640, as they (a stricter umask still
        // applies; a folder made by an older version keeps its mode).
        std::os::unix::fs::DirBuilderExt::mode(
            std::fs::DirBuilder::new().recursive(true),
            crate::output::files::DIR_MODE,
        )
        .create(&dir)?;
        Ok(Journal {
            root: root.to_path_buf(),
            dir,
            next: AtomicU64::new(0),
        })
    }

    /// The output directory the entries' paths are under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The journal's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that `path` is to be uploaded as `key`.
    pub fn add(&self, path: &Path, key: &str) -> io::Result<Entry> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let since = unix_now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!(
            "{nanos}-{}-{}.json",
            std::process::id(),
            self.next.fetch_add(1, Relaxed)
        );
        let body = serde_json::to_vec(&OnDisk {
            path: rel.to_path_buf(),
            key: key.to_owned(),
            since,
        })
        .map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{id}.tmp"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::output::files::FILE_MODE)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&body))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(&id)));
        if let Err(e) = written {
            // A full disk: the cut `.tmp` goes now, not at the next start.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Entry {
            id,
            path: self.root.join(rel),
            key: key.to_owned(),
            since,
            dir: self.dir.clone(),
        })
    }

    /// Forgets an entry (already gone is fine).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every entry, oldest first; entries that cannot be read are
    /// returned apart, with why.
    pub fn list(&self) -> (Vec<Entry>, Vec<(PathBuf, String)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return (good, bad);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if name.ends_with(".tmp") {
                // An entry whose write was cut short: its file had not
                // been handed over yet, and its rename never happened.
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let read = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<OnDisk>(&b).map_err(|e| e.to_string()));
            match read {
                Ok(d) if !under_root(&d.path) => bad.push((
                    p,
                    format!(
                        "path {:?} is not a plain relative path under the output directory (no `..`, no root)",
                        d.path
                    ),
                )),
                Ok(d) => good.push(Entry {
                    id: name,
                    path: self.root.join(&d.path),
                    key: d.key,
                    since: d.since,
                    dir: self.dir.clone(),
                }),
                Err(why) => bad.push((p, why)),
            }
        }
        good.sort_by(|a, b| (a.since, &a.id).cmp(&(b.since, &b.id)));
        (good, bad)
    }
}

/// Whether `rel` stays under the directory it is joined to: relative,
/// its components plain names (no `..`, `.` or root). The journal is a
/// file anyone able to write under `DIR` could edit: an entry must not make
/// the uploader read (and delete) a file elsewhere.
fn under_root(rel: &Path) -> bool {
    rel.components().count() > 0
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_and_go_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path()).unwrap();
        let a = j
            .add(&tmp.path().join("7/10.0.0.1/a.pcap"), "k/a.pcap")
            .unwrap();
        let b = j
            .add(&tmp.path().join("7/10.0.0.1/b.pcap"), "k/b.pcap")
            .unwrap();
        std::fs::write(j.dir().join("cut.json.tmp"), b"{").unwrap();
        let j2 = Journal::open(tmp.path()).unwrap();
        let (list, bad) = j2.list();
        assert!(bad.is_empty());
        assert_eq!(list, vec![a.clone(), b.clone()]);
        assert!(!j.dir().join("cut.json.tmp").exists());
        j2.remove(&a.id).unwrap();
        j2.remove(&a.id).unwrap();
        assert_eq!(j2.list().0, vec![b]);
    }

    /// Hostile run of issue 16 (left then, mended since): the journal's
    /// folder and entries have the output's modes (0750, 0640) under the
    /// usual umask 022; they were 0755 and 0644 outside the unit.
    #[test]
    fn journal_entries_are_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let old = unsafe { libc::umask(0o022) };
        let j = Journal::open(tmp.path()).unwrap();
        let e = j.add(&tmp.path().join("7/a.pcap"), "k/a").unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(j.dir()), 0o750);
        assert_eq!(mode(&j.dir().join(&e.id)), 0o640);
    }

    /// Hostile run of issue 16: an entry naming `../secret.txt` made the
    /// uploader upload a file outside the output directory, then delete
    /// it. Such entries are refused (reported, left alone).
    #[test]
    fn entries_outside_the_output_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path()).unwrap();
        for (n, path) in [
            "../secret.txt",
            "a/../../b.pcap",
            "/etc/passwd",
            "./x/../..",
        ]
        .iter()
        .enumerate()
        {
            let body = format!("{{\"path\":{path:?},\"key\":\"k\",\"since\":1}}");
            std::fs::write(j.dir().join(format!("{n}.json")), body).unwrap();
        }
        j.add(&tmp.path().join("7/a.pcap"), "k/a").unwrap();
        let (good, bad) = j.list();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 4, "{bad:?}");
    }
}
