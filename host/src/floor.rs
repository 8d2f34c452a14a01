//! The safety floor: the host refuses a trip, whatever a policy says, when any of these
//! holds (ARCHITECTURE.md, "The safety floor"):
//!
//! - keep-power (保电) or a vulnerable-customer registration;
//! - a protected window: the host's night hours (18:00–08:00) or the county's wider
//!   ones, weekends, public holidays, declared extreme weather;
//! - the latest reading is stale, or the balance is estimated;
//! - a payment is in flight;
//! - the arrears notice was not delivered (a delivered receipt), nor an offline
//!   follow-up recorded done by a person, or the earlier of the two is too recent;
//! - an automatic trip for a customer whose agreement's mobile number does not match the
//!   master data (an open data-maintenance work order holds automatic disconnection;
//!   a trip a person approved goes ahead — the approval work order shows the mismatch);
//! - brakes: the station's read success rate today is below the minimum, a payment
//!   channel is down, or the station's daily cutoff cap is reached.
//!
//! A policy may be stricter than the floor, never looser: the floor is applied after
//! the policy's decision and only ever turns a trip into "no trip".

use crate::calendar::{CountyCalendar, DailyWindow, parse_hhmm};
use crate::config::FloorConfig;
use crate::policy::set::CountyFloorFile;
use chrono::{Datelike, NaiveDateTime, Timelike};
use rust_decimal::Decimal;
use serde::Serialize;

/// Everything the floor looks at for one account at one moment.
#[derive(Debug, Clone)]
pub struct FloorFacts {
    /// County local time of the intended trip.
    pub now: NaiveDateTime,
    pub keep_power: bool,
    pub vulnerable: bool,
    /// When the latest good reading was frozen (00:00 of its date); none if never read.
    pub latest_reading_at: Option<NaiveDateTime>,
    /// The balance rests on an estimate (e.g. a held settlement), not on readings.
    pub balance_estimated: bool,
    pub payment_in_flight: bool,
    /// When the arrears / pre-disconnection notice was delivered (receipt time).
    pub notice_delivered_at: Option<NaiveDateTime>,
    /// When a person recorded the offline follow-up of this arrears episode done.
    pub follow_up_done_at: Option<NaiveDateTime>,
    /// The trip comes from a policy decision (automatic), not a person's approval.
    pub automatic: bool,
    /// Open data-maintenance work order of a mobile-number mismatch, if any.
    pub mobile_mismatch_work_order: Option<i64>,
    /// Read success rate of the account's supply station today (0..1); none if no reads
    /// were due.
    pub station_read_success_rate: Option<Decimal>,
    pub payment_channel_down: bool,
    /// Trips already issued at the account's station today.
    pub station_trips_today: u32,
}

/// One reason the floor refuses a trip. Serialised into work orders and the decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "refusal", rename_all = "kebab-case")]
pub enum FloorRefusal {
    KeepPower,
    VulnerableCustomer,
    ProtectedHours {
        window: String,
    },
    Weekend,
    PublicHoliday,
    ExtremeWeather,
    StaleReading {
        latest: Option<String>,
        max_age_hours: i64,
    },
    EstimatedBalance,
    PaymentInFlight,
    NoticeNotDelivered,
    /// Automatic disconnection is held until the mobile-number mismatch is resolved
    /// (`feegate mobile resolve`).
    MobileMismatch {
        work_order_id: i64,
    },
    NoticeTooRecent {
        delivered: String,
        min_lead_hours: i64,
    },
    ReadSuccessBrake {
        rate: String,
        minimum: String,
    },
    PaymentChannelDown,
    StationCapReached {
        cap: u32,
    },
    /// The county calendar lists no public holidays for this year: holidays unknown,
    /// so every day of it is protected until the county loads the year's notice.
    CalendarNotCovered {
        year: i32,
    },
}

impl FloorRefusal {
    /// True for refusals that will not pass with time (keep-power, a vulnerable
    /// customer): a disconnection request meeting one is closed, not retried daily.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::KeepPower | Self::VulnerableCustomer)
    }

    /// True for the refusals that make a moment a protected window (as opposed to
    /// account-specific refusals).
    pub fn is_protected_window(&self) -> bool {
        matches!(
            self,
            Self::ProtectedHours { .. }
                | Self::Weekend
                | Self::PublicHoliday
                | Self::ExtremeWeather
                | Self::CalendarNotCovered { .. }
        )
    }
}

/// The floor for one county: host minimums widened by the county's additions.
#[derive(Debug, Clone)]
pub struct SafetyFloor {
    host: FloorConfig,
    /// Protected daily windows: the host's night plus any county window.
    windows: Vec<(DailyWindow, String)>,
    station_cap: u32,
    min_read_rate: Decimal,
    calendar: CountyCalendar,
}

impl SafetyFloor {
    /// Combines the host floor with a county's additions. A county value can only
    /// widen protection: a smaller cap or a higher read-rate minimum is taken; a larger
    /// cap or lower minimum than the host's is ignored.
    pub fn new(
        host: FloorConfig,
        county: &CountyFloorFile,
        calendar: CountyCalendar,
    ) -> Result<Self, String> {
        let mut windows = vec![(
            DailyWindow {
                from_min: host.night_from_hour * 60,
                to_min: host.night_to_hour * 60,
            },
            format!(
                "{:02}:00-{:02}:00",
                host.night_from_hour, host.night_to_hour
            ),
        )];
        if let Some(w) = &county.protected_hours {
            windows.push((
                DailyWindow {
                    from_min: parse_hhmm(&w.from)?,
                    to_min: parse_hhmm(&w.to)?,
                },
                format!("{}-{}", w.from, w.to),
            ));
        }
        let station_cap = county
            .station_daily_cutoff_cap
            .map_or(host.station_daily_cutoff_cap, |c| {
                c.min(host.station_daily_cutoff_cap)
            });
        let min_read_rate = county
            .min_station_read_success_rate
            .map_or(host.min_station_read_success_rate, |r| {
                r.max(host.min_station_read_success_rate)
            });
        Ok(Self {
            host,
            windows,
            station_cap,
            min_read_rate,
            calendar,
        })
    }

    pub fn calendar(&self) -> &CountyCalendar {
        &self.calendar
    }

    /// The protected-window refusals that apply at `t` (empty = not protected).
    pub fn protected_at(&self, t: NaiveDateTime) -> Vec<FloorRefusal> {
        let mut out = Vec::new();
        let minute = t.hour() * 60 + t.minute();
        if let Some((_, label)) = self.windows.iter().find(|(w, _)| w.contains(minute)) {
            out.push(FloorRefusal::ProtectedHours {
                window: label.clone(),
            });
        }
        let d = t.date();
        // Weekends and public holidays are always protected by the host.
        if CountyCalendar::is_weekend(d) {
            out.push(FloorRefusal::Weekend);
        }
        if self.calendar.is_public_holiday(d) {
            out.push(FloorRefusal::PublicHoliday);
        }
        if self.calendar.is_extreme_weather(d) {
            out.push(FloorRefusal::ExtremeWeather);
        }
        if !self.calendar.covers(d.year()) {
            out.push(FloorRefusal::CalendarNotCovered { year: d.year() });
        }
        out
    }

    /// Every reason to refuse a trip now; empty means the floor allows it.
    pub fn check(&self, f: &FloorFacts) -> Vec<FloorRefusal> {
        let mut out = Vec::new();
        if f.keep_power {
            out.push(FloorRefusal::KeepPower);
        }
        if f.vulnerable {
            out.push(FloorRefusal::VulnerableCustomer);
        }
        out.extend(self.protected_at(f.now));
        let max_age = chrono::Duration::hours(self.host.max_reading_age_hours);
        if f.latest_reading_at.is_none_or(|r| f.now - r > max_age) {
            out.push(FloorRefusal::StaleReading {
                latest: f.latest_reading_at.map(|t| t.to_string()),
                max_age_hours: self.host.max_reading_age_hours,
            });
        }
        if f.balance_estimated {
            out.push(FloorRefusal::EstimatedBalance);
        }
        if f.payment_in_flight {
            out.push(FloorRefusal::PaymentInFlight);
        }
        if f.automatic
            && let Some(work_order_id) = f.mobile_mismatch_work_order
        {
            out.push(FloorRefusal::MobileMismatch { work_order_id });
        }
        // A delivered SMS or a follow-up a person recorded, whichever came first.
        let notified = match (f.notice_delivered_at, f.follow_up_done_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match notified {
            None => out.push(FloorRefusal::NoticeNotDelivered),
            Some(at) if f.now - at < chrono::Duration::hours(self.host.min_notice_lead_hours) => {
                out.push(FloorRefusal::NoticeTooRecent {
                    delivered: at.to_string(),
                    min_lead_hours: self.host.min_notice_lead_hours,
                })
            }
            Some(_) => {}
        }
        if let Some(rate) = f.station_read_success_rate
            && rate < self.min_read_rate
        {
            out.push(FloorRefusal::ReadSuccessBrake {
                rate: rate.round_dp(4).to_string(),
                minimum: self.min_read_rate.to_string(),
            });
        }
        if f.payment_channel_down {
            out.push(FloorRefusal::PaymentChannelDown);
        }
        if f.station_trips_today >= self.station_cap {
            out.push(FloorRefusal::StationCapReached {
                cap: self.station_cap,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::set::{CalendarFile, HourWindow};
    use chrono::NaiveDate;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn floor() -> SafetyFloor {
        let cal = CountyCalendar::new(&CalendarFile {
            public_holidays: vec![NaiveDate::from_ymd_opt(2013, 4, 4).unwrap()],
            extreme_weather_days: vec![NaiveDate::from_ymd_opt(2013, 7, 12).unwrap()],
        });
        let county = CountyFloorFile {
            protected_hours: Some(HourWindow {
                from: "17:00".into(),
                to: "08:30".into(),
            }),
            no_cutoff_on_weekends: true,
            no_cutoff_on_public_holidays: true,
            station_daily_cutoff_cap: Some(10),
            min_station_read_success_rate: Some(Decimal::new(90, 2)),
        };
        SafetyFloor::new(FloorConfig::default(), &county, cal).unwrap()
    }

    /// An account the floor allows to be tripped on Tuesday 2013-01-08 at 10:00.
    fn allowed() -> FloorFacts {
        FloorFacts {
            now: t("2013-01-08 10:00"),
            keep_power: false,
            vulnerable: false,
            latest_reading_at: Some(t("2013-01-08 00:00")),
            balance_estimated: false,
            payment_in_flight: false,
            notice_delivered_at: Some(t("2013-01-07 08:01")),
            follow_up_done_at: None,
            automatic: true,
            mobile_mismatch_work_order: None,
            station_read_success_rate: Some(Decimal::new(95, 2)),
            payment_channel_down: false,
            station_trips_today: 0,
        }
    }

    #[test]
    fn a_clean_weekday_morning_trip_is_allowed() {
        assert_eq!(floor().check(&allowed()), vec![]);
    }

    #[test]
    fn each_floor_rule_refuses_a_trip_the_policy_asked_for() {
        type Case = (&'static str, fn(&mut FloorFacts), FloorRefusal);
        let cases: Vec<Case> = vec![
            (
                "keep-power",
                |f| f.keep_power = true,
                FloorRefusal::KeepPower,
            ),
            (
                "vulnerable",
                |f| f.vulnerable = true,
                FloorRefusal::VulnerableCustomer,
            ),
            (
                "host night",
                |f| f.now = t("2013-01-08 07:59"),
                FloorRefusal::ProtectedHours {
                    window: "18:00-08:00".into(),
                },
            ),
            (
                "county evening",
                |f| f.now = t("2013-01-08 17:30"),
                FloorRefusal::ProtectedHours {
                    window: "17:00-08:30".into(),
                },
            ),
            (
                "county morning",
                |f| f.now = t("2013-01-08 08:15"),
                FloorRefusal::ProtectedHours {
                    window: "17:00-08:30".into(),
                },
            ),
            (
                "saturday",
                |f| f.now = t("2013-01-12 10:00"),
                FloorRefusal::Weekend,
            ),
            (
                "qingming",
                |f| f.now = t("2013-04-04 10:00"),
                FloorRefusal::PublicHoliday,
            ),
            (
                "typhoon",
                |f| f.now = t("2013-07-12 10:00"),
                FloorRefusal::ExtremeWeather,
            ),
            (
                "stale",
                |f| f.latest_reading_at = Some(t("2013-01-06 00:00")),
                FloorRefusal::StaleReading {
                    latest: Some("2013-01-06 00:00:00".into()),
                    max_age_hours: 36,
                },
            ),
            (
                "never read",
                |f| f.latest_reading_at = None,
                FloorRefusal::StaleReading {
                    latest: None,
                    max_age_hours: 36,
                },
            ),
            (
                "estimated",
                |f| f.balance_estimated = true,
                FloorRefusal::EstimatedBalance,
            ),
            (
                "payment in flight",
                |f| f.payment_in_flight = true,
                FloorRefusal::PaymentInFlight,
            ),
            (
                "no notice",
                |f| f.notice_delivered_at = None,
                FloorRefusal::NoticeNotDelivered,
            ),
            (
                "notice too recent",
                |f| f.notice_delivered_at = Some(t("2013-01-08 08:45")),
                FloorRefusal::NoticeTooRecent {
                    delivered: "2013-01-08 08:45:00".into(),
                    min_lead_hours: 12,
                },
            ),
            (
                "notice not delivered, follow-up too recent",
                |f| {
                    f.notice_delivered_at = None;
                    f.follow_up_done_at = Some(t("2013-01-08 09:30"));
                },
                FloorRefusal::NoticeTooRecent {
                    delivered: "2013-01-08 09:30:00".into(),
                    min_lead_hours: 12,
                },
            ),
            (
                "automatic trip, mobile mismatch",
                |f| f.mobile_mismatch_work_order = Some(7),
                FloorRefusal::MobileMismatch { work_order_id: 7 },
            ),
            (
                "read brake",
                |f| f.station_read_success_rate = Some(Decimal::new(85, 2)),
                FloorRefusal::ReadSuccessBrake {
                    rate: "0.85".into(),
                    minimum: "0.90".into(),
                },
            ),
            (
                "channel down",
                |f| f.payment_channel_down = true,
                FloorRefusal::PaymentChannelDown,
            ),
            (
                "station cap",
                |f| f.station_trips_today = 10,
                FloorRefusal::StationCapReached { cap: 10 },
            ),
        ];
        let floor = floor();
        for (name, mutate, expected) in cases {
            let mut facts = allowed();
            mutate(&mut facts);
            let refusals = floor.check(&facts);
            assert!(
                refusals.contains(&expected),
                "{name}: expected {expected:?} in {refusals:?}"
            );
        }
    }

    #[test]
    fn a_follow_up_done_by_a_person_stands_in_for_an_undelivered_notice() {
        let mut f = allowed();
        f.notice_delivered_at = None;
        f.follow_up_done_at = Some(t("2013-01-07 15:00"));
        assert_eq!(floor().check(&f), vec![]);
    }

    #[test]
    fn a_mobile_mismatch_holds_only_automatic_trips() {
        let mut f = allowed();
        f.mobile_mismatch_work_order = Some(3);
        f.automatic = false; // a person approved this trip, seeing the mismatch
        assert_eq!(floor().check(&f), vec![]);
        f.automatic = true;
        assert_eq!(
            floor().check(&f),
            vec![FloorRefusal::MobileMismatch { work_order_id: 3 }]
        );
    }

    #[test]
    fn a_year_the_holiday_calendar_does_not_cover_is_protected() {
        let mut f = allowed();
        f.now = t("2014-01-31 10:00"); // Spring Festival 2014, absent from a 2013 calendar
        f.latest_reading_at = Some(t("2014-01-31 00:00"));
        f.notice_delivered_at = Some(t("2014-01-30 08:00"));
        let refusals = floor().check(&f);
        assert_eq!(
            refusals,
            vec![FloorRefusal::CalendarNotCovered { year: 2014 }]
        );
        assert!(refusals[0].is_protected_window());
    }

    #[test]
    fn a_county_cannot_loosen_the_host_floor() {
        let county = CountyFloorFile {
            protected_hours: Some(HourWindow {
                from: "23:00".into(),
                to: "05:00".into(),
            }),
            station_daily_cutoff_cap: Some(10_000),
            min_station_read_success_rate: Some(Decimal::ZERO),
            ..Default::default()
        };
        let floor =
            SafetyFloor::new(FloorConfig::default(), &county, CountyCalendar::default()).unwrap();
        let mut f = allowed();
        f.now = t("2013-01-08 19:00"); // inside the host night even though the county's is narrower
        assert!(
            floor
                .check(&f)
                .iter()
                .any(FloorRefusal::is_protected_window)
        );
        let mut f = allowed();
        f.station_trips_today = 50; // host cap 50 stands
        assert!(
            floor
                .check(&f)
                .contains(&FloorRefusal::StationCapReached { cap: 50 })
        );
        let mut f = allowed();
        f.station_read_success_rate = Some(Decimal::new(79, 2)); // host minimum 0.80 stands
        assert!(
            floor
                .check(&f)
                .iter()
                .any(|r| matches!(r, FloorRefusal::ReadSuccessBrake { .. }))
        );
    }
}
