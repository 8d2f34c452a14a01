//! Feegate host runtime: remote prepaid fee control (远程费控).
//!
//! Data flows one way, and each arrow is a table, so any step can be re-run after a
//! crash without doing its work twice:
//!
//! ```text
//! meters → collection → readings → settlement → ledger → warning/cutoff decisions
//!        → sms_outbox / work_orders / relay_commands → meters
//! ```
//!
//! Module map: [`collection`] reads meters; [`settlement`] prices consumption and posts
//! to the [`ledger`]; [`warning`] and [`cutoff`] ask the county's [`policy`] components
//! and apply the host's [`floor`] (safety floor); [`outbox`] delivers SMS through a gateway ([`sms`]: HTTP JSON with signed receipts, segment counting); [`relay`]
//! issues and verifies relay commands; [`payment`] takes money in and starts
//! reconnection; [`channels`] are the payment channels' notify endpoints, [`reconcile`]
//! matches their statements, [`autodebit`] asks the bank for 代扣; [`registry`] holds published policy versions and swaps them in hot;
//! [`audit`] verifies and replays the decision log; [`db`] owns storage; [`demo`] drives a simulated county.

pub mod accountview;
pub mod api;
pub mod audit;
pub mod auth;
pub mod autodebit;
pub mod bench;
pub mod calendar;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod collection;
pub mod config;
pub mod console;
pub mod county;
pub mod cutoff;
pub mod db;
pub mod decision_log;
pub mod demo;
pub mod fieldtools;
pub mod fixtures;
pub mod floor;
pub mod job;
pub mod lease;
pub mod ledger;
pub mod money;
pub mod onboarding;
pub mod outbox;
pub mod payment;
pub mod policy;
pub mod query;
pub mod readings;
pub mod reconcile;
pub mod registry;
pub mod relay;
pub mod replacement;
pub mod scaffold;
pub mod serve;
pub mod settlement;
pub mod shadow;
pub mod sms;
#[doc(hidden)]
pub mod testdb;
pub mod warning;
