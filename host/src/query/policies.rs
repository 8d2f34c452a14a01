//! Policy versions and their activation history per county and kind (from the registry,
//! [`crate::registry`]), and the decision log (`decisions`): why a customer was charged,
//! warned, cut off or reconnected.

use super::{ListFilter, Page, PageRequest, QueryError, Where, fetch_one, fetch_page};
use crate::auth::Visibility;
use crate::db::{Db, DbError};
use crate::policy::PolicyKind;
use crate::registry;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A published version of a county's policy: a component (by sha256) and its
/// parameters ([`registry::Publication`]).
pub type PolicyVersion = registry::Publication;

/// An activation event: from `effective_at` on, the publication is the county's
/// policy of its kind; a rollback is a new event ([`registry::Activation`]).
pub type ActivationEvent = registry::Activation;

/// A county's policy of one kind: the version in force (the latest activation whose
/// time has passed; none when the policy-set file rules) and its counts.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PolicySummary {
    pub county: String,
    pub kind: String,
    pub in_force: Option<ActivationEvent>,
    pub versions: usize,
    pub activations: usize,
}

/// Parses a policy kind name, or says which exist.
pub fn parse_kind(kind: &str) -> Result<PolicyKind, QueryError> {
    PolicyKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| {
            QueryError::BadRequest(format!(
                "unknown policy kind {kind:?}: use tariff, warning, notice or cutoff"
            ))
        })
}

/// The counties the caller sees (visibility and filter both apply), by name.
async fn counties(
    db: &Db,
    v: &Visibility,
    county: Option<&str>,
) -> Result<Vec<String>, QueryError> {
    let mut w = Where::default();
    w.eq("county", v.county.as_deref()).eq("county", county);
    let sql = format!("SELECT county FROM counties{} ORDER BY county", w.sql());
    let rows = w.bind(sqlx::query(&sql)).fetch_all(&db.pool).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

fn registry_error(e: registry::RegistryError) -> QueryError {
    match e {
        registry::RegistryError::Db(d) => QueryError::Db(d),
        other => QueryError::Db(DbError::Corrupt(other.to_string())),
    }
}

/// Every visible county's policies of every kind (or one kind), with the version in
/// force at `now` (county local time).
pub async fn policies(
    db: &Db,
    v: &Visibility,
    county: Option<&str>,
    kind: Option<PolicyKind>,
    now: chrono::NaiveDateTime,
) -> Result<Vec<PolicySummary>, QueryError> {
    let mut out = Vec::new();
    for c in counties(db, v, county).await? {
        for k in PolicyKind::ALL
            .into_iter()
            .filter(|k| kind.is_none_or(|x| x == *k))
        {
            let versions = registry::publications(db, &c, Some(k))
                .await
                .map_err(registry_error)?
                .len();
            let activations = registry::history(db, &c, Some(k))
                .await
                .map_err(registry_error)?
                .len();
            let in_force = registry::in_force(db, &c, k, now)
                .await
                .map_err(registry_error)?;
            out.push(PolicySummary {
                county: c.clone(),
                kind: k.as_str().to_string(),
                in_force,
                versions,
                activations,
            });
        }
    }
    Ok(out)
}

/// Published versions of the visible counties (optionally one county, one kind),
/// oldest first.
pub async fn versions(
    db: &Db,
    v: &Visibility,
    county: Option<&str>,
    kind: Option<PolicyKind>,
) -> Result<Vec<PolicyVersion>, QueryError> {
    let mut out = Vec::new();
    for c in counties(db, v, county).await? {
        out.extend(
            registry::publications(db, &c, kind)
                .await
                .map_err(registry_error)?,
        );
    }
    Ok(out)
}

/// Activation history of the visible counties (optionally one county, one kind),
/// oldest first.
pub async fn activations(
    db: &Db,
    v: &Visibility,
    county: Option<&str>,
    kind: Option<PolicyKind>,
) -> Result<Vec<ActivationEvent>, QueryError> {
    let mut out = Vec::new();
    for c in counties(db, v, county).await? {
        out.extend(
            registry::history(db, &c, kind)
                .await
                .map_err(registry_error)?,
        );
    }
    Ok(out)
}

/// A decision as listed: what was decided and why, in one line (the `audit log` line).
pub type DecisionLine = crate::audit::LogLine;

/// A decision's full record: the line plus the component's exact input and output,
/// the failure if it failed, the fuel it used and the hash chain link.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Decision {
    #[serde(flatten)]
    pub line: DecisionLine,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub failure: Option<serde_json::Value>,
    /// What the component printed (its log), if anything.
    pub guest_output: String,
    pub row_hash: Option<String>,
}

/// Filters of the decision list, on top of the county and station.
#[derive(Clone, Debug, Default)]
pub struct DecisionFilter {
    pub scope: ListFilter,
    pub kind: Option<String>,
    pub account_id: Option<String>,
    /// First and last business date, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The columns [`line_from`] reads, of `decisions d`.
pub(crate) const DECISION_COLUMNS: &str =
    "d.decision_id, d.county, d.kind, d.account_id, d.business_date, d.decided_at,
        d.component_sha256, d.outcome, d.reason_code, d.explanation, d.fuel_used, d.output_json,
        d.call_decisions";

/// One decision's summary line from a row of [`DECISION_COLUMNS`].
pub(crate) fn line_from(r: &AnyRow) -> Result<DecisionLine, sqlx::Error> {
    Ok(DecisionLine {
        decision_id: r.try_get("decision_id")?,
        county: r.try_get("county")?,
        kind: r.try_get("kind")?,
        account_id: r.try_get("account_id")?,
        business_date: r.try_get("business_date")?,
        decided_at: r.try_get("decided_at")?,
        component_sha256: r.try_get("component_sha256")?,
        outcome: r.try_get("outcome")?,
        reason_code: r.try_get("reason_code")?,
        explanation: crate::decision_log::explanation(
            r.try_get("explanation")?,
            r.try_get::<Option<String>, _>("output_json")?.as_deref(),
        ),
        fuel_used: r.try_get("fuel_used")?,
        call_decisions: r.try_get("call_decisions")?,
    })
}

fn json_or_text(s: Option<String>) -> Option<serde_json::Value> {
    s.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
}

fn decision_from(r: &AnyRow) -> Result<Decision, sqlx::Error> {
    Ok(Decision {
        line: line_from(r)?,
        input: json_or_text(Some(
            crate::decision_log::recorded_input(
                r.try_get("input_json")?,
                r.try_get::<Option<String>, _>("parameters_sha256")?
                    .as_deref(),
                r.try_get::<Option<String>, _>("parameters")?.as_deref(),
            )
            .map_err(|e| {
                sqlx::Error::Protocol(format!(
                    "decision {}: {e} (run `feegate audit verify`)",
                    r.try_get::<i64, _>("decision_id").unwrap_or_default()
                ))
            })?,
        ))
        .unwrap_or_default(),
        output: json_or_text(r.try_get("output_json")?),
        failure: json_or_text(r.try_get("failure_json")?),
        guest_output: r.try_get("guest_output")?,
        row_hash: r.try_get("row_hash")?,
    })
}

/// Decisions visible to the caller, by id.
pub async fn decisions(
    db: &Db,
    v: &Visibility,
    f: &DecisionFilter,
    page: &PageRequest,
) -> Result<Page<DecisionLine>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &f.scope,
        "d.county",
        Some("a.station_id"),
        Some("d.account_id"),
    )
    .eq("d.kind", f.kind.as_deref())
    .eq("d.account_id", f.account_id.as_deref())
    .cond("d.business_date >= {}", f.from.as_deref())
    .cond("d.business_date <= {}", f.to.as_deref())
    .cond_int("d.decision_id > {}", page.after_id()?);
    let select = format!(
        "SELECT {DECISION_COLUMNS} FROM decisions d LEFT JOIN accounts a ON a.account_id = d.account_id"
    );
    fetch_page(
        db,
        &select,
        w,
        "d.decision_id",
        page.limit,
        line_from,
        |d: &DecisionLine| d.decision_id.to_string(),
    )
    .await
}

/// One decision's full record, if it exists and is visible.
pub async fn decision(
    db: &Db,
    v: &Visibility,
    decision_id: i64,
) -> Result<Option<Decision>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        "d.county",
        Some("a.station_id"),
        Some("d.account_id"),
    )
    .cond_int("d.decision_id = {}", Some(decision_id));
    let select = format!(
        "SELECT {DECISION_COLUMNS}, d.input_json, d.failure_json, d.guest_output, d.row_hash,
                d.parameters_sha256, dp.parameters
         FROM decisions d LEFT JOIN accounts a ON a.account_id = d.account_id {}",
        crate::decision_log::PARAMETERS_JOIN
    );
    fetch_one(db, &select, w, decision_from).await
}

/// One decision by id, for a caller that already checked the object it belongs to
/// (a work order's evidence).
pub(crate) async fn decision_by_id(
    db: &Db,
    decision_id: i64,
) -> Result<Option<Decision>, QueryError> {
    decision(db, &Visibility::default(), decision_id).await
}
