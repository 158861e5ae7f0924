//! A connection's watchdog state: the request phase its IO wrapper and
//! service wrapper report, and the deadline of whichever clock (header read
//! or idle) is running.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Limits;
use super::metrics::CloseReason;

#[derive(Debug)]
pub(super) struct Phase {
    /// Requests dispatched and not yet answered (0 or 1 on HTTP/1).
    pub(super) in_flight: usize,
    /// Since when the connection has had nothing in progress.
    pub(super) idle_since: Instant,
    /// First byte of a request whose header is not complete yet.
    pub(super) head_started: Option<Instant>,
}

/// Shared between a connection's IO wrapper, its service and its watchdog.
pub(super) struct Watch {
    pub(super) phase: Mutex<Phase>,
    pub(super) changed: Notify,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch {
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    pub(super) fn with_phase<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        // A poisoned lock only means another holder panicked mid-update of plain
        // data; the data is still usable.
        let mut phase = match self.phase.lock() {
            Ok(phase) => phase,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut phase)
    }

    pub(super) fn on_bytes_read(&self) {
        let started = self.with_phase(|p| {
            if p.in_flight == 0 && p.head_started.is_none() {
                p.head_started = Some(Instant::now());
                true
            } else {
                false
            }
        });
        if started {
            self.changed.notify_one();
        }
    }

    pub(super) fn on_request(&self) {
        self.with_phase(|p| {
            p.in_flight += 1;
            p.head_started = None;
        });
        self.changed.notify_one();
    }

    pub(super) fn on_response(&self) {
        self.with_phase(|p| {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.idle_since = Instant::now();
            p.head_started = None;
        });
        self.changed.notify_one();
    }

    /// The running clock's deadline and what passing it means; none while a
    /// request is in progress (the request timeout covers that).
    pub(super) fn deadline(&self, limits: &Limits) -> Option<(Instant, CloseReason)> {
        self.with_phase(|p| {
            if p.in_flight > 0 {
                None
            } else if let Some(started) = p.head_started {
                Some((started + limits.header_read, CloseReason::HeaderRead))
            } else {
                Some((p.idle_since + limits.idle, CloseReason::Idle))
            }
        })
    }
}

/// Marks a request answered when dropped, whether it completed or not.
pub(super) struct InFlight(pub(super) Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_response();
    }
}

/// A TCP stream that tells its [`Watch`] when request bytes arrive.
pub(super) struct WatchedIo {
    pub(super) inner: TcpStream,
    pub(super) watch: Arc<Watch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
