//! Live subscribers (`mirrorcap stream`, the Wireshark extcap): the frames
//! of chosen sessions, after the daemon's own filters, handed to readers
//! of the control socket as they arrive, without slowing capture.
//!
//! - [`hub`]: the subscribers in force, each with its selection (VNIs,
//!   sources, endpoints) and a bounded queue of bytes; a full queue drops
//!   and counts that subscriber's frames, never the capture files'.
//! - [`tap`]: each worker's view of the hub. Per frame of a session some
//!   subscriber wants, one copy into the worker's batch buffer for that
//!   subscriber; per batch, one lock and one wakeup per subscriber. With no
//!   subscriber: one relaxed load and one branch per frame.
//! - [`message`]: what travels on the control socket: a JSON request line
//!   and reply line, then binary messages (session, frame, drop count).
//! - [`server`]: the control socket (a Unix socket, mode 0660, group
//!   chosen in the config) and one sender thread per subscriber, which
//!   applies the subscriber's libpcap expression and writes to it.
//! - [`client`]: the reading side: turns the messages into a pcap or
//!   pcapng stream (`mirrorcap stream`, extcap).

pub mod client;
pub mod extcap;
pub mod hub;
pub mod message;
pub mod server;
pub mod tap;

pub use hub::{Hub, Selection};
pub use tap::{SessionTap, Tap};
