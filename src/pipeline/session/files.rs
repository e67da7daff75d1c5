//! The session table's file side: each frame queued in its session's
//! capture file, files opened (within the worker's share of
//! `max_open_files`), rotated by packets, size or time slot, and closed
//! when idle.
//!
//! In: a frame of a live session. Out: the frame appended to the file
//! through the writer thread ([`Output`](crate::output::handle::Output)).
//! Dropped and counted: a frame that needs a file when every file slot is
//! taken and no session may be evicted (`open_file_limit`), a frame the
//! writer could not take (`write_backlog`).

use crate::capture::encode::{RecordHeader, record_len};
use crate::config::OutputConfig;
use crate::output::template::PathFields;
use crate::pipeline::DropReason;

use super::state::CurrentFile;
use super::{Freed, SessionTable};

impl SessionTable {
    /// Queues one frame of session `i`, rotating first when a rule says so.
    /// When the frame needs a file and `max_open_files` are open, the least
    /// recently active session with a file may be evicted for it.
    pub fn write(
        &mut self,
        i: usize,
        ts_ns: u64,
        frame: &[u8],
        orig_len: usize,
        out: &OutputConfig,
        max_open_files: usize,
    ) {
        let slot = out
            .rotate_interval
            .map_or(0, |d| ts_ns / (d.as_nanos() as u64).max(1));
        let rec = record_len(out.format, frame.len());
        let rotate = self.sessions[i].file.as_ref().is_some_and(|f| {
            f.packets > 0
                && (out.rotate_packets.is_some_and(|n| f.packets >= n)
                    || out.rotate_size.is_some_and(|n| f.bytes + rec > n)
                    || (out.rotate_interval.is_some() && slot != f.slot))
        });
        if rotate {
            self.close(i);
        }
        if self.sessions[i].file.is_none() && !self.open_file(i, ts_ns, slot, out, max_open_files) {
            return;
        }
        let s = &mut self.sessions[i];
        let f = s.file.as_mut().expect("opened above");
        let h = RecordHeader::new(
            out.format,
            ts_ns,
            frame.len() as u32,
            orig_len.min(u32::MAX as usize) as u32,
        );
        let (tail, tail_len) = h.tail();
        match self
            .output
            .append(f.id, [h.header(), frame, &tail[..tail_len]], frame.len())
        {
            Ok(()) => {
                f.bytes += rec;
                f.packets += 1;
            }
            Err(reason) => self.counters.count_drop(reason),
        }
    }

    /// Opens a file for session `i`, whose packet at `ts_ns` is in time
    /// slot `slot`: in a free file slot, else one freed by evicting the
    /// least recently active session with a file. `false` (counted as
    /// `open_file_limit`) when there is none.
    fn open_file(
        &mut self,
        i: usize,
        ts_ns: u64,
        slot: u64,
        out: &OutputConfig,
        max_open_files: usize,
    ) -> bool {
        // `max_open_files` is this worker's share (the pipeline divides it
        // among the workers), so a flood steered to one worker never takes
        // another worker's slots: it can only evict its own sessions.
        let workers = self.workers.load(std::sync::atomic::Ordering::Relaxed);
        let share = (max_open_files / workers.max(1)).max(1);
        if self.files_open >= share {
            self.evict(ts_ns, true);
        }
        let reserved = self.files_open < share && self.counters.reserve_file(max_open_files);
        if !reserved {
            self.counters.count_drop(DropReason::OpenFileLimit);
            return false;
        }
        let s = &mut self.sessions[i];
        let fields = PathFields {
            vni: s.key.vni,
            source: s.key.source,
            start_ns: ts_ns,
            seq: s.seq,
            format: out.format,
            endpoint: s.key.endpoint,
        };
        let header = s.file_header(out);
        s.seq += 1;
        let bytes = header.len() as u64;
        let id = self.output.open(s.stats.clone(), fields, header);
        self.files_open += 1;
        s.file = Some(CurrentFile {
            id,
            bytes,
            packets: 0,
            slot,
        });
        if !s.protected {
            self.open.push_front(&mut self.open_links, i);
        }
        true
    }

    /// Closes session `i`'s file (the writer renames `.part` and applies
    /// retention).
    pub fn close(&mut self, i: usize) {
        if let Some(f) = self.sessions[i].file.take() {
            self.counters.release_file();
            self.files_open -= 1;
            if !self.sessions[i].protected {
                self.open.remove(&mut self.open_links, i);
            }
            self.output.close(f.id);
        }
    }

    /// Closes the file of every session whose last packet is older than
    /// the idle timeout at `now_ns`, and every file whose time slot has
    /// ended; frees the sessions with no datagram for the idle timeout;
    /// hands the writer what it has.
    pub fn close_idle(&mut self, now_ns: u64, out: &OutputConfig) {
        let idle_ns = out.idle_timeout.as_nanos() as u64;
        let slot_ns = out.rotate_interval.map(|d| (d.as_nanos() as u64).max(1));
        for i in 0..self.sessions.len() {
            let s = &self.sessions[i];
            if !s.live {
                continue;
            }
            if let Some(f) = &s.file {
                let idle = now_ns.saturating_sub(s.last_ns) >= idle_ns;
                let slot_over = slot_ns.is_some_and(|n| now_ns / n > f.slot);
                if idle || slot_over {
                    self.close(i);
                }
            }
            if now_ns.saturating_sub(self.sessions[i].seen_ns) >= idle_ns {
                self.free(i, Freed::Idle);
            }
        }
        self.output.flush_to_disk();
    }
}
