//! Collection figures (集抄) per supply station and day: read success rate (抄通率) from
//! [`crate::collection::station_rates`], and the attempts behind it.

use super::{ListFilter, QueryError, Where};
use crate::auth::Visibility;
use crate::db::{Db, ds, parse_ds};
use serde::Serialize;
use sqlx::Row;

/// One station's collection on one day.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StationDay {
    pub county: String,
    pub station_id: String,
    pub date: String,
    /// Meters of active accounts due a daily frozen reading that day.
    pub expected: u32,
    /// Of those, meters with the reading stored.
    pub read_ok: u32,
    /// read_ok / expected, an exact decimal string (e.g. "0.9750"); none when nothing
    /// was expected.
    pub read_success_rate: Option<String>,
    /// Read attempts recorded that day (every retry counts) and how many failed.
    pub attempts: i64,
    pub failed_attempts: i64,
}

/// Most days one request may cover.
pub const MAX_DAYS: i64 = 92;

/// Figures per visible station for each day from `from` to `to` (inclusive, at most
/// [`MAX_DAYS`]), by station then day.
pub async fn station_days(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    from: &str,
    to: &str,
) -> Result<Vec<StationDay>, QueryError> {
    let bad = |d: &str| QueryError::BadRequest(format!("date {d:?} is not a date: use YYYY-MM-DD"));
    let (first, last) = (
        parse_ds(from).map_err(|_| bad(from))?,
        parse_ds(to).map_err(|_| bad(to))?,
    );
    let days = (last - first).num_days() + 1;
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(QueryError::BadRequest(format!(
            "from {from} to {to} is {days} days: ask for 1 to {MAX_DAYS} days, from on or before to"
        )));
    }
    let mut w = Where::default();
    w.scope(v, f, "county", Some("station_id"), None);
    let sql = format!(
        "SELECT station_id, county FROM stations{} ORDER BY station_id",
        w.sql()
    );
    let stations: Vec<(String, String)> = w
        .bind(sqlx::query(&sql))
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut out = Vec::new();
    let mut conn = db.pool.acquire().await?;
    for (station, county) in &stations {
        for day in first.iter_days().take(days as usize) {
            let rates =
                crate::collection::station_rates(&mut conn, county, Some(station), day).await?;
            let rate = rates.get(station).cloned();
            let a = sqlx::query(
                "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END), 0) AS BIGINT)
                 FROM collection_attempts WHERE station_id = $1 AND business_date = $2",
            )
            .bind(station)
            .bind(ds(day))
            .fetch_one(&mut *conn)
            .await?;
            out.push(StationDay {
                county: county.clone(),
                station_id: station.clone(),
                date: ds(day),
                expected: rate.as_ref().map_or(0, |r| r.expected),
                read_ok: rate.as_ref().map_or(0, |r| r.ok),
                read_success_rate: rate
                    .as_ref()
                    .and_then(|r| r.rate())
                    .map(|d| format!("{:.4}", d)),
                attempts: a.try_get(0)?,
                failed_attempts: a.try_get(1)?,
            });
        }
    }
    Ok(out)
}
