//! Messages (issue 5): the durable outbox against a fake HTTP SMS gateway on loopback —
//! retries and backoff, a gateway that is down, slow or failing, signed delivery
//! receipts (forged, duplicate, out of order), "warned" only on a delivered receipt,
//! escalation to an offline follow-up, the crash window between the gateway accepting
//! a message and the outbox recording it, quiet hours and limits from the policy set,
//! the second contact, and the phone-number check holding automatic disconnection.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveDateTime};
use feegate::accountview::{AccountFacts, arrears_notice_delivered_at, level_already_notified};
use feegate::config::OutboxConfig;
use feegate::demo::Scenario;
use feegate::floor::FloorRefusal;
use feegate::outbox::{
    self, DeliveryReceipt, GatewayError, NoticeRequest, OutgoingSms, Queued, ReceiptStatus,
    SmsGateway,
};
use feegate::policy::bindings::NoticeKind;
use feegate::sms::receipts::RECEIPTS_PATH;
use feegate::sms::{Auth, HttpGateway, HttpGatewayConfig, ReceiptsState, receipts_router};
use sqlx::Row;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ACCOUNT: &str = "3500000001";
const COUNTY: &str = "xianyou";

fn t(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

/// How the fake gateway answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Accepts, honouring idempotency keys (a key seen before is a duplicate, not sent).
    Accept,
    /// Answers only after this long.
    Slow(Duration),
    /// Answers this HTTP status.
    Error(u16),
}

/// A fake SMS gateway: checks our signature, records every request, counts real sends.
struct Fake {
    auth: Auth,
    mode: Mutex<Mode>,
    requests: Mutex<Vec<serde_json::Value>>,
    sent_keys: Mutex<BTreeSet<String>>,
    unsigned: Mutex<u32>,
}

impl Fake {
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn keys(&self) -> Vec<String> {
        let r = self.requests.lock().unwrap();
        r.iter()
            .map(|v| v["idempotency_key"].as_str().unwrap().to_string())
            .collect()
    }
    fn sends(&self) -> usize {
        self.sent_keys.lock().unwrap().len()
    }
}

async fn fake_send(State(f): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if f.auth
        .verify(
            h(feegate::sms::HEADER_KEY_ID),
            h(feegate::sms::HEADER_TIMESTAMP),
            h(feegate::sms::HEADER_SIGNATURE),
            &body,
            feegate::sms::unix_now(),
        )
        .is_err()
    {
        *f.unsigned.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    f.requests.lock().unwrap().push(v.clone());
    let mode = *f.mode.lock().unwrap();
    match mode {
        Mode::Error(code) => {
            (StatusCode::from_u16(code).unwrap(), "gateway trouble").into_response()
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            axum::Json(serde_json::json!({"message_id": "late", "status": "accepted"}))
                .into_response()
        }
        Mode::Accept => {
            let key = v["idempotency_key"].as_str().unwrap().to_string();
            let new = f.sent_keys.lock().unwrap().insert(key.clone());
            let status = if new { "accepted" } else { "duplicate" };
            axum::Json(serde_json::json!({"message_id": format!("gw-{key}"), "status": status}))
                .into_response()
        }
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn start_fake(auth: Auth) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        auth,
        mode: Mutex::new(Mode::Accept),
        requests: Mutex::new(Vec::new()),
        sent_keys: Mutex::new(BTreeSet::new()),
        unsigned: Mutex::new(0),
    });
    let router = axum::Router::new()
        .route("/v1/messages", axum::routing::post(fake_send))
        .with_state(fake.clone());
    (fake, serve(router).await)
}

/// A small simulated county with the HTTP gateway pointed at the fake, and the receipts
/// endpoint served on loopback.
struct Rig {
    s: Scenario,
    fake: Arc<Fake>,
    fake_url: String,
    gw: HttpGateway,
    auth: Auth,
    receipts_url: String,
    cfg: OutboxConfig,
    http: reqwest::Client,
    _db: Option<common::TestDb>,
}

async fn rig_with(db_url: Option<String>, policy_set: Option<PathBuf>) -> Rig {
    let mut opts = common::small_county(4, 1, 11);
    opts.db_url = db_url;
    if let Some(p) = policy_set {
        opts.policy_set = p;
    }
    let s = Scenario::new(&opts, &[]).await.expect("scenario");
    let auth = Auth::new("feegate-test", b"shared-secret-for-tests".to_vec());
    let (fake, addr) = start_fake(auth.clone()).await;
    let fake_url = format!("http://{addr}/v1/messages");
    let mut cfg = HttpGatewayConfig::new(fake_url.clone(), auth.clone());
    cfg.timeout = Duration::from_millis(300);
    let gw = HttpGateway::new(cfg).unwrap();
    let receipts = receipts_router(ReceiptsState {
        db: s.host.db.clone(),
        clock: s.clock.clone(),
        auth: auth.clone(),
        outbox: OutboxConfig::default(),
    });
    let raddr = serve(receipts).await;
    Rig {
        s,
        fake,
        fake_url,
        gw,
        auth,
        receipts_url: format!("http://{raddr}{RECEIPTS_PATH}"),
        cfg: OutboxConfig::default(),
        http: reqwest::Client::new(),
        _db: None,
    }
}

/// `rig_with` on a fresh database for `test` on the backend under test
/// (`common::test_database`); None: skipped.
async fn test_rig(test: &str, policy_set: Option<PathBuf>) -> Option<Rig> {
    let db = common::test_database(test).await?;
    let mut r = rig_with(Some(db.url.clone()), policy_set).await;
    r._db = Some(db);
    Some(r)
}

async fn rig(test: &str) -> Option<Rig> {
    test_rig(test, None).await
}

impl Rig {
    async fn queue(&self, kind: NoticeKind, level: u8, key: &str, now: NaiveDateTime) -> Queued {
        let mut conn = self.s.host.db.pool.acquire().await.unwrap();
        let req = NoticeRequest {
            warning_level: level,
            amount_fen: (kind == NoticeKind::PaymentReceived).then_some(5000),
            ..NoticeRequest::event(kind, ACCOUNT, now.date(), -1234, key.to_string())
        };
        outbox::queue_notice(
            &mut conn,
            &self.s.host.engine,
            COUNTY,
            &self.s.host.county.snapshot(),
            &req,
            now,
        )
        .await
        .unwrap()
    }

    async fn deliver(&self, now: NaiveDateTime) -> outbox::OutboxReport {
        self.deliver_with(&self.gw, now).await
    }

    async fn deliver_with(&self, gw: &dyn SmsGateway, now: NaiveDateTime) -> outbox::OutboxReport {
        self.s.advance(now).unwrap();
        outbox::deliver(
            &self.s.host.db,
            gw,
            COUNTY,
            &self.s.host.county.snapshot().messages,
            &self.cfg,
            now,
        )
        .await
        .unwrap()
    }

    /// (status, attempts, send_round, next_attempt_at, follow_up_work_order_id) of a row.
    async fn row(&self, id: i64) -> (String, i64, i64, Option<String>, Option<i64>) {
        let r = sqlx::query("SELECT status, attempts, send_round, next_attempt_at, follow_up_work_order_id FROM sms_outbox WHERE message_id = $1")
            .bind(id)
            .fetch_one(&self.s.host.db.pool)
            .await
            .unwrap();
        (
            r.try_get(0).unwrap(),
            r.try_get(1).unwrap(),
            r.try_get(2).unwrap(),
            r.try_get(3).unwrap(),
            r.try_get(4).unwrap(),
        )
    }

    async fn only_message(&self) -> i64 {
        let ids: Vec<i64> = sqlx::query(
            "SELECT message_id FROM sms_outbox WHERE account_id = $1 ORDER BY message_id",
        )
        .bind(ACCOUNT)
        .fetch_all(&self.s.host.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        ids[0]
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    /// Posts a receipt signed with `auth`; returns the HTTP status and the outcome.
    async fn post_receipt(&self, auth: &Auth, body: &str) -> (u16, Option<String>) {
        let mut req = self
            .http
            .post(&self.receipts_url)
            .header("content-type", "application/json");
        for (n, v) in auth.headers(body.as_bytes()) {
            req = req.header(n, v);
        }
        let r = req.body(body.to_string()).send().await.unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (status, v["outcome"].as_str().map(str::to_string))
    }

    async fn receipt(&self, key: &str, status: ReceiptStatus) -> (u16, Option<String>) {
        let body = serde_json::to_string(&DeliveryReceipt {
            idempotency_key: key.to_string(),
            status,
            gateway_message_id: Some(format!("gw-{key}")),
            error_code: None,
            reported_at: None,
        })
        .unwrap();
        self.post_receipt(&self.auth, &body).await
    }

    /// Sets the account in arrears since `since` (test set-up of the floor's facts).
    async fn in_arrears_since(&self, since: &str) {
        sqlx::query("UPDATE accounts SET arrears_since = $2 WHERE account_id = $1")
            .bind(ACCOUNT)
            .bind(since)
            .execute(&self.s.host.db.pool)
            .await
            .unwrap();
    }

    /// The warning level the policy sees as already notified.
    async fn level_notified(&self) -> u8 {
        let mut conn = self.s.host.db.pool.acquire().await.unwrap();
        level_already_notified(&mut conn, ACCOUNT).await.unwrap()
    }

    /// When the arrears notice of the episode since `since` was delivered.
    async fn arrears_delivered(&self, since: &str) -> Option<NaiveDateTime> {
        let mut conn = self.s.host.db.pool.acquire().await.unwrap();
        let since = NaiveDate::parse_from_str(since, "%Y-%m-%d").ok();
        arrears_notice_delivered_at(&mut conn, ACCOUNT, since)
            .await
            .unwrap()
    }

    async fn mobile_verified(&self) -> bool {
        let mut conn = self.s.host.db.pool.acquire().await.unwrap();
        AccountFacts::load(&mut conn, ACCOUNT)
            .await
            .unwrap()
            .mobile_verified
    }

    async fn floor_refusals(&self, now: NaiveDateTime, automatic: bool) -> Vec<FloorRefusal> {
        let mut conn = self.s.host.db.pool.acquire().await.unwrap();
        let facts = AccountFacts::load(&mut conn, ACCOUNT).await.unwrap();
        let ff = feegate::cutoff::floor_facts(&mut conn, COUNTY, &facts, now, automatic)
            .await
            .unwrap();
        self.s.host.county.floor.check(&ff)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_down_slow_or_failing_is_an_error_of_its_kind() {
    let Some(r) = rig("a_gateway_that_is_down_slow_or_failing_is_an_error_of_its_kind").await
    else {
        return;
    };
    let sms = OutgoingSms {
        idempotency_key: "sms-1-1".into(),
        mobile: "13900000000".into(),
        body: "【仙游供电】测试".into(),
        segments: 1,
        now: t("2013-01-08 09:00"),
    };
    // Accepted.
    assert!(matches!(
        r.gw.send(&sms).await,
        Ok(outbox::SendOutcome::Accepted {
            gateway_message_id: Some(_)
        })
    ));
    // Slow: longer than the 300 ms timeout.
    r.fake.set(Mode::Slow(Duration::from_millis(1500)));
    assert!(matches!(
        r.gw.send(&sms).await,
        Err(GatewayError::Timeout(_))
    ));
    // Errors.
    for code in [500, 502, 503, 429, 400] {
        r.fake.set(Mode::Error(code));
        match r.gw.send(&sms).await {
            Err(GatewayError::Status { status, .. }) => assert_eq!(status, code),
            other => panic!("HTTP {code}: {other:?}"),
        }
    }
    // Down: nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = HttpGateway::new(HttpGatewayConfig::new(
        format!("http://127.0.0.1:{port}/v1/messages"),
        r.auth.clone(),
    ))
    .unwrap();
    assert!(matches!(
        down.send(&sms).await,
        Err(GatewayError::Unreachable(_))
    ));
    // Every request we made was signed correctly.
    assert_eq!(*r.fake.unsigned.lock().unwrap(), 0);
    assert_eq!(r.fake.keys().len(), 7);
    // Configured with the wrong secret: the gateway refuses us (401), an error.
    r.fake.set(Mode::Accept);
    let wrong = HttpGateway::new(HttpGatewayConfig::new(
        r.fake_url.clone(),
        Auth::new("feegate-test", b"wrong".to_vec()),
    ))
    .unwrap();
    assert!(matches!(
        wrong.send(&sms).await,
        Err(GatewayError::Status { status: 401, .. })
    ));
    assert_eq!(*r.fake.unsigned.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_back_off_exponentially_then_the_warning_is_escalated() {
    let Some(r) = rig("failed_attempts_back_off_exponentially_then_the_warning_is_escalated").await
    else {
        return;
    };
    let t0 = t("2013-01-08 09:00");
    assert_eq!(
        r.queue(NoticeKind::Arrears, 3, "arrears-1", t0).await,
        Queued::Queued
    );
    let id = r.only_message().await;
    r.fake.set(Mode::Error(503));
    // Attempt n fails; the next is due 5, 10, 20, 40 min later (cfg: first 5 min, ×2).
    let mut now = t0;
    for (attempt, wait_min) in [(1, 5), (2, 10), (3, 20), (4, 40)] {
        let rep = r.deliver(now).await;
        assert_eq!((rep.failed, rep.given_up), (1, 0), "attempt {attempt}");
        let (status, attempts, _, next, _) = r.row(id).await;
        assert_eq!((status.as_str(), attempts), ("queued", attempt));
        let next = NaiveDateTime::parse_from_str(&next.unwrap(), "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            next - now,
            chrono::Duration::minutes(wait_min),
            "attempt {attempt}"
        );
        // Not due a minute before: nothing is sent.
        let early = r.deliver(next - chrono::Duration::minutes(1)).await;
        assert_eq!(early.failed + early.sent, 0);
        now = next;
    }
    // The fifth attempt uses up the limit: given up and escalated to the meter reader.
    let rep = r.deliver(now).await;
    assert_eq!((rep.failed, rep.given_up, rep.escalated), (1, 1, 1));
    let (status, attempts, _, _, wo) = r.row(id).await;
    assert_eq!((status.as_str(), attempts), ("failed", 5));
    let wo = wo.expect("linked to a follow-up work order");
    let (kind, state): (String, String) = {
        let row = sqlx::query("SELECT kind, status FROM work_orders WHERE work_order_id = $1")
            .bind(wo)
            .fetch_one(&r.s.host.db.pool)
            .await
            .unwrap();
        (row.try_get(0).unwrap(), row.try_get(1).unwrap())
    };
    assert_eq!(
        (kind.as_str(), state.as_str()),
        ("offline-follow-up", "open")
    );
    // Nothing more is sent, even when the gateway is back.
    r.fake.set(Mode::Accept);
    let rep = r.deliver(now + chrono::Duration::hours(3)).await;
    assert_eq!(rep.sent, 0);
    assert_eq!(
        r.fake.keys().len(),
        5,
        "five attempts, one key: {:?}",
        r.fake.keys()
    );
    assert!(r.fake.keys().iter().all(|k| k == &format!("sms-{id}-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gateway_times_out_and_the_retry_carries_the_same_key() {
    let Some(r) = rig("a_slow_gateway_times_out_and_the_retry_carries_the_same_key").await else {
        return;
    };
    let t0 = t("2013-01-08 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-slow", t0).await;
    let id = r.only_message().await;
    r.fake.set(Mode::Slow(Duration::from_millis(1200)));
    let rep = r.deliver(t0).await;
    assert_eq!((rep.failed, rep.sent), (1, 0));
    r.fake.set(Mode::Accept);
    let rep = r.deliver(t0 + chrono::Duration::minutes(5)).await;
    assert_eq!(rep.sent, 1);
    assert_eq!(r.row(id).await.0, "sent", "accepted, awaiting its receipt");
    assert_eq!(
        r.fake.keys(),
        vec![format!("sms-{id}-1"), format!("sms-{id}-1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_counts_only_on_a_delivered_receipt() {
    let Some(r) = rig("a_warning_counts_only_on_a_delivered_receipt").await else {
        return;
    };
    r.in_arrears_since("2013-01-07").await;
    let t0 = t("2013-01-07 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-2", t0).await;
    let id = r.only_message().await;
    assert_eq!(r.deliver(t0).await.sent, 1);
    // Accepted by the gateway is not warned.
    assert_eq!(r.level_notified().await, 0);
    assert_eq!(r.arrears_delivered("2013-01-07").await, None);
    assert!(
        r.floor_refusals(t("2013-01-08 10:00"), true)
            .await
            .contains(&FloorRefusal::NoticeNotDelivered)
    );
    // A second warning of the kind while this one is on its way is a duplicate.
    assert_eq!(
        r.queue(NoticeKind::Arrears, 3, "arrears-2b", t0).await,
        Queued::Duplicate
    );
    // The delivered receipt arrives at 09:05: now it counts, from the receipt's arrival.
    r.s.advance(t("2013-01-07 09:05")).unwrap();
    let (code, outcome) = r
        .receipt(&format!("sms-{id}-1"), ReceiptStatus::Delivered)
        .await;
    assert_eq!((code, outcome.as_deref()), (200, Some("applied")));
    assert_eq!(r.level_notified().await, 3);
    assert_eq!(
        r.arrears_delivered("2013-01-07").await,
        Some(t("2013-01-07 09:05"))
    );
    assert!(
        !r.floor_refusals(t("2013-01-08 10:00"), true)
            .await
            .iter()
            .any(|f| matches!(
                f,
                FloorRefusal::NoticeNotDelivered | FloorRefusal::NoticeTooRecent { .. }
            ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_are_refused_and_change_nothing() {
    let Some(r) = rig("forged_receipts_are_refused_and_change_nothing").await else {
        return;
    };
    let t0 = t("2013-01-08 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-3", t0).await;
    let id = r.only_message().await;
    r.deliver(t0).await;
    let body = serde_json::to_string(&DeliveryReceipt {
        idempotency_key: format!("sms-{id}-1"),
        status: ReceiptStatus::Delivered,
        gateway_message_id: None,
        error_code: None,
        reported_at: None,
    })
    .unwrap();
    let other_secret = Auth::new("feegate-test", b"guessed".to_vec());
    let other_key = Auth::new("someone-else", b"shared-secret-for-tests".to_vec());
    let sig = r.auth.sign(feegate::sms::unix_now(), body.as_bytes());
    let stale_t = feegate::sms::unix_now() - 3600;
    let stale_sig = r.auth.sign(stale_t, body.as_bytes());
    // (name, headers, body)
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Headers, String)> = vec![
        (
            "wrong secret",
            other_secret.headers(body.as_bytes()).to_vec(),
            body.clone(),
        ),
        (
            "unknown key id",
            other_key.headers(body.as_bytes()).to_vec(),
            body.clone(),
        ),
        ("no headers", vec![], body.clone()),
        (
            "body changed after signing",
            r.auth.headers(body.as_bytes()).to_vec(),
            body.replace("delivered", "rejected"),
        ),
        (
            "replayed an hour later",
            vec![
                (feegate::sms::HEADER_KEY_ID, "feegate-test".into()),
                (feegate::sms::HEADER_TIMESTAMP, stale_t.to_string()),
                (feegate::sms::HEADER_SIGNATURE, stale_sig),
            ],
            body.clone(),
        ),
        (
            "signature of another time",
            vec![
                (feegate::sms::HEADER_KEY_ID, "feegate-test".into()),
                (
                    feegate::sms::HEADER_TIMESTAMP,
                    (feegate::sms::unix_now() - 5).to_string(),
                ),
                (feegate::sms::HEADER_SIGNATURE, sig),
            ],
            body.clone(),
        ),
    ];
    for (name, headers, b) in cases {
        let mut req = r
            .http
            .post(&r.receipts_url)
            .header("content-type", "application/json");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let resp = req.body(b).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{name}");
    }
    assert_eq!(r.count("SELECT COUNT(*) FROM sms_receipts").await, 0);
    assert_eq!(r.row(id).await.0, "sent", "nothing changed");
    // A correctly signed body that is not a receipt: 400, nothing written.
    assert_eq!(
        r.post_receipt(&r.auth, r#"{"status":"delivered"}"#).await.0,
        400
    );
    assert_eq!(r.count("SELECT COUNT(*) FROM sms_receipts").await, 0);
    // The genuine receipt goes through.
    assert_eq!(
        r.post_receipt(&r.auth, &body).await,
        (200, Some("applied".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_receipts_change_nothing_twice() {
    let Some(r) = rig("duplicate_and_out_of_order_receipts_change_nothing_twice").await else {
        return;
    };
    let t0 = t("2013-01-08 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-4", t0).await;
    let id = r.only_message().await;
    r.deliver(t0).await;
    let k1 = format!("sms-{id}-1");
    let k2 = format!("sms-{id}-2");
    // (receipt key, status, expected outcome, expected row status, round)
    let steps: Vec<(&str, ReceiptStatus, &str, &str, i64)> = vec![
        (k1.as_str(), ReceiptStatus::Failed, "applied", "queued", 2),
        (k1.as_str(), ReceiptStatus::Failed, "duplicate", "queued", 2),
        // An "expired" for round 1 after round 1 already failed: out of order.
        (k1.as_str(), ReceiptStatus::Expired, "stale", "queued", 2),
        (
            "sms-999999-1",
            ReceiptStatus::Delivered,
            "unknown-message",
            "queued",
            2,
        ),
        (
            "not-ours",
            ReceiptStatus::Delivered,
            "unknown-message",
            "queued",
            2,
        ),
    ];
    for (key, status, outcome, row_status, round) in steps {
        let (code, got) = r.receipt(key, status.clone()).await;
        assert_eq!(
            (code, got.as_deref()),
            (200, Some(outcome)),
            "{key} {status:?}"
        );
        let row = r.row(id).await;
        assert_eq!(
            (row.0.as_str(), row.2),
            (row_status, round),
            "{key} {status:?}"
        );
    }
    // Round 2 is sent after the backoff with its own key.
    let rep = r.deliver(t0 + chrono::Duration::minutes(10)).await;
    assert_eq!(rep.sent, 1);
    assert_eq!(r.fake.keys(), vec![k1.clone(), k2.clone()]);
    let steps: Vec<(&str, ReceiptStatus, &str)> = vec![
        (k2.as_str(), ReceiptStatus::Delivered, "applied"),
        (k2.as_str(), ReceiptStatus::Delivered, "duplicate"),
        // A failure after the delivery (out of order): the message stays delivered.
        (k2.as_str(), ReceiptStatus::Failed, "stale"),
        // The late delivered receipt of round 1: already delivered.
        (k1.as_str(), ReceiptStatus::Delivered, "duplicate"),
    ];
    for (key, status, outcome) in steps {
        let (code, got) = r.receipt(key, status.clone()).await;
        assert_eq!(
            (code, got.as_deref()),
            (200, Some(outcome)),
            "{key} {status:?}"
        );
        assert_eq!(r.row(id).await.0, "delivered", "{key} {status:?}");
    }
    assert_eq!(r.count("SELECT COUNT(*) FROM sms_receipts").await, 9);
    // Receipts are append-only.
    assert!(
        sqlx::query("DELETE FROM sms_receipts")
            .execute(&r.s.host.db.pool)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_delivery_escalates_and_a_follow_up_done_by_a_person_satisfies_the_floor() {
    let Some(r) =
        rig("a_rejected_delivery_escalates_and_a_follow_up_done_by_a_person_satisfies_the_floor")
            .await
    else {
        return;
    };
    r.in_arrears_since("2013-01-07").await;
    let t0 = t("2013-01-07 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-5", t0).await;
    let id = r.only_message().await;
    r.deliver(t0).await;
    let (_, outcome) = r
        .receipt(&format!("sms-{id}-1"), ReceiptStatus::Rejected)
        .await;
    assert_eq!(outcome.as_deref(), Some("applied"));
    let (status, attempts, _, _, wo) = r.row(id).await;
    assert_eq!(
        (status.as_str(), attempts),
        ("failed", 1),
        "rejected: no retry"
    );
    let wo = wo.expect("escalated");
    let later = t("2013-01-08 10:00");
    assert!(
        r.floor_refusals(later, true)
            .await
            .contains(&FloorRefusal::NoticeNotDelivered)
    );
    // The meter reader visits at 11:00 and records it.
    let visit = t("2013-01-07 11:00");
    assert!(
        feegate::warning::record_follow_up_done(
            &r.s.host.db,
            wo,
            "Chen Hua",
            "visited; customer informed",
            visit
        )
        .await
        .unwrap()
    );
    // Not a second time.
    assert!(
        !feegate::warning::record_follow_up_done(&r.s.host.db, wo, "Chen Hua", "again", visit)
            .await
            .unwrap()
    );
    // The next morning the floor accepts the visit as notice (12 h before).
    let refusals = r.floor_refusals(later, true).await;
    assert!(
        !refusals.iter().any(|f| matches!(
            f,
            FloorRefusal::NoticeNotDelivered | FloorRefusal::NoticeTooRecent { .. }
        )),
        "{refusals:?}"
    );
    // But not within 12 h of the visit.
    assert!(
        r.floor_refusals(t("2013-01-07 20:00"), true)
            .await
            .iter()
            .any(|f| matches!(f, FloorRefusal::NoticeTooRecent { .. }))
    );
}

/// A gateway that passes the message on, then "crashes" the host before the outbox can
/// record the answer.
struct CrashAfterSend<'a>(&'a HttpGateway);

impl SmsGateway for CrashAfterSend<'_> {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> outbox::GatewayFuture<'a> {
        Box::pin(async move {
            let accepted = self.0.send(sms).await;
            assert!(accepted.is_ok(), "the gateway accepted it");
            panic!("host crashed between the gateway accepting and the outbox marking it sent");
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_gateway_accepted_resends_with_the_same_key_and_sends_once() {
    let Some(r) =
        rig("a_crash_after_the_gateway_accepted_resends_with_the_same_key_and_sends_once").await
    else {
        return;
    };
    let r = Arc::new(r);
    let t0 = t("2013-01-08 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-6", t0).await;
    let id = r.only_message().await;
    let crashing = r.clone();
    let crashed = tokio::spawn(async move {
        let gw = CrashAfterSend(&crashing.gw);
        crashing.deliver_with(&gw, t0).await
    })
    .await;
    assert!(crashed.is_err(), "the outbox pass died");
    // After the crash: the attempt was counted, the message is not marked sent.
    let (status, attempts, round, _, _) = r.row(id).await;
    assert_eq!((status.as_str(), attempts, round), ("queued", 1, 1));
    // Restart: the resend carries the same idempotency key; the gateway drops it.
    let rep = r.deliver(t0 + chrono::Duration::minutes(5)).await;
    assert_eq!(rep.sent, 1);
    assert_eq!(r.fake.keys(), vec![format!("sms-{id}-1"); 2]);
    assert_eq!(r.fake.sends(), 1, "the customer got one SMS");
    assert_eq!(r.row(id).await.0, "sent");
}

fn policy_set_with(messages: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(common::repo().join("policies/xianyou/policy-set.toml")).unwrap();
    let start = shipped
        .find("[messages]")
        .expect("the shipped set has [messages]");
    let end = shipped[start..].find("\n[tariff]").unwrap() + start;
    let text = format!("{}{}\n{}", &shipped[..start], messages, &shipped[end..]);
    std::fs::write(dir.path().join("policy-set.toml"), text).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_and_the_segment_limit_come_from_the_policy_set() {
    // (the [messages] table, local times and whether a message goes out then)
    let cases: Vec<(&str, Vec<(&str, bool)>)> = vec![
        (
            "[messages]\nquiet_hours = { from = \"20:00\", to = \"09:30\" }\n",
            vec![
                ("2013-01-08 08:30", false),
                ("2013-01-08 09:29", false),
                ("2013-01-08 09:30", true),
            ],
        ),
        // Nothing said: 22:00–08:00.
        (
            "",
            vec![("2013-01-08 07:59", false), ("2013-01-08 08:00", true)],
        ),
        (
            "[messages]\nquiet_hours = { from = \"12:00\", to = \"13:00\" }\n",
            vec![("2013-01-08 12:30", false), ("2013-01-08 13:00", true)],
        ),
    ];
    for (messages, times) in cases {
        let (_dir, set) = policy_set_with(messages);
        let Some(r) = test_rig(
            "quiet_hours_and_the_segment_limit_come_from_the_policy_set",
            Some(set),
        )
        .await
        else {
            return;
        };
        r.queue(NoticeKind::Arrears, 3, "arrears-q", t("2013-01-08 00:10"))
            .await;
        for (at, goes) in times {
            let rep = r.deliver(t(at)).await;
            assert_eq!(rep.sent == 1, goes, "{messages:?} at {at}: {rep:?}");
            assert_eq!(rep.waiting == 1, !goes, "{messages:?} at {at}: {rep:?}");
        }
    }
    // A one-segment county refuses the press-the-button notice (over 70 characters):
    // held, never cut.
    let (_dir, set) = policy_set_with("[messages]\nmax_segments = 1\n");
    let Some(r) = test_rig(
        "quiet_hours_and_the_segment_limit_come_from_the_policy_set",
        Some(set),
    )
    .await
    else {
        return;
    };
    let q = r
        .queue(
            NoticeKind::PressButtonToRestore,
            0,
            "button-long",
            t("2013-01-08 09:00"),
        )
        .await;
    assert_eq!(q, Queued::TooLong { segments: 2 });
    assert_eq!(r.count("SELECT COUNT(*) FROM sms_outbox").await, 0);
    let reason: String =
        sqlx::query("SELECT reason FROM holds WHERE account_id = $1 AND stage = 'notice'")
            .bind(ACCOUNT)
            .fetch_one(&r.s.host.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert!(reason.starts_with("sms-too-long"), "{reason}");
    // An unknown kind in per_event_kinds does not load.
    let (_dir, set) = policy_set_with("[messages]\nper_event_kinds = [\"birthday\"]\n");
    let mut opts = common::small_county(2, 1, 1); // refused before any database is opened
    opts.policy_set = set;
    let err = format!(
        "{:#}",
        Scenario::new(&opts, &[]).await.err().expect("refused")
    );
    assert!(err.contains("birthday"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notice_of_a_kind_a_day_unless_the_policy_says_per_event_and_the_second_contact_gets_warnings()
 {
    let Some(r) = rig("one_notice_of_a_kind_a_day_unless_the_policy_says_per_event_and_the_second_contact_gets_warnings").await else {
        return;
    };
    let change = feegate::onboarding::AgreementChange {
        second_mobile: Some(Some("13712345678".into())),
        ..Default::default()
    };
    feegate::onboarding::change_agreement(
        &r.s.host.db,
        ACCOUNT,
        &change,
        "clerk",
        t("2013-01-08 08:00"),
    )
    .await
    .unwrap();
    let now = t("2013-01-08 09:00");
    // A warning goes to both contacts.
    assert_eq!(
        r.queue(NoticeKind::LowBalance, 1, "warn-a", now).await,
        Queued::Queued
    );
    let to: Vec<(String, String)> = sqlx::query(
        "SELECT contact, mobile FROM sms_outbox WHERE kind = 'low-balance' ORDER BY contact",
    )
    .fetch_all(&r.s.host.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|x| (x.try_get(0).unwrap(), x.try_get(1).unwrap()))
    .collect();
    assert_eq!(to[1], ("second".to_string(), "13712345678".to_string()));
    assert_eq!(to.len(), 2);
    r.deliver(now).await;
    // The same kind again today under another key: once a day.
    sqlx::query("UPDATE sms_outbox SET status = 'delivered'")
        .execute(&r.s.host.db.pool)
        .await
        .unwrap();
    assert_eq!(
        r.queue(NoticeKind::LowBalance, 1, "warn-b", now).await,
        Queued::Duplicate
    );
    // Tomorrow it may go again.
    assert_eq!(
        r.queue(NoticeKind::LowBalance, 1, "warn-c", t("2013-01-09 09:00"))
            .await,
        Queued::Queued
    );
    // The shipped set lists payment-received as per event: two payments, two notices,
    // to the agreement's mobile only.
    assert_eq!(
        r.queue(NoticeKind::PaymentReceived, 0, "paid:app:1", now)
            .await,
        Queued::Queued
    );
    assert_eq!(
        r.queue(NoticeKind::PaymentReceived, 0, "paid:app:2", now)
            .await,
        Queued::Queued
    );
    assert_eq!(
        r.queue(NoticeKind::PaymentReceived, 0, "paid:app:2", now)
            .await,
        Queued::Duplicate
    );
    assert_eq!(
        r.count("SELECT COUNT(*) FROM sms_outbox WHERE kind = 'payment-received'")
            .await,
        2
    );
    // A county that does not list it: one a day.
    let (_dir, set) = policy_set_with("[messages]\n");
    let Some(r2) = test_rig("one_notice_of_a_kind_a_day_unless_the_policy_says_per_event_and_the_second_contact_gets_warnings", Some(set)).await else {
        return;
    };
    assert_eq!(
        r2.queue(NoticeKind::PaymentReceived, 0, "paid:app:1", now)
            .await,
        Queued::Queued
    );
    assert_eq!(
        r2.queue(NoticeKind::PaymentReceived, 0, "paid:app:2", now)
            .await,
        Queued::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_mismatch_holds_automatic_disconnection_until_resolved() {
    let Some(r) = rig("a_phone_mismatch_holds_automatic_disconnection_until_resolved").await else {
        return;
    };
    r.in_arrears_since("2013-01-07").await;
    let db = &r.s.host.db;
    let now = t("2013-01-08 10:00");
    // The agreement's number changes to one the master data does not have.
    let change = feegate::onboarding::AgreementChange {
        mobile: Some("13811112222".into()),
        ..Default::default()
    };
    let (_, check) = feegate::onboarding::change_agreement(db, ACCOUNT, &change, "clerk", now)
        .await
        .unwrap();
    let feegate::onboarding::MobileCheck::Mismatch { work_order_id } = check else {
        panic!("a mismatch: {check:?}");
    };
    let held = FloorRefusal::MobileMismatch { work_order_id };
    assert!(r.floor_refusals(now, true).await.contains(&held));
    // A trip a person approved is not held by it (the approval order shows it).
    assert!(!r.floor_refusals(now, false).await.contains(&held));
    assert!(!r.mobile_verified().await);
    // Bad input is refused with the reason, nothing changed.
    let bad =
        feegate::onboarding::resolve_mobile_mismatch(db, ACCOUNT, "12345", "Lin", "x", now).await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("not a mainland mobile number")
    );
    assert!(r.floor_refusals(now, true).await.contains(&held));
    // Resolved: the customer confirms the new number.
    let done = feegate::onboarding::resolve_mobile_mismatch(
        db,
        ACCOUNT,
        "13811112222",
        "Lin Wei",
        "customer called 95598",
        now,
    )
    .await
    .unwrap();
    assert_eq!(done, feegate::onboarding::MobileCheck::Matches);
    let refusals = r.floor_refusals(now, true).await;
    assert!(
        !refusals
            .iter()
            .any(|f| matches!(f, FloorRefusal::MobileMismatch { .. })),
        "{refusals:?}"
    );
    let (status, by): (String, Option<String>) = {
        let x = sqlx::query("SELECT status, decided_by FROM work_orders WHERE work_order_id = $1")
            .bind(work_order_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (x.try_get(0).unwrap(), x.try_get(1).unwrap())
    };
    assert_eq!((status.as_str(), by.as_deref()), ("done", Some("Lin Wei")));
    assert!(r.mobile_verified().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_retries_and_escalation_work_on_postgresql() {
    let Some(pg) = common::pg_database("receipts_retries_and_escalation_work_on_postgresql").await
    else {
        return;
    };
    let r = rig_with(Some(pg.url.clone()), None).await;
    r.in_arrears_since("2013-01-07").await;
    let t0 = t("2013-01-07 09:00");
    r.queue(NoticeKind::Arrears, 3, "arrears-pg", t0).await;
    let id = r.only_message().await;
    r.fake.set(Mode::Error(500));
    assert_eq!(r.deliver(t0).await.failed, 1);
    r.fake.set(Mode::Accept);
    assert_eq!(r.deliver(t0 + chrono::Duration::minutes(5)).await.sent, 1);
    let k = format!("sms-{id}-1");
    assert_eq!(
        r.receipt(&k, ReceiptStatus::Failed).await.1.as_deref(),
        Some("applied")
    );
    assert_eq!(
        r.receipt(&k, ReceiptStatus::Failed).await.1.as_deref(),
        Some("duplicate")
    );
    assert_eq!(r.deliver(t0 + chrono::Duration::minutes(30)).await.sent, 1);
    let k2 = format!("sms-{id}-2");
    assert_eq!(
        r.receipt(k2.as_str(), ReceiptStatus::Delivered)
            .await
            .1
            .as_deref(),
        Some("applied")
    );
    assert_eq!(r.row(id).await.0, "delivered");
    assert!(r.arrears_delivered("2013-01-07").await.is_some());
    // Escalation and the phone check on PostgreSQL too.
    r.queue(NoticeKind::SecondAlarm, 2, "second-pg", t0).await;
    let pending: i64 = r.count("SELECT MAX(message_id) FROM sms_outbox").await;
    r.deliver(t0 + chrono::Duration::minutes(40)).await;
    assert_eq!(
        r.receipt(&format!("sms-{pending}-1"), ReceiptStatus::Rejected)
            .await
            .1
            .as_deref(),
        Some("applied")
    );
    assert!(r.row(pending).await.4.is_some(), "escalated on PostgreSQL");
    let change = feegate::onboarding::AgreementChange {
        mobile: Some("13811112222".into()),
        ..Default::default()
    };
    let (_, check) =
        feegate::onboarding::change_agreement(&r.s.host.db, ACCOUNT, &change, "clerk", t0)
            .await
            .unwrap();
    assert!(matches!(
        check,
        feegate::onboarding::MobileCheck::Mismatch { .. }
    ));
    assert!(
        r.floor_refusals(t("2013-01-08 10:00"), true)
            .await
            .iter()
            .any(|f| matches!(f, FloorRefusal::MobileMismatch { .. }))
    );
}

/// The staff commands, through the real binary: an agreement change that opens a
/// mismatch, its resolution, a follow-up that is not one, and the segment counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_commands_work_at_the_command_line() {
    let Some((opts, tdb)) =
        common::small_county_db("the_message_commands_work_at_the_command_line", 2, 1, 11).await
    else {
        return;
    };
    let db = tdb.url.clone();
    drop(Scenario::new(&opts, &[]).await.expect("scenario"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::feegate_bin())
            .args(args)
            .env("FEEGATE_DB", &db)
            .env("FEEGATE_WHO", "clerk-test")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "agreement",
        "change",
        "--account",
        ACCOUNT,
        "--mobile",
        "13811112222",
        "--second-mobile",
        "13712345678",
        "--alarm-threshold-yuan",
        "30.00",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("data-maintenance work order #"), "{out}");
    let (code, _, err) = run(&[
        "agreement",
        "change",
        "--account",
        ACCOUNT,
        "--mobile",
        "555",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not a mainland mobile number"), "{err}");
    let (code, out, err) = run(&[
        "mobile",
        "resolve",
        "--account",
        ACCOUNT,
        "--mobile",
        "13811112222",
        "--note",
        "customer confirmed at the counter",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no longer held"), "{out}");
    let (code, _, err) = run(&[
        "follow-up",
        "done",
        "--work-order",
        "999",
        "--note",
        "visited",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not an open offline follow-up"), "{err}");
    let (code, out, _) = run(&["sms", "segments", &"电".repeat(71)]);
    assert_eq!(code, Some(0));
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (m["encoding"].as_str(), m["segments"].as_u64()),
        (Some("ucs2"), Some(2))
    );
    // What the commands did is in the database.
    let d = feegate::db::Db::open(&db).await.unwrap();
    let row = sqlx::query(
        "SELECT g.mobile, g.second_mobile, g.alarm_threshold_fen, c.master_mobile FROM accounts a
         JOIN agreements g ON g.agreement_id = a.agreement_id JOIN customers c ON c.customer_id = a.customer_id
         WHERE a.account_id = $1",
    )
    .bind(ACCOUNT)
    .fetch_one(&d.pool)
    .await
    .unwrap();
    let got: (String, Option<String>, i64, Option<String>) = (
        row.try_get(0).unwrap(),
        row.try_get(1).unwrap(),
        row.try_get(2).unwrap(),
        row.try_get(3).unwrap(),
    );
    assert_eq!(
        got,
        (
            "13811112222".into(),
            Some("13712345678".into()),
            3000,
            Some("13811112222".into())
        )
    );
}
