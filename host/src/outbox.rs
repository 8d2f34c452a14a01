//! The SMS outbox and the notice stage.
//!
//! A notice is worded by the county's notice component, logged as a decision, measured
//! ([`crate::sms::segments`]) and put in the outbox, one row per recipient (the
//! agreement's mobile and, for warnings and disconnection notices, its second contact).
//!
//! De-duplication: one message per notice key, ever (`dedup_key`); at most one notice
//! of a kind per account, contact and day unless the county's policy set lists the kind
//! in `[messages] per_event_kinds` (`day_key`); and no warning of a kind while one of
//! that kind is still on its way (queued or sent, awaiting its receipt).
//!
//! Delivery ([`deliver`]) happens outside the county's quiet hours through an
//! [`SmsGateway`]. Each attempt is counted *before* the gateway is called, so a crash
//! loop still reaches the retry limit; failures wait `backoff_first × 2^(n−1)` (capped);
//! after `max_attempts` a message is given up and, for warnings and the
//! pre-disconnection notice, an offline follow-up work order for the meter reader
//! (抄收员线下催费) is opened. A message counts as delivered only on a delivered
//! receipt ([`apply_receipt`], or a gateway that reports delivery synchronously, as the
//! log gateway does); a failed or missing receipt starts a new delivery round.
//!
//! At-least-once: the gateway request carries the idempotency key
//! `sms-<message_id>-<round>`. A crash after the gateway accepted a message but before
//! the outbox recorded it resends it with the same key, which a gateway that honours
//! keys drops as a duplicate. A gateway that ignores the key sends it twice; that is
//! the remaining window (a duplicate warning, never a missing one).

use crate::calendar::{DailyWindow, parse_hhmm};
use crate::config::OutboxConfig;
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::money::Fen;
use crate::policy::bindings::{NoticeInput, NoticeKind};
use crate::policy::convert::{date_to_wit, fen_to_wit, to_wit};
use crate::policy::set::MessagesFile;
use crate::policy::{PolicyEngine, PolicyKind};
use crate::sms::segments;
use chrono::{NaiveDate, NaiveDateTime, Timelike};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
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
    /// One notice per key, ever: e.g. `warn:<account>:L2:<date>`.
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

/// Every notice kind, for checking policy-set `[messages]` entries by name.
pub const ALL_KINDS: [NoticeKind; 8] = [
    NoticeKind::LowBalance,
    NoticeKind::SecondAlarm,
    NoticeKind::Arrears,
    NoticeKind::DisconnectionPending,
    NoticeKind::Disconnected,
    NoticeKind::Reconnected,
    NoticeKind::PressButtonToRestore,
    NoticeKind::PaymentReceived,
];

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

/// Kinds whose failed delivery is escalated to an offline follow-up work order: the
/// warnings and the pre-disconnection notice, the ones a disconnection relies on.
const ESCALATED_KINDS: [&str; 4] = [
    "low-balance",
    "second-alarm",
    "arrears",
    "disconnection-pending",
];

/// Kinds also sent to the agreement's second contact: those that warn of or announce
/// a disconnection.
fn for_second_contact(kind: NoticeKind) -> bool {
    matches!(
        kind,
        NoticeKind::LowBalance
            | NoticeKind::SecondAlarm
            | NoticeKind::Arrears
            | NoticeKind::DisconnectionPending
            | NoticeKind::Disconnected
    )
}

/// A county's message rules, from the `[messages]` table of its policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesPolicy {
    /// No SMS leaves inside this window; queued messages wait for its end.
    pub quiet_hours: DailyWindow,
    /// `HH:MM-HH:MM`, for messages.
    pub quiet_hours_label: String,
    /// Kinds (by [`kind_name`]) sent once per event rather than once per account and day.
    pub per_event_kinds: BTreeSet<String>,
    /// Most segments a body may take ([`crate::sms::segments::measure`]); a longer
    /// body is refused and the account held at the notice stage, never cut.
    pub max_segments: usize,
}

/// Quiet hours when a policy set says nothing: 22:00–08:00, the usual Chinese carrier
/// rule for business SMS (no marketing or service messages at night).
pub const DEFAULT_QUIET_HOURS: DailyWindow = DailyWindow {
    from_min: 22 * 60,
    to_min: 8 * 60,
};

/// Segment limit when a policy set says nothing: 3 parts (201 Chinese characters),
/// more than the shipped notice component's 140-character ceiling.
pub const DEFAULT_MAX_SEGMENTS: usize = 3;

impl Default for MessagesPolicy {
    fn default() -> Self {
        Self {
            quiet_hours: DEFAULT_QUIET_HOURS,
            quiet_hours_label: "22:00-08:00".into(),
            per_event_kinds: BTreeSet::new(),
            max_segments: DEFAULT_MAX_SEGMENTS,
        }
    }
}

impl MessagesPolicy {
    /// Validates a policy set's `[messages]`.
    ///
    /// # Errors
    /// A quiet-hours time that is not `HH:MM`, an unknown notice kind in
    /// `per_event_kinds`, or `max_segments` outside 1..=10.
    pub fn from_file(f: &MessagesFile) -> Result<Self, String> {
        let mut p = Self::default();
        if let Some(w) = &f.quiet_hours {
            p.quiet_hours = DailyWindow {
                from_min: parse_hhmm(&w.from)?,
                to_min: parse_hhmm(&w.to)?,
            };
            p.quiet_hours_label = format!("{}-{}", w.from, w.to);
        }
        for k in &f.per_event_kinds {
            if !ALL_KINDS.iter().any(|&kind| kind_name(kind) == k) {
                let known: Vec<&str> = ALL_KINDS.iter().map(|&kind| kind_name(kind)).collect();
                return Err(format!(
                    "per_event_kinds: unknown notice kind {k:?}; known: {}",
                    known.join(", ")
                ));
            }
            p.per_event_kinds.insert(k.clone());
        }
        if let Some(n) = f.max_segments {
            if !(1..=10).contains(&n) {
                return Err(format!("max_segments {n} is outside 1..=10"));
            }
            p.max_segments = n;
        }
        Ok(p)
    }

    /// True inside the quiet hours.
    pub fn is_quiet(&self, t: NaiveDateTime) -> bool {
        self.quiet_hours.contains(t.hour() * 60 + t.minute())
    }
}

/// What happened to a notice request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Queued,
    /// A message with this key exists already, one of this kind went to the account
    /// today (a once-a-day kind), or a warning of this kind is still on its way.
    Duplicate,
    /// The notice component failed; the account is held at the notice stage and no SMS
    /// goes out (so no cutoff can rely on it).
    PolicyFailed,
    /// The worded body takes more segments than the county allows: refused (never
    /// cut), logged, and the account held at the notice stage.
    TooLong {
        segments: usize,
    },
}

async fn exists(conn: &mut AnyConnection, sql: &str, binds: &[&str]) -> Result<bool, DbError> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_optional(&mut *conn).await?.is_some())
}

/// Words a notice with the county's notice component and queues it, one row per
/// recipient (in `conn`'s transaction if it is in one).
pub async fn queue_notice(
    conn: &mut AnyConnection,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    req: &NoticeRequest,
    now: NaiveDateTime,
) -> Result<Queued, DbError> {
    Ok(queue_notices(
        conn,
        engine,
        county,
        policies,
        std::slice::from_ref(req),
        now,
    )
    .await?[0])
}

/// [`queue_notice`] for many requests (the warning stage's batch), with the same outcome
/// per request, in order: the de-duplication checks and the contacts are read with one
/// query each, the notice component words them on every core
/// ([`PolicyEngine::decide_all`]), the decisions are appended in one go and the outbox
/// rows inserted with multi-row statements. Requests for the same account more than
/// once are queued one by one, so each sees the one before it.
pub async fn queue_notices(
    conn: &mut AnyConnection,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    reqs: &[NoticeRequest],
    now: NaiveDateTime,
) -> Result<Vec<Queued>, DbError> {
    let mut seen = std::collections::HashSet::with_capacity(reqs.len());
    let distinct = reqs.iter().all(|r| seen.insert(r.account_id.as_str()));
    let batches: Vec<&[NoticeRequest]> = if distinct {
        vec![reqs]
    } else {
        reqs.chunks(1).collect()
    };
    let wording = Wording {
        engine,
        county,
        policies,
        now,
    };
    let mut out = Vec::with_capacity(reqs.len());
    for batch in batches {
        out.extend(queue_batch(conn, wording, batch).await?);
    }
    Ok(out)
}

/// Columns of one `sms_outbox` row as [`queue_batch`] inserts it.
const OUTBOX_COLUMNS: usize = 13;

/// What the notices of one [`queue_notices`] call share.
#[derive(Clone, Copy)]
struct Wording<'a> {
    engine: &'a PolicyEngine,
    county: &'a str,
    policies: &'a PolicySnapshot,
    now: NaiveDateTime,
}

/// The work of [`queue_notices`] for requests of distinct accounts.
async fn queue_batch(
    conn: &mut AnyConnection,
    wording: Wording<'_>,
    reqs: &[NoticeRequest],
) -> Result<Vec<Queued>, DbError> {
    let Wording {
        engine,
        county,
        policies,
        now,
    } = wording;
    use std::collections::{HashMap, HashSet};
    let once_a_day = |req: &NoticeRequest| {
        !policies
            .messages
            .per_event_kinds
            .contains(kind_name(req.kind))
    };
    let day_key = |req: &NoticeRequest, contact: &str| {
        format!(
            "{}:{}:{}:{contact}",
            req.account_id,
            kind_name(req.kind),
            crate::db::ds(req.today)
        )
    };
    let strings = |rows: Vec<sqlx::any::AnyRow>| -> Result<HashSet<String>, DbError> {
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    };
    // De-duplication (module doc): the notice key, the day key, a warning on its way.
    let keys: Vec<&str> = reqs.iter().map(|r| r.dedup_key.as_str()).collect();
    let sent_keys = strings(
        crate::db::fetch_in(
            conn,
            "SELECT dedup_key FROM sms_outbox WHERE dedup_key IN $IDS",
            &keys,
            None,
        )
        .await?,
    )?;
    let day_keys: Vec<String> = reqs
        .iter()
        .filter(|r| once_a_day(r))
        .map(|r| day_key(r, "primary"))
        .collect();
    let day_keys: Vec<&str> = day_keys.iter().map(String::as_str).collect();
    let sent_today = strings(
        crate::db::fetch_in(
            conn,
            "SELECT day_key FROM sms_outbox WHERE day_key IN $IDS",
            &day_keys,
            None,
        )
        .await?,
    )?;
    let warned: Vec<&str> = reqs
        .iter()
        .filter(|r| r.warning_level > 0)
        .map(|r| r.account_id.as_str())
        .collect();
    let on_its_way: HashSet<(String, String)> = crate::db::fetch_in(
        conn,
        "SELECT account_id, kind FROM sms_outbox WHERE account_id IN $IDS AND status IN ('queued', 'sent')",
        &warned,
        None,
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, DbError>>()?;
    let duplicate = |req: &NoticeRequest| {
        sent_keys.contains(&req.dedup_key)
            || (once_a_day(req) && sent_today.contains(&day_key(req, "primary")))
            || (req.warning_level > 0
                && on_its_way.contains(&(req.account_id.clone(), kind_name(req.kind).to_string())))
    };
    let to_word: Vec<&NoticeRequest> = reqs.iter().filter(|r| !duplicate(r)).collect();
    let ids: Vec<&str> = to_word.iter().map(|r| r.account_id.as_str()).collect();
    let mut contacts: HashMap<String, (String, String, Option<String>)> = HashMap::new();
    for r in crate::db::fetch_in(
        conn,
        "SELECT a.account_id, c.name, g.mobile, g.second_mobile FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
         JOIN agreements g ON g.agreement_id = a.agreement_id WHERE a.account_id IN $IDS",
        &ids,
        None,
    )
    .await?
    {
        contacts.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
    }
    let notice = policies.get(PolicyKind::Notice);
    let mut inputs = Vec::with_capacity(to_word.len());
    for req in &to_word {
        let (name, ..) = contacts
            .get(&req.account_id)
            .ok_or(DbError::Sql(sqlx::Error::RowNotFound))?;
        inputs.push(NoticeInput {
            kind: req.kind,
            account_id: req.account_id.clone(),
            customer_name: name.clone(),
            today: date_to_wit(req.today),
            balance: fen_to_wit(req.balance_fen),
            days_of_credit_left: req.days_of_credit_left.and_then(|d| to_wit(d).ok()),
            amount: req.amount_fen.map(fen_to_wit),
            deadline: req.deadline.clone(),
            parameters: notice.parameters_json.clone(),
        });
    }
    let invocations = engine.decide_all(&inputs, |input| engine.word(&notice.component, input));
    let decided_at = ts(now);
    let days: Vec<String> = to_word.iter().map(|r| crate::db::ds(r.today)).collect();
    let rows: Vec<decision_log::ChainedRow> = inputs
        .iter()
        .zip(&invocations)
        .zip(&days)
        .map(|((input, invocation), day)| {
            decision_log::prepare(&DecisionRecord {
                county,
                kind: "notice",
                account_id: &input.account_id,
                business_date: day,
                decided_at: &decided_at,
                component_sha256: &notice.component.sha256,
                input,
                invocation,
                shadow: None,
            })
        })
        .collect();
    let decision_ids = decision_log::append(conn, &rows).await?;
    if let Some(shadow) = policies.shadow(engine, PolicyKind::Notice) {
        for (id, row) in decision_ids.iter().zip(&rows) {
            decision_log::run_shadow(conn, shadow, *id, row).await;
        }
    }
    // A notice that cannot go out holds the account at the notice stage, logged, so no
    // cutoff can rely on it: the component failed, or its text is over the county's
    // segment limit (refused, never cut).
    let mut queued: HashMap<&str, Queued> = HashMap::with_capacity(to_word.len());
    let mut outbox = Vec::new();
    for (((req, invocation), &decision_id), day) in to_word
        .iter()
        .zip(&invocations)
        .zip(&decision_ids)
        .zip(&days)
    {
        let refusal = match &invocation.outcome {
            Err(f) => Err((decision_log::hold_reason(f), Queued::PolicyFailed)),
            Ok(out) => {
                let length = segments::measure(&out.text);
                if length.segments > policies.messages.max_segments {
                    let reason = format!(
                        "sms-too-long: the {} notice takes {} segments ({} characters, {:?}); the county allows {}. Refused, not cut: shorten the notice component's wording",
                        kind_name(req.kind),
                        length.segments,
                        length.chars,
                        length.encoding,
                        policies.messages.max_segments
                    );
                    tracing::warn!(account = %req.account_id, %reason, "SMS refused");
                    Err((
                        reason,
                        Queued::TooLong {
                            segments: length.segments,
                        },
                    ))
                } else {
                    Ok((out, length))
                }
            }
        };
        let (out, length) = match refusal {
            Ok(ok) => ok,
            Err((reason, q)) => {
                decision_log::hold(
                    conn,
                    &req.account_id,
                    day,
                    "notice",
                    &reason,
                    Some(decision_id),
                    &decided_at,
                )
                .await?;
                queued.insert(&req.account_id, q);
                continue;
            }
        };
        let (_, mobile, second) = &contacts[&req.account_id];
        let mut recipients = vec![("primary", mobile.clone(), req.dedup_key.clone())];
        if let Some(second) = second.as_ref().filter(|m| !m.trim().is_empty())
            && for_second_contact(req.kind)
        {
            recipients.push((
                "second",
                second.clone(),
                format!("{}#second", req.dedup_key),
            ));
        }
        for (contact, to, dedup_key) in recipients {
            outbox.push((
                *req,
                contact,
                to,
                dedup_key,
                out.text.clone(),
                length.segments,
                decision_id,
            ));
        }
        queued.insert(&req.account_id, Queued::Queued);
    }
    for part in outbox.chunks(crate::db::rows_per_statement(OUTBOX_COLUMNS)) {
        let sql = format!(
            "INSERT INTO sms_outbox (account_id, kind, dedup_key, notice_key, day_key, contact, mobile, body, segments,
                                     warning_level, decision_id, created_at, status)
             VALUES {} ON CONFLICT DO NOTHING",
            crate::db::Placeholders::of(conn).values(part.len(), OUTBOX_COLUMNS)
        );
        let mut q = sqlx::query(&sql);
        for (req, contact, to, dedup_key, body, segments, decision_id) in part {
            q = q
                .bind(req.account_id.as_str())
                .bind(kind_name(req.kind))
                .bind(dedup_key.as_str())
                .bind(req.dedup_key.as_str())
                .bind(once_a_day(req).then(|| day_key(req, contact)))
                .bind(*contact)
                .bind(to.as_str())
                .bind(body.as_str())
                .bind(*segments as i64)
                .bind(i64::from(req.warning_level))
                .bind(*decision_id)
                .bind(decided_at.as_str())
                .bind("queued");
        }
        q.execute(&mut *conn).await?;
    }
    Ok(reqs
        .iter()
        .map(|r| {
            queued
                .get(r.account_id.as_str())
                .copied()
                .unwrap_or(Queued::Duplicate)
        })
        .collect())
}

/// One message as handed to a gateway.
#[derive(Debug, Clone)]
pub struct OutgoingSms {
    /// `sms-<message_id>-<round>`: the same for every resend of one delivery round.
    pub idempotency_key: String,
    pub mobile: String,
    pub body: String,
    pub segments: usize,
    /// County local time of the attempt.
    pub now: NaiveDateTime,
}

/// The idempotency key of a delivery round of an outbox row.
pub fn idempotency_key(message_id: i64, round: i64) -> String {
    format!("sms-{message_id}-{round}")
}

/// The outbox row and round an idempotency key names, if it is one of ours.
pub fn parse_idempotency_key(key: &str) -> Option<(i64, i64)> {
    let (id, round) = key.strip_prefix("sms-")?.split_once('-')?;
    Some((id.parse().ok()?, round.parse().ok()?))
}

/// A gateway's answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted; the delivery receipt comes later ([`apply_receipt`]).
    Accepted { gateway_message_id: Option<String> },
    /// Delivered to the handset at this (county local) time, reported synchronously.
    Delivered {
        at: NaiveDateTime,
        gateway_message_id: Option<String>,
    },
}

/// A gateway did not take a message. Every kind is retried within the limits.
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("SMS gateway unreachable: {0}")]
    Unreachable(String),
    #[error("SMS gateway did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("SMS gateway answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("SMS gateway answer not understood: {0}")]
    BadAnswer(String),
}

/// A boxed future, so gateways can live behind `dyn SmsGateway`.
pub type GatewayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SendOutcome, GatewayError>> + Send + 'a>>;

/// Something that delivers SMS.
pub trait SmsGateway: Send + Sync {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> GatewayFuture<'a>;
}

/// The demo gateway: writes each message to the log and reports it delivered at once
/// (a synchronous delivery receipt).
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
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> GatewayFuture<'a> {
        tracing::info!(target: "feegate::sms", mobile = %sms.mobile, body = %sms.body, key = %sms.idempotency_key, "SMS");
        self.sent
            .lock()
            .expect("log gateway lock")
            .push((sms.mobile.clone(), sms.body.clone()));
        Box::pin(std::future::ready(Ok(SendOutcome::Delivered {
            at: sms.now,
            gateway_message_id: None,
        })))
    }
}

/// Result of one outbox pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxReport {
    /// Messages the gateway took (accepted or delivered).
    pub sent: u32,
    /// Of those, reported delivered at once.
    pub delivered: u32,
    /// Attempts that failed (gateway down, slow, an error); retried later.
    pub failed: u32,
    /// Messages given up after `max_attempts`.
    pub given_up: u32,
    /// Offline follow-up work orders opened for undelivered warnings.
    pub escalated: u32,
    /// Sent messages whose receipt did not come within the receipt timeout.
    pub receipts_overdue: u32,
    /// Messages due but left waiting because it is quiet hours.
    pub waiting: u32,
}

/// Ends a failed delivery round of message `id`: a new round after the backoff, or —
/// when `permanent` or the attempts are used up — gives the message up.
async fn round_failed(
    conn: &mut AnyConnection,
    id: i64,
    reason: &str,
    permanent: bool,
    cfg: &OutboxConfig,
    now: NaiveDateTime,
    report: &mut OutboxReport,
) -> Result<(), DbError> {
    let attempts: i64 = sqlx::query("SELECT attempts FROM sms_outbox WHERE message_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    if permanent || attempts >= i64::from(cfg.max_attempts) {
        return give_up(conn, id, reason, now, report).await;
    }
    sqlx::query(
        "UPDATE sms_outbox SET status = 'queued', send_round = send_round + 1, next_attempt_at = $2, last_error = $3
         WHERE message_id = $1",
    )
    .bind(id)
    .bind(ts(now + cfg.backoff(attempts as u32)))
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks message `id` failed for good and, for a warning or the pre-disconnection
/// notice that reached no contact of the notice, opens an offline follow-up work order
/// for the meter reader (or links the account's open one).
async fn give_up(
    conn: &mut AnyConnection,
    id: i64,
    reason: &str,
    now: NaiveDateTime,
    report: &mut OutboxReport,
) -> Result<(), DbError> {
    sqlx::query("UPDATE sms_outbox SET status = 'failed', failed_at = $2, last_error = $3 WHERE message_id = $1")
        .bind(id)
        .bind(ts(now))
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    report.given_up += 1;
    tracing::warn!(message_id = id, %reason, "SMS given up");
    let r = sqlx::query(
        "SELECT o.account_id, o.kind, o.notice_key, o.attempts, a.station_id FROM sms_outbox o
         JOIN accounts a ON a.account_id = o.account_id WHERE o.message_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let (account, kind, notice_key, attempts, station): (
        String,
        String,
        Option<String>,
        i64,
        String,
    ) = (
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
    );
    if !ESCALATED_KINDS.contains(&kind.as_str()) {
        return Ok(());
    }
    if let Some(key) = &notice_key
        && exists(
            conn,
            "SELECT 1 FROM sms_outbox WHERE notice_key = $1 AND status = 'delivered'",
            &[key.as_str()],
        )
        .await?
    {
        return Ok(()); // the other contact has it: the notice was given
    }
    let open = sqlx::query(
        "SELECT work_order_id FROM work_orders WHERE account_id = $1 AND kind = 'offline-follow-up' AND status = 'open'
         ORDER BY work_order_id LIMIT 1",
    )
    .bind(&account)
    .fetch_optional(&mut *conn)
    .await?;
    let work_order_id: i64 = match open {
        Some(r) => r.try_get(0)?,
        None => {
            let evidence = serde_json::json!({
                "reason": "sms-undelivered",
                "message_id": id,
                "notice_kind": kind,
                "attempts": attempts,
                "last_error": reason,
            });
            let r = sqlx::query(
                "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
                 VALUES ('offline-follow-up', $1, $2, $3, 'open', $4, $5) RETURNING work_order_id",
            )
            .bind(&account)
            .bind(&station)
            .bind(format!("sms-undelivered:{id}"))
            .bind(evidence.to_string())
            .bind(ts(now))
            .fetch_one(&mut *conn)
            .await?;
            report.escalated += 1;
            r.try_get(0)?
        }
    };
    sqlx::query("UPDATE sms_outbox SET follow_up_work_order_id = $2 WHERE message_id = $1")
        .bind(id)
        .bind(work_order_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Delivers the county's due messages (oldest first) unless it is quiet hours; first
/// turns sent messages whose receipt is overdue into new rounds.
pub async fn deliver(
    db: &Db,
    gateway: &dyn SmsGateway,
    county: &str,
    messages: &MessagesPolicy,
    cfg: &OutboxConfig,
    now: NaiveDateTime,
) -> Result<OutboxReport, DbError> {
    let mut report = OutboxReport::default();
    let overdue: Vec<i64> = sqlx::query(
        "SELECT o.message_id FROM sms_outbox o JOIN accounts a ON a.account_id = o.account_id
         WHERE a.county = $1 AND o.status = 'sent' AND o.last_attempt_at <= $2 ORDER BY o.message_id",
    )
    .bind(county)
    .bind(ts(now - cfg.receipt_timeout))
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for id in overdue {
        let mut tx = db.begin_write().await?;
        let reason = format!(
            "no delivery receipt within {} h",
            cfg.receipt_timeout.num_hours()
        );
        round_failed(&mut tx, id, &reason, false, cfg, now, &mut report).await?;
        tx.commit().await?;
        report.receipts_overdue += 1;
    }
    let rows = sqlx::query(
        "SELECT o.message_id, o.mobile, o.body, o.segments, o.send_round, o.attempts FROM sms_outbox o
         JOIN accounts a ON a.account_id = o.account_id
         WHERE a.county = $1 AND o.status = 'queued' AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $2)
         ORDER BY o.message_id",
    )
    .bind(county)
    .bind(ts(now))
    .fetch_all(&db.pool)
    .await?;
    if messages.is_quiet(now) {
        report.waiting = rows.len() as u32;
        return Ok(report);
    }
    for r in rows {
        let (id, mobile, body, segments, round, attempts): (i64, String, String, i64, i64, i64) = (
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
        );
        let attempts = attempts + 1;
        // Counted before the call: a crash after it still uses up an attempt, and the
        // resend waits for the backoff.
        let claimed = sqlx::query(
            "UPDATE sms_outbox SET attempts = $2, last_attempt_at = $3, next_attempt_at = $4
             WHERE message_id = $1 AND status = 'queued' AND send_round = $5",
        )
        .bind(id)
        .bind(attempts)
        .bind(ts(now))
        .bind(ts(now + cfg.backoff(attempts as u32)))
        .bind(round)
        .execute(&db.pool)
        .await?;
        if claimed.rows_affected() == 0 {
            continue;
        }
        let sms = OutgoingSms {
            idempotency_key: idempotency_key(id, round),
            mobile,
            body,
            segments: segments as usize,
            now,
        };
        match gateway.send(&sms).await {
            Ok(SendOutcome::Accepted { gateway_message_id }) => {
                // A receipt may have come in before this answer: only a row still in
                // this round and queued becomes "sent".
                sqlx::query(
                    "UPDATE sms_outbox SET status = 'sent', sent_at = $2, gateway_message_id = $3, last_error = NULL
                     WHERE message_id = $1 AND status = 'queued' AND send_round = $4",
                )
                .bind(id)
                .bind(ts(now))
                .bind(gateway_message_id)
                .bind(round)
                .execute(&db.pool)
                .await?;
                report.sent += 1;
            }
            Ok(SendOutcome::Delivered {
                at,
                gateway_message_id,
            }) => {
                sqlx::query(
                    "UPDATE sms_outbox SET status = 'delivered', sent_at = $2, delivered_at = $3,
                            gateway_message_id = $4, last_error = NULL
                     WHERE message_id = $1 AND status IN ('queued', 'sent')",
                )
                .bind(id)
                .bind(ts(now))
                .bind(ts(at))
                .bind(gateway_message_id)
                .execute(&db.pool)
                .await?;
                report.sent += 1;
                report.delivered += 1;
            }
            Err(e) => {
                report.failed += 1;
                let reason = e.to_string();
                tracing::warn!(message_id = id, error = %reason, attempts, "SMS not sent");
                let mut tx = db.begin_write().await?;
                if attempts >= i64::from(cfg.max_attempts) {
                    give_up(&mut tx, id, &reason, now, &mut report).await?;
                } else {
                    sqlx::query("UPDATE sms_outbox SET last_error = $2 WHERE message_id = $1")
                        .bind(id)
                        .bind(&reason)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
    }
    Ok(report)
}

/// What a gateway says happened to a message, posted to the receipts endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptStatus {
    /// Delivered to the handset.
    Delivered,
    /// Not delivered (handset off, network error): retried in a new round.
    Failed,
    /// The carrier gave up within the message's validity period: retried.
    Expired,
    /// Refused for good (no such number, barred): given up and escalated at once.
    Rejected,
}

/// A delivery receipt, as the HTTP gateway posts it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct DeliveryReceipt {
    /// The key Feegate sent with the message: `sms-<message_id>-<round>`.
    pub idempotency_key: String,
    pub status: ReceiptStatus,
    #[serde(default)]
    pub gateway_message_id: Option<String>,
    /// The carrier's error code, for failed, expired and rejected.
    #[serde(default)]
    pub error_code: Option<String>,
    /// The gateway's own time of the event, kept as sent (not trusted for the floor).
    #[serde(default)]
    pub reported_at: Option<String>,
}

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptOutcome {
    /// It changed the message's state.
    Applied,
    /// The same receipt again, or a second "delivered": nothing changed.
    Duplicate,
    /// A failure for an earlier round, or after the message was delivered: nothing
    /// changed (out of order).
    Stale,
    /// The key names no outbox row: recorded, nothing changed.
    UnknownMessage,
}

impl ReceiptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::UnknownMessage => "unknown-message",
        }
    }
}

fn receipt_status_name(s: &ReceiptStatus) -> &'static str {
    match s {
        ReceiptStatus::Delivered => "delivered",
        ReceiptStatus::Failed => "failed",
        ReceiptStatus::Expired => "expired",
        ReceiptStatus::Rejected => "rejected",
    }
}

/// Applies an authenticated delivery receipt (the caller checked its signature) and
/// records it in `sms_receipts`, in one transaction.
///
/// A delivered receipt of any round marks the message delivered at `now` (the time it
/// arrived, county local: never earlier than the real delivery, so the floor's notice
/// lead time is never shortened by a gateway's clock). A failed or expired receipt of
/// the current round starts a new round after the backoff, or gives the message up
/// after `max_attempts`; a rejected one gives it up at once. Duplicates and receipts
/// out of order change nothing.
pub async fn apply_receipt(
    db: &Db,
    receipt: &DeliveryReceipt,
    cfg: &OutboxConfig,
    now: NaiveDateTime,
) -> Result<ReceiptOutcome, DbError> {
    let mut tx = db.begin_write().await?;
    let status = receipt_status_name(&receipt.status);
    let parsed = parse_idempotency_key(&receipt.idempotency_key);
    let row = match parsed {
        Some((id, _)) => {
            sqlx::query("SELECT status, send_round FROM sms_outbox WHERE message_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| {
                    Ok::<_, sqlx::Error>((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))
                })
                .transpose()?
        }
        None => None,
    };
    let seen = exists(
        &mut tx,
        "SELECT 1 FROM sms_receipts WHERE idempotency_key = $1 AND status = $2",
        &[receipt.idempotency_key.as_str(), status],
    )
    .await?;
    let mut report = OutboxReport::default();
    let outcome = match (parsed, row) {
        (Some((id, round)), Some((current, current_round))) => {
            if seen || current == "delivered" {
                if receipt.status == ReceiptStatus::Delivered || seen {
                    ReceiptOutcome::Duplicate
                } else {
                    ReceiptOutcome::Stale
                }
            } else if receipt.status == ReceiptStatus::Delivered {
                sqlx::query(
                    "UPDATE sms_outbox SET status = 'delivered', delivered_at = $2,
                            gateway_message_id = COALESCE($3, gateway_message_id)
                     WHERE message_id = $1",
                )
                .bind(id)
                .bind(ts(now))
                .bind(&receipt.gateway_message_id)
                .execute(&mut *tx)
                .await?;
                ReceiptOutcome::Applied
            } else if round != current_round || current == "failed" {
                ReceiptOutcome::Stale
            } else {
                let reason = format!(
                    "delivery receipt: {status}{}",
                    receipt
                        .error_code
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                );
                let permanent = receipt.status == ReceiptStatus::Rejected;
                round_failed(&mut tx, id, &reason, permanent, cfg, now, &mut report).await?;
                ReceiptOutcome::Applied
            }
        }
        _ => ReceiptOutcome::UnknownMessage,
    };
    sqlx::query(
        "INSERT INTO sms_receipts (idempotency_key, message_id, send_round, gateway_message_id, status, error_code,
                                   reported_at, received_at, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&receipt.idempotency_key)
    .bind(parsed.map(|p| p.0).filter(|_| outcome != ReceiptOutcome::UnknownMessage))
    .bind(parsed.map(|p| p.1))
    .bind(&receipt.gateway_message_id)
    .bind(status)
    .bind(&receipt.error_code)
    .bind(&receipt.reported_at)
    .bind(ts(now))
    .bind(outcome.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}
