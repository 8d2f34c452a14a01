//! Warning (预警): after settlement, the county's warning component assesses each
//! settled account; the host carries out its actions: queue the low-balance / arrears
//! notice, open an offline follow-up work order for the meter reader (抄收员线下催费),
//! and — once the bank channel exists (issue 5) — request the auto-debit.

use crate::accountview::{AccountFacts, level_already_notified, recent_days};
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ds, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::outbox::{NoticeRequest, Queued, queue_notice};
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

/// Assesses `accounts` (normally those settled today) on `today`.
pub async fn assess(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    accounts: &[String],
    today: NaiveDate,
    now: NaiveDateTime,
    history_days: u32,
) -> Result<WarningReport, DbError> {
    let mut report = WarningReport::default();
    let warning = policies.get(PolicyKind::Warning);
    for account_id in accounts {
        let mut conn = db.pool.acquire().await?;
        let facts = AccountFacts::load(&mut conn, account_id).await?;
        let input = WarningInput {
            account_id: account_id.clone(),
            today: date_to_wit(today),
            balance: fen_to_wit(facts.balance_fen),
            agreement: facts.agreement(),
            recent_days: recent_days(&mut conn, account_id, history_days).await?,
            days_in_arrears: facts.days_in_arrears(today),
            level_already_notified: level_already_notified(&mut conn, account_id).await?,
            auto_debit_in_flight: crate::autodebit::in_flight(&mut conn, account_id).await?,
            parameters: warning.parameters_json.clone(),
        };
        let invocation = engine.assess(&warning.component, &input);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let decision_id = decision_log::record(
            &mut tx,
            &DecisionRecord {
                county,
                kind: "warning",
                account_id,
                business_date: &ds(today),
                decided_at: &ts(now),
                component_sha256: &warning.component.sha256,
                input: &input,
                invocation: &invocation,
                shadow: policies.shadow(engine, PolicyKind::Warning),
            },
        )
        .await?;
        report.assessed += 1;
        let out = match &invocation.outcome {
            Ok(out) => out,
            Err(f) => {
                decision_log::hold(
                    &mut tx,
                    account_id,
                    &ds(today),
                    "warning",
                    &decision_log::hold_reason(f),
                    Some(decision_id),
                    &ts(now),
                )
                .await?;
                tx.commit().await?;
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
                    match queue_notice(&mut tx, engine, county, policies, &req, now).await? {
                        Queued::Queued => report.notices_queued += 1,
                        Queued::Duplicate => {}
                        Queued::PolicyFailed | Queued::TooLong { .. } => report.held += 1,
                    }
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
                    .bind(ts(now))
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
        tx.commit().await?;
    }
    Ok(report)
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
