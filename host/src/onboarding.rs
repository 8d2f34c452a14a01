//! Onboarding (业务受理): customer master data, meter, fee-control agreement and
//! account. The account stays `pending-prepayment` until the initial prepayment is
//! applied ([`crate::payment::apply`] with `EntryKind::Prepayment`).
//!
//! The agreement's mobile number is compared with the customer master data; a
//! mismatch opens a data-maintenance work order (档案维护) and the account reports
//! `mobile_verified = false` to the policies.

use crate::db::{Db, DbError, ts};
use crate::money::Fen;
use crate::policy::set::RolloutStage;
use chrono::NaiveDateTime;
use feegate_meter::dlt645_client::Link;
use feegate_meter::fleet::MeterLink;
use feegate_meter::serial::Parity;
use sqlx::AnyConnection;

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

/// Creates customer, meter, agreement and account in one transaction.
pub async fn onboard(db: &Db, a: &Application, now: NaiveDateTime) -> Result<Onboarded, DbError> {
    let mut tx = db.pool.begin().await?;
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
        &mut tx,
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
            "INSERT INTO agreements (customer_id, alarm_threshold_fen, auto_debit_fen, mobile, keep_power, time_of_use, signed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING agreement_id",
        )
        .bind(&a.customer_id)
        .bind(a.alarm_threshold_fen)
        .bind(a.auto_debit_fen)
        .bind(&a.mobile)
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
    let mismatch = a.master_mobile.as_deref() != Some(a.mobile.as_str());
    if mismatch {
        let evidence = serde_json::json!({ "agreement_mobile": a.mobile, "master_data_mobile": a.master_mobile });
        sqlx::query(
            "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
             VALUES ('data-maintenance', $1, $2, $3, 'open', $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(&a.account_id)
        .bind(&a.station_id)
        .bind(format!("mobile-mismatch:{}:{agreement_id}", a.account_id))
        .bind(evidence.to_string())
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Onboarded {
        mobile_mismatch: mismatch,
    })
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
                    serial_port: Some(line.path.to_string()),
                    baud_rate: Some(i64::from(line.baud)),
                    parity: Some(match line.parity {
                        Parity::None => "none",
                        Parity::Even => "even",
                        Parity::Odd => "odd",
                    }),
                    ..common
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
