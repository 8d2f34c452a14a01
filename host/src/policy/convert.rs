//! Exact conversions between host values and the contract's WIT values.

use super::bindings::{Date, Decimal as WitDecimal, LocalTime};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use rust_decimal::Decimal;
use thiserror::Error;

/// A WIT value the host cannot accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("decimal scale {0} is over 28")]
    Scale(u8),
    #[error("decimal {0} does not fit the contract's 64-bit mantissa")]
    Mantissa(Decimal),
    #[error("invalid date {0}-{1}-{2}")]
    Date(u16, u8, u8),
}

/// Host decimal → WIT decimal, exactly.
pub fn to_wit(d: Decimal) -> Result<WitDecimal, ConvertError> {
    let d = d.normalize();
    let mantissa = i64::try_from(d.mantissa()).map_err(|_| ConvertError::Mantissa(d))?;
    Ok(WitDecimal {
        mantissa,
        scale: d.scale() as u8,
    })
}

/// WIT decimal → host decimal, exactly.
pub fn from_wit(d: &WitDecimal) -> Result<Decimal, ConvertError> {
    if d.scale > 28 {
        return Err(ConvertError::Scale(d.scale));
    }
    Ok(Decimal::new(d.mantissa, u32::from(d.scale)))
}

/// Fen → WIT decimal in yuan.
pub fn fen_to_wit(fen: i64) -> WitDecimal {
    WitDecimal {
        mantissa: fen,
        scale: 2,
    }
}

pub fn date_to_wit(d: NaiveDate) -> Date {
    Date {
        year: d.year() as u16,
        month: d.month() as u8,
        day: d.day() as u8,
    }
}

pub fn date_from_wit(d: &Date) -> Result<NaiveDate, ConvertError> {
    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        .ok_or(ConvertError::Date(d.year, d.month, d.day))
}

pub fn time_to_wit(t: NaiveDateTime) -> LocalTime {
    LocalTime {
        date: date_to_wit(t.date()),
        hour: t.hour() as u8,
        minute: t.minute() as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn decimals_round_trip_exactly() {
        for s in ["0", "0.4983", "-0.2000", "12.34", "-99999999.99", "2760"] {
            let d = Decimal::from_str(s).unwrap();
            assert_eq!(from_wit(&to_wit(d).unwrap()).unwrap(), d, "{s}");
        }
    }

    #[test]
    fn oversized_scale_is_refused() {
        assert_eq!(
            from_wit(&WitDecimal {
                mantissa: 1,
                scale: 29
            }),
            Err(ConvertError::Scale(29))
        );
    }
}
