//! `mirrorcap flows`: top talkers from flow records, like the CloudWatch
//! Logs Insights queries operators run on VPC Flow Logs
//! (`stats sum(bytes), sum(packets) by srcaddr, dstaddr | sort ... | limit N`).
//!
//! In: flow files as mirrorcap writes them (a header line of field names,
//! then records; or JSON Lines, one object per record; `.gz` read
//! transparently; or Parquet, `flows.parquet`, and AWS's own Parquet flow
//! logs: columns named with `_` for `-`, nulls read as `-`), or captures of the
//! encapsulated traffic, from which the records are computed directly (one
//! window over the whole input): VXLAN, or VXLAN inside GENEVE to UDP
//! 6081 as a Gateway Load Balancer endpoint sends it (the defaults of
//! `geneve_ports` and `vxlan_ports`; the session is then the endpoint,
//! the mirrored ENI's address and the VNI, and records have the endpoint
//! in `endpoint`). Out: the groups with the most bytes, as a
//! table or JSON. NODATA records carry no traffic and are skipped.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}: cannot read: {1}")]
    Io(String, std::io::Error),
    #[error("{input}: not a readable Parquet flow file: {why}")]
    Parquet { input: String, why: String },
    #[error("{input}:{line}: {why}")]
    Bad {
        input: String,
        line: usize,
        why: String,
    },
    #[error(
        "--filter {0:?}: expected terms field=value separated by spaces, e.g. 'dstport=22 protocol=6'"
    )]
    Filter(String),
    #[error("{0}")]
    Capture(#[from] crate::capture::CaptureError),
}

/// One record: field name -> value.
pub type FlowRecord = HashMap<String, String>;

/// Reads flow records from a flow file or, when `input` is a capture,
/// computes them, counting each in `out`. On an error (a truncated
/// capture, a bad line) the records read before it are counted already, as
/// `replay` writes every record before a cut: the caller reports them and
/// exits 1.
pub fn read_records(input: &str, out: &mut Talkers) -> Result<(), ReportError> {
    let raw = std::fs::read(input).map_err(|e| ReportError::Io(input.into(), e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ReportError::Io(input.into(), e))?;
        out
    } else {
        raw
    };
    let magic = bytes
        .get(..4)
        .map(|m| u32::from_le_bytes(m.try_into().unwrap()));
    if matches!(
        magic,
        Some(0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 | 0x0a0d_0d0a)
    ) {
        return records_from_capture(input, &bytes, out);
    }
    if bytes.starts_with(b"PAR1") {
        return records_from_parquet(input, bytes, out);
    }
    if bytes.trim_ascii_start().starts_with(b"{") {
        return records_from_json_lines(input, &bytes, out);
    }
    let mut lines = bytes.lines();
    let header = match lines.next() {
        Some(Ok(h)) => h,
        _ => {
            return Err(ReportError::Bad {
                input: input.into(),
                line: 1,
                why: "empty: expected a header line of field names".into(),
            });
        }
    };
    let names: Vec<String> = header.split_whitespace().map(String::from).collect();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| ReportError::Io(input.into(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != names.len() {
            return Err(ReportError::Bad {
                input: input.into(),
                line: i + 2,
                why: format!(
                    "{} values for {} fields in the header",
                    values.len(),
                    names.len()
                ),
            });
        }
        let record = names
            .iter()
            .cloned()
            .zip(values.iter().map(|v| v.to_string()))
            .collect();
        out.add(&record).map_err(|why| ReportError::Bad {
            input: input.into(),
            line: i + 2,
            why,
        })?;
    }
    Ok(())
}

/// Reads a JSON Lines flow file (`flows.json`): one object per record,
/// its keys the field names (numbers as the text file writes them).
fn records_from_json_lines(
    input: &str,
    bytes: &[u8],
    out: &mut Talkers,
) -> Result<(), ReportError> {
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(|e| ReportError::Io(input.into(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| ReportError::Bad {
            input: input.into(),
            line: i + 1,
            why,
        };
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)
            .map_err(|e| bad(format!("not a JSON object of flow record fields: {e}")))?;
        let record = obj
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        out.add(&record).map_err(bad)?;
    }
    Ok(())
}

/// Reads a Parquet flow file: one record per row, its columns the fields
/// (`log_status` is `log-status`), a null `-`, numbers in decimal as the
/// text has them.
fn records_from_parquet(input: &str, bytes: Vec<u8>, out: &mut Talkers) -> Result<(), ReportError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field as V;
    let bad = |e: parquet::errors::ParquetError| ReportError::Parquet {
        input: input.into(),
        why: e.to_string(),
    };
    let file = SerializedFileReader::new(bytes::Bytes::from(bytes)).map_err(bad)?;
    // Only the columns the report uses are decoded (Parquet's point):
    // the grouping and filter fields, bytes, packets and log-status.
    let schema = file.metadata().file_metadata().schema();
    let used: Vec<_> = schema
        .get_fields()
        .iter()
        .filter(|c| out.uses(&super::parquet::field_name(c.name())))
        .cloned()
        .collect();
    // None of them in the file: every row still counts, as a record of
    // `-` values (decoding all columns gives the same report).
    let projection = if used.is_empty() {
        None
    } else {
        let group = parquet::schema::types::Type::group_type_builder(schema.name());
        Some(group.with_fields(used).build().map_err(bad)?)
    };
    for (i, row) in file.get_row_iter(projection).map_err(bad)?.enumerate() {
        let row = row.map_err(bad)?;
        let record = row
            .get_column_iter()
            .map(|(column, v)| {
                let v = match v {
                    V::Null => "-".to_string(),
                    V::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                (super::parquet::field_name(column), v)
            })
            .collect();
        out.add(&record).map_err(|why| ReportError::Parquet {
            input: input.into(),
            why: format!("row {}: {why}", i + 1),
        })?;
    }
    Ok(())
}

/// GENEVE in a capture: to these ports (`geneve_ports`' default), with the
/// VXLAN datagram to these inside (`vxlan_ports`' default).
const GENEVE_PORTS: &[u16] = &[6081];
const VXLAN_PORTS: &[u16] = &[4789];

/// Computes records from a capture: every kept inner IP packet, per session
/// (endpoint, source, VNI) and 5-tuple, over one window covering the whole capture (up to the
/// error, when it cannot be read to its end).
fn records_from_capture(input: &str, bytes: &[u8], out: &mut Talkers) -> Result<(), ReportError> {
    let cfg = crate::flows::FlowConfig {
        enabled: true,
        interval_s: u64::MAX / 4_000_000_000,
        format: crate::flows::FlowFormat::parse(
            "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${tcp-flags} ${type} ${flow-direction} ${endpoint}",
        )
        .expect("valid"),
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let counters = Arc::new(crate::telemetry::counters::Counters::default());
    let mut table = crate::flows::FlowTable::new(Arc::new(cfg.clone()), tx, counters);
    type Key = (Option<crate::wire::geneve::EndpointId>, IpAddr, u32);
    let mut sessions: HashMap<Key, u64> = HashMap::new();
    let mut reader = crate::capture::CaptureReader::new(bytes, input)?;
    let mut result = Ok(());
    loop {
        let rec = match reader.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        let Ok(udp) = crate::wire::outer::strip_outer(rec.linktype, rec.data) else {
            continue;
        };
        let (datagram, source, endpoint) = if GENEVE_PORTS.contains(&udp.dst_port) {
            match crate::wire::geneve::decap(udp.payload, VXLAN_PORTS) {
                Ok(g) => (g.datagram, g.source, g.meta.endpoint_id()),
                Err(_) => continue,
            }
        } else {
            (udp.payload, udp.source, None)
        };
        let Ok(v) = crate::wire::vxlan::Vxlan::new_checked(datagram) else {
            continue;
        };
        let next = sessions.len() as u64;
        let i = *sessions.entry((endpoint, source, v.vni())).or_insert(next);
        let own = crate::filter::OwnAddresses {
            outer: source,
            extra: Vec::new(),
        };
        let d = crate::wire::decode::decode(v.inner());
        table.add(i, v.vni(), source, endpoint, &own, &d, rec.ts_ns);
    }
    table.finish();
    drop(table);
    let names = cfg.format.names.clone();
    for batch in rx {
        for line in batch.lines.lines() {
            let record = names
                .iter()
                .map(|n| n.to_string())
                .zip(line.split_whitespace().map(String::from))
                .collect();
            // Rendered here from whole numbers: cannot fail.
            let _ = out.add(&record);
        }
    }
    result
}

/// `--filter 'dstport=22 protocol=6'`: every term must hold.
pub fn parse_filter(s: &str) -> Result<Vec<(String, String)>, ReportError> {
    s.split_whitespace()
        .map(|t| {
            t.split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ReportError::Filter(s.to_string()))
        })
        .collect()
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: Vec<String>,
    pub bytes: u64,
    pub packets: u64,
    pub records: u64,
}

/// Sums `bytes` and `packets` by the `by` fields over the records that match
/// `filter`, one record at a time as the inputs are read (memory holds the
/// groups, not the records); [`Talkers::top`] gives the groups with the
/// most bytes (then packets, then key).
pub struct Talkers {
    by: Vec<String>,
    filter: Vec<(String, String)>,
    groups: HashMap<Vec<String>, Group>,
}

impl Talkers {
    pub fn new(by: &[String], filter: &[(String, String)]) -> Talkers {
        Talkers {
            by: by.to_vec(),
            filter: filter.to_vec(),
            groups: HashMap::new(),
        }
    }

    /// Whether a record's `field` matters to the report (grouped by,
    /// filtered on, summed, or `log-status`).
    pub fn uses(&self, field: &str) -> bool {
        matches!(field, "bytes" | "packets" | "log-status")
            || self.by.iter().any(|f| f == field)
            || self.filter.iter().any(|(f, _)| f == field)
    }

    /// Counts one record; `bytes` or `packets` that is neither a whole
    /// number nor `-` is an error (a foreign file with another type).
    pub fn add(&mut self, r: &FlowRecord) -> Result<(), String> {
        if r.get("log-status").is_some_and(|s| s != "OK") {
            return Ok(());
        }
        if !self.filter.iter().all(|(k, v)| r.get(k) == Some(v)) {
            return Ok(());
        }
        let num = |f: &str| match r.get(f).map(String::as_str) {
            None | Some("-") => Ok(0),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("{f} = {v:?} is not a whole number of {f}")),
        };
        let (bytes, packets) = (num("bytes")?, num("packets")?);
        let key: Vec<String> = self
            .by
            .iter()
            .map(|f| r.get(f).cloned().unwrap_or_else(|| "-".into()))
            .collect();
        let g = self.groups.entry(key).or_insert_with_key(|key| Group {
            key: key.clone(),
            bytes: 0,
            packets: 0,
            records: 0,
        });
        // A sum past `u64::MAX` is refused, not wrapped to a wrong total
        // (the record is not counted).
        let sum = |f: &str, total: u64, v: u64| {
            total
                .checked_add(v)
                .ok_or_else(|| format!("sum({f}) of the group exceeds {}", u64::MAX))
        };
        let (b, p) = (
            sum("bytes", g.bytes, bytes)?,
            sum("packets", g.packets, packets)?,
        );
        (g.bytes, g.packets) = (b, p);
        g.records += 1;
        Ok(())
    }

    /// The `top` groups with the most bytes (then packets, then key).
    pub fn top(self, top: usize) -> Vec<Group> {
        let mut v: Vec<Group> = self.groups.into_values().collect();
        v.sort_by(|a, b| {
            (b.bytes, b.packets)
                .cmp(&(a.bytes, a.packets))
                .then_with(|| a.key.cmp(&b.key))
        });
        v.truncate(top);
        v
    }
}

/// The report as an aligned table.
pub fn render_table(by: &[String], groups: &[Group]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        by.iter()
            .cloned()
            .chain(["sum(bytes)".into(), "sum(packets)".into(), "records".into()])
            .collect(),
    ];
    for g in groups {
        rows.push(
            g.key
                .iter()
                .cloned()
                .chain([
                    g.bytes.to_string(),
                    g.packets.to_string(),
                    g.records.to_string(),
                ])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            // Padded by hand: `format!`'s width stops at 65535.
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.len())))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The report as JSON: an array of objects.
pub fn render_json(by: &[String], groups: &[Group]) -> String {
    let items: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            let mut m = serde_json::Map::new();
            for (k, v) in by.iter().zip(&g.key) {
                m.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            m.insert("bytes".into(), g.bytes.into());
            m.insert("packets".into(), g.packets.into());
            m.insert("records".into(), g.records.into());
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("serializable") + "\n"
}
