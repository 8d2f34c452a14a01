//! `feegate serve`: one long-running process with the HTTP endpoints, the scheduler of
//! the daily job, and the registry watcher that swaps activated policy versions in
//! without a restart.
//!
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 when the database answers and every county's policies are
//!   loaded and its scheduler has caught up; 503 with the reasons otherwise.
//! - `GET /metrics`: Prometheus text ([`metrics`]).
//!
//! Several hosts may share one database ([`config::ClusterSection`]): each county's jobs
//! run on the one host holding its lease ([`crate::lease`]); the others stand by and
//! take over within the lease time when the holder dies.
//!
//! Scheduling ([`config::ScheduleSection`]): each county has one scheduler task, so a
//! county's jobs never overlap; counties run side by side. At start, mornings missed
//! during downtime are run in order (at most `catch_up_days` back), then today's cutoff
//! if its time has passed; `job_runs` makes every business day run once, whatever the
//! restarts. A failed job is logged and counted (`feegate_job_failures_total`) and runs
//! again at its next time; every stage it left half-done is idempotent.

pub mod config;
pub mod metrics;

use crate::clock::{Clock, ShiftedClock, SystemClock};
use crate::config::HostConfig;
use crate::county::County;
use crate::db::Db;
use crate::job::Host;
use crate::lease::{self, LeaseState};
use crate::outbox::LogGateway;
use crate::policy::PolicyEngine;
use crate::registry::{self, Watcher};
use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{Duration as ChronoDuration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use config::{ScheduleSection, ServeConfig};
use feegate_meter::client::{ClientConfig, ModbusMeterClient};
use feegate_meter::dlt645_client::{Dlt645Client, Dlt645Config};
use feegate_meter::fleet::FleetClient;
use metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// One county as served: its host (the daily job) and its registry watcher.
pub struct CountyRuntime {
    pub host: Arc<Host>,
    pub watcher: Arc<Watcher>,
    pub offset: FixedOffset,
    /// Set once the scheduler has caught up after start (or stands by while another
    /// host holds the county).
    caught_up: AtomicBool,
    /// Set while this host cannot reach the county's lease (a database error): it runs
    /// nothing for the county and says so in `/readyz`.
    lease_unreachable: AtomicBool,
}

/// What the HTTP handlers share.
pub struct ServeState {
    pub db: Db,
    pub counties: Vec<Arc<CountyRuntime>>,
    pub metrics: Arc<Metrics>,
    /// The SMS receipts endpoint's state, when an HTTP SMS gateway is configured.
    pub receipts: Option<crate::sms::receipts::ReceiptsState>,
    /// The payment channels' endpoints, when `[channels] config` names a file.
    pub channels: Option<crate::channels::ChannelsState>,
    /// Who is asking: API tokens and console sessions (`[auth]`).
    pub auth: crate::auth::extract::AuthState,
}

impl axum::extract::FromRef<Arc<ServeState>> for crate::auth::extract::AuthState {
    fn from_ref(state: &Arc<ServeState>) -> Self {
        state.auth.clone()
    }
}

/// Opens the database, loads every county's policy set, records the shipped components
/// in the registry, and applies activations already in force.
pub async fn prepare(config: &ServeConfig) -> anyhow::Result<Arc<ServeState>> {
    let db = Db::open(&config.database.url).await?;
    let mut host_config = HostConfig::default();
    host_config.settlement.batch_accounts = config.settlement.batch_accounts;
    host_config.policy.max_price_yuan_per_kwh = config.settlement.max_price_yuan_per_kwh;
    let engine = PolicyEngine::new(host_config.policy.clone())?;
    let (timeout, retries, retry_backoff) = (
        Duration::from_millis(config.meters.timeout_ms),
        config.meters.retries,
        Duration::from_millis(config.meters.retry_backoff_ms),
    );
    // Modbus TCP and DL/T 645 (gateways, serial ports). 1376.1 terminals need a master
    // station listening for their logins, which `serve` does not open yet: terminal
    // meters fail their reads with that reason, and the rest are read.
    let meters = FleetClient::new(
        ModbusMeterClient::new(ClientConfig {
            timeout,
            retries,
            retry_backoff,
        }),
        Dlt645Client::new(
            Dlt645Config {
                timeout,
                retries,
                retry_backoff,
                ..Dlt645Config::default()
            },
            None,
        ),
    );
    // SMS: the HTTP JSON gateway when FEEGATE_SMS_URL is set, else the log gateway.
    let sms_http = crate::sms::http::HttpGatewayConfig::from_env()
        .map_err(|e| anyhow::anyhow!("SMS gateway configuration: {e}"))?;
    let sms: Arc<dyn crate::outbox::SmsGateway> = match &sms_http {
        Some(cfg) => Arc::new(crate::sms::http::HttpGateway::new(cfg.clone())?),
        None => Arc::new(LogGateway::default()),
    };
    let mut counties = Vec::new();
    for c in &config.counties {
        let offset = FixedOffset::east_opt(c.utc_offset_hours * 3600).with_context(|| {
            format!(
                "county {}: utc_offset_hours {} is not a valid offset (-23..=23)",
                c.policy_set.display(),
                c.utc_offset_hours
            )
        })?;
        let clock: Arc<dyn Clock> = match config.clock.shift_seconds {
            0 => Arc::new(SystemClock { offset }),
            shift => {
                let clock = ShiftedClock {
                    system: SystemClock { offset },
                    shift: ChronoDuration::seconds(shift),
                };
                tracing::warn!(
                    county = %c.policy_set.display(),
                    shift_seconds = shift,
                    local_now = %clock.now(),
                    "[clock] shift_seconds is set: county time is not the real time (rehearsal or test only)"
                );
                Arc::new(clock)
            }
        };
        let county = Arc::new(
            County::load(
                &engine,
                &c.policy_set,
                &c.components,
                host_config.floor.clone(),
            )
            .with_context(|| format!("loading the policy set {}", c.policy_set.display()))?,
        );
        registry::record_policy_set(&db, &county, &c.policy_set, &c.components, clock.now())
            .await?;
        let watcher = Arc::new(Watcher::new(
            db.clone(),
            engine.clone(),
            county.clone(),
            clock.clone(),
        ));
        watcher.poll().await?;
        counties.push(Arc::new(CountyRuntime {
            host: Arc::new(Host {
                db: db.clone(),
                engine: engine.clone(),
                meters: meters.clone(),
                county,
                config: host_config.clone(),
                clock,
                sms: sms.clone(),
            }),
            watcher,
            offset,
            caught_up: AtomicBool::new(false),
            lease_unreachable: AtomicBool::new(false),
        }));
    }
    // Delivery receipts of the HTTP gateway come back to /sms/receipts; county local
    // time for them is the first county's (every county of one host shares an offset
    // in practice: China has one time zone).
    let receipts = match (sms_http, counties.first()) {
        (Some(cfg), Some(first)) => Some(crate::sms::receipts::ReceiptsState {
            db: db.clone(),
            clock: first.host.clock.clone(),
            auth: cfg.auth,
            outbox: host_config.outbox.clone(),
        }),
        _ => None,
    };
    // Payment channels (`[channels] config`): notifications applied exactly once,
    // reconnection at once, auto-debit. Reconnection decisions need the account's county
    // policies: with one county served they are made here at once; with several, the
    // county's relays job reconnects (within a minute by default).
    let channels = match &config.channels.config {
        None => None,
        Some(path) => {
            let cfg = crate::channels::config::ChannelsConfig::load(path)
                .with_context(|| format!("[channels] config {}", path.display()))?;
            let clock = counties
                .first()
                .map(|c| c.host.clock.clone())
                .context("[channels] needs at least one [[county]]")?;
            let host = (counties.len() == 1).then(|| counties[0].host.clone());
            let service =
                crate::channels::service::Service::start(db.clone(), cfg, clock.clone(), host)
                    .await?;
            service.spawn_auto_debit(db.clone(), clock, Duration::from_secs(60));
            Some(service.state.clone())
        }
    };
    let metrics = Arc::new(Metrics::new());
    for c in &counties {
        let jobs: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
        metrics.start_series(&c.host.county.county, &jobs);
    }
    Ok(Arc::new(ServeState {
        auth: crate::auth::extract::AuthState {
            db: db.clone(),
            config: config.auth.clone(),
        },
        db,
        counties,
        metrics,
        receipts,
        channels,
    }))
}

/// The HTTP routes: health, readiness, metrics; the API (`/api/v1`, `/api/openapi.json`,
/// [`crate::api`]); the SMS gateway's delivery receipts
/// (`POST /sms/receipts`) when an HTTP gateway is configured; the payment channels'
/// notifications (`POST /channels/{channel}/notify`) when `[channels]` is configured.
pub fn router(state: Arc<ServeState>) -> Router {
    let console = crate::console::ConsoleState::from_serve(&state)
        .expect("the console's templates are built into the binary and parse");
    let receipts = state.receipts.clone();
    let channels = state.channels.clone();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state.clone())
        .merge(crate::api::router(state));
    if let Some(r) = receipts {
        router = router.merge(crate::sms::receipts::receipts_router(r));
    }
    if let Some(c) = channels {
        router = router.merge(crate::channels::router(c));
    }
    // An unknown path answers the API's JSON 404 (`not-found`), console paths included.
    router
        .merge(crate::console::router(console))
        .fallback(crate::api::error::unknown_route)
}

async fn readyz(State(state): State<Arc<ServeState>>) -> impl IntoResponse {
    let mut not_ready = Vec::new();
    if let Err(e) = sqlx::query("SELECT 1").execute(&state.db.pool).await {
        not_ready.push(format!("database: {e}"));
    }
    for c in &state.counties {
        if c.lease_unreachable.load(Ordering::Acquire) {
            not_ready.push(format!(
                "county {}: its lease cannot be read or renewed (database error, see the log); this host runs none of its jobs",
                c.host.county.county
            ));
        } else if !c.caught_up.load(Ordering::Acquire) {
            not_ready.push(format!(
                "county {}: catching up after start",
                c.host.county.county
            ));
        }
    }
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": not_ready.is_empty(), "not_ready": not_ready })),
    )
}

async fn metrics_text(State(state): State<Arc<ServeState>>) -> impl IntoResponse {
    match state.metrics.render(&state.db).await {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metrics unavailable: database error: {e}\n"),
        )
            .into_response(),
    }
}

/// Runs until `shutdown` resolves: the HTTP server on `config.server.listen`, one
/// scheduler per county, one registry watcher per county. A job in progress at
/// shutdown is finished first (the next start would resume it anyway).
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = prepare(&config).await.map_err(|e| {
        // SQLite's busy timeout (5 s) ran out at start: say what that means.
        if format!("{e:#}").contains("database is locked") {
            e.context(format!(
                "another process holds {}'s write lock (a long import, a demo, a backup?); start again when it is done",
                config.database.url
            ))
        } else {
            e
        }
    })?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, counties = state.counties.len(), "feegate serve started");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // The lease holder is the host id plus a token of this process: two processes given
    // the same id (a rolling restart with the old one still alive) are still two
    // holders, and the second waits for the first's lease instead of sharing it.
    let holder = format!(
        "{}#{:08x}",
        config.cluster.host_id,
        getrandom::u32().unwrap_or_else(|_| std::process::id())
    );
    let mut watchers = Vec::new();
    for c in &state.counties {
        watchers.push(
            c.watcher
                .clone()
                .spawn(Duration::from_secs(config.registry.poll_seconds.max(1))),
        );
        // `None` until the first lease attempt has answered: not ready before then.
        let (held_tx, held_rx) = watch::channel(None);
        tasks.spawn(lease_keeper(
            state.db.clone(),
            c.clone(),
            holder.clone(),
            Duration::from_secs(config.cluster.lease_seconds.max(3)),
            held_tx,
            stop_rx.clone(),
        ));
        let (c, schedule, metrics, stop) = (
            c.clone(),
            config.schedule.clone(),
            state.metrics.clone(),
            stop_rx.clone(),
        );
        tasks.spawn(async move { scheduler(c, schedule, metrics, held_rx, stop).await });
    }
    // With the peer address: the console's failed-login limit counts per client.
    let app = router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    server.await.context("HTTP server failed")?;
    while tasks.join_next().await.is_some() {}
    for w in watchers {
        w.abort();
    }
    tracing::info!("feegate serve stopped");
    Ok(())
}

/// The jobs a scheduler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Morning,
    Outbox,
    Cutoff,
    Relays,
}

impl Job {
    /// Every job, in schedule order.
    pub const ALL: [Job; 4] = [Job::Morning, Job::Outbox, Job::Cutoff, Job::Relays];

    pub fn name(self) -> &'static str {
        match self {
            Job::Morning => "morning",
            Job::Outbox => "outbox",
            Job::Cutoff => "cutoff",
            Job::Relays => "relays",
        }
    }
}

/// The next time after `now` (county local) that any job is due, with every job due
/// then, in the order morning, outbox, cutoff, relays (so jobs that share a time all
/// run, and the morning's settlement comes before a cutoff at the same minute).
pub fn next_due(
    schedule: &ScheduleSection,
    offset: FixedOffset,
    now: NaiveDateTime,
) -> Option<(Vec<Job>, NaiveDateTime)> {
    let at = offset.from_local_datetime(&now).single()?;
    let due: Vec<(Job, NaiveDateTime)> = [
        (Job::Morning, &schedule.morning),
        (Job::Outbox, &schedule.outbox),
        (Job::Cutoff, &schedule.cutoff),
        (Job::Relays, &schedule.relays),
    ]
    .into_iter()
    .filter_map(|(job, spec)| {
        spec.schedule()
            .after(&at)
            .next()
            .map(|t| (job, t.naive_local()))
    })
    .collect();
    let first = due.iter().map(|(_, t)| *t).min()?;
    Some((
        due.into_iter()
            .filter(|(_, t)| *t == first)
            .map(|(j, _)| j)
            .collect(),
        first,
    ))
}

/// The first time on `date` that `spec` fires, if it does that day.
fn first_on(
    spec: &config::CronSpec,
    offset: FixedOffset,
    date: NaiveDate,
) -> Option<NaiveDateTime> {
    let start = date.and_hms_opt(0, 0, 0)? - ChronoDuration::seconds(1);
    let t = spec
        .schedule()
        .after(&offset.from_local_datetime(&start).single()?)
        .next()?
        .naive_local();
    (t.date() == date).then_some(t)
}

/// Business days whose morning must run at start: from the day after the last completed
/// morning (or today, on a fresh database) up to today if today's morning time has
/// passed, never more than `catch_up_days` back.
pub fn mornings_to_catch_up(
    schedule: &ScheduleSection,
    offset: FixedOffset,
    now: NaiveDateTime,
    last_done: Option<NaiveDate>,
) -> Vec<NaiveDate> {
    let today = now.date();
    let last_due = match first_on(&schedule.morning, offset, today) {
        Some(t) if t <= now => today,
        _ => today.pred_opt().expect("date after 0001-01-01"),
    };
    let earliest = last_due - ChronoDuration::days(i64::from(schedule.catch_up_days.max(1)) - 1);
    let first = last_done
        .and_then(|d| d.succ_opt())
        .unwrap_or(last_due)
        .max(earliest);
    first.iter_days().take_while(|d| *d <= last_due).collect()
}

/// Keeps this host's lease on the county: renews it every third of `ttl`, takes it over
/// once another holder's has expired, and publishes whether it is held (`Some`, from the
/// first attempt on). Gives it up on stop. A database error counts as "not held" (better
/// idle than doubled) and makes the host not ready until an attempt answers again.
async fn lease_keeper(
    db: Db,
    runtime: Arc<CountyRuntime>,
    holder: String,
    ttl: Duration,
    held: watch::Sender<Option<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl_ms = ttl.as_millis() as i64;
    let county = runtime.host.county.county.clone();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let now = lease::now_ms();
        let attempt = lease::acquire(&db, &county, &holder, now, ttl_ms).await;
        runtime
            .lease_unreachable
            .store(attempt.is_err(), Ordering::Release);
        let is_held = match attempt {
            Ok(LeaseState::Held { epoch, .. }) => {
                if *held.borrow() != Some(true) {
                    tracing::info!(%county, %holder, epoch, "county lease acquired; this host runs its jobs");
                }
                true
            }
            Ok(LeaseState::HeldBy {
                holder: other,
                expires_at_ms,
            }) => {
                if *held.borrow() == Some(true) {
                    tracing::warn!(%county, %other, "county lease lost; this host stops running its jobs");
                }
                tracing::debug!(%county, %other, in_ms = expires_at_ms - now, "county held by another host");
                false
            }
            Err(e) => {
                tracing::error!(%county, "county lease: {e}; standing by");
                false
            }
        };
        held.send_if_modified(|h| h.replace(is_held) != Some(is_held));
    }
    if *held.borrow() == Some(true) {
        if let Err(e) = lease::release(&db, &county, &holder).await {
            tracing::warn!(%county, "releasing the county lease: {e}; it expires by itself");
        }
        held.send_replace(Some(false));
    }
}

/// Runs the county's jobs while this host holds its lease: on each acquisition, first
/// the catch-up (which also finishes a morning a dead holder left half-done), then the
/// schedule. Losing the lease stops it between jobs.
async fn scheduler(
    c: Arc<CountyRuntime>,
    schedule: ScheduleSection,
    metrics: Arc<Metrics>,
    mut held: watch::Receiver<Option<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    let county = c.host.county.county.clone();
    'standby: loop {
        loop {
            let state = *held.borrow_and_update();
            match state {
                Some(true) => break,
                // Standing by is ready: another host runs the county.
                Some(false) => c.caught_up.store(true, Ordering::Release),
                // The lease not tried yet: whether this host must catch up is unknown.
                None => {}
            }
            tokio::select! {
                r = held.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        c.caught_up.store(false, Ordering::Release);
        if let Err(e) = catch_up(&c, &schedule, &metrics).await {
            tracing::error!(%county, "catch-up failed: {e:#}; the next scheduled run retries");
        }
        c.caught_up.store(true, Ordering::Release);
        loop {
            let now = c.host.clock.now();
            let Some((jobs, at)) = next_due(&schedule, c.offset, now) else {
                tracing::error!(%county, "no job is ever due again under [schedule]; scheduler stops");
                return;
            };
            let wait = (at - now).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = held.changed() => continue 'standby,
                _ = stop.changed() => return,
            }
            for job in jobs {
                if *held.borrow() != Some(true) {
                    continue 'standby;
                }
                run_job(&c, job, at.date(), &metrics).await;
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn catch_up(
    c: &CountyRuntime,
    schedule: &ScheduleSection,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let county = &c.host.county.county;
    let last_done: Option<String> = sqlx::query_scalar(
        "SELECT MAX(business_date) FROM job_runs WHERE county = $1 AND stage = 'warning'",
    )
    .bind(county)
    .fetch_one(&c.host.db.pool)
    .await?;
    let last_done = last_done.map(|d| crate::db::parse_ds(&d)).transpose()?;
    let now = c.host.clock.now();
    for date in mornings_to_catch_up(schedule, c.offset, now, last_done) {
        tracing::info!(%county, %date, "catching up the morning job");
        run_job(c, Job::Morning, date, metrics).await;
    }
    let today = now.date();
    if first_on(&schedule.cutoff, c.offset, today).is_some_and(|t| t <= now)
        && !c.host.stage_done("cutoff", today).await?
    {
        run_job(c, Job::Cutoff, today, metrics).await;
    }
    Ok(())
}

/// Runs one job now for business `date`, recording its duration and failures.
pub async fn run_job(c: &CountyRuntime, job: Job, date: NaiveDate, metrics: &Metrics) {
    let county = c.host.county.county.as_str();
    let began = std::time::Instant::now();
    let run = async {
        match job {
            Job::Morning => {
                let report = c.host.run_morning(date).await?;
                for (stage, seconds) in &report.stage_seconds {
                    metrics
                        .job_duration
                        .with_label_values(&[county, stage])
                        .observe(*seconds);
                }
                let mut conn = c.host.db.pool.acquire().await?;
                for (station, rate) in
                    crate::collection::station_rates(&mut conn, county, None, date).await?
                {
                    let ratio = if rate.expected == 0 {
                        1.0
                    } else {
                        f64::from(rate.ok) / f64::from(rate.expected)
                    };
                    metrics
                        .read_success_rate
                        .with_label_values(&[county, &station])
                        .set(ratio);
                }
                tracing::info!(county, %date, collected = report.collection.read_ok, settled = report.settlement.settled, "morning job done");
            }
            Job::Outbox => {
                let r = c.host.run_outbox().await?;
                tracing::debug!(county, ?r, "outbox run");
            }
            Job::Cutoff => {
                let r = c.host.run_cutoff().await?;
                c.host.mark_done("cutoff", date).await?;
                tracing::info!(county, ?r, "cutoff run");
            }
            Job::Relays => {
                c.host.execute_approved().await?;
                let r = c.host.drive_relays().await?;
                observe_relay_latency(c, &r, metrics).await?;
            }
        }
        Ok(())
    };
    // A panic (a defect) fails this run like an error: its transaction rolls back, it is
    // counted and logged, and the county's scheduler goes on with its other jobs.
    let result: anyhow::Result<()> =
        match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(anyhow::anyhow!(
                    "the job panicked ({what}); this is a defect, report it"
                ))
            }
        };
    metrics
        .job_duration
        .with_label_values(&[county, job.name()])
        .observe(began.elapsed().as_secs_f64());
    if let Err(e) = result {
        metrics
            .job_failures
            .with_label_values(&[county, job.name()])
            .inc();
        tracing::error!(county, job = job.name(), %date, "job failed: {e:#}; it runs again at its next time");
    }
}

async fn observe_relay_latency(
    c: &CountyRuntime,
    report: &crate::relay::RelayReport,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    for e in report.events.iter().filter(|e| e.confirmed) {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT created_at, confirmed_at FROM relay_commands WHERE command_id = $1",
        )
        .bind(e.command_id)
        .fetch_optional(&c.host.db.pool)
        .await?;
        if let Some((created, Some(confirmed))) = row {
            let seconds = (crate::db::parse_ts(&confirmed)? - crate::db::parse_ts(&created)?)
                .num_milliseconds() as f64
                / 1000.0;
            metrics
                .relay_command
                .with_label_values(&[
                    c.host.county.county.as_str(),
                    crate::relay::command_name(e.command),
                ])
                .observe(seconds);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_jobs_are_all_those_due_earliest_in_county_time() {
        use Job::*;
        let s = ScheduleSection::default();
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        let cases = [
            (
                "2013-03-01 00:09:30",
                vec![Morning, Outbox, Relays],
                "2013-03-01 00:10:00",
            ),
            ("2013-03-01 00:10:00", vec![Relays], "2013-03-01 00:11:00"),
            (
                "2013-03-01 00:14:01",
                vec![Outbox, Relays],
                "2013-03-01 00:15:00",
            ),
            (
                "2013-03-01 08:59:59",
                vec![Outbox, Cutoff, Relays],
                "2013-03-01 09:00:00",
            ),
            ("2013-03-01 09:00:00", vec![Relays], "2013-03-01 09:01:00"),
        ];
        for (now, jobs, when) in cases {
            assert_eq!(next_due(&s, cst, at(now)), Some((jobs, at(when))), "{now}");
        }
        let never = |_| "0 0 0 1 1 * 2099".parse().unwrap();
        let only_morning = ScheduleSection {
            outbox: never(()),
            cutoff: never(()),
            relays: never(()),
            ..ScheduleSection::default()
        };
        assert_eq!(
            next_due(&only_morning, cst, at("2013-03-01 00:10:00")),
            Some((vec![Morning], at("2013-03-02 00:10:00")))
        );
    }

    #[test]
    fn missed_mornings_are_caught_up_in_order_once_and_within_the_limit() {
        let s = ScheduleSection::default();
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        let days = |v: &[&str]| v.iter().map(|x| d(x)).collect::<Vec<_>>();
        let cases: [(&str, Option<&str>, Vec<NaiveDate>); 6] = [
            // Fresh database, after today's morning time: today only.
            ("2013-03-10 08:00:00", None, days(&["2013-03-10"])),
            // Fresh database, before it: yesterday (its morning was missed too).
            ("2013-03-10 00:05:00", None, days(&["2013-03-09"])),
            // Up to date: nothing.
            ("2013-03-10 08:00:00", Some("2013-03-10"), days(&[])),
            ("2013-03-10 00:05:00", Some("2013-03-09"), days(&[])),
            // Down three days: each missed day in order.
            (
                "2013-03-10 08:00:00",
                Some("2013-03-07"),
                days(&["2013-03-08", "2013-03-09", "2013-03-10"]),
            ),
            // Down a month: the last seven days only.
            (
                "2013-03-10 08:00:00",
                Some("2013-02-01"),
                days(&[
                    "2013-03-04",
                    "2013-03-05",
                    "2013-03-06",
                    "2013-03-07",
                    "2013-03-08",
                    "2013-03-09",
                    "2013-03-10",
                ]),
            ),
        ];
        for (now, last, want) in cases {
            assert_eq!(
                mornings_to_catch_up(&s, cst, at(now), last.map(d)),
                want,
                "now {now}, last done {last:?}"
            );
        }
    }
}
