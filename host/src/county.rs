//! A county at run time: its policy set's components loaded into the engine, its
//! calendar and its safety floor.
//!
//! Components are held in an immutable [`PolicySnapshot`] behind a lock; a job takes a
//! snapshot when it starts and finishes on it, so a later activation never changes
//! the rules half-way through a run.

use crate::calendar::CountyCalendar;
use crate::config::FloorConfig;
use crate::floor::SafetyFloor;
use crate::outbox::MessagesPolicy;
use crate::policy::set::{PolicySet, RolloutStage};
use crate::policy::{LoadedComponent, PolicyEngine, PolicyKind};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// A loaded component with the parameters its county gives it.
#[derive(Debug)]
pub struct ActiveComponent {
    pub component: LoadedComponent,
    /// Canonical JSON parameters from the policy set.
    pub parameters_json: String,
}

/// A published candidate running beside the version in force on live decisions
/// (shadow mode, `feegate policy shadow`): its outputs go to `shadow_decisions`, never
/// to the ledger, the SMS outbox or a relay. See [`crate::shadow`].
#[derive(Debug)]
pub struct ShadowComponent {
    /// The `policy_shadows` start event that set it.
    pub shadow_event_id: i64,
    pub publication_id: i64,
    /// The candidate component with its published parameters (canonical JSON).
    pub active: Arc<ActiveComponent>,
    /// County-local 'YYYY-MM-DD HH:MM:SS' from which it no longer runs (`--until`).
    pub until: Option<String>,
    /// Resource failures (fuel, memory, time) in a row; at
    /// [`crate::shadow::BREAKER_AFTER`] this host stops running the shadow, so a looping
    /// candidate costs the live job a few limit-long runs, not one per decision.
    pub resource_failures_in_a_row: std::sync::atomic::AtomicU32,
}

/// The components in force for a county at one moment, and the shadows beside them.
#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    pub rollout_stage: RolloutStage,
    /// The county's message rules (policy set `[messages]`).
    pub messages: Arc<MessagesPolicy>,
    components: BTreeMap<PolicyKind, Arc<ActiveComponent>>,
    shadows: BTreeMap<PolicyKind, Arc<ShadowComponent>>,
}

impl PolicySnapshot {
    /// The component for `kind` (a snapshot always has all four).
    pub fn get(&self, kind: PolicyKind) -> &ActiveComponent {
        &self.components[&kind]
    }

    /// The same component as [`Self::get`], shared (to put it in force again later).
    pub fn shared(&self, kind: PolicyKind) -> Arc<ActiveComponent> {
        self.components[&kind].clone()
    }

    /// The shadow running beside `kind`, if one is set, ready to pass to the decision
    /// log ([`crate::decision_log::DecisionRecord::shadow`]).
    pub fn shadow<'a>(
        &'a self,
        engine: &'a PolicyEngine,
        kind: PolicyKind,
    ) -> Option<crate::shadow::Shadow<'a>> {
        self.shadows
            .get(&kind)
            .map(|component| crate::shadow::Shadow {
                engine,
                component: component.as_ref(),
            })
    }

    /// The shadow component set for `kind`, if any.
    pub fn shadow_component(&self, kind: PolicyKind) -> Option<&Arc<ShadowComponent>> {
        self.shadows.get(&kind)
    }
}

/// A county served by this host.
#[derive(Debug)]
pub struct County {
    pub county: String,
    pub display_name: String,
    pub floor: SafetyFloor,
    policies: RwLock<Arc<PolicySnapshot>>,
}

impl County {
    /// Loads a policy set directory, compiling each component from `components_dir`
    /// (where `make plugins` puts them).
    pub fn load(
        engine: &PolicyEngine,
        set_dir: &Path,
        components_dir: &Path,
        host_floor: FloorConfig,
    ) -> anyhow::Result<Self> {
        let set = PolicySet::load(set_dir)?;
        let mut components = BTreeMap::new();
        for (kind, entry) in &set.components {
            let path = entry.wasm_path(components_dir);
            let bytes = std::fs::read(&path).with_context(|| {
                format!("cannot read the {kind} component {}; build the plugins first with `make plugins`", path.display())
            })?;
            let component = engine.load(*kind, &bytes).with_context(|| {
                format!(
                    "{} refused as the {kind} policy of {}",
                    path.display(),
                    set.county
                )
            })?;
            let active = ActiveComponent {
                component,
                parameters_json: entry.parameters_json.clone(),
            };
            probe(engine, &active).map_err(|e| {
                anyhow::anyhow!(
                    "policy set of {}: the {kind} component ({}) cannot work with its [{kind}.parameters]: {e}",
                    set.county,
                    path.display()
                )
            })?;
            components.insert(*kind, Arc::new(active));
        }
        let messages = MessagesPolicy::from_file(&set.messages)
            .map_err(|e| anyhow::anyhow!("policy set of {}: [messages]: {e}", set.county))?;
        let calendar = CountyCalendar::new(&set.calendar);
        let floor = SafetyFloor::new(host_floor, &set.floor, calendar)
            .map_err(|e| anyhow::anyhow!("policy set of {}: [safety_floor]: {e}", set.county))?;
        Ok(Self {
            county: set.county,
            display_name: set.display_name,
            floor,
            policies: RwLock::new(Arc::new(PolicySnapshot {
                rollout_stage: set.rollout_stage,
                messages: Arc::new(messages),
                components,
                shadows: BTreeMap::new(),
            })),
        })
    }

    /// The policies in force now. Hold the returned `Arc` for the whole of a job.
    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.policies.read().expect("policy lock poisoned").clone()
    }

    /// Puts a component in force for its kind; jobs already running keep their snapshot.
    pub fn activate(&self, active: ActiveComponent) {
        self.activate_shared(Arc::new(active));
    }

    /// [`County::activate`] for a component already shared (the registry watcher keeps
    /// loaded versions cached, so a rollback swaps without recompiling).
    pub fn activate_shared(&self, active: Arc<ActiveComponent>) {
        self.update(|next| {
            next.components.insert(active.component.kind, active);
        });
    }

    /// Sets (or with `None` ends) the shadow beside `kind`; jobs already running keep
    /// their snapshot.
    pub fn set_shadow(&self, kind: PolicyKind, shadow: Option<Arc<ShadowComponent>>) {
        self.update(|next| {
            match shadow {
                Some(s) => next.shadows.insert(kind, s),
                None => next.shadows.remove(&kind),
            };
        });
    }

    /// Moves the county to another rollout stage; jobs already running keep theirs.
    pub fn set_rollout_stage(&self, stage: RolloutStage) {
        self.update(|next| next.rollout_stage = stage);
    }

    /// Replaces the snapshot by a changed copy; holders of the old one keep it.
    fn update(&self, change: impl FnOnce(&mut PolicySnapshot)) {
        let mut guard = self.policies.write().expect("policy lock poisoned");
        let mut next = PolicySnapshot::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }
}

/// Runs one ordinary decision through a component with its county parameters, so a set
/// whose parameters the component refuses (a price of "abc", a misspelt key) fails at
/// load with the component's own message, not later as a hold on every account.
pub fn probe(
    engine: &PolicyEngine,
    active: &ActiveComponent,
) -> Result<(), crate::policy::PolicyFailure> {
    probe_with(engine, active, false)
}

/// [`probe`], and for a tariff also the host's charge ceiling
/// ([`crate::config::PolicyLimits::max_price_yuan_per_kwh`]): a decision (10 kWh on a
/// January day, nothing used before) that charges more fails as `InvalidOutput`, since
/// settlement would hold every account it prices. The check `policy activate` and
/// `policy rollback` make before recording. (The running host's swap and the load do not
/// refuse on the ceiling: keeping an older version in force would charge other prices
/// than the registry says, where the activated one is held account by account, visibly.)
pub fn probe_within_ceiling(
    engine: &PolicyEngine,
    active: &ActiveComponent,
) -> Result<(), crate::policy::PolicyFailure> {
    probe_with(engine, active, true)
}

fn probe_with(
    engine: &PolicyEngine,
    active: &ActiveComponent,
    ceiling: bool,
) -> Result<(), crate::policy::PolicyFailure> {
    use crate::policy::bindings::*;
    let day = Date {
        year: 2013,
        month: 1,
        day: 7,
    };
    let yuan = |fen| crate::policy::convert::fen_to_wit(fen);
    let agreement = Agreement {
        alarm_threshold: yuan(5_000),
        auto_debit_amount: None,
        keep_power: false,
        mobile_verified: true,
    };
    let params = active.parameters_json.clone();
    let c = &active.component;
    match c.kind {
        PolicyKind::Tariff => {
            let kwh = yuan(1_000);
            let input = TariffInput {
                account_id: "probe".into(),
                customer_class: CustomerClass::LowVoltageResidential,
                period_first: day,
                period_last: day,
                kwh,
                year_to_date_kwh: yuan(0),
                month_to_date_kwh: yuan(0),
                tou_split: vec![],
                time_of_use_elected: false,
                parameters: String::new(),
            };
            let out = engine
                .price(
                    c,
                    &TariffInput {
                        parameters: params.clone(),
                        ..input.clone()
                    },
                )
                .outcome?;
            // Settlement prices many periods per call when the component can (contract
            // 1.1 `price-batch`): that must answer each input as `price` does, whatever
            // else is in the call, or the version is not put in force.
            let checks: Vec<TariffInput> = [(1_000, 0), (50_000, 276_000), (300, 479_500)]
                .into_iter()
                .map(|(kwh_centi, ytd_centi)| TariffInput {
                    kwh: yuan(kwh_centi),
                    year_to_date_kwh: yuan(ytd_centi),
                    ..input.clone()
                })
                .collect();
            if let Some(detail) = engine.price_batch_disagreement(c, &params, &checks) {
                return Err(crate::policy::PolicyFailure::InvalidOutput { detail });
            }
            let max = engine.limits().max_price_yuan_per_kwh;
            match crate::settlement::over_ceiling(&kwh, out.charge_fen, max) {
                Some(_) if ceiling => Err(crate::policy::PolicyFailure::InvalidOutput {
                    detail: format!(
                        "its check decision charges {} yuan for 10 kWh, more than the host's charge ceiling of {max} yuan/kWh, so settlement would hold every account it prices; if these prices are right, raise [settlement] max_price_yuan_per_kwh on the hosts (FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH for the `policy` commands too)",
                        crate::money::format_yuan(out.charge_fen)
                    ),
                }),
                _ => Ok(()),
            }
        }
        PolicyKind::Warning => {
            let input = WarningInput {
                account_id: "probe".into(),
                today: day,
                balance: yuan(10_000),
                agreement,
                recent_days: vec![],
                days_in_arrears: 0,
                level_already_notified: 0,
                auto_debit_in_flight: false,
                parameters: String::new(),
            };
            engine
                .assess(
                    c,
                    &WarningInput {
                        parameters: params.clone(),
                        ..input.clone()
                    },
                )
                .outcome?;
            // The warning stage assesses many balances per call when it can (contract
            // 1.1 `assess-batch`): checked as the tariff's `price-batch` is.
            let checks: Vec<WarningInput> = [10_000, 900, -2_500]
                .into_iter()
                .map(|balance_fen| WarningInput {
                    balance: yuan(balance_fen),
                    ..input.clone()
                })
                .collect();
            match engine.assess_batch_disagreement(c, &params, &checks) {
                Some(detail) => Err(crate::policy::PolicyFailure::InvalidOutput { detail }),
                None => Ok(()),
            }
        }
        PolicyKind::Notice => engine
            .word(
                c,
                &NoticeInput {
                    kind: NoticeKind::PaymentReceived,
                    account_id: "probe".into(),
                    customer_name: "probe".into(),
                    today: day,
                    balance: yuan(10_000),
                    days_of_credit_left: None,
                    amount: Some(yuan(5_000)),
                    deadline: None,
                    parameters: params,
                },
            )
            .outcome
            .map(drop),
        PolicyKind::Cutoff => engine
            .decide(
                c,
                &CutoffInput {
                    account_id: "probe".into(),
                    now: LocalTime {
                        date: day,
                        hour: 10,
                        minute: 0,
                    },
                    calendar: CalendarFacts {
                        today: day,
                        iso_weekday: 1,
                        public_holiday: false,
                        extreme_weather: false,
                    },
                    balance: yuan(10_000),
                    agreement,
                    days_in_arrears: 0,
                    disconnection_notice_delivered_at: None,
                    rollout_stage: crate::policy::bindings::RolloutStage::ApprovalGated,
                    on_time_topups_in_a_row: 0,
                    topups_total: 0,
                    parameters: params,
                },
            )
            .outcome
            .map(drop),
    }
}
