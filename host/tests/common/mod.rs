//! Shared set-up for the host's integration tests: where the built components and the
//! shared data are, and a small simulated county.

#![allow(dead_code)]

use chrono::NaiveDate;
use feegate::demo::DemoOptions;
use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `make plugins` puts the components. Fails with what to do when they are missing.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("FEEGATE_COMPONENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/wasm32-wasip2/plugin"));
    assert!(
        dir.join("policy_tariff_step.wasm").exists(),
        "policy components not found in {}; run `make plugins` (or `make test`) first",
        dir.display()
    );
    dir
}

/// A built component by crate name, e.g. `hostile_policy`.
pub fn component(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}

/// `../shared/data/<file>`.
pub fn shared_data(file: &str) -> PathBuf {
    repo().join("../shared/data").join(file)
}

/// Demo options for a small county in tests.
pub fn small_county(meters: usize, days: u32, seed: u64) -> DemoOptions {
    DemoOptions {
        meters,
        days,
        start: NaiveDate::from_ymd_opt(2013, 1, 1).unwrap(),
        seed,
        db_url: None,
        data: shared_data("lcl_2013_daily_kwh_100hh.csv"),
        policy_set: repo().join("policies/xianyou"),
        components: components_dir(),
        meters_per_gateway: 8,
        read_timeout: std::time::Duration::from_millis(300),
        protocol_mix: Default::default(),
        progress: false,
    }
}

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
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::AnyConnection::connect(&admin_url),
    )
    .await;
    let mut admin = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("SKIPPED {test}: PostgreSQL not reachable at {admin_url}: {e}");
            return None;
        }
        Err(_) => {
            eprintln!("SKIPPED {test}: PostgreSQL at {admin_url} did not answer in 5 s");
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
