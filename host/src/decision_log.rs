//! The decision log: every policy decision with the component's sha256, its input,
//! its output (or failure) and the fuel used. Rows are never updated or deleted
//! (database triggers refuse it), so an auditor can replay any decision.
//!
//! The rows form a hash chain (migration 0002): each row stores `prev_hash`, the
//! `row_hash` of the row before it (by `decision_id`; `""` for the first), and its own
//! `row_hash` = [`row_hash`] of its content and `prev_hash`. `crate::audit::verify`
//! recomputes the chain, so a row edited or removed behind the triggers' back shows.
//! The chain is appended under the writer's transaction. SQLite has a single writer. On
//! PostgreSQL [`record`] first takes the transaction-scoped advisory lock
//! [`CHAIN_LOCK`], held to commit, so appends from several tasks or several hosts
//! queue instead of forking the chain; a unique index on `prev_hash` (migration 0011)
//! makes a fork impossible even for a writer that skipped the lock (its insert fails).
//! Callers must call [`record`] inside a transaction.

use crate::policy::{Invocation, PolicyFailure};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// What to record about one decision.
pub struct DecisionRecord<'a, I: Serialize, O: Serialize> {
    pub county: &'a str,
    /// tariff | warning | notice | cutoff | reconnection
    pub kind: &'a str,
    pub account_id: &'a str,
    pub business_date: &'a str,
    pub decided_at: &'a str,
    pub component_sha256: &'a str,
    pub input: &'a I,
    pub invocation: &'a Invocation<O>,
    /// The shadow set beside this kind, if any ([`crate::county::PolicySnapshot::shadow`]):
    /// it runs on the same input right after the decision is recorded
    /// ([`crate::shadow::run_beside`]) and can never change the decision.
    pub shadow: Option<crate::shadow::Shadow<'a>>,
}

/// Reason code and explanation of a successful output, for the log's summary columns.
pub trait Explained {
    fn reason_code(&self) -> &str;
    fn explanation(&self) -> &str;
}

macro_rules! explained {
    ($($t:ty),*) => {$(
        impl Explained for $t {
            fn reason_code(&self) -> &str { &self.reason_code }
            fn explanation(&self) -> &str { &self.explanation }
        }
    )*};
}
use crate::policy::bindings::{
    CutoffOutput, NoticeOutput, ReconnectionOutput, TariffOutput, WarningOutput,
};
explained!(
    TariffOutput,
    WarningOutput,
    NoticeOutput,
    CutoffOutput,
    ReconnectionOutput
);

/// The PostgreSQL advisory lock key that serialises appends to the chain ("FGCHAIN" in
/// ASCII, so it does not collide with other users of advisory locks by accident).
pub const CHAIN_LOCK: i64 = 0x0046_4743_4841_494E;

/// Appends a decision; returns its id. When `r.shadow` is set, also runs the shadow on
/// the same input and records its result beside (never failing the decision).
pub async fn record<I: Serialize, O: Serialize + Explained>(
    conn: &mut AnyConnection,
    r: &DecisionRecord<'_, I, O>,
) -> Result<i64, sqlx::Error> {
    let row = prepare(r);
    let decision_id = append(conn, std::slice::from_ref(&row)).await?[0];
    if let Some(shadow) = r.shadow {
        run_shadow(conn, shadow, decision_id, &row).await;
    }
    Ok(decision_id)
}

/// Runs `shadow` beside the recorded decision `decision_id` (whose content is `row`),
/// as [`record`] does; for callers that append with [`append`].
pub async fn run_shadow(
    conn: &mut AnyConnection,
    shadow: crate::shadow::Shadow<'_>,
    decision_id: i64,
    row: &ChainedRow,
) {
    let live = crate::shadow::Live {
        decision_id,
        county: &row.county,
        kind: &row.kind,
        business_date: &row.business_date,
        decided_at: &row.decided_at,
        input_json: &row.input_json,
    };
    crate::shadow::run_beside(conn, shadow, &live).await;
}

/// The row [`record`] would append for `r`: input and output serialised, the summary
/// columns filled. Pure; no database. (`r.shadow` is not part of the row.)
pub fn prepare<I: Serialize, O: Serialize + Explained>(r: &DecisionRecord<'_, I, O>) -> ChainedRow {
    let input_json = serde_json::to_string(r.input).expect("policy inputs serialise");
    let (outcome, output_json, failure_json, reason, explanation) = match &r.invocation.outcome {
        Ok(o) => (
            "ok",
            Some(serde_json::to_string(o).expect("policy outputs serialise")),
            None,
            Some(o.reason_code().to_string()),
            Some(o.explanation().to_string()),
        ),
        Err(f) => (
            "failed",
            None,
            Some(serde_json::to_string(f).expect("failures serialise")),
            Some(f.code().to_string()),
            Some(f.to_string()),
        ),
    };
    ChainedRow {
        county: r.county.to_string(),
        kind: r.kind.to_string(),
        account_id: r.account_id.to_string(),
        business_date: r.business_date.to_string(),
        decided_at: r.decided_at.to_string(),
        component_sha256: r.component_sha256.to_string(),
        input_json,
        output_json,
        outcome: outcome.to_string(),
        failure_json,
        reason_code: reason,
        explanation,
        fuel_used: i64::try_from(r.invocation.fuel_used).unwrap_or(i64::MAX),
        guest_output: r.invocation.guest_output.clone(),
    }
}

/// Columns of one `decisions` row as [`append`] inserts them.
const DECISION_COLUMNS: usize = 16;

/// Appends `rows` to the chain in their order and returns their decision ids in the same
/// order. Must run inside the caller's transaction: on PostgreSQL it takes [`CHAIN_LOCK`]
/// (held to commit), reads the chain's tail once, hashes the rows in memory and inserts
/// them with multi-row `INSERT`s ([`crate::db::Placeholders`]), so a batch of a thousand
/// decisions costs a few statements instead of three thousand.
pub async fn append(
    conn: &mut AnyConnection,
    rows: &[ChainedRow],
) -> Result<Vec<i64>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let mut prev_hash: String = sqlx::query(
        "SELECT row_hash FROM decisions WHERE row_hash IS NOT NULL ORDER BY decision_id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get::<String, _>(0))
    .transpose()?
    .unwrap_or_default();
    let style = crate::db::Placeholders::of(conn);
    let mut ids = Vec::with_capacity(rows.len());
    for part in rows.chunks(crate::db::rows_per_statement(DECISION_COLUMNS)) {
        let mut chained = Vec::with_capacity(part.len());
        for row in part {
            let hash = row_hash(row, &prev_hash);
            chained.push((row, std::mem::replace(&mut prev_hash, hash.clone()), hash));
        }
        let sql = format!(
            "INSERT INTO decisions (county, kind, account_id, business_date, decided_at, component_sha256, input_json, output_json,
                                    outcome, failure_json, reason_code, explanation, fuel_used, guest_output, prev_hash, row_hash)
             VALUES {} RETURNING decision_id, row_hash",
            style.values(part.len(), DECISION_COLUMNS)
        );
        let mut q = sqlx::query(&sql);
        for (row, prev, hash) in &chained {
            q = q
                .bind(row.county.as_str())
                .bind(row.kind.as_str())
                .bind(row.account_id.as_str())
                .bind(row.business_date.as_str())
                .bind(row.decided_at.as_str())
                .bind(row.component_sha256.as_str())
                .bind(row.input_json.as_str())
                .bind(row.output_json.as_deref())
                .bind(row.outcome.as_str())
                .bind(row.failure_json.as_deref())
                .bind(row.reason_code.as_deref())
                .bind(row.explanation.as_deref())
                .bind(row.fuel_used)
                .bind(row.guest_output.as_str())
                .bind(prev.as_str())
                .bind(hash.as_str());
        }
        // RETURNING does not promise the VALUES order: match the ids by row hash.
        let mut by_hash = std::collections::HashMap::with_capacity(part.len());
        for r in q.fetch_all(&mut *conn).await? {
            by_hash.insert(r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?);
        }
        for (_, _, hash) in &chained {
            ids.push(*by_hash.get(hash).ok_or_else(|| {
                sqlx::Error::Protocol(format!("decision {hash} was inserted but not returned"))
            })?);
        }
    }
    Ok(ids)
}

/// The content columns of a `decisions` row, in table order: everything the chain
/// protects (all columns but `decision_id`, whose order the chain itself fixes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainedRow {
    pub county: String,
    pub kind: String,
    pub account_id: String,
    pub business_date: String,
    pub decided_at: String,
    pub component_sha256: String,
    pub input_json: String,
    pub output_json: Option<String>,
    pub outcome: String,
    pub failure_json: Option<String>,
    pub reason_code: Option<String>,
    pub explanation: Option<String>,
    pub fuel_used: i64,
    pub guest_output: String,
}

/// Lowercase hex sha256 of `prev_hash` and the row's content, serialised as one JSON
/// array (unambiguous: every field is quoted or `null`, in a fixed order).
pub fn row_hash(row: &ChainedRow, prev_hash: &str) -> String {
    let canonical = serde_json::to_string(&(prev_hash, row)).expect("strings serialise");
    crate::policy::engine::sha256_hex(canonical.as_bytes())
}

/// Holds an account at a stage for a day (idempotent), e.g. after a policy failure.
pub async fn hold(
    conn: &mut AnyConnection,
    account_id: &str,
    business_date: &str,
    stage: &str,
    reason: &str,
    decision_id: Option<i64>,
    now: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO holds (account_id, business_date, stage, reason, decision_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account_id, business_date, stage) DO NOTHING",
    )
    .bind(account_id)
    .bind(business_date)
    .bind(stage)
    .bind(reason)
    .bind(decision_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A failure's description for a hold reason.
pub fn hold_reason(f: &PolicyFailure) -> String {
    format!("policy {}: {f}", f.code())
}

/// Releases an account's open holds at `stage` after a person has looked at them
/// (e.g. a bad reading corrected, a meter replacement recorded). Returns how many were
/// released. The next settlement then covers the whole span from the last good one.
pub async fn release_holds(
    conn: &mut AnyConnection,
    account_id: &str,
    stage: &str,
    who: &str,
    now: &str,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("UPDATE holds SET released_at = $3, released_by = $4 WHERE account_id = $1 AND stage = $2 AND released_at IS NULL")
        .bind(account_id)
        .bind(stage)
        .bind(now)
        .bind(who)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}
