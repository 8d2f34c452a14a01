#![no_main]
//! Any bytes: decoding a DL/T 645 frame (and its payload) never panics, and a frame that
//! decodes re-encodes to bytes that decode to the same frame.
use feegate_meter::dlt645::{DecodedFrame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, preamble)) = Frame::decode_counting_preamble(data) {
        let _ = DecodedFrame::from_frame(&frame, preamble);
        assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    }
});
