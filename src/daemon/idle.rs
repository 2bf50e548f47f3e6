//! `pachagent serve --idle-exit`: notices when no client has been connected for a while and the engine has
//! nothing due, so that a socket-activated agent can exit and leave the socket to systemd.
//!
//! A client counts as busy for as long as its connection is open, not only while a call runs: a `Watch` or
//! an interactive `Login` stream holds the agent up. This module only counts connections and asks
//! [`SessionEngine::next_due`]; it never touches sessions.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::server::Connected;
use tracing::info;

use crate::engine::SessionEngine;

/// The shortest and longest pause between two idleness checks; the check itself is a few map lookups.
const CHECK_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Open client connections and when the last one opened or closed. Cloned into every connection.
#[derive(Debug, Clone)]
pub(super) struct Activity(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    open: AtomicUsize,
    last: Mutex<Instant>,
    /// Signalled when the last open connection closes.
    quiet: Notify,
}

impl Activity {
    /// Starts counting now: the agent's start counts as activity (under socket activation a client is
    /// usually about to connect).
    pub(super) fn new() -> Self {
        Self(Arc::new(Counts { open: AtomicUsize::new(0), last: Mutex::new(Instant::now()), quiet: Notify::new() }))
    }

    fn touch(&self) {
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Wraps an accepted connection so that it counts as activity until it closes.
    pub(super) fn track<S>(&self, stream: S) -> Tracked<S> {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Tracked { inner: stream, _open: OpenConnection(self.clone()) }
    }

    /// Waits for the last connected client to leave (returns at once if one left since the previous call), then
    /// says whether none is connected still: a client may have come meanwhile.
    pub(super) async fn quiet(&self) -> bool {
        self.0.quiet.notified().await;
        self.is_quiet()
    }

    /// Whether no client is connected now.
    pub(super) fn is_quiet(&self) -> bool {
        self.0.open.load(Ordering::SeqCst) == 0
    }

    /// How long no client has been connected; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.0.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.0.last.lock().unwrap_or_else(PoisonError::into_inner).elapsed())
    }
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
struct OpenConnection(Activity);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.quiet.notify_one();
        }
    }
}

/// A client connection that counts as activity while it is open; otherwise exactly the stream it wraps.
#[derive(Debug)]
pub(super) struct Tracked<S> {
    inner: S,
    _open: OpenConnection,
}

impl<S: Connected> Connected for Tracked<S> {
    // The API's peer check reads the same connect info as from the stream itself.
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Completes once no client has been connected for `window` and the engine has nothing due within the next
/// `window` either. Sessions stay in the keyring, so the next start restores them.
pub(super) async fn idle(activity: Activity, engine: Arc<SessionEngine>, window: Duration) {
    let pause = (window / 4).clamp(CHECK_BOUNDS.0, CHECK_BOUNDS.1);
    loop {
        tokio::time::sleep(pause).await;
        let Some(idle) = activity.idle_for() else { continue };
        if idle < window {
            continue;
        }
        let now = Utc::now();
        let due_soon = engine.next_due(now).is_some_and(|t| (t - now).to_std().unwrap_or_default() < window);
        if !due_soon {
            info!(idle = ?idle, "no client and nothing due: exiting (--idle-exit)");
            return;
        }
    }
}
