//! Auto-debit (代扣): when the warning component asks for it, the agreed amount
//! (the agreement's `auto_debit_fen`) is requested from the customer's bank through the
//! bank channel adapter; the result arrives later on the bank's notify endpoint.
//!
//! Life of a request (`auto_debits`): `requested` → (sent, bank said accepted)
//! `in-flight` → `succeeded` (a `payment` notification with our `debit_request_id`
//! applied the money) or back to `requested` after a failure, until `max_attempts`;
//! then `failed` with an `auto-debit-failed` work order for the station (a person calls
//! the customer). A unique index allows at most one request `requested`/`in-flight` per
//! account, so two debits are never in flight for one account. Every attempt for one
//! request carries the same `request_id`: the bank deduplicates on it, so a retry after
//! a lost answer cannot debit twice.
//!
//! Requests are picked up from the decision log ([`collect_requests`]): the warning
//! stage records `RequestAutoDebit` in its decision's output; nothing else is needed
//! from it. The warning input's `auto_debit_in_flight` is filled with
//! [`crate::accountview::auto_debits_in_flight`] (a request `requested` or `in-flight`).

use crate::channels::auth;
use crate::channels::config::AutoDebitConfig;
use crate::db::{Db, DbError, parse_ts, ts};
use crate::money::{Fen, format_yuan};
use chrono::NaiveDateTime;
use sqlx::{AnyConnection, Row};

/// A warning decision's auto-debit request is acted on for this many hours after it
/// was decided (the next day's warning asks again if still needed); an old decision is
/// never turned into a debit after an earlier request has finished.
pub const REQUEST_FRESH_HOURS: i64 = 24;

/// Creates a request per warning decision of the last [`REQUEST_FRESH_HOURS`] that asked
/// for an auto-debit and has none yet, for accounts whose agreement names an amount.
/// Idempotent (one request per decision; none while another is in flight for the
/// account). Returns how many were created.
pub async fn collect_requests(db: &Db, now: NaiveDateTime) -> Result<u32, DbError> {
    let rows = sqlx::query(
        "SELECT d.decision_id, d.account_id, d.output_json, g.auto_debit_fen
         FROM decisions d JOIN accounts a ON a.account_id = d.account_id
         JOIN agreements g ON g.agreement_id = a.agreement_id
         WHERE d.kind = 'warning' AND d.outcome = 'ok' AND g.auto_debit_fen IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM auto_debits x WHERE x.decision_id = d.decision_id)
           AND d.decided_at >= $1
         ORDER BY d.decision_id",
    )
    .bind(ts(now - chrono::Duration::hours(REQUEST_FRESH_HOURS)))
    .fetch_all(&db.pool)
    .await?;
    let mut created = 0;
    for r in rows {
        let decision_id: i64 = r.try_get(0)?;
        let account_id: String = r.try_get(1)?;
        let output: Option<String> = r.try_get(2)?;
        let amount: Fen = r.try_get(3)?;
        let asked = output
            .and_then(|o| serde_json::from_str::<crate::policy::bindings::WarningOutput>(&o).ok())
            .is_some_and(|o| {
                o.actions
                    .contains(&crate::policy::bindings::WarningAction::RequestAutoDebit)
            });
        if !asked {
            continue;
        }
        created += create_request(db, &account_id, amount, Some(decision_id), now).await? as u32;
    }
    Ok(created)
}

/// Creates one request; false when the account has one in flight (nothing written).
pub async fn create_request(
    db: &Db,
    account_id: &str,
    amount_fen: Fen,
    decision_id: Option<i64>,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    let request_id = format!(
        "AD-{account_id}-{}",
        decision_id.map_or_else(|| now.format("%Y%m%d%H%M%S").to_string(), |d| d.to_string())
    );
    let done = sqlx::query(
        "INSERT INTO auto_debits (request_id, account_id, amount_fen, decision_id, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, 'requested', $5, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&request_id)
    .bind(account_id)
    .bind(amount_fen)
    .bind(decision_id)
    .bind(ts(now))
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What one [`dispatch`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Requests the bank accepted (now in flight).
    pub sent: u32,
    /// Attempts that failed and will be retried.
    pub retrying: u32,
    /// Requests given up (work order opened).
    pub failed: u32,
}

/// The bank channel adapter: POSTs debit requests, signed like a notification
/// (HMAC-SHA256 over `"{timestamp}\n{body}"` with the bank channel's secret).
pub struct BankAdapter {
    pub client: reqwest::Client,
    pub config: AutoDebitConfig,
    pub secret: Vec<u8>,
}

impl BankAdapter {
    async fn send(
        &self,
        request_id: &str,
        account_id: &str,
        amount_fen: Fen,
    ) -> Result<(), String> {
        let body = serde_json::json!({
            "request_id": request_id,
            "account_id": account_id,
            "amount": format_yuan(amount_fen),
            "currency": "CNY",
        })
        .to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let resp = self
            .client
            .post(&self.config.bank_url)
            .header(auth::TIMESTAMP_HEADER, now.to_string())
            .header(
                auth::SIGNATURE_HEADER,
                auth::hmac_sign(&self.secret, now, body.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(body)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("bank unreachable: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "bank answered {}: {}",
                resp.status(),
                resp.text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        }
    }
}

/// Sends due requests to the bank and gives up on in-flight ones that never got a
/// result within `result_timeout_seconds`.
pub async fn dispatch(
    db: &Db,
    bank: &BankAdapter,
    now: NaiveDateTime,
) -> Result<DispatchReport, DbError> {
    let mut report = DispatchReport::default();
    let rows = sqlx::query(
        "SELECT request_id, account_id, amount_fen FROM auto_debits WHERE status = 'requested' AND next_attempt_at <= $1 ORDER BY debit_id",
    )
    .bind(ts(now))
    .fetch_all(&db.pool)
    .await?;
    for r in rows {
        let request_id: String = r.try_get(0)?;
        let account_id: String = r.try_get(1)?;
        let amount: Fen = r.try_get(2)?;
        // Counted before sending: an attempt whose answer is lost still counts.
        sqlx::query("UPDATE auto_debits SET attempts = attempts + 1 WHERE request_id = $1")
            .bind(&request_id)
            .execute(&db.pool)
            .await?;
        match bank.send(&request_id, &account_id, amount).await {
            Ok(()) => {
                sqlx::query("UPDATE auto_debits SET status = 'in-flight', next_attempt_at = $2 WHERE request_id = $1 AND status = 'requested'")
                    .bind(&request_id)
                    .bind(ts(now))
                    .execute(&db.pool)
                    .await?;
                report.sent += 1;
            }
            Err(why) => {
                let mut conn = db.pool.acquire().await?;
                if failed_attempt(&mut conn, &request_id, &why, now, &bank.config).await? {
                    report.failed += 1;
                } else {
                    report.retrying += 1;
                }
            }
        }
    }
    let timeout = chrono::Duration::seconds(bank.config.result_timeout_seconds as i64);
    let stale = sqlx::query(
        "SELECT request_id, next_attempt_at FROM auto_debits WHERE status = 'in-flight'",
    )
    .fetch_all(&db.pool)
    .await?;
    for r in stale {
        let request_id: String = r.try_get(0)?;
        let sent_at = parse_ts(&r.try_get::<String, _>(1)?)?;
        if now - sent_at > timeout {
            let mut conn = db.pool.acquire().await?;
            // No result: the bank may still debit; never re-request, a person checks.
            give_up(
                &mut conn,
                &request_id,
                "no result from the bank before the timeout",
                now,
            )
            .await?;
            report.failed += 1;
        }
    }
    Ok(report)
}

/// Records a failed attempt: back to `requested` with a later `next_attempt_at`, or
/// `failed` with a work order once `max_attempts` is reached. True when given up.
async fn failed_attempt(
    conn: &mut AnyConnection,
    request_id: &str,
    why: &str,
    now: NaiveDateTime,
    cfg: &AutoDebitConfig,
) -> Result<bool, sqlx::Error> {
    let attempts: i64 = sqlx::query("SELECT attempts FROM auto_debits WHERE request_id = $1")
        .bind(request_id)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    if attempts >= i64::from(cfg.max_attempts) {
        give_up(conn, request_id, why, now).await?;
        return Ok(true);
    }
    let next = now + chrono::Duration::seconds((cfg.retry_after_seconds * attempts as u64) as i64);
    tracing::warn!(
        request_id,
        attempts,
        why,
        "auto-debit attempt failed; will retry"
    );
    sqlx::query("UPDATE auto_debits SET status = 'requested', next_attempt_at = $2, last_error = $3 WHERE request_id = $1")
        .bind(request_id)
        .bind(ts(next))
        .bind(why)
        .execute(&mut *conn)
        .await?;
    Ok(false)
}

async fn give_up(
    conn: &mut AnyConnection,
    request_id: &str,
    why: &str,
    now: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    tracing::warn!(request_id, why, "auto-debit failed; work order opened");
    sqlx::query("UPDATE auto_debits SET status = 'failed', last_error = $2, finished_at = $3 WHERE request_id = $1")
        .bind(request_id)
        .bind(why)
        .bind(ts(now))
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
         SELECT 'auto-debit-failed', d.account_id, a.station_id, $2, 'open', $3, $4
         FROM auto_debits d JOIN accounts a ON a.account_id = d.account_id WHERE d.request_id = $1
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(request_id)
    .bind(format!("auto-debit-failed:{request_id}"))
    .bind(serde_json::json!({ "request_id": request_id, "why": why }).to_string())
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A `debit-failed` result from the bank (inside the inbox's transaction). False when
/// no such request is in flight for the account.
pub async fn record_failure(
    conn: &mut AnyConnection,
    _channel: &str,
    request_id: &str,
    account_id: &str,
    reason: &str,
    now: NaiveDateTime,
    cfg: Option<&AutoDebitConfig>,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query(
        "SELECT 1 FROM auto_debits WHERE request_id = $1 AND account_id = $2 AND status = 'in-flight'",
    )
    .bind(request_id)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if !found {
        return Ok(false);
    }
    let why = format!("bank refused: {reason}");
    match cfg {
        Some(cfg) => {
            failed_attempt(conn, request_id, &why, now, cfg).await?;
        }
        None => give_up(conn, request_id, &why, now).await?,
    }
    Ok(true)
}

/// A payment carrying `debit_request_id` was applied: the request succeeded.
pub async fn record_success(
    conn: &mut AnyConnection,
    request_id: &str,
    account_id: &str,
    now: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "UPDATE auto_debits SET status = 'succeeded', finished_at = $3 WHERE request_id = $1 AND account_id = $2 AND status IN ('requested', 'in-flight')",
    )
    .bind(request_id)
    .bind(account_id)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        // The money moved at the bank: it is applied regardless; reconciliation shows it.
        tracing::warn!(
            request_id,
            account_id,
            "debit result for a request not in flight; payment applied anyway"
        );
    }
    Ok(())
}
