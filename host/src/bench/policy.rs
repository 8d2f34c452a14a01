//! `feegate bench policy`: what running policies as WebAssembly costs, and how fast an
//! activation takes effect in a running host. Figures are printed, never asserted.
//!
//! Method:
//! 1. A simulated county (the demo) runs into a temporary SQLite database, so the
//!    inputs are real recorded decision inputs of every kind (tariff, warning, notice,
//!    cutoff and reconnection — the last two are the cutoff component's two exports).
//! 2. Every timing is wall time ÷ decisions for one pass over the inputs, after one
//!    warm-up pass; passes repeat for at least [`MIN_TIMED`] (and at least 3 times) and
//!    the fastest pass is reported, which filters out other work on a shared machine.
//! 3. **Wasm, fresh instance**: each input runs the way the host decides — a fresh store
//!    and instance per decision ([`PolicyEngine::price`] etc.).
//! 4. **Wasm, batched**: the same inputs through the same per-decision export in ONE
//!    store and instance ([`PolicyEngine::price_batch`] etc.): fuel and deadline reset
//!    per decision and every output validated as in production, but no instantiation.
//! 5. **Native**: the component's own crate linked into the host (`policy_tariff_step::price`
//!    etc.: same source, same `rust_decimal`, same parameter parsing), on the same inputs
//!    read from the same recorded JSON. Wasm and native outputs must agree, or the
//!    benchmark fails.
//! 6. **Activation under load**: a thread prices decisions back to back, each on the
//!    county's current snapshot; a [`registry::Watcher`] polls every `poll` ms; the time
//!    from calling `registry::activate` to the first decision priced by the new version is
//!    the swap latency. Every decision during the swap must succeed; failures are counted.

use crate::audit::{self, Filter};
use crate::clock::SimClock;
use crate::db::Db;
use crate::demo::{self, DemoOptions};
use crate::policy::bindings::{
    CutoffInput, NoticeInput, ReconnectionInput, TariffInput, WarningInput,
};
use crate::policy::engine::BATCH_MAX;
use crate::policy::{Invocation, PolicyEngine, PolicyKind};
use crate::registry::{self, ActivateRequest, PublishRequest};
use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Knobs of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The simulated county whose decisions are the inputs.
    pub demo: DemoOptions,
    /// Decisions timed per kind: up to this many recorded inputs, repeated in order up
    /// to this many when the county recorded fewer.
    pub decisions: usize,
    /// Watcher poll period for the activation measurement.
    pub poll: Duration,
}

/// Least wall time spent timing one variant (several passes; the fastest is kept).
pub const MIN_TIMED: Duration = Duration::from_millis(300);

/// Figures for one decision kind. Times are ns per decision.
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    /// `tariff`, `warning`, `notice`, `cutoff` or `reconnection`.
    pub kind: String,
    /// Decisions per timed pass: the recorded inputs, repeated in order up to
    /// `--decisions` when the county recorded fewer (so that the one instantiation of a
    /// batch is spread as thinly for every kind).
    pub decisions: usize,
    /// Distinct recorded inputs among them.
    pub recorded: usize,
    /// Wasm, a fresh store and instance per decision (how the host decides).
    pub wasm_fresh_ns: f64,
    /// Wasm, one store and instance for all the inputs.
    pub wasm_batched_ns: f64,
    /// The same Rust logic linked natively into the host.
    pub native_ns: f64,
    /// `wasm_batched_ns ÷ native_ns`.
    pub batched_over_native: f64,
    /// `wasm_fresh_ns ÷ native_ns`.
    pub fresh_over_native: f64,
    /// Mean fuel (≈ Wasm instructions) per decision in a fresh instance.
    pub fuel_fresh: u64,
    /// Mean fuel per decision in the batch (parameters parsed once per instance).
    pub fuel_batched: u64,
}

/// One kind decided many inputs per call ([`PolicyEngine::price_many`],
/// [`PolicyEngine::assess_many`]), the way the daily job decides with a contract 1.1
/// component.
#[derive(Debug, Clone, Serialize)]
pub struct BatchCallFigures {
    /// `tariff` or `warning`.
    pub kind: String,
    /// Inputs per batch call, at most ([`BATCH_MAX`]).
    pub chunk: usize,
    /// ns per decision.
    pub ns: f64,
    /// `ns ÷` the kind's `native_ns`.
    pub over_native: f64,
    /// Mean fuel per decision (a call's fuel shared over its periods).
    pub fuel: u64,
}

/// The hot swap under load.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationFigures {
    /// Watcher poll period, ms.
    pub poll_ms: u64,
    /// How long `registry::activate` itself took, ms.
    pub activate_call_ms: f64,
    /// From calling `registry::activate` to the first decision on the new version, ms.
    pub latency_ms: f64,
    /// Decisions made from the activation call until the load stopped (a few dozen after
    /// the swap), and how many of them failed.
    pub decisions_during_swap: u64,
    pub failed_decisions_during_swap: u64,
}

/// All figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `dev` or `release` (from `debug_assertions`), so a figure is never read without it.
    pub profile: &'static str,
    pub kinds: Vec<KindFigures>,
    /// Where the batched tariff's time goes beyond native.
    pub tariff_breakdown: TariffBreakdown,
    /// The kinds whose component decides many inputs per call (contract 1.1), the way
    /// the daily job decides them.
    pub batch_calls: Vec<BatchCallFigures>,
    pub activation: ActivationFigures,
}

/// The batched tariff taken apart (ns per decision, same recorded inputs, same component):
/// `KindFigures::wasm_batched_ns` is the host's path; `bare_metered_ns` calls the export on
/// a plain wasmtime engine with fuel and epoch interruption on but none of the host's
/// pooling, refills or output checks; `bare_unmetered_ns` is the same with fuel and epochs
/// off — what the component costs as WebAssembly alone, which production never runs
/// (a runaway component could not be stopped).
#[derive(Debug, Clone, Serialize)]
pub struct TariffBreakdown {
    pub bare_metered_ns: f64,
    pub bare_unmetered_ns: f64,
    /// `bare_unmetered_ns ÷` the tariff's `native_ns`.
    pub bare_unmetered_over_native: f64,
}

/// ns per item of the fastest timed pass of `pass` over `n` items (see the module doc).
fn time<F: FnMut()>(n: usize, mut pass: F) -> f64 {
    pass(); // warm-up (caches, lazy init)
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut passes = 0;
    while passes < 3 || started.elapsed() < MIN_TIMED {
        let t = Instant::now();
        pass();
        best = best.min(t.elapsed());
        passes += 1;
    }
    best.as_nanos() as f64 / n.max(1) as f64
}

/// Times one kind three ways on the same recorded inputs and checks that the Wasm and
/// native outputs agree.
fn measure<I, O, N, NO, NE>(
    kind: &str,
    recorded: &[String],
    decisions: usize,
    fresh: impl Fn(&I) -> Invocation<O>,
    batched: impl Fn(&[I]) -> Vec<Invocation<O>>,
    native: impl Fn(&N) -> Result<NO, NE>,
) -> anyhow::Result<KindFigures>
where
    I: DeserializeOwned,
    O: Serialize,
    N: DeserializeOwned,
    NO: Serialize,
{
    let repeated = || recorded.iter().cycle().take(decisions.max(recorded.len()));
    let inputs: Vec<I> = repeated()
        .map(|json| serde_json::from_str(json))
        .collect::<Result<_, _>>()?;
    let native_inputs: Vec<N> = repeated()
        .map(|json| serde_json::from_str(json))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{kind}: the plugin crate cannot read a recorded input"))?;
    let n = inputs.len();

    let fuel: u64 = inputs.iter().map(|i| fresh(i).fuel_used).sum();
    let wasm_fresh_ns = time(n, || {
        for i in &inputs {
            std::hint::black_box(fresh(i).outcome.is_ok());
        }
    });
    let wasm_batched_ns = time(n, || {
        std::hint::black_box(batched(&inputs));
    });
    let native_ns = time(n, || {
        for i in &native_inputs {
            std::hint::black_box(native(i).is_ok());
        }
    });

    // Same outputs, or the comparison is meaningless.
    let wasm = batched(&inputs);
    anyhow::ensure!(
        wasm.len() == n,
        "{kind}: the batch stopped after {} of {n} decisions: {:?}",
        wasm.len(),
        wasm.last().and_then(|r| r.outcome.as_ref().err())
    );
    let fuel_batched: u64 = wasm.iter().map(|w| w.fuel_used).sum();
    for (k, (w, i)) in wasm.iter().zip(&native_inputs).enumerate() {
        let w = serde_json::to_value(w.outcome.as_ref().ok())?;
        let n = serde_json::to_value(native(i).ok())?;
        anyhow::ensure!(
            w == n,
            "{kind}: Wasm and native disagree on recorded input {k}: {w} vs {n}"
        );
    }
    Ok(KindFigures {
        kind: kind.to_string(),
        decisions: n,
        recorded: recorded.len(),
        wasm_fresh_ns,
        wasm_batched_ns,
        native_ns,
        batched_over_native: wasm_batched_ns / native_ns,
        fresh_over_native: wasm_fresh_ns / native_ns,
        fuel_fresh: fuel / n.max(1) as u64,
        fuel_batched: fuel_batched / n.max(1) as u64,
    })
}

/// Runs the benchmark (a minute or two in a dev build).
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

    let mut kinds = Vec::new();
    let mut tariff: Option<(String, Vec<TariffInput>)> = None;
    let mut batch_calls = Vec::new();
    for log_kind in audit::LOG_KINDS {
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
        let c = engine.load(kind, &registry::component_bytes(&db, &sha).await?)?;
        let mut recorded = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = sqlx::query(&format!(
                "SELECT d.input_json, d.parameters_sha256, dp.parameters FROM decisions d {}
                 WHERE d.decision_id = $1",
                crate::decision_log::PARAMETERS_JOIN
            ))
            .bind(r.decision_id)
            .fetch_one(&db.pool)
            .await?;
            let get = |i| sqlx::Row::try_get::<Option<String>, _>(&row, i);
            recorded.push(
                crate::decision_log::recorded_input(
                    sqlx::Row::try_get(&row, 0)?,
                    get(1)?.as_deref(),
                    get(2)?.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("decision {}: {e}", r.decision_id))?,
            );
        }
        let (e, c) = (&*engine, &c);
        // One kind: its input type, the engine's fresh and batched calls, the native function.
        macro_rules! kind {
            ($input:ty, $fresh:ident, $batched:ident, $native:path) => {
                measure(
                    log_kind,
                    &recorded,
                    opts.decisions,
                    |i: &$input| e.$fresh(c, i),
                    |is| e.$batched(c, is),
                    $native,
                )
            };
        }
        let figures = tokio::task::block_in_place(|| match log_kind {
            "tariff" => kind!(TariffInput, price, price_batch, policy_tariff_step::price),
            "warning" => kind!(
                WarningInput,
                assess,
                assess_batch,
                policy_warning_threshold::assess
            ),
            "notice" => kind!(NoticeInput, word, word_batch, policy_notice_sms_zh::word),
            "cutoff" => kind!(
                CutoffInput,
                decide,
                decide_batch,
                policy_cutoff_habit::decide
            ),
            _ => kind!(
                ReconnectionInput,
                reconnection,
                reconnection_batch,
                policy_cutoff_habit::reconnection
            ),
        })?;
        let batched = tokio::task::block_in_place(|| match log_kind {
            "tariff" if c.decides_in_batches() => batch_call(
                log_kind,
                repeated(&recorded, opts.decisions)?,
                |i: &mut TariffInput| &mut i.parameters,
                |p, is| e.price_many(c, p, is),
                |i| e.price(c, i),
                figures.native_ns,
            )
            .map(Some),
            "warning" if c.decides_in_batches() => batch_call(
                log_kind,
                repeated(&recorded, opts.decisions)?,
                |i: &mut WarningInput| &mut i.parameters,
                |p, is| e.assess_many(c, p, is),
                |i| e.assess(c, i),
                figures.native_ns,
            )
            .map(Some),
            _ => Ok(None),
        })?;
        batch_calls.extend(batched);
        kinds.push(figures);
        if log_kind == "tariff" {
            let inputs = recorded
                .iter()
                .map(|i| serde_json::from_str(i))
                .collect::<Result<_, _>>()?;
            tariff = Some((sha, inputs));
        }
    }
    let (tariff_sha, tariff_inputs) = tariff.context("the simulated county priced nothing")?;
    let tariff_bytes = registry::component_bytes(&db, &tariff_sha).await?;
    let native_ns = kinds
        .iter()
        .find(|k| k.kind == "tariff")
        .map(|k| k.native_ns)
        .unwrap_or(f64::NAN);
    let inputs: Vec<TariffInput> = tariff_inputs
        .iter()
        .cycle()
        .take(opts.decisions.max(tariff_inputs.len()))
        .cloned()
        .collect();
    let (bare_metered_ns, bare_unmetered_ns) = tokio::task::block_in_place(|| {
        anyhow::Ok((
            bare::tariff_ns(&tariff_bytes, &inputs, true)?,
            bare::tariff_ns(&tariff_bytes, &inputs, false)?,
        ))
    })?;
    let tariff_breakdown = TariffBreakdown {
        bare_metered_ns,
        bare_unmetered_ns,
        bare_unmetered_over_native: bare_unmetered_ns / native_ns,
    };
    let activation = activation_under_load(
        &db,
        &engine,
        &opts.demo,
        &tariff_sha,
        &tariff_inputs,
        opts.poll,
    )
    .await?;
    Ok(BenchReport {
        profile: if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        kinds,
        tariff_breakdown,
        batch_calls,
        activation,
    })
}

async fn activation_under_load(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    demo: &DemoOptions,
    tariff_sha: &str,
    inputs: &[TariffInput],
    poll: Duration,
) -> anyhow::Result<ActivationFigures> {
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
    let called = Instant::now();
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(ActivationFigures {
        poll_ms: poll.as_millis() as u64,
        activate_call_ms: ms(activated - called),
        latency_ms: ms(seen.saturating_duration_since(called)),
        decisions_during_swap: decisions.load(Ordering::Relaxed) - before,
        failed_decisions_during_swap: failures.load(Ordering::Relaxed),
    })
}

/// The recorded inputs of one kind, parsed, repeated in order up to `decisions`.
fn repeated<I: DeserializeOwned>(recorded: &[String], decisions: usize) -> anyhow::Result<Vec<I>> {
    recorded
        .iter()
        .cycle()
        .take(decisions.max(recorded.len()))
        .map(|json| Ok(serde_json::from_str(json)?))
        .collect()
}

/// Times `many` (a kind's batch path, [`PolicyEngine::price_many`] or
/// [`PolicyEngine::assess_many`]: calls of at most [`BATCH_MAX`] inputs, a fresh instance
/// each) over `inputs` with their shared parameters sent apart, and checks that every
/// result is what `alone` (the single call) gives for the same input.
fn batch_call<I: Clone, O: PartialEq + std::fmt::Debug>(
    kind: &str,
    mut inputs: Vec<I>,
    parameters_of: impl Fn(&mut I) -> &mut String,
    many: impl Fn(&str, &[I]) -> Vec<Invocation<O>>,
    alone: impl Fn(&I) -> Invocation<O>,
    native_ns: f64,
) -> anyhow::Result<BatchCallFigures> {
    let mut first = inputs.first().cloned().context("no recorded inputs")?;
    let parameters = parameters_of(&mut first).clone();
    let mut apart = inputs.clone();
    for i in &mut apart {
        let own = std::mem::take(parameters_of(i));
        anyhow::ensure!(
            own == parameters,
            "{kind}: the recorded inputs do not share one parameters string"
        );
    }
    let ns = time(apart.len(), || {
        std::hint::black_box(many(&parameters, &apart));
    });
    let decided = many(&parameters, &apart);
    anyhow::ensure!(decided.len() == inputs.len(), "{kind}: results lost");
    for (k, (m, input)) in decided.iter().zip(&mut inputs).enumerate() {
        let single = alone(input);
        anyhow::ensure!(
            m.outcome == single.outcome,
            "{kind} input {k}: the batch call gave {:?}, the single call {:?}",
            m.outcome,
            single.outcome
        );
    }
    Ok(BatchCallFigures {
        kind: kind.to_string(),
        chunk: BATCH_MAX,
        ns,
        over_native: ns / native_ns,
        fuel: decided.iter().map(|m| m.fuel_used).sum::<u64>() / decided.len().max(1) as u64,
    })
}

/// Prints the report for people.
pub fn print(r: &BenchReport) {
    println!(
        "feegate bench policy ({} profile) — ns per decision, fastest of several passes over the recorded inputs",
        r.profile
    );
    println!(
        "  {:<13} {:>10} {:>12} {:>12} {:>10} {:>15} {:>13} {:>11} {:>12}",
        "kind",
        "timed/rec.",
        "Wasm fresh",
        "Wasm batched",
        "native",
        "batched÷native",
        "fresh÷native",
        "fuel fresh",
        "fuel batched"
    );
    for k in &r.kinds {
        println!(
            "  {:<13} {:>10} {:>12.0} {:>12.0} {:>10.0} {:>14.2}× {:>12.1}× {:>11} {:>12}",
            k.kind,
            format!("{}/{}", k.decisions, k.recorded),
            k.wasm_fresh_ns,
            k.wasm_batched_ns,
            k.native_ns,
            k.batched_over_native,
            k.fresh_over_native,
            k.fuel_fresh,
            k.fuel_batched
        );
    }
    let b = &r.tariff_breakdown;
    println!(
        "tariff batched, taken apart: {:.0} ns on a bare engine with fuel and epochs (no pooling, refills or output checks), {:.0} ns with neither (unstoppable; {:.2}× native)",
        b.bare_metered_ns, b.bare_unmetered_ns, b.bare_unmetered_over_native
    );
    for b in &r.batch_calls {
        println!(
            "{}, many decisions per call (contract 1.1, at most {} per call, a fresh instance per call, fuel and deadline on, outputs checked): {:.0} ns per decision, {:.2}× native, fuel {} per decision",
            b.kind, b.chunk, b.ns, b.over_native, b.fuel
        );
    }
    if r.batch_calls.is_empty() {
        println!("no component decides many inputs per call (contract 1.1 batch interfaces)");
    }
    let a = &r.activation;
    println!(
        "activation under load: took effect {:.1} ms after calling `policy activate` (the call itself {:.1} ms; watcher polls every {} ms); {} decisions during the swap, {} failed",
        a.latency_ms,
        a.activate_call_ms,
        a.poll_ms,
        a.decisions_during_swap,
        a.failed_decisions_during_swap
    );
}

/// The tariff export on a plain wasmtime engine, for [`TariffBreakdown`].
mod bare {
    use super::time;
    use crate::policy::bindings::TariffInput;
    use crate::policy::bindings::tariff::TariffPolicyPre;
    use anyhow::Context;
    use wasmtime::component::{Component, Linker, ResourceTable};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    /// ns per decision of `inputs` through one instance of the tariff component `bytes`,
    /// with fuel and epoch interruption on (`metered`) or off. A refused or trapped
    /// decision is an error: the inputs are ones the component priced when recorded.
    pub fn tariff_ns(bytes: &[u8], inputs: &[TariffInput], metered: bool) -> anyhow::Result<f64> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(metered)
            .epoch_interruption(metered);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        let component = Component::new(&engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pre = TariffPolicyPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut store = Store::new(
            &engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        if metered {
            // Plenty for the whole benchmark; the epoch never reaches the deadline.
            store
                .set_fuel(u64::MAX)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut failed = None;
        let ns = time(inputs.len(), || {
            for input in inputs {
                match instance
                    .feegate_policy_tariff()
                    .call_price(&mut store, input)
                {
                    Ok(Ok(out)) => {
                        std::hint::black_box(out);
                    }
                    Ok(Err(e)) => failed = Some(format!("refused: {}: {}", e.code, e.message)),
                    Err(e) => failed = Some(format!("trapped: {e:#}")),
                }
            }
        });
        if let Some(why) = failed {
            return Err(anyhow::anyhow!("{why}"))
                .context("a recorded tariff input failed on the bare engine");
        }
        Ok(ns)
    }
}
