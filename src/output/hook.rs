//! The `on_rotate` hook runner: a command per closed file, run without a
//! shell, at most `jobs` at once. In: closed files' paths. Out: child
//! processes, reaped by the writer thread. Dropped (counted as failed): a
//! file's command when the queue is full.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use crate::telemetry::counters::Counters;

/// `on_rotate`: a command run after each file is closed and renamed, like
/// `tcpdump -z`, without a shell. At most `jobs` run at once; the others
/// wait in a queue (at most [`HOOK_QUEUE`]; beyond it a file's command is
/// not run, and counted as failed). The writer thread only starts and reaps
/// them, so a slow upload never blocks capture.
#[derive(Debug, Default)]
pub struct RotateHook {
    pub(crate) argv: Vec<String>,
    pub(crate) jobs: usize,
    pub(crate) queue: VecDeque<Vec<String>>,
    pub(crate) running: Vec<(std::process::Child, String)>,
}

/// Most commands waiting for a free job.
pub const HOOK_QUEUE: usize = 10_000;

impl RotateHook {
    pub fn new(argv: Vec<String>, jobs: usize) -> RotateHook {
        RotateHook {
            argv,
            jobs: jobs.max(1),
            ..Default::default()
        }
    }

    pub(crate) fn queue_for(
        &mut self,
        path: &Path,
        vni_source: Option<&(u32, String)>,
        counters: &Counters,
    ) {
        if self.argv.is_empty() {
            return;
        }
        let (vni, source) = vni_source
            .map(|(v, s)| (v.to_string(), s.clone()))
            .unwrap_or_default();
        let path = path.to_string_lossy();
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{path}", &path)
                    .replace("{vni}", &vni)
                    .replace("{source}", &source)
            })
            .collect();
        if self.queue.len() >= HOOK_QUEUE {
            counters.hook_failures.fetch_add(1, Relaxed);
            tracing::error!(path = %path, "on_rotate: {HOOK_QUEUE} commands already waiting; not run for this file");
            return;
        }
        self.queue.push_back(argv);
        self.reap(counters);
    }

    /// Reaps finished commands and starts queued ones.
    pub(crate) fn reap(&mut self, counters: &Counters) {
        self.running
            .retain_mut(|(child, what)| match child.try_wait() {
                Ok(Some(status)) if status.success() => false,
                Ok(Some(status)) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: `{what}` failed: {status}");
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: `{what}`: {e}");
                    false
                }
            });
        while self.running.len() < self.jobs {
            let Some(argv) = self.queue.pop_front() else {
                break;
            };
            let what = argv.join(" ");
            counters.hook_runs.fetch_add(1, Relaxed);
            match std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => self.running.push((child, what)),
                Err(e) => {
                    counters.hook_failures.fetch_add(1, Relaxed);
                    tracing::error!("on_rotate: cannot start `{what}`: {e}");
                }
            }
        }
    }

    /// At shutdown: runs what is queued and waits up to 10 s for it.
    pub(crate) fn finish(&mut self, counters: &Counters) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (!self.running.is_empty() || !self.queue.is_empty())
            && std::time::Instant::now() < until
        {
            self.reap(counters);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !self.running.is_empty() || !self.queue.is_empty() {
            tracing::warn!(
                running = self.running.len(),
                queued = self.queue.len(),
                "on_rotate: commands still running or queued at shutdown are left as they are"
            );
        }
    }
}
