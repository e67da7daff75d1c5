//! `[output.s3]` and `host_id`: closed capture and flow files uploaded to
//! S3 (or any S3-compatible store). In: the raw table; out: an
//! [`S3Config`] or the positioned error naming the key, the value and what
//! is accepted. What needs the network (the region from instance
//! metadata, `{host}` from the instance ID) is resolved when the daemon
//! starts, not here.

use std::time::Duration;

use super::ConfigError;
use super::context::Ctx;
use super::raw::{RawS3, Spanned};
use super::sizes::{SizeValue, parse_duration, parse_size};
use crate::flows::FlowConfig;
use crate::output::upload::key::{KeyContext, KeyTemplate, MAX_KEY_LEN, flow_key};
pub use crate::output::upload::settings::*;

/// `host_id`: ASCII letters, digits, `.`, `_`, `-`; 1 to 64 bytes.
pub(super) fn host_id(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
) -> Result<Option<String>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    let h = s.get_ref();
    if h.is_empty()
        || h.len() > 64
        || !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(cx.err(
            s.span(),
            format!("{h:?}: expected 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it goes into S3 keys as {{host}})"),
        ));
    }
    Ok(Some(h.clone()))
}

/// Validates `[output.s3]`, key by key.
pub(super) fn s3(
    cx: &Ctx,
    raw: Option<Spanned<RawS3>>,
    flows: &FlowConfig,
) -> Result<Option<S3Config>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let r = raw.into_inner();
    let bucket = bucket(cx, r.bucket.as_ref(), span.clone())?;
    let prefix = match &r.prefix {
        None => String::new(),
        Some(p) => {
            let v = p.get_ref().trim_matches('/');
            if v.split('/').any(|c| c.is_empty() || c == "." || c == "..") && !v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | '/'))
            {
                return Err(cx.err(
                    p.span(),
                    format!("{:?}: expected ASCII letters, digits, `.`, `_`, `-`, `=` and `/` between non-empty components", p.get_ref()),
                ));
            }
            v.to_owned()
        }
    };
    let region = match &r.region {
        None => None,
        Some(s) => {
            let v = s.get_ref();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(cx.err(
                    s.span(),
                    format!("{v:?} is not a region name: expected e.g. \"eu-west-1\""),
                ));
            }
            Some(v.clone())
        }
    };
    let endpoint = url(cx, r.endpoint.as_ref(), "an S3 endpoint", true)?;
    let metadata_endpoint = url(
        cx,
        r.metadata_endpoint.as_ref(),
        "a metadata endpoint",
        false,
    )?;
    let key_template = match &r.key_template {
        None => KeyTemplate::default(),
        Some(s) => KeyTemplate::parse(s.get_ref())
            .map_err(|why| cx.err(s.span(), format!("{:?}: {why}", s.get_ref())))?,
    };
    let longest = key_template.longest_key(&prefix);
    let longest_flow = longest_flow_key(&prefix, flows);
    if longest.max(longest_flow) > MAX_KEY_LEN {
        let why = if longest >= longest_flow {
            format!(
                "keys can be {longest} bytes long with this prefix ({} bytes) and key_template, over S3's {MAX_KEY_LEN}: shorten them",
                prefix.len()
            )
        } else {
            format!(
                "flow file keys can be {longest_flow} bytes long with this prefix ({} bytes) and the [flows] layout, over S3's {MAX_KEY_LEN}: shorten the prefix",
                prefix.len()
            )
        };
        return Err(match (&r.prefix, &r.key_template) {
            (Some(p), _) => cx.err(p.span(), why),
            (None, Some(k)) => cx.err(k.span(), why),
            (None, None) => cx.err(span, why),
        });
    }
    let storage_class = match &r.storage_class {
        None => None,
        Some(s) => {
            let v = s.get_ref();
            if !STORAGE_CLASSES.contains(&v.as_str()) {
                return Err(cx.err(
                    s.span(),
                    format!(
                        "{v:?} is not an S3 storage class: expected one of {}",
                        STORAGE_CLASSES.join(", ")
                    ),
                ));
            }
            Some(v.clone())
        }
    };
    let upload_jobs = match &r.upload_jobs {
        None => DEFAULT_UPLOAD_JOBS,
        Some(s) => {
            let v = *s.get_ref() as usize;
            if !(1..=MAX_UPLOAD_JOBS).contains(&v) {
                return Err(cx.err(
                    s.span(),
                    format!("{v} is out of range: expected 1 to {MAX_UPLOAD_JOBS} uploads at once"),
                ));
            }
            v
        }
    };
    let size = |v: &Option<Spanned<SizeValue>>,
                default: u64,
                what: &str|
     -> Result<u64, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        let n = parse_size(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&n) {
            return Err(cx.err(
                s.span(),
                format!("{n} bytes is out of range for {what}: expected 5MiB to 256MiB (S3 refuses parts under 5 MiB)"),
            ));
        }
        Ok(n)
    };
    let multipart_threshold = size(
        &r.multipart_threshold,
        DEFAULT_MULTIPART_THRESHOLD,
        "the multipart threshold",
    )?;
    let part_size = size(&r.part_size, DEFAULT_PART_SIZE, "a part")?;
    let duration =
        |v: &Option<Spanned<String>>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s.get_ref()).map_err(|m| cx.err(s.span(), m)),
            }
        };
    Ok(Some(S3Config {
        bucket,
        prefix,
        region,
        endpoint,
        key_template,
        keep_local: r.keep_local.unwrap_or(false),
        storage_class,
        upload_jobs,
        multipart_threshold,
        part_size,
        unhealthy_after: duration(&r.unhealthy_after, DEFAULT_UNHEALTHY_AFTER)?,
        stop_wait: duration(&r.stop_wait, DEFAULT_STOP_WAIT)?,
        metadata_endpoint,
    }))
}

/// `bucket`: required; S3's naming rules (3 to 63 lowercase letters,
/// digits, `.` and `-`, starting and ending with a letter or digit).
fn bucket(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
    table: std::ops::Range<usize>,
) -> Result<String, ConfigError> {
    let Some(s) = v else {
        return Err(cx.at(
            cx.line(table),
            "`output.s3`: ".into(),
            "`bucket` is missing: name the S3 bucket to upload to".into(),
        ));
    };
    let b = s.get_ref();
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len())
        || !b.chars().all(ok_char)
        || !ends_ok(b.chars().next())
        || !ends_ok(b.chars().last())
    {
        return Err(cx.err(
            s.span(),
            format!("{b:?} is not an S3 bucket name: expected 3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit"),
        ));
    }
    Ok(b.clone())
}

/// The longest key a flow file of `flows` can have under `prefix` (0
/// with flows off): the writer's longest folder and name
/// ([`crate::flows::writer::longest_path`]), a 64-byte `{host}`, the
/// longest run ID.
fn longest_flow_key(prefix: &str, flows: &FlowConfig) -> usize {
    if !flows.enabled {
        return 0;
    }
    let (folder, name) = crate::flows::writer::longest_path(&flows.layout);
    let cx = KeyContext {
        prefix: prefix.to_owned(),
        host: "h".repeat(64),
        run: format!("99991231T235959Z-{}", u32::MAX),
    };
    flow_key(&cx, &folder, &name).len()
}

/// An `http://` URL with a host, or also `https://` when `https_ok`
/// (plain HTTP is accepted because it is written explicitly; the AWS
/// default endpoint is always HTTPS).
fn url(
    cx: &Ctx,
    v: Option<&Spanned<String>>,
    what: &str,
    https_ok: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    let u = s.get_ref();
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://").filter(|_| https_ok));
    let schemes = if https_ok {
        "http://HOST[:PORT] or https://HOST[:PORT]"
    } else {
        "http://HOST[:PORT]"
    };
    match rest {
        Some(r) if !r.is_empty() && !r.trim_end_matches('/').contains('/') && !r.contains(' ') => {
            Ok(Some(u.trim_end_matches('/').to_owned()))
        }
        _ => Err(cx.err(s.span(), format!("{u:?} is not {what}: expected {schemes}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::parse;

    /// Review of issue 16: `on_rotate` with `[output.s3]` is refused (the
    /// hook could move a file the uploader reads, or read one it deletes),
    /// naming the line.
    #[test]
    fn on_rotate_with_output_s3_is_refused() {
        let e = parse(
            "on_rotate = [\"/usr/bin/true\", \"{path}\"]\n[output.s3]\nbucket = \"my-caps\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains(":1: `on_rotate`") && e.contains("cannot be used with [output.s3]"),
            "{e}"
        );
        parse("on_rotate = [\"/usr/bin/true\", \"{path}\"]\n").unwrap();
    }

    /// Review of issue 18: flow file keys (`PREFIX/AWSLogs/…`) are longer
    /// than capture keys; a prefix that leaves capture keys under S3's
    /// 1024 bytes but not flow keys is refused when flows are on, naming
    /// the prefix, instead of every flow upload being refused later.
    #[test]
    fn a_prefix_too_long_for_flow_keys_is_refused_with_flows_on() {
        let prefix = "p".repeat(760);
        let s3 = format!("[output.s3]\nbucket = \"b12\"\nprefix = \"{prefix}\"\n");
        parse(&s3).unwrap();
        let e = parse(&format!("{s3}[flows]\nenabled = true\n")).unwrap_err();
        assert!(
            e.contains("t.toml:3: `output.s3.prefix`") && e.contains("flow file keys can be"),
            "{e}"
        );
        // The longest flow key counted is one that can occur.
        let mut flows = FlowConfig {
            enabled: true,
            json: true,
            ..Default::default()
        };
        flows.layout.hive = true;
        flows.layout.per_hour = true;
        let longest = longest_flow_key("p", &flows);
        assert!((350..=400).contains(&longest), "{longest}");
    }

    /// Issue 16, item 1: `[output.s3]` with only a bucket takes the
    /// documented defaults; every key is read.
    #[test]
    fn output_s3_defaults_and_every_key() {
        assert!(Config::default_config().s3.is_none());
        let c = parse("[output.s3]\nbucket = \"my-caps\"\n").unwrap();
        let s = c.s3.unwrap();
        assert_eq!(s.bucket, "my-caps");
        assert_eq!(s.prefix, "");
        assert_eq!((s.region.as_deref(), s.endpoint.as_deref()), (None, None));
        assert_eq!(s.key_template, KeyTemplate::default());
        assert!(!s.keep_local);
        assert_eq!(s.upload_jobs, DEFAULT_UPLOAD_JOBS);
        assert_eq!((s.multipart_threshold, s.part_size), (16 << 20, 8 << 20));
        assert_eq!(
            (s.unhealthy_after, s.stop_wait),
            (DEFAULT_UNHEALTHY_AFTER, DEFAULT_STOP_WAIT)
        );
        let c = parse(
            "host_id = \"target-a\"\n[output]\nrotate_size = \"1GiB\"\n[output.s3]\nbucket = \"my.caps-1\"\nprefix = \"/mirror/prod/\"\nregion = \"eu-west-1\"\nendpoint = \"http://127.0.0.1:9000/\"\nkey_template = \"{prefix}/{host}/{endpoint_dir}{vni}/{source}/{date}/{start}-{seq}.{ext}\"\nkeep_local = true\nstorage_class = \"GLACIER_IR\"\nupload_jobs = 8\nmultipart_threshold = \"64MiB\"\npart_size = \"16MiB\"\nunhealthy_after = \"10min\"\nstop_wait = \"5s\"\nmetadata_endpoint = \"http://127.0.0.1:1338\"\n",
        )
        .unwrap();
        assert_eq!(c.host_id.as_deref(), Some("target-a"));
        let s = c.s3.unwrap();
        assert_eq!(s.prefix, "mirror/prod");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.storage_class.as_deref(), Some("GLACIER_IR"));
        assert_eq!((s.upload_jobs, s.part_size), (8, 16 << 20));
        assert_eq!(s.stop_wait, Duration::from_secs(5));
        assert!(s.keep_local);
    }

    /// Issue 16, item 1: each bad `[output.s3]` value is refused with the
    /// line, the key, the value and what is accepted.
    #[test]
    fn output_s3_errors_name_line_key_value_and_what_is_accepted() {
        let cases = [
            (
                "[output.s3]\nprefix = \"x\"\n",
                "t.toml:1: `output.s3`: `bucket` is missing",
            ),
            (
                "[output.s3]\nbucket = \"My_Bucket\"\n",
                "t.toml:2: `output.s3.bucket`: \"My_Bucket\" is not an S3 bucket name: expected 3 to 63 lowercase",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nstorage_class = \"COLD\"\n",
                "t.toml:3: `output.s3.storage_class`: \"COLD\" is not an S3 storage class: expected one of STANDARD,",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nendpoint = \"ftp://x\"\n",
                "t.toml:3: `output.s3.endpoint`: \"ftp://x\" is not an S3 endpoint: expected http://HOST[:PORT] or https://HOST[:PORT]",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nupload_jobs = 0\n",
                "t.toml:3: `output.s3.upload_jobs`: 0 is out of range: expected 1 to 64",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\npart_size = \"1MiB\"\n",
                "t.toml:3: `output.s3.part_size`: 1048576 bytes is out of range for a part: expected 5MiB to 256MiB",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nregion = \"EU West\"\n",
                "t.toml:3: `output.s3.region`: \"EU West\" is not a region name",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nkey_template = \"{vni}/{source}/{start}-{seq}.{ext}\"\n",
                "t.toml:3: `output.s3.key_template`: \"{vni}/{source}/{start}-{seq}.{ext}\": must contain {host}",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nprefix = \"a//b\"\n",
                "t.toml:3: `output.s3.prefix`: \"a//b\": expected",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nunhealthy_after = \"soon\"\n",
                "t.toml:3: `output.s3.unhealthy_after`: \"soon\" is not a duration",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nmetadata_endpoint = \"https://x\"\n",
                "t.toml:3: `output.s3.metadata_endpoint`: \"https://x\" is not a metadata endpoint: expected http://HOST[:PORT]",
            ),
            (
                "[output.s3]\nbucket = \"b12\"\nacl = \"public\"\n",
                "t.toml:3: `output.s3.acl`: unknown key `acl`",
            ),
            (
                "host_id = \"a b\"\n",
                "t.toml:1: `host_id`: \"a b\": expected 1 to 64 ASCII letters",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}\n got: {e}\nwant: {want}");
        }
    }
}
