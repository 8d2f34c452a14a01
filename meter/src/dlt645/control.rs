//! The control code C: direction, abnormal-reply and follow-up bits, function code.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// Function codes (D4..D0 of the control code) defined by DL/T 645-2007.
///
/// `SecurityAuthentication` (03H) comes from State Grid's security-authentication
/// specification for smart meters rather than the base standard; unknown codes are kept
/// as [`Function::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// 03H security authentication (ESAM session set-up; State Grid extension).
    SecurityAuthentication,
    /// 08H broadcast time (广播校时): `ss mm hh DD MM YY`, no reply.
    BroadcastTime,
    /// 11H read data (读数据).
    ReadData,
    /// 12H read follow-up data (读后续数据).
    ReadFollowUp,
    /// 13H read communication address (读通信地址).
    ReadAddress,
    /// 14H write data (写数据).
    WriteData,
    /// 15H write communication address (写通信地址).
    WriteAddress,
    /// 16H freeze command (冻结命令).
    Freeze,
    /// 17H change communication rate (更改通信速率).
    ChangeBaudRate,
    /// 18H change password (修改密码).
    ChangePassword,
    /// 19H maximum-demand reset (最大需量清零).
    ClearMaxDemand,
    /// 1AH meter clear (电表清零).
    ClearMeter,
    /// 1BH event clear (事件清零).
    ClearEvents,
    /// 1CH relay control: trip, close, alarm, keep-power (跳合闸、报警、保电).
    RelayControl,
    /// 1DH multi-function terminal output control (多功能端子输出控制).
    MultiFunctionOutput,
    /// Any other function code (0..=31).
    Other(u8),
}

impl Function {
    /// The 5-bit function code.
    pub fn code(self) -> u8 {
        match self {
            Self::SecurityAuthentication => 0x03,
            Self::BroadcastTime => 0x08,
            Self::ReadData => 0x11,
            Self::ReadFollowUp => 0x12,
            Self::ReadAddress => 0x13,
            Self::WriteData => 0x14,
            Self::WriteAddress => 0x15,
            Self::Freeze => 0x16,
            Self::ChangeBaudRate => 0x17,
            Self::ChangePassword => 0x18,
            Self::ClearMaxDemand => 0x19,
            Self::ClearMeter => 0x1A,
            Self::ClearEvents => 0x1B,
            Self::RelayControl => 0x1C,
            Self::MultiFunctionOutput => 0x1D,
            Self::Other(c) => c & 0x1F,
        }
    }

    /// From the 5-bit function code (higher bits are ignored).
    pub fn from_code(code: u8) -> Self {
        match code & 0x1F {
            0x03 => Self::SecurityAuthentication,
            0x08 => Self::BroadcastTime,
            0x11 => Self::ReadData,
            0x12 => Self::ReadFollowUp,
            0x13 => Self::ReadAddress,
            0x14 => Self::WriteData,
            0x15 => Self::WriteAddress,
            0x16 => Self::Freeze,
            0x17 => Self::ChangeBaudRate,
            0x18 => Self::ChangePassword,
            0x19 => Self::ClearMaxDemand,
            0x1A => Self::ClearMeter,
            0x1B => Self::ClearEvents,
            0x1C => Self::RelayControl,
            0x1D => Self::MultiFunctionOutput,
            c => Self::Other(c),
        }
    }

    /// A stable snake_case name, as used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::SecurityAuthentication => "security_authentication",
            Self::BroadcastTime => "broadcast_time",
            Self::ReadData => "read_data",
            Self::ReadFollowUp => "read_follow_up",
            Self::ReadAddress => "read_address",
            Self::WriteData => "write_data",
            Self::WriteAddress => "write_address",
            Self::Freeze => "freeze",
            Self::ChangeBaudRate => "change_baud_rate",
            Self::ChangePassword => "change_password",
            Self::ClearMaxDemand => "clear_max_demand",
            Self::ClearMeter => "clear_meter",
            Self::ClearEvents => "clear_events",
            Self::RelayControl => "relay_control",
            Self::MultiFunctionOutput => "multi_function_output",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:02X}H)", self.name(), self.code())
    }
}

impl Serialize for Function {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Who sent a frame (control code bit D7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// D7 = 0: a command from the master station / collection terminal.
    MasterCommand,
    /// D7 = 1: a reply from the meter (slave).
    SlaveReply,
}

/// The control code byte C.
///
/// - D7 direction: 0 master command, 1 slave reply;
/// - D6 abnormal-reply flag: 0 normal, 1 abnormal (the data field is an error word);
/// - D5 follow-up flag: 1 = more frames follow (read them with function 12H);
/// - D4..D0 function code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlCode(u8);

impl ControlCode {
    const REPLY: u8 = 0x80;
    const ABNORMAL: u8 = 0x40;
    const FOLLOW_UP: u8 = 0x20;

    /// From the raw byte.
    pub const fn from_byte(b: u8) -> Self {
        Self(b)
    }

    /// The raw byte.
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// A master command with this function.
    pub fn command(function: Function) -> Self {
        Self(function.code())
    }

    /// A normal slave reply with this function (`follow_up`: more frames to come).
    pub fn reply(function: Function, follow_up: bool) -> Self {
        Self(Self::REPLY | function.code() | if follow_up { Self::FOLLOW_UP } else { 0 })
    }

    /// An abnormal slave reply with this function.
    pub fn error_reply(function: Function) -> Self {
        Self(Self::REPLY | Self::ABNORMAL | function.code())
    }

    /// D7.
    pub fn direction(self) -> Direction {
        if self.0 & Self::REPLY != 0 {
            Direction::SlaveReply
        } else {
            Direction::MasterCommand
        }
    }

    /// D7 = 1.
    pub fn is_reply(self) -> bool {
        self.direction() == Direction::SlaveReply
    }

    /// D6 = 1: the meter refused; the data field carries an error word.
    pub fn is_abnormal(self) -> bool {
        self.0 & Self::ABNORMAL != 0
    }

    /// D5 = 1: follow-up frames exist.
    pub fn has_follow_up(self) -> bool {
        self.0 & Self::FOLLOW_UP != 0
    }

    /// D4..D0.
    pub fn function(self) -> Function {
        Function::from_code(self.0)
    }
}

impl fmt::Display for ControlCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}H", self.0)
    }
}

impl Serialize for ControlCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ControlCode", 6)?;
        st.serialize_field("raw", &format!("{:02X}", self.0))?;
        st.serialize_field("direction", &self.direction())?;
        st.serialize_field("abnormal", &self.is_abnormal())?;
        st.serialize_field("follow_up", &self.has_follow_up())?;
        st.serialize_field("function", &self.function())?;
        st.serialize_field("function_code", &format!("{:02X}", self.function().code()))?;
        st.end()
    }
}
