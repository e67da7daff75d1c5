//! Crash recovery at start: `.part` capture files left by an earlier run
//! are cut to their last whole record and renamed (or deleted when they
//! hold no record). In: the output directory. Out: the recovered files and
//! the closed capture files found, for retention. Nothing under the
//! directory is followed through a link.

use std::fs;
use std::path::{Path, PathBuf};

use crate::output::files::DIR_MODE;
use crate::output::outdir;
use crate::output::retention::ExistingFile;
use crate::telemetry::counters::Counters;
use crate::telemetry::events::RecoveryFailed;

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

impl Recovered {
    /// The file it names: the final path of a renamed file, the `.part`
    /// of a deleted one.
    pub fn path(&self) -> &Path {
        match self {
            Recovered::Renamed { path, .. } | Recovered::Deleted(path) | Recovered::Empty(path) => {
                path
            }
        }
    }
}

/// What the one walk of the output directory at start found and did.
#[derive(Debug, Default)]
pub struct StartScan {
    /// The `.part` files recovered, by path.
    pub recovered: Vec<Recovered>,
    /// The complete capture files now under the directory (those
    /// recovered included), for
    /// [`crate::output::retention::Retention::add_existing`].
    pub existing: Vec<ExistingFile>,
}

/// Recovered files logged one by one; the rest are summed up in one line.
pub(crate) const RECOVERY_LOG_LINES: usize = 20;

/// After a crash or power loss: every `*.part` file under `dir` (left by a
/// writer that did not close it) is cut to its last whole record and
/// renamed to its final name, so it opens without a warning; one with no
/// record is deleted. Runs before the writer starts, so no file of this
/// run can be mistaken for one. Links under `dir` are neither followed nor
/// touched: directories are listed by entry type (a link is not a
/// directory), and each file is opened, cut, renamed or deleted on its
/// directory's descriptor ([`crate::output::outdir`]). The same walk lists
/// the complete capture files, so the tree is walked once at start: the
/// result holds what was recovered (ordered by path) and every complete
/// capture file now there, for retention.
pub fn recover_parts(dir: &Path, counters: &Counters) -> StartScan {
    let mut parts = Vec::new();
    let mut existing = Vec::new();
    walk(dir, &mut parts, &mut existing);
    let mut recovered = Vec::new();
    for p in parts {
        if let Some(r) = recover_one(dir, &p, recovered.len() < RECOVERY_LOG_LINES, counters) {
            recovered.push(r);
        }
    }
    recovered.sort_by(|a, b| a.path().cmp(b.path()));
    if recovered.len() > RECOVERY_LOG_LINES {
        let renamed = recovered
            .iter()
            .filter(|r| matches!(r, Recovered::Renamed { .. }))
            .count();
        tracing::warn!(
            renamed,
            deleted = recovered.len() - renamed,
            "recovery: capture files left open by an earlier run (the first {RECOVERY_LOG_LINES} are logged above)"
        );
    }
    for r in &recovered {
        if let Recovered::Renamed { path, .. } = r
            && let Ok(md) = fs::symlink_metadata(path)
            && md.file_type().is_file()
        {
            // The walk may have met a file of that name already (the
            // rename replaced it): count it once.
            existing.retain(|f| f.path != *path);
            existing.push(ExistingFile {
                path: path.clone(),
                bytes: md.len(),
                modified: md.modified().ok(),
            });
        }
    }
    forget_uploads_of_deleted(dir, &recovered);
    StartScan {
        recovered,
        existing,
    }
}

/// `[output.s3]`: a `.part` deleted here held no record, so its upload
/// journal entry (made when it was created) has nothing to upload: it
/// goes, instead of counting at the uploader's start as a file lost
/// before its upload (`upload_abandoned`, which is for frames lost).
fn forget_uploads_of_deleted(dir: &Path, recovered: &[Recovered]) {
    let gone: std::collections::HashSet<PathBuf> = recovered
        .iter()
        .filter_map(|r| match r {
            Recovered::Deleted(p) | Recovered::Empty(p) => Some(p.with_extension("")),
            Recovered::Renamed { .. } => None,
        })
        .collect();
    if gone.is_empty()
        || !dir
            .join(crate::output::upload::journal::JOURNAL_DIR)
            .is_dir()
    {
        return;
    }
    let Ok(journal) = crate::output::upload::journal::Journal::open(dir) else {
        return;
    };
    for e in journal.list().0 {
        if gone.contains(&e.path) {
            let _ = journal.remove(&e.id);
        }
    }
}

/// Lists the capture `.part` files and the complete capture files under
/// `dir`. Links are not followed: directories are listed by entry type
/// (a link is not a directory) and sizes are `lstat`'s.
fn walk(dir: &Path, parts: &mut Vec<PathBuf>, existing: &mut Vec<ExistingFile>) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && is_capture(&p) {
                if let Ok(md) = e.metadata() {
                    existing.push(ExistingFile {
                        path: p,
                        bytes: md.len(),
                        modified: md.modified().ok(),
                    });
                }
            } else if t.is_file()
                && p.extension().is_some_and(|x| x == "part")
                && p.file_stem().map(Path::new).is_some_and(is_capture)
            {
                // Capture files only: a flow file's `.part` (under
                // `flows/`, `.log[.gz].part`) is not a capture and is left
                // alone.
                parts.push(p);
            }
        }
    }
}

/// A `*.pcap` or `*.pcapng` name.
fn is_capture(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|x| x.to_str()),
        Some("pcap" | "pcapng")
    )
}

pub(crate) fn recover_one(
    root: &Path,
    part: &Path,
    log: bool,
    counters: &Counters,
) -> Option<Recovered> {
    let failed = |what, error: &dyn std::fmt::Display| {
        RecoveryFailed {
            path: part,
            what,
            error,
        }
        .emit(counters);
        None
    };
    let final_path = part.with_extension("");
    let (dir, name) = match outdir::open_parent(root, part, false, DIR_MODE) {
        Ok(x) => x,
        Err(e) => return failed("cannot open", &e),
    };
    let file = match dir.open_file(name) {
        Ok(f) => f,
        Err(e) => return failed("cannot open", &e),
    };
    let delete = |what: &str, r: Recovered| match dir.unlink(name) {
        Ok(()) => {
            if log {
                tracing::warn!(path = %part.display(), "recovery: a capture file left open by an earlier run {what}; deleted");
            }
            Some(r)
        }
        Err(e) => failed("cannot delete", &e),
    };
    let reader = match file.try_clone() {
        Ok(f) => crate::capture::CaptureReader::new(f, "").ok(),
        Err(e) => return failed("cannot read", &e),
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
        return failed("cannot cut and rename", &e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::encode::{OutputFormat, RecordHeader, pcap_file_header};

    /// A pcap file with `records` records of 60 bytes, and `extra` bytes
    /// of a record cut short.
    fn pcap(records: usize, extra: usize) -> Vec<u8> {
        let mut b = Vec::new();
        pcap_file_header(&mut b, 65535);
        for _ in 0..records {
            let h = RecordHeader::new(OutputFormat::Pcap, 0, 60, 60);
            b.extend_from_slice(h.header());
            b.extend_from_slice(&[0u8; 60]);
        }
        b.extend(std::iter::repeat_n(7u8, extra));
        b
    }

    /// Review of issue 13: one walk at start recovers the `.part` capture
    /// files and lists every complete capture file for retention (those
    /// recovered included, each once, even where the rename replaced a
    /// file of that name); a flow file's `.part` is left alone; what was
    /// recovered is ordered by path.
    #[test]
    fn one_walk_recovers_and_lists_the_capture_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("1/10.0.0.1")).unwrap();
        std::fs::create_dir_all(d.join("flows")).unwrap();
        std::fs::write(d.join("1/10.0.0.1/a.pcap"), pcap(2, 0)).unwrap();
        std::fs::write(d.join("1/10.0.0.1/c.pcap.part"), pcap(3, 10)).unwrap();
        std::fs::write(d.join("1/10.0.0.1/b.pcap.part"), pcap(0, 0)).unwrap();
        std::fs::write(d.join("1/10.0.0.1/a.pcap.part"), pcap(1, 0)).unwrap();
        std::fs::write(d.join("flows/x.log.part"), b"flow").unwrap();

        let found = recover_parts(d, &Counters::default());

        let paths: Vec<&Path> = found.recovered.iter().map(Recovered::path).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(found.recovered.len(), 3);
        assert!(
            found
                .recovered
                .contains(&Recovered::Empty(d.join("1/10.0.0.1/b.pcap.part")))
        );
        let mut existing: Vec<(PathBuf, u64)> = found
            .existing
            .iter()
            .map(|f| (f.path.clone(), f.bytes))
            .collect();
        existing.sort();
        let one = pcap(1, 0).len() as u64;
        let three = pcap(3, 0).len() as u64;
        assert_eq!(
            existing,
            vec![
                (d.join("1/10.0.0.1/a.pcap"), one),
                (d.join("1/10.0.0.1/c.pcap"), three),
            ]
        );
        assert!(d.join("flows/x.log.part").exists());
        assert!(!d.join("1/10.0.0.1/b.pcap.part").exists());
    }

    /// Hostile run of issue 16: each SIGKILL counted the files opened just
    /// before it (no record yet: deleted here) as uploads abandoned, a
    /// loss that was not one. Their journal entries go with them; the
    /// entry of a file recovered with records stays.
    #[test]
    fn deleted_empty_parts_take_their_upload_entries_with_them() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("7/10.0.0.1")).unwrap();
        let empty = d.join("7/10.0.0.1/a.pcap");
        let full = d.join("7/10.0.0.1/b.pcap");
        std::fs::write(d.join("7/10.0.0.1/a.pcap.part"), pcap(0, 0)).unwrap();
        std::fs::write(d.join("7/10.0.0.1/b.pcap.part"), pcap(2, 5)).unwrap();
        let j = crate::output::upload::journal::Journal::open(d).unwrap();
        j.add(&empty, "k/a").unwrap();
        j.add(&full, "k/b").unwrap();
        let scan = recover_parts(d, &Counters::default());
        assert_eq!(scan.recovered.len(), 2);
        let left: Vec<PathBuf> = j.list().0.into_iter().map(|e| e.path).collect();
        assert_eq!(left, vec![full]);
    }
}
