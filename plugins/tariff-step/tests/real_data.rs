//! The step tariff on a year of real household consumption.
//!
//! Data: shared/data/lcl_2013_daily_kwh_100hh.csv — daily kWh of 100 London households in
//! 2013, from UK Power Networks' Low Carbon London project ("SmartMeter Energy Consumption
//! Data in London Households", London Datastore open data). Annual use runs from 22 to
//! 12,793 kWh, so every step of the Xianyou tariff is reached. Days missing from the file
//! (households joining or leaving, incomplete days) are simply not settled.

mod common;

use common::*;
use policy_tariff_step::price;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/lcl_2013_daily_kwh_100hh.csv"
);

/// Household id → `(date, kWh)` in date order.
fn households() -> BTreeMap<String, Vec<(String, Decimal)>> {
    let text = std::fs::read_to_string(DATA).unwrap_or_else(|e| panic!("{DATA}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("LCLid,date,kwh_sum,n_halfhours"));
    let mut by_household: BTreeMap<String, Vec<(String, Decimal)>> = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 4, "{line}");
        by_household
            .entry(fields[0].to_string())
            .or_default()
            .push((fields[1].to_string(), dec(fields[2])));
    }
    for days in by_household.values_mut() {
        days.sort();
    }
    by_household
}

/// The Xianyou annual charge by hand, 元: 0.4983 up to 2760 kWh, 0.5483 up to 4800,
/// 0.7983 above.
fn hand_formula(total_kwh: Decimal) -> Decimal {
    let (t1, t2) = (dec("2760"), dec("4800"));
    let step1 = total_kwh.min(t1);
    let step2 = (total_kwh.min(t2) - t1).max(Decimal::ZERO);
    let step3 = (total_kwh - t2).max(Decimal::ZERO);
    step1 * dec("0.4983") + step2 * dec("0.5483") + step3 * dec("0.7983")
}

#[test]
fn hand_formula_for_three_households() {
    // Annual totals summed from the file, charges worked by hand:
    // MAC000027: 3174.822 kWh → 2760 × 0.4983 + 414.822 × 0.5483 = 1375.308 + 227.4469026.
    // MAC000049: 12792.987 kWh → 1375.308 + 2040 × 0.5483 + 7992.987 × 0.7983
    //            = 1375.308 + 1118.532 + 6380.8015221.
    // MAC000006: 1053.826 kWh → 1053.826 × 0.4983.
    let all = households();
    for (id, kwh, charge) in [
        ("MAC000027", "3174.822", "1602.7549026"),
        ("MAC000049", "12792.987", "8874.6415221"),
        ("MAC000006", "1053.826", "525.1214958"),
    ] {
        let days = &all[id];
        assert_eq!(days.len(), 365, "{id}");
        let year: Decimal = days.iter().map(|(_, k)| *k).sum();
        assert_eq!(year, dec(kwh), "{id}: annual kWh");
        assert_eq!(hand_formula(year), dec(charge), "{id}: hand formula");
    }
}

#[test]
fn a_year_settled_day_by_day_equals_the_annual_formula() {
    let all = households();
    assert_eq!(all.len(), 100);
    let mut per_tier = [0usize; 3];
    for (id, days) in &all {
        let mut ytd = Decimal::ZERO;
        let mut unrounded = Decimal::ZERO;
        let mut posted_fen = 0i64;
        for (day, kwh) in days {
            let out = price(&input(
                XIANYOU,
                day,
                day,
                &kwh.to_string(),
                &ytd.to_string(),
                "0",
            ))
            .unwrap_or_else(|e| panic!("{id} {day}: {e:?}"));
            let day_total = total(&out);
            assert!(
                out.lines.iter().map(|l| back(&l.kwh)).sum::<Decimal>() == *kwh,
                "{id} {day}: step kWh add up to the day's kWh"
            );
            assert_eq!(
                out.charge_fen,
                (day_total * Decimal::ONE_HUNDRED)
                    .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                    .mantissa() as i64,
                "{id} {day}: the day is rounded once"
            );
            unrounded += day_total;
            posted_fen += out.charge_fen;
            ytd += *kwh;
        }
        assert_eq!(
            unrounded,
            hand_formula(ytd),
            "{id}: Σ daily amounts = annual formula"
        );
        // Rounding each day once moves the posted total by at most half a fen a day.
        let annual_fen = unrounded * Decimal::ONE_HUNDRED;
        let drift = (Decimal::from(posted_fen) - annual_fen).abs();
        assert!(
            drift <= Decimal::from(days.len()) / Decimal::TWO,
            "{id}: drift {drift} fen"
        );

        // The whole year as one period (e.g. a year of missed reads) gives the same charge.
        let first = &days[0].0;
        let last = &days[days.len() - 1].0;
        let whole = price(&input(XIANYOU, first, last, &ytd.to_string(), "0", "0")).unwrap();
        assert_eq!(total(&whole), hand_formula(ytd), "{id}: one period");

        per_tier[if ytd <= dec("2760") {
            0
        } else if ytd <= dec("4800") {
            1
        } else {
            2
        }] += 1;
    }
    // The data reaches every step: 45 households stay in step 1, 29 end in step 2, 26 in 3.
    assert_eq!(per_tier, [45, 29, 26]);
}
