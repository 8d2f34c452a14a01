//! The same behaviour on PostgreSQL as on SQLite. These tests need a PostgreSQL server
//! (CI has one at 127.0.0.1:5432, database `test`, trust auth; `FEEGATE_TEST_PG`
//! overrides the URL); where none is reachable they say so and skip.

mod common;

use feegate::demo;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_job_on_postgresql_gives_exactly_the_sqlite_figures() {
    let Some(pg) =
        common::pg_database("the_daily_job_on_postgresql_gives_exactly_the_sqlite_figures").await
    else {
        return;
    };
    let mut opts = common::small_county(16, 40, 17);
    let on_sqlite = demo::run(&opts).await.expect("demo on SQLite");
    opts.db_url = Some(pg.url.clone());
    let on_postgres = demo::run(&opts).await.expect("demo on PostgreSQL");
    assert_eq!(on_postgres, on_sqlite);
    assert!(on_postgres.ledger_balanced);
    assert!(
        on_postgres.disconnections > 0 && on_postgres.reconnections > 0,
        "{on_postgres:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_ledger_and_decision_log_refuse_edits() {
    let Some(pg) = common::pg_database("the_postgresql_ledger_and_decision_log_refuse_edits").await
    else {
        return;
    };
    let mut opts = common::small_county(4, 3, 2);
    opts.db_url = Some(pg.url.clone());
    demo::run(&opts).await.expect("demo on PostgreSQL");
    let db = feegate::db::Db::open(&pg.url).await.unwrap();
    let entries: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(entries > 0);
    for sql in [
        "UPDATE ledger_entries SET amount_fen = 0",
        "DELETE FROM ledger_entries",
        "UPDATE decisions SET output_json = NULL",
        "DELETE FROM decisions",
        "UPDATE decision_parameters SET parameters = '{}'",
        "DELETE FROM decision_parameters",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    db.close().await;
}

/// Two reconnection decisions for one account at the same moment — the relays job's
/// reconnection sweep beside a payment's reconnection at once, each on its own pooled
/// connection — make one relay command, not two: the second waits on the account row
/// and then finds the first one's command in flight. (SQLite runs one connection, so
/// only PostgreSQL could race.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconnection_decisions_at_once_make_one_relay_command() {
    let Some(pg) =
        common::pg_database("two_reconnection_decisions_at_once_make_one_relay_command").await
    else {
        return;
    };
    let mut opts = common::small_county(8, 3, 5);
    opts.db_url = Some(pg.url.clone());
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(2).await.unwrap();
    let db = &s.host.db;
    // The accounts in credit, disconnected a day ago.
    let accounts = common::disconnect_accounts_in_credit(db, "2013-01-02 10:00:00").await;
    assert!(accounts.len() >= 6, "{accounts:?}");
    let (policies, now) = (s.host.county.snapshot(), s.host.clock.now());
    let decide = async |account: &str| {
        feegate::payment::reconnect_if_due(
            db,
            &s.host.engine,
            &s.host.county.county,
            &policies,
            account,
            now,
            &s.host.config.relay,
        )
        .await
    };
    for account in &accounts {
        let (a, b) = tokio::join!(decide(account), decide(account));
        let commanded = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|r| matches!(r, feegate::payment::Reconnection::Commanded(_)))
            .count();
        assert_eq!(commanded, 1, "account {account}");
    }
    let doubled: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT account_id FROM relay_commands GROUP BY account_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubled, 0, "an account with two reconnection commands");
}

/// The morning's statements are planned for each execution, with the tables as they are
/// then, and the decision chain's tail is never a statement kept on a connection. A plan
/// kept from the first mornings — made while `decisions` and `settlements` were nearly
/// empty — went on scanning them whole as they grew (README, "Settlement at scale"):
/// PostgreSQL switches a prepared statement to a generic plan after five executions, and
/// keeps a statement without parameters on its first plan for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_morning_s_statements_are_planned_afresh_on_postgresql() {
    let Some(pg) =
        common::pg_database("the_morning_s_statements_are_planned_afresh_on_postgresql").await
    else {
        return;
    };
    let mut opts = common::small_county(12, 8, 5);
    opts.db_url = Some(pg.url.clone());
    let mut s = demo::Scenario::new(&opts, &[]).await.unwrap();
    // Eight mornings: each stage's statements run more than five times.
    s.run_days(8).await.unwrap();
    let pool = &s.host.db.pool;
    // Every connection the pool holds (all idle now), each looked at on its own session.
    let mut conns = Vec::new();
    for _ in 0..pool.size() {
        conns.push(pool.acquire().await.unwrap());
    }
    assert!(!conns.is_empty());
    let (mut generic, mut custom, mut kept) = (0i64, 0i64, Vec::<String>::new());
    for conn in &mut conns {
        let mode: String = sqlx::query("SHOW plan_cache_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "force_custom_plan");
        // Plans for keyed batches over tables in memory: no JIT, and a random page read
        // costed as on SSD (at the default, a batch's balance update scanned `accounts`).
        for (setting, expected) in [("jit", "off"), ("random_page_cost", "1.1")] {
            let value: String = sqlx::query(&format!("SHOW {setting}"))
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(value, expected, "{setting}");
        }
        for r in sqlx::query(
            "SELECT statement, CAST(generic_plans AS BIGINT), CAST(custom_plans AS BIGINT),
                    cardinality(parameter_types) FROM pg_prepared_statements",
        )
        .fetch_all(&mut **conn)
        .await
        .unwrap()
        {
            let statement: String = r.get(0);
            // A statement without parameters has the one plan whatever the mode.
            if r.get::<i32, _>(3) > 0 {
                generic += r.get::<i64, _>(1);
                custom += r.get::<i64, _>(2);
            } else {
                eprintln!("kept without parameters: {}", statement.replace('\n', " "));
            }
            kept.push(statement);
        }
    }
    assert_eq!(generic, 0, "a generic plan was used");
    assert!(
        custom > 100,
        "the mornings' statements were planned per execution ({custom})"
    );
    assert!(
        kept.iter().any(|k| k.contains("INSERT INTO decisions")),
        "the connections seen are the ones the mornings used"
    );
    assert!(
        !kept
            .iter()
            .any(|k| k.contains("MAX(decision_id) FROM decisions)")),
        "the chain's tail read is never kept: {kept:?}"
    );
}

/// A settlement day updates every account's balance, a batch of accounts in one
/// transaction (`ledger::post_many`). Migration 0023 leaves half of each `accounts` page
/// free, so that every one of those updates is HOT: the new row version goes on the same
/// page and no index gets a new entry. On full pages (the default fillfactor) few were:
/// 5,838 of 100,000 at 100,000 accounts (README, "Settlement at scale").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_s_balance_updates_are_hot_on_postgresql() {
    let Some(pg) = common::pg_database("a_day_s_balance_updates_are_hot_on_postgresql").await
    else {
        return;
    };
    const ACCOUNTS: usize = 3_000;
    let db = common::seeded_db(&pg.url, ACCOUNTS).await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|i| format!("A{i}")).collect();
    let keys: Vec<String> = ids
        .iter()
        .map(|a| format!("charge:{a}:2013-03-01"))
        .collect();
    let postings: Vec<feegate::ledger::Posting<'_>> = ids
        .iter()
        .zip(&keys)
        .map(|(account_id, key)| feegate::ledger::Posting {
            account_id,
            kind: feegate::ledger::EntryKind::Charge,
            amount_fen: -123,
            idempotency_key: key,
            business_date: "2013-03-01",
            posted_at: "2013-03-02T06:00:00",
            reference: "test",
        })
        .collect();
    // The counters of this session's transactions not yet reported to the cumulative
    // statistics (exact and at once), before and after the day's balance updates.
    const COUNTERS: &str = "SELECT pg_stat_get_xact_tuples_updated('accounts'::regclass),
                                   pg_stat_get_xact_tuples_hot_updated('accounts'::regclass)";
    let mut tx = db.pool.begin().await.unwrap();
    let before = sqlx::query(COUNTERS).fetch_one(&mut *tx).await.unwrap();
    let outcomes = feegate::ledger::post_many(&mut tx, &postings)
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, feegate::ledger::PostOutcome::Posted { .. })),
        "{outcomes:?}"
    );
    let after = sqlx::query(COUNTERS).fetch_one(&mut *tx).await.unwrap();
    let updated = after.get::<i64, _>(0) - before.get::<i64, _>(0);
    let hot = after.get::<i64, _>(1) - before.get::<i64, _>(1);
    assert_eq!(updated, ACCOUNTS as i64);
    assert_eq!(hot, updated, "balance updates that were not HOT");
    tx.rollback().await.unwrap();
    db.close().await;
}
