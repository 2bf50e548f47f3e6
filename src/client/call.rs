//! One gRPC call to the agent on a blocking thread, without an async runtime: how `pachagent token` and
//! `pachagent whoami` ask the agent.
//!
//! Those two run once per call of a script, so their cost is the whole process: a tokio runtime, hyper's client
//! and tonic's channel stack are code to map and start that a single unary call does not need. Here `h2` speaks
//! HTTP/2 over the socket and a small loop ([`block_on`]) drives it: when the call waits, the loop waits in
//! `poll(2)` on the one socket. The agent sees the same gRPC request as from any other client; a status it
//! answers, or a connection it loses, comes back as the [`tonic::Status`] the async client would give, so the CLI
//! reports both paths alike. Long-lived and streaming clients (`exec`, `watch`, `login`) use [`super::connect`].

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use prost::Message;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroize;

use super::ClientError;
use crate::config::current_uid;

/// Far more than any answer of the agent's; a bigger one is a broken or hostile server, not a reply.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why a call failed: the agent could not be reached, or it (or the lost connection) gave a status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No agent, another user's agent, or a socket that would not connect.
    #[error(transparent)]
    Reach(#[from] ClientError),
    /// The agent's answer was an error, or the connection broke during the call (the status then has the
    /// transport error as its source, as tonic's own client gives it).
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

/// Calls `method` of the agent's service (`GetToken`, `WhoAmI`) with `request` over a new connection to `socket`.
///
/// # Errors
/// [`CallError::Reach`] as [`super::connect`] reports it, [`CallError::Status`] for the agent's error answers and
/// for a connection that broke mid-call.
pub fn unary<Q: Message, A: Message + Default>(socket: &Path, method: &str, request: &Q) -> Result<A, CallError> {
    let stream = Rc::new(connect(socket)?);
    let wants = Rc::new(Wants::default());
    let path = format!("http://localhost/{}/{method}", crate::proto::agent::agent_server::SERVICE_NAME);
    let socket = Socket { stream: Rc::clone(&stream), wants: Rc::clone(&wants) };
    // Three layers: the socket's wait, the HTTP/2 exchange, the gRPC status.
    let mut reply = block_on(exchange(socket, path, grpc_frame(request)), &stream, &wants).map_err(lost)???;
    let answer = A::decode(reply.get(5..).unwrap_or_default()).map_err(|e| {
        tonic::Status::internal(format!("the agent's answer does not decode ({e}): is it another program's socket?"))
    });
    // The answer may be a token.
    reply.zeroize();
    Ok(answer?)
}

/// Opens the socket, and believes it only when the process serving it runs as this user (`SO_PEERCRED`),
/// before a byte is sent.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    let failed = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::AgentNotRunning { socket: socket.to_owned() }
        }
        _ => ClientError::Connect { socket: socket.to_owned(), source },
    };
    let address = SocketAddrUnix::new(socket).map_err(|e| failed(e.into()))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| failed(e.into()))?;
    // A Unix socket connects at once or not at all; EAGAIN means its backlog is full: an agent that is wedged.
    rustix::net::connect(&fd, &address).map_err(|e| failed(e.into()))?;
    let owner = rustix::net::sockopt::socket_peercred(&fd).map_err(|e| failed(e.into()))?.uid.as_raw();
    if owner != current_uid() {
        return Err(ClientError::ForeignAgent { socket: socket.to_owned(), owner, uid: current_uid() });
    }
    Ok(UnixStream::from(fd))
}

/// gRPC's length-prefixed message: an uncompressed flag, the length (big-endian), the message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + len);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut frame);
    Bytes::from(frame)
}

/// The HTTP/2 exchange of one unary call: the reply's bytes (gRPC frame included), or the status that ended it.
async fn exchange(socket: Socket, path: String, body: Bytes) -> Result<Result<Vec<u8>, tonic::Status>, h2::Error> {
    let (send, connection) = h2::client::handshake(socket).await?;
    let mut connection = pin!(connection);
    let mut call = pin!(call(send, path, body));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        match connection.as_mut().poll(cx) {
            // The agent closed the connection: the call fails with it, on this poll or the next.
            Poll::Ready(closed) => {
                match call.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(result),
                    Poll::Pending => Poll::Ready(closed.map(|()| {
                        Err(tonic::Status::from_error(Box::new(io::Error::from(io::ErrorKind::UnexpectedEof))))
                    })),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Sends the request and reads the reply on an open connection.
async fn call(
    send: h2::client::SendRequest<Bytes>,
    path: String,
    body: Bytes,
) -> Result<Result<Vec<u8>, tonic::Status>, h2::Error> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(());
    let request = match request {
        Ok(request) => request,
        Err(e) => return Ok(Err(tonic::Status::internal(format!("cannot build the request: {e}")))),
    };
    let mut send = send.ready().await?;
    let (response, mut stream) = send.send_request(request, false)?;
    stream.send_data(body, true)?;
    let (head, mut body) = response.await?.into_parts();
    // A status in the headers is a reply without a body ("trailers-only").
    if let Some(status) = tonic::Status::from_header_map(&head.headers) {
        return Ok(Err(status));
    }
    if head.status != http::StatusCode::OK {
        return Ok(Err(tonic::Status::unknown(format!("the agent answered HTTP {}", head.status))));
    }
    let mut reply = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if reply.len() + chunk.len() > MAX_REPLY_BYTES {
            reply.zeroize();
            return Ok(Err(tonic::Status::resource_exhausted("the agent's answer is too large")));
        }
        reply.extend_from_slice(&chunk);
    }
    let status = body.trailers().await?.and_then(|trailers| tonic::Status::from_header_map(&trailers));
    Ok(match status {
        Some(status) if status.code() == tonic::Code::Ok => Ok(reply),
        Some(status) => {
            reply.zeroize();
            Err(status)
        }
        None => {
            reply.zeroize();
            Err(tonic::Status::internal("the agent's answer ended without a gRPC status"))
        }
    })
}

/// A broken exchange, as the status tonic's client makes of one: the transport error is its source, so the CLI
/// reports a lost agent rather than an answer.
fn lost(e: io::Error) -> tonic::Status {
    tonic::Status::from_error(Box::new(e))
}

impl From<h2::Error> for CallError {
    fn from(e: h2::Error) -> Self {
        CallError::Status(tonic::Status::from_error(Box::new(e)))
    }
}

/// What the exchange waits for on the socket, set when a read or write would block.
#[derive(Default)]
struct Wants {
    read: std::cell::Cell<bool>,
    write: std::cell::Cell<bool>,
}

/// The non-blocking socket as `h2` reads and writes it: an operation that would block returns `Pending` and
/// notes what it waits for, and [`block_on`] waits for that in `poll(2)`.
struct Socket {
    stream: Rc<UnixStream>,
    wants: Rc<Wants>,
}

impl Socket {
    fn attempt<T>(
        &self,
        wants: &std::cell::Cell<bool>,
        mut op: impl FnMut(&UnixStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(&self.stream) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wants.set(true);
                    return Poll::Pending;
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let wants = Rc::clone(&self.wants);
        let read = self.attempt(&wants.read, |mut stream| stream.read(buf.initialize_unfilled()));
        read.map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let wants = Rc::clone(&self.wants);
        self.attempt(&wants.write, |mut stream| stream.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

/// Set when a future wakes its task: `h2`'s connection wakes the call when a frame for it arrives.
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `future` to its end on this thread. It is polled again at once when it woke itself (one part of the
/// exchange waking another), and otherwise after `poll(2)` says the socket is ready for what it waited on.
///
/// # Errors
/// When `poll(2)` fails, or the future waits on neither the socket nor itself: a stall, reported rather than
/// hanging the command.
fn block_on<F: Future>(future: F, stream: &UnixStream, wants: &Wants) -> io::Result<F::Output> {
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&woken));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        woken.0.store(false, Ordering::Relaxed);
        wants.read.set(false);
        wants.write.set(false);
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Ok(output);
        }
        if woken.0.load(Ordering::Relaxed) {
            continue;
        }
        let mut flags = PollFlags::empty();
        if wants.read.get() {
            flags |= PollFlags::IN;
        }
        if wants.write.get() {
            flags |= PollFlags::OUT;
        }
        if flags.is_empty() {
            return Err(io::Error::other("the call to the agent stalled"));
        }
        let mut fds = [PollFd::new(stream, flags)];
        match rustix::event::poll(&mut fds, None) {
            // A signal with a handler interrupts poll(2); the wait goes on.
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::proto::agent::{WhoAmIRequest, WhoAmIResponse};

    fn who_am_i(socket: &Path) -> Result<WhoAmIResponse, CallError> {
        unary(socket, "WhoAmI", &WhoAmIRequest::default())
    }

    /// A lost agent, as the CLI reports it: exit code 3 and "lost the connection to the agent".
    fn assert_lost(result: Result<WhoAmIResponse, CallError>) {
        let Err(CallError::Status(status)) = result else { panic!("expected a lost connection, got {result:?}") };
        let err = crate::cli::Error::Status(status);
        assert_eq!(err.exit_code(), crate::cli::EXIT_AGENT, "{err}");
        assert!(err.to_string().contains("lost the connection to the agent"), "{err}");
    }

    #[test]
    fn a_missing_or_stale_socket_means_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = who_am_i(&socket).unwrap_err();
        assert!(matches!(err, CallError::Reach(ClientError::AgentNotRunning { .. })), "{err:?}");
        drop(UnixListener::bind(&socket).unwrap());
        let err = who_am_i(&socket).unwrap_err();
        assert!(matches!(err, CallError::Reach(ClientError::AgentNotRunning { .. })), "{err:?}");
    }

    #[test]
    fn an_agent_that_closes_the_connection_mid_call_is_a_lost_agent_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // Reads the client's preface and request, then goes away without a word.
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).unwrap();
        });
        assert_lost(who_am_i(&socket));
        server.join().unwrap();
    }

    #[test]
    fn a_socket_that_answers_something_other_than_http2_is_a_lost_agent_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").unwrap();
            let _ = conn.read(&mut buf);
        });
        assert_lost(who_am_i(&socket));
        server.join().unwrap();
    }
}
