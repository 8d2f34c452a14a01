//! Auditing the decision log: list it, verify its hash chain, replay recorded
//! decisions bit for bit, and replay them through a candidate version (`policy diff`).
//!
//! Replay works because a policy is a pure function of its input: the log holds the
//! component's sha256 and the exact input JSON, and the registry holds the bytes of
//! every component the host ever ran (published, or recorded from the policy-set files
//! at start), so re-running gives the same output — the same JSON, byte for byte.

use crate::db::Db;
use crate::decision_log::{self, ChainedRow, PARAMETERS_JOIN, row_hash};
use crate::money::Fen;
use crate::policy::bindings::{
    CutoffAction, CutoffInput, CutoffOutput, NoticeInput, NoticeOutput, ReconnectionInput,
    ReconnectionOutput, TariffInput, TariffOutput, WarningInput, WarningOutput,
};
use crate::policy::{Invocation, LoadedComponent, PolicyEngine, PolicyFailure, PolicyKind};
use crate::registry::{self, RegistryError};
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// Why an audit command could not run.
#[derive(Debug, Error)]
pub enum AuditError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("decision {0} does not exist; `feegate audit log` lists decisions")]
    NoSuchDecision(i64),
    #[error("decision {id} has an unreadable {what}: {detail}")]
    BadRecord {
        id: i64,
        what: &'static str,
        detail: String,
    },
}

// ---------------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------------

/// One line of `audit log` (and of the API's decision list).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    pub decision_id: i64,
    pub county: String,
    pub kind: String,
    pub account_id: String,
    pub business_date: String,
    pub decided_at: String,
    pub component_sha256: String,
    pub outcome: String,
    pub reason_code: Option<String>,
    pub explanation: Option<String>,
    pub fuel_used: i64,
    /// Set when one batch call (contract 1.1) made this decision and others: how many it
    /// made, and `fuel_used` is this decision's share of the call's fuel. Absent for a
    /// decision made alone, and for decisions recorded before migration 0024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_decisions: Option<i64>,
}

/// Which decisions to list or replay. Empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub county: String,
    pub kind: String,
    pub account_id: String,
    /// First business date, 'YYYY-MM-DD' (inclusive).
    pub from: String,
    /// Last business date, 'YYYY-MM-DD' (inclusive).
    pub to: String,
    /// At most this many rows (0: no limit).
    pub limit: i64,
}

const FILTER_SQL: &str =
    "($1 = '' OR county = $1) AND ($2 = '' OR kind = $2) AND ($3 = '' OR account_id = $3)
     AND ($4 = '' OR business_date >= $4) AND ($5 = '' OR business_date <= $5)";

/// Decisions matching `f`, in log order.
pub async fn log(db: &Db, f: &Filter) -> Result<Vec<LogLine>, AuditError> {
    use crate::query::policies::{DECISION_COLUMNS, line_from};
    let rows = sqlx::query(&format!(
        "SELECT {DECISION_COLUMNS} FROM decisions d WHERE {FILTER_SQL} ORDER BY decision_id LIMIT $6"
    ))
    .bind(&f.county)
    .bind(&f.kind)
    .bind(&f.account_id)
    .bind(&f.from)
    .bind(&f.to)
    .bind(if f.limit > 0 { f.limit } else { i64::MAX })
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(line_from).collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub decision_id: i64,
    /// What is wrong, for the auditor.
    pub problem: String,
}

/// Result of `audit verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Chained rows checked.
    pub rows: u64,
    /// Rows from before the chain existed (NULL hashes; migration 0002).
    pub unchained: u64,
    /// `row_hash` of the last row: write it down; a later verify whose log does not
    /// lead to it means rows were cut off the end.
    pub head_hash: String,
    pub last_decision_id: i64,
    /// Every break found (an edited row breaks its own hash, a removed one the next
    /// row's link).
    pub breaks: Vec<ChainBreak>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Recomputes the hash chain of the whole decision log.
///
/// `expect_head`: a head hash recorded earlier; the log must still contain it (a log
/// truncated at the end has no other trace). Rows are streamed in id order.
pub async fn verify(db: &Db, expect_head: Option<&str>) -> Result<VerifyReport, AuditError> {
    use futures_lite_stream::next;
    let mut report = VerifyReport {
        rows: 0,
        unchained: 0,
        head_hash: String::new(),
        last_decision_id: 0,
        breaks: Vec::new(),
    };
    let mut prev = String::new();
    let mut seen_expected = expect_head.is_none();
    let mut conn = db.pool.acquire().await?;
    let mut stream = sqlx::query(
        "SELECT decision_id, county, kind, account_id, business_date, decided_at, component_sha256, input_json,
                output_json, outcome, failure_json, reason_code, explanation, fuel_used, guest_output, prev_hash, row_hash,
                parameters_sha256, call_decisions
         FROM decisions ORDER BY decision_id",
    )
    .fetch(&mut *conn);
    while let Some(r) = next(&mut stream).await {
        let r = r?;
        let id: i64 = r.try_get(0)?;
        report.last_decision_id = id;
        let stored_prev: Option<String> = r.try_get(15)?;
        let stored_hash: Option<String> = r.try_get(16)?;
        let (Some(stored_prev), Some(stored_hash)) = (stored_prev, stored_hash) else {
            if report.rows > 0 {
                report.breaks.push(ChainBreak {
                    decision_id: id,
                    problem: "hash columns are empty after the chain began (row inserted behind the host's back?)".into(),
                });
            }
            report.unchained += 1;
            continue;
        };
        let row = ChainedRow {
            county: r.try_get(1)?,
            kind: r.try_get(2)?,
            account_id: r.try_get(3)?,
            business_date: r.try_get(4)?,
            decided_at: r.try_get(5)?,
            component_sha256: r.try_get(6)?,
            input_json: r.try_get(7)?,
            output_json: r.try_get(8)?,
            outcome: r.try_get(9)?,
            failure_json: r.try_get(10)?,
            reason_code: r.try_get(11)?,
            explanation: r.try_get(12)?,
            fuel_used: r.try_get(13)?,
            guest_output: r.try_get(14)?,
            parameters_sha256: r.try_get(17)?,
            parameters: None,
            call_decisions: r.try_get(18)?,
        };
        if stored_prev != prev {
            report.breaks.push(ChainBreak {
                decision_id: id,
                problem: if report.rows == 0 && !stored_prev.is_empty() {
                    "the first chained row links to a row that is no longer there (rows removed at the start)".into()
                } else {
                    "does not link to the row before it: a row in between was removed or re-ordered".into()
                },
            });
        }
        let computed = row_hash(&row, &stored_prev);
        if computed != stored_hash {
            report.breaks.push(ChainBreak {
                decision_id: id,
                problem: "content does not match its row_hash: the row was edited".into(),
            });
        }
        if expect_head == Some(stored_hash.as_str()) {
            seen_expected = true;
        }
        prev = stored_hash;
        report.rows += 1;
    }
    report.head_hash = prev;
    drop(stream);
    report.breaks.extend(parameter_breaks(&mut conn).await?);
    if !seen_expected {
        report.breaks.push(ChainBreak {
            decision_id: report.last_decision_id,
            problem: format!(
                "the expected head {} is not in the log: rows were removed from the end (or the hash was copied wrong: compare it with the head an earlier verify printed)",
                expect_head.unwrap_or_default()
            ),
        });
    }
    Ok(report)
}

/// The decision log's parameters, stored once (migration 0017), checked: every
/// `decision_parameters` row must hash to its key (the chain covers the key, this covers
/// the text), and every key a decision names must be there. A bad parameters row is
/// reported at the first decision that names it.
async fn parameter_breaks(conn: &mut sqlx::AnyConnection) -> Result<Vec<ChainBreak>, AuditError> {
    let rows = sqlx::query("SELECT sha256, parameters FROM decision_parameters ORDER BY sha256")
        .fetch_all(&mut *conn)
        .await?;
    let mut breaks = Vec::new();
    for r in &rows {
        let sha: String = r.try_get(0)?;
        let text: String = r.try_get(1)?;
        if crate::policy::engine::sha256_hex(text.as_bytes()) != sha {
            // Looked up only for a bad text (a scan: the column has no index).
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(decision_id) FROM decisions WHERE parameters_sha256 = $1",
            )
            .bind(&sha)
            .fetch_one(&mut *conn)
            .await?;
            breaks.push(ChainBreak {
                decision_id: first.unwrap_or(0),
                problem: format!(
                    "the parameters {sha} its input refers to do not match their sha256: they were edited"
                ),
            });
        }
    }
    let missing = sqlx::query(
        "SELECT d.decision_id, d.parameters_sha256 FROM decisions d
         LEFT JOIN decision_parameters dp ON dp.sha256 = d.parameters_sha256
         WHERE d.parameters_sha256 IS NOT NULL AND dp.sha256 IS NULL ORDER BY d.decision_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in &missing {
        breaks.push(ChainBreak {
            decision_id: r.try_get(0)?,
            problem: format!(
                "the parameters {} its input refers to are missing: they were removed",
                r.try_get::<String, _>(1)?
            ),
        });
    }
    Ok(breaks)
}

/// A minimal `StreamExt::next` so the crate needs no futures dependency.
mod futures_lite_stream {
    use std::future::poll_fn;
    use std::pin::Pin;

    pub async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
    }
}

// ---------------------------------------------------------------------------------
// Running a recorded input
// ---------------------------------------------------------------------------------

/// A typed run of one recorded input.
#[derive(Debug, Clone)]
pub enum Run {
    Tariff(Invocation<TariffOutput>),
    Warning(Invocation<WarningOutput>),
    Notice(Invocation<NoticeOutput>),
    Cutoff(Invocation<CutoffOutput>),
    Reconnection(Invocation<ReconnectionOutput>),
}

fn json<T: Serialize>(inv: &Invocation<T>) -> (&'static str, String) {
    match &inv.outcome {
        Ok(o) => ("ok", serde_json::to_string(o).expect("outputs serialise")),
        Err(f) => (
            "failed",
            serde_json::to_string(f).expect("failures serialise"),
        ),
    }
}

impl Run {
    /// (outcome, output JSON or failure JSON) exactly as the decision log writes them.
    pub fn recorded_form(&self) -> (&'static str, String) {
        match self {
            Run::Tariff(i) => json(i),
            Run::Warning(i) => json(i),
            Run::Notice(i) => json(i),
            Run::Cutoff(i) => json(i),
            Run::Reconnection(i) => json(i),
        }
    }

    /// Replaces the run's fuel figure ([`diff`]: the recorded version's fuel run alone).
    fn set_fuel_used(&mut self, fuel: u64) {
        match self {
            Run::Tariff(i) => i.fuel_used = fuel,
            Run::Warning(i) => i.fuel_used = fuel,
            Run::Notice(i) => i.fuel_used = fuel,
            Run::Cutoff(i) => i.fuel_used = fuel,
            Run::Reconnection(i) => i.fuel_used = fuel,
        }
    }

    pub fn fuel_used(&self) -> u64 {
        match self {
            Run::Tariff(i) => i.fuel_used,
            Run::Warning(i) => i.fuel_used,
            Run::Notice(i) => i.fuel_used,
            Run::Cutoff(i) => i.fuel_used,
            Run::Reconnection(i) => i.fuel_used,
        }
    }

    /// The failure, when the run failed.
    pub fn failure(&self) -> Option<&PolicyFailure> {
        match self {
            Run::Tariff(i) => i.outcome.as_ref().err(),
            Run::Warning(i) => i.outcome.as_ref().err(),
            Run::Notice(i) => i.outcome.as_ref().err(),
            Run::Cutoff(i) => i.outcome.as_ref().err(),
            Run::Reconnection(i) => i.outcome.as_ref().err(),
        }
    }
}

/// The kinds of decision in the log (the `decisions.kind` check): one per policy kind,
/// and `reconnection` (made by the cutoff component after a payment).
pub const LOG_KINDS: [&str; 5] = ["tariff", "warning", "notice", "cutoff", "reconnection"];

/// The policy kind whose component makes decisions of log kind `kind`
/// (`reconnection` decisions are made by the cutoff component).
pub fn component_kind(log_kind: &str) -> Option<PolicyKind> {
    match log_kind {
        "reconnection" => Some(PolicyKind::Cutoff),
        k => k.parse().ok(),
    }
}

/// Runs `input_json` (as recorded for a decision of log kind `kind`) through `c`, with
/// the recorded parameters replaced by `parameters` when given.
pub fn run_recorded(
    engine: &PolicyEngine,
    c: &LoadedComponent,
    kind: &str,
    input_json: &str,
    parameters: Option<&str>,
) -> Result<Run, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(input_json).map_err(|e| e.to_string())?;
    if let Some(p) = parameters {
        value["parameters"] = serde_json::Value::String(p.to_string());
    }
    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
    Ok(match kind {
        "tariff" => Run::Tariff(engine.price(c, &parse::<TariffInput>(value)?)),
        "warning" => Run::Warning(engine.assess(c, &parse::<WarningInput>(value)?)),
        "notice" => Run::Notice(engine.word(c, &parse::<NoticeInput>(value)?)),
        "cutoff" => Run::Cutoff(engine.decide(c, &parse::<CutoffInput>(value)?)),
        "reconnection" => {
            Run::Reconnection(engine.reconnection(c, &parse::<ReconnectionInput>(value)?))
        }
        other => return Err(format!("unknown decision kind {other:?}")),
    })
}

/// Loads components from the registry once per sha256.
struct ComponentCache<'a> {
    db: &'a Db,
    engine: &'a PolicyEngine,
    loaded: BTreeMap<String, Arc<LoadedComponent>>,
}

impl<'a> ComponentCache<'a> {
    fn new(db: &'a Db, engine: &'a PolicyEngine) -> Self {
        Self {
            db,
            engine,
            loaded: BTreeMap::new(),
        }
    }

    async fn get(
        &mut self,
        kind: PolicyKind,
        sha: &str,
    ) -> Result<Arc<LoadedComponent>, AuditError> {
        if let Some(c) = self.loaded.get(sha) {
            return Ok(c.clone());
        }
        let bytes = registry::component_bytes(self.db, sha).await?;
        let c = Arc::new(
            self.engine
                .load(kind, &bytes)
                .map_err(RegistryError::from)?,
        );
        self.loaded.insert(sha.to_string(), c.clone());
        Ok(c)
    }
}

#[derive(Clone)]
struct Recorded {
    id: i64,
    kind: String,
    account_id: String,
    business_date: String,
    sha: String,
    input_json: String,
    outcome: String,
    output_json: Option<String>,
    failure_json: Option<String>,
    fuel_used: i64,
    /// `decisions.call_decisions` (migration 0024): the size of the batch call that made
    /// this decision, whose fuel `fuel_used` is a share of; `None` when it was made alone
    /// or before the column existed.
    call_decisions: Option<i64>,
}

impl Recorded {
    /// Reads columns 0..=12 of a query shaped like [`recorded`]'s: the decision's
    /// columns, then `d.parameters_sha256, dp.parameters` ([`PARAMETERS_JOIN`]), then
    /// `d.call_decisions`.
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, AuditError> {
        let id: i64 = r.try_get(0)?;
        let input_json = decision_log::recorded_input(
            r.try_get(5)?,
            r.try_get::<Option<String>, _>(10)?.as_deref(),
            r.try_get::<Option<String>, _>(11)?.as_deref(),
        )
        .map_err(|detail| AuditError::BadRecord {
            id,
            what: "input",
            detail,
        })?;
        Ok(Recorded {
            id,
            kind: r.try_get(1)?,
            account_id: r.try_get(2)?,
            business_date: r.try_get(3)?,
            sha: r.try_get(4)?,
            input_json,
            outcome: r.try_get(6)?,
            output_json: r.try_get(7)?,
            failure_json: r.try_get(8)?,
            fuel_used: r.try_get(9)?,
            call_decisions: r.try_get(12)?,
        })
    }
}

async fn recorded(db: &Db, f: &Filter, one: Option<i64>) -> Result<Vec<Recorded>, AuditError> {
    let sql = format!(
        "SELECT d.decision_id, d.kind, d.account_id, d.business_date, d.component_sha256, d.input_json, d.outcome, d.output_json,
                d.failure_json, d.fuel_used, d.parameters_sha256, dp.parameters, d.call_decisions
         FROM decisions d {PARAMETERS_JOIN} WHERE ($7 = 0 OR d.decision_id = $7) AND {FILTER_SQL} ORDER BY d.decision_id LIMIT $6"
    );
    let rows = sqlx::query(&sql)
        .bind(&f.county)
        .bind(&f.kind)
        .bind(&f.account_id)
        .bind(&f.from)
        .bind(&f.to)
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .bind(one.unwrap_or(0))
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(Recorded::from_row).collect()
}

// ---------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------

/// One replayed decision.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub decision_id: i64,
    pub kind: String,
    pub component_sha256: String,
    /// The replayed outcome and output (or failure) JSON equal the recorded ones, byte
    /// for byte.
    pub matches: bool,
    pub recorded: String,
    pub replayed: String,
    pub fuel_recorded: i64,
    pub fuel_replayed: u64,
    /// Set when a mismatch is expected by nature (a wall-clock timeout), or when the
    /// fuel differs because the decision was made many per call (contract 1.1: the log
    /// holds its share of the call's fuel; a replay runs it alone).
    pub note: Option<String>,
}

/// Replays decision `one`, or every decision matching `f`, from the registry's bytes.
pub async fn replay(
    db: &Db,
    engine: &PolicyEngine,
    f: &Filter,
    one: Option<i64>,
) -> Result<Vec<Replayed>, AuditError> {
    let rows = recorded(db, f, one).await?;
    if let Some(id) = one
        && rows.is_empty()
    {
        return Err(AuditError::NoSuchDecision(id));
    }
    // Rows from this id on say whether a batch call made them (migration 0024); a NULL
    // `call_decisions` before it says nothing.
    let sized_from: i64 = sqlx::query_scalar(
        "SELECT decision_id FROM decision_log_marks WHERE mark = 'call_decisions_from'",
    )
    .fetch_optional(&db.pool)
    .await?
    .unwrap_or(0);
    let mut cache = ComponentCache::new(db, engine);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bad = |what, detail| AuditError::BadRecord {
            id: r.id,
            what,
            detail,
        };
        let kind = component_kind(&r.kind).ok_or_else(|| bad("kind", r.kind.clone()))?;
        let c = cache.get(kind, &r.sha).await?;
        let run =
            run_recorded(engine, &c, &r.kind, &r.input_json, None).map_err(|e| bad("input", e))?;
        let (outcome, body) = run.recorded_form();
        let recorded_body = r.output_json.or(r.failure_json).unwrap_or_default();
        let matches = outcome == r.outcome && body == recorded_body;
        let timed_out = recorded_body.contains("\"failure\":\"timeout\"")
            || matches!(run.failure(), Some(PolicyFailure::Timeout { .. }));
        let note = if !matches && timed_out {
            Some(
                "a wall-clock timeout depends on the machine's load, not only on the input"
                    .to_string(),
            )
        } else if matches && r.fuel_used as u64 != run.fuel_used() {
            // Since migration 0024 the log says which decisions a batch call made; rows
            // from before only say which component made them.
            match r.call_decisions {
                Some(n) => Some(format!(
                    "the recorded fuel is this decision's share of one call that made {n} decisions (contract 1.1); run alone, it also parses the parameters"
                )),
                None if r.id < sized_from && c.decides_in_batches() => Some(format!(
                    "the recorded fuel may be this decision's share of a call that decided up to {} at once (contract 1.1; recorded before the log kept the call's size); run alone, it also parses the parameters",
                    crate::policy::engine::BATCH_MAX
                )),
                None => None,
            }
        } else {
            None
        };
        out.push(Replayed {
            decision_id: r.id,
            kind: r.kind,
            component_sha256: r.sha,
            matches,
            recorded: format!("{}: {recorded_body}", r.outcome),
            replayed: format!("{outcome}: {body}"),
            fuel_recorded: r.fuel_used,
            fuel_replayed: run.fuel_used(),
            note,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Diff: recorded decisions through a candidate version
// ---------------------------------------------------------------------------------

/// A decision the candidate would make differently.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub decision_id: i64,
    pub account_id: String,
    pub business_date: String,
    pub kind: String,
    pub recorded: String,
    pub candidate: String,
    /// Candidate charge minus recorded charge, fen (tariff decisions).
    pub charge_difference_fen: Fen,
}

/// Result of `policy diff`: a candidate replayed on recorded decisions, or a shadow's
/// recorded outputs beside the live ones (`--shadow`).
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// `replay` (the candidate re-run on recorded inputs) or `shadow` (outputs the
    /// shadow recorded beside live decisions).
    pub source: &'static str,
    pub county: String,
    pub kind: PolicyKind,
    pub candidate_sha256: String,
    pub candidate_publication_id: i64,
    pub from: String,
    pub to: String,
    pub decisions: u64,
    pub changed: Vec<Changed>,
    /// Sum over tariff decisions of candidate − recorded charge, fen.
    pub charge_difference_fen: Fen,
    /// Fuel of the recorded decisions; for a version that decides many per call
    /// (contract 1.1), its fuel run alone on each input, so that both figures are single
    /// calls.
    pub fuel_recorded: u64,
    pub fuel_candidate: u64,
    /// Decisions that failed under the candidate but not as recorded.
    pub new_failures: u64,
    /// Warning decisions at level ≥ 1 (recorded, candidate).
    pub warned: (u64, u64),
    /// Cutoff decisions that asked to disconnect or for approval to (recorded, candidate).
    pub disconnections: (u64, u64),
    /// Tariff decisions whose charge is over the charge ceiling
    /// ([`crate::settlement::over_ceiling`] at `max_price_yuan_per_kwh`): settlement
    /// would hold those accounts instead of charging them (recorded, candidate).
    pub over_ceiling: (u64, u64),
    /// The ceiling judged against, yuan/kWh: the engine's
    /// ([`crate::config::PolicyLimits::max_price_yuan_per_kwh`]; for the CLI the default 5
    /// or `FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH`, as the hosts are configured).
    pub max_price_yuan_per_kwh: rust_decimal::Decimal,
}

impl DiffReport {
    fn new(
        source: &'static str,
        county: &str,
        kind: PolicyKind,
        candidate: &registry::Publication,
        from: &str,
        to: &str,
        max_price_yuan_per_kwh: rust_decimal::Decimal,
    ) -> Self {
        Self {
            source,
            county: county.to_string(),
            kind,
            candidate_sha256: candidate.component_sha256.clone(),
            candidate_publication_id: candidate.publication_id,
            from: from.to_string(),
            to: to.to_string(),
            decisions: 0,
            changed: Vec::new(),
            charge_difference_fen: 0,
            fuel_recorded: 0,
            fuel_candidate: 0,
            new_failures: 0,
            warned: (0, 0),
            disconnections: (0, 0),
            over_ceiling: (0, 0),
            max_price_yuan_per_kwh,
        }
    }

    /// Counts one decision: `before` as recorded (enforced), `after` by the candidate.
    fn add(&mut self, r: &Recorded, before: &Run, after: &Run) {
        self.decisions += 1;
        self.fuel_recorded += before.fuel_used();
        self.fuel_candidate += after.fuel_used();
        self.disconnections.0 += u64::from(would_disconnect(before));
        self.disconnections.1 += u64::from(would_disconnect(after));
        self.warned.0 += u64::from(warned(before));
        self.warned.1 += u64::from(warned(after));
        // Only the input's kWh is needed: read that member, not the whole input again.
        #[derive(serde::Deserialize)]
        struct Kwh {
            kwh: crate::policy::bindings::Decimal,
        }
        if let (Run::Tariff(b), Run::Tariff(a)) = (before, after)
            && let Ok(Kwh { kwh }) = serde_json::from_str::<Kwh>(&r.input_json)
        {
            let over = |run: &Invocation<TariffOutput>| {
                run.outcome.as_ref().is_ok_and(|out| {
                    crate::settlement::over_ceiling(
                        &kwh,
                        out.charge_fen,
                        self.max_price_yuan_per_kwh,
                    )
                    .is_some()
                })
            };
            self.over_ceiling.0 += u64::from(over(b));
            self.over_ceiling.1 += u64::from(over(a));
        }
        if before.failure().is_none() && after.failure().is_some() {
            self.new_failures += 1;
        }
        let charge_difference_fen = match (charge(before), charge(after)) {
            (Some(b), Some(a)) => a - b,
            _ => 0,
        };
        self.charge_difference_fen += charge_difference_fen;
        let (before_s, after_s) = (summary(before), summary(after));
        if before_s != after_s || charge_difference_fen != 0 {
            self.changed.push(Changed {
                decision_id: r.id,
                account_id: r.account_id.clone(),
                business_date: r.business_date.clone(),
                kind: r.kind.clone(),
                recorded: before_s,
                candidate: after_s,
                charge_difference_fen,
            });
        }
    }

    /// The candidate would disconnect (or ask to disconnect) more customers.
    pub fn disconnects_more(&self) -> bool {
        self.disconnections.1 > self.disconnections.0
    }

    /// The candidate would charge more accounts above the host's charge ceiling than the
    /// recorded decisions did (settlement would hold them).
    pub fn over_ceiling_more(&self) -> bool {
        self.over_ceiling.1 > self.over_ceiling.0
    }
}

fn summary(run: &Run) -> String {
    match run {
        Run::Tariff(i) => i
            .outcome
            .as_ref()
            .map(|o| format!("charge {} fen ({})", o.charge_fen, o.reason_code)),
        Run::Warning(i) => i
            .outcome
            .as_ref()
            .map(|o| format!("level {} {:?} ({})", o.level, o.actions, o.reason_code)),
        Run::Notice(i) => i.outcome.as_ref().map(|o| format!("SMS {:?}", o.text)),
        Run::Cutoff(i) => i
            .outcome
            .as_ref()
            .map(|o| format!("{:?} ({})", o.action, o.reason_code)),
        Run::Reconnection(i) => i
            .outcome
            .as_ref()
            .map(|o| format!("{:?} ({})", o.mode, o.reason_code)),
    }
    .unwrap_or_else(|f| format!("FAILED {}: {f}", f.code()))
}

fn recorded_run(kind: &str, outcome: &str, body: &str, fuel: i64) -> Result<Run, String> {
    fn inv<T: serde::de::DeserializeOwned>(
        outcome: &str,
        body: &str,
        fuel: i64,
    ) -> Result<Invocation<T>, String> {
        let outcome = if outcome == "ok" {
            Ok(serde_json::from_str(body).map_err(|e| e.to_string())?)
        } else {
            Err(serde_json::from_str::<PolicyFailure>(body).map_err(|e| e.to_string())?)
        };
        Ok(Invocation {
            outcome,
            fuel_used: fuel.max(0) as u64,
            guest_output: String::new(),
            // Not needed to compare outcomes; `Recorded::call_decisions` has it.
            call_decisions: None,
        })
    }
    Ok(match kind {
        "tariff" => Run::Tariff(inv(outcome, body, fuel)?),
        "warning" => Run::Warning(inv(outcome, body, fuel)?),
        "notice" => Run::Notice(inv(outcome, body, fuel)?),
        "cutoff" => Run::Cutoff(inv(outcome, body, fuel)?),
        "reconnection" => Run::Reconnection(inv(outcome, body, fuel)?),
        other => return Err(format!("unknown decision kind {other:?}")),
    })
}

fn would_disconnect(run: &Run) -> bool {
    matches!(
        run,
        Run::Cutoff(Invocation {
            outcome: Ok(CutoffOutput {
                action: CutoffAction::Disconnect | CutoffAction::RequestApproval,
                ..
            }),
            ..
        })
    )
}

fn warned(run: &Run) -> bool {
    matches!(run, Run::Warning(Invocation { outcome: Ok(o), .. }) if o.level >= 1)
}

fn charge(run: &Run) -> Option<Fen> {
    match run {
        Run::Tariff(Invocation { outcome: Ok(o), .. }) => Some(o.charge_fen),
        _ => None,
    }
}

/// The log kinds a component kind decides (`cutoff` also decides reconnections).
fn log_kinds(kind: PolicyKind) -> &'static [&'static str] {
    match kind {
        PolicyKind::Tariff => &["tariff"],
        PolicyKind::Warning => &["warning"],
        PolicyKind::Notice => &["notice"],
        PolicyKind::Cutoff => &["cutoff", "reconnection"],
    }
}

impl Recorded {
    fn bad(&self, what: &'static str, detail: String) -> AuditError {
        AuditError::BadRecord {
            id: self.id,
            what,
            detail,
        }
    }

    /// The recorded (enforced) output as a run.
    fn run(&self) -> Result<Run, AuditError> {
        let body = self
            .output_json
            .clone()
            .or(self.failure_json.clone())
            .unwrap_or_default();
        recorded_run(&self.kind, &self.outcome, &body, self.fuel_used)
            .map_err(|e| self.bad("output", e))
    }
}

/// Replays the recorded decisions of `county`'s `kind` with business dates in
/// `from..=to` through the candidate publication (its component and its parameters),
/// and compares with what was recorded.
pub async fn diff(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    kind: PolicyKind,
    candidate: &str,
    from: &str,
    to: &str,
) -> Result<DiffReport, AuditError> {
    let p = registry::resolve(db, county, kind, candidate).await?;
    let mut cache = ComponentCache::new(db, engine);
    let c = cache.get(kind, &p.component_sha256).await?;
    let max = engine.limits().max_price_yuan_per_kwh;
    let mut report = DiffReport::new("replay", county, kind, &p, from, to, max);
    for log_kind in log_kinds(kind) {
        let f = Filter {
            county: county.to_string(),
            kind: log_kind.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            ..Filter::default()
        };
        for r in recorded(db, &f, None).await? {
            let mut before = r.run()?;
            let after = run_recorded(engine, &c, &r.kind, &r.input_json, Some(&p.parameters_json))
                .map_err(|e| r.bad("input", e))?;
            // A decision made many per call (contract 1.1) recorded a share of its call's
            // fuel; the candidate runs alone. So that the fuel figures compare single
            // calls with single calls, the recorded version runs alone too, for its fuel.
            let recorded_component = cache.get(kind, &r.sha).await?;
            if recorded_component.decides_in_batches() {
                let alone = run_recorded(engine, &recorded_component, &r.kind, &r.input_json, None)
                    .map_err(|e| r.bad("input", e))?;
                before.set_fuel_used(alone.fuel_used());
            }
            report.add(&r, &before, &after);
        }
    }
    Ok(report)
}

/// Compares what the latest shadow of `county`'s `kind` recorded beside live decisions
/// with business dates in `from..=to` (`shadow_decisions`) with the live, enforced
/// outputs: the same report as [`diff`], without re-running anything; tariff charges are
/// judged against the charge ceiling `max_price_yuan_per_kwh` (yuan/kWh).
pub async fn shadow_diff(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    from: &str,
    to: &str,
    max_price_yuan_per_kwh: rust_decimal::Decimal,
) -> Result<DiffReport, AuditError> {
    let event = crate::shadow::latest_start(db, county, kind).await?;
    let p = registry::publication(db, event.publication_id.unwrap_or_default())
        .await?
        .ok_or_else(|| RegistryError::Corrupt {
            what: "shadow event",
            detail: format!("publication {:?} missing", event.publication_id),
        })?;
    let mut report = DiffReport::new("shadow", county, kind, &p, from, to, max_price_yuan_per_kwh);
    let rows = sqlx::query(
        &format!("SELECT d.decision_id, d.kind, d.account_id, d.business_date, d.component_sha256, d.input_json, d.outcome,
                d.output_json, d.failure_json, d.fuel_used, d.parameters_sha256, dp.parameters, d.call_decisions,
                s.outcome, s.output_json, s.failure_json, s.fuel_used
         FROM shadow_decisions s JOIN decisions d ON d.decision_id = s.decision_id {PARAMETERS_JOIN}
         WHERE s.county = $1 AND s.publication_id = $2 AND s.business_date >= $3 AND s.business_date <= $4
         ORDER BY s.decision_id, s.shadow_event_id"),
    )
    .bind(county)
    .bind(p.publication_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    for row in &rows {
        let r = Recorded::from_row(row)?;
        let shadow = Recorded {
            outcome: row.try_get(13)?,
            output_json: row.try_get(14)?,
            failure_json: row.try_get(15)?,
            fuel_used: row.try_get(16)?,
            // The shadow ran alone beside the decision.
            call_decisions: None,
            ..r.clone()
        };
        report.add(&r, &r.run()?, &shadow.run()?);
    }
    Ok(report)
}
