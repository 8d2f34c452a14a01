//! The shipped policy components, run as WebAssembly through the host's engine, against
//! hand-computed tables. (Each plugin also has native unit tests of its logic; these
//! check the built components and the contract between host and guest.)
//!
//! Parameters are Xianyou's policy set: steps 0.4983 / 0.5483 / 0.7983 yuan per kWh at
//! 2760 and 4800 kWh a year, peak +0.0300, valley −0.2000, half-up to fen.
//!
//! Backward compatibility: `tests/legacy-policy`, a flat tariff built against the frozen
//! contract 1.0.0, and its warning twin `tests/legacy-warning`, a threshold warning built
//! from the same frozen WIT, load and are called through the host's 1.1.0 bindings; a
//! component that claims a contract version the host does not list is refused at load.

mod common;

use feegate::config::PolicyLimits;
use feegate::county::{County, PolicySnapshot};
use feegate::policy::PolicyEngine;
use feegate::policy::PolicyKind;
use feegate::policy::PolicyLoadError;
use feegate::policy::bindings::*;
use feegate::policy::contract::SUPPORTED_CONTRACT;
use std::sync::Arc;

fn county() -> (Arc<PolicyEngine>, County) {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let county = County::load(
        &engine,
        &common::repo().join("policies/xianyou"),
        &common::components_dir(),
        Default::default(),
    )
    .unwrap();
    (engine, county)
}

fn dec(s: &str) -> Decimal {
    let d: rust_decimal::Decimal = s.parse().unwrap();
    feegate::policy::convert::to_wit(d).unwrap()
}

fn date(y: u16, m: u8, d: u8) -> Date {
    Date {
        year: y,
        month: m,
        day: d,
    }
}

fn tariff_input(
    p: &PolicySnapshot,
    first: Date,
    last: Date,
    kwh: &str,
    ytd: &str,
    split: Vec<BandUsage>,
) -> TariffInput {
    TariffInput {
        account_id: "3500000001".into(),
        customer_class: CustomerClass::LowVoltageResidential,
        period_first: first,
        period_last: last,
        kwh: dec(kwh),
        year_to_date_kwh: dec(ytd),
        month_to_date_kwh: dec("0"),
        time_of_use_elected: !split.is_empty(),
        tou_split: split,
        parameters: p.get(PolicyKind::Tariff).parameters_json.clone(),
    }
}

#[test]
fn the_step_tariff_matches_hand_computed_charges_across_every_boundary() {
    let (engine, county) = county();
    let p = county.snapshot();
    let day = date(2013, 6, 1);
    // (case, first, last, kWh, year-to-date kWh, expected fen, worked out by hand)
    let table = [
        ("all in step 1", day, day, "10", "0", 498), // 10 × 0.4983 = 4.983
        ("ends on 2760 exactly", day, day, "5", "2755", 249), // 5 × 0.4983 = 2.4915
        ("crosses 2760", day, day, "10", "2755", 523), // 2.4915 + 5 × 0.5483 = 5.233
        ("crosses 4800", day, day, "20", "4790", 1347), // 10 × 0.5483 + 10 × 0.7983 = 13.466
        ("all in step 3", day, day, "10", "5000", 798), // 7.983
        ("crosses both", day, day, "2200", "2700", 122_826), // 60 × 0.4983 + 2040 × 0.5483 + 100 × 0.7983 = 1228.26
        // 40 kWh over 2013-12-30..2014-01-02, 10 a day: 2013's 20 kWh from 2750 (10 at
        // step 1, 10 at step 2), 2014's 20 kWh from 0 at step 1: 4.983 + 5.483 + 9.966.
        (
            "year boundary",
            date(2013, 12, 30),
            date(2014, 1, 2),
            "40",
            "2750",
            2043,
        ),
    ];
    for (case, first, last, kwh, ytd, fen) in table {
        let run = engine.price(
            &p.get(PolicyKind::Tariff).component,
            &tariff_input(&p, first, last, kwh, ytd, vec![]),
        );
        let out = run.outcome.unwrap_or_else(|f| panic!("{case}: {f}"));
        assert_eq!(out.charge_fen, fen, "{case}: {}", out.explanation);
        assert!(run.fuel_used > 0);
    }
}

/// The shipped tariff exports `tariff-batch` (contract 1.1): priced many per call, with
/// the parameters sent once, every period gets what `price` gives it alone — charges,
/// lines, explanation and refusals alike, across chunk boundaries — and a share of the
/// call's fuel.
#[test]
fn the_step_tariff_prices_many_periods_per_call_as_it_prices_one() {
    let (engine, county) = county();
    let p = county.snapshot();
    let active = p.get(PolicyKind::Tariff);
    assert!(active.component.decides_in_batches());
    assert_eq!(active.component.contract_version, "1.1.0");
    let day = date(2013, 6, 1);
    // 300 periods (three calls of at most 128): kWh and year-to-date vary, every 7th
    // spans the year boundary, every 50th has a negative kWh (refused).
    let inputs: Vec<TariffInput> = (0..300)
        .map(|i| {
            let (first, last) = if i % 7 == 0 {
                (date(2013, 12, 30), date(2014, 1, 2))
            } else {
                (day, day)
            };
            let kwh = if i % 50 == 49 {
                "-1".to_string()
            } else {
                format!("{}.{:02}", i % 40, i % 100)
            };
            let mut input = tariff_input(&p, first, last, &kwh, &format!("{}", i * 17), vec![]);
            input.account_id = format!("35{i:08}");
            input
        })
        .collect();
    let apart: Vec<TariffInput> = inputs
        .iter()
        .map(|i| TariffInput {
            parameters: String::new(),
            ..i.clone()
        })
        .collect();
    let many = engine.price_many(&active.component, &active.parameters_json, &apart);
    assert_eq!(many.len(), inputs.len());
    let mut refused = 0;
    for (k, (m, input)) in many.iter().zip(&inputs).enumerate() {
        let alone = engine.price(&active.component, input);
        assert_eq!(m.outcome, alone.outcome, "period {k}");
        refused += usize::from(m.outcome.is_err());
        assert!(
            m.fuel_used > 0 && m.fuel_used < alone.fuel_used,
            "period {k}"
        );
    }
    assert_eq!(refused, 6, "the six negative periods are refused, one each");
}

/// The shipped warning component exports `warning-batch` (contract 1.1): its table of
/// balances assessed many per call, parameters sent once, gives each what `assess`
/// gives it alone.
#[test]
fn the_warning_component_assesses_many_balances_per_call_as_it_assesses_one() {
    let (engine, county) = county();
    let p = county.snapshot();
    let active = p.get(PolicyKind::Warning);
    assert!(active.component.decides_in_batches());
    let inputs: Vec<WarningInput> = (0..200)
        .map(|i| WarningInput {
            account_id: format!("35{i:08}"),
            today: date(2013, 6, 16),
            balance: dec(&format!("{}.{:02}", i - 40, i % 100)),
            agreement: agreement(),
            recent_days: vec![],
            days_in_arrears: if i < 40 { (40 - i) as u32 / 5 } else { 0 },
            level_already_notified: (i % 4) as u8,
            auto_debit_in_flight: i % 3 == 0,
            parameters: String::new(),
        })
        .collect();
    let many = engine.assess_many(&active.component, &active.parameters_json, &inputs);
    assert_eq!(many.len(), inputs.len());
    let mut levels = std::collections::BTreeSet::new();
    for (k, (m, input)) in many.iter().zip(&inputs).enumerate() {
        let alone = engine.assess(
            &active.component,
            &WarningInput {
                parameters: active.parameters_json.clone(),
                ..input.clone()
            },
        );
        assert_eq!(m.outcome, alone.outcome, "balance {k}");
        levels.insert(m.outcome.as_ref().unwrap().level);
    }
    assert!(
        levels.len() >= 3,
        "the table reaches several levels: {levels:?}"
    );
}

#[test]
fn time_of_use_adders_apply_on_top_of_the_step_price() {
    let (engine, county) = county();
    let p = county.snapshot();
    let day = date(2013, 1, 10);
    let split = vec![
        BandUsage {
            band: TouBand::Peak,
            kwh: dec("6"),
        },
        BandUsage {
            band: TouBand::Valley,
            kwh: dec("4"),
        },
    ];
    // 10 × 0.4983 + 6 × 0.0300 − 4 × 0.2000 = 4.363
    let out = engine
        .price(
            &p.get(PolicyKind::Tariff).component,
            &tariff_input(&p, day, day, "10", "0", split),
        )
        .outcome
        .unwrap();
    assert_eq!(out.charge_fen, 436);
    // A split that does not add up is refused, never priced.
    let bad = vec![BandUsage {
        band: TouBand::Peak,
        kwh: dec("6"),
    }];
    let failure = engine
        .price(
            &p.get(PolicyKind::Tariff).component,
            &tariff_input(&p, day, day, "10", "0", bad),
        )
        .outcome
        .unwrap_err();
    assert!(
        matches!(failure, feegate::policy::PolicyFailure::Refused { ref code, .. } if code == "tou-split-mismatch"),
        "{failure:?}"
    );
}

fn agreement() -> Agreement {
    Agreement {
        alarm_threshold: dec("50.00"),
        auto_debit_amount: None,
        keep_power: false,
        mobile_verified: true,
    }
}

#[test]
fn the_warning_component_follows_its_table() {
    let (engine, county) = county();
    let p = county.snapshot();
    let week: Vec<DayUsage> = (1..=7)
        .map(|d| DayUsage {
            date: date(2013, 1, d),
            kwh: dec("10.00"),
            charge: dec("5.00"),
        })
        .collect();
    // (case, balance, already notified, expected level, expect a notify action)
    let table = [
        ("comfortable", "100.00", 0, 0, false),
        ("under the alarm threshold", "40.00", 0, 1, true),
        ("already warned at level 1", "40.00", 1, 1, false),
        ("second alarm", "8.00", 1, 2, true),
        ("arrears", "-3.00", 2, 3, true),
    ];
    for (case, balance, notified, level, notify) in table {
        let input = WarningInput {
            account_id: "3500000001".into(),
            today: date(2013, 1, 8),
            balance: dec(balance),
            agreement: agreement(),
            recent_days: week.clone(),
            days_in_arrears: u32::from(level == 3),
            level_already_notified: notified,
            auto_debit_in_flight: false,
            parameters: p.get(PolicyKind::Warning).parameters_json.clone(),
        };
        let out = engine
            .assess(&p.get(PolicyKind::Warning).component, &input)
            .outcome
            .unwrap_or_else(|f| panic!("{case}: {f}"));
        assert_eq!(out.level, level, "{case}: {}", out.explanation);
        assert_eq!(
            out.actions.contains(&WarningAction::Notify),
            notify,
            "{case}: {:?}",
            out.actions
        );
    }
    // 40 yuan at 5 yuan a day: 8.0 days of credit.
    let input = WarningInput {
        account_id: "3500000001".into(),
        today: date(2013, 1, 8),
        balance: dec("40.00"),
        agreement: agreement(),
        recent_days: week,
        days_in_arrears: 0,
        level_already_notified: 0,
        auto_debit_in_flight: false,
        parameters: p.get(PolicyKind::Warning).parameters_json.clone(),
    };
    let out = engine
        .assess(&p.get(PolicyKind::Warning).component, &input)
        .outcome
        .unwrap();
    let days = feegate::policy::convert::from_wit(&out.days_of_credit_left.unwrap()).unwrap();
    assert_eq!(days, "8.0".parse::<rust_decimal::Decimal>().unwrap());
}

fn t(d: Date, hour: u8, minute: u8) -> LocalTime {
    LocalTime {
        date: d,
        hour,
        minute,
    }
}

#[test]
fn the_cutoff_component_is_approval_gated_until_a_customer_shows_the_habit() {
    let (engine, county) = county();
    let p = county.snapshot();
    let cal = |d: Date, weekday: u8| CalendarFacts {
        today: d,
        iso_weekday: weekday,
        public_holiday: false,
        extreme_weather: false,
    };
    let tue = date(2013, 1, 8);
    let base = CutoffInput {
        account_id: "3500000001".into(),
        now: t(tue, 10, 0),
        calendar: cal(tue, 2),
        balance: dec("-12.00"),
        agreement: agreement(),
        days_in_arrears: 1,
        disconnection_notice_delivered_at: Some(t(date(2013, 1, 7), 8, 1)),
        rollout_stage: RolloutStage::ApprovalGated,
        on_time_topups_in_a_row: 0,
        topups_total: 2,
        parameters: p.get(PolicyKind::Cutoff).parameters_json.clone(),
    };
    type Tweak = fn(&mut CutoffInput);
    // (case, change to the base input, expected action kind)
    let table: Vec<(&str, Tweak, &str)> = vec![
        (
            "arrears, notice delivered yesterday",
            |_| {},
            "request-approval",
        ),
        (
            "prepaying habit: automatic",
            |i| i.on_time_topups_in_a_row = 3,
            "disconnect",
        ),
        ("credit left", |i| i.balance = dec("0.00"), "keep"),
        ("keep-power", |i| i.agreement.keep_power = true, "keep"),
        (
            "notify-only county",
            |i| i.rollout_stage = RolloutStage::NotifyOnly,
            "keep",
        ),
        (
            "automatic county",
            |i| i.rollout_stage = RolloutStage::Automatic,
            "disconnect",
        ),
        ("evening", |i| i.now = t(date(2013, 1, 8), 19, 0), "defer"),
        (
            "saturday",
            |i| {
                i.now = t(date(2013, 1, 12), 10, 0);
                i.calendar = CalendarFacts {
                    today: date(2013, 1, 12),
                    iso_weekday: 6,
                    public_holiday: false,
                    extreme_weather: false,
                };
            },
            "defer",
        ),
        (
            "public holiday",
            |i| i.calendar.public_holiday = true,
            "defer",
        ),
        (
            "no notice delivered",
            |i| i.disconnection_notice_delivered_at = None,
            "defer",
        ),
        (
            "notice delivered this morning",
            |i| i.disconnection_notice_delivered_at = Some(t(date(2013, 1, 8), 8, 30)),
            "defer",
        ),
    ];
    for (case, tweak, expected) in table {
        let mut input = base.clone();
        tweak(&mut input);
        let out = engine
            .decide(&p.get(PolicyKind::Cutoff).component, &input)
            .outcome
            .unwrap_or_else(|f| panic!("{case}: {f}"));
        let got = match out.action {
            CutoffAction::Keep => "keep",
            CutoffAction::Defer(_) => "defer",
            CutoffAction::RequestApproval => "request-approval",
            CutoffAction::Disconnect => "disconnect",
        };
        assert_eq!(
            got, expected,
            "{case}: {} ({})",
            out.explanation, out.reason_code
        );
    }
}

#[test]
fn reconnection_is_close_allowed_unless_long_off_or_still_in_arrears() {
    let (engine, county) = county();
    let p = county.snapshot();
    let table = [
        ("paid up", "30.00", 20, Some(ReconnectionMode::CloseAllowed)),
        (
            "off for over 30 days",
            "30.00",
            800,
            Some(ReconnectionMode::CallFirst),
        ),
        ("still in arrears", "-0.01", 20, None),
    ];
    for (case, balance, hours, mode) in table {
        let input = ReconnectionInput {
            account_id: "3500000001".into(),
            now: t(date(2013, 1, 9), 14, 0),
            balance: dec(balance),
            agreement: agreement(),
            hours_disconnected: hours,
            parameters: p.get(PolicyKind::Cutoff).parameters_json.clone(),
        };
        let out = engine
            .reconnection(&p.get(PolicyKind::Cutoff).component, &input)
            .outcome
            .unwrap_or_else(|f| panic!("{case}: {f}"));
        assert_eq!(out.mode, mode, "{case}: {}", out.explanation);
    }
}

#[test]
fn notices_are_worded_in_chinese_with_the_balance_and_the_county_signature() {
    let (engine, county) = county();
    let p = county.snapshot();
    let input = NoticeInput {
        kind: NoticeKind::LowBalance,
        account_id: "3500000001".into(),
        customer_name: "张三".into(),
        today: date(2013, 1, 8),
        balance: dec("23.40"),
        days_of_credit_left: Some(dec("4.5")),
        amount: None,
        deadline: None,
        parameters: p.get(PolicyKind::Notice).parameters_json.clone(),
    };
    let out = engine
        .word(&p.get(PolicyKind::Notice).component, &input)
        .outcome
        .unwrap();
    for needle in [
        "【仙游供电】",
        "张三",
        "3500000001",
        "23.40元",
        "4.5",
        "95598",
    ] {
        assert!(
            out.text.contains(needle),
            "{needle:?} missing in {}",
            out.text
        );
    }
    assert!(out.text.chars().count() <= 140);
}

#[test]
fn a_policy_set_whose_parameters_the_component_refuses_does_not_load() {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(common::repo().join("policies/xianyou/policy-set.toml")).unwrap();
    std::fs::write(
        dir.path().join("policy-set.toml"),
        shipped.replacen(r#"price = "0.4983""#, r#"price = "abc""#, 1),
    )
    .unwrap();
    let err = County::load(
        &engine,
        dir.path(),
        &common::components_dir(),
        Default::default(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("tariff component")
            && msg.contains("[tariff.parameters]")
            && msg.contains("abc"),
        "{msg}"
    );
}

/// The legacy component's parameters: 0.5283 yuan per kWh.
const LEGACY_PARAMS: &str = r#"{"price_per_kwh":"0.5283"}"#;

/// `mantissa`×10^−`scale` kWh at 0.5283 yuan/kWh, in fen rounded half up (for kWh ≥ 0):
/// the exact amount is mantissa × 5283 / 10^(scale + 2) fen.
fn legacy_fen(mantissa: i64, scale: u8) -> i64 {
    let num = i128::from(mantissa) * 5283;
    let den = 10i128.pow(u32::from(scale) + 2);
    ((2 * num + den) / (2 * den)) as i64
}

/// A component built against contract 1.0.0 (`tests/legacy-policy`, from the frozen
/// 1.0.0 WIT: `tariff@1.0.0`, no `tariff-batch`) loads in the host, whose bindings are
/// 1.1.0, and is reported as deciding one input per call. `price_many` — the path
/// settlement takes — then makes one fresh call per input: each result is exactly the
/// single `price` call's (outcome, and fuel to the unit, where a batched decision would
/// record a share of its call's fuel) and the flat charge worked out by hand.
#[test]
fn a_contract_1_0_0_component_loads_and_prices_one_input_per_call() {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let bytes = std::fs::read(common::component("legacy_policy")).expect("built by `make plugins`");
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("feegate:policy/tariff@1.0.0"));
    assert!(
        !contains("@1.1.0") && !contains("tariff-batch"),
        "built from the 1.0.0 contract, which has no batch interface"
    );
    let c = engine
        .load(PolicyKind::Tariff, &bytes)
        .expect("the host accepts a contract 1.0.0 component");
    assert_eq!(c.contract_version, "1.0.0");
    assert!(SUPPORTED_CONTRACT.contains(&"1.0.0"));
    assert!(!c.decides_in_batches());
    // The check a version must pass before it is put in force (`policy activate`, the
    // running host's swap) takes a component without a batch export.
    feegate::county::probe(
        &engine,
        &feegate::county::ActiveComponent {
            component: c.clone(),
            parameters_json: LEGACY_PARAMS.into(),
        },
    )
    .expect("the activation check passes");

    let input = |i: usize, mantissa: i64, scale: u8| TariffInput {
        account_id: format!("35{i:08}"),
        customer_class: CustomerClass::LowVoltageResidential,
        period_first: date(2013, 6, 1),
        period_last: date(2013, 6, 1),
        kwh: Decimal { mantissa, scale },
        year_to_date_kwh: dec("0"),
        month_to_date_kwh: dec("0"),
        tou_split: vec![],
        time_of_use_elected: false,
        parameters: String::new(),
    };
    // (kWh as mantissa and scale, expected fen worked out by hand)
    let by_hand = [
        (1235, 2, 652),        // 12.35 × 0.5283 = 6.524505 yuan
        (0, 0, 0),             // nothing used
        (100, 0, 5283),        // 100 × 0.5283 = 52.83
        (1, 2, 1),             // 0.01 × 0.5283 = 0.005283 → 0.01
        (9, 3, 0),             // 0.009 × 0.5283 = 0.0047547 → 0.00
        (3_312_500, 4, 17500), // 331.25 × 0.5283 = 174.999375 → 175.00
        (500_000, 4, 2642),    // 50 × 0.5283 = 26.415, exactly half a fen: up
    ];
    for (mantissa, scale, fen) in by_hand {
        assert_eq!(legacy_fen(mantissa, scale), fen, "{mantissa}e-{scale}");
    }
    // 300 periods (more than two batch calls' worth): the hand-checked ones, then kWh
    // varying at scales 2 and 3; period 150 has a negative kWh (refused, alone).
    let inputs: Vec<TariffInput> = (0..300)
        .map(|i| match by_hand.get(i) {
            Some(&(mantissa, scale, _)) => input(i, mantissa, scale),
            None if i == 150 => input(i, -100, 2),
            None => input(i, (i as i64 * 7919) % 100_000, 2 + (i % 2) as u8),
        })
        .collect();
    let many = engine.price_many(&c, LEGACY_PARAMS, &inputs);
    assert_eq!(many.len(), inputs.len());
    for (i, (m, input)) in many.iter().zip(&inputs).enumerate() {
        let alone = engine.price(
            &c,
            &TariffInput {
                parameters: LEGACY_PARAMS.into(),
                ..input.clone()
            },
        );
        assert_eq!(m.outcome, alone.outcome, "period {i}");
        assert!(m.fuel_used > 0);
        assert_eq!(
            m.fuel_used, alone.fuel_used,
            "period {i}: a call of its own"
        );
        if i == 150 {
            assert!(
                matches!(&m.outcome, Err(feegate::policy::PolicyFailure::Refused { code, .. }) if code == "invalid-input"),
                "{:?}",
                m.outcome
            );
            continue;
        }
        let out = m
            .outcome
            .as_ref()
            .unwrap_or_else(|f| panic!("period {i}: {f}"));
        assert_eq!(
            out.charge_fen,
            legacy_fen(input.kwh.mantissa, input.kwh.scale),
            "period {i}: {}",
            out.explanation
        );
        assert_eq!(out.reason_code, "legacy-flat-tariff");
        assert_eq!(out.lines.len(), 1);
        assert_eq!(out.lines[0].kwh, input.kwh);
        assert_eq!(out.lines[0].price, dec("0.5283"));
    }

    // Parameters it cannot read: every period refused alike, batched path or not.
    let refused = engine.price_many(&c, r#"{"price":"0.5283"}"#, &inputs[..3]);
    assert!(refused.iter().all(|m| matches!(
        &m.outcome,
        Err(feegate::policy::PolicyFailure::Refused { code, .. }) if code == "bad-parameters"
    )));
}

/// The legacy warning component's parameters: a balance below 20.00 yuan is low.
const LEGACY_WARNING_PARAMS: &str = r#"{"low_below_fen":2000}"#;

/// `tests/legacy-warning`'s level for a balance of `mantissa`×10^−`scale` yuan, worked out
/// by hand: 1 below 20.00 yuan, else 0. Both sides as integers at scale `scale + 2`:
/// mantissa × 10^2 against 2000 × 10^scale.
fn legacy_level(mantissa: i64, scale: u8) -> u8 {
    let balance = i128::from(mantissa) * 100;
    let threshold = 2000 * 10i128.pow(u32::from(scale));
    u8::from(balance < threshold)
}

/// The warning twin of the test above: `tests/legacy-warning`, built from the same frozen
/// 1.0.0 WIT (`warning@1.0.0`, no `warning-batch`), loads as a warning component and is
/// reported as deciding one input per call. `assess_many` — the path the warning stage
/// takes — then makes one fresh call per balance: each result is exactly the single
/// `assess` call's (outcome, and fuel to the unit), made alone (`call_decisions` none),
/// and the level worked out by hand: 1 with `notify` below 20.00 yuan, 0 at or above it,
/// whatever else the input says.
#[test]
fn a_contract_1_0_0_warning_component_loads_and_assesses_one_input_per_call() {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let bytes =
        std::fs::read(common::component("legacy_warning")).expect("built by `make plugins`");
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("feegate:policy/warning@1.0.0"));
    assert!(
        !contains("@1.1.0") && !contains("warning-batch"),
        "built from the 1.0.0 contract, which has no batch interface"
    );
    let c = engine
        .load(PolicyKind::Warning, &bytes)
        .expect("the host accepts a contract 1.0.0 warning component");
    assert_eq!(c.kind, PolicyKind::Warning);
    assert_eq!(c.contract_version, "1.0.0");
    assert!(!c.decides_in_batches());
    // The activation check (`county::probe`: one ordinary decision with the version's
    // parameters) takes a warning component without a batch export, and still refuses
    // parameters the component cannot read.
    let active = |parameters: &str| feegate::county::ActiveComponent {
        component: c.clone(),
        parameters_json: parameters.into(),
    };
    feegate::county::probe(&engine, &active(LEGACY_WARNING_PARAMS))
        .expect("the activation check passes");
    assert!(matches!(
        feegate::county::probe(&engine, &active(r#"{"low_below":2000}"#)),
        Err(feegate::policy::PolicyFailure::Refused { code, .. }) if code == "bad-parameters"
    ));

    // (balance as mantissa and scale, expected level worked out by hand)
    let by_hand = [
        (1999, 2, 1),       // 19.99 < 20.00
        (2000, 2, 0),       // exactly at the threshold: not below
        (20, 0, 0),         // 20, exactly at it at another scale
        (200_000, 4, 0),    // 20.0000, exactly at it again
        (2001, 2, 0),       // 20.01
        (19_999, 3, 1),     // 19.999
        (20_001, 3, 0),     // 20.001
        (0, 0, 1),          // empty
        (-2_500, 2, 1),     // −25.00, arrears: still level 1, nothing more
        (10_000_000, 2, 0), // 100,000.00
    ];
    for (mantissa, scale, level) in by_hand {
        assert_eq!(legacy_level(mantissa, scale), level, "{mantissa}e-{scale}");
    }
    // 300 balances (more than two batch calls' worth): the hand-checked ones, then
    // −10.00 to 49.99 yuan at scales 2 to 4, every 29th exactly at the threshold. The rest
    // of the input varies too (agreement, history, arrears, levels already notified,
    // auto-debit in flight), and must not change the level.
    let inputs: Vec<WarningInput> = (0..300usize)
        .map(|i| {
            let (mantissa, scale) = match by_hand.get(i) {
                Some(&(mantissa, scale, _)) => (mantissa, scale),
                None => {
                    let scale = 2 + (i % 3) as u8;
                    let cents = if i % 29 == 0 {
                        2000
                    } else {
                        (i as i64 * 7919) % 6000 - 1000
                    };
                    (cents * 10i64.pow(u32::from(scale) - 2), scale)
                }
            };
            WarningInput {
                account_id: format!("35{i:08}"),
                today: date(2013, 6, 16),
                balance: Decimal { mantissa, scale },
                agreement: Agreement {
                    alarm_threshold: dec(if i % 2 == 0 { "50.00" } else { "5.00" }),
                    auto_debit_amount: (i % 5 == 0).then(|| dec("100.00")),
                    keep_power: i % 7 == 0,
                    mobile_verified: i % 3 != 0,
                },
                recent_days: (1..=(i % 4) as u8)
                    .map(|d| DayUsage {
                        date: date(2013, 6, d),
                        kwh: dec("10.00"),
                        charge: dec("5.00"),
                    })
                    .collect(),
                days_in_arrears: (i % 11) as u32,
                level_already_notified: (i % 4) as u8,
                auto_debit_in_flight: i % 6 == 0,
                parameters: String::new(),
            }
        })
        .collect();
    let many = engine.assess_many(&c, LEGACY_WARNING_PARAMS, &inputs);
    assert_eq!(many.len(), inputs.len());
    let mut levels = [0usize; 2];
    let mut at_threshold = 0;
    for (i, (m, input)) in many.iter().zip(&inputs).enumerate() {
        let alone = engine.assess(
            &c,
            &WarningInput {
                parameters: LEGACY_WARNING_PARAMS.into(),
                ..input.clone()
            },
        );
        assert_eq!(m.outcome, alone.outcome, "balance {i}");
        assert!(m.fuel_used > 0);
        assert_eq!(
            m.fuel_used, alone.fuel_used,
            "balance {i}: a call of its own"
        );
        assert_eq!(m.call_decisions, None, "balance {i}: decided alone");
        assert_eq!(alone.call_decisions, None);
        let out = m
            .outcome
            .as_ref()
            .unwrap_or_else(|f| panic!("balance {i}: {f}"));
        let (mantissa, scale) = (input.balance.mantissa, input.balance.scale);
        let level = legacy_level(mantissa, scale);
        assert_eq!(out.level, level, "balance {i}: {}", out.explanation);
        let notify: &[WarningAction] = if level == 1 {
            &[WarningAction::Notify]
        } else {
            &[]
        };
        assert_eq!(out.actions, notify, "balance {i}");
        assert_eq!(out.days_of_credit_left, None);
        assert_eq!(out.reason_code, "legacy-threshold-warning");
        levels[usize::from(level)] += 1;
        if i128::from(mantissa) * 100 == 2000 * 10i128.pow(u32::from(scale)) {
            at_threshold += 1;
        }
    }
    assert!(
        levels[0] > 50 && levels[1] > 50,
        "both sides of the threshold: {levels:?}"
    );
    assert!(
        at_threshold >= 10,
        "{at_threshold} exactly at the threshold"
    );

    // Parameters it cannot read: every balance refused alike.
    for bad in [r#"{"low_below":2000}"#, r#"{"low_below_fen":"20.00"}"#] {
        let refused = engine.assess_many(&c, bad, &inputs);
        assert_eq!(refused.len(), inputs.len());
        for (i, m) in refused.iter().enumerate() {
            assert!(
                matches!(
                    &m.outcome,
                    Err(feegate::policy::PolicyFailure::Refused { code, .. }) if code == "bad-parameters"
                ),
                "{bad}, balance {i}: {:?}",
                m.outcome
            );
            assert_eq!(m.call_decisions, None);
        }
    }
}

/// A component that claims a contract version the host does not list in
/// `SUPPORTED_CONTRACT` is refused at load, naming what it exports and what the host
/// supports — a later minor (1.2.0) that wasmtime's semver-compatible lookup would
/// happily call, a major (2.0.0) and an older one (0.9.0) alike. The components are the
/// legacy component's bytes relabelled, so the version is the only difference: the same
/// bytes relabelled 1.1.0 load.
#[test]
fn a_component_of_a_contract_version_the_host_does_not_list_is_refused_at_load() {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    for version in ["1.2.0", "2.0.0", "0.9.0"] {
        assert!(!SUPPORTED_CONTRACT.contains(&version));
        let err = engine
            .load(PolicyKind::Tariff, &common::legacy_relabelled(version))
            .unwrap_err();
        match &err {
            PolicyLoadError::UnsupportedContract {
                interface,
                found,
                supported,
            } => {
                assert_eq!(*interface, "feegate:policy/tariff");
                assert_eq!(found, &format!("feegate:policy/tariff@{version}"));
                assert_eq!(*supported, SUPPORTED_CONTRACT);
            }
            other => panic!("{version}: expected UnsupportedContract, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(version) && message.contains("rebuild it against"),
            "{message}"
        );
    }
    let relabelled = engine
        .load(PolicyKind::Tariff, &common::legacy_relabelled("1.1.0"))
        .expect("the relabelling keeps the component well-formed");
    assert_eq!(relabelled.contract_version, "1.1.0");
    assert!(!relabelled.decides_in_batches());
}
