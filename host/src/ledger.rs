//! The ledger: append-only entries, and the balance that moves with them.
//!
//! Invariant: for every account, `accounts.balance_fen` = Σ `ledger_entries.amount_fen`.
//! An entry and its balance move are written in one transaction; each entry carries an
//! idempotency key, so posting the same thing twice (a retry, a re-run after a crash)
//! returns the first entry and moves nothing. Entries are never updated or deleted
//! (database triggers refuse it); a correction is a new entry.

use crate::money::Fen;
use sqlx::{AnyConnection, Row};
use thiserror::Error;

/// Kind of ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The initial prepayment that activates an account.
    Prepayment,
    /// A top-up from a payment channel.
    Payment,
    /// A settled day's consumption charge (negative amount).
    Charge,
    /// A payment reversed by its channel (negative amount).
    Reversal,
    /// A correction by an authorised person.
    Correction,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepayment => "prepayment",
            Self::Payment => "payment",
            Self::Charge => "charge",
            Self::Reversal => "reversal",
            Self::Correction => "correction",
        }
    }
}

/// One entry to post.
#[derive(Debug, Clone)]
pub struct Posting<'a> {
    pub account_id: &'a str,
    pub kind: EntryKind,
    /// Signed fen: + credits the customer, − debits.
    pub amount_fen: Fen,
    /// Unique per business fact, e.g. `charge:<account>:<date>`, `payment:<channel>:<txn>`.
    pub idempotency_key: &'a str,
    pub business_date: &'a str,
    pub posted_at: &'a str,
    /// Free text pointing at the source (decision id, channel transaction).
    pub reference: &'a str,
}

/// Result of [`post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// Newly posted; the balance moved to `balance_after_fen`.
    Posted {
        entry_id: i64,
        balance_after_fen: Fen,
    },
    /// An entry with this idempotency key exists already; nothing moved.
    AlreadyPosted { entry_id: i64 },
}

impl PostOutcome {
    pub fn entry_id(self) -> i64 {
        match self {
            Self::Posted { entry_id, .. } | Self::AlreadyPosted { entry_id } => entry_id,
        }
    }
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("account {0} does not exist")]
    UnknownAccount(String),
    #[error(
        "kind {kind} cannot carry amount {amount_fen} fen (charges and reversals debit, payments credit)"
    )]
    WrongSign { kind: &'static str, amount_fen: Fen },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Posts an entry and moves the balance, inside the caller's transaction (`conn` must
/// be in one). Idempotent by `idempotency_key`.
pub async fn post(conn: &mut AnyConnection, p: &Posting<'_>) -> Result<PostOutcome, LedgerError> {
    check_sign(p)?;
    if let Some(row) = sqlx::query("SELECT entry_id FROM ledger_entries WHERE idempotency_key = $1")
        .bind(p.idempotency_key)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(PostOutcome::AlreadyPosted {
            entry_id: row.try_get(0)?,
        });
    }
    let balance_after_fen: Fen = sqlx::query("UPDATE accounts SET balance_fen = balance_fen + $1 WHERE account_id = $2 RETURNING balance_fen")
        .bind(p.amount_fen)
        .bind(p.account_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| LedgerError::UnknownAccount(p.account_id.to_string()))?
        .try_get(0)?;
    let entry_id: i64 = sqlx::query(
        "INSERT INTO ledger_entries (account_id, kind, amount_fen, balance_after_fen, idempotency_key, business_date, posted_at, reference)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING entry_id",
    )
    .bind(p.account_id)
    .bind(p.kind.as_str())
    .bind(p.amount_fen)
    .bind(balance_after_fen)
    .bind(p.idempotency_key)
    .bind(p.business_date)
    .bind(p.posted_at)
    .bind(p.reference)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    Ok(PostOutcome::Posted {
        entry_id,
        balance_after_fen,
    })
}

fn check_sign(p: &Posting<'_>) -> Result<(), LedgerError> {
    let sign_ok = match p.kind {
        EntryKind::Prepayment | EntryKind::Payment => p.amount_fen > 0,
        EntryKind::Charge | EntryKind::Reversal => p.amount_fen <= 0,
        EntryKind::Correction => p.amount_fen != 0,
    };
    if sign_ok {
        Ok(())
    } else {
        Err(LedgerError::WrongSign {
            kind: p.kind.as_str(),
            amount_fen: p.amount_fen,
        })
    }
}

/// Columns of one `ledger_entries` row as [`post_many`] inserts them.
const ENTRY_COLUMNS: usize = 8;

/// [`post`] for many postings at once, inside the caller's transaction, with the same
/// outcome per posting (in the same order) and the same invariant — but a few multi-row
/// statements for the lot: one look-up of the idempotency keys, one
/// `UPDATE … FROM (VALUES …) … RETURNING` for the balances and one multi-row `INSERT` for
/// the entries, per [`crate::db::rows_per_statement`] postings. Used by settlement, which
/// posts one charge per account per day for a whole county.
///
/// Errors as [`post`]: a wrong sign or an unknown account fails the whole call (the
/// caller's transaction then rolls back; nothing is half-applied). When an account or an
/// idempotency key comes more than once in `postings`, they are posted one by one with
/// [`post`], so each entry's `balance_after_fen` stays exact and a repeated key posts once.
pub async fn post_many(
    conn: &mut AnyConnection,
    postings: &[Posting<'_>],
) -> Result<Vec<PostOutcome>, LedgerError> {
    for p in postings {
        check_sign(p)?;
    }
    let mut accounts = std::collections::HashSet::with_capacity(postings.len());
    let mut keys = std::collections::HashSet::with_capacity(postings.len());
    if !postings
        .iter()
        .all(|p| accounts.insert(p.account_id) && keys.insert(p.idempotency_key))
    {
        let mut out = Vec::with_capacity(postings.len());
        for p in postings {
            out.push(post(conn, p).await?);
        }
        return Ok(out);
    }
    let style = crate::db::Placeholders::of(conn);
    let mut out = Vec::with_capacity(postings.len());
    for part in postings.chunks(crate::db::rows_per_statement(ENTRY_COLUMNS)) {
        // Already posted (a retry): keep the first entry, move nothing.
        let sql = format!(
            "SELECT idempotency_key, entry_id FROM ledger_entries WHERE idempotency_key IN {}",
            style.values(1, part.len())
        );
        let mut q = sqlx::query(&sql);
        for p in part {
            q = q.bind(p.idempotency_key);
        }
        let mut posted_before = std::collections::HashMap::new();
        for r in q.fetch_all(&mut *conn).await? {
            posted_before.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
        }
        let new: Vec<&Posting<'_>> = part
            .iter()
            .filter(|p| !posted_before.contains_key(p.idempotency_key))
            .collect();
        let mut balances = std::collections::HashMap::with_capacity(new.len());
        let mut entry_ids = std::collections::HashMap::with_capacity(new.len());
        if !new.is_empty() {
            let sql = format!(
                "UPDATE accounts SET balance_fen = balance_fen + v.column2 FROM (VALUES {}) AS v
                 WHERE accounts.account_id = v.column1 RETURNING account_id, balance_fen",
                style.values(new.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for p in &new {
                q = q.bind(p.account_id).bind(p.amount_fen);
            }
            for r in q.fetch_all(&mut *conn).await? {
                balances.insert(r.try_get::<String, _>(0)?, r.try_get::<Fen, _>(1)?);
            }
            if let Some(p) = new.iter().find(|p| !balances.contains_key(p.account_id)) {
                return Err(LedgerError::UnknownAccount(p.account_id.to_string()));
            }
            let sql = format!(
                "INSERT INTO ledger_entries (account_id, kind, amount_fen, balance_after_fen, idempotency_key, business_date, posted_at, reference)
                 VALUES {} RETURNING idempotency_key, entry_id",
                style.values(new.len(), ENTRY_COLUMNS)
            );
            let mut q = sqlx::query(&sql);
            for p in &new {
                q = q
                    .bind(p.account_id)
                    .bind(p.kind.as_str())
                    .bind(p.amount_fen)
                    .bind(balances[p.account_id])
                    .bind(p.idempotency_key)
                    .bind(p.business_date)
                    .bind(p.posted_at)
                    .bind(p.reference);
            }
            for r in q.fetch_all(&mut *conn).await? {
                entry_ids.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
            }
        }
        for p in part {
            out.push(match posted_before.get(p.idempotency_key) {
                Some(&entry_id) => PostOutcome::AlreadyPosted { entry_id },
                None => PostOutcome::Posted {
                    entry_id: *entry_ids.get(p.idempotency_key).ok_or_else(|| {
                        sqlx::Error::Protocol(format!(
                            "entry {} was inserted but not returned",
                            p.idempotency_key
                        ))
                    })?,
                    balance_after_fen: balances[p.account_id],
                },
            });
        }
    }
    Ok(out)
}

/// Accounts whose balance differs from the sum of their ledger entries, as
/// `(account_id, balance_fen, ledger_sum_fen)`. Empty when the ledger is balanced.
pub async fn unbalanced_accounts(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, Fen, Fen)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.account_id, a.balance_fen, CAST(COALESCE(SUM(e.amount_fen), 0) AS BIGINT) AS ledger_sum
         FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.account_id
         GROUP BY a.account_id, a.balance_fen
         HAVING a.balance_fen <> COALESCE(SUM(e.amount_fen), 0)",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
