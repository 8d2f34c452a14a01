//! Dates and local wall-clock times of the county, computed from the input only.
//!
//! A policy gets no clock: `today`, `now` and calendar facts come in the input. What a
//! policy still has to compute — the number of days in a period, the last day of a year
//! or month, "delivered date + N days", the ISO weekday of a date (to cross-check the
//! host's calendar facts) — is plain proleptic-Gregorian arithmetic, done here.

use core::fmt;
use serde::Deserialize;

/// A calendar date (proleptic Gregorian, years 1–9999), in the county's local time zone.
/// Ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    year: u16,
    month: u8,
    day: u8,
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1–12) of `year`; 0 for a month outside 1–12.
pub fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 0001-01-01 to 1 January of `year`.
fn days_before_year(year: i64) -> i64 {
    let p = year - 1;
    365 * p + p / 4 - p / 100 + p / 400
}

impl CivilDate {
    /// A valid date.
    ///
    /// # Errors
    /// A message when the year is outside 1–9999, the month outside 1–12 or the day
    /// beyond the month's length (e.g. 2013-02-29).
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, String> {
        if !(1..=9999).contains(&year) {
            return Err(format!("year {year} is outside 1–9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(format!(
                "month {month} is outside 1–12 in {year}-{month:02}-{day:02}"
            ));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(format!(
                "{year:04}-{month:02}-{day:02} is not a calendar date"
            ));
        }
        Ok(CivilDate { year, month, day })
    }

    /// Year (1–9999).
    pub fn year(self) -> u16 {
        self.year
    }

    /// Month (1–12).
    pub fn month(self) -> u8 {
        self.month
    }

    /// Day of month (1–31).
    pub fn day(self) -> u8 {
        self.day
    }

    /// Append the date as ISO 8601 `YYYY-MM-DD`, exactly what `Display` prints, without
    /// going through `core::fmt` (for explanations built in one `String`).
    pub fn push_iso(self, out: &mut String) {
        // Years are 1–9999, so the text is always 10 ASCII bytes.
        let (year, month, day) = (self.year, self.month, self.day);
        let digit = |n: u16| b'0' + (n % 10) as u8;
        let text = [
            digit(year / 1000),
            digit(year / 100),
            digit(year / 10),
            digit(year),
            b'-',
            digit(u16::from(month) / 10),
            digit(u16::from(month)),
            b'-',
            digit(u16::from(day) / 10),
            digit(u16::from(day)),
        ];
        crate::text::push_ascii(out, &text);
    }

    /// Days since 0001-01-01 (which is day 0, a Monday).
    pub fn day_number(self) -> i64 {
        let before_month: i64 = (1..self.month)
            .map(|m| i64::from(days_in_month(self.year, m)))
            .sum();
        days_before_year(i64::from(self.year)) + before_month + i64::from(self.day) - 1
    }

    /// The date with the given [`day_number`](Self::day_number); `None` outside 1–9999.
    pub fn from_day_number(n: i64) -> Option<Self> {
        if n < 0 {
            return None;
        }
        // 146 097 days per 400 Gregorian years: a close first guess, then correct it.
        let mut year = n * 400 / 146_097 + 1;
        while days_before_year(year) > n {
            year -= 1;
        }
        while days_before_year(year + 1) <= n {
            year += 1;
        }
        let year = u16::try_from(year).ok().filter(|y| *y <= 9999)?;
        let mut rest = n - days_before_year(i64::from(year));
        let mut month = 1;
        while rest >= i64::from(days_in_month(year, month)) {
            rest -= i64::from(days_in_month(year, month));
            month += 1;
        }
        Some(CivilDate {
            year,
            month,
            day: u8::try_from(rest + 1).ok()?,
        })
    }

    /// This date plus `days` days; `None` past 9999-12-31.
    pub fn add_days(self, days: u32) -> Option<Self> {
        Self::from_day_number(self.day_number() + i64::from(days))
    }

    /// Whole days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: CivilDate) -> i64 {
        later.day_number() - self.day_number()
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn iso_weekday(self) -> u8 {
        // Day 0 (0001-01-01) is a Monday; the remainder is in 0..7, so the cast is exact.
        (self.day_number().rem_euclid(7) + 1) as u8
    }

    /// 31 December of this date's year.
    pub fn last_day_of_year(self) -> Self {
        CivilDate {
            year: self.year,
            month: 12,
            day: 31,
        }
    }

    /// The last day of this date's month.
    pub fn last_day_of_month(self) -> Self {
        CivilDate {
            day: days_in_month(self.year, self.month),
            ..self
        }
    }
}

impl fmt::Display for CivilDate {
    /// ISO 8601, `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A local wall-clock time of day (hour 0–23, minute 0–59), in the county's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime {
    hour: u8,
    minute: u8,
}

impl ClockTime {
    /// 00:00.
    pub const MIDNIGHT: ClockTime = ClockTime { hour: 0, minute: 0 };

    /// A valid time of day, usable in constants; `None` for an hour above 23 or a minute
    /// above 59.
    pub const fn at(hour: u8, minute: u8) -> Option<Self> {
        if hour > 23 || minute > 59 {
            None
        } else {
            Some(ClockTime { hour, minute })
        }
    }

    /// A valid time of day.
    ///
    /// # Errors
    /// A message when the hour is above 23 or the minute above 59.
    pub fn new(hour: u8, minute: u8) -> Result<Self, String> {
        if hour > 23 || minute > 59 {
            return Err(format!("{hour:02}:{minute:02} is not a time of day"));
        }
        Ok(ClockTime { hour, minute })
    }

    /// Hour (0–23).
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// Minute (0–59).
    pub fn minute(self) -> u8 {
        self.minute
    }

    /// Minutes since 00:00 (0–1439).
    pub fn minute_of_day(self) -> u16 {
        u16::from(self.hour) * 60 + u16::from(self.minute)
    }

    /// Parse `"HH:MM"` (exactly two digits each, 24-hour clock).
    ///
    /// # Errors
    /// A message for anything else.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let digit = |i: usize| -> Option<u8> {
            bytes
                .get(i)
                .filter(|b| b.is_ascii_digit())
                .map(|b| b - b'0')
        };
        let parsed = match (bytes.len(), bytes.get(2)) {
            (5, Some(b':')) => digit(0)
                .zip(digit(1))
                .zip(digit(3).zip(digit(4)))
                .map(|((h1, h2), (m1, m2))| (h1 * 10 + h2, m1 * 10 + m2)),
            _ => None,
        };
        let (hour, minute) = parsed.ok_or_else(|| format!("{text:?} is not a time \"HH:MM\""))?;
        Self::new(hour, minute)
    }
}

impl fmt::Display for ClockTime {
    /// `HH:MM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ClockTime::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A local date and wall-clock time. Ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalDateTime {
    /// The local date.
    pub date: CivilDate,
    /// The local time of day.
    pub time: ClockTime,
}

impl fmt::Display for LocalDateTime {
    /// `YYYY-MM-DD HH:MM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.date, self.time)
    }
}

/// A daily window of local time `[from, to)`, e.g. the protected night hours
/// `{ from = "18:00", to = "08:00" }`, which wraps past midnight. `from` is inside the
/// window, `to` is not. An empty window (`from == to`) is refused as ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawWindow")]
pub struct TimeWindow {
    from: ClockTime,
    to: ClockTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from: ClockTime,
    to: ClockTime,
}

impl TryFrom<RawWindow> for TimeWindow {
    type Error = String;

    fn try_from(raw: RawWindow) -> Result<Self, String> {
        TimeWindow::new(raw.from, raw.to)
    }
}

impl TimeWindow {
    /// A window `[from, to)`; wraps past midnight when `to` < `from`.
    ///
    /// # Errors
    /// A message when `from == to` (empty or whole day: ambiguous).
    pub fn new(from: ClockTime, to: ClockTime) -> Result<Self, String> {
        if from == to {
            return Err(format!(
                "time window {from}–{to} is empty; give distinct times"
            ));
        }
        Ok(TimeWindow { from, to })
    }

    /// Start of the window (inside it).
    pub fn from(self) -> ClockTime {
        self.from
    }

    /// End of the window (outside it).
    pub fn to(self) -> ClockTime {
        self.to
    }

    /// Whether `t` falls inside `[from, to)`.
    pub fn contains(self, t: ClockTime) -> bool {
        if self.from < self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

impl fmt::Display for TimeWindow {
    /// `HH:MM–HH:MM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.from, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: u16, m: u8, d: u8) -> CivilDate {
        CivilDate::new(y, m, d).unwrap()
    }

    #[test]
    fn push_iso_matches_display() {
        for (y, m, d) in [
            (1, 1, 1),
            (999, 9, 9),
            (2013, 12, 31),
            (2014, 1, 2),
            (9999, 12, 31),
        ] {
            let mut s = String::from("x");
            date(y, m, d).push_iso(&mut s);
            assert_eq!(s, format!("x{}", date(y, m, d)));
        }
    }

    #[test]
    fn validates_dates() {
        assert!(CivilDate::new(2013, 2, 29).is_err());
        assert!(CivilDate::new(2012, 2, 29).is_ok());
        assert!(CivilDate::new(1900, 2, 29).is_err());
        assert!(CivilDate::new(2000, 2, 29).is_ok());
        assert!(CivilDate::new(2013, 13, 1).is_err());
        assert!(CivilDate::new(2013, 4, 31).is_err());
        assert!(CivilDate::new(2013, 1, 0).is_err());
        assert!(CivilDate::new(0, 1, 1).is_err());
    }

    #[test]
    fn weekdays_match_the_2013_calendar() {
        // (date, ISO weekday) read off a printed 2013/2014 calendar.
        let cases = [
            (date(2013, 1, 1), 2),  // Tuesday, New Year's Day
            (date(2013, 1, 5), 6),  // Saturday
            (date(2013, 1, 6), 7),  // Sunday
            (date(2013, 1, 7), 1),  // Monday
            (date(2013, 2, 10), 7), // Sunday, Spring Festival
            (date(2013, 10, 1), 2), // Tuesday, National Day
            (date(2013, 12, 31), 2),
            (date(2014, 1, 1), 3),
            (date(2000, 1, 1), 6),
            (date(1, 1, 1), 1),
        ];
        for (d, want) in cases {
            assert_eq!(d.iso_weekday(), want, "{d}");
        }
    }

    #[test]
    fn day_arithmetic() {
        assert_eq!(date(2013, 12, 30).days_until(date(2014, 1, 2)), 3);
        assert_eq!(date(2013, 1, 1).days_until(date(2013, 12, 31)), 364);
        assert_eq!(date(2012, 1, 1).days_until(date(2012, 12, 31)), 365);
        assert_eq!(date(2013, 1, 31).add_days(1), Some(date(2013, 2, 1)));
        assert_eq!(date(2013, 12, 31).add_days(1), Some(date(2014, 1, 1)));
        assert_eq!(date(2012, 2, 28).add_days(1), Some(date(2012, 2, 29)));
        assert_eq!(date(2013, 2, 28).add_days(1), Some(date(2013, 3, 1)));
        assert_eq!(date(9999, 12, 31).add_days(1), None);
        assert_eq!(date(2013, 2, 14).last_day_of_month(), date(2013, 2, 28));
        assert_eq!(date(2013, 2, 14).last_day_of_year(), date(2013, 12, 31));
        // Round trip over four centuries, leap rules included.
        let start = date(1899, 12, 25).day_number();
        for n in start..start + 146_097 + 10 {
            let d = CivilDate::from_day_number(n).unwrap();
            assert_eq!(d.day_number(), n, "{d}");
        }
    }

    #[test]
    fn clock_times() {
        assert_eq!(ClockTime::parse("08:00"), Ok(ClockTime::new(8, 0).unwrap()));
        assert_eq!(ClockTime::parse("23:59").unwrap().minute_of_day(), 1439);
        for bad in [
            "8:00", "24:00", "12:60", "12-00", "1200", " 08:00", "08:00 ",
        ] {
            assert!(ClockTime::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ClockTime::parse("07:05").unwrap().to_string(), "07:05");
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let t = |s: &str| ClockTime::parse(s).unwrap();
        let night = TimeWindow::new(t("18:00"), t("08:00")).unwrap();
        let cases = [
            ("17:59", false),
            ("18:00", true),
            ("23:59", true),
            ("00:00", true),
            ("07:59", true),
            ("08:00", false),
            ("12:00", false),
        ];
        for (time, inside) in cases {
            assert_eq!(night.contains(t(time)), inside, "{time}");
        }
        let lunch = TimeWindow::new(t("12:00"), t("13:30")).unwrap();
        assert!(lunch.contains(t("12:00")));
        assert!(!lunch.contains(t("13:30")));
        assert!(!lunch.contains(t("11:59")));
        assert!(TimeWindow::new(t("08:00"), t("08:00")).is_err());
        let parsed: TimeWindow = serde_json::from_str(r#"{"from":"18:00","to":"08:00"}"#).unwrap();
        assert_eq!(parsed, night);
        assert!(serde_json::from_str::<TimeWindow>(r#"{"from":"08:00","to":"08:00"}"#).is_err());
    }
}
