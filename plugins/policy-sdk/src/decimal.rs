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
///
/// Exactly `Decimal::rescale(min_dp)` (only when the scale is below `min_dp`) followed by
/// `Display`; see [`push_at_least_dp`] to append it to a `String` without allocating.
pub fn at_least_dp(value: Decimal, min_dp: u32) -> String {
    let mut shown = String::with_capacity(24);
    push_at_least_dp(&mut shown, value, min_dp);
    shown
}

/// Append `value` exactly as its `Display` prints it (`value.to_string()`): every digit of
/// the scale kept (`"1.500"`), `"0."` before a fraction below 1 (`"0.0042"`), `-` whenever
/// the sign bit is set (so a negative zero prints `"-0.00"`).
pub fn push_decimal(out: &mut String, value: Decimal) {
    push_shown(out, value, 0, false);
}

/// Append [`at_least_dp`]`(value, min_dp)`: `value` with at least `min_dp` decimal places
/// (`2755` → `"2755.00"`, `12.345` → `"12.345"`).
pub fn push_at_least_dp(out: &mut String, value: Decimal, min_dp: u32) {
    push_shown(out, value, min_dp, false);
}

/// Append [`at_least_dp`]`(value.normalize(), min_dp)`: trailing fractional zeros dropped,
/// then at least `min_dp` decimal places (`4.9830` → `"4.983"`, `0.300` with 2 → `"0.30"`,
/// any zero → `"0.00"` with 2, never `"-0.00"`). The form explanations use for an
/// unrounded amount of yuan.
pub fn push_normalized_at_least_dp(out: &mut String, value: Decimal, min_dp: u32) {
    push_shown(out, value, min_dp, true);
}

/// The old, general path: `Decimal`'s own `normalize`, `rescale` and `Display`, which work
/// on the 96-bit mantissa a digit at a time. Used only when the fast path does not apply.
fn push_shown_slow(out: &mut String, value: Decimal, min_dp: u32, normalize: bool) {
    use core::fmt::Write;
    let mut shown = if normalize { value.normalize() } else { value };
    if shown.scale() < min_dp {
        shown.rescale(min_dp);
    }
    // Writing to a `String` cannot fail.
    let _ = write!(out, "{shown}");
}

/// Shared body of the `push_*` decimal display helpers: (optionally) normalise, raise the
/// scale to `min_dp` and print, all on a 64-bit mantissa.
///
/// Fast path, taken for every value whose 96-bit mantissa fits in 64 bits (|mantissa| <
/// 1.8 × 10^19: every kWh, price and amount a tariff meets) and `min_dp` ≤ 28: normalising
/// strips trailing zeros with 64-bit divisions, raising the scale only appends `'0'`s, and
/// the digits come out of a `u64` loop into a stack buffer. Anything else (a mantissa above
/// 2^64, `min_dp` > 28, or a rescale whose mantissa would not fit 96 bits, where `rescale`
/// stops at a smaller scale) goes through [`push_shown_slow`], so the text is always exactly
/// `Decimal`'s.
fn push_shown(out: &mut String, value: Decimal, min_dp: u32, normalize: bool) {
    let parts = value.unpack();
    if parts.hi != 0 || min_dp > u32::from(MAX_SCALE) {
        return push_shown_slow(out, value, min_dp, normalize);
    }
    let mut mantissa = (u64::from(parts.mid) << 32) | u64::from(parts.lo);
    let mut scale = parts.scale;
    let mut negative = parts.negative;
    if normalize {
        if mantissa == 0 {
            // `normalize` turns every zero into a positive `0` of scale 0.
            negative = false;
            scale = 0;
        }
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
    }
    let shown_scale = scale.max(min_dp);
    let padding = shown_scale - scale;
    // `rescale` multiplies the 96-bit mantissa by 10^padding; 2^64 × 10^9 < 2^96 always
    // fits, a wider padding must be checked (if it does not fit, `rescale` does something
    // else, and the slow path reproduces it).
    if padding > 9 && mantissa != 0 {
        let fits = u128::from(mantissa)
            .checked_mul(10u128.pow(padding))
            .is_some_and(|m| m < 1u128 << 96);
        if !fits {
            return push_shown_slow(out, value, min_dp, normalize);
        }
    }
    push_digits(out, negative, mantissa, scale, shown_scale);
}

/// Append `±mantissa × 10^(−scale)` with `shown_scale` decimal places, the way `Decimal`'s
/// `Display` prints a value of that scale: the `scale` fraction digits of the mantissa
/// (zero-filled on the left), then `shown_scale − scale` zeros; a `0` integer part when
/// the mantissa has no more digits; no `.` when `shown_scale` is 0; `-` when `negative`.
///
/// Requires `scale` ≤ `shown_scale` ≤ 28 (so at most 1 + 20 + 1 + 28 = 50 bytes).
fn push_digits(out: &mut String, negative: bool, mantissa: u64, scale: u32, shown_scale: u32) {
    debug_assert!(scale <= shown_scale && shown_scale <= u32::from(MAX_SCALE));
    // Filled from the right; pre-set to '0' so the padding zeros are already there.
    let mut buf = [b'0'; 52];
    let mut pos = buf.len() - (shown_scale - scale) as usize;
    let mut rest = mantissa;
    for _ in 0..scale {
        pos -= 1;
        buf[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    if shown_scale > 0 {
        pos -= 1;
        buf[pos] = b'.';
    }
    pos = crate::text::digits_into(&mut buf[..pos], rest);
    if negative {
        pos -= 1;
        buf[pos] = b'-';
    }
    crate::text::push_ascii(out, &buf[pos..]);
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

    /// The definitions the fast `push_*` helpers must reproduce byte for byte.
    fn reference(value: Decimal, min_dp: u32, normalize: bool) -> String {
        let mut shown = if normalize { value.normalize() } else { value };
        if shown.scale() < min_dp {
            shown.rescale(min_dp);
        }
        shown.to_string()
    }

    fn fast(value: Decimal, min_dp: u32, normalize: bool) -> String {
        let mut out = String::from("~");
        if normalize {
            push_normalized_at_least_dp(&mut out, value, min_dp);
        } else {
            push_at_least_dp(&mut out, value, min_dp);
        }
        out.split_off(1)
    }

    fn check(value: Decimal, min_dp: u32) {
        for normalize in [false, true] {
            assert_eq!(
                fast(value, min_dp, normalize),
                reference(value, min_dp, normalize),
                "{value:?} (scale {}, negative {}) min_dp {min_dp} normalize {normalize}",
                value.scale(),
                value.is_sign_negative()
            );
        }
        let mut shown = String::new();
        push_decimal(&mut shown, value);
        assert_eq!(shown, value.to_string(), "{value:?}");
    }

    #[test]
    fn push_helpers_match_decimal_display_on_edge_cases() {
        let mut negative_zero = Decimal::new(0, 3);
        negative_zero.set_sign_negative(true);
        assert_eq!(negative_zero.to_string(), "-0.000");
        let values = [
            d("0"),
            d("0.00"),
            negative_zero,
            d("-0.5"),
            d("2755"),
            d("12.345"),
            d("4.9830"),
            d("0.0000034881"),
            d("100"),
            d("-0.2000"),
            d("1.000000000000000000000000000"),
            Decimal::new(i64::MAX, 0),
            Decimal::new(i64::MIN, 28),
            Decimal::from_i128_with_scale(i128::from(u64::MAX), 5),
            Decimal::from_i128_with_scale(i128::from(u64::MAX) + 1, 5),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(1, 28),
            Decimal::from_i128_with_scale(7_000_000_000, 0),
        ];
        for value in values {
            // Above 28, `rescale` can leave a scale `Display` itself panics on; both paths
            // then do what `Decimal` does, so those are not compared here.
            for min_dp in [0, 1, 2, 4, 9, 10, 19, 20, 27, 28] {
                check(value, min_dp);
            }
        }
        assert_eq!(fast(d("-0.000"), 2, true), "0.00");
        assert_eq!(fast(d("4.9830"), 2, true), "4.983");
        assert_eq!(fast(d("0.300"), 2, true), "0.30");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Any `Decimal`: every scale 0..=28, either sign bit (negative zero included),
        /// mantissas mostly within 64 bits (the fast path) but also full 96-bit ones, and
        /// often with trailing zeros (`× 10^k`) for `normalize` to strip.
        fn any_decimal() -> impl Strategy<Value = Decimal> {
            let mantissa = prop_oneof![
                4 => 0u64..1_000,
                4 => 0u64..10_000_000_000,
                3 => any::<u64>(),
                1 => Just(0u64),
                1 => Just(u64::MAX),
            ];
            let trailing = prop_oneof![2 => Just(0u32), 1 => 0u32..20];
            let wide = prop_oneof![6 => Just(0u32), 1 => any::<u32>(), 1 => 0u32..4];
            (mantissa, trailing, wide, any::<bool>(), 0u32..=28).prop_map(
                |(mantissa, trailing, hi, negative, scale)| {
                    let mut m = u128::from(mantissa) | (u128::from(hi) << 64);
                    for _ in 0..trailing {
                        if m * 10 < 1u128 << 96 {
                            m *= 10;
                        }
                    }
                    let m = m % (1u128 << 96);
                    let mut value = Decimal::from_parts(
                        m as u32,
                        (m >> 32) as u32,
                        (m >> 64) as u32,
                        false,
                        scale,
                    );
                    value.set_sign_negative(negative);
                    value
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            #[test]
            fn push_helpers_equal_decimal_display(value in any_decimal(), min_dp in 0u32..=28) {
                check(value, min_dp);
            }
        }
    }
}
