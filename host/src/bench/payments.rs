//! `feegate bench payments`: signed notifications posted concurrently to the real channel
//! router on loopback, checked against the ledger afterwards.
//!
//! Set-up (not timed): a simulated county (`demo::Scenario`) with `accounts` meters on
//! the Modbus simulator; the first `disconnected` accounts are put in arrears (a charge
//! entry) and their meters tripped. Every notification is signed before the clock
//! starts (HMAC-SHA256 for four channels, RSA-SHA256 for `alipay`); a share of them is
//! posted twice, as a channel's retries.
//!
//! Timed: posting every request with `concurrency` in flight until all are answered →
//! payments per second. Then, for each disconnected account, payment accepted → close-
//! allowed command sent and answered by the meter (p50, p99). Lost = notifications
//! answered `applied`/`duplicate` but without their ledger entry, or never applied;
//! doubled = ledger entries beyond one per transaction, or an amount total that differs
//! from what was sent.

use crate::channels::auth;
use crate::channels::config::{ChannelConfig, ChannelKey, ChannelsConfig};
use crate::channels::service::Service;
use crate::db::{Db, ts};
use crate::demo::{DemoOptions, Scenario};
use crate::ledger::{self, EntryKind, Posting};
use crate::money::{Fen, format_yuan};
use chrono::NaiveDate;
use feegate_meter::registers::RelayCommand;
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Test-only RSA key pair of the `alipay` bench channel (also used by the test suite).
const ALIPAY_PRIVATE: &str = include_str!("../../tests/data/alipay_test_private.pem");
const ALIPAY_PUBLIC: &str = include_str!("../../tests/data/alipay_test_public.pem");
/// Channel names, as the demo uses them.
pub const CHANNELS: [&str; 5] = ["bank-transfer", "online-banking", "kiosk", "alipay", "app"];

/// The bench's knobs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub payments: usize,
    pub concurrency: usize,
    pub accounts: usize,
    pub disconnected: usize,
    pub retry_share: f64,
    pub db_url: Option<String>,
    pub data: PathBuf,
    pub policy_set: PathBuf,
    pub components: PathBuf,
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentFigures {
    pub backend: String,
    pub payments: usize,
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub payments_per_second: f64,
    pub requests_per_second: f64,
    /// Answers by result code.
    pub codes: BTreeMap<String, usize>,
    pub lost: usize,
    pub doubled: usize,
    pub unbalanced_accounts: usize,
    pub disconnected: usize,
    pub reconnect_commands: usize,
    pub reconnect_p50_ms: f64,
    pub reconnect_p99_ms: f64,
    pub reconnect_max_ms: f64,
}

/// The bench's channel configuration: secrets for the HMAC channels, the test key for alipay.
pub fn bench_config() -> anyhow::Result<ChannelsConfig> {
    let mut channels = BTreeMap::new();
    for c in CHANNELS {
        let key = if c == "alipay" {
            ChannelKey::Rsa(Box::new(
                auth::parse_public_key(ALIPAY_PUBLIC).map_err(anyhow::Error::msg)?,
            ))
        } else {
            ChannelKey::Hmac(format!("bench-secret-of-{c}").into_bytes())
        };
        channels.insert(
            c.to_string(),
            ChannelConfig {
                key,
                max_amount_fen: 5_000_000,
                console_sandbox: false,
            },
        );
    }
    Ok(ChannelsConfig {
        signature_window_seconds: 300,
        channels,
        auto_debit: None,
    })
}

/// Signs `body` for `channel` of [`bench_config`] at `timestamp`.
pub fn bench_sign(channel: &str, timestamp: i64, body: &[u8], rsa: &rsa::RsaPrivateKey) -> String {
    if channel == "alipay" {
        auth::rsa_sign(rsa, timestamp, body)
    } else {
        auth::hmac_sign(
            format!("bench-secret-of-{channel}").as_bytes(),
            timestamp,
            body,
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Puts the first `n` accounts (by account id) whose meter answers 10 yuan in arrears
/// and trips their meters, as a confirmed disconnection would leave them. Returns their ids.
pub async fn disconnect(scenario: &Scenario, n: usize) -> anyhow::Result<Vec<String>> {
    let host = &scenario.host;
    let now = crate::clock::Clock::now(scenario.clock.as_ref());
    let rows = sqlx::query(&format!(
        "SELECT a.account_id, a.balance_fen, {} FROM accounts a JOIN meters m ON m.meter_id = a.meter_id ORDER BY a.account_id",
        crate::collection::LINK_COLUMNS
    ))
    .fetch_all(&host.db.pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        if out.len() == n {
            break;
        }
        let account: String = r.try_get(0)?;
        let balance: Fen = r.try_get(1)?;
        let link = crate::collection::link_from_row(r, 2)?;
        // A simulated meter may be set up to be silent (a fault persona): skip it.
        let valid_until = now + chrono::Duration::hours(2);
        if let Err(e) = host
            .meters
            .send_relay(&link, RelayCommand::Trip, valid_until)
            .await
        {
            tracing::info!(account, error = %e, "meter does not answer; not used for the reconnect figures");
            continue;
        }
        let mut conn = host.db.pool.acquire().await?;
        let mut tx = crate::db::begin_write(&mut conn).await?;
        ledger::post(
            &mut tx,
            &Posting {
                account_id: &account,
                kind: EntryKind::Charge,
                amount_fen: -(balance + 1000),
                idempotency_key: &format!("bench-arrears:{account}"),
                business_date: &crate::db::ds(now.date()),
                posted_at: &ts(now),
                reference: "bench: put in arrears",
            },
        )
        .await?;
        sqlx::query("UPDATE accounts SET relay_state = 'open', disconnected_at = $2, arrears_since = $3 WHERE account_id = $1")
            .bind(&account)
            .bind(ts(now))
            .bind(crate::db::ds(now.date()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        out.push(account);
    }
    Ok(out)
}

/// Runs the bench.
pub async fn payments(opts: &BenchOptions) -> anyhow::Result<PaymentFigures> {
    anyhow::ensure!(
        opts.payments > 0 && opts.concurrency > 0,
        "--payments and --concurrency must be at least 1"
    );
    anyhow::ensure!(
        opts.accounts > 0 && opts.disconnected <= opts.accounts,
        "--disconnected must be at most --accounts"
    );
    anyhow::ensure!(
        opts.disconnected <= opts.payments,
        "--disconnected must be at most --payments (one payment reconnects each)"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&opts.retry_share),
        "--retry-share must be within 0..1"
    );
    let scenario = Scenario::new(
        &DemoOptions {
            meters: opts.accounts,
            days: 1,
            start: NaiveDate::from_ymd_opt(2013, 3, 4).expect("valid date"),
            seed: 2013,
            db_url: opts.db_url.clone(),
            data: opts.data.clone(),
            policy_set: opts.policy_set.clone(),
            components: opts.components.clone(),
            meters_per_gateway: 16,
            read_timeout: Duration::from_millis(500),
            progress: false,
            protocol_mix: Default::default(),
        },
        &[],
    )
    .await?;
    let disconnected = disconnect(&scenario, opts.disconnected).await?;
    let accounts: Vec<String> = sqlx::query("SELECT account_id FROM accounts ORDER BY account_id")
        .fetch_all(&scenario.host.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let h = &scenario.host;
    let host = Arc::new(h.clone());
    let service =
        Service::start(h.db.clone(), bench_config()?, h.clock.clone(), Some(host)).await?;
    let addr = service.spawn_loopback().await?;

    // Sign everything before the clock starts.
    let rsa = auth::parse_private_key(ALIPAY_PRIVATE).map_err(anyhow::Error::msg)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut expected_sum: Fen = 0;
    let mut requests = Vec::with_capacity(opts.payments);
    for i in 0..opts.payments {
        let channel = CHANNELS[i % CHANNELS.len()];
        let (account, amount_fen) = if i < disconnected.len() {
            (disconnected[i].clone(), 10_000)
        } else {
            (
                accounts[(next() as usize) % accounts.len()].clone(),
                100 + (next() % 50_000) as Fen,
            )
        };
        expected_sum += amount_fen;
        let body = serde_json::json!({
            "txn_id": format!("BENCH{i:09}"),
            "account_id": account,
            "amount": format_yuan(amount_fen),
            "currency": "CNY",
            "type": "payment",
        })
        .to_string();
        let sig = bench_sign(channel, now_unix, body.as_bytes(), &rsa);
        requests.push((channel, body, sig));
    }
    let retries = (opts.payments as f64 * opts.retry_share) as usize;
    for _ in 0..retries {
        let i = (next() as usize) % opts.payments;
        requests.push(requests[i].clone());
    }
    // Reconnecting payments first, then the rest shuffled with their retries.
    let k = disconnected.len();
    for i in (k + 1..requests.len()).rev() {
        let j = k + (next() as usize) % (i - k + 1);
        requests.swap(i, j);
    }
    let total_requests = requests.len();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let queue = Arc::new(std::sync::Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let (client, queue) = (client.clone(), queue.clone());
        workers.spawn(async move {
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let Some((channel, body, sig)) = queue.lock().expect("queue").next() else {
                    break;
                };
                let resp = client
                    .post(format!("http://{addr}/channels/{channel}/notify"))
                    .header(auth::TIMESTAMP_HEADER, now_unix.to_string())
                    .header(auth::SIGNATURE_HEADER, sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let code = match resp {
                    Ok(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
                        .unwrap_or_else(|| "unreadable-answer".into()),
                    Err(_) => "transport-error".into(),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        });
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        for (c, n) in r? {
            *codes.entry(c).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    // Wait for the reconnections (bounded).
    let reconnector = service.reconnector.as_ref().expect("started with a host");
    let deadline = Instant::now() + Duration::from_secs(60);
    while (reconnector.latencies().len() < k || reconnector.busy() > 0) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = reconnector.latencies();
    lat.sort();

    let db: &Db = &scenario.host.db;
    let row = sqlx::query(
        "SELECT COUNT(*), COUNT(DISTINCT idempotency_key), CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM ledger_entries WHERE kind = 'payment' AND reference LIKE '%:BENCH%'",
    )
    .fetch_one(&db.pool)
    .await?;
    let (entries, distinct, sum): (i64, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let mut conn = db.pool.acquire().await?;
    let unbalanced = ledger::unbalanced_accounts(&mut conn).await?.len();
    let lost = opts.payments.saturating_sub(distinct as usize);
    let doubled = (entries - distinct) as usize + usize::from(sum > expected_sum && lost == 0);
    let backend = if opts
        .db_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"))
    {
        "postgresql"
    } else {
        "sqlite"
    };
    Ok(PaymentFigures {
        backend: backend.into(),
        payments: opts.payments,
        requests: total_requests,
        concurrency: opts.concurrency,
        seconds,
        payments_per_second: opts.payments as f64 / seconds,
        requests_per_second: total_requests as f64 / seconds,
        codes,
        lost,
        doubled,
        unbalanced_accounts: unbalanced,
        disconnected: k,
        reconnect_commands: lat.len(),
        reconnect_p50_ms: percentile(&lat, 0.50),
        reconnect_p99_ms: percentile(&lat, 0.99),
        reconnect_max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}

/// Prints the figures for a person.
pub fn print(f: &PaymentFigures) {
    println!(
        "bench payments ({}): {} payments + {} retries, concurrency {}",
        f.backend,
        f.payments,
        f.requests - f.payments,
        f.concurrency
    );
    println!(
        "  throughput   {:>9.0} payments/s  ({:.0} requests/s, {:.2} s)",
        f.payments_per_second, f.requests_per_second, f.seconds
    );
    println!(
        "  answers      {}",
        f.codes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  ledger       lost {}, doubled {}, unbalanced accounts {}",
        f.lost, f.doubled, f.unbalanced_accounts
    );
    println!(
        "  reconnect    {} of {} disconnected accounts commanded; payment → relay command p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.reconnect_commands,
        f.disconnected,
        f.reconnect_p50_ms,
        f.reconnect_p99_ms,
        f.reconnect_max_ms
    );
}
