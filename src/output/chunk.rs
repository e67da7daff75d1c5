//! Chunk framing between the receive side and the writer thread: each run
//! of records of one file in a chunk starts with a [`RunHeader`], and the
//! writer finds the runs as [`RunRange`]s. In: chunks of bytes. Out: runs
//! per file, and close markers. Nothing is dropped here.

/// Names one open file between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub(crate) u32);

/// The header before each run of records of one file in a chunk. Records
/// that follow each other for the same file extend the run, so the writer
/// writes one contiguous slice per run (one for a whole chunk of a single
/// busy session) instead of one per record.
///
/// Layout (little-endian `u32`s, [`RunHeader::LEN`] bytes): file id, run
/// length in bytes, frames in the run, their frame bytes (for the
/// counters). A run with no bytes and `frames == u32::MAX` is a close
/// marker: the file is closed once the records before it are written, so
/// closing a file travels in the data stream and costs 16 bytes, not a
/// chunk of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunHeader {
    pub(crate) file: FileId,
    pub(crate) len: u32,
    pub(crate) frames: u32,
    pub(crate) frame_bytes: u32,
}

impl RunHeader {
    pub(crate) const LEN: usize = 16;
    pub(crate) const CLOSE_FRAMES: u32 = u32::MAX;

    pub(crate) fn close(file: FileId) -> RunHeader {
        RunHeader {
            file,
            len: 0,
            frames: Self::CLOSE_FRAMES,
            frame_bytes: 0,
        }
    }

    pub(crate) fn is_close(&self) -> bool {
        self.len == 0 && self.frames == Self::CLOSE_FRAMES
    }

    pub(crate) fn write_to(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.file.0.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.frames.to_le_bytes());
        b[12..16].copy_from_slice(&self.frame_bytes.to_le_bytes());
    }

    pub(crate) fn read_from(b: &[u8]) -> RunHeader {
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        RunHeader {
            file: FileId(word(0)),
            len: word(4),
            frames: word(8),
            frame_bytes: word(12),
        }
    }
}

/// Where one run of records of a file lies in a chunk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunRange {
    pub(crate) file: FileId,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) frames: u64,
    pub(crate) frame_bytes: u64,
}
