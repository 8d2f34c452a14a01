//! Framing: preamble, start bytes, address, control code, length, 33H-offset data,
//! checksum, end byte; a resynchronising frame finder for byte streams.
//!
//! ```text
//! [FE ..]  68  A0 A1 A2 A3 A4 A5  68  C  L  D0 .. D(L-1)  CS  16
//! ```
//!
//! - The FEH wake-up preamble (usually 4 bytes, any count accepted) is not part of the
//!   frame and not covered by the checksum.
//! - Each data byte is sent with 33H added (mod 256); [`Frame::data`] holds the bytes
//!   with 33H already removed.
//! - CS is the sum mod 256 of every byte from the first 68H through the last data byte.
//! - L counts data bytes only (0..=255; the standard keeps reads within 200 and writes
//!   within 50).

use serde::Serialize;

use super::address::Address;
use super::bcd;
use super::control::ControlCode;
use super::error::Dlt645Error;

/// Start byte (68H), sent twice: before and after the address.
pub const START: u8 = 0x68;
/// End byte (16H).
pub const END: u8 = 0x16;
/// Wake-up preamble byte (FEH).
pub const PREAMBLE: u8 = 0xFE;
/// Offset added to every data byte on the wire.
pub const DATA_OFFSET: u8 = 0x33;
/// Bytes of a frame around its data field: 68, 6 address, 68, C, L, CS, 16.
pub const OVERHEAD: usize = 12;
/// Number of FEH bytes [`Frame::encode_with_preamble`] sends, the usual choice.
pub const DEFAULT_PREAMBLE_LEN: usize = 4;

/// One DL/T 645-2007 frame, with the 33H offset removed from the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    address: Address,
    control: ControlCode,
    #[serde(serialize_with = "bcd::serialize_hex")]
    data: Vec<u8>,
}

impl Frame {
    /// A frame; `data` is the plain data field (the encoder adds 33H).
    pub fn new(address: Address, control: ControlCode, data: Vec<u8>) -> Result<Self, Dlt645Error> {
        if data.len() > usize::from(u8::MAX) {
            return Err(Dlt645Error::DataTooLong { len: data.len() });
        }
        Ok(Self {
            address,
            control,
            data,
        })
    }

    /// The address field.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The control code.
    pub fn control(&self) -> ControlCode {
        self.control
    }

    /// The data field, 33H offset removed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The length byte L.
    pub fn len_byte(&self) -> u8 {
        self.data.len() as u8
    }

    /// The checksum this frame carries on the wire.
    pub fn checksum(&self) -> u8 {
        let wire = self.encode();
        wire[wire.len() - 2]
    }

    /// The wire bytes without preamble.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + self.data.len());
        out.push(START);
        out.extend_from_slice(&self.address.to_wire());
        out.push(START);
        out.push(self.control.byte());
        out.push(self.len_byte());
        out.extend(self.data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
        out.push(checksum(&out));
        out.push(END);
        out
    }

    /// The wire bytes with the usual 4-byte FEH preamble that wakes the meter's UART.
    pub fn encode_with_preamble(&self) -> Vec<u8> {
        let mut out = vec![PREAMBLE; DEFAULT_PREAMBLE_LEN];
        out.extend(self.encode());
        out
    }

    /// Decode exactly one frame: any number of FEH bytes, then one frame and nothing
    /// after it. Use [`find_frame`] or [`StreamDecoder`] for a byte stream with noise.
    pub fn decode(bytes: &[u8]) -> Result<Self, Dlt645Error> {
        Self::decode_counting_preamble(bytes).map(|(frame, _)| frame)
    }

    /// Like [`Frame::decode`], also returning the number of FEH preamble bytes.
    pub fn decode_counting_preamble(bytes: &[u8]) -> Result<(Self, usize), Dlt645Error> {
        let preamble = bytes.iter().take_while(|&&b| b == PREAMBLE).count();
        let rest = &bytes[preamble..];
        let (frame, used) = match parse_at(rest) {
            Parse::Frame(frame, used) => (frame, used),
            Parse::Incomplete(err) | Parse::Invalid(err) => {
                // A frame that ends in 16H but not where L says: name the L byte.
                let l_disagrees = matches!(
                    err,
                    Dlt645Error::BadEnd { .. } | Dlt645Error::Truncated { .. }
                ) && rest.len() >= OVERHEAD
                    && rest.last() == Some(&END);
                if l_disagrees {
                    return Err(Dlt645Error::LengthMismatch {
                        field: "data field (length byte L)".into(),
                        expected: rest[9].to_string(),
                        found: rest.len() - OVERHEAD,
                    });
                }
                return Err(err);
            }
        };
        if used != rest.len() {
            return Err(Dlt645Error::LengthMismatch {
                field: "frame (L byte versus bytes present)".into(),
                expected: format!("{used} bytes for L = {}", frame.len_byte()),
                found: rest.len(),
            });
        }
        Ok((frame, preamble))
    }
}

/// Sum mod 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

enum Parse {
    /// A complete valid frame and the bytes it used.
    Frame(Frame, usize),
    /// Consistent so far, more bytes needed.
    Incomplete(Dlt645Error),
    /// Not a frame at this position.
    Invalid(Dlt645Error),
}

/// Parse a frame that starts at `buf[0]`.
fn parse_at(buf: &[u8]) -> Parse {
    let Some(&first) = buf.first() else {
        return Parse::Incomplete(Dlt645Error::Truncated {
            field: "frame".into(),
            needed: OVERHEAD,
            available: 0,
        });
    };
    if first != START {
        return Parse::Invalid(Dlt645Error::BadStart { found: first });
    }
    if let Some(&second) = buf.get(7)
        && second != START
    {
        return Parse::Invalid(Dlt645Error::BadSecondStart { found: second });
    }
    if buf.len() < 10 {
        return Parse::Incomplete(Dlt645Error::Truncated {
            field: "frame header (68, address, 68, control, length)".into(),
            needed: 10,
            available: buf.len(),
        });
    }
    let len = usize::from(buf[9]);
    let total = OVERHEAD + len;
    if buf.len() < total {
        return Parse::Incomplete(Dlt645Error::Truncated {
            field: format!("frame with L = {len}"),
            needed: total,
            available: buf.len(),
        });
    }
    let end = buf[total - 1];
    if end != END {
        return Parse::Invalid(Dlt645Error::BadEnd { found: end });
    }
    let expected = checksum(&buf[..total - 2]);
    let found = buf[total - 2];
    if expected != found {
        return Parse::Invalid(Dlt645Error::BadChecksum { expected, found });
    }
    let mut wire_address = [0u8; 6];
    wire_address.copy_from_slice(&buf[1..7]);
    let address = match Address::from_wire(wire_address) {
        Ok(a) => a,
        Err(e) => return Parse::Invalid(e),
    };
    let data = buf[10..10 + len]
        .iter()
        .map(|b| b.wrapping_sub(DATA_OFFSET))
        .collect();
    Parse::Frame(
        Frame {
            address,
            control: ControlCode::from_byte(buf[8]),
            data,
        },
        total,
    )
}

/// The outcome of scanning a buffer with [`find_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid frame occupies `buf[start..end]`; `buf[..start]` is preamble or noise.
    /// A stream decoder drops `buf[..end]`.
    Found {
        /// The frame.
        frame: Frame,
        /// Index of its first 68H.
        start: usize,
        /// Index one past its 16H: the number of bytes consumed.
        end: usize,
    },
    /// No complete frame yet. `buf[..skip]` can never start a frame and may be dropped;
    /// `buf[skip..]` may be the beginning of one and must be kept for more bytes.
    NeedMore {
        /// Bytes that may be dropped.
        skip: usize,
    },
}

/// Find the first complete, valid frame in `buf`, resynchronising after noise.
///
/// Every 68H is tried as a frame start; a candidate is accepted only when the second
/// 68H, the length, the end byte, the checksum and the address digits all check out,
/// so a doubled 68H, a stray 68H inside noise or a frame cut short do not hide a good
/// frame that follows. When an earlier candidate is still incomplete but a later one is
/// already complete and valid, the later one wins.
pub fn find_frame(buf: &[u8]) -> Scan {
    let mut first_incomplete = None;
    for (i, _) in buf.iter().enumerate().filter(|&(_, &b)| b == START) {
        match parse_at(&buf[i..]) {
            Parse::Frame(frame, used) => {
                return Scan::Found {
                    frame,
                    start: i,
                    end: i + used,
                };
            }
            Parse::Incomplete(_) => {
                first_incomplete.get_or_insert(i);
            }
            Parse::Invalid(_) => {}
        }
    }
    Scan::NeedMore {
        skip: first_incomplete.unwrap_or(buf.len()),
    }
}

/// Splits a byte stream (serial port, TCP gateway) into frames.
///
/// Feed bytes with [`push`](Self::push) as they arrive and drain frames with
/// [`next_frame`](Self::next_frame). Noise, preambles and broken frames are dropped and
/// counted. The buffer stays bounded: whatever is kept is a possible frame prefix, at
/// most one maximum-size frame (267 bytes).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    discarded: u64,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match find_frame(&self.buf) {
            Scan::Found { frame, start, end } => {
                self.discarded += start as u64;
                self.buf.drain(..end);
                Some(frame)
            }
            Scan::NeedMore { skip } => {
                self.discarded += skip as u64;
                self.buf.drain(..skip);
                None
            }
        }
    }

    /// Bytes dropped so far as preamble, noise or broken frames.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Bytes held while waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
