//! Status and error words: meter running status word 3 (relay and keep-power state) and
//! the error fields of abnormal replies.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// Relay (load switch) position as status word 3 reports it: 0 = closed (通), 1 = open (断).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// 通: power flows.
    Closed,
    /// 断: disconnected.
    Open,
}

impl RelayState {
    fn from_bit(set: bool) -> Self {
        if set { Self::Open } else { Self::Closed }
    }
}

/// How the meter is powered (status word 3, bits 1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSupply {
    /// 00: mains (主电源).
    Main,
    /// 01: auxiliary supply (辅助电源).
    Auxiliary,
    /// 10: battery (电池供电), e.g. read during an outage.
    Battery,
    /// 11: not defined by the standard.
    Undefined,
}

/// The meter's prepayment type (status word 3, bits 8–9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterType {
    /// 00: not a prepayment meter (非预付费表).
    NonPrepayment,
    /// 01: energy-based prepayment meter (电量型预付费表).
    EnergyPrepayment,
    /// 10: money-based prepayment meter (电费型预付费表).
    MoneyPrepayment,
    /// 11: not defined by the standard.
    Undefined,
}

/// Meter running status word 3 (电表运行状态字3, DI 04000503), the "operation" status.
///
/// Bit layout (bit 0 = least significant bit of the first byte sent):
///
/// | bit | meaning | 0 / 1 |
/// |---|---|---|
/// | 0 | current daily time-period table (当前运行时段) | first / second set |
/// | 1–2 | power supply (供电方式) | 00 mains, 01 auxiliary, 10 battery |
/// | 3 | programming allowed (编程允许) | forbidden / allowed |
/// | 4 | **relay state** (继电器状态) | closed / open |
/// | 5 | current year time-zone table (当前运行时区) | first / second set |
/// | 6 | **relay command state** (继电器命令状态) | close / open |
/// | 7 | pre-trip alarm (预跳闸报警状态) | none / alarming |
/// | 8–9 | meter type (电能表类型) | 00 non-prepayment, 01 energy, 10 money |
/// | 10 | current tariff price set (当前运行分时费率) | first / second |
/// | 11 | current step-tariff set (当前阶梯) | first / second |
/// | 12 | **keep-power** (保电状态) | not protected / protected |
/// | 13 | identity authentication (身份认证状态) | invalid / valid |
/// | 14 | local account opened (本地开户) | |
/// | 15 | remote account opened (远程开户) | |
///
/// Bits 0–11 follow DL/T 645-2007 Appendix A. Bits 12–15 are reserved in the 2007 text;
/// State Grid fee-control meters use them as listed (as seen in deployed meter
/// software). Older meters leave them 0, so a clear keep-power bit is no proof that
/// keep-power is off on such a meter; the host's own keep-power flag stays authoritative.
///
/// Bit 4 is what the relay did, bit 6 what it was told: after a trip command, a relay
/// that is confirmed open has both set. Feegate counts a relay command as done only when
/// bit 4 agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord3 {
    bits: u16,
}

impl StatusWord3 {
    /// Bit 4, relay state.
    pub const RELAY_OPEN: u16 = 1 << 4;
    /// Bit 6, relay command state.
    pub const RELAY_COMMAND_OPEN: u16 = 1 << 6;
    /// Bit 7, pre-trip alarm.
    pub const PRE_TRIP_ALARM: u16 = 1 << 7;
    /// Bit 12, keep-power (保电).
    pub const KEEP_POWER: u16 = 1 << 12;

    /// From the 16 bits (first byte sent = low byte).
    pub const fn from_bits(bits: u16) -> Self {
        Self { bits }
    }

    /// The 16 bits.
    pub const fn bits(self) -> u16 {
        self.bits
    }

    fn bit(self, n: u16) -> bool {
        self.bits & (1 << n) != 0
    }

    /// Bit 4: the relay's actual position.
    pub fn relay(self) -> RelayState {
        RelayState::from_bit(self.bit(4))
    }

    /// Bit 6: the position the relay was last commanded to.
    pub fn relay_command(self) -> RelayState {
        RelayState::from_bit(self.bit(6))
    }

    /// Bit 7: pre-trip alarm active.
    pub fn pre_trip_alarm(self) -> bool {
        self.bit(7)
    }

    /// Bit 12: keep-power (保电) protection active; the meter refuses trips.
    pub fn keep_power(self) -> bool {
        self.bit(12)
    }

    /// Bit 3: programming allowed.
    pub fn programming_allowed(self) -> bool {
        self.bit(3)
    }

    /// Bits 1–2: power supply.
    pub fn power_supply(self) -> PowerSupply {
        match (self.bits >> 1) & 0b11 {
            0 => PowerSupply::Main,
            1 => PowerSupply::Auxiliary,
            2 => PowerSupply::Battery,
            _ => PowerSupply::Undefined,
        }
    }

    /// Bits 8–9: meter type.
    pub fn meter_type(self) -> MeterType {
        match (self.bits >> 8) & 0b11 {
            0 => MeterType::NonPrepayment,
            1 => MeterType::EnergyPrepayment,
            2 => MeterType::MoneyPrepayment,
            _ => MeterType::Undefined,
        }
    }

    /// Bit 0: running on the second daily time-period table.
    pub fn second_daily_period_table(self) -> bool {
        self.bit(0)
    }

    /// Bit 5: running on the second year time-zone table.
    pub fn second_time_zone_table(self) -> bool {
        self.bit(5)
    }

    /// Bit 10: running on the second tariff price set.
    pub fn second_tariff_set(self) -> bool {
        self.bit(10)
    }

    /// Bit 11: running on the second step-tariff set.
    pub fn second_step_tariff_set(self) -> bool {
        self.bit(11)
    }

    /// Bit 13: identity authentication (ESAM session) valid.
    pub fn identity_authenticated(self) -> bool {
        self.bit(13)
    }

    /// Bit 14: local account opened.
    pub fn local_account_open(self) -> bool {
        self.bit(14)
    }

    /// Bit 15: remote account opened.
    pub fn remote_account_open(self) -> bool {
        self.bit(15)
    }
}

impl Serialize for StatusWord3 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("StatusWord3", 16)?;
        st.serialize_field("bits", &format!("{:04X}", self.bits))?;
        st.serialize_field("relay", &self.relay())?;
        st.serialize_field("relay_command", &self.relay_command())?;
        st.serialize_field("pre_trip_alarm", &self.pre_trip_alarm())?;
        st.serialize_field("keep_power", &self.keep_power())?;
        st.serialize_field("programming_allowed", &self.programming_allowed())?;
        st.serialize_field("power_supply", &self.power_supply())?;
        st.serialize_field("meter_type", &self.meter_type())?;
        st.serialize_field(
            "second_daily_period_table",
            &self.second_daily_period_table(),
        )?;
        st.serialize_field("second_time_zone_table", &self.second_time_zone_table())?;
        st.serialize_field("second_tariff_set", &self.second_tariff_set())?;
        st.serialize_field("second_step_tariff_set", &self.second_step_tariff_set())?;
        st.serialize_field("identity_authenticated", &self.identity_authenticated())?;
        st.serialize_field("local_account_open", &self.local_account_open())?;
        st.serialize_field("remote_account_open", &self.remote_account_open())?;
        st.end()
    }
}

/// One condition of the error information word ERR (错误信息字) of an abnormal reply,
/// per DL/T 645-2007 (one bit each; bit 7 is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCondition {
    /// Bit 0: other error (其他错误).
    Other,
    /// Bit 1: no requested data (无请求数据) — typically the DI is not supported.
    NoRequestedData,
    /// Bit 2: password error or unauthorised (密码错/未授权).
    PasswordErrorOrUnauthorised,
    /// Bit 3: communication rate cannot be changed (通信速率不能更改).
    BaudRateUnchangeable,
    /// Bit 4: year time-zone count exceeded (年时区数超).
    YearZoneCountExceeded,
    /// Bit 5: daily time-period count exceeded (日时段数超).
    DailyPeriodCountExceeded,
    /// Bit 6: tariff count exceeded (费率数超).
    TariffCountExceeded,
    /// Bit 7: reserved by the standard.
    Reserved7,
}

impl ErrorCondition {
    const ALL: [ErrorCondition; 8] = [
        Self::Other,
        Self::NoRequestedData,
        Self::PasswordErrorOrUnauthorised,
        Self::BaudRateUnchangeable,
        Self::YearZoneCountExceeded,
        Self::DailyPeriodCountExceeded,
        Self::TariffCountExceeded,
        Self::Reserved7,
    ];
}

impl fmt::Display for ErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Other => "other error",
            Self::NoRequestedData => "no requested data (identifier not supported)",
            Self::PasswordErrorOrUnauthorised => "password error or unauthorised",
            Self::BaudRateUnchangeable => "communication rate cannot be changed",
            Self::YearZoneCountExceeded => "year time-zone count exceeded",
            Self::DailyPeriodCountExceeded => "daily time-period count exceeded",
            Self::TariffCountExceeded => "tariff count exceeded",
            Self::Reserved7 => "reserved bit 7",
        })
    }
}

/// The one-byte error information word ERR of an abnormal reply (D6 = 1, L = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorWord(pub u8);

impl ErrorWord {
    /// The conditions whose bits are set, lowest bit first.
    pub fn conditions(self) -> Vec<ErrorCondition> {
        ErrorCondition::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect()
    }

    /// Whether a condition is set.
    pub fn has(self, condition: ErrorCondition) -> bool {
        self.conditions().contains(&condition)
    }
}

impl fmt::Display for ErrorWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERR {:02X}H", self.0)?;
        let conditions = self.conditions();
        if conditions.is_empty() {
            return f.write_str(" (no bit set)");
        }
        for (i, c) in conditions.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl Serialize for ErrorWord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ErrorWord", 2)?;
        st.serialize_field("bits", &format!("{:02X}", self.0))?;
        st.serialize_field("conditions", &self.conditions())?;
        st.end()
    }
}

/// One condition of the two-byte error word some meters return for a refused relay
/// control command (1CH abnormal reply with L = 2).
///
/// This two-byte form is not in the base DL/T 645-2007 text; it is what State Grid
/// fee-control meters send (bit assignments as implemented in deployed meter firmware).
/// Only the bits seen consistently are named; others are reported by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayErrorCondition {
    /// Bit 0: meter suspended (电表挂起), e.g. after repeated authentication failures.
    MeterSuspended,
    /// Bit 1: MAC verification failed.
    MacError,
    /// Bit 2: password error or unauthorised.
    PasswordErrorOrUnauthorised,
    /// Bit 3: identity authentication timed out (身份认证超时).
    AuthenticationTimedOut,
    /// Bit 4: execution time invalid (执行时间无效): the command's validity deadline
    /// has passed (or is not a valid date).
    DeadlineInvalid,
    /// Bit 5: trip refused because keep-power (保电) is active.
    TripRefusedKeepPower,
    /// Any other bit.
    Bit(u8),
}

impl fmt::Display for RelayErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MeterSuspended => f.write_str("meter suspended"),
            Self::MacError => f.write_str("MAC error"),
            Self::PasswordErrorOrUnauthorised => f.write_str("password error or unauthorised"),
            Self::AuthenticationTimedOut => f.write_str("identity authentication timed out"),
            Self::DeadlineInvalid => f.write_str("execution deadline invalid or passed"),
            Self::TripRefusedKeepPower => f.write_str("trip refused: keep-power active"),
            Self::Bit(n) => write!(f, "bit {n}"),
        }
    }
}

/// The two-byte relay-control error word (see [`RelayErrorCondition`]); first byte sent
/// is the low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayErrorWord(pub u16);

impl RelayErrorWord {
    /// The conditions whose bits are set, lowest bit first.
    pub fn conditions(self) -> Vec<RelayErrorCondition> {
        (0..16u8)
            .filter(|n| self.0 & (1 << n) != 0)
            .map(|n| match n {
                0 => RelayErrorCondition::MeterSuspended,
                1 => RelayErrorCondition::MacError,
                2 => RelayErrorCondition::PasswordErrorOrUnauthorised,
                3 => RelayErrorCondition::AuthenticationTimedOut,
                4 => RelayErrorCondition::DeadlineInvalid,
                5 => RelayErrorCondition::TripRefusedKeepPower,
                n => RelayErrorCondition::Bit(n),
            })
            .collect()
    }
}

impl fmt::Display for RelayErrorWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay error word {:04X}H", self.0)?;
        for (i, c) in self.conditions().iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl Serialize for RelayErrorWord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RelayErrorWord", 2)?;
        st.serialize_field("bits", &format!("{:04X}", self.0))?;
        st.serialize_field("conditions", &self.conditions())?;
        st.end()
    }
}

/// The error field of an abnormal reply (control code D6 = 1), decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum MeterError {
    /// The standard one-byte ERR word.
    #[error("meter refused: {word}")]
    Standard {
        /// The word.
        word: ErrorWord,
    },
    /// The two-byte relay-control error word of State Grid fee-control meters.
    #[error("meter refused the relay command: {word}")]
    RelayControl {
        /// The word.
        word: RelayErrorWord,
    },
    /// An error field in another layout (e.g. the security-authentication error word of
    /// function 03H), kept as hex.
    #[error("meter refused; error field {hex} (layout not decoded)")]
    Unrecognised {
        /// The error field, 33H removed.
        hex: String,
    },
}
