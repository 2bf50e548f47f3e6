//! The CLI's errors and the exit codes they map to, in one place.
//!
//! The agent's status messages are already written for people, so a gRPC status is shown as its message alone;
//! the code only decides the exit code.

use std::io;
use std::path::PathBuf;

use tonic::Code;

use crate::client::ClientError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: no valid session (not logged in, expired, login required).
pub const EXIT_NO_SESSION: u8 = 1;
/// Exit code: bad usage or configuration (clap uses 2 for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the agent is not running or cannot be reached.
pub const EXIT_AGENT: u8 = 3;
/// Exit code: pachd or the identity provider failed, or the agent failed internally.
pub const EXIT_UPSTREAM: u8 = 4;
/// Exit code: the user cancelled with Ctrl-C (128 + SIGINT, what a shell reports for a process SIGINT ended).
pub const EXIT_CANCELLED: u8 = 130;

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent could not be reached or started.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Nothing listens on the socket. Unlike [`ClientError::AgentNotRunning`], the message names the context the
    /// command was for, so that the command it suggests is the one to run.
    #[error(
        "the pachagent agent is not running (no agent at {}): start it with pachagent serve, or run pachagent \
         login{}, which starts it",
        socket.display(),
        context.as_deref().map(|c| format!(" --context {c}")).unwrap_or_default()
    )]
    AgentNotRunning {
        /// The socket that was tried.
        socket: PathBuf,
        /// The context the command was for (`--context`, else the active one), when there is one.
        context: Option<String>,
    },
    /// A value the command needs was not given, and there is no terminal to ask for it on.
    #[error("missing {flag}: run {command}, or run it on a terminal to be asked")]
    MissingValue {
        /// The flag that gives the value.
        flag: &'static str,
        /// The command line with the flag, for the user to complete.
        command: String,
    },
    /// The input ended before a question was answered (Ctrl-D).
    #[error("no answer to {question:?}: nothing was changed; run {command} to give it as a flag")]
    NoAnswer {
        /// The question.
        question: &'static str,
        /// The command line with the flag that gives the value instead.
        command: String,
    },
    /// The agent answered with an error status.
    #[error("{}", status_message(.0))]
    Status(#[from] tonic::Status),
    /// The configuration file could not be read, changed or written.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// The agent (`serve`) stopped with an error.
    #[error(transparent)]
    Daemon(crate::daemon::Error),
    /// The token or secret could not be read from stdin.
    #[error("cannot read stdin: {0}")]
    Stdin(io::Error),
    /// stdin held no token.
    #[error("no token on stdin: pipe it in, e.g. `pachagent login {flag} < token.txt`")]
    EmptyToken {
        /// The flag that reads stdin, so the hint names the one the user chose.
        flag: &'static str,
    },
    /// stdin held more than any token could be.
    #[error("stdin holds more than {max} bytes, which is not a token or secret: pipe only the token or secret")]
    TokenTooLarge {
        /// The limit.
        max: usize,
    },
    /// `context add --client-secret-stdin` found nothing on stdin.
    #[error(
        "no client secret on stdin: pipe it in, e.g. `pachagent context add NAME ... --client-secret-stdin < \
         secret.txt`; nothing was changed"
    )]
    EmptyClientSecret,
    /// The client secret could not be put in the keyring.
    #[error("cannot store the client secret of context {context:?}: {source}; {}", if *.context_kept {
        "the context was added without it: remove it with pachagent context remove and add it again"
    } else {
        "the context was not added"
    })]
    ClientSecret {
        /// The context being added.
        context: String,
        /// What the store said.
        source: crate::store::Error,
        /// The context stayed in the file (removing it again failed).
        context_kept: bool,
    },
    /// The user pressed Ctrl-C during an interactive login; the agent cancels it when nobody else waits on it.
    #[error("login cancelled")]
    Cancelled,
    /// The login stream ended without saying how the login went.
    #[error("the agent ended the login without a result: see its log, or run pachagent status")]
    LoginIncomplete,
    /// `pachagent dev` could not set up or run its embedded services.
    #[error("pachagent dev: {0}")]
    Dev(String),
    /// Output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// A program of pachagent's own (`pachagent-cli`, `pachagentd`) is not installed next to this one.
    #[error(transparent)]
    Companion(#[from] crate::programs::CompanionError),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

impl Error {
    /// The process exit code for this error (documented in `pachagent --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            // An agent that exits at start with 2 found the configuration unusable: the user's to fix.
            Error::Client(ClientError::AgentExited { status, .. }) if status.code() == Some(2) => EXIT_USAGE,
            Error::Client(_) | Error::AgentNotRunning { .. } => EXIT_AGENT,
            Error::Status(status) if is_local_transport_failure(status) => EXIT_AGENT,
            Error::Status(status) => exit_code_for(status.code()),
            Error::Config(_)
            | Error::Stdin(_)
            | Error::EmptyToken { .. }
            | Error::TokenTooLarge { .. }
            | Error::EmptyClientSecret
            | Error::MissingValue { .. }
            | Error::NoAnswer { .. }
            | Error::ClientSecret { .. }
            // A broken installation is the user's to fix, and must not read as "not logged in".
            | Error::Companion(_) => EXIT_USAGE,
            Error::Cancelled => EXIT_CANCELLED,
            Error::Daemon(e) => e.exit_code(),
            Error::LoginIncomplete => EXIT_UPSTREAM,
            Error::Dev(_) => EXIT_NO_SESSION,
            Error::Output(_) | Error::Runtime(_) => EXIT_NO_SESSION,
        }
    }

    /// Whether the error is a closed stdout (`pachagent watch | head -1`): the reader left, nothing to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The exit code for a status the agent returned.
pub fn exit_code_for(code: Code) -> u8 {
    match code {
        Code::Ok => EXIT_OK,
        Code::Unauthenticated => EXIT_NO_SESSION,
        Code::NotFound
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unimplemented => EXIT_USAGE,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::DataLoss => EXIT_UPSTREAM,
    }
}

/// A status the client made up because the connection broke (the agent died or restarted mid-call), as opposed
/// to one the agent sent: tonic attaches the underlying transport error as the source only to the former.
fn is_local_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
}

fn status_message(status: &tonic::Status) -> String {
    if is_local_transport_failure(status) {
        return format!("lost the connection to the agent ({}): run pachagent status", status.message());
    }
    match status.message() {
        "" => format!("the agent failed with {:?} and no message", status.code()),
        message => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_has_its_documented_exit_code() {
        let expected = [
            (Code::Ok, 0),
            (Code::Unauthenticated, 1),
            (Code::NotFound, 2),
            (Code::InvalidArgument, 2),
            (Code::FailedPrecondition, 2),
            (Code::AlreadyExists, 2),
            (Code::OutOfRange, 2),
            (Code::PermissionDenied, 2),
            (Code::Unimplemented, 2),
            (Code::Unavailable, 4),
            (Code::DeadlineExceeded, 4),
            (Code::Unknown, 4),
            (Code::Internal, 4),
            (Code::Cancelled, 4),
            (Code::Aborted, 4),
            (Code::ResourceExhausted, 4),
            (Code::DataLoss, 4),
        ];
        for (code, exit) in expected {
            assert_eq!(exit_code_for(code), exit, "{code:?}");
            if code != Code::Ok {
                assert_eq!(Error::Status(tonic::Status::new(code, "x")).exit_code(), exit, "{code:?}");
            }
        }
    }

    #[test]
    fn the_agents_message_is_shown_as_is() {
        let err = Error::Status(tonic::Status::unauthenticated(
            "not logged in to \"prod\": run pachagent login --context prod",
        ));
        assert_eq!(err.to_string(), "not logged in to \"prod\": run pachagent login --context prod");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_broken_connection_means_the_agent_is_unreachable() {
        let io = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
        let status = tonic::Status::from_error(Box::new(io));
        let err = Error::Status(status);
        assert_eq!(err.exit_code(), EXIT_AGENT);
        assert!(err.to_string().starts_with("lost the connection to the agent"), "{err}");
    }

    #[test]
    fn local_errors_have_their_exit_codes() {
        let socket = std::path::PathBuf::from("/run/x/agent.sock");
        assert_eq!(Error::Client(ClientError::AgentNotRunning { socket }).exit_code(), 3);
        let exited = |code: i32| {
            let status = std::os::unix::process::ExitStatusExt::from_raw(code << 8);
            Error::Client(ClientError::AgentExited { status, last_line: None, log: "agent.log".into() })
        };
        assert_eq!(exited(2).exit_code(), 2, "the agent found the configuration unusable");
        assert_eq!(exited(1).exit_code(), 3);
        assert_eq!(Error::Config(crate::config::Error::NoActiveContext).exit_code(), 2);
        assert_eq!(Error::EmptyToken { flag: "--token-stdin" }.exit_code(), 2);
        assert_eq!(Error::LoginIncomplete.exit_code(), 4);
        assert_eq!(Error::Cancelled.exit_code(), 130);
        assert_eq!(Error::Cancelled.to_string(), "login cancelled");
        assert_eq!(Error::EmptyClientSecret.exit_code(), 2);
        assert!(Error::Output(io::Error::from(io::ErrorKind::BrokenPipe)).is_broken_pipe());
        let missing =
            Error::MissingValue { flag: "--pachd", command: "pachagent context add x --pachd ADDRESS".into() };
        assert_eq!(missing.exit_code(), 2);
    }

    #[test]
    fn an_agent_that_is_not_running_is_reported_with_the_login_for_the_context() {
        let socket = std::path::PathBuf::from("/run/x/agent.sock");
        let err = Error::AgentNotRunning { socket: socket.clone(), context: Some("prod".into()) };
        assert_eq!(err.exit_code(), EXIT_AGENT);
        assert!(err.to_string().ends_with("run pachagent login --context prod, which starts it"), "{err}");
        let without = Error::AgentNotRunning { socket, context: None };
        assert!(without.to_string().ends_with("run pachagent login, which starts it"), "{without}");
    }
}
