//! Paths under the output directory, reached without following symbolic
//! links.
//!
//! In: the output directory `dir` and paths under it (as the output
//! template builds them). Out: open directories ([`Dir`]) and files, and
//! renames and deletions done on a directory's descriptor. `dir` itself is
//! opened as given, links and all (operators point `/var/lib/mirrorcap` at
//! a data disk that way); below it each directory is opened one component
//! at a time with `openat(O_DIRECTORY | O_NOFOLLOW)` (created with
//! `mkdirat` when asked), files are created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, and renames and deletions use
//! `renameat` / `unlinkat` on the parent's descriptor. So a link planted
//! anywhere under `dir` (by whoever can write there) cannot redirect a
//! write, a rename or a deletion, even when it appears between two calls.
//! Finding one is an error, [`OutDirError::Link`], naming it; the callers
//! count and log it.
//!
//! Plain `libc` calls, as the rest of the crate uses: one `openat` per
//! path component, on the rare path (opening, renaming or deleting a file),
//! never per packet.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// Errors reaching a path under the output directory.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error(
        "{path}: is a symbolic link; mirrorcap never follows a link under the output directory \
         (remove it; only `dir` itself may be a link)"
    )]
    Link { path: PathBuf },
    #[error("{path}: cannot {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

impl OutDirError {
    /// The system error behind it, if any.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            OutDirError::Link { .. } => None,
            OutDirError::Io { source, .. } => Some(source),
        }
    }
}

/// An open directory under (or at) the output directory, and its path for
/// messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Dir {
    /// Opens `dir` itself, following links in its own path; with `create`,
    /// creates it (and its parents) with `mode` first.
    pub fn open_root(dir: &Path, create: bool, mode: u32) -> Result<Dir, OutDirError> {
        let io_err = |what, source| OutDirError::Io {
            path: dir.to_path_buf(),
            what,
            source,
        };
        if create {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|e| io_err("create directory", e))?;
        }
        let c = c_name(dir.as_os_str()).map_err(|e| io_err("open directory", e))?;
        // SAFETY: a valid C string; the descriptor returned is ours.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| io_err("open directory", e))?;
        Ok(Dir {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `rel` (relative, `Normal` components only) under
    /// this one, one component at a time, never following a link; with
    /// `create`, missing directories are made with `mode`. An empty `rel`
    /// gives this directory again.
    pub fn sub(&self, rel: &Path, create: bool, mode: u32) -> Result<Dir, OutDirError> {
        let mut cur: Option<Dir> = None;
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(OutDirError::Io {
                    path: self.path.join(rel),
                    what: "open directory",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "only plain names are allowed under the output directory",
                    ),
                });
            };
            let next = cur.as_ref().unwrap_or(self).child_dir(name, create, mode)?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => Ok(Dir {
                fd: self.fd.try_clone().map_err(|source| OutDirError::Io {
                    path: self.path.clone(),
                    what: "open directory",
                    source,
                })?,
                path: self.path.clone(),
            }),
        }
    }

    fn child_dir(&self, name: &OsStr, create: bool, mode: u32) -> Result<Dir, OutDirError> {
        let path = self.path.join(name);
        let io_err = |what, source| OutDirError::Io {
            path: path.clone(),
            what,
            source,
        };
        let c = c_name(name).map_err(|e| io_err("open directory", e))?;
        let mut made = false;
        loop {
            // SAFETY: a valid descriptor and C string.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                return Ok(Dir {
                    // SAFETY: just opened, owned by nothing else.
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    path,
                });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOENT) if create && !made => {
                    made = true;
                    // SAFETY: a valid descriptor and C string.
                    let r = unsafe {
                        libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t)
                    };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(io_err("create directory", e));
                        }
                    }
                }
                // O_NOFOLLOW on a link gives ELOOP; say which it is.
                Some(libc::ELOOP) | Some(libc::ENOTDIR) if self.is_link(&c) => {
                    return Err(OutDirError::Link { path });
                }
                _ => return Err(io_err("open directory", e)),
            }
        }
    }

    /// Whether `name` in this directory is a symbolic link (not followed).
    fn is_link(&self, name: &CString) -> bool {
        self.lstat(name)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    }

    fn lstat(&self, name: &CString) -> io::Result<libc::stat> {
        // SAFETY: `stat` is plain data; fstatat fills it on success.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        cvt(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    /// Whether anything (a file, a directory, a link, dangling or not) is
    /// named `name` here.
    pub fn exists(&self, name: &OsStr) -> io::Result<bool> {
        match self.lstat(&c_name(name)?) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the file `name` for writing (`O_EXCL`: fails with
    /// `AlreadyExists` when anything, a link included, has that name).
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let c = c_name(name)?;
        // SAFETY: a valid descriptor and C string; the descriptor is ours.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Opens the existing file `name` for reading and writing; a link
    /// there is an error.
    pub fn open_file(&self, name: &OsStr) -> Result<File, OutDirError> {
        let path = self.path.join(name);
        let c = c_name(name).map_err(|source| OutDirError::Io {
            path: path.clone(),
            what: "open",
            source,
        })?;
        // SAFETY: a valid descriptor and C string; the descriptor is ours.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::ELOOP) && self.is_link(&c) {
                return Err(OutDirError::Link { path });
            }
            return Err(OutDirError::Io {
                path,
                what: "open",
                source,
            });
        }
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Renames `from` to `to`, both in this directory (a link named `to`
    /// is replaced, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: valid descriptors and C strings.
        cvt(unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) }).map(drop)
    }

    /// Deletes the file (or link) `name` in this directory.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: a valid descriptor and C string.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }
}

/// `name` with `.part` appended.
pub fn part_name(name: &OsStr) -> OsString {
    let mut v = name.as_bytes().to_vec();
    v.extend_from_slice(b".part");
    OsString::from_vec(v)
}

/// The parent directory of `path`, a file under `root`, opened without
/// following links below `root` (created when `create`), and the file's
/// name.
pub fn open_parent<'a>(
    root: &Path,
    path: &'a Path,
    create: bool,
    mode: u32,
) -> Result<(Dir, &'a OsStr), OutDirError> {
    let not_under = || OutDirError::Io {
        path: path.to_path_buf(),
        what: "reach",
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a file under the output directory {}", root.display()),
        ),
    };
    let rel = path.strip_prefix(root).map_err(|_| not_under())?;
    let name = rel.file_name().ok_or_else(not_under)?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = Dir::open_root(root, create, mode)?.sub(parent, create, mode)?;
    Ok((dir, name))
}

/// Deletes `path`, a file under `root`, without following a link below
/// `root` to reach it.
pub fn unlink_under(root: &Path, path: &Path) -> Result<(), OutDirError> {
    let (dir, name) = open_parent(root, path, false, 0)?;
    dir.unlink(name).map_err(|source| OutDirError::Io {
        path: path.to_path_buf(),
        what: "delete",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_below_root_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("f.pcap"), b"keep").unwrap();
        symlink(&elsewhere, root.join("a/b")).unwrap();

        // Creating through the link, and below it.
        let r = Dir::open_root(&root, true, 0o750)
            .unwrap()
            .sub(Path::new("a/b/c"), true, 0o750);
        match r {
            Err(OutDirError::Link { path }) => assert_eq!(path, root.join("a/b")),
            other => panic!("{other:?}"),
        }
        assert!(!elsewhere.join("c").exists());
        // Deleting through it.
        match unlink_under(&root, &root.join("a/b/f.pcap")) {
            Err(OutDirError::Link { path }) => assert_eq!(path, root.join("a/b")),
            other => panic!("{other:?}"),
        }
        assert!(elsewhere.join("f.pcap").exists());
        // A link as the file itself: not opened, and `create_file` refuses
        // the name (O_EXCL).
        let a = Dir::open_root(&root, false, 0)
            .unwrap()
            .sub(Path::new("a"), false, 0)
            .unwrap();
        symlink(elsewhere.join("f.pcap"), root.join("a/g.pcap")).unwrap();
        assert!(matches!(
            a.open_file(OsStr::new("g.pcap")),
            Err(OutDirError::Link { .. })
        ));
        let e = a.create_file(OsStr::new("g.pcap"), 0o640).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(a.exists(OsStr::new("g.pcap")).unwrap());
        // Renaming onto a link replaces the link, not its target.
        a.create_file(OsStr::new("h.part"), 0o640).unwrap();
        a.rename(OsStr::new("h.part"), OsStr::new("g.pcap"))
            .unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("a/g.pcap"))
                .unwrap()
                .is_file()
        );
        assert_eq!(std::fs::read(elsewhere.join("f.pcap")).unwrap(), b"keep");
        // The root itself may be a link.
        let root_link = tmp.path().join("root-link");
        symlink(&root, &root_link).unwrap();
        let y = root_link.join("x/y.pcap");
        let (d, name) = open_parent(&root_link, &y, true, 0o750).unwrap();
        d.create_file(name, 0o640).unwrap();
        assert!(root.join("x/y.pcap").exists());
        unlink_under(&root_link, &root_link.join("x/y.pcap")).unwrap();
        assert!(!root.join("x/y.pcap").exists());
    }
}
