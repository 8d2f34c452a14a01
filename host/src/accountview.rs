//! Read models of an account that several stages need: agreement, arrears, habit,
//! recent history and delivered notices. One place, so every stage sees the same facts.

use crate::db::{DbError, ds, parse_ds, parse_ts};
use crate::money::Fen;
use crate::policy::bindings::{Agreement, DayUsage};
use crate::policy::convert::{date_to_wit, fen_to_wit};
use chrono::{NaiveDate, NaiveDateTime};
use sqlx::{AnyConnection, Row};

/// The facts about one account as stored now.
#[derive(Debug, Clone)]
pub struct AccountFacts {
    pub account_id: String,
    pub customer_id: String,
    pub meter_id: String,
    pub station_id: String,
    pub balance_fen: Fen,
    pub relay_state: String,
    pub arrears_since: Option<NaiveDate>,
    pub ontime_topups_in_a_row: u32,
    pub topups_total: u32,
    pub disconnected_at: Option<NaiveDateTime>,
    pub alarm_threshold_fen: Fen,
    pub auto_debit_fen: Option<Fen>,
    pub keep_power: bool,
    pub mobile_verified: bool,
    pub vulnerable: bool,
}

/// The columns [`AccountFacts::from_row`] reads, `$IDS` being where the account filter goes.
const FACTS_SQL: &str = "SELECT a.account_id, a.customer_id, a.meter_id, a.station_id, a.balance_fen, a.relay_state, a.arrears_since,
        a.ontime_topups_in_a_row, a.topups_total, a.disconnected_at,
        g.alarm_threshold_fen, g.auto_debit_fen, g.keep_power,
        CASE WHEN c.master_mobile IS NOT NULL AND c.master_mobile = g.mobile THEN 1 ELSE 0 END, c.vulnerable
 FROM accounts a JOIN agreements g ON g.agreement_id = a.agreement_id JOIN customers c ON c.customer_id = a.customer_id
 WHERE a.account_id IN $IDS";

impl AccountFacts {
    /// Loads an account with its current agreement.
    pub async fn load(conn: &mut AnyConnection, account_id: &str) -> Result<Self, DbError> {
        Self::load_many(conn, &[account_id])
            .await?
            .remove(account_id)
            .ok_or(DbError::Sql(sqlx::Error::RowNotFound))
    }

    /// [`Self::load`] for a batch of accounts with one query, by account id; unknown ids
    /// are absent from the map.
    pub async fn load_many(
        conn: &mut AnyConnection,
        account_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Self>, DbError> {
        let rows = crate::db::fetch_in(conn, FACTS_SQL, account_ids, None).await?;
        rows.iter()
            .map(|r| {
                let f = Self::from_row(r)?;
                Ok((f.account_id.clone(), f))
            })
            .collect()
    }

    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, DbError> {
        Ok(Self {
            account_id: r.try_get(0)?,
            customer_id: r.try_get(1)?,
            meter_id: r.try_get(2)?,
            station_id: r.try_get(3)?,
            balance_fen: r.try_get(4)?,
            relay_state: r.try_get(5)?,
            arrears_since: r
                .try_get::<Option<String>, _>(6)?
                .map(|s| parse_ds(&s))
                .transpose()?,
            ontime_topups_in_a_row: r.try_get::<i64, _>(7)? as u32,
            topups_total: r.try_get::<i64, _>(8)? as u32,
            disconnected_at: r
                .try_get::<Option<String>, _>(9)?
                .map(|s| parse_ts(&s))
                .transpose()?,
            alarm_threshold_fen: r.try_get(10)?,
            auto_debit_fen: r.try_get(11)?,
            keep_power: r.try_get::<i64, _>(12)? != 0,
            mobile_verified: r.try_get::<i64, _>(13)? != 0,
            vulnerable: r.try_get::<i64, _>(14)? != 0,
        })
    }

    /// The agreement as the policy contract shapes it.
    pub fn agreement(&self) -> Agreement {
        Agreement {
            alarm_threshold: fen_to_wit(self.alarm_threshold_fen),
            auto_debit_amount: self.auto_debit_fen.map(fen_to_wit),
            keep_power: self.keep_power,
            mobile_verified: self.mobile_verified,
        }
    }

    /// Whole days in arrears on `today` (0 when not in arrears).
    pub fn days_in_arrears(&self, today: NaiveDate) -> u32 {
        self.arrears_since
            .map_or(0, |s| (today - s).num_days().max(0) as u32)
    }
}

/// The last `days` settled days of each account, oldest first, with one query; accounts
/// with none are absent from the map.
///
/// On PostgreSQL the query probes `settlements` account by account (`LATERAL … ORDER BY
/// business_date DESC LIMIT days`, a backward walk of the primary key), because the
/// portable window over `settlements WHERE account_id IN (…)` was planned from statistics
/// taken when the table held other accounts and scanned all of it for every batch: at a
/// million accounts 306 ms a batch instead of 17 ms (`EXPLAIN ANALYZE`, see README
/// "Settlement at scale"). SQLite has no `LATERAL` and answers the window through the key.
pub async fn recent_days_many(
    conn: &mut AnyConnection,
    account_ids: &[&str],
    days: u32,
) -> Result<std::collections::HashMap<String, Vec<DayUsage>>, DbError> {
    let sql = if conn.backend_name() == "PostgreSQL" {
        "SELECT a.account_id, s.business_date, s.kwh_centi, s.charge_fen
           FROM accounts a CROSS JOIN LATERAL (
                SELECT business_date, kwh_centi, charge_fen FROM settlements
                 WHERE account_id = a.account_id ORDER BY business_date DESC LIMIT $LAST) s
          WHERE a.account_id IN $IDS ORDER BY a.account_id, s.business_date"
    } else {
        "SELECT account_id, business_date, kwh_centi, charge_fen FROM (
           SELECT account_id, business_date, kwh_centi, charge_fen,
                  ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY business_date DESC) AS newest
           FROM settlements WHERE account_id IN $IDS) recent
         WHERE newest <= $LAST ORDER BY account_id, business_date"
    };
    let rows = crate::db::fetch_in(conn, sql, account_ids, Some(i64::from(days))).await?;
    let mut out: std::collections::HashMap<String, Vec<DayUsage>> = Default::default();
    for r in &rows {
        out.entry(r.try_get(0)?).or_default().push(DayUsage {
            date: date_to_wit(parse_ds(&r.try_get::<String, _>(1)?)?),
            kwh: fen_to_wit(r.try_get(2)?), // centi-kWh has the same scale (2) as fen
            charge: fen_to_wit(r.try_get(3)?),
        });
    }
    Ok(out)
}

/// Highest warning level *delivered* since the account's last top-up (the contract's
/// `level-already-notified`; 0 when none): [`levels_already_notified`] for one account.
pub async fn level_already_notified(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<u8, DbError> {
    Ok(levels_already_notified(conn, &[account_id])
        .await?
        .get(account_id)
        .copied()
        .unwrap_or(0))
}

/// Highest warning level *delivered* since the account's last top-up (the contract's
/// `level-already-notified`), for each account of a batch with one query; accounts with
/// none are absent (level 0). A warning counts only on a delivered receipt. A warning
/// still on its way is not sent twice — the outbox refuses a second one of its kind.
pub async fn levels_already_notified(
    conn: &mut AnyConnection,
    account_ids: &[&str],
) -> Result<std::collections::HashMap<String, u8>, DbError> {
    let rows = crate::db::fetch_in(
        conn,
        "SELECT o.account_id, CAST(MAX(o.warning_level) AS BIGINT) FROM sms_outbox o
         WHERE o.account_id IN $IDS AND o.status = 'delivered'
           AND o.created_at >= COALESCE((SELECT MAX(e.posted_at) FROM ledger_entries e
                                         WHERE e.account_id = o.account_id AND e.kind IN ('payment', 'prepayment')), '')
         GROUP BY o.account_id",
        account_ids,
        None,
    )
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.clamp(0, 255) as u8)))
        .collect()
}

/// Accounts of a batch with an auto-debit request not yet finished (`requested` or
/// `in-flight`, [`crate::autodebit`]), with one query.
pub async fn auto_debits_in_flight(
    conn: &mut AnyConnection,
    account_ids: &[&str],
) -> Result<std::collections::HashSet<String>, DbError> {
    let rows = crate::db::fetch_in(
        conn,
        "SELECT DISTINCT account_id FROM auto_debits WHERE account_id IN $IDS AND status IN ('requested', 'in-flight')",
        account_ids,
        None,
    )
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// The earliest time `sql` (one `MIN(..)` column; `$1` the account, `$2` the day the
/// arrears began) finds in the current arrears episode; none when not in arrears.
async fn earliest_in_episode(
    conn: &mut AnyConnection,
    sql: &str,
    account_id: &str,
    arrears_since: Option<NaiveDate>,
) -> Result<Option<NaiveDateTime>, DbError> {
    let Some(since) = arrears_since else {
        return Ok(None);
    };
    let r = sqlx::query(sql)
        .bind(account_id)
        .bind(ds(since))
        .fetch_one(&mut *conn)
        .await?;
    r.try_get::<Option<String>, _>(0)?
        .map(|s| parse_ts(&s))
        .transpose()
}

/// When the arrears notice of the current arrears episode was delivered to any contact
/// on the agreement, if it was (delivered receipts only).
pub async fn arrears_notice_delivered_at(
    conn: &mut AnyConnection,
    account_id: &str,
    arrears_since: Option<NaiveDate>,
) -> Result<Option<NaiveDateTime>, DbError> {
    earliest_in_episode(
        conn,
        "SELECT MIN(delivered_at) FROM sms_outbox WHERE account_id = $1 AND kind IN ('arrears', 'disconnection-pending')
         AND status = 'delivered' AND created_at >= $2",
        account_id,
        arrears_since,
    )
    .await
}

/// When a person recorded an offline follow-up (抄收员线下催费) of the current arrears
/// episode as done: an `offline-follow-up` work order closed `done` with `decided_by`
/// set, on or after the day the arrears began. The safety floor accepts it in place of
/// a delivered arrears SMS.
pub async fn offline_follow_up_done_at(
    conn: &mut AnyConnection,
    account_id: &str,
    arrears_since: Option<NaiveDate>,
) -> Result<Option<NaiveDateTime>, DbError> {
    earliest_in_episode(
        conn,
        "SELECT MIN(decided_at) FROM work_orders WHERE account_id = $1 AND kind = 'offline-follow-up'
         AND status = 'done' AND decided_by IS NOT NULL AND decided_at >= $2",
        account_id,
        arrears_since,
    )
    .await
}

/// The open data-maintenance work order of a mobile-number mismatch (the agreement's
/// number differs from the customer master data), if there is one: it holds automatic
/// disconnection for the account until resolved.
pub async fn open_mobile_mismatch(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<i64>, DbError> {
    let r = sqlx::query(
        "SELECT MIN(work_order_id) FROM work_orders WHERE account_id = $1 AND kind = 'data-maintenance'
         AND status = 'open' AND dedup_key LIKE 'mobile-mismatch:%'",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(r.try_get::<Option<i64>, _>(0)?)
}
