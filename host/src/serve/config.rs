//! `feegate.toml`: the configuration of `feegate serve`.
//!
//! Every key has a default (an empty file is a valid configuration for one county, the
//! shipped Xianyou policy set, on SQLite). Environment variables override the file:
//! `FEEGATE_<SECTION>__<KEY>`, e.g. `FEEGATE_DATABASE__URL=postgres://…` or
//! `FEEGATE_SERVER__LISTEN=0.0.0.0:8080` (the `[[county]]` list is file-only); `FEEGATE_DB`,
//! which the other commands read, is the database URL too (`FEEGATE_DATABASE__URL` wins).
//!
//! An invalid file is refused before anything starts, with the line, the column and the
//! reason (`feegate.toml:7:12: invalid cron expression for schedule.cutoff …`).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! log_format = "text"          # or "json"
//!
//! [database]
//! url = "sqlite://feegate.db"
//!
//! [meters]
//! timeout_ms = 2000             # 10..=120000
//! retries = 2                   # 0..=10
//! retry_backoff_ms = 200        # 0..=60000, doubled each retry
//!
//! # Cron expressions (sec min hour day-of-month month day-of-week), county local time.
//! [schedule]
//! morning = "0 10 0 * * *"     # collection → settlement → warnings for the new day
//! outbox = "0 */5 * * * *"     # SMS delivery (quiet hours are the outbox's own rule)
//! cutoff = "0 0 9 * * *"       # cutoff decisions (the safety floor still applies)
//! relays = "0 * * * * *"       # approved work orders, relay commands, reconnection sweep
//! catch_up_days = 7
//!
//! [registry]
//! poll_seconds = 2
//!
//! [channels]                   # payment endpoints; none unless set
//! config = "channels.toml"
//!
//! [cluster]                    # several hosts on one database
//! host_id = "<hostname>-<pid>"
//! lease_seconds = 15
//!
//! [settlement]
//! batch_accounts = 1000        # accounts per settlement / warning transaction
//! max_price_yuan_per_kwh = "5.0000"  # charge ceiling: a dearer tariff decision is held
//!
//! [clock]                      # rehearsals and crash tests only; 0 in production
//! shift_seconds = 0
//!
//! [[county]]
//! policy_set = "policies/xianyou"
//! components = "target/wasm32-wasip2/plugin"
//! utc_offset_hours = 8
//! ```

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}; pass an existing file with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type or an unknown key.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    /// A value is out of its range (file or environment).
    #[error("{0}")]
    Range(String),
    /// A value from the environment is not valid.
    #[error("environment override: {0}; fix or unset the FEEGATE_<SECTION>__<KEY> variable")]
    Env(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub server: ServerSection,
    pub database: DatabaseSection,
    pub meters: MetersSection,
    pub schedule: ScheduleSection,
    pub registry: RegistrySection,
    pub cluster: ClusterSection,
    pub channels: ChannelsSection,
    pub clock: ClockSection,
    pub settlement: SettlementSection,
    /// `[auth]`: console sessions and the failed-login limit (see `auth::store::AuthConfig`).
    pub auth: crate::auth::store::AuthConfig,
    /// The counties this host serves. Default: the shipped Xianyou policy set.
    #[serde(rename = "county")]
    pub counties: Vec<CountySection>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            server: ServerSection::default(),
            database: DatabaseSection::default(),
            meters: MetersSection::default(),
            schedule: ScheduleSection::default(),
            registry: RegistrySection::default(),
            cluster: ClusterSection::default(),
            channels: ChannelsSection::default(),
            clock: ClockSection::default(),
            settlement: SettlementSection::default(),
            auth: crate::auth::store::AuthConfig::default(),
            counties: vec![CountySection::default()],
        }
    }
}

/// `[server]`: the HTTP listener and logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address of the HTTP API, health and metrics. Default 127.0.0.1:8080 (loopback:
    /// put a TLS-terminating proxy in front to expose it).
    pub listen: SocketAddr,
    /// `text` (default) or `json` (one JSON object per line, for log shippers).
    pub log_format: LogFormat,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log_format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://PATH` (default `sqlite://feegate.db`, created if missing) or
    /// `postgres://USER@HOST:PORT/DB`.
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://feegate.db".into(),
        }
    }
}

/// `[meters]`: the meter links' request policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetersSection {
    /// Per-request timeout, milliseconds, 10..=120,000. Default 2,000.
    pub timeout_ms: u64,
    /// Retries after a timeout or a garbled reply, 0..=10. Default 2.
    pub retries: u32,
    /// Wait before the first retry, milliseconds (0..=60,000), doubled each retry. Default 200.
    pub retry_backoff_ms: u64,
}

impl Default for MetersSection {
    fn default() -> Self {
        Self {
            timeout_ms: 2000,
            retries: 2,
            retry_backoff_ms: 200,
        }
    }
}

/// `[schedule]`: when each job runs, as cron expressions with seconds
/// (`sec min hour day-of-month month day-of-week`) in the county's local time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    /// Collection of the daily frozen readings, settlement of yesterday, warnings.
    /// Default 00:10 every day (meters freeze at 00:00).
    pub morning: CronSpec,
    /// SMS outbox delivery. Default every 5 minutes.
    pub outbox: CronSpec,
    /// Cutoff decisions. Default 09:00 every day.
    pub cutoff: CronSpec,
    /// Approved work orders, relay commands and their verification, the reconnection
    /// sweep. Default every minute.
    pub relays: CronSpec,
    /// After downtime, missed mornings are run in order, at most this many days back
    /// (default 7); each business day runs once (`job_runs`).
    pub catch_up_days: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        let spec = |s: &str| CronSpec::from_str(s).expect("default cron expression");
        Self {
            morning: spec("0 10 0 * * *"),
            outbox: spec("0 */5 * * * *"),
            cutoff: spec("0 0 9 * * *"),
            relays: spec("0 * * * * *"),
            catch_up_days: 7,
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// How often the registry is checked for activations (`feegate policy activate`),
    /// seconds. Default 2: an activation takes effect within this long.
    pub poll_seconds: u64,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self { poll_seconds: 2 }
    }
}

/// `[cluster]`: several hosts sharing one database (PostgreSQL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// This host's name in `county_leases`; unique per process. Default
    /// `<hostname>-<pid>`.
    pub host_id: String,
    /// How long a county lease lasts without renewal, seconds (renewed every third of
    /// it). A dead host's counties are taken over within this long. Default 15; at
    /// least 3.
    pub lease_seconds: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "feegate".into());
        Self {
            host_id: format!("{host}-{}", std::process::id()),
            lease_seconds: 15,
        }
    }
}

/// `[channels]`: payment channel endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsSection {
    /// The channels file (secrets, public keys, limits, auto-debit; see README
    /// "Payments"). None (default): no payment endpoints on this host.
    pub config: Option<PathBuf>,
}

/// `[clock]`: the county clocks' relation to the system clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSection {
    /// Seconds added to every county's local time (negative: earlier). Default 0, the
    /// only value for production. A rehearsal or a crash test sets it to run a chosen
    /// business day with real processes — e.g. a weekday 10:00 in a year the county
    /// calendar covers, so the safety floor lets trips through — and gives every
    /// restart the same value, so time goes on where it was. File only (no
    /// environment override); a non-zero shift is logged as a warning at start.
    pub shift_seconds: i64,
}

/// `[settlement]`: how the daily settlement and warnings are batched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementSection {
    /// Accounts per batch, 1..=10,000 (default 1,000): one transaction each
    /// (`crate::config::SettlementConfig::batch_accounts`).
    pub batch_accounts: usize,
    /// The charge ceiling, yuan per kWh, as a quoted decimal (`"5.0000"`): a tariff
    /// decision above kWh × this is held, not posted
    /// (`crate::config::PolicyLimits::max_price_yuan_per_kwh`). Over 0, at most 100.
    /// Plain digits and a point only (`crate::channels::plain_decimal`): no exponent, no
    /// unquoted number (a TOML float is not exact).
    #[serde(deserialize_with = "plain_price")]
    pub max_price_yuan_per_kwh: rust_decimal::Decimal,
}

impl Default for SettlementSection {
    fn default() -> Self {
        Self {
            batch_accounts: crate::settlement::BATCH_ACCOUNTS,
            max_price_yuan_per_kwh: crate::settlement::MAX_PRICE_YUAN_PER_KWH,
        }
    }
}

/// A price written as a quoted plain decimal (`"5.0000"`), for
/// [`SettlementSection::max_price_yuan_per_kwh`].
fn plain_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<rust_decimal::Decimal, D::Error> {
    let text = String::deserialize(d)?;
    crate::channels::plain_decimal(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a price: write yuan per kWh as a quoted plain decimal, e.g. \"5.0000\" (no exponent or sign)"
        ))
    })
}

/// `[[county]]`: one county this host serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CountySection {
    /// Policy set directory (`policies/<county>`).
    pub policy_set: PathBuf,
    /// Built policy components (`make plugins`).
    pub components: PathBuf,
    /// The county's offset from UTC, hours. Default 8 (China Standard Time; no DST).
    pub utc_offset_hours: i32,
}

impl Default for CountySection {
    fn default() -> Self {
        Self {
            policy_set: "policies/xianyou".into(),
            components: "target/wasm32-wasip2/plugin".into(),
            utc_offset_hours: 8,
        }
    }
}

/// A validated cron expression (the `cron` crate's syntax, seconds first).
#[derive(Debug, Clone)]
pub struct CronSpec {
    text: String,
    schedule: cron::Schedule,
}

impl CronSpec {
    /// The parsed schedule.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for CronSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        cron::Schedule::from_str(s)
            .map(|schedule| CronSpec {
                text: s.to_string(),
                schedule,
            })
            .map_err(|e| {
                format!(
                    "invalid cron expression {s:?} ({e}); write six fields: sec min hour day-of-month month day-of-week, e.g. \"0 10 0 * * *\""
                )
            })
    }
}

impl Serialize for CronSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CronSpec::from_str(&text).map_err(serde::de::Error::custom)
    }
}

impl ServeConfig {
    /// Reads `path` (or only defaults when `None`) and applies environment overrides
    /// from `env` (pass `std::env::vars()`).
    ///
    /// The file alone is checked first, so its errors carry a line and column; then
    /// defaults, file and environment are merged (environment wins).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            check_file(path, &text)?;
            figment = figment.merge(Toml::string(&text));
        }
        figment = figment.merge(Serialized::defaults(env_overrides(env)?));
        let config: ServeConfig = figment.extract().map_err(env_error)?;
        config.check()?;
        Ok(config)
    }
}

impl ServeConfig {
    /// Ranges serde cannot express: refused at load, before anything starts.
    fn check(&self) -> Result<(), ConfigError> {
        let range = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Range(what.to_string()))
            }
        };
        range(
            (1..=366).contains(&self.schedule.catch_up_days),
            "schedule.catch_up_days must be 1..=366 (days of missed mornings run after downtime)",
        )?;
        range(
            (3..=3600).contains(&self.cluster.lease_seconds),
            "cluster.lease_seconds must be 3..=3600",
        )?;
        range(
            (1..=3600).contains(&self.registry.poll_seconds),
            "registry.poll_seconds must be 1..=3600",
        )?;
        range(
            (300..=7 * 86_400).contains(&self.auth.session_seconds),
            "auth.session_seconds must be 300..=604800 (5 minutes to 7 days)",
        )?;
        range(
            (60..=86_400).contains(&self.auth.failure_window_seconds)
                && (1..=100).contains(&self.auth.max_failures),
            "auth.failure_window_seconds must be 60..=86400 and auth.max_failures 1..=100",
        )?;
        range(
            (10..=120_000).contains(&self.meters.timeout_ms)
                && self.meters.retries <= 10
                && self.meters.retry_backoff_ms <= 60_000,
            "meters.timeout_ms must be 10..=120000 (0 would fail every read), meters.retries 0..=10 and meters.retry_backoff_ms 0..=60000",
        )?;
        range(
            (1..=10_000).contains(&self.settlement.batch_accounts),
            "settlement.batch_accounts must be 1..=10000",
        )?;
        range(
            self.settlement.max_price_yuan_per_kwh > rust_decimal::Decimal::ZERO
                && self.settlement.max_price_yuan_per_kwh <= rust_decimal::Decimal::ONE_HUNDRED,
            "settlement.max_price_yuan_per_kwh must be over 0 and at most 100 (yuan per kWh, quoted: \"5.0000\")",
        )?;
        range(
            self.clock.shift_seconds.unsigned_abs() <= 100 * 366 * 86_400,
            "clock.shift_seconds must be within 100 years either way",
        )?;
        range(
            !self.cluster.host_id.trim().is_empty(),
            "cluster.host_id must not be empty",
        )?;
        range(
            !self.counties.is_empty(),
            "at least one [[county]] is needed",
        )
    }
}

/// The sections environment variables may override.
const ENV_SECTIONS: [&str; 9] = [
    "server",
    "database",
    "meters",
    "schedule",
    "registry",
    "cluster",
    "channels",
    "auth",
    "settlement",
];

/// `FEEGATE_<SECTION>__<KEY>=value` pairs as a nested dictionary. A key whose default is a
/// string (a host id, a URL, an address, a cron expression) takes the value as written, so
/// `FEEGATE_CLUSTER__HOST_ID=42` is the host id "42"; other values are parsed the way
/// figment parses environment values (numbers, booleans, else strings). A variable naming
/// a section that does not exist is refused, so a typo cannot silently change nothing.
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Result<Dict, ConfigError> {
    let mut dict = Dict::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    // `FEEGATE_DB`, which every other command reads, names the database here too, so
    // `policy activate` and `serve` cannot silently use two databases;
    // `FEEGATE_DATABASE__URL` wins when both are set.
    if let Some(db) = env
        .iter()
        .find(|(k, _)| k == "FEEGATE_DB")
        .map(|(_, v)| v.clone())
        && !env.iter().any(|(k, _)| k == "FEEGATE_DATABASE__URL")
    {
        env.push(("FEEGATE_DATABASE__URL".into(), db));
    }
    let defaults = Serialized::defaults(ServeConfig::default())
        .data()
        .ok()
        .and_then(|mut profiles| profiles.remove(&figment::Profile::Default))
        .unwrap_or_default();
    for (name, value) in env {
        let Some((section, key)) = name
            .strip_prefix("FEEGATE_")
            .and_then(|rest| rest.split_once("__"))
        else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        if !ENV_SECTIONS.contains(&section.as_str()) {
            return Err(ConfigError::Env(format!(
                "{name}: there is no section [{section}]; sections are {}",
                ENV_SECTIONS.join(", ")
            )));
        }
        let default_is_string = matches!(
            defaults.get(&section),
            Some(Value::Dict(_, keys)) if matches!(keys.get(&key), Some(Value::String(..)))
        );
        let parsed: Value = if default_is_string {
            Value::from(value)
        } else {
            value.parse().unwrap_or_else(|never| match never {})
        };
        let entry = dict
            .entry(section)
            .or_insert_with(|| Value::from(Dict::new()));
        if let Value::Dict(_, keys) = entry {
            keys.insert(key, parsed);
        }
    }
    Ok(dict)
}

/// A merge error, which only an environment value can cause (the file was checked on its
/// own): names the variable and what the key takes, in words rather than Rust types.
fn env_error(e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let path = e.path.join(".");
    let variable = format!(
        "FEEGATE_{}",
        e.path
            .iter()
            .map(|p| p.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    );
    let wants = |expected: &str| -> String {
        match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
            "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
            "f32" | "f64" => "a number".into(),
            "a boolean" | "bool" => "true or false".into(),
            other => other.to_string(),
        }
    };
    let reason = match &e.kind {
        Kind::InvalidType(actual, expected) => {
            format!("{actual} given, {} expected", wants(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("{actual} given, {} expected", wants(expected))
        }
        Kind::UnknownField(field, _) => format!("[{path}] has no key {field:?}"),
        other => other.to_string(),
    };
    ConfigError::Env(format!("{variable} ({path}): {reason}"))
}

/// Parses the file on its own, for errors with a position.
fn check_file(path: &Path, text: &str) -> Result<(), ConfigError> {
    let err = match toml::from_str::<ServeConfig>(text) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let (line, column) = err
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        })
        .unwrap_or((1, 1));
    Err(ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        reason: err.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feegate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn no_file_and_an_empty_file_mean_the_defaults() {
        let none = ServeConfig::load(None, []).unwrap();
        assert_eq!(none, ServeConfig::default());
        let (_d, path) = write("");
        assert_eq!(ServeConfig::load(Some(&path), []).unwrap(), none);
        assert_eq!(none.counties.len(), 1);
        assert_eq!(none.database.url, "sqlite://feegate.db");
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let (_d, path) = write(
            "[database]\nurl = \"sqlite://county.db\"\n[meters]\nretries = 5\n\
             [schedule]\ncutoff = \"0 30 10 * * *\"\n\
             [[county]]\npolicy_set = \"policies/a\"\n[[county]]\npolicy_set = \"policies/b\"\nutc_offset_hours = 7\n",
        );
        let env = [
            (
                "FEEGATE_DATABASE__URL",
                "postgres://root@127.0.0.1:5432/test",
            ),
            ("FEEGATE_METERS__TIMEOUT_MS", "750"),
            ("FEEGATE_SERVER__LOG_FORMAT", "json"),
            // Not a config key: other FEEGATE_ variables are the CLI's own.
            ("FEEGATE_COMPONENTS", "elsewhere"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = ServeConfig::load(Some(&path), env).unwrap();
        assert_eq!(c.database.url, "postgres://root@127.0.0.1:5432/test");
        assert_eq!(c.meters.timeout_ms, 750);
        assert_eq!(c.meters.retries, 5);
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(
            c.schedule.cutoff,
            CronSpec::from_str("0 30 10 * * *").unwrap()
        );
        assert_eq!(c.schedule.morning, ScheduleSection::default().morning);
        assert_eq!(
            c.counties
                .iter()
                .map(|c| (c.policy_set.clone(), c.utc_offset_hours))
                .collect::<Vec<_>>(),
            vec![("policies/a".into(), 8), ("policies/b".into(), 7)]
        );
    }

    #[test]
    fn an_invalid_file_is_refused_with_its_line_column_and_reason() {
        let cases = [
            (
                "[server]\nlisten = \"nowhere\"\n",
                2,
                "invalid socket address",
            ),
            (
                "[schedule]\n\nmorning = \"every day\"\n",
                3,
                "invalid cron expression",
            ),
            ("[meters]\nretries = -1\n", 2, "invalid value"),
            ("[databse]\nurl = \"x\"\n", 1, "unknown field `databse`"),
            ("[server\n", 1, "unclosed table"),
            (
                "[server]\nlog_format = \"xml\"\n",
                2,
                "unknown variant `xml`",
            ),
            (
                "[settlement]\nmax_price_yuan_per_kwh = \"1e1\"\n",
                2,
                "is not a price",
            ),
            (
                "[settlement]\nmax_price_yuan_per_kwh = 5.5\n",
                2,
                "invalid type",
            ),
        ];
        for (text, line, reason) in cases {
            let (_d, path) = write(text);
            match ServeConfig::load(Some(&path), []) {
                Err(ConfigError::Invalid {
                    line: l, reason: r, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {r}");
                    assert!(r.contains(reason), "{text:?}: {r:?} lacks {reason:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn out_of_range_values_are_refused_before_anything_starts() {
        for (text, needle) in [
            ("[schedule]\ncatch_up_days = 4000000000\n", "catch_up_days"),
            ("[schedule]\ncatch_up_days = 0\n", "catch_up_days"),
            ("[cluster]\nlease_seconds = 0\n", "lease_seconds"),
            ("[registry]\npoll_seconds = 0\n", "poll_seconds"),
            ("[cluster]\nhost_id = \" \"\n", "host_id"),
            ("[clock]\nshift_seconds = -9999999999\n", "shift_seconds"),
            ("[settlement]\nbatch_accounts = 0\n", "batch_accounts"),
            (
                "[settlement]\nmax_price_yuan_per_kwh = \"0\"\n",
                "max_price_yuan_per_kwh",
            ),
            ("[meters]\ntimeout_ms = 0\n", "timeout_ms"),
            ("[meters]\nretries = 11\n", "retries"),
            ("[meters]\nretry_backoff_ms = 3600000\n", "retry_backoff_ms"),
        ] {
            let (_d, path) = write(text);
            match ServeConfig::load(Some(&path), []) {
                Err(ConfigError::Range(m)) => assert!(m.contains(needle), "{text:?}: {m}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn feegate_db_names_the_database_unless_the_section_variable_does() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = ServeConfig::load(None, env(&[("FEEGATE_DB", "sqlite://a.db")])).unwrap();
        assert_eq!(c.database.url, "sqlite://a.db");
        let c = ServeConfig::load(
            None,
            env(&[
                ("FEEGATE_DB", "sqlite://a.db"),
                ("FEEGATE_DATABASE__URL", "sqlite://b.db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.url, "sqlite://b.db");
    }

    #[test]
    fn a_bad_environment_value_is_refused_naming_the_key() {
        let err = ServeConfig::load(
            None,
            [("FEEGATE_METERS__RETRIES".to_string(), "many".to_string())],
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Env(ref m)
                if m.contains("FEEGATE_METERS__RETRIES") && m.contains("a whole number")
                    && !m.contains("u32")),
            "{err}"
        );
    }

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        // A numeric host id is a host id, not a number.
        let c = ServeConfig::load(
            None,
            env(&[
                ("FEEGATE_CLUSTER__HOST_ID", "42"),
                ("FEEGATE_METERS__RETRIES", "5"),
                ("FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH", "2.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cluster.host_id, "42");
        assert_eq!(c.meters.retries, 5);
        assert_eq!(
            c.settlement.max_price_yuan_per_kwh,
            rust_decimal::Decimal::new(25, 1)
        );
        // A section that does not exist is refused, naming the variable.
        let err = ServeConfig::load(None, env(&[("FEEGATE_METRES__RETRIES", "5")])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Env(ref m) if m.contains("FEEGATE_METRES__RETRIES") && m.contains("no section [metres]")),
            "{err}"
        );
        // So is a key the section does not have.
        let err = ServeConfig::load(None, env(&[("FEEGATE_METERS__RETRY", "5")])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Env(ref m) if m.contains("retry")),
            "{err}"
        );
    }
}
