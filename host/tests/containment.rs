//! Containment: a policy component that loops, traps, hoards memory, lies in its output
//! or reads the clock is refused at load or stopped at run time — and nobody is charged
//! wrongly or cut off on its account; the affected accounts are held and reported.
//!
//! The hostile component (tests/hostile-policy) picks its misbehaviour from the `mode`
//! in its parameters.

mod common;

use chrono::NaiveDate;
use feegate::config::PolicyLimits;
use feegate::county::ActiveComponent;
use feegate::db::Db;
use feegate::demo::{ComponentOverride, Scenario};
use feegate::ledger::{self, EntryKind, Posting};
use feegate::policy::bindings::{CustomerClass, Date, Decimal as WitDecimal, TariffInput};
use feegate::policy::{PolicyEngine, PolicyFailure, PolicyKind, PolicyLoadError};
use sqlx::Row;
use std::time::Duration;

fn tariff_input(mode: &str) -> TariffInput {
    TariffInput {
        account_id: "3500000001".into(),
        customer_class: CustomerClass::LowVoltageResidential,
        period_first: Date {
            year: 2013,
            month: 1,
            day: 1,
        },
        period_last: Date {
            year: 2013,
            month: 1,
            day: 1,
        },
        kwh: WitDecimal {
            mantissa: 1234,
            scale: 2,
        },
        year_to_date_kwh: WitDecimal {
            mantissa: 0,
            scale: 0,
        },
        month_to_date_kwh: WitDecimal {
            mantissa: 0,
            scale: 0,
        },
        tou_split: vec![],
        time_of_use_elected: false,
        parameters: format!("{{\"mode\":\"{mode}\"}}"),
    }
}

fn engine(limits: PolicyLimits) -> std::sync::Arc<PolicyEngine> {
    PolicyEngine::new(limits).expect("engine")
}

fn hostile() -> Vec<u8> {
    std::fs::read(common::component("hostile_policy"))
        .expect("hostile component built by `make plugins`")
}

#[test]
fn every_run_time_misbehaviour_is_contained() {
    let limits = PolicyLimits {
        fuel_per_decision: 20_000_000,
        memory_bytes: 16 << 20,
        ..PolicyLimits::default()
    };
    let engine = engine(limits);
    let c = engine
        .load(PolicyKind::Tariff, &hostile())
        .expect("the hostile component is a valid tariff component");
    type Check = fn(&PolicyFailure) -> bool;
    let table: Vec<(&str, Check)> = vec![
        ("loop", |f| {
            matches!(f, PolicyFailure::OutOfFuel { limit: 20_000_000 })
        }),
        ("trap", |f| matches!(f, PolicyFailure::Trap { .. })),
        ("memory", |f| matches!(f, PolicyFailure::MemoryLimit { .. })),
        (
            "negative",
            |f| matches!(f, PolicyFailure::InvalidOutput { detail } if detail.contains("negative")),
        ),
        (
            "huge",
            |f| matches!(f, PolicyFailure::InvalidOutput { detail } if detail.contains("explanation")),
        ),
        ("chatty", |f| matches!(f, PolicyFailure::Trap { .. })),
    ];
    for (mode, check) in table {
        let run = engine.price(&c, &tariff_input(mode));
        match &run.outcome {
            Err(f) => assert!(check(f), "mode {mode}: unexpected failure {f:?}"),
            Ok(out) => panic!("mode {mode}: expected a contained failure, got {out:?}"),
        }
    }
    // The same component behaves when asked to, in a fresh store: nothing leaked.
    let ok = engine.price(&c, &tariff_input("ok"));
    assert_eq!(ok.outcome.expect("ok mode").charge_fen, 12);
    assert!(ok.fuel_used > 0);
}

/// An output whose strings point at the same bytes many times over (the canonical ABI
/// allows it) is refused while it is lifted, before the host copies it: 200,000 charge
/// lines naming one 16 MiB string would be 3 TiB of host `String`s. Alone and in a batch
/// call, the period is an invalid output, the host lives on, and the next call is fine.
#[test]
fn an_output_whose_strings_share_bytes_is_refused_before_it_is_copied() {
    let engine = engine(PolicyLimits::default());
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let refused = |outcome: &Result<_, PolicyFailure>| {
        matches!(
            outcome,
            Err(PolicyFailure::InvalidOutput { detail })
                if detail.contains("share bytes") && detail.contains("67108864 bytes")
        )
    };
    let alone = engine.price(&c, &tariff_input("alias"));
    assert!(refused(&alone.outcome), "{:?}", alone.outcome);

    let inputs: Vec<TariffInput> = (0..3)
        .map(|i| TariffInput {
            account_id: format!("35{i:08}"),
            parameters: String::new(),
            ..tariff_input("ok")
        })
        .collect();
    let many = engine.price_many(&c, "{\"mode\":\"alias\"}", &inputs);
    assert_eq!(many.len(), 3);
    for m in &many {
        assert!(refused(&m.outcome), "{:?}", m.outcome);
    }

    // Nothing stuck: the same component, behaving, prices as always, alone and batched.
    let ok = engine.price(&c, &tariff_input("ok"));
    assert_eq!(ok.outcome.expect("ok mode").charge_fen, 12);
    let many = engine.price_many(&c, "{\"mode\":\"ok\"}", &inputs);
    assert!(
        many.iter()
            .all(|m| m.outcome.as_ref().unwrap().charge_fen == 12)
    );
}

/// Many periods per call (contract 1.1 `price-batch`): a call that fails as a whole is
/// discarded and each of its periods priced again alone, so a trap holds only the account
/// whose input caused it; a call that returns the wrong number of results is not
/// trusted; a runaway call costs one decision's fuel before each period gets its own.
#[test]
fn a_failed_batch_call_holds_only_the_account_that_caused_it() {
    let limits = PolicyLimits {
        fuel_per_decision: 20_000_000,
        ..PolicyLimits::default()
    };
    let engine = engine(limits);
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    assert!(c.decides_in_batches());
    let apart = |n: usize, trap_at: Option<usize>| -> Vec<TariffInput> {
        (0..n)
            .map(|i| TariffInput {
                account_id: if Some(i) == trap_at {
                    format!("35{i:08}-trap")
                } else {
                    format!("35{i:08}")
                },
                kwh: WitDecimal {
                    mantissa: 100 * i as i64,
                    scale: 2,
                },
                parameters: String::new(),
                ..tariff_input("ok")
            })
            .collect()
    };
    let mode = |m: &str| format!("{{\"mode\":\"{m}\"}}");

    // 300 periods in three calls, one trapping input in the second: 299 priced, as
    // `price` prices them alone, and the one trap.
    let inputs = apart(300, Some(200));
    let many = engine.price_many(&c, &mode("trap-one"), &inputs);
    assert_eq!(many.len(), 300);
    for (i, m) in many.iter().enumerate() {
        if i == 200 {
            assert!(
                matches!(&m.outcome, Err(PolicyFailure::Trap { .. })),
                "{:?}",
                m.outcome
            );
            // Decided again alone: the guest's panic message, naming the account, is kept.
            assert!(
                m.guest_output
                    .contains("deliberate trap on 3500000200-trap"),
                "{}",
                m.guest_output
            );
        } else {
            assert_eq!(
                m.outcome.as_ref().unwrap().charge_fen,
                i as i64,
                "period {i}"
            );
        }
    }

    // A result short: the call is not trusted, every period priced alone (and right).
    let many = engine.price_many(&c, &mode("miscount"), &apart(5, None));
    let charges: Vec<i64> = many
        .iter()
        .map(|m| m.outcome.as_ref().unwrap().charge_fen)
        .collect();
    assert_eq!(charges, [0, 1, 2, 3, 4]);

    // A loop: the call stops at one decision's fuel, then each period at its own.
    let many = engine.price_many(&c, &mode("loop"), &apart(3, None));
    assert_eq!(many.len(), 3);
    for m in &many {
        assert_eq!(
            m.outcome,
            Err(PolicyFailure::OutOfFuel { limit: 20_000_000 })
        );
    }

    // An answer that depends on the input before it in the call: the chunk's last
    // input, priced alone as a sample, gives it away, and the chunk is priced again alone.
    let many = engine.price_many(&c, &mode("remember"), &apart(5, None));
    let charges: Vec<i64> = many
        .iter()
        .map(|m| m.outcome.as_ref().unwrap().charge_fen)
        .collect();
    assert_eq!(charges, [0, 1, 2, 3, 4]);

    // An output the contract refuses fails its own period only, batched or not.
    let many = engine.price_many(&c, &mode("negative"), &apart(3, None));
    assert!(many.iter().all(|m| matches!(
        &m.outcome,
        Err(PolicyFailure::InvalidOutput { detail }) if detail.contains("negative")
    )));
}

/// A batch call gets ONE decision's fuel, not one per input: with a budget that one
/// input fits in and three do not, a call of three runs out and each input is priced
/// alone — each with exactly a single call's fuel; with room for three, the call
/// succeeds and each records a share of it instead.
#[test]
fn a_batch_call_has_the_fuel_of_one_decision() {
    let measure = engine(PolicyLimits::default());
    let c = measure.load(PolicyKind::Tariff, &hostile()).unwrap();
    let burn = r#"{"mode":"burn"}"#;
    let one = measure.price(&c, &tariff_input("burn"));
    assert!(one.outcome.is_ok(), "{:?}", one.outcome);
    let single = one.fuel_used;
    assert!(single > 1_000_000, "the burn mode spends fuel: {single}");
    let apart: Vec<TariffInput> = (0..3)
        .map(|i| TariffInput {
            account_id: format!("35{i:08}"),
            parameters: String::new(),
            ..tariff_input("burn")
        })
        .collect();
    let alone = |e: &PolicyEngine, c, i: &TariffInput| {
        e.price(
            c,
            &TariffInput {
                parameters: burn.into(),
                ..i.clone()
            },
        )
        .fuel_used
    };

    let tight = engine(PolicyLimits {
        fuel_per_decision: single * 5 / 2,
        ..PolicyLimits::default()
    });
    let c = tight.load(PolicyKind::Tariff, &hostile()).unwrap();
    let many = tight.price_many(&c, burn, &apart);
    for (m, i) in many.iter().zip(&apart) {
        assert!(m.outcome.is_ok(), "{:?}", m.outcome);
        assert_eq!(
            m.fuel_used,
            alone(&tight, &c, i),
            "priced alone, after the call ran out"
        );
        // And the log will say it was made alone (migration 0024).
        assert_eq!(m.call_decisions, None);
    }

    let roomy = engine(PolicyLimits {
        fuel_per_decision: single * 4,
        ..PolicyLimits::default()
    });
    let c = roomy.load(PolicyKind::Tariff, &hostile()).unwrap();
    let many = roomy.price_many(&c, burn, &apart);
    for (m, i) in many.iter().zip(&apart) {
        assert!(m.outcome.is_ok(), "{:?}", m.outcome);
        // Fuel is exact: a share of the call's fuel, not what the input costs alone.
        assert_ne!(m.fuel_used, alone(&roomy, &c, i), "a share of one call");
        // Of how many, for the log (migration 0024).
        assert_eq!(m.call_decisions, Some(apart.len() as u32));
    }
}

/// A version whose `price-batch` answers otherwise than its `price` is not put in force:
/// the check decision `policy activate` (and the running host's swap) makes compares them.
#[test]
fn a_batch_export_that_disagrees_with_price_is_refused_at_activation() {
    let engine = engine(PolicyLimits::default());
    let component = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let active = |mode: &str| ActiveComponent {
        component: component.clone(),
        parameters_json: format!("{{\"mode\":\"{mode}\"}}"),
    };
    feegate::county::probe(&engine, &active("ok")).expect("an honest batch passes");
    for (mode, what) in [
        ("batch-differs", "answers check input 0"),
        ("remember", "answers check input 0"),
        ("miscount", "failed as a whole"),
    ] {
        let err = feegate::county::probe(&engine, &active(mode)).unwrap_err();
        assert!(
            matches!(&err, PolicyFailure::InvalidOutput { detail }
                if detail.contains("price-batch") && detail.contains(what)),
            "{mode}: {err:?}"
        );
    }
    // The warning kind's `assess-batch` is checked the same way.
    let warning = engine.load(PolicyKind::Warning, &hostile()).unwrap();
    assert!(warning.decides_in_batches());
    let active = |mode: &str| ActiveComponent {
        component: warning.clone(),
        parameters_json: format!("{{\"mode\":\"{mode}\"}}"),
    };
    feegate::county::probe(&engine, &active("ok")).expect("an honest batch passes");
    let err = feegate::county::probe(&engine, &active("batch-differs")).unwrap_err();
    assert!(
        matches!(&err, PolicyFailure::InvalidOutput { detail } if detail.contains("assess-batch")),
        "{err:?}"
    );
}

#[test]
fn a_loop_without_fuel_limit_is_stopped_by_the_epoch_deadline() {
    let limits = PolicyLimits {
        fuel_per_decision: u64::MAX / 4,
        time_limit: Duration::from_millis(200),
        ..PolicyLimits::default()
    };
    let engine = engine(limits);
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let started = std::time::Instant::now();
    let run = engine.price(&c, &tariff_input("loop"));
    assert_eq!(
        run.outcome.unwrap_err(),
        PolicyFailure::Timeout { limit_ms: 200 }
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped, not left running"
    );
}

#[test]
fn impure_wrong_or_broken_components_are_refused_at_load() {
    let engine = engine(PolicyLimits::default());
    let impure = std::fs::read(common::component("impure_policy")).unwrap();
    match engine.load(PolicyKind::Tariff, &impure) {
        Err(PolicyLoadError::ForbiddenImport { import, .. }) => {
            assert!(
                import.starts_with("wasi:clocks/") || import.starts_with("wasi:random/"),
                "{import}"
            )
        }
        other => panic!("impure component must be refused, got {other:?}"),
    }
    let tariff = std::fs::read(common::component("policy_tariff_step")).unwrap();
    assert!(matches!(
        engine.load(PolicyKind::Warning, &tariff),
        Err(PolicyLoadError::WrongKind {
            kind: PolicyKind::Warning,
            ..
        })
    ));
    assert!(matches!(
        engine.load(PolicyKind::Tariff, b"not wasm at all"),
        Err(PolicyLoadError::Invalid(_))
    ));
    let small = self::engine(PolicyLimits {
        max_component_bytes: 1024,
        ..PolicyLimits::default()
    });
    assert!(matches!(
        small.load(PolicyKind::Tariff, &tariff),
        Err(PolicyLoadError::TooLarge { limit: 1024, .. })
    ));
    // Messages tell the engineer what to change.
    let err = engine
        .load(PolicyKind::Tariff, &impure)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pure functions of their input"), "{err}");
}

/// A small county (12 meters) run for a week with the hostile component in `mode` as its
/// tariff; the last day runs the whole job. `None` where the test database is skipped.
async fn week_with_hostile_tariff(test: &str, mode: &str) -> Option<(Scenario, common::TestDb)> {
    let (opts, db) = common::small_county_db(test, 12, 6, 3).await?;
    let tariff = ComponentOverride {
        kind: PolicyKind::Tariff,
        wasm: common::component("hostile_policy"),
        parameters_json: format!("{{\"mode\":\"{mode}\"}}"),
    };
    let mut s = Scenario::new(&opts, &[tariff]).await.unwrap();
    s.run_days(6).await.unwrap();
    s.run_day(opts.start + chrono::Duration::days(6), true)
        .await
        .unwrap();
    Some((s, db))
}

/// The scenario's summary after a tariff that must not be enforced: no charge posted
/// (none guessed), the ledger balanced, balances the untouched prepayments, every account
/// with a reading held and reported, nobody disconnected.
async fn nobody_charged_everyone_held(s: &Scenario) -> feegate::demo::DemoSummary {
    let sum = s.summary().await.unwrap();
    assert_eq!(sum.charged_yuan, "0.00", "no charge is posted or guessed");
    assert!(sum.ledger_balanced);
    assert_eq!(
        sum.paid_yuan, sum.balance_total_yuan,
        "balances are untouched prepayments"
    );
    assert_eq!(
        sum.held_accounts, sum.accounts,
        "every account with a reading is held and reported"
    );
    assert_eq!(sum.disconnections, 0);
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_tariff_charges_nobody_and_holds_every_account() {
    let Some((s, _db)) = week_with_hostile_tariff(
        "a_trapping_tariff_charges_nobody_and_holds_every_account",
        "trap",
    )
    .await
    else {
        return;
    };
    let sum = nobody_charged_everyone_held(&s).await;
    assert!(sum.policy_failures > 0);
    let db = &s.host.db;
    let held: i64 = sqlx::query(
        "SELECT COUNT(*) FROM holds WHERE stage = 'settlement' AND reason LIKE 'policy trap%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert!(held > 0);
    let settlements: i64 = sqlx::query("SELECT COUNT(*) FROM settlements")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(settlements, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_charge_is_held_not_posted_warned_or_cut_off() {
    // A signed tariff that answers within the contract (a non-negative charge) but
    // charges ten billion yuan a day: the host's charge ceiling holds every account.
    let Some((s, _db)) = week_with_hostile_tariff(
        "an_absurd_charge_is_held_not_posted_warned_or_cut_off",
        "giant",
    )
    .await
    else {
        return;
    };
    nobody_charged_everyone_held(&s).await;
    let db = &s.host.db;
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    };
    assert!(
        count("SELECT COUNT(*) FROM holds WHERE stage = 'settlement' AND reason LIKE 'charge-over-ceiling: the tariff charged 10000000000.00 yuan%'").await
            > 0
    );
    assert_eq!(count("SELECT COUNT(*) FROM settlements").await, 0);
    assert_eq!(
        count("SELECT COUNT(*) FROM sms_outbox WHERE kind = 'arrears'").await,
        0,
        "nobody is told they are in arrears over a charge that was not posted"
    );
    // The account record says it is held (the API and console show it).
    let everyone = feegate::auth::Visibility {
        county: None,
        station_id: None,
        account_id: None,
    };
    let any_account: String = sqlx::query_scalar("SELECT MIN(account_id) FROM holds")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let a = feegate::query::accounts::account(db, &everyone, &any_account)
        .await
        .unwrap()
        .unwrap();
    assert!(a.open_holds > 0, "{a:?}");
    // The decisions themselves are recorded as the component answered, for the audit.
    assert!(
        count("SELECT COUNT(*) FROM decisions WHERE kind = 'tariff' AND outcome = 'ok'").await > 0
    );
}

/// Puts every account of the scenario 1,000 yuan into arrears with a correction entry.
async fn everyone_in_arrears(db: &Db) {
    let accounts: Vec<String> = sqlx::query("SELECT account_id FROM accounts")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
    for a in accounts {
        let mut tx = db.pool.begin().await.unwrap();
        ledger::post(
            &mut tx,
            &Posting {
                account_id: &a,
                kind: EntryKind::Correction,
                amount_fen: -100_000,
                idempotency_key: &format!("test-arrears:{a}"),
                business_date: "2013-01-08",
                posted_at: "2013-01-08 01:00:00",
                reference: "test",
            },
        )
        .await
        .unwrap();
        sqlx::query("UPDATE accounts SET arrears_since = '2013-01-08' WHERE account_id = $1")
            .bind(&a)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

fn activate(s: &Scenario, kind: PolicyKind, mode: &str) {
    let component = s.host.engine.load(kind, &hostile()).unwrap();
    s.host.county.activate(ActiveComponent {
        component,
        parameters_json: format!("{{\"mode\":\"{mode}\"}}"),
    });
}

async fn trips(db: &Db) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM relay_commands WHERE command = 'trip'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_floor_refuses_what_a_disconnect_everyone_policy_asks() {
    let Some((opts, _db)) = common::small_county_db(
        "the_safety_floor_refuses_what_a_disconnect_everyone_policy_asks",
        8,
        7,
        5,
    )
    .await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(7).await.unwrap();
    s.run_day(NaiveDate::from_ymd_opt(2013, 1, 8).unwrap(), true)
        .await
        .unwrap();
    everyone_in_arrears(&s.host.db).await;
    activate(&s, PolicyKind::Cutoff, "disconnect");

    // Tuesday 20:00: protected hours. The policy asks to disconnect all; nobody is.
    s.advance(
        NaiveDate::from_ymd_opt(2013, 1, 8)
            .unwrap()
            .and_hms_opt(20, 0, 0)
            .unwrap(),
    )
    .unwrap();
    let r = s.host.run_cutoff().await.unwrap();
    assert_eq!(r.considered, 8);
    assert_eq!(r.trips_created, 0);
    assert_eq!(r.floor_refused, 8);
    let protected: i64 =
        sqlx::query("SELECT COUNT(*) FROM floor_refusals WHERE protected_window = 1")
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert_eq!(protected, 8);

    // Wednesday 10:00: not protected, but no arrears notice was delivered: still nobody.
    s.advance(
        NaiveDate::from_ymd_opt(2013, 1, 9)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap(),
    )
    .unwrap();
    let r = s.host.run_cutoff().await.unwrap();
    assert_eq!(r.trips_created, 0);
    let reasons: Vec<String> =
        sqlx::query("SELECT refusals_json FROM floor_refusals WHERE decided_at >= '2013-01-09'")
            .fetch_all(&s.host.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
    assert_eq!(reasons.len(), 8);
    assert!(
        reasons.iter().all(|j| j.contains("notice-not-delivered")),
        "{reasons:?}"
    );
    assert_eq!(trips(&s.host.db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_cutoff_policy_cuts_nobody_off() {
    let Some((opts, _db)) =
        common::small_county_db("a_trapping_cutoff_policy_cuts_nobody_off", 8, 3, 11).await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(3).await.unwrap();
    everyone_in_arrears(&s.host.db).await;
    activate(&s, PolicyKind::Cutoff, "trap");
    s.advance(
        NaiveDate::from_ymd_opt(2013, 1, 8)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap(),
    )
    .unwrap();
    let r = s.host.run_cutoff().await.unwrap();
    assert_eq!(r.held, 8);
    assert_eq!(r.trips_created + r.approvals_requested, 0);
    assert_eq!(trips(&s.host.db).await, 0);
    let held: i64 =
        sqlx::query("SELECT COUNT(DISTINCT account_id) FROM holds WHERE stage = 'cutoff'")
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert_eq!(held, 8);
}

/// A guest that writes to stderr (every panicking guest does) must not take the host
/// down, whatever kind of async runtime calls it.
#[tokio::test(flavor = "current_thread")]
async fn a_trap_inside_a_current_thread_runtime_is_contained() {
    let engine = engine(PolicyLimits::default());
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let run = engine.price(&c, &tariff_input("trap"));
    assert!(
        matches!(run.outcome, Err(PolicyFailure::Trap { .. })),
        "{:?}",
        run.outcome
    );
    assert!(
        run.guest_output.contains("deliberate trap"),
        "the guest's panic message is captured: {:?}",
        run.guest_output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_inside_a_multi_thread_runtime_is_contained() {
    let engine = engine(PolicyLimits::default());
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let run = engine.price(&c, &tariff_input("trap"));
    assert!(
        matches!(run.outcome, Err(PolicyFailure::Trap { .. })),
        "{:?}",
        run.outcome
    );
}

/// Decisions spread over threads share the engine's pool of instance slots: with one slot
/// for several threads every decision waits for it, none fails for want of it (a failed
/// tariff would hold the account instead of charging it).
#[test]
fn a_pool_of_one_slot_makes_decisions_wait_never_fail() {
    let engine = engine(PolicyLimits {
        instance_slots: 1,
        ..PolicyLimits::default()
    });
    let c = engine.load(PolicyKind::Tariff, &hostile()).unwrap();
    let inputs: Vec<TariffInput> = (0..200).map(|_| tariff_input("ok")).collect();
    // Four threads by hand (decide_all spreads over the machine's cores, maybe only one).
    let runs: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = inputs
            .chunks(50)
            .map(|part| scope.spawn(|| engine.decide_all(part, |i| engine.price(&c, i))))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(runs.len(), 200);
    for run in &runs {
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
    }
}
