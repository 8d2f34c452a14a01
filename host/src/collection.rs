//! Collection (集抄): read every meter's daily frozen reading (日冻结, the register at
//! 00:00) and record every attempt, so coverage and read success rate are exact.
//!
//! Idempotent: a meter that already has its reading for the date is not read again, and
//! readings are unique per (meter, date). A missing reply is recorded as a failed
//! attempt, never as a 0 kWh reading.

use crate::db::{Db, DbError, ds, ts};
use crate::money::register_centi_kwh;
use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::client::RtuAddress;
use feegate_meter::dlt645::Address;
use feegate_meter::dlt645_client::{Dlt645Meter, Link};
use feegate_meter::fleet::{FailureKind, FleetClient, LinkError, MeterLink};
use feegate_meter::qgdw376::TerminalAddress;
use feegate_meter::registers::MeterAddress;
use feegate_meter::serial::{Parity, SerialLine};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One meter due for reading.
#[derive(Debug, Clone)]
pub struct DueMeter {
    pub meter_id: String,
    pub station_id: String,
    /// How to reach it; an error when the stored link cannot be used (recorded as a failed
    /// "io" attempt for this meter; the others are still read).
    pub link: Result<MeterLink, String>,
}

/// Read success per station for one date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StationRate {
    /// Meters of active accounts due a reading.
    pub expected: u32,
    /// Of those, meters with a stored reading for the date.
    pub ok: u32,
}

/// Outcome of one collection run.
#[derive(Debug, Clone, Default)]
pub struct CollectionReport {
    pub date: Option<NaiveDate>,
    pub attempted: u32,
    pub read_ok: u32,
    pub failed: u32,
    /// Already had a reading for the date (re-run after a crash).
    pub skipped: u32,
}

/// Parses a stored "host:port" gateway address.
pub fn parse_address(gateway: &str, unit: i64) -> Result<MeterAddress, DbError> {
    let gateway = parse_gateway(gateway)?;
    Ok(MeterAddress {
        gateway,
        unit: unit_id(unit)?,
    })
}

fn unit_id(unit: i64) -> Result<u8, DbError> {
    u8::try_from(unit).map_err(|_| DbError::Corrupt(format!("meter unit id {unit} is not 0..=255")))
}

fn parse_gateway(gateway: &str) -> Result<SocketAddr, DbError> {
    gateway
        .parse()
        .map_err(|e| DbError::Corrupt(format!("meter gateway {gateway:?}: {e}")))
}

/// The columns of `meters` (alias `m`) that say how a meter is reached, in the order
/// [`link_from_row`] reads them.
pub const LINK_COLUMNS: &str = "m.meter_id, m.protocol, m.gateway, m.unit_id, m.meter_address, m.terminal, m.terminal_port, m.serial_port, m.requires_security, m.baud_rate, m.parity";

/// How the meter in `row` (selected with [`LINK_COLUMNS`] from column `first`) is reached.
/// Errors name the meter and the stored value that makes no sense (the schema's CHECKs
/// should make them impossible).
pub fn link_from_row(row: &AnyRow, first: usize) -> Result<MeterLink, DbError> {
    let meter_id: String = row.try_get(first)?;
    let protocol: String = row.try_get(first + 1)?;
    let gateway: Option<String> = row.try_get(first + 2)?;
    let unit: Option<i64> = row.try_get(first + 3)?;
    let meter_address: Option<String> = row.try_get(first + 4)?;
    let terminal: Option<String> = row.try_get(first + 5)?;
    let terminal_port: Option<i64> = row.try_get(first + 6)?;
    let serial_port: Option<String> = row.try_get(first + 7)?;
    let requires_security = row.try_get::<i64, _>(first + 8)? != 0;
    let baud: Option<i64> = row.try_get(first + 9)?;
    let parity: Option<String> = row.try_get(first + 10)?;
    let missing =
        |what: &str| DbError::Corrupt(format!("meter {meter_id} ({protocol}) has no {what}"));
    // A serial line from the stored port, baud rate and parity (defaults per protocol).
    let serial_line = |path: &str, default_baud: u32, default_parity: &str| {
        let baud = match baud {
            None => default_baud,
            Some(b) => u32::try_from(b).map_err(|_| {
                DbError::Corrupt(format!(
                    "meter {meter_id}: baud rate {b} is not a line speed"
                ))
            })?,
        };
        let parity: Parity = parity
            .as_deref()
            .unwrap_or(default_parity)
            .parse()
            .map_err(|e| DbError::Corrupt(format!("meter {meter_id}: {e}")))?;
        Ok::<_, DbError>(SerialLine::new(path, baud, parity))
    };
    let address_645 = || -> Result<Address, DbError> {
        let a = meter_address
            .as_deref()
            .ok_or_else(|| missing("meter_address"))?;
        a.parse()
            .map_err(|e| DbError::Corrupt(format!("meter {meter_id}: DL/T 645 address {a:?}: {e}")))
    };
    Ok(match protocol.as_str() {
        "modbus-tcp" => MeterLink::Modbus(parse_address(
            gateway.as_deref().ok_or_else(|| missing("gateway"))?,
            unit.ok_or_else(|| missing("unit_id"))?,
        )?),
        "dlt645" => {
            let link = match (&gateway, &serial_port) {
                (Some(g), None) => Link::Gateway(parse_gateway(g)?),
                // DL/T 645-2007 defaults: 2400 baud, even parity.
                (None, Some(path)) => Link::Serial(serial_line(path, 2400, "even")?),
                _ => return Err(missing("gateway or serial_port (exactly one)")),
            };
            MeterLink::Dlt645(Dlt645Meter {
                link,
                address: address_645()?,
                requires_security,
            })
        }
        "qgdw376" => {
            let t = terminal.as_deref().ok_or_else(|| missing("terminal"))?;
            let terminal: TerminalAddress = t
                .parse()
                .map_err(|e| DbError::Corrupt(format!("meter {meter_id}: terminal {t:?}: {e}")))?;
            let port = terminal_port.ok_or_else(|| missing("terminal_port"))?;
            let port = u8::try_from(port).map_err(|_| {
                DbError::Corrupt(format!(
                    "meter {meter_id}: terminal port {port} is not 1..=255"
                ))
            })?;
            MeterLink::Dlt645(Dlt645Meter {
                link: Link::Terminal { terminal, port },
                address: address_645()?,
                requires_security,
            })
        }
        // Feegate's Modbus RTU defaults: 9600 baud, no parity (migration 0005).
        "modbus-rtu" => MeterLink::ModbusRtu(RtuAddress {
            line: serial_line(
                serial_port
                    .as_deref()
                    .ok_or_else(|| missing("serial_port"))?,
                9600,
                "none",
            )?,
            unit: unit_id(unit.ok_or_else(|| missing("unit_id"))?)?,
        }),
        other => {
            return Err(DbError::Corrupt(format!(
                "meter {meter_id}: protocol {other:?} is not supported by this build"
            )));
        }
    })
}

/// Meters of the county's active accounts that have no reading for `date` yet.
async fn due_meters(
    db: &Db,
    county: &str,
    date: NaiveDate,
) -> Result<(Vec<DueMeter>, u32), DbError> {
    let rows = sqlx::query(
        &format!(
            "SELECT a.station_id,
                CASE WHEN EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.meter_id AND r.reading_date = $2) THEN 1 ELSE 0 END AS has_reading,
                {LINK_COLUMNS}
             FROM accounts a JOIN meters m ON m.meter_id = a.meter_id
             WHERE a.county = $1 AND a.status = 'active' ORDER BY m.meter_id"
        ),
    )
    .bind(county)
    .bind(ds(date))
    .fetch_all(&db.pool)
    .await?;
    let mut due = Vec::new();
    let mut skipped = 0;
    for r in rows {
        let has: i64 = r.try_get(1)?;
        if has != 0 {
            skipped += 1;
            continue;
        }
        due.push(DueMeter {
            meter_id: r.try_get(2)?,
            station_id: r.try_get(0)?,
            link: link_from_row(&r, 2).map_err(|e| e.to_string()),
        });
    }
    Ok((due, skipped))
}

fn outcome_of(e: &LinkError) -> &'static str {
    match e.kind() {
        FailureKind::Timeout => "timeout",
        FailureKind::Refused => "exception",
        FailureKind::BadValue => "bad-value",
        FailureKind::Io => "io",
    }
}

/// Reads the daily frozen register of every due meter for `date` through its link
/// (Modbus TCP or RTU, DL/T 645 gateway or serial port, 1376.1 terminal; each link one
/// request at a time, links concurrently) and stores the good readings. A frozen value stamped with another date is
/// refused ("bad-value"): the meter has not frozen today's value yet, and an old one must
/// not pass as new. A DL/T 645 error reply is recorded as "exception".
pub async fn collect_daily(
    db: &Db,
    client: &FleetClient,
    county: &str,
    date: NaiveDate,
    now: NaiveDateTime,
) -> Result<CollectionReport, DbError> {
    let (due, skipped) = due_meters(db, county, date).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for m in due {
        let client = client.clone();
        tasks.spawn(async move {
            let result = match &m.link {
                Ok(link) => client.read_daily_frozen(link).await.map_err(Some),
                Err(_) => Err(None),
            };
            (m, result)
        });
    }
    let mut report = CollectionReport {
        date: Some(date),
        skipped,
        ..Default::default()
    };
    // Every meter is read before the transaction begins: a slow or dead meter must not
    // hold the database (SQLite's one write lock, the host's pooled connection) while
    // payments, work orders and the CLI wait. The writes then take one short transaction.
    let mut answers = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        answers
            .push(joined.map_err(|e| DbError::Corrupt(format!("collection task panicked: {e}")))?);
    }
    let mut tx = db.begin_write().await?;
    for (m, result) in answers {
        report.attempted += 1;
        let (outcome, detail) = match result {
            // A frozen value outside the register range (0 to 999999.99 kWh, 0.01 kWh
            // resolution) is a bad value for that meter, never stored clamped.
            Ok(frozen) if frozen.date == date => match register_centi_kwh(frozen.energy_kwh) {
                Ok(centi) => {
                    sqlx::query(
                        "INSERT INTO readings (meter_id, reading_date, register_centi_kwh, source, collected_at)
                         VALUES ($1, $2, $3, 'daily-frozen', $4) ON CONFLICT (meter_id, reading_date) DO NOTHING",
                    )
                    .bind(&m.meter_id)
                    .bind(ds(date))
                    .bind(centi)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                    report.read_ok += 1;
                    ("ok", None)
                }
                Err(e) => {
                    report.failed += 1;
                    ("bad-value", Some(format!("frozen register: {e}")))
                }
            },
            Ok(frozen) => {
                report.failed += 1;
                (
                    "bad-value",
                    Some(format!(
                        "frozen value is for {}, expected {date}",
                        frozen.date
                    )),
                )
            }
            Err(Some(e)) => {
                report.failed += 1;
                (outcome_of(&e), Some(e.to_string()))
            }
            Err(None) => {
                report.failed += 1;
                ("io", m.link.as_ref().err().cloned())
            }
        };
        sqlx::query(
            "INSERT INTO collection_attempts (meter_id, station_id, business_date, attempted_at, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&m.meter_id)
        .bind(&m.station_id)
        .bind(ds(date))
        .bind(ts(now))
        .bind(outcome)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Exact read success per station for `date`: meters of active accounts with a stored
/// reading for the date over meters of active accounts. `station` limits the count to one
/// station (the safety floor asks per account, so it must not scan the whole county).
pub async fn station_rates(
    conn: &mut sqlx::AnyConnection,
    county: &str,
    station: Option<&str>,
    date: NaiveDate,
) -> Result<BTreeMap<String, StationRate>, DbError> {
    let rows = sqlx::query(
        "SELECT a.station_id, COUNT(*) AS expected,
                CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = a.meter_id AND r.reading_date = $2) THEN 1 ELSE 0 END) AS BIGINT) AS ok
         FROM accounts a WHERE a.county = $1 AND a.status = 'active' AND ($3 = '' OR a.station_id = $3)
         GROUP BY a.station_id",
    )
    .bind(county)
    .bind(ds(date))
    .bind(station.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let expected: i64 = r.try_get(1)?;
        let ok: i64 = r.try_get(2)?;
        out.insert(
            r.try_get(0)?,
            StationRate {
                expected: expected as u32,
                ok: ok as u32,
            },
        );
    }
    Ok(out)
}

impl StationRate {
    /// ok / expected as an exact decimal; none when nothing was expected.
    pub fn rate(&self) -> Option<rust_decimal::Decimal> {
        (self.expected > 0).then(|| {
            rust_decimal::Decimal::from(self.ok) / rust_decimal::Decimal::from(self.expected)
        })
    }
}
