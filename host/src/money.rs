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

/// Largest value an energy register shows, in 0.01 kWh: 99_999_999 = 999999.99 kWh.
///
/// A DL/T 645-2007 energy register (and the Q/GDW 376.1 terminals that relay it) has 6
/// integer and 2 decimal digits (XXXXXX.XX kWh); the next hundredth wraps it to 0. This is
/// [`feegate_meter::registers::ENERGY_REGISTER_MAX`], re-stated in host units so that every
/// reading the host stores — collected, imported or typed in at a meter replacement — is
/// checked against the same bound.
pub const REGISTER_MAX_CENTI_KWH: CentiKwh =
    feegate_meter::registers::ENERGY_REGISTER_MAX as CentiKwh;

/// An energy value that is not a usable register reading or 0.01 kWh count.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnergyError {
    /// Below zero: a register counts up from 0.
    #[error(
        "{0} kWh is negative; an energy register reads 0 to 999999.99 kWh: give the value the meter shows"
    )]
    Negative(Decimal),
    /// More decimals than the register shows.
    #[error(
        "{0} kWh has more than 2 decimals; an energy register shows whole 0.01 kWh: give the value the meter shows"
    )]
    SubCenti(Decimal),
    /// Above the register maximum.
    #[error(
        "{0} kWh is above 999999.99 kWh, the largest value a DL/T 645 energy register (XXXXXX.XX) shows; check the reading (a typo, or a value in Wh?)"
    )]
    AboveRegister(Decimal),
    /// Does not fit an i64 count of 0.01 kWh at all.
    #[error("{0} kWh is out of range: it does not fit a count of 0.01 kWh")]
    OutOfRange(Decimal),
}

/// Converts kWh to 0.01 kWh units, truncating toward zero (register semantics: a
/// meter shows only whole hundredths). For derived energy (a day's consumption, a
/// rating limit, a profile value); a *register reading* goes through
/// [`register_centi_kwh`], which also checks the register range.
///
/// Checked: a value whose count of 0.01 kWh does not fit an i64 is
/// [`EnergyError::OutOfRange`], never clamped to `i64::MAX` nor a panic.
pub fn kwh_to_centi_kwh(kwh: Decimal) -> Result<CentiKwh, EnergyError> {
    let centi = kwh
        .checked_mul(Decimal::ONE_HUNDRED)
        .ok_or(EnergyError::OutOfRange(kwh))?;
    i64::try_from(centi.trunc()).map_err(|_| EnergyError::OutOfRange(kwh))
}

/// Converts a register reading in kWh to 0.01 kWh units, exactly. Refused (never rounded,
/// truncated or clamped): below zero, more than 2 significant decimals (`1.230` is fine,
/// `1.234` is not), above [`REGISTER_MAX_CENTI_KWH`] (999999.99 kWh). `-0` is 0 here;
/// the text parsers ([`parse_register_kwh`], the import's) refuse any sign.
pub fn register_centi_kwh(kwh: Decimal) -> Result<CentiKwh, EnergyError> {
    if kwh < Decimal::ZERO {
        return Err(EnergyError::Negative(kwh));
    }
    if kwh.normalize().scale() > 2 {
        return Err(EnergyError::SubCenti(kwh));
    }
    let centi = kwh_to_centi_kwh(kwh).map_err(|_| EnergyError::AboveRegister(kwh))?;
    if centi > REGISTER_MAX_CENTI_KWH {
        return Err(EnergyError::AboveRegister(kwh));
    }
    Ok(centi)
}

/// Parses a register reading typed or imported as text: a plain decimal (digits,
/// optionally a point and digits — [`crate::channels::plain_decimal`], the parser payment
/// amounts use), then [`register_centi_kwh`]. Exponent notation (`1e5`), `+`, spaces and
/// separators are refused: a register shows digits only, and `1e5` read as 100000 kWh
/// would be stored for good. Returns the exact kWh value and its 0.01 kWh count.
pub fn parse_register_kwh(text: &str) -> Result<(Decimal, CentiKwh), String> {
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; an energy register reads 0 to 999999.99 kWh: give the value the meter shows"
        ));
    }
    let kwh = crate::channels::plain_decimal(text).ok_or_else(|| {
        format!(
            "{text:?} is not a register reading: write the kWh the meter shows as plain digits, e.g. 12345.67 (no exponent, sign, spaces or separators; 0 to 999999.99)"
        )
    })?;
    let centi = register_centi_kwh(kwh).map_err(|e| e.to_string())?;
    Ok((kwh, centi))
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
    fn kwh_conversion_is_checked_not_clamped() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(kwh_to_centi_kwh(d("12.349")), Ok(1234));
        for huge in ["99999999999999999999999", "79228162514264337593543950335"] {
            assert_eq!(
                kwh_to_centi_kwh(d(huge)),
                Err(EnergyError::OutOfRange(d(huge)))
            );
        }
    }

    #[test]
    fn register_readings_are_range_checked() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        for (kwh, want) in [
            ("0", Ok(0)),
            ("-0", Ok(0)), // as a number; the text parsers refuse the sign
            ("12345.67", Ok(1_234_567)),
            ("1.230", Ok(123)),
            ("999999.99", Ok(99_999_999)),
            ("1000000", Err(EnergyError::AboveRegister(d("1000000")))),
            (
                "99999999999999999999999",
                Err(EnergyError::AboveRegister(d("99999999999999999999999"))),
            ),
            (
                "79228162514264337593543950335",
                Err(EnergyError::AboveRegister(d(
                    "79228162514264337593543950335",
                ))),
            ),
            ("-0.01", Err(EnergyError::Negative(d("-0.01")))),
            ("1.005", Err(EnergyError::SubCenti(d("1.005")))),
        ] {
            assert_eq!(register_centi_kwh(d(kwh)), want, "{kwh}");
        }
        assert_eq!(REGISTER_MAX_CENTI_KWH, 99_999_999);
    }

    #[test]
    fn register_text_must_be_plain_digits() {
        assert_eq!(
            parse_register_kwh("100.5"),
            Ok((Decimal::new(1005, 1), 10_050))
        );
        for (text, why) in [
            ("1e5", "not a register reading"),
            ("1E5", "not a register reading"),
            ("+5", "not a register reading"),
            ("1,000", "not a register reading"),
            ("", "not a register reading"),
            ("79228162514264337593543950335", "not a register reading"),
            ("1000000.00", "above 999999.99"),
            ("-1", "negative"),
            ("-0", "negative"),
            ("0.001", "more than 2 decimals"),
        ] {
            let e = parse_register_kwh(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format_yuan(-5), "-0.05");
        assert_eq!(format_yuan(123400), "1234.00");
    }
}
