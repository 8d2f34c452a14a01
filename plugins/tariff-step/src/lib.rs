//! `tariff-step`: the annual (or monthly) step tariff (阶梯电价) with optional time-of-use
//! adders (峰谷电价), as a `feegate:policy/tariff@1.1.0` component that also exports
//! `tariff-batch` (many periods per call, [`price_batch`]).
//!
//! Rules (parameters from the county's policy set, e.g. `policies/xianyou/policy-set.toml`,
//! whose Fujian figures are an unverified example — see that file):
//!
//! 1. **Steps.** Cycle-to-date usage (`year-to-date-kwh` for `cycle = "calendar-year"`,
//!    `month-to-date-kwh` for `"calendar-month"`) decides which step each kWh of the period
//!    falls in; each step's kWh is priced at that step's price (元/kWh). Usage that ends
//!    exactly on a threshold stays in the lower step.
//! 2. **Cycle boundary.** A period that spans the cycle boundary is spread evenly per day
//!    (exactly, remainder on the last day); the days in the new cycle start from 0 kWh.
//!    See [`tariff::allocate`].
//! 3. **Time of use.** When the customer elected time of use and the host sent a band
//!    split, each band's kWh adds that band's `add` (元/kWh, may be negative) on top of the
//!    step price — Fujian practice: the step is decided by total usage, the band adder
//!    applies per kWh of the band. A band the county does not list adds 0. The split must
//!    add up to `kwh` exactly (`tou-split-mismatch`). With time of use elected but no split
//!    (the meter has no band registers) the period is priced on the steps alone and the
//!    explanation says so.
//! 4. **Rounding.** Line amounts are unrounded yuan; `charge-fen` is their sum rounded once
//!    to fen with `charge_rounding` (`half-up`, `half-even` or `down`).
//!
//! The logic is plain Rust ([`price`]), unit-testable natively; the component export is a
//! thin wrapper compiled only for `wasm32`.

pub mod tariff;

use feegate_policy_sdk::calendar::CivilDate;
use feegate_policy_sdk::decimal::{
    from_parts, push_at_least_dp, push_decimal, push_normalized_at_least_dp, to_parts,
};
use feegate_policy_sdk::params::ParsedOnce;
use feegate_policy_sdk::text::{push_i64, push_u64};
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use tariff::{Band, Cycle, Segment, Tariff};

wit_bindgen::generate!({
    path: "../../wit",
    world: "tariff-batch-policy",
    // serde: the host links this crate natively for `feegate bench policy` and reads the
    // recorded decision inputs (the host's serde JSON of the same WIT records) into it.
    additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
});

pub use exports::feegate::policy::tariff::{ChargeLine, TariffInput, TariffOutput};
pub use feegate::policy::types::{
    BandUsage, CustomerClass, Date, Decimal as WitDecimal, PolicyError, TouBand,
};

/// Reason code of every successful pricing without time-of-use adders.
pub const REASON_STEP: &str = "step-tariff";
/// Reason code when time-of-use adders were applied on top of the steps.
pub const REASON_STEP_TOU: &str = "step-tariff-tou";
/// Error code when the time-of-use split does not add up to `kwh`.
pub const ERR_TOU_SPLIT_MISMATCH: &str = "tou-split-mismatch";

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
    static PARAMS: ParsedOnce<Tariff> = const { ParsedOnce::new() };
}

/// WIT `decimal` → exact [`Decimal`].
pub fn dec(value: &WitDecimal, what: &str) -> Result<Decimal, SdkError> {
    from_parts(value.mantissa, value.scale, what)
}

/// Exact [`Decimal`] → WIT `decimal`.
pub fn wit(value: Decimal, what: &str) -> Result<WitDecimal, SdkError> {
    let (mantissa, scale) = to_parts(value, what)?;
    Ok(WitDecimal { mantissa, scale })
}

fn date(value: &Date, what: &str) -> Result<CivilDate, SdkError> {
    CivilDate::new(value.year, value.month, value.day)
        .map_err(|e| SdkError::invalid_input(format!("{what}: {e}")))
}

fn non_negative(value: Decimal, what: &str) -> Result<Decimal, SdkError> {
    if value < Decimal::ZERO {
        return Err(SdkError::invalid_input(format!(
            "{what} {value} is negative"
        )));
    }
    Ok(value)
}

fn band(b: TouBand) -> Band {
    match b {
        TouBand::Sharp => Band::Sharp,
        TouBand::Peak => Band::Peak,
        TouBand::Flat => Band::Flat,
        TouBand::Valley => Band::Valley,
    }
}

/// Price one period's consumption.
///
/// Returns one charge line per (cycle segment, step) with kWh > 0, then one line per
/// time-of-use band with an adder and kWh > 0; `charge-fen` is the sum of the unrounded
/// line amounts (元) rounded once to fen (分).
///
/// # Errors
/// `bad-parameters` for parameters that do not parse or validate ([`Tariff::from_json`]);
/// `invalid-input` for a negative kWh (period, cycle-to-date or band), an impossible date
/// or `period-last` before `period-first`; `tou-split-mismatch` when the band split does
/// not add up to `kwh`; `decimal-out-of-range` for a decimal the WIT record cannot carry.
pub fn price(input: &TariffInput) -> Result<TariffOutput, PolicyError> {
    Ok(price_checked(input)?)
}

/// Price many periods under one parameters string: element `i` of the result is exactly
/// [`price`] of `inputs[i]` with its `parameters` replaced by `parameters` (contract 1.1,
/// `tariff-batch.price-batch`). The parameters are parsed once; parameters that do not
/// parse give every input the same `bad-parameters` error.
pub fn price_batch(
    parameters: &str,
    inputs: &[TariffInput],
) -> Vec<Result<TariffOutput, PolicyError>> {
    let tariff = PARAMS.with(|p| p.get(parameters, Tariff::from_json));
    feegate_policy_sdk::params::answer_each(tariff, inputs, price_with)
}

fn price_checked(input: &TariffInput) -> Result<TariffOutput, SdkError> {
    let tariff = PARAMS.with(|p| p.get(&input.parameters, Tariff::from_json))?;
    price_with(&tariff, input)
}

/// [`price`] with the parameters already parsed (`input.parameters` is not read).
fn price_with(tariff: &Tariff, input: &TariffInput) -> Result<TariffOutput, SdkError> {
    let first = date(&input.period_first, "period-first")?;
    let last = date(&input.period_last, "period-last")?;
    let kwh = non_negative(dec(&input.kwh, "kwh")?, "kwh")?;
    let ytd = non_negative(
        dec(&input.year_to_date_kwh, "year-to-date-kwh")?,
        "year-to-date-kwh",
    )?;
    let mtd = non_negative(
        dec(&input.month_to_date_kwh, "month-to-date-kwh")?,
        "month-to-date-kwh",
    )?;
    let cycle_to_date = match tariff.cycle {
        Cycle::CalendarYear => ytd,
        Cycle::CalendarMonth => mtd,
    };

    let overflow = || SdkError::out_of_range(format!("pricing {kwh} kWh overflows a decimal"));
    let segments = tariff::allocate(tariff.cycle, first, last, kwh, cycle_to_date)?;
    let split = segments.len() > 1;

    // The explanation is built in one `String`, in reading order, without `format!`
    // (see `feegate_policy_sdk::text`): it is most of the text a decision produces, and
    // `core::fmt` was the largest single cost of a decision under fuel metering.
    // Room for the heading, the total and a time-of-use note (~160 bytes), ~70 bytes per
    // segment and ~60 per step line; a longer text just grows the string.
    let mut text = String::with_capacity(160 + 70 * segments.len() + 60 * tariff.steps.len());
    text.push_str(match tariff.cycle {
        Cycle::CalendarYear => "Annual",
        Cycle::CalendarMonth => "Monthly",
    });
    text.push_str(" step tariff, ");
    first.push_iso(&mut text);
    if first != last {
        text.push_str("..");
        last.push_iso(&mut text);
        text.push_str(" (");
        push_days(&mut text, first.days_until(last) + 1);
        text.push(')');
    }
    text.push_str(": ");
    push_at_least_dp(&mut text, kwh, 2);
    text.push_str(" kWh");
    if split {
        text.push_str(" spread evenly per day across the cycle boundary");
    }
    text.push('.');

    let mut lines = Vec::new();
    let mut total = Decimal::ZERO;
    for segment in &segments {
        text.push(' ');
        describe_segment_head(&mut text, tariff.cycle, segment, split);
        let portions = tariff.step_portions(segment.cycle_to_date, segment.kwh);
        if portions.is_empty() {
            text.push_str("nothing to price");
        }
        for (i, portion) in portions.iter().enumerate() {
            let amount = portion.checked_amount().ok_or_else(overflow)?;
            total = total.checked_add(amount).ok_or_else(overflow)?;
            let mut item = String::with_capacity(if split { 36 } else { 8 });
            item.push_str("step ");
            push_u64(&mut item, portion.step as u64);
            if split {
                item.push_str(" (");
                segment.first.push_iso(&mut item);
                item.push_str("..");
                segment.last.push_iso(&mut item);
                item.push(')');
            }
            lines.push(ChargeLine {
                item,
                kwh: wit(portion.kwh, "charge-line kwh")?,
                price: wit(portion.price, "charge-line price")?,
                amount: wit(amount, "charge-line amount")?,
            });
            // "<kWh> kWh at step <n> (<price> 元/kWh) = <amount> 元", "; "-separated.
            if i > 0 {
                text.push_str("; ");
            }
            push_at_least_dp(&mut text, portion.kwh, 2);
            text.push_str(" kWh at step ");
            push_u64(&mut text, portion.step as u64);
            text.push_str(" (");
            push_decimal(&mut text, portion.price);
            text.push_str(" 元/kWh) = ");
            push_normalized_at_least_dp(&mut text, amount, 2);
            text.push_str(" 元");
        }
        text.push('.');
    }

    // Time-of-use adders on top of the step price.
    let mut adders_applied = false;
    if input.time_of_use_elected {
        if input.tou_split.is_empty() {
            text.push_str(
                " Time of use elected but no band split was reported: priced on the \
                 steps alone.",
            );
        } else {
            let mut per_band = [Decimal::ZERO; 4];
            let mut split_sum = Decimal::ZERO;
            for usage in &input.tou_split {
                let b = band(usage.band);
                let what = b.split_kwh_name();
                let band_kwh = non_negative(dec(&usage.kwh, what)?, what)?;
                per_band[b.index()] += band_kwh;
                split_sum += band_kwh;
            }
            if split_sum != kwh {
                return Err(SdkError::new(
                    ERR_TOU_SPLIT_MISMATCH,
                    format!("the time-of-use split adds up to {split_sum} kWh, not {kwh} kWh"),
                ));
            }
            // " Time-of-use adders: <band part>; <band part>."
            text.push_str(" Time-of-use adders: ");
            let mut first_part = true;
            for (b, band_kwh) in Band::ALL.into_iter().zip(per_band) {
                let add = tariff.adder(b);
                if band_kwh.is_zero() {
                    continue;
                }
                if !first_part {
                    text.push_str("; ");
                }
                first_part = false;
                text.push_str(b.name());
                text.push(' ');
                push_at_least_dp(&mut text, band_kwh, 2);
                let Some(add) = add else {
                    text.push_str(" kWh has no adder");
                    continue;
                };
                let amount = band_kwh.checked_mul(add).ok_or_else(overflow)?;
                total = total.checked_add(amount).ok_or_else(overflow)?;
                adders_applied = true;
                let mut item = String::with_capacity(12);
                item.push_str(b.name());
                item.push_str(" adder");
                lines.push(ChargeLine {
                    item,
                    kwh: wit(band_kwh, "charge-line kwh")?,
                    price: wit(add, "charge-line price")?,
                    amount: wit(amount, "charge-line amount")?,
                });
                text.push_str(" kWh × ");
                if !add.is_sign_negative() {
                    text.push('+');
                }
                push_decimal(&mut text, add);
                text.push_str(" 元/kWh = ");
                push_normalized_at_least_dp(&mut text, amount, 2);
                text.push_str(" 元");
            }
            text.push('.');
        }
    }

    if total < Decimal::ZERO {
        return Err(SdkError::invalid_input(format!(
            "the charge {total} 元 would be negative"
        )));
    }
    let charge_fen = tariff.rounding.to_fen(total)?;

    text.push_str(" Total ");
    push_normalized_at_least_dp(&mut text, total, 2);
    text.push_str(" 元, posted as ");
    push_i64(&mut text, charge_fen);
    text.push_str(" fen (");
    text.push_str(tariff.rounding.name());
    text.push_str(").");

    Ok(TariffOutput {
        lines,
        charge_fen,
        reason_code: if adders_applied {
            REASON_STEP_TOU
        } else {
            REASON_STEP
        }
        .to_string(),
        explanation: text,
    })
}

/// Append `"1 day"` or `"<n> days"`.
fn push_days(out: &mut String, n: i64) {
    push_i64(out, n);
    out.push_str(if n == 1 { " day" } else { " days" });
}

/// Append the part of a segment's story before its steps:
/// `"<first>..<last> (<n> days, <kWh> kWh, <cycle>-to-date before it <kWh> kWh): "` for a
/// period cut at a cycle boundary, `"<Cycle>-to-date before the period <kWh> kWh: "`
/// otherwise. The caller appends the steps (or `"nothing to price"`) and the full stop.
fn describe_segment_head(out: &mut String, cycle: Cycle, segment: &Segment, split: bool) {
    if split {
        segment.first.push_iso(out);
        out.push_str("..");
        segment.last.push_iso(out);
        out.push_str(" (");
        push_days(out, segment.days);
        out.push_str(", ");
        push_at_least_dp(out, segment.kwh, 2);
        out.push_str(" kWh, ");
        out.push_str(cycle.to_date_name());
        out.push_str(" before it ");
    } else {
        out.push_str(cycle.to_date_title());
        out.push_str(" before the period ");
    }
    push_at_least_dp(out, segment.cycle_to_date, 2);
    out.push_str(if split { " kWh): " } else { " kWh: " });
}

/// The component: `feegate:policy/tariff@1.1.0#price` and
/// `feegate:policy/tariff-batch@1.1.0#price-batch`.
pub struct Component;

impl exports::feegate::policy::tariff::Guest for Component {
    fn price(input: TariffInput) -> Result<TariffOutput, PolicyError> {
        price(&input)
    }
}

impl exports::feegate::policy::tariff_batch::Guest for Component {
    fn price_batch(
        parameters: String,
        inputs: Vec<TariffInput>,
    ) -> Vec<Result<TariffOutput, PolicyError>> {
        price_batch(&parameters, &inputs)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);
