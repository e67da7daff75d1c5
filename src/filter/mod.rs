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
//! list accepts it.

pub mod bpf;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ipnet::IpNet;

use crate::filter::bpf::Bpf;
use crate::telemetry::metrics::DropReason;
use crate::wire::decode::{Decoded, IpInfo, PROTO_TCP, PROTO_UDP};

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

impl crate::telemetry::metrics::RuleCounts for MirrorFilter {
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

pub use crate::telemetry::metrics::RuleCount;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode::decode;

    fn net(s: &str) -> IpNet {
        s.parse::<IpNet>().unwrap().trunc()
    }

    fn rule(
        number: u32,
        action: RuleAction,
        protocol: Option<u8>,
        src: &str,
        dst: &str,
        sports: Option<(u16, u16)>,
        dports: Option<(u16, u16)>,
    ) -> Rule {
        Rule {
            number,
            action,
            protocol,
            source: net(src),
            destination: net(dst),
            source_ports: sports.map(|(from, to)| PortRange { from, to }),
            destination_ports: dports.map(|(from, to)| PortRange { from, to }),
            description: String::new(),
            hits: AtomicU64::new(0),
        }
    }

    use RuleAction::{Accept, Reject};

    /// An Ethernet/IPv4 frame with a transport header of `proto`.
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    fn v6(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, proto, 64]);
        f.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    const ENI: [u8; 4] = [10, 0, 1, 5];
    const PEER: [u8; 4] = [192, 0, 2, 9];

    fn own() -> OwnAddresses {
        OwnAddresses {
            outer: IpAddr::V4(ENI.into()),
            extra: vec![net("10.0.1.100/32"), net("2001:db8::5/128")],
        }
    }

    fn filter(ingress: Vec<Rule>, egress: Vec<Rule>) -> MirrorFilter {
        MirrorFilter::with_rules("filter".into(), ingress, egress)
    }

    fn eval(f: &MirrorFilter, frame: &[u8]) -> Result<(), DropReason> {
        f.evaluate(&decode(frame), frame, frame.len(), &own())
    }

    #[test]
    fn table() {
        use DropReason::{NoRuleMatched as NoMatch, RuleRejected as Rejected};
        let ssh_in = v4(PEER, ENI, 6, 40000, 22);
        let ssh_out = v4(ENI, PEER, 6, 22, 40000);
        let icmp_in = v4(PEER, ENI, 1, 0x0800, 0);
        let udp_in = v4(PEER, ENI, 17, 5000, 22);
        let sctp_in = v4(PEER, ENI, 132, 5000, 22);
        let mut later_frag = ssh_in.clone();
        later_frag[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]);
        let mut first_frag = ssh_in.clone();
        first_frag[14 + 6..14 + 8].copy_from_slice(&[0x20, 0x00]);
        let cut = ssh_in[..14 + 20 + 4].to_vec();
        let v6_in = v6("2001:db8::9", "2001:db8::5", 6, 40000, 22);
        let transit = v4(PEER, [198, 51, 100, 1], 6, 40000, 22);
        let to_secondary = v4(PEER, [10, 0, 1, 100], 17, 1, 2);
        let any4 = "0.0.0.0/0";
        let any6 = "::/0";
        let accept_ssh_in = || rule(100, Accept, Some(6), any4, any4, None, Some((22, 22)));
        type Case<'a> = (&'a str, MirrorFilter, &'a Vec<u8>, Result<(), DropReason>);
        let cases: Vec<Case> = vec![
            (
                "empty filter keeps all",
                filter(vec![], vec![]),
                &icmp_in,
                Ok(()),
            ),
            (
                "accept matches",
                filter(vec![accept_ssh_in()], vec![]),
                &ssh_in,
                Ok(()),
            ),
            (
                "no rule for egress",
                filter(vec![accept_ssh_in()], vec![]),
                &ssh_out,
                Err(NoMatch),
            ),
            (
                "no match",
                filter(vec![accept_ssh_in()], vec![]),
                &icmp_in,
                Err(NoMatch),
            ),
            (
                "first match by number decides (reject 10 before accept 100)",
                filter(
                    vec![
                        accept_ssh_in(),
                        rule(10, Reject, None, "192.0.2.0/24", any4, None, None),
                    ],
                    vec![],
                ),
                &ssh_in,
                Err(Rejected),
            ),
            (
                "protocol 0/absent = all",
                filter(vec![rule(1, Accept, None, any4, any4, None, None)], vec![]),
                &icmp_in,
                Ok(()),
            ),
            (
                "ports only for TCP/UDP: UDP matches",
                filter(
                    vec![rule(1, Accept, None, any4, any4, None, Some((20, 22)))],
                    vec![],
                ),
                &udp_in,
                Ok(()),
            ),
            (
                "ports only for TCP/UDP: SCTP does not",
                filter(
                    vec![rule(1, Accept, None, any4, any4, None, Some((20, 22)))],
                    vec![],
                ),
                &sctp_in,
                Err(NoMatch),
            ),
            (
                "port ranges never match ICMP",
                filter(
                    vec![rule(1, Accept, None, any4, any4, Some((0, 65535)), None)],
                    vec![],
                ),
                &icmp_in,
                Err(NoMatch),
            ),
            (
                "inclusive range, upper edge",
                filter(
                    vec![rule(1, Accept, Some(6), any4, any4, None, Some((10, 22)))],
                    vec![],
                ),
                &ssh_in,
                Ok(()),
            ),
            (
                "inclusive range, lower edge",
                filter(
                    vec![rule(1, Accept, Some(6), any4, any4, None, Some((22, 30)))],
                    vec![],
                ),
                &ssh_in,
                Ok(()),
            ),
            (
                "outside range",
                filter(
                    vec![rule(1, Accept, Some(6), any4, any4, None, Some((23, 30)))],
                    vec![],
                ),
                &ssh_in,
                Err(NoMatch),
            ),
            (
                "source port range",
                filter(
                    vec![],
                    vec![rule(1, Accept, Some(6), any4, any4, Some((22, 22)), None)],
                ),
                &ssh_out,
                Ok(()),
            ),
            (
                "later fragment has no ports",
                filter(vec![accept_ssh_in()], vec![]),
                &later_frag,
                Err(NoMatch),
            ),
            (
                "later fragment matches a rule without ports",
                filter(
                    vec![rule(1, Accept, Some(6), any4, any4, None, None)],
                    vec![],
                ),
                &later_frag,
                Ok(()),
            ),
            (
                "first fragment has ports",
                filter(vec![accept_ssh_in()], vec![]),
                &first_frag,
                Ok(()),
            ),
            (
                "truncated frame keeps its ports",
                filter(vec![accept_ssh_in()], vec![]),
                &cut,
                Ok(()),
            ),
            (
                "IPv4 rule never matches IPv6",
                filter(vec![accept_ssh_in()], vec![]),
                &v6_in,
                Err(NoMatch),
            ),
            (
                "IPv6 rule matches IPv6 (direction by configured address)",
                filter(
                    vec![rule(
                        1,
                        Accept,
                        Some(6),
                        any6,
                        "2001:db8::/64",
                        None,
                        Some((22, 22)),
                    )],
                    vec![],
                ),
                &v6_in,
                Ok(()),
            ),
            (
                "IPv6 rule never matches IPv4",
                filter(vec![rule(1, Accept, None, any6, any6, None, None)], vec![]),
                &ssh_in,
                Err(NoMatch),
            ),
            (
                "unknown direction: kept when the egress list accepts",
                filter(
                    vec![],
                    vec![rule(5, Accept, None, any4, "198.51.100.0/24", None, None)],
                ),
                &transit,
                Ok(()),
            ),
            (
                "unknown direction: dropped when neither list accepts",
                filter(
                    vec![rule(5, Reject, None, any4, any4, None, None)],
                    vec![rule(5, Accept, Some(17), any4, any4, None, None)],
                ),
                &transit,
                Err(Rejected),
            ),
            (
                "direction uses the configured secondary address",
                filter(
                    vec![rule(1, Accept, None, any4, "10.0.1.100/32", None, None)],
                    vec![],
                ),
                &to_secondary,
                Ok(()),
            ),
        ];
        for (name, f, frame, want) in cases {
            assert_eq!(eval(&f, frame), want, "{name}");
        }
    }

    #[test]
    fn vlan_and_qinq_frames_are_filtered_on_their_ip() {
        let f = filter(
            vec![rule(
                1,
                Accept,
                Some(6),
                "0.0.0.0/0",
                "0.0.0.0/0",
                None,
                Some((22, 22)),
            )],
            vec![],
        );
        let base = v4(PEER, ENI, 6, 40000, 22);
        for tags in [
            &[0x81, 0x00, 0x00, 0x2a][..],
            &[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20][..],
        ] {
            let mut t = base[..12].to_vec();
            t.extend_from_slice(tags);
            t.extend_from_slice(&base[12..]);
            assert_eq!(eval(&f, &t), Ok(()));
        }
    }

    #[test]
    fn non_ip_matches_no_rule() {
        let f = filter(
            vec![rule(1, Accept, None, "0.0.0.0/0", "0.0.0.0/0", None, None)],
            vec![],
        );
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(eval(&f, &arp), Err(DropReason::NoRuleMatched));
        assert_eq!(eval(&filter(vec![], vec![]), &arp), Ok(()));
    }

    #[test]
    fn amazon_dns_regardless_of_rules() {
        let mut f = filter(
            vec![rule(1, Reject, None, "0.0.0.0/0", "0.0.0.0/0", None, None)],
            vec![],
        );
        f.amazon_dns = true;
        f.resolvers = vec![
            vpc_resolver(net("10.0.0.0/16")),
            AMAZON_DNS_V4,
            AMAZON_DNS_V6,
        ];
        assert_eq!(f.resolvers[0], "10.0.0.2".parse::<IpAddr>().unwrap());
        let query = v4(ENI, [10, 0, 0, 2], 17, 33333, 53);
        let answer = v4([10, 0, 0, 2], ENI, 17, 53, 33333);
        let link_local = v4(ENI, [169, 254, 169, 253], 6, 33333, 53);
        let other_dns = v4(PEER, ENI, 17, 53, 33333);
        assert_eq!(eval(&f, &query), Ok(()));
        assert_eq!(eval(&f, &answer), Ok(()));
        assert_eq!(eval(&f, &link_local), Ok(()));
        assert_eq!(eval(&f, &other_dns), Err(DropReason::RuleRejected));
        assert_eq!(f.amazon_dns_hits.load(Relaxed), 3);
        // amazon-dns alone: only DNS to the resolver is kept.
        let mut only = filter(vec![], vec![]);
        only.amazon_dns = true;
        only.resolvers = vec![AMAZON_DNS_V4];
        assert_eq!(eval(&only, &link_local), Ok(()));
        assert_eq!(eval(&only, &other_dns), Err(DropReason::NoRuleMatched));
    }

    #[test]
    fn rules_count_what_they_decide() {
        let f = filter(
            vec![
                rule(10, Reject, Some(1), "0.0.0.0/0", "0.0.0.0/0", None, None),
                rule(20, Accept, None, "0.0.0.0/0", "0.0.0.0/0", None, None),
            ],
            vec![],
        );
        for _ in 0..3 {
            let _ = eval(&f, &v4(PEER, ENI, 1, 0, 0));
        }
        let _ = eval(&f, &v4(PEER, ENI, 6, 1, 2));
        let c = f.rule_counts();
        assert_eq!(
            (c[0].rule.as_str(), c[0].action, c[0].packets),
            ("10", "reject", 3)
        );
        assert_eq!(
            (c[1].rule.as_str(), c[1].action, c[1].packets),
            ("20", "accept", 1)
        );
    }
}
