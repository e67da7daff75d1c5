//! The systemd notify protocol (`Type=notify`), by the `sd-notify` crate:
//! one datagram per message to the unix socket named by `$NOTIFY_SOCKET`.
//!
//! In: the daemon's state changes and a once-a-second status line. Out:
//! `READY=1` (with `STATUS=` and `MAINPID=`) once the sockets are bound,
//! `STATUS=` once a second with the packet rate and session count,
//! `WATCHDOG=1` at half of `$WATCHDOG_USEC` when systemd's watchdog is on
//! (and `$WATCHDOG_PID`, if set, names us), `STOPPING=1` on shutdown.
//! Without `$NOTIFY_SOCKET` (not run by systemd) every call does nothing;
//! a message that cannot be sent is dropped and logged at debug.
//!
//! `sd-notify` 0.5 connects to `$NOTIFY_SOCKET` as a path only, while
//! sd_notify(3) also allows `@name` for the abstract namespace (systemd in
//! containers, other service managers): for that form the same message
//! is sent here, to the abstract address.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    enabled: bool,
    /// The socket and address when `$NOTIFY_SOCKET` is `@name`.
    abstract_sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog_every: Option<Duration>,
    last_watchdog: Instant,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring
    /// `$WATCHDOG_PID`: the watchdog is only ours when it names us).
    pub fn from_env() -> Notifier {
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        Notifier::new(std::env::var_os("NOTIFY_SOCKET").as_deref(), watchdog)
    }

    /// A notifier for the socket `$NOTIFY_SOCKET` names (`None`: not run
    /// by systemd) and systemd's watchdog interval.
    fn new(socket: Option<&std::ffi::OsStr>, watchdog: Option<Duration>) -> Notifier {
        let abstract_sock = socket.and_then(|p| {
            use std::os::linux::net::SocketAddrExt;
            let name = p.to_str()?.strip_prefix('@')?;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier {
            enabled: socket.is_some(),
            abstract_sock,
            watchdog_every: watchdog.map(|d| d / 2),
            last_watchdog: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sends one message; errors are logged at debug.
    pub fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        let sent = match &self.abstract_sock {
            None => sd_notify::notify(states),
            Some((s, addr)) => {
                let msg: String = states.iter().map(|st| format!("{st}\n")).collect();
                s.send_to_addr(msg.as_bytes(), addr).map(drop)
            }
        };
        if let Err(e) = sent {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `@name` goes to the abstract namespace, the same datagram as to a
    /// path (the daemon tests in tests/service.rs cover the path form).
    #[test]
    fn abstract_notify_socket_gets_the_message() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mirrorcap-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
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
}
