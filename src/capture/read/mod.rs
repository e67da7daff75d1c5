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
//! This module holds the public reader, format detection and classic pcap
//! records; the bytes come from [`stream`] (any `Read`) or [`mapped`] (a
//! regular file mapped into memory, guarded against SIGBUS when the file
//! is cut while read, [`CaptureError::Cut`]); pcapng blocks are read in
//! [`pcapng`].

use std::io::{self, Read};

mod mapped;
mod pcapng;
mod stream;

pub use mapped::CHECK_EVERY;
use mapped::Mapped;
use pcapng::Interface;
use stream::Stream;

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

/// Where the bytes come from. Records are slices of it: of the stream's one
/// reused buffer, or of the mapped file itself (no copy at all).
enum Source<R> {
    Stream(Stream<R>),
    Mapped(Mapped),
}

/// Where a record lies in [`Source::bytes`], before it is handed out as a
/// [`Record`].
#[derive(Clone, Copy, Debug)]
struct RecordAt {
    linktype: u16,
    ts_ns: u64,
    /// Offset of its first captured byte in [`Source::bytes`].
    at: usize,
    caplen: usize,
    orig_len: u32,
}

impl<R: Read> Source<R> {
    /// Consumes up to `n` bytes: returns where they start in
    /// [`Source::bytes`] and how many there are (fewer than `n` only at the
    /// end of the input). Valid until the next call.
    #[inline]
    fn take(&mut self, n: usize) -> io::Result<(usize, usize)> {
        match self {
            Source::Mapped(m) => Ok(m.take(n)),
            Source::Stream(s) => s.take(n),
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Stream(s) => s.bytes(),
            Source::Mapped(m) => m.bytes(),
        }
    }

    /// For a mapped file: whether it was cut while read (`Some(new size)`),
    /// see [`Mapped::cut`]. A stream is never cut.
    #[inline]
    fn cut(&mut self, rec: Option<&RecordAt>, at_end: bool) -> Option<u64> {
        match self {
            Source::Mapped(m) => m.cut(rec, at_end),
            Source::Stream(_) => None,
        }
    }
}

impl CaptureReader<std::fs::File> {
    /// Reads a capture file: mapped into memory when it is a regular file
    /// (records are then slices of the file's pages, never copied), read
    /// as a stream otherwise (a FIFO, `/dev/stdin`).
    pub fn open_file(f: std::fs::File, input: &str) -> Result<Self, CaptureError> {
        match Mapped::new(f) {
            Ok(map) => Self::from_source(Source::Mapped(map), input),
            Err(f) => Self::new(f, input),
        }
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header from a stream. `input` names the source in
    /// errors.
    pub fn new(r: R, input: &str) -> Result<Self, CaptureError> {
        Self::from_source(Source::Stream(Stream::new(r)), input)
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
            (pcapng::SECTION_HEADER, _) => {
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
        Ok(r?.map(move |r| Record {
            linktype: r.linktype,
            ts_ns: r.ts_ns,
            data: &self.src.bytes()[r.at..r.at + r.caplen],
            orig_len: r.orig_len.max(r.caplen as u32),
        }))
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
                Ok(Some(RecordAt {
                    linktype,
                    ts_ns,
                    at,
                    caplen,
                    orig_len,
                }))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn pcap(big_endian: bool, nanos: bool, recs: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
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
}
