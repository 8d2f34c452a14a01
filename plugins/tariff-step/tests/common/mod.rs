//! Helpers shared by the tariff tests.
#![allow(dead_code)]

use policy_tariff_step::{
    BandUsage, CustomerClass, Date, TariffInput, TariffOutput, TouBand, WitDecimal,
};
use rust_decimal::Decimal;
use std::str::FromStr;

/// The Xianyou `[tariff.parameters]` as the host hands them over: canonical JSON, keys
/// sorted. `xianyou_policy_set_matches` checks it against policies/xianyou/policy-set.toml.
pub const XIANYOU: &str = r#"{"charge_rounding":"half-up","currency":"CNY","cycle":"calendar-year","price_scale":4,"steps":[{"price":"0.4983","up_to_kwh":"2760"},{"price":"0.5483","up_to_kwh":"4800"},{"price":"0.7983"}],"time_of_use":{"peak":{"add":"0.0300","from":"08:00","to":"22:00"},"valley":{"add":"-0.2000","from":"22:00","to":"08:00"}}}"#;

/// A monthly step tariff (thresholds invented for the tests: 230 / 420 kWh a month).
pub const MONTHLY: &str = r#"{"charge_rounding":"half-up","cycle":"calendar-month","steps":[{"price":"0.4983","up_to_kwh":"230"},{"price":"0.5483","up_to_kwh":"420"},{"price":"0.7983"}]}"#;

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub fn wd(s: &str) -> WitDecimal {
    let d = dec(s);
    WitDecimal {
        mantissa: i64::try_from(d.mantissa()).unwrap(),
        scale: u8::try_from(d.scale()).unwrap(),
    }
}

pub fn back(w: &WitDecimal) -> Decimal {
    Decimal::try_new(w.mantissa, u32::from(w.scale)).unwrap()
}

pub fn date(s: &str) -> Date {
    let parts: Vec<&str> = s.split('-').collect();
    Date {
        year: parts[0].parse().unwrap(),
        month: parts[1].parse().unwrap(),
        day: parts[2].parse().unwrap(),
    }
}

/// A one-day (or longer) period with the given usage; not TOU-elected.
pub fn input(
    params: &str,
    first: &str,
    last: &str,
    kwh: &str,
    ytd: &str,
    mtd: &str,
) -> TariffInput {
    TariffInput {
        account_id: "3500001".to_string(),
        customer_class: CustomerClass::LowVoltageResidential,
        period_first: date(first),
        period_last: date(last),
        kwh: wd(kwh),
        year_to_date_kwh: wd(ytd),
        month_to_date_kwh: wd(mtd),
        tou_split: Vec::new(),
        time_of_use_elected: false,
        parameters: params.to_string(),
    }
}

pub fn split(bands: &[(TouBand, &str)]) -> Vec<BandUsage> {
    bands
        .iter()
        .map(|(band, kwh)| BandUsage {
            band: *band,
            kwh: wd(kwh),
        })
        .collect()
}

/// `(item, kWh, price 元/kWh, amount 元)` of every line, compared numerically.
pub fn assert_lines(out: &TariffOutput, want: &[(&str, &str, &str, &str)], case: &str) {
    let got: Vec<(String, Decimal, Decimal, Decimal)> = out
        .lines
        .iter()
        .map(|l| {
            (
                l.item.clone(),
                back(&l.kwh),
                back(&l.price),
                back(&l.amount),
            )
        })
        .collect();
    let want: Vec<(String, Decimal, Decimal, Decimal)> = want
        .iter()
        .map(|(i, k, p, a)| (i.to_string(), dec(k), dec(p), dec(a)))
        .collect();
    assert_eq!(got, want, "{case}: lines");
}

/// Σ line amounts, 元 (unrounded).
pub fn total(out: &TariffOutput) -> Decimal {
    out.lines.iter().map(|l| back(&l.amount)).sum()
}
