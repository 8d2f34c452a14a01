//! Read models (issue 6): what the HTTP API and the web console show, as plain data.
//!
//! Pure data access, no HTTP: every list takes the caller's [`Visibility`] (from
//! [`crate::auth::Principal::visible`]) and adds its set fields to the query's `WHERE`,
//! so a list never holds a row outside the caller's scope; a filter the caller asks for
//! ([`Scope filters`](ListFilter)) is added on top and can only narrow it. A `get` of one
//! object answers `None` both for "no such object" and "outside the visibility", so a
//! caller cannot learn that a neighbour's account exists.
//!
//! Pagination is keyset: lists are ordered by their key, and [`PageRequest::after`] is
//! the key of the last row of the previous page (the `next_after` of a [`Page`]). A page
//! holds at most [`PageRequest::limit`] rows (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
//!
//! Units: money as [`Money`] (a yuan decimal string with two places and the integer fen),
//! energy as [`Energy`] (a kWh decimal string with two places and integer centi-kWh),
//! times as stored (county local, `YYYY-MM-DD HH:MM:SS`), dates `YYYY-MM-DD`.

pub mod accounts;
pub mod collection;
pub mod policies;
pub mod work_orders;

use crate::auth::Visibility;
use crate::db::DbError;
use crate::money::{CentiKwh, Fen, format_yuan};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::{Any, query::Query};

/// Rows per page when the caller names no limit.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most rows one page may hold.
pub const MAX_LIMIT: u32 = 500;

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A parameter the caller gave is not usable; the message says what to send.
    #[error("{0}")]
    BadRequest(String),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Db(DbError::Sql(e))
    }
}

/// An amount of money: `yuan` is the exact decimal with two places ("-12.34"), `fen`
/// the same amount as an integer (-1234). Never a float.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    #[schema(example = "12.34")]
    pub yuan: String,
    #[schema(example = 1234)]
    pub fen: i64,
}

impl From<Fen> for Money {
    fn from(fen: Fen) -> Self {
        Money {
            yuan: format_yuan(fen),
            fen,
        }
    }
}

/// An amount of energy: `kwh` is the exact decimal with two places ("8.50"),
/// `centi_kwh` the same amount in 0.01 kWh (850), the register resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Energy {
    #[schema(example = "8.50")]
    pub kwh: String,
    #[schema(example = 850)]
    pub centi_kwh: i64,
}

impl From<CentiKwh> for Energy {
    fn from(c: CentiKwh) -> Self {
        Energy {
            kwh: format!("{:.2}", crate::money::centi_kwh_to_kwh(c)),
            centi_kwh: c,
        }
    }
}

/// Which page of a list: at most `limit` rows after the key `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// The `next_after` of the previous page; none for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Checks a caller's `limit` (none: [`DEFAULT_LIMIT`]; 1..=[`MAX_LIMIT`]).
    pub fn new(limit: Option<u32>, after: Option<String>) -> Result<Self, QueryError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::BadRequest(format!(
                "limit {limit} is out of range: ask for 1 to {MAX_LIMIT} rows (default {DEFAULT_LIMIT})"
            )));
        }
        Ok(PageRequest {
            limit,
            after: after.filter(|a| !a.is_empty()),
        })
    }

    /// `after` as a numeric key (for lists keyed by an integer id).
    fn after_id(&self) -> Result<Option<i64>, QueryError> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse::<i64>().map_err(|_| {
                    QueryError::BadRequest(format!(
                        "after {a:?} is not a key of this list: pass the next_after of the previous page"
                    ))
                })
            })
            .transpose()
    }
}

/// One page of a list, in key order. `next_after` is the key to pass as `after` for the
/// next page; none when this is the last page.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only says
    /// there is more.
    fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = if more { rows.last().map(key) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }
}

/// Filters a caller adds to a list: a county, a station. They narrow the caller's
/// visibility (both apply, so a filter outside it gives an empty list), never widen it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub county: Option<String>,
    pub station_id: Option<String>,
}

/// A bound value of a built query.
#[derive(Clone, Debug)]
enum Arg {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause built from optional conditions, with `$n` placeholders numbered in
/// order (both SQLite and PostgreSQL accept them through the `Any` driver).
#[derive(Clone, Debug, Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn placeholder(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    /// `column = value` when the value is set.
    fn eq(&mut self, column: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            let p = self.placeholder(Arg::Text(v.to_string()));
            self.clauses.push(format!("{column} = {p}"));
        }
        self
    }

    /// A condition with one `{}` where the placeholder of `value` goes.
    fn cond(&mut self, template: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            let p = self.placeholder(Arg::Text(v.to_string()));
            self.clauses.push(template.replace("{}", &p));
        }
        self
    }

    fn cond_int(&mut self, template: &str, value: Option<i64>) -> &mut Self {
        if let Some(v) = value {
            let p = self.placeholder(Arg::Int(v));
            self.clauses.push(template.replace("{}", &p));
        }
        self
    }

    /// The visibility and the caller's filters on the table's county, station and
    /// account columns. A restriction on a column the table does not have (`None`)
    /// matches nothing: a list never guesses in the caller's favour.
    fn scope(
        &mut self,
        v: &Visibility,
        f: &ListFilter,
        county: &str,
        station: Option<&str>,
        account: Option<&str>,
    ) -> &mut Self {
        self.eq(county, v.county.as_deref());
        self.eq(county, f.county.as_deref());
        for (column, value) in [
            (station, v.station_id.as_deref()),
            (station, f.station_id.as_deref()),
            (account, v.account_id.as_deref()),
        ] {
            match (column, value) {
                (Some(c), v) => {
                    self.eq(c, v);
                }
                (None, Some(_)) => self.clauses.push("1 = 0".into()),
                (None, None) => {}
            }
        }
        self
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// `WHERE … ORDER BY order LIMIT n` with `n` bound last.
    fn page_sql(&mut self, order: &str, limit: u32) -> String {
        let w = self.sql();
        let p = self.placeholder(Arg::Int(i64::from(limit) + 1));
        format!("{w} ORDER BY {order} LIMIT {p}")
    }

    fn bind<'q>(
        &'q self,
        mut q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Runs `select` + `w` as one page ordered by `order` (the list's key), each row read
/// with `from`; `key` gives a row's key for `next_after`.
async fn fetch_page<T>(
    db: &crate::db::Db,
    select: &str,
    mut w: Where,
    order: &str,
    limit: u32,
    from: fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
    key: fn(&T) -> String,
) -> Result<Page<T>, QueryError> {
    let sql = format!("{select}{}", w.page_sql(order, limit));
    let rows = w.bind(sqlx::query(&sql)).fetch_all(&db.pool).await?;
    let items = rows.iter().map(from).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, key))
}

/// Runs `select` + `w` for at most one row, read with `from`.
async fn fetch_one<T>(
    db: &crate::db::Db,
    select: &str,
    w: Where,
    from: fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, QueryError> {
    let sql = format!("{select}{}", w.sql());
    let row = w.bind(sqlx::query(&sql)).fetch_optional(&db.pool).await?;
    Ok(row.as_ref().map(from).transpose()?)
}

/// 0/1 column to bool.
fn flag(r: &sqlx::any::AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    Ok(r.try_get::<i64, _>(col)? != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_one_to_max_are_refused_and_none_is_the_default() {
        assert_eq!(PageRequest::new(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(
            PageRequest::new(Some(MAX_LIMIT), None).unwrap().limit,
            MAX_LIMIT
        );
        for bad in [0, MAX_LIMIT + 1] {
            let e = PageRequest::new(Some(bad), None).unwrap_err();
            assert!(e.to_string().contains("1 to 500"), "{e}");
        }
    }

    #[test]
    fn a_page_keeps_limit_rows_and_names_the_last_key_only_when_more_follow() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |i| i.to_string());
        assert_eq!((p.items, p.next_after), (vec![1, 2], Some("2".into())));
        let p = Page::from_rows(vec![1, 2], 2, |i| i.to_string());
        assert_eq!((p.items, p.next_after), (vec![1, 2], None));
    }

    #[test]
    fn a_restriction_on_a_column_the_table_lacks_matches_nothing() {
        let v = Visibility {
            county: Some("c".into()),
            station_id: None,
            account_id: Some("a".into()),
        };
        let mut w = Where::default();
        w.scope(
            &v,
            &ListFilter::default(),
            "t.county",
            Some("t.station_id"),
            None,
        );
        assert_eq!(w.sql(), " WHERE t.county = $1 AND 1 = 0");
        let mut w = Where::default();
        w.scope(
            &Visibility::default(),
            &ListFilter {
                county: Some("x".into()),
                station_id: Some("s".into()),
            },
            "t.county",
            Some("t.station_id"),
            Some("t.account_id"),
        );
        assert_eq!(w.sql(), " WHERE t.county = $1 AND t.station_id = $2");
    }

    #[test]
    fn money_and_energy_are_exact_decimal_strings_with_their_integers() {
        assert_eq!(
            Money::from(-1234),
            Money {
                yuan: "-12.34".into(),
                fen: -1234
            }
        );
        assert_eq!(Energy::from(850).kwh, "8.50");
    }
}
