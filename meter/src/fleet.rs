//! One client for a county's mixed fleet: every meter is reached through its own link —
//! Modbus TCP behind a gateway, Modbus RTU on a local serial port, DL/T 645-2007 behind a
//! transparent TCP serial gateway or on a local serial port, or DL/T 645 forwarded by a
//! Q/GDW 1376.1 collection terminal — and read or switched the same way.
//!
//! Each link keeps the queue of the protocol client that serves it: one request at a time per
//! gateway, serial port or terminal (never two requests in flight on one RS485 bus), with that
//! client's timeouts, retries with backoff and stale-reply filtering. Different links run
//! concurrently.

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::client::{FrozenReading, MeterError, ModbusMeterClient, RtuAddress};
use crate::dlt645::{self, RelayCommand as RelayCommand645};
use crate::dlt645_client::{Dlt645Client, Dlt645ClientError, Dlt645Meter};
use crate::registers::{MeterAddress, RelayCommand, RelayState};

/// How one meter is reached and which protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "protocol", rename_all = "kebab-case")]
pub enum MeterLink {
    /// Modbus TCP: a gateway and the meter's unit id.
    Modbus(MeterAddress),
    /// Modbus RTU: a local serial port and the meter's unit id.
    ModbusRtu(RtuAddress),
    /// DL/T 645-2007 behind a serial gateway, on a local serial port, or behind a 1376.1
    /// terminal.
    Dlt645(Dlt645Meter),
}

impl std::fmt::Display for MeterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeterLink::Modbus(a) => write!(f, "Modbus {a}"),
            MeterLink::ModbusRtu(a) => write!(f, "Modbus RTU {a}"),
            MeterLink::Dlt645(m) => write!(f, "DL/T 645 {m}"),
        }
    }
}

/// A failed exchange on any link; the message is the protocol client's (it says what to
/// check).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Modbus TCP or RTU.
    #[error(transparent)]
    Modbus(#[from] MeterError),
    /// DL/T 645 (gateway, serial port or terminal).
    #[error(transparent)]
    Dlt645(#[from] Dlt645ClientError),
}

/// How a failed read is recorded (`collection_attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing (valid) heard from the meter in time.
    Timeout,
    /// The meter answered with a refusal (Modbus exception, DL/T 645 error reply).
    Refused,
    /// The meter answered with a value that cannot be used.
    BadValue,
    /// The link (gateway, port, terminal) failed.
    Io,
}

impl LinkError {
    /// True when nothing was heard from the meter: the read is missing, never a zero.
    pub fn is_timeout(&self) -> bool {
        self.kind() == FailureKind::Timeout
    }

    /// True when the command was refused by the host itself and nothing reached the meter:
    /// a meter that needs the security module with none configured (or sealing failed), or
    /// a command the meter type cannot carry out.
    pub fn refused_before_sending(&self) -> bool {
        matches!(
            self,
            LinkError::Dlt645(Dlt645ClientError::Security { .. })
                | LinkError::Modbus(MeterError::Unsupported(_))
        )
    }

    /// The class of failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            LinkError::Modbus(MeterError::Timeout { .. }) => FailureKind::Timeout,
            LinkError::Modbus(MeterError::Exception { .. }) => FailureKind::Refused,
            LinkError::Modbus(MeterError::BadValue(_) | MeterError::Unsupported(_)) => {
                FailureKind::BadValue
            }
            LinkError::Modbus(_) => FailureKind::Io,
            LinkError::Dlt645(e) if e.is_timeout() => FailureKind::Timeout,
            LinkError::Dlt645(Dlt645ClientError::Refused { .. }) => FailureKind::Refused,
            LinkError::Dlt645(
                Dlt645ClientError::Codec { .. } | Dlt645ClientError::Security { .. },
            ) => FailureKind::BadValue,
            LinkError::Dlt645(_) => FailureKind::Io,
        }
    }
}

/// The relay position a DL/T 645 status word 3 shows, in the host's terms: bit 4 open with
/// bit 6 (last command) closed is a close-allowed meter waiting for its button.
pub fn relay_state_of(word: dlt645::StatusWord3) -> RelayState {
    match (word.relay(), word.relay_command()) {
        (dlt645::RelayState::Closed, _) => RelayState::Closed,
        (dlt645::RelayState::Open, dlt645::RelayState::Open) => RelayState::Open,
        (dlt645::RelayState::Open, dlt645::RelayState::Closed) => RelayState::CloseAllowed,
    }
}

fn command_645(c: RelayCommand) -> RelayCommand645 {
    match c {
        RelayCommand::Trip => RelayCommand645::Trip,
        RelayCommand::CloseAllowed => RelayCommand645::CloseAllowed,
        RelayCommand::DirectClose => RelayCommand645::DirectClose,
    }
}

/// The client for a mixed fleet. Cheap to clone; clones share connections and queues.
#[derive(Debug, Clone)]
pub struct FleetClient {
    /// Modbus TCP / RTU meters.
    pub modbus: ModbusMeterClient,
    /// DL/T 645 meters (gateways, serial ports, terminals through its master station).
    pub dlt645: Dlt645Client,
}

impl FleetClient {
    /// A client from the two protocol clients.
    pub fn new(modbus: ModbusMeterClient, dlt645: Dlt645Client) -> Self {
        FleetClient { modbus, dlt645 }
    }

    /// Reads the last daily frozen reading (日冻结): the frozen date and the register at 00:00
    /// of that date, kWh. Modbus: the frozen block; DL/T 645: 05060001 / 05060101.
    pub async fn read_daily_frozen(&self, link: &MeterLink) -> Result<FrozenReading, LinkError> {
        Ok(match link {
            MeterLink::Modbus(a) => self.modbus.read_daily_frozen(*a).await?,
            MeterLink::ModbusRtu(a) => self.modbus.read_daily_frozen(*a).await?,
            MeterLink::Dlt645(m) => {
                let r = self.dlt645.read_daily_frozen(m).await?;
                FrozenReading {
                    date: r.date,
                    energy_kwh: r.energy_kwh,
                }
            }
        })
    }

    /// Reads the relay position with a fresh request (Modbus relay register; DL/T 645 status
    /// word 3, see [`relay_state_of`]).
    pub async fn read_relay(&self, link: &MeterLink) -> Result<RelayState, LinkError> {
        Ok(match link {
            MeterLink::Modbus(a) => self.modbus.read_relay(*a).await?,
            MeterLink::ModbusRtu(a) => self.modbus.read_relay(*a).await?,
            MeterLink::Dlt645(m) => relay_state_of(self.dlt645.read_status(m).await?),
        })
    }

    /// Sends a relay command; for DL/T 645 it is valid until `valid_until` (meter time) and
    /// goes in plaintext or sealed by the county's security module (a meter that needs one
    /// with none configured fails before anything is sent). `Ok` is an acknowledgement only:
    /// confirm with [`read_relay`](Self::read_relay).
    pub async fn send_relay(
        &self,
        link: &MeterLink,
        command: RelayCommand,
        valid_until: NaiveDateTime,
    ) -> Result<(), LinkError> {
        match link {
            MeterLink::Modbus(a) => Ok(self.modbus.send_relay(*a, command).await?),
            MeterLink::ModbusRtu(a) => Ok(self.modbus.send_relay(*a, command).await?),
            MeterLink::Dlt645(m) => Ok(self
                .dlt645
                .send_relay(m, command_645(command), valid_until)
                .await?),
        }
    }
}

/// Default timeouts and retries on every link, no security module, no 1376.1 master
/// station (terminal meters fail with that reason).
impl Default for FleetClient {
    fn default() -> Self {
        FleetClient::new(
            ModbusMeterClient::default(),
            Dlt645Client::new(crate::dlt645_client::Dlt645Config::default(), None),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::StatusWord3;

    #[test]
    fn status_word_3_maps_to_the_hosts_relay_states() {
        let cases = [
            (0, RelayState::Closed),
            (
                StatusWord3::RELAY_OPEN | StatusWord3::RELAY_COMMAND_OPEN,
                RelayState::Open,
            ),
            (StatusWord3::RELAY_OPEN, RelayState::CloseAllowed),
            // Commanded open but still closed (e.g. keep-power): the relay is closed.
            (StatusWord3::RELAY_COMMAND_OPEN, RelayState::Closed),
        ];
        for (bits, want) in cases {
            assert_eq!(
                relay_state_of(StatusWord3::from_bits(bits)),
                want,
                "bits {bits:#06x}"
            );
        }
    }
}
