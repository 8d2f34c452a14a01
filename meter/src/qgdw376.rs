//! Q/GDW 1376.1 (集中器/终端 ↔ 主站) framing, enough to read meters and switch relays behind a
//! collection terminal: link detection (AFN 02H: F1 login, F2 logout, F3 heartbeat), the
//! master's confirmation (AFN 00H F1), and transparent forwarding (AFN 10H F1), whose content is
//! a DL/T 645 frame handed to [`crate::dlt645`].
//!
//! Frame: `68 L L 68 C A AFN SEQ DA DT data [EC] [PW] [Tp] CS 16`, where
//! - L (2 bytes, little-endian, sent twice): bits 0–1 protocol identifier (2 = Q/GDW 1376.1),
//!   bits 2–15 the user-data length (C through the last auxiliary byte);
//! - C: D7 direction (1 = terminal → master), D6 PRM (1 = from the initiating station),
//!   D5 FCB (down) / ACD (up: an event counter EC follows the data), D4 FCV, D3–D0 function;
//! - A: A1 administrative region code (2 bytes, BCD, low byte first), A2 terminal address
//!   (2 bytes binary, low byte first), A3 (D0 group address, D1–D7 master station address);
//! - SEQ: D7 TpV (a 6-byte time label Tp ends the frame), D6 FIR, D5 FIN, D4 CON, D3–D0 sequence;
//! - DA/DT: measuring point Pn and information class Fn (here always p0 and one Fn);
//! - CS: sum of the user data modulo 256.
//!
//! Downlink AFN 10H carries a 16-byte message authentication field PW. Feegate sends the
//! value configured for the terminal ([`Pw`], zeros by default, which terminals without
//! message authentication accept); computing a real PW needs the county's key and is not done
//! here — a terminal that checks it will deny the request, and the error says so.

use std::fmt;

use serde::Serialize;

use crate::dlt645;

/// Start byte.
pub const START: u8 = 0x68;
/// End byte.
pub const END: u8 = 0x16;
/// Protocol identifier of Q/GDW 1376.1 in the L field.
pub const PROTOCOL_ID: u8 = 2;
/// Bytes around the user data: 68 L L 68 … CS 16.
pub const OVERHEAD: usize = 8;

/// AFN: confirmation / denial.
pub const AFN_CONFIRM: u8 = 0x00;
/// AFN: link interface detection (login, logout, heartbeat).
pub const AFN_LINK: u8 = 0x02;
/// AFN: data forwarding.
pub const AFN_FORWARD: u8 = 0x10;

/// Terminal address (A1 region code + A2 terminal number); shown and serialised as
/// `RRRR-TTTT` (hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TerminalAddress {
    /// A1, administrative region code, as its 4 BCD digits (e.g. 0x0200 → "0200").
    pub region: u16,
    /// A2, terminal number 1..=65535 (0 is invalid, FFFFH is broadcast).
    pub terminal: u16,
}

impl Serialize for TerminalAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for TerminalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}-{:04X}", self.region, self.terminal)
    }
}

impl std::str::FromStr for TerminalAddress {
    type Err = Q376Error;
    /// `RRRR-TTTT`, both hex digits as printed (region in BCD digits).
    fn from_str(s: &str) -> Result<Self, Q376Error> {
        let bad = || Q376Error::Field {
            field: "terminal address",
            problem: format!("{s:?} is not RRRR-TTTT (region code digits, terminal number in hex)"),
        };
        let (r, t) = s.split_once('-').ok_or_else(bad)?;
        Ok(TerminalAddress {
            region: u16::from_str_radix(r, 16).map_err(|_| bad())?,
            terminal: u16::from_str_radix(t, 16).map_err(|_| bad())?,
        })
    }
}

/// The control field C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Control(pub u8);

impl Control {
    /// D7: 1 = terminal → master (uplink).
    pub fn uplink(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// D6 PRM: 1 = from the initiating station.
    pub fn prm(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// D5 on an uplink frame: ACD, an event counter EC is in the auxiliary field.
    pub fn acd(self) -> bool {
        self.uplink() && self.0 & 0x20 != 0
    }
    /// D3–D0: link function code.
    pub fn function(self) -> u8 {
        self.0 & 0x0F
    }
}

/// SEQ: frame sequence field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seq(pub u8);

impl Seq {
    /// A single-frame SEQ (FIR = FIN = 1) with sequence number `n` (low 4 bits).
    pub fn single(n: u8, confirm: bool, time_label: bool) -> Self {
        Seq(0x60 | (n & 0x0F) | if confirm { 0x10 } else { 0 } | if time_label { 0x80 } else { 0 })
    }
    /// D7 TpV: a time label Tp ends the frame.
    pub fn tpv(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// D4 CON: the sender wants a confirmation.
    pub fn con(self) -> bool {
        self.0 & 0x10 != 0
    }
    /// D3–D0: PSEQ/RSEQ.
    pub fn number(self) -> u8 {
        self.0 & 0x0F
    }
}

/// The 16-byte message authentication field of downlink AFN 10H frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Pw(pub [u8; 16]);

/// Time label Tp: PFC, send time (ss mm hh DD, BCD), allowed delay in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeLabel {
    /// Frame counter of the initiating station.
    pub pfc: u8,
    /// Send time, second minute hour day, as BCD bytes.
    pub time_bcd: [u8; 4],
    /// Allowed transmission delay, minutes (0 = no check).
    pub delay_min: u8,
}

/// Serial port settings of a forwarding request (the communication control word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortSettings(pub u8);

impl PortSettings {
    /// 2400 baud, 8 data bits, even parity, 1 stop bit: the DL/T 645 default (0x6B).
    pub const DLT645_2400_8E1: PortSettings = PortSettings(0x6B);
}

/// The data unit of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Body {
    /// AFN 02H F1: the terminal logs in.
    Login,
    /// AFN 02H F2: the terminal logs out.
    Logout,
    /// AFN 02H F3: heartbeat.
    Heartbeat,
    /// AFN 00H F1: all confirmed.
    Confirm,
    /// AFN 00H F2: all denied.
    Deny,
    /// AFN 10H F1 downlink: forward `content` on `port`.
    ForwardRequest {
        /// Terminal port number (31 = 1FH is the usual RS485 meter port).
        port: u8,
        /// Baud rate, parity, stop and data bits.
        settings: PortSettings,
        /// Whole-reply timeout: D7 unit (0 = 10 ms, 1 = s), D6–D0 value.
        message_timeout: u8,
        /// Inter-byte timeout, 10 ms.
        byte_timeout: u8,
        /// The frame to forward (a DL/T 645 frame), bytes as sent.
        #[serde(serialize_with = "hex_bytes")]
        content: Vec<u8>,
    },
    /// AFN 10H F1 uplink: what came back on `port` (empty when the meter did not answer).
    ForwardReply {
        /// Terminal port number.
        port: u8,
        /// The reply bytes (a DL/T 645 frame, possibly with FEH preamble).
        #[serde(serialize_with = "hex_bytes")]
        content: Vec<u8>,
    },
    /// Anything else: AFN, Fn and the unit data as hex.
    Other {
        /// AFN.
        afn: u8,
        /// Information class Fn.
        fn_: u16,
        /// The unit data.
        #[serde(serialize_with = "hex_bytes")]
        data: Vec<u8>,
    },
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(bytes))
}

/// Uppercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// One Q/GDW 1376.1 frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Q376Frame {
    /// C.
    pub control: Control,
    /// A1 + A2.
    pub address: TerminalAddress,
    /// A3: D1–D7 master station address (MSA), D0 group flag.
    pub a3: u8,
    /// SEQ.
    pub seq: Seq,
    /// Measuring point Pn of the data unit (0 = the terminal itself).
    pub pn: u16,
    /// What the frame says.
    pub body: Body,
    /// Event counters EC1, EC2 (uplink with ACD).
    pub ec: Option<[u8; 2]>,
    /// Message authentication (downlink AFN 10H).
    pub pw: Option<Pw>,
    /// Time label (SEQ.TpV).
    pub tp: Option<TimeLabel>,
}

/// A frame that is not valid Q/GDW 1376.1 (for this codec). Messages name the broken field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Q376Error {
    /// Not enough bytes.
    #[error("frame too short: {len} bytes, need at least {need}; the frame is cut off")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A field has a wrong value.
    #[error("{field} field: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Checksum mismatch.
    #[error(
        "checksum field: frame says {in_frame:#04x}, the user data sums to {computed:#04x}; the frame is corrupt"
    )]
    Checksum {
        /// In the frame.
        in_frame: u8,
        /// Computed.
        computed: u8,
    },
}

fn field(field: &'static str, problem: impl Into<String>) -> Q376Error {
    Q376Error::Field {
        field,
        problem: problem.into(),
    }
}

/// Fn from DT1 (bit mask) and DT2 (group): Fn = DT2 × 8 + bit + 1.
fn fn_from_dt(dt1: u8, dt2: u8) -> Result<u16, Q376Error> {
    if dt1.count_ones() != 1 {
        return Err(field(
            "DT",
            format!(
                "DT1 {dt1:#04x} must name exactly one Fn (one bit set); multi-Fn units are not supported"
            ),
        ));
    }
    Ok(u16::from(dt2) * 8 + dt1.trailing_zeros() as u16 + 1)
}

fn dt_from_fn(f: u16) -> [u8; 2] {
    let i = f - 1;
    [1 << (i % 8), (i / 8) as u8]
}

fn pn_from_da(da1: u8, da2: u8) -> Result<u16, Q376Error> {
    if da1 == 0 && da2 == 0 {
        return Ok(0);
    }
    if da1.count_ones() != 1 || da2 == 0 {
        return Err(field(
            "DA",
            format!("DA {da1:02X} {da2:02X} must name one measuring point"),
        ));
    }
    Ok((u16::from(da2) - 1) * 8 + da1.trailing_zeros() as u16 + 1)
}

fn da_from_pn(pn: u16) -> [u8; 2] {
    if pn == 0 {
        return [0, 0];
    }
    let i = pn - 1;
    [1 << (i % 8), (i / 8 + 1) as u8]
}

fn bcd16(v: u16) -> bool {
    (0..4).all(|i| (v >> (i * 4)) & 0xF <= 9)
}

impl Q376Frame {
    /// The frame's AFN.
    pub fn afn(&self) -> u8 {
        match &self.body {
            Body::Login | Body::Logout | Body::Heartbeat => AFN_LINK,
            Body::Confirm | Body::Deny => AFN_CONFIRM,
            Body::ForwardRequest { .. } | Body::ForwardReply { .. } => AFN_FORWARD,
            Body::Other { afn, .. } => *afn,
        }
    }

    fn fn_(&self) -> u16 {
        match &self.body {
            Body::Login
            | Body::Confirm
            | Body::ForwardRequest { .. }
            | Body::ForwardReply { .. } => 1,
            Body::Logout | Body::Deny => 2,
            Body::Heartbeat => 3,
            Body::Other { fn_, .. } => *fn_,
        }
    }

    /// A terminal's login (AFN 02H F1, C = C9H).
    pub fn login(address: TerminalAddress, seq: u8) -> Self {
        Self::link(address, seq, Body::Login)
    }

    /// A terminal's heartbeat (AFN 02H F3, C = C9H).
    pub fn heartbeat(address: TerminalAddress, seq: u8) -> Self {
        Self::link(address, seq, Body::Heartbeat)
    }

    fn link(address: TerminalAddress, seq: u8, body: Body) -> Self {
        Q376Frame {
            control: Control(0xC9),
            address,
            a3: 0,
            seq: Seq::single(seq, true, false),
            pn: 0,
            body,
            ec: None,
            pw: None,
            tp: None,
        }
    }

    /// The master's confirmation of a link frame (AFN 00H F1, C = 0BH, same sequence).
    pub fn confirm(to: &Q376Frame) -> Self {
        Q376Frame {
            control: Control(0x0B),
            address: to.address,
            a3: to.a3,
            seq: Seq::single(to.seq.number(), false, false),
            pn: 0,
            body: Body::Confirm,
            ec: None,
            pw: None,
            tp: None,
        }
    }

    /// The master's transparent forwarding request (AFN 10H F1, C = 4AH) of one DL/T 645
    /// frame on `port` at 2400 8E1.
    pub fn forward_request(
        address: TerminalAddress,
        msa: u8,
        seq: u8,
        port: u8,
        timeout_s: u8,
        content: Vec<u8>,
        pw: Pw,
    ) -> Self {
        Q376Frame {
            control: Control(0x4A),
            address,
            a3: (msa & 0x7F) << 1,
            seq: Seq::single(seq, false, false),
            pn: 0,
            body: Body::ForwardRequest {
                port,
                settings: PortSettings::DLT645_2400_8E1,
                message_timeout: 0x80 | timeout_s.min(0x7F),
                byte_timeout: 10,
                content,
            },
            ec: None,
            pw: Some(pw),
            tp: None,
        }
    }

    /// The terminal's reply to a forwarding request (AFN 10H F1, C = 88H).
    pub fn forward_reply(request: &Q376Frame, port: u8, content: Vec<u8>) -> Self {
        Q376Frame {
            control: Control(0x88),
            address: request.address,
            a3: request.a3,
            seq: Seq::single(request.seq.number(), false, request.tp.is_some()),
            pn: 0,
            body: Body::ForwardReply { port, content },
            ec: None,
            pw: None,
            tp: request.tp,
        }
    }

    /// The inner DL/T 645 frame of a forwarding request or reply.
    pub fn dlt645(&self) -> Option<Result<dlt645::Frame, dlt645::Dlt645Error>> {
        match &self.body {
            Body::ForwardRequest { content, .. } | Body::ForwardReply { content, .. }
                if !content.is_empty() =>
            {
                Some(dlt645::Frame::decode(content))
            }
            _ => None,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>, Q376Error> {
        if !bcd16(self.address.region) {
            return Err(field(
                "A1",
                format!(
                    "region code {:04X} is not 4 BCD digits",
                    self.address.region
                ),
            ));
        }
        let mut u = Vec::with_capacity(64);
        u.push(self.control.0);
        u.extend(self.address.region.to_le_bytes());
        u.extend(self.address.terminal.to_le_bytes());
        u.push(self.a3);
        u.push(self.afn());
        let tpv = self.tp.is_some();
        u.push((self.seq.0 & 0x7F) | if tpv { 0x80 } else { 0 });
        u.extend(da_from_pn(self.pn));
        u.extend(dt_from_fn(self.fn_()));
        match &self.body {
            Body::ForwardRequest {
                port,
                settings,
                message_timeout,
                byte_timeout,
                content,
            } => {
                u.extend([*port, settings.0, *message_timeout, *byte_timeout]);
                let len = u16::try_from(content.len())
                    .map_err(|_| field("forwarding length", "content over 65535 bytes"))?;
                u.extend(len.to_le_bytes());
                u.extend(content);
            }
            Body::ForwardReply { port, content } => {
                u.push(*port);
                let len = u16::try_from(content.len())
                    .map_err(|_| field("forwarding length", "content over 65535 bytes"))?;
                u.extend(len.to_le_bytes());
                u.extend(content);
            }
            Body::Other { data, .. } => u.extend(data),
            _ => {}
        }
        if let Some(ec) = self.ec {
            u.extend(ec);
        }
        if let Some(pw) = self.pw {
            u.extend(pw.0);
        }
        if let Some(tp) = self.tp {
            u.push(tp.pfc);
            u.extend(tp.time_bcd);
            u.push(tp.delay_min);
        }
        let len = u16::try_from(u.len())
            .ok()
            .filter(|l| *l < 1 << 14)
            .ok_or_else(|| field("L", format!("user data of {} bytes is over 16383", u.len())))?;
        let l = (len << 2 | u16::from(PROTOCOL_ID)).to_le_bytes();
        let mut out = Vec::with_capacity(u.len() + OVERHEAD);
        out.push(START);
        out.extend(l);
        out.extend(l);
        out.push(START);
        let cs = u.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        out.extend(u);
        out.push(cs);
        out.push(END);
        Ok(out)
    }

    /// Decodes one whole frame (no bytes before or after).
    pub fn decode(bytes: &[u8]) -> Result<Self, Q376Error> {
        if bytes.len() < OVERHEAD + 12 {
            return Err(Q376Error::TooShort {
                len: bytes.len(),
                need: OVERHEAD + 12,
            });
        }
        if bytes[0] != START || bytes[5] != START {
            return Err(field(
                "start",
                format!(
                    "bytes 0 and 5 are {:02X} and {:02X}, both must be 68",
                    bytes[0], bytes[5]
                ),
            ));
        }
        let l1 = u16::from_le_bytes([bytes[1], bytes[2]]);
        let l2 = u16::from_le_bytes([bytes[3], bytes[4]]);
        if l1 != l2 {
            return Err(field(
                "L",
                format!("the two copies differ ({l1:#06x} and {l2:#06x})"),
            ));
        }
        if (l1 & 3) as u8 != PROTOCOL_ID {
            return Err(field(
                "L",
                format!(
                    "protocol identifier is {}, expected 2 (Q/GDW 1376.1); 1 is the older Q/GDW 130",
                    l1 & 3
                ),
            ));
        }
        let len = usize::from(l1 >> 2);
        if bytes.len() != len + OVERHEAD {
            return Err(field(
                "L",
                format!(
                    "says {len} user-data bytes, so the frame must be {} bytes, but it is {}",
                    len + OVERHEAD,
                    bytes.len()
                ),
            ));
        }
        if len < 12 {
            return Err(field(
                "L",
                format!("user data of {len} bytes cannot hold C, A, AFN, SEQ, DA, DT"),
            ));
        }
        let u = &bytes[6..6 + len];
        let computed = u.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let in_frame = bytes[6 + len];
        if computed != in_frame {
            return Err(Q376Error::Checksum { in_frame, computed });
        }
        if bytes[7 + len] != END {
            return Err(field(
                "end",
                format!("last byte is {:02X}, must be 16", bytes[7 + len]),
            ));
        }
        let control = Control(u[0]);
        let region = u16::from_le_bytes([u[1], u[2]]);
        if !bcd16(region) {
            return Err(field(
                "A1",
                format!("region code {region:04X} is not 4 BCD digits"),
            ));
        }
        let address = TerminalAddress {
            region,
            terminal: u16::from_le_bytes([u[3], u[4]]),
        };
        let a3 = u[5];
        let afn = u[6];
        let seq = Seq(u[7]);
        let pn = pn_from_da(u[8], u[9])?;
        let fn_ = fn_from_dt(u[10], u[11])?;
        let mut rest = &u[12..];
        // Auxiliary fields, from the end: Tp, then PW (downlink 10H), then EC (uplink ACD).
        let tp = if seq.tpv() {
            let (r, t) = split_tail(rest, 6, "Tp")?;
            rest = r;
            Some(TimeLabel {
                pfc: t[0],
                time_bcd: [t[1], t[2], t[3], t[4]],
                delay_min: t[5],
            })
        } else {
            None
        };
        let pw = if !control.uplink() && afn == AFN_FORWARD {
            let (r, t) = split_tail(rest, 16, "PW")?;
            rest = r;
            Some(Pw(t.try_into().expect("16 bytes")))
        } else {
            None
        };
        let ec = if control.acd() {
            let (r, t) = split_tail(rest, 2, "EC")?;
            rest = r;
            Some([t[0], t[1]])
        } else {
            None
        };
        let unit_empty = |body: Body| {
            if rest.is_empty() {
                Ok(body)
            } else {
                Err(field(
                    "data unit",
                    format!(
                        "AFN {afn:02X} F{fn_} carries no data, but {} bytes follow",
                        rest.len()
                    ),
                ))
            }
        };
        let body = match (afn, fn_) {
            (AFN_LINK, 1) => unit_empty(Body::Login)?,
            (AFN_LINK, 2) => unit_empty(Body::Logout)?,
            (AFN_LINK, 3) => unit_empty(Body::Heartbeat)?,
            (AFN_CONFIRM, 1) => unit_empty(Body::Confirm)?,
            (AFN_CONFIRM, 2) => unit_empty(Body::Deny)?,
            (AFN_FORWARD, 1) if control.uplink() => {
                if rest.len() < 3 {
                    return Err(field("forwarding reply", "needs port and length (3 bytes)"));
                }
                let n = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
                check_len(n, rest.len() - 3)?;
                Body::ForwardReply {
                    port: rest[0],
                    content: rest[3..].to_vec(),
                }
            }
            (AFN_FORWARD, 1) => {
                if rest.len() < 6 {
                    return Err(field(
                        "forwarding request",
                        "needs port, control word, timeouts and length (6 bytes)",
                    ));
                }
                let n = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
                check_len(n, rest.len() - 6)?;
                Body::ForwardRequest {
                    port: rest[0],
                    settings: PortSettings(rest[1]),
                    message_timeout: rest[2],
                    byte_timeout: rest[3],
                    content: rest[6..].to_vec(),
                }
            }
            _ => Body::Other {
                afn,
                fn_,
                data: rest.to_vec(),
            },
        };
        Ok(Q376Frame {
            control,
            address,
            a3,
            seq,
            pn,
            body,
            ec,
            pw,
            tp,
        })
    }
}

fn split_tail<'a>(
    b: &'a [u8],
    n: usize,
    name: &'static str,
) -> Result<(&'a [u8], &'a [u8]), Q376Error> {
    if b.len() < n {
        return Err(field(
            name,
            format!(
                "needs {n} bytes at the end of the user data, only {} left",
                b.len()
            ),
        ));
    }
    Ok(b.split_at(b.len() - n))
}

fn check_len(declared: usize, actual: usize) -> Result<(), Q376Error> {
    if declared != actual {
        return Err(field(
            "forwarding length",
            format!("says {declared} bytes of content, {actual} are there"),
        ));
    }
    Ok(())
}

/// Result of scanning a byte stream for a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A frame: decode result and bytes consumed (including any skipped garbage).
    Frame(Result<Q376Frame, Q376Error>, usize),
    /// Need more bytes; `skip` garbage bytes may be dropped already.
    Incomplete {
        /// Bytes before a possible frame start.
        skip: usize,
    },
}

/// Finds the next frame in `buf`: skips bytes up to a plausible header (68 L L 68 with equal
/// L copies and protocol 2), and returns the frame once all its bytes are there. A header
/// whose frame fails its checksum is reported (and consumed) so the caller can count it.
pub fn find_frame(buf: &[u8]) -> Scan {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != START {
            i += 1;
            continue;
        }
        if buf.len() < i + 6 {
            return Scan::Incomplete { skip: i };
        }
        let l1 = u16::from_le_bytes([buf[i + 1], buf[i + 2]]);
        let l2 = u16::from_le_bytes([buf[i + 3], buf[i + 4]]);
        if l1 != l2 || (l1 & 3) as u8 != PROTOCOL_ID || buf[i + 5] != START || (l1 >> 2) < 12 {
            i += 1;
            continue;
        }
        let total = usize::from(l1 >> 2) + OVERHEAD;
        if buf.len() < i + total {
            return Scan::Incomplete { skip: i };
        }
        let frame = &buf[i..i + total];
        if frame[total - 1] != END {
            i += 1;
            continue;
        }
        return Scan::Frame(Q376Frame::decode(frame), i + total);
    }
    Scan::Incomplete { skip: buf.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/protocol-vectors.json"
    ));

    #[derive(Deserialize)]
    struct Vectors {
        qgdw376_1: Vec<V>,
    }

    #[derive(Deserialize)]
    struct V {
        id: String,
        hex: String,
        parsed: P,
    }

    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct P {
        len: usize,
        userlen: usize,
        proto: u8,
        C: String,
        A1: String,
        A2: String,
        A3: String,
        AFN: String,
        SEQ: String,
        DADT: String,
        body: String,
        cs_ok: bool,
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hexnum(s: &str) -> u8 {
        u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    }

    fn vectors() -> Vec<V> {
        serde_json::from_str::<Vectors>(VECTORS).unwrap().qgdw376_1
    }

    /// Every vector decodes to its recorded fields and re-encodes to the same bytes; the
    /// forwarded content is a DL/T 645 frame the existing codec accepts.
    #[test]
    fn vectors_decode_and_reencode_byte_for_byte() {
        let vs = vectors();
        assert!(vs.len() >= 6);
        for v in vs {
            let bytes = unhex(&v.hex);
            let r = Q376Frame::decode(&bytes);
            if !v.parsed.cs_ok || v.id.contains("bad") {
                assert!(r.is_err(), "{}: must be rejected", v.id);
                continue;
            }
            let f = r.unwrap_or_else(|e| panic!("{}: {e}", v.id));
            let p = &v.parsed;
            assert_eq!(bytes.len(), p.len, "{}", v.id);
            assert_eq!(bytes.len() - OVERHEAD, p.userlen, "{}", v.id);
            assert_eq!(p.proto, PROTOCOL_ID);
            assert_eq!(f.control.0, hexnum(&p.C), "{}", v.id);
            assert_eq!(format!("{:04X}", f.address.region), p.A1, "{}", v.id);
            assert_eq!(format!("{:04X}", f.address.terminal), p.A2, "{}", v.id);
            assert_eq!(f.a3, hexnum(&p.A3), "{}", v.id);
            assert_eq!(f.afn(), hexnum(&p.AFN), "{}", v.id);
            assert_eq!(f.seq.0, hexnum(&p.SEQ), "{}", v.id);
            assert_eq!(to_hex(&bytes[14..18]), p.DADT.to_uppercase(), "{}", v.id);
            // The recorded body is everything between DADT and CS.
            assert_eq!(
                to_hex(&bytes[18..bytes.len() - 2]),
                p.body.to_uppercase(),
                "{}",
                v.id
            );
            match (&f.body, f.afn()) {
                (Body::Login, AFN_LINK) => assert!(v.id.contains("login")),
                (Body::Heartbeat, AFN_LINK) => assert!(v.id.contains("heartbeat")),
                (Body::ForwardReply { port, content }, AFN_FORWARD) => {
                    assert_eq!(*port, 0x1F, "{}", v.id);
                    assert!(f.ec.is_some() && f.tp.is_some(), "{}", v.id);
                    let inner = f
                        .dlt645()
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{}: {e}", v.id));
                    assert_eq!(inner.address().to_string(), "151230011061", "{}", v.id);
                    assert_eq!(&inner.encode(), content, "{}", v.id);
                }
                other => panic!("{}: unexpected {other:?}", v.id),
            }
            assert_eq!(f.encode().unwrap(), bytes, "{}: re-encodes", v.id);
        }
    }

    /// The forwarded replies mean what the vectors say: 6.78 kWh, an ack, relay closed.
    #[test]
    fn forwarded_dlt645_replies_carry_their_values() {
        use crate::dlt645::{DataValue, Di, RelayState, read_reply_value};
        let get = |id: &str| {
            let v = vectors().into_iter().find(|v| v.id == id).unwrap();
            Q376Frame::decode(&unhex(&v.hex))
                .unwrap()
                .dlt645()
                .unwrap()
                .unwrap()
        };
        let energy = read_reply_value(&get("376-fwd-read-energy-up"), Di(0x0001_0000)).unwrap();
        assert_eq!(energy.energy_kwh(), Some("6.78".parse().unwrap()));
        assert_eq!(get("376-fwd-close-up").control().byte(), 0x9C);
        let DataValue::StatusWord3(w) =
            read_reply_value(&get("376-fwd-status-closed-up"), Di(0x0400_0503)).unwrap()
        else {
            panic!("status word 3 expected")
        };
        assert_eq!(w.relay(), RelayState::Closed);
    }

    #[test]
    fn corruptions_are_rejected_naming_the_field() {
        for v in vectors() {
            let good = unhex(&v.hex);
            let n = good.len();
            let cases: Vec<(Vec<u8>, &str)> = vec![
                (
                    {
                        let mut b = good.clone();
                        b[n - 3] ^= 0x10;
                        b
                    },
                    "checksum",
                ),
                (
                    {
                        let mut b = good.clone();
                        b[3] ^= 0x04;
                        b
                    },
                    "L field",
                ),
                (
                    {
                        let mut b = good.clone();
                        b[1] ^= 1;
                        b[3] ^= 1;
                        b
                    },
                    "protocol identifier",
                ),
                (
                    {
                        let mut b = good.clone();
                        b[n - 1] = 0x17;
                        b
                    },
                    "end field",
                ),
                (
                    {
                        let mut b = good.clone();
                        b[5] = 0x69;
                        b
                    },
                    "start field",
                ),
                (
                    good[..n - 1].to_vec(),
                    if n > OVERHEAD + 12 {
                        "L field"
                    } else {
                        "too short"
                    },
                ),
            ];
            for (bytes, what) in cases {
                let err = Q376Frame::decode(&bytes).unwrap_err();
                assert!(err.to_string().contains(what), "{}: {what}: {err}", v.id);
            }
        }
        // A forwarding length that lies (checksum fixed up).
        let v = vectors()
            .into_iter()
            .find(|v| v.id == "376-fwd-close-up")
            .unwrap();
        let mut b = unhex(&v.hex);
        b[19] = 0x0D;
        let n = b.len();
        b[n - 2] = b[6..n - 2].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        let err = Q376Frame::decode(&b).unwrap_err();
        assert!(err.to_string().contains("forwarding length"), "{err}");
    }

    #[test]
    fn request_round_trip_and_stream_scan() {
        let t: TerminalAddress = "0200-1234".parse().unwrap();
        let inner = crate::dlt645::Frame::read_data(
            "151230011061".parse().unwrap(),
            crate::dlt645::Di(0x0001_0000),
        )
        .encode();
        let req = Q376Frame::forward_request(t, 2, 5, 0x1F, 5, inner.clone(), Pw::default());
        let bytes = req.encode().unwrap();
        let back = Q376Frame::decode(&bytes).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.dlt645().unwrap().unwrap().encode(), inner);
        // Garbage, a torn header, then two frames.
        let login = Q376Frame::login(t, 1).encode().unwrap();
        let mut stream = vec![0x00, 0x68, 0x99, 0x16];
        stream.extend(&login);
        stream.extend(&bytes);
        let Scan::Frame(Ok(f1), used) = find_frame(&stream) else {
            panic!()
        };
        assert_eq!(f1.body, Body::Login);
        let Scan::Frame(Ok(f2), used2) = find_frame(&stream[used..]) else {
            panic!()
        };
        assert_eq!(f2, req);
        assert_eq!(used + used2, stream.len());
        assert_eq!(find_frame(&bytes[..10]), Scan::Incomplete { skip: 0 });
    }

    #[test]
    fn confirm_echoes_the_sequence() {
        let t = TerminalAddress {
            region: 0x0200,
            terminal: 0x1234,
        };
        let login = Q376Frame::login(t, 7);
        let c = Q376Frame::confirm(&login);
        let b = c.encode().unwrap();
        let back = Q376Frame::decode(&b).unwrap();
        assert_eq!(back.body, Body::Confirm);
        assert_eq!(back.seq.number(), 7);
        assert!(!back.control.uplink());
    }
}
