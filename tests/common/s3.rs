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

/// An HTTP message's head (through the blank line), read byte by byte so
/// that nothing of the body is taken.
pub fn read_head(c: &mut impl std::io::Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    head
}

/// A loopback HTTP proxy before the S3 server on `upstream` that spoils
/// the `GET`s of two objects, named by the end of their key: `gone`
/// answers 404 NoSuchKey (an object deleted after it was listed); `cut`
/// relays the answer's head and `cut_after` bytes of its body, then
/// closes (a download that fails mid-read), and closes a ranged `GET` of
/// it unanswered (so asking again fails too); `resumed` has its first
/// answer cut the same way, and so are the ranged `GET`s object_store's
/// own retry sends (without `If-Match`), while one with `If-Match`
/// (mirrorcap asking again from where it stopped, once object_store gave
/// up) goes through. Every other request goes
/// through, with `Connection: close` so that each comes on a connection
/// of its own. Returns its port.
pub fn spoiling_proxy(
    upstream: u16,
    gone: &str,
    cut: &str,
    resumed: &str,
    cut_after: usize,
) -> u16 {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let names = [gone, cut, resumed].map(|n| format!("{n} "));
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let [gone, cut, resumed] = names.clone();
            std::thread::spawn(move || {
                let head = read_head(&mut c);
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or("").to_string();
                let get = first.starts_with("GET ");
                if get && first.contains(&gone) {
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
                    let _ = write!(
                        c,
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let lower = text.to_lowercase();
                let ranged = lower.contains("\r\nrange:");
                let if_match = lower.contains("\r\nif-match:");
                if get
                    && ranged
                    && (first.contains(&cut) || (first.contains(&resumed) && !if_match))
                {
                    return;
                }
                let spoil = get && !ranged && (first.contains(&cut) || first.contains(&resumed));
                let mut req: String = text
                    .trim_end()
                    .lines()
                    .filter(|h| !h.to_lowercase().starts_with("connection:"))
                    .map(|h| format!("{h}\r\n"))
                    .collect();
                req.push_str("Connection: close\r\n\r\n");
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                if up.write_all(req.as_bytes()).is_err() {
                    return;
                }
                if !spoil {
                    let _ = std::io::copy(&mut up, &mut c);
                    return;
                }
                let _ = c.write_all(&read_head(&mut up));
                let _ = std::io::copy(&mut (&mut up).take(cut_after as u64), &mut c);
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}
