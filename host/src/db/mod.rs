//! Storage: one database (SQLite by default, PostgreSQL for scale), reached through
//! sqlx's `Any` driver so the same queries run on both. Queries use `$1`-style
//! placeholders, which both backends accept; sums are cast to BIGINT and booleans are
//! integers, because the `Any` driver decodes neither NUMERIC nor mixed booleans.
//!
//! Conventions: money INTEGER fen, energy INTEGER centi-kWh, dates TEXT 'YYYY-MM-DD',
//! times TEXT 'YYYY-MM-DD HH:MM:SS' in county local time, booleans INTEGER 0/1.

use chrono::{NaiveDate, NaiveDateTime};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use std::str::FromStr;
use thiserror::Error;

/// A storage failure, with what to do about it.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("cannot open database {url}; check the path or URL and permissions")]
    Open { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}; the database may be from a newer Feegate")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH (default) or postgres://USER@HOST:PORT/DB"
    )]
    Unsupported(String),
}

/// A connection pool plus the backend's name.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
}

/// Time format used in every TEXT timestamp column.
pub const TIME_FMT: &str = "%Y-%m-%d %H:%M:%S";

/// Formats a local time for storage.
pub fn ts(t: NaiveDateTime) -> String {
    t.format(TIME_FMT).to_string()
}

/// Parses a stored local time.
pub fn parse_ts(s: &str) -> Result<NaiveDateTime, DbError> {
    NaiveDateTime::parse_from_str(s, TIME_FMT)
        .map_err(|e| DbError::Corrupt(format!("timestamp {s:?}: {e}")))
}

/// Formats a date for storage.
pub fn ds(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Parses a stored date.
pub fn parse_ds(s: &str) -> Result<NaiveDate, DbError> {
    NaiveDate::from_str(s).map_err(|e| DbError::Corrupt(format!("date {s:?}: {e}")))
}

/// Migrations applied so far (0 before the first).
async fn migrations_applied(conn: &mut sqlx::AnyConnection) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(conn)
        .await
        .and_then(|r| sqlx::Row::try_get::<i64, _>(&r, 0))
        .unwrap_or(0)
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `url`, e.g.
    /// `sqlite:///var/lib/feegate/county.db` or `postgres://feegate@db:5432/feegate`.
    /// Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`).
    ///
    /// SQLite runs with WAL, foreign keys on, a 5 s busy timeout, and a single pooled
    /// connection: SQLite has one writer anyway, and one connection rules out
    /// SQLITE_BUSY deadlocks between transactions that read then write.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let open_err = |source| DbError::Open {
            url: url.to_string(),
            source,
        };
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(DbError::Unsupported(url.to_string()));
        }
        let url_with_create = if is_sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let options = AnyConnectOptions::from_str(&url_with_create)
            .map_err(open_err)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        if is_sqlite {
            // SQLite changes a constraint only by rebuilding the table (0005 rebuilds
            // `meters`), which needs foreign keys off around the migration's transaction
            // (SQLite's documented procedure; the pragma is ignored inside a transaction).
            // The single pooled connection is the one that migrates; every reference is
            // checked before foreign keys go back on.
            // Only what a migration applied now did is checked: a database opened to be
            // audited may hold anything.
            let mut conn = pool.acquire().await.map_err(open_err)?;
            let before = migrations_applied(&mut conn).await;
            conn.execute("PRAGMA foreign_keys = OFF").await?;
            let migrated = sqlx::migrate!("../migrations/sqlite")
                .run_direct(&mut *conn)
                .await;
            let dangling = if migrations_applied(&mut conn).await > before {
                sqlx::query("PRAGMA foreign_key_check")
                    .fetch_all(&mut *conn)
                    .await?
                    .len()
            } else {
                0
            };
            conn.execute("PRAGMA foreign_keys = ON").await?;
            migrated?;
            if dangling > 0 {
                return Err(DbError::Corrupt(format!(
                    "{dangling} row(s) reference a missing row after migrating; restore the backup taken before the upgrade"
                )));
            }
        } else {
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        }
        Ok(Self { pool })
    }
}
