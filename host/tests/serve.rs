//! `feegate serve` as an operator runs it: the binary with a config file, probed over
//! HTTP on loopback, a policy activated from another process while it runs, stopped
//! with SIGTERM.

mod common;

use common::{ServeProcess, free_port, http_get as get};
use std::process::Command;
use std::time::{Duration, Instant};

fn feegate(dir: &std::path::Path) -> Command {
    let mut c = Command::new(common::feegate_bin());
    c.current_dir(dir);
    c
}

#[test]
fn serve_answers_health_readiness_and_metrics_swaps_an_activated_policy_and_stops_on_sigterm() {
    let Some(tdb) = common::test_database_blocking(
        "serve_answers_health_readiness_and_metrics_swaps_an_activated_policy_and_stops_on_sigterm",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tdb.url.clone();
    let port = free_port();
    std::fs::write(
        dir.path().join("channels.toml"),
        "[channels.bank-transfer]\nauth = \"hmac-sha256\"\nsecret = \"serve-test-secret-0123456789\"\nmax_amount_yuan = \"50000.00\"\n",
    )
    .unwrap();
    let config = common::serve_config(
        dir.path(),
        port,
        &format!(
            "[registry]\npoll_seconds = 1\n\n[channels]\nconfig = \"{}\"",
            dir.path().join("channels.toml").display()
        ),
    );
    // A county with history: two simulated days (its simulated meters are gone now, so
    // today's reads fail, which must not stop anything).
    let demo = feegate(&common::repo())
        .args(["demo", "--meters", "4", "--days", "2", "--db", &db])
        .env("FEEGATE_COMPONENTS", common::components_dir())
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let mut server = ServeProcess::start(dir.path(), &config, &[("FEEGATE_DATABASE__URL", &db)]);
    // Ready once the database answers and the scheduler caught up.
    let began = Instant::now();
    let ready = loop {
        match get(port, "/readyz") {
            Ok((200, body)) => break body,
            _ if began.elapsed() > Duration::from_secs(60) => {
                panic!("not ready after 60 s")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(ready.contains(r#""ready":true"#), "{ready}");
    assert_eq!(get(port, "/healthz").unwrap(), (200, "ok\n".to_string()));
    let (status, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    // The catch-up ran the last seven mornings (the demo's days are long past), each
    // stage timed; the reads failed (no meters answer) and are reported, not billed.
    for needle in [
        "feegate_job_duration_seconds_count{county=\"xianyou\",job=\"morning\"} 7",
        "feegate_job_duration_seconds_count{county=\"xianyou\",job=\"settlement\"} 7",
        "feegate_decisions_total{county=\"xianyou\",kind=\"tariff\",outcome=\"ok\"}",
        "feegate_read_success_rate{county=\"xianyou\",station=\"XY-BT\"} 0",
        // Series exist at zero before anything happens to them.
        "feegate_job_failures_total{county=\"xianyou\",job=\"cutoff\"} 0",
        "feegate_outbox_depth{county=\"xianyou\"} ",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    assert_eq!(get(port, "/nowhere").unwrap().0, 404);

    // The payment channels are mounted: a signed bank transfer is applied once, its
    // retry is a duplicate, a forged one is refused.
    let body = r#"{"txn_id":"BT-SERVE-1","account_id":"3500000001","amount":"25.00","currency":"CNY","type":"payment"}"#;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig =
        feegate::channels::auth::hmac_sign(b"serve-test-secret-0123456789", ts, body.as_bytes());
    let ts = ts.to_string();
    let post = |sig: &str| {
        common::http_request(
            port,
            "POST",
            "/channels/bank-transfer/notify",
            &[
                ("X-Feegate-Timestamp", ts.as_str()),
                ("X-Feegate-Signature", sig),
            ],
            body,
        )
        .unwrap()
    };
    let (status, answer) = post(&sig);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""code":"applied""#), "{answer}");
    let (status, answer) = post(&sig);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""code":"duplicate""#), "{answer}");
    let (status, answer) = post(&"0".repeat(64));
    assert_eq!(status, 401, "{answer}");

    // Activate a new tariff version from another process; the running host swaps it in.
    let run = |args: &[&str]| {
        let out = feegate(dir.path())
            .args(args)
            .env("FEEGATE_DB", &db)
            .env("FEEGATE_WHO", "ops-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let params = dir.path().join("tariff.json");
    std::fs::write(
        &params,
        r#"{"charge_rounding":"half-up","cycle":"calendar-year","steps":[{"price":"0.5283","up_to_kwh":"2760"},{"price":"0.5783","up_to_kwh":"4800"},{"price":"0.8283"}]}"#,
    )
    .unwrap();
    run(&["policy", "key", "new", "--out", "lin"]);
    run(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.pub", "--who", "Lin",
    ]);
    let tariff = common::component("policy_tariff_step");
    run(&[
        "policy",
        "publish",
        tariff.to_str().unwrap(),
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--params",
        params.to_str().unwrap(),
        "--key",
        "lin.key",
        "--note",
        "price notice 2014",
    ]);
    let listed = run(&["policy", "list", "--county", "xianyou"]);
    let publication = listed
        .lines()
        .find(|l| l.contains("price notice 2014"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with('#')))
        .unwrap_or_else(|| panic!("no publication id in\n{listed}"))
        .to_string();
    run(&[
        "policy",
        "activate",
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--version",
        &publication,
        "--note",
        "new prices",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match server.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("policy activated") && line.contains("tariff") => break,
            Ok(line) => seen.push(line),
            Err(_) if Instant::now() > deadline => {
                panic!("no swap logged within 30 s; log:\n{}", seen.join("\n"))
            }
            Err(_) => {}
        }
    }

    // SIGTERM: a clean stop.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let began = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn serve_refuses_an_invalid_config_with_the_line_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feegate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[schedule]\ncutoff = \"at nine\"\n",
    )
    .unwrap();
    let out = feegate(dir.path())
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("feegate.toml:5:"), "{stderr}");
    assert!(stderr.contains("invalid cron expression"), "{stderr}");
}

/// A host that cannot read or renew a county's lease (the database refuses it) runs none
/// of the county's jobs and says so in `/readyz` (503, with the reason) instead of
/// answering ready as if another host ran the county; once the lease answers again it
/// takes the county and is ready.
#[test]
fn serve_is_not_ready_while_the_county_lease_cannot_be_read() {
    let Some(tdb) =
        common::test_database_blocking("serve_is_not_ready_while_the_county_lease_cannot_be_read")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tdb.url.clone();
    let port = free_port();
    let config = common::serve_config(dir.path(), port, "[cluster]\nlease_seconds = 3");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sql = |statements: &[&str]| {
        rt.block_on(async {
            let pool = feegate::db::Db::open(&db).await.unwrap().pool;
            for s in statements {
                sqlx::query(s).execute(&pool).await.unwrap();
            }
        })
    };
    // The lease table refuses every write.
    if tdb.is_postgres() {
        sql(&[
            "CREATE FUNCTION refuse_lease() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'lease store broken'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_lease BEFORE INSERT OR UPDATE ON county_leases FOR EACH ROW EXECUTE FUNCTION refuse_lease()",
        ]);
    } else {
        sql(&[
            "CREATE TRIGGER refuse_lease_insert BEFORE INSERT ON county_leases BEGIN SELECT RAISE(ABORT, 'lease store broken'); END",
            "CREATE TRIGGER refuse_lease_update BEFORE UPDATE ON county_leases BEGIN SELECT RAISE(ABORT, 'lease store broken'); END",
        ]);
    }
    let mut server = ServeProcess::start(dir.path(), &config, &[("FEEGATE_DATABASE__URL", &db)]);
    let wait_for = |want: u16, needle: &str| {
        let began = Instant::now();
        loop {
            match get(port, "/readyz") {
                Ok((status, body)) if status == want && body.contains(needle) => break body,
                _ if began.elapsed() > Duration::from_secs(60) => {
                    panic!("/readyz never answered {want} with {needle:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    };
    let body = wait_for(503, "lease cannot be read or renewed");
    assert!(body.contains("county xianyou"), "{body}");
    // A few renewals later it is still not ready, and no job ran.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(port, "/readyz").unwrap().0, 503);
    let jobs_run = rt.block_on(async {
        let pool = feegate::db::Db::open(&db).await.unwrap().pool;
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!(jobs_run, 0);
    // The database takes lease writes again: the host takes the county and is ready.
    if tdb.is_postgres() {
        sql(&["DROP TRIGGER refuse_lease ON county_leases"]);
    } else {
        sql(&[
            "DROP TRIGGER refuse_lease_insert",
            "DROP TRIGGER refuse_lease_update",
        ]);
    }
    wait_for(200, r#""ready":true"#);
    server.kill();
}

/// Started while another process holds the SQLite database's write lock for longer than
/// the 5 s busy timeout, `serve` exits saying so (which database, what to do), not with a
/// bare "database is locked".
#[test]
fn serve_started_while_another_process_writes_says_what_holds_it() {
    let Some(tdb) = common::test_database_blocking(
        "serve_started_while_another_process_writes_says_what_holds_it",
    ) else {
        return;
    };
    if tdb.is_postgres() {
        return; // PostgreSQL has no database-wide write lock.
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = common::serve_config(dir.path(), port, "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, log) = rt.block_on(async {
        let db = feegate::db::Db::open(&tdb.url).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let writing = feegate::db::begin_write(&mut conn).await.unwrap();
        let mut server =
            ServeProcess::start(dir.path(), &config, &[("FEEGATE_DATABASE__URL", &tdb.url)]);
        let status = server.child.wait().unwrap();
        writing.rollback().await.unwrap();
        // Every line, up to the end of its stderr (it has exited).
        let log: Vec<String> = server.lines.iter().collect();
        (status, log.join("\n"))
    });
    assert!(!status.success());
    assert!(
        log.contains("another process holds") && log.contains(&tdb.url),
        "{log}"
    );
}
