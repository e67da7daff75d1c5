//! Pure views over bytes: the outer link/IP/UDP layers of a captured
//! packet, GENEVE as a Gateway Load Balancer sends it (down to the VXLAN
//! datagram inside), the VXLAN header and the inner frame's decode.
//! No I/O, no counters: a parser that stops returns a
//! [`crate::pipeline::DropReason`] and the caller counts it.

pub mod decode;
pub mod geneve;
pub mod outer;
pub mod vxlan;

/// Bytes from hex digits, whitespace ignored: how the unit tests here and
/// in `ingest` write frames out.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
