//! `mirrorcap replay`: capture files (or standard input) through the same
//! pipeline as the live daemon, waiting for the disk instead of dropping.
//! In: the validated config and the inputs in order. Out: the exit
//! [`Summary`], which inputs could not be read to their end, and what was
//! lost on output.

use std::sync::Arc;

use crate::capture::CaptureReader;
use crate::config::Config;
use crate::ingest::live::check_fd_limit;
use crate::output::files::{OutputDirError, check_output_dir};
use crate::output::handle::Backlog;
use crate::pipeline::{DropReason, Pipeline};
use crate::telemetry::counters::Counters;
use crate::telemetry::summary::Summary;

/// What a replay did.
pub struct ReplayOutcome {
    pub summary: Summary,
    /// Inputs that could not be opened or read to their end (what was read
    /// of them went through the pipeline); each was handed to the caller's
    /// `on_input_error` as it happened.
    pub inputs_failed: usize,
    /// Set when the writer thread died: nothing more could be written.
    pub writer_death: Option<String>,
    /// Frames and flow records that reached the writer and could not be
    /// written (`"12 disk_full"`, ...): the output misses them.
    pub lost: Vec<String>,
}

/// Replays `inputs` (`-` = standard input) in order into `cfg.dir`.
/// `on_input_error` gets the message of an input that cannot be opened or
/// read to its end when that happens (the next input is read after it).
pub fn run(
    cfg: &Config,
    inputs: &[String],
    mut on_input_error: impl FnMut(&str),
) -> Result<ReplayOutcome, OutputDirError> {
    // Held until the end: no other mirrorcap writes in this directory.
    let _dir_lock = check_output_dir(&cfg.dir)?;
    check_fd_limit(cfg.max_open_files);
    let counters = Arc::new(Counters::default());
    let mut pipeline = Pipeline::new(cfg, counters.clone(), Backlog::Wait);
    let ports = crate::ingest::replay::ReplayPorts::new(&cfg.vxlan_ports, &cfg.geneve_ports);
    let mut inputs_failed = 0;
    for input in inputs {
        // A file is mapped into memory (records are read in place); stdin
        // is read in 1 MiB blocks.
        let result = if input == "-" {
            CaptureReader::new(std::io::stdin().lock(), "<stdin>")
                .and_then(|mut r| crate::ingest::replay::replay(&mut r, &mut pipeline, &ports))
        } else {
            match std::fs::File::open(input) {
                Ok(f) => CaptureReader::open_file(f, input)
                    .and_then(|mut r| crate::ingest::replay::replay(&mut r, &mut pipeline, &ports)),
                Err(e) => {
                    inputs_failed += 1;
                    on_input_error(&format!("{input}: cannot open: {e}"));
                    continue;
                }
            }
        };
        if let Err(e) = result {
            inputs_failed += 1;
            on_input_error(&e.to_string());
        }
    }
    let summary = pipeline.finish();
    let lost = lost_on_output(&summary);
    Ok(ReplayOutcome {
        writer_death: counters.writer_death().map(str::to_owned),
        summary,
        inputs_failed,
        lost,
    })
}

/// Frames that reached the writer and could not be written: the output is
/// incomplete, whatever the inputs were.
fn lost_on_output(summary: &Summary) -> Vec<String> {
    summary
        .drops
        .iter()
        .filter(|(r, _)| {
            matches!(
                r,
                DropReason::DiskFull
                    | DropReason::WriteError
                    | DropReason::OutputSymlink
                    | DropReason::OpenFileLimit
                    | DropReason::SessionLimit
            )
        })
        .map(|(r, n)| format!("{n} {r}"))
        .chain(
            (summary.flow_records_lost > 0)
                .then(|| format!("{} flow records", summary.flow_records_lost)),
        )
        .collect()
}
