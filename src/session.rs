//! Stage 5: mirror sessions. A session is (outer source address, VNI): in
//! AWS the source is the mirrored ENI's primary address and the VNI the
//! session's `VirtualNetworkId`. Two sessions from different sources may
//! share a VNI, so both are in the key.
//!
//! In: a decoded inner frame and the session key. Out: the frame in the
//! session's current capture file (opened, rotated and closed here, per the
//! `[output]` rules), and per-session counters for the summary.
//! Dropped and counted: frames the writer could not take (`write_backlog`;
//! `write_error` and `disk_full` are counted by the writer thread). State
//! is created per session, never per packet.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::OutputConfig;
use crate::decode::Decoded;
use crate::filter::{MirrorFilter, OwnAddresses};
use crate::format::{RecordHeader, pcap_file_header, pcapng_file_header, record_len};
use crate::metrics::{Counters, SessionSummary};
use crate::writer::{FileId, Output, PathFields};

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
    /// Packets and bytes, shared with the metrics endpoint.
    pub stats: Arc<crate::metrics::SessionStats>,
    /// Number of the next file (`{seq}`).
    seq: u32,
    file: Option<CurrentFile>,
    /// Timestamp of the last packet, for the idle timeout.
    pub last_ns: u64,
}

/// The session's open file, as the receive side tracks it for rotation.
struct CurrentFile {
    id: FileId,
    /// Bytes queued for it, header included.
    bytes: u64,
    packets: u64,
    /// Time slot (`ts / rotate_interval`) of its first packet.
    slot: u64,
}

impl Session {
    fn new(
        key: SessionKey,
        filter: Option<Arc<MirrorFilter>>,
        extra: Vec<IpNet>,
        stats: Arc<crate::metrics::SessionStats>,
    ) -> Session {
        Session {
            key,
            stats,
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
        }
    }

    pub fn count(&mut self, d: &Decoded, wire_len: usize, ts_ns: u64) {
        self.packets += 1;
        self.bytes += wire_len as u64;
        self.stats.add(wire_len as u64);
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

/// New sessions logged at info level per worker.
const LOGGED_SESSIONS: usize = 64;

/// Every session seen, and the files they write.
pub struct SessionTable {
    index: crate::fasthash::FastMap<SessionKey, usize>,
    sessions: Vec<Session>,
    /// The last key looked up: mirrored traffic comes in runs of one session.
    last: Option<(SessionKey, usize)>,
    output: Output,
    counters: Arc<Counters>,
}

impl SessionTable {
    /// A table for another worker, writing through the same writer thread.
    pub fn sibling(&self) -> SessionTable {
        SessionTable::new(self.output.sibling(), self.counters.clone())
    }

    pub fn new(output: Output, counters: Arc<Counters>) -> SessionTable {
        SessionTable {
            index: Default::default(),
            sessions: Vec::new(),
            last: None,
            output,
            counters,
        }
    }

    /// The index of the session for `key`; when new, it is created with
    /// the filter and addresses `config` gives.
    #[inline]
    pub fn lookup(
        &mut self,
        key: SessionKey,
        max_sessions: usize,
        config: impl FnOnce() -> (Option<Arc<MirrorFilter>>, Vec<IpNet>),
    ) -> Option<usize> {
        if let Some((k, i)) = self.last
            && k == key
        {
            return Some(i);
        }
        let next = self.sessions.len();
        if next >= max_sessions && !self.index.contains_key(&key) {
            return None;
        }
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            let (filter, extra) = config();
            let stats = self.counters.new_session(key.vni, key.source);
            self.sessions.push(Session::new(key, filter, extra, stats));
            // The first sessions are logged at info; after that at debug, so
            // a flood of new sources (spoofed or not) cannot flood the log.
            if self.sessions.len() <= LOGGED_SESSIONS {
                tracing::info!(
                    vni = key.vni,
                    source = %key.source,
                    worker = std::thread::current().name().unwrap_or("-"),
                    "new mirror session"
                );
                if self.sessions.len() == LOGGED_SESSIONS {
                    tracing::info!(
                        "{LOGGED_SESSIONS} sessions on this worker: further new sessions are logged at debug level"
                    );
                }
            } else {
                tracing::debug!(vni = key.vni, source = %key.source, "new mirror session");
            }
        }
        self.last = Some((key, i));
        Some(i)
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

    /// Queues one frame of session `i`, rotating first when a rule says so.
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
        if self.sessions[i].file.is_none() {
            let requested = &self.counters.files_requested;
            if requested.load(std::sync::atomic::Ordering::Relaxed) >= max_open_files as u64 {
                return self
                    .counters
                    .count_drop(crate::metrics::DropReason::OpenFileLimit);
            }
            requested.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let s = &mut self.sessions[i];
            let fields = PathFields {
                vni: s.key.vni,
                source: s.key.source,
                start_ns: ts_ns,
                seq: s.seq,
                format: out.format,
            };
            let mut header = Vec::with_capacity(256);
            match out.format {
                crate::format::OutputFormat::Pcap => pcap_file_header(&mut header, out.snaplen),
                crate::format::OutputFormat::Pcapng => pcapng_file_header(
                    &mut header,
                    out.snaplen,
                    &format!("vxlan-{}-{}", s.key.vni, s.key.source),
                    &format!(
                        "mirror session: VXLAN VNI {} from {}",
                        s.key.vni, s.key.source
                    ),
                ),
            }
            s.seq += 1;
            let bytes = header.len() as u64;
            let id = self.output.open(i, fields, header);
            s.file = Some(CurrentFile {
                id,
                bytes,
                packets: 0,
                slot,
            });
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

    /// Closes session `i`'s file (the writer renames `.part` and applies
    /// retention).
    pub fn close(&mut self, i: usize) {
        if let Some(f) = self.sessions[i].file.take() {
            self.counters
                .files_requested
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.sessions[i].files += 1;
            self.output.close(f.id);
        }
    }

    /// Closes the file of every session whose last packet is older than
    /// the idle timeout at `now_ns`, and every file whose time slot has
    /// ended; hands the writer what it has.
    pub fn close_idle(&mut self, now_ns: u64, out: &OutputConfig) {
        let idle_ns = out.idle_timeout.as_nanos() as u64;
        let slot_ns = out.rotate_interval.map(|d| (d.as_nanos() as u64).max(1));
        for i in 0..self.sessions.len() {
            let s = &self.sessions[i];
            let Some(f) = &s.file else { continue };
            let idle = now_ns.saturating_sub(s.last_ns) >= idle_ns;
            let slot_over = slot_ns.is_some_and(|n| now_ns / n > f.slot);
            if idle || slot_over {
                self.close(i);
            }
        }
        self.output.flush_to_disk();
    }

    /// A reloaded config: every open file is closed (the next packet opens
    /// one with the new output settings) and every session gets its filter
    /// and addresses again.
    pub fn reconfigure(
        &mut self,
        out: &OutputConfig,
        hook: crate::writer::RotateHook,
        mut config: impl FnMut(SessionKey) -> (Option<Arc<MirrorFilter>>, Vec<IpNet>),
    ) {
        for i in 0..self.sessions.len() {
            self.close(i);
            let s = &mut self.sessions[i];
            let (filter, extra) = config(s.key);
            s.filter = filter;
            s.own.extra = extra;
        }
        self.output.reconfigure(
            out.template.clone(),
            out.max_files,
            out.max_total_bytes,
            hook,
        );
        self.output.set_fsync(out.fsync);
        self.output.flush();
    }

    /// Closes every file and waits for the writer to finish.
    pub fn finish(mut self) -> Vec<SessionSummary> {
        for i in 0..self.sessions.len() {
            self.close(i);
        }
        self.output.finish();
        let mut v: Vec<_> = self.sessions.iter().map(Session::summary).collect();
        v.sort_by_key(|s| (s.vni, s.source));
        v
    }
}
