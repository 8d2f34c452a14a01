//! What the console's pages show that the shared read models ([`crate::query`]) do not
//! have: the approval queue joined with each account's balance, relay and customer
//! name; open follow-ups; recently finished relay commands; today's collection coverage
//! (meters tried, not attempts). Every list takes the principal's [`Visibility`] and
//! adds its set fields to the `WHERE`, so a page never shows a row outside the
//! principal's scope. Everything else comes from [`crate::query`].

use crate::auth::Visibility;
use crate::db::{Db, DbError};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// `$1`, `$2`, `$3` of the scope filter `(… = '' OR a.county = $1) AND …` on `accounts a`.
fn scope(v: &Visibility) -> [String; 3] {
    [
        v.county.clone().unwrap_or_default(),
        v.station_id.clone().unwrap_or_default(),
        v.account_id.clone().unwrap_or_default(),
    ]
}

const SCOPE_WHERE: &str = "($1 = '' OR a.county = $1) AND ($2 = '' OR a.station_id = $2) AND ($3 = '' OR a.account_id = $3)";

fn query_scoped<'q>(
    sql: &'q str,
    v: &Visibility,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let [c, s, a] = scope(v);
    sqlx::query(sql).bind(c).bind(s).bind(a)
}

/// [`query_scoped`] for rows read into `T` by column name.
fn query_as_scoped<'q, T>(
    sql: &'q str,
    v: &Visibility,
) -> sqlx::query::QueryAs<'q, sqlx::Any, T, sqlx::any::AnyArguments<'q>>
where
    T: for<'r> sqlx::FromRow<'r, AnyRow>,
{
    let [c, s, a] = scope(v);
    sqlx::query_as(sql).bind(c).bind(s).bind(a)
}

/// One approval case (审批停电 work order, open or approved) with its account.
#[derive(Debug, Serialize)]
pub struct Case {
    pub work_order_id: i64,
    pub account_id: String,
    pub customer_name: String,
    pub county: String,
    pub station_id: String,
    pub status: String,
    pub balance_fen: i64,
    pub relay_state: String,
    pub opened_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub note: Option<String>,
    pub executed_by: Option<String>,
    pub executed_at: Option<String>,
    /// Who withdrew the approval before it was executed, and when (the case is then
    /// held; `cutoff::withdraw_approval`).
    pub withdrawn_by: Option<String>,
    pub withdrawn_at: Option<String>,
    pub decision_id: Option<i64>,
    /// The case's evidence as the cutoff stage recorded it (`cutoff::run`).
    pub evidence: serde_json::Value,
}

const CASE_SELECT: &str =
    "SELECT w.work_order_id, w.account_id, c.name, a.county, a.station_id, w.status,
        a.balance_fen, a.relay_state, w.opened_at, w.decided_by, w.decided_at, w.note,
        w.executed_by, w.executed_at, w.decision_id, w.evidence_json, w.withdrawn_by,
        w.withdrawn_at
    FROM work_orders w JOIN accounts a ON a.account_id = w.account_id
    JOIN customers c ON c.customer_id = a.customer_id";

fn case_from(r: &AnyRow) -> Result<Case, DbError> {
    let evidence: String = r.try_get(15)?;
    Ok(Case {
        work_order_id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        customer_name: r.try_get(2)?,
        county: r.try_get(3)?,
        station_id: r.try_get(4)?,
        status: r.try_get(5)?,
        balance_fen: r.try_get(6)?,
        relay_state: r.try_get(7)?,
        opened_at: r.try_get(8)?,
        decided_by: r.try_get(9)?,
        decided_at: r.try_get(10)?,
        note: r.try_get(11)?,
        executed_by: r.try_get(12)?,
        executed_at: r.try_get(13)?,
        decision_id: r.try_get(14)?,
        withdrawn_by: r.try_get(16)?,
        withdrawn_at: r.try_get(17)?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
    })
}

/// Disconnection cases in scope whose status is in `statuses` (SQL list), in `order`.
async fn cases(db: &Db, v: &Visibility, statuses: &str, order: &str) -> Result<Vec<Case>, DbError> {
    let sql = format!(
        "{CASE_SELECT} WHERE w.kind = 'approve-disconnection' AND w.status IN ({statuses}) AND {SCOPE_WHERE} ORDER BY {order}"
    );
    query_scoped(&sql, v)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(case_from)
        .collect()
}

/// The approval queue: disconnection work orders open or approved (awaiting
/// execution), oldest first, at most 200.
pub async fn approval_queue(db: &Db, v: &Visibility) -> Result<Vec<Case>, DbError> {
    cases(db, v, "'open', 'approved'", "w.work_order_id LIMIT 200").await
}

/// Disconnection work orders held, executed or cancelled lately (the 20 latest): what
/// happened to the cases that left the queue.
pub async fn recent_cases(db: &Db, v: &Visibility) -> Result<Vec<Case>, DbError> {
    cases(
        db,
        v,
        "'held', 'done', 'cancelled'",
        "w.work_order_id DESC LIMIT 20",
    )
    .await
}

/// One disconnection work order, if it exists (the caller authorizes).
pub async fn case(db: &Db, work_order_id: i64) -> Result<Option<Case>, DbError> {
    let sql =
        format!("{CASE_SELECT} WHERE w.kind = 'approve-disconnection' AND w.work_order_id = $1");
    sqlx::query(&sql)
        .bind(work_order_id)
        .fetch_optional(&db.pool)
        .await?
        .as_ref()
        .map(case_from)
        .transpose()
}

/// An open work order that asks a person to do something (a follow-up visit, a call).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FollowUp {
    pub work_order_id: i64,
    pub kind: String,
    pub account_id: String,
    pub customer_name: String,
    pub balance_fen: i64,
    pub opened_at: String,
}

/// Warned customers to follow up offline (抄收员线下催费) and calls before reconnection,
/// open, oldest first (at most 200).
pub async fn follow_ups(db: &Db, v: &Visibility) -> Result<Vec<FollowUp>, DbError> {
    let sql = format!(
        "SELECT w.work_order_id, w.kind, w.account_id, c.name AS customer_name, a.balance_fen, w.opened_at
         FROM work_orders w JOIN accounts a ON a.account_id = w.account_id JOIN customers c ON c.customer_id = a.customer_id
         WHERE w.kind IN ('offline-follow-up', 'call-before-reconnection') AND w.status = 'open' AND {SCOPE_WHERE}
         ORDER BY w.work_order_id LIMIT 200"
    );
    Ok(query_as_scoped(&sql, v).fetch_all(&db.pool).await?)
}

/// A relay command that has finished, with the account's relay state now.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Command {
    pub command_id: i64,
    pub account_id: String,
    pub command: String,
    pub status: String,
    pub confirmed_at: Option<String>,
    pub relay_state: String,
}

/// The 10 latest confirmed or failed relay commands (those still waiting come from
/// [`crate::query::work_orders::relay_commands_awaiting`]).
pub async fn finished_commands(db: &Db, v: &Visibility) -> Result<Vec<Command>, DbError> {
    let sql = format!(
        "SELECT r.command_id, r.account_id, r.command, r.status, r.confirmed_at, a.relay_state
         FROM relay_commands r JOIN accounts a ON a.account_id = r.account_id
         WHERE r.status IN ('confirmed', 'failed') AND {SCOPE_WHERE} ORDER BY r.command_id DESC LIMIT 10"
    );
    Ok(query_as_scoped(&sql, v).fetch_all(&db.pool).await?)
}

/// Today's collection at one station.
#[derive(Debug, Serialize)]
pub struct Collection {
    pub county: String,
    pub station_id: String,
    pub date: String,
    /// Meters of active accounts: readings due.
    pub expected: u32,
    /// Of those, meters the collector has tried today (coverage).
    pub attempted: u32,
    /// Of those, meters with a stored reading (read success).
    pub ok: u32,
    /// attempted / expected, percent with one decimal ("97.5"); none when none due.
    pub coverage_pct: Option<String>,
    /// ok / expected, percent with one decimal.
    pub success_pct: Option<String>,
}

fn pct(part: u32, whole: u32) -> Option<String> {
    (whole > 0).then(|| {
        let per_mille = (u64::from(part) * 1000 + u64::from(whole) / 2) / u64::from(whole);
        format!("{}.{}", per_mille / 10, per_mille % 10)
    })
}

/// Collection coverage and read success per station of `county` for `date`, limited
/// to `station` when given.
pub async fn collection(
    db: &Db,
    county: &str,
    station: Option<&str>,
    date: chrono::NaiveDate,
) -> Result<Vec<Collection>, DbError> {
    let mut conn = db.pool.acquire().await?;
    let rates = crate::collection::station_rates(&mut conn, county, station, date).await?;
    let mut out = Vec::new();
    for (station_id, rate) in rates {
        let attempted: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT t.meter_id) FROM collection_attempts t JOIN accounts a ON a.meter_id = t.meter_id
             WHERE a.station_id = $1 AND a.status = 'active' AND t.business_date = $2",
        )
        .bind(&station_id)
        .bind(crate::db::ds(date))
        .fetch_one(&mut *conn)
        .await?;
        let attempted = (attempted as u32).min(rate.expected);
        out.push(Collection {
            county: county.to_string(),
            coverage_pct: pct(attempted, rate.expected),
            success_pct: pct(rate.ok, rate.expected),
            station_id,
            date: crate::db::ds(date),
            expected: rate.expected,
            attempted,
            ok: rate.ok,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages_round_half_up_to_one_place() {
        assert_eq!(super::pct(0, 0), None);
        assert_eq!(super::pct(39, 40).as_deref(), Some("97.5"));
        assert_eq!(super::pct(2, 3).as_deref(), Some("66.7"));
        assert_eq!(super::pct(3, 3).as_deref(), Some("100.0"));
    }
}
