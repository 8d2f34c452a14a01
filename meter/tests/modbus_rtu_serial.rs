//! Modbus RTU on a local serial port (RS485 adapter), without hardware: a pseudo-terminal pair
//! made by `socat`, the simulated meters serving RTU on one end, the host's Modbus client on
//! the other. One queue per port, per-request timeout, retries, stale and garbled replies
//! discarded, relay commands confirmed by a fresh read, and the register maps. Skips with a
//! message when `socat` is not installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use feegate_meter::client::{ClientConfig, MeterError, ModbusBus, ModbusMeterClient, RtuAddress};
use feegate_meter::modbus_map::RegisterMap;
use feegate_meter::registers::{RelayCommand, RelayState, hundredths_to_kwh};
use feegate_meter::serial::{PtyPair, SerialLine};
use feegate_meter::sim::SimFleet;

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
    SerialLine::modbus_rtu(p.to_str().unwrap())
}

fn client(timeout_ms: u64, retries: u32) -> ModbusMeterClient {
    ModbusMeterClient::new(ClientConfig {
        timeout: Duration::from_millis(timeout_ms),
        retries,
        retry_backoff: Duration::from_millis(10),
    })
}

/// `n` meters on one RTU line, clock at 3 Jan 12:00 (frozen records for 3 Jan).
fn rtu_fleet(
    pty: &PtyPair,
    n: usize,
    map: Option<RegisterMap>,
) -> (Arc<SimFleet>, Vec<RtuAddress>) {
    let fleet = Arc::new(SimFleet::from_csv(csv(), n, 23).unwrap());
    fleet.advance_to(at(1, 0)).unwrap();
    fleet.advance_to(at(3, 12)).unwrap();
    let meters = fleet
        .serve_modbus_rtu(line(&pty.bus()), line(&pty.host()), 0..n, map)
        .unwrap();
    (fleet, meters)
}

fn register_kwh(fleet: &SimFleet, i: usize) -> rust_decimal::Decimal {
    hundredths_to_kwh(fleet.energy_register(i).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_switches_meters_over_modbus_rtu_on_a_local_serial_port() {
    let Some(pty) = PtyPair::for_test("rtu-read") else {
        return;
    };
    let (fleet, meters) = rtu_fleet(&pty, 3, None);
    assert_eq!(meters.iter().map(|m| m.unit).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(meters[0].line.baud, 9600);
    assert!(
        meters[0].to_string().ends_with("9600 8N1 unit 1"),
        "{}",
        meters[0]
    );
    let c = client(500, 1);
    let answering: Vec<usize> = (0..3).filter(|i| fleet.answers(*i).unwrap()).collect();
    assert!(!answering.is_empty(), "some meter has data on 3 Jan");
    for &i in &answering {
        assert_eq!(
            c.read_energy(meters[i]).await.unwrap(),
            register_kwh(&fleet, i),
            "meter {i}: live register over RTU"
        );
        let frozen = c.read_daily_frozen(meters[i]).await.unwrap();
        let rec = fleet.frozen(i).unwrap().unwrap();
        assert_eq!(
            (frozen.date, frozen.energy_kwh),
            (rec.date, hundredths_to_kwh(rec.energy_hundredths))
        );
    }
    // The same requests through the simulator's register map as data.
    let map = RegisterMap::builtin("feegate-sim").unwrap();
    let i = answering[0];
    assert_eq!(
        c.read_billing_energy(meters[i], &map).await.unwrap(),
        register_kwh(&fleet, i)
    );
    // Concurrent requests on one line go through its queue one at a time: every reply is
    // the addressed meter's own.
    let reads = answering.iter().map(|&i| {
        let c = c.clone();
        let m = meters[i];
        async move { (i, c.read_energy(m).await.unwrap()) }
    });
    for (i, got) in futures_join(reads).await {
        assert_eq!(
            got,
            register_kwh(&fleet, i),
            "meter {i} in a concurrent batch"
        );
    }

    // Trip, confirmed by a fresh read of the relay register; close-allowed waits for the
    // customer; the button closes it.
    let m = meters[i];
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Open);
    assert_eq!(fleet.relay_state(i).unwrap(), RelayState::Open);
    c.send_mapped_relay(m, &map, RelayCommand::CloseAllowed)
        .await
        .unwrap();
    assert_eq!(
        c.read_mapped_relay(m, &map).await.unwrap(),
        RelayState::CloseAllowed
    );
    assert!(fleet.press_button(i).unwrap());
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);
    // An acknowledgement is not an outcome: the meter acks but its relay does not move.
    fleet.set_ack_without_state_change(i, true).unwrap();
    c.send_relay(m, RelayCommand::Trip).await.unwrap();
    assert_eq!(c.read_relay(m).await.unwrap(), RelayState::Closed);
    fleet.set_ack_without_state_change(i, false).unwrap();

    // Unit 0 is the RS485 broadcast address: refused before anything is sent.
    let broadcast = RtuAddress { unit: 0, ..m };
    let e = c
        .send_relay(broadcast, RelayCommand::Trip)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("broadcast"), "{e}");
    assert_eq!(fleet.relay_state(i).unwrap(), RelayState::Closed);
    // A unit that is not on the line: silence (no gateway to answer 0x0A), a timeout.
    let absent = RtuAddress { unit: 9, ..m };
    let e = c.read_energy(absent).await.unwrap_err();
    assert!(
        matches!(
            e,
            MeterError::Timeout {
                bus: ModbusBus::Serial(_),
                unit: 9
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("baud rate and parity"), "{e}");
}

/// Tiny join-all without pulling in the futures crate.
async fn futures_join<F: std::future::Future + Send + 'static>(
    fs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A real meter type's map over RTU: the Eastron SDM120's float32 energy register at
/// 0x0048 (FC04) shows the simulated register; quantities the simulator does not model are
/// refused by the meter (exception 02); the SDM120 has no relay, so a relay command fails
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdm120_map_is_read_over_rtu() {
    let Some(pty) = PtyPair::for_test("rtu-map") else {
        return;
    };
    let map = RegisterMap::builtin("eastron-sdm120").unwrap();
    let (fleet, meters) = rtu_fleet(&pty, 2, Some(map.clone()));
    let i = (0..2).find(|i| fleet.answers(*i).unwrap()).unwrap();
    let c = client(500, 0);
    let energy = c.read_billing_energy(meters[i], &map).await.unwrap();
    assert_eq!(
        energy,
        register_kwh(&fleet, i),
        "float32, 7 significant digits"
    );
    let voltage = map.register("voltage").unwrap();
    let e = c.read_mapped(meters[i], voltage).await.unwrap_err();
    assert!(matches!(e, MeterError::Exception { code: 0x02 }), "{e}");
    let e = c
        .send_mapped_relay(meters[i], &map, RelayCommand::Trip)
        .await
        .unwrap_err();
    assert!(matches!(e, MeterError::Unsupported(_)), "{e}");
    assert_eq!(fleet.relay_state(i).unwrap(), RelayState::Closed);
}

/// RTU has no transaction id. A reply that comes after the timeout is stale: when it waits on
/// the line before the next request it is discarded, and when it arrives while another meter
/// is being asked it is recognised by its unit id, discarded and the request repeated; a
/// garbled reply (bad CRC) is never a value; silence is a timeout after every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_garbled_replies_are_discarded_and_silence_is_a_timeout() {
    let Some(pty) = PtyPair::for_test("rtu-stale") else {
        return;
    };
    let (fleet, meters) = rtu_fleet(&pty, 3, None);
    let answering: Vec<usize> = (0..3).filter(|i| fleet.answers(*i).unwrap()).collect();
    if answering.len() < 3 {
        panic!("every household of seed 23 has data on 3 Jan: {answering:?}");
    }
    let c = client(400, 0);

    // 1. Late reply, waiting on the line: meter 0 answers after 600 ms.
    fleet
        .set_reply_delay(0, Some(Duration::from_millis(600)))
        .unwrap();
    let e = c.read_energy(meters[0]).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = c.stale_replies();
    assert_eq!(
        c.read_energy(meters[2]).await.unwrap(),
        register_kwh(&fleet, 2),
        "meter 2 gets its own value, not meter 0's late reply"
    );
    assert!(c.stale_replies() > before, "the late reply was discarded");

    // 2. Late reply arriving while meter 2 is being asked: recognised by its unit id.
    let e = c.read_energy(meters[0]).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let before = c.stale_replies();
    assert_eq!(
        c.read_energy(meters[2]).await.unwrap(),
        register_kwh(&fleet, 2)
    );
    assert!(c.stale_replies() > before, "meter 0's reply was not taken");
    fleet.set_reply_delay(0, None).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. Garbled replies (bad CRC) are never a value: a timeout, then a clean read.
    fleet.set_garbled(1, true).unwrap();
    let e = c.read_energy(meters[1]).await.unwrap_err();
    assert!(e.is_timeout(), "a garbled reply counts as none: {e}");
    fleet.set_garbled(1, false).unwrap();
    assert_eq!(
        c.read_energy(meters[1]).await.unwrap(),
        register_kwh(&fleet, 1)
    );

    // 4. Silence: a timeout after every attempt (2 × 400 ms), never a zero.
    fleet.set_silent(1, true).unwrap();
    let patient = client(400, 1);
    drop(c);
    let t0 = Instant::now();
    let e = patient.read_energy(meters[1]).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        patient.read_energy(meters[0]).await.unwrap(),
        register_kwh(&fleet, 0),
        "the line's queue goes on serving the other meters"
    );

    // 5. One queue per line: a second client cannot open the port while the first holds it
    // (exclusive lock), so two requests can never be on the line at once.
    let e = client(400, 0).read_energy(meters[0]).await.unwrap_err();
    assert!(
        matches!(
            e,
            MeterError::Io {
                bus: ModbusBus::Serial(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("exclusive"), "{e}");
}
