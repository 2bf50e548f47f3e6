//! The typed gRPC client of the agent, over its Unix socket.
//!
//! This module owns finding the agent: connecting to the socket, telling "no agent is running" apart from other
//! connection failures, and starting an agent in the background when `login` needs one. It returns typed values
//! and errors; it never prints (the CLI's `output` module does) and never holds tokens beyond the call that
//! returns them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::proto::agent::agent_client::AgentClient;

/// The client type every caller gets: the generated client over a channel to the socket.
pub type Client = AgentClient<Channel>;

/// How long `connect_or_start` waits for a freshly started agent to answer. Opening the keyring on a cold
/// D-Bus session can take a few seconds; anything slower than this is a failure worth reading the log for.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting agent is polled. Short, because an agent usually answers within tens of milliseconds.
const START_POLL: Duration = Duration::from_millis(50);

/// A connection attempt that takes longer than this means the agent is wedged, not starting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

fn last_line_suffix(line: &Option<String>) -> String {
    line.as_deref().map(|l| format!(": {l}")).unwrap_or_default()
}

/// Connects to the agent listening on `socket`.
///
/// # Errors
/// [`ClientError::AgentNotRunning`] when the socket does not exist or nobody listens on it,
/// [`ClientError::Connect`] for any other failure.
pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
    Ok(AgentClient::new(channel(socket).await?))
}

/// A gRPC channel to the agent's socket, for clients of other services the agent serves next to its own (the
/// standard health service).
///
/// # Errors
/// As [`connect`].
pub async fn channel(socket: &Path) -> Result<Channel, ClientError> {
    let path = socket.to_owned();
    // The URI is never dialled: the connector below ignores it. tonic needs a syntactically valid one.
    let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(CONNECT_TIMEOUT);
    endpoint
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| classify_connect_error(socket, &e))
}

/// Connects to the agent, starting one in the background when none answers.
///
/// The agent is this executable run as `serve --socket SOCKET --config CONFIG`, in its own process group (so
/// the terminal's Ctrl-C does not reach it), with stdin and stdout closed, stderr appended to
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

/// Tells "nobody is there" (missing socket, stale socket) from real connection problems.
fn classify_connect_error(socket: &Path, err: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::AgentNotRunning { socket: socket.to_owned() }
                }
                kind => {
                    ClientError::Connect { socket: socket.to_owned(), source: io::Error::new(kind, io.to_string()) }
                }
            };
        }
        source = e.source();
    }
    ClientError::Connect { socket: socket.to_owned(), source: io::Error::other(err.to_string()) }
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
    ensure_private_dir(&dir)?;
    let log = log_path(&socket);
    let log_file = open_log(&log).map_err(|source| ClientError::RuntimeDir { dir: dir.clone(), source })?;
    let program =
        std::env::current_exe().map_err(|source| ClientError::Spawn { program: PathBuf::from("pachagent"), source })?;
    serve_command(&program, &socket, &config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|source| ClientError::Spawn { program, source })
}

/// Creates the socket's directory owner-only when it is missing. An existing directory is left as it is: it
/// may be one the user chose, and the agent checks the permissions it needs when it binds.
fn ensure_private_dir(dir: &Path) -> Result<(), ClientError> {
    let err = |source| ClientError::RuntimeDir { dir: dir.to_owned(), source };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Another process (an agent, another CLI) made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    // The umask can only remove bits from the mode given at creation; this makes the mode exact.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
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

    #[test]
    fn the_log_sits_next_to_the_socket() {
        assert_eq!(
            log_path(Path::new("/run/user/1/pachagent/agent.sock")),
            Path::new("/run/user/1/pachagent/agent.log")
        );
        assert_eq!(log_path(Path::new("agent.sock")), Path::new("./agent.log"));
    }

    #[test]
    fn a_missing_socket_dir_is_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("a").join("pachagent");
        ensure_private_dir(&run).unwrap();
        let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&run).unwrap();
    }
}
