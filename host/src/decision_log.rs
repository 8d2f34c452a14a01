//! The decision log: every policy decision with the component's sha256, its input,
//! its output (or failure) and the fuel used. Rows are never updated or deleted
//! (database triggers refuse it), so an auditor can replay any decision.

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

/// Appends a decision; returns its id.
pub async fn record<I: Serialize, O: Serialize + Explained>(
    conn: &mut AnyConnection,
    r: &DecisionRecord<'_, I, O>,
) -> Result<i64, sqlx::Error> {
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
    let row = sqlx::query(
        "INSERT INTO decisions (county, kind, account_id, business_date, decided_at, component_sha256, input_json, output_json,
                                outcome, failure_json, reason_code, explanation, fuel_used, guest_output)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING decision_id",
    )
    .bind(r.county)
    .bind(r.kind)
    .bind(r.account_id)
    .bind(r.business_date)
    .bind(r.decided_at)
    .bind(r.component_sha256)
    .bind(input_json)
    .bind(output_json)
    .bind(outcome)
    .bind(failure_json)
    .bind(reason)
    .bind(explanation)
    .bind(i64::try_from(r.invocation.fuel_used).unwrap_or(i64::MAX))
    .bind(&r.invocation.guest_output)
    .fetch_one(&mut *conn)
    .await?;
    row.try_get(0)
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
