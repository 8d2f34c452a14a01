//! Work orders (工单) with the evidence an approver needs, and relay commands awaiting
//! confirmation.

use super::policies::{Decision, decision_by_id};
use super::{ListFilter, Money, Page, PageRequest, QueryError, Where, fetch_page};
use crate::auth::Visibility;
use crate::db::Db;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// The kinds of work order (the `work_orders.kind` check, migration 0006).
pub const KINDS: [&str; 7] = [
    "approve-disconnection",
    "offline-follow-up",
    "data-maintenance",
    "call-before-reconnection",
    "relay-failure",
    "reconciliation",
    "auto-debit-failed",
];

/// A work order's states (the `work_orders.status` check).
pub const STATUSES: [&str; 5] = ["open", "approved", "held", "done", "cancelled"];

/// A work order as listed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WorkOrder {
    pub work_order_id: i64,
    /// approve-disconnection | offline-follow-up | data-maintenance |
    /// call-before-reconnection | relay-failure | reconciliation | auto-debit-failed
    pub kind: String,
    /// None for a reconciliation finding that names no account of ours.
    pub account_id: Option<String>,
    pub county: Option<String>,
    pub station_id: String,
    /// open | approved | held | done | cancelled
    pub status: String,
    /// The policy decision that opened it, if one did.
    pub decision_id: Option<i64>,
    pub opened_at: String,
    /// Who approved or held it, when, and why. A withdrawn approval keeps its approver
    /// here.
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// The decision's note, followed by what happened since (`[approval withdrawn by
    /// …]`, `[cancelled: …]`).
    pub note: Option<String>,
    /// Who executed an approved disconnection (`system` for the scheduled run); never
    /// the approver (the two-person rule).
    pub executed_by: Option<String>,
    pub executed_at: Option<String>,
    /// Who withdrew the approval of a disconnection before it was executed, and when
    /// (the order is then `held`; `cutoff::withdraw_approval`).
    pub withdrawn_by: Option<String>,
    pub withdrawn_at: Option<String>,
}

/// Filters of the work-order list, on top of the county and station.
#[derive(Clone, Debug, Default)]
pub struct WorkOrderFilter {
    pub scope: ListFilter,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub account_id: Option<String>,
}

const ORDER_SELECT: &str = "SELECT w.work_order_id, w.kind, w.account_id,
        COALESCE(a.county, (SELECT s.county FROM stations s WHERE s.station_id = w.station_id)) AS county,
        w.station_id, w.status, w.decision_id, w.opened_at, w.decided_by, w.decided_at, w.note,
        w.executed_by, w.executed_at, w.withdrawn_by, w.withdrawn_at, w.evidence_json
    FROM work_orders w LEFT JOIN accounts a ON a.account_id = w.account_id";

/// The county of a work order: its account's, else its station's.
const ORDER_COUNTY: &str =
    "COALESCE(a.county, (SELECT s.county FROM stations s WHERE s.station_id = w.station_id))";

fn order_from(r: &AnyRow) -> Result<WorkOrder, sqlx::Error> {
    Ok(WorkOrder {
        work_order_id: r.try_get("work_order_id")?,
        kind: r.try_get("kind")?,
        account_id: r.try_get("account_id")?,
        county: r.try_get("county")?,
        station_id: r.try_get("station_id")?,
        status: r.try_get("status")?,
        decision_id: r.try_get("decision_id")?,
        opened_at: r.try_get("opened_at")?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        note: r.try_get("note")?,
        executed_by: r.try_get("executed_by")?,
        executed_at: r.try_get("executed_at")?,
        withdrawn_by: r.try_get("withdrawn_by")?,
        withdrawn_at: r.try_get("withdrawn_at")?,
    })
}

/// Work orders visible to the caller, by id.
pub async fn work_orders(
    db: &Db,
    v: &Visibility,
    f: &WorkOrderFilter,
    page: &PageRequest,
) -> Result<Page<WorkOrder>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &f.scope,
        ORDER_COUNTY,
        Some("w.station_id"),
        Some("w.account_id"),
    )
    .eq("w.kind", f.kind.as_deref())
    .eq("w.status", f.status.as_deref())
    .eq("w.account_id", f.account_id.as_deref())
    .cond_int("w.work_order_id > {}", page.after_id()?);
    fetch_page(
        db,
        ORDER_SELECT,
        w,
        "w.work_order_id",
        page.limit,
        order_from,
        |o: &WorkOrder| o.work_order_id.to_string(),
    )
    .await
}

/// A point of the balance history: the balance after a ledger entry.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BalancePoint {
    pub posted_at: String,
    pub kind: String,
    pub amount: Money,
    pub balance_after: Money,
}

/// A delivery receipt of the SMS gateway, as received.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    pub receipt_id: i64,
    /// delivered | failed | expired | rejected
    pub status: String,
    pub error_code: Option<String>,
    pub reported_at: Option<String>,
    pub received_at: String,
    /// applied | duplicate | stale | unknown-message
    pub outcome: String,
}

/// A warning or notice SMS with its delivery receipts. A warning counts as given only
/// when a receipt says delivered (`status` = delivered).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Warning {
    pub message_id: i64,
    /// low-balance | second-alarm | arrears | disconnection-pending | …
    pub kind: String,
    /// primary | second
    pub contact: String,
    pub mobile: String,
    pub body: String,
    /// queued | sent | delivered | failed
    pub status: String,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    pub receipts: Vec<Receipt>,
}

/// One work order with its case: the evidence recorded when it was opened, the balance
/// history, the warnings and their receipts, and the policy decision with its
/// explanation.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WorkOrderDetail {
    #[serde(flatten)]
    pub order: WorkOrder,
    /// What the host recorded when it opened the order (for an approval: balance, days
    /// in arrears, when the arrears notice was delivered, the policy's reason, the
    /// safety-floor refusals at that moment).
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    /// The account's last [`BALANCE_HISTORY`] ledger entries, oldest first.
    pub balance_history: Vec<BalancePoint>,
    /// The account's SMS of the last [`WARNING_DAYS`] days before the order opened and
    /// since, oldest first.
    pub warnings: Vec<Warning>,
    /// The decision that opened the order, with its explanation.
    pub decision: Option<Decision>,
}

/// Ledger entries shown as the balance history of a case.
pub const BALANCE_HISTORY: i64 = 30;
/// Days of SMS before a work order opened shown with it.
pub const WARNING_DAYS: i64 = 30;

/// One work order with its evidence, if it exists and is visible.
pub async fn work_order(
    db: &Db,
    v: &Visibility,
    work_order_id: i64,
) -> Result<Option<WorkOrderDetail>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        ORDER_COUNTY,
        Some("w.station_id"),
        Some("w.account_id"),
    )
    .cond_int("w.work_order_id = {}", Some(work_order_id));
    let sql = format!("{ORDER_SELECT}{}", w.sql());
    let Some(row) = w.bind(sqlx::query(&sql)).fetch_optional(&db.pool).await? else {
        return Ok(None);
    };
    let order = order_from(&row)?;
    let evidence: String = row.try_get("evidence_json")?;
    let evidence = serde_json::from_str(&evidence).unwrap_or(serde_json::Value::String(evidence));
    let (balance_history, warnings) = match &order.account_id {
        Some(a) => (
            balance_history(db, a).await?,
            warnings(db, a, &order.opened_at).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let decision = match order.decision_id {
        Some(id) => decision_by_id(db, id).await?,
        None => None,
    };
    Ok(Some(WorkOrderDetail {
        order,
        evidence,
        balance_history,
        warnings,
        decision,
    }))
}

async fn balance_history(db: &Db, account_id: &str) -> Result<Vec<BalancePoint>, QueryError> {
    let rows = sqlx::query(
        "SELECT posted_at, kind, amount_fen, balance_after_fen FROM ledger_entries
         WHERE account_id = $1 ORDER BY entry_id DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(BALANCE_HISTORY)
    .fetch_all(&db.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(BalancePoint {
                posted_at: r.try_get(0)?,
                kind: r.try_get(1)?,
                amount: Money::from(r.try_get::<i64, _>(2)?),
                balance_after: Money::from(r.try_get::<i64, _>(3)?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

/// The SMS of an account created from [`WARNING_DAYS`] days before `since` on, oldest
/// first, each with its receipts.
pub async fn warnings(db: &Db, account_id: &str, since: &str) -> Result<Vec<Warning>, QueryError> {
    let from = crate::db::parse_ts(since)
        .map(|t| crate::db::ts(t - chrono::Duration::days(WARNING_DAYS)))
        .unwrap_or_default();
    let rows = sqlx::query(
        "SELECT message_id, kind, contact, mobile, body, status, created_at, sent_at, delivered_at
         FROM sms_outbox WHERE account_id = $1 AND created_at >= $2 ORDER BY message_id",
    )
    .bind(account_id)
    .bind(from)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let message_id: i64 = r.try_get(0)?;
        let receipts = sqlx::query(
            "SELECT receipt_id, status, error_code, reported_at, received_at, outcome
             FROM sms_receipts WHERE message_id = $1 ORDER BY receipt_id",
        )
        .bind(message_id)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|x| {
            Ok(Receipt {
                receipt_id: x.try_get(0)?,
                status: x.try_get(1)?,
                error_code: x.try_get(2)?,
                reported_at: x.try_get(3)?,
                received_at: x.try_get(4)?,
                outcome: x.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.push(Warning {
            message_id,
            kind: r.try_get(1)?,
            contact: r.try_get(2)?,
            mobile: r.try_get(3)?,
            body: r.try_get(4)?,
            status: r.try_get(5)?,
            created_at: r.try_get(6)?,
            sent_at: r.try_get(7)?,
            delivered_at: r.try_get(8)?,
            receipts,
        });
    }
    Ok(out)
}

/// A relay command not yet confirmed by a fresh status read.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RelayCommandRow {
    pub command_id: i64,
    pub account_id: String,
    pub meter_id: String,
    pub county: String,
    pub station_id: String,
    /// trip | close-allowed | direct-close
    pub command: String,
    /// pending | issuing | awaiting-confirmation | awaiting-customer
    pub status: String,
    /// `decision:<id>` or `work-order:<id>`: what asked for it.
    pub decision_key: String,
    pub created_at: String,
    pub deadline: String,
    pub issued_at: Option<String>,
    pub detail: Option<String>,
}

/// Relay commands awaiting confirmation visible to the caller, by id.
pub async fn relay_commands_awaiting(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    page: &PageRequest,
) -> Result<Page<RelayCommandRow>, QueryError> {
    let mut w = Where::default();
    w.scope(v, f, "a.county", Some("a.station_id"), Some("a.account_id"))
        .cond_int("c.command_id > {}", page.after_id()?);
    w.clauses.push(
        "c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')".into(),
    );
    fetch_page(
        db,
        "SELECT c.command_id, c.account_id, c.meter_id, a.county, a.station_id, c.command, c.status, c.decision_key,
                c.created_at, c.deadline, c.issued_at, c.detail
         FROM relay_commands c JOIN accounts a ON a.account_id = c.account_id",
        w,
        "c.command_id",
        page.limit,
        |r| {
            Ok(RelayCommandRow {
                command_id: r.try_get(0)?,
                account_id: r.try_get(1)?,
                meter_id: r.try_get(2)?,
                county: r.try_get(3)?,
                station_id: r.try_get(4)?,
                command: r.try_get(5)?,
                status: r.try_get(6)?,
                decision_key: r.try_get(7)?,
                created_at: r.try_get(8)?,
                deadline: r.try_get(9)?,
                issued_at: r.try_get(10)?,
                detail: r.try_get(11)?,
            })
        },
        |c: &RelayCommandRow| c.command_id.to_string(),
    )
    .await
}
