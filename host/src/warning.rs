//! Warning (预警): after settlement, the county's warning component assesses each
//! settled account; the host carries out its actions: queue the low-balance / arrears
//! notice, open an offline follow-up work order for the meter reader (抄收员线下催费),
//! and — once the bank channel exists (issue 5) — request the auto-debit.

use crate::accountview::{
    AccountFacts, auto_debits_in_flight, levels_already_notified, recent_days_many,
};
use crate::county::{ActiveComponent, PolicySnapshot};
use crate::db::{Db, DbError, ds, parse_ds, ts};
use crate::decision_log::{self, BatchRecord};
use crate::outbox::{NoticeRequest, Queued, queue_notices};
use crate::policy::bindings::{NoticeKind, WarningAction, WarningInput, WarningOutput};
use crate::policy::convert::{date_to_wit, fen_to_wit, from_wit};
use crate::policy::{Deciding, Invocation, PolicyEngine, PolicyKind};
use chrono::{NaiveDate, NaiveDateTime};
use sqlx::{AnyConnection, Row};
use std::sync::Arc;

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
/// `cfg.batch_accounts` (with `cfg.history_days` of history each): each batch's facts are
/// read with one query per kind of fact, its warning decisions run on every core
/// ([`PolicyEngine::spawn_decide_parts`]; many balances per call with a contract 1.1
/// component, [`PolicyEngine::assess_many`], else a fresh instance each) while the batch before is
/// written, and everything a batch decides is written in one transaction; an account whose
/// balance or arrears clock moved between the read and the write (a payment) is read and
/// decided again inside that transaction. `accounts` must be distinct; an account id that
/// does not exist, or is twice in one batch, is an error.
#[allow(clippy::too_many_arguments)]
pub async fn assess(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    county: &str,
    policies: &PolicySnapshot,
    accounts: &[String],
    today: NaiveDate,
    now: NaiveDateTime,
    cfg: &crate::config::SettlementConfig,
) -> Result<WarningReport, DbError> {
    let mut report = WarningReport::default();
    // Two batches in flight, as in settlement (`settlement::settle`): the next batch is
    // read (on `Db::reads`) and its decisions started beside the write of the batch
    // before (`Db::read_beside_write`); the batches' accounts are disjoint and
    // a batch reads only its own (and what a payment moves meanwhile is read again in the
    // write, `moved_since_read`). Whatever was decided before an error is still written.
    let mut decided: Option<Assessing> = None;
    let batches = accounts.chunks(cfg.batch_accounts.max(1));
    for batch in batches.map(Some).chain([None]) {
        let read = async {
            match batch {
                Some(batch) => Some(
                    plan_assessment(
                        db,
                        engine,
                        county,
                        policies,
                        batch,
                        today,
                        now,
                        cfg.history_days,
                    )
                    .await,
                ),
                None => None,
            }
        };
        let write = async {
            match decided.take() {
                Some(assessing) => {
                    write_assessment(
                        db,
                        engine,
                        county,
                        policies,
                        assessing,
                        today,
                        now,
                        cfg.history_days,
                        &mut report,
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let (next, written) = db.read_beside_write(read, write).await;
        written?;
        decided = next.transpose()?;
    }
    Ok(report)
}

/// A batch read ([`plan_assessment`]), its warning decisions running.
struct Assessing {
    /// The warning component and parameters the batch is decided with.
    warning: Arc<ActiveComponent>,
    /// Each account's facts, in the order of the decisions' inputs.
    facts: Vec<AccountFacts>,
    /// Each account's warning input, decision and decision-log row.
    decisions: Deciding<WarningInput, (Invocation<WarningOutput>, decision_log::ChainedRow)>,
}

/// Reads one batch's facts and history and starts its warning decisions (each
/// decision's log row is serialised on the decision threads too).
#[allow(clippy::too_many_arguments)]
async fn plan_assessment(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    county: &str,
    policies: &PolicySnapshot,
    batch: &[String],
    today: NaiveDate,
    now: NaiveDateTime,
    history_days: u32,
) -> Result<Assessing, DbError> {
    let warning = policies.shared(PolicyKind::Warning);
    let mut conn = db.reads().acquire().await?;
    let (facts, inputs) = read_inputs(&mut conn, batch, today, history_days).await?;
    drop(conn);
    let (component, record) = (
        warning.clone(),
        warning_record(county, today, now, &warning),
    );
    let decisions = engine.spawn_decide_parts(inputs, move |engine, part| {
        decide_and_record(engine, &component, &record, part)
    });
    Ok(Assessing {
        warning,
        facts,
        decisions,
    })
}

/// Decides `inputs` with the warning component — many balances per call where it exports
/// `warning-batch` ([`PolicyEngine::assess_many`]) — and prepares each decision's log row,
/// with the parameters the component saw.
fn decide_and_record(
    engine: &PolicyEngine,
    warning: &ActiveComponent,
    record: &decision_log::BatchRecord,
    inputs: &[WarningInput],
) -> Vec<(Invocation<WarningOutput>, decision_log::ChainedRow)> {
    let parameters = &warning.parameters_json;
    let assessed = engine.assess_many(&warning.component, parameters, inputs);
    record.prepare_sent_apart(inputs, parameters, assessed, |i| &i.account_id)
}

/// The facts and the warning input of each account of `batch`, in its order, read with
/// one query per kind of fact; the inputs' `parameters` are left empty, sent apart.
async fn read_inputs(
    conn: &mut AnyConnection,
    batch: &[String],
    today: NaiveDate,
    history_days: u32,
) -> Result<(Vec<AccountFacts>, Vec<WarningInput>), DbError> {
    let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
    let mut facts = AccountFacts::load_many(conn, &ids).await?;
    let mut recent = recent_days_many(conn, &ids, history_days).await?;
    let levels = levels_already_notified(conn, &ids).await?;
    let in_flight = auto_debits_in_flight(conn, &ids).await?;
    let mut ordered = Vec::with_capacity(batch.len());
    let mut inputs = Vec::with_capacity(batch.len());
    for account_id in batch {
        let facts = facts.remove(account_id).ok_or_else(|| {
            DbError::Corrupt(format!(
                "account {account_id} was settled but does not exist (or is twice in the batch)"
            ))
        })?;
        inputs.push(WarningInput {
            account_id: account_id.clone(),
            today: date_to_wit(today),
            balance: fen_to_wit(facts.balance_fen),
            agreement: facts.agreement(),
            recent_days: recent.remove(account_id).unwrap_or_default(),
            days_in_arrears: facts.days_in_arrears(today),
            level_already_notified: levels.get(account_id).copied().unwrap_or(0),
            auto_debit_in_flight: in_flight.contains(account_id),
            // Sent once beside the inputs ([`PolicyEngine::assess_many`]) and recorded
            // with each decision ([`decision_log::SentApart`]).
            parameters: String::new(),
        });
        ordered.push(facts);
    }
    Ok((ordered, inputs))
}

/// The log rows' shared part for warning decisions made on `today` at `now`.
fn warning_record(
    county: &str,
    today: NaiveDate,
    now: NaiveDateTime,
    warning: &ActiveComponent,
) -> BatchRecord {
    BatchRecord {
        county: county.to_string(),
        kind: "warning",
        business_date: ds(today),
        decided_at: ts(now),
        component_sha256: warning.component.sha256.clone(),
    }
}

/// Positions in `facts` of the accounts whose balance or arrears clock is no longer what
/// was read; on PostgreSQL locks every account of the batch `FOR SHARE` first (in byte
/// order of their ids), so none can move until the transaction ends.
async fn moved_since_read(
    tx: &mut AnyConnection,
    facts: &[AccountFacts],
) -> Result<Vec<usize>, DbError> {
    let ids: Vec<&str> = facts.iter().map(|f| f.account_id.as_str()).collect();
    let sql = if tx.backend_name() == "PostgreSQL" {
        "SELECT account_id, balance_fen, arrears_since FROM accounts WHERE account_id IN $IDS ORDER BY account_id COLLATE \"C\" FOR SHARE"
    } else {
        "SELECT account_id, balance_fen, arrears_since FROM accounts WHERE account_id IN $IDS"
    };
    let mut now_stored = std::collections::HashMap::with_capacity(ids.len());
    for r in crate::db::fetch_in(tx, sql, &ids, None).await? {
        let arrears_since: Option<String> = r.try_get(2)?;
        now_stored.insert(
            r.try_get::<String, _>(0)?,
            (
                r.try_get::<i64, _>(1)?,
                arrears_since.as_deref().map(parse_ds).transpose()?,
            ),
        );
    }
    Ok(facts
        .iter()
        .enumerate()
        .filter(|(_, f)| now_stored.get(&f.account_id) != Some(&(f.balance_fen, f.arrears_since)))
        .map(|(i, _)| i)
        .collect())
}

/// Writes one assessed batch once its decisions are in, in one transaction: the
/// decisions, holds for failed ones, follow-up work orders and the notices.
#[allow(clippy::too_many_arguments)]
async fn write_assessment(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    county: &str,
    policies: &PolicySnapshot,
    assessing: Assessing,
    today: NaiveDate,
    now: NaiveDateTime,
    history_days: u32,
    report: &mut WarningReport,
) -> Result<(), DbError> {
    let Assessing {
        warning,
        mut facts,
        decisions,
    } = assessing;
    let (mut inputs, decided) = decisions.finish().await;
    let (mut invocations, mut rows): (Vec<_>, Vec<_>) = decided.into_iter().unzip();
    let (day, decided_at) = (ds(today), ts(now));
    let mut conn = db.pool.acquire().await?;
    let mut tx = crate::db::begin_write(&mut conn).await?;
    // The batch was read before this transaction began, and another batch was written
    // meanwhile: a payment may have moved a balance (and with it the arrears clock)
    // since. Those accounts are read and decided again here, where nothing can move them
    // before the commit — SQLite holds the write lock; on PostgreSQL their rows are
    // locked first, in byte order of their ids as every writer of accounts locks them —
    // so a warning never quotes a balance that was already topped up.
    let moved = moved_since_read(&mut tx, &facts).await?;
    if !moved.is_empty() {
        let ids: Vec<String> = moved.iter().map(|&i| facts[i].account_id.clone()).collect();
        let (again, again_inputs) = read_inputs(&mut tx, &ids, today, history_days).await?;
        let record = warning_record(county, today, now, &warning);
        let again_decided = decide_and_record(engine, &warning, &record, &again_inputs);
        for (((i, f), input), (invocation, row)) in moved
            .into_iter()
            .zip(again)
            .zip(again_inputs)
            .zip(again_decided)
        {
            rows[i] = row;
            (facts[i], inputs[i], invocations[i]) = (f, input, invocation);
        }
    }
    let assessed: Vec<(&AccountFacts, &WarningInput)> = facts.iter().zip(&inputs).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;
    use crate::ledger::{self, EntryKind, Posting};
    use std::path::Path;

    /// A top-up that lands after a batch was read and decided, before it is written: the
    /// account is read and decided again inside the write, so no low-balance notice quotes
    /// the balance from before the top-up. (In the daily job the window is the batch
    /// before being written; this test opens it by hand.) On the backend under test
    /// (`make test-postgres` runs it on PostgreSQL, where the write re-reads the batch's
    /// balances `FOR SHARE`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_top_up_between_the_read_and_the_write_is_what_the_warning_sees() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let Some(test_db) = crate::testdb::test_database(
            "warning::tests::a_top_up_between_the_read_and_the_write_is_what_the_warning_sees",
        )
        .await
        else {
            return;
        };
        let db = Db::open(&test_db.url).await.unwrap();
        let config = HostConfig::default();
        let engine = PolicyEngine::new(config.policy.clone()).unwrap();
        let county = crate::county::County::load(
            &engine,
            &repo.join("policies/xianyou"),
            &repo.join("target/wasm32-wasip2/plugin"),
            config.floor.clone(),
        )
        .expect("policy components built (`make plugins`)");
        let profiles = feegate_meter::profile::Profiles::load(
            repo.join("../shared/data/lcl_2013_daily_kwh_100hh.csv"),
        )
        .unwrap();
        let day0 = NaiveDate::from_ymd_opt(2013, 3, 1).unwrap();
        // Every third account starts with 55 yuan, which the day takes under the 50-yuan
        // alarm threshold for some of them.
        crate::bench::settle::seed_accounts(&db, 30, &profiles, day0)
            .await
            .unwrap();
        let (today, policies) = (day0.succ_opt().unwrap(), county.snapshot());
        let now = today.and_hms_opt(0, 20, 0).unwrap();
        let settled = crate::settlement::settle(
            &db,
            &engine,
            "xianyou",
            &policies,
            today,
            now,
            &config.settlement,
        )
        .await
        .unwrap();
        assert_eq!(settled.settled, 30);
        let batch = settled.settled_accounts;
        let low: Vec<String> = sqlx::query_scalar(
            "SELECT account_id FROM accounts WHERE balance_fen < 5000 ORDER BY account_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert!(low.len() >= 2, "accounts under the threshold: {low:?}");
        let (topped_up, still_low) = (low[0].as_str(), &low[1..]);
        let assessing = plan_assessment(&db, &engine, "xianyou", &policies, &batch, today, now, 30)
            .await
            .unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        ledger::post(
            &mut conn,
            &Posting {
                account_id: topped_up,
                kind: EntryKind::Payment,
                amount_fen: 10_000,
                idempotency_key: "top-up",
                business_date: &ds(today),
                posted_at: &ts(now),
                reference: "test",
            },
        )
        .await
        .unwrap();
        let balance_now: i64 =
            sqlx::query_scalar("SELECT balance_fen FROM accounts WHERE account_id = $1")
                .bind(topped_up)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        drop(conn);
        let mut report = WarningReport::default();
        write_assessment(
            &db,
            &engine,
            "xianyou",
            &policies,
            assessing,
            today,
            now,
            30,
            &mut report,
        )
        .await
        .unwrap();
        assert_eq!(report.assessed, 30);
        let notified: Vec<String> =
            sqlx::query_scalar("SELECT account_id FROM sms_outbox ORDER BY account_id")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            notified, still_low,
            "{topped_up} topped up before the batch was written"
        );
        let input: String = sqlx::query_scalar(
            "SELECT input_json FROM decisions WHERE kind = 'warning' AND account_id = $1",
        )
        .bind(topped_up)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let input: serde_json::Value = serde_json::from_str(&input).unwrap();
        let recorded = crate::policy::convert::from_wit(
            &serde_json::from_value(input["balance"].clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(recorded, rust_decimal::Decimal::new(balance_now, 2));
    }
}
