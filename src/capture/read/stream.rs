//! The streaming reader: a capture read from any `Read` (a pipe, stdin, a
//! FIFO, a file that cannot be mapped) in large blocks into one reused
//! buffer.
//!
//! In: a byte stream. Out: byte ranges of the buffer ([`Stream::take`]),
//! valid until the next call. Nothing is dropped: the unread tail is kept
//! when the buffer is refilled.

use std::io::{self, Read};

/// Bytes a stream is read in (one `read` call per block, not per record).
const STREAM_BLOCK: usize = 1 << 20;
/// The first block: the buffer doubles from here at each refill.
const FIRST_BLOCK: usize = 64 << 10;

/// A stream being read: unread bytes are `buf[pos..end]`.
pub(super) struct Stream<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Stream<R> {
    pub(super) fn new(r: R) -> Self {
        Stream {
            r,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
        }
    }

    /// Consumes up to `n` bytes: returns where they start in
    /// [`Stream::bytes`] and how many there are (fewer than `n` only at the
    /// end of the input). Valid until the next call.
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> io::Result<(usize, usize)> {
        let Stream {
            r,
            buf,
            pos,
            end,
            eof,
        } = self;
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

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}
