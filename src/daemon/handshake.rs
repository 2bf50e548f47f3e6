//! The first bytes of every connection, read before the gRPC server sees it.
//!
//! The HTTP/2 server waits forever for a client's connection preface, so a client that connects and sends
//! nothing (a hung or half-written program, a stray `nc -U`) would hold a descriptor and a task until the agent
//! stops; enough of them and the agent can accept no one. Here each accepted connection gets
//! [`PREFACE_TIMEOUT`] to send the HTTP/2 preface. Anything else is closed at once: garbage, another protocol,
//! and HTTP/1 (`curl --unix-socket`), which is first told in words that this socket speaks gRPC. Connections
//! that pass are handed on with the preface put back in front, so the server reads exactly what was sent.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::api::peer::Peer;

/// The HTTP/2 client connection preface (RFC 9113 §3.4): every gRPC client opens with these 24 bytes.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send the preface. A gRPC client sends it with its first write, right
/// after connecting; ten seconds leaves room for a client that was descheduled on a loaded machine.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections may be waiting for their preface at once. Past it the agent stops accepting for a
/// moment and new clients wait in the kernel's listen backlog, so a flood of idle connections costs at most
/// this many descriptors and small tasks, never an unbounded number.
const MAX_PENDING: usize = 512;

/// Connections handed to the server but not yet picked up; the server takes them as fast as they come.
const HANDOFF: usize = 16;

/// What an HTTP/1 client gets instead of silence.
const NOT_HTTP2: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\nContent-Length: 78\r\n\r\nthis is pachagent's socket; it speaks gRPC over HTTP/2: use the pachagent CLI\n";

/// The connections of `accepted` that open with the HTTP/2 preface, each checked in a task of its own so that
/// a slow one never delays the next. Checking stops when the returned stream is dropped (the server stopped).
pub(super) fn http2_only<S>(accepted: S) -> impl Stream<Item = io::Result<Prefaced>>
where
    S: Stream<Item = io::Result<UnixStream>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(HANDOFF);
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    tokio::spawn(async move {
        tokio::pin!(accepted);
        loop {
            let permit = tokio::select! {
                () = tx.closed() => break,
                permit = Arc::clone(&pending).acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let next = tokio::select! {
                () = tx.closed() => break,
                next = accepted.next() => next,
            };
            let stream = match next {
                None => break,
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let checked = check(stream).await;
                drop(permit);
                if let Some(stream) = checked {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Reads the preface; `None` when the connection closed, timed out or sent something else (logged).
async fn check(mut stream: UnixStream) -> Option<Prefaced> {
    let mut seen = [0u8; PREFACE.len()];
    let mut filled = 0;
    let read = tokio::time::timeout(PREFACE_TIMEOUT, async {
        while filled < PREFACE.len() {
            let n = stream.read(&mut seen[filled..]).await?;
            if n == 0 {
                return Ok(false);
            }
            filled += n;
            if seen[..filled] != PREFACE[..filled] {
                return Ok(false);
            }
        }
        Ok::<_, io::Error>(true)
    })
    .await;
    match read {
        Ok(Ok(true)) => return Some(Prefaced { stream, replayed: 0 }),
        Err(_) => warn!(timeout = ?PREFACE_TIMEOUT, "closed a connection that sent no gRPC request in time"),
        // A client that connects and leaves without a byte is how `pachagent` and service managers probe
        // whether the agent is up: not worth a word.
        Ok(Ok(false)) if filled == 0 => debug!("a connection closed before sending anything"),
        Ok(Ok(false)) if seen[..filled] == PREFACE[..filled] => {
            debug!("a connection closed in the middle of the HTTP/2 preface");
        }
        Ok(Ok(false)) => {
            let http1 = looks_like_http1(&seen[..filled]);
            warn!(http1, "closed a connection that does not speak gRPC (HTTP/2)");
            if http1 {
                // Best effort: the client may already be gone.
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(NOT_HTTP2)).await;
                let _ = stream.shutdown().await;
            }
        }
        Ok(Err(e)) => debug!(error = %e, "a connection failed before its first request"),
    }
    None
}

/// An HTTP/1 request line starts with an upper-case method and a space (`GET /`, `POST /`); `PRI` opens a
/// mangled HTTP/2 preface instead.
fn looks_like_http1(head: &[u8]) -> bool {
    let method = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&method) && head.get(method) == Some(&b' ') && !head.starts_with(b"PRI ")
}

/// A connection that opened with the HTTP/2 preface; reading starts with the preface again.
#[derive(Debug)]
pub(super) struct Prefaced {
    stream: UnixStream,
    /// How much of the preface the server has read back.
    replayed: usize,
}

impl Connected for Prefaced {
    // tonic asks once per connection and hands a clone to each of its requests.
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        Peer::of(&self.stream)
    }
}

impl AsyncRead for Prefaced {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < PREFACE.len() {
            let rest = &PREFACE[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefaced {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_request_lines_are_told_apart_from_other_bytes() {
        assert!(looks_like_http1(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http1(b"OPTIONS * HTTP/1.1"));
        assert!(!looks_like_http1(b"PRI * HTTP/2.0"), "the start of the HTTP/2 preface");
        assert!(!looks_like_http1(b"\x16\x03\x01\x02\x00"), "a TLS hello");
        assert!(!looks_like_http1(b"G"));
    }

    #[test]
    fn the_http1_answer_declares_its_exact_length() {
        let text = std::str::from_utf8(NOT_HTTP2).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head:?} / {body:?}");
    }
}
