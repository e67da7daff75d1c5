//! `[output.s3]` as the uploader takes it: the validated settings (the
//! config layer reads, checks and re-exports them) and their defaults and
//! limits, in one place for both.

use std::time::Duration;

use crate::output::upload::key::KeyTemplate;

/// `upload_jobs` default and most accepted.
pub const DEFAULT_UPLOAD_JOBS: usize = 4;
pub const MAX_UPLOAD_JOBS: usize = 64;
/// Files above this size go up in parts (`multipart_threshold`).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The size of each part (`part_size`); S3 takes 5 MiB to 5 GiB, and at
/// most 10,000 parts (so 8 MiB parts carry files up to 78 GiB).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 256 << 20;
/// `/healthz` turns 503 when a file has waited this long (`unhealthy_after`).
pub const DEFAULT_UNHEALTHY_AFTER: Duration = Duration::from_secs(300);
/// At stop, the longest wait for pending uploads (`stop_wait`): within
/// the unit's `TimeoutStopSec` (20 s) with time to spare.
pub const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(15);

/// S3's storage classes (`x-amz-storage-class`).
pub const STORAGE_CLASSES: [&str; 10] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
];

/// `[output.s3]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Without leading or trailing `/`; empty = the bucket's root.
    pub prefix: String,
    /// `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, then the instance's
    /// region from instance metadata, at start.
    pub region: Option<String>,
    /// Another S3-compatible endpoint (`http://` allowed, as it is
    /// written explicitly); `None` = AWS's.
    pub endpoint: Option<String>,
    pub key_template: KeyTemplate,
    /// Keep the local file after its upload (retention deletes it later,
    /// before any file not uploaded yet).
    pub keep_local: bool,
    pub storage_class: Option<String>,
    /// Uploads at once.
    pub upload_jobs: usize,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub unhealthy_after: Duration,
    pub stop_wait: Duration,
    /// The instance metadata endpoint (`{host}`, region, instance role);
    /// `None` = `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else EC2's.
    pub metadata_endpoint: Option<String>,
}
