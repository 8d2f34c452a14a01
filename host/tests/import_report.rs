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
