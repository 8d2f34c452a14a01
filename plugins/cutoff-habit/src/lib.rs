//! `cutoff-habit`: whether to disconnect an account in arrears (停电), and how to reconnect
//! it after payment (复电), as a `feegate:policy/cutoff@1.1.0` component.
//!
//! The county moves through rollout stages (notify-only → approval-gated 审批停电 →
//! automatic 自动停电); inside the approval-gated stage this policy moves single customers
//! to automatic once they have shown a prepaying habit (`automatic_after_on_time_topups`
//! on-time top-ups in a row). The host's safety floor applies whatever this policy says;
//! this policy repeats the floor's calendar rules (being stricter is allowed, never looser).
//!
//! **`decide`** — the first rule that holds (reason code in brackets):
//!
//! 1. balance ≥ `disconnect_below_yuan` → keep (`balance-ok`);
//! 2. the agreement's keep-power flag (保电) → keep (`keep-power`);
//! 3. rollout stage notify-only → keep (`notify-only-stage`). Checked before the waiting
//!    rules below, so a notify-only county never sees a "defer" that suggests a cut later;
//! 4. `days-in-arrears` < `grace_days_after_arrears` → defer (`arrears-grace`);
//! 5. no pre-disconnection notice delivered → defer (`notice-not-delivered`);
//! 6. now before (delivery date + `grace_days_after_arrears`) at 08:00, or before the
//!    delivery itself → defer (`notice-grace`): "power off tomorrow" notice, then cut after
//!    08:00 the next day (Fujian practice, see the policy set);
//! 7. inside `protected_hours` (e.g. 18:00–08:00) → defer (`protected-hours`);
//! 8. Saturday or Sunday with `no_cutoff_on_weekends` → defer (`weekend`);
//! 9. a public holiday with `no_cutoff_on_public_holidays` → defer (`public-holiday`);
//! 10. an extreme-weather alert → defer (`extreme-weather`), always;
//! 11. stage automatic → disconnect (`automatic-stage`);
//! 12. stage approval-gated: `on-time-topups-in-a-row` ≥ `automatic_after_on_time_topups` →
//!     disconnect as an automatic customer (`habit-automatic`); otherwise request approval
//!     through a work order (`approval-required`).
//!
//! `automatic-customer` is reported on every output: true in the automatic stage, and in
//! the approval-gated stage for a customer with the prepaying habit.
//!
//! **`reconnection`**: no mode while balance < `reconnect_when_balance_at_least_yuan`
//! (`below-reconnect-line`); call first when disconnected longer than
//! `call_first_after_hours_disconnected` hours (`long-disconnection`); otherwise the
//! county's `reconnection_mode` (`close-allowed` 合闸允许/安全复电, or `direct-close` 直接合闸).

use feegate_policy_sdk::calendar::{CivilDate, ClockTime, LocalDateTime, TimeWindow};
use feegate_policy_sdk::decimal::{fixed, from_parts};
use feegate_policy_sdk::params::{self, ParamDecimal, ParsedOnce};
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit",
    world: "cutoff-policy",
    // serde: the host links this crate natively for `feegate bench policy` and reads the
    // recorded decision inputs (the host's serde JSON of the same WIT records) into it.
    additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
});

pub use exports::feegate::policy::cutoff::{
    CutoffAction, CutoffInput, CutoffOutput, ReconnectionInput, ReconnectionMode,
    ReconnectionOutput,
};
pub use feegate::policy::types::{
    Agreement, CalendarFacts, Date, Decimal as WitDecimal, LocalTime, PolicyError, RolloutStage,
};

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
    static PARAMS: ParsedOnce<CutoffParams> = const { ParsedOnce::new() };
}

/// The reconnection mode a county chooses for ordinary reconnections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultReconnection {
    /// `"close-allowed"`: 合闸允许 / 安全复电, the customer presses the meter button.
    CloseAllowed,
    /// `"direct-close"`: 直接合闸, the meter closes the relay itself.
    DirectClose,
}

/// Validated `[cutoff.parameters]`. Amounts in yuan (元).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoffParams {
    /// In arrears (a cutoff candidate) below this balance, 元.
    pub disconnect_below_yuan: Decimal,
    /// Whole days in arrears, and days after the notice's delivery, before a cut.
    pub grace_days_after_arrears: u32,
    /// Reconnect once the balance is at least this, 元 (≥ `disconnect_below_yuan`).
    pub reconnect_when_balance_at_least_yuan: Decimal,
    /// On-time top-ups in a row that move a customer to automatic disconnection.
    pub automatic_after_on_time_topups: u32,
    /// Ordinary reconnection mode.
    pub reconnection_mode: DefaultReconnection,
    /// Disconnected longer than this many hours: call the customer first.
    pub call_first_after_hours_disconnected: u32,
    /// Local hours with no cutoff, e.g. 18:00–08:00.
    pub protected_hours: TimeWindow,
    /// No cutoff on Saturdays and Sundays.
    pub no_cutoff_on_weekends: bool,
    /// No cutoff on statutory public holidays.
    pub no_cutoff_on_public_holidays: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    disconnect_below_yuan: ParamDecimal,
    grace_days_after_arrears: u32,
    reconnect_when_balance_at_least_yuan: ParamDecimal,
    automatic_after_on_time_topups: u32,
    reconnection_mode: DefaultReconnection,
    call_first_after_hours_disconnected: u32,
    protected_hours: TimeWindow,
    no_cutoff_on_weekends: bool,
    no_cutoff_on_public_holidays: bool,
}

impl CutoffParams {
    /// Parse and validate the canonical-JSON parameters.
    ///
    /// # Errors
    /// `bad-parameters` for a missing, unknown or mistyped key, an empty protected window,
    /// or a reconnect line below the disconnect line (the account would be reconnected
    /// and cut again in turn).
    pub fn from_json(json: &str) -> Result<Self, SdkError> {
        let raw: RawParams = params::parse(json)?;
        let p = CutoffParams {
            disconnect_below_yuan: raw.disconnect_below_yuan.get(),
            grace_days_after_arrears: raw.grace_days_after_arrears,
            reconnect_when_balance_at_least_yuan: raw.reconnect_when_balance_at_least_yuan.get(),
            automatic_after_on_time_topups: raw.automatic_after_on_time_topups,
            reconnection_mode: raw.reconnection_mode,
            call_first_after_hours_disconnected: raw.call_first_after_hours_disconnected,
            protected_hours: raw.protected_hours,
            no_cutoff_on_weekends: raw.no_cutoff_on_weekends,
            no_cutoff_on_public_holidays: raw.no_cutoff_on_public_holidays,
        };
        if p.reconnect_when_balance_at_least_yuan < p.disconnect_below_yuan {
            return Err(SdkError::bad_parameters(format!(
                "reconnect_when_balance_at_least_yuan ({}) is below disconnect_below_yuan ({}): \
                 the account would be reconnected and cut again",
                p.reconnect_when_balance_at_least_yuan, p.disconnect_below_yuan
            )));
        }
        Ok(p)
    }
}

/// Time of day from which a cut may follow the notice's grace days ("cut after 08:00 the
/// next day", Fujian practice as recorded in the policy set).
pub const CUT_FROM: ClockTime = match ClockTime::at(8, 0) {
    Some(t) => t,
    None => panic!("08:00 is a time of day"),
};

fn dec(value: &WitDecimal, what: &str) -> Result<Decimal, SdkError> {
    from_parts(value.mantissa, value.scale, what)
}

fn civil(d: &Date, what: &str) -> Result<CivilDate, SdkError> {
    CivilDate::new(d.year, d.month, d.day)
        .map_err(|e| SdkError::invalid_input(format!("{what}: {e}")))
}

fn local(t: &LocalTime, what: &str) -> Result<LocalDateTime, SdkError> {
    Ok(LocalDateTime {
        date: civil(&t.date, what)?,
        time: ClockTime::new(t.hour, t.minute)
            .map_err(|e| SdkError::invalid_input(format!("{what}: {e}")))?,
    })
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Decide whether to disconnect. See the crate docs for the rules, in order.
///
/// # Errors
/// `bad-parameters` ([`CutoffParams::from_json`]); `invalid-input` for an impossible
/// date or time, `calendar.today` differing from `now`'s date, or an ISO weekday that is
/// out of range or does not match the date; `decimal-out-of-range` for a balance the
/// WIT record cannot carry.
pub fn decide(input: &CutoffInput) -> Result<CutoffOutput, PolicyError> {
    Ok(decide_checked(input)?)
}

fn decide_checked(input: &CutoffInput) -> Result<CutoffOutput, SdkError> {
    let p = PARAMS.with(|p| p.get(&input.parameters, CutoffParams::from_json))?;
    let now = local(&input.now, "now")?;
    let today = civil(&input.calendar.today, "calendar.today")?;
    if today != now.date {
        return Err(SdkError::invalid_input(format!(
            "calendar.today {today} is not the date of now ({})",
            now.date
        )));
    }
    let weekday = input.calendar.iso_weekday;
    if weekday != today.iso_weekday() {
        return Err(SdkError::invalid_input(format!(
            "calendar.iso-weekday {weekday} does not match {today}, a {}",
            WEEKDAYS[usize::from(today.iso_weekday() - 1)]
        )));
    }
    let delivered = input
        .disconnection_notice_delivered_at
        .as_ref()
        .map(|t| local(t, "disconnection-notice-delivered-at"))
        .transpose()?;
    let balance = dec(&input.balance, "balance")?;

    let habit = input.on_time_topups_in_a_row >= p.automatic_after_on_time_topups;
    let automatic_customer = match input.rollout_stage {
        RolloutStage::NotifyOnly => false,
        RolloutStage::ApprovalGated => habit,
        RolloutStage::Automatic => true,
    };
    let out = |action: CutoffAction, reason: &str, explanation: String| CutoffOutput {
        action,
        automatic_customer,
        reason_code: reason.to_string(),
        explanation,
    };
    let b = fixed(balance, 2);
    let line = fixed(p.disconnect_below_yuan, 2);

    if balance >= p.disconnect_below_yuan {
        return Ok(out(
            CutoffAction::Keep,
            "balance-ok",
            format!(
                "Balance {b} 元 is not below the disconnect line {line} 元: keep the power on."
            ),
        ));
    }
    let mut story = format!(
        "Balance {b} 元 is below the disconnect line {line} 元, {} in arrears.",
        plural(input.days_in_arrears, "day")
    );
    if input.agreement.keep_power {
        return Ok(out(
            CutoffAction::Keep,
            "keep-power",
            format!("{story} The agreement has keep-power protection (保电): keep the power on."),
        ));
    }
    if input.rollout_stage == RolloutStage::NotifyOnly {
        return Ok(out(
            CutoffAction::Keep,
            "notify-only-stage",
            format!("{story} The county is in the notify-only stage (仅通知): keep the power on."),
        ));
    }

    let grace = p.grace_days_after_arrears;
    if input.days_in_arrears < grace {
        let why = format!(
            "arrears grace: day {} of {}",
            input.days_in_arrears,
            plural(grace, "grace day")
        );
        return Ok(out(
            CutoffAction::Defer(why.clone()),
            "arrears-grace",
            format!("{story} Defer ({why})."),
        ));
    }
    let Some(delivered) = delivered else {
        let why = "until the pre-disconnection notice is delivered".to_string();
        return Ok(out(
            CutoffAction::Defer(why.clone()),
            "notice-not-delivered",
            format!("{story} No pre-disconnection notice has been delivered: defer ({why})."),
        ));
    };
    let grace_end = delivered
        .date
        .add_days(grace)
        .map(|date| LocalDateTime {
            date,
            time: CUT_FROM,
        })
        .ok_or_else(|| SdkError::invalid_input("notice grace runs past 9999-12-31"))?;
    let earliest = grace_end.max(delivered);
    if now < earliest {
        let why = format!(
            "until {earliest}: pre-disconnection notice delivered {delivered}, {} after it from {CUT_FROM}",
            plural(grace, "grace day")
        );
        return Ok(out(
            CutoffAction::Defer(why.clone()),
            "notice-grace",
            format!("{story} Defer ({why})."),
        ));
    }
    story.push_str(&format!(
        " Pre-disconnection notice delivered {delivered}; cut allowed from {earliest}."
    ));

    let day_name = WEEKDAYS[usize::from(weekday - 1)];
    let calendar_rules: [(bool, &str, String); 4] = [
        (
            p.protected_hours.contains(now.time),
            "protected-hours",
            format!(
                "until {}: {} is inside the protected hours {}",
                p.protected_hours.to(),
                now.time,
                p.protected_hours
            ),
        ),
        (
            p.no_cutoff_on_weekends && weekday >= 6,
            "weekend",
            format!("{today} is a {day_name}: no cutoff on weekends"),
        ),
        (
            p.no_cutoff_on_public_holidays && input.calendar.public_holiday,
            "public-holiday",
            format!("{today} is a public holiday"),
        ),
        (
            input.calendar.extreme_weather,
            "extreme-weather",
            format!("an extreme-weather alert is declared for {today}"),
        ),
    ];
    for (applies, reason, why) in calendar_rules {
        if applies {
            return Ok(out(
                CutoffAction::Defer(why.clone()),
                reason,
                format!("{story} Defer ({why})."),
            ));
        }
    }
    story.push_str(&format!(
        " {now} ({day_name}) is outside the protected hours {} and not a protected day.",
        p.protected_hours
    ));

    let topups = format!(
        "{} in a row",
        plural(input.on_time_topups_in_a_row, "on-time top-up")
    );
    let threshold = p.automatic_after_on_time_topups;
    Ok(match input.rollout_stage {
        RolloutStage::Automatic => out(
            CutoffAction::Disconnect,
            "automatic-stage",
            format!("{story} The county is in the automatic stage (自动停电): disconnect."),
        ),
        RolloutStage::ApprovalGated if habit => out(
            CutoffAction::Disconnect,
            "habit-automatic",
            format!(
                "{story} Approval-gated county, but the customer has {topups} (at least \
                 {threshold}): handled automatically, disconnect."
            ),
        ),
        RolloutStage::ApprovalGated => out(
            CutoffAction::RequestApproval,
            "approval-required",
            format!(
                "{story} Approval-gated county and the customer has {topups} (fewer than \
                 {threshold}): request approval through a work order (审批停电)."
            ),
        ),
        // Handled above; kept for exhaustiveness.
        RolloutStage::NotifyOnly => out(
            CutoffAction::Keep,
            "notify-only-stage",
            format!("{story} Notify-only stage: keep the power on."),
        ),
    })
}

/// Choose how to restore power after a payment. See the crate docs for the rules.
///
/// # Errors
/// `bad-parameters` ([`CutoffParams::from_json`]); `invalid-input` for an impossible
/// date or time; `decimal-out-of-range` for a balance the WIT record cannot carry.
pub fn reconnection(input: &ReconnectionInput) -> Result<ReconnectionOutput, PolicyError> {
    Ok(reconnection_checked(input)?)
}

fn reconnection_checked(input: &ReconnectionInput) -> Result<ReconnectionOutput, SdkError> {
    let p = PARAMS.with(|p| p.get(&input.parameters, CutoffParams::from_json))?;
    local(&input.now, "now")?;
    let balance = dec(&input.balance, "balance")?;
    let b = fixed(balance, 2);
    let line = fixed(p.reconnect_when_balance_at_least_yuan, 2);
    let hours = input.hours_disconnected;
    let limit = p.call_first_after_hours_disconnected;

    let (mode, reason, explanation) = if balance < p.reconnect_when_balance_at_least_yuan {
        (
            None,
            "below-reconnect-line",
            format!("Balance {b} 元 is below the reconnect line {line} 元: stay disconnected."),
        )
    } else if hours > limit {
        (
            Some(ReconnectionMode::CallFirst),
            "long-disconnection",
            format!(
                "Balance {b} 元 reaches the reconnect line {line} 元; disconnected {} (more \
                 than {limit}): call the customer first, then close.",
                plural(hours, "hour")
            ),
        )
    } else {
        let (mode, reason, words) = match p.reconnection_mode {
            DefaultReconnection::CloseAllowed => (
                ReconnectionMode::CloseAllowed,
                "close-allowed",
                "arm the meter; the customer presses its button (合闸允许, 安全复电)",
            ),
            DefaultReconnection::DirectClose => (
                ReconnectionMode::DirectClose,
                "direct-close",
                "the meter closes the relay itself (直接合闸)",
            ),
        };
        (
            Some(mode),
            reason,
            format!(
                "Balance {b} 元 reaches the reconnect line {line} 元; disconnected {} (at \
                 most {limit}): {words}.",
                plural(hours, "hour")
            ),
        )
    };
    Ok(ReconnectionOutput {
        mode,
        reason_code: reason.to_string(),
        explanation,
    })
}

/// The component: `feegate:policy/cutoff@1.1.0#decide` and `#reconnection`.
pub struct Component;

impl exports::feegate::policy::cutoff::Guest for Component {
    fn decide(input: CutoffInput) -> Result<CutoffOutput, PolicyError> {
        decide(&input)
    }

    fn reconnection(input: ReconnectionInput) -> Result<ReconnectionOutput, PolicyError> {
        reconnection(&input)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);
