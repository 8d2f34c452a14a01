//! `warning-threshold`: low-balance warning levels (预警) after each settlement, as a
//! `feegate:policy/warning@1.1.0` component that also exports `warning-batch` (many
//! balances per call, [`assess_batch`]).
//!
//! Rules (parameters from the county policy set, e.g. Xianyou's `[warning.parameters]`;
//! thresholds from the Fujian fee-control example, `shared/data/fujian-residential-example.toml`):
//!
//! **Level** — the first rule that holds:
//!
//! | level | reason code | when |
//! |---|---|---|
//! | 3 arrears (欠费) | `arrears` | balance < `disconnect_below_yuan` |
//! | 2 second alarm | `second-alarm` | balance < `second_alarm_yuan` |
//! | 1 first alarm (预警) | `low-balance` | balance < the alarm threshold: the agreement's 预警值 when it is above 0, else `alarm_threshold_yuan` |
//! | 1 first alarm | `low-balance-forecast` | days of credit left < `warn_when_days_left_below` |
//! | 0 | `balance-ok` | otherwise |
//!
//! **Days of credit left** = balance ÷ the average daily charge over the last
//! `forecast_window_days` entries of `recent-days` (settled days, oldest first), truncated
//! to 0.1 day. It is 0 when the balance is ≤ 0, and none when there is no history or the
//! average charge is not above 0.
//!
//! **Actions**, each independent:
//! - `notify` when level > `level-already-notified` (a level is never warned twice between
//!   top-ups; a lower level after a higher one is not re-sent);
//! - `request-auto-debit` when level ≥ 1, the agreement has an auto-debit amount (代扣值) and
//!   no auto-debit is in flight;
//! - `offline-follow-up` (抄收员线下催费) when the balance is below 0 and `days-in-arrears`
//!   has reached `offline_follow_up_after_days_in_arrears`. It is asked for on every
//!   assessment from then on; the host opens one task per arrears episode (its work order
//!   is keyed by the episode), so a day without an assessment cannot skip the task.

use feegate_policy_sdk::calendar::CivilDate;
use feegate_policy_sdk::decimal::{fixed, from_parts, to_parts};
use feegate_policy_sdk::params::{self, ParamDecimal, ParsedOnce};
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use rust_decimal::RoundingStrategy;
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit",
    world: "warning-batch-policy",
    // serde: the host links this crate natively for `feegate bench policy` and reads the
    // recorded decision inputs (the host's serde JSON of the same WIT records) into it.
    additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
});

pub use exports::feegate::policy::warning::{WarningAction, WarningInput, WarningOutput};
pub use feegate::policy::types::{Agreement, Date, DayUsage, Decimal as WitDecimal, PolicyError};

impl From<SdkError> for PolicyError {
    fn from(e: SdkError) -> Self {
        PolicyError {
            code: e.code,
            message: e.message,
        }
    }
}

thread_local! {
    /// The county parameters, parsed once per instance while the string stays the same
    /// ([`feegate_policy_sdk::params::ParsedOnce`]).
    static PARAMS: ParsedOnce<WarningParams> = const { ParsedOnce::new() };
}

/// Validated `[warning.parameters]`. Amounts in yuan (元).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarningParams {
    /// Default alarm threshold (预警值), 元, used when the agreement's is 0.
    pub alarm_threshold_yuan: Decimal,
    /// Second alarm below this balance, 元.
    pub second_alarm_yuan: Decimal,
    /// Arrears (level 3) below this balance, 元.
    pub disconnect_below_yuan: Decimal,
    /// Settled days averaged for the days-of-credit-left forecast (≥ 1).
    pub forecast_window_days: u32,
    /// Level 1 also when fewer days of credit than this are left.
    pub warn_when_days_left_below: Decimal,
    /// Days in arrears on which the meter-reader follow-up task opens.
    pub offline_follow_up_after_days_in_arrears: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    alarm_threshold_yuan: ParamDecimal,
    second_alarm_yuan: ParamDecimal,
    disconnect_below_yuan: ParamDecimal,
    forecast_window_days: u32,
    warn_when_days_left_below: ParamDecimal,
    offline_follow_up_after_days_in_arrears: u32,
}

impl WarningParams {
    /// Parse and validate the canonical-JSON parameters.
    ///
    /// # Errors
    /// `bad-parameters` for a missing, unknown or mistyped key, thresholds out of order
    /// (`disconnect_below_yuan` ≤ `second_alarm_yuan` ≤ `alarm_threshold_yuan` is
    /// required), `forecast_window_days` = 0 or a negative `warn_when_days_left_below`.
    pub fn from_json(json: &str) -> Result<Self, SdkError> {
        let raw: RawParams = params::parse(json)?;
        let p = WarningParams {
            alarm_threshold_yuan: raw.alarm_threshold_yuan.get(),
            second_alarm_yuan: raw.second_alarm_yuan.get(),
            disconnect_below_yuan: raw.disconnect_below_yuan.get(),
            forecast_window_days: raw.forecast_window_days,
            warn_when_days_left_below: raw.warn_when_days_left_below.get(),
            offline_follow_up_after_days_in_arrears: raw.offline_follow_up_after_days_in_arrears,
        };
        if !(p.disconnect_below_yuan <= p.second_alarm_yuan
            && p.second_alarm_yuan <= p.alarm_threshold_yuan)
        {
            return Err(SdkError::bad_parameters(format!(
                "thresholds out of order: need disconnect_below_yuan ({}) ≤ second_alarm_yuan \
                 ({}) ≤ alarm_threshold_yuan ({})",
                p.disconnect_below_yuan, p.second_alarm_yuan, p.alarm_threshold_yuan
            )));
        }
        if p.forecast_window_days == 0 {
            return Err(SdkError::bad_parameters(
                "forecast_window_days must be at least 1",
            ));
        }
        if p.warn_when_days_left_below < Decimal::ZERO {
            return Err(SdkError::bad_parameters(format!(
                "warn_when_days_left_below {} is negative",
                p.warn_when_days_left_below
            )));
        }
        Ok(p)
    }
}

/// WIT `decimal` → exact [`Decimal`].
fn dec(value: &WitDecimal, what: &str) -> Result<Decimal, SdkError> {
    from_parts(value.mantissa, value.scale, what)
}

/// Why a days-of-credit-left forecast has the value it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forecast {
    /// Balance ≤ 0: no credit left (0 days).
    NoCredit,
    /// No settled day in the history: cannot forecast.
    NoHistory,
    /// The average daily charge over the window is ≤ 0 元: cannot forecast.
    NoCharge,
    /// `days` (truncated to 0.1) at `average` 元/day over `window` settled days.
    Days {
        /// Days of credit left, 1 decimal, truncated.
        days: Decimal,
        /// Average daily charge, 元/day (unrounded).
        average: Decimal,
        /// Number of settled days averaged.
        window: usize,
    },
}

impl Forecast {
    /// The value for the output's `days-of-credit-left`.
    pub fn days(self) -> Option<Decimal> {
        match self {
            Forecast::NoCredit => Some(Decimal::new(0, 1)),
            Forecast::NoHistory | Forecast::NoCharge => None,
            Forecast::Days { days, .. } => Some(days),
        }
    }
}

/// Days of credit left: `balance` (元) ÷ the average of the last `window_days` daily
/// charges (元, oldest first), truncated to 0.1 day.
pub fn forecast(balance: Decimal, daily_charges: &[Decimal], window_days: u32) -> Forecast {
    if balance <= Decimal::ZERO {
        return Forecast::NoCredit;
    }
    let take = daily_charges.len().min(window_days as usize);
    if take == 0 {
        return Forecast::NoHistory;
    }
    let window = &daily_charges[daily_charges.len() - take..];
    let sum: Decimal = window.iter().copied().sum();
    let average = sum / Decimal::from(take);
    if average <= Decimal::ZERO {
        return Forecast::NoCharge;
    }
    match balance.checked_div(average) {
        Some(ratio) => {
            let mut days = ratio.round_dp_with_strategy(1, RoundingStrategy::ToZero);
            days.rescale(1);
            Forecast::Days {
                days,
                average,
                window: take,
            }
        }
        // Only a vanishing average overflows; treat it as no charge to forecast from.
        None => Forecast::NoCharge,
    }
}

/// Reason codes, one per level rule.
pub mod reasons {
    /// Level 3: balance below the disconnect line.
    pub const ARREARS: &str = "arrears";
    /// Level 2: balance below the second alarm.
    pub const SECOND_ALARM: &str = "second-alarm";
    /// Level 1: balance below the alarm threshold (预警值).
    pub const LOW_BALANCE: &str = "low-balance";
    /// Level 1: few days of credit left although the balance is above the threshold.
    pub const LOW_BALANCE_FORECAST: &str = "low-balance-forecast";
    /// Level 0.
    pub const BALANCE_OK: &str = "balance-ok";
}

/// Assess a balance after settlement. See the crate docs for the rules.
///
/// # Errors
/// `bad-parameters` ([`WarningParams::from_json`]); `invalid-input` for an impossible
/// date, recent days out of date order, a `level-already-notified` above 3, a negative
/// agreement threshold or an auto-debit amount not above 0; `decimal-out-of-range` for a
/// decimal the WIT record cannot carry.
pub fn assess(input: &WarningInput) -> Result<WarningOutput, PolicyError> {
    Ok(assess_checked(input)?)
}

/// Assess many balances under one parameters string: element `i` of the result is exactly
/// [`assess`] of `inputs[i]` with its `parameters` replaced by `parameters` (contract 1.1,
/// `warning-batch.assess-batch`). The parameters are parsed once; parameters that do not
/// parse give every input the same `bad-parameters` error.
pub fn assess_batch(
    parameters: &str,
    inputs: &[WarningInput],
) -> Vec<Result<WarningOutput, PolicyError>> {
    let p = PARAMS.with(|p| p.get(parameters, WarningParams::from_json));
    feegate_policy_sdk::params::answer_each(p, inputs, assess_with)
}

fn assess_checked(input: &WarningInput) -> Result<WarningOutput, SdkError> {
    let p = PARAMS.with(|p| p.get(&input.parameters, WarningParams::from_json))?;
    assess_with(&p, input)
}

/// [`assess`] with the parameters already parsed (`input.parameters` is not read).
fn assess_with(p: &WarningParams, input: &WarningInput) -> Result<WarningOutput, SdkError> {
    let date = |d: &Date, what: &str| {
        CivilDate::new(d.year, d.month, d.day)
            .map_err(|e| SdkError::invalid_input(format!("{what}: {e}")))
    };
    date(&input.today, "today")?;
    let balance = dec(&input.balance, "balance")?;
    if input.level_already_notified > 3 {
        return Err(SdkError::invalid_input(format!(
            "level-already-notified {} is above 3",
            input.level_already_notified
        )));
    }
    let agreement_threshold = dec(
        &input.agreement.alarm_threshold,
        "agreement.alarm-threshold",
    )?;
    if agreement_threshold < Decimal::ZERO {
        return Err(SdkError::invalid_input(format!(
            "agreement.alarm-threshold {agreement_threshold} is negative"
        )));
    }
    let auto_debit = match &input.agreement.auto_debit_amount {
        Some(amount) => {
            let amount = dec(amount, "agreement.auto-debit-amount")?;
            if amount <= Decimal::ZERO {
                return Err(SdkError::invalid_input(format!(
                    "agreement.auto-debit-amount {amount} is not above 0"
                )));
            }
            Some(amount)
        }
        None => None,
    };
    let mut charges = Vec::with_capacity(input.recent_days.len());
    let mut previous: Option<CivilDate> = None;
    for (i, day) in input.recent_days.iter().enumerate() {
        let d = date(&day.date, &format!("recent-days[{i}].date"))?;
        if previous.is_some_and(|prev| prev >= d) {
            return Err(SdkError::invalid_input(format!(
                "recent-days must be oldest first without repeats; {d} follows {}",
                previous.map(|p| p.to_string()).unwrap_or_default()
            )));
        }
        previous = Some(d);
        charges.push(dec(&day.charge, &format!("recent-days[{i}].charge"))?);
    }

    let (threshold, threshold_source) = if agreement_threshold > Decimal::ZERO {
        (agreement_threshold, "the agreement's 预警值")
    } else {
        (
            p.alarm_threshold_yuan,
            "the county default; the agreement sets none",
        )
    };
    let forecast = forecast(balance, &charges, p.forecast_window_days);
    let days_left = forecast.days();
    let short_of_days = days_left.is_some_and(|d| d < p.warn_when_days_left_below);

    let b = fixed(balance, 2);
    let (level, reason, level_text) = if balance < p.disconnect_below_yuan {
        (
            3,
            reasons::ARREARS,
            format!(
                "Balance {b} 元 is below the disconnect line {} 元: level 3 (arrears, 欠费).",
                fixed(p.disconnect_below_yuan, 2)
            ),
        )
    } else if balance < p.second_alarm_yuan {
        (
            2,
            reasons::SECOND_ALARM,
            format!(
                "Balance {b} 元 is below the second alarm {} 元: level 2 (second alarm).",
                fixed(p.second_alarm_yuan, 2)
            ),
        )
    } else if balance < threshold {
        (
            1,
            reasons::LOW_BALANCE,
            format!(
                "Balance {b} 元 is below the alarm threshold {} 元 ({threshold_source}): \
                 level 1 (first alarm, 预警).",
                fixed(threshold, 2)
            ),
        )
    } else if short_of_days {
        (
            1,
            reasons::LOW_BALANCE_FORECAST,
            format!(
                "Balance {b} 元 is not below the alarm threshold {} 元 ({threshold_source}), \
                 but fewer than {} days of credit are left: level 1 (first alarm, 预警).",
                fixed(threshold, 2),
                p.warn_when_days_left_below
            ),
        )
    } else {
        (
            0,
            reasons::BALANCE_OK,
            format!(
                "Balance {b} 元 is not below the alarm threshold {} 元 ({threshold_source}): \
                 level 0.",
                fixed(threshold, 2)
            ),
        )
    };

    let forecast_text = match forecast {
        Forecast::NoCredit => "Days of credit left: 0 (no credit).".to_string(),
        Forecast::NoHistory => "Days of credit left: unknown (no usage history).".to_string(),
        Forecast::NoCharge => {
            "Days of credit left: unknown (the recent average daily charge is 0).".to_string()
        }
        Forecast::Days {
            days,
            average,
            window,
        } => format!(
            "Days of credit left: {days} at {} 元/day (average charge of the last {window} \
             settled day{}).",
            fixed(average, 2),
            if window == 1 { "" } else { "s" }
        ),
    };

    let mut actions = Vec::new();
    let mut notes = Vec::new();
    if level > input.level_already_notified {
        actions.push(WarningAction::Notify);
        notes.push(format!(
            "notify level {level} (level {} already notified)",
            input.level_already_notified
        ));
    } else if level > 0 {
        notes.push(format!(
            "no new notice (level {} already notified)",
            input.level_already_notified
        ));
    }
    if level >= 1 {
        match (auto_debit, input.auto_debit_in_flight) {
            (Some(amount), false) => {
                actions.push(WarningAction::RequestAutoDebit);
                notes.push(format!(
                    "request the agreed auto-debit of {} 元",
                    fixed(amount, 2)
                ));
            }
            (Some(_), true) => notes.push("an auto-debit is already in flight".to_string()),
            (None, _) => {}
        }
    }
    let follow_up_day = p.offline_follow_up_after_days_in_arrears;
    if balance < Decimal::ZERO && input.days_in_arrears >= follow_up_day {
        actions.push(WarningAction::OfflineFollowUp);
        notes.push(format!(
            "open the meter-reader follow-up (抄收员线下催费): {} days in arrears",
            input.days_in_arrears
        ));
    }
    let actions_text = if notes.is_empty() {
        "No action.".to_string()
    } else {
        let mut text = notes.join("; ");
        text[..1].make_ascii_uppercase();
        format!("{text}.")
    };

    let days_of_credit_left = match days_left {
        Some(d) => {
            let (mantissa, scale) = to_parts(d, "days-of-credit-left")?;
            Some(WitDecimal { mantissa, scale })
        }
        None => None,
    };
    Ok(WarningOutput {
        level,
        actions,
        days_of_credit_left,
        reason_code: reason.to_string(),
        explanation: format!("{level_text} {forecast_text} {actions_text}"),
    })
}

/// The component: `feegate:policy/warning@1.1.0#assess` and
/// `feegate:policy/warning-batch@1.1.0#assess-batch`.
pub struct Component;

impl exports::feegate::policy::warning::Guest for Component {
    fn assess(input: WarningInput) -> Result<WarningOutput, PolicyError> {
        assess(&input)
    }
}

impl exports::feegate::policy::warning_batch::Guest for Component {
    fn assess_batch(
        parameters: String,
        inputs: Vec<WarningInput>,
    ) -> Vec<Result<WarningOutput, PolicyError>> {
        assess_batch(&parameters, &inputs)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);
