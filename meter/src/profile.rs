//! Household consumption profiles: daily kWh per household, loaded from a CSV file.
//!
//! The reference data is `lcl_2013_daily_kwh_100hh.csv`: daily electricity use of 100 London
//! households in calendar year 2013, derived from **UK Power Networks, Low Carbon London project,
//! "SmartMeter Energy Consumption Data in London Households", published as open data on the
//! London Datastore** (see [`ATTRIBUTION`]; keep it wherever the data is shown or shipped).
//!
//! Format: a header line and one row per household-day, columns (in any order)
//! `LCLid` (household id), `date` (`YYYY-MM-DD`), `kwh_sum` (kWh that day, exact decimal),
//! `n_halfhours` (half-hour intervals present that day, 0–48; 48 is complete).
//!
//! Households join and leave during the year and some days are missing. A date with no row means
//! the household's meter did not answer that day; this is data, not an error. kWh values are kept
//! as exact [`Decimal`]s, never floats.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Source attribution of the household consumption data. Keep it wherever the data, or a
/// register series derived from it, is shown or shipped.
pub const ATTRIBUTION: &str = "UK Power Networks, Low Carbon London project, \
\"SmartMeter Energy Consumption Data in London Households\", London Datastore (open data)";

/// Half-hour intervals in a complete day.
pub const FULL_DAY_HALF_HOURS: u8 = 48;

/// Loading the profile CSV failed. Messages name the file, the line and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be opened or read.
    #[error("cannot read consumption data {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed (bad header, field, duplicate row…).
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The file (or the name given to [`Profiles::from_reader`]).
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The file has a header but no data rows.
    #[error("{path}: no data rows; expected one row per household-day after the header")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One household-day of consumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyUsage {
    /// Energy used that day, kWh (exact, as written in the file).
    pub kwh: Decimal,
    /// Half-hour intervals present in the source that day (48 = complete day).
    pub half_hours: u8,
}

/// One household's daily consumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdProfile {
    /// Anonymised household id (`LCLid`), e.g. `MAC000002`.
    pub id: String,
    /// Date → that day's use. A date that is absent: the meter did not answer that day.
    pub days: BTreeMap<NaiveDate, DailyUsage>,
}

impl HouseholdProfile {
    /// kWh used on `date`, or `None` when the household has no row for that date.
    pub fn kwh_on(&self, date: NaiveDate) -> Option<Decimal> {
        self.days.get(&date).map(|d| d.kwh)
    }

    /// First date with data.
    pub fn first_date(&self) -> Option<NaiveDate> {
        self.days.keys().next().copied()
    }

    /// Last date with data.
    pub fn last_date(&self) -> Option<NaiveDate> {
        self.days.keys().next_back().copied()
    }

    /// Sum of all days, kWh.
    pub fn total_kwh(&self) -> Decimal {
        self.days.values().map(|d| d.kwh).sum()
    }
}

/// All household profiles of one file, in the order each household first appears.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    households: Vec<HouseholdProfile>,
    by_id: HashMap<String, usize>,
}

const COL_ID: &str = "LCLid";
const COL_DATE: &str = "date";
const COL_KWH: &str = "kwh_sum";
const COL_HALF_HOURS: &str = "n_halfhours";

impl Profiles {
    /// Loads the daily CSV at `path` (format in the [module docs](self)).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(file, path)
    }

    /// Parses the daily CSV from `reader`; `name` is used in error messages as the file name.
    pub fn from_reader(reader: impl Read, name: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = name.as_ref().to_path_buf();
        let bad = |line: u64, message: String| ProfileError::BadLine {
            path: path.clone(),
            line,
            message,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(reader);

        let headers = rdr.headers().map_err(|e| csv_error(&path, e))?.clone();
        let col = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                bad(
                    1,
                    format!(
                        "missing column `{name}`; the header must name the columns \
                         {COL_ID},{COL_DATE},{COL_KWH},{COL_HALF_HOURS} (found: {})",
                        headers.iter().collect::<Vec<_>>().join(",")
                    ),
                )
            })
        };
        let (c_id, c_date, c_kwh, c_hh) = (
            col(COL_ID)?,
            col(COL_DATE)?,
            col(COL_KWH)?,
            col(COL_HALF_HOURS)?,
        );

        let mut profiles = Profiles::default();
        let mut record = csv::StringRecord::new();
        loop {
            match rdr.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(csv_error(&path, e)),
            }
            let line = record.position().map_or(0, |p| p.line());
            let field = |c: usize, name: &str| {
                record.get(c).ok_or_else(|| {
                    bad(
                        line,
                        format!("missing field `{name}` (only {} fields)", record.len()),
                    )
                })
            };
            let id = field(c_id, COL_ID)?;
            if id.is_empty() {
                return Err(bad(line, format!("empty household id `{COL_ID}`")));
            }
            let date_s = field(c_date, COL_DATE)?;
            let date = NaiveDate::parse_from_str(date_s, "%Y-%m-%d").map_err(|e| {
                bad(
                    line,
                    format!("bad date `{date_s}` ({e}); expected YYYY-MM-DD"),
                )
            })?;
            let kwh_s = field(c_kwh, COL_KWH)?;
            let kwh = Decimal::from_str_exact(kwh_s).map_err(|e| {
                bad(
                    line,
                    format!("bad kWh `{kwh_s}` ({e}); expected a decimal number like 10.800"),
                )
            })?;
            if kwh.is_sign_negative() && !kwh.is_zero() {
                return Err(bad(
                    line,
                    format!("negative daily kWh `{kwh_s}`; daily use cannot be negative"),
                ));
            }
            let hh_s = field(c_hh, COL_HALF_HOURS)?;
            let half_hours = hh_s
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= FULL_DAY_HALF_HOURS)
                .ok_or_else(|| {
                    bad(
                        line,
                        format!("bad `{COL_HALF_HOURS}` `{hh_s}`; expected a whole number 0..=48"),
                    )
                })?;

            let idx = match profiles.by_id.get(id) {
                Some(i) => *i,
                None => {
                    profiles.households.push(HouseholdProfile {
                        id: id.to_owned(),
                        days: BTreeMap::new(),
                    });
                    let i = profiles.households.len() - 1;
                    profiles.by_id.insert(id.to_owned(), i);
                    i
                }
            };
            let days = &mut profiles.households[idx].days;
            if days.contains_key(&date) {
                return Err(bad(
                    line,
                    format!("duplicate row for household {id} on {date}; one row per day expected"),
                ));
            }
            days.insert(date, DailyUsage { kwh, half_hours });
        }
        if profiles.households.is_empty() {
            return Err(ProfileError::Empty { path });
        }
        Ok(profiles)
    }

    /// Households in the order they first appear in the file.
    pub fn households(&self) -> &[HouseholdProfile] {
        &self.households
    }

    /// The household with id `id` (e.g. `MAC000002`).
    pub fn get(&self, id: &str) -> Option<&HouseholdProfile> {
        self.by_id.get(id).map(|i| &self.households[*i])
    }

    /// Number of households.
    pub fn len(&self) -> usize {
        self.households.len()
    }

    /// True when there are no households.
    pub fn is_empty(&self) -> bool {
        self.households.is_empty()
    }
}

fn csv_error(path: &Path, e: csv::Error) -> ProfileError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => ProfileError::Io {
            path: path.to_path_buf(),
            source,
        },
        kind => ProfileError::BadLine {
            path: path.to_path_buf(),
            line,
            message: match kind {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("{len} fields where the header has {expected_len}"),
                csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text: {err}"),
                other => format!("{other:?}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profiles, ProfileError> {
        Profiles::from_reader(text.as_bytes(), "test.csv")
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn parses_exact_decimals_in_file_order() {
        let p = parse(
            "LCLid,date,kwh_sum,n_halfhours\n\
             MAC2,2013-01-01,10.800,48\n\
             MAC1,2013-01-02,0.027,1\n\
             MAC2,2013-01-02,13.300,48\n",
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.households()[0].id, "MAC2");
        assert_eq!(p.households()[1].id, "MAC1");
        let h = p.get("MAC2").unwrap();
        assert_eq!(h.kwh_on(d(2013, 1, 1)), Some(Decimal::new(10_800, 3)));
        assert_eq!(h.kwh_on(d(2013, 1, 3)), None);
        assert_eq!(h.total_kwh(), Decimal::new(24_100, 3));
        assert_eq!(
            p.get("MAC1").unwrap().days[&d(2013, 1, 2)],
            DailyUsage {
                kwh: Decimal::new(27, 3),
                half_hours: 1
            }
        );
    }

    #[test]
    fn columns_may_come_in_any_order() {
        let p = parse("date,n_halfhours,LCLid,kwh_sum\n2013-05-01,48,X,1.5\n").unwrap();
        assert_eq!(
            p.get("X").unwrap().kwh_on(d(2013, 5, 1)),
            Some(Decimal::new(15, 1))
        );
    }

    fn err_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let h = "LCLid,date,kwh_sum,n_halfhours\n";
        let e = err_text(&format!("{h}A,2013-01-01,1.0,48\nA,2013-13-01,1.0,48\n"));
        assert!(e.starts_with("test.csv:3: bad date `2013-13-01`"), "{e}");
        let e = err_text(&format!("{h}A,2013-01-01,ten,48\n"));
        assert!(e.starts_with("test.csv:2: bad kWh `ten`"), "{e}");
        let e = err_text(&format!("{h}A,2013-01-01,-1.0,48\n"));
        assert!(e.starts_with("test.csv:2: negative daily kWh"), "{e}");
        let e = err_text(&format!("{h}A,2013-01-01,1.0,49\n"));
        assert!(e.starts_with("test.csv:2: bad `n_halfhours` `49`"), "{e}");
        let e = err_text(&format!("{h}A,2013-01-01,1.0,48\nA,2013-01-01,2.0,48\n"));
        assert!(
            e.starts_with("test.csv:3: duplicate row for household A on 2013-01-01"),
            "{e}"
        );
        let e = err_text(&format!("{h}A,2013-01-01,1.0\n"));
        assert!(
            e.starts_with("test.csv:2: 3 fields where the header has 4"),
            "{e}"
        );
        let e = err_text("LCLid,day,kwh_sum,n_halfhours\nA,2013-01-01,1.0,48\n");
        assert!(e.starts_with("test.csv:1: missing column `date`"), "{e}");
        let e = err_text(&format!("{h},2013-01-01,1.0,48\n"));
        assert!(e.starts_with("test.csv:2: empty household id"), "{e}");
        let e = err_text(h);
        assert!(e.starts_with("test.csv: no data rows"), "{e}");
        let e = Profiles::load("/nonexistent/x.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read consumption data /nonexistent/x.csv"),
            "{e}"
        );
    }
}
