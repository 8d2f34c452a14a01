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
//!    `settlements` row are written in one transaction. The primary key of
//!    `settlements` (account, day) and the entry's idempotency key make a re-run after
//!    a crash a no-op.
//! 4. A policy failure (trap, fuel, invalid output) records the failed decision and
//!    holds the account: no charge is guessed.

use crate::config::SettlementConfig;
use crate::county::PolicySnapshot;
use crate::db::{Db, DbError, ds, parse_ds, ts};
use crate::decision_log::{self, DecisionRecord};
use crate::ledger::{self, EntryKind, LedgerError, Posting};
use crate::money::{CentiKwh, Fen, centi_kwh_to_kwh};
use crate::policy::bindings::{CustomerClass, TariffInput};
use crate::policy::convert::{date_to_wit, to_wit};
use crate::policy::{PolicyEngine, PolicyKind};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use sqlx::Row;
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

/// Checks a register delta between two readings `days` apart (no phantom consumption
/// from a zero, wrapped or replaced register).
pub fn check_delta(
    opening: CentiKwh,
    closing: CentiKwh,
    days: i64,
    cfg: &SettlementConfig,
) -> DeltaCheck {
    let max_per_day = crate::money::kwh_to_centi_kwh(cfg.max_daily_kwh);
    let limit = max_per_day * days.max(1);
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
    let limit = crate::money::kwh_to_centi_kwh(cfg.max_daily_kwh) * days.max(1);
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
/// (the register at 00:00 of that date, closing consumption through the day before).
pub async fn settle(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    reading_date: NaiveDate,
    now: NaiveDateTime,
    cfg: &SettlementConfig,
) -> Result<SettlementReport, SettlementError> {
    let rows = sqlx::query(
        "SELECT a.account_id, m.meter_id, m.ct_ratio, m.pt_ratio, c.customer_class, g.time_of_use, r.reading_id, r.register_centi_kwh
         FROM accounts a
         JOIN meters m ON m.meter_id = a.meter_id
         JOIN customers c ON c.customer_id = a.customer_id
         JOIN agreements g ON g.agreement_id = a.agreement_id
         JOIN readings r ON r.meter_id = m.meter_id AND r.reading_date = $2
         WHERE a.county = $1 AND a.status = 'active' ORDER BY a.account_id",
    )
    .bind(county)
    .bind(ds(reading_date))
    .fetch_all(&db.pool)
    .await?;
    let mut report = SettlementReport::default();
    for r in rows {
        let c = Candidate {
            account_id: r.try_get(0)?,
            meter_id: r.try_get(1)?,
            ct: r.try_get(2)?,
            pt: r.try_get(3)?,
            class: r.try_get(4)?,
            time_of_use: r.try_get::<i64, _>(5)? != 0,
            closing_id: r.try_get(6)?,
            closing_centi: r.try_get(7)?,
        };
        settle_account(
            db,
            engine,
            county,
            policies,
            reading_date,
            now,
            cfg,
            &c,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn settle_account(
    db: &Db,
    engine: &PolicyEngine,
    county: &str,
    policies: &PolicySnapshot,
    reading_date: NaiveDate,
    now: NaiveDateTime,
    cfg: &SettlementConfig,
    c: &Candidate,
    report: &mut SettlementReport,
) -> Result<(), SettlementError> {
    let mut conn = db.pool.acquire().await?;
    // Opening reading: where the last settlement closed, else the first reading ever.
    let opening = match sqlx::query(
        "SELECT r.reading_id, r.reading_date, r.register_centi_kwh, r.meter_id FROM settlements s
         JOIN readings r ON r.reading_id = s.to_reading_id
         WHERE s.account_id = $1 ORDER BY s.business_date DESC LIMIT 1",
    )
    .bind(&c.account_id)
    .fetch_optional(&mut *conn)
    .await?
    {
        Some(row) => Some(row),
        None => {
            sqlx::query(
                "SELECT reading_id, reading_date, register_centi_kwh, meter_id FROM readings
                 WHERE meter_id = $1 AND reading_date < $2 ORDER BY reading_date ASC LIMIT 1",
            )
            .bind(&c.meter_id)
            .bind(ds(reading_date))
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let Some(opening) = opening else {
        report.baselines += 1;
        return Ok(());
    };
    let opening_id: i64 = opening.try_get(0)?;
    let opening_date = parse_ds(&opening.try_get::<String, _>(1)?)?;
    let opening_centi: CentiKwh = opening.try_get(2)?;
    let opening_meter: String = opening.try_get(3)?;
    if opening_date >= reading_date {
        report.already_settled += 1;
        return Ok(());
    }
    // A span held for a bad reading stays held until a person has looked at it
    // (`feegate holds release`): the next good reading must not quietly bill across it.
    if sqlx::query(
        "SELECT 1 FROM holds WHERE account_id = $1 AND stage = 'reading' AND released_at IS NULL",
    )
    .bind(&c.account_id)
    .fetch_optional(&mut *conn)
    .await?
    .is_some()
    {
        report.held += 1;
        return Ok(());
    }
    let period_first = opening_date;
    let period_last = reading_date.pred_opt().expect("date after 0001-01-01");
    let business_date = ds(period_last);
    let days = (reading_date - opening_date).num_days();

    // A meter replaced between the two readings (stored by `feegate meter replace`): the
    // old meter's tail plus the new meter's head. Without a record, a reading from another
    // meter is never billed against this one.
    let replacements = crate::replacement::between(
        &mut conn,
        &c.account_id,
        opening_date.and_time(chrono::NaiveTime::MIN),
        reading_date.and_time(chrono::NaiveTime::MIN),
    )
    .await?;
    let check = match replacements.as_slice() {
        [] if opening_meter == c.meter_id => check_delta(opening_centi, c.closing_centi, days, cfg),
        [] => DeltaCheck::Hold(format!(
            "the opening reading is from meter {opening_meter}, the closing one from meter {}, \
             and no replacement is recorded between them: record it with `feegate meter replace`",
            c.meter_id
        )),
        [r] if r.old_meter_id == opening_meter && r.new_meter_id == c.meter_id => {
            check_delta_across_replacement(opening_centi, r.replacement, c.closing_centi, days, cfg)
        }
        [r] => DeltaCheck::Hold(format!(
            "the recorded replacement {} -> {} does not join the opening reading's meter \
             {opening_meter} to the closing reading's meter {}; check the replacement record",
            r.old_meter_id, r.new_meter_id, c.meter_id
        )),
        more => DeltaCheck::Hold(format!(
            "{} meter replacements in one settlement period; needs a person",
            more.len()
        )),
    };
    let delta = match check {
        DeltaCheck::Consumption(d) => d,
        DeltaCheck::Hold(reason) => {
            decision_log::hold(
                &mut conn,
                &c.account_id,
                &business_date,
                "reading",
                &reason,
                None,
                &ts(now),
            )
            .await?;
            report.held += 1;
            return Ok(());
        }
    };
    // CT and PT are bounded at onboarding; stored values from elsewhere could still
    // overflow: hold that account (a person checks the ratios) instead of guessing.
    let Some(kwh_centi) = delta.checked_mul(c.ct).and_then(|x| x.checked_mul(c.pt)) else {
        decision_log::hold(
            &mut conn,
            &c.account_id,
            &business_date,
            "reading",
            &format!(
                "register delta {delta} centi-kWh × CT {} × PT {} overflows: check the meter's CT and PT ratios",
                c.ct, c.pt
            ),
            None,
            &ts(now),
        )
        .await?;
        report.held += 1;
        return Ok(());
    };

    // Cycle-to-date usage before period_first, from earlier settlements.
    let year_start = NaiveDate::from_ymd_opt(period_first.year(), 1, 1).expect("valid date");
    let month_start = period_first.with_day(1).expect("valid date");
    let before = period_first.pred_opt().expect("valid date");
    let history = sqlx::query("SELECT period_first, period_last, kwh_centi FROM settlements WHERE account_id = $1 AND period_last >= $2")
        .bind(&c.account_id)
        .bind(ds(year_start))
        .fetch_all(&mut *conn)
        .await?;
    let (mut ytd, mut mtd) = (0, 0);
    for h in &history {
        let (f, l, k) = (
            parse_ds(&h.try_get::<String, _>(0)?)?,
            parse_ds(&h.try_get::<String, _>(1)?)?,
            h.try_get::<i64, _>(2)?,
        );
        ytd += portion_in(k, f, l, year_start, before);
        mtd += portion_in(k, f, l, month_start, before);
    }

    let tariff = policies.get(PolicyKind::Tariff);
    let input = TariffInput {
        account_id: c.account_id.clone(),
        customer_class: class_of(&c.class),
        period_first: date_to_wit(period_first),
        period_last: date_to_wit(period_last),
        kwh: to_wit(centi_kwh_to_kwh(kwh_centi)).expect("centi-kWh fits"),
        year_to_date_kwh: to_wit(rust_decimal::Decimal::new(ytd, 3)).expect("milli-kWh fits"),
        month_to_date_kwh: to_wit(rust_decimal::Decimal::new(mtd, 3)).expect("milli-kWh fits"),
        // Per-band registers are not collected yet: TOU customers are priced on the
        // step tariff alone until they are (documented in README).
        tou_split: vec![],
        time_of_use_elected: c.time_of_use,
        parameters: tariff.parameters_json.clone(),
    };
    let invocation = engine.price(&tariff.component, &input);

    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let decision_id = decision_log::record(
        &mut tx,
        &DecisionRecord {
            county,
            kind: "tariff",
            account_id: &c.account_id,
            business_date: &business_date,
            decided_at: &ts(now),
            component_sha256: &tariff.component.sha256,
            input: &input,
            invocation: &invocation,
            shadow: policies.shadow(engine, PolicyKind::Tariff),
        },
    )
    .await?;
    match &invocation.outcome {
        Ok(out) => {
            let key = format!("charge:{}:{business_date}", c.account_id);
            let posted = ledger::post(
                &mut tx,
                &Posting {
                    account_id: &c.account_id,
                    kind: EntryKind::Charge,
                    amount_fen: -out.charge_fen,
                    idempotency_key: &key,
                    business_date: &business_date,
                    posted_at: &ts(now),
                    reference: &format!("decision:{decision_id}"),
                },
            )
            .await?;
            sqlx::query(
                "INSERT INTO settlements (account_id, business_date, period_first, period_last, from_reading_id, to_reading_id,
                                          kwh_centi, charge_fen, decision_id, entry_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&c.account_id)
            .bind(&business_date)
            .bind(ds(period_first))
            .bind(&business_date)
            .bind(opening_id)
            .bind(c.closing_id)
            .bind(kwh_centi)
            .bind(out.charge_fen)
            .bind(decision_id)
            .bind(posted.entry_id())
            .execute(&mut *tx)
            .await?;
            // Entering arrears starts the clock for warnings and the grace period.
            sqlx::query("UPDATE accounts SET arrears_since = $2 WHERE account_id = $1 AND balance_fen < 0 AND arrears_since IS NULL")
                .bind(&c.account_id)
                .bind(ds(reading_date))
                .execute(&mut *tx)
                .await?;
            // A settlement the tariff failed earlier is now settled: its hold is over.
            sqlx::query("UPDATE holds SET released_at = $2, released_by = 'settlement' WHERE account_id = $1 AND stage = 'settlement' AND released_at IS NULL")
                .bind(&c.account_id)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
            report.settled += 1;
            report.charged_fen += out.charge_fen;
            report.kwh_centi += kwh_centi;
            report.settled_accounts.push(c.account_id.clone());
        }
        Err(failure) => {
            decision_log::hold(
                &mut tx,
                &c.account_id,
                &business_date,
                "settlement",
                &decision_log::hold_reason(failure),
                Some(decision_id),
                &ts(now),
            )
            .await?;
            report.held += 1;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
