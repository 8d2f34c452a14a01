//! Reconnection at once (复电): a payment that lifts a disconnected account over its
//! reconnect line gets its relay command issued now, not at the next daily-job step.
//!
//! The writer hands each such account to [`Reconnector::request`]; a task per account
//! (at most [`MAX_CONCURRENT`] at a time, one at a time per account) runs
//! [`crate::job::Host::reconnect_now`]: the county's cutoff component picks the mode
//! (close-allowed, direct close, or call first), the relay command is created and
//! issued through the meter client, and verified by a status read. Reconnection is
//! never refused by the safety floor (the floor only ever stops trips); a failed policy
//! opens a call-first work order. If this process dies first, the daily job's
//! reconnect sweep picks the account up (relay open, balance in credit, no command).
//!
//! Latency, payment accepted (request received and authenticated) → relay command
//! sent and answered, is recorded per command for `feegate bench payments`.

use crate::job::Host;
use crate::payment::Reconnection;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Reconnections driven at the same time (each mostly waits on its meter).
pub const MAX_CONCURRENT: usize = 32;

/// Starts reconnections for accounts a payment lifted. Cheap to clone.
#[derive(Clone)]
pub struct Reconnector {
    host: Arc<Host>,
    limit: Arc<Semaphore>,
    in_progress: Arc<Mutex<HashSet<String>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Reconnector {
    pub fn new(host: Arc<Host>) -> Self {
        Self {
            host,
            limit: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            in_progress: Arc::default(),
            latencies: Arc::default(),
        }
    }

    /// Reconnects `account_id` in the background if it is due; `accepted` is when the
    /// payment was accepted.
    pub fn request(&self, account_id: &str, accepted: Instant) {
        if !self
            .in_progress
            .lock()
            .expect("reconnect set")
            .insert(account_id.to_string())
        {
            return; // already being reconnected; a second command would be a duplicate
        }
        let this = self.clone();
        let account = account_id.to_string();
        tokio::spawn(async move {
            let _permit = this.limit.acquire().await.expect("semaphore never closed");
            match this.host.reconnect_now(&account).await {
                Ok((Reconnection::Commanded(_), Some(report))) if report.issued > 0 => {
                    let latency = accepted.elapsed();
                    tracing::info!(
                        account,
                        latency_ms = latency.as_millis() as u64,
                        "reconnection command issued"
                    );
                    this.latencies.lock().expect("latencies").push(latency);
                }
                Ok((r, _)) => tracing::info!(account, outcome = ?r, "reconnection checked"),
                Err(e) => {
                    tracing::error!(account, error = %e, "reconnection failed; the daily job's sweep retries")
                }
            }
            this.in_progress
                .lock()
                .expect("reconnect set")
                .remove(&account);
        });
    }

    /// Accounts still being reconnected.
    pub fn busy(&self) -> usize {
        self.in_progress.lock().expect("reconnect set").len()
    }

    /// Payment-accepted → relay-command-issued latencies recorded so far.
    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies.lock().expect("latencies").clone()
    }
}
