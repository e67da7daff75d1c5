//! The S3 tests' harness (tests/s3.rs, tests/extract.rs): a network
//! namespace of the test's own with only loopback, moto's standalone S3
//! server in it, boto3 to make buckets, put and get objects, and the
//! documented default key of a local capture file.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::session_of;

pub const BUCKET: &str = "caps";

/// Moves this thread (and every process and thread it starts from now
/// on) into a new network namespace with only loopback, up.
pub fn private_network() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: each S3 test runs in a network namespace of its own"
    );
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2) is needed");
    assert!(st.success());
    // Nothing but loopback: EC2's metadata address cannot be reached.
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(
        TcpStream::connect_timeout(
            &"169.254.169.254:80".parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err()
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's standalone S3 server on 127.0.0.1:`port` (in memory).
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    pub fn start(port: u16) -> Moto {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is needed: pip install 'moto[server]' (scripts/test does)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child: Some(child),
            port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private network (see [`private_network`]) with moto in it and the
/// bucket [`BUCKET`] made.
pub fn s3_server() -> Moto {
    private_network();
    let moto = Moto::start(free_port());
    s3py(&moto.endpoint(), &["mb", BUCKET]);
    moto
}

/// boto3 (installed with moto) against `endpoint`: `mb` makes the bucket,
/// `get OUT` downloads every object under OUT/<key> and prints the keys,
/// `put KEY FILE...` uploads each FILE under its KEY, `mpu` prints the
/// multipart uploads in progress.
pub const S3PY: &str = r#"
import boto3, json, os, sys
ep, cmd, bucket = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
if cmd == "mb":
    s3.create_bucket(Bucket=bucket)
    print("[]")
elif cmd == "get":
    out, keys = sys.argv[4], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            k = o["Key"]
            keys.append(k)
            if out != "-":
                p = os.path.join(out, k)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                s3.download_file(bucket, k, p)
    print(json.dumps(keys))
elif cmd == "put":
    args = sys.argv[4:]
    for k, f in zip(args[0::2], args[1::2]):
        s3.upload_file(f, bucket, k)
    print("[]")
elif cmd == "mpu":
    print(json.dumps([u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]))
"#;

pub fn s3py(endpoint: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", S3PY, endpoint])
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The documented default key of the local file `file` (default local
/// template `DIR/<vni>/<source>/<start>-<seq>.pcap`) for `host`:
/// `PREFIX/vni=<vni>/source=<addr>/year=/month=/day=/hour=/<host>-<start>-<seq>.pcap`.
pub fn expected_key(dir: &Path, file: &Path, prefix: &str, host: &str) -> String {
    let (vni, source) = session_of(dir, file);
    let name = file.file_name().unwrap().to_str().unwrap();
    let start = &name[..16]; // 20261130T174512Z
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{p}vni={vni}/source={source}/year={}/month={}/day={}/hour={}/{host}-{name}",
        &start[0..4],
        &start[4..6],
        &start[6..8],
        &start[9..11]
    )
}
