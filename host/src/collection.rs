//! Collection (集抄): read every meter's daily frozen reading (日冻结, the register at
//! 00:00) and record every attempt, so coverage and read success rate are exact.
//!
//! Idempotent: a meter that already has its reading for the date is not read again, and
//! readings are unique per (meter, date). A missing reply is recorded as a failed
//! attempt, never as a 0 kWh reading.

use crate::db::{Db, DbError, ds, ts};
use crate::money::kwh_to_centi_kwh;
use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::client::{MeterError, ModbusMeterClient};
use feegate_meter::registers::MeterAddress;
use sqlx::Row;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One meter due for reading.
#[derive(Debug, Clone)]
pub struct DueMeter {
    pub meter_id: String,
    pub station_id: String,
    pub address: MeterAddress,
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
    let gateway: SocketAddr = gateway
        .parse()
        .map_err(|e| DbError::Corrupt(format!("meter gateway {gateway:?}: {e}")))?;
    let unit = u8::try_from(unit)
        .map_err(|_| DbError::Corrupt(format!("meter unit id {unit} is not 0..=255")))?;
    Ok(MeterAddress { gateway, unit })
}

/// Meters of the county's active accounts that have no reading for `date` yet.
async fn due_meters(
    db: &Db,
    county: &str,
    date: NaiveDate,
) -> Result<(Vec<DueMeter>, u32), DbError> {
    let rows = sqlx::query(
        "SELECT m.meter_id, a.station_id, m.gateway, m.unit_id,
                CASE WHEN EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.meter_id AND r.reading_date = $2) THEN 1 ELSE 0 END AS has_reading
         FROM accounts a JOIN meters m ON m.meter_id = a.meter_id
         WHERE a.county = $1 AND a.status = 'active' ORDER BY m.meter_id",
    )
    .bind(county)
    .bind(ds(date))
    .fetch_all(&db.pool)
    .await?;
    let mut due = Vec::new();
    let mut skipped = 0;
    for r in rows {
        let has: i64 = r.try_get(4)?;
        if has != 0 {
            skipped += 1;
            continue;
        }
        due.push(DueMeter {
            meter_id: r.try_get(0)?,
            station_id: r.try_get(1)?,
            address: parse_address(&r.try_get::<String, _>(2)?, r.try_get(3)?)?,
        });
    }
    Ok((due, skipped))
}

fn outcome_of(e: &MeterError) -> &'static str {
    match e {
        MeterError::Timeout { .. } => "timeout",
        MeterError::Exception { .. } => "exception",
        MeterError::BadValue(_) | MeterError::Unsupported(_) => "bad-value",
        _ => "io",
    }
}

/// Reads the daily frozen register of every due meter for `date` and stores the good
/// readings. A frozen value stamped with another date is refused ("bad-value"): the
/// meter has not frozen today's value yet, and an old one must not pass as new.
pub async fn collect_daily(
    db: &Db,
    client: &ModbusMeterClient,
    county: &str,
    date: NaiveDate,
    now: NaiveDateTime,
) -> Result<CollectionReport, DbError> {
    let (due, skipped) = due_meters(db, county, date).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for m in due {
        let client = client.clone();
        tasks.spawn(async move {
            let result = client.read_daily_frozen(m.address).await;
            (m, result)
        });
    }
    let mut report = CollectionReport {
        date: Some(date),
        skipped,
        ..Default::default()
    };
    let mut tx = db.pool.begin().await?;
    while let Some(joined) = tasks.join_next().await {
        let (m, result) =
            joined.map_err(|e| DbError::Corrupt(format!("collection task panicked: {e}")))?;
        report.attempted += 1;
        let (outcome, detail) = match result {
            Ok(frozen) if frozen.date == date => {
                sqlx::query(
                    "INSERT INTO readings (meter_id, reading_date, register_centi_kwh, source, collected_at)
                     VALUES ($1, $2, $3, 'daily-frozen', $4) ON CONFLICT (meter_id, reading_date) DO NOTHING",
                )
                .bind(&m.meter_id)
                .bind(ds(date))
                .bind(kwh_to_centi_kwh(frozen.energy_kwh))
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
                report.read_ok += 1;
                ("ok", None)
            }
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
            Err(e) => {
                report.failed += 1;
                (outcome_of(&e), Some(e.to_string()))
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
