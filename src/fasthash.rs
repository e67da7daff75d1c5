//! The hasher of the per-packet maps (sessions by key, files by id):
//! FxHash, rustc's own, with a per-process random seed. std's SipHash cost
//! 6 % of a replay where sessions interleave packet by packet; these maps
//! are small (bounded by `max_sessions` and `max_open_files`) and keyed by
//! values an outside sender controls only through the outer source address
//! and VNI, which `allow_sources` and `max_sessions` bound.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Builds [`FxSeeded`] hashers; `Default` takes the process's seed.
#[derive(Clone, Copy)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState(
            *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)),
        )
    }
}

impl BuildHasher for FastState {
    type Hasher = FxSeeded;
    fn build_hasher(&self) -> FxSeeded {
        FxSeeded(self.0)
    }
}

/// A `HashMap` with [`FastState`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;

pub struct FxSeeded(u64);

impl FxSeeded {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxSeeded {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n))
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n))
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n))
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n)
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_spread() {
        let s = FastState::default();
        let mut seen = std::collections::HashSet::new();
        for vni in 0..1000u32 {
            for last in 0..10u8 {
                let ip = std::net::IpAddr::from([10, 0, 0, last]);
                seen.insert(s.hash_one((ip, vni)) >> 57);
            }
        }
        // The top 7 bits (hashbrown's control byte) take every value.
        assert_eq!(seen.len(), 128);
        let mut m: FastMap<(u32, u32), u32> = FastMap::default();
        for i in 0..10_000 {
            m.insert((i, i * 3), i);
        }
        assert!((0..10_000).all(|i| m[&(i, i * 3)] == i));
    }
}
