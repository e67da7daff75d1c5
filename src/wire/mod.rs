//! Pure views over bytes: the outer link/IP/UDP layers of a captured
//! packet, the VXLAN header and the inner frame's decode.
//! No I/O, no counters: a parser that stops returns a
//! [`crate::pipeline::DropReason`] and the caller counts it.

pub mod decode;
pub mod outer;
pub mod vxlan;
