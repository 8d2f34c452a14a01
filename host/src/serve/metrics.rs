//! Prometheus metrics of `feegate serve` (`GET /metrics`, text exposition format).
//!
//! | metric | type | labels | source |
//! |---|---|---|---|
//! | `feegate_job_duration_seconds` | histogram | county, job | each scheduled job run (`settlement` is the settlement stage alone) |
//! | `feegate_job_failures_total` | counter | county, job | scheduled runs that returned an error |
//! | `feegate_decisions_total` | counter | county, kind, outcome | the decision log, counted at scrape time (only rows added since the last scrape: the log is append-only and appended in id order, see `decision_log`) |
//! | `feegate_outbox_depth` | gauge | county | SMS queued and not yet sent, at scrape time |
//! | `feegate_relay_command_seconds` | histogram | county, command | created → confirmed, per confirmed relay command |
//! | `feegate_read_success_rate` | gauge | county, station | readings stored / meters due, for the latest morning run |
//!
//! Counts read from the database at scrape time are the same on every host sharing it;
//! aggregate them with `max`, not `sum`, when several hosts serve one database.

use crate::db::Db;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sqlx::Row;

/// The host's metrics registry (one per process, not global, so tests can run several).
pub struct Metrics {
    registry: Registry,
    pub job_duration: HistogramVec,
    pub job_failures: IntCounterVec,
    pub relay_command: HistogramVec,
    pub read_success_rate: prometheus::GaugeVec,
    decisions: IntCounterVec,
    /// The last `decision_id` counted into `decisions`; a scrape counts only rows after it
    /// (held across the query so concurrent scrapes never count a row twice).
    decisions_counted_to: tokio::sync::Mutex<i64>,
    outbox_depth: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "feegate_job_duration_seconds",
                "Duration of scheduled jobs, seconds.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ]),
            &["county", "job"],
        )
        .expect("metric definition");
        let job_failures = IntCounterVec::new(
            Opts::new(
                "feegate_job_failures_total",
                "Scheduled job runs that failed.",
            ),
            &["county", "job"],
        )
        .expect("metric definition");
        let relay_command = HistogramVec::new(
            HistogramOpts::new(
                "feegate_relay_command_seconds",
                "Relay command latency from creation to confirmation by a status read, seconds.",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 7200.0]),
            &["county", "command"],
        )
        .expect("metric definition");
        let read_success_rate = prometheus::GaugeVec::new(
            Opts::new(
                "feegate_read_success_rate",
                "Meters read / meters due, per supply station, latest morning run (0..1).",
            ),
            &["county", "station"],
        )
        .expect("metric definition");
        let decisions = IntCounterVec::new(
            Opts::new(
                "feegate_decisions_total",
                "Policy decisions in the decision log, by kind and outcome.",
            ),
            &["county", "kind", "outcome"],
        )
        .expect("metric definition");
        let outbox_depth = IntGaugeVec::new(
            Opts::new("feegate_outbox_depth", "SMS queued and not yet sent."),
            &["county"],
        )
        .expect("metric definition");
        for m in [
            Box::new(job_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(job_failures.clone()),
            Box::new(relay_command.clone()),
            Box::new(read_success_rate.clone()),
            Box::new(decisions.clone()),
            Box::new(outbox_depth.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            registry,
            job_duration,
            job_failures,
            relay_command,
            read_success_rate,
            decisions,
            decisions_counted_to: tokio::sync::Mutex::new(0),
            outbox_depth,
        }
    }

    /// Starts a county's counters and gauges at zero, so each series exists from the first
    /// scrape (a `rate()` or an alert on "failures > 0" needs the zero before the first one).
    pub fn start_series(&self, county: &str, jobs: &[&str]) {
        for job in jobs {
            self.job_failures.with_label_values(&[county, job]);
        }
        self.outbox_depth.with_label_values(&[county]).set(0);
    }

    /// Refreshes the database-derived metrics and renders everything as Prometheus text.
    pub async fn render(&self, db: &Db) -> Result<String, sqlx::Error> {
        {
            let mut counted_to = self.decisions_counted_to.lock().await;
            let rows = sqlx::query(
                "SELECT county, kind, outcome, CAST(COUNT(*) AS BIGINT), CAST(MAX(decision_id) AS BIGINT) FROM decisions
                 WHERE decision_id > $1 GROUP BY county, kind, outcome",
            )
            .bind(*counted_to)
            .fetch_all(&db.pool)
            .await?;
            let mut newest = *counted_to;
            for r in rows {
                let (county, kind, outcome): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                let n: i64 = r.try_get(3)?;
                newest = newest.max(r.try_get(4)?);
                self.decisions
                    .with_label_values(&[&county, &kind, &outcome])
                    .inc_by(n.max(0) as u64);
            }
            *counted_to = newest;
        }
        let rows = sqlx::query(
            "SELECT a.county, COUNT(*) FROM sms_outbox o JOIN accounts a ON a.account_id = o.account_id
             WHERE o.status = 'queued' GROUP BY a.county",
        )
        .fetch_all(&db.pool)
        .await?;
        // Counties with nothing queued read 0 (not absent).
        for m in self.outbox_depth.collect() {
            for metric in m.get_metric() {
                if let Some(l) = metric.get_label().first() {
                    self.outbox_depth.with_label_values(&[l.value()]).set(0);
                }
            }
        }
        for r in rows {
            let county: String = r.try_get(0)?;
            self.outbox_depth
                .with_label_values(&[&county])
                .set(r.try_get(1)?);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        Ok(String::from_utf8(out).expect("Prometheus text is UTF-8"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
