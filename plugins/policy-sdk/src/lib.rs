//! Shared helpers for Feegate policy components (Rust guests of `feegate:policy@1.1.0`).
//!
//! Every policy component is a pure function of its input (see `wit/policy.wit`), so this
//! crate holds only deterministic arithmetic and parsing:
//!
//! - [`PolicyError`]: the crate-side twin of the WIT `policy-error` record, with the stable
//!   codes every component uses ([`codes`]);
//! - [`decimal`]: exact conversion between the WIT `decimal { mantissa: s64, scale: u8 }`
//!   record and [`rust_decimal::Decimal`], and fixed-point display (also appended in place
//!   to a `String`, without `core::fmt`, for explanations built under fuel metering);
//! - [`params`]: parsing the county parameters (canonical JSON) with decimals that arrive
//!   as JSON strings (`"0.4983"`) or JSON integers (`2760`) — never through `f64`;
//! - [`calendar`]: proleptic-Gregorian dates, ISO weekdays and local wall-clock windows,
//!   computed from the input alone (no clock);
//! - [`text`]: integers appended to a `String` in place, the cheap way to build an
//!   explanation.
//!
//! The crate is a library linked into each component, not a component itself. It must
//! never pull in anything that imports `wasi:random`, `wasi:clocks` or `wasi:filesystem`
//! (so no `HashMap`/`HashSet` with `RandomState`, no `std::time`, no `std::env`).

pub mod calendar;
pub mod decimal;
pub mod params;
pub mod text;

pub use rust_decimal::Decimal;

/// Stable machine codes carried in `policy-error.code`. The host holds and flags the
/// account whatever the code; the code tells the operator where to look.
pub mod codes {
    /// The county parameters (the policy set's `[<kind>.parameters]`) are missing a key,
    /// carry an unknown key, a value of the wrong type, or values that contradict each
    /// other. Fix the policy set.
    pub const BAD_PARAMETERS: &str = "bad-parameters";
    /// The host's input is malformed or inconsistent (negative kWh, an impossible date,
    /// a weekday that does not match the date, …). Fix the host or its data.
    pub const INVALID_INPUT: &str = "invalid-input";
    /// A decimal does not fit the WIT `decimal` record (scale above 28, or a mantissa
    /// beyond a signed 64-bit integer), or an intermediate result overflowed.
    pub const DECIMAL_OUT_OF_RANGE: &str = "decimal-out-of-range";
}

/// Why a policy refused to decide; converted into the WIT `policy-error` record by each
/// component's thin export glue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Stable machine code, one of [`codes`] or a component-specific one
    /// (e.g. `"tou-split-mismatch"`).
    pub code: String,
    /// What was wrong, for the operator.
    pub message: String,
}

impl PolicyError {
    /// An error with an explicit code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        PolicyError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// [`codes::BAD_PARAMETERS`].
    pub fn bad_parameters(message: impl Into<String>) -> Self {
        Self::new(codes::BAD_PARAMETERS, message)
    }

    /// [`codes::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_INPUT, message)
    }

    /// [`codes::DECIMAL_OUT_OF_RANGE`].
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(codes::DECIMAL_OUT_OF_RANGE, message)
    }
}

impl core::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PolicyError {}
