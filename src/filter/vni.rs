//! The VNI lists: `vnis` (allow list, empty = all) and `exclude_vnis`
//! (deny list, wins), applied before any decoding.
//!
//! In: a VXLAN VNI. Out: whether it is kept; a VNI refused here is dropped
//! and counted as `vni_excluded` by the pipeline.

use std::collections::BTreeSet;

/// `vnis` (allow list; empty = all) and `exclude_vnis` (deny list, wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VniFilter {
    pub allow: BTreeSet<u32>,
    pub deny: BTreeSet<u32>,
}

impl VniFilter {
    #[inline]
    pub fn accepts(&self, vni: u32) -> bool {
        (self.allow.is_empty() || self.allow.contains(&vni)) && !self.deny.contains(&vni)
    }
}
