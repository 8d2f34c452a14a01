//! Disconnection (停电): the county's cutoff component decides per account in arrears;
//! the host enforces the rollout stage and the safety floor, opens approval work
//! orders (审批停电), and issues trips as relay commands.
//!
//! The host's rules on top of the policy:
//! - only accounts in arrears (balance < 0) with a closed relay and no command in
//!   flight are considered;
//! - in the `notify-only` stage nothing is ever tripped, whatever the policy says;
//! - `disconnect` from the policy (the county is automatic, or this customer was moved
//!   to automatic by their prepaying habit) and an approved work order both pass the
//!   [`SafetyFloor`] at the moment of the trip; a refusal is recorded in
//!   `floor_refusals` and the trip is not issued;
//! - an approval can be withdrawn until the order is executed ([`withdraw_approval`]):
//!   the order is then held, and an execution racing with the withdrawal issues
//!   nothing ([`execute_one`]).

use crate::accountview::{
    AccountFacts, arrears_notice_delivered_at, offline_follow_up_done_at, open_mobile_mismatch,
};
use crate::collection::station_rates;
use crate::config::RelayConfig;
use crate::county::{County, PolicySnapshot};
use crate::db::{Db, DbError, ds, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::floor::{FloorFacts, FloorRefusal};
use crate::policy::bindings::{CutoffAction, CutoffInput, RolloutStage as WitStage};
use crate::policy::convert::{fen_to_wit, time_to_wit};
use crate::policy::set::RolloutStage;
use crate::policy::{PolicyEngine, PolicyKind};
use chrono::{NaiveDateTime, NaiveTime};
use feegate_meter::registers::RelayCommand;
use sqlx::{AnyConnection, Row};

/// Outcome of a cutoff run: counts of accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutoffReport {
    /// Active accounts in arrears with a closed relay, no relay command in flight and
    /// no open or approved approval order.
    pub considered: u32,
    /// The policy said keep (or the county is notify-only).
    pub kept: u32,
    /// The policy said defer.
    pub deferred: u32,
    /// Approval work orders opened (at most one per arrears episode).
    pub approvals_requested: u32,
    /// Trip commands created for a policy's `disconnect`.
    pub trips_created: u32,
    /// Trips or approval requests the safety floor refused.
    pub floor_refused: u32,
    /// Accounts held because the cutoff policy failed (nobody is cut off).
    pub held: u32,
}

fn wit_stage(s: RolloutStage) -> WitStage {
    match s {
        RolloutStage::NotifyOnly => WitStage::NotifyOnly,
        RolloutStage::ApprovalGated => WitStage::ApprovalGated,
        RolloutStage::Automatic => WitStage::Automatic,
    }
}

/// When the customer was given notice of this arrears episode: the earlier of the
/// delivered arrears SMS and an offline follow-up a person recorded done. This is what
/// the cutoff policy gets as `disconnection-notice-delivered-at`.
pub async fn notice_given_at(
    conn: &mut AnyConnection,
    facts: &AccountFacts,
) -> Result<Option<NaiveDateTime>, DbError> {
    let sms = arrears_notice_delivered_at(conn, &facts.account_id, facts.arrears_since).await?;
    let visit = offline_follow_up_done_at(conn, &facts.account_id, facts.arrears_since).await?;
    Ok(match (sms, visit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Gathers the floor facts for an account at `now`, for an `automatic` trip (a policy
/// decision) or one a person approved.
pub async fn floor_facts(
    conn: &mut AnyConnection,
    county: &str,
    facts: &AccountFacts,
    now: NaiveDateTime,
    automatic: bool,
) -> Result<FloorFacts, DbError> {
    let latest = sqlx::query("SELECT MAX(reading_date) FROM readings WHERE meter_id = $1")
        .bind(&facts.meter_id)
        .fetch_one(&mut *conn)
        .await?;
    let latest_reading_at = latest
        .try_get::<Option<String>, _>(0)?
        .map(|d| crate::db::parse_ds(&d).map(|d| d.and_time(NaiveTime::MIN)))
        .transpose()?;
    let estimated = sqlx::query("SELECT 1 FROM holds WHERE account_id = $1 AND stage IN ('reading', 'settlement') AND released_at IS NULL")
        .bind(&facts.account_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let in_flight =
        sqlx::query("SELECT 1 FROM payments WHERE account_id = $1 AND status = 'in-flight'")
            .bind(&facts.account_id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    let notice = arrears_notice_delivered_at(conn, &facts.account_id, facts.arrears_since).await?;
    let follow_up = offline_follow_up_done_at(conn, &facts.account_id, facts.arrears_since).await?;
    let mismatch = open_mobile_mismatch(conn, &facts.account_id).await?;
    let rates = station_rates(conn, county, Some(&facts.station_id), now.date()).await?;
    let trips = sqlx::query(
        "SELECT COUNT(*) FROM relay_commands c JOIN accounts a ON a.account_id = c.account_id
         WHERE a.station_id = $1 AND c.command = 'trip' AND c.created_at >= $2",
    )
    .bind(&facts.station_id)
    .bind(ds(now.date()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(FloorFacts {
        now,
        keep_power: facts.keep_power,
        vulnerable: facts.vulnerable,
        latest_reading_at,
        balance_estimated: estimated,
        payment_in_flight: in_flight,
        notice_delivered_at: notice,
        follow_up_done_at: follow_up,
        automatic,
        mobile_mismatch_work_order: mismatch,
        station_read_success_rate: rates.get(&facts.station_id).and_then(|r| r.rate()),
        payment_channel_down: false,
        station_trips_today: trips.try_get::<i64, _>(0)? as u32,
    })
}

async fn record_refusal(
    conn: &mut AnyConnection,
    account_id: &str,
    source: &str,
    now: NaiveDateTime,
    refusals: &[FloorRefusal],
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO floor_refusals (account_id, source, decided_at, protected_window, refusals_json) VALUES ($1, $2, $3, $4, $5)")
        .bind(account_id)
        .bind(source)
        .bind(ts(now))
        .bind(i64::from(refusals.iter().any(FloorRefusal::is_protected_window)))
        .bind(serde_json::to_string(refusals).expect("refusals serialise"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies the floor and, if it allows, creates the trip command. Returns whether a
/// trip was created.
async fn trip_if_floor_allows(
    conn: &mut AnyConnection,
    county: &County,
    facts: &AccountFacts,
    source: &str,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<Result<bool, Vec<FloorRefusal>>, DbError> {
    let automatic = !source.starts_with("work-order:");
    let floor_facts = floor_facts(conn, &county.county, facts, now, automatic).await?;
    let refusals = county.floor.check(&floor_facts);
    if !refusals.is_empty() {
        record_refusal(conn, &facts.account_id, source, now, &refusals).await?;
        return Ok(Err(refusals));
    }
    Ok(Ok(crate::relay::create(
        conn,
        &facts.account_id,
        source,
        RelayCommand::Trip,
        now,
        relay,
    )
    .await?
    .is_some()))
}

/// Runs the cutoff component over the county's accounts in arrears.
pub async fn run(
    db: &Db,
    engine: &PolicyEngine,
    county: &County,
    policies: &PolicySnapshot,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<CutoffReport, DbError> {
    let mut report = CutoffReport::default();
    let candidates: Vec<String> = sqlx::query(
        "SELECT a.account_id FROM accounts a
         WHERE a.county = $1 AND a.status = 'active' AND a.balance_fen < 0 AND a.relay_state = 'closed'
           AND NOT EXISTS (SELECT 1 FROM relay_commands c WHERE c.account_id = a.account_id
                           AND c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer'))
           AND NOT EXISTS (SELECT 1 FROM work_orders w WHERE w.account_id = a.account_id
                           AND w.kind = 'approve-disconnection' AND w.status IN ('open', 'approved'))
         ORDER BY a.account_id",
    )
    .bind(&county.county)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let cutoff = policies.get(PolicyKind::Cutoff);
    let today = now.date();
    for account_id in candidates {
        report.considered += 1;
        let mut conn = db.pool.acquire().await?;
        let facts = AccountFacts::load(&mut conn, &account_id).await?;
        let input = CutoffInput {
            account_id: account_id.clone(),
            now: time_to_wit(now),
            calendar: county.floor.calendar().facts(today),
            balance: fen_to_wit(facts.balance_fen),
            agreement: facts.agreement(),
            days_in_arrears: facts.days_in_arrears(today),
            disconnection_notice_delivered_at: notice_given_at(&mut conn, &facts)
                .await?
                .map(time_to_wit),
            rollout_stage: wit_stage(policies.rollout_stage),
            on_time_topups_in_a_row: facts.ontime_topups_in_a_row,
            topups_total: facts.topups_total,
            parameters: cutoff.parameters_json.clone(),
        };
        let invocation = engine.decide(&cutoff.component, &input);
        let mut tx = crate::db::begin_write(&mut conn).await?;
        let decision_id = decision_log::record(
            &mut tx,
            &DecisionRecord {
                county: &county.county,
                kind: "cutoff",
                account_id: &account_id,
                business_date: &ds(today),
                decided_at: &ts(now),
                component_sha256: &cutoff.component.sha256,
                input: &input,
                invocation: &invocation,
                shadow: policies.shadow(engine, PolicyKind::Cutoff),
            },
        )
        .await?;
        match &invocation.outcome {
            Err(f) => {
                // A failed cutoff policy never cuts anybody off.
                decision_log::hold(
                    &mut tx,
                    &account_id,
                    &ds(today),
                    "cutoff",
                    &decision_log::hold_reason(f),
                    Some(decision_id),
                    &ts(now),
                )
                .await?;
                report.held += 1;
            }
            Ok(out) => match (&out.action, policies.rollout_stage) {
                (CutoffAction::Keep, _) => report.kept += 1,
                (CutoffAction::Defer(_), _) => report.deferred += 1,
                // The host enforces the stage: notify-only never trips or asks to.
                (_, RolloutStage::NotifyOnly) => report.kept += 1,
                (CutoffAction::RequestApproval, _) => {
                    let facts_now =
                        floor_facts(&mut tx, &county.county, &facts, now, false).await?;
                    let refusals_now = county.floor.check(&facts_now);
                    if refusals_now.iter().any(FloorRefusal::is_permanent) {
                        // Keep-power or vulnerable: nobody is asked to approve what the
                        // floor will never allow.
                        let source = format!("decision:{decision_id}");
                        record_refusal(&mut tx, &account_id, &source, now, &refusals_now).await?;
                        report.floor_refused += 1;
                        tx.commit().await?;
                        continue;
                    }
                    let evidence = serde_json::json!({
                        "balance_yuan": crate::money::format_yuan(facts.balance_fen),
                        "days_in_arrears": facts.days_in_arrears(today),
                        "arrears_notice_delivered_at": input.disconnection_notice_delivered_at.as_ref().map(|t| format!("{:04}-{:02}-{:02} {:02}:{:02}", t.date.year, t.date.month, t.date.day, t.hour, t.minute)),
                        "decision_id": decision_id,
                        "policy_reason": out.reason_code,
                        "policy_explanation": out.explanation,
                        "floor_refusals_at_request": refusals_now,
                        // Shown to the approver: automatic disconnection is held for
                        // this customer; a person may still approve, knowing it.
                        "mobile_mismatch_work_order": facts_now.mobile_mismatch_work_order,
                    });
                    let key = approval_key(&mut tx, &account_id, facts.arrears_since).await?;
                    let inserted = sqlx::query(
                        "INSERT INTO work_orders (kind, account_id, station_id, decision_id, dedup_key, status, evidence_json, opened_at)
                         VALUES ('approve-disconnection', $1, $2, $3, $4, 'open', $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
                    )
                    .bind(&account_id)
                    .bind(&facts.station_id)
                    .bind(decision_id)
                    .bind(key)
                    .bind(evidence.to_string())
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                    report.approvals_requested += inserted.rows_affected() as u32;
                }
                (CutoffAction::Disconnect, _) => {
                    match trip_if_floor_allows(
                        &mut tx,
                        county,
                        &facts,
                        &format!("decision:{decision_id}"),
                        now,
                        relay,
                    )
                    .await?
                    {
                        Ok(created) => report.trips_created += u32::from(created),
                        Err(_) => report.floor_refused += 1,
                    }
                }
            },
        }
        tx.commit().await?;
    }
    Ok(report)
}

/// The de-duplication key of an approval request: one per arrears episode
/// (`approve-disconnection:<account>:<arrears since>`), so a held order is not asked
/// again every day. An approved order whose trip then failed — not sent after a crash,
/// refused by the floor or past its deadline when it was due to leave, or never
/// confirmed by a status read — has used its approval up without a confirmed
/// disconnection: the next request of the episode gets a new key (`…#2`, `#3`, …) and
/// a person is asked again, as a failed trip must be decided again (see
/// [`crate::relay`]). Before, the episode's key was taken and the customer stayed
/// connected in arrears with nobody asked.
async fn approval_key(
    conn: &mut AnyConnection,
    account_id: &str,
    arrears_since: Option<chrono::NaiveDate>,
) -> Result<String, DbError> {
    let base = format!(
        "approve-disconnection:{account_id}:{}",
        arrears_since.map(ds).unwrap_or_default()
    );
    let spent: i64 = sqlx::query(
        "SELECT COUNT(*) FROM work_orders w
           JOIN relay_commands c ON c.decision_key = 'work-order:' || CAST(w.work_order_id AS TEXT)
         WHERE w.account_id = $1 AND w.kind = 'approve-disconnection' AND w.status = 'done'
           AND (w.dedup_key = $2 OR w.dedup_key LIKE $3) AND c.status = 'failed'",
    )
    .bind(account_id)
    .bind(&base)
    .bind(format!("{base}#%"))
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    Ok(if spent == 0 {
        base
    } else {
        format!("{base}#{}", spent + 1)
    })
}

/// Records a station staff member's decision on an open approval work order: `approve`
/// (→ `approved`) or hold (→ `held`). Returns false when the order is not open (see
/// [`decide_open_work_order`]). An approval is undone with [`withdraw_approval`].
pub async fn decide_work_order(
    db: &Db,
    work_order_id: i64,
    approve: bool,
    who: &str,
    now: NaiveDateTime,
    note: &str,
) -> Result<bool, DbError> {
    let status = if approve { "approved" } else { "held" };
    decide_open_work_order(
        db,
        work_order_id,
        "approve-disconnection",
        status,
        who,
        note,
        now,
    )
    .await
}

/// Moves an open work order of `kind` to `status`, recording who decided, when and why.
/// Returns false when `work_order_id` is not an open order of that kind.
pub async fn decide_open_work_order(
    db: &Db,
    work_order_id: i64,
    kind: &str,
    status: &str,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE work_orders SET status = $2, decided_by = $3, decided_at = $4, note = $5
         WHERE work_order_id = $1 AND kind = $6 AND status = 'open'",
    )
    .bind(work_order_id)
    .bind(status)
    .bind(who)
    .bind(ts(now))
    .bind(note)
    .bind(kind)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Outcome of executing approved work orders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionReport {
    /// Trip commands created.
    pub trips_created: u32,
    /// Orders the safety floor refused at this moment (they stay approved unless the
    /// floor never allows them).
    pub floor_refused: u32,
    /// Orders cancelled because the customer paid in the meantime.
    pub cancelled_paid: u32,
}

/// What executing one approved disconnection work order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// The floor allowed it: the trip command was created (`false`: one existed for
    /// this order already) and the order is `done`, executed by the executor.
    Tripped { created: bool },
    /// The safety floor refused at this moment; `cancelled` when it never will allow
    /// it (keep-power, vulnerable), else the order stays approved for a later try.
    FloorRefused {
        refusals: Vec<FloorRefusal>,
        cancelled: bool,
    },
    /// The account is no longer in arrears or its relay is not closed: cancelled.
    CancelledPaid,
    /// Not an approved disconnection order (unknown, another kind, or not `approved`),
    /// or no longer one at the final update (its approval withdrawn meanwhile: nothing
    /// was issued). `status` is the order's status (None: no such order).
    NotApproved { status: Option<String> },
    /// The executor approved it: the two-person rule refuses.
    TwoPersonRule { approver: String },
}

/// Executes one approved disconnection work order now, as `executed_by` (`system` for
/// the scheduled run): the two-person rule (the approver is never the executor), then
/// the account must still be in arrears with a closed relay (else the order is
/// cancelled), then the safety floor at this moment; the trip command is created and
/// the order marked `done` with `executed_by`/`executed_at`, all in one transaction.
///
/// The order is read at the start, but an approval can be withdrawn
/// ([`withdraw_approval`]) while the floor is checked and the trip command written. So
/// every final transition (`done`, either `cancelled`, and the "stays approved" of a
/// temporary floor refusal) is conditional on the order still being `approved` at that
/// update; when it no longer is, the transaction — the
/// trip command with it — is rolled back and the answer is
/// [`Executed::NotApproved`] with the status the order has then. On PostgreSQL (read
/// committed) the conditional `UPDATE` re-reads the row as last committed, and waits for
/// a withdrawal in progress on it, so a withdrawal committed at any moment before that
/// update wins; one that comes after it finds the order `done` and is refused. On SQLite
/// a process's one pooled connection serialises the two.
pub async fn execute_one(
    db: &Db,
    county: &County,
    work_order_id: i64,
    executed_by: &str,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<Executed, DbError> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = crate::db::begin_write(&mut conn).await?;
    let order = sqlx::query(
        "SELECT w.account_id, w.status, w.decided_by FROM work_orders w
         WHERE w.work_order_id = $1 AND w.kind = 'approve-disconnection'",
    )
    .bind(work_order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = order else {
        return Ok(Executed::NotApproved { status: None });
    };
    let (account_id, status, approver): (Option<String>, String, Option<String>) =
        (order.try_get(0)?, order.try_get(1)?, order.try_get(2)?);
    let Some(account_id) = account_id.filter(|_| status == "approved") else {
        return Ok(Executed::NotApproved {
            status: Some(status),
        });
    };
    if let Some(approver) = approver.filter(|a| a == executed_by) {
        return Ok(Executed::TwoPersonRule { approver });
    }
    let id = work_order_id;
    let facts = AccountFacts::load(&mut tx, &account_id).await?;
    // Each final update names `status = 'approved'`: see the doc comment for why.
    let outcome = if facts.balance_fen >= 0 || facts.relay_state != "closed" {
        let r = sqlx::query("UPDATE work_orders SET status = 'cancelled', note = COALESCE(note, '') || ' [cancelled: no longer in arrears or already open]' WHERE work_order_id = $1 AND status = 'approved'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return no_longer_approved(tx, id).await;
        }
        Executed::CancelledPaid
    } else {
        match trip_if_floor_allows(
            &mut tx,
            county,
            &facts,
            &format!("work-order:{id}"),
            now,
            relay,
        )
        .await?
        {
            Ok(created) => {
                let r = sqlx::query("UPDATE work_orders SET status = 'done', executed_by = $2, executed_at = $3 WHERE work_order_id = $1 AND status = 'approved'")
                    .bind(id)
                    .bind(executed_by)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() == 0 {
                    // Withdrawn (or otherwise decided) since it was read: the trip
                    // command written above goes with the rollback.
                    return no_longer_approved(tx, id).await;
                }
                Executed::Tripped { created }
            }
            Err(refusals) => {
                let cancelled = refusals.iter().any(FloorRefusal::is_permanent);
                if cancelled {
                    let r = sqlx::query(
                        "UPDATE work_orders SET status = 'cancelled',
                                note = COALESCE(note, '') || ' [cancelled: the safety floor never allows this trip]'
                         WHERE work_order_id = $1 AND status = 'approved'",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    if r.rows_affected() == 0 {
                        return no_longer_approved(tx, id).await;
                    }
                } else {
                    // "Stays approved" must be true when it is said: a no-op update that
                    // matches only an approved order (and on PostgreSQL waits for a
                    // withdrawal in progress and holds the row to commit).
                    let r = sqlx::query(
                        "UPDATE work_orders SET status = status WHERE work_order_id = $1 AND status = 'approved'",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    if r.rows_affected() == 0 {
                        return no_longer_approved(tx, id).await;
                    }
                }
                Executed::FloorRefused {
                    refusals,
                    cancelled,
                }
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The answer of [`execute_one`] when its final update found the order no longer
/// approved: reads the status it has now, then rolls everything back (a trip command
/// written in the transaction included).
async fn no_longer_approved(
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    work_order_id: i64,
) -> Result<Executed, DbError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM work_orders WHERE work_order_id = $1")
            .bind(work_order_id)
            .fetch_optional(&mut *tx)
            .await?;
    tx.rollback().await?;
    Ok(Executed::NotApproved { status })
}

/// What [`withdraw_approval`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withdrawal {
    /// The order was approved and not executed: it is now `held`, with `withdrawn_by`
    /// and `withdrawn_at` recorded, the approver kept in `decided_by`/`decided_at`, and
    /// the reason appended to `note`.
    Withdrawn,
    /// Nothing changed: the order is not an approved disconnection order. `status` is
    /// its status as read just after the refused update (`open`: nobody approved it yet
    /// — hold it instead; `done`: executed, the trip was issued; `held`, `cancelled`),
    /// or None when no approve-disconnection order has that id.
    NotApproved { status: Option<String> },
}

/// Withdraws the approval of a disconnection work order that is not executed yet:
/// `approved` → `held`, as `who`, at `now` (county local time), with `note` (why; may be
/// empty) appended to the order's note as `[approval withdrawn by WHO at TIME: NOTE]`.
///
/// Anyone who may decide the order may withdraw its approval, the approver included:
/// withdrawing is the safe direction, so there is no two-person rule. `decided_by` and
/// `decided_at` keep the approver; `withdrawn_by`/`withdrawn_at` (migration 0016) say
/// who withdrew it and when.
///
/// A withdrawn order is a held order, with the same effect on later cutoff decisions
/// ([`run`]): the account is a cutoff candidate again (only an `open` or `approved`
/// order keeps it out), but a request for approval in the same arrears episode maps
/// to the episode's de-duplication key (see `approval_key`), which the held order owns,
/// so nobody is asked again and no approval-gated disconnection follows in this
/// episode. What a held order does **not** stop: a `disconnect` decided by the policy
/// itself (the county moved to the automatic stage, or the customer to automatic by
/// their prepaying habit) still trips through the safety floor, and a new arrears
/// episode (the customer paid back to zero or more, then fell into arrears again) opens
/// a new approval order.
///
/// The update is one statement conditional on `status = 'approved'`, so it races
/// safely with [`execute_one`], whose final update is conditional the same way:
/// whichever commits first wins, and the other changes nothing (a withdrawal after the
/// execution is [`Withdrawal::NotApproved`] with `done`; an execution after the
/// withdrawal is [`Executed::NotApproved`] with `held`, its trip command rolled back).
/// An approved order has no trip command, since execution creates the command and marks
/// the order `done` in one transaction.
///
/// Errors: [`DbError`] when the database fails; a refusal is not an error.
pub async fn withdraw_approval(
    db: &Db,
    work_order_id: i64,
    who: &str,
    now: NaiveDateTime,
    note: &str,
) -> Result<Withdrawal, DbError> {
    let at = ts(now);
    let appended = if note.is_empty() {
        format!(" [approval withdrawn by {who} at {at}]")
    } else {
        format!(" [approval withdrawn by {who} at {at}: {note}]")
    };
    let r = sqlx::query(
        "UPDATE work_orders SET status = 'held', withdrawn_by = $2, withdrawn_at = $3,
                note = COALESCE(note, '') || $4
         WHERE work_order_id = $1 AND kind = 'approve-disconnection' AND status = 'approved'",
    )
    .bind(work_order_id)
    .bind(who)
    .bind(&at)
    .bind(appended)
    .execute(&db.pool)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(Withdrawal::Withdrawn);
    }
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM work_orders WHERE work_order_id = $1 AND kind = 'approve-disconnection'",
    )
    .bind(work_order_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(Withdrawal::NotApproved { status })
}

/// Executes approved disconnection work orders of the county as `system` ([`execute_one`]
/// each): each passes the floor at this moment or waits for the next execution; an
/// account that is no longer in arrears has its order cancelled.
pub async fn execute_approved(
    db: &Db,
    county: &County,
    now: NaiveDateTime,
    relay: &RelayConfig,
) -> Result<ExecutionReport, DbError> {
    let mut report = ExecutionReport::default();
    let orders = sqlx::query(
        "SELECT w.work_order_id FROM work_orders w JOIN accounts a ON a.account_id = w.account_id
         WHERE a.county = $1 AND w.kind = 'approve-disconnection' AND w.status = 'approved' ORDER BY w.work_order_id",
    )
    .bind(&county.county)
    .fetch_all(&db.pool)
    .await?;
    for o in orders {
        match execute_one(db, county, o.try_get(0)?, "system", now, relay).await? {
            Executed::Tripped { created } => report.trips_created += u32::from(created),
            Executed::FloorRefused { .. } => report.floor_refused += 1,
            Executed::CancelledPaid => report.cancelled_paid += 1,
            Executed::NotApproved { .. } | Executed::TwoPersonRule { .. } => {}
        }
    }
    Ok(report)
}
