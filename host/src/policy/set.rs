//! A county's policy set: `policies/<county>/policy-set.toml`.
//!
//! It names, per policy kind, the plugin whose built component implements it and the
//! parameters handed to it; plus the county's rollout stage, calendar and its additions
//! to the safety floor. See `policies/xianyou/policy-set.toml` for a documented example.

use super::PolicyKind;
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A policy set file could not be used.
#[derive(Debug, Error)]
pub enum PolicySetError {
    #[error(
        "cannot read policy set {path} (paths are relative to the current directory: run from the repository root, or pass --policy-set, or set [[county]] policy_set in feegate.toml)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy set {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "policy set {path} has no [{kind}] table; every county needs tariff, warning, notice and cutoff"
    )]
    MissingKind { path: PathBuf, kind: PolicyKind },
}

/// County rollout stage for disconnection (see `wit/policy.wit`, `rollout-stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStage {
    NotifyOnly,
    ApprovalGated,
    Automatic,
}

/// An "HH:MM" to "HH:MM" window; `from > to` wraps midnight.
#[derive(Debug, Clone, Deserialize)]
pub struct HourWindow {
    pub from: String,
    pub to: String,
}

/// The county's additions to the host safety floor.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CountyFloorFile {
    pub protected_hours: Option<HourWindow>,
    #[serde(default)]
    pub no_cutoff_on_weekends: bool,
    #[serde(default)]
    pub no_cutoff_on_public_holidays: bool,
    pub station_daily_cutoff_cap: Option<u32>,
    pub min_station_read_success_rate: Option<rust_decimal::Decimal>,
}

/// Calendar facts the county declares (public holidays from the State Council's annual
/// notice; extreme-weather days as declared by the county).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CalendarFile {
    #[serde(default)]
    pub public_holidays: Vec<NaiveDate>,
    #[serde(default)]
    pub extreme_weather_days: Vec<NaiveDate>,
}

/// The county's message rules (`[messages]`), read by the host's outbox. Every key is
/// optional; see [`crate::outbox::MessagesPolicy`] for the defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MessagesFile {
    /// No SMS is sent inside this window (queued messages wait). Default 22:00–08:00.
    pub quiet_hours: Option<HourWindow>,
    /// Notice kinds sent once per event (each payment, each relay command) instead of
    /// at most once per account and day.
    #[serde(default)]
    pub per_event_kinds: Vec<String>,
    /// Most segments one SMS body may take; a longer body is refused, never cut.
    pub max_segments: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentEntryFile {
    plugin: String,
    #[serde(default)]
    parameters: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySetFile {
    county: String,
    display_name: String,
    utc_offset: String,
    rollout_stage: RolloutStage,
    #[serde(default)]
    safety_floor: CountyFloorFile,
    #[serde(default)]
    calendar: CalendarFile,
    #[serde(default)]
    messages: MessagesFile,
    tariff: Option<ComponentEntryFile>,
    warning: Option<ComponentEntryFile>,
    notice: Option<ComponentEntryFile>,
    cutoff: Option<ComponentEntryFile>,
}

/// One kind's entry: which plugin and its parameters as canonical JSON (keys sorted).
#[derive(Debug, Clone)]
pub struct ComponentRef {
    pub plugin: String,
    pub parameters_json: String,
}

impl ComponentRef {
    /// Where `make plugins` puts the built component: `<dir>/policy_<plugin>.wasm`.
    pub fn wasm_path(&self, components_dir: &Path) -> PathBuf {
        components_dir.join(format!("policy_{}.wasm", self.plugin.replace('-', "_")))
    }
}

/// A parsed policy set.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub county: String,
    pub display_name: String,
    /// Local offset, e.g. "+08:00" (China Standard Time).
    pub utc_offset: String,
    pub rollout_stage: RolloutStage,
    pub floor: CountyFloorFile,
    pub calendar: CalendarFile,
    pub messages: MessagesFile,
    pub components: BTreeMap<PolicyKind, ComponentRef>,
}

impl PolicySet {
    /// Reads `dir/policy-set.toml`.
    pub fn load(dir: &Path) -> Result<Self, PolicySetError> {
        let path = dir.join("policy-set.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| PolicySetError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses policy-set TOML; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicySetError> {
        let file: PolicySetFile = toml::from_str(text).map_err(|e| PolicySetError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut components = BTreeMap::new();
        for (kind, entry) in [
            (PolicyKind::Tariff, file.tariff),
            (PolicyKind::Warning, file.warning),
            (PolicyKind::Notice, file.notice),
            (PolicyKind::Cutoff, file.cutoff),
        ] {
            let entry = entry.ok_or_else(|| PolicySetError::MissingKind {
                path: path.to_path_buf(),
                kind,
            })?;
            let params =
                serde_json::to_value(entry.parameters.unwrap_or_default()).map_err(|e| {
                    PolicySetError::Parse {
                        path: path.to_path_buf(),
                        message: format!("[{kind}.parameters]: {e}"),
                    }
                })?;
            // serde_json's map is ordered by key, so this string is canonical.
            components.insert(
                kind,
                ComponentRef {
                    plugin: entry.plugin,
                    parameters_json: params.to_string(),
                },
            );
        }
        Ok(Self {
            county: file.county,
            display_name: file.display_name,
            utc_offset: file.utc_offset,
            rollout_stage: file.rollout_stage,
            floor: file.safety_floor,
            calendar: file.calendar,
            messages: file.messages,
            components,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PolicySet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/xianyou");
        PolicySet::load(&dir).expect("shipped policy set parses")
    }

    #[test]
    fn shipped_xianyou_set_carries_the_fujian_example_parameters() {
        let set = shipped();
        assert_eq!(set.county, "xianyou");
        assert_eq!(set.rollout_stage, RolloutStage::ApprovalGated);
        let tariff: serde_json::Value =
            serde_json::from_str(&set.components[&PolicyKind::Tariff].parameters_json).unwrap();
        assert_eq!(tariff["steps"][0]["price"], "0.4983");
        assert_eq!(tariff["steps"][1]["up_to_kwh"], "4800");
        assert_eq!(tariff["steps"][2]["price"], "0.7983");
        assert_eq!(tariff["charge_rounding"], "half-up");
        assert_eq!(tariff["time_of_use"]["valley"]["add"], "-0.2000");
        let warning: serde_json::Value =
            serde_json::from_str(&set.components[&PolicyKind::Warning].parameters_json).unwrap();
        assert_eq!(warning["alarm_threshold_yuan"], "50.00");
        assert_eq!(warning["second_alarm_yuan"], "10.00");
        assert!(
            set.calendar
                .public_holidays
                .contains(&NaiveDate::from_ymd_opt(2013, 2, 11).unwrap())
        );
    }

    #[test]
    fn a_misspelt_key_is_refused_not_ignored() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/xianyou/policy-set.toml"),
        )
        .unwrap();
        for (right, wrong) in [
            ("public_holidays = [", "public_holiday = ["),
            (
                "station_daily_cutoff_cap = 50",
                "station_daily_cutof_cap = 50",
            ),
            ("[cutoff.parameters]", "[cutoff.parameter]"),
        ] {
            assert!(shipped.contains(right), "{right}");
            let err = PolicySet::parse(&shipped.replacen(right, wrong, 1), Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            let key = wrong
                .split([' ', '[', ']', '.'])
                .find(|w| w.len() > 6)
                .unwrap();
            assert!(err.contains(key), "{wrong}: {err}");
        }
    }

    #[test]
    fn missing_kind_is_named() {
        let text = r#"county = "x"
display_name = "X"
utc_offset = "+08:00"
rollout_stage = "automatic"
[tariff]
plugin = "tariff-step"
"#;
        let err = PolicySet::parse(text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("no [warning] table"), "{err}");
    }

    #[test]
    fn unknown_stage_is_refused_with_the_field() {
        let text = "county = \"x\"\ndisplay_name = \"X\"\nutc_offset = \"+08:00\"\nrollout_stage = \"yolo\"\n";
        let err = PolicySet::parse(text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("yolo"), "{err}");
    }
}
