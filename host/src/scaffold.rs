//! `feegate policy new --kind K NAME [--dir plugins]`: scaffolds a policy plugin crate
//! that builds for wasm32-wasip2 and passes its own example fixtures.
//!
//! The crate is `DIR/NAME/` with package `policy-NAME` (component
//! `policy_NAME.wasm`, as for the shipped plugins):
//!
//! - `Cargo.toml`: depends on `feegate-policy-sdk` by path;
//! - `src/lib.rs`: the kind's world with simple, commented example logic, the export,
//!   and a native unit test;
//! - `fixtures/example.json`: example cases in the format `feegate policy test` reads
//!   ([`crate::fixtures`]).
//!
//! The templates are files in `host/templates/policy-new/` (see its README), compiled in
//! with `include_str!`; placeholders are replaced as plain text. Paths to
//! `plugins/policy-sdk` and `wit/` are relative when the crate is inside the Feegate
//! repository and absolute otherwise.

use crate::policy::PolicyKind;
use std::path::{Path, PathBuf};
use thiserror::Error;

const CARGO_TOML: &str = include_str!("../templates/policy-new/Cargo.toml.tmpl");

/// `(src/lib.rs, fixtures/example.json)` templates of a kind.
fn templates(kind: PolicyKind) -> (&'static str, &'static str) {
    match kind {
        PolicyKind::Tariff => (
            include_str!("../templates/policy-new/tariff/lib.rs.tmpl"),
            include_str!("../templates/policy-new/tariff/fixtures.json.tmpl"),
        ),
        PolicyKind::Warning => (
            include_str!("../templates/policy-new/warning/lib.rs.tmpl"),
            include_str!("../templates/policy-new/warning/fixtures.json.tmpl"),
        ),
        PolicyKind::Notice => (
            include_str!("../templates/policy-new/notice/lib.rs.tmpl"),
            include_str!("../templates/policy-new/notice/fixtures.json.tmpl"),
        ),
        PolicyKind::Cutoff => (
            include_str!("../templates/policy-new/cutoff/lib.rs.tmpl"),
            include_str!("../templates/policy-new/cutoff/fixtures.json.tmpl"),
        ),
    }
}

/// Why a scaffold was refused. Nothing is written in any of these cases.
#[derive(Debug, Error)]
pub enum ScaffoldError {
    #[error(
        "{name:?} is not a usable plugin name: {why}; use 2-40 lowercase letters, digits and single hyphens, starting with a letter (e.g. tariff-flat)"
    )]
    BadName { name: String, why: &'static str },
    #[error(
        "{0} already exists; `policy new` never overwrites: choose another name or move it away"
    )]
    Exists(PathBuf),
    #[error(
        "cannot find the Feegate repository (wit/policy.wit and plugins/policy-sdk/) above {0}; give it with --repo PATH"
    )]
    NoRepo(PathBuf),
    #[error("cannot write {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// A scaffolded crate.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The crate directory.
    pub dir: PathBuf,
    /// `policy-NAME`.
    pub package: String,
    /// `policy_NAME.wasm`, as cargo names the built component.
    pub component_file: String,
    /// The repository whose `plugins/policy-sdk` and `wit/` the crate uses.
    pub repo: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
}

/// Checks a plugin name: 2–40 characters, lowercase ASCII letters, digits and single
/// hyphens, starting with a letter, not ending with a hyphen, not `policy-…` (the
/// package gets that prefix) and not `policy-sdk`.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let bad = |why| {
        Err(ScaffoldError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if !(2..=40).contains(&name.len()) {
        return bad("it must be 2 to 40 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("it may contain only lowercase ASCII letters, digits and '-'");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return bad("it must start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("hyphens must sit between letters or digits");
    }
    if name.starts_with("policy-") || name == "sdk" {
        return bad(
            "the package is named policy-NAME already (give tariff-flat, not policy-tariff-flat)",
        );
    }
    Ok(())
}

/// The nearest ancestor of `start` (itself included) that holds `wit/policy.wit` and
/// `plugins/policy-sdk/Cargo.toml`.
pub fn find_repo(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| {
            d.join("wit/policy.wit").is_file() && d.join("plugins/policy-sdk/Cargo.toml").is_file()
        })
        .map(Path::to_path_buf)
}

/// `target` as seen from `from` (both absolute): relative when `from` is inside
/// `root` and `target` is too, else `target` itself.
fn path_from(from: &Path, root: &Path, target: &Path) -> String {
    let path = match (from.strip_prefix(root), target.strip_prefix(root)) {
        (Ok(inside), Ok(rest)) => {
            let mut p = PathBuf::new();
            for _ in inside.components() {
                p.push("..");
            }
            p.join(rest)
        }
        _ => target.to_path_buf(),
    };
    // Both a TOML and a Rust string literal: forward slashes, quotes escaped.
    path.to_string_lossy()
        .replace('\\', "/")
        .replace('"', "\\\"")
}

/// Replaces every `{{key}}` of `vars` in `template`.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// Scaffolds `dir/name/` for `kind`. `repo`: the Feegate repository to depend on
/// (default: found above `dir`, else above the current directory).
pub fn scaffold(
    kind: PolicyKind,
    name: &str,
    dir: &Path,
    repo: Option<&Path>,
) -> Result<Scaffolded, ScaffoldError> {
    validate_name(name)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| ScaffoldError::Io {
            path,
            detail: e.to_string(),
        }
    };
    let dir = std::path::absolute(dir).map_err(io(dir))?;
    let crate_dir = dir.join(name);
    if crate_dir.exists() {
        return Err(ScaffoldError::Exists(crate_dir));
    }
    let repo = match repo {
        Some(r) => Some(std::path::absolute(r).map_err(io(r))?),
        None => find_repo(&dir).or_else(|| find_repo(&std::env::current_dir().ok()?)),
    }
    .filter(|r| {
        r.join("wit/policy.wit").is_file() && r.join("plugins/policy-sdk/Cargo.toml").is_file()
    })
    .ok_or_else(|| ScaffoldError::NoRepo(dir.clone()))?;
    let package = format!("policy-{name}");
    let vars = [
        ("name", name),
        ("package", package.as_str()),
        ("kind", kind.as_str()),
        (
            "sdk_path",
            &path_from(&crate_dir, &repo, &repo.join("plugins/policy-sdk")),
        ),
        ("wit_path", &path_from(&crate_dir, &repo, &repo.join("wit"))),
    ];
    let (lib, fixtures) = templates(kind);
    let files: [(&'static str, &str); 3] = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", lib),
        ("fixtures/example.json", fixtures),
    ];
    for (file, template) in files {
        let path = crate_dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, render(template, &vars)).map_err(io(&path))?;
    }
    Ok(Scaffolded {
        dir: crate_dir,
        component_file: format!("{}.wasm", package.replace('-', "_")),
        package,
        repo,
        files: files.iter().map(|(f, _)| *f).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["tariff-flat", "cutoff-grace3", "ab"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("a", "2 to 40"),
            ("Tariff", "lowercase"),
            ("tariff_flat", "lowercase"),
            ("../evil", "lowercase"),
            ("3phase", "start with a letter"),
            ("tariff-", "hyphens"),
            ("tariff--flat", "hyphens"),
            ("policy-tariff-flat", "policy-NAME"),
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn placeholders_are_replaced_and_paths_are_relative_inside_the_repo() {
        assert_eq!(
            render(
                "{{package}} uses {{sdk_path}}; {{other}}",
                &[("package", "policy-x"), ("sdk_path", "../policy-sdk")]
            ),
            "policy-x uses ../policy-sdk; {{other}}"
        );
        let root = Path::new("/r");
        assert_eq!(
            path_from(
                Path::new("/r/plugins/x"),
                root,
                Path::new("/r/plugins/policy-sdk")
            ),
            "../../plugins/policy-sdk"
        );
        assert_eq!(
            path_from(Path::new("/tmp/w/x"), root, Path::new("/r/wit")),
            "/r/wit"
        );
        // Every template placeholder is one `scaffold` fills.
        for kind in PolicyKind::ALL {
            let (lib, fixtures) = templates(kind);
            for t in [CARGO_TOML, lib, fixtures] {
                let vars = [
                    ("name", "n"),
                    ("package", "p"),
                    ("kind", "k"),
                    ("sdk_path", "s"),
                    ("wit_path", "w"),
                ];
                assert!(!render(t, &vars).contains("{{"), "{kind}");
            }
        }
    }
}
