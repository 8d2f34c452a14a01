//! The cutoff policy against tables of cases, with the Xianyou parameters: arrears below
//! 0.00 元, 1 grace day, reconnect at 0.00 元, automatic after 3 on-time top-ups,
//! close-allowed reconnection, call first after 720 hours, protected 18:00–08:00, no cuts
//! on weekends or public holidays.
//!
//! Calendar: 2013-03-16 is a Saturday, 2013-03-18 a Monday, 2013-03-19 a Tuesday,
//! 2013-04-04 a Thursday (清明节, a public holiday).

#![allow(clippy::type_complexity)]

use policy_cutoff_habit::{
    Agreement, CalendarFacts, CutoffAction, CutoffInput, Date, LocalTime, ReconnectionInput,
    ReconnectionMode, RolloutStage, WitDecimal, decide, reconnection,
};
use rust_decimal::Decimal;
use std::str::FromStr;

const XIANYOU: &str = r#"{"automatic_after_on_time_topups":3,"call_first_after_hours_disconnected":720,"disconnect_below_yuan":"0.00","grace_days_after_arrears":1,"no_cutoff_on_public_holidays":true,"no_cutoff_on_weekends":true,"protected_hours":{"from":"18:00","to":"08:00"},"reconnect_when_balance_at_least_yuan":"0.00","reconnection_mode":"close-allowed"}"#;
const NO_GRACE: &str = r#"{"automatic_after_on_time_topups":3,"call_first_after_hours_disconnected":720,"disconnect_below_yuan":"0.00","grace_days_after_arrears":0,"no_cutoff_on_public_holidays":true,"no_cutoff_on_weekends":true,"protected_hours":{"from":"18:00","to":"08:00"},"reconnect_when_balance_at_least_yuan":"0.00","reconnection_mode":"close-allowed"}"#;
const WEEKENDS_ALLOWED: &str = r#"{"automatic_after_on_time_topups":3,"call_first_after_hours_disconnected":720,"disconnect_below_yuan":"0.00","grace_days_after_arrears":1,"no_cutoff_on_public_holidays":true,"no_cutoff_on_weekends":false,"protected_hours":{"from":"18:00","to":"08:00"},"reconnect_when_balance_at_least_yuan":"0.00","reconnection_mode":"close-allowed"}"#;
const DIRECT: &str = r#"{"automatic_after_on_time_topups":3,"call_first_after_hours_disconnected":720,"disconnect_below_yuan":"0.00","grace_days_after_arrears":1,"no_cutoff_on_public_holidays":true,"no_cutoff_on_weekends":true,"protected_hours":{"from":"18:00","to":"08:00"},"reconnect_when_balance_at_least_yuan":"0.00","reconnection_mode":"direct-close"}"#;

fn wd(s: &str) -> WitDecimal {
    let d = Decimal::from_str(s).unwrap();
    WitDecimal {
        mantissa: i64::try_from(d.mantissa()).unwrap(),
        scale: u8::try_from(d.scale()).unwrap(),
    }
}

/// `"2013-03-19 10:00"` → local time.
fn at(s: &str) -> LocalTime {
    let (d, t) = s.split_once(' ').unwrap();
    let d: Vec<u8> = d[5..].split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<u8> = t.split(':').map(|x| x.parse().unwrap()).collect();
    LocalTime {
        date: Date {
            year: s[..4].parse().unwrap(),
            month: d[0],
            day: d[1],
        },
        hour: t[0],
        minute: t[1],
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Keep,
    /// A defer whose text contains this.
    Defer(&'static str),
    Approval,
    Disconnect,
}

struct Row {
    name: &'static str,
    params: &'static str,
    now: &'static str,
    weekday: u8,
    holiday: bool,
    weather: bool,
    balance: &'static str,
    keep_power: bool,
    days_in_arrears: u32,
    delivered: Option<&'static str>,
    stage: RolloutStage,
    topups: u32,
    // expected
    want: Want,
    automatic: bool,
    reason: &'static str,
}

/// A Tuesday morning, 2 days in arrears, notice delivered yesterday: ready to cut.
const B: Row = Row {
    name: "",
    params: XIANYOU,
    now: "2013-03-19 10:00",
    weekday: 2,
    holiday: false,
    weather: false,
    balance: "-12.30",
    keep_power: false,
    days_in_arrears: 2,
    delivered: Some("2013-03-18 09:00"),
    stage: RolloutStage::ApprovalGated,
    topups: 0,
    want: Want::Approval,
    automatic: false,
    reason: "approval-required",
};

const ROWS: &[Row] = &[
    Row {
        name: "ready, approval-gated",
        ..B
    },
    Row {
        name: "balance positive",
        balance: "5.00",
        want: Want::Keep,
        reason: "balance-ok",
        ..B
    },
    Row {
        name: "balance exactly on the line",
        balance: "0.00",
        want: Want::Keep,
        reason: "balance-ok",
        ..B
    },
    Row {
        name: "keep-power",
        keep_power: true,
        want: Want::Keep,
        reason: "keep-power",
        ..B
    },
    Row {
        name: "notify-only county",
        stage: RolloutStage::NotifyOnly,
        topups: 5,
        want: Want::Keep,
        reason: "notify-only-stage",
        ..B
    },
    // Notify-only is decided before the waiting rules: no defer that hints at a later cut.
    Row {
        name: "notify-only, no notice",
        stage: RolloutStage::NotifyOnly,
        delivered: None,
        want: Want::Keep,
        reason: "notify-only-stage",
        ..B
    },
    Row {
        name: "first day of arrears",
        days_in_arrears: 0,
        want: Want::Defer("arrears grace: day 0 of 1 grace day"),
        reason: "arrears-grace",
        ..B
    },
    Row {
        name: "notice not delivered",
        delivered: None,
        want: Want::Defer("until the pre-disconnection notice is delivered"),
        reason: "notice-not-delivered",
        ..B
    },
    // Delivered in the evening: cut from 08:00 the next day, not before.
    Row {
        name: "notice grace, 07:59",
        now: "2013-03-19 07:59",
        delivered: Some("2013-03-18 17:30"),
        want: Want::Defer("until 2013-03-19 08:00"),
        reason: "notice-grace",
        ..B
    },
    Row {
        name: "notice grace over at 08:00",
        now: "2013-03-19 08:00",
        delivered: Some("2013-03-18 17:30"),
        ..B
    },
    Row {
        name: "notice delivered this morning",
        delivered: Some("2013-03-19 09:00"),
        want: Want::Defer("until 2013-03-20 08:00"),
        reason: "notice-grace",
        ..B
    },
    // Without grace days, never before the delivery itself.
    Row {
        name: "no grace, before delivery",
        params: NO_GRACE,
        now: "2013-03-19 09:00",
        days_in_arrears: 0,
        delivered: Some("2013-03-19 09:30"),
        want: Want::Defer("until 2013-03-19 09:30"),
        reason: "notice-grace",
        ..B
    },
    Row {
        name: "no grace, after delivery",
        params: NO_GRACE,
        now: "2013-03-19 09:30",
        days_in_arrears: 0,
        delivered: Some("2013-03-19 09:30"),
        ..B
    },
    Row {
        name: "protected hours start 18:00",
        now: "2013-03-19 18:00",
        want: Want::Defer("until 08:00: 18:00 is inside the protected hours 18:00–08:00"),
        reason: "protected-hours",
        ..B
    },
    Row {
        name: "just before 18:00",
        now: "2013-03-19 17:59",
        ..B
    },
    Row {
        name: "after midnight",
        now: "2013-03-20 00:30",
        weekday: 3,
        want: Want::Defer("until 08:00"),
        reason: "protected-hours",
        ..B
    },
    Row {
        name: "Saturday",
        now: "2013-03-16 10:00",
        weekday: 6,
        delivered: Some("2013-03-14 09:00"),
        want: Want::Defer("2013-03-16 is a Saturday"),
        reason: "weekend",
        ..B
    },
    Row {
        name: "Sunday",
        now: "2013-03-17 10:00",
        weekday: 7,
        delivered: Some("2013-03-14 09:00"),
        want: Want::Defer("2013-03-17 is a Sunday"),
        reason: "weekend",
        ..B
    },
    // The county allows weekend cuts (the host floor may still refuse).
    Row {
        name: "Saturday, weekends allowed",
        params: WEEKENDS_ALLOWED,
        now: "2013-03-16 10:00",
        weekday: 6,
        delivered: Some("2013-03-14 09:00"),
        ..B
    },
    Row {
        name: "public holiday",
        now: "2013-04-04 10:00",
        weekday: 4,
        holiday: true,
        delivered: Some("2013-04-02 09:00"),
        want: Want::Defer("2013-04-04 is a public holiday"),
        reason: "public-holiday",
        ..B
    },
    Row {
        name: "extreme weather",
        weather: true,
        want: Want::Defer("extreme-weather alert"),
        reason: "extreme-weather",
        ..B
    },
    Row {
        name: "automatic county",
        stage: RolloutStage::Automatic,
        want: Want::Disconnect,
        automatic: true,
        reason: "automatic-stage",
        ..B
    },
    Row {
        name: "prepaying habit",
        topups: 3,
        want: Want::Disconnect,
        automatic: true,
        reason: "habit-automatic",
        ..B
    },
    Row {
        name: "habit not yet shown",
        topups: 2,
        ..B
    },
    // An automatic customer is still reported as such while deferred.
    Row {
        name: "habit, protected hours",
        topups: 4,
        now: "2013-03-19 19:00",
        want: Want::Defer("protected hours"),
        automatic: true,
        reason: "protected-hours",
        ..B
    },
    Row {
        name: "automatic county, keep-power",
        stage: RolloutStage::Automatic,
        keep_power: true,
        want: Want::Keep,
        automatic: true,
        reason: "keep-power",
        ..B
    },
];

fn input(row: &Row) -> CutoffInput {
    let now = at(row.now);
    CutoffInput {
        account_id: "3500001".to_string(),
        now,
        calendar: CalendarFacts {
            today: now.date,
            iso_weekday: row.weekday,
            public_holiday: row.holiday,
            extreme_weather: row.weather,
        },
        balance: wd(row.balance),
        agreement: Agreement {
            alarm_threshold: wd("50.00"),
            auto_debit_amount: None,
            keep_power: row.keep_power,
            mobile_verified: true,
        },
        days_in_arrears: row.days_in_arrears,
        disconnection_notice_delivered_at: row.delivered.map(at),
        rollout_stage: row.stage,
        on_time_topups_in_a_row: row.topups,
        topups_total: row.topups + 2,
        parameters: row.params.to_string(),
    }
}

#[test]
fn decide_table() {
    for row in ROWS {
        let out = decide(&input(row)).unwrap_or_else(|e| panic!("{}: {e:?}", row.name));
        match (&out.action, row.want) {
            (CutoffAction::Keep, Want::Keep)
            | (CutoffAction::RequestApproval, Want::Approval)
            | (CutoffAction::Disconnect, Want::Disconnect) => {}
            (CutoffAction::Defer(why), Want::Defer(part)) => {
                assert!(why.contains(part), "{}: {why:?} lacks {part:?}", row.name);
                assert!(out.explanation.contains(why.as_str()), "{}", row.name);
            }
            (got, want) => panic!("{}: got {got:?}, want {want:?}", row.name),
        }
        assert_eq!(
            out.automatic_customer, row.automatic,
            "{}: automatic",
            row.name
        );
        assert_eq!(out.reason_code, row.reason, "{}: reason", row.name);
    }
}

#[test]
fn explanation_tells_the_whole_chain() {
    let out = decide(&input(&ROWS[0])).unwrap();
    assert_eq!(
        out.explanation,
        "Balance -12.30 元 is below the disconnect line 0.00 元, 2 days in arrears. \
         Pre-disconnection notice delivered 2013-03-18 09:00; cut allowed from 2013-03-19 08:00. \
         2013-03-19 10:00 (Tuesday) is outside the protected hours 18:00–08:00 and not a \
         protected day. Approval-gated county and the customer has 0 on-time top-ups in a row \
         (fewer than 3): request approval through a work order (审批停电)."
    );
}

#[test]
fn decide_refuses_inconsistent_input() {
    let mut cases: Vec<(&str, CutoffInput, &str)> = Vec::new();
    let mut c = input(&ROWS[0]);
    c.calendar.iso_weekday = 3;
    cases.push(("weekday does not match the date", c, "invalid-input"));
    let mut c = input(&ROWS[0]);
    c.calendar.iso_weekday = 0;
    cases.push(("weekday 0", c, "invalid-input"));
    let mut c = input(&ROWS[0]);
    c.calendar.today = Date {
        year: 2013,
        month: 3,
        day: 18,
    };
    c.calendar.iso_weekday = 1;
    cases.push(("today is not now's date", c, "invalid-input"));
    let mut c = input(&ROWS[0]);
    c.now.hour = 24;
    cases.push(("hour 24", c, "invalid-input"));
    let mut c = input(&ROWS[0]);
    c.disconnection_notice_delivered_at = Some(at("2013-02-29 09:00"));
    cases.push(("impossible delivery date", c, "invalid-input"));
    for (name, params) in [
        (
            "missing key",
            XIANYOU.replace(r#""grace_days_after_arrears":1,"#, ""),
        ),
        (
            "unknown key",
            XIANYOU.replace("grace_days_after_arrears", "grace_days"),
        ),
        (
            "reconnect below disconnect",
            XIANYOU.replace(
                r#""reconnect_when_balance_at_least_yuan":"0.00""#,
                r#""reconnect_when_balance_at_least_yuan":"-5""#,
            ),
        ),
        (
            "unknown mode",
            XIANYOU.replace("close-allowed", "call-first"),
        ),
        (
            "empty window",
            XIANYOU.replace(r#""to":"08:00""#, r#""to":"18:00""#),
        ),
        (
            "bad time",
            XIANYOU.replace(r#""to":"08:00""#, r#""to":"8am""#),
        ),
        ("float", XIANYOU.replace(r#""0.00""#, "0.0")),
    ] {
        let mut c = input(&ROWS[0]);
        c.parameters = params;
        cases.push((name, c, "bad-parameters"));
    }
    for (name, inp, code) in cases {
        let err = decide(&inp).expect_err(name);
        assert_eq!(err.code, code, "{name}: {}", err.message);
    }
}

#[test]
fn reconnection_table() {
    // (case, params, balance 元, hours disconnected, mode, reason)
    let rows: &[(&str, &str, &str, u32, Option<ReconnectionMode>, &str)] = &[
        (
            "still in arrears",
            XIANYOU,
            "-0.01",
            5,
            None,
            "below-reconnect-line",
        ),
        (
            "still in arrears, long off",
            XIANYOU,
            "-5.00",
            1000,
            None,
            "below-reconnect-line",
        ),
        (
            "exactly on the line",
            XIANYOU,
            "0.00",
            5,
            Some(ReconnectionMode::CloseAllowed),
            "close-allowed",
        ),
        (
            "paid, 720 hours",
            XIANYOU,
            "50.00",
            720,
            Some(ReconnectionMode::CloseAllowed),
            "close-allowed",
        ),
        (
            "paid, 721 hours",
            XIANYOU,
            "50.00",
            721,
            Some(ReconnectionMode::CallFirst),
            "long-disconnection",
        ),
        (
            "direct-close county",
            DIRECT,
            "50.00",
            10,
            Some(ReconnectionMode::DirectClose),
            "direct-close",
        ),
        (
            "direct-close county, long off",
            DIRECT,
            "50.00",
            800,
            Some(ReconnectionMode::CallFirst),
            "long-disconnection",
        ),
    ];
    for &(name, params, balance, hours, mode, reason) in rows {
        let out = reconnection(&ReconnectionInput {
            account_id: "3500001".to_string(),
            now: at("2013-03-19 10:00"),
            balance: wd(balance),
            agreement: Agreement {
                alarm_threshold: wd("0"),
                auto_debit_amount: None,
                keep_power: false,
                mobile_verified: true,
            },
            hours_disconnected: hours,
            parameters: params.to_string(),
        })
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(out.mode, mode, "{name}");
        assert_eq!(out.reason_code, reason, "{name}");
        assert!(
            out.explanation
                .starts_with(&format!("Balance {balance} 元")),
            "{name}: {}",
            out.explanation
        );
    }
}

#[test]
fn xianyou_policy_set_matches() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/xianyou/policy-set.toml"
    );
    let set: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params = serde_json::to_value(&set["cutoff"]["parameters"]).unwrap();
    assert_eq!(serde_json::to_string(&params).unwrap(), XIANYOU);
}
