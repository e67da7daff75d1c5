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
//! request ([`Request`], one JSON line, 2 s at most), answers it, and then
//! sends: sessions announced, the queued frames that match the
//! subscriber's libpcap expression, and the drop count when it changed.
//! It ends when the reader goes away (a failed write, or end of file on a
//! read: readers send nothing after their request) or when the daemon
//! stops (after sending what was queued).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::hub::{Hub, Selection, Subscriber, Taken};
use super::message::{
    self, Message, Reply, Request, SessionInfo, put_dropped, put_end, put_session,
};
use crate::filter::bpf::Bpf;
use crate::telemetry::counters::{Counters, StreamRefusal};
use crate::telemetry::log_limit::LogLimiter;

/// Mode of the socket file.
pub const SOCKET_MODE: u32 = 0o660;
/// Snap length announced to subscribers: the largest frame the daemon
/// ever writes (libpcap's MAXIMUM_SNAPLEN).
pub const STREAM_SNAPLEN: u32 = 262_144;
/// Longest request line.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a new connection has to send its request line.
const REQUEST_WAIT: Duration = Duration::from_secs(2);
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
        let listener = bind(path, gid)?;
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let senders = Senders::default();
        let (s, h, t) = (stop.clone(), hub.clone(), senders.clone());
        let gate = Arc::new(Gate {
            counters,
            log: std::sync::Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        });
        let accept = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, &s, &h, &t, &gate))
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

/// Binds the socket at `path` with its mode and group already set, so no
/// one can connect while it is still open to all: bound in a private
/// directory made beside it (mode 0700: no one else can swap the socket
/// for a symlink there before it is given mode 0660 and `gid`), then moved
/// into place without replacing anything, so of two daemons starting at
/// once the second fails (`InUse`) instead of taking the first's path. A
/// stale socket (nothing answers on it) is removed first. A path too long
/// for the private directory's name is bound in place and set at once.
fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, ControlError> {
    let stale = match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ControlError::NotSocket(path.to_path_buf()));
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        Ok(_) => true,
        Err(_) => false,
    };
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let set_mode = |at: &Path| -> Result<(), ControlError> {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(bind_err)?;
        if let Some(gid) = gid {
            std::os::unix::fs::lchown(at, None, Some(gid)).map_err(|source| {
                ControlError::Group {
                    group: gid.to_string(),
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(())
    };
    let private = path.with_file_name(format!(".{:x}.control", std::process::id()));
    // Left by an earlier process with this pid (never follows a symlink).
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(bind_err)?;
    let temp = private.join("s");
    let listener = match UnixListener::bind(&temp) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir(&private);
            if e.kind() != io::ErrorKind::InvalidInput {
                return Err(bind_err(e));
            }
            if stale {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path).map_err(bind_err)?;
            set_mode(path).inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })?;
            return Ok(l);
        }
    };
    let placed = set_mode(&temp).and_then(|()| {
        if stale {
            let _ = std::fs::remove_file(path);
        }
        rename_no_replace(&temp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ControlError::InUse(path.to_path_buf())
            } else {
                bind_err(e)
            }
        })
    });
    let _ = std::fs::remove_file(&temp);
    let _ = std::fs::remove_dir(&private);
    placed?;
    Ok(listener)
}

/// `rename(from, to)` that fails with `AlreadyExists` when `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths valid for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Counts and logs (at most once per 10 s) the connections turned away.
struct Gate {
    counters: Arc<Counters>,
    log: std::sync::Mutex<LogLimiter>,
}

impl Gate {
    fn refuse(&self, why: StreamRefusal, detail: &str) {
        self.counters.stream_refused[why as usize].fetch_add(1, Relaxed);
        let allowed = self.log.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if let Some(held_back) = allowed {
            tracing::warn!(
                reason = why.name(),
                held_back,
                "control socket: refused a connection: {detail}"
            );
        }
    }
}

fn accept_loop(
    listener: UnixListener,
    stop: &AtomicBool,
    hub: &Arc<Hub>,
    senders: &Senders,
    gate: &Arc<Gate>,
) {
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                {
                    let mut s = senders.lock().unwrap_or_else(|e| e.into_inner());
                    s.retain(|h| !h.is_finished());
                    if s.len() >= hub.max + SPARE_CONNECTIONS {
                        let why = format!(
                            "{} connections are being served (max_subscribers {} + {SPARE_CONNECTIONS})",
                            s.len(),
                            hub.max
                        );
                        // A fresh socket's buffer takes the line; never wait.
                        let _ = conn.set_nonblocking(true);
                        let _ = reply(
                            &conn,
                            &Reply::Refused {
                                reason: format!("{why}; try again in a few seconds"),
                            },
                        );
                        gate.refuse(StreamRefusal::Connections, &why);
                        continue;
                    }
                }
                let (hub, gate) = (hub.clone(), gate.clone());
                let spawned = std::thread::Builder::new()
                    .name("subscriber".into())
                    .spawn(move || serve_subscriber(conn, &hub, &gate));
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
fn serve_subscriber(conn: UnixStream, hub: &Hub, gate: &Gate) {
    // Capture first: this thread (filtering and writing for one reader)
    // runs only on CPU time nothing else wants (SCHED_IDLE); a reader it
    // cannot keep up with loses its own frames, counted. At the normal
    // policy, 32 subscribers with a filter that matched nothing, at 200k
    // datagrams a second on two cores, cost capture 33 to 46% of them
    // (kernel_overflow); idle, 12 to 15% (nice 19: 21 to 24%).
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
    let _ = conn.set_nonblocking(false);
    // A reply to a reader that does not read must not hold the thread.
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    let answer = match read_request(&conn) {
        Ok(line) => subscribe(&line, hub),
        // It left without asking: nothing refused.
        Err(RequestProblem::Gone) => return,
        Err(p) => Err((StreamRefusal::Request, p.to_string())),
    };
    let (reply_msg, accepted) = match answer {
        Ok(Subscribed::Stream(sub, filter, request)) => (
            Reply::Accepted {
                snaplen: STREAM_SNAPLEN,
            },
            Some((sub, filter, request)),
        ),
        Ok(Subscribed::List) => (
            Reply::Sessions {
                sessions: sessions(&gate.counters),
            },
            None,
        ),
        Err((why, reason)) => {
            gate.refuse(why, &reason);
            (Reply::Refused { reason }, None)
        }
    };
    if reply(&conn, &reply_msg).is_err() {
        if let Some((sub, ..)) = accepted {
            hub.unsubscribe(sub.id);
        }
        return;
    }
    let Some((sub, filter, request)) = accepted else {
        return;
    };
    tracing::info!(subscriber = sub.id, request, "subscriber connected");
    send_loop(&conn, &sub, filter.as_ref());
    hub.unsubscribe(sub.id);
    tracing::info!(
        subscriber = sub.id,
        dropped = sub.dropped(),
        "subscriber gone"
    );
}

/// Writes one JSON line.
fn reply(mut conn: &UnixStream, r: &Reply) -> io::Result<()> {
    let text = serde_json::to_string(r).unwrap_or_default() + "\n";
    conn.write_all(text.as_bytes())
}

/// Why no request line was read.
#[derive(Debug, thiserror::Error)]
enum RequestProblem {
    #[error("no request line within {} s", REQUEST_WAIT.as_secs())]
    Late,
    #[error("the request is longer than {MAX_REQUEST} bytes; expected one JSON line")]
    TooLong,
    #[error("the request is not UTF-8 text; expected one JSON line")]
    NotText,
    #[error("the connection closed before a request")]
    Gone,
}

/// Reads the request line (without its newline) within [`REQUEST_WAIT`]
/// in all. Bytes after the newline are not read: a reader sends nothing
/// more, and what it does send ends the connection later.
fn read_request(conn: &UnixStream) -> Result<String, RequestProblem> {
    let deadline = Instant::now() + REQUEST_WAIT;
    let mut line = Vec::new();
    let mut byte = [0u8; 512];
    let mut r = conn;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(RequestProblem::Late);
        }
        // Peek, then take up to the newline only.
        let n = match peek(conn, &mut byte) {
            Ok(0) => return Err(RequestProblem::Gone),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestProblem::Late);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(RequestProblem::Gone),
        };
        let end = byte[..n].iter().position(|&b| b == b'\n');
        let take = end.map_or(n, |i| i + 1);
        let mut got = 0;
        while got < take {
            match r.read(&mut byte[got..take]) {
                Ok(0) => return Err(RequestProblem::Gone),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(RequestProblem::Gone),
            }
        }
        line.extend_from_slice(&byte[..take]);
        // The limit is the request's, without its newline.
        if line.len() - usize::from(end.is_some()) > MAX_REQUEST {
            return Err(RequestProblem::TooLong);
        }
        if end.is_some() {
            line.pop();
            return String::from_utf8(line).map_err(|_| RequestProblem::NotText);
        }
    }
}

/// `recv(MSG_PEEK)`: what is waiting, left in the socket.
fn peek(conn: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What a request asked for.
enum Subscribed {
    /// The subscriber, its compiled filter, and the request as logged.
    Stream(Arc<Subscriber>, Option<Bpf>, String),
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

/// The request read and checked, the subscriber added; or why not.
fn subscribe(line: &str, hub: &Hub) -> Result<Subscribed, (StreamRefusal, String)> {
    let req: Request = serde_json::from_str(line.trim()).map_err(|e| {
        (
            StreamRefusal::Request,
            format!("the request is not valid: {e}"),
        )
    })?;
    if req.list {
        return Ok(Subscribed::List);
    }
    let bad = |reason: String| (StreamRefusal::Selection, reason);
    let mut selection = Selection {
        vnis: req.vnis.iter().copied().collect(),
        // ::ffff:10.0.0.1 is the session of 10.0.0.1.
        sources: req.sources.iter().map(|a| a.to_canonical()).collect(),
        ..Default::default()
    };
    for e in &req.endpoints {
        let id = e.parse().map_err(|()| {
            bad(format!(
                "endpoint {e:?} is not a Gateway Load Balancer endpoint ID: expected {}",
                crate::wire::geneve::ENDPOINT_EXPECTED
            ))
        })?;
        selection.endpoints.insert(id);
    }
    if req.filter.as_ref().is_some_and(|f| f.len() > MAX_FILTER) {
        return Err(bad(format!(
            "the filter is longer than {MAX_FILTER} bytes; expected a shorter libpcap expression"
        )));
    }
    let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(Bpf::compile(f).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let sub = hub
        .subscribe(selection)
        .map_err(|e| (StreamRefusal::Subscribers, e.to_string()))?;
    Ok(Subscribed::Stream(sub, filter, line.trim().to_string()))
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
        if taken == Taken::Closed {
            put_end(&mut out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sets_the_mode_before_placing_and_never_takes_a_live_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.sock");
        let first = bind(&path, None).unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
        // Only the socket is left: the private directory is gone.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.sock"]);
        assert!(matches!(bind(&path, None), Err(ControlError::InUse(_))));
        // Stale (nothing answers): replaced.
        drop(first);
        let _second = bind(&path, None).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        // Something else bound it between the check and the move: refused,
        // not replaced.
        let other = tmp.path().join("d.sock");
        let _third = UnixListener::bind(&other).unwrap();
        let from = tmp.path().join("x.sock");
        let _x = UnixListener::bind(&from).unwrap();
        let e = rename_no_replace(&from, &other).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        // A plain file is not a socket.
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(matches!(
            bind(&plain, None),
            Err(ControlError::NotSocket(_))
        ));
    }
}
