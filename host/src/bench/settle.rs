//! `feegate bench settle`: one day's settlement at scale, measured.
//!
//! Set-up (not timed): N accounts are written with bulk SQL — customers, meters,
//! agreements, accounts with a prepayment entry (200 yuan; 55 yuan for every third account,
//! so the day's charge takes it under the alarm threshold and the notice path runs too) —
//! and two daily frozen readings
//! each, derived from the shared Low Carbon London consumption (account i follows
//! household i mod 100; the register delta is that household's use on 2013-03-01).
//!
//! Timed: the real settlement path (`settlement::settle`: tariff component, decision log,
//! ledger, balance) and the warning path (`warning::assess`: warning component, notice
//! component, SMS outbox) for that day. Then, in a second fresh database (on PostgreSQL
//! one created beside the given one and dropped after), a bare baseline that writes the
//! same number of ledger rows and balance updates, batched as settlement batches them. Prints accounts per second for each,
//! their ratio, and the process's peak resident memory.

use crate::config::HostConfig;
use crate::county::County;
use crate::db::{Db, ds};
use crate::money::kwh_to_centi_kwh;
use crate::policy::PolicyEngine;
use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use feegate_meter::profile::Profiles;
use std::path::Path;
use std::time::Instant;

/// Figures of one bench run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SettleFigures {
    pub accounts: usize,
    pub settle_seconds: f64,
    pub settle_accounts_per_second: f64,
    pub warning_seconds: f64,
    pub baseline_seconds: f64,
    pub baseline_accounts_per_second: f64,
    /// (settlement + warnings) / baseline
    pub ratio_to_baseline: f64,
    pub peak_rss_mib: f64,
}

const DAY0: &str = "2013-03-01";
const DAY1: &str = "2013-03-02";

/// Writes `n` bench accounts (see the module doc) into an empty county `xianyou` whose
/// readings bill `consumption_day`: a frozen reading at 00:00 of that day and of the
/// next, the delta being household `i mod 100`'s use on the same month and day of 2013.
/// The morning job of `consumption_day + 1` settles them. Used by `feegate bench settle`
/// and `feegate bench seed`; the multi-host and crash tests (`host/tests/cluster.rs`) use
/// [`seed_accounts_with`] to put the meters on a simulator and accounts in arrears.
pub async fn seed_accounts(
    db: &Db,
    n: usize,
    profiles: &Profiles,
    consumption_day: NaiveDate,
) -> anyhow::Result<()> {
    seed_accounts_with(db, n, profiles, consumption_day, &SeedOptions::default()).await
}

/// Live meters for seeded accounts: a [`feegate_meter::sim::SimFleet`] of at least `n`
/// meters serving Modbus TCP (`SimFleet::serve`), its clock at 00:00 of the day after
/// the consumption day.
#[derive(Debug, Clone)]
pub struct SimMeters {
    /// The fleet's gateways in order (`SimFleet::gateway_stats`, or proxies in front of
    /// them): meter `i` is unit `i % per_gateway + 1` on gateway `i / per_gateway`, the
    /// layout `SimFleet::serve` uses.
    pub gateways: Vec<std::net::SocketAddr>,
    /// Meters per gateway, 1..=247, as passed to `SimFleet::serve`.
    pub per_gateway: usize,
    /// The fleet's seed: the consumption day's frozen reading is its starting register
    /// (`feegate_meter::sim::start_register`), which the fleet froze at 00:00 that day.
    pub sim_seed: u64,
}

/// An account that starts in arrears (see [`SeedOptions::arrears`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededArrears {
    /// Account index `i` (account `A{i}`).
    pub account: usize,
    /// Three on-time top-ups in a row: the shipped cutoff policy moves the customer to
    /// automatic disconnection in an approval-gated county; without it a disconnection
    /// asks for approval (a work order).
    pub prepaying_habit: bool,
}

/// What [`seed_accounts_with`] writes beyond [`seed_accounts`]' default accounts.
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// None (default): meters at an address nobody answers (`127.0.0.1:1`) and both
    /// readings written, so settlement needs no collection. Some: meters on the
    /// simulator and only the consumption day's reading written — the morning job's
    /// collection must read the new day's frozen value from the meters.
    pub meters: Option<SimMeters>,
    /// Accounts that start in arrears, ripe for disconnection on the morning's date
    /// after 08:00: 50 yuan prepaid, then an 80 yuan `correction` entry for arrears
    /// carried over (balance −30 yuan), in arrears since the consumption day, and an
    /// arrears SMS (level 3) delivered at 09:01 that day — more than the floor's 12 hours
    /// and the policy's grace day before the morning's 08:00.
    pub arrears: Vec<SeededArrears>,
}

/// Opening balance of a seeded arrears account, fen (see [`SeedOptions::arrears`]).
const ARREARS_PREPAYMENT_FEN: i64 = 5_000;
/// Arrears carried over into a seeded arrears account, fen.
const ARREARS_CARRIED_FEN: i64 = 8_000;

/// [`seed_accounts`] with [`SeedOptions`]: meters on a simulator, accounts in arrears.
pub async fn seed_accounts_with(
    db: &Db,
    n: usize,
    profiles: &Profiles,
    consumption_day: NaiveDate,
    opts: &SeedOptions,
) -> anyhow::Result<()> {
    if let Some(m) = &opts.meters {
        anyhow::ensure!(
            (1..=247).contains(&m.per_gateway) && m.gateways.len() * m.per_gateway >= n,
            "{} gateways of {} meters cannot hold {n} meters",
            m.gateways.len(),
            m.per_gateway
        );
    }
    if let Some(a) = opts.arrears.iter().find(|a| a.account >= n) {
        anyhow::bail!("arrears account {} is beyond the {n} accounts", a.account);
    }
    let arrears = |i: usize| opts.arrears.iter().find(|a| a.account == i);
    let opening = |i: usize| {
        if arrears(i).is_some() {
            ARREARS_PREPAYMENT_FEN
        } else {
            prepayment(i)
        }
    };
    let balance = |i: usize| {
        opening(i)
            - if arrears(i).is_some() {
                ARREARS_CARRIED_FEN
            } else {
                0
            }
    };
    let meter_link = |i: usize| match &opts.meters {
        None => ("127.0.0.1:1".to_string(), 1),
        Some(m) => (
            m.gateways[i / m.per_gateway].to_string(),
            i % m.per_gateway + 1,
        ),
    };
    let day0 = ds(consumption_day);
    let day1 = ds(consumption_day.succ_opt().context("date out of range")?);
    let data_day = NaiveDate::from_ymd_opt(2013, consumption_day.month(), consumption_day.day())
        .or_else(|| NaiveDate::from_ymd_opt(2013, 2, 28))
        .expect("valid date");
    sqlx::query("INSERT INTO counties (county, display_name, rollout_stage) VALUES ('xianyou', '仙游县', 'approval-gated')").execute(&db.pool).await?;
    sqlx::query(
        "INSERT INTO stations (station_id, county, name) VALUES ('XY-BT', 'xianyou', '榜头供电所')",
    )
    .execute(&db.pool)
    .await?;
    let households = profiles.households();
    const CHUNK: usize = 500;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let mut tx = db.begin_write().await?;
        let rows = |f: &dyn Fn(usize) -> String| (start..end).map(f).collect::<Vec<_>>().join(", ");
        let mut sql = vec![
            format!(
                "INSERT INTO customers (customer_id, county, station_id, name, master_mobile, customer_class) VALUES {}",
                rows(&|i| format!(
                    "('C{i}', 'xianyou', 'XY-BT', '客户{i}', '139{i:08}', 'low-voltage-residential')"
                ))
            ),
            format!(
                "INSERT INTO meters (meter_id, customer_id, protocol, gateway, unit_id, installed_on) VALUES {}",
                rows(&|i| {
                    let (gateway, unit) = meter_link(i);
                    format!("('M{i}', 'C{i}', 'modbus-tcp', '{gateway}', {unit}, '{day0}')")
                })
            ),
            format!(
                "INSERT INTO agreements (agreement_id, customer_id, alarm_threshold_fen, mobile, signed_at) VALUES {}",
                rows(&|i| format!("({}, 'C{i}', 5000, '139{i:08}', '{day0} 00:00:00')", i + 1))
            ),
            format!(
                "INSERT INTO accounts (account_id, customer_id, meter_id, agreement_id, county, station_id, status, balance_fen, arrears_since, ontime_topups_in_a_row) VALUES {}",
                rows(&|i| format!(
                    "('A{i}', 'C{i}', 'M{i}', {}, 'xianyou', 'XY-BT', 'active', {}, {}, {})",
                    i + 1,
                    balance(i),
                    arrears(i).map_or("NULL".to_string(), |_| format!("'{day0}'")),
                    arrears(i).map_or(0, |a| if a.prepaying_habit { 3 } else { 0 }),
                ))
            ),
            format!(
                "INSERT INTO ledger_entries (account_id, kind, amount_fen, balance_after_fen, idempotency_key, business_date, posted_at, reference) VALUES {}",
                rows(&|i| format!(
                    "('A{i}', 'prepayment', {0}, {0}, 'open-A{i}', '{day0}', '{day0} 00:00:00', 'bench')",
                    opening(i)
                ))
            ),
            format!(
                "INSERT INTO readings (meter_id, reading_date, register_centi_kwh, source, collected_at) VALUES {}",
                rows(&|i| match &opts.meters {
                    None => {
                        let h = &households[i % households.len()];
                        let kwh = h.kwh_on(data_day).unwrap_or_default();
                        let start_reg = 100_000 + (i as i64 % 1000) * 100;
                        format!(
                            "('M{i}', '{day0}', {start_reg}, 'daily-frozen', '{day0} 00:10:00'), ('M{i}', '{day1}', {}, 'daily-frozen', '{day1} 00:10:00')",
                            // Derived bench data: a household's daily kWh always fits.
                            start_reg
                                + kwh_to_centi_kwh(kwh)
                                    .expect("a household's daily kWh fits 0.01 kWh units")
                        )
                    }
                    Some(m) => format!(
                        "('M{i}', '{day0}', {}, 'daily-frozen', '{day0} 00:10:00')",
                        feegate_meter::sim::start_register(m.sim_seed, i)
                    ),
                })
            ),
        ];
        let owing: Vec<usize> = (start..end).filter(|i| arrears(*i).is_some()).collect();
        if !owing.is_empty() {
            let each = |f: &dyn Fn(usize) -> String| {
                owing.iter().map(|i| f(*i)).collect::<Vec<_>>().join(", ")
            };
            sql.push(format!(
                "INSERT INTO ledger_entries (account_id, kind, amount_fen, balance_after_fen, idempotency_key, business_date, posted_at, reference) VALUES {}",
                each(&|i| format!(
                    "('A{i}', 'correction', {}, {}, 'arrears-A{i}', '{day0}', '{day0} 00:00:01', 'bench: arrears carried over')",
                    -ARREARS_CARRIED_FEN,
                    balance(i)
                ))
            ));
            sql.push(format!(
                "INSERT INTO sms_outbox (account_id, kind, dedup_key, notice_key, mobile, body, warning_level, status, attempts, created_at, sent_at, delivered_at) VALUES {}",
                each(&|i| format!(
                    "('A{i}', 'arrears', 'bench-arrears-A{i}', 'bench-arrears-A{i}', '139{i:08}', '【仙游供电】您已欠费，请及时缴费。', 3, 'delivered', 1, '{day0} 09:00:00', '{day0} 09:00:00', '{day0} 09:01:00')"
                ))
            ));
        }
        for q in sql {
            sqlx::query(&q).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    // After a bulk load PostgreSQL's planner has no statistics until autovacuum gets to
    // the tables, and plans the settlement's keyset query as a scan and sort of every
    // account (400 ms a batch at 100,000 accounts instead of 7 ms): analyse now, as after
    // any bulk load.
    let mut conn = db.pool.acquire().await?;
    if conn.backend_name() == "PostgreSQL" {
        // The agreements above carry explicit ids, which PostgreSQL's identity sequence
        // does not see (SQLite takes the highest id + 1 by itself): move it past them, or
        // the next onboarding in this database collides with agreement 1.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('agreements', 'agreement_id'), \
             (SELECT MAX(agreement_id) FROM agreements))",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
    }
    Ok(())
}

/// Initial prepayment of bench account `i`, fen.
fn prepayment(i: usize) -> i64 {
    if i.is_multiple_of(3) { 5_500 } else { 20_000 }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs the bench. `db_url` none = fresh SQLite files in a temporary directory; a
/// `sqlite://` URL names a new file that is kept afterwards (the baseline still runs in a
/// temporary one); a PostgreSQL URL must name an empty database.
pub async fn settle(
    n: usize,
    db_url: Option<&str>,
    data: &Path,
    policy_set: &Path,
    components: &Path,
) -> anyhow::Result<SettleFigures> {
    let config = HostConfig::default();
    let engine = PolicyEngine::new(config.policy.clone())?;
    let county = County::load(&engine, policy_set, components, config.floor.clone())?;
    let profiles = Profiles::load(data).with_context(|| format!("loading {}", data.display()))?;
    let tmp = tempfile::tempdir()?;
    let url = |name: &str| {
        db_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join(name).display()))
    };

    let db = Db::open(&url("settle.db")).await?;
    let day0 = NaiveDate::from_ymd_opt(2013, 3, 1).expect("valid date");
    seed_accounts(&db, n, &profiles, day0)
        .await
        .context("seeding accounts (the database must be empty)")?;
    // Progress on stderr (`FEEGATE_LOG=info`): a million accounts take minutes to seed,
    // and a profiler can be attached once the timed part begins.
    tracing::info!(accounts = n, "seeded; settling");
    let policies = county.snapshot();
    let date = NaiveDate::from_ymd_opt(2013, 3, 2).expect("valid date");
    let now = date.and_hms_opt(0, 20, 0).expect("valid time");
    let t = Instant::now();
    let report = crate::settlement::settle(
        &db,
        &engine,
        &county.county,
        &policies,
        date,
        now,
        &config.settlement,
    )
    .await?;
    let settle_seconds = t.elapsed().as_secs_f64();
    tracing::info!(settle_seconds, "settled; assessing warnings");
    anyhow::ensure!(
        report.settled as usize == n,
        "settled {} of {n} accounts: {report:?}",
        report.settled
    );
    let t = Instant::now();
    crate::warning::assess(
        &db,
        &engine,
        &county.county,
        &policies,
        &report.settled_accounts,
        date,
        now,
        &config.settlement,
    )
    .await?;
    let warning_seconds = t.elapsed().as_secs_f64();
    tracing::info!(
        warning_seconds,
        "warnings assessed; seeding the bare baseline"
    );
    db.close().await;

    // Baseline: the same ledger rows and balance moves, bare — batched as settlement
    // batches them (one transaction and one `ledger::post_many` per BATCH_ACCOUNTS), so the
    // ratio shows what the decisions, the decision log and the settlement rows cost. On
    // PostgreSQL it runs in a second database, created beside the given one and dropped.
    // A given SQLite database is kept for inspection; its baseline goes to the temporary
    // directory.
    let (base_url, scratch) = match db_url {
        None => (url("baseline.db"), None),
        Some(u) if u.starts_with("sqlite:") => (
            format!("sqlite://{}", tmp.path().join("baseline.db").display()),
            None,
        ),
        Some(u) => {
            let scratch = ScratchPgDatabase::create(u, "baseline").await?;
            (scratch.url.clone(), Some(scratch))
        }
    };
    let db = Db::open(&base_url).await?;
    seed_accounts(&db, n, &profiles, day0).await?;
    tracing::info!("baseline seeded; timing it");
    let t = Instant::now();
    let posted_at = format!("{DAY1} 00:20:00");
    for start in (0..n).step_by(crate::settlement::BATCH_ACCOUNTS) {
        let end = (start + crate::settlement::BATCH_ACCOUNTS).min(n);
        let ids: Vec<(String, String)> = (start..end)
            .map(|i| (format!("A{i}"), format!("charge:A{i}:{DAY0}")))
            .collect();
        let postings: Vec<crate::ledger::Posting<'_>> = ids
            .iter()
            .map(|(account_id, key)| crate::ledger::Posting {
                account_id,
                kind: crate::ledger::EntryKind::Charge,
                amount_fen: -500,
                idempotency_key: key,
                business_date: DAY0,
                posted_at: &posted_at,
                reference: "baseline",
            })
            .collect();
        let mut tx = db.begin_write().await?;
        crate::ledger::post_many(&mut tx, &postings).await?;
        tx.commit().await?;
    }
    let baseline_seconds = t.elapsed().as_secs_f64();
    tracing::info!(baseline_seconds, "bare baseline done");
    db.close().await;
    if let Some(scratch) = scratch {
        scratch.drop_database().await?;
    }
    Ok(SettleFigures {
        accounts: n,
        settle_seconds,
        settle_accounts_per_second: n as f64 / settle_seconds,
        warning_seconds,
        baseline_seconds,
        baseline_accounts_per_second: n as f64 / baseline_seconds,
        ratio_to_baseline: (settle_seconds + warning_seconds) / baseline_seconds,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// A PostgreSQL database created beside another one on the same server (the bench's
/// baseline needs a database of its own), dropped with [`Self::drop_database`].
struct ScratchPgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchPgDatabase {
    /// Creates `<db>_<suffix>` (dropping a leftover of an earlier run first) with the
    /// connection `url` gives; needs the CREATEDB privilege.
    async fn create(url: &str, suffix: &str) -> anyhow::Result<Self> {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let (base, db) = url
            .split('?')
            .next()
            .and_then(|u| u.rsplit_once('/'))
            .context("the PostgreSQL URL names no database")?;
        anyhow::ensure!(
            !db.is_empty() && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {db:?}: use letters, digits and _ only for the bench"
        );
        let name = format!("{db}_{suffix}");
        let mut admin = sqlx::AnyConnection::connect(url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating the baseline database {name} (needs CREATEDB)"))?;
        Ok(Self {
            admin_url: url.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::AnyConnection::connect(&self.admin_url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await?;
        Ok(())
    }
}
