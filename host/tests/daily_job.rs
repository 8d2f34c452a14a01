//! End to end: the whole daily job on a small simulated county, on real consumption
//! data, with the shipped policy components running as WebAssembly.

mod common;

use feegate::demo;
use rust_decimal::Decimal;
use std::str::FromStr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_days_of_a_small_county_hold_every_invariant() {
    let Some((opts, _db)) = common::small_county_db(
        "sixty_days_of_a_small_county_hold_every_invariant",
        40,
        60,
        7,
    )
    .await
    else {
        return;
    };
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
    let Some((opts, _db)) =
        common::small_county_db("the_same_seed_gives_the_same_figures", 12, 20, 99).await
    else {
        return;
    };
    let a = demo::run(&opts).await.unwrap();
    let Some((opts, _db2)) =
        common::small_county_db("the_same_seed_gives_the_same_figures", 12, 20, 99).await
    else {
        return;
    };
    let b = demo::run(&opts).await.unwrap();
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_running_a_morning_after_a_crash_settles_nothing_twice() {
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "re_running_a_morning_after_a_crash_settles_nothing_twice",
        10,
        5,
        21,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(5).await.unwrap();
    let date = opts.start + chrono::Duration::days(5);
    s.advance(date.and_hms_opt(0, 10, 0).unwrap()).unwrap();
    // The process collects and settles, then dies before the warning stage.
    let now = feegate::clock::Clock::now(s.clock.as_ref());
    feegate::collection::collect_daily(&s.host.db, &s.host.meters, "xianyou", date, now)
        .await
        .unwrap();
    let policies = s.host.county.snapshot();
    let settled = feegate::settlement::settle(
        &s.host.db,
        &s.host.engine,
        "xianyou",
        &policies,
        date,
        now,
        &s.host.config.settlement,
    )
    .await
    .unwrap();
    assert!(settled.settled > 0);
    // Restart: the morning resumes; nothing is settled twice, every settled account is assessed.
    let first = s.host.run_morning(date).await.unwrap();
    assert_eq!(first.settlement.settled, 0);
    assert_eq!(first.settlement.already_settled, settled.settled);
    assert_eq!(
        first.warning.assessed, settled.settled,
        "no warning lost to the crash"
    );
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
    assert_eq!(again.settlement.already_settled, settled.settled);
    assert_eq!(again.warning.assessed, 0, "no account assessed twice");
    assert_eq!(
        ledger_rows(s.host.db.clone()).await,
        before,
        "no entry posted twice"
    );

    // With the marks in place the stages are skipped outright.
    let third = s.host.run_morning(date).await.unwrap();
    assert_eq!(
        third.skipped_stages,
        vec!["collection", "settlement", "warning"]
    );
}

/// Puts `account` in arrears since 2013-01-07 with its arrears notice delivered that
/// morning, so that on Tuesday 2013-01-08 10:00 the safety floor allows a trip.
async fn make_trippable(db: &feegate::db::Db, account: &str) {
    let mut tx = db.pool.begin().await.unwrap();
    feegate::ledger::post(
        &mut tx,
        &feegate::ledger::Posting {
            account_id: account,
            kind: feegate::ledger::EntryKind::Correction,
            amount_fen: -100_000,
            idempotency_key: &format!("test:arrears:{account}"),
            business_date: "2013-01-07",
            posted_at: "2013-01-07 00:20:00",
            reference: "test",
        },
    )
    .await
    .unwrap();
    sqlx::query("UPDATE accounts SET arrears_since = '2013-01-07' WHERE account_id = $1")
        .bind(account)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sms_outbox (account_id, kind, dedup_key, mobile, body, warning_level, status, created_at, sent_at, delivered_at)
         VALUES ($1, 'arrears', $2, '13900000000', 'test', 3, 'delivered', '2013-01-07 00:30:00', '2013-01-07 08:00:00', '2013-01-07 08:00:00')",
    )
    .bind(account)
    .bind(format!("test:notice:{account}"))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// One pass of the relays job's command driving at `at`.
async fn drive_all(s: &demo::Scenario, at: chrono::NaiveDateTime) -> feegate::relay::RelayReport {
    feegate::relay::drive(
        &s.host.db,
        &s.host.meters,
        &s.host.county.floor,
        &s.host.county.county,
        at,
    )
    .await
    .unwrap()
}

/// A pending relay command for `account` from decision `key`; its id.
async fn pending_command(
    s: &demo::Scenario,
    account: &str,
    key: &str,
    command: feegate_meter::registers::RelayCommand,
    now: chrono::NaiveDateTime,
) -> Option<i64> {
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    feegate::relay::create(&mut conn, account, key, command, now, &s.host.config.relay)
        .await
        .unwrap()
}

/// A scenario of `meters` meters run to Tuesday 2013-01-08 10:00 (readings fresh).
async fn scenario_at_tuesday_morning(
    test: &str,
    meters: usize,
    seed: u64,
) -> Option<(demo::Scenario, chrono::NaiveDateTime, common::TestDb)> {
    let (opts, db) = common::small_county_db(test, meters, 8, seed).await?;
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(7).await.unwrap();
    let tuesday = chrono::NaiveDate::from_ymd_opt(2013, 1, 8).unwrap();
    s.run_day(tuesday, true).await.unwrap();
    let now = tuesday.and_hms_opt(10, 0, 0).unwrap();
    s.advance(now).unwrap();
    Some((s, now, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_command_left_issuing_by_a_crash_is_verified_not_resent() {
    use feegate::relay;
    use feegate_meter::registers::{RelayCommand, RelayState};
    use sqlx::Row;
    let Some((s, now, _db)) = scenario_at_tuesday_morning(
        "a_relay_command_left_issuing_by_a_crash_is_verified_not_resent",
        4,
        4,
    )
    .await
    else {
        return;
    };
    let (floor, county) = (&s.host.county.floor, s.host.county.county.as_str());
    make_trippable(&s.host.db, "3500000001").await;
    make_trippable(&s.host.db, "3500000002").await;
    let id = pending_command(&s, "3500000001", "decision:test", RelayCommand::Trip, now)
        .await
        .unwrap();
    // The same decision cannot make a second command.
    assert_eq!(
        pending_command(&s, "3500000001", "decision:test", RelayCommand::Trip, now).await,
        None
    );
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    // Simulate a crash right after "issuing" was committed, before the frame left.
    sqlx::query("UPDATE relay_commands SET status = 'issuing' WHERE command_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let report = relay::drive(&s.host.db, &s.host.meters, floor, county, now)
        .await
        .unwrap();
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
    pending_command(&s, "3500000002", "decision:ack", RelayCommand::Trip, now)
        .await
        .unwrap();
    let report = relay::drive(&s.host.db, &s.host.meters, floor, county, now)
        .await
        .unwrap();
    assert_eq!(report.issued, 1, "{report:?}");
    assert!(report.events.is_empty(), "still awaiting confirmation");
    let later = now + chrono::Duration::hours(3);
    s.advance(later).unwrap();
    let report = relay::drive(&s.host.db, &s.host.meters, floor, county, later)
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
async fn a_trip_left_pending_is_not_sent_once_the_evening_comes() {
    use feegate_meter::registers::{RelayCommand, RelayState};
    let Some((s, now, _db)) = scenario_at_tuesday_morning(
        "a_trip_left_pending_is_not_sent_once_the_evening_comes",
        2,
        6,
    )
    .await
    else {
        return;
    };
    make_trippable(&s.host.db, "3500000001").await;
    pending_command(
        &s,
        "3500000001",
        "decision:evening",
        RelayCommand::Trip,
        now,
    )
    .await
    .unwrap();
    // The process was down from 10:00; it drives its queue at 18:30.
    let evening = now + chrono::Duration::minutes(510);
    s.advance(evening).unwrap();
    let report = drive_all(&s, evening).await;
    assert_eq!(report.issued, 0);
    let why = report.events[0].detail.clone().unwrap();
    assert!(why.contains("not sent"), "{why}");
    assert_eq!(s.fleet.relay_state(0).unwrap(), RelayState::Closed);
}

/// An approved disconnection whose trip a crash left unsent is asked for again: the
/// trip is verified, found not done and failed (never re-sent), and the next cutoff
/// run opens a new approval work order for the same arrears episode instead of finding
/// the episode's key taken and leaving the customer connected with nobody asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_trip_lost_to_a_crash_is_asked_for_again() {
    use sqlx::Row;
    let Some((s, now, _db)) =
        scenario_at_tuesday_morning("an_approved_trip_lost_to_a_crash_is_asked_for_again", 2, 6)
            .await
    else {
        return;
    };
    let db = &s.host.db;
    make_trippable(db, "3500000001").await;
    // No prepaying habit: the approval-gated county asks a person.
    sqlx::query("UPDATE accounts SET ontime_topups_in_a_row = 0 WHERE account_id = '3500000001'")
        .execute(&db.pool)
        .await
        .unwrap();
    let open_orders = async || -> Vec<i64> {
        sqlx::query(
            "SELECT work_order_id FROM work_orders WHERE account_id = '3500000001'
             AND kind = 'approve-disconnection' AND status = 'open' ORDER BY work_order_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let report = s.host.run_cutoff().await.unwrap();
    assert_eq!(report.approvals_requested, 1, "{report:?}");
    let first = open_orders().await[0];
    assert!(
        feegate::cutoff::decide_work_order(db, first, true, "station", now, "ok")
            .await
            .unwrap()
    );
    let executed = s.host.execute_approved().await.unwrap();
    assert_eq!(executed.trips_created, 1, "{executed:?}");
    // The process dies right after committing "issuing", before the frame leaves.
    sqlx::query("UPDATE relay_commands SET status = 'issuing' WHERE decision_key = $1")
        .bind(format!("work-order:{first}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let report = drive_all(&s, now).await;
    assert_eq!(report.issued, 0, "never re-sent");
    assert!(!report.events[0].confirmed, "{report:?}");
    // The next cutoff run asks a person again, once.
    let report = s.host.run_cutoff().await.unwrap();
    assert_eq!(report.approvals_requested, 1, "{report:?}");
    let again = open_orders().await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], first);
    assert_eq!(s.host.run_cutoff().await.unwrap().approvals_requested, 0);
}

/// A pending command is sent by one driver only. `feegate serve` drives relay
/// commands from two places at once — the relays job walks every outstanding command,
/// and a payment's reconnection at once drives its own — so both may read the same
/// command as pending; only the one whose update moves it to `issuing` may send it.
/// (Before: the second driver's update changed nothing but it sent the frame anyway —
/// one command, two frames at the meter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_relay_command_is_sent_by_one_driver_only() {
    use feegate::relay;
    use feegate_meter::registers::RelayCommand;
    use sqlx::Row;
    let Some((s, now, _db)) =
        scenario_at_tuesday_morning("a_pending_relay_command_is_sent_by_one_driver_only", 2, 6)
            .await
    else {
        return;
    };
    make_trippable(&s.host.db, "3500000001").await;
    // A trip to a slow meter first, then a reconnection, both pending.
    let trip = pending_command(
        &s,
        "3500000001",
        "decision:slow-trip",
        RelayCommand::Trip,
        now,
    )
    .await
    .unwrap();
    let close = pending_command(
        &s,
        "3500000002",
        "decision:reconnect",
        RelayCommand::CloseAllowed,
        now,
    )
    .await
    .unwrap();
    s.fleet
        .set_reply_delay(0, Some(std::time::Duration::from_millis(250)))
        .unwrap();
    // The relays job reads both as pending and starts on the slow trip...
    let job = {
        let h = s.host.clone();
        tokio::spawn(async move {
            relay::drive(&h.db, &h.meters, &h.county.floor, &h.county.county, now).await
        })
    };
    let status = async |id: i64| -> String {
        sqlx::query("SELECT status FROM relay_commands WHERE command_id = $1")
            .bind(id)
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap()
            .get(0)
    };
    while status(trip).await == "pending" {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...while the payment's reconnection drives its own command to the end.
    let at_once = relay::drive_command(
        &s.host.db,
        &s.host.meters,
        &s.host.county.floor,
        &s.host.county.county,
        close,
        now,
    )
    .await
    .unwrap();
    assert_eq!(at_once.issued, 1, "{at_once:?}");
    let job = job.await.unwrap().unwrap();
    assert_eq!(
        job.issued, 1,
        "the relays job sent the trip only, not the reconnection it had read as pending: {job:?}"
    );
    assert!(
        job.events.iter().all(|e| e.command_id != close),
        "the relays job reported on a command another driver owns: {job:?}"
    );
    assert_ne!(status(close).await, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_races_a_trip_keeps_the_power_on() {
    use feegate::ledger::EntryKind;
    use feegate::payment::{self, PaymentNotice};
    use feegate::relay;
    use feegate_meter::registers::{RelayCommand, RelayState};
    use sqlx::Row;
    let Some((opts, _db)) =
        common::small_county_db("a_payment_that_races_a_trip_keeps_the_power_on", 2, 1, 8).await
    else {
        return;
    };
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
    let report = drive_all(&s, now).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implausible_reading_stays_held_until_a_person_releases_it() {
    use feegate::db::ds;
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "an_implausible_reading_stays_held_until_a_person_releases_it",
        3,
        6,
        12,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(4).await.unwrap();
    // A garbage register arrives for meter 1 on day 4 (400 kWh more than yesterday).
    let day4 = opts.start + chrono::Duration::days(4);
    let prev: i64 = sqlx::query("SELECT register_centi_kwh FROM readings WHERE meter_id = 'M000000000001' AND reading_date = $1")
        .bind(ds(day4.pred_opt().unwrap())).fetch_one(&s.host.db.pool).await.unwrap().try_get(0).unwrap();
    sqlx::query("INSERT INTO readings (meter_id, reading_date, register_centi_kwh, source, collected_at) VALUES ('M000000000001', $1, $2, 'import', $3)")
        .bind(ds(day4)).bind(prev + 40_000).bind(format!("{} 00:05:00", ds(day4))).execute(&s.host.db.pool).await.unwrap();
    let settled = |db: feegate::db::Db| async move {
        let r = sqlx::query("SELECT COUNT(*) FROM settlements WHERE account_id = '3500000001'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        r.try_get::<i64, _>(0).unwrap()
    };
    let before = settled(s.host.db.clone()).await;
    s.run_day(day4, false).await.unwrap();
    s.run_day(day4 + chrono::Duration::days(1), false)
        .await
        .unwrap();
    // Held on day 4, and the good reading of day 5 does not bill across the bad span.
    assert_eq!(
        settled(s.host.db.clone()).await,
        before,
        "nothing billed while held"
    );
    // A person looks, corrects the reading and releases the hold: the span settles.
    sqlx::query("UPDATE readings SET register_centi_kwh = $2 WHERE meter_id = 'M000000000001' AND reading_date = $1")
        .bind(ds(day4)).bind(prev + 1_000).execute(&s.host.db.pool).await.unwrap();
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let released = feegate::decision_log::release_holds(
        &mut conn,
        "3500000001",
        "reading",
        "station-staff",
        "2013-01-06 09:00:00",
    )
    .await
    .unwrap();
    assert_eq!(released, 1);
    drop(conn);
    s.run_day(day4 + chrono::Duration::days(2), true)
        .await
        .unwrap();
    let r = sqlx::query("SELECT period_first, period_last FROM settlements WHERE account_id = '3500000001' ORDER BY business_date DESC LIMIT 1")
        .fetch_one(&s.host.db.pool).await.unwrap();
    let (first, last): (String, String) = (r.try_get(0).unwrap(), r.try_get(1).unwrap());
    assert_eq!(
        (first.as_str(), last.as_str()),
        ("2013-01-04", "2013-01-06"),
        "one period from the last good reading"
    );
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    assert!(
        feegate::ledger::unbalanced_accounts(&mut conn)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Migration 0013: whatever the code checks before it, the database itself refuses a
/// second relay command for an account while one is still in flight.
#[tokio::test]
async fn the_database_refuses_a_second_relay_command_in_flight() {
    use feegate_meter::registers::RelayCommand;
    let Some((s, now, _db)) = scenario_at_tuesday_morning(
        "the_database_refuses_a_second_relay_command_in_flight",
        2,
        7,
    )
    .await
    else {
        return;
    };
    let first = pending_command(&s, "3500000001", "decision:first", RelayCommand::Trip, now).await;
    assert!(first.is_some());
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let second = feegate::relay::create(
        &mut conn,
        "3500000001",
        "decision:second",
        RelayCommand::Trip,
        now,
        &s.host.config.relay,
    )
    .await;
    drop(conn); // SQLite: the pool's one connection
    let err = second.expect_err("a second command in flight must be refused");
    assert!(
        err.to_string().contains("relay_commands"),
        "the refusal names the table: {err}"
    );
    // Another account is not affected, and once the first command is final the account
    // may have a new one.
    assert!(
        pending_command(&s, "3500000002", "decision:other", RelayCommand::Trip, now)
            .await
            .is_some()
    );
    sqlx::query("UPDATE relay_commands SET status = 'failed' WHERE command_id = $1")
        .bind(first.unwrap())
        .execute(&s.host.db.pool)
        .await
        .unwrap();
    assert!(
        pending_command(&s, "3500000001", "decision:third", RelayCommand::Trip, now)
            .await
            .is_some()
    );
}

/// Migration 0021: a settlement row must name readings, a tariff decision and a ledger
/// entry that exist, the decision and the entry the settled account's own (on PostgreSQL one
/// check per statement instead of four locking foreign keys; on SQLite the keys and a
/// trigger), and no reading is ever deleted or renumbered — while a person may still
/// correct a reading's register value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_names_only_its_own_existing_readings_decision_and_entry() {
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "a_settlement_names_only_its_own_existing_readings_decision_and_entry",
        3,
        4,
        21,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(3).await.unwrap();
    let pool = &s.host.db.pool;
    let row = sqlx::query(
        "SELECT account_id, from_reading_id, to_reading_id, decision_id, entry_id FROM settlements
          WHERE account_id = '3500000001' ORDER BY business_date LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let (account, from, to, decision, entry): (String, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let other = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let others_decision =
        other("SELECT MIN(decision_id) FROM decisions WHERE account_id = '3500000002'").await;
    let others_entry =
        other("SELECT MIN(entry_id) FROM ledger_entries WHERE account_id = '3500000002'").await;
    let count = || other("SELECT COUNT(*) FROM settlements");
    let before = count().await;
    let insert = |from: i64, to: i64, decision: i64, entry: i64| {
        let account = account.clone();
        async move {
            sqlx::query(
                "INSERT INTO settlements (account_id, business_date, period_first, period_last,
                     from_reading_id, to_reading_id, kwh_centi, charge_fen, decision_id, entry_id)
                 VALUES ($1, '2099-01-01', '2098-12-31', '2098-12-31', $2, $3, 0, 0, $4, $5)",
            )
            .bind(account)
            .bind(from)
            .bind(to)
            .bind(decision)
            .bind(entry)
            .execute(pool)
            .await
        }
    };
    for (what, (f, t, d, e)) in [
        ("a missing opening reading", (i64::MAX, to, decision, entry)),
        (
            "a missing closing reading",
            (from, i64::MAX, decision, entry),
        ),
        ("a missing decision", (from, to, i64::MAX, entry)),
        ("a missing ledger entry", (from, to, decision, i64::MAX)),
        (
            "another account's decision",
            (from, to, others_decision, entry),
        ),
        (
            "another account's ledger entry",
            (from, to, decision, others_entry),
        ),
    ] {
        let err = insert(f, t, d, e)
            .await
            .expect_err(&format!("a settlement naming {what} must be refused"))
            .to_string();
        assert!(
            err.contains("settlements") || err.contains("FOREIGN KEY"),
            "{what}: the refusal says what is wrong: {err}"
        );
    }
    assert_eq!(count().await, before, "nothing was inserted");
    // The same references, all the account's own, are accepted (on a day not settled).
    insert(from, to, decision, entry).await.unwrap();
    assert_eq!(count().await, before + 1);

    for sql in [
        "DELETE FROM readings WHERE reading_id = $1",
        "UPDATE readings SET reading_id = reading_id + 1000000 WHERE reading_id = $1",
    ] {
        let err = sqlx::query(sql)
            .bind(to)
            .execute(pool)
            .await
            .expect_err(sql)
            .to_string();
        assert!(err.contains("readings are kept"), "{sql}: {err}");
    }
    sqlx::query(
        "UPDATE readings SET register_centi_kwh = register_centi_kwh WHERE reading_id = $1",
    )
    .bind(to)
    .execute(pool)
    .await
    .expect("a register value may be corrected");
}

/// The other references a settlement day writes through, checked per row by SQLite's keys and
/// per statement on PostgreSQL (migration 0022): a ledger entry, a settlement and an SMS name
/// an existing account, a decision names stored parameters; and an account, which all of
/// them name, is never deleted nor renumbered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_settlements_notices_and_decisions_name_rows_that_exist_and_accounts_are_kept() {
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "entries_settlements_notices_and_decisions_name_rows_that_exist_and_accounts_are_kept",
        2,
        5,
        22,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(3).await.unwrap();
    let pool = &s.host.db.pool;
    let settled = sqlx::query(
        "SELECT from_reading_id, to_reading_id, decision_id, entry_id FROM settlements
          WHERE account_id = '3500000001' ORDER BY business_date LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let (from, to, decision, entry): (i64, i64, i64, i64) = (
        settled.get(0),
        settled.get(1),
        settled.get(2),
        settled.get(3),
    );
    let stored_parameters: String = sqlx::query(
        "SELECT parameters_sha256 FROM decisions WHERE parameters_sha256 IS NOT NULL LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0);
    let rows = |table: &'static str| async move {
        sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let ledger = "INSERT INTO ledger_entries (account_id, kind, amount_fen, balance_after_fen, idempotency_key,
                      business_date, posted_at, reference)
                  VALUES ($1, 'correction', 0, 0, 'test:reference', '2099-01-01', '2099-01-01T00:00:00', 'test')";
    let settlement = "INSERT INTO settlements (account_id, business_date, period_first, period_last,
                          from_reading_id, to_reading_id, kwh_centi, charge_fen, decision_id, entry_id)
                      VALUES ($1, '2099-01-01', '2098-12-31', '2098-12-31', $2, $3, 0, 0, $4, $5)";
    let sms = "INSERT INTO sms_outbox (account_id, kind, dedup_key, mobile, body, status, created_at)
               VALUES ($1, 'warning', 'test:reference', '13800000000', 'test', 'queued', '2099-01-01T00:00:00')";
    let decision_row = "INSERT INTO decisions (decision_id, county, kind, account_id, business_date, decided_at,
                            component_sha256, input_json, outcome, fuel_used, parameters_sha256)
                        VALUES ((SELECT MAX(decision_id) + 1 FROM decisions), 'xianyou', 'tariff', '3500000001',
                                '2099-01-01', '2099-01-01T00:00:00', 'test', '{}', 'ok', 0, $1)";
    let unknown = "no-such-account";
    for (table, refused) in [
        ("ledger_entries", sqlx::query(ledger).bind(unknown)),
        (
            "settlements",
            sqlx::query(settlement)
                .bind(unknown)
                .bind(from)
                .bind(to)
                .bind(decision)
                .bind(entry),
        ),
        ("sms_outbox", sqlx::query(sms).bind(unknown)),
        ("decisions", sqlx::query(decision_row).bind("0".repeat(64))),
    ] {
        let before = rows(table).await;
        let err = refused
            .execute(pool)
            .await
            .expect_err(&format!(
                "{table}: a row naming a missing row must be refused"
            ))
            .to_string();
        assert!(
            err.contains(table) || err.contains("FOREIGN KEY"),
            "{table}: the refusal says what is wrong: {err}"
        );
        assert_eq!(rows(table).await, before, "{table}: nothing was inserted");
    }
    // The same rows naming what exists are accepted.
    for (table, accepted) in [
        ("sms_outbox", sqlx::query(sms).bind("3500000001")),
        (
            "decisions",
            sqlx::query(decision_row).bind(stored_parameters.as_str()),
        ),
    ] {
        let before = rows(table).await;
        accepted
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(rows(table).await, before + 1, "{table}");
    }

    for sql in [
        "DELETE FROM accounts WHERE account_id = '3500000002'",
        "UPDATE accounts SET account_id = 'renumbered' WHERE account_id = '3500000002'",
    ] {
        let err = sqlx::query(sql)
            .execute(pool)
            .await
            .expect_err(sql)
            .to_string();
        assert!(err.contains("accounts are kept"), "{sql}: {err}");
    }
    sqlx::query("UPDATE accounts SET balance_fen = balance_fen WHERE account_id = '3500000002'")
        .execute(pool)
        .await
        .expect("an account's other columns change as before");
}

/// The warning stage's history (`recent_days_many`, a per-account probe on PostgreSQL and a
/// window on SQLite): each account's newest `days` settled days, oldest first, the same as
/// reading them one account at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_history_is_each_account_s_newest_settled_days() {
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "the_warning_history_is_each_account_s_newest_settled_days",
        4,
        7,
        23,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(6).await.unwrap();
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let ids = ["3500000001", "3500000002", "3500000003", "no-such-account"];
    let recent = feegate::accountview::recent_days_many(&mut conn, &ids, 3)
        .await
        .unwrap();
    for id in &ids[..3] {
        let mut newest: Vec<String> = sqlx::query(
            "SELECT business_date FROM settlements WHERE account_id = $1 ORDER BY business_date DESC LIMIT 3",
        )
        .bind(*id)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        newest.reverse();
        assert_eq!(newest.len(), 3, "{id} has settled days to choose from");
        let got: Vec<String> = recent[*id]
            .iter()
            .map(|d| format!("{:04}-{:02}-{:02}", d.date.year, d.date.month, d.date.day))
            .collect();
        assert_eq!(got, newest, "{id}");
    }
    assert!(!recent.contains_key("no-such-account"));
}

/// A customer disconnected longer than the county's call-first limit pays twice (and the
/// relays job sweeps meanwhile): one call-before-reconnection work order and one
/// reconnection decision, not one per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_while_a_call_first_order_is_open_open_no_second_order() {
    use feegate::payment::{self, Reconnection};
    use sqlx::Row;
    let Some((opts, _db)) = common::small_county_db(
        "payments_while_a_call_first_order_is_open_open_no_second_order",
        4,
        3,
        5,
    )
    .await
    else {
        return;
    };
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(2).await.unwrap();
    let db = &s.host.db;
    // In credit, disconnected 60 days ago: past xianyou's 720 h call-first limit.
    let accounts = common::disconnect_accounts_in_credit(db, "2012-11-01 10:00:00").await;
    assert!(!accounts.is_empty());
    let (policies, now) = (s.host.county.snapshot(), s.host.clock.now());
    for account in &accounts {
        for _ in 0..3 {
            let r = payment::reconnect_if_due(
                db,
                &s.host.engine,
                &s.host.county.county,
                &policies,
                account,
                now,
                &s.host.config.relay,
            )
            .await
            .unwrap();
            assert_eq!(r, Reconnection::CallFirst, "account {account}");
        }
        let count = async |sql: &str| -> i64 {
            sqlx::query(sql)
                .bind(account)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get(0)
        };
        assert_eq!(
            count("SELECT COUNT(*) FROM work_orders WHERE account_id = $1 AND kind = 'call-before-reconnection'").await,
            1,
            "account {account}"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM decisions WHERE account_id = $1 AND kind = 'reconnection'")
                .await,
            1,
            "account {account}"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM relay_commands WHERE account_id = $1").await,
            0,
            "account {account}: no reconnection before the call"
        );
    }
}

/// A meter that accepts the connection and never answers keeps the morning's collection
/// waiting for its timeouts and retries (here 2 × 3 s), but not the database: another
/// process (a payment, a person at the console) writes meanwhile without waiting. Before,
/// the collection's transaction began before the reads and, on SQLite, held the one
/// write lock until the last meter answered, so that write failed with "database is
/// locked" after the 5 s busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_never_answers_does_not_hold_the_database_while_it_is_read() {
    let Some((mut opts, tdb)) = common::small_county_db(
        "a_meter_that_never_answers_does_not_hold_the_database_while_it_is_read",
        4,
        3,
        21,
    )
    .await
    else {
        return;
    };
    // Two attempts of 3 s each: longer than SQLite's 5 s busy timeout.
    opts.read_timeout = std::time::Duration::from_secs(3);
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(1).await.unwrap();
    // A gateway that accepts and then says nothing, for the first meter.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in silent.incoming() {
            open.push(c);
        }
    });
    sqlx::query(
        "UPDATE meters SET gateway = $1 WHERE meter_id = (SELECT MIN(meter_id) FROM meters)",
    )
    .bind(&silent_addr)
    .execute(&s.host.db.pool)
    .await
    .unwrap();
    let date = opts.start + chrono::Duration::days(1);
    s.advance(date.and_hms_opt(0, 10, 0).unwrap()).unwrap();
    let now = feegate::clock::Clock::now(s.clock.as_ref());
    let other = feegate::db::Db::open(&tdb.url).await.unwrap();
    let collecting =
        feegate::collection::collect_daily(&s.host.db, &s.host.meters, "xianyou", date, now);
    let writing = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut tx = other.begin_write().await?;
        sqlx::query(
            "UPDATE accounts SET relay_state = relay_state WHERE account_id = (SELECT MIN(account_id) FROM accounts)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    };
    let (report, written) = tokio::join!(collecting, writing);
    written.expect("a write during collection is not blocked by a silent meter");
    let report = report.unwrap();
    assert_eq!(report.attempted, 4, "{report:?}");
    assert_eq!((report.read_ok, report.failed), (3, 1), "{report:?}");
}

/// Settlement and warnings run two batches at a time (the next batch read and decided
/// while the one before is written, beside that write and on another thread: on
/// PostgreSQL on a second pooled connection, on a SQLite file on its read-only one). In batches of
/// 7 every account ends exactly as in one batch of 1,000: the same charge, balance,
/// settled period, warning level and notice, and every account decided once per kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_settled_in_small_batches_end_as_in_one_batch() {
    use feegate::config::{HostConfig, SettlementConfig};
    use sqlx::Row;
    const ACCOUNTS: usize = 50;
    let (Some(small), Some(whole)) = (
        common::test_database("accounts_settled_in_small_batches_small").await,
        common::test_database("accounts_settled_in_small_batches_whole").await,
    ) else {
        return;
    };
    let config = HostConfig::default();
    let engine = feegate::policy::PolicyEngine::new(config.policy.clone()).unwrap();
    let county = feegate::county::County::load(
        &engine,
        &common::repo().join("policies/xianyou"),
        &common::components_dir(),
        config.floor.clone(),
    )
    .unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2013, 3, 2).unwrap();
    let now = date.and_hms_opt(0, 20, 0).unwrap();
    let mut outcomes = Vec::new();
    for (db, batch_accounts) in [(&small, 7), (&whole, 1_000)] {
        let db = common::seeded_db(&db.url, ACCOUNTS).await;
        let cfg = SettlementConfig {
            batch_accounts,
            ..SettlementConfig::default()
        };
        let policies = county.snapshot();
        let settled =
            feegate::settlement::settle(&db, &engine, "xianyou", &policies, date, now, &cfg)
                .await
                .unwrap();
        assert_eq!(settled.settled as usize, ACCOUNTS, "{settled:?}");
        let mut in_order = settled.settled_accounts.clone();
        in_order.sort();
        assert_eq!(
            settled.settled_accounts, in_order,
            "settled in account order"
        );
        let warned = feegate::warning::assess(
            &db,
            &engine,
            "xianyou",
            &policies,
            &settled.settled_accounts,
            date,
            now,
            &cfg,
        )
        .await
        .unwrap();
        assert_eq!(warned.assessed as usize, ACCOUNTS, "{warned:?}");
        assert!(
            warned.notices_queued > 0,
            "a third of the accounts run low: {warned:?}"
        );
        let rows = sqlx::query(
            "SELECT a.account_id, a.balance_fen, s.charge_fen, s.kwh_centi, s.period_first,
                    (SELECT COUNT(*) FROM decisions d WHERE d.account_id = a.account_id AND d.kind = 'tariff'),
                    (SELECT COUNT(*) FROM decisions d WHERE d.account_id = a.account_id AND d.kind = 'warning'),
                    (SELECT MAX(d.output_json) FROM decisions d WHERE d.account_id = a.account_id AND d.kind = 'warning'),
                    (SELECT COUNT(*) FROM sms_outbox o WHERE o.account_id = a.account_id),
                    (SELECT CAST(SUM(e.amount_fen) AS BIGINT) FROM ledger_entries e WHERE e.account_id = a.account_id)
             FROM accounts a JOIN settlements s ON s.account_id = a.account_id
             ORDER BY a.account_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let per_account: Vec<String> = rows
            .iter()
            .map(|r| {
                let (balance, sum): (i64, i64) = (r.get(1), r.get(9));
                assert_eq!(balance, sum, "balance = sum of the ledger");
                assert_eq!(
                    (r.get::<i64, _>(5), r.get::<i64, _>(6)),
                    (1, 1),
                    "decided once"
                );
                format!(
                    "{} balance {balance} charge {} kwh {} from {} warning {} notices {}",
                    r.get::<String, _>(0),
                    r.get::<i64, _>(2),
                    r.get::<i64, _>(3),
                    r.get::<String, _>(4),
                    r.get::<String, _>(7),
                    r.get::<i64, _>(8)
                )
            })
            .collect();
        assert_eq!(per_account.len(), ACCOUNTS);
        outcomes.push(per_account);
        db.close().await;
    }
    assert_eq!(outcomes[0], outcomes[1]);
}
