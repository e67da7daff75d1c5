//! `mirrorcap extract`: one time-ordered capture of some sessions, a time
//! window and a libpcap filter, out of the files of several stores (the
//! output directories of several mirror targets behind a load balancer).
//!
//! In: stores ([`Store`]), the selection and the output format. Out: one
//! pcap (ns, Ethernet) or pcapng (one interface per session) stream, and
//! [`ExtractStats`]. The files worth opening are chosen by name
//! ([`choose`]); then a k-way merge by timestamp over one cursor per
//! (store, writer, session) — a session's files are read one after the other, so
//! at most one file per cursor is open and memory is one record per
//! cursor, whatever the files' size. Ties keep input order (store, then
//! session, then file). Each record is kept when `from <= ts < to` and
//! the filter matches; a file is read no further than its first record at
//! or past `to`. Dropped and reported: a file that cannot be opened or
//! read to its end (named with the byte offset; what was read of it is
//! used), except the unfinished last record of a `.part` (being written).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Write};

use crate::capture::CaptureError;
use crate::capture::encode::{
    LINKTYPE_ETHERNET, OutputFormat, RecordHeader, pcap_file_header, pcapng_interface,
    pcapng_section_header, session_interface,
};
use crate::config::MAX_SNAPLEN;
use crate::filter::bpf::{Bpf, BpfError};
use crate::output::store::{FileReader, Selection, SessionKey, Store, StoreFile, choose};

/// What to extract and how to write it.
#[derive(Debug)]
pub struct ExtractOptions {
    pub selection: Selection,
    /// A tcpdump expression on the frames.
    pub filter: Option<String>,
    pub format: OutputFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("--filter: {0}")]
    Filter(#[from] BpfError),
    #[error("writing the capture: {0}")]
    Output(io::Error),
}

/// What an extract did (`--stats`).
#[derive(Debug, Default, Clone)]
pub struct ExtractStats {
    /// Files of the selected sessions the stores listed.
    pub files_considered: u64,
    /// Files whose time range meets the window.
    pub files_chosen: u64,
    pub files_opened: u64,
    /// Bytes read from the files opened (headers included).
    pub bytes_read: u64,
    pub records_read: u64,
    pub records_written: u64,
    /// Stores, folders and files that could not be listed, opened or read
    /// to their end (each was reported).
    pub inputs_failed: u64,
    /// The output's reader went away (EPIPE): extraction stopped there.
    pub reader_gone: bool,
}

/// A session's files in one store, read one after the other, and the
/// record at its head.
struct Cursor<'s> {
    store: &'s dyn Store,
    session: SessionKey,
    files: std::vec::IntoIter<StoreFile>,
    file: Option<(StoreFile, FileReader)>,
    /// The head record: timestamp, original length, bytes (a copy: the
    /// reader's buffer moves on).
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
    /// pcapng interface of the session, once it has written a record.
    interface: Option<u32>,
}

impl Cursor<'_> {
    /// Moves to the next record in the window; `false` when the session's
    /// files are done.
    fn advance(
        &mut self,
        sel: &Selection,
        stats: &mut ExtractStats,
        on_error: &mut dyn FnMut(&str),
    ) -> bool {
        loop {
            let Some((f, r)) = &mut self.file else {
                let Some(f) = self.files.next() else {
                    return false;
                };
                match self.store.open(&f) {
                    Ok(r) => {
                        stats.files_opened += 1;
                        self.file = Some((f, r));
                    }
                    // A `.part` just created: its header not whole yet.
                    Err(CaptureError::Truncated { .. }) if f.part => {}
                    Err(CaptureError::NotACapture { magic, .. }) if f.part && magic.len() < 4 => {}
                    Err(e) => {
                        stats.inputs_failed += 1;
                        on_error(&e.to_string());
                    }
                }
                continue;
            };
            let at = r.offset();
            let done = match r.next_record() {
                Ok(Some(rec)) if rec.linktype != LINKTYPE_ETHERNET => Some(Err(format!(
                    "{}: record at byte {at} has link type {}, expected Ethernet (1)",
                    f.name, rec.linktype
                ))),
                Ok(Some(rec)) => {
                    stats.records_read += 1;
                    if rec.ts_ns >= sel.to_ns {
                        Some(Ok(()))
                    } else if rec.ts_ns < sel.from_ns {
                        None
                    } else {
                        self.ts_ns = rec.ts_ns;
                        self.orig_len = rec.orig_len;
                        self.data.clear();
                        self.data.extend_from_slice(rec.data);
                        return true;
                    }
                }
                Ok(None) => Some(Ok(())),
                // A file still being written ends inside its last record.
                Err(CaptureError::Truncated { .. }) if f.part => Some(Ok(())),
                // An I/O error names no offset of its own.
                Err(e @ CaptureError::Io { .. }) => Some(Err(format!("{e} (at byte {at})"))),
                Err(e) => Some(Err(e.to_string())),
            };
            if let Some(end) = done {
                stats.bytes_read += r.offset();
                if let Err(e) = end {
                    stats.inputs_failed += 1;
                    on_error(&e);
                }
                self.file = None;
            }
        }
    }
}

/// Extracts from `stores` into `out` (a buffered writer: records are
/// written one by one). `on_error` gets each store, folder or file that
/// could not be listed, opened or read to its end, as it happens.
pub fn run(
    stores: &[Box<dyn Store>],
    opts: &ExtractOptions,
    out: &mut dyn Write,
    mut on_error: impl FnMut(&str),
) -> Result<ExtractStats, ExtractError> {
    let bpf = opts.filter.as_deref().map(Bpf::compile).transpose()?;
    let sel = &opts.selection;
    let mut stats = ExtractStats::default();
    let mut cursors: Vec<Cursor> = Vec::new();
    for store in stores {
        let listed = store.list(sel, &mut |p| {
            stats.inputs_failed += 1;
            on_error(&p);
        });
        stats.files_considered += listed.len() as u64;
        let chosen = choose(listed, sel.from_ns, sel.to_ns);
        stats.files_chosen += chosen.len() as u64;
        // `choose` leaves each session's files together, in order.
        let mut chosen = chosen.into_iter().peekable();
        while let Some(first) = chosen.next() {
            let session = first.session;
            let writer = first.writer.clone();
            let mut files = vec![first];
            while let Some(f) = chosen.next_if(|f| f.session == session && f.writer == writer) {
                files.push(f);
            }
            cursors.push(Cursor {
                store: store.as_ref(),
                session,
                files: files.into_iter(),
                file: None,
                ts_ns: 0,
                orig_len: 0,
                data: Vec::new(),
                interface: None,
            });
        }
    }

    let mut w = Output::new(out, opts.format);
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if c.advance(sel, &mut stats, &mut on_error) {
            heap.push(Reverse((c.ts_ns, i)));
        }
    }
    let mut interfaces: HashMap<SessionKey, u32> = HashMap::new();
    let result = (|| {
        w.start()?;
        while let Some(Reverse((_, i))) = heap.pop() {
            let c = &mut cursors[i];
            if bpf
                .as_ref()
                .is_none_or(|b| b.matches(&c.data, c.orig_len as usize))
            {
                let interface = match c.interface {
                    Some(n) => n,
                    None => {
                        let next = interfaces.len() as u32;
                        let n = *interfaces.entry(c.session).or_insert_with(|| {
                            w.interface(&c.session);
                            next
                        });
                        c.interface = Some(n);
                        n
                    }
                };
                w.record(interface, c.ts_ns, c.orig_len, &c.data)?;
                stats.records_written += 1;
            }
            if c.advance(sel, &mut stats, &mut on_error) {
                heap.push(Reverse((c.ts_ns, i)));
            }
        }
        w.finish()
    })();
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => stats.reader_gone = true,
        Err(e) => return Err(ExtractError::Output(e)),
    }
    // Files left open by a stop (EPIPE): count what was read of them.
    for c in &cursors {
        if let Some((_, r)) = &c.file {
            stats.bytes_read += r.offset();
        }
    }
    Ok(stats)
}

/// The output stream: its header, pcapng interfaces as sessions appear,
/// records.
struct Output<'w> {
    out: &'w mut dyn Write,
    format: OutputFormat,
    /// An interface block waiting to be written (before its first record).
    pending: Vec<u8>,
}

impl<'w> Output<'w> {
    fn new(out: &'w mut dyn Write, format: OutputFormat) -> Self {
        Output {
            out,
            format,
            pending: Vec::new(),
        }
    }

    fn start(&mut self) -> io::Result<()> {
        let mut h = Vec::new();
        match self.format {
            OutputFormat::Pcap => pcap_file_header(&mut h, MAX_SNAPLEN),
            OutputFormat::Pcapng => pcapng_section_header(&mut h),
        }
        self.out.write_all(&h)
    }

    /// Announces a session (pcapng: its interface, named as in its capture
    /// files).
    fn interface(&mut self, s: &SessionKey) {
        if self.format == OutputFormat::Pcapng {
            let (name, description) = session_interface(s.vni, s.source, s.endpoint);
            pcapng_interface(&mut self.pending, MAX_SNAPLEN, &name, &description);
        }
    }

    #[inline]
    fn record(&mut self, interface: u32, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.out.write_all(&self.pending)?;
            self.pending.clear();
        }
        let caplen = data.len() as u32;
        let h =
            RecordHeader::on_interface(self.format, interface, ts_ns, caplen, orig_len.max(caplen));
        self.out.write_all(h.header())?;
        self.out.write_all(data)?;
        let (tail, n) = h.tail();
        self.out.write_all(&tail[..n])
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A `--from`/`--to` time in nanoseconds since the epoch: RFC 3339
/// (`2026-11-30T14:02:00Z`, `2026-11-30T15:02:00.5+01:00`), `now`, or
/// relative to `now_ns`: `-15min`, `-2h`, `-90s` (humantime units).
pub fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let expected = "expected an RFC 3339 time (2026-11-30T14:02:00Z), `now`, or a time ago (-15min, -2h, -30s)";
    if s == "now" {
        return Ok(now_ns);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago).map_err(|e| format!("{s:?}: {e}; {expected}"))?;
        return Ok(now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    }
    let t: jiff::Timestamp = s.parse().map_err(|e| format!("{s:?}: {e}; {expected}"))?;
    u64::try_from(t.as_nanosecond()).map_err(|_| format!("{s:?}: before 1970; {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_rfc3339_and_relative() {
        let now = 1_764_511_200_000_000_000; // 2025-11-30T14:00:00Z
        assert_eq!(parse_time("2025-11-30T14:00:00Z", 0), Ok(now));
        assert_eq!(
            parse_time("2025-11-30T15:00:00.5+01:00", 0),
            Ok(now + 500_000_000)
        );
        assert_eq!(parse_time("-15min", now), Ok(now - 900_000_000_000));
        assert_eq!(parse_time("-2h", now), Ok(now - 7_200_000_000_000));
        assert_eq!(parse_time("now", now), Ok(now));
        for bad in ["yesterday", "-15 parsecs", "2025-13-01T00:00:00Z", "14:02"] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.contains("expected an RFC 3339 time"), "{e}");
        }
    }
}
