//! Reading quality end to end: faults injected in the simulated meters (Modbus TCP and
//! DL/T 645), read by the host's clients, judged by settlement's checks. Every bad case is
//! flagged and never billed; the good cases bill exactly what the meter counted.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use feegate::config::SettlementConfig;
use feegate::money::CentiKwh;
use feegate::settlement::{DeltaCheck, Replacement, check_delta, check_delta_across_replacement};
use feegate_meter::client::{ClientConfig, ModbusMeterClient};
use feegate_meter::dlt645_client::{Dlt645Client, Dlt645Config};
use feegate_meter::sim::SimFleet;

/// The checked conversion; every value here is a real register or day's consumption.
fn kwh_to_centi_kwh(kwh: rust_decimal::Decimal) -> CentiKwh {
    feegate::money::kwh_to_centi_kwh(kwh).unwrap()
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn csv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lcl_2013_daily_kwh_100hh.csv")
}

fn midnight(day: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2013, 1, day)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

fn client() -> ModbusMeterClient {
    ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_millis(200),
        retries: 1,
        retry_backoff: Duration::from_millis(10),
    })
}

/// Meters 0..6, one fault each; read the frozen register at midnight of 2 and 3 January.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_quality_case_is_flagged_and_never_billed_blindly() {
    let fleet = Arc::new(SimFleet::from_csv(csv(), 6, 11).unwrap());
    let addrs = fleet.serve(LOCALHOST, 6).await.unwrap();
    let c = client();
    let cfg = SettlementConfig::default();
    fleet.advance_to(midnight(1)).unwrap();
    // Meter 1 set so that its 2 January frozen reading is 0.50 kWh under the register
    // maximum: it wraps during 2 January.
    let day1 = kwh_to_centi_kwh(
        fleet
            .profile_kwh(1, NaiveDate::from_ymd_opt(2013, 1, 1).unwrap())
            .unwrap()
            .unwrap(),
    );
    fleet
        .set_register(1, (99_999_999 - 50 - day1) as u32)
        .unwrap();
    fleet.advance_to(midnight(2)).unwrap();

    let mut opening: Vec<CentiKwh> = Vec::new();
    for a in &addrs {
        opening.push(kwh_to_centi_kwh(
            c.read_daily_frozen(*a).await.unwrap().energy_kwh,
        ));
    }

    // Faults during 2 January.
    fleet.set_transient_zero(2, true).unwrap(); // reads 0.00
    let old_final = fleet.replace_meter(3, 0).unwrap(); // replaced, new register from 0
    fleet.set_silent(4, true).unwrap(); // no reply
    fleet
        .advance_to(
            NaiveDate::from_ymd_opt(2013, 1, 2)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
        )
        .unwrap();
    fleet
        .set_register(5, fleet.energy_register(5).unwrap() + 40_000)
        .unwrap(); // +400 kWh jump
    fleet.advance_to(midnight(3)).unwrap();

    let expected_day = |i: usize| {
        kwh_to_centi_kwh(
            fleet
                .profile_kwh(i, NaiveDate::from_ymd_opt(2013, 1, 2).unwrap())
                .unwrap()
                .unwrap(),
        )
    };

    // 0: normal — billed, and the delta is what the household used (to the register's 0.01).
    let r0 = kwh_to_centi_kwh(c.read_daily_frozen(addrs[0]).await.unwrap().energy_kwh);
    let DeltaCheck::Consumption(d0) = check_delta(opening[0], r0, 1, &cfg) else {
        panic!("normal day held")
    };
    assert!(
        (d0 - expected_day(0)).abs() <= 1,
        "{d0} vs {}",
        expected_day(0)
    );

    // 1: rollover — unwrapped, billed the real use, not ~1,000,000 kWh and not negative.
    let r1 = kwh_to_centi_kwh(c.read_daily_frozen(addrs[1]).await.unwrap().energy_kwh);
    assert!(r1 < opening[1], "the register wrapped");
    let DeltaCheck::Consumption(d1) = check_delta(opening[1], r1, 1, &cfg) else {
        panic!("rollover held")
    };
    assert!(
        (d1 - expected_day(1)).abs() <= 1,
        "{d1} vs {}",
        expected_day(1)
    );

    // 2: transient zero — held.
    let r2 = kwh_to_centi_kwh(c.read_daily_frozen(addrs[2]).await.unwrap().energy_kwh);
    assert_eq!(r2, 0);
    assert!(
        matches!(check_delta(opening[2], r2, 1, &cfg), DeltaCheck::Hold(why) if why.contains("transient zero"))
    );

    // 3: replacement — held as a plain delta; with the replacement record, old tail + new head.
    let r3 = kwh_to_centi_kwh(c.read_daily_frozen(addrs[3]).await.unwrap().energy_kwh);
    assert!(matches!(
        check_delta(opening[3], r3, 1, &cfg),
        DeltaCheck::Hold(_)
    ));
    let rep = Replacement {
        old_final: i64::from(old_final),
        new_start: 0,
    };
    let DeltaCheck::Consumption(d3) = check_delta_across_replacement(opening[3], rep, r3, 1, &cfg)
    else {
        panic!("replacement with its record held")
    };
    assert!(
        (d3 - expected_day(3)).abs() <= 2,
        "{d3} vs {}",
        expected_day(3)
    );

    // 4: silence — a missing read, never a 0 kWh reading.
    let e4 = c.read_daily_frozen(addrs[4]).await.unwrap_err();
    assert!(e4.is_timeout(), "{e4}");

    // 5: a jump beyond the meter's rating — held as implausible.
    let r5 = kwh_to_centi_kwh(c.read_daily_frozen(addrs[5]).await.unwrap().energy_kwh);
    assert!(
        matches!(check_delta(opening[5], r5, 1, &cfg), DeltaCheck::Hold(why) if why.contains("implausible"))
    );

    // Garbled bytes on a DL/T 645 line: a missing read too.
    let meters = fleet.serve_dlt645(LOCALHOST, 6).await.unwrap();
    fleet.set_garbled(0, true).unwrap();
    let dc = Dlt645Client::new(
        Dlt645Config {
            timeout: Duration::from_millis(200),
            retries: 1,
            retry_backoff: Duration::from_millis(10),
            ..Dlt645Config::default()
        },
        None,
    );
    assert!(
        dc.read_daily_frozen(&meters[0])
            .await
            .unwrap_err()
            .is_timeout()
    );
}
