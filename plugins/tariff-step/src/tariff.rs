//! The step (block) tariff itself, on crate-local types: parameters, cycle allocation and
//! step pricing. Nothing here knows about WIT; `lib.rs` converts at the edge.

use feegate_policy_sdk::calendar::{CivilDate, ClockTime};
use feegate_policy_sdk::params::{self, ParamDecimal, Rounding};
use feegate_policy_sdk::{Decimal, PolicyError};
use serde::Deserialize;

/// The cycle over which step thresholds accumulate (`cycle` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cycle {
    /// `"calendar-year"`: thresholds accumulate from 1 January (Fujian residential
    /// practice: 年阶梯, the input's `year-to-date-kwh`).
    CalendarYear,
    /// `"calendar-month"`: thresholds accumulate from the 1st of each month
    /// (月阶梯, the input's `month-to-date-kwh`).
    CalendarMonth,
}

impl Cycle {
    /// The parameter spelling.
    pub fn name(self) -> &'static str {
        match self {
            Cycle::CalendarYear => "calendar-year",
            Cycle::CalendarMonth => "calendar-month",
        }
    }

    /// What the cycle-to-date usage is called in explanations.
    pub fn to_date_name(self) -> &'static str {
        match self {
            Cycle::CalendarYear => "year-to-date",
            Cycle::CalendarMonth => "month-to-date",
        }
    }

    /// [`to_date_name`](Self::to_date_name) capitalised, to open a sentence.
    pub fn to_date_title(self) -> &'static str {
        match self {
            Cycle::CalendarYear => "Year-to-date",
            Cycle::CalendarMonth => "Month-to-date",
        }
    }

    /// The last day of the cycle that contains `date`.
    pub fn last_day(self, date: CivilDate) -> CivilDate {
        match self {
            Cycle::CalendarYear => date.last_day_of_year(),
            Cycle::CalendarMonth => date.last_day_of_month(),
        }
    }
}

/// Time-of-use band (尖峰平谷), crate-local twin of the WIT `tou-band`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    /// 尖 (sharp peak).
    Sharp,
    /// 峰 (peak).
    Peak,
    /// 平 (flat / shoulder).
    Flat,
    /// 谷 (valley).
    Valley,
}

impl Band {
    /// All bands, in the order adder lines are listed.
    pub const ALL: [Band; 4] = [Band::Sharp, Band::Peak, Band::Flat, Band::Valley];

    /// The parameter key (`"sharp"`, `"peak"`, `"flat"`, `"valley"`).
    pub fn name(self) -> &'static str {
        match self {
            Band::Sharp => "sharp",
            Band::Peak => "peak",
            Band::Flat => "flat",
            Band::Valley => "valley",
        }
    }

    /// How the band's kWh in the input's `tou-split` is named in error messages
    /// (`"tou-split peak kwh"`).
    pub fn split_kwh_name(self) -> &'static str {
        match self {
            Band::Sharp => "tou-split sharp kwh",
            Band::Peak => "tou-split peak kwh",
            Band::Flat => "tou-split flat kwh",
            Band::Valley => "tou-split valley kwh",
        }
    }

    /// Position in [`Band::ALL`].
    pub fn index(self) -> usize {
        match self {
            Band::Sharp => 0,
            Band::Peak => 1,
            Band::Flat => 2,
            Band::Valley => 3,
        }
    }
}

/// One step (block) of the tariff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Upper bound of the step in cycle-to-date kWh (exclusive of usage above it);
    /// `None` for the open last step.
    pub up_to_kwh: Option<Decimal>,
    /// Price, yuan/kWh (元/kWh).
    pub price: Decimal,
}

/// A validated step tariff: the policy set's `[tariff.parameters]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    /// How the period's total charge becomes fen (`charge_rounding`).
    pub rounding: Rounding,
    /// Accumulation cycle of the step thresholds (`cycle`).
    pub cycle: Cycle,
    /// Steps in ascending order; the last one is open-ended.
    pub steps: Vec<Step>,
    /// Time-of-use adder per band, yuan/kWh, indexed by [`Band`] (`time_of_use.<band>.add`);
    /// `None` for a band the county did not list (it adds 0).
    adders: [Option<Decimal>; 4],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    price_scale: Option<u32>,
    charge_rounding: Rounding,
    cycle: Cycle,
    steps: Vec<RawStep>,
    #[serde(default)]
    time_of_use: Option<RawTimeOfUse>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    up_to_kwh: Option<ParamDecimal>,
    price: ParamDecimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeOfUse {
    #[serde(default)]
    sharp: Option<RawBand>,
    #[serde(default)]
    peak: Option<RawBand>,
    #[serde(default)]
    flat: Option<RawBand>,
    #[serde(default)]
    valley: Option<RawBand>,
}

/// `from`/`to` document the band's hours; the host (meter registers) does the split, so
/// they are only checked for form here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    #[serde(default)]
    #[allow(dead_code)]
    from: Option<ClockTime>,
    #[serde(default)]
    #[allow(dead_code)]
    to: Option<ClockTime>,
    add: ParamDecimal,
}

/// Default `price_scale`: prices have 4 decimals (元/kWh), per the architecture's money rule.
pub const DEFAULT_PRICE_SCALE: u32 = 4;

impl Tariff {
    /// Parse and validate the canonical-JSON parameters.
    ///
    /// Rules (each violation is `bad-parameters`): unknown keys are refused (a misspelt
    /// key must not silently fall back); `currency`, when given, is `"CNY"`; prices and
    /// adders have at most `price_scale` (default 4) decimals; steps are non-empty, every
    /// step but the last has an `up_to_kwh` strictly above the previous one and above 0,
    /// the last step has none; prices are ≥ 0; and no step price plus the most negative
    /// adder may go below 0 (a charge is never negative).
    pub fn from_json(json: &str) -> Result<Tariff, PolicyError> {
        let raw: RawParams = params::parse(json)?;
        if let Some(currency) = &raw.currency
            && currency != "CNY"
        {
            return Err(PolicyError::bad_parameters(format!(
                "currency {currency:?} is not supported: charges are posted in fen of CNY"
            )));
        }
        let price_scale = raw.price_scale.unwrap_or(DEFAULT_PRICE_SCALE);
        if price_scale > 28 {
            return Err(PolicyError::bad_parameters(format!(
                "price_scale {price_scale} is above 28"
            )));
        }
        let check_scale = |what: &str, value: Decimal| -> Result<(), PolicyError> {
            if value.normalize().scale() > price_scale {
                return Err(PolicyError::bad_parameters(format!(
                    "{what} {value} has more than price_scale = {price_scale} decimals"
                )));
            }
            Ok(())
        };

        if raw.steps.is_empty() {
            return Err(PolicyError::bad_parameters("steps is empty"));
        }
        let last = raw.steps.len() - 1;
        let mut steps = Vec::with_capacity(raw.steps.len());
        let mut previous_bound = Decimal::ZERO;
        for (i, raw_step) in raw.steps.iter().enumerate() {
            let n = i + 1;
            let price = raw_step.price.get();
            check_scale(&format!("step {n} price"), price)?;
            if price.is_sign_negative() && !price.is_zero() {
                return Err(PolicyError::bad_parameters(format!(
                    "step {n} price {price} is negative"
                )));
            }
            let up_to_kwh = raw_step.up_to_kwh.map(ParamDecimal::get);
            match (i == last, up_to_kwh) {
                (true, Some(bound)) => {
                    return Err(PolicyError::bad_parameters(format!(
                        "the last step (step {n}) has up_to_kwh = {bound}; it must be open-ended"
                    )));
                }
                (false, None) => {
                    return Err(PolicyError::bad_parameters(format!(
                        "step {n} has no up_to_kwh; only the last step may be open-ended"
                    )));
                }
                (false, Some(bound)) if bound <= previous_bound => {
                    return Err(PolicyError::bad_parameters(format!(
                        "step {n} up_to_kwh {bound} is not above {previous_bound}"
                    )));
                }
                (false, Some(bound)) => previous_bound = bound,
                (true, None) => {}
            }
            steps.push(Step { up_to_kwh, price });
        }

        let mut adders = [None; 4];
        if let Some(tou) = raw.time_of_use {
            let listed = [
                (Band::Sharp, tou.sharp),
                (Band::Peak, tou.peak),
                (Band::Flat, tou.flat),
                (Band::Valley, tou.valley),
            ];
            for (band, raw_band) in listed {
                if let Some(raw_band) = raw_band {
                    let add = raw_band.add.get();
                    check_scale(&format!("time_of_use.{}.add", band.name()), add)?;
                    adders[band.index()] = Some(add);
                }
            }
        }
        let cheapest = steps.iter().map(|s| s.price).min().unwrap_or(Decimal::ZERO);
        let deepest_discount = adders
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or(Decimal::ZERO)
            .min(Decimal::ZERO);
        if cheapest + deepest_discount < Decimal::ZERO {
            return Err(PolicyError::bad_parameters(format!(
                "a step price of {cheapest} with a time-of-use adder of {deepest_discount} \
                 would price energy below 0 元/kWh"
            )));
        }

        Ok(Tariff {
            rounding: raw.charge_rounding,
            cycle: raw.cycle,
            steps,
            adders,
        })
    }

    /// The time-of-use adder for `band`, yuan/kWh; `None` when the county lists none
    /// (the band then adds 0).
    pub fn adder(&self, band: Band) -> Option<Decimal> {
        self.adders[band.index()]
    }

    /// Split `kwh` consumed on top of `cycle_to_date` kWh into the steps it falls in.
    ///
    /// Step *n* covers cycle-to-date usage in `(up_to(n−1), up_to(n)]`, so usage that
    /// ends exactly on a threshold stays in the lower step. Portions of 0 kWh are left
    /// out; an empty list means `kwh` is 0.
    pub fn step_portions(&self, cycle_to_date: Decimal, kwh: Decimal) -> Vec<StepPortion> {
        let end = cycle_to_date + kwh;
        let mut lower = Decimal::ZERO;
        let mut portions = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let from = lower.max(cycle_to_date);
            let to = step.up_to_kwh.map_or(end, |upper| upper.min(end));
            if to > from {
                portions.push(StepPortion {
                    step: i + 1,
                    kwh: to - from,
                    price: step.price,
                });
            }
            match step.up_to_kwh {
                Some(upper) => lower = upper,
                None => break,
            }
        }
        portions
    }
}

/// Part of a period's consumption priced at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPortion {
    /// Step number, 1-based (step 1 is the cheapest block).
    pub step: usize,
    /// Energy in this step, kWh.
    pub kwh: Decimal,
    /// The step's price, yuan/kWh.
    pub price: Decimal,
}

impl StepPortion {
    /// Unrounded amount, yuan: kWh × price.
    ///
    /// # Panics
    /// On decimal overflow; [`checked_amount`](Self::checked_amount) does not.
    pub fn amount(&self) -> Decimal {
        self.kwh * self.price
    }

    /// Unrounded amount, yuan: kWh × price; `None` on decimal overflow.
    pub fn checked_amount(&self) -> Option<Decimal> {
        self.kwh.checked_mul(self.price)
    }
}

/// The part of a period that falls in one tariff cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First day of the segment (inclusive).
    pub first: CivilDate,
    /// Last day of the segment (inclusive).
    pub last: CivilDate,
    /// Days in the segment.
    pub days: i64,
    /// Energy allocated to the segment, kWh.
    pub kwh: Decimal,
    /// Cycle-to-date usage before the segment, kWh: the input's value for the first
    /// segment, 0 for every segment that starts a new cycle.
    pub cycle_to_date: Decimal,
}

/// Finest resolution of the per-day allocation, in decimal places of a kWh (1 Wh).
pub const MIN_ALLOCATION_DP: u32 = 3;

/// Cut the period `first..=last` at the cycle boundaries.
///
/// A period inside one cycle is one segment with all of `kwh`. A period that spans a
/// boundary (e.g. 2013-12-30..2014-01-02 on the annual cycle, after missed reads) has no
/// per-day readings, so `kwh` is spread evenly over its days: each day gets
/// `kwh ÷ days` truncated to the allocation resolution — the finer of `kwh`'s own decimals
/// and 0.001 kWh — and the indivisible remainder goes to the last day. The segments'
/// kWh add up to `kwh` exactly. Segments after the first start a new cycle at 0 kWh.
///
/// # Errors
/// `invalid-input` when `last` is before `first` or `kwh` is negative;
/// `decimal-out-of-range` if the allocation overflows.
pub fn allocate(
    cycle: Cycle,
    first: CivilDate,
    last: CivilDate,
    kwh: Decimal,
    cycle_to_date: Decimal,
) -> Result<Vec<Segment>, PolicyError> {
    if last < first {
        return Err(PolicyError::invalid_input(format!(
            "period-last {last} is before period-first {first}"
        )));
    }
    if kwh.is_sign_negative() && !kwh.is_zero() {
        return Err(PolicyError::invalid_input(format!("kwh {kwh} is negative")));
    }
    let mut bounds = Vec::new();
    let mut start = first;
    loop {
        let end = cycle.last_day(start).min(last);
        bounds.push((start, end));
        if end == last {
            break;
        }
        start = end
            .add_days(1)
            .ok_or_else(|| PolicyError::invalid_input("period runs past 9999-12-31"))?;
    }
    let total_days = first.days_until(last) + 1;
    if bounds.len() == 1 {
        return Ok(vec![Segment {
            first,
            last,
            days: total_days,
            kwh,
            cycle_to_date,
        }]);
    }

    let overflow = || PolicyError::out_of_range(format!("allocating {kwh} kWh overflows"));
    let dp = kwh.scale().max(MIN_ALLOCATION_DP);
    let units = kwh
        .mantissa()
        .checked_mul(10i128.pow(dp - kwh.scale()))
        .ok_or_else(overflow)?;
    let days = i128::from(total_days);
    let (per_day, remainder) = (units / days, units % days);
    let segments = bounds.len();
    bounds
        .into_iter()
        .enumerate()
        .map(|(i, (seg_first, seg_last))| {
            let seg_days = seg_first.days_until(seg_last) + 1;
            let mut seg_units = per_day * i128::from(seg_days);
            if i + 1 == segments {
                seg_units += remainder;
            }
            Ok(Segment {
                first: seg_first,
                last: seg_last,
                days: seg_days,
                kwh: Decimal::try_from_i128_with_scale(seg_units, dp).map_err(|_| overflow())?,
                cycle_to_date: if i == 0 { cycle_to_date } else { Decimal::ZERO },
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use core::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn date(y: u16, m: u8, day: u8) -> CivilDate {
        CivilDate::new(y, m, day).unwrap()
    }

    #[test]
    fn allocation_adds_up_exactly_and_restarts_the_cycle() {
        for kwh in ["0", "0.001", "1", "10", "7.77", "1234.5678", "99999.999"] {
            for days in 2..=40u32 {
                let first = date(2013, 12, 31).add_days(0).unwrap();
                let last = first.add_days(days - 1).unwrap();
                for cycle in [Cycle::CalendarYear, Cycle::CalendarMonth] {
                    let segs = allocate(cycle, first, last, d(kwh), d("100")).unwrap();
                    let sum: Decimal = segs.iter().map(|s| s.kwh).sum();
                    assert_eq!(sum, d(kwh), "{kwh} over {days} days");
                    assert_eq!(segs.iter().map(|s| s.days).sum::<i64>(), i64::from(days));
                    assert_eq!(segs[0].cycle_to_date, d("100"));
                    assert!(segs[1..].iter().all(|s| s.cycle_to_date.is_zero()));
                    // Every day but the last gets the same truncated share.
                    let per_day = segs[0].kwh / Decimal::from(segs[0].days);
                    for s in &segs[..segs.len() - 1] {
                        assert_eq!(s.kwh, per_day * Decimal::from(s.days), "{kwh}/{days}");
                    }
                }
            }
        }
    }

    #[test]
    fn step_portions_respect_thresholds() {
        let tariff = Tariff::from_json(
            r#"{"charge_rounding":"half-up","cycle":"calendar-year","steps":[{"price":"0.4983","up_to_kwh":"2760"},{"price":"0.5483","up_to_kwh":"4800"},{"price":"0.7983"}]}"#,
        )
        .unwrap();
        // (cycle-to-date, kWh, [(step, kWh)])
        let cases: &[(&str, &str, &[(usize, &str)])] = &[
            ("0", "0", &[]),
            ("0", "2760", &[(1, "2760")]),
            ("2759.999", "0.002", &[(1, "0.001"), (2, "0.001")]),
            ("4800", "1", &[(3, "1")]),
            ("0", "10000", &[(1, "2760"), (2, "2040"), (3, "5200")]),
        ];
        for (ctd, kwh, want) in cases {
            let got: Vec<(usize, Decimal)> = tariff
                .step_portions(d(ctd), d(kwh))
                .iter()
                .map(|p| (p.step, p.kwh))
                .collect();
            let want: Vec<(usize, Decimal)> = want.iter().map(|(s, k)| (*s, d(k))).collect();
            assert_eq!(got, want, "{kwh} from {ctd}");
        }
    }
}
