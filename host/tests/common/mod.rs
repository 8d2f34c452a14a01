//! Shared set-up for the host's integration tests: where the built components and the
//! shared data are, and a small simulated county.

#![allow(dead_code)]

use chrono::NaiveDate;
use feegate::demo::DemoOptions;
use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `make plugins` puts the components. Fails with what to do when they are missing.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("FEEGATE_COMPONENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/wasm32-wasip2/plugin"));
    assert!(
        dir.join("policy_tariff_step.wasm").exists(),
        "policy components not found in {}; run `make plugins` (or `make test`) first",
        dir.display()
    );
    dir
}

/// A built component by crate name, e.g. `hostile_policy`.
pub fn component(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}

/// `../shared/data/<file>`.
pub fn shared_data(file: &str) -> PathBuf {
    repo().join("../shared/data").join(file)
}

/// Demo options for a small county in tests.
pub fn small_county(meters: usize, days: u32, seed: u64) -> DemoOptions {
    DemoOptions {
        meters,
        days,
        start: NaiveDate::from_ymd_opt(2013, 1, 1).unwrap(),
        seed,
        db_url: None,
        data: shared_data("lcl_2013_daily_kwh_100hh.csv"),
        policy_set: repo().join("policies/xianyou"),
        components: components_dir(),
        meters_per_gateway: 8,
        read_timeout: std::time::Duration::from_millis(300),
        progress: false,
    }
}
