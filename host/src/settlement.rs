//! Daily settlement (每日自动测算): consumption from register deltas, priced by the
//! county's tariff component, posted to the ledger — exactly once per account and day.
//!
//! For each active account with a new daily frozen reading:
//!
//! 1. The opening reading is the closing reading of the account's last settlement (or,
//!    for a new account, its first reading, which only sets the baseline).
//! 2. The delta is checked: a register that went backwards (rollover near 999999.99
//!    kWh is recognised and unwrapped; anything else — e.g. a replaced meter — is held),
//!    a transient zero, or more energy than the meter could pass in the elapsed days is
//!    held for a person and never billed blindly. A held span is settled later, in one
//!    piece, from the last good settlement, so nothing is lost and nothing doubled.
//! 3. kWh = delta × CT ratio × PT ratio; the tariff component prices it with the
//!    cycle-to-date usage; the decision, the charge entry, the balance move and the
//!    `settlements` row are written in one transaction — one per batch of
//!    [`SettlementConfig::batch_accounts`] accounts, read with a few range queries, priced on every core
//!    while the batch before is written, and written with multi-row statements, each
//!    account's outcome the same as if it were settled alone. The primary key of
//!    `settlements` (account, day) and the entry's idempotency key make a re-run after a
//!    crash a no-op; a crash loses at most the two batches in flight (one being written,
//!    one decided), which the re-run settles.
//! 4. A policy failure (trap, fuel, invalid output) records the failed decision and
//!    holds the account: no charge is guessed.

use crate::config::SettlementConfig;
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ds, parse_ds, ts};
use crate::decision_log::{self, BatchRecord};
use crate::ledger::{self, EntryKind, LedgerError, PostOutcome, Posting};
use crate::money::{CentiKwh, Fen, centi_kwh_to_kwh};
use crate::policy::bindings::{CustomerClass, Decimal as WitDecimal, TariffInput, TariffOutput};
use crate::policy::convert::{date_to_wit, to_wit};
use crate::policy::{Deciding, Invocation, PolicyEngine, PolicyKind};
use crate::replacement::StoredReplacement;
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use sqlx::AnyConnection;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SettlementError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Outcome of one settlement run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettlementReport {
    /// Accounts charged in this run.
    pub settled: u32,
    /// Total charged, fen.
    pub charged_fen: Fen,
    /// Total energy settled, 0.01 kWh.
    pub kwh_centi: CentiKwh,
    /// Accounts held (bad reading or policy failure).
    pub held: u32,
    /// New accounts whose first reading only set the baseline.
    pub baselines: u32,
    /// Accounts already settled for this reading (re-run).
    pub already_settled: u32,
    /// Account ids settled in this run.
    pub settled_accounts: Vec<String>,
}

/// What the register delta means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaCheck {
    /// Consumption in 0.01 kWh (before multipliers).
    Consumption(CentiKwh),
    /// Held: why, for the operator.
    Hold(String),
}

/// The most a meter may register in `days` days (at least one): `max_daily_kwh` × days in
/// 0.01 kWh, checked. A rating that does not fit (a misconfiguration; the default 316.8
/// kWh always fits) is an error naming it, and the caller holds the span for a person
/// rather than bill it against a clamped, effectively missing limit.
fn rating_limit(cfg: &SettlementConfig, days: i64) -> Result<CentiKwh, String> {
    crate::money::kwh_to_centi_kwh(cfg.max_daily_kwh)
        .ok()
        .and_then(|per_day| per_day.checked_mul(days.max(1)))
        .ok_or_else(|| {
            format!(
                "the meter rating {} kWh/day × {days} day(s) is out of range; fix max_daily_kwh",
                cfg.max_daily_kwh
            )
        })
}

/// Checks a register delta between two readings `days` apart (no phantom consumption
/// from a zero, wrapped or replaced register).
pub fn check_delta(
    opening: CentiKwh,
    closing: CentiKwh,
    days: i64,
    cfg: &SettlementConfig,
) -> DeltaCheck {
    let limit = match rating_limit(cfg, days) {
        Ok(l) => l,
        Err(why) => return DeltaCheck::Hold(why),
    };
    if closing == 0 && opening > 0 {
        return DeltaCheck::Hold(format!(
            "transient zero: register read 0.00 kWh after {}",
            centi_kwh_to_kwh(opening)
        ));
    }
    let delta = if closing >= opening {
        closing - opening
    } else {
        // Rollover: the register wrapped at its maximum. Only plausible when the old
        // value was near the top and the new one near zero, within the rating.
        let wrapped = cfg.register_max_centi_kwh + 1 - opening + closing;
        if wrapped <= limit {
            wrapped
        } else {
            return DeltaCheck::Hold(format!(
                "register went backwards from {} to {} kWh (meter replaced or reset?); needs a person",
                centi_kwh_to_kwh(opening),
                centi_kwh_to_kwh(closing)
            ));
        }
    };
    if delta > limit {
        return DeltaCheck::Hold(format!(
            "implausible: {} kWh in {days} day(s) exceeds the meter rating ({} kWh/day)",
            centi_kwh_to_kwh(delta),
            cfg.max_daily_kwh
        ));
    }
    DeltaCheck::Consumption(delta)
}

/// A meter replacement recorded by field staff: the old meter's final register and the new
/// meter's register when it was fitted, both 0.01 kWh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replacement {
    /// The old meter's last register value (read at removal).
    pub old_final: CentiKwh,
    /// The new meter's register at installation (often 0).
    pub new_start: CentiKwh,
}

/// Consumption across a meter replacement between two readings `days` apart: what the old
/// meter counted after `opening` up to its final reading, plus what the new one counted from
/// its start reading to `closing`. Each part is checked like any delta, and the sum must be
/// within the meter's rating; anything else is held. Without the replacement record the same
/// readings look like a register going backwards and are held by [`check_delta`].
pub fn check_delta_across_replacement(
    opening: CentiKwh,
    replacement: Replacement,
    closing: CentiKwh,
    days: i64,
    cfg: &SettlementConfig,
) -> DeltaCheck {
    let old = match check_delta(opening, replacement.old_final, days, cfg) {
        DeltaCheck::Consumption(c) => c,
        DeltaCheck::Hold(why) => {
            return DeltaCheck::Hold(format!("meter replacement, old meter: {why}"));
        }
    };
    let new = match check_delta(replacement.new_start, closing, days, cfg) {
        DeltaCheck::Consumption(c) => c,
        DeltaCheck::Hold(why) => {
            return DeltaCheck::Hold(format!("meter replacement, new meter: {why}"));
        }
    };
    let limit = match rating_limit(cfg, days) {
        Ok(l) => l,
        Err(why) => return DeltaCheck::Hold(why),
    };
    if old + new > limit {
        return DeltaCheck::Hold(format!(
            "meter replacement: implausible: {} kWh in {days} day(s) exceeds the meter rating ({} kWh/day)",
            centi_kwh_to_kwh(old + new),
            cfg.max_daily_kwh
        ));
    }
    DeltaCheck::Consumption(old + new)
}

/// The part of `kwh_centi`, spread over `first..=last`, that falls on days in
/// `from..=to`, in milli-kWh (0.001 kWh). Energy is spread evenly per day in whole
/// 0.001 kWh with the indivisible remainder on the last day — the rule of the tariff
/// components for periods that cross a cycle boundary (`plugins/tariff-step`,
/// `tariff::allocate`), so cycle-to-date usage here matches what they priced.
pub fn portion_in(
    kwh_centi: CentiKwh,
    first: NaiveDate,
    last: NaiveDate,
    from: NaiveDate,
    to: NaiveDate,
) -> i64 {
    let days = (last - first).num_days() + 1;
    if days <= 0 || to < from {
        return 0;
    }
    let milli = kwh_centi * 10;
    let per_day = milli / days;
    let remainder = milli - per_day * days;
    let lo = first.max(from);
    let hi = last.min(to);
    if hi < lo {
        return 0;
    }
    let overlap = (hi - lo).num_days() + 1;
    per_day * overlap + if hi == last { remainder } else { 0 }
}

/// Default charge ceiling, yuan per kWh ([`crate::config::PolicyLimits::max_price_yuan_per_kwh`]).
/// Our decision, not from a price notice: about six times the dearest step of the
/// shipped Fujian example (0.7983 yuan/kWh, `policies/xianyou`), room for time-of-use
/// adders and high-voltage tariffs, while a charge wrong by an order of magnitude (a
/// price in fen instead of yuan, a misplaced decimal point) is stopped. A host whose
/// tariffs go higher sets its own in `feegate.toml`.
pub const MAX_PRICE_YUAN_PER_KWH: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(5, 0, 0, false, 0);

/// Why a tariff decision must not be posted: its `charge_fen` is more than the period's
/// `kwh` (the input's, as the WIT decimal) × `max_price_yuan_per_kwh` yuan/kWh, rounded
/// up to the fen (a period with 0 kWh may charge nothing). `None` when the charge is
/// within the ceiling. The text is the hold reason shown to operators (code
/// `charge-over-ceiling`). A kWh the host cannot read as a decimal counts as over the
/// ceiling (it never is: the host wrote it).
pub fn over_ceiling(
    kwh: &WitDecimal,
    charge_fen: Fen,
    max_price_yuan_per_kwh: rust_decimal::Decimal,
) -> Option<String> {
    use rust_decimal::Decimal;
    let kwh = crate::policy::convert::from_wit(kwh).unwrap_or(Decimal::MAX);
    let ceiling_fen = kwh
        .checked_mul(max_price_yuan_per_kwh)
        .and_then(|yuan| yuan.checked_mul(Decimal::ONE_HUNDRED))
        .map(|fen| fen.ceil())
        .and_then(|fen| i64::try_from(fen).ok())
        .unwrap_or(i64::MAX);
    (charge_fen > ceiling_fen).then(|| {
        format!(
            "charge-over-ceiling: the tariff charged {} yuan for {kwh} kWh, more than the host's ceiling of {max_price_yuan_per_kwh} yuan/kWh ({} yuan); nothing was charged. Check the county's tariff component and parameters (`feegate policy diff`), then release the hold",
            crate::money::format_yuan(charge_fen),
            crate::money::format_yuan(ceiling_fen)
        )
    })
}

/// Accounts settled per batch by default ([`SettlementConfig::batch_accounts`]): read together (a handful of range queries), priced in
/// parallel ([`PolicyEngine::spawn_decide_parts`], while the batch before is written) and
/// written in ONE transaction (multi-row inserts: [`decision_log::append`],
/// [`ledger::post_many`]). A crash loses at most the two batches in flight, which the
/// re-run settles; a batch is all or nothing.
pub const BATCH_ACCOUNTS: usize = 1_000;

struct Candidate {
    account_id: String,
    meter_id: String,
    ct: i64,
    pt: i64,
    class: String,
    time_of_use: bool,
    closing_id: i64,
    closing_centi: CentiKwh,
}

fn class_of(s: &str) -> CustomerClass {
    match s {
        "low-voltage-commercial" => CustomerClass::LowVoltageCommercial,
        "high-voltage" => CustomerClass::HighVoltage,
        _ => CustomerClass::LowVoltageResidential,
    }
}

/// Settles every active account of the county with a reading dated `reading_date`
/// (the register at 00:00 of that date, closing consumption through the day before),
/// [`SettlementConfig::batch_accounts`] accounts at a time in account-id order.
///
/// Per account the outcome is exactly that of settling it alone: a baseline for a new
/// meter, "already settled" on a re-run, a hold for a bad reading or a failed tariff, or
/// a charge (decision, ledger entry, balance, `settlements` row) — see the module doc.
pub async fn settle(
    db: &Db,
    engine: &Arc<PolicyEngine>,
    county: &str,
    policies: &PolicySnapshot,
    reading_date: NaiveDate,
    now: NaiveDateTime,
    cfg: &SettlementConfig,
) -> Result<SettlementReport, SettlementError> {
    let run = Run {
        db,
        engine,
        county,
        policies,
        reading_date,
        now,
        cfg,
    };
    let mut report = SettlementReport::default();
    let mut after = String::new();
    // Two batches in flight: while one batch is written, the next one's tariff decisions
    // run on the decision threads, and the batch after it is read beside that write, on
    // a connection of its own (`Db::reads`; before the write only for an in-memory or
    // shared-cache SQLite database, `Db::read_beside_write`). Batches
    // are disjoint ranges of account ids, a batch reads only rows of accounts in its own
    // range (by id range or id list) and writes only rows of its own accounts, so the
    // write changes nothing the next batch reads. A decision's charge is posted against
    // the balance stored at the write, so a payment in between moves no charge. Whatever
    // was decided before an error is still written.
    let mut decided: Option<Planned> = None;
    let mut more = true;
    while more || decided.is_some() {
        let read = async {
            match more {
                true => Some(plan_batch(run, &mut after).await),
                false => None,
            }
        };
        let write = async {
            match decided.take() {
                Some(planned) => write_batch(run, planned).await.map(Some),
                None => Ok(None),
            }
        };
        let (next, written) = db.read_beside_write(read, write).await;
        if let Some(tally) = written? {
            report.absorb(tally);
        }
        match next.transpose()? {
            Some(Some((planned, tally, full))) => {
                report.absorb(tally);
                decided = Some(planned);
                more = full;
            }
            _ => more = false,
        }
    }
    Ok(report)
}

impl SettlementReport {
    /// Adds a batch's counts (and its settled accounts, after those already here).
    fn absorb(&mut self, batch: SettlementReport) {
        self.settled += batch.settled;
        self.charged_fen += batch.charged_fen;
        self.kwh_centi += batch.kwh_centi;
        self.held += batch.held;
        self.baselines += batch.baselines;
        self.already_settled += batch.already_settled;
        self.settled_accounts.extend(batch.settled_accounts);
    }
}

/// Reads the next batch of candidates (account ids after `after`, which moves to the
/// batch's last), their facts and history, plans each and starts the tariff decisions
/// ([`PolicyEngine::spawn_decide_parts`] with [`PolicyEngine::price_many`]; each
/// decision's log row is serialised there too). `None` when no candidate is left; else the planned batch, what planning found
/// (baselines, re-runs, holds) and whether the batch was full (more may follow).
async fn plan_batch(
    run: Run<'_>,
    after: &mut String,
) -> Result<Option<(Planned, SettlementReport, bool)>, SettlementError> {
    let Run {
        db,
        engine,
        county,
        policies,
        reading_date,
        now,
        cfg,
    } = run;
    let batch_accounts = cfg.batch_accounts.max(1);
    let rows = sqlx::query(
        "SELECT a.account_id, m.meter_id, m.ct_ratio, m.pt_ratio, c.customer_class, g.time_of_use, r.reading_id, r.register_centi_kwh
         FROM accounts a
         JOIN meters m ON m.meter_id = a.meter_id
         JOIN customers c ON c.customer_id = a.customer_id
         JOIN agreements g ON g.agreement_id = a.agreement_id
         JOIN readings r ON r.meter_id = m.meter_id AND r.reading_date = $2
         WHERE a.county = $1 AND a.status = 'active' AND a.account_id > $3
         ORDER BY a.account_id LIMIT $4",
    )
    .bind(county)
    .bind(ds(reading_date))
    .bind(after.as_str())
    .bind(batch_accounts as i64)
    .fetch_all(db.reads())
    .await?;
    let batch = rows
        .iter()
        .map(|r| {
            Ok(Candidate {
                account_id: r.try_get(0)?,
                meter_id: r.try_get(1)?,
                ct: r.try_get(2)?,
                pt: r.try_get(3)?,
                class: r.try_get(4)?,
                time_of_use: r.try_get::<i64, _>(5)? != 0,
                closing_id: r.try_get(6)?,
                closing_centi: r.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (Some(head), Some(tail)) = (batch.first(), batch.last()) else {
        return Ok(None);
    };
    let (first, last) = (head.account_id.clone(), tail.account_id.clone());
    let mut conn = db.reads().acquire().await?;
    let facts = BatchFacts::load(&mut conn, &first, &last, reading_date).await?;
    let tariff = policies.shared(PolicyKind::Tariff);
    let mut report = SettlementReport::default();
    let mut new_holds = Vec::new();
    let (mut priced, mut inputs) = (Vec::new(), Vec::new());
    for c in &batch {
        match plan(c, &facts, reading_date, cfg) {
            Step::Baseline => report.baselines += 1,
            Step::AlreadySettled => report.already_settled += 1,
            Step::StillHeld => report.held += 1,
            Step::Hold(reason) => {
                new_holds.push((c.account_id.clone(), reason));
                report.held += 1;
            }
            Step::Price(to_price) => {
                let (p, input) = *to_price;
                priced.push(p);
                inputs.push(input);
            }
        }
    }
    fill_cycle_to_date(&mut conn, &first, &last, &priced, &mut inputs).await?;
    drop(conn);
    let record = BatchRecord {
        county: county.to_string(),
        kind: "tariff",
        business_date: ds(reading_date.pred_opt().expect("date after 0001-01-01")),
        decided_at: ts(now),
        component_sha256: tariff.component.sha256.clone(),
    };
    // Many periods per call where the component exports `tariff-batch` (contract 1.1),
    // one fresh instance per period otherwise; the county parameters go once per call.
    let decisions = engine.spawn_decide_parts(inputs, move |engine, part| {
        let parameters = &tariff.parameters_json;
        let priced = engine.price_many(&tariff.component, parameters, part);
        record.prepare_sent_apart(part, parameters, priced, |i| &i.account_id)
    });
    *after = last;
    let planned = Planned {
        new_holds,
        settlement_held: facts.settlement_held,
        priced,
        decisions,
    };
    Ok(Some((planned, report, batch.len() == batch_accounts)))
}

/// The reading a period opens on.
struct Opening {
    reading_id: i64,
    date: NaiveDate,
    centi: CentiKwh,
    meter_id: String,
}

/// What the batch's read phase found for the accounts `first..=last`.
#[derive(Default)]
struct BatchFacts {
    /// Where each account's last settlement closed.
    settled_to: HashMap<String, Opening>,
    /// Each account's current meter's first reading (for accounts never settled).
    first_reading: HashMap<String, Opening>,
    /// Accounts with an open hold at the `reading` stage.
    reading_held: HashSet<String>,
    /// Accounts with an open hold at the `settlement` stage (released when settled).
    settlement_held: HashSet<String>,
    /// Meter replacements before the reading date, per account, oldest first.
    replacements: HashMap<String, Vec<(NaiveDateTime, StoredReplacement)>>,
}

/// Each account's [`Opening`] from `(account, reading id)` pairs (several accounts may
/// open on one reading: a meter's earlier account and its successor), the readings read
/// by primary key, [`crate::db::MAX_BOUND_PARAMETERS`] ids a query.
async fn openings_at(
    conn: &mut AnyConnection,
    pairs: Vec<(String, i64)>,
) -> Result<HashMap<String, Opening>, SettlementError> {
    let mut keys: Vec<i64> = pairs.iter().map(|(_, id)| *id).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut readings: HashMap<i64, (NaiveDate, CentiKwh, String)> =
        HashMap::with_capacity(keys.len());
    let rows = crate::db::fetch_in(
        conn,
        "SELECT reading_id, reading_date, register_centi_kwh, meter_id FROM readings WHERE reading_id IN $IDS",
        &keys,
        None,
    )
    .await?;
    for r in rows {
        readings.insert(
            r.try_get(0)?,
            (
                parse_ds(&r.try_get::<String, _>(1)?)?,
                r.try_get(2)?,
                r.try_get(3)?,
            ),
        );
    }
    let mut out = HashMap::with_capacity(pairs.len());
    for (account, reading_id) in pairs {
        // A reading a settlement or meter points at exists: it was checked when the
        // settlement was written (migration 0021) and readings are never deleted.
        let Some((date, centi, meter_id)) = readings.get(&reading_id) else {
            continue;
        };
        out.insert(
            account,
            Opening {
                reading_id,
                date: *date,
                centi: *centi,
                meter_id: meter_id.clone(),
            },
        );
    }
    Ok(out)
}

impl BatchFacts {
    /// Reads them with one range query each (account ids `first..=last`; rows of other
    /// counties' accounts in the range are simply not looked up).
    async fn load(
        conn: &mut AnyConnection,
        first: &str,
        last: &str,
        reading_date: NaiveDate,
    ) -> Result<Self, SettlementError> {
        let mut facts = Self::default();
        // Each in two steps. First the reading id for each account `$1..=$2`, found per
        // account in a correlated sub-query — the newest settlement's closing reading,
        // the meter's first reading — which can only be an index probe: a join form of
        // the same question ("the settlement whose date is the account's latest") was
        // planned as a hash join over every settlement or every reading of the county,
        // 33–38 ms a batch at 50,000 accounts and growing with the tables. Then those
        // readings by primary key with one `IN` list.
        let openings = async |conn: &mut AnyConnection, sql: &str| {
            let pairs = sqlx::query(sql)
                .bind(first)
                .bind(last)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .filter_map(|r| match r.try_get::<Option<i64>, _>(1) {
                    Ok(Some(id)) => Some(r.try_get::<String, _>(0).map(|a| (a, id))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
            openings_at(conn, pairs).await
        };
        facts.settled_to = openings(
            conn,
            "SELECT a.account_id,
                    (SELECT s.to_reading_id FROM settlements s WHERE s.account_id = a.account_id
                     ORDER BY s.business_date DESC LIMIT 1)
             FROM accounts a WHERE a.account_id >= $1 AND a.account_id <= $2",
        )
        .await?;
        facts.first_reading = openings(
            conn,
            "SELECT a.account_id,
                    (SELECT r.reading_id FROM readings r WHERE r.meter_id = a.meter_id
                     ORDER BY r.reading_date LIMIT 1)
             FROM accounts a WHERE a.account_id >= $1 AND a.account_id <= $2",
        )
        .await?;
        // A meter's first reading opens a period only when it is older than the day.
        facts.first_reading.retain(|_, o| o.date < reading_date);
        let rows = sqlx::query(
            "SELECT account_id, stage FROM holds
             WHERE account_id >= $1 AND account_id <= $2 AND released_at IS NULL AND stage IN ('reading', 'settlement')",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            let account: String = r.try_get(0)?;
            match r.try_get::<String, _>(1)?.as_str() {
                "reading" => facts.reading_held.insert(account),
                _ => facts.settlement_held.insert(account),
            };
        }
        let before = reading_date.and_time(chrono::NaiveTime::MIN);
        for (account, at, r) in crate::replacement::of_accounts(conn, first, last, before).await? {
            facts.replacements.entry(account).or_default().push((at, r));
        }
        Ok(facts)
    }
}

/// One account's way through the batch, decided from [`BatchFacts`] before any write.
enum Step {
    /// First reading of a new meter: it only sets the baseline.
    Baseline,
    /// Settled through this reading already (a re-run).
    AlreadySettled,
    /// An open `reading` hold: nothing is billed until a person releases it.
    StillHeld,
    /// A new `reading` hold, for this reason.
    Hold(String),
    /// To be priced, with the tariff's input (its cycle-to-date usage is filled after
    /// the read phase, [`fill_cycle_to_date`]).
    Price(Box<(Priced, TariffInput)>),
}

/// What a priced account's write needs beside its tariff input (which is moved to the
/// decision threads and comes back with the decision).
struct Priced {
    opening_id: i64,
    closing_id: i64,
    period_first: NaiveDate,
    kwh_centi: CentiKwh,
}

/// A batch read and planned ([`plan_batch`]), its tariff decisions running.
struct Planned {
    /// New `reading` holds: account, reason.
    new_holds: Vec<(String, String)>,
    /// Accounts with an open `settlement` hold (released when settled).
    settlement_held: HashSet<String>,
    /// The accounts to be charged, in the order of the decisions' inputs.
    priced: Vec<Priced>,
    /// Each priced account's tariff input, decision and decision-log row.
    decisions: Deciding<TariffInput, (Invocation<TariffOutput>, decision_log::ChainedRow)>,
}

/// Checks one candidate's delta against its opening and replacements (module doc, steps
/// 1–3) and says what to do; the cycle-to-date fields of the input are filled later from
/// the history ([`fill_cycle_to_date`]); its `parameters` are left empty, sent apart.
fn plan(
    c: &Candidate,
    facts: &BatchFacts,
    reading_date: NaiveDate,
    cfg: &SettlementConfig,
) -> Step {
    // Opening reading: where the last settlement closed, else the first reading ever.
    let Some(opening) = facts
        .settled_to
        .get(&c.account_id)
        .or_else(|| facts.first_reading.get(&c.account_id))
    else {
        return Step::Baseline;
    };
    if opening.date >= reading_date {
        return Step::AlreadySettled;
    }
    // A span held for a bad reading stays held until a person has looked at it
    // (`feegate holds release`): the next good reading must not quietly bill across it.
    if facts.reading_held.contains(&c.account_id) {
        return Step::StillHeld;
    }
    let period_first = opening.date;
    let period_last = reading_date.pred_opt().expect("date after 0001-01-01");
    let days = (reading_date - opening.date).num_days();
    // A meter replaced between the two readings (stored by `feegate meter replace`): the
    // old meter's tail plus the new meter's head. Without a record, a reading from another
    // meter is never billed against this one.
    let from = opening.date.and_time(chrono::NaiveTime::MIN);
    let replacements: Vec<&StoredReplacement> = facts
        .replacements
        .get(&c.account_id)
        .into_iter()
        .flatten()
        .filter(|(at, _)| *at >= from)
        .map(|(_, r)| r)
        .collect();
    let check = match replacements.as_slice() {
        [] if opening.meter_id == c.meter_id => {
            check_delta(opening.centi, c.closing_centi, days, cfg)
        }
        [] => DeltaCheck::Hold(format!(
            "the opening reading is from meter {}, the closing one from meter {}, \
             and no replacement is recorded between them: record it with `feegate meter replace`",
            opening.meter_id, c.meter_id
        )),
        [r] if r.old_meter_id == opening.meter_id && r.new_meter_id == c.meter_id => {
            check_delta_across_replacement(opening.centi, r.replacement, c.closing_centi, days, cfg)
        }
        [r] => DeltaCheck::Hold(format!(
            "the recorded replacement {} -> {} does not join the opening reading's meter \
             {} to the closing reading's meter {}; check the replacement record",
            r.old_meter_id, r.new_meter_id, opening.meter_id, c.meter_id
        )),
        more => DeltaCheck::Hold(format!(
            "{} meter replacements in one settlement period; needs a person",
            more.len()
        )),
    };
    let delta = match check {
        DeltaCheck::Consumption(d) => d,
        DeltaCheck::Hold(reason) => return Step::Hold(reason),
    };
    // CT and PT are bounded at onboarding; stored values from elsewhere could still
    // overflow: hold that account (a person checks the ratios) instead of guessing.
    let Some(kwh_centi) = delta.checked_mul(c.ct).and_then(|x| x.checked_mul(c.pt)) else {
        return Step::Hold(format!(
            "register delta {delta} centi-kWh × CT {} × PT {} overflows: check the meter's CT and PT ratios",
            c.ct, c.pt
        ));
    };
    Step::Price(Box::new((
        Priced {
            opening_id: opening.reading_id,
            closing_id: c.closing_id,
            period_first,
            kwh_centi,
        },
        TariffInput {
            account_id: c.account_id.clone(),
            customer_class: class_of(&c.class),
            period_first: date_to_wit(period_first),
            period_last: date_to_wit(period_last),
            kwh: to_wit(centi_kwh_to_kwh(kwh_centi)).expect("centi-kWh fits"),
            year_to_date_kwh: to_wit(rust_decimal::Decimal::ZERO).expect("zero fits"),
            month_to_date_kwh: to_wit(rust_decimal::Decimal::ZERO).expect("zero fits"),
            // Per-band registers are not collected yet: TOU customers are priced on the
            // step tariff alone until they are (documented in README).
            tou_split: vec![],
            time_of_use_elected: c.time_of_use,
            // Sent once beside the batch's inputs ([`PolicyEngine::price_many`]) and
            // recorded with each decision ([`decision_log::SentApart`]).
            parameters: String::new(),
        },
    )))
}

/// Fills the cycle-to-date usage of each priced account (`year_to_date_kwh`,
/// `month_to_date_kwh`: its settled energy from Jan 1 and from the 1st of the month of
/// `period_first` up to the day before), from the batch's earlier settlements.
async fn fill_cycle_to_date(
    conn: &mut AnyConnection,
    first: &str,
    last: &str,
    priced: &[Priced],
    inputs: &mut [TariffInput],
) -> Result<(), SettlementError> {
    let Some(since) = priced
        .iter()
        .map(|p| NaiveDate::from_ymd_opt(p.period_first.year(), 1, 1).expect("valid date"))
        .min()
    else {
        return Ok(());
    };
    let rows = sqlx::query(
        "SELECT account_id, period_first, period_last, kwh_centi FROM settlements
         WHERE account_id >= $1 AND account_id <= $2 AND period_last >= $3",
    )
    .bind(first)
    .bind(last)
    .bind(ds(since))
    .fetch_all(&mut *conn)
    .await?;
    let mut history: HashMap<String, Vec<(NaiveDate, NaiveDate, i64)>> = HashMap::new();
    for h in &rows {
        history.entry(h.try_get(0)?).or_default().push((
            parse_ds(&h.try_get::<String, _>(1)?)?,
            parse_ds(&h.try_get::<String, _>(2)?)?,
            h.try_get(3)?,
        ));
    }
    for (p, input) in priced.iter().zip(inputs.iter_mut()) {
        let year_start = NaiveDate::from_ymd_opt(p.period_first.year(), 1, 1).expect("valid date");
        let month_start = p.period_first.with_day(1).expect("valid date");
        let before = p.period_first.pred_opt().expect("valid date");
        let (mut ytd, mut mtd) = (0, 0);
        for &(f, l, k) in history.get(&input.account_id).into_iter().flatten() {
            ytd += portion_in(k, f, l, year_start, before);
            mtd += portion_in(k, f, l, month_start, before);
        }
        input.year_to_date_kwh =
            to_wit(rust_decimal::Decimal::new(ytd, 3)).expect("milli-kWh fits");
        input.month_to_date_kwh =
            to_wit(rust_decimal::Decimal::new(mtd, 3)).expect("milli-kWh fits");
    }
    Ok(())
}

/// What every batch of one [`settle`] run shares.
#[derive(Clone, Copy)]
struct Run<'a> {
    db: &'a Db,
    engine: &'a Arc<PolicyEngine>,
    county: &'a str,
    policies: &'a PolicySnapshot,
    reading_date: NaiveDate,
    now: NaiveDateTime,
    cfg: &'a SettlementConfig,
}

/// Writes one planned batch once its decisions are in: one transaction for every write
/// of the batch (holds, decisions, charges, `settlements` rows, arrears, released holds).
async fn write_batch(run: Run<'_>, planned: Planned) -> Result<SettlementReport, SettlementError> {
    let Run {
        db,
        engine,
        policies,
        reading_date,
        now,
        ..
    } = run;
    let Planned {
        new_holds,
        settlement_held,
        priced,
        decisions,
    } = planned;
    let (inputs, decided) = decisions.finish().await;
    let (invocations, rows): (Vec<_>, Vec<_>) = decided.into_iter().unzip();
    let business_date = ds(reading_date.pred_opt().expect("date after 0001-01-01"));
    let posted_at = ts(now);
    let mut report = SettlementReport::default();
    let mut conn = db.pool.acquire().await?;
    let mut tx = crate::db::begin_write(&mut conn).await?;
    // PostgreSQL: lock the accounts to be charged first, in byte order of their ids, then
    // the decision chain — the order every other writer takes them in (the channel inbox
    // locks its batch's accounts in that order; a payment's reconnection locks its
    // account, then the chain), so a batch and a payment never wait on each other in a
    // cycle. SQLite has one writer.
    if tx.backend_name() == "PostgreSQL" {
        let charged: Vec<&str> = inputs.iter().map(|i| i.account_id.as_str()).collect();
        crate::db::fetch_in(
            &mut tx,
            "SELECT account_id FROM accounts WHERE account_id IN $IDS ORDER BY account_id COLLATE \"C\" FOR UPDATE",
            &charged,
            None,
        )
        .await?;
    }
    for (account_id, reason) in &new_holds {
        decision_log::hold(
            &mut tx,
            account_id,
            &business_date,
            "reading",
            reason,
            None,
            &posted_at,
        )
        .await?;
    }
    let decision_ids = decision_log::append(&mut tx, &rows).await?;
    if let Some(shadow) = policies.shadow(engine, PolicyKind::Tariff) {
        for (id, row) in decision_ids.iter().zip(&rows) {
            decision_log::run_shadow(&mut tx, shadow, *id, row).await;
        }
    }
    // Charges for the priced accounts whose tariff answered within the host's charge
    // ceiling; holds for the others.
    let mut charged = Vec::new();
    for (((p, input), invocation), decision_id) in priced
        .iter()
        .zip(&inputs)
        .zip(&invocations)
        .zip(&decision_ids)
    {
        let held_because = match &invocation.outcome {
            Ok(out) => over_ceiling(
                &input.kwh,
                out.charge_fen,
                engine.limits().max_price_yuan_per_kwh,
            ),
            Err(failure) => Some(decision_log::hold_reason(failure)),
        };
        match (&invocation.outcome, held_because) {
            (Ok(out), None) => charged.push(Charged {
                priced: p,
                account_id: &input.account_id,
                charge_fen: out.charge_fen,
                decision_id: *decision_id,
                key: format!("charge:{}:{business_date}", input.account_id),
                reference: format!("decision:{decision_id}"),
            }),
            (_, why) => {
                decision_log::hold(
                    &mut tx,
                    &input.account_id,
                    &business_date,
                    "settlement",
                    &why.unwrap_or_default(),
                    Some(*decision_id),
                    &posted_at,
                )
                .await?;
                report.held += 1;
            }
        }
    }
    let postings: Vec<Posting<'_>> = charged
        .iter()
        .map(|c| Posting {
            account_id: c.account_id,
            kind: EntryKind::Charge,
            amount_fen: -c.charge_fen,
            idempotency_key: &c.key,
            business_date: &business_date,
            posted_at: &posted_at,
            reference: &c.reference,
        })
        .collect();
    let posted = ledger::post_many(&mut tx, &postings).await?;
    const SETTLEMENT_COLUMNS: usize = 10;
    for part in charged
        .iter()
        .zip(&posted)
        .collect::<Vec<_>>()
        .chunks(crate::db::rows_per_statement(SETTLEMENT_COLUMNS))
    {
        let sql = format!(
            "INSERT INTO settlements (account_id, business_date, period_first, period_last, from_reading_id, to_reading_id,
                                      kwh_centi, charge_fen, decision_id, entry_id)
             VALUES {}",
            crate::db::Placeholders::of(&tx).values(part.len(), SETTLEMENT_COLUMNS)
        );
        let mut q = sqlx::query(&sql);
        for (c, outcome) in part {
            q = q
                .bind(c.account_id)
                .bind(business_date.as_str())
                .bind(ds(c.priced.period_first))
                .bind(business_date.as_str())
                .bind(c.priced.opening_id)
                .bind(c.priced.closing_id)
                .bind(c.priced.kwh_centi)
                .bind(c.charge_fen)
                .bind(c.decision_id)
                .bind(outcome.entry_id());
        }
        q.execute(&mut *tx).await?;
    }
    // Entering arrears starts the clock for warnings and the grace period; a settlement
    // the tariff failed earlier is now settled, so its hold is over.
    let style = crate::db::Placeholders::of(&tx);
    let into_arrears: Vec<&str> = charged
        .iter()
        .zip(&posted)
        .filter(|(_, o)| !matches!(o, PostOutcome::Posted { balance_after_fen, .. } if *balance_after_fen >= 0))
        .map(|(c, _)| c.account_id)
        .collect();
    for part in into_arrears.chunks(crate::db::MAX_BOUND_PARAMETERS - 1) {
        let sql = format!(
            "UPDATE accounts SET arrears_since = {} WHERE balance_fen < 0 AND arrears_since IS NULL AND account_id IN ({})",
            style.list(1, 1),
            style.list(2, part.len())
        );
        let mut q = sqlx::query(&sql).bind(ds(reading_date));
        for a in part {
            q = q.bind(*a);
        }
        q.execute(&mut *tx).await?;
    }
    for c in charged
        .iter()
        .filter(|c| settlement_held.contains(c.account_id))
    {
        sqlx::query("UPDATE holds SET released_at = $2, released_by = 'settlement' WHERE account_id = $1 AND stage = 'settlement' AND released_at IS NULL")
            .bind(c.account_id)
            .bind(&posted_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    for c in &charged {
        report.settled += 1;
        report.charged_fen += c.charge_fen;
        report.kwh_centi += c.priced.kwh_centi;
        report.settled_accounts.push(c.account_id.to_string());
    }
    Ok(report)
}

/// A priced account whose charge is posted: its tariff answered within the ceiling.
struct Charged<'a> {
    priced: &'a Priced,
    account_id: &'a str,
    charge_fen: Fen,
    decision_id: i64,
    /// The ledger entry's idempotency key.
    key: String,
    /// The ledger entry's reference (the decision).
    reference: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charge_ceiling_is_kwh_times_the_price_rounded_up_to_the_fen() {
        use rust_decimal::Decimal;
        let five = MAX_PRICE_YUAN_PER_KWH;
        // (kWh mantissa, scale, charge fen, ceiling yuan/kWh, held?)
        let table: &[(i64, u8, i64, Decimal, bool)] = &[
            (1000, 2, 5000, five, false), // 10 kWh × 5 yuan = 50.00 yuan exactly
            (1000, 2, 5001, five, true),  // one fen over
            (0, 0, 0, five, false),       // nothing used, nothing charged
            (0, 0, 1, five, true),        // nothing used, a fen charged
            (1, 3, 1, five, false),       // 0.001 kWh: 0.5 fen rounds up to 1
            (1, 3, 2, five, true),
            (1000, 2, 500, Decimal::new(5, 1), false), // a ceiling of 0.5 yuan/kWh
            (1000, 2, 501, Decimal::new(5, 1), true),
            (1, 0, 1_000_000_000_000, five, true), // ten billion yuan for 1 kWh
        ];
        for &(m, scale, fen, ceiling, held) in table {
            let why = over_ceiling(&WitDecimal { mantissa: m, scale }, fen, ceiling);
            assert_eq!(
                why.is_some(),
                held,
                "{m}e-{scale} kWh, {fen} fen, {ceiling}: {why:?}"
            );
            if let Some(why) = why {
                assert!(why.starts_with("charge-over-ceiling: "), "{why}");
            }
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn delta_checks_never_bill_a_bad_register() {
        let cfg = SettlementConfig::default();
        let table: Vec<(&str, CentiKwh, CentiKwh, i64, Option<CentiKwh>)> = vec![
            ("normal day", 123_400, 124_480, 1, Some(1_080)),
            ("no consumption", 123_400, 123_400, 1, Some(0)),
            (
                "two days after a missed read",
                100_000,
                102_500,
                2,
                Some(2_500),
            ),
            ("rollover at 999999.99 kWh", 99_999_500, 700, 1, Some(1_200)),
            ("transient zero", 123_400, 0, 1, None),
            (
                "register went backwards (replacement)",
                123_400,
                5_000,
                1,
                None,
            ),
            ("implausible jump", 100_000, 100_000 + 31_681, 1, None),
            (
                "at the rating exactly",
                100_000,
                100_000 + 31_680,
                1,
                Some(31_680),
            ),
        ];
        for (name, opening, closing, days, expected) in table {
            let got = check_delta(opening, closing, days, &cfg);
            match expected {
                Some(c) => assert_eq!(got, DeltaCheck::Consumption(c), "{name}"),
                None => assert!(matches!(got, DeltaCheck::Hold(_)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn replacement_bills_old_tail_plus_new_head_and_holds_the_rest() {
        let cfg = SettlementConfig::default();
        let r = |old_final, new_start| Replacement {
            old_final,
            new_start,
        };
        let table: Vec<(&str, CentiKwh, Replacement, CentiKwh, Option<CentiKwh>)> = vec![
            (
                "new meter from zero",
                123_400,
                r(123_900, 0),
                700,
                Some(1_200),
            ),
            (
                "new meter from a start value",
                123_400,
                r(123_400, 5_000),
                5_010,
                Some(10),
            ),
            (
                "old meter wrapped before removal",
                99_999_900,
                r(50, 0),
                100,
                Some(250),
            ),
            (
                "old final below the opening",
                123_400,
                r(123_000, 0),
                100,
                None,
            ),
            (
                "new meter read below its start",
                123_400,
                r(123_500, 5_000),
                4_000,
                None,
            ),
            (
                "transient zero on the new meter",
                123_400,
                r(123_500, 500),
                0,
                None,
            ),
            (
                "sum beyond the rating",
                100_000,
                r(120_000, 0),
                20_000,
                None,
            ),
        ];
        for (name, opening, rep, closing, expected) in table {
            let got = check_delta_across_replacement(opening, rep, closing, 1, &cfg);
            match expected {
                Some(c) => assert_eq!(got, DeltaCheck::Consumption(c), "{name}"),
                None => assert!(matches!(got, DeltaCheck::Hold(_)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn without_the_replacement_record_the_same_readings_are_held() {
        let cfg = SettlementConfig::default();
        assert!(matches!(
            check_delta(123_400, 700, 1, &cfg),
            DeltaCheck::Hold(_)
        ));
    }

    #[test]
    fn portions_split_across_a_year_boundary() {
        // 10.01 kWh over 2013-12-30..=2014-01-02 (4 days): 2.502 per day, 0.002 extra
        // on the last day (in milli-kWh).
        let (f, l) = (d("2013-12-30"), d("2014-01-02"));
        assert_eq!(
            portion_in(1001, f, l, d("2013-01-01"), d("2013-12-31")),
            5_004
        );
        assert_eq!(
            portion_in(1001, f, l, d("2014-01-01"), d("2014-12-31")),
            5_006
        );
        assert_eq!(
            portion_in(1001, f, l, d("2000-01-01"), d("2099-01-01")),
            10_010
        );
        assert_eq!(portion_in(1001, f, l, d("2014-01-03"), d("2014-12-31")), 0);
    }
}
