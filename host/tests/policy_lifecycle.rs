//! The policy lifecycle as a county engineer, operations and an auditor meet it:
//! publish (signed, checked), activate (audited, hot, timed), roll back, replay the
//! decision log bit for bit, detect tampering with it, and diff a candidate version
//! against recorded decisions.

mod common;

use chrono::NaiveDateTime;
use feegate::audit::{self, Filter};
use feegate::clock::Clock;
use feegate::config::PolicyLimits;
use feegate::db::Db;
use feegate::demo::{ComponentOverride, Scenario};
use feegate::policy::set::RolloutStage;
use feegate::policy::{PolicyEngine, PolicyKind, PolicyLoadError};
use feegate::registry::{self, ActivateRequest, PublishRequest, RegistryError};
use sqlx::{Connection, Executor, Row};

fn t(s: &str) -> NaiveDateTime {
    registry::parse_time(s).unwrap()
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(common::component(name)).expect("built by `make plugins`")
}

/// A fresh database for `test` on the backend under test (None: skipped).
async fn temp_db(test: &str) -> Option<(common::TestDb, Db, String)> {
    let tdb = common::test_database(test).await?;
    let url = tdb.url.clone();
    let db = Db::open(&url).await.unwrap();
    Some((tdb, db, url))
}

const TARIFF_PARAMS: &str = r#"{"charge_rounding":"half-up","cycle":"calendar-year","steps":[{"price":"0.4983","up_to_kwh":"2760"},{"price":"0.5483","up_to_kwh":"4800"},{"price":"0.7983"}]}"#;

/// An engine, the county's trusted key, and the step tariff published with it.
async fn tariff_step_published(
    db: &Db,
) -> (
    std::sync::Arc<PolicyEngine>,
    ed25519_dalek::SigningKey,
    registry::Publication,
) {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let key = trusting_county(db).await;
    let p = publish(
        db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    (engine, key, p)
}

/// A county that trusts one key; returns the key.
async fn trusting_county(db: &Db) -> ed25519_dalek::SigningKey {
    let key = registry::generate_key();
    registry::trust_key(
        db,
        "xianyou",
        &key.verifying_key(),
        "Lin (county engineer)",
        "ops",
        t("2013-01-01 08:00:00"),
    )
    .await
    .unwrap();
    key
}

async fn publish(
    db: &Db,
    engine: &PolicyEngine,
    key: &ed25519_dalek::SigningKey,
    kind: PolicyKind,
    bytes: &[u8],
    params: &str,
) -> Result<registry::Publication, RegistryError> {
    let canonical = registry::canonical_parameters(params)?;
    let signature = registry::sign(key, bytes, &canonical);
    registry::publish(
        db,
        engine,
        &PublishRequest {
            county: "xianyou",
            kind,
            component: bytes,
            parameters: params,
            signature_hex: &signature,
            note: "test",
            now: t("2013-01-01 09:00:00"),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_bad_signatures_forbidden_imports_wrong_contracts_and_oversize() {
    let Some((_tdb, db, _)) =
        temp_db("publish_refuses_bad_signatures_forbidden_imports_wrong_contracts_and_oversize")
            .await
    else {
        return;
    };
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let tariff = wasm("policy_tariff_step");

    // No trusted key yet: refused, and the message says how to add one.
    let stranger = registry::generate_key();
    let err = publish(
        &db,
        &engine,
        &stranger,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::NoTrustedKey { .. }), "{err}");
    assert!(err.to_string().contains("policy trust add"), "{err}");

    let key = trusting_county(&db).await;
    // Signed by a key the county does not trust.
    let err = publish(
        &db,
        &engine,
        &stranger,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::BadSignature { .. }), "{err}");

    // The signature covers the parameters: signed with one price, published with another.
    let signed_for = registry::canonical_parameters(TARIFF_PARAMS).unwrap();
    let signature = registry::sign(&key, &tariff, &signed_for);
    let err = registry::publish(
        &db,
        &engine,
        &PublishRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            component: &tariff,
            parameters: &TARIFF_PARAMS.replace("0.4983", "0.0001"),
            signature_hex: &signature,
            note: "cheaper",
            now: t("2013-01-01 09:00:00"),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::BadSignature { .. }), "{err}");

    // ... and the bytes: one flipped byte in the component.
    let mut tampered = tariff.clone();
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    let canonical = registry::canonical_parameters(TARIFF_PARAMS).unwrap();
    let sig_for_original = registry::sign(&key, &tariff, &canonical);
    let err = registry::publish(
        &db,
        &engine,
        &PublishRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            component: &tampered,
            parameters: TARIFF_PARAMS,
            signature_hex: &sig_for_original,
            note: "tampered",
            now: t("2013-01-01 09:00:00"),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BadSignature { .. } | RegistryError::Load(_)
        ),
        "{err}"
    );

    // A component reading the clock is refused, however well signed.
    let err = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("impure_policy"),
        "{}",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Load(PolicyLoadError::ForbiddenImport { .. })
        ),
        "{err}"
    );
    // A warning component published as a tariff.
    let err = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_warning_threshold"),
        "{}",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::Load(PolicyLoadError::WrongKind { .. })),
        "{err}"
    );
    // Over the size limit.
    let small = PolicyEngine::new(PolicyLimits {
        max_component_bytes: 1024,
        ..PolicyLimits::default()
    })
    .unwrap();
    let err = publish(
        &db,
        &small,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::Load(PolicyLoadError::TooLarge { .. })),
        "{err}"
    );
    // Nothing refused was stored.
    assert!(
        registry::publications(&db, "xianyou", None)
            .await
            .unwrap()
            .is_empty()
    );

    // The good one is stored content-addressed, with who and why; publishing it twice
    // is one publication.
    let p = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    assert_eq!(
        p.component_sha256,
        feegate::policy::engine::sha256_hex(&tariff)
    );
    assert_eq!(p.who, "Lin (county engineer)");
    assert_eq!(p.source, "signed");
    assert_eq!(p.contract_version, "1.1.0");
    assert_eq!(
        registry::component_bytes(&db, &p.component_sha256)
            .await
            .unwrap(),
        tariff
    );
    let again = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    assert_eq!(again.publication_id, p.publication_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_take_effect_at_their_time_and_a_rollback_restores_the_previous_version() {
    let Some((_tdb, db, _)) = temp_db(
        "activations_take_effect_at_their_time_and_a_rollback_restores_the_previous_version",
    )
    .await
    else {
        return;
    };
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let key = trusting_county(&db).await;
    let tariff = wasm("policy_tariff_step");
    let hostile = wasm("hostile_policy");
    let a = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    let b = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &hostile,
        r#"{"mode":"ok"}"#,
    )
    .await
    .unwrap();
    let activate = |version: String, at: &'static str, now: &'static str| {
        let db = db.clone();
        let engine = engine.clone();
        async move {
            registry::activate(
                &db,
                &engine,
                &ActivateRequest {
                    county: "xianyou",
                    kind: PolicyKind::Tariff,
                    version: &version,
                    at: Some(t(at)),
                    stage: None,
                    who: "ops",
                    note: "test",
                    now: t(now),
                },
            )
            .await
        }
    };
    assert!(
        registry::in_force(&db, "xianyou", PolicyKind::Tariff, t("2013-01-02 00:00:00"))
            .await
            .unwrap()
            .is_none(),
        "nothing activated: the policy-set file rules"
    );
    activate(
        a.component_sha256[..8].to_string(),
        "2013-01-02 00:00:00",
        "2013-01-01 10:00:00",
    )
    .await
    .unwrap();
    activate(
        b.component_sha256.clone(),
        "2013-01-05 00:00:00",
        "2013-01-01 10:05:00",
    )
    .await
    .unwrap();
    let in_force = |at: &'static str| {
        let db = db.clone();
        async move {
            registry::in_force(&db, "xianyou", PolicyKind::Tariff, t(at))
                .await
                .unwrap()
                .map(|a| a.publication_id)
        }
    };
    assert_eq!(in_force("2013-01-01 23:59:59").await, None);
    assert_eq!(
        in_force("2013-01-02 00:00:00").await,
        Some(a.publication_id)
    );
    assert_eq!(
        in_force("2013-01-04 23:59:59").await,
        Some(a.publication_id),
        "a future activation waits for its time"
    );
    assert_eq!(
        in_force("2013-01-05 00:00:00").await,
        Some(b.publication_id)
    );

    // An unknown or too short version is refused with what to do.
    let err = activate(
        "deadbeef".into(),
        "2013-01-06 00:00:00",
        "2013-01-06 00:00:00",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("policy list"), "{err}");
    let err = activate("3c5b".into(), "2013-01-06 00:00:00", "2013-01-06 00:00:00")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::UnknownVersion { .. }), "{err}");
    // An activation cannot be back-dated: the history would claim a version ruled
    // decisions it never made.
    let err = activate(
        a.component_sha256.clone(),
        "2013-01-01 00:00:00",
        "2013-01-06 00:00:00",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::PastActivation { .. }), "{err}");

    // Rollback is a new event that puts the previous version back.
    let r = registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "hostile tariff went live by mistake",
        t("2013-01-06 08:00:00"),
    )
    .await
    .unwrap();
    assert_eq!(r.action, "rollback");
    assert_eq!(r.publication_id, a.publication_id);
    assert_eq!(
        in_force("2013-01-06 08:00:00").await,
        Some(a.publication_id)
    );
    let history = registry::history(&db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap();
    assert_eq!(history.len(), 3, "history keeps every event");
    // A second rollback goes further back, never to the version the first one took
    // out: nothing was in force before `a` here (no policy set recorded), so it is
    // refused and `a` stays.
    let err = registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "again",
        t("2013-01-06 09:00:00"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::NothingToRollBack { .. }),
        "{err}"
    );
    assert_eq!(
        in_force("2013-01-06 09:00:00").await,
        Some(a.publication_id)
    );

    // The history cannot be rewritten.
    let err = sqlx::query("DELETE FROM policy_activations")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_host_swaps_an_activated_version_in_without_restart_and_a_running_settlement_keeps_its_snapshot()
 {
    let Some((opts, _db)) = common::small_county_db("a_running_host_swaps_an_activated_version_in_without_restart_and_a_running_settlement_keeps_its_snapshot", 8, 3, 11).await else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    for day in 0..3 {
        s.run_day(opts.start + chrono::Duration::days(day), false)
            .await
            .unwrap();
    }
    let db = s.host.db.clone();
    let engine = s.host.engine.clone();
    let county = s.host.county.clone();
    let shipped_sha = county
        .snapshot()
        .get(PolicyKind::Tariff)
        .component
        .sha256
        .clone();
    // The shipped components are in the registry (recorded at start), so their
    // decisions are replayable.
    assert_eq!(
        registry::component_bytes(&db, &shipped_sha).await.unwrap(),
        wasm("policy_tariff_step")
    );

    let key = trusting_county(&db).await;
    let hostile = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("hostile_policy"),
        r#"{"mode":"ok"}"#,
    )
    .await
    .unwrap();
    // Activated for 00:05 on day 4 (before the 00:10 settlement), with a stage move.
    let day4 = opts.start + chrono::Duration::days(3);
    registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &hostile.component_sha256,
            at: Some(day4.and_hms_opt(0, 5, 0).unwrap()),
            stage: Some(RolloutStage::NotifyOnly),
            who: "ops",
            note: "flat 1 fen per kWh trial",
            now: s.clock.now(),
        },
    )
    .await
    .unwrap();
    assert!(
        s.watcher.poll().await.unwrap().is_empty(),
        "not yet effective"
    );

    // A settlement that started before the swap: it holds its snapshot.
    let before = county.snapshot();
    s.advance(day4.and_hms_opt(0, 5, 0).unwrap()).unwrap();
    let swaps = s.watcher.poll().await.unwrap();
    assert_eq!(swaps.len(), 1);
    assert_eq!(swaps[0].from_sha256, shipped_sha);
    assert_eq!(swaps[0].to_sha256, hostile.component_sha256);
    assert!(
        s.watcher.poll().await.unwrap().is_empty(),
        "a swap happens once"
    );
    let after = county.snapshot();
    assert_eq!(
        after.get(PolicyKind::Tariff).component.sha256,
        hostile.component_sha256
    );
    assert_eq!(after.rollout_stage, RolloutStage::NotifyOnly);
    assert_eq!(before.get(PolicyKind::Tariff).component.sha256, shipped_sha);
    assert_eq!(before.rollout_stage, RolloutStage::ApprovalGated);

    // Day 4's readings (collected by the normal morning), then the settlement that
    // "started" before the swap runs on its snapshot: every decision by the shipped tariff.
    s.advance(day4.and_hms_opt(0, 10, 0).unwrap()).unwrap();
    feegate::collection::collect_daily(&db, &s.host.meters, "xianyou", day4, s.clock.now())
        .await
        .unwrap();
    let report = feegate::settlement::settle(
        &db,
        &engine,
        "xianyou",
        &before,
        day4,
        s.clock.now(),
        &s.host.config.settlement,
    )
    .await
    .unwrap();
    assert!(report.settled > 0);
    let shas: Vec<String> = sqlx::query(
        "SELECT DISTINCT component_sha256 FROM decisions WHERE kind = 'tariff' AND business_date = $1",
    )
    .bind(feegate::db::ds(day4 - chrono::Duration::days(1)))
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(shas, vec![shipped_sha.clone()]);

    // The next day's job takes a fresh snapshot: the new version prices it.
    s.run_day(day4 + chrono::Duration::days(1), true)
        .await
        .unwrap();
    let shas: Vec<String> = sqlx::query(
        "SELECT DISTINCT component_sha256 FROM decisions WHERE kind = 'tariff' AND business_date = $1",
    )
    .bind(feegate::db::ds(day4))
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(shas, vec![hostile.component_sha256.clone()]);

    // Rolling back swaps the shipped version back in, from the watcher's cache.
    registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "trial over",
        s.clock.now(),
    )
    .await
    .unwrap();
    let swaps = s.watcher.poll().await.unwrap();
    assert_eq!(swaps.len(), 1);
    assert_eq!(
        county.snapshot().get(PolicyKind::Tariff).component.sha256,
        shipped_sha
    );
}

/// A finished small county in the database at `url`, for the audit tests.
async fn recorded_county(url: &str, days: u32, overrides: &[ComponentOverride]) {
    let mut opts = common::small_county(16, days, 5);
    opts.db_url = Some(url.to_string());
    let mut s = Scenario::new(&opts, overrides).await.unwrap();
    for day in 0..=days {
        s.run_day(
            opts.start + chrono::Duration::days(i64::from(day)),
            day == days,
        )
        .await
        .unwrap();
    }
    s.host.db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_decision_replays_bit_for_bit_including_failures() {
    // A tariff that traps on every call: its failures must replay as the same failure.
    let trap = ComponentOverride {
        kind: PolicyKind::Warning,
        wasm: common::component("hostile_policy"),
        parameters_json: r#"{"mode":"trap"}"#.into(),
    };
    let Some(tdb) =
        common::test_database("every_recorded_decision_replays_bit_for_bit_including_failures")
            .await
    else {
        return;
    };
    let url = tdb.url.clone();
    recorded_county(&url, 4, &[trap]).await;
    let db = Db::open(&url).await.unwrap();
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let all = audit::replay(&db, &engine, &Filter::default(), None)
        .await
        .unwrap();
    assert!(all.len() > 40, "{} decisions", all.len());
    assert!(
        all.iter().any(|r| r.recorded.starts_with("failed")),
        "the trap was recorded"
    );
    assert!(all.iter().any(|r| r.recorded.starts_with("ok")));
    for r in &all {
        assert!(
            r.matches,
            "decision {} differs:\n{}\n{}",
            r.decision_id, r.recorded, r.replayed
        );
        // Fuel is exact, so a decision made alone replays with the same fuel. One made
        // many per call (contract 1.1: the shipped tariff and warning components) logged
        // its share of the call's fuel, and says so; alone it also parses the
        // parameters, so it uses more.
        match &r.note {
            Some(note) if note.contains("share of one call that made") => assert!(
                0 < r.fuel_recorded && (r.fuel_recorded as u64) < r.fuel_replayed,
                "decision {}: {} recorded, {} replayed",
                r.decision_id,
                r.fuel_recorded,
                r.fuel_replayed
            ),
            _ => assert_eq!(
                r.fuel_recorded as u64, r.fuel_replayed,
                "decision {}",
                r.decision_id
            ),
        }
    }
    assert!(
        all.iter().any(|r| r.kind == "tariff" && r.note.is_some()),
        "the tariff decisions were made many per call"
    );
    // `audit log` says so for each of them: by one call of how many (migration 0024).
    let tariff_lines = audit::log(
        &db,
        &Filter {
            kind: "tariff".into(),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert!(!tariff_lines.is_empty());
    for l in &tariff_lines {
        assert!(
            l.call_decisions.is_some_and(|n| (1..=128).contains(&n)),
            "decision {}: {:?}",
            l.decision_id,
            l.call_decisions
        );
    }
    assert!(
        all.iter().any(|r| r.note.is_none() && r.kind == "warning"),
        "the hostile warning component decides one per call"
    );
    let one = audit::replay(&db, &engine, &Filter::default(), Some(3))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let err = audit::replay(&db, &engine, &Filter::default(), Some(999_999))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit log"), "{err}");
}

/// A copy `name` of `dir`'s `county.db`, tampered with by `sql` ([`tamper`]), opened.
async fn tampered_copy(dir: &std::path::Path, name: &str, sql: &str) -> Db {
    let to = dir.join(name);
    std::fs::copy(dir.join("county.db"), &to).unwrap();
    let url = format!("sqlite://{}", to.display());
    tamper(&url, sql).await;
    Db::open(&url).await.unwrap()
}

/// Opens the SQLite file behind the host's back, drops the triggers and runs `sql`.
async fn tamper(url: &str, sql: &str) {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    // Settlements point at decisions; a forger would switch the check off too.
    conn.execute("PRAGMA foreign_keys = OFF").await.unwrap();
    conn.execute("DROP TRIGGER decisions_no_update")
        .await
        .unwrap();
    conn.execute("DROP TRIGGER decisions_no_delete")
        .await
        .unwrap();
    conn.execute("DROP TRIGGER decision_parameters_no_update")
        .await
        .unwrap();
    conn.execute("DROP TRIGGER decision_parameters_no_delete")
        .await
        .unwrap();
    conn.execute(sql).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_an_edited_a_removed_and_a_cut_off_decision() {
    // SQLite on either backend: the test copies the database file and tampers with it.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("county.db").display());
    recorded_county(&url, 3, &[]).await;
    let db = Db::open(&url).await.unwrap();
    let clean = audit::verify(&db, None).await.unwrap();
    assert!(clean.ok(), "{:?}", clean.breaks);
    assert!(clean.rows > 20);
    assert_eq!(clean.unchained, 0);
    let head = clean.head_hash.clone();
    assert!(audit::verify(&db, Some(&head)).await.unwrap().ok());
    // Every decision's parameters are stored once (migration 0017): a handful of texts
    // (one per kind here) for all the rows, each row naming its own by sha256.
    let (rows, with_sha, texts): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(parameters_sha256), (SELECT COUNT(*) FROM decision_parameters) FROM decisions",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(with_sha, rows, "every policy input carries parameters");
    assert!(
        (1..=5).contains(&texts),
        "{texts} parameters texts for {rows} rows"
    );
    for sql in [
        "UPDATE decision_parameters SET parameters = '{}'",
        "DELETE FROM decision_parameters",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // The tariff and warning decisions were made many per call (contract 1.1), and each
    // row says by a call of how many (migration 0024); notices and cutoffs alone.
    let (batched, first_batched): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), MIN(decision_id) FROM decisions WHERE call_decisions IS NOT NULL
         AND kind IN ('tariff', 'warning') AND call_decisions BETWEEN 1 AND 128",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(batched > 0, "no decision recorded its call's size");
    let alone_with_size: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM decisions WHERE call_decisions IS NOT NULL AND kind NOT IN ('tariff', 'warning')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        alone_with_size, 0,
        "notices and cutoffs are decided one per call"
    );
    db.close().await;

    // Edited: a batched decision's call size, which says what its fuel is a share of —
    // changed, or removed so that its fuel would read as its own. Both are chained.
    for (name, value) in [("size.db", "call_decisions + 1"), ("unsized.db", "NULL")] {
        let db = tampered_copy(
            dir.path(),
            name,
            &format!(
                "UPDATE decisions SET call_decisions = {value} WHERE decision_id = {first_batched}"
            ),
        )
        .await;
        let r = audit::verify(&db, None).await.unwrap();
        assert_eq!(r.breaks.len(), 1, "{name}: {:?}", r.breaks);
        assert_eq!(r.breaks[0].decision_id, first_batched, "{name}");
        assert!(
            r.breaks[0].problem.contains("edited"),
            "{name}: {:?}",
            r.breaks
        );
        db.close().await;
    }

    // Edited: one charge made smaller.
    let smaller = "UPDATE decisions SET output_json = replace(output_json, '\"charge_fen\":', '\"charge_fen\":1')
                   WHERE decision_id = 5";
    let db = tampered_copy(dir.path(), "edited.db", smaller).await;
    let r = audit::verify(&db, None).await.unwrap();
    assert_eq!(r.breaks.len(), 1, "{:?}", r.breaks);
    assert_eq!(r.breaks[0].decision_id, 5);
    assert!(r.breaks[0].problem.contains("edited"), "{:?}", r.breaks);

    // (A forger who also recomputes every later row's hashes leaves a consistent chain;
    // only a head hash kept elsewhere catches that, as for the cut-off end below.)

    // Removed: a row in the middle.
    let db = tampered_copy(
        dir.path(),
        "removed.db",
        "DELETE FROM decisions WHERE decision_id = 7",
    )
    .await;
    let r = audit::verify(&db, None).await.unwrap();
    assert_eq!(r.breaks.len(), 1, "{:?}", r.breaks);
    assert_eq!(r.breaks[0].decision_id, 8);
    assert!(r.breaks[0].problem.contains("removed"), "{:?}", r.breaks);

    // Edited parameters: the chain covers their sha256, verify the text behind it; the
    // break is reported at the first decision that uses them, and replaying it refuses.
    let db = tampered_copy(
        dir.path(),
        "params.db",
        "UPDATE decision_parameters SET parameters = replace(parameters, '0.4983', '0.9983')",
    )
    .await;
    let r = audit::verify(&db, None).await.unwrap();
    assert_eq!(r.breaks.len(), 1, "{:?}", r.breaks);
    assert!(r.breaks[0].problem.contains("edited"), "{:?}", r.breaks);
    let first_tariff: i64 =
        sqlx::query_scalar("SELECT MIN(decision_id) FROM decisions WHERE kind = 'tariff'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(r.breaks[0].decision_id, first_tariff);
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let err = audit::replay(&db, &engine, &Filter::default(), Some(first_tariff))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    db.close().await;

    // Removed parameters: every decision that named them is reported.
    let db = tampered_copy(
        dir.path(),
        "params_gone.db",
        "DELETE FROM decision_parameters WHERE parameters LIKE '%0.4983%'",
    )
    .await;
    let r = audit::verify(&db, None).await.unwrap();
    let tariffs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM decisions WHERE kind = 'tariff'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(r.breaks.len() as i64, tariffs, "{:?}", r.breaks);
    assert!(
        r.breaks.iter().all(|b| b.problem.contains("missing")),
        "{:?}",
        r.breaks
    );
    db.close().await;

    // Cut off the end: only the head recorded earlier shows it.
    let db = tampered_copy(
        dir.path(),
        "cut.db",
        "DELETE FROM decisions WHERE decision_id = (SELECT MAX(decision_id) FROM decisions)",
    )
    .await;
    assert!(audit::verify(&db, None).await.unwrap().ok());
    let r = audit::verify(&db, Some(&head)).await.unwrap();
    assert!(!r.ok());
    assert!(
        r.breaks[0].problem.contains("removed from the end"),
        "{:?}",
        r.breaks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_the_money_difference_and_loudly_a_candidate_that_disconnects_more() {
    let Some(tdb) = common::test_database(
        "diff_reports_the_money_difference_and_loudly_a_candidate_that_disconnects_more",
    )
    .await
    else {
        return;
    };
    let url = tdb.url.clone();
    recorded_county(&url, 24, &[]).await;
    let db = Db::open(&url).await.unwrap();
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let key = trusting_county(&db).await;
    let (from, to) = ("2013-01-01", "2013-01-31");

    // The same component and parameters as recorded: nothing changes.
    let shipped: Vec<_> = registry::publications(&db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap();
    let same = audit::diff(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        &format!("#{}", shipped[0].publication_id),
        from,
        to,
    )
    .await
    .unwrap();
    assert!(same.decisions > 100);
    assert!(same.changed.is_empty(), "{:?}", &same.changed[..1]);
    assert_eq!(same.charge_difference_fen, 0);
    assert_eq!(same.fuel_recorded, same.fuel_candidate);

    // The shipped step tariff published with step 1's price replaced, then diffed.
    let with_step_1 = async |price: &str| {
        let params = shipped[0].parameters_json.replace("0.4983", price);
        assert_ne!(params, shipped[0].parameters_json);
        let p = publish(
            &db,
            &engine,
            &key,
            PolicyKind::Tariff,
            &wasm("policy_tariff_step"),
            &params,
        )
        .await
        .unwrap();
        audit::diff(
            &db,
            &engine,
            "xianyou",
            PolicyKind::Tariff,
            &format!("#{}", p.publication_id),
            from,
            to,
        )
        .await
        .unwrap()
    };

    // Step 1 dearer by 3 fen/kWh: every charge with consumption changes, up.
    let d = with_step_1("0.5283").await;
    assert!(!d.changed.is_empty());
    assert!(d.charge_difference_fen > 0);
    assert_eq!(
        d.charge_difference_fen,
        d.changed
            .iter()
            .map(|c| c.charge_difference_fen)
            .sum::<i64>()
    );
    assert!(d.changed.iter().all(|c| c.charge_difference_fen >= 0));
    assert_eq!(d.over_ceiling, (0, 0), "3 fen/kWh dearer is a real tariff");
    assert!(!d.over_ceiling_more());

    // Step 1 typed in fen instead of yuan (49.8300 for 0.4983): a hundred times dearer,
    // over the host's charge ceiling. The diff counts the decisions settlement would hold.
    let f = with_step_1("49.8300").await;
    assert_eq!(f.over_ceiling.0, 0, "nothing recorded was over the ceiling");
    assert!(f.over_ceiling.1 > 0, "{:?}", f.over_ceiling);
    assert!(f.over_ceiling_more());
    assert_eq!(
        f.max_price_yuan_per_kwh,
        feegate::settlement::MAX_PRICE_YUAN_PER_KWH
    );
    // Judged against the ceiling of a host configured for 60 yuan/kWh, it is not over.
    let generous = PolicyEngine::new(PolicyLimits {
        max_price_yuan_per_kwh: rust_decimal::Decimal::from(60),
        ..PolicyLimits::default()
    })
    .unwrap();
    let g = audit::diff(
        &db,
        &generous,
        "xianyou",
        PolicyKind::Tariff,
        &format!("#{}", f.candidate_publication_id),
        from,
        to,
    )
    .await
    .unwrap();
    assert_eq!(g.over_ceiling, (0, 0));
    assert_eq!(g.max_price_yuan_per_kwh, rust_decimal::Decimal::from(60));

    // A cutoff candidate that disconnects everybody it is asked about.
    let cutoffs = audit::log(
        &db,
        &Filter {
            kind: "cutoff".into(),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert!(
        !cutoffs.is_empty(),
        "the county must have reached arrears to test this"
    );
    let harsh = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Cutoff,
        &wasm("hostile_policy"),
        r#"{"mode":"disconnect"}"#,
    )
    .await
    .unwrap();
    let d = audit::diff(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Cutoff,
        &harsh.component_sha256,
        from,
        to,
    )
    .await
    .unwrap();
    assert!(d.disconnects_more(), "{:?}", d.disconnections);
    assert_eq!(d.disconnections.1 as usize, cutoffs.len());

    // The shipped cutoff against itself: not more.
    let shipped_cutoff = registry::publications(&db, "xianyou", Some(PolicyKind::Cutoff))
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.source == "shipped")
        .unwrap();
    let d = audit::diff(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Cutoff,
        &format!("#{}", shipped_cutoff.publication_id),
        from,
        to,
    )
    .await
    .unwrap();
    assert!(!d.disconnects_more());
    assert!(d.changed.is_empty());
}

#[test]
fn parameters_are_canonical_whatever_their_spelling() {
    let a = registry::canonical_parameters(r#"{ "b": 1, "a": {"y": "2", "x": [1, 2]} }"#).unwrap();
    let b = registry::canonical_parameters("a = { x = [1, 2], y = \"2\" }\nb = 1\n").unwrap();
    assert_eq!(a, r#"{"a":{"x":[1,2],"y":"2"},"b":1}"#);
    assert_eq!(a, b);
    assert!(registry::canonical_parameters("[1, 2]").is_err());
}

#[test]
fn policy_test_runs_the_shipped_tariff_fixtures_and_catches_a_wrong_expectation() {
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let c = engine
        .load(PolicyKind::Tariff, &wasm("policy_tariff_step"))
        .unwrap();
    let text =
        std::fs::read_to_string(common::repo().join("plugins/tariff-step/fixtures/xianyou.json"))
            .unwrap();
    let results = feegate::fixtures::run(&engine, &c, &text).unwrap();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(r.passed, "{}: {}", r.name, r.mismatch);
        assert!(r.fuel_used > 0);
    }
    // Inputs as the decision log stores them (`"parameters": ""`, migration 0017) get the
    // file's parameters as inputs without any do.
    let mut stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in stored["cases"].as_array_mut().unwrap() {
        case["input"]["parameters"] = "".into();
    }
    let results = feegate::fixtures::run(&engine, &c, &stored.to_string()).unwrap();
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|r| r.passed), "{results:?}");
    let wrong = text.replace("\"charge_fen\": 523", "\"charge_fen\": 524");
    assert_ne!(wrong, text);
    let results = feegate::fixtures::run(&engine, &c, &wrong).unwrap();
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].mismatch.contains("expected 524, got 523"),
        "{}",
        failed[0].mismatch
    );
}

/// The walkthrough of README.md, through the real binary.
#[test]
fn the_readme_walkthrough_works_at_the_command_line() {
    let Some(tdb) =
        common::test_database_blocking("the_readme_walkthrough_works_at_the_command_line")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tdb.url.clone();
    let params = dir.path().join("tariff.json");
    std::fs::write(&params, TARIFF_PARAMS).unwrap();
    let tariff = common::component("policy_tariff_step");
    let cli = common::Cli {
        dir: dir.path(),
        db: &db,
    };
    let run = |args: &[&str]| cli.run(args);
    let ok = |args: &[&str]| cli.ok(args);
    ok(&["policy", "key", "new", "--out", "lin"]);
    assert!(dir.path().join("lin.key").exists() && dir.path().join("lin.pub").exists());
    let (code, _, stderr) = run(&["policy", "key", "new", "--out", "lin"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.pub", "--who", "Lin",
    ]);
    let tariff_path = tariff.to_str().unwrap();
    let params_path = params.to_str().unwrap();
    let published = ok(&[
        "policy",
        "publish",
        tariff_path,
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--params",
        params_path,
        "--key",
        "lin.key",
        "--note",
        "2013 notice",
    ]);
    assert!(published.contains("by Lin"), "{published}");
    // Signed elsewhere, published with --signature.
    let sig = ok(&[
        "policy",
        "sign",
        tariff_path,
        "--params",
        params_path,
        "--key",
        "lin.key",
    ]);
    std::fs::write(dir.path().join("t.sig"), sig).unwrap();
    // The same component and parameters again: the first publication stands, and the
    // command says the new note was not stored rather than "published".
    let again = ok(&[
        "policy",
        "publish",
        tariff_path,
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--params",
        params_path,
        "--signature",
        "t.sig",
        "--note",
        "same again",
    ]);
    assert!(
        again.starts_with("already published:")
            && again.contains("note \"2013 notice\"")
            && again.contains("this note was not stored"),
        "{again}"
    );
    let sha = feegate::policy::engine::sha256_hex(&std::fs::read(&tariff).unwrap());
    ok(&[
        "policy",
        "activate",
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--version",
        &sha[..10],
        "--stage",
        "approval",
        "--note",
        "go live",
    ]);
    let list = ok(&["policy", "list", "--county", "xianyou"]);
    assert!(list.contains("* in force"), "{list}");
    let history = ok(&["policy", "history", "--county", "xianyou"]);
    assert!(
        history.contains("by ops-test") && history.contains("go live"),
        "{history}"
    );
    let show = ok(&[
        "policy",
        "show",
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--version",
        &sha,
    ]);
    assert!(show.contains("feegate:policy@1.1.0"), "{show}");
    // Nothing earlier to roll back to (no host recorded a policy-set file here).
    let (code, _, stderr) = run(&[
        "policy", "rollback", "--county", "xianyou", "--kind", "tariff", "--note", "x",
    ]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("nothing to roll back to"), "{stderr}");
    // A scheduled activation is cancelled before its time, and shows so.
    let scheduled = ok(&[
        "policy",
        "activate",
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--version",
        &sha[..10],
        "--at",
        "2099-01-01 00:00:00",
        "--note",
        "next price notice",
    ]);
    let id = scheduled
        .trim_start_matches('#')
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let cancel = [
        "policy",
        "cancel",
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--activation",
        &id,
        "--who",
        "Chen",
        "--note",
        "notice withdrawn",
    ];
    let cancelled = ok(&cancel);
    assert!(
        cancelled.starts_with(&format!("cancelled: #{id}"))
            && cancelled.contains("CANCELLED by Chen"),
        "{cancelled}"
    );
    let history = ok(&[
        "policy", "history", "--county", "xianyou", "--kind", "tariff",
    ]);
    assert!(
        history.contains("CANCELLED by Chen") && history.contains("notice withdrawn"),
        "{history}"
    );
    let (code, _, stderr) = run(&cancel);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("already cancelled by Chen"), "{stderr}");
    let verify = ok(&["audit", "verify"]);
    assert!(verify.contains("chain intact"), "{verify}");
    let (code, stdout, _) = run(&[
        "policy",
        "test",
        tariff_path,
        "--fixtures",
        common::repo()
            .join("plugins/tariff-step/fixtures/xianyou.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
}

/// Parameters the component refuses (`{}` for the step tariff: `bad-parameters`) are
/// refused at publish with the component's code and message, and a version published
/// before that check is refused at activate: in force it would hold every account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_activate_refuse_parameters_the_component_refuses() {
    let Some((_tdb, db, _)) =
        temp_db("publish_and_activate_refuse_parameters_the_component_refuses").await
    else {
        return;
    };
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let key = trusting_county(&db).await;
    let tariff = wasm("policy_tariff_step");
    let err = publish(&db, &engine, &key, PolicyKind::Tariff, &tariff, "{}")
        .await
        .unwrap_err();
    let msg = err.to_string();
    match &err {
        RegistryError::ProbeFailed {
            failure: feegate::policy::PolicyFailure::Refused { code, message },
            ..
        } => {
            assert_eq!(code, "bad-parameters", "{msg}");
            assert!(msg.contains(message.as_str()), "{msg}");
        }
        _ => panic!("expected the component's refusal, got {msg}"),
    }
    assert!(msg.contains("hold every account"), "{msg}");
    assert!(
        registry::publications(&db, "xianyou", None)
            .await
            .unwrap()
            .is_empty(),
        "nothing refused is stored"
    );

    // A version stored before publish checked its parameters.
    let old = registry::record_shipped(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        &tariff,
        "1.0.0",
        "{}",
        t("2013-01-01 09:00:00"),
    )
    .await
    .unwrap();
    let err = registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &format!("#{}", old.publication_id),
            at: None,
            stage: None,
            who: "ops",
            note: "old publication",
            now: t("2013-01-02 09:00:00"),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::ProbeFailed {
                failure: feegate::policy::PolicyFailure::Refused { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bad-parameters"), "{err}");
    assert!(
        registry::history(&db, "xianyou", None)
            .await
            .unwrap()
            .is_empty()
    );
    // Good parameters still publish and activate.
    let good = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &format!("#{}", good.publication_id),
            at: None,
            stage: None,
            who: "ops",
            note: "good",
            now: t("2013-01-02 09:00:00"),
        },
    )
    .await
    .unwrap();
}

/// An activation recorded before `policy activate` checked the parameters: the running
/// host does not swap it in, and keeps the version in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_host_keeps_its_version_when_an_activated_one_refuses_its_parameters() {
    let Some((opts, _db)) = common::small_county_db(
        "a_running_host_keeps_its_version_when_an_activated_one_refuses_its_parameters",
        4,
        1,
        11,
    )
    .await
    else {
        return;
    };
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let db = s.host.db.clone();
    let county = s.host.county.clone();
    let before = county.snapshot();
    let old = registry::record_shipped(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        "1.0.0",
        "{}",
        s.clock.now(),
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO policy_activations (county, kind, publication_id, component_sha256, action, rollout_stage, effective_at, who, note, recorded_at)
         VALUES ('xianyou', 'tariff', $1, $2, 'activate', $3, $4, 'ops', 'before the check', $4)",
    )
    .bind(old.publication_id)
    .bind(&old.component_sha256)
    .bind(None::<&str>)
    .bind(feegate::db::ts(s.clock.now()))
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(s.watcher.poll().await.unwrap().is_empty(), "not swapped in");
    let after = county.snapshot();
    assert_eq!(
        after.get(PolicyKind::Tariff).parameters_json,
        before.get(PolicyKind::Tariff).parameters_json
    );
    assert_ne!(after.get(PolicyKind::Tariff).parameters_json, "{}");
    // Not retried at every poll.
    assert!(s.watcher.poll().await.unwrap().is_empty());
}

/// Key files say what they hold; each is refused where the other kind belongs, and
/// bare-hex files written before the header line still work.
#[test]
fn key_files_say_what_they_are_and_the_wrong_kind_is_refused() {
    let Some(tdb) =
        common::test_database_blocking("key_files_say_what_they_are_and_the_wrong_kind_is_refused")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tdb.url.clone();
    let params = dir.path().join("tariff.json");
    std::fs::write(&params, TARIFF_PARAMS).unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let tariff = common::component("policy_tariff_step");
    let tariff_path = tariff.to_str().unwrap();
    let params_path = params.to_str().unwrap();
    let cli = common::Cli {
        dir: dir.path(),
        db: &db,
    };
    cli.ok(&["policy", "key", "new", "--out", "lin"]);
    let secret = std::fs::read_to_string(dir.path().join("lin.key")).unwrap();
    let public = std::fs::read_to_string(dir.path().join("lin.pub")).unwrap();
    assert!(
        secret.starts_with("feegate ed25519 secret key\n"),
        "{secret}"
    );
    assert!(
        public.starts_with("feegate ed25519 public key\n"),
        "{public}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("lin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The secret key given to trust: refused, nothing stored.
    let (code, _, stderr) = cli.run(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.key", "--who", "x",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("is a secret key; trust the matching .pub file")
            && stderr.contains("consider generating a new pair"),
        "{stderr}"
    );
    let list = cli.ok(&["policy", "trust", "list", "--county", "xianyou"]);
    assert!(list.trim().is_empty(), "{list}");
    cli.ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.pub", "--who", "Lin",
    ]);

    // The public key given to sign with: refused by sign and by publish.
    let (code, _, stderr) = cli.run(&[
        "policy",
        "sign",
        tariff_path,
        "--params",
        params_path,
        "--key",
        "lin.pub",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("is a public key; sign with the secret key file"),
        "{stderr}"
    );
    let publish = |key: &str, params: &str| {
        cli.run(&[
            "policy",
            "publish",
            tariff_path,
            "--county",
            "xianyou",
            "--kind",
            "tariff",
            "--params",
            params,
            "--key",
            key,
            "--note",
            "n",
        ])
    };
    let (code, _, stderr) = publish("lin.pub", params_path);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("is a public key; sign with the secret key file"),
        "{stderr}"
    );

    // `{}` is not parameters the step tariff accepts: refused with its code.
    let (code, _, stderr) = publish("lin.key", empty.to_str().unwrap());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("bad-parameters"), "{stderr}");
    let list = cli.ok(&["policy", "list", "--county", "xianyou"]);
    assert!(!list.contains('#'), "nothing published: {list}");

    // Bare hex, as `policy key new` wrote keys before: still read; a bare `.key`
    // file is still refused by trust.
    let old = feegate::registry::generate_key();
    std::fs::write(
        dir.path().join("old.key"),
        format!("{}\n", hex::encode(old.to_bytes())),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("old.pub"),
        format!("{}\n", hex::encode(old.verifying_key().to_bytes())),
    )
    .unwrap();
    let (code, _, stderr) = cli.run(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "old.key", "--who", "Old",
    ]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("is a secret key"), "{stderr}");
    cli.ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "old.pub", "--who", "Old",
    ]);
    let published = cli.ok(&[
        "policy",
        "publish",
        tariff_path,
        "--county",
        "xianyou",
        "--kind",
        "tariff",
        "--params",
        params_path,
        "--key",
        "old.key",
        "--note",
        "old key",
    ]);
    assert!(published.contains("by Old"), "{published}");
}

/// Activates `version` of the tariff for xianyou at `at`, recorded at `now`.
async fn activate_tariff(
    db: &Db,
    engine: &PolicyEngine,
    version: &str,
    at: &str,
    stage: Option<RolloutStage>,
    now: &str,
) -> registry::Activation {
    registry::activate(
        db,
        engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version,
            at: Some(t(at)),
            stage,
            who: "ops",
            note: "test",
            now: t(now),
        },
    )
    .await
    .unwrap()
}

/// A scheduled activation cancelled before its time never takes effect (version nor
/// stage) and stays in the history, marked cancelled; an effective, a cancelled, an
/// unknown activation and one of another kind or county are refused with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_scheduled_activation_never_takes_effect_and_stays_in_the_history() {
    let Some((_tdb, db, _)) =
        temp_db("a_cancelled_scheduled_activation_never_takes_effect_and_stays_in_the_history")
            .await
    else {
        return;
    };
    let (engine, key, a) = tariff_step_published(&db).await;
    let b = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("hostile_policy"),
        r#"{"mode":"ok"}"#,
    )
    .await
    .unwrap();
    let first = activate_tariff(
        &db,
        &engine,
        &a.component_sha256,
        "2013-01-02 00:00:00",
        Some(RolloutStage::ApprovalGated),
        "2013-01-01 10:00:00",
    )
    .await;
    let scheduled = activate_tariff(
        &db,
        &engine,
        &b.component_sha256,
        "2013-01-05 00:00:00",
        Some(RolloutStage::Automatic),
        "2013-01-01 10:05:00",
    )
    .await;
    let cancelled = registry::cancel(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        scheduled.activation_id,
        "Chen",
        "price notice withdrawn",
        move || t("2013-01-03 08:00:00"),
    )
    .await
    .unwrap();
    let want = registry::Cancellation {
        who: "Chen".into(),
        note: "price notice withdrawn".into(),
        recorded_at: "2013-01-03 08:00:00".into(),
    };
    assert_eq!(cancelled.activation_id, scheduled.activation_id);
    assert_eq!(cancelled.cancelled.as_ref(), Some(&want));

    // After its time the previous activation is still the one in force, stage too.
    let in_force = registry::in_force(&db, "xianyou", PolicyKind::Tariff, t("2013-01-06 00:00:00"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_force.activation_id, first.activation_id);
    assert_eq!(in_force.publication_id, a.publication_id);
    assert_eq!(
        registry::stage_in_force(&db, "xianyou", t("2013-01-06 00:00:00"))
            .await
            .unwrap(),
        Some(RolloutStage::ApprovalGated)
    );
    // The history keeps it, marked cancelled (who, why, when).
    let history = registry::history(&db, "xianyou", Some(PolicyKind::Tariff))
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].cancelled, None);
    assert_eq!(history[1].activation_id, scheduled.activation_id);
    assert_eq!(history[1].cancelled.as_ref(), Some(&want));
    let json = serde_json::to_value(&history[1]).unwrap();
    assert_eq!(json["cancelled"]["who"], "Chen", "{json}");

    let cancel = |id: i64, county: &'static str, kind: PolicyKind, now: &'static str| {
        let db = db.clone();
        async move {
            registry::cancel(&db, county, kind, id, "Chen", "again", move || t(now))
                .await
                .unwrap_err()
        }
    };
    // Cancelled already: says by whom and when.
    let err = cancel(
        scheduled.activation_id,
        "xianyou",
        PolicyKind::Tariff,
        "2013-01-03 09:00:00",
    )
    .await;
    assert!(
        matches!(err, RegistryError::AlreadyCancelled { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("already cancelled by Chen at 2013-01-03 08:00:00"),
        "{err}"
    );
    // In force already: too late, roll it back instead.
    let err = cancel(
        first.activation_id,
        "xianyou",
        PolicyKind::Tariff,
        "2013-01-03 09:00:00",
    )
    .await;
    assert!(
        matches!(err, RegistryError::AlreadyEffective { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("already in force since 2013-01-02 00:00:00")
            && msg.contains("feegate policy rollback --county xianyou --kind tariff"),
        "{msg}"
    );
    // Unknown id.
    let err = cancel(9999, "xianyou", PolicyKind::Tariff, "2013-01-03 09:00:00").await;
    assert!(
        matches!(err, RegistryError::UnknownActivation { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no activation #9999"), "{err}");
    assert!(err.to_string().contains("feegate policy history"), "{err}");
    // Of another kind, or another county: refused, naming what it is.
    let later = activate_tariff(
        &db,
        &engine,
        &b.component_sha256,
        "2013-02-01 00:00:00",
        None,
        "2013-01-03 09:00:00",
    )
    .await;
    for (county, kind) in [
        ("xianyou", PolicyKind::Warning),
        ("putian", PolicyKind::Tariff),
    ] {
        let err = cancel(later.activation_id, county, kind, "2013-01-03 09:00:00").await;
        assert!(
            matches!(err, RegistryError::ActivationElsewhere { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("is a tariff activation of county xianyou"),
            "{err}"
        );
    }
    assert!(
        registry::history(&db, "xianyou", Some(PolicyKind::Tariff))
            .await
            .unwrap()[2]
            .cancelled
            .is_none(),
        "a refused cancel records nothing"
    );

    // Two cancels at once: one records, the other is told it was cancelled already.
    let (x, y) = tokio::join!(
        registry::cancel(
            &db,
            "xianyou",
            PolicyKind::Tariff,
            later.activation_id,
            "Chen",
            "one",
            move || t("2013-01-04 00:00:00"),
        ),
        registry::cancel(
            &db,
            "xianyou",
            PolicyKind::Tariff,
            later.activation_id,
            "Lin",
            "two",
            move || t("2013-01-04 00:00:00"),
        )
    );
    match (&x, &y) {
        (Ok(_), Err(RegistryError::AlreadyCancelled { .. }))
        | (Err(RegistryError::AlreadyCancelled { .. }), Ok(_)) => {}
        _ => panic!("expected one cancel and one refusal, got {x:?} and {y:?}"),
    }

    // The table's primary key refuses a second cancellation (what a cancel that lost
    // the race meets).
    let err = sqlx::query(
        "INSERT INTO policy_activation_cancellations (activation_id, who, note, recorded_at) VALUES ($1, 'x', 'x', 'x')",
    )
    .bind(later.activation_id)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{err}"
    );
    // Cancellations cannot be rewritten.
    for sql in [
        "DELETE FROM policy_activation_cancellations",
        "UPDATE policy_activation_cancellations SET who = 'nobody'",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// `policy rollback` while the only activation is still scheduled names it and says to
/// cancel it; nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_with_only_a_scheduled_activation_names_it_and_says_to_cancel() {
    let Some((_tdb, db, _)) =
        temp_db("a_rollback_with_only_a_scheduled_activation_names_it_and_says_to_cancel").await
    else {
        return;
    };
    let (engine, _key, a) = tariff_step_published(&db).await;
    let scheduled = activate_tariff(
        &db,
        &engine,
        &a.component_sha256,
        "2013-01-05 00:00:00",
        None,
        "2013-01-01 10:00:00",
    )
    .await;
    let rollback = |now: &'static str| {
        let db = db.clone();
        let engine = engine.clone();
        async move {
            registry::rollback(
                &db,
                &engine,
                "xianyou",
                PolicyKind::Tariff,
                "ops",
                "wrong price",
                t(now),
            )
            .await
            .unwrap_err()
        }
    };
    let err = rollback("2013-01-02 00:00:00").await;
    assert!(
        matches!(err, RegistryError::OnlyScheduled { activation_id, .. } if activation_id == scheduled.activation_id),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "activation #{} (version {}) is scheduled for 2013-01-05 00:00:00",
            scheduled.activation_id, a.component_sha256
        )) && msg.contains(&format!(
            "feegate policy cancel --county xianyou --kind tariff --activation {}",
            scheduled.activation_id
        )),
        "{msg}"
    );
    assert_eq!(
        registry::history(&db, "xianyou", None).await.unwrap().len(),
        1,
        "nothing recorded"
    );
    // Once cancelled no activation is in force: the policy-set file is, and says so.
    registry::cancel(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        scheduled.activation_id,
        "ops",
        "wrong price",
        move || t("2013-01-02 00:00:00"),
    )
    .await
    .unwrap();
    let err = rollback("2013-01-02 00:01:00").await;
    assert!(
        matches!(err, RegistryError::PolicySetInForce { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("policy-set file is the tariff version in force")
    );
}

/// A rollback checks what it brings back as `activate` does: a version whose
/// parameters the component refuses (here a policy-set file recorded before publish
/// checked parameters) is refused, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_refuses_a_version_that_fails_the_probe_and_records_nothing() {
    let Some((_tdb, db, _)) =
        temp_db("a_rollback_refuses_a_version_that_fails_the_probe_and_records_nothing").await
    else {
        return;
    };
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    let key = trusting_county(&db).await;
    let tariff = wasm("policy_tariff_step");
    let old = registry::record_shipped(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        &tariff,
        "1.0.0",
        "{}",
        t("2013-01-01 09:00:00"),
    )
    .await
    .unwrap();
    let good = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &tariff,
        TARIFF_PARAMS,
    )
    .await
    .unwrap();
    let live = activate_tariff(
        &db,
        &engine,
        &format!("#{}", good.publication_id),
        "2013-01-02 09:00:00",
        None,
        "2013-01-02 09:00:00",
    )
    .await;
    let err = registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "back to the file",
        t("2013-01-03 09:00:00"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::ProbeFailed {
                failure: feegate::policy::PolicyFailure::Refused { .. },
                sha256,
                ..
            } if *sha256 == old.component_sha256
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bad-parameters") && msg.contains("hold every account"),
        "{msg}"
    );
    let history = registry::history(&db, "xianyou", None).await.unwrap();
    assert_eq!(history.len(), 1, "nothing recorded");
    assert_eq!(
        registry::in_force(&db, "xianyou", PolicyKind::Tariff, t("2013-01-03 09:00:00"))
            .await
            .unwrap()
            .map(|a| a.activation_id),
        Some(live.activation_id)
    );
}

/// The running host's watcher never puts a cancelled activation in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_host_never_swaps_in_a_cancelled_activation() {
    let Some((s, _db, hostile)) = county_with_hostile_tariff_published(
        "a_running_host_never_swaps_in_a_cancelled_activation",
    )
    .await
    else {
        return;
    };
    let (db, engine, county) = (
        s.host.db.clone(),
        s.host.engine.clone(),
        s.host.county.clone(),
    );
    let before = county.snapshot();
    let now = s.clock.now();
    let a = registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &hostile.component_sha256,
            at: Some(now + chrono::Duration::hours(1)),
            stage: Some(RolloutStage::Automatic),
            who: "ops",
            note: "trial",
            now,
        },
    )
    .await
    .unwrap();
    assert!(s.watcher.poll().await.unwrap().is_empty(), "not yet");
    registry::cancel(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        a.activation_id,
        "ops",
        "trial called off",
        move || now + chrono::Duration::minutes(30),
    )
    .await
    .unwrap();
    s.advance(now + chrono::Duration::hours(2)).unwrap();
    assert!(
        s.watcher.poll().await.unwrap().is_empty(),
        "never swapped in"
    );
    let after = county.snapshot();
    assert_eq!(
        after.get(PolicyKind::Tariff).component.sha256,
        before.get(PolicyKind::Tariff).component.sha256
    );
    assert_eq!(after.rollout_stage, before.rollout_stage);
}

/// A host whose clock ran ahead applied an activation that another machine then
/// cancelled in time by its own clock: the host's next poll puts the policy-set file's
/// version and stage back in force, instead of keeping a version the registry says never
/// took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_applied_an_activation_cancelled_afterwards_goes_back_to_the_policy_set() {
    let Some((s, _db, hostile)) = county_with_hostile_tariff_published(
        "a_host_that_applied_an_activation_cancelled_afterwards_goes_back_to_the_policy_set",
    )
    .await
    else {
        return;
    };
    let (db, engine, county) = (
        s.host.db.clone(),
        s.host.engine.clone(),
        s.host.county.clone(),
    );
    let before = county.snapshot();
    let now = s.clock.now();
    let effective = now + chrono::Duration::minutes(10);
    let a = registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &hostile.component_sha256,
            at: Some(effective),
            stage: Some(RolloutStage::Automatic),
            who: "ops",
            note: "trial",
            now,
        },
    )
    .await
    .unwrap();
    // The host's clock is a minute past the effective time: it applies the activation.
    s.advance(effective + chrono::Duration::minutes(1)).unwrap();
    let applied = s.watcher.poll().await.unwrap();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(
        county.snapshot().get(PolicyKind::Tariff).component.sha256,
        hostile.component_sha256
    );
    assert_eq!(county.snapshot().rollout_stage, RolloutStage::Automatic);
    assert_ne!(before.rollout_stage, RolloutStage::Automatic);
    // The canceller's clock is a minute behind the effective time.
    registry::cancel(
        &db,
        "xianyou",
        PolicyKind::Tariff,
        a.activation_id,
        "ops",
        "trial called off",
        move || effective - chrono::Duration::minutes(1),
    )
    .await
    .unwrap();
    let back = s.watcher.poll().await.unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].from_sha256, hostile.component_sha256);
    assert_eq!(back[0].activation_id, a.activation_id);
    let after = county.snapshot();
    assert_eq!(
        after.get(PolicyKind::Tariff).component.sha256,
        before.get(PolicyKind::Tariff).component.sha256
    );
    assert_eq!(after.rollout_stage, before.rollout_stage);
    assert!(s.watcher.poll().await.unwrap().is_empty(), "once");
}

/// One component published with two parameter sets is two versions: its sha256 names
/// neither (refused, listing both, newest first), `#N` names each exactly, and nothing is
/// activated by the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_two_parameter_sets_is_activated_by_publication_number_only() {
    let Some((_tdb, db, _)) =
        temp_db("a_component_with_two_parameter_sets_is_activated_by_publication_number_only")
            .await
    else {
        return;
    };
    let (engine, key, old) = tariff_step_published(&db).await;
    let lower = TARIFF_PARAMS.replace("0.4983", "0.3983");
    let new = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &lower,
    )
    .await
    .unwrap();
    assert_eq!(old.component_sha256, new.component_sha256);
    assert_ne!(old.publication_id, new.publication_id);
    for version in [&old.component_sha256[..], &old.component_sha256[..12]] {
        let e = registry::resolve(&db, "xianyou", PolicyKind::Tariff, version)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, registry::RegistryError::AmbiguousParameters { publications, .. }
                if publications.len() == 2
                    && publications[0].starts_with(&format!("#{} ", new.publication_id))
                    && publications[1].starts_with(&format!("#{} ", old.publication_id))),
            "{e:?}"
        );
        assert!(e.to_string().contains("--version '#N'"), "{e}");
        let refused = registry::activate(
            &db,
            &engine,
            &ActivateRequest {
                county: "xianyou",
                kind: PolicyKind::Tariff,
                version,
                at: None,
                stage: None,
                who: "ops",
                note: "by sha",
                now: t("2013-01-02 09:00:00"),
            },
        )
        .await;
        assert!(refused.is_err());
    }
    assert!(
        registry::history(&db, "xianyou", Some(PolicyKind::Tariff))
            .await
            .unwrap()
            .is_empty(),
        "nothing activated"
    );
    for p in [&old, &new] {
        let by_number = registry::resolve(
            &db,
            "xianyou",
            PolicyKind::Tariff,
            &format!("#{}", p.publication_id),
        )
        .await
        .unwrap();
        assert_eq!(by_number.parameters_json, p.parameters_json);
    }
}

/// Trusting a key the county revoked is refused with when and why (it was a panic), and
/// trusting a trusted key again says so and keeps its first holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_never_trusted_again() {
    let Some((tdb, db, _)) = temp_db("a_revoked_key_is_never_trusted_again").await else {
        return;
    };
    let key = trusting_county(&db).await;
    let trusted = registry::trusted_keys(&db, "xianyou").await.unwrap();
    let key_id = trusted[0].key_id;
    registry::revoke_key(
        &db,
        "xianyou",
        key_id,
        "sec",
        "laptop lost",
        t("2013-01-03 08:00:00"),
    )
    .await
    .unwrap();
    let e = registry::trust_key(
        &db,
        "xianyou",
        &key.verifying_key(),
        "Lin",
        "ops",
        t("2013-01-04 08:00:00"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, registry::RegistryError::KeyRevokedBefore { key_id: k, .. } if *k == key_id),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains("laptop lost") && message.contains("policy key new"),
        "{message}"
    );
    assert!(
        registry::trusted_keys(&db, "xianyou")
            .await
            .unwrap()
            .is_empty()
    );

    // At the command line: a refusal, not a crash; a second key trusted twice says so.
    let dir = tempfile::tempdir().unwrap();
    let cli = common::Cli {
        dir: dir.path(),
        db: &tdb.url,
    };
    std::fs::write(
        dir.path().join("lin.pub"),
        hex::encode(key.verifying_key().to_bytes()),
    )
    .unwrap();
    let (code, _, stderr) = cli.run(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "lin.pub", "--who", "Lin",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("never trusted again"), "{stderr}");
    cli.ok(&["policy", "key", "new", "--out", "wang"]);
    let first = cli.ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "wang.pub", "--who", "Wang",
    ]);
    assert!(first.starts_with("county xianyou trusts key #"), "{first}");
    let again = cli.ok(&[
        "policy", "trust", "add", "--county", "xianyou", "--key", "wang.pub", "--who", "Zhang",
    ]);
    assert!(
        again.starts_with("already trusted: ")
            && again.contains("the holder stays Wang, not Zhang"),
        "{again}"
    );
    // A reason is required wherever the audit trail records one: blank or multi-line
    // notes are refused before anything is opened.
    for (args, note) in [
        (
            &[
                "policy",
                "cancel",
                "--county",
                "xianyou",
                "--kind",
                "tariff",
                "--activation",
                "1",
            ][..],
            " ",
        ),
        (
            &[
                "policy", "rollback", "--county", "xianyou", "--kind", "tariff",
            ][..],
            "",
        ),
        (
            &[
                "policy",
                "activate",
                "--county",
                "xianyou",
                "--kind",
                "tariff",
                "--version",
                "#1",
            ][..],
            "a\nb",
        ),
        (
            &[
                "policy", "trust", "revoke", "--county", "xianyou", "--key-id", "1", "--who", "sec",
            ][..],
            "\t",
        ),
    ] {
        let flag = if args[1] == "trust" {
            "--why"
        } else {
            "--note"
        };
        let mut args = args.to_vec();
        args.extend([flag, note]);
        let (code, _, stderr) = cli.run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("say why") || stderr.contains("one line"),
            "{args:?}: {stderr}"
        );
    }
}

/// Rolling back the first activation goes back to the policy-set file a host recorded;
/// rolling back again says the file is what is in force (not that none was recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_past_the_policy_set_file_says_the_file_is_in_force() {
    let Some((opts, _db)) = common::small_county_db(
        "rolling_back_past_the_policy_set_file_says_the_file_is_in_force",
        4,
        1,
        11,
    )
    .await
    else {
        return;
    };
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let (db, engine) = (s.host.db.clone(), s.host.engine.clone());
    let shipped = s
        .host
        .county
        .snapshot()
        .get(PolicyKind::Tariff)
        .component
        .sha256
        .clone();
    let key = trusting_county(&db).await;
    let lower = TARIFF_PARAMS.replace("0.4983", "0.3983");
    let p = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &lower,
    )
    .await
    .unwrap();
    let now = s.clock.now();
    registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &format!("#{}", p.publication_id),
            at: None,
            stage: None,
            who: "ops",
            note: "lower prices",
            now,
        },
    )
    .await
    .unwrap();
    let later = now + chrono::Duration::minutes(1);
    let back = registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "wrong",
        later,
    )
    .await
    .unwrap();
    assert_eq!(back.component_sha256, shipped);
    let again = registry::rollback(
        &db,
        &engine,
        "xianyou",
        PolicyKind::Tariff,
        "ops",
        "again",
        later + chrono::Duration::minutes(1),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(again, RegistryError::PolicySetInForce { .. }),
        "{again}"
    );
}

/// A 4-meter county running (the demo's scenario) with the hostile component published
/// for its tariff (`{"mode":"ok"}`: prices like a tariff), not activated.
async fn county_with_hostile_tariff_published(
    test: &str,
) -> Option<(Scenario, common::TestDb, registry::Publication)> {
    let (opts, tdb) = common::small_county_db(test, 4, 1, 11).await?;
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let key = trusting_county(&s.host.db).await;
    let hostile = publish(
        &s.host.db,
        &s.host.engine,
        &key,
        PolicyKind::Tariff,
        &wasm("hostile_policy"),
        r#"{"mode":"ok"}"#,
    )
    .await
    .unwrap();
    Some((s, tdb, hostile))
}

/// A tariff whose check decision charges more than the host's charge ceiling is refused
/// at activation (settlement would hold every account it prices), naming the charge and
/// the ceiling; a host configured with a higher ceiling takes it, and so do the `policy`
/// commands given the same ceiling in `FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tariff_over_the_charge_ceiling_is_refused_at_activation() {
    let Some((tdb, db, _)) =
        temp_db("a_tariff_over_the_charge_ceiling_is_refused_at_activation").await
    else {
        return;
    };
    let (engine, key, _) = tariff_step_published(&db).await;
    // Step 1 typed in fen (49.8300 yuan/kWh): 10 kWh cost 498.30 yuan.
    let in_fen = TARIFF_PARAMS.replace("0.4983", "49.8300");
    let p = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("policy_tariff_step"),
        &in_fen,
    )
    .await
    .expect("published: it may still be watched in shadow");
    let version = format!("#{}", p.publication_id);
    let activate = async |engine: &PolicyEngine| {
        registry::activate(
            &db,
            engine,
            &ActivateRequest {
                county: "xianyou",
                kind: PolicyKind::Tariff,
                version: &version,
                at: None,
                stage: None,
                who: "ops",
                note: "new prices",
                now: t("2013-01-02 09:00:00"),
            },
        )
        .await
    };
    let e = activate(&engine).await.unwrap_err();
    assert!(matches!(e, RegistryError::ProbeFailed { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("charges 498.30 yuan for 10 kWh")
            && message.contains("charge ceiling of 5 yuan/kWh")
            && message.contains("max_price_yuan_per_kwh"),
        "{message}"
    );
    assert!(
        registry::history(&db, "xianyou", Some(PolicyKind::Tariff))
            .await
            .unwrap()
            .is_empty()
    );
    let generous = PolicyEngine::new(PolicyLimits {
        max_price_yuan_per_kwh: rust_decimal::Decimal::from(60),
        ..PolicyLimits::default()
    })
    .unwrap();
    activate(&generous)
        .await
        .expect("within a 60 yuan/kWh ceiling");

    // The command line reads the hosts' ceiling from the same variable `serve` does.
    let dir = tempfile::tempdir().unwrap();
    let cli = common::Cli {
        dir: dir.path(),
        db: &tdb.url,
    };
    let activate_cli = |ceiling: Option<&str>| {
        let mut c = std::process::Command::new(common::feegate_bin());
        c.current_dir(dir.path())
            .args([
                "policy",
                "activate",
                "--county",
                "xianyou",
                "--kind",
                "tariff",
                "--version",
                &version,
                "--note",
                "again",
            ])
            .env("FEEGATE_DB", cli.db)
            .env("FEEGATE_WHO", "ops-test")
            .env_remove("FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH");
        if let Some(v) = ceiling {
            c.env("FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH", v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = activate_cli(None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("charge ceiling of 5 yuan/kWh"), "{stderr}");
    let (code, stderr) = activate_cli(Some("1e2"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH"),
        "{stderr}"
    );
    let (code, stderr) = activate_cli(Some("60"));
    assert_eq!(code, Some(0), "{stderr}");
}

/// `tests/legacy-policy`'s parameters: a flat 0.5283 yuan per kWh, half up to fen.
const LEGACY_PARAMS: &str = r#"{"price_per_kwh":"0.5283"}"#;

/// Backward compatibility, end to end: a tariff built against contract 1.0.0
/// (`tests/legacy-policy`: no `tariff-batch`) is published — refused, though well
/// signed, when relabelled as contract 2.0.0 — activated and put in force by the running
/// host; the next morning's settlement charges each account its kWh × 0.5283 yuan,
/// half up to fen, one decision per call, and `audit replay` reproduces every one of
/// those decisions bit for bit, with the recorded fuel (a single call's) to the unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_1_0_0_tariff_is_activated_settles_a_day_and_replays() {
    let Some((opts, _tdb, mut s)) =
        county_after_two_days("a_contract_1_0_0_tariff_is_activated_settles_a_day_and_replays")
            .await
    else {
        return;
    };
    let db = s.host.db.clone();
    let engine = s.host.engine.clone();
    let key = trusting_county(&db).await;

    let err = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &common::legacy_relabelled("2.0.0"),
        LEGACY_PARAMS,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Load(PolicyLoadError::UnsupportedContract { found, .. })
            if found == "feegate:policy/tariff@2.0.0"),
        "{err}"
    );

    let legacy = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Tariff,
        &wasm("legacy_policy"),
        LEGACY_PARAMS,
    )
    .await
    .expect("a contract 1.0.0 component is published");
    assert_eq!(legacy.contract_version, "1.0.0");
    registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Tariff,
            version: &legacy.component_sha256,
            at: None,
            stage: None,
            who: "ops",
            note: "flat 0.5283 trial on a contract 1.0.0 component",
            now: s.clock.now(),
        },
    )
    .await
    .expect("activated: the activation check takes a component without tariff-batch");

    // The third morning: the watcher puts it in force, then the settlement of day 2.
    let morning = opts.start + chrono::Duration::days(2);
    let stats = third_morning_on(
        &mut s,
        morning,
        PolicyKind::Tariff,
        &legacy.component_sha256,
    )
    .await;

    let day = feegate::db::ds(morning - chrono::Duration::days(1));
    let rows = sqlx::query(
        "SELECT s.account_id, s.kwh_centi, s.charge_fen, l.amount_fen, d.component_sha256,
                d.reason_code
         FROM settlements s
         JOIN ledger_entries l ON l.entry_id = s.entry_id
         JOIN decisions d ON d.decision_id = s.decision_id
         WHERE s.business_date = $1 ORDER BY s.account_id",
    )
    .bind(&day)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(rows.len() >= 4, "{} of 8 accounts settled", rows.len());
    assert_eq!(stats.settled as usize, rows.len());
    let mut charged = 0;
    for r in &rows {
        let account: String = r.get(0);
        let kwh_centi: i64 = r.get(1);
        let charge_fen: i64 = r.get(2);
        // kwh_centi × 0.5283 yuan/100 = kwh_centi × 5283 / 10^4 fen, half up.
        let expected = (2 * kwh_centi * 5283 + 10_000) / 20_000;
        assert_eq!(charge_fen, expected, "{account}: {kwh_centi} centi-kWh");
        assert_eq!(
            r.get::<i64, _>(3),
            -charge_fen,
            "{account}: the ledger entry"
        );
        assert_eq!(r.get::<String, _>(4), legacy.component_sha256, "{account}");
        assert_eq!(r.get::<String, _>(5), "legacy-flat-tariff", "{account}");
        charged += charge_fen;
    }
    assert!(charged > 0, "the day used some energy");
    assert_eq!(stats.charged_fen, charged);
    let held: i64 =
        sqlx::query("SELECT COUNT(*) FROM holds WHERE stage = 'settlement' AND business_date = $1")
            .bind(&day)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(held, 0, "no tariff decision failed");

    replays_alone_exactly(
        &db,
        &engine,
        "tariff",
        &day,
        &legacy.component_sha256,
        rows.len(),
    )
    .await;
}

/// Backward compatibility of the warning stage, end to end: a warning component built
/// against contract 1.0.0 (`tests/legacy-warning`: no `warning-batch`; level 1 with
/// `notify` below `low_below_fen`, else level 0) is published, activated and put in force
/// by the running host. The next morning's warning stage assesses every settled account
/// with it, one call per account: each decision is logged as made alone
/// (`call_decisions` NULL), the accounts below the threshold — and only those — get their
/// low-balance notice queued, the decision log's chain verifies, and `audit replay`
/// reproduces each decision bit for bit, with the recorded fuel to the unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_1_0_0_warning_component_is_activated_warns_below_its_threshold_and_replays() {
    let Some((opts, _tdb, mut s)) = county_after_two_days(
        "a_contract_1_0_0_warning_component_is_activated_warns_below_its_threshold_and_replays",
    )
    .await
    else {
        return;
    };
    let db = s.host.db.clone();
    let engine = s.host.engine.clone();
    let key = trusting_county(&db).await;

    // The threshold: the middle of the balances after two days, so that the accounts fall
    // on both sides of it when the third morning's warning stage assesses them. Between
    // here and there, that morning's charges and any top-up before it move them a little
    // beside their spread; the seed fixes them all, and should a change to the
    // simulator ever put every account on one side, the check below prints these balances.
    let mut balances: Vec<i64> = sqlx::query_scalar("SELECT balance_fen FROM accounts")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    balances.sort_unstable();
    let threshold_fen = balances[balances.len() / 2];
    let params = format!(r#"{{"low_below_fen":{threshold_fen}}}"#);
    let legacy = publish(
        &db,
        &engine,
        &key,
        PolicyKind::Warning,
        &wasm("legacy_warning"),
        &params,
    )
    .await
    .expect("a contract 1.0.0 warning component is published");
    assert_eq!(legacy.contract_version, "1.0.0");
    registry::activate(
        &db,
        &engine,
        &ActivateRequest {
            county: "xianyou",
            kind: PolicyKind::Warning,
            version: &legacy.component_sha256,
            at: None,
            stage: None,
            who: "ops",
            note: "threshold warning trial on a contract 1.0.0 component",
            now: s.clock.now(),
        },
    )
    .await
    .expect("activated: the activation check takes a component without warning-batch");

    // The third morning: the watcher puts it in force, then settlement and the warning
    // stage (and nothing after: no payment or delivery moves a balance or a message).
    let morning = opts.start + chrono::Duration::days(2);
    let stats = third_morning_on(
        &mut s,
        morning,
        PolicyKind::Warning,
        &legacy.component_sha256,
    )
    .await;

    let today = feegate::db::ds(morning);
    let rows = sqlx::query(
        "SELECT d.account_id, a.balance_fen, d.input_json, d.output_json, d.outcome,
                d.component_sha256, d.reason_code, d.call_decisions
         FROM decisions d JOIN accounts a ON a.account_id = d.account_id
         WHERE d.kind = 'warning' AND d.business_date = $1 ORDER BY d.account_id",
    )
    .bind(&today)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(rows.len() >= 4, "{} of 8 accounts assessed", rows.len());
    assert_eq!(
        rows.len(),
        stats.settled as usize,
        "one warning decision per settled account"
    );
    let (mut low, mut fine) = (0, 0);
    for r in &rows {
        let account: String = r.get(0);
        let balance_fen: i64 = r.get(1);
        let input: serde_json::Value = serde_json::from_str(&r.get::<String, _>(2)).unwrap();
        assert_eq!(
            input["balance"],
            serde_json::json!({"mantissa": balance_fen, "scale": 2}),
            "{account}: assessed the balance as it stands"
        );
        assert_eq!(r.get::<String, _>(4), "ok", "{account}");
        assert_eq!(r.get::<String, _>(5), legacy.component_sha256, "{account}");
        assert_eq!(
            r.get::<String, _>(6),
            "legacy-threshold-warning",
            "{account}"
        );
        assert_eq!(
            r.get::<Option<i64>, _>(7),
            None,
            "{account}: decided alone, one call of its own"
        );
        let output: serde_json::Value = serde_json::from_str(&r.get::<String, _>(3)).unwrap();
        let below = balance_fen < threshold_fen;
        assert_eq!(
            output["level"],
            u8::from(below),
            "{account}: {balance_fen} fen against {threshold_fen}: {output}"
        );
        // Its low-balance notice, worded and queued for the primary contact, or none.
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sms_outbox WHERE notice_key = $1 AND contact = 'primary'
               AND kind = 'low-balance' AND warning_level = 1 AND status = 'queued'",
        )
        .bind(format!("warn:{account}:L1:{today}"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let any_warning_today: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sms_outbox WHERE account_id = $1 AND notice_key LIKE $2",
        )
        .bind(&account)
        .bind(format!("warn:{account}:%:{today}"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if below {
            low += 1;
            assert_eq!(queued, 1, "{account}: {balance_fen} fen is below, warned");
        } else {
            fine += 1;
            assert_eq!(
                any_warning_today, 0,
                "{account}: {balance_fen} fen is not below, no warning"
            );
        }
    }
    assert!(
        low > 0 && fine > 0,
        "accounts on both sides of {threshold_fen} fen: {low} below, {fine} not \
         (balances after two days, from which the threshold was taken: {balances:?})"
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM holds WHERE stage IN ('warning', 'notice') AND business_date = $1",
    )
    .bind(&today)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "no warning or notice decision failed");

    let verified = audit::verify(&db, None).await.unwrap();
    assert!(verified.ok(), "{:?}", verified.breaks);
    replays_alone_exactly(
        &db,
        &engine,
        "warning",
        &today,
        &legacy.component_sha256,
        rows.len(),
    )
    .await;
}

/// The small county (8 meters, seed 11) the 1.0.0 end-to-end tests start from, its first
/// two days run; `None` where the backend under test is not reachable.
async fn county_after_two_days(
    test: &str,
) -> Option<(feegate::demo::DemoOptions, common::TestDb, Scenario)> {
    let (opts, tdb) = common::small_county_db(test, 8, 3, 11).await?;
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    for day in 0..2 {
        s.run_day(opts.start + chrono::Duration::days(day), false)
            .await
            .unwrap();
    }
    Some((opts, tdb, s))
}

/// Runs the `morning` (the third) of a county in which a contract 1.0.0 `kind` component
/// `sha256` was activated: the watcher puts it in force, as a 1.0.0 component that decides
/// one input per call, before the morning's job.
async fn third_morning_on(
    s: &mut Scenario,
    morning: chrono::NaiveDate,
    kind: PolicyKind,
    sha256: &str,
) -> feegate::demo::DayStats {
    let stats = s.run_day(morning, true).await.unwrap();
    let snapshot = s.host.county.snapshot();
    let component = &snapshot.get(kind).component;
    assert_eq!(component.sha256, sha256, "{kind:?} in force");
    assert_eq!(component.contract_version, "1.0.0");
    assert!(!component.decides_in_batches());
    stats
}

/// `audit replay` of the day's `kind` decisions, all made by the contract 1.0.0
/// component `sha256`: exactly `decisions` of them, each reproduced bit for bit and, since
/// it was decided alone (no batch export), with the fuel the log holds to the unit and no
/// shared-fuel note.
async fn replays_alone_exactly(
    db: &Db,
    engine: &PolicyEngine,
    kind: &str,
    day: &str,
    sha256: &str,
    decisions: usize,
) {
    let replayed = audit::replay(
        db,
        engine,
        &Filter {
            kind: kind.into(),
            from: day.into(),
            to: day.into(),
            ..Filter::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), decisions, "one {kind} decision per account");
    for r in &replayed {
        assert_eq!(r.component_sha256, sha256);
        assert!(
            r.matches,
            "decision {} differs:\n{}\n{}",
            r.decision_id, r.recorded, r.replayed
        );
        assert_eq!(r.note, None, "decision {}", r.decision_id);
        assert_eq!(
            r.fuel_recorded as u64, r.fuel_replayed,
            "decision {}",
            r.decision_id
        );
    }
}
