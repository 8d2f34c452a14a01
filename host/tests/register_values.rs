//! Register readings typed in or imported are checked against the DL/T 645 register range
//! (0 to 999999.99 kWh, 0.01 kWh) before anything is stored; statement amounts and register
//! values in exponent notation are refused; `feegate reconcile` refuses an unknown channel
//! before it writes anything.

mod common;

use chrono::NaiveDate;
use feegate::db::Db;
use feegate::readings::{import_readings, read_file};
use feegate::replacement::{Recorded, ReplacementError, ReplacementOrder, record};
use rust_decimal::Decimal;
use std::str::FromStr;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn county(db: &Db, meters: usize) {
    common::onboard_county_xy(db, meters, &["S1"]).await;
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn replacement_readings_outside_the_register_range_are_refused_and_nothing_is_stored() {
    let Some(tdb) = common::test_database(
        "replacement_readings_outside_the_register_range_are_refused_and_nothing_is_stored",
    )
    .await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    county(&db, 1).await;
    let at = d("2013-01-03").and_hms_opt(11, 20, 0).unwrap();
    let order = |old_final: &str, new_start: &str| ReplacementOrder {
        account_id: "A0".into(),
        new_meter_id: "M0-N".into(),
        old_final_kwh: Decimal::from_str(old_final).unwrap(),
        new_start_kwh: Decimal::from_str(new_start).unwrap(),
        replaced_at: at,
        replaced_by: "Lin Wei".into(),
        new_address: None,
        new_unit: None,
    };
    for (old_final, new_start, why) in [
        (
            "99999999999999999999999",
            "0",
            "old final reading: 99999999999999999999999 kWh is above 999999.99 kWh",
        ),
        ("79228162514264337593543950335", "0", "above 999999.99 kWh"),
        ("1000000.00", "0", "above 999999.99 kWh"),
        (
            "100",
            "1000000",
            "new start reading: 1000000 kWh is above 999999.99 kWh",
        ),
        ("-0.01", "0", "old final reading: -0.01 kWh is negative"),
        (
            "100",
            "0.005",
            "new start reading: 0.005 kWh has more than 2 decimals",
        ),
    ] {
        let e = record(&db, &order(old_final, new_start), at)
            .await
            .unwrap_err();
        assert!(matches!(e, ReplacementError::Invalid(_)), "{e}");
        assert!(e.to_string().contains(why), "{old_final}/{new_start}: {e}");
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM meter_replacements").await,
            0
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM meters").await, 1);
    }
    // The command line refuses them too, before opening the database: a clear message,
    // exit status 2, no panic.
    for (old_final, why) in [
        ("79228162514264337593543950335", "is not a register reading"),
        ("99999999999999999999999", "0 to 999999.99"),
        ("1000000", "above 999999.99 kWh"),
        ("1e5", "no exponent"),
    ] {
        let out = std::process::Command::new(common::feegate_bin())
            .args(["meter", "replace", "--account", "A0", "--new-meter", "M0-N"])
            .args(["--old-final", old_final, "--new-start", "0"])
            .args([
                "--at",
                "2013-01-03T11:20:00",
                "--who",
                "me",
                "--db",
                &tdb.url,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{old_final}: {err}");
        assert!(
            err.contains(why) && !err.contains("panicked"),
            "{old_final}: {err}"
        );
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM meter_replacements").await,
        0
    );
    // The register maximum itself is a reading.
    assert_eq!(
        record(&db, &order("999999.99", "0"), at).await.unwrap(),
        Recorded::New {
            old_meter_id: "M0".into()
        }
    );
    assert_eq!(
        count(
            &db,
            "SELECT old_final_centi_kwh FROM meter_replacements WHERE new_meter_id = 'M0-N'"
        )
        .await,
        99_999_999
    );
}

#[tokio::test]
async fn imported_registers_outside_the_range_or_in_exponent_notation_are_refused() {
    let Some(tdb) = common::test_database(
        "imported_registers_outside_the_range_or_in_exponent_notation_are_refused",
    )
    .await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    county(&db, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let now = d("2013-01-02").and_hms_opt(9, 0, 0).unwrap();

    // Exponent notation (and anything else that is not plain digits) fails the file, naming
    // the row; nothing is imported from it.
    for (value, row, why) in [
        ("1e5", 2, "not a plain decimal"),
        ("1E5", 2, "not a plain decimal"),
        ("+100", 2, "not a plain decimal"),
        ("1,5", 2, "not a plain decimal"),
        ("-0", 2, "is negative"),
    ] {
        let csv = dir.path().join("e.csv");
        std::fs::write(
            &csv,
            format!(
                "meter_id,reading_date,register_kwh\nM0,2013-01-02,1.00\nM1,2013-01-02,{value:?}\n"
            ),
        )
        .unwrap();
        let e = read_file(&csv).unwrap_err().to_string();
        // Numbered as rejections are (the second reading), without a file line.
        assert!(e.contains(&format!("record {row}: ")), "{value}: {e}");
        assert!(!e.contains("(line"), "{value}: {e}");
        assert!(e.contains(why), "{value}: {e}");
    }
    // A short record: its number and what is missing, in the import's words.
    let short = dir.path().join("short.csv");
    std::fs::write(
        &short,
        "meter_id,reading_date,register_kwh\nM0,2013-01-02,1.00\nM1,2013-01-02\n",
    )
    .unwrap();
    let e = read_file(&short).unwrap_err().to_string();
    assert!(
        e.contains("record 2: 2 fields where the header has 3"),
        "{e}"
    );
    let json = dir.path().join("e.json");
    std::fs::write(
        &json,
        r#"[{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1e5"}]"#,
    )
    .unwrap();
    let e = read_file(&json).unwrap_err().to_string();
    // JSON names the record as CSV does.
    assert!(
        e.contains("record 1: register_kwh \"1e5\" is not a plain decimal"),
        "{e}"
    );

    // Out of the register range: that row is rejected, never a panic or a clamped value.
    let csv = dir.path().join("r.csv");
    std::fs::write(
        &csv,
        "meter_id,reading_date,register_kwh\n\
         M0,2013-01-02,999999.99\n\
         M1,2013-01-02,79228162514264337593543950335\n\
         M2,2013-01-02,1000000.00\n\
         M3,2013-01-02,-1\n",
    )
    .unwrap();
    // A huge value is not a plain decimal of at most 18 integer digits: the file fails.
    let e = read_file(&csv).unwrap_err().to_string();
    assert!(
        e.contains("record 2: ") && e.contains("not a plain decimal"),
        "{e}"
    );
    // Rows given directly (the library API) are range-checked one by one.
    let row = |meter: &str, kwh: &str| feegate::readings::ImportRow {
        meter_id: meter.into(),
        reading_date: d("2013-01-02"),
        register_kwh: Decimal::from_str(kwh).unwrap(),
    };
    let rows = [
        row("M0", "999999.99"),
        row("M1", "79228162514264337593543950335"),
        row("M2", "1000000.00"),
        row("M3", "-1"),
    ];
    let r = import_readings(&db, &rows, now).await.unwrap();
    assert_eq!(r.inserted, 1);
    assert_eq!(r.rejected.len(), 3, "{:?}", r.rejected);
    assert!(r.rejected[0].starts_with("record 2: ") && r.rejected[0].contains("above 999999.99"));
    assert!(r.rejected[1].starts_with("record 3: ") && r.rejected[1].contains("above 999999.99"));
    assert!(r.rejected[2].starts_with("record 4: ") && r.rejected[2].contains("negative"));
    assert_eq!(
        count(&db, "SELECT MAX(register_centi_kwh) FROM readings").await,
        99_999_999
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM readings").await, 1);
}

#[tokio::test]
async fn reconcile_refuses_an_unknown_channel_before_writing_anything() {
    let Some(tdb) =
        common::test_database("reconcile_refuses_an_unknown_channel_before_writing_anything").await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    county(&db, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        "[channels.bank-transfer]\nauth = \"hmac-sha256\"\nsecret_env = \"NOT_SET_ON_THIS_DESK\"\nmax_amount_yuan = \"50000\"\n\
         [channels.kiosk]\nauth = \"hmac-sha256\"\nsecret_env = \"NOT_SET_EITHER\"\nmax_amount_yuan = \"5000\"\n",
    )
    .unwrap();
    let statement = dir.path().join("st3.csv");
    std::fs::write(
        &statement,
        "txn_id,type,account_id,amount,currency\nT1,payment,A0,100.00,CNY\n",
    )
    .unwrap();
    let run = |channel: &str| {
        std::process::Command::new(common::feegate_bin())
            .args(["reconcile", "--channel", channel, "--date", "2026-11-30"])
            .arg("--channels")
            .arg(&channels)
            .arg("--statement")
            .arg(&statement)
            .args(["--db", &tdb.url])
            .env_remove("FEEGATE_CHANNELS__CONFIG")
            .output()
            .unwrap()
    };
    let out = run("nope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown channel 'nope'; the configured channels are bank-transfer, kiosk"),
        "{err}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'reconciliation'"
        )
        .await,
        0
    );
    // A configured channel is reconciled (its secret need not be set): T1 is missing on
    // our side, so one work order and exit status 3.
    let out = run("kiosk");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM work_orders WHERE kind = 'reconciliation'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn collection_import_says_so_in_its_exit_code_when_rows_are_left_out() {
    let Some(tdb) =
        common::test_database("collection_import_says_so_in_its_exit_code_when_rows_are_left_out")
            .await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    county(&db, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let import = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        std::process::Command::new(common::feegate_bin())
            .args(["collection", "import"])
            .arg(&file)
            .args(["--db", &tdb.url])
            .output()
            .unwrap()
    };
    // One good row, one for a meter nobody has, one dated in 2099: the good one is
    // stored, the report lists the others, and the exit code is 3, not 0.
    let out = import(
        "mixed.csv",
        "meter_id,reading_date,register_kwh\nM0,2013-01-02,1.00\nM9,2013-01-02,2.00\nM1,2099-01-02,3.00\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["inserted"], 1);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[1].as_str().unwrap().contains("after today"),
        "{rejected:?}"
    );
    // A file with no readings is an error, not a successful import of nothing.
    let out = import("empty.csv", "meter_id,reading_date,register_kwh\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no readings in the file"), "{stderr}");
    // All good: exit 0.
    let out = import(
        "good.csv",
        "meter_id,reading_date,register_kwh\nM1,2013-01-02,5.00\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
