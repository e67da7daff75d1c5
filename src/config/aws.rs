//! `filter.aws_json`: the output of `aws ec2 describe-traffic-mirror-filters`
//! (or a single filter object from `create-traffic-mirror-filter`'s
//! `TrafficMirrorFilter`), read with AWS's field names. Unknown fields are
//! ignored, so newer CLI output still loads.

use std::path::Path;

use serde::Deserialize;

use super::raw::RuleInput;
use super::raw::{ProtocolValue, RawPortRange};
use crate::filter::Direction;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeOutput {
    traffic_mirror_filters: Option<Vec<AwsFilter>>,
    traffic_mirror_filter: Option<AwsFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsFilter {
    traffic_mirror_filter_id: Option<String>,
    #[serde(default)]
    ingress_filter_rules: Vec<AwsRule>,
    #[serde(default)]
    egress_filter_rules: Vec<AwsRule>,
    #[serde(default)]
    network_services: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsRule {
    traffic_mirror_filter_rule_id: Option<String>,
    traffic_direction: Option<String>,
    rule_number: u32,
    rule_action: String,
    protocol: Option<i64>,
    source_cidr_block: String,
    destination_cidr_block: String,
    source_port_range: Option<AwsPortRange>,
    destination_port_range: Option<AwsPortRange>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsPortRange {
    from_port: Option<u16>,
    to_port: Option<u16>,
}

/// The rules and services of the selected filter.
pub(super) struct AwsRules {
    pub rules: Vec<(Direction, RuleInput)>,
    pub network_services: Vec<String>,
}

/// Reads `path` and selects the filter `id` (required when the file holds
/// more than one). Errors name the file and what is wrong.
pub(super) fn load(path: &Path, id: Option<&str>) -> Result<AwsRules, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("aws_json {}: cannot read: {e}", path.display()))?;
    let out: DescribeOutput = serde_json::from_str(&text).map_err(|e| {
        format!(
            "aws_json {}:{}:{}: {e} (expected the JSON output of `aws ec2 describe-traffic-mirror-filters`)",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let filter = select(path, out, id)?;
    Ok(AwsRules {
        rules: rules(
            path,
            filter.ingress_filter_rules,
            filter.egress_filter_rules,
        )?,
        network_services: filter.network_services,
    })
}

/// The filter `id`, or the only one in the file.
fn select(path: &Path, out: DescribeOutput, id: Option<&str>) -> Result<AwsFilter, String> {
    let mut filters = out.traffic_mirror_filters.unwrap_or_default();
    filters.extend(out.traffic_mirror_filter);
    let ids: Vec<String> = filters
        .iter()
        .map(|f| {
            f.traffic_mirror_filter_id
                .clone()
                .unwrap_or_else(|| "(no id)".into())
        })
        .collect();
    let filter = match id {
        Some(id) => filters
            .into_iter()
            .find(|f| f.traffic_mirror_filter_id.as_deref() == Some(id))
            .ok_or_else(|| {
                format!(
                    "aws_json {}: no filter with TrafficMirrorFilterId {id:?}; the file holds: {}",
                    path.display(),
                    ids.join(", ")
                )
            })?,
        None if filters.len() == 1 => filters.pop().expect("one"),
        None if filters.is_empty() => {
            return Err(format!(
                "aws_json {}: holds no TrafficMirrorFilters",
                path.display()
            ));
        }
        None => {
            return Err(format!(
                "aws_json {}: holds {} filters ({}): set aws_filter_id to one of them",
                path.display(),
                ids.len(),
                ids.join(", ")
            ));
        }
    };
    Ok(filter)
}

/// The rules of both lists, each checked to sit in the list of its
/// `TrafficDirection`; open port ranges filled as AWS means them.
fn rules(
    path: &Path,
    ingress: Vec<AwsRule>,
    egress: Vec<AwsRule>,
) -> Result<Vec<(Direction, RuleInput)>, String> {
    let mut rules = Vec::new();
    for (list_dir, list) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        for r in list {
            if let Some(d) = &r.traffic_direction
                && d != list_dir.name()
            {
                return Err(format!(
                    "aws_json {}: rule {} ({}) says TrafficDirection {d:?} but is in the {} list",
                    path.display(),
                    r.rule_number,
                    r.traffic_mirror_filter_rule_id
                        .as_deref()
                        .unwrap_or("no id"),
                    list_dir.name()
                ));
            }
            let range = |p: Option<AwsPortRange>| {
                p.map(|p| RawPortRange {
                    from_port: p.from_port.unwrap_or(0),
                    to_port: p.to_port.or(p.from_port).unwrap_or(65535),
                })
            };
            rules.push((
                list_dir,
                RuleInput {
                    number: r.rule_number,
                    action: r.rule_action,
                    protocol: r.protocol.map(ProtocolValue::Number),
                    source: r.source_cidr_block,
                    destination: r.destination_cidr_block,
                    source_ports: range(r.source_port_range),
                    destination_ports: range(r.destination_port_range),
                    description: r
                        .description
                        .or(r.traffic_mirror_filter_rule_id)
                        .unwrap_or_default(),
                },
            ));
        }
    }
    Ok(rules)
}
