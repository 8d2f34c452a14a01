//! The host's Modbus TCP client for meters behind serial gateways (register map in
//! [`crate::registers`]).
//!
//! - One TCP connection per gateway, opened lazily, reused, reopened after any failure.
//! - Requests to one gateway are serialised (a per-gateway async mutex): the RS485 bus behind a
//!   gateway carries one exchange at a time, and a gateway never has two requests of ours in
//!   flight. Different gateways are served in parallel.
//! - On a timeout (or any transport/protocol error, or a request abandoned by its caller) the
//!   connection is dropped and reopened on the next request, so a late reply to an old request
//!   can never be read as the answer to a new one.
//! - Timeouts, I/O errors and the transient exceptions 0x06 (busy) and 0x0B (gateway target did
//!   not respond) are retried `retries` times after `retry_backoff`; other exceptions are final.
//!   Relay commands are retried too: every command is idempotent (a second trip leaves the relay
//!   open), and the caller verifies the outcome with a fresh read anyway.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{Request, Response, Slave};

use crate::registers::{
    FROZEN_BLOCK_LEN, FROZEN_BLOCK_START, HOLDING_RELAY_COMMAND, INPUT_ENERGY, INPUT_RELAY_STATE,
    RelayCommand, RelayState, decode_energy, decode_frozen, hundredths_to_kwh,
};

pub use crate::registers::MeterAddress;

use crate::modbus_map::{RegisterDef, RegisterMap, RelayKind};

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
    /// No reply within the timeout, after all retries.
    #[error(
        "meter unit {unit} behind gateway {gateway} did not answer in time: check that the meter \
         is powered and wired to the gateway's RS485 bus, that its address is unit {unit}, and \
         that the gateway is up"
    )]
    Timeout {
        /// The gateway.
        gateway: SocketAddr,
        /// The meter's unit id.
        unit: u8,
    },
    /// The meter (or gateway) answered with a Modbus exception.
    #[error("meter answered with Modbus exception {code:#04x} ({}): {}", exception_name(*code), exception_hint(*code))]
    Exception {
        /// The Modbus exception code (0x01 illegal function, 0x02 illegal data address, …).
        code: u8,
    },
    /// The gateway could not be reached or the connection failed.
    #[error(
        "cannot talk to gateway {gateway}: {source}; check the gateway's address and port, its \
         power and the network link"
    )]
    Io {
        /// The gateway.
        gateway: SocketAddr,
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

/// One gateway's connection. `busy` is set while a request is on the wire: if the caller
/// abandons the request (drops the future), the flag stays set and the connection is discarded
/// before the next use, since a late reply may still arrive on it.
struct Connection {
    ctx: Context,
    busy: bool,
}

type GatewaySlot = Arc<Mutex<Option<Connection>>>;

struct Inner {
    config: ClientConfig,
    gateways: StdMutex<HashMap<SocketAddr, GatewaySlot>>,
}

/// Modbus TCP client for meters. Cheap to clone (clones share connections); `Send + Sync`.
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
                gateways: StdMutex::new(HashMap::new()),
            }),
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Reads the daily frozen record (registers 0x0002–0x0006 in one request): the frozen date
    /// and the register value at 00:00 of that date, kWh.
    pub async fn read_daily_frozen(&self, addr: MeterAddress) -> Result<FrozenReading, MeterError> {
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
    pub async fn read_energy(&self, addr: MeterAddress) -> Result<Decimal, MeterError> {
        let words = self.read_input(addr, INPUT_ENERGY, 2).await?;
        decode_energy(&words).map_err(|e| MeterError::BadValue(format!("{addr}: {e}")))
    }

    /// Reads the relay state.
    pub async fn read_relay(&self, addr: MeterAddress) -> Result<RelayState, MeterError> {
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
        addr: MeterAddress,
        command: RelayCommand,
    ) -> Result<(), MeterError> {
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
        addr: MeterAddress,
        register: &RegisterDef,
    ) -> Result<Decimal, MeterError> {
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
        addr: MeterAddress,
        map: &RegisterMap,
    ) -> Result<Decimal, MeterError> {
        self.read_mapped(addr, map.billing_register()).await
    }

    /// Reads the relay state through a map's `[relay]` section.
    pub async fn read_mapped_relay(
        &self,
        addr: MeterAddress,
        map: &RegisterMap,
    ) -> Result<RelayState, MeterError> {
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
        addr: MeterAddress,
        map: &RegisterMap,
        command: RelayCommand,
    ) -> Result<(), MeterError> {
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
        addr: MeterAddress,
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
        addr: MeterAddress,
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

    fn slot(&self, gateway: SocketAddr) -> GatewaySlot {
        let mut map = self
            .inner
            .gateways
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(gateway).or_default().clone()
    }

    async fn transact(
        &self,
        addr: MeterAddress,
        request: Request<'static>,
    ) -> Result<Response, MeterError> {
        let slot = self.slot(addr.gateway);
        let cfg = &self.inner.config;
        let mut attempt = 0;
        loop {
            match self.attempt(&slot, addr, &request).await {
                Ok(response) => return Ok(response),
                Err(err) if err.retryable() && attempt < cfg.retries => {
                    attempt += 1;
                    tracing::debug!(meter = %addr, attempt, %err, "meter request failed; retrying");
                    // The gateway lock is not held while waiting: other meters go ahead.
                    tokio::time::sleep(cfg.retry_backoff).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn attempt(
        &self,
        slot: &GatewaySlot,
        addr: MeterAddress,
        request: &Request<'static>,
    ) -> Result<Response, MeterError> {
        let timeout = self.inner.config.timeout;
        let gateway = addr.gateway;
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|c| c.busy) {
            // The previous request was abandoned mid-flight; its reply may still come.
            *guard = None;
        }
        if guard.is_none() {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(gateway)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(MeterError::Io { gateway, source }),
                Err(_) => {
                    return Err(MeterError::Io {
                        gateway,
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("TCP connect timed out after {timeout:?}"),
                        ),
                    });
                }
            };
            let _ = stream.set_nodelay(true);
            tracing::debug!(%gateway, "connected to meter gateway");
            *guard = Some(Connection {
                ctx: tokio_modbus::client::tcp::attach_slave(stream, Slave(addr.unit)),
                busy: false,
            });
        }
        let conn = guard.as_mut().expect("connection just ensured");
        conn.ctx.set_slave(Slave(addr.unit));
        conn.busy = true;
        let outcome = tokio::time::timeout(timeout, conn.ctx.call(request.clone())).await;
        conn.busy = false;
        match outcome {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(exception))) => Err(MeterError::Exception {
                code: exception.into(),
            }),
            Ok(Err(tokio_modbus::Error::Transport(source))) => {
                *guard = None;
                Err(MeterError::Io { gateway, source })
            }
            Ok(Err(tokio_modbus::Error::Protocol(err))) => {
                // Out of step with the gateway (e.g. a reply to another request): start afresh.
                *guard = None;
                Err(MeterError::Io {
                    gateway,
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("Modbus protocol error: {err}"),
                    ),
                })
            }
            Err(_elapsed) => {
                *guard = None;
                Err(MeterError::Timeout {
                    gateway,
                    unit: addr.unit,
                })
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
            gateway: gw,
            unit: 3,
        }
        .to_string();
        assert!(t.contains("unit 3") && t.contains("127.0.0.1:502") && t.contains("RS485"));
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
