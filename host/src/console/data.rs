//! What the console's pages show, read from the database. Every list takes the
//! principal's [`Visibility`] and adds its set fields to the `WHERE`, so a page never
//! shows a row outside the principal's scope.

use super::charts::{BalancePoint, UsageDay};
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
    pub decision_id: Option<i64>,
    /// The case's evidence as the cutoff stage recorded it (`cutoff::run`).
    pub evidence: serde_json::Value,
}

const CASE_SELECT: &str =
    "SELECT w.work_order_id, w.account_id, c.name, a.county, a.station_id, w.status,
        a.balance_fen, a.relay_state, w.opened_at, w.decided_by, w.decided_at, w.note,
        w.executed_by, w.executed_at, w.decision_id, w.evidence_json
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
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
    })
}

/// The approval queue: disconnection work orders open or approved (awaiting execution),
/// and those executed in the last `recent` days... bounded to the 200 latest.
pub async fn approval_queue(db: &Db, v: &Visibility) -> Result<Vec<Case>, DbError> {
    let sql = format!(
        "{CASE_SELECT} WHERE w.kind = 'approve-disconnection' AND w.status IN ('open', 'approved') AND {SCOPE_WHERE}
         ORDER BY w.work_order_id LIMIT 200"
    );
    query_scoped(&sql, v)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(case_from)
        .collect()
}

/// Disconnection work orders decided or executed lately (the 20 latest): what happened
/// to the cases that left the queue.
pub async fn recent_cases(db: &Db, v: &Visibility) -> Result<Vec<Case>, DbError> {
    let sql = format!(
        "{CASE_SELECT} WHERE w.kind = 'approve-disconnection' AND w.status IN ('held', 'done', 'cancelled') AND {SCOPE_WHERE}
         ORDER BY w.work_order_id DESC LIMIT 20"
    );
    query_scoped(&sql, v)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(case_from)
        .collect()
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

/// The balance after each of the account's last `n` ledger entries, oldest first.
pub async fn balance_history(
    db: &Db,
    account_id: &str,
    n: i64,
) -> Result<Vec<BalancePoint>, DbError> {
    let rows = sqlx::query(
        "SELECT posted_at, balance_after_fen FROM ledger_entries WHERE account_id = $1 ORDER BY entry_id DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(n)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .rev()
        .map(|r| {
            Ok(BalancePoint {
                at: r.try_get(0)?,
                balance_fen: r.try_get(1)?,
            })
        })
        .collect()
}

/// A warning or notice SMS and what became of it.
#[derive(Debug, Serialize)]
pub struct Warning {
    pub message_id: i64,
    pub kind: String,
    pub contact: String,
    pub status: String,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    /// The gateway's delivery receipts for it, oldest first: "status at time".
    pub receipts: Vec<String>,
}

/// The account's last 10 messages with their delivery receipts.
pub async fn warnings(db: &Db, account_id: &str) -> Result<Vec<Warning>, DbError> {
    let rows = sqlx::query(
        "SELECT message_id, kind, contact, status, created_at, sent_at, delivered_at FROM sms_outbox
         WHERE account_id = $1 ORDER BY message_id DESC LIMIT 10",
    )
    .bind(account_id)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        let receipts = sqlx::query(
            "SELECT status, COALESCE(reported_at, received_at) FROM sms_receipts WHERE message_id = $1 ORDER BY receipt_id",
        )
        .bind(id)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|x| Ok(format!("{} {}", x.try_get::<String, _>(0)?, x.try_get::<String, _>(1)?)))
        .collect::<Result<_, DbError>>()?;
        out.push(Warning {
            message_id: id,
            kind: r.try_get(1)?,
            contact: r.try_get(2)?,
            status: r.try_get(3)?,
            created_at: r.try_get(4)?,
            sent_at: r.try_get(5)?,
            delivered_at: r.try_get(6)?,
            receipts,
        });
    }
    Ok(out)
}

/// An open work order that asks a person to do something (a follow-up visit, a call).
#[derive(Debug, Serialize)]
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
        "SELECT w.work_order_id, w.kind, w.account_id, c.name, a.balance_fen, w.opened_at
         FROM work_orders w JOIN accounts a ON a.account_id = w.account_id JOIN customers c ON c.customer_id = a.customer_id
         WHERE w.kind IN ('offline-follow-up', 'call-before-reconnection') AND w.status = 'open' AND {SCOPE_WHERE}
         ORDER BY w.work_order_id LIMIT 200"
    );
    query_scoped(&sql, v)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(FollowUp {
                work_order_id: r.try_get(0)?,
                kind: r.try_get(1)?,
                account_id: r.try_get(2)?,
                customer_name: r.try_get(3)?,
                balance_fen: r.try_get(4)?,
                opened_at: r.try_get(5)?,
            })
        })
        .collect()
}

/// A relay command.
#[derive(Debug, Serialize)]
pub struct Command {
    pub command_id: i64,
    pub account_id: String,
    pub meter_id: String,
    pub command: String,
    pub status: String,
    pub created_at: String,
    pub deadline: String,
    pub confirmed_at: Option<String>,
    pub relay_state: String,
}

/// Relay commands not yet confirmed (pending, issuing, awaiting confirmation or the
/// customer), then the 10 latest finished ones.
pub async fn relay_commands(
    db: &Db,
    v: &Visibility,
) -> Result<(Vec<Command>, Vec<Command>), DbError> {
    let select = "SELECT r.command_id, r.account_id, r.meter_id, r.command, r.status, r.created_at, r.deadline, r.confirmed_at, a.relay_state
         FROM relay_commands r JOIN accounts a ON a.account_id = r.account_id";
    let read = |rows: Vec<AnyRow>| -> Result<Vec<Command>, DbError> {
        rows.iter()
            .map(|r| {
                Ok(Command {
                    command_id: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    meter_id: r.try_get(2)?,
                    command: r.try_get(3)?,
                    status: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                    deadline: r.try_get(6)?,
                    confirmed_at: r.try_get(7)?,
                    relay_state: r.try_get(8)?,
                })
            })
            .collect()
    };
    let waiting = format!(
        "{select} WHERE r.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer') AND {SCOPE_WHERE}
         ORDER BY r.command_id LIMIT 200"
    );
    let done = format!(
        "{select} WHERE r.status IN ('confirmed', 'failed') AND {SCOPE_WHERE} ORDER BY r.command_id DESC LIMIT 10"
    );
    Ok((
        read(query_scoped(&waiting, v).fetch_all(&db.pool).await?)?,
        read(query_scoped(&done, v).fetch_all(&db.pool).await?)?,
    ))
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

/// An account as its page shows it.
#[derive(Debug, Serialize)]
pub struct AccountSummary {
    pub account_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub county: String,
    pub station_id: String,
    pub meter_id: String,
    pub status: String,
    pub balance_fen: i64,
    pub relay_state: String,
    pub arrears_since: Option<String>,
    pub alarm_threshold_fen: i64,
    pub mobile: String,
    pub keep_power: bool,
}

/// An account's summary, if it exists (the caller authorizes with its county and
/// station before showing it).
pub async fn account(db: &Db, account_id: &str) -> Result<Option<AccountSummary>, DbError> {
    let r = sqlx::query(
        "SELECT a.account_id, a.customer_id, c.name, a.county, a.station_id, a.meter_id, a.status,
                a.balance_fen, a.relay_state, a.arrears_since, g.alarm_threshold_fen, g.mobile, g.keep_power
         FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
         JOIN agreements g ON g.agreement_id = a.agreement_id WHERE a.account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(&db.pool)
    .await?;
    r.map(|r| {
        Ok(AccountSummary {
            account_id: r.try_get(0)?,
            customer_id: r.try_get(1)?,
            customer_name: r.try_get(2)?,
            county: r.try_get(3)?,
            station_id: r.try_get(4)?,
            meter_id: r.try_get(5)?,
            status: r.try_get(6)?,
            balance_fen: r.try_get(7)?,
            relay_state: r.try_get(8)?,
            arrears_since: r.try_get(9)?,
            alarm_threshold_fen: r.try_get(10)?,
            mobile: r.try_get(11)?,
            keep_power: r.try_get::<i64, _>(12)? != 0,
        })
    })
    .transpose()
}

/// Accounts in scope, optionally those whose id or customer name contains `q`, by id
/// (at most 100).
pub async fn accounts(db: &Db, v: &Visibility, q: &str) -> Result<Vec<AccountSummary>, DbError> {
    let sql = format!(
        "SELECT a.account_id FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
         WHERE {SCOPE_WHERE} AND ($4 = '' OR a.account_id LIKE $5 OR c.name LIKE $5)
         ORDER BY a.account_id LIMIT 100"
    );
    let ids: Vec<String> = query_scoped(&sql, v)
        .bind(q)
        .bind(format!("%{q}%"))
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(a) = account(db, &id).await? {
            out.push(a);
        }
    }
    Ok(out)
}

/// The account's last `days` settled days, oldest first.
pub async fn usage(db: &Db, account_id: &str, days: i64) -> Result<Vec<UsageDay>, DbError> {
    let rows = sqlx::query(
        "SELECT business_date, kwh_centi, charge_fen FROM settlements WHERE account_id = $1 ORDER BY business_date DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(days)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .rev()
        .map(|r| {
            Ok(UsageDay {
                date: r.try_get(0)?,
                kwh_centi: r.try_get(1)?,
                charge_fen: r.try_get(2)?,
            })
        })
        .collect()
}

/// A ledger entry that moved money in or back out (payment history).
#[derive(Debug, Serialize)]
pub struct PaymentRow {
    pub posted_at: String,
    pub kind: String,
    pub amount_fen: i64,
    pub balance_after_fen: i64,
    pub reference: String,
}

/// The account's last 20 prepayments, payments and reversals, newest first.
pub async fn payments(db: &Db, account_id: &str) -> Result<Vec<PaymentRow>, DbError> {
    sqlx::query(
        "SELECT posted_at, kind, amount_fen, balance_after_fen, reference FROM ledger_entries
         WHERE account_id = $1 AND kind IN ('prepayment', 'payment', 'reversal') ORDER BY entry_id DESC LIMIT 20",
    )
    .bind(account_id)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(PaymentRow {
            posted_at: r.try_get(0)?,
            kind: r.try_get(1)?,
            amount_fen: r.try_get(2)?,
            balance_after_fen: r.try_get(3)?,
            reference: r.try_get(4)?,
        })
    })
    .collect()
}

/// A policy decision, in full.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub decision_id: i64,
    pub county: String,
    pub kind: String,
    pub account_id: String,
    pub station_id: Option<String>,
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
}

const DECISION_SELECT: &str = "SELECT d.decision_id, d.county, d.kind, d.account_id, a.station_id, d.business_date, d.decided_at,
        d.component_sha256, d.input_json, d.output_json, d.outcome, d.failure_json, d.reason_code, d.explanation, d.fuel_used
    FROM decisions d LEFT JOIN accounts a ON a.account_id = d.account_id";

fn decision_from(r: &AnyRow) -> Result<Decision, DbError> {
    Ok(Decision {
        decision_id: r.try_get(0)?,
        county: r.try_get(1)?,
        kind: r.try_get(2)?,
        account_id: r.try_get(3)?,
        station_id: r.try_get(4)?,
        business_date: r.try_get(5)?,
        decided_at: r.try_get(6)?,
        component_sha256: r.try_get(7)?,
        input_json: r.try_get(8)?,
        output_json: r.try_get(9)?,
        outcome: r.try_get(10)?,
        failure_json: r.try_get(11)?,
        reason_code: r.try_get(12)?,
        explanation: r.try_get(13)?,
        fuel_used: r.try_get(14)?,
    })
}

/// One decision, if it exists (the caller authorizes).
pub async fn decision(db: &Db, id: i64) -> Result<Option<Decision>, DbError> {
    let sql = format!("{DECISION_SELECT} WHERE d.decision_id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .as_ref()
        .map(decision_from)
        .transpose()
}

/// The account's last 15 decisions that were not plain tariff settlements (warnings,
/// notices, cutoff, reconnection), newest first, and its last 5 tariff decisions.
pub async fn decisions_of(db: &Db, account_id: &str) -> Result<Vec<Decision>, DbError> {
    let sql =
        format!("{DECISION_SELECT} WHERE d.account_id = $1 ORDER BY d.decision_id DESC LIMIT 20");
    sqlx::query(&sql)
        .bind(account_id)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(decision_from)
        .collect()
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
