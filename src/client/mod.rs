//! The typed gRPC client of the agent, over its Unix socket.
//!
//! This module owns finding the agent: connecting to the socket, telling "no agent is running" apart from other
//! connection failures, and starting an agent in the background when `login` needs one. It believes only an
//! agent that runs as this user: every connection's server uid (`SO_PEERCRED`) is checked before a byte is sent,
//! so a socket another user managed to put where the agent's belongs gets no token request and no login. The
//! agent's directory and its log are opened as [`PrivateDir`] opens them (never through a planted link). It
//! returns typed values and errors; it never prints (the CLI's `output` module does) and never holds tokens
//! beyond the call that returns them.

use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tonic::codegen::http;

use crate::config::current_uid;
use crate::private_dir::{Open, PrivateDir, Strictness};
use crate::proto::agent::agent_client::AgentClient;

pub mod call;

/// The client type every caller gets: the generated client over one connection to the socket.
pub type Client = AgentClient<Connection>;

/// How long `connect_or_start` waits for a freshly started agent to answer. Opening the keyring on a cold
/// D-Bus session can take a few seconds; anything slower than this is a failure worth reading the log for.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting agent is polled. Short, because an agent usually answers within tens of milliseconds.
const START_POLL: Duration = Duration::from_millis(50);

/// A connection attempt (connect, and for the async client its HTTP/2 handshake) that takes longer than this
/// means the agent is wedged, not starting.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the agent's log file, next to its socket, when the CLI started the agent.
pub const LOG_FILE_NAME: &str = "agent.log";

/// Why the agent could not be reached or started.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (it does not exist, or it is stale).
    #[error(
        "the pachagent agent is not running (no agent at {}): start it with `pachagent serve`, or run \
         `pachagent login`, which starts it",
        socket.display()
    )]
    AgentNotRunning {
        /// The socket that was tried.
        socket: PathBuf,
    },
    /// The process serving the socket runs as another user: nothing was sent to it.
    #[error(
        "the process serving {} runs as uid {owner}, not as you (uid {uid}): another user may be impersonating \
         the agent, so nothing was sent to it; stop it (or remove the socket), then start your own agent with \
         `pachagent serve`, or point PACHAGENT_SOCKET at a directory of yours",
        socket.display()
    )]
    ForeignAgent {
        /// The socket that was tried.
        socket: PathBuf,
        /// The uid the server runs as.
        owner: u32,
        /// This user.
        uid: u32,
    },
    /// The agent's directory or its log is not this user's to use (another user's, a planted link, open to
    /// others).
    #[error("the agent's directory cannot be trusted: {0}")]
    UntrustedDir(#[source] crate::private_dir::Error),
    /// The socket exists but could not be connected to for another reason (permissions, a wedged agent).
    #[error("cannot connect to the agent at {}: {source}", socket.display())]
    Connect {
        /// The socket that was tried.
        socket: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The directory for the socket and the agent's log could not be created.
    #[error("cannot create the agent's directory {}: {source}", dir.display())]
    RuntimeDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The agent process could not be launched.
    #[error("cannot start the agent ({}): {source}", program.display())]
    Spawn {
        /// The executable that was launched.
        program: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The agent that was started exited before it answered.
    #[error("the agent exited while starting ({status}){}: see {}", last_line_suffix(.last_line), log.display())]
    AgentExited {
        /// Its exit status.
        status: ExitStatus,
        /// The last line it logged, if any.
        last_line: Option<String>,
        /// Its log file.
        log: PathBuf,
    },
    /// The agent that was started did not answer in time.
    #[error(
        "the agent did not answer on {} within {}s of starting: see {}",
        socket.display(),
        START_TIMEOUT.as_secs(),
        log.display()
    )]
    StartTimeout {
        /// The socket it should listen on.
        socket: PathBuf,
        /// Its log file.
        log: PathBuf,
    },
}

impl ClientError {
    /// A failed connection to `socket`: the agent is not running when nothing is there or nothing listens.
    pub(crate) fn connecting(socket: &Path, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::AgentNotRunning { socket: socket.to_owned() }
            }
            _ => ClientError::Connect { socket: socket.to_owned(), source },
        }
    }

    /// An agent at `socket` that did not take a connection within [`CONNECT_TIMEOUT`].
    pub(crate) fn wedged(socket: &Path) -> Self {
        ClientError::Connect {
            socket: socket.to_owned(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s: the agent is wedged", CONNECT_TIMEOUT.as_secs()),
            ),
        }
    }
}

/// Believes the process serving `socket` only when its uid, `owner`, is this user's; checked before a byte is sent.
pub(crate) fn believe(socket: &Path, owner: u32) -> Result<(), ClientError> {
    if owner != current_uid() {
        return Err(ClientError::ForeignAgent { socket: socket.to_owned(), owner, uid: current_uid() });
    }
    Ok(())
}

fn last_line_suffix(line: &Option<String>) -> String {
    line.as_deref().map(|l| format!(": {l}")).unwrap_or_default()
}

/// Connects to the agent listening on `socket`.
///
/// # Errors
/// [`ClientError::AgentNotRunning`] when the socket does not exist or nobody listens on it,
/// [`ClientError::ForeignAgent`] when another user serves it, [`ClientError::Connect`] for any other failure.
pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
    Ok(AgentClient::new(channel(socket).await?))
}

/// A connection to the agent's socket, for clients of other services the agent serves next to its own (the
/// standard health service).
///
/// # Errors
/// As [`connect`].
pub async fn channel(socket: &Path) -> Result<Connection, ClientError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(socket)).await {
        Ok(connection) => connection,
        Err(_) => Err(ClientError::wedged(socket)),
    }
}

/// One HTTP/2 connection to the agent, which the generated gRPC clients call through.
///
/// A command makes one or two calls and exits, so this is a bare connection (hyper's HTTP/2 client), not a
/// channel that pools, buffers and reconnects: a client that outlives the agent (`exec`'s keeper) connects
/// again itself. It is opened only after the server's uid was checked, so not a byte reaches another user's
/// socket. Clones share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    send: SendRequest<tonic::body::Body>,
}

impl Connection {
    async fn open(socket: &Path) -> Result<Self, ClientError> {
        let failed = |source| ClientError::connecting(socket, source);
        let stream = UnixStream::connect(socket).await.map_err(failed)?;
        // Before HTTP/2 sends its first byte on this connection.
        believe(socket, stream.peer_cred().map_err(failed)?.uid())?;
        let (send, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| failed(io::Error::other(e)))?;
        // Drives the connection until every clone of `send` is gone or the agent closes it; a call in flight then
        // fails with the transport error.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { send })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: a connection the agent closed fails in `call`, where the generated client keeps hyper's
        // error as the status's source, so that it reads as a lost agent (exit 3) and not as the agent's answer.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The generated clients send a bare path; HTTP/2 wants a scheme and an authority, which on a Unix socket
        // name nothing.
        if request.uri().scheme().is_none() {
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(http::uri::Authority::from_static("localhost"));
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        Box::pin(self.send.send_request(request))
    }
}

/// Connects to the agent, starting one in the background when none answers.
///
/// The agent is `pachagentd serve --socket SOCKET --config CONFIG` (installed next to this executable), in its own
/// process group (so the terminal's Ctrl-C does not reach it), with stdin and stdout closed, stderr appended to
/// [`log_path`]`(socket)`, the caller's environment, and `/` as working directory.
///
/// # Errors
/// [`ClientError::Connect`] when an agent exists but cannot be reached, or the errors of starting one:
/// [`ClientError::RuntimeDir`], [`ClientError::Spawn`], [`ClientError::AgentExited`],
/// [`ClientError::StartTimeout`].
pub async fn connect_or_start(socket: &Path, config: &Path) -> Result<Client, ClientError> {
    match connect(socket).await {
        Err(ClientError::AgentNotRunning { .. }) => {}
        other => return other,
    }
    let mut child = start_agent(socket, config)?;
    let log = log_path(socket);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match connect(socket).await {
            Ok(client) => return Ok(client),
            Err(ClientError::AgentNotRunning { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another CLI may have started an agent at the same moment; ours then exits because the socket is
            // taken, and theirs is the one to use.
            return match connect(socket).await {
                Ok(client) => Ok(client),
                Err(_) => Err(ClientError::AgentExited { status, last_line: last_log_line(&log), log }),
            };
        }
        if Instant::now() >= deadline {
            return Err(ClientError::StartTimeout { socket: socket.to_owned(), log });
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// Where an agent started by [`connect_or_start`] writes its log: `agent.log` next to the socket.
pub fn log_path(socket: &Path) -> PathBuf {
    socket_dir(socket).join(LOG_FILE_NAME)
}

fn socket_dir(socket: &Path) -> PathBuf {
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `PROGRAM serve --socket SOCKET --config CONFIG` with stdin closed: how an agent is started in the background
/// (by the CLI, and by the benchmark). The caller decides where its output goes.
pub fn serve_command(program: &Path, socket: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("serve").arg("--socket").arg(socket).arg("--config").arg(config).stdin(Stdio::null());
    cmd
}

fn start_agent(socket: &Path, config: &Path) -> Result<Child, ClientError> {
    // The agent runs in `/`, so relative paths given to this CLI are resolved here first.
    let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_owned());
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
    let dir = socket_dir(&socket);
    // Checked before anything is written there: the agent's log must not go through another user's link.
    let dir = PrivateDir::open(&dir, Strictness::for_dir(&dir), true).map_err(ClientError::UntrustedDir)?;
    let log_file = dir.open_file(LOG_FILE_NAME, Open::Append).map_err(ClientError::UntrustedDir)?;
    let program = crate::programs::companion(crate::programs::AGENT)
        .map_err(|e| ClientError::Spawn { program: e.program, source: e.source })?;
    serve_command(&program, &socket, &config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|source| ClientError::Spawn { program, source })
}

/// The last non-empty line of the log, so that the error names the cause without the user opening the file.
fn last_log_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_means_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = connect(&socket).await.unwrap_err();
        assert!(matches!(err, ClientError::AgentNotRunning { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("pachagent serve") && msg.contains("pachagent login"), "{msg}");
    }

    #[tokio::test]
    async fn a_stale_socket_means_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        let err = connect(&socket).await.unwrap_err();
        assert!(matches!(err, ClientError::AgentNotRunning { .. }), "{err:?}");
    }

    /// An agent that went away between two calls (killed, or `--idle-exit`) is a lost agent to the CLI, whose
    /// message says so, not an error the agent answered.
    #[tokio::test]
    async fn a_connection_the_agent_closed_fails_as_a_lost_agent() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let mut agent = connect(&socket).await.unwrap();
        drop(listener.accept().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..2 {
            let status = agent.who_am_i(crate::proto::agent::WhoAmIRequest::default()).await.unwrap_err();
            let err = crate::cli::Error::Status(status);
            assert_eq!(err.exit_code(), crate::cli::EXIT_AGENT, "{err}");
            assert!(err.to_string().contains("lost the connection to the agent"), "{err}");
        }
    }

    #[test]
    fn the_log_sits_next_to_the_socket() {
        assert_eq!(
            log_path(Path::new("/run/user/1/pachagent/agent.sock")),
            Path::new("/run/user/1/pachagent/agent.log")
        );
        assert_eq!(log_path(Path::new("agent.sock")), Path::new("./agent.log"));
    }

    #[tokio::test]
    async fn an_agent_directory_that_is_a_link_is_refused_before_any_log_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("pachagent")).unwrap();
        let socket = dir.path().join("pachagent").join("agent.sock");
        let err = connect_or_start(&socket, &dir.path().join("config.toml")).await.unwrap_err();
        assert!(matches!(err, ClientError::UntrustedDir(_)), "{err:?}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "no log was made through the link");
    }
}
