//! Crash recovery at start: `.part` capture files left by an earlier run
//! are cut to their last whole record and renamed (or deleted when they
//! hold no record). In: the output directory. Out: the recovered files and
//! the closed capture files found, for retention. Nothing under the
//! directory is followed through a link.

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
use crate::output::chunk::*;
use crate::output::disk::*;
use crate::output::files::*;
use crate::output::handle::*;
use crate::output::hook::*;
use crate::output::retention::*;
use crate::output::template::*;

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
pub(crate) const RECOVERY_LOG_LINES: usize = 20;

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

pub(crate) fn recover_one(root: &Path, part: &Path, log: bool) -> Option<Recovered> {
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

