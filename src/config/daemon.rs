//! The top-level keys: where the daemon listens and how it receives
//! (`listen`, `geneve_listen`, `geneve_ports`, `vnis`/`exclude_vnis`, `recv_buffer`, `batch`, `batch_wait`,
//! `workers`), its side listeners (`metrics_listen`, `health_tcp_listen`),
//! `log_level`, `allow_sources`, the limits (`max_sessions`,
//! `max_open_files`, `metrics_max_sessions`) and `on_rotate`. In: the raw
//! values; out: checked values or the positioned error. Absent keys take
//! their defaults here.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::context::Ctx;
use super::raw::Spanned;
use super::sizes::{SizeValue, parse_duration, parse_size};
use super::values::{parse_net_or_ip, vni};
use super::{ConfigError, DEFAULT_BATCH, DEFAULT_BATCH_WAIT, DEFAULT_RECV_BUFFER, MAX_BATCH_WAIT};
use crate::filter::VniFilter;

/// `listen`: the address and port the live receiver binds.
pub(super) fn listen(cx: &Ctx, v: Option<&Spanned<String>>) -> Result<SocketAddr, ConfigError> {
    match v {
        None => Ok("0.0.0.0:4789".parse().unwrap()),
        Some(s) => s.get_ref().parse().map_err(|_| {
            cx.err(
                s.span(),
                format!(
                    "{:?} is not an address and port: expected e.g. \"0.0.0.0:4789\" or \"[::]:4789\"",
                    s.get_ref()
                ),
            )
        }),
    }
}

/// `geneve_listen`: the address and port of the GENEVE socket group; off
/// when absent or empty. It may not share its port with `listen` on an
/// overlapping address: with `workers` above 1 both groups set
/// SO_REUSEPORT, and the second would silently join the first.
pub(super) fn geneve_listen(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
    listen_key: Option<&Spanned<String>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(s) = v.filter(|s| !s.get_ref().is_empty()) else {
        return Ok(None);
    };
    let addr: SocketAddr = s.get_ref().parse().map_err(|_| {
        cx.err(
            s.span(),
            format!(
                "{:?} is not an address and port: expected e.g. \"0.0.0.0:6081\" or \"[::]:6081\"",
                s.get_ref()
            ),
        )
    })?;
    let listen = self::listen(cx, listen_key)?;
    if listens_overlap(listen, addr) {
        return Err(cx.err(s.span(), same_port_as_listen(addr, listen)));
    }
    Ok(Some(addr))
}

/// Whether two bound addresses would take the same datagrams: the same
/// port, and the same address or either one a wildcard (port 0 picks a
/// free port, so it never overlaps). An IPv4-mapped IPv6 address
/// (`[::ffff:127.0.0.1]`) is the IPv4 address it maps.
pub fn listens_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port()
        && a.port() != 0
        && (ia == ib || ia.is_unspecified() || ib.is_unspecified())
}

/// The message for a `geneve_listen` that overlaps `listen`.
pub fn same_port_as_listen(geneve: SocketAddr, listen: SocketAddr) -> String {
    format!(
        "{geneve} overlaps `listen` ({listen}): a socket receives VXLAN or GENEVE, not both; expected another port, e.g. \"0.0.0.0:6081\""
    )
}

/// `vnis` and `exclude_vnis`.
pub(super) fn vnis(
    cx: &Ctx,
    allow: &[Spanned<u32>],
    deny: &[Spanned<u32>],
) -> Result<VniFilter, ConfigError> {
    let vni_set = |list: &[Spanned<u32>]| -> Result<BTreeSet<u32>, ConfigError> {
        let mut set = BTreeSet::new();
        for v in list {
            set.insert(vni(cx, v)?);
        }
        Ok(set)
    };
    Ok(VniFilter {
        allow: vni_set(allow)?,
        deny: vni_set(deny)?,
    })
}

/// `geneve_ports`: UDP ports that carry GENEVE in replayed captures;
/// absent = `[6081]`. Each 1 to 65535 and not also a VXLAN port (a datagram
/// is read as one or the other).
pub(super) fn geneve_ports(
    cx: &Ctx,
    v: Option<&[Spanned<u16>]>,
    vxlan_ports: &[u16],
) -> Result<Vec<u16>, ConfigError> {
    let Some(list) = v else {
        default_geneve_overlap(cx, vxlan_ports)?;
        return Ok(vec![crate::wire::geneve::PORT]);
    };
    list.iter()
        .map(|p| {
            let port = *p.get_ref();
            if port == 0 {
                Err(cx.err(
                    p.span(),
                    "port 0 is out of range: expected UDP ports 1 to 65535, e.g. [6081]".into(),
                ))
            } else if vxlan_ports.contains(&port) {
                Err(cx.err(p.span(), overlap(port)))
            } else {
                Ok(port)
            }
        })
        .collect()
}

/// The message for a port in both `vxlan_ports` and `geneve_ports`.
fn overlap(port: u16) -> String {
    format!(
        "port {port} is also in `vxlan_ports`: a port carries VXLAN or GENEVE, not both; expected ports 1 to 65535 not in `vxlan_ports`, e.g. [6081]"
    )
}

/// `geneve_ports` left at its default `[6081]` while `vxlan_ports` names
/// 6081: the error points at `vxlan_ports`' line.
fn default_geneve_overlap(cx: &Ctx, vxlan_ports: &[u16]) -> Result<(), ConfigError> {
    let port = crate::wire::geneve::PORT;
    if !vxlan_ports.contains(&port) {
        return Ok(());
    }
    Err(cx.at(
        cx.text
            .lines()
            .position(|l| l.trim_start().starts_with("vxlan_ports"))
            .map_or(1, |i| i + 1),
        "`geneve_ports`: ".into(),
        format!("{} (the default)", overlap(port)),
    ))
}

/// `recv_buffer`: 4 KiB to 2 GiB.
pub(super) fn recv_buffer(cx: &Ctx, v: Option<&Spanned<SizeValue>>) -> Result<usize, ConfigError> {
    let Some(s) = v else {
        return Ok(DEFAULT_RECV_BUFFER);
    };
    let n = parse_size(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
    if !(4096..=(1 << 31) - 1).contains(&n) {
        return Err(cx.err(
            s.span(),
            format!("{n} bytes is out of range: expected 4KiB to 2GiB"),
        ));
    }
    Ok(n as usize)
}

/// `batch`: datagrams per recvmmsg call.
pub(super) fn batch(cx: &Ctx, v: Option<&Spanned<u32>>) -> Result<usize, ConfigError> {
    match v {
        None => Ok(DEFAULT_BATCH),
        Some(s) if (1..=1024).contains(s.get_ref()) => Ok(*s.get_ref() as usize),
        Some(s) => Err(cx.err(
            s.span(),
            format!(
                "{} is out of range: expected 1 to 1024 datagrams per recvmmsg call",
                s.get_ref()
            ),
        )),
    }
}

/// `batch_wait`: 0 to [`MAX_BATCH_WAIT`].
pub(super) fn batch_wait(cx: &Ctx, v: Option<&Spanned<String>>) -> Result<Duration, ConfigError> {
    let Some(s) = v else {
        return Ok(DEFAULT_BATCH_WAIT);
    };
    let d = parse_duration(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
    if d > MAX_BATCH_WAIT {
        return Err(cx.err(
            s.span(),
            format!(
                "{:?} is out of range: expected \"0ms\" (wake on every datagram) to \"100ms\"",
                s.get_ref()
            ),
        ));
    }
    Ok(d)
}

/// `workers`: 0 (one per core) to 256; absent = 1.
pub(super) fn workers(cx: &Ctx, v: Option<&Spanned<u32>>) -> Result<usize, ConfigError> {
    match v {
        None => Ok(1),
        Some(s) if *s.get_ref() <= 256 => Ok(*s.get_ref() as usize),
        Some(s) => Err(cx.err(
            s.span(),
            format!(
                "{} is out of range: expected 0 (one per core) to 256",
                s.get_ref()
            ),
        )),
    }
}

/// `metrics_listen`, `health_tcp_listen`: absent or empty = off.
pub(super) fn side_listener(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) if s.get_ref().is_empty() => Ok(None),
        Some(s) => s.get_ref().parse().map(Some).map_err(|_| {
            cx.err(
                s.span(),
                format!(
                    "{:?} is not an address and port: expected e.g. \"127.0.0.1:9789\"",
                    s.get_ref()
                ),
            )
        }),
    }
}

/// `log_level`.
pub(super) fn log_level(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
) -> Result<Option<String>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    check_log_level(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
    Ok(Some(s.get_ref().clone()))
}

/// `allow_sources`: addresses or CIDR blocks.
pub(super) fn allow_sources(cx: &Ctx, list: &[Spanned<String>]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|a| parse_net_or_ip(a.get_ref()).map_err(|m| cx.err(a.span(), m)))
        .collect()
}

/// A limit of at least 1 `what`; absent = `default`.
pub(super) fn at_least_one(
    cx: &Ctx,
    v: Option<&Spanned<u32>>,
    default: usize,
    what: &str,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if *s.get_ref() >= 1 => Ok(*s.get_ref() as usize),
        Some(s) => Err(cx.err(
            s.span(),
            format!(
                "{} is out of range: expected at least 1 {what}",
                s.get_ref()
            ),
        )),
    }
}

/// `on_rotate`: the command must be an absolute path (no shell, no PATH),
/// and is refused with `[output.s3]` (`s3_on`): both would act on each
/// closed file, the hook moving or reading a file the uploader reads and
/// deletes. The array has no span of its own, so the error names the
/// first line that starts with `on_rotate`.
pub(super) fn on_rotate(
    cx: &Ctx,
    argv: Vec<String>,
    s3_on: bool,
) -> Result<Vec<String>, ConfigError> {
    let line = || {
        cx.text
            .lines()
            .position(|l| l.trim_start().starts_with("on_rotate"))
            .map_or(1, |i| i + 1)
    };
    if !argv.is_empty() && s3_on {
        return Err(cx.at(
            line(),
            "`on_rotate`: ".into(),
            "cannot be used with [output.s3]: both act on each closed file (the command could move or read a file the uploader deletes); keep one (to act on uploaded files, use S3 event notifications)".into(),
        ));
    }
    if let Some(first) = argv.first()
        && !first.starts_with('/')
    {
        return Err(cx.at(
            line(),
            "`on_rotate`: ".into(),
            format!(
                "{first:?} is not an absolute path: the command runs without a shell or PATH lookup, e.g. [\"/usr/bin/aws\", \"s3\", \"mv\", \"{{path}}\", \"s3://bucket/{{vni}}/\"]"
            ),
        ));
    }
    Ok(argv)
}

/// `log_level`: a level, or comma-separated directives each ending in a
/// level (`mirrorcap=debug,warn`). A bare word that is not a level would
/// be taken by tracing as a target name with every level on, so it is
/// refused.
fn check_log_level(s: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let accepted = "expected error, warn, info, debug, trace or off, or directives such as \"mirrorcap=debug,warn\"";
    for d in s.split(',') {
        let level = d.rsplit('=').next().unwrap_or("").trim();
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{s:?} is not a log level ({:?} is not a level): {accepted}",
                d.trim()
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| ())
        .map_err(|e| format!("{s:?} is not a log level ({e}): {accepted}"))
}
