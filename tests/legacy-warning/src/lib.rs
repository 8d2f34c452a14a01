//! A warning component built against the policy contract **as it was at 1.0.0**, for the
//! host's backward-compatibility tests only (never shipped): the warning twin of
//! `tests/legacy-policy`.
//!
//! Its WIT is `tests/legacy-policy/wit/policy.wit`, the frozen 1.0.0 contract, shared with
//! that crate rather than copied (never edit it: the current contract is `wit/policy.wit`
//! at the repository root). Its world is 1.0.0's `warning-policy`: it exports
//! `feegate:policy/warning@1.0.0` with the single-call `assess` and no batch interface
//! (`warning-batch` came with 1.1.0). The host must load it and, in the warning stage,
//! assess one balance per call with it.
//!
//! The logic is deliberately trivial, so a test can work out every level by hand. One
//! threshold in fen from the parameters, `{"low_below_fen": 2000}` (a JSON integer; unknown
//! keys refused):
//!
//! - balance < threshold: level 1 (first alarm, low balance) with the single action
//!   `notify`;
//! - balance ≥ threshold (exactly at it included): level 0, no action.
//!
//! Nothing else in the input counts (agreement, history, levels already notified); there
//! is never a forecast (`days-of-credit-left` is none). Reason code [`REASON`] on every
//! successful assessment.

use feegate_policy_sdk::decimal::{fixed, from_parts};
use feegate_policy_sdk::params;
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../legacy-policy/wit",
    world: "warning-policy",
});

pub use exports::feegate::policy::warning::{WarningAction, WarningInput, WarningOutput};
pub use feegate::policy::types::{Decimal as WitDecimal, PolicyError};

/// Reason code of every successful assessment.
pub const REASON: &str = "legacy-threshold-warning";

/// The parameters: one threshold. Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A balance below this many fen is low, e.g. `2000` (20.00 yuan).
    pub low_below_fen: i64,
}

/// Assesses one balance: level 1 with `notify` below `low_below_fen`, else level 0.
///
/// # Errors
/// `bad-parameters` for parameters that do not parse; `decimal-out-of-range` for a
/// balance the host's decimals cannot carry.
pub fn assess(input: &WarningInput) -> Result<WarningOutput, PolicyError> {
    assess_checked(input).map_err(|e| PolicyError {
        code: e.code,
        message: e.message,
    })
}

fn assess_checked(input: &WarningInput) -> Result<WarningOutput, SdkError> {
    let p: Params = params::parse(&input.parameters)?;
    let balance = from_parts(input.balance.mantissa, input.balance.scale, "balance")?;
    let threshold = Decimal::new(p.low_below_fen, 2);
    let (level, actions, relation) = if balance < threshold {
        (1, vec![WarningAction::Notify], "below")
    } else {
        (0, vec![], "not below")
    };
    Ok(WarningOutput {
        level,
        actions,
        days_of_credit_left: None,
        reason_code: REASON.into(),
        explanation: format!(
            "Balance {balance} yuan is {relation} the threshold of {} yuan: level {level} (contract 1.0.0 threshold warning).",
            fixed(threshold, 2)
        ),
    })
}

/// The component: `feegate:policy/warning@1.0.0#assess`.
pub struct Component;

impl exports::feegate::policy::warning::Guest for Component {
    fn assess(input: WarningInput) -> Result<WarningOutput, PolicyError> {
        assess(&input)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use feegate::policy::types::{Agreement, Date};

    fn input(mantissa: i64, scale: u8, parameters: &str) -> WarningInput {
        WarningInput {
            account_id: "3500000001".into(),
            today: Date {
                year: 2013,
                month: 1,
                day: 8,
            },
            balance: WitDecimal { mantissa, scale },
            agreement: Agreement {
                alarm_threshold: WitDecimal {
                    mantissa: 5000,
                    scale: 2,
                },
                auto_debit_amount: None,
                keep_power: false,
                mobile_verified: true,
            },
            recent_days: vec![],
            days_in_arrears: 0,
            level_already_notified: 0,
            auto_debit_in_flight: false,
            parameters: parameters.into(),
        }
    }

    const PARAMS: &str = r#"{"low_below_fen":2000}"#;

    #[test]
    fn warns_below_the_threshold_only() {
        // 19.99 yuan < 20.00: level 1, notify; 20.00 (exactly at it) and 20.01: level 0.
        let out = assess(&input(1999, 2, PARAMS)).unwrap();
        assert_eq!(out.level, 1);
        assert_eq!(out.actions, vec![WarningAction::Notify]);
        assert_eq!(out.reason_code, REASON);
        assert!(out.days_of_credit_left.is_none());
        for (mantissa, scale) in [(2000, 2), (20, 0), (2001, 2)] {
            let out = assess(&input(mantissa, scale, PARAMS)).unwrap();
            assert_eq!(out.level, 0, "{mantissa}e-{scale}");
            assert!(out.actions.is_empty());
        }
        // Arrears are below any positive threshold too: still level 1, nothing more.
        assert_eq!(assess(&input(-500, 2, PARAMS)).unwrap().level, 1);
    }

    #[test]
    fn refuses_bad_parameters() {
        for bad in [
            r#"{"low_below":2000}"#,
            r#"{"low_below_fen":2000,"x":1}"#,
            "",
        ] {
            let err = assess(&input(100, 2, bad)).unwrap_err();
            assert_eq!(err.code, "bad-parameters", "{bad}");
        }
    }
}
