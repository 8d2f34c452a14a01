//! DL/T 645-2007 on a local serial port (RS485 adapter), without hardware: a pseudo-terminal
//! pair made by `socat`, the simulated meters on one end, the host's client on the other. The
//! serial line goes through the same queue, timeout, retry and stale-reply path as a TCP
//! serial gateway. Skips with a message when `socat` is not installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::dlt645::{RelayCommand, RelayState};
use feegate_meter::dlt645_client::{Dlt645Client, Dlt645Config, Dlt645Meter, Link};
use feegate_meter::registers::hundredths_to_kwh;
use feegate_meter::serial::{PtyPair, SerialLine};
use feegate_meter::sim::{SIM_PASSWORD, SimFleet};

fn csv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lcl_2013_daily_kwh_100hh.csv")
}

fn at(d: u32, h: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2013, 1, d)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
}

fn line(p: &Path) -> SerialLine {
    SerialLine::dlt645(p.to_str().unwrap())
}

fn client(timeout_ms: u64, retries: u32) -> Dlt645Client {
    Dlt645Client::new(
        Dlt645Config {
            timeout: Duration::from_millis(timeout_ms),
            retries,
            retry_backoff: Duration::from_millis(10),
            password: SIM_PASSWORD,
            ..Dlt645Config::default()
        },
        None,
    )
}

async fn serial_fleet(pty: &PtyPair, n: usize) -> (Arc<SimFleet>, Vec<Dlt645Meter>) {
    let fleet = Arc::new(SimFleet::from_csv(csv(), n, 17).unwrap());
    fleet.advance_to(at(1, 0)).unwrap();
    fleet.advance_to(at(3, 12)).unwrap();
    let meters = fleet
        .serve_dlt645_serial(line(&pty.bus()), line(&pty.host()), 0..n)
        .unwrap();
    (fleet, meters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_switches_meters_on_a_local_serial_port() {
    let Some(pty) = PtyPair::for_test("read") else {
        return;
    };
    let (fleet, meters) = serial_fleet(&pty, 3).await;
    assert!(matches!(meters[0].link, Link::Serial(l) if l.baud == 2400));
    let c = client(500, 1);
    for (i, m) in meters.iter().enumerate() {
        if !fleet.answers(i).unwrap() {
            continue;
        }
        assert_eq!(
            c.read_energy(m).await.unwrap(),
            hundredths_to_kwh(fleet.energy_register(i).unwrap()),
            "meter {i} live register over the serial port"
        );
        let frozen = c.read_daily_frozen(m).await.unwrap();
        let rec = fleet.frozen(i).unwrap().unwrap();
        assert_eq!(
            (frozen.date, frozen.energy_kwh),
            (rec.date, hundredths_to_kwh(rec.energy_hundredths))
        );
    }
    // Trip, confirmed by status word 3 read back over the line.
    let m = &meters[0];
    c.send_relay(m, RelayCommand::Trip, at(4, 0)).await.unwrap();
    assert_eq!(c.read_status(m).await.unwrap().relay(), RelayState::Open);
    assert_eq!(
        fleet.relay_state(0).unwrap(),
        feegate_meter::registers::RelayState::Open
    );
}

/// A late reply (the meter answers after the timeout) is discarded as stale when the next
/// request is on the line, and a silent meter is a timeout, never a value; the line's queue
/// goes on serving the other meters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replies_are_stale_and_silence_is_a_timeout_on_a_serial_line() {
    let Some(pty) = PtyPair::for_test("stale") else {
        return;
    };
    let (fleet, meters) = serial_fleet(&pty, 3).await;
    let c = client(150, 0);
    fleet
        .set_reply_delay(0, Some(Duration::from_millis(400)))
        .unwrap();
    fleet.set_silent(1, true).unwrap();
    let e = c.read_energy(&meters[0]).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let e = c.read_energy(&meters[1]).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // Meter 0's late reply arrived meanwhile; meter 2's read must not take it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    fleet.set_silent(2, false).unwrap();
    let got = c.read_energy(&meters[2]).await.unwrap();
    assert_eq!(got, hundredths_to_kwh(fleet.energy_register(2).unwrap()));
    assert!(c.stale_replies() >= 1, "the late reply was discarded");
    // A second client cannot open the port while the first holds it (exclusive lock): two
    // queues on one RS485 line would put two requests on it at once.
    let e = client(600, 0).read_energy(&meters[0]).await.unwrap_err();
    assert!(e.to_string().contains("exclusive"), "{e}");
    drop(c);
    // With retries and a patient timeout, the slow meter is read.
    let patient = client(600, 1);
    assert_eq!(
        patient.read_energy(&meters[0]).await.unwrap(),
        hundredths_to_kwh(fleet.energy_register(0).unwrap())
    );
}
