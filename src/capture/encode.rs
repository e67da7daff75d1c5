//! Stage 6, the bytes: pcap and pcapng encoding of capture files.
//!
//! Classic pcap with nanosecond timestamps (magic `a1b23c4d`, little-endian)
//! and link type Ethernet; or pcapng with one interface per file whose name
//! and description carry the session, `if_tsresol` = 9 (nanoseconds), and
//! the application name in the section header. Nothing time- or
//! host-dependent is written, so the same input gives the same bytes.
//! Record headers are built on the stack: encoding allocates nothing.

/// pcap/pcapng link type of every output file.
pub const LINKTYPE_ETHERNET: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Pcap,
    Pcapng,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Pcap => "pcap",
            OutputFormat::Pcapng => "pcapng",
        }
    }
}

/// Appends a pcap file header (nanosecond magic, little-endian).
pub fn pcap_file_header(out: &mut Vec<u8>, snaplen: u32) {
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&snaplen.to_le_bytes());
    out.extend_from_slice(&u32::from(LINKTYPE_ETHERNET).to_le_bytes());
}

/// pcap record header: 16 bytes.
fn pcap_record_header(ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&caplen.to_le_bytes());
    h[12..16].copy_from_slice(&orig_len.to_le_bytes());
    h
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + pad4(value.len()), 0);
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The pcapng interface name and description of a mirror session (its
/// files and live streams say the same): `vxlan-<vni>-<source>` and
/// `mirror session: VXLAN VNI <vni> from <source>[ through <endpoint>]`.
pub fn session_interface(
    vni: u32,
    source: std::net::IpAddr,
    endpoint: Option<impl std::fmt::Display>,
) -> (String, String) {
    let name = format!("vxlan-{vni}-{source}");
    let description = match endpoint {
        None => format!("mirror session: VXLAN VNI {vni} from {source}"),
        Some(e) => format!("mirror session: VXLAN VNI {vni} from {source} through {e}"),
    };
    (name, description)
}

/// Appends a pcapng section header block and one interface description
/// block for the session.
pub fn pcapng_file_header(out: &mut Vec<u8>, snaplen: u32, if_name: &str, if_description: &str) {
    pcapng_section_header(out);
    pcapng_interface(out, snaplen, if_name, if_description);
}

/// Appends a pcapng section header block (no interface yet).
pub fn pcapng_section_header(out: &mut Vec<u8>) {
    let mut shb = Vec::with_capacity(64);
    shb.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
    shb.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    let appl = format!("mirrorcap {}", env!("CARGO_PKG_VERSION"));
    push_option(&mut shb, 4, appl.as_bytes()); // shb_userappl
    push_option(&mut shb, 0, &[]);
    finish_block(&mut shb);
    out.extend_from_slice(&shb);
}

/// Appends a pcapng interface description block (Ethernet, nanosecond
/// timestamps): the next interface of the section, numbered from 0.
pub fn pcapng_interface(out: &mut Vec<u8>, snaplen: u32, if_name: &str, if_description: &str) {
    let mut idb = Vec::with_capacity(128);
    idb.extend_from_slice(&1u32.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    push_option(&mut idb, 2, if_name.as_bytes()); // if_name
    push_option(&mut idb, 3, if_description.as_bytes()); // if_description
    push_option(&mut idb, 9, &[9]); // if_tsresol: 10^-9
    push_option(&mut idb, 0, &[]);
    finish_block(&mut idb);
    out.extend_from_slice(&idb);
}

fn finish_block(b: &mut Vec<u8>) {
    let len = (b.len() + 4) as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

/// pcapng enhanced packet block header (28 bytes); the frame, its padding
/// and the 4-byte trailing length follow.
fn pcapng_epb_header(interface: u32, ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; 28] {
    let total = 32 + caplen + pad4(caplen as usize) as u32;
    let mut h = [0u8; 28];
    h[0..4].copy_from_slice(&6u32.to_le_bytes());
    h[4..8].copy_from_slice(&total.to_le_bytes());
    h[8..12].copy_from_slice(&interface.to_le_bytes());
    h[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
    h[20..24].copy_from_slice(&caplen.to_le_bytes());
    h[24..28].copy_from_slice(&orig_len.to_le_bytes());
    h
}

/// Bytes a record of `caplen` takes in a file of `format`.
pub fn record_len(format: OutputFormat, caplen: usize) -> u64 {
    match format {
        OutputFormat::Pcap => 16 + caplen as u64,
        OutputFormat::Pcapng => 32 + (caplen + pad4(caplen)) as u64,
    }
}

/// The header of one record, built on the stack, and what follows the
/// frame bytes (pcapng: padding to 4 bytes and the trailing block length).
pub struct RecordHeader {
    bytes: [u8; 28],
    len: usize,
    pad: usize,
    trailer: [u8; 4],
    has_trailer: bool,
}

impl RecordHeader {
    #[inline]
    pub fn new(format: OutputFormat, ts_ns: u64, caplen: u32, orig_len: u32) -> RecordHeader {
        RecordHeader::on_interface(format, 0, ts_ns, caplen, orig_len)
    }

    /// A record of pcapng interface `interface` (ignored for pcap).
    #[inline]
    pub fn on_interface(
        format: OutputFormat,
        interface: u32,
        ts_ns: u64,
        caplen: u32,
        orig_len: u32,
    ) -> RecordHeader {
        match format {
            OutputFormat::Pcap => {
                let mut bytes = [0u8; 28];
                bytes[..16].copy_from_slice(&pcap_record_header(ts_ns, caplen, orig_len));
                RecordHeader {
                    bytes,
                    len: 16,
                    pad: 0,
                    trailer: [0; 4],
                    has_trailer: false,
                }
            }
            OutputFormat::Pcapng => {
                let pad = pad4(caplen as usize);
                let total = 32 + caplen + pad as u32;
                RecordHeader {
                    bytes: pcapng_epb_header(interface, ts_ns, caplen, orig_len),
                    len: 28,
                    pad,
                    trailer: total.to_le_bytes(),
                    has_trailer: true,
                }
            }
        }
    }

    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Padding and trailer, written after the frame.
    pub fn tail(&self) -> ([u8; 8], usize) {
        let mut t = [0u8; 8];
        if self.has_trailer {
            t[self.pad..self.pad + 4].copy_from_slice(&self.trailer);
            (t, self.pad + 4)
        } else {
            (t, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_blocks_are_aligned() {
        let mut h = Vec::new();
        pcapng_file_header(&mut h, 262144, "vxlan-1-10.0.0.1", "abc");
        assert_eq!(h.len() % 4, 0);
        for caplen in 0..8 {
            assert_eq!(record_len(OutputFormat::Pcapng, caplen) % 4, 0);
        }
    }

    #[test]
    fn record_header_and_tail_make_record_len() {
        for format in [OutputFormat::Pcap, OutputFormat::Pcapng] {
            for caplen in 0..9u32 {
                let h = RecordHeader::new(format, 1, caplen, caplen);
                let (_, tail) = h.tail();
                assert_eq!(
                    (h.header().len() + caplen as usize + tail) as u64,
                    record_len(format, caplen as usize)
                );
            }
        }
    }
}
