//! RS485 on a local serial port (a USB–RS485 adapter, a board's UART): the line settings and
//! opening the port with tokio-serial. The DL/T 645 client ([`crate::dlt645_client`]) and the
//! Modbus client ([`crate::client`], Modbus RTU) drive a serial line through the same queue,
//! timeouts and retries as a TCP gateway (the crate's `bus` module); the line is one RS485
//! bus, so one request at a time. A port carries one protocol: the two clients each hold the
//! ports they use open (exclusively), so DL/T 645 and Modbus RTU meters need separate ports.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{
    ClearBuffer, DataBits, SerialPort as _, SerialPortBuilderExt, SerialStream, StopBits,
};

/// What to check when a serial port cannot be opened or fails.
pub(crate) const PORT_HINT: &str = "check that the port exists (the RS485 adapter is plugged \
     in), that no other program holds it, and that this user may open it";

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl std::str::FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Parity::None),
            "even" => Ok(Parity::Even),
            "odd" => Ok(Parity::Odd),
            other => Err(format!("parity {other:?}: use none, even or odd")),
        }
    }
}

/// A local serial port and its settings: 8 data bits, 1 stop bit, `baud` and `parity`.
/// DL/T 645-2007 meters default to 2400 baud, even parity ([`SerialLine::dlt645`]).
///
/// Copy: the device path is interned once per distinct path (a host has a handful of ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SerialLine {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: &'static str,
    /// Bits per second.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
}

fn intern(path: &str) -> &'static str {
    static PATHS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = PATHS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = set.get(path) {
        return p;
    }
    let p: &'static str = Box::leak(path.to_owned().into_boxed_str());
    set.insert(p);
    p
}

impl SerialLine {
    /// A line on `path`.
    pub fn new(path: &str, baud: u32, parity: Parity) -> Self {
        SerialLine {
            path: intern(path),
            baud,
            parity,
        }
    }

    /// A line with the DL/T 645-2007 default settings: 2400 baud, 8E1.
    pub fn dlt645(path: &str) -> Self {
        Self::new(path, 2400, Parity::Even)
    }

    /// A line with Feegate's Modbus RTU default settings: 9600 baud, 8N1 (the default the
    /// `meters` schema documents, migration 0005). Meters ship with various settings (and
    /// the Modbus serial-line guide asks for even parity by default): store the meter's
    /// `baud_rate` / `parity` when they differ.
    pub fn modbus_rtu(path: &str) -> Self {
        Self::new(path, 9600, Parity::None)
    }

    /// Opens the port (8 data bits, 1 stop bit). Errors name the port.
    pub fn open(&self) -> io::Result<SerialStream> {
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        tokio_serial::new(self.path, self.baud)
            .data_bits(DataBits::Eight)
            .stop_bits(StopBits::One)
            .parity(parity)
            .timeout(Duration::from_millis(10))
            .open_native_async()
            .map_err(|e| {
                let e = io::Error::from(e);
                io::Error::new(
                    e.kind(),
                    format!("cannot open serial port {}: {e}", self.path),
                )
            })
    }
}

impl fmt::Display for SerialLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(f, "serial port {} {} 8{p}1", self.path, self.baud)
    }
}

/// An open serial port shared by the protocol stack that reads and writes it (tokio-modbus
/// owns its transport) and the queue that discards stale input before each request.
/// Only the bus's queue holder uses it, so the inner lock is never contended.
#[derive(Clone)]
pub(crate) struct SharedPort(Arc<Mutex<SerialStream>>);

impl SharedPort {
    pub(crate) fn new(stream: SerialStream) -> Self {
        SharedPort(Arc::new(Mutex::new(stream)))
    }

    fn port(&self) -> std::sync::MutexGuard<'_, SerialStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops whatever the line has delivered but nobody asked for yet (a late reply to an
    /// earlier request, noise); returns how many bytes that was.
    pub(crate) fn discard_input(&self) -> io::Result<u32> {
        let port = self.port();
        let n = port.bytes_to_read().map_err(io::Error::from)?;
        if n > 0 {
            port.clear(ClearBuffer::Input).map_err(io::Error::from)?;
        }
        Ok(n)
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.port()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.port()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.port()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.port()).poll_shutdown(cx)
    }
}

/// A pseudo-terminal pair made by `socat` (two connected serial ports, no hardware): for tests
/// and for trying the serial path on a desk. The ports are the symlinks [`host`](Self::host)
/// and [`bus`](Self::bus) in a private directory; socat is stopped when this is dropped.
#[derive(Debug)]
pub struct PtyPair {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl PtyPair {
    /// Starts `socat` with two raw pseudo-terminals. Fails when socat is not installed or the
    /// ports do not appear within 2 s.
    pub fn new(name: &str) -> io::Result<PtyPair> {
        let dir = std::env::temp_dir().join(format!("feegate-pty-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let end = |n: &str| format!("pty,raw,echo=0,link={}", dir.join(n).display());
        let child = std::process::Command::new("socat")
            .args([end("host"), end("bus")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot run socat ({e}); install socat"))
            })?;
        let pair = PtyPair { child, dir };
        for _ in 0..100 {
            if pair.host().exists() && pair.bus().exists() {
                return Ok(pair);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "socat did not create the pseudo-terminal pair within 2 s",
        ))
    }

    /// A pair for a test, or `None` after printing why (socat missing): the test skips.
    pub fn for_test(name: &str) -> Option<PtyPair> {
        PtyPair::new(name)
            .inspect_err(|e| eprintln!("skipping: {e}"))
            .ok()
    }

    /// The host's end.
    pub fn host(&self) -> std::path::PathBuf {
        self.dir.join("host")
    }

    /// The meters' end (the RS485 bus side).
    pub fn bus(&self) -> std::path::PathBuf {
        self.dir.join("bus")
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
