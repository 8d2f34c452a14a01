//! Payments and reconnection (复电).
//!
//! A payment is applied exactly once per (channel, channel transaction id): the
//! `payments` row is unique on that pair and its ledger entry's idempotency key is
//! `payment:<channel>:<txn>`. A payment may first arrive "in flight" (a bank transfer
//! announced but not yet settled): while it is, the safety floor refuses any trip.
//!
//! When a payment lifts a disconnected account to its reconnect line, reconnection
//! starts at once: the cutoff component picks the mode (close-allowed, direct close,
//! or call first) and the relay command is created in the same step.

use crate::accountview::AccountFacts;
use crate::config::RelayConfig;
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ds, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::ledger::{self, EntryKind, LedgerError, Posting};
use crate::money::Fen;
use crate::policy::bindings::{ReconnectionInput, ReconnectionMode};
use crate::policy::convert::{fen_to_wit, time_to_wit};
use crate::policy::{PolicyEngine, PolicyKind};
use chrono::NaiveDateTime;
use feegate_meter::registers::RelayCommand;
use sqlx::Row;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PaymentError {
    #[error("amount must be a positive number of fen, got {0}")]
    NonPositive(Fen),
    #[error("account {0} does not exist; check the account number on the payment")]
    UnknownAccount(String),
    #[error(
        "payment {channel}/{txn} was announced for account {stored}, now for {given}; refused, needs reconciliation"
    )]
    AccountMismatch {
        channel: String,
        txn: String,
        stored: String,
        given: String,
    },
    #[error(
        "payment {channel}/{txn} was announced as {stored} fen, now as {given} fen; refused, needs reconciliation"
    )]
    AmountMismatch {
        channel: String,
        txn: String,
        stored: Fen,
        given: Fen,
    },
    #[error(
        "reversal {channel}/{txn} refers to payment {original}, which is not applied for account {account}; retry once the payment is in, or reconcile"
    )]
    UnknownOriginal {
        channel: String,
        txn: String,
        original: String,
        account: String,
    },
    /// The original payment exists, but was applied to another account than the one the
    /// reversal names: the channel's data is wrong, and retrying cannot fix it.
    #[error(
        "reversal {channel}/{txn} names account {account}, but payment {original} was applied to another account; refused for good, needs reconciliation"
    )]
    OriginalOfAnotherAccount {
        channel: String,
        txn: String,
        original: String,
        account: String,
    },
    #[error(
        "reversal {channel}/{txn} of {amount} fen would take back more than payment {original} brought in ({paid} fen, {already} fen reversed before); refused, needs reconciliation"
    )]
    ReversalTooLarge {
        channel: String,
        txn: String,
        original: String,
        amount: Fen,
        paid: Fen,
        already: Fen,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A payment as a channel reports it.
#[derive(Debug, Clone)]
pub struct PaymentNotice<'a> {
    /// bank-transfer | online-banking | kiosk | alipay | app | business-hall
    pub channel: &'a str,
    pub channel_txn_id: &'a str,
    pub account_id: &'a str,
    pub amount_fen: Fen,
}

/// Result of applying a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Posted now; the balance after it.
    Posted { balance_after_fen: Fen },
    /// This (channel, txn) was applied before; nothing moved.
    AlreadyApplied,
    /// Recorded as in flight; not on the balance yet.
    InFlight,
}

async fn upsert_payment(
    conn: &mut sqlx::AnyConnection,
    p: &PaymentNotice<'_>,
    now: NaiveDateTime,
) -> Result<String, PaymentError> {
    if p.amount_fen <= 0 {
        return Err(PaymentError::NonPositive(p.amount_fen));
    }
    sqlx::query(
        "INSERT INTO payments (channel, channel_txn_id, account_id, amount_fen, status, initiated_at)
         SELECT $1, $2, $3, $4, 'in-flight', $5 WHERE EXISTS (SELECT 1 FROM accounts WHERE account_id = $3)
         ON CONFLICT (channel, channel_txn_id) DO NOTHING",
    )
    .bind(p.channel)
    .bind(p.channel_txn_id)
    .bind(p.account_id)
    .bind(p.amount_fen)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query("SELECT account_id, amount_fen, status FROM payments WHERE channel = $1 AND channel_txn_id = $2")
        .bind(p.channel)
        .bind(p.channel_txn_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| PaymentError::UnknownAccount(p.account_id.to_string()))?;
    let (stored_account, stored_amount, status): (String, Fen, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if stored_account != p.account_id {
        return Err(PaymentError::AccountMismatch {
            channel: p.channel.into(),
            txn: p.channel_txn_id.into(),
            stored: stored_account,
            given: p.account_id.into(),
        });
    }
    if stored_amount != p.amount_fen {
        return Err(PaymentError::AmountMismatch {
            channel: p.channel.into(),
            txn: p.channel_txn_id.into(),
            stored: stored_amount,
            given: p.amount_fen,
        });
    }
    Ok(status)
}

/// Records a payment the channel announced but has not settled yet (idempotent).
pub async fn announce(
    db: &Db,
    p: &PaymentNotice<'_>,
    now: NaiveDateTime,
) -> Result<Applied, PaymentError> {
    let mut tx = db.begin_write().await?;
    let status = upsert_payment(&mut tx, p, now).await?;
    tx.commit().await?;
    Ok(if status == "applied" {
        Applied::AlreadyApplied
    } else {
        Applied::InFlight
    })
}

/// Applies a settled payment exactly once: ledger entry, balance, payment status, the
/// prepaying-habit counters and arrears, in one transaction. `kind` is `Prepayment`
/// for the initial prepayment that activates an account (it does not count as a
/// top-up), else `Payment`.
pub async fn apply(
    db: &Db,
    p: &PaymentNotice<'_>,
    kind: EntryKind,
    now: NaiveDateTime,
) -> Result<Applied, PaymentError> {
    let mut tx = db.begin_write().await?;
    let applied = apply_in(&mut tx, p, kind, now).await?;
    tx.commit().await?;
    Ok(applied)
}

/// [`apply`] inside the caller's transaction (`conn` must be in one): the channel
/// inbox applies a batch of payments under one commit. On error the caller rolls back.
pub async fn apply_in(
    tx: &mut sqlx::AnyConnection,
    p: &PaymentNotice<'_>,
    kind: EntryKind,
    now: NaiveDateTime,
) -> Result<Applied, PaymentError> {
    let status = upsert_payment(&mut *tx, p, now).await?;
    if status == "applied" {
        return Ok(Applied::AlreadyApplied);
    }
    let before: Fen = sqlx::query("SELECT balance_fen FROM accounts WHERE account_id = $1")
        .bind(p.account_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let key = format!("payment:{}:{}", p.channel, p.channel_txn_id);
    let posted = ledger::post(
        &mut *tx,
        &Posting {
            account_id: p.account_id,
            kind,
            amount_fen: p.amount_fen,
            idempotency_key: &key,
            business_date: &ds(now.date()),
            posted_at: &ts(now),
            reference: &format!("{}:{}", p.channel, p.channel_txn_id),
        },
    )
    .await?;
    let balance_after_fen = match posted {
        ledger::PostOutcome::Posted {
            balance_after_fen, ..
        } => balance_after_fen,
        ledger::PostOutcome::AlreadyPosted { .. } => before,
    };
    sqlx::query("UPDATE payments SET status = 'applied', applied_at = $3, entry_id = $4 WHERE channel = $1 AND channel_txn_id = $2")
        .bind(p.channel)
        .bind(p.channel_txn_id)
        .bind(ts(now))
        .bind(posted.entry_id())
        .execute(&mut *tx)
        .await?;
    if kind == EntryKind::Prepayment {
        sqlx::query("UPDATE accounts SET status = 'active' WHERE account_id = $1 AND status = 'pending-prepayment'").bind(p.account_id).execute(&mut *tx).await?;
    } else {
        // A top-up made before the balance fell below zero extends the prepaying
        // habit; one made in arrears resets it.
        let on_time = before >= 0;
        sqlx::query(
            "UPDATE accounts SET topups_total = topups_total + 1,
                    ontime_topups_in_a_row = CASE WHEN $2 = 1 THEN ontime_topups_in_a_row + 1 ELSE 0 END
             WHERE account_id = $1",
        )
        .bind(p.account_id)
        .bind(i64::from(on_time))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE accounts SET arrears_since = NULL WHERE account_id = $1 AND balance_fen >= 0",
    )
    .bind(p.account_id)
    .execute(&mut *tx)
    .await?;
    Ok(Applied::Posted { balance_after_fen })
}

/// A reversal or refund of an applied payment, as its channel reports it. It is a new
/// ledger entry (kind `reversal`, negative) referencing the original; the payment and
/// its entry are never edited.
#[derive(Debug, Clone)]
pub struct ReversalNotice<'a> {
    pub channel: &'a str,
    /// The reversal's own transaction id at the channel.
    pub channel_txn_id: &'a str,
    /// The payment it reverses (same channel).
    pub original_txn_id: &'a str,
    pub account_id: &'a str,
    /// Fen taken back, positive; at most what the payment brought in, less earlier reversals.
    pub amount_fen: Fen,
}

/// Posts a reversal exactly once per (channel, reversal txn), inside the caller's
/// transaction. Errors: [`PaymentError::UnknownOriginal`] when the payment is not
/// applied (yet: out-of-order delivery), [`PaymentError::OriginalOfAnotherAccount`] when
/// it was applied to another account (for good), [`PaymentError::ReversalTooLarge`].
pub async fn reverse_in(
    tx: &mut sqlx::AnyConnection,
    r: &ReversalNotice<'_>,
    now: NaiveDateTime,
) -> Result<Applied, PaymentError> {
    if r.amount_fen <= 0 {
        return Err(PaymentError::NonPositive(r.amount_fen));
    }
    let key = format!("reversal:{}:{}", r.channel, r.channel_txn_id);
    if sqlx::query("SELECT 1 FROM ledger_entries WHERE idempotency_key = $1")
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Ok(Applied::AlreadyApplied);
    }
    let paid: Option<Fen> = sqlx::query(
        "SELECT amount_fen FROM payments WHERE channel = $1 AND channel_txn_id = $2 AND account_id = $3 AND status = 'applied'",
    )
    .bind(r.channel)
    .bind(r.original_txn_id)
    .bind(r.account_id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|row| row.try_get(0))
    .transpose()?;
    let Some(paid) = paid else {
        let elsewhere = sqlx::query(
            "SELECT 1 FROM payments WHERE channel = $1 AND channel_txn_id = $2 AND account_id <> $3 AND status = 'applied'",
        )
        .bind(r.channel)
        .bind(r.original_txn_id)
        .bind(r.account_id)
        .fetch_optional(&mut *tx)
        .await?;
        if elsewhere.is_some() {
            return Err(PaymentError::OriginalOfAnotherAccount {
                channel: r.channel.into(),
                txn: r.channel_txn_id.into(),
                original: r.original_txn_id.into(),
                account: r.account_id.into(),
            });
        }
        return Err(PaymentError::UnknownOriginal {
            channel: r.channel.into(),
            txn: r.channel_txn_id.into(),
            original: r.original_txn_id.into(),
            account: r.account_id.into(),
        });
    };
    let reference = reversal_reference(r.channel, r.original_txn_id);
    let already: Fen = sqlx::query(
        "SELECT CAST(COALESCE(SUM(-amount_fen), 0) AS BIGINT) FROM ledger_entries WHERE kind = 'reversal' AND reference = $1",
    )
    .bind(&reference)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    if already + r.amount_fen > paid {
        return Err(PaymentError::ReversalTooLarge {
            channel: r.channel.into(),
            txn: r.channel_txn_id.into(),
            original: r.original_txn_id.into(),
            amount: r.amount_fen,
            paid,
            already,
        });
    }
    let posted = ledger::post(
        &mut *tx,
        &Posting {
            account_id: r.account_id,
            kind: EntryKind::Reversal,
            amount_fen: -r.amount_fen,
            idempotency_key: &key,
            business_date: &ds(now.date()),
            posted_at: &ts(now),
            reference: &reference,
        },
    )
    .await?;
    sqlx::query(
        "UPDATE accounts SET arrears_since = COALESCE(arrears_since, $2) WHERE account_id = $1 AND balance_fen < 0",
    )
    .bind(r.account_id)
    .bind(ds(now.date()))
    .execute(&mut *tx)
    .await?;
    Ok(match posted {
        ledger::PostOutcome::Posted {
            balance_after_fen, ..
        } => Applied::Posted { balance_after_fen },
        ledger::PostOutcome::AlreadyPosted { .. } => Applied::AlreadyApplied,
    })
}

/// The `reference` of a reversal's ledger entry: `reverses:<channel>:<original txn>`.
pub fn reversal_reference(channel: &str, original_txn_id: &str) -> String {
    format!("reverses:{channel}:{original_txn_id}")
}

/// What reconnection did for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconnection {
    /// Not disconnected, or a command is already in flight.
    NotNeeded,
    /// Still below the reconnect line.
    BelowLine,
    /// A relay command was created (mode as chosen by the policy).
    Commanded(RelayCommand),
    /// A call-first work order was opened, or one is open already (then nothing new is
    /// decided: a person is to call and reconnect, and another payment meanwhile must not
    /// open a second order).
    CallFirst,
    /// The cutoff component failed: the account is held and a person must reconnect.
    PolicyFailed,
}

/// Starts reconnection for a disconnected account if its balance allows it.
pub async fn reconnect_if_due(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    account_id: &str,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<Reconnection, DbError> {
    let mut conn = db.pool.acquire().await?;
    let facts = AccountFacts::load(&mut conn, account_id).await?;
    if facts.relay_state != "open" {
        return Ok(Reconnection::NotNeeded);
    }
    if let Some(r) = under_way(&mut conn, account_id).await? {
        return Ok(r);
    }
    let cutoff = policies.get(PolicyKind::Cutoff);
    let hours = facts
        .disconnected_at
        .map_or(0, |t| (now - t).num_hours().max(0) as u32);
    let input = ReconnectionInput {
        account_id: account_id.to_string(),
        now: time_to_wit(now),
        balance: fen_to_wit(facts.balance_fen),
        agreement: facts.agreement(),
        hours_disconnected: hours,
        parameters: cutoff.parameters_json.clone(),
    };
    let invocation = engine.reconnection(&cutoff.component, &input);
    let mut tx = crate::db::begin_write(&mut conn).await?;
    // One reconnection decision per account at a time: the relays job's sweep and a
    // payment's reconnection at once can both get here for the same account. The
    // no-op update locks the account row (PostgreSQL; SQLite has one writer anyway),
    // so the second waits for the first to commit and then sees its command.
    sqlx::query("UPDATE accounts SET relay_state = relay_state WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
    if let Some(r) = under_way(&mut tx, account_id).await? {
        return Ok(r);
    }
    let decision_id = decision_log::record(
        &mut tx,
        &DecisionRecord {
            county,
            kind: "reconnection",
            account_id,
            business_date: &ds(now.date()),
            decided_at: &ts(now),
            component_sha256: &cutoff.component.sha256,
            input: &input,
            invocation: &invocation,
            shadow: policies.shadow(engine, PolicyKind::Cutoff),
        },
    )
    .await?;
    let result = match &invocation.outcome {
        Err(f) => {
            decision_log::hold(
                &mut tx,
                account_id,
                &ds(now.date()),
                "reconnection",
                &decision_log::hold_reason(f),
                Some(decision_id),
                &ts(now),
            )
            .await?;
            // A person reconnects: open a call-first order so the customer is not left dark.
            open_call_first(
                &mut tx,
                &facts,
                decision_id,
                now,
                "reconnection policy failed",
            )
            .await?;
            Reconnection::PolicyFailed
        }
        Ok(out) => match out.mode {
            None => Reconnection::BelowLine,
            Some(ReconnectionMode::CallFirst) => {
                open_call_first(&mut tx, &facts, decision_id, now, &out.explanation).await?;
                Reconnection::CallFirst
            }
            Some(mode) => {
                let command = if mode == ReconnectionMode::DirectClose {
                    RelayCommand::DirectClose
                } else {
                    RelayCommand::CloseAllowed
                };
                crate::relay::create(
                    &mut tx,
                    account_id,
                    &format!("decision:{decision_id}"),
                    command,
                    now,
                    relay,
                )
                .await?;
                Reconnection::Commanded(command)
            }
        },
    };
    tx.commit().await?;
    Ok(result)
}

/// A reconnection already under way for the account, which a new decision must not
/// duplicate: a relay command in flight (`NotNeeded`), or an open call-before-reconnection
/// work order, where a person is to call and reconnect (`CallFirst`; the relays job's
/// sweep skips such accounts too).
async fn under_way(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
) -> Result<Option<Reconnection>, DbError> {
    if crate::relay::has_active_command(&mut *conn, account_id).await? {
        return Ok(Some(Reconnection::NotNeeded));
    }
    let call_first = sqlx::query(
        "SELECT 1 FROM work_orders WHERE account_id = $1 AND kind = 'call-before-reconnection' AND status = 'open' LIMIT 1",
    )
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(call_first.map(|_| Reconnection::CallFirst))
}

async fn open_call_first(
    conn: &mut sqlx::AnyConnection,
    facts: &AccountFacts,
    decision_id: i64,
    now: NaiveDateTime,
    why: &str,
) -> Result<(), DbError> {
    let evidence = serde_json::json!({ "balance_yuan": crate::money::format_yuan(facts.balance_fen), "decision_id": decision_id, "why": why });
    sqlx::query(
        "INSERT INTO work_orders (kind, account_id, station_id, decision_id, dedup_key, status, evidence_json, opened_at)
         VALUES ('call-before-reconnection', $1, $2, $3, $4, 'open', $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(&facts.account_id)
    .bind(&facts.station_id)
    .bind(decision_id)
    .bind(format!("call-before-reconnection:{decision_id}"))
    .bind(evidence.to_string())
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What [`complete_call_first`] did with a call-before-reconnection work order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFirstCompletion {
    /// The order is now `done` (who, when, note recorded) and a direct-close relay
    /// command with decision key `work-order:<id>` was created; the relays job (or the
    /// caller, through [`crate::job::Host::complete_call_first`]) issues it.
    Reconnecting { command_id: i64 },
    /// No work order has that id.
    NotFound,
    /// The order is of another kind (only `call-before-reconnection` orders are
    /// completed this way; an offline follow-up is `feegate follow-up done`).
    WrongKind { kind: String },
    /// The order is not open: `done` (completed already: its close command was created
    /// then, none is created again), or `cancelled`. Nothing changed.
    NotOpen {
        status: String,
        decided_by: Option<String>,
    },
    /// The account's relay is no longer open (`relay_state`: closed or close-allowed,
    /// someone reconnected it): nothing was marked, the order stays open.
    RelayNotOpen { relay_state: String },
    /// A relay command is in flight for the account: nothing was marked, the order
    /// stays open; try again once that command has ended.
    CommandInFlight,
    /// The balance is below zero now: the customer must pay first. The order stays
    /// open and nothing is commanded.
    InArrears { balance_fen: Fen },
}

impl CallFirstCompletion {
    /// One line for a person: what happened, or why nothing did.
    pub fn message(&self, work_order_id: i64) -> String {
        match self {
            CallFirstCompletion::Reconnecting { command_id } => format!(
                "call-before-reconnection order #{work_order_id} done: direct-close relay command #{command_id} created"
            ),
            CallFirstCompletion::NotFound => format!("work order #{work_order_id} does not exist"),
            CallFirstCompletion::WrongKind { kind } => format!(
                "work order #{work_order_id} is of kind {kind}, not call-before-reconnection; nothing changed"
            ),
            CallFirstCompletion::NotOpen { status, decided_by } => match status.as_str() {
                "done" => format!(
                    "call-before-reconnection order #{work_order_id} is already done (by {}); its reconnection was commanded then, nothing new is sent",
                    decided_by.as_deref().unwrap_or("someone")
                ),
                other => format!(
                    "call-before-reconnection order #{work_order_id} is {other}, not open; nothing changed"
                ),
            },
            CallFirstCompletion::RelayNotOpen { relay_state } => format!(
                "the relay of work order #{work_order_id}'s account is {relay_state}, not open; nothing to reconnect, the order stays open"
            ),
            CallFirstCompletion::CommandInFlight => format!(
                "a relay command is in flight for work order #{work_order_id}'s account; the order stays open, try again once it has ended"
            ),
            CallFirstCompletion::InArrears { balance_fen } => format!(
                "the balance of work order #{work_order_id}'s account is {} yuan, below zero: the customer must pay first; the order stays open",
                crate::money::format_yuan(*balance_fen)
            ),
        }
    }
}

/// Completes an open call-before-reconnection work order after a person has called the
/// customer, and reconnects: the order becomes `done` (`decided_by`, `decided_at`,
/// `note`) and a direct-close relay command (decision key `work-order:<id>`) is created,
/// in one transaction. Open holds of the account at stage `reconnection` (the policy
/// failed) are released by the same person.
///
/// Refused, nothing changed: an unknown order, another kind, an order not `open` (a
/// second call answers [`CallFirstCompletion::NotOpen`] with `done`: never two
/// commands), a relay no longer open, a relay command in flight, a balance below zero
/// now (the customer must pay first; the order stays open).
///
/// The account row is locked first (PostgreSQL; SQLite has one writer), as
/// [`reconnect_if_due`] does, and the order re-read under that lock, so two
/// completions racing each other, or racing a reconnection decision, run one after the
/// other; the final update is also conditional on the order still being open.
pub async fn complete_call_first(
    db: &Db,
    work_order_id: i64,
    who: &str,
    note: &str,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<CallFirstCompletion, DbError> {
    let mut conn = db.pool.acquire().await?;
    // Reads, then writes: on SQLite the write lock from the start, so a completion from
    // another process waits for this one instead of failing with "database is locked".
    let mut tx = crate::db::begin_write(&mut conn).await?;
    let Some(row) = work_order_row(&mut tx, work_order_id).await? else {
        return Ok(CallFirstCompletion::NotFound);
    };
    let kind: String = row.try_get(0)?;
    if kind != "call-before-reconnection" {
        return Ok(CallFirstCompletion::WrongKind { kind });
    }
    let Some(account_id) = row.try_get::<Option<String>, _>(2)? else {
        return Ok(CallFirstCompletion::NotFound);
    };
    // Lock the account row, then read the order again: a completion or reconnection
    // decision that got here first has committed by now.
    sqlx::query("UPDATE accounts SET relay_state = relay_state WHERE account_id = $1")
        .bind(&account_id)
        .execute(&mut *tx)
        .await?;
    let row = work_order_row(&mut tx, work_order_id)
        .await?
        .ok_or(DbError::Sql(sqlx::Error::RowNotFound))?;
    let status: String = row.try_get(1)?;
    if status != "open" {
        return Ok(CallFirstCompletion::NotOpen {
            status,
            decided_by: row.try_get(3)?,
        });
    }
    let account =
        sqlx::query("SELECT relay_state, balance_fen FROM accounts WHERE account_id = $1")
            .bind(&account_id)
            .fetch_one(&mut *tx)
            .await?;
    let relay_state: String = account.try_get(0)?;
    let balance_fen: Fen = account.try_get(1)?;
    if relay_state != "open" {
        return Ok(CallFirstCompletion::RelayNotOpen { relay_state });
    }
    if crate::relay::has_active_command(&mut tx, &account_id).await? {
        return Ok(CallFirstCompletion::CommandInFlight);
    }
    if balance_fen < 0 {
        return Ok(CallFirstCompletion::InArrears { balance_fen });
    }
    let at = ts(now);
    let marked = sqlx::query(
        "UPDATE work_orders SET status = 'done', decided_by = $2, decided_at = $3, note = $4
         WHERE work_order_id = $1 AND status = 'open'",
    )
    .bind(work_order_id)
    .bind(who)
    .bind(&at)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    if marked.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(CallFirstCompletion::NotOpen {
            status: "not open".into(),
            decided_by: None,
        });
    }
    let key = format!("work-order:{work_order_id}");
    let command_id = match crate::relay::create(
        &mut tx,
        &account_id,
        &key,
        RelayCommand::DirectClose,
        now,
        relay,
    )
    .await?
    {
        Some(id) => id,
        // Only if an earlier completion's command survived its order being reopened
        // by hand: reuse it, never a second one.
        None => {
            sqlx::query_scalar("SELECT command_id FROM relay_commands WHERE decision_key = $1")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    decision_log::release_holds(&mut tx, &account_id, "reconnection", who, &at).await?;
    tx.commit().await?;
    Ok(CallFirstCompletion::Reconnecting { command_id })
}

/// Kind, status, account and `decided_by` of a work order.
async fn work_order_row(
    conn: &mut sqlx::AnyConnection,
    work_order_id: i64,
) -> Result<Option<sqlx::any::AnyRow>, DbError> {
    Ok(sqlx::query(
        "SELECT kind, status, account_id, decided_by FROM work_orders WHERE work_order_id = $1",
    )
    .bind(work_order_id)
    .fetch_optional(conn)
    .await?)
}
