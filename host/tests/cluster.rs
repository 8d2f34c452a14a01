//! Several hosts and crashes (issue 7): `feegate serve` processes against one database,
//! killed with SIGKILL in the middle of a settlement. After every kill the invariants
//! hold — balance = sum of the ledger, each account charged once for the day — and in
//! the end every account is settled exactly once.

mod common;

use chrono::{Duration as Days, NaiveDate, Utc};
use common::ServeProcess;
use feegate::db::Db;
use sqlx::Row;
use std::time::{Duration, Instant};

/// Today in the county (China Standard Time): the business date `serve` runs.
fn county_today() -> NaiveDate {
    (Utc::now() + Days::hours(8)).date_naive()
}

/// Schedule for these tests: today's morning is always due (00:00), everything else
/// every second, so collection, settlement, warnings, outbox and relays all run.
const FAST: &str = "[schedule]\nmorning = \"0 0 0 * * *\"\noutbox = \"* * * * * *\"\ncutoff = \"0 0 9 * * *\"\nrelays = \"* * * * * *\"\n\n[registry]\npoll_seconds = 1\n\n[cluster]\nlease_seconds = 3\n";

fn seed(url: &str, accounts: usize, date: NaiveDate) {
    let out = std::process::Command::new(common::feegate_bin())
        .current_dir(common::repo())
        .args([
            "bench",
            "seed",
            "--accounts",
            &accounts.to_string(),
            "--date",
            &date.to_string(),
            "--db",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The invariants after any crash; returns how many accounts are settled for `day`.
async fn check_invariants(db: &Db, day: NaiveDate) -> i64 {
    let day = day.to_string();
    let unbalanced: i64 = sqlx::query(
        "SELECT COUNT(*) FROM accounts a WHERE a.balance_fen <>
           (SELECT CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM ledger_entries l WHERE l.account_id = a.account_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        unbalanced, 0,
        "accounts whose balance is not the sum of their ledger"
    );
    let doubled: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT account_id FROM ledger_entries WHERE kind = 'charge' AND business_date = $1
                               GROUP BY account_id HAVING COUNT(*) > 1) d",
    )
    .bind(&day)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubled, 0, "accounts charged twice for {day}");
    let (settled, charges): (i64, i64) = {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM settlements WHERE business_date = $1),
                    (SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge' AND business_date = $1)",
        )
        .bind(&day)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (r.get(0), r.get(1))
    };
    // A zero-kWh day settles with no charge entry; never a charge without a settlement.
    assert!(
        charges <= settled,
        "{charges} charges but {settled} settlements"
    );
    let doubled_sms: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT account_id, kind FROM sms_outbox WHERE created_at >= $1
                               GROUP BY account_id, kind HAVING COUNT(*) > 1) d",
    )
    .bind(&day)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubled_sms, 0, "an account got the same notice twice");
    settled
}

async fn settled_count(db: &Db, day: NaiveDate) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM settlements WHERE business_date = $1")
        .bind(day.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

async fn holder(db: &Db) -> Option<String> {
    sqlx::query("SELECT holder FROM county_leases WHERE county = 'xianyou' AND expires_at_ms > $1")
        .bind(feegate::lease::now_ms())
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_county_and_one_killed_mid_settlement_is_taken_over_with_nothing_settled_twice()
 {
    let Some(pg) = common::pg_database("three_hosts_share_a_county").await else {
        return;
    };
    const N: usize = 3000;
    let today = county_today();
    let day = today.pred_opt().unwrap();
    seed(&pg.url, N, today);
    let db = Db::open(&pg.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut hosts: Vec<(String, ServeProcess)> = (1..=3)
        .map(|i| {
            let port = common::free_port();
            let config = common::serve_config(dir.path(), port, FAST);
            let id = format!("host-{i}");
            let p = ServeProcess::start(
                dir.path(),
                &config,
                &[
                    ("FEEGATE_DATABASE__URL", pg.url.as_str()),
                    ("FEEGATE_CLUSTER__HOST_ID", id.as_str()),
                ],
            );
            (id, p)
        })
        .collect();

    // Wait until one host is settling, then kill it mid-way.
    let began = Instant::now();
    let victim = loop {
        let settled = settled_count(&db, day).await;
        if settled > 0 {
            assert!(
                settled < N as i64,
                "settlement finished before the kill; raise N"
            );
            break holder(&db).await.expect("a host settles without a lease");
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "no settlement started in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = Instant::now();
    let at_kill = {
        // The lease holder is "<host_id>#<token of the process>".
        let (_, p) = hosts
            .iter_mut()
            .find(|(id, _)| victim.starts_with(&format!("{id}#")))
            .unwrap();
        p.kill();
        settled_count(&db, day).await
    };
    check_invariants(&db, day).await;

    // Another host takes the county over within the lease time (3 s, renewed every
    // 1 s: at most 3 s after the last renewal, plus one renewal tick and slack).
    let successor = loop {
        if let Some(h) = holder(&db).await
            && h != victim
        {
            break h;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(8),
            "no host took the county over 8 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let takeover = killed_at.elapsed();
    eprintln!("killed {victim} at {at_kill}/{N} settled; {successor} took over after {takeover:?}");

    let began = Instant::now();
    while settled_count(&db, day).await < N as i64 {
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "settlement not finished 180 s after the take-over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(check_invariants(&db, day).await, N as i64);
    // Exactly one host ran the day: the job_runs marks are one per stage.
    let marks: i64 = sqlx::query(
        "SELECT COUNT(*) FROM job_runs WHERE county = 'xianyou' AND business_date = $1 AND stage = 'settlement'",
    )
    .bind(today.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(marks, 1);
    drop(hosts);
}

/// SIGKILL at random points of the morning (settlement, warnings, outbox, relays), on
/// SQLite and on PostgreSQL, a bounded number of times; the invariants hold after every
/// kill and the restarted host finishes the day exactly once.
async fn kill_loop(url: &str, kills: usize, seed_rng: u64) {
    use rand::{Rng, SeedableRng};
    const N: usize = 1500;
    let today = county_today();
    let day = today.pred_opt().unwrap();
    seed(url, N, today);
    let db = Db::open(url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed_rng);
    let env = [
        ("FEEGATE_DATABASE__URL", url),
        ("FEEGATE_CLUSTER__HOST_ID", "only-host"),
    ];
    let mut seen_partial = 0;
    for round in 0..kills {
        let config = common::serve_config(dir.path(), common::free_port(), FAST);
        let before = settled_count(&db, day).await;
        let mut p = ServeProcess::start(dir.path(), &config, &env);
        let started = Instant::now();
        if round % 2 == 0 {
            // Anywhere: loading, catch-up, settlement, warnings, outbox, relays.
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..4000))).await;
        } else {
            // Inside settlement: once it has moved on, a little later.
            while settled_count(&db, day).await == before
                && started.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        }
        let after = started.elapsed();
        p.kill();
        let settled = check_invariants(&db, day).await;
        seen_partial += usize::from(settled > 0 && settled < N as i64);
        eprintln!("round {round}: killed after {after:?}, {settled}/{N} settled");
        if settled == N as i64 {
            break;
        }
    }
    let config = common::serve_config(dir.path(), common::free_port(), FAST);
    let _p = ServeProcess::start(dir.path(), &config, &env);
    let began = Instant::now();
    while settled_count(&db, day).await < N as i64 {
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "not finished in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(check_invariants(&db, day).await, N as i64);
    assert!(
        seen_partial > 0,
        "no kill landed mid-settlement; the loop did not test what it claims"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_sqlite_keeps_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kill.db").display());
    kill_loop(&url, 6, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_postgres_keeps_every_invariant() {
    let Some(pg) = common::pg_database("sigkill_loop_on_postgres").await else {
        return;
    };
    kill_loop(&pg.url, 6, 11).await;
}
