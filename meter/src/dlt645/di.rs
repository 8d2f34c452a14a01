//! Data identifiers (数据标识, DI) and the typed values Feegate reads with them.
//!
//! A DI is 4 bytes written DI3 DI2 DI1 DI0 (e.g. `0001FF00`) and sent low byte first
//! (DI0 first), each byte +33H like all data. Identifiers and data formats follow
//! DL/T 645-2007 Appendix A (data identifier tables); the catalogue here covers what a
//! fee-control platform reads. Identifiers outside it still decode at the frame level
//! (raw bytes), only their value stays untyped.
//!
//! Formats are written as in the standard: `XXXXXX.XX` is 8 BCD digits with 2 implied
//! decimals in 4 bytes, low byte first.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

use super::address::Address;
use super::bcd;
use super::error::Dlt645Error;
use super::status::StatusWord3;
use super::time::{MeterDate, MeterDateTime, MeterTime};

/// A data identifier, `DI3 DI2 DI1 DI0` as written in the standard's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Di(pub u32);

/// A phase of a three-phase meter (single-phase meters answer for phase A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Phase {
    /// Phase A (DI1 = 01).
    A,
    /// Phase B (DI1 = 02).
    B,
    /// Phase C (DI1 = 03).
    C,
}

impl Phase {
    fn di1(self) -> u32 {
        match self {
            Phase::A => 1,
            Phase::B => 2,
            Phase::C => 3,
        }
    }
}

impl Di {
    /// 00000000 combined active energy, total, current (组合有功总电能), kWh, signed.
    pub const COMBINED_ACTIVE_TOTAL: Di = Di(0x0000_0000);
    /// 00010000 forward active energy, total, current (正向有功总电能), kWh `XXXXXX.XX`.
    pub const FORWARD_ACTIVE_TOTAL: Di = Di(0x0001_0000);
    /// 0001FF00 forward active energy block: total then tariffs 1..n (T1..T4 are usually
    /// sharp/peak/flat/valley, 尖峰平谷), 4 bytes each, kWh.
    pub const FORWARD_ACTIVE_BLOCK: Di = Di(0x0001_FF00);
    /// 00020000 reverse active energy, total, current (反向有功总电能), kWh.
    pub const REVERSE_ACTIVE_TOTAL: Di = Di(0x0002_0000);
    /// 00900100 current remaining energy (剩余电量) of an energy-type prepayment meter, kWh.
    pub const REMAINING_ENERGY: Di = Di(0x0090_0100);
    /// 00900101 current overdraft energy (透支电量), kWh.
    pub const OVERDRAFT_ENERGY: Di = Di(0x0090_0101);
    /// 00900200 current remaining money (剩余金额) held by the meter, yuan `XXXXXX.XX`.
    /// Under remote fee control the host's ledger is authoritative, not this register.
    pub const REMAINING_MONEY: Di = Di(0x0090_0200);
    /// 00900201 current overdraft money (透支金额), yuan `XXXXXX.XX`.
    pub const OVERDRAFT_MONEY: Di = Di(0x0090_0201);
    /// 0201FF00 voltage block, phases A, B, C, V `XXX.X`.
    pub const VOLTAGE_BLOCK: Di = Di(0x0201_FF00);
    /// 0202FF00 current block, phases A, B, C, A `XXX.XXX`, signed.
    pub const CURRENT_BLOCK: Di = Di(0x0202_FF00);
    /// 02030000 total active power, kW `XX.XXXX`, signed.
    pub const ACTIVE_POWER_TOTAL: Di = Di(0x0203_0000);
    /// 0203FF00 active power block: total, A, B, C, kW.
    pub const ACTIVE_POWER_BLOCK: Di = Di(0x0203_FF00);
    /// 02060000 total power factor `X.XXX`, signed.
    pub const POWER_FACTOR_TOTAL: Di = Di(0x0206_0000);
    /// 02800001 neutral current, A `XXX.XXX`.
    pub const NEUTRAL_CURRENT: Di = Di(0x0280_0001);
    /// 02800002 grid frequency, Hz `XX.XX`.
    pub const FREQUENCY: Di = Di(0x0280_0002);
    /// 02800007 temperature inside the meter, °C `XXX.X`, signed.
    pub const METER_TEMPERATURE: Di = Di(0x0280_0007);
    /// 03300D00 meter cover opened, total count (开表盖总次数), `XXXXXX`.
    pub const METER_COVER_OPEN_COUNT: Di = Di(0x0330_0D00);
    /// 03300E00 terminal cover opened, total count (开端钮盒总次数), `XXXXXX`.
    pub const TERMINAL_COVER_OPEN_COUNT: Di = Di(0x0330_0E00);
    /// 04000101 date and weekday `YYMMDDWW`.
    pub const DATE: Di = Di(0x0400_0101);
    /// 04000102 time `hhmmss`.
    pub const TIME: Di = Di(0x0400_0102);
    /// 04000401 communication address (通信地址), 12 digits.
    pub const COMM_ADDRESS: Di = Di(0x0400_0401);
    /// 04000402 meter number (表号), 12 digits.
    pub const METER_NUMBER: Di = Di(0x0400_0402);
    /// 04000503 meter running status word 3 (电表运行状态字3): relay, keep-power, … See
    /// [`StatusWord3`].
    pub const STATUS_WORD_3: Di = Di(0x0400_0503);

    /// From the 4 wire bytes DI0 DI1 DI2 DI3 (33H offset already removed).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, Dlt645Error> {
        let b: [u8; 4] = bytes.try_into().map_err(|_| Dlt645Error::LengthMismatch {
            field: "data identifier".into(),
            expected: "4".into(),
            found: bytes.len(),
        })?;
        Ok(Di(u32::from_le_bytes(b)))
    }

    /// The 4 wire bytes DI0 DI1 DI2 DI3 (before the 33H offset).
    pub fn to_wire(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }

    /// Voltage of one phase, 0201xx00, V `XXX.X`.
    pub fn voltage(phase: Phase) -> Di {
        Di(0x0201_0000 | (phase.di1() << 8))
    }

    /// Current of one phase, 0202xx00, A `XXX.XXX`, signed.
    pub fn current(phase: Phase) -> Di {
        Di(0x0202_0000 | (phase.di1() << 8))
    }

    /// Daily freeze time of the `n`-th last daily freeze (1 = most recent), 050600nn,
    /// `YYMMDDhhmm`. `n` is 1..=62.
    pub fn daily_freeze_time(n: u8) -> Result<Di, Dlt645Error> {
        Ok(Di(0x0506_0000 | u32::from(last_n(n)?)))
    }

    /// Daily frozen forward active energy block (total then tariffs) of the `n`-th last
    /// daily freeze (1 = most recent, the reading frozen at the last 00:00), 050601nn,
    /// kWh. `n` is 1..=62.
    pub fn daily_frozen_forward_active(n: u8) -> Result<Di, Dlt645Error> {
        Ok(Di(0x0506_0100 | u32::from(last_n(n)?)))
    }

    /// Daily frozen reverse active energy block of the `n`-th last daily freeze, 050602nn.
    pub fn daily_frozen_reverse_active(n: u8) -> Result<Di, Dlt645Error> {
        Ok(Di(0x0506_0200 | u32::from(last_n(n)?)))
    }

    /// What this identifier means, in English, if it is in the catalogue.
    pub fn name(self) -> Option<String> {
        spec(self).map(|s| s.name)
    }
}

fn last_n(n: u8) -> Result<u8, Dlt645Error> {
    if (1..=62).contains(&n) {
        Ok(n)
    } else {
        Err(Dlt645Error::InvalidValue {
            field: "daily freeze index".into(),
            reason: format!("{n} is outside 1..=62 (the meter keeps 62 daily freezes)"),
        })
    }
}

impl fmt::Display for Di {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl FromStr for Di {
    type Err = Dlt645Error;

    /// 8 hex digits, DI3 first (`"0001FF00"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Dlt645Error::InvalidValue {
                field: "data identifier".into(),
                reason: format!("{s:?} is not 8 hex digits"),
            });
        }
        // Checked above: 8 hex digits always fit.
        Ok(Di(u32::from_str_radix(t, 16).unwrap_or_default()))
    }
}

impl Serialize for Di {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An energy block: the total register followed by the tariff registers.
///
/// Real meters round each register independently, so `total` need not equal the sum of
/// `tariffs`; never derive one from the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnergyBlock {
    /// Total, kWh.
    pub total: Decimal,
    /// Tariff registers T1..Tn, kWh (on 4-tariff meters: sharp, peak, flat, valley).
    pub tariffs: Vec<Decimal>,
}

/// A typed value read from a meter. Units are in the variant names; every number is an
/// exact decimal with the scale the standard's format gives (e.g. 2 decimals for kWh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataValue {
    /// One energy register, kWh.
    EnergyKwh(Decimal),
    /// Total and tariff energy registers, kWh.
    EnergyBlockKwh(EnergyBlock),
    /// Voltage, V.
    VoltageV(Decimal),
    /// Voltages of phases A, B, C (as many as the meter sent), V.
    VoltagesV(Vec<Decimal>),
    /// Current, A (negative = reverse direction).
    CurrentA(Decimal),
    /// Currents of phases A, B, C, A.
    CurrentsA(Vec<Decimal>),
    /// Active power, kW (negative = reverse).
    ActivePowerKw(Decimal),
    /// Active power total, A, B, C, kW.
    ActivePowersKw(Vec<Decimal>),
    /// Power factor (negative = reverse).
    PowerFactor(Decimal),
    /// Power factor total, A, B, C.
    PowerFactors(Vec<Decimal>),
    /// Frequency, Hz.
    FrequencyHz(Decimal),
    /// Temperature, °C.
    TemperatureC(Decimal),
    /// Money, yuan (元).
    MoneyYuan(Decimal),
    /// A count of events.
    Count(u64),
    /// A date with weekday.
    Date(MeterDate),
    /// A time of day.
    Time(MeterTime),
    /// A date-time (e.g. a freeze time).
    DateTime(MeterDateTime),
    /// Meter running status word 3.
    StatusWord3(StatusWord3),
    /// Another meter running status word, bits as sent.
    StatusWord {
        /// Which status word (1..=7).
        number: u8,
        /// The 16 bits.
        bits: u16,
    },
    /// A 12-digit address or meter number.
    Address(Address),
}

impl DataValue {
    /// The single energy register (kWh), or the total of an energy block.
    pub fn energy_kwh(&self) -> Option<Decimal> {
        match self {
            DataValue::EnergyKwh(v) => Some(*v),
            DataValue::EnergyBlockKwh(b) => Some(b.total),
            _ => None,
        }
    }

    /// A single scalar reading, whatever its unit (energy, voltage, money, count…).
    pub fn scalar(&self) -> Option<Decimal> {
        match self {
            DataValue::EnergyKwh(v)
            | DataValue::VoltageV(v)
            | DataValue::CurrentA(v)
            | DataValue::ActivePowerKw(v)
            | DataValue::PowerFactor(v)
            | DataValue::FrequencyHz(v)
            | DataValue::TemperatureC(v)
            | DataValue::MoneyYuan(v) => Some(*v),
            DataValue::Count(n) => Some(Decimal::from(*n)),
            _ => None,
        }
    }
}

/// Decode the value bytes (after the DI, 33H removed) of a read reply for `di`.
///
/// Fails with [`Dlt645Error::UnknownDi`] for identifiers outside the catalogue, with
/// [`Dlt645Error::LengthMismatch`] when the size disagrees with the format, and with
/// [`Dlt645Error::BadBcd`] for non-BCD digits.
pub fn decode_value(di: Di, bytes: &[u8]) -> Result<DataValue, Dlt645Error> {
    let spec = spec(di).ok_or(Dlt645Error::UnknownDi { di })?;
    let field = format!("value of {di} ({})", spec.name);
    let exact = |n: usize| {
        if bytes.len() == n {
            Ok(())
        } else {
            Err(Dlt645Error::LengthMismatch {
                field: field.clone(),
                expected: n.to_string(),
                found: bytes.len(),
            })
        }
    };
    let items = |size: usize, max: usize| -> Result<Vec<&[u8]>, Dlt645Error> {
        let n = bytes.len() / size;
        if bytes.is_empty() || !bytes.len().is_multiple_of(size) || n > max {
            return Err(Dlt645Error::LengthMismatch {
                field: field.clone(),
                expected: format!("a multiple of {size}, {size} to {} bytes", size * max),
                found: bytes.len(),
            });
        }
        Ok(bytes.chunks(size).collect())
    };
    let num = |q: Num, b: &[u8]| bcd::decimal(b, q.scale, q.signed, &field);
    let many = |q: Num, max: usize| -> Result<Vec<Decimal>, Dlt645Error> {
        items(q.bytes, max)?
            .into_iter()
            .map(|b| num(q, b))
            .collect()
    };

    Ok(match spec.format {
        Format::Energy(q) => {
            exact(q.bytes)?;
            DataValue::EnergyKwh(num(q, bytes)?)
        }
        Format::EnergyBlock(q) => {
            let mut values = many(q, 64)?;
            let total = values.remove(0);
            DataValue::EnergyBlockKwh(EnergyBlock {
                total,
                tariffs: values,
            })
        }
        Format::Scalar(q, kind) => {
            exact(q.bytes)?;
            let v = num(q, bytes)?;
            match kind {
                Kind::Voltage => DataValue::VoltageV(v),
                Kind::Current => DataValue::CurrentA(v),
                Kind::ActivePower => DataValue::ActivePowerKw(v),
                Kind::PowerFactor => DataValue::PowerFactor(v),
                Kind::Frequency => DataValue::FrequencyHz(v),
                Kind::Temperature => DataValue::TemperatureC(v),
                Kind::Money => DataValue::MoneyYuan(v),
            }
        }
        Format::Block(q, kind, max) => {
            let v = many(q, max)?;
            match kind {
                Kind::Voltage => DataValue::VoltagesV(v),
                Kind::Current => DataValue::CurrentsA(v),
                Kind::ActivePower => DataValue::ActivePowersKw(v),
                Kind::PowerFactor => DataValue::PowerFactors(v),
                // The catalogue has no blocks of these.
                Kind::Frequency | Kind::Temperature | Kind::Money => {
                    return Err(Dlt645Error::UnknownDi { di });
                }
            }
        }
        Format::Count(n) => {
            exact(n)?;
            DataValue::Count(bcd::unsigned(bytes, &field)?)
        }
        Format::Date => DataValue::Date(MeterDate::from_wire(bytes, &field)?),
        Format::Time => DataValue::Time(MeterTime::from_wire(bytes, &field)?),
        Format::MinuteDateTime => {
            DataValue::DateTime(MeterDateTime::from_wire_minutes(bytes, &field)?)
        }
        Format::StatusWord(number) => {
            exact(2)?;
            let bits = u16::from_le_bytes([bytes[0], bytes[1]]);
            if number == 3 {
                DataValue::StatusWord3(StatusWord3::from_bits(bits))
            } else {
                DataValue::StatusWord { number, bits }
            }
        }
        Format::Address => {
            exact(6)?;
            let mut wire = [0u8; 6];
            wire.copy_from_slice(bytes);
            // Same digits rules as the address field, but name this field in errors.
            DataValue::Address(Address::from_wire(wire).map_err(|e| match e {
                Dlt645Error::BadBcd { byte, .. } => Dlt645Error::BadBcd {
                    field: field.clone(),
                    byte,
                },
                other => other,
            })?)
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct Num {
    bytes: usize,
    scale: u32,
    signed: bool,
}

const KWH: Num = Num {
    bytes: 4,
    scale: 2,
    signed: false,
};
const KWH_SIGNED: Num = Num {
    bytes: 4,
    scale: 2,
    signed: true,
};
const YUAN: Num = KWH;
const VOLT: Num = Num {
    bytes: 2,
    scale: 1,
    signed: false,
};
const AMP: Num = Num {
    bytes: 3,
    scale: 3,
    signed: true,
};
const KW: Num = Num {
    bytes: 3,
    scale: 4,
    signed: true,
};
const PF: Num = Num {
    bytes: 2,
    scale: 3,
    signed: true,
};
const HZ: Num = Num {
    bytes: 2,
    scale: 2,
    signed: false,
};
const CELSIUS: Num = Num {
    bytes: 2,
    scale: 1,
    signed: true,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Voltage,
    Current,
    ActivePower,
    PowerFactor,
    Frequency,
    Temperature,
    Money,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Energy(Num),
    EnergyBlock(Num),
    Scalar(Num, Kind),
    /// Items of one format, at most this many.
    Block(Num, Kind, usize),
    /// Unsigned BCD count of this many bytes.
    Count(usize),
    Date,
    Time,
    MinuteDateTime,
    StatusWord(u8),
    Address,
}

struct Spec {
    name: String,
    format: Format,
}

fn spec(di: Di) -> Option<Spec> {
    let [di3, di2, di1, di0] = di.0.to_be_bytes();
    let s = |name: String, format| Some(Spec { name, format });
    match (di3, di2, di1, di0) {
        // Energy: DI2 = kind, DI1 = tariff (00 total, 01..3F tariff n, FF block),
        // DI0 = settlement period (00 current, 01..0C the n-th last settlement).
        (0x00, 0x00..=0x02, 0x00..=0x3F | 0xFF, 0x00..=0x0C) => {
            let (kind, q) = match di2 {
                0x00 => ("combined active energy", KWH_SIGNED),
                0x01 => ("forward active energy", KWH),
                _ => ("reverse active energy", KWH),
            };
            let tariff = match di1 {
                0x00 => "total".to_owned(),
                0xFF => "block (total, tariffs)".to_owned(),
                n => format!("tariff {n}"),
            };
            let period = match di0 {
                0 => "current".to_owned(),
                n => format!("last {n} settlement"),
            };
            let format = if di1 == 0xFF {
                Format::EnergyBlock(q)
            } else {
                Format::Energy(q)
            };
            s(format!("{kind}, {tariff}, {period}"), format)
        }
        (0x00, 0x90, 0x01, 0x00) => s("remaining energy".into(), Format::Energy(KWH)),
        (0x00, 0x90, 0x01, 0x01) => s("overdraft energy".into(), Format::Energy(KWH)),
        (0x00, 0x90, 0x02, 0x00) => s("remaining money".into(), Format::Scalar(YUAN, Kind::Money)),
        (0x00, 0x90, 0x02, 0x01) => s("overdraft money".into(), Format::Scalar(YUAN, Kind::Money)),

        (0x02, 0x01, 0x01..=0x03, 0x00) => s(
            format!("phase {} voltage", phase_letter(di1)),
            Format::Scalar(VOLT, Kind::Voltage),
        ),
        (0x02, 0x01, 0xFF, 0x00) => s(
            "voltage block (A, B, C)".into(),
            Format::Block(VOLT, Kind::Voltage, 3),
        ),
        (0x02, 0x02, 0x01..=0x03, 0x00) => s(
            format!("phase {} current", phase_letter(di1)),
            Format::Scalar(AMP, Kind::Current),
        ),
        (0x02, 0x02, 0xFF, 0x00) => s(
            "current block (A, B, C)".into(),
            Format::Block(AMP, Kind::Current, 3),
        ),
        (0x02, 0x03, 0x00..=0x03, 0x00) => s(
            format!("{} active power", total_or_phase(di1)),
            Format::Scalar(KW, Kind::ActivePower),
        ),
        (0x02, 0x03, 0xFF, 0x00) => s(
            "active power block (total, A, B, C)".into(),
            Format::Block(KW, Kind::ActivePower, 4),
        ),
        (0x02, 0x06, 0x00..=0x03, 0x00) => s(
            format!("{} power factor", total_or_phase(di1)),
            Format::Scalar(PF, Kind::PowerFactor),
        ),
        (0x02, 0x06, 0xFF, 0x00) => s(
            "power factor block (total, A, B, C)".into(),
            Format::Block(PF, Kind::PowerFactor, 4),
        ),
        (0x02, 0x80, 0x00, 0x01) => s("neutral current".into(), Format::Scalar(AMP, Kind::Current)),
        (0x02, 0x80, 0x00, 0x02) => s("grid frequency".into(), Format::Scalar(HZ, Kind::Frequency)),
        (0x02, 0x80, 0x00, 0x07) => s(
            "temperature inside the meter".into(),
            Format::Scalar(CELSIUS, Kind::Temperature),
        ),

        (0x03, 0x30, 0x0D, 0x00) => s("meter cover opened, total count".into(), Format::Count(3)),
        (0x03, 0x30, 0x0E, 0x00) => s(
            "terminal cover opened, total count".into(),
            Format::Count(3),
        ),

        (0x04, 0x00, 0x01, 0x01) => s("date and weekday".into(), Format::Date),
        (0x04, 0x00, 0x01, 0x02) => s("time".into(), Format::Time),
        (0x04, 0x00, 0x04, 0x01) => s("communication address".into(), Format::Address),
        (0x04, 0x00, 0x04, 0x02) => s("meter number".into(), Format::Address),
        (0x04, 0x00, 0x05, 0x01..=0x07) => s(
            format!("meter running status word {di0}"),
            Format::StatusWord(di0),
        ),

        // Daily freeze: DI1 = item (00 freeze time, 01 forward active, 02 reverse
        // active), DI0 = the n-th last freeze (1..=62).
        (0x05, 0x06, 0x00, 0x01..=0x3E) => s(
            format!("(last {di0}) daily freeze time"),
            Format::MinuteDateTime,
        ),
        (0x05, 0x06, 0x01, 0x01..=0x3E) => s(
            format!("(last {di0}) daily frozen forward active energy block"),
            Format::EnergyBlock(KWH),
        ),
        (0x05, 0x06, 0x02, 0x01..=0x3E) => s(
            format!("(last {di0}) daily frozen reverse active energy block"),
            Format::EnergyBlock(KWH),
        ),
        _ => None,
    }
}

fn phase_letter(di1: u8) -> char {
    match di1 {
        1 => 'A',
        2 => 'B',
        _ => 'C',
    }
}

fn total_or_phase(di1: u8) -> String {
    match di1 {
        0 => "total".into(),
        n => format!("phase {}", phase_letter(n)),
    }
}
