//! Stage 5: mirror sessions. A session is (outer source address, VNI): in
//! AWS the source is the mirrored ENI's primary address and the VNI the
//! session's `VirtualNetworkId`. Two sessions from different sources may
//! share a VNI, so both are in the key.
//!
//! In: a decoded inner frame and the session key. Out: the frame in the
//! session's current capture file (opened, rotated and closed here, per the
//! `[output]` rules), and per-session counters for the summary.
//! Dropped and counted: frames that could not be written (`write_error`,
//! `disk_full`). State is created per session, never per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::OutputConfig;
use crate::decode::Decoded;
use crate::filter::{MirrorFilter, OwnAddresses};
use crate::metrics::{Counters, DropReason, LogLimiter, SessionSummary};
use crate::writer::{OpenFile, PathFields, Retention, WriterError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub source: IpAddr,
    pub vni: u32,
}

/// One mirror session's state.
pub struct Session {
    pub key: SessionKey,
    pub packets: u64,
    /// Bytes of the inner frames as sent (original length).
    pub bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
    /// Files this session has closed.
    pub files: u64,
    /// The filter that applies to this session (`[[session]]`'s, else
    /// `[filter]`'s), and the ENI's addresses, for direction.
    pub filter: Option<Arc<MirrorFilter>>,
    pub own: OwnAddresses,
    /// Number of the next file (`{seq}`).
    seq: u32,
    file: Option<OpenFile>,
    /// Timestamp of the last packet, for the idle timeout.
    pub last_ns: u64,
    /// After a failed open, no new attempt before this packet time, so a
    /// broken output costs one syscall per second, not one per packet.
    retry_after_ns: u64,
}

impl Session {
    fn new(key: SessionKey, filter: Option<Arc<MirrorFilter>>, extra: Vec<IpNet>) -> Session {
        Session {
            key,
            filter,
            own: OwnAddresses {
                outer: key.source,
                extra,
            },
            packets: 0,
            bytes: 0,
            ipv4: 0,
            ipv6: 0,
            tcp: 0,
            udp: 0,
            other: 0,
            files: 0,
            seq: 0,
            file: None,
            last_ns: 0,
            retry_after_ns: 0,
        }
    }

    pub fn count(&mut self, d: &Decoded, wire_len: usize, ts_ns: u64) {
        self.packets += 1;
        self.bytes += wire_len as u64;
        self.last_ns = self.last_ns.max(ts_ns);
        match d.ip {
            Some(ip) => {
                if ip.src.is_ipv4() {
                    self.ipv4 += 1
                } else {
                    self.ipv6 += 1
                }
                match ip.protocol {
                    crate::decode::PROTO_TCP => self.tcp += 1,
                    crate::decode::PROTO_UDP => self.udp += 1,
                    _ => self.other += 1,
                }
            }
            None => self.other += 1,
        }
    }

    pub fn open_bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.bytes)
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            vni: self.key.vni,
            source: self.key.source,
            packets: self.packets,
            bytes: self.bytes,
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            tcp: self.tcp,
            udp: self.udp,
            other: self.other,
            files: self.files,
        }
    }
}

/// Every session seen, and the files they write.
pub struct SessionTable {
    index: HashMap<SessionKey, usize>,
    sessions: Vec<Session>,
    /// The last key looked up: mirrored traffic comes in runs of one session.
    last: Option<(SessionKey, usize)>,
    pub retention: Retention,
    /// Sum of the sizes of every open file, for `max_total_bytes`.
    open_bytes: u64,
    error_log: LogLimiter,
}

/// Nanoseconds in a second.
const NS: u64 = 1_000_000_000;

impl SessionTable {
    pub fn new(retention: Retention) -> SessionTable {
        SessionTable {
            index: HashMap::new(),
            sessions: Vec::new(),
            last: None,
            retention,
            open_bytes: 0,
            error_log: LogLimiter::new(std::time::Duration::from_secs(10)),
        }
    }

    /// The index of the session for `key`; when new, it is created with
    /// the filter and addresses `config` gives.
    #[inline]
    pub fn lookup(
        &mut self,
        key: SessionKey,
        config: impl FnOnce() -> (Option<Arc<MirrorFilter>>, Vec<IpNet>),
    ) -> usize {
        if let Some((k, i)) = self.last
            && k == key
        {
            return i;
        }
        let next = self.sessions.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            let (filter, extra) = config();
            self.sessions.push(Session::new(key, filter, extra));
            tracing::info!(vni = key.vni, source = %key.source, "new mirror session");
        }
        self.last = Some((key, i));
        i
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Session {
        &mut self.sessions[i]
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Writes one frame of session `i`, rotating first when a rule says so.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        i: usize,
        ts_ns: u64,
        frame: &[u8],
        orig_len: usize,
        out: &OutputConfig,
        dir: &Path,
        counters: &Counters,
    ) {
        let slot = out
            .rotate_interval
            .map_or(0, |d| ts_ns / (d.as_nanos() as u64).max(1));
        let rec = crate::writer::record_len(out.format, frame.len());
        let rotate = match &self.sessions[i].file {
            None => false,
            Some(f) => {
                f.packets > 0
                    && (out.rotate_packets.is_some_and(|n| f.packets >= n)
                        || out.rotate_size.is_some_and(|n| f.bytes + rec > n)
                        || (out.rotate_interval.is_some() && slot != f.slot))
            }
        };
        if rotate {
            self.close(i, counters);
        }
        if self.sessions[i].file.is_none() {
            let s = &mut self.sessions[i];
            if ts_ns < s.retry_after_ns {
                counters.count_drop(DropReason::WriteError);
                return;
            }
            let mut fields = PathFields {
                vni: s.key.vni,
                source: s.key.source,
                start_ns: ts_ns,
                seq: s.seq,
                format: out.format,
            };
            match OpenFile::create(dir, &out.template, &mut fields, out.snaplen, slot) {
                Ok(f) => {
                    s.seq = fields.seq + 1;
                    tracing::debug!(path = %f.final_path().display(), "opened");
                    self.open_bytes += f.bytes;
                    s.file = Some(f);
                    counters
                        .files_opened
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    s.retry_after_ns = ts_ns.saturating_add(NS);
                    self.fail(e, counters);
                    return;
                }
            }
        }
        let s = &mut self.sessions[i];
        let f = s.file.as_mut().expect("opened above");
        let before = f.bytes;
        match f.write_record(ts_ns, frame, orig_len.min(u32::MAX as usize) as u32) {
            Ok(()) => {
                self.open_bytes += f.bytes - before;
                counters.written(frame.len());
                if self.retention.max_total_bytes_set() {
                    let deleted = self.retention.enforce_total(self.open_bytes);
                    counters
                        .files_deleted
                        .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                // The buffered writer's state is unknown after a failed
                // write: give the file up (its .part stays for recovery)
                // and start a new one on the next packet.
                let f = s.file.take().expect("present");
                self.open_bytes -= f.bytes;
                s.retry_after_ns = ts_ns.saturating_add(NS);
                drop(f);
                self.fail(e, counters);
            }
        }
    }

    fn fail(&mut self, e: WriterError, counters: &Counters) {
        let reason = if e.is_disk_full() {
            DropReason::DiskFull
        } else {
            DropReason::WriteError
        };
        counters.count_drop(reason);
        if let Some(held) = self.error_log.allow() {
            tracing::error!(error = %e, held_back = held, "cannot write capture file; frames are dropped and counted as {reason}");
        }
    }

    /// Closes session `i`'s file (rename `.part`), then applies retention.
    pub fn close(&mut self, i: usize, counters: &Counters) {
        let Some(f) = self.sessions[i].file.take() else {
            return;
        };
        self.open_bytes -= f.bytes;
        match f.close() {
            Ok((path, bytes)) => {
                tracing::debug!(path = %path.display(), bytes, "closed");
                self.sessions[i].files += 1;
                counters
                    .files_closed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let deleted = self.retention.add(path, bytes, i, self.open_bytes);
                counters
                    .files_deleted
                    .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => self.fail(e, counters),
        }
    }

    /// Closes the file of every session whose last packet is older than
    /// `idle_ns` at `now_ns`, and every file whose time slot has ended.
    pub fn close_idle(&mut self, now_ns: u64, out: &OutputConfig, counters: &Counters) {
        let idle_ns = out.idle_timeout.as_nanos() as u64;
        let slot_ns = out.rotate_interval.map(|d| (d.as_nanos() as u64).max(1));
        for i in 0..self.sessions.len() {
            let s = &self.sessions[i];
            let Some(f) = &s.file else { continue };
            let idle = now_ns.saturating_sub(s.last_ns) >= idle_ns;
            let slot_over = slot_ns.is_some_and(|n| now_ns / n > f.slot);
            if idle || slot_over {
                self.close(i, counters);
            }
        }
    }

    /// Closes every open file.
    pub fn close_all(&mut self, counters: &Counters) {
        for i in 0..self.sessions.len() {
            self.close(i, counters);
        }
    }

    pub fn summaries(&self) -> Vec<SessionSummary> {
        let mut v: Vec<_> = self.sessions.iter().map(Session::summary).collect();
        v.sort_by_key(|s| (s.vni, s.source));
        v
    }
}
