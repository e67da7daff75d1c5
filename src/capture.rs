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

impl<R: Read> Source<R> {
    /// Consumes up to `n` bytes: returns where they start in
    /// [`Source::bytes`] and how many there are (fewer than `n` only at the
    /// end of the input). Valid until the next call.
    fn take(&mut self, n: usize) -> io::Result<(usize, usize)> {
        match self {
            Source::Mapped { map, pos } => {
                let start = *pos;
                let got = n.min(map.len - start);
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
}

/// A whole regular file mapped read-only (`mmap`, `MADV_SEQUENTIAL`).
/// The file must not shrink while it is read (a capture being cut by
/// another process would fault); tcpdump and dumpcap only ever append or
/// start new files.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `f` if it is a non-empty regular file; `None` otherwise or when
    /// mapping fails (then it is read as a stream).
    fn new(f: &std::fs::File) -> Option<Mapping> {
        use std::os::fd::AsRawFd;
        let meta = f.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.is_file() || len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of a file we hold open.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the range was just mapped; advice only.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Some(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

impl CaptureReader<std::fs::File> {
    /// Reads a capture file: mapped into memory when it is a regular file
    /// (records are then slices of the file's pages, never copied), read
    /// as a stream otherwise (a FIFO, `/dev/stdin`).
    pub fn open_file(f: std::fs::File, input: &str) -> Result<Self, CaptureError> {
        match Mapping::new(&f) {
            Some(map) => Self::from_source(Source::Mapped { map, pos: 0 }, input),
            None => Self::new(f, input),
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
                Ok(Some(Record {
                    linktype,
                    ts_ns,
                    data: &self.src.bytes()[at..at + caplen],
                    orig_len: orig_len.max(caplen as u32),
                }))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
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
        Ok(Some(Record {
            linktype,
            ts_ns,
            data: &self.src.bytes()[at..at + caplen],
            orig_len: orig_len.max(caplen as u32),
        }))
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
