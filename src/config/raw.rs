//! The TOML file as serde reads it: one struct per table, unknown keys
//! refused, values kept with their byte span (`Spanned`) so a check can
//! name the line. In: the text; out: these raw structs, unchecked. Nothing
//! is validated here beyond TOML types.

use std::path::PathBuf;

use serde::Deserialize;

use super::sizes::SizeValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) geneve_listen: Option<Spanned<String>>,
    pub(super) dir: Option<PathBuf>,
    pub(super) vxlan_ports: Option<Vec<u16>>,
    pub(super) geneve_ports: Option<Vec<Spanned<u16>>>,
    #[serde(default)]
    pub(super) vnis: Vec<Spanned<u32>>,
    #[serde(default)]
    pub(super) exclude_vnis: Vec<Spanned<u32>>,
    pub(super) recv_buffer: Option<Spanned<SizeValue>>,
    pub(super) batch: Option<Spanned<u32>>,
    pub(super) batch_wait: Option<Spanned<String>>,
    pub(super) workers: Option<Spanned<u32>>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    pub(super) health_tcp_listen: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_sources: Vec<Spanned<String>>,
    pub(super) max_sessions: Option<Spanned<u32>>,
    pub(super) max_open_files: Option<Spanned<u32>>,
    pub(super) metrics_max_sessions: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) on_rotate: Vec<String>,
    pub(super) on_rotate_jobs: Option<Spanned<u32>>,
    pub(super) host_id: Option<Spanned<String>>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) control_group: Option<Spanned<String>>,
    pub(super) max_subscribers: Option<Spanned<u32>>,
    pub(super) stream_queue: Option<Spanned<SizeValue>>,
    pub(super) flows: Option<RawFlows>,
    #[serde(default)]
    pub(super) output: RawOutput,
    pub(super) filter: Option<RawFilter>,
    #[serde(default)]
    pub(super) session: Vec<RawSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlows {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) file_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) gzip: bool,
    #[serde(default)]
    pub(super) json: bool,
    pub(super) parquet: Option<Spanned<bool>>,
    pub(super) max_flows: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) hive_compatible_partitions: bool,
    #[serde(default)]
    pub(super) per_hour_partition: bool,
    pub(super) account_id: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) session: Vec<RawFlowSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlowSession {
    pub(super) vni: Option<Spanned<u32>>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) interface_id: Option<String>,
    pub(super) instance_id: Option<String>,
    pub(super) account_id: Option<String>,
    pub(super) vpc_id: Option<String>,
    pub(super) subnet_id: Option<String>,
    pub(super) region: Option<String>,
    pub(super) az_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilter {
    #[serde(default)]
    pub(super) ingress: Vec<RawRule>,
    #[serde(default)]
    pub(super) egress: Vec<RawRule>,
    #[serde(default)]
    pub(super) network_services: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) vpc_cidrs: Vec<Spanned<String>>,
    pub(super) aws_json: Option<Spanned<PathBuf>>,
    pub(super) aws_filter_id: Option<Spanned<String>>,
    pub(super) bpf: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) rule_number: Spanned<u32>,
    pub(super) rule_action: Spanned<String>,
    pub(super) protocol: Option<Spanned<ProtocolValue>>,
    pub(super) source_cidr_block: Spanned<String>,
    pub(super) destination_cidr_block: Spanned<String>,
    pub(super) source_port_range: Option<Spanned<RawPortRange>>,
    pub(super) destination_port_range: Option<Spanned<RawPortRange>>,
    pub(super) description: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPortRange {
    pub(super) from_port: u16,
    pub(super) to_port: u16,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum ProtocolValue {
    Number(i64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) vni: Spanned<u32>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) addresses: Vec<Spanned<String>>,
    pub(super) filter: Option<RawFilter>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) template: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) snaplen: Option<Spanned<u32>>,
    pub(super) rotate_size: Option<Spanned<SizeValue>>,
    pub(super) rotate_interval: Option<Spanned<String>>,
    pub(super) rotate_packets: Option<u64>,
    pub(super) max_files: Option<u32>,
    pub(super) max_total_bytes: Option<Spanned<SizeValue>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) fsync: Option<bool>,
    pub(super) s3: Option<Spanned<RawS3>>,
}

/// `[output.s3]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    pub(super) bucket: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) key_template: Option<Spanned<String>>,
    pub(super) keep_local: Option<bool>,
    pub(super) storage_class: Option<Spanned<String>>,
    pub(super) upload_jobs: Option<Spanned<u32>>,
    pub(super) multipart_threshold: Option<Spanned<SizeValue>>,
    pub(super) part_size: Option<Spanned<SizeValue>>,
    pub(super) unhealthy_after: Option<Spanned<String>>,
    pub(super) stop_wait: Option<Spanned<String>>,
    pub(super) metadata_endpoint: Option<Spanned<String>>,
}

pub(super) type Spanned<T> = toml::Spanned<T>;

/// A rule as read from TOML or AWS JSON, before checks.
pub(super) struct RuleInput {
    pub(super) number: u32,
    pub(super) action: String,
    pub(super) protocol: Option<ProtocolValue>,
    pub(super) source: String,
    pub(super) destination: String,
    pub(super) source_ports: Option<RawPortRange>,
    pub(super) destination_ports: Option<RawPortRange>,
    pub(super) description: String,
}
