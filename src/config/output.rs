//! The `[output]` table: where and how capture files are written. In: the
//! raw table; out: an [`OutputConfig`] or the positioned error. The
//! template is checked here so that no file name it makes can be longer
//! than the file system takes; 0 or absent for a rotation or retention
//! limit means "off".

use std::time::Duration;

use super::context::Ctx;
use super::raw::{RawOutput, Spanned};
use super::sizes::{SizeValue, parse_duration, parse_size};
use super::{ConfigError, MAX_VNI};
use crate::capture::encode::OutputFormat;
use crate::output::template::OutputTemplate;

/// The `[output]` table, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    pub template: OutputTemplate,
    pub format: OutputFormat,
    /// Frames longer than this are cut; the record keeps the original length.
    pub snaplen: u32,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    pub rotate_packets: Option<u64>,
    pub max_files: Option<u32>,
    pub max_total_bytes: Option<u64>,
    pub idle_timeout: Duration,
    /// `fdatasync` each file before it is renamed to its final name, so a
    /// file that has its final name is whole after a power loss.
    pub fsync: bool,
}

/// Largest snap length accepted (libpcap's maximum for Ethernet).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Smallest snap length accepted: an Ethernet header.
pub const MIN_SNAPLEN: u32 = 14;

/// A session with no packet for this long closes its file.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Validates `[output]`, key by key in the order they were always checked.
pub(super) fn output(cx: &Ctx, o: RawOutput) -> Result<OutputConfig, ConfigError> {
    let size = |v: &Option<Spanned<SizeValue>>| -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => parse_size(s.get_ref())
                .map(|n| (n > 0).then_some(n))
                .map_err(|m| cx.err(s.span(), m)),
        }
    };
    let duration = |v: &Option<Spanned<String>>| -> Result<Option<Duration>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => parse_duration(s.get_ref())
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|m| cx.err(s.span(), m)),
        }
    };
    Ok(OutputConfig {
        format: format(cx, o.format.as_ref())?,
        template: template(cx, o.template.as_ref())?,
        snaplen: snaplen(cx, o.snaplen.as_ref())?,
        rotate_size: size(&o.rotate_size)?,
        rotate_interval: duration(&o.rotate_interval)?,
        rotate_packets: o.rotate_packets.filter(|&n| n > 0),
        max_files: o.max_files.filter(|&n| n > 0),
        max_total_bytes: size(&o.max_total_bytes)?,
        idle_timeout: duration(&o.idle_timeout)?.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        fsync: o.fsync.unwrap_or(true),
    })
}

/// `format`: pcap (default) or pcapng.
fn format(cx: &Ctx, v: Option<&Spanned<String>>) -> Result<OutputFormat, ConfigError> {
    let Some(s) = v else {
        return Ok(OutputFormat::Pcap);
    };
    match s.get_ref().as_str() {
        "pcap" => Ok(OutputFormat::Pcap),
        "pcapng" => Ok(OutputFormat::Pcapng),
        other => Err(cx.err(
            s.span(),
            format!("{other:?} is not an output format: expected \"pcap\" or \"pcapng\""),
        )),
    }
}

/// `template`: parsed, and every component it can make fits a file name.
fn template(cx: &Ctx, v: Option<&Spanned<String>>) -> Result<OutputTemplate, ConfigError> {
    let Some(s) = v else {
        return Ok(OutputTemplate::default());
    };
    OutputTemplate::parse(s.get_ref())
        .map_err(String::from)
        .and_then(|t| check_component_lengths(&t).map(|()| t))
        .map_err(|why| cx.err(s.span(), format!("{:?}: {why}", s.get_ref())))
}

/// `snaplen`: [`MIN_SNAPLEN`] to [`MAX_SNAPLEN`].
fn snaplen(cx: &Ctx, v: Option<&Spanned<u32>>) -> Result<u32, ConfigError> {
    let Some(s) = v else { return Ok(MAX_SNAPLEN) };
    let v = *s.get_ref();
    if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&v) {
        return Err(cx.err(
            s.span(),
            format!("{v} is out of range: expected {MIN_SNAPLEN} to {MAX_SNAPLEN} bytes"),
        ));
    }
    Ok(v)
}

/// Longest file or directory name Linux file systems take (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Every path component `t` can produce must fit in [`NAME_MAX`] bytes:
/// checked with the longest value of each placeholder (8-digit VNI, a
/// 39-byte IPv6 source, a `vpce-` endpoint ID, a 10-digit sequence number, `pcapng`), and the
/// file name with the `.part` it carries while written.
fn check_component_lengths(t: &OutputTemplate) -> Result<(), String> {
    use crate::output::files::part_path_of;
    use crate::output::template::PathFields;
    let longest = PathFields {
        vni: MAX_VNI,
        source: std::net::IpAddr::V6(std::net::Ipv6Addr::from([0xffff_u16; 8])),
        start_ns: u64::MAX,
        seq: u32::MAX,
        format: OutputFormat::Pcapng,
        endpoint: Some(crate::wire::geneve::EndpointId(u64::MAX)),
    };
    let path = part_path_of(&t.render(&longest));
    let parts: Vec<_> = path.iter().collect();
    for (i, c) in parts.iter().enumerate() {
        let len = c.len();
        if len > NAME_MAX {
            let last = i + 1 == parts.len();
            return Err(format!(
                "path component {} can be {len} bytes long (with an 8-digit VNI, a 39-byte IPv6 source, a 22-byte endpoint ID, a 10-digit sequence number{}), over the limit of {NAME_MAX} bytes a file or directory name may have: shorten its literal text",
                i + 1,
                if last {
                    " and the `.part` suffix the file has while written"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}
