//! The `feegate` binary allocates with jemalloc, and so does the SQLite it bundles
//! (`host/Cargo.toml`, `host/src/main.rs`; README "Settlement at scale": −23 to −30 % for
//! settlement and warnings on SQLite against glibc's `malloc`).
//!
//! SQLite is C and calls `malloc` itself, so a `#[global_allocator]` alone would not reach
//! it: jemalloc must be built unprefixed, defining `malloc`/`free` in the executable, which
//! then serve every caller in the process. An unprefixed jemalloc reads its options from
//! `MALLOC_CONF` (a prefixed build reads `_RJEM_MALLOC_CONF` and leaves SQLite on glibc), so
//! a binary that prints jemalloc's statistics when asked through `MALLOC_CONF` is one whose
//! `malloc` is jemalloc. Without this check a dependency or feature change could drop the
//! override, and the gain with it, silently.

mod common;

use std::process::Command;

/// `MALLOC_CONF=stats_print:true` makes an unprefixed jemalloc print its statistics when
/// the process exits; glibc's `malloc` and a prefixed jemalloc ignore the variable.
#[cfg(target_os = "linux")]
#[test]
fn the_feegate_binary_s_malloc_is_jemalloc_so_sqlite_allocates_with_it_too() {
    let out = Command::new(common::feegate_bin())
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("feegate runs");
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Begin jemalloc statistics"),
        "MALLOC_CONF was not read: this binary's malloc is not an unprefixed jemalloc (is \
         tikv-jemallocator's `unprefixed_malloc_on_supported_platforms` still on?). It printed:\n{printed}"
    );
}
