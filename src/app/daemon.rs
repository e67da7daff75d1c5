//! The capture daemon as a call: [`run`] binds the sockets, starts one
//! receive thread per worker, serves metrics and health, and follows
//! [`Control`] messages (stop, reload) until told to stop or until the
//! writer thread dies; it returns the exit [`Summary`].
//!
//! `main.rs` turns SIGTERM/SIGINT/SIGHUP into those messages; a test can
//! send them itself and run the daemon in process. A reload reads the
//! config file again ([`ReloadSource`]); an invalid file is logged and
//! counted (`mirrorcap_errors_total{kind="reload"}`) and the running
//! config kept; settings that need a restart
//! ([`Config::keep_restart_settings`]) keep their running values. The new
//! config reaches every worker as one `Arc<Config>`, swapped between
//! batches.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::filter::RuleCount;
use crate::ingest::live::{Control as WorkerControl, Encap, check_fd_limit, serve};
use crate::ingest::socket::{Receiver, SocketError};
use crate::output::files::{OutputDirError, check_output_dir};
use crate::output::handle::Backlog;
use crate::pipeline::Pipeline;
use crate::telemetry::counters::{Counters, HostBacklog, RuleCounts};
use crate::telemetry::events::ReloadFailed;
use crate::telemetry::health::{HealthError, bind_metrics, serve_metrics, serve_tcp_health};
use crate::telemetry::notify::Notifier;
use crate::telemetry::summary::{SessionSummary, Summary};

/// What the daemon is told while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop: drain the sockets, close and rename every file, summarise.
    Stop,
    /// Read the config file again (SIGHUP).
    Reload,
}

/// Command-line values that win over the config file, also on reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = &self.dir {
            cfg.dir = d.clone();
        }
    }
}

/// Where a reload reads the config: the file given at start (none when
/// running on the embedded default) and the command line's overrides.
#[derive(Clone, Debug, Default)]
pub struct ReloadSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Why the daemon could not start, or (`Worker`) why a receive thread
/// ended in error when told to stop. It stops for no other reason than
/// [`Control::Stop`] or a dead writer (see [`DaemonOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    OutputDir(#[from] OutputDirError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Upload(#[from] crate::output::upload::UploadError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Control(#[from] crate::stream::server::ControlError),
    #[error("reading the address bound for `{key}` {addr}: {source}")]
    LocalAddr {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("`geneve_listen`: {0}")]
    GeneveOverlap(String),
    #[error("steering sessions over {workers} sockets on {addr} (`workers`): {source}")]
    Steer {
        workers: usize,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("a receive thread {0}")]
    Worker(String),
}

/// How a daemon that started ended.
pub struct DaemonOutcome {
    pub summary: Summary,
    /// Set when it stopped because the writer thread died (capture files
    /// could no longer be written): an output error, exit 2, so that
    /// systemd (`Restart=on-failure`) starts a new daemon.
    pub writer_death: Option<String>,
}

/// The addresses the socket groups bound (port 0 in the config picks a
/// free one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// `listen`: VXLAN.
    pub vxlan: SocketAddr,
    /// `geneve_listen`: GENEVE, when on.
    pub geneve: Option<SocketAddr>,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.vxlan)?;
        if let Some(g) = self.geneve {
            write!(f, ", GENEVE on {g}")?;
        }
        Ok(())
    }
}

/// The receive threads and what they share.
struct Workers {
    bound: Bound,
    /// Receive threads per socket group.
    count: usize,
    handles: Vec<JoinHandle<std::io::Result<Pipeline>>>,
    stop: Arc<AtomicBool>,
    reload: watch::Sender<Option<Arc<Config>>>,
    /// `[output.s3]`: finished after the workers, so the files they
    /// close at stop are uploaded (within `stop_wait`).
    uploader: Option<crate::output::upload::Uploader>,
}

/// Runs the daemon on `cfg` until `control` says [`Control::Stop`] (or is
/// closed) or the writer thread dies. `on_ready` gets the bound addresses
/// (port 0 in `listen` or `geneve_listen` picks one) once every socket is
/// bound and the workers run, before `listening on` is logged.
pub fn run(
    cfg: Config,
    reload: ReloadSource,
    mut control: mpsc::UnboundedReceiver<Control>,
    on_ready: impl FnOnce(Bound),
) -> Result<DaemonOutcome, DaemonError> {
    // Held until the end: no other mirrorcap writes in this directory.
    let _dir_lock = check_output_dir(&cfg.dir)?;
    check_fd_limit(cfg.max_open_files);
    let counters = Arc::new(Counters::default());
    let mut cfg = cfg;
    locate_flows(&mut cfg, &counters);
    set_filters(&counters, &cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Start {
            what: "starting the runtime",
            source,
        })?;
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(rt.block_on(bind_metrics(a))?),
        None => None,
    };
    let hub = cfg.stream.socket.as_ref().map(|_| {
        crate::stream::Hub::new(
            cfg.stream.max_subscribers,
            cfg.stream.queue,
            counters.clone(),
        )
    });
    let workers = start_workers(&cfg, &counters, hub.clone())?;
    let subscribers = match (&cfg.stream.socket, hub) {
        (Some(socket), Some(hub)) => {
            let path = socket.resolve(&cfg.dir);
            let server = crate::stream::server::ControlServer::start(
                &path,
                cfg.stream.group.as_ref().map(|g| g.1),
                hub,
                counters.clone(),
            );
            match server {
                Ok(s) => Some(s),
                Err(e) => {
                    workers.stop.store(true, Relaxed);
                    let _ = finish_workers(workers.handles);
                    return Err(e.into());
                }
            }
        }
        _ => None,
    };
    on_ready(workers.bound);
    if let Some(c) = &subscribers {
        tracing::info!(
            "live subscribers on {} (`mirrorcap stream`)",
            c.path().display()
        );
    }
    tracing::info!(
        "listening on {}, writing under {}, {} worker(s)",
        workers.bound,
        cfg.dir.display(),
        workers.count
    );
    let mut notifier = Notifier::from_env();
    notifier.ready(&format!("listening on {}", workers.bound));
    let host_backlog = HostBacklog::start();
    rt.block_on(async {
        if let Some(l) = metrics_listener {
            tracing::info!(
                "metrics on http://{}/metrics and /healthz",
                l.local_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string())
            );
            tokio::spawn(serve_metrics(l, counters.clone()));
        }
        if let Some(a) = cfg.health_tcp_listen {
            tokio::spawn(serve_tcp_health(a, counters.clone()));
        }
        let follow = follow_control(&mut control, &reload, &cfg, &counters, &workers.reload);
        tokio::select! {
            _ = follow => {}
            _ = status(&counters, &host_backlog, &mut notifier) => {}
        }
    });
    workers.stop.store(true, Relaxed);
    Notifier::from_env().stopping();
    let uploader = workers.uploader;
    let finished = finish_workers(workers.handles);
    if let Some(u) = uploader {
        u.finish();
    }
    let (sessions, rules) = finished?;
    // After the workers' last batch: subscribers get what was queued.
    drop(subscribers);
    host_backlog.update(&counters);
    let summary = Summary::from_counters(&counters, sessions, rules);
    Ok(DaemonOutcome {
        summary,
        writer_death: counters.writer_death().map(str::to_owned),
    })
}

/// The flow layout's account and region that `[flows]` does not give:
/// from this instance's identity document (instance metadata, IMDSv2),
/// asked only when `[output.s3]` is set (the uploader asks instance
/// metadata anyway; without S3, mirrorcap never talks to it). What is
/// still missing stays [`crate::flows::layout::UNKNOWN`] (counted in
/// `mirrorcap_flow_layout_fallbacks_total` and logged), and the flow
/// writer says so at start. Replay never asks.
fn locate_flows(cfg: &mut Config, counters: &Counters) {
    let layout = &cfg.flows.layout;
    if !cfg.flows.enabled || (layout.account_id.is_some() && layout.region.is_some()) {
        return;
    }
    let Some(s3) = &cfg.s3 else { return };
    let metadata = crate::output::upload::imds::metadata_endpoint(s3.metadata_endpoint.as_deref());
    let mut why = Vec::new();
    match crate::output::upload::imds::account_and_region(&metadata) {
        Ok((account, region)) => {
            let layout = &mut Arc::make_mut(&mut cfg.flows).layout;
            // Each value on its own: a bad one does not drop the other.
            for (name, slot, v) in [
                ("accountId", &mut layout.account_id, account),
                ("region", &mut layout.region, region),
            ] {
                if slot.is_some() {
                    continue;
                }
                match crate::flows::layout::check_path_value(&v) {
                    Ok(()) => *slot = Some(v),
                    Err(m) => why.push(format!("the identity document's {name} {m}")),
                }
            }
        }
        Err(e) => why.push(e),
    }
    if !why.is_empty() {
        counters.flow_layout_fallbacks.fetch_add(1, Relaxed);
        tracing::warn!(
            "[flows]: no account or region from instance metadata ({}); set `account_id` and `region` in [flows]",
            why.join("; ")
        );
    }
}

/// Binds one socket per worker for `listen`, and as many for
/// `geneve_listen` when set (each group: the first socket fixes the port,
/// the others join its SO_REUSEPORT group, sessions steered by a BPF
/// program) and starts a receive thread on each with its own pipeline.
fn start_workers(
    cfg: &Config,
    counters: &Arc<Counters>,
    hub: Option<Arc<crate::stream::Hub>>,
) -> Result<Workers, DaemonError> {
    let count = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (vxlan, mut receivers) = bind_group(cfg, "listen", cfg.listen, count, false)?;
    let mut encaps = vec![Encap::Vxlan; count];
    let mut geneve = None;
    if let Some(want) = cfg.geneve_listen {
        // `--listen` may have moved `listen` onto it since the file was read.
        if crate::config::listens_overlap(cfg.listen, want) {
            return Err(DaemonError::GeneveOverlap(
                crate::config::same_port_as_listen(want, cfg.listen),
            ));
        }
        let (addr, more) = bind_group(cfg, "geneve_listen", want, count, true)?;
        geneve = Some(addr);
        receivers.extend(more);
        encaps.resize(2 * count, Encap::geneve(cfg));
    }
    let mut first = Pipeline::new(cfg, counters.clone(), Backlog::Drop);
    // After `Pipeline::new`: crash recovery has given the files of the
    // last run their final names, so the journal's entries find them.
    let uploader = match &cfg.s3 {
        Some(s3) => {
            let u = crate::output::upload::Uploader::start(
                s3,
                cfg.host_id.as_deref(),
                &cfg.dir,
                counters.clone(),
            )?;
            first.set_uploads(u.shared());
            Some(u)
        }
        None => None,
    };
    if let Some(hub) = hub {
        first = first.with_subscribers(hub);
    }
    // Each socket group shares `max_open_files` among its own workers.
    let mut pipelines: Vec<Pipeline> = (1..count).map(|_| first.sibling()).collect();
    if geneve.is_some() {
        let gfirst = first.sibling_group();
        pipelines.extend((1..count).map(|_| gfirst.sibling()));
        pipelines.insert(count - 1, gfirst);
    }
    pipelines.insert(0, first);
    let stop = Arc::new(AtomicBool::new(false));
    let (reload, reload_rx) = watch::channel::<Option<Arc<Config>>>(None);
    let control = WorkerControl {
        stop: stop.clone(),
        reload: reload_rx,
        batch_wait: cfg.batch_wait,
    };
    let mut handles = Vec::new();
    let parts = receivers.into_iter().zip(pipelines).zip(encaps);
    for (i, ((rx, p), encap)) in parts.enumerate() {
        let control = control.clone();
        // rx0.. receive VXLAN, gx0.. GENEVE.
        let name = match encap {
            Encap::Vxlan => format!("rx{i}"),
            Encap::Geneve { .. } => format!("gx{}", i - count),
        };
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(rx, p, encap, control))
            .map_err(|source| {
                // The threads already started are told to stop.
                stop.store(true, Relaxed);
                DaemonError::Start {
                    what: "starting a receive thread",
                    source,
                }
            })?;
        handles.push(h);
    }
    Ok(Workers {
        bound: Bound { vxlan, geneve },
        count,
        handles,
        stop,
        reload,
        uploader,
    })
}

/// One socket group: `count` sockets on `want` (`key` names the setting
/// in errors), steered by session when more than one.
fn bind_group(
    cfg: &Config,
    key: &'static str,
    want: SocketAddr,
    count: usize,
    geneve: bool,
) -> Result<(SocketAddr, Vec<Receiver>), DaemonError> {
    if count > 1 && want.port() != 0 {
        // SO_REUSEPORT lets a second daemon of the same user join this
        // group silently (and get part of the traffic, or none); a plain
        // bind first fails with "Address already in use" if anyone holds
        // the port.
        std::net::UdpSocket::bind(want)
            .map_err(|source| SocketError::Bind { addr: want, source })?;
    }
    let first = Receiver::bind(want, cfg.recv_buffer, cfg.batch, count > 1)?;
    let addr = first
        .local_addr()
        .map_err(|source| DaemonError::LocalAddr {
            key,
            addr: want,
            source,
        })?;
    let mut receivers = vec![first];
    for _ in 1..count {
        receivers.push(Receiver::bind(addr, cfg.recv_buffer, cfg.batch, true)?);
    }
    if count > 1 {
        receivers[0]
            .steer_sessions(count as u32, geneve)
            .map_err(|source| DaemonError::Steer {
                workers: count,
                addr,
                source,
            })?;
    }
    Ok((addr, receivers))
}

/// Follows the control messages until a stop (or the sender is gone).
async fn follow_control(
    control: &mut mpsc::UnboundedReceiver<Control>,
    source: &ReloadSource,
    cfg: &Config,
    counters: &Counters,
    workers: &watch::Sender<Option<Arc<Config>>>,
) {
    let mut running = Arc::new(cfg.clone());
    while let Some(Control::Reload) = control.recv().await {
        // Settings that need a restart come back with their running values.
        if let Some(new) = reload(source, &running, counters) {
            set_filters(counters, &new);
            running = Arc::new(new);
            let _ = workers.send(Some(running.clone()));
        }
    }
}

/// Once a second: the systemd status line, and a look at the writer
/// thread; returns when the writer died (that ends the daemon).
async fn status(counters: &Counters, host_backlog: &HostBacklog, notifier: &mut Notifier) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let c = counters;
        if c.writer_death().is_some() {
            return;
        }
        host_backlog.update(c);
        let n = c.datagrams_received.load(Relaxed);
        let pps = (n - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), n);
        notifier.tick(&format!(
            "{pps:.0} datagrams/s, {} sessions, {} frames written, {} dropped",
            c.sessions.load(Relaxed),
            c.frames_written.load(Relaxed),
            c.total_drops() + c.kernel_drops.load(Relaxed),
        ));
    }
}

/// Joins the receive threads and finishes their pipelines: the sessions'
/// figures (sorted by VNI, source) and the per-rule counts.
fn finish_workers(
    handles: Vec<JoinHandle<std::io::Result<Pipeline>>>,
) -> Result<(Vec<SessionSummary>, Vec<RuleCount>), DaemonError> {
    let mut finished = Vec::new();
    for h in handles {
        let p = h
            .join()
            .map_err(|_| DaemonError::Worker("panicked".into()))?
            .map_err(|e| DaemonError::Worker(format!("failed: {e}")))?;
        finished.push(p);
    }
    let rules = finished
        .first()
        .map(|p| p.rule_counts())
        .unwrap_or_default();
    let mut sessions = Vec::new();
    for p in finished {
        sessions.extend(p.finish_sessions());
    }
    sessions.sort_by_key(|s| (s.vni, s.source));
    Ok((sessions, rules))
}

/// A reload: the config file read again, the overrides applied, settings
/// that need a restart put back. `None` (logged and counted) when there is
/// no file or it is invalid: the running config stays.
fn reload(source: &ReloadSource, running: &Config, counters: &Counters) -> Option<Config> {
    let Some(path) = &source.path else {
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
    source.overrides.apply(&mut cfg);
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

/// Publishes the filters in force for the per-rule metrics.
fn set_filters(counters: &Counters, cfg: &Config) {
    let mut f = counters.filters.lock().unwrap_or_else(|e| e.into_inner());
    f.clear();
    let filters = cfg
        .filter
        .iter()
        .chain(cfg.sessions.iter().filter_map(|s| s.filter.as_ref()));
    f.extend(filters.map(|m| m.clone() as Arc<dyn RuleCounts>));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A loopback metadata stand-in that answers every request with
    /// `body` (a token for the `PUT`, the document for the `GET`).
    fn metadata_answering(body: &'static str) -> String {
        crate::output::upload::imds::tests::stand_in(move |mut c, _| {
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        })
    }

    fn config(endpoint: &str, flows: &str) -> Config {
        Config::parse(
            &format!(
                "[flows]\nenabled = true\n{flows}[output.s3]\nbucket = \"b12\"\nmetadata_endpoint = \"{endpoint}\"\n"
            ),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    /// Review of issue 18: the layout's account and region from the
    /// identity document, each value on its own (a bad account does not
    /// drop a good region), a fallback counted; a value given in `[flows]`
    /// wins, and metadata is not asked when both are given.
    #[test]
    fn flow_layout_from_instance_metadata_each_value_on_its_own() {
        let counters = Counters::default();
        let fallbacks = || counters.flow_layout_fallbacks.load(Relaxed);
        let good = metadata_answering(r#"{"accountId":"210987654321","region":"eu-west-3"}"#);
        let mut cfg = config(&good, "region = \"us-east-1\"\n");
        locate_flows(&mut cfg, &counters);
        let l = &cfg.flows.layout;
        assert_eq!(l.account_id.as_deref(), Some("210987654321"));
        assert_eq!(l.region.as_deref(), Some("us-east-1"));
        assert_eq!(fallbacks(), 0);

        let bad = metadata_answering(r#"{"accountId":"../etc","region":"eu-west-3"}"#);
        let mut cfg = config(&bad, "");
        locate_flows(&mut cfg, &counters);
        let l = &cfg.flows.layout;
        assert_eq!(
            (l.account_id.as_deref(), l.region.as_deref()),
            (None, Some("eu-west-3"))
        );
        assert_eq!(fallbacks(), 1);

        // Nothing listens there: asked (and failed) only when needed.
        let closed = format!(
            "http://{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        );
        let mut cfg = config(&closed, "account_id = \"1\"\nregion = \"r\"\n");
        locate_flows(&mut cfg, &counters);
        assert_eq!(fallbacks(), 1);
        let mut cfg = config(&closed, "");
        locate_flows(&mut cfg, &counters);
        assert_eq!(fallbacks(), 2);
        assert_eq!(cfg.flows.layout, crate::flows::FlowLayout::default());
    }
}
