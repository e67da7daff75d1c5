//! The VPC Flow Logs text format: the field list (versions 2 to 8),
//! parsing a custom format (`${field}` tokens), and rendering one record.
//!
//! In: a format string from the config; a flow (its key and sums) or a
//! NODATA marker, with its session's metadata and Gateway Load Balancer
//! endpoint. Out: the record's text line (space-separated, `-` for a
//! field mirrorcap cannot know) and, with `flows.json`, its JSON Lines
//! object. Dropped: nothing; fields mirrorcap cannot know (ECS,
//! reject-reason, sublocation, AWS services, traffic path) are always `-`.
//!
//! One field is mirrorcap's own, not AWS's: `${endpoint}`, the `vpce-…`
//! ID of the Gateway Load Balancer endpoint a GENEVE-borne session came
//! through (`-` for direct traffic). AWS's format has no such field, so
//! a table or parse pattern written for AWS's files (an Athena DDL, a Logs
//! Insights `parse`) must name it when a format uses it. A JSON record of
//! a GENEVE-borne session always has an `endpoint` key, with or without
//! the field in the format: JSON consumers look keys up by name.

use std::fmt::Write as _;

use super::record::{FlowAgg, FlowBatch, FlowKey};
use super::{FlowConfig, FlowMetadata};
use crate::wire::decode::PROTO_TCP;
use crate::wire::geneve::EndpointId;

/// Every field of the VPC Flow Logs custom format (versions 2 to 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Version,
    AccountId,
    InterfaceId,
    SrcAddr,
    DstAddr,
    SrcPort,
    DstPort,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
    VpcId,
    SubnetId,
    InstanceId,
    TcpFlags,
    Type,
    PktSrcAddr,
    PktDstAddr,
    Region,
    AzId,
    SublocationType,
    SublocationId,
    PktSrcAwsService,
    PktDstAwsService,
    FlowDirection,
    TrafficPath,
    /// mirrorcap's own, not an AWS field: the session's Gateway Load
    /// Balancer endpoint (`vpce-…`), `-` for direct traffic.
    Endpoint,
    /// ECS fields (version 7) and reject-reason (version 8): never known
    /// here, always `-`.
    Unknowable,
}

/// (name, field, version that introduced it).
const FIELDS: &[(&str, Field, u8)] = &[
    ("version", Field::Version, 2),
    ("account-id", Field::AccountId, 2),
    ("interface-id", Field::InterfaceId, 2),
    ("srcaddr", Field::SrcAddr, 2),
    ("dstaddr", Field::DstAddr, 2),
    ("srcport", Field::SrcPort, 2),
    ("dstport", Field::DstPort, 2),
    ("protocol", Field::Protocol, 2),
    ("packets", Field::Packets, 2),
    ("bytes", Field::Bytes, 2),
    ("start", Field::Start, 2),
    ("end", Field::End, 2),
    ("action", Field::Action, 2),
    ("log-status", Field::LogStatus, 2),
    ("vpc-id", Field::VpcId, 3),
    ("subnet-id", Field::SubnetId, 3),
    ("instance-id", Field::InstanceId, 3),
    ("tcp-flags", Field::TcpFlags, 3),
    ("type", Field::Type, 3),
    ("pkt-srcaddr", Field::PktSrcAddr, 3),
    ("pkt-dstaddr", Field::PktDstAddr, 3),
    ("region", Field::Region, 4),
    ("az-id", Field::AzId, 4),
    ("sublocation-type", Field::SublocationType, 4),
    ("sublocation-id", Field::SublocationId, 4),
    ("pkt-src-aws-service", Field::PktSrcAwsService, 5),
    ("pkt-dst-aws-service", Field::PktDstAwsService, 5),
    ("flow-direction", Field::FlowDirection, 5),
    ("traffic-path", Field::TrafficPath, 5),
    ("ecs-cluster-arn", Field::Unknowable, 7),
    ("ecs-cluster-name", Field::Unknowable, 7),
    ("ecs-container-instance-arn", Field::Unknowable, 7),
    ("ecs-container-instance-id", Field::Unknowable, 7),
    ("ecs-container-id", Field::Unknowable, 7),
    ("ecs-second-container-id", Field::Unknowable, 7),
    ("ecs-service-name", Field::Unknowable, 7),
    ("ecs-task-definition-arn", Field::Unknowable, 7),
    ("ecs-task-arn", Field::Unknowable, 7),
    ("ecs-task-id", Field::Unknowable, 7),
    ("reject-reason", Field::Unknowable, 8),
    // mirrorcap's own (not in AWS's format): it raises no version.
    ("endpoint", Field::Endpoint, 2),
];

/// The name of every field, in the order of AWS's table (mirrorcap's own
/// `endpoint` last).
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|f| f.0)
}

/// AWS's default format (version 2).
pub const DEFAULT_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}";

/// A parsed custom format: the fields in order, and the version to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFormat {
    pub fields: Vec<Field>,
    pub names: Vec<&'static str>,
    pub version: u8,
}

impl FlowFormat {
    /// Parses AWS's custom-format syntax: `${field}` tokens separated by
    /// spaces.
    pub fn parse(s: &str) -> Result<FlowFormat, String> {
        let mut fields = Vec::new();
        let mut names = Vec::new();
        let mut version = 2;
        for tok in s.split_whitespace() {
            let name = tok
                .strip_prefix("${")
                .and_then(|t| t.strip_suffix('}'))
                .ok_or_else(|| format!("{tok:?} is not a field: write fields as ${{name}} separated by spaces, e.g. \"${{srcaddr}} ${{dstaddr}}\""))?;
            let Some(&(n, f, v)) = FIELDS.iter().find(|(n, _, _)| *n == name) else {
                let known: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
                return Err(format!(
                    "unknown flow log field {name:?}; known: {}",
                    known.join(", ")
                ));
            };
            fields.push(f);
            names.push(n);
            version = version.max(v);
        }
        if fields.is_empty() {
            return Err("the format has no field".into());
        }
        Ok(FlowFormat {
            fields,
            names,
            version,
        })
    }

    /// The header line: the field names.
    pub fn header(&self) -> String {
        self.names.join(" ")
    }
}

pub(super) enum Record<'a> {
    Flow(&'a FlowKey, &'a FlowAgg),
    NoData,
}

fn dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn value(
    f: Field,
    version: u8,
    meta: &FlowMetadata,
    endpoint: Option<EndpointId>,
    rec: &Record,
    window_s: u64,
    interval_s: u64,
) -> String {
    let (k, a) = match rec {
        Record::Flow(k, a) => (Some(*k), Some(*a)),
        Record::NoData => (None, None),
    };
    let secs = |ns: u64| (ns / 1_000_000_000).to_string();
    match f {
        Field::Version => version.to_string(),
        Field::AccountId => dash(&meta.account_id),
        Field::InterfaceId => dash(&meta.interface_id),
        Field::VpcId => dash(&meta.vpc_id),
        Field::SubnetId => dash(&meta.subnet_id),
        Field::InstanceId => dash(&meta.instance_id),
        Field::Region => dash(&meta.region),
        Field::AzId => dash(&meta.az_id),
        Field::SrcAddr | Field::PktSrcAddr => k.map_or("-".into(), |k| k.src.to_string()),
        Field::DstAddr | Field::PktDstAddr => k.map_or("-".into(), |k| k.dst.to_string()),
        Field::SrcPort => k.map_or("-".into(), |k| k.sport.to_string()),
        Field::DstPort => k.map_or("-".into(), |k| k.dport.to_string()),
        Field::Protocol => k.map_or("-".into(), |k| k.protocol.to_string()),
        Field::Packets => a.map_or("-".into(), |a| a.packets.to_string()),
        Field::Bytes => a.map_or("-".into(), |a| a.bytes.to_string()),
        Field::Start => a.map_or(window_s.to_string(), |a| secs(a.first_ns)),
        Field::End => a.map_or((window_s + interval_s).to_string(), |a| secs(a.last_ns)),
        Field::Action => a.map_or("-".into(), |_| "ACCEPT".into()),
        Field::LogStatus => a.map_or("NODATA".into(), |_| "OK".into()),
        Field::TcpFlags => match (k, a) {
            (Some(k), Some(a)) if k.protocol == PROTO_TCP => a.tcp_flags.to_string(),
            (Some(_), Some(_)) => "0".into(),
            _ => "-".into(),
        },
        Field::Type => k.map_or("-".into(), |k| {
            if k.src.is_ipv4() { "IPv4" } else { "IPv6" }.into()
        }),
        Field::Endpoint => endpoint.map_or("-".into(), |e| e.to_string()),
        Field::FlowDirection => a
            .and_then(|a| a.direction)
            .map_or("-".into(), |d| d.name().into()),
        Field::SublocationType
        | Field::SublocationId
        | Field::PktSrcAwsService
        | Field::PktDstAwsService
        | Field::TrafficPath
        | Field::Unknowable => "-".into(),
    }
}

/// Appends one record of a session (its metadata, its endpoint when
/// GENEVE-borne) to `batch`: its text line, and with `flows.json` its JSON
/// object (numbers bare, other values quoted), which has an `endpoint`
/// key for a GENEVE-borne session even when the format does not name it.
pub(super) fn write_record(
    batch: &mut FlowBatch,
    cfg: &FlowConfig,
    meta: &FlowMetadata,
    endpoint: Option<EndpointId>,
    rec: &Record,
    window_s: u64,
) {
    let values: Vec<String> = cfg
        .format
        .fields
        .iter()
        .map(|f| {
            let version = cfg.format.version;
            value(*f, version, meta, endpoint, rec, window_s, cfg.interval_s)
        })
        .collect();
    batch.records += 1;
    if cfg.parquet {
        batch.values.extend(values);
        return;
    }
    let _ = writeln!(batch.lines, "{}", values.join(" "));
    if cfg.json {
        batch.json.push('{');
        for (i, (name, v)) in cfg.format.names.iter().zip(&values).enumerate() {
            if i > 0 {
                batch.json.push(',');
            }
            // A JSON number has no leading zero: `012345678901` (an
            // account ID) stays a string, whole.
            let numeric = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && (v == "0" || !v.starts_with('0'));
            if numeric {
                let _ = write!(batch.json, "\"{name}\":{v}");
            } else {
                let _ = write!(
                    batch.json,
                    "\"{name}\":\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
        }
        if let Some(e) = endpoint
            && !cfg.format.fields.contains(&Field::Endpoint)
        {
            let _ = write!(batch.json, ",\"endpoint\":\"{e}\"");
        }
        batch.json.push_str("}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_versions() {
        let f = FlowFormat::parse(DEFAULT_FORMAT).unwrap();
        assert_eq!(f.version, 2);
        assert_eq!(
            f.header(),
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
        );
        let f = FlowFormat::parse("${srcaddr} ${tcp-flags} ${flow-direction}").unwrap();
        assert_eq!(f.version, 5);
        assert!(
            FlowFormat::parse("${srcaddr} ${nope}")
                .unwrap_err()
                .contains("unknown flow log field \"nope\"")
        );
        assert!(FlowFormat::parse("srcaddr").is_err());
        // mirrorcap's own field raises no version (issue 14 item 4).
        let f = FlowFormat::parse("${srcaddr} ${endpoint}").unwrap();
        assert_eq!((f.version, f.fields[1]), (2, Field::Endpoint));
    }
}
