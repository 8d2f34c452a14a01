//! The SMS outbox and the notice stage.
//!
//! A notice is worded by the county's notice component, logged as a decision, and put
//! in the outbox under a de-duplication key (one notice of a kind per account per
//! day). The outbox is delivered through an [`SmsGateway`] outside quiet hours; a
//! warning counts as given only when the gateway's delivery receipt says so
//! (`delivered_at`), and the cutoff floor looks only at delivered notices.

use crate::calendar::DailyWindow;
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::money::Fen;
use crate::policy::bindings::{NoticeInput, NoticeKind};
use crate::policy::convert::{date_to_wit, fen_to_wit, to_wit};
use crate::policy::{PolicyEngine, PolicyKind};
use chrono::{NaiveDate, NaiveDateTime, Timelike};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::sync::Mutex;
use thiserror::Error;

/// A notice to word and queue.
#[derive(Debug, Clone)]
pub struct NoticeRequest {
    pub kind: NoticeKind,
    pub account_id: String,
    pub today: NaiveDate,
    pub balance_fen: Fen,
    pub days_of_credit_left: Option<Decimal>,
    pub amount_fen: Option<Fen>,
    pub deadline: Option<String>,
    /// Warning level this notice conveys (0 for non-warnings).
    pub warning_level: u8,
    /// One message per key, ever: e.g. `warn:<account>:L2:<date>`.
    pub dedup_key: String,
}

impl NoticeRequest {
    /// A notice about an event (disconnected, reconnected, payment received…): no
    /// warning level, no forecast; one message per `dedup_key`.
    pub fn event(
        kind: NoticeKind,
        account_id: &str,
        today: NaiveDate,
        balance_fen: Fen,
        dedup_key: String,
    ) -> Self {
        Self {
            kind,
            account_id: account_id.to_string(),
            today,
            balance_fen,
            days_of_credit_left: None,
            amount_fen: None,
            deadline: None,
            warning_level: 0,
            dedup_key,
        }
    }
}

/// Stable name of a notice kind for the outbox.
pub fn kind_name(k: NoticeKind) -> &'static str {
    match k {
        NoticeKind::LowBalance => "low-balance",
        NoticeKind::SecondAlarm => "second-alarm",
        NoticeKind::Arrears => "arrears",
        NoticeKind::DisconnectionPending => "disconnection-pending",
        NoticeKind::Disconnected => "disconnected",
        NoticeKind::Reconnected => "reconnected",
        NoticeKind::PressButtonToRestore => "press-button-to-restore",
        NoticeKind::PaymentReceived => "payment-received",
    }
}

/// What happened to a notice request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Queued,
    /// A message with this key exists already.
    Duplicate,
    /// The notice component failed; the account is held at the notice stage and no SMS
    /// goes out (so no cutoff can rely on it).
    PolicyFailed,
}

/// Words a notice with the county's notice component and queues it (in `conn`'s
/// transaction if it is in one).
pub async fn queue_notice(
    conn: &mut AnyConnection,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    req: &NoticeRequest,
    now: NaiveDateTime,
) -> Result<Queued, DbError> {
    if sqlx::query("SELECT 1 FROM sms_outbox WHERE dedup_key = $1")
        .bind(&req.dedup_key)
        .fetch_optional(&mut *conn)
        .await?
        .is_some()
    {
        return Ok(Queued::Duplicate);
    }
    let row = sqlx::query(
        "SELECT c.name, g.mobile FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
         JOIN agreements g ON g.agreement_id = a.agreement_id WHERE a.account_id = $1",
    )
    .bind(&req.account_id)
    .fetch_one(&mut *conn)
    .await?;
    let (name, mobile): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let notice = policies.get(PolicyKind::Notice);
    let input = NoticeInput {
        kind: req.kind,
        account_id: req.account_id.clone(),
        customer_name: name,
        today: date_to_wit(req.today),
        balance: fen_to_wit(req.balance_fen),
        days_of_credit_left: req.days_of_credit_left.and_then(|d| to_wit(d).ok()),
        amount: req.amount_fen.map(fen_to_wit),
        deadline: req.deadline.clone(),
        parameters: notice.parameters_json.clone(),
    };
    let invocation = engine.word(&notice.component, &input);
    let business_date = crate::db::ds(req.today);
    let decision_id = decision_log::record(
        conn,
        &DecisionRecord {
            county,
            kind: "notice",
            account_id: &req.account_id,
            business_date: &business_date,
            decided_at: &ts(now),
            component_sha256: &notice.component.sha256,
            input: &input,
            invocation: &invocation,
            shadow: policies.shadow(engine, PolicyKind::Notice),
        },
    )
    .await?;
    match &invocation.outcome {
        Ok(out) => {
            sqlx::query(
                "INSERT INTO sms_outbox (account_id, kind, dedup_key, mobile, body, warning_level, decision_id, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8)",
            )
            .bind(&req.account_id)
            .bind(kind_name(req.kind))
            .bind(&req.dedup_key)
            .bind(mobile)
            .bind(&out.text)
            .bind(i64::from(req.warning_level))
            .bind(decision_id)
            .bind(ts(now))
            .execute(&mut *conn)
            .await?;
            Ok(Queued::Queued)
        }
        Err(f) => {
            decision_log::hold(
                conn,
                &req.account_id,
                &business_date,
                "notice",
                &decision_log::hold_reason(f),
                Some(decision_id),
                &ts(now),
            )
            .await?;
            Ok(Queued::PolicyFailed)
        }
    }
}

/// A gateway's answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Delivered to the handset at this time.
    Delivered(NaiveDateTime),
    /// Accepted; the receipt will come later.
    Accepted,
}

#[derive(Debug, Error)]
#[error("SMS gateway error: {0}")]
pub struct GatewayError(pub String);

/// Something that delivers SMS.
pub trait SmsGateway: Send + Sync {
    fn send(&self, mobile: &str, body: &str, now: NaiveDateTime) -> Result<Receipt, GatewayError>;
}

/// The demo gateway: writes each message to the log and reports it delivered at once.
#[derive(Debug, Default)]
pub struct LogGateway {
    sent: Mutex<Vec<(String, String)>>,
}

impl LogGateway {
    /// Messages "sent" so far, as (mobile, body).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().expect("log gateway lock").clone()
    }
}

impl SmsGateway for LogGateway {
    fn send(&self, mobile: &str, body: &str, now: NaiveDateTime) -> Result<Receipt, GatewayError> {
        tracing::info!(target: "feegate::sms", %mobile, %body, "SMS");
        self.sent
            .lock()
            .expect("log gateway lock")
            .push((mobile.to_string(), body.to_string()));
        Ok(Receipt::Delivered(now))
    }
}

/// SMS quiet hours: nothing is sent from 22:00 to 08:00 local time (the message waits).
pub const QUIET_HOURS: DailyWindow = DailyWindow {
    from_min: 22 * 60,
    to_min: 8 * 60,
};

/// Result of one outbox pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxReport {
    pub sent: u32,
    pub delivered: u32,
    pub failed: u32,
    /// Messages left waiting because it is quiet hours.
    pub waiting: u32,
}

/// Sends queued messages (oldest first) unless it is quiet hours.
pub async fn deliver(
    db: &Db,
    gateway: &dyn SmsGateway,
    now: NaiveDateTime,
) -> Result<OutboxReport, DbError> {
    let mut report = OutboxReport::default();
    let rows = sqlx::query("SELECT message_id, mobile, body FROM sms_outbox WHERE status = 'queued' ORDER BY message_id")
        .fetch_all(&db.pool)
        .await?;
    if QUIET_HOURS.contains(now.hour() * 60 + now.minute()) {
        report.waiting = rows.len() as u32;
        return Ok(report);
    }
    for r in rows {
        let (id, mobile, body): (i64, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        match gateway.send(&mobile, &body, now) {
            Ok(receipt) => {
                let delivered_at = match receipt {
                    Receipt::Delivered(at) => Some(ts(at)),
                    Receipt::Accepted => None,
                };
                let status = if delivered_at.is_some() {
                    "delivered"
                } else {
                    "sent"
                };
                sqlx::query("UPDATE sms_outbox SET status = $2, attempts = attempts + 1, sent_at = $3, delivered_at = $4 WHERE message_id = $1")
                    .bind(id)
                    .bind(status)
                    .bind(ts(now))
                    .bind(&delivered_at)
                    .execute(&db.pool)
                    .await?;
                report.sent += 1;
                report.delivered += u32::from(delivered_at.is_some());
            }
            Err(e) => {
                tracing::warn!(message_id = id, error = %e, "SMS not sent; will retry");
                sqlx::query("UPDATE sms_outbox SET attempts = attempts + 1 WHERE message_id = $1")
                    .bind(id)
                    .execute(&db.pool)
                    .await?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}
