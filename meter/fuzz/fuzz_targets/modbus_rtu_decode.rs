#![no_main]
//! Any bytes: the Modbus RTU response decoder never panics, and the register maps decode
//! whatever words it yields without panicking.
use feegate_meter::modbus_map::{RegisterMap, rtu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rtu::RtuResponse::Registers { words, .. }) = rtu::decode_response(data) {
        let map = RegisterMap::builtin("eastron-sdm120").unwrap();
        for r in &map.registers {
            if words.len() >= usize::from(r.data_type.words()) {
                let _ = r.decode(&words[..usize::from(r.data_type.words())]);
            }
        }
    }
});
