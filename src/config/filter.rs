//! Filters: the `[filter]` table, each `[[session]]` entry and the
//! `[session.filter]` it may carry, the AWS rules of an `aws_json` file,
//! and `bpf` expressions. In: the raw tables; out: [`MirrorFilter`]s and
//! [`SessionConfig`]s, or the positioned error. Each TOML rule is placed
//! at its own line; a rule from `aws_json` is placed at the `aws_json` key.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::context::Ctx;
use super::raw::{ProtocolValue, RawFilter, RawPortRange, RawRule, RawSession, RuleInput, Spanned};
use super::values::{endpoint, parse_net_or_ip, vni};
use super::{ConfigError, aws};
use crate::filter::{Direction, MirrorFilter, PortRange, Rule, RuleAction, bpf::Bpf, vpc_resolver};

/// A `[[session]]` entry: what is known about one mirror session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub vni: u32,
    /// The outer source address; `None` = any source with this VNI.
    pub source: Option<std::net::IpAddr>,
    /// The Gateway Load Balancer endpoint; `None` = any endpoint, and
    /// direct traffic. An entry naming one applies only to sessions
    /// through it.
    pub endpoint: Option<crate::wire::geneve::EndpointId>,
    /// The ENI's addresses besides the outer source (secondary IPs,
    /// prefixes), for direction.
    pub addresses: Vec<IpNet>,
    /// Replaces `[filter]` for this session when present.
    pub filter: Option<Arc<MirrorFilter>>,
}

/// `[filter]`: the filter of every session without its own.
pub(super) fn default_filter(
    cx: &Ctx,
    raw: Option<RawFilter>,
) -> Result<Option<Arc<MirrorFilter>>, ConfigError> {
    match raw {
        Some(f) => Ok(Some(Arc::new(build(cx, f, "filter", "filter".into())?))),
        None => Ok(None),
    }
}

/// `[[session]]` entries: each (vni, source) once.
pub(super) fn sessions(cx: &Ctx, raw: Vec<RawSession>) -> Result<Vec<SessionConfig>, ConfigError> {
    let mut sessions: Vec<SessionConfig> = Vec::new();
    for rs in raw {
        let vni = vni(cx, &rs.vni)?;
        let source = match &rs.source {
            None => None,
            Some(s) => Some(s.get_ref().parse().map_err(|_| {
                cx.err(
                    s.span(),
                    format!(
                        "{:?} is not an IP address: expected e.g. \"10.0.1.5\" or \"2001:db8::5\"",
                        s.get_ref()
                    ),
                )
            })?),
        };
        let endpoint = rs.endpoint.as_ref().map(|e| endpoint(cx, e)).transpose()?;
        if let Some(dup) = sessions
            .iter()
            .find(|x| x.vni == vni && x.source == source && x.endpoint == endpoint)
        {
            return Err(cx.err(
                rs.vni.span(),
                format!(
                    "a second [[session]] for VNI {vni}{}{}: each (vni, source, endpoint) may appear once",
                    dup.source
                        .map(|s| format!(" and source {s}"))
                        .unwrap_or_default(),
                    dup.endpoint
                        .map(|e| format!(" and endpoint {e}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let mut addresses = Vec::new();
        for a in &rs.addresses {
            addresses.push(parse_net_or_ip(a.get_ref()).map_err(|m| cx.err(a.span(), m))?);
        }
        let mut name = match source {
            Some(s) => format!("session vni={vni} source={s}"),
            None => format!("session vni={vni}"),
        };
        if let Some(e) = endpoint {
            name.push_str(&format!(" endpoint={e}"));
        }
        let filter = match rs.filter {
            Some(f) => Some(Arc::new(build(cx, f, "session.filter", name)?)),
            None => None,
        };
        sessions.push(SessionConfig {
            vni,
            source,
            endpoint,
            addresses,
            filter,
        });
    }
    Ok(sessions)
}

/// A filter's rules, by direction.
#[derive(Default)]
struct Rules {
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

impl Rules {
    fn list(&mut self, dir: Direction) -> &mut Vec<Rule> {
        match dir {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// Builds one filter from a `[filter]` or `[session.filter]` table named
/// `table` in messages; `name` is the filter's name in counters.
fn build(cx: &Ctx, raw: RawFilter, table: &str, name: String) -> Result<MirrorFilter, ConfigError> {
    let mut rules = Rules::default();
    let toml_rules = toml_rules(cx, &mut rules, raw.ingress, raw.egress)?;
    let mut services: Vec<(String, Range<usize>)> = raw
        .network_services
        .iter()
        .map(|s| (s.get_ref().clone(), s.span()))
        .collect();
    if let Some(json) = &raw.aws_json {
        if toml_rules > 0 {
            return Err(cx.err(
                json.span(),
                format!("{table}: aws_json and [[{table}.ingress]]/[[{table}.egress]] rules are both given: use one source of rules"),
            ));
        }
        let aws_services = aws_rules(cx, &mut rules, json, raw.aws_filter_id.as_ref())?;
        services.extend(aws_services.into_iter().map(|s| (s, json.span())));
    } else if let Some(id) = &raw.aws_filter_id {
        return Err(cx.err(
            id.span(),
            "aws_filter_id needs aws_json (the file to select from)".into(),
        ));
    }
    let mut f = MirrorFilter::with_rules(name, rules.ingress, rules.egress);
    for (s, span) in services {
        match s.as_str() {
            "amazon-dns" => f.amazon_dns = true,
            other => {
                return Err(cx.err(
                    span,
                    format!("network service {other:?} is not known: expected \"amazon-dns\""),
                ));
            }
        }
    }
    for c in &raw.vpc_cidrs {
        let n = parse_cidr(c.get_ref()).map_err(|m| cx.err(c.span(), m))?;
        f.resolvers.push(vpc_resolver(n));
    }
    if let Some(b) = &raw.bpf {
        f.bpf = Some(Bpf::compile(b.get_ref()).map_err(|e| cx.err(b.span(), e.to_string()))?);
    }
    Ok(f)
}

/// `[[*.ingress]]` and `[[*.egress]]` rules, each placed at its own line;
/// a rule number used twice in one direction names both lines. Returns
/// how many rules there were.
fn toml_rules(
    cx: &Ctx,
    rules: &mut Rules,
    ingress: Vec<RawRule>,
    egress: Vec<RawRule>,
) -> Result<usize, ConfigError> {
    let mut spans: Vec<(Direction, u32, Range<usize>)> = Vec::new();
    for (dir, list) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        for r in list {
            let span = r.rule_number.span();
            let number = *r.rule_number.get_ref();
            let rule = check_rule(RuleInput {
                number,
                action: r.rule_action.get_ref().clone(),
                protocol: r.protocol.map(|p| p.into_inner()),
                source: r.source_cidr_block.into_inner(),
                destination: r.destination_cidr_block.into_inner(),
                source_ports: r.source_port_range.map(|p| p.into_inner()),
                destination_ports: r.destination_port_range.map(|p| p.into_inner()),
                description: r.description.unwrap_or_default(),
            })
            .map_err(|m| cx.err(span.clone(), m))?;
            if let Some((_, _, first)) = spans.iter().find(|(d, n, _)| *d == dir && *n == number) {
                let l1 = cx.line(first.clone());
                let l2 = cx.line(span.clone());
                return Err(cx.err(
                    span,
                    format!(
                        "rule_number {number} is used by two {} rules (lines {l1} and {l2}): rule numbers must be unique per direction",
                        dir.name()
                    ),
                ));
            }
            spans.push((dir, number, span));
            rules.list(dir).push(rule);
        }
    }
    Ok(spans.len())
}

/// The rules of the filter selected in `aws_json` (path relative to the
/// config file), every error placed at the `aws_json` key. Returns the
/// filter's network services.
fn aws_rules(
    cx: &Ctx,
    rules: &mut Rules,
    json: &Spanned<std::path::PathBuf>,
    id: Option<&Spanned<String>>,
) -> Result<Vec<String>, ConfigError> {
    let base_dir = cx.path.parent().unwrap_or(Path::new("."));
    let file = base_dir.join(json.get_ref());
    let aws =
        aws::load(&file, id.map(|s| s.get_ref().as_str())).map_err(|m| cx.err(json.span(), m))?;
    for (dir, r) in aws.rules {
        let number = r.number;
        let rule =
            check_rule(r).map_err(|m| cx.err(json.span(), format!("{}: {m}", file.display())))?;
        let list = rules.list(dir);
        if list.iter().any(|x| x.number == number) {
            return Err(cx.err(
                json.span(),
                format!(
                    "{}: rule number {number} appears twice in {} rules",
                    file.display(),
                    dir.name()
                ),
            ));
        }
        list.push(rule);
    }
    Ok(aws.network_services)
}

/// A CIDR block as a rule needs it (host bits cleared, as AWS does).
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
        format!(
            "{s:?} is not a CIDR block: expected e.g. \"10.0.0.0/8\", \"0.0.0.0/0\" or \"::/0\""
        )
    })
}

/// A protocol as a rule gives it: an IANA number, or a name.
fn parse_protocol(v: &ProtocolValue) -> Result<Option<u8>, String> {
    let accepted =
        "expected an IANA protocol number 0-255 (0 = all) or tcp, udp, icmp, icmpv6, all";
    match v {
        ProtocolValue::Number(0) | ProtocolValue::Number(-1) => Ok(None),
        ProtocolValue::Number(n) => u8::try_from(*n)
            .map(Some)
            .map_err(|_| format!("protocol {n} is out of range: {accepted}")),
        ProtocolValue::Name(s) => match s.to_ascii_lowercase().as_str() {
            "all" | "-1" | "0" => Ok(None),
            "tcp" => Ok(Some(6)),
            "udp" => Ok(Some(17)),
            "icmp" => Ok(Some(1)),
            "icmpv6" | "ipv6-icmp" => Ok(Some(58)),
            other => other
                .parse::<u8>()
                .map(|n| (n != 0).then_some(n))
                .map_err(|_| format!("{s:?} is not a protocol: {accepted}")),
        },
    }
}

/// Checks one rule; the error is the message only (the caller places it).
fn check_rule(r: RuleInput) -> Result<Rule, String> {
    let action = match r.action.to_ascii_lowercase().as_str() {
        "accept" => RuleAction::Accept,
        "reject" => RuleAction::Reject,
        _ => {
            return Err(format!(
                "rule {}: rule_action {:?} is not an action: expected \"accept\" or \"reject\"",
                r.number, r.action
            ));
        }
    };
    let protocol = match &r.protocol {
        None => None,
        Some(p) => parse_protocol(p).map_err(|m| format!("rule {}: {m}", r.number))?,
    };
    let source =
        parse_cidr(&r.source).map_err(|m| format!("rule {}: source_cidr_block {m}", r.number))?;
    let destination = parse_cidr(&r.destination)
        .map_err(|m| format!("rule {}: destination_cidr_block {m}", r.number))?;
    if source.addr().is_ipv4() != destination.addr().is_ipv4() {
        return Err(format!(
            "rule {}: source_cidr_block {source} and destination_cidr_block {destination} are of different IP families: both must be IPv4 or both IPv6",
            r.number
        ));
    }
    let range = |p: Option<RawPortRange>, which: &str| -> Result<Option<PortRange>, String> {
        match p {
            None => Ok(None),
            Some(p) if p.from_port <= p.to_port => Ok(Some(PortRange {
                from: p.from_port,
                to: p.to_port,
            })),
            Some(p) => Err(format!(
                "rule {}: {which} from_port {} is above to_port {}: a range is inclusive, from_port <= to_port",
                r.number, p.from_port, p.to_port
            )),
        }
    };
    Ok(Rule {
        number: r.number,
        action,
        protocol,
        source,
        destination,
        source_ports: range(r.source_ports, "source_port_range")?,
        destination_ports: range(r.destination_ports, "destination_port_range")?,
        description: r.description,
        hits: Default::default(),
    })
}
