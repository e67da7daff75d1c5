//! The `mirrorcap` binary: the command line, logging, signals and exit
//! codes. The commands themselves are library calls (`mirrorcap::app`,
//! `mirrorcap::flows::report`).
//!
//! Exit codes: 0 success; 1 an input could not be read to its end (every
//! file written is still complete); 2 a usage, config, bind or output error
//! (an output directory that cannot be created or written is found at
//! start); 3 `replay` could not write some frames (`disk_full`,
//! `write_error`; wins over 1).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use mirrorcap::app::{Control, Overrides, ReloadSource};
use mirrorcap::config::Config;

/// An input could not be read to its end (`replay`, `flows`).
const EXIT_INPUT: u8 = 1;
/// `replay`: frames were lost on output (disk full, write errors).
const EXIT_FRAMES_LOST: u8 = 3;

#[derive(Parser)]
#[command(
    name = "mirrorcap",
    version,
    about = "AWS VPC Traffic Mirroring (VXLAN, UDP 4789) to per-session pcap files",
    long_about = "Receives AWS VPC Traffic Mirroring datagrams (VXLAN over UDP 4789), \
                  removes the VXLAN wrapping and writes each mirror session \
                  (source ENI address, VNI) to its own rotating pcap files. \
                  Needs no root and no capability."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the capture daemon: listen for VXLAN datagrams and write capture files.
    Run {
        /// TOML config file (default: the embedded default, listen 0.0.0.0:4789, dir ./captures).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address and port to listen on, e.g. 0.0.0.0:4789 (overrides `listen`).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Output directory (overrides `dir`).
        #[arg(long, short)]
        dir: Option<PathBuf>,
    },
    /// Replay captures of the encapsulated traffic (pcap or pcapng; `-` = stdin)
    /// through the same pipeline, e.g. `tcpdump -i eth0 -U -w - udp port 4789 | mirrorcap replay -`.
    Replay {
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output directory (overrides `dir`).
        #[arg(long, short)]
        dir: Option<PathBuf>,
        /// Capture files to read, in order; `-` reads standard input.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Top talkers from flow records (mirrorcap's flow files, .gz too) or computed
    /// from captures, like a CloudWatch Logs Insights `stats sum(bytes) by ...` query.
    Flows {
        /// Fields to group by (comma-separated).
        #[arg(long, default_value = "srcaddr,dstaddr", value_delimiter = ',')]
        by: Vec<String>,
        /// Keep only records where every field=value term holds, e.g. 'dstport=22 protocol=6'.
        #[arg(long)]
        filter: Option<String>,
        /// How many groups to print (most bytes first).
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Flow files or captures.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Watch sessions live: subscribe on the daemon's control socket and write
    /// their frames as a pcap or pcapng stream, e.g.
    /// `mirrorcap stream --vni 123 | wireshark -k -i -`.
    Stream {
        /// The daemon's config file, to find its `control_socket`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The control socket (default: the config's, else
        /// /run/mirrorcap/control.sock when it exists, else ./captures/.control.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Only sessions of this VNI (repeatable).
        #[arg(long)]
        vni: Vec<u32>,
        /// Only sessions of this mirrored ENI address (repeatable).
        #[arg(long)]
        source: Vec<std::net::IpAddr>,
        /// Only sessions through this Gateway Load Balancer endpoint, `vpce-…` (repeatable).
        #[arg(long)]
        endpoint: Vec<String>,
        #[command(flatten)]
        out: CaptureOut,
        /// Stop after this many frames.
        #[arg(short = 'c')]
        count: Option<u64>,
        /// Stop after this long, e.g. 30s or 5min.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Wireshark's extcap interface (run by Wireshark through a wrapper in its
    /// extcap folder, see the README): one interface per live session and one for all.
    /// Wireshark passes the options' defaults again (`--socket`), after the
    /// wrapper's own: the last one wins.
    #[command(hide = true, args_override_self = true)]
    Extcap {
        #[arg(long)]
        extcap_interfaces: bool,
        #[arg(long)]
        extcap_version: Option<String>,
        #[arg(long)]
        extcap_interface: Option<String>,
        #[arg(long)]
        extcap_dlts: bool,
        #[arg(long)]
        extcap_config: bool,
        #[arg(long)]
        capture: bool,
        #[arg(long)]
        fifo: Option<PathBuf>,
        #[arg(long)]
        extcap_capture_filter: Option<String>,
        #[arg(long)]
        extcap_control_in: Option<String>,
        #[arg(long)]
        extcap_control_out: Option<String>,
        #[arg(long)]
        extcap_reload_option: Option<String>,
        #[arg(long)]
        debug: bool,
        /// The control socket (as `stream`).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The daemon's config file (as `stream`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// VNIs, comma-separated, instead of the interface's.
        #[arg(long)]
        vni: Option<String>,
        /// A libpcap expression the daemon applies.
        #[arg(long)]
        filter: Option<String>,
    },
    /// One time-ordered capture of some sessions over a time window, merged
    /// from the files of every INPUT (the output directories of several
    /// mirror targets), e.g. `mirrorcap extract --from -15min --source 10.0.1.5
    /// --filter 'tcp port 443' dir-a dir-b | wireshark -k -i -`.
    Extract {
        /// The daemon's config file: its `output.template` says where session,
        /// start and sequence number are in a path (default: the default template).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Window start, inclusive: RFC 3339 (2026-11-30T14:02:00Z), `now`, or a
        /// time ago (-15min, -2h).
        #[arg(long, value_parser = extract_time, allow_hyphen_values = true)]
        from: Option<u64>,
        /// Window end, exclusive (same forms as --from).
        #[arg(long, value_parser = extract_time, allow_hyphen_values = true)]
        to: Option<u64>,
        /// Only sessions of this VNI (repeatable).
        #[arg(long)]
        vni: Vec<u32>,
        /// Only sessions of this mirrored ENI address (repeatable).
        #[arg(long)]
        source: Vec<std::net::IpAddr>,
        /// Only sessions through this Gateway Load Balancer endpoint, `vpce-…` (repeatable).
        #[arg(long, value_parser = extract_endpoint)]
        endpoint: Vec<mirrorcap::wire::geneve::EndpointId>,
        #[command(flatten)]
        out: CaptureOut,
        /// Print files considered, chosen and opened, bytes and records read on stderr.
        #[arg(long)]
        stats: bool,
        /// Output directories to read (default: the config's `dir`), or S3
        /// prefixes the uploader filled, `s3://bucket/prefix` (endpoint and
        /// region from --config's [output.s3], else AWS_ENDPOINT_URL, AWS_REGION).
        inputs: Vec<PathBuf>,
    },
    /// Check a config file: exit 0, or print the error (file, line, key, what is accepted) and exit 2.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// The capture `stream` and `extract` write: which frames, in which
/// format, where.
#[derive(clap::Args)]
struct CaptureOut {
    /// Only frames this libpcap expression matches, as tcpdump takes it.
    #[arg(long)]
    filter: Option<String>,
    /// Output format: pcap (ns) interleaves sessions; pcapng gives each its own interface.
    #[arg(long, default_value = "pcap", value_parser = ["pcap", "pcapng"])]
    format: String,
    /// Where to write; `-` is standard output.
    #[arg(short = 'w', default_value = "-")]
    write: String,
}

impl CaptureOut {
    fn format(&self) -> mirrorcap::capture::encode::OutputFormat {
        if self.format == "pcapng" {
            mirrorcap::capture::encode::OutputFormat::Pcapng
        } else {
            mirrorcap::capture::encode::OutputFormat::Pcap
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mirrorcap: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `context: cause: root cause`, each cause
/// printed once: most errors here already name their cause in their own
/// message ("cannot bind UDP ...: Address already in use"), and printing
/// the chain as well would repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Logs to stderr (journald adds time and unit): `RUST_LOG` wins, then
/// the config's `log_level`, then `default_level`. The `object_store`
/// crate logs each HTTP retry at `info` (hundreds of lines per minute of
/// an S3 outage with a backlog): it logs at `warn` and above unless the
/// level names it; mirrorcap's own rate-limited lines say what failed.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let f = tracing_subscriber::EnvFilter::new(default_level);
        match default_level.contains("object_store") {
            true => f,
            false => f.add_directive("object_store=warn".parse().expect("a valid directive")),
        }
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (the reader of a pipe gone) must not panic the
        // thread that logs: tracing's own report of the failed write is an
        // eprintln!, which panics on that very error.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // Under systemd, journald stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(p) => Config::load(p)?,
        None => Config::default_config(),
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Flows {
            by,
            filter,
            top,
            format,
            inputs,
        } => {
            use mirrorcap::flows::report::*;
            let filter = parse_filter(filter.as_deref().unwrap_or(""))?;
            let mut talkers = Talkers::new(&by, &filter);
            // As in `replay`: an input that cannot be read to its end is
            // reported, what was read of it counts, and the exit code is 1.
            let mut failed = false;
            for i in &inputs {
                if let Err(e) = read_records(i, &mut talkers) {
                    eprintln!("mirrorcap: {e}");
                    failed = true;
                }
            }
            let groups = talkers.top(top);
            let text = if format == "json" {
                render_json(&by, &groups)
            } else {
                render_table(&by, &groups)
            };
            print!("{text}");
            Ok(if failed {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Stream {
            config,
            socket,
            vni,
            source,
            endpoint,
            out,
            count,
            duration,
        } => {
            let socket = match socket {
                Some(s) => s,
                None => default_socket(config.as_ref())?,
            };
            let opts = mirrorcap::stream::client::StreamOptions {
                socket,
                request: mirrorcap::stream::message::Request {
                    vnis: vni,
                    sources: source,
                    endpoints: endpoint,
                    filter: out.filter.clone(),
                    list: false,
                },
                format: out.format(),
                count,
                duration,
            };
            run_stream(&opts, &out.write)
        }
        Command::Extcap {
            extcap_interfaces,
            extcap_interface,
            extcap_dlts,
            extcap_config,
            capture,
            fifo,
            extcap_capture_filter,
            socket,
            config,
            vni,
            filter,
            ..
        } => {
            use mirrorcap::stream::extcap;
            let socket = match (
                socket.filter(|s| !s.as_os_str().is_empty()),
                config.filter(|c| !c.as_os_str().is_empty()),
            ) {
                (Some(s), _) => s,
                (None, c) => default_socket(c.as_ref())?,
            };
            if extcap_interfaces {
                // No daemon: only the interface for every session.
                let sessions =
                    mirrorcap::stream::client::list_sessions(&socket).unwrap_or_default();
                print!("{}", extcap::interfaces(&sessions));
            } else if extcap_dlts {
                print!("{}", extcap::dlts());
            } else if extcap_config {
                print!("{}", extcap::config(&socket.display().to_string()));
            } else if capture {
                let iface = extcap_interface.context("--capture needs --extcap-interface")?;
                let mut request = extcap::request_for(&iface).with_context(|| {
                    format!("{iface:?} is not a mirrorcap interface: expected {} or mirrorcap-vni<VNI>-<source>", extcap::ALL)
                })?;
                if let Some(v) = vni.filter(|v| !v.trim().is_empty()) {
                    request.vnis = v
                        .split(',')
                        .map(|n| n.trim().parse())
                        .collect::<Result<_, _>>()
                        .with_context(|| format!("--vni {v:?}: expected VNIs, comma-separated"))?;
                }
                let exprs: Vec<String> = [filter, extcap_capture_filter]
                    .into_iter()
                    .flatten()
                    .filter(|f| !f.trim().is_empty())
                    .collect();
                request.filter = match exprs.len() {
                    0 => None,
                    1 => Some(exprs[0].clone()),
                    _ => Some(format!("({}) and ({})", exprs[0], exprs[1])),
                };
                let fifo = fifo.context("--capture needs --fifo")?;
                let opts = mirrorcap::stream::client::StreamOptions {
                    socket,
                    request,
                    format: mirrorcap::capture::encode::OutputFormat::Pcap,
                    count: None,
                    duration: None,
                };
                return run_stream(&opts, fifo.to_str().context("--fifo: not UTF-8")?);
            } else {
                anyhow::bail!(
                    "extcap: nothing asked: expected --extcap-interfaces, --extcap-dlts, --extcap-config or --capture (Wireshark passes them; see README \"Watch live\")"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract {
            config,
            from,
            to,
            vni,
            source,
            endpoint,
            out,
            stats,
            mut inputs,
        } => {
            if let (Some(f), Some(t)) = (from, to)
                && t < f
            {
                anyhow::bail!("--to is before --from: the window [from, to) would be empty");
            }
            let cfg = load(config.as_ref())?;
            if inputs.is_empty() {
                inputs.push(cfg.dir.clone());
            }
            let opts = mirrorcap::app::extract::ExtractOptions {
                selection: mirrorcap::output::store::Selection {
                    vnis: vni,
                    sources: source,
                    endpoints: endpoint,
                    from_ns: from.unwrap_or(0),
                    to_ns: to.unwrap_or(u64::MAX),
                },
                filter: out.filter.clone(),
                format: out.format(),
            };
            run_extract(&cfg, &inputs, &opts, &out.write, stats)
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            listen,
            dir,
        } => {
            let mut cfg = load(config.as_ref())?;
            init_logging(cfg.log_level.as_deref().unwrap_or("info"));
            let overrides = Overrides { listen, dir };
            overrides.apply(&mut cfg);
            let source = ReloadSource {
                path: config,
                overrides,
            };
            run_daemon(cfg, source)
        }
        Command::Replay {
            config,
            dir,
            inputs,
        } => {
            let mut cfg = load(config.as_ref())?;
            init_logging(cfg.log_level.as_deref().unwrap_or("warn"));
            if let Some(d) = dir {
                cfg.dir = d;
            }
            run_replay(cfg, &inputs)
        }
    }
}

/// The control socket `stream` uses without `--socket`: the config's
/// (`"auto"` as the daemon resolves it under systemd, then beside its
/// captures), else the systemd place when it exists, else beside the
/// default captures directory.
fn default_socket(config: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    use mirrorcap::config::ControlSocket;
    let systemd = PathBuf::from("/run/mirrorcap/control.sock");
    let (socket, dir) = match config {
        Some(p) => {
            let cfg = Config::load(p)?;
            let Some(socket) = cfg.stream.socket else {
                anyhow::bail!(
                    "{}: `control_socket` is not set, so the daemon takes no subscribers; set it (e.g. control_socket = \"auto\") and restart the daemon",
                    p.display()
                );
            };
            (socket, cfg.dir)
        }
        None => (ControlSocket::Auto, PathBuf::from("./captures")),
    };
    Ok(match socket {
        ControlSocket::Path(p) => p,
        ControlSocket::Auto if systemd.exists() => systemd,
        ControlSocket::Auto => socket.resolve(&dir),
    })
}

/// `extract`'s `--from`/`--to`.
fn extract_time(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mirrorcap::app::extract::parse_time(s, now)
}

/// `extract`'s `--endpoint`.
fn extract_endpoint(s: &str) -> Result<mirrorcap::wire::geneve::EndpointId, String> {
    s.parse().map_err(|()| {
        format!(
            "{s:?}: expected {}",
            mirrorcap::wire::geneve::ENDPOINT_EXPECTED
        )
    })
}

/// `mirrorcap extract`: exit 0, or 1 when an input could not be listed,
/// opened or read to its end (reported as it happens; the rest is
/// extracted). A reader that goes away (EPIPE) ends it quietly, exit 0.
fn run_extract(
    cfg: &Config,
    inputs: &[PathBuf],
    opts: &mirrorcap::app::extract::ExtractOptions,
    write: &str,
    print_stats: bool,
) -> anyhow::Result<ExitCode> {
    use mirrorcap::output::store::{LocalStore, Store};
    use mirrorcap::output::store_s3::S3Store;
    let stores = inputs
        .iter()
        .map(|d| -> anyhow::Result<Box<dyn Store>> {
            Ok(match d.to_str().filter(|s| s.starts_with("s3://")) {
                Some(url) => Box::new(S3Store::new(url, cfg.s3.as_deref())?),
                None => Box::new(LocalStore::new(d, &cfg.output.template)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let out: Box<dyn std::io::Write> = if write == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(write).with_context(|| format!("cannot create {write}"))?)
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let stats = mirrorcap::app::extract::run(&stores, opts, &mut out, |e| {
        let _ = writeln!(std::io::stderr(), "mirrorcap: {e}");
    })?;
    if print_stats {
        let _ = writeln!(
            std::io::stderr(),
            "mirrorcap extract: {} files considered, {} chosen by time, {} opened, {} bytes read, {} records read, {} written",
            stats.files_considered,
            stats.files_chosen,
            stats.files_opened,
            stats.bytes_read,
            stats.records_read,
            stats.records_written
        );
    }
    Ok(if stats.inputs_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INPUT)
    })
}

/// Set by SIGINT and SIGTERM while `stream` runs.
static STREAM_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn stop_stream(_: libc::c_int) {
    STREAM_STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `mirrorcap stream`: writes until it ends, then says on stderr how many
/// frames it wrote and how many the daemon could not deliver to it.
fn run_stream(
    opts: &mirrorcap::stream::client::StreamOptions,
    write: &str,
) -> anyhow::Result<ExitCode> {
    use mirrorcap::stream::client::{End, stream};
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, stop_stream as *const () as libc::sighandler_t) };
    }
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let file;
    let (mut out, fd): (Box<dyn std::io::Write>, _) = if write == "-" {
        (Box::new(stdout.lock()), stdout.as_fd())
    } else {
        file = std::fs::File::create(write).with_context(|| format!("cannot create {write}"))?;
        (Box::new(&file), file.as_fd())
    };
    let o = match stream(opts, &mut out, Some(fd), &STREAM_STOP) {
        // Which output: `-w` may name a file on a full disk.
        Err(mirrorcap::stream::client::ClientError::Output(e)) => anyhow::bail!(
            "writing the capture stream to {}: {e}",
            if write == "-" {
                "standard output"
            } else {
                write
            }
        ),
        o => o?,
    };
    let why = match o.end {
        End::Count => "count reached",
        End::Duration => "duration reached",
        End::Stopped => "stopped",
        End::ReaderGone => "the reader went away",
        End::DaemonStopped => "the daemon stopped",
        End::ConnectionLost => {
            "the connection ended without the daemon's stop message: it was killed or crashed, or it stopped while this stream was too far behind to be sent the rest (it counts those as not delivered)"
        }
    };
    // Not eprintln!: it panics when stderr is closed (an ssh gone).
    let _ = writeln!(
        std::io::stderr(),
        "mirrorcap stream: {} frames written, {} not delivered by the daemon (its queue for this subscriber was full); {why}",
        o.frames,
        o.not_delivered
    );
    Ok(if o.end == End::ConnectionLost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Installs the SIGTERM, SIGINT and SIGHUP handlers on a thread of their
/// own, which turns them into [`Control`] messages on `tx`.
fn forward_signals(tx: mpsc::UnboundedSender<Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (installed_tx, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return installed_tx.send(Err(anyhow::Error::new(e))),
            };
            let handlers = {
                let _rt = rt.enter();
                (|| {
                    Ok::<_, anyhow::Error>((
                        signal(SignalKind::terminate())
                            .context("installing the SIGTERM handler")?,
                        signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                        signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
                    ))
                })()
            };
            let (mut term, mut int, mut hup) = match handlers {
                Ok(h) => h,
                Err(e) => return installed_tx.send(Err(e)),
            };
            let _ = installed_tx.send(Ok(()));
            rt.block_on(async {
                loop {
                    let message = tokio::select! {
                        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Control::Stop }
                        _ = int.recv() => { tracing::info!("SIGINT: stopping"); Control::Stop }
                        _ = hup.recv() => Control::Reload,
                    };
                    if tx.send(message).is_err() || message == Control::Stop {
                        break;
                    }
                }
            });
            Ok(())
        })
        .context("starting the signal thread")?;
    installed
        .recv()
        .context("the signal thread ended before installing its handlers")??;
    Ok(())
}

/// The daemon, with signals as its control. The handlers go in once the
/// sockets are bound and crash recovery is done, before `listening on` is
/// logged and READY sent: a SIGTERM during a long start ends the process
/// at once (as any program without handlers; recovery is safe to run
/// again), one right after that line stops it cleanly.
fn run_daemon(cfg: Config, source: ReloadSource) -> anyhow::Result<ExitCode> {
    let (tx, control) = mpsc::unbounded_channel();
    let mut not_installed = None;
    let outcome = mirrorcap::app::daemon::run(cfg, source, control, |_| {
        if let Err(e) = forward_signals(tx.clone()) {
            let _ = tx.send(Control::Stop);
            not_installed = Some(e);
        }
    })?;
    // Not eprint!: it panics when stderr is closed.
    let _ = write!(std::io::stderr(), "{}", outcome.summary);
    if let Some(e) = not_installed {
        return Err(e);
    }
    // A dead writer thread (logged when it died) is an output error: exit
    // 2, so that systemd (`Restart=on-failure`) starts a new daemon.
    if let Some(why) = outcome.writer_death {
        anyhow::bail!("stopped because capture files could no longer be written: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_replay(cfg: Config, inputs: &[String]) -> anyhow::Result<ExitCode> {
    let outcome = mirrorcap::app::replay::run(&cfg, inputs, |e| eprintln!("mirrorcap: {e}"))?;
    // Not eprint!: it panics when stderr is closed.
    let _ = write!(std::io::stderr(), "{}", outcome.summary);
    if let Some(why) = outcome.writer_death {
        anyhow::bail!("capture files could no longer be written: {why}");
    }
    if !outcome.lost.is_empty() {
        eprintln!(
            "mirrorcap: {}: frames could not be written ({}); the files under it are complete but miss them",
            cfg.dir.display(),
            outcome.lost.join(", ")
        );
        return Ok(ExitCode::from(EXIT_FRAMES_LOST));
    }
    Ok(if outcome.inputs_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INPUT)
    })
}
