//! What the host accepts from a component: the contract versions it can call and the
//! imports it may link.
//!
//! A policy is a pure function of its input. A Rust guest built for `wasm32-wasip2`
//! imports `wasi:cli` and `wasi:io` through std even when it uses neither; those are
//! linked to a deny-all context (no arguments, no environment, closed stdin, captured
//! and bounded stdout/stderr). Anything that could make a decision depend on the world
//! outside its input — clocks, randomness, files, sockets — is refused at load.

use super::PolicyKind;

/// Contract versions the host can call, per `package feegate:policy@X.Y.Z`. A component
/// built against any of these exports e.g. `feegate:policy/tariff@1.0.0`. 1.1.0 only
/// added (the optional `tariff-batch` interface), so the host calls a 1.0.0 component
/// through the same bindings: wasmtime finds `tariff@1.0.0` when asked for `tariff@1.1.0`
/// (semver-compatible export lookup).
pub const SUPPORTED_CONTRACT: &[&str] = &["1.0.0", "1.1.0"];

/// Import prefixes a component may have (the deterministic WASI subset). Versions
/// after `@` are not restricted: any wasi 0.2.x is fine.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-input@",
    "wasi:cli/terminal-output@",
    "wasi:cli/terminal-stdin@",
    "wasi:cli/terminal-stdout@",
    "wasi:cli/terminal-stderr@",
    "wasi:io/error@",
    "wasi:io/streams@",
    "wasi:io/poll@",
    // The contract's own types-only interface, imported by every world that uses it.
    "feegate:policy/types@",
];

/// Why an import is refused, in words an engineer can act on.
pub fn refused_import_reason(import: &str) -> Option<&'static str> {
    if ALLOWED_IMPORTS.iter().any(|p| import.starts_with(p)) {
        return None;
    }
    Some(if import.starts_with("wasi:clocks/") {
        "reads a clock; time must come from the input (now, calendar)"
    } else if import.starts_with("wasi:random/") {
        "reads randomness (often a HashMap's RandomState; use BTreeMap)"
    } else if import.starts_with("wasi:filesystem/") {
        "opens files; parameters come from the policy set"
    } else if import.starts_with("wasi:sockets/") || import.starts_with("wasi:http/") {
        "uses the network"
    } else {
        "is outside the deterministic WASI subset policies may import"
    })
}

/// Checks an export name such as `feegate:policy/tariff@1.0.0` against the kind's
/// interface; returns the version when it is the kind's interface.
pub fn export_version(kind: PolicyKind, export: &str) -> Option<&str> {
    export
        .strip_prefix(kind.interface())
        .and_then(|rest| rest.strip_prefix('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_admits_cli_and_io_only() {
        let table = [
            ("wasi:cli/environment@0.2.3", true),
            ("wasi:cli/stderr@0.2.0", true),
            ("wasi:io/streams@0.2.3", true),
            ("feegate:policy/types@1.0.0", true),
            ("feegate:policy/types@1.1.0", true),
            ("wasi:clocks/wall-clock@0.2.3", false),
            ("wasi:clocks/monotonic-clock@0.2.3", false),
            ("wasi:random/random@0.2.3", false),
            ("wasi:random/insecure-seed@0.2.3", false),
            ("wasi:filesystem/preopens@0.2.3", false),
            ("wasi:sockets/tcp@0.2.3", false),
            ("wasi:http/outgoing-handler@0.2.3", false),
            ("evil:backdoor/x", false),
        ];
        for (import, allowed) in table {
            assert_eq!(refused_import_reason(import).is_none(), allowed, "{import}");
        }
    }

    #[test]
    fn export_version_matches_kind() {
        assert_eq!(
            export_version(PolicyKind::Tariff, "feegate:policy/tariff@1.0.0"),
            Some("1.0.0")
        );
        assert_eq!(
            export_version(PolicyKind::Warning, "feegate:policy/tariff@1.0.0"),
            None
        );
        assert_eq!(
            export_version(PolicyKind::Tariff, "feegate:policy/tariffs@1.0.0"),
            None
        );
    }
}
