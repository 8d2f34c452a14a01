//! A mixed fleet in the daily job: Modbus TCP, DL/T 645 behind serial gateways and DL/T 645
//! behind Q/GDW 1376.1 terminals, read and switched through each meter's stored link; and
//! stored meter replacements billed as old tail + new head, on the real consumption data.

mod common;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use feegate::demo::{DemoProtocol, ProtocolMix, Scenario};
use feegate::money::kwh_to_centi_kwh;
use feegate::replacement::{Recorded, ReplacementError, ReplacementOrder, record};
use feegate_meter::registers::{RelayCommand, RelayState};
use rust_decimal::Decimal;
use sqlx::Row;

fn account(i: usize) -> String {
    format!("35{:08}", i + 1)
}

fn meter(i: usize) -> String {
    format!("M{:012}", i + 1)
}

fn now(s: &Scenario) -> NaiveDateTime {
    feegate::clock::Clock::now(s.clock.as_ref())
}

async fn reading(s: &Scenario, meter_id: &str, date: NaiveDate) -> Option<i64> {
    sqlx::query("SELECT register_centi_kwh FROM readings WHERE meter_id = $1 AND reading_date = $2")
        .bind(meter_id)
        .bind(feegate::db::ds(date))
        .fetch_optional(&s.host.db.pool)
        .await
        .unwrap()
        .map(|r| r.try_get(0).unwrap())
}

/// Runs the county to its third day and checks that meter `i` (which has data that day) was
/// read exactly: its stored reading is its frozen register. Returns the day.
async fn day_2_reads_meter(
    s: &mut Scenario,
    opts: &feegate::demo::DemoOptions,
    i: usize,
    how: &str,
) -> NaiveDate {
    s.run_days(2).await.unwrap();
    let day = opts.start + Duration::days(2);
    s.run_day(day, true).await.unwrap();
    assert!(s.fleet.answers(i).unwrap(), "meter {i} has data on {day}");
    assert_eq!(
        reading(s, &meter(i), day).await,
        Some(i64::from(
            s.fleet.frozen(i).unwrap().unwrap().energy_hundredths
        )),
        "{how}"
    );
    day
}

/// Meter `i`'s link as the master data stores it.
async fn stored_link(s: &Scenario, i: usize) -> feegate_meter::fleet::MeterLink {
    let row = sqlx::query(&format!(
        "SELECT {} FROM meters m WHERE m.meter_id = $1",
        feegate::collection::LINK_COLUMNS
    ))
    .bind(meter(i))
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap();
    feegate::collection::link_from_row(&row, 0).unwrap()
}

/// Creates a close-allowed command for meter `i`'s account and runs the relay stage once.
async fn close_allowed(s: &Scenario, i: usize, key: &str) -> (i64, feegate::relay::RelayReport) {
    let mut conn = s.host.db.pool.acquire().await.unwrap();
    let id = feegate::relay::create(
        &mut conn,
        &account(i),
        key,
        RelayCommand::CloseAllowed,
        now(s),
        &s.host.config.relay,
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);
    (id, drive(s).await)
}

async fn drive(s: &Scenario) -> feegate::relay::RelayReport {
    let floor = &s.host.county.floor;
    feegate::relay::drive(&s.host.db, &s.host.meters, floor, "xianyou", now(s))
        .await
        .unwrap()
}

#[test]
fn protocol_mix_parses_assigns_and_refuses_clearly() {
    let mix: ProtocolMix = "modbus=60,dlt645=30,qgdw376=10".parse().unwrap();
    assert_eq!(mix.counts(20), (12, 6, 2));
    assert_eq!(
        mix.counts(7),
        (5, 2, 0),
        "shares round down, Modbus takes the rest"
    );
    let of: Vec<_> = (0..20).map(|i| mix.protocol_of(i, 20)).collect();
    assert_eq!(of[11], DemoProtocol::Modbus);
    assert_eq!(of[12], DemoProtocol::Dlt645);
    assert_eq!(of[17], DemoProtocol::Dlt645);
    assert_eq!(of[18], DemoProtocol::Qgdw376);
    assert_eq!(mix.to_string().parse::<ProtocolMix>().unwrap(), mix);
    for (bad, says) in [
        ("modbus=60,dlt645=30", "add up to 90%"),
        ("modbus=50,iec62056=50", "unknown protocol \"iec62056\""),
        ("modbus", "not PROTOCOL=PERCENT"),
        ("modbus=1.5,dlt645=98.5", "whole percentage"),
    ] {
        let e = bad.parse::<ProtocolMix>().unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// 20 meters, 12 Modbus, 6 DL/T 645 gateway, 2 behind a terminal: every answering meter's
/// frozen register is stored exactly, whatever its protocol; a trip and a close-allowed go
/// through the DL/T 645 and 1376.1 links and are confirmed by status word 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_with_all_three_protocols_reads_and_switches_every_meter_through_its_link() {
    let Some((mut opts, _db)) = common::small_county_db(
        "a_day_with_all_three_protocols_reads_and_switches_every_meter_through_its_link",
        20,
        3,
        7,
    )
    .await
    else {
        return;
    };
    opts.meters_per_gateway = 4;
    opts.protocol_mix = "modbus=60,dlt645=30,qgdw376=10".parse().unwrap();
    let mut s = Scenario::new(&opts, &[]).await.unwrap();

    let protocols: Vec<(String, String)> =
        sqlx::query("SELECT meter_id, protocol FROM meters ORDER BY meter_id")
            .fetch_all(&s.host.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
            .collect();
    let count = |p: &str| protocols.iter().filter(|(_, q)| q == p).count();
    assert_eq!(
        (count("modbus-tcp"), count("dlt645"), count("qgdw376")),
        (12, 6, 2)
    );

    s.run_days(2).await.unwrap();
    let day = opts.start + Duration::days(2);
    s.run_day(day, true).await.unwrap();
    let mut per_protocol_ok = std::collections::BTreeMap::<String, u32>::new();
    for (i, (meter_id, protocol)) in protocols.iter().enumerate() {
        let stored = reading(&s, meter_id, day).await;
        let frozen = s.fleet.frozen(i).unwrap();
        if s.fleet.answers(i).unwrap() {
            let f = frozen.expect("an answering meter froze a value");
            assert_eq!(
                stored,
                Some(i64::from(f.energy_hundredths)),
                "{meter_id} ({protocol}) stores exactly the frozen register"
            );
            *per_protocol_ok.entry(protocol.clone()).or_default() += 1;
        } else {
            assert_eq!(stored, None, "{meter_id}: a silent meter is no reading");
        }
    }
    for p in ["modbus-tcp", "dlt645", "qgdw376"] {
        assert!(
            per_protocol_ok.get(p).copied().unwrap_or(0) > 0,
            "{p} meters were read: {per_protocol_ok:?}"
        );
    }
    // Every attempt is recorded per meter and protocol: ok for the answering meters.
    let attempts: i64 = sqlx::query(
        "SELECT COUNT(*) FROM collection_attempts WHERE business_date = $1 AND outcome = 'ok'",
    )
    .bind(feegate::db::ds(day))
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(attempts, i64::from(per_protocol_ok.values().sum::<u32>()));

    // Relays through DL/T 645 (meter 13) and the terminal (meter 19).
    for i in [13usize, 19] {
        let link = stored_link(&s, i).await;
        let valid_until = now(&s) + Duration::hours(1);
        s.host
            .meters
            .send_relay(&link, RelayCommand::Trip, valid_until)
            .await
            .unwrap();
        assert_eq!(
            s.host.meters.read_relay(&link).await.unwrap(),
            RelayState::Open
        );
        assert_eq!(s.fleet.relay_state(i).unwrap(), RelayState::Open);
        // Close-allowed through the host's relay stage: armed, then confirmed after the
        // customer presses the button.
        let (id, r) = close_allowed(&s, i, &format!("test-close-{i}")).await;
        assert!(
            r.events
                .iter()
                .any(|e| e.command_id == id && e.awaiting_customer),
            "meter {i}: close-allowed armed: {r:?}"
        );
        assert_eq!(s.fleet.relay_state(i).unwrap(), RelayState::CloseAllowed);
        assert!(s.fleet.press_button(i).unwrap());
        let r = drive(&s).await;
        assert!(
            r.events.iter().any(|e| e.command_id == id && e.confirmed),
            "meter {i}: confirmed by status word 3 after the button: {r:?}"
        );
    }
}

/// A DL/T 645 meter that takes only sealed commands, and no security module configured: the
/// command fails at once with the reason, and nothing reaches the meter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_needs_the_security_module_fails_clearly_without_one() {
    let Some((mut opts, _db)) = common::small_county_db(
        "a_meter_that_needs_the_security_module_fails_clearly_without_one",
        4,
        1,
        3,
    )
    .await
    else {
        return;
    };
    opts.protocol_mix = "modbus=50,dlt645=50".parse().unwrap();
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let i = 3;
    sqlx::query("UPDATE meters SET requires_security = 1 WHERE meter_id = $1")
        .bind(meter(i))
        .execute(&s.host.db.pool)
        .await
        .unwrap();
    let (id, r) = close_allowed(&s, i, "test-sealed").await;
    let e = r.events.iter().find(|e| e.command_id == id).unwrap();
    assert!(!e.confirmed);
    let why = e.detail.as_deref().unwrap();
    assert!(
        why.starts_with("not sent:") && why.contains("security module"),
        "{why}"
    );
    let status: String = sqlx::query("SELECT status FROM relay_commands WHERE command_id = $1")
        .bind(id)
        .fetch_one(&s.host.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(status, "failed");
}

/// The schema refuses a meter whose link does not fit its protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_link_that_does_not_fit_the_protocol() {
    let Some((opts, _db)) = common::small_county_db(
        "the_schema_refuses_a_link_that_does_not_fit_the_protocol",
        1,
        1,
        3,
    )
    .await
    else {
        return;
    };
    let s = Scenario::new(&opts, &[]).await.unwrap();
    let insert = |protocol: &'static str,
                  gateway: Option<&'static str>,
                  address: Option<&'static str>,
                  terminal: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO meters (meter_id, customer_id, protocol, gateway, meter_address, terminal, terminal_port, installed_on)
             VALUES ($1, 'C00000001', $2, $3, $4, $5, 31, '2013-01-01')",
        )
        .bind(format!("X-{protocol}-{}", address.unwrap_or("none")))
        .bind(protocol)
        .bind(gateway)
        .bind(address)
        .bind(terminal)
        .execute(&s.host.db.pool)
    };
    // DL/T 645 without an address; behind a gateway and a terminal at once; an address
    // that is not 12 digits; a terminal meter without a terminal.
    assert!(
        insert("dlt645", Some("127.0.0.1:1"), None, None)
            .await
            .is_err()
    );
    assert!(
        insert(
            "dlt645",
            Some("127.0.0.1:1"),
            Some("350100000001"),
            Some("3501-0001")
        )
        .await
        .is_err()
    );
    assert!(
        insert("dlt645", Some("127.0.0.1:1"), Some("3501"), None)
            .await
            .is_err()
    );
    assert!(
        insert("qgdw376", None, Some("350100000002"), None)
            .await
            .is_err()
    );
    assert!(
        insert("iec62056", Some("127.0.0.1:1"), Some("350100000003"), None)
            .await
            .is_err()
    );
    // And accepts the good ones.
    insert("dlt645", Some("127.0.0.1:1"), Some("350100000004"), None)
        .await
        .unwrap();
    insert("qgdw376", None, Some("350100000005"), Some("3501-0001"))
        .await
        .unwrap();
}

/// A meter replaced during a day (real consumption, simulator fault "replacement"): without
/// a record the backwards register is held; with the stored record the day is billed as
/// (old final − old previous) + (new current − new start), which is exactly what the
/// household consumed that day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_replacement_bills_the_day_as_old_tail_plus_new_head() {
    replacement_case(None).await;
}

/// The same on PostgreSQL (migration 0005 there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_replacement_on_postgresql() {
    let Some(pg) = common::pg_database("a_stored_replacement_on_postgresql").await else {
        return;
    };
    replacement_case(Some(pg.url.clone())).await;
}

async fn replacement_case(db_url: Option<String>) {
    let mut opts = common::small_county(6, 4, 5);
    opts.db_url = db_url;
    opts.protocol_mix = "modbus=50,dlt645=50".parse().unwrap();
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    s.run_days(2).await.unwrap();
    let d2 = opts.start + Duration::days(2);
    let d3 = d2 + Duration::days(1);
    s.run_day(d2, true).await.unwrap();
    // Pick one Modbus and one DL/T 645 meter that answer on both days.
    let mut picked = Vec::new();
    for i in [0usize, 1, 2, 3, 4, 5] {
        if picked.iter().any(|p: &usize| (*p < 3) == (i < 3)) {
            continue;
        }
        let has_data = |d: NaiveDate| s.fleet.profile_kwh(i, d).unwrap().is_some();
        if reading(&s, &meter(i), d2).await.is_some() && has_data(d2) && has_data(d3) {
            picked.push(i);
        }
    }
    assert_eq!(picked.len(), 2, "a Modbus and a DL/T 645 meter with data");
    // Noon of day 2: both meters replaced; the new registers start at 12.34 kWh.
    let noon = d2.and_hms_opt(12, 0, 0).unwrap();
    s.advance(noon).unwrap();
    let mut old_finals = Vec::new();
    for &i in &picked {
        old_finals.push(s.fleet.replace_meter(i, 1234).unwrap());
    }
    // Record the first only; the second stays unrecorded.
    let order = |i: usize, old_final: u32| ReplacementOrder {
        account_id: account(i),
        new_meter_id: format!("{}-N", meter(i)),
        old_final_kwh: Decimal::new(i64::from(old_final), 2),
        new_start_kwh: Decimal::new(1234, 2),
        replaced_at: noon,
        replaced_by: "Lin Wei".into(),
        new_address: None,
        new_unit: None,
    };
    let (a, b) = (picked[0], picked[1]);
    let r = record(&s.host.db, &order(a, old_finals[0]), noon)
        .await
        .unwrap();
    assert_eq!(
        r,
        Recorded::New {
            old_meter_id: meter(a)
        }
    );
    // Idempotent; a different record for the same meter is refused; so is a final reading
    // below the old meter's last stored reading, and a time in the future.
    assert_eq!(
        record(&s.host.db, &order(a, old_finals[0]), noon)
            .await
            .unwrap(),
        Recorded::AlreadyRecorded {
            old_meter_id: meter(a)
        }
    );
    let mut other = order(a, old_finals[0] + 1);
    let e = record(&s.host.db, &other, noon).await.unwrap_err();
    assert!(matches!(e, ReplacementError::Invalid(_)), "{e}");
    other = order(b, 0);
    let e = record(&s.host.db, &other, noon)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("below meter"), "{e}");
    other = order(b, old_finals[1]);
    other.replaced_at = noon + Duration::hours(1);
    let e = record(&s.host.db, &other, noon)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("in the future"), "{e}");

    s.run_day(d3, true).await.unwrap();
    let settled = |i: usize| {
        let db = s.host.db.clone();
        async move {
            sqlx::query(
                "SELECT kwh_centi FROM settlements WHERE account_id = $1 AND business_date = $2",
            )
            .bind(account(i))
            .bind(feegate::db::ds(d2))
            .fetch_optional(&db.pool)
            .await
            .unwrap()
            .map(|r| r.try_get::<i64, _>(0).unwrap())
        }
    };
    // Recorded: the new meter was read, and the day billed across the replacement.
    let opening = reading(&s, &meter(a), d2).await.unwrap();
    let closing = reading(&s, &format!("{}-N", meter(a)), d3).await.unwrap();
    let billed = settled(a).await.expect("the replacement day is settled");
    assert_eq!(
        billed,
        (i64::from(old_finals[0]) - opening) + (closing - 1234),
        "old tail + new head"
    );
    assert_eq!(
        billed,
        kwh_to_centi_kwh(s.fleet.profile_kwh(a, d2).unwrap().unwrap()).unwrap(),
        "exactly what the household consumed on {d2}"
    );
    // Unrecorded: the old meter's register went backwards; held, nothing billed.
    assert_eq!(settled(b).await, None);
    let holds: i64 = sqlx::query(
        "SELECT COUNT(*) FROM holds WHERE account_id = $1 AND stage = 'reading' AND released_at IS NULL",
    )
    .bind(account(b))
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(holds, 1);
}

/// A DL/T 645 meter on a local serial port in the master data (a socat pseudo-terminal pair
/// stands in for the RS485 adapter): the daily job reads it like any other meter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_job_reads_a_dlt645_meter_on_a_local_serial_port() {
    let Some(pty) = feegate_meter::serial::PtyPair::for_test("daily") else {
        return;
    };
    let Some((opts, _db)) = common::small_county_db(
        "the_daily_job_reads_a_dlt645_meter_on_a_local_serial_port",
        3,
        2,
        9,
    )
    .await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    let i = 1;
    let line =
        |p: std::path::PathBuf| feegate_meter::serial::SerialLine::dlt645(p.to_str().unwrap());
    s.fleet
        .serve_dlt645_serial(line(pty.bus()), line(pty.host()), i..i + 1)
        .unwrap();
    sqlx::query(
        "UPDATE meters SET protocol = 'dlt645', gateway = NULL, unit_id = NULL, meter_address = $2,
                           serial_port = $3, baud_rate = 2400, parity = 'even' WHERE meter_id = $1",
    )
    .bind(meter(i))
    .bind(s.fleet.dlt645_address(i).to_string())
    .bind(pty.host().to_str().unwrap())
    .execute(&s.host.db.pool)
    .await
    .unwrap();
    day_2_reads_meter(&mut s, &opts, i, "read over the serial port").await;
}

/// A Modbus RTU meter on a local serial port in the master data (a socat pseudo-terminal
/// pair stands in for the RS485 adapter, the simulator serves RTU on the other end): the
/// daily job reads its frozen register exactly, and the relay stage trips it through the
/// stored link, confirmed by a fresh read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_job_reads_and_switches_a_modbus_rtu_meter_on_a_local_serial_port() {
    let Some(pty) = feegate_meter::serial::PtyPair::for_test("daily-rtu") else {
        return;
    };
    let Some((opts, _db)) = common::small_county_db(
        "the_daily_job_reads_and_switches_a_modbus_rtu_meter_on_a_local_serial_port",
        3,
        2,
        9,
    )
    .await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    let i = 1;
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    // The bus end at 19200 8E1, stored with the meter (not the 9600 8N1 default).
    let line = |p: std::path::PathBuf| {
        feegate_meter::serial::SerialLine::new(&path(p), 19200, feegate_meter::serial::Parity::Even)
    };
    let units = s
        .fleet
        .serve_modbus_rtu(line(pty.bus()), line(pty.host()), i..i + 1, None)
        .unwrap();
    assert_eq!(units[0].unit, 1);
    sqlx::query(
        "UPDATE meters SET protocol = 'modbus-rtu', gateway = NULL, unit_id = 1,
                           serial_port = $2, baud_rate = 19200, parity = 'even' WHERE meter_id = $1",
    )
    .bind(meter(i))
    .bind(path(pty.host()))
    .execute(&s.host.db.pool)
    .await
    .unwrap();
    let link = stored_link(&s, i).await;
    assert_eq!(link, feegate_meter::fleet::MeterLink::ModbusRtu(units[0]));
    let day = day_2_reads_meter(&mut s, &opts, i, "read over Modbus RTU").await;
    let outcome: String = sqlx::query(
        "SELECT outcome FROM collection_attempts WHERE meter_id = $1 AND business_date = $2",
    )
    .bind(meter(i))
    .bind(feegate::db::ds(day))
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(outcome, "ok");
    // Close-allowed through the relay stage: armed (awaiting the customer), then confirmed
    // by a fresh read after the button; a trip directly through the fleet client.
    let valid_until = now(&s) + Duration::hours(1);
    s.host
        .meters
        .send_relay(&link, RelayCommand::Trip, valid_until)
        .await
        .unwrap();
    assert_eq!(
        s.host.meters.read_relay(&link).await.unwrap(),
        RelayState::Open
    );
    let (id, r) = close_allowed(&s, i, "test-rtu-close").await;
    assert!(
        r.events
            .iter()
            .any(|e| e.command_id == id && e.awaiting_customer),
        "close-allowed armed over RTU: {r:?}"
    );
    assert!(s.fleet.press_button(i).unwrap());
    let r = drive(&s).await;
    assert!(
        r.events.iter().any(|e| e.command_id == id && e.confirmed),
        "confirmed by a fresh read after the button: {r:?}"
    );
    assert_eq!(s.fleet.relay_state(i).unwrap(), RelayState::Closed);
}

/// A meter whose stored link the host cannot use (a Modbus RTU meter on a serial port that
/// does not exist: the adapter is unplugged) is a failed "io" attempt naming why; the other
/// meters are still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_link_fails_that_meter_only() {
    let Some((opts, _db)) =
        common::small_county_db("an_unusable_link_fails_that_meter_only", 3, 2, 9).await
    else {
        return;
    };
    let mut s = Scenario::new(&opts, &[]).await.unwrap();
    sqlx::query(
        "UPDATE meters SET protocol = 'modbus-rtu', gateway = NULL, serial_port = '/dev/feegate-no-such-port' WHERE meter_id = $1",
    )
    .bind(meter(0))
    .execute(&s.host.db.pool)
    .await
    .unwrap();
    s.run_days(1).await.unwrap();
    let day = opts.start + Duration::days(1);
    let r = s.run_day(day, true).await.unwrap();
    let answering = (1..3).filter(|i| s.fleet.answers(*i).unwrap()).count();
    assert_eq!(r.read_ok as usize, answering);
    let row = sqlx::query(
        "SELECT outcome, detail FROM collection_attempts WHERE meter_id = $1 AND business_date = $2",
    )
    .bind(meter(0))
    .bind(feegate::db::ds(day))
    .fetch_one(&s.host.db.pool)
    .await
    .unwrap();
    assert_eq!(row.try_get::<String, _>(0).unwrap(), "io");
    let detail: String = row.try_get(1).unwrap();
    assert!(
        detail.contains("/dev/feegate-no-such-port") && detail.contains("RS485 adapter"),
        "{detail}"
    );
}
