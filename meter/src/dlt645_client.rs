//! The host's DL/T 645-2007 client: meters on an RS485 bus behind a transparent TCP serial
//! gateway, on a local serial port ([`crate::serial`]), or behind a Q/GDW 1376.1 collection
//! terminal ([`crate::terminal::Master`]).
//!
//! - One serialised queue per gateway / serial port / terminal: never two requests in flight
//!   on one bus. A serial port and a gateway share one code path (a byte stream to the bus).
//! - A reply is accepted only from the addressed meter, for the function (and data identifier)
//!   asked (an error reply carries no identifier: it is matched by address and function only);
//!   anything else — a late reply to an earlier request, another meter — is stale and
//!   discarded ([`Dlt645Client::stale_replies`] counts them). DL/T 645 has no transaction id, so
//!   the connection is kept after a timeout and stale replies are filtered by content.
//! - Timeouts, I/O errors and garbled replies (which the stream decoder drops) are retried
//!   `retries` times after `retry_backoff`; refusals by the meter are final.
//! - Relay commands go in plaintext with the configured password and operator code, or sealed
//!   by the county's [`SecurityModule`] for meters marked `requires_security`; with no module
//!   configured such a command fails before anything is sent. An acknowledgement is not an
//!   outcome: confirm with [`Dlt645Client::read_status`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bus::{Queues, connect_tcp, retrying};
use crate::dlt645::{
    self as d, Address, DataValue, Di, Dlt645Error, Frame, Function, MeterError as RefusedWhy,
    NoSecurityModule, OperatorCode, Password, RelayAuthorisation, RelayCommand, RelayControl,
    SecurityModule, StatusWord3, StreamDecoder,
};
use crate::qgdw376::TerminalAddress;
use crate::serial::SerialLine;
use crate::terminal::{Master, TerminalError};

/// How a meter is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Link {
    /// A transparent TCP serial gateway on the meter's RS485 bus.
    Gateway(SocketAddr),
    /// An RS485 bus on a local serial port.
    Serial(SerialLine),
    /// A Q/GDW 1376.1 terminal logged in to this host's master station, on its `port`.
    Terminal {
        /// The terminal.
        terminal: TerminalAddress,
        /// Its RS485 port number (e.g. 31 = 1FH).
        port: u8,
    },
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Gateway(a) => write!(f, "gateway {a}"),
            Link::Serial(line) => write!(f, "{line}"),
            Link::Terminal { terminal, port } => write!(f, "terminal {terminal} port {port}"),
        }
    }
}

impl Link {
    /// What to check when the link itself fails.
    fn io_hint(&self) -> &'static str {
        match self {
            Link::Serial(_) => crate::serial::PORT_HINT,
            Link::Gateway(_) | Link::Terminal { .. } => "check its address, power and network link",
        }
    }
}

/// A DL/T 645 meter: its link and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Dlt645Meter {
    /// How it is reached.
    pub link: Link,
    /// Its 12-digit address.
    pub address: Address,
    /// The meter accepts relay commands only sealed by a security module (ESAM).
    pub requires_security: bool,
}

impl std::fmt::Display for Dlt645Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "meter {} via {}", self.address, self.link)
    }
}

/// Client settings.
#[derive(Clone)]
pub struct Dlt645Config {
    /// Wait for one reply. Default 2 s (2400 baud and a gateway hop).
    pub timeout: Duration,
    /// Repetitions after a failure. Default 2.
    pub retries: u32,
    /// Pause before a repetition. Default 200 ms.
    pub retry_backoff: Duration,
    /// Password for plaintext relay commands (PA P0 P1 P2).
    pub password: Password,
    /// Operator code C0..C3 sent with relay commands.
    pub operator: OperatorCode,
    /// The county's security module; [`NoSecurityModule`] unless one is configured.
    pub security: Arc<dyn SecurityModule + Send + Sync>,
}

impl std::fmt::Debug for Dlt645Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlt645Config")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

impl Default for Dlt645Config {
    fn default() -> Self {
        Dlt645Config {
            timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            password: Password::new(0x02, 0),
            operator: OperatorCode::default(),
            security: Arc::new(NoSecurityModule),
        }
    }
}

/// A failed DL/T 645 exchange. Each message says what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Dlt645ClientError {
    /// No (valid) reply in time after all retries.
    #[error(
        "{meter} did not answer in time (a garbled or foreign reply counts as none): check the \
         meter's power, its RS485 wiring and address, and the gateway"
    )]
    Timeout {
        /// The meter.
        meter: Dlt645Meter,
    },
    /// The link failed.
    #[error("cannot talk to {link}: {source}; {hint}", hint = link.io_hint())]
    Io {
        /// The link.
        link: Link,
        /// What failed.
        source: io::Error,
    },
    /// The terminal could not forward.
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    /// The meter answered with an error reply.
    #[error("{meter}: {why}{hint}")]
    Refused {
        /// The meter.
        meter: Dlt645Meter,
        /// What was refused.
        function: &'static str,
        /// The decoded error word.
        why: RefusedWhy,
        /// What to do.
        hint: &'static str,
    },
    /// The meter requires a sealed relay command and sealing failed (e.g. no module).
    #[error("{meter}: {source}")]
    Security {
        /// The meter.
        meter: Dlt645Meter,
        /// The module's error.
        source: d::SecurityModuleError,
    },
    /// A frame could not be built or a reply not decoded.
    #[error("{meter}: {source}")]
    Codec {
        /// The meter.
        meter: Dlt645Meter,
        /// The codec error (names the broken field).
        source: Dlt645Error,
    },
}

impl Dlt645ClientError {
    /// True when nothing was heard from the meter (the read is missing, never a zero).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Dlt645ClientError::Timeout { .. }
                | Dlt645ClientError::Terminal(TerminalError::Timeout(_))
        )
    }

    fn retryable(&self) -> bool {
        matches!(
            self,
            Dlt645ClientError::Timeout { .. }
                | Dlt645ClientError::Io { .. }
                | Dlt645ClientError::Terminal(TerminalError::Timeout(_) | TerminalError::Io { .. })
        )
    }
}

/// A daily frozen reading (日冻结) read over DL/T 645.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrozenReading645 {
    /// The date whose 00:00 the reading was frozen at.
    pub date: NaiveDate,
    /// Total forward active energy then, kWh.
    pub energy_kwh: Decimal,
}

/// A byte stream to an RS485 bus: a TCP connection to a gateway or a serial port.
trait BusStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> BusStream for T {}

struct GatewayConn {
    stream: Box<dyn BusStream>,
    decoder: StreamDecoder,
}

struct Inner {
    config: Dlt645Config,
    master: Option<Master>,
    /// One queue per bus reached as a byte stream (gateways and serial ports).
    gateways: Queues<Link, GatewayConn>,
    stale: AtomicU64,
}

/// DL/T 645 client. Cheap to clone; clones share connections and queues.
#[derive(Clone)]
pub struct Dlt645Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dlt645Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlt645Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What a reply must be to answer a request.
#[derive(Clone, Copy)]
struct Expect {
    /// The meter addressed; any unicast address for a wildcard request (read address).
    address: Address,
    function: Function,
    di: Option<Di>,
}

impl Expect {
    fn matches(&self, f: &Frame) -> bool {
        let from_meter = if self.address.is_wildcard() {
            f.address().is_unicast()
        } else {
            f.address() == self.address
        };
        if !from_meter || !f.control().is_reply() || f.control().function() != self.function {
            return false;
        }
        match self.di {
            // A normal read reply starts with the DI asked; error replies carry no DI.
            Some(di) if !f.control().is_abnormal() => {
                f.data().len() >= 4 && Di::from_wire(&f.data()[..4]).ok() == Some(di)
            }
            _ => true,
        }
    }
}

impl Dlt645Client {
    /// A client; `master` is needed for meters behind terminals.
    pub fn new(config: Dlt645Config, master: Option<Master>) -> Self {
        Dlt645Client {
            inner: Arc::new(Inner {
                config,
                master,
                gateways: Queues::new(),
                stale: AtomicU64::new(0),
            }),
        }
    }

    /// Replies discarded as stale or foreign so far.
    pub fn stale_replies(&self) -> u64 {
        self.inner.stale.load(Ordering::Relaxed)
    }

    /// Reads total forward active energy (DI 00010000), kWh.
    pub async fn read_energy(&self, m: &Dlt645Meter) -> Result<Decimal, Dlt645ClientError> {
        let v = self.read(m, Di(0x0001_0000)).await?;
        v.energy_kwh()
            .ok_or_else(|| self.unexpected(m, "an energy value", &v))
    }

    /// Reads the last daily frozen reading: freeze time (05060001), forward active energy
    /// (05060101), and the freeze time again (so a freeze between the reads cannot pair a date
    /// with another day's register). Fails if the freeze time is not a real date.
    pub async fn read_daily_frozen(
        &self,
        m: &Dlt645Meter,
    ) -> Result<FrozenReading645, Dlt645ClientError> {
        let t = self.read(m, Di(0x0506_0001)).await?;
        let DataValue::DateTime(dt) = &t else {
            return Err(self.unexpected(m, "a freeze time", &t));
        };
        let date = dt
            .to_naive()
            .map(|n| n.date())
            .ok_or_else(|| self.unexpected(m, "a valid freeze time", &t))?;
        let e = self.read(m, Di(0x0506_0101)).await?;
        let energy_kwh = e
            .energy_kwh()
            .ok_or_else(|| self.unexpected(m, "a frozen energy block", &e))?;
        // A midnight between the two reads would pair a date with the next day's register.
        let again = self.read(m, Di(0x0506_0001)).await?;
        if again != t {
            return Err(Dlt645ClientError::Codec {
                meter: *m,
                source: Dlt645Error::InvalidValue {
                    field: "daily freeze time".into(),
                    reason: "the meter froze a new day while it was being read; read it again"
                        .into(),
                },
            });
        }
        Ok(FrozenReading645 { date, energy_kwh })
    }

    /// Read address (13H to AAAAAAAAAAAA): the address of the only meter on the bus behind
    /// `link` (commissioning a meter whose nameplate is unreadable). With several meters on
    /// the bus their replies collide: expect a timeout, and read the nameplates instead.
    pub async fn read_address(&self, link: Link) -> Result<Address, Dlt645ClientError> {
        let m = Dlt645Meter {
            link,
            address: Address::WILDCARD,
            requires_security: false,
        };
        let reply = self
            .transact(
                &m,
                &Frame::read_address(),
                Expect {
                    address: Address::WILDCARD,
                    function: Function::ReadAddress,
                    di: None,
                },
            )
            .await?;
        self.refused(&m, &reply, "read address", "")?;
        match d::Payload::from_frame(&reply) {
            Ok(d::Payload::ReadAddressReply { address }) if address == reply.address() => {
                Ok(address)
            }
            Ok(other) => Err(Dlt645ClientError::Codec {
                meter: m,
                source: Dlt645Error::InvalidValue {
                    field: "read address reply".into(),
                    reason: format!(
                        "expected the address {} in the data field, got {other:?}",
                        reply.address()
                    ),
                },
            }),
            Err(source) => Err(Dlt645ClientError::Codec { meter: m, source }),
        }
    }

    /// Reads status word 3 (relay position, relay command, keep-power).
    pub async fn read_status(&self, m: &Dlt645Meter) -> Result<StatusWord3, Dlt645ClientError> {
        let v = self.read(m, Di(0x0400_0503)).await?;
        match v {
            DataValue::StatusWord3(w) => Ok(w),
            other => Err(self.unexpected(m, "status word 3", &other)),
        }
    }

    /// Reads the meter's clock: date 04000101, time 04000102, and the date again (so a
    /// midnight between the reads cannot pair one day's date with the next day's time).
    pub async fn read_clock(&self, m: &Dlt645Meter) -> Result<NaiveDateTime, Dlt645ClientError> {
        let date = |v: &DataValue| match v {
            DataValue::Date(d) => d.to_naive(),
            _ => None,
        };
        let d1 = self.read(m, Di::DATE).await?;
        let t = self.read(m, Di::TIME).await?;
        let d2 = self.read(m, Di::DATE).await?;
        let day = date(&d1).ok_or_else(|| self.unexpected(m, "a valid date", &d1))?;
        let DataValue::Time(time) = &t else {
            return Err(self.unexpected(m, "a time of day", &t));
        };
        let time = time
            .to_naive()
            .ok_or_else(|| self.unexpected(m, "a valid time of day", &t))?;
        if date(&d2) != Some(day) {
            return Err(Dlt645ClientError::Codec {
                meter: *m,
                source: Dlt645Error::InvalidValue {
                    field: "meter date".into(),
                    reason: "the meter's date changed while its clock was being read; read it \
                             again"
                        .into(),
                },
            });
        }
        Ok(day.and_time(time))
    }

    /// Broadcast time (08H to 999999999999) on the bus behind `link`: `time` is the county's
    /// time now (meter time). Meters do not reply (DL/T 645-2007), so `Ok` means only that the
    /// frame went out on the bus (through a terminal: that the terminal forwarded it); a meter
    /// applies it only within ±5 minutes of its own clock, once a day, and not around midnight.
    /// Confirm with [`read_clock`](Self::read_clock). Sent once, never repeated.
    pub async fn broadcast_time(
        &self,
        link: Link,
        time: NaiveDateTime,
    ) -> Result<(), Dlt645ClientError> {
        let m = Dlt645Meter {
            link,
            address: Address::BROADCAST,
            requires_security: false,
        };
        let codec = |source| Dlt645ClientError::Codec { meter: m, source };
        let frame = Frame::broadcast_time(&d::MeterDateTime::from_naive(time).map_err(codec)?)
            .map_err(codec)?;
        let bytes = frame.encode_with_preamble();
        match link {
            Link::Terminal { terminal, port } => {
                // The terminal waits for a reply that does not come and answers empty.
                self.master(&m)?
                    .forward(terminal, port, bytes, self.inner.config.timeout)
                    .await?;
                Ok(())
            }
            Link::Gateway(_) | Link::Serial(_) => {
                let io_err = |source| Dlt645ClientError::Io { link, source };
                let slot = self.inner.gateways.slot(link);
                let mut guard = slot.lock().await;
                let conn = Self::connected(&mut guard, link, self.inner.config.timeout)
                    .await
                    .map_err(io_err)?;
                if let Err(e) = conn.stream.write_all(&bytes).await {
                    *guard = None;
                    return Err(io_err(e));
                }
                Ok(())
            }
        }
    }

    fn unexpected(&self, m: &Dlt645Meter, what: &str, got: &DataValue) -> Dlt645ClientError {
        Dlt645ClientError::Codec {
            meter: *m,
            source: Dlt645Error::InvalidValue {
                field: "reply value".into(),
                reason: format!("expected {what}, got {got:?}"),
            },
        }
    }

    /// Reads one data identifier and decodes its value.
    pub async fn read(&self, m: &Dlt645Meter, di: Di) -> Result<DataValue, Dlt645ClientError> {
        let request = Frame::read_data(m.address, di);
        let reply = self
            .transact(
                m,
                &request,
                Expect {
                    address: m.address,
                    function: Function::ReadData,
                    di: Some(di),
                },
            )
            .await?;
        self.refused(
            m,
            &reply,
            "the read",
            "check the data identifier for this meter type",
        )?;
        d::read_reply_value(&reply, di)
            .map_err(|source| Dlt645ClientError::Codec { meter: *m, source })
    }

    /// Sends relay control (1CH) `command`, valid until `valid_until` (meter time). `Ok` is the
    /// meter's acknowledgement only; confirm with [`read_status`](Self::read_status).
    pub async fn send_relay(
        &self,
        m: &Dlt645Meter,
        command: RelayCommand,
        valid_until: NaiveDateTime,
    ) -> Result<(), Dlt645ClientError> {
        let cfg = &self.inner.config;
        let control = RelayControl::new(command, valid_until)
            .map_err(|source| Dlt645ClientError::Codec { meter: *m, source })?;
        let auth = if m.requires_security {
            RelayAuthorisation::Sealed(cfg.security.as_ref())
        } else {
            RelayAuthorisation::Plaintext(cfg.password)
        };
        let request =
            Frame::relay_control(m.address, cfg.operator, &control, auth).map_err(|e| match e {
                Dlt645Error::Security(source) => Dlt645ClientError::Security { meter: *m, source },
                source => Dlt645ClientError::Codec { meter: *m, source },
            })?;
        let reply = self
            .transact(
                m,
                &request,
                Expect {
                    address: m.address,
                    function: Function::RelayControl,
                    di: None,
                },
            )
            .await?;
        self.refused(
            m,
            &reply,
            "the relay command",
            if m.requires_security {
                ""
            } else {
                "; if the meter says password error or unauthorised, check the configured \
                 password, or the meter may accept only sealed commands (mark it \
                 requires_security and configure the county's security module)"
            },
        )
    }

    fn refused(
        &self,
        m: &Dlt645Meter,
        reply: &Frame,
        function: &'static str,
        hint: &'static str,
    ) -> Result<(), Dlt645ClientError> {
        if !reply.control().is_abnormal() {
            return Ok(());
        }
        match d::Payload::from_frame(reply) {
            Ok(d::Payload::ErrorReply { error, .. }) => Err(Dlt645ClientError::Refused {
                meter: *m,
                function,
                why: error,
                hint,
            }),
            Ok(_) => Err(Dlt645ClientError::Refused {
                meter: *m,
                function,
                why: RefusedWhy::Unrecognised {
                    hex: reply.data().iter().map(|b| format!("{b:02X}")).collect(),
                },
                hint,
            }),
            Err(source) => Err(Dlt645ClientError::Codec { meter: *m, source }),
        }
    }

    async fn transact(
        &self,
        m: &Dlt645Meter,
        request: &Frame,
        expect: Expect,
    ) -> Result<Frame, Dlt645ClientError> {
        let cfg = &self.inner.config;
        retrying(
            cfg.retries,
            cfg.retry_backoff,
            Dlt645ClientError::retryable,
            || async {
                match m.link {
                    Link::Gateway(_) | Link::Serial(_) => self.via_bus(m, request, expect).await,
                    Link::Terminal { terminal, port } => {
                        self.via_terminal(m, terminal, port, request, expect).await
                    }
                }
            },
        )
        .await
    }

    /// Opens the byte stream to the meter's bus: a TCP connection or the serial port.
    async fn open_bus(link: Link, timeout: Duration) -> io::Result<Box<dyn BusStream>> {
        match link {
            Link::Gateway(gw) => Ok(Box::new(connect_tcp(gw, timeout).await?)),
            Link::Serial(line) => Ok(Box::new(line.open()?)),
            Link::Terminal { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a terminal link is not a byte stream",
            )),
        }
    }

    /// The bus's open connection, opened now if there is none.
    async fn connected(
        conn: &mut Option<GatewayConn>,
        link: Link,
        timeout: Duration,
    ) -> io::Result<&mut GatewayConn> {
        if conn.is_none() {
            *conn = Some(GatewayConn {
                stream: Self::open_bus(link, timeout).await?,
                decoder: StreamDecoder::new(),
            });
        }
        Ok(conn.as_mut().expect("just connected"))
    }

    /// One exchange on a bus reached as a byte stream (TCP serial gateway or local serial
    /// port): the bus's queue, its timeout, and stale replies discarded.
    async fn via_bus(
        &self,
        m: &Dlt645Meter,
        request: &Frame,
        expect: Expect,
    ) -> Result<Frame, Dlt645ClientError> {
        let timeout = self.inner.config.timeout;
        let link = m.link;
        let io_err = |source| Dlt645ClientError::Io { link, source };
        let slot = self.inner.gateways.slot(link);
        let mut guard = slot.lock().await;
        let conn = Self::connected(&mut guard, link, timeout)
            .await
            .map_err(io_err)?;
        // Frames already buffered answer earlier requests.
        while conn.decoder.next_frame().is_some() {
            self.inner.stale.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = conn.stream.write_all(&request.encode_with_preamble()).await {
            *guard = None;
            return Err(io_err(e));
        }
        let until = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            while let Some(f) = conn.decoder.next_frame() {
                if expect.matches(&f) {
                    return Ok(f);
                }
                self.inner.stale.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(meter = %m, stale = %f.address(), "discarded a stale DL/T 645 reply");
            }
            match tokio::time::timeout_at(until, conn.stream.read(&mut buf)).await {
                Err(_) => return Err(Dlt645ClientError::Timeout { meter: *m }),
                Ok(Ok(0)) => {
                    *guard = None;
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the gateway closed the connection (or the serial port hung up)",
                    )));
                }
                Ok(Ok(n)) => conn.decoder.push(&buf[..n]),
                Ok(Err(e)) => {
                    *guard = None;
                    return Err(io_err(e));
                }
            }
        }
    }

    /// The master station terminal links go through.
    fn master(&self, m: &Dlt645Meter) -> Result<&Master, Dlt645ClientError> {
        self.inner.master.as_ref().ok_or(Dlt645ClientError::Io {
            link: m.link,
            source: io::Error::new(
                io::ErrorKind::NotConnected,
                "no master station is configured in this client for terminal links",
            ),
        })
    }

    async fn via_terminal(
        &self,
        m: &Dlt645Meter,
        terminal: TerminalAddress,
        port: u8,
        request: &Frame,
        expect: Expect,
    ) -> Result<Frame, Dlt645ClientError> {
        let master = self.master(m)?;
        let content = master
            .forward(
                terminal,
                port,
                request.encode_with_preamble(),
                self.inner.config.timeout,
            )
            .await?;
        let mut decoder = StreamDecoder::new();
        decoder.push(&content);
        while let Some(f) = decoder.next_frame() {
            if expect.matches(&f) {
                return Ok(f);
            }
            self.inner.stale.fetch_add(1, Ordering::Relaxed);
        }
        // Empty (the meter did not answer the terminal) or garbled.
        Err(Dlt645ClientError::Timeout { meter: *m })
    }
}
