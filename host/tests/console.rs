//! The web console over HTTP, without a browser: `feegate serve` (the binary) on a demo
//! county, probed on loopback as each role. Who sees what, the language switch, the
//! business-hall form, paying through the app channel, cross-site POSTs refused, logout
//! ending the session, and the failed-login limit.

mod common;

use common::{ServeProcess, free_port};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PASSWORD: &str = "console test password";

/// An HTTP answer: status, headers (lower-case names; repeated ones joined by "\n"),
/// body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn location(&self) -> &str {
        self.header("location")
    }
}

/// One request to the server on `port`, as a browser on the console's own pages sends
/// it (`Host` with the port; `Origin` as given).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let e = headers.entry(k.trim().to_ascii_lowercase()).or_default();
            if !e.is_empty() {
                e.push('\n');
            }
            e.push_str(v.trim());
        }
    }
    // Bodies are small; a chunked one is joined by dropping the chunk-size lines.
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let bytes = after.as_bytes();
            out.push_str(&String::from_utf8_lossy(&bytes[..n.min(bytes.len())]));
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A logged-in console user.
struct Session {
    port: u16,
    cookie: String,
}

impl Session {
    fn get(&self, path: &str) -> Answer {
        request(self.port, "GET", path, &[("Cookie", &self.cookie)], "")
    }
    fn post(&self, path: &str, form: &str, origin: &str) -> Answer {
        request(
            self.port,
            "POST",
            path,
            &[
                ("Cookie", &self.cookie),
                ("Origin", origin),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form,
        )
    }
}

fn login_answer(port: u16, user: &str, password: &str, lang: &str) -> Answer {
    request(
        port,
        "POST",
        &format!("/console/login?lang={lang}"),
        &[
            ("Origin", &format!("http://127.0.0.1:{port}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("username={user}&password={}", password.replace(' ', "+")),
    )
}

fn login(port: u16, user: &str) -> Session {
    let a = login_answer(port, user, PASSWORD, "zh");
    assert_eq!(a.status, 303, "{user} logs in: {}", a.body);
    let cookie = a
        .header("set-cookie")
        .lines()
        .find(|c| c.starts_with("feegate_session="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie in {:?}", a.headers))
        .to_string();
    assert!(
        a.header("set-cookie").contains("HttpOnly")
            && a.header("set-cookie").contains("SameSite=Strict"),
        "{}",
        a.header("set-cookie")
    );
    Session { port, cookie }
}

fn feegate(args: &[&str], db: &str, stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = std::process::Command::new(common::feegate_bin());
    cmd.args(args)
        .current_dir(common::repo())
        .env("FEEGATE_DB", db)
        .env("FEEGATE_COMPONENTS", common::components_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{s}\n").as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "feegate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn scalar_i64(db: &str, sql: &str, arg: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(db).await.unwrap();
    let v: i64 = sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_its_pages_forms_work_cross_site_posts_and_dead_sessions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("console.db").display());
    console_checks(&dir, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_the_same_on_postgresql() {
    let Some(pg) = common::pg_database("console on PostgreSQL").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    console_checks(&dir, &pg.url).await;
}

/// Everything above, on the database at `db` (empty), with `dir` for the config.
async fn console_checks(dir: &tempfile::TempDir, db: &str) {
    let db = db.to_string();
    // Eight accounts over the four stations of the demo county, three settled days.
    feegate(
        &["demo", "--meters", "8", "--days", "3", "--db", &db],
        &db,
        None,
    );
    for (user, extra) in [
        (
            "staff-bt",
            vec![
                "--role",
                "station-staff",
                "--county",
                "xianyou",
                "--station",
                "XY-BT",
            ],
        ),
        (
            "engineer",
            vec!["--role", "county-engineer", "--county", "xianyou"],
        ),
        ("auditor", vec!["--role", "auditor"]),
        ("ops", vec!["--role", "operations"]),
        (
            "cust-1",
            vec!["--role", "customer", "--account", "3500000001"],
        ),
    ] {
        let mut args = vec!["user", "add", user];
        args.extend(extra);
        args.push("--password-stdin");
        feegate(&args, &db, Some(PASSWORD));
    }
    std::fs::write(
        dir.path().join("channels.toml"),
        "[channels.app]\nauth = \"hmac-sha256\"\nsecret = \"console-test-secret-0123456789\"\nmax_amount_yuan = \"5000.00\"\nconsole_sandbox = true\n",
    )
    .unwrap();
    let port = free_port();
    let config = common::serve_config(
        dir.path(),
        port,
        &format!(
            "[channels]\nconfig = \"{}\"\n\n[auth]\nsecure_cookies = false\nmax_failures = 3",
            dir.path().join("channels.toml").display()
        ),
    );
    let _server = ServeProcess::start(dir.path(), &config, &[("FEEGATE_DATABASE__URL", &db)]);
    let began = Instant::now();
    while !matches!(common::http_get(port, "/healthz"), Ok((200, _))) {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let origin = format!("http://127.0.0.1:{port}");

    // Nobody signed in: every page sends to the login page, which is Chinese unless
    // English is asked for (parameter, then remembered; or the browser's language).
    let a = request(port, "GET", "/console/station", &[], "");
    assert_eq!(
        (a.status, a.location()),
        (303, "/console/login?next=/console/station")
    );
    let a = request(port, "GET", "/console/login", &[], "");
    assert!(a.status == 200 && a.body.contains("用户名") && a.body.contains("lang=\"zh-CN\""));
    let a = request(port, "GET", "/console/login?lang=en", &[], "");
    assert!(a.body.contains("Username"), "{}", a.body);
    assert!(a.header("set-cookie").contains("feegate_lang=en"));
    let a = request(
        port,
        "GET",
        "/console/login",
        &[("Cookie", "feegate_lang=en")],
        "",
    );
    assert!(a.body.contains("Username"));
    let a = request(
        port,
        "GET",
        "/console/login",
        &[("Accept-Language", "en-GB,en;q=0.8")],
        "",
    );
    assert!(a.body.contains("Username"));
    let a = request(port, "GET", "/console/static/htmx.min.js", &[], "");
    assert!(
        a.status == 200 && a.body.starts_with("var htmx="),
        "{}",
        a.status
    );

    // Station staff of XY-BT: their station's accounts only; a neighbour's is "not found".
    let staff = login(port, "staff-bt");
    assert_eq!(staff.get("/console/").location(), "/console/station");
    let page = staff.get("/console/station");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"collection-XY-BT\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("collection-XY-DW"));
    let list = staff.get("/console/accounts");
    assert!(list.body.contains("3500000001") && list.body.contains("3500000005"));
    assert!(
        !list.body.contains("3500000002"),
        "another station's account listed"
    );
    assert_eq!(staff.get("/console/accounts/3500000002").status, 404);
    let own = staff.get("/console/accounts/3500000001");
    assert_eq!(own.status, 200);
    assert!(
        own.body.contains("id=\"usage-chart\"><svg"),
        "server-drawn SVG chart"
    );
    assert!(
        !own.body.contains("id=\"pay-form\""),
        "staff do not pay through the app"
    );
    assert_eq!(staff.get("/console/policies").status, 200);

    // The business hall: a refused application says what to correct; a good one
    // onboards with the initial prepayment.
    let form = |mobile: &str, account: &str| {
        format!(
            "application=new-connection&customer_id=C-{account}&customer_name=Wang&customer_class=low-voltage-residential&meter_id=M-{account}&gateway=127.0.0.1%3A1502&unit=3&account_id={account}&alarm_threshold=20.00&mobile={mobile}&master_mobile=13800000000&prepayment=50.00"
        )
    };
    let bad = staff.post("/console/hall", &form("12345", "3599000001"), &origin);
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("12345") && bad.body.contains("11 digits"),
        "{}",
        bad.body
    );
    let good = staff.post("/console/hall", &form("13800000000", "3599000001"), &origin);
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(good.body.contains("id=\"hall-done\""), "{}", good.body);
    let status = scalar_i64(
        &db,
        "SELECT CAST(CASE WHEN status = 'active' AND balance_fen = 5000 AND station_id = 'XY-BT' THEN 1 ELSE 0 END AS BIGINT) FROM accounts WHERE account_id = $1",
        "3599000001",
    )
    .await;
    assert_eq!(
        status, 1,
        "onboarded at the staff's station with 50.00 prepaid"
    );
    let again = staff.post("/console/hall", &form("13800000000", "3599000001"), &origin);
    assert_eq!(again.status, 409, "{}", again.body);

    // A customer: their account only, and they pay through the app channel.
    let cust = login(port, "cust-1");
    assert_eq!(
        cust.get("/console/").location(),
        "/console/accounts/3500000001"
    );
    assert_eq!(cust.get("/console/accounts/3500000005").status, 404);
    assert_eq!(cust.get("/console/station").status, 403);
    assert_eq!(cust.get("/console/policies").status, 403);
    assert_eq!(cust.get("/console/hall").status, 403);
    let page = cust.get("/console/accounts/3500000001");
    assert!(page.body.contains("id=\"pay-form\""), "{}", page.body);
    let txn = page
        .body
        .split("name=\"txn_id\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let before = scalar_i64(
        &db,
        "SELECT balance_fen FROM accounts WHERE account_id = $1",
        "3500000001",
    )
    .await;
    let paid = cust.post(
        "/console/accounts/3500000001/pay",
        &format!("amount=12.34&txn_id={txn}"),
        &origin,
    );
    assert_eq!(
        (paid.status, paid.location()),
        (303, "/console/accounts/3500000001")
    );
    // The same form sent twice is one payment.
    cust.post(
        "/console/accounts/3500000001/pay",
        &format!("amount=12.34&txn_id={txn}"),
        &origin,
    );
    let after = scalar_i64(
        &db,
        "SELECT balance_fen FROM accounts WHERE account_id = $1",
        "3500000001",
    )
    .await;
    assert_eq!(after, before + 1234);
    let bad_amount = cust.post(
        "/console/accounts/3500000001/pay",
        "amount=1.234&txn_id=console-x1",
        &origin,
    );
    assert_eq!(bad_amount.status, 400, "{}", bad_amount.body);
    let decision = scalar_i64(
        &db,
        "SELECT MAX(decision_id) FROM decisions WHERE account_id = $1",
        "3500000001",
    )
    .await;
    let neighbour = scalar_i64(
        &db,
        "SELECT MAX(decision_id) FROM decisions WHERE account_id = $1",
        "3500000005",
    )
    .await;
    let d = cust.get(&format!("/console/decisions/{decision}"));
    assert!(
        d.status == 200 && d.body.contains("id=\"sha256\""),
        "{}",
        d.status
    );
    assert_eq!(
        cust.get(&format!("/console/decisions/{neighbour}")).status,
        404
    );
    // A tariff decision made many per call says its fuel is a share, of a call of how
    // many (migration 0024).
    let batched = scalar_i64(
        &db,
        "SELECT MAX(decision_id) FROM decisions WHERE account_id = $1 AND kind = 'tariff' AND call_decisions IS NOT NULL",
        "3500000001",
    )
    .await;
    let size = scalar_i64(
        &db,
        "SELECT call_decisions FROM decisions WHERE CAST(decision_id AS TEXT) = $1",
        &batched.to_string(),
    )
    .await;
    let page = cust.get(&format!("/console/decisions/{batched}"));
    let fuel = page
        .body
        .split("id=\"fuel\">")
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .unwrap_or_default();
    assert!(fuel.ends_with(&format!(" {size})")), "{fuel:?}");

    // A county engineer: policies, not customers or work orders. An auditor reads
    // everything and changes nothing.
    let eng = login(port, "engineer");
    assert_eq!(eng.get("/console/station").status, 403);
    assert_eq!(eng.get("/console/accounts").status, 403);
    let pol = eng.get("/console/policies");
    assert!(pol.status == 200 && pol.body.contains("id=\"county-xianyou\""));
    // A cancelled scheduled activation is listed as cancelled, with who and why.
    let activation = scalar_i64(
        &db,
        "INSERT INTO policy_activations (county, kind, publication_id, component_sha256, action, effective_at, who, note, recorded_at)
         SELECT county, kind, publication_id, component_sha256, 'activate', '2099-01-01 00:00:00', 'ops', 'next year', '2013-01-03 09:00:00'
         FROM policy_publications WHERE county = $1 AND kind = 'tariff' ORDER BY publication_id LIMIT 1
         RETURNING activation_id",
        "xianyou",
    )
    .await;
    let cancelled = feegate(
        &[
            "policy",
            "cancel",
            "--county",
            "xianyou",
            "--kind",
            "tariff",
            "--activation",
            &activation.to_string(),
            "--who",
            "Chen",
            "--note",
            "notice withdrawn",
        ],
        &db,
        None,
    );
    assert!(cancelled.contains("CANCELLED by Chen"), "{cancelled}");
    let pol = eng.get("/console/policies");
    assert!(
        pol.status == 200 && pol.body.contains("已取消") && pol.body.contains("notice withdrawn"),
        "{}",
        pol.body
    );
    let aud = login(port, "auditor");
    let page = aud.get("/console/station");
    assert!(page.status == 200 && page.body.contains("collection-XY-DW"));
    assert_eq!(aud.get("/console/hall").status, 403);
    assert_eq!(
        aud.post("/console/hall", &form("13800000000", "3599000002"), &origin)
            .status,
        403
    );
    assert_eq!(aud.get("/console/accounts/3500000002").status, 200);

    // An approved case offers "withdraw approval" to whoever may decide it (the
    // approver too), not to the auditor; withdrawing holds the case, once.
    let case = scalar_i64(
        &db,
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at, decided_by, decided_at)
         VALUES ('approve-disconnection', $1, 'XY-BT', 'console-test:withdraw', 'approved', '{}', '2013-01-03 09:00:00', 'staff-bt', '2013-01-03 10:00:00')
         RETURNING work_order_id",
        "3500000001",
    )
    .await;
    let withdraw = format!("/console/cases/{case}/withdraw");
    let page = staff.get(&format!("/console/cases/{case}"));
    assert!(
        page.status == 200 && page.body.contains(&format!("action=\"{withdraw}\"")),
        "{}",
        page.body
    );
    let page = aud.get(&format!("/console/cases/{case}"));
    assert!(page.status == 200 && !page.body.contains(&withdraw));
    assert_eq!(aud.post(&withdraw, "note=x", &origin).status, 403);
    let done = staff.post(&withdraw, "note=wrong+account", &origin);
    assert_eq!(
        (done.status, done.location()),
        (303, format!("/console/cases/{case}").as_str()),
        "{}",
        done.body
    );
    let held = scalar_i64(
        &db,
        "SELECT CAST(CASE WHEN status = 'held' AND decided_by = 'staff-bt' AND withdrawn_by = 'staff-bt' AND withdrawn_at IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) FROM work_orders WHERE dedup_key = $1",
        "console-test:withdraw",
    )
    .await;
    assert_eq!(held, 1, "held, the approver kept, the withdrawal recorded");
    let page = staff.get(&format!("/console/cases/{case}"));
    assert!(!page.body.contains(&withdraw), "{}", page.body);
    assert_eq!(staff.post(&withdraw, "", &origin).status, 409);

    // A call-before-reconnection order (the customer paid after months dark) is done by
    // staff after the call, which reconnects once; not by the auditor, not cross-site.
    let call = scalar_i64(
        &db,
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
         VALUES ('call-before-reconnection', $1, 'XY-BT', 'console-test:call-first', 'open', '{}', '2013-01-03 09:00:00')
         RETURNING work_order_id",
        "3500000005",
    )
    .await;
    let balance = scalar_i64(
        &db,
        "UPDATE accounts SET relay_state = 'open' WHERE account_id = $1 RETURNING balance_fen",
        "3500000005",
    )
    .await;
    assert!(balance >= 0, "{balance}");
    let call_done = format!("/console/call-first/{call}/done");
    let page = staff.get("/console/station");
    assert!(
        page.body.contains(&format!("action=\"{call_done}\"")),
        "{}",
        page.body
    );
    assert!(!aud.get("/console/station").body.contains(&call_done));
    assert_eq!(aud.post(&call_done, "note=x", &origin).status, 403);
    assert_eq!(
        staff
            .post(&call_done, "note=x", "http://evil.example")
            .status,
        403
    );
    let key = format!("work-order:{call}");
    let commands = "SELECT COUNT(*) FROM relay_commands WHERE decision_key = $1";
    assert_eq!(scalar_i64(&db, commands, &key).await, 0);
    let done = staff.post(&call_done, "note=called+the+customer", &origin);
    assert_eq!(
        (done.status, done.location()),
        (303, "/console/station"),
        "{}",
        done.body
    );
    let marked = scalar_i64(
        &db,
        "SELECT CAST(CASE WHEN status = 'done' AND decided_by = 'staff-bt' AND note = 'called the customer' THEN 1 ELSE 0 END AS BIGINT) FROM work_orders WHERE dedup_key = $1",
        "console-test:call-first",
    )
    .await;
    assert_eq!(marked, 1);
    assert_eq!(scalar_i64(&db, commands, &key).await, 1);
    assert_eq!(staff.post(&call_done, "", &origin).status, 409);
    assert_eq!(scalar_i64(&db, commands, &key).await, 1, "never twice");

    // A POST from another site with the session cookie is refused; the session lives on.
    let forged = staff.post("/console/logout", "", "http://evil.example");
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(staff.get("/console/station").status, 200);
    let forged_login = request(
        port,
        "POST",
        "/console/login",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("username=ops&password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(forged_login.status, 403);
    assert!(
        !forged_login
            .header("set-cookie")
            .contains("feegate_session=")
    );

    // Logout ends the session on the server: the old cookie no longer opens a page.
    let out = staff.post("/console/logout", "", &origin);
    assert_eq!((out.status, out.location()), (303, "/console/login"));
    assert_eq!(staff.get("/console/station").status, 303);

    // Failed logins: after 3 (the configured limit), even the right password is refused
    // for a while, and the page says how long.
    for _ in 0..3 {
        assert_eq!(
            login_answer(port, "ops", "wrong password!!", "en").status,
            401
        );
    }
    let limited = login_answer(port, "ops", PASSWORD, "en");
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited.body.contains("Too many attempts, try again in "),
        "{}",
        limited.body
    );
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
}
