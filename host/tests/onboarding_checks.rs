//! Onboarding refuses what would bill or cut off the wrong customer: a meter link another
//! account already uses, transformer ratios that overflow the energy arithmetic, a
//! broadcast or wildcard meter address, malformed ids and names.

mod common;

use chrono::NaiveDate;
use feegate::collection::parse_address;
use feegate::onboarding::{self, Application};
use feegate_meter::dlt645::Address;
use feegate_meter::dlt645_client::{Dlt645Meter, Link};
use feegate_meter::fleet::MeterLink;

fn application(n: u32, gateway: &str, unit: i64) -> Application {
    Application {
        county: "xianyou".into(),
        station_id: "XY-BT".into(),
        customer_id: format!("NC{n}"),
        customer_name: "林美华".into(),
        master_mobile: Some("13900000001".into()),
        customer_class: "low-voltage-residential".into(),
        vulnerable: false,
        meter_id: format!("NM{n}"),
        link: MeterLink::Modbus(parse_address(gateway, unit).unwrap()),
        ct_ratio: 1,
        pt_ratio: 1,
        account_id: format!("NA{n}"),
        alarm_threshold_fen: 5000,
        auto_debit_fen: None,
        mobile: "13900000001".into(),
        second_mobile: None,
        keep_power: false,
        time_of_use: false,
    }
}

#[tokio::test]
async fn a_meter_link_in_use_and_impossible_fields_are_refused_before_anything_is_written() {
    let Some(tdb) = common::test_database(
        "a_meter_link_in_use_and_impossible_fields_are_refused_before_anything_is_written",
    )
    .await
    else {
        return;
    };
    let db = common::seeded_db(&tdb.url, 1).await;
    let now = NaiveDate::from_ymd_opt(2013, 3, 5)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();

    onboarding::onboard(&db, &application(1, "10.0.0.5:502", 7), now)
        .await
        .unwrap();
    // The same gateway and unit: the same physical meter. Refused, nothing written.
    let mut conn = db.pool.acquire().await.unwrap();
    let same = application(2, "10.0.0.5:502", 7);
    assert_eq!(
        onboarding::link_in_use(&mut conn, &same.link)
            .await
            .unwrap(),
        Some("NA1".to_string())
    );
    drop(conn);
    let e = onboarding::onboard(&db, &same, now).await.unwrap_err();
    assert!(e.to_string().contains("account NA1's meter"), "{e}");
    // Another unit on that gateway is another meter.
    onboarding::onboard(&db, &application(3, "10.0.0.5:502", 8), now)
        .await
        .unwrap();

    let dlt = |address: &str| {
        MeterLink::Dlt645(Dlt645Meter {
            link: Link::Gateway("10.0.0.6:8899".parse().unwrap()),
            address: address.parse::<Address>().unwrap(),
            requires_security: false,
        })
    };
    let cases: Vec<(Application, &str)> = vec![
        (
            Application {
                ct_ratio: 9_223_372_036_854_775_807,
                pt_ratio: 9_223_372_036_854_775_807,
                ..application(10, "10.0.0.7:502", 1)
            },
            "ct_ratio",
        ),
        (
            Application {
                pt_ratio: 0,
                ..application(11, "10.0.0.7:502", 1)
            },
            "pt_ratio",
        ),
        (application(12, "10.0.0.7:502", 0), "unit id 0"),
        (application(13, "10.0.0.7:502", 255), "unit id 255"),
        (
            Application {
                link: dlt("999999999999"),
                ..application(14, "10.0.0.7:502", 1)
            },
            "no broadcast",
        ),
        (
            Application {
                link: dlt("AAAAAAAAAAAA"),
                ..application(15, "10.0.0.7:502", 1)
            },
            "no AA wildcards",
        ),
        (
            Application {
                account_id: String::new(),
                ..application(16, "10.0.0.7:502", 1)
            },
            "account_id",
        ),
        (
            Application {
                customer_id: "a/b?c".into(),
                ..application(17, "10.0.0.7:502", 1)
            },
            "customer_id",
        ),
        (
            Application {
                meter_id: "M".repeat(5000),
                ..application(18, "10.0.0.7:502", 1)
            },
            "meter_id",
        ),
        (
            Application {
                customer_name: "NL\r\nSet-Cookie: x=1".into(),
                ..application(19, "10.0.0.7:502", 1)
            },
            "customer_name",
        ),
    ];
    for (app, needle) in cases {
        let e = onboarding::check_application(&app).unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
        let e = onboarding::onboard(&db, &app, now).await.unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        accounts, 3,
        "the seeded account and the two good applications"
    );
}

/// Two applications for one physical meter under different ids, at the same moment: the
/// second waits for the first to commit and is then refused (PostgreSQL: without the link
/// lock both would pass the check, neither seeing the other's uncommitted rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_onboardings_of_one_meter_link_let_one_through_on_postgresql() {
    let Some(pg) = common::pg_database(
        "concurrent_onboardings_of_one_meter_link_let_one_through_on_postgresql",
    )
    .await
    else {
        return;
    };
    let db = common::seeded_db(&pg.url, 1).await;
    let now = NaiveDate::from_ymd_opt(2013, 3, 5)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    let mut first = db.pool.begin().await.unwrap();
    onboarding::onboard_in(&mut first, &application(1, "10.0.0.9:502", 3), now)
        .await
        .unwrap();
    let second = tokio::spawn({
        let db = db.clone();
        async move { onboarding::onboard(&db, &application(2, "10.0.0.9:502", 3), now).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second onboarding of the same link must wait for the first"
    );
    first.commit().await.unwrap();
    let e = second.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("account NA1's meter"), "{e}");
    let accounts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE account_id IN ('NA1', 'NA2')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(accounts, 1);
}
