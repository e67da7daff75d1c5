//! Tests of the AWS rule semantics: rule tables over crafted frames,
//! VLAN tags, non-IP frames, `amazon-dns`, and the per-rule counts.

use super::*;
use crate::wire::decode::decode;
use DropReason::{NoRuleMatched as NoMatch, RuleRejected as Rejected};

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

const ANY4: &str = "0.0.0.0/0";
const ANY6: &str = "::/0";

/// The frames the rule tables decide.
struct Frames {
    ssh_in: Vec<u8>,
    ssh_out: Vec<u8>,
    icmp_in: Vec<u8>,
    udp_in: Vec<u8>,
    sctp_in: Vec<u8>,
    later_frag: Vec<u8>,
    first_frag: Vec<u8>,
    cut: Vec<u8>,
    v6_in: Vec<u8>,
    transit: Vec<u8>,
    to_secondary: Vec<u8>,
}

impl Frames {
    fn new() -> Frames {
        let ssh_in = v4(PEER, ENI, 6, 40000, 22);
        let mut later_frag = ssh_in.clone();
        later_frag[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]);
        let mut first_frag = ssh_in.clone();
        first_frag[14 + 6..14 + 8].copy_from_slice(&[0x20, 0x00]);
        Frames {
            ssh_out: v4(ENI, PEER, 6, 22, 40000),
            icmp_in: v4(PEER, ENI, 1, 0x0800, 0),
            udp_in: v4(PEER, ENI, 17, 5000, 22),
            sctp_in: v4(PEER, ENI, 132, 5000, 22),
            later_frag,
            first_frag,
            cut: ssh_in[..14 + 20 + 4].to_vec(),
            v6_in: v6("2001:db8::9", "2001:db8::5", 6, 40000, 22),
            transit: v4(PEER, [198, 51, 100, 1], 6, 40000, 22),
            to_secondary: v4(PEER, [10, 0, 1, 100], 17, 1, 2),
            ssh_in,
        }
    }
}

fn accept_ssh_in() -> Rule {
    rule(100, Accept, Some(6), ANY4, ANY4, None, Some((22, 22)))
}

/// A named filter, the frame it decides and the decision expected.
type Case<'a> = (&'a str, MirrorFilter, &'a Vec<u8>, Result<(), DropReason>);

fn check(cases: Vec<Case>) {
    for (name, f, frame, want) in cases {
        assert_eq!(eval(&f, frame), want, "{name}");
    }
}

/// An empty filter keeps all; otherwise the first rule of the
/// packet's direction that matches, by rule number, decides.
#[test]
fn rules_first_match_decides() {
    let fr = Frames::new();
    check(vec![
        (
            "empty filter keeps all",
            filter(vec![], vec![]),
            &fr.icmp_in,
            Ok(()),
        ),
        (
            "accept matches",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.ssh_in,
            Ok(()),
        ),
        (
            "no rule for egress",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.ssh_out,
            Err(NoMatch),
        ),
        (
            "no match",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.icmp_in,
            Err(NoMatch),
        ),
        (
            "first match by number decides (reject 10 before accept 100)",
            filter(
                vec![
                    accept_ssh_in(),
                    rule(10, Reject, None, "192.0.2.0/24", ANY4, None, None),
                ],
                vec![],
            ),
            &fr.ssh_in,
            Err(Rejected),
        ),
        (
            "protocol 0/absent = all",
            filter(vec![rule(1, Accept, None, ANY4, ANY4, None, None)], vec![]),
            &fr.icmp_in,
            Ok(()),
        ),
    ]);
}

/// Port ranges are inclusive, and only TCP or UDP packets match them.
#[test]
fn port_ranges_only_for_tcp_and_udp() {
    let fr = Frames::new();
    check(vec![
        (
            "ports only for TCP/UDP: UDP matches",
            filter(
                vec![rule(1, Accept, None, ANY4, ANY4, None, Some((20, 22)))],
                vec![],
            ),
            &fr.udp_in,
            Ok(()),
        ),
        (
            "ports only for TCP/UDP: SCTP does not",
            filter(
                vec![rule(1, Accept, None, ANY4, ANY4, None, Some((20, 22)))],
                vec![],
            ),
            &fr.sctp_in,
            Err(NoMatch),
        ),
        (
            "port ranges never match ICMP",
            filter(
                vec![rule(1, Accept, None, ANY4, ANY4, Some((0, 65535)), None)],
                vec![],
            ),
            &fr.icmp_in,
            Err(NoMatch),
        ),
        (
            "inclusive range, upper edge",
            filter(
                vec![rule(1, Accept, Some(6), ANY4, ANY4, None, Some((10, 22)))],
                vec![],
            ),
            &fr.ssh_in,
            Ok(()),
        ),
        (
            "inclusive range, lower edge",
            filter(
                vec![rule(1, Accept, Some(6), ANY4, ANY4, None, Some((22, 30)))],
                vec![],
            ),
            &fr.ssh_in,
            Ok(()),
        ),
        (
            "outside range",
            filter(
                vec![rule(1, Accept, Some(6), ANY4, ANY4, None, Some((23, 30)))],
                vec![],
            ),
            &fr.ssh_in,
            Err(NoMatch),
        ),
        (
            "source port range",
            filter(
                vec![],
                vec![rule(1, Accept, Some(6), ANY4, ANY4, Some((22, 22)), None)],
            ),
            &fr.ssh_out,
            Ok(()),
        ),
    ]);
}

/// Only a packet with ports can match a port range: not a later
/// fragment; a first fragment and a cut frame keep theirs.
#[test]
fn fragments_and_cut_frames() {
    let fr = Frames::new();
    check(vec![
        (
            "later fragment has no ports",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.later_frag,
            Err(NoMatch),
        ),
        (
            "later fragment matches a rule without ports",
            filter(
                vec![rule(1, Accept, Some(6), ANY4, ANY4, None, None)],
                vec![],
            ),
            &fr.later_frag,
            Ok(()),
        ),
        (
            "first fragment has ports",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.first_frag,
            Ok(()),
        ),
        (
            "truncated frame keeps its ports",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.cut,
            Ok(()),
        ),
    ]);
}

/// A rule matches only packets of its address family.
#[test]
fn address_families_never_mix() {
    let fr = Frames::new();
    check(vec![
        (
            "IPv4 rule never matches IPv6",
            filter(vec![accept_ssh_in()], vec![]),
            &fr.v6_in,
            Err(NoMatch),
        ),
        (
            "IPv6 rule matches IPv6 (direction by configured address)",
            filter(
                vec![rule(
                    1,
                    Accept,
                    Some(6),
                    ANY6,
                    "2001:db8::/64",
                    None,
                    Some((22, 22)),
                )],
                vec![],
            ),
            &fr.v6_in,
            Ok(()),
        ),
        (
            "IPv6 rule never matches IPv4",
            filter(vec![rule(1, Accept, None, ANY6, ANY6, None, None)], vec![]),
            &fr.ssh_in,
            Err(NoMatch),
        ),
    ]);
}

/// Direction comes from the session's own addresses; unknown, either
/// list may keep the packet.
#[test]
fn direction_from_own_addresses() {
    let fr = Frames::new();
    check(vec![
        (
            "unknown direction: kept when the egress list accepts",
            filter(
                vec![],
                vec![rule(5, Accept, None, ANY4, "198.51.100.0/24", None, None)],
            ),
            &fr.transit,
            Ok(()),
        ),
        (
            "unknown direction: dropped when neither list accepts",
            filter(
                vec![rule(5, Reject, None, ANY4, ANY4, None, None)],
                vec![rule(5, Accept, Some(17), ANY4, ANY4, None, None)],
            ),
            &fr.transit,
            Err(Rejected),
        ),
        (
            "direction uses the configured secondary address",
            filter(
                vec![rule(1, Accept, None, ANY4, "10.0.1.100/32", None, None)],
                vec![],
            ),
            &fr.to_secondary,
            Ok(()),
        ),
    ]);
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
