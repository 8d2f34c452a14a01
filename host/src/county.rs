//! A county at run time: its policy set's components loaded into the engine, its
//! calendar and its safety floor.
//!
//! Components are held in an immutable [`PolicySnapshot`] behind a lock; a job takes a
//! snapshot when it starts and finishes on it, so a later activation never changes
//! the rules half-way through a run.

use crate::calendar::CountyCalendar;
use crate::config::FloorConfig;
use crate::floor::SafetyFloor;
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

/// The components in force for a county at one moment.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub rollout_stage: RolloutStage,
    components: BTreeMap<PolicyKind, Arc<ActiveComponent>>,
}

impl PolicySnapshot {
    /// The component for `kind` (a snapshot always has all four).
    pub fn get(&self, kind: PolicyKind) -> &ActiveComponent {
        &self.components[&kind]
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
            components.insert(
                *kind,
                Arc::new(ActiveComponent {
                    component,
                    parameters_json: entry.parameters_json.clone(),
                }),
            );
        }
        let calendar = CountyCalendar::new(&set.calendar);
        let floor = SafetyFloor::new(host_floor, &set.floor, calendar)
            .map_err(|e| anyhow::anyhow!("policy set of {}: [safety_floor]: {e}", set.county))?;
        Ok(Self {
            county: set.county,
            display_name: set.display_name,
            floor,
            policies: RwLock::new(Arc::new(PolicySnapshot {
                rollout_stage: set.rollout_stage,
                components,
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
        let mut guard = self.policies.write().expect("policy lock poisoned");
        let mut components = guard.components.clone();
        components.insert(active.component.kind, active);
        *guard = Arc::new(PolicySnapshot {
            rollout_stage: guard.rollout_stage,
            components,
        });
    }

    /// Moves the county to another rollout stage; jobs already running keep theirs.
    pub fn set_rollout_stage(&self, stage: RolloutStage) {
        let mut guard = self.policies.write().expect("policy lock poisoned");
        *guard = Arc::new(PolicySnapshot {
            rollout_stage: stage,
            components: guard.components.clone(),
        });
    }
}
