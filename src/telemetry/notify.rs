//! The systemd notify protocol (`Type=notify`): one datagram per message
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for
//! the abstract namespace).
//!
//! In: the daemon's state changes and a once-a-second status line. Out:
//! `READY=1` (with `STATUS=` and `MAINPID=`) once the sockets are bound,
//! `STATUS=` once a second with the packet rate and session count,
//! `WATCHDOG=1` at half of `$WATCHDOG_USEC` when systemd's watchdog is on
//! (and `$WATCHDOG_PID`, if set, names us), `STOPPING=1` on shutdown.
//! Without `$NOTIFY_SOCKET` (not run by systemd) every call does nothing;
//! a message that cannot be sent is dropped and logged at debug.
//!
//! One socket, opened in [`Notifier::from_env`] and kept: every message
//! is sent on it to the address read at start. `sd_notify::notify` opens
//! and connects a new socket per message, so when the process is out of
//! file descriptors (sessions hold capture files open, a case the daemon
//! plans for) `WATCHDOG=1` would stop reaching systemd and the watchdog
//! would kill the daemon. The socket is not connected: each datagram
//! names the address, as libsystemd's `sd_notify` does, so a notify
//! socket that was not there yet at start (or was re-created) is still
//! reached, and connecting would need the peer at start.
//!
//! `sd-notify` still gives the message vocabulary ([`NotifyState`] and
//! its `KEY=value` lines). Its `watchdog_enabled` is not used: it treats
//! a `$WATCHDOG_PID` that is not a number as absent (the watchdog would be
//! ours) and does not trim; here, as before the crate, a `$WATCHDOG_PID`
//! that does not name this process (unparsable included) leaves the
//! watchdog off, and both variables are trimmed.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// The socket messages are sent on and `$NOTIFY_SOCKET`'s address;
    /// `None`: not run by systemd (or the socket could not be made).
    sock: Option<(UnixDatagram, SocketAddr)>,
    watchdog_every: Option<Duration>,
    last_watchdog: Instant,
}

/// systemd's watchdog interval from `$WATCHDOG_USEC` and `$WATCHDOG_PID`
/// (both trimmed): `None` when off (unset, zero, not a number) or when the
/// PID is set and does not name `me` (a PID that is not a number names no
/// one).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let ours = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(me));
    let usec = usec?.trim().parse::<u64>().ok()?;
    (ours && usec > 0).then(|| Duration::from_micros(usec))
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring
    /// `$WATCHDOG_PID`: the watchdog is only ours when it names us), and
    /// opens the one socket every message goes out on.
    pub fn from_env() -> Notifier {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id());
        Notifier::new(std::env::var_os("NOTIFY_SOCKET").as_deref(), watchdog)
    }

    /// A notifier for the socket `$NOTIFY_SOCKET` names (`None`: not run
    /// by systemd) and systemd's watchdog interval.
    fn new(socket: Option<&std::ffi::OsStr>, watchdog: Option<Duration>) -> Notifier {
        let sock = socket.and_then(|p| match open(p) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, socket = ?p, "NOTIFY_SOCKET: no socket; systemd will not be notified");
                None
            }
        });
        Notifier {
            sock,
            watchdog_every: watchdog.map(|d| d / 2),
            last_watchdog: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// Sends one message on the socket opened at start; errors are
    /// logged at debug.
    pub fn send(&self, states: &[NotifyState]) {
        let Some((s, addr)) = &self.sock else {
            return;
        };
        let msg: String = states.iter().map(|st| format!("{st}\n")).collect();
        if let Err(e) = s.send_to_addr(msg.as_bytes(), addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(status),
            NotifyState::MainPid(std::process::id()),
        ]);
    }

    /// Called about once a second: STATUS, and WATCHDOG=1 when it is due.
    pub fn tick(&mut self, status: &str) {
        if !self.enabled() {
            return;
        }
        let due = self
            .watchdog_every
            .is_some_and(|every| self.last_watchdog.elapsed() >= every);
        if due {
            self.last_watchdog = Instant::now();
            self.send(&[NotifyState::Status(status), NotifyState::Watchdog]);
        } else {
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// The watchdog interval systemd asked for, halved.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}

/// The address `$NOTIFY_SOCKET` names (`@name`: abstract) and an
/// unbound datagram socket to send to it.
fn open(p: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let addr = match p.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(p)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `@name` goes to the abstract namespace, the same datagram as to a
    /// path (the daemon tests in tests/service.rs cover the path form).
    #[test]
    fn abstract_notify_socket_gets_the_message() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mirrorcap-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::new(Some(format!("@{name}").as_ref()), None);
        n.ready("up");
        let mut buf = [0u8; 512];
        let len = sock.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..len]);
        assert_eq!(
            msg,
            format!("READY=1\nSTATUS=up\nMAINPID={}\n", std::process::id())
        );
    }

    /// `$WATCHDOG_PID` and `$WATCHDOG_USEC` as before sd-notify: trimmed;
    /// a PID that is not ours, or not a number, leaves the watchdog off.
    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let s = Some(Duration::from_secs(1));
        assert_eq!(watchdog_interval(Some("1000000"), None, 42), s);
        assert_eq!(watchdog_interval(Some(" 1000000\n"), Some(" 42 "), 42), s);
        assert_eq!(watchdog_interval(Some("1000000"), Some("43"), 42), None);
        assert_eq!(watchdog_interval(Some("1000000"), Some("x42"), 42), None);
        assert_eq!(watchdog_interval(Some("1000000"), Some(""), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval(None, Some("42"), 42), None);
    }
}

/// Tests that need a process of their own (a lowered descriptor limit, an
/// environment): the test re-runs this test binary with
/// `MIRRORCAP_NOTIFY_CHILD` set, and the child does the work and exits.
#[cfg(test)]
mod child_tests {
    use super::*;
    use std::process::Command;

    const CHILD: &str = "MIRRORCAP_NOTIFY_CHILD";

    /// Runs `test` (its full path) alone in a child with `env`; true if
    /// the child ran it (false when this process is that child).
    fn run_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> bool {
        if std::env::var_os(CHILD).is_some() {
            return false;
        }
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("1 passed"),
            "the child did not run {test}:\n{text}"
        );
        true
    }

    /// With every descriptor in use (sessions hold capture files open),
    /// STATUS and WATCHDOG=1 still reach systemd: the notifier sends on the
    /// socket it opened at start, it does not need a new one per message.
    #[test]
    fn watchdog_reaches_systemd_when_out_of_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let env = [
            ("NOTIFY_SOCKET", path.as_os_str()),
            ("WATCHDOG_USEC", "2".as_ref()),
        ];
        if run_child(
            "telemetry::notify::child_tests::watchdog_reaches_systemd_when_out_of_descriptors",
            &env,
        ) {
            let mut buf = [0u8; 512];
            let len = rx.recv(&mut buf).expect("no datagram from the child");
            let msg = String::from_utf8_lossy(&buf[..len]);
            assert_eq!(msg, "STATUS=at EMFILE\nWATCHDOG=1\n");
            return;
        }
        // The child: few descriptors, all of them in use, then a tick.
        let lim = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        // SAFETY: setrlimit reads a valid rlimit; this child process is ours.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut n = Notifier::from_env();
        let mut hold = Vec::new();
        let err = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hold.push(f),
                Err(e) => break e,
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        std::thread::sleep(Duration::from_millis(1));
        n.tick("at EMFILE");
        drop(hold);
    }

    /// A `$WATCHDOG_PID` that is not a number names no process of ours:
    /// the watchdog is not ours, as before sd-notify.
    #[test]
    fn unparsable_watchdog_pid_disables_the_watchdog() {
        let env = [
            ("NOTIFY_SOCKET", "/nonexistent/notify".as_ref()),
            ("WATCHDOG_USEC", "1000000".as_ref()),
            ("WATCHDOG_PID", "not-a-pid".as_ref()),
        ];
        if run_child(
            "telemetry::notify::child_tests::unparsable_watchdog_pid_disables_the_watchdog",
            &env,
        ) {
            return;
        }
        assert_eq!(Notifier::from_env().watchdog_every(), None);
    }
}
