//! The HTTP API (`/api/v1`) against a real server on loopback: `serve::prepare` and
//! `serve::router` on a TCP listener, over a simulated county (the demo: Xianyou, its
//! stations, settlements, decisions, SMS) plus a second county onboarded with the
//! onboarding functions. One user per role and scope, each with an API token.

mod common;

use feegate::auth::Role;
use feegate::auth::store::{NewUser, create_user, issue_token};
use feegate::db::Db;
use feegate::ledger::{self, EntryKind, Posting};
use feegate::onboarding::{self, Application};
use feegate::payment::{self, PaymentNotice};
use feegate::policy::set::RolloutStage;
use feegate::serve::config::ServeConfig;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Xianyou's stations in the demo (accounts 1 and 5 at XY-BT, 2 and 6 at XY-DW).
const BT: &str = "XY-BT";
const DW: &str = "XY-DW";
const A1: &str = "3500000001"; // XY-BT, the customer's own account
const A5: &str = "3500000005"; // XY-BT, the customer's neighbour
const A2: &str = "3500000002"; // XY-DW
const H1: &str = "HJ0000000001"; // the second county's account

/// A running API over a seeded database.
struct World {
    addr: SocketAddr,
    db: Db,
    tokens: HashMap<&'static str, String>,
    client: reqwest::Client,
    /// The open approval work order on A1 (in arrears), and an approved one on A5 (in
    /// credit).
    order_open: i64,
    order_paid: i64,
    _dir: Option<tempfile::TempDir>,
    _server: tokio::task::JoinHandle<()>,
    _db: Option<common::TestDb>,
}

/// (user, role, county, station, account)
type UserRow = (
    &'static str,
    Role,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);
const USERS: &[UserRow] = &[
    ("ops", Role::Operations, None, None, None),
    ("auditor", Role::Auditor, None, None, None),
    ("eng-xy", Role::CountyEngineer, Some("xianyou"), None, None),
    ("eng-hj", Role::CountyEngineer, Some("hanjiang"), None, None),
    (
        "staff-bt",
        Role::StationStaff,
        Some("xianyou"),
        Some(BT),
        None,
    ),
    (
        "staff-bt2",
        Role::StationStaff,
        Some("xianyou"),
        Some(BT),
        None,
    ),
    (
        "staff-dw",
        Role::StationStaff,
        Some("xianyou"),
        Some(DW),
        None,
    ),
    (
        "staff-hj",
        Role::StationStaff,
        Some("hanjiang"),
        Some("HJ-A"),
        None,
    ),
    ("cust-a1", Role::Customer, None, None, Some(A1)),
];

impl World {
    /// Seeds `db_url` (None: a fresh SQLite file) and starts the API on loopback.
    async fn start(db_url: Option<String>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let url =
            db_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("api.db").display()));
        let mut opts = common::small_county(8, 20, 2013);
        opts.db_url = Some(url.clone());
        feegate::demo::run(&opts).await.expect("demo runs");
        let db = Db::open(&url).await.unwrap();
        // A second county, onboarded as the business hall does.
        onboarding::ensure_county(&db, "hanjiang", "涵江区", RolloutStage::ApprovalGated)
            .await
            .unwrap();
        onboarding::ensure_station(&db, "HJ-A", "hanjiang", "涵东供电所")
            .await
            .unwrap();
        let now = chrono::NaiveDate::from_ymd_opt(2013, 1, 2)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        onboarding::onboard(&db, &application("hanjiang", "HJ-A", "HJ", 1), now)
            .await
            .unwrap();
        payment::apply(
            &db,
            &PaymentNotice {
                channel: "business-hall",
                channel_txn_id: "HJ-OPEN-1",
                account_id: H1,
                amount_fen: 10_000,
            },
            EntryKind::Prepayment,
            now,
        )
        .await
        .unwrap();
        // A1 falls into arrears and gets an approval work order; A5 (in credit) has an
        // approved one from before it paid.
        let (order_open, order_paid) = seed_work_orders(&db).await;
        let mut tokens = HashMap::new();
        for (name, role, county, station, account) in USERS {
            create_user(
                &db,
                &NewUser {
                    username: name.to_string(),
                    role: Some(*role),
                    county: county.map(str::to_string),
                    station_id: station.map(str::to_string),
                    account_id: account.map(str::to_string),
                    password: None,
                },
            )
            .await
            .unwrap();
            tokens.insert(
                *name,
                issue_token(&db, name, "test", None).await.unwrap().token,
            );
        }
        let mut config = ServeConfig::default();
        config.database.url = url;
        config.meters.timeout_ms = 100;
        config.meters.retries = 0;
        config.counties[0].policy_set = common::repo().join("policies/xianyou");
        config.counties[0].components = common::components_dir();
        let state = feegate::serve::prepare(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = feegate::serve::router(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        World {
            addr,
            db,
            tokens,
            client: reqwest::Client::new(),
            order_open,
            order_paid,
            _dir: Some(dir),
            _server: server,
            _db: None,
        }
    }

    /// `start` on a fresh database for `test` on the backend under test
    /// (`common::test_database`); None: skipped.
    async fn start_for(test: &str) -> Option<World> {
        let tdb = common::test_database(test).await?;
        let mut w = World::start(Some(tdb.url.clone())).await;
        w._db = Some(tdb);
        Some(w)
    }

    /// One request as `user` (None: no credentials): (status, JSON body).
    async fn call(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("http://{}{}", self.addr, path);
        let mut req = self.client.request(method.parse().unwrap(), url);
        if let Some(u) = user {
            req = req.bearer_auth(&self.tokens[u]);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.call(Some(user), "GET", path, None, None).await
    }

    async fn balance_fen(&self, account: &str) -> i64 {
        sqlx::query_scalar("SELECT balance_fen FROM accounts WHERE account_id = $1")
            .bind(account)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn ledger_entries(&self, account: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE account_id = $1")
            .bind(account)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn application(county: &str, station: &str, prefix: &str, n: u32) -> Application {
    Application {
        county: county.into(),
        station_id: station.into(),
        customer_id: format!("{prefix}C{n:09}"),
        customer_name: format!("客户{n}"),
        master_mobile: Some("13900000001".into()),
        customer_class: "low-voltage-residential".into(),
        vulnerable: false,
        meter_id: format!("{prefix}M{n:09}"),
        link: feegate_meter::fleet::MeterLink::Modbus(feegate_meter::registers::MeterAddress {
            // A gateway of its own (the demo's meters are on 127.0.0.1): onboarding
            // refuses a link another account already uses.
            gateway: "127.0.0.2:1".parse().unwrap(),
            unit: (n % 247 + 1) as u8,
        }),
        ct_ratio: 1,
        pt_ratio: 1,
        account_id: format!("{prefix}{n:010}"),
        alarm_threshold_fen: 5_000,
        auto_debit_fen: None,
        mobile: "13900000001".into(),
        second_mobile: None,
        keep_power: false,
        time_of_use: false,
    }
}

async fn seed_work_orders(db: &Db) -> (i64, i64) {
    let mut conn = db.pool.acquire().await.unwrap();
    let balance: i64 = sqlx::query_scalar("SELECT balance_fen FROM accounts WHERE account_id = $1")
        .bind(A1)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    ledger::post(
        &mut tx,
        &Posting {
            account_id: A1,
            kind: EntryKind::Correction,
            amount_fen: -(balance + 3_000),
            idempotency_key: "api-test:arrears",
            business_date: "2013-01-21",
            posted_at: "2013-01-21 00:20:00",
            reference: "test: into arrears",
        },
    )
    .await
    .unwrap();
    sqlx::query("UPDATE accounts SET arrears_since = '2013-01-19' WHERE account_id = $1")
        .bind(A1)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn); // SQLite pools hold one connection
    let mut ids = Vec::new();
    for (account, status, decided_by) in [(A1, "open", None), (A5, "approved", Some("staff-bt"))] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at, decided_by)
             VALUES ('approve-disconnection', $1, $2, $3, $4, $5, '2013-01-21 09:00:00', $6) RETURNING work_order_id",
        )
        .bind(account)
        .bind(BT)
        .bind(format!("approve-disconnection:{account}:test"))
        .bind(status)
        .bind(json!({"balance_yuan": "-30.00", "policy_reason": "arrears"}).to_string())
        .bind(decided_by)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    (ids[0], ids[1])
}

/// Every role, across two counties and two stations: what each must be denied, and
/// what each may see. A row is (user, method, path, expected status). Objects outside
/// a principal's scope are 404 (their existence is private); actions the role may never
/// take are 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_denied_what_it_must_not_see_or_do() {
    let Some(w) = World::start_for("every_role_is_denied_what_it_must_not_see_or_do").await else {
        return;
    };
    let o = w.order_open;
    let approved = w.order_paid;
    let reads: Vec<(&str, String, u16)> = vec![
        // Customers: only their own account.
        ("cust-a1", format!("/api/v1/accounts/{A1}"), 200),
        ("cust-a1", format!("/api/v1/accounts/{A5}"), 404),
        ("cust-a1", format!("/api/v1/accounts/{A5}/balance"), 404),
        ("cust-a1", format!("/api/v1/accounts/{A5}/ledger"), 404),
        ("cust-a1", format!("/api/v1/accounts/{A5}/usage"), 404),
        ("cust-a1", format!("/api/v1/accounts/{H1}"), 404),
        ("cust-a1", format!("/api/v1/accounts/{A1}/ledger"), 200),
        ("cust-a1", "/api/v1/work-orders".into(), 403),
        ("cust-a1", format!("/api/v1/work-orders/{o}"), 403),
        ("cust-a1", "/api/v1/policies".into(), 403),
        ("cust-a1", "/api/v1/collection".into(), 403),
        ("cust-a1", "/api/v1/relay-commands".into(), 403),
        // Station staff: their station, not the neighbouring station or county.
        ("staff-bt", format!("/api/v1/accounts/{A1}"), 200),
        ("staff-bt", format!("/api/v1/accounts/{A2}"), 404),
        ("staff-bt", format!("/api/v1/accounts/{H1}"), 404),
        ("staff-dw", format!("/api/v1/accounts/{A2}"), 200),
        ("staff-dw", format!("/api/v1/work-orders/{o}"), 404),
        ("staff-hj", format!("/api/v1/accounts/{A1}"), 404),
        ("staff-hj", format!("/api/v1/accounts/{H1}"), 200),
        ("staff-bt", format!("/api/v1/work-orders/{o}"), 200),
        ("staff-bt", "/api/v1/policies".into(), 200),
        // County engineers: their county's policies, decisions, collection; no customers.
        ("eng-xy", format!("/api/v1/accounts/{A1}"), 403),
        ("eng-xy", "/api/v1/customers".into(), 403),
        ("eng-xy", "/api/v1/work-orders".into(), 403),
        ("eng-xy", "/api/v1/policies?county=xianyou".into(), 200),
        ("eng-xy", "/api/v1/decisions".into(), 200),
        // Operations and the auditor read everything.
        ("ops", format!("/api/v1/accounts/{H1}"), 200),
        ("auditor", format!("/api/v1/accounts/{H1}"), 200),
        ("auditor", format!("/api/v1/work-orders/{o}"), 200),
        ("auditor", "/api/v1/policies/activations".into(), 200),
    ];
    for (user, path, want) in &reads {
        let (got, body) = w.get(user, path).await;
        assert_eq!(got, *want, "{user} GET {path}: {body}");
        if *want >= 400 {
            let code = body["code"].as_str().unwrap_or("");
            assert_eq!(
                code,
                if *want == 404 {
                    "not-found"
                } else {
                    "forbidden"
                },
                "{user} GET {path}: {body}"
            );
        }
    }

    // Lists hold only rows inside the scope: accounts, decisions, work orders.
    for (user, field, allowed) in [
        ("staff-bt", "station_id", vec![BT]),
        ("staff-hj", "station_id", vec!["HJ-A"]),
        ("cust-a1", "account_id", vec![A1]),
    ] {
        let (_, page) = w.get(user, "/api/v1/accounts?limit=500").await;
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty(), "{user} sees its own");
        for a in items {
            assert!(
                allowed.contains(&a[field].as_str().unwrap()),
                "{user} saw {a}"
            );
        }
    }
    let (_, decisions) = w.get("cust-a1", "/api/v1/decisions?limit=500").await;
    let decisions = decisions["items"].as_array().unwrap();
    assert!(!decisions.is_empty());
    assert!(
        decisions.iter().all(|d| d["account_id"] == A1),
        "a customer's decisions are their own"
    );
    let (_, decisions) = w.get("eng-hj", "/api/v1/decisions?limit=500").await;
    assert!(
        decisions["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["county"] == "hanjiang")
    );
    let (_, policies) = w.get("eng-hj", "/api/v1/policies/versions").await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["county"] == "hanjiang")
    );
    let (_, collection) = w
        .get(
            "staff-dw",
            "/api/v1/collection?from=2013-01-05&to=2013-01-06",
        )
        .await;
    let rows = collection.as_array().unwrap();
    assert_eq!(rows.len(), 2, "one station, two days: {collection}");
    assert!(rows.iter().all(|r| r["station_id"] == DW));

    // Writes: the auditor changes nothing; the engineer and the customer decide no
    // work orders; staff of another station cannot reach the order; a customer pays
    // only into their own account.
    let pay = |account: &str| json!({"account_id": account, "amount": "10.00"});
    let writes: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "auditor",
            "/api/v1/payments".into(),
            pay(A1),
            403,
            "forbidden",
        ),
        (
            "auditor",
            format!("/api/v1/work-orders/{o}/approve"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "auditor",
            format!("/api/v1/work-orders/{o}/execute"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "auditor",
            "/api/v1/agreements".into(),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "eng-xy",
            format!("/api/v1/work-orders/{o}/approve"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "eng-xy",
            "/api/v1/payments".into(),
            pay(A1),
            403,
            "forbidden",
        ),
        (
            "cust-a1",
            format!("/api/v1/work-orders/{o}/hold"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "cust-a1",
            "/api/v1/payments".into(),
            pay(A5),
            403,
            "forbidden",
        ),
        (
            "staff-dw",
            format!("/api/v1/work-orders/{o}/approve"),
            json!({}),
            404,
            "not-found",
        ),
        // Withdrawing an approval is deciding: the same roles and scopes (on the
        // approved order, so only the refusal stands between them and a change).
        (
            "auditor",
            format!("/api/v1/work-orders/{approved}/withdraw"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "eng-xy",
            format!("/api/v1/work-orders/{approved}/withdraw"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "cust-a1",
            format!("/api/v1/work-orders/{approved}/withdraw"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            "staff-dw",
            format!("/api/v1/work-orders/{approved}/withdraw"),
            json!({}),
            404,
            "not-found",
        ),
        (
            "staff-hj",
            format!("/api/v1/work-orders/{approved}/withdraw"),
            json!({"note": "not my county"}),
            404,
            "not-found",
        ),
        (
            "staff-dw",
            "/api/v1/payments".into(),
            pay(A1),
            404,
            "not-found",
        ),
        (
            "staff-hj",
            "/api/v1/payments".into(),
            pay(A1),
            404,
            "not-found",
        ),
    ];
    let before = w.balance_fen(A1).await;
    for (i, (user, path, body, want, code)) in writes.iter().enumerate() {
        let key = format!("deny-{i}");
        let (got, b) = w
            .call(Some(user), "POST", path, Some(body.clone()), Some(&key))
            .await;
        assert_eq!(
            (got, b["code"].as_str().unwrap_or("")),
            (*want, *code),
            "{user} POST {path}: {b}"
        );
    }
    assert_eq!(
        w.balance_fen(A1).await,
        before,
        "no refused write moved money"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM work_orders WHERE work_order_id = $1")
            .bind(o)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "open", "no refused write decided the order");
    let status: String =
        sqlx::query_scalar("SELECT status FROM work_orders WHERE work_order_id = $1")
            .bind(approved)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "approved", "no refused withdrawal held the order");

    // A customer cannot credit even their own account: their money arrives only through a
    // payment channel's signed notification (an unsigned "I paid" would be free credit).
    let (got, b) = w
        .call(
            Some("cust-a1"),
            "POST",
            "/api/v1/payments",
            Some(pay(A1)),
            Some("own"),
        )
        .await;
    assert_eq!((got, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    assert_eq!(w.balance_fen(A1).await, before);
}

/// The two-person rule: the approver of a cutoff never executes it; another person's
/// execution goes through the safety floor at that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approver_of_a_cutoff_is_never_its_executor() {
    let Some(w) = World::start_for("the_approver_of_a_cutoff_is_never_its_executor").await else {
        return;
    };
    let o = w.order_open;
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            &format!("/api/v1/work-orders/{o}/execute"),
            None,
            Some("x0"),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("conflict")),
        "not approved yet: {b}"
    );
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            &format!("/api/v1/work-orders/{o}/approve"),
            Some(json!({"note": "called, no answer"})),
            Some("a1"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["status"].as_str(), b["decided_by"].as_str()),
        (Some("approved"), Some("staff-bt"))
    );
    // A second approval is a conflict, not a silent success.
    let (s, b) = w
        .call(
            Some("staff-bt2"),
            "POST",
            &format!("/api/v1/work-orders/{o}/hold"),
            None,
            Some("h1"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    // The approver may not execute.
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            &format!("/api/v1/work-orders/{o}/execute"),
            None,
            Some("x1"),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("two-person-rule")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("staff-bt"), "{b}");
    let trips: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM relay_commands WHERE decision_key = $1")
            .bind(format!("work-order:{o}"))
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(trips, 0, "no trip from a refused execution");
    // Another person's execution passes the two-person rule and reaches the safety
    // floor, which looks at this moment: the demo's readings are years old, so it
    // refuses (stale reading) and the order stays approved.
    let (s, b) = w
        .call(
            Some("staff-bt2"),
            "POST",
            &format!("/api/v1/work-orders/{o}/execute"),
            None,
            Some("x2"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("floor-refused")), "{b}");
    let refusals = b["details"]["refusals"].as_array().unwrap();
    assert!(
        refusals
            .iter()
            .any(|r| r["refusal"].as_str().unwrap_or("").contains("stale")),
        "{b}"
    );
    let (status, executed_by): (String, Option<String>) =
        sqlx::query_as("SELECT status, executed_by FROM work_orders WHERE work_order_id = $1")
            .bind(o)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), executed_by), ("approved", None));
    // An approved order whose account paid meanwhile is cancelled, not tripped.
    let p = w.order_paid;
    let (s, b) = w
        .call(
            Some("staff-bt2"),
            "POST",
            &format!("/api/v1/work-orders/{p}/execute"),
            None,
            Some("x3"),
        )
        .await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (200, Some("cancelled-paid")),
        "{b}"
    );
    assert_eq!(b["order"]["status"], "cancelled");
    // The order's case: evidence, balance history, warnings with receipts.
    let (s, case) = w.get("staff-bt", &format!("/api/v1/work-orders/{o}")).await;
    assert_eq!(s, 200);
    assert_eq!(case["evidence"]["policy_reason"], "arrears");
    let history = case["balance_history"].as_array().unwrap();
    assert!(
        history.last().unwrap()["balance_after"]["fen"]
            .as_i64()
            .unwrap()
            < 0,
        "{case}"
    );
    assert!(case["warnings"].is_array());
}

/// The single-order execution path the API uses (`cutoff::execute_one`), at a moment
/// the safety floor allows (a Monday morning of the demo, fresh readings, the arrears
/// notice delivered two days before): the trip is created once, the order is done and
/// names its executor; the approver is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_cutoff_executed_by_another_person_trips_once() {
    use feegate::cutoff::{Executed, decide_work_order, execute_one};
    let Some(w) =
        World::start_for("an_approved_cutoff_executed_by_another_person_trips_once").await
    else {
        return;
    };
    let o = w.order_open;
    sqlx::query(
        "INSERT INTO sms_outbox (account_id, kind, dedup_key, mobile, body, status, created_at, sent_at, delivered_at)
         VALUES ($1, 'arrears', 'api-test:arrears-notice', '13900000001', '欠费通知', 'delivered',
                 '2013-01-19 08:00:00', '2013-01-19 08:00:00', '2013-01-19 08:05:00')",
    )
    .bind(A1)
    .execute(&w.db.pool)
    .await
    .unwrap();
    let engine = feegate::policy::PolicyEngine::new(Default::default()).unwrap();
    let host = feegate::config::HostConfig::default();
    let county = feegate::county::County::load(
        &engine,
        &common::repo().join("policies/xianyou"),
        &common::components_dir(),
        host.floor.clone(),
    )
    .unwrap();
    let now = chrono::NaiveDate::from_ymd_opt(2013, 1, 21)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    assert!(
        decide_work_order(&w.db, o, true, "staff-bt", now, "called")
            .await
            .unwrap()
    );
    let refused = execute_one(&w.db, &county, o, "staff-bt", now, &host.relay)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Executed::TwoPersonRule {
            approver: "staff-bt".into()
        }
    );
    let done = execute_one(&w.db, &county, o, "staff-bt2", now, &host.relay)
        .await
        .unwrap();
    assert_eq!(
        done,
        Executed::Tripped { created: true },
        "the floor allows a Monday 10:00 trip"
    );
    let (status, by, at): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT status, executed_by, executed_at FROM work_orders WHERE work_order_id = $1",
    )
    .bind(o)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), by.as_deref(), at.as_deref()),
        ("done", Some("staff-bt2"), Some("2013-01-21 10:00:00"))
    );
    let again = execute_one(&w.db, &county, o, "staff-bt2", now, &host.relay)
        .await
        .unwrap();
    assert_eq!(
        again,
        Executed::NotApproved {
            status: Some("done".into())
        }
    );
    let trips: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM relay_commands WHERE decision_key = $1 AND command = 'trip'",
    )
    .bind(format!("work-order:{o}"))
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(trips, 1);
    // The API shows it among the relay commands awaiting confirmation, to its station only.
    let (_, awaiting) = w.get("staff-bt", "/api/v1/relay-commands").await;
    assert!(
        awaiting["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["decision_key"] == format!("work-order:{o}")),
        "{awaiting}"
    );
    let (_, other) = w.get("staff-dw", "/api/v1/relay-commands").await;
    assert_eq!(other["items"], json!([]));
}

/// Xianyou as the library sees it (the shipped policy set and components) and the host's
/// default configuration; the engine must outlive the county's use.
fn xianyou() -> (
    std::sync::Arc<feegate::policy::PolicyEngine>,
    feegate::county::County,
    feegate::config::HostConfig,
) {
    let engine = feegate::policy::PolicyEngine::new(Default::default()).unwrap();
    let host = feegate::config::HostConfig::default();
    let county = feegate::county::County::load(
        &engine,
        &common::repo().join("policies/xianyou"),
        &common::components_dir(),
        host.floor.clone(),
    )
    .unwrap();
    (engine, county, host)
}

/// Monday 2013-01-21 at `hh:mm`: a moment the safety floor allows a trip on A1 (fresh
/// readings, a working day) once its arrears notice is delivered
/// ([`deliver_arrears_notice`]).
fn monday(hh: u32, mm: u32) -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2013, 1, 21)
        .unwrap()
        .and_hms_opt(hh, mm, 0)
        .unwrap()
}

/// A1's arrears notice, delivered two days before [`monday`].
/// The world's open disconnection order, its arrears notice delivered and approved by
/// `staff-bt` on Monday 10:00, ready for another person to execute; with the county and
/// host configuration to execute it with. Returns (county, host, work order id).
async fn approved_by_staff_bt(
    w: &World,
) -> (feegate::county::County, feegate::config::HostConfig, i64) {
    deliver_arrears_notice(w).await;
    let (_engine, county, host) = xianyou();
    let o = w.order_open;
    assert!(
        feegate::cutoff::decide_work_order(&w.db, o, true, "staff-bt", monday(10, 0), "called")
            .await
            .unwrap()
    );
    (county, host, o)
}

async fn deliver_arrears_notice(w: &World) {
    sqlx::query(
        "INSERT INTO sms_outbox (account_id, kind, dedup_key, mobile, body, status, created_at, sent_at, delivered_at)
         VALUES ($1, 'arrears', 'api-test:arrears-notice', '13900000001', '欠费通知', 'delivered',
                 '2013-01-19 08:00:00', '2013-01-19 08:00:00', '2013-01-19 08:05:00')",
    )
    .bind(A1)
    .execute(&w.db.pool)
    .await
    .unwrap();
}

/// The trip commands created for work order `o`.
async fn trips_of(w: &World, o: i64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM relay_commands WHERE decision_key = $1")
        .bind(format!("work-order:{o}"))
        .fetch_one(&w.db.pool)
        .await
        .unwrap()
}

/// (status, decided_by, decided_at, withdrawn_by, withdrawn_at, executed_by, note) of
/// work order `o`.
type OrderRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn order_row(w: &World, o: i64) -> OrderRow {
    sqlx::query_as(
        "SELECT status, decided_by, decided_at, withdrawn_by, withdrawn_at, executed_by, note
         FROM work_orders WHERE work_order_id = $1",
    )
    .bind(o)
    .fetch_one(&w.db.pool)
    .await
    .unwrap()
}

/// Withdrawing an approval (`cutoff::withdraw_approval`): the approved order is held,
/// keeps its approver, records who withdrew it and when, and the scheduled execution
/// then trips nobody — at a moment it would have tripped the same order still approved.
/// An open, held or executed order, or an unknown one, is refused with its status and
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_approval_is_held_and_never_tripped() {
    use feegate::cutoff::{
        Executed, Withdrawal, decide_work_order, execute_approved, execute_one, withdraw_approval,
    };
    let Some(w) = World::start_for("a_withdrawn_approval_is_held_and_never_tripped").await else {
        return;
    };
    deliver_arrears_notice(&w).await;
    let (_engine, county, host) = xianyou();
    let o = w.order_open;

    // Open: nothing to withdraw (hold it instead).
    assert_eq!(
        withdraw_approval(&w.db, o, "staff-bt", monday(9, 0), "")
            .await
            .unwrap(),
        Withdrawal::NotApproved {
            status: Some("open".into())
        }
    );
    assert_eq!(order_row(&w, o).await.0, "open");
    assert_eq!(
        withdraw_approval(&w.db, 999_999, "staff-bt", monday(9, 0), "")
            .await
            .unwrap(),
        Withdrawal::NotApproved { status: None }
    );

    // Approved at 10:00, withdrawn at 10:05 by the approver themself.
    assert!(
        decide_work_order(&w.db, o, true, "staff-bt", monday(10, 0), "called")
            .await
            .unwrap()
    );
    assert_eq!(
        withdraw_approval(&w.db, o, "staff-bt", monday(10, 5), "wrong account")
            .await
            .unwrap(),
        Withdrawal::Withdrawn
    );
    let (status, decided_by, decided_at, withdrawn_by, withdrawn_at, executed_by, note) =
        order_row(&w, o).await;
    assert_eq!(
        (
            status.as_str(),
            decided_by.as_deref(),
            decided_at.as_deref(),
            withdrawn_by.as_deref(),
            withdrawn_at.as_deref(),
            executed_by
        ),
        (
            "held",
            Some("staff-bt"),
            Some("2013-01-21 10:00:00"),
            Some("staff-bt"),
            Some("2013-01-21 10:05:00"),
            None
        ),
        "held, the approver kept, the withdrawal recorded"
    );
    assert_eq!(
        note.as_deref(),
        Some("called [approval withdrawn by staff-bt at 2013-01-21 10:05:00: wrong account]")
    );
    // Twice is refused: it is held now, and nothing changes.
    assert_eq!(
        withdraw_approval(&w.db, o, "staff-bt2", monday(10, 6), "again")
            .await
            .unwrap(),
        Withdrawal::NotApproved {
            status: Some("held".into())
        }
    );
    assert_eq!(order_row(&w, o).await.3.as_deref(), Some("staff-bt"));

    // The scheduled execution at 10:30 (as `system`) and a person's execution trip
    // nobody on it.
    let report = execute_approved(&w.db, &county, monday(10, 30), &host.relay)
        .await
        .unwrap();
    assert_eq!(report.trips_created, 0, "{report:?}");
    assert_eq!(
        execute_one(&w.db, &county, o, "staff-bt2", monday(10, 30), &host.relay)
            .await
            .unwrap(),
        Executed::NotApproved {
            status: Some("held".into())
        }
    );
    assert_eq!(trips_of(&w, o).await, 0);
    assert_eq!(order_row(&w, o).await.0, "held");

    // The control: the same order still approved would have been tripped at that
    // moment — so it was the withdrawal that stopped it. Executed, it cannot be
    // withdrawn any more.
    sqlx::query("UPDATE work_orders SET status = 'approved' WHERE work_order_id = $1")
        .bind(o)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let report = execute_approved(&w.db, &county, monday(10, 30), &host.relay)
        .await
        .unwrap();
    assert_eq!(report.trips_created, 1, "{report:?}");
    assert_eq!(
        withdraw_approval(&w.db, o, "staff-bt", monday(10, 35), "too late")
            .await
            .unwrap(),
        Withdrawal::NotApproved {
            status: Some("done".into())
        }
    );
    assert_eq!(order_row(&w, o).await.0, "done");
}

/// The race the conditional updates of `cutoff::execute_one` close: the order is read
/// approved, the floor passes and the trip command is written, and only then does the
/// withdrawal land — before the execution's final update. The execution must then
/// issue nothing: its update finds the order no longer approved and rolls the trip
/// command back. (Before, the unconditional `SET status = 'done'` overwrote the
/// withdrawal and the relay tripped.)
///
/// On PostgreSQL the withdrawal is a real concurrent transaction: a test trigger on
/// `relay_commands` makes the execution wait on an advisory lock right after writing
/// the trip command; `withdraw_approval` commits on another connection meanwhile; then
/// the lock is released. On SQLite two transactions cannot interleave like that (one
/// pooled connection, one writer), so the trigger itself moves the order to held inside
/// the execution's transaction — the same "status changed between the read and the
/// final update", rolled back with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_landing_before_the_final_update_of_an_execution_trips_nothing() {
    use feegate::cutoff::{Executed, Withdrawal, execute_one, withdraw_approval};
    let test = "a_withdrawal_landing_before_the_final_update_of_an_execution_trips_nothing";
    let Some(w) = World::start_for(test).await else {
        return;
    };
    let (county, host, o) = approved_by_staff_bt(&w).await;
    let postgres = w._db.as_ref().is_some_and(|d| d.is_postgres());
    let executed = if postgres {
        const LOCK: i64 = 4_216_001;
        sqlx::Executor::execute(
            &w.db.pool,
            format!(
                "CREATE FUNCTION test_pause_after_trip() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_advisory_xact_lock({LOCK}); RETURN NEW; END $$;
                 CREATE TRIGGER test_pause_after_trip AFTER INSERT ON relay_commands
                 FOR EACH ROW EXECUTE FUNCTION test_pause_after_trip();"
            )
            .as_str(),
        )
        .await
        .unwrap();
        let url = w._db.as_ref().unwrap().url.clone();
        let mut gate = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut gate)
            .await
            .unwrap();
        assert!(locked);
        let execution = execute_one(&w.db, &county, o, "staff-bt2", monday(10, 30), &host.relay);
        let withdrawal = async {
            // Wait until the execution has written its trip command and waits at the
            // gate, then withdraw on another connection, then open the gate.
            let began = std::time::Instant::now();
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                .fetch_one(&w.db.pool)
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
                assert!(
                    began.elapsed() < std::time::Duration::from_secs(30),
                    "the execution never reached its trip command"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let withdrawn =
                withdraw_approval(&w.db, o, "staff-bt", monday(10, 31), "wrong account")
                    .await
                    .unwrap();
            let unlocked: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                .bind(LOCK)
                .fetch_one(&mut gate)
                .await
                .unwrap();
            assert!(unlocked);
            withdrawn
        };
        let (executed, withdrawn) = tokio::join!(execution, withdrawal);
        assert_eq!(
            withdrawn,
            Withdrawal::Withdrawn,
            "the execution had not updated the order yet"
        );
        executed.unwrap()
    } else {
        sqlx::query(&format!(
            "CREATE TRIGGER test_withdrawn_after_trip AFTER INSERT ON relay_commands
             WHEN NEW.decision_key = 'work-order:{o}'
             BEGIN
               UPDATE work_orders SET status = 'held', withdrawn_by = 'staff-bt',
                      withdrawn_at = '2013-01-21 10:31:00'
                WHERE work_order_id = {o};
             END"
        ))
        .execute(&w.db.pool)
        .await
        .unwrap();
        execute_one(&w.db, &county, o, "staff-bt2", monday(10, 30), &host.relay)
            .await
            .unwrap()
    };
    assert_eq!(
        executed,
        Executed::NotApproved {
            status: Some("held".into())
        },
        "the execution saw the withdrawal at its final update"
    );
    assert_eq!(trips_of(&w, o).await, 0, "the trip command was rolled back");
    let (status, decided_by, _, withdrawn_by, _, executed_by, _) = order_row(&w, o).await;
    assert_eq!(executed_by, None, "nobody executed it");
    assert_eq!(decided_by.as_deref(), Some("staff-bt"));
    if postgres {
        // The committed withdrawal stands.
        assert_eq!(
            (status.as_str(), withdrawn_by.as_deref()),
            ("held", Some("staff-bt"))
        );
    } else {
        // The simulated withdrawal was part of the rolled-back transaction.
        assert_eq!((status.as_str(), withdrawn_by), ("approved", None));
    }
}

/// A withdrawal that lands while an execution meets a temporary floor refusal (18:00,
/// the protected window): the execution does not answer "stays approved" for an order
/// that no longer is; it answers `NotApproved` with the order's status. The withdrawal is
/// simulated inside the execution's transaction, right after the refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_landing_during_a_floor_refusal_is_not_answered_stays_approved() {
    use feegate::cutoff::{Executed, execute_one};
    let test = "a_withdrawal_landing_during_a_floor_refusal_is_not_answered_stays_approved";
    let Some(w) = World::start_for(test).await else {
        return;
    };
    let (county, host, o) = approved_by_staff_bt(&w).await;
    // Without the withdrawal the floor refuses for now and the order stays approved.
    assert!(matches!(
        execute_one(&w.db, &county, o, "staff-bt2", monday(19, 0), &host.relay)
            .await
            .unwrap(),
        Executed::FloorRefused {
            cancelled: false,
            ..
        }
    ));
    assert_eq!(order_row(&w, o).await.0, "approved");
    let withdraw = format!(
        "UPDATE work_orders SET status = 'held', withdrawn_by = 'staff-bt',
                withdrawn_at = '2013-01-21 19:01:00' WHERE work_order_id = {o}"
    );
    let postgres = w._db.as_ref().is_some_and(|d| d.is_postgres());
    let trigger = if postgres {
        format!(
            "CREATE FUNCTION test_withdrawn_after_refusal() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN {withdraw}; RETURN NEW; END $$;
             CREATE TRIGGER test_withdrawn_after_refusal AFTER INSERT ON floor_refusals
             FOR EACH ROW EXECUTE FUNCTION test_withdrawn_after_refusal();"
        )
    } else {
        format!(
            "CREATE TRIGGER test_withdrawn_after_refusal AFTER INSERT ON floor_refusals
             BEGIN {withdraw}; END"
        )
    };
    sqlx::Executor::execute(&w.db.pool, trigger.as_str())
        .await
        .unwrap();
    let executed = execute_one(&w.db, &county, o, "staff-bt2", monday(19, 30), &host.relay)
        .await
        .unwrap();
    assert_eq!(
        executed,
        Executed::NotApproved {
            status: Some("held".into())
        },
        "the refusal's answer names the order's status as it is now"
    );
    assert_eq!(trips_of(&w, o).await, 0);
    // The simulated withdrawal was part of the rolled-back transaction.
    assert_eq!(order_row(&w, o).await.0, "approved");
}

/// `POST /work-orders/{id}/withdraw`: whoever may decide the order may withdraw its
/// approval — the approver, another staff member of the station, operations — and the
/// order is held with the withdrawal recorded; an order that is not approved is 409
/// `not-approved` with its status; an execution after the withdrawal is refused; the
/// endpoint is in the OpenAPI document. (The roles and scopes that may not: in
/// `every_role_is_denied_what_it_must_not_see_or_do`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_withdrawn_by_anyone_who_may_decide_the_order() {
    let Some(w) =
        World::start_for("an_approval_is_withdrawn_by_anyone_who_may_decide_the_order").await
    else {
        return;
    };
    let o = w.order_open;
    let withdraw = |user: &'static str, id: i64, body: Option<Value>, key: &'static str| {
        let path = format!("/api/v1/work-orders/{id}/withdraw");
        let w = &w;
        async move { w.call(Some(user), "POST", &path, body, Some(key)).await }
    };
    // Open: there is no approval to withdraw.
    let (s, b) = withdraw("staff-bt", o, None, "w0").await;
    assert_eq!(
        (s, b["code"].as_str(), b["details"]["status"].as_str()),
        (409, Some("not-approved"), Some("open")),
        "{b}"
    );
    // Approved, then withdrawn by the approver.
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            &format!("/api/v1/work-orders/{o}/approve"),
            Some(json!({"note": "called, no answer"})),
            Some("a1"),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("approved")), "{b}");
    let body = json!({"note": "wrong account"});
    let (s, b) = withdraw("staff-bt", o, Some(body.clone()), "w1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["status"].as_str(),
            b["decided_by"].as_str(),
            b["withdrawn_by"].as_str()
        ),
        (Some("held"), Some("staff-bt"), Some("staff-bt")),
        "{b}"
    );
    assert!(b["withdrawn_at"].is_string(), "{b}");
    let note = b["note"].as_str().unwrap();
    assert!(
        note.starts_with("called, no answer [approval withdrawn by staff-bt at ")
            && note.ends_with(": wrong account]"),
        "{note}"
    );
    // A retry with the same key gets the same answer; a new request is refused.
    let (s, again) = withdraw("staff-bt", o, Some(body), "w1").await;
    assert_eq!((s, &again), (200, &b));
    let (s, b) = withdraw("staff-bt2", o, None, "w2").await;
    assert_eq!(
        (s, b["code"].as_str(), b["details"]["status"].as_str()),
        (409, Some("not-approved"), Some("held")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("held"), "{b}");
    // Nobody executes a withdrawn approval.
    let (s, b) = w
        .call(
            Some("staff-bt2"),
            "POST",
            &format!("/api/v1/work-orders/{o}/execute"),
            None,
            Some("x1"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert_eq!(trips_of(&w, o).await, 0);
    let (_, case) = w.get("auditor", &format!("/api/v1/work-orders/{o}")).await;
    assert_eq!(case["withdrawn_by"], "staff-bt", "{case}");

    // Another staff member of the station withdraws someone else's approval; then
    // operations find nothing left to withdraw.
    let p = w.order_paid;
    let (s, b) = withdraw("staff-bt2", p, None, "w3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["decided_by"].as_str(), b["withdrawn_by"].as_str()),
        (Some("staff-bt"), Some("staff-bt2"))
    );
    let (s, b) = withdraw("ops", p, None, "w4").await;
    assert_eq!(
        (s, b["details"]["status"].as_str()),
        (409, Some("held")),
        "{b}"
    );

    // The endpoint is described, with its 409.
    let (_, doc) = w.get("ops", "/api/openapi.json").await;
    let op = &doc["paths"]["/api/v1/work-orders/{work_order_id}/withdraw"]["post"];
    assert!(op["responses"]["409"].is_object(), "{op}");
}

/// Idempotency: a repeat returns the stored answer, the same key with another body is
/// refused, and 20 concurrent repeats apply the payment once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_applied_once_per_idempotency_key() {
    let Some(w) = World::start_for("a_payment_is_applied_once_per_idempotency_key").await else {
        return;
    };
    idempotency_checks(&w).await;
}

async fn idempotency_checks(w: &World) {
    let body = json!({"account_id": A5, "amount": "25.50"});
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("idempotency-key-required")),
        "{b}"
    );
    let before = (w.balance_fen(A5).await, w.ledger_entries(A5).await);
    let (s1, first) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(body.clone()),
            Some("k-1"),
        )
        .await;
    assert_eq!(s1, 201, "{first}");
    assert_eq!(first["amount"], json!({"yuan": "25.50", "fen": 2550}));
    assert_eq!(first["channel"], "business-hall");
    let (s2, again) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(body.clone()),
            Some("k-1"),
        )
        .await;
    assert_eq!(
        (s2, &again),
        (201, &first),
        "a repeat gets the stored answer"
    );
    assert_eq!(
        (w.balance_fen(A5).await, w.ledger_entries(A5).await),
        (before.0 + 2550, before.1 + 1)
    );
    let other = json!({"account_id": A5, "amount": "99.00"});
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(other),
            Some("k-1"),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("idempotency-key-reused")),
        "{b}"
    );
    // Keys are per user: another person's same key is their own request.
    let (s, _) = w
        .call(
            Some("staff-bt2"),
            "POST",
            "/api/v1/payments",
            Some(body.clone()),
            Some("k-1"),
        )
        .await;
    assert_eq!(s, 201);
    // 20 concurrent repeats of a new key: one ledger entry, 20 equal answers.
    let entries = w.ledger_entries(A5).await;
    let balance = w.balance_fen(A5).await;
    let answers = futures_join_all((0..20).map(|_| {
        w.call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(body.clone()),
            Some("k-burst"),
        )
    }))
    .await;
    assert!(
        answers.iter().all(|(s, b)| *s == 201 && *b == answers[0].1),
        "{answers:?}"
    );
    assert_eq!(w.ledger_entries(A5).await, entries + 1, "applied once");
    assert_eq!(w.balance_fen(A5).await, balance + 2550);
    let applied: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM payments WHERE account_id = $1 AND channel_txn_id LIKE '%k-burst'",
    )
    .bind(A5)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(applied, 1);
}

/// `join_all` without another dependency: spawn-free, polls every future in turn.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Pagination walks every row exactly once; filters narrow; limits are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_filters_walk_every_visible_row_once() {
    let Some(w) = World::start_for("pages_and_filters_walk_every_visible_row_once").await else {
        return;
    };
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM decisions")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/decisions?limit=37&after={a}"),
            None => "/api/v1/decisions?limit=37".into(),
        };
        let (s, page) = w.get("auditor", &path).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 37);
        seen.extend(items.iter().map(|d| d["decision_id"].as_i64().unwrap()));
        match page["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    assert!(
        seen.windows(2).all(|p| p[0] < p[1]),
        "in key order, no repeats"
    );

    // County and station filters narrow, and cannot widen a station's view.
    let (_, hj) = w.get("ops", "/api/v1/accounts?county=hanjiang").await;
    let hj = hj["items"].as_array().unwrap();
    assert_eq!(hj.len(), 1);
    assert_eq!(hj[0]["account_id"], H1);
    let (_, bt) = w
        .get("ops", &format!("/api/v1/customers?station={BT}"))
        .await;
    assert!(
        bt["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["station_id"] == BT)
    );
    let (s, widened) = w
        .get("staff-bt", &format!("/api/v1/accounts?station={DW}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        widened["items"],
        json!([]),
        "a filter outside the scope gives nothing"
    );
    let (_, queue) = w
        .get(
            "staff-bt",
            "/api/v1/work-orders?kind=approve-disconnection&status=open",
        )
        .await;
    let queue = queue["items"].as_array().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["work_order_id"], w.order_open);

    for bad in ["limit=0", "limit=501", "limit=abc", "after=xyz"] {
        let (s, b) = w.get("auditor", &format!("/api/v1/decisions?{bad}")).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("bad-request")),
            "{bad}: {b}"
        );
    }
}

/// Accounts: balance in real time, ledger sums to it, usage by day, month and band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_reads_balance_ledger_and_usage() {
    let Some(w) = World::start_for("an_account_reads_balance_ledger_and_usage").await else {
        return;
    };
    let (s, a) = w.get("cust-a1", &format!("/api/v1/accounts/{A2}")).await;
    assert_eq!(s, 404, "{a}");
    let (_, a) = w.get("staff-dw", &format!("/api/v1/accounts/{A2}")).await;
    let balance = w.balance_fen(A2).await;
    assert_eq!(a["balance"]["fen"], balance);
    assert_eq!(a["balance"]["yuan"], feegate::money::format_yuan(balance));
    assert!(a["agreement"]["alarm_threshold"]["yuan"].is_string());
    let (_, ledger) = w
        .get(
            "staff-dw",
            &format!("/api/v1/accounts/{A2}/ledger?limit=500"),
        )
        .await;
    let sum: i64 = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"]["fen"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, balance, "the ledger sums to the balance");
    let (_, days) = w
        .get("staff-dw", &format!("/api/v1/accounts/{A2}/usage?by=day"))
        .await;
    let (_, months) = w
        .get("staff-dw", &format!("/api/v1/accounts/{A2}/usage?by=month"))
        .await;
    let (_, bands) = w
        .get("staff-dw", &format!("/api/v1/accounts/{A2}/usage?by=band"))
        .await;
    let total = |v: &Value, f: &str| -> i64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r[f].as_i64().unwrap())
            .sum()
    };
    let days_kwh: i64 = days
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["energy"]["centi_kwh"].as_i64().unwrap())
        .sum();
    let months_kwh: i64 = months
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["energy"]["centi_kwh"].as_i64().unwrap())
        .sum();
    let bands_kwh: i64 = bands
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["energy"]["centi_kwh"].as_i64().unwrap())
        .sum();
    assert!(days_kwh > 0);
    assert_eq!((months_kwh, bands_kwh), (days_kwh, days_kwh));
    assert_eq!(
        total(&months, "days"),
        days.as_array().unwrap().len() as i64
    );
    assert_eq!(months[0]["period"], "2013-01");
    let charged: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(charge_fen) AS BIGINT) FROM settlements WHERE account_id = $1",
    )
    .bind(A2)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    let day_charges: i64 = days
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["charge"]["fen"].as_i64().unwrap())
        .sum();
    assert_eq!(day_charges, charged);
    let (s, b) = w
        .get("staff-dw", &format!("/api/v1/accounts/{A2}/usage?by=week"))
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad-request")), "{b}");
    // A decision's full record says why.
    let (_, list) = w
        .get(
            "staff-dw",
            &format!("/api/v1/decisions?account={A2}&kind=tariff&limit=1"),
        )
        .await;
    let id = list["items"][0]["decision_id"].as_i64().unwrap();
    let (s, d) = w.get("staff-dw", &format!("/api/v1/decisions/{id}")).await;
    assert_eq!(s, 200);
    assert!(
        d["explanation"].as_str().is_some_and(|e| !e.is_empty()),
        "{d}"
    );
    assert_eq!(d["input"]["account_id"], A2);
    let (s, _) = w.get("staff-bt", &format!("/api/v1/decisions/{id}")).await;
    assert_eq!(s, 404, "another station's decision");
}

/// Onboarding through the API: the account is active with its initial prepayment, in
/// one transaction; bad input names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_creates_an_active_account_with_its_prepayment() {
    let Some(w) =
        World::start_for("onboarding_creates_an_active_account_with_its_prepayment").await
    else {
        return;
    };
    let form = json!({
        "county": "xianyou", "station_id": BT, "customer_id": "C-NEW-1", "customer_name": "新客户",
        "master_mobile": "13800000000", "customer_class": "low-voltage-residential",
        "meter_id": "M-NEW-1", "meter": {"protocol": "modbus-tcp", "gateway": "127.0.0.1:502", "unit_id": 3},
        "account_id": "A-NEW-1", "alarm_threshold": "30.00", "mobile": "13800000001",
        "initial_prepayment": "200.00"
    });
    let (s, b) = w
        .call(
            Some("staff-dw"),
            "POST",
            "/api/v1/agreements",
            Some(form.clone()),
            Some("ob-0"),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("forbidden")),
        "another station's form: {b}"
    );
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements",
            Some(form.clone()),
            Some("ob-1"),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["balance"]["fen"], 20_000);
    assert_eq!(
        b["mobile_mismatch"], true,
        "the agreement's number differs from the master data"
    );
    assert_eq!(w.balance_fen("A-NEW-1").await, 20_000);
    let (s, again) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements",
            Some(form.clone()),
            Some("ob-1"),
        )
        .await;
    assert_eq!((s, &again), (201, &b), "a retry is not a second onboarding");
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements",
            Some(form.clone()),
            Some("ob-2"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    let mut bad = form.clone();
    bad["mobile"] = json!("12345");
    bad["customer_id"] = json!("C-NEW-2");
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements",
            Some(bad),
            Some("ob-3"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad-request")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("12345"), "{b}");
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE customer_id = 'C-NEW-2'")
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(exists, 0, "nothing half-applied");
}

/// (user, method, path, body, idempotency key, status, code)
type ErrorCase = (
    Option<&'static str>,
    &'static str,
    &'static str,
    Option<Value>,
    Option<&'static str>,
    u16,
    &'static str,
);

/// Error answers: JSON `{code, message}` with stable codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_a_stable_code_and_a_message() {
    let Some(w) = World::start_for("errors_are_json_with_a_stable_code_and_a_message").await else {
        return;
    };
    let cases: Vec<ErrorCase> = vec![
        (
            None,
            "GET",
            "/api/v1/accounts",
            None,
            None,
            401,
            "unauthenticated",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/accounts/nope",
            None,
            None,
            404,
            "not-found",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/work-orders/abc",
            None,
            None,
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/policies?kind=astrology",
            None,
            None,
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/collection?from=2013-01-01&to=2014-01-01",
            None,
            None,
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A1, "amount": 10.5})),
            Some("e1"),
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A1, "amount": "1.234"})),
            Some("e2"),
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A1, "amount": "-5"})),
            Some("e3"),
            400,
            "bad-request",
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A1, "amount": "5.00"})),
            None,
            400,
            "idempotency-key-required",
        ),
    ];
    // A revoked token stops working at the next request (no cache of token lookups).
    let issued = issue_token(&w.db, "ops", "to revoke", None).await.unwrap();
    let url = format!("http://{}/api/v1/accounts", w.addr);
    let ok = w
        .client
        .get(&url)
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    feegate::auth::store::revoke_token(&w.db, issued.token_id)
        .await
        .unwrap();
    let gone = w
        .client
        .get(&url)
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 401);
    for (user, method, path, body, key, want, code) in cases {
        let (s, b) = w.call(user, method, path, body, key).await;
        assert_eq!(
            (s, b["code"].as_str().unwrap_or("")),
            (want, code),
            "{method} {path}: {b}"
        );
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
}

/// (user, method, path, body, where the message says the NUL is)
type NulCase = (
    Option<&'static str>,
    &'static str,
    String,
    Option<Value>,
    &'static str,
);

/// A NUL character (U+0000) in a path parameter, a query parameter or a JSON body string
/// is 400 `nul-character` on both backends (PostgreSQL text cannot hold it: it was a
/// 500 there), refused before any query runs: before the token lookup (no credentials
/// still gets 400) and before an Idempotency-Key is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_before_any_query() {
    let Some(w) = World::start_for("a_nul_character_is_refused_before_any_query").await else {
        return;
    };
    let o = w.order_open;
    let cases: Vec<NulCase> = vec![
        (
            Some("ops"),
            "GET",
            "/api/v1/accounts/35%0000001".into(),
            None,
            "path parameter account_id",
        ),
        (
            Some("ops"),
            "GET",
            format!("/api/v1/accounts/{A1}%00/balance"),
            None,
            "path parameter account_id",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/customers/%00".into(),
            None,
            "path parameter customer_id",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/meters/M%00".into(),
            None,
            "path parameter meter_id",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/work-orders/%00".into(),
            None,
            "path parameter work_order_id",
        ),
        (
            None,
            "GET",
            "/api/v1/accounts/%00".into(),
            None,
            "path parameter account_id",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/accounts?county=xian%00you".into(),
            None,
            "query parameter county",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/customers?station=%00".into(),
            None,
            "query parameter station",
        ),
        (
            Some("auditor"),
            "GET",
            "/api/v1/decisions?account=%00&kind=tariff".into(),
            None,
            "query parameter account",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/work-orders?account=A%00".into(),
            None,
            "query parameter account",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/payments?account=%00".into(),
            None,
            "query parameter account",
        ),
        (
            Some("ops"),
            "GET",
            format!("/api/v1/accounts/{A1}/ledger?after=%00"),
            None,
            "query parameter after",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/policies?county=%00".into(),
            None,
            "query parameter county",
        ),
        (
            Some("ops"),
            "GET",
            "/api/v1/accounts?%00=1".into(),
            None,
            "query parameter name",
        ),
        (
            Some("staff-bt"),
            "POST",
            "/api/v1/payments".into(),
            Some(json!({"account_id": "35000\u{0}00001", "amount": "1.00"})),
            "JSON body field account_id",
        ),
        (
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements".into(),
            Some(
                json!({"county": "xianyou", "customer_name": "王\u{0}", "meter": {"protocol": "modbus-tcp"}}),
            ),
            "JSON body field customer_name",
        ),
        (
            Some("staff-bt"),
            "POST",
            "/api/v1/agreements".into(),
            Some(json!({"meter": {"protocol": "modbus-tcp", "gateway": "10.0.0.1:502\u{0}"}})),
            "JSON body field meter.gateway",
        ),
        (
            Some("staff-bt"),
            "POST",
            format!("/api/v1/work-orders/{o}/hold"),
            Some(json!({"note": "\u{0}"})),
            "JSON body field note",
        ),
    ];
    for (i, (user, method, path, body, place)) in cases.into_iter().enumerate() {
        let key = format!("nul-{i}");
        let (s, b) = w.call(user, method, &path, body, Some(&key)).await;
        assert_eq!(
            (s, b["code"].as_str().unwrap_or("")),
            (400, "nul-character"),
            "{method} {path}: {b}"
        );
        let message = b["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with(place) && message.contains("U+0000"),
            "{method} {path}: {message}"
        );
    }
    // Nothing was reserved, held or paid.
    let reserved: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_idempotency WHERE idempotency_key LIKE 'nul-%'",
    )
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(reserved, 0);
    let (_, order) = w.get("ops", &format!("/api/v1/work-orders/{o}")).await;
    assert_eq!(order["status"], "open", "{order}");
    // Not a NUL: an escaped `%00` in a value, an escaped backslash before `u0000`.
    let (s, b) = w.get("ops", "/api/v1/accounts?county=%2500").await;
    assert_eq!((s, &b["items"]), (200, &json!([])), "{b}");
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            &format!("/api/v1/work-orders/{}/hold", w.order_paid),
            Some(json!({"note": "a literal \\u0000"})),
            Some("not-nul"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    // The same middleware reads the body: one over axum's 2 MB limit is JSON too.
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A1, "amount": "1.00", "pad": "x".repeat(3 << 20)})),
            Some("too-large"),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (413, Some("body-too-large")),
        "{b}"
    );
}

/// A filter value that does not parse is 400 `bad-request` whose message names the
/// parameter, the value and the form expected (it used to be an empty list). Empty
/// values are no filter. A row is (path, parameter, value, a piece of the expected form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_filter_is_a_bad_request_naming_it() {
    let Some(w) = World::start_for("an_unparseable_filter_is_a_bad_request_naming_it").await else {
        return;
    };
    let usage = format!("/api/v1/accounts/{A1}/usage");
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            "/api/v1/decisions?kind=astrology".into(),
            "kind",
            "astrology",
            "tariff, warning, notice, cutoff, reconnection",
        ),
        (
            "/api/v1/decisions?from=yesterday".into(),
            "from",
            "yesterday",
            "YYYY-MM-DD",
        ),
        (
            "/api/v1/decisions?to=2013-13-01".into(),
            "to",
            "2013-13-01",
            "YYYY-MM-DD",
        ),
        (
            "/api/v1/decisions?after=xyz".into(),
            "after",
            "xyz",
            "next_after",
        ),
        (
            "/api/v1/decisions?limit=ten".into(),
            "limit",
            "ten",
            "digits only",
        ),
        (
            "/api/v1/work-orders?kind=cutoff".into(),
            "kind",
            "cutoff",
            "approve-disconnection, offline-follow-up",
        ),
        (
            "/api/v1/work-orders?status=closed".into(),
            "status",
            "closed",
            "open, approved, held, done, cancelled",
        ),
        (
            "/api/v1/policies?kind=astrology".into(),
            "kind",
            "astrology",
            "tariff, warning, notice, cutoff",
        ),
        (
            "/api/v1/policies/versions?kind=Tariff".into(),
            "kind",
            "Tariff",
            "tariff, warning, notice, cutoff",
        ),
        (
            "/api/v1/policies/activations?kind=x".into(),
            "kind",
            "x",
            "tariff, warning, notice, cutoff",
        ),
        (
            "/api/v1/collection?from=2013-02-30".into(),
            "from",
            "2013-02-30",
            "YYYY-MM-DD",
        ),
        (
            "/api/v1/collection?from=2013-02-01&to=soon".into(),
            "to",
            "soon",
            "YYYY-MM-DD",
        ),
        (format!("{usage}?from=jan"), "from", "jan", "YYYY-MM-DD"),
        (
            format!("{usage}?to=2013-01-01T00:00"),
            "to",
            "2013-01-01T00:00",
            "YYYY-MM-DD",
        ),
        (format!("{usage}?by=week"), "by", "week", "day, month, band"),
        (
            "/api/v1/accounts?limit=-1".into(),
            "limit",
            "-1",
            "digits only",
        ),
        (
            "/api/v1/relay-commands?limit=1e3".into(),
            "limit",
            "1e3",
            "digits only",
        ),
        (
            "/api/v1/payments?limit=99999999999".into(),
            "limit",
            "99999999999",
            "digits only",
        ),
    ];
    for (path, param, value, expected) in cases {
        let (s, b) = w.get("ops", &path).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("bad-request")),
            "{path}: {b}"
        );
        let message = b["message"].as_str().unwrap_or("");
        for piece in [param, value, expected] {
            assert!(
                message.contains(piece),
                "{path}: {piece:?} not in {message:?}"
            );
        }
    }
    // Well-formed and empty filters still answer.
    let (s, all) = w.get("auditor", "/api/v1/decisions?limit=500").await;
    assert_eq!(s, 200, "{all}");
    let (s, empty) = w
        .get(
            "auditor",
            "/api/v1/decisions?limit=500&kind=&from=&to=&account=",
        )
        .await;
    assert_eq!((s, &empty["items"]), (200, &all["items"]));
    let (s, tariff) = w
        .get(
            "auditor",
            "/api/v1/decisions?kind=tariff&from=2013-01-01&to=2013-12-31",
        )
        .await;
    assert_eq!(s, 200, "{tariff}");
    let items = tariff["items"].as_array().unwrap();
    assert!(
        !items.is_empty() && items.iter().all(|d| d["kind"] == "tariff"),
        "{tariff}"
    );
    for path in [
        "/api/v1/work-orders?kind=approve-disconnection&status=open".to_string(),
        "/api/v1/policies?kind=cutoff".into(),
        format!("{usage}?by=month&from=2013-01-01&to=2013-01-31"),
    ] {
        let (s, b) = w.get("ops", &path).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
}

/// An unknown path is 404 `not-found` and a method a route does not take is 405
/// `method-not-allowed` (with the `Allow` header), both with the JSON error body. A row
/// is (method, path, status, code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_the_json_error() {
    let Some(w) = World::start_for("unknown_routes_and_methods_answer_the_json_error").await else {
        return;
    };
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        ("GET", "/api/v1/nope".into(), 404, "not-found", None),
        ("GET", "/api/v2/accounts".into(), 404, "not-found", None),
        (
            "GET",
            format!("/api/v1/accounts/{A1}/nope"),
            404,
            "not-found",
            None,
        ),
        ("POST", "/api/v1/account".into(), 404, "not-found", None),
        ("GET", "/nowhere".into(), 404, "not-found", None),
        (
            "DELETE",
            "/api/v1/payments".into(),
            405,
            "method-not-allowed",
            Some("GET,HEAD,POST"),
        ),
        (
            "PUT",
            format!("/api/v1/accounts/{A1}"),
            405,
            "method-not-allowed",
            Some("GET,HEAD"),
        ),
        (
            "GET",
            "/api/v1/agreements".into(),
            405,
            "method-not-allowed",
            Some("POST"),
        ),
        (
            "GET",
            "/api/v1/work-orders/1/approve".into(),
            405,
            "method-not-allowed",
            Some("POST"),
        ),
        (
            "POST",
            "/api/openapi.json".into(),
            405,
            "method-not-allowed",
            Some("GET,HEAD"),
        ),
    ];
    for (method, path, want, code, allow) in cases {
        for token in [None, Some(&w.tokens["ops"])] {
            let mut req = w
                .client
                .request(method.parse().unwrap(), format!("http://{}{path}", w.addr));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let got_allow = r
                .headers()
                .get("allow")
                .map(|a| a.to_str().unwrap().replace(' ', ""));
            let json = r
                .headers()
                .get("content-type")
                .is_some_and(|c| c == "application/json");
            let b: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, b["code"].as_str()),
                (want, Some(code)),
                "{method} {path}: {b}"
            );
            assert!(json, "{method} {path}: not JSON");
            let message = b["message"].as_str().unwrap_or("");
            assert!(
                message.contains(method) && message.contains(&path),
                "{message}"
            );
            if let Some(a) = allow {
                assert_eq!(got_allow.as_deref(), Some(a), "{method} {path}");
            }
        }
    }
}

/// The OpenAPI document describes every `/api/v1` route the router has: the routes are
/// read from the router itself, not from a list in this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_api_route() {
    let Some(w) = World::start_for("the_openapi_document_describes_every_api_route").await else {
        return;
    };
    let (s, doc) = w.get("ops", "/api/openapi.json").await;
    assert_eq!(s, 200);
    let described: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routes = feegate::api::route_paths();
    assert!(routes.len() >= 20, "{routes:?}");
    for r in &routes {
        assert!(
            described.contains(r),
            "route {r} is not in the OpenAPI document"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    // Every schema a response or request names is in the document.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for (i, _) in text.match_indices("#/components/schemas/") {
        let name: String = text[i + 21..].chars().take_while(|c| *c != '"').collect();
        assert!(
            schemas.contains_key(&name),
            "schema {name} is referenced but not described"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The same API on PostgreSQL: scopes and the concurrent idempotent payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serves_the_same_api() {
    let Some(pg) = common::pg_database("postgres_serves_the_same_api").await else {
        return;
    };
    let w = World::start(Some(pg.url.clone())).await;
    let (s, _) = w.get("cust-a1", &format!("/api/v1/accounts/{A5}")).await;
    assert_eq!(s, 404);
    let (s, a) = w.get("staff-bt", &format!("/api/v1/accounts/{A5}")).await;
    assert_eq!(s, 200, "{a}");
    idempotency_checks(&w).await;
    let (s, _) = w.get("auditor", "/api/v1/decisions?limit=5").await;
    assert_eq!(s, 200);
}

/// `feegate bench api` end to end on a few accounts for a second: every request answered
/// 200 with the station-staff token it issues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_bench_drives_balance_queries_without_errors() {
    let Some(tdb) =
        common::test_database("the_api_bench_drives_balance_queries_without_errors").await
    else {
        return;
    };
    let f = feegate::bench::api::api(&feegate::bench::api::ApiBenchOptions {
        accounts: 50,
        connections: 4,
        seconds: 1,
        db_url: Some(tdb.url.clone()),
        data: common::shared_data("lcl_2013_daily_kwh_100hh.csv"),
    })
    .await
    .unwrap();
    assert_eq!(f.errors, 0, "{f:?}");
    assert!(
        f.requests > 0 && f.p50_ms > 0.0 && f.p99_ms >= f.p50_ms && f.max_ms >= f.p99_ms,
        "{f:?}"
    );
}

/// A call-before-reconnection order (a customer disconnected for months pays: the
/// policy says call first) is completed through `POST /work-orders/{id}/reconnect` by
/// station staff of its station or operations, which reconnects once; other stations
/// get 404, the auditor, customers and engineers 403; another kind, a second completion
/// and a balance below zero are 409 and command nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_first_order_is_completed_through_the_api_once() {
    let Some(w) = World::start_for("a_call_first_order_is_completed_through_the_api_once").await
    else {
        return;
    };
    sqlx::query("UPDATE accounts SET relay_state = 'open', disconnected_at = '2012-11-01 10:00:00' WHERE account_id = $1")
        .bind(A5)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let (s, paid) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/payments",
            Some(json!({"account_id": A5, "amount": "10.00"})),
            Some("cf-pay"),
        )
        .await;
    assert_eq!(
        (s, paid["reconnection"].as_str()),
        (201, Some("call-first")),
        "{paid}"
    );
    let id: i64 = sqlx::query_scalar(
        "SELECT work_order_id FROM work_orders WHERE account_id = $1 AND kind = 'call-before-reconnection' AND status = 'open'",
    )
    .bind(A5)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/work-orders/{id}/reconnect");
    let commands = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM relay_commands WHERE account_id = $1 AND command = 'direct-close'",
        )
        .bind(A5)
        .fetch_one(&w.db.pool)
        .await
        .unwrap()
    };
    let note = Some(json!({"note": "called, customer at home"}));
    for (user, status) in [
        ("auditor", 403),
        ("cust-a1", 403),
        ("eng-xy", 403),
        ("staff-dw", 404),
        ("staff-hj", 404),
    ] {
        let (s, b) = w
            .call(
                Some(user),
                "POST",
                &path,
                note.clone(),
                Some(&format!("cf-{user}")),
            )
            .await;
        assert_eq!(s, status, "{user}: {b}");
    }
    let (s, b) = w
        .call(None, "POST", &path, note.clone(), Some("cf-anon"))
        .await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = w
        .call(Some("staff-bt"), "POST", &path, note.clone(), None)
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("idempotency-key-required")),
        "{b}"
    );
    let (s, b) = w
        .call(
            Some("staff-bt"),
            "POST",
            "/api/v1/work-orders/987654/reconnect",
            None,
            Some("cf-unknown"),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = w
        .call(
            Some("ops"),
            "POST",
            &format!("/api/v1/work-orders/{}/reconnect", w.order_open),
            None,
            Some("cf-kind"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("approve-disconnection"),
        "{b}"
    );
    assert_eq!(commands().await, 0, "nothing commanded by the refusals");

    let (s, done) = w
        .call(Some("staff-bt"), "POST", &path, note.clone(), Some("cf-1"))
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["outcome"], "reconnecting");
    assert_eq!(done["order"]["status"], "done");
    assert_eq!(done["order"]["decided_by"], "staff-bt");
    let key: String =
        sqlx::query_scalar("SELECT decision_key FROM relay_commands WHERE command_id = $1")
            .bind(done["command_id"].as_i64().unwrap())
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(key, format!("work-order:{id}"));
    assert_eq!(commands().await, 1);
    // The same request again is replayed; another request finds the order done.
    let (s, replay) = w
        .call(Some("staff-bt"), "POST", &path, note.clone(), Some("cf-1"))
        .await;
    assert_eq!((s, &replay), (200, &done));
    let (s, b) = w
        .call(Some("staff-bt2"), "POST", &path, None, Some("cf-2"))
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert_eq!(b["details"]["status"], "done", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("already done"),
        "{b}"
    );
    assert_eq!(commands().await, 1, "never a second command");

    // A1 is in arrears: an order on it is refused until the customer pays.
    sqlx::query("UPDATE accounts SET relay_state = 'open', disconnected_at = '2012-11-01 10:00:00' WHERE account_id = $1")
        .bind(A1)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let arrears: i64 = sqlx::query_scalar(
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
         VALUES ('call-before-reconnection', $1, $2, 'call-before-reconnection:test', 'open', '{}', '2013-01-21 09:00:00')
         RETURNING work_order_id",
    )
    .bind(A1)
    .bind(BT)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    let (s, b) = w
        .call(
            Some("ops"),
            "POST",
            &format!("/api/v1/work-orders/{arrears}/reconnect"),
            None,
            Some("cf-arrears"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("in-arrears")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("must pay first"),
        "{b}"
    );
    assert_eq!(b["details"]["balance"]["fen"], -3_000, "{b}");
    let (s, o) = w
        .get("ops", &format!("/api/v1/work-orders/{arrears}"))
        .await;
    assert_eq!((s, o["status"].as_str()), (200, Some("open")), "{o}");
    let a1_commands: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM relay_commands WHERE account_id = $1")
            .bind(A1)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(a1_commands, 0);
}
