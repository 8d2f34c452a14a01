//! The warning policy against a table of cases, with the Xianyou parameters: alarm
//! threshold 50.00 元, second alarm 10.00 元, arrears below 0.00 元, 7-day forecast window,
//! level 1 also under 3 days of credit, meter-reader follow-up on the 2nd day in arrears.

use WarningAction::{Notify, OfflineFollowUp, RequestAutoDebit};
use policy_warning_threshold::{
    Agreement, Date, DayUsage, WarningAction, WarningInput, WitDecimal, assess,
};
use rust_decimal::Decimal;
use std::str::FromStr;

const XIANYOU: &str = r#"{"alarm_threshold_yuan":"50.00","disconnect_below_yuan":"0.00","forecast_window_days":7,"offline_follow_up_after_days_in_arrears":2,"second_alarm_yuan":"10.00","warn_when_days_left_below":"3"}"#;

fn wd(s: &str) -> WitDecimal {
    let d = Decimal::from_str(s).unwrap();
    WitDecimal {
        mantissa: i64::try_from(d.mantissa()).unwrap(),
        scale: u8::try_from(d.scale()).unwrap(),
    }
}

fn back(w: &WitDecimal) -> Decimal {
    Decimal::try_new(w.mantissa, u32::from(w.scale)).unwrap()
}

fn date(day: u8) -> Date {
    Date {
        year: 2013,
        month: 3,
        day,
    }
}

/// Daily charges (元) as settled days ending on 2013-03-15, oldest first.
fn history(charges: &[&str]) -> Vec<DayUsage> {
    let start = 15 - charges.len() as u8;
    charges
        .iter()
        .enumerate()
        .map(|(i, c)| DayUsage {
            date: date(start + i as u8),
            kwh: wd("10"),
            charge: wd(c),
        })
        .collect()
}

struct Row {
    name: &'static str,
    balance: &'static str,
    /// The agreement's 预警值, 元 ("0" = none).
    threshold: &'static str,
    auto_debit: Option<&'static str>,
    in_flight: bool,
    charges: &'static [&'static str],
    days_in_arrears: u32,
    already: u8,
    // expected
    level: u8,
    actions: &'static [WarningAction],
    days_left: Option<&'static str>,
    reason: &'static str,
}

const R: Row = Row {
    name: "",
    balance: "100.00",
    threshold: "0",
    auto_debit: None,
    in_flight: false,
    charges: &["5.00"; 7],
    days_in_arrears: 0,
    already: 0,
    level: 0,
    actions: &[],
    days_left: Some("20.0"),
    reason: "balance-ok",
};

const ROWS: &[Row] = &[
    // 100.00 / 5.00 = 20.0 days.
    Row {
        name: "plenty of credit",
        ..R
    },
    // The SMS example: 23.40 / 5.20 = 4.5 days; below the county default 50.00.
    Row {
        name: "below county threshold",
        balance: "23.40",
        charges: &["5.20"; 7],
        level: 1,
        actions: &[Notify],
        days_left: Some("4.5"),
        reason: "low-balance",
        ..R
    },
    // The agreement's 20.00 wins over the county 50.00: 23.40 is fine, 4.5 days ≥ 3.
    Row {
        name: "agreement threshold lower",
        balance: "23.40",
        threshold: "20.00",
        charges: &["5.20"; 7],
        days_left: Some("4.5"),
        ..R
    },
    // The agreement's 80.00 wins over the county 50.00: 60.00 is low. 60 / 5 = 12.0.
    Row {
        name: "agreement threshold higher",
        balance: "60.00",
        threshold: "80.00",
        level: 1,
        actions: &[Notify],
        days_left: Some("12.0"),
        reason: "low-balance",
        ..R
    },
    // Above the agreement's 20.00, but 23.40 / 10.00 = 2.34 → 2.3 days < 3.
    Row {
        name: "few days left",
        balance: "23.40",
        threshold: "20.00",
        charges: &["10.00"; 7],
        level: 1,
        actions: &[Notify],
        days_left: Some("2.3"),
        reason: "low-balance-forecast",
        ..R
    },
    // 30.00 / 10.00 = 3.0 days: not below 3.
    Row {
        name: "exactly 3 days left",
        balance: "30.00",
        threshold: "20.00",
        charges: &["10.00"; 7],
        days_left: Some("3.0"),
        ..R
    },
    // 50.00 is not below 50.00; 50 / 5 = 10.0 days.
    Row {
        name: "exactly on the threshold",
        balance: "50.00",
        days_left: Some("10.0"),
        ..R
    },
    // 10.00 is not below the second alarm 10.00, but below 50.00. 10 / 5 = 2.0.
    Row {
        name: "exactly on the second alarm",
        balance: "10.00",
        level: 1,
        actions: &[Notify],
        days_left: Some("2.0"),
        reason: "low-balance",
        ..R
    },
    // 8.00 / 5.00 = 1.6 days.
    Row {
        name: "second alarm",
        balance: "8.00",
        level: 2,
        actions: &[Notify],
        days_left: Some("1.6"),
        reason: "second-alarm",
        ..R
    },
    Row {
        name: "second alarm already sent",
        balance: "8.00",
        already: 2,
        level: 2,
        days_left: Some("1.6"),
        reason: "second-alarm",
        ..R
    },
    // A zero balance is not arrears (arrears is below 0.00), but there is no credit left.
    Row {
        name: "zero balance",
        balance: "0.00",
        level: 2,
        actions: &[Notify],
        days_left: Some("0.0"),
        reason: "second-alarm",
        ..R
    },
    Row {
        name: "arrears, first day",
        balance: "-1.50",
        days_in_arrears: 1,
        already: 2,
        level: 3,
        actions: &[Notify],
        days_left: Some("0.0"),
        reason: "arrears",
        ..R
    },
    Row {
        name: "arrears, follow-up day",
        balance: "-1.50",
        days_in_arrears: 2,
        already: 3,
        level: 3,
        actions: &[OfflineFollowUp],
        days_left: Some("0.0"),
        reason: "arrears",
        ..R
    },
    Row {
        name: "arrears, after the follow-up day (still asked; the host de-duplicates)",
        balance: "-7.20",
        days_in_arrears: 3,
        already: 3,
        level: 3,
        actions: &[OfflineFollowUp],
        days_left: Some("0.0"),
        reason: "arrears",
        ..R
    },
    // All three actions at once.
    Row {
        name: "arrears with auto-debit",
        balance: "-5.00",
        auto_debit: Some("50.00"),
        days_in_arrears: 2,
        already: 2,
        level: 3,
        actions: &[Notify, RequestAutoDebit, OfflineFollowUp],
        days_left: Some("0.0"),
        reason: "arrears",
        ..R
    },
    // A partial top-up brought level 3 down to 1: nothing new is sent.
    Row {
        name: "lower level than already sent",
        balance: "30.00",
        already: 3,
        level: 1,
        days_left: Some("6.0"),
        reason: "low-balance",
        ..R
    },
    Row {
        name: "auto-debit",
        balance: "23.40",
        auto_debit: Some("100.00"),
        charges: &["5.20"; 7],
        level: 1,
        actions: &[Notify, RequestAutoDebit],
        days_left: Some("4.5"),
        reason: "low-balance",
        ..R
    },
    Row {
        name: "auto-debit in flight",
        balance: "23.40",
        auto_debit: Some("100.00"),
        in_flight: true,
        charges: &["5.20"; 7],
        level: 1,
        actions: &[Notify],
        days_left: Some("4.5"),
        reason: "low-balance",
        ..R
    },
    Row {
        name: "auto-debit, already notified",
        balance: "23.40",
        auto_debit: Some("100.00"),
        already: 1,
        charges: &["5.20"; 7],
        level: 1,
        actions: &[RequestAutoDebit],
        days_left: Some("4.5"),
        reason: "low-balance",
        ..R
    },
    Row {
        name: "auto-debit not needed at level 0",
        auto_debit: Some("100.00"),
        ..R
    },
    Row {
        name: "no history",
        balance: "60.00",
        charges: &[],
        days_left: None,
        ..R
    },
    Row {
        name: "no history, low balance",
        balance: "20.00",
        charges: &[],
        level: 1,
        actions: &[Notify],
        days_left: None,
        reason: "low-balance",
        ..R
    },
    Row {
        name: "no charge in the window",
        balance: "60.00",
        charges: &["0.00"; 7],
        days_left: None,
        ..R
    },
    // Corrections can make the window's charges net negative: no forecast.
    Row {
        name: "negative average",
        balance: "60.00",
        charges: &["-10.00", "5.00"],
        days_left: None,
        ..R
    },
    // Only the last 7 of 10 days count: 60 / 5 = 12.0 (all 10 would give 60 / 33.5 = 1.7).
    Row {
        name: "window of the last 7 days",
        balance: "60.00",
        charges: &[
            "100.00", "100.00", "100.00", "5.00", "5.00", "5.00", "5.00", "5.00", "5.00", "5.00",
        ],
        days_left: Some("12.0"),
        ..R
    },
    // Fewer days than the window: average of 2 days = 5.00; 12 / 5 = 2.4.
    Row {
        name: "short history",
        balance: "60.00",
        threshold: "12.00",
        charges: &["4.00", "6.00"],
        level: 0,
        days_left: Some("12.0"),
        ..R
    },
    Row {
        name: "short history, few days",
        balance: "12.00",
        threshold: "11.00",
        charges: &["4.00", "6.00"],
        level: 1,
        actions: &[Notify],
        days_left: Some("2.4"),
        reason: "low-balance-forecast",
        ..R
    },
    // Truncated, not rounded: 29.99 / 3.00 = 9.9966… → 9.9.
    Row {
        name: "days truncated",
        balance: "29.99",
        charges: &["3.00"; 7],
        level: 1,
        actions: &[Notify],
        days_left: Some("9.9"),
        reason: "low-balance",
        ..R
    },
];

fn input(row: &Row, params: &str) -> WarningInput {
    WarningInput {
        account_id: "3500001".to_string(),
        today: date(16),
        balance: wd(row.balance),
        agreement: Agreement {
            alarm_threshold: wd(row.threshold),
            auto_debit_amount: row.auto_debit.map(wd),
            keep_power: false,
            mobile_verified: true,
        },
        recent_days: history(row.charges),
        days_in_arrears: row.days_in_arrears,
        level_already_notified: row.already,
        auto_debit_in_flight: row.in_flight,
        parameters: params.to_string(),
    }
}

#[test]
fn table() {
    for row in ROWS {
        let out = assess(&input(row, XIANYOU)).unwrap_or_else(|e| panic!("{}: {e:?}", row.name));
        assert_eq!(out.level, row.level, "{}: level", row.name);
        assert_eq!(out.actions, row.actions, "{}: actions", row.name);
        assert_eq!(out.reason_code, row.reason, "{}: reason", row.name);
        match (&out.days_of_credit_left, row.days_left) {
            (Some(got), Some(want)) => {
                assert_eq!(
                    back(got),
                    Decimal::from_str(want).unwrap(),
                    "{}: days",
                    row.name
                );
                assert_eq!(got.scale, 1, "{}: one decimal", row.name);
            }
            (None, None) => {}
            (got, want) => panic!("{}: days {got:?}, want {want:?}", row.name),
        }
        assert!(!out.explanation.is_empty());
    }
}

#[test]
fn explanation_reads_as_a_sentence() {
    let row = &ROWS[16]; // auto-debit
    let out = assess(&input(row, XIANYOU)).unwrap();
    assert_eq!(
        out.explanation,
        "Balance 23.40 元 is below the alarm threshold 50.00 元 (the county default; the \
         agreement sets none): level 1 (first alarm, 预警). Days of credit left: 4.5 at 5.20 \
         元/day (average charge of the last 7 settled days). Notify level 1 (level 0 already \
         notified); request the agreed auto-debit of 100.00 元."
    );
}

#[test]
fn refused() {
    let base = || input(&ROWS[0], XIANYOU);
    let mut cases: Vec<(&str, WarningInput, &str)> = Vec::new();
    let mut c = base();
    c.level_already_notified = 4;
    cases.push(("level 4", c, "invalid-input"));
    let mut c = base();
    c.agreement.alarm_threshold = wd("-1");
    cases.push(("negative agreement threshold", c, "invalid-input"));
    let mut c = base();
    c.agreement.auto_debit_amount = Some(wd("0"));
    cases.push(("zero auto-debit", c, "invalid-input"));
    let mut c = base();
    c.recent_days.swap(0, 1);
    cases.push(("history out of order", c, "invalid-input"));
    let mut c = base();
    c.today = Date {
        year: 2013,
        month: 2,
        day: 30,
    };
    cases.push(("impossible date", c, "invalid-input"));
    let mut c = base();
    c.balance = WitDecimal {
        mantissa: 1,
        scale: 40,
    };
    cases.push(("scale 40", c, "decimal-out-of-range"));

    let bad_params = [
        (
            "missing key",
            r#"{"alarm_threshold_yuan":"50.00"}"#.to_string(),
        ),
        (
            "unknown key",
            XIANYOU.replace("\"forecast_window_days\"", "\"forecast_days\""),
        ),
        ("float", XIANYOU.replace("\"50.00\"", "50.0")),
        ("out of order", XIANYOU.replace("\"10.00\"", "\"60.00\"")),
        ("zero window", XIANYOU.replace(":7,", ":0,")),
        ("negative days", XIANYOU.replace("\"3\"", "\"-1\"")),
        ("not JSON", "alarm = 50".to_string()),
    ];
    for (name, params) in bad_params {
        cases.push((name, input(&ROWS[0], &params), "bad-parameters"));
    }
    for (name, inp, code) in cases {
        let err = assess(&inp).expect_err(name);
        assert_eq!(err.code, code, "{name}: {}", err.message);
    }
}

#[test]
fn xianyou_policy_set_matches() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/xianyou/policy-set.toml"
    );
    let set: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params = serde_json::to_value(&set["warning"]["parameters"]).unwrap();
    assert_eq!(serde_json::to_string(&params).unwrap(), XIANYOU);
}

/// Contract 1.1: `assess-batch` answers each input exactly as `assess` does with the
/// batch's parameters — the whole table plus refused inputs, in order, whatever the
/// inputs' own `parameters` say — and bad parameters refuse every input alike.
#[test]
fn assess_batch_is_assess_of_each_input() {
    use policy_warning_threshold::assess_batch;
    let mut inputs: Vec<WarningInput> = ROWS.iter().map(|r| input(r, XIANYOU)).collect();
    let mut refused = input(&ROWS[0], XIANYOU);
    refused.level_already_notified = 4;
    inputs.insert(3, refused);
    let alone: Vec<_> = inputs.iter().map(assess).collect();
    assert_eq!(alone.iter().filter(|r| r.is_err()).count(), 1);
    let apart: Vec<WarningInput> = inputs
        .iter()
        .map(|i| WarningInput {
            parameters: String::new(),
            ..i.clone()
        })
        .collect();
    assert_eq!(assess_batch(XIANYOU, &apart), alone);
    let mut reversed = apart.clone();
    reversed.reverse();
    let mut expected = alone.clone();
    expected.reverse();
    assert_eq!(assess_batch(XIANYOU, &reversed), expected);
    let bad = assess_batch("{", &apart);
    assert_eq!(bad.len(), apart.len());
    assert!(
        bad.iter()
            .all(|r| r.as_ref().unwrap_err().code == "bad-parameters")
    );
}
