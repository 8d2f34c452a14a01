//! Relay commands: issued at most once per decision, with a deadline, and done only
//! when a fresh status read confirms the relay state — never on the meter's
//! acknowledgement alone.
//!
//! Life of a command: `pending` (written with its decision) → `issuing` (committed
//! before the frame goes out) → `awaiting-confirmation` → `confirmed`; a close-allowed
//! (合闸允许) command waits in `awaiting-customer` until the status read shows the
//! customer pressed the button. A command found in `issuing` after a crash is never
//! sent again: its outcome is established by reading the relay; if the relay is not in
//! the target state it is marked `failed` and a new decision must ask again.

use crate::config::RelayConfig;
use crate::db::{Db, DbError, parse_ts, ts};
use crate::floor::{FloorRefusal, SafetyFloor};
use chrono::NaiveDateTime;
use feegate_meter::fleet::FleetClient;
use feegate_meter::registers::{RelayCommand, RelayState};
use sqlx::{AnyConnection, Row};

/// The command kinds, as stored.
pub fn command_name(c: RelayCommand) -> &'static str {
    match c {
        RelayCommand::Trip => "trip",
        RelayCommand::CloseAllowed => "close-allowed",
        RelayCommand::DirectClose => "direct-close",
    }
}

fn command_from(s: &str) -> Result<RelayCommand, DbError> {
    match s {
        "trip" => Ok(RelayCommand::Trip),
        "close-allowed" => Ok(RelayCommand::CloseAllowed),
        "direct-close" => Ok(RelayCommand::DirectClose),
        other => Err(DbError::Corrupt(format!("relay command {other:?}"))),
    }
}

/// Stored name of a relay state.
pub fn state_name(s: RelayState) -> &'static str {
    match s {
        RelayState::Closed => "closed",
        RelayState::Open => "open",
        RelayState::CloseAllowed => "close-allowed",
    }
}

/// Creates the command for a decision (idempotent by `decision_key`); returns its id,
/// or none when the decision already has a command.
pub async fn create(
    conn: &mut AnyConnection,
    account_id: &str,
    decision_key: &str,
    command: RelayCommand,
    now: NaiveDateTime,
    cfg: &RelayConfig,
) -> Result<Option<i64>, DbError> {
    let deadline = now
        + match command {
            RelayCommand::CloseAllowed => cfg.customer_press_deadline,
            _ => cfg.confirm_deadline,
        };
    let row = sqlx::query(
        "INSERT INTO relay_commands (account_id, meter_id, decision_key, command, status, created_at, deadline)
         SELECT account_id, meter_id, $2, $3, 'pending', $4, $5 FROM accounts WHERE account_id = $1
         ON CONFLICT (decision_key) DO NOTHING RETURNING command_id",
    )
    .bind(account_id)
    .bind(decision_key)
    .bind(command_name(command))
    .bind(ts(now))
    .bind(ts(deadline))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// A command that reached a final state in a [`drive`] pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEvent {
    pub command_id: i64,
    pub account_id: String,
    pub command: RelayCommand,
    /// True when confirmed by a status read; false when failed.
    pub confirmed: bool,
    /// For close-allowed: the meter is armed and waits for the customer (not final).
    pub awaiting_customer: bool,
    pub detail: Option<String>,
}

/// Outcome of a [`drive`] pass.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    pub issued: u32,
    pub events: Vec<RelayEvent>,
}

/// True when `state` is where `command` should leave the relay. A close-allowed
/// command is complete only when the customer has closed the relay.
fn reached(command: RelayCommand, state: RelayState) -> bool {
    match command {
        RelayCommand::Trip => state == RelayState::Open,
        RelayCommand::CloseAllowed | RelayCommand::DirectClose => state == RelayState::Closed,
    }
}

/// Outstanding commands with their meters' links (columns: id, account, command,
/// status, deadline, decision key, then [`crate::collection::LINK_COLUMNS`]).
fn outstanding_sql(and: &str) -> String {
    format!(
        "SELECT c.command_id, c.account_id, c.command, c.status, c.deadline, c.decision_key, {}
         FROM relay_commands c JOIN meters m ON m.meter_id = c.meter_id
         WHERE c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer') {and}
         ORDER BY c.command_id",
        crate::collection::LINK_COLUMNS
    )
}

/// Issues pending commands and verifies outstanding ones with fresh status reads.
pub async fn drive(
    db: &Db,
    client: &FleetClient,
    floor: &SafetyFloor,
    county: &str,
    now: NaiveDateTime,
) -> Result<RelayReport, DbError> {
    let rows = sqlx::query(&outstanding_sql(""))
        .fetch_all(&db.pool)
        .await?;
    drive_rows(db, client, floor, county, now, rows).await
}

/// [`drive`] for one command only: a payment's reconnection is issued at once without
/// walking every outstanding command of the county.
pub async fn drive_command(
    db: &Db,
    client: &FleetClient,
    floor: &SafetyFloor,
    county: &str,
    command_id: i64,
    now: NaiveDateTime,
) -> Result<RelayReport, DbError> {
    let rows = sqlx::query(&outstanding_sql("AND c.command_id = $1"))
        .bind(command_id)
        .fetch_all(&db.pool)
        .await?;
    drive_rows(db, client, floor, county, now, rows).await
}

async fn drive_rows(
    db: &Db,
    client: &FleetClient,
    floor: &SafetyFloor,
    county: &str,
    now: NaiveDateTime,
    rows: Vec<sqlx::any::AnyRow>,
) -> Result<RelayReport, DbError> {
    let mut report = RelayReport::default();
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let account_id: String = r.try_get(1)?;
        let command = command_from(&r.try_get::<String, _>(2)?)?;
        let mut status: String = r.try_get(3)?;
        let deadline = parse_ts(&r.try_get::<String, _>(4)?)?;
        let link = match crate::collection::link_from_row(&r, 6) {
            Ok(link) => link,
            Err(e) => {
                let why = format!("not sent: {e}");
                fail(db, id, &why, &mut report, &account_id, command).await?;
                continue;
            }
        };

        if status == "pending" && command == RelayCommand::Trip {
            // A trip is re-checked at the moment the frame would leave: a payment may
            // have arrived, the deadline passed, or the clock moved into a protected
            // window since the decision (e.g. a restart in the evening).
            let automatic = !r.try_get::<String, _>(5)?.starts_with("work-order:");
            if let Some(why) =
                trip_no_longer_due(db, floor, county, &account_id, deadline, now, automatic).await?
            {
                // Only a command still pending: another driver may have sent it since.
                if set_status_if(db, id, "pending", "failed", Some(&why)).await? {
                    report
                        .events
                        .push(failed_event(id, &account_id, command, &why));
                }
                continue;
            }
        }
        if status == "pending" {
            // Commit "issuing" before the frame leaves: after a crash the command is
            // verified, never sent twice. Only the driver whose update moves it from
            // pending sends it: another pass that read it as pending too (the relays
            // job beside a payment's reconnection at once, or a second host) leaves it
            // to the one that claimed it.
            let claimed = sqlx::query("UPDATE relay_commands SET status = 'issuing', issued_at = $2 WHERE command_id = $1 AND status = 'pending'")
                .bind(id)
                .bind(ts(now))
                .execute(&db.pool)
                .await?
                .rows_affected()
                == 1;
            if !claimed {
                continue;
            }
            // DL/T 645 commands carry a validity deadline: the command's own.
            match client.send_relay(&link, command, deadline).await {
                Ok(()) => {
                    set_status(db, id, "awaiting-confirmation", None, None).await?;
                    status = "awaiting-confirmation".into();
                    report.issued += 1;
                }
                Err(e) if e.refused_before_sending() => {
                    // Nothing left the host (e.g. a meter that needs the security module
                    // and none is configured): fail now, clearly, instead of waiting.
                    let why = format!("not sent: {e}");
                    fail(db, id, &why, &mut report, &account_id, command).await?;
                    continue;
                }
                Err(e) => {
                    // The meter may or may not have acted; verification below decides.
                    tracing::warn!(command_id = id, error = %e, "relay command not acknowledged");
                }
            }
        }

        let state = client.read_relay(&link).await;
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                if now > deadline {
                    fail(
                        db,
                        id,
                        &format!("no status read before the deadline: {e}"),
                        &mut report,
                        &account_id,
                        command,
                    )
                    .await?;
                }
                continue;
            }
        };
        if reached(command, state) {
            let mut tx = db.begin_write().await?;
            sqlx::query("UPDATE relay_commands SET status = 'confirmed', confirmed_at = $2 WHERE command_id = $1")
                .bind(id)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
            let disconnected_at = (command == RelayCommand::Trip).then(|| ts(now));
            sqlx::query(
                "UPDATE accounts SET relay_state = $2, disconnected_at = $3 WHERE account_id = $1",
            )
            .bind(&account_id)
            .bind(state_name(state))
            .bind(disconnected_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            report.events.push(RelayEvent {
                command_id: id,
                account_id,
                command,
                confirmed: true,
                awaiting_customer: false,
                detail: None,
            });
        } else if command == RelayCommand::CloseAllowed && state == RelayState::CloseAllowed {
            if status != "awaiting-customer" {
                sqlx::query(
                    "UPDATE accounts SET relay_state = 'close-allowed' WHERE account_id = $1",
                )
                .bind(&account_id)
                .execute(&db.pool)
                .await?;
                set_status(db, id, "awaiting-customer", None, None).await?;
                report.events.push(RelayEvent {
                    command_id: id,
                    account_id,
                    command,
                    confirmed: false,
                    awaiting_customer: true,
                    detail: None,
                });
            } else if now > deadline {
                fail(
                    db,
                    id,
                    "customer did not press the meter button before the deadline",
                    &mut report,
                    &account_id,
                    command,
                )
                .await?;
            }
        } else if status == "issuing" || now > deadline {
            // Either a crash left the outcome unknown, or the meter acknowledged but the
            // relay did not move: never count it as done.
            let why = if status == "issuing" {
                format!(
                    "relay reads {} after an unconfirmed send; not re-sent",
                    state_name(state)
                )
            } else {
                format!(
                    "relay still reads {} at the deadline (acknowledged without a state change?)",
                    state_name(state)
                )
            };
            fail(db, id, &why, &mut report, &account_id, command).await?;
        }
    }
    Ok(report)
}

/// Why a pending trip must not be sent any more, if it must not.
async fn trip_no_longer_due(
    db: &Db,
    floor: &SafetyFloor,
    county: &str,
    account_id: &str,
    deadline: NaiveDateTime,
    now: NaiveDateTime,
    automatic: bool,
) -> Result<Option<String>, DbError> {
    let mut conn = db.pool.acquire().await?;
    let facts = crate::accountview::AccountFacts::load(&mut conn, account_id).await?;
    if facts.balance_fen >= 0 {
        return Ok(Some(format!(
            "not sent: the balance is {} yuan, no longer in arrears",
            crate::money::format_yuan(facts.balance_fen)
        )));
    }
    if now > deadline {
        return Ok(Some(format!(
            "not sent: its deadline {deadline} has passed"
        )));
    }
    let refusals: Vec<FloorRefusal> = floor
        .check(&crate::cutoff::floor_facts(&mut conn, county, &facts, now, automatic).await?)
        .into_iter()
        // The station cap was applied when the trip was decided; this trip is in it.
        .filter(|r| !matches!(r, FloorRefusal::StationCapReached { .. }))
        .collect();
    if refusals.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "not sent: the safety floor refuses it now: {}",
        serde_json::to_string(&refusals).expect("refusals serialise")
    )))
}

async fn set_status(
    db: &Db,
    id: i64,
    status: &str,
    confirmed_at: Option<String>,
    detail: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE relay_commands SET status = $2, confirmed_at = COALESCE($3, confirmed_at), detail = COALESCE($4, detail) WHERE command_id = $1")
        .bind(id)
        .bind(status)
        .bind(confirmed_at)
        .bind(detail)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Moves command `id` from status `from` to `to` (with `detail`); false when it was no
/// longer in `from` (another driver moved it).
async fn set_status_if(
    db: &Db,
    id: i64,
    from: &str,
    to: &str,
    detail: Option<&str>,
) -> Result<bool, DbError> {
    Ok(sqlx::query("UPDATE relay_commands SET status = $3, detail = COALESCE($4, detail) WHERE command_id = $1 AND status = $2")
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(detail)
        .execute(&db.pool)
        .await?
        .rows_affected()
        == 1)
}

fn failed_event(id: i64, account_id: &str, command: RelayCommand, why: &str) -> RelayEvent {
    RelayEvent {
        command_id: id,
        account_id: account_id.to_string(),
        command,
        confirmed: false,
        awaiting_customer: false,
        detail: Some(why.to_string()),
    }
}

async fn fail(
    db: &Db,
    id: i64,
    why: &str,
    report: &mut RelayReport,
    account_id: &str,
    command: RelayCommand,
) -> Result<(), DbError> {
    set_status(db, id, "failed", None, Some(why)).await?;
    report
        .events
        .push(failed_event(id, account_id, command, why));
    Ok(())
}

/// True when the account has a relay command not yet final.
pub async fn has_active_command(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<bool, DbError> {
    Ok(sqlx::query(
        "SELECT 1 FROM relay_commands WHERE account_id = $1 AND status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')",
    )
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}
