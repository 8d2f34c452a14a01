//! What every RS485 link shares, whatever the protocol on it (Modbus RTU/TCP, DL/T 645):
//!
//! - [`Queues`]: one serialised queue per bus (a TCP serial gateway, a local serial port): a
//!   request holds its bus's queue from sending until its reply or timeout, so there are never
//!   two requests in flight on one RS485 line. Different buses run concurrently.
//! - [`retrying`]: a failed exchange repeated `retries` times after `backoff`, the queue
//!   released while waiting (other meters on the bus go ahead).
//! - [`connect_tcp`]: a TCP connection to a gateway, with a connect timeout and no Nagle delay
//!   (request and reply frames are small).

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// One bus's queue: the connection to the bus (none until the first request, or after a
/// failure), behind an async mutex held for one exchange.
pub(crate) type Slot<C> = Arc<Mutex<Option<C>>>;

/// The queues of a client, one per bus key `K` (a gateway address, a serial line).
pub(crate) struct Queues<K, C> {
    slots: StdMutex<HashMap<K, Slot<C>>>,
}

impl<K: Eq + Hash, C> Queues<K, C> {
    pub(crate) fn new() -> Self {
        Queues {
            slots: StdMutex::new(HashMap::new()),
        }
    }

    /// The queue of bus `key` (created empty on first use).
    pub(crate) fn slot(&self, key: K) -> Slot<C> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }
}

/// Runs `exchange` until it succeeds, fails with an error that `retryable` rejects, or has
/// failed `retries + 1` times; sleeps `backoff` before each repetition. `exchange` must take
/// the bus's queue itself, so that the queue is free during the backoff.
pub(crate) async fn retrying<T, E, F, Fut>(
    retries: u32,
    backoff: Duration,
    retryable: impl Fn(&E) -> bool,
    mut exchange: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match exchange().await {
            Err(e) if retryable(&e) && attempt < retries => {
                attempt += 1;
                tracing::debug!(attempt, err = %e, "meter request failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            r => return r,
        }
    }
}

/// Opens a TCP connection to `gateway` within `timeout`, Nagle off.
pub(crate) async fn connect_tcp(gateway: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(gateway))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TCP connect timed out after {timeout:?}"),
            )
        })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retrying_stops_at_success_at_a_final_error_and_after_the_last_retry() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, String> = retrying(
            2,
            Duration::ZERO,
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 1 {
                    Err("busy".to_string())
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(r, Ok(1));
        calls.store(0, Ordering::SeqCst);
        let r: Result<u32, String> = retrying(
            2,
            Duration::ZERO,
            |e: &String| e != "final",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("final".to_string())
            },
        )
        .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err("final".into()), 1));
        calls.store(0, Ordering::SeqCst);
        let r: Result<u32, String> = retrying(
            2,
            Duration::ZERO,
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("timeout".to_string())
            },
        )
        .await;
        assert_eq!(
            (r, calls.load(Ordering::SeqCst)),
            (Err("timeout".into()), 3)
        );
    }

    #[test]
    fn one_queue_per_bus() {
        let q: Queues<u8, ()> = Queues::new();
        assert!(Arc::ptr_eq(&q.slot(1), &q.slot(1)));
        assert!(!Arc::ptr_eq(&q.slot(1), &q.slot(2)));
    }
}
