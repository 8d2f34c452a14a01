//! BCD helpers. DL/T 645-2007 sends multi-byte numbers low byte first, each byte two
//! BCD digits (high nibble = tens). Values whose format note says "the highest bit is
//! the sign" (current, power, power factor, combined energy, temperature) carry the sign
//! in bit 7 of the most significant (last transmitted) byte.

use rust_decimal::Decimal;

use super::error::Dlt645Error;

/// One BCD byte to 0..=99.
pub(crate) fn byte(b: u8, field: &str) -> Result<u8, Dlt645Error> {
    if b >> 4 > 9 || b & 0x0F > 9 {
        return Err(Dlt645Error::BadBcd {
            field: field.to_owned(),
            byte: b,
        });
    }
    Ok((b >> 4) * 10 + (b & 0x0F))
}

/// 0..=99 to one BCD byte. Callers guarantee the range.
pub(crate) fn to_byte(v: u8) -> u8 {
    debug_assert!(v < 100);
    ((v / 10) << 4) | (v % 10)
}

/// Unsigned BCD, low byte first, to an integer (at most 8 bytes = 16 digits).
pub(crate) fn unsigned(bytes: &[u8], field: &str) -> Result<u64, Dlt645Error> {
    debug_assert!(bytes.len() <= 8);
    let mut value = 0u64;
    for &b in bytes.iter().rev() {
        value = value * 100 + u64::from(byte(b, field)?);
    }
    Ok(value)
}

/// Sign-magnitude BCD, low byte first, sign in bit 7 of the last byte.
pub(crate) fn signed(bytes: &[u8], field: &str) -> Result<i64, Dlt645Error> {
    let Some((&last, rest)) = bytes.split_last() else {
        return Ok(0);
    };
    let negative = last & 0x80 != 0;
    let mut magnitude = 0u64;
    for &b in std::iter::once(&(last & 0x7F)).chain(rest.iter().rev()) {
        magnitude = magnitude * 100 + u64::from(byte(b, field)?);
    }
    // At most 16 digits, far below i64::MAX.
    let magnitude = magnitude as i64;
    Ok(if negative { -magnitude } else { magnitude })
}

/// A BCD number with `scale` implied decimals, e.g. XXXXXX.XX is 4 bytes, scale 2.
pub(crate) fn decimal(
    bytes: &[u8],
    scale: u32,
    is_signed: bool,
    field: &str,
) -> Result<Decimal, Dlt645Error> {
    let mantissa = if is_signed {
        signed(bytes, field)?
    } else {
        unsigned(bytes, field)? as i64
    };
    Ok(Decimal::new(mantissa, scale))
}

/// Bytes as upper-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

/// Serde helper: serialise bytes as an upper-case hex string.
pub(crate) fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// Parse hex text; ASCII whitespace is ignored, nothing else is.
pub(crate) fn parse_hex(text: &str) -> Result<Vec<u8>, Dlt645Error> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(digits.len() / 2);
    for (i, pair) in digits.chunks(2).enumerate() {
        let [hi, lo] = pair else {
            return Err(Dlt645Error::BadHex {
                position: i * 2,
                reason: "odd number of hex digits",
            });
        };
        let nibble = |c: u8, pos: usize| {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or(Dlt645Error::BadHex {
                    position: pos,
                    reason: "not a hex digit",
                })
        };
        out.push((nibble(*hi, i * 2)? << 4) | nibble(*lo, i * 2 + 1)?);
    }
    Ok(out)
}
