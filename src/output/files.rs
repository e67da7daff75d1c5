//! File operations of the writer: creating a capture file as `<path>.part`
//! (never through a link; the `.part` primitives are [`crate::output::part`]'s,
//! shared with the flow writer), appending at the end of its whole records and
//! cutting back after a failed write, renaming the `.part` to its final
//! name, and the start-up check of the output directory; with their error
//! types ([`WriterError`], [`OutputDirError`]). In: paths and bytes. Out:
//! files on disk. A write that fails is cut back, so a file keeps only
//! whole records.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};

use crate::output::outdir::{self, OutDirError};
use crate::output::part::{create_part, cut_back, publish};
use crate::output::template::{OutputTemplate, PathFields};
use crate::pipeline::DropReason;

/// Files are created with these permissions (defined with the `.part`
/// code), directories with [`DIR_MODE`].
pub use crate::output::part::FILE_MODE;
pub const DIR_MODE: u32 = 0o750;

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
    #[error(
        "output directory {path}: another mirrorcap (run or replay) writes in it (it holds a lock on the directory); give each its own `dir`"
    )]
    Busy { path: PathBuf },
    #[error("output directory {path}: cannot lock it: {source}")]
    Lock { path: PathBuf, source: io::Error },
}

/// A lock (`flock`) on the output directory, held while a daemon or a
/// replay writes in it: two writers in one directory would rename each
/// other's `.part` files at start (crash recovery), share retention, and
/// upload each other's journaled files.
#[derive(Debug)]
pub struct OutputDirLock {
    _dir: File,
}

/// Checks at start that capture files can be created under `dir`: creates
/// it (and its parents, mode [`DIR_MODE`]) when missing, then creates and
/// removes an empty probe file in it, and locks it ([`OutputDirLock`]).
/// So a `dir` that is a regular file, on a read-only file system or not writable by the daemon's user fails
/// before any socket is bound, naming it, instead of dropping every frame.
/// The probe is empty: a full disk still passes (capture resumes when space
/// returns), since creating an empty file needs no data block.
pub fn check_output_dir(dir: &Path) -> Result<OutputDirLock, OutputDirError> {
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
            lock_output_dir(dir)
        }
        Err(source) => Err(OutputDirError::Probe {
            path: dir.to_path_buf(),
            probe,
            source,
        }),
    }
}

fn lock_output_dir(dir: &Path) -> Result<OutputDirLock, OutputDirError> {
    let lock_err = |source| OutputDirError::Lock {
        path: dir.to_path_buf(),
        source,
    };
    let f = File::open(dir).map_err(lock_err)?;
    match f.try_lock() {
        Ok(()) => Ok(OutputDirLock { _dir: f }),
        Err(fs::TryLockError::WouldBlock) => Err(OutputDirError::Busy {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// Writes `iov` at the end of `file`, whose first `good_len` bytes are
/// whole records; `good_len` grows by what was written. On failure the
/// file is cut back to `good_len` and the error names `part`.
pub(crate) fn write_whole(
    file: &mut File,
    good_len: &mut u64,
    part: &Path,
    iov: &[IoSlice<'_>],
) -> Result<(), WriterError> {
    let total: usize = iov.iter().map(|s| s.len()).sum();
    let mut bufs: Vec<IoSlice> = iov.to_vec();
    let mut slices: &mut [IoSlice] = &mut bufs;
    let mut written = 0;
    while written < total {
        match file.write_vectored(slices) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Err(truncate_back(file, *good_len, part, e));
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(truncate_back(file, *good_len, part, e)),
        }
    }
    *good_len += total as u64;
    Ok(())
}

/// Cuts `file` back to its last whole record (`good_len`) after a failed
/// write; the error names `part`.
fn truncate_back(file: &File, good_len: u64, part: &Path, source: io::Error) -> WriterError {
    cut_back(file, good_len);
    WriterError::Write {
        path: part.to_path_buf(),
        source,
    }
}

/// Creates `<dir>/<rel>.part` (parents too), following no link below
/// `dir` (see [`crate::output::outdir`]): a link on the way is an error
/// ([`OutDirError::Link`]). When `<rel>` or its `.part` exists (a link
/// included), or `key_free` refuses the fields (`[output.s3]`: the S3
/// key is taken, [`crate::output::upload::Uploads::reserve_key`]), `seq`
/// is increased until the name is free.
pub(crate) fn create_file(
    dir: &Path,
    template: &OutputTemplate,
    fields: &mut PathFields,
    key_free: &mut dyn FnMut(&PathFields) -> bool,
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
        if taken || !key_free(fields) {
            fields.seq += 1;
            continue;
        }
        match create_part(&parent, name) {
            Ok(f) => return Ok((f, part, final_path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fields.seq += 1,
            Err(source) => return Err(WriterError::Create { path: part, source }),
        }
    }
}

/// Renames the `.part` of `final_path` (a file under `root`) to it, on
/// its directory's descriptor, reached without following links.
pub(crate) fn rename_part(root: &Path, part: &Path, final_path: &Path) -> Result<(), WriterError> {
    let (dir, _) = outdir::open_parent(root, part, false, DIR_MODE)?;
    let to = final_path.file_name().unwrap_or_default();
    publish(&dir, to).map_err(|source| WriterError::Rename {
        path: part.to_path_buf(),
        to: final_path.to_path_buf(),
        source,
    })
}
