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
//! queue instead of forking the chain. A row's `decision_id` is its position in the
//! chain (since migration 0018: [`append`] gives each row the id after the tail), so a
//! writer that skipped the lock and read the same tail computes the same id and its
//! insert fails on the primary key: a fork is impossible (until migration 0018 a unique
//! index on `prev_hash` did this, at the price of a random-key B-tree insert per row).
//! Callers must call [`record`] inside a transaction.
//!
//! **Parameters stored once** (migration 0017). Every input carries the county's
//! parameters (a JSON text of a few hundred bytes, the same for a whole day's decisions).
//! A row stores them once, content-addressed, in `decision_parameters`; its
//! `parameters_sha256` names them and its `input_json` holds `"parameters":""` in their
//! place. [`recorded_input`] puts them back byte for byte, so replay, diff and the API see
//! the input exactly as the component did. `parameters_sha256` is chained (only when set,
//! so rows written before keep their hashes) and `crate::audit::verify` checks every
//! parameters row against its sha256, so an edit there shows too.

use crate::policy::bindings::{
    CutoffInput, NoticeInput, ReconnectionInput, TariffInput, WarningInput,
};
use crate::policy::{Invocation, PolicyFailure};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::sync::Arc;

/// A decision input as the log records it: serialisable, with the county parameters
/// it carries (stored once, see the module doc).
pub trait Recordable: Serialize {
    /// The input's `parameters` text; `None` when it has none (then the input is stored
    /// whole).
    fn parameters(&self) -> Option<&str>;

    /// `json` (this input serialised, serde_json compact) with the place of `parameters`
    /// holding `""`, as `input_json` stores it; `None` to store `json` whole. Default:
    /// [`slim`].
    fn slimmed(&self, json: &str, parameters: &str) -> Option<String> {
        slim(json, parameters)
    }
}

/// An input decided with its county parameters sent beside it, once for many inputs
/// (contract 1.1 `price-batch`, [`crate::policy::PolicyEngine::price_many`]): `input`
/// holds `"parameters":""` and `parameters` is what the component priced it with. Its
/// row is the row of the same input with `parameters` inside it, byte for byte.
pub struct SentApart<'a, I> {
    input: &'a I,
    parameters: &'a str,
}

impl<'a, I: Recordable> SentApart<'a, I> {
    /// # Panics
    /// When `input` carries parameters of its own (a host bug: its row would name
    /// parameters the component never saw).
    pub fn new(input: &'a I, parameters: &'a str) -> Self {
        assert!(
            input.parameters().is_none_or(str::is_empty),
            "an input sent apart from its parameters carries none of its own"
        );
        Self { input, parameters }
    }
}

impl<I: Serialize> Serialize for SentApart<'_, I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.input.serialize(serializer)
    }
}

impl<I: Recordable> Recordable for SentApart<'_, I> {
    fn parameters(&self) -> Option<&str> {
        Some(self.parameters)
    }

    /// `json` itself: its one `parameters` member is `""`, the slot the stored form has.
    ///
    /// # Panics
    /// When `json` has no such slot (a host bug: stored whole, the row would not name
    /// the parameters the component saw). [`SentApart::new`] makes sure the input's own
    /// parameters are empty; the shipped input types serialise them once.
    fn slimmed(&self, json: &str, _parameters: &str) -> Option<String> {
        let slot = unique_parameters_value(json).filter(|&at| json[at..].starts_with("\"\""));
        assert!(
            slot.is_some(),
            "an input sent apart serialises with one empty parameters member: {json}"
        );
        Some(json.to_string())
    }
}

macro_rules! recordable {
    ($($t:ty),*) => {$(
        impl Recordable for $t {
            fn parameters(&self) -> Option<&str> { Some(&self.parameters) }
        }
    )*};
}
recordable!(
    TariffInput,
    WarningInput,
    NoticeInput,
    CutoffInput,
    ReconnectionInput
);

/// Free-form inputs (tests, tools): a top-level `"parameters"` string, if any.
impl Recordable for serde_json::Value {
    fn parameters(&self) -> Option<&str> {
        self.get("parameters").and_then(serde_json::Value::as_str)
    }
}

/// What a batch's decisions of one kind share in their log rows, owned, so that the
/// rows can be prepared on the decision threads ([`crate::policy::PolicyEngine::spawn_decide_parts`]).
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub county: String,
    /// tariff | warning | notice | cutoff | reconnection
    pub kind: &'static str,
    pub business_date: String,
    pub decided_at: String,
    pub component_sha256: String,
}

impl BatchRecord {
    /// Each decision's row, with its invocation: `invocations[i]` decided `inputs[i]` with
    /// `parameters` sent apart ([`SentApart`]), for the account `account_of(inputs[i])`.
    pub fn prepare_sent_apart<I: Recordable, O: Serialize + Explained>(
        &self,
        inputs: &[I],
        parameters: &str,
        invocations: Vec<Invocation<O>>,
        account_of: impl Fn(&I) -> &str,
    ) -> Vec<(Invocation<O>, ChainedRow)> {
        invocations
            .into_iter()
            .zip(inputs)
            .map(|(invocation, input)| {
                let sent = SentApart::new(input, parameters);
                let row = self.prepare(account_of(input), &sent, &invocation);
                (invocation, row)
            })
            .collect()
    }

    /// The row [`prepare`] makes for one of the batch's decisions (no shadow).
    pub fn prepare<I: Recordable, O: Serialize + Explained>(
        &self,
        account_id: &str,
        input: &I,
        invocation: &Invocation<O>,
    ) -> ChainedRow {
        prepare(&DecisionRecord {
            county: &self.county,
            kind: self.kind,
            account_id,
            business_date: &self.business_date,
            decided_at: &self.decided_at,
            component_sha256: &self.component_sha256,
            input,
            invocation,
            shadow: None,
        })
    }
}

/// What to record about one decision.
pub struct DecisionRecord<'a, I: Recordable, O: Serialize> {
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

/// Reason code of a successful output, for the log's summary column.
pub trait Explained {
    fn reason_code(&self) -> &str;
}

macro_rules! explained {
    ($($t:ty),*) => {$(
        impl Explained for $t {
            fn reason_code(&self) -> &str { &self.reason_code }
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
pub async fn record<I: Recordable, O: Serialize + Explained>(
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
    // The shadow runs with its own parameters (they replace the recorded ones), so the
    // stored form of the input serves.
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
pub fn prepare<I: Recordable, O: Serialize + Explained>(
    r: &DecisionRecord<'_, I, O>,
) -> ChainedRow {
    let full_input = serde_json::to_string(r.input).expect("policy inputs serialise");
    let (input_json, parameters) = match r.input.parameters().filter(|p| !p.is_empty()) {
        Some(p) => match r.input.slimmed(&full_input, p) {
            Some(slim) => (slim, Some(stored_parameters(p))),
            None => (full_input, None),
        },
        None => (full_input, None),
    };
    let (outcome, output_json, failure_json, reason, explanation) = match &r.invocation.outcome {
        // A successful output's explanation is in its output JSON; the column would
        // only repeat it (see [`explanation`]).
        Ok(o) => (
            "ok",
            Some(serde_json::to_string(o).expect("policy outputs serialise")),
            None,
            Some(o.reason_code().to_string()),
            None,
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
        parameters_sha256: parameters.as_ref().map(|p| p.sha256.clone()),
        parameters,
        call_decisions: r.invocation.call_decisions.map(i64::from),
    }
}

/// One distinct parameters text and its lowercase hex sha256 (the `decision_parameters` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredParameters {
    pub sha256: String,
    pub text: Arc<str>,
}

/// `parameters` with its sha256, hashed once per thread while the text stays the same
/// (a batch's decisions all carry the same county parameters).
fn stored_parameters(parameters: &str) -> StoredParameters {
    thread_local! {
        static LAST: std::cell::RefCell<Option<StoredParameters>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(p) if *p.text == *parameters => p.clone(),
            _ => {
                let p = StoredParameters {
                    sha256: crate::policy::engine::sha256_hex(parameters.as_bytes()),
                    text: Arc::from(parameters),
                };
                *last = Some(p.clone());
                p
            }
        }
    })
}

/// The key of an input's top-level `parameters` member in serde_json's compact form.
/// Inside a JSON string every `"` is escaped, so this unescaped sequence (a string
/// followed by `:`) can only be an object key.
const PARAMETERS_KEY: &str = "\"parameters\":";

/// `input_json` (serde_json compact output) with its one `"parameters":<parameters as a
/// JSON string>` member replaced by `"parameters":""`; `None` (store it whole) when the
/// key is missing, appears more than once, or holds another value.
pub fn slim(input_json: &str, parameters: &str) -> Option<String> {
    let value_at = unique_parameters_value(input_json)?;
    let quoted = serde_json::to_string(parameters).ok()?;
    if !input_json[value_at..].starts_with(&quoted) {
        return None;
    }
    let mut out = String::with_capacity(input_json.len() + 2 - quoted.len());
    out.push_str(&input_json[..value_at]);
    out.push_str("\"\"");
    out.push_str(&input_json[value_at + quoted.len()..]);
    Some(out)
}

/// Byte offset of the value of the one `"parameters":` key in `json`, if it has exactly one.
fn unique_parameters_value(json: &str) -> Option<usize> {
    let mut keys = json.match_indices(PARAMETERS_KEY);
    let (at, _) = keys.next()?;
    keys.next().is_none().then_some(at + PARAMETERS_KEY.len())
}

/// The input a decision's component saw, from its stored columns: `input_json` as
/// stored, its `parameters_sha256`, and the `decision_parameters` text that sha names
/// (a `LEFT JOIN`; `None` when the row is missing). Rows without `parameters_sha256`
/// are returned as stored.
///
/// # Errors
/// A description for the auditor when the parameters row is missing, does not match its
/// sha256, or the stored input has no `"parameters":""` slot — the log was tampered with
/// behind the triggers (`audit verify` reports the same).
pub fn recorded_input(
    input_json: String,
    parameters_sha256: Option<&str>,
    parameters: Option<&str>,
) -> Result<String, String> {
    let Some(sha) = parameters_sha256 else {
        return Ok(input_json);
    };
    let text = parameters.ok_or_else(|| format!("its parameters {sha} are missing"))?;
    if crate::policy::engine::sha256_hex(text.as_bytes()) != sha {
        return Err(format!("its parameters {sha} do not match their sha256"));
    }
    let value_at = unique_parameters_value(&input_json)
        .filter(|&at| input_json[at..].starts_with("\"\""))
        .ok_or_else(|| "its stored input has no empty \"parameters\" slot".to_string())?;
    let quoted = serde_json::to_string(text).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(input_json.len() + quoted.len());
    out.push_str(&input_json[..value_at]);
    out.push_str(&quoted);
    out.push_str(&input_json[value_at + 2..]);
    Ok(out)
}

/// A decision's explanation for reading: the `explanation` column where it is set (a
/// failure's description; every row written before migration 0017), else the
/// `explanation` member of `output_json` (a successful output since, stored once).
pub fn explanation(column: Option<String>, output_json: Option<&str>) -> Option<String> {
    column.or_else(|| {
        let output: serde_json::Value = serde_json::from_str(output_json?).ok()?;
        output.get("explanation")?.as_str().map(str::to_string)
    })
}

/// SQL for a query over `decisions d` that needs the whole input: join this and select
/// `d.input_json, d.parameters_sha256, dp.parameters` for [`recorded_input`].
pub const PARAMETERS_JOIN: &str =
    "LEFT JOIN decision_parameters dp ON dp.sha256 = d.parameters_sha256";

/// Columns of one `decisions` row as [`append`] inserts them.
const DECISION_COLUMNS: usize = 19;

/// Appends `rows` to the chain in their order and returns their decision ids in the same
/// order. Must run inside the caller's transaction: on PostgreSQL it takes [`CHAIN_LOCK`]
/// (held to commit), reads the chain's tail once (its id and hash), hashes the rows in
/// memory and inserts them with multi-row `INSERT`s ([`crate::db::Placeholders`]), so a
/// batch of a thousand decisions costs a few statements instead of three thousand. The
/// rows take the ids that follow the tail's, in order (the chain position, see the module
/// doc).
///
/// # Errors
/// The database's; a unique violation on `decisions`' primary key means another writer
/// appended from the same tail without the lock — nothing of this batch is written.
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
    // The tail: the last id (the next row's position follows it) and the last hash
    // (chained rows end the log; rows from before migration 0002 have none). Never a
    // prepared statement kept on the connection: a statement without parameters keeps
    // the plan PostgreSQL made the first time, and made on an empty log that plan is a
    // scan of the whole table — at a million accounts, 0.4 s a batch and growing (see
    // "Settlement at scale" in README.md). Planned afresh, it reads the primary key's
    // last entry.
    let tail = sqlx::query(
        "SELECT (SELECT MAX(decision_id) FROM decisions),
                (SELECT row_hash FROM decisions WHERE row_hash IS NOT NULL ORDER BY decision_id DESC LIMIT 1)",
    )
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let mut next_id = tail.try_get::<Option<i64>, _>(0)?.unwrap_or(0) + 1;
    let mut prev_hash = tail.try_get::<Option<String>, _>(1)?.unwrap_or_default();
    let style = crate::db::Placeholders::of(conn);
    // The distinct parameters texts first (usually one per batch); a text already
    // stored is left as it is (content-addressed).
    let mut parameters: Vec<&StoredParameters> = Vec::new();
    for p in rows.iter().filter_map(|r| r.parameters.as_ref()) {
        if !parameters.iter().any(|q| q.sha256 == p.sha256) {
            parameters.push(p);
        }
    }
    for part in parameters.chunks(crate::db::rows_per_statement(2)) {
        let sql = format!(
            "INSERT INTO decision_parameters (sha256, parameters) VALUES {} ON CONFLICT (sha256) DO NOTHING",
            style.values(part.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for p in part {
            q = q.bind(p.sha256.as_str()).bind(&*p.text);
        }
        q.execute(&mut *conn).await?;
    }
    let mut ids = Vec::with_capacity(rows.len());
    for part in rows.chunks(crate::db::rows_per_statement(DECISION_COLUMNS)) {
        let sql = format!(
            "INSERT INTO decisions (decision_id, county, kind, account_id, business_date, decided_at, component_sha256, input_json,
                                    output_json, outcome, failure_json, reason_code, explanation, fuel_used, guest_output,
                                    parameters_sha256, call_decisions, prev_hash, row_hash)
             VALUES {}",
            style.values(part.len(), DECISION_COLUMNS)
        );
        let mut q = sqlx::query(&sql);
        for row in part {
            let hash = row_hash(row, &prev_hash);
            q = q
                .bind(next_id)
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
                .bind(row.parameters_sha256.as_deref())
                .bind(row.call_decisions)
                .bind(std::mem::replace(&mut prev_hash, hash.clone()))
                .bind(hash);
            ids.push(next_id);
            next_id += 1;
        }
        q.execute(&mut *conn).await?;
    }
    Ok(ids)
}

/// The content columns of a `decisions` row, in table order: everything the chain
/// protects (all columns but `decision_id`, whose order the chain itself fixes), plus
/// the parameters text the row refers to (not a column; inserted into
/// `decision_parameters` by [`append`]).
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
    /// sha256 of the parameters stored once in `decision_parameters` (migration 0017),
    /// whose place in `input_json` is `""`; `None` for an input stored whole. Hashed
    /// into the chain only when set, so rows from before keep their hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_sha256: Option<String>,
    /// The text `parameters_sha256` names, for [`append`] to store; `None` when the row
    /// was read back from the database (not hashed).
    #[serde(skip)]
    pub parameters: Option<StoredParameters>,
    /// Decisions made by the one component call that made this one (contract 1.1 batch
    /// call, [`Invocation::call_decisions`]; migration 0024), whose fuel `fuel_used` is a
    /// share of; `None` for a decision made alone. Hashed into the chain only when set,
    /// so rows from before keep their hashes. (Serialised after `parameters_sha256`:
    /// the hash's field order is this struct's.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_decisions: Option<i64>,
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
    let text = match f {
        // Its message already starts "policy refused: ".
        PolicyFailure::Refused { .. } => f.to_string(),
        _ => format!("policy {}: {f}", f.code()),
    };
    // One line of at most HOLD_REASON_CHARS characters: a trap's detail carries the Wasm
    // backtrace, which would spread one hold over many lines of `holds list`; the
    // decision's failure in the log keeps it whole.
    let one_line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    match one_line.char_indices().nth(HOLD_REASON_CHARS) {
        Some((cut, _)) => format!("{}… (whole in the decision log)", &one_line[..cut]),
        None => one_line,
    }
}

/// Longest hold reason [`hold_reason`] writes, in characters.
pub const HOLD_REASON_CHARS: usize = 400;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bindings::{CustomerClass, Date, Decimal};
    use proptest::prelude::*;

    #[test]
    fn a_hold_reason_is_one_line_said_once() {
        let refused = PolicyFailure::Refused {
            code: "bad-parameters".into(),
            message: "missing field cycle".into(),
        };
        assert_eq!(
            hold_reason(&refused),
            "policy refused: bad-parameters: missing field cycle"
        );
        let trap = PolicyFailure::Trap {
            detail: "error while executing at wasm backtrace:\n    0: 0x1 - f\n\n    1: 0x2 - g"
                .into(),
        };
        assert_eq!(
            hold_reason(&trap),
            "policy trap: trapped: error while executing at wasm backtrace: | 0: 0x1 - f | 1: 0x2 - g"
        );
        let long = PolicyFailure::Trap {
            detail: "x".repeat(5_000),
        };
        let r = hold_reason(&long);
        assert!(r.ends_with("… (whole in the decision log)"), "{r}");
        assert_eq!(
            r.chars().count(),
            HOLD_REASON_CHARS + "… (whole in the decision log)".chars().count()
        );
    }

    fn tariff_input(parameters: &str) -> TariffInput {
        let d = |mantissa, scale| Decimal { mantissa, scale };
        let day = Date {
            year: 2013,
            month: 3,
            day: 1,
        };
        TariffInput {
            account_id: "A\"parameters\":1".into(),
            customer_class: CustomerClass::LowVoltageResidential,
            period_first: day,
            period_last: day,
            kwh: d(3928, 2),
            year_to_date_kwh: d(0, 0),
            month_to_date_kwh: d(0, 0),
            tou_split: Vec::new(),
            time_of_use_elected: false,
            parameters: parameters.into(),
        }
    }

    fn round_trip(parameters: &str) {
        let input = tariff_input(parameters);
        let whole = serde_json::to_string(&input).unwrap();
        let stored = slim(&whole, parameters).expect("one parameters member");
        assert!(stored.contains("\"parameters\":\"\""), "{stored}");
        assert!(stored.len() + serde_json::to_string(parameters).unwrap().len() == whole.len() + 2);
        let sha = crate::policy::engine::sha256_hex(parameters.as_bytes());
        let back = recorded_input(stored, Some(&sha), Some(parameters)).unwrap();
        assert_eq!(back, whole, "the component's input, byte for byte");
    }

    #[test]
    fn the_shipped_parameters_come_back_byte_for_byte() {
        round_trip(
            r#"{"charge_rounding":"half-up","steps":[{"price":"0.4983","up_to_kwh":"2760"}],"signature":"【仙游供电】"}"#,
        );
        // Escapes of every kind: quotes, backslashes, control characters, the key itself.
        round_trip("{\"parameters\":\"x\\\"\"}\n\t\u{1}\\");
    }

    proptest! {
        #[test]
        fn any_parameters_come_back_byte_for_byte(parameters in "\\PC*|[\"\\\\:{}a-z\\x00-\\x1f仙游]{0,40}") {
            prop_assume!(!parameters.is_empty());
            round_trip(&parameters);
        }
    }

    #[test]
    fn a_tampered_or_incomplete_record_is_refused_not_guessed() {
        let p = r#"{"hotline":"95598"}"#;
        let whole = serde_json::to_string(&tariff_input(p)).unwrap();
        let stored = slim(&whole, p).unwrap();
        let sha = crate::policy::engine::sha256_hex(p.as_bytes());
        let missing = recorded_input(stored.clone(), Some(&sha), None).unwrap_err();
        assert!(missing.contains("missing"), "{missing}");
        let edited =
            recorded_input(stored.clone(), Some(&sha), Some(r#"{"hotline":"0"}"#)).unwrap_err();
        assert!(edited.contains("do not match"), "{edited}");
        let no_slot = recorded_input(whole.clone(), Some(&sha), Some(p)).unwrap_err();
        assert!(no_slot.contains("slot"), "{no_slot}");
        // Without a sha the stored input is the input.
        assert_eq!(recorded_input(whole.clone(), None, None).unwrap(), whole);
    }

    /// A decision priced with its parameters sent apart (contract 1.1 `price-batch`) is
    /// logged exactly as the same decision with the parameters inside its input: same
    /// row, same hash, same input back for replay.
    #[test]
    fn parameters_sent_apart_are_logged_as_if_inside_the_input() {
        let p = r#"{"charge_rounding":"half-up","signature":"【仙游供电】"}"#;
        let invocation: Invocation<TariffOutput> = Invocation {
            outcome: Err(PolicyFailure::Refused {
                code: "bad-parameters".into(),
                message: "x".into(),
            }),
            fuel_used: 7,
            guest_output: String::new(),
            call_decisions: Some(3),
        };
        let batch = BatchRecord {
            county: "xianyou".into(),
            kind: "tariff",
            business_date: "2013-03-01".into(),
            decided_at: "2013-03-02 06:00:00".into(),
            component_sha256: "ab".into(),
        };
        let whole = tariff_input(p);
        let apart = tariff_input("");
        let inside = batch.prepare("A1", &whole, &invocation);
        let sent_apart = batch.prepare("A1", &SentApart::new(&apart, p), &invocation);
        assert_eq!(sent_apart, inside);
        assert!(inside.parameters_sha256.is_some());
        assert_eq!(
            inside.call_decisions,
            Some(3),
            "the call's size is recorded"
        );
        assert_eq!(row_hash(&sent_apart, ""), row_hash(&inside, ""));
        let back = recorded_input(
            sent_apart.input_json.clone(),
            sent_apart.parameters_sha256.as_deref(),
            Some(p),
        )
        .unwrap();
        assert_eq!(back, serde_json::to_string(&whole).unwrap());
    }

    #[test]
    #[should_panic(expected = "carries none of its own")]
    fn an_input_with_parameters_of_its_own_cannot_be_sent_apart() {
        let _ = SentApart::new(&tariff_input(r#"{"other":1}"#), "{}");
    }

    #[test]
    fn an_input_whose_parameters_cannot_be_cut_out_is_stored_whole() {
        // The value is not the parameters text, or the key appears twice.
        assert_eq!(slim(r#"{"parameters":"a"}"#, "b"), None);
        assert_eq!(
            slim(r#"{"x":{"parameters":"a"},"parameters":"a"}"#, "a"),
            None
        );
        assert_eq!(slim(r#"{"x":1}"#, "a"), None);
    }

    #[test]
    fn rows_without_stored_parameters_or_a_call_size_hash_as_before_migrations_0017_and_0024() {
        // The chain's canonical form gained a member only when it is set, so a row
        // written before (parameters_sha256 NULL) keeps its row_hash.
        let row = ChainedRow {
            county: "xianyou".into(),
            kind: "tariff".into(),
            account_id: "A1".into(),
            business_date: "2013-03-01".into(),
            decided_at: "2013-03-02 00:10:00".into(),
            component_sha256: "00".into(),
            input_json: "{}".into(),
            output_json: None,
            outcome: "failed".into(),
            failure_json: Some("{}".into()),
            reason_code: None,
            explanation: None,
            fuel_used: 7,
            guest_output: String::new(),
            parameters_sha256: None,
            parameters: None,
            call_decisions: None,
        };
        let before = serde_json::to_string(&(
            "",
            serde_json::json!({
                "county": "xianyou", "kind": "tariff", "account_id": "A1",
                "business_date": "2013-03-01", "decided_at": "2013-03-02 00:10:00",
                "component_sha256": "00", "input_json": "{}", "output_json": null,
                "outcome": "failed", "failure_json": "{}", "reason_code": null,
                "explanation": null, "fuel_used": 7, "guest_output": ""
            }),
        ))
        .unwrap();
        // serde_json::Value sorts keys; compare as values, then the hash of the struct.
        let ours: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&("", &row)).unwrap()).unwrap();
        assert_eq!(
            ours,
            serde_json::from_str::<serde_json::Value>(&before).unwrap()
        );
        let with = ChainedRow {
            parameters_sha256: Some("ab".into()),
            ..row.clone()
        };
        assert_ne!(
            row_hash(&row, ""),
            row_hash(&with, ""),
            "the sha is chained when set"
        );
        // Migration 0024's call size likewise: absent from the hash when NULL (above),
        // chained when set.
        let batched = ChainedRow {
            call_decisions: Some(128),
            ..row.clone()
        };
        assert_ne!(
            row_hash(&row, ""),
            row_hash(&batched, ""),
            "the call size is chained when set"
        );
        let ours: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&("", &batched)).unwrap()).unwrap();
        assert_eq!(ours[1]["call_decisions"], 128);
    }
}
