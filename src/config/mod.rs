//! The configuration: TOML in, a validated [`Config`] out.
//!
//! Two steps, as ripgrep does with flags: serde reads the file into raw
//! structs that reject unknown keys (`raw`), then one validator per table
//! or concern checks every value, so a bad config fails before any socket
//! is bound or file written:
//!
//! - `daemon`: the top-level keys (listen, receive, limits, `on_rotate`);
//! - `output`: `[output]`;
//! - `flows`: `[flows]`;
//! - `filter`: `[filter]`, `[[session]]`, `aws_json` (read in `aws`), `bpf`;
//! - `sizes`: sizes and durations as written.
//!
//! Every error names the file, the line, the key and the value at fault,
//! and says what would be accepted; `context` is the one place that
//! places it. For every optional limit, absent or 0 means "off".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::filter::{MirrorFilter, VniFilter};

mod aws;
mod context;
mod daemon;
mod filter;
mod flows;
mod output;
mod raw;
mod s3;
mod sizes;
mod stream;
mod values;

pub use daemon::{listens_overlap, same_port_as_listen};
pub use filter::SessionConfig;
pub use output::{DEFAULT_IDLE_TIMEOUT, MAX_SNAPLEN, MIN_SNAPLEN, NAME_MAX, OutputConfig};
pub use s3::S3Config;
pub use sizes::{parse_duration, parse_size_str};
pub use stream::{ControlSocket, StreamConfig};

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
    /// Address and port a second socket group binds for GENEVE (a Gateway
    /// Load Balancer endpoint's traffic); off when `None`.
    pub geneve_listen: Option<SocketAddr>,
    /// Root of every output file.
    pub dir: PathBuf,
    /// UDP destination ports that carry VXLAN in replayed captures.
    pub vxlan_ports: Vec<u16>,
    /// UDP destination ports that carry GENEVE (a Gateway Load Balancer
    /// endpoint's traffic) in replayed captures.
    pub geneve_ports: Vec<u16>,
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
    /// Live subscribers: the control socket and its limits.
    pub stream: StreamConfig,
    /// `[flows]`: VPC Flow Logs records.
    pub flows: Arc<crate::flows::FlowConfig>,
    pub output: OutputConfig,
    /// `[output.s3]`: closed files uploaded to S3; off when `None`.
    pub s3: Option<Arc<S3Config>>,
    /// `host_id`: `{host}` in S3 keys, instead of the instance ID (or
    /// the host name off EC2).
    pub host_id: Option<String>,
    /// `[filter]`: rules and expression for every session without its own.
    pub filter: Option<Arc<MirrorFilter>>,
    /// `[[session]]` entries.
    pub sessions: Vec<SessionConfig>,
}

/// Default caps: sessions per worker and capture files open at once.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
pub const DEFAULT_MAX_OPEN_FILES: usize = 4096;
/// Sessions with their own `/metrics` series and summary line.
pub const DEFAULT_METRICS_MAX_SESSIONS: usize = 100;

/// Default for `batch_wait`: 1 ms, like the block timeout tcpdump gives
/// its TPACKET_V3 ring. At 200k datagrams/s that is 200 datagrams a wakeup;
/// a 32 MiB socket buffer holds far more than 1 ms of any rate one core
/// can take.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(1);
/// Longest `batch_wait` accepted.
pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(100);

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

    /// Validates `text`; `path` is only used in error messages. Keys are
    /// checked in a fixed order (the fields below, as written), so a file
    /// with several faults always reports the same first one.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cx = context::Ctx { text, path };
        let mut raw: raw::RawConfig = toml::from_str(text).map_err(|e| cx.toml(&e))?;
        // Before `[output.s3]`, which checks the flow files' keys too.
        let flows = flows::flows(&cx, raw.flows.take())?;
        Ok(Config {
            listen: daemon::listen(&cx, raw.listen.as_ref())?,
            geneve_listen: daemon::geneve_listen(
                &cx,
                raw.geneve_listen.as_ref(),
                raw.listen.as_ref(),
            )?,
            vnis: daemon::vnis(&cx, &raw.vnis, &raw.exclude_vnis)?,
            geneve_ports: daemon::geneve_ports(
                &cx,
                raw.geneve_ports.as_deref(),
                raw.vxlan_ports.as_deref().unwrap_or(&[4789]),
            )?,
            vxlan_ports: raw.vxlan_ports.unwrap_or_else(|| vec![4789]),
            recv_buffer: daemon::recv_buffer(&cx, raw.recv_buffer.as_ref())?,
            batch: daemon::batch(&cx, raw.batch.as_ref())?,
            batch_wait: daemon::batch_wait(&cx, raw.batch_wait.as_ref())?,
            workers: daemon::workers(&cx, raw.workers.as_ref())?,
            metrics_listen: daemon::side_listener(&cx, raw.metrics_listen.as_ref())?,
            health_tcp_listen: daemon::side_listener(&cx, raw.health_tcp_listen.as_ref())?,
            log_level: daemon::log_level(&cx, raw.log_level.as_ref())?,
            allow_sources: daemon::allow_sources(&cx, &raw.allow_sources)?,
            max_sessions: daemon::at_least_one(
                &cx,
                raw.max_sessions.as_ref(),
                DEFAULT_MAX_SESSIONS,
                "session",
            )?,
            max_open_files: daemon::at_least_one(
                &cx,
                raw.max_open_files.as_ref(),
                DEFAULT_MAX_OPEN_FILES,
                "file",
            )?,
            // 0 is meaningful here: no per-session series, only the sum.
            metrics_max_sessions: raw
                .metrics_max_sessions
                .as_ref()
                .map_or(DEFAULT_METRICS_MAX_SESSIONS, |v| *v.get_ref() as usize),
            on_rotate_jobs: daemon::at_least_one(&cx, raw.on_rotate_jobs.as_ref(), 2, "job")?,
            on_rotate: daemon::on_rotate(&cx, raw.on_rotate, raw.output.s3.is_some())?,
            stream: stream::stream(
                &cx,
                raw.control_socket.as_ref(),
                raw.control_group.as_ref(),
                raw.max_subscribers.as_ref(),
                raw.stream_queue.as_ref(),
            )?,
            host_id: s3::host_id(&cx, raw.host_id.as_ref())?,
            s3: s3::s3(&cx, raw.output.s3.take(), &flows)?.map(Arc::new),
            flows: Arc::new(flows),
            output: output::output(&cx, raw.output)?,
            filter: filter::default_filter(&cx, raw.filter)?,
            sessions: filter::sessions(&cx, raw.session)?,
            dir: raw.dir.unwrap_or_else(|| PathBuf::from("./captures")),
        })
    }

    /// SIGHUP: the settings read once at start (sockets, workers, the
    /// output root) cannot change while running. Puts the running value
    /// (`self`) of each back into `new` and returns the names of those
    /// that `new` had changed, for the warning. The one list of them.
    pub fn keep_restart_settings(&self, new: &mut Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        keep(&mut changed, "listen", &mut new.listen, &self.listen);
        keep(
            &mut changed,
            "geneve_listen",
            &mut new.geneve_listen,
            &self.geneve_listen,
        );
        keep(&mut changed, "dir", &mut new.dir, &self.dir);
        keep(&mut changed, "workers", &mut new.workers, &self.workers);
        keep(&mut changed, "[output.s3]", &mut new.s3, &self.s3);
        keep(&mut changed, "host_id", &mut new.host_id, &self.host_id);
        keep(
            &mut changed,
            "control_socket, control_group, max_subscribers, stream_queue",
            &mut new.stream,
            &self.stream,
        );
        keep(
            &mut changed,
            "recv_buffer",
            &mut new.recv_buffer,
            &self.recv_buffer,
        );
        keep(&mut changed, "batch", &mut new.batch, &self.batch);
        keep(
            &mut changed,
            "batch_wait",
            &mut new.batch_wait,
            &self.batch_wait,
        );
        changed
    }
}

/// One restart-only setting: the running value wins; a change is named.
fn keep<T: PartialEq + Clone>(
    changed: &mut Vec<&'static str>,
    key: &'static str,
    new: &mut T,
    running: &T,
) {
    if new != running {
        changed.push(key);
        new.clone_from(running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::encode::OutputFormat;

    pub(super) fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn default_config() {
        let c = Config::default_config();
        assert_eq!(c.listen, "0.0.0.0:4789".parse().unwrap());
        assert_eq!(c.dir, PathBuf::from("./captures"));
        assert_eq!(c.vxlan_ports, vec![4789]);
        assert_eq!(c.geneve_ports, vec![6081]);
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

    /// Issue 15: the live subscribers' keys: off by default (opt-in);
    /// "auto" or an absolute path; a group that exists; limits in range;
    /// each error names the line, key and what is accepted.
    #[test]
    fn control_socket_keys() {
        let c = parse("").unwrap();
        assert_eq!(c.stream.socket, None);
        assert_eq!(c.stream.max_subscribers, 8);
        let c = parse("control_socket = \"auto\"\nmax_subscribers = 2\nstream_queue = \"1MiB\"\ncontrol_group = \"0\"\n").unwrap();
        assert_eq!(c.stream.socket, Some(ControlSocket::Auto));
        assert_eq!((c.stream.max_subscribers, c.stream.queue), (2, 1 << 20));
        assert_eq!(c.stream.group, Some(("0".to_string(), 0)));
        let e = parse("dir = \"x\"\ncontrol_socket = \"ctl.sock\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2: `control_socket`: \"ctl.sock\" is not an absolute path"),
            "{e}"
        );
        let e = parse("control_group = \"no-such-group-here\"\n").unwrap_err();
        assert!(
            e.contains("`control_group`: no group named \"no-such-group-here\""),
            "{e}"
        );
        let e = parse("max_subscribers = 65\n").unwrap_err();
        assert!(
            e.contains("`max_subscribers`: 65 is out of range: expected 1 to 64"),
            "{e}"
        );
        let e = parse("stream_queue = \"1KiB\"\n").unwrap_err();
        assert!(
            e.contains("`stream_queue`: 1024 bytes is out of range"),
            "{e}"
        );
        let p = ControlSocket::Path("/run/x.sock".into());
        assert_eq!(p.resolve(Path::new("/d")), Path::new("/run/x.sock"));
    }

    /// Issue 14: `geneve_listen` is off by default; a value that is not an
    /// address, or that overlaps `listen` (same port, same or wildcard
    /// address: with several workers the sockets would join one
    /// SO_REUSEPORT group), is refused with the line, key and value; it
    /// takes a restart.
    #[test]
    fn geneve_listen() {
        assert_eq!(parse("").unwrap().geneve_listen, None);
        assert_eq!(parse("geneve_listen = \"\"\n").unwrap().geneve_listen, None);
        let c = parse("geneve_listen = \"0.0.0.0:6081\"\n").unwrap();
        assert_eq!(c.geneve_listen, Some("0.0.0.0:6081".parse().unwrap()));
        let e = parse("dir = \"x\"\ngeneve_listen = \"6081\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2: `geneve_listen`: \"6081\" is not an address and port: expected e.g. \"0.0.0.0:6081\""),
            "{e}"
        );
        let e = parse("geneve_listen = \"127.0.0.1:4789\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "t.toml:1: `geneve_listen`: 127.0.0.1:4789 overlaps `listen` (0.0.0.0:4789)"
            ),
            "{e}"
        );
        let c = parse("listen = \"127.0.0.1:4789\"\ngeneve_listen = \"127.0.0.2:4789\"\n").unwrap();
        assert_eq!(c.geneve_listen, Some("127.0.0.2:4789".parse().unwrap()));
        let mut new = parse("geneve_listen = \"0.0.0.0:6082\"\n").unwrap();
        let running = parse("geneve_listen = \"0.0.0.0:6081\"\n").unwrap();
        assert_eq!(
            running.keep_restart_settings(&mut new),
            vec!["geneve_listen"]
        );
        assert_eq!(new.geneve_listen, running.geneve_listen);
    }

    /// Issue 14: `geneve_ports` defaults to 6081; 0 and a port that is
    /// also in `vxlan_ports` are refused with the line, key and value.
    #[test]
    fn geneve_ports() {
        assert_eq!(
            parse("geneve_ports = [6081, 6082]\n").unwrap().geneve_ports,
            vec![6081, 6082]
        );
        assert!(
            parse("geneve_ports = []\n")
                .unwrap()
                .geneve_ports
                .is_empty()
        );
        let e = parse("dir = \"x\"\ngeneve_ports = [6081, 0]\n").unwrap_err();
        assert!(e.starts_with("t.toml:2: `geneve_ports`: port 0"), "{e}");
        assert!(e.contains("1 to 65535"), "{e}");
        let e = parse("vxlan_ports = [4789, 6081]\n").unwrap_err();
        assert!(
            e.contains("`geneve_ports`: port 6081 is also in `vxlan_ports`"),
            "{e}"
        );
        let e = parse("geneve_ports = [4789]\n").unwrap_err();
        assert!(e.starts_with("t.toml:1: `geneve_ports`: port 4789"), "{e}");
        let e = parse("geneve_ports = [70000]\n").unwrap_err();
        assert!(e.starts_with("t.toml:1: `geneve_ports`"), "{e}");
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

    /// The restart-only settings are kept from the running config and
    /// named; everything else comes from the new one.
    #[test]
    fn keep_restart_settings() {
        let running = Config::default_config();
        let mut new = parse("listen = \"127.0.0.1:5000\"\nbatch = 8\nmax_sessions = 7\n").unwrap();
        assert_eq!(
            running.keep_restart_settings(&mut new),
            vec!["listen", "batch"]
        );
        assert_eq!(new.listen, running.listen);
        assert_eq!(new.batch, running.batch);
        assert_eq!(new.max_sessions, 7);
        let mut same = Config::default_config();
        assert!(running.keep_restart_settings(&mut same).is_empty());
    }
}
