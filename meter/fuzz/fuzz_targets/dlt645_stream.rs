#![no_main]
//! Any byte stream, fed in arbitrary chunks: the resynchronising decoder never panics and
//! never buffers more than it was given.
use feegate_meter::dlt645::StreamDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = StreamDecoder::new();
    let cut = data.first().map_or(1, |b| usize::from(*b % 17) + 1);
    for chunk in data.chunks(cut) {
        d.push(chunk);
        while d.next_frame().is_some() {}
    }
    assert!(d.buffered() <= data.len());
});
