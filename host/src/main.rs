//! `feegate`: the Feegate command line.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use feegate::demo::{self, DemoOptions};
use std::path::PathBuf;
use std::time::Instant;

/// Remote prepaid fee control (远程费控) for an electricity supply company.
#[derive(Parser)]
#[command(name = "feegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// Daily consumption data (Low Carbon London, 100 households, 2013).
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
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
        /// Meters behind each simulated serial gateway (1..=247).
        #[arg(long, default_value_t = 16)]
        meters_per_gateway: u8,
        /// Modbus reply timeout in milliseconds (the simulator is on loopback).
        #[arg(long, default_value_t = 100)]
        read_timeout_ms: u64,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
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
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
        #[arg(long, env = "FEEGATE_POLICY_SET", default_value = "policies/xianyou")]
        policy_set: PathBuf,
        #[arg(
            long,
            env = "FEEGATE_COMPONENTS",
            default_value = "target/wasm32-wasip2/plugin"
        )]
        components: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One day's settlement and warnings for N accounts through the Wasm components,
    /// against a bare baseline writing the same ledger rows.
    Settle {
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Database URL (default: fresh SQLite files in a temporary directory). A
        /// PostgreSQL URL must name an empty database (no baseline is run then).
        #[arg(long)]
        db: Option<String>,
        #[arg(
            long,
            env = "FEEGATE_DATA",
            default_value = "../shared/data/lcl_2013_daily_kwh_100hh.csv"
        )]
        data: PathBuf,
        #[arg(long, env = "FEEGATE_POLICY_SET", default_value = "policies/xianyou")]
        policy_set: PathBuf,
        #[arg(
            long,
            env = "FEEGATE_COMPONENTS",
            default_value = "target/wasm32-wasip2/plugin"
        )]
        components: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FEEGATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    match cli.command {
        Command::Policy(args) => {
            if !feegate::cli::run_policy(args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Settle {
                    accounts,
                    db,
                    data,
                    policy_set,
                    components,
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
                    data,
                    policy_set,
                    components,
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
        Command::Audit(args) => {
            if !feegate::cli::run_audit(args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Demo {
            meters,
            days,
            start,
            seed,
            json,
            db,
            data,
            policy_set,
            components,
            meters_per_gateway,
            read_timeout_ms,
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
        "  warnings     {} delivered; {} SMS sent in all",
        s.warnings, s.sms_sent
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
