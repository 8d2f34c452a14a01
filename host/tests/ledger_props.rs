//! Ledger invariants, property-tested: whatever sequence of charges, payments,
//! reversals and corrections arrives — retries and duplicates included — every
//! account's balance equals the sum of its ledger entries, each idempotency key moves
//! money once, and the ledger refuses to be edited.

mod common;

use chrono::NaiveDate;
use feegate::db::Db;
use feegate::ledger::{self, EntryKind, PostOutcome, Posting};
use feegate::onboarding::{self, Application};
use feegate::policy::set::RolloutStage;
use proptest::prelude::*;
use sqlx::Row;
use std::collections::BTreeMap;

const ACCOUNTS: [&str; 3] = ["3500000001", "3500000002", "3500000003"];

/// Three onboarded accounts on a fresh database for `test` (None: skipped).
async fn fresh_db(test: &str) -> Option<(common::TestDb, Db)> {
    let tdb = common::test_database(test).await?;
    let db = Db::open(&tdb.url).await.unwrap();
    onboarding::ensure_county(&db, "xianyou", "仙游县", RolloutStage::ApprovalGated)
        .await
        .unwrap();
    onboarding::ensure_station(&db, "XY-BT", "xianyou", "榜头供电所")
        .await
        .unwrap();
    let now = NaiveDate::from_ymd_opt(2013, 1, 1)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    for (i, account) in ACCOUNTS.iter().enumerate() {
        let app = Application {
            county: "xianyou".into(),
            station_id: "XY-BT".into(),
            customer_id: format!("C{i}"),
            customer_name: "测试".into(),
            master_mobile: Some("13900000000".into()),
            customer_class: "low-voltage-residential".into(),
            vulnerable: false,
            meter_id: format!("M{i}"),
            link: feegate_meter::fleet::MeterLink::Modbus(feegate_meter::registers::MeterAddress {
                gateway: "127.0.0.1:1".parse().unwrap(),
                // One meter per account: onboarding refuses a link already in use.
                unit: i as u8 + 1,
            }),
            ct_ratio: 1,
            pt_ratio: 1,
            account_id: account.to_string(),
            alarm_threshold_fen: 5000,
            auto_debit_fen: None,
            mobile: "13900000000".into(),
            second_mobile: None,
            keep_power: false,
            time_of_use: false,
        };
        onboarding::onboard(&db, &app, now).await.unwrap();
    }
    Some((tdb, db))
}

#[derive(Debug, Clone)]
struct Op {
    account: usize,
    kind: EntryKind,
    magnitude: i64,
    /// Keys come from a small pool so duplicates (retries) are frequent.
    key: u8,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..ACCOUNTS.len(),
        prop_oneof![
            Just(EntryKind::Charge),
            Just(EntryKind::Payment),
            Just(EntryKind::Reversal),
            Just(EntryKind::Correction),
            Just(EntryKind::Prepayment)
        ],
        1i64..2_000_000,
        0u8..24,
    )
        .prop_map(|(account, kind, magnitude, key)| Op {
            account,
            kind,
            magnitude,
            key,
        })
}

fn signed(op: &Op) -> i64 {
    match op.kind {
        EntryKind::Charge | EntryKind::Reversal => -op.magnitude,
        EntryKind::Correction if op.magnitude % 2 == 0 => -op.magnitude,
        _ => op.magnitude,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn balance_always_equals_the_sum_of_entries(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Some((_tdb, db)) = fresh_db("balance_always_equals_the_sum_of_entries").await else {
                return;
            };
            // Model: first posting per key wins; later ones with the same key move nothing.
            let mut first_by_key: BTreeMap<String, (usize, i64)> = BTreeMap::new();
            for op in &ops {
                let key = format!("k{}", op.key);
                let amount = signed(op);
                let mut tx = db.pool.begin().await.unwrap();
                let outcome = ledger::post(&mut tx, &Posting {
                    account_id: ACCOUNTS[op.account],
                    kind: op.kind,
                    amount_fen: amount,
                    idempotency_key: &key,
                    business_date: "2013-01-02",
                    posted_at: "2013-01-02 00:20:00",
                    reference: "proptest",
                }).await.unwrap();
                tx.commit().await.unwrap();
                match first_by_key.get(&key) {
                    None => {
                        assert!(matches!(outcome, PostOutcome::Posted { .. }), "first use of {key} must post");
                        first_by_key.insert(key, (op.account, amount));
                    }
                    Some(_) => assert!(matches!(outcome, PostOutcome::AlreadyPosted { .. }), "reused {key} must not post"),
                }
                let mut conn = db.pool.acquire().await.unwrap();
                let unbalanced = ledger::unbalanced_accounts(&mut conn).await.unwrap();
                assert!(unbalanced.is_empty(), "unbalanced after {op:?}: {unbalanced:?}");
            }
            for (i, account) in ACCOUNTS.iter().enumerate() {
                let expected: i64 = first_by_key.values().filter(|(a, _)| *a == i).map(|(_, amt)| amt).sum();
                let balance: i64 = sqlx::query("SELECT balance_fen FROM accounts WHERE account_id = $1")
                    .bind(*account).fetch_one(&db.pool).await.unwrap().try_get(0).unwrap();
                assert_eq!(balance, expected, "account {account}");
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// `post_many` (settlement's batched posting) is `post` one at a time: the same
    /// outcome per posting, the same balances, and every entry's `balance_after_fen` the
    /// account's running sum — whatever the batches hold (repeated accounts and keys too).
    #[test]
    fn batches_post_exactly_as_one_at_a_time(
        ops in proptest::collection::vec(op(), 1..60),
        cuts in proptest::collection::vec(1usize..8, 1..20),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Some((_tdb, db)) = fresh_db("batches_post_exactly_as_one_at_a_time").await else {
                return;
            };
            let keys: Vec<String> = ops.iter().map(|op| format!("k{}", op.key)).collect();
            let postings: Vec<Posting<'_>> = ops.iter().zip(&keys).map(|(op, key)| Posting {
                account_id: ACCOUNTS[op.account],
                kind: op.kind,
                amount_fen: signed(op),
                idempotency_key: key,
                business_date: "2013-01-02",
                posted_at: "2013-01-02 00:20:00",
                reference: "proptest",
            }).collect();
            let mut first_by_key: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < postings.len() {
                let batch = &postings[at..(at + cut.next().unwrap()).min(postings.len())];
                let mut tx = db.pool.begin().await.unwrap();
                let outcomes = ledger::post_many(&mut tx, batch).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(outcomes.len(), batch.len());
                for (i, (p, outcome)) in batch.iter().zip(&outcomes).enumerate() {
                    let op = &ops[at + i];
                    if first_by_key.contains_key(p.idempotency_key) {
                        assert!(matches!(outcome, PostOutcome::AlreadyPosted { .. }), "reused {} must not post", p.idempotency_key);
                    } else {
                        assert!(matches!(outcome, PostOutcome::Posted { .. }), "first use of {} must post", p.idempotency_key);
                        first_by_key.insert(p.idempotency_key, (op.account, p.amount_fen));
                    }
                }
                at += batch.len();
            }
            let mut conn = db.pool.acquire().await.unwrap();
            assert!(ledger::unbalanced_accounts(&mut conn).await.unwrap().is_empty());
            drop(conn); // SQLite: the pool's one connection
            for (i, account) in ACCOUNTS.iter().enumerate() {
                let expected: i64 = first_by_key.values().filter(|(a, _)| *a == i).map(|(_, amt)| amt).sum();
                let balance: i64 = sqlx::query("SELECT balance_fen FROM accounts WHERE account_id = $1")
                    .bind(*account).fetch_one(&db.pool).await.unwrap().try_get(0).unwrap();
                assert_eq!(balance, expected, "account {account}");
                // Each entry's balance_after is the running sum of the account's entries.
                let rows = sqlx::query("SELECT amount_fen, balance_after_fen FROM ledger_entries WHERE account_id = $1 ORDER BY entry_id")
                    .bind(*account).fetch_all(&db.pool).await.unwrap();
                let mut running = 0i64;
                for r in rows {
                    running += r.try_get::<i64, _>(0).unwrap();
                    assert_eq!(r.try_get::<i64, _>(1).unwrap(), running, "account {account}");
                }
            }
        });
    }
}

#[tokio::test]
async fn a_batch_with_one_wrong_sign_moves_nothing() {
    let Some((_tdb, db)) = fresh_db("a_batch_with_one_wrong_sign_moves_nothing").await else {
        return;
    };
    let posting = |account_id, kind, amount_fen, idempotency_key| Posting {
        account_id,
        kind,
        amount_fen,
        idempotency_key,
        business_date: "2013-01-02",
        posted_at: "2013-01-02 00:20:00",
        reference: "batch",
    };
    let mut tx = db.pool.begin().await.unwrap();
    let err = ledger::post_many(
        &mut tx,
        &[
            posting(ACCOUNTS[0], EntryKind::Charge, -300, "charge:0"),
            posting(ACCOUNTS[1], EntryKind::Charge, 300, "charge:1"),
        ],
    )
    .await
    .unwrap_err();
    drop(tx);
    assert!(err.to_string().contains("cannot carry amount 300"), "{err}");
    let entries: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(entries, 0);
    let mut tx = db.pool.begin().await.unwrap();
    let err = ledger::post_many(
        &mut tx,
        &[
            posting(ACCOUNTS[0], EntryKind::Charge, -300, "charge:0"),
            posting("no-such-account", EntryKind::Charge, -300, "charge:x"),
        ],
    )
    .await
    .unwrap_err();
    drop(tx);
    assert!(
        err.to_string().contains("no-such-account does not exist"),
        "{err}"
    );
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(
        ledger::unbalanced_accounts(&mut conn)
            .await
            .unwrap()
            .is_empty()
    );
    let balance: i64 = sqlx::query("SELECT balance_fen FROM accounts WHERE account_id = $1")
        .bind(ACCOUNTS[0])
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(balance, 0, "a failed batch moves no balance");
}

#[tokio::test]
async fn the_ledger_refuses_edits_and_deletions() {
    let Some((_tdb, db)) = fresh_db("the_ledger_refuses_edits_and_deletions").await else {
        return;
    };
    let mut tx = db.pool.begin().await.unwrap();
    ledger::post(
        &mut tx,
        &Posting {
            account_id: ACCOUNTS[0],
            kind: EntryKind::Payment,
            amount_fen: 10_000,
            idempotency_key: "payment:app:1",
            business_date: "2013-01-02",
            posted_at: "2013-01-02 12:00:00",
            reference: "app:1",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let update = sqlx::query("UPDATE ledger_entries SET amount_fen = 1")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = sqlx::query("DELETE FROM ledger_entries")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
}

#[tokio::test]
async fn a_payment_with_a_charge_sign_is_refused_before_anything_moves() {
    let Some((_tdb, db)) =
        fresh_db("a_payment_with_a_charge_sign_is_refused_before_anything_moves").await
    else {
        return;
    };
    let mut tx = db.pool.begin().await.unwrap();
    let err = ledger::post(
        &mut tx,
        &Posting {
            account_id: ACCOUNTS[1],
            kind: EntryKind::Payment,
            amount_fen: -500,
            idempotency_key: "bad",
            business_date: "2013-01-02",
            posted_at: "2013-01-02 12:00:00",
            reference: "bad",
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot carry amount -500"),
        "{err}"
    );
    drop(tx);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 0);
}
