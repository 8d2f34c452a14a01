//! DL/T 645-2007 (多功能电能表通信协议), the RS485 protocol of Chinese electricity meters:
//! frame codec, typed read values, relay control.
//!
//! Layers, bottom up:
//!
//! - [`Frame`]: framing, the 33H data offset and the checksum; [`find_frame`] and
//!   [`StreamDecoder`] pull frames out of a noisy byte stream.
//! - [`Payload`] / [`DecodedFrame`]: what a frame means — a read command, a read reply
//!   with its [`DataValue`], a relay command, an error reply with its [`MeterError`].
//! - Builders: [`Frame::read_data`], [`Frame::read_follow_up`], [`Frame::read_address`],
//!   [`Frame::broadcast_time`], [`Frame::relay_control`].
//!
//! ```
//! use feegate_meter::dlt645::{Address, Di, Frame, read_reply_value};
//!
//! let meter: Address = "201000000012".parse().unwrap();
//! let request = Frame::read_data(meter, Di::REMAINING_MONEY).encode_with_preamble();
//! assert_eq!(request[..5], [0xFE, 0xFE, 0xFE, 0xFE, 0x68]);
//!
//! // The meter's answer: 198.56 yuan.
//! let reply = Frame::decode(&[
//!     0x68, 0x12, 0x00, 0x00, 0x00, 0x10, 0x20, 0x68, 0x91, 0x08, 0x33, 0x35, 0xC3, 0x33,
//!     0x89, 0xCB, 0x34, 0x33, 0xC4, 0x16,
//! ]).unwrap();
//! let value = read_reply_value(&reply, Di::REMAINING_MONEY).unwrap();
//! assert_eq!(value.scalar(), Some("198.56".parse().unwrap()));
//! ```
//!
//! Sources: the frame format, control code, error word and data identifiers follow
//! DL/T 645-2007 and its Appendix A data identifier tables. Where State Grid's later
//! fee-control amendments add to it (status word 3 bits 12–15, the two-byte relay error
//! word, ESAM-sealed relay commands), the item's documentation says so.

#![warn(missing_docs)]

mod address;
mod bcd;
mod control;
mod decode;
mod di;
mod error;
mod frame;
mod relay;
mod status;
mod time;

#[cfg(test)]
mod tests;

pub use address::{Address, AddressKind};
pub use control::{ControlCode, Direction, Function};
pub use decode::{DecodedFrame, Payload, ReadReply, decode_hex, read_reply_value};
pub use di::{DataValue, Di, EnergyBlock, Phase, decode_value};
pub use error::{Dlt645Error, SecurityModuleError};
pub use frame::{
    DATA_OFFSET, DEFAULT_PREAMBLE_LEN, END, Frame, PREAMBLE, START, Scan, StreamDecoder, checksum,
    find_frame,
};
pub use relay::{
    NoSecurityModule, OperatorCode, Password, RelayAuthorisation, RelayCommand, RelayControl,
    RelayControlRequest, RelaySealRequest, SEALED_PASSWORD_LEVEL, SealedRelayControl,
    SealedRelayControlRequest, SecurityModule,
};
pub use status::{
    ErrorCondition, ErrorWord, MeterError, MeterType, PowerSupply, RelayErrorCondition,
    RelayErrorWord, RelayState, StatusWord3,
};
pub use time::{MeterDate, MeterDateTime, MeterTime};
