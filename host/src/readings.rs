//! Readings from an existing collection system (head-end), imported from CSV or JSON, and
//! the daily collection report per supply station (`feegate collection report`).
//!
//! Import is idempotent: a reading is unique per (meter, date); the same value again is a
//! duplicate and changes nothing; a *different* value for a stored (meter, date) is a conflict,
//! reported and never overwritten (a person decides). A file that contradicts itself (one
//! (meter, date) with two or more different registers) has all the rows of that pair rejected
//! and none of them stored; an exact repeat inside the file is a duplicate. Registers are exact
//! decimals with at most two decimals (0.01 kWh) from 0 to 999999.99 kWh (the DL/T 645 register
//! range); a row with a missing or unparseable register (exponent notation such as `1e5`
//! included) fails the file naming its record, never read as 0.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::{Db, DbError, ds, ts};

/// One imported reading.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ImportRow {
    /// The meter.
    pub meter_id: String,
    /// The date whose 00:00 the register was frozen at (YYYY-MM-DD).
    pub reading_date: NaiveDate,
    /// Register value, kWh, at most 2 decimals (e.g. "12345.67"). A string in JSON keeps it exact.
    /// Plain digits only ([`plain_register`]): `1e5` is refused, not read as 100000 kWh.
    #[serde(
        serialize_with = "rust_decimal::serde::str::serialize",
        deserialize_with = "plain_register"
    )]
    pub register_kwh: Decimal,
}

/// Reads `register_kwh` as a plain decimal ([`crate::channels::plain_decimal`], the parser
/// payment amounts use): digits, optionally a point and digits. Exponent notation (`1e5`),
/// `+`, spaces, separators and more than 18 integer digits fail the file naming the record
/// (`record N`, CSV and JSON alike), like any unparseable register. The register range and
/// decimals are checked per row by [`import_readings`].
fn plain_register<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(d)?;
    // A register shows no sign: `-0` is a typo too, not a zero reading.
    if text.starts_with('-') {
        return Err(serde::de::Error::custom(format!(
            "register_kwh {text:?} is negative; an energy register reads 0 to 999999.99 kWh"
        )));
    }
    crate::channels::plain_decimal(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "register_kwh {text:?} is not a plain decimal kWh value such as 12345.67 (digits only: no exponent, sign or separators)"
        ))
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// New readings stored.
    pub inserted: u32,
    /// Already stored with the same value (by an earlier import, or earlier in this file).
    pub duplicates: u32,
    /// Already stored with a different value: `meter date stored new`.
    pub conflicts: Vec<String>,
    /// Rows refused: `record N: why`, N counting the file's readings from 1 (a CSV file's
    /// header is not a record; a parse error in [`read_file`] names the same number).
    pub rejected: Vec<String>,
}

/// Import failed as a whole (the file cannot be read or parsed).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// File trouble.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid CSV / JSON for readings.
    #[error(
        "{path}: {message}; expected columns meter_id,reading_date,register_kwh (CSV) or an array of objects with those fields (JSON)"
    )]
    Format {
        /// The file.
        path: String,
        /// Parser message.
        message: String,
    },
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Db(DbError::from(e))
    }
}

/// Reads rows from a `.csv` file (header `meter_id,reading_date,register_kwh`, then one
/// reading a line; LF, CRLF or CR line ends, blank lines skipped) or a `.json` file (an array
/// of objects with those fields, `register_kwh` a string). A leading UTF-8 byte-order mark is
/// ignored in both.
///
/// # Errors
/// [`ImportError::Io`] when the file cannot be read (or is not UTF-8);
/// [`ImportError::Format`] when a reading cannot be parsed, naming it as `record N: why`
/// (N = the N-th reading, from 1, header not counted, as [`ImportReport::rejected`] numbers
/// them), or, for JSON that is not valid JSON or not an array, serde_json's message with its
/// line and column. Nothing is returned from a file with such an error.
pub fn read_file(path: &Path) -> Result<Vec<ImportRow>, ImportError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: p.clone(),
        source,
    })?;
    let fmt = |message: String| ImportError::Format {
        path: p.clone(),
        message,
    };
    // A byte-order mark (spreadsheet exports write one) is not part of the first field.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        // The array first (a file that is not one fails with serde_json's line and
        // column), then each reading, so a bad one is named as CSV names it.
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| fmt(e.to_string()))?;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                ImportRow::deserialize(v).map_err(|e| fmt(format!("record {}: {e}", i + 1)))
            })
            .collect()
    } else {
        let mut rd = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        // Numbered as `import_readings` numbers its rejections (record 1 = the first
        // reading; csv skips blank lines, so this counts readings whatever the line ends).
        // No file line: csv's count is wrong for CR-only line ends and blank lines.
        rd.deserialize()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|e| {
                    // The field's own message, without csv's "CSV deserialize error:
                    // record …" prefix (it numbers records from the header).
                    let why = match e.kind() {
                        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
                        csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => format!("{len} fields where the header has {expected_len}"),
                        _ => e.to_string(),
                    };
                    fmt(format!("record {}: {why}", i + 1))
                })
            })
            .collect()
    }
}

/// Stores `rows` as readings with source `import`, in one transaction. Idempotent (see the
/// module docs). `rows[i]` is `record i+1` in the report.
///
/// Before anything is stored, a (meter, date) that appears in `rows` with two or more
/// different registers has every one of its rows rejected (`record N: meter M date D appears
/// with different registers in this file (records A, B): …`); an exact repeat is counted
/// once, the repeat as a duplicate. Each remaining row is rejected (out of the register
/// range or more than 2 decimals, dated after `now`'s date, unknown meter), inserted, a
/// duplicate of the stored value, or a conflict with a different stored value (never
/// overwritten).
///
/// # Errors
/// [`ImportError::Db`] when the database fails; nothing is stored then.
pub async fn import_readings(
    db: &Db,
    rows: &[ImportRow],
    now: NaiveDateTime,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    // The file against itself first: which row it stores for a (meter, date) it gives two
    // registers for is not ours to pick, and whichever came first would make the other a
    // "conflict" with a value this same file stored.
    let mut by_pair: BTreeMap<(&str, NaiveDate), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_pair
            .entry((r.meter_id.as_str(), r.reading_date))
            .or_default()
            .push(i);
    }
    let contradicted: BTreeMap<usize, String> = by_pair
        .values()
        .filter(|ix| {
            ix.iter()
                .any(|&i| rows[i].register_kwh != rows[ix[0]].register_kwh)
        })
        .flat_map(|ix| {
            let records = ix
                .iter()
                .map(|i| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            ix.iter().map(move |&i| (i, records.clone()))
        })
        .collect();
    let mut tx = db.begin_write().await?;
    for (i, r) in rows.iter().enumerate() {
        let record = i + 1;
        if let Some(records) = contradicted.get(&i) {
            report.rejected.push(format!(
                "record {record}: meter {} date {} appears with different registers in this file (records {records}): a person decides which is right",
                r.meter_id, r.reading_date
            ));
            continue;
        }
        // 0 to 999999.99 kWh with at most 2 decimals (the DL/T 645 register range); checked,
        // so a huge value is a rejected row, never a panic or a clamped i64::MAX.
        let centi = match crate::money::register_centi_kwh(r.register_kwh) {
            Ok(c) => c,
            Err(e) => {
                report
                    .rejected
                    .push(format!("record {record}: register_kwh {e}"));
                continue;
            }
        };
        // A register frozen at 00:00 of a day that has not begun yet cannot have been read:
        // a typo in the date (2099 for 2019) would otherwise sit in the readings for good.
        if r.reading_date > now.date() {
            report.rejected.push(format!(
                "record {record}: reading_date {} is after today ({}); check the date",
                r.reading_date,
                now.date()
            ));
            continue;
        }
        let known: Option<i64> = sqlx::query("SELECT 1 FROM meters WHERE meter_id = $1")
            .bind(&r.meter_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| 1);
        if known.is_none() {
            report.rejected.push(format!(
                "record {record}: meter {} is not in the master data",
                r.meter_id
            ));
            continue;
        }
        let existing = sqlx::query(
            "SELECT register_centi_kwh FROM readings WHERE meter_id = $1 AND reading_date = $2",
        )
        .bind(&r.meter_id)
        .bind(ds(r.reading_date))
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(row) => {
                let stored: i64 = row.try_get(0)?;
                if stored == centi {
                    report.duplicates += 1;
                } else {
                    report.conflicts.push(format!(
                        "{} {} stored {} new {}",
                        r.meter_id,
                        r.reading_date,
                        Decimal::new(stored, 2),
                        r.register_kwh
                    ));
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO readings (meter_id, reading_date, register_centi_kwh, source, collected_at)
                     VALUES ($1, $2, $3, 'import', $4)",
                )
                .bind(&r.meter_id)
                .bind(ds(r.reading_date))
                .bind(centi)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
                report.inserted += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// One station's collection figures for a day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StationDay {
    /// Meters of active accounts.
    pub meters: u32,
    /// Of those, meters with a reading for the day (read success, 抄通).
    pub read_ok: u32,
    /// Of those, meters with at least one reading in the 30 days up to the day (covered by
    /// working collection, 覆盖).
    pub covered: u32,
    /// Collection attempts recorded for the day, and how many failed.
    pub attempts: u32,
    /// Failed attempts.
    pub failed_attempts: u32,
}

impl StationDay {
    /// read_ok / meters, exact; none when there are no meters.
    pub fn read_success_rate(&self) -> Option<Decimal> {
        (self.meters > 0).then(|| Decimal::from(self.read_ok) / Decimal::from(self.meters))
    }
    /// covered / meters, exact.
    pub fn coverage(&self) -> Option<Decimal> {
        (self.meters > 0).then(|| Decimal::from(self.covered) / Decimal::from(self.meters))
    }
}

/// Coverage and read success per station on `date` (all counties, or one).
pub async fn station_report(
    db: &Db,
    county: Option<&str>,
    date: NaiveDate,
) -> Result<BTreeMap<String, StationDay>, DbError> {
    let from = date - chrono::Duration::days(29);
    let rows = sqlx::query(
        "SELECT a.station_id, COUNT(*),
                SUM(CASE WHEN EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = a.meter_id AND r.reading_date = $2) THEN 1 ELSE 0 END),
                SUM(CASE WHEN EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = a.meter_id AND r.reading_date >= $3 AND r.reading_date <= $2) THEN 1 ELSE 0 END)
         FROM accounts a
         WHERE a.status = 'active' AND ($1 = '' OR a.county = $1)
         GROUP BY a.station_id",
    )
    .bind(county.unwrap_or(""))
    .bind(ds(date))
    .bind(ds(from))
    .fetch_all(&db.pool)
    .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let station: String = r.try_get(0)?;
        let get = |i: usize| -> Result<u32, DbError> { Ok(r.try_get::<i64, _>(i)? as u32) };
        out.insert(
            station,
            StationDay {
                meters: get(1)?,
                read_ok: get(2)?,
                covered: get(3)?,
                ..StationDay::default()
            },
        );
    }
    let attempts = sqlx::query(
        "SELECT station_id, COUNT(*), SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END)
         FROM collection_attempts WHERE business_date = $1 GROUP BY station_id",
    )
    .bind(ds(date))
    .fetch_all(&db.pool)
    .await?;
    for r in attempts {
        let station: String = r.try_get(0)?;
        if let Some(s) = out.get_mut(&station) {
            s.attempts = r.try_get::<i64, _>(1)? as u32;
            s.failed_attempts = r.try_get::<i64, _>(2)? as u32;
        }
    }
    Ok(out)
}
