//! Capture files: reading pcap/pcapng (mapped or streamed, [`read`]) and
//! encoding the records and file headers mirrorcap writes ([`encode`]).

pub mod encode;
pub mod read;

pub use read::*;
