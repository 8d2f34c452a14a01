//! The seeded customer behaviour model of the demo.
//!
//! Each simulated customer has a paying habit drawn once from the seed:
//!
//! | habit | share | reacts to |
//! |---|---|---|
//! | prompt | 55 % | tops up the day a low-balance SMS arrives; a third of them lapse into "late" after three top-ups |
//! | slow | 25 % | tops up 2–4 days after the first warning (often after the second alarm) |
//! | late | 15 % | ignores warnings; pays within a day of being disconnected |
//! | absent | 5 % | pays 5–10 days after being disconnected |
//!
//! Amounts are whole multiples of 50 yuan covering 10–25 days (prompt payers) or 20–60
//! days (the others) of the household's recent average charge; channels are drawn from the real ones (a bank transfer is
//! "in flight" for four hours before it settles). A customer told to press the meter
//! button after paying (合闸允许) presses it within three hours.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A customer's paying habit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Habit {
    Prompt,
    Slow,
    Late,
    Absent,
}

/// Everything drawn for one customer.
#[derive(Debug, Clone)]
pub struct Persona {
    pub name: String,
    pub mobile: String,
    /// Master-data mobile differs from the agreement's (opens a data-maintenance order).
    pub master_mobile_differs: bool,
    pub keep_power: bool,
    pub vulnerable: bool,
    pub habit: Habit,
    /// After this many top-ups the customer stops reacting to warnings and pays only
    /// once disconnected — by then the cutoff policy has moved them to automatic
    /// disconnection for their prepaying habit.
    pub lapses_after_topups: Option<u32>,
    /// Initial prepayment, fen.
    pub initial_prepayment_fen: i64,
    /// 预警值, fen.
    pub alarm_threshold_fen: i64,
}

const SURNAMES: &[&str] = &[
    "陈", "林", "黄", "郑", "王", "李", "张", "吴", "刘", "蔡", "杨", "许",
];
const GIVEN: &[&str] = &[
    "建华", "秀英", "志强", "美玲", "国平", "丽娟", "文斌", "淑珍", "永福", "春燕", "明辉", "玉兰",
];

/// The behaviour model: one seeded generator for personas, one for later choices.
pub struct Behaviour {
    rng: ChaCha8Rng,
}

/// The payment channels the demo draws from.
pub const CHANNELS: &[&str] = &["app", "alipay", "kiosk", "online-banking", "bank-transfer"];

impl Behaviour {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Draws customer `i`'s persona.
    pub fn persona(&mut self, i: usize) -> Persona {
        let habit = match self.rng.random_range(0..100) {
            0..55 => Habit::Prompt,
            55..80 => Habit::Slow,
            80..95 => Habit::Late,
            _ => Habit::Absent,
        };
        Persona {
            name: format!(
                "{}{}",
                SURNAMES[i % SURNAMES.len()],
                GIVEN[(i / SURNAMES.len() + i) % GIVEN.len()]
            ),
            mobile: format!("139{:08}", self.rng.random_range(0..100_000_000u32)),
            master_mobile_differs: self.rng.random_range(0..100) < 3,
            keep_power: self.rng.random_range(0..100) < 2,
            vulnerable: self.rng.random_range(0..100) < 2,
            habit,
            lapses_after_topups: (habit == Habit::Prompt && self.rng.random_range(0..3) == 0)
                .then_some(3),
            initial_prepayment_fen: [10_000, 15_000, 20_000][self.rng.random_range(0..3)],
            alarm_threshold_fen: 5_000,
        }
    }

    /// A top-up amount in fen: multiples of 50 yuan covering 10–25 days (prompt payers)
    /// or 20–60 days (the others) of `avg_daily_charge_fen`, at least 50 yuan.
    pub fn topup_fen(&mut self, habit: Habit, avg_daily_charge_fen: i64) -> i64 {
        let days = if habit == Habit::Prompt {
            self.rng.random_range(10..=25)
        } else {
            self.rng.random_range(20..=60)
        };
        let want = avg_daily_charge_fen.max(100) * days;
        ((want + 4_999) / 5_000).max(1) * 5_000
    }

    pub fn channel(&mut self) -> &'static str {
        CHANNELS[self.rng.random_range(0..CHANNELS.len())]
    }

    /// A time on `date` between `from_hour` and `to_hour` (exclusive), whole minutes.
    pub fn time_on(&mut self, date: NaiveDate, from_hour: u32, to_hour: u32) -> NaiveDateTime {
        let minute = self.rng.random_range(from_hour * 60..to_hour * 60);
        date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minute))
    }

    /// Days until the customer reacts, drawn from `lo..=hi`.
    pub fn days(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.random_range(lo..=hi)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_reproducible_from_its_seed() {
        let draw = |seed| {
            let mut b = Behaviour::new(seed);
            (0..50)
                .map(|i| {
                    let p = b.persona(i);
                    (p.habit, p.mobile, p.initial_prepayment_fen)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn topups_are_whole_fifty_yuan_and_cover_the_habit_s_days() {
        let mut b = Behaviour::new(1);
        for avg in [0, 100, 473, 1_999, 12_345] {
            for (habit, min_days) in [(Habit::Prompt, 10), (Habit::Slow, 20)] {
                let fen = b.topup_fen(habit, avg);
                assert_eq!(fen % 5_000, 0, "{fen}");
                assert!(
                    fen >= 5_000 && fen >= avg.max(100) * min_days,
                    "avg {avg} → {fen}"
                );
            }
        }
    }
}
