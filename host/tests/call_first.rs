//! Call-before-reconnection work orders (复电前电话联系): when the cutoff policy answers
//! `call-first` for a customer who paid after a disconnection, or fails, the host opens
//! such an order and nothing reconnects the account until a person has called the
//! customer. These tests check that a person can then complete the order
//! (`payment::complete_call_first`, `Host::complete_call_first`, `feegate call-first
//! done`), which reconnects exactly once, and what is refused.

mod common;

use feegate::county::ActiveComponent;
use feegate::demo::Scenario;
use feegate::ledger::{self, EntryKind, Posting};
use feegate::payment::{self, CallFirstCompletion, Reconnection};
use feegate::policy::PolicyKind;
use sqlx::Row;

/// A 4-meter county run 2 days; every account in credit is then disconnected since
/// 2012-11-01 (past Xianyou's 720 h call-first limit).
async fn disconnected(test: &str) -> Option<(Scenario, Vec<String>, common::TestDb)> {
    let (opts, db) = common::small_county_db(test, 4, 3, 5).await?;
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(2).await.unwrap();
    let accounts = common::disconnect_accounts_in_credit(&s.host.db, "2012-11-01 10:00:00").await;
    assert!(!accounts.is_empty());
    Some((s, accounts, db))
}

async fn reconnect(s: &Scenario, account: &str) -> Reconnection {
    payment::reconnect_if_due(
        &s.host.db,
        &s.host.engine,
        &s.host.county.county,
        &s.host.county.snapshot(),
        account,
        s.host.clock.now(),
        &s.host.config.relay,
    )
    .await
    .unwrap()
}

async fn count(s: &Scenario, sql: &str, account: &str) -> i64 {
    sqlx::query(sql)
        .bind(account)
        .fetch_one(&s.host.db.pool)
        .await
        .unwrap()
        .get(0)
}

async fn commands(s: &Scenario, account: &str) -> i64 {
    count(
        s,
        "SELECT COUNT(*) FROM relay_commands WHERE account_id = $1",
        account,
    )
    .await
}

/// The account's open call-before-reconnection order.
async fn open_order(s: &Scenario, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT work_order_id FROM work_orders WHERE account_id = $1 AND kind = 'call-before-reconnection' AND status = 'open'",
    )
    .bind(account)
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap()
}

/// (status, decided_by, note, decided_at) of a work order.
async fn order_row(
    s: &Scenario,
    id: i64,
) -> (String, Option<String>, Option<String>, Option<String>) {
    let r = sqlx::query(
        "SELECT status, decided_by, note, decided_at FROM work_orders WHERE work_order_id = $1",
    )
    .bind(id)
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

async fn complete(s: &Scenario, id: i64, who: &str) -> CallFirstCompletion {
    payment::complete_call_first(
        &s.host.db,
        id,
        who,
        "called the customer",
        s.host.clock.now(),
        &s.host.config.relay,
    )
    .await
    .unwrap()
}

/// A correction of `fen` on `account` (negative: into arrears).
async fn correct(s: &Scenario, account: &str, fen: i64, key: &str) {
    let mut tx = s.host.db.pool.begin().await.unwrap();
    ledger::post(
        &mut tx,
        &Posting {
            account_id: account,
            kind: EntryKind::Correction,
            amount_fen: fen,
            idempotency_key: key,
            business_date: "2013-01-03",
            posted_at: "2013-01-03 09:00:00",
            reference: "test",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn balance(s: &Scenario, account: &str) -> i64 {
    count(
        s,
        "SELECT balance_fen FROM accounts WHERE account_id = $1",
        account,
    )
    .await
}

/// The shipped policy answers call-first after 720 h disconnected: the order is open,
/// the relays job's sweep leaves the account dark; a person completes the order, which
/// marks it done and creates exactly one direct-close command (issued at once), and a
/// second completion commands nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_first_order_completed_by_a_person_reconnects_once() {
    let Some((s, accounts, _db)) =
        disconnected("a_call_first_order_completed_by_a_person_reconnects_once").await
    else {
        return;
    };
    for a in &accounts {
        assert_eq!(reconnect(&s, a).await, Reconnection::CallFirst, "{a}");
    }
    let account = accounts[0].as_str();
    let id = open_order(&s, account).await;
    // The sweep skips an account with an open call-first order: nothing reconnects it.
    s.host.drive_relays().await.unwrap();
    assert_eq!(commands(&s, account).await, 0);
    assert_eq!(order_row(&s, id).await.0, "open");

    let (done, report) = s
        .host
        .complete_call_first(id, "staff-bt", "customer at home, reconnect")
        .await
        .unwrap();
    let CallFirstCompletion::Reconnecting { command_id } = done else {
        panic!("not reconnecting: {done:?}");
    };
    assert!(report.is_some(), "the command is issued at once");
    let (status, by, note, at) = order_row(&s, id).await;
    assert_eq!(status, "done");
    assert_eq!(by.as_deref(), Some("staff-bt"));
    assert_eq!(note.as_deref(), Some("customer at home, reconnect"));
    assert!(at.is_some());
    let r = sqlx::query(
        "SELECT command_id, command, decision_key FROM relay_commands WHERE account_id = $1",
    )
    .bind(account)
    .fetch_all(&s.host.db.pool)
    .await
    .unwrap();
    assert_eq!(r.len(), 1, "exactly one relay command");
    assert_eq!(r[0].get::<i64, _>(0), command_id);
    assert_eq!(r[0].get::<String, _>(1), "direct-close");
    assert_eq!(r[0].get::<String, _>(2), format!("work-order:{id}"));
    let relay: String =
        sqlx::query_scalar("SELECT relay_state FROM accounts WHERE account_id = $1")
            .bind(account)
            .fetch_one(&s.host.db.pool)
            .await
            .unwrap();
    assert_eq!(relay, "closed", "the meter confirmed the close");

    // Twice: the order is done already, nothing new is commanded.
    let again = complete(&s, id, "staff-bt2").await;
    assert_eq!(
        again,
        CallFirstCompletion::NotOpen {
            status: "done".into(),
            decided_by: Some("staff-bt".into())
        }
    );
    assert!(
        again.message(id).contains("already done"),
        "{}",
        again.message(id)
    );
    let (again, report) = s
        .host
        .complete_call_first(id, "staff-bt2", "")
        .await
        .unwrap();
    assert!(matches!(again, CallFirstCompletion::NotOpen { .. }));
    assert!(report.is_none());
    assert_eq!(commands(&s, account).await, 1);
    assert_eq!(order_row(&s, id).await.1.as_deref(), Some("staff-bt"));
    // The other accounts are still waiting for their calls.
    for a in &accounts[1..] {
        assert_eq!(commands(&s, a).await, 0, "{a}");
    }
}

/// Four people complete the same order at once, each from their own process (a pool of
/// its own on the same database): exactly one reconnects, the others are told it is done
/// already — on SQLite too, where a transaction that read before another process wrote
/// used to fail with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_from_several_processes_reconnect_once_and_fail_none() {
    let Some((s, accounts, tdb)) =
        disconnected("concurrent_completions_from_several_processes_reconnect_once_and_fail_none")
            .await
    else {
        return;
    };
    let account = accounts[0].as_str();
    assert_eq!(reconnect(&s, account).await, Reconnection::CallFirst);
    let id = open_order(&s, account).await;
    let now = s.host.clock.now();
    // Another process is writing (the daily job, a payment) while they start: on SQLite
    // their transactions read before its commit and write after it.
    let other = feegate::db::Db::open(&tdb.url).await.unwrap();
    let mut other = other.pool.acquire().await.unwrap();
    let mut writing = feegate::db::begin_write(&mut other).await.unwrap();
    sqlx::query("UPDATE accounts SET relay_state = relay_state WHERE account_id = $1")
        .bind(&accounts[1])
        .execute(&mut *writing)
        .await
        .unwrap();
    let mut people = tokio::task::JoinSet::new();
    for n in 0..4 {
        let db = feegate::db::Db::open(&tdb.url).await.unwrap();
        let relay = s.host.config.relay.clone();
        people.spawn(async move {
            payment::complete_call_first(&db, id, &format!("staff-{n}"), "", now, &relay).await
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    writing.commit().await.unwrap();
    let outcomes: Vec<_> = people.join_all().await;
    let reconnecting = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CallFirstCompletion::Reconnecting { .. })))
        .count();
    let told_done = outcomes
        .iter()
        .filter(
            |o| matches!(o, Ok(CallFirstCompletion::NotOpen { status, .. }) if status == "done"),
        )
        .count();
    assert_eq!((reconnecting, told_done), (1, 3), "{outcomes:?}");
    assert_eq!(commands(&s, account).await, 1, "exactly one relay command");
}

/// A cutoff component that traps on reconnection: the account is held and a call-first
/// order opened; the sweep leaves it; a person completes the order, which reconnects
/// and releases the reconnection hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reconnection_policy_leaves_an_order_a_person_completes() {
    let Some((s, accounts, _db)) =
        disconnected("a_failing_reconnection_policy_leaves_an_order_a_person_completes").await
    else {
        return;
    };
    let wasm = std::fs::read(common::component("hostile_policy")).unwrap();
    let component = s.host.engine.load(PolicyKind::Cutoff, &wasm).unwrap();
    s.host.county.activate(ActiveComponent {
        component,
        parameters_json: r#"{"mode":"trap"}"#.into(),
    });
    let account = accounts[0].as_str();
    assert_eq!(reconnect(&s, account).await, Reconnection::PolicyFailed);
    let id = open_order(&s, account).await;
    let held = "SELECT COUNT(*) FROM holds WHERE account_id = $1 AND stage = 'reconnection' AND released_at IS NULL";
    assert_eq!(count(&s, held, account).await, 1);
    s.host.drive_relays().await.unwrap();
    assert_eq!(commands(&s, account).await, 0, "the sweep skips it");
    assert_eq!(order_row(&s, id).await.0, "open");

    let done = complete(&s, id, "ops").await;
    assert!(
        matches!(done, CallFirstCompletion::Reconnecting { .. }),
        "{done:?}"
    );
    assert_eq!(order_row(&s, id).await.0, "done");
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM relay_commands WHERE account_id = $1 AND command = 'direct-close'",
            account
        )
        .await,
        1
    );
    assert_eq!(count(&s, held, account).await, 0, "the hold is released");
    assert_eq!(
        complete(&s, id, "ops").await,
        CallFirstCompletion::NotOpen {
            status: "done".into(),
            decided_by: Some("ops".into())
        }
    );
    assert_eq!(commands(&s, account).await, 1);
}

/// A balance below zero now: refused, the order stays open and nothing is commanded;
/// once the customer has paid, the same order completes (here through the CLI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_first_order_is_refused_while_the_balance_is_below_zero() {
    let Some((s, accounts, db)) =
        disconnected("a_call_first_order_is_refused_while_the_balance_is_below_zero").await
    else {
        return;
    };
    let account = accounts[0].as_str();
    assert_eq!(reconnect(&s, account).await, Reconnection::CallFirst);
    let id = open_order(&s, account).await;
    let b = balance(&s, account).await;
    correct(&s, account, -(b + 500), "test:arrears").await;
    let refused = complete(&s, id, "staff-bt").await;
    assert_eq!(
        refused,
        CallFirstCompletion::InArrears { balance_fen: -500 }
    );
    assert!(
        refused.message(id).contains("must pay first"),
        "{}",
        refused.message(id)
    );
    assert_eq!(order_row(&s, id).await, ("open".into(), None, None, None));
    assert_eq!(commands(&s, account).await, 0);

    // The CLI says the same and fails.
    let dir = tempfile::tempdir().unwrap();
    let cli = common::Cli {
        dir: dir.path(),
        db: &db.url,
    };
    let n = id.to_string();
    let args = [
        "call-first",
        "done",
        "--work-order",
        &n,
        "--note",
        "customer called back",
    ];
    let (code, _, stderr) = cli.run(&args);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("must pay first"), "{stderr}");
    assert_eq!(order_row(&s, id).await.0, "open");

    // Paid: an order done by nobody named is refused; then the CLI completes it, once.
    correct(&s, account, 10_000, "test:paid").await;
    let blank: Vec<&str> = args.iter().copied().chain(["--who", "  "]).collect();
    let (code, _, stderr) = cli.run(&blank);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("say who called the customer"), "{stderr}");
    assert_eq!(order_row(&s, id).await.0, "open");
    let out = cli.ok(&args);
    assert!(out.contains("direct-close relay command"), "{out}");
    let (status, by, note, _) = order_row(&s, id).await;
    assert_eq!(
        (status.as_str(), by.as_deref(), note.as_deref()),
        ("done", Some("ops-test"), Some("customer called back"))
    );
    assert_eq!(commands(&s, account).await, 1);
    let (code, _, stderr) = cli.run(&args);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("already done"), "{stderr}");
    assert_eq!(commands(&s, account).await, 1);
}

/// Unknown ids, other kinds, a relay command in flight and a relay no longer open are
/// refused with what is wrong, and nothing is marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_orders_and_busy_relays_are_refused_with_the_reason() {
    let Some((s, accounts, _db)) =
        disconnected("other_orders_and_busy_relays_are_refused_with_the_reason").await
    else {
        return;
    };
    let account = accounts[0].as_str();
    assert_eq!(reconnect(&s, account).await, Reconnection::CallFirst);
    let id = open_order(&s, account).await;

    assert_eq!(
        complete(&s, 987_654, "ops").await,
        CallFirstCompletion::NotFound
    );
    let follow_up: i64 = sqlx::query_scalar(
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
         SELECT 'offline-follow-up', account_id, station_id, 'test:follow-up', 'open', '{}', '2013-01-03 09:00:00'
         FROM accounts WHERE account_id = $1 RETURNING work_order_id",
    )
    .bind(account)
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap();
    let wrong = complete(&s, follow_up, "ops").await;
    assert_eq!(
        wrong,
        CallFirstCompletion::WrongKind {
            kind: "offline-follow-up".into()
        }
    );
    assert!(wrong.message(follow_up).contains("offline-follow-up"));
    assert_eq!(order_row(&s, follow_up).await.0, "open");

    // A command in flight (someone else's close): nothing marked.
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let other = feegate::relay::create(
        &mut conn,
        account,
        "test:in-flight",
        feegate_meter::registers::RelayCommand::CloseAllowed,
        s.host.clock.now(),
        &s.host.config.relay,
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn); // SQLite: the pool's one connection
    assert_eq!(
        complete(&s, id, "ops").await,
        CallFirstCompletion::CommandInFlight
    );
    assert_eq!(order_row(&s, id).await.0, "open");
    // That command ended and closed the relay: nothing to reconnect.
    sqlx::query("UPDATE relay_commands SET status = 'confirmed' WHERE command_id = $1")
        .bind(other)
        .execute(&s.host.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE accounts SET relay_state = 'closed' WHERE account_id = $1")
        .bind(account)
        .execute(&s.host.db.pool)
        .await
        .unwrap();
    assert_eq!(
        complete(&s, id, "ops").await,
        CallFirstCompletion::RelayNotOpen {
            relay_state: "closed".into()
        }
    );
    assert_eq!(order_row(&s, id).await.0, "open");
    assert_eq!(commands(&s, account).await, 1, "only the other command");
}
