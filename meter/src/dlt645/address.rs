//! Meter communication addresses (通信地址): 6 bytes, 12 BCD digits, sent low byte
//! first. Written here, as on the meter's nameplate, most significant digit first.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::error::Dlt645Error;

/// A DL/T 645-2007 address field A0..A5.
///
/// Besides a meter's own 12-digit address, two special forms exist:
///
/// - **broadcast** `999999999999`: every meter on the bus acts, none replies; the
///   standard uses it for broadcast time (08H) and a few other commands;
/// - **wildcard**: digit `A` (byte AAH) matches any digit. The standard's abbreviated
///   addressing replaces the high-order bytes with AAH, and `AAAAAAAAAAAA` (all
///   wildcards) is how a master asks the only meter on a bus for its address (13H).
///   Collection terminals are also seen using single wildcard nibbles, so matching is
///   done per nibble.
///
/// Any other non-BCD nibble (B..F) is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address([u8; 6]);

/// What kind of address a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// One meter's own address.
    Unicast,
    /// Contains AAH wildcard digits; matches every meter whose remaining digits agree.
    Wildcard,
    /// `999999999999`, every meter.
    Broadcast,
}

impl Address {
    /// The broadcast address 999999999999.
    pub const BROADCAST: Address = Address([0x99; 6]);
    /// The all-wildcard address AAAAAAAAAAAA (used to read the address of the only
    /// meter on a bus, function 13H).
    pub const WILDCARD: Address = Address([0xAA; 6]);

    /// From the 6 wire bytes A0..A5 (A0 = the two lowest digits).
    pub fn from_wire(bytes: [u8; 6]) -> Result<Self, Dlt645Error> {
        for b in bytes {
            if !valid_nibble(b >> 4) || !valid_nibble(b & 0x0F) {
                return Err(Dlt645Error::BadBcd {
                    field: "address".into(),
                    byte: b,
                });
            }
        }
        Ok(Self(bytes))
    }

    /// The 6 wire bytes A0..A5.
    pub fn to_wire(&self) -> [u8; 6] {
        self.0
    }

    /// Broadcast, wildcard or a single meter.
    pub fn kind(&self) -> AddressKind {
        if *self == Self::BROADCAST {
            AddressKind::Broadcast
        } else if self.nibbles().any(|n| n == 0xA) {
            AddressKind::Wildcard
        } else {
            AddressKind::Unicast
        }
    }

    /// Whether this is the broadcast address 999999999999.
    pub fn is_broadcast(&self) -> bool {
        self.kind() == AddressKind::Broadcast
    }

    /// Whether any digit is the wildcard A.
    pub fn is_wildcard(&self) -> bool {
        self.kind() == AddressKind::Wildcard
    }

    /// Whether exactly one meter is addressed (no wildcard, not broadcast).
    pub fn is_unicast(&self) -> bool {
        self.kind() == AddressKind::Unicast
    }

    /// Whether a meter whose own address is `meter` acts on a frame sent to `self`:
    /// broadcast matches everyone, a wildcard digit matches any digit, other digits
    /// must be equal.
    pub fn matches(&self, meter: &Address) -> bool {
        self.is_broadcast()
            || self
                .nibbles()
                .zip(meter.nibbles())
                .all(|(want, have)| want == 0xA || want == have)
    }

    fn nibbles(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().flat_map(|b| [b >> 4, b & 0x0F])
    }
}

fn valid_nibble(n: u8) -> bool {
    n <= 9 || n == 0xA
}

impl fmt::Display for Address {
    /// 12 digits, most significant first, wildcards as `A`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl FromStr for Address {
    type Err = Dlt645Error;

    /// Digits most significant first, as printed on the meter. Shorter inputs are
    /// left-padded with zeros (nameplates often drop leading zeros); `A`/`a` is the
    /// wildcard digit.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| Dlt645Error::InvalidAddress {
            input: s.to_owned(),
            reason,
        };
        let s_trim = s.trim();
        if s_trim.is_empty() || s_trim.len() > 12 {
            return Err(bad("must have 1 to 12 digits"));
        }
        let mut digits = [0u8; 12];
        let offset = 12 - s_trim.len();
        for (i, c) in s_trim.chars().enumerate() {
            digits[offset + i] = match c {
                '0'..='9' => c as u8 - b'0',
                'A' | 'a' => 0xA,
                _ => return Err(bad("digits must be 0-9, or A for a wildcard")),
            };
        }
        let mut wire = [0u8; 6];
        for (i, w) in wire.iter_mut().enumerate() {
            // wire[0] holds the two least significant digits.
            let hi = digits[10 - 2 * i];
            let lo = digits[11 - 2 * i];
            *w = (hi << 4) | lo;
        }
        Ok(Self(wire))
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
