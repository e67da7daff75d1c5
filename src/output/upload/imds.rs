//! `{host}`, the default region and the flow layout's account and region
//! from EC2 instance metadata, IMDSv2 only: `PUT /latest/api/token` (a
//! 60 s token), then `GET /latest/meta-data/instance-id` (or
//! `placement/region`, or `dynamic/instance-identity/document`) with the token,
//! each with a 1 s timeout, over plain HTTP/1.1 on a blocking socket (it
//! runs once, at start, and only when `[output.s3]` is set).
//!
//! The endpoint is, in this order: `[output.s3] metadata_endpoint`, the
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` environment variable (as the AWS
//! SDKs and CLI read it), `http://169.254.169.254`. The same endpoint is
//! given to the S3 client for the instance role's credentials, so a test
//! can stand in for both. In: the endpoint. Out: the text answered, or
//! why not (the caller falls back and counts it).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// EC2's instance metadata service.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";
/// The variable the AWS SDKs read for another metadata endpoint.
pub const METADATA_ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// Time for each request in all (connect, send, whole answer): a
/// service answering a byte at a time is cut off there too.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// The metadata endpoint to use: `configured`, else the environment's,
/// else EC2's.
pub fn metadata_endpoint(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var(METADATA_ENDPOINT_ENV).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Asks the metadata service at `endpoint` (`http://host[:port]`) for
/// `meta-data/<what>` with an IMDSv2 token.
/// `AWS_EC2_METADATA_DISABLED=true` (as the AWS SDKs read it) turns it off.
pub fn get(endpoint: &str, what: &str) -> Result<String, String> {
    get_path(endpoint, &format!("meta-data/{what}"))
}

/// The account and the region of this instance, from its identity
/// document (`dynamic/instance-identity/document`, IMDSv2), as it gave
/// them (the caller checks them).
pub fn account_and_region(endpoint: &str) -> Result<(String, String), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Identity {
        account_id: String,
        region: String,
    }
    let what = "dynamic/instance-identity/document";
    let doc = get_path(endpoint, what)?;
    let id: Identity = serde_json::from_str(&doc).map_err(|e| {
        format!("{endpoint}/latest/{what}: {e} (expected JSON with \"accountId\" and \"region\")")
    })?;
    Ok((id.account_id, id.region))
}

/// `GET /latest/<path>` with an IMDSv2 token.
fn get_path(endpoint: &str, path: &str) -> Result<String, String> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("AWS_EC2_METADATA_DISABLED is true".into());
    }
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("{endpoint}: only http:// metadata endpoints are supported"))?
        .trim_end_matches('/');
    let token = request(
        hostport,
        "PUT",
        "/latest/api/token",
        "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n",
    )?;
    request(
        hostport,
        "GET",
        &format!("/latest/{path}"),
        &format!("X-aws-ec2-metadata-token: {}\r\n", token.trim()),
    )
    .map(|s| s.trim().to_owned())
}

/// One request, `Connection: close`; the body of a 200 answer.
fn request(hostport: &str, method: &str, path: &str, header: &str) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{method} http://{hostport}{path}: {e}");
    // No port written (EC2's `http://169.254.169.254`): HTTP's 80.
    let with_port = if hostport.ends_with(']') || !hostport.contains(':') {
        format!("{hostport}:80")
    } else {
        hostport.to_owned()
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| fail(&e))?
        .next()
        .ok_or_else(|| fail(&"no address"))?;
    // The whole request has IMDS_TIMEOUT, not each read: an answer
    // trickling in a byte at a time cannot hold the start.
    let deadline = std::time::Instant::now() + IMDS_TIMEOUT;
    let timed_out = || fail(&format!("no whole answer within {IMDS_TIMEOUT:?}"));
    let mut s = TcpStream::connect_timeout(&addr, IMDS_TIMEOUT).map_err(|e| fail(&e))?;
    s.set_write_timeout(Some(IMDS_TIMEOUT))
        .map_err(|e| fail(&e))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| fail(&e))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while answer.len() < 64 * 1024 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left)).map_err(|e| fail(&e))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(&e)),
        }
    }
    answer.truncate(64 * 1024);
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(&"no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(fail(&format!(
            "answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    })
}

/// The body of a chunked answer (small: a token or an ID).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// This machine's host name (`uname`), for `{host}` off EC2.
pub fn host_name() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "localhost".into();
    }
    // SAFETY: uname NUL-terminates `nodename`.
    let name = unsafe { std::ffi::CStr::from_ptr(u.nodename.as_ptr()) };
    name.to_string_lossy().into_owned()
}

/// `s` as a key component: ASCII letters, digits, `.`, `_`, `-` kept,
/// anything else `_`, at most 64 bytes.
pub fn key_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A loopback stand-in for instance metadata that reads two requests'
    /// heads and lets `answer` write each answer; its endpoint.
    pub(crate) fn stand_in(answer: impl Fn(TcpStream, Vec<u8>) + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for c in l.incoming().take(2) {
                let mut c = c.unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
                    head.push(b[0]);
                }
                answer(c, head);
            }
        });
        ep
    }

    /// Issue 16, item 3: IMDSv2 only (a token first, then the ID with the
    /// token; a GET without it is refused), and a fallback to the host
    /// name, counted, when nothing answers.
    #[test]
    fn instance_id_needs_the_token_and_falls_back_to_the_host_name() {
        let ep = stand_in(|mut c, head| {
            let head = String::from_utf8(head).unwrap();
            let body = if head.starts_with("PUT /latest/api/token ")
                && head.contains("X-aws-ec2-metadata-token-ttl-seconds: ")
            {
                "tok"
            } else if head.starts_with("GET /latest/meta-data/instance-id ")
                && head.contains("X-aws-ec2-metadata-token: tok\r\n")
            {
                "i-0123"
            } else {
                ""
            };
            let status = if body.is_empty() { "401 No" } else { "200 OK" };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        });
        assert_eq!(get(&ep, "instance-id").unwrap(), "i-0123");
        let counters = crate::telemetry::counters::Counters::default();
        let closed = format!(
            "http://127.0.0.1:{}",
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        );
        let h = crate::output::upload::resolve_host(None, &closed, &counters);
        assert_eq!(h, key_safe(&host_name()));
        assert_eq!(
            counters
                .uploads
                .host_fallbacks
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            crate::output::upload::resolve_host(Some("mine"), &closed, &counters),
            "mine"
        );
        assert_eq!(key_safe("a b/c"), "a_b_c");
    }

    /// Issue 18 item 2 (hostile run): a metadata service that answers
    /// slowly, a byte at a time with each byte within the read timeout,
    /// cannot hold the daemon's start: each request has 1 s in all
    /// (before, the timeout was per read, and this answer held the start
    /// for a minute).
    #[test]
    fn a_trickling_metadata_answer_is_cut_at_the_timeout() {
        let ep = stand_in(|mut c, head| {
            if head.starts_with(b"PUT ") {
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok");
                return;
            }
            let doc = r#"{"accountId":"111122223333","region":"eu-north-1"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            );
            for b in answer.bytes() {
                if c.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let t = std::time::Instant::now();
        let r = account_and_region(&ep);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "the identity document took {took:?} ({r:?})"
        );
        let e = r.unwrap_err();
        assert!(e.contains("instance-identity/document"), "{e}");
    }
}
