//! `feegate meter read|relay` and `feegate dlt645 broadcast-time` through the real binary,
//! on every link: a local serial port (DL/T 645 and Modbus RTU, a socat pseudo-terminal pair
//! standing in for the RS485 adapter) and behind a Q/GDW 1376.1 terminal (the command listens
//! as the master station, the simulated terminal dials in). The simulator runs in this test
//! process, on real Low Carbon London consumption. Serial cases skip without socat.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::registers::{RelayState, hundredths_to_kwh};
use feegate_meter::serial::{PtyPair, SerialLine};
use feegate_meter::sim::SimFleet;

fn at(d: u32, h: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2013, 1, d)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
}

/// Three simulated meters at 3 Jan 2013 12:00 (frozen records for 3 Jan).
fn fleet() -> Arc<SimFleet> {
    let f = Arc::new(
        SimFleet::from_csv(common::shared_data("lcl_2013_daily_kwh_100hh.csv"), 3, 31).unwrap(),
    );
    f.advance_to(at(1, 0)).unwrap();
    f.advance_to(at(3, 12)).unwrap();
    f
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

/// Runs the binary off the runtime (the simulator keeps serving meanwhile): (exit code,
/// stdout, stderr).
async fn feegate(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::feegate_bin())
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = feegate(args).await;
    assert_eq!(code, Some(0), "{args:?}\n{stdout}\n{stderr}");
    stdout
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// `feegate meter relay` on `link` with `command`, valid until 4 Jan, with a DL/T 645
/// `password` if given.
fn relay<'a>(link: &[&'a str], command: &'a str, password: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["meter", "relay"];
    args.extend_from_slice(link);
    args.extend(["--command", command, "--valid-until", "2013-01-04T00:00:00"]);
    if let Some(p) = password {
        args.extend(["--password", p]);
    }
    args
}

/// The first meter that answers today (its household has data for 3 Jan).
fn answering(f: &SimFleet) -> usize {
    (0..3)
        .find(|i| f.answers(*i).unwrap())
        .expect("a meter with data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_read_and_relay_over_modbus_rtu_on_a_serial_port() {
    let Some(pty) = PtyPair::for_test("tool-rtu") else {
        return;
    };
    let f = fleet();
    let line = |p| SerialLine::new(&path(p), 19200, feegate_meter::serial::Parity::Even);
    f.serve_modbus_rtu(line(pty.bus()), line(pty.host()), 0..3, None)
        .unwrap();
    let i = answering(&f);
    let unit = (i + 1).to_string();
    let host = path(pty.host());
    let link = [
        "--protocol",
        "modbus",
        "--serial",
        &host,
        "--baud",
        "19200",
        "--parity",
        "even",
        "--unit",
        &unit,
        "--timeout-ms",
        "1000",
    ];
    let read = json(&ok(&[&["meter", "read"][..], &link[..]].concat()).await);
    assert_eq!(
        read["registers"]["energy_import"]["value"],
        hundredths_to_kwh(f.energy_register(i).unwrap()).to_string(),
        "{read}"
    );
    assert_eq!(read["registers"]["relay"], "closed", "{read}");
    assert!(
        read["meter"].as_str().unwrap().contains("19200 8E1"),
        "{read}"
    );

    let out = ok(&relay(&link, "trip", None)).await;
    assert!(out.contains("relay open"), "{out}");
    assert_eq!(f.relay_state(i).unwrap(), RelayState::Open);
    let out = ok(&relay(&link, "close-allowed", None)).await;
    assert!(out.contains("awaiting customer"), "{out}");
    assert_eq!(f.relay_state(i).unwrap(), RelayState::CloseAllowed);
    // An acknowledgement that does not move the relay is reported as not done.
    f.set_ack_without_state_change(i, true).unwrap();
    let (code, _, err) = feegate(&relay(&link, "direct-close", None)).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("not done"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_read_and_relay_over_dlt645_on_a_serial_port() {
    let Some(pty) = PtyPair::for_test("tool-645") else {
        return;
    };
    let f = fleet();
    let line = |p| SerialLine::dlt645(&path(p));
    f.serve_dlt645_serial(line(pty.bus()), line(pty.host()), 0..3)
        .unwrap();
    let i = answering(&f);
    let address = f.dlt645_address(i).to_string();
    let host = path(pty.host());
    // 2400 8E1 is the DL/T 645 default: no --baud needed.
    let read = json(&ok(&["meter", "read", "--serial", &host, "--address", &address]).await);
    assert_eq!(
        read["energy_kwh"],
        hundredths_to_kwh(f.energy_register(i).unwrap()).to_string()
    );
    assert_eq!(read["daily_frozen"]["date"], "2013-01-03", "{read}");
    assert_eq!(read["relay"], "closed");
    let link = ["--serial", &host, "--address", &address];
    let out = ok(&relay(&link, "trip", Some("02:123456"))).await;
    assert!(out.contains("trip confirmed"), "{out}");
    assert_eq!(f.relay_state(i).unwrap(), RelayState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_read_and_relay_behind_a_1376_terminal() {
    let f = fleet();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    // The simulated terminal dials the master station address it is configured with, and
    // redials until someone listens there: the command below.
    let terminal: feegate_meter::qgdw376::TerminalAddress = "3501-0007".parse().unwrap();
    f.run_terminal(
        listen.parse().unwrap(),
        terminal,
        0..3,
        std::time::Duration::from_secs(60),
    );
    let i = answering(&f);
    let address = f.dlt645_address(i).to_string();
    let link = [
        "--terminal",
        "3501-0007",
        "--listen",
        &listen,
        "--login-wait-s",
        "10",
        "--address",
        &address,
    ];
    let read = json(&ok(&[&["meter", "read"][..], &link[..]].concat()).await);
    assert_eq!(
        read["energy_kwh"],
        hundredths_to_kwh(f.energy_register(i).unwrap()).to_string()
    );
    assert!(
        read["link"]
            .as_str()
            .unwrap()
            .contains("terminal 3501-0007"),
        "{read}"
    );
    // The relay was closed: close-allowed leaves it closed.
    let out = ok(&relay(&link, "close-allowed", Some("02:123456"))).await;
    assert!(out.contains("close_allowed confirmed"), "{out}");
    let out = ok(&relay(&link, "trip", Some("02:123456"))).await;
    assert!(out.contains("trip confirmed"), "{out}");
    assert_eq!(f.relay_state(i).unwrap(), RelayState::Open);
    // A terminal that never logs in: a clear error after the wait.
    let (code, _, err) = feegate(&[
        "meter",
        "read",
        "--terminal",
        "3501-0999",
        "--listen",
        &format!("127.0.0.1:{}", common::free_port()),
        "--login-wait-s",
        "1",
        "--address",
        &address,
    ])
    .await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("3501-0999") && err.contains("did not log in"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt645_broadcast_time_sets_a_meter_clock_over_a_serial_port() {
    let Some(pty) = PtyPair::for_test("tool-time") else {
        return;
    };
    let f = fleet();
    let line = |p| SerialLine::dlt645(&path(p));
    f.serve_dlt645_serial(line(pty.bus()), line(pty.host()), 0..3)
        .unwrap();
    let i = answering(&f);
    let j = (0..3).rev().find(|j| f.answers(*j).unwrap()).unwrap();
    assert_ne!(i, j, "two meters with data on 3 Jan");
    // Meter i runs 2 minutes fast, meter j 10 minutes fast.
    f.set_clock_offset(i, 120).unwrap();
    f.set_clock_offset(j, 600).unwrap();
    let host = path(pty.host());
    let broadcast = |check: String| {
        let host = host.clone();
        async move {
            ok(&[
                "dlt645",
                "broadcast-time",
                "--serial",
                &host,
                "--time",
                "2013-01-03T12:00:00",
                "--check",
                &check,
            ])
            .await
        }
    };
    let out = broadcast(f.dlt645_address(i).to_string()).await;
    assert!(out.contains("clock: 2013-01-03 12:00:00 (set)"), "{out}");
    assert_eq!(f.meter_time(i).unwrap(), Some(at(3, 12)));
    // Meter j is 10 minutes off: beyond ±5 min, it ignores the broadcast.
    let out = broadcast(f.dlt645_address(j).to_string()).await;
    assert!(
        out.contains("+600 s") && out.contains("not applied"),
        "{out}"
    );
    assert_eq!(
        f.meter_time(j).unwrap(),
        Some(at(3, 12) + chrono::Duration::seconds(600))
    );
}

/// Wrong combinations of flags: refused before anything is opened, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_link_flags_are_refused_saying_what_to_do() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["meter", "read", "--address", "350100000000"],
            "--gateway HOST:PORT",
        ),
        (
            &[
                "meter",
                "read",
                "--gateway",
                "127.0.0.1:1",
                "--serial",
                "/dev/ttyUSB0",
                "--address",
                "350100000000",
            ],
            "alternatives",
        ),
        (
            &[
                "meter",
                "read",
                "--protocol",
                "modbus",
                "--serial",
                "/dev/ttyUSB0",
                "--unit",
                "1",
            ],
            "--baud is required",
        ),
        (
            &[
                "meter",
                "read",
                "--protocol",
                "modbus",
                "--serial",
                "/dev/ttyUSB0",
                "--baud",
                "9600",
                "--unit",
                "0",
            ],
            "1..=247",
        ),
        (
            &[
                "meter",
                "relay",
                "--protocol",
                "modbus",
                "--gateway",
                "127.0.0.1:1",
                "--unit",
                "0",
                "--command",
                "trip",
                "--valid-until",
                "2013-01-04T00:00:00",
            ],
            "broadcast address",
        ),
        (
            &[
                "meter",
                "read",
                "--gateway",
                "127.0.0.1:1",
                "--baud",
                "2400",
                "--address",
                "350100000000",
            ],
            "--baud applies to a serial port",
        ),
        (
            &[
                "meter",
                "read",
                "--terminal",
                "3501-0001",
                "--address",
                "350100000000",
            ],
            "--terminal needs --listen",
        ),
        (
            &[
                "meter",
                "read",
                "--protocol",
                "modbus",
                "--terminal",
                "3501-0001",
                "--listen",
                "127.0.0.1:1",
                "--unit",
                "1",
            ],
            "not Modbus",
        ),
        (
            &[
                "meter",
                "read",
                "--serial",
                "/dev/ttyUSB0",
                "--address",
                "350100000000",
                "--unit",
                "3",
            ],
            "--unit is a Modbus unit id",
        ),
        (
            &[
                "meter",
                "read",
                "--serial",
                "/dev/ttyUSB0",
                "--parity",
                "mark",
                "--address",
                "350100000000",
            ],
            "use none, even or odd",
        ),
        (
            &[
                "dlt645",
                "broadcast-time",
                "--listen",
                "127.0.0.1:1",
                "--gateway",
                "127.0.0.1:1",
            ],
            "use it with --terminal",
        ),
    ];
    for (args, says) in cases {
        let (code, stdout, stderr) = feegate(args).await;
        assert_eq!(code, Some(1), "{args:?}: {stdout}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A serial port that is not there: named, with what to check.
    let (code, _, err) = feegate(&[
        "meter",
        "read",
        "--serial",
        "/dev/feegate-no-such-port",
        "--address",
        "350100000000",
        "--timeout-ms",
        "100",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("/dev/feegate-no-such-port 2400 8E1") && err.contains("RS485 adapter"),
        "{err}"
    );
    // A Modbus meter that answers no register at all is a failed read, not a report of
    // errors with exit status 0.
    let gateway = format!("127.0.0.1:{}", common::free_port());
    let (code, stdout, err) = feegate(&[
        "meter",
        "read",
        "--protocol",
        "modbus",
        "--gateway",
        &gateway,
        "--unit",
        "1",
        "--timeout-ms",
        "200",
    ])
    .await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        err.contains("answered no register") && err.contains("check the link"),
        "{err}"
    );
}
