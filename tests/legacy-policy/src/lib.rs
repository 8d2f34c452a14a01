//! A tariff component built against the policy contract **as it was at 1.0.0**, for the
//! host's backward-compatibility tests only (never shipped).
//!
//! Its WIT is the frozen copy in `wit/policy.wit` (this crate's own, not the repository's
//! current contract), and its world is 1.0.0's `tariff-policy`: it exports
//! `feegate:policy/tariff@1.0.0` with the single-call `price` and no batch interface
//! (`tariff-batch` came with 1.1.0). The host must load it, and decide one input per call
//! with it.
//!
//! The logic is deliberately trivial, so a test can work out every charge by hand: one
//! flat price per kWh from the parameters, `{"price_per_kwh": "0.5000"}` (a decimal as a
//! JSON string or integer, never a float; unknown keys refused), times the period's kWh,
//! rounded once, half up, to fen. One charge line; reason code [`REASON`].

use feegate_policy_sdk::decimal::{fixed, from_parts, to_parts};
use feegate_policy_sdk::params::{self, ParamDecimal, Rounding};
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "wit",
    world: "tariff-policy",
});

pub use exports::feegate::policy::tariff::{ChargeLine, TariffInput, TariffOutput};
pub use feegate::policy::types::{Decimal as WitDecimal, PolicyError};

/// Reason code of every successful pricing.
pub const REASON: &str = "legacy-flat-tariff";

/// The parameters: one price per kWh. Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Yuan per kWh, e.g. `"0.5000"`.
    pub price_per_kwh: ParamDecimal,
}

/// Prices one period: kWh × `price_per_kwh`, rounded once, half up, to fen.
///
/// # Errors
/// `bad-parameters` for parameters that do not parse; `invalid-input` for a negative kWh;
/// `decimal-out-of-range` for a decimal the WIT record cannot carry or an overflow.
pub fn price(input: &TariffInput) -> Result<TariffOutput, PolicyError> {
    price_checked(input).map_err(|e| PolicyError {
        code: e.code,
        message: e.message,
    })
}

fn price_checked(input: &TariffInput) -> Result<TariffOutput, SdkError> {
    let p: Params = params::parse(&input.parameters)?;
    let kwh = from_parts(input.kwh.mantissa, input.kwh.scale, "kwh")?;
    if kwh < Decimal::ZERO {
        return Err(SdkError::invalid_input(format!(
            "negative consumption: {kwh} kWh"
        )));
    }
    let price = p.price_per_kwh.get();
    let amount = kwh
        .checked_mul(price)
        .ok_or_else(|| SdkError::out_of_range("kWh × price overflows"))?;
    let charge_fen = Rounding::HalfUp.to_fen(amount)?;
    Ok(TariffOutput {
        lines: vec![ChargeLine {
            item: "energy".into(),
            kwh: wit(kwh, "kwh")?,
            price: wit(price, "price")?,
            amount: wit(amount, "amount")?,
        }],
        charge_fen,
        reason_code: REASON.into(),
        explanation: format!(
            "{} kWh at {} yuan per kWh: {} yuan (contract 1.0.0 flat tariff).",
            kwh.normalize(),
            price,
            fixed(Decimal::new(charge_fen, 2), 2)
        ),
    })
}

/// An exact decimal as the contract's `decimal` record.
fn wit(value: Decimal, what: &str) -> Result<WitDecimal, SdkError> {
    let (mantissa, scale) = to_parts(value, what)?;
    Ok(WitDecimal { mantissa, scale })
}

/// The component: `feegate:policy/tariff@1.0.0#price`.
pub struct Component;

impl exports::feegate::policy::tariff::Guest for Component {
    fn price(input: TariffInput) -> Result<TariffOutput, PolicyError> {
        price(&input)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use feegate::policy::types::{CustomerClass, Date};

    fn input(kwh: i64, scale: u8, parameters: &str) -> TariffInput {
        let day = Date {
            year: 2013,
            month: 1,
            day: 1,
        };
        TariffInput {
            account_id: "3500000001".into(),
            customer_class: CustomerClass::LowVoltageResidential,
            period_first: day,
            period_last: day,
            kwh: WitDecimal {
                mantissa: kwh,
                scale,
            },
            year_to_date_kwh: WitDecimal {
                mantissa: 0,
                scale: 0,
            },
            month_to_date_kwh: WitDecimal {
                mantissa: 0,
                scale: 0,
            },
            tou_split: vec![],
            time_of_use_elected: false,
            parameters: parameters.into(),
        }
    }

    const PARAMS: &str = r#"{"price_per_kwh":"0.5000"}"#;

    #[test]
    fn charges_kwh_times_price_rounded_half_up_to_fen() {
        // 12.35 kWh × 0.5 = 6.175 yuan → 618 fen; 12.34 kWh → 6.17 yuan → 617 fen.
        let out = price(&input(1235, 2, PARAMS)).unwrap();
        assert_eq!(out.charge_fen, 618);
        assert_eq!(out.reason_code, REASON);
        assert_eq!(out.lines.len(), 1);
        assert_eq!(price(&input(1234, 2, PARAMS)).unwrap().charge_fen, 617);
    }

    #[test]
    fn refuses_bad_parameters_and_negative_consumption() {
        let err = price(&input(10, 0, r#"{"price":"0.5"}"#)).unwrap_err();
        assert_eq!(err.code, "bad-parameters");
        let err = price(&input(-1, 0, PARAMS)).unwrap_err();
        assert_eq!(err.code, "invalid-input");
    }
}
