//! Relay control (function 1CH: 跳合闸、报警、保电) and the pluggable security module
//! that seals it for meters requiring an encrypted command.
//!
//! Data field of a plaintext 1CH command (all bytes +33H on the wire):
//!
//! ```text
//! PA P0 P1 P2   C0 C1 C2 C3   N1  N2  N3..N8
//! password      operator      cmd res deadline ss mm hh DD MM YY
//! ```
//!
//! Meters following State Grid's fee-control specification accept relay commands only
//! sealed by their ESAM: the master sends password level 98H followed by the operator
//! code and ciphertext + MAC produced by the utility's encryption service. Feegate does
//! not implement that cryptography; a county plugs its service in as a
//! [`SecurityModule`].

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::address::Address;
use super::bcd;
use super::control::{ControlCode, Function};
use super::error::{Dlt645Error, SecurityModuleError};
use super::frame::Frame;
use super::time::MeterDateTime;

/// Password level conventionally used for ESAM-sealed (ciphertext + MAC) commands.
pub const SEALED_PASSWORD_LEVEL: u8 = 0x98;

/// The relay command byte N1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayCommand {
    /// 1AH trip (跳闸): open the relay.
    Trip,
    /// 1BH close allowed (合闸允许): re-arm; the customer presses the meter's button to
    /// restore power (safe reconnection, 安全复电).
    CloseAllowed,
    /// 1CH direct close (直接合闸): the meter closes the relay itself.
    DirectClose,
    /// 2AH alarm (报警): pre-trip warning on the meter.
    Alarm,
    /// 2BH alarm release (报警解除).
    AlarmRelease,
    /// 3AH keep-power on (保电): the meter refuses trips until released.
    KeepPowerOn,
    /// 3BH keep-power off (保电解除).
    KeepPowerOff,
    /// Any other code (vendor extensions such as delayed trip).
    Other(u8),
}

impl RelayCommand {
    /// The N1 byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Trip => 0x1A,
            Self::CloseAllowed => 0x1B,
            Self::DirectClose => 0x1C,
            Self::Alarm => 0x2A,
            Self::AlarmRelease => 0x2B,
            Self::KeepPowerOn => 0x3A,
            Self::KeepPowerOff => 0x3B,
            Self::Other(c) => c,
        }
    }

    /// From the N1 byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x1A => Self::Trip,
            0x1B => Self::CloseAllowed,
            0x1C => Self::DirectClose,
            0x2A => Self::Alarm,
            0x2B => Self::AlarmRelease,
            0x3A => Self::KeepPowerOn,
            0x3B => Self::KeepPowerOff,
            c => Self::Other(c),
        }
    }

    /// A stable snake_case name, as used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trip => "trip",
            Self::CloseAllowed => "close_allowed",
            Self::DirectClose => "direct_close",
            Self::Alarm => "alarm",
            Self::AlarmRelease => "alarm_release",
            Self::KeepPowerOn => "keep_power_on",
            Self::KeepPowerOff => "keep_power_off",
            Self::Other(_) => "other",
        }
    }
}

impl Serialize for RelayCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RelayCommand", 2)?;
        st.serialize_field("code", &format!("{:02X}", self.code()))?;
        st.serialize_field("name", self.name())?;
        st.end()
    }
}

/// A password: level PA and the 3-byte code P0 P1 P2 (P0 sent first).
///
/// Written level first, then the code most significant byte first: level 02H with
/// P0 P1 P2 = 37 06 02 is `"02020637"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Password {
    /// Password level PA (e.g. 02H, 04H for plaintext; 98H for ESAM ciphertext).
    pub level: u8,
    /// P0 P1 P2 in wire order.
    pub code: [u8; 3],
}

impl Password {
    /// From the level and the code as written (most significant byte first), e.g.
    /// `Password::new(0x02, 0x020637)`.
    pub fn new(level: u8, code: u32) -> Self {
        let [p0, p1, p2, _] = code.to_le_bytes();
        Self {
            level,
            code: [p0, p1, p2],
        }
    }

    /// The code as written, most significant byte first, 6 hex digits.
    pub fn code_hex(&self) -> String {
        format!(
            "{:02X}{:02X}{:02X}",
            self.code[2], self.code[1], self.code[0]
        )
    }

    fn to_wire(self) -> [u8; 4] {
        [self.level, self.code[0], self.code[1], self.code[2]]
    }

    fn from_wire(b: &[u8]) -> Self {
        Self {
            level: b[0],
            code: [b[1], b[2], b[3]],
        }
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}{}", self.level, self.code_hex())
    }
}

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Password", 2)?;
        st.serialize_field("level", &format!("{:02X}", self.level))?;
        st.serialize_field("code", &self.code_hex())?;
        st.end()
    }
}

/// The operator code C0..C3 (操作者代码) recorded by the meter in its event log.
/// Written most significant byte first (`"12345678"` is sent 78 56 34 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OperatorCode(pub [u8; 4]);

impl OperatorCode {
    /// From the code as written, e.g. `OperatorCode::new(0x12345678)`.
    pub fn new(code: u32) -> Self {
        Self(code.to_le_bytes())
    }
}

impl fmt::Display for OperatorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", u32::from_le_bytes(self.0))
    }
}

impl FromStr for OperatorCode {
    type Err = Dlt645Error;

    /// 8 hex digits, most significant first.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Dlt645Error::InvalidValue {
                field: "operator code".into(),
                reason: format!("{s:?} is not 8 hex digits"),
            });
        }
        Ok(Self::new(u32::from_str_radix(t, 16).unwrap_or_default()))
    }
}

impl Serialize for OperatorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The control block N1..N8: what to do and until when the command is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RelayControl {
    /// N1.
    pub command: RelayCommand,
    /// N2, reserved (00H unless the meter's specification says otherwise).
    pub reserved: u8,
    /// N3..N8: the meter ignores the command after this local time.
    pub valid_until: MeterDateTime,
}

impl RelayControl {
    /// A command valid until `valid_until` (meter local time), N2 = 00H.
    pub fn new(command: RelayCommand, valid_until: NaiveDateTime) -> Result<Self, Dlt645Error> {
        Ok(Self {
            command,
            reserved: 0,
            valid_until: MeterDateTime::from_naive(valid_until)?,
        })
    }

    /// The 8 plaintext bytes N1 N2 ss mm hh DD MM YY (before the 33H offset), in
    /// plaintext-frame order. Refuses a deadline that is not a real date/time.
    pub fn plaintext(&self) -> Result<[u8; 8], Dlt645Error> {
        const FIELD: &str = "relay control deadline";
        if self.valid_until.to_naive().is_none() || self.valid_until.second.is_none() {
            return Err(Dlt645Error::InvalidDateTime {
                field: FIELD.into(),
                value: self.valid_until.to_string(),
            });
        }
        let d = self.valid_until.to_wire_seconds(FIELD)?;
        Ok([
            self.command.code(),
            self.reserved,
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            d[5],
        ])
    }

    /// Decode N1..N8.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, Dlt645Error> {
        if bytes.len() != 8 {
            return Err(Dlt645Error::LengthMismatch {
                field: "relay control block N1..N8".into(),
                expected: "8".into(),
                found: bytes.len(),
            });
        }
        Ok(Self {
            command: RelayCommand::from_code(bytes[0]),
            reserved: bytes[1],
            valid_until: MeterDateTime::from_wire_seconds(&bytes[2..8], "relay control deadline")?,
        })
    }
}

/// A decoded plaintext relay-control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RelayControlRequest {
    /// PA P0 P1 P2.
    pub password: Password,
    /// C0..C3.
    pub operator: OperatorCode,
    /// N1..N8.
    pub control: RelayControl,
}

impl RelayControlRequest {
    /// Decode the data field (33H removed) of a plaintext 1CH command (16 bytes).
    pub fn from_data(data: &[u8]) -> Result<Self, Dlt645Error> {
        if data.len() != 16 {
            return Err(Dlt645Error::LengthMismatch {
                field: "plaintext relay control data".into(),
                expected: "16".into(),
                found: data.len(),
            });
        }
        Ok(Self {
            password: Password::from_wire(&data[0..4]),
            operator: OperatorCode(data[4..8].try_into().unwrap_or_default()),
            control: RelayControl::from_plaintext(&data[8..16])?,
        })
    }
}

/// What a security module is asked to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySealRequest<'a> {
    /// The meter the command is for (ESAM keys and sessions are per meter).
    pub meter: &'a Address,
    /// The operator code that will precede the sealed block.
    pub operator: &'a OperatorCode,
    /// The command, structured.
    pub control: &'a RelayControl,
    /// The same command as the 8 plaintext bytes N1 N2 ss mm hh DD MM YY. An encryption
    /// service expecting another byte order reorders them itself.
    pub plaintext: [u8; 8],
}

/// A sealed relay command, ready to be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRelayControl {
    /// The password field to send (usually level [`SEALED_PASSWORD_LEVEL`] 98H).
    pub password: Password,
    /// The bytes that follow the operator code (ciphertext and MAC), before the 33H offset.
    pub sealed: Vec<u8>,
}

/// The county's encryption service for relay commands (ESAM / encryption machine).
///
/// Implementations must not fake cryptography: either seal with the utility's keys or
/// return an error. The trait is synchronous so the codec stays pure; a service reached
/// over the network can instead be called by the host directly, with the
/// [`RelaySealRequest`] built from [`RelayControl::plaintext`], and the result framed
/// with [`Frame::relay_control_sealed`].
pub trait SecurityModule: Send + Sync {
    /// Seal one relay command for one meter.
    fn seal_relay_control(
        &self,
        request: &RelaySealRequest<'_>,
    ) -> Result<SealedRelayControl, SecurityModuleError>;
}

/// The security module of a county that has not configured one: every seal request
/// fails with [`SecurityModuleError::NotConfigured`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecurityModule;

impl SecurityModule for NoSecurityModule {
    fn seal_relay_control(
        &self,
        _request: &RelaySealRequest<'_>,
    ) -> Result<SealedRelayControl, SecurityModuleError> {
        Err(SecurityModuleError::NotConfigured)
    }
}

/// How a relay command is authorised.
#[derive(Clone, Copy)]
pub enum RelayAuthorisation<'a> {
    /// Plaintext with a password, for meters configured to accept it.
    Plaintext(Password),
    /// Sealed by the county's security module.
    Sealed(&'a dyn SecurityModule),
}

impl fmt::Debug for RelayAuthorisation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plaintext(p) => f.debug_tuple("Plaintext").field(p).finish(),
            Self::Sealed(_) => f.write_str("Sealed(..)"),
        }
    }
}

fn unicast_only(address: Address) -> Result<(), Dlt645Error> {
    if address.is_unicast() {
        Ok(())
    } else {
        Err(Dlt645Error::UnsafeAddress {
            function: Function::RelayControl,
            address: address.to_string(),
        })
    }
}

impl Frame {
    /// A relay-control command (1CH) for one meter.
    ///
    /// Refuses broadcast and wildcard addresses (a relay command must reach exactly one
    /// meter) and deadlines that are not real date-times. With
    /// [`RelayAuthorisation::Sealed`] the security module's error is returned as
    /// [`Dlt645Error::Security`].
    pub fn relay_control(
        address: Address,
        operator: OperatorCode,
        control: &RelayControl,
        authorisation: RelayAuthorisation<'_>,
    ) -> Result<Frame, Dlt645Error> {
        unicast_only(address)?;
        let plaintext = control.plaintext()?;
        match authorisation {
            RelayAuthorisation::Plaintext(password) => {
                let mut data = Vec::with_capacity(16);
                data.extend_from_slice(&password.to_wire());
                data.extend_from_slice(&operator.0);
                data.extend_from_slice(&plaintext);
                Frame::new(address, ControlCode::command(Function::RelayControl), data)
            }
            RelayAuthorisation::Sealed(module) => {
                let sealed = module.seal_relay_control(&RelaySealRequest {
                    meter: &address,
                    operator: &operator,
                    control,
                    plaintext,
                })?;
                Frame::relay_control_sealed(address, operator, &sealed)
            }
        }
    }

    /// Frame an already sealed relay command: password, operator code, sealed bytes.
    pub fn relay_control_sealed(
        address: Address,
        operator: OperatorCode,
        sealed: &SealedRelayControl,
    ) -> Result<Frame, Dlt645Error> {
        unicast_only(address)?;
        let mut data = Vec::with_capacity(8 + sealed.sealed.len());
        data.extend_from_slice(&sealed.password.to_wire());
        data.extend_from_slice(&operator.0);
        data.extend_from_slice(&sealed.sealed);
        Frame::new(address, ControlCode::command(Function::RelayControl), data)
    }
}

/// A relay command whose control block is sealed (decoded for display only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedRelayControlRequest {
    /// PA P0 P1 P2 (PA is usually 98H).
    pub password: Password,
    /// C0..C3.
    pub operator: OperatorCode,
    /// Ciphertext and MAC as sent (33H removed), hex.
    #[serde(serialize_with = "bcd::serialize_hex")]
    pub sealed: Vec<u8>,
}

impl SealedRelayControlRequest {
    pub(crate) fn from_data(data: &[u8]) -> Option<Self> {
        (data.len() >= 8).then(|| Self {
            password: Password::from_wire(&data[0..4]),
            operator: OperatorCode(data[4..8].try_into().unwrap_or_default()),
            sealed: data[8..].to_vec(),
        })
    }
}
