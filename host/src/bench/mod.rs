//! Benchmarks: commands that print figures (never timed tests).
//!
//! - [`policy`]: `feegate bench policy` — ns per decision per policy kind, Wasm vs native,
//!   and hot-swap latency.
//! - [`payments`]: `feegate bench payments` — signed channel notifications per second,
//!   lost/doubled against the ledger, payment-to-reconnect latency.
//! - [`settle`]: `feegate bench settle` — one day's settlement at scale against a bare
//!   baseline.
//! - [`api`]: `feegate bench api` — balance queries over the HTTP API: requests/s and
//!   latency percentiles.

pub mod api;
pub mod payments;
pub mod policy;
pub mod settle;
