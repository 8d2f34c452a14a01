//! Readings imported from a head-end system (CSV and JSON, idempotent) and the exact
//! per-station collection report.

mod common;

use chrono::NaiveDate;
use feegate::db::Db;
use feegate::readings::{import_readings, read_file, station_report};
use rust_decimal::Decimal;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn county(db: &Db, meters: usize) {
    common::onboard_county_xy(db, meters, &["S1", "S2"]).await;
    sqlx::query("UPDATE accounts SET status = 'active'")
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn import_is_idempotent_flags_conflicts_and_feeds_an_exact_report() {
    let Some(tdb) =
        common::test_database("import_is_idempotent_flags_conflicts_and_feeds_an_exact_report")
            .await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    county(&db, 6).await;
    let csv = dir.path().join("r.csv");
    std::fs::write(
        &csv,
        "meter_id,reading_date,register_kwh\n\
         M0,2013-01-02,1234.56\n\
         M1,2013-01-02,200.00\n\
         M2,2013-01-02,300.5\n\
         M3,2013-01-01,10.00\n\
         M9,2013-01-02,1.00\n\
         M4,2013-01-02,1.005\n",
    )
    .unwrap();
    let now = d("2013-01-02").and_hms_opt(9, 0, 0).unwrap();
    let rows = read_file(&csv).unwrap();
    let first = import_readings(&db, &rows, now).await.unwrap();
    assert_eq!(first.inserted, 4);
    assert_eq!(first.rejected.len(), 2, "{:?}", first.rejected);
    assert!(first.rejected[0].contains("M9") && first.rejected[1].contains("2 decimals"));

    // Again: nothing changes.
    let again = import_readings(&db, &rows, now).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 4));

    // The same readings as JSON, one changed: a conflict, not an overwrite.
    let json = dir.path().join("r.json");
    std::fs::write(
        &json,
        r#"[{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1234.56"},
            {"meter_id":"M1","reading_date":"2013-01-02","register_kwh":"201.00"}]"#,
    )
    .unwrap();
    let j = import_readings(&db, &read_file(&json).unwrap(), now)
        .await
        .unwrap();
    assert_eq!((j.inserted, j.duplicates, j.conflicts.len()), (0, 1, 1));
    let stored: i64 = sqlx::query_scalar(
        "SELECT register_centi_kwh FROM readings WHERE meter_id = 'M1' AND reading_date = '2013-01-02'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 20_000);

    // A reading dated after today (a typo in the year, say) is refused, not stored.
    let tomorrow = feegate::readings::ImportRow {
        meter_id: "M5".into(),
        reading_date: d("2013-01-03"),
        register_kwh: Decimal::new(100, 0),
    };
    let f = import_readings(&db, &[tomorrow], now).await.unwrap();
    assert_eq!(f.inserted, 0);
    assert!(
        f.rejected.len() == 1 && f.rejected[0].contains("after today"),
        "{:?}",
        f.rejected
    );

    // S1 = M0, M2, M4: two read on 2 January; S2 = M1, M3, M5: one read, M3 covered by
    // its 1 January reading.
    let r = station_report(&db, Some("xy"), d("2013-01-02"))
        .await
        .unwrap();
    let s1 = &r["S1"];
    assert_eq!((s1.meters, s1.read_ok, s1.covered), (3, 2, 2));
    assert_eq!(
        s1.read_success_rate(),
        Some(Decimal::from(2) / Decimal::from(3))
    );
    let s2 = &r["S2"];
    assert_eq!((s2.meters, s2.read_ok, s2.covered), (3, 1, 2));
    assert_eq!(s2.coverage(), Some(Decimal::from(2) / Decimal::from(3)));
}

#[test]
fn a_bad_reading_is_named_by_its_record_whatever_the_line_ends_and_in_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let header = "meter_id,reading_date,register_kwh";
    let good = [
        "M0,2013-01-02,1.00",
        "M1,2013-01-02,2.00",
        "M2,2013-01-02,3.00",
    ];
    let bad = [good[0], good[1], "M2,2013-01-02,1e5"];
    let short = [good[0], good[1], "M2,2013-01-02"];
    // (file name, text, the message's part, or none when it reads) — the third reading is
    // `record 3` with CRLF, CR-only and LF line ends and with blank lines between records.
    let join = |lines: &[&str], end: &str| format!("{header}{end}{}{end}", lines.join(end));
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "lf.csv",
            join(&bad, "\n"),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "crlf.csv",
            join(&bad, "\r\n"),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "cr.csv",
            join(&bad, "\r"),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "blank.csv",
            join(&bad, "\n\n\n"),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "blank-crlf.csv",
            join(&bad, "\r\n\r\n"),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "short-crlf.csv",
            join(&short, "\r\n"),
            Some("record 3: 2 fields where the header has 3"),
        ),
        (
            "short-cr.csv",
            join(&short, "\r"),
            Some("record 3: 2 fields where the header has 3"),
        ),
        ("good-crlf.csv", join(&good, "\r\n"), None),
        ("good-cr.csv", join(&good, "\r"), None),
        ("good-blank.csv", join(&good, "\n\n"), None),
        ("bom.csv", format!("\u{feff}{}", join(&good, "\r\n")), None),
        (
            "missing.json",
            r#"[{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1.00"},
                {"meter_id":"M1","reading_date":"2013-01-02"},
                {"meter_id":"M2","reading_date":"2013-01-02","register_kwh":"3.00"}]"#
                .into(),
            Some("record 2: missing field `register_kwh`"),
        ),
        (
            "exponent.json",
            r#"[{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1.00"},
                {"meter_id":"M1","reading_date":"2013-01-02","register_kwh":"2.00"},
                {"meter_id":"M2","reading_date":"2013-01-02","register_kwh":"1e5"}]"#
                .into(),
            Some("record 3: register_kwh \"1e5\" is not a plain decimal"),
        ),
        (
            "bad-date.json",
            r#"[{"meter_id":"M0","reading_date":"2013-02-30","register_kwh":"1.00"}]"#.into(),
            Some("record 1: "),
        ),
        // Not an array, or not JSON: the whole file, with serde_json's line and column.
        (
            "object.json",
            r#"{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1.00"}"#.into(),
            Some("line 1 column"),
        ),
        (
            "cut.json",
            "[\n{\"meter_id\":".into(),
            Some("line 2 column"),
        ),
        (
            "bom.json",
            format!(
                "\u{feff}{}",
                r#"[{"meter_id":"M0","reading_date":"2013-01-02","register_kwh":"1.00"},
                    {"meter_id":"M1","reading_date":"2013-01-02","register_kwh":"2.00"},
                    {"meter_id":"M2","reading_date":"2013-01-02","register_kwh":"3.00"}]"#
            ),
            None,
        ),
    ];
    for (name, text, want) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, &text).unwrap();
        match (read_file(&file), want) {
            (Ok(rows), None) => {
                let got: Vec<_> = rows
                    .iter()
                    .map(|r| (r.meter_id.as_str(), r.register_kwh.to_string()))
                    .collect();
                assert_eq!(
                    got,
                    [
                        ("M0", "1.00".into()),
                        ("M1", "2.00".into()),
                        ("M2", "3.00".into())
                    ],
                    "{name}"
                );
                assert!(
                    rows.iter().all(|r| r.reading_date == d("2013-01-02")),
                    "{name}"
                );
            }
            (Err(e), Some(part)) => {
                let e = e.to_string();
                assert!(e.contains(part), "{name}: {e}");
                // A record is named by its number alone: csv's line count is wrong for CR
                // line ends and blank lines.
                if part.starts_with("record") {
                    assert!(!e.contains("line "), "{name}: {e}");
                }
            }
            (got, want) => panic!("{name}: {got:?}, expected {want:?}"),
        }
    }
}

#[tokio::test]
async fn a_file_that_contradicts_itself_stores_neither_value_and_a_repeat_is_a_duplicate() {
    let Some(tdb) = common::test_database(
        "a_file_that_contradicts_itself_stores_neither_value_and_a_repeat_is_a_duplicate",
    )
    .await
    else {
        return;
    };
    let db = Db::open(&tdb.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    county(&db, 6).await;
    // M0 on 2 January twice with different registers (and once more with the first value):
    // all three rows rejected, nothing stored for M0. M2's repeat is the same value written
    // differently: stored once, the repeat a duplicate. M1 and M3 are stored as usual; M1 on
    // another day is another pair.
    let csv = dir.path().join("c.csv");
    std::fs::write(
        &csv,
        "meter_id,reading_date,register_kwh\r\n\
         M0,2013-01-02,10.00\r\n\
         M1,2013-01-02,20.00\r\n\
         M0,2013-01-02,11.00\r\n\
         M2,2013-01-02,30.00\r\n\
         M2,2013-01-02,30.0\r\n\
         M3,2013-01-02,40.00\r\n\
         M0,2013-01-02,10.00\r\n\
         M1,2013-01-01,19.00\r\n",
    )
    .unwrap();
    let now = d("2013-01-02").and_hms_opt(9, 0, 0).unwrap();
    let rows = read_file(&csv).unwrap();
    let r = import_readings(&db, &rows, now).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (4, 1), "{r:?}");
    assert!(r.conflicts.is_empty(), "{r:?}");
    let why = "meter M0 date 2013-01-02 appears with different registers in this file (records 1, 3, 7): a person decides which is right";
    assert_eq!(
        r.rejected,
        [1, 3, 7].map(|n| format!("record {n}: {why}")),
        "{r:?}"
    );
    let stored = |meter: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT register_centi_kwh FROM readings WHERE meter_id = $1 ORDER BY reading_date",
            )
            .bind(meter)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(stored("M0").await, Vec::<i64>::new());
    assert_eq!(stored("M1").await, [1_900, 2_000]);
    assert_eq!(stored("M2").await, [3_000]);
    assert_eq!(stored("M3").await, [4_000]);

    // The command says so in its exit code (3: rows left for a person), and a second run
    // still stores nothing for M0: the contradiction is not a conflict with itself.
    let out = std::process::Command::new(common::feegate_bin())
        .args(["collection", "import"])
        .arg(&csv)
        .args(["--db", &tdb.url])
        .env_remove("FEEGATE_DB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["inserted"], 0, "{report}");
    assert_eq!(report["duplicates"], 5, "{report}");
    assert_eq!(report["conflicts"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["rejected"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(stored("M0").await, Vec::<i64>::new());
}
