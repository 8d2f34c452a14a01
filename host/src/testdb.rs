//! Throw-away databases for tests, on the backend under test: `FEEGATE_TEST_BACKEND` =
//! `sqlite` (the default: a file in a temporary directory) or `postgres` (a database created
//! on the server at `FEEGATE_TEST_PG`, default `postgres://root@127.0.0.1:5432/test`, and
//! dropped afterwards). Where no PostgreSQL server answers, [`test_database`] prints
//! `SKIPPED <test>: <why>` and returns `None`, and the test returns and passes.
//!
//! Used by the integration tests (`host/tests/common`) and by the unit tests inside
//! `host/src` that are about a database; `make test-postgres` runs both on PostgreSQL.
//! Not part of the product: nothing outside tests calls it.

/// A throw-away PostgreSQL database for one test, dropped when this guard is.
pub struct PgTestDb {
    pub url: String,
    name: String,
    admin_url: String,
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any async context we can rely on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                    let _ = sqlx::Executor::execute(
                        &mut c,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

/// A fresh PostgreSQL database on the server at `FEEGATE_TEST_PG` (default
/// `postgres://root@127.0.0.1:5432/test`, where CI has one), or `None` — with a message
/// saying the PostgreSQL test is skipped — when no server is reachable.
pub async fn pg_database(test: &str) -> Option<PgTestDb> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin_url = std::env::var("FEEGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    // Once a server did not answer, the rest of this test binary skips at once (a
    // property test asks once per case).
    static UNREACHABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(why) = UNREACHABLE.get() {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::AnyConnection::connect(&admin_url),
    )
    .await;
    let mut admin = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let why = format!("PostgreSQL not reachable at {admin_url}: {e}");
            eprintln!("SKIPPED {test}: {why}");
            let _ = UNREACHABLE.set(why);
            return None;
        }
        Err(_) => {
            let why = format!("PostgreSQL at {admin_url} did not answer in 5 s");
            eprintln!("SKIPPED {test}: {why}");
            let _ = UNREACHABLE.set(why);
            return None;
        }
    };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "feegate_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    sqlx::Executor::execute(
        &mut admin,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
    )
    .await
    .unwrap();
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin_url.clone());
    Some(PgTestDb {
        url: format!("{base}/{name}"),
        name,
        admin_url,
    })
}

/// The database backend the integration tests run on: `FEEGATE_TEST_BACKEND` = `sqlite`
/// (the default) or `postgres` (the server at `FEEGATE_TEST_PG`, see `pg_database`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("FEEGATE_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        Ok(other) => panic!("FEEGATE_TEST_BACKEND={other:?}: expected `sqlite` or `postgres`"),
    }
}

/// One test's database on the backend under test, dropped (file or database) when this is.
pub struct TestDb {
    pub url: String,
    /// The SQLite file's directory, removed when this is dropped (never read).
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDb>,
}

impl TestDb {
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }
}

/// A fresh SQLite file in a temporary directory, whatever the backend under test (for
/// the tests that are about SQLite itself).
pub fn sqlite_database() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        url: format!("sqlite://{}", dir.path().join("test.db").display()),
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh, empty database for `test` on the backend `FEEGATE_TEST_BACKEND` names: a
/// SQLite file, or a throw-away PostgreSQL database — `None`, after a `SKIPPED <test>: …`
/// line, where no PostgreSQL server answers (the test then returns and passes).
pub async fn test_database(test: &str) -> Option<TestDb> {
    match backend() {
        Backend::Sqlite => Some(sqlite_database()),
        Backend::Postgres => pg_database(test).await.map(|pg| TestDb {
            url: pg.url.clone(),
            _dir: None,
            pg: Some(pg),
        }),
    }
}

/// `test_database` for a test without an async runtime.
pub fn test_database_blocking(test: &str) -> Option<TestDb> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test_database(test))
}
