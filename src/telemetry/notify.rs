//! The systemd notify protocol (`Type=notify`), without libsystemd: one
//! datagram per message to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` for the abstract namespace).
//!
//! `READY=1` once the sockets are bound, `STATUS=` once a second with the
//! packet rate and session count, `WATCHDOG=1` at half of `$WATCHDOG_USEC`
//! when systemd's watchdog is on, `STOPPING=1` on shutdown. Without
//! `$NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub struct Notifier {
    sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog_every: Option<Duration>,
    last_watchdog: Instant,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring
    /// `$WATCHDOG_PID`: the watchdog is only ours when it names us).
    pub fn from_env() -> Notifier {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = if let Some(name) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            let s = UnixDatagram::unbound().ok()?;
            Some((s, addr))
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            sock,
            watchdog_every,
            last_watchdog: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// Sends one message (`KEY=value` lines); errors are logged at debug.
    pub fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.sock
            && let Err(e) = s.send_to_addr(msg.as_bytes(), addr)
        {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// Called about once a second: STATUS, and WATCHDOG=1 when it is due.
    pub fn tick(&mut self, status: &str) {
        if !self.enabled() {
            return;
        }
        let mut msg = format!("STATUS={status}");
        if let Some(every) = self.watchdog_every
            && self.last_watchdog.elapsed() >= every
        {
            msg.push_str("\nWATCHDOG=1");
            self.last_watchdog = Instant::now();
        }
        self.send(&msg);
    }

    /// The watchdog interval systemd asked for, halved.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}
