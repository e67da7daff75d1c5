//! Capture files on disk: the writer thread and its receive-side handle,
//! templates, retention, crash recovery, the sync thread and the
//! `on_rotate` hook ([`writer`]), and paths under the output directory
//! reached without following links ([`outdir`]).

pub mod outdir;
pub mod writer;
