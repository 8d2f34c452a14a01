//! The payment inbox: notifications are committed before they are acknowledged, then
//! applied; a single writer task does both for a batch of notifications at a time
//! (group commit), because SQLite has one writer and a commit per request would cap
//! throughput at the disk's sync rate.
//!
//! Per batch: transaction 1 records each notification in `payment_inbox` (or finds the
//! earlier copy of a retry); commit; transaction 2 applies each recorded one to the
//! ledger under its own savepoint (a refused one is marked `rejected` with its code,
//! the others go through); commit; answer every sender. A crash after the first commit
//! leaves rows `received`: [`recover`] applies them on restart, exactly once, since
//! [`crate::payment::apply_in`] is idempotent per (channel, txn).

use super::reconnect::Reconnector;
use super::{Answer, Instruction, Notification, ResultCode};
use crate::clock::Clock;
use crate::db::{Db, ts};
use crate::ledger::EntryKind;
use crate::money::{Fen, format_yuan};
use crate::payment::{self, Applied, PaymentError, PaymentNotice, ReversalNotice};
use sqlx::{Acquire, AnyConnection, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Most notifications applied under one commit.
pub const MAX_BATCH: usize = 256;

struct Job {
    n: Notification,
    accepted: Instant,
    reply: oneshot::Sender<Answer>,
}

/// Test hooks: failure points to show crash safety.
#[derive(Debug, Default)]
pub struct FailurePoints {
    /// Stop the writer right after the inbox rows are committed, before they are
    /// applied, as if the process died there. Nothing is acknowledged.
    pub crash_after_inbox: AtomicBool,
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    sender: mpsc::Sender<Job>,
}

/// Everything the writer needs.
pub struct InboxContext {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    /// Reconnects disconnected accounts a payment lifts; `None` leaves it to the daily job.
    pub reconnector: Option<Reconnector>,
    /// Auto-debit settings (for `debit-failed` results).
    pub auto_debit: Option<super::config::AutoDebitConfig>,
    pub failure_points: Arc<FailurePoints>,
}

impl Inbox {
    /// Starts `writers` writer tasks sharing one queue. SQLite has one writer whatever
    /// we do: use 1. PostgreSQL takes several (each batch locks accounts in account
    /// order, so two batches cannot deadlock on each other).
    pub fn start(ctx: InboxContext, writers: usize) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let ctx = Arc::new(ctx);
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(ctx.clone(), receiver.clone()));
        }
        Self { sender }
    }

    /// Records and applies `n`; the answer for the channel.
    pub async fn submit(&self, n: Notification, accepted: Instant) -> Answer {
        let txn = n.txn_id.clone();
        let (reply, answer) = oneshot::channel();
        if self.sender.send(Job { n, accepted, reply }).await.is_err() {
            return unavailable(&txn);
        }
        answer.await.unwrap_or_else(|_| unavailable(&txn))
    }
}

fn unavailable(txn: &str) -> Answer {
    Answer::new(
        ResultCode::Unavailable,
        Some(txn),
        "not recorded or not confirmed; send it again (it will be applied once)",
    )
}

async fn writer(ctx: Arc<InboxContext>, receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        jobs.clear();
        if receiver.lock().await.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let jobs = std::mem::take(&mut jobs);
        match process(&ctx, &jobs).await {
            Ok(Some(answers)) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Ok(None) => {
                // Simulated crash: drop every reply, stop taking work.
                tracing::error!("inbox writer stopped at the crash_after_inbox failure point");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "payment inbox batch failed; channels will retry");
                for job in jobs {
                    let _ = job.reply.send(unavailable(&job.n.txn_id));
                }
            }
        }
    }
}

/// A recorded notification waiting to be applied.
#[derive(Debug, Clone)]
struct Pending {
    inbox_id: i64,
    n: Notification,
}

enum Step1 {
    Done(Answer),
    Apply(Pending),
}

async fn process(ctx: &InboxContext, jobs: &[Job]) -> Result<Option<Vec<Answer>>, sqlx::Error> {
    let now = ctx.clock.now();
    let mut conn = ctx.db.pool.acquire().await?;
    let mut tx = crate::db::begin_write(&mut conn).await?;
    // (channel, txn) order: concurrent batches take the inbox's unique-key locks in the same order.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        (&jobs[a].n.channel, &jobs[a].n.txn_id).cmp(&(&jobs[b].n.channel, &jobs[b].n.txn_id))
    });
    let mut steps: Vec<Option<Step1>> = (0..jobs.len()).map(|_| None).collect();
    for i in order {
        steps[i] = Some(record(&mut tx, &jobs[i].n, now, ctx.auto_debit.as_ref()).await?);
    }
    let steps: Vec<Step1> = steps.into_iter().map(|s| s.expect("recorded")).collect();
    tx.commit().await?;
    if ctx.failure_points.crash_after_inbox.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let pending: Vec<Pending> = steps
        .iter()
        .filter_map(|s| match s {
            Step1::Apply(p) => Some(p.clone()),
            Step1::Done(_) => None,
        })
        .collect();
    let applied = apply_pending(&mut conn, &pending, now).await?;
    let mut applied = applied.into_iter();
    let mut answers = Vec::with_capacity(jobs.len());
    for (job, step) in jobs.iter().zip(steps) {
        answers.push(match step {
            Step1::Done(a) => a,
            Step1::Apply(_) => {
                let (answer, reconnect) = applied.next().expect("one result per pending");
                if reconnect && let Some(r) = &ctx.reconnector {
                    r.request(&job.n.account_id, job.accepted);
                }
                answer
            }
        });
    }
    Ok(Some(answers))
}

/// Transaction 1 for one notification: record it, or find its earlier copy.
async fn record(
    conn: &mut AnyConnection,
    n: &Notification,
    now: chrono::NaiveDateTime,
    auto_debit: Option<&super::config::AutoDebitConfig>,
) -> Result<Step1, sqlx::Error> {
    let refuse = |code, msg: String| {
        tracing::warn!(channel = %n.channel, txn = %n.txn_id, code = ResultCode::as_str(code), %msg, "notification refused");
        Ok(Step1::Done(Answer::new(code, Some(&n.txn_id), msg)))
    };
    let (kind, original, debit) = match &n.instruction {
        Instruction::DebitFailed {
            debit_request_id,
            reason,
        } => {
            let found = crate::autodebit::record_failure(
                conn,
                &n.channel,
                debit_request_id,
                &n.account_id,
                reason,
                now,
                auto_debit,
            )
            .await?;
            return if found {
                Ok(Step1::Done(Answer::new(
                    ResultCode::Recorded,
                    Some(&n.txn_id),
                    "auto-debit failure recorded",
                )))
            } else {
                refuse(
                    ResultCode::UnknownDebit,
                    format!(
                        "no auto-debit request {debit_request_id} in flight for account {}",
                        n.account_id
                    ),
                )
            };
        }
        Instruction::Payment { debit_request_id } => ("payment", None, debit_request_id.as_deref()),
        Instruction::Reversal { original_txn_id } => {
            ("reversal", Some(original_txn_id.as_str()), None)
        }
    };
    if sqlx::query("SELECT 1 FROM accounts WHERE account_id = $1")
        .bind(&n.account_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_none()
    {
        return refuse(
            ResultCode::UnknownAccount,
            format!(
                "account {} does not exist; check the account number",
                n.account_id
            ),
        );
    }
    let inserted = sqlx::query(
        "INSERT INTO payment_inbox (channel, channel_txn_id, kind, account_id, amount_fen, original_txn_id, debit_request_id, status, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $8)
         ON CONFLICT (channel, channel_txn_id) DO NOTHING RETURNING inbox_id",
    )
    .bind(&n.channel)
    .bind(&n.txn_id)
    .bind(kind)
    .bind(&n.account_id)
    .bind(n.amount_fen)
    .bind(original)
    .bind(debit)
    .bind(ts(now))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Step1::Apply(Pending {
            inbox_id: row.try_get(0)?,
            n: n.clone(),
        }));
    }
    let row = sqlx::query(
        "SELECT inbox_id, kind, account_id, amount_fen, original_txn_id, status, result_code FROM payment_inbox WHERE channel = $1 AND channel_txn_id = $2",
    )
    .bind(&n.channel)
    .bind(&n.txn_id)
    .fetch_one(&mut *conn)
    .await?;
    let stored_kind: String = row.try_get(1)?;
    let stored_account: String = row.try_get(2)?;
    let stored_amount: Fen = row.try_get(3)?;
    let stored_original: Option<String> = row.try_get(4)?;
    if stored_kind != kind
        || stored_account != n.account_id
        || stored_amount != n.amount_fen
        || stored_original.as_deref() != original
    {
        return refuse(
            ResultCode::Conflict,
            format!(
                "transaction {} was received before as a {stored_kind} of {} yuan for account {stored_account}; now as a {kind} of {} yuan for account {}: nothing applied, left for reconciliation",
                n.txn_id,
                format_yuan(stored_amount),
                format_yuan(n.amount_fen),
                n.account_id
            ),
        );
    }
    let status: String = row.try_get(5)?;
    Ok(match status.as_str() {
        "applied" => Step1::Done(Answer::new(
            ResultCode::Duplicate,
            Some(&n.txn_id),
            "applied before; nothing moved",
        )),
        "rejected" => {
            // A refused reversal may succeed once its payment is in: try again.
            Step1::Apply(Pending {
                inbox_id: row.try_get(0)?,
                n: n.clone(),
            })
        }
        _ => Step1::Apply(Pending {
            inbox_id: row.try_get(0)?,
            n: n.clone(),
        }),
    })
}

/// Transaction 2: applies recorded notifications, each under a savepoint. Returns the
/// answer and whether the account is disconnected and got money (reconnect candidate).
async fn apply_pending(
    conn: &mut AnyConnection,
    pending: &[Pending],
    now: chrono::NaiveDateTime,
) -> Result<Vec<(Answer, bool)>, sqlx::Error> {
    let mut out = vec![None; pending.len()];
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    // Account order: concurrent batches take the account rows' locks in the same order.
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&pending[a].n, &pending[b].n);
        (&a.account_id, &a.channel, &a.txn_id).cmp(&(&b.account_id, &b.channel, &b.txn_id))
    });
    let mut tx = crate::db::begin_write(conn).await?;
    for i in order {
        let p = &pending[i];
        let mut sp = tx.begin().await?;
        let result = apply_one(&mut sp, &p.n, now).await;
        match result {
            Ok(applied) => {
                let entry_key = match &p.n.instruction {
                    Instruction::Reversal { .. } => {
                        format!("reversal:{}:{}", p.n.channel, p.n.txn_id)
                    }
                    _ => format!("payment:{}:{}", p.n.channel, p.n.txn_id),
                };
                sqlx::query(
                    "UPDATE payment_inbox SET status = 'applied', result_code = 'applied', applied_at = $2,
                            entry_id = (SELECT entry_id FROM ledger_entries WHERE idempotency_key = $3)
                     WHERE inbox_id = $1",
                )
                .bind(p.inbox_id)
                .bind(ts(now))
                .bind(&entry_key)
                .execute(&mut *sp)
                .await?;
                let mut reconnect = false;
                if let Instruction::Payment { debit_request_id } = &p.n.instruction {
                    if let Some(req) = debit_request_id {
                        crate::autodebit::record_success(&mut sp, req, &p.n.account_id, now)
                            .await?;
                    }
                    reconnect = matches!(applied, Applied::Posted { .. })
                        && sqlx::query(
                            "SELECT 1 FROM accounts WHERE account_id = $1 AND relay_state = 'open'",
                        )
                        .bind(&p.n.account_id)
                        .fetch_optional(&mut *sp)
                        .await?
                        .is_some();
                }
                sp.commit().await?;
                let mut answer = match applied {
                    Applied::Posted { .. } => {
                        Answer::new(ResultCode::Applied, Some(&p.n.txn_id), "applied")
                    }
                    _ => Answer::new(
                        ResultCode::Duplicate,
                        Some(&p.n.txn_id),
                        "applied before; nothing moved",
                    ),
                };
                if let Applied::Posted { balance_after_fen } = applied {
                    answer.balance_yuan = Some(format_yuan(balance_after_fen));
                }
                out[i] = Some((answer, reconnect));
            }
            Err(e) => {
                sp.rollback().await?;
                let code = match &e {
                    PaymentError::UnknownOriginal { .. } => ResultCode::UnknownOriginal,
                    PaymentError::OriginalOfAnotherAccount { .. } => {
                        ResultCode::OriginalAccountMismatch
                    }
                    PaymentError::ReversalTooLarge { .. } => ResultCode::ReversalTooLarge,
                    PaymentError::UnknownAccount(_) => ResultCode::UnknownAccount,
                    PaymentError::AccountMismatch { .. } | PaymentError::AmountMismatch { .. } => {
                        ResultCode::Conflict
                    }
                    PaymentError::NonPositive(_) => ResultCode::BadAmount,
                    PaymentError::Sql(_) | PaymentError::Db(_) | PaymentError::Ledger(_) => {
                        // Not the notification's fault: leave it `received` for a retry.
                        return Err(sqlx::Error::Protocol(format!(
                            "applying {}/{}: {e}",
                            p.n.channel, p.n.txn_id
                        )));
                    }
                };
                tracing::warn!(channel = %p.n.channel, txn = %p.n.txn_id, code = code.as_str(), error = %e, "notification not applied");
                sqlx::query(
                    "UPDATE payment_inbox SET status = 'rejected', result_code = $2 WHERE inbox_id = $1",
                )
                .bind(p.inbox_id)
                .bind(code.as_str())
                .execute(&mut *tx)
                .await?;
                out[i] = Some((Answer::new(code, Some(&p.n.txn_id), e.to_string()), false));
            }
        }
    }
    tx.commit().await?;
    Ok(out
        .into_iter()
        .map(|o| o.expect("every pending notification has a result"))
        .collect())
}

async fn apply_one(
    conn: &mut AnyConnection,
    n: &Notification,
    now: chrono::NaiveDateTime,
) -> Result<Applied, PaymentError> {
    match &n.instruction {
        Instruction::Payment { .. } => {
            payment::apply_in(
                conn,
                &PaymentNotice {
                    channel: &n.channel,
                    channel_txn_id: &n.txn_id,
                    account_id: &n.account_id,
                    amount_fen: n.amount_fen,
                },
                EntryKind::Payment,
                now,
            )
            .await
        }
        Instruction::Reversal { original_txn_id } => {
            payment::reverse_in(
                conn,
                &ReversalNotice {
                    channel: &n.channel,
                    channel_txn_id: &n.txn_id,
                    original_txn_id,
                    account_id: &n.account_id,
                    amount_fen: n.amount_fen,
                },
                now,
            )
            .await
        }
        Instruction::DebitFailed { .. } => unreachable!("debit-failed is recorded, not applied"),
    }
}

/// Recovery sweep: applies every notification recorded but not applied — a crash
/// between the two commits, or a batch whose second transaction failed and whose
/// channel never retried. Run at start-up before the router takes traffic
/// (`received_before` = `None`: all of them) and then periodically for rows older than
/// a minute, so it never races a writer that is about to apply them. Returns how many
/// were applied now.
pub async fn recover(
    db: &Db,
    clock: &dyn Clock,
    reconnector: Option<&Reconnector>,
    received_before: Option<chrono::NaiveDateTime>,
) -> Result<u32, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT inbox_id, channel, channel_txn_id, kind, account_id, amount_fen, original_txn_id, debit_request_id
         FROM payment_inbox WHERE status = 'received' AND received_at < $1 ORDER BY inbox_id",
    )
    // '9999…' sorts after every stored time: no limit.
    .bind(received_before.map_or_else(|| "9999-12-31 23:59:59".to_string(), ts))
    .fetch_all(&db.pool)
    .await?;
    let mut pending = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get(3)?;
        let instruction = if kind == "reversal" {
            Instruction::Reversal {
                original_txn_id: r.try_get::<Option<String>, _>(6)?.unwrap_or_default(),
            }
        } else {
            Instruction::Payment {
                debit_request_id: r.try_get(7)?,
            }
        };
        pending.push(Pending {
            inbox_id: r.try_get(0)?,
            n: Notification {
                channel: r.try_get(1)?,
                txn_id: r.try_get(2)?,
                account_id: r.try_get(4)?,
                amount_fen: r.try_get(5)?,
                instruction,
            },
        });
    }
    let mut conn = db.pool.acquire().await?;
    let mut applied = 0;
    for chunk in pending.chunks(MAX_BATCH) {
        let results = apply_pending(&mut conn, chunk, clock.now()).await?;
        for (p, (answer, reconnect)) in chunk.iter().zip(results) {
            tracing::info!(channel = %p.n.channel, txn = %p.n.txn_id, code = answer.code.as_str(), "recovered from the inbox");
            applied += u32::from(answer.code == ResultCode::Applied);
            if reconnect && let Some(r) = reconnector {
                r.request(&p.n.account_id, Instant::now());
            }
        }
    }
    Ok(applied)
}
