//! Stage 6: capture files on disk. The receive loop hands encoded records
//! to a writer thread, which owns every file, so opening, writing,
//! renaming and deleting never stall the receive loop.
//!
//! In (receive side, [`handle::Output`]): `open` a file for a session, `append`
//! records to it, `close` it; each call only copies bytes into a chunk or
//! queues a command. Out (writer thread): files under the output directory
//! at the path the [`template::OutputTemplate`] gives. A file being written is named
//! `<path>.part` and renamed to `<path>` when closed, so every `*.pcap` /
//! `*.pcapng` on disk is complete; with `[output] fsync` (the default) a
//! third thread `fdatasync`s the closed file first and reports back, so the
//! rename waits for the disk and nothing else does.
//!
//! Memory is bounded whatever the number of sessions: records travel in
//! chunks ([`handle::CHUNK_LEN`] each, a fixed pool of them). The first
//! [`handle::MAX_LANES`] files written to after each flush get a chunk of their own
//! (a lane: the whole chunk is one run, written with one `write`, even when
//! sessions interleave packet by packet); further files share one chunk,
//! where consecutive records of a file form a run, and the writer thread
//! writes long runs straight to their file and stages short ones per file,
//! within [`disk::STAGING_BUDGET`] shared by the open files, so a file is written
//! in large writes either way. When the disk is slower than
//! the traffic and no chunk is free, the live daemon drops the record and
//! counts it (`write_backlog`) instead of blocking the socket; replay waits.
//! A chunk that is not full is sent once a second, so files are at most
//! about a second behind.
//!
//! Retention also runs in the writer thread: `max_files` closed files per
//! session and `max_total_bytes` under the output directory (closed files
//! of this and earlier runs, the open ones, those being synced and the
//! records staged for them); before each write the oldest closed files are
//! deleted until the write fits, so the limit holds while running unless
//! the open files alone exceed it. A write that fails (disk full, I/O
//! error) drops that chunk's records for the file and truncates it back to
//! its last whole record, so every file stays readable; later chunks are
//! tried again, so writing resumes when space returns.
//!
//! Below the output directory no symbolic link is followed: directories,
//! files, renames and deletions go through [`crate::output::outdir`]; a file whose
//! path meets a link is not created, and its frames are dropped and counted
//! as `output_symlink`.
//!
//! A writer thread that dies (a panic) is caught: it counts what it held
//! as lost, marks the counters (health 503 for good, see
//! [`crate::telemetry::counters::Counters::writer_died`]; `run` then stops with exit code 2), and from
//! then on counts every frame sent to it as `write_error` and answers
//! `Finish`, so the receive side neither blocks nor loses count.
//!
//! One module per job: [`template`] (paths and calendar), [`chunk`] (run
//! framing), [`handle`] (the receive side), [`disk`] (the writer thread),
//! [`files`] (create, write, cut back, rename, and their errors),
//! [`part`] (`.part`-and-rename, shared with the flow writer),
//! [`retention`] (also the flow files'), [`recovery`] (crash recovery at
//! start), [`hook`] (`on_rotate`), [`outdir`] (paths under the output
//! directory reached without following links), and [`store`] (the files
//! read back by session and time, for `extract`; [`store_s3`] the same
//! from an S3 prefix the uploader filled).

pub mod chunk;
pub mod disk;
pub mod files;
pub mod handle;
pub mod hook;
pub mod outdir;
pub mod part;
pub mod recovery;
pub mod retention;
pub mod store;
pub mod store_s3;
pub mod template;
pub mod upload;
