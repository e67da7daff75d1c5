//! The `[flows]` table and its `[[flows.session]]` entries (by VNI,
//! source and/or Gateway Load Balancer endpoint): VPC Flow Logs records. In: the raw table (absent = flows off, defaults); out: a
//! [`FlowConfig`] or the positioned error.

use super::ConfigError;
use super::context::Ctx;
use super::raw::{RawFlowSession, RawFlows, Spanned};
use super::sizes::parse_duration;
use super::values::endpoint;
use crate::flows::layout::check_path_value;
use crate::flows::{FlowConfig, FlowFormat, FlowLayout, FlowMetadata, FlowSessionMeta};

/// Validates `[flows]`.
pub(super) fn flows(cx: &Ctx, raw: Option<RawFlows>) -> Result<FlowConfig, ConfigError> {
    let Some(f) = raw else {
        return Ok(FlowConfig::default());
    };
    let mut c = FlowConfig {
        enabled: f.enabled,
        gzip: f.gzip,
        json: f.json,
        ..Default::default()
    };
    c.interval_s = whole_seconds(cx, f.interval.as_ref(), 60)?;
    c.file_interval_s = whole_seconds(cx, f.file_interval.as_ref(), 600)?;
    if let Some(fmt) = &f.format {
        c.format = FlowFormat::parse(fmt.get_ref()).map_err(|m| cx.err(fmt.span(), m))?;
    }
    if let Some(p) = &f.parquet {
        c.parquet = parquet(cx, p, &c)?;
    }
    if let Some(m) = &f.max_flows {
        if *m.get_ref() == 0 {
            return Err(cx.err(
                m.span(),
                "0 is out of range: expected at least 1 flow".into(),
            ));
        }
        c.max_flows = *m.get_ref() as usize;
    }
    c.layout = FlowLayout {
        hive: f.hive_compatible_partitions,
        per_hour: f.per_hour_partition,
        account_id: path_value(cx, f.account_id.as_ref())?,
        region: path_value(cx, f.region.as_ref())?,
    };
    windows_fit_folders(cx, f.interval.as_ref(), &c)?;
    for s in f.session {
        c.sessions.push(session(cx, s)?);
    }
    Ok(c)
}

/// `interval` must cut a day (an hour with `per_hour_partition`) into
/// whole windows: a window is filed in the folder of its start, so one
/// that spanned two folders would put records of one day (or hour) in
/// the other's, and a query on a partition would miss them.
fn windows_fit_folders(
    cx: &Ctx,
    raw: Option<&Spanned<String>>,
    c: &FlowConfig,
) -> Result<(), ConfigError> {
    let (folder_s, folder) = if c.layout.per_hour {
        (3_600, "an hour (3600 s, `per_hour_partition = true`)")
    } else {
        (86_400, "a day (86400 s)")
    };
    match raw {
        Some(v) if folder_s % c.interval_s != 0 => Err(cx.err(
            v.span(),
            format!(
                "{:?} does not divide {folder}: a window would span two flow folders; use a divisor, e.g. 1s, 10s, 60s, 600s, 3600s",
                v.get_ref()
            ),
        )),
        _ => Ok(()),
    }
}

/// `account_id`, `region`: folder names of the layout.
fn path_value(cx: &Ctx, v: Option<&Spanned<String>>) -> Result<Option<String>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    check_path_value(v.get_ref()).map_err(|m| cx.err(v.span(), m))?;
    Ok(Some(v.get_ref().clone()))
}

/// `parquet`: refused with `gzip` or `json` (they are about text files;
/// a Parquet file is compressed already), and with a format naming a
/// field twice (a Parquet file has one column per name).
fn parquet(cx: &Ctx, p: &Spanned<bool>, c: &FlowConfig) -> Result<bool, ConfigError> {
    if !*p.get_ref() {
        return Ok(false);
    }
    let other = [("gzip", c.gzip), ("json", c.json)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| format!("`{k} = true`"))
        .collect::<Vec<_>>();
    if !other.is_empty() {
        return Err(cx.err(
            p.span(),
            format!(
                "`parquet = true` cannot go with {}: Parquet files replace the text ones (and are compressed already); set `parquet = false` or remove {}",
                other.join(" and "),
                if other.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    for (i, name) in c.format.names.iter().enumerate() {
        if c.format.names[..i].contains(name) {
            return Err(cx.err(
                p.span(),
                format!("`parquet = true`: the format names the field `{name}` twice; a Parquet file has one column per field, so name each once"),
            ));
        }
    }
    Ok(true)
}

/// `interval`, `file_interval`: a whole number of seconds, at least 1.
fn whole_seconds(cx: &Ctx, v: Option<&Spanned<String>>, default: u64) -> Result<u64, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let d = parse_duration(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
    if d.as_secs() < 1 || d.subsec_nanos() != 0 {
        return Err(cx.err(
            s.span(),
            format!(
                "{:?} is not a whole number of seconds of at least 1s",
                s.get_ref()
            ),
        ));
    }
    Ok(d.as_secs())
}

/// One `[[flows.session]]`: which session (vni, source, Gateway Load
/// Balancer endpoint, any of them) and the metadata its records carry.
fn session(cx: &Ctx, s: RawFlowSession) -> Result<FlowSessionMeta, ConfigError> {
    let vni = s.vni.as_ref().map(|v| *v.get_ref());
    let source =
        match &s.source {
            None => None,
            Some(x) => Some(x.get_ref().parse().map_err(|_| {
                cx.err(x.span(), format!("{:?} is not an IP address", x.get_ref()))
            })?),
        };
    let endpoint = s.endpoint.as_ref().map(|e| endpoint(cx, e)).transpose()?;
    if vni.is_none() && source.is_none() && endpoint.is_none() {
        return Err(cx.at(
            1,
            "`flows.session`: ".into(),
            "an entry needs `vni`, `source`, `endpoint` or several of them, to say which session it describes".into(),
        ));
    }
    Ok(FlowSessionMeta {
        vni,
        source,
        endpoint,
        meta: FlowMetadata {
            interface_id: s.interface_id,
            instance_id: s.instance_id,
            account_id: s.account_id,
            vpc_id: s.vpc_id,
            subnet_id: s.subnet_id,
            region: s.region,
            az_id: s.az_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    /// Issue 18 item 1: `parquet = true` is a `[flows]` key; with `gzip` or
    /// `json` (text options) it is refused, naming the keys at fault, and so
    /// is a format naming a field twice (one column per field).
    #[test]
    fn flows_parquet_is_refused_with_gzip_or_json() {
        let c = parse("[flows]\nenabled = true\nparquet = true\n").unwrap();
        assert!(c.flows.parquet && !c.flows.gzip && !c.flows.json);
        assert!(
            !parse("[flows]\nparquet = false\ngzip = true\n")
                .unwrap()
                .flows
                .parquet
        );
        let e = parse("[flows]\ngzip = true\nparquet = true\n").unwrap_err();
        assert!(
            e.contains("t.toml:3") && e.contains("`parquet = true` cannot go with `gzip = true`"),
            "{e}"
        );
        let e = parse("[flows]\nparquet = true\njson = true\ngzip = true\n").unwrap_err();
        assert!(
            e.contains("cannot go with `gzip = true` and `json = true`"),
            "{e}"
        );
        let e = parse("[flows]\nformat = \"${srcaddr} ${srcaddr}\"\nparquet = true\n").unwrap_err();
        assert!(e.contains("names the field `srcaddr` twice"), "{e}");
    }

    /// Issue 18 item 2: the layout keys, named like AWS's options; the
    /// account and region become folders, so a value that cannot be one is
    /// refused, naming the key and what is accepted.
    #[test]
    fn flows_layout_keys() {
        let c = parse("[flows]\nenabled = true\n").unwrap();
        assert_eq!(c.flows.layout, crate::flows::FlowLayout::default());
        let c = parse(
            "[flows]\nhive_compatible_partitions = true\nper_hour_partition = true\naccount_id = \"123456789012\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let l = &c.flows.layout;
        assert!(l.hive && l.per_hour);
        assert_eq!(l.account_id.as_deref(), Some("123456789012"));
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        let e = parse("[flows]\naccount_id = \"12/34\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2")
                && e.contains("account_id")
                && e.contains("\"12/34\" cannot be a folder"),
            "{e}"
        );
        let e = parse("[flows]\nregion = \"..\"\n").unwrap_err();
        assert!(
            e.contains("region") && e.contains("expected 1 to 64"),
            "{e}"
        );
        assert!(parse("[flows]\nhive_compatible_partitions = \"yes\"\n").is_err());
    }

    /// Review of issue 18: a window never spans two folders, so an
    /// `interval` that does not divide the folder's length is refused.
    #[test]
    fn flows_interval_must_divide_the_folder() {
        for ok in ["1s", "7200s", "1d"] {
            assert!(
                parse(&format!("[flows]\ninterval = \"{ok}\"\n")).is_ok(),
                "{ok}"
            );
        }
        let e = parse("[flows]\ninterval = \"7s\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2") && e.contains("\"7s\" does not divide a day"),
            "{e}"
        );
        let e = parse("[flows]\nper_hour_partition = true\ninterval = \"7200s\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:3") && e.contains("does not divide an hour"),
            "{e}"
        );
        assert!(parse("[flows]\nper_hour_partition = true\ninterval = \"15min\"\n").is_ok());
    }
}
