//! A bounded, deterministic fuzz smoke for every decoder: the shared vectors mutated (bit
//! flips, truncations, insertions, splices) plus random bytes, with the same properties the
//! cargo-fuzz targets in `meter/fuzz/` check. Never panics; what decodes re-encodes.

use feegate_meter::dlt645::{DecodedFrame, Frame, StreamDecoder};
use feegate_meter::modbus_map::{RegisterMap, rtu};
use feegate_meter::qgdw376::{Q376Frame, Scan, find_frame};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/protocol-vectors.json"
));

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn seeds(key: &str) -> Vec<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| unhex(x["hex"].as_str().unwrap()))
        .collect()
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => b.truncate(rng.below(b.len() + 1)),
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                b.extend_from_slice(&other[..rng.below(other.len() + 1)]);
            }
            _ => {
                let n = rng.below(40);
                b = (0..n).map(|_| rng.next() as u8).collect();
            }
        }
    }
    b
}

/// Half the time, repair the checksum so the mutation reaches the field decoders.
fn fix_dlt645(rng: &mut Rng, b: &mut [u8]) {
    let Some(start) = b.iter().position(|x| *x == 0x68) else {
        return;
    };
    if rng.below(2) == 0 && b.len() >= start + 2 {
        let n = b.len();
        b[n - 2] = b[start..n - 2].iter().fold(0u8, |a, x| a.wrapping_add(*x));
    }
}

fn fix_q376(rng: &mut Rng, b: &mut [u8]) {
    if rng.below(2) == 0 && b.len() >= 8 {
        let n = b.len();
        b[n - 2] = b[6..n - 2].iter().fold(0u8, |a, x| a.wrapping_add(*x));
    }
}

fn fix_rtu(rng: &mut Rng, b: &mut [u8]) {
    if rng.below(2) == 0 && b.len() >= 4 {
        let n = b.len();
        let crc = rtu::crc16(&b[..n - 2]).to_le_bytes();
        b[n - 2..].copy_from_slice(&crc);
    }
}

const ROUNDS: usize = 20_000;

#[test]
fn dlt645_decoders_survive_mutated_and_random_input() {
    let seeds = seeds("dlt645");
    let mut rng = Rng(645);
    let mut decoded = 0;
    for _ in 0..ROUNDS {
        let mut b = mutate(&mut rng, &seeds);
        fix_dlt645(&mut rng, &mut b);
        if let Ok((frame, preamble)) = Frame::decode_counting_preamble(&b) {
            decoded += 1;
            let _ = DecodedFrame::from_frame(&frame, preamble);
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        let mut d = StreamDecoder::new();
        for chunk in b.chunks(rng.below(7) + 1) {
            d.push(chunk);
            while d.next_frame().is_some() {}
        }
        assert!(d.buffered() <= b.len());
    }
    // The smoke exercises the decoding path, not only the rejections.
    assert!(decoded > ROUNDS / 50, "only {decoded} inputs decoded");
}

#[test]
fn qgdw376_decoder_survives_mutated_and_random_input() {
    let seeds = seeds("qgdw376_1");
    let mut rng = Rng(376);
    let mut decoded = 0;
    for _ in 0..ROUNDS {
        let mut b = mutate(&mut rng, &seeds);
        fix_q376(&mut rng, &mut b);
        if let Ok(f) = Q376Frame::decode(&b) {
            decoded += 1;
            let _ = f.dlt645();
            assert_eq!(f.encode().unwrap(), b);
        }
        let mut rest = &b[..];
        while let Scan::Frame(_, used) = find_frame(rest) {
            assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }
    assert!(decoded > ROUNDS / 50, "only {decoded} inputs decoded");
}

#[test]
fn modbus_rtu_decoder_survives_mutated_and_random_input() {
    let seeds = seeds("modbus_rtu");
    let map = RegisterMap::builtin("eastron-sdm120").unwrap();
    let mut rng = Rng(485);
    let mut decoded = 0;
    for _ in 0..ROUNDS {
        let mut b = mutate(&mut rng, &seeds);
        fix_rtu(&mut rng, &mut b);
        if let Ok(r) = rtu::decode_response(&b) {
            decoded += 1;
            if let rtu::RtuResponse::Registers { words, .. } = r {
                for reg in &map.registers {
                    let n = usize::from(reg.data_type.words());
                    if words.len() >= n {
                        let _ = reg.decode(&words[..n]);
                    }
                }
            }
        }
    }
    assert!(decoded > ROUNDS / 50, "only {decoded} inputs decoded");
}
