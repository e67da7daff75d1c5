//! `.part`-and-rename, shared by the capture writer and the flow writer: a
//! file is created as `<name>.part` in a directory held open (reached
//! without following links, [`crate::output::outdir`]), only whole records
//! are kept in it (a failed write is cut back), and it gets its final name
//! `<name>` by a rename on the directory's descriptor when closed.
//!
//! In: an open [`Dir`], a final file name, bytes. Out: the file on disk,
//! `.part` while written, `<name>` once published. Dropped: the bytes of a
//! write that failed (the file is cut back to its last whole record), and
//! a [`PartFile`] that holds no record when closed (deleted, not
//! published). The capture writer uses the primitives ([`create_part`],
//! [`cut_back`], [`publish`]) around its own file state; the flow writer
//! uses [`PartFile`], which holds that state itself.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::PathBuf;

use crate::output::outdir::{Dir, part_name};

/// Files are created with these permissions (re-exported by
/// [`crate::output::files`] with its `DIR_MODE`).
pub const FILE_MODE: u32 = 0o640;

/// Whether `name` or `<name>.part` is in `dir` (anything, a link
/// included): the name is taken. An error looking (EIO, EACCES) is an
/// error, not a name taken.
pub fn name_taken(dir: &Dir, name: &OsStr) -> io::Result<bool> {
    Ok(dir.exists(name)? || dir.exists(&part_name(name))?)
}

/// Creates `<name>.part` in `dir` for writing, mode [`FILE_MODE`]
/// (`O_EXCL | O_NOFOLLOW`: `AlreadyExists` when anything, a link
/// included, has that name).
pub fn create_part(dir: &Dir, name: &OsStr) -> io::Result<File> {
    dir.create_file(&part_name(name), FILE_MODE)
}

/// Cuts `file` back to `good_len` bytes (its last whole record) after a
/// failed write, and moves the write position there.
pub fn cut_back(file: &File, good_len: u64) {
    let _ = file.set_len(good_len);
    let _ = (&*file).seek(io::SeekFrom::Start(good_len));
}

/// Renames `<name>.part` to `<name>` in `dir` (a link named `<name>` is
/// replaced, not followed).
pub fn publish(dir: &Dir, name: &OsStr) -> io::Result<()> {
    dir.rename(&part_name(name), name)
}

/// One file being written as `<name>.part`: only whole records are in it.
/// Its directory is held open, so the rename and a deletion cannot be
/// redirected by a link planted meanwhile.
pub struct PartFile {
    dir: Dir,
    name: OsString,
    file: File,
    /// Bytes of whole records (what a failed write is cut back to).
    good_len: u64,
}

impl PartFile {
    /// Creates `<name>.part` in `dir` ([`create_part`]).
    pub fn create(dir: Dir, name: impl Into<OsString>) -> io::Result<PartFile> {
        let name = name.into();
        let file = create_part(&dir, &name)?;
        Ok(PartFile {
            dir,
            name,
            file,
            good_len: 0,
        })
    }

    /// The final path (once published).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// The path of the `.part` being written.
    pub fn part_path(&self) -> PathBuf {
        self.dir.path().join(part_name(&self.name))
    }

    /// Bytes of whole records in the file.
    pub fn good_len(&self) -> u64 {
        self.good_len
    }

    /// Appends `bytes` whole, or cuts the file back to where it was.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.good_len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                cut_back(&self.file, self.good_len);
                Err(e)
            }
        }
    }

    /// Deletes the `.part`, whatever it holds (a Parquet flow file whose
    /// write failed: without its footer no reader can open it).
    pub fn discard(self) {
        drop(self.file);
        let _ = self.dir.unlink(&part_name(&self.name));
    }

    /// Syncs the data and publishes the file under its final name; one
    /// with no record in it is deleted instead, and so is one that cannot
    /// be synced or renamed (its users, the flow files, count its records
    /// as lost and never recover a `.part`: it would only hold space).
    /// Returns the final path and size when published.
    pub fn close(self) -> io::Result<Option<(PathBuf, u64)>> {
        if self.good_len == 0 {
            self.discard();
            return Ok(None);
        }
        match self
            .file
            .sync_data()
            .and_then(|()| publish(&self.dir, &self.name))
        {
            Ok(()) => Ok(Some((self.path(), self.good_len))),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_part_file_is_published_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let root = || Dir::open_root(tmp.path(), false, 0).unwrap();
        let d = root();
        assert!(!name_taken(&d, OsStr::new("a.log")).unwrap());
        let mut f = PartFile::create(root(), "a.log").unwrap();
        assert!(name_taken(&d, OsStr::new("a.log")).unwrap());
        assert_eq!(f.part_path(), tmp.path().join("a.log.part"));
        f.append(b"one\n").unwrap();
        assert!(!tmp.path().join("a.log").exists());
        let (path, bytes) = f.close().unwrap().unwrap();
        assert_eq!(
            (path.as_path(), bytes),
            (tmp.path().join("a.log").as_path(), 4)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        assert!(!Path::new(&tmp.path().join("a.log.part")).exists());
        // Taken by the final name too; an empty one is deleted, not published.
        assert!(name_taken(&d, OsStr::new("a.log")).unwrap());
        let e = PartFile::create(root(), "b.log").unwrap();
        assert_eq!(e.close().unwrap(), None);
        assert!(!tmp.path().join("b.log").exists());
        assert!(!tmp.path().join("b.log.part").exists());
    }
}
