//! `feegate demo`: a simulated county running the whole daily job on real consumption.
//!
//! Meters are a simulator on loopback (Modbus TCP gateways, DL/T 645 serial gateways and
//! Q/GDW 1376.1 terminals, mixed per [`ProtocolMix`]) whose registers follow real London
//! households (UK Power Networks, Low Carbon London, "SmartMeter Energy Consumption
//! Data in London Households", London Datastore): register = a seeded starting value +
//! the cumulative daily kWh; a day missing in the data is a day the meter does not
//! answer; an open relay stops consumption. The policies are the Xianyou county policy
//! set running as WebAssembly components. A simulated clock runs the days; customers
//! behave per [`behaviour`]; station staff approve disconnection work orders after a
//! delay (and hold one in ten).
//!
//! Timeline of each simulated day (county local time):
//! 00:00 meters freeze → 00:10 collection, settlement, warnings → 08:00 SMS → 09:00
//! cutoff decisions → 10:30 staff decide work orders, approved trips executed, relays
//! driven → every two hours relays verified and SMS sent; customer payments and button
//! presses at their own times.

pub mod behaviour;

use crate::clock::{Clock, SimClock};
use crate::config::HostConfig;
use crate::county::County;
use crate::db::{Db, ds, parse_ts};
use crate::job::Host;
use crate::ledger::{self, EntryKind};
use crate::money::{centi_kwh_to_kwh, format_yuan};
use crate::onboarding::{self, Application};
use crate::outbox::LogGateway;
use crate::payment::{self, PaymentNotice};
use crate::policy::{PolicyEngine, PolicyKind};
use crate::registry;
use anyhow::Context;
use behaviour::{Behaviour, Habit, Persona};
use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use feegate_meter::client::{ClientConfig, ModbusMeterClient};
use feegate_meter::dlt645_client::{Dlt645Client, Dlt645Config};
use feegate_meter::fleet::{FleetClient, MeterLink};
use feegate_meter::qgdw376::Pw;
use feegate_meter::sim::SimFleet;
use feegate_meter::terminal::Master;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Demo settings (CLI flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub meters: usize,
    pub days: u32,
    pub start: NaiveDate,
    pub seed: u64,
    /// Database URL; default a fresh SQLite file in a temporary directory.
    pub db_url: Option<String>,
    /// `lcl_2013_daily_kwh_100hh.csv`.
    pub data: PathBuf,
    /// `policies/xianyou`.
    pub policy_set: PathBuf,
    /// Where the built components are (`target/wasm32-wasip2/plugin`).
    pub components: PathBuf,
    /// Meters per simulated gateway (RS485 bus behind a serial gateway).
    pub meters_per_gateway: u8,
    /// Reply timeout on loopback (every protocol).
    pub read_timeout: std::time::Duration,
    /// Which protocol the meters speak (share of the fleet in percent).
    pub protocol_mix: ProtocolMix,
    /// Print a line per simulated day on stderr.
    pub progress: bool,
}

/// Shares of the simulated fleet per protocol, in percent (they add up to 100): Modbus TCP
/// gateways, DL/T 645-2007 behind TCP serial gateways, DL/T 645 behind Q/GDW 1376.1
/// collection terminals. Meters are assigned in order: the first `modbus`% of the meters,
/// then `dlt645`%, then the rest; so each bus carries one protocol and every station gets
/// all three (stations go round-robin). Written and parsed as `modbus=60,dlt645=30,qgdw376=10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolMix {
    pub modbus: u32,
    pub dlt645: u32,
    pub qgdw376: u32,
}

impl Default for ProtocolMix {
    /// All Modbus TCP (the demo as it was before mixed fleets).
    fn default() -> Self {
        ProtocolMix {
            modbus: 100,
            dlt645: 0,
            qgdw376: 0,
        }
    }
}

impl std::str::FromStr for ProtocolMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = ProtocolMix {
            modbus: 0,
            dlt645: 0,
            qgdw376: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, pct) = part.split_once('=').ok_or_else(|| {
                format!("{part:?} is not PROTOCOL=PERCENT (e.g. modbus=60,dlt645=30,qgdw376=10)")
            })?;
            let pct: u32 = pct
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the share must be a whole percentage"))?;
            match name.trim() {
                "modbus" => mix.modbus = pct,
                "dlt645" => mix.dlt645 = pct,
                "qgdw376" => mix.qgdw376 = pct,
                other => {
                    return Err(format!(
                        "unknown protocol {other:?}: use modbus, dlt645 or qgdw376"
                    ));
                }
            }
        }
        let total = mix.modbus + mix.dlt645 + mix.qgdw376;
        if total != 100 {
            return Err(format!(
                "the shares add up to {total}%, not 100% (e.g. modbus=60,dlt645=30,qgdw376=10)"
            ));
        }
        Ok(mix)
    }
}

impl std::fmt::Display for ProtocolMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "modbus={},dlt645={},qgdw376={}",
            self.modbus, self.dlt645, self.qgdw376
        )
    }
}

/// Which protocol a meter speaks in the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoProtocol {
    Modbus,
    Dlt645,
    Qgdw376,
}

impl ProtocolMix {
    /// How many of `meters` speak each protocol (Modbus, DL/T 645, 1376.1): the DL/T 645 and
    /// 1376.1 shares are rounded down, Modbus takes the rest.
    pub fn counts(&self, meters: usize) -> (usize, usize, usize) {
        let dlt = meters * self.dlt645 as usize / 100;
        let q = meters * self.qgdw376 as usize / 100;
        (meters - dlt - q, dlt, q)
    }

    /// The protocol of meter `i` of `meters`.
    pub fn protocol_of(&self, i: usize, meters: usize) -> DemoProtocol {
        let (m, d, _) = self.counts(meters);
        if i < m {
            DemoProtocol::Modbus
        } else if i < m + d {
            DemoProtocol::Dlt645
        } else {
            DemoProtocol::Qgdw376
        }
    }
}

/// The demo's figures. Money values are decimal strings in yuan.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DemoSummary {
    pub accounts: u64,
    pub days: u32,
    pub start: String,
    pub seed: u64,
    pub kwh_total: String,
    pub charged_yuan: String,
    pub paid_yuan: String,
    pub balance_total_yuan: String,
    /// Every account's balance equals the sum of its ledger entries.
    pub ledger_balanced: bool,
    pub readings_expected: u64,
    pub readings_ok: u64,
    pub read_success_rate: String,
    /// Warning notices (low balance, second alarm, arrears) with a delivered receipt
    /// (one per notice, however many contacts got it).
    pub warnings: u64,
    /// SMS the gateway took (accepted or delivered), every contact counted.
    pub sms_sent: u64,
    /// Of those, SMS to an agreement's second contact.
    pub sms_second_contact: u64,
    /// SMS given up after the retry limit (or refused for good by the carrier).
    pub sms_given_up: u64,
    pub work_orders_opened: u64,
    /// Of those, disconnection approval orders (the rest: offline follow-ups, data
    /// maintenance, call-before-reconnection, relay failures).
    pub approval_orders_opened: u64,
    pub approvals: u64,
    pub holds_by_staff: u64,
    pub disconnections: u64,
    pub reconnections: u64,
    pub customers_moved_to_automatic: u64,
    pub policy_decisions: u64,
    pub policy_failures: u64,
    /// Accounts held (bad reading or failed policy) at any time.
    pub held_accounts: u64,
    /// Trips the safety floor refused although asked.
    pub floor_refusals: u64,
    /// Confirmed trips issued inside a protected window (must be 0).
    pub cutoffs_in_protected_windows: u64,
    pub accounts_disconnected_at_end: u64,
}

/// A customer action scheduled in simulated time.
#[derive(Debug, Clone)]
enum CustomerEvent {
    /// Pay now (instant channels) or announce now and settle 4 h later (bank transfer).
    Pay { meter: usize },
    /// A bank transfer announced earlier settles.
    Settle {
        meter: usize,
        channel: &'static str,
        txn: String,
        amount_fen: i64,
    },
    /// Press the meter button after a close-allowed reconnection.
    PressButton { meter: usize },
}

struct Customer {
    account_id: String,
    persona: Persona,
    /// A payment is already scheduled (don't schedule another for the same episode).
    payment_pending: bool,
    /// Top-ups made so far (excluding the initial prepayment).
    topups: u32,
}

impl Customer {
    /// The habit in force now (a lapsing prompt payer turns late).
    fn habit(&self) -> Habit {
        match self.persona.lapses_after_topups {
            Some(n) if self.topups >= n => Habit::Late,
            _ => self.persona.habit,
        }
    }
}

/// Replaces one policy of the county's set, e.g. with a hostile component in a test.
#[derive(Debug, Clone)]
pub struct ComponentOverride {
    pub kind: PolicyKind,
    pub wasm: PathBuf,
    pub parameters_json: String,
}

/// A simulated county: host, meter fleet, clock and customers, advanced day by day.
pub struct Scenario {
    pub host: Host,
    /// Puts versions activated in the registry in force, at every host step.
    pub watcher: Arc<registry::Watcher>,
    pub fleet: Arc<SimFleet>,
    pub clock: Arc<SimClock>,
    pub sms: Arc<LogGateway>,
    opts: DemoOptions,
    customers: Vec<Customer>,
    behaviour: Behaviour,
    events: BTreeMap<NaiveDateTime, Vec<CustomerEvent>>,
    last_message_id: i64,
    txn_seq: u64,
    _tmp: Option<tempfile::TempDir>,
}

/// What one simulated day did, for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct DayStats {
    pub read_ok: u32,
    pub settled: u32,
    pub charged_fen: i64,
}

/// Host steps of a simulated day (local hour, minute).
const HOST_TIMES: [(u32, u32); 10] = [
    (0, 10),
    (8, 0),
    (9, 0),
    (10, 30),
    (12, 0),
    (14, 0),
    (16, 0),
    (18, 0),
    (20, 0),
    (22, 0),
];

impl Scenario {
    /// Loads the policies, opens the database, starts the meter simulator and onboards
    /// one customer per meter with their initial prepayment, at 00:00 of `opts.start`.
    pub async fn new(opts: &DemoOptions, overrides: &[ComponentOverride]) -> anyhow::Result<Self> {
        let config = HostConfig::default();
        let engine = PolicyEngine::new(config.policy.clone())?;
        let county = County::load(
            &engine,
            &opts.policy_set,
            &opts.components,
            config.floor.clone(),
        )?;
        let mut override_bytes = Vec::new();
        for o in overrides {
            let bytes = std::fs::read(&o.wasm)
                .with_context(|| format!("cannot read {}", o.wasm.display()))?;
            let component = engine.load(o.kind, &bytes)?;
            override_bytes.push((o, bytes, component));
        }
        let county = Arc::new(county);
        let (url, tmp) = match &opts.db_url {
            Some(u) => (u.clone(), None),
            None => {
                let tmp = tempfile::tempdir()
                    .context("cannot create a temporary directory for the demo database")?;
                (
                    format!("sqlite://{}", tmp.path().join("demo.db").display()),
                    Some(tmp),
                )
            }
        };
        let db = Db::open(&url).await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM accounts")
            .fetch_one(&db.pool)
            .await?
            .try_get(0)?;
        anyhow::ensure!(
            existing == 0,
            "the database {url} already holds {existing} accounts; the demo onboards a fresh county: pass a new --db, or omit it for a temporary one"
        );
        // Every component the host runs goes into the registry, so each decision it
        // logs can be replayed (`feegate audit replay`).
        registry::record_policy_set(
            &db,
            &county,
            &opts.policy_set,
            &opts.components,
            opts.start.and_time(NaiveTime::MIN),
        )
        .await?;
        for (o, bytes, component) in override_bytes {
            registry::record_shipped(
                &db,
                &county.county,
                o.kind,
                &bytes,
                &component.contract_version,
                &o.parameters_json,
                opts.start.and_time(NaiveTime::MIN),
            )
            .await?;
            county.activate(crate::county::ActiveComponent {
                component,
                parameters_json: o.parameters_json.clone(),
            });
        }

        let fleet = Arc::new(
            SimFleet::from_csv(&opts.data, opts.meters, opts.seed)
                .with_context(|| format!("loading {}", opts.data.display()))?,
        );
        let start_time = opts.start.and_time(NaiveTime::MIN);
        fleet.advance_to(start_time)?;
        let links = serve_fleet(&fleet, opts).await?;
        let clock = Arc::new(SimClock::new(start_time));
        // Versions activated in the registry (`feegate policy activate`) replace the
        // policy-set files from their effective time, checked at every host step.
        let watcher = Arc::new(registry::Watcher::new(
            db.clone(),
            engine.clone(),
            county.clone(),
            clock.clone(),
        ));
        watcher.poll().await?;
        let sms = Arc::new(LogGateway::default());
        let meters = FleetClient::new(
            ModbusMeterClient::new(ClientConfig {
                timeout: opts.read_timeout,
                retries: 1,
                retry_backoff: std::time::Duration::from_millis(5),
            }),
            Dlt645Client::new(
                Dlt645Config {
                    timeout: opts.read_timeout,
                    retries: 1,
                    retry_backoff: std::time::Duration::from_millis(5),
                    password: feegate_meter::sim::SIM_PASSWORD,
                    ..Dlt645Config::default()
                },
                links.master,
            ),
        );
        let host = Host {
            db: db.clone(),
            engine: engine.clone(),
            meters,
            county: county.clone(),
            config,
            clock: clock.clone(),
            sms: sms.clone(),
        };

        // Four supply stations of Xianyou; customers spread over them.
        let stations = [
            ("XY-BT", "榜头供电所"),
            ("XY-DW", "度尾供电所"),
            ("XY-FT", "枫亭供电所"),
            ("XY-LC", "鲤城供电所"),
        ];
        onboarding::ensure_county(
            &db,
            &county.county,
            &county.display_name,
            county.snapshot().rollout_stage,
        )
        .await?;
        for (id, name) in stations {
            onboarding::ensure_station(&db, id, &county.county, name).await?;
        }
        let mut behaviour = Behaviour::new(opts.seed);
        let mut customers = Vec::with_capacity(opts.meters);
        for (i, link) in links.links.into_iter().enumerate() {
            let persona = behaviour.persona(i);
            let account_id = format!("35{:08}", i + 1);
            let app = Application {
                county: county.county.clone(),
                station_id: stations[i % stations.len()].0.to_string(),
                customer_id: format!("C{:08}", i + 1),
                customer_name: persona.name.clone(),
                master_mobile: Some(if persona.master_mobile_differs {
                    format!("138{:08}", i)
                } else {
                    persona.mobile.clone()
                }),
                customer_class: "low-voltage-residential".into(),
                vulnerable: persona.vulnerable,
                meter_id: format!("M{:012}", i + 1),
                link,
                ct_ratio: 1,
                pt_ratio: 1,
                account_id: account_id.clone(),
                alarm_threshold_fen: persona.alarm_threshold_fen,
                auto_debit_fen: None,
                mobile: persona.mobile.clone(),
                // One customer in ten names a second contact (a relative).
                second_mobile: (i % 10 == 3).then(|| format!("137{:08}", i)),
                keep_power: persona.keep_power,
                time_of_use: false,
            };
            onboarding::onboard(&db, &app, start_time).await?;
            payment::apply(
                &db,
                &PaymentNotice {
                    channel: "business-hall",
                    channel_txn_id: &format!("open-{account_id}"),
                    account_id: &account_id,
                    amount_fen: persona.initial_prepayment_fen,
                },
                EntryKind::Prepayment,
                start_time,
            )
            .await?;
            customers.push(Customer {
                account_id,
                persona,
                payment_pending: false,
                topups: 0,
            });
        }
        Ok(Self {
            host,
            watcher,
            fleet,
            clock,
            sms,
            opts: opts.clone(),
            customers,
            behaviour,
            events: BTreeMap::new(),
            last_message_id: 0,
            txn_seq: 0,
            _tmp: tmp,
        })
    }

    /// Runs one simulated day. With `morning_only`, only the 00:10 stages run (the last
    /// morning settles the last simulated day).
    pub async fn run_day(
        &mut self,
        date: NaiveDate,
        morning_only: bool,
    ) -> anyhow::Result<DayStats> {
        let mut stats = DayStats::default();
        for (h, m) in HOST_TIMES {
            let t = date.and_hms_opt(h, m, 0).expect("valid time");
            self.customer_events_until(t).await?;
            self.advance(t)?;
            self.watcher.poll().await?;
            let host = &self.host;
            match (h, m) {
                (0, 10) => {
                    let r = host.run_morning(date).await?;
                    stats = DayStats {
                        read_ok: r.collection.read_ok,
                        settled: r.settlement.settled,
                        charged_fen: r.settlement.charged_fen,
                    };
                    if morning_only {
                        return Ok(stats);
                    }
                }
                (9, 0) => {
                    host.run_cutoff().await?;
                    host.drive_relays().await?;
                }
                (10, 30) => {
                    staff_decide(host, &mut self.behaviour, t).await?;
                    host.execute_approved().await?;
                    host.drive_relays().await?;
                }
                _ => {
                    host.drive_relays().await?;
                }
            }
            self.host.run_outbox().await?;
            self.react_to_sms().await?;
        }
        Ok(stats)
    }

    /// Runs the first `days` simulated days from the start date, each in full.
    pub async fn run_days(&mut self, days: u32) -> anyhow::Result<()> {
        for day in 0..days {
            self.run_day(self.opts.start + Duration::days(i64::from(day)), false)
                .await?;
        }
        Ok(())
    }

    /// Moves the meters and the clock to `t` (never backwards).
    pub fn advance(&self, t: NaiveDateTime) -> anyhow::Result<()> {
        advance(&self.fleet, &self.clock, t)
    }

    async fn customer_events_until(&mut self, t: NaiveDateTime) -> anyhow::Result<()> {
        while let Some((&at, _)) = self.events.first_key_value() {
            if at > t {
                break;
            }
            let due = self.events.remove(&at).unwrap_or_default();
            self.advance(at)?;
            for e in due {
                customer_event(
                    &self.host,
                    &self.fleet,
                    &mut self.customers,
                    &mut self.behaviour,
                    &mut self.events,
                    &mut self.txn_seq,
                    e,
                    at,
                )
                .await?;
            }
            self.react_to_sms().await?;
        }
        Ok(())
    }

    async fn react_to_sms(&mut self) -> anyhow::Result<()> {
        react_to_sms(
            &self.host.db,
            &mut self.customers,
            &mut self.behaviour,
            &mut self.events,
            &mut self.last_message_id,
        )
        .await
    }

    /// The demo's figures as they stand.
    pub async fn summary(&self) -> anyhow::Result<DemoSummary> {
        summarize(&self.host.db, &self.host.county, &self.opts).await
    }
}

/// Runs the demo and returns its summary.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoSummary> {
    let mut scenario = Scenario::new(opts, &[]).await?;
    for day in 0..=opts.days {
        let date = opts.start + Duration::days(i64::from(day));
        let stats = scenario.run_day(date, day == opts.days).await?;
        if opts.progress {
            eprintln!(
                "day {date}: read {}/{}, settled {}, charged {} yuan",
                stats.read_ok,
                opts.meters,
                stats.settled,
                format_yuan(stats.charged_fen)
            );
        }
    }
    scenario.fleet.shutdown();
    scenario.summary().await
}

/// The simulated fleet's links, in meter order, and the master station its terminals dial.
struct ServedFleet {
    links: Vec<MeterLink>,
    master: Option<Master>,
}

/// Serves the fleet on loopback in the protocols of `opts.protocol_mix`: Modbus TCP
/// gateways, DL/T 645 serial gateways, and 1376.1 terminals (address 3501-000N, meters on
/// port 31) that dial a master station bound here; `meters_per_gateway` meters per bus.
async fn serve_fleet(fleet: &Arc<SimFleet>, opts: &DemoOptions) -> anyhow::Result<ServedFleet> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let n = fleet.len();
    let (modbus, dlt, q) = opts.protocol_mix.counts(n);
    let per = usize::from(opts.meters_per_gateway);
    let mut links: Vec<MeterLink> = Vec::with_capacity(n);
    let modbus_addrs = fleet.serve(ip, opts.meters_per_gateway).await?;
    links.extend(modbus_addrs[..modbus].iter().map(|a| MeterLink::Modbus(*a)));
    if dlt > 0 {
        // Gateways cover the whole fleet in buses of `per`; the DL/T 645 meters are a
        // contiguous range, so their buses are theirs alone except at its edges.
        let ms = fleet.serve_dlt645(ip, per).await?;
        links.extend(
            ms[modbus..modbus + dlt]
                .iter()
                .map(|m| MeterLink::Dlt645(*m)),
        );
    }
    let mut master = None;
    if q > 0 {
        let m = Master::bind(std::net::SocketAddr::new(ip, 0), 1, Pw::default()).await?;
        let ms = fleet
            .run_terminals(&m, modbus + dlt..n, per, std::time::Duration::from_secs(60))
            .await?;
        links.extend(ms.into_iter().map(MeterLink::Dlt645));
        master = Some(m);
    }
    Ok(ServedFleet { links, master })
}

fn advance(fleet: &SimFleet, clock: &SimClock, t: NaiveDateTime) -> anyhow::Result<()> {
    if t > clock.now() {
        fleet.advance_to(t)?;
        clock.set(t);
    }
    Ok(())
}

/// Simulated station staff: decide open approval orders older than an hour; one in ten
/// is held (the area manager reached the customer, who promised to pay).
async fn staff_decide(
    host: &Host,
    behaviour: &mut Behaviour,
    now: NaiveDateTime,
) -> anyhow::Result<()> {
    let open = sqlx::query("SELECT work_order_id, opened_at FROM work_orders WHERE kind = 'approve-disconnection' AND status = 'open' ORDER BY work_order_id")
        .fetch_all(&host.db.pool)
        .await?;
    for r in open {
        let (id, opened): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
        if now - parse_ts(&opened)? < Duration::hours(1) {
            continue;
        }
        let approve = !behaviour.chance(10);
        let note = if approve {
            "核实欠费，同意停电"
        } else {
            "片区负责人已电话联系，客户承诺当日缴费，暂缓"
        };
        crate::cutoff::decide_work_order(&host.db, id, approve, "station-staff-sim", now, note)
            .await?;
    }
    Ok(())
}

/// Customers read the SMS delivered since the last look and schedule what they do.
async fn react_to_sms(
    db: &Db,
    customers: &mut [Customer],
    behaviour: &mut Behaviour,
    events: &mut BTreeMap<NaiveDateTime, Vec<CustomerEvent>>,
    last_message_id: &mut i64,
) -> anyhow::Result<()> {
    // The customer reads their own phone (the agreement's mobile), not the second contact's.
    let rows = sqlx::query("SELECT message_id, account_id, kind, delivered_at FROM sms_outbox WHERE status = 'delivered' AND contact = 'primary' AND message_id > $1 ORDER BY message_id")
        .bind(*last_message_id)
        .fetch_all(&db.pool)
        .await?;
    for r in rows {
        let (id, account, kind, at): (i64, String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        *last_message_id = id;
        let at = parse_ts(&at)?;
        let Some(meter) = customers.iter().position(|c| c.account_id == account) else {
            continue;
        };
        let c = &mut customers[meter];
        let when = match (kind.as_str(), c.habit()) {
            ("press-button-to-restore", _) => {
                let press = at + Duration::minutes(behaviour.days(5, 180));
                events
                    .entry(press)
                    .or_default()
                    .push(CustomerEvent::PressButton { meter });
                continue;
            }
            (_, _) if c.payment_pending => continue,
            ("low-balance", Habit::Prompt) => Some(behaviour.time_on(at.date(), 12, 21)),
            ("second-alarm" | "arrears", Habit::Prompt) => {
                Some(behaviour.time_on(at.date(), 12, 21))
            }
            ("low-balance", Habit::Slow) => {
                let d = behaviour.days(2, 4);
                Some(behaviour.time_on(at.date() + Duration::days(d), 9, 21))
            }
            ("arrears", Habit::Slow) => {
                Some(behaviour.time_on(at.date() + Duration::days(1), 9, 21))
            }
            ("disconnected", Habit::Prompt | Habit::Slow) => {
                Some(at + Duration::minutes(behaviour.days(20, 120)))
            }
            ("disconnected", Habit::Late) => {
                let d = behaviour.days(0, 1);
                Some(behaviour.time_on(at.date() + Duration::days(d), 12, 21))
            }
            ("disconnected", Habit::Absent) => {
                let d = behaviour.days(5, 10);
                Some(behaviour.time_on(at.date() + Duration::days(d), 9, 21))
            }
            _ => None,
        };
        if let Some(when) = when {
            let when = when.max(at + Duration::minutes(1));
            c.payment_pending = true;
            events
                .entry(when)
                .or_default()
                .push(CustomerEvent::Pay { meter });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn customer_event(
    host: &Host,
    fleet: &SimFleet,
    customers: &mut [Customer],
    behaviour: &mut Behaviour,
    events: &mut BTreeMap<NaiveDateTime, Vec<CustomerEvent>>,
    txn_seq: &mut u64,
    event: CustomerEvent,
    now: NaiveDateTime,
) -> anyhow::Result<()> {
    match event {
        CustomerEvent::PressButton { meter } => {
            fleet.press_button(meter)?;
        }
        CustomerEvent::Pay { meter } => {
            let account = customers[meter].account_id.clone();
            let recent = sqlx::query("SELECT CAST(COALESCE(SUM(charge_fen), 0) AS BIGINT), COUNT(*) FROM (SELECT charge_fen FROM settlements WHERE account_id = $1 ORDER BY business_date DESC LIMIT 14) t")
                .bind(&account)
                .fetch_one(&host.db.pool)
                .await?;
            let (sum, n): (i64, i64) = (recent.try_get(0)?, recent.try_get(1)?);
            let avg = if n > 0 { (sum + n - 1) / n } else { 500 };
            let amount_fen = behaviour.topup_fen(customers[meter].habit(), avg);
            customers[meter].topups += 1;
            let channel = behaviour.channel();
            *txn_seq += 1;
            let txn = format!("{channel}-{:010}", *txn_seq);
            let notice = PaymentNotice {
                channel,
                channel_txn_id: &txn,
                account_id: &account,
                amount_fen,
            };
            if channel == "bank-transfer" {
                payment::announce(&host.db, &notice, now).await?;
                events
                    .entry(now + Duration::hours(4))
                    .or_default()
                    .push(CustomerEvent::Settle {
                        meter,
                        channel,
                        txn,
                        amount_fen,
                    });
            } else {
                host.pay(&notice).await?;
                customers[meter].payment_pending = false;
            }
        }
        CustomerEvent::Settle {
            meter,
            channel,
            txn,
            amount_fen,
        } => {
            let account = customers[meter].account_id.clone();
            host.pay(&PaymentNotice {
                channel,
                channel_txn_id: &txn,
                account_id: &account,
                amount_fen,
            })
            .await?;
            customers[meter].payment_pending = false;
        }
    }
    Ok(())
}

async fn count(db: &Db, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).fetch_one(&db.pool).await?.try_get(0)?)
}

async fn summarize(db: &Db, county: &County, opts: &DemoOptions) -> anyhow::Result<DemoSummary> {
    let mut conn = db.pool.acquire().await?;
    let ledger_balanced = ledger::unbalanced_accounts(&mut conn).await?.is_empty();
    drop(conn);
    let charged = -count(
        db,
        "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM ledger_entries WHERE kind = 'charge'",
    )
    .await?;
    let paid = count(db, "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM ledger_entries WHERE kind IN ('payment', 'prepayment')").await?;
    let balance = count(
        db,
        "SELECT CAST(COALESCE(SUM(balance_fen), 0) AS BIGINT) FROM accounts",
    )
    .await?;
    let kwh = count(
        db,
        "SELECT CAST(COALESCE(SUM(kwh_centi), 0) AS BIGINT) FROM settlements",
    )
    .await?;
    let expected = count(
        db,
        "SELECT COUNT(*) FROM (SELECT DISTINCT meter_id, business_date FROM collection_attempts) t",
    )
    .await?;
    let ok = count(db, "SELECT COUNT(*) FROM readings").await?;
    let rate = if expected > 0 {
        (Decimal::from(ok) / Decimal::from(expected)).round_dp(4)
    } else {
        Decimal::ZERO
    };

    // Independent check of the floor: every confirmed trip's issue time against the
    // county's protected windows.
    let trips = sqlx::query(
        "SELECT issued_at FROM relay_commands WHERE command = 'trip' AND status = 'confirmed'",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut in_protected = 0;
    for t in &trips {
        let at = parse_ts(&t.try_get::<String, _>(0)?)?;
        if !county.floor.protected_at(at).is_empty() {
            in_protected += 1;
        }
    }
    let u = |v: i64| v as u64;
    Ok(DemoSummary {
        accounts: u(count(db, "SELECT COUNT(*) FROM accounts").await?),
        days: opts.days,
        start: ds(opts.start),
        seed: opts.seed,
        kwh_total: centi_kwh_to_kwh(kwh).to_string(),
        charged_yuan: format_yuan(charged),
        paid_yuan: format_yuan(paid),
        balance_total_yuan: format_yuan(balance),
        ledger_balanced,
        readings_expected: u(expected),
        readings_ok: u(ok),
        read_success_rate: rate.to_string(),
        warnings: u(count(db, "SELECT COUNT(DISTINCT COALESCE(notice_key, dedup_key)) FROM sms_outbox WHERE warning_level > 0 AND status = 'delivered'").await?),
        sms_sent: u(count(db, "SELECT COUNT(*) FROM sms_outbox WHERE status IN ('sent', 'delivered')").await?),
        sms_second_contact: u(count(db, "SELECT COUNT(*) FROM sms_outbox WHERE status IN ('sent', 'delivered') AND contact = 'second'").await?),
        sms_given_up: u(count(db, "SELECT COUNT(*) FROM sms_outbox WHERE status = 'failed'").await?),
        work_orders_opened: u(count(db, "SELECT COUNT(*) FROM work_orders").await?),
        approval_orders_opened: u(count(db, "SELECT COUNT(*) FROM work_orders WHERE kind = 'approve-disconnection'").await?),
        approvals: u(count(db, "SELECT COUNT(*) FROM work_orders WHERE kind = 'approve-disconnection' AND decided_by IS NOT NULL AND status IN ('approved', 'done', 'cancelled')").await?),
        holds_by_staff: u(count(db, "SELECT COUNT(*) FROM work_orders WHERE kind = 'approve-disconnection' AND status = 'held'").await?),
        disconnections: trips.len() as u64,
        reconnections: u(count(db, "SELECT COUNT(*) FROM relay_commands WHERE command IN ('close-allowed', 'direct-close') AND status = 'confirmed'").await?),
        customers_moved_to_automatic: u(count(db, "SELECT COUNT(DISTINCT account_id) FROM decisions WHERE kind = 'cutoff' AND reason_code = 'habit-automatic'").await?),
        policy_decisions: u(count(db, "SELECT COUNT(*) FROM decisions").await?),
        policy_failures: u(count(db, "SELECT COUNT(*) FROM decisions WHERE outcome = 'failed'").await?),
        held_accounts: u(count(db, "SELECT COUNT(DISTINCT account_id) FROM holds").await?),
        floor_refusals: u(count(db, "SELECT COUNT(*) FROM floor_refusals").await?),
        cutoffs_in_protected_windows: in_protected,
        accounts_disconnected_at_end: u(count(db, "SELECT COUNT(*) FROM accounts WHERE relay_state <> 'closed'").await?),
    })
}
