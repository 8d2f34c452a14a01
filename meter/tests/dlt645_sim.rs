//! DL/T 645-2007 over TCP serial gateways and through Q/GDW 1376.1 terminals, against the
//! simulated fleet (meters following real Low Carbon London households).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::client::{ClientConfig, ModbusMeterClient};
use feegate_meter::dlt645::{self, OperatorCode, RelayCommand, RelayState};
use feegate_meter::dlt645_client::{Dlt645Client, Dlt645ClientError, Dlt645Config, Dlt645Meter};
use feegate_meter::qgdw376::{Pw, TerminalAddress};
use feegate_meter::registers::hundredths_to_kwh;
use feegate_meter::sim::{SIM_PASSWORD, SimFleet};
use feegate_meter::terminal::Master;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn csv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lcl_2013_daily_kwh_100hh.csv")
}

fn at(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
}

fn config(timeout_ms: u64, retries: u32) -> Dlt645Config {
    Dlt645Config {
        timeout: Duration::from_millis(timeout_ms),
        retries,
        retry_backoff: Duration::from_millis(10),
        password: SIM_PASSWORD,
        operator: OperatorCode::new(0x1234_5678),
        ..Dlt645Config::default()
    }
}

async fn fleet(n: usize, per: usize) -> (Arc<SimFleet>, Vec<Dlt645Meter>) {
    let fleet = Arc::new(SimFleet::from_csv(csv(), n, 7).unwrap());
    let meters = fleet.serve_dlt645(LOCALHOST, per).await.unwrap();
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.advance_to(at(2013, 1, 3, 12)).unwrap();
    (fleet, meters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_energy_frozen_and_status_as_the_meter_holds_them() {
    let (fleet, meters) = fleet(6, 3).await;
    let c = Dlt645Client::new(config(500, 1), None);
    for (i, m) in meters.iter().enumerate() {
        assert_eq!(m.address, fleet.dlt645_address(i));
        let live = c.read_energy(m).await.unwrap();
        assert_eq!(live, hundredths_to_kwh(fleet.energy_register(i).unwrap()));
        let frozen = c.read_daily_frozen(m).await.unwrap();
        let rec = fleet.frozen(i).unwrap().unwrap();
        assert_eq!(frozen.date, rec.date);
        assert_eq!(frozen.date, NaiveDate::from_ymd_opt(2013, 1, 3).unwrap());
        assert_eq!(frozen.energy_kwh, hundredths_to_kwh(rec.energy_hundredths));
        let status = c.read_status(m).await.unwrap();
        assert_eq!(status.relay(), RelayState::Closed);
        assert!(!status.keep_power());
    }
    // The same meters over Modbus TCP agree.
    let addrs = fleet.serve(LOCALHOST, 3).await.unwrap();
    let mc = ModbusMeterClient::new(ClientConfig::default());
    assert_eq!(
        mc.read_energy(addrs[4]).await.unwrap(),
        c.read_energy(&meters[4]).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_commands_are_confirmed_only_by_status_word_3() {
    let (fleet, meters) = fleet(3, 3).await;
    let c = Dlt645Client::new(config(500, 1), None);
    let m = &meters[1];
    let deadline = at(2013, 1, 4, 0);

    c.send_relay(m, RelayCommand::Trip, deadline).await.unwrap();
    let s = c.read_status(m).await.unwrap();
    assert_eq!(
        (s.relay(), s.relay_command()),
        (RelayState::Open, RelayState::Open)
    );

    // Close-allowed: commanded closed, still open until the customer presses the button.
    c.send_relay(m, RelayCommand::CloseAllowed, deadline)
        .await
        .unwrap();
    let s = c.read_status(m).await.unwrap();
    assert_eq!(
        (s.relay(), s.relay_command()),
        (RelayState::Open, RelayState::Closed)
    );
    assert!(fleet.press_button(1).unwrap());
    assert_eq!(c.read_status(m).await.unwrap().relay(), RelayState::Closed);

    // An acknowledgement without a state change is visible on the status read.
    fleet.set_ack_without_state_change(1, true).unwrap();
    c.send_relay(m, RelayCommand::Trip, deadline).await.unwrap();
    assert_eq!(c.read_status(m).await.unwrap().relay(), RelayState::Closed);
    fleet.set_ack_without_state_change(1, false).unwrap();

    // Keep-power: the trip is refused, and the error says why.
    c.send_relay(m, RelayCommand::KeepPowerOn, deadline)
        .await
        .unwrap();
    assert!(c.read_status(m).await.unwrap().keep_power());
    let err = c
        .send_relay(m, RelayCommand::Trip, deadline)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keep-power"), "{err}");
    assert_eq!(
        fleet.relay_state(1).unwrap(),
        feegate_meter::registers::RelayState::Closed
    );

    // A deadline already passed (simulated clock 2013-01-03 12:00) is refused.
    c.send_relay(m, RelayCommand::KeepPowerOff, deadline)
        .await
        .unwrap();
    let err = c
        .send_relay(m, RelayCommand::Trip, at(2013, 1, 3, 11))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");

    // A wrong password is refused; the hint points at the password and the security module.
    let wrong = Dlt645Client::new(
        Dlt645Config {
            password: dlt645::Password::new(0x02, 0x000000),
            ..config(500, 0)
        },
        None,
    );
    let err = wrong
        .send_relay(m, RelayCommand::Trip, deadline)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("password") && text.contains("security module"),
        "{text}"
    );
    assert_eq!(
        fleet.relay_state(1).unwrap(),
        feegate_meter::registers::RelayState::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_needs_the_security_module_fails_clearly_without_one() {
    let (fleet, meters) = fleet(2, 2).await;
    fleet.set_requires_security(0, true).unwrap();
    let c = Dlt645Client::new(config(300, 0), None);
    let m = Dlt645Meter {
        requires_security: true,
        ..meters[0]
    };
    let err = c
        .send_relay(&m, RelayCommand::Trip, at(2013, 1, 4, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Dlt645ClientError::Security { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("configure the county's security module"),
        "{err}"
    );
    assert_eq!(
        fleet.relay_state(0).unwrap(),
        feegate_meter::registers::RelayState::Closed
    );
    // Sent in plaintext anyway (meter not marked): the meter refuses it.
    let err = c
        .send_relay(&meters[0], RelayCommand::Trip, at(2013, 1, 4, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Dlt645ClientError::Refused { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replies_are_discarded_as_stale_and_faults_are_never_values() {
    let (fleet, meters) = fleet(4, 4).await;
    let c = Dlt645Client::new(config(150, 0), None);
    // Meter 0 answers after the client gave up; its late reply must not answer meter 1.
    fleet
        .set_reply_delay(0, Some(Duration::from_millis(250)))
        .unwrap();
    let err = c.read_energy(&meters[0]).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let v1 = c.read_energy(&meters[1]).await.unwrap();
    assert_eq!(v1, hundredths_to_kwh(fleet.energy_register(1).unwrap()));
    assert!(
        c.stale_replies() >= 1,
        "the late reply was seen and discarded"
    );
    fleet.set_reply_delay(0, None).unwrap();

    // Silence and garbled replies are missing reads, never a value.
    fleet.set_silent(2, true).unwrap();
    assert!(c.read_energy(&meters[2]).await.unwrap_err().is_timeout());
    fleet.set_garbled(3, true).unwrap();
    assert!(c.read_energy(&meters[3]).await.unwrap_err().is_timeout());
    fleet.set_garbled(3, false).unwrap();
    assert!(c.read_energy(&meters[3]).await.is_ok());

    // A transient zero is read as what the meter says (0.00): the host's check flags it.
    fleet.set_transient_zero(3, true).unwrap();
    assert_eq!(
        c.read_energy(&meters[3]).await.unwrap(),
        "0".parse().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_behind_a_1376_terminal_are_read_and_switched() {
    let fleet = Arc::new(SimFleet::from_csv(csv(), 5, 7).unwrap());
    fleet.advance_to(at(2013, 1, 1, 0)).unwrap();
    fleet.advance_to(at(2013, 1, 2, 6)).unwrap();
    let master = Master::bind(SocketAddr::new(LOCALHOST, 0), 2, Pw::default())
        .await
        .unwrap();
    let t: TerminalAddress = "0200-1234".parse().unwrap();
    let meters = fleet.run_terminal(master.local_addr(), t, 0..5, Duration::from_millis(50));
    assert!(
        master.wait_online(t, Duration::from_secs(5)).await,
        "terminal logs in"
    );
    assert_eq!(master.online(), vec![t]);

    let c = Dlt645Client::new(config(500, 1), Some(master.clone()));
    for (i, m) in meters.iter().enumerate() {
        assert_eq!(
            c.read_energy(m).await.unwrap(),
            hundredths_to_kwh(fleet.energy_register(i).unwrap())
        );
    }
    let f = c.read_daily_frozen(&meters[2]).await.unwrap();
    assert_eq!(f.date, NaiveDate::from_ymd_opt(2013, 1, 2).unwrap());

    c.send_relay(&meters[4], RelayCommand::Trip, at(2013, 1, 3, 0))
        .await
        .unwrap();
    assert_eq!(
        c.read_status(&meters[4]).await.unwrap().relay(),
        RelayState::Open
    );

    // Silent and garbled meters behind the terminal: missing reads.
    fleet.set_silent(1, true).unwrap();
    assert!(c.read_energy(&meters[1]).await.unwrap_err().is_timeout());
    fleet.set_garbled(3, true).unwrap();
    assert!(c.read_energy(&meters[3]).await.unwrap_err().is_timeout());

    // Heartbeats arrive and are confirmed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (logins, heartbeats, _) = master.counters();
    assert_eq!(logins, 1);
    assert!(heartbeats >= 1);

    // An unknown terminal is reported offline, naming it.
    let other = Dlt645Meter {
        link: feegate_meter::dlt645_client::Link::Terminal {
            terminal: "0200-9999".parse().unwrap(),
            port: 31,
        },
        ..meters[0]
    };
    let err = c.read_energy(&other).await.unwrap_err();
    assert!(
        err.to_string().contains("0200-9999") && err.to_string().contains("not online"),
        "{err}"
    );
}

/// Read address (13H): one meter on the bus answers with its address; several collide and
/// nothing usable comes back (a timeout, never a wrong address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_address_finds_the_only_meter_on_a_bus() {
    let (sim, meters) = fleet(4, 1).await;
    let c = Dlt645Client::new(config(300, 0), None);
    for (i, m) in meters.iter().enumerate() {
        if !sim.answers(i).unwrap() {
            continue;
        }
        assert_eq!(c.read_address(m.link).await.unwrap(), sim.dlt645_address(i));
    }
    let (_fleet2, shared) = fleet(4, 4).await;
    let e = c.read_address(shared[0].link).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
}

/// Broadcast time (08H to 999999999999): no meter replies; every meter on the bus whose clock
/// is within ±5 minutes of the time sent sets its clock to it, once a day; a meter further
/// off ignores it (DL/T 645-2007). A later read of date 04000101 and time 04000102 shows the
/// result, through a serial gateway and through a 1376.1 terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_time_sets_the_clocks_it_may_and_nobody_replies() {
    let (fleet, meters) = fleet(3, 3).await;
    let noon = at(2013, 1, 3, 12);
    let secs = chrono::Duration::seconds;
    let c = Dlt645Client::new(config(500, 0), None);
    // Meter 0 runs 3 min fast, meter 1 2 min slow, meter 2 10 min fast.
    for (i, off) in [(0, 180), (1, -120), (2, 600)] {
        fleet.set_clock_offset(i, off).unwrap();
        assert_eq!(c.read_clock(&meters[i]).await.unwrap(), noon + secs(off));
    }
    c.broadcast_time(meters[0].link, noon).await.unwrap();
    assert_eq!(c.read_clock(&meters[0]).await.unwrap(), noon);
    assert_eq!(c.read_clock(&meters[1]).await.unwrap(), noon);
    assert_eq!(
        c.read_clock(&meters[2]).await.unwrap(),
        noon + secs(600),
        "10 minutes off: beyond ±5 min, ignored"
    );
    assert_eq!(c.stale_replies(), 0, "no meter replied to the broadcast");
    // Once a day: a second broadcast the same day changes nothing.
    c.broadcast_time(meters[0].link, noon + secs(120))
        .await
        .unwrap();
    assert_eq!(c.read_clock(&meters[0]).await.unwrap(), noon);
    // The meter's clock runs with the simulated one; the next day it may be set again.
    fleet.advance_to(at(2013, 1, 4, 12)).unwrap();
    let next = at(2013, 1, 4, 12) + secs(90);
    c.broadcast_time(meters[0].link, next).await.unwrap();
    assert_eq!(c.read_clock(&meters[0]).await.unwrap(), next);
    assert_eq!(fleet.meter_time(0).unwrap(), Some(next));
    // Not around midnight, where the daily freeze happens.
    fleet.advance_to(at(2013, 1, 5, 0) + secs(60)).unwrap();
    let m1 = fleet.meter_time(1).unwrap().unwrap();
    c.broadcast_time(meters[1].link, m1 + secs(30))
        .await
        .unwrap();
    assert_eq!(c.read_clock(&meters[1]).await.unwrap(), m1);

    // Through a collection terminal: the terminal forwards it, the meters behind it set
    // their clocks.
    let master = Master::bind(SocketAddr::new(LOCALHOST, 0), 2, Pw::default())
        .await
        .unwrap();
    let t: TerminalAddress = "0200-0042".parse().unwrap();
    let behind = fleet.run_terminal(master.local_addr(), t, 0..3, Duration::from_secs(60));
    assert!(master.wait_online(t, Duration::from_secs(5)).await);
    let tc = Dlt645Client::new(config(500, 0), Some(master));
    fleet.advance_to(at(2013, 1, 5, 9)).unwrap();
    let before = fleet.meter_time(2).unwrap().unwrap();
    let set = before - secs(240);
    tc.broadcast_time(behind[2].link, set).await.unwrap();
    assert_eq!(tc.read_clock(&behind[2]).await.unwrap(), set);
}
