//! The live subscribers' keys: `control_socket` (off when absent: live
//! subscribers are opt-in), `control_group`, `max_subscribers`,
//! `stream_queue`. In: the raw values; out: [`StreamConfig`] or the
//! positioned error.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::context::Ctx;
use super::raw::Spanned;
use super::sizes::{SizeValue, parse_size};

/// Default `max_subscribers`.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 8;
/// Most `max_subscribers` (a session keeps one bit per subscriber).
pub use crate::stream::hub::MAX_SUBSCRIBERS;
/// Default `stream_queue`: bytes queued per subscriber (about a quarter
/// of a second of 128-byte frames at 200k a second).
pub const DEFAULT_STREAM_QUEUE: usize = 8 << 20;
/// The socket's name in the default places.
pub const SOCKET_NAME: &str = "control.sock";

/// Where the control socket goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlSocket {
    /// `"auto"`: `$RUNTIME_DIRECTORY/control.sock` when systemd gives the
    /// service a runtime directory (`RuntimeDirectory=mirrorcap`: then
    /// `/run/mirrorcap/control.sock`), else `DIR/.control.sock`.
    Auto,
    Path(PathBuf),
}

impl ControlSocket {
    /// The path for a daemon writing under `dir`.
    pub fn resolve(&self, dir: &Path) -> PathBuf {
        match self {
            ControlSocket::Path(p) => p.clone(),
            ControlSocket::Auto => match std::env::var_os("RUNTIME_DIRECTORY") {
                // systemd lists several directories separated by ':'.
                Some(d) if !d.is_empty() => {
                    let first = d
                        .to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    PathBuf::from(first).join(SOCKET_NAME)
                }
                _ => dir.join(format!(".{SOCKET_NAME}")),
            },
        }
    }
}

/// The live subscribers' settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Off when `None`.
    pub socket: Option<ControlSocket>,
    /// The group given the socket file (its members may subscribe), as
    /// named and as a gid.
    pub group: Option<(String, u32)>,
    pub max_subscribers: usize,
    /// Bytes queued per subscriber.
    pub queue: usize,
}

pub(super) fn stream(
    cx: &Ctx,
    socket: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
    max: Option<&Spanned<u32>>,
    queue: Option<&Spanned<SizeValue>>,
) -> Result<StreamConfig, ConfigError> {
    let socket = match socket {
        None => None,
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) if s.get_ref() == "auto" => Some(ControlSocket::Auto),
        Some(s) if s.get_ref().starts_with('/') => {
            Some(ControlSocket::Path(PathBuf::from(s.get_ref())))
        }
        Some(s) => {
            return Err(cx.err(
                s.span(),
                format!(
                    "{:?} is not an absolute path: expected \"auto\" (beside the captures, or in systemd's RuntimeDirectory) or a path such as \"/run/mirrorcap/control.sock\"",
                    s.get_ref()
                ),
            ));
        }
    };
    let group = match group {
        None => None,
        Some(g) => Some((g.get_ref().clone(), gid(g.get_ref()).ok_or_else(|| {
            cx.err(
                g.span(),
                format!(
                    "no group named {:?} on this host: expected an existing group (getent group) whose members may subscribe",
                    g.get_ref()
                ),
            )
        })?)),
    };
    let max_subscribers = match max {
        None => DEFAULT_MAX_SUBSCRIBERS,
        Some(m) if (1..=MAX_SUBSCRIBERS as u32).contains(m.get_ref()) => *m.get_ref() as usize,
        Some(m) => {
            return Err(cx.err(
                m.span(),
                format!(
                    "{} is out of range: expected 1 to {MAX_SUBSCRIBERS} subscribers",
                    m.get_ref()
                ),
            ));
        }
    };
    let queue = match queue {
        None => DEFAULT_STREAM_QUEUE,
        Some(q) => {
            let n = parse_size(q.get_ref()).map_err(|m| cx.err(q.span(), m))?;
            if !(65_536..=1 << 30).contains(&n) {
                return Err(cx.err(
                    q.span(),
                    format!("{n} bytes is out of range: expected 64KiB to 1GiB per subscriber"),
                ));
            }
            n as usize
        }
    };
    Ok(StreamConfig {
        socket,
        group,
        max_subscribers,
        queue,
    })
}

/// The gid of group `name`, or a number given as is.
fn gid(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length for the call; `out` is
    // only read when the call says it found the group.
    let r =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(grp.gr_gid)
}
