//! Any bytes as a pcap or pcapng file: every record the reader returns
//! must lie within the input, and it must end (error or end of input)
//! without panicking or allocating more than the input could justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirrorcap::capture::CaptureReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::new(data, "fuzz") else {
        return;
    };
    let mut n = 0usize;
    while let Ok(Some(rec)) = r.next_record() {
        assert!(rec.data.len() <= data.len());
        n += 1;
        assert!(n <= data.len());
    }
});
