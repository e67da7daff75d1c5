//! pcapng blocks: the section header (byte order), interface descriptions
//! (link type, `if_tsresol`, `if_tsoffset`) and the three packet blocks
//! (enhanced, obsolete, simple), one function per block type.
//!
//! In: the blocks after the first section header's block type. Out: where
//! each packet lies ([`RecordAt`]), its timestamp in nanoseconds. Dropped:
//! blocks that hold no packet (statistics, name resolution, custom) are
//! skipped; a malformed block is an error naming the offset.

use std::io::Read;

use super::{CaptureError, CaptureReader, Format, MAX_RECORD, RecordAt, u16_at, u32_at, u64_at};

/// Block type of a section header (also the pcapng file magic).
pub(super) const SECTION_HEADER: u32 = 0x0A0D_0D0A;

#[derive(Clone, Copy, Debug)]
pub(super) struct Interface {
    linktype: u16,
    /// Timestamp units per second as (base 10 or 2, exponent).
    tsresol: (bool, u8),
    tsoffset_s: i64,
}

impl<R: Read> CaptureReader<R> {
    /// Reads the rest of a section header block after its block type; returns
    /// the section's byte order.
    pub(super) fn section_header(&mut self) -> Result<bool, CaptureError> {
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

    /// The next packet of a pcapng file, `Ok(None)` at a clean end of
    /// input; blocks before it that hold none are read and skipped.
    pub(super) fn next_pcapng(&mut self) -> Result<Option<RecordAt>, CaptureError> {
        loop {
            let Format::Pcapng { big_endian, .. } = self.format else {
                unreachable!()
            };
            let Some(at) = self.fill_or_eof(4, "pcapng block header")? else {
                return Ok(None);
            };
            let h: [u8; 4] = self.array(at);
            let block_type = u32_at(&h, 0, big_endian);
            if block_type == SECTION_HEADER {
                let be = self.section_header()?;
                self.format = Format::Pcapng {
                    big_endian: be,
                    interfaces: Vec::new(),
                };
                continue;
            }
            let (at, len) = self.block(block_type, big_endian)?;
            let rec = match block_type {
                1 => {
                    self.interface_block(at, len - 12, big_endian)?;
                    None
                }
                6 | 2 => Some(self.packet_block(block_type, at, len, big_endian)?),
                3 => Some(self.simple_packet_block(at, len - 12, big_endian)?),
                _ => None, // statistics, name resolution, custom, …: no packets
            };
            if rec.is_some() {
                return Ok(rec);
            }
        }
    }

    /// Reads the rest of a block after its type: its length, body and
    /// trailing length. Returns where the body starts and the block's
    /// length.
    fn block(&mut self, block_type: u32, big_endian: bool) -> Result<(usize, usize), CaptureError> {
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
        Ok((at, len))
    }

    /// The interfaces of the current section.
    fn interfaces(&self) -> &[Interface] {
        let Format::Pcapng { interfaces, .. } = &self.format else {
            unreachable!()
        };
        interfaces
    }

    /// An interface description block: adds the interface to the section.
    fn interface_block(
        &mut self,
        at: usize,
        body_len: usize,
        big_endian: bool,
    ) -> Result<(), CaptureError> {
        let b = &self.src.bytes()[at..at + body_len];
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
        let Format::Pcapng { interfaces, .. } = &mut self.format else {
            unreachable!()
        };
        interfaces.push(iface);
        Ok(())
    }

    /// An enhanced packet block (type 6), or the obsolete packet block
    /// (type 2: the interface id is 16 bits there, followed by drops).
    fn packet_block(
        &self,
        block_type: u32,
        at: usize,
        len: usize,
        big_endian: bool,
    ) -> Result<RecordAt, CaptureError> {
        let b = &self.src.bytes()[at..at + len - 12];
        if b.len() < 20 {
            return Err(self.malformed("pcapng packet block too short"));
        }
        let if_id = if block_type == 6 {
            u32_at(b, 0, big_endian) as usize
        } else {
            usize::from(u16_at(b, 0, big_endian))
        };
        let interfaces = self.interfaces();
        let n_ifaces = interfaces.len();
        let Some(iface) = interfaces.get(if_id).copied() else {
            return Err(self.malformed(format!(
                "packet block names interface {if_id}, but the section has {n_ifaces}"
            )));
        };
        let ts = (u64::from(u32_at(b, 4, big_endian)) << 32) | u64::from(u32_at(b, 8, big_endian));
        let caplen = u32_at(b, 12, big_endian) as usize;
        let orig_len = u32_at(b, 16, big_endian);
        if 20 + caplen > b.len() {
            return Err(self.malformed(format!(
                "packet block claims {caplen} captured bytes in a {len}-byte block"
            )));
        }
        let ts_ns = to_ns(ts, iface.tsresol, iface.tsoffset_s);
        Ok(RecordAt {
            linktype: iface.linktype,
            ts_ns,
            at: at + 20,
            caplen,
            orig_len,
        })
    }

    /// A simple packet block: interface 0, no timestamp.
    fn simple_packet_block(
        &self,
        at: usize,
        body_len: usize,
        big_endian: bool,
    ) -> Result<RecordAt, CaptureError> {
        let b = &self.src.bytes()[at..at + body_len];
        if b.len() < 4 {
            return Err(self.malformed("pcapng simple packet block too short"));
        }
        let Some(iface) = self.interfaces().first().copied() else {
            return Err(self.malformed("simple packet block before any interface block"));
        };
        let orig_len = u32_at(b, 0, big_endian);
        let caplen = (orig_len as usize).min(b.len() - 4);
        Ok(RecordAt {
            linktype: iface.linktype,
            ts_ns: 0,
            at: at + 4,
            caplen,
            orig_len,
        })
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

    #[test]
    fn pcapng_timestamp_resolutions() {
        assert_eq!(to_ns(1_500_000, (true, 6), 0), 1_500_000_000);
        assert_eq!(to_ns(7, (true, 9), 0), 7);
        assert_eq!(to_ns(1 << 20, (false, 20), 0), 1_000_000_000);
        assert_eq!(to_ns(1000, (true, 12), 1), 1_000_000_001);
    }
}
