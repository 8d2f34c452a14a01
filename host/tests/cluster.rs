//! Several hosts and crashes (issue 7): `feegate serve` processes against one database,
//! killed with SIGKILL in the middle of a settlement, and a single host killed over and
//! over at random points of collection, settlement, the outbox and relay commands while
//! a simulated meter fleet answers and customers pay. After every kill the invariants
//! hold — balance = sum of the ledger, each reading, payment and day applied once, no
//! relay command issued twice — and in the end every account is settled exactly once.

mod common;

use chrono::{Duration as Days, NaiveDate, Utc};
use common::ServeProcess;
use feegate::db::Db;
use sqlx::Row;
use std::time::{Duration, Instant};

/// The invariants after any crash; returns how many accounts are settled for `day`.
async fn check_invariants(db: &Db, day: NaiveDate) -> i64 {
    let day = day.to_string();
    let unbalanced: i64 = sqlx::query(
        "SELECT COUNT(*) FROM accounts a WHERE a.balance_fen <>
           (SELECT CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM ledger_entries l WHERE l.account_id = a.account_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        unbalanced, 0,
        "accounts whose balance is not the sum of their ledger"
    );
    let doubled: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT account_id FROM ledger_entries WHERE kind = 'charge' AND business_date = $1
                               GROUP BY account_id HAVING COUNT(*) > 1) d",
    )
    .bind(&day)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubled, 0, "accounts charged twice for {day}");
    let (settled, charges): (i64, i64) = {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM settlements WHERE business_date = $1),
                    (SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge' AND business_date = $1)",
        )
        .bind(&day)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (r.get(0), r.get(1))
    };
    // A zero-kWh day settles with no charge entry; never a charge without a settlement.
    assert!(
        charges <= settled,
        "{charges} charges but {settled} settlements"
    );
    let doubled_sms: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT account_id, kind FROM sms_outbox WHERE created_at >= $1
                               GROUP BY account_id, kind HAVING COUNT(*) > 1) d",
    )
    .bind(&day)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubled_sms, 0, "an account got the same notice twice");
    settled
}

async fn settled_count(db: &Db, day: NaiveDate) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM settlements WHERE business_date = $1")
        .bind(day.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

async fn holder(db: &Db) -> Option<String> {
    sqlx::query("SELECT holder FROM county_leases WHERE county = 'xianyou' AND expires_at_ms > $1")
        .bind(feegate::lease::now_ms())
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_county_and_one_killed_mid_settlement_is_taken_over_with_nothing_settled_twice()
 {
    let Some(pg) = common::pg_database("three_hosts_share_a_county").await else {
        return;
    };
    const N: usize = 3000;
    let today = loop_start().date();
    let day = today.pred_opt().unwrap();
    let db = Db::open(&pg.url).await.unwrap();
    // Live meters and arrears accounts with the prepaying habit: once the day is
    // settled, the lease holder's cutoff trips them (automatic), so the relay commands
    // come from whichever host holds the county after the take-over.
    let live = LiveCounty::seed(&db, N, |_| true).await;
    let shift = (loop_start() - real_local_now()).num_seconds();
    let extra = live_config(shift, None);
    let dir = tempfile::tempdir().unwrap();
    let mut hosts: Vec<(String, ServeProcess)> = (1..=3)
        .map(|i| {
            let port = common::free_port();
            let config = common::serve_config(dir.path(), port, &extra);
            let id = format!("host-{i}");
            let p = ServeProcess::start(
                dir.path(),
                &config,
                &[
                    ("FEEGATE_DATABASE__URL", pg.url.as_str()),
                    ("FEEGATE_CLUSTER__HOST_ID", id.as_str()),
                ],
            );
            (id, p)
        })
        .collect();

    // Wait until one host is settling, then kill it mid-way.
    let began = Instant::now();
    let victim = loop {
        let settled = settled_count(&db, day).await;
        if settled > 0 {
            assert!(
                settled < live.answering,
                "settlement finished before the kill; raise N"
            );
            break holder(&db).await.expect("a host settles without a lease");
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "no settlement started in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = Instant::now();
    let at_kill = {
        // The lease holder is "<host_id>#<token of the process>".
        let (_, p) = hosts
            .iter_mut()
            .find(|(id, _)| victim.starts_with(&format!("{id}#")))
            .unwrap();
        p.kill();
        settled_count(&db, day).await
    };
    check_invariants(&db, day).await;

    // Another host takes the county over within the lease time (3 s, renewed every
    // 1 s: at most 3 s after the last renewal, plus one renewal tick and slack).
    let successor = loop {
        if let Some(h) = holder(&db).await
            && h != victim
        {
            break h;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(8),
            "no host took the county over 8 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let takeover = killed_at.elapsed();
    eprintln!(
        "killed {victim} at {at_kill}/{} settled; {successor} took over after {takeover:?}",
        live.answering
    );

    let began = Instant::now();
    while settled_count(&db, day).await < live.answering {
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "settlement not finished 180 s after the take-over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(check_invariants(&db, day).await, live.answering);
    // Exactly one host ran the day: the job_runs marks are one per stage.
    let marks: i64 = sqlx::query(
        "SELECT COUNT(*) FROM job_runs WHERE county = 'xianyou' AND business_date = $1 AND stage = 'settlement'",
    )
    .bind(today.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(marks, 1);
    // No relay command issued twice: with the successor and a standby host alive, every
    // arrears meter got exactly one trip frame, from one stored command.
    let began = Instant::now();
    loop {
        let tripped = count(
            &db,
            "SELECT COUNT(DISTINCT account_id) FROM relay_commands WHERE command = 'trip' AND status = 'confirmed'",
        )
        .await;
        let in_flight = count(
            &db,
            "SELECT COUNT(*) FROM relay_commands WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')",
        )
        .await;
        if tripped == live.owing.len() as i64 && in_flight == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{tripped}/{} arrears accounts tripped, {in_flight} commands in flight, 120 s after settlement",
            live.owing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_live_invariants(&db, &live.wire).await;
    let frames = live.wire.commands();
    for i in &live.owing {
        let trips: Vec<_> = frames.iter().filter(|f| f.meter == *i).collect();
        assert_eq!(
            trips,
            [&WireCommand {
                meter: *i,
                command: RelayCommand::Trip
            }],
            "meter M{i}"
        );
        assert_eq!(live.fleet.relay_state(*i).unwrap(), RelayState::Open);
    }
    assert_eq!(
        frames.len(),
        live.owing.len(),
        "relay frames to meters in credit"
    );
    drop(hosts);
}

// ---------------------------------------------------------------------------------------
// The SIGKILL loop with live meters: collection, settlement, the outbox, relay commands
// and payments, killed at random points on SQLite and on PostgreSQL.

use feegate::bench::settle::{SeedOptions, SeededArrears, SimMeters};
use feegate_meter::registers::{
    FROZEN_BLOCK_START, HOLDING_RELAY_COMMAND, RelayCommand, RelayState,
};
use feegate_meter::sim::SimFleet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accounts (and simulated meters) of the loop.
const LIVE_N: usize = 800;
/// Meters per simulated gateway (16 gateways).
const PER_GATEWAY: u8 = 50;
/// The simulator's seed (starting registers).
const SIM_SEED: u64 = 2013;
/// Accounts that start in arrears (every 23rd from 11), half of them with the
/// prepaying habit (automatic disconnection), half approval-gated. Fewer than the
/// station's daily cap of 50 trips, with room for trips re-decided after a kill.
const ARREARS: usize = 30;
/// How long a tap holds a meter's answer to a relay command: the SIGKILL aimed at a
/// command in flight lands after the meter acted and before the host heard back. Well
/// below the loop's meter timeout (1 s), so the client never retries a command.
const RELAY_ACK_HOLD: Duration = Duration::from_millis(250);

/// The business day of the loop: Tuesday 2013-03-05, a working day in a year the
/// shipped calendar covers; the hosts' clocks are shifted to 10:00 that day
/// (`[clock] shift_seconds`), inside the safety floor's working hours.
fn loop_start() -> chrono::NaiveDateTime {
    NaiveDate::from_ymd_opt(2013, 3, 5)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

/// County local time (UTC+8) of the real clock.
fn real_local_now() -> chrono::NaiveDateTime {
    Utc::now().naive_utc() + Days::hours(8)
}

/// A relay command frame one simulated meter received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WireCommand {
    meter: usize,
    command: RelayCommand,
}

/// What the taps saw on the wire, over every host process of the loop.
#[derive(Default)]
struct Wire {
    /// Relay command writes (FC 06 to the relay command register) forwarded to the
    /// simulator, in order.
    commands: Mutex<Vec<WireCommand>>,
    /// Daily frozen block reads (FC 04 at the frozen energy register) forwarded.
    frozen_reads: AtomicU64,
}

impl Wire {
    fn commands(&self) -> Vec<WireCommand> {
        self.commands.lock().unwrap().clone()
    }
}

/// A Modbus TCP proxy in front of one simulated gateway: forwards every frame both ways,
/// records relay command writes and frozen reads, and holds the answer to a relay
/// command for [`RELAY_ACK_HOLD`].
async fn tap(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    first_meter: usize,
    wire: Arc<Wire>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let wire = wire.clone();
        tokio::spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut from_host, mut to_host) = client.into_split();
            let (mut from_meter, mut to_meter) = server.into_split();
            let hold = Arc::new(AtomicBool::new(false));
            let hold_reply = hold.clone();
            let up = async move {
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 1024]);
                loop {
                    let n = match from_host.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    // MBAP header: transaction (2), protocol (2), length (2, counting the
                    // unit id and the PDU), unit id (1); then function code and data.
                    while buf.len() >= 7 {
                        let total = 6 + usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                        if buf.len() < total {
                            break;
                        }
                        let frame: Vec<u8> = buf.drain(..total).collect();
                        let word = |at: usize| {
                            frame
                                .get(at..at + 2)
                                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                        };
                        let relay = (frame.get(7) == Some(&0x06)
                            && word(8) == Some(HOLDING_RELAY_COMMAND))
                        .then(|| word(10).and_then(RelayCommand::from_code))
                        .flatten();
                        if frame.get(7) == Some(&0x04) && word(8) == Some(FROZEN_BLOCK_START) {
                            wire.frozen_reads.fetch_add(1, Ordering::SeqCst);
                        }
                        hold.store(relay.is_some(), Ordering::SeqCst);
                        if to_meter.write_all(&frame).await.is_err() {
                            return;
                        }
                        if let Some(command) = relay {
                            wire.commands.lock().unwrap().push(WireCommand {
                                meter: first_meter + usize::from(frame[6]) - 1,
                                command,
                            });
                        }
                    }
                }
            };
            let down = async move {
                let mut chunk = [0u8; 1024];
                loop {
                    let n = match from_meter.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if hold_reply.swap(false, Ordering::SeqCst) {
                        tokio::time::sleep(RELAY_ACK_HOLD).await;
                    }
                    if to_host.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = up => {}
                () = down => {}
            }
        });
    }
}

/// Starts a tap in front of every gateway of `fleet`; returns the taps' addresses in
/// gateway order.
async fn start_taps(fleet: &SimFleet, wire: &Arc<Wire>) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for g in fleet.gateway_stats() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        tokio::spawn(tap(listener, g.address, g.first_meter, wire.clone()));
    }
    addrs
}

/// Channel payments the customers make, posted (signed) to whichever host is up until
/// it answers.
#[derive(Default)]
struct Payments {
    /// Port of the live host, 0 while none is up.
    port: AtomicU16,
    /// (transaction id, account, amount in yuan), in the order they were made.
    wanted: Mutex<Vec<(String, String, &'static str)>>,
    /// Transaction id → the host's answer code (applied, duplicate).
    answered: Mutex<BTreeMap<String, String>>,
}

const CHANNEL_SECRET: &str = "kill-loop-secret-0123456789";

impl Payments {
    fn want(&self, txn: String, account: String, amount: &'static str) {
        self.wanted.lock().unwrap().push((txn, account, amount));
    }

    fn all_answered(&self) -> bool {
        self.answered.lock().unwrap().len() == self.wanted.lock().unwrap().len()
    }

    /// Posts every unanswered payment once (blocking): a 200 is an answer; anything
    /// else (a host killed mid-request, none up) is tried again next time.
    fn post_pending(&self) {
        let port = self.port.load(Ordering::SeqCst);
        if port == 0 {
            return;
        }
        let pending: Vec<_> = {
            let answered = self.answered.lock().unwrap();
            self.wanted
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _, _)| !answered.contains_key(t))
                .cloned()
                .collect()
        };
        for (txn, account, amount) in pending {
            let body = format!(
                r#"{{"txn_id":"{txn}","account_id":"{account}","amount":"{amount}","currency":"CNY","type":"payment"}}"#
            );
            let ts = Utc::now().timestamp();
            let sig =
                feegate::channels::auth::hmac_sign(CHANNEL_SECRET.as_bytes(), ts, body.as_bytes());
            let ts = ts.to_string();
            let answer = common::http_request(
                port,
                "POST",
                "/channels/app/notify",
                &[
                    ("X-Feegate-Timestamp", ts.as_str()),
                    ("X-Feegate-Signature", sig.as_str()),
                ],
                &body,
            );
            if let Ok((200, text)) = answer {
                let code = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_string))
                    .unwrap_or(text);
                self.answered.lock().unwrap().insert(txn, code);
            }
        }
    }
}

/// One query's single integer.
async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Relay command rows that reached `issuing` (the frame may have left), per meter and
/// command.
async fn issued_commands(db: &Db) -> BTreeMap<(usize, String), i64> {
    sqlx::query(
        "SELECT meter_id, command, COUNT(*) FROM relay_commands WHERE issued_at IS NOT NULL GROUP BY meter_id, command",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let meter: String = r.get(0);
        (
            (meter[1..].parse().unwrap(), r.get::<String, _>(1)),
            r.get::<i64, _>(2),
        )
    })
    .collect()
}

/// The invariants of the live loop after any kill, on top of [`check_invariants`]:
///
/// - each reading stored once per (meter, day);
/// - each payment applied once: every applied channel notification has exactly one
///   ledger entry, and each account's payment entries sum to its applied
///   notifications;
/// - no relay command issued twice. In the database: one command per decision key
///   (a cutoff decision, an approved work order, a reconnection decision), at most one
///   command in flight per account, and no account tripped twice (each arrears account
///   of the loop is disconnected once, then pays and stays in credit). At the wire
///   (the taps, with the meter client retrying nothing): every relay frame a meter
///   received is one issue of one stored command — never more frames of a kind than
///   commands of that kind that reached `issuing` — and no meter received a second trip
///   without a reconnection in between: a command found in flight after a crash is
///   verified by a status read, never sent again, so a repeated trip can only be a new
///   decision after the first one provably did not open the relay.
async fn check_live_invariants(db: &Db, wire: &Wire) {
    // (query counting violations, what a violation means)
    let checks = [
        (
            "SELECT COUNT(*) FROM (SELECT meter_id, reading_date FROM readings GROUP BY meter_id, reading_date HAVING COUNT(*) > 1) d",
            "a (meter, day) reading stored twice",
        ),
        (
            "SELECT COUNT(*) FROM payment_inbox i WHERE i.status = 'applied' AND i.kind = 'payment' AND
               (SELECT COUNT(*) FROM ledger_entries e WHERE e.idempotency_key = 'payment:' || i.channel || ':' || i.channel_txn_id) <> 1",
            "an applied payment without exactly one ledger entry",
        ),
        (
            "SELECT COUNT(*) FROM accounts a WHERE
               (SELECT CAST(COALESCE(SUM(e.amount_fen), 0) AS BIGINT) FROM ledger_entries e WHERE e.account_id = a.account_id AND e.kind = 'payment')
               <> (SELECT CAST(COALESCE(SUM(i.amount_fen), 0) AS BIGINT) FROM payment_inbox i WHERE i.account_id = a.account_id AND i.status = 'applied' AND i.kind = 'payment')",
            "an account's payment entries differ from its applied payments",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT decision_key FROM relay_commands GROUP BY decision_key HAVING COUNT(*) > 1) d",
            "two relay commands for one decision",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT account_id FROM relay_commands
               WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')
               GROUP BY account_id HAVING COUNT(*) > 1) d",
            "an account with two relay commands in flight",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT account_id FROM relay_commands WHERE command = 'trip' AND status = 'confirmed'
               GROUP BY account_id HAVING COUNT(*) > 1) d",
            "an account tripped twice",
        ),
    ];
    for (sql, violation) in checks {
        assert_eq!(count(db, sql).await, 0, "{violation}");
    }

    let issued = issued_commands(db).await;
    let frames = wire.commands();
    let mut seen: BTreeMap<(usize, String), i64> = BTreeMap::new();
    let mut last: BTreeMap<usize, RelayCommand> = BTreeMap::new();
    for f in &frames {
        *seen
            .entry((f.meter, feegate::relay::command_name(f.command).to_string()))
            .or_default() += 1;
        if f.command == RelayCommand::Trip {
            assert_ne!(
                last.get(&f.meter),
                Some(&RelayCommand::Trip),
                "meter M{} received a second trip with no reconnection in between; wire: {:?}",
                f.meter,
                frames
                    .iter()
                    .filter(|g| g.meter == f.meter)
                    .collect::<Vec<_>>()
            );
        }
        last.insert(f.meter, f.command);
    }
    for ((meter, command), n) in &seen {
        let stored = issued.get(&(*meter, command.clone())).copied().unwrap_or(0);
        assert!(
            *n <= stored,
            "meter M{meter} received {n} {command} frames for {stored} issued {command} commands; wire: {:?}",
            frames
                .iter()
                .filter(|g| g.meter == *meter)
                .collect::<Vec<_>>()
        );
    }
}

/// A county of `n` accounts on live meters for the crash tests: a simulated fleet
/// frozen at 00:00 of the loop's day, behind [`tap`]s, one meter per gateway off the
/// bus, and [`ARREARS`] accounts seeded ripe for disconnection.
struct LiveCounty {
    fleet: Arc<SimFleet>,
    wire: Arc<Wire>,
    /// Accounts (= meter indexes) seeded in arrears.
    owing: BTreeSet<usize>,
    /// Meters that answer today (the rest are off the bus, or their household has no
    /// data for the day): the accounts the day settles.
    answering: i64,
}

impl LiveCounty {
    /// Seeds `db`; the `k`-th arrears account has the prepaying habit (automatic
    /// disconnection) when `habit(k)`, else its disconnection asks for approval.
    async fn seed(db: &Db, n: usize, habit: impl Fn(usize) -> bool) -> Self {
        let (today, per) = (loop_start().date(), usize::from(PER_GATEWAY));
        let day = today.pred_opt().unwrap();
        let data = common::shared_data("lcl_2013_daily_kwh_100hh.csv");
        let fleet = Arc::new(SimFleet::from_csv(&data, n, SIM_SEED).unwrap());
        fleet.advance_to(day.and_hms_opt(0, 0, 0).unwrap()).unwrap();
        fleet
            .advance_to(today.and_hms_opt(0, 0, 0).unwrap())
            .unwrap();
        fleet
            .serve(std::net::IpAddr::from([127, 0, 0, 1]), PER_GATEWAY)
            .await
            .unwrap();
        // One meter per gateway off the bus: every gateway's collection waits out a
        // timeout (a wide window for kills aimed at collection); reads stay 98 % good.
        let silent: BTreeSet<usize> = (0..n.div_ceil(per))
            .map(|g| (g * per + per - 1).min(n - 1))
            .collect();
        for m in &silent {
            fleet.set_silent(*m, true).unwrap();
        }
        let wire = Arc::new(Wire::default());
        let gateways = start_taps(&fleet, &wire).await;
        let arrears: Vec<SeededArrears> = (0..)
            .map(|k| 11 + 23 * k)
            .filter(|i| fleet.answers(*i).unwrap())
            .take(ARREARS)
            .enumerate()
            .map(|(k, account)| SeededArrears {
                account,
                prepaying_habit: habit(k),
            })
            .collect();
        let profiles = feegate_meter::profile::Profiles::load(&data).unwrap();
        feegate::bench::settle::seed_accounts_with(
            db,
            n,
            &profiles,
            day,
            &SeedOptions {
                meters: Some(SimMeters {
                    gateways,
                    per_gateway: per,
                    sim_seed: SIM_SEED,
                }),
                arrears: arrears.clone(),
            },
        )
        .await
        .unwrap();
        let answering = (0..n).filter(|i| fleet.answers(*i).unwrap()).count() as i64;
        LiveCounty {
            fleet,
            wire,
            owing: arrears.iter().map(|a| a.account).collect(),
            answering,
        }
    }
}

/// `feegate.toml` for the crash tests on live meters: today's morning always due,
/// outbox and relays every second, cutoff every 2 s, 3 s leases, the meter client with
/// a 1 s timeout and no retries (so every relay frame at the wire is one issue of one
/// command), the clock shifted to [`loop_start`] by `shift` seconds, and the payment
/// channels in `channels` if any.
/// Accounts per settlement transaction in these tests: small, so a kill can land
/// between two of them (the default batch of 1,000 would settle the county in one).
const SETTLEMENT_BATCH: usize = 20;

fn live_config(shift: i64, channels: Option<&std::path::Path>) -> String {
    format!(
        "[schedule]\nmorning = \"0 0 0 * * *\"\noutbox = \"* * * * * *\"\ncutoff = \"*/2 * * * * *\"\nrelays = \"* * * * * *\"\n\n\
         [registry]\npoll_seconds = 1\n\n[cluster]\nlease_seconds = 3\n\n\
         [meters]\ntimeout_ms = 1000\nretries = 0\n\n[clock]\nshift_seconds = {shift}\n\n\
         [settlement]\nbatch_accounts = {SETTLEMENT_BATCH}\n\n{}",
        channels.map_or(String::new(), |c| format!(
            "[channels]\nconfig = \"{}\"\n",
            c.display()
        ))
    )
}

/// Where a round's SIGKILL is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aim {
    /// A random moment 0.3–4 s after start: loading, catch-up, any job.
    Anywhere,
    /// While collection reads the meters (frozen reads seen, collection not committed).
    Collection,
    /// Once settlement has moved on, a little later.
    Settlement,
    /// The moment a relay command of this kind reached a meter, before the host heard
    /// back.
    Relay(RelayCommand),
}

/// SIGKILL at random points of collection, settlement, the outbox and relay commands,
/// `kills` times, while simulated meters answer, station staff approve disconnections,
/// and customers in arrears pay once disconnected and press the meter button once
/// re-armed; the invariants hold after every kill, and a last host finishes the day.
async fn live_kill_loop(url: &str, kills: usize, seed_rng: u64) {
    use rand::{Rng, SeedableRng};
    let began_loop = Instant::now();
    let today = loop_start().date();
    let day = today.pred_opt().unwrap();
    let shift = (loop_start() - real_local_now()).num_seconds();
    let county_now = move || real_local_now() + Days::seconds(shift);

    let db = Db::open(url).await.unwrap();
    let LiveCounty {
        fleet,
        wire,
        owing,
        answering,
    } = LiveCounty::seed(&db, LIVE_N, |k| k % 2 == 0).await;

    // Customers and station staff, for the whole loop.
    let payments = Arc::new(Payments::default());
    for i in (5..LIVE_N)
        .step_by(40)
        .filter(|i| !owing.contains(i))
        .take(20)
    {
        payments.want(format!("KILL-P{i}"), format!("A{i}"), "10.00");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let (payments, stop) = (payments.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                payments.post_pending();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let customers = {
        let (fleet, payments, owing, stop) =
            (fleet.clone(), payments.clone(), owing.clone(), stop.clone());
        tokio::spawn(async move {
            let mut paid = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                for &i in &owing {
                    match fleet.relay_state(i).unwrap() {
                        // Disconnected: the customer pays at once (100 yuan, back in credit).
                        RelayState::Open if paid.insert(i) => {
                            payments.want(format!("KILL-A{i}"), format!("A{i}"), "100.00");
                        }
                        // Re-armed (close-allowed): the customer presses the button.
                        RelayState::CloseAllowed => {
                            fleet.press_button(i).unwrap();
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let staff = {
        let (db, stop) = (Db::open(url).await.unwrap(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let open: Vec<i64> = sqlx::query(
                    "SELECT work_order_id FROM work_orders WHERE kind = 'approve-disconnection' AND status = 'open'",
                )
                .fetch_all(&db.pool)
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
                for id in open {
                    let _ = feegate::cutoff::decide_work_order(
                        &db,
                        id,
                        true,
                        "station-staff (kill loop)",
                        county_now(),
                        "approved: notice delivered, customer not reachable",
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        format!("[channels.app]\nauth = \"hmac-sha256\"\nsecret = \"{CHANNEL_SECRET}\"\nmax_amount_yuan = \"5000.00\"\n"),
    )
    .unwrap();
    let extra = live_config(shift, Some(&channels));
    let env = [
        ("FEEGATE_DATABASE__URL", url),
        ("FEEGATE_CLUSTER__HOST_ID", "only-host"),
    ];
    let start = |payments: &Payments| {
        let port = common::free_port();
        let config = common::serve_config(dir.path(), port, &extra);
        let p = ServeProcess::start(dir.path(), &config, &env);
        payments.port.store(port, Ordering::SeqCst);
        p
    };
    let collection_done = async |db: &Db| {
        count(
            db,
            &format!("SELECT COUNT(*) FROM job_runs WHERE stage = 'collection' AND business_date = '{today}'"),
        )
        .await
            > 0
    };

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed_rng);
    let mut hits: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..kills {
        let settled_before = settled_count(&db, day).await;
        let (reads_before, frames_before) = (
            wire.frozen_reads.load(Ordering::SeqCst),
            wire.commands().len(),
        );
        let tripped = count(
            &db,
            "SELECT COUNT(*) FROM relay_commands WHERE command = 'trip' AND status = 'confirmed'",
        )
        .await;
        let reconnected = count(
            &db,
            "SELECT COUNT(DISTINCT account_id) FROM relay_commands WHERE command = 'close-allowed' AND status = 'confirmed'",
        )
        .await;
        // Aim at what is still ahead: collection, settlement, then relay commands in
        // flight (trips while arrears accounts are still connected, then reconnections),
        // with random moments in between.
        let hit = |label: &str| hits.contains_key(label);
        let aim = if !collection_done(&db).await && !hit("collection") {
            Aim::Collection
        } else if settled_before < answering && !hit("settlement") {
            Aim::Settlement
        } else if round % 3 == 2 {
            Aim::Anywhere
        } else {
            let trips_left = tripped < owing.len() as i64;
            let closes_left = reconnected < owing.len() as i64;
            if trips_left && (!hit("trip in flight") || !closes_left || round % 2 == 1) {
                Aim::Relay(RelayCommand::Trip)
            } else if closes_left {
                Aim::Relay(RelayCommand::CloseAllowed)
            } else {
                Aim::Anywhere
            }
        };
        let mut p = start(&payments);
        let started = Instant::now();
        let patience = Duration::from_secs(30);
        let label = match aim {
            Aim::Anywhere => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..4000))).await;
                "anywhere"
            }
            Aim::Collection => {
                let after = reads_before + rng.random_range(50..400);
                while wire.frozen_reads.load(Ordering::SeqCst) < after
                    && started.elapsed() < patience
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                "collection"
            }
            Aim::Settlement => {
                while settled_count(&db, day).await == settled_before
                    && started.elapsed() < patience
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
                "settlement"
            }
            Aim::Relay(kind) => {
                while !wire.commands()[frames_before..]
                    .iter()
                    .any(|f| f.command == kind)
                    && started.elapsed() < patience
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if kind == RelayCommand::Trip {
                    "trip in flight"
                } else {
                    "close-allowed in flight"
                }
            }
        };
        let after = started.elapsed();
        p.kill();
        payments.port.store(0, Ordering::SeqCst);
        // Did it land where it was aimed?
        let landed = match aim {
            Aim::Anywhere => true,
            Aim::Collection => {
                wire.frozen_reads.load(Ordering::SeqCst) > reads_before
                    && !collection_done(&db).await
            }
            Aim::Settlement => {
                let s = settled_count(&db, day).await;
                s > settled_before && s < answering
            }
            Aim::Relay(kind) => {
                // The last frame that reached a meter is of the aimed kind and its
                // command is still in `issuing`: the host died before hearing back.
                let frames = wire.commands();
                frames[frames_before..].iter().any(|f| f.command == kind)
                    && count(
                        &db,
                        "SELECT COUNT(*) FROM relay_commands WHERE status = 'issuing'",
                    )
                    .await
                        > 0
            }
        };
        if landed {
            *hits.entry(label).or_default() += 1;
        }
        let settled = check_invariants(&db, day).await;
        check_live_invariants(&db, &wire).await;
        eprintln!(
            "round {round}: aimed at {label}, killed after {after:?} ({}), {settled}/{answering} settled, {} relay frames so far",
            if landed { "landed" } else { "missed" },
            wire.commands().len()
        );
    }

    // A last host finishes the day: everyone settled, every arrears account tripped,
    // paid, re-armed and closed by its customer, every payment answered.
    let _p = start(&payments);
    let began = Instant::now();
    loop {
        let settled = settled_count(&db, day).await;
        let reconnected = count(
            &db,
            "SELECT COUNT(DISTINCT account_id) FROM relay_commands WHERE command = 'close-allowed' AND status = 'confirmed'",
        )
        .await;
        let in_flight = count(
            &db,
            "SELECT COUNT(*) FROM relay_commands WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')",
        )
        .await;
        let closed = owing
            .iter()
            .all(|i| fleet.relay_state(*i).unwrap() == RelayState::Closed);
        if settled == answering
            && reconnected == owing.len() as i64
            && in_flight == 0
            && closed
            && payments.all_answered()
        {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "not finished 180 s after the last start: {settled}/{answering} settled, {reconnected}/{} reconnected, {in_flight} commands in flight, payments answered {}/{}",
            owing.len(),
            payments.answered.lock().unwrap().len(),
            payments.wanted.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = (customers.await, staff.await, poster.join());
    assert_eq!(check_invariants(&db, day).await, answering);
    check_live_invariants(&db, &wire).await;

    // Nothing lost: every meter that answered has today's reading; every answered
    // payment is in the ledger once.
    let read = count(
        &db,
        &format!("SELECT COUNT(*) FROM readings WHERE reading_date = '{today}'"),
    )
    .await;
    assert_eq!(read, answering, "readings stored for today");
    let answered = payments.answered.lock().unwrap().clone();
    for (txn, code) in &answered {
        let n = count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key = 'payment:app:{txn}'"
            ),
        )
        .await;
        assert_eq!(n, 1, "payment {txn} (answered {code}) applied {n} times");
    }
    // Every arrears meter was tripped and re-armed on the wire; no other meter got a
    // relay command.
    let frames = wire.commands();
    for i in &owing {
        for kind in [RelayCommand::Trip, RelayCommand::CloseAllowed] {
            assert!(
                frames.iter().any(|f| f.meter == *i && f.command == kind),
                "meter M{i} never received {kind}"
            );
        }
    }
    assert!(
        frames.iter().all(|f| owing.contains(&f.meter)),
        "a relay command to a meter in credit"
    );
    let trips = frames
        .iter()
        .filter(|f| f.command == RelayCommand::Trip)
        .count();
    let closes = frames.len() - trips;
    eprintln!(
        "{kills} kills in {:?}: landed {hits:?}; wire: {trips} trips and {closes} reconnections to {} meters; {} payments",
        began_loop.elapsed(),
        owing.len(),
        payments.answered.lock().unwrap().len()
    );
    // The loop tested what it claims: kills landed during collection, mid-settlement,
    // and with a trip and a reconnection in flight.
    for label in [
        "collection",
        "settlement",
        "trip in flight",
        "close-allowed in flight",
    ] {
        assert!(
            hits.contains_key(label),
            "no kill landed at {label}: {hits:?}; the loop did not test what it claims"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_sqlite_keeps_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kill.db").display());
    live_kill_loop(&url, 8, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_postgres_keeps_every_invariant() {
    let Some(pg) = common::pg_database("sigkill_loop_on_postgres").await else {
        return;
    };
    live_kill_loop(&pg.url, 8, 11).await;
}
