//! The control socket's protocol. The subscriber sends one JSON line
//! ([`Request`]); the daemon answers one JSON line ([`Reply`]: accepted,
//! with the snap length, or refused with the reason); then the daemon
//! sends binary messages until either side closes:
//!
//! ```text
//! kind u8 | body length u32 (big-endian) | body
//! 1 SESSION  id u64 | vni u32 | endpoint flag u8 | endpoint u64 | family u8 (4, 6) | address 16
//! 2 FRAME    id u64 | timestamp ns u64 | length on the wire u32 | captured bytes
//! 3 DROPPED  frames the daemon could not deliver to this subscriber so far u64
//! 4 END      (empty) the daemon is stopping and has sent everything it queued
//! ```
//!
//! A SESSION message comes before the first frame of each session. END is
//! the last message of a daemon that stops cleanly: a connection that ends
//! without it was cut (the daemon was killed or crashed). Pure encoding and
//! decoding: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::wire::geneve::EndpointId;

/// What a subscriber asks for. Empty lists mean any. An unknown field is
/// refused: a typo (`vni` for `vnis`) would otherwise ask for everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub vnis: Vec<u32>,
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    /// Gateway Load Balancer endpoints, as `vpce-…`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// A libpcap expression the frames must match.
    #[serde(default)]
    pub filter: Option<String>,
    /// Only list the live sessions ([`Reply::Sessions`]), then close.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub list: bool,
}

/// A live session, as [`Reply::Sessions`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionInfo {
    pub vni: u32,
    pub source: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The daemon's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Frames follow; each is at most `snaplen` bytes.
    Accepted { snaplen: u32 },
    /// Why not (a bad filter, too many subscribers): to show as it is.
    Refused { reason: String },
    /// The live sessions (a `list` request).
    Sessions { sessions: Vec<SessionInfo> },
}

pub const KIND_SESSION: u8 = 1;
pub const KIND_FRAME: u8 = 2;
pub const KIND_DROPPED: u8 = 3;
pub const KIND_END: u8 = 4;
/// Bytes before a message's body.
pub const HEADER_LEN: usize = 5;
/// Bytes of a FRAME body before the frame.
pub const FRAME_FIXED: usize = 20;
/// Bytes of a SESSION body.
pub const SESSION_LEN: usize = 8 + 4 + 1 + 8 + 1 + 16;

/// A session as the subscriber sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSession {
    pub id: u64,
    pub vni: u32,
    pub source: IpAddr,
    pub endpoint: Option<EndpointId>,
}

impl StreamSession {
    /// The pcapng interface name and description, as the session's capture
    /// files have them.
    pub fn interface(&self) -> (String, String) {
        crate::capture::encode::session_interface(self.vni, self.source, self.endpoint)
    }
}

/// One decoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Session(StreamSession),
    Frame {
        id: u64,
        ts_ns: u64,
        wire_len: u32,
        data: &'a [u8],
    },
    Dropped(u64),
    /// The daemon stopped cleanly; nothing follows.
    End,
}

/// Appends a SESSION message.
pub fn put_session(out: &mut Vec<u8>, s: &StreamSession) {
    out.push(KIND_SESSION);
    out.extend_from_slice(&(SESSION_LEN as u32).to_be_bytes());
    out.extend_from_slice(&s.id.to_be_bytes());
    out.extend_from_slice(&s.vni.to_be_bytes());
    out.push(u8::from(s.endpoint.is_some()));
    out.extend_from_slice(&s.endpoint.map_or(0, |e| e.0).to_be_bytes());
    match s.source {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.to_ipv6_mapped().octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// The header of a FRAME message of `caplen` bytes (the frame follows).
#[inline]
pub fn frame_header(
    id: u64,
    ts_ns: u64,
    wire_len: u32,
    caplen: usize,
) -> [u8; HEADER_LEN + FRAME_FIXED] {
    let mut h = [0u8; HEADER_LEN + FRAME_FIXED];
    h[0] = KIND_FRAME;
    h[1..5].copy_from_slice(&((FRAME_FIXED + caplen) as u32).to_be_bytes());
    h[5..13].copy_from_slice(&id.to_be_bytes());
    h[13..21].copy_from_slice(&ts_ns.to_be_bytes());
    h[21..25].copy_from_slice(&wire_len.to_be_bytes());
    h
}

/// Appends a DROPPED message.
pub fn put_dropped(out: &mut Vec<u8>, total: u64) {
    out.push(KIND_DROPPED);
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&total.to_be_bytes());
}

/// Appends an END message.
pub fn put_end(out: &mut Vec<u8>) {
    out.push(KIND_END);
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// Why a message could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message kind {0} is not 1 (session), 2 (frame), 3 (dropped) or 4 (end)")]
    Kind(u8),
    #[error("a message of kind {kind} with a {len}-byte body is malformed")]
    Body { kind: u8, len: usize },
}

/// The message at the start of `buf` and its length, or `None` when `buf`
/// does not hold a whole one yet.
pub fn next(buf: &[u8]) -> Result<Option<(Message<'_>, usize)>, MessageError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let kind = h[0];
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let bad = MessageError::Body { kind, len };
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    let m = match kind {
        KIND_SESSION if len == SESSION_LEN => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[22..38]);
            let v6 = Ipv6Addr::from(a);
            let source = match body[21] {
                4 => IpAddr::V4(v6.to_ipv4_mapped().ok_or(bad)?),
                6 => IpAddr::V6(v6),
                _ => return Err(bad),
            };
            Message::Session(StreamSession {
                id: be64(&body[0..8]),
                vni: u32::from_be_bytes([body[8], body[9], body[10], body[11]]),
                endpoint: (body[12] != 0).then(|| EndpointId(be64(&body[13..21]))),
                source,
            })
        }
        KIND_FRAME if len >= FRAME_FIXED => Message::Frame {
            id: be64(&body[0..8]),
            ts_ns: be64(&body[8..16]),
            wire_len: u32::from_be_bytes([body[16], body[17], body[18], body[19]]),
            data: &body[FRAME_FIXED..],
        },
        KIND_DROPPED if len == 8 => Message::Dropped(be64(body)),
        KIND_END if len == 0 => Message::End,
        KIND_SESSION | KIND_FRAME | KIND_DROPPED | KIND_END => return Err(bad),
        k => return Err(MessageError::Kind(k)),
    };
    Ok(Some((m, HEADER_LEN + len)))
}

/// The unspecified address, for a placeholder session.
pub const NO_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_partial_input_waits() {
        let mut buf = Vec::new();
        let s4 = StreamSession {
            id: 7,
            vni: 0xff_ffff,
            source: "10.0.0.1".parse().unwrap(),
            endpoint: None,
        };
        let s6 = StreamSession {
            id: 8,
            vni: 1,
            source: "2001:db8::1".parse().unwrap(),
            endpoint: Some(EndpointId(0x0123_4567_89ab_cdef)),
        };
        put_session(&mut buf, &s4);
        put_session(&mut buf, &s6);
        buf.extend_from_slice(&frame_header(8, 123, 1500, 3));
        buf.extend_from_slice(&[1, 2, 3]);
        put_dropped(&mut buf, 42);
        put_end(&mut buf);
        let want = [
            Message::Session(s4),
            Message::Session(s6),
            Message::Frame {
                id: 8,
                ts_ns: 123,
                wire_len: 1500,
                data: &[1, 2, 3],
            },
            Message::Dropped(42),
            Message::End,
        ];
        let mut at = 0;
        for w in want {
            for cut in at..(at + 5).min(buf.len()) {
                assert_eq!(next(&buf[at..cut]), Ok(None));
            }
            let (m, n) = next(&buf[at..]).unwrap().unwrap();
            assert_eq!(m, w);
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(next(&[9, 0, 0, 0, 0]), Err(MessageError::Kind(9)));
        assert_eq!(
            next(&[3, 0, 0, 0, 1, 0]),
            Err(MessageError::Body { kind: 3, len: 1 })
        );
    }

    #[test]
    fn request_json_defaults() {
        let r: Request = serde_json::from_str(r#"{"vnis":[5]}"#).unwrap();
        assert_eq!(r.vnis, [5]);
        assert!(r.sources.is_empty() && r.filter.is_none());
        let a = serde_json::to_string(&Reply::Accepted { snaplen: 9 }).unwrap();
        assert_eq!(a, r#"{"accepted":{"snaplen":9}}"#);
    }
}
