//! Every knob of the host in one place, each with its default and the reason for it.

use std::time::Duration;

/// Limits on one run of a policy component. A component that hits any of them is
/// contained: its decision fails, the affected account is held and flagged, and nobody
/// is charged or cut off on its account.
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Fuel (≈ WebAssembly instructions) per decision. Default 100 million: the shipped
    /// components use well under 1 million per decision, so this only stops runaways.
    pub fuel_per_decision: u64,
    /// Linear memory a component instance may grow to, in bytes. Default 64 MiB; the
    /// shipped components need under 2 MiB.
    pub memory_bytes: usize,
    /// Wall-clock limit per decision, enforced by epoch interruption, in case fuel
    /// metering is too coarse for a pathological host call. Default 2 s.
    pub time_limit: Duration,
    /// Epoch ticker period. Default 10 ms (the time limit is rounded up to ticks).
    pub epoch_tick: Duration,
    /// Bytes of guest stdout and of guest stderr kept for the decision log (each).
    /// Writing more traps the guest. Default 4 KiB.
    pub guest_output_bytes: usize,
    /// Largest component accepted, in bytes. Default 16 MiB.
    pub max_component_bytes: usize,
    /// Longest reason code accepted, in characters. Default 64.
    pub max_reason_code_chars: usize,
    /// Longest explanation accepted, in characters. Default 2,000.
    pub max_explanation_chars: usize,
    /// Longest SMS body accepted from the notice component, in characters: a ceiling on
    /// the component's output. Default 300. The county's segment limit (policy set
    /// `[messages] max_segments`, counted per 3GPP TS 23.040) is applied after it.
    pub max_sms_chars: usize,
    /// Largest serialised output accepted from a component, in bytes. Default 64 KiB.
    pub max_output_bytes: usize,
    /// Component instances that may exist at once: the size of the engine's instance pool
    /// (wasmtime's pooling allocator, which reuses memory slots instead of mapping and
    /// unmapping fresh memory for every decision). A decision beyond waits for a slot; it
    /// never fails for want of one. Default 32. Each slot reserves address space; a slot
    /// that has run a decision keeps up to 4 MiB resident
    /// ([`crate::policy::engine::KEEP_RESIDENT_BYTES`]) to be reset in place, so the pool
    /// costs at most 32 × 4 MiB of memory, and only as many slots as ran at once.
    pub instance_slots: u32,
    /// The host's charge ceiling, yuan per kWh: a tariff decision that charges more than
    /// the period's kWh × this (rounded up to the fen) is not posted at settlement; the
    /// account is held and shows in `feegate holds list`
    /// ([`crate::settlement::over_ceiling`]). Central operations' guard against a county's
    /// component or parameters gone wrong, as the safety floor is for trips. A tariff
    /// version whose check decision ([`crate::county::probe`]) is over it is refused at
    /// `policy activate`/`rollback`, at load and by the running host's swap; `policy
    /// diff` counts candidate decisions over it. Default
    /// [`crate::settlement::MAX_PRICE_YUAN_PER_KWH`] (5 yuan/kWh); `feegate.toml`
    /// `[settlement] max_price_yuan_per_kwh`, and `FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH`
    /// for `serve` and the `policy` commands alike.
    pub max_price_yuan_per_kwh: rust_decimal::Decimal,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            fuel_per_decision: 100_000_000,
            memory_bytes: 64 << 20,
            time_limit: Duration::from_secs(2),
            epoch_tick: Duration::from_millis(10),
            guest_output_bytes: 4096,
            max_component_bytes: 16 << 20,
            max_reason_code_chars: 64,
            max_explanation_chars: 2000,
            max_sms_chars: 300,
            max_output_bytes: 64 << 10,
            instance_slots: 32,
            max_price_yuan_per_kwh: crate::settlement::MAX_PRICE_YUAN_PER_KWH,
        }
    }
}

impl PolicyLimits {
    /// The defaults, with the charge ceiling from `FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH`
    /// when it is set (the variable `feegate serve` reads for `[settlement]
    /// max_price_yuan_per_kwh`): the `policy` commands judge a version against the ceiling
    /// the hosts enforce.
    ///
    /// # Errors
    /// The variable is set but not a plain decimal over 0 and at most 100 (yuan/kWh).
    pub fn from_env() -> Result<Self, String> {
        const VAR: &str = "FEEGATE_SETTLEMENT__MAX_PRICE_YUAN_PER_KWH";
        let mut limits = Self::default();
        if let Ok(text) = std::env::var(VAR) {
            let max = crate::channels::plain_decimal(text.trim())
                .filter(|m| *m > rust_decimal::Decimal::ZERO && *m <= rust_decimal::Decimal::ONE_HUNDRED)
                .ok_or_else(|| {
                    format!("{VAR}={text:?}: the charge ceiling must be a plain decimal over 0 and at most 100 (yuan per kWh, e.g. 5.0000)")
                })?;
            limits.max_price_yuan_per_kwh = max;
        }
        Ok(limits)
    }
}

/// Knobs of reading validation and settlement.
#[derive(Debug, Clone)]
pub struct SettlementConfig {
    /// Most energy a low-voltage residential meter can plausibly register per day, kWh,
    /// before multipliers: a 60 A single-phase meter at 220 V for 24 h is 316.8 kWh.
    /// A larger delta is flagged "implausible" and not billed.
    pub max_daily_kwh: rust_decimal::Decimal,
    /// Register maximum in 0.01 kWh: DL/T 645 energy is XXXXXX.XX kWh, so the register
    /// wraps after 999999.99 kWh.
    pub register_max_centi_kwh: i64,
    /// Days of recent history given to the warning component.
    pub history_days: u32,
    /// Accounts settled (and assessed for warnings) per batch: one transaction each, read
    /// with a few range queries, decided on every core. Default
    /// [`crate::settlement::BATCH_ACCOUNTS`] (1,000); `feegate.toml` `[settlement]
    /// batch_accounts`, 1..=10,000. Smaller batches commit more often (a crash loses
    /// less work in flight), larger ones amortise more.
    pub batch_accounts: usize,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            max_daily_kwh: rust_decimal::Decimal::new(3168, 1),
            register_max_centi_kwh: 99_999_999,
            history_days: 30,
            batch_accounts: crate::settlement::BATCH_ACCOUNTS,
        }
    }
}

/// The host's own safety floor minimums. A county's policy set may widen them (see
/// [`crate::county::CountyFloor`]); nothing lowers them.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Protected hours every day: no trip from `night_from_hour`:00 to `night_to_hour`:00
    /// local time. Default 18 → 08: nobody is cut off in the evening or at night.
    pub night_from_hour: u32,
    pub night_to_hour: u32,
    /// The latest good reading must be at most this old when tripping, in hours.
    /// Default 36 h: today's 00:00 frozen reading, with margin.
    pub max_reading_age_hours: i64,
    /// The arrears / pre-disconnection notice must have been delivered at least this
    /// long before a trip, in hours. Default 12 h.
    pub min_notice_lead_hours: i64,
    /// Default daily trip cap per supply station when the county sets none.
    pub station_daily_cutoff_cap: u32,
    /// Default brake: no trips at a station whose read success rate today is below this
    /// (ratio 0..1), when the county sets none.
    pub min_station_read_success_rate: rust_decimal::Decimal,
}

impl Default for FloorConfig {
    fn default() -> Self {
        Self {
            night_from_hour: 18,
            night_to_hour: 8,
            max_reading_age_hours: 36,
            min_notice_lead_hours: 12,
            station_daily_cutoff_cap: 50,
            min_station_read_success_rate: rust_decimal::Decimal::new(80, 2),
        }
    }
}

/// Knobs of relay commands.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A relay command not confirmed by a fresh status read within this long (simulated
    /// or real time) is marked failed and reported. Default 2 h for trips and direct
    /// closes.
    pub confirm_deadline: chrono::Duration,
    /// Close-allowed waits for the customer to press the meter button; the command stays
    /// "awaiting customer" up to this long. Default 72 h.
    pub customer_press_deadline: chrono::Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            confirm_deadline: chrono::Duration::hours(2),
            customer_press_deadline: chrono::Duration::hours(72),
        }
    }
}

/// Knobs of the SMS outbox (the county's own message rules — quiet hours, once-a-day
/// kinds, the segment limit — are in its policy set, see [`crate::outbox::MessagesPolicy`]).
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Gateway submissions per message, over all delivery rounds, before it is given up
    /// and (for warnings) escalated to an offline follow-up. Default 5.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one. Default
    /// 5 min: a gateway blip clears, and the next host step retries.
    pub backoff_first: chrono::Duration,
    /// Longest wait between attempts. Default 2 h, so 5 attempts span about 4 h and a
    /// warning of the morning is escalated the same day.
    pub backoff_max: chrono::Duration,
    /// A message accepted by the gateway without a delivery receipt within this long
    /// counts as undelivered and is sent again (new round). Default 6 h: carriers'
    /// receipts come within minutes; a handset off for a night still leaves the day.
    pub receipt_timeout: chrono::Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_first: chrono::Duration::minutes(5),
            backoff_max: chrono::Duration::hours(2),
            receipt_timeout: chrono::Duration::hours(6),
        }
    }
}

impl OutboxConfig {
    /// Wait before the next attempt after `attempts` attempts (≥ 1): `backoff_first ×
    /// 2^(attempts−1)`, at most `backoff_max`.
    pub fn backoff(&self, attempts: u32) -> chrono::Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        (self.backoff_first * 2i32.pow(doublings)).min(self.backoff_max)
    }
}

/// All host knobs.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    pub policy: PolicyLimits,
    pub settlement: SettlementConfig,
    pub floor: FloorConfig,
    pub relay: RelayConfig,
    pub outbox: OutboxConfig,
}
