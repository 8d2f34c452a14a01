//! Cheap text building for explanations: integers appended to a `String` in place.
//!
//! A policy's explanation is built once per decision, under fuel metering. `format!`,
//! `to_string()` and `Vec<String>` + `join` each go through `core::fmt` (a `Formatter`,
//! dynamic dispatch, padding logic) and a fresh allocation; the helpers here write the
//! digits into a small stack buffer and append them with one `push_str`, so a caller can
//! build the whole text in one pre-reserved `String`. The output is byte-for-byte what
//! `Display` prints.
//!
//! The decimal twins live in [`crate::decimal`] ([`push_decimal`](crate::decimal::push_decimal),
//! [`push_at_least_dp`](crate::decimal::push_at_least_dp)); dates in
//! [`CivilDate::push_iso`](crate::calendar::CivilDate::push_iso).

/// Append `bytes`, which the callers in this crate fill with ASCII only (digits, `-`, `.`).
pub(crate) fn push_ascii(out: &mut String, bytes: &[u8]) {
    // Validation of a few ASCII bytes is a short loop; it keeps the crate free of `unsafe`.
    out.push_str(core::str::from_utf8(bytes).expect("digits are ASCII"));
}

/// Write the decimal digits of `n` right-aligned into the end of `buf` (most significant
/// first; `0` is one digit) and return the index of the first digit.
///
/// `buf` must hold at least 20 bytes (the digits of `u64::MAX`).
pub(crate) fn digits_into(buf: &mut [u8], mut n: u64) -> usize {
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return pos;
        }
    }
}

/// Append `n` in decimal, as `n.to_string()` prints it (`0`, `42`, `18446744073709551615`).
pub fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let start = digits_into(&mut buf, n);
    push_ascii(out, &buf[start..]);
}

/// Append `n` in decimal, as `n.to_string()` prints it (`-7`, `0`, `1347`).
pub fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Append `n` in decimal left-padded with zeros to `width` digits, as `format!("{n:0width$}")`
/// prints a non-negative number (`push_zero_padded(s, 6, 2)` appends `06`; wider numbers
/// are not cut). `width` is at most 20 (the digits of `u64::MAX`); more pads to 20.
pub fn push_zero_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let start = digits_into(&mut buf, n).min(buf.len().saturating_sub(width));
    push_ascii(out, &buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_match_display() {
        let unsigned = [0, 1, 9, 10, 99, 100, 1347, u64::from(u32::MAX), u64::MAX];
        for n in unsigned {
            let mut s = String::from("x");
            push_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        for n in [i64::MIN, -1347, -1, 0, 1, 10, i64::MAX] {
            let mut s = String::new();
            push_i64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for (n, width) in [(0, 2), (6, 2), (12, 2), (123, 2), (2013, 4), (7, 4), (5, 0)] {
            let mut s = String::new();
            push_zero_padded(&mut s, n, width);
            assert_eq!(s, format!("{n:0width$}"), "{n} width {width}");
        }
    }
}
