//! `feegate policy …` and `feegate audit …`: the policy lifecycle at the command line.
//!
//! Every command works on the database given by `--db` (default `sqlite://feegate.db`
//! in the current directory, or `FEEGATE_DB`). Times are county local time
//! ('YYYY-MM-DD HH:MM:SS'); "now" is the system clock at `FEEGATE_UTC_OFFSET`
//! (default +08:00, China Standard Time).

use crate::audit::{self, Filter};
use crate::clock::{Clock, SystemClock};
use crate::config::PolicyLimits;
use crate::db::Db;
use crate::policy::set::RolloutStage;
use crate::policy::{PolicyEngine, PolicyKind};
use crate::registry::{self, ActivateRequest, PublishRequest};
use crate::shadow;
use anyhow::Context;
use chrono::{Duration, FixedOffset, NaiveDate};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Where the registry and the decision log are.
#[derive(Args, Debug, Clone)]
pub struct DbArg {
    /// Database URL.
    #[arg(
        long,
        global = true,
        env = "FEEGATE_DB",
        default_value = "sqlite://feegate.db"
    )]
    pub db: String,
}

/// Who does it, for the audit trail.
#[derive(Args, Debug, Clone)]
pub struct WhoArg {
    /// Who is doing this (default: $FEEGATE_WHO, else $USER).
    #[arg(long)]
    pub who: Option<String>,
}

/// A `--note` / `--why` for the audit trail: one line of text that says something.
fn reason_text(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("say why in a few words (it goes into the audit trail)".into());
    }
    if t.contains(['\n', '\r']) {
        return Err("one line, please (it is printed in histories and logs)".into());
    }
    Ok(t.to_string())
}

impl WhoArg {
    fn resolve(&self) -> anyhow::Result<String> {
        self.who
            .clone()
            .or_else(|| std::env::var("FEEGATE_WHO").ok())
            .or_else(|| std::env::var("USER").ok())
            .filter(|w| !w.trim().is_empty())
            .context("say who you are with --who NAME (it goes into the audit trail)")
    }
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Scaffold a policy plugin crate DIR/NAME (package policy-NAME) with example logic,
    /// example fixtures and a unit test; it builds for wasm32-wasip2 as it is.
    New {
        /// tariff, warning, notice or cutoff.
        #[arg(long)]
        kind: PolicyKind,
        /// Lowercase letters, digits and hyphens, e.g. tariff-flat.
        name: String,
        /// Where to put the crate.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// The Feegate repository (wit/, plugins/policy-sdk) the crate depends on
        /// (default: the one above --dir, else above the current directory).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Signing keys: `policy key new --out NAME` writes NAME.key and NAME.pub.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Keys a county trusts to sign its policies.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Sign a component and its parameters (prints the signature, hex).
    Sign {
        component: PathBuf,
        /// Parameters file (JSON, or TOML).
        #[arg(long)]
        params: PathBuf,
        /// Private key file (`policy key new`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Run a component on fixture cases (input → expected output) before publishing.
    /// Exits non-zero on any failing case. Format: `host/src/fixtures.rs`.
    Test {
        component: PathBuf,
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Publish a signed component version for a county.
    Publish {
        component: PathBuf,
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        /// Parameters file (JSON, or TOML).
        #[arg(long)]
        params: PathBuf,
        /// Private key file: sign here and publish.
        #[arg(
            long,
            required_unless_present = "signature",
            conflicts_with = "signature"
        )]
        key: Option<PathBuf>,
        /// Signature file made elsewhere with `policy sign` (hex).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Why this version exists (goes into the registry).
        #[arg(long, value_parser = reason_text)]
        note: String,
    },
    /// Put a published version in force (an audited event; the running host swaps it in).
    Activate {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        /// Component sha256 (or a unique prefix of ≥ 8 hex digits, or #PUBLICATION_ID).
        #[arg(long)]
        version: String,
        /// When it takes effect, county local time 'YYYY-MM-DD HH:MM:SS' (default now).
        #[arg(long)]
        at: Option<String>,
        /// Move the county to this rollout stage with it: notify-only, approval, automatic.
        #[arg(long, value_parser = registry::parse_stage)]
        stage: Option<RolloutStage>,
        #[command(flatten)]
        who: WhoArg,
        /// Why.
        #[arg(long, value_parser = reason_text)]
        note: String,
    },
    /// Re-activate the version in force before the current one (a new event; checked
    /// like `activate`).
    Rollback {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        #[command(flatten)]
        who: WhoArg,
        #[arg(long, value_parser = reason_text)]
        note: String,
    },
    /// Cancel an activation scheduled for later (`activate --at`) before it takes
    /// effect (an audited event; it stays in the history, marked cancelled).
    Cancel {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        /// The activation's id (`#N` in `policy history`).
        #[arg(long)]
        activation: i64,
        #[command(flatten)]
        who: WhoArg,
        /// Why.
        #[arg(long, value_parser = reason_text)]
        note: String,
    },
    /// Published versions of a county, with the one in force marked.
    List {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: Option<PolicyKind>,
        #[arg(long)]
        json: bool,
    },
    /// One version: who, when, why, contract, imports, parameters, activations.
    Show {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        #[arg(long)]
        version: String,
    },
    /// The activation history of a county.
    History {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: Option<PolicyKind>,
        #[arg(long)]
        json: bool,
    },
    /// Run a published candidate beside the version in force on live decisions (its
    /// outputs are recorded, never enforced), or stop it with --stop. An audited event.
    Shadow {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        /// Candidate version (sha256 or prefix, or #PUBLICATION_ID).
        #[arg(long, required_unless_present = "stop", conflicts_with = "stop")]
        version: Option<String>,
        /// When the shadow stops by itself, county local time 'YYYY-MM-DD HH:MM:SS'.
        #[arg(long, conflicts_with = "stop")]
        until: Option<String>,
        /// Stop the running shadow.
        #[arg(long)]
        stop: bool,
        #[command(flatten)]
        who: WhoArg,
        /// Why.
        #[arg(long, value_parser = reason_text)]
        note: String,
    },
    /// Replay the last N days of recorded decisions through a candidate version, or
    /// (--shadow) compare the running shadow's recorded outputs with the live ones.
    Diff {
        #[arg(long)]
        county: String,
        #[arg(long)]
        kind: PolicyKind,
        /// Candidate version (sha256 or prefix, or #PUBLICATION_ID).
        #[arg(long, required_unless_present = "shadow", conflicts_with = "shadow")]
        candidate: Option<String>,
        /// Report the latest shadow's recorded outputs against the live decisions.
        #[arg(long)]
        shadow: bool,
        /// Days of recorded decisions, ending at --until (1..=3660).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Last business date (default: the latest in the log for this county and kind).
        #[arg(long)]
        until: Option<NaiveDate>,
        /// Changed decisions printed (all are counted).
        #[arg(long, default_value_t = 50)]
        show: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: OUT.key (private, keep it safe) and OUT.pub.
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust a public key to sign the county's policies.
    Add {
        #[arg(long)]
        county: String,
        /// Public key file (`policy key new` writes NAME.pub).
        #[arg(long)]
        key: PathBuf,
        /// Who holds the private key (recorded as the publisher of what it signs).
        #[arg(long)]
        who: String,
        /// Who adds the trust (default $FEEGATE_WHO, else $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Keys the county trusts (and revoked ones, marked).
    List {
        #[arg(long)]
        county: String,
    },
    /// Stop trusting a key: nothing it signs is published from now on. Versions it
    /// signed before stay published and activatable (`policy show` names the key).
    Revoke {
        #[arg(long)]
        county: String,
        /// The key's number (`policy trust list`).
        #[arg(long)]
        key_id: i64,
        /// Who revokes it.
        #[arg(long)]
        who: String,
        /// Why (a leaked key, a person who left, …).
        #[arg(long, value_parser = reason_text)]
        why: String,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Selection of decisions.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    #[arg(long)]
    pub county: Option<String>,
    /// tariff, warning, notice, cutoff or reconnection.
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    /// First business date (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last business date (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// At most this many decisions (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            county: self.county.clone().unwrap_or_default(),
            kind: self.kind.clone().unwrap_or_default(),
            account_id: self.account.clone().unwrap_or_default(),
            from: self.from.map(crate::db::ds).unwrap_or_default(),
            to: self.to.map(crate::db::ds).unwrap_or_default(),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List decisions.
    Log {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Re-run recorded decisions on their recorded component and input; exits non-zero
    /// unless every output matches byte for byte.
    Replay {
        /// One decision id (else every decision the filter selects).
        decision: Option<i64>,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check the decision log's hash chain; exits non-zero on any break.
    Verify {
        /// A head hash printed by an earlier verify: also detects rows cut off the end.
        #[arg(long)]
        expect_head: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn clock() -> anyhow::Result<SystemClock> {
    let offset = std::env::var("FEEGATE_UTC_OFFSET").unwrap_or_else(|_| "+08:00".into());
    let offset: FixedOffset = offset
        .parse()
        .with_context(|| format!("FEEGATE_UTC_OFFSET={offset:?} is not like +08:00"))?;
    Ok(SystemClock { offset })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The engine of the `policy` commands: default limits, and the hosts' charge ceiling
/// when `FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH` says it ([`PolicyLimits::from_env`]).
fn engine() -> anyhow::Result<std::sync::Arc<PolicyEngine>> {
    PolicyEngine::new(PolicyLimits::from_env().map_err(anyhow::Error::msg)?)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Runs a `feegate policy …` command. `Ok(false)` means "ran, but the answer is no"
/// (the process exits non-zero).
pub async fn run_policy(args: PolicyArgs) -> anyhow::Result<bool> {
    let now = clock()?.now();
    if let PolicyCommand::Key {
        command: KeyCommand::New { out },
    } = &args.command
    {
        let key = registry::generate_key();
        let (private, public) = registry::write_key_pair(&key, out)?;
        println!(
            "private key: {} (keep it secret; it signs policies)",
            private.display()
        );
        println!(
            "public key:  {} (give it to the county: `feegate policy trust add`)",
            public.display()
        );
        return Ok(true);
    }
    if let PolicyCommand::Sign {
        component,
        params,
        key,
    } = &args.command
    {
        let params = registry::canonical_parameters(&read_text(params)?)?;
        let key = registry::read_signing_key(key)?;
        println!("{}", registry::sign(&key, &read(component)?, &params));
        return Ok(true);
    }
    if let PolicyCommand::Test {
        component,
        fixtures,
        json,
    } = &args.command
    {
        return policy_test(component, fixtures, *json);
    }
    if let PolicyCommand::New {
        kind,
        name,
        dir,
        repo,
    } = &args.command
    {
        let s = crate::scaffold::scaffold(*kind, name, dir, repo.as_deref())?;
        println!(
            "scaffolded the {kind} policy {} in {}:",
            s.package,
            s.dir.display()
        );
        for f in &s.files {
            println!("  {f}");
        }
        let in_repo = s.dir.starts_with(s.repo.join("plugins"));
        let (profile, hint) = if in_repo {
            (
                "plugin",
                format!("  (or add {name} to PLUGINS in the Makefile and run `make plugins`)"),
            )
        } else {
            ("release", String::new())
        };
        println!("next:");
        println!(
            "  edit {}/src/lib.rs and fixtures/example.json",
            s.dir.display()
        );
        println!(
            "  cargo test --manifest-path {}/Cargo.toml",
            s.dir.display()
        );
        println!(
            "  cargo build --manifest-path {}/Cargo.toml --target wasm32-wasip2 --profile {profile}{hint}",
            s.dir.display()
        );
        // Workspace members build into the workspace's target directory.
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        println!(
            "  feegate policy test {target}/wasm32-wasip2/{profile}/{} --fixtures {}/fixtures/example.json",
            s.component_file,
            s.dir.display()
        );
        return Ok(true);
    }
    // Commands that only read never create a database (a mistyped path is an error).
    let db = match &args.command {
        PolicyCommand::List { .. }
        | PolicyCommand::Show { .. }
        | PolicyCommand::History { .. }
        | PolicyCommand::Diff { .. }
        | PolicyCommand::Trust {
            command: TrustCommand::List { .. },
        } => Db::open_existing(&args.db.db).await?,
        _ => Db::open(&args.db.db).await?,
    };
    match args.command {
        PolicyCommand::Key { .. }
        | PolicyCommand::Sign { .. }
        | PolicyCommand::Test { .. }
        | PolicyCommand::New { .. } => {
            unreachable!("handled above")
        }
        PolicyCommand::Trust { command } => match command {
            TrustCommand::Add {
                county,
                key,
                who,
                by,
            } => {
                anyhow::ensure!(
                    !county.trim().is_empty() && !who.trim().is_empty(),
                    "--county and --who must name a county and the key's holder"
                );
                let vk = registry::read_public_key(&key)?;
                let by = WhoArg { who: by }.resolve()?;
                let k = registry::trust_key(&db, &county, &vk, &who, &by, now).await?;
                // Trusted before: the first record stands (append-only), holder included.
                let already = k.added_at != crate::db::ts(now) || k.who != who;
                println!(
                    "{}county {} trusts key #{} {} held by {} (added by {} at {}){}",
                    if already { "already trusted: " } else { "" },
                    k.county,
                    k.key_id,
                    k.public_key_hex,
                    k.who,
                    k.added_by,
                    k.added_at,
                    if already && k.who != who {
                        format!("; the holder stays {}, not {who}", k.who)
                    } else {
                        String::new()
                    }
                );
            }
            TrustCommand::List { county } => {
                for k in registry::all_keys(&db, &county).await? {
                    println!(
                        "#{}  {}  {}  added by {} at {}{}",
                        k.key_id,
                        k.public_key_hex,
                        k.who,
                        k.added_by,
                        k.added_at,
                        revoked_mark(&k)
                    );
                }
            }
            TrustCommand::Revoke {
                county,
                key_id,
                who,
                why,
            } => {
                let k = registry::revoke_key(&db, &county, key_id, &who, &why, now).await?;
                println!(
                    "county {county} no longer trusts key #{} ({}){}; versions it signed before stay published",
                    k.key_id,
                    k.who,
                    revoked_mark(&k)
                );
            }
        },
        PolicyCommand::Publish {
            component,
            county,
            kind,
            params,
            key,
            signature,
            note,
        } => {
            let bytes = read(&component)?;
            let params_text = read_text(&params)?;
            let signature_hex = match (key, signature) {
                (Some(key), _) => {
                    let canonical = registry::canonical_parameters(&params_text)?;
                    registry::sign(&registry::read_signing_key(&key)?, &bytes, &canonical)
                }
                (None, Some(sig)) => read_text(&sig)?,
                (None, None) => anyhow::bail!("give --key KEYFILE or --signature SIGFILE"),
            };
            let engine = engine()?;
            let p = registry::publish(
                &db,
                &engine,
                &PublishRequest {
                    county: &county,
                    kind,
                    component: &bytes,
                    parameters: &params_text,
                    signature_hex: &signature_hex,
                    note: &note,
                    now,
                },
            )
            .await
            .with_context(|| format!("{} not published", component.display()))?;
            // The same component and parameters again: the registry keeps the first
            // publication (append-only, one per version) and records nothing new.
            if p.published_at != crate::db::ts(now) || p.note != note {
                println!(
                    "already published: {kind} version {} for {county} is publication #{} (by {} at {}, note {:?}); nothing recorded, and this note was not stored: say why in `policy activate --note`",
                    p.component_sha256, p.publication_id, p.who, p.published_at, p.note
                );
            } else {
                println!(
                    "published {kind} version {} for {county} (publication #{}, contract {}, {} bytes, by {} at {})",
                    p.component_sha256,
                    p.publication_id,
                    p.contract_version,
                    p.size_bytes,
                    p.who,
                    p.published_at
                );
            }
            // By publication number: the component's sha256 may also be published with
            // other parameters, and then names no single version.
            println!(
                "activate it with: feegate policy activate --county {county} --kind {kind} --version '#{}' --note WHY",
                p.publication_id
            );
        }
        PolicyCommand::Activate {
            county,
            kind,
            version,
            at,
            stage,
            who,
            note,
        } => {
            let at = at.as_deref().map(registry::parse_time).transpose()?;
            let engine = engine()?;
            let a = registry::activate(
                &db,
                &engine,
                &ActivateRequest {
                    county: &county,
                    kind,
                    version: &version,
                    at,
                    stage,
                    who: &who.resolve()?,
                    note: &note,
                    now,
                },
            )
            .await?;
            print_activation(&a);
        }
        PolicyCommand::Rollback {
            county,
            kind,
            who,
            note,
        } => {
            let engine = engine()?;
            let a = registry::rollback(&db, &engine, &county, kind, &who.resolve()?, &note, now)
                .await?;
            print_activation(&a);
            // A rollback undoes what is in force; what is scheduled still comes.
            for s in registry::history(&db, &county, Some(kind)).await? {
                if s.cancelled.is_none() && s.effective_at > a.effective_at {
                    println!(
                        "activation #{} ({}) is still scheduled for {}; to stop it: feegate policy cancel --county {county} --kind {kind} --activation {} --note WHY",
                        s.activation_id,
                        short(&s.component_sha256),
                        s.effective_at,
                        s.activation_id
                    );
                }
            }
        }
        PolicyCommand::Cancel {
            county,
            kind,
            activation,
            who,
            note,
        } => {
            // The clock is read again once the cancel holds the write lock.
            let clock = clock()?;
            let a = registry::cancel(
                &db,
                &county,
                kind,
                activation,
                &who.resolve()?,
                &note,
                || clock.now(),
            )
            .await?;
            print!("cancelled: ");
            print_activation(&a);
        }
        PolicyCommand::List { county, kind, json } => {
            let pubs = registry::publications(&db, &county, kind).await?;
            let mut in_force = std::collections::BTreeMap::new();
            for k in PolicyKind::ALL {
                if let Some(a) = registry::in_force(&db, &county, k, now).await? {
                    in_force.insert(k, a.publication_id);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&pubs)?);
                return Ok(true);
            }
            for p in pubs {
                let mark = if in_force.get(&p.kind) == Some(&p.publication_id) {
                    "* in force"
                } else {
                    ""
                };
                println!(
                    "#{:<4} {:<8} {}  {:<7}  {}  {}  {}  {mark}",
                    p.publication_id,
                    p.kind.as_str(),
                    short(&p.component_sha256),
                    p.source,
                    p.published_at,
                    p.who,
                    p.note
                );
            }
            for k in PolicyKind::ALL {
                if kind.is_none_or(|only| only == k) && !in_force.contains_key(&k) {
                    println!("{k}: no activation in the registry; the policy-set file is in force");
                }
            }
        }
        PolicyCommand::Show {
            county,
            kind,
            version,
        } => {
            let p = registry::resolve(&db, &county, kind, &version).await?;
            let bytes = registry::component_bytes(&db, &p.component_sha256).await?;
            let loaded = engine()?.load(kind, &bytes)?;
            println!("publication   #{}", p.publication_id);
            println!("county/kind   {} / {}", p.county, p.kind);
            println!("component     {}", p.component_sha256);
            println!("contract      feegate:policy@{}", loaded.contract_version);
            println!("size          {} bytes", p.size_bytes);
            println!("imports       {}", loaded.imports.join(", "));
            println!("source        {}", p.source);
            println!("published     {} by {}", p.published_at, p.who);
            println!("note          {}", p.note);
            if let Some(id) = p.signer_key_id {
                let key = registry::all_keys(&db, &county)
                    .await?
                    .into_iter()
                    .find(|k| k.key_id == id);
                match key {
                    Some(k) => println!(
                        "signed by     key #{} {} ({}){}",
                        k.key_id,
                        short(&k.public_key_hex),
                        k.who,
                        revoked_mark(&k)
                    ),
                    None => println!("signed by     key #{id}"),
                }
            }
            println!("parameters    {}", p.parameters_json);
            for a in registry::history(&db, &county, Some(kind)).await? {
                if a.publication_id == p.publication_id {
                    println!(
                        "activation    #{} {} effective {} by {}: {}{}",
                        a.activation_id,
                        a.action,
                        a.effective_at,
                        a.who,
                        a.note,
                        cancelled_mark(&a)
                    );
                }
            }
        }
        PolicyCommand::History { county, kind, json } => {
            let h = registry::history(&db, &county, kind).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                for a in &h {
                    print_activation(a);
                }
                if h.is_empty() {
                    println!("no activations for {county}; the policy-set files are in force");
                }
                for e in shadow::events(&db, &county, kind).await? {
                    print_shadow_event(&e);
                }
            }
        }
        PolicyCommand::Shadow {
            county,
            kind,
            version,
            until,
            stop,
            who,
            note,
        } => {
            let who = who.resolve()?;
            let e = match version {
                Some(version) if !stop => {
                    let until = until.as_deref().map(registry::parse_time).transpose()?;
                    shadow::start(
                        &db,
                        &*engine()?,
                        &shadow::StartRequest {
                            county: &county,
                            kind,
                            version: &version,
                            until,
                            who: &who,
                            note: &note,
                            now,
                        },
                    )
                    .await?
                }
                _ => shadow::stop(&db, &county, kind, &who, &note, now).await?,
            };
            print_shadow_event(&e);
        }
        PolicyCommand::Diff {
            county,
            kind,
            candidate,
            shadow,
            days,
            until,
            show,
            json,
        } => {
            let until = match until {
                Some(d) => d,
                None => latest_business_date(&db, &county, kind, shadow).await?,
            };
            let from = crate::db::ds(until - Duration::days(i64::from(days.max(1)) - 1));
            let until = crate::db::ds(until);
            let r = match candidate {
                Some(candidate) if !shadow => {
                    let engine = engine()?;
                    audit::diff(&db, &engine, &county, kind, &candidate, &from, &until).await?
                }
                _ => {
                    let max = PolicyLimits::from_env()
                        .map_err(anyhow::Error::msg)?
                        .max_price_yuan_per_kwh;
                    audit::shadow_diff(&db, &county, kind, &from, &until, max).await?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_diff(&r, show);
            }
            let mut review = true;
            if r.disconnects_more() {
                eprintln!(
                    "error: the candidate would disconnect MORE customers ({} vs {}); do not activate it without a person's review",
                    r.disconnections.1, r.disconnections.0
                );
                review = false;
            }
            if r.over_ceiling_more() {
                eprintln!(
                    "error: the candidate would charge {} decisions above the host's ceiling of {} yuan/kWh (recorded: {}); settlement would hold those accounts; do not activate it",
                    r.over_ceiling.1,
                    crate::settlement::MAX_PRICE_YUAN_PER_KWH,
                    r.over_ceiling.0
                );
                review = false;
            }
            if !review {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn policy_test(component: &Path, fixtures: &Path, json: bool) -> anyhow::Result<bool> {
    let text = read_text(fixtures)?;
    let named = |e: String| anyhow::anyhow!("{}: {e}", fixtures.display());
    let log_kind = crate::fixtures::kind_of(&text).map_err(named)?;
    let kind = audit::component_kind(&log_kind)
        .with_context(|| format!("fixture kind {log_kind:?} is not a policy kind"))?;
    let engine = engine()?;
    let c = engine
        .load(kind, &read(component)?)
        .with_context(|| format!("{} refused", component.display()))?;
    let results =
        tokio::task::block_in_place(|| crate::fixtures::run(&engine, &c, &text)).map_err(named)?;
    let failed = results.iter().filter(|r| !r.passed).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!(
                "{}  {:<60} {:>9} fuel{}",
                if r.passed { "pass" } else { "FAIL" },
                r.name,
                r.fuel_used,
                if r.passed {
                    String::new()
                } else {
                    format!("\n      {}\n      output: {}", r.mismatch, r.output)
                }
            );
        }
        println!(
            "{} case(s): {} passed, {failed} failed ({} {}, sha256 {})",
            results.len(),
            results.len() - failed,
            kind,
            component.display(),
            short(&c.sha256)
        );
    }
    Ok(failed == 0)
}

/// The latest business date of `kind` in the decision log (or, for `shadow`, among
/// the shadows' recorded decisions).
async fn latest_business_date(
    db: &Db,
    county: &str,
    kind: PolicyKind,
    shadow: bool,
) -> anyhow::Result<NaiveDate> {
    use sqlx::Row;
    let table = if shadow {
        "shadow_decisions"
    } else {
        "decisions"
    };
    let row = sqlx::query(&format!(
        "SELECT MAX(business_date) FROM {table} WHERE county = $1 AND (kind = $2 OR ($2 = 'cutoff' AND kind = 'reconnection'))",
    ))
    .bind(county)
    .bind(kind.as_str())
    .fetch_one(&db.pool)
    .await?;
    let d: Option<String> = row.try_get(0)?;
    let d = d.with_context(|| {
        format!("no recorded {kind} decisions for {county}; nothing to replay (give --until to choose the days)")
    })?;
    Ok(crate::db::parse_ds(&d)?)
}

fn print_activation(a: &registry::Activation) {
    let stage = a
        .rollout_stage
        .map(|s| {
            format!(
                ", stage {}",
                serde_json::to_value(s)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            )
        })
        .unwrap_or_default();
    println!(
        "#{:<4} {} {:<8} {} (publication #{}) {} effective {}{stage}, by {} at {}: {}{}",
        a.activation_id,
        a.county,
        a.kind.as_str(),
        short(&a.component_sha256),
        a.publication_id,
        a.action,
        a.effective_at,
        a.who,
        a.recorded_at,
        a.note,
        cancelled_mark(a)
    );
}

/// " — CANCELLED by W at T: NOTE" for a cancelled activation (it never took effect).
fn cancelled_mark(a: &registry::Activation) -> String {
    a.cancelled
        .as_ref()
        .map(|c| {
            format!(
                " — CANCELLED by {} at {}: {} (never takes effect)",
                c.who, c.recorded_at, c.note
            )
        })
        .unwrap_or_default()
}

fn print_shadow_event(e: &shadow::ShadowEvent) {
    let what = match (&e.component_sha256, e.publication_id) {
        (Some(sha), Some(id)) => format!(
            "shadow start {} (publication #{id}){}",
            short(sha),
            e.until_at
                .as_deref()
                .map(|u| format!(" until {u}"))
                .unwrap_or_default()
        ),
        _ => "shadow stop".to_string(),
    };
    println!(
        "shadow #{:<4} {} {:<8} {what}, by {} at {}: {}",
        e.shadow_event_id,
        e.county,
        e.kind.as_str(),
        e.who,
        e.recorded_at,
        e.note
    );
}

fn revoked_mark(k: &registry::TrustedKey) -> String {
    match &k.revoked_at {
        Some(at) => format!(
            "  REVOKED at {at} by {}: {}",
            k.revoked_by.as_deref().unwrap_or("?"),
            k.revoked_note.as_deref().unwrap_or("")
        ),
        None => String::new(),
    }
}

fn yuan(fen: i64) -> String {
    crate::money::fen_to_yuan(fen).to_string()
}

fn print_diff(r: &audit::DiffReport, show: usize) {
    let (what, counted) = if r.source == "shadow" {
        ("shadow", "decisions shadowed ")
    } else {
        ("candidate", "decisions replayed ")
    };
    println!(
        "policy diff — {} {} {what} {} (publication #{}), decisions of {} ..= {}",
        r.county,
        r.kind,
        short(&r.candidate_sha256),
        r.candidate_publication_id,
        r.from,
        r.to
    );
    println!("  {counted}  {}", r.decisions);
    if r.decisions == 0 && r.source == "shadow" {
        println!(
            "  (the shadow has not run on any live decision in these days yet: decisions of its kind are shadowed as the host makes them; widen --days or wait for the next job)"
        );
    }
    println!("  decisions changed    {}", r.changed.len());
    if r.kind == PolicyKind::Tariff {
        println!(
            "  money difference     {} yuan (candidate − recorded; + means customers pay more)",
            yuan(r.charge_difference_fen)
        );
    }
    if r.kind == PolicyKind::Warning {
        println!("  warned               {} → {}", r.warned.0, r.warned.1);
    }
    if r.kind == PolicyKind::Cutoff {
        println!(
            "  disconnect/approval  {} → {}",
            r.disconnections.0, r.disconnections.1
        );
    }
    println!(
        "  fuel                 {} → {} ({:+})",
        r.fuel_recorded,
        r.fuel_candidate,
        r.fuel_candidate as i128 - r.fuel_recorded as i128
    );
    if r.new_failures > 0 {
        println!(
            "  NEW FAILURES         {} (those accounts would be held)",
            r.new_failures
        );
    }
    for c in r.changed.iter().take(show) {
        println!(
            "  #{} {} {} {}: {}  →  {}",
            c.decision_id, c.kind, c.account_id, c.business_date, c.recorded, c.candidate
        );
    }
    if r.changed.len() > show {
        println!("  … {} more (--show N, or --json)", r.changed.len() - show);
    }
    if r.disconnects_more() {
        println!();
        println!("  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        println!(
            "  !!  THE CANDIDATE WOULD DISCONNECT MORE CUSTOMERS: {} instead of {}",
            r.disconnections.1, r.disconnections.0
        );
        println!("  !!  (the host safety floor still applies to every one of them)");
        println!("  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    }
    if r.over_ceiling_more() {
        println!();
        println!("  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        println!(
            "  !!  THE CANDIDATE WOULD CHARGE ABOVE THE HOST'S CEILING ({} yuan/kWh): {} decisions instead of {}",
            crate::settlement::MAX_PRICE_YUAN_PER_KWH,
            r.over_ceiling.1,
            r.over_ceiling.0
        );
        println!("  !!  (settlement would hold those accounts and charge them nothing)");
        println!("  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    }
}

/// Runs a `feegate audit …` command; `Ok(false)`: a check failed (exit non-zero).
pub async fn run_audit(args: AuditArgs) -> anyhow::Result<bool> {
    let db = Db::open_existing(&args.db.db).await?;
    match args.command {
        AuditCommand::Log { filter, json } => {
            let lines = audit::log(&db, &filter.filter()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                for l in lines {
                    // A decision made many per call (contract 1.1) holds a share of the
                    // call's fuel; say so, and of how many.
                    let call = match l.call_decisions {
                        Some(n) => format!(" (share of a call of {n})"),
                        None => String::new(),
                    };
                    println!(
                        "#{:<7} {} {:<12} {} {} {} {:<6} {:>9} fuel{call}  {}: {}",
                        l.decision_id,
                        l.decided_at,
                        l.kind,
                        l.account_id,
                        l.business_date,
                        short(&l.component_sha256),
                        l.outcome,
                        l.fuel_used,
                        l.reason_code.unwrap_or_default(),
                        l.explanation.unwrap_or_default()
                    );
                }
            }
            Ok(true)
        }
        AuditCommand::Verify { expect_head, json } => {
            // Hex is hex in either case; the log stores lowercase.
            let expect_head = expect_head.map(|h| h.to_ascii_lowercase());
            if let Some(h) = &expect_head {
                anyhow::ensure!(
                    h.len() == 64
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    "--expect-head {h:?} is not a head hash: give the 64 hex digits an earlier `audit verify` printed"
                );
            }
            let r = audit::verify(&db, expect_head.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "decision log: {} chained rows up to #{}, {} unchained (before the chain existed)",
                    r.rows, r.last_decision_id, r.unchained
                );
                println!(
                    "head hash: {} (keep it; `--expect-head` detects a cut-off end)",
                    r.head_hash
                );
                for b in &r.breaks {
                    println!("BROKEN at decision #{}: {}", b.decision_id, b.problem);
                }
                println!(
                    "{}",
                    if r.ok() {
                        "chain intact"
                    } else {
                        "CHAIN BROKEN"
                    }
                );
            }
            Ok(r.ok())
        }
        AuditCommand::Replay {
            decision,
            filter,
            json,
        } => {
            let engine = engine()?;
            let results = audit::replay(&db, &engine, &filter.filter(), decision).await?;
            let mismatches = results.iter().filter(|r| !r.matches).count();
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for r in &results {
                    if r.matches && decision.is_none() {
                        continue;
                    }
                    println!(
                        "#{} {} {}: {}",
                        r.decision_id,
                        r.kind,
                        short(&r.component_sha256),
                        if r.matches { "identical" } else { "DIFFERENT" }
                    );
                    println!("  recorded  {}", r.recorded);
                    println!("  replayed  {}", r.replayed);
                    println!(
                        "  fuel      {} recorded, {} replayed",
                        r.fuel_recorded, r.fuel_replayed
                    );
                    if let Some(n) = &r.note {
                        println!("  note      {n}");
                    }
                }
                println!(
                    "replayed {} decision(s): {} identical, {} different",
                    results.len(),
                    results.len() - mismatches,
                    mismatches
                );
            }
            Ok(mismatches == 0)
        }
    }
}
