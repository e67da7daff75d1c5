//! Control messages of a received datagram, read safely.
//!
//! In: the control-message bytes the kernel wrote next to a datagram
//! (`recvmsg`/`recvmmsg`'s `msg_control`, `msg_controllen`). Out: an
//! iterator of [`Cmsg`] (level, type, payload bytes) walked with
//! `CMSG_FIRSTHDR`/`CMSG_NXTHDR`, and typed readers for the payloads this
//! daemon asks for (`SCM_TIMESTAMPNS`, `SO_RXQ_OVFL`). Dropped: nothing is
//! interpreted here; a header whose length runs past the bytes filled is
//! cut to them.
//!
//! The buffer is an [`Aligned`] array, so a `cmsghdr` read from it is
//! properly aligned (the old `Vec<u8>` gave alignment 1). The pattern is
//! quinn-udp's (`cmsg` module): an aligned buffer, an iterator built from a
//! header that borrows it, payload decoded with a size check.

use std::marker::PhantomData;
use std::mem::{size_of, zeroed};

/// Control-message space per datagram: a timestamp and an overflow counter
/// with their headers and padding fit in 64 bytes; 128 leaves room.
pub const LEN: usize = 128;

/// Bytes aligned for `cmsghdr` (8 on 64-bit Linux; 8 covers 32-bit too).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Aligned(pub [u8; LEN]);

const _: () = assert!(std::mem::align_of::<Aligned>() >= std::mem::align_of::<libc::cmsghdr>());

impl Default for Aligned {
    fn default() -> Self {
        Aligned([0; LEN])
    }
}

/// One control message: its level, type and payload.
#[derive(Debug, Clone, Copy)]
pub struct Cmsg<'a> {
    pub level: i32,
    pub kind: i32,
    pub data: &'a [u8],
}

impl Cmsg<'_> {
    /// The payload as a `T`, if it holds at least `size_of::<T>()` bytes.
    ///
    /// Private to the plain-old-data types below, for which any bytes are a
    /// valid value.
    fn read<T: Copy>(&self) -> Option<T> {
        (self.data.len() >= size_of::<T>())
            // SAFETY: the slice holds enough bytes; read_unaligned has no
            // alignment need; T is an integer or timespec (any bits valid).
            .then(|| unsafe { std::ptr::read_unaligned(self.data.as_ptr().cast::<T>()) })
    }

    /// An `SCM_TIMESTAMPNS` message's time in nanoseconds since the epoch.
    pub fn timestamp_ns(&self) -> Option<u64> {
        if self.level != libc::SOL_SOCKET || self.kind != libc::SCM_TIMESTAMPNS {
            return None;
        }
        let t: libc::timespec = self.read()?;
        Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
    }

    /// An `SO_RXQ_OVFL` message's cumulative drop count.
    pub fn rxq_overflow(&self) -> Option<u32> {
        if self.level != libc::SOL_SOCKET || self.kind != libc::SO_RXQ_OVFL {
            return None;
        }
        self.read()
    }
}

/// Iterator over the control messages in the first `len` bytes of a buffer.
pub struct Iter<'a> {
    /// A header describing the borrowed buffer, for the libc macros; it
    /// lives only as long as the iterator.
    hdr: libc::msghdr,
    cur: *const libc::cmsghdr,
    end: usize,
    _buf: PhantomData<&'a Aligned>,
}

impl<'a> Iter<'a> {
    /// The messages in `buf[..len]` (`len` is the `msg_controllen` the
    /// kernel returned; it is clamped to the buffer).
    pub fn new(buf: &'a Aligned, len: usize) -> Iter<'a> {
        let len = len.min(LEN);
        // SAFETY: all-zero is a valid msghdr.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_control = buf.0.as_ptr() as *mut libc::c_void;
        hdr.msg_controllen = len as _;
        // SAFETY: the header describes `len` readable, aligned bytes.
        let cur = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        Iter {
            hdr,
            cur,
            end: buf.0.as_ptr() as usize + len,
            _buf: PhantomData,
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Cmsg<'a>;

    fn next(&mut self) -> Option<Cmsg<'a>> {
        if self.cur.is_null() {
            return None;
        }
        let c = self.cur;
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a header that
        // lies wholly inside the `len` bytes of the aligned buffer.
        let cm: &'a libc::cmsghdr = unsafe { &*c };
        let head = unsafe { libc::CMSG_DATA(c) } as usize;
        let whole = cm.cmsg_len;
        if whole < size_of::<libc::cmsghdr>() {
            self.cur = std::ptr::null();
            return None;
        }
        let stop = (c as usize + whole).min(self.end);
        let n = stop.saturating_sub(head);
        // SAFETY: [head, head + n) is inside the borrowed buffer.
        let data = unsafe { std::slice::from_raw_parts(head as *const u8, n) };
        // SAFETY: `c` came from the macros over the same header.
        self.cur = unsafe { libc::CMSG_NXTHDR(&self.hdr, c) };
        Some(Cmsg {
            level: cm.cmsg_level,
            kind: cm.cmsg_type,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a control message at `off` the way the kernel does.
    fn put(buf: &mut Aligned, off: usize, level: i32, kind: i32, payload: &[u8]) -> usize {
        let h = libc::cmsghdr {
            cmsg_len: unsafe { libc::CMSG_LEN(payload.len() as u32) } as _,
            cmsg_level: level,
            cmsg_type: kind,
        };
        let hl = size_of::<libc::cmsghdr>();
        // SAFETY: plain bytes of a repr(C) struct.
        let hb = unsafe { std::slice::from_raw_parts((&h as *const libc::cmsghdr).cast(), hl) };
        buf.0[off..off + hl].copy_from_slice(hb);
        buf.0[off + hl..off + hl + payload.len()].copy_from_slice(payload);
        off + unsafe { libc::CMSG_SPACE(payload.len() as u32) } as usize
    }

    #[test]
    fn walks_timestamp_and_overflow() {
        let mut buf = Aligned::default();
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&7i64.to_ne_bytes());
        ts[8..].copy_from_slice(&5i64.to_ne_bytes());
        let off = put(&mut buf, 0, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts);
        let end = put(
            &mut buf,
            off,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &9u32.to_ne_bytes(),
        );
        let all: Vec<Cmsg> = Iter::new(&buf, end).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].timestamp_ns(), Some(7_000_000_005));
        assert_eq!(all[1].rxq_overflow(), Some(9));
        assert_eq!(all[0].rxq_overflow(), None);
        // Cut short: only what fits in `len` is seen.
        assert_eq!(Iter::new(&buf, off).count(), 1);
        assert_eq!(Iter::new(&buf, 0).count(), 0);
    }
}
