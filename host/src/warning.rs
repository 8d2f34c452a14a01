//! Warning (预警): after settlement, the county's warning component assesses each
//! settled account; the host carries out its actions: queue the low-balance / arrears
//! notice, open an offline follow-up work order for the meter reader (抄收员线下催费),
//! and — once the bank channel exists (issue 5) — request the auto-debit.

use crate::accountview::{
    AccountFacts, auto_debits_in_flight, levels_already_notified, recent_days_many,
};
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ds, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::outbox::{NoticeRequest, Queued, queue_notices};
use crate::policy::bindings::{NoticeKind, WarningAction, WarningInput};
use crate::policy::convert::{date_to_wit, fen_to_wit, from_wit};
use crate::policy::{PolicyEngine, PolicyKind};
use chrono::{NaiveDate, NaiveDateTime};

/// Outcome of one warning run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarningReport {
    pub assessed: u32,
    /// Warning notices queued (levels 1–3).
    pub notices_queued: u32,
    pub follow_ups_opened: u32,
    /// Auto-debit requests the policy asked for (not yet sent: no bank channel yet).
    pub auto_debit_requested: u32,
    /// Accounts held because the warning or notice component failed.
    pub held: u32,
}

/// The notice that conveys warning `level`.
pub fn notice_for_level(level: u8) -> Option<NoticeKind> {
    match level {
        1 => Some(NoticeKind::LowBalance),
        2 => Some(NoticeKind::SecondAlarm),
        3 => Some(NoticeKind::Arrears),
        _ => None,
    }
}

/// Assesses `accounts` (normally those settled today) on `today`, in batches of
/// `cfg.batch_accounts` (with `cfg.history_days` of history each): each batch's facts are read with one query per
/// kind of fact, its warning decisions run on every core
/// ([`PolicyEngine::decide_all`], a fresh instance each) and everything the batch decides
/// is written in one transaction. An account id that does not exist is an error.
#[allow(clippy::too_many_arguments)]
pub async fn assess(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    accounts: &[String],
    today: NaiveDate,
    now: NaiveDateTime,
    cfg: &crate::config::SettlementConfig,
) -> Result<WarningReport, DbError> {
    let mut report = WarningReport::default();
    for batch in accounts.chunks(cfg.batch_accounts.max(1)) {
        assess_batch(
            db,
            engine,
            county,
            policies,
            batch,
            today,
            now,
            cfg.history_days,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn assess_batch(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    batch: &[String],
    today: NaiveDate,
    now: NaiveDateTime,
    history_days: u32,
    report: &mut WarningReport,
) -> Result<(), DbError> {
    let warning = policies.get(PolicyKind::Warning);
    let mut conn = db.pool.acquire().await?;
    let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
    let facts = AccountFacts::load_many(&mut conn, &ids).await?;
    let mut recent = recent_days_many(&mut conn, &ids, history_days).await?;
    let levels = levels_already_notified(&mut conn, &ids).await?;
    let in_flight = auto_debits_in_flight(&mut conn, &ids).await?;
    let mut assessed = Vec::with_capacity(batch.len());
    for account_id in batch {
        let facts = facts.get(account_id).ok_or_else(|| {
            DbError::Corrupt(format!(
                "account {account_id} was settled but does not exist"
            ))
        })?;
        let input = WarningInput {
            account_id: account_id.clone(),
            today: date_to_wit(today),
            balance: fen_to_wit(facts.balance_fen),
            agreement: facts.agreement(),
            recent_days: recent.remove(account_id).unwrap_or_default(),
            days_in_arrears: facts.days_in_arrears(today),
            level_already_notified: levels.get(account_id).copied().unwrap_or(0),
            auto_debit_in_flight: in_flight.contains(account_id),
            parameters: warning.parameters_json.clone(),
        };
        assessed.push((facts, input));
    }
    let invocations = engine.decide_all(&assessed, |(_, input)| {
        engine.assess(&warning.component, input)
    });
    let (day, decided_at) = (ds(today), ts(now));
    let rows: Vec<decision_log::ChainedRow> = assessed
        .iter()
        .zip(&invocations)
        .map(|((_, input), invocation)| {
            decision_log::prepare(&DecisionRecord {
                county,
                kind: "warning",
                account_id: &input.account_id,
                business_date: &day,
                decided_at: &decided_at,
                component_sha256: &warning.component.sha256,
                input,
                invocation,
                shadow: None,
            })
        })
        .collect();
    let mut tx = crate::db::begin_write(&mut conn).await?;
    let decision_ids = decision_log::append(&mut tx, &rows).await?;
    if let Some(shadow) = policies.shadow(engine, PolicyKind::Warning) {
        for (id, row) in decision_ids.iter().zip(&rows) {
            decision_log::run_shadow(&mut tx, shadow, *id, row).await;
        }
    }
    let mut notices = Vec::new();
    for (((facts, input), invocation), &decision_id) in
        assessed.iter().zip(&invocations).zip(&decision_ids)
    {
        let account_id = &input.account_id;
        report.assessed += 1;
        let out = match &invocation.outcome {
            Ok(out) => out,
            Err(f) => {
                decision_log::hold(
                    &mut tx,
                    account_id,
                    &day,
                    "warning",
                    &decision_log::hold_reason(f),
                    Some(decision_id),
                    &decided_at,
                )
                .await?;
                report.held += 1;
                continue;
            }
        };
        for action in &out.actions {
            match action {
                WarningAction::Notify => {
                    let Some(kind) = notice_for_level(out.level) else {
                        continue;
                    };
                    let req = NoticeRequest {
                        kind,
                        account_id: account_id.clone(),
                        today,
                        balance_fen: facts.balance_fen,
                        days_of_credit_left: out
                            .days_of_credit_left
                            .as_ref()
                            .and_then(|d| from_wit(d).ok()),
                        amount_fen: None,
                        deadline: None,
                        warning_level: out.level,
                        dedup_key: format!("warn:{account_id}:L{}:{}", out.level, ds(today)),
                    };
                    notices.push(req);
                }
                WarningAction::OfflineFollowUp => {
                    let key = format!(
                        "follow-up:{account_id}:{}",
                        facts.arrears_since.map(ds).unwrap_or_else(|| ds(today))
                    );
                    let evidence = serde_json::json!({
                        "balance_yuan": crate::money::format_yuan(facts.balance_fen),
                        "days_in_arrears": facts.days_in_arrears(today),
                        "decision_id": decision_id,
                        "explanation": out.explanation,
                    });
                    let inserted = sqlx::query(
                        "INSERT INTO work_orders (kind, account_id, station_id, decision_id, dedup_key, status, evidence_json, opened_at)
                         VALUES ('offline-follow-up', $1, $2, $3, $4, 'open', $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
                    )
                    .bind(account_id)
                    .bind(&facts.station_id)
                    .bind(decision_id)
                    .bind(key)
                    .bind(evidence.to_string())
                    .bind(&decided_at)
                    .execute(&mut *tx)
                    .await?;
                    report.follow_ups_opened += inserted.rows_affected() as u32;
                }
                WarningAction::RequestAutoDebit => {
                    // The bank channel adapter arrives with payments (issue 5); the
                    // request is in the decision log and counted, nothing is debited.
                    report.auto_debit_requested += 1;
                }
            }
        }
    }
    for queued in queue_notices(&mut tx, engine, county, policies, &notices, now).await? {
        match queued {
            Queued::Queued => report.notices_queued += 1,
            Queued::Duplicate => {}
            Queued::PolicyFailed | Queued::TooLong { .. } => report.held += 1,
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Records an offline follow-up work order (抄收员线下催费) as done by the person who did
/// it. From then on the safety floor accepts it, for the arrears episode it belongs to,
/// in place of a delivered arrears SMS (the 12-hour notice lead counts from `now`).
/// Returns false when `work_order_id` is not an open offline follow-up.
pub async fn record_follow_up_done(
    db: &Db,
    work_order_id: i64,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    crate::cutoff::decide_open_work_order(
        db,
        work_order_id,
        "offline-follow-up",
        "done",
        who,
        note,
        now,
    )
    .await
}
