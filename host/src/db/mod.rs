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
    /// A SQLite file's second, read-only connection ([`Db::reads`]); `None` on PostgreSQL,
    /// whose pool has connections enough, and for an in-memory or shared-cache SQLite
    /// database, which a second connection would not read as a snapshot of its own
    /// (`reader_url`).
    reads: Option<AnyPool>,
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

    /// Closes the reader, then the writing pool, waiting for their connections to be
    /// returned. The writing connection, closed last, checkpoints a SQLite file's WAL into
    /// the file (SQLite does so when a database's last connection closes), so the file
    /// alone then holds everything committed, e.g. to be copied.
    pub async fn close(&self) {
        if let Some(reads) = &self.reads {
            reads.close().await;
        }
        self.pool.close().await;
    }

    /// The pool for a batch's reads that may run beside another batch's write
    /// ([`Db::read_beside_write`]): on a SQLite file its own read-only connection, which
    /// WAL lets read the last committed state while the one writing connection holds the
    /// write lock (each statement sees what was committed when it began, so a read must
    /// not depend on rows the write beside it changes); elsewhere [`Db::pool`].
    pub fn reads(&self) -> &AnyPool {
        self.reads.as_ref().unwrap_or(&self.pool)
    }

    /// Runs `read` and `write` — the next batch's reads (on [`Db::reads`]) and the
    /// previous batch's transaction, which touch disjoint rows — at once when each has a
    /// connection of its own (PostgreSQL's pool, a SQLite file's read-only connection),
    /// else `read` first and then `write` (an in-memory or shared-cache SQLite database's
    /// one connection, which the write holds until it commits). Both always run to their end; their
    /// results come back as they are, so the caller can keep what one did when the other
    /// failed.
    ///
    /// On a multi-threaded runtime the two run on two threads (`block_in_place` and a
    /// scoped thread), not interleaved on one task: both turn rows into values and values
    /// into statement arguments on the calling thread between their statements, and
    /// sharing one thread left the SQLite writer idle while the read's rows were decoded.
    /// A panic in either is passed on once both have ended. The calling task is blocked
    /// until both end, so a `timeout` or `select!` around a stage takes effect between
    /// batches, not during one.
    pub async fn read_beside_write<R: Send, W: Send>(
        &self,
        read: impl Future<Output = R> + Send,
        write: impl Future<Output = W> + Send,
    ) -> (R, W) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if self.reads.is_some() || self.pool.options().get_max_connections() > 1 {
            let handle = Handle::current();
            if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
                return tokio::join!(read, write);
            }
            tokio::task::block_in_place(|| {
                std::thread::scope(|scope| {
                    let reading = scope.spawn(|| handle.block_on(read));
                    let written = handle.block_on(write);
                    let read = reading
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (read, written)
                })
            })
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
    /// SQLITE_BUSY deadlocks between transactions that read then write. A SQLite file
    /// also gets one read-only connection, opened when first used, for the daily job's
    /// batch reads beside a write ([`Db::reads`]); it never writes, so it takes no lock
    /// a writer could wait for.
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
        let reads = match is_sqlite.then(|| reader_url(&url_with_create)).flatten() {
            Some(reader) => Some(sqlite_reader(&reader).map_err(open_err)?),
            None => None,
        };
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
        Ok(Self { pool, reads })
    }
}

/// The URL of a read-only connection to the same SQLite file as `url`: its query's
/// `mode=` set to `ro` (added when absent). `None` where a second connection would not
/// read what the first one committed on a snapshot of its own: an in-memory database
/// (`:memory:`, `mode=memory`), whose second connection would open another, empty one,
/// and a shared cache (`cache=shared`), whose connections share one cache and its table
/// locks instead of WAL snapshots. Only the query part (after the first `?`) is looked
/// at, so a path that contains `mode=` is left as it is.
fn reader_url(url: &str) -> Option<String> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if path.contains(":memory:")
        || params
            .iter()
            .any(|p| *p == "mode=memory" || *p == "cache=shared")
    {
        return None;
    }
    params.retain(|p| !p.starts_with("mode="));
    params.push("mode=ro");
    Some(format!("{path}?{}", params.join("&")))
}

/// The read-only pool of the SQLite file at `url` ([`reader_url`]; one connection,
/// opened when first used).
///
/// `mode=ro`: SQLite refuses any write through it (SQLITE_READONLY), so it never takes
/// the write lock. In WAL mode (every database [`Db::open`] creates is) a reader sees
/// the last commit at the start of each of its read transactions and neither waits for
/// the writer nor makes it wait. Its page cache is emptied whenever another connection
/// has committed (SQLite's WAL pager), so it is kept small: 8 MiB, enough for one
/// batch's reads. Errors: a URL sqlx cannot parse.
fn sqlite_reader(url: &str) -> Result<AnyPool, sqlx::Error> {
    let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in ["PRAGMA busy_timeout = 5000", "PRAGMA cache_size = -8192"] {
                    conn.execute(pragma).await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options))
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

#[cfg(test)]
mod reads_tests {
    use super::*;

    /// A SQLite file's batch reads run on a connection of their own: they see the last
    /// commit while the writing connection holds an open write transaction (and do not
    /// wait for it), see that transaction's rows once it commits, and cannot write.
    #[tokio::test]
    async fn a_sqlite_file_is_read_beside_an_open_write_and_never_written_through_its_reader() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("reads.db").display());
        let db = Db::open(&url).await.unwrap();
        let count = "SELECT COUNT(*) FROM counties";
        let before: i64 = sqlx::query_scalar(count)
            .fetch_one(db.reads())
            .await
            .unwrap();
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query(
            "INSERT INTO counties (county, display_name, rollout_stage) VALUES ('reads', 'Reads', 'notify-only')",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let during = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            sqlx::query_scalar::<_, i64>(count).fetch_one(db.reads()),
        )
        .await
        .expect("the reader does not wait for the open write transaction")
        .unwrap();
        assert_eq!(during, before, "an uncommitted row is not read");
        tx.commit().await.unwrap();
        let after: i64 = sqlx::query_scalar(count)
            .fetch_one(db.reads())
            .await
            .unwrap();
        assert_eq!(after, before + 1, "a committed row is read");
        let refused = sqlx::query("DELETE FROM counties")
            .execute(db.reads())
            .await
            .expect_err("the reader is read-only");
        assert!(
            refused.to_string().contains("readonly"),
            "refused with: {refused}"
        );
        let kept: i64 = sqlx::query_scalar(count).fetch_one(&db.pool).await.unwrap();
        assert_eq!(kept, before + 1);
    }

    fn failing_read() -> u8 {
        panic!("a read that fails")
    }

    /// On a multi-threaded runtime a batch's read and the write beside it run on two
    /// threads at once (each waits for the other here, so run one after the other
    /// they would never end); a panic in the read reaches the caller only after the
    /// write has run to its end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_and_a_write_beside_it_run_on_two_threads_and_both_end() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("beside.db").display());
        let db = Db::open(&url).await.unwrap();
        let (to_write, written) = tokio::sync::oneshot::channel();
        let (to_read, read) = tokio::sync::oneshot::channel();
        let beside = tokio::spawn(async move {
            db.read_beside_write(
                async {
                    to_write.send(()).unwrap();
                    read.await.unwrap();
                    std::thread::current().id()
                },
                async {
                    written.await.unwrap();
                    to_read.send(()).unwrap();
                    std::thread::current().id()
                },
            )
            .await
        });
        let (reader, writer) = tokio::time::timeout(std::time::Duration::from_secs(10), beside)
            .await
            .expect("the read and the write run at once (one after the other, they wait forever)")
            .unwrap();
        assert_ne!(reader, writer, "the read and the write share a thread");

        let db = Db::open(&url).await.unwrap();
        let wrote = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (db2, flag) = (db.clone(), wrote.clone());
        let outcome = tokio::spawn(async move {
            db2.read_beside_write(async { failing_read() }, async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            })
            .await
        })
        .await;
        assert!(
            outcome.unwrap_err().is_panic(),
            "the read's panic is passed on"
        );
        assert!(
            wrote.load(std::sync::atomic::Ordering::SeqCst),
            "the write ran to its end first"
        );
    }

    /// The reader's URL: the same file, `mode=ro` whatever mode the writer's URL asks
    /// for; none for an in-memory database or a shared cache.
    #[test]
    fn the_reader_opens_the_same_file_read_only_or_not_at_all() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "sqlite:///var/lib/feegate/county.db?mode=rwc",
                Some("sqlite:///var/lib/feegate/county.db?mode=ro"),
            ),
            ("sqlite://county.db", Some("sqlite://county.db?mode=ro")),
            ("sqlite:county.db?mode=rw", Some("sqlite:county.db?mode=ro")),
            (
                "sqlite:///d/c.db?foo=1&mode=rwc&bar=2",
                Some("sqlite:///d/c.db?foo=1&bar=2&mode=ro"),
            ),
            (
                "sqlite:///mode=rw/c.db?mode=rwc",
                Some("sqlite:///mode=rw/c.db?mode=ro"),
            ),
            ("sqlite::memory:", None),
            ("sqlite::memory:?mode=rwc", None),
            ("sqlite:c.db?mode=memory", None),
            ("sqlite://?mode=memory&cache=shared", None),
            ("sqlite:///d/c.db?cache=shared&mode=rwc", None),
        ];
        for (url, want) in cases {
            assert_eq!(reader_url(url).as_deref(), *want, "{url}");
        }
    }

    /// An in-memory SQLite database has only its one connection (a second would open
    /// another, empty database), so its reads share it.
    #[tokio::test]
    async fn an_in_memory_sqlite_database_reads_on_its_one_connection() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        assert!(db.reads.is_none());
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'accounts'",
        )
        .fetch_one(db.reads())
        .await
        .unwrap();
        assert_eq!(tables, 1);
    }
}
