//! Flow records in the VPC Flow Logs format, from every captured packet.
//!
//! In: each inner frame the pipeline keeps (after the filters), with its
//! session, decode and timestamp. Out: text files under `DIR/flows/` as AWS
//! delivers flow logs to S3: a header line of field names, then one
//! space-separated record per line, `-` for a field mirrorcap cannot know;
//! optionally gzipped, optionally also JSON Lines.
//!
//! Counting and timing follow AWS's definitions: a flow is (session,
//! protocol, source and destination address and port; ICMP and other
//! protocols without ports have ports 0), aggregated over a window of
//! `flows.interval` aligned to the clock (by packet time, so a replay gives
//! the windows the live capture had); `packets` and `bytes` count the inner
//! IP packets and their IP total length; `start`/`end` are the Unix seconds
//! of the first and last packet in the window; `tcp-flags` ORs the TCP flags
//! seen (AWS's bit values: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32);
//! `flow-direction` is ingress/egress relative to the session's addresses;
//! `type` IPv4/IPv6; `action` ACCEPT (the packet was mirrored and kept);
//! `log-status` OK, or NODATA for a session that had no packet in a window
//! (until the session is freed, `idle_timeout` after its last datagram:
//! sessions are told apart by a never-reused id, not by table slot).
//! Frames that are not IP are not flow-logged (AWS logs IP traffic only).
//!
//! Memory is bounded by `flows.max_flows`: when a window has that many
//! flows, it is written out early (counted) and aggregation starts again;
//! the sums over records stay exact.

pub mod report;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};

use crate::filter::{Direction, OwnAddresses};
use crate::wire::decode::{Decoded, PROTO_TCP};

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
];

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

/// What AWS would know about a session's ENI, from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMetadata {
    pub interface_id: Option<String>,
    pub instance_id: Option<String>,
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
}

/// A `[[flows.session]]` entry: metadata for a VNI, a source, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSessionMeta {
    pub vni: Option<u32>,
    pub source: Option<IpAddr>,
    pub meta: FlowMetadata,
}

/// The `[flows]` settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    pub enabled: bool,
    /// Aggregation window, at least 1 s.
    pub interval_s: u64,
    pub format: FlowFormat,
    /// A new file every this many seconds (aligned to the clock).
    pub file_interval_s: u64,
    pub gzip: bool,
    pub json: bool,
    pub max_flows: usize,
    pub sessions: Vec<FlowSessionMeta>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            enabled: false,
            interval_s: 60,
            format: FlowFormat::parse(DEFAULT_FORMAT).expect("default format"),
            file_interval_s: 600,
            gzip: false,
            json: false,
            max_flows: 100_000,
            sessions: Vec::new(),
        }
    }
}

impl FlowConfig {
    /// Metadata for a session: an entry naming both VNI and source first,
    /// then the VNI, then the source.
    pub fn metadata(&self, vni: u32, source: IpAddr) -> FlowMetadata {
        let find = |f: &dyn Fn(&FlowSessionMeta) -> bool| self.sessions.iter().find(|s| f(s));
        find(&|s| s.vni == Some(vni) && s.source == Some(source))
            .or_else(|| find(&|s| s.vni == Some(vni) && s.source.is_none()))
            .or_else(|| find(&|s| s.vni.is_none() && s.source == Some(source)))
            .map(|s| s.meta.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    /// The session's id ([`crate::telemetry::metrics::SessionStats::id`]): never
    /// reused, so two sessions that had the same table slot one after the
    /// other are never mixed.
    session: u64,
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

#[derive(Clone, Copy, Debug)]
struct FlowAgg {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    tcp_flags: u8,
    direction: Option<Direction>,
}

/// A session as the flow table knows it.
struct FlowSession {
    meta: FlowMetadata,
    /// Packets in the current window.
    active: bool,
    /// The session was freed (idle or evicted): its records of the current
    /// window are written, then it is forgotten (no more NODATA).
    released: bool,
}

/// One window's records (or a part of it, when `max_flows` cut it).
pub struct FlowBatch {
    /// Window start, Unix seconds: decides the file.
    pub window_s: u64,
    pub lines: String,
    pub json: String,
    /// Records in `lines` (one a line).
    pub records: u64,
}

/// Per-worker aggregation of flows.
pub struct FlowTable {
    cfg: Arc<FlowConfig>,
    flows: HashMap<FlowKey, FlowAgg>,
    /// The sessions seen, by id, until they are freed.
    sessions: foldhash::HashMap<u64, FlowSession>,
    /// Current window index (`ts / interval`), `None` before the first packet.
    window: Option<u64>,
    out: mpsc::Sender<FlowBatch>,
    stats: Arc<crate::telemetry::metrics::Counters>,
}

impl FlowTable {
    pub fn new(
        cfg: Arc<FlowConfig>,
        out: mpsc::Sender<FlowBatch>,
        stats: Arc<crate::telemetry::metrics::Counters>,
    ) -> FlowTable {
        FlowTable {
            cfg,
            flows: HashMap::new(),
            sessions: Default::default(),
            window: None,
            out,
            stats,
        }
    }

    pub fn config(&self) -> Arc<FlowConfig> {
        self.cfg.clone()
    }

    /// Counts one kept frame of session `session` (its id; `vni`, `source`
    /// for its metadata).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        session: u64,
        vni: u32,
        source: IpAddr,
        own: &OwnAddresses,
        d: &Decoded,
        ts_ns: u64,
    ) {
        let Some(ip) = &d.ip else { return };
        self.advance(ts_ns);
        let cfg = &self.cfg;
        self.sessions
            .entry(session)
            .or_insert_with(|| FlowSession {
                meta: cfg.metadata(vni, source),
                active: false,
                released: false,
            })
            .active = true;
        let (sport, dport) = ip.ports.unwrap_or((0, 0));
        let key = FlowKey {
            session,
            protocol: ip.protocol,
            src: ip.src,
            dst: ip.dst,
            sport,
            dport,
        };
        if !self.flows.contains_key(&key) && self.flows.len() >= self.cfg.max_flows {
            self.stats.flow_early_flushes.fetch_add(1, Relaxed);
            self.emit(false);
        }
        let e = self.flows.entry(key).or_insert(FlowAgg {
            packets: 0,
            bytes: 0,
            first_ns: ts_ns,
            last_ns: ts_ns,
            tcp_flags: 0,
            direction: own.direction(ip),
        });
        e.packets += 1;
        e.bytes += u64::from(ip.total_len);
        e.first_ns = e.first_ns.min(ts_ns);
        e.last_ns = e.last_ns.max(ts_ns);
        if ip.protocol == PROTO_TCP {
            e.tcp_flags |= ip.tcp_flags.unwrap_or(0) & 0x3f;
        }
    }

    /// Session `session` was freed: after the records of the current
    /// window, it gets no more (no NODATA either).
    pub fn release(&mut self, session: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.released = true;
        }
    }

    /// Closes every window that ended before `now_ns` (live: once a second;
    /// replay: as packet time advances).
    pub fn advance(&mut self, now_ns: u64) {
        let w = now_ns / 1_000_000_000 / self.cfg.interval_s;
        match self.window {
            None => self.window = Some(w),
            Some(cur) if w > cur => {
                self.emit(true);
                self.window = Some(w);
            }
            _ => {}
        }
    }

    /// Writes out the current window's records; with `end_of_window`, also
    /// NODATA records for sessions silent in it.
    fn emit(&mut self, end_of_window: bool) {
        let Some(w) = self.window else { return };
        let window_s = w * self.cfg.interval_s;
        let mut batch = FlowBatch {
            window_s,
            lines: String::new(),
            json: String::new(),
            records: 0,
        };
        let mut flows: Vec<(FlowKey, FlowAgg)> = self.flows.drain().collect();
        flows.sort_by_key(|(k, a)| {
            (
                k.session, a.first_ns, k.protocol, k.src, k.dst, k.sport, k.dport,
            )
        });
        for (k, a) in &flows {
            let rec = Record::Flow(k, a);
            self.write(&mut batch, k.session, &rec, window_s);
        }
        self.stats
            .flow_records
            .fetch_add(flows.len() as u64, Relaxed);
        if end_of_window {
            let mut ids: Vec<u64> = self.sessions.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let s = self.sessions.get_mut(&id).expect("listed above");
                let (active, released) = (std::mem::replace(&mut s.active, false), s.released);
                if !active && !released {
                    self.write(&mut batch, id, &Record::NoData, window_s);
                    self.stats.flow_nodata.fetch_add(1, Relaxed);
                }
            }
            self.sessions.retain(|_, s| !s.released);
        }
        if !batch.lines.is_empty() {
            let _ = self.out.send(batch);
        }
    }

    fn write(&self, batch: &mut FlowBatch, session: u64, rec: &Record, window_s: u64) {
        let meta = &self.sessions[&session].meta;
        let values: Vec<String> = self
            .cfg
            .format
            .fields
            .iter()
            .map(|f| {
                value(
                    *f,
                    self.cfg.format.version,
                    meta,
                    rec,
                    window_s,
                    self.cfg.interval_s,
                )
            })
            .collect();
        let _ = writeln!(batch.lines, "{}", values.join(" "));
        batch.records += 1;
        if self.cfg.json {
            batch.json.push('{');
            for (i, (name, v)) in self.cfg.format.names.iter().zip(&values).enumerate() {
                if i > 0 {
                    batch.json.push(',');
                }
                let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
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
            batch.json.push_str("}\n");
        }
    }

    /// Writes out what is left (end of replay, shutdown).
    pub fn finish(&mut self) {
        self.emit(true);
    }
}

enum Record<'a> {
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

/// The flow writer shared by a set of sibling pipelines (workers): the
/// last one to finish ends the writer thread.
pub struct FlowShared {
    writer: std::sync::Mutex<Option<FlowWriter>>,
    live: std::sync::atomic::AtomicUsize,
}

impl FlowShared {
    pub fn new(writer: FlowWriter) -> Arc<FlowShared> {
        Arc::new(FlowShared {
            writer: std::sync::Mutex::new(Some(writer)),
            live: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A table for one more pipeline.
    pub fn table(
        self: &Arc<Self>,
        cfg: Arc<FlowConfig>,
        counters: Arc<crate::telemetry::metrics::Counters>,
    ) -> FlowTable {
        self.live.fetch_add(1, Relaxed);
        let tx = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.sender())
            .expect("writer running while tables are made");
        FlowTable::new(cfg, tx, counters)
    }

    /// Called by each pipeline after its table wrote its last records.
    pub fn done(&self) {
        if self.live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1
            && let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            w.finish();
        }
    }
}

/// The flow files' writer thread: `DIR/flows/YYYY/MM/DD/
/// mirrorcap_flows_<start>-<seq>.log[.gz]` (and `.jsonl[.gz]`), a new file
/// every `file_interval`, written as `.part` and renamed when closed;
/// `max_files` closed flow files are kept (oldest deleted first).
///
/// Each batch (a window's records) is appended with one write; with
/// `gzip` it is one gzip member of its own (a file of several members is
/// one valid gzip stream: `gzip -t`, zcat, Athena and `mirrorcap flows`
/// read it whole). A write that fails (disk full) cuts the file back to
/// its last whole batch, counts the batch's records as lost
/// (`mirrorcap_flow_records_lost_total`), turns `/healthz` to 503 until a
/// write succeeds again, and the next batch is tried anew; so a flow file
/// on disk is always whole, and it gets its final name only after its
/// data is synced. A file that holds no batch is removed, not published.
pub struct FlowWriter {
    tx: Option<mpsc::Sender<FlowBatch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlowWriter {
    pub fn spawn(
        dir: &Path,
        cfg: Arc<FlowConfig>,
        max_files: Option<u32>,
        counters: Arc<crate::telemetry::metrics::Counters>,
    ) -> FlowWriter {
        let (tx, rx) = mpsc::channel::<FlowBatch>();
        let root = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("mirrorcap-flows".into())
            .spawn(move || {
                FlowFiles {
                    root,
                    cfg,
                    max_files,
                    counters,
                    current: None,
                    closed: Default::default(),
                    seq: 0,
                    gz_buf: Vec::new(),
                    errors: crate::telemetry::metrics::LogLimiter::new(
                        std::time::Duration::from_secs(10),
                    ),
                }
                .run(rx)
            })
            .expect("spawning the flow writer");
        FlowWriter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn sender(&self) -> mpsc::Sender<FlowBatch> {
        self.tx.clone().expect("running")
    }

    /// Waits until every table's sender is gone and the files are closed.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("flows: the flow writer thread panicked");
        }
    }
}

/// Errors writing flow files; each is counted and logged by [`FlowFiles`].
#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    #[error(transparent)]
    Dir(#[from] crate::output::outdir::OutDirError),
    #[error("{path}: cannot create flow file: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: write failed (the file is cut back to its last whole batch): {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot sync or rename to its final name: {source}")]
    Close {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One open flow file (`.part`): only whole batches are in it. Its
/// directory is held open (reached without following links, see
/// [`crate::output::outdir`]), so the rename and a deletion cannot be redirected.
struct FlowFile {
    dir: crate::output::outdir::Dir,
    name: std::ffi::OsString,
    file: std::fs::File,
    /// Bytes of whole batches (what a failed write is cut back to).
    good_len: u64,
}

impl FlowFile {
    fn create(dir: crate::output::outdir::Dir, name: String) -> Result<FlowFile, FlowFileError> {
        let part = crate::output::outdir::part_name(name.as_ref());
        match dir.create_file(&part, crate::output::files::FILE_MODE) {
            Ok(file) => Ok(FlowFile {
                dir,
                name: name.into(),
                file,
                good_len: 0,
            }),
            Err(source) => Err(FlowFileError::Create {
                path: dir.path().join(part),
                source,
            }),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    fn part_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(crate::output::outdir::part_name(&self.name))
    }

    /// Appends `bytes` whole, or cuts the file back to where it was.
    fn append(&mut self, bytes: &[u8]) -> Result<(), FlowFileError> {
        use std::io::{Seek, Write};
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.good_len += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.good_len);
                let _ = self.file.seek(std::io::SeekFrom::Start(self.good_len));
                Err(FlowFileError::Write {
                    path: self.part_path(),
                    source,
                })
            }
        }
    }

    /// Syncs and renames the file to its final name; one with no batch in
    /// it is removed instead. Returns the final path when published.
    fn close(self) -> Result<Option<PathBuf>, FlowFileError> {
        let part = crate::output::outdir::part_name(&self.name);
        if self.good_len == 0 {
            drop(self.file);
            let _ = self.dir.unlink(&part);
            return Ok(None);
        }
        let r = self
            .file
            .sync_data()
            .and_then(|()| self.dir.rename(&part, &self.name));
        match r {
            Ok(()) => Ok(Some(self.path())),
            Err(source) => Err(FlowFileError::Close {
                path: self.part_path(),
                source,
            }),
        }
    }
}

struct OpenFlowFile {
    slot: u64,
    text: FlowFile,
    json: Option<FlowFile>,
}

/// The flow writer thread's state.
struct FlowFiles {
    /// The output directory; flow files go under `flows/` in it.
    root: PathBuf,
    cfg: Arc<FlowConfig>,
    max_files: Option<u32>,
    counters: Arc<crate::telemetry::metrics::Counters>,
    current: Option<OpenFlowFile>,
    closed: std::collections::VecDeque<PathBuf>,
    seq: u32,
    /// A batch compressed as one gzip member, reused.
    gz_buf: Vec<u8>,
    errors: crate::telemetry::metrics::LogLimiter,
}

impl FlowFiles {
    fn run(mut self, rx: mpsc::Receiver<FlowBatch>) {
        while let Ok(batch) = rx.recv() {
            self.write_batch(&batch);
        }
        if let Some(f) = self.current.take() {
            self.close(f);
        }
    }

    fn write_batch(&mut self, batch: &FlowBatch) {
        let slot = batch.window_s / self.cfg.file_interval_s;
        if let Some(f) = self.current.take_if(|c| c.slot != slot) {
            self.close(f);
        }
        if self.current.is_none() {
            match self.open(slot) {
                Ok(f) => self.current = Some(f),
                Err(e) => return self.fail(&e, batch.records),
            }
        }
        let mut text = String::new();
        let c = self.current.as_ref().expect("opened");
        if c.text.good_len == 0 {
            text.push_str(&self.cfg.format.header());
            text.push('\n');
        }
        text.push_str(&batch.lines);
        let r = self.append(false, text.as_bytes());
        if let Err(e) = r {
            return self.fail(&e, batch.records);
        }
        if self.cfg.json
            && let Err(e) = self.append(true, batch.json.as_bytes())
        {
            // The text file has the records; the JSON copy lost them, and
            // health stays 503 until a JSON write works again.
            return self.fail(&e, 0);
        }
        self.counters.set_flow_output_error(None);
    }

    /// Appends `bytes` to the text (or JSON) file, as one gzip member
    /// with `gzip`.
    fn append(&mut self, json: bool, bytes: &[u8]) -> Result<(), FlowFileError> {
        let c = self.current.as_mut().expect("opened");
        let Some(f) = (if json {
            c.json.as_mut()
        } else {
            Some(&mut c.text)
        }) else {
            return Ok(());
        };
        if !self.cfg.gzip {
            return f.append(bytes);
        }
        use std::io::Write;
        self.gz_buf.clear();
        let mut gz = flate2::write::GzEncoder::new(
            std::mem::take(&mut self.gz_buf),
            flate2::Compression::default(),
        );
        let compressed = gz.write_all(bytes).and_then(|()| gz.finish());
        match compressed {
            Ok(member) => {
                let r = f.append(&member);
                self.gz_buf = member;
                r
            }
            Err(source) => Err(FlowFileError::Write {
                path: f.part_path(),
                source,
            }),
        }
    }

    fn open(&mut self, slot: u64) -> Result<OpenFlowFile, FlowFileError> {
        use crate::output::files::DIR_MODE;
        use crate::output::outdir::{Dir, part_name};
        let ext = if self.cfg.gzip { ".gz" } else { "" };
        let t = crate::output::template::UtcTime::from_unix(slot * self.cfg.file_interval_s);
        let rel = PathBuf::from(format!("flows/{:04}/{:02}/{:02}", t.year, t.month, t.day));
        let open_dir = || Dir::open_root(&self.root, true, DIR_MODE)?.sub(&rel, true, DIR_MODE);
        let dir = open_dir()?;
        let base = format!(
            "mirrorcap_flows_{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        );
        loop {
            let seq = self.seq;
            self.seq += 1;
            let text = format!("{base}-{seq:06}.log{ext}");
            let json = format!("{base}-{seq:06}.jsonl{ext}");
            // An error looking (EIO, EACCES) is a failure, not a name taken.
            let taken = |n: &str| -> Result<bool, FlowFileError> {
                let look = |name: &std::ffi::OsStr| {
                    dir.exists(name).map_err(|source| FlowFileError::Create {
                        path: dir.path().join(name),
                        source,
                    })
                };
                Ok(look(n.as_ref())? || look(&part_name(n.as_ref()))?)
            };
            if taken(&text)? || (self.cfg.json && taken(&json)?) {
                continue;
            }
            let json = if self.cfg.json {
                Some(FlowFile::create(open_dir()?, json)?)
            } else {
                None
            };
            let text = FlowFile::create(dir, text)?;
            return Ok(OpenFlowFile { slot, text, json });
        }
    }

    fn close(&mut self, f: OpenFlowFile) {
        for file in std::iter::once(f.text).chain(f.json) {
            match file.close() {
                Ok(Some(path)) => self.closed.push_back(path),
                Ok(None) => {}
                Err(e) => self.fail(&e, 0),
            }
        }
        if let Some(max) = self.max_files {
            while self.closed.len() > max as usize {
                if let Some(old) = self.closed.pop_front()
                    && let Err(e) = crate::output::outdir::unlink_under(&self.root, &old)
                    && e.io()
                        .is_none_or(|e| e.kind() != std::io::ErrorKind::NotFound)
                {
                    tracing::warn!(path = %old.display(), error = %e, "flows: retention cannot delete file");
                }
            }
        }
    }

    /// Counts a failure (and the records it lost), marks the output
    /// unhealthy and logs it, at most once per 10 s.
    fn fail(&mut self, e: &FlowFileError, records_lost: u64) {
        self.counters.flow_write_errors.fetch_add(1, Relaxed);
        self.counters
            .flow_records_lost
            .fetch_add(records_lost, Relaxed);
        self.counters.set_flow_output_error(Some(e.to_string()));
        if let Some(held) = self.errors.allow() {
            tracing::error!(error = %e, records_lost, held_back = held, "flows: cannot write flow records; they are counted as lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame 10.0.0.1:40000 -> 10.0.0.2:53.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 16, 0, 0]);
        f.extend_from_slice(&[0; 8]);
        f
    }

    /// Issue 12 item 2: sessions are told apart by id, not table slot; a
    /// freed session's records of the window are written, then it gets no
    /// more NODATA.
    #[test]
    fn freed_sessions_are_not_mixed_and_get_no_more_nodata() {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(crate::telemetry::metrics::Counters::default());
        let cfg = FlowConfig {
            enabled: true,
            interval_s: 1,
            format: FlowFormat::parse("${srcaddr} ${packets} ${log-status} ${interface-id}")
                .unwrap(),
            sessions: vec![FlowSessionMeta {
                vni: Some(7),
                source: None,
                meta: FlowMetadata {
                    interface_id: Some("eni-seven".into()),
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        let mut t = FlowTable::new(Arc::new(cfg), tx, counters);
        let src: IpAddr = "10.0.0.9".parse().unwrap();
        let own = OwnAddresses {
            outer: src,
            extra: Vec::new(),
        };
        let frame = udp_frame();
        let d = crate::wire::decode::decode(&frame);
        const S: u64 = 1_000_000_000;
        // Session 1 (VNI 7) freed; session 2 (VNI 8) took its slot.
        t.add(1, 7, src, &own, &d, 10 * S);
        t.add(1, 7, src, &own, &d, 10 * S);
        t.release(1);
        t.add(2, 8, src, &own, &d, 10 * S);
        t.advance(11 * S);
        t.advance(12 * S);
        drop(t);
        let lines: Vec<String> = rx
            .iter()
            .flat_map(|b| b.lines.lines().map(String::from).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            lines,
            ["10.0.0.1 2 OK eni-seven", "10.0.0.1 1 OK -", "- - NODATA -",]
        );
    }

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
    }
}
