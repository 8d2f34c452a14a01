//! Commands that only read (`audit …`, `policy list/show/history/diff`, `policy trust list`,
//! `holds list`, `collection report`, `user list`) never create a database: a mistyped
//! SQLite path is an error that names it, not a new empty database in which the chain is
//! "intact" and nobody is held.

mod common;

use std::process::Command;

#[tokio::test]
async fn read_commands_refuse_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    // A path that is not there (also when the URL asks to create it), and an empty file.
    for url in [
        format!("sqlite://{}", typo.display()),
        format!("sqlite://{}?mode=rwc", typo.display()),
        format!("sqlite://{}", empty.display()),
    ] {
        for args in [
            &["audit", "verify"][..],
            &["audit", "log"],
            &["policy", "list", "--county", "xianyou"],
            &[
                "policy", "history", "--county", "xianyou", "--kind", "tariff",
            ],
            &["holds", "list"],
        ] {
            let out = Command::new(common::feegate_bin())
                .args(args)
                .arg("--db")
                .arg(&url)
                .env_remove("FEEGATE_DB")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} {url}: {stderr}");
            assert!(
                stderr.contains(&format!("no Feegate database at {url}")),
                "{args:?}: {stderr}"
            );
            assert!(!typo.exists(), "{args:?} created {}", typo.display());
            assert_eq!(
                std::fs::metadata(&empty).unwrap().len(),
                0,
                "{args:?} wrote into {url}"
            );
        }
    }
    let url = format!("sqlite://{}", typo.display());

    // Once the database exists (any command that writes creates it), they read it.
    feegate::db::Db::open(&url).await.unwrap();
    let out = Command::new(common::feegate_bin())
        .args(["audit", "verify", "--db", &url])
        .env_remove("FEEGATE_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A head hash that is not one is said to be mistyped, not "rows removed".
    let out = Command::new(common::feegate_bin())
        .args(["audit", "verify", "--expect-head", "deadbeef", "--db", &url])
        .env_remove("FEEGATE_DB")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is not a head hash"), "{stderr}");
}

#[tokio::test]
async fn collection_report_trust_list_and_user_list_refuse_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    for url in [
        format!("sqlite://{}", typo.display()),
        format!("sqlite://{}?mode=rwc", typo.display()),
    ] {
        for args in [
            &["collection", "report", "--date", "2013-01-02"][..],
            &["policy", "trust", "list", "--county", "xianyou"],
            &["user", "list"],
        ] {
            let out = Command::new(common::feegate_bin())
                .args(args)
                .arg("--db")
                .arg(&url)
                .env_remove("FEEGATE_DB")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} {url}: {stderr}");
            assert!(
                stderr.contains(&format!("no Feegate database at {url}")),
                "{args:?}: {stderr}"
            );
            assert!(!typo.exists(), "{args:?} created {}", typo.display());
        }
    }
    // Once the database exists (any command that writes creates it), they read it.
    let url = format!("sqlite://{}", typo.display());
    feegate::db::Db::open(&url).await.unwrap();
    for args in [
        &["collection", "report", "--date", "2013-01-02"][..],
        &["policy", "trust", "list", "--county", "xianyou"],
        &["user", "list"],
    ] {
        let out = Command::new(common::feegate_bin())
            .args(args)
            .args(["--db", &url])
            .env_remove("FEEGATE_DB")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
