//! Onboarding (业务受理): customer master data, meter, fee-control agreement and
//! account. The account stays `pending-prepayment` until the initial prepayment is
//! applied ([`crate::payment::apply`] with `EntryKind::Prepayment`).
//!
//! Phone-number check, at onboarding and on every agreement change ([`check_mobile`]):
//! the agreement's mobile number against the customer master data (档案). A mismatch
//! (or no number in the master data) opens a data-maintenance work order (档案维护); while
//! it is open the account reports `mobile_verified = false` to the policies and the
//! safety floor holds automatic disconnection for the customer
//! ([`crate::floor::FloorRefusal::MobileMismatch`]). It is resolved by
//! [`resolve_mobile_mismatch`] (`feegate mobile resolve`), or by an agreement change
//! whose number matches.

use crate::db::{Db, DbError, ts};
use crate::money::Fen;
use crate::policy::set::RolloutStage;
use chrono::NaiveDateTime;
use feegate_meter::dlt645_client::Link;
use feegate_meter::fleet::MeterLink;
use feegate_meter::serial::{Parity, SerialLine};
use sqlx::{AnyConnection, Row};
use thiserror::Error;

/// An onboarding or agreement change refused, with what to do.
#[derive(Debug, Error)]
pub enum OnboardingError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "{what} {number:?} is not a mainland mobile number (11 digits starting with 1); correct it and try again"
    )]
    BadMobile { what: &'static str, number: String },
    #[error("account {0} does not exist; check the account number")]
    UnknownAccount(String),
}

impl From<sqlx::Error> for OnboardingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Checks a mainland China mobile number: 11 digits, the first `1` (GB/T ITU-T E.164
/// national significant number for mobile networks, +86 1XX XXXX XXXX).
pub fn check_mobile_format(what: &'static str, number: &str) -> Result<(), OnboardingError> {
    let ok =
        number.len() == 11 && number.starts_with('1') && number.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(OnboardingError::BadMobile {
            what,
            number: number.to_string(),
        })
    }
}

/// Registers a county (idempotent).
pub async fn ensure_county(
    db: &Db,
    county: &str,
    display_name: &str,
    stage: RolloutStage,
) -> Result<(), DbError> {
    let stage = serde_json::to_value(stage).expect("stage serialises");
    sqlx::query("INSERT INTO counties (county, display_name, rollout_stage) VALUES ($1, $2, $3) ON CONFLICT (county) DO NOTHING")
        .bind(county)
        .bind(display_name)
        .bind(stage.as_str().unwrap_or("approval-gated"))
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Registers a supply station (供电所) (idempotent).
pub async fn ensure_station(
    db: &Db,
    station_id: &str,
    county: &str,
    name: &str,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO stations (station_id, county, name) VALUES ($1, $2, $3) ON CONFLICT (station_id) DO NOTHING")
        .bind(station_id)
        .bind(county)
        .bind(name)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Everything a fee-control application (费控申请) carries.
#[derive(Debug, Clone)]
pub struct Application {
    pub county: String,
    pub station_id: String,
    pub customer_id: String,
    pub customer_name: String,
    /// Mobile number in the customer master data (档案), if any.
    pub master_mobile: Option<String>,
    /// low-voltage-residential | low-voltage-commercial | high-voltage
    pub customer_class: String,
    pub vulnerable: bool,
    pub meter_id: String,
    /// How the meter is reached: protocol and link (gateway and unit id, DL/T 645 address
    /// behind a gateway, or behind a 1376.1 terminal port).
    pub link: MeterLink,
    pub ct_ratio: i64,
    pub pt_ratio: i64,
    pub account_id: String,
    /// 预警值, fen.
    pub alarm_threshold_fen: Fen,
    /// 代扣值, fen.
    pub auto_debit_fen: Option<Fen>,
    /// Mobile number on the agreement.
    pub mobile: String,
    /// A second contact on the agreement, who also gets warnings and disconnection
    /// notices; none if the agreement names none.
    pub second_mobile: Option<String>,
    /// 保电
    pub keep_power: bool,
    pub time_of_use: bool,
}

/// Result of onboarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onboarded {
    /// The agreement's mobile differs from the master data: a work order was opened.
    pub mobile_mismatch: bool,
}

/// Largest CT or PT ratio accepted (each). Real ratios stay far below (a 3000/5 A CT is
/// 600, a 110 kV/100 V PT is 1,100); the bound keeps register delta × CT × PT inside
/// 64-bit centi-kWh for any register value.
pub const MAX_TRANSFORMER_RATIO: i64 = 10_000;

/// Checks an application before anything is written: ids (1–64 characters: letters,
/// digits, `-`, `_`, `.`), a name (1–100 characters, no control characters), CT and PT
/// ratios (1..=[`MAX_TRANSFORMER_RATIO`]), and a link that names one meter (a Modbus
/// unit 1..=247; a DL/T 645 address that is neither broadcast nor a wildcard).
/// The message says which field and what to send.
pub fn check_application(a: &Application) -> Result<(), String> {
    for (what, id) in [
        ("customer_id", &a.customer_id),
        ("meter_id", &a.meter_id),
        ("account_id", &a.account_id),
        ("county", &a.county),
        ("station_id", &a.station_id),
    ] {
        let ok = (1..=64).contains(&id.chars().count())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "{what} {id:?}: use 1–64 letters, digits, '-', '_' or '.'"
            ));
        }
    }
    let name = a.customer_name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(format!(
            "customer_name {:?}: give the name as on the ID card, 1–100 characters",
            a.customer_name
        ));
    }
    for (what, r) in [("ct_ratio", a.ct_ratio), ("pt_ratio", a.pt_ratio)] {
        if !(1..=MAX_TRANSFORMER_RATIO).contains(&r) {
            return Err(format!(
                "{what} {r}: must be 1..={MAX_TRANSFORMER_RATIO} (1 for a direct-connected meter)"
            ));
        }
    }
    match &a.link {
        MeterLink::Modbus(m) if !(1..=247).contains(&m.unit) => Err(format!(
            "unit id {}: a Modbus meter is unit 1..=247 (0 is broadcast, 248–255 reserved)",
            m.unit
        )),
        MeterLink::ModbusRtu(m) if !(1..=247).contains(&m.unit) => Err(format!(
            "unit id {}: a Modbus meter is unit 1..=247 (0 is broadcast, 248–255 reserved)",
            m.unit
        )),
        MeterLink::Dlt645(m) if !m.address.is_unicast() => Err(format!(
            "meter address {}: give the meter's own 12-digit address (no broadcast 999999999999, no AA wildcards)",
            m.address
        )),
        _ => Ok(()),
    }
}

/// The account whose meter is already reached through `link` (same protocol, gateway or
/// serial port or terminal, and unit id or meter address), if any. Two accounts on one
/// physical meter would both be billed for it, and a trip for one would cut off the other.
pub async fn link_in_use(
    conn: &mut AnyConnection,
    link: &MeterLink,
) -> Result<Option<String>, DbError> {
    let c = link_columns(link);
    Ok(sqlx::query_scalar(
        "SELECT a.account_id FROM meters m JOIN accounts a ON a.meter_id = m.meter_id
         WHERE m.protocol = $1 AND COALESCE(m.gateway, '') = $2 AND COALESCE(m.unit_id, -1) = $3
           AND COALESCE(m.meter_address, '') = $4 AND COALESCE(m.terminal, '') = $5
           AND COALESCE(m.terminal_port, -1) = $6 AND COALESCE(m.serial_port, '') = $7
         LIMIT 1",
    )
    .bind(c.protocol)
    .bind(c.gateway.unwrap_or_default())
    .bind(c.unit_id.unwrap_or(-1))
    .bind(c.meter_address.unwrap_or_default())
    .bind(c.terminal.unwrap_or_default())
    .bind(c.terminal_port.unwrap_or(-1))
    .bind(c.serial_port.unwrap_or_default())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Serialises onboardings of one meter link until the caller's transaction ends, so that
/// two applications for the same physical meter under different ids cannot both pass
/// [`link_in_use`] before either commits. PostgreSQL: a transaction-scoped advisory lock on
/// a 64-bit hash of the link (a collision only makes two onboardings wait for each other).
/// SQLite needs none: a write transaction there already excludes every other writer.
async fn lock_link(conn: &mut AnyConnection, link: &MeterLink) -> Result<(), DbError> {
    if conn.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    let c = link_columns(link);
    let key = format!(
        "feegate meter link\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        c.protocol,
        c.gateway.unwrap_or_default(),
        c.unit_id.unwrap_or(-1),
        c.meter_address.unwrap_or_default(),
        c.terminal.unwrap_or_default(),
        c.terminal_port.unwrap_or(-1),
        c.serial_port.unwrap_or_default()
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Creates customer, meter, agreement and account in one transaction.
pub async fn onboard(db: &Db, a: &Application, now: NaiveDateTime) -> Result<Onboarded, DbError> {
    let mut tx = db.begin_write().await?;
    let onboarded = onboard_in(&mut tx, a, now).await?;
    tx.commit().await?;
    Ok(onboarded)
}

/// [`onboard`] inside the caller's transaction (`tx` must be in one), so the API can
/// apply the initial prepayment in the same commit. On error the caller rolls back.
pub async fn onboard_in(
    tx: &mut AnyConnection,
    a: &Application,
    now: NaiveDateTime,
) -> Result<Onboarded, DbError> {
    // The callers check first to answer 400 / 409; this is the last line for any other.
    check_application(a).map_err(|m| DbError::Corrupt(format!("application refused: {m}")))?;
    lock_link(&mut *tx, &a.link).await?;
    if let Some(other) = link_in_use(&mut *tx, &a.link).await? {
        return Err(DbError::Corrupt(format!(
            "application refused: that meter link is account {other}'s meter"
        )));
    }
    sqlx::query(
        "INSERT INTO customers (customer_id, county, station_id, name, master_mobile, customer_class, vulnerable) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&a.customer_id)
    .bind(&a.county)
    .bind(&a.station_id)
    .bind(&a.customer_name)
    .bind(&a.master_mobile)
    .bind(&a.customer_class)
    .bind(i64::from(a.vulnerable))
    .execute(&mut *tx)
    .await?;
    insert_meter(
        &mut *tx,
        &NewMeter {
            meter_id: &a.meter_id,
            customer_id: &a.customer_id,
            link: &a.link,
            ct_ratio: a.ct_ratio,
            pt_ratio: a.pt_ratio,
            installed_on: now.date(),
        },
    )
    .await?;
    let agreement_id: i64 = sqlx::Row::try_get(
        &sqlx::query(
            "INSERT INTO agreements (customer_id, alarm_threshold_fen, auto_debit_fen, mobile, second_mobile, keep_power, time_of_use, signed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING agreement_id",
        )
        .bind(&a.customer_id)
        .bind(a.alarm_threshold_fen)
        .bind(a.auto_debit_fen)
        .bind(&a.mobile)
        .bind(&a.second_mobile)
        .bind(i64::from(a.keep_power))
        .bind(i64::from(a.time_of_use))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await?,
        0,
    )?;
    sqlx::query(
        "INSERT INTO accounts (account_id, customer_id, meter_id, agreement_id, county, station_id, status) VALUES ($1, $2, $3, $4, $5, $6, 'pending-prepayment')",
    )
    .bind(&a.account_id)
    .bind(&a.customer_id)
    .bind(&a.meter_id)
    .bind(agreement_id)
    .bind(&a.county)
    .bind(&a.station_id)
    .execute(&mut *tx)
    .await?;
    let check = check_mobile(&mut *tx, &a.account_id, None, now).await?;
    Ok(Onboarded {
        mobile_mismatch: matches!(check, MobileCheck::Mismatch { .. }),
    })
}

/// Result of a phone-number check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MobileCheck {
    /// The agreement's number equals the master data's.
    Matches,
    /// They differ (or the master data has none): this data-maintenance work order is
    /// open.
    Mismatch { work_order_id: i64 },
}

/// Compares the account's current agreement's mobile with the customer master data.
/// A mismatch opens a data-maintenance work order (one per agreement) and cancels the
/// open one of an earlier agreement; a match closes open mismatch orders as `done` by
/// `who` (the person who changed the agreement or the master data; `None` at
/// onboarding, where there is nothing open).
pub async fn check_mobile(
    conn: &mut AnyConnection,
    account_id: &str,
    who: Option<&str>,
    now: NaiveDateTime,
) -> Result<MobileCheck, DbError> {
    let r = sqlx::query(
        "SELECT a.agreement_id, a.station_id, g.mobile, c.master_mobile FROM accounts a
         JOIN agreements g ON g.agreement_id = a.agreement_id JOIN customers c ON c.customer_id = a.customer_id
         WHERE a.account_id = $1",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    let (agreement_id, station, mobile, master): (i64, String, String, Option<String>) =
        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
    let key = format!("mobile-mismatch:{account_id}:{agreement_id}");
    if master.as_deref() == Some(mobile.as_str()) {
        sqlx::query(
            "UPDATE work_orders SET status = 'done', decided_by = $2, decided_at = $3,
                    note = COALESCE(note, '') || ' [resolved: the agreement and the master data now agree]'
             WHERE account_id = $1 AND kind = 'data-maintenance' AND status = 'open' AND dedup_key LIKE 'mobile-mismatch:%'",
        )
        .bind(account_id)
        .bind(who.unwrap_or("onboarding"))
        .bind(ts(now))
        .execute(&mut *conn)
        .await?;
        return Ok(MobileCheck::Matches);
    }
    sqlx::query(
        "UPDATE work_orders SET status = 'cancelled', decided_at = $3,
                note = COALESCE(note, '') || ' [superseded by the check of a newer agreement]'
         WHERE account_id = $1 AND kind = 'data-maintenance' AND status = 'open'
           AND dedup_key LIKE 'mobile-mismatch:%' AND dedup_key <> $2",
    )
    .bind(account_id)
    .bind(&key)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    let evidence = serde_json::json!({
        "reason": "mobile-mismatch",
        "agreement_id": agreement_id,
        "agreement_mobile": mobile,
        "master_data_mobile": master,
        "holds": "automatic disconnection, until resolved (feegate mobile resolve)",
    });
    sqlx::query(
        "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
         VALUES ('data-maintenance', $1, $2, $3, 'open', $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(account_id)
    .bind(&station)
    .bind(&key)
    .bind(evidence.to_string())
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    let id: i64 = sqlx::query("SELECT work_order_id FROM work_orders WHERE dedup_key = $1")
        .bind(&key)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(MobileCheck::Mismatch { work_order_id: id })
}

/// A change to a fee-control agreement; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AgreementChange {
    /// 预警值, fen.
    pub alarm_threshold_fen: Option<Fen>,
    pub mobile: Option<String>,
    /// `Some(None)` removes the second contact.
    pub second_mobile: Option<Option<String>>,
    pub keep_power: Option<bool>,
}

/// Re-signs an account's agreement with `change` (a new `agreements` row; the account
/// points at it) and checks the phone number again, in one transaction. Returns the
/// new agreement id and the check.
///
/// # Errors
/// An unknown account; a number that is not a mainland mobile number.
pub async fn change_agreement(
    db: &Db,
    account_id: &str,
    change: &AgreementChange,
    who: &str,
    now: NaiveDateTime,
) -> Result<(i64, MobileCheck), OnboardingError> {
    if let Some(m) = &change.mobile {
        check_mobile_format("mobile", m)?;
    }
    if let Some(Some(m)) = &change.second_mobile {
        check_mobile_format("second mobile", m)?;
    }
    let mut tx = db.begin_write().await?;
    let changed = change_agreement_in(&mut tx, account_id, change, who, now).await?;
    tx.commit().await?;
    Ok(changed)
}

async fn change_agreement_in(
    tx: &mut AnyConnection,
    account_id: &str,
    change: &AgreementChange,
    who: &str,
    now: NaiveDateTime,
) -> Result<(i64, MobileCheck), OnboardingError> {
    let old = sqlx::query(
        "SELECT g.customer_id, g.alarm_threshold_fen, g.auto_debit_fen, g.mobile, g.second_mobile, g.keep_power, g.time_of_use
         FROM accounts a JOIN agreements g ON g.agreement_id = a.agreement_id WHERE a.account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| OnboardingError::UnknownAccount(account_id.to_string()))?;
    let customer: String = old.try_get(0)?;
    let id: i64 = sqlx::query(
        "INSERT INTO agreements (customer_id, alarm_threshold_fen, auto_debit_fen, mobile, second_mobile, keep_power, time_of_use, signed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING agreement_id",
    )
    .bind(&customer)
    .bind(change.alarm_threshold_fen.unwrap_or(old.try_get(1)?))
    .bind(old.try_get::<Option<i64>, _>(2)?)
    .bind(change.mobile.clone().unwrap_or(old.try_get(3)?))
    .bind(change.second_mobile.clone().unwrap_or(old.try_get(4)?))
    .bind(change.keep_power.map_or(old.try_get::<i64, _>(5)?, i64::from))
    .bind(old.try_get::<i64, _>(6)?)
    .bind(ts(now))
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    sqlx::query("UPDATE accounts SET agreement_id = $2 WHERE account_id = $1")
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let check = check_mobile(&mut *tx, account_id, Some(who), now).await?;
    Ok((id, check))
}

/// Resolves a mobile-number mismatch after a person confirmed the customer's number
/// (data maintenance, 档案维护): the master data takes `mobile`, the agreement is
/// re-signed with it if it differs, and the open mismatch work order is closed `done`
/// by `who` with `note`. Automatic disconnection is possible again from then on.
///
/// # Errors
/// An unknown account; a number that is not a mainland mobile number.
pub async fn resolve_mobile_mismatch(
    db: &Db,
    account_id: &str,
    mobile: &str,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<MobileCheck, OnboardingError> {
    check_mobile_format("mobile", mobile)?;
    let mut tx = db.begin_write().await?;
    let current: Option<String> = sqlx::query(
        "SELECT g.mobile FROM accounts a JOIN agreements g ON g.agreement_id = a.agreement_id WHERE a.account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    let Some(current) = current else {
        return Err(OnboardingError::UnknownAccount(account_id.to_string()));
    };
    sqlx::query(
        "UPDATE customers SET master_mobile = $2 WHERE customer_id = (SELECT customer_id FROM accounts WHERE account_id = $1)",
    )
    .bind(account_id)
    .bind(mobile)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE work_orders SET note = $2 WHERE account_id = $1 AND kind = 'data-maintenance' AND status = 'open'
         AND dedup_key LIKE 'mobile-mismatch:%'",
    )
    .bind(account_id)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    let check = if current != mobile {
        let change = AgreementChange {
            mobile: Some(mobile.to_string()),
            ..AgreementChange::default()
        };
        change_agreement_in(&mut tx, account_id, &change, who, now)
            .await?
            .1
    } else {
        check_mobile(&mut tx, account_id, Some(who), now).await?
    };
    tx.commit().await?;
    Ok(check)
}

/// A meter row to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewMeter<'a> {
    pub meter_id: &'a str,
    pub customer_id: &'a str,
    pub link: &'a MeterLink,
    pub ct_ratio: i64,
    pub pt_ratio: i64,
    pub installed_on: chrono::NaiveDate,
}

/// The `meters` columns of a link (see `migrations/*/0005_meter_links.sql`).
#[derive(Default)]
struct LinkColumns {
    protocol: &'static str,
    gateway: Option<String>,
    unit_id: Option<i64>,
    meter_address: Option<String>,
    terminal: Option<String>,
    terminal_port: Option<i64>,
    serial_port: Option<String>,
    baud_rate: Option<i64>,
    parity: Option<&'static str>,
    requires_security: i64,
}

fn link_columns(link: &MeterLink) -> LinkColumns {
    match link {
        MeterLink::Modbus(a) => LinkColumns {
            protocol: "modbus-tcp",
            gateway: Some(a.gateway.to_string()),
            unit_id: Some(i64::from(a.unit)),
            ..Default::default()
        },
        MeterLink::ModbusRtu(a) => LinkColumns {
            protocol: "modbus-rtu",
            unit_id: Some(i64::from(a.unit)),
            ..serial_columns(&a.line)
        },
        MeterLink::Dlt645(m) => {
            let common = LinkColumns {
                meter_address: Some(m.address.to_string()),
                requires_security: i64::from(m.requires_security),
                ..Default::default()
            };
            match m.link {
                Link::Gateway(g) => LinkColumns {
                    protocol: "dlt645",
                    gateway: Some(g.to_string()),
                    ..common
                },
                Link::Serial(line) => LinkColumns {
                    protocol: "dlt645",
                    meter_address: common.meter_address,
                    requires_security: common.requires_security,
                    ..serial_columns(&line)
                },
                Link::Terminal { terminal, port } => LinkColumns {
                    protocol: "qgdw376",
                    terminal: Some(terminal.to_string()),
                    terminal_port: Some(i64::from(port)),
                    ..common
                },
            }
        }
    }
}

/// The serial port columns of a link on a local serial port.
fn serial_columns(line: &SerialLine) -> LinkColumns {
    LinkColumns {
        serial_port: Some(line.path.to_string()),
        baud_rate: Some(i64::from(line.baud)),
        parity: Some(match line.parity {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
        }),
        ..Default::default()
    }
}

/// Inserts a meter with its protocol and link columns (see `migrations/*/0005_meter_links.sql`).
pub async fn insert_meter(conn: &mut AnyConnection, m: &NewMeter<'_>) -> Result<(), DbError> {
    let c = link_columns(m.link);
    sqlx::query(
        "INSERT INTO meters (meter_id, customer_id, protocol, gateway, unit_id, meter_address, terminal, terminal_port,
                             serial_port, baud_rate, parity, requires_security, ct_ratio, pt_ratio, installed_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(m.meter_id)
    .bind(m.customer_id)
    .bind(c.protocol)
    .bind(c.gateway)
    .bind(c.unit_id)
    .bind(c.meter_address)
    .bind(c.terminal)
    .bind(c.terminal_port)
    .bind(c.serial_port)
    .bind(c.baud_rate)
    .bind(c.parity)
    .bind(c.requires_security)
    .bind(m.ct_ratio)
    .bind(m.pt_ratio)
    .bind(crate::db::ds(m.installed_on))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
