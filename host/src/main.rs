//! `feegate`: the Feegate command line.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use feegate::demo::{self, DemoOptions};
use std::path::PathBuf;
use std::time::Instant;

/// jemalloc for the whole process: Rust's allocations and, through the unprefixed
/// `malloc`/`free` it defines, SQLite's (see `host/Cargo.toml`).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Remote prepaid fee control (远程费控) for an electricity supply company.
#[derive(Parser)]
#[command(name = "feegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a simulated county's inputs are: consumption data, policy set, built components.
/// Paths are relative to the current directory (run from the repository root).
#[derive(clap::Args)]
struct CountyInputs {
    /// Daily consumption data (Low Carbon London, 100 households, 2013).
    #[arg(
        long,
        env = "FEEGATE_DATA",
        default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
    )]
    data: PathBuf,
    #[command(flatten)]
    policy: PolicyInputs,
}

/// A county's policy set and the built components it names.
#[derive(clap::Args)]
struct PolicyInputs {
    /// County policy set directory.
    #[arg(long, env = "FEEGATE_POLICY_SET", default_value = "policies/xianyou")]
    policy_set: PathBuf,
    /// Directory of built policy components (`make plugins`).
    #[arg(
        long,
        env = "FEEGATE_COMPONENTS",
        default_value = "target/wasm32-wasip2/plugin"
    )]
    components: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: HTTP endpoints (/healthz, /readyz, /metrics), the daily job on its
    /// schedule with catch-up after downtime, and hot policy activation. Stops on
    /// Ctrl-C or SIGTERM after the job in progress.
    Serve {
        /// Configuration file (TOML; every key has a default, see README "Serving").
        /// Environment: FEEGATE_<SECTION>__<KEY> overrides, e.g. FEEGATE_DATABASE__URL.
        #[arg(long, env = "FEEGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// People who may use `serve`: create, set a console password, disable, list
    /// (roles: operations, county-engineer, station-staff, auditor, customer).
    User(feegate::auth::cli::UserArgs),
    /// API tokens: issue (printed once, stored hashed) and revoke.
    Token(feegate::auth::cli::TokenArgs),
    /// Re-sign a fee-control agreement (费控协议) with changes; checks the phone number again.
    Agreement {
        #[command(subcommand)]
        cmd: AgreementCmd,
    },
    /// Phone-number mismatches between agreements and the customer master data.
    Mobile {
        #[command(subcommand)]
        cmd: MobileCmd,
    },
    /// Offline follow-ups by the meter reader (抄收员线下催费): record one as done.
    FollowUp {
        #[command(subcommand)]
        cmd: FollowUpCmd,
    },
    /// Call-before-reconnection orders (复电前电话联系): after calling the customer,
    /// record one as done, which reconnects (a direct-close relay command).
    CallFirst {
        #[command(subcommand)]
        cmd: CallFirstCmd,
    },
    /// SMS field tools: segment counting.
    Sms {
        #[command(subcommand)]
        cmd: SmsCmd,
    },
    /// Accounts held for a person (bad readings, failed policies): list, release.
    Holds {
        #[command(subcommand)]
        cmd: HoldsCmd,
    },
    /// Policy lifecycle: keys, trust, publish, activate, roll back, list, diff.
    Policy(feegate::cli::PolicyArgs),
    /// The decision log: list, verify the hash chain, replay decisions.
    Audit(feegate::cli::AuditArgs),
    /// Benchmarks that print figures (`bench policy`). Build with --release for real figures.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Run a simulated county through the whole daily job on real consumption data.
    Demo {
        /// Number of simulated meters (more than the 100 households reuse profiles with an offset).
        #[arg(long, default_value_t = 100)]
        meters: usize,
        /// Simulated days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// First simulated day (YYYY-MM-DD).
        #[arg(long, default_value = "2013-01-01")]
        start: NaiveDate,
        /// Seed of the customer behaviour model and the meters' starting registers.
        #[arg(long, default_value_t = 2013)]
        seed: u64,
        /// Print one JSON object with the figures instead of the readable summary.
        #[arg(long)]
        json: bool,
        /// Database URL (default: a fresh SQLite file in a temporary directory).
        #[arg(long, env = "FEEGATE_DB")]
        db: Option<String>,
        #[command(flatten)]
        inputs: CountyInputs,
        /// Meters behind each simulated serial gateway (1..=247).
        #[arg(long, default_value_t = 16)]
        meters_per_gateway: u8,
        /// Reply timeout in milliseconds (the simulator is on loopback).
        #[arg(long, default_value_t = 100)]
        read_timeout_ms: u64,
        /// Share of meters per protocol in percent: Modbus TCP, DL/T 645 behind serial
        /// gateways, DL/T 645 behind 1376.1 terminals.
        #[arg(long, default_value = "modbus=100")]
        protocol_mix: demo::ProtocolMix,
    },
    /// DL/T 645-2007 field tools: decode a captured frame, build a request.
    Dlt645 {
        #[command(subcommand)]
        cmd: Dlt645Cmd,
    },
    /// Q/GDW 1376.1 field tools.
    Q376 {
        #[command(subcommand)]
        cmd: Q376Cmd,
    },
    /// Modbus field tools.
    Modbus {
        #[command(subcommand)]
        cmd: ModbusCmd,
    },
    /// Read or switch one real or simulated meter.
    Meter {
        #[command(subcommand)]
        cmd: MeterCmd,
    },
    /// Collection (集抄): the daily report, readings imported from a head-end system.
    Collection {
        #[command(subcommand)]
        cmd: CollectionCmd,
    },
    /// Match a channel's daily statement (CSV) against the ledger; unmatched items open
    /// work orders (idempotently). Nothing is corrected. Exit status 3 when anything is unmatched.
    Reconcile {
        /// Channel name as in the channel config, e.g. bank-transfer.
        #[arg(long)]
        channel: String,
        /// The channels file (`feegate serve`'s `[channels] config`); an unknown --channel
        /// is refused before anything is read or written. Secrets in it are not needed.
        #[arg(long, env = "FEEGATE_CHANNELS__CONFIG")]
        channels: PathBuf,
        /// Statement CSV: txn_id,type,account_id,amount,currency (header row required).
        #[arg(long)]
        statement: PathBuf,
        /// Business day of the statement (YYYY-MM-DD).
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, env = "FEEGATE_DB")]
        db: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Simulated meters for the field tools: Modbus TCP and DL/T 645 gateways on loopback.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
}

#[derive(Subcommand)]
enum Dlt645Cmd {
    /// Decode a frame (hex, spaces allowed, FEH preamble optional): JSON, or an error naming
    /// the broken field.
    Decode { hex: String },
    /// Build a request frame (hex, with a 4-byte FEH preamble).
    Encode {
        #[command(subcommand)]
        what: EncodeCmd,
    },
    /// Broadcast time (08H to 999999999999) on a bus: every meter within ±5 min of the time
    /// sets its clock (once a day, not around midnight); none replies.
    BroadcastTime {
        #[command(flatten)]
        link: feegate::fieldtools::LinkArgs,
        /// The time to set, YYYY-MM-DDTHH:MM:SS (default: now, county-local time).
        #[arg(long)]
        time: Option<chrono::NaiveDateTime>,
        /// Read this meter's clock back afterwards (12-digit address).
        #[arg(long)]
        check: Option<String>,
        /// Reply timeout of the read-back and terminal forwarding, ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand)]
enum EncodeCmd {
    /// Read data (11H).
    Read {
        /// Meter address, 12 digits as printed on the meter.
        #[arg(long)]
        address: String,
        /// Data identifier, 8 hex digits (e.g. 00010000 total forward active energy).
        #[arg(long)]
        di: String,
    },
    /// Relay control (1CH) in plaintext.
    Relay {
        #[arg(long)]
        address: String,
        /// trip, close-allowed, direct-close, alarm, alarm-release, keep-power-on, keep-power-off.
        #[arg(long)]
        command: String,
        /// Meter-local deadline, YYYY-MM-DDTHH:MM:SS.
        #[arg(long)]
        valid_until: chrono::NaiveDateTime,
        /// LEVEL:CODE, e.g. 02:123456.
        #[arg(long)]
        password: String,
        /// Operator code, 8 hex digits.
        #[arg(long, default_value = "00000000")]
        operator: String,
    },
}

#[derive(Subcommand)]
enum Q376Cmd {
    /// Decode a 1376.1 frame and any DL/T 645 frame it forwards: JSON or an error naming the field.
    Decode { hex: String },
}

#[derive(Subcommand)]
enum ModbusCmd {
    /// Decode a Modbus RTU response (CRC checked); with --map and --register, its value.
    DecodeRtu {
        hex: String,
        /// Built-in map name (eastron-sdm120, eastron-sdm630, chint-ddsu666, chint-dtsu666, feegate-sim) or a file.
        #[arg(long)]
        map: Option<String>,
        #[arg(long)]
        register: Option<String>,
    },
}

#[derive(clap::Args)]
struct TargetArgs {
    /// dlt645 or modbus (Modbus TCP with --gateway, Modbus RTU with --serial).
    #[arg(long, default_value = "dlt645")]
    protocol: String,
    #[command(flatten)]
    link: feegate::fieldtools::LinkArgs,
    /// DL/T 645 meter address (12 digits).
    #[arg(long)]
    address: Option<String>,
    /// Modbus unit id.
    #[arg(long)]
    unit: Option<u8>,
    /// Modbus register map, name or file (default feegate-sim).
    #[arg(long)]
    map: Option<String>,
    /// Reply timeout, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<feegate::fieldtools::Target> {
        feegate::fieldtools::Target::from_args(
            &self.protocol,
            &self.link,
            self.address.as_deref(),
            self.unit,
            self.map.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum MeterCmd {
    /// Read energy, the daily frozen reading and the relay state.
    Read {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Send a relay command and confirm it with a fresh status read.
    Relay {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        command: String,
        /// Meter-local deadline, YYYY-MM-DDTHH:MM:SS.
        #[arg(long)]
        valid_until: chrono::NaiveDateTime,
        /// DL/T 645 password LEVEL:CODE.
        #[arg(long)]
        password: Option<String>,
        /// DL/T 645 operator code, 8 hex digits.
        #[arg(long)]
        operator: Option<String>,
        /// The meter accepts only commands sealed by the county's security module.
        #[arg(long)]
        requires_security: bool,
    },
    /// Record a meter replacement (换表): the account moves to the new meter; the period
    /// containing the replacement is billed as old tail + new head.
    Replace {
        /// The account whose meter was replaced.
        #[arg(long)]
        account: String,
        /// Id of the new meter.
        #[arg(long)]
        new_meter: String,
        /// The old meter's register when removed, kWh.
        #[arg(long, value_parser = parse_kwh)]
        old_final: rust_decimal::Decimal,
        /// The new meter's register when fitted, kWh.
        #[arg(long, value_parser = parse_kwh)]
        new_start: rust_decimal::Decimal,
        /// County-local time the old meter came off, YYYY-MM-DDTHH:MM:SS.
        #[arg(long)]
        at: chrono::NaiveDateTime,
        /// Who replaced it.
        #[arg(long)]
        who: String,
        /// The new meter's DL/T 645 address, if not the old one's.
        #[arg(long)]
        new_address: Option<String>,
        /// The new meter's Modbus unit id, if not the old one's.
        #[arg(long)]
        new_unit: Option<u8>,
        #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
        db: String,
    },
}

#[derive(Subcommand)]
enum CollectionCmd {
    /// Coverage and read success rate per supply station on a day (exact fractions).
    Report {
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, env = "FEEGATE_DB")]
        db: String,
        /// Only this county.
        #[arg(long)]
        county: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import readings (CSV: meter_id,reading_date,register_kwh; or a JSON array). Idempotent.
    Import {
        file: PathBuf,
        #[arg(long, env = "FEEGATE_DB")]
        db: String,
    },
}

#[derive(Subcommand)]
enum SimCmd {
    /// Serve simulated meters until Ctrl-C; prints each meter's addresses.
    Serve {
        #[arg(long, default_value_t = 4)]
        meters: usize,
        #[arg(long, default_value_t = 4)]
        meters_per_gateway: u8,
        /// The simulated clock stands at 00:00 of this date (after one simulated day).
        #[arg(long, default_value = "2013-01-02")]
        date: NaiveDate,
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Read every simulated meter's daily frozen reading once, gateways in parallel.
    Collect {
        #[arg(long, default_value_t = 10_000)]
        meters: usize,
        #[arg(long, default_value_t = 100)]
        gateways: usize,
        /// Simulated device latency per reply, ms.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        /// modbus, dlt645 (serial gateways) or qgdw376 (1376.1 terminals forwarding DL/T 645).
        #[arg(long, default_value = "modbus")]
        protocol: String,
        /// Per-request reply timeout, ms.
        #[arg(long, default_value_t = 250)]
        timeout_ms: u64,
        /// Repetitions after a timeout.
        #[arg(long, default_value_t = 1)]
        retries: u32,
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// ns per decision per policy kind (Wasm single, batched, native) and hot-swap latency.
    Policy {
        /// Recorded decisions timed per kind.
        #[arg(long, default_value_t = 2000)]
        decisions: usize,
        /// Meters of the simulated county that records the inputs.
        #[arg(long, default_value_t = 60)]
        meters: usize,
        /// Days of the simulated county (enough for arrears and cutoff decisions).
        #[arg(long, default_value_t = 45)]
        days: u32,
        /// Registry watcher poll period, ms.
        #[arg(long, default_value_t = 10)]
        poll_ms: u64,
        #[command(flatten)]
        inputs: CountyInputs,
        #[arg(long)]
        json: bool,
    },
    /// Balance queries over the HTTP API (`GET /api/v1/accounts/{id}/balance`) from
    /// concurrent keep-alive connections, with an API token: requests/s, p50/p99/max
    /// latency, errors. Build with --release for real figures.
    Api {
        /// Accounts seeded (queries pick one at random each time).
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Timed seconds (after 1 s of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Database URL (must hold no accounts); default a fresh SQLite file.
        #[arg(long)]
        db: Option<String>,
        /// Daily consumption data (Low Carbon London, 100 households, 2013).
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write N accounts with readings that the morning of --date settles (the day
    /// before's consumption), into an empty database; for multi-host and crash tests.
    Seed {
        #[arg(long)]
        accounts: usize,
        /// Business date whose morning job settles them (YYYY-MM-DD).
        #[arg(long)]
        date: NaiveDate,
        /// Database URL (must hold no accounts).
        #[arg(long, env = "FEEGATE_DB")]
        db: String,
        /// Daily consumption data (Low Carbon London, 100 households, 2013).
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
    },
    /// Signed payment notifications posted concurrently to the channel router on
    /// loopback: payments/s, lost/doubled (checked against the ledger), and
    /// payment-to-reconnect-command latency for disconnected accounts.
    Payments {
        /// Notifications to post (each a distinct transaction; retries come on top).
        #[arg(long, default_value_t = 10_000)]
        payments: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Accounts (simulated meters) paid into.
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        /// Of those, disconnected before the run (their payment reconnects them).
        #[arg(long, default_value_t = 50)]
        disconnected: usize,
        /// Share of notifications the channel sends twice (retries), 0..1.
        #[arg(long, default_value_t = 0.1)]
        retry_share: f64,
        /// Database URL (default: a fresh SQLite file); a PostgreSQL database must be empty.
        #[arg(long)]
        db: Option<String>,
        #[command(flatten)]
        inputs: CountyInputs,
        #[arg(long)]
        json: bool,
    },
    /// One day's settlement and warnings for N accounts through the Wasm components,
    /// against a bare baseline writing the same ledger rows.
    Settle {
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Database URL (default: fresh SQLite files in a temporary directory). A
        /// `sqlite://` URL names a new file, kept afterwards for inspection (the baseline
        /// runs in a temporary one). A PostgreSQL URL must name an empty database; the baseline then runs in
        /// `<database>_baseline`, created beside it and dropped (needs CREATEDB).
        #[arg(long)]
        db: Option<String>,
        #[command(flatten)]
        inputs: CountyInputs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One-shot commands behave like other Unix tools when their reader goes away
    // (`feegate policy diff … | head`): they end quietly instead of panicking on a
    // broken pipe. Long-running servers keep Rust's default (the signal ignored, a
    // write error handled where it happens).
    let long_running = matches!(cli.command, Command::Serve { .. } | Command::Sim { .. });
    #[cfg(unix)]
    if !long_running {
        // SAFETY: at the start of main, before any other thread exists; SIG_DFL is a
        // valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // `serve` logs at info in the configured format; one-shot commands only warn.
    let (json_logs, default_level) = match &cli.command {
        Command::Serve { config } => {
            match feegate::serve::config::ServeConfig::load(config.as_deref(), std::env::vars()) {
                Ok(c) => (
                    c.server.log_format == feegate::serve::config::LogFormat::Json,
                    "info",
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        _ => (false, "warn"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FEEGATE_LOG")
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use feegate::fieldtools as ft;
    match cli.command {
        Command::Serve { config } => {
            let config =
                feegate::serve::config::ServeConfig::load(config.as_deref(), std::env::vars())?;
            feegate::serve::run(config, shutdown_signal()).await
        }
        Command::Dlt645 { cmd } => {
            let out = match cmd {
                Dlt645Cmd::Decode { hex } => ft::dlt645_decode(&hex)?,
                Dlt645Cmd::Encode {
                    what: EncodeCmd::Read { address, di },
                } => ft::dlt645_encode_read(&address, &di)?,
                Dlt645Cmd::Encode {
                    what:
                        EncodeCmd::Relay {
                            address,
                            command,
                            valid_until,
                            password,
                            operator,
                        },
                } => {
                    ft::dlt645_encode_relay(&address, &command, valid_until, &password, &operator)?
                }
                Dlt645Cmd::BroadcastTime {
                    link,
                    time,
                    check,
                    timeout_ms,
                } => {
                    ft::dlt645_broadcast_time(
                        &link,
                        time.unwrap_or_else(county_now),
                        check.as_deref(),
                        std::time::Duration::from_millis(timeout_ms),
                    )
                    .await?
                }
            };
            println!("{out}");
            Ok(())
        }
        Command::Q376 {
            cmd: Q376Cmd::Decode { hex },
        } => {
            println!("{}", ft::q376_decode(&hex)?);
            Ok(())
        }
        Command::Modbus {
            cmd: ModbusCmd::DecodeRtu { hex, map, register },
        } => {
            println!(
                "{}",
                ft::rtu_decode(&hex, map.as_deref(), register.as_deref())?
            );
            Ok(())
        }
        Command::Meter {
            cmd:
                MeterCmd::Replace {
                    account,
                    new_meter,
                    old_final,
                    new_start,
                    at,
                    who,
                    new_address,
                    new_unit,
                    db,
                },
        } => {
            let db = feegate::db::Db::open(&db).await?;
            let order = feegate::replacement::ReplacementOrder {
                account_id: account.clone(),
                new_meter_id: new_meter.clone(),
                old_final_kwh: old_final,
                new_start_kwh: new_start,
                replaced_at: at,
                replaced_by: who,
                new_address,
                new_unit,
            };
            match feegate::replacement::record(&db, &order, county_now()).await? {
                feegate::replacement::Recorded::New { old_meter_id } => println!(
                    "recorded: account {account} moved from meter {old_meter_id} to {new_meter}; \
                     if its span was held for the backwards register, check it and run \
                     `feegate holds release --account {account} --stage reading`"
                ),
                feegate::replacement::Recorded::AlreadyRecorded { old_meter_id } => println!(
                    "already recorded: account {account}, meter {old_meter_id} -> {new_meter}; nothing changed"
                ),
            }
            Ok(())
        }
        Command::Meter {
            cmd: MeterCmd::Read { target },
        } => {
            let t = target.target()?;
            let timeout = std::time::Duration::from_millis(target.timeout_ms);
            println!("{}", ft::meter_read(&t, timeout).await?);
            Ok(())
        }
        Command::Meter {
            cmd:
                MeterCmd::Relay {
                    target,
                    command,
                    valid_until,
                    password,
                    operator,
                    requires_security,
                },
        } => {
            let t = target.target()?;
            let timeout = std::time::Duration::from_millis(target.timeout_ms);
            println!(
                "{}",
                ft::meter_relay(
                    &t,
                    &command,
                    valid_until,
                    password.as_deref(),
                    operator.as_deref(),
                    requires_security,
                    timeout
                )
                .await?
            );
            Ok(())
        }
        Command::Collection {
            cmd:
                CollectionCmd::Report {
                    date,
                    db,
                    county,
                    json,
                },
        } => {
            // Only reads: a mistyped path is an error, not a new empty database.
            let db = feegate::db::Db::open_existing(&db).await?;
            let rows = feegate::readings::station_report(&db, county.as_deref(), date).await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(s, r)| {
                        serde_json::json!({
                            "station": s, "meters": r.meters, "read_ok": r.read_ok,
                            "covered": r.covered, "attempts": r.attempts,
                            "failed_attempts": r.failed_attempts,
                            "read_success_rate": r.read_success_rate().map(|d| d.to_string()),
                            "coverage": r.coverage().map(|d| d.to_string()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("collection report for {date}");
                println!(
                    "  {:<16} {:>7} {:>8} {:>12} {:>8} {:>10} {:>8}",
                    "station", "meters", "read ok", "success", "covered", "coverage", "attempts"
                );
                let pct = |d: Option<rust_decimal::Decimal>| {
                    d.map(|d| format!("{}%", (d * rust_decimal::Decimal::ONE_HUNDRED).round_dp(2)))
                        .unwrap_or_else(|| "-".into())
                };
                for (s, r) in &rows {
                    println!(
                        "  {:<16} {:>7} {:>8} {:>12} {:>8} {:>10} {:>8}",
                        s,
                        r.meters,
                        r.read_ok,
                        pct(r.read_success_rate()),
                        r.covered,
                        pct(r.coverage()),
                        format!("{}/{}", r.attempts - r.failed_attempts, r.attempts)
                    );
                }
            }
            Ok(())
        }
        Command::Collection {
            cmd: CollectionCmd::Import { file, db },
        } => {
            let rows = feegate::readings::read_file(&file)?;
            anyhow::ensure!(
                !rows.is_empty(),
                "{}: no readings in the file (expected a header meter_id,reading_date,register_kwh and at least one row, or a JSON array of such objects); nothing imported",
                file.display()
            );
            let db = feegate::db::Db::open(&db).await?;
            let r = feegate::readings::import_readings(&db, &rows, county_now()).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if !r.rejected.is_empty() || !r.conflicts.is_empty() {
                // The rows that were fine are stored; the others need a person (exit 3,
                // as `reconcile` does when something did not match).
                eprintln!(
                    "{} row(s) rejected and {} in conflict with a stored reading: see the report above",
                    r.rejected.len(),
                    r.conflicts.len()
                );
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Sim {
            cmd:
                SimCmd::Serve {
                    meters,
                    meters_per_gateway,
                    date,
                    data,
                },
        } => {
            anyhow::ensure!(
                (1..=247).contains(&meters_per_gateway),
                "--meters-per-gateway must be 1..=247"
            );
            let fleet =
                std::sync::Arc::new(feegate_meter::sim::SimFleet::from_csv(&data, meters, 2013)?);
            let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight");
            fleet.advance_to(midnight(date.pred_opt().context("--date too early")?))?;
            fleet.advance_to(midnight(date))?;
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
            let modbus = fleet.serve(ip, meters_per_gateway).await?;
            let dlt = fleet
                .serve_dlt645(ip, usize::from(meters_per_gateway))
                .await?;
            println!(
                "simulated meters at {date} 00:00 (DL/T 645 relay password 02:123456); Ctrl-C to stop"
            );
            println!(
                "  {:>5}  {:<22} {:>4}  {:<22} dlt645 address",
                "meter", "modbus gateway", "unit", "dlt645 gateway"
            );
            for (i, (m, d)) in modbus.iter().zip(&dlt).enumerate() {
                let feegate_meter::dlt645_client::Link::Gateway(g) = d.link else {
                    continue;
                };
                println!(
                    "  {i:>5}  {:<22} {:>4}  {:<22} {}",
                    m.gateway.to_string(),
                    m.unit,
                    g.to_string(),
                    d.address
                );
            }
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Collect {
                    meters,
                    gateways,
                    latency_ms,
                    protocol,
                    timeout_ms,
                    retries,
                    data,
                    json,
                },
        } => {
            let r = ft::bench_collect(
                &data,
                meters,
                gateways,
                std::time::Duration::from_millis(latency_ms),
                &protocol,
                std::time::Duration::from_millis(timeout_ms),
                retries,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "bench collect ({}): {} meters behind {} gateways, {} ms simulated device latency",
                    r.protocol, r.meters, r.gateways, r.latency_ms
                );
                println!(
                    "  {} reads in {:.2} s: {:.0} reads/s; read success rate {} ({} ok, {} failed)",
                    r.reads_ok + r.reads_failed,
                    r.seconds,
                    r.reads_per_second,
                    r.read_success_rate,
                    r.reads_ok,
                    r.reads_failed
                );
                println!(
                    "  {} meters are silent by design (no household data for the day); timeout {} ms, {} retr{}",
                    r.meters_silent_by_data,
                    r.timeout_ms,
                    r.retries,
                    if r.retries == 1 { "y" } else { "ies" }
                );
            }
            Ok(())
        }
        Command::Policy(args) => {
            if !feegate::cli::run_policy(args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Api {
                    accounts,
                    connections,
                    seconds,
                    db,
                    data,
                    json,
                },
        } => {
            let f = feegate::bench::api::api(&feegate::bench::api::ApiBenchOptions {
                accounts,
                connections,
                seconds,
                db_url: db,
                data,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                feegate::bench::api::print(&f);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Seed {
                    accounts,
                    date,
                    db,
                    data,
                },
        } => {
            anyhow::ensure!(accounts > 0, "--accounts must be at least 1");
            let profiles = feegate_meter::profile::Profiles::load(&data)
                .with_context(|| format!("loading {}", data.display()))?;
            let db = feegate::db::Db::open(&db).await?;
            let consumption_day = date.pred_opt().context("--date out of range")?;
            feegate::bench::settle::seed_accounts(&db, accounts, &profiles, consumption_day)
                .await
                .context("seeding accounts (the database must hold no accounts)")?;
            println!("seeded {accounts} accounts; the morning of {date} settles {consumption_day}");
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Settle {
                    accounts,
                    db,
                    inputs:
                        CountyInputs {
                            data,
                            policy:
                                PolicyInputs {
                                    policy_set,
                                    components,
                                },
                        },
                },
        } => {
            anyhow::ensure!(accounts > 0, "--accounts must be at least 1");
            let f = feegate::bench::settle::settle(
                accounts,
                db.as_deref(),
                &data,
                &policy_set,
                &components,
            )
            .await?;
            println!("bench settle: {} accounts", f.accounts);
            println!(
                "  settlement  {:>9.2} s  {:>10.0} accounts/s  (tariff component, decision log, ledger, balance)",
                f.settle_seconds, f.settle_accounts_per_second
            );
            println!(
                "  warnings    {:>9.2} s  (warning + notice components, SMS outbox)",
                f.warning_seconds
            );
            println!(
                "  baseline    {:>9.2} s  {:>10.0} accounts/s  (the same ledger rows and balance moves, bare SQL)",
                f.baseline_seconds, f.baseline_accounts_per_second
            );
            println!("  ratio       {:>9.2} × baseline", f.ratio_to_baseline);
            println!("  peak memory {:>9.1} MiB", f.peak_rss_mib);
            println!("{}", serde_json::to_string(&f)?);
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Policy {
                    decisions,
                    meters,
                    days,
                    poll_ms,
                    inputs:
                        CountyInputs {
                            data,
                            policy:
                                PolicyInputs {
                                    policy_set,
                                    components,
                                },
                        },
                    json,
                },
        } => {
            let opts = feegate::bench::policy::BenchOptions {
                demo: DemoOptions {
                    meters,
                    days,
                    start: NaiveDate::from_ymd_opt(2013, 1, 1).expect("valid date"),
                    seed: 2013,
                    db_url: None,
                    data,
                    policy_set,
                    components,
                    meters_per_gateway: 16,
                    read_timeout: std::time::Duration::from_millis(100),
                    protocol_mix: demo::ProtocolMix::default(),
                    progress: false,
                },
                decisions,
                poll: std::time::Duration::from_millis(poll_ms),
            };
            let report = feegate::bench::policy::policy(&opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                feegate::bench::policy::print(&report);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Payments {
                    payments,
                    concurrency,
                    accounts,
                    disconnected,
                    retry_share,
                    db,
                    inputs:
                        CountyInputs {
                            data,
                            policy:
                                PolicyInputs {
                                    policy_set,
                                    components,
                                },
                        },
                    json,
                },
        } => {
            let opts = feegate::bench::payments::BenchOptions {
                payments,
                concurrency,
                accounts,
                disconnected,
                retry_share,
                db_url: db,
                data,
                policy_set,
                components,
            };
            let f = feegate::bench::payments::payments(&opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                feegate::bench::payments::print(&f);
            }
            anyhow::ensure!(
                f.lost == 0 && f.doubled == 0 && f.unbalanced_accounts == 0,
                "payments lost or doubled, or the ledger does not balance"
            );
            Ok(())
        }
        Command::Reconcile {
            channel,
            channels,
            statement,
            date,
            db,
            json,
        } => {
            // Up front: an unknown channel opens no database and writes nothing.
            let configured = feegate::channels::config::ChannelsConfig::channel_names(&channels)?;
            feegate::reconcile::check_channel(&channel, &configured)?;
            let db = feegate::db::Db::open(&db).await?;
            let txns = feegate::reconcile::read_statement(&statement)?;
            let clock = feegate::clock::SystemClock {
                offset: chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset"),
            };
            let report = feegate::reconcile::reconcile(
                &db,
                &channel,
                date,
                &txns,
                feegate::clock::Clock::now(&clock),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", feegate::reconcile::render(&report));
            }
            if report.count(feegate::reconcile::Finding::Matched) < report.items.len() {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Audit(args) => {
            if !feegate::cli::run_audit(args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Holds { cmd } => holds(cmd).await,
        Command::Mobile { cmd } => mobile(cmd).await,
        Command::User(args) => feegate::auth::cli::run_user(args).await,
        Command::Token(args) => feegate::auth::cli::run_token(args).await,
        Command::Agreement { cmd } => agreement(cmd).await,
        Command::FollowUp { cmd } => follow_up(cmd).await,
        Command::CallFirst { cmd } => call_first(cmd).await,
        Command::Sms {
            cmd: SmsCmd::Segments { text },
        } => {
            let m = feegate::sms::segments::measure(&text);
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Demo {
            meters,
            days,
            start,
            seed,
            json,
            db,
            inputs:
                CountyInputs {
                    data,
                    policy:
                        PolicyInputs {
                            policy_set,
                            components,
                        },
                },
            meters_per_gateway,
            read_timeout_ms,
            protocol_mix,
        } => {
            anyhow::ensure!(meters > 0, "--meters must be at least 1");
            anyhow::ensure!(
                (1..=247).contains(&meters_per_gateway),
                "--meters-per-gateway must be 1..=247"
            );
            let opts = DemoOptions {
                meters,
                days,
                start,
                seed,
                db_url: db,
                data,
                policy_set,
                components,
                meters_per_gateway,
                read_timeout: std::time::Duration::from_millis(read_timeout_ms),
                protocol_mix,
                progress: true,
            };
            let began = Instant::now();
            let summary = demo::run(&opts).await.context("demo failed")?;
            let elapsed = began.elapsed();
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary);
            }
            eprintln!(
                "simulated {days} days for {meters} meters in {:.1} s",
                elapsed.as_secs_f64()
            );
            if !summary.ledger_balanced || summary.cutoffs_in_protected_windows > 0 {
                anyhow::bail!(
                    "an invariant does not hold: ledger_balanced={}, cutoffs_in_protected_windows={}",
                    summary.ledger_balanced,
                    summary.cutoffs_in_protected_windows
                );
            }
            Ok(())
        }
    }
}

fn print_summary(s: &demo::DemoSummary) {
    println!(
        "Feegate demo — Xianyou county (仙游县), {} accounts, {} days from {} (seed {})",
        s.accounts, s.days, s.start, s.seed
    );
    println!(
        "Consumption: real London households (UK Power Networks, Low Carbon London, London Datastore)"
    );
    println!();
    println!(
        "  collection   {} of {} daily frozen readings (read success rate {})",
        s.readings_ok, s.readings_expected, s.read_success_rate
    );
    println!(
        "  settlement   {} kWh charged {} yuan; payments {} yuan; balances total {} yuan",
        s.kwh_total, s.charged_yuan, s.paid_yuan, s.balance_total_yuan
    );
    println!(
        "  ledger       {}",
        if s.ledger_balanced {
            "balanced: every balance equals the sum of its entries"
        } else {
            "UNBALANCED"
        }
    );
    println!(
        "  warnings     {} delivered (counted on a delivered receipt); {} SMS sent in all, {} to second contacts, {} given up",
        s.warnings, s.sms_sent, s.sms_second_contact, s.sms_given_up
    );
    println!(
        "  work orders  {} opened ({} disconnection approvals); {} approved, {} held by staff",
        s.work_orders_opened, s.approval_orders_opened, s.approvals, s.holds_by_staff
    );
    println!(
        "  relays       {} disconnections, {} reconnections (each confirmed by a fresh status read); {} still off at the end",
        s.disconnections, s.reconnections, s.accounts_disconnected_at_end
    );
    println!(
        "  habit        {} customers moved to automatic disconnection by their prepaying habit",
        s.customers_moved_to_automatic
    );
    println!(
        "  policies     {} decisions, {} failures, {} accounts held",
        s.policy_decisions, s.policy_failures, s.held_accounts
    );
    println!(
        "  safety floor {} trips refused; {} cutoffs in protected windows",
        s.floor_refusals, s.cutoffs_in_protected_windows
    );
}

#[derive(Subcommand)]
enum HoldsCmd {
    /// Open holds: account, day, stage and reason.
    List {
        #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
        db: String,
    },
    /// Release an account's open holds at a stage after looking at them (e.g. a bad
    /// reading corrected); the next settlement then covers the whole span.
    Release {
        #[arg(long)]
        account: String,
        /// reading | settlement | warning | notice | cutoff | reconnection
        #[arg(long, default_value = "reading")]
        stage: String,
        /// Who looked at it.
        #[arg(long, env = "FEEGATE_WHO")]
        who: String,
        #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
        db: String,
    },
}

/// Who records a change, what they did, and the database.
#[derive(clap::Args)]
struct Recorded {
    /// Who did it; recorded on the work order.
    #[arg(long, env = "FEEGATE_WHO")]
    who: String,
    /// What was done or how it was confirmed (e.g. "customer called 95598, ID checked").
    #[arg(long)]
    note: String,
    #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
    db: String,
}

#[derive(Subcommand)]
enum AgreementCmd {
    /// A new agreement row with the changes (the rest carried over); the account points at
    /// it. A mobile that differs from the master data opens a data-maintenance work order
    /// and holds automatic disconnection; one that matches closes the open one.
    Change {
        #[arg(long)]
        account: String,
        /// The agreement's mobile number (11 digits).
        #[arg(long)]
        mobile: Option<String>,
        /// A second contact who also gets warnings and disconnection notices.
        #[arg(long, conflicts_with = "no_second_mobile")]
        second_mobile: Option<String>,
        /// Remove the second contact.
        #[arg(long)]
        no_second_mobile: bool,
        /// Alarm threshold (预警值) in yuan, e.g. 50.00.
        #[arg(long)]
        alarm_threshold_yuan: Option<String>,
        /// Who changed it (recorded on work orders it closes).
        #[arg(long, env = "FEEGATE_WHO")]
        who: String,
        #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
        db: String,
    },
}

#[derive(Subcommand)]
enum MobileCmd {
    /// A person confirmed the customer's number: the master data takes it, the agreement
    /// is re-signed with it if it differs, the mismatch work order is closed, and
    /// automatic disconnection is possible again.
    Resolve {
        #[arg(long)]
        account: String,
        /// The confirmed mobile number (11 digits).
        #[arg(long)]
        mobile: String,
        #[command(flatten)]
        by: Recorded,
    },
}

#[derive(Subcommand)]
enum FollowUpCmd {
    /// The meter reader reached the customer: the safety floor then accepts the visit in
    /// place of an undelivered arrears SMS (12 h of notice counted from now).
    Done {
        /// The offline-follow-up work order.
        #[arg(long)]
        work_order: i64,
        #[command(flatten)]
        by: Recorded,
    },
}

#[derive(Subcommand)]
enum CallFirstCmd {
    /// A person called the customer: the order becomes done and the relay is closed
    /// (a direct-close command, issued by the running host's relays job within a
    /// minute). Refused, the order left open, while the balance is below zero (the
    /// customer must pay first), the relay is not open or a relay command is in flight.
    Done {
        /// The call-before-reconnection work order.
        #[arg(long)]
        work_order: i64,
        /// Who called the customer; recorded on the work order.
        #[arg(long, env = "FEEGATE_WHO")]
        who: String,
        /// What was agreed on the call (e.g. "customer at home, reconnect now").
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, env = "FEEGATE_DB", default_value = "sqlite://feegate.db")]
        db: String,
    },
}

#[derive(Subcommand)]
enum SmsCmd {
    /// Encoding, units and segments of an SMS body (3GPP TS 23.038 / 23.040), as JSON.
    Segments { text: String },
}

/// A register reading on the command line (`meter replace --old-final/--new-start`):
/// plain digits, 0 to 999999.99 kWh, at most two decimals
/// ([`feegate::money::parse_register_kwh`]); `replacement::record` checks again.
fn parse_kwh(s: &str) -> Result<rust_decimal::Decimal, String> {
    feegate::money::parse_register_kwh(s).map(|(kwh, _)| kwh)
}

/// "Now" for commands a person runs: the system clock in China Standard Time.
fn county_now() -> chrono::NaiveDateTime {
    let cst = feegate::clock::SystemClock {
        offset: chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset"),
    };
    feegate::clock::Clock::now(&cst)
}

async fn agreement(cmd: AgreementCmd) -> anyhow::Result<()> {
    let AgreementCmd::Change {
        account,
        mobile,
        second_mobile,
        no_second_mobile,
        alarm_threshold_yuan,
        who,
        db,
    } = cmd;
    let alarm_threshold_fen = alarm_threshold_yuan
        .map(|text| {
            let y: rust_decimal::Decimal = text.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--alarm-threshold-yuan {text:?} is not an amount in yuan like 50.00"
                )
            })?;
            let fen = feegate::money::yuan_to_fen(y)
                .map_err(|e| anyhow::anyhow!("--alarm-threshold-yuan: {e}"))?;
            anyhow::ensure!(fen >= 0, "--alarm-threshold-yuan {y} is negative");
            Ok(fen)
        })
        .transpose()?;
    let change = feegate::onboarding::AgreementChange {
        alarm_threshold_fen,
        mobile,
        second_mobile: if no_second_mobile {
            Some(None)
        } else {
            second_mobile.map(Some)
        },
        keep_power: None,
    };
    let db = feegate::db::Db::open(&db).await?;
    let (id, check) =
        feegate::onboarding::change_agreement(&db, &account, &change, &who, county_now()).await?;
    match check {
        feegate::onboarding::MobileCheck::Matches => {
            println!("{account}: agreement #{id} signed; the mobile matches the master data")
        }
        feegate::onboarding::MobileCheck::Mismatch { work_order_id } => println!(
            "{account}: agreement #{id} signed; the mobile differs from the master data: data-maintenance work order #{work_order_id}, automatic disconnection held until `feegate mobile resolve`"
        ),
    }
    Ok(())
}

async fn mobile(cmd: MobileCmd) -> anyhow::Result<()> {
    let MobileCmd::Resolve {
        account,
        mobile,
        by: Recorded { who, note, db },
    } = cmd;
    let db = feegate::db::Db::open(&db).await?;
    let check = feegate::onboarding::resolve_mobile_mismatch(
        &db,
        &account,
        &mobile,
        &who,
        &note,
        county_now(),
    )
    .await?;
    match check {
        feegate::onboarding::MobileCheck::Matches => {
            println!(
                "{account}: agreement and master data now agree on {mobile}; automatic disconnection no longer held"
            );
            Ok(())
        }
        feegate::onboarding::MobileCheck::Mismatch { work_order_id } => {
            anyhow::bail!("{account}: still a mismatch (work order #{work_order_id})")
        }
    }
}

async fn follow_up(cmd: FollowUpCmd) -> anyhow::Result<()> {
    let FollowUpCmd::Done {
        work_order,
        by: Recorded { who, note, db },
    } = cmd;
    let db = feegate::db::Db::open(&db).await?;
    let done =
        feegate::warning::record_follow_up_done(&db, work_order, &who, &note, county_now()).await?;
    anyhow::ensure!(
        done,
        "work order #{work_order} is not an open offline follow-up; check the number"
    );
    println!("offline follow-up #{work_order} recorded done by {who}");
    Ok(())
}

async fn call_first(cmd: CallFirstCmd) -> anyhow::Result<()> {
    let CallFirstCmd::Done {
        work_order,
        who,
        note,
        db,
    } = cmd;
    anyhow::ensure!(
        !who.trim().is_empty(),
        "say who called the customer with --who NAME (or FEEGATE_WHO); it is recorded on the order"
    );
    let db = feegate::db::Db::open(&db).await?;
    let done = feegate::payment::complete_call_first(
        &db,
        work_order,
        &who,
        &note,
        county_now(),
        &feegate::config::RelayConfig::default(),
    )
    .await?;
    let message = done.message(work_order);
    anyhow::ensure!(
        matches!(
            done,
            feegate::payment::CallFirstCompletion::Reconnecting { .. }
        ),
        "{message}"
    );
    println!("{message}");
    Ok(())
}

async fn holds(cmd: HoldsCmd) -> anyhow::Result<()> {
    use sqlx::Row;
    match cmd {
        HoldsCmd::List { db } => {
            let db = feegate::db::Db::open_existing(&db).await?;
            let rows = sqlx::query("SELECT account_id, business_date, stage, reason FROM holds WHERE released_at IS NULL ORDER BY account_id, business_date")
                .fetch_all(&db.pool)
                .await?;
            for r in &rows {
                println!(
                    "{}\t{}\t{}\t{}",
                    r.try_get::<String, _>(0)?,
                    r.try_get::<String, _>(1)?,
                    r.try_get::<String, _>(2)?,
                    r.try_get::<String, _>(3)?
                );
            }
            eprintln!("{} open hold(s)", rows.len());
            Ok(())
        }
        HoldsCmd::Release {
            account,
            stage,
            who,
            db,
        } => {
            let db = feegate::db::Db::open(&db).await?;
            let mut conn = db.pool.acquire().await?;
            let now = feegate::db::ts(county_now());
            let n = feegate::decision_log::release_holds(&mut conn, &account, &stage, &who, &now)
                .await?;
            anyhow::ensure!(
                n > 0,
                "account {account} has no open hold at stage {stage:?}; `feegate holds list` shows the open ones"
            );
            println!("released {n} hold(s) of {account} at stage {stage}");
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
