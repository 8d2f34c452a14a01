//! An impure tariff component: its charge depends on the wall clock and on a
//! randomly seeded HashMap, so it imports `wasi:clocks` and `wasi:random`. The host must
//! refuse to load it. Test fixture only.

wit_bindgen::generate!({ path: "../../wit", world: "tariff-policy" });

use exports::feegate::policy::tariff::{Guest, TariffInput, TariffOutput};
use feegate::policy::types::PolicyError;
use std::collections::HashMap;

struct Impure;

impl Guest for Impure {
    fn price(input: TariffInput) -> Result<TariffOutput, PolicyError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut seen = HashMap::new();
        seen.insert(input.account_id.clone(), now);
        Ok(TariffOutput {
            lines: vec![],
            charge_fen: (now % 100) as i64 + seen.len() as i64,
            reason_code: "impure".into(),
            explanation: "depends on the clock".into(),
        })
    }
}

export!(Impure);
