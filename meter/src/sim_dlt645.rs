//! The simulated fleet's DL/T 645-2007 front end (serial gateways over TCP) and its Q/GDW 1376.1
//! collection terminals.
//!
//! - Meter `i`'s DL/T 645 address is `350100000000 + i` ([`dlt645_address`]).
//! - It answers read data (11H) for total forward active energy 00010000, the last daily frozen
//!   forward active energy 05060101 (total only), the last daily freeze time 05060001 and status
//!   word 3 04000503; any other identifier gets an error reply "no requested data".
//! - Read address (13H, to the wildcard address) answers with the meter's address when it is the
//!   only answering meter on the bus; several meters collide (a garbled reply).
//! - It also answers its date 04000101 and time 04000102: the simulated clock plus the meter's
//!   clock offset ([`SimFleet::set_clock_offset`]).
//! - Broadcast time (08H to 999999999999, or addressed to one meter) gets no reply, as the
//!   standard says. A meter applies it only as DL/T 645-2007 allows: the new time within
//!   ±5 minutes of its clock, once per day, and not around midnight (the simulator refuses
//!   within 5 minutes of 00:00 on either clock, where the daily freeze happens). Anything
//!   else is ignored, silently, as by a real meter.
//! - Relay control (1CH) in plaintext with password [`SIM_PASSWORD`] (level 02); the deadline is
//!   checked against the meter's clock; a trip under keep-power is refused. A meter set to
//!   require the security module refuses plaintext commands (password error / unauthorised).
//!   The simulator has no ESAM: sealed commands are refused with "MAC error" — it never
//!   pretends to check a MAC.
//! - A serial gateway answers one frame at a time, in order (an RS485 bus); replies carry a
//!   4-byte FEH preamble.

use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::dlt645::{
    self as d, Address, ControlCode, Di, Frame, Function, Password, RelayControlRequest,
    StatusWord3, StreamDecoder,
};
use crate::dlt645_client::{Dlt645Meter, Link};
use crate::qgdw376::{self as q, Body, Q376Frame, TerminalAddress};
use chrono::Timelike;

/// The password simulated meters accept for plaintext relay commands: level 02, code 123456.
pub const SIM_PASSWORD: Password = Password {
    level: 0x02,
    code: [0x56, 0x34, 0x12],
};

/// Meter `i`'s DL/T 645 address: `350100000000 + i`.
pub fn dlt645_address(i: usize) -> Address {
    format!("{:012}", 350_100_000_000u64 + i as u64)
        .parse()
        .expect("12 decimal digits")
}

fn bcd4(v: u32) -> [u8; 4] {
    let mut out = [0u8; 4];
    let mut v = v;
    for b in &mut out {
        let lo = (v % 10) as u8;
        v /= 10;
        let hi = (v % 10) as u8;
        v /= 10;
        *b = (hi << 4) | lo;
    }
    out
}

fn bcd1(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

const ERR_NO_DATA: u8 = 0x02;
const RELAY_ERR_MAC: u16 = 1 << 1;
const RELAY_ERR_PASSWORD: u16 = 1 << 2;
const RELAY_ERR_DEADLINE: u16 = 1 << 4;
const RELAY_ERR_KEEP_POWER: u16 = 1 << 5;

/// How far a broadcast time may move a meter's clock (DL/T 645-2007: ±5 min).
const TIME_SYNC_WINDOW_SECS: i64 = 5 * 60;

impl Meter {
    /// The meter's own clock: `now` (the simulated clock) plus its offset.
    pub(super) fn clock(&self, now: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
        now.map(|t| t + chrono::Duration::seconds(self.faults.clock_offset_secs))
    }

    /// Applies a broadcast time `t` if the standard's conditions hold (see the module docs);
    /// returns whether the clock was set.
    fn time_sync(&mut self, now: Option<NaiveDateTime>, t: NaiveDateTime) -> bool {
        let (Some(sim_now), Some(clock)) = (now, self.clock(now)) else {
            return false;
        };
        let near_midnight = |x: NaiveDateTime| {
            let secs = i64::from(x.time().num_seconds_from_midnight());
            !(TIME_SYNC_WINDOW_SECS..=86_400 - TIME_SYNC_WINDOW_SECS).contains(&secs)
        };
        if self.silent()
            || (t - clock).num_seconds().abs() > TIME_SYNC_WINDOW_SECS
            || near_midnight(clock)
            || near_midnight(t)
            || self.faults.time_synced_on == Some(clock.date())
        {
            return false;
        }
        self.faults.clock_offset_secs = (t - sim_now).num_seconds();
        self.faults.time_synced_on = Some(t.date());
        true
    }

    fn status_word3(&self) -> StatusWord3 {
        let mut bits = match self.relay {
            RelayState::Closed => 0,
            RelayState::Open => StatusWord3::RELAY_OPEN | StatusWord3::RELAY_COMMAND_OPEN,
            // Armed: still open, but the last command was a close.
            RelayState::CloseAllowed => StatusWord3::RELAY_OPEN,
        };
        if self.faults.keep_power {
            bits |= StatusWord3::KEEP_POWER;
        }
        StatusWord3::from_bits(bits)
    }

    /// Answers one DL/T 645 frame addressed to this meter; `None` = no reply.
    fn handle_dlt645(
        &mut self,
        own: Address,
        frame: &Frame,
        now: Option<NaiveDateTime>,
    ) -> Option<Frame> {
        if self.silent() || frame.control().is_reply() {
            return None;
        }
        let function = frame.control().function();
        let data = frame.data();
        match function {
            Function::ReadData if data.len() >= 4 => {
                let di = Di::from_wire(&data[..4]).ok()?;
                let value: Option<Vec<u8>> = match di.0 {
                    0x0001_0000 => Some(bcd4(self.shown_register()).to_vec()),
                    0x0506_0101 => self
                        .shown_frozen()
                        .map(|f| bcd4(f.energy_hundredths).to_vec()),
                    0x0506_0001 => self.frozen.map(|f| {
                        vec![
                            0x00,
                            0x00,
                            bcd1(f.date.day()),
                            bcd1(f.date.month()),
                            bcd1(f.date.year().rem_euclid(100) as u32),
                        ]
                    }),
                    0x0400_0503 => Some(self.status_word3().bits().to_le_bytes().to_vec()),
                    // Date `WW DD MM YY` and time `ss mm hh` of the meter's clock.
                    0x0400_0101 => self.clock(now).map(|t| {
                        vec![
                            bcd1(t.weekday().num_days_from_sunday()),
                            bcd1(t.day()),
                            bcd1(t.month()),
                            bcd1(t.year().rem_euclid(100) as u32),
                        ]
                    }),
                    0x0400_0102 => self
                        .clock(now)
                        .map(|t| vec![bcd1(t.second()), bcd1(t.minute()), bcd1(t.hour())]),
                    _ => None,
                };
                Some(match value {
                    Some(v) => {
                        let mut out = di.to_wire().to_vec();
                        out.extend(v);
                        Frame::new(own, ControlCode::reply(Function::ReadData, false), out).ok()?
                    }
                    None => Frame::new(
                        own,
                        ControlCode::error_reply(Function::ReadData),
                        vec![ERR_NO_DATA],
                    )
                    .ok()?,
                })
            }
            Function::RelayControl => {
                let refuse = |word: u16| {
                    Frame::new(
                        own,
                        ControlCode::error_reply(Function::RelayControl),
                        word.to_le_bytes().to_vec(),
                    )
                    .ok()
                };
                if data.len() >= 4 && data[0] == d::SEALED_PASSWORD_LEVEL {
                    return refuse(RELAY_ERR_MAC);
                }
                let Ok(req) = RelayControlRequest::from_data(data) else {
                    return refuse(RELAY_ERR_PASSWORD);
                };
                if self.faults.requires_security || req.password != SIM_PASSWORD {
                    return refuse(RELAY_ERR_PASSWORD);
                }
                if let (Some(now), Some(deadline)) =
                    (self.clock(now), req.control.valid_until.to_naive())
                    && deadline < now
                {
                    return refuse(RELAY_ERR_DEADLINE);
                }
                use d::RelayCommand as C;
                let cmd = req.control.command;
                if cmd == C::Trip && self.faults.keep_power {
                    return refuse(RELAY_ERR_KEEP_POWER);
                }
                if !self.ack_without_state_change {
                    match cmd {
                        C::Trip => self.relay = RelayState::Open,
                        C::CloseAllowed => {
                            self.relay = RelayCommand::CloseAllowed.apply(self.relay)
                        }
                        C::DirectClose => self.relay = RelayState::Closed,
                        C::KeepPowerOn => self.faults.keep_power = true,
                        C::KeepPowerOff => self.faults.keep_power = false,
                        C::Alarm | C::AlarmRelease => {}
                        C::Other(_) => return refuse(RELAY_ERR_PASSWORD),
                    }
                }
                Frame::new(
                    own,
                    ControlCode::reply(Function::RelayControl, false),
                    vec![],
                )
                .ok()
            }
            _ => None,
        }
    }
}

/// Corrupts a reply as a noisy line would: flips bits of its checksum byte.
fn garble(bytes: &mut [u8]) {
    if let Some(i) = bytes.len().checked_sub(2) {
        bytes[i] ^= 0x5A;
    }
}

impl SimFleet {
    /// Meter `i`'s DL/T 645 address (see [`dlt645_address`]).
    pub fn dlt645_address(&self, i: usize) -> Address {
        dlt645_address(i)
    }

    /// One DL/T 645 exchange on the bus of meters `bus`: the reply bytes (with preamble; `None`
    /// when no meter answers) and the meter's reply delay.
    fn dlt645_exchange(
        &self,
        bus: Range<usize>,
        frame: &Frame,
    ) -> (Option<Vec<u8>>, Option<Duration>) {
        if frame.address().is_wildcard()
            && frame.control().function() == Function::ReadAddress
            && !frame.control().is_reply()
        {
            return self.read_address_on(bus);
        }
        if frame.control().function() == Function::BroadcastTime && !frame.control().is_reply() {
            self.time_sync_on(bus, frame);
            return (None, None);
        }
        if !frame.address().is_unicast() {
            return (None, None);
        }
        let mut st = self.shared.lock();
        let now = st.now;
        for i in bus {
            if dlt645_address(i) != frame.address() {
                continue;
            }
            let m = &mut st.meters[i];
            let reply = m.handle_dlt645(frame.address(), frame, now).map(|f| {
                let mut b = f.encode_with_preamble();
                if m.faults.garbled {
                    garble(&mut b);
                }
                b
            });
            return (reply, m.reply_delay);
        }
        (None, None)
    }

    /// Broadcast time (08H) on the bus of meters `bus`: to 999999999999 every meter, or the
    /// addressed one, sets its clock if the standard allows (see the module docs). No reply.
    fn time_sync_on(&self, bus: Range<usize>, frame: &Frame) {
        let Ok(d::Payload::BroadcastTime { time }) = d::Payload::from_frame(frame) else {
            return;
        };
        let Some(t) = time.to_naive() else { return };
        let mut st = self.shared.lock();
        let now = st.now;
        for i in bus {
            if frame.address() == Address::BROADCAST || frame.address() == dlt645_address(i) {
                let applied = st.meters[i].time_sync(now, t);
                tracing::debug!(meter = i, %t, applied, "simulated meter got a broadcast time");
            }
        }
    }

    /// Read address (13H to AAAAAAAAAAAA): every answering meter on the bus replies with its
    /// address (93H). One meter gives a clean reply; several collide on the RS485 line, so the
    /// reply is garbled (the client then sees nothing usable, as on a real bus).
    fn read_address_on(&self, bus: Range<usize>) -> (Option<Vec<u8>>, Option<Duration>) {
        let st = self.shared.lock();
        let answering: Vec<usize> = bus.filter(|&i| !st.meters[i].silent()).collect();
        let Some(&first) = answering.first() else {
            return (None, None);
        };
        let own = dlt645_address(first);
        let Ok(reply) = Frame::new(
            own,
            ControlCode::reply(Function::ReadAddress, false),
            own.to_wire().to_vec(),
        ) else {
            return (None, None);
        };
        let mut bytes = reply.encode_with_preamble();
        if answering.len() > 1 || st.meters[first].faults.garbled {
            garble(&mut bytes);
        }
        (Some(bytes), st.meters[first].reply_delay)
    }

    /// Starts one DL/T 645 serial gateway (transparent TCP) per `meters_per_gateway` meters on
    /// `ip`, ephemeral ports. Returns each meter's link and address, in meter order. Runs until
    /// the fleet is shut down or dropped.
    pub async fn serve_dlt645(
        self: &Arc<Self>,
        ip: IpAddr,
        meters_per_gateway: usize,
    ) -> Result<Vec<Dlt645Meter>, SimError> {
        if meters_per_gateway == 0 {
            return Err(SimError::MetersPerGateway(0));
        }
        let n = self.len();
        let mut out = Vec::with_capacity(n);
        for first in (0..n).step_by(meters_per_gateway) {
            let bus = first..(first + meters_per_gateway).min(n);
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|source| SimError::Bind { ip, source })?;
            let gateway = listener
                .local_addr()
                .map_err(|source| SimError::Bind { ip, source })?;
            for i in bus.clone() {
                out.push(Dlt645Meter {
                    link: Link::Gateway(gateway),
                    address: dlt645_address(i),
                    requires_security: false,
                });
            }
            let fleet = Arc::downgrade(self);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    let fleet = fleet.clone();
                    let bus = bus.clone();
                    tokio::spawn(serve_bus(stream, fleet, bus));
                }
            });
            self.keep(task);
        }
        Ok(out)
    }

    /// Serves meters `bus` over DL/T 645 on a local serial port (e.g. one end of a
    /// pseudo-terminal pair), as meters on an RS485 line would. Returns each meter as reached
    /// through `client_line` (the other end, as the host opens it). Runs until the fleet is shut
    /// down or dropped.
    pub fn serve_dlt645_serial(
        self: &Arc<Self>,
        line: crate::serial::SerialLine,
        client_line: crate::serial::SerialLine,
        bus: Range<usize>,
    ) -> io::Result<Vec<Dlt645Meter>> {
        let stream = line.open()?;
        let meters = bus
            .clone()
            .map(|i| Dlt645Meter {
                link: Link::Serial(client_line),
                address: dlt645_address(i),
                requires_security: false,
            })
            .collect();
        self.keep(tokio::spawn(serve_bus(stream, Arc::downgrade(self), bus)));
        Ok(meters)
    }

    /// Runs one Q/GDW 1376.1 terminal per `per` meters of `meters` (addresses 3501-0001,
    /// 3501-0002, …; see [`run_terminal`](Self::run_terminal)) dialling `master`, and waits up to
    /// 10 s for each to log in. Returns the meters as reached through their terminals.
    pub async fn run_terminals(
        self: &Arc<Self>,
        master: &crate::terminal::Master,
        meters: Range<usize>,
        per: usize,
        heartbeat: Duration,
    ) -> Result<Vec<Dlt645Meter>, SimError> {
        if per == 0 {
            return Err(SimError::MetersPerGateway(0));
        }
        let mut out = Vec::with_capacity(meters.len());
        for (k, first) in meters.clone().step_by(per).enumerate() {
            let address = TerminalAddress {
                region: 0x3501,
                terminal: u16::try_from(k + 1).map_err(|_| SimError::TooManyTerminals(per))?,
            };
            out.extend(self.run_terminal(
                master.local_addr(),
                address,
                first..(first + per).min(meters.end),
                heartbeat,
            ));
            if !master.wait_online(address, Duration::from_secs(10)).await {
                return Err(SimError::TerminalOffline(address));
            }
        }
        Ok(out)
    }

    /// Runs a Q/GDW 1376.1 collection terminal with meters `bus` on its RS485 port 31 (1FH): it
    /// dials `master`, logs in, sends a heartbeat every `heartbeat`, and forwards AFN 10H F1
    /// requests to the meters (an empty reply when the meter does not answer). It redials after
    /// a lost connection. Runs until the fleet is shut down or dropped.
    pub fn run_terminal(
        self: &Arc<Self>,
        master: SocketAddr,
        address: TerminalAddress,
        bus: Range<usize>,
        heartbeat: Duration,
    ) -> Vec<Dlt645Meter> {
        let fleet = Arc::downgrade(self);
        let meters = bus
            .clone()
            .map(|i| Dlt645Meter {
                link: Link::Terminal {
                    terminal: address,
                    port: TERMINAL_METER_PORT,
                },
                address: dlt645_address(i),
                requires_security: false,
            })
            .collect();
        let task = tokio::spawn(async move {
            loop {
                if let Err(err) =
                    terminal_session(&fleet, master, address, bus.clone(), heartbeat).await
                {
                    tracing::debug!(%err, terminal = %address, "simulated terminal session ended");
                }
                if fleet.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.keep(task);
        meters
    }
}

/// The terminal port number of the RS485 meter bus in the simulator (31 = 1FH, as in the vectors).
pub const TERMINAL_METER_PORT: u8 = 0x1F;

async fn serve_bus(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    fleet: std::sync::Weak<SimFleet>,
    bus: Range<usize>,
) {
    let mut decoder = StreamDecoder::new();
    serve_line(stream, fleet, move |fleet, bytes| {
        decoder.push(bytes);
        std::iter::from_fn(|| decoder.next_frame())
            .filter_map(|frame| match fleet.dlt645_exchange(bus.clone(), &frame) {
                (Some(reply), delay) => Some((reply, delay)),
                (None, _) => None,
            })
            .collect()
    })
    .await
}

async fn terminal_session(
    fleet: &std::sync::Weak<SimFleet>,
    master: SocketAddr,
    address: TerminalAddress,
    bus: Range<usize>,
    heartbeat: Duration,
) -> io::Result<()> {
    let mut stream = TcpStream::connect(master).await?;
    let _ = stream.set_nodelay(true);
    let mut seq: u8 = 0;
    let login = Q376Frame::login(address, seq)
        .encode()
        .map_err(io::Error::other)?;
    stream.write_all(&login).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq = seq.wrapping_add(1) & 0x0F;
                let hb = Q376Frame::heartbeat(address, seq).encode().map_err(io::Error::other)?;
                stream.write_all(&hb).await?;
            }
            r = stream.read(&mut chunk) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match q::find_frame(&buf) {
                        q::Scan::Incomplete { skip } => {
                            buf.drain(..skip);
                            break;
                        }
                        q::Scan::Frame(frame, used) => {
                            buf.drain(..used);
                            let Ok(frame) = frame else { continue };
                            let Body::ForwardRequest { port, content, .. } = &frame.body else {
                                continue;
                            };
                            let Some(fleet) = fleet.upgrade() else { return Ok(()) };
                            let (reply, delay) = match d::Frame::decode(content) {
                                Ok(inner) if *port == TERMINAL_METER_PORT => {
                                    fleet.dlt645_exchange(bus.clone(), &inner)
                                }
                                _ => (None, None),
                            };
                            drop(fleet);
                            if let (Some(_), Some(d)) = (&reply, delay) {
                                tokio::time::sleep(d).await;
                            }
                            let out = Q376Frame::forward_reply(&frame, *port, reply.unwrap_or_default())
                                .encode()
                                .map_err(io::Error::other)?;
                            stream.write_all(&out).await?;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_encoding() {
        assert_eq!(bcd4(12_345_678), [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(bcd4(678), [0x78, 0x06, 0x00, 0x00]);
        assert_eq!(bcd1(13), 0x13);
        assert_eq!(dlt645_address(7).to_string(), "350100000007");
    }
}
