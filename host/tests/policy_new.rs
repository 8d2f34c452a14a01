//! `feegate policy new`: every kind's scaffold builds for wasm32-wasip2 and passes its
//! own fixtures and its own native unit test; bad names and existing directories are
//! refused with a clear message.
//!
//! The scaffolds go into a temporary directory that is its own tiny workspace, with
//! path dependencies to this repository's `plugins/policy-sdk` and `wit/`, the
//! repository's `Cargo.lock` (so the same dependency versions are used, offline) and
//! its profiles, building into the shared target directory (`CARGO_TARGET_DIR`, else
//! the repository's `target/`): the dependencies are the ones `make plugins` already
//! compiled. Measured on the 2-core build machine with a warm target directory,
//! building all four scaffolds for wasm32-wasip2 takes about 2 s (each is one small
//! crate plus the SDK), so this test builds all four rather than building one and
//! `cargo check`ing three. The whole test takes about 30 s warm; the first run in a
//! fresh target directory compiles the native side of wit-bindgen and serde for the
//! scaffolds' unit tests once (several minutes on two cores).

mod common;

use feegate::config::PolicyLimits;
use feegate::policy::{PolicyEngine, PolicyKind};
use std::path::{Path, PathBuf};
use std::process::Command;

fn feegate(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(common::feegate_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join("target"))
}

fn cargo(workspace: &Path, args: &[&str]) {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .arg("--offline")
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The profiles of the repository's Cargo.toml, so the scaffolds share its artefacts.
fn repo_profiles() -> String {
    let root = std::fs::read_to_string(common::repo().join("Cargo.toml")).unwrap();
    root[root.find("[profile.").expect("the workspace has profiles")..].to_string()
}

#[test]
fn every_kind_scaffolds_a_crate_that_builds_for_wasm_and_passes_its_own_fixtures() {
    let ws = tempfile::tempdir().unwrap();
    let repo = common::repo().canonicalize().unwrap();
    let repo_arg = repo.to_str().unwrap();
    let names: Vec<(PolicyKind, String)> = PolicyKind::ALL
        .iter()
        .map(|k| (*k, format!("{k}-scaffolded")))
        .collect();
    for (kind, name) in &names {
        let (code, stdout, stderr) = feegate(
            ws.path(),
            &[
                "policy",
                "new",
                "--kind",
                kind.as_str(),
                name,
                "--dir",
                ".",
                "--repo",
                repo_arg,
            ],
        );
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("policy-{name}")), "{stdout}");
        let manifest = std::fs::read_to_string(ws.path().join(name).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!(
                "path = \"{}\"",
                repo.join("plugins/policy-sdk").display()
            )),
            "outside the repository the SDK path is absolute:\n{manifest}"
        );
    }
    let members: Vec<String> = names.iter().map(|(_, n)| format!("\"{n}\"")).collect();
    std::fs::write(
        ws.path().join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n{}",
            members.join(", "),
            repo_profiles()
        ),
    )
    .unwrap();
    std::fs::copy(
        common::repo().join("Cargo.lock"),
        ws.path().join("Cargo.lock"),
    )
    .unwrap();

    cargo(
        ws.path(),
        &["build", "--target", "wasm32-wasip2", "--profile", "plugin"],
    );
    let engine = PolicyEngine::new(PolicyLimits::default()).unwrap();
    for (kind, name) in &names {
        let wasm = target_dir()
            .join("wasm32-wasip2/plugin")
            .join(format!("policy_{}.wasm", name.replace('-', "_")));
        let c = engine
            .load(*kind, &std::fs::read(&wasm).unwrap())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let fixtures =
            std::fs::read_to_string(ws.path().join(name).join("fixtures/example.json")).unwrap();
        let results = feegate::fixtures::run(&engine, &c, &fixtures).unwrap();
        assert!(results.len() >= 2, "{kind}: {} cases", results.len());
        for r in &results {
            assert!(r.passed, "{kind} {}: {}\n{}", r.name, r.mismatch, r.output);
        }
        // And through `feegate policy test`, as the walkthrough does it.
        let (code, stdout, stderr) = feegate(
            ws.path(),
            &[
                "policy",
                "test",
                wasm.to_str().unwrap(),
                "--fixtures",
                &format!("{name}/fixtures/example.json"),
            ],
        );
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("0 failed"), "{stdout}");
    }
    // The native unit test each scaffold carries.
    cargo(ws.path(), &["test", "--lib"]);
}

#[test]
fn bad_names_and_existing_directories_are_refused_and_nothing_is_written() {
    let ws = tempfile::tempdir().unwrap();
    let repo = common::repo().canonicalize().unwrap();
    let repo_arg = repo.to_str().unwrap();
    for (name, says) in [
        ("Tariff_Flat", "lowercase"),
        ("../escape", "lowercase"),
        ("policy-tariff-x", "policy-NAME"),
        ("9lives", "start with a letter"),
    ] {
        let (code, _, stderr) = feegate(
            ws.path(),
            &[
                "policy", "new", "--kind", "tariff", name, "--dir", ".", "--repo", repo_arg,
            ],
        );
        assert_ne!(code, Some(0), "{name}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(ws.path()).unwrap().count(),
        0,
        "nothing written"
    );

    std::fs::create_dir(ws.path().join("tariff-mine")).unwrap();
    std::fs::write(ws.path().join("tariff-mine/keep.txt"), "mine").unwrap();
    let (code, _, stderr) = feegate(
        ws.path(),
        &[
            "policy",
            "new",
            "--kind",
            "tariff",
            "tariff-mine",
            "--dir",
            ".",
            "--repo",
            repo_arg,
        ],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(ws.path().join("tariff-mine"))
            .unwrap()
            .count(),
        1
    );

    // Outside a Feegate repository and without --repo: says to give it.
    let (code, _, stderr) = feegate(
        ws.path(),
        &[
            "policy", "new", "--kind", "notice", "notice-x", "--dir", ".",
        ],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--repo"), "{stderr}");

    // Inside the repository, the paths are relative (a crate in plugins/ is committable).
    let s = feegate::scaffold::scaffold(
        PolicyKind::Cutoff,
        "cutoff-rel",
        &ws.path().join("plugins"),
        Some(&repo),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(s.dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&repo.display().to_string()),
        "outside the repo: absolute"
    );
    std::fs::create_dir_all(repo.join("target")).unwrap();
    let inside = tempfile::tempdir_in(repo.join("target")).unwrap();
    let s =
        feegate::scaffold::scaffold(PolicyKind::Cutoff, "cutoff-rel", inside.path(), None).unwrap();
    let manifest = std::fs::read_to_string(s.dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("path = \"../../../plugins/policy-sdk\""),
        "{manifest}"
    );
    let lib = std::fs::read_to_string(s.dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("path: \"../../../wit\""), "{lib}");
}
