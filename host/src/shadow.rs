//! Shadow mode: a published candidate runs beside the version in force on live
//! decisions, and what it would have decided is recorded — never enforced.
//!
//! - **Events.** `feegate policy shadow --version V [--until T]` appends a `start` event
//!   to `policy_shadows`, `--stop` a `stop` event, each with who, when and why. The
//!   shadow in force for a county and kind is the latest event, if it is a `start`
//!   whose `until_at` has not passed. A running host picks it up in
//!   [`crate::registry::Watcher::poll`], like an activation.
//! - **Runs.** While a shadow is set, every live decision of its kind (tariff, warning,
//!   notice, cutoff and reconnection for `cutoff`) is recorded by
//!   [`crate::decision_log::record`], which then calls [`run_beside`]: the candidate runs
//!   on the live input with its own published parameters, and its output (or failure)
//!   and fuel go to `shadow_decisions`, linked to the live decision id. Nothing reads
//!   that table but `policy diff --shadow` ([`crate::audit::shadow_diff`]): no charge,
//!   no SMS, no relay.
//! - **Containment.** The candidate runs under the same engine limits as any decision
//!   (fuel, memory, 2 s wall clock, output checks); its failure is recorded as its
//!   output and logged, and the live decision (already recorded) is untouched. Its row
//!   is written in a savepoint of the live transaction, so a failed insert is rolled
//!   back alone (on PostgreSQL a failed statement would otherwise abort the live
//!   transaction). After [`BREAKER_AFTER`] resource failures in a row (fuel, memory,
//!   time) the host stops running that shadow until the next shadow event, so a
//!   looping candidate cannot slow the daily job by two seconds per account.
//! - **Cost.** One more instantiation per live decision of the kind, only while a
//!   shadow is set; nothing otherwise (the snapshot has no shadow to look at).
//!
//! Tables: `migrations/sqlite/0004_policy_shadow.sql`.

use crate::audit::{self, Run};
use crate::county::ShadowComponent;
use crate::db::{Db, ts};
use crate::policy::{PolicyEngine, PolicyFailure, PolicyKind};
use crate::registry::{self, RegistryError};
use chrono::NaiveDateTime;
use sqlx::{AnyConnection, Row};
use std::sync::atomic::Ordering;

/// Resource failures in a row after which a host stops running a shadow (until the
/// next `policy shadow` event).
pub const BREAKER_AFTER: u32 = 3;

/// A shadow to run beside one live decision: the engine and the candidate.
#[derive(Clone, Copy)]
pub struct Shadow<'a> {
    pub engine: &'a PolicyEngine,
    pub component: &'a ShadowComponent,
}

/// The live decision a shadow runs beside.
pub struct Live<'a> {
    pub decision_id: i64,
    pub county: &'a str,
    /// Log kind: tariff | warning | notice | cutoff | reconnection.
    pub kind: &'a str,
    pub business_date: &'a str,
    /// County-local 'YYYY-MM-DD HH:MM:SS'.
    pub decided_at: &'a str,
    /// The live input as the decision log stored it (its parameters may be stored once
    /// elsewhere, `"parameters":""` in their place: the shadow runs with its own).
    pub input_json: &'a str,
}

/// Runs the shadow on the live decision's input and appends its result to
/// `shadow_decisions`. Never fails: any problem (a trap, a limit, a bad output, even a
/// database error) is recorded or logged and the live decision goes on unchanged.
pub async fn run_beside(conn: &mut AnyConnection, shadow: Shadow<'_>, live: &Live<'_>) {
    let c = shadow.component;
    if c.until
        .as_deref()
        .is_some_and(|until| live.decided_at >= until)
        || c.resource_failures_in_a_row.load(Ordering::Relaxed) >= BREAKER_AFTER
    {
        return;
    }
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        audit::run_recorded(
            shadow.engine,
            &c.active.component,
            live.kind,
            live.input_json,
            Some(&c.active.parameters_json),
        )
    }));
    let run: Run = match run {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => {
            tracing::error!(
                decision = live.decision_id,
                shadow = c.shadow_event_id,
                "shadow not run: {e}"
            );
            return;
        }
        Err(_) => {
            tracing::error!(
                decision = live.decision_id,
                shadow = c.shadow_event_id,
                "shadow run panicked in the host; not recorded"
            );
            return;
        }
    };
    match run.failure() {
        Some(
            f @ (PolicyFailure::OutOfFuel { .. }
            | PolicyFailure::Timeout { .. }
            | PolicyFailure::MemoryLimit { .. }),
        ) => {
            let n = c.resource_failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                decision = live.decision_id,
                shadow = c.shadow_event_id,
                "shadow failed: {f}"
            );
            if n == BREAKER_AFTER {
                tracing::error!(
                    county = live.county,
                    kind = live.kind,
                    shadow = c.shadow_event_id,
                    "shadow stopped in this host after {n} resource failures in a row; start it again with `feegate policy shadow` once fixed"
                );
            }
        }
        Some(f) => {
            c.resource_failures_in_a_row.store(0, Ordering::Relaxed);
            tracing::warn!(
                decision = live.decision_id,
                shadow = c.shadow_event_id,
                "shadow failed: {f}"
            );
        }
        None => c.resource_failures_in_a_row.store(0, Ordering::Relaxed),
    }
    let (outcome, body) = run.recorded_form();
    let (output_json, failure_json) = if outcome == "ok" {
        (Some(body), None)
    } else {
        (None, Some(body))
    };
    let mut savepoint = match sqlx::Connection::begin(&mut *conn).await {
        Ok(sp) => sp,
        Err(e) => {
            tracing::error!(
                decision = live.decision_id,
                "shadow result not recorded: {e}"
            );
            return;
        }
    };
    let inserted = sqlx::query(
        "INSERT INTO shadow_decisions (decision_id, shadow_event_id, publication_id, component_sha256, county, kind,
                                       business_date, outcome, output_json, failure_json, fuel_used, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(live.decision_id)
    .bind(c.shadow_event_id)
    .bind(c.publication_id)
    .bind(&c.active.component.sha256)
    .bind(live.county)
    .bind(live.kind)
    .bind(live.business_date)
    .bind(outcome)
    .bind(output_json)
    .bind(failure_json)
    .bind(i64::try_from(run.fuel_used()).unwrap_or(i64::MAX))
    .bind(live.decided_at)
    .execute(&mut *savepoint)
    .await;
    let result = match inserted {
        Ok(_) => savepoint.commit().await,
        Err(e) => savepoint.rollback().await.and(Err(e)),
    };
    if let Err(e) = result {
        tracing::error!(
            decision = live.decision_id,
            "shadow result not recorded: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------

/// One `policy_shadows` event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowEvent {
    pub shadow_event_id: i64,
    pub county: String,
    pub kind: PolicyKind,
    /// `start` or `stop`.
    pub action: String,
    pub publication_id: Option<i64>,
    pub component_sha256: Option<String>,
    /// County-local time from which a started shadow no longer runs.
    pub until_at: Option<String>,
    pub who: String,
    pub note: String,
    pub recorded_at: String,
}

/// What `policy shadow --version` is asked to do.
pub struct StartRequest<'a> {
    pub county: &'a str,
    pub kind: PolicyKind,
    /// A published version (sha256, prefix of ≥ 8 hex digits, or `#PUBLICATION_ID`).
    pub version: &'a str,
    /// When it stops by itself (county local time); `None`: when stopped.
    pub until: Option<NaiveDateTime>,
    pub who: &'a str,
    pub note: &'a str,
    pub now: NaiveDateTime,
}

/// Starts a shadow (replacing any shadow of the same kind). The version must be
/// published for the county and kind, and load in this host.
pub async fn start(
    db: &Db,
    engine: &PolicyEngine,
    req: &StartRequest<'_>,
) -> Result<ShadowEvent, RegistryError> {
    let p = registry::resolve(db, req.county, req.kind, req.version).await?;
    engine.load(
        req.kind,
        &registry::component_bytes(db, &p.component_sha256).await?,
    )?;
    if let Some(until) = req.until
        && until <= req.now
    {
        return Err(RegistryError::ShadowEndsInPast {
            until: ts(until),
            now: ts(req.now),
        });
    }
    insert(
        db,
        req.county,
        req.kind,
        Some((p.publication_id, &p.component_sha256)),
        req.until,
        req.who,
        req.note,
        req.now,
    )
    .await
}

/// Stops the shadow of `kind` (an event; its recorded runs stay).
pub async fn stop(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<ShadowEvent, RegistryError> {
    if in_force(db, county, kind, now).await?.is_none() {
        return Err(RegistryError::NoShadow {
            county: county.to_string(),
            kind,
        });
    }
    insert(db, county, kind, None, None, who, note, now).await
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    version: Option<(i64, &str)>,
    until: Option<NaiveDateTime>,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<ShadowEvent, RegistryError> {
    let row = sqlx::query(
        "INSERT INTO policy_shadows (county, kind, action, publication_id, component_sha256, until_at, who, note, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING shadow_event_id",
    )
    .bind(county)
    .bind(kind.as_str())
    .bind(if version.is_some() { "start" } else { "stop" })
    .bind(version.map(|v| v.0))
    .bind(version.map(|v| v.1))
    .bind(until.map(ts))
    .bind(who)
    .bind(note)
    .bind(ts(now))
    .fetch_one(&db.pool)
    .await?;
    let id: i64 = row.try_get(0)?;
    events(db, county, Some(kind))
        .await?
        .into_iter()
        .find(|e| e.shadow_event_id == id)
        .ok_or_else(|| RegistryError::Corrupt {
            what: "shadow event",
            detail: "missing right after insert".into(),
        })
}

/// The shadow events of a county (optionally one kind), oldest first.
pub async fn events(
    db: &Db,
    county: &str,
    kind: Option<PolicyKind>,
) -> Result<Vec<ShadowEvent>, RegistryError> {
    let rows = sqlx::query(
        "SELECT shadow_event_id, county, kind, action, publication_id, component_sha256, until_at, who, note, recorded_at
         FROM policy_shadows WHERE county = $1 AND ($2 = '' OR kind = $2) ORDER BY shadow_event_id",
    )
    .bind(county)
    .bind(kind.map(|k| k.as_str()).unwrap_or(""))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(event_from).collect()
}

fn event_from(r: &sqlx::any::AnyRow) -> Result<ShadowEvent, RegistryError> {
    Ok(ShadowEvent {
        shadow_event_id: r.try_get(0)?,
        county: r.try_get(1)?,
        kind: registry::kind_column(r, 2, "shadow kind")?,
        action: r.try_get(3)?,
        publication_id: r.try_get(4)?,
        component_sha256: r.try_get(5)?,
        until_at: r.try_get(6)?,
        who: r.try_get(7)?,
        note: r.try_get(8)?,
        recorded_at: r.try_get(9)?,
    })
}

/// The shadow in force for a county and kind at `now`: the latest event, if it is a
/// start whose `until_at` has not passed. One indexed query (the watcher's poll).
pub async fn in_force(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    now: NaiveDateTime,
) -> Result<Option<ShadowEvent>, RegistryError> {
    let row = sqlx::query(
        "SELECT shadow_event_id, county, kind, action, publication_id, component_sha256, until_at, who, note, recorded_at
         FROM policy_shadows WHERE county = $1 AND kind = $2 ORDER BY shadow_event_id DESC LIMIT 1",
    )
    .bind(county)
    .bind(kind.as_str())
    .fetch_optional(&db.pool)
    .await?;
    let now = ts(now);
    Ok(row
        .as_ref()
        .map(event_from)
        .transpose()?
        .filter(|e| e.action == "start" && e.until_at.as_ref().is_none_or(|u| *u > now)))
}

/// The latest start event of a county and kind (running or not): the shadow
/// `policy diff --shadow` reports on.
pub async fn latest_start(
    db: &Db,
    county: &str,
    kind: PolicyKind,
) -> Result<ShadowEvent, RegistryError> {
    events(db, county, Some(kind))
        .await?
        .into_iter()
        .rfind(|e| e.action == "start")
        .ok_or_else(|| RegistryError::NoShadow {
            county: county.to_string(),
            kind,
        })
}
