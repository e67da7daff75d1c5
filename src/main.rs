//! The `mirrorcap` binary: parses the command line, loads the config, picks
//! a feed (socket or capture files) and maps errors to exit codes.
//!
//! Exit codes: 0 success; 1 an input could not be read to its end (every
//! file written is still complete); 2 a usage, config, bind or output error
//! (an output directory that cannot be created or written is found at
//! start); 3 `replay` could not write some frames (`disk_full`,
//! `write_error`; wins over 1).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mirrorcap::capture::CaptureReader;
use mirrorcap::config::Config;
use mirrorcap::ingest::socket::Receiver;
use mirrorcap::output::handle::Backlog;
use mirrorcap::pipeline::Pipeline;
use mirrorcap::telemetry::events::ReloadFailed;
use mirrorcap::telemetry::metrics::{Counters, DropReason, RuleCounts};

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
    /// Check a config file: exit 0, or print the error (file, line, key, what is accepted) and exit 2.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
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
/// the config's `log_level`, then `default_level`.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            let mut records = Vec::new();
            // As in `replay`: an input that cannot be read to its end is
            // reported, what was read of it counts, and the exit code is 1.
            let mut failed = false;
            for i in &inputs {
                if let Err(e) = read_records(i, &mut records) {
                    eprintln!("mirrorcap: {e}");
                    failed = true;
                }
            }
            let groups = top_talkers(&records, &by, &filter, top);
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
            run_daemon(cfg, config, overrides)
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

/// Command-line values that win over the config file, also on reload.
#[derive(Clone)]
struct Overrides {
    listen: Option<SocketAddr>,
    dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = &self.dir {
            cfg.dir = d.clone();
        }
    }
}

/// SIGHUP: reads the config file again. An invalid file is logged and the
/// running config kept; settings that need a restart
/// ([`Config::keep_restart_settings`]) keep their running values and are
/// reported.
fn reload(
    path: Option<&PathBuf>,
    overrides: &Overrides,
    running: &Config,
    counters: &Counters,
) -> Option<Config> {
    let Some(path) = path else {
        ReloadFailed::NoFile.emit(counters);
        return None;
    };
    let mut cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            ReloadFailed::Invalid(&e).emit(counters);
            return None;
        }
    };
    overrides.apply(&mut cfg);
    let restart = running.keep_restart_settings(&mut cfg);
    if !restart.is_empty() {
        tracing::warn!(
            "SIGHUP: {} changed in {}; that takes a restart, the running value stays",
            restart.join(", "),
            path.display()
        );
    }
    tracing::info!("SIGHUP: reloaded {}", path.display());
    Some(cfg)
}

fn run_daemon(
    cfg: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<ExitCode> {
    mirrorcap::output::files::check_output_dir(&cfg.dir)?;
    mirrorcap::ingest::live::check_fd_limit(cfg.max_open_files);
    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The first socket fixes the port (port 0 in tests); the others join
    // its SO_REUSEPORT group.
    let first = Receiver::bind(cfg.listen, cfg.recv_buffer, cfg.batch, workers > 1)?;
    let addr = first.local_addr().context("reading the bound address")?;
    let mut receivers = vec![first];
    for _ in 1..workers {
        receivers.push(Receiver::bind(addr, cfg.recv_buffer, cfg.batch, true)?);
    }
    if workers > 1 {
        receivers[0]
            .steer_sessions(workers as u32)
            .with_context(|| format!("steering sessions over {workers} sockets on {addr}"))?;
    }
    let counters = Arc::new(Counters::default());
    set_filters(&counters, &cfg);
    let first = Pipeline::new(&cfg, counters.clone(), Backlog::Drop);
    let mut pipelines: Vec<Pipeline> = (1..workers).map(|_| first.sibling()).collect();
    pipelines.insert(0, first);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (reload_tx, reload_rx) = tokio::sync::watch::channel::<Option<Arc<Config>>>(None);
    let control = mirrorcap::ingest::live::Control {
        stop: stop.clone(),
        reload: reload_rx,
        batch_wait: cfg.batch_wait,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Signal handlers go in before `listening on` is logged, so a SIGTERM
    // right after that line stops the daemon cleanly.
    let (mut term, mut int, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        )
    };
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(rt.block_on(mirrorcap::telemetry::health::bind_metrics(a))?),
        None => None,
    };
    // One receive thread per worker; the main thread handles signals, the
    // systemd status, metrics and health.
    let mut handles = Vec::new();
    for (i, (rx, p)) in receivers.into_iter().zip(pipelines).enumerate() {
        let control = control.clone();
        let h = std::thread::Builder::new()
            .name(format!("rx{i}"))
            .spawn(move || mirrorcap::ingest::live::serve(rx, p, control))
            .context("starting a receive thread")?;
        handles.push(h);
    }
    tracing::info!(
        "listening on {addr}, writing under {}, {workers} worker(s)",
        cfg.dir.display()
    );
    let mut notifier = mirrorcap::telemetry::notify::Notifier::from_env();
    notifier.ready(&format!("listening on {addr}"));
    let status_counters = counters.clone();
    let host_backlog = mirrorcap::telemetry::metrics::HostBacklog::start();
    rt.block_on(async {
        // Once a second: the systemd status, and a look at the writer
        // thread; a dead writer ends the daemon (see below).
        let status = async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut last = (std::time::Instant::now(), 0u64);
            loop {
                tick.tick().await;
                let c = &status_counters;
                if c.writer_death().is_some() {
                    return;
                }
                host_backlog.update(c);
                let n = c
                    .datagrams_received
                    .load(std::sync::atomic::Ordering::Relaxed);
                let pps = (n - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
                last = (std::time::Instant::now(), n);
                notifier.tick(&format!(
                    "{pps:.0} datagrams/s, {} sessions, {} frames written, {} dropped",
                    c.sessions.load(std::sync::atomic::Ordering::Relaxed),
                    c.frames_written.load(std::sync::atomic::Ordering::Relaxed),
                    c.total_drops() + c.kernel_drops.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
        };
        if let Some(l) = metrics_listener {
            tracing::info!(
                "metrics on http://{}/metrics and /healthz",
                l.local_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string())
            );
            tokio::spawn(mirrorcap::telemetry::health::serve_metrics(
                l,
                counters.clone(),
            ));
        }
        if let Some(a) = cfg.health_tcp_listen {
            tokio::spawn(mirrorcap::telemetry::health::serve_tcp_health(
                a,
                counters.clone(),
            ));
        }
        let signals = async {
            let mut running = cfg.clone();
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
                    _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
                    _ = hup.recv() => {
                        // Settings that need a restart come back with their running values.
                        if let Some(new) = reload(config_path.as_ref(), &overrides, &running, &counters) {
                            set_filters(&counters, &new);
                            let _ = reload_tx.send(Some(Arc::new(new.clone())));
                            running = new;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = signals => {}
            _ = status => {}
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    mirrorcap::telemetry::notify::Notifier::from_env().stopping();
    let mut finished = Vec::new();
    for h in handles {
        finished.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("a receive thread panicked"))??,
        );
    }
    let rules = finished[0].rule_counts();
    let mut sessions = Vec::new();
    for p in finished {
        sessions.extend(p.finish_sessions());
    }
    sessions.sort_by_key(|s| (s.vni, s.source));
    host_backlog.update(&counters);
    let summary = mirrorcap::telemetry::metrics::Summary::from_counters(&counters, sessions, rules);
    eprint!("{summary}");
    // A dead writer thread (logged when it died) is an output error: exit
    // 2, so that systemd (`Restart=on-failure`) starts a new daemon.
    if let Some(why) = counters.writer_death() {
        anyhow::bail!("stopped because capture files could no longer be written: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes the filters in force for the per-rule metrics.
fn set_filters(counters: &Counters, cfg: &Config) {
    let mut f = counters.filters.lock().unwrap_or_else(|e| e.into_inner());
    f.clear();
    let filters = cfg
        .filter
        .iter()
        .chain(cfg.sessions.iter().filter_map(|s| s.filter.as_ref()));
    f.extend(filters.map(|m| m.clone() as std::sync::Arc<dyn RuleCounts>));
}

fn run_replay(cfg: Config, inputs: &[String]) -> anyhow::Result<ExitCode> {
    mirrorcap::output::files::check_output_dir(&cfg.dir)?;
    mirrorcap::ingest::live::check_fd_limit(cfg.max_open_files);
    let counters = Arc::new(Counters::default());
    let mut pipeline = Pipeline::new(&cfg, counters.clone(), Backlog::Wait);
    let ports: BTreeSet<u16> = cfg.vxlan_ports.iter().copied().collect();
    let mut failed = false;
    for input in inputs {
        // A file is mapped into memory (records are read in place); stdin
        // is read in 1 MiB blocks.
        let result = if input == "-" {
            CaptureReader::new(std::io::stdin().lock(), "<stdin>")
                .and_then(|mut r| mirrorcap::ingest::replay::replay(&mut r, &mut pipeline, &ports))
        } else {
            match std::fs::File::open(input) {
                Ok(f) => CaptureReader::open_file(f, input).and_then(|mut r| {
                    mirrorcap::ingest::replay::replay(&mut r, &mut pipeline, &ports)
                }),
                Err(e) => {
                    eprintln!("mirrorcap: {input}: cannot open: {e}");
                    failed = true;
                    continue;
                }
            }
        };
        if let Err(e) = result {
            eprintln!("mirrorcap: {e}");
            failed = true;
        }
    }
    let summary = pipeline.finish();
    eprint!("{summary}");
    if let Some(why) = counters.writer_death() {
        anyhow::bail!("capture files could no longer be written: {why}");
    }
    // Frames that reached the writer and could not be written: the output
    // is incomplete, whatever the inputs were.
    let lost: Vec<String> = summary
        .drops
        .iter()
        .filter(|(r, _)| {
            matches!(
                r,
                DropReason::DiskFull
                    | DropReason::WriteError
                    | DropReason::OutputSymlink
                    | DropReason::OpenFileLimit
                    | DropReason::SessionLimit
            )
        })
        .map(|(r, n)| format!("{n} {r}"))
        .chain(
            (summary.flow_records_lost > 0)
                .then(|| format!("{} flow records", summary.flow_records_lost)),
        )
        .collect();
    if !lost.is_empty() {
        eprintln!(
            "mirrorcap: {}: frames could not be written ({}); the files under it are complete but miss them",
            cfg.dir.display(),
            lost.join(", ")
        );
        return Ok(ExitCode::from(EXIT_FRAMES_LOST));
    }
    Ok(if failed {
        ExitCode::from(EXIT_INPUT)
    } else {
        ExitCode::SUCCESS
    })
}
