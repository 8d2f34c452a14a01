//! The simulated fleet's Modbus RTU front end: meters on an RS485 line reached through a local
//! serial port (one end of a socat pseudo-terminal pair in tests), as a bus of real meters.
//!
//! - Meter `bus.start + k` is unit `k + 1` on the line (at most 247 meters).
//! - Requests are framed by their function code (01–06: 8 bytes; 0F/10: by their byte
//!   count); a frame with a bad CRC is ignored, as a meter ignores noise, and the decoder
//!   resynchronises byte by byte. Function codes other than 03/04/05/06 get exception 01.
//! - Only the addressed meter answers; a unit that is not on the line gets no reply (there is
//!   no gateway to say 0x0A), and broadcast requests (unit 0) are not acted on.
//! - Registers: without a map, the simulator's own layout ([`crate::registers`]: live and
//!   frozen energy, relay state and command). With a [`RegisterMap`], the map's billed
//!   register shows the live register, its relay state register and relay command (register
//!   or coil) work as the map says, and every other register gets exception 02: the simulator
//!   models energy and the relay, not voltage or power.
//! - Faults as on every front end: silence, reply delay (the line is busy meanwhile), a
//!   garbled reply (one CRC byte flipped), an acknowledgement without a state change,
//!   transient zero.

use std::ops::Range;

use super::*;
use crate::client::RtuAddress;
use crate::modbus_map::rtu::crc16;
use crate::modbus_map::{RegisterDef, RegisterMap, RelayKind};
use crate::serial::SerialLine;

/// A request taken off the line: unit id, function code and the PDU's data (CRC checked).
#[derive(Debug, PartialEq, Eq)]
struct RtuRequest {
    unit: u8,
    function: u8,
    data: Vec<u8>,
}

/// Takes the next request with a valid CRC off the front of `buf`; `None` until one is
/// complete. Bytes that do not start a valid frame are dropped one at a time.
fn next_request(buf: &mut Vec<u8>) -> Option<RtuRequest> {
    loop {
        let function = *buf.get(1)?;
        let len = match function {
            0x01..=0x06 => 8,
            0x0F | 0x10 => 9 + usize::from(*buf.get(6)?),
            // Unknown length: take what has arrived as one frame (the line falls silent
            // after a request); a CRC mismatch drops a byte as for any noise.
            _ => buf.len(),
        };
        if len < 4 {
            buf.remove(0);
            continue;
        }
        let frame = buf.get(..len)?;
        let (body, crc) = frame.split_at(len - 2);
        if crc16(body) == u16::from_le_bytes([crc[0], crc[1]]) {
            let request = RtuRequest {
                unit: body[0],
                function,
                data: body[2..].to_vec(),
            };
            buf.drain(..len);
            return Some(request);
        }
        buf.remove(0);
    }
}

/// The reply frame (with CRC) to `function` for `unit`.
fn encode_reply(unit: u8, function: u8, reply: Result<Response, ExceptionCode>) -> Vec<u8> {
    let mut out = vec![unit];
    let words = |out: &mut Vec<u8>, w: &[u16]| {
        out.push(function);
        out.push((w.len() * 2) as u8);
        out.extend(w.iter().flat_map(|x| x.to_be_bytes()));
    };
    match reply {
        Ok(Response::ReadInputRegisters(w) | Response::ReadHoldingRegisters(w)) => {
            words(&mut out, &w)
        }
        Ok(Response::WriteSingleRegister(a, v)) => {
            out.push(function);
            out.extend(a.to_be_bytes());
            out.extend(v.to_be_bytes());
        }
        Ok(Response::WriteSingleCoil(a, on)) => {
            out.push(function);
            out.extend(a.to_be_bytes());
            out.extend(if on { [0xFF, 0x00] } else { [0x00, 0x00] });
        }
        Ok(_) => {
            out.push(function | 0x80);
            out.push(u8::from(ExceptionCode::ServerDeviceFailure));
        }
        Err(code) => {
            out.push(function | 0x80);
            out.push(u8::from(code));
        }
    }
    let crc = crc16(&out).to_le_bytes();
    out.extend(crc);
    out
}

/// The request as tokio-modbus types, or the exception a meter gives for it.
fn parse(req: &RtuRequest) -> Result<Request<'static>, ExceptionCode> {
    let word = |i: usize| u16::from_be_bytes([req.data[i], req.data[i + 1]]);
    if req.data.len() < 4 {
        return Err(ExceptionCode::IllegalFunction);
    }
    let (a, v) = (word(0), word(2));
    Ok(match req.function {
        0x03 => Request::ReadHoldingRegisters(a, v),
        0x04 => Request::ReadInputRegisters(a, v),
        0x05 => match v {
            0xFF00 => Request::WriteSingleCoil(a, true),
            0x0000 => Request::WriteSingleCoil(a, false),
            _ => return Err(ExceptionCode::IllegalDataValue),
        },
        0x06 => Request::WriteSingleRegister(a, v),
        _ => return Err(ExceptionCode::IllegalFunction),
    })
}

impl Meter {
    /// A read of `qty` words at `start` with `function` from a meter of type `map`: the billed
    /// register or the relay state register, nothing else.
    fn mapped_read(
        &self,
        map: &RegisterMap,
        function: u8,
        start: u16,
        qty: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let billing = map.billing_register();
        let relay = map.relay.as_ref();
        let state = relay.and_then(|r| map.register(&r.state_register).ok());
        let hit = |r: &RegisterDef| {
            r.function == function && r.address == start && r.data_type.words() == qty
        };
        if hit(billing) {
            return billing
                .encode(crate::registers::hundredths_to_kwh(self.shown_register()))
                .map_err(|_| ExceptionCode::ServerDeviceFailure);
        }
        match (relay, state) {
            (Some(r), Some(s)) if hit(s) => Ok(vec![match self.relay {
                RelayState::Closed => r.state_closed,
                RelayState::Open => r.state_open,
                RelayState::CloseAllowed => r.state_close_allowed.unwrap_or(r.state_open),
            }]),
            _ => Err(ExceptionCode::IllegalDataAddress),
        }
    }

    /// Answers `request` as a meter of type `map`; `None` = no reply.
    fn handle_mapped(
        &mut self,
        map: &RegisterMap,
        request: &Request<'_>,
    ) -> Option<Result<Response, ExceptionCode>> {
        if self.silent() {
            return None;
        }
        let relay = map.relay.as_ref();
        let command = match request {
            Request::ReadInputRegisters(a, q) => {
                return Some(
                    self.mapped_read(map, 4, *a, *q)
                        .map(Response::ReadInputRegisters),
                );
            }
            Request::ReadHoldingRegisters(a, q) => {
                return Some(
                    self.mapped_read(map, 3, *a, *q)
                        .map(Response::ReadHoldingRegisters),
                );
            }
            Request::WriteSingleRegister(a, v) => match relay {
                Some(r) if r.kind == RelayKind::HoldingRegister && r.address == *a => [
                    (r.trip, RelayCommand::Trip),
                    (r.close_allowed, RelayCommand::CloseAllowed),
                    (r.direct_close, RelayCommand::DirectClose),
                ]
                .into_iter()
                .find(|(code, _)| *code == Some(*v))
                .map(|(_, c)| (c, Response::WriteSingleRegister(*a, *v)))
                .ok_or(ExceptionCode::IllegalDataValue),
                _ => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::WriteSingleCoil(a, on) => match relay {
                Some(r) if r.kind == RelayKind::Coil && r.address == *a => {
                    let c = if *on {
                        RelayCommand::DirectClose
                    } else {
                        RelayCommand::Trip
                    };
                    Ok((c, Response::WriteSingleCoil(*a, *on)))
                }
                _ => Err(ExceptionCode::IllegalDataAddress),
            },
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Some(command.map(|(c, ack)| {
            if !self.ack_without_state_change {
                self.relay = c.apply(self.relay);
            }
            ack
        }))
    }
}

impl SimFleet {
    /// Serves meters `bus` over Modbus RTU on a local serial port `line` (e.g. one end of a
    /// pseudo-terminal pair), as meters on an RS485 line would; with `map`, as meters of that
    /// type (see the module docs). Returns each meter as reached through `client_line` (the
    /// other end, as the host opens it), unit ids 1, 2, … in meter order. Runs until the
    /// fleet is shut down or dropped. Fails when the port cannot be opened or `bus` has more
    /// than 247 meters.
    pub fn serve_modbus_rtu(
        self: &Arc<Self>,
        line: SerialLine,
        client_line: SerialLine,
        bus: Range<usize>,
        map: Option<RegisterMap>,
    ) -> io::Result<Vec<RtuAddress>> {
        if bus.len() > usize::from(MAX_UNITS_PER_GATEWAY) || bus.end > self.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "meters {bus:?}: a Modbus RTU line addresses at most 247 meters of the {}",
                    self.len()
                ),
            ));
        }
        let stream = line.open()?;
        let meters = (1..=bus.len())
            .map(|unit| RtuAddress {
                line: client_line,
                unit: unit as u8,
            })
            .collect();
        self.keep(tokio::spawn(serve_rtu_line(
            stream,
            Arc::downgrade(self),
            bus,
            map,
        )));
        Ok(meters)
    }

    /// One RTU exchange on the line of meters `bus`: the reply frame (`None`: nobody
    /// answers) and the meter's reply delay.
    fn rtu_exchange(
        &self,
        bus: Range<usize>,
        map: Option<&RegisterMap>,
        req: &RtuRequest,
    ) -> (Option<Vec<u8>>, Option<Duration>) {
        let unit = usize::from(req.unit);
        if unit == 0 || unit > bus.len() {
            return (None, None);
        }
        let mut st = self.shared.lock();
        let m = &mut st.meters[bus.start + unit - 1];
        let answer = match parse(req) {
            Err(_) if m.silent() => None,
            Err(code) => Some(Err(code)),
            Ok(request) => match map {
                Some(map) => m.handle_mapped(map, &request),
                None => m.handle(&request),
            },
        };
        let reply = answer.map(|a| {
            let mut bytes = encode_reply(req.unit, req.function, a);
            if m.faults.garbled {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x5A;
            }
            bytes
        });
        (reply, m.reply_delay)
    }
}

async fn serve_rtu_line(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    fleet: std::sync::Weak<SimFleet>,
    bus: Range<usize>,
    map: Option<RegisterMap>,
) {
    let mut buf = Vec::new();
    serve_line(stream, fleet, move |fleet, bytes| {
        buf.extend_from_slice(bytes);
        std::iter::from_fn(|| next_request(&mut buf))
            .filter_map(
                |req| match fleet.rtu_exchange(bus.clone(), map.as_ref(), &req) {
                    (Some(reply), delay) => Some((reply, delay)),
                    (None, _) => None,
                },
            )
            .collect()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.extend(crc16(bytes).to_le_bytes());
        v
    }

    #[test]
    fn requests_are_framed_by_function_and_crc_and_noise_is_skipped() {
        // Noise, then FC04 unit 1 read 0x0000 x2, then a corrupted FC03, then FC06.
        let read = framed(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x02]);
        let mut bad = framed(&[0x02, 0x03, 0x01, 0x00, 0x00, 0x01]);
        bad[7] ^= 0xFF;
        let write = framed(&[0x02, 0x06, 0x01, 0x00, 0x00, 0x1A]);
        let mut buf = vec![0xFF, 0x00];
        buf.extend(&read);
        buf.extend(&bad);
        buf.extend(&write[..5]);
        let first = next_request(&mut buf).unwrap();
        assert_eq!(
            (first.unit, first.function, first.data),
            (1, 4, vec![0, 0, 0, 2])
        );
        assert_eq!(next_request(&mut buf), None, "the write is incomplete");
        buf.extend(&write[5..]);
        let w = next_request(&mut buf).unwrap();
        assert_eq!((w.unit, w.function), (2, 6));
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_match_the_shared_vectors_framing() {
        // The vector `tasmota-sdm120-voltage`: unit 1, FC04, 0x43663334 (230.2 V).
        let r = encode_reply(1, 4, Ok(Response::ReadInputRegisters(vec![0x4366, 0x3334])));
        assert_eq!(r, [0x01, 0x04, 0x04, 0x43, 0x66, 0x33, 0x34, 0x1B, 0x38]);
        let e = encode_reply(1, 4, Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(
            crate::modbus_map::rtu::decode_response(&e).unwrap(),
            crate::modbus_map::rtu::RtuResponse::Exception {
                unit: 1,
                function: 4,
                code: 2
            }
        );
    }
}
