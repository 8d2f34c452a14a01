//! The simulator and the client against each other, on 127.0.0.1, with the real Low Carbon
//! London daily data (UK Power Networks, Low Carbon London project, "SmartMeter Energy
//! Consumption Data in London Households", London Datastore). Register values here are derived:
//! a starting register plus the cumulative sum of a household's daily kWh.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::client::{
    ClientConfig, FrozenReading, MeterError, ModbusBus, ModbusMeterClient,
};
use feegate_meter::profile::Profiles;
use feegate_meter::registers::{MeterAddress, RelayCommand, RelayState, hundredths_to_kwh};
use feegate_meter::sim::{SimError, SimFleet};
use rust_decimal::{Decimal, RoundingStrategy};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn csv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lcl_2013_daily_kwh_100hh.csv")
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn at(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
    date(y, m, d).and_hms_opt(h, 0, 0).unwrap()
}

fn kwh(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Floor to the register's resolution, 0.01 kWh.
fn floor2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::ToNegativeInfinity)
}

/// Short timeouts keep the tests fast.
fn client(retries: u32) -> ModbusMeterClient {
    ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_millis(200),
        retries,
        retry_backoff: Duration::from_millis(10),
    })
}

async fn fleet(meters: usize, per_gateway: u8) -> (Arc<SimFleet>, Vec<MeterAddress>) {
    let fleet = Arc::new(SimFleet::from_csv(csv(), meters, 7).unwrap());
    let addrs = fleet.serve(LOCALHOST, per_gateway).await.unwrap();
    assert_eq!(addrs.len(), meters);
    (fleet, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_readings_follow_mac000002_real_kwh() {
    let (fleet, addrs) = fleet(100, 100).await;
    let info = fleet.meter_info(0).unwrap();
    assert_eq!(info.household, "MAC000002");
    assert_eq!(info.offset_days, 0);
    let start = info.start_kwh();
    let c = client(1);

    // Before the clock starts the meter has no frozen record.
    let err = c.read_daily_frozen(addrs[0]).await.unwrap_err();
    assert!(matches!(err, MeterError::BadValue(ref m) if m.contains("no daily frozen record")));

    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    assert_eq!(
        c.read_daily_frozen(addrs[0]).await.unwrap(),
        FrozenReading {
            date: date(2013, 1, 1),
            energy_kwh: start
        }
    );
    // MAC000002, 2013-01-01..04: 10.800, 13.300, 10.074, 9.857 kWh (from the CSV, by hand).
    for (day, cumulative) in [
        (2, "10.80"), // 10.800
        (3, "24.10"), // + 13.300
        (4, "34.17"), // + 10.074 = 34.174
        (5, "44.03"), // + 9.857 = 44.031
    ] {
        fleet.advance_to(at(2013, 1, day, 0)).unwrap();
        let r = c.read_daily_frozen(addrs[0]).await.unwrap();
        assert_eq!(r.date, date(2013, 1, day));
        assert_eq!(
            r.energy_kwh,
            start + kwh(cumulative),
            "frozen on 2013-01-{day}"
        );
        assert_eq!(
            c.read_energy(addrs[0]).await.unwrap(),
            start + kwh(cumulative)
        );
    }
    // 2013-01-05 is 11.171 kWh, spread over the day: at noon half of it is used.
    fleet.advance_to(at(2013, 1, 5, 12)).unwrap();
    assert_eq!(
        c.read_energy(addrs[0]).await.unwrap(),
        start + kwh("49.61") // 44.031 + 5.5855 = 49.6165
    );
    // The frozen record still holds midnight's value.
    assert_eq!(
        c.read_daily_frozen(addrs[0]).await.unwrap().energy_kwh,
        start + kwh("44.03")
    );
    assert_eq!(fleet.consumed_kwh(0).unwrap(), kwh("49.6165"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_readings_equal_start_plus_sum_of_real_kwh() {
    let (fleet, addrs) = fleet(100, 50).await;
    let profiles = Profiles::load(csv()).unwrap();
    let c = client(1);
    fleet.advance_to(at(2013, 3, 1, 0)).unwrap();
    // Ten days in steps of five hours: midnights are crossed inside steps, not only landed on.
    let end = at(2013, 3, 11, 0);
    let mut t = at(2013, 3, 1, 0);
    while t < end {
        t = (t + chrono::Duration::hours(5)).min(end);
        fleet.advance_to(t).unwrap();
    }
    let mut checked = 0;
    for (i, addr) in addrs.iter().enumerate() {
        let h = &profiles.households()[i];
        let start = fleet.meter_info(i).unwrap().start_kwh();
        let sum: Decimal = (1..=10).filter_map(|d| h.kwh_on(date(2013, 3, d))).sum();
        if h.kwh_on(date(2013, 3, 11)).is_none() {
            assert!(c.read_daily_frozen(*addr).await.unwrap_err().is_timeout());
            continue;
        }
        let r = c.read_daily_frozen(*addr).await.unwrap();
        assert_eq!(r.date, date(2013, 3, 11));
        assert_eq!(r.energy_kwh, floor2(start + sum), "household {}", h.id);
        checked += 1;
    }
    assert!(
        checked > 80,
        "only {checked} households had data on 2013-03-11"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_without_data_for_the_day_does_not_answer() {
    let (fleet, addrs) = fleet(100, 100).await;
    let i = 14;
    let info = fleet.meter_info(i).unwrap();
    assert_eq!(info.household, "MAC000016"); // 16 days of data: 2013-01-01..16
    assert_eq!(addrs[i].unit, 15);
    let c = client(1);
    let start = info.start_kwh();

    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.advance_to(at(2013, 1, 16, 0)).unwrap();
    // 1.326 1.469 1.262 1.020 0.717 0.859 0.901 0.775 1.842 2.385 2.419 1.806 1.775 1.818 1.624
    let first15 = kwh("21.998");
    let r = c.read_daily_frozen(addrs[i]).await.unwrap();
    assert_eq!(r.energy_kwh, start + kwh("21.99"));
    assert_eq!(fleet.consumed_kwh(i).unwrap(), first15);

    fleet.advance_to(at(2013, 1, 17, 0)).unwrap();
    assert!(!fleet.answers(i).unwrap());
    let t0 = Instant::now();
    let err = c.read_energy(addrs[i]).await.unwrap_err();
    let waited = t0.elapsed();
    match err {
        MeterError::Timeout { bus, unit } => {
            assert_eq!(bus, ModbusBus::Gateway(addrs[i].gateway));
            assert_eq!(unit, 15);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    // Two attempts of 200 ms each.
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(c.read_relay(addrs[i]).await.unwrap_err().is_timeout());
    assert!(
        c.send_relay(addrs[i], RelayCommand::Trip)
            .await
            .unwrap_err()
            .is_timeout()
    );
    // The command to the silent meter did nothing.
    assert_eq!(fleet.relay_state(i).unwrap(), RelayState::Closed);
    // Its neighbours on the same gateway still answer, with their own values.
    assert_eq!(
        c.read_energy(addrs[i + 1]).await.unwrap(),
        hundredths_to_kwh(fleet.energy_register(i + 1).unwrap())
    );

    // Silent days consume nothing; the register stays where the last data day left it
    // (2013-01-16 is 0.027 kWh, 1 half-hour).
    let on_17th = fleet.energy_register(i).unwrap();
    assert_eq!(hundredths_to_kwh(on_17th), start + kwh("22.02")); // 22.025
    fleet.advance_to(at(2013, 1, 20, 0)).unwrap();
    assert_eq!(fleet.energy_register(i).unwrap(), on_17th);
    assert_eq!(fleet.consumed_kwh(i).unwrap(), kwh("22.025"));
    assert_eq!(fleet.frozen(i).unwrap().unwrap().date, date(2013, 1, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trip_stops_consumption_and_a_half_day_closed_gives_half() {
    let (fleet, addrs) = fleet(10, 10).await;
    let m = addrs[0];
    let start = fleet.meter_info(0).unwrap().start_kwh();
    let c = client(1);
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();

    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Open);
    fleet.advance_to(at(2013, 1, 2, 0)).unwrap();
    // Open all of 2013-01-01 (10.800 kWh in the data): nothing used.
    assert_eq!(c.read_energy(m).await.unwrap(), start);
    assert_eq!(
        c.read_daily_frozen(m).await.unwrap(),
        FrozenReading {
            date: date(2013, 1, 2),
            energy_kwh: start
        }
    );

    c.send_relay(m, RelayCommand::DirectClose).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);
    fleet.advance_to(at(2013, 1, 2, 12)).unwrap();
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    fleet.advance_to(at(2013, 1, 3, 0)).unwrap();
    // Closed for 12 of the 24 hours of 2013-01-02 (13.300 kWh): 6.650 kWh.
    assert_eq!(fleet.consumed_kwh(0).unwrap(), kwh("6.65"));
    assert_eq!(
        c.read_daily_frozen(m).await.unwrap().energy_kwh,
        start + kwh("6.65")
    );
    // The other meters kept consuming.
    assert!(fleet.consumed_kwh(1).unwrap() > Decimal::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_allowed_waits_for_the_customer_button() {
    let (fleet, addrs) = fleet(10, 10).await;
    let m = addrs[0];
    let start = fleet.meter_info(0).unwrap().start_kwh();
    let c = client(1);
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();

    // Close-allowed on a closed relay leaves it closed.
    c.send_relay(m, RelayCommand::CloseAllowed).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);

    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    c.send_relay(m, RelayCommand::CloseAllowed).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::CloseAllowed);
    fleet.advance_to(at(2013, 1, 2, 0)).unwrap();
    // Armed but not pressed: no power, no consumption.
    assert_eq!(c.read_energy(m).await.unwrap(), start);
    assert_eq!(
        c.read_relay(m).await.unwrap(),
        RelayState::CloseAllowed,
        "stays armed until pressed"
    );

    assert!(fleet.press_button(0).unwrap());
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);
    assert!(
        !fleet.press_button(0).unwrap(),
        "pressing a closed meter does nothing"
    );
    fleet.advance_to(at(2013, 1, 3, 0)).unwrap();
    assert_eq!(c.read_energy(m).await.unwrap(), start + kwh("13.30"));

    // Pressing the button of a tripped (not armed) meter does not close it.
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    assert!(!fleet.press_button(0).unwrap());
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_command_without_relay_movement_is_visible_on_read() {
    let (fleet, addrs) = fleet(10, 10).await;
    let m = addrs[1];
    let c = client(1);
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.set_ack_without_state_change(1, true).unwrap();

    // The meter acknowledges…
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    // …but the relay did not move, and consumption goes on.
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);
    fleet.advance_to(at(2013, 1, 2, 0)).unwrap();
    let kwh_day1 = fleet.profile_kwh(1, date(2013, 1, 1)).unwrap().unwrap();
    assert_eq!(fleet.consumed_kwh(1).unwrap(), kwh_day1);

    fleet.set_ack_without_state_change(1, false).unwrap();
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_beyond_the_households_reuse_profiles_with_an_offset() {
    let (fleet, addrs) = fleet(250, 125).await;
    let profiles = Profiles::load(csv()).unwrap();
    assert_eq!(profiles.len(), 100);

    let m0 = fleet.meter_info(0).unwrap();
    let m100 = fleet.meter_info(100).unwrap();
    let m205 = fleet.meter_info(205).unwrap();
    assert_eq!(m100.household, "MAC000002");
    assert_eq!(m100.offset_days, 37);
    assert_eq!(m205.household, profiles.households()[5].id);
    assert_eq!(m205.offset_days, 74);
    assert_ne!(m0.start_register, m100.start_register);

    let c = client(1);
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.advance_to(at(2013, 1, 2, 0)).unwrap();
    // Meter 100 replays MAC000002 37 days later: 2013-01-01 uses 2013-02-07's kWh.
    let mac2 = profiles.get("MAC000002").unwrap();
    let feb7 = mac2.kwh_on(date(2013, 2, 7)).unwrap();
    assert_ne!(feb7, mac2.kwh_on(date(2013, 1, 1)).unwrap());
    assert_eq!(
        c.read_daily_frozen(addrs[100]).await.unwrap().energy_kwh,
        floor2(m100.start_kwh() + feb7)
    );
    assert_eq!(
        c.read_daily_frozen(addrs[0]).await.unwrap().energy_kwh,
        m0.start_kwh() + kwh("10.80")
    );
    let h5 = &profiles.households()[5];
    let expected = h5
        .kwh_on(date(2013, 3, 16)) // 2013-01-01 + 74 days
        .map(|k| floor2(m205.start_kwh() + k))
        .unwrap();
    assert_eq!(
        c.read_daily_frozen(addrs[205]).await.unwrap().energy_kwh,
        expected
    );

    // Offsets wrap inside the year: copy 10 is 370 mod 365 = 5 days on.
    let big = SimFleet::from_csv(csv(), 1001, 7).unwrap();
    assert_eq!(big.meter_info(1000).unwrap().offset_days, 5);
    assert_eq!(big.meter_info(1000).unwrap().household, "MAC000002");
    // Same seed, same starting registers.
    assert_eq!(big.meter_info(100).unwrap(), m100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_247_meters_span_gateways() {
    let (fleet, addrs) = fleet(300, 247).await;
    let gw0 = addrs[0].gateway;
    let gw1 = addrs[247].gateway;
    assert_ne!(gw0, gw1);
    for (i, a) in addrs.iter().enumerate() {
        let expected = if i < 247 {
            (gw0, i as u8 + 1)
        } else {
            (gw1, (i - 247) as u8 + 1)
        };
        assert_eq!((a.gateway, a.unit), expected, "meter {i}");
    }
    assert_eq!(addrs[246].unit, 247);
    assert_eq!(addrs[299].unit, 53);
    let stats = fleet.gateway_stats();
    assert_eq!(stats.len(), 2);
    assert_eq!((stats[1].first_meter, stats[1].meters), (247, 53));

    let c = client(1);
    for i in [0, 246, 247, 299] {
        assert_eq!(
            c.read_energy(addrs[i]).await.unwrap(),
            fleet.meter_info(i).unwrap().start_kwh(),
            "meter {i}"
        );
    }
    // Unit 54 is not on the second gateway: exception 0x0A, gateway path unavailable.
    let err = c
        .read_energy(MeterAddress {
            gateway: gw1,
            unit: 54,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, MeterError::Exception { code: 0x0A }), "{err}");

    assert!(matches!(
        fleet.serve(LOCALHOST, 10).await,
        Err(SimError::AlreadyServing)
    ));
    fleet.shutdown();
    assert!(matches!(
        fleet.serve(LOCALHOST, 0).await,
        Err(SimError::MetersPerGateway(0))
    ));
    assert!(matches!(
        fleet.serve(LOCALHOST, 248).await,
        Err(SimError::MetersPerGateway(248))
    ));
    // After shutdown the old gateway no longer answers.
    let err = client(0).read_energy(addrs[0]).await.unwrap_err();
    assert!(
        matches!(err, MeterError::Io { .. } | MeterError::Timeout { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_map_answers_exceptions_for_unknown_addresses_functions_and_values() {
    use tokio_modbus::prelude::*;
    let (fleet, addrs) = fleet(3, 3).await;
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addrs[0].gateway, Slave(1))
        .await
        .unwrap();

    let start = fleet.meter_info(0).unwrap().start_register;
    let words = ctx.read_input_registers(0x0000, 7).await.unwrap().unwrap();
    assert_eq!(
        words,
        vec![
            (start >> 16) as u16,
            start as u16,
            (start >> 16) as u16,
            start as u16,
            2013,
            1,
            1
        ]
    );
    assert_eq!(
        ctx.read_input_registers(0x0010, 1).await.unwrap().unwrap(),
        vec![0]
    );
    assert_eq!(
        ctx.read_input_registers(0x0007, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(0x0000, 17).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress),
        "the gap 0x0007-0x000F is not readable"
    );
    assert_eq!(
        ctx.read_input_registers(0xFFFF, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.write_single_register(0x0100, 0x99).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.write_single_register(0x0101, 0x1A).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.write_single_coil(0x0000, true).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.read_holding_registers(0x0100, 1)
            .await
            .unwrap()
            .unwrap(),
        vec![0]
    );
    ctx.write_single_register(0x0100, 0x1A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fleet.relay_state(0).unwrap(), RelayState::Open);
    assert_eq!(
        ctx.read_holding_registers(0x0100, 1)
            .await
            .unwrap()
            .unwrap(),
        vec![0x1A]
    );
    assert_eq!(
        ctx.read_input_registers(0x0010, 1).await.unwrap().unwrap(),
        vec![1]
    );
    // Nothing else changed on the other meters.
    assert_eq!(fleet.relay_state(1).unwrap(), RelayState::Closed);

    let c = client(0);
    let err = c
        .send_relay(
            MeterAddress {
                gateway: addrs[0].gateway,
                unit: 0,
            },
            RelayCommand::Trip,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, MeterError::BadValue(ref m) if m.contains("broadcast")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_one_gateway_are_serialised_and_all_correct() {
    let (fleet, addrs) = fleet(100, 100).await;
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.advance_to(at(2013, 1, 1, 17)).unwrap();
    // Each reply takes 2 ms, so overlapping requests would show up in max_in_flight.
    for i in 0..100 {
        fleet
            .set_reply_delay(i, Some(Duration::from_millis(2)))
            .unwrap();
    }
    // The timeout counts from the request going on the wire, not from joining the queue:
    // 300 requests of 2 ms each queue for longer than one timeout, and all succeed.
    let c = ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_millis(200),
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    });
    let mut tasks = Vec::new();
    for k in 0..300usize {
        let c = c.clone();
        let addr = addrs[k % 100];
        tasks.push(tokio::spawn(async move {
            if k % 3 == 0 {
                (
                    k,
                    c.read_relay(addr)
                        .await
                        .map(|r| r.to_register() as u32 as i64)
                        .map(Decimal::from),
                )
            } else {
                (k, c.read_energy(addr).await)
            }
        }));
    }
    for t in tasks {
        let (k, value) = t.await.unwrap();
        let i = k % 100;
        let expected = if k % 3 == 0 {
            Decimal::ZERO
        } else {
            hundredths_to_kwh(fleet.energy_register(i).unwrap())
        };
        assert_eq!(value.unwrap(), expected, "request {k} to meter {i}");
    }
    let stats = &fleet.gateway_stats()[0];
    assert_eq!(stats.requests, 300);
    assert_eq!(stats.connections, 1, "one connection per gateway, reused");
    assert_eq!(
        stats.max_in_flight, 1,
        "never two requests in flight on one gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_gateways_are_served_in_parallel() {
    let (fleet, addrs) = fleet(4, 2).await;
    fleet
        .set_reply_delay(0, Some(Duration::from_millis(1500)))
        .unwrap();
    assert_ne!(addrs[0].gateway, addrs[2].gateway);
    let c = ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_secs(2),
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    });
    // Gateway A's reply is held back; gateway B must answer while A is still pending.
    let slow = tokio::spawn({
        let c = c.clone();
        let addr = addrs[0];
        async move { c.read_energy(addr).await }
    });
    let b = c.read_energy(addrs[2]).await;
    assert!(
        !slow.is_finished(),
        "gateway B waited for gateway A: gateways were not parallel"
    );
    assert_eq!(b.unwrap(), fleet.meter_info(2).unwrap().start_kwh());
    assert_eq!(
        slow.await.unwrap().unwrap(),
        fleet.meter_info(0).unwrap().start_kwh()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_followed_by_correct_reads_never_a_stale_reply() {
    let (fleet, addrs) = fleet(10, 10).await;
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    let e0 = fleet.meter_info(0).unwrap().start_kwh();
    let e1 = fleet.meter_info(1).unwrap().start_kwh();
    assert_ne!(e0, e1);
    // No retries, so a stale reply could not be hidden behind a second attempt.
    let c = ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_millis(400),
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    });

    // Meter 0 answers after 1 s, the client gives up after 400 ms.
    let late = Duration::from_millis(1000);
    fleet.set_reply_delay(0, Some(late)).unwrap();
    let err = c.read_energy(addrs[0]).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Meter 0's late reply (its register) is still pending while we ask meter 1 on the same
    // gateway, and arrives during the sleep: neither read may see it.
    assert_eq!(c.read_energy(addrs[1]).await.unwrap(), e1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(c.read_energy(addrs[1]).await.unwrap(), e1);
    assert_eq!(c.read_relay(addrs[1]).await.unwrap(), RelayState::Closed);
    fleet.set_reply_delay(0, None).unwrap();
    assert_eq!(c.read_energy(addrs[0]).await.unwrap(), e0);
    assert_eq!(
        fleet.gateway_stats()[0].connections,
        2,
        "reconnected after the timeout"
    );

    // With retries, each attempt times out and the error is still a timeout.
    fleet.set_reply_delay(0, Some(late)).unwrap();
    let t0 = Instant::now();
    let err = client(2).read_energy(addrs[0]).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "3 attempts of 200 ms"
    );

    // A request abandoned by its caller mid-flight does not poison the connection either.
    let patient = ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_secs(5),
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(50), patient.read_energy(addrs[0]))
            .await
            .is_err()
    );
    assert_eq!(patient.read_energy(addrs[1]).await.unwrap(), e1);
    tokio::time::sleep(late).await;
    assert_eq!(patient.read_energy(addrs[1]).await.unwrap(), e1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_silence_is_a_timeout_and_ends_when_lifted() {
    let (fleet, addrs) = fleet(5, 5).await;
    fleet.advance_to(at(2013, 6, 1, 0)).unwrap();
    fleet.set_silent(3, true).unwrap();
    let c = client(0);
    assert!(c.read_energy(addrs[3]).await.unwrap_err().is_timeout());
    fleet.set_silent(3, false).unwrap();
    assert_eq!(
        c.read_energy(addrs[3]).await.unwrap(),
        fleet.meter_info(3).unwrap().start_kwh()
    );
}

#[test]
fn the_clock_only_moves_forward_and_meter_indexes_are_checked() {
    let fleet = SimFleet::from_csv(csv(), 3, 1).unwrap();
    assert_eq!(fleet.now(), None);
    fleet.advance_to(at(2013, 1, 2, 6)).unwrap();
    // The first call only sets the clock: nothing consumed, no freeze (not at midnight).
    assert_eq!(fleet.consumed_kwh(0).unwrap(), Decimal::ZERO);
    assert_eq!(fleet.frozen(0).unwrap(), None);
    fleet.advance_to(at(2013, 1, 2, 6)).unwrap();
    let err = fleet.advance_to(at(2013, 1, 2, 5)).unwrap_err();
    assert!(matches!(err, SimError::ClockBackwards { .. }));
    assert!(err.to_string().contains("only moves forward"), "{err}");
    let err = fleet.relay_state(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no simulated meter 3: the fleet has 3 meters (indexes 0..3)"
    );
    assert!(matches!(
        SimFleet::from_csv(csv(), 0, 1),
        Err(SimError::NoMeters)
    ));
    let err = SimFleet::from_csv("/nonexistent.csv", 1, 1).unwrap_err();
    assert!(err.to_string().contains("/nonexistent.csv"), "{err}");
}

#[test]
fn leap_day_dates_replay_28_february() {
    let fleet = SimFleet::from_csv(csv(), 1, 1).unwrap();
    let feb28 = fleet.profile_kwh(0, date(2013, 2, 28)).unwrap().unwrap();
    fleet.advance_to(at(2024, 2, 29, 0)).unwrap();
    fleet.advance_to(at(2024, 3, 1, 0)).unwrap();
    assert_eq!(fleet.consumed_kwh(0).unwrap(), feb28);
    let frozen = fleet.frozen(0).unwrap().unwrap();
    assert_eq!(frozen.date, date(2024, 3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_meters_advance_and_answer() {
    let n = 10_000;
    let (fleet, addrs) = fleet(n, 247).await;
    assert_eq!(fleet.gateway_stats().len(), 41); // ceil(10000 / 247)
    fleet.advance_to(at(2013, 4, 1, 0)).unwrap();
    // Correctness only here; speed is a benchmark's business, not a test's.
    let mut t = at(2013, 4, 1, 0);
    for _ in 0..48 {
        t += chrono::Duration::hours(1);
        fleet.advance_to(t).unwrap();
    }

    let c = client(1);
    for i in [0, 99, 100, 5_000, 9_999] {
        let info = fleet.meter_info(i).unwrap();
        let days = [date(2013, 4, 1), date(2013, 4, 2)];
        let kwhs: Vec<_> = days
            .iter()
            .map(|d| fleet.profile_kwh(i, *d).unwrap())
            .collect();
        let answering = fleet.profile_kwh(i, date(2013, 4, 3)).unwrap().is_some();
        let sum: Decimal = kwhs.iter().flatten().sum();
        let r = c.read_daily_frozen(addrs[i]).await;
        if answering {
            let r = r.unwrap();
            assert_eq!(r.date, date(2013, 4, 3));
            assert_eq!(r.energy_kwh, floor2(info.start_kwh() + sum), "meter {i}");
        } else {
            assert!(r.unwrap_err().is_timeout());
        }
    }
}

/// The generic map-driven reader, driven by `meter/maps/feegate-sim.toml`, reads the same
/// values as the hand-written client, and switches the relay through the map's `[relay]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_driven_reader_agrees_with_the_fixed_client() {
    use feegate_meter::modbus_map::RegisterMap;
    let (fleet, addrs) = fleet(4, 4).await;
    let m = addrs[2];
    let c = client(1);
    fleet.advance_to(at(2013, 1, 3, 0)).unwrap();
    let map = RegisterMap::builtin("feegate-sim").unwrap();
    assert_eq!(
        c.read_billing_energy(m, &map).await.unwrap(),
        c.read_energy(m).await.unwrap()
    );
    let frozen = c.read_daily_frozen(m).await.unwrap();
    let reg = map.register("frozen_energy_import").unwrap();
    assert_eq!(c.read_mapped(m, reg).await.unwrap(), frozen.energy_kwh);

    c.send_mapped_relay(m, &map, RelayCommand::Trip)
        .await
        .unwrap();
    assert_eq!(fleet.relay_state(2).unwrap(), RelayState::Open);
    assert_eq!(
        c.read_mapped_relay(m, &map).await.unwrap(),
        RelayState::Open
    );
    c.send_mapped_relay(m, &map, RelayCommand::CloseAllowed)
        .await
        .unwrap();
    assert_eq!(
        c.read_mapped_relay(m, &map).await.unwrap(),
        RelayState::CloseAllowed
    );

    // A meter type without a relay: refused before anything is sent.
    let sdm = RegisterMap::builtin("eastron-sdm120").unwrap();
    let err = c
        .send_mapped_relay(m, &sdm, RelayCommand::Trip)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no relay"), "{err}");
    assert_eq!(fleet.relay_state(2).unwrap(), RelayState::CloseAllowed);
    // A register the simulated meter does not have: the exception names the meter type.
    let err = c.read_billing_energy(m, &sdm).await.unwrap_err();
    assert!(err.to_string().contains("meter type"), "{err}");
}
