//! Host-side shapes of the policy contract, generated from `wit/policy.wit`.
//!
//! One module per world. The shared `feegate:policy/types` interface is generated once
//! (in [`tariff`]) and reused by the others, so a `Decimal` is one type everywhere.
//! Every input and output derives serde so it can be written to the decision log as
//! JSON and read back for replay.

#![allow(missing_docs, clippy::all)]

pub mod tariff {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tariff-policy",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub mod warning {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "warning-policy",
        with: { "feegate:policy/types": super::tariff::feegate::policy::types },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub mod notice {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notice-policy",
        with: { "feegate:policy/types": super::tariff::feegate::policy::types },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub mod cutoff {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cutoff-policy",
        with: { "feegate:policy/types": super::tariff::feegate::policy::types },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub use cutoff::exports::feegate::policy::cutoff::{
    CutoffAction, CutoffInput, CutoffOutput, ReconnectionInput, ReconnectionMode,
    ReconnectionOutput,
};
pub use notice::exports::feegate::policy::notice::{NoticeInput, NoticeKind, NoticeOutput};
pub use tariff::exports::feegate::policy::tariff::{ChargeLine, TariffInput, TariffOutput};
pub use tariff::feegate::policy::types::{
    Agreement, BandUsage, CalendarFacts, CustomerClass, Date, DayUsage, Decimal, LocalTime,
    PolicyError, RolloutStage, TouBand,
};
pub use warning::exports::feegate::policy::warning::{WarningAction, WarningInput, WarningOutput};
