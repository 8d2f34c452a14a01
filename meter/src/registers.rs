//! The Modbus register map of the simulated meter, shared by the simulator ([`crate::sim`])
//! and the host's client ([`crate::client`]).
//!
//! One Modbus TCP gateway (a serial-to-Ethernet converter on the meters' RS485 bus) serves up to
//! [`MAX_UNITS_PER_GATEWAY`] meters; a meter's **unit id** is its index on the gateway + 1
//! (`1..=247`).
//!
//! All addresses are 0-based Modbus protocol addresses. 32-bit values occupy two consecutive
//! 16-bit registers, **big-endian word order: high word first** (at the lower address), and each
//! word is big-endian on the wire as Modbus requires.
//!
//! | address         | FC | type      | unit      | meaning |
//! |-----------------|----|-----------|-----------|---------|
//! | 0x0000–0x0001   | 04 | u32, hi/lo | 0.01 kWh | total forward active energy, live register ([`INPUT_ENERGY`]) |
//! | 0x0002–0x0003   | 04 | u32, hi/lo | 0.01 kWh | daily frozen total forward active energy (日冻结): the register value at 00:00 of the frozen date ([`INPUT_FROZEN_ENERGY`]) |
//! | 0x0004          | 04 | u16       | year      | frozen date: year, e.g. 2013; 0 = no frozen record yet ([`INPUT_FROZEN_YEAR`]) |
//! | 0x0005          | 04 | u16       | month     | frozen date: month 1–12 ([`INPUT_FROZEN_MONTH`]) |
//! | 0x0006          | 04 | u16       | day       | frozen date: day of month 1–31 ([`INPUT_FROZEN_DAY`]) |
//! | 0x0010          | 04 | u16       | enum      | relay state: 0 closed, 1 open (tripped), 2 close-allowed ([`INPUT_RELAY_STATE`], [`RelayState`]) |
//! | 0x0100          | 06 (write), 03 (read back) | u16 | enum | relay command: 0x1A trip, 0x1B close-allowed (合闸允许), 0x1C direct close ([`HOLDING_RELAY_COMMAND`], [`RelayCommand`]); reads back the last command written, 0 if none |
//!
//! Any other address, or an address range that leaves the map (the gap 0x0007–0x000F included),
//! is answered with Modbus exception 0x02 IllegalDataAddress; any other function code with 0x01
//! IllegalFunction; a command value other than 0x1A/0x1B/0x1C, or a read quantity outside
//! `1..=125`, with 0x03 IllegalDataValue. A unit id that is not configured on the gateway gets
//! 0x0A GatewayPathUnavailable.
//!
//! **Energy register range.** The register is a u32 in 0.01 kWh on the wire, but the meter
//! counts like a DL/T 645-2007 energy register: 6 integer and 2 decimal digits, maximum
//! 999999.99 kWh ([`ENERGY_REGISTER_MAX`] = 99_999_999). One hundredth more wraps it to 0
//! (modulo [`ENERGY_REGISTER_MODULUS`]); readers must handle that rollover.

use std::fmt;
use std::net::SocketAddr;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// FC 04, 0x0000–0x0001: total forward active energy, live register, u32 (high word first),
/// 0.01 kWh.
pub const INPUT_ENERGY: u16 = 0x0000;
/// FC 04, 0x0002–0x0003: daily frozen total forward active energy (日冻结), u32 (high word
/// first), 0.01 kWh — the register value at 00:00 of the frozen date.
pub const INPUT_FROZEN_ENERGY: u16 = 0x0002;
/// FC 04, 0x0004: year of the frozen date (u16, e.g. 2013); 0 while the meter has no frozen
/// record yet.
pub const INPUT_FROZEN_YEAR: u16 = 0x0004;
/// FC 04, 0x0005: month of the frozen date (u16, 1–12).
pub const INPUT_FROZEN_MONTH: u16 = 0x0005;
/// FC 04, 0x0006: day of month of the frozen date (u16, 1–31).
pub const INPUT_FROZEN_DAY: u16 = 0x0006;
/// FC 04, 0x0010: relay state (u16): 0 closed, 1 open, 2 close-allowed. See [`RelayState`].
pub const INPUT_RELAY_STATE: u16 = 0x0010;
/// FC 06 (write single register), 0x0100: relay command (u16). See [`RelayCommand`].
/// FC 03 reads back the last command written (0 if none).
pub const HOLDING_RELAY_COMMAND: u16 = 0x0100;

/// First register of the daily frozen block read in one request (frozen energy + date).
pub const FROZEN_BLOCK_START: u16 = INPUT_FROZEN_ENERGY;
/// Number of registers of the daily frozen block: energy (2 words) + year, month, day.
pub const FROZEN_BLOCK_LEN: u16 = 5;

/// Largest energy register value, in 0.01 kWh: 99_999_999 = 999999.99 kWh, the maximum of a
/// DL/T 645-2007 energy register (XXXXXX.XX). The next hundredth wraps the register to 0.
pub const ENERGY_REGISTER_MAX: u32 = 99_999_999;
/// The energy register counts modulo this many 0.01 kWh (10^8, i.e. 1,000,000.00 kWh).
pub const ENERGY_REGISTER_MODULUS: u32 = ENERGY_REGISTER_MAX + 1;

/// Most meters (unit ids 1..=247) one Modbus gateway can address.
pub const MAX_UNITS_PER_GATEWAY: u8 = 247;
/// Most registers one FC 03/04 request may read (Modbus application protocol limit).
pub const MAX_READ_QUANTITY: u16 = 125;

/// Where a meter is reached: its Modbus TCP gateway and its unit id on that gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeterAddress {
    /// The gateway's TCP address (IP and port).
    pub gateway: SocketAddr,
    /// Modbus unit id on the gateway, 1..=247 (the meter's index on the gateway + 1).
    pub unit: u8,
}

impl fmt::Display for MeterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unit {}", self.gateway, self.unit)
    }
}

/// State of the meter's load switch (relay), input register [`INPUT_RELAY_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Relay closed: the customer has power (register value 0).
    Closed,
    /// Relay open (tripped, 跳闸): no power (register value 1).
    Open,
    /// Close-allowed (合闸允许): the relay is still open, armed and waiting for the customer to
    /// press the meter's button (register value 2). No power until then.
    CloseAllowed,
}

impl RelayState {
    /// The register value: 0 closed, 1 open, 2 close-allowed.
    pub const fn to_register(self) -> u16 {
        match self {
            RelayState::Closed => 0,
            RelayState::Open => 1,
            RelayState::CloseAllowed => 2,
        }
    }

    /// Decodes the register value; `None` for anything but 0, 1, 2.
    pub const fn from_register(value: u16) -> Option<Self> {
        match value {
            0 => Some(RelayState::Closed),
            1 => Some(RelayState::Open),
            2 => Some(RelayState::CloseAllowed),
            _ => None,
        }
    }

    /// True when the customer has power (only [`RelayState::Closed`]).
    pub const fn supplies_power(self) -> bool {
        matches!(self, RelayState::Closed)
    }
}

impl fmt::Display for RelayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayState::Closed => "closed",
            RelayState::Open => "open",
            RelayState::CloseAllowed => "close-allowed",
        })
    }
}

/// A relay command, written to holding register [`HOLDING_RELAY_COMMAND`] with FC 06.
///
/// The codes are the control-command bytes of DL/T 645-2007 remote control (control code 1CH):
/// 1AH trip (跳闸), 1BH close-allowed (合闸允许), 1CH direct close (直接合闸).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayCommand {
    /// 0x1A: open the relay (跳闸).
    Trip,
    /// 0x1B: arm the relay; it closes when the customer presses the meter button
    /// (合闸允许, safe reconnection 安全复电). A relay that is already closed stays closed.
    CloseAllowed,
    /// 0x1C: close the relay at once (直接合闸).
    DirectClose,
}

impl RelayCommand {
    /// The command code written to the register: 0x1A, 0x1B or 0x1C.
    pub const fn code(self) -> u16 {
        match self {
            RelayCommand::Trip => 0x1A,
            RelayCommand::CloseAllowed => 0x1B,
            RelayCommand::DirectClose => 0x1C,
        }
    }

    /// Decodes a command code; `None` for anything but 0x1A, 0x1B, 0x1C.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            0x1A => Some(RelayCommand::Trip),
            0x1B => Some(RelayCommand::CloseAllowed),
            0x1C => Some(RelayCommand::DirectClose),
            _ => None,
        }
    }

    /// The relay state the command leads to from `current` on a meter that obeys it.
    /// Close-allowed on a closed relay leaves it closed; on an open one it arms it.
    pub const fn apply(self, current: RelayState) -> RelayState {
        match (self, current) {
            (RelayCommand::Trip, _) => RelayState::Open,
            (RelayCommand::DirectClose, _) => RelayState::Closed,
            (RelayCommand::CloseAllowed, RelayState::Closed) => RelayState::Closed,
            (RelayCommand::CloseAllowed, _) => RelayState::CloseAllowed,
        }
    }
}

impl fmt::Display for RelayCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayCommand::Trip => "trip",
            RelayCommand::CloseAllowed => "close-allowed",
            RelayCommand::DirectClose => "direct close",
        })
    }
}

/// A register block that does not decode to a meaningful value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Splits a u32 into two registers, high word first.
pub const fn u32_to_words(value: u32) -> [u16; 2] {
    [(value >> 16) as u16, value as u16]
}

/// Joins two registers, high word first, into a u32.
pub const fn words_to_u32(high: u16, low: u16) -> u32 {
    ((high as u32) << 16) | low as u32
}

/// An energy register value in 0.01 kWh as exact kWh (scale 2), e.g. 123456 → 1234.56 kWh.
pub fn hundredths_to_kwh(hundredths: u32) -> Decimal {
    Decimal::new(i64::from(hundredths), 2)
}

/// Decodes the energy register pair (0.01 kWh, high word first) to kWh; rejects values above
/// [`ENERGY_REGISTER_MAX`], which this meter never shows.
pub fn decode_energy(words: &[u16]) -> Result<Decimal, DecodeError> {
    let [high, low] = words else {
        return Err(DecodeError(format!(
            "energy register needs 2 registers, got {}",
            words.len()
        )));
    };
    let value = words_to_u32(*high, *low);
    if value > ENERGY_REGISTER_MAX {
        return Err(DecodeError(format!(
            "energy register {value} (0.01 kWh) is above the register maximum {ENERGY_REGISTER_MAX}: \
             wrong register map or word order for this meter type"
        )));
    }
    Ok(hundredths_to_kwh(value))
}

/// The daily frozen record (日冻结) as held in registers 0x0002–0x0006.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrozenRecord {
    /// The frozen date: the record is the register value at 00:00 of this date.
    pub date: NaiveDate,
    /// The register value at that instant, 0.01 kWh.
    pub energy_hundredths: u32,
}

/// Encodes the frozen block (5 registers from [`FROZEN_BLOCK_START`]); `None` (no freeze yet)
/// is all zeros.
pub fn encode_frozen(record: Option<FrozenRecord>) -> [u16; 5] {
    match record {
        None => [0; 5],
        Some(r) => {
            let [hi, lo] = u32_to_words(r.energy_hundredths);
            // Years outside u16 cannot occur in a simulation; clamp rather than wrap.
            let year = u16::try_from(r.date.year()).unwrap_or(0);
            [hi, lo, year, r.date.month() as u16, r.date.day() as u16]
        }
    }
}

/// Decodes the frozen block (5 registers from [`FROZEN_BLOCK_START`]). `Ok(None)` when the
/// meter has no frozen record yet (year 0 and everything zero).
pub fn decode_frozen(words: &[u16]) -> Result<Option<FrozenRecord>, DecodeError> {
    let [hi, lo, year, month, day] = words else {
        return Err(DecodeError(format!(
            "daily frozen block needs {FROZEN_BLOCK_LEN} registers, got {}",
            words.len()
        )));
    };
    if words.iter().all(|w| *w == 0) {
        return Ok(None);
    }
    let date = NaiveDate::from_ymd_opt(i32::from(*year), u32::from(*month), u32::from(*day))
        .ok_or_else(|| {
            DecodeError(format!(
                "daily frozen date {year:04}-{month:02}-{day:02} is not a calendar date: \
                 check the meter's clock and register map"
            ))
        })?;
    let energy = words_to_u32(*hi, *lo);
    if energy > ENERGY_REGISTER_MAX {
        return Err(DecodeError(format!(
            "daily frozen energy {energy} (0.01 kWh) is above the register maximum \
             {ENERGY_REGISTER_MAX}: wrong register map or word order for this meter type"
        )));
    }
    Ok(Some(FrozenRecord {
        date,
        energy_hundredths: energy,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_words_are_high_word_first() {
        assert_eq!(u32_to_words(0x1234_5678), [0x1234, 0x5678]);
        assert_eq!(words_to_u32(0x1234, 0x5678), 0x1234_5678);
        assert_eq!(u32_to_words(ENERGY_REGISTER_MAX), [0x05F5, 0xE0FF]);
    }

    #[test]
    fn energy_decodes_to_exact_kwh() {
        let words = u32_to_words(123_456);
        assert_eq!(decode_energy(&words).unwrap(), Decimal::new(123_456, 2));
        assert_eq!(decode_energy(&words).unwrap().to_string(), "1234.56");
        assert!(decode_energy(&u32_to_words(ENERGY_REGISTER_MAX + 1)).is_err());
        assert!(decode_energy(&[1]).is_err());
    }

    #[test]
    fn frozen_block_round_trips() {
        let rec = FrozenRecord {
            date: NaiveDate::from_ymd_opt(2013, 1, 2).unwrap(),
            energy_hundredths: 501_080,
        };
        let words = encode_frozen(Some(rec));
        assert_eq!(words, [0x0007, 0xA558, 2013, 1, 2]);
        assert_eq!(decode_frozen(&words).unwrap(), Some(rec));
        assert_eq!(decode_frozen(&encode_frozen(None)).unwrap(), None);
        assert!(decode_frozen(&[0, 1, 2013, 2, 30]).is_err());
        assert!(decode_frozen(&[0, 1, 2013]).is_err());
    }

    #[test]
    fn relay_codes_follow_dlt645() {
        assert_eq!(RelayCommand::Trip.code(), 0x1A);
        assert_eq!(RelayCommand::CloseAllowed.code(), 0x1B);
        assert_eq!(RelayCommand::DirectClose.code(), 0x1C);
        for c in [
            RelayCommand::Trip,
            RelayCommand::CloseAllowed,
            RelayCommand::DirectClose,
        ] {
            assert_eq!(RelayCommand::from_code(c.code()), Some(c));
        }
        assert_eq!(RelayCommand::from_code(0x1D), None);
        for s in [
            RelayState::Closed,
            RelayState::Open,
            RelayState::CloseAllowed,
        ] {
            assert_eq!(RelayState::from_register(s.to_register()), Some(s));
        }
        assert_eq!(RelayState::from_register(3), None);
    }

    #[test]
    fn relay_command_transitions() {
        use RelayCommand::*;
        use RelayState::*;
        assert_eq!(Trip.apply(Closed), Open);
        assert_eq!(Trip.apply(RelayState::CloseAllowed), Open);
        assert_eq!(
            RelayCommand::CloseAllowed.apply(Open),
            RelayState::CloseAllowed
        );
        assert_eq!(RelayCommand::CloseAllowed.apply(Closed), Closed);
        assert_eq!(DirectClose.apply(Open), Closed);
        assert_eq!(DirectClose.apply(RelayState::CloseAllowed), Closed);
    }
}
