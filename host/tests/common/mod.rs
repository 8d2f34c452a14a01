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

/// The bytes of `tests/legacy-policy` (a contract 1.0.0 component) relabelled as contract
/// `version`: every `feegate:policy/tariff@1.0.0` and `feegate:policy/types@1.0.0` name in
/// it becomes `…@{version}`. `version` has five characters, like `1.0.0`, so every
/// length prefix stays right and the binary stays a well-formed component: only the
/// version it claims changes.
pub fn legacy_relabelled(version: &str) -> Vec<u8> {
    assert_eq!(version.len(), "1.0.0".len(), "{version}: same length only");
    let mut bytes = std::fs::read(component("legacy_policy")).expect("built by `make plugins`");
    let mut replaced = 0;
    for interface in ["tariff", "types"] {
        let from = format!("feegate:policy/{interface}@1.0.0");
        let to = format!("feegate:policy/{interface}@{version}");
        let n = from.len();
        let mut at = 0;
        while at + n <= bytes.len() {
            if &bytes[at..at + n] == from.as_bytes() {
                bytes[at..at + n].copy_from_slice(to.as_bytes());
                replaced += 1;
                at += n;
            } else {
                at += 1;
            }
        }
    }
    assert!(replaced > 0, "the legacy component names its contract");
    bytes
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

/// The throw-away databases (`test_database` and its kin) live in the library, so the
/// unit tests inside `host/src` run on the backend under test too.
pub use feegate::testdb::*;

/// `small_county` on a fresh database for `test` (see `test_database`); keep the `TestDb`
/// alive as long as the county runs.
pub async fn small_county_db(
    test: &str,
    meters: usize,
    days: u32,
    seed: u64,
) -> Option<(DemoOptions, TestDb)> {
    let db = test_database(test).await?;
    let mut opts = small_county(meters, days, seed);
    opts.db_url = Some(db.url.clone());
    Some((opts, db))
}

/// The `feegate` binary under test: `$FEEGATE_BIN` when set, else the one cargo built
/// for this test run. (Worktrees that share one target directory share
/// `target/debug/feegate` too; set FEEGATE_BIN to a copy to keep another build from
/// swapping it mid-run.)
pub fn feegate_bin() -> PathBuf {
    std::env::var_os("FEEGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_feegate")))
}

/// A loopback port nobody listens on (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from `port` on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request(port, "GET", path, &[], "")
}

/// One HTTP/1.1 request to `port` on loopback, `Connection: close`: (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A `feegate serve` child process, killed (SIGKILL) when dropped; its log lines arrive
/// on `lines`.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `feegate serve --config CONFIG` in `dir` with extra environment.
    pub fn start(dir: &std::path::Path, config: &std::path::Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(feegate_bin());
        cmd.current_dir(dir)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("FEEGATE_LOG", "info")
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `feegate.toml` for one county (the shipped Xianyou set) on `port`, in `dir`.
pub fn serve_config(dir: &std::path::Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join(format!("feegate-{port}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n\n[[county]]\npolicy_set = \"{}\"\ncomponents = \"{}\"\n",
            repo().join("policies/xianyou").display(),
            components_dir().display()
        ),
    )
    .unwrap();
    path
}

/// `feegate` run in `dir` on the database `db` as `ops-test`, through the real binary.
pub struct Cli<'a> {
    pub dir: &'a std::path::Path,
    pub db: &'a str,
}

impl Cli<'_> {
    /// (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(feegate_bin())
            .args(args)
            .current_dir(self.dir)
            .env("FEEGATE_DB", self.db)
            .env("FEEGATE_WHO", "ops-test")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, Some(0), "{args:?}\n{stdout}\n{stderr}");
        stdout
    }
}

/// A database at `url` with `accounts` bench accounts in county `xianyou`, station
/// `XY-BT` (accounts `A0`…, `feegate bench seed`'s layout; readings for 2013-03-01).
pub async fn seeded_db(url: &str, accounts: usize) -> feegate::db::Db {
    let db = feegate::db::Db::open(url).await.unwrap();
    let profiles =
        feegate_meter::profile::Profiles::load(shared_data("lcl_2013_daily_kwh_100hh.csv"))
            .unwrap();
    feegate::bench::settle::seed_accounts(
        &db,
        accounts,
        &profiles,
        NaiveDate::from_ymd_opt(2013, 3, 1).unwrap(),
    )
    .await
    .unwrap();
    db
}

/// Marks every account in credit as disconnected since `since` (`YYYY-MM-DD HH:MM:SS`,
/// county time) and returns their ids: the state a reconnection decision starts from.
pub async fn disconnect_accounts_in_credit(db: &feegate::db::Db, since: &str) -> Vec<String> {
    sqlx::query(
        "UPDATE accounts SET relay_state = 'open', disconnected_at = $1
         WHERE balance_fen >= 0 RETURNING account_id",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| sqlx::Row::get(r, 0))
    .collect()
}

/// Onboards county `xy` (approval-gated) with `meters` low-voltage residential customers
/// `C{i}`, meters `M{i}` (Modbus unit i + 1 on a gateway nobody answers) and accounts
/// `A{i}` (alarm 10 yuan), spread over `stations` in turn, on 2013-01-01 08:00. Accounts
/// stay `pending-prepayment`.
pub async fn onboard_county_xy(db: &feegate::db::Db, meters: usize, stations: &[&str]) {
    use feegate::onboarding::{self, Application};
    onboarding::ensure_county(
        db,
        "xy",
        "Xianyou",
        feegate::policy::set::RolloutStage::ApprovalGated,
    )
    .await
    .unwrap();
    for s in stations {
        onboarding::ensure_station(db, s, "xy", s).await.unwrap();
    }
    let now = NaiveDate::from_ymd_opt(2013, 1, 1)
        .unwrap()
        .and_hms_opt(8, 0, 0)
        .unwrap();
    for i in 0..meters {
        let app = Application {
            county: "xy".into(),
            station_id: stations[i % stations.len()].into(),
            customer_id: format!("C{i}"),
            customer_name: format!("customer {i}"),
            master_mobile: None,
            customer_class: "low-voltage-residential".into(),
            vulnerable: false,
            meter_id: format!("M{i}"),
            link: feegate_meter::fleet::MeterLink::Modbus(feegate_meter::registers::MeterAddress {
                gateway: "127.0.0.1:502".parse().unwrap(),
                unit: (i + 1) as u8,
            }),
            ct_ratio: 1,
            pt_ratio: 1,
            account_id: format!("A{i}"),
            alarm_threshold_fen: 1000,
            auto_debit_fen: None,
            mobile: "13800000000".into(),
            second_mobile: None,
            keep_power: false,
            time_of_use: false,
        };
        onboarding::onboard(db, &app, now).await.unwrap();
    }
}
