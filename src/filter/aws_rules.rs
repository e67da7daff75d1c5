//! AWS Traffic Mirror filter rules, with AWS's semantics (see
//! [`MirrorFilter`]): two ordered rule lists (ingress, egress), the
//! `amazon-dns` network service, and an optional tcpdump expression
//! evaluated after them.
//!
//! In: a decoded inner frame and the session's own addresses (for
//! direction). Out: kept, or dropped with the reason `no_rule_matched`,
//! `rule_rejected` or `bpf`; every rule counts the packets it decided
//! ([`MirrorFilter::rule_counts`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ipnet::IpNet;

use crate::filter::bpf::Bpf;
use crate::filter::{Direction, OwnAddresses, RuleCount};
use crate::pipeline::DropReason;
use crate::wire::decode::{Decoded, IpInfo, PROTO_TCP, PROTO_UDP};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Accept,
    Reject,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    fn contains(self, p: u16) -> bool {
        (self.from..=self.to).contains(&p)
    }
}

/// One AWS traffic mirror filter rule.
#[derive(Debug)]
pub struct Rule {
    pub number: u32,
    pub action: RuleAction,
    /// IANA protocol number; `None` = all protocols.
    pub protocol: Option<u8>,
    pub source: IpNet,
    pub destination: IpNet,
    pub source_ports: Option<PortRange>,
    pub destination_ports: Option<PortRange>,
    pub description: String,
    /// Packets this rule decided (kept when it accepts, dropped when it
    /// rejects).
    pub hits: AtomicU64,
}

impl Rule {
    /// Whether the rule matches an IP packet, as AWS evaluates it: both
    /// CIDR blocks of the packet's family, the protocol unless the rule
    /// says all, and the port ranges, which only a TCP or UDP packet with
    /// ports can match.
    pub fn matches(&self, ip: &IpInfo) -> bool {
        if !self.source.contains(&ip.src) || !self.destination.contains(&ip.dst) {
            return false; // also: a rule of the other family never matches
        }
        if self.protocol.is_some_and(|p| p != ip.protocol) {
            return false;
        }
        if self.source_ports.is_none() && self.destination_ports.is_none() {
            return true;
        }
        if ip.protocol != PROTO_TCP && ip.protocol != PROTO_UDP {
            return false;
        }
        let Some((sp, dp)) = ip.ports else {
            return false; // a later fragment, or cut before the ports
        };
        self.source_ports.is_none_or(|r| r.contains(sp))
            && self.destination_ports.is_none_or(|r| r.contains(dp))
    }
}

/// Where a list ended for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListResult {
    Accepted(usize),
    Rejected(usize),
    NoMatch,
}

/// A traffic mirror filter: two ordered rule lists, network services, and
/// an optional tcpdump expression.
///
/// Semantics (AWS Traffic Mirroring guide, "Traffic mirror filters"): rules
/// are tried by ascending rule number and the first match decides. A filter
/// with no rule and no network service keeps everything (nothing was
/// configured); once it has any, a packet that no rule of its direction
/// accepts is not kept, as AWS mirrors nothing that no rule accepts (so a
/// filter with ingress rules only keeps ingress traffic only). A frame that
/// is not IP (ARP, …) matches no rule: AWS never mirrors it either.
/// `amazon-dns` keeps DNS (UDP or TCP port 53) to and from the VPC
/// resolver in both directions, whatever the rules say.
#[derive(Debug, Default)]
pub struct MirrorFilter {
    /// Where it was configured, for counters: `filter`, or
    /// `session vni=N source=A`.
    pub name: String,
    /// Sorted by rule number.
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub amazon_dns: bool,
    /// The VPC resolver's addresses: base + 2 of each `vpc_cidrs` block,
    /// 169.254.169.253 and fd00:ec2::253.
    pub resolvers: Vec<IpAddr>,
    pub bpf: Option<Bpf>,
    /// Packets kept by `amazon-dns` regardless of the rules.
    pub amazon_dns_hits: AtomicU64,
}

/// The Amazon DNS server's link-local addresses.
pub const AMAZON_DNS_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253));
pub const AMAZON_DNS_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253));

/// The VPC resolver of a VPC CIDR block: its base address plus two.
pub fn vpc_resolver(net: IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(2))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(2))),
    }
}

impl crate::telemetry::counters::RuleCounts for MirrorFilter {
    fn rule_counts(&self) -> Vec<RuleCount> {
        MirrorFilter::rule_counts(self)
    }
}

impl MirrorFilter {
    /// A filter with these rule lists, put in rule-number order.
    pub fn with_rules(name: String, mut ingress: Vec<Rule>, mut egress: Vec<Rule>) -> MirrorFilter {
        ingress.sort_by_key(|r| r.number);
        egress.sort_by_key(|r| r.number);
        MirrorFilter {
            name,
            ingress,
            egress,
            resolvers: vec![AMAZON_DNS_V4, AMAZON_DNS_V6],
            ..Default::default()
        }
    }

    /// Whether the rule part has anything configured.
    pub fn has_rules(&self) -> bool {
        !self.ingress.is_empty() || !self.egress.is_empty() || self.amazon_dns
    }

    fn is_amazon_dns(&self, ip: &IpInfo) -> bool {
        let Some((sp, dp)) = ip.ports else {
            return false;
        };
        (ip.protocol == PROTO_TCP || ip.protocol == PROTO_UDP)
            && ((dp == 53 && self.resolvers.contains(&ip.dst))
                || (sp == 53 && self.resolvers.contains(&ip.src)))
    }

    fn run_list(list: &[Rule], ip: &IpInfo) -> ListResult {
        for (i, r) in list.iter().enumerate() {
            if r.matches(ip) {
                return match r.action {
                    RuleAction::Accept => ListResult::Accepted(i),
                    RuleAction::Reject => ListResult::Rejected(i),
                };
            }
        }
        ListResult::NoMatch
    }

    /// Applies the rules, then the tcpdump expression, to one frame.
    pub fn evaluate(
        &self,
        d: &Decoded,
        frame: &[u8],
        wire_len: usize,
        own: &OwnAddresses,
    ) -> Result<(), DropReason> {
        if self.has_rules() {
            self.evaluate_rules(d, own)?;
        }
        match &self.bpf {
            Some(b) if !b.matches(frame, wire_len) => Err(DropReason::Bpf),
            _ => Ok(()),
        }
    }

    fn evaluate_rules(&self, d: &Decoded, own: &OwnAddresses) -> Result<(), DropReason> {
        let Some(ip) = &d.ip else {
            return Err(DropReason::NoRuleMatched);
        };
        if self.amazon_dns && self.is_amazon_dns(ip) {
            self.amazon_dns_hits.fetch_add(1, Relaxed);
            return Ok(());
        }
        let results: [(ListResult, &[Rule]); 2] = match own.direction(ip) {
            Some(Direction::Ingress) => [
                (Self::run_list(&self.ingress, ip), &self.ingress),
                (ListResult::NoMatch, &[]),
            ],
            Some(Direction::Egress) => [
                (Self::run_list(&self.egress, ip), &self.egress),
                (ListResult::NoMatch, &[]),
            ],
            None => [
                (Self::run_list(&self.ingress, ip), &self.ingress),
                (Self::run_list(&self.egress, ip), &self.egress),
            ],
        };
        if let Some((ListResult::Accepted(i), list)) = results
            .iter()
            .find(|(r, _)| matches!(r, ListResult::Accepted(_)))
        {
            list[*i].hits.fetch_add(1, Relaxed);
            return Ok(());
        }
        let mut rejected = false;
        for (r, list) in &results {
            if let ListResult::Rejected(i) = r {
                list[*i].hits.fetch_add(1, Relaxed);
                rejected = true;
            }
        }
        Err(if rejected {
            DropReason::RuleRejected
        } else {
            DropReason::NoRuleMatched
        })
    }

    /// Per-rule counts for the summary and metrics.
    pub fn rule_counts(&self) -> Vec<RuleCount> {
        let mut v = Vec::new();
        for (dir, list) in [
            (Direction::Ingress, &self.ingress),
            (Direction::Egress, &self.egress),
        ] {
            for r in list {
                v.push(RuleCount {
                    filter: self.name.clone(),
                    direction: dir.name(),
                    rule: r.number.to_string(),
                    action: match r.action {
                        RuleAction::Accept => "accept",
                        RuleAction::Reject => "reject",
                    },
                    packets: r.hits.load(Relaxed),
                });
            }
        }
        if self.amazon_dns {
            v.push(RuleCount {
                filter: self.name.clone(),
                direction: "both",
                rule: "amazon-dns".into(),
                action: "accept",
                packets: self.amazon_dns_hits.load(Relaxed),
            });
        }
        v
    }
}

#[cfg(test)]
mod tests;
