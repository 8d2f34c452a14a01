//! Shadow mode and trust revocation (issue 3): a published candidate runs beside the
//! version in force on live decisions, is recorded and never enforced, and `policy
//! diff --shadow` reports what it would have changed; a revoked key publishes nothing.

mod common;

use chrono::{Duration, NaiveDateTime};
use feegate::audit;
use feegate::clock::Clock;
use feegate::demo::{DemoSummary, Scenario};
use feegate::policy::PolicyKind;
use feegate::registry::{self, ActivateRequest, PublishRequest, RegistryError};
use feegate::shadow::{self, StartRequest};
use sqlx::Row;

/// The default charge ceiling, yuan/kWh, that diffs judge tariff charges against.
const MAX_PRICE: rust_decimal::Decimal = feegate::settlement::MAX_PRICE_YUAN_PER_KWH;

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(common::component(name)).expect("built by `make plugins`")
}

fn t(s: &str) -> NaiveDateTime {
    registry::parse_time(s).unwrap()
}

/// Publishes `bytes` with `params` for xianyou, signed by `key`.
async fn publish(
    s: &Scenario,
    key: &ed25519_dalek::SigningKey,
    kind: PolicyKind,
    bytes: &[u8],
    params: &str,
) -> Result<registry::Publication, RegistryError> {
    let canonical = registry::canonical_parameters(params)?;
    registry::publish(
        &s.host.db,
        &s.host.engine,
        &PublishRequest {
            county: "xianyou",
            kind,
            component: bytes,
            parameters: params,
            signature_hex: &registry::sign(key, bytes, &canonical),
            note: "candidate",
            now: s.clock.now(),
        },
    )
    .await
}

async fn trust(s: &Scenario) -> ed25519_dalek::SigningKey {
    let key = registry::generate_key();
    registry::trust_key(
        &s.host.db,
        "xianyou",
        &key.verifying_key(),
        "Lin",
        "ops",
        s.clock.now(),
    )
    .await
    .unwrap();
    key
}

async fn start(s: &Scenario, kind: PolicyKind, p: &registry::Publication) -> shadow::ShadowEvent {
    shadow::start(
        &s.host.db,
        &s.host.engine,
        &StartRequest {
            county: "xianyou",
            kind,
            version: &format!("#{}", p.publication_id),
            until: None,
            who: "ops",
            note: "try it on live decisions",
            now: s.clock.now(),
        },
    )
    .await
    .unwrap()
}

/// What the county enforced: every decision's kind, account, day and output (or
/// failure), every ledger entry, and the summary figures.
type Enforced = (
    Vec<(String, String, String, Option<String>)>,
    Vec<(String, i64)>,
    DemoSummary,
);

async fn enforced(s: &Scenario) -> Enforced {
    let decisions = sqlx::query(
        "SELECT kind, account_id, business_date, COALESCE(output_json, failure_json) FROM decisions ORDER BY decision_id",
    )
    .fetch_all(&s.host.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    let ledger = sqlx::query("SELECT account_id, amount_fen FROM ledger_entries ORDER BY entry_id")
        .fetch_all(&s.host.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (decisions, ledger, s.summary().await.unwrap())
}

const METERS: usize = 16;
const DAYS: u32 = 24;
const SEED: u64 = 5;

/// The same county run without any shadow: what must be enforced either way.
async fn control_run() -> Option<Enforced> {
    let (opts, _db) = common::small_county_db("control run", METERS, DAYS, SEED).await?;
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(DAYS).await.unwrap();
    Some(enforced(&s).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_runs_beside_every_live_decision_is_never_enforced_and_diff_shadow_reports_it() {
    let Some(control) = control_run().await else {
        return;
    };
    let Some((opts, _db)) = common::small_county_db(
        "a_shadow_runs_beside_every_live_decision_is_never_enforced_and_diff_shadow_reports_it",
        METERS,
        DAYS,
        SEED,
    )
    .await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    let key = trust(&s).await;
    // A dearer tariff (step 1 at 0.5283 instead of 0.4983) and a cutoff that
    // disconnects everybody it is asked about.
    let shipped_tariff = registry::publications(&s.host.db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap()
        .remove(0);
    let dearer = publish(
        &s,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &shipped_tariff.parameters_json.replace("0.4983", "0.5283"),
    )
    .await
    .unwrap();
    let harsh = publish(
        &s,
        &key,
        PolicyKind::Cutoff,
        &wasm("hostile_policy"),
        r#"{"mode":"disconnect"}"#,
    )
    .await
    .unwrap();
    let tariff_shadow = start(&s, PolicyKind::Tariff, &dearer).await;
    start(&s, PolicyKind::Cutoff, &harsh).await;
    assert!(
        s.host
            .county
            .snapshot()
            .shadow_component(PolicyKind::Tariff)
            .is_none(),
        "the host picks a shadow up at its watcher's poll, not before"
    );
    s.watcher.poll().await.unwrap();
    let snap = s.host.county.snapshot();
    let running = snap.shadow_component(PolicyKind::Tariff).unwrap();
    assert_eq!(running.shadow_event_id, tariff_shadow.shadow_event_id);
    assert_eq!(running.active.component.sha256, dearer.component_sha256);
    assert!(snap.shadow_component(PolicyKind::Warning).is_none());

    s.run_days(DAYS).await.unwrap();

    // Nothing the shadows decided was enforced: the same decisions, ledger and figures
    // as the county without shadows.
    let with_shadow = enforced(&s).await;
    assert_eq!(with_shadow.2, control.2);
    assert_eq!(with_shadow.1, control.1);
    assert_eq!(with_shadow.0, control.0);

    // Every live tariff, cutoff and reconnection decision has exactly one shadow row,
    // linked by decision id; warnings and notices have none.
    let db = &s.host.db.clone();
    let counts = sqlx::query(
        "SELECT d.kind, COUNT(*), COUNT(sd.decision_id) FROM decisions d
         LEFT JOIN shadow_decisions sd ON sd.decision_id = d.decision_id GROUP BY d.kind ORDER BY d.kind",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut seen = Vec::new();
    for r in &counts {
        let (kind, live, shadowed): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let expected = if matches!(kind.as_str(), "tariff" | "cutoff" | "reconnection") {
            live
        } else {
            0
        };
        assert_eq!(
            shadowed, expected,
            "{kind}: {live} live, {shadowed} shadowed"
        );
        seen.push(kind);
    }
    assert!(
        seen.contains(&"cutoff".to_string()),
        "{seen:?}: the county must reach arrears"
    );

    // diff --shadow: the dearer tariff charges more, in the same report as a replay.
    let (from, to) = ("2013-01-01", "2013-01-31");
    let d = audit::shadow_diff(db, "xianyou", PolicyKind::Tariff, from, to, MAX_PRICE)
        .await
        .unwrap();
    assert_eq!(d.source, "shadow");
    assert_eq!(d.candidate_sha256, dearer.component_sha256);
    assert!(d.decisions > 100, "{}", d.decisions);
    assert!(d.charge_difference_fen > 0);
    assert!(d.changed.iter().all(|c| c.charge_difference_fen >= 0));
    assert_eq!(
        d.charge_difference_fen,
        d.changed
            .iter()
            .map(|c| c.charge_difference_fen)
            .sum::<i64>()
    );
    // The same candidate replayed through `policy diff` gives the same figures.
    let replayed = audit::diff(
        db,
        &s.host.engine,
        "xianyou",
        PolicyKind::Tariff,
        &format!("#{}", dearer.publication_id),
        from,
        to,
    )
    .await
    .unwrap();
    assert_eq!(replayed.decisions, d.decisions);
    assert_eq!(replayed.charge_difference_fen, d.charge_difference_fen);
    assert_eq!(replayed.fuel_candidate, d.fuel_candidate);

    let d = audit::shadow_diff(db, "xianyou", PolicyKind::Cutoff, from, to, MAX_PRICE)
        .await
        .unwrap();
    assert!(d.disconnects_more(), "{:?}", d.disconnections);

    // Stop: an audited event; the host drops the shadow at its next poll and records
    // no more shadow rows.
    let stopped = shadow::stop(
        db,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "seen enough",
        s.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(stopped.action, "stop");
    assert_eq!(stopped.who, "ops");
    let err = shadow::stop(
        db,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "again",
        s.clock.now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::NoShadow { .. }), "{err}");
    let rows_before: i64 =
        sqlx::query("SELECT COUNT(*) FROM shadow_decisions WHERE kind = 'tariff'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    s.run_day(opts.start + Duration::days(i64::from(DAYS)), true)
        .await
        .unwrap();
    assert!(
        s.host
            .county
            .snapshot()
            .shadow_component(PolicyKind::Tariff)
            .is_none()
    );
    let rows_after: i64 =
        sqlx::query("SELECT COUNT(*) FROM shadow_decisions WHERE kind = 'tariff'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(rows_after, rows_before);
    // The shadow table is append-only.
    assert!(
        sqlx::query("UPDATE shadow_decisions SET fuel_used = 0")
            .execute(&db.pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM policy_shadows")
            .execute(&db.pool)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_or_looping_shadow_changes_no_live_decision_and_a_looping_one_is_cut_short() {
    let Some(control) = control_run().await else {
        return;
    };
    let Some((opts, _db)) = common::small_county_db(
        "a_trapping_or_looping_shadow_changes_no_live_decision_and_a_looping_one_is_cut_short",
        METERS,
        DAYS,
        SEED,
    )
    .await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    let key = trust(&s).await;
    let looping = publish(
        &s,
        &key,
        PolicyKind::Tariff,
        &wasm("hostile_policy"),
        r#"{"mode":"loop"}"#,
    )
    .await
    .unwrap();
    let trapping = publish(
        &s,
        &key,
        PolicyKind::Warning,
        &wasm("hostile_policy"),
        r#"{"mode":"trap"}"#,
    )
    .await
    .unwrap();
    start(&s, PolicyKind::Tariff, &looping).await;
    start(&s, PolicyKind::Warning, &trapping).await;
    s.run_days(DAYS).await.unwrap();

    let with_shadow = enforced(&s).await;
    assert_eq!(with_shadow.2, control.2);
    assert_eq!(with_shadow.1, control.1);
    assert_eq!(with_shadow.0, control.0);

    // Every warning decision has its failed shadow beside it, with the trap recorded.
    let db = &s.host.db;
    let rows = sqlx::query(
        "SELECT kind, outcome, failure_json FROM shadow_decisions ORDER BY shadow_decision_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let warnings: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<String, _>(0) == "warning")
        .collect();
    let live_warnings: i64 = sqlx::query("SELECT COUNT(*) FROM decisions WHERE kind = 'warning'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(warnings.len() as i64, live_warnings);
    for r in &warnings {
        let failure: Option<String> = r.get(2);
        assert_eq!(r.get::<String, _>(1), "failed", "{failure:?}");
        assert!(
            failure.as_deref().unwrap_or("").contains("trap"),
            "{failure:?}"
        );
    }
    // The looping tariff ran out of fuel BREAKER_AFTER times, then the host stopped
    // running it: a few limit-long runs, not one per account and day.
    let tariffs: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<String, _>(0) == "tariff")
        .map(|r| r.get::<String, _>(2))
        .collect();
    assert_eq!(tariffs.len() as u32, shadow::BREAKER_AFTER, "{tariffs:?}");
    assert!(
        tariffs
            .iter()
            .all(|f| f.contains("out-of-fuel") || f.contains("timeout")),
        "{tariffs:?}"
    );

    // The shadow's failures count as new failures in diff --shadow.
    let d = audit::shadow_diff(
        db,
        "xianyou",
        PolicyKind::Warning,
        "2013-01-01",
        "2013-01-31",
        MAX_PRICE,
    )
    .await
    .unwrap();
    assert_eq!(d.decisions as i64, live_warnings);
    assert!(d.new_failures > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_ends_at_its_until_time_and_a_start_is_checked() {
    let Some((opts, _db)) = common::small_county_db(
        "a_shadow_ends_at_its_until_time_and_a_start_is_checked",
        4,
        2,
        3,
    )
    .await
    else {
        return;
    };
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let db = &s.host.db;
    let shipped = registry::publications(db, "xianyou", Some(PolicyKind::Notice))
        .await
        .unwrap()
        .remove(0);
    let now = s.clock.now();
    let until = now + Duration::hours(2);
    let mut req = StartRequest {
        county: "xianyou",
        kind: PolicyKind::Notice,
        version: "deadbeefdeadbeef",
        until: Some(until),
        who: "ops",
        note: "until lunch",
        now,
    };
    let err = shadow::start(db, &s.host.engine, &req).await.unwrap_err();
    assert!(err.to_string().contains("policy list"), "{err}");
    let version = format!("#{}", shipped.publication_id);
    req.version = &version;
    req.until = Some(now - Duration::hours(1));
    let err = shadow::start(db, &s.host.engine, &req).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::ShadowEndsInPast { .. }),
        "{err}"
    );
    req.until = Some(until);
    let e = shadow::start(db, &s.host.engine, &req).await.unwrap();
    assert_eq!(e.until_at.as_deref(), Some(feegate::db::ts(until).as_str()));
    s.watcher.poll().await.unwrap();
    assert!(
        s.host
            .county
            .snapshot()
            .shadow_component(PolicyKind::Notice)
            .is_some()
    );
    s.advance(until).unwrap();
    s.watcher.poll().await.unwrap();
    assert!(
        s.host
            .county
            .snapshot()
            .shadow_component(PolicyKind::Notice)
            .is_none()
    );
    assert!(
        shadow::in_force(db, "xianyou", PolicyKind::Notice, until)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_publishes_nothing_and_what_it_signed_stays_valid() {
    let Some((opts, _db)) = common::small_county_db(
        "a_revoked_key_publishes_nothing_and_what_it_signed_stays_valid",
        4,
        1,
        3,
    )
    .await
    else {
        return;
    };
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let db = &s.host.db;
    let key = trust(&s).await;
    let other = trust(&s).await;
    let params = registry::publications(db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap()
        .remove(0)
        .parameters_json;
    let before = publish(
        &s,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &params,
    )
    .await
    .unwrap();
    let keys = registry::trusted_keys(db, "xianyou").await.unwrap();
    let key_id = keys
        .iter()
        .find(|k| k.public_key_hex == hex::encode(key.verifying_key().to_bytes()))
        .unwrap()
        .key_id;
    assert_eq!(before.signer_key_id, Some(key_id));

    let revoked = registry::revoke_key(
        db,
        "xianyou",
        key_id,
        "Chen (security)",
        "laptop stolen",
        t("2013-01-01 12:00:00"),
    )
    .await
    .unwrap();
    assert_eq!(revoked.revoked_at.as_deref(), Some("2013-01-01 12:00:00"));
    assert_eq!(
        registry::trusted_keys(db, "xianyou").await.unwrap().len(),
        1
    );
    let err = registry::revoke_key(
        db,
        "xianyou",
        key_id,
        "Chen",
        "again",
        t("2013-01-01 12:01:00"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::AlreadyRevoked { .. }), "{err}");
    let err = registry::revoke_key(db, "xianyou", 999, "Chen", "?", t("2013-01-01 12:01:00"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::UnknownKey { .. }), "{err}");

    // Publishing with the revoked key: refused, saying which key, when and why.
    let dearer = params.replace("0.4983", "0.5283");
    let err = publish(
        &s,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &dearer,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::RevokedKey { .. }), "{msg}");
    assert!(
        msg.contains(&format!("key #{key_id}")) && msg.contains("laptop stolen"),
        "{msg}"
    );
    // The other key still publishes.
    publish(
        &s,
        &other,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &dearer,
    )
    .await
    .unwrap();

    // What the revoked key signed before stays published, names its key, and activates.
    let still = registry::resolve(
        db,
        "xianyou",
        PolicyKind::Tariff,
        &format!("#{}", before.publication_id),
    )
    .await
    .unwrap();
    assert_eq!(still.signer_key_id, Some(key_id));
    registry::activate(
        db,
        &s.host.engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &format!("#{}", before.publication_id),
            at: None,
            stage: None,
            who: "ops",
            note: "signed before the revocation",
            now: s.clock.now(),
        },
    )
    .await
    .unwrap();

    // With every key revoked, a publication by a revoked key still says "revoked".
    let other_id = registry::trusted_keys(db, "xianyou").await.unwrap()[0].key_id;
    registry::revoke_key(
        db,
        "xianyou",
        other_id,
        "Chen",
        "rotation",
        t("2013-01-02 12:00:00"),
    )
    .await
    .unwrap();
    let err = publish(
        &s,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &params.replace("0.4983", "0.6"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::RevokedKey { .. }), "{err}");
}

/// The README's shadow, diff --shadow and revocation steps through the real binary,
/// with `feegate demo` standing in for the running host.
#[test]
fn the_shadow_walkthrough_works_at_the_command_line() {
    let Some(tdb) =
        common::test_database_blocking("the_shadow_walkthrough_works_at_the_command_line")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tdb.url.clone();
    let cli = common::Cli {
        dir: dir.path(),
        db: &db,
    };
    let run = |args: &[&str]| cli.run(args);
    let ok = |args: &[&str]| cli.ok(args);
    std::fs::write(dir.path().join("harsh.json"), r#"{"mode":"disconnect"}"#).unwrap();
    let hostile = common::component("hostile_policy");
    let hostile = hostile.to_str().unwrap();
    ok(&["policy", "key", "new", "--out", "lin"]);
    ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.pub", "--who", "Lin",
    ]);
    ok(&[
        "policy",
        "publish",
        hostile,
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--params",
        "harsh.json",
        "--key",
        "lin.key",
        "--note",
        "harsh",
    ]);
    let sha = feegate::policy::engine::sha256_hex(&std::fs::read(hostile).unwrap());
    let started = ok(&[
        "policy",
        "shadow",
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--version",
        &sha[..12],
        "--note",
        "how harsh is it",
    ]);
    assert!(
        started.contains("shadow start") && started.contains("by ops-test"),
        "{started}"
    );
    let (code, _, stderr) = run(&[
        "policy",
        "shadow",
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--note",
        "no version",
    ]);
    assert_ne!(code, Some(0), "--version or --stop is required: {stderr}");

    let repo = common::repo();
    ok(&[
        "demo",
        "--meters",
        "16",
        "--days",
        "24",
        "--seed",
        "5",
        "--policy-set",
        repo.join("policies/xianyou").to_str().unwrap(),
        "--data",
        common::shared_data("lcl_2013_daily_kwh_100hh.csv")
            .to_str()
            .unwrap(),
        "--components",
        common::components_dir().to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = run(&[
        "policy", "diff", "--county", "xianyou", "--kind", "cutoff", "--shadow", "--days", "31",
    ]);
    assert_eq!(
        code,
        Some(2),
        "exit 2: the shadow disconnects more\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("decisions shadowed"), "{stdout}");
    assert!(
        stdout.contains("THE CANDIDATE WOULD DISCONNECT MORE CUSTOMERS"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&[
        "policy",
        "diff",
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--shadow",
        "--candidate",
        &sha[..12],
    ]);
    assert_ne!(
        code,
        Some(0),
        "--shadow and --candidate exclude each other: {stderr}"
    );

    ok(&[
        "policy", "shadow", "--county", "xianyou", "--kind", "cutoff", "--stop", "--note", "done",
    ]);
    let history = ok(&[
        "policy", "history", "--county", "xianyou", "--kind", "cutoff",
    ]);
    assert!(
        history.contains("shadow start") && history.contains("shadow stop"),
        "{history}"
    );
    assert!(ok(&["audit", "verify"]).contains("chain intact"));

    let revoked = ok(&[
        "policy",
        "trust",
        "revoke",
        "--county",
        "xianyou",
        "--key-id",
        "1",
        "--who",
        "Chen",
        "--why",
        "laptop lost",
    ]);
    assert!(revoked.contains("REVOKED"), "{revoked}");
    std::fs::write(dir.path().join("trap.json"), r#"{"mode":"trap"}"#).unwrap();
    let (code, _, stderr) = run(&[
        "policy",
        "publish",
        hostile,
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--params",
        "trap.json",
        "--key",
        "lin.key",
        "--note",
        "after revocation",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("revoked") && stderr.contains("laptop lost"),
        "{stderr}"
    );
    let show = ok(&[
        "policy",
        "show",
        "--county",
        "xianyou",
        "--kind",
        "cutoff",
        "--version",
        &sha[..12],
    ]);
    assert!(
        show.contains("signed by     key #1") && show.contains("REVOKED"),
        "{show}"
    );
}

/// A shadow whose row cannot be written (here: a trigger the test adds refuses every
/// insert) leaves every live decision and its transaction intact — on SQLite and on
/// PostgreSQL, where a failed statement would abort the whole live transaction if the
/// shadow row were not written in a savepoint.
async fn an_unwritable_shadow_row_changes_nothing(db_url: Option<String>) {
    let opts = common::small_county(8, 6, 9);
    let mut control = Scenario::new(&opts, &[]).await.unwrap();
    control.run_days(6).await.unwrap();
    let control = enforced(&control).await;

    let mut opts = opts;
    let postgres = db_url.is_some();
    opts.db_url = db_url;
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    let shipped = registry::publications(&s.host.db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap()
        .remove(0);
    start(&s, PolicyKind::Tariff, &shipped).await;
    let refuse = if postgres {
        "CREATE TRIGGER shadow_refused BEFORE INSERT ON shadow_decisions FOR EACH ROW EXECUTE FUNCTION feegate_refuse_change()"
    } else {
        "CREATE TRIGGER shadow_refused BEFORE INSERT ON shadow_decisions BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    };
    sqlx::query(refuse).execute(&s.host.db.pool).await.unwrap();
    s.run_days(6).await.unwrap();
    assert!(
        s.host
            .county
            .snapshot()
            .shadow_component(PolicyKind::Tariff)
            .is_some(),
        "the shadow ran all along"
    );
    let with_shadow = enforced(&s).await;
    assert_eq!(with_shadow.2, control.2);
    assert_eq!(with_shadow.1, control.1);
    assert_eq!(with_shadow.0, control.0);
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM shadow_decisions")
        .fetch_one(&s.host.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "every shadow row was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_shadow_row_changes_nothing_on_sqlite() {
    an_unwritable_shadow_row_changes_nothing(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_shadow_row_changes_nothing_on_postgresql() {
    let Some(pg) =
        common::pg_database("an_unwritable_shadow_row_changes_nothing_on_postgresql").await
    else {
        return;
    };
    an_unwritable_shadow_row_changes_nothing(Some(pg.url.clone())).await;
}
