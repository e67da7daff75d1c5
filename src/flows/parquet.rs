//! Parquet flow files (`[flows] parquet = true`), as AWS delivers flow
//! logs to S3 in Parquet: one column per field of the configured format,
//! named and typed as AWS's.
//!
//! In: a window's records, as the text format renders them (`-` for a
//! value mirrorcap cannot know). Out: a `.parquet` file through
//! [`crate::output::part::PartFile`] (`.part` while written, renamed when
//! closed); rows are buffered in memory up to a row group
//! ([`ROW_GROUP_ROWS`] rows or [`ROW_GROUP_BYTES`] of values), then
//! written as one SNAPPY-compressed row group; the last one and the footer
//! at close. Dropped: a file whose write fails (no footer, no reader can
//! open it): it is deleted, and all its records are counted as lost by the
//! flow writer. A crash leaves a `.part` without a footer, as it leaves a
//! text `.part`.
//!
//! The schema (AWS's "Parquet data type" of each field; every column is
//! `OPTIONAL`, null where the text has `-`; the column name is the field's
//! name with `_` for `-`):
//!
//! | fields | column type |
//! | --- | --- |
//! | `version`, `srcport`, `dstport`, `protocol`, `tcp-flags`, `traffic-path` | `INT32` (`INT_32`) |
//! | `packets`, `bytes`, `start`, `end` | `INT64` (`INT_64`) |
//! | every other field (IDs, addresses, `action`, `log-status`, `type`, `region`, `az-id`, `flow-direction`, the ECS fields, `reject-reason`, mirrorcap's `endpoint`) | `BYTE_ARRAY` `STRING` (`UTF8`) |
//!
//! So `account-id` is the column `account_id`, `log-status` `log_status`,
//! `ecs-cluster-arn` `ecs_cluster_arn`: AWS's Athena DDL for Parquet flow
//! logs reads the files as they are.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::format::{Field, FlowFormat};
use crate::output::outdir::Dir;
use crate::output::part::PartFile;

/// Rows buffered before a row group is written: scans read row groups
/// whole, so they are large, and a flow file of a busy `file_interval`
/// still has several.
pub const ROW_GROUP_ROWS: usize = 1_000_000;
/// Bytes of buffered values (about what the row group weighs before
/// compression) before a row group is written, whatever the rows.
pub const ROW_GROUP_BYTES: usize = 128 << 20;

/// A column's type in AWS's Parquet flow logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `INT32`, annotated `INT_32`.
    Int32,
    /// `INT64`, annotated `INT_64`.
    Int64,
    /// `BYTE_ARRAY`, annotated `STRING` (`UTF8`).
    String,
}

/// The type of a field's column.
pub fn column_type(f: Field) -> ColumnType {
    match f {
        Field::Version
        | Field::SrcPort
        | Field::DstPort
        | Field::Protocol
        | Field::TcpFlags
        | Field::TrafficPath => ColumnType::Int32,
        Field::Packets | Field::Bytes | Field::Start | Field::End => ColumnType::Int64,
        _ => ColumnType::String,
    }
}

/// AWS's column name for a field name: `-` becomes `_`.
pub fn column_name(field: &str) -> String {
    field.replace('-', "_")
}

/// The field name of a column (`log_status` is `log-status`): what
/// `mirrorcap flows` calls it.
pub fn field_name(column: &str) -> String {
    column.replace('_', "-")
}

/// The Parquet message type of a format: its fields in order.
pub fn message_type(format: &FlowFormat) -> String {
    let mut s = String::from("message flow_log {\n");
    for (name, f) in format.names.iter().zip(&format.fields) {
        let t = match column_type(*f) {
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::String => "binary",
        };
        let a = match column_type(*f) {
            ColumnType::Int32 => "INTEGER(32,true)",
            ColumnType::Int64 => "INTEGER(64,true)",
            ColumnType::String => "STRING",
        };
        s.push_str(&format!("  optional {t} {} ({a});\n", column_name(name)));
    }
    s.push('}');
    s
}

/// The parsed schema of a format.
pub fn schema(format: &FlowFormat) -> Arc<Type> {
    Arc::new(
        parquet::schema::parser::parse_message_type(&message_type(format))
            .expect("field names are valid column names"),
    )
}

/// One column's buffered values; nulls only in `def` (0).
enum Values {
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    /// Values end to end, and where each ends.
    String(Vec<u8>, Vec<usize>),
}

struct Column {
    values: Values,
    /// Definition levels: 1 a value, 0 null.
    def: Vec<i16>,
}

/// The rows of the row group being filled, column by column.
struct Rows {
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
}

impl Rows {
    fn new(format: &FlowFormat) -> Rows {
        let columns = format
            .fields
            .iter()
            .map(|f| Column {
                values: match column_type(*f) {
                    ColumnType::Int32 => Values::Int32(Vec::new()),
                    ColumnType::Int64 => Values::Int64(Vec::new()),
                    ColumnType::String => Values::String(Vec::new(), Vec::new()),
                },
                def: Vec::new(),
            })
            .collect();
        Rows {
            columns,
            rows: 0,
            bytes: 0,
        }
    }

    /// Appends one record: its values in the format's order, as the text
    /// renders them (`-` for null; a number the text writes is a number).
    fn push(&mut self, record: &[String]) {
        for (c, v) in self.columns.iter_mut().zip(record) {
            let present = match &mut c.values {
                _ if v == "-" => false,
                Values::Int32(x) => v.parse().map(|n| x.push(n)).is_ok(),
                Values::Int64(x) => v.parse().map(|n| x.push(n)).is_ok(),
                Values::String(data, ends) => {
                    data.extend_from_slice(v.as_bytes());
                    ends.push(data.len());
                    true
                }
            };
            c.def.push(present.into());
            self.bytes += v.len() + 4;
        }
        self.rows += 1;
    }

    /// Writes the rows as one row group and empties the buffers.
    fn write_to<W: Write + Send>(
        &mut self,
        w: &mut SerializedFileWriter<W>,
    ) -> Result<(), ParquetError> {
        let mut rg = w.next_row_group()?;
        for c in &mut self.columns {
            let mut col = rg.next_column()?.expect("one column per field");
            let def = Some(&c.def[..]);
            match &mut c.values {
                Values::Int32(x) => {
                    col.typed::<Int32Type>().write_batch(x, def, None)?;
                    x.clear();
                }
                Values::Int64(x) => {
                    col.typed::<Int64Type>().write_batch(x, def, None)?;
                    x.clear();
                }
                Values::String(data, ends) => {
                    let all = Bytes::from(std::mem::take(data));
                    let mut start = 0;
                    let values: Vec<ByteArray> = ends
                        .iter()
                        .map(|&end| {
                            let v = ByteArray::from(all.slice(start..end));
                            start = end;
                            v
                        })
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, def, None)?;
                    ends.clear();
                }
            }
            c.def.clear();
            col.close()?;
        }
        rg.close()?;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

/// The `.part` file under a Parquet writer: bytes go to it whole or the
/// file is cut back ([`PartFile::append`]); taken back when closing or
/// discarding.
struct Sink(Option<PartFile>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.0.as_mut().ok_or_else(|| io::Error::other("closed"))?;
        f.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// No row group written yet: the `.part` is empty (and deleted, not
    /// published, if no record comes).
    Empty(PartFile),
    Writing(SerializedFileWriter<Sink>),
    /// A write failed; the `.part` was deleted.
    Failed,
}

/// A Parquet flow file being written.
pub(super) struct ParquetFile {
    part_path: PathBuf,
    schema: Arc<Type>,
    props: Arc<WriterProperties>,
    state: State,
    rows: Rows,
    /// Records in the file: in written row groups and buffered.
    records: u64,
    /// Row group bounds ([`ROW_GROUP_ROWS`], [`ROW_GROUP_BYTES`]; smaller
    /// in tests).
    max_rows: usize,
    max_bytes: usize,
}

impl ParquetFile {
    /// Creates `<name>.part` in `dir` for the records of `format`.
    pub(super) fn create(dir: Dir, name: String, format: &FlowFormat) -> io::Result<ParquetFile> {
        let part = PartFile::create(dir, name)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("mirrorcap {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetFile {
            part_path: part.part_path(),
            schema: schema(format),
            props: Arc::new(props),
            state: State::Empty(part),
            rows: Rows::new(format),
            records: 0,
            max_rows: ROW_GROUP_ROWS,
            max_bytes: ROW_GROUP_BYTES,
        })
    }

    /// The path of the `.part` being written.
    pub(super) fn part_path(&self) -> PathBuf {
        self.part_path.clone()
    }

    /// Records in the file (lost with it when a write fails).
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Appends records (`values` holds `fields` values per record),
    /// writing a row group whenever one is full; true when one was (bytes
    /// reached the file, not only memory). On an error the file is
    /// deleted and every record in it is lost.
    pub(super) fn push(&mut self, values: &[String], fields: usize) -> io::Result<bool> {
        let mut wrote = false;
        for record in values.chunks(fields) {
            self.rows.push(record);
            self.records += 1;
            if self.rows.rows >= self.max_rows || self.rows.bytes >= self.max_bytes {
                self.write_row_group()?;
                wrote = true;
            }
        }
        Ok(wrote)
    }

    fn write_row_group(&mut self) -> io::Result<()> {
        if self.rows.rows == 0 {
            return Ok(());
        }
        let mut w = match std::mem::replace(&mut self.state, State::Failed) {
            State::Empty(part) => {
                let sink = Sink(Some(part));
                match SerializedFileWriter::new(sink, self.schema.clone(), self.props.clone()) {
                    Ok(w) => w,
                    // The sink is gone with the writer (its descriptor
                    // closed): the `.part`, at most the magic, goes by
                    // its path, as the file it would have become does.
                    Err(e) => {
                        let _ = std::fs::remove_file(&self.part_path);
                        return Err(io_error(e));
                    }
                }
            }
            State::Writing(w) => w,
            State::Failed => return Err(io::Error::other("an earlier write failed")),
        };
        match self.rows.write_to(&mut w) {
            Ok(()) => {
                self.state = State::Writing(w);
                Ok(())
            }
            Err(e) => {
                if let Some(part) = w.inner_mut().0.take() {
                    part.discard();
                }
                Err(io_error(e))
            }
        }
    }

    /// Writes the last row group and the footer, syncs and renames the
    /// file to its final name; one with no record is removed instead, and
    /// so is one that fails (its records are lost).
    /// Returns the final path and size when published.
    pub(super) fn close(mut self) -> io::Result<Option<(PathBuf, u64)>> {
        self.write_row_group()?;
        match self.state {
            State::Empty(part) => part.close(),
            State::Writing(mut w) => {
                let part = match w.finish() {
                    Ok(_) => w.inner_mut().0.take(),
                    Err(e) => {
                        if let Some(part) = w.inner_mut().0.take() {
                            part.discard();
                        }
                        return Err(io_error(e));
                    }
                };
                part.expect("the sink holds the file").close()
            }
            State::Failed => Err(io::Error::other("an earlier write failed")),
        }
    }
}

/// A Parquet error as the I/O error it carries (disk full), or as one.
fn io_error(e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::basic::{ConvertedType, Repetition, Type as PhysicalType};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// AWS's Parquet flow-log schema, from the "Parquet data type" of each
    /// field in the VPC user guide ("Flow log records", "Available
    /// fields"), versions 2 to 8: field -> column -> type.
    const AWS: &[(&str, &str, &str)] = &[
        ("version", "version", "INT_32"),
        ("account-id", "account_id", "STRING"),
        ("interface-id", "interface_id", "STRING"),
        ("srcaddr", "srcaddr", "STRING"),
        ("dstaddr", "dstaddr", "STRING"),
        ("srcport", "srcport", "INT_32"),
        ("dstport", "dstport", "INT_32"),
        ("protocol", "protocol", "INT_32"),
        ("packets", "packets", "INT_64"),
        ("bytes", "bytes", "INT_64"),
        ("start", "start", "INT_64"),
        ("end", "end", "INT_64"),
        ("action", "action", "STRING"),
        ("log-status", "log_status", "STRING"),
        ("vpc-id", "vpc_id", "STRING"),
        ("subnet-id", "subnet_id", "STRING"),
        ("instance-id", "instance_id", "STRING"),
        ("tcp-flags", "tcp_flags", "INT_32"),
        ("type", "type", "STRING"),
        ("pkt-srcaddr", "pkt_srcaddr", "STRING"),
        ("pkt-dstaddr", "pkt_dstaddr", "STRING"),
        ("region", "region", "STRING"),
        ("az-id", "az_id", "STRING"),
        ("sublocation-type", "sublocation_type", "STRING"),
        ("sublocation-id", "sublocation_id", "STRING"),
        ("pkt-src-aws-service", "pkt_src_aws_service", "STRING"),
        ("pkt-dst-aws-service", "pkt_dst_aws_service", "STRING"),
        ("flow-direction", "flow_direction", "STRING"),
        ("traffic-path", "traffic_path", "INT_32"),
        ("ecs-cluster-arn", "ecs_cluster_arn", "STRING"),
        ("ecs-cluster-name", "ecs_cluster_name", "STRING"),
        (
            "ecs-container-instance-arn",
            "ecs_container_instance_arn",
            "STRING",
        ),
        (
            "ecs-container-instance-id",
            "ecs_container_instance_id",
            "STRING",
        ),
        ("ecs-container-id", "ecs_container_id", "STRING"),
        (
            "ecs-second-container-id",
            "ecs_second_container_id",
            "STRING",
        ),
        ("ecs-service-name", "ecs_service_name", "STRING"),
        (
            "ecs-task-definition-arn",
            "ecs_task_definition_arn",
            "STRING",
        ),
        ("ecs-task-arn", "ecs_task_arn", "STRING"),
        ("ecs-task-id", "ecs_task_id", "STRING"),
        ("reject-reason", "reject_reason", "STRING"),
    ];

    /// Writes `records` (text values) to a Parquet flow file in a temp
    /// dir, row groups of `max_rows`, and returns its bytes.
    fn write(format: &FlowFormat, records: &[Vec<&str>], max_rows: usize) -> Bytes {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path(), false, 0).unwrap();
        let mut f = ParquetFile::create(dir, "f.parquet".into(), format).unwrap();
        f.max_rows = max_rows;
        let values: Vec<String> = records.iter().flatten().map(|v| v.to_string()).collect();
        f.push(&values, format.fields.len()).unwrap();
        assert_eq!(f.records(), records.len() as u64);
        let (path, _) = f.close().unwrap().expect("published");
        assert!(!tmp.path().join("f.parquet.part").exists());
        Bytes::from(std::fs::read(path).unwrap())
    }

    /// Issue 18 item 2 (the schema table test): the column of every field
    /// of the v2-v8 formats has AWS's name, physical type and annotation,
    /// as written in a file's footer; every field of the custom format
    /// but mirrorcap's own `endpoint` is in AWS's table.
    #[test]
    fn parquet_columns_are_named_and_typed_as_aws_parquet_flow_logs() {
        let all: Vec<String> = AWS.iter().map(|(f, _, _)| format!("${{{f}}}")).collect();
        let format = FlowFormat::parse(&all.join(" ")).unwrap();
        assert_eq!(format.version, 8);
        let known: Vec<&str> = super::super::format::field_names()
            .filter(|n| *n != "endpoint")
            .collect();
        let table: Vec<&str> = AWS.iter().map(|(f, _, _)| *f).collect();
        assert_eq!(known, table, "every AWS field has a row in the table");

        let bytes = write(&format, &[vec!["-"; AWS.len()]], 10);
        let file = SerializedFileReader::new(bytes).unwrap();
        let schema = file.metadata().file_metadata().schema_descr_ptr();
        assert_eq!(schema.num_columns(), AWS.len());
        for (i, (field, column, aws_type)) in AWS.iter().enumerate() {
            let c = schema.column(i);
            let t = c.self_type();
            let got = (
                c.name(),
                c.physical_type(),
                c.converted_type(),
                t.get_basic_info().repetition(),
            );
            let want = match *aws_type {
                "INT_32" => (PhysicalType::INT32, ConvertedType::INT_32),
                "INT_64" => (PhysicalType::INT64, ConvertedType::INT_64),
                "STRING" => (PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
                other => panic!("{other}"),
            };
            assert_eq!(
                got,
                (*column, want.0, want.1, Repetition::OPTIONAL),
                "{field}"
            );
        }
        // mirrorcap's own field is a string column too.
        let f = FlowFormat::parse("${srcaddr} ${endpoint}").unwrap();
        assert!(message_type(&f).contains("optional binary endpoint (STRING);"));
    }

    /// Issue 18 item 1: rows are cut into row groups of the bound (and the
    /// rest at close), values read back with nulls where the text has `-`;
    /// a file that got no record is removed, not published.
    #[test]
    fn parquet_rows_go_in_bounded_row_groups_and_read_back() {
        use parquet::record::Field as V;
        let format = FlowFormat::parse("${srcaddr} ${srcport} ${packets} ${log-status}").unwrap();
        let recs: Vec<Vec<&str>> = (0..7)
            .map(|i| {
                if i == 3 {
                    vec!["-", "-", "-", "NODATA"]
                } else {
                    vec!["10.0.0.1", "443", "12", "OK"]
                }
            })
            .collect();
        let file = SerializedFileReader::new(write(&format, &recs, 3)).unwrap();
        let groups: Vec<i64> = file
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [3, 3, 1]);
        let rows: Vec<Vec<V>> = file
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().into_columns().into_iter().map(|c| c.1).collect())
            .collect();
        assert_eq!(rows.len(), 7);
        assert_eq!(
            rows[0],
            [
                V::Str("10.0.0.1".into()),
                V::Int(443),
                V::Long(12),
                V::Str("OK".into())
            ]
        );
        assert_eq!(
            rows[3],
            [V::Null, V::Null, V::Null, V::Str("NODATA".into())]
        );

        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path(), false, 0).unwrap();
        let f = ParquetFile::create(dir, "e.parquet".into(), &format).unwrap();
        assert_eq!(f.close().unwrap(), None);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
