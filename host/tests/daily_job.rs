//! End to end: the whole daily job on a small simulated county, on real consumption
//! data, with the shipped policy components running as WebAssembly.

mod common;

use feegate::demo;
use rust_decimal::Decimal;
use std::str::FromStr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_days_of_a_small_county_hold_every_invariant() {
    let opts = common::small_county(40, 60, 7);
    let s = demo::run(&opts).await.expect("demo runs");

    // Money: exact, balanced, and consistent.
    assert!(
        s.ledger_balanced,
        "every balance equals the sum of its entries"
    );
    let charged = Decimal::from_str(&s.charged_yuan).unwrap();
    let paid = Decimal::from_str(&s.paid_yuan).unwrap();
    let balance = Decimal::from_str(&s.balance_total_yuan).unwrap();
    assert_eq!(paid - charged, balance, "balances = payments − charges");
    assert!(charged > Decimal::ZERO && Decimal::from_str(&s.kwh_total).unwrap() > Decimal::ZERO);
    // The step tariff's first step is 0.4983 yuan/kWh; with nobody past 2760 kWh in 60
    // days, charges are that price times the energy, within rounding of a fen a day.
    let kwh = Decimal::from_str(&s.kwh_total).unwrap();
    let expected = kwh * Decimal::from_str("0.4983").unwrap();
    let tolerance = Decimal::from(s.accounts * 60) * Decimal::from_str("0.005").unwrap();
    assert!(
        (charged - expected).abs() <= tolerance,
        "charged {charged} vs {expected} ± {tolerance}"
    );

    // Collection: every due reading attempted; missing days in the data are failures,
    // never zero readings.
    assert_eq!(s.accounts, 40);
    assert!(s.readings_expected >= 40 * 60, "{}", s.readings_expected);
    assert!(
        s.readings_ok < s.readings_expected,
        "the data has missing days, so some reads fail"
    );
    assert!(Decimal::from_str(&s.read_success_rate).unwrap() > Decimal::from_str("0.85").unwrap());

    // The whole path happened: warnings, approvals, disconnections, reconnections.
    assert!(s.warnings > 0, "{s:?}");
    assert!(s.work_orders_opened > 0 && s.approvals > 0, "{s:?}");
    assert!(s.disconnections > 0, "{s:?}");
    assert!(s.reconnections > 0, "{s:?}");
    assert!(
        s.policy_decisions > s.readings_ok,
        "every settlement and assessment is a logged decision"
    );

    // Safety.
    assert_eq!(s.cutoffs_in_protected_windows, 0);
    assert_eq!(s.policy_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_figures() {
    let opts = common::small_county(12, 20, 99);
    let a = demo::run(&opts).await.unwrap();
    let b = demo::run(&opts).await.unwrap();
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_running_a_morning_after_a_crash_settles_nothing_twice() {
    use sqlx::Row;
    let opts = common::small_county(10, 5, 21);
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    for day in 0..5 {
        s.run_day(opts.start + chrono::Duration::days(day), false)
            .await
            .unwrap();
    }
    let date = opts.start + chrono::Duration::days(5);
    s.advance(date.and_hms_opt(0, 10, 0).unwrap()).unwrap();
    let first = s.host.run_morning(date).await.unwrap();
    assert!(first.settlement.settled > 0);
    let ledger_rows = |db: feegate::db::Db| async move {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM ledger_entries",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (
            r.try_get::<i64, _>(0).unwrap(),
            r.try_get::<i64, _>(1).unwrap(),
        )
    };
    let before = ledger_rows(s.host.db.clone()).await;

    // A crash after the work but before the stage was marked done: forget the marks.
    sqlx::query("DELETE FROM job_runs")
        .execute(&s.host.db.pool)
        .await
        .unwrap();
    let again = s.host.run_morning(date).await.unwrap();
    assert_eq!(
        again.collection.attempted, 0,
        "meters with today's reading are not read again"
    );
    assert_eq!(again.settlement.settled, 0);
    assert_eq!(again.settlement.already_settled, first.settlement.settled);
    assert_eq!(
        ledger_rows(s.host.db.clone()).await,
        before,
        "no entry posted twice"
    );

    // With the marks in place the stages are skipped outright.
    let third = s.host.run_morning(date).await.unwrap();
    assert_eq!(third.skipped_stages, vec!["collection", "settlement"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_command_left_issuing_by_a_crash_is_verified_not_resent() {
    use feegate::relay;
    use feegate_meter::registers::{RelayCommand, RelayState};
    use sqlx::Row;
    let opts = common::small_county(4, 1, 4);
    let s = demo::Scenario::new(&opts, &[]).await.unwrap();
    let now = opts.start.and_hms_opt(10, 0, 0).unwrap();
    s.advance(now).unwrap();
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let id = relay::create(
        &mut conn,
        "3500000001",
        "decision:test",
        RelayCommand::Trip,
        now,
        &s.host.config.relay,
    )
    .await
    .unwrap()
    .unwrap();
    // The same decision cannot make a second command.
    assert_eq!(
        relay::create(
            &mut conn,
            "3500000001",
            "decision:test",
            RelayCommand::Trip,
            now,
            &s.host.config.relay
        )
        .await
        .unwrap(),
        None
    );
    // Simulate a crash right after "issuing" was committed, before the frame left.
    sqlx::query("UPDATE relay_commands SET status = 'issuing' WHERE command_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let report = relay::drive(&s.host.db, &s.host.meters, now).await.unwrap();
    assert_eq!(report.issued, 0, "not sent again");
    assert_eq!(
        s.fleet.relay_state(0).unwrap(),
        RelayState::Closed,
        "the meter never got a trip"
    );
    let status: String = sqlx::query("SELECT status FROM relay_commands WHERE command_id = $1")
        .bind(id)
        .fetch_one(&s.host.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(status, "failed");

    // A meter that acknowledges without moving its relay is never counted as tripped.
    s.fleet.set_ack_without_state_change(1, true).unwrap();
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    feegate::ledger::post(
        &mut conn,
        &feegate::ledger::Posting {
            account_id: "3500000002",
            kind: feegate::ledger::EntryKind::Correction,
            amount_fen: -50_000,
            idempotency_key: "test:arrears:2",
            business_date: "2013-01-01",
            posted_at: "2013-01-01 10:00:00",
            reference: "test",
        },
    )
    .await
    .unwrap();
    relay::create(
        &mut conn,
        "3500000002",
        "decision:ack",
        RelayCommand::Trip,
        now,
        &s.host.config.relay,
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);
    let report = relay::drive(&s.host.db, &s.host.meters, now).await.unwrap();
    assert_eq!(report.issued, 1);
    assert!(report.events.is_empty(), "still awaiting confirmation");
    let later = now + chrono::Duration::hours(3);
    s.advance(later).unwrap();
    let report = relay::drive(&s.host.db, &s.host.meters, later)
        .await
        .unwrap();
    assert_eq!(report.events.len(), 1);
    assert!(
        !report.events[0].confirmed,
        "past the deadline without a state change: failed"
    );
    let state: String =
        sqlx::query("SELECT relay_state FROM accounts WHERE account_id = '3500000002'")
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert_eq!(state, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_races_a_trip_keeps_the_power_on() {
    use feegate::ledger::EntryKind;
    use feegate::payment::{self, PaymentNotice};
    use feegate::relay;
    use feegate_meter::registers::{RelayCommand, RelayState};
    use sqlx::Row;
    let opts = common::small_county(2, 1, 8);
    let s = demo::Scenario::new(&opts, &[]).await.unwrap();
    let now = opts.start.and_hms_opt(10, 0, 0).unwrap();
    s.advance(now).unwrap();
    // Account 1 is in arrears and a trip command waits to be sent...
    let mut tx = s.host.db.pool.begin().await.unwrap();
    feegate::ledger::post(
        &mut tx,
        &feegate::ledger::Posting {
            account_id: "3500000001",
            kind: EntryKind::Correction,
            amount_fen: -50_000,
            idempotency_key: "test:arrears",
            business_date: "2013-01-01",
            posted_at: "2013-01-01 10:00:00",
            reference: "test",
        },
    )
    .await
    .unwrap();
    relay::create(
        &mut tx,
        "3500000001",
        "decision:race",
        RelayCommand::Trip,
        now,
        &s.host.config.relay,
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    // ...when the customer pays enough.
    let paid = PaymentNotice {
        channel: "alipay",
        channel_txn_id: "2013010122001",
        account_id: "3500000001",
        amount_fen: 60_000,
    };
    payment::apply(&s.host.db, &paid, EntryKind::Payment, now)
        .await
        .unwrap();
    let report = relay::drive(&s.host.db, &s.host.meters, now).await.unwrap();
    assert_eq!(report.issued, 0);
    assert!(
        report.events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("no longer in arrears"),
        "{report:?}"
    );
    assert_eq!(s.fleet.relay_state(0).unwrap(), RelayState::Closed);
    // The same payment notified twice moves money once.
    assert_eq!(
        payment::apply(&s.host.db, &paid, EntryKind::Payment, now)
            .await
            .unwrap(),
        payment::Applied::AlreadyApplied
    );
    let balance: i64 =
        sqlx::query("SELECT balance_fen FROM accounts WHERE account_id = '3500000001'")
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    let sum: i64 =
        sqlx::query("SELECT CAST(SUM(amount_fen) AS BIGINT) FROM ledger_entries WHERE account_id = '3500000001'")
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert_eq!(balance, sum);
}
