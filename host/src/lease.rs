//! County leases: several `feegate serve` processes against one database share the
//! counties, one holder per county at a time, by expiring leases in `county_leases`.
//!
//! A holder renews its lease every third of the lease time; a holder that dies (SIGKILL,
//! power, network) stops renewing, and once `expires_at_ms` has passed any other host
//! takes the county over with one conditional upsert — the database decides, there is no
//! consensus of our own. The new holder resumes the county's jobs; every stage is
//! idempotent (`job_runs`, `settlements` primary key, ledger idempotency keys, relay
//! command decision keys), so work the dead holder finished is not done again and work
//! it left half-done is finished once.
//!
//! A lease is not a fence: a holder paused past its lease (a long GC-like stall, a
//! suspended VM) may still finish a statement after another host took over. That is
//! safe because correctness never rests on the lease — only on the idempotency keys —
//! and the lease only keeps hosts from doing the same work side by side.
//!
//! Times are Unix milliseconds from each host's clock; hosts must be NTP-synchronised
//! to well within the lease time (default 15 s).

use crate::db::{Db, DbError};
use sqlx::Row;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The lease state after an acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// This host holds the county until `expires_at_ms`; `epoch` counts hand-overs.
    Held { epoch: i64, expires_at_ms: i64 },
    /// Another host holds it until `expires_at_ms`.
    HeldBy { holder: String, expires_at_ms: i64 },
}

/// Takes or renews the lease on `county` for `holder` for `ttl_ms` from `now_ms`:
/// succeeds when nobody holds it, when it has expired, or when `holder` holds it already
/// (a renewal keeps the epoch). One statement, so two hosts racing cannot both win.
pub async fn acquire(
    db: &Db,
    county: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<LeaseState, DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO county_leases (county, holder, expires_at_ms, epoch, acquired_at_ms)
         VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (county) DO UPDATE SET
             epoch = CASE WHEN county_leases.holder = excluded.holder THEN county_leases.epoch ELSE county_leases.epoch + 1 END,
             acquired_at_ms = CASE WHEN county_leases.holder = excluded.holder THEN county_leases.acquired_at_ms ELSE excluded.acquired_at_ms END,
             holder = excluded.holder,
             expires_at_ms = excluded.expires_at_ms
         WHERE county_leases.holder = excluded.holder OR county_leases.expires_at_ms < $4",
    )
    .bind(county)
    .bind(holder)
    .bind(now_ms + ttl_ms)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let row =
        sqlx::query("SELECT holder, expires_at_ms, epoch FROM county_leases WHERE county = $1")
            .bind(county)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let (who, expires_at_ms, epoch): (String, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(if who == holder {
        LeaseState::Held {
            epoch,
            expires_at_ms,
        }
    } else {
        LeaseState::HeldBy {
            holder: who,
            expires_at_ms,
        }
    })
}

/// Gives the lease up at once (a clean shutdown), so another host need not wait for it
/// to expire. Does nothing if `holder` no longer holds it.
pub async fn release(db: &Db, county: &str, holder: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE county_leases SET expires_at_ms = 0 WHERE county = $1 AND holder = $2")
        .bind(county)
        .bind(holder)
        .execute(&db.pool)
        .await?;
    Ok(())
}
