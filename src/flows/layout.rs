//! Where a flow file goes: AWS's two S3 layouts for VPC Flow Logs, the
//! same under `DIR/flows/` on disk and under `PREFIX/` in S3
//! ([`crate::output::upload::key::flow_key`]), so a table or a query
//! written for AWS's flow logs reads mirrorcap's once its location is
//! changed.
//!
//! In: `[flows] hive_compatible_partitions`, `per_hour_partition`,
//! `account_id` and `region` (the last two else from instance metadata
//! when `[output.s3]` is set, see `app::daemon`), and the start of a
//! file's first window. Out: its folder, relative:
//!
//! - default: `AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/[HH/]`
//! - `hive_compatible_partitions = true`:
//!   `AWSLogs/aws-account-id=<account>/aws-service=vpcflowlogs/aws-region=<region>/year=YYYY/month=MM/day=DD/[hour=HH/]`
//!
//! (`[HH/]`, `[hour=HH/]` with `per_hour_partition = true`). An account
//! or region nobody gave is [`UNKNOWN`]. A record is in the folder of its
//! window's start; `interval` must divide the folder's day (or hour), so a
//! window never spans two (the config refuses others). A file holds the
//! windows that start in its folder: the writer starts a new file when a
//! window falls in another folder, whatever `file_interval` says, so a
//! query on a partition (`WHERE hour = 3`) sees every record of it.

use crate::output::template::UtcTime;

/// The account or region of the layout when neither the config nor
/// instance metadata gave it.
pub const UNKNOWN: &str = "unknown";

/// The `[flows]` keys that choose the layout, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowLayout {
    /// `hive_compatible_partitions`: `name=value` folders.
    pub hive: bool,
    /// `per_hour_partition`: an hour folder below the day.
    pub per_hour: bool,
    /// `account_id`: the account in the path (AWS: the flow log's owner).
    pub account_id: Option<String>,
    /// `region`: the region in the path (AWS: the flow log's).
    pub region: Option<String>,
}

impl FlowLayout {
    /// The folder of the records of the window starting at `start_s`
    /// (Unix seconds), relative, without a trailing `/`.
    pub fn folder(&self, start_s: u64) -> String {
        let t = UtcTime::from_unix(start_s);
        let mut s = self.base();
        let (y, m, d, h) = if self.hive {
            ("year=", "month=", "day=", "hour=")
        } else {
            ("", "", "", "")
        };
        s.push_str(&format!(
            "/{y}{:04}/{m}{:02}/{d}{:02}",
            t.year, t.month, t.day
        ));
        if self.per_hour {
            s.push_str(&format!("/{h}{:02}", t.hour));
        }
        s
    }

    /// The folder above the dates: `AWSLogs/<account>/vpcflowlogs/<region>`
    /// (or its Hive spelling), where a table's location points.
    pub fn base(&self) -> String {
        let account = self.account_id.as_deref().unwrap_or(UNKNOWN);
        let region = self.region.as_deref().unwrap_or(UNKNOWN);
        if self.hive {
            format!("AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}")
        } else {
            format!("AWSLogs/{account}/vpcflowlogs/{region}")
        }
    }

    /// The start (Unix seconds) of the partition holding `t_s`: its day,
    /// or its hour with `per_hour`.
    pub fn partition_start(&self, t_s: u64) -> u64 {
        let len = if self.per_hour { 3_600 } else { 86_400 };
        t_s - t_s % len
    }
}

/// Checks an `account_id` or `region` value for the layout: it becomes a
/// folder name (and part of S3 keys), so ASCII letters, digits, `-`, `_`
/// and `.` only, 1 to 64 of them, not `.` or `..`.
pub fn check_path_value(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} cannot be a folder of the flow log layout: expected 1 to 64 ASCII letters, digits, `-`, `_` or `.` (an account ID like \"123456789012\", a region like \"us-east-1\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-11-25 03:20:00 UTC.
    const T: u64 = 1_764_040_800;

    /// Issue 18 item 2: AWS's default and Hive-compatible layouts, with
    /// and without the hour, as AWS's documentation spells them.
    #[test]
    fn layouts_are_awss() {
        let mut l = FlowLayout {
            hive: false,
            per_hour: false,
            account_id: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
        };
        assert_eq!(
            l.folder(T),
            "AWSLogs/123456789012/vpcflowlogs/eu-west-1/2025/11/25"
        );
        l.per_hour = true;
        assert_eq!(
            l.folder(T),
            "AWSLogs/123456789012/vpcflowlogs/eu-west-1/2025/11/25/03"
        );
        l.hive = true;
        assert_eq!(
            l.folder(T),
            "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=2025/month=11/day=25/hour=03"
        );
        l.per_hour = false;
        assert_eq!(
            l.folder(T),
            "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=2025/month=11/day=25"
        );
        assert_eq!(l.partition_start(T), 1_764_028_800);
        l.per_hour = true;
        assert_eq!(l.partition_start(T), 1_764_039_600);
        assert_eq!(
            FlowLayout::default().folder(0),
            "AWSLogs/unknown/vpcflowlogs/unknown/1970/01/01"
        );
    }

    #[test]
    fn path_values_are_checked() {
        for good in ["123456789012", "us-east-1", "cn-north-1", "a.b_c"] {
            assert!(check_path_value(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "us east", &"1".repeat(65), "é"] {
            let e = check_path_value(bad).unwrap_err();
            assert!(e.contains("expected 1 to 64 ASCII letters"), "{e}");
        }
    }
}
