//! `feegate bench api`: balance queries against the HTTP API, measured.
//!
//! Set-up (not timed): N accounts are written with [`super::settle::seed_accounts`] (the
//! `bench seed` code; all at station XY-BT of Xianyou), a station-staff user of that
//! station gets an API token, and the API router (`serve::router`, the same one
//! `feegate serve` mounts, without county jobs) listens on 127.0.0.1 in this process.
//!
//! Timed: C client tasks, each with its own keep-alive HTTP/1.1 connection, send
//! `GET /api/v1/accounts/{id}/balance` (a random account each time) with the token for D
//! seconds after one second of warm-up. Every request authenticates (token lookup) and
//! checks the visibility like any other. Prints requests per second, latency p50 / p99 /
//! max, and errors (transport failures and answers other than 200). Client and server
//! share the machine's cores, so the figure is a floor for the server alone.

use crate::auth::Role;
use crate::auth::store::{NewUser, create_user, issue_token};
use crate::db::Db;
use crate::serve::ServeState;
use anyhow::Context;
use chrono::NaiveDate;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// Accounts seeded (the queries pick among them at random).
    pub accounts: usize,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Timed seconds (after 1 s of warm-up).
    pub seconds: u64,
    /// Database URL (must hold no accounts); none: a fresh SQLite file.
    pub db_url: Option<String>,
    /// Daily consumption data for the seeded readings.
    pub data: PathBuf,
}

/// Figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiFigures {
    pub accounts: usize,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The build profile the figures come from (`debug` or `release`).
    pub profile: &'static str,
}

/// Seeds, serves, drives, measures.
pub async fn api(opts: &ApiBenchOptions) -> anyhow::Result<ApiFigures> {
    anyhow::ensure!(
        opts.accounts > 0 && opts.connections > 0 && opts.seconds > 0,
        "--accounts, --connections and --seconds must be at least 1"
    );
    let dir = tempfile::tempdir()?;
    let url = opts
        .db_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench-api.db").display()));
    let db = Db::open(&url).await?;
    let profiles = feegate_meter::profile::Profiles::load(&opts.data)
        .with_context(|| format!("loading {}", opts.data.display()))?;
    super::settle::seed_accounts(
        &db,
        opts.accounts,
        &profiles,
        NaiveDate::from_ymd_opt(2013, 3, 1).expect("date"),
    )
    .await
    .context("seeding accounts (the database must hold no accounts)")?;
    create_user(
        &db,
        &NewUser {
            username: "bench-staff".into(),
            role: Some(Role::StationStaff),
            county: Some("xianyou".into()),
            station_id: Some("XY-BT".into()),
            ..NewUser::default()
        },
    )
    .await?;
    let token = issue_token(&db, "bench-staff", "bench api", Some(1))
        .await?
        .token;
    let state = Arc::new(ServeState {
        auth: crate::auth::extract::AuthState {
            db: db.clone(),
            config: Default::default(),
        },
        db: db.clone(),
        counties: Vec::new(),
        metrics: Arc::new(crate::serve::metrics::Metrics::new()),
        receipts: None,
        channels: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, crate::serve::router(state)).await;
    });

    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(opts.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..opts.connections {
        let (token, n) = (token.clone(), opts.accounts as u64);
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("HTTP client");
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
            let (mut latencies, mut errors) = (Vec::<u32>::with_capacity(1 << 16), 0u64);
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                // xorshift: a different account each time, no shared state.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let url = format!("http://{addr}/api/v1/accounts/A{}/balance", x % n);
                let ok = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if started >= warm_up {
                    if ok {
                        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0u64);
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        all.extend(l);
        errors += e;
    }
    server.abort();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(all[i]) / 1000.0
    };
    let requests = all.len() as u64 + errors;
    Ok(ApiFigures {
        accounts: opts.accounts,
        connections: opts.connections,
        seconds: opts.seconds as f64,
        requests,
        errors,
        requests_per_second: requests as f64 / opts.seconds as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    })
}

/// Prints the figures for people.
pub fn print(f: &ApiFigures) {
    println!(
        "bench api ({} build): GET /api/v1/accounts/{{id}}/balance, {} accounts, {} keep-alive connections, {} s",
        f.profile, f.accounts, f.connections, f.seconds
    );
    println!(
        "  {:.0} requests/s ({} requests, {} errors)",
        f.requests_per_second, f.requests, f.errors
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms, f.p99_ms, f.max_ms
    );
    println!("  target: 5,000 requests/s with p99 under 50 ms");
}
