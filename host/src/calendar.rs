//! The county calendar: public holidays and declared extreme-weather days.
//!
//! Components never read a clock; the host gives them these facts as input. Public
//! holidays come from the county's policy set (the State Council's annual notice).

use crate::policy::bindings::CalendarFacts;
use crate::policy::convert::date_to_wit;
use crate::policy::set::CalendarFile;
use chrono::{Datelike, NaiveDate, Weekday};
use std::collections::BTreeSet;

/// Holidays and extreme-weather days of one county.
#[derive(Debug, Clone, Default)]
pub struct CountyCalendar {
    public_holidays: BTreeSet<NaiveDate>,
    extreme_weather: BTreeSet<NaiveDate>,
}

impl CountyCalendar {
    /// True when the calendar lists public holidays for `year`. A year it does not
    /// cover is unknown ground: the safety floor treats every day of it as protected
    /// until the county loads that year's State Council notice.
    pub fn covers(&self, year: i32) -> bool {
        self.public_holidays.iter().any(|d| d.year() == year)
    }
}

impl CountyCalendar {
    pub fn new(file: &CalendarFile) -> Self {
        Self {
            public_holidays: file.public_holidays.iter().copied().collect(),
            extreme_weather: file.extreme_weather_days.iter().copied().collect(),
        }
    }

    /// A statutory public holiday.
    pub fn is_public_holiday(&self, d: NaiveDate) -> bool {
        self.public_holidays.contains(&d)
    }

    /// Saturday or Sunday. Adjusted working weekends (调休) still count as weekends for
    /// the safety floor: the stricter reading protects the customer.
    pub fn is_weekend(d: NaiveDate) -> bool {
        matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// An extreme-weather alert is declared for the day.
    pub fn is_extreme_weather(&self, d: NaiveDate) -> bool {
        self.extreme_weather.contains(&d)
    }

    /// Declares an extreme-weather day (e.g. a typhoon warning) at run time.
    pub fn declare_extreme_weather(&mut self, d: NaiveDate) {
        self.extreme_weather.insert(d);
    }

    /// The facts handed to policy components for `d`.
    pub fn facts(&self, d: NaiveDate) -> CalendarFacts {
        CalendarFacts {
            today: date_to_wit(d),
            iso_weekday: d.weekday().number_from_monday() as u8,
            public_holiday: self.is_public_holiday(d),
            extreme_weather: self.is_extreme_weather(d),
        }
    }
}

/// Parses "HH:MM" into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("time {s:?} is not HH:MM"))?;
    let h: u32 = h
        .parse()
        .map_err(|_| format!("hour in {s:?} is not a number"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("minute in {s:?} is not a number"))?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("time {s:?} is out of range"));
    }
    Ok(h * 60 + m)
}

/// A daily window in minutes after midnight, `[from, to)`; wraps midnight when from > to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    pub from_min: u32,
    pub to_min: u32,
}

impl DailyWindow {
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.from_min <= self.to_min {
            (self.from_min..self.to_min).contains(&minute_of_day)
        } else {
            minute_of_day >= self.from_min || minute_of_day < self.to_min
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight() {
        let night = DailyWindow {
            from_min: 18 * 60,
            to_min: 8 * 60,
        };
        for (minute, inside) in [
            (0, true),
            (7 * 60 + 59, true),
            (8 * 60, false),
            (12 * 60, false),
            (17 * 60 + 59, false),
            (18 * 60, true),
            (23 * 60 + 59, true),
        ] {
            assert_eq!(night.contains(minute), inside, "minute {minute}");
        }
    }

    #[test]
    fn hhmm_parsing_names_the_problem() {
        assert_eq!(parse_hhmm("08:30"), Ok(510));
        assert!(parse_hhmm("8h30").unwrap_err().contains("HH:MM"));
        assert!(parse_hhmm("25:00").unwrap_err().contains("out of range"));
    }

    #[test]
    fn facts_for_spring_festival_2013() {
        let cal = CountyCalendar::new(&CalendarFile {
            public_holidays: vec![NaiveDate::from_ymd_opt(2013, 2, 11).unwrap()],
            extreme_weather_days: vec![],
        });
        let f = cal.facts(NaiveDate::from_ymd_opt(2013, 2, 11).unwrap());
        assert!(f.public_holiday);
        assert_eq!(f.iso_weekday, 1); // a Monday
        assert!(
            !cal.facts(NaiveDate::from_ymd_opt(2013, 2, 18).unwrap())
                .public_holiday
        );
    }
}
