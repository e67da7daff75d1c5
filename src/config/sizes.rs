//! Sizes and durations as written in the config. In: a TOML value or a
//! string; out: bytes or a `Duration`, or a message saying what is
//! accepted (the caller adds file, line and key). Sizes are a whole number
//! of bytes or a string with a unit: `B`, `KiB MiB GiB TiB` (1024-based)
//! or `kB MB GB TB` (1000-based); a bare `K`/`M`/`G` is refused as
//! ambiguous. Durations use humantime's syntax.

use std::time::Duration;

use serde::Deserialize;

/// A size as written: a number of bytes or a string with a unit; any
/// other TOML value (a negative or fractional number, a boolean) is kept
/// as written, so the check names it with its key and line.
#[derive(Clone)]
pub(super) enum SizeValue {
    Bytes(u64),
    Text(String),
    Other(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of bytes or a string such as \"512MiB\"")
            }
            fn visit_u64<E>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SizeValue, E> {
                Ok(u64::try_from(v)
                    .map_or_else(|_| SizeValue::Other(v.to_string()), SizeValue::Bytes))
            }
            fn visit_f64<E>(self, v: f64) -> Result<SizeValue, E> {
                Ok(SizeValue::Other(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<SizeValue, E> {
                Ok(SizeValue::Other(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a size: bytes, or a number with a unit (see the module doc).
pub fn parse_size_str(s: &str) -> Result<u64, String> {
    parse_size(&SizeValue::Text(s.to_string()))
}

pub(super) fn parse_size(v: &SizeValue) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("B", 1),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("kB", 1_000),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
    ];
    let accepted = "expected a number of bytes, or a number with a unit B, KiB, MiB, GiB, TiB (1024-based) or kB, MB, GB, TB (1000-based), e.g. \"512MiB\"";
    let s = match v {
        SizeValue::Bytes(n) => return Ok(*n),
        SizeValue::Text(s) => s.trim(),
        SizeValue::Other(v) => return Err(format!("{v} is not a size: {accepted}")),
    };
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].trim());
    let Some(&(_, mult)) = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .or(if unit.is_empty() {
            Some(&("", 1))
        } else {
            None
        })
    else {
        return Err(format!("{s:?} has an unknown unit {unit:?}: {accepted}"));
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: {accepted}"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range: {accepted}"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration in humantime's syntax.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!(
            "{s:?} is not a duration ({e}): expected e.g. \"500ms\", \"30s\", \"15min\", \"1h\""
        )
    })
}
