//! The master station side of Q/GDW 1376.1: collection terminals dial in over TCP, log in
//! (AFN 02H F1) and send heartbeats (F3); the master confirms each (AFN 00H F1) and forwards
//! DL/T 645 frames to meters behind a terminal (AFN 10H F1).
//!
//! - One connection per terminal address; a new login replaces the old connection.
//! - Forwarding requests to one terminal are serialised (one exchange on its RS485 port at a
//!   time); a reply whose sequence number is not the request's is stale and discarded.
//! - The first frame of a connection must be a login; anything else closes it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::qgdw376::{self as q, Body, Pw, Q376Frame, TerminalAddress};

/// A forwarding exchange that failed. Messages say what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerminalError {
    /// The terminal is not logged in.
    #[error(
        "terminal {0} is not online (no login on this master station): check its power, its \
         GPRS/Ethernet link and that its master station address points here"
    )]
    Offline(TerminalAddress),
    /// No forwarding reply in time.
    #[error("terminal {0} did not answer the forwarding request in time; check its link")]
    Timeout(TerminalAddress),
    /// The connection failed.
    #[error("connection to terminal {terminal} failed: {source}")]
    Io {
        /// The terminal.
        terminal: TerminalAddress,
        /// What failed.
        source: io::Error,
    },
    /// The request could not be framed.
    #[error("cannot frame the forwarding request: {0}")]
    Frame(#[from] q::Q376Error),
}

struct TermConn {
    writer: Mutex<OwnedWriteHalf>,
    replies: Mutex<mpsc::Receiver<Q376Frame>>,
    seq: AtomicU8,
    reader: JoinHandle<()>,
}

impl Drop for TermConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    heartbeats: AtomicU64,
    stale: AtomicU64,
}

struct Inner {
    terminals: StdMutex<HashMap<TerminalAddress, Arc<TermConn>>>,
    counters: Counters,
    msa: u8,
    pw: Pw,
}

/// A master station listening for terminals. Cheap to clone.
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
    local: SocketAddr,
    accept: Arc<JoinHandle<()>>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if Arc::strong_count(&self.accept) == 1 {
            self.accept.abort();
        }
    }
}

impl Master {
    /// Listens on `addr` for terminals. `msa` is this master station's address (A3 D1–D7);
    /// `pw` the message authentication field sent with forwarding requests (see
    /// [`crate::qgdw376`]: zeros unless the terminals check it).
    pub async fn bind(addr: SocketAddr, msa: u8, pw: Pw) -> io::Result<Master> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let inner = Arc::new(Inner {
            terminals: StdMutex::new(HashMap::new()),
            counters: Counters::default(),
            msa,
            pw,
        });
        let weak = Arc::downgrade(&inner);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let weak = weak.clone();
                tokio::spawn(async move {
                    if let Err(err) = session(stream, weak).await {
                        tracing::debug!(%err, "terminal session ended");
                    }
                });
            }
        });
        Ok(Master {
            inner,
            local,
            accept: Arc::new(accept),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Terminals logged in now.
    pub fn online(&self) -> Vec<TerminalAddress> {
        let mut v: Vec<_> = self
            .inner
            .terminals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Logins and heartbeats received, and stale forwarding replies discarded, so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        let c = &self.inner.counters;
        (
            c.logins.load(Ordering::Relaxed),
            c.heartbeats.load(Ordering::Relaxed),
            c.stale.load(Ordering::Relaxed),
        )
    }

    /// Waits until `terminal` is logged in, at most `timeout`.
    pub async fn wait_online(&self, terminal: TerminalAddress, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self.conn(terminal).is_some() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn conn(&self, terminal: TerminalAddress) -> Option<Arc<TermConn>> {
        self.inner
            .terminals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&terminal)
            .cloned()
    }

    /// Forwards `content` (a DL/T 645 frame) on the terminal's `port` and returns what came
    /// back (empty: the meter did not answer the terminal). Serialised per terminal.
    pub async fn forward(
        &self,
        terminal: TerminalAddress,
        port: u8,
        content: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TerminalError> {
        let conn = self
            .conn(terminal)
            .ok_or(TerminalError::Offline(terminal))?;
        let mut replies = conn.replies.lock().await;
        // Whatever is queued now answers an earlier, abandoned request.
        while replies.try_recv().is_ok() {
            self.inner.counters.stale.fetch_add(1, Ordering::Relaxed);
        }
        let seq = conn.seq.fetch_add(1, Ordering::Relaxed) & 0x0F;
        let secs = u8::try_from(timeout.as_secs().clamp(1, 127)).unwrap_or(127);
        let request = Q376Frame::forward_request(
            terminal,
            self.inner.msa,
            seq,
            port,
            secs,
            content,
            self.inner.pw,
        )
        .encode()?;
        conn.writer
            .lock()
            .await
            .write_all(&request)
            .await
            .map_err(|source| TerminalError::Io { terminal, source })?;
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(until, replies.recv()).await {
                Err(_) => return Err(TerminalError::Timeout(terminal)),
                Ok(None) => {
                    return Err(TerminalError::Io {
                        terminal,
                        source: io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "terminal disconnected",
                        ),
                    });
                }
                Ok(Some(frame)) => {
                    if frame.seq.number() == seq
                        && let Body::ForwardReply { port: p, content } = frame.body
                        && p == port
                    {
                        return Ok(content);
                    }
                    self.inner.counters.stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn session(stream: TcpStream, inner: std::sync::Weak<Inner>) -> io::Result<()> {
    let (mut rd, wr) = stream.into_split();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The first frame must be a login.
    let login = loop {
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match q::find_frame(&buf) {
            q::Scan::Incomplete { skip } => {
                buf.drain(..skip);
            }
            q::Scan::Frame(Ok(f), used) if f.body == Body::Login && f.control.uplink() => {
                buf.drain(..used);
                break f;
            }
            q::Scan::Frame(_, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "first frame is not a login",
                ));
            }
        }
    };
    let terminal = login.address;
    let (tx, rx) = mpsc::channel(16);
    let writer = Mutex::new(wr);
    writer
        .lock()
        .await
        .write_all(
            &Q376Frame::confirm(&login)
                .encode()
                .map_err(io::Error::other)?,
        )
        .await?;
    let Some(strong) = inner.upgrade() else {
        return Ok(());
    };
    strong.counters.logins.fetch_add(1, Ordering::Relaxed);
    drop(strong);
    // The reader runs in its own task owned by the connection record, so a replaced or dropped
    // connection stops reading.
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel::<Arc<TermConn>>();
    let inner2 = inner.clone();
    let reader = tokio::spawn(async move {
        let Ok(conn) = conn_rx.await else { return };
        let conn = Arc::downgrade(&conn);
        let _ = read_loop(rd, buf, tx, conn, inner2).await;
    });
    let conn = Arc::new(TermConn {
        writer,
        replies: Mutex::new(rx),
        seq: AtomicU8::new(0),
        reader,
    });
    let Some(strong) = inner.upgrade() else {
        return Ok(());
    };
    strong
        .terminals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(terminal, conn.clone());
    tracing::debug!(%terminal, "terminal logged in");
    let _ = conn_tx.send(conn);
    Ok(())
}

async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    tx: mpsc::Sender<Q376Frame>,
    conn: std::sync::Weak<TermConn>,
    inner: std::sync::Weak<Inner>,
) -> io::Result<()> {
    let mut chunk = [0u8; 1024];
    let result = loop {
        loop {
            match q::find_frame(&buf) {
                q::Scan::Incomplete { skip } => {
                    buf.drain(..skip);
                    break;
                }
                q::Scan::Frame(frame, used) => {
                    buf.drain(..used);
                    let Ok(frame) = frame else { continue };
                    match frame.body {
                        Body::Login | Body::Heartbeat => {
                            if let Some(i) = inner.upgrade() {
                                i.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                            }
                            let Some(c) = conn.upgrade() else {
                                return Ok(());
                            };
                            let confirm = Q376Frame::confirm(&frame)
                                .encode()
                                .map_err(io::Error::other)?;
                            c.writer.lock().await.write_all(&confirm).await?;
                        }
                        Body::ForwardReply { .. } => {
                            let _ = tx.try_send(frame);
                        }
                        _ => {}
                    }
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break Err(e),
        }
    };
    // Forget the connection, unless a newer login replaced it already.
    if let (Some(i), Some(c)) = (inner.upgrade(), conn.upgrade()) {
        let mut map = i.terminals.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, v| !Arc::ptr_eq(v, &c));
    }
    result
}
