//! Money: exact decimals, never floats.
//!
//! Balances and ledger amounts are integers in fen (分, 0.01 yuan); prices are
//! decimals in yuan per kWh with 4 decimal places; energy is kept in 0.01 kWh units
//! (the register resolution of DL/T 645 meters) as integers in storage.

use rust_decimal::Decimal;
use thiserror::Error;

/// An amount of money in fen (分). Positive = credit to the customer.
pub type Fen = i64;

/// Energy in hundredths of a kWh (0.01 kWh), the register resolution.
pub type CentiKwh = i64;

/// A value could not be represented exactly in the target unit.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MoneyError {
    /// The amount has more decimal places than fen allow (e.g. "1.234" yuan).
    #[error("{0} yuan has more than 2 decimal places; amounts are whole fen (0.01 yuan)")]
    SubFen(Decimal),
    /// The amount does not fit in an i64 count of fen.
    #[error("{0} yuan is out of range")]
    OutOfRange(Decimal),
}

/// Converts fen to yuan exactly: 1234 → 12.34.
pub fn fen_to_yuan(fen: Fen) -> Decimal {
    Decimal::new(fen, 2)
}

/// Converts yuan to fen exactly; refuses sub-fen amounts instead of rounding them.
pub fn yuan_to_fen(yuan: Decimal) -> Result<Fen, MoneyError> {
    let fen = yuan
        .checked_mul(Decimal::ONE_HUNDRED)
        .ok_or(MoneyError::OutOfRange(yuan))?;
    if fen.fract() != Decimal::ZERO {
        return Err(MoneyError::SubFen(yuan));
    }
    i64::try_from(fen.trunc()).map_err(|_| MoneyError::OutOfRange(yuan))
}

/// Formats fen as a yuan string with exactly two decimals: -5 → "-0.05".
pub fn format_yuan(fen: Fen) -> String {
    format!("{:.2}", fen_to_yuan(fen))
}

/// Converts 0.01 kWh units to kWh exactly.
pub fn centi_kwh_to_kwh(c: CentiKwh) -> Decimal {
    Decimal::new(c, 2)
}

/// Converts kWh to 0.01 kWh units, truncating toward zero (register semantics: a
/// meter shows only whole hundredths).
pub fn kwh_to_centi_kwh(kwh: Decimal) -> CentiKwh {
    i64::try_from((kwh * Decimal::ONE_HUNDRED).trunc()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn yuan_fen_round_trip_is_exact() {
        for (yuan, fen) in [
            ("12.34", 1234),
            ("-0.05", -5),
            ("0", 0),
            ("1000000", 100_000_000),
        ] {
            let d = Decimal::from_str(yuan).unwrap();
            assert_eq!(yuan_to_fen(d), Ok(fen));
            assert_eq!(fen_to_yuan(fen), d);
        }
    }

    #[test]
    fn sub_fen_amounts_are_refused_not_rounded() {
        let d = Decimal::from_str("1.234").unwrap();
        assert_eq!(yuan_to_fen(d), Err(MoneyError::SubFen(d)));
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format_yuan(-5), "-0.05");
        assert_eq!(format_yuan(123400), "1234.00");
    }
}
