//! Meter replacements (换表) recorded by field staff: the account moves to the new meter, and
//! settlement bills the period that contains the replacement as the old meter's tail plus
//! the new meter's head ([`crate::settlement::check_delta_across_replacement`]):
//! (old final − old previous reading) + (new current reading − new start).
//!
//! Table `meter_replacements` (migration 0005) is append-only; a meter is replaced at most
//! once (its id is unique among old and among new meters).

use crate::db::{Db, DbError, ds, parse_ts, ts};
use crate::money::{CentiKwh, centi_kwh_to_kwh, register_centi_kwh};
use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use sqlx::Row;

/// One replacement as field staff report it.
#[derive(Debug, Clone)]
pub struct ReplacementOrder {
    /// The account whose meter was replaced.
    pub account_id: String,
    /// Id of the new meter (must not exist yet).
    pub new_meter_id: String,
    /// The old meter's register when it was removed, kWh (at most two decimals).
    pub old_final_kwh: Decimal,
    /// The new meter's register when it was fitted, kWh (at most two decimals; often 0).
    pub new_start_kwh: Decimal,
    /// County-local time the old meter came off.
    pub replaced_at: NaiveDateTime,
    /// Who replaced it.
    pub replaced_by: String,
    /// The new meter's DL/T 645 address (12 digits), when it differs from the old one's.
    pub new_address: Option<String>,
    /// The new meter's Modbus unit id, when it differs from the old one's.
    pub new_unit: Option<u8>,
}

/// What [`record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored; the account now points at the new meter.
    New { old_meter_id: String },
    /// The same replacement was recorded before; nothing changed.
    AlreadyRecorded { old_meter_id: String },
}

/// Why a replacement was refused. Nothing is stored when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ReplacementError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A register reading of the order in 0.01 kWh, checked by
/// [`crate::money::register_centi_kwh`]: 0 to 999999.99 kWh (the DL/T 645 register range,
/// [`crate::money::REGISTER_MAX_CENTI_KWH`]) with at most two decimals. Checked before
/// anything is read or written: `meter_replacements` is append-only, so a wrong value
/// would stay for good.
fn centi(what: &str, kwh: Decimal) -> Result<CentiKwh, ReplacementError> {
    register_centi_kwh(kwh).map_err(|e| ReplacementError::Invalid(format!("{what}: {e}")))
}

/// Records a replacement in one transaction: inserts the new meter (the old meter's protocol,
/// link, CT/PT ratios, with `new_address` / `new_unit` if given), moves the account to it,
/// and stores the replacement. Idempotent: the same order again returns
/// [`Recorded::AlreadyRecorded`]; a different one for a meter already replaced is refused.
///
/// Refused (nothing stored): a reading outside the register range (0 to 999999.99 kWh, at
/// most two decimals), an unknown account, a time after `now`, an old final reading
/// below the old meter's last stored reading before the replacement, a new meter id that
/// exists, a new address on a Modbus meter or a new unit on a DL/T 645 meter.
pub async fn record(
    db: &Db,
    order: &ReplacementOrder,
    now: NaiveDateTime,
) -> Result<Recorded, ReplacementError> {
    let old_final = centi("old final reading", order.old_final_kwh)?;
    let new_start = centi("new start reading", order.new_start_kwh)?;
    if order.replaced_by.trim().is_empty() {
        return Err(ReplacementError::Invalid(
            "--who is empty: name the person who replaced the meter".into(),
        ));
    }
    if order.replaced_at > now {
        return Err(ReplacementError::Invalid(format!(
            "replacement time {} is in the future (now {now}); record it after it happened",
            order.replaced_at
        )));
    }
    let mut tx = db.begin_write().await?;
    let Some(account) = sqlx::query(
        "SELECT a.meter_id, m.protocol FROM accounts a JOIN meters m ON m.meter_id = a.meter_id WHERE a.account_id = $1",
    )
    .bind(&order.account_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(ReplacementError::Invalid(format!(
            "no account {}: check the account number",
            order.account_id
        )));
    };
    let current: String = account.try_get(0)?;
    let protocol: String = account.try_get(1)?;

    // The same order again: the account already points at the new meter.
    if let Some(prev) = sqlx::query(
        "SELECT old_meter_id, old_final_centi_kwh, new_start_centi_kwh, replaced_at FROM meter_replacements
         WHERE account_id = $1 AND new_meter_id = $2",
    )
    .bind(&order.account_id)
    .bind(&order.new_meter_id)
    .fetch_optional(&mut *tx)
    .await?
    {
        let old_meter_id: String = prev.try_get(0)?;
        let same = prev.try_get::<i64, _>(1)? == old_final
            && prev.try_get::<i64, _>(2)? == new_start
            && parse_ts(&prev.try_get::<String, _>(3)?)? == order.replaced_at;
        if same {
            return Ok(Recorded::AlreadyRecorded { old_meter_id });
        }
        return Err(ReplacementError::Invalid(format!(
            "meter {} already replaced {old_meter_id} on account {} with other readings or time; \
             a recorded replacement is not changed: ask a supervisor to correct it",
            order.new_meter_id, order.account_id
        )));
    }
    if order.new_address.is_some() && !matches!(protocol.as_str(), "dlt645" | "qgdw376") {
        return Err(ReplacementError::Invalid(format!(
            "meter {current} speaks {protocol}: --new-address is a DL/T 645 address; use --new-unit"
        )));
    }
    if order.new_unit.is_some() && !protocol.starts_with("modbus") {
        return Err(ReplacementError::Invalid(format!(
            "meter {current} speaks {protocol}: --new-unit is a Modbus unit id; use --new-address"
        )));
    }
    if let Some(a) = &order.new_address
        && !(a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ReplacementError::Invalid(format!(
            "--new-address {a:?} is not 12 decimal digits (as on the meter's nameplate)"
        )));
    }
    // The old meter cannot have counted less than its last reading before it came off.
    if let Some(last) = sqlx::query(
        "SELECT reading_date, register_centi_kwh FROM readings WHERE meter_id = $1 AND reading_date <= $2
         ORDER BY reading_date DESC LIMIT 1",
    )
    .bind(&current)
    .bind(ds(order.replaced_at.date()))
    .fetch_optional(&mut *tx)
    .await?
    {
        let (date, reg): (String, i64) = (last.try_get(0)?, last.try_get(1)?);
        if old_final < reg {
            return Err(ReplacementError::Invalid(format!(
                "old final reading {} kWh is below meter {current}'s reading of {} kWh on {date}: \
                 check the final reading on the removed meter",
                centi_kwh_to_kwh(old_final),
                centi_kwh_to_kwh(reg)
            )));
        }
    }
    if sqlx::query("SELECT 1 FROM meters WHERE meter_id = $1")
        .bind(&order.new_meter_id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(ReplacementError::Invalid(format!(
            "meter {} exists already: give the new meter's own id",
            order.new_meter_id
        )));
    }
    sqlx::query(
        "INSERT INTO meters (meter_id, customer_id, protocol, gateway, unit_id, meter_address, terminal, terminal_port,
                             serial_port, baud_rate, parity, requires_security, ct_ratio, pt_ratio, installed_on)
         SELECT $2, customer_id, protocol, gateway, COALESCE($3, unit_id), COALESCE($4, meter_address), terminal, terminal_port,
                serial_port, baud_rate, parity, requires_security, ct_ratio, pt_ratio, $5
         FROM meters WHERE meter_id = $1",
    )
    .bind(&current)
    .bind(&order.new_meter_id)
    .bind(order.new_unit.map(i64::from))
    .bind(&order.new_address)
    .bind(ds(order.replaced_at.date()))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE accounts SET meter_id = $2 WHERE account_id = $1")
        .bind(&order.account_id)
        .bind(&order.new_meter_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO meter_replacements (account_id, old_meter_id, new_meter_id, old_final_centi_kwh, new_start_centi_kwh,
                                         replaced_at, replaced_by, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&order.account_id)
    .bind(&current)
    .bind(&order.new_meter_id)
    .bind(old_final)
    .bind(new_start)
    .bind(ts(order.replaced_at))
    .bind(order.replaced_by.trim())
    .bind(ts(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recorded::New {
        old_meter_id: current,
    })
}

/// A stored replacement inside a settlement period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReplacement {
    pub old_meter_id: String,
    pub new_meter_id: String,
    pub replacement: crate::settlement::Replacement,
}

/// Replacements of the accounts `first..=last` (by account id) made before `before`
/// (county-local), each as `(account_id, replaced_at, replacement)`, by account and then
/// oldest first. Settlement reads a batch of accounts' replacements with one query and
/// keeps those inside each account's period.
pub async fn of_accounts(
    conn: &mut sqlx::AnyConnection,
    first: &str,
    last: &str,
    before: NaiveDateTime,
) -> Result<Vec<(String, NaiveDateTime, StoredReplacement)>, DbError> {
    let rows = sqlx::query(
        "SELECT account_id, replaced_at, old_meter_id, new_meter_id, old_final_centi_kwh, new_start_centi_kwh
         FROM meter_replacements
         WHERE account_id >= $1 AND account_id <= $2 AND replaced_at < $3 ORDER BY account_id, replaced_at",
    )
    .bind(first)
    .bind(last)
    .bind(ts(before))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                parse_ts(&r.try_get::<String, _>(1)?)?,
                StoredReplacement {
                    old_meter_id: r.try_get(2)?,
                    new_meter_id: r.try_get(3)?,
                    replacement: crate::settlement::Replacement {
                        old_final: r.try_get(4)?,
                        new_start: r.try_get(5)?,
                    },
                },
            ))
        })
        .collect()
}
