//! The policy engine: county rules as WebAssembly components.
//!
//! - [`contract`]: which contract versions and WASI imports the host accepts.
//! - [`bindings`]: the Rust shapes of `wit/policy.wit` (generated).
//! - [`engine`]: compile, check, pre-instantiate and run components under limits.
//! - [`convert`]: exact conversions between host values and WIT values.
//! - [`set`]: a county's policy set (`policies/<county>/policy-set.toml`).

pub mod bindings;
pub mod contract;
pub mod convert;
pub mod engine;
pub mod lift;
pub mod set;

pub use engine::{
    Deciding, Invocation, LoadedComponent, PolicyEngine, PolicyFailure, PolicyLoadError,
};

use serde::{Deserialize, Serialize};

/// The four kinds of policy component, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Prices a period's consumption (world `tariff-policy`).
    Tariff,
    /// Assesses a balance after settlement (world `warning-policy`).
    Warning,
    /// Words an SMS (world `notice-policy`).
    Notice,
    /// Decides disconnection and the reconnection mode (world `cutoff-policy`).
    Cutoff,
}

impl PolicyKind {
    /// All kinds, in data-flow order.
    pub const ALL: [PolicyKind; 4] = [Self::Tariff, Self::Warning, Self::Notice, Self::Cutoff];

    /// The kind's name as used in policy sets, the decision log and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tariff => "tariff",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Cutoff => "cutoff",
        }
    }

    /// The WIT interface the component must export, without version.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Tariff => "feegate:policy/tariff",
            Self::Warning => "feegate:policy/warning",
            Self::Notice => "feegate:policy/notice",
            Self::Cutoff => "feegate:policy/cutoff",
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown policy kind {s:?}; expected tariff, warning, notice or cutoff")
            })
    }
}
