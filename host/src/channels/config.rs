//! Channel configuration: one TOML file naming each payment channel, how it
//! authenticates, and its limits. Secrets may sit in the file or, better, in
//! environment variables named by the file (`secret_env`), so the file can be kept in
//! version control.
//!
//! ```toml
//! # Notifications whose timestamp is further than this from our clock are refused (s).
//! signature_window_seconds = 300
//!
//! [channels.bank-transfer]
//! auth = "hmac-sha256"
//! secret_env = "FEEGATE_SECRET_BANK_TRANSFER"
//! max_amount_yuan = "50000.00"
//!
//! [channels.alipay]
//! auth = "rsa-sha256"
//! public_key_file = "keys/alipay_public.pem"   # PKCS#8 / SPKI PEM, or PKCS#1 "RSA PUBLIC KEY"
//! max_amount_yuan = "5000.00"
//!
//! [auto_debit]                 # 代扣 through the bank channel (optional)
//! bank_url = "https://bank.example/feegate/debits"
//! channel = "bank-transfer"    # its secret signs our requests; results arrive on its notify endpoint
//! max_attempts = 3
//! retry_after_seconds = 600
//! result_timeout_seconds = 86400
//! ```

use crate::money::Fen;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A configuration problem, naming the file or key to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read channel config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("channel config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("channel {channel}: {message}")]
    Channel { channel: String, message: String },
}

/// How a channel signs its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthScheme {
    /// HMAC-SHA256 with a shared secret, hex in the signature header.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// RSA-SHA256, PKCS#1 v1.5 padding, base64 in the signature header (Alipay style).
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default = "default_window")]
    signature_window_seconds: u64,
    channels: BTreeMap<String, RawChannel>,
    auto_debit: Option<AutoDebitConfig>,
}

fn default_window() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    auth: AuthScheme,
    secret: Option<String>,
    secret_env: Option<String>,
    public_key_pem: Option<String>,
    public_key_file: Option<PathBuf>,
    max_amount_yuan: Decimal,
    #[serde(default)]
    console_sandbox: bool,
}

/// The verifying key of a channel.
#[derive(Clone)]
pub enum ChannelKey {
    Hmac(Vec<u8>),
    Rsa(Box<rsa::RsaPublicKey>),
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Self::Hmac(_) => f.write_str("Hmac(<secret>)"),
            Self::Rsa(_) => f.write_str("Rsa(<public key>)"),
        }
    }
}

/// One channel's settings.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub key: ChannelKey,
    /// Largest single payment accepted, in fen.
    pub max_amount_fen: Fen,
    /// `console_sandbox = true` (default false): the web console's customer "pay" button
    /// credits the account through this channel's inbox WITHOUT any money being taken —
    /// for demos, rehearsals and the browser test only. In production the customer pays
    /// in the app, and only the provider's signed notification moves the balance.
    pub console_sandbox: bool,
}

/// Auto-debit (代扣) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDebitConfig {
    /// Where debit requests are POSTed (the bank channel adapter's URL).
    pub bank_url: String,
    /// The channel whose secret signs requests and whose notify endpoint gets results.
    #[serde(default = "default_bank_channel")]
    pub channel: String,
    /// Attempts per request before it fails and a work order is opened. Default 3.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait after a failed attempt, seconds (multiplied by the attempt number). Default 600.
    #[serde(default = "default_retry")]
    pub retry_after_seconds: u64,
    /// A request the bank accepted but never answered fails after this long, seconds.
    /// Default 86,400 (a bank answers by the next business day).
    #[serde(default = "default_result_timeout")]
    pub result_timeout_seconds: u64,
}

fn default_bank_channel() -> String {
    "bank-transfer".into()
}
fn default_attempts() -> u32 {
    3
}
fn default_retry() -> u64 {
    600
}
fn default_result_timeout() -> u64 {
    86_400
}

/// All channels.
#[derive(Debug, Clone)]
pub struct ChannelsConfig {
    /// Accepted distance between a notification's timestamp and our clock, seconds.
    pub signature_window_seconds: u64,
    pub channels: BTreeMap<String, ChannelConfig>,
    pub auto_debit: Option<AutoDebitConfig>,
}

impl ChannelsConfig {
    /// Reads the TOML file at `path`; relative key files are resolved from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), |k| {
            std::env::var(k).ok()
        })
        .map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// The channel names in the channels file at `path` (`[channels.<name>]`), for
    /// commands that only need to know which channels exist, such as `feegate reconcile`.
    /// The file must be well-formed (same fields as for [`ChannelsConfig::load`]), but
    /// secrets and key files are not resolved: reconciling happens on a finance desk that
    /// does not hold the channels' secrets.
    pub fn channel_names(path: &Path) -> Result<Vec<String>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::names_in(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// [`ChannelsConfig::channel_names`] of TOML text, sorted.
    fn names_in(text: &str) -> Result<Vec<String>, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(raw.channels.into_keys().collect())
    }

    /// Parses TOML text; `env` looks up `secret_env` variables.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut channels = BTreeMap::new();
        for (name, c) in raw.channels {
            let bad = |message: String| ConfigError::Channel {
                channel: name.clone(),
                message,
            };
            let key = match c.auth {
                AuthScheme::HmacSha256 => {
                    let secret = match (&c.secret, &c.secret_env) {
                        (Some(s), None) => s.clone(),
                        (None, Some(var)) => env(var).ok_or_else(|| {
                            bad(format!(
                                "environment variable {var} (secret_env) is not set"
                            ))
                        })?,
                        _ => return Err(bad("give exactly one of secret, secret_env".into())),
                    };
                    if secret.len() < 16 {
                        return Err(bad(
                            "the shared secret is shorter than 16 bytes; ask the channel for a longer one".into(),
                        ));
                    }
                    ChannelKey::Hmac(secret.into_bytes())
                }
                AuthScheme::RsaSha256 => {
                    let pem = match (&c.public_key_pem, &c.public_key_file) {
                        (Some(p), None) => p.clone(),
                        (None, Some(f)) => std::fs::read_to_string(base_dir.join(f))
                            .map_err(|e| bad(format!("cannot read {}: {e}", f.display())))?,
                        _ => {
                            return Err(bad(
                                "give exactly one of public_key_pem, public_key_file".into()
                            ));
                        }
                    };
                    ChannelKey::Rsa(Box::new(super::auth::parse_public_key(&pem).map_err(bad)?))
                }
            };
            let max_amount_fen = crate::money::yuan_to_fen(c.max_amount_yuan)
                .ok()
                .filter(|f| *f > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "max_amount_yuan {} must be positive with at most 2 decimals",
                        c.max_amount_yuan
                    ))
                })?;
            channels.insert(
                name,
                ChannelConfig {
                    key,
                    max_amount_fen,
                    console_sandbox: c.console_sandbox,
                },
            );
        }
        if let Some(ad) = &raw.auto_debit {
            match channels.get(&ad.channel) {
                Some(ChannelConfig {
                    key: ChannelKey::Hmac(_),
                    ..
                }) => {}
                _ => {
                    return Err(ConfigError::Channel {
                        channel: ad.channel.clone(),
                        message: "[auto_debit] channel must be an hmac-sha256 channel of this file"
                            .into(),
                    });
                }
            }
        }
        // Too short and honest clock drift refuses real payments; too long and a captured
        // notification stays replayable (it would still be applied once: the inbox key).
        if !(30..=3600).contains(&raw.signature_window_seconds) {
            return Err(ConfigError::Parse {
                path: PathBuf::new(),
                message: format!(
                    "signature_window_seconds = {} is outside 30..=3600 (default 300: five minutes of clock difference)",
                    raw.signature_window_seconds
                ),
            });
        }
        Ok(Self {
            signature_window_seconds: raw.signature_window_seconds,
            channels,
            auto_debit: raw.auto_debit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChannelsConfig, ConfigError> {
        ChannelsConfig::parse(text, Path::new("."), |_| None)
    }

    const KIOSK: &str = "[channels.kiosk]\nauth = \"hmac-sha256\"\nsecret = \"0123456789abcdef0123\"\nmax_amount_yuan = \"5000\"\n";

    #[test]
    fn the_signature_window_is_refused_outside_its_range() {
        for (window, ok) in [
            (0, false),
            (29, false),
            (30, true),
            (300, true),
            (3600, true),
            (3601, false),
            (86_400, false),
        ] {
            let got = parse(&format!("signature_window_seconds = {window}\n{KIOSK}"));
            assert_eq!(got.is_ok(), ok, "{window}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("30..=3600"), "{e}");
            }
        }
        assert_eq!(parse(KIOSK).unwrap().signature_window_seconds, 300);
    }

    #[test]
    fn channel_names_need_no_secrets() {
        let text = format!(
            "{KIOSK}[channels.bank-transfer]\nauth = \"hmac-sha256\"\nsecret_env = \"UNSET_HERE\"\nmax_amount_yuan = \"50000\"\n"
        );
        assert_eq!(
            ChannelsConfig::names_in(&text).unwrap(),
            vec!["bank-transfer".to_string(), "kiosk".to_string()]
        );
        assert!(ChannelsConfig::names_in("[channels.x]\nauth = \"md5\"\n").is_err());
    }

    #[test]
    fn a_short_or_missing_secret_is_refused() {
        let short = parse("[channels.kiosk]\nauth = \"hmac-sha256\"\nsecret = \"short\"\nmax_amount_yuan = \"5000\"\n").unwrap_err();
        assert!(
            short.to_string().contains("shorter than 16 bytes"),
            "{short}"
        );
        let unset = parse("[channels.kiosk]\nauth = \"hmac-sha256\"\nsecret_env = \"NOPE\"\nmax_amount_yuan = \"5000\"\n").unwrap_err();
        assert!(unset.to_string().contains("NOPE"), "{unset}");
    }
}
