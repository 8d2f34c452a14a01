//! `feegate bench policy`: what running policies as WebAssembly costs, and how fast an
//! activation takes effect in a running host. Figures are printed, never asserted.
//!
//! Method:
//! 1. A simulated county (the demo) runs into a temporary SQLite database, so the
//!    inputs are real recorded decision inputs of every kind.
//! 2. **Per kind, single**: each recorded input runs the way the host decides — a fresh
//!    store and instance per decision ([`PolicyEngine::price`] etc.). ns per decision =
//!    wall time / decisions, after one warm-up pass.
//! 3. **Tariff, batched**: the same inputs in one store and instance
//!    ([`PolicyEngine::price_batch`]): the cost without per-decision instantiation.
//! 4. **Tariff, native**: `policy_tariff_step::price`, the component's own logic
//!    compiled into the host (same source, same `rust_decimal`), on the same inputs.
//! 5. **Activation under load**: a thread prices decisions back to back, each on the
//!    county's current snapshot; a [`registry::Watcher`] polls every `poll` ms; the time
//!    from `registry::activate` returning to the first decision priced by the new
//!    version is the swap latency. Every decision during the swap must succeed.

use crate::audit::{self, Filter};
use crate::clock::SimClock;
use crate::db::Db;
use crate::demo::{self, DemoOptions};
use crate::policy::bindings::{TariffInput, TariffOutput};
use crate::policy::{PolicyEngine, PolicyKind};
use crate::registry::{self, ActivateRequest, PublishRequest};
use anyhow::Context;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Knobs of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The simulated county whose decisions are the inputs.
    pub demo: DemoOptions,
    /// Recorded inputs timed per kind (fewer if the log has fewer).
    pub decisions: usize,
    /// Watcher poll period for the activation measurement.
    pub poll: Duration,
}

/// One timing line.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub what: String,
    pub decisions: usize,
    pub ns_per_decision: f64,
}

/// All figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub timings: Vec<Timing>,
    /// Batched Wasm tariff ns ÷ native tariff ns.
    pub tariff_batched_over_native: f64,
    /// Single (production) Wasm tariff ns ÷ native tariff ns.
    pub tariff_single_over_native: f64,
    pub activation_poll_ms: u64,
    /// From `policy activate` to the first decision on the new version, ms.
    pub activation_latency_ms: f64,
    /// Decisions made while the swap was under way, and how many of them failed.
    pub decisions_during_swap: u64,
    pub failed_decisions_during_swap: u64,
}

fn time<F: FnMut()>(n: usize, mut f: F) -> f64 {
    f(); // warm-up (caches, lazy init)
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}

/// The plugin's own input type, from the host's (same WIT record, two bindings).
fn native_input(i: &TariffInput) -> policy_tariff_step::TariffInput {
    use policy_tariff_step as n;
    let d = |x: &crate::policy::bindings::Decimal| n::WitDecimal {
        mantissa: x.mantissa,
        scale: x.scale,
    };
    let date = |x: &crate::policy::bindings::Date| n::Date {
        year: x.year,
        month: x.month,
        day: x.day,
    };
    use crate::policy::bindings::{CustomerClass as C, TouBand as B};
    n::TariffInput {
        account_id: i.account_id.clone(),
        customer_class: match i.customer_class {
            C::LowVoltageResidential => n::CustomerClass::LowVoltageResidential,
            C::LowVoltageCommercial => n::CustomerClass::LowVoltageCommercial,
            C::HighVoltage => n::CustomerClass::HighVoltage,
        },
        period_first: date(&i.period_first),
        period_last: date(&i.period_last),
        kwh: d(&i.kwh),
        year_to_date_kwh: d(&i.year_to_date_kwh),
        month_to_date_kwh: d(&i.month_to_date_kwh),
        tou_split: i
            .tou_split
            .iter()
            .map(|b| n::BandUsage {
                band: match b.band {
                    B::Sharp => n::TouBand::Sharp,
                    B::Peak => n::TouBand::Peak,
                    B::Flat => n::TouBand::Flat,
                    B::Valley => n::TouBand::Valley,
                },
                kwh: d(&b.kwh),
            })
            .collect(),
        time_of_use_elected: i.time_of_use_elected,
        parameters: i.parameters.clone(),
    }
}

/// Runs the benchmark (takes a minute or so in a release build).
pub async fn policy(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir().context("temporary directory for the bench database")?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut demo_opts = opts.demo.clone();
    demo_opts.db_url = Some(url.clone());
    demo_opts.progress = false;
    demo::run(&demo_opts)
        .await
        .context("the simulated county failed")?;
    let db = Db::open(&url).await?;
    let engine = PolicyEngine::new(Default::default())?;

    let mut timings = Vec::new();
    let mut tariff_inputs: Vec<TariffInput> = Vec::new();
    let mut tariff_sha = String::new();
    for log_kind in ["tariff", "warning", "notice", "cutoff", "reconnection"] {
        let rows = audit::log(
            &db,
            &Filter {
                kind: log_kind.into(),
                limit: opts.decisions as i64,
                ..Filter::default()
            },
        )
        .await?;
        if rows.is_empty() {
            continue;
        }
        let kind = audit::component_kind(log_kind).expect("known kind");
        let sha = rows[0].component_sha256.clone();
        let component = engine.load(kind, &registry::component_bytes(&db, &sha).await?)?;
        let mut inputs = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = sqlx::query("SELECT input_json FROM decisions WHERE decision_id = $1")
                .bind(r.decision_id)
                .fetch_one(&db.pool)
                .await?;
            inputs.push(sqlx::Row::try_get::<String, _>(&row, 0)?);
        }
        let n = inputs.len();
        let ns = tokio::task::block_in_place(|| {
            time(n, || {
                for i in &inputs {
                    let run = audit::run_recorded(&engine, &component, log_kind, i, None)
                        .expect("recorded input parses");
                    std::hint::black_box(run.fuel_used());
                }
            })
        });
        // run_recorded includes parsing the JSON input; take that out.
        let parse_ns = time(n, || {
            for i in &inputs {
                std::hint::black_box(serde_json::from_str::<serde_json::Value>(i).ok());
            }
        });
        timings.push(Timing {
            what: format!("{log_kind}: Wasm, fresh instance per decision"),
            decisions: n,
            ns_per_decision: (ns - parse_ns).max(0.0),
        });
        if log_kind == "tariff" {
            tariff_sha = sha;
            tariff_inputs = inputs
                .iter()
                .map(|i| serde_json::from_str(i))
                .collect::<Result<_, _>>()?;
            let batched = tokio::task::block_in_place(|| {
                time(n, || {
                    let out = engine.price_batch(&component, &tariff_inputs);
                    assert!(out.iter().all(Result::is_ok), "batched pricing failed");
                    std::hint::black_box(out);
                })
            });
            timings.push(Timing {
                what: "tariff: Wasm, batched in one instance".into(),
                decisions: n,
                ns_per_decision: batched,
            });
            let native_inputs: Vec<_> = tariff_inputs.iter().map(native_input).collect();
            let native = time(n, || {
                for i in &native_inputs {
                    std::hint::black_box(policy_tariff_step::price(i).ok());
                }
            });
            timings.push(Timing {
                what: "tariff: native (same Rust logic linked into the host)".into(),
                decisions: n,
                ns_per_decision: native,
            });
            // Same results, or the comparison is meaningless.
            for (w, n) in engine
                .price_batch(&component, &tariff_inputs)
                .iter()
                .zip(&native_inputs)
            {
                let native = policy_tariff_step::price(n).map(|o| o.charge_fen).ok();
                anyhow::ensure!(
                    w.as_ref().ok().map(|o: &TariffOutput| o.charge_fen) == native,
                    "native and Wasm tariffs disagree"
                );
            }
        }
    }
    let get = |what: &str| {
        timings
            .iter()
            .find(|t| t.what.starts_with(what))
            .map(|t| t.ns_per_decision)
            .unwrap_or(f64::NAN)
    };
    let native = get("tariff: native");
    let batched_ratio = get("tariff: Wasm, batched") / native;
    let single_ratio = get("tariff: Wasm, fresh") / native;

    let (latency, during, failed) = activation_under_load(
        &db,
        &engine,
        &opts.demo,
        &tariff_sha,
        &tariff_inputs,
        opts.poll,
    )
    .await?;
    Ok(BenchReport {
        timings,
        tariff_batched_over_native: batched_ratio,
        tariff_single_over_native: single_ratio,
        activation_poll_ms: opts.poll.as_millis() as u64,
        activation_latency_ms: latency,
        decisions_during_swap: during,
        failed_decisions_during_swap: failed,
    })
}

async fn activation_under_load(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    demo: &DemoOptions,
    tariff_sha: &str,
    inputs: &[TariffInput],
    poll: Duration,
) -> anyhow::Result<(f64, u64, u64)> {
    anyhow::ensure!(
        !inputs.is_empty(),
        "no tariff decisions to load the host with"
    );
    let county = Arc::new(crate::county::County::load(
        engine,
        &demo.policy_set,
        &demo.components,
        Default::default(),
    )?);
    let now = demo.start.and_hms_opt(0, 0, 0).expect("midnight") + chrono::Duration::days(400);
    let clock = Arc::new(SimClock::new(now));
    // The candidate: the same tariff with step 1 one fen dearer, signed by a bench key.
    let key = registry::generate_key();
    registry::trust_key(
        db,
        &county.county,
        &key.verifying_key(),
        "bench",
        "bench",
        now,
    )
    .await?;
    let old_params = county
        .snapshot()
        .get(PolicyKind::Tariff)
        .parameters_json
        .clone();
    let new_params = old_params.replacen("\"0.", "\"1.", 1);
    let bytes = registry::component_bytes(db, tariff_sha).await?;
    let signature = registry::sign(&key, &bytes, &registry::canonical_parameters(&new_params)?);
    let p = registry::publish(
        db,
        engine,
        &PublishRequest {
            county: &county.county,
            kind: PolicyKind::Tariff,
            component: &bytes,
            parameters: &new_params,
            signature_hex: &signature,
            note: "bench candidate",
            now,
        },
    )
    .await?;
    let watcher = Arc::new(registry::Watcher::new(
        db.clone(),
        engine.clone(),
        county.clone(),
        clock,
    ));
    let task = watcher.clone().spawn(poll);

    let stop = Arc::new(AtomicBool::new(false));
    let decisions = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let target = registry::canonical_parameters(&new_params)?;
    let load = {
        let (county, engine, stop, decisions, failures) = (
            county.clone(),
            engine.clone(),
            stop.clone(),
            decisions.clone(),
            failures.clone(),
        );
        let inputs = inputs.to_vec();
        std::thread::spawn(move || -> Option<Instant> {
            let mut seen = None;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let snap = county.snapshot();
                let tariff = snap.get(PolicyKind::Tariff);
                let mut input = inputs[i % inputs.len()].clone();
                input.parameters = tariff.parameters_json.clone();
                let out = engine.price(&tariff.component, &input);
                decisions.fetch_add(1, Ordering::Relaxed);
                if out.outcome.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                if seen.is_none() && tariff.parameters_json == target {
                    seen = Some(Instant::now());
                    // A few more decisions on the new version, then stop.
                    for _ in 0..50 {
                        let out = engine.price(&tariff.component, &input);
                        decisions.fetch_add(1, Ordering::Relaxed);
                        if out.outcome.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    break;
                }
                i += 1;
            }
            seen
        })
    };
    // Let the load run on the old version first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = decisions.load(Ordering::Relaxed);
    registry::activate(
        db,
        engine,
        &ActivateRequest {
            county: &county.county,
            kind: PolicyKind::Tariff,
            version: &format!("#{}", p.publication_id),
            at: None,
            stage: None,
            who: "bench",
            note: "swap under load",
            now,
        },
    )
    .await?;
    let activated = Instant::now();
    let deadline = activated + Duration::from_secs(10);
    while !load.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
    task.abort();
    let seen = seen.context("the activation did not take effect within 10 s")?;
    let latency = seen.saturating_duration_since(activated).as_secs_f64() * 1000.0;
    let during = decisions.load(Ordering::Relaxed) - before;
    Ok((latency, during, failures.load(Ordering::Relaxed)))
}

/// Prints the report for people.
pub fn print(r: &BenchReport) {
    println!(
        "feegate bench policy — ns per decision (wall time / decisions, after a warm-up pass)"
    );
    for t in &r.timings {
        println!(
            "  {:<58} {:>6} decisions  {:>10.0} ns",
            t.what, t.decisions, t.ns_per_decision
        );
    }
    println!(
        "  tariff Wasm ÷ native: batched {:.2}×, fresh instance per decision {:.2}×",
        r.tariff_batched_over_native, r.tariff_single_over_native
    );
    println!(
        "activation under load: took effect {:.1} ms after `policy activate` (watcher polls every {} ms); {} decisions during the swap, {} failed",
        r.activation_latency_ms,
        r.activation_poll_ms,
        r.decisions_during_swap,
        r.failed_decisions_during_swap
    );
}
