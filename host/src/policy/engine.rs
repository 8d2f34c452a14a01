//! Compiling, checking and running policy components under limits.
//!
//! Shape (after Kubewarden's "pre-instantiate once, fresh evaluator per request"):
//! a component is compiled, checked and pre-instantiated once at load; every call runs in
//! a fresh [`Store`] with its own fuel, memory limiter, epoch deadline and deny-all WASI
//! context, so one misbehaving call cannot leak state into the next. A call decides one
//! input, or — through a contract 1.1 batch export ([`PolicyEngine::price_many`],
//! [`PolicyEngine::assess_many`]) — up to [`BATCH_MAX`] inputs of one county and day,
//! which then share one instance and one decision's limits; see those functions for
//! what keeps one input's answer from depending on another's.

use super::PolicyKind;
use super::bindings::{
    CutoffInput, CutoffOutput, NoticeInput, NoticeOutput, PolicyError, ReconnectionInput,
    ReconnectionOutput, TariffInput, TariffOutput, WarningInput, WarningOutput, cutoff, notice,
    tariff, warning,
};
use super::contract::{SUPPORTED_CONTRACT, export_version, refused_import_reason};
use super::lift::{
    self, BoundedList, OutputOverBudget, RawPolicyError, RawTariffOutput, RawWarningOutput,
};
use crate::config::PolicyLimits;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, Lift, Linker, Lower, ResourceTable, TypedFunc,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Why a component was refused at load. Each message says what to change.
#[derive(Debug, Error)]
pub enum PolicyLoadError {
    #[error(
        "component is {size} bytes, over the {limit}-byte limit; strip debug info and build with the `plugin` profile"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "not a valid WebAssembly component: {0}; build it with `cargo build --target wasm32-wasip2`"
    )]
    Invalid(String),
    #[error(
        "component imports `{import}`, which {why}; policies must be pure functions of their input"
    )]
    ForbiddenImport { import: String, why: &'static str },
    #[error(
        "component exports {found} but this host supports contract version(s) {supported:?} of {interface}; rebuild it against the host's wit/"
    )]
    UnsupportedContract {
        interface: &'static str,
        found: String,
        supported: &'static [&'static str],
    },
    #[error(
        "component is not a {kind} policy: it exports {exports:?}, expected {interface}@<version>"
    )]
    WrongKind {
        kind: PolicyKind,
        interface: &'static str,
        exports: Vec<String>,
    },
    #[error("component cannot be linked: {0}")]
    Link(String),
}

/// Why a decision has no usable output. The affected account is held, never guessed at.
#[derive(Debug, Clone, Error, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "failure", rename_all = "kebab-case")]
pub enum PolicyFailure {
    /// The component declined with a policy-error (e.g. bad parameters).
    #[error("policy refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("ran out of fuel ({limit} units)")]
    OutOfFuel { limit: u64 },
    #[error("exceeded the time limit of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    #[error("exceeded the memory limit: {detail}")]
    MemoryLimit { detail: String },
    #[error("trapped: {detail}")]
    Trap { detail: String },
    /// The output broke the contract (negative charge, empty SMS, oversized text...).
    #[error("invalid output: {detail}")]
    InvalidOutput { detail: String },
}

impl PolicyFailure {
    /// Short stable code for reports and the decision log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::OutOfFuel { .. } => "out-of-fuel",
            Self::Timeout { .. } => "timeout",
            Self::MemoryLimit { .. } => "memory-limit",
            Self::Trap { .. } => "trap",
            Self::InvalidOutput { .. } => "invalid-output",
        }
    }
}

/// One run of a component: its outcome plus what the audit needs.
#[derive(Debug, Clone)]
pub struct Invocation<T> {
    pub outcome: Result<T, PolicyFailure>,
    /// Fuel consumed (≈ WebAssembly instructions executed).
    pub fuel_used: u64,
    /// Guest stdout and stderr, captured and bounded (lossy UTF-8); empty for a decision
    /// made many per call (a batch call's output is not kept per decision).
    pub guest_output: String,
    /// `Some(n)` when one batch call (contract 1.1, [`PolicyEngine::price_many`]) made this
    /// decision and `n - 1` others, and `fuel_used` is this decision's share of that call's
    /// fuel; `None` when the single-call export made it alone. The decision log records it
    /// (`decisions.call_decisions`, migration 0024).
    pub call_decisions: Option<u32>,
}

#[derive(Clone)]
enum KindPre {
    /// The generated bindings' pre-instance and the `price` export, which the host calls
    /// itself to lift its output within the guest's memory ([`super::lift`]).
    Tariff(tariff::TariffPolicyPre<GuestState>, ComponentExportIndex),
    Warning(warning::WarningPolicyPre<GuestState>),
    Notice(notice::NoticePolicyPre<GuestState>),
    Cutoff(cutoff::CutoffPolicyPre<GuestState>),
}

/// A compiled, checked, pre-instantiated component, identified by the sha256 of its bytes.
/// Cloning is cheap (the compiled code is shared), so one compilation serves every
/// publication of the same bytes.
#[derive(Clone)]
pub struct LoadedComponent {
    pub kind: PolicyKind,
    /// Lowercase hex sha256 of the component bytes: the component's identity.
    pub sha256: String,
    /// Contract version the component was built against (e.g. "1.0.0").
    pub contract_version: String,
    /// Imports the component declares (all within the allow-list).
    pub imports: Vec<String>,
    pub size_bytes: usize,
    pre: KindPre,
    /// The kind's contract 1.1 batch export (`tariff-batch.price-batch`,
    /// `warning-batch.assess-batch`), when the component has it.
    batch: Option<BatchExport>,
}

/// A component's batch export, checked at load: the function and the instance it
/// instantiates from.
#[derive(Clone)]
struct BatchExport {
    pre: wasmtime::component::InstancePre<GuestState>,
    func: ComponentExportIndex,
}

impl LoadedComponent {
    /// The component exports its kind's contract 1.1 batch interface (`tariff-batch`,
    /// `warning-batch`): the host decides many inputs per call with it
    /// ([`PolicyEngine::price_many`], [`PolicyEngine::assess_many`]).
    pub fn decides_in_batches(&self) -> bool {
        self.batch.is_some()
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("contract_version", &self.contract_version)
            .finish_non_exhaustive()
    }
}

/// Per-store state: the deny-all WASI context, captured output and the memory limiter.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses memory or table growth past a cap and remembers that it did, so the failure
/// is reported as "memory limit" rather than as whatever trap the guest turns it into.
struct MemoryCap {
    max_bytes: usize,
    max_table_elements: usize,
    hit: Option<String>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            let detail = format!(
                "wanted {desired} bytes of linear memory (had {current}), limit {}",
                self.max_bytes
            );
            self.hit = Some(detail.clone());
            return Err(wasmtime::format_err!(detail));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            let detail = format!(
                "wanted {desired} table elements (had {current}), limit {}",
                self.max_table_elements
            );
            self.hit = Some(detail.clone());
            return Err(wasmtime::format_err!(detail));
        }
        Ok(true)
    }
}

/// The engine's free instance-pool slots ([`PolicyLimits::instance_slots`]): a store is
/// created only with a slot in hand and the slot is given back only after the store is
/// dropped (so after wasmtime has returned its instance to the pool), so the pooling
/// allocator never runs out and a decision waits instead of failing.
struct Slots {
    free: std::sync::Mutex<u32>,
    freed: std::sync::Condvar,
}

impl Slots {
    fn take(self: &Arc<Self>) -> SlotPermit {
        let mut free = self.free.lock().expect("slot lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slot lock");
        }
        *free -= 1;
        SlotPermit(self.clone())
    }
}

/// One taken slot of [`Slots`], returned on drop.
struct SlotPermit(Arc<Slots>);

impl Drop for SlotPermit {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slot lock") += 1;
        self.0.freed.notify_one();
    }
}

/// The wasmtime engine, the deny-all linker and the limits; cheap to share (`Arc`).
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: PolicyLimits,
    slots: Arc<Slots>,
    /// Components compiled lately, by sha256 of their bytes, newest last (at most
    /// [`COMPILED_KEPT`]): loading the same bytes again (publish, then activate, then the
    /// watcher; every audit replay) re-runs every check but not the compilation.
    compiled: std::sync::Mutex<std::collections::VecDeque<(String, Component)>>,
}

/// How many compiled components a [`PolicyEngine`] keeps for reuse.
pub const COMPILED_KEPT: usize = 32;

/// Decisions started with [`PolicyEngine::spawn_decide_parts`], running.
#[must_use = "the decisions are only collected by `finish`"]
pub struct Deciding<I, R>(tokio::task::JoinHandle<(Vec<I>, Vec<R>)>);

impl<I, R> Deciding<I, R> {
    /// Waits for every decision and returns the inputs and their results, in input
    /// order. A panic on a decision thread (a host bug: a guest's trap is an outcome,
    /// not a panic) is raised again here, as [`PolicyEngine::decide_all`] raises it.
    pub async fn finish(self) -> (Vec<I>, Vec<R>) {
        match self.0.await {
            Ok(done) => done,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the decisions were cancelled: {e}"),
            },
        }
    }
}

/// Threads to decide `inputs` decisions on: one per core, but at least
/// [`MIN_DECISIONS_PER_THREAD`] decisions each (so 1 for a small batch).
fn decision_threads(inputs: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(inputs / MIN_DECISIONS_PER_THREAD)
}

/// `inputs` split into `threads` contiguous parts, each decided on a scoped thread of
/// its own (on the calling thread when `threads` ≤ 1); the results in input order.
fn spread_over<I: Sync, R: Send>(
    inputs: &[I],
    threads: usize,
    decide: &(impl Fn(&I) -> R + Sync),
) -> Vec<R> {
    spread_parts(inputs, threads, &|part: &[I]| {
        part.iter().map(decide).collect()
    })
}

/// `inputs` split into `threads` contiguous parts, each given whole to `decide` on a
/// scoped thread of its own (on the calling thread when `threads` ≤ 1), which answers
/// one result per input; the results in input order.
fn spread_parts<I: Sync, R: Send>(
    inputs: &[I],
    threads: usize,
    decide: &(impl Fn(&[I]) -> Vec<R> + Sync),
) -> Vec<R> {
    if threads <= 1 {
        return decide(inputs);
    }
    let per_thread = inputs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = inputs
            .chunks(per_thread)
            .map(|part| scope.spawn(|| decide(part)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a decision thread does not panic"))
            .collect()
    })
}

/// Bytes of a pooled instance's linear memory (and table) reset in place rather than
/// returned to the kernel when its decision ends; the shipped components touch far less.
pub const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Below this many decisions per thread, [`PolicyEngine::decide_all`] does not spread.
pub const MIN_DECISIONS_PER_THREAD: usize = 16;

impl PolicyEngine {
    /// Builds the engine: fuel metering and epoch interruption on, and a ticker thread
    /// that advances the epoch every `limits.epoch_tick`. The ticker holds only a weak
    /// handle, so it stops when the engine is dropped.
    pub fn new(limits: PolicyLimits) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Fuel makes runaway loops deterministic to stop and gives the audit a cost figure.
        config.consume_fuel(true);
        // Epochs bound wall-clock time even where fuel is not consumed (host calls).
        config.epoch_interruption(true);
        // A fresh instance per decision, from a pool of reused slots: mapping and
        // unmapping fresh linear memory for every decision (the default allocator) cost
        // more than the decision itself and, on several threads, TLB shootdowns.
        let slots = limits.instance_slots.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 16)
            .total_memories(slots * 4)
            .total_tables(slots * 8)
            .table_elements(100_000)
            .max_memory_size(limits.memory_bytes)
            // Reset a returned slot by rewriting only the pages the decision touched
            // (found with Linux's PAGEMAP_SCAN where the kernel has it, 6.7+) instead of
            // `madvise`, whose TLB shootdown interrupts every core running the host.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // For profiling only: `FEEGATE_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map so that
        // `perf report` names the compiled guest functions (build the component unstripped,
        // `CARGO_PROFILE_PLUGIN_STRIP=false make plugins`, to keep their names).
        if std::env::var_os("FEEGATE_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut linker = Linker::new(&engine);
        // Every WASI interface is linked, but the context built per store grants nothing
        // (no args, env, preopens, network; stdin closed), and a component importing
        // clocks, randomness, files or sockets is refused before it gets here.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;

        let weak = engine.weak();
        let tick = limits.epoch_tick;
        std::thread::Builder::new()
            .name("feegate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })?;
        Ok(Arc::new(Self {
            engine,
            linker,
            slots: Arc::new(Slots {
                free: std::sync::Mutex::new(limits.instance_slots.max(1)),
                freed: std::sync::Condvar::new(),
            }),
            limits,
            compiled: Default::default(),
        }))
    }

    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    /// Compiles and checks a component for `kind`: size, imports within the allow-list,
    /// exports the kind's interface at a supported contract version, links.
    pub fn load(&self, kind: PolicyKind, bytes: &[u8]) -> Result<LoadedComponent, PolicyLoadError> {
        if bytes.len() > self.limits.max_component_bytes {
            return Err(PolicyLoadError::TooLarge {
                size: bytes.len(),
                limit: self.limits.max_component_bytes,
            });
        }
        let sha256 = sha256_hex(bytes);
        let component = self.compile(&sha256, bytes)?;
        let ty = component.component_type();
        let mut imports = Vec::new();
        for (name, _) in ty.imports(&self.engine) {
            if let Some(why) = refused_import_reason(name) {
                return Err(PolicyLoadError::ForbiddenImport {
                    import: name.to_string(),
                    why,
                });
            }
            imports.push(name.to_string());
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let found = exports
            .iter()
            .find(|e| e.starts_with(kind.interface()) && export_version(kind, e).is_some())
            .ok_or_else(|| PolicyLoadError::WrongKind {
                kind,
                interface: kind.interface(),
                exports: exports.clone(),
            })?;
        let version = export_version(kind, found).unwrap_or_default().to_string();
        if !SUPPORTED_CONTRACT.contains(&version.as_str()) {
            return Err(PolicyLoadError::UnsupportedContract {
                interface: kind.interface(),
                found: found.clone(),
                supported: SUPPORTED_CONTRACT,
            });
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PolicyLoadError::Link(format!("{e:#}")))?;
        let link = |e: wasmtime::Error| PolicyLoadError::Link(format!("{e:#}"));
        let batch = self.batch_export(kind, &component, &instance_pre)?;
        let pre = match kind {
            PolicyKind::Tariff => {
                let (interface_name, func_name) = TARIFF_PRICE;
                let price = component
                    .get_export_index(None, interface_name)
                    .and_then(|i| component.get_export_index(Some(&i), func_name))
                    .ok_or_else(|| {
                        PolicyLoadError::Link(format!(
                            "{interface_name}#{func_name} is not exported"
                        ))
                    })?;
                KindPre::Tariff(
                    tariff::TariffPolicyPre::new(instance_pre).map_err(link)?,
                    price,
                )
            }
            PolicyKind::Warning => {
                KindPre::Warning(warning::WarningPolicyPre::new(instance_pre).map_err(link)?)
            }
            PolicyKind::Notice => {
                KindPre::Notice(notice::NoticePolicyPre::new(instance_pre).map_err(link)?)
            }
            PolicyKind::Cutoff => {
                KindPre::Cutoff(cutoff::CutoffPolicyPre::new(instance_pre).map_err(link)?)
            }
        };
        Ok(LoadedComponent {
            kind,
            sha256,
            contract_version: version,
            imports,
            size_bytes: bytes.len(),
            pre,
            batch,
        })
    }

    /// The kind's contract 1.1 batch export ([`BATCH_EXPORTS`]) when `component` has it,
    /// checked against the host's signature in a scratch instance (with one decision's
    /// limits), so that a wrong signature is refused at publish rather than found at
    /// settlement. `None` for a component without it (contract 1.0, or a 1.1 component
    /// that decides one input per call).
    fn batch_export(
        &self,
        kind: PolicyKind,
        component: &Component,
        instance_pre: &wasmtime::component::InstancePre<GuestState>,
    ) -> Result<Option<BatchExport>, PolicyLoadError> {
        let Some(&(_, interface_name, func_name)) =
            BATCH_EXPORTS.iter().find(|(k, _, _)| *k == kind)
        else {
            return Ok(None);
        };
        let Some(interface) = component.get_export_index(None, interface_name) else {
            return Ok(None);
        };
        let wrong = |detail: String| {
            PolicyLoadError::Link(format!(
                "{interface_name}#{func_name}: {detail}; rebuild the component against the host's wit/"
            ))
        };
        let func = component
            .get_export_index(Some(&interface), func_name)
            .ok_or_else(|| wrong("the interface is exported without the function".into()))?;
        on_guest_thread(|| {
            let _slot = self.slots.take();
            let (mut store, _, _) = self.new_store();
            let instance = instance_pre
                .instantiate(&mut store)
                .map_err(|e| wrong(format!("the component does not instantiate: {e:#}")))?;
            match kind {
                PolicyKind::Tariff => {
                    batch_func::<TariffInput>(&instance, &mut store, &func).map(drop)
                }
                _ => batch_func::<WarningInput>(&instance, &mut store, &func).map(drop),
            }
            .map_err(|e| wrong(format!("the signature is not the contract's: {e:#}")))
        })?;
        Ok(Some(BatchExport {
            pre: instance_pre.clone(),
            func,
        }))
    }

    /// Compiles `bytes` (whose sha256 is `sha256`), or reuses the compilation of the same
    /// bytes kept in [`Self::compiled`].
    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<Component, PolicyLoadError> {
        let kept = |compiled: &std::collections::VecDeque<(String, Component)>| {
            compiled
                .iter()
                .find(|(sha, _)| sha == sha256)
                .map(|(_, c)| c.clone())
        };
        if let Some(c) = kept(&self.compiled.lock().expect("compiled cache lock")) {
            return Ok(c);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            PolicyLoadError::Invalid(
                format!("{e:#}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })?;
        let mut compiled = self.compiled.lock().expect("compiled cache lock");
        if kept(&compiled).is_none() {
            if compiled.len() == COMPILED_KEPT {
                compiled.pop_front();
            }
            compiled.push_back((sha256.to_string(), component.clone()));
        }
        Ok(component)
    }

    fn new_store(&self) -> (Store<GuestState>, MemoryOutputPipe, MemoryOutputPipe) {
        let stdout = MemoryOutputPipe::new(self.limits.guest_output_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.guest_output_bytes);
        // Deny-all: the builder's defaults give no args, no env, no preopens and a
        // closed stdin; the network is switched off explicitly.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                max_bytes: self.limits.memory_bytes,
                max_table_elements: 100_000,
                hit: None,
            },
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.refill(&mut store);
        (store, stdout, stderr)
    }

    /// Gives `store` one decision's fuel and wall-clock deadline.
    fn refill(&self, store: &mut Store<GuestState>) {
        store
            .set_fuel(self.limits.fuel_per_decision)
            .expect("fuel is enabled in the engine config");
        let tick_ns = self.limits.epoch_tick.as_nanos().max(1);
        let ticks = self.limits.time_limit.as_nanos().div_ceil(tick_ns) as u64;
        store.set_epoch_deadline(ticks.max(1));
    }

    /// Runs `decide` (one fresh-instance decision, e.g. `|i| engine.price(c, i)`) on every
    /// input and returns the results in input order. The inputs are split over one worker
    /// thread per core (`std::thread::available_parallelism`), so a county's thousand
    /// tariff decisions use both cores of a small machine; each decision still gets its own
    /// store and instance, fuel and deadline, exactly as one call would. Fewer than
    /// [`MIN_DECISIONS_PER_THREAD`] inputs per thread run on the calling thread. Inside a
    /// multi-threaded tokio runtime the wait happens under `block_in_place`.
    pub fn decide_all<I: Sync, R: Send>(
        &self,
        inputs: &[I],
        decide: impl Fn(&I) -> R + Sync,
    ) -> Vec<R> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let threads = decision_threads(inputs.len());
        let spread = || spread_over(inputs, threads, &decide);
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) if threads > 1 => tokio::task::block_in_place(spread),
            _ => spread(),
        }
    }

    /// [`Self::decide_all`] started on tokio's blocking threads, so that the task that
    /// starts it can go on — write the batch before while this one is decided — and
    /// collect the results later with [`Deciding::finish`], the inputs handed back
    /// beside them in input order. `decide` gets the engine and a contiguous part of the
    /// inputs (one part per decision thread) and answers one result per input, in order:
    /// it decides them — [`Self::price_many`], [`Self::assess_many`] — and may do more
    /// (serialise each decision's log row, say), so that work is spread too.
    ///
    /// # Panics
    /// In [`Deciding::finish`], when `decide` answers a part with a different number of
    /// results than inputs (a host bug).
    pub fn spawn_decide_parts<I, R>(
        self: &Arc<Self>,
        inputs: Vec<I>,
        decide: impl Fn(&Self, &[I]) -> Vec<R> + Send + Sync + 'static,
    ) -> Deciding<I, R>
    where
        I: Send + Sync + 'static,
        R: Send + 'static,
    {
        let engine = self.clone();
        Deciding(tokio::task::spawn_blocking(move || {
            let decide = |part: &[I]| {
                let results = decide(&engine, part);
                assert_eq!(results.len(), part.len(), "one result per input");
                results
            };
            let results = spread_parts(&inputs, decision_threads(inputs.len()), &decide);
            (inputs, results)
        }))
    }

    /// Runs `call` in a fresh store and classifies the result. `validate` checks the
    /// output against the contract.
    ///
    /// wasmtime-wasi's synchronous streams (a guest writing to stdout or stderr, e.g. a
    /// panic message) block on tokio internally, which would panic inside an async task.
    /// So inside a multi-threaded runtime the guest runs under `block_in_place`, inside a
    /// current-thread runtime on a scoped thread of its own, and outside tokio directly.
    fn run<R: Serialize + Send>(
        &self,
        call: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<Result<R, PolicyError>> + Send,
        validate: impl FnOnce(&R, &PolicyLimits) -> Result<(), String> + Send,
    ) -> Invocation<R> {
        on_guest_thread(|| self.run_here(call, validate))
    }

    fn run_here<R: Serialize>(
        &self,
        call: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<Result<R, PolicyError>>,
        validate: impl FnOnce(&R, &PolicyLimits) -> Result<(), String>,
    ) -> Invocation<R> {
        // The slot is taken before the store and given back after it: wasmtime returns the
        // instance to the pool only when the store is dropped, after its data.
        let _slot = self.slots.take();
        let (mut store, _, _) = self.new_store();
        let result = call(&mut store);
        let fuel_used = self
            .limits
            .fuel_per_decision
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.data();
        let mut guest_output = String::from_utf8_lossy(&state.stdout.contents()).into_owned();
        let err_text = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
        if !err_text.is_empty() {
            guest_output.push_str(&err_text);
        }
        let outcome = self.outcome(result, validate, state.limiter.hit.clone());
        Invocation {
            outcome,
            fuel_used,
            guest_output,
            call_decisions: None,
        }
    }

    /// Classifies one call's result: a validated output, a refusal, or a contained failure.
    fn outcome<R: Serialize>(
        &self,
        result: wasmtime::Result<Result<R, PolicyError>>,
        validate: impl FnOnce(&R, &PolicyLimits) -> Result<(), String>,
        memory_hit: Option<String>,
    ) -> Result<R, PolicyFailure> {
        match result {
            Ok(Ok(output)) => {
                match validate(&output, &self.limits).and_then(|()| self.check_size(&output)) {
                    Ok(()) => Ok(output),
                    Err(detail) => Err(PolicyFailure::InvalidOutput { detail }),
                }
            }
            Ok(Err(e)) => Err(PolicyFailure::Refused {
                code: truncate(&e.code, 64),
                message: truncate(&e.message, 500),
            }),
            Err(e) => Err(self.classify(&e, memory_hit)),
        }
    }

    /// Runs `inputs` through ONE store and instance, with each call getting a full
    /// decision's fuel and deadline and each output validated exactly as in [`Self::run`].
    ///
    /// For `feegate bench policy` only, to measure what per-decision instantiation costs:
    /// decisions never run this way (the daily job's many-per-call path is a batch export,
    /// [`Self::price_many`], with its own limits and checks). A trap ends the batch (a
    /// trapped instance cannot be entered again), so the result may be shorter than
    /// `inputs`.
    fn run_batch<I, X, R: Serialize>(
        &self,
        instantiate: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<X>,
        inputs: &[I],
        mut call: impl FnMut(&X, &mut Store<GuestState>, &I) -> wasmtime::Result<Result<R, PolicyError>>,
        validate: impl Fn(&R, &PolicyLimits) -> Result<(), String>,
    ) -> Vec<Invocation<R>> {
        // The slot is taken before the store and given back after it: wasmtime returns the
        // instance to the pool only when the store is dropped, after its data.
        let _slot = self.slots.take();
        let (mut store, _, _) = self.new_store();
        let instance = match instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                return vec![Invocation {
                    outcome: Err(self.classify(&e, store.data().limiter.hit.clone())),
                    fuel_used: 0,
                    guest_output: String::new(),
                    call_decisions: None,
                }];
            }
        };
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            self.refill(&mut store);
            let result = call(&instance, &mut store, input);
            let fuel_used = self
                .limits
                .fuel_per_decision
                .saturating_sub(store.get_fuel().unwrap_or(0));
            let trapped = result.is_err();
            out.push(Invocation {
                outcome: self.outcome(result, &validate, store.data().limiter.hit.clone()),
                fuel_used,
                // Guest output is not kept per decision in a batch.
                guest_output: String::new(),
                // A call per decision (bench only), so each fuel figure is its own.
                call_decisions: None,
            });
            if trapped {
                break;
            }
        }
        out
    }

    fn check_size<R: Serialize>(&self, output: &R) -> Result<(), String> {
        // The length of the JSON the decision log will hold, counted without building it.
        let mut size = ByteCount(0);
        let size = serde_json::to_writer(&mut size, output)
            .map(|()| size.0)
            .unwrap_or(usize::MAX);
        if size > self.limits.max_output_bytes {
            return Err(format!(
                "output is {size} bytes, over the {} byte limit",
                self.limits.max_output_bytes
            ));
        }
        Ok(())
    }

    fn classify(&self, e: &wasmtime::Error, memory_hit: Option<String>) -> PolicyFailure {
        if let Some(detail) = memory_hit {
            return PolicyFailure::MemoryLimit { detail };
        }
        if let Some(over) = e.downcast_ref::<OutputOverBudget>() {
            return PolicyFailure::InvalidOutput {
                detail: over.to_string(),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PolicyFailure::OutOfFuel {
                limit: self.limits.fuel_per_decision,
            },
            Some(Trap::Interrupt) => PolicyFailure::Timeout {
                limit_ms: self.limits.time_limit.as_millis() as u64,
            },
            _ => PolicyFailure::Trap {
                detail: truncate(&format!("{e:#}"), 1000),
            },
        }
    }

    /// Prices a period's consumption with a tariff component.
    ///
    /// The output is lifted within the guest's memory limit ([`super::lift`]): one whose
    /// strings share bytes so that copying them would take more is an invalid output
    /// before it is copied.
    pub fn price(&self, c: &LoadedComponent, input: &TariffInput) -> Invocation<TariffOutput> {
        let KindPre::Tariff(pre, price) = &c.pre else {
            return wrong_kind(c, PolicyKind::Tariff);
        };
        let budget = self.limits.memory_bytes;
        self.run(
            |store| {
                let instance = pre.instance_pre().instantiate(&mut *store)?;
                let func = instance
                    .get_typed_func::<(&TariffInput,), (Result<RawTariffOutput, RawPolicyError>,)>(
                        &mut *store,
                        price,
                    )?;
                let (result,) = lift::with_budget(budget, || func.call(&mut *store, (input,)))?;
                Ok(lift::into_result(result))
            },
            validate_tariff,
        )
    }

    /// [`Self::price`] for many inputs in one store and instance (bench only, see
    /// [`Self::run_batch`]).
    pub fn price_batch(
        &self,
        c: &LoadedComponent,
        inputs: &[TariffInput],
    ) -> Vec<Invocation<TariffOutput>> {
        let KindPre::Tariff(pre, _) = &c.pre else {
            return vec![wrong_kind(c, PolicyKind::Tariff)];
        };
        self.run_batch(
            |store| pre.instantiate(store),
            inputs,
            |i, store, input| i.feegate_policy_tariff().call_price(store, input),
            validate_tariff,
        )
    }

    /// Prices many periods of one county with a tariff component: results in input order,
    /// one per input, each exactly what [`Self::price`] gives for that input with
    /// `parameters` filled in.
    ///
    /// `parameters` is the county's canonical parameters JSON. Each input's own
    /// `parameters` is not read (leave it empty: every input is copied into the guest).
    ///
    /// With a component that exports `tariff-batch` (contract 1.1) the inputs go in
    /// chunks of at most [`BATCH_MAX`] through `price-batch`, each chunk in a fresh store
    /// and instance with **one** decision's fuel and deadline for the whole chunk, so a
    /// batch never lets a component run longer than one decision may. Each output is
    /// checked as [`Self::price`] checks it; each result's `fuel_used` is the chunk's fuel
    /// shared evenly (the first `fuel % n` results one unit more). A chunk whose call
    /// fails as a whole — trap, fuel, time, memory, or a result count other than its
    /// input count — is discarded and each of its inputs is priced again alone with
    /// [`Self::price`], so a failure holds only the account it belongs to.
    ///
    /// Every chunk's last input is also priced alone, and a chunk whose answer for it
    /// differs from the single call's is discarded the same way: an answer that depends on
    /// the inputs before it in the call does not get through (at 1/[`BATCH_MAX`] of the
    /// cost). Activation checks more ([`Self::price_batch_disagreement`]).
    ///
    /// Without `tariff-batch` each input is priced alone with [`Self::price`].
    pub fn price_many(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[TariffInput],
    ) -> Vec<Invocation<TariffOutput>> {
        self.decide_many(c, parameters, inputs)
    }

    /// [`Self::price_many`] for balances: `warning-batch.assess-batch` (contract 1.1) in
    /// chunks when the warning component exports it, else [`Self::assess`] per input;
    /// each result exactly what [`Self::assess`] gives for that input with `parameters`
    /// filled in.
    pub fn assess_many(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[WarningInput],
    ) -> Vec<Invocation<WarningOutput>> {
        self.decide_many(c, parameters, inputs)
    }

    /// [`Self::price_many`] and [`Self::assess_many`], for any [`Batched`] kind.
    fn decide_many<I: Batched>(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[I],
    ) -> Vec<Invocation<I::Output>> {
        let alone = |input: &I| I::alone(self, c, &input.with_parameters(parameters));
        let Some(batch) = c.batch.as_ref().filter(|_| c.kind == I::KIND) else {
            return inputs.iter().map(alone).collect();
        };
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(BATCH_MAX) {
            let decided =
                on_guest_thread(|| self.decide_chunk(batch, parameters, chunk)).filter(|decided| {
                    // The sample: the chunk's last input, priced alone (after the chunk's
                    // store and slot are given back).
                    let (Some(last), Some(answer)) = (chunk.last(), decided.last()) else {
                        return false;
                    };
                    alone(last).outcome == answer.outcome
                });
            match decided {
                Some(decided) => out.extend(decided),
                None => out.extend(chunk.iter().map(alone)),
            }
        }
        out
    }

    /// Checks a tariff component's `price-batch` against its `price` before a version is
    /// put in force: `inputs` in one call, then reversed in another, must each get what
    /// `price` gives them alone (with `parameters` filled in), and neither call may fail
    /// as a whole. `None` when they agree or the component has no `tariff-batch`; else
    /// what differed, for the operator.
    pub fn price_batch_disagreement(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[TariffInput],
    ) -> Option<String> {
        self.batch_disagreement(c, parameters, inputs)
    }

    /// [`Self::price_batch_disagreement`] for a warning component's `assess-batch`.
    pub fn assess_batch_disagreement(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[WarningInput],
    ) -> Option<String> {
        self.batch_disagreement(c, parameters, inputs)
    }

    fn batch_disagreement<I: Batched>(
        &self,
        c: &LoadedComponent,
        parameters: &str,
        inputs: &[I],
    ) -> Option<String> {
        let batch = c.batch.as_ref().filter(|_| c.kind == I::KIND)?;
        let (_, interface, func) = BATCH_EXPORTS.iter().find(|(k, _, _)| *k == I::KIND)?;
        let single: Vec<_> = inputs
            .iter()
            .map(|i| I::alone(self, c, &i.with_parameters(parameters)).outcome)
            .collect();
        let mut reversed = inputs.to_vec();
        reversed.reverse();
        for (order, call) in [("in order", inputs), ("reversed", &reversed[..])] {
            let Some(mut decided) = on_guest_thread(|| self.decide_chunk(batch, parameters, call))
            else {
                return Some(format!(
                    "its {interface}#{func} failed as a whole on {} check inputs ({order}), which it decides one by one",
                    inputs.len()
                ));
            };
            if order == "reversed" {
                decided.reverse();
            }
            for (k, (got, want)) in decided.iter().zip(&single).enumerate() {
                if got.outcome != *want {
                    return Some(format!(
                        "its {interface}#{func} answers check input {k} ({order}) with {:?}, where it answers {:?} alone; both must give each input the same answer, whatever else is in the call",
                        got.outcome, want
                    ));
                }
            }
        }
        None
    }

    /// One batch call in a fresh store ([`Self::decide_many`]); `None` when the call
    /// failed as a whole.
    fn decide_chunk<I: Batched>(
        &self,
        batch: &BatchExport,
        parameters: &str,
        chunk: &[I],
    ) -> Option<Vec<Invocation<I::Output>>> {
        let _slot = self.slots.take();
        let (mut store, _, _) = self.new_store();
        let instance = batch.pre.instantiate(&mut store).ok()?;
        let func = batch_func::<I>(&instance, &mut store, &batch.func).ok()?;
        // The whole call's output within the guest's memory (`super::lift`).
        let budget = self.limits.memory_bytes;
        let (BoundedList(results),) =
            lift::with_budget(budget, || func.call(&mut store, (parameters, chunk))).ok()?;
        if results.len() != chunk.len() || store.data().limiter.hit.is_some() {
            return None;
        }
        let fuel = self
            .limits
            .fuel_per_decision
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let n = chunk.len() as u64;
        Some(
            results
                .into_iter()
                .enumerate()
                .map(|(i, result)| Invocation {
                    outcome: self.outcome(Ok(lift::into_result(result)), I::validate, None),
                    fuel_used: fuel / n + u64::from((i as u64) < fuel % n),
                    guest_output: String::new(),
                    call_decisions: Some(chunk.len() as u32),
                })
                .collect(),
        )
    }

    /// Assesses a balance with a warning component.
    pub fn assess(&self, c: &LoadedComponent, input: &WarningInput) -> Invocation<WarningOutput> {
        let KindPre::Warning(pre) = &c.pre else {
            return wrong_kind(c, PolicyKind::Warning);
        };
        self.run(
            |store| {
                pre.instantiate(&mut *store)?
                    .feegate_policy_warning()
                    .call_assess(&mut *store, input)
            },
            validate_warning,
        )
    }

    /// [`Self::assess`] for many inputs in one store and instance (bench only, see
    /// [`Self::run_batch`]).
    pub fn assess_batch(
        &self,
        c: &LoadedComponent,
        inputs: &[WarningInput],
    ) -> Vec<Invocation<WarningOutput>> {
        let KindPre::Warning(pre) = &c.pre else {
            return vec![wrong_kind(c, PolicyKind::Warning)];
        };
        self.run_batch(
            |store| pre.instantiate(store),
            inputs,
            |i, store, input| i.feegate_policy_warning().call_assess(store, input),
            validate_warning,
        )
    }

    /// Words an SMS with a notice component.
    pub fn word(&self, c: &LoadedComponent, input: &NoticeInput) -> Invocation<NoticeOutput> {
        let KindPre::Notice(pre) = &c.pre else {
            return wrong_kind(c, PolicyKind::Notice);
        };
        self.run(
            |store| {
                pre.instantiate(&mut *store)?
                    .feegate_policy_notice()
                    .call_word(&mut *store, input)
            },
            validate_notice,
        )
    }

    /// [`Self::word`] for many inputs in one store and instance (bench only, see
    /// [`Self::run_batch`]).
    pub fn word_batch(
        &self,
        c: &LoadedComponent,
        inputs: &[NoticeInput],
    ) -> Vec<Invocation<NoticeOutput>> {
        let KindPre::Notice(pre) = &c.pre else {
            return vec![wrong_kind(c, PolicyKind::Notice)];
        };
        self.run_batch(
            |store| pre.instantiate(store),
            inputs,
            |i, store, input| i.feegate_policy_notice().call_word(store, input),
            validate_notice,
        )
    }

    /// Decides disconnection with a cutoff component.
    pub fn decide(&self, c: &LoadedComponent, input: &CutoffInput) -> Invocation<CutoffOutput> {
        let KindPre::Cutoff(pre) = &c.pre else {
            return wrong_kind(c, PolicyKind::Cutoff);
        };
        self.run(
            |store| {
                pre.instantiate(&mut *store)?
                    .feegate_policy_cutoff()
                    .call_decide(&mut *store, input)
            },
            validate_cutoff,
        )
    }

    /// [`Self::decide`] for many inputs in one store and instance (bench only, see
    /// [`Self::run_batch`]).
    pub fn decide_batch(
        &self,
        c: &LoadedComponent,
        inputs: &[CutoffInput],
    ) -> Vec<Invocation<CutoffOutput>> {
        let KindPre::Cutoff(pre) = &c.pre else {
            return vec![wrong_kind(c, PolicyKind::Cutoff)];
        };
        self.run_batch(
            |store| pre.instantiate(store),
            inputs,
            |i, store, input| i.feegate_policy_cutoff().call_decide(store, input),
            validate_cutoff,
        )
    }

    /// Picks the reconnection mode with a cutoff component.
    pub fn reconnection(
        &self,
        c: &LoadedComponent,
        input: &ReconnectionInput,
    ) -> Invocation<ReconnectionOutput> {
        let KindPre::Cutoff(pre) = &c.pre else {
            return wrong_kind(c, PolicyKind::Cutoff);
        };
        self.run(
            |store| {
                pre.instantiate(&mut *store)?
                    .feegate_policy_cutoff()
                    .call_reconnection(&mut *store, input)
            },
            validate_reconnection,
        )
    }

    /// [`Self::reconnection`] for many inputs in one store and instance (bench only, see
    /// [`Self::run_batch`]).
    pub fn reconnection_batch(
        &self,
        c: &LoadedComponent,
        inputs: &[ReconnectionInput],
    ) -> Vec<Invocation<ReconnectionOutput>> {
        let KindPre::Cutoff(pre) = &c.pre else {
            return vec![wrong_kind(c, PolicyKind::Cutoff)];
        };
        self.run_batch(
            |store| pre.instantiate(store),
            inputs,
            |i, store, input| i.feegate_policy_cutoff().call_reconnection(store, input),
            validate_reconnection,
        )
    }
}

/// Contract checks on a tariff output: the common ones, and a charge that is not negative.
fn validate_tariff(out: &TariffOutput, limits: &PolicyLimits) -> Result<(), String> {
    common_checks(&out.reason_code, &out.explanation, limits)?;
    if out.charge_fen < 0 {
        return Err(format!("charge-fen {} is negative", out.charge_fen));
    }
    Ok(())
}

/// Contract checks on a warning output: the common ones, and a level in 0..=3.
fn validate_warning(out: &WarningOutput, limits: &PolicyLimits) -> Result<(), String> {
    common_checks(&out.reason_code, &out.explanation, limits)?;
    if out.level > 3 {
        return Err(format!("warning level {} is not 0..=3", out.level));
    }
    Ok(())
}

/// Contract checks on a notice output: the common ones, and an SMS of
/// 1..=`max_sms_chars` characters.
fn validate_notice(out: &NoticeOutput, limits: &PolicyLimits) -> Result<(), String> {
    common_checks(&out.reason_code, &out.explanation, limits)?;
    let chars = out.text.chars().count();
    if chars == 0 || chars > limits.max_sms_chars {
        return Err(format!(
            "SMS text has {chars} characters; must be 1..={}",
            limits.max_sms_chars
        ));
    }
    Ok(())
}

/// Contract checks on a cutoff output (the common ones).
fn validate_cutoff(out: &CutoffOutput, limits: &PolicyLimits) -> Result<(), String> {
    common_checks(&out.reason_code, &out.explanation, limits)
}

/// Contract checks on a reconnection output (the common ones).
fn validate_reconnection(out: &ReconnectionOutput, limits: &PolicyLimits) -> Result<(), String> {
    common_checks(&out.reason_code, &out.explanation, limits)
}

/// The contract 1.1 batch exports, per kind: (kind, interface, function). Looked up
/// semver-compatibly, so a later 1.x component's export is found too.
pub const BATCH_EXPORTS: &[(PolicyKind, &str, &str)] = &[
    (
        PolicyKind::Tariff,
        "feegate:policy/tariff-batch@1.1.0",
        "price-batch",
    ),
    (
        PolicyKind::Warning,
        "feegate:policy/warning-batch@1.1.0",
        "assess-batch",
    ),
];

/// The single-call tariff export the host calls itself ([`PolicyEngine::price`]), looked up
/// semver-compatibly like [`BATCH_EXPORTS`] (a 1.0.0 component's `tariff@1.0.0` is found).
const TARIFF_PRICE: (&str, &str) = ("feegate:policy/tariff@1.1.0", "price");

/// Most inputs decided in one batch call ([`PolicyEngine::price_many`]): enough that
/// entering the guest and instantiating are a small part of each decision, few enough
/// that a chunk discarded for a failure costs little to decide again alone.
pub const BATCH_MAX: usize = 128;

/// An input kind with a contract 1.1 batch export (`price-batch`, `assess-batch`).
trait Batched: Clone + Sync + ComponentType + Lower {
    type Output: Serialize + Send + PartialEq + std::fmt::Debug + 'static;
    /// The output as lifted within the guest's memory ([`super::lift`]).
    type Raw: ComponentType + Lift + Into<Self::Output> + 'static;
    const KIND: PolicyKind;
    /// A copy of the input carrying `parameters`, as a single call sends it.
    fn with_parameters(&self, parameters: &str) -> Self;
    /// The single call ([`PolicyEngine::price`], [`PolicyEngine::assess`]).
    fn alone(engine: &PolicyEngine, c: &LoadedComponent, input: &Self) -> Invocation<Self::Output>;
    /// The single call's output checks.
    fn validate(out: &Self::Output, limits: &PolicyLimits) -> Result<(), String>;
}

impl Batched for TariffInput {
    type Output = TariffOutput;
    type Raw = RawTariffOutput;
    const KIND: PolicyKind = PolicyKind::Tariff;
    fn with_parameters(&self, parameters: &str) -> Self {
        Self {
            parameters: parameters.to_string(),
            ..self.clone()
        }
    }
    fn alone(engine: &PolicyEngine, c: &LoadedComponent, input: &Self) -> Invocation<TariffOutput> {
        engine.price(c, input)
    }
    fn validate(out: &TariffOutput, limits: &PolicyLimits) -> Result<(), String> {
        validate_tariff(out, limits)
    }
}

impl Batched for WarningInput {
    type Output = WarningOutput;
    type Raw = RawWarningOutput;
    const KIND: PolicyKind = PolicyKind::Warning;
    fn with_parameters(&self, parameters: &str) -> Self {
        Self {
            parameters: parameters.to_string(),
            ..self.clone()
        }
    }
    fn alone(
        engine: &PolicyEngine,
        c: &LoadedComponent,
        input: &Self,
    ) -> Invocation<WarningOutput> {
        engine.assess(c, input)
    }
    fn validate(out: &WarningOutput, limits: &PolicyLimits) -> Result<(), String> {
        validate_warning(out, limits)
    }
}

/// A batch export as the host calls it: `(parameters, inputs) -> list<result<output,
/// policy-error>>`, type-checked against the component.
#[allow(clippy::type_complexity)]
fn batch_func<'a, I: Batched>(
    instance: &wasmtime::component::Instance,
    store: &mut Store<GuestState>,
    func: &ComponentExportIndex,
) -> wasmtime::Result<TypedFunc<(&'a str, &'a [I]), (BoundedList<Result<I::Raw, RawPolicyError>>,)>>
{
    instance.get_typed_func(store, func)
}

/// Runs `f`, which enters a guest, where wasmtime-wasi's synchronous streams can block:
/// under `block_in_place` inside a multi-threaded tokio runtime, on a scoped thread of
/// its own inside a current-thread runtime, and directly outside tokio.
fn on_guest_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => {
            std::thread::scope(|scope| scope.spawn(f).join().expect("policy thread does not panic"))
        }
        Err(_) => f(),
    }
}

fn wrong_kind<T>(c: &LoadedComponent, wanted: PolicyKind) -> Invocation<T> {
    Invocation {
        outcome: Err(PolicyFailure::InvalidOutput {
            detail: format!(
                "component {} is a {} policy, called as {wanted}",
                c.sha256, c.kind
            ),
        }),
        fuel_used: 0,
        guest_output: String::new(),
        call_decisions: None,
    }
}

fn common_checks(
    reason_code: &str,
    explanation: &str,
    limits: &PolicyLimits,
) -> Result<(), String> {
    let n = reason_code.chars().count();
    if n == 0 || n > limits.max_reason_code_chars {
        return Err(format!(
            "reason-code has {n} characters; must be 1..={}",
            limits.max_reason_code_chars
        ));
    }
    if !reason_code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "reason-code {reason_code:?} must be ASCII letters, digits, '-' or '_'"
        ));
    }
    let n = explanation.chars().count();
    if n == 0 || n > limits.max_explanation_chars {
        return Err(format!(
            "explanation has {n} characters; must be 1..={}",
            limits.max_explanation_chars
        ));
    }
    Ok(())
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
