//! Exact decimals across the WIT boundary.
//!
//! The contract's `decimal` record is `{ mantissa: s64, scale: u8 }`, value =
//! mantissa × 10^(−scale). [`rust_decimal::Decimal`] holds a 96-bit mantissa and a scale of
//! at most 28, so every WIT value with scale ≤ 28 converts exactly; the way back can
//! overflow the 64-bit mantissa and is checked. Neither direction goes through a float.

use crate::PolicyError;
use rust_decimal::{Decimal, RoundingStrategy};

/// Largest scale [`Decimal`] represents (28 decimal places).
pub const MAX_SCALE: u8 = 28;

/// WIT `decimal` → [`Decimal`], exactly.
///
/// `what` names the field for the error message (e.g. `"kwh"`).
///
/// # Errors
/// [`crate::codes::DECIMAL_OUT_OF_RANGE`] when `scale` > 28.
pub fn from_parts(mantissa: i64, scale: u8, what: &str) -> Result<Decimal, PolicyError> {
    if scale > MAX_SCALE {
        return Err(PolicyError::out_of_range(format!(
            "{what}: scale {scale} is above the maximum of {MAX_SCALE}"
        )));
    }
    Decimal::try_new(mantissa, u32::from(scale)).map_err(|e| {
        PolicyError::out_of_range(format!(
            "{what}: {mantissa}e-{scale} is not representable: {e}"
        ))
    })
}

/// [`Decimal`] → WIT `decimal` parts `(mantissa, scale)`, exactly.
///
/// The scale is kept as is when the mantissa fits in 64 bits; otherwise trailing zeros are
/// dropped first (`1.000…0` becomes `1`). The value is never rounded.
///
/// # Errors
/// [`crate::codes::DECIMAL_OUT_OF_RANGE`] when even the normalised mantissa exceeds `s64`.
pub fn to_parts(value: Decimal, what: &str) -> Result<(i64, u8), PolicyError> {
    let fits = |d: Decimal| -> Option<(i64, u8)> {
        let mantissa = i64::try_from(d.mantissa()).ok()?;
        let scale = u8::try_from(d.scale()).ok()?;
        Some((mantissa, scale))
    };
    fits(value)
        .or_else(|| fits(value.normalize()))
        .ok_or_else(|| {
            PolicyError::out_of_range(format!("{what}: {value} does not fit a 64-bit mantissa"))
        })
}

/// `value` rounded half away from zero to exactly `dp` decimal places, for display
/// (`23.4` with `dp = 2` → `"23.40"`). Not for money that is posted: posting rounds with
/// the county's declared rule.
pub fn fixed(value: Decimal, dp: u32) -> String {
    let mut rounded = value.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(dp);
    rounded.to_string()
}

/// `value` with at least `min_dp` decimal places and never fewer than it already has
/// (`2755` → `"2755.00"`, `12.345` → `"12.345"`): display that loses nothing.
pub fn at_least_dp(value: Decimal, min_dp: u32) -> String {
    let mut shown = value;
    if shown.scale() < min_dp {
        shown.rescale(min_dp);
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn from_parts_is_exact() {
        assert_eq!(from_parts(1234, 2, "x").unwrap(), d("12.34"));
        assert_eq!(from_parts(-5, 0, "x").unwrap(), d("-5"));
        assert_eq!(
            from_parts(i64::MAX, 28, "x").unwrap().mantissa(),
            i128::from(i64::MAX)
        );
        assert_eq!(from_parts(1234, 2, "x").unwrap().scale(), 2);
    }

    #[test]
    fn from_parts_rejects_scale_above_28() {
        let err = from_parts(1, 29, "kwh").unwrap_err();
        assert_eq!(err.code, "decimal-out-of-range");
        assert!(err.message.contains("kwh"), "{}", err.message);
    }

    #[test]
    fn to_parts_keeps_scale_and_normalises_only_when_needed() {
        assert_eq!(to_parts(d("6.60375"), "x").unwrap(), (660375, 5));
        assert_eq!(to_parts(d("0.0"), "x").unwrap(), (0, 1));
        // 10^20 with 8 trailing decimal zeros: too wide as is, fits once normalised.
        let wide = Decimal::from_i128_with_scale(100_000_000_000_000_000_000_000_000, 8);
        assert_eq!(to_parts(wide, "x").unwrap(), (1_000_000_000_000_000_000, 0));
    }

    #[test]
    fn to_parts_rejects_overflow() {
        let huge = Decimal::from_i128_with_scale(i128::from(i64::MAX) + 1, 0);
        assert_eq!(
            to_parts(huge, "charge").unwrap_err().code,
            "decimal-out-of-range"
        );
    }

    #[test]
    fn display_helpers() {
        assert_eq!(fixed(d("23.4"), 2), "23.40");
        assert_eq!(fixed(d("23.405"), 2), "23.41");
        assert_eq!(fixed(d("-12.345"), 2), "-12.35");
        assert_eq!(fixed(d("4.56"), 1), "4.6");
        assert_eq!(at_least_dp(d("2755"), 2), "2755.00");
        assert_eq!(at_least_dp(d("12.345"), 2), "12.345");
    }
}
