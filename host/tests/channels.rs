//! Payment channels end to end on loopback: the real router, signed notifications,
//! the inbox, the ledger, reconnection through the meter simulator, reconciliation and
//! auto-debit against a fake bank.

mod common;

use feegate::bench::payments::{CHANNELS, bench_config, bench_sign, disconnect};
use feegate::channels::auth;
use feegate::channels::service::Service;
use feegate::demo::Scenario;
use feegate_meter::registers::RelayState;
use serde_json::{Value, json};
use sqlx::Row;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const ACCOUNT: &str = "3500000002";

fn alipay_key() -> rsa::RsaPrivateKey {
    auth::parse_private_key(include_str!("data/alipay_test_private.pem")).unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fake channel: signs like the real one and posts.
struct FakeChannel {
    client: reqwest::Client,
    addr: SocketAddr,
    rsa: rsa::RsaPrivateKey,
}

impl FakeChannel {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: reqwest::Client::new(),
            addr,
            rsa: alipay_key(),
        }
    }

    async fn post_raw(
        &self,
        channel: &str,
        body: &str,
        ts: Option<i64>,
        sig: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("http://{}/channels/{channel}/notify", self.addr))
            .body(body.to_string());
        if let Some(ts) = ts {
            req = req.header(auth::TIMESTAMP_HEADER, ts.to_string());
        }
        if let Some(sig) = sig {
            req = req.header(auth::SIGNATURE_HEADER, sig);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn post(&self, channel: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let ts = unix_now();
        let sig = bench_sign(channel, ts, body.as_bytes(), &self.rsa);
        self.post_raw(channel, &body, Some(ts), Some(sig)).await
    }
}

fn pay(txn: &str, account: &str, amount: &str) -> Value {
    json!({"txn_id": txn, "account_id": account, "amount": amount, "currency": "CNY", "type": "payment"})
}

struct Setup {
    scenario: Scenario,
    service: Service,
    channel: FakeChannel,
}

async fn setup(db_url: Option<String>) -> Setup {
    let mut opts = common::small_county(4, 1, 11);
    opts.db_url = db_url;
    let scenario = Scenario::new(&opts, &[]).await.unwrap();
    scenario
        .advance(opts.start.and_hms_opt(10, 0, 0).unwrap())
        .unwrap();
    let host = Arc::new(scenario.host.clone());
    let service = Service::start(
        scenario.host.db.clone(),
        bench_config().unwrap(),
        scenario.host.clock.clone(),
        Some(host),
    )
    .await
    .unwrap();
    let addr = service.spawn_loopback().await.unwrap();
    Setup {
        scenario,
        service,
        channel: FakeChannel::new(addr),
    }
}

/// A channel service started afresh on `db` (a restart), without reconnection.
async fn restart(db: feegate::db::Db, scenario: &Scenario) -> Service {
    Service::start(
        db,
        bench_config().unwrap(),
        scenario.host.clock.clone(),
        None,
    )
    .await
    .unwrap()
}

async fn scalar(db: &feegate::db::Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn balance(db: &feegate::db::Db, account: &str) -> i64 {
    scalar(
        db,
        &format!("SELECT balance_fen FROM accounts WHERE account_id = '{account}'"),
    )
    .await
}

async fn assert_ledger_balanced(db: &feegate::db::Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    let bad = feegate::ledger::unbalanced_accounts(&mut conn)
        .await
        .unwrap();
    assert!(bad.is_empty(), "balance ≠ Σ ledger for {bad:?}");
}

#[tokio::test]
async fn every_channel_applies_once_and_retries_are_duplicates() {
    let Some(tdb) =
        common::test_database("every_channel_applies_once_and_retries_are_duplicates").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let before = balance(db, ACCOUNT).await;
    for (i, channel) in CHANNELS.iter().enumerate() {
        let txn = format!("T{i}");
        let (status, answer) = s.channel.post(channel, &pay(&txn, ACCOUNT, "12.34")).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (200, Some("applied")),
            "{channel}: {answer}"
        );
        // The channel retries (lost answer): nothing moves again.
        let (status, answer) = s.channel.post(channel, &pay(&txn, ACCOUNT, "12.34")).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (200, Some("duplicate")),
            "{channel}: {answer}"
        );
    }
    assert_eq!(balance(db, ACCOUNT).await, before + 5 * 1234);
    // Same txn id on two channels are two payments.
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'payment' AND reference LIKE '%:T0'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM payment_inbox WHERE status = 'applied'"
        )
        .await,
        5
    );
    assert_ledger_balanced(db).await;
}

#[tokio::test]
async fn forged_and_invalid_notifications_write_nothing() {
    let Some(tdb) = common::test_database("forged_and_invalid_notifications_write_nothing").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let entries_before = scalar(db, "SELECT COUNT(*) FROM ledger_entries").await;
    let now = unix_now();
    let good = pay("F1", ACCOUNT, "10.00").to_string();
    let hmac =
        |secret: &str, ts: i64, body: &str| auth::hmac_sign(secret.as_bytes(), ts, body.as_bytes());
    let forger = auth::parse_private_key(include_str!("data/forger_private.pem")).unwrap();
    let app_secret = "bench-secret-of-app";
    struct Case {
        name: &'static str,
        channel: &'static str,
        body: String,
        ts: Option<i64>,
        sig: Option<String>,
        status: u16,
        code: &'static str,
    }
    let signed = |channel: &'static str, body: Value| {
        let b = body.to_string();
        let sig = bench_sign(channel, now, b.as_bytes(), &alipay_key());
        (b, Some(now), Some(sig))
    };
    let mut cases = vec![
        Case {
            name: "wrong secret",
            channel: "app",
            body: good.clone(),
            ts: Some(now),
            sig: Some(hmac("somebody-elses-secret", now, &good)),
            status: 401,
            code: "bad-signature",
        },
        Case {
            name: "secret of another channel",
            channel: "app",
            body: good.clone(),
            ts: Some(now),
            sig: Some(hmac("bench-secret-of-kiosk", now, &good)),
            status: 401,
            code: "bad-signature",
        },
        Case {
            name: "stale timestamp",
            channel: "app",
            body: good.clone(),
            ts: Some(now - 3600),
            sig: Some(hmac(app_secret, now - 3600, &good)),
            status: 401,
            code: "stale-timestamp",
        },
        Case {
            name: "no signature",
            channel: "app",
            body: good.clone(),
            ts: Some(now),
            sig: None,
            status: 401,
            code: "missing-auth",
        },
        Case {
            name: "no timestamp",
            channel: "app",
            body: good.clone(),
            ts: None,
            sig: Some(hmac(app_secret, now, &good)),
            status: 401,
            code: "missing-auth",
        },
        Case {
            name: "tampered body",
            channel: "app",
            body: good.replace("10.00", "99.00"),
            ts: Some(now),
            sig: Some(hmac(app_secret, now, &good)),
            status: 401,
            code: "bad-signature",
        },
        Case {
            name: "alipay signed by another key",
            channel: "alipay",
            body: good.clone(),
            ts: Some(now),
            sig: Some(auth::rsa_sign(&forger, now, good.as_bytes())),
            status: 401,
            code: "bad-signature",
        },
        Case {
            name: "alipay with an HMAC",
            channel: "alipay",
            body: good.clone(),
            ts: Some(now),
            sig: Some(hmac(app_secret, now, &good)),
            status: 401,
            code: "bad-signature",
        },
        Case {
            name: "oversize body (signed correctly)",
            channel: "app",
            body: format!(
                "{{\"pad\": \"{}\"}}",
                "x".repeat(feegate::channels::MAX_BODY_BYTES)
            ),
            ts: Some(now),
            sig: None,
            status: 413,
            code: "body-too-large",
        },
        Case {
            name: "unknown channel",
            channel: "wechat",
            body: good.clone(),
            ts: Some(now),
            sig: Some(hmac(app_secret, now, &good)),
            status: 404,
            code: "unknown-channel",
        },
    ];
    for (name, channel, body, status, code) in [
        (
            "wrong currency",
            "app",
            json!({"type": "payment", "txn_id": "F2", "account_id": ACCOUNT, "amount": "10.00", "currency": "USD"}),
            422,
            "wrong-currency",
        ),
        (
            "negative amount",
            "kiosk",
            json!({"type": "payment", "txn_id": "F3", "account_id": ACCOUNT, "amount": "-10.00", "currency": "CNY"}),
            422,
            "bad-amount",
        ),
        (
            "float amount",
            "kiosk",
            json!({"type": "payment", "txn_id": "F4", "account_id": ACCOUNT, "amount": 10.5, "currency": "CNY"}),
            422,
            "bad-amount",
        ),
        (
            "sub-fen amount",
            "alipay",
            json!({"type": "payment", "txn_id": "F5", "account_id": ACCOUNT, "amount": "10.005", "currency": "CNY"}),
            422,
            "bad-amount",
        ),
        (
            "over the maximum",
            "bank-transfer",
            json!({"type": "payment", "txn_id": "F6", "account_id": ACCOUNT, "amount": "50000.01", "currency": "CNY"}),
            422,
            "amount-over-limit",
        ),
        (
            "unknown account",
            "online-banking",
            json!({"type": "payment", "txn_id": "F7", "account_id": "9999999999", "amount": "10.00", "currency": "CNY"}),
            422,
            "unknown-account",
        ),
        (
            "not JSON",
            "app",
            json!("just a string"),
            400,
            "bad-request",
        ),
        (
            "a refund with a misspelt type field (would be a credit if guessed)",
            "bank-transfer",
            json!({"txn_id": "F8", "account_id": ACCOUNT, "amount": "6.00", "currency": "CNY", "txn_type": "refund", "original_txn_id": "P1"}),
            400,
            "bad-request",
        ),
    ] {
        let (body, ts, sig) = signed(channel, body);
        cases.push(Case {
            name,
            channel,
            body,
            ts,
            sig,
            status,
            code,
        });
    }
    for c in cases {
        let (status, answer) = s.channel.post_raw(c.channel, &c.body, c.ts, c.sig).await;
        assert_eq!(
            (status, answer["code"].as_str().unwrap()),
            (c.status, c.code),
            "{}: {answer}",
            c.name
        );
        assert!(
            !answer["message"].as_str().unwrap().is_empty(),
            "{}: says what was wrong",
            c.name
        );
    }
    assert_eq!(scalar(db, "SELECT COUNT(*) FROM payment_inbox").await, 0);
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM ledger_entries").await,
        entries_before
    );
}

#[tokio::test]
async fn same_txn_posted_20_times_concurrently_is_applied_once() {
    let Some(tdb) =
        common::test_database("same_txn_posted_20_times_concurrently_is_applied_once").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let before = balance(db, ACCOUNT).await;
    let channel = Arc::new(s.channel);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = channel.clone();
        tasks.spawn(async move { c.post("alipay", &pay("C20", ACCOUNT, "88.00")).await });
    }
    let mut codes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (_, answer) = r.unwrap();
        codes.push(answer["code"].as_str().unwrap().to_string());
    }
    codes.sort();
    assert_eq!(
        codes.iter().filter(|c| *c == "applied").count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "duplicate").count(),
        19,
        "{codes:?}"
    );
    assert_eq!(balance(db, ACCOUNT).await, before + 8800);
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key = 'payment:alipay:C20'"
        )
        .await,
        1
    );
    assert_ledger_balanced(db).await;
}

#[tokio::test]
async fn retry_with_another_amount_is_a_conflict_and_moves_nothing() {
    let Some(tdb) =
        common::test_database("retry_with_another_amount_is_a_conflict_and_moves_nothing").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let before = balance(db, ACCOUNT).await;
    let (_, a) = s.channel.post("kiosk", &pay("K1", ACCOUNT, "50.00")).await;
    assert_eq!(a["code"], "applied");
    for (body, what) in [
        (pay("K1", ACCOUNT, "500.00"), "amount"),
        (pay("K1", "3500000003", "50.00"), "account"),
    ] {
        let (status, a) = s.channel.post("kiosk", &body).await;
        assert_eq!(
            (status, a["code"].as_str().unwrap()),
            (409, "conflict"),
            "{what}: {a}"
        );
        assert!(
            a["message"].as_str().unwrap().contains("reconciliation"),
            "{a}"
        );
    }
    assert_eq!(balance(db, ACCOUNT).await, before + 5000);
}

#[tokio::test]
async fn reversals_are_new_entries_and_may_arrive_before_their_payment() {
    let Some(tdb) =
        common::test_database("reversals_are_new_entries_and_may_arrive_before_their_payment")
            .await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let before = balance(db, ACCOUNT).await;
    let reversal = |txn: &str, amount: &str| json!({"txn_id": txn, "account_id": ACCOUNT, "amount": amount, "currency": "CNY", "type": "refund", "original_txn_id": "P2"});
    // Out of order: the refund first, then payment 2 before payment 1.
    let (status, a) = s.channel.post("app", &reversal("R1", "30.00")).await;
    assert_eq!(
        (status, a["code"].as_str().unwrap()),
        (409, "unknown-original"),
        "{a}"
    );
    assert_eq!(
        s.channel.post("app", &pay("P2", ACCOUNT, "100.00")).await.1["code"],
        "applied"
    );
    assert_eq!(
        s.channel.post("app", &pay("P1", ACCOUNT, "20.00")).await.1["code"],
        "applied"
    );
    // The channel retries the refund: now it applies.
    let (_, a) = s.channel.post("app", &reversal("R1", "30.00")).await;
    assert_eq!(a["code"], "applied", "{a}");
    assert_eq!(
        s.channel.post("app", &reversal("R1", "30.00")).await.1["code"],
        "duplicate"
    );
    // A refund of P2 that names another account: P2 is there, but not that account's;
    // retrying cannot help, so it is refused for good (422), not "retry later" (409).
    let mut wrong_account = reversal("R9", "30.00");
    wrong_account["account_id"] = json!("3500000003");
    let (status, a) = s.channel.post("app", &wrong_account).await;
    assert_eq!(
        (status, a["code"].as_str().unwrap()),
        (422, "original-account-mismatch"),
        "{a}"
    );
    // More than is left of the payment is refused.
    let (_, a) = s.channel.post("app", &reversal("R2", "70.01")).await;
    assert_eq!(a["code"], "reversal-too-large", "{a}");
    assert_eq!(
        s.channel.post("app", &reversal("R3", "70.00")).await.1["code"],
        "applied"
    );
    assert_eq!(balance(db, ACCOUNT).await, before + 12000 - 10000);
    let rows = sqlx::query("SELECT kind, amount_fen, reference FROM ledger_entries WHERE idempotency_key LIKE 'reversal:app:%' ORDER BY entry_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("reversal".into(), -3000, "reverses:app:P2".into()),
            ("reversal".into(), -7000, "reverses:app:P2".into())
        ]
    );
    // The payment's own entry is untouched.
    assert_eq!(
        scalar(
            db,
            "SELECT amount_fen FROM ledger_entries WHERE idempotency_key = 'payment:app:P2'"
        )
        .await,
        10000
    );
    assert_ledger_balanced(db).await;
}

#[tokio::test]
async fn crash_between_recording_and_applying_is_applied_once_after_restart() {
    let Some(tdb) =
        common::test_database("crash_between_recording_and_applying_is_applied_once_after_restart")
            .await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = s.scenario.host.db.clone();
    let before = balance(&db, ACCOUNT).await;
    s.service
        .failure_points
        .crash_after_inbox
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, a) = s
        .channel
        .post("bank-transfer", &pay("X1", ACCOUNT, "66.00"))
        .await;
    assert_eq!(
        (status, a["code"].as_str().unwrap()),
        (503, "unavailable"),
        "not acknowledged: {a}"
    );
    // Recorded durably, not applied.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM payment_inbox WHERE channel_txn_id = 'X1' AND status = 'received'"
        )
        .await,
        1
    );
    assert_eq!(balance(&db, ACCOUNT).await, before);
    // Restart: a new service on the same database file sweeps the inbox.
    drop(s.service);
    let db2 = feegate::db::Db::open(&tdb.url).await.unwrap();
    let restarted = restart(db2.clone(), &s.scenario).await;
    assert_eq!(restarted.recovered, 1);
    assert_eq!(balance(&db2, ACCOUNT).await, before + 6600);
    // The channel never got an answer and retries: a duplicate, nothing moves.
    let channel = FakeChannel::new(restarted.spawn_loopback().await.unwrap());
    let (status, a) = channel
        .post("bank-transfer", &pay("X1", ACCOUNT, "66.00"))
        .await;
    assert_eq!(
        (status, a["code"].as_str().unwrap()),
        (200, "duplicate"),
        "{a}"
    );
    // A second restart finds nothing to do.
    let again = restart(db2.clone(), &s.scenario).await;
    assert_eq!(again.recovered, 0);
    assert_eq!(balance(&db2, ACCOUNT).await, before + 6600);
    assert_eq!(
        scalar(
            &db2,
            "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key = 'payment:bank-transfer:X1'"
        )
        .await,
        1
    );
    assert_ledger_balanced(&db2).await;
}

#[tokio::test]
async fn periodic_sweep_applies_rows_left_received_once_they_are_a_minute_old() {
    use feegate::channels::inbox::recover;
    let Some(tdb) = common::test_database(
        "periodic_sweep_applies_rows_left_received_once_they_are_a_minute_old",
    )
    .await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let before = balance(db, ACCOUNT).await;
    s.service
        .failure_points
        .crash_after_inbox
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        s.channel
            .post("kiosk", &pay("SW1", ACCOUNT, "7.00"))
            .await
            .1["code"],
        "unavailable"
    );
    let clock = s.scenario.host.clock.clone();
    let minute_ago = |c: &Arc<dyn feegate::clock::Clock>| c.now() - chrono::Duration::minutes(1);
    // Too fresh: a writer may be about to apply it.
    assert_eq!(
        recover(db, clock.as_ref(), None, Some(minute_ago(&clock)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(balance(db, ACCOUNT).await, before);
    s.scenario
        .advance(clock.now() + chrono::Duration::minutes(2))
        .unwrap();
    assert_eq!(
        recover(db, clock.as_ref(), None, Some(minute_ago(&clock)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        recover(db, clock.as_ref(), None, Some(minute_ago(&clock)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(balance(db, ACCOUNT).await, before + 700);
}

#[tokio::test]
async fn payment_reconnects_a_disconnected_account_at_once() {
    let Some(tdb) =
        common::test_database("payment_reconnects_a_disconnected_account_at_once").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let disconnected = disconnect(&s.scenario, 1).await.unwrap();
    let account = &disconnected[0];
    assert_eq!(s.scenario.fleet.relay_state(0).unwrap(), RelayState::Open);
    // Not enough: still below the reconnect line (balance −10 yuan + 5 yuan).
    assert_eq!(
        s.channel.post("app", &pay("RC0", account, "5.00")).await.1["code"],
        "applied"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(scalar(db, "SELECT COUNT(*) FROM relay_commands").await, 0);
    // Enough: the close-allowed command goes out without any daily-job step.
    assert_eq!(
        s.channel
            .post("app", &pay("RC1", account, "100.00"))
            .await
            .1["code"],
        "applied"
    );
    let reconnector = s.service.reconnector.as_ref().unwrap();
    for _ in 0..100 {
        if !reconnector.latencies().is_empty() && reconnector.busy() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latencies = reconnector.latencies();
    assert_eq!(latencies.len(), 1, "one command issued");
    assert!(latencies[0] < Duration::from_secs(2), "{latencies:?}");
    let row = sqlx::query("SELECT command, status FROM relay_commands WHERE account_id = $1")
        .bind(account)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1)),
        ("close-allowed".into(), "awaiting-customer".into())
    );
    assert_eq!(
        s.scenario.fleet.relay_state(0).unwrap(),
        RelayState::CloseAllowed
    );
    // The customer is told to press the button.
    let notices = scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM sms_outbox WHERE account_id = '{account}' AND kind = 'press-button-to-restore'"
        ),
    )
    .await;
    assert_eq!(notices, 1, "press-the-button notice queued once");
    // A further payment does not issue a second command; a retry of it is a duplicate.
    assert_eq!(
        s.channel.post("app", &pay("RC2", account, "10.00")).await.1["code"],
        "applied"
    );
    assert_eq!(
        s.channel.post("app", &pay("RC2", account, "10.00")).await.1["code"],
        "duplicate"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(scalar(db, "SELECT COUNT(*) FROM relay_commands").await, 1);
    // Each applied payment is acknowledged by SMS once, retries included, by the outbox
    // job's sweep (the channel's answer does not wait for it); a second sweep adds none.
    assert_eq!(s.scenario.host.notify_channel_payments().await.unwrap(), 3);
    assert_eq!(s.scenario.host.notify_channel_payments().await.unwrap(), 0);
    let paid: Vec<String> = sqlx::query(
        "SELECT dedup_key FROM sms_outbox WHERE account_id = $1 AND kind = 'payment-received' ORDER BY dedup_key",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(paid, ["paid:app:RC0", "paid:app:RC1", "paid:app:RC2"]);
}

/// Reconciliation against a statement with every kind of finding.
#[tokio::test]
async fn reconcile_reports_every_mismatch_and_opens_work_orders_once() {
    use feegate::reconcile::{Finding, read_statement, reconcile};
    let Some(tdb) =
        common::test_database("reconcile_reports_every_mismatch_and_opens_work_orders_once").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    for (txn, amount) in [
        ("S1", "10.00"),
        ("S2", "20.00"),
        ("S3", "30.00"),
        ("S4", "40.00"),
    ] {
        assert_eq!(
            s.channel
                .post("bank-transfer", &pay(txn, ACCOUNT, amount))
                .await
                .1["code"],
            "applied"
        );
    }
    let rev = json!({"txn_id": "S5", "account_id": ACCOUNT, "amount": "5.00", "currency": "CNY", "type": "reversal", "original_txn_id": "S1"});
    assert_eq!(
        s.channel.post("bank-transfer", &rev).await.1["code"],
        "applied"
    );
    // Another channel's payments are not this statement's business.
    assert_eq!(
        s.channel.post("app", &pay("S9", ACCOUNT, "9.00")).await.1["code"],
        "applied"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.csv");
    std::fs::write(
        &path,
        format!(
            "txn_id,type,account_id,amount,currency\n\
             S1,payment,{ACCOUNT},10.00,CNY\n\
             S2,payment,{ACCOUNT},25.00,CNY\n\
             S5,reversal,{ACCOUNT},5.00,CNY\n\
             S6,payment,{ACCOUNT},60.00,CNY\n\
             S7,payment,7777777777,70.00,CNY\n\
             S4,payment,3500000003,40.00,CNY\n"
        ),
    )
    .unwrap();
    let statement = read_statement(&path).unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2013, 1, 1).unwrap();
    let now = day.and_hms_opt(23, 0, 0).unwrap();
    let report = reconcile(db, "bank-transfer", day, &statement, now)
        .await
        .unwrap();
    let got: Vec<(Finding, &str)> = report
        .items
        .iter()
        .map(|i| (i.finding, i.txn_id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Finding::Matched, "S1"),
            (Finding::Matched, "S5"),
            (Finding::MissingOnOurSide, "S6"),
            (Finding::MissingOnOurSide, "S7"),
            (Finding::MissingOnTheirSide, "S3"),
            (Finding::AmountMismatch, "S2"),
            (Finding::AmountMismatch, "S4"),
        ]
    );
    assert_eq!(report.work_orders_opened, 5);
    // Run again: nothing new opened, nothing corrected.
    let balance_before = balance(db, ACCOUNT).await;
    let again = reconcile(db, "bank-transfer", day, &statement, now)
        .await
        .unwrap();
    assert_eq!(again.work_orders_opened, 0);
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'reconciliation'"
        )
        .await,
        5
    );
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'reconciliation' AND account_id IS NULL"
        )
        .await,
        1,
        "S7 names an account we do not have"
    );
    assert_eq!(balance(db, ACCOUNT).await, balance_before);
    // A malformed statement is refused with every bad line named at once.
    std::fs::write(
        &path,
        "txn_id,type,account_id,amount,currency\nS1,payment,A,1.001,CNY\nS2,payment,A,5.00,CNY\nS3,payment,A,2.00,USD\nS2,payment,A,5.00,CNY\n",
    )
    .unwrap();
    let e = read_statement(&path).unwrap_err().to_string();
    assert!(e.contains("3 bad line(s)"), "{e}");
    assert!(e.contains("line 2") && e.contains("1.001"), "{e}");
    assert!(e.contains("line 4") && e.contains("USD"), "{e}");
    assert!(
        e.contains("line 5") && e.contains("listed twice (first on line 3)"),
        "{e}"
    );
}

/// The fake bank: answers debit requests from a script, records what it got.
#[derive(Clone, Default)]
struct FakeBank {
    script: Arc<std::sync::Mutex<Vec<u16>>>,
    got: Arc<std::sync::Mutex<Vec<Value>>>,
}

async fn fake_bank(bank: FakeBank) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/debits",
            post(
                |axum::extract::State(b): axum::extract::State<FakeBank>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    // The request is signed with the bank channel's secret.
                    let ts = headers
                        .get(auth::TIMESTAMP_HEADER)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .parse::<i64>()
                        .unwrap();
                    let sig = headers
                        .get(auth::SIGNATURE_HEADER)
                        .unwrap()
                        .to_str()
                        .unwrap();
                    assert_eq!(
                        sig,
                        auth::hmac_sign(b"bench-secret-of-bank-transfer", ts, &body)
                    );
                    b.got
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    let status = b.script.lock().unwrap().pop().unwrap_or(202);
                    axum::http::StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(bank);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn auto_debit_one_in_flight_retried_then_applied_or_given_up() {
    use feegate::autodebit::{self, BankAdapter};
    use feegate::channels::config::AutoDebitConfig;
    let Some(tdb) =
        common::test_database("auto_debit_one_in_flight_retried_then_applied_or_given_up").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let db = &s.scenario.host.db;
    let bank = FakeBank::default();
    // Script is popped from the end: first attempt 503, then accepted.
    *bank.script.lock().unwrap() = vec![202, 503];
    let addr = fake_bank(bank.clone()).await;
    let config = AutoDebitConfig {
        bank_url: format!("http://{addr}/debits"),
        channel: "bank-transfer".into(),
        max_attempts: 2,
        retry_after_seconds: 600,
        result_timeout_seconds: 86_400,
    };
    let adapter = BankAdapter {
        client: reqwest::Client::new(),
        config: config.clone(),
        secret: b"bench-secret-of-bank-transfer".to_vec(),
    };
    let t0 = s.scenario.host.clock.now();
    assert!(
        autodebit::create_request(db, ACCOUNT, 20_000, Some(1), t0)
            .await
            .unwrap()
    );
    // Never two in flight for one account.
    assert!(
        !autodebit::create_request(db, ACCOUNT, 20_000, Some(2), t0)
            .await
            .unwrap()
    );
    let r = autodebit::dispatch(db, &adapter, t0).await.unwrap();
    assert_eq!(
        (r.sent, r.retrying, r.failed),
        (0, 1, 0),
        "bank down: retried later"
    );
    // Not yet due.
    assert_eq!(
        autodebit::dispatch(db, &adapter, t0).await.unwrap(),
        Default::default()
    );
    let t1 = t0 + chrono::Duration::seconds(600);
    let r = autodebit::dispatch(db, &adapter, t1).await.unwrap();
    assert_eq!((r.sent, r.retrying, r.failed), (1, 0, 0));
    let got = bank.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0]["request_id"], got[1]["request_id"],
        "the same request id on every attempt"
    );
    assert_eq!(got[1]["amount"], "200.00");
    let request_id = got[1]["request_id"].as_str().unwrap().to_string();
    // The bank's result arrives on its notify endpoint as a payment.
    let before = balance(db, ACCOUNT).await;
    let result = json!({"type": "payment", "txn_id": "BANK-D1", "account_id": ACCOUNT, "amount": "200.00", "currency": "CNY", "debit_request_id": request_id});
    assert_eq!(
        s.channel.post("bank-transfer", &result).await.1["code"],
        "applied"
    );
    assert_eq!(balance(db, ACCOUNT).await, before + 20_000);
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM auto_debits WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    // The next request may go now; the bank refuses it twice → given up, work order.
    assert!(
        autodebit::create_request(db, ACCOUNT, 20_000, Some(3), t1)
            .await
            .unwrap()
    );
    let fail = |txn: &str, req: &str| json!({"txn_id": txn, "account_id": ACCOUNT, "type": "debit-failed", "debit_request_id": req, "reason": "insufficient funds"});
    let svc2_cfg = {
        let mut c = bench_config().unwrap();
        c.auto_debit = Some(config.clone());
        c
    };
    let svc2 = Service::start(db.clone(), svc2_cfg, s.scenario.host.clock.clone(), None)
        .await
        .unwrap();
    let ch2 = FakeChannel::new(svc2.spawn_loopback().await.unwrap());
    autodebit::dispatch(db, &adapter, t1).await.unwrap();
    let req2 = bank.got.lock().unwrap().last().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ch2.post("bank-transfer", &fail("BANK-F1", &req2)).await.1["code"],
        "recorded"
    );
    assert_eq!(scalar(db, &format!("SELECT COUNT(*) FROM auto_debits WHERE request_id = '{req2}' AND status = 'requested'")).await, 1);
    autodebit::dispatch(db, &adapter, t1 + chrono::Duration::seconds(3600))
        .await
        .unwrap();
    assert_eq!(
        ch2.post("bank-transfer", &fail("BANK-F2", &req2)).await.1["code"],
        "recorded"
    );
    assert_eq!(
        scalar(
            db,
            &format!(
                "SELECT COUNT(*) FROM auto_debits WHERE request_id = '{req2}' AND status = 'failed'"
            )
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'auto-debit-failed'"
        )
        .await,
        1
    );
    // A result for a request we never made is refused.
    assert_eq!(
        ch2.post("bank-transfer", &fail("BANK-F3", "AD-nope"))
            .await
            .1["code"],
        "unknown-debit"
    );
    assert_ledger_balanced(db).await;
}

/// The county's warning stage for the test account on 2013-01-`day`.
async fn assess(host: &feegate::job::Host, day: u32) -> feegate::warning::WarningReport {
    let today = chrono::NaiveDate::from_ymd_opt(2013, 1, day).unwrap();
    feegate::warning::assess(
        &host.db,
        &host.engine,
        &host.county.county,
        &host.county.snapshot(),
        &[ACCOUNT.to_string()],
        today,
        today.and_hms_opt(10, 0, 0).unwrap(),
        &feegate::config::SettlementConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn warning_decisions_asking_for_auto_debit_become_one_request() {
    use feegate::autodebit;
    let Some(tdb) =
        common::test_database("warning_decisions_asking_for_auto_debit_become_one_request").await
    else {
        return;
    };
    let s = setup(Some(tdb.url.clone())).await;
    let host = &s.scenario.host;
    let db = &host.db;
    // The customer signs up for a 200 yuan auto-debit, and the balance falls to 10 yuan
    // (under the 50 yuan alarm line).
    sqlx::query("UPDATE agreements SET auto_debit_fen = 20000 WHERE agreement_id = (SELECT agreement_id FROM accounts WHERE account_id = $1)")
        .bind(ACCOUNT)
        .execute(&db.pool)
        .await
        .unwrap();
    let now = host.clock.now();
    let bal = balance(db, ACCOUNT).await;
    let mut tx = db.pool.begin().await.unwrap();
    feegate::ledger::post(
        &mut tx,
        &feegate::ledger::Posting {
            account_id: ACCOUNT,
            kind: feegate::ledger::EntryKind::Correction,
            amount_fen: 1000 - bal,
            idempotency_key: "test:low",
            business_date: "2013-01-01",
            posted_at: "2013-01-01 10:00:00",
            reference: "test",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let report = assess(host, 1).await;
    assert_eq!(report.auto_debit_requested, 1, "{report:?}");
    assert_eq!(autodebit::collect_requests(db, now).await.unwrap(), 1);
    assert_eq!(
        autodebit::collect_requests(db, now).await.unwrap(),
        0,
        "idempotent"
    );
    let (amount, status): (i64, String) = {
        let r = sqlx::query("SELECT amount_fen, status FROM auto_debits WHERE account_id = $1")
            .bind(ACCOUNT)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((amount, status.as_str()), (20000, "requested"));
    // The next day's warning asks again while the first is in flight: no second request.
    assess(host, 2).await;
    let next_day = now + chrono::Duration::days(1);
    assert_eq!(autodebit::collect_requests(db, next_day).await.unwrap(), 0);
    assert_eq!(scalar(db, "SELECT COUNT(*) FROM auto_debits").await, 1);
    // A decision older than a day is never turned into a debit later.
    sqlx::query("UPDATE auto_debits SET status = 'failed'")
        .execute(&db.pool)
        .await
        .unwrap();
    let much_later = now + chrono::Duration::days(5);
    assert_eq!(
        autodebit::collect_requests(db, much_later).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn postgres_concurrent_duplicates_crash_recovery_and_reconcile() {
    let Some(pg) = common::pg_database("postgres_channels").await else {
        return;
    };
    let s = setup(Some(pg.url.clone())).await;
    let db = s.scenario.host.db.clone();
    let before = balance(&db, ACCOUNT).await;
    let channel = Arc::new(s.channel);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let c = channel.clone();
        // 20 distinct transactions, each posted twice at once.
        tasks.spawn(async move {
            c.post(
                CHANNELS[i % 5],
                &pay(&format!("PG{}", i % 20), ACCOUNT, "1.00"),
            )
            .await
        });
    }
    let mut applied = 0;
    while let Some(r) = tasks.join_next().await {
        let (_, a) = r.unwrap();
        assert!(a["code"] == "applied" || a["code"] == "duplicate", "{a}");
        applied += usize::from(a["code"] == "applied");
    }
    assert_eq!(applied, 20);
    assert_eq!(balance(&db, ACCOUNT).await, before + 2000);
    s.service
        .failure_points
        .crash_after_inbox
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        channel.post("kiosk", &pay("PGX", ACCOUNT, "3.00")).await.1["code"],
        "unavailable"
    );
    let restarted = restart(db.clone(), &s.scenario).await;
    assert_eq!(restarted.recovered, 1);
    assert_eq!(balance(&db, ACCOUNT).await, before + 2300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiosk.csv");
    std::fs::write(&path, format!("txn_id,type,account_id,amount,currency\nPGX,payment,{ACCOUNT},3.00,CNY\nPGY,payment,{ACCOUNT},1.00,CNY\n")).unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2013, 1, 1).unwrap();
    let txns = feegate::reconcile::read_statement(&path).unwrap();
    let r =
        feegate::reconcile::reconcile(&db, "kiosk", day, &txns, day.and_hms_opt(23, 0, 0).unwrap())
            .await
            .unwrap();
    // kiosk got PG2, PG7, PG12, PG17 (i % 5 == 2) besides PGX.
    assert_eq!(r.count(feegate::reconcile::Finding::Matched), 1);
    assert_eq!(r.count(feegate::reconcile::Finding::MissingOnOurSide), 1);
    assert_eq!(r.count(feegate::reconcile::Finding::MissingOnTheirSide), 4);
    let again =
        feegate::reconcile::reconcile(&db, "kiosk", day, &txns, day.and_hms_opt(23, 0, 0).unwrap())
            .await
            .unwrap();
    assert_eq!(again.work_orders_opened, 0);
    assert_ledger_balanced(&db).await;
}
