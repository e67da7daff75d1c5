//! The control socket: a Unix stream socket where `mirrorcap stream` and
//! the extcap interface subscribe to live sessions.
//!
//! The socket file is created mode 0660 (and given `control_group` when
//! set), so only root, the daemon's user and that group may connect:
//! captured traffic is sensitive. A stale file from a daemon that died is
//! replaced; a live one (another daemon answers on it) is an error, as is
//! anything that is not a socket.
//!
//! One thread accepts; each connection gets a thread that reads the
//! request ([`Request`], one JSON line, 5 s at most), answers it, and then
//! sends: sessions announced, the queued frames that match the
//! subscriber's libpcap expression, and the drop count when it changed.
//! It ends when the reader goes away (a failed write, or end of file on a
//! read: readers send nothing after their request) or when the daemon
//! stops (after sending what was queued).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use super::hub::{Hub, Selection, Subscriber, Taken};
use super::message::{self, Message, Reply, Request, SessionInfo, put_dropped, put_session};
use crate::filter::bpf::Bpf;
use crate::telemetry::counters::Counters;

/// Mode of the socket file.
pub const SOCKET_MODE: u32 = 0o660;
/// Snap length announced to subscribers: the largest frame the daemon
/// ever writes (libpcap's MAXIMUM_SNAPLEN).
pub const STREAM_SNAPLEN: u32 = 262_144;
/// Longest request line.
const MAX_REQUEST: usize = 8 * 1024;
/// Longest libpcap expression a subscriber may ask for: compiling takes
/// time that grows fast with its length (1,000 ORed hosts took 109 s).
pub const MAX_FILTER: usize = 1024;
/// Connections served at once beyond `max_subscribers` (requests being
/// read, refusals being written); more are closed at once.
const SPARE_CONNECTIONS: usize = 4;
/// How long a stop waits for the subscribers' threads to send what was
/// queued for them; one still busy after that is left to end on its own.
const STOP_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("`control_socket` {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "`control_socket` {0}: another mirrorcap answers on it; stop it or choose another path"
    )]
    InUse(PathBuf),
    #[error("`control_socket` {0}: exists and is not a socket; remove it or choose another path")]
    NotSocket(PathBuf),
    #[error("`control_group` {group:?} on {path}: {source}")]
    Group {
        group: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// The running control socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// The subscribers' threads, joined on stop so that each gets what was
    /// queued for it before the process ends.
    senders: Senders,
    /// The socket file bound (device, inode), removed on stop only if it
    /// is still that file.
    inode: Option<(u64, u64)>,
    hub: Arc<Hub>,
}

type Senders = Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>;

impl ControlServer {
    /// Binds `path` (mode 0660, group `gid` when given) and starts
    /// accepting subscribers onto `hub`.
    pub fn start(
        path: &Path,
        gid: Option<u32>,
        hub: Arc<Hub>,
        counters: Arc<Counters>,
    ) -> Result<ControlServer, ControlError> {
        let listener = bind(path)?;
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(bind_err)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| {
                ControlError::Group {
                    group: gid.to_string(),
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        listener.set_nonblocking(true).map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let senders = Senders::default();
        let (s, h, t) = (stop.clone(), hub.clone(), senders.clone());
        let accept = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, &s, &h, &t, &counters))
            .map_err(bind_err)?;
        let inode = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            accept: Some(accept),
            senders,
            inode,
            hub,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, tells every subscriber the daemon is stopping (each
    /// gets what was queued for it), removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Relaxed);
        self.hub.close();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        // Only the file this server bound: another daemon may have
        // replaced it since.
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == self.inode)
        {
            let _ = std::fs::remove_file(&self.path);
        }
        // Each ends once its queue is sent, or after a write that waited
        // the write timeout for a reader that does not read; a stop waits
        // for them at most STOP_WAIT.
        let senders = std::mem::take(&mut *self.senders.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = std::time::Instant::now() + STOP_WAIT;
        for h in senders {
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let abandoned = self.hub.abandon_queued();
        if abandoned > 0 {
            tracing::warn!(
                frames = abandoned,
                "stopping: subscribers that did not read were not sent these frames (counted as stream_backlog)"
            );
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.shutdown();
        }
    }
}

/// Binds the socket, replacing a stale one.
fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ControlError::NotSocket(path.to_path_buf()));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

fn accept_loop(
    listener: UnixListener,
    stop: &AtomicBool,
    hub: &Arc<Hub>,
    senders: &Senders,
    counters: &Arc<Counters>,
) {
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                {
                    let mut s = senders.lock().unwrap_or_else(|e| e.into_inner());
                    s.retain(|h| !h.is_finished());
                    if s.len() >= hub.max + SPARE_CONNECTIONS {
                        // Closed unanswered: the limit is reached.
                        drop(conn);
                        continue;
                    }
                }
                let (hub, counters) = (hub.clone(), counters.clone());
                let spawned = std::thread::Builder::new()
                    .name("subscriber".into())
                    .spawn(move || serve_subscriber(conn, &hub, &counters));
                match spawned {
                    Ok(h) => {
                        let mut s = senders.lock().unwrap_or_else(|e| e.into_inner());
                        s.retain(|h| !h.is_finished());
                        s.push(h);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: cannot start a subscriber thread")
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(&listener, 100);
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits up to `ms` for `fd` to be readable.
fn wait_readable(fd: &impl AsRawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// One subscriber's connection, from its request to its end.
fn serve_subscriber(conn: UnixStream, hub: &Hub, counters: &Counters) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    // A reply to a reader that does not read must not hold the thread.
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    let mut reader = BufReader::new(&conn).take(MAX_REQUEST as u64);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.ends_with('\n') {
        return;
    }
    let (reply, accepted) = match subscribe(&line, hub) {
        Ok(Subscribed::Stream(sub, filter)) => (
            Reply::Accepted {
                snaplen: STREAM_SNAPLEN,
            },
            Some((sub, filter)),
        ),
        Ok(Subscribed::List) => (
            Reply::Sessions {
                sessions: sessions(counters),
            },
            None,
        ),
        Err(reason) => (Reply::Refused { reason }, None),
    };
    let mut w = &conn;
    let text = serde_json::to_string(&reply).unwrap_or_default() + "\n";
    if w.write_all(text.as_bytes()).is_err() {
        if let Some((sub, _)) = accepted {
            hub.unsubscribe(sub.id);
        }
        return;
    }
    let Some((sub, filter)) = accepted else {
        return;
    };
    tracing::info!(
        subscriber = sub.id,
        request = line.trim(),
        "subscriber connected"
    );
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    send_loop(&conn, &sub, filter.as_ref());
    hub.unsubscribe(sub.id);
    tracing::info!(
        subscriber = sub.id,
        dropped = sub.dropped(),
        "subscriber gone"
    );
}

/// What a request asked for.
enum Subscribed {
    Stream(Arc<Subscriber>, Option<Bpf>),
    List,
}

/// The live sessions for a `list` request.
fn sessions(counters: &Counters) -> Vec<SessionInfo> {
    counters
        .live_sessions()
        .into_iter()
        .map(|(vni, source, endpoint)| SessionInfo {
            vni,
            source,
            endpoint,
        })
        .collect()
}

/// The request read and checked, the subscriber added.
fn subscribe(line: &str, hub: &Hub) -> Result<Subscribed, String> {
    let req: Request =
        serde_json::from_str(line.trim()).map_err(|e| format!("the request is not valid: {e}"))?;
    if req.list {
        return Ok(Subscribed::List);
    }
    let mut selection = Selection {
        vnis: req.vnis.iter().copied().collect(),
        sources: req.sources.iter().copied().collect(),
        ..Default::default()
    };
    for e in &req.endpoints {
        let id = e.parse().map_err(|()| {
            format!(
                "endpoint {e:?} is not a Gateway Load Balancer endpoint ID: expected {}",
                crate::wire::geneve::ENDPOINT_EXPECTED
            )
        })?;
        selection.endpoints.insert(id);
    }
    if req.filter.as_ref().is_some_and(|f| f.len() > MAX_FILTER) {
        return Err(format!(
            "the filter is longer than {MAX_FILTER} bytes; expected a shorter libpcap expression"
        ));
    }
    let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(Bpf::compile(f).map_err(|e| e.to_string())?),
        None => None,
    };
    let sub = hub.subscribe(selection).map_err(|e| e.to_string())?;
    Ok(Subscribed::Stream(sub, filter))
}

/// Sends until the reader goes away or the daemon stops.
fn send_loop(conn: &UnixStream, sub: &Subscriber, filter: Option<&Bpf>) {
    let mut queued = Vec::new();
    let mut out = Vec::new();
    let mut sessions = Vec::new();
    let mut dropped_sent = 0;
    loop {
        let taken = sub.take(&mut queued, Duration::from_millis(200));
        sub.take_sessions(&mut sessions);
        out.clear();
        for s in sessions.drain(..) {
            put_session(&mut out, &s);
        }
        match filter {
            None => out.extend_from_slice(&queued),
            Some(f) => keep_matching(&queued, f, &mut out),
        }
        queued.clear();
        let dropped = sub.dropped();
        if dropped != dropped_sent {
            put_dropped(&mut out, dropped);
            dropped_sent = dropped;
        }
        if !out.is_empty()
            && let Err(written) = write_all(conn, &out, sub)
        {
            // What did not go out is not delivered: counted, not lost.
            sub.count_dropped(unsent_frames(&out, written));
            return;
        }
        if taken == Taken::Closed || reader_gone(conn) {
            return;
        }
    }
}

/// Copies the FRAME messages of `queued` that `filter` matches into `out`.
fn keep_matching(queued: &[u8], filter: &Bpf, out: &mut Vec<u8>) {
    let mut at = 0;
    while let Ok(Some((m, n))) = message::next(&queued[at..]) {
        if let Message::Frame { data, wire_len, .. } = m
            && filter.matches(data, wire_len as usize)
        {
            out.extend_from_slice(&queued[at..at + n]);
        }
        at += n;
    }
}

/// Writes `buf` whole; a reader too slow for the write timeout is waited
/// for, unless the daemon is stopping. On failure, the bytes written.
fn write_all(mut conn: &UnixStream, buf: &[u8], sub: &Subscriber) -> Result<(), usize> {
    let mut done = 0;
    while done < buf.len() {
        match conn.write(&buf[done..]) {
            Ok(0) => return Err(done),
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if sub.is_closed() {
                    return Err(done);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(done),
        }
    }
    Ok(())
}

/// FRAME messages of `out` not wholly among its first `written` bytes.
fn unsent_frames(out: &[u8], written: usize) -> u64 {
    let mut at = 0;
    while let Ok(Some((_, n))) = message::next(&out[at..]) {
        if at + n > written {
            break;
        }
        at += n;
    }
    super::hub::count_frames(&out[at..])
}

/// Whether the reader closed its end, or broke the protocol by sending
/// after its request (readers send nothing then; what one sends is read
/// and the connection ended, so unread bytes cannot hide the end of file).
fn reader_gone(conn: &UnixStream) -> bool {
    let mut b = [0u8; 64];
    // SAFETY: a 64-byte buffer for the call.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            b.as_mut_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT,
        )
    };
    n >= 0
        || !matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        )
}
