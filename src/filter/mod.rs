//! Stage 3: what to keep. Three checks, in order:
//!
//! 1. VNIs: `vnis` (allow list, empty = all) and `exclude_vnis` (deny list,
//!    wins), before any decoding (`vni_excluded`).
//! 2. AWS Traffic Mirror filter rules on the decoded inner frame, with AWS's
//!    semantics (see [`MirrorFilter`]): `no_rule_matched`, `rule_rejected`.
//! 3. A tcpdump expression on the inner frame (`bpf`).
//!
//! Every drop here is intentional (the operator's choice) and counted by
//! reason; every rule counts the packets it decided.
//!
//! Direction, as AWS defines it, is relative to the mirror source ENI. The
//! session's own addresses are the outer source address (AWS sends from the
//! ENI's primary IP) plus the `addresses` configured for the session
//! (secondary IPs, prefixes). Inner destination among them: ingress; else
//! inner source among them: egress; neither: the packet is kept when either
//! list accepts it.//!
//! Here: direction ([`OwnAddresses`]); the VNI lists in `vni.rs`, the AWS
//! rules in `aws_rules.rs`, libpcap expressions in [`bpf`].

mod aws_rules;
pub mod bpf;
mod vni;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::wire::decode::IpInfo;

pub use crate::telemetry::counters::RuleCount;
pub use aws_rules::{
    AMAZON_DNS_V4, AMAZON_DNS_V6, MirrorFilter, PortRange, Rule, RuleAction, vpc_resolver,
};
pub use vni::VniFilter;

/// Which way a packet goes, relative to the mirror source ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A session's own addresses (the mirror source ENI's), for direction.
#[derive(Clone, Debug)]
pub struct OwnAddresses {
    pub outer: IpAddr,
    pub extra: Vec<IpNet>,
}

impl OwnAddresses {
    pub fn contains(&self, a: IpAddr) -> bool {
        a == self.outer || self.extra.iter().any(|n| n.contains(&a))
    }

    /// The direction of an IP packet relative to the ENI, if known.
    pub fn direction(&self, ip: &IpInfo) -> Option<Direction> {
        if self.contains(ip.dst) {
            Some(Direction::Ingress)
        } else if self.contains(ip.src) {
            Some(Direction::Egress)
        } else {
            None
        }
    }
}
