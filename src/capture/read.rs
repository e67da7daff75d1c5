//! Reading capture files: classic pcap (µs and ns magic, either byte order)
//! and pcapng (every section and interface, any `if_tsresol`, either byte
//! order), from a file or a stream (`-` = stdin).
//!
//! In: bytes. Out: [`Record`]s borrowing one reused buffer: link type,
//! timestamp in nanoseconds, captured bytes and original length.
//! Blocks that hold no packet (statistics, name resolution, custom) are
//! skipped. A record longer than [`MAX_RECORD`] or a malformed header is an
//! error naming the input and the byte offset; a file that ends inside a
//! record is [`CaptureError::Truncated`], after every whole record before it
//! has been returned.
//!
//! Written here instead of using pcap-file 2: its reader rejects records
//! with `orig_len > snaplen` and then repeats the error forever, and it
//! allocates per packet.
//!
//! A regular file is mapped into memory, and a mapped file that another
//! process cuts while it is read would kill the process with SIGBUS. So
//! the reader checks the file's size (`fstat`) every [`CHECK_EVERY`] bytes
//! and stops at a new, smaller end; and for a cut behind the reader, or
//! between two checks, a SIGBUS handler (installed once, only by a reader
//! that maps a file) replaces the vanished pages with zero pages and flags
//! the mapping, which the reader checks before handing out each record
//! (after touching its pages). Either way the result is
//! [`CaptureError::Cut`], naming the input, the new size and the offset;
//! other SIGBUS faults go to the handler that was there before. A record
//! being handed out at the very moment of the cut can have been read as
//! zeros (it is then dropped and counted like any malformed packet).
//!
//! The mapping itself is `memmap2`'s (`map_copy_read_only`: the same
//! `MAP_PRIVATE`, `PROT_READ` mapping as before). It coexists with the
//! guard: the handler replaces pages inside the mapping with `MAP_FIXED`
//! zero pages, which `memmap2`'s `munmap` of the whole range on drop
//! removes as well; the guard's slot is released before that.

use std::io::{self, Read};

/// Largest record or block accepted (libpcap's own limit is 256 KiB for
/// most link types; pcapng blocks with options can be a little larger).
pub const MAX_RECORD: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{input}: cannot read: {source}")]
    Io { input: String, source: io::Error },
    #[error(
        "{input}: not a pcap or pcapng file (first bytes {magic:02x?}; expected a pcap magic a1b2c3d4/a1b23c4d or a pcapng section header 0a0d0d0a)"
    )]
    NotACapture { input: String, magic: Vec<u8> },
    #[error(
        "{input}: truncated at byte {offset}: the file ends inside a {what} ({need} bytes needed, {got} present); every record before it was read"
    )]
    Truncated {
        input: String,
        offset: u64,
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{input}: malformed at byte {offset}: {why}")]
    Malformed {
        input: String,
        offset: u64,
        why: String,
    },
    #[error(
        "{input}: truncated while being read: the file shrank to {size} bytes while mirrorcap was at byte {offset}; every record before that was read"
    )]
    Cut {
        input: String,
        offset: u64,
        size: u64,
    },
}

/// One captured packet.
#[derive(Debug)]
pub struct Record<'a> {
    pub linktype: u16,
    pub ts_ns: u64,
    pub data: &'a [u8],
    pub orig_len: u32,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u16,
    /// Timestamp units per second as (base 10 or 2, exponent).
    tsresol: (bool, u8),
    tsoffset_s: i64,
}

enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u16,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// A reader over pcap or pcapng: a stream read in large blocks, or a
/// regular file mapped into memory ([`CaptureReader::open_file`]).
pub struct CaptureReader<R: Read> {
    input: String,
    src: Source<R>,
    format: Format,
    /// Bytes consumed so far, for error messages.
    offset: u64,
}

/// Bytes a stream is read in (one `read` call per block, not per record).
const STREAM_BLOCK: usize = 1 << 20;
/// The first block: the buffer doubles from here at each refill.
const FIRST_BLOCK: usize = 64 << 10;

/// Where the bytes come from. Records are slices of it: of the stream's one
/// reused buffer, or of the mapped file itself (no copy at all).
enum Source<R> {
    Stream {
        r: R,
        buf: Vec<u8>,
        /// Unread bytes are `buf[pos..end]`.
        pos: usize,
        end: usize,
        eof: bool,
    },
    Mapped {
        map: Mapping,
        pos: usize,
    },
}

/// Where a record lies in [`Source::bytes`]: link type, timestamp, start,
/// captured length, original length.
type RecordAt = (u16, u64, usize, usize, u32);

impl<R: Read> Source<R> {
    /// Consumes up to `n` bytes: returns where they start in
    /// [`Source::bytes`] and how many there are (fewer than `n` only at the
    /// end of the input). Valid until the next call.
    fn take(&mut self, n: usize) -> io::Result<(usize, usize)> {
        match self {
            Source::Mapped { map, pos } => {
                let start = *pos;
                if start.saturating_add(n) > map.checked_to {
                    map.check_size(start);
                }
                let got = n.min(map.avail.saturating_sub(start));
                *pos += got;
                Ok((start, got))
            }
            Source::Stream {
                r,
                buf,
                pos,
                end,
                eof,
            } => {
                if *end - *pos < n && !*eof {
                    // Move the unread tail to the front (a partial record:
                    // small); grow the buffer (64 KiB first, doubling at each
                    // refill up to a block, so a small input never gets a
                    // megabyte, and at least to the record's size); then
                    // read until `n` bytes are there: a read may bring more.
                    buf.copy_within(*pos..*end, 0);
                    *end -= *pos;
                    *pos = 0;
                    let grown = if buf.is_empty() {
                        FIRST_BLOCK
                    } else {
                        (buf.len() * 2).min(STREAM_BLOCK)
                    };
                    if buf.len() < n.max(grown) {
                        buf.resize(n.max(grown), 0);
                    }
                    while *end < n {
                        match r.read(&mut buf[*end..]) {
                            Ok(0) => {
                                *eof = true;
                                break;
                            }
                            Ok(k) => *end += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                let start = *pos;
                let got = n.min(*end - *pos);
                *pos += got;
                Ok((start, got))
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Source::Stream { buf, .. } => buf,
            Source::Mapped { map, .. } => map.as_slice(),
        }
    }

    /// For a mapped file: whether it was cut while read, so what was just
    /// read cannot be trusted (`Some(new size)`). `rec` is the record about
    /// to be handed out: its pages are touched first, so a cut that took
    /// them shows now rather than later in the caller. `at_end`: the read
    /// ended (at the end of the data, or with an error), which is a cut
    /// when the file has shrunk. Records wholly before the new end are
    /// still good. A stream is never cut.
    fn cut(&mut self, rec: Option<&RecordAt>, at_end: bool) -> Option<u64> {
        let Source::Mapped { map, .. } = self else {
            return None;
        };
        let mut beyond = false;
        if let Some(&(_, _, at, len, _)) = rec {
            let end = at + len;
            // The record ends in the mapping's last page (where a cut does
            // not fault), or a page faulted: ask the file system where the
            // file ends now. The record is whole if it ends before that
            // and before the pages that were replaced by zeros.
            if !map.touch(at, end) || map.guard.faulted() {
                map.check_size(end);
            }
            beyond = end > map.avail.min(map.guard.fault_offset());
        }
        if beyond || (at_end && (map.avail < map.len || map.guard.faulted())) {
            map.check_size(0);
            return Some(map.size);
        }
        None
    }
}

/// Bytes read between two checks of a mapped file's size.
pub const CHECK_EVERY: usize = 1 << 20;

/// A whole regular file mapped read-only (`mmap`, `MADV_SEQUENTIAL`),
/// guarded against the file being cut while it is read (see the module
/// doc).
struct Mapping {
    map: memmap2::Mmap,
    len: usize,
    /// Kept open for `fstat`.
    file: std::fs::File,
    /// The SIGBUS handler's record of this mapping.
    guard: &'static guard::Slot,
    /// The file's size at the last check, and the bytes that may be read:
    /// `min(len, size)`.
    size: u64,
    avail: usize,
    /// Reading past this offset checks the size again.
    checked_to: usize,
}

impl Mapping {
    /// Maps `f` if it is a non-empty regular file; gives it back otherwise
    /// or when mapping fails (then it is read as a stream).
    fn new(f: std::fs::File) -> Result<Mapping, std::fs::File> {
        let Ok(meta) = f.metadata() else {
            return Err(f);
        };
        let Ok(len) = usize::try_from(meta.len()) else {
            return Err(f);
        };
        if !meta.is_file() || len == 0 {
            return Err(f);
        }
        // SAFETY: a read-only private mapping of a file we hold open; a
        // cut of the file while it is mapped is caught by `guard`.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_copy_read_only(&f) };
        let Ok(map) = map else {
            return Err(f);
        };
        let Some(guard) = guard::register(map.as_ptr() as usize, len) else {
            // No SIGBUS guard (no free slot, or no handler): not mapped
            // (dropping `map` unmaps it).
            return Err(f);
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Mapping {
            map,
            len,
            file: f,
            guard,
            size: len as u64,
            avail: len,
            checked_to: CHECK_EVERY,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // Pages of a cut file are replaced by zero pages, see `guard`.
        &self.map
    }

    /// Checks the file's size (it may only shrink what can be read); the
    /// next check is [`CHECK_EVERY`] bytes after `at`.
    fn check_size(&mut self, at: usize) {
        if let Ok(m) = self.file.metadata() {
            self.size = m.len();
            let size = usize::try_from(m.len()).unwrap_or(usize::MAX);
            self.avail = self.avail.min(size);
        }
        self.checked_to = at.saturating_add(CHECK_EVERY);
    }

    /// Reads one byte of every page of `at..end` and of the page after
    /// it, so a page that a cut took faults now (and is flagged) instead
    /// of in the caller. The page after matters: the page holding the new
    /// end of a cut file does not fault (the bytes past the end read as
    /// zeros), the one after it does; so when neither faults the record is
    /// whole. False when there is no page after `end` in the mapping.
    fn touch(&self, at: usize, end: usize) -> bool {
        let page = guard::page();
        let mut i = at;
        while i < end.min(self.len) {
            // SAFETY: in the mapping (i < len).
            unsafe { std::ptr::read_volatile(self.map.as_ptr().add(i)) };
            i = (i | (page - 1)) + 1;
        }
        let next = (end | (page - 1)) + 1;
        if next >= self.len {
            return false;
        }
        // SAFETY: in the mapping (next < len).
        unsafe { std::ptr::read_volatile(self.map.as_ptr().add(next)) };
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Before `map` is unmapped (fields drop after this body), so the
        // handler never sees a range that is no longer ours.
        self.guard.release();
    }
}

/// The SIGBUS guard of mapped files: a fixed table of the mappings being
/// read, which the handler looks the faulting address up in. A fault in
/// one of them is a page the file no longer has: the handler maps zero
/// pages from there to the end of the mapping (the faulting read then
/// reads zeros) and notes it; any other fault goes to the handler that was
/// installed before (Rust's stack overflow check) or the default action.
/// The handler only touches atomics and calls `mmap`/`sigaction`.
mod guard {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Mappings guarded at once; a reader that finds none free reads its
    /// file as a stream instead.
    const SLOTS: usize = 64;

    /// One guarded mapping: `start == 0` means free.
    pub struct Slot {
        start: AtomicUsize,
        len: AtomicUsize,
        /// Offset of the first page replaced by zeros; `usize::MAX` if none.
        fault: AtomicUsize,
    }

    impl Slot {
        const fn new() -> Slot {
            Slot {
                start: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                fault: AtomicUsize::new(usize::MAX),
            }
        }

        /// Whether a page of this mapping vanished (the file was cut).
        pub fn faulted(&self) -> bool {
            self.fault_offset() != usize::MAX
        }

        /// Where the pages replaced by zeros start (`usize::MAX`: none).
        pub fn fault_offset(&self) -> usize {
            self.fault.load(Ordering::Relaxed)
        }

        /// Frees the slot (before the mapping is unmapped).
        pub fn release(&self) {
            self.len.store(0, Ordering::Release);
            self.start.store(0, Ordering::Release);
        }
    }

    static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
    /// The SIGBUS action before ours; `None` when ours could not be
    /// installed.
    static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();
    static PAGE: AtomicUsize = AtomicUsize::new(4096);

    /// The page size (4096 until the guard is installed).
    pub fn page() -> usize {
        PAGE.load(Ordering::Relaxed)
    }

    /// Guards `start..start + len`; `None` when it cannot be.
    pub fn register(start: usize, len: usize) -> Option<&'static Slot> {
        PREVIOUS.get_or_init(install).as_ref()?;
        let slot = TABLE.iter().find(|s| {
            s.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        slot.fault.store(usize::MAX, Ordering::Relaxed);
        slot.len.store(len, Ordering::Release);
        Some(slot)
    }

    fn install() -> Option<libc::sigaction> {
        // SAFETY: plain libc calls with valid arguments.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(libc::SIGBUS, &new, &mut old) == 0).then_some(old)
        }
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for s in &TABLE {
            let start = s.start.load(Ordering::Acquire);
            let len = s.len.load(Ordering::Acquire);
            if start == 0 || addr < start || addr >= start + len {
                continue;
            }
            let from = addr & !(page - 1);
            // SAFETY: replaces pages of our own read-only mapping, from
            // the faulting page to its end, with zero pages.
            let r = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    start + len - from,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                s.fault.fetch_min(from - start, Ordering::Relaxed);
                return;
            }
            break;
        }
        // Not a mapped capture: what would have happened without us.
        // SAFETY: calls the previous handler as it was installed, or
        // restores the default action (the fault then repeats and kills).
        unsafe {
            match PREVIOUS.get() {
                Some(Some(old))
                    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN =>
                {
                    if old.sa_flags & libc::SA_SIGINFO != 0 {
                        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                            std::mem::transmute(old.sa_sigaction);
                        f(sig, info, ctx);
                    } else {
                        let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                        f(sig);
                    }
                }
                _ => {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                }
            }
        }
    }
}

impl CaptureReader<std::fs::File> {
    /// Reads a capture file: mapped into memory when it is a regular file
    /// (records are then slices of the file's pages, never copied), read
    /// as a stream otherwise (a FIFO, `/dev/stdin`).
    pub fn open_file(f: std::fs::File, input: &str) -> Result<Self, CaptureError> {
        match Mapping::new(f) {
            Ok(map) => Self::from_source(Source::Mapped { map, pos: 0 }, input),
            Err(f) => Self::new(f, input),
        }
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header from a stream. `input` names the source in
    /// errors.
    pub fn new(r: R, input: &str) -> Result<Self, CaptureError> {
        Self::from_source(
            Source::Stream {
                r,
                buf: Vec::new(),
                pos: 0,
                end: 0,
                eof: false,
            },
            input,
        )
    }

    fn from_source(src: Source<R>, input: &str) -> Result<Self, CaptureError> {
        let mut me = CaptureReader {
            input: input.to_string(),
            src,
            format: Format::Pcap {
                big_endian: false,
                nanos: false,
                linktype: 0,
            },
            offset: 0,
        };
        let (at, got) = me.src.take(4).map_err(|source| CaptureError::Io {
            input: me.input.clone(),
            source,
        })?;
        me.offset = got as u64;
        let b = &me.src.bytes()[at..at + got];
        if got < 4 {
            return Err(CaptureError::NotACapture {
                input: me.input,
                magic: b.to_vec(),
            });
        }
        let magic = [b[0], b[1], b[2], b[3]];
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        me.format = match (le, be) {
            (0xa1b2_c3d4, _) => me.pcap_header(false, false)?,
            (0xa1b2_3c4d, _) => me.pcap_header(false, true)?,
            (_, 0xa1b2_c3d4) => me.pcap_header(true, false)?,
            (_, 0xa1b2_3c4d) => me.pcap_header(true, true)?,
            (0x0a0d_0d0a, _) => {
                let big_endian = me.section_header()?;
                Format::Pcapng {
                    big_endian,
                    interfaces: Vec::new(),
                }
            }
            _ => {
                return Err(CaptureError::NotACapture {
                    input: me.input,
                    magic: magic.to_vec(),
                });
            }
        };
        Ok(me)
    }

    fn pcap_header(&mut self, big_endian: bool, nanos: bool) -> Result<Format, CaptureError> {
        let at = self.fill(20, "pcap file header")?;
        let h: [u8; 20] = self.array(at);
        let linktype = u32_at(&h, 16, big_endian);
        Ok(Format::Pcap {
            big_endian,
            nanos,
            linktype: (linktype & 0xffff) as u16,
        })
    }

    /// Reads the rest of a section header block after its block type; returns
    /// the section's byte order.
    fn section_header(&mut self) -> Result<bool, CaptureError> {
        let at = self.fill(8, "pcapng section header")?;
        let h: [u8; 8] = self.array(at);
        let big_endian = match u32::from_le_bytes([h[4], h[5], h[6], h[7]]) {
            0x1A2B_3C4D => false,
            0x4D3C_2B1A => true,
            _ => return Err(self.malformed("pcapng section header has no valid byte-order magic")),
        };
        let len = u32_at(&h, 0, big_endian) as usize;
        if !(28..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
            return Err(self.malformed(format!("pcapng section header length {len}")));
        }
        self.skip(len - 12, "pcapng section header")?;
        Ok(big_endian)
    }

    /// Bytes read so far: after `next_record` returned a record, the offset
    /// just past it.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, `Ok(None)` at a clean end of input.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let r = self.next_record_at();
        let rec = r.as_ref().ok().and_then(Option::as_ref);
        if let Some(size) = self.src.cut(rec, rec.is_none()) {
            return Err(CaptureError::Cut {
                input: self.input.clone(),
                offset: self.offset,
                size,
            });
        }
        Ok(
            r?.map(move |(linktype, ts_ns, at, caplen, orig_len)| Record {
                linktype,
                ts_ns,
                data: &self.src.bytes()[at..at + caplen],
                orig_len: orig_len.max(caplen as u32),
            }),
        )
    }

    /// Where the next record is, `Ok(None)` at a clean end of input.
    fn next_record_at(&mut self) -> Result<Option<RecordAt>, CaptureError> {
        match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                linktype,
            } => {
                let Some(at) = self.fill_or_eof(16, "pcap record header")? else {
                    return Ok(None);
                };
                let h: [u8; 16] = self.array(at);
                let sec = u64::from(u32_at(&h, 0, big_endian));
                let frac = u64::from(u32_at(&h, 4, big_endian));
                let caplen = u32_at(&h, 8, big_endian) as usize;
                let orig_len = u32_at(&h, 12, big_endian);
                if caplen > MAX_RECORD {
                    return Err(self.malformed(format!(
                        "record length {caplen} is larger than {MAX_RECORD}"
                    )));
                }
                let at = self.fill(caplen, "pcap record")?;
                let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
                Ok(Some((linktype, ts_ns, at, caplen, orig_len)))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<RecordAt>, CaptureError> {
        // The packet's place in the source, found by the loop (which may
        // read several blocks first); the record borrows it after.
        let (linktype, ts_ns, at, caplen, orig_len) = loop {
            let Format::Pcapng { big_endian, .. } = self.format else {
                unreachable!()
            };
            let Some(at) = self.fill_or_eof(4, "pcapng block header")? else {
                return Ok(None);
            };
            let h: [u8; 4] = self.array(at);
            let block_type = u32_at(&h, 0, big_endian);
            if block_type == 0x0A0D_0D0A {
                let be = self.section_header()?;
                self.format = Format::Pcapng {
                    big_endian: be,
                    interfaces: Vec::new(),
                };
                continue;
            }
            let at = self.fill(4, "pcapng block header")?;
            let l: [u8; 4] = self.array(at);
            let len = u32_at(&l, 0, big_endian) as usize;
            if !(12..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
                return Err(self.malformed(format!(
                    "pcapng block type {block_type:#x} has length {len}"
                )));
            }
            let body_len = len - 12;
            let at = self.fill(body_len + 4, "pcapng block")?;
            let b = &self.src.bytes()[at..at + body_len];
            let Format::Pcapng { interfaces, .. } = &mut self.format else {
                unreachable!()
            };
            match block_type {
                1 => {
                    if b.len() < 8 {
                        return Err(self.malformed("pcapng interface block too short"));
                    }
                    let linktype = u16_at(b, 0, big_endian);
                    let mut iface = Interface {
                        linktype,
                        tsresol: (true, 6),
                        tsoffset_s: 0,
                    };
                    for (code, val) in Options::new(&b[8..], big_endian) {
                        match (code, val.len()) {
                            (9, 1..) => iface.tsresol = (val[0] & 0x80 == 0, val[0] & 0x7f),
                            (14, 8..) => iface.tsoffset_s = u64_at(val, 0, big_endian) as i64,
                            _ => {}
                        }
                    }
                    interfaces.push(iface);
                }
                6 | 2 => {
                    // Enhanced packet block, or the obsolete packet block
                    // (interface id is 16 bits there, followed by drops).
                    if b.len() < 20 {
                        return Err(self.malformed("pcapng packet block too short"));
                    }
                    let if_id = if block_type == 6 {
                        u32_at(b, 0, big_endian) as usize
                    } else {
                        usize::from(u16_at(b, 0, big_endian))
                    };
                    let n_ifaces = interfaces.len();
                    let Some(iface) = interfaces.get(if_id).copied() else {
                        return Err(self.malformed(format!(
                            "packet block names interface {if_id}, but the section has {n_ifaces}"
                        )));
                    };
                    let ts = (u64::from(u32_at(b, 4, big_endian)) << 32)
                        | u64::from(u32_at(b, 8, big_endian));
                    let caplen = u32_at(b, 12, big_endian) as usize;
                    let orig_len = u32_at(b, 16, big_endian);
                    if 20 + caplen > b.len() {
                        return Err(self.malformed(format!(
                            "packet block claims {caplen} captured bytes in a {len}-byte block"
                        )));
                    }
                    let ts_ns = to_ns(ts, iface.tsresol, iface.tsoffset_s);
                    break (iface.linktype, ts_ns, at + 20, caplen, orig_len);
                }
                3 => {
                    // Simple packet block: interface 0, no timestamp.
                    if b.len() < 4 {
                        return Err(self.malformed("pcapng simple packet block too short"));
                    }
                    let Some(iface) = interfaces.first().copied() else {
                        return Err(
                            self.malformed("simple packet block before any interface block")
                        );
                    };
                    let orig_len = u32_at(b, 0, big_endian);
                    let caplen = (orig_len as usize).min(b.len() - 4);
                    break (iface.linktype, 0, at + 4, caplen, orig_len);
                }
                _ => {} // statistics, name resolution, custom, …: no packets
            }
        };
        Ok(Some((linktype, ts_ns, at, caplen, orig_len)))
    }

    fn malformed(&self, why: impl Into<String>) -> CaptureError {
        CaptureError::Malformed {
            input: self.input.clone(),
            offset: self.offset,
            why: why.into(),
        }
    }

    /// Consumes `n` bytes and returns where they start in the source, or
    /// fails with `Truncated`.
    fn fill(&mut self, n: usize, what: &'static str) -> Result<usize, CaptureError> {
        let (at, got) = self.src.take(n).map_err(|source| CaptureError::Io {
            input: self.input.clone(),
            source,
        })?;
        self.offset += got as u64;
        if got < n {
            return Err(CaptureError::Truncated {
                input: self.input.clone(),
                offset: self.offset - got as u64,
                what,
                need: n,
                got,
            });
        }
        Ok(at)
    }

    /// Like `fill`, but a clean end of input before the first byte is
    /// `None`.
    fn fill_or_eof(&mut self, n: usize, what: &'static str) -> Result<Option<usize>, CaptureError> {
        match self.fill(n, what) {
            Err(CaptureError::Truncated { got: 0, .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    /// A copy of `N` bytes at `at` (a header, before the next read moves
    /// the buffer).
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        self.src.bytes()[at..at + N].try_into().expect("filled")
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), CaptureError> {
        self.fill(n, what).map(|_| ())
    }
}

/// Converts a pcapng timestamp to nanoseconds.
fn to_ns(ts: u64, (decimal, exp): (bool, u8), offset_s: i64) -> u64 {
    let ns: u128 = if decimal {
        if exp <= 9 {
            u128::from(ts) * 10u128.pow(u32::from(9 - exp))
        } else {
            u128::from(ts) / 10u128.pow(u32::from(exp.min(38) - 9))
        }
    } else {
        (u128::from(ts) * 1_000_000_000) >> exp.min(127)
    };
    let ns = ns as i128 + i128::from(offset_s) * 1_000_000_000;
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let x = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(x)
    } else {
        u16::from_le_bytes(x)
    }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let x = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(x)
    } else {
        u32::from_le_bytes(x)
    }
}

fn u64_at(b: &[u8], at: usize, be: bool) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    if be {
        u64::from_be_bytes(x)
    } else {
        u64::from_le_bytes(x)
    }
}

/// Iterator over pcapng options (code, value) until `opt_endofopt` or the end.
struct Options<'a> {
    b: &'a [u8],
    be: bool,
}

impl<'a> Options<'a> {
    fn new(b: &'a [u8], be: bool) -> Self {
        Options { b, be }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.b.len() < 4 {
            return None;
        }
        let code = u16_at(self.b, 0, self.be);
        let len = usize::from(u16_at(self.b, 2, self.be));
        if code == 0 || 4 + len > self.b.len() {
            return None;
        }
        let val = &self.b[4..4 + len];
        let adv = (4 + len + 3) & !3;
        self.b = &self.b[adv.min(self.b.len())..];
        Some((code, val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big_endian: bool, nanos: bool, recs: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let w16 = |v: &mut Vec<u8>, x: u16| {
            v.extend_from_slice(&if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let mut v = Vec::new();
        w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        w16(&mut v, 2);
        w16(&mut v, 4);
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, 1);
        for (s, f, d, orig) in recs {
            w32(&mut v, *s);
            w32(&mut v, *f);
            w32(&mut v, d.len() as u32);
            w32(&mut v, *orig);
            v.extend_from_slice(d);
        }
        v
    }

    #[test]
    fn pcap_all_magics() {
        for be in [false, true] {
            for nanos in [false, true] {
                let f = pcap(be, nanos, &[(10, 5, b"abcdef", 100), (11, 0, b"xy", 2)]);
                let mut r = CaptureReader::new(&f[..], "t").unwrap();
                let a = r.next_record().unwrap().unwrap();
                assert_eq!(a.ts_ns, 10_000_000_000 + if nanos { 5 } else { 5000 });
                assert_eq!((a.data, a.orig_len, a.linktype), (&b"abcdef"[..], 100, 1));
                let b = r.next_record().unwrap().unwrap();
                assert_eq!(b.data, b"xy");
                assert!(r.next_record().unwrap().is_none());
            }
        }
    }

    #[test]
    fn truncated_file_reports_after_whole_records() {
        let f = pcap(false, false, &[(1, 0, b"abcdef", 6), (2, 0, b"ghijkl", 6)]);
        for cut in [f.len() - 1, f.len() - 6, f.len() - 10, f.len() - 22 + 1] {
            let mut r = CaptureReader::new(&f[..cut], "t.pcap").unwrap();
            assert!(r.next_record().unwrap().is_some());
            let e = r.next_record().unwrap_err();
            assert!(matches!(e, CaptureError::Truncated { .. }), "{e}");
            assert!(
                e.to_string().starts_with("t.pcap: truncated at byte "),
                "{e}"
            );
        }
        assert!(CaptureReader::new(&f[..10], "t").is_err());
        assert!(matches!(
            CaptureReader::new(&b"GET / HTTP/1.1"[..], "t"),
            Err(CaptureError::NotACapture { .. })
        ));
        assert!(CaptureReader::new(&b""[..], "t").is_err());
    }

    /// A mapped file gives the same records and errors as the stream.
    #[test]
    fn mapped_file_reads_like_the_stream() {
        let mut recs: Vec<(u32, u32, Vec<u8>, u32)> = (0..3000u32)
            .map(|i| (i, i * 7, vec![(i % 251) as u8; (i % 700) as usize], 900))
            .collect();
        // Records larger than the stream's first and later blocks.
        recs.insert(5, (5, 5, vec![7; 300_000], 300_000));
        recs.insert(2000, (9, 9, vec![8; 1_500_000], 1_500_000));
        let borrowed: Vec<(u32, u32, &[u8], u32)> = recs
            .iter()
            .map(|(a, b, d, o)| (*a, *b, &d[..], *o))
            .collect();
        let f = pcap(false, true, &borrowed);
        let dir = tempfile::tempdir().unwrap();
        for cut in [f.len(), f.len() - 5] {
            let path = dir.path().join("x.pcap");
            std::fs::write(&path, &f[..cut]).unwrap();
            let mut mapped =
                CaptureReader::open_file(std::fs::File::open(&path).unwrap(), "x.pcap").unwrap();
            assert!(matches!(mapped.src, Source::Mapped { .. }));
            let mut stream = CaptureReader::new(&f[..cut], "x.pcap").unwrap();
            loop {
                let (a, b) = (mapped.next_record(), stream.next_record());
                match (a, b) {
                    (Ok(Some(a)), Ok(Some(b))) => {
                        assert_eq!((a.ts_ns, a.data, a.orig_len), (b.ts_ns, b.data, b.orig_len))
                    }
                    (Ok(None), Ok(None)) => break,
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string());
                        break;
                    }
                    (a, b) => panic!("{a:?} vs {b:?}"),
                }
            }
        }
        // An empty file cannot be mapped: read as a stream, same error.
        let path = dir.path().join("empty.pcap");
        std::fs::write(&path, b"").unwrap();
        let e = CaptureReader::open_file(std::fs::File::open(&path).unwrap(), "empty.pcap");
        assert!(matches!(e, Err(CaptureError::NotACapture { .. })));
    }

    /// Issue 12, item 10: a mapped file cut while it is read (behind the
    /// reader, and ahead of it) ends in an error naming the input, the new
    /// size and the offset, not in SIGBUS.
    #[test]
    fn mapped_file_cut_while_read_is_an_error() {
        let recs: Vec<(u32, u32, Vec<u8>, u32)> = (0..20_000u32)
            .map(|i| (i, 0, vec![(i % 251) as u8; 300], 300))
            .collect();
        let borrowed: Vec<(u32, u32, &[u8], u32)> = recs
            .iter()
            .map(|(a, b, d, o)| (*a, *b, &d[..], *o))
            .collect();
        let f = pcap(false, false, &borrowed);
        let dir = tempfile::tempdir().unwrap();
        // Behind the reader; ahead of it past the next size check; ahead
        // of it before the next size check (in the middle of a record);
        // to nothing.
        for (read_first, cut_to) in [
            (10_000, 4096 * 3 + 100),
            (100, 2_000_000),
            (100, 500_000),
            (100, 0),
        ] {
            let path = dir.path().join("cut.pcap");
            std::fs::write(&path, &f).unwrap();
            let mut r =
                CaptureReader::open_file(std::fs::File::open(&path).unwrap(), "cut.pcap").unwrap();
            assert!(matches!(r.src, Source::Mapped { .. }));
            for _ in 0..read_first {
                assert!(r.next_record().unwrap().is_some());
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(cut_to)
                .unwrap();
            let mut n = read_first;
            let e = loop {
                match r.next_record() {
                    Ok(Some(rec)) => {
                        assert_eq!(rec.data, &recs[n].2[..], "record {n}: not what was written");
                        n += 1;
                    }
                    Ok(None) => panic!("cut to {cut_to}: read to the end"),
                    Err(e) => break e,
                }
            };
            let text = e.to_string();
            assert!(
                text.starts_with("cut.pcap: truncated while being read: the file shrank to ")
                    && text.contains(&format!(" {cut_to} bytes")),
                "{text}"
            );
            // Every whole record below the new size was read, no other.
            let whole = (cut_to as usize).saturating_sub(24) / 316;
            assert_eq!(n, read_first.max(whole), "records read, cut to {cut_to}");
        }
    }

    #[test]
    fn huge_record_is_an_error_not_an_allocation() {
        let mut f = pcap(false, false, &[]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        let mut r = CaptureReader::new(&f[..], "t").unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::Malformed { .. })
        ));
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        assert_eq!(to_ns(1_500_000, (true, 6), 0), 1_500_000_000);
        assert_eq!(to_ns(7, (true, 9), 0), 7);
        assert_eq!(to_ns(1 << 20, (false, 20), 0), 1_000_000_000);
        assert_eq!(to_ns(1000, (true, 12), 1), 1_000_000_001);
    }
}
