//! The configuration: TOML in, a validated [`Config`] out.
//!
//! Two steps, as ripgrep does with flags: serde reads the file into raw
//! structs that reject unknown keys, then one conversion checks every value
//! (VNI ranges, sizes, durations, the output template), so a bad config
//! fails before any socket is bound or file written. Every error names the
//! file, the line, the key and the value at fault, and says what would be
//! accepted.
//!
//! Sizes are a whole number of bytes or a string with a unit: `B`, binary
//! `KiB MiB GiB TiB` (powers of 1024) or decimal `kB MB GB TB` (powers of
//! 1000). A bare `K`/`M`/`G` is rejected as ambiguous. Durations use
//! humantime's syntax: `"500ms"`, `"30s"`, `"15min"`, `"1h"`, `"1h 30min"`.
//! For every optional limit, absent or 0 means "off".

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use std::sync::Arc;

use ipnet::IpNet;

use crate::capture::encode::OutputFormat;
use crate::filter::{MirrorFilter, PortRange, Rule, RuleAction, VniFilter, vpc_resolver};
use crate::output::template::OutputTemplate;

mod aws;

/// The configuration the daemon runs on when no file is given.
pub const DEFAULT_CONFIG: &str = r#"
listen = "0.0.0.0:4789"
dir = "./captures"
"#;

/// Datagrams per `recvmmsg` call (`batch`).
pub const DEFAULT_BATCH: usize = 64;
/// Socket receive buffer asked for (`recv_buffer`).
pub const DEFAULT_RECV_BUFFER: usize = 32 << 20;

/// Largest VNI: 24 bits.
pub const MAX_VNI: u32 = 0xff_ffff;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {key}{message}")]
    Parse {
        path: PathBuf,
        line: usize,
        /// `table.key: ` when known, else empty.
        key: String,
        message: String,
    },
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address and port the live receiver binds.
    pub listen: SocketAddr,
    /// Root of every output file.
    pub dir: PathBuf,
    /// UDP destination ports that carry VXLAN in replayed captures.
    pub vxlan_ports: Vec<u16>,
    /// Which VNIs are kept.
    pub vnis: VniFilter,
    /// SO_RCVBUF wanted for each socket.
    pub recv_buffer: usize,
    /// Datagrams per recvmmsg call.
    pub batch: usize,
    /// After a receive call that emptied the socket, how long to sleep
    /// before the next one (zero = block until the next datagram).
    pub batch_wait: Duration,
    /// Receive loops (sockets in a SO_REUSEPORT group); 0 = one per core.
    pub workers: usize,
    /// Prometheus `/metrics` and `/healthz` over HTTP; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// A TCP port that accepts connections only while healthy (NLB health
    /// check); off when `None`.
    pub health_tcp_listen: Option<SocketAddr>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a
    /// tracing directive); `RUST_LOG` wins when set.
    pub log_level: Option<String>,
    /// Outer source addresses accepted; empty = any. Checked before any
    /// other work.
    pub allow_sources: Vec<IpNet>,
    /// Most sessions tracked at once per worker; when reached, the least
    /// recently active session (silent for a second, not named in
    /// `[[session]]` or `vnis`) is evicted for a new one, else the new
    /// one's datagrams are dropped and counted (`session_limit`).
    pub max_sessions: usize,
    /// Most capture files open at once; when reached, the least recently
    /// active session with a file open is evicted as for `max_sessions`,
    /// else the frame is dropped and counted (`open_file_limit`).
    pub max_open_files: usize,
    /// Most sessions with their own `/metrics` series and their own line
    /// in the shutdown summary; the others are summed.
    pub metrics_max_sessions: usize,
    /// A command run after each file is closed and renamed (like
    /// `tcpdump -z`), without a shell; `{path}`, `{vni}`, `{source}` are
    /// replaced in each argument.
    pub on_rotate: Vec<String>,
    /// Most `on_rotate` commands running at once.
    pub on_rotate_jobs: usize,
    /// `[flows]`: VPC Flow Logs records.
    pub flows: Arc<crate::flows::FlowConfig>,
    pub output: OutputConfig,
    /// `[filter]`: rules and expression for every session without its own.
    pub filter: Option<Arc<MirrorFilter>>,
    /// `[[session]]` entries.
    pub sessions: Vec<SessionConfig>,
}

/// A `[[session]]` entry: what is known about one mirror session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub vni: u32,
    /// The outer source address; `None` = any source with this VNI.
    pub source: Option<std::net::IpAddr>,
    /// The ENI's addresses besides the outer source (secondary IPs,
    /// prefixes), for direction.
    pub addresses: Vec<IpNet>,
    /// Replaces `[filter]` for this session when present.
    pub filter: Option<Arc<MirrorFilter>>,
}

/// The `[output]` table, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    pub template: OutputTemplate,
    pub format: OutputFormat,
    /// Frames longer than this are cut; the record keeps the original length.
    pub snaplen: u32,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    pub rotate_packets: Option<u64>,
    pub max_files: Option<u32>,
    pub max_total_bytes: Option<u64>,
    pub idle_timeout: Duration,
    /// `fdatasync` each file before it is renamed to its final name, so a
    /// file that has its final name is whole after a power loss.
    pub fsync: bool,
}

/// Largest snap length accepted (libpcap's maximum for Ethernet).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Smallest snap length accepted: an Ethernet header.
pub const MIN_SNAPLEN: u32 = 14;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    dir: Option<PathBuf>,
    vxlan_ports: Option<Vec<u16>>,
    #[serde(default)]
    vnis: Vec<Spanned<u32>>,
    #[serde(default)]
    exclude_vnis: Vec<Spanned<u32>>,
    recv_buffer: Option<Spanned<SizeValue>>,
    batch: Option<Spanned<u32>>,
    batch_wait: Option<Spanned<String>>,
    workers: Option<Spanned<u32>>,
    metrics_listen: Option<Spanned<String>>,
    health_tcp_listen: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    #[serde(default)]
    allow_sources: Vec<Spanned<String>>,
    max_sessions: Option<Spanned<u32>>,
    max_open_files: Option<Spanned<u32>>,
    metrics_max_sessions: Option<Spanned<u32>>,
    #[serde(default)]
    on_rotate: Vec<String>,
    on_rotate_jobs: Option<Spanned<u32>>,
    flows: Option<RawFlows>,
    #[serde(default)]
    output: RawOutput,
    filter: Option<RawFilter>,
    #[serde(default)]
    session: Vec<RawSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    #[serde(default)]
    enabled: bool,
    interval: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    file_interval: Option<Spanned<String>>,
    #[serde(default)]
    gzip: bool,
    #[serde(default)]
    json: bool,
    max_flows: Option<Spanned<u32>>,
    #[serde(default)]
    session: Vec<RawFlowSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlowSession {
    vni: Option<Spanned<u32>>,
    source: Option<Spanned<String>>,
    interface_id: Option<String>,
    instance_id: Option<String>,
    account_id: Option<String>,
    vpc_id: Option<String>,
    subnet_id: Option<String>,
    region: Option<String>,
    az_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    ingress: Vec<RawRule>,
    #[serde(default)]
    egress: Vec<RawRule>,
    #[serde(default)]
    network_services: Vec<Spanned<String>>,
    #[serde(default)]
    vpc_cidrs: Vec<Spanned<String>>,
    aws_json: Option<Spanned<PathBuf>>,
    aws_filter_id: Option<Spanned<String>>,
    bpf: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    rule_number: Spanned<u32>,
    rule_action: Spanned<String>,
    protocol: Option<Spanned<ProtocolValue>>,
    source_cidr_block: Spanned<String>,
    destination_cidr_block: Spanned<String>,
    source_port_range: Option<Spanned<RawPortRange>>,
    destination_port_range: Option<Spanned<RawPortRange>>,
    description: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawPortRange {
    from_port: u16,
    to_port: u16,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum ProtocolValue {
    Number(i64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    vni: Spanned<u32>,
    source: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    filter: Option<RawFilter>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    template: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    snaplen: Option<Spanned<u32>>,
    rotate_size: Option<Spanned<SizeValue>>,
    rotate_interval: Option<Spanned<String>>,
    rotate_packets: Option<u64>,
    max_files: Option<u32>,
    max_total_bytes: Option<Spanned<SizeValue>>,
    idle_timeout: Option<Spanned<String>>,
    fsync: Option<bool>,
}

type Spanned<T> = toml::Spanned<T>;

/// A size as written: a number of bytes or a string with a unit; any
/// other TOML value (a negative or fractional number, a boolean) is kept
/// as written, so the check names it with its key and line.
#[derive(Clone)]
enum SizeValue {
    Bytes(u64),
    Text(String),
    Other(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of bytes or a string such as \"512MiB\"")
            }
            fn visit_u64<E>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SizeValue, E> {
                Ok(u64::try_from(v)
                    .map_or_else(|_| SizeValue::Other(v.to_string()), SizeValue::Bytes))
            }
            fn visit_f64<E>(self, v: f64) -> Result<SizeValue, E> {
                Ok(SizeValue::Other(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<SizeValue, E> {
                Ok(SizeValue::Other(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The embedded default configuration.
    pub fn default_config() -> Config {
        Config::parse(DEFAULT_CONFIG, Path::new("<default config>"))
            .expect("the embedded default config is valid")
    }

    /// Validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, key) = locate(text, e.span());
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                message: e.message().replace("unknown field", "unknown key"),
            }
        })?;
        let bad = |span: std::ops::Range<usize>, message: String| {
            let (line, key) = locate(text, Some(span));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                message,
            }
        };

        let listen = match raw.listen {
            None => "0.0.0.0:4789".parse().unwrap(),
            Some(s) => s.get_ref().parse().map_err(|_| {
                bad(
                    s.span(),
                    format!(
                        "{:?} is not an address and port: expected e.g. \"0.0.0.0:4789\" or \"[::]:4789\"",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let vni_set = |list: &[Spanned<u32>]| -> Result<BTreeSet<u32>, ConfigError> {
            let mut set = BTreeSet::new();
            for v in list {
                if *v.get_ref() > MAX_VNI {
                    return Err(bad(
                        v.span(),
                        format!(
                            "VNI {} is out of range: a VNI is 24 bits, 0 to {MAX_VNI}",
                            v.get_ref()
                        ),
                    ));
                }
                set.insert(*v.get_ref());
            }
            Ok(set)
        };
        let vnis = VniFilter {
            allow: vni_set(&raw.vnis)?,
            deny: vni_set(&raw.exclude_vnis)?,
        };
        let vxlan_ports = raw.vxlan_ports.unwrap_or_else(|| vec![4789]);
        let recv_buffer = match &raw.recv_buffer {
            None => DEFAULT_RECV_BUFFER,
            Some(s) => {
                let n = parse_size(s.get_ref()).map_err(|m| bad(s.span(), m))?;
                if !(4096..=(1 << 31) - 1).contains(&n) {
                    return Err(bad(
                        s.span(),
                        format!("{n} bytes is out of range: expected 4KiB to 2GiB"),
                    ));
                }
                n as usize
            }
        };
        let batch = match &raw.batch {
            None => DEFAULT_BATCH,
            Some(s) if (1..=1024).contains(s.get_ref()) => *s.get_ref() as usize,
            Some(s) => {
                return Err(bad(
                    s.span(),
                    format!(
                        "{} is out of range: expected 1 to 1024 datagrams per recvmmsg call",
                        s.get_ref()
                    ),
                ));
            }
        };
        let batch_wait = match &raw.batch_wait {
            None => DEFAULT_BATCH_WAIT,
            Some(s) => {
                let d = parse_duration(s.get_ref()).map_err(|m| bad(s.span(), m))?;
                if d > MAX_BATCH_WAIT {
                    return Err(bad(
                        s.span(),
                        format!(
                            "{:?} is out of range: expected \"0ms\" (wake on every datagram) to \"100ms\"",
                            s.get_ref()
                        ),
                    ));
                }
                d
            }
        };
        let workers = match &raw.workers {
            None => 1,
            Some(s) if *s.get_ref() <= 256 => *s.get_ref() as usize,
            Some(s) => {
                return Err(bad(
                    s.span(),
                    format!(
                        "{} is out of range: expected 0 (one per core) to 256",
                        s.get_ref()
                    ),
                ));
            }
        };

        let addr = |v: &Option<Spanned<String>>| -> Result<Option<SocketAddr>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) if s.get_ref().is_empty() => Ok(None),
                Some(s) => s.get_ref().parse().map(Some).map_err(|_| {
                    bad(
                        s.span(),
                        format!(
                            "{:?} is not an address and port: expected e.g. \"127.0.0.1:9789\"",
                            s.get_ref()
                        ),
                    )
                }),
            }
        };
        let metrics_listen = addr(&raw.metrics_listen)?;
        let health_tcp_listen = addr(&raw.health_tcp_listen)?;
        let log_level = match &raw.log_level {
            None => None,
            Some(s) => {
                check_log_level(s.get_ref()).map_err(|m| bad(s.span(), m))?;
                Some(s.get_ref().clone())
            }
        };
        let mut allow_sources = Vec::new();
        for a in &raw.allow_sources {
            allow_sources.push(parse_net_or_ip(a.get_ref()).map_err(|m| bad(a.span(), m))?);
        }
        let positive =
            |v: &Option<Spanned<u32>>, default: usize, what: &str| -> Result<usize, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) if *s.get_ref() >= 1 => Ok(*s.get_ref() as usize),
                    Some(s) => Err(bad(
                        s.span(),
                        format!(
                            "{} is out of range: expected at least 1 {what}",
                            s.get_ref()
                        ),
                    )),
                }
            };
        let max_sessions = positive(&raw.max_sessions, DEFAULT_MAX_SESSIONS, "session")?;
        let max_open_files = positive(&raw.max_open_files, DEFAULT_MAX_OPEN_FILES, "file")?;
        // 0 is meaningful here: no per-session series, only the sum.
        let metrics_max_sessions = raw
            .metrics_max_sessions
            .as_ref()
            .map_or(DEFAULT_METRICS_MAX_SESSIONS, |v| *v.get_ref() as usize);
        let on_rotate_jobs = positive(&raw.on_rotate_jobs, 2, "job")?;
        let on_rotate = raw.on_rotate;
        if let Some(first) = on_rotate.first()
            && !first.starts_with('/')
        {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("on_rotate"))
                    .map_or(1, |i| i + 1),
                key: "`on_rotate`: ".into(),
                message: format!(
                    "{first:?} is not an absolute path: the command runs without a shell or PATH lookup, e.g. [\"/usr/bin/aws\", \"s3\", \"mv\", \"{{path}}\", \"s3://bucket/{{vni}}/\"]"
                ),
            });
        }
        let flows = match raw.flows {
            None => crate::flows::FlowConfig::default(),
            Some(f) => {
                let mut c = crate::flows::FlowConfig {
                    enabled: f.enabled,
                    gzip: f.gzip,
                    json: f.json,
                    ..Default::default()
                };
                let secs = |v: &Option<Spanned<String>>,
                            default: u64|
                 -> Result<u64, ConfigError> {
                    match v {
                        None => Ok(default),
                        Some(s) => {
                            let d = parse_duration(s.get_ref()).map_err(|m| bad(s.span(), m))?;
                            if d.as_secs() < 1 || d.subsec_nanos() != 0 {
                                return Err(bad(
                                    s.span(),
                                    format!(
                                        "{:?} is not a whole number of seconds of at least 1s",
                                        s.get_ref()
                                    ),
                                ));
                            }
                            Ok(d.as_secs())
                        }
                    }
                };
                c.interval_s = secs(&f.interval, 60)?;
                c.file_interval_s = secs(&f.file_interval, 600)?;
                if let Some(fmt) = &f.format {
                    c.format = crate::flows::FlowFormat::parse(fmt.get_ref())
                        .map_err(|m| bad(fmt.span(), m))?;
                }
                if let Some(m) = &f.max_flows {
                    if *m.get_ref() == 0 {
                        return Err(bad(
                            m.span(),
                            "0 is out of range: expected at least 1 flow".into(),
                        ));
                    }
                    c.max_flows = *m.get_ref() as usize;
                }
                for s in f.session {
                    let vni = s.vni.as_ref().map(|v| *v.get_ref());
                    let source = match &s.source {
                        None => None,
                        Some(x) => Some(x.get_ref().parse().map_err(|_| {
                            bad(x.span(), format!("{:?} is not an IP address", x.get_ref()))
                        })?),
                    };
                    if vni.is_none() && source.is_none() {
                        return Err(ConfigError::Parse {
                            path: path.to_path_buf(),
                            line: 1,
                            key: "`flows.session`: ".into(),
                            message: "an entry needs `vni`, `source` or both, to say which session it describes".into(),
                        });
                    }
                    c.sessions.push(crate::flows::FlowSessionMeta {
                        vni,
                        source,
                        meta: crate::flows::FlowMetadata {
                            interface_id: s.interface_id,
                            instance_id: s.instance_id,
                            account_id: s.account_id,
                            vpc_id: s.vpc_id,
                            subnet_id: s.subnet_id,
                            region: s.region,
                            az_id: s.az_id,
                        },
                    });
                }
                c
            }
        };
        let o = raw.output;
        let format = match &o.format {
            None => OutputFormat::Pcap,
            Some(s) => match s.get_ref().as_str() {
                "pcap" => OutputFormat::Pcap,
                "pcapng" => OutputFormat::Pcapng,
                other => {
                    return Err(bad(
                        s.span(),
                        format!(
                            "{other:?} is not an output format: expected \"pcap\" or \"pcapng\""
                        ),
                    ));
                }
            },
        };
        let template = match &o.template {
            None => OutputTemplate::default(),
            Some(s) => OutputTemplate::parse(s.get_ref())
                .map_err(String::from)
                .and_then(|t| check_component_lengths(&t).map(|()| t))
                .map_err(|why| bad(s.span(), format!("{:?}: {why}", s.get_ref())))?,
        };
        let snaplen = match &o.snaplen {
            None => MAX_SNAPLEN,
            Some(s) => {
                let v = *s.get_ref();
                if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&v) {
                    return Err(bad(
                        s.span(),
                        format!(
                            "{v} is out of range: expected {MIN_SNAPLEN} to {MAX_SNAPLEN} bytes"
                        ),
                    ));
                }
                v
            }
        };
        let size = |v: &Option<Spanned<SizeValue>>| -> Result<Option<u64>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => parse_size(s.get_ref())
                    .map(|n| (n > 0).then_some(n))
                    .map_err(|m| bad(s.span(), m)),
            }
        };
        let duration = |v: &Option<Spanned<String>>| -> Result<Option<Duration>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => parse_duration(s.get_ref())
                    .map(|d| (!d.is_zero()).then_some(d))
                    .map_err(|m| bad(s.span(), m)),
            }
        };
        let output = OutputConfig {
            template,
            format,
            snaplen,
            rotate_size: size(&o.rotate_size)?,
            rotate_interval: duration(&o.rotate_interval)?,
            rotate_packets: o.rotate_packets.filter(|&n| n > 0),
            max_files: o.max_files.filter(|&n| n > 0),
            max_total_bytes: size(&o.max_total_bytes)?,
            idle_timeout: duration(&o.idle_timeout)?.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            fsync: o.fsync.unwrap_or(true),
        };
        let mut ctx = FilterCtx {
            text,
            path,
            base_dir: path.parent().unwrap_or(Path::new(".")),
        };
        let filter = match raw.filter {
            Some(f) => Some(Arc::new(ctx.build(f, "filter", "filter".into())?)),
            None => None,
        };
        let mut sessions: Vec<SessionConfig> = Vec::new();
        for rs in raw.session {
            let vni = *rs.vni.get_ref();
            if vni > MAX_VNI {
                return Err(bad(
                    rs.vni.span(),
                    format!("VNI {vni} is out of range: a VNI is 24 bits, 0 to {MAX_VNI}"),
                ));
            }
            let source = match &rs.source {
                None => None,
                Some(s) => Some(s.get_ref().parse().map_err(|_| {
                    bad(
                        s.span(),
                        format!("{:?} is not an IP address: expected e.g. \"10.0.1.5\" or \"2001:db8::5\"", s.get_ref()),
                    )
                })?),
            };
            if let Some(dup) = sessions.iter().find(|x| x.vni == vni && x.source == source) {
                return Err(bad(
                    rs.vni.span(),
                    format!(
                        "a second [[session]] for VNI {vni}{}: each (vni, source) may appear once",
                        dup.source
                            .map(|s| format!(" and source {s}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            let mut addresses = Vec::new();
            for a in &rs.addresses {
                addresses.push(parse_net_or_ip(a.get_ref()).map_err(|m| bad(a.span(), m))?);
            }
            let name = match source {
                Some(s) => format!("session vni={vni} source={s}"),
                None => format!("session vni={vni}"),
            };
            let filter = match rs.filter {
                Some(f) => Some(Arc::new(ctx.build(f, "session.filter", name)?)),
                None => None,
            };
            sessions.push(SessionConfig {
                vni,
                source,
                addresses,
                filter,
            });
        }
        Ok(Config {
            listen,
            dir: raw.dir.unwrap_or_else(|| PathBuf::from("./captures")),
            vxlan_ports,
            vnis,
            recv_buffer,
            batch,
            batch_wait,
            workers,
            metrics_listen,
            health_tcp_listen,
            log_level,
            allow_sources,
            max_sessions,
            max_open_files,
            metrics_max_sessions,
            on_rotate,
            on_rotate_jobs,
            flows: Arc::new(flows),
            output,
            filter,
            sessions,
        })
    }
}

/// `log_level`: a level, or comma-separated directives each ending in a
/// level (`mirrorcap=debug,warn`). A bare word that is not a level would
/// be taken by tracing as a target name with every level on, so it is
/// refused.
fn check_log_level(s: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let accepted = "expected error, warn, info, debug, trace or off, or directives such as \"mirrorcap=debug,warn\"";
    for d in s.split(',') {
        let level = d.rsplit('=').next().unwrap_or("").trim();
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{s:?} is not a log level ({:?} is not a level): {accepted}",
                d.trim()
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| ())
        .map_err(|e| format!("{s:?} is not a log level ({e}): {accepted}"))
}

/// Longest file or directory name Linux file systems take (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Every path component `t` can produce must fit in [`NAME_MAX`] bytes:
/// checked with the longest value of each placeholder (8-digit VNI, a
/// 39-byte IPv6 source, a 10-digit sequence number, `pcapng`), and the
/// file name with the `.part` it carries while written.
fn check_component_lengths(t: &OutputTemplate) -> Result<(), String> {
    use crate::output::files::part_path_of;
    use crate::output::template::PathFields;
    let longest = PathFields {
        vni: MAX_VNI,
        source: std::net::IpAddr::V6(std::net::Ipv6Addr::from([0xffff_u16; 8])),
        start_ns: u64::MAX,
        seq: u32::MAX,
        format: OutputFormat::Pcapng,
    };
    let path = part_path_of(&t.render(&longest));
    let parts: Vec<_> = path.iter().collect();
    for (i, c) in parts.iter().enumerate() {
        let len = c.len();
        if len > NAME_MAX {
            let last = i + 1 == parts.len();
            return Err(format!(
                "path component {} can be {len} bytes long (with an 8-digit VNI, a 39-byte IPv6 source, a 10-digit sequence number{}), over the limit of {NAME_MAX} bytes a file or directory name may have: shorten its literal text",
                i + 1,
                if last {
                    " and the `.part` suffix the file has while written"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

/// A CIDR block (host bits cleared) or a single address (/32, /128).
fn parse_net_or_ip(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        format!(
            "{s:?} is not an address or CIDR block: expected e.g. \"10.0.1.7\" or \"10.0.2.0/28\""
        )
    })
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

/// A rule as read from TOML or AWS JSON, before checks.
struct RuleInput {
    number: u32,
    action: String,
    protocol: Option<ProtocolValue>,
    source: String,
    destination: String,
    source_ports: Option<RawPortRange>,
    destination_ports: Option<RawPortRange>,
    description: String,
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

/// Builds filters from `[filter]` / `[session.filter]` tables.
struct FilterCtx<'a> {
    text: &'a str,
    path: &'a Path,
    base_dir: &'a Path,
}

impl FilterCtx<'_> {
    fn err(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        let (line, key) = locate(self.text, Some(span));
        ConfigError::Parse {
            path: self.path.to_path_buf(),
            line,
            key,
            message,
        }
    }

    fn build(
        &mut self,
        raw: RawFilter,
        table: &str,
        name: String,
    ) -> Result<MirrorFilter, ConfigError> {
        let (mut ingress, mut egress) = (Vec::new(), Vec::new());
        // Rules from TOML, each placed at its own line for errors.
        let mut spans: Vec<(crate::filter::Direction, u32, std::ops::Range<usize>)> = Vec::new();
        for (dir, list) in [
            (crate::filter::Direction::Ingress, raw.ingress),
            (crate::filter::Direction::Egress, raw.egress),
        ] {
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
                .map_err(|m| self.err(span.clone(), m))?;
                if let Some((_, _, first)) =
                    spans.iter().find(|(d, n, _)| *d == dir && *n == number)
                {
                    let (l1, _) = locate(self.text, Some(first.clone()));
                    let (l2, _) = locate(self.text, Some(span.clone()));
                    return Err(self.err(
                        span,
                        format!(
                            "rule_number {number} is used by two {} rules (lines {l1} and {l2}): rule numbers must be unique per direction",
                            dir.name()
                        ),
                    ));
                }
                spans.push((dir, number, span));
                match dir {
                    crate::filter::Direction::Ingress => ingress.push(rule),
                    crate::filter::Direction::Egress => egress.push(rule),
                }
            }
        }
        let mut services: Vec<(String, std::ops::Range<usize>)> = raw
            .network_services
            .iter()
            .map(|s| (s.get_ref().clone(), s.span()))
            .collect();
        if let Some(json) = &raw.aws_json {
            if !spans.is_empty() {
                return Err(self.err(
                    json.span(),
                    format!("{table}: aws_json and [[{table}.ingress]]/[[{table}.egress]] rules are both given: use one source of rules"),
                ));
            }
            let file = self.base_dir.join(json.get_ref());
            let aws = crate::config::aws::load(
                &file,
                raw.aws_filter_id.as_ref().map(|s| s.get_ref().as_str()),
            )
            .map_err(|m| self.err(json.span(), m))?;
            for (dir, r) in aws.rules {
                let number = r.number;
                let rule = check_rule(r)
                    .map_err(|m| self.err(json.span(), format!("{}: {m}", file.display())))?;
                let list = match dir {
                    crate::filter::Direction::Ingress => &mut ingress,
                    crate::filter::Direction::Egress => &mut egress,
                };
                if list.iter().any(|x| x.number == number) {
                    return Err(self.err(
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
            services.extend(aws.network_services.into_iter().map(|s| (s, json.span())));
        } else if let Some(id) = &raw.aws_filter_id {
            return Err(self.err(
                id.span(),
                "aws_filter_id needs aws_json (the file to select from)".into(),
            ));
        }
        let mut f = MirrorFilter::with_rules(name, ingress, egress);
        for (s, span) in services {
            match s.as_str() {
                "amazon-dns" => f.amazon_dns = true,
                other => {
                    return Err(self.err(
                        span,
                        format!("network service {other:?} is not known: expected \"amazon-dns\""),
                    ));
                }
            }
        }
        for c in &raw.vpc_cidrs {
            let n = parse_cidr(c.get_ref()).map_err(|m| self.err(c.span(), m))?;
            f.resolvers.push(vpc_resolver(n));
        }
        if let Some(b) = &raw.bpf {
            f.bpf = Some(
                crate::filter::bpf::Bpf::compile(b.get_ref())
                    .map_err(|e| self.err(b.span(), e.to_string()))?,
            );
        }
        Ok(f)
    }
}

/// Default caps: sessions per worker and capture files open at once.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
pub const DEFAULT_MAX_OPEN_FILES: usize = 4096;
/// Sessions with their own `/metrics` series and summary line.
pub const DEFAULT_METRICS_MAX_SESSIONS: usize = 100;

/// A session with no packet for this long closes its file.
/// Default for `batch_wait`: 1 ms, like the block timeout tcpdump gives
/// its TPACKET_V3 ring. At 200k datagrams/s that is 200 datagrams a wakeup;
/// a 32 MiB socket buffer holds far more than 1 ms of any rate one core
/// can take.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(1);
/// Longest `batch_wait` accepted.
pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(100);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Parses a size: bytes, or a number with a unit (see the module doc).
pub fn parse_size_str(s: &str) -> Result<u64, String> {
    parse_size(&SizeValue::Text(s.to_string()))
}

fn parse_size(v: &SizeValue) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("B", 1),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("kB", 1_000),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
    ];
    let accepted = "expected a number of bytes, or a number with a unit B, KiB, MiB, GiB, TiB (1024-based) or kB, MB, GB, TB (1000-based), e.g. \"512MiB\"";
    let s = match v {
        SizeValue::Bytes(n) => return Ok(*n),
        SizeValue::Text(s) => s.trim(),
        SizeValue::Other(v) => return Err(format!("{v} is not a size: {accepted}")),
    };
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].trim());
    let Some(&(_, mult)) = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .or(if unit.is_empty() {
            Some(&("", 1))
        } else {
            None
        })
    else {
        return Err(format!("{s:?} has an unknown unit {unit:?}: {accepted}"));
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: {accepted}"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range: {accepted}"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration in humantime's syntax.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!(
            "{s:?} is not a duration ({e}): expected e.g. \"500ms\", \"30s\", \"15min\", \"1h\""
        )
    })
}

/// The 1-based line of `span`'s start, and `table.key: ` for the key
/// written on that line (or above it, for a value spread over lines).
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> (usize, String) {
    let Some(span) = span else {
        return (1, String::new());
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let mut table = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 > line {
            break;
        }
        let l = l.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            key.clear();
        } else if let Some((k, _)) = l.split_once('=')
            && !l.starts_with('#')
        {
            key = k.trim().to_string();
        }
    }
    let full = match (table.is_empty(), key.is_empty()) {
        (_, true) if table.is_empty() => return (line, String::new()),
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    };
    (line, format!("`{full}`: "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn default_config() {
        let c = Config::default_config();
        assert_eq!(c.listen, "0.0.0.0:4789".parse().unwrap());
        assert_eq!(c.dir, PathBuf::from("./captures"));
        assert_eq!(c.vxlan_ports, vec![4789]);
        assert_eq!(c.output.snaplen, 262_144);
        assert_eq!(c.output.format, OutputFormat::Pcap);
        assert!(c.vnis.accepts(123));
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
listen = "127.0.0.1:14789"
dir = "/tmp/x"
vxlan_ports = [4789, 8472]
vnis = [1, 2, 3]
exclude_vnis = [3]
[output]
template = "{vni}/{source}/{start}-{seq}.{ext}"
format = "pcapng"
snaplen = 1500
rotate_size = "512MiB"
rotate_interval = "1h"
rotate_packets = 1000
max_files = 10
max_total_bytes = "2GB"
idle_timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(c.output.rotate_size, Some(512 << 20));
        assert_eq!(c.output.max_total_bytes, Some(2_000_000_000));
        assert_eq!(c.output.rotate_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.output.idle_timeout, Duration::from_secs(30));
        assert!(c.vnis.accepts(1) && !c.vnis.accepts(3) && !c.vnis.accepts(4));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("listen = \"0.0.0.0:4789\"\n\n[output]\nrotate_sise = 5\n").unwrap_err();
        assert!(e.starts_with("t.toml:4: "), "{e}");
        assert!(e.contains("rotate_sise"), "{e}");
        assert!(e.contains("rotate_size"), "should list accepted keys: {e}");
    }

    #[test]
    fn bad_values_name_key_value_and_what_is_accepted() {
        let e = parse("[output]\nrotate_size = \"12M\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2: `output.rotate_size`: \"12M\""),
            "{e}"
        );
        assert!(e.contains("MiB"), "{e}");
        let e = parse("vnis = [1, 16777216]\n").unwrap_err();
        assert!(e.contains("t.toml:1: `vnis`: VNI 16777216"), "{e}");
        let e = parse("[output]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(e.contains("`output.idle_timeout`: \"soon\""), "{e}");
        let e = parse("[output]\nformat = \"erf\"\n").unwrap_err();
        assert!(e.contains("\"pcap\" or \"pcapng\""), "{e}");
        let e = parse("listen = \"localhost\"\n").unwrap_err();
        assert!(e.contains("`listen`"), "{e}");
        let e = parse("[output]\ntemplate = \"../{vni}/{source}-{seq}.{ext}\"\n").unwrap_err();
        assert!(e.contains("`output.template`"), "{e}");
        let e = parse("[output]\nsnaplen = 5\n").unwrap_err();
        assert!(e.contains("14 to 262144"), "{e}");
        let e = parse("batch_wait = \"1s\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:1: `batch_wait`: \"1s\""), "{e}");
        assert!(e.contains("\"0ms\"") && e.contains("\"100ms\""), "{e}");
    }

    /// Issue 12 item 6: `metrics_max_sessions` bounds the per-session
    /// series and summary lines; 0 leaves only the sums.
    #[test]
    fn metrics_max_sessions() {
        assert_eq!(
            Config::default_config().metrics_max_sessions,
            DEFAULT_METRICS_MAX_SESSIONS
        );
        assert_eq!(
            parse("metrics_max_sessions = 0\n")
                .unwrap()
                .metrics_max_sessions,
            0
        );
        assert_eq!(
            parse("metrics_max_sessions = 2000\n")
                .unwrap()
                .metrics_max_sessions,
            2000
        );
        let e = parse("metrics_max_sessions = \"many\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:1: "), "{e}");
        assert!(e.contains("metrics_max_sessions"), "{e}");
    }

    #[test]
    fn batch_wait() {
        assert_eq!(Config::default_config().batch_wait, DEFAULT_BATCH_WAIT);
        assert_eq!(
            parse("batch_wait = \"0ms\"\n").unwrap().batch_wait,
            Duration::ZERO
        );
        assert_eq!(
            parse("batch_wait = \"250us\"\n").unwrap().batch_wait,
            Duration::from_micros(250)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_str("100"), Ok(100));
        assert_eq!(parse_size_str("1.5KiB"), Ok(1536));
        assert_eq!(parse_size_str("1 GB"), Ok(1_000_000_000));
        assert!(parse_size_str("5 parsecs").is_err());
        assert!(parse_size_str("-1MiB").is_err());
    }
}
