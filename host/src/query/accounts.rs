//! Customers, meters, accounts (balance in real time, relay state, agreement terms),
//! the ledger, usage by day, month and time-of-use band, and payments.

use super::{
    Energy, ListFilter, Money, Page, PageRequest, QueryError, Where, fetch_one, fetch_page, flag,
};
use crate::auth::Visibility;
use crate::db::Db;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// A customer in the master data (档案), with their account and meter.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Customer {
    pub customer_id: String,
    pub county: String,
    pub station_id: String,
    pub name: String,
    /// The mobile number in the master data (the agreement's may differ).
    pub master_mobile: Option<String>,
    /// low-voltage-residential | low-voltage-commercial | high-voltage
    pub customer_class: String,
    /// A vulnerable-customer registration: the safety floor never trips them.
    pub vulnerable: bool,
    pub account_id: Option<String>,
    pub meter_id: Option<String>,
}

const CUSTOMER_SELECT: &str =
    "SELECT c.customer_id, c.county, c.station_id, c.name, c.master_mobile, c.customer_class,
        c.vulnerable, a.account_id, a.meter_id
    FROM customers c LEFT JOIN accounts a ON a.customer_id = c.customer_id";

fn customer_from(r: &AnyRow) -> Result<Customer, sqlx::Error> {
    Ok(Customer {
        customer_id: r.try_get("customer_id")?,
        county: r.try_get("county")?,
        station_id: r.try_get("station_id")?,
        name: r.try_get("name")?,
        master_mobile: r.try_get("master_mobile")?,
        customer_class: r.try_get("customer_class")?,
        vulnerable: flag(r, "vulnerable")?,
        account_id: r.try_get("account_id")?,
        meter_id: r.try_get("meter_id")?,
    })
}

/// Customers visible to the caller, by customer id.
pub async fn customers(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    page: &PageRequest,
) -> Result<Page<Customer>, QueryError> {
    let mut w = Where::default();
    w.scope(v, f, "c.county", Some("c.station_id"), Some("a.account_id"))
        .cond("c.customer_id > {}", page.after.as_deref());
    fetch_page(
        db,
        CUSTOMER_SELECT,
        w,
        "c.customer_id",
        page.limit,
        customer_from,
        |c: &Customer| c.customer_id.clone(),
    )
    .await
}

/// One customer, if it exists and is visible.
pub async fn customer(
    db: &Db,
    v: &Visibility,
    customer_id: &str,
) -> Result<Option<Customer>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        "c.county",
        Some("c.station_id"),
        Some("a.account_id"),
    )
    .eq("c.customer_id", Some(customer_id));
    fetch_one(db, CUSTOMER_SELECT, w, customer_from).await
}

/// A meter with its link and its latest daily frozen reading.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Meter {
    pub meter_id: String,
    pub customer_id: String,
    pub account_id: Option<String>,
    pub county: String,
    pub station_id: String,
    /// modbus-tcp | modbus-rtu | dlt645 | qgdw376
    pub protocol: String,
    /// CT and PT multipliers (1 for direct-connected low-voltage meters).
    pub ct_ratio: i64,
    pub pt_ratio: i64,
    pub installed_on: String,
    pub latest_reading_date: Option<String>,
    /// The register at 00:00 of `latest_reading_date`.
    pub latest_register: Option<Energy>,
}

const METER_SELECT: &str = "SELECT m.meter_id, m.customer_id, a.account_id, c.county, c.station_id, m.protocol,
        m.ct_ratio, m.pt_ratio, m.installed_on, r.reading_date, r.register_centi_kwh
    FROM meters m JOIN customers c ON c.customer_id = m.customer_id
    LEFT JOIN accounts a ON a.meter_id = m.meter_id
    LEFT JOIN readings r ON r.reading_id = (SELECT MAX(r2.reading_id) FROM readings r2 WHERE r2.meter_id = m.meter_id
        AND r2.reading_date = (SELECT MAX(r3.reading_date) FROM readings r3 WHERE r3.meter_id = m.meter_id))";

fn meter_from(r: &AnyRow) -> Result<Meter, sqlx::Error> {
    Ok(Meter {
        meter_id: r.try_get("meter_id")?,
        customer_id: r.try_get("customer_id")?,
        account_id: r.try_get("account_id")?,
        county: r.try_get("county")?,
        station_id: r.try_get("station_id")?,
        protocol: r.try_get("protocol")?,
        ct_ratio: r.try_get("ct_ratio")?,
        pt_ratio: r.try_get("pt_ratio")?,
        installed_on: r.try_get("installed_on")?,
        latest_reading_date: r.try_get("reading_date")?,
        latest_register: r
            .try_get::<Option<i64>, _>("register_centi_kwh")?
            .map(Energy::from),
    })
}

/// Meters visible to the caller, by meter id (a replaced meter stays listed under its
/// customer, without an account).
pub async fn meters(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    page: &PageRequest,
) -> Result<Page<Meter>, QueryError> {
    let mut w = Where::default();
    w.scope(v, f, "c.county", Some("c.station_id"), Some("a.account_id"))
        .cond("m.meter_id > {}", page.after.as_deref());
    fetch_page(
        db,
        METER_SELECT,
        w,
        "m.meter_id",
        page.limit,
        meter_from,
        |m: &Meter| m.meter_id.clone(),
    )
    .await
}

/// One meter, if it exists and is visible.
pub async fn meter(db: &Db, v: &Visibility, meter_id: &str) -> Result<Option<Meter>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        "c.county",
        Some("c.station_id"),
        Some("a.account_id"),
    )
    .eq("m.meter_id", Some(meter_id));
    fetch_one(db, METER_SELECT, w, meter_from).await
}

/// The fee-control agreement (费控协议) in force on an account.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AgreementTerms {
    pub agreement_id: i64,
    /// 预警值: the balance under which the customer is warned.
    pub alarm_threshold: Money,
    /// 代扣值: drawn from the customer's bank when the balance is low; none if not agreed.
    pub auto_debit: Option<Money>,
    pub mobile: String,
    pub second_mobile: Option<String>,
    /// 保电: no trip, ever.
    pub keep_power: bool,
    pub time_of_use: bool,
    pub signed_at: String,
}

/// An account as it stands now: `balance` is `accounts.balance_fen`, which moves in the
/// same transaction as every ledger entry, so it is the real-time balance.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AccountSummary {
    pub account_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub meter_id: String,
    pub county: String,
    pub station_id: String,
    /// pending-prepayment | active
    pub status: String,
    pub balance: Money,
    /// closed (power on) | open (disconnected) | close-allowed (waiting for the button)
    pub relay_state: String,
    /// The day the balance went below zero; none when not in arrears.
    pub arrears_since: Option<String>,
    pub disconnected_at: Option<String>,
    /// A relay command not yet confirmed by a fresh status read, if any.
    pub pending_relay_command: Option<String>,
    /// Holds not yet released (a failed or refused decision, a charge over the host's
    /// ceiling, a reading a person must look at; `feegate holds list` gives the reasons).
    /// While any is open the balance may not include every day, and no trip happens.
    pub open_holds: i64,
    pub agreement: AgreementTerms,
}

const ACCOUNT_SELECT: &str = "SELECT a.account_id, a.customer_id, c.name, a.meter_id, a.county, a.station_id, a.status,
        a.balance_fen, a.relay_state, a.arrears_since, a.disconnected_at,
        (SELECT MIN(rc.command) FROM relay_commands rc WHERE rc.account_id = a.account_id
            AND rc.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')) AS pending_command,
        (SELECT COUNT(*) FROM holds h WHERE h.account_id = a.account_id AND h.released_at IS NULL) AS open_holds,
        g.agreement_id, g.alarm_threshold_fen, g.auto_debit_fen, g.mobile, g.second_mobile, g.keep_power,
        g.time_of_use, g.signed_at
    FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
    JOIN agreements g ON g.agreement_id = a.agreement_id";

fn account_from(r: &AnyRow) -> Result<AccountSummary, sqlx::Error> {
    Ok(AccountSummary {
        account_id: r.try_get("account_id")?,
        customer_id: r.try_get("customer_id")?,
        customer_name: r.try_get("name")?,
        meter_id: r.try_get("meter_id")?,
        county: r.try_get("county")?,
        station_id: r.try_get("station_id")?,
        status: r.try_get("status")?,
        balance: Money::from(r.try_get::<i64, _>("balance_fen")?),
        relay_state: r.try_get("relay_state")?,
        arrears_since: r.try_get("arrears_since")?,
        disconnected_at: r.try_get("disconnected_at")?,
        pending_relay_command: r.try_get("pending_command")?,
        open_holds: r.try_get("open_holds")?,
        agreement: AgreementTerms {
            agreement_id: r.try_get("agreement_id")?,
            alarm_threshold: Money::from(r.try_get::<i64, _>("alarm_threshold_fen")?),
            auto_debit: r
                .try_get::<Option<i64>, _>("auto_debit_fen")?
                .map(Money::from),
            mobile: r.try_get("mobile")?,
            second_mobile: r.try_get("second_mobile")?,
            keep_power: flag(r, "keep_power")?,
            time_of_use: flag(r, "time_of_use")?,
            signed_at: r.try_get("signed_at")?,
        },
    })
}

/// Accounts visible to the caller, by account id.
pub async fn accounts(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    page: &PageRequest,
) -> Result<Page<AccountSummary>, QueryError> {
    let mut w = Where::default();
    w.scope(v, f, "a.county", Some("a.station_id"), Some("a.account_id"))
        .cond("a.account_id > {}", page.after.as_deref());
    fetch_page(
        db,
        ACCOUNT_SELECT,
        w,
        "a.account_id",
        page.limit,
        account_from,
        |a: &AccountSummary| a.account_id.clone(),
    )
    .await
}

/// One account, if it exists and is visible.
pub async fn account(
    db: &Db,
    v: &Visibility,
    account_id: &str,
) -> Result<Option<AccountSummary>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        "a.county",
        Some("a.station_id"),
        Some("a.account_id"),
    )
    .eq("a.account_id", Some(account_id));
    fetch_one(db, ACCOUNT_SELECT, w, account_from).await
}

/// The balance alone, for the hot path of balance queries: one indexed read.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub account_id: String,
    pub balance: Money,
    pub relay_state: String,
    pub arrears_since: Option<String>,
}

/// The real-time balance of one account, if it exists and is visible.
pub async fn balance(
    db: &Db,
    v: &Visibility,
    account_id: &str,
) -> Result<Option<Balance>, QueryError> {
    let mut w = Where::default();
    w.scope(
        v,
        &ListFilter::default(),
        "county",
        Some("station_id"),
        Some("account_id"),
    )
    .eq("account_id", Some(account_id));
    let sql = format!(
        "SELECT account_id, balance_fen, relay_state, arrears_since FROM accounts{}",
        w.sql()
    );
    let row = w.bind(sqlx::query(&sql)).fetch_optional(&db.pool).await?;
    row.map(|r| {
        Ok(Balance {
            account_id: r.try_get("account_id")?,
            balance: Money::from(r.try_get::<i64, _>("balance_fen")?),
            relay_state: r.try_get("relay_state")?,
            arrears_since: r.try_get("arrears_since")?,
        })
    })
    .transpose()
}

/// One ledger entry (append-only; a correction is a new entry).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub entry_id: i64,
    /// prepayment | payment | charge | reversal | correction
    pub kind: String,
    /// Positive: a credit to the customer; negative: a debit.
    pub amount: Money,
    pub balance_after: Money,
    pub business_date: String,
    pub posted_at: String,
    /// What caused it: `channel:txn` for a payment, the settled period for a charge.
    pub reference: String,
}

/// The ledger of one account, oldest first, a page at a time (key: `entry_id`). The
/// caller has checked the account is visible.
pub async fn ledger(
    db: &Db,
    account_id: &str,
    page: &PageRequest,
) -> Result<Page<LedgerEntry>, QueryError> {
    let mut w = Where::default();
    w.eq("account_id", Some(account_id))
        .cond_int("entry_id > {}", page.after_id()?);
    fetch_page(
        db,
        "SELECT entry_id, kind, amount_fen, balance_after_fen, business_date, posted_at, reference FROM ledger_entries",
        w,
        "entry_id",
        page.limit,
        |r| {
            Ok(LedgerEntry {
                entry_id: r.try_get(0)?,
                kind: r.try_get(1)?,
                amount: Money::from(r.try_get::<i64, _>(2)?),
                balance_after: Money::from(r.try_get::<i64, _>(3)?),
                business_date: r.try_get(4)?,
                posted_at: r.try_get(5)?,
                reference: r.try_get(6)?,
            })
        },
        |e: &LedgerEntry| e.entry_id.to_string(),
    )
    .await
}

/// How usage is grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UsageBy {
    /// One row per settled day (`period` = the settlement's business date).
    Day,
    /// One row per calendar month of the business date (`period` = `YYYY-MM`).
    Month,
    /// One row per time-of-use band (`period` = sharp | peak | flat | valley |
    /// unsplit), over the whole range.
    Band,
}

/// Consumption and charges of one period (or band).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub period: String,
    pub energy: Energy,
    /// What was charged for it; by band, only the `unsplit` row carries charges (the
    /// tariff prices a day as a whole), the bands 0.
    pub charge: Money,
    /// Settled days in the row.
    pub days: i64,
}

/// Usage of one account between `from` and `to` (business dates, inclusive; either may
/// be open), from the daily settlements (`settlements`: energy and charge per settled
/// day). The time-of-use split comes from the tariff decision's input (`tou_split`,
/// per-band kWh from the meter's band registers); energy the meter did not report per
/// band is the `unsplit` row. The caller has checked the account is visible.
pub async fn usage(
    db: &Db,
    account_id: &str,
    by: UsageBy,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<UsageRow>, QueryError> {
    for d in [from, to].into_iter().flatten() {
        if crate::db::parse_ds(d).is_err() {
            return Err(QueryError::BadRequest(format!(
                "date {d:?} is not a date: use YYYY-MM-DD"
            )));
        }
    }
    let mut w = Where::default();
    w.eq("s.account_id", Some(account_id))
        .cond("s.business_date >= {}", from)
        .cond("s.business_date <= {}", to);
    match by {
        UsageBy::Day | UsageBy::Month => {
            let key = if by == UsageBy::Day {
                "s.business_date"
            } else {
                "SUBSTR(s.business_date, 1, 7)"
            };
            let sql = format!(
                "SELECT {key} AS period, CAST(SUM(s.kwh_centi) AS BIGINT), CAST(SUM(s.charge_fen) AS BIGINT), COUNT(*)
                 FROM settlements s{} GROUP BY {key} ORDER BY 1",
                w.sql()
            );
            let rows = w.bind(sqlx::query(&sql)).fetch_all(&db.pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(UsageRow {
                        period: r.try_get(0)?,
                        energy: Energy::from(r.try_get::<i64, _>(1)?),
                        charge: Money::from(r.try_get::<i64, _>(2)?),
                        days: r.try_get(3)?,
                    })
                })
                .collect()
        }
        UsageBy::Band => {
            let sql = format!(
                "SELECT s.kwh_centi, s.charge_fen, d.input_json FROM settlements s
                 LEFT JOIN decisions d ON d.decision_id = s.decision_id{} ORDER BY s.business_date",
                w.sql()
            );
            let rows = w.bind(sqlx::query(&sql)).fetch_all(&db.pool).await?;
            let mut bands: BTreeMap<&'static str, i64> = BTreeMap::new();
            let (mut unsplit, mut charge, mut days) = (0i64, 0i64, 0i64);
            for r in &rows {
                let kwh: i64 = r.try_get(0)?;
                charge += r.try_get::<i64, _>(1)?;
                days += 1;
                let input: Option<String> = r.try_get(2)?;
                let split = input.as_deref().map(tou_split).unwrap_or_default();
                let mut split_total = 0;
                for (band, c) in split {
                    *bands.entry(band).or_default() += c;
                    split_total += c;
                }
                unsplit += kwh - split_total;
            }
            let mut out: Vec<UsageRow> = ["sharp", "peak", "flat", "valley"]
                .into_iter()
                .map(|b| UsageRow {
                    period: b.to_string(),
                    energy: Energy::from(bands.get(b).copied().unwrap_or(0)),
                    charge: Money::from(0),
                    days,
                })
                .collect();
            out.push(UsageRow {
                period: "unsplit".into(),
                energy: Energy::from(unsplit),
                charge: Money::from(charge),
                days,
            });
            Ok(out)
        }
    }
}

/// The per-band split a tariff decision's input carries: `tou_split` entries
/// `{"band": "Peak", "kwh": {"mantissa": 1234, "scale": 2}}`, as centi-kWh per band.
fn tou_split(input_json: &str) -> Vec<(&'static str, i64)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(input_json) else {
        return Vec::new();
    };
    let Some(list) = v.get("tou_split").and_then(|s| s.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let band = match e.get("band")?.as_str()?.to_ascii_lowercase().as_str() {
                "sharp" => "sharp",
                "peak" => "peak",
                "flat" => "flat",
                "valley" => "valley",
                _ => return None,
            };
            let kwh = e.get("kwh")?;
            let d = rust_decimal::Decimal::new(
                kwh.get("mantissa")?.as_i64()?,
                u32::try_from(kwh.get("scale")?.as_u64()?).ok()?,
            );
            // An amount that does not fit 0.01 kWh is dropped like any malformed entry.
            Some((band, crate::money::kwh_to_centi_kwh(d).ok()?))
        })
        .collect()
}

/// A payment as recorded (applied exactly once per channel and channel transaction id).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Payment {
    pub payment_id: i64,
    /// bank-transfer | online-banking | kiosk | alipay | app | counter | …
    pub channel: String,
    pub channel_txn_id: String,
    pub account_id: String,
    pub amount: Money,
    /// in-flight | applied
    pub status: String,
    pub initiated_at: String,
    pub applied_at: Option<String>,
    pub entry_id: Option<i64>,
}

/// Payments visible to the caller (optionally of one account), newest key last,
/// keyed by `payment_id`.
pub async fn payments(
    db: &Db,
    v: &Visibility,
    f: &ListFilter,
    account_id: Option<&str>,
    page: &PageRequest,
) -> Result<Page<Payment>, QueryError> {
    let mut w = Where::default();
    w.scope(v, f, "a.county", Some("a.station_id"), Some("a.account_id"))
        .eq("p.account_id", account_id)
        .cond_int("p.payment_id > {}", page.after_id()?);
    fetch_page(
        db,
        "SELECT p.payment_id, p.channel, p.channel_txn_id, p.account_id, p.amount_fen, p.status, p.initiated_at,
                p.applied_at, p.entry_id
         FROM payments p JOIN accounts a ON a.account_id = p.account_id",
        w,
        "p.payment_id",
        page.limit,
        |r| {
            Ok(Payment {
                payment_id: r.try_get(0)?,
                channel: r.try_get(1)?,
                channel_txn_id: r.try_get(2)?,
                account_id: r.try_get(3)?,
                amount: Money::from(r.try_get::<i64, _>(4)?),
                status: r.try_get(5)?,
                initiated_at: r.try_get(6)?,
                applied_at: r.try_get(7)?,
                entry_id: r.try_get(8)?,
            })
        },
        |p: &Payment| p.payment_id.to_string(),
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_band_split_is_read_from_the_tariff_input_and_unknown_bands_are_skipped() {
        let input = r#"{"tou_split":[{"band":"Peak","kwh":{"mantissa":1234,"scale":2}},
            {"band":"Valley","kwh":{"mantissa":5,"scale":0}},{"band":"Other","kwh":{"mantissa":1,"scale":0}}]}"#;
        assert_eq!(
            super::tou_split(input),
            vec![("peak", 1234), ("valley", 500)]
        );
        assert!(super::tou_split(r#"{"tou_split":[]}"#).is_empty());
        assert!(super::tou_split("not json").is_empty());
    }
}
