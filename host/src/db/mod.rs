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
    #[error(
        "no Feegate database at {url} (no such file, or one without Feegate's tables): check the path (--db or FEEGATE_DB); this command reads an existing database and never creates one"
    )]
    Missing { url: String },
}

/// A connection pool plus the backend's name.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
}

/// Begins a transaction that reads and then writes, holding the write lock from its
/// first statement on SQLite (`BEGIN IMMEDIATE`; a plain `BEGIN` on PostgreSQL, where
/// row locks order such transactions).
///
/// Why: SQLite's default deferred transaction takes a snapshot at its first read and
/// asks for the write lock at its first write; if another process (a second CLI
/// command, `feegate serve`) wrote in between, that write fails at once with
/// SQLITE_BUSY ("database is locked") whatever the busy timeout. An immediate
/// transaction instead waits up to the busy timeout (5 s) for the other writer and then
/// reads what it committed. Errors: the database's, e.g. still locked after 5 s.
pub async fn begin_write(
    conn: &mut sqlx::AnyConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
    use sqlx::Connection;
    if conn.backend_name() == "SQLite" {
        conn.begin_with("BEGIN IMMEDIATE").await
    } else {
        conn.begin().await
    }
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

/// Bound parameters one statement may carry on both backends: SQLite's default limit is
/// 32,766 (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32), PostgreSQL's 65,535.
pub const MAX_BOUND_PARAMETERS: usize = 32_000;

/// Rows of `columns` bound values each that fit one statement (at least 1).
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_BOUND_PARAMETERS / columns.max(1)).max(1)
}

/// How a statement built at run time numbers its bound parameters.
///
/// PostgreSQL reads `$1, $2, …`. SQLite reads those too, but sqlx's SQLite driver looks
/// up every parameter's name when binding, which SQLite answers by a linear search: a
/// statement with n numbered parameters costs O(n²) to bind (55 % of a 10,000-account
/// settlement, measured with perf). Anonymous `?` parameters have no name, so on SQLite
/// the long multi-row statements use them instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
    /// `?, ?, …`, numbered by position (SQLite).
    Anonymous,
}

impl Placeholders {
    /// The style for `conn`'s backend.
    pub fn of(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name() == "SQLite" {
            Self::Anonymous
        } else {
            Self::Numbered
        }
    }

    /// `n` placeholders for parameters `first..first + n` (1-based), comma-separated.
    pub fn list(self, first: usize, n: usize) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                s.push_str(", ");
            }
            match self {
                Self::Numbered => write!(s, "${}", first + i).expect("writing to a String"),
                Self::Anonymous => s.push('?'),
            }
        }
        s
    }

    /// The placeholder list of a multi-row `VALUES`: `($1, $2), ($3, $4)` (or
    /// `(?, ?), (?, ?)`) for 2 rows of 2 columns, from parameter 1. Bind the values row by
    /// row, column by column, at most [`MAX_BOUND_PARAMETERS`] in all. (The `Any`
    /// driver's own query builder writes `?` everywhere, which PostgreSQL does not accept.)
    pub fn values(self, rows: usize, columns: usize) -> String {
        let mut s = String::with_capacity(rows * (columns * 6 + 4));
        for r in 0..rows {
            s.push_str(if r == 0 { "(" } else { ", (" });
            s.push_str(&self.list(r * columns + 1, columns));
            s.push(')');
        }
        s
    }
}

/// Runs `sql` for a batch of keys and fetches all rows: `$IDS` in `sql` becomes the
/// placeholder list `($1, …, $n)` for `ids` (an `IN` list) and `$LAST` the placeholder
/// after it, bound to `extra` ([`Placeholders::of`] the connection; `sql` must have no
/// other parameters). Keys are any bindable value (`&str` account ids, `i64` row ids).
/// No ids: no query, no rows. More ids than one statement may bind
/// ([`MAX_BOUND_PARAMETERS`]) run as several statements whose rows are concatenated, so
/// `sql` must be a filter on the keys (each row answers one key), as every caller's is.
pub async fn fetch_in<'k, K>(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    ids: &'k [K],
    extra: Option<i64>,
) -> Result<Vec<sqlx::any::AnyRow>, DbError>
where
    K: sqlx::Encode<'k, sqlx::Any> + sqlx::Type<sqlx::Any> + Copy + Send + Sync + 'k,
{
    use sqlx::Arguments;
    let style = Placeholders::of(conn);
    let mut rows = Vec::new();
    for part in ids.chunks(MAX_BOUND_PARAMETERS - 1) {
        let sql = sql
            .replace("$IDS", &style.values(1, part.len()))
            .replace("$LAST", &style.list(part.len() + 1, 1));
        let mut args = sqlx::any::AnyArguments::default();
        for id in part {
            args.add(*id).map_err(sqlx::Error::Encode)?;
        }
        if let Some(x) = extra {
            args.add(x).map_err(sqlx::Error::Encode)?;
        }
        rows.extend(sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?);
    }
    Ok(rows)
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
    /// Begins a transaction on a pooled connection with [`begin_write`]'s locking (the
    /// SQLite write lock from the first statement). Every transaction that writes starts
    /// here, so a read-then-write from one process never fails with "database is locked"
    /// because another process wrote in between; it waits up to the busy timeout instead.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        if self.pool.connect_options().database_url.scheme() == "sqlite" {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
    }

    /// Runs `read` and `write` — the next batch's reads and the previous batch's
    /// transaction, which touch disjoint rows — at once when the pool has a connection for
    /// each (PostgreSQL), else `read` first and then `write` (SQLite's one connection, which
    /// the write holds until it commits). Both always run to their end; their results come
    /// back as they are, so the caller can keep what one did when the other failed.
    pub async fn read_beside_write<R, W>(
        &self,
        read: impl Future<Output = R>,
        write: impl Future<Output = W>,
    ) -> (R, W) {
        if self.pool.options().get_max_connections() > 1 {
            tokio::join!(read, write)
        } else {
            let read = read.await;
            (read, write.await)
        }
    }

    /// Opens (creating if needed) and migrates the database at `url`, e.g.
    /// `sqlite:///var/lib/feegate/county.db` or `postgres://feegate@db:5432/feegate`.
    /// Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`).
    ///
    /// SQLite runs with WAL, foreign keys on, a 5 s busy timeout, and a single pooled
    /// connection: SQLite has one writer anyway, and one connection rules out
    /// SQLITE_BUSY deadlocks between transactions that read then write.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        Self::open_with(url, true).await
    }

    /// [`Self::open`] for a command that reads what is there (`audit`, `policy list`,
    /// `holds list`, ...): a SQLite file that does not exist (`mode=rwc` in the URL
    /// notwithstanding), and a database without Feegate's schema (an empty file, an empty
    /// PostgreSQL database), are [`DbError::Missing`]: nothing is created or migrated in
    /// them, where a mistyped path would otherwise find an intact chain and no holds, and
    /// say so.
    pub async fn open_existing(url: &str) -> Result<Self, DbError> {
        Self::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let open_err = |source| DbError::Open {
            url: url.to_string(),
            source,
        };
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(DbError::Unsupported(url.to_string()));
        }
        let url_with_create = if is_sqlite && !url.contains(":memory:") {
            if !create {
                // Never create, whatever the URL asks for.
                let without = url.replace("mode=rwc", "mode=rw");
                if without.contains("mode=") {
                    without
                } else {
                    format!(
                        "{without}{}mode=rw",
                        if url.contains('?') { '&' } else { '?' }
                    )
                }
            } else if !url.contains("mode=") {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            } else {
                url.to_string()
            }
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
                        // WAL is a property of the file (set once, when it is made); a
                        // command that only reads must not write a header into an empty
                        // file that is not a database yet.
                        if create {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                        }
                        for pragma in [
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                            // 64 MiB of page cache (default 2 MiB): a county's indexes
                            // stay in memory through a settlement batch.
                            "PRAGMA cache_size = -65536",
                            // Checkpoint the WAL every 64 MiB (default 4 MiB): a
                            // settlement batch writes several MiB, and each checkpoint
                            // ends in an fsync.
                            "PRAGMA wal_autocheckpoint = 16384",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    } else {
                        for setting in [
                            // A plan for each execution, made with the tables as they
                            // are then. By default PostgreSQL keeps a generic plan for a
                            // prepared statement after five executions, and sqlx keeps
                            // the statements for the connection's life: a plan made when
                            // the morning's run began, over empty `decisions` and
                            // `settlements`, went on scanning them whole as they grew to
                            // a million rows each (quadratic over the run; README,
                            // "Settlement at scale"). Planning again costs well under a
                            // millisecond a statement, and batched statements are few.
                            // PostgreSQL 12 or later.
                            "SET plan_cache_mode = force_custom_plan",
                            // No JIT compilation of plans: a settlement batch's
                            // statements are planned at costs above `jit_above_cost` yet
                            // run for a few milliseconds, and compiling them took longer
                            // than running them (the warning stage's history read at a
                            // million accounts, `EXPLAIN ANALYZE`: 4.4 ms to run,
                            // 3.5-12.7 ms of JIT on top). The usual setting for short
                            // transactional statements.
                            "SET jit = off",
                            // A random page read costed at 1.1 sequential ones (default
                            // 4, a spinning disk's ratio), the usual setting where the
                            // data is on SSD or in memory. A batch reads and writes 1,000
                            // accounts by key, and at the default the planner answered
                            // that with a hash join over the whole table: the batch's
                            // balance `UPDATE … FROM (VALUES …)` scanned all of
                            // `accounts`, and the warning stage's facts all of
                            // `agreements` and `customers`. `EXPLAIN ANALYZE` at 100,000
                            // accounts: the balance update 42 ms a batch, 12 ms by key
                            // with this; the facts 40-44 ms, 4.7-8.3 ms (README,
                            // "Settlement at scale").
                            "SET random_page_cost = 1.1",
                        ] {
                            conn.execute(setting).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| match &e {
                // SQLITE_CANTOPEN: without mode=rwc, a file that is not there.
                sqlx::Error::Database(d) if !create && d.code().as_deref() == Some("14") => {
                    DbError::Missing {
                        url: url.to_string(),
                    }
                }
                _ => open_err(e),
            })?;
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
            if !create && before == 0 {
                return Err(DbError::Missing {
                    url: url.to_string(),
                });
            }
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
            if !create {
                let mut conn = pool.acquire().await.map_err(open_err)?;
                if migrations_applied(&mut conn).await == 0 {
                    return Err(DbError::Missing {
                        url: url.to_string(),
                    });
                }
            }
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        }
        Ok(Self { pool })
    }
}

#[cfg(test)]
mod placeholders_tests {
    use super::*;

    #[test]
    fn placeholders_number_row_by_row() {
        assert_eq!(Placeholders::Numbered.values(1, 1), "($1)");
        assert_eq!(
            Placeholders::Numbered.values(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Placeholders::Anonymous.values(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Placeholders::Numbered.list(4, 2), "$4, $5");
        assert_eq!(rows_per_statement(16), 2_000);
        assert_eq!(rows_per_statement(0), 32_000);
    }
}
