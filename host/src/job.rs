//! The daily job for one county, stage by stage, each stage idempotent and marked done
//! in `job_runs` so a restart resumes where it stopped and never runs a day twice:
//!
//! | local time | stage |
//! |---|---|
//! | 00:10 | collection of the daily frozen readings for today |
//! | 00:20 | settlement of yesterday's consumption, then warnings |
//! | whenever not quiet hours | SMS outbox |
//! | 09:00 (configurable) | cutoff decisions |
//! | through the day | approved work orders executed, relay commands issued and verified, payments |

use crate::clock::Clock;
use crate::collection::{self, CollectionReport};
use crate::config::HostConfig;
use crate::county::County;
use crate::cutoff::{self, CutoffReport, ExecutionReport};
use crate::db::{Db, DbError, ds, ts};
use crate::ledger::EntryKind;
use crate::outbox::{self, NoticeRequest, OutboxReport, SmsGateway};
use crate::payment::{self, Applied, PaymentError, PaymentNotice, Reconnection};
use crate::policy::PolicyEngine;
use crate::policy::bindings::NoticeKind;
use crate::relay::{self, RelayReport};
use crate::settlement::{self, SettlementError, SettlementReport};
use crate::warning::{self, WarningReport};
use chrono::NaiveDate;
use feegate_meter::fleet::FleetClient;
use feegate_meter::registers::RelayCommand;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Settlement(#[from] SettlementError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
}

/// Everything one host process runs with. Cloning shares everything (pool, engine, county).
#[derive(Clone)]
pub struct Host {
    pub db: Db,
    pub engine: Arc<PolicyEngine>,
    /// Reaches every meter through its link (Modbus, DL/T 645 gateway, 1376.1 terminal).
    pub meters: FleetClient,
    pub county: Arc<County>,
    pub config: HostConfig,
    pub clock: Arc<dyn Clock>,
    pub sms: Arc<dyn SmsGateway>,
}

/// What the morning stages did.
#[derive(Debug, Clone, Default)]
pub struct MorningReport {
    pub collection: CollectionReport,
    pub settlement: SettlementReport,
    pub warning: WarningReport,
    /// Stages skipped because `job_runs` says they completed before.
    pub skipped_stages: Vec<&'static str>,
    /// Wall-clock seconds of each stage that ran: `collection`, `settlement`, `warning`.
    pub stage_seconds: Vec<(&'static str, f64)>,
}

impl Host {
    /// True when `stage` completed for business `date` (`job_runs`).
    pub(crate) async fn stage_done(&self, stage: &str, date: NaiveDate) -> Result<bool, DbError> {
        Ok(sqlx::query(
            "SELECT 1 FROM job_runs WHERE county = $1 AND stage = $2 AND business_date = $3",
        )
        .bind(&self.county.county)
        .bind(stage)
        .bind(ds(date))
        .fetch_optional(&self.db.pool)
        .await?
        .is_some())
    }

    /// Records that `stage` completed for business `date` (idempotent).
    pub(crate) async fn mark_done(&self, stage: &str, date: NaiveDate) -> Result<(), DbError> {
        sqlx::query("INSERT INTO job_runs (county, stage, business_date, completed_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(&self.county.county)
            .bind(stage)
            .bind(ds(date))
            .bind(ts(self.clock.now()))
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Collection, settlement and warnings for `date` (readings frozen at 00:00 of
    /// `date`, consumption of the day before). Every stage is idempotent on its own;
    /// the `job_runs` marks only save the work of re-checking.
    pub async fn run_morning(&self, date: NaiveDate) -> Result<MorningReport, JobError> {
        let mut report = MorningReport::default();
        // One snapshot for the whole run: an activation meanwhile applies from the next run.
        let policies = self.county.snapshot();
        if self.stage_done("collection", date).await? {
            report.skipped_stages.push("collection");
        } else {
            let began = std::time::Instant::now();
            report.collection = collection::collect_daily(
                &self.db,
                &self.meters,
                &self.county.county,
                date,
                self.clock.now(),
            )
            .await?;
            self.mark_done("collection", date).await?;
            report
                .stage_seconds
                .push(("collection", began.elapsed().as_secs_f64()));
        }
        if self.stage_done("settlement", date).await? {
            report.skipped_stages.push("settlement");
        } else {
            let began = std::time::Instant::now();
            report.settlement = settlement::settle(
                &self.db,
                &self.engine,
                &self.county.county,
                &policies,
                date,
                self.clock.now(),
                &self.config.settlement,
            )
            .await?;
            self.mark_done("settlement", date).await?;
            report
                .stage_seconds
                .push(("settlement", began.elapsed().as_secs_f64()));
        }
        // Warnings are a stage of their own: after a crash between settlement and
        // warnings, the accounts settled for the day are read back from `settlements`,
        // less those already assessed today, so no warning is lost or doubled.
        if self.stage_done("warning", date).await? {
            report.skipped_stages.push("warning");
        } else {
            let began = std::time::Instant::now();
            let settled_day = crate::db::ds(date.pred_opt().expect("date after 0001-01-01"));
            let accounts: Vec<String> = sqlx::query(
                "SELECT s.account_id FROM settlements s JOIN accounts a ON a.account_id = s.account_id
                 WHERE a.county = $1 AND s.business_date = $2
                   AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.kind = 'warning' AND d.account_id = s.account_id AND d.business_date = $3)
                 ORDER BY s.account_id",
            )
            .bind(&self.county.county)
            .bind(settled_day)
            .bind(crate::db::ds(date))
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(|r| sqlx::Row::try_get(r, 0))
            .collect::<Result<_, _>>()?;
            report.warning = warning::assess(
                &self.db,
                &self.engine,
                &self.county.county,
                &policies,
                &accounts,
                date,
                self.clock.now(),
                &self.config.settlement,
            )
            .await?;
            self.mark_done("warning", date).await?;
            report
                .stage_seconds
                .push(("warning", began.elapsed().as_secs_f64()));
        }
        Ok(report)
    }

    /// Queues the "payment received" SMS for channel payments applied in the last two
    /// days that have none yet (the channel path answers the channel without waiting
    /// for the notice component; this sweep, run before every outbox delivery, tells
    /// the customer). Once per channel transaction (the notice's dedup key); an account
    /// held at the notice stage (its notice component failed) is skipped until a person
    /// releases it. Returns how many were asked for.
    pub async fn notify_channel_payments(&self) -> Result<u32, JobError> {
        let since = ts(self.clock.now() - chrono::Duration::days(2));
        let rows = sqlx::query(
            "SELECT i.channel, i.channel_txn_id, i.account_id, i.amount_fen, a.balance_fen
             FROM payment_inbox i JOIN accounts a ON a.account_id = i.account_id
             WHERE a.county = $1 AND i.kind = 'payment' AND i.status = 'applied' AND i.applied_at >= $2
               AND NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.dedup_key = 'paid:' || i.channel || ':' || i.channel_txn_id)
               AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.account_id = i.account_id AND h.stage = 'notice' AND h.released_at IS NULL)
             ORDER BY i.inbox_id",
        )
        .bind(&self.county.county)
        .bind(since)
        .fetch_all(&self.db.pool)
        .await?;
        let mut asked = 0;
        for r in rows {
            let (channel, txn, account): (String, String, String) = (
                sqlx::Row::try_get(&r, 0)?,
                sqlx::Row::try_get(&r, 1)?,
                sqlx::Row::try_get(&r, 2)?,
            );
            let notice = PaymentNotice {
                channel: &channel,
                channel_txn_id: &txn,
                account_id: &account,
                amount_fen: sqlx::Row::try_get(&r, 3)?,
            };
            // The balance now: what the customer has when the SMS arrives.
            self.notify_payment(&notice, sqlx::Row::try_get(&r, 4)?)
                .await?;
            asked += 1;
        }
        Ok(asked)
    }

    /// Delivers due SMS outside the county's quiet hours, with retries, backoff and
    /// escalation ([`outbox::deliver`]), after queueing the "payment received" notices of
    /// channel payments ([`Host::notify_channel_payments`]).
    pub async fn run_outbox(&self) -> Result<OutboxReport, JobError> {
        self.notify_channel_payments().await?;
        Ok(outbox::deliver(
            &self.db,
            self.sms.as_ref(),
            &self.county.county,
            &self.county.snapshot().messages,
            &self.config.outbox,
            self.clock.now(),
        )
        .await?)
    }

    /// Runs the cutoff decisions now.
    pub async fn run_cutoff(&self) -> Result<CutoffReport, JobError> {
        let policies = self.county.snapshot();
        Ok(cutoff::run(
            &self.db,
            &self.engine,
            &self.county,
            &policies,
            self.clock.now(),
            &self.config.relay,
        )
        .await?)
    }

    /// Executes approved disconnection work orders now.
    pub async fn execute_approved(&self) -> Result<ExecutionReport, JobError> {
        Ok(
            cutoff::execute_approved(&self.db, &self.county, self.clock.now(), &self.config.relay)
                .await?,
        )
    }

    /// Issues and verifies relay commands, tells customers what happened, and starts
    /// reconnection for every disconnected account that is back in credit (a payment
    /// that raced a trip, or a reconnection whose command failed) — so nobody who has
    /// paid is left in the dark.
    pub async fn drive_relays(&self) -> Result<RelayReport, JobError> {
        let mut report = self.drive_relays_once().await?;
        if self.reconnect_sweep().await? > 0 {
            let again = self.drive_relays_once().await?;
            report.issued += again.issued;
            report.events.extend(again.events);
        }
        Ok(report)
    }

    /// Starts reconnection for open relays of accounts in credit with no command in
    /// flight; returns how many got a relay command.
    async fn reconnect_sweep(&self) -> Result<u32, JobError> {
        let now = self.clock.now();
        // Armed relays (close-allowed) whose command has ended: the status word says
        // whether the customer has pressed the button since; the account follows it.
        let armed = sqlx::query(&format!(
            "SELECT a.account_id, {} FROM accounts a JOIN meters m ON m.meter_id = a.meter_id
             WHERE a.county = $1 AND a.relay_state = 'close-allowed'
               AND NOT EXISTS (SELECT 1 FROM relay_commands c WHERE c.account_id = a.account_id
                               AND c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer'))",
            collection::LINK_COLUMNS
        ))
        .bind(&self.county.county)
        .fetch_all(&self.db.pool)
        .await?;
        for r in armed {
            let account: String = sqlx::Row::try_get(&r, 0)?;
            let link = match collection::link_from_row(&r, 1) {
                Ok(link) => link,
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "armed relay not refreshed");
                    continue;
                }
            };
            if let Ok(state) = self.meters.read_relay(&link).await {
                sqlx::query("UPDATE accounts SET relay_state = $2 WHERE account_id = $1")
                    .bind(&account)
                    .bind(relay::state_name(state))
                    .execute(&self.db.pool)
                    .await?;
            }
        }
        let accounts: Vec<String> = sqlx::query(
            "SELECT a.account_id FROM accounts a WHERE a.county = $1 AND a.relay_state = 'open' AND a.balance_fen >= 0
               AND NOT EXISTS (SELECT 1 FROM relay_commands c WHERE c.account_id = a.account_id
                               AND c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer'))
               AND NOT EXISTS (SELECT 1 FROM work_orders w WHERE w.account_id = a.account_id
                               AND w.kind = 'call-before-reconnection' AND w.status = 'open')",
        )
        .bind(&self.county.county)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| sqlx::Row::try_get(r, 0))
        .collect::<Result<_, _>>()?;
        let policies = self.county.snapshot();
        let mut commanded = 0;
        for account in accounts {
            let r = payment::reconnect_if_due(
                &self.db,
                &self.engine,
                &self.county.county,
                &policies,
                &account,
                now,
                &self.config.relay,
            )
            .await?;
            commanded += u32::from(matches!(r, Reconnection::Commanded(_)));
        }
        Ok(commanded)
    }

    async fn drive_relays_once(&self) -> Result<RelayReport, JobError> {
        let now = self.clock.now();
        let report = relay::drive(
            &self.db,
            &self.meters,
            &self.county.floor,
            &self.county.county,
            now,
        )
        .await?;
        self.announce_relay_events(&report, now).await?;
        Ok(report)
    }

    /// Reconnects one account now if its balance allows it (a payment just arrived):
    /// the reconnection decision, then only that account's relay command is issued and
    /// verified. Returns the decision and, when a command was issued, its report.
    pub async fn reconnect_now(
        &self,
        account_id: &str,
    ) -> Result<(Reconnection, Option<RelayReport>), JobError> {
        let now = self.clock.now();
        let reconnection = payment::reconnect_if_due(
            &self.db,
            &self.engine,
            &self.county.county,
            &self.county.snapshot(),
            account_id,
            now,
            &self.config.relay,
        )
        .await?;
        if !matches!(reconnection, Reconnection::Commanded(_)) {
            return Ok((reconnection, None));
        }
        let command_id: i64 = sqlx::query(
            "SELECT command_id FROM relay_commands WHERE account_id = $1 AND status = 'pending' ORDER BY command_id DESC",
        )
        .bind(account_id)
        .fetch_one(&self.db.pool)
        .await
        .and_then(|r| sqlx::Row::try_get(&r, 0))?;
        let report = self.drive_one(command_id, now).await?;
        Ok((reconnection, Some(report)))
    }

    /// Issues and verifies one relay command now and tells the customer what it did.
    async fn drive_one(
        &self,
        command_id: i64,
        now: chrono::NaiveDateTime,
    ) -> Result<RelayReport, JobError> {
        let report = relay::drive_command(
            &self.db,
            &self.meters,
            &self.county.floor,
            &self.county.county,
            command_id,
            now,
        )
        .await?;
        self.announce_relay_events(&report, now).await?;
        Ok(report)
    }

    /// Executes one approved disconnection work order now as `executed_by` (a person
    /// through the API): [`cutoff::execute_one`] (two-person rule, still in arrears,
    /// the safety floor at this moment), then the trip command is issued and verified at
    /// once, like a payment's reconnection. Returns what execution did and, when a
    /// command was issued, its report.
    pub async fn execute_work_order(
        &self,
        work_order_id: i64,
        executed_by: &str,
    ) -> Result<(cutoff::Executed, Option<RelayReport>), JobError> {
        let now = self.clock.now();
        let executed = cutoff::execute_one(
            &self.db,
            &self.county,
            work_order_id,
            executed_by,
            now,
            &self.config.relay,
        )
        .await?;
        if !matches!(executed, cutoff::Executed::Tripped { .. }) {
            return Ok((executed, None));
        }
        let command: Option<i64> = sqlx::query(
            "SELECT command_id FROM relay_commands WHERE decision_key = $1 AND status = 'pending'",
        )
        .bind(format!("work-order:{work_order_id}"))
        .fetch_optional(&self.db.pool)
        .await?
        .map(|r| sqlx::Row::try_get(&r, 0))
        .transpose()?;
        let Some(command_id) = command else {
            return Ok((executed, None));
        };
        let report = self.drive_one(command_id, now).await?;
        Ok((executed, Some(report)))
    }

    /// Completes a call-before-reconnection work order as `who` after they called the
    /// customer ([`payment::complete_call_first`]), then issues and verifies its
    /// direct-close command at once, like a payment's reconnection. Returns what the
    /// completion did and, when a command was issued, its report.
    pub async fn complete_call_first(
        &self,
        work_order_id: i64,
        who: &str,
        note: &str,
    ) -> Result<(payment::CallFirstCompletion, Option<RelayReport>), JobError> {
        let now = self.clock.now();
        let done = payment::complete_call_first(
            &self.db,
            work_order_id,
            who,
            note,
            now,
            &self.config.relay,
        )
        .await?;
        let payment::CallFirstCompletion::Reconnecting { command_id } = done else {
            return Ok((done, None));
        };
        let report = self.drive_one(command_id, now).await?;
        Ok((done, Some(report)))
    }

    /// Tells customers what their relay commands did (SMS via the outbox) and opens a
    /// work order for each failed reconnection.
    async fn announce_relay_events(
        &self,
        report: &RelayReport,
        now: chrono::NaiveDateTime,
    ) -> Result<(), JobError> {
        let policies = self.county.snapshot();
        for e in &report.events {
            let kind = match (e.command, e.confirmed, e.awaiting_customer) {
                (RelayCommand::Trip, true, _) => NoticeKind::Disconnected,
                (RelayCommand::CloseAllowed, false, true) => NoticeKind::PressButtonToRestore,
                (RelayCommand::CloseAllowed | RelayCommand::DirectClose, true, _) => {
                    NoticeKind::Reconnected
                }
                (RelayCommand::CloseAllowed | RelayCommand::DirectClose, false, false) => {
                    // A reconnection that failed (no confirmation, or the customer never
                    // pressed the button): a person follows up; nobody is left dark
                    // without someone knowing.
                    let mut conn = self.db.pool.acquire().await?;
                    let station: String =
                        sqlx::query("SELECT station_id FROM accounts WHERE account_id = $1")
                            .bind(&e.account_id)
                            .fetch_one(&mut *conn)
                            .await
                            .and_then(|r| sqlx::Row::try_get(&r, 0))?;
                    let evidence = serde_json::json!({ "command_id": e.command_id, "command": relay::command_name(e.command), "detail": e.detail });
                    sqlx::query(
                        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
                         VALUES ('relay-failure', $1, $2, $3, 'open', $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
                    )
                    .bind(&e.account_id)
                    .bind(station)
                    .bind(format!("relay-failure:{}", e.command_id))
                    .bind(evidence.to_string())
                    .bind(crate::db::ts(now))
                    .execute(&mut *conn)
                    .await?;
                    continue;
                }
                _ => continue,
            };
            let mut conn = self.db.pool.acquire().await?;
            let balance_fen = crate::accountview::AccountFacts::load(&mut conn, &e.account_id)
                .await?
                .balance_fen;
            let dedup_key = format!("relay:{}:{}", e.command_id, outbox::kind_name(kind));
            let req = NoticeRequest::event(kind, &e.account_id, now.date(), balance_fen, dedup_key);
            // The notice decision and its outbox row commit together.
            let mut tx = crate::db::begin_write(&mut conn).await?;
            outbox::queue_notice(
                &mut tx,
                &self.engine,
                &self.county.county,
                &policies,
                &req,
                now,
            )
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Queues the "payment received" SMS for an applied payment (once per channel
    /// transaction: the notice's dedup key), worded by the county's notice component.
    pub async fn notify_payment(
        &self,
        p: &PaymentNotice<'_>,
        balance_after_fen: crate::money::Fen,
    ) -> Result<(), JobError> {
        let now = self.clock.now();
        let mut conn = self.db.pool.acquire().await?;
        let dedup_key = format!("paid:{}:{}", p.channel, p.channel_txn_id);
        let req = NoticeRequest {
            amount_fen: Some(p.amount_fen),
            ..NoticeRequest::event(
                NoticeKind::PaymentReceived,
                p.account_id,
                now.date(),
                balance_after_fen,
                dedup_key,
            )
        };
        let mut tx = crate::db::begin_write(&mut conn).await?;
        outbox::queue_notice(
            &mut tx,
            &self.engine,
            &self.county.county,
            &self.county.snapshot(),
            &req,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a settled payment; if it lifts a disconnected account to its reconnect
    /// line, reconnection starts at once (the relay command is issued and verified in
    /// this call).
    pub async fn pay(&self, p: &PaymentNotice<'_>) -> Result<(Applied, Reconnection), JobError> {
        let now = self.clock.now();
        let applied = payment::apply(&self.db, p, EntryKind::Payment, now).await?;
        let policies = self.county.snapshot();
        if let Applied::Posted { balance_after_fen } = applied {
            self.notify_payment(p, balance_after_fen).await?;
        }
        let reconnection = payment::reconnect_if_due(
            &self.db,
            &self.engine,
            &self.county.county,
            &policies,
            p.account_id,
            now,
            &self.config.relay,
        )
        .await?;
        if matches!(reconnection, Reconnection::Commanded(_)) {
            self.drive_relays().await?;
        }
        Ok((applied, reconnection))
    }
}
