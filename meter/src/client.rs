//! The host's Modbus client: Modbus TCP to meters behind gateways, and Modbus RTU to meters on
//! a local serial port (RS485 adapter). The simulator's register map is in
//! [`crate::registers`]; any meter type's map drives [`ModbusMeterClient::read_mapped`] and
//! the relay methods (`meter/maps/*.toml`, [`crate::modbus_map`]).
//!
//! - One connection per bus (a gateway's TCP connection, a serial port), opened lazily,
//!   reused, reopened after any failure.
//! - Requests on one bus are serialised (one queue per bus, shared with the DL/T 645 client's
//!   code): the RS485 line carries one
//!   exchange at a time, and a bus never has two requests of ours in flight. Different buses
//!   are served in parallel.
//! - Over TCP, a timeout (or any transport error, or a request abandoned by its caller) drops
//!   the connection, reopened on the next request, so a late reply to an old request can never
//!   be read as the answer to a new one. Modbus RTU has no transaction id: a serial port stays
//!   open after a timeout, input waiting on it before a request is discarded (it answers
//!   nothing asked since), and a reply from another unit or for another function, or a
//!   garbled one, is stale: counted ([`ModbusMeterClient::stale_replies`]) and the request
//!   repeated within the same timeout. A garbled or foreign reply is never a value; with
//!   nothing else heard it ends as a timeout. A late reply that happens to match the unit,
//!   function and length of the next request cannot be told from the answer: keep the timeout
//!   above the meters' slowest reply.
//! - Timeouts, I/O errors and the transient exceptions 0x06 (busy) and 0x0B (gateway target did
//!   not respond) are retried `retries` times after `retry_backoff`; other exceptions are final.
//!   Relay commands are retried (and repeated after a stale reply) too: every command is
//!   idempotent (a second trip leaves the relay open), and the caller verifies the outcome with
//!   a fresh read anyway.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{Request, Response, Slave};

use crate::bus::{Queues, Slot, connect_tcp, retrying};
use crate::registers::{
    FROZEN_BLOCK_LEN, FROZEN_BLOCK_START, HOLDING_RELAY_COMMAND, INPUT_ENERGY, INPUT_RELAY_STATE,
    RelayCommand, RelayState, decode_energy, decode_frozen, hundredths_to_kwh,
};
use crate::serial::{SerialLine, SharedPort};

pub use crate::registers::MeterAddress;

use crate::modbus_map::{RegisterDef, RegisterMap, RelayKind};

/// The bus a Modbus meter is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum ModbusBus {
    /// Modbus TCP to a gateway on the meters' RS485 bus (host:port).
    Gateway(SocketAddr),
    /// Modbus RTU on a local serial port.
    Serial(SerialLine),
}

impl fmt::Display for ModbusBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModbusBus::Gateway(a) => write!(f, "gateway {a}"),
            ModbusBus::Serial(line) => write!(f, "{line}"),
        }
    }
}

impl ModbusBus {
    /// What to check when nothing comes back over this bus.
    fn silence_hint(&self) -> &'static str {
        match self {
            ModbusBus::Gateway(_) => "and that the gateway is up",
            ModbusBus::Serial(_) => {
                "and that the port's baud rate and parity are the meter's (the line reads \
                 nothing at the wrong speed)"
            }
        }
    }

    /// What to check when the bus itself fails.
    fn io_hint(&self) -> &'static str {
        match self {
            ModbusBus::Gateway(_) => {
                "check the gateway's address and port, its power and the network link"
            }
            ModbusBus::Serial(_) => crate::serial::PORT_HINT,
        }
    }
}

/// A Modbus RTU meter on a local serial port: the line and the meter's unit id (1..=247).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RtuAddress {
    /// The serial line (device path, baud rate, parity).
    pub line: SerialLine,
    /// Modbus unit id on the line, 1..=247 (0 is the broadcast address).
    pub unit: u8,
}

impl fmt::Display for RtuAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unit {}", self.line, self.unit)
    }
}

/// Any Modbus meter: its bus and unit id. The client's methods take anything that converts
/// into it: a [`MeterAddress`] (Modbus TCP) or an [`RtuAddress`] (Modbus RTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModbusTarget {
    /// The bus.
    pub bus: ModbusBus,
    /// The unit id.
    pub unit: u8,
}

impl fmt::Display for ModbusTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unit {}", self.bus, self.unit)
    }
}

impl From<MeterAddress> for ModbusTarget {
    fn from(a: MeterAddress) -> Self {
        ModbusTarget {
            bus: ModbusBus::Gateway(a.gateway),
            unit: a.unit,
        }
    }
}

impl From<RtuAddress> for ModbusTarget {
    fn from(a: RtuAddress) -> Self {
        ModbusTarget {
            bus: ModbusBus::Serial(a.line),
            unit: a.unit,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long to wait for one reply (and for a TCP connect). Default 2 s.
    pub timeout: Duration,
    /// How many times a failed request is repeated (so `retries + 1` attempts). Default 2.
    pub retries: u32,
    /// Pause before each repetition. Default 200 ms.
    pub retry_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// A daily frozen reading (日冻结).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrozenReading {
    /// The frozen date: the reading is the register value at 00:00 of this date (meter time).
    pub date: NaiveDate,
    /// Total forward active energy at that instant, kWh (0.01 kWh resolution, exact).
    pub energy_kwh: Decimal,
}

/// A meter request that failed. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// No (valid) reply within the timeout, after all retries.
    #[error(
        "meter unit {unit} on {bus} did not answer in time (a garbled or foreign reply counts \
         as none): check that the meter is powered and wired to the RS485 bus, that its address \
         is unit {unit}, {hint}",
        hint = bus.silence_hint()
    )]
    Timeout {
        /// The bus.
        bus: ModbusBus,
        /// The meter's unit id.
        unit: u8,
    },
    /// The meter (or gateway) answered with a Modbus exception.
    #[error("meter answered with Modbus exception {code:#04x} ({}): {}", exception_name(*code), exception_hint(*code))]
    Exception {
        /// The Modbus exception code (0x01 illegal function, 0x02 illegal data address, …).
        code: u8,
    },
    /// The bus could not be reached (gateway down, serial port missing or held) or the
    /// connection failed.
    #[error("cannot talk to {bus}: {source}; {hint}", hint = bus.io_hint())]
    Io {
        /// The bus.
        bus: ModbusBus,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The meter answered with a value that makes no sense (or the request was refused locally).
    #[error("unusable meter value: {0}")]
    BadValue(String),
    /// The meter type cannot do what was asked (e.g. it has no relay); nothing was sent.
    #[error("{0}")]
    Unsupported(String),
}

impl MeterError {
    /// True for a timeout: the meter did not answer (the read counts as not successful, and
    /// nothing may be inferred from it).
    pub fn is_timeout(&self) -> bool {
        matches!(self, MeterError::Timeout { .. })
    }

    fn retryable(&self) -> bool {
        match self {
            MeterError::Timeout { .. } | MeterError::Io { .. } => true,
            // Server device busy; gateway target device failed to respond.
            MeterError::Exception { code } => matches!(code, 0x06 | 0x0B),
            MeterError::BadValue(_) | MeterError::Unsupported(_) => false,
        }
    }
}

fn no_relay(map: &RegisterMap) -> MeterError {
    MeterError::Unsupported(format!(
        "the {} has no relay in its register map: it cannot be switched remotely; \
         send a technician or fit a meter with a load switch",
        map.name()
    ))
}

fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "non-standard exception",
    }
}

fn exception_hint(code: u8) -> &'static str {
    match code {
        0x01 | 0x02 => {
            "the meter does not have this register map; check the meter type configured for it"
        }
        0x03 => "the meter refused the value; check the command",
        0x04 | 0x08 => "the meter reports an internal fault; send a technician",
        0x05 | 0x06 => "the meter is busy; try again later",
        0x0A => {
            "the gateway has no route to this unit id; check the gateway's unit configuration and the meter's address"
        }
        0x0B => {
            "the gateway got no answer from the meter on its RS485 bus; check wiring and meter power"
        }
        _ => "see the meter's documentation",
    }
}

/// One bus's connection. `busy` is set while a request is on the wire: if the caller
/// abandons the request (drops the future), the flag stays set and the connection is discarded
/// before the next use, since a late reply may still arrive on it. `port` is the serial port
/// of an RTU bus (to discard stale input before a request).
struct Connection {
    ctx: Context,
    busy: bool,
    port: Option<SharedPort>,
}

struct Inner {
    config: ClientConfig,
    buses: Queues<ModbusBus, Connection>,
    stale: AtomicU64,
}

/// Modbus TCP / RTU client for meters. Cheap to clone (clones share connections and queues);
/// `Send + Sync`.
#[derive(Clone)]
pub struct ModbusMeterClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ModbusMeterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusMeterClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for ModbusMeterClient {
    fn default() -> Self {
        Self::new(ClientConfig::default())
    }
}

impl ModbusMeterClient {
    /// A client with `config`. No connection is opened until the first request.
    pub fn new(config: ClientConfig) -> Self {
        ModbusMeterClient {
            inner: Arc::new(Inner {
                config,
                buses: Queues::new(),
                stale: AtomicU64::new(0),
            }),
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Stale input discarded so far on serial (RTU) buses: replies from another unit or for
    /// another function, garbled replies, and bytes waiting on a line before a request.
    pub fn stale_replies(&self) -> u64 {
        self.inner.stale.load(Ordering::Relaxed)
    }

    /// Reads the daily frozen record (registers 0x0002–0x0006 in one request): the frozen date
    /// and the register value at 00:00 of that date, kWh.
    pub async fn read_daily_frozen(
        &self,
        addr: impl Into<ModbusTarget>,
    ) -> Result<FrozenReading, MeterError> {
        let addr: ModbusTarget = addr.into();
        let words = self
            .read_input(addr, FROZEN_BLOCK_START, FROZEN_BLOCK_LEN)
            .await?;
        let record = decode_frozen(&words)
            .map_err(|e| MeterError::BadValue(format!("{addr}: {e}")))?
            .ok_or_else(|| {
                MeterError::BadValue(format!(
                    "{addr}: the meter has no daily frozen record yet (frozen date is zero); \
                     read again after its next midnight"
                ))
            })?;
        Ok(FrozenReading {
            date: record.date,
            energy_kwh: hundredths_to_kwh(record.energy_hundredths),
        })
    }

    /// Reads the live total forward active energy register, kWh (0.01 kWh resolution).
    pub async fn read_energy(&self, addr: impl Into<ModbusTarget>) -> Result<Decimal, MeterError> {
        let addr: ModbusTarget = addr.into();
        let words = self.read_input(addr, INPUT_ENERGY, 2).await?;
        decode_energy(&words).map_err(|e| MeterError::BadValue(format!("{addr}: {e}")))
    }

    /// Reads the relay state.
    pub async fn read_relay(
        &self,
        addr: impl Into<ModbusTarget>,
    ) -> Result<RelayState, MeterError> {
        let addr: ModbusTarget = addr.into();
        let words = self.read_input(addr, INPUT_RELAY_STATE, 1).await?;
        RelayState::from_register(words[0]).ok_or_else(|| {
            MeterError::BadValue(format!(
                "{addr}: relay state register holds {}, expected 0 (closed), 1 (open) or \
                 2 (close-allowed); check the meter type",
                words[0]
            ))
        })
    }

    /// Writes a relay command (FC 06 to 0x0100). `Ok` means the meter acknowledged it, not that
    /// the relay moved: verify with a fresh [`read_relay`](Self::read_relay).
    pub async fn send_relay(
        &self,
        addr: impl Into<ModbusTarget>,
        command: RelayCommand,
    ) -> Result<(), MeterError> {
        let addr: ModbusTarget = addr.into();
        if addr.unit == 0 {
            return Err(MeterError::BadValue(
                "unit id 0 is the RS485 broadcast address: a relay command must name one meter"
                    .into(),
            ));
        }
        let code = command.code();
        match self
            .transact(
                addr,
                Request::WriteSingleRegister(HOLDING_RELAY_COMMAND, code),
            )
            .await?
        {
            Response::WriteSingleRegister(a, v) if a == HOLDING_RELAY_COMMAND && v == code => {
                Ok(())
            }
            other => Err(MeterError::BadValue(format!(
                "{addr}: relay command {command} ({code:#04x}) was echoed as {other:?}"
            ))),
        }
    }

    /// Reads one register of a meter-type map (FC03 or FC04 as the map says) as an exact
    /// decimal in the register's unit.
    pub async fn read_mapped(
        &self,
        addr: impl Into<ModbusTarget>,
        register: &RegisterDef,
    ) -> Result<Decimal, MeterError> {
        let addr: ModbusTarget = addr.into();
        let count = register.data_type.words();
        let words = match register.function {
            3 => self.read_holding(addr, register.address, count).await?,
            _ => self.read_input(addr, register.address, count).await?,
        };
        register
            .decode(&words)
            .map_err(|e| MeterError::BadValue(format!("{addr}: {e}")))
    }

    /// Reads the billed register of a map (cumulative forward active energy, kWh).
    pub async fn read_billing_energy(
        &self,
        addr: impl Into<ModbusTarget>,
        map: &RegisterMap,
    ) -> Result<Decimal, MeterError> {
        let addr: ModbusTarget = addr.into();
        self.read_mapped(addr, map.billing_register()).await
    }

    /// Reads the relay state through a map's `[relay]` section.
    pub async fn read_mapped_relay(
        &self,
        addr: impl Into<ModbusTarget>,
        map: &RegisterMap,
    ) -> Result<RelayState, MeterError> {
        let addr: ModbusTarget = addr.into();
        let relay = map.relay.as_ref().ok_or_else(|| no_relay(map))?;
        let reg = map
            .register(&relay.state_register)
            .map_err(|e| MeterError::BadValue(e.to_string()))?;
        let words = match reg.function {
            3 => self.read_holding(addr, reg.address, 1).await?,
            _ => self.read_input(addr, reg.address, 1).await?,
        };
        let v = words[0];
        if v == relay.state_closed {
            Ok(RelayState::Closed)
        } else if v == relay.state_open {
            Ok(RelayState::Open)
        } else if Some(v) == relay.state_close_allowed {
            Ok(RelayState::CloseAllowed)
        } else {
            Err(MeterError::BadValue(format!(
                "{addr}: relay state register {} holds {v}, which the {} map does not define",
                reg.name,
                map.name()
            )))
        }
    }

    /// Sends a relay command through a map's `[relay]` section. `Ok` is the meter's
    /// acknowledgement only: confirm with [`read_mapped_relay`](Self::read_mapped_relay).
    /// Fails without sending anything when the meter type has no relay, or no such mode.
    pub async fn send_mapped_relay(
        &self,
        addr: impl Into<ModbusTarget>,
        map: &RegisterMap,
        command: RelayCommand,
    ) -> Result<(), MeterError> {
        let addr: ModbusTarget = addr.into();
        let relay = map.relay.as_ref().ok_or_else(|| no_relay(map))?;
        if addr.unit == 0 {
            return Err(MeterError::BadValue(
                "unit id 0 is the RS485 broadcast address: a relay command must name one meter"
                    .into(),
            ));
        }
        match relay.kind {
            RelayKind::HoldingRegister => {
                let code = match command {
                    RelayCommand::Trip => relay.trip,
                    RelayCommand::CloseAllowed => relay.close_allowed,
                    RelayCommand::DirectClose => relay.direct_close,
                }
                .ok_or_else(|| {
                    MeterError::Unsupported(format!(
                        "the {} map has no command code for {command}; use another reconnection mode",
                        map.name()
                    ))
                })?;
                match self
                    .transact(addr, Request::WriteSingleRegister(relay.address, code))
                    .await?
                {
                    Response::WriteSingleRegister(a, v) if a == relay.address && v == code => {
                        Ok(())
                    }
                    other => Err(MeterError::BadValue(format!(
                        "{addr}: relay command {command} ({code:#04x}) was echoed as {other:?}"
                    ))),
                }
            }
            RelayKind::Coil => {
                let on = match command {
                    RelayCommand::Trip => false,
                    RelayCommand::DirectClose => true,
                    RelayCommand::CloseAllowed => {
                        return Err(MeterError::Unsupported(format!(
                            "the {} relay is a coil: it has no close-allowed mode; use direct close",
                            map.name()
                        )));
                    }
                };
                match self
                    .transact(addr, Request::WriteSingleCoil(relay.address, on))
                    .await?
                {
                    Response::WriteSingleCoil(a, v) if a == relay.address && v == on => Ok(()),
                    other => Err(MeterError::BadValue(format!(
                        "{addr}: relay coil write {on} was echoed as {other:?}"
                    ))),
                }
            }
        }
    }

    async fn read_holding(
        &self,
        addr: ModbusTarget,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, MeterError> {
        match self
            .transact(addr, Request::ReadHoldingRegisters(start, count))
            .await?
        {
            Response::ReadHoldingRegisters(words) if words.len() == usize::from(count) => Ok(words),
            other => Err(MeterError::BadValue(format!(
                "{addr}: asked for {count} holding registers at {start:#06x}, got {other:?}"
            ))),
        }
    }

    async fn read_input(
        &self,
        addr: ModbusTarget,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, MeterError> {
        match self
            .transact(addr, Request::ReadInputRegisters(start, count))
            .await?
        {
            Response::ReadInputRegisters(words) if words.len() == usize::from(count) => Ok(words),
            other => Err(MeterError::BadValue(format!(
                "{addr}: asked for {count} input registers at {start:#06x}, got {other:?}"
            ))),
        }
    }

    async fn transact(
        &self,
        addr: ModbusTarget,
        request: Request<'static>,
    ) -> Result<Response, MeterError> {
        let slot = self.inner.buses.slot(addr.bus);
        let cfg = &self.inner.config;
        retrying(
            cfg.retries,
            cfg.retry_backoff,
            MeterError::retryable,
            || self.attempt(&slot, addr, &request),
        )
        .await
    }

    /// Opens the bus: a TCP connection to the gateway, or the serial port.
    async fn connect(&self, addr: ModbusTarget) -> Result<Connection, MeterError> {
        let bus = addr.bus;
        let io_err = |source| MeterError::Io { bus, source };
        let slave = Slave(addr.unit);
        let conn = match bus {
            ModbusBus::Gateway(gateway) => {
                let stream = connect_tcp(gateway, self.inner.config.timeout)
                    .await
                    .map_err(io_err)?;
                Connection {
                    ctx: tokio_modbus::client::tcp::attach_slave(stream, slave),
                    busy: false,
                    port: None,
                }
            }
            ModbusBus::Serial(line) => {
                let port = SharedPort::new(line.open().map_err(io_err)?);
                Connection {
                    ctx: tokio_modbus::client::rtu::attach_slave(port.clone(), slave),
                    busy: false,
                    port: Some(port),
                }
            }
        };
        tracing::debug!(%bus, "opened meter bus");
        Ok(conn)
    }

    /// One attempt: the bus's queue, its connection, one reply within the timeout (on a
    /// serial bus, stale replies are discarded and the request repeated within it).
    async fn attempt(
        &self,
        slot: &Slot<Connection>,
        addr: ModbusTarget,
        request: &Request<'static>,
    ) -> Result<Response, MeterError> {
        let bus = addr.bus;
        // The reply timeout runs from the first send, not while the request waits in the
        // bus's queue behind other meters.
        let mut deadline = None;
        let timed_out = || MeterError::Timeout {
            bus,
            unit: addr.unit,
        };
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|c| c.busy) {
            // The previous request was abandoned mid-flight; its reply may still come.
            *guard = None;
        }
        loop {
            if guard.is_none() {
                *guard = Some(self.connect(addr).await?);
            }
            let conn = guard.as_mut().expect("connection just ensured");
            if let Some(port) = &conn.port {
                match port.discard_input() {
                    Ok(0) => {}
                    Ok(bytes) => {
                        self.inner.stale.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(meter = %addr, bytes, "discarded stale input on the serial line");
                    }
                    Err(source) => {
                        *guard = None;
                        return Err(MeterError::Io { bus, source });
                    }
                }
            }
            conn.ctx.set_slave(Slave(addr.unit));
            conn.busy = true;
            let deadline = *deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + self.inner.config.timeout);
            let outcome = tokio::time::timeout_at(deadline, conn.ctx.call(request.clone())).await;
            conn.busy = false;
            let serial = conn.port.is_some();
            match outcome {
                Ok(Ok(Ok(response))) => return Ok(response),
                Ok(Ok(Err(exception))) => {
                    return Err(MeterError::Exception {
                        code: exception.into(),
                    });
                }
                // RTU: a reply from another unit or for another function (a late answer to an
                // earlier request): not ours; ask again while the timeout allows.
                Ok(Err(tokio_modbus::Error::Protocol(err))) if serial => {
                    self.inner.stale.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(meter = %addr, %err, "discarded a stale Modbus RTU reply");
                }
                // RTU: bytes that do not make a frame (bad CRC, noise). The codec is left in
                // an error state: reopen the port, ask again while the timeout allows.
                Ok(Err(tokio_modbus::Error::Transport(err)))
                    if serial && err.kind() == io::ErrorKind::InvalidData =>
                {
                    self.inner.stale.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(meter = %addr, %err, "discarded a garbled Modbus RTU reply");
                    *guard = None;
                }
                Ok(Err(tokio_modbus::Error::Transport(source))) => {
                    *guard = None;
                    return Err(MeterError::Io { bus, source });
                }
                Ok(Err(tokio_modbus::Error::Protocol(err))) => {
                    // TCP: out of step with the gateway (a reply to another transaction):
                    // start afresh on a new connection.
                    *guard = None;
                    return Err(MeterError::Io {
                        bus,
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("Modbus protocol error: {err}"),
                        ),
                    });
                }
                Err(_elapsed) => {
                    // TCP: a new connection, so a late reply cannot come back on it. A serial
                    // port stays open: its late replies are discarded before the next request.
                    if !serial {
                        *guard = None;
                    }
                    return Err(timed_out());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_as_documented() {
        let c = ClientConfig::default();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retries, 2);
        assert_eq!(c.retry_backoff, Duration::from_millis(200));
    }

    #[test]
    fn errors_say_what_to_check() {
        let gw: SocketAddr = "127.0.0.1:502".parse().unwrap();
        let t = MeterError::Timeout {
            bus: ModbusBus::Gateway(gw),
            unit: 3,
        }
        .to_string();
        assert!(t.contains("unit 3") && t.contains("127.0.0.1:502") && t.contains("RS485"));
        assert!(t.contains("gateway is up"), "{t}");
        let line = ModbusBus::Serial(SerialLine::modbus_rtu("/dev/ttyUSB0"));
        let t = MeterError::Timeout { bus: line, unit: 3 }.to_string();
        assert!(
            t.contains("/dev/ttyUSB0 9600 8N1") && t.contains("baud rate and parity"),
            "{t}"
        );
        let e = MeterError::Io {
            bus: line,
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        }
        .to_string();
        assert!(
            e.contains("/dev/ttyUSB0") && e.contains("RS485 adapter is plugged in"),
            "{e}"
        );
        let e = MeterError::Exception { code: 2 }.to_string();
        assert!(
            e.contains("0x02") && e.contains("illegal data address") && e.contains("meter type"),
            "{e}"
        );
        assert!(MeterError::Exception { code: 0x0B }.retryable());
        assert!(!MeterError::Exception { code: 0x02 }.retryable());
    }

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn client_is_send_sync_clone() {
        assert_send_sync_clone::<ModbusMeterClient>();
    }
}
