#![no_main]
//! Any bytes: the Q/GDW 1376.1 decoder and stream scanner never panic; a decoded frame
//! re-encodes to the same bytes.
use feegate_meter::qgdw376::{Q376Frame, Scan, find_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Q376Frame::decode(data) {
        let _ = f.dlt645();
        assert_eq!(f.encode().unwrap(), data);
    }
    let mut rest = data;
    while let Scan::Frame(_, used) = find_frame(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
});
