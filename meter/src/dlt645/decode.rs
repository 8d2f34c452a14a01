//! Typed interpretation of frames (what a command asks, what a reply says) and the
//! builders for the commands Feegate sends.

use serde::Serialize;

use super::address::{Address, AddressKind};
use super::bcd;
use super::control::{ControlCode, Function};
use super::di::{DataValue, Di, decode_value};
use super::error::Dlt645Error;
use super::frame::Frame;
use super::relay::{
    OperatorCode, Password, RelayControlRequest, SEALED_PASSWORD_LEVEL, SealedRelayControlRequest,
};
use super::status::{ErrorWord, MeterError, RelayErrorWord};
use super::time::MeterDateTime;

/// A frame with everything Feegate understands about it; serialises to the JSON printed
/// by `feegate dlt645 decode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedFrame {
    /// FEH bytes before the frame.
    pub preamble_len: usize,
    /// The address field.
    pub address: Address,
    /// Unicast, wildcard or broadcast.
    pub address_kind: AddressKind,
    /// The control code.
    pub control: ControlCode,
    /// The length byte L.
    pub length: u8,
    /// The data field with 33H removed.
    #[serde(serialize_with = "bcd::serialize_hex")]
    pub data: Vec<u8>,
    /// The checksum byte (verified).
    #[serde(serialize_with = "serialize_byte")]
    pub checksum: u8,
    /// What the frame means.
    pub payload: Payload,
}

fn serialize_byte<S: serde::Serializer>(b: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{b:02X}"))
}

impl DecodedFrame {
    /// Interpret a frame. Fails when a field the function defines is malformed (wrong
    /// length, non-BCD digits in a typed value); an identifier outside the catalogue is
    /// not an error (its value stays raw).
    pub fn from_frame(frame: &Frame, preamble_len: usize) -> Result<Self, Dlt645Error> {
        Ok(Self {
            preamble_len,
            address: frame.address(),
            address_kind: frame.address().kind(),
            control: frame.control(),
            length: frame.len_byte(),
            data: frame.data().to_vec(),
            checksum: frame.checksum(),
            payload: Payload::from_frame(frame)?,
        })
    }
}

/// Decode one frame given as hex text (whitespace ignored, FEH preamble allowed) into
/// its JSON-serialisable interpretation.
///
/// ```
/// use feegate_meter::dlt645::{decode_hex, Payload, DataValue};
/// let f = decode_hex("68 76 02 02 47 02 02 68 91 08 33 33 34 33 35 33 33 33 C9 16").unwrap();
/// let Payload::ReadDataReply(reply) = f.payload else { panic!() };
/// assert_eq!(reply.di.to_string(), "00010000");
/// assert_eq!(reply.value, Some(DataValue::EnergyKwh("0.02".parse().unwrap())));
/// ```
pub fn decode_hex(hex: &str) -> Result<DecodedFrame, Dlt645Error> {
    let bytes = bcd::parse_hex(hex)?;
    let (frame, preamble) = Frame::decode_counting_preamble(&bytes)?;
    DecodedFrame::from_frame(&frame, preamble)
}

/// A read reply (function 11H or 12H).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadReply {
    /// The data identifier answered.
    pub di: Di,
    /// Its meaning, when the identifier is in the catalogue.
    pub name: Option<String>,
    /// The typed value; `None` for identifiers outside the catalogue and for partial
    /// data (a reply announcing follow-up frames, or a follow-up frame itself).
    pub value: Option<DataValue>,
    /// The value bytes as sent (33H removed, DI and SEQ excluded), hex.
    #[serde(serialize_with = "bcd::serialize_hex")]
    pub raw: Vec<u8>,
    /// D5: more frames follow (read them with function 12H).
    pub follow_up: bool,
    /// The frame sequence number SEQ of a follow-up reply (12H).
    pub seq: Option<u8>,
}

/// What a frame means. Master commands and slave replies of the functions Feegate uses
/// are typed; others are kept as hex under [`Payload::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Payload {
    /// 11H command: read `di`; optionally `blocks` records (load profile) from `from`.
    ReadData {
        /// The identifier requested.
        di: Di,
        /// N: number of records requested (load-profile reads), if given.
        blocks: Option<u8>,
        /// Start time `mm hh DD MM YY` of a load-profile read, if given.
        from: Option<MeterDateTime>,
    },
    /// 91H/B1H normal reply to a read.
    ReadDataReply(ReadReply),
    /// 12H command: read follow-up frame `seq` of `di`.
    ReadFollowUp {
        /// The identifier being read.
        di: Di,
        /// Frame sequence number SEQ.
        seq: u8,
    },
    /// 92H/B2H normal reply to a follow-up read.
    ReadFollowUpReply(ReadReply),
    /// 13H command: read the address of the (only) meter on the bus.
    ReadAddress,
    /// 93H reply: the meter's address.
    ReadAddressReply {
        /// The address in the data field.
        address: Address,
    },
    /// 08H command: set the clock (broadcast, or addressed to one meter).
    BroadcastTime {
        /// The time sent, `ss mm hh DD MM YY`.
        time: MeterDateTime,
    },
    /// 14H command: write data.
    WriteData {
        /// The identifier written.
        di: Di,
        /// PA P0 P1 P2.
        password: Password,
        /// C0..C3.
        operator: OperatorCode,
        /// The value bytes (33H removed), hex.
        #[serde(serialize_with = "bcd::serialize_hex")]
        value: Vec<u8>,
    },
    /// 1CH command in plaintext.
    RelayControl(RelayControlRequest),
    /// 1CH command sealed by an ESAM (password level 98H or a non-plaintext length).
    RelayControlSealed(SealedRelayControlRequest),
    /// A normal reply without data (L = 0), e.g. 9CH: relay command accepted.
    Ack {
        /// The function acknowledged.
        function: Function,
    },
    /// An abnormal reply (D6 = 1): the meter refused.
    ErrorReply {
        /// The function refused.
        function: Function,
        /// The decoded error field.
        error: MeterError,
    },
    /// Anything else, data as hex.
    Other {
        /// The function.
        function: Function,
        /// The data field (33H removed), hex.
        #[serde(serialize_with = "bcd::serialize_hex")]
        data: Vec<u8>,
    },
}

impl Payload {
    /// Interpret a frame's data field according to its control code.
    pub fn from_frame(frame: &Frame) -> Result<Self, Dlt645Error> {
        let control = frame.control();
        let function = control.function();
        let data = frame.data();

        if control.is_reply() && control.is_abnormal() {
            return Ok(Payload::ErrorReply {
                function,
                error: meter_error(function, data),
            });
        }

        if control.is_reply() {
            return Ok(match function {
                Function::ReadData => Payload::ReadDataReply(read_reply(control, data, false)?),
                Function::ReadFollowUp => {
                    Payload::ReadFollowUpReply(read_reply(control, data, true)?)
                }
                Function::ReadAddress => Payload::ReadAddressReply {
                    address: address_field(data)?,
                },
                _ if data.is_empty() => Payload::Ack { function },
                _ => Payload::Other {
                    function,
                    data: data.to_vec(),
                },
            });
        }

        Ok(match function {
            Function::ReadData => {
                let di = Di::from_wire(
                    data.get(..4)
                        .ok_or_else(|| truncated("read data", 4, data))?,
                )?;
                match data.len() {
                    4 => Payload::ReadData {
                        di,
                        blocks: None,
                        from: None,
                    },
                    5 => Payload::ReadData {
                        di,
                        blocks: Some(data[4]),
                        from: None,
                    },
                    10 => Payload::ReadData {
                        di,
                        blocks: Some(data[4]),
                        from: Some(MeterDateTime::from_wire_minutes(
                            &data[5..10],
                            "load-profile start time",
                        )?),
                    },
                    n => {
                        return Err(Dlt645Error::LengthMismatch {
                            field: "read data command".into(),
                            expected: "4, 5 or 10".into(),
                            found: n,
                        });
                    }
                }
            }
            Function::ReadFollowUp => {
                if data.len() != 5 {
                    return Err(Dlt645Error::LengthMismatch {
                        field: "read follow-up command".into(),
                        expected: "5".into(),
                        found: data.len(),
                    });
                }
                Payload::ReadFollowUp {
                    di: Di::from_wire(&data[..4])?,
                    seq: data[4],
                }
            }
            Function::ReadAddress if data.is_empty() => Payload::ReadAddress,
            Function::BroadcastTime => Payload::BroadcastTime {
                time: MeterDateTime::from_wire_seconds(data, "broadcast time")?,
            },
            Function::WriteData => {
                if data.len() < 12 {
                    return Err(truncated("write data command", 12, data));
                }
                Payload::WriteData {
                    di: Di::from_wire(&data[..4])?,
                    password: Password {
                        level: data[4],
                        code: [data[5], data[6], data[7]],
                    },
                    operator: OperatorCode([data[8], data[9], data[10], data[11]]),
                    value: data[12..].to_vec(),
                }
            }
            Function::RelayControl => {
                if data.len() == 16 && data[0] != SEALED_PASSWORD_LEVEL {
                    Payload::RelayControl(RelayControlRequest::from_data(data)?)
                } else {
                    Payload::RelayControlSealed(
                        SealedRelayControlRequest::from_data(data)
                            .ok_or_else(|| truncated("relay control command", 8, data))?,
                    )
                }
            }
            _ => Payload::Other {
                function,
                data: data.to_vec(),
            },
        })
    }
}

fn truncated(field: &str, needed: usize, data: &[u8]) -> Dlt645Error {
    Dlt645Error::Truncated {
        field: field.into(),
        needed,
        available: data.len(),
    }
}

fn address_field(data: &[u8]) -> Result<Address, Dlt645Error> {
    let wire: [u8; 6] = data.try_into().map_err(|_| Dlt645Error::LengthMismatch {
        field: "address in the data field".into(),
        expected: "6".into(),
        found: data.len(),
    })?;
    Address::from_wire(wire).map_err(|e| match e {
        Dlt645Error::BadBcd { byte, .. } => Dlt645Error::BadBcd {
            field: "address in the data field".into(),
            byte,
        },
        other => other,
    })
}

fn read_reply(control: ControlCode, data: &[u8], with_seq: bool) -> Result<ReadReply, Dlt645Error> {
    let min = if with_seq { 5 } else { 4 };
    if data.len() < min {
        return Err(truncated("read reply (identifier and data)", min, data));
    }
    let di = Di::from_wire(&data[..4])?;
    let (raw, seq) = if with_seq {
        (&data[4..data.len() - 1], Some(data[data.len() - 1]))
    } else {
        (&data[4..], None)
    };
    let follow_up = control.has_follow_up();
    // Only a complete, single-frame reply can be typed; partial data would look like a
    // plausible but wrong value (e.g. an energy block missing its last tariffs).
    let value = if follow_up || with_seq {
        None
    } else {
        match decode_value(di, raw) {
            Ok(v) => Some(v),
            Err(Dlt645Error::UnknownDi { .. }) => None,
            Err(e) => return Err(e),
        }
    };
    Ok(ReadReply {
        di,
        name: di.name(),
        value,
        raw: raw.to_vec(),
        follow_up,
        seq,
    })
}

fn meter_error(function: Function, data: &[u8]) -> MeterError {
    match (function, data) {
        (_, [err]) => MeterError::Standard {
            word: ErrorWord(*err),
        },
        (Function::RelayControl, [lo, hi]) => MeterError::RelayControl {
            word: RelayErrorWord(u16::from_le_bytes([*lo, *hi])),
        },
        _ => MeterError::Unrecognised {
            hex: bcd::hex(data),
        },
    }
}

impl Frame {
    /// 11H: read data identifier `di` from the meter at `address`.
    pub fn read_data(address: Address, di: Di) -> Frame {
        Frame::new(
            address,
            ControlCode::command(Function::ReadData),
            di.to_wire().to_vec(),
        )
        .expect("4 data bytes fit")
    }

    /// 12H: read follow-up frame `seq` of `di`.
    pub fn read_follow_up(address: Address, di: Di, seq: u8) -> Frame {
        let mut data = di.to_wire().to_vec();
        data.push(seq);
        Frame::new(address, ControlCode::command(Function::ReadFollowUp), data)
            .expect("5 data bytes fit")
    }

    /// 13H: ask the only meter on the bus for its address (sent to AAAAAAAAAAAA).
    pub fn read_address() -> Frame {
        Frame::new(
            Address::WILDCARD,
            ControlCode::command(Function::ReadAddress),
            Vec::new(),
        )
        .expect("no data")
    }

    /// 08H to 999999999999: set every meter's clock; meters do not reply.
    pub fn broadcast_time(time: &MeterDateTime) -> Result<Frame, Dlt645Error> {
        Frame::time_sync(Address::BROADCAST, time)
    }

    /// 08H addressed to one meter. The standard defines 08H as a broadcast; many meters
    /// also accept it addressed to them alone, and such frames are seen in the field.
    pub fn time_sync(address: Address, time: &MeterDateTime) -> Result<Frame, Dlt645Error> {
        const FIELD: &str = "time to set";
        if time.to_naive().is_none() || time.second.is_none() {
            return Err(Dlt645Error::InvalidDateTime {
                field: FIELD.into(),
                value: time.to_string(),
            });
        }
        let data = time.to_wire_seconds(FIELD)?.to_vec();
        Frame::new(address, ControlCode::command(Function::BroadcastTime), data)
    }
}

/// Check that `frame` is the meter's complete, normal answer to reading `expected` and
/// return the typed value.
///
/// Errors: [`Dlt645Error::MeterRefused`] for an abnormal reply (with the decoded error
/// word), [`Dlt645Error::DiMismatch`] when another identifier was answered,
/// [`Dlt645Error::FollowUpPending`] when the value continues in follow-up frames,
/// [`Dlt645Error::UnexpectedFrame`] for anything but a read reply,
/// [`Dlt645Error::UnknownDi`] for identifiers outside the catalogue, and the value's own
/// decoding errors.
pub fn read_reply_value(frame: &Frame, expected: Di) -> Result<DataValue, Dlt645Error> {
    let control = frame.control();
    if !control.is_reply() || control.function() != Function::ReadData {
        return Err(Dlt645Error::UnexpectedFrame {
            expected: "a read data reply (91H)",
            control: control.byte(),
        });
    }
    if control.is_abnormal() {
        return Err(Dlt645Error::MeterRefused {
            function: Function::ReadData,
            error: meter_error(Function::ReadData, frame.data()),
        });
    }
    let data = frame.data();
    if data.len() < 4 {
        return Err(truncated("read reply (identifier and data)", 4, data));
    }
    let di = Di::from_wire(&data[..4])?;
    if di != expected {
        return Err(Dlt645Error::DiMismatch {
            expected,
            found: di,
        });
    }
    if control.has_follow_up() {
        return Err(Dlt645Error::FollowUpPending { di });
    }
    decode_value(di, &data[4..])
}
