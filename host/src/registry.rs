//! The policy registry: which component versions exist for a county, who published
//! them and why, and which one is in force for each kind since when.
//!
//! - **Trust.** A county trusts ed25519 public keys (`policy_trusted_keys`). Every
//!   publication is signed: the signature covers `sha256(component bytes) ‖
//!   sha256(canonical parameters JSON)` (64 bytes), so neither the code nor its
//!   parameters can change after signing.
//! - **Publish.** The component must load in this host (contract version, import
//!   allow-list, size limit: [`PolicyEngine::load`]), the signature must verify
//!   against a key the county trusts, and the component must accept its parameters in
//!   the one ordinary decision a policy set makes at load ([`crate::county::probe`]).
//!   Bytes are stored content-addressed by sha256 (`policy_components`), the
//!   publication with who, when and why (`policy_publications`).
//! - **Activate.** An activation is an append-only event (`policy_activations`) with an
//!   effective time, who and why. The version in force for a county and kind is the
//!   latest event whose effective time has passed. A rollback is a new event. The
//!   version must still load and pass the probe decision when activated or brought back
//!   by a rollback. An activation scheduled for later can be cancelled before its time
//!   ([`cancel`], `policy_activation_cancellations`): it never takes effect and stays in
//!   the history, marked cancelled.
//! - **Hot swap.** A [`Watcher`] in the running host polls the activations and puts a
//!   newly effective version in force with [`County::activate`]; jobs already running
//!   finish on the snapshot they started with. A version that fails the probe decision
//!   with its parameters is not swapped in (logged; the version in force stays).
//! - **Shipped components.** The policy-set plugin files the host starts with are stored
//!   too (source `shipped`, unsigned), so every component sha256 in the decision log can
//!   be replayed from the registry.
//!
//! Tables: `migrations/sqlite/0002_policy_lifecycle.sql`, cancellations
//! `migrations/sqlite/0019_policy_activation_cancellations.sql`.

use crate::clock::Clock;
use crate::county::{ActiveComponent, County};
use crate::db::{Db, DbError, TIME_FMT, ts};
use crate::policy::engine::sha256_hex;
use crate::policy::set::{PolicySet, RolloutStage};
use crate::policy::{LoadedComponent, PolicyEngine, PolicyFailure, PolicyKind, PolicyLoadError};
use chrono::NaiveDateTime;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why a registry operation was refused. Each message says what to do.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Load(#[from] PolicyLoadError),
    #[error("cannot read {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error(
        "{path} is not an ed25519 {what} key: {detail}; make a key pair with `feegate policy key new`"
    )]
    KeyFile {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "{0} is a secret key; trust the matching .pub file — and since the secret key may have been exposed, consider generating a new pair (`feegate policy key new`)"
    )]
    SecretKeyToTrust(PathBuf),
    #[error("{0} is a public key; sign with the secret key file (NAME.key)")]
    PublicKeyToSignWith(PathBuf),
    /// The probe decision ([`crate::county::probe`], the check a policy set passes at
    /// load) failed with the version's own parameters: in force, it would hold every
    /// account of the county at the next settlement.
    #[error(
        "the {kind} component {sha256} with these parameters fails an ordinary decision ({failure}); in force it would hold every account of county {county} — correct the parameters (and sign them again)"
    )]
    ProbeFailed {
        county: String,
        kind: PolicyKind,
        sha256: String,
        failure: PolicyFailure,
    },
    #[error("refusing to overwrite {0}; choose another --out name or move the old key away")]
    KeyExists(PathBuf),
    #[error(
        "parameters are not valid JSON (or TOML): {0}; give a JSON object such as {{\"steps\": [...]}}"
    )]
    BadParameters(String),
    #[error(
        "county {county} trusts no signing key; add one with `feegate policy trust add --county {county} --key KEY.pub --who NAME`"
    )]
    NoTrustedKey { county: String },
    #[error(
        "the signature does not verify against any key county {county} trusts ({keys} key(s)); sign with a trusted key, or have the county trust yours with `feegate policy trust add`"
    )]
    BadSignature { county: String, keys: usize },
    /// `trust add` of a key the county revoked: a revoked key is never trusted again.
    #[error(
        "key #{key_id} ({who}) was revoked by county {county} at {revoked_at}: {why}; a revoked key is never trusted again: make a new pair with `feegate policy key new` and trust that"
    )]
    KeyRevokedBefore {
        county: String,
        key_id: i64,
        who: String,
        revoked_at: String,
        why: String,
    },
    #[error(
        "the signature is by key #{key_id} ({who}), which county {county} revoked at {revoked_at}: {why}; sign with a key the county still trusts (`feegate policy trust list --county {county}`)"
    )]
    RevokedKey {
        county: String,
        key_id: i64,
        who: String,
        revoked_at: String,
        why: String,
    },
    #[error(
        "county {county} has no key #{key_id}; `feegate policy trust list --county {county}` shows its keys"
    )]
    UnknownKey { county: String, key_id: i64 },
    #[error("key #{key_id} of county {county} was already revoked at {revoked_at}")]
    AlreadyRevoked {
        county: String,
        key_id: i64,
        revoked_at: String,
    },
    #[error(
        "county {county} has no {kind} shadow running; start one with `feegate policy shadow --county {county} --kind {kind} --version V --note WHY`"
    )]
    NoShadow { county: String, kind: PolicyKind },
    #[error("the shadow's end {until} is not after now ({now})")]
    ShadowEndsInPast { until: String, now: String },
    #[error("signature is not 64 bytes of hex: {0}")]
    SignatureFormat(String),
    #[error(
        "no {kind} version of county {county} matches {version:?}; `feegate policy list --county {county}` shows the published ones"
    )]
    UnknownVersion {
        county: String,
        kind: PolicyKind,
        version: String,
    },
    #[error(
        "{version:?} matches several components ({matches:?}); give more hex digits of the sha256"
    )]
    AmbiguousVersion {
        version: String,
        matches: Vec<String>,
    },
    /// One component published with different parameters (a tariff-step component with
    /// this year's and last year's prices): its sha256 alone does not say which prices.
    #[error(
        "{version:?} is one component published with {} different parameter sets: {}; name the one you mean with --version '#N' (see `feegate policy list`)",
        publications.len(),
        publications.join("; ")
    )]
    AmbiguousParameters {
        version: String,
        /// `#N (published AT by WHO: NOTE)`, newest first.
        publications: Vec<String>,
    },
    #[error(
        "nothing to roll back to: county {county} has no earlier {kind} version (no earlier activation, no policy-set file recorded by a host)"
    )]
    NothingToRollBack { county: String, kind: PolicyKind },
    /// `policy rollback` while the county's own policy-set file is what is in force (no
    /// activation yet, or the last rollback went back to it): there is nothing before it.
    #[error(
        "nothing to roll back: county {county}'s policy-set file is the {kind} version in force (no activation of it is); activate a version to change it"
    )]
    PolicySetInForce { county: String, kind: PolicyKind },
    /// `policy rollback` while no activation of the kind has taken effect yet, but one
    /// is scheduled: rolling back cannot stop it, cancelling it does.
    #[error(
        "nothing to roll back: no {kind} activation of county {county} has taken effect yet; activation #{activation_id} (version {sha256}) is scheduled for {effective_at}{others} — to stop it, `feegate policy cancel --county {county} --kind {kind} --activation {activation_id} --note WHY`"
    )]
    OnlyScheduled {
        county: String,
        kind: PolicyKind,
        activation_id: i64,
        sha256: String,
        effective_at: String,
        /// ", and N more after it" when several are scheduled, else empty.
        others: String,
    },
    /// `policy cancel` names an activation id the registry does not have.
    #[error(
        "there is no activation #{activation_id}; `feegate policy history --county {county} --kind {kind}` lists the activations of county {county}"
    )]
    UnknownActivation {
        county: String,
        kind: PolicyKind,
        activation_id: i64,
    },
    /// `policy cancel` names an activation of another county or kind than it says.
    #[error(
        "activation #{activation_id} is a {its_kind} activation of county {its_county}, not a {kind} one of {county}; check the id with `feegate policy history --county {county} --kind {kind}`"
    )]
    ActivationElsewhere {
        county: String,
        kind: PolicyKind,
        activation_id: i64,
        its_county: String,
        its_kind: PolicyKind,
    },
    /// `policy cancel` of an activation whose effective time has passed: decisions
    /// may already have been made with it, so it is undone by a new event instead.
    #[error(
        "activation #{activation_id} is already in force since {effective_at} (now {now}), too late to cancel; roll it back with `feegate policy rollback --county {county} --kind {kind} --note WHY`"
    )]
    AlreadyEffective {
        county: String,
        kind: PolicyKind,
        activation_id: i64,
        effective_at: String,
        now: String,
    },
    /// `policy cancel` of an activation cancelled before (by this or a concurrent
    /// cancel: the second one is refused by the table's primary key).
    #[error(
        "activation #{activation_id} was already cancelled by {who} at {recorded_at} ({note}); it will not take effect, nothing to do"
    )]
    AlreadyCancelled {
        activation_id: i64,
        who: String,
        recorded_at: String,
        note: String,
    },
    /// `--at` before now: the history would claim a version ruled decisions it never made.
    #[error(
        "--at {at} is in the past (now {now}, county local time): an activation takes effect now or later, the decisions already made stand; omit --at to activate now"
    )]
    PastActivation { at: String, now: String },
    #[error(
        "component {sha256} is not in the registry; publish it first (`feegate policy publish`)"
    )]
    MissingBytes { sha256: String },
    #[error("time {0:?} is not 'YYYY-MM-DD HH:MM:SS' (county local time)")]
    BadTime(String),
    #[error("the stored {what} is invalid: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

// ---------------------------------------------------------------------------------
// Keys and signatures
// ---------------------------------------------------------------------------------

/// Makes a new ed25519 key pair from the operating system's random source.
pub fn generate_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system has a random source");
    SigningKey::from_bytes(&seed)
}

/// The first line of a secret key file written by [`write_key_pair`].
pub const SECRET_KEY_HEADER: &str = "feegate ed25519 secret key";
/// The first line of a public key file written by [`write_key_pair`].
pub const PUBLIC_KEY_HEADER: &str = "feegate ed25519 public key";

/// Writes `<out>.key` (the line [`SECRET_KEY_HEADER`], then the private seed as 64 hex
/// digits; mode 0600 on Unix) and `<out>.pub` (the line [`PUBLIC_KEY_HEADER`], then the
/// public key as 64 hex digits). The first line says which is which, so a key file
/// given in the wrong place is refused ([`read_public_key`], [`read_signing_key`]).
/// Refuses to overwrite either.
pub fn write_key_pair(key: &SigningKey, out: &Path) -> Result<(PathBuf, PathBuf), RegistryError> {
    let private = out.with_extension("key");
    let public = out.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            return Err(RegistryError::KeyExists(p.clone()));
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| RegistryError::File {
            path,
            detail: e.to_string(),
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&private).map_err(io(&private))?;
    std::io::Write::write_all(
        &mut f,
        format!("{SECRET_KEY_HEADER}\n{}\n", hex::encode(key.to_bytes())).as_bytes(),
    )
    .map_err(io(&private))?;
    std::fs::write(
        &public,
        format!(
            "{PUBLIC_KEY_HEADER}\n{}\n",
            hex::encode(key.verifying_key().to_bytes())
        ),
    )
    .map_err(io(&public))?;
    Ok((private, public))
}

/// What a key file says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFileKind {
    Secret,
    Public,
    /// Bare hex, as `policy key new` wrote both files before the header line: the
    /// contents cannot tell, so the file name's extension (`.key`, `.pub`) decides
    /// when it is one of those.
    Untagged,
}

/// Reads a key file: `(kind, 32 bytes)`.
fn read_key_file(
    path: &Path,
    what: &'static str,
) -> Result<(KeyFileKind, [u8; 32]), RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let bad = |detail: String| RegistryError::KeyFile {
        path: path.to_path_buf(),
        what,
        detail,
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let (kind, hex_line) = match lines.as_slice() {
        [hex_line] => (KeyFileKind::Untagged, *hex_line),
        [SECRET_KEY_HEADER, hex_line] => (KeyFileKind::Secret, *hex_line),
        [PUBLIC_KEY_HEADER, hex_line] => (KeyFileKind::Public, *hex_line),
        _ => {
            return Err(bad(format!(
                "expected a line `{PUBLIC_KEY_HEADER}` or `{SECRET_KEY_HEADER}`, then 64 hex digits"
            )));
        }
    };
    let bytes = hex::decode(hex_line).map_err(|e| bad(format!("not hex ({e})")))?;
    let bytes = bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))?;
    let kind = match kind {
        KeyFileKind::Untagged => match path.extension().and_then(|e| e.to_str()) {
            Some("key") => KeyFileKind::Secret,
            Some("pub") => KeyFileKind::Public,
            _ => KeyFileKind::Untagged,
        },
        k => k,
    };
    Ok((kind, bytes))
}

/// Reads a secret key file written by [`write_key_pair`] (or an older bare-hex one).
/// Refuses a public key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, RegistryError> {
    match read_key_file(path, "secret")? {
        (KeyFileKind::Public, _) => Err(RegistryError::PublicKeyToSignWith(path.to_path_buf())),
        (_, bytes) => Ok(SigningKey::from_bytes(&bytes)),
    }
}

/// Reads a public key file written by [`write_key_pair`] (or an older bare-hex one).
/// Refuses a secret key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, RegistryError> {
    let bytes = match read_key_file(path, "public")? {
        (KeyFileKind::Secret, _) => {
            return Err(RegistryError::SecretKeyToTrust(path.to_path_buf()));
        }
        (_, bytes) => bytes,
    };
    VerifyingKey::from_bytes(&bytes).map_err(|e| RegistryError::KeyFile {
        path: path.to_path_buf(),
        what: "public",
        detail: e.to_string(),
    })
}

/// Parameters as canonical JSON: keys sorted, no insignificant whitespace. Accepts a
/// JSON document, or TOML (the policy-set format) when it is not JSON.
///
/// A key given twice in one JSON object is refused (JSON parsers disagree on which one
/// wins, and a reviewer reading the file may see the other one than the component gets);
/// TOML refuses it by its own rules. When the text is neither, the error is the JSON
/// one for a text that starts with `{`, else the TOML one.
pub fn canonical_parameters(text: &str) -> Result<String, RegistryError> {
    let value: serde_json::Value = match serde_json::from_str::<UniqueKeys>(text) {
        Ok(UniqueKeys(v)) => v,
        Err(json_err) => match toml::from_str::<toml::Table>(text) {
            Ok(table) => serde_json::to_value(table)
                .map_err(|e| RegistryError::BadParameters(e.to_string()))?,
            Err(toml_err) if !text.trim_start().starts_with('{') => {
                return Err(RegistryError::BadParameters(format!(
                    "neither JSON nor TOML; as TOML: {}",
                    toml_err.message()
                )));
            }
            Err(_) => return Err(RegistryError::BadParameters(json_err.to_string())),
        },
    };
    if !value.is_object() {
        return Err(RegistryError::BadParameters("not an object".into()));
    }
    // serde_json's map is ordered by key (no `preserve_order`), so this is canonical.
    Ok(value.to_string())
}

/// A JSON value whose objects never repeat a key ([`canonical_parameters`]).
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        use serde_json::Value;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: Error>(self, b: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Bool(b)))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(n.into()))
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(n.into()))
            }
            fn visit_f64<E: Error>(self, n: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(
                    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(s.to_string())))
            }
            fn visit_unit<E: Error>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
                let mut items = Vec::new();
                while let Some(UniqueKeys(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(UniqueKeys(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let UniqueKeys(v) = map.next_value()?;
                    if object.insert(key.clone(), v).is_some() {
                        return Err(A::Error::custom(format!(
                            "key {key:?} is given twice in one object; keep one"
                        )));
                    }
                }
                Ok(UniqueKeys(Value::Object(object)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The 64 signed bytes: `sha256(component bytes) ‖ sha256(canonical parameters)`.
pub fn signed_message(component: &[u8], canonical_params: &str) -> [u8; 64] {
    let mut msg = [0u8; 64];
    msg[..32].copy_from_slice(&Sha256::digest(component));
    msg[32..].copy_from_slice(&Sha256::digest(canonical_params.as_bytes()));
    msg
}

/// Signs a component and its canonical parameters; returns the signature as hex.
pub fn sign(key: &SigningKey, component: &[u8], canonical_params: &str) -> String {
    hex::encode(
        key.sign(&signed_message(component, canonical_params))
            .to_bytes(),
    )
}

// ---------------------------------------------------------------------------------
// Trust
// ---------------------------------------------------------------------------------

/// A key a county trusts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrustedKey {
    pub key_id: i64,
    pub county: String,
    pub public_key_hex: String,
    pub who: String,
    pub added_by: String,
    pub added_at: String,
    /// Set when the county revoked the key (with who and why): it signs nothing new.
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_note: Option<String>,
}

/// Makes `county` trust `key` for signing publications, held by `who`. Idempotent:
/// trusting the same key again returns the existing entry.
pub async fn trust_key(
    db: &Db,
    county: &str,
    key: &VerifyingKey,
    who: &str,
    added_by: &str,
    now: NaiveDateTime,
) -> Result<TrustedKey, RegistryError> {
    let public_key_hex = hex::encode(key.to_bytes());
    sqlx::query(
        "INSERT INTO policy_trusted_keys (county, public_key_hex, who, added_by, added_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (county, public_key_hex) DO NOTHING",
    )
    .bind(county)
    .bind(&public_key_hex)
    .bind(who)
    .bind(added_by)
    .bind(ts(now))
    .execute(&db.pool)
    .await?;
    let key = all_keys(db, county)
        .await?
        .into_iter()
        .find(|k| k.public_key_hex == public_key_hex)
        .ok_or_else(|| RegistryError::Corrupt {
            what: "trusted key",
            detail: format!("county {county}: key {public_key_hex} missing right after insert"),
        })?;
    match key.revoked_at {
        Some(revoked_at) => Err(RegistryError::KeyRevokedBefore {
            county: county.to_string(),
            key_id: key.key_id,
            who: key.who,
            revoked_at,
            why: key.revoked_note.unwrap_or_default(),
        }),
        None => Ok(key),
    }
}

/// The keys `county` trusts now (not revoked).
pub async fn trusted_keys(db: &Db, county: &str) -> Result<Vec<TrustedKey>, RegistryError> {
    Ok(all_keys(db, county)
        .await?
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .collect())
}

/// Every key `county` ever trusted, revoked ones included, oldest first.
pub async fn all_keys(db: &Db, county: &str) -> Result<Vec<TrustedKey>, RegistryError> {
    let rows = sqlx::query(
        "SELECT key_id, county, public_key_hex, who, added_by, added_at, revoked_at, revoked_by, revoked_note
         FROM policy_trusted_keys WHERE county = $1 ORDER BY key_id",
    )
    .bind(county)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TrustedKey {
                key_id: r.try_get(0)?,
                county: r.try_get(1)?,
                public_key_hex: r.try_get(2)?,
                who: r.try_get(3)?,
                added_by: r.try_get(4)?,
                added_at: r.try_get(5)?,
                revoked_at: r.try_get(6)?,
                revoked_by: r.try_get(7)?,
                revoked_note: r.try_get(8)?,
            })
        })
        .collect()
}

/// Revokes key `key_id` of `county` (who revoked it and why are recorded): from now on
/// nothing signed by it is published. Versions it signed before stay published and
/// activatable — they were checked when published, and [`Publication::signer_key_id`]
/// says which key signed them — so revoking a leaked key never stops a county's
/// running policy; roll back or activate another version if its versions are suspect.
pub async fn revoke_key(
    db: &Db,
    county: &str,
    key_id: i64,
    who: &str,
    why: &str,
    now: NaiveDateTime,
) -> Result<TrustedKey, RegistryError> {
    let key = all_keys(db, county)
        .await?
        .into_iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| RegistryError::UnknownKey {
            county: county.to_string(),
            key_id,
        })?;
    if let Some(revoked_at) = key.revoked_at {
        return Err(RegistryError::AlreadyRevoked {
            county: county.to_string(),
            key_id,
            revoked_at,
        });
    }
    sqlx::query(
        "UPDATE policy_trusted_keys SET revoked_at = $3, revoked_by = $4, revoked_note = $5
         WHERE county = $1 AND key_id = $2 AND revoked_at IS NULL",
    )
    .bind(county)
    .bind(key_id)
    .bind(ts(now))
    .bind(who)
    .bind(why)
    .execute(&db.pool)
    .await?;
    Ok(TrustedKey {
        revoked_at: Some(ts(now)),
        revoked_by: Some(who.to_string()),
        revoked_note: Some(why.to_string()),
        ..key
    })
}

fn verifies(key: &TrustedKey, msg: &[u8; 64], signature: &Signature) -> bool {
    let Ok(bytes) = hex::decode(&key.public_key_hex) else {
        return false;
    };
    let Ok(bytes) = <[u8; 32]>::try_from(bytes) else {
        return false;
    };
    VerifyingKey::from_bytes(&bytes)
        .map(|vk| vk.verify(msg, signature).is_ok())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------------

/// A published version: a component plus parameters for a county and kind.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Publication {
    pub publication_id: i64,
    pub county: String,
    /// tariff | warning | notice | cutoff
    #[schema(value_type = String)]
    pub kind: PolicyKind,
    pub component_sha256: String,
    pub parameters_json: String,
    /// `signed` or `shipped`.
    pub source: String,
    /// Who published: the holder of the signing key (signed) or `host` (shipped).
    pub who: String,
    pub published_at: String,
    pub note: String,
    pub contract_version: String,
    pub size_bytes: i64,
    /// The trusted key that signed it (`None` for shipped files). A version stays
    /// valid after its key is revoked ([`revoke_key`]).
    pub signer_key_id: Option<i64>,
}

/// What `policy publish` is asked to do.
pub struct PublishRequest<'a> {
    pub county: &'a str,
    pub kind: PolicyKind,
    pub component: &'a [u8],
    /// Parameters as given (JSON or TOML); canonicalised before verifying.
    pub parameters: &'a str,
    /// ed25519 signature (hex) over [`signed_message`].
    pub signature_hex: &'a str,
    pub note: &'a str,
    pub now: NaiveDateTime,
}

/// Publishes a signed component version. Refuses a component this host cannot load
/// (contract version, imports, size), a signature no trusted key of the county
/// verifies, and parameters the component refuses (`policy-error`, e.g.
/// `bad-parameters`) in the probe decision a policy set passes at load
/// ([`crate::county::probe`]). A trap or a resource limit in that decision is left to
/// [`activate`], which refuses it: a candidate that misbehaves may still be published
/// and watched in shadow mode, where it changes nothing. Publishing the same component
/// and parameters again returns the existing publication.
pub async fn publish(
    db: &Db,
    engine: &PolicyEngine,
    req: &PublishRequest<'_>,
) -> Result<Publication, RegistryError> {
    let loaded = engine.load(req.kind, req.component)?;
    let params = canonical_parameters(req.parameters)?;
    let sig_bytes: [u8; 64] = hex::decode(req.signature_hex.trim())
        .map_err(|e| RegistryError::SignatureFormat(e.to_string()))?
        .try_into()
        .map_err(|b: Vec<u8>| RegistryError::SignatureFormat(format!("{} bytes", b.len())))?;
    let signature = Signature::from_bytes(&sig_bytes);
    let all = all_keys(db, req.county).await?;
    let msg = signed_message(req.component, &params);
    let signer = all.iter().find(|k| verifies(k, &msg, &signature));
    let live = all.iter().filter(|k| k.revoked_at.is_none()).count();
    let signer = match signer {
        Some(k) if k.revoked_at.is_none() => k,
        Some(k) => {
            return Err(RegistryError::RevokedKey {
                county: req.county.to_string(),
                key_id: k.key_id,
                who: k.who.clone(),
                revoked_at: k.revoked_at.clone().unwrap_or_default(),
                why: k.revoked_note.clone().unwrap_or_default(),
            });
        }
        None if live == 0 => {
            return Err(RegistryError::NoTrustedKey {
                county: req.county.to_string(),
            });
        }
        None => {
            return Err(RegistryError::BadSignature {
                county: req.county.to_string(),
                keys: live,
            });
        }
    };
    let active = ActiveComponent {
        component: loaded,
        parameters_json: params,
    };
    if let Err(failure @ PolicyFailure::Refused { .. }) = crate::county::probe(engine, &active) {
        return Err(RegistryError::ProbeFailed {
            county: req.county.to_string(),
            kind: req.kind,
            sha256: active.component.sha256.clone(),
            failure,
        });
    }
    let ActiveComponent {
        component: loaded,
        parameters_json: params,
    } = active;
    let mut tx = db.begin_write().await?;
    store_bytes(
        &mut tx,
        req.kind,
        &loaded.sha256,
        &loaded.contract_version,
        req.component,
        req.now,
    )
    .await?;
    sqlx::query(
        "INSERT INTO policy_publications (county, kind, component_sha256, parameters_json, parameters_sha256, source,
                                          signature_hex, signer_key_id, who, published_at, note)
         VALUES ($1, $2, $3, $4, $5, 'signed', $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(req.county)
    .bind(req.kind.as_str())
    .bind(&loaded.sha256)
    .bind(&params)
    .bind(sha256_hex(params.as_bytes()))
    .bind(hex::encode(sig_bytes))
    .bind(signer.key_id)
    .bind(&signer.who)
    .bind(ts(req.now))
    .bind(req.note)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    find_publication(db, req.county, req.kind, &loaded.sha256, &params, "signed")
        .await?
        .ok_or_else(|| RegistryError::Corrupt {
            what: "publication",
            detail: "missing right after insert".into(),
        })
}

async fn store_bytes(
    conn: &mut sqlx::AnyConnection,
    kind: PolicyKind,
    sha256: &str,
    contract_version: &str,
    bytes: &[u8],
    now: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policy_components (sha256, kind, contract_version, size_bytes, bytes, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(kind.as_str())
    .bind(contract_version)
    .bind(bytes.len() as i64)
    .bind(bytes.to_vec())
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a component the host loaded from its policy-set files (unsigned, source
/// `shipped`), so its decisions can be replayed. Idempotent.
pub async fn record_shipped(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    bytes: &[u8],
    contract_version: &str,
    parameters_json: &str,
    now: NaiveDateTime,
) -> Result<Publication, RegistryError> {
    let sha = sha256_hex(bytes);
    let mut tx = db.begin_write().await?;
    store_bytes(&mut tx, kind, &sha, contract_version, bytes, now).await?;
    sqlx::query(
        "INSERT INTO policy_publications (county, kind, component_sha256, parameters_json, parameters_sha256, source, who, published_at, note)
         VALUES ($1, $2, $3, $4, $5, 'shipped', 'host', $6, 'policy-set plugin file loaded at start') ON CONFLICT DO NOTHING",
    )
    .bind(county)
    .bind(kind.as_str())
    .bind(&sha)
    .bind(parameters_json)
    .bind(sha256_hex(parameters_json.as_bytes()))
    .bind(ts(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    find_publication(db, county, kind, &sha, parameters_json, "shipped")
        .await?
        .ok_or_else(|| RegistryError::Corrupt {
            what: "publication",
            detail: "missing right after insert".into(),
        })
}

const PUBLICATION_COLUMNS: &str =
    "p.publication_id, p.county, p.kind, p.component_sha256, p.parameters_json, p.source, p.who,
     p.published_at, p.note, c.contract_version, c.size_bytes, p.signer_key_id
     FROM policy_publications p JOIN policy_components c ON c.sha256 = p.component_sha256";

/// Column `i` of `r` as a policy kind (`what` names it if the stored text is not one).
pub(crate) fn kind_column(
    r: &sqlx::any::AnyRow,
    i: usize,
    what: &'static str,
) -> Result<PolicyKind, RegistryError> {
    let kind: String = r.try_get(i)?;
    kind.parse()
        .map_err(|detail| RegistryError::Corrupt { what, detail })
}

fn publication_from(r: &sqlx::any::AnyRow) -> Result<Publication, RegistryError> {
    Ok(Publication {
        publication_id: r.try_get(0)?,
        county: r.try_get(1)?,
        kind: kind_column(r, 2, "publication kind")?,
        component_sha256: r.try_get(3)?,
        parameters_json: r.try_get(4)?,
        source: r.try_get(5)?,
        who: r.try_get(6)?,
        published_at: r.try_get(7)?,
        note: r.try_get(8)?,
        contract_version: r.try_get(9)?,
        size_bytes: r.try_get(10)?,
        signer_key_id: r.try_get(11)?,
    })
}

async fn find_publication(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    sha: &str,
    params: &str,
    source: &str,
) -> Result<Option<Publication>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {PUBLICATION_COLUMNS} WHERE p.county = $1 AND p.kind = $2 AND p.component_sha256 = $3
         AND p.parameters_sha256 = $4 AND p.source = $5"
    ))
    .bind(county)
    .bind(kind.as_str())
    .bind(sha)
    .bind(sha256_hex(params.as_bytes()))
    .bind(source)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(publication_from).transpose()
}

/// One publication by id.
pub async fn publication(db: &Db, id: i64) -> Result<Option<Publication>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {PUBLICATION_COLUMNS} WHERE p.publication_id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(publication_from).transpose()
}

/// Every publication of a county (optionally one kind), oldest first.
pub async fn publications(
    db: &Db,
    county: &str,
    kind: Option<PolicyKind>,
) -> Result<Vec<Publication>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {PUBLICATION_COLUMNS} WHERE p.county = $1 AND ($2 = '' OR p.kind = $2) ORDER BY p.publication_id"
    ))
    .bind(county)
    .bind(kind.map(|k| k.as_str()).unwrap_or(""))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(publication_from).collect()
}

/// Resolves a version (a sha256 or a unique prefix of at least 8 hex digits, or
/// `#<publication id>`) to a publication of `county`'s `kind`. A component recorded both
/// as shipped and as signed with the same parameters resolves to the signed publication.
///
/// # Errors
/// `UnknownVersion`; `AmbiguousVersion` when a prefix matches several components;
/// `AmbiguousParameters` when the component was published with different parameters
/// (each is a version of its own; `#<id>` picks one) — never the latest by guess, since
/// the parameters are the prices.
pub async fn resolve(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    version: &str,
) -> Result<Publication, RegistryError> {
    let unknown = || RegistryError::UnknownVersion {
        county: county.to_string(),
        kind,
        version: version.to_string(),
    };
    let all = publications(db, county, Some(kind)).await?;
    if let Some(id) = version.strip_prefix('#') {
        let id: i64 = id.parse().map_err(|_| unknown())?;
        return all
            .into_iter()
            .find(|p| p.publication_id == id)
            .ok_or_else(unknown);
    }
    let v = version.to_ascii_lowercase();
    if v.len() < 8 {
        return Err(unknown());
    }
    let matching: Vec<Publication> = all
        .into_iter()
        .filter(|p| p.component_sha256.starts_with(&v))
        .collect();
    let mut shas: Vec<String> = matching
        .iter()
        .map(|p| p.component_sha256.clone())
        .collect();
    shas.dedup();
    shas.sort();
    shas.dedup();
    if shas.len() > 1 {
        return Err(RegistryError::AmbiguousVersion {
            version: version.to_string(),
            matches: shas,
        });
    }
    // The same bytes with other parameters are another version: refuse to pick one.
    let mut parameter_sets: Vec<&str> = matching
        .iter()
        .map(|p| p.parameters_json.as_str())
        .collect();
    parameter_sets.sort_unstable();
    parameter_sets.dedup();
    if parameter_sets.len() > 1 {
        let mut newest_first: Vec<&Publication> = matching.iter().collect();
        newest_first.sort_by_key(|p| std::cmp::Reverse(p.publication_id));
        return Err(RegistryError::AmbiguousParameters {
            version: version.to_string(),
            publications: newest_first
                .iter()
                .map(|p| {
                    format!(
                        "#{} (published {} by {}: {})",
                        p.publication_id, p.published_at, p.who, p.note
                    )
                })
                .collect(),
        });
    }
    // One parameter set, recorded as shipped and/or signed: prefer the signed
    // publication, then the latest.
    matching
        .into_iter()
        .max_by_key(|p| (p.source == "signed", p.publication_id))
        .ok_or_else(unknown)
}

/// The stored bytes of a component.
pub async fn component_bytes(db: &Db, sha256: &str) -> Result<Vec<u8>, RegistryError> {
    let row = sqlx::query("SELECT bytes FROM policy_components WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| RegistryError::MissingBytes {
            sha256: sha256.to_string(),
        })?;
    Ok(row.try_get(0)?)
}

// ---------------------------------------------------------------------------------
// Activate
// ---------------------------------------------------------------------------------

/// One activation event.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Activation {
    pub activation_id: i64,
    pub county: String,
    /// tariff | warning | notice | cutoff
    #[schema(value_type = String)]
    pub kind: PolicyKind,
    pub publication_id: i64,
    pub component_sha256: String,
    /// `activate` or `rollback`.
    pub action: String,
    /// notify-only | approval-gated | automatic, when the activation moved the county.
    #[schema(value_type = Option<String>)]
    pub rollout_stage: Option<RolloutStage>,
    pub effective_at: String,
    pub who: String,
    pub note: String,
    pub recorded_at: String,
    /// Set when the activation was cancelled before its effective time ([`cancel`]):
    /// it never takes effect, and stays in the history marked so.
    pub cancelled: Option<Cancellation>,
}

/// The cancellation of a scheduled activation (`policy_activation_cancellations`,
/// migration 0019): who cancelled it, why, and when (county local time).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Cancellation {
    pub who: String,
    pub note: String,
    pub recorded_at: String,
}

/// What `policy activate` is asked to do.
pub struct ActivateRequest<'a> {
    pub county: &'a str,
    pub kind: PolicyKind,
    pub version: &'a str,
    /// When it takes effect (county local time); `None` = now.
    pub at: Option<NaiveDateTime>,
    /// Moves the county's rollout stage with this activation.
    pub stage: Option<RolloutStage>,
    pub who: &'a str,
    pub note: &'a str,
    pub now: NaiveDateTime,
}

fn stage_str(s: RolloutStage) -> &'static str {
    match s {
        RolloutStage::NotifyOnly => "notify-only",
        RolloutStage::ApprovalGated => "approval-gated",
        RolloutStage::Automatic => "automatic",
    }
}

/// Parses a rollout stage as the CLI spells it (`approval` is short for `approval-gated`).
pub fn parse_stage(s: &str) -> Result<RolloutStage, String> {
    match s {
        "notify-only" => Ok(RolloutStage::NotifyOnly),
        "approval" | "approval-gated" => Ok(RolloutStage::ApprovalGated),
        "automatic" => Ok(RolloutStage::Automatic),
        _ => Err(format!(
            "unknown stage {s:?}; expected notify-only, approval or automatic"
        )),
    }
}

/// Parses a county-local time 'YYYY-MM-DD HH:MM:SS' (or 'YYYY-MM-DDTHH:MM:SS').
pub fn parse_time(s: &str) -> Result<NaiveDateTime, RegistryError> {
    NaiveDateTime::parse_from_str(&s.replace('T', " "), TIME_FMT)
        .map_err(|_| RegistryError::BadTime(s.to_string()))
}

/// Records an activation event. The component must load in this host now and make
/// the probe decision with its published parameters ([`crate::county::probe_within_ceiling`]:
/// as a policy set at load, and a tariff's charge within the host's charge ceiling), so a
/// version the host cannot run, or one that would hold every account, is refused here, not at the swap or the next settlement. This covers
/// versions published before [`publish`] made the same check.
pub async fn activate(
    db: &Db,
    engine: &PolicyEngine,
    req: &ActivateRequest<'_>,
) -> Result<Activation, RegistryError> {
    if let Some(at) = req.at
        && at < req.now - chrono::Duration::minutes(5)
    {
        return Err(RegistryError::PastActivation {
            at: ts(at),
            now: ts(req.now),
        });
    }
    let p = resolve(db, req.county, req.kind, req.version).await?;
    check_runs(db, engine, &p).await?;
    insert_activation(
        db,
        &p,
        "activate",
        req.stage,
        req.at.unwrap_or(req.now),
        req.who,
        req.note,
        req.now,
    )
    .await
}

/// The check an activation and a rollback make before recording: the publication's
/// component loads in this host now ([`RegistryError::Load`], or
/// [`RegistryError::MissingBytes`]) and makes the probe decision with its parameters,
/// a tariff's charge within the engine's charge ceiling
/// ([`crate::county::probe_within_ceiling`]; [`RegistryError::ProbeFailed`]).
async fn check_runs(db: &Db, engine: &PolicyEngine, p: &Publication) -> Result<(), RegistryError> {
    let active = ActiveComponent {
        component: engine.load(p.kind, &component_bytes(db, &p.component_sha256).await?)?,
        parameters_json: p.parameters_json.clone(),
    };
    crate::county::probe_within_ceiling(engine, &active).map_err(|failure| {
        RegistryError::ProbeFailed {
            county: p.county.clone(),
            kind: p.kind,
            sha256: p.component_sha256.clone(),
            failure,
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_activation(
    db: &Db,
    p: &Publication,
    action: &str,
    stage: Option<RolloutStage>,
    effective_at: NaiveDateTime,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<Activation, RegistryError> {
    let row = sqlx::query(
        "INSERT INTO policy_activations (county, kind, publication_id, component_sha256, action, rollout_stage, effective_at, who, note, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING activation_id",
    )
    .bind(&p.county)
    .bind(p.kind.as_str())
    .bind(p.publication_id)
    .bind(&p.component_sha256)
    .bind(action)
    .bind(stage.map(stage_str))
    .bind(ts(effective_at))
    .bind(who)
    .bind(note)
    .bind(ts(now))
    .fetch_one(&db.pool)
    .await?;
    Ok(Activation {
        activation_id: row.try_get(0)?,
        county: p.county.clone(),
        kind: p.kind,
        publication_id: p.publication_id,
        component_sha256: p.component_sha256.clone(),
        action: action.to_string(),
        rollout_stage: stage,
        effective_at: ts(effective_at),
        who: who.to_string(),
        note: note.to_string(),
        recorded_at: ts(now),
        cancelled: None,
    })
}

/// Re-activates, as a new event effective now, the version that was in force before
/// the current one. Cancelled activations ([`cancel`]) count as never made.
///
/// The version brought back must pass the same check as [`activate`] (it loads in this
/// host and makes the probe decision with its parameters, [`crate::county::probe`]);
/// otherwise [`RegistryError::ProbeFailed`] (or the load error) and nothing is recorded.
/// [`RegistryError::OnlyScheduled`] when no activation has taken effect yet but one is
/// scheduled (cancel it instead), [`RegistryError::NothingToRollBack`] when nothing
/// earlier is left. An activation scheduled for later stays scheduled.
pub async fn rollback(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    kind: PolicyKind,
    who: &str,
    note: &str,
    now: NaiveDateTime,
) -> Result<Activation, RegistryError> {
    let nothing = || RegistryError::NothingToRollBack {
        county: county.to_string(),
        kind,
    };
    let (mut effective, scheduled): (Vec<Activation>, Vec<Activation>) =
        history(db, county, Some(kind))
            .await?
            .into_iter()
            .filter(|a| a.cancelled.is_none())
            .partition(|a| a.effective_at <= ts(now));
    if effective.is_empty()
        && let Some(next) = scheduled.iter().min_by(|a, b| {
            (&a.effective_at, a.activation_id).cmp(&(&b.effective_at, b.activation_id))
        })
    {
        return Err(RegistryError::OnlyScheduled {
            county: county.to_string(),
            kind,
            activation_id: next.activation_id,
            sha256: next.component_sha256.clone(),
            effective_at: next.effective_at.clone(),
            others: match scheduled.len() - 1 {
                0 => String::new(),
                n => format!(", and {n} more after it"),
            },
        });
    }
    let file_in_force = || RegistryError::PolicySetInForce {
        county: county.to_string(),
        kind,
    };
    if effective.is_empty() {
        return Err(file_in_force());
    }
    effective.sort_by(|a, b| {
        (&a.effective_at, a.activation_id).cmp(&(&b.effective_at, b.activation_id))
    });
    // The versions in force, as a stack: an activation pushes its version, a rollback
    // pops the version it undid. So a second rollback goes further back instead of
    // bringing back the version the first one took out as wrong.
    let mut stack: Vec<i64> = Vec::new();
    for a in &effective {
        if a.action == "rollback" {
            stack.pop();
        }
        if stack.last() != Some(&a.publication_id) {
            stack.push(a.publication_id);
        }
    }
    let current = stack.pop().ok_or_else(nothing)?;
    let undone: Vec<i64> = effective
        .iter()
        .filter(|a| a.action != "rollback")
        .map(|a| a.publication_id)
        .filter(|id| !stack.contains(id))
        .collect();
    let previous = stack.last().copied();
    // Before the first activation the policy-set file was in force: its latest
    // recorded (shipped) publication is what to go back to.
    let previous = match previous {
        Some(id) => id,
        None => {
            let all = publications(db, county, Some(kind)).await?;
            if all
                .iter()
                .any(|p| p.publication_id == current && p.source == "shipped")
            {
                // A rollback already went back to the policy-set file.
                return Err(file_in_force());
            }
            all.into_iter()
                .filter(|p| {
                    p.source == "shipped"
                        && p.publication_id != current
                        && !undone.contains(&p.publication_id)
                })
                .map(|p| p.publication_id)
                .max()
                .ok_or_else(nothing)?
        }
    };
    let p = publication(db, previous).await?.ok_or_else(nothing)?;
    check_runs(db, engine, &p).await?;
    insert_activation(db, &p, "rollback", None, now, who, note, now).await
}

/// Cancels activation `activation_id` of `county`'s `kind` before it takes effect, with
/// who and why (`policy_activation_cancellations`, append-only): it never takes effect
/// ([`in_force`], [`stage_in_force`], [`rollback`] and the [`Watcher`] skip it) and stays
/// in the [`history`], marked cancelled. Returns the activation with its cancellation.
///
/// Refused, with what to do: [`RegistryError::UnknownActivation`] (no such id),
/// [`RegistryError::ActivationElsewhere`] (the id is of another county or kind),
/// [`RegistryError::AlreadyEffective`] (its effective time is not after `now()`, read
/// once the transaction holds the write lock: roll it back instead) and [`RegistryError::AlreadyCancelled`] (also when a concurrent cancel
/// recorded first: the table's primary key refuses the second).
pub async fn cancel(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    activation_id: i64,
    who: &str,
    note: &str,
    now: impl Fn() -> NaiveDateTime,
) -> Result<Activation, RegistryError> {
    let mut tx = db.begin_write().await?;
    // The time is read once this transaction may write (on SQLite it holds the write
    // lock by now): a cancel that waited for another writer must not be recorded, as if
    // in time, for an activation that fell due meanwhile and that hosts already apply.
    let now = now();
    let row = sqlx::query(&format!(
        "SELECT {ACTIVATION_COLUMNS} WHERE a.activation_id = $1"
    ))
    .bind(activation_id)
    .fetch_optional(&mut *tx)
    .await?;
    let a = row
        .as_ref()
        .map(activation_from)
        .transpose()?
        .ok_or_else(|| RegistryError::UnknownActivation {
            county: county.to_string(),
            kind,
            activation_id,
        })?;
    if a.county != county || a.kind != kind {
        return Err(RegistryError::ActivationElsewhere {
            county: county.to_string(),
            kind,
            activation_id,
            its_county: a.county,
            its_kind: a.kind,
        });
    }
    let already = |c: Cancellation| RegistryError::AlreadyCancelled {
        activation_id,
        who: c.who,
        recorded_at: c.recorded_at,
        note: c.note,
    };
    if let Some(c) = a.cancelled {
        return Err(already(c));
    }
    if a.effective_at <= ts(now) {
        return Err(RegistryError::AlreadyEffective {
            county: county.to_string(),
            kind,
            activation_id,
            effective_at: a.effective_at,
            now: ts(now),
        });
    }
    let inserted = sqlx::query(
        "INSERT INTO policy_activation_cancellations (activation_id, who, note, recorded_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(activation_id)
    .bind(who)
    .bind(note)
    .bind(ts(now))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            Ok(Activation {
                cancelled: Some(Cancellation {
                    who: who.to_string(),
                    note: note.to_string(),
                    recorded_at: ts(now),
                }),
                ..a
            })
        }
        // A concurrent cancel recorded first.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            drop(tx);
            let row = sqlx::query(
                "SELECT who, note, recorded_at FROM policy_activation_cancellations WHERE activation_id = $1",
            )
            .bind(activation_id)
            .fetch_one(&db.pool)
            .await?;
            Err(already(Cancellation {
                who: row.try_get(0)?,
                note: row.try_get(1)?,
                recorded_at: row.try_get(2)?,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

const ACTIVATION_COLUMNS: &str =
    "a.activation_id, a.county, a.kind, a.publication_id, a.component_sha256, a.action, a.rollout_stage,
     a.effective_at, a.who, a.note, a.recorded_at, c.who, c.note, c.recorded_at
     FROM policy_activations a
     LEFT JOIN policy_activation_cancellations c ON c.activation_id = a.activation_id";

fn activation_from(r: &sqlx::any::AnyRow) -> Result<Activation, RegistryError> {
    let stage: Option<String> = r.try_get(6)?;
    let cancelled_by: Option<String> = r.try_get(11)?;
    Ok(Activation {
        activation_id: r.try_get(0)?,
        county: r.try_get(1)?,
        kind: kind_column(r, 2, "activation kind")?,
        publication_id: r.try_get(3)?,
        component_sha256: r.try_get(4)?,
        action: r.try_get(5)?,
        rollout_stage: stage
            .map(|s| parse_stage(&s))
            .transpose()
            .map_err(|detail| RegistryError::Corrupt {
                what: "rollout stage",
                detail,
            })?,
        effective_at: r.try_get(7)?,
        who: r.try_get(8)?,
        note: r.try_get(9)?,
        recorded_at: r.try_get(10)?,
        cancelled: match cancelled_by {
            Some(who) => Some(Cancellation {
                who,
                note: r.try_get(12)?,
                recorded_at: r.try_get(13)?,
            }),
            None => None,
        },
    })
}

/// The activation history of a county (optionally one kind), oldest first, cancelled
/// activations included ([`Activation::cancelled`] says so).
pub async fn history(
    db: &Db,
    county: &str,
    kind: Option<PolicyKind>,
) -> Result<Vec<Activation>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {ACTIVATION_COLUMNS}
         WHERE a.county = $1 AND ($2 = '' OR a.kind = $2) ORDER BY a.activation_id"
    ))
    .bind(county)
    .bind(kind.map(|k| k.as_str()).unwrap_or(""))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(activation_from).collect()
}

/// The activation in force for a county and kind at `now`: the latest event whose
/// effective time has passed, cancelled ones ignored. `None`: the registry has none, the
/// policy-set file rules.
pub async fn in_force(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    now: NaiveDateTime,
) -> Result<Option<Activation>, RegistryError> {
    let now = ts(now);
    Ok(history(db, county, Some(kind))
        .await?
        .into_iter()
        .filter(|a| a.effective_at <= now && a.cancelled.is_none())
        .max_by(|a, b| (&a.effective_at, a.activation_id).cmp(&(&b.effective_at, b.activation_id))))
}

/// The rollout stage set by the latest effective activation that set one, if any
/// (cancelled ones ignored).
pub async fn stage_in_force(
    db: &Db,
    county: &str,
    now: NaiveDateTime,
) -> Result<Option<RolloutStage>, RegistryError> {
    let now = ts(now);
    Ok(history(db, county, None)
        .await?
        .into_iter()
        .filter(|a| a.effective_at <= now && a.rollout_stage.is_some() && a.cancelled.is_none())
        .max_by(|a, b| (&a.effective_at, a.activation_id).cmp(&(&b.effective_at, b.activation_id)))
        .and_then(|a| a.rollout_stage))
}

// ---------------------------------------------------------------------------------
// The running host: start-up and hot swap
// ---------------------------------------------------------------------------------

/// Stores the policy-set plugin files of the county the host loaded (source
/// `shipped`), so that every decision they make is replayable from the registry.
/// Checks the files still have the bytes the county loaded.
pub async fn record_policy_set(
    db: &Db,
    county: &County,
    set_dir: &Path,
    components_dir: &Path,
    now: NaiveDateTime,
) -> Result<(), RegistryError> {
    let set = PolicySet::load(set_dir).map_err(|e| RegistryError::File {
        path: set_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    let snapshot = county.snapshot();
    for (kind, entry) in &set.components {
        let path = entry.wasm_path(components_dir);
        let bytes = std::fs::read(&path).map_err(|e| RegistryError::File {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let loaded = &snapshot.get(*kind).component;
        if sha256_hex(&bytes) != loaded.sha256 {
            return Err(RegistryError::File {
                path,
                detail: format!(
                    "changed on disk since the host loaded it (sha256 {}); restart the host",
                    loaded.sha256
                ),
            });
        }
        record_shipped(
            db,
            &county.county,
            *kind,
            &bytes,
            &loaded.contract_version,
            &entry.parameters_json,
            now,
        )
        .await?;
    }
    Ok(())
}

/// A version put in force by [`Watcher::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    pub kind: PolicyKind,
    pub from_sha256: String,
    pub to_sha256: String,
    /// The activation put in force; for a return to the policy-set file (every
    /// activation of the kind cancelled), the cancelled one that was undone.
    pub activation_id: i64,
}

/// Watches the registry's activations for one county and swaps newly effective
/// versions into the running host ([`County::activate`]). A cancelled activation
/// ([`cancel`]) is never applied: [`in_force`] and [`stage_in_force`] skip it.
///
/// Failure to load an activated version (impossible unless the host's limits changed
/// since `policy activate` checked it) keeps the version in force and is reported. So
/// does a version that fails the probe decision with its parameters
/// ([`crate::county::probe`]; one decision, in a blocking task), e.g. one activated
/// before `policy activate` checked that: it is logged and skipped, not retried.
pub struct Watcher {
    db: Db,
    engine: Arc<PolicyEngine>,
    county: Arc<County>,
    clock: Arc<dyn Clock>,
    /// Activation id applied per kind (absent: the policy-set file is in force).
    applied: Mutex<BTreeMap<PolicyKind, i64>>,
    /// Compiled components by kind and sha256 (one component may export several
    /// kinds' worlds, and a loaded component is checked for one kind): the ones in force
    /// at start, and every version published for the county (compiled ahead by
    /// [`Watcher::prepare`]), so that an activation or a rollback is a pointer swap,
    /// not a compilation.
    compiled: Mutex<BTreeMap<(PolicyKind, String), LoadedComponent>>,
    /// Highest publication id already compiled ahead.
    prepared_up_to: Mutex<i64>,
    /// The county's policy set as loaded from its files, before any activation: what is
    /// in force again when every activation of a kind turns out cancelled.
    at_start: Arc<crate::county::PolicySnapshot>,
}

impl Watcher {
    pub fn new(
        db: Db,
        engine: Arc<PolicyEngine>,
        county: Arc<County>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let snapshot = county.snapshot();
        let compiled = PolicyKind::ALL
            .iter()
            .map(|k| {
                let c = &snapshot.get(*k).component;
                ((*k, c.sha256.clone()), c.clone())
            })
            .collect();
        Self {
            db,
            engine,
            county,
            clock,
            applied: Mutex::new(BTreeMap::new()),
            compiled: Mutex::new(compiled),
            prepared_up_to: Mutex::new(0),
            at_start: snapshot,
        }
    }

    /// Compiles, ahead of any activation, every version published for the county since
    /// the last call (a component that no longer loads is skipped here; activating it
    /// reports why). Called by [`Watcher::poll`]; cheap when nothing was published.
    pub async fn prepare(&self) -> Result<usize, RegistryError> {
        let since = *self.prepared_up_to.lock().expect("watcher lock");
        let mut n = 0;
        for p in publications(&self.db, &self.county.county, None).await? {
            if p.publication_id <= since {
                continue;
            }
            *self.prepared_up_to.lock().expect("watcher lock") = p.publication_id;
            if self
                .compiled
                .lock()
                .expect("watcher lock")
                .contains_key(&(p.kind, p.component_sha256.clone()))
            {
                continue;
            }
            let bytes = component_bytes(&self.db, &p.component_sha256).await?;
            let engine = self.engine.clone();
            let kind = p.kind;
            // Compiling takes a while (cranelift); keep it off the async executor.
            let loaded = tokio::task::spawn_blocking(move || engine.load(kind, &bytes))
                .await
                .map_err(|e| RegistryError::Corrupt {
                    what: "compilation task",
                    detail: e.to_string(),
                })?;
            if let Ok(c) = loaded {
                self.compiled
                    .lock()
                    .expect("watcher lock")
                    .insert((p.kind, p.component_sha256.clone()), c);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies every activation that became effective since the last poll; returns the
    /// swaps made. Cheap when nothing changed (one indexed query per kind).
    pub async fn poll(&self) -> Result<Vec<Swapped>, RegistryError> {
        self.prepare().await?;
        let now = self.clock.now();
        let mut swapped = Vec::new();
        for kind in PolicyKind::ALL {
            let Some(a) = in_force(&self.db, &self.county.county, kind, now).await? else {
                // This host applied an activation that was cancelled afterwards (its
                // clock ahead of the canceller's, or a cancel that committed as the
                // activation fell due): the policy-set file is in force again.
                let undone = self.applied.lock().expect("watcher lock").remove(&kind);
                if let Some(activation_id) = undone {
                    let file = self.at_start.shared(kind);
                    let from = self.county.snapshot().get(kind).component.sha256.clone();
                    tracing::warn!(
                        county = %self.county.county, %kind, activation = activation_id,
                        "the activation in force was cancelled; the policy-set file's version is in force again"
                    );
                    swapped.push(Swapped {
                        kind,
                        from_sha256: from,
                        to_sha256: file.component.sha256.clone(),
                        activation_id,
                    });
                    self.county.activate_shared(file);
                }
                continue;
            };
            if self.applied.lock().expect("watcher lock").get(&kind) == Some(&a.activation_id) {
                continue;
            }
            let p = publication(&self.db, a.publication_id)
                .await?
                .ok_or_else(|| RegistryError::Corrupt {
                    what: "activation",
                    detail: format!("publication {} missing", a.publication_id),
                })?;
            let component = self.compiled(kind, &p.component_sha256).await?;
            let active = ActiveComponent {
                component,
                parameters_json: p.parameters_json,
            };
            let engine = self.engine.clone();
            let (active, probed) = tokio::task::spawn_blocking(move || {
                let probed = crate::county::probe(&engine, &active);
                (active, probed)
            })
            .await
            .map_err(|e| RegistryError::Corrupt {
                what: "probe task",
                detail: e.to_string(),
            })?;
            if let Err(failure) = probed {
                tracing::error!(
                    county = %self.county.county, %kind, version = %a.component_sha256,
                    activation = a.activation_id,
                    "activated version not put in force, it fails an ordinary decision with its parameters ({failure}); the version in force stays"
                );
                self.applied
                    .lock()
                    .expect("watcher lock")
                    .insert(kind, a.activation_id);
                continue;
            }
            let active = Arc::new(active);
            let from = self.county.snapshot().get(kind).component.sha256.clone();
            self.county.activate_shared(active);
            self.applied
                .lock()
                .expect("watcher lock")
                .insert(kind, a.activation_id);
            swapped.push(Swapped {
                kind,
                from_sha256: from,
                to_sha256: a.component_sha256.clone(),
                activation_id: a.activation_id,
            });
        }
        self.poll_shadows(now).await?;
        // No activation sets a stage (all cancelled, or none yet): the policy set's own.
        let stage = stage_in_force(&self.db, &self.county.county, now)
            .await?
            .unwrap_or(self.at_start.rollout_stage);
        if self.county.snapshot().rollout_stage != stage {
            self.county.set_rollout_stage(stage);
        }
        Ok(swapped)
    }

    /// A component compiled for `kind`, from the cache or the registry's bytes.
    async fn compiled(
        &self,
        kind: PolicyKind,
        sha256: &str,
    ) -> Result<LoadedComponent, RegistryError> {
        let cached = self
            .compiled
            .lock()
            .expect("watcher lock")
            .get(&(kind, sha256.to_string()))
            .cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let bytes = component_bytes(&self.db, sha256).await?;
        let c = self.engine.load(kind, &bytes)?;
        self.compiled
            .lock()
            .expect("watcher lock")
            .insert((kind, sha256.to_string()), c.clone());
        Ok(c)
    }

    /// Sets, replaces or ends the shadow beside each kind as `policy_shadows` says
    /// (a start, a stop, or a start whose `--until` has passed).
    async fn poll_shadows(&self, now: NaiveDateTime) -> Result<(), RegistryError> {
        for kind in PolicyKind::ALL {
            let want = crate::shadow::in_force(&self.db, &self.county.county, kind, now).await?;
            let have = self
                .county
                .snapshot()
                .shadow_component(kind)
                .map(|s| s.shadow_event_id);
            if want.as_ref().map(|e| e.shadow_event_id) == have {
                continue;
            }
            let Some(event) = want else {
                self.county.set_shadow(kind, None);
                tracing::info!(county = %self.county.county, %kind, "policy shadow ended");
                continue;
            };
            let p = publication(&self.db, event.publication_id.unwrap_or_default())
                .await?
                .ok_or_else(|| RegistryError::Corrupt {
                    what: "shadow event",
                    detail: format!("publication {:?} missing", event.publication_id),
                })?;
            let component = self.compiled(kind, &p.component_sha256).await?;
            self.county.set_shadow(
                kind,
                Some(Arc::new(crate::county::ShadowComponent {
                    shadow_event_id: event.shadow_event_id,
                    publication_id: p.publication_id,
                    active: Arc::new(ActiveComponent {
                        component,
                        parameters_json: p.parameters_json,
                    }),
                    until: event.until_at,
                    resource_failures_in_a_row: Default::default(),
                })),
            );
            tracing::info!(county = %self.county.county, %kind, to = %p.component_sha256, "policy shadow started");
        }
        Ok(())
    }

    /// Polls every `every` until the returned task is aborted (or the runtime stops).
    /// Errors are logged and retried at the next tick; the version in force stays.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.poll().await {
                    Ok(swaps) => {
                        for s in swaps {
                            tracing::info!(county = %self.county.county, kind = %s.kind, from = %s.from_sha256, to = %s.to_sha256, "policy activated");
                        }
                    }
                    Err(e) => tracing::error!(county = %self.county.county, "policy watcher: {e}"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_canonical_and_never_say_a_key_twice() {
        // (text, canonical JSON or the error's telling part)
        let table: &[(&str, Result<&str, &str>)] = &[
            (
                r#"{ "b": "2", "a": {"y": 1, "x": [0.5, true, null]} }"#,
                Ok(r#"{"a":{"x":[0.5,true,null],"y":1},"b":"2"}"#),
            ),
            (
                "price_per_kwh = \"0.5000\"\n",
                Ok(r#"{"price_per_kwh":"0.5000"}"#),
            ),
            (
                r#"{"price_per_kwh":"0.5000","price_per_kwh":"9.0000"}"#,
                Err("\"price_per_kwh\" is given twice"),
            ),
            (r#"{"t": {"a": 1, "a": 2}}"#, Err("\"a\" is given twice")),
            ("a = 1\na = 2\n", Err("as TOML")),
            ("price = \n", Err("as TOML")),
            ("{\"a\": }", Err("expected value")),
            ("[1, 2]", Err("not an object")),
        ];
        for (text, want) in table {
            match (canonical_parameters(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
