//! Errors of the DL/T 645-2007 codec.
//!
//! Every variant names the broken field, so a message read in a log or printed by
//! `feegate dlt645 decode` says where the frame went wrong without a hex dump.

use super::control::Function;
use super::di::Di;
use super::status::MeterError;

/// Everything that can go wrong while decoding or building a DL/T 645-2007 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Dlt645Error {
    /// The hex text handed to [`decode_hex`](super::decode_hex) is not hex.
    #[error("hex input: {reason} at character {position}")]
    BadHex {
        /// 0-based index of the offending character (after whitespace was dropped).
        position: usize,
        /// What is wrong there.
        reason: &'static str,
    },

    /// The frame does not begin (after any FEH preamble) with the start byte 68H.
    #[error("frame start: expected 68H, found {found:02X}H")]
    BadStart {
        /// The byte found where 68H was expected.
        found: u8,
    },

    /// The second start byte (after the 6 address bytes) is not 68H.
    #[error("second frame start (after the address): expected 68H, found {found:02X}H")]
    BadSecondStart {
        /// The byte found where the second 68H was expected.
        found: u8,
    },

    /// Fewer bytes than the field needs.
    #[error("{field}: truncated, needs {needed} bytes, only {available} present")]
    Truncated {
        /// The field that is cut short.
        field: String,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },

    /// The byte after the checksum is not the end byte 16H.
    #[error("frame end: expected 16H, found {found:02X}H")]
    BadEnd {
        /// The byte found where 16H was expected.
        found: u8,
    },

    /// The checksum byte disagrees with the sum (mod 256) of all bytes from the first
    /// 68H through the last data byte.
    #[error("checksum: computed {expected:02X}H, frame carries {found:02X}H")]
    BadChecksum {
        /// The checksum computed over the received bytes.
        expected: u8,
        /// The checksum byte the frame carries.
        found: u8,
    },

    /// A length does not fit its field: the L byte versus the bytes present, or a data
    /// item whose size disagrees with its data identifier's format.
    #[error("{field}: length {found} bytes, expected {expected}")]
    LengthMismatch {
        /// The field whose length is wrong.
        field: String,
        /// What the standard (or the L byte) says, e.g. `"4"` or `"a multiple of 4"`.
        expected: String,
        /// Bytes actually present.
        found: usize,
    },

    /// A byte that must be BCD has a nibble above 9.
    #[error("{field}: byte {byte:02X}H is not BCD")]
    BadBcd {
        /// The field holding the bad byte.
        field: String,
        /// The offending byte (after the 33H offset was removed).
        byte: u8,
    },

    /// BCD digits that do not form a valid calendar date/time where one is required.
    #[error("{field}: {value} is not a valid date/time")]
    InvalidDateTime {
        /// The field holding the date/time.
        field: String,
        /// The value as read, `YYYY-MM-DD hh:mm:ss`.
        value: String,
    },

    /// The data identifier is not in Feegate's catalogue, so its value cannot be typed.
    #[error("data identifier {di} is not in Feegate's DL/T 645-2007 catalogue")]
    UnknownDi {
        /// The identifier, as written in the standard (DI3 DI2 DI1 DI0).
        di: Di,
    },

    /// A reply carries another data identifier than the one requested.
    #[error("reply data identifier: requested {expected}, meter answered {found}")]
    DiMismatch {
        /// The identifier that was requested.
        expected: Di,
        /// The identifier in the reply.
        found: Di,
    },

    /// The data field would not fit in the single length byte L (0..=255).
    #[error("data field: {len} bytes do not fit in the length byte (at most 255)")]
    DataTooLong {
        /// Bytes the data field would have.
        len: usize,
    },

    /// A meter address could not be parsed.
    #[error("meter address {input:?}: {reason}")]
    InvalidAddress {
        /// The text that was given.
        input: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A value handed to a builder is outside what the standard allows.
    #[error("{field}: {reason}")]
    InvalidValue {
        /// The field that was given.
        field: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A command that must reach exactly one meter was addressed to the broadcast or a
    /// wildcard address.
    #[error("{function} must be addressed to one meter; {address} is a broadcast/wildcard address")]
    UnsafeAddress {
        /// The command's function.
        function: Function,
        /// The address that was refused.
        address: String,
    },

    /// The frame is not the kind the caller expected (e.g. a request where a reply was awaited).
    #[error("expected {expected}, got control code {control:02X}H")]
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// The control code received.
        control: u8,
    },

    /// The meter answered with an abnormal reply (control code bit D6 set).
    #[error("{function}: {error}")]
    MeterRefused {
        /// The function the meter refused.
        function: Function,
        /// The decoded error field.
        error: MeterError,
    },

    /// The reply announces follow-up frames (D5 set): the value is split over several
    /// frames and must be reassembled with function 12H before it can be typed.
    #[error("reply for {di} continues in follow-up frames (read them with function 12H)")]
    FollowUpPending {
        /// The identifier being read.
        di: Di,
    },

    /// The security module could not seal a relay command.
    #[error(transparent)]
    Security(#[from] SecurityModuleError),
}

/// Errors of a [`SecurityModule`](super::SecurityModule), the county's encryption service
/// (ESAM / encryption machine) that seals relay commands for meters that refuse plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityModuleError {
    /// No security module is configured (see [`NoSecurityModule`](super::NoSecurityModule)).
    #[error("meter requires an encrypted relay command; configure the county's security module")]
    NotConfigured,

    /// The module refused (e.g. no authenticated session with this meter, key mismatch).
    #[error("security module refused to seal the relay command: {reason}")]
    Refused {
        /// The module's own explanation.
        reason: String,
    },

    /// The module could not be reached.
    #[error("security module unavailable: {reason}")]
    Unavailable {
        /// The module's own explanation.
        reason: String,
    },
}
