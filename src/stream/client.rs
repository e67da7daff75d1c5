//! The reading side of the control socket: subscribe, then turn the
//! daemon's messages into a capture stream (`mirrorcap stream`, and the
//! extcap interface's FIFO).
//!
//! pcap (nanosecond, Ethernet) interleaves every session as tcpdump
//! would; pcapng gives each session its own interface, named and described
//! as its capture files are, added when its first frame comes. The header
//! is written and flushed at once (so `wireshark -k -i -` starts before
//! any frame), then each read's frames are written and flushed together.
//! The stream ends on the frame count, the duration, the stop flag (a
//! signal), the reader of the output going away (a broken pipe) or the
//! daemon closing the socket.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::message::{self, Message, Reply, Request, SessionInfo};
use crate::capture::encode::{
    OutputFormat, RecordHeader, pcap_file_header, pcapng_interface, pcapng_section_header,
};

/// What to ask for and how to write it.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub socket: PathBuf,
    pub request: Request,
    pub format: OutputFormat,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Why the stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Count,
    Duration,
    /// The stop flag was set (SIGINT, SIGTERM, or the extcap stopping).
    Stopped,
    /// Whoever reads the output went away (EPIPE).
    ReaderGone,
    /// The daemon stopped cleanly (its END message came).
    DaemonStopped,
    /// The connection ended without the daemon's END message: it was
    /// killed or crashed (what it had sent was written).
    ConnectionLost,
}

/// How it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    pub frames: u64,
    /// Frames the daemon could not deliver to this subscriber (its queue
    /// was full), as the daemon last said.
    pub not_delivered: u64,
    pub end: End,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the control socket {path}: {source} (is the daemon running with `control_socket` set, and are you in its group?)"
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error(
        "{0} is not a socket: expected the daemon's control socket (`control_socket` in its config; `--config FILE` finds it)"
    )]
    NotSocket(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon refused the subscription: {0}")]
    Refused(String),
    #[error("control socket {path}: unexpected answer {answer:?}")]
    Answer { path: PathBuf, answer: String },
    #[error("control socket {path}: {source}")]
    Message {
        path: PathBuf,
        source: message::MessageError,
    },
    #[error("writing the capture stream: {0}")]
    Output(io::Error),
}

/// Subscribes and writes the stream to `out` until it ends. `out_fd`,
/// when given, is `out`'s descriptor: polled while no message comes, so
/// that a pipe or FIFO whose reader has gone ends the stream at once
/// rather than at the next frame (which a quiet selection may never get,
/// while it holds one of the daemon's `max_subscribers`).
pub fn stream(
    opts: &StreamOptions,
    out: &mut dyn Write,
    out_fd: Option<BorrowedFd<'_>>,
    stop: &AtomicBool,
) -> Result<StreamOutcome, ClientError> {
    let path = &opts.socket;
    let io_err = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let conn = connect(path)?;
    let snaplen = subscribe(&conn, path, &opts.request)?;
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(io_err)?;
    let mut w = Writer::new(opts.format, snaplen);
    let mut outcome = StreamOutcome {
        frames: 0,
        not_delivered: 0,
        end: End::ConnectionLost,
    };
    let emit = |w: &mut Writer, out: &mut dyn Write| -> Result<bool, ClientError> {
        match w.flush_to(out) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(ClientError::Output(e)),
        }
    };
    if !emit(&mut w, out)? {
        outcome.end = End::ReaderGone;
        return Ok(outcome);
    }
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0;
    let mut conn = &conn;
    loop {
        if stop.load(Relaxed) {
            outcome.end = End::Stopped;
            break;
        }
        if opts.duration.is_some_and(|d| start.elapsed() >= d) {
            outcome.end = End::Duration;
            break;
        }
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match conn.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if out_fd.is_some_and(output_gone) {
                    outcome.end = End::ReaderGone;
                    break;
                }
                continue;
            }
            Err(e) => return Err(io_err(e)),
        };
        have += n;
        let mut at = 0;
        let mut done = false;
        // Frames of this read: counted as written once they are.
        let mut frames = 0;
        while let Some((m, len)) =
            message::next(&buf[at..have]).map_err(|source| ClientError::Message {
                path: path.clone(),
                source,
            })?
        {
            at += len;
            match m {
                Message::Session(s) => w.session(s),
                Message::Frame {
                    id,
                    ts_ns,
                    wire_len,
                    data,
                } => {
                    w.frame(id, ts_ns, wire_len, data);
                    frames += 1;
                    if opts.count.is_some_and(|c| outcome.frames + frames >= c) {
                        outcome.end = End::Count;
                        done = true;
                        break;
                    }
                }
                Message::Dropped(d) => outcome.not_delivered = d,
                Message::End => {
                    outcome.end = End::DaemonStopped;
                    done = true;
                    break;
                }
            }
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if !emit(&mut w, out)? {
            outcome.end = End::ReaderGone;
            break;
        }
        outcome.frames += frames;
        if done {
            break;
        }
    }
    Ok(outcome)
}

/// Whether `fd` is a pipe, FIFO or socket whose reader has gone (poll's
/// POLLERR or POLLHUP; a file or a terminal in use says neither).
fn output_gone(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// The daemon's live sessions (a `list` request).
pub fn list_sessions(socket: &Path) -> Result<Vec<SessionInfo>, ClientError> {
    let conn = connect(socket)?;
    let req = Request {
        list: true,
        ..Default::default()
    };
    match request(&conn, socket, &req)? {
        Reply::Sessions { sessions } => Ok(sessions),
        Reply::Refused { reason } => Err(ClientError::Refused(reason)),
        other => Err(ClientError::Answer {
            path: socket.to_path_buf(),
            answer: format!("{other:?}"),
        }),
    }
}

/// Connects to the control socket; a path that is there but is not a
/// socket says so rather than "connection refused".
fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    use std::os::unix::fs::FileTypeExt;
    UnixStream::connect(path).map_err(|source| match std::fs::metadata(path) {
        Ok(m) if !m.file_type().is_socket() => ClientError::NotSocket(path.to_path_buf()),
        _ => ClientError::Connect {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Sends the request, reads the answer; the snap length on success.
fn subscribe(conn: &UnixStream, path: &Path, req: &Request) -> Result<u32, ClientError> {
    match request(conn, path, req)? {
        Reply::Accepted { snaplen } => Ok(snaplen),
        Reply::Refused { reason } => Err(ClientError::Refused(reason)),
        other => Err(ClientError::Answer {
            path: path.to_path_buf(),
            answer: format!("{other:?}"),
        }),
    }
}

/// Sends `req` and reads the one-line answer.
fn request(conn: &UnixStream, path: &Path, req: &Request) -> Result<Reply, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let line = serde_json::to_string(req).unwrap_or_default() + "\n";
    let mut w = conn;
    // A daemon that refuses a connection at once (too many being served)
    // answers and closes, maybe before the request is written: its answer
    // is read all the same, and says why.
    let sent = w.write_all(line.as_bytes());
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err)?;
    // One byte at a time: what follows the line is the stream's, not ours.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    let mut r = conn;
    let mut read = Ok(());
    while answer.len() < 64 * 1024 {
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => answer.push(byte[0]),
            Err(e) => {
                read = Err(e);
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    if let Ok(r @ Reply::Refused { .. }) = serde_json::from_str(&text) {
        return Ok(r);
    }
    sent.and(read).map_err(io_err)?;
    serde_json::from_str::<Reply>(&text).map_err(|_| ClientError::Answer {
        path: path.to_path_buf(),
        answer: text,
    })
}

/// Builds the output bytes.
struct Writer {
    format: OutputFormat,
    snaplen: u32,
    /// Session id to pcapng interface number.
    interfaces: HashMap<u64, u32>,
    pending: Vec<u8>,
}

impl Writer {
    fn new(format: OutputFormat, snaplen: u32) -> Writer {
        let mut pending = Vec::with_capacity(1 << 20);
        match format {
            OutputFormat::Pcap => pcap_file_header(&mut pending, snaplen),
            OutputFormat::Pcapng => pcapng_section_header(&mut pending),
        }
        Writer {
            format,
            snaplen,
            interfaces: HashMap::new(),
            pending,
        }
    }

    fn session(&mut self, s: message::StreamSession) {
        if self.format == OutputFormat::Pcapng && !self.interfaces.contains_key(&s.id) {
            let n = self.interfaces.len() as u32;
            self.interfaces.insert(s.id, n);
            let (name, description) = s.interface();
            pcapng_interface(&mut self.pending, self.snaplen, &name, &description);
        }
    }

    fn frame(&mut self, id: u64, ts_ns: u64, wire_len: u32, data: &[u8]) {
        let interface = match self.format {
            OutputFormat::Pcap => 0,
            OutputFormat::Pcapng => match self.interfaces.get(&id) {
                Some(&i) => i,
                // Never announced (cannot happen with a well-behaved
                // daemon): an interface without a name.
                None => {
                    self.session(message::StreamSession {
                        id,
                        vni: 0,
                        source: message::NO_ADDRESS,
                        endpoint: None,
                    });
                    self.interfaces[&id]
                }
            },
        };
        let caplen = data.len() as u32;
        let h =
            RecordHeader::on_interface(self.format, interface, ts_ns, caplen, wire_len.max(caplen));
        self.pending.extend_from_slice(h.header());
        self.pending.extend_from_slice(data);
        let (tail, n) = h.tail();
        self.pending.extend_from_slice(&tail[..n]);
    }

    fn flush_to(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.write_all(&self.pending)?;
            self.pending.clear();
        }
        out.flush()
    }
}
