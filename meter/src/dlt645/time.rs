//! Dates and times as DL/T 645-2007 carries them: BCD fields, least significant field
//! first on the wire (seconds before minutes before hours …), two-digit years.
//!
//! The types keep the digits exactly as the meter sent them, valid calendar or not: a
//! relay command's all-zero deadline or a meter with a corrupted clock must still decode,
//! so the operator can see what was sent. [`MeterDateTime::to_naive`] and friends say
//! whether the digits form a real date. Two-digit years are read as 20YY; DL/T 645-2007
//! has no century field.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde::{Serialize, Serializer};

use super::bcd;
use super::error::Dlt645Error;

/// A meter date and time (local time of the meter, no time zone on the wire).
///
/// Layouts: `ss mm hh DD MM YY` (6 bytes: broadcast time 08H, relay-control validity
/// deadline) and `mm hh DD MM YY` (5 bytes, minute precision: freeze times such as
/// 0506xx01 "daily freeze time", written YYMMDDhhmm in the standard's tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeterDateTime {
    /// Full year, 2000 + YY.
    pub year: u16,
    /// Month digits as sent (1..=12 when valid).
    pub month: u8,
    /// Day digits as sent (1..=31 when valid).
    pub day: u8,
    /// Hour digits as sent (0..=23 when valid).
    pub hour: u8,
    /// Minute digits as sent (0..=59 when valid).
    pub minute: u8,
    /// Seconds; `None` for the 5-byte minute-precision layout.
    pub second: Option<u8>,
}

impl MeterDateTime {
    /// Decode `ss mm hh DD MM YY` (6 bytes, after the 33H offset was removed).
    pub fn from_wire_seconds(bytes: &[u8], field: &str) -> Result<Self, Dlt645Error> {
        let b = exact::<6>(bytes, field)?;
        Ok(Self {
            second: Some(bcd::byte(b[0], field)?),
            minute: bcd::byte(b[1], field)?,
            hour: bcd::byte(b[2], field)?,
            day: bcd::byte(b[3], field)?,
            month: bcd::byte(b[4], field)?,
            year: 2000 + u16::from(bcd::byte(b[5], field)?),
        })
    }

    /// Decode `mm hh DD MM YY` (5 bytes, minute precision).
    pub fn from_wire_minutes(bytes: &[u8], field: &str) -> Result<Self, Dlt645Error> {
        let b = exact::<5>(bytes, field)?;
        Ok(Self {
            second: None,
            minute: bcd::byte(b[0], field)?,
            hour: bcd::byte(b[1], field)?,
            day: bcd::byte(b[2], field)?,
            month: bcd::byte(b[3], field)?,
            year: 2000 + u16::from(bcd::byte(b[4], field)?),
        })
    }

    /// From a calendar date-time; the year must be 2000..=2099 (two BCD digits on the wire).
    pub fn from_naive(dt: NaiveDateTime) -> Result<Self, Dlt645Error> {
        let year = dt.year();
        if !(2000..=2099).contains(&year) {
            return Err(Dlt645Error::InvalidValue {
                field: "date/time".into(),
                reason: format!("year {year} is outside 2000..=2099 (two BCD digits on the wire)"),
            });
        }
        Ok(Self {
            year: year as u16,
            month: dt.month() as u8,
            day: dt.day() as u8,
            hour: dt.hour() as u8,
            minute: dt.minute() as u8,
            second: Some(dt.second() as u8),
        })
    }

    /// The calendar date-time, or `None` when the digits are not a real date/time
    /// (e.g. the all-zero deadline some masters send). Missing seconds read as 0.
    pub fn to_naive(&self) -> Option<NaiveDateTime> {
        let date = NaiveDate::from_ymd_opt(
            i32::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )?;
        let time = NaiveTime::from_hms_opt(
            u32::from(self.hour),
            u32::from(self.minute),
            u32::from(self.second.unwrap_or(0)),
        )?;
        Some(date.and_time(time))
    }

    /// Encode `ss mm hh DD MM YY` (before the 33H offset). Seconds default to 0.
    ///
    /// Fails when the digits are out of BCD range (a field above 99 or a year outside
    /// 2000..=2099); calendar validity is the caller's business.
    pub fn to_wire_seconds(&self, field: &str) -> Result<[u8; 6], Dlt645Error> {
        let yy = self.two_digit_year(field)?;
        let f = |v: u8| self.digits(v, field);
        Ok([
            f(self.second.unwrap_or(0))?,
            f(self.minute)?,
            f(self.hour)?,
            f(self.day)?,
            f(self.month)?,
            bcd::to_byte(yy),
        ])
    }

    fn two_digit_year(&self, field: &str) -> Result<u8, Dlt645Error> {
        if !(2000..=2099).contains(&self.year) {
            return Err(Dlt645Error::InvalidValue {
                field: field.into(),
                reason: format!("year {} is outside 2000..=2099", self.year),
            });
        }
        Ok((self.year - 2000) as u8)
    }

    fn digits(&self, v: u8, field: &str) -> Result<u8, Dlt645Error> {
        if v > 99 {
            return Err(Dlt645Error::InvalidValue {
                field: field.into(),
                reason: format!("{v} does not fit two BCD digits"),
            });
        }
        Ok(bcd::to_byte(v))
    }
}

impl fmt::Display for MeterDateTime {
    /// `YYYY-MM-DD hh:mm:ss`, or `YYYY-MM-DD hh:mm` for minute precision; digits as sent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )?;
        if let Some(s) = self.second {
            write!(f, ":{s:02}")?;
        }
        Ok(())
    }
}

impl Serialize for MeterDateTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The meter's date with weekday, DI 04000101, layout `WW DD MM YY` (YYMMDDWW in the
/// standard's table). Weekday 0 = Sunday, 1 = Monday … 6 = Saturday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct MeterDate {
    /// Full year, 2000 + YY.
    pub year: u16,
    /// Month digits as sent.
    pub month: u8,
    /// Day digits as sent.
    pub day: u8,
    /// Weekday as sent (0 = Sunday).
    pub weekday: u8,
}

impl MeterDate {
    /// Decode `WW DD MM YY` (after the 33H offset was removed).
    pub fn from_wire(bytes: &[u8], field: &str) -> Result<Self, Dlt645Error> {
        let b = exact::<4>(bytes, field)?;
        Ok(Self {
            weekday: bcd::byte(b[0], field)?,
            day: bcd::byte(b[1], field)?,
            month: bcd::byte(b[2], field)?,
            year: 2000 + u16::from(bcd::byte(b[3], field)?),
        })
    }

    /// The calendar date, or `None` when the digits are not a real date.
    pub fn to_naive(&self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(
            i32::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }

    /// Whether the weekday digit agrees with the calendar (meters do get this wrong).
    pub fn weekday_consistent(&self) -> bool {
        self.to_naive()
            .is_some_and(|d| d.weekday().num_days_from_sunday() == u32::from(self.weekday))
    }
}

impl fmt::Display for MeterDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The meter's time of day, DI 04000102, layout `ss mm hh` (hhmmss in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeterTime {
    /// Hour digits as sent.
    pub hour: u8,
    /// Minute digits as sent.
    pub minute: u8,
    /// Second digits as sent.
    pub second: u8,
}

impl MeterTime {
    /// Decode `ss mm hh` (after the 33H offset was removed).
    pub fn from_wire(bytes: &[u8], field: &str) -> Result<Self, Dlt645Error> {
        let b = exact::<3>(bytes, field)?;
        Ok(Self {
            second: bcd::byte(b[0], field)?,
            minute: bcd::byte(b[1], field)?,
            hour: bcd::byte(b[2], field)?,
        })
    }

    /// The time of day, or `None` when the digits are not a real time.
    pub fn to_naive(&self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(
            u32::from(self.hour),
            u32::from(self.minute),
            u32::from(self.second),
        )
    }
}

impl fmt::Display for MeterTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

impl Serialize for MeterTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn exact<const N: usize>(bytes: &[u8], field: &str) -> Result<[u8; N], Dlt645Error> {
    bytes.try_into().map_err(|_| Dlt645Error::LengthMismatch {
        field: field.to_owned(),
        expected: N.to_string(),
        found: bytes.len(),
    })
}
