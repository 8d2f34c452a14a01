//! Meter I/O for Feegate.
//!
//! - [`profile`]: household consumption profiles from the Low Carbon London data set.
//! - [`registers`]: the Modbus register map of the simulated meter (shared by both ends).
//! - [`sim`]: a Modbus TCP meter simulator whose meters follow real households.
//! - [`client`]: the host's Modbus client, TCP and RTU (read registers, switch relays).
//! - [`dlt645`]: the DL/T 645-2007 frame codec.
//! - [`dlt645_client`]: DL/T 645 client over TCP serial gateways and 1376.1 terminals.
//! - [`serial`]: RS485 on a local serial port (tokio-serial).
//! - `bus` (internal): what every RS485 link shares: one queue per bus, retries with backoff.
//! - [`fleet`]: one client for a mixed fleet (Modbus, DL/T 645, 1376.1 terminals), per meter link.
//! - [`terminal`]: the Q/GDW 1376.1 master station (terminals log in, heartbeat, forward).
//! - [`qgdw376`]: Q/GDW 1376.1 framing (login, heartbeat, AFN 10H transparent forwarding).
//! - [`modbus_map`]: Modbus register maps as data (`meter/maps/*.toml`) and Modbus RTU framing.
//! - `sim_modbus_rtu.rs`: the simulator's Modbus RTU meters on a serial port
//!   ([`sim::SimFleet::serve_modbus_rtu`]).

mod bus;
pub mod client;
pub mod dlt645;
pub mod dlt645_client;
pub mod fleet;
pub mod modbus_map;
pub mod profile;
pub mod qgdw376;
pub mod registers;
pub mod serial;
pub mod sim;
pub mod terminal;
