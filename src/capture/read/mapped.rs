//! The memory-mapped reader: a regular capture file mapped read-only, its
//! records handed out as slices of the file's pages (no copy), and the
//! SIGBUS guard that keeps a file cut while it is read from killing the
//! process.
//!
//! In: an open regular file. Out: byte ranges of the mapping
//! ([`Mapped::take`]) and, per record, whether the file was cut under it
//! ([`Mapped::cut`]). A file that is not regular, is empty, or cannot be
//! mapped or guarded is handed back, to be read as a stream.
//!
//! A mapped file that another process cuts while it is read would kill the
//! process with SIGBUS. So the reader checks the file's size (`fstat`)
//! every [`CHECK_EVERY`] bytes and stops at a new, smaller end; and for a
//! cut behind the reader, or between two checks, a SIGBUS handler
//! (installed once, only by a reader that maps a file) replaces the
//! vanished pages with zero pages and flags the mapping, which the reader
//! checks before handing out each record (after touching its pages).
//! Either way the result is [`CaptureError::Cut`](super::CaptureError::Cut),
//! naming the input, the new size and the offset; other SIGBUS faults go to
//! the handler that was there before. A record being handed out at the
//! very moment of the cut can have been read as zeros (it is then dropped
//! and counted like any malformed packet).
//!
//! The mapping itself is `memmap2`'s (`map_copy_read_only`: the same
//! `MAP_PRIVATE`, `PROT_READ` mapping as before). It coexists with the
//! guard: the handler replaces pages inside the mapping with `MAP_FIXED`
//! zero pages, which `memmap2`'s `munmap` of the whole range on drop
//! removes as well; the guard's slot is released before that.

use super::RecordAt;

/// A mapped file being read: unread bytes start at `pos`.
pub(super) struct Mapped {
    map: Mapping,
    pos: usize,
}

impl Mapped {
    /// Maps `f` if it is a non-empty regular file; gives it back otherwise
    /// or when mapping fails (then it is read as a stream).
    pub(super) fn new(f: std::fs::File) -> Result<Mapped, std::fs::File> {
        Mapping::new(f).map(|map| Mapped { map, pos: 0 })
    }

    /// Consumes up to `n` bytes: returns where they start in
    /// [`Mapped::bytes`] and how many there are (fewer than `n` only at the
    /// end of what can be read).
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> (usize, usize) {
        let Mapped { map, pos } = self;
        let start = *pos;
        if start.saturating_add(n) > map.checked_to {
            map.check_size(start);
        }
        let got = n.min(map.avail.saturating_sub(start));
        *pos += got;
        (start, got)
    }

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        self.map.as_slice()
    }

    /// Whether the file was cut while read, so what was just
    /// read cannot be trusted (`Some(new size)`). `rec` is the record about
    /// to be handed out: its pages are touched first, so a cut that took
    /// them shows now rather than later in the caller. `at_end`: the read
    /// ended (at the end of the data, or with an error), which is a cut
    /// when the file has shrunk. Records wholly before the new end are
    /// still good.
    #[inline]
    pub(super) fn cut(&mut self, rec: Option<&RecordAt>, at_end: bool) -> Option<u64> {
        let map = &mut self.map;
        let mut beyond = false;
        if let Some(rec) = rec {
            let end = rec.at + rec.caplen;
            // The record ends in the mapping's last page (where a cut does
            // not fault), or a page faulted: ask the file system where the
            // file ends now. The record is whole if it ends before that
            // and before the pages that were replaced by zeros.
            if !map.touch(rec.at, end) || map.guard.faulted() {
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

#[cfg(test)]
mod tests {
    use super::super::tests::pcap;
    use super::super::{CaptureError, CaptureReader, Source};

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
            assert!(matches!(mapped.src, Source::Mapped(..)));
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
            assert!(matches!(r.src, Source::Mapped(..)));
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
}
