//! Time. The host never reads the system clock directly: every component of the job
//! asks a [`Clock`], which is the system clock in production and a simulated clock in
//! the demo and tests (so 90 days run in seconds and every run is reproducible).
//! Times are county local (China Standard Time for Fujian), without time zone.

use chrono::{FixedOffset, NaiveDateTime, Utc};
use std::sync::Mutex;

/// Source of the county's local time.
pub trait Clock: Send + Sync {
    fn now(&self) -> NaiveDateTime;
}

/// The real clock at a fixed UTC offset (China has no daylight saving).
#[derive(Debug, Clone)]
pub struct SystemClock {
    pub offset: FixedOffset,
}

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        Utc::now().with_timezone(&self.offset).naive_local()
    }
}

/// The real clock moved by a fixed amount: county local time is the system time at
/// `offset` plus `shift`. It runs at real speed, and a process restarted with the same shift
/// continues where the last one was (time never jumps back), which a simulated clock
/// cannot do across processes. For rehearsals and crash tests that must run on a
/// particular business day — a weekday morning inside the safety floor's working
/// hours, a year the county calendar covers — with real processes (`feegate serve`'s
/// `[clock] shift_seconds`). Never shift a production host: trips would be judged
/// against the wrong hour.
#[derive(Debug, Clone)]
pub struct ShiftedClock {
    pub system: SystemClock,
    pub shift: chrono::Duration,
}

impl Clock for ShiftedClock {
    fn now(&self) -> NaiveDateTime {
        self.system.now() + self.shift
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct SimClock {
    now: Mutex<NaiveDateTime>,
}

impl SimClock {
    pub fn new(start: NaiveDateTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `t`; time never goes backwards.
    pub fn set(&self, t: NaiveDateTime) {
        let mut now = self.now.lock().expect("clock lock");
        assert!(
            t >= *now,
            "simulated time must not go backwards ({t} < {now})"
        );
        *now = t;
    }
}

impl Clock for SimClock {
    fn now(&self) -> NaiveDateTime {
        *self.now.lock().expect("clock lock")
    }
}
