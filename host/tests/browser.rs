//! The web console in a real browser: Debian's chromium, headless, driven through
//! chromedriver with fantoccini.
//!
//! The county is the demo's simulated one, run in this process: its Modbus meter
//! simulator answers on loopback and its clock is simulated, stopped on a weekday at
//! 10:30 just after the cutoff run opened an approval work order. The console is served
//! on a loopback port by the same router `feegate serve` mounts, over that county's
//! host. (The `feegate serve` binary runs on the wall clock, where the safety floor
//! refuses every trip at night, at weekends and on stale readings — so a test of a trip
//! through the binary would pass or fail with the time of day it runs.)
//!
//! One test, in order: station staff A approves the case; A is offered no execute
//! button (two-person rule); staff B executes it; the trip goes to the simulated meter,
//! which confirms it, and the station page shows the relay open without a reload. Then the customer logs in, pays through the app channel, and sees
//! the balance move.
//!
//! Without chromedriver the test fails when `CI` is set and is skipped (with a message)
//! otherwise; `make test` installs chromium and chromium-driver where missing.

mod common;

use fantoccini::{Client, ClientBuilder, Locator};
use feegate::auth::Role;
use feegate::auth::store::{AuthConfig, NewUser, create_user};
use feegate::console::ConsoleState;
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

fn chromedriver() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver(std::process::Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_browser(driver: &std::path::Path) -> (Driver, Client) {
    let port = common::free_port();
    let child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child, port);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            // A browser in China: the console answers in Chinese, its default.
            "prefs": {"intl": {"accept_languages": "zh-CN,zh"}}
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.1);
    // Other crates in the build enable more than one rustls provider: pick one (the
    // WebDriver connection is plain HTTP on loopback anyway).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = std::time::Instant::now();
    let client = loop {
        match ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) if began.elapsed() > Duration::from_secs(20) => {
                panic!("chromedriver did not start a session: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (driver, client)
}

async fn login(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/console/login")).await.unwrap();
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let who = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("whoami"))
        .await
        .unwrap_or_else(|e| panic!("{user} is not logged in: {e}"));
    assert_eq!(who.text().await.unwrap(), user);
    assert_eq!(
        c.find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("zh-CN"),
        "the browser asks for Chinese"
    );
}

async fn logout(c: &Client) {
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("login"))
        .await
        .unwrap();
}

/// Saves a screenshot as `DIR/name.png` when `FEEGATE_SCREENSHOTS=DIR` is set (to look
/// at the pages; nothing is compared).
async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("FEEGATE_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Waits until `css` matches an element (the page updates itself with htmx).
async fn wait_for(c: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(15))
        .every(Duration::from_millis(250))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{what}: no element matches {css} within 15 s: {e}"))
}

/// Runs the simulated county until the first approval work order opens: full days
/// while none has (found with a first run; the simulation is deterministic for a
/// seed), then that day up to the 09:00 cutoff run, the clock left at 10:30.
async fn county_with_an_open_case() -> Option<(feegate::demo::Scenario, common::TestDb)> {
    let days_max = 30;
    let (mut opts, scout) = common::small_county_db("browser test", 40, days_max, 2013).await?;
    let mut first = feegate::demo::Scenario::new(&opts, &[]).await.unwrap();
    let mut day = None;
    for d in 0..days_max {
        let date = opts.start + chrono::Duration::days(i64::from(d));
        first.run_day(date, false).await.unwrap();
        let opened: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'approve-disconnection'",
        )
        .fetch_one(&first.host.db.pool)
        .await
        .unwrap();
        if opened > 0 {
            day = Some(d);
            break;
        }
    }
    drop(first);
    drop(scout);
    let day = day.expect("the simulated county opens an approval work order within 30 days");
    let tdb = common::test_database("browser test").await?;
    opts.db_url = Some(tdb.url.clone());
    let mut s = feegate::demo::Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(day).await.unwrap();
    let date = opts.start + chrono::Duration::days(i64::from(day));
    s.run_day(date, true).await.unwrap();
    for (h, m) in [(8, 0), (9, 0)] {
        s.advance(date.and_hms_opt(h, m, 0).unwrap()).unwrap();
        if h == 9 {
            s.host.run_cutoff().await.unwrap();
        }
        s.host.drive_relays().await.unwrap();
        s.host.run_outbox().await.unwrap();
    }
    s.advance(date.and_hms_opt(10, 30, 0).unwrap()).unwrap();
    Some((s, tdb))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_approve_and_execute_a_cutoff_and_a_customer_pays_in_the_browser() {
    let Some(driver) = chromedriver() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "chromedriver is not installed: `make test` installs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
            );
        }
        eprintln!(
            "SKIPPED browser test: chromedriver not found on PATH; install it with `apt-get install -y chromium chromium-driver` or run `make test`"
        );
        return;
    };
    let Some((scenario, _db)) = county_with_an_open_case().await else {
        return;
    };
    let host = Arc::new(scenario.host.clone());
    let db = host.db.clone();
    let (order, account, station): (i64, String, String) = sqlx::query_as(
        "SELECT w.work_order_id, w.account_id, a.station_id FROM work_orders w JOIN accounts a ON a.account_id = w.account_id
         WHERE w.kind = 'approve-disconnection' AND w.status = 'open' ORDER BY w.work_order_id LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("an open approval work order at 10:30 of that day");
    for (name, role, county, st, acct) in [
        (
            "staff-a",
            Role::StationStaff,
            Some("xianyou"),
            Some(station.as_str()),
            None,
        ),
        (
            "staff-b",
            Role::StationStaff,
            Some("xianyou"),
            Some(station.as_str()),
            None,
        ),
        (
            "customer",
            Role::Customer,
            None,
            None,
            Some(account.as_str()),
        ),
    ] {
        create_user(
            &db,
            &NewUser {
                username: name.into(),
                role: Some(role),
                county: county.map(Into::into),
                station_id: st.map(Into::into),
                account_id: acct.map(Into::into),
                password: Some(PASSWORD.into()),
            },
        )
        .await
        .unwrap();
    }
    // The app channel, with reconnection by this county's host, as `feegate serve` sets
    // it up from `[channels]`.
    let channels_cfg = feegate::channels::config::ChannelsConfig::parse(
        "[channels.app]\nauth = \"hmac-sha256\"\nsecret = \"browser-test-secret-0123456789\"\nmax_amount_yuan = \"5000.00\"\nconsole_sandbox = true\n",
        std::path::Path::new("."),
        |_| None,
    )
    .unwrap();
    let service = feegate::channels::service::Service::start(
        db.clone(),
        channels_cfg,
        scenario.clock.clone(),
        Some(host.clone()),
    )
    .await
    .unwrap();
    let state = ConsoleState::new(
        db.clone(),
        feegate::auth::extract::AuthState {
            db: db.clone(),
            config: AuthConfig::default(),
        },
        vec![host.clone()],
        Some(service.state.clone()),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = feegate::console::router(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (_driver, c) = start_browser(&driver).await;
    let result = async {
        // Staff A approves.
        login(&c, &base, "staff-a").await;
        c.goto(&format!("{base}/console/station")).await.unwrap();
        let row = format!("#case-{order}");
        wait_for(&c, &format!("{row}[data-status='open'] button.approve"), "the open case")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&c, &format!("{row}[data-status='approved'] .waiting-second"), "A's approval")
            .await;
        screenshot(&c, "station-approved").await;
        assert!(
            c.find(Locator::Css(&format!("{row} button.execute"))).await.is_err(),
            "the approver is offered no execute button"
        );
        // And the server refuses it if the approver posts it anyway (from the page, so
        // with the page's Origin and session): 409, nothing changes.
        let status = c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: ''})
                   .then(r => done(r.status));",
                vec![serde_json::json!(format!("/console/cases/{order}/execute"))],
            )
            .await
            .unwrap();
        assert_eq!(status, serde_json::json!(409), "two-person rule");
        let still: String = sqlx::query_scalar("SELECT status FROM work_orders WHERE work_order_id = $1")
            .bind(order)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(still, "approved");
        logout(&c).await;

        // Staff B executes: the trip passes the safety floor now and goes to the
        // simulated meter at once; the station page shows the relay open once the meter
        // confirms it (its relay section refreshes itself).
        login(&c, &base, "staff-b").await;
        c.goto(&format!("{base}/console/station")).await.unwrap();
        wait_for(&c, &format!("{row}[data-status='approved'] button.execute"), "B's execute button")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&c, &format!("{row}[data-status='done']"), "the executed case").await;
        wait_for(
            &c,
            &format!("#done-{order} td.relay[data-state='open']"),
            "the relay state after the meter confirmed the trip",
        )
        .await;
        screenshot(&c, "station-tripped").await;
        c.goto(&format!("{base}/console/cases/{order}")).await.unwrap();
        wait_for(&c, "#balance-chart svg", "the case's balance chart").await;
        screenshot(&c, "case").await;
        let (status, executed_by, decided_by): (String, Option<String>, Option<String>) =
            sqlx::query_as("SELECT status, executed_by, decided_by FROM work_orders WHERE work_order_id = $1")
                .bind(order)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            (status.as_str(), executed_by.as_deref(), decided_by.as_deref()),
            ("done", Some("staff-b"), Some("staff-a"))
        );

        // B also records an offline follow-up (抄收员线下催费) of the station as done.
        let follow_up: i64 = sqlx::query_scalar(
            "SELECT MIN(w.work_order_id) FROM work_orders w JOIN accounts a ON a.account_id = w.account_id
             WHERE w.kind = 'offline-follow-up' AND w.status = 'open' AND a.station_id = $1",
        )
        .bind(&station)
        .fetch_one(&db.pool)
        .await
        .expect("the station has an open offline follow-up that day");
        c.goto(&format!("{base}/console/station")).await.unwrap();
        wait_for(&c, &format!("#follow-up-{follow_up} button"), "the follow-up")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&c, "#follow-ups", "the station page again").await;
        // The click posts and reloads the page: the old page (with the row) may still be
        // showing for a moment, so wait for the row to go rather than look once.
        let gone = std::time::Instant::now();
        while c.find(Locator::Id(&format!("follow-up-{follow_up}"))).await.is_ok() {
            assert!(
                gone.elapsed() < Duration::from_secs(15),
                "a follow-up done leaves the list"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (fu_status, fu_by): (String, Option<String>) = sqlx::query_as(
            "SELECT status, decided_by FROM work_orders WHERE work_order_id = $1",
        )
        .bind(follow_up)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!((fu_status.as_str(), fu_by.as_deref()), ("done", Some("staff-b")));
        logout(&c).await;

        // The customer pays 100.00 through the app channel and sees the balance move.
        login(&c, &base, "customer").await;
        let balance = wait_for(&c, "#balance", "the customer's balance").await;
        let before: i64 = balance.attr("data-fen").await.unwrap().unwrap().parse().unwrap();
        c.find(Locator::Id("amount"))
            .await
            .unwrap()
            .send_keys("100.00")
            .await
            .unwrap();
        c.find(Locator::Id("pay")).await.unwrap().click().await.unwrap();
        wait_for(&c, "#pay-notice", "the payment's confirmation").await;
        let after: i64 = c
            .find(Locator::Id("balance"))
            .await
            .unwrap()
            .attr("data-fen")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(after, before + 10_000, "the balance moved by the payment");
        screenshot(&c, "account-paid").await;
        let entries: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payments WHERE channel = 'app' AND account_id = $1 AND status = 'applied'",
        )
        .bind(&account)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(entries, 1, "one app-channel payment applied");
    }
    .await;
    let _ = c.close().await;
    result
}
