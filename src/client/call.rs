//! One gRPC call to the agent on a blocking thread, without an async runtime: how `token` and `whoami` ask the
//! agent (the front answers them itself, and `pachagent-cli` uses the same functions).
//!
//! Scripts run those two once per call, so what they cost is the whole process: a tokio runtime, hyper's client
//! and tonic's channel stack are code to map and start that a single unary call does not need. Here `h2` speaks
//! HTTP/2 over the socket and a small loop (`block_on`) drives it: when the call waits, the loop waits in
//! `poll(2)` on the one socket. The agent sees the same gRPC request as from any other client; a status it
//! answers, or a connection it loses, comes back as a [`tonic::Status`] as the async client gives it (a lost
//! connection with the transport error as its source), so the CLI reports both alike. Streams and long-lived
//! clients (`login`, `watch`, `exec`, `status`, ...) use [`super::connect`].

use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
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
use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Code, Status};
use zeroize::Zeroizing;

use super::{CONNECT_TIMEOUT, ClientError};
use crate::proto::agent::{GetTokenRequest, GetTokenResponse, WhoAmIRequest, WhoAmIResponse};

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
    Status(#[from] Status),
}

/// `GetToken` on a connection of its own.
///
/// # Errors
/// [`CallError::Reach`] as [`super::connect`] reports it, [`CallError::Status`] for the agent's error answers, for
/// an answer that is not one gRPC message, and for a connection that broke mid-call.
pub fn get_token(socket: &Path, request: &GetTokenRequest) -> Result<GetTokenResponse, CallError> {
    unary(socket, "GetToken", request)
}

/// `WhoAmI` on a connection of its own.
///
/// # Errors
/// As [`get_token`].
pub fn who_am_i(socket: &Path, request: &WhoAmIRequest) -> Result<WhoAmIResponse, CallError> {
    unary(socket, "WhoAmI", request)
}

/// Calls `method` of the agent's service with `request` over a new connection to `socket`.
///
/// # Errors
/// [`CallError::Reach`] as [`super::connect`] reports it, [`CallError::Status`] for the agent's error answers, for
/// an answer that is not one gRPC message, and for a connection that broke mid-call.
fn unary<Q: Message, A: Message + Default>(socket: &Path, method: &str, request: &Q) -> Result<A, CallError> {
    let stream = Rc::new(connect(socket)?);
    let wants = Rc::new(Wants::default());
    let path = format!("http://localhost/{}/{method}", crate::proto::agent::agent_server::SERVICE_NAME);
    let io = Socket { stream: Rc::clone(&stream), wants: Rc::clone(&wants) };
    // The reply may hold a token: `Zeroizing` wipes it when dropped (h2's own buffers are not ours to wipe).
    let reply = match block_on(exchange(io, path, grpc_frame(request)), stream.as_fd(), &wants) {
        Ok(reply) => reply?,
        Err(e) => return Err(lost(e).into()),
    };
    let answer = A::decode(grpc_message(&reply)?).map_err(|e| {
        Status::internal(format!("the agent's answer does not decode ({e}): is it another program's socket?"))
    })?;
    Ok(answer)
}

/// Opens the socket, and believes it only when the process serving it runs as this user, before a byte is sent.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    let failed = |source: io::Error| match source.kind() {
        // On Linux, connect(2) on a Unix socket waits while the agent's backlog is full, for as long as the send
        // timeout: a burst of clients queues, and an agent that accepts nothing for that long is wedged. (macOS
        // refuses such a connection at once, which reads as no agent.)
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::wedged(socket),
        _ => ClientError::connecting(socket, source),
    };
    let address = SocketAddrUnix::new(socket).map_err(|e| failed(e.into()))?;
    let fd = close_on_exec_socket().map_err(|e| failed(e.into()))?;
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Send, Some(CONNECT_TIMEOUT))
        .map_err(|e| failed(e.into()))?;
    loop {
        match rustix::net::connect(&fd, &address) {
            // With a timeout set, a signal handler's interruption is not restarted by the kernel.
            Err(rustix::io::Errno::INTR) => {}
            connected => break connected.map_err(|e| failed(e.into()))?,
        }
    }
    super::believe(socket, peer_uid(fd.as_fd()).map_err(failed)?)?;
    rustix::io::ioctl_fionbio(&fd, true).map_err(|e| failed(e.into()))?;
    Ok(UnixStream::from(fd))
}

/// A blocking Unix stream socket, closed on exec from its creation where the system allows it.
#[cfg(not(target_vendor = "apple"))]
fn close_on_exec_socket() -> rustix::io::Result<std::os::fd::OwnedFd> {
    rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, rustix::net::SocketFlags::CLOEXEC, None)
}

/// A blocking Unix stream socket, closed on exec (macOS has no `SOCK_CLOEXEC`: set right after creation).
#[cfg(target_vendor = "apple")]
fn close_on_exec_socket() -> rustix::io::Result<std::os::fd::OwnedFd> {
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(fd)?.uid.as_raw())
}

/// The uid of the process at the other end of a connected Unix socket (`getpeereid`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[allow(unsafe_code)]
fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
    // SAFETY: getpeereid writes two integers through pointers to these locals, for a descriptor borrowed for the
    // call's duration.
    if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
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

/// The message of a reply body, which must be exactly one uncompressed gRPC message (what the agent sends).
fn grpc_message(reply: &[u8]) -> Result<&[u8], Status> {
    match reply {
        [] => Err(Status::internal("the agent's answer has no message")),
        [0, a, b, c, d, message @ ..] if usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])) == Ok(message.len()) => {
            Ok(message)
        }
        _ => Err(Status::internal(
            "the agent's answer is not one uncompressed gRPC message: is it another program's socket?",
        )),
    }
}

/// The HTTP/2 exchange of one unary call: the reply's body (gRPC framing included), or the status that ended it.
async fn exchange(io: Socket, path: String, body: Bytes) -> Result<Zeroizing<Vec<u8>>, Status> {
    let (send, connection) = h2::client::handshake(io).await.map_err(broken)?;
    let mut connection = pin!(connection);
    let mut call = pin!(request(send, path, body));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        match connection.as_mut().poll(cx) {
            // The agent closed the connection: the call fails with it, on this poll or the next.
            Poll::Ready(closed) => match call.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(result),
                Poll::Pending => Poll::Ready(Err(match closed {
                    Ok(()) => lost(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Err(e) => broken(e),
                })),
            },
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Sends the request and reads the reply on an open connection.
async fn request(
    send: h2::client::SendRequest<Bytes>,
    path: String,
    body: Bytes,
) -> Result<Zeroizing<Vec<u8>>, Status> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| Status::internal(format!("cannot build the request: {e}")))?;
    let mut send = send.ready().await.map_err(broken)?;
    let (response, mut stream) = send.send_request(request, false).map_err(broken)?;
    stream.send_data(body, true).map_err(broken)?;
    let (head, mut body) = response.await.map_err(broken)?.into_parts();
    // A status in the headers is a reply without a body ("trailers-only").
    if let Some(status) = Status::from_header_map(&head.headers) {
        return if status.code() == Code::Ok { Ok(Zeroizing::new(Vec::new())) } else { Err(status) };
    }
    if head.status != http::StatusCode::OK {
        return Err(Status::new(code_for_http(head.status), format!("the agent answered HTTP {}", head.status)));
    }
    let mut reply = Zeroizing::new(Vec::new());
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(broken)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if reply.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(Status::out_of_range("the agent's answer is too large"));
        }
        if reply.is_empty() {
            // Room for the whole message at once, so that no copy of it is left behind by a reallocation.
            reply.reserve(declared_len(&chunk).unwrap_or(chunk.len()).min(MAX_REPLY_BYTES));
        }
        reply.extend_from_slice(&chunk);
    }
    let status = body.trailers().await.map_err(broken)?.and_then(|trailers| Status::from_header_map(&trailers));
    match status {
        Some(status) if status.code() == Code::Ok => Ok(reply),
        Some(status) => Err(status),
        None => Err(Status::internal("the agent's answer ended without a gRPC status")),
    }
}

/// The size a gRPC body declares in its first five bytes.
fn declared_len(start: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = start.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()?.checked_add(5)
}

/// The gRPC code for an HTTP status other than 200 that came without one (the mapping gRPC's HTTP/2 protocol
/// specifies), as tonic's client infers it.
fn code_for_http(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A broken exchange, as the status tonic's client makes of one: the transport error is its source, so the CLI
/// reports a lost agent rather than an answer.
fn lost(e: io::Error) -> Status {
    Status::from_error(Box::new(e))
}

/// An HTTP/2 failure (a reset stream, a GOAWAY, a broken connection), as tonic's client reports it.
fn broken(e: h2::Error) -> Status {
    Status::from_error(Box::new(e))
}

/// What the exchange waits for on the socket, set when a read or write would block.
#[derive(Default)]
struct Wants {
    read: Cell<bool>,
    write: Cell<bool>,
}

/// The non-blocking socket as `h2` reads and writes it: an operation that would block returns `Pending` and
/// notes what it waits for, and [`block_on`] waits for that in `poll(2)`.
struct Socket {
    stream: Rc<UnixStream>,
    wants: Rc<Wants>,
}

impl Socket {
    fn attempt<T>(&self, wants: &Cell<bool>, mut op: impl FnMut(&UnixStream) -> io::Result<T>) -> Poll<io::Result<T>> {
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
fn block_on<F: Future>(future: F, socket: BorrowedFd<'_>, wants: &Wants) -> io::Result<F::Output> {
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
        let mut fds = [PollFd::from_borrowed_fd(socket, flags)];
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
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::cli::{EXIT_AGENT, EXIT_OK, EXIT_UPSTREAM, EXIT_USAGE, Error};

    /// Every case must end within this: a hang is a failure, not a stuck test run.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn who_am_i_within_deadline(socket: &Path) -> Result<WhoAmIResponse, CallError> {
        let (tx, rx) = mpsc::channel();
        let socket = socket.to_owned();
        std::thread::spawn(move || tx.send(who_am_i(&socket, &WhoAmIRequest::default())));
        rx.recv_timeout(DEADLINE).expect("the call hung")
    }

    /// The exit code and message the CLI gives for a failed call.
    fn reported(result: Result<WhoAmIResponse, CallError>) -> (u8, String) {
        let err = match result.expect_err("the call should fail") {
            CallError::Reach(e) => Error::Client(e),
            CallError::Status(status) => Error::Status(status),
        };
        (err.exit_code(), err.to_string())
    }

    /// How the stand-in agent answers the one call it serves.
    enum Answer {
        /// 200, one body, then trailers with this code.
        Body(Vec<u8>, Code),
        /// A status in the headers and no body ("trailers-only").
        HeadersOnly(Code, &'static str),
    }

    /// A socket in a fresh directory, and what listens on it.
    fn listening() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        (dir, socket, listener)
    }

    /// Something on the socket that is not an agent: `serve` gets the one connection it accepts, raw.
    fn raw_stand_in(serve: impl FnOnce(UnixStream) + Send + 'static) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, socket, listener) = listening();
        std::thread::spawn(move || serve(listener.accept().unwrap().0));
        (dir, socket)
    }

    /// A stand-in agent: serves one call on a fresh socket with a real HTTP/2 server (h2) and answers it as told.
    fn stand_in(answer: Answer) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, socket, listener) = listening();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                let mut connection = h2::server::handshake(stream).await.unwrap();
                let (request, mut respond) = connection.accept().await.unwrap().unwrap();
                tokio::spawn(async move {
                    let mut body = request.into_body();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    let head = http::Response::builder().header("content-type", "application/grpc");
                    match answer {
                        Answer::HeadersOnly(code, message) => {
                            let head =
                                head.header("grpc-status", (code as i32).to_string()).header("grpc-message", message);
                            let _ = respond.send_response(head.body(()).unwrap(), true);
                        }
                        Answer::Body(bytes, code) => {
                            let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) else { return };
                            let _ = send.send_data(Bytes::from(bytes), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", (code as i32).to_string().parse().unwrap());
                            let _ = send.send_trailers(trailers);
                        }
                    }
                });
                // Drives the connection until the client goes.
                while let Some(Ok(_)) = connection.accept().await {}
            });
        });
        (dir, socket)
    }

    fn framed(message: &[u8], compressed: bool) -> Vec<u8> {
        let mut frame = vec![u8::from(compressed)];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    #[test]
    fn the_agents_answer_is_decoded() {
        let answer = WhoAmIResponse { username: "user:alice@example.com".into(), ..Default::default() };
        let (_dir, socket) = stand_in(Answer::Body(framed(&answer.encode_to_vec(), false), Code::Ok));
        assert_eq!(who_am_i_within_deadline(&socket).unwrap().username, "user:alice@example.com");
    }

    #[test]
    fn an_error_status_without_a_body_is_the_agents_answer_with_its_exit_code() {
        let (_dir, socket) = stand_in(Answer::HeadersOnly(Code::NotFound, "unknown%20context"));
        assert_eq!(reported(who_am_i_within_deadline(&socket)), (EXIT_USAGE, "unknown context".to_owned()));
    }

    #[test]
    fn an_ok_without_a_message_is_an_error_not_an_empty_answer() {
        for answer in [Answer::HeadersOnly(Code::Ok, ""), Answer::Body(Vec::new(), Code::Ok)] {
            let (_dir, socket) = stand_in(answer);
            let (code, message) = reported(who_am_i_within_deadline(&socket));
            assert_eq!(code, EXIT_UPSTREAM, "{message}");
            assert_ne!(code, EXIT_OK);
            assert!(message.contains("has no message"), "{message}");
        }
    }

    #[test]
    fn a_compressed_or_mis_sized_answer_is_refused() {
        let message = WhoAmIResponse { username: "u".into(), ..Default::default() }.encode_to_vec();
        let mut short = framed(&message, false);
        short.pop();
        for body in [framed(&message, true), short] {
            let (_dir, socket) = stand_in(Answer::Body(body, Code::Ok));
            let (code, message) = reported(who_am_i_within_deadline(&socket));
            assert_eq!(code, EXIT_UPSTREAM, "{message}");
            assert!(message.contains("not one uncompressed gRPC message"), "{message}");
        }
    }

    #[test]
    fn an_answer_over_a_mebibyte_is_refused() {
        let (_dir, socket) = stand_in(Answer::Body(framed(&vec![b'x'; 2 << 20], false), Code::Ok));
        let (code, message) = reported(who_am_i_within_deadline(&socket));
        assert_eq!(code, EXIT_USAGE, "OUT_OF_RANGE, as tonic's size limit: {message}");
        assert!(message.contains("too large"), "{message}");
    }

    #[test]
    fn a_missing_or_stale_socket_means_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = who_am_i_within_deadline(&socket).unwrap_err();
        assert!(matches!(err, CallError::Reach(ClientError::AgentNotRunning { .. })), "{err:?}");
        drop(UnixListener::bind(&socket).unwrap());
        let err = who_am_i_within_deadline(&socket).unwrap_err();
        assert!(matches!(err, CallError::Reach(ClientError::AgentNotRunning { .. })), "{err:?}");
    }

    /// A lost agent, as the CLI reports it: exit code 3 and "lost the connection to the agent".
    fn assert_lost(result: Result<WhoAmIResponse, CallError>) {
        let (code, message) = reported(result);
        assert_eq!(code, EXIT_AGENT, "{message}");
        assert!(message.contains("lost the connection to the agent"), "{message}");
    }

    #[test]
    fn an_agent_that_closes_the_connection_mid_call_is_a_lost_agent() {
        let (_dir, socket) = raw_stand_in(|mut conn| {
            // Reads until the request's headers are in (the preface and SETTINGS come first), then goes away.
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while seen.len() < 60 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        });
        assert_lost(who_am_i_within_deadline(&socket));
    }

    #[test]
    fn a_socket_that_answers_something_other_than_http2_is_a_lost_agent() {
        let (_dir, socket) = raw_stand_in(|mut conn| {
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            let _ = conn.read(&mut buf);
        });
        assert_lost(who_am_i_within_deadline(&socket));
    }
}
