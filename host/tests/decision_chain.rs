//! The decision log's hash chain under concurrent writers: on PostgreSQL many tasks (as
//! several hosts would) append at once and `audit verify` still finds one unbroken chain;
//! a writer that skips the lock cannot fork it: a row's id is its position in the chain
//! (migration 0018), so a second row after the same tail collides on the primary key.

mod common;

use feegate::db::Db;
use feegate::decision_log::{self, DecisionRecord};
use feegate::policy::bindings::TariffOutput;
use feegate::policy::{Invocation, PolicyFailure};

fn failed() -> Invocation<TariffOutput> {
    Invocation {
        outcome: Err(PolicyFailure::Trap {
            detail: "test".into(),
        }),
        fuel_used: 7,
        guest_output: String::new(),
        // As if one batch call (contract 1.1) had made it and three others: the call's
        // size is chained too (migration 0024), so `audit verify` reads it back.
        call_decisions: Some(4),
    }
}

async fn append(db: &Db, account: &str) {
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let input = serde_json::json!({ "account": account });
    let invocation = failed();
    decision_log::record(
        &mut tx,
        &DecisionRecord {
            county: "xianyou",
            kind: "tariff",
            account_id: account,
            business_date: "2013-03-01",
            decided_at: "2013-03-02 00:10:00",
            component_sha256: "00",
            input: &input,
            invocation: &invocation,
            shadow: None,
        },
    )
    .await
    .unwrap();
    // Hold the transaction open a moment, as a settlement does, so appends overlap.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_postgresql_keep_one_unbroken_chain() {
    let Some(pg) = common::pg_database("decision_chain").await else {
        return;
    };
    let db = Db::open(&pg.url).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                append(&db, &format!("A{t}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = feegate::audit::verify(&db, None).await.unwrap();
    assert_eq!(report.rows, 120);
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);

    // Every row took the position after the tail it read: the ids are the chain's
    // positions, 1..=120 without a gap, although eight tasks appended at once.
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT decision_id FROM decisions ORDER BY decision_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(ids, (1..=120).collect::<Vec<i64>>());

    // A writer that skipped the lock read the same tail as the last append: it links to
    // the same row and takes the same position, and is refused.
    let (head_id, head_prev): (i64, String) = sqlx::query_as(
        "SELECT decision_id, prev_hash FROM decisions ORDER BY decision_id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let e = fork(&db, Some(head_id), &head_prev)
        .await
        .expect_err("a second successor of one row must be refused");
    assert!(e.to_string().contains("decisions_pkey"), "{e}");
    // One that does not name its position at all is refused too (no identity since
    // migration 0018), rather than taking a number that does not follow the chain.
    let e = fork(&db, None, &head_prev)
        .await
        .expect_err("an insert without a position must be refused");
    assert!(e.to_string().contains("decision_id"), "{e}");
    assert!(feegate::audit::verify(&db, None).await.unwrap().ok());
}

/// Inserts a decision row by hand, as a writer that skipped `decision_log::append`
/// would, at position `id` (`None`: without naming one) linking to `prev_hash`.
async fn fork(db: &Db, id: Option<i64>, prev_hash: &str) -> Result<(), sqlx::Error> {
    let (column, value) = match id {
        Some(id) => ("decision_id, ", format!("{id}, ")),
        None => ("", String::new()),
    };
    sqlx::query(&format!(
        "INSERT INTO decisions ({column}county, kind, account_id, business_date, decided_at, component_sha256, input_json,
                                outcome, fuel_used, guest_output, prev_hash, row_hash)
         VALUES ({value}'xianyou', 'tariff', 'X', '2013-03-01', '2013-03-02 00:10:00', '00', '{{}}', 'failed', 0, '', $1, 'f')"
    ))
    .bind(prev_hash)
    .execute(&db.pool)
    .await
    .map(|_| ())
}

#[tokio::test]
async fn a_fork_is_refused_on_sqlite_too() {
    // The SQLite twin of the PostgreSQL test above: SQLite on either backend.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite://{}/c.db", dir.path().display()))
        .await
        .unwrap();
    append(&db, "A1").await;
    append(&db, "A2").await;
    let e = fork(&db, Some(1), "")
        .await
        .expect_err("a second first row must be refused");
    assert!(
        e.to_string()
            .contains("UNIQUE constraint failed: decisions.decision_id"),
        "{e}"
    );
    assert!(
        feegate::audit::verify(&db, None)
            .await
            .unwrap()
            .breaks
            .is_empty()
    );
}

#[tokio::test]
async fn metrics_count_each_decision_once_across_scrapes() {
    let Some(tdb) = common::test_database("metrics_count_each_decision_once_across_scrapes").await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    let metrics = feegate::serve::metrics::Metrics::new();
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("feegate_decisions_total{county=\"xianyou\",kind=\"tariff\",outcome=\"failed\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(line(&metrics.render(&db).await.unwrap()), None);
    for i in 0..3 {
        append(&db, &format!("A{i}")).await;
    }
    assert_eq!(
        line(&metrics.render(&db).await.unwrap()).as_deref(),
        Some("3")
    );
    assert_eq!(
        line(&metrics.render(&db).await.unwrap()).as_deref(),
        Some("3")
    );
    append(&db, "A9").await;
    assert_eq!(
        line(&metrics.render(&db).await.unwrap()).as_deref(),
        Some("4")
    );
}

#[tokio::test]
async fn a_log_written_before_migration_0018_goes_on_after_its_last_id() {
    // A database at migration 0017 whose chained rows took their ids from the sequence,
    // with a gap (a rolled-back transaction on PostgreSQL leaves one); then the host of
    // this version opens it (0018) and appends: the new rows follow the last id and the
    // chain, and verify finds it whole.
    let Some(tdb) =
        common::test_database("a_log_written_before_migration_0018_goes_on_after_its_last_id")
            .await
    else {
        return;
    };
    sqlx::any::install_default_drivers();
    let sqlite = tdb.url.starts_with("sqlite:");
    let connect = if sqlite {
        format!("{}?mode=rwc", tdb.url)
    } else {
        tdb.url.clone()
    };
    let pool = sqlx::AnyPool::connect(&connect).await.unwrap();
    let mut m = if sqlite {
        sqlx::migrate!("../migrations/sqlite")
    } else {
        sqlx::migrate!("../migrations/postgres")
    };
    m.migrations = m
        .migrations
        .iter()
        .filter(|x| x.version < 18)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let mut conn = pool.acquire().await.unwrap();
    if sqlite {
        // As `Db::open` migrates: 0005 rebuilds a table, which needs foreign keys off.
        sqlx::Executor::execute(&mut *conn, "PRAGMA foreign_keys = OFF")
            .await
            .unwrap();
    }
    m.run_direct(&mut *conn).await.unwrap();
    let mut prev = String::new();
    for (account, id) in [("OLD1", None), ("OLD2", None), ("OLD3", Some(7_i64))] {
        let row = decision_log::ChainedRow {
            county: "xianyou".into(),
            kind: "tariff".into(),
            account_id: account.into(),
            business_date: "2013-03-01".into(),
            decided_at: "2013-03-02 00:10:00".into(),
            component_sha256: "00".into(),
            input_json: "{}".into(),
            output_json: None,
            outcome: "failed".into(),
            failure_json: Some("{}".into()),
            reason_code: None,
            explanation: None,
            fuel_used: 0,
            guest_output: String::new(),
            parameters_sha256: None,
            parameters: None,
            call_decisions: None,
        };
        let hash = decision_log::row_hash(&row, &prev);
        let (column, value) = match id {
            Some(id) => ("decision_id, ", format!("{id}, ")),
            None => ("", String::new()),
        };
        sqlx::query(&format!(
            "INSERT INTO decisions ({column}county, kind, account_id, business_date, decided_at, component_sha256, input_json,
                                    outcome, failure_json, fuel_used, guest_output, prev_hash, row_hash)
             VALUES ({value}'xianyou', 'tariff', $1, '2013-03-01', '2013-03-02 00:10:00', '00', '{{}}', 'failed', '{{}}', 0, '', $2, $3)"
        ))
        .bind(account)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .unwrap();
        prev = hash;
    }
    drop(conn);
    pool.close().await;

    let db = Db::open(&tdb.url).await.unwrap();
    append(&db, "NEW1").await;
    append(&db, "NEW2").await;
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT decision_id, account_id FROM decisions ORDER BY decision_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let got: Vec<(i64, &str)> = ids.iter().map(|(i, a)| (*i, a.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "OLD1"),
            (2, "OLD2"),
            (7, "OLD3"),
            (8, "NEW1"),
            (9, "NEW2")
        ]
    );
    let report = feegate::audit::verify(&db, None).await.unwrap();
    assert_eq!(report.rows, 5);
    assert!(report.ok(), "{:?}", report.breaks);
    // Migration 0024 recorded where the call size begins: after the old rows, so theirs
    // (NULL, the column did not exist) say nothing, and the new rows carry theirs.
    let sized_from: i64 = sqlx::query_scalar(
        "SELECT decision_id FROM decision_log_marks WHERE mark = 'call_decisions_from'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(sized_from, 8);
    let sizes: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT call_decisions FROM decisions ORDER BY decision_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(sizes, [None, None, None, Some(4), Some(4)]);
    // Neither the mark nor a row's call size can be changed in place, and a size below
    // one is refused.
    for sql in [
        "UPDATE decision_log_marks SET decision_id = 1",
        "DELETE FROM decision_log_marks",
        "UPDATE decisions SET call_decisions = 1 WHERE decision_id = 8",
    ] {
        assert!(
            sqlx::query(sql).execute(&db.pool).await.is_err(),
            "{sql} must be refused"
        );
    }
    let zero = sqlx::query(
        "INSERT INTO decisions (decision_id, county, kind, account_id, business_date, decided_at, component_sha256,
                                input_json, outcome, failure_json, fuel_used, guest_output, prev_hash, row_hash, call_decisions)
         VALUES (100, 'xianyou', 'tariff', 'X', '2013-03-01', '2013-03-02 00:10:00', '00', '{}', 'failed', '{}', 0, '', 'p', 'h', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(zero.to_string().contains("call_decisions"), "{zero}");
}
