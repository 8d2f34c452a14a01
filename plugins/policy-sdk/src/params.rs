//! County parameters: the policy set's `[<kind>.parameters]` table, handed to a component
//! as canonical JSON (serde_json, keys sorted) in the input's `parameters` string.
//!
//! Decimals (prices, yuan amounts, kWh thresholds) arrive as JSON strings (`"0.4983"`)
//! because TOML authors write them that way; JSON integers (`2760`) are accepted too.
//! JSON floats (`0.4983` unquoted, `1e3`) are refused: a float has already lost the exact
//! value the county published, and money never travels as a float.

use crate::PolicyError;
use core::cell::RefCell;
use core::fmt;
use core::str::FromStr;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use std::rc::Rc;

/// Parse `json` into a parameter struct.
///
/// # Errors
/// [`crate::codes::BAD_PARAMETERS`] with serde's message (which names the offending key
/// and position) when the JSON is malformed or does not match `T`.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, PolicyError> {
    serde_json::from_str(json).map_err(|e| PolicyError::bad_parameters(format!("parameters: {e}")))
}

/// The parameters parsed last on this thread, kept so that an instance that makes many
/// decisions with the same parameters string parses it once.
///
/// Each component declares one in a `thread_local!` and reads its parameters through
/// [`ParsedOnce::get`]. The result is exactly what `parse` gives for that string (errors
/// included), so outputs stay a pure function of the input: the host runs every real
/// decision in a fresh instance, where this always parses, and only `feegate bench policy`
/// (one instance for many decisions) and natively linked callers see it hit.
pub struct ParsedOnce<T> {
    last: RefCell<Option<(String, Parsed<T>)>>,
}

/// What a parameters string parsed to, shared.
type Parsed<T> = Result<Rc<T>, PolicyError>;

impl<T> ParsedOnce<T> {
    /// Nothing parsed yet.
    pub const fn new() -> Self {
        Self {
            last: RefCell::new(None),
        }
    }

    /// `parse(json)`, reusing the previous result when `json` is the same string.
    ///
    /// # Errors
    /// Whatever `parse` returns for `json`.
    pub fn get(
        &self,
        json: &str,
        parse: impl FnOnce(&str) -> Result<T, PolicyError>,
    ) -> Result<Rc<T>, PolicyError> {
        let mut last = self.last.borrow_mut();
        if let Some((previous, parsed)) = &*last
            && same_bytes(previous.as_bytes(), json.as_bytes())
        {
            return parsed.clone();
        }
        let parsed = parse(json).map(Rc::new);
        *last = Some((json.to_string(), parsed.clone()));
        parsed
    }
}

/// The answers of a batch call (contract 1.1 `price-batch`, `assess-batch`): `decide` on
/// every input with the parameters parsed once, in input order; when the parameters did
/// not parse, their error for every input alike.
pub fn answer_each<P, I, O, E: From<PolicyError>>(
    parameters: Result<Rc<P>, PolicyError>,
    inputs: &[I],
    decide: impl Fn(&P, &I) -> Result<O, PolicyError>,
) -> Vec<Result<O, E>> {
    match parameters {
        Ok(p) => inputs
            .iter()
            .map(|input| decide(&p, input).map_err(E::from))
            .collect(),
        Err(e) => inputs.iter().map(|_| Err(E::from(e.clone()))).collect(),
    }
}

/// `a == b`, eight bytes at a time: on wasm32 `==` on slices is a byte-by-byte `memcmp`
/// (no SIMD), which cost 5 % of a batched tariff decision for a 370-byte parameters string.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = a_words.remainder() == b_words.remainder();
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("chunks of 8"));
    tails_equal && a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
}

impl<T> Default for ParsedOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A decimal parameter: a JSON string in plain decimal notation (`"0.4983"`, `"-0.2000"`,
/// `"50"`) or a JSON integer (`2760`). Exponents, `+`, blanks, underscores and JSON floats
/// are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParamDecimal(pub Decimal);

impl ParamDecimal {
    /// The exact value.
    pub fn get(self) -> Decimal {
        self.0
    }
}

/// Parse plain decimal notation exactly: `-?digits(.digits)?`.
///
/// # Errors
/// A message for the caller to wrap, when the text is not plain decimal notation or has
/// more than 28 decimals / 96 bits of mantissa.
pub fn parse_plain_decimal(text: &str) -> Result<Decimal, String> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = all_digits(int_part) && frac_part.is_none_or(all_digits);
    if !well_formed {
        return Err(format!(
            "{text:?} is not a plain decimal number (expected e.g. \"0.4983\")"
        ));
    }
    Decimal::from_str_exact(text).map_err(|e| format!("{text:?} is out of range: {e}"))
}

impl<'de> Deserialize<'de> for ParamDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;

        impl Visitor<'_> for DecimalVisitor {
            type Value = ParamDecimal;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal as a JSON string (e.g. \"0.4983\") or a JSON integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamDecimal, E> {
                parse_plain_decimal(v).map(ParamDecimal).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamDecimal, E> {
                Ok(ParamDecimal(Decimal::from(v)))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamDecimal, E> {
                Ok(ParamDecimal(Decimal::from(v)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamDecimal, E> {
                Err(E::custom(format_args!(
                    "the JSON float {v} is refused: write decimals as strings (e.g. \"0.4983\") \
                     so no digit is lost"
                )))
            }
        }

        deserializer.deserialize_any(DecimalVisitor)
    }
}

/// How a yuan amount becomes whole fen (分) when it is posted: the county's declared
/// `charge_rounding`. The amount is rounded once per priced period, never per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// `"half-up"` (四舍五入): a half fen goes away from zero (0.005 元 → 1 fen).
    HalfUp,
    /// `"half-even"` (banker's rounding): a half fen goes to the even fen.
    HalfEven,
    /// `"down"`: truncate toward zero (the customer is never charged a part fen).
    Down,
}

impl Rounding {
    /// The parameter spelling (`"half-up"`, `"half-even"`, `"down"`).
    pub fn name(self) -> &'static str {
        match self {
            Rounding::HalfUp => "half-up",
            Rounding::HalfEven => "half-even",
            Rounding::Down => "down",
        }
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::Down => RoundingStrategy::ToZero,
        }
    }

    /// `yuan` (元, any scale) → whole fen (分), rounded once with this rule.
    ///
    /// # Errors
    /// [`crate::codes::DECIMAL_OUT_OF_RANGE`] when the fen amount exceeds `s64`.
    pub fn to_fen(self, yuan: Decimal) -> Result<i64, PolicyError> {
        let fen = yuan
            .checked_mul(Decimal::ONE_HUNDRED)
            .ok_or_else(|| PolicyError::out_of_range(format!("{yuan} 元 overflows in fen")))?
            .round_dp_with_strategy(0, self.strategy());
        i64::try_from(fen)
            .map_err(|_| PolicyError::out_of_range(format!("{fen} fen does not fit s64")))
    }
}

impl FromStr for Rounding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "half-up" => Ok(Rounding::HalfUp),
            "half-even" => Ok(Rounding::HalfEven),
            "down" => Ok(Rounding::Down),
            other => Err(format!(
                "unknown rounding {other:?} (expected \"half-up\", \"half-even\" or \"down\")"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        x: ParamDecimal,
        #[serde(default)]
        y: Option<ParamDecimal>,
        r: Option<Rounding>,
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn decimal_parameters_from_strings_and_integers() {
        let cases: &[(&str, &str)] = &[
            (r#"{"x":"0.4983"}"#, "0.4983"),
            (r#"{"x":"-0.2000"}"#, "-0.2000"),
            (r#"{"x":2760}"#, "2760"),
            (r#"{"x":-3}"#, "-3"),
            (r#"{"x":"50"}"#, "50"),
        ];
        for (json, want) in cases {
            let p: P = parse(json).unwrap();
            assert_eq!(p.x.get(), d(want), "{json}");
            assert_eq!(p.x.get().scale(), d(want).scale(), "{json}: scale kept");
            assert_eq!(p.y, None);
        }
    }

    #[test]
    fn decimal_parameters_refused() {
        for json in [
            r#"{"x":0.4983}"#,
            r#"{"x":1e3}"#,
            r#"{"x":"1e3"}"#,
            r#"{"x":"+1"}"#,
            r#"{"x":" 1"}"#,
            r#"{"x":"1_000"}"#,
            r#"{"x":".5"}"#,
            r#"{"x":"5."}"#,
            r#"{"x":""}"#,
            r#"{"x":true}"#,
            r#"{"x":"1","z":1}"#,
            r#"{}"#,
            r#"not json"#,
        ] {
            let err = parse::<P>(json).unwrap_err();
            assert_eq!(err.code, "bad-parameters", "{json}");
        }
    }

    #[test]
    fn same_bytes_is_equality() {
        let texts: &[&[u8]] = &[
            b"",
            b"a",
            b"abcdefgh",
            b"abcdefgi",
            b"abcdefghi",
            b"abcdefghj",
            b"bbcdefghi",
            br#"{"charge_rounding":"half-up","cycle":"calendar-year"}"#,
            br#"{"charge_rounding":"half-up","cycle":"calendar-yeaR"}"#,
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn parsed_once_reuses_only_the_same_string() {
        let cache = ParsedOnce::<P>::new();
        let mut parses = 0;
        let mut get = |json: &str| {
            cache.get(json, |j| {
                parses += 1;
                parse(j)
            })
        };
        let a = get(r#"{"x":"1.5"}"#).unwrap();
        assert_eq!(a.x.get(), d("1.5"));
        assert_eq!(get(r#"{"x":"1.5"}"#).unwrap().x.get(), d("1.5"));
        assert_eq!(get(r#"{"x":"2"}"#).unwrap().x.get(), d("2"));
        assert_eq!(get(r#"{"x":"1.5"}"#).unwrap().x.get(), d("1.5"));
        // An error is the same error on reuse.
        let first = get("not json").unwrap_err();
        assert_eq!(get("not json").unwrap_err(), first);
        assert_eq!(parses, 4, "parsed once per change of string");
    }

    #[test]
    fn rounding_to_fen() {
        // (yuan, half-up, half-even, down)
        let cases: &[(&str, i64, i64, i64)] = &[
            ("74.745", 7475, 7474, 7474),
            ("24.915", 2492, 2492, 2491),
            ("6.60375", 660, 660, 660),
            ("26.6097339", 2661, 2661, 2660),
            ("0.005", 1, 0, 0),
            ("0", 0, 0, 0),
        ];
        for &(yuan, up, even, down) in cases {
            assert_eq!(
                Rounding::HalfUp.to_fen(d(yuan)).unwrap(),
                up,
                "{yuan} half-up"
            );
            assert_eq!(
                Rounding::HalfEven.to_fen(d(yuan)).unwrap(),
                even,
                "{yuan} half-even"
            );
            assert_eq!(Rounding::Down.to_fen(d(yuan)).unwrap(), down, "{yuan} down");
        }
    }

    #[test]
    fn rounding_names_round_trip() {
        for r in [Rounding::HalfUp, Rounding::HalfEven, Rounding::Down] {
            assert_eq!(Rounding::from_str(r.name()), Ok(r));
            let p: P = parse(&format!(r#"{{"x":1,"r":"{}"}}"#, r.name())).unwrap();
            assert_eq!(p.r, Some(r));
        }
        assert!(Rounding::from_str("ceiling").is_err());
        assert!(parse::<P>(r#"{"x":1,"r":"ceiling"}"#).is_err());
    }
}
