//! Stage 2: the VXLAN header (RFC 7348) as a borrowed view over a datagram.
//!
//! In: a UDP payload. Out: the 24-bit VNI and the inner Ethernet frame.
//! Dropped and counted: a datagram shorter than the 8-byte header
//! (`vxlan_too_short`), one without the I flag (`vxlan_no_i_flag`), and one
//! whose inner frame is shorter than an Ethernet header (`inner_too_short`).
//!
//! Reserved bits are ignored, as RFC 7348 asks of receivers: AWS sends flags
//! 0x08 with zero reserved bytes, but hand-made and other vendors' traffic
//! sets them (Suricata had to stop checking them). Once [`Vxlan::new_checked`]
//! has passed, no accessor can panic.

use crate::pipeline::DropReason;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: "the VNI is valid". The only flag RFC 7348 defines.
pub const FLAG_I: u8 = 0x08;
/// Length of an Ethernet II header, the shortest inner frame accepted.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// A checked VXLAN datagram.
#[derive(Clone, Copy, Debug)]
pub struct Vxlan<'a> {
    buf: &'a [u8],
}

impl<'a> Vxlan<'a> {
    /// Checks the length and the I flag. The inner frame must hold at least
    /// an Ethernet header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, DropReason> {
        if buf.len() < HEADER_LEN {
            return Err(DropReason::VxlanTooShort);
        }
        if buf[field::FLAGS] & FLAG_I == 0 {
            return Err(DropReason::VxlanNoIFlag);
        }
        if buf.len() < HEADER_LEN + ETHERNET_HEADER_LEN {
            return Err(DropReason::InnerTooShort);
        }
        Ok(Vxlan { buf })
    }

    pub fn flags(&self) -> u8 {
        self.buf[field::FLAGS]
    }

    /// The 24-bit VXLAN Network Identifier (in AWS, the mirror session's
    /// `VirtualNetworkId`).
    pub fn vni(&self) -> u32 {
        let v = &self.buf[field::VNI];
        (u32::from(v[0]) << 16) | (u32::from(v[1]) << 8) | u32::from(v[2])
    }

    /// The encapsulated Ethernet frame.
    pub fn inner(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First datagram of `testdata/vxlan/tcpdump-vxlan.pcap` (VNI 100, ICMP
    /// echo), UDP payload only, cut after the ICMP type and code.
    const TCPDUMP_VXLAN: [u8; 44] = [
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, // VXLAN, VNI 100
        0x00, 0x30, 0x88, 0x01, 0x00, 0x02, 0x00, 0x16, 0x3e, 0x37, 0xf6, 0x04, 0x08,
        0x00, // Ethernet
        0x45, 0x00, 0x00, 0x54, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x23, 0x4f, 0xc0, 0xa8, 0xcb,
        0x03, 0xc0, 0xa8, 0xcb, 0x05, 0x08, 0x00,
    ];

    /// Header of `suricata-verify-vxlan-non-zero-reserved-fields-input.pcap`:
    /// flags 0xff, reserved 0x01d1f2, VNI 11.
    const RESERVED_SET: [u8; 8] = [0xff, 0x01, 0xd1, 0xf2, 0x00, 0x00, 0x0b, 0x00];

    #[test]
    fn real_header_gives_vni_and_inner_frame() {
        let v = Vxlan::new_checked(&TCPDUMP_VXLAN[..]).unwrap();
        assert_eq!(v.vni(), 100);
        assert_eq!(v.flags(), 0x08);
        assert_eq!(v.inner(), &TCPDUMP_VXLAN[8..]);
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut d = RESERVED_SET.to_vec();
        d.extend_from_slice(&TCPDUMP_VXLAN[8..]);
        let v = Vxlan::new_checked(&d[..]).unwrap();
        assert_eq!(v.vni(), 11);
    }

    #[test]
    fn drop_too_short() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Vxlan::new_checked(&TCPDUMP_VXLAN[..len]).unwrap_err(),
                DropReason::VxlanTooShort
            );
        }
    }

    #[test]
    fn drop_without_i_flag() {
        let mut d = TCPDUMP_VXLAN;
        d[0] = 0x00;
        assert_eq!(
            Vxlan::new_checked(&d[..]).unwrap_err(),
            DropReason::VxlanNoIFlag
        );
        d[0] = 0xf7; // every bit but I
        assert_eq!(
            Vxlan::new_checked(&d[..]).unwrap_err(),
            DropReason::VxlanNoIFlag
        );
    }

    #[test]
    fn drop_inner_shorter_than_ethernet() {
        for len in HEADER_LEN..HEADER_LEN + ETHERNET_HEADER_LEN {
            assert_eq!(
                Vxlan::new_checked(&TCPDUMP_VXLAN[..len]).unwrap_err(),
                DropReason::InnerTooShort
            );
        }
        assert!(Vxlan::new_checked(&TCPDUMP_VXLAN[..HEADER_LEN + ETHERNET_HEADER_LEN]).is_ok());
    }

    #[test]
    fn largest_vni() {
        let mut d = TCPDUMP_VXLAN;
        d[4..7].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(Vxlan::new_checked(&d[..]).unwrap().vni(), 0xff_ffff);
    }
}
