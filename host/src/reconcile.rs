//! Daily reconciliation (对账) of one channel's statement against the ledger.
//!
//! The statement is the channel's CSV for one business day, with a header row:
//!
//! ```text
//! txn_id,type,account_id,amount,currency
//! BT2026112900017,payment,3500000001,100.00,CNY
//! BT2026112900018,reversal,3500000001,20.00,CNY
//! ```
//!
//! `type` is `payment`, `reversal` or `refund`; `amount` is yuan with at most two
//! decimals, always positive (a reversal takes money back). Our side is the day's
//! ledger entries of that channel (`payment:<channel>:<txn>` and
//! `reversal:<channel>:<txn>` idempotency keys, `business_date` = the day).
//!
//! Each transaction is **matched**, **missing on our side** (in the statement, not in
//! our ledger for that day or any other), **missing on theirs** (in our ledger, not in
//! the statement), or an **amount mismatch** (both, but amount, account or type
//! differ). A statement transaction we booked on a neighbouring day (a payment just
//! before midnight) counts as matched and is listed. Every unmatched item opens a
//! `reconciliation` work order, idempotently (key `reconcile:<channel>:<txn>:<finding>`):
//! running again opens nothing new. Nothing is corrected automatically: a person
//! decides, and a correction is a new ledger entry.

use crate::db::{Db, DbError, ds, ts};
use crate::money::{Fen, format_yuan};
use chrono::{NaiveDate, NaiveDateTime};
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("cannot read statement {path}: {source}")]
    Read { path: String, source: csv::Error },
    #[error(
        "statement line {line}: {message}; fix the file or ask the channel for a corrected statement"
    )]
    Line { line: u64, message: String },
    /// Every bad line of the statement at once, so the file is fixed in one pass; nothing
    /// is reconciled from a statement with any bad line.
    #[error(
        "the statement has {} bad line(s); nothing was reconciled. Fix the file or ask the channel for a corrected statement:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    Lines(Vec<String>),
    /// `--channel` names no configured channel (see [`check_channel`]).
    #[error(
        "unknown channel '{channel}'; the configured channels are {}: give one of them with --channel (names as in the channels file); nothing was reconciled",
        if .configured.is_empty() { "none".to_string() } else { .configured.join(", ") }
    )]
    UnknownChannel {
        channel: String,
        configured: Vec<String>,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// One transaction, either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Txn {
    pub txn_id: String,
    /// `payment` or `reversal`.
    pub kind: String,
    pub account_id: String,
    /// Positive fen.
    pub amount_fen: Fen,
}

/// What reconciliation found for one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    Matched,
    MissingOnOurSide,
    MissingOnTheirSide,
    AmountMismatch,
}

impl Finding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::MissingOnOurSide => "missing-on-our-side",
            Self::MissingOnTheirSide => "missing-on-their-side",
            Self::AmountMismatch => "amount-mismatch",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub finding: Finding,
    pub txn_id: String,
    pub ours: Option<Txn>,
    pub theirs: Option<Txn>,
    /// For a match on another day: the day we booked it.
    pub booked_on: Option<String>,
}

/// The reconciliation of one channel and day.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub channel: String,
    pub date: String,
    pub items: Vec<Item>,
    /// Work orders opened by this run (0 on a re-run).
    pub work_orders_opened: u32,
}

impl Report {
    pub fn count(&self, f: Finding) -> usize {
        self.items.iter().filter(|i| i.finding == f).count()
    }
}

/// Refuses a channel that is not configured, before anything is read or written.
///
/// Decision: the configured channels are the `[channels.<name>]` sections of the channels
/// file `feegate serve` uses (`[channels] config`, [`crate::channels::config`]); the CLI
/// takes it as `--channels` (or `FEEGATE_CHANNELS__CONFIG`, the variable `serve` reads).
/// Without this check a misspelt channel finds none of our ledger entries, so every
/// statement line would open a "missing on our side" work order.
pub fn check_channel(channel: &str, configured: &[String]) -> Result<(), ReconcileError> {
    if configured.iter().any(|c| c == channel) {
        Ok(())
    } else {
        Err(ReconcileError::UnknownChannel {
            channel: channel.to_string(),
            configured: configured.to_vec(),
        })
    }
}

/// Reads a statement CSV. Errors name the line and the field.
///
/// `amount` is parsed like a payment notification's ([`crate::channels::parse_yuan`]):
/// plain digits with at most two decimal places, so `1e2` or `100.001` is a bad line,
/// never 100.00.
pub fn read_statement(path: &Path) -> Result<Vec<Txn>, ReconcileError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|source| ReconcileError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let headers = reader
        .headers()
        .map_err(|source| ReconcileError::Read {
            path: path.display().to_string(),
            source,
        })?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| ReconcileError::Line {
                line: 1,
                message: format!("the header has no column {name:?} (need txn_id,type,account_id,amount,currency)"),
            })
    };
    let (c_txn, c_type, c_acct, c_amount, c_cur) = (
        col("txn_id")?,
        col("type")?,
        col("account_id")?,
        col("amount")?,
        col("currency")?,
    );
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for rec in reader.records() {
        let rec = rec.map_err(|source| ReconcileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: usize| rec.get(i).unwrap_or_default();
        let parsed = (|| -> Result<Txn, String> {
            let txn_id = get(c_txn).to_string();
            if txn_id.is_empty() {
                return Err("txn_id is empty".into());
            }
            if let Some(first) = seen.insert(txn_id.clone(), line) {
                return Err(format!(
                    "txn_id {txn_id} is listed twice (first on line {first})"
                ));
            }
            let kind = match get(c_type) {
                "payment" => "payment",
                "reversal" | "refund" => "reversal",
                other => {
                    return Err(format!("type {other:?} is not payment, reversal or refund"));
                }
            };
            if get(c_cur) != "CNY" {
                return Err(format!("currency {:?} is not CNY", get(c_cur)));
            }
            let amount_fen = crate::channels::parse_yuan(get(c_amount))
                .filter(|f| *f > 0)
                .ok_or_else(|| {
                    format!(
                        "amount {:?} is not a positive yuan amount with at most 2 decimals",
                        get(c_amount)
                    )
                })?;
            Ok(Txn {
                txn_id,
                kind: kind.into(),
                account_id: get(c_acct).to_string(),
                amount_fen,
            })
        })();
        match parsed {
            Ok(t) => out.push(t),
            Err(message) => problems.push(format!("line {line}: {message}")),
        }
    }
    if !problems.is_empty() {
        return Err(ReconcileError::Lines(problems));
    }
    Ok(out)
}

async fn our_side(
    db: &Db,
    channel: &str,
    date: Option<NaiveDate>,
    txn: Option<&str>,
) -> Result<Vec<(Txn, String)>, sqlx::Error> {
    let mut q = String::from(
        "SELECT idempotency_key, account_id, amount_fen, business_date FROM ledger_entries
         WHERE kind IN ('payment', 'reversal') AND (idempotency_key LIKE $1 OR idempotency_key LIKE $2)",
    );
    if date.is_some() {
        q.push_str(" AND business_date = $3");
    }
    let (p, r) = match txn {
        Some(t) => (
            format!("payment:{channel}:{t}"),
            format!("reversal:{channel}:{t}"),
        ),
        None => (
            format!("payment:{channel}:%"),
            format!("reversal:{channel}:%"),
        ),
    };
    let mut query = sqlx::query(&q).bind(p).bind(r);
    if let Some(d) = date {
        query = query.bind(ds(d));
    }
    let rows = query.fetch_all(&db.pool).await?;
    let prefix_len = |k: &str| k.find(':').map_or(0, |i| i + 1) + channel.len() + 1;
    rows.iter()
        .map(|row| {
            let key: String = row.try_get(0)?;
            let amount: Fen = row.try_get(2)?;
            Ok((
                Txn {
                    txn_id: key[prefix_len(&key)..].to_string(),
                    kind: if key.starts_with("payment:") {
                        "payment"
                    } else {
                        "reversal"
                    }
                    .into(),
                    account_id: row.try_get(1)?,
                    amount_fen: amount.abs(),
                },
                row.try_get(3)?,
            ))
        })
        .collect()
}

/// Reconciles `statement` for `channel` on `date`, opening work orders at `now`.
pub async fn reconcile(
    db: &Db,
    channel: &str,
    date: NaiveDate,
    statement: &[Txn],
    now: NaiveDateTime,
) -> Result<Report, ReconcileError> {
    let mut ours: BTreeMap<String, Txn> = our_side(db, channel, Some(date), None)
        .await?
        .into_iter()
        .map(|(t, _)| (t.txn_id.clone(), t))
        .collect();
    let mut items = Vec::new();
    for theirs in statement {
        let item = match ours.remove(&theirs.txn_id) {
            Some(o) if o == *theirs => Item {
                finding: Finding::Matched,
                txn_id: o.txn_id.clone(),
                ours: Some(o),
                theirs: Some(theirs.clone()),
                booked_on: None,
            },
            Some(o) => Item {
                finding: Finding::AmountMismatch,
                txn_id: o.txn_id.clone(),
                ours: Some(o),
                theirs: Some(theirs.clone()),
                booked_on: None,
            },
            None => {
                let elsewhere = our_side(db, channel, None, Some(&theirs.txn_id)).await?;
                match elsewhere.into_iter().next() {
                    Some((o, day)) => Item {
                        finding: if o == *theirs {
                            Finding::Matched
                        } else {
                            Finding::AmountMismatch
                        },
                        txn_id: o.txn_id.clone(),
                        ours: Some(o),
                        theirs: Some(theirs.clone()),
                        booked_on: Some(day),
                    },
                    None => Item {
                        finding: Finding::MissingOnOurSide,
                        txn_id: theirs.txn_id.clone(),
                        ours: None,
                        theirs: Some(theirs.clone()),
                        booked_on: None,
                    },
                }
            }
        };
        items.push(item);
    }
    for (txn_id, o) in ours {
        items.push(Item {
            finding: Finding::MissingOnTheirSide,
            txn_id,
            ours: Some(o),
            theirs: None,
            booked_on: None,
        });
    }
    items.sort_by(|a, b| (a.finding, &a.txn_id).cmp(&(b.finding, &b.txn_id)));
    let mut opened = 0;
    for item in items.iter().filter(|i| i.finding != Finding::Matched) {
        let account = item
            .theirs
            .as_ref()
            .or(item.ours.as_ref())
            .map(|t| t.account_id.clone())
            .unwrap_or_default();
        let station: Option<String> =
            sqlx::query("SELECT station_id FROM accounts WHERE account_id = $1")
                .bind(&account)
                .fetch_optional(&db.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let evidence = serde_json::json!({
            "channel": channel,
            "statement_date": ds(date),
            "finding": item.finding.as_str(),
            "txn_id": item.txn_id,
            "ours": item.ours.as_ref().map(|t| serde_json::json!({"type": t.kind, "account_id": t.account_id, "amount_yuan": format_yuan(t.amount_fen)})),
            "theirs": item.theirs.as_ref().map(|t| serde_json::json!({"type": t.kind, "account_id": t.account_id, "amount_yuan": format_yuan(t.amount_fen)})),
        });
        let done = sqlx::query(
            "INSERT INTO work_orders (kind, account_id, station_id, dedup_key, status, evidence_json, opened_at)
             VALUES ('reconciliation', $1, $2, $3, 'open', $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(station.as_ref().map(|_| account.clone()))
        .bind(station.unwrap_or_else(|| "finance".into()))
        .bind(format!("reconcile:{channel}:{}:{}", item.txn_id, item.finding.as_str()))
        .bind(evidence.to_string())
        .bind(ts(now))
        .execute(&db.pool)
        .await?;
        opened += done.rows_affected() as u32;
    }
    Ok(Report {
        channel: channel.to_string(),
        date: ds(date),
        items,
        work_orders_opened: opened,
    })
}

/// The report as text for the terminal.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "reconciliation of {} for {}: {} matched, {} missing on our side, {} missing on theirs, {} amount mismatches; {} work orders opened\n",
        r.channel,
        r.date,
        r.count(Finding::Matched),
        r.count(Finding::MissingOnOurSide),
        r.count(Finding::MissingOnTheirSide),
        r.count(Finding::AmountMismatch),
        r.work_orders_opened
    );
    let side = |t: &Option<Txn>| {
        t.as_ref().map_or("-".to_string(), |t| {
            format!(
                "{} {} {} yuan",
                t.kind,
                t.account_id,
                format_yuan(t.amount_fen)
            )
        })
    };
    for i in &r.items {
        if i.finding == Finding::Matched && i.booked_on.is_none() {
            continue;
        }
        s.push_str(&format!(
            "  {:<22} {:<24} ours: {:<40} theirs: {}{}\n",
            i.finding.as_str(),
            i.txn_id,
            side(&i.ours),
            side(&i.theirs),
            i.booked_on
                .as_ref()
                .map_or(String::new(), |d| format!(" (booked on {d})"))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_channel_is_refused_naming_the_configured_ones() {
        let configured = vec!["bank-transfer".to_string(), "kiosk".to_string()];
        assert!(check_channel("kiosk", &configured).is_ok());
        for (channel, list) in [
            ("nope", &configured[..]),
            ("Kiosk", &configured[..]),
            ("", &configured[..]),
            ("kiosk", &[][..]),
        ] {
            let e = check_channel(channel, list).unwrap_err().to_string();
            let names = if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            };
            assert!(
                e.starts_with(&format!(
                    "unknown channel '{channel}'; the configured channels are {names}:"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn statement_amounts_are_plain_yuan_like_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("st.csv");
        for (amount, fen) in [
            ("100.00", Some(10_000)),
            ("0.5", Some(50)),
            ("1e2", None),
            ("1E2", None),
            ("+100", None),
            ("100.001", None),
            ("100.000", None),
            ("0", None),
            ("-5.00", None),
            ("79228162514264337593543950335", None),
        ] {
            std::fs::write(
                &path,
                format!("txn_id,type,account_id,amount,currency\nT1,payment,A1,{amount},CNY\n"),
            )
            .unwrap();
            match (read_statement(&path), fen) {
                (Ok(t), Some(f)) => assert_eq!(t[0].amount_fen, f, "{amount}"),
                (Err(e), None) => {
                    let e = e.to_string();
                    assert!(e.contains("line 2: amount"), "{amount}: {e}");
                }
                (got, _) => panic!("{amount}: {got:?}"),
            }
        }
    }
}
