//! `pachagent exec`: runs a command as the context's user, authenticated for as long as it runs.
//!
//! The command finds the session where the real clients look (read from their code, see `pachyderm-auth.md`
//! §11): pachctl reads `session_token` from its config file on every command, so `PACH_CONFIG` names a private
//! config whose single, active context holds the session (with the context's `ca_file` as its `server_cas`);
//! pachyderm_sdk's `Client.from_config()` reads the same file, and python-pachyderm and `pachyderm_sdk.Client()`
//! read `PACH_PYTHON_AUTH_TOKEN` once, when a client is made. While the command runs, the private config is
//! rewritten with the current token after every renewal ([`keeper`]), so a script that calls pachctl for hours
//! never holds a stale token; the token in `PACH_PYTHON_AUTH_TOKEN` is not renewed (no variable can be), but it
//! stays valid until its own expiration, since the agent never revokes a token it handed out before then.
//! `PACHD_ADDRESS` is set only on request: no Python client reads it, and pachctl then warns on every command
//! and ignores the context's `server_cas`.
//!
//! The private config lives in a fresh 0700 directory ([`dir`]: in `$XDG_RUNTIME_DIR` when there is one, else
//! the system temp dir; named by this process's pid so that a later `exec` removes it if this one is killed). The
//! directory is removed when the command ends, whatever the outcome. The user's own pachctl config is neither read nor changed, and the token
//! goes nowhere but the command's environment and that file. This process then exits with the command's status,
//! or 128 + N when signal N ended it.
//!
//! While the command runs, Ctrl-C and Ctrl-\ reach it straight from the terminal, and this process outlives them
//! so that it can clean up. SIGTERM and SIGHUP sent to this process are passed on to the command.

mod dir;
mod keeper;

use self::dir::ExecDir;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::task::{Context, Waker};
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use super::commands::{Globals, connect, init_tracing};
use super::globals::LogFormat;
use super::{EXIT_CANCELLED, EXIT_NO_SESSION, Error, output};
use crate::pachctl;
use crate::proto::agent::GetTokenRequest;
use crate::secret::PachToken;

/// Exit code: the command exists but cannot be run (what shells use).
const EXIT_CANNOT_RUN: u8 = 126;
/// Exit code: there is no such command (what shells use).
const EXIT_NOT_FOUND: u8 = 127;

/// The validity the command's first token is asked for when `--min-valid` is not given; lowered to half the
/// session's token lifetime when tokens live less than twice this (the dev provider's live 2 minutes).
const DEFAULT_MIN_VALID: Duration = Duration::from_secs(300);

/// `pachagent exec` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Renew first unless the token stays valid this long (e.g. 30m, 2h) [default: 5m, or half the session's
    /// token lifetime when that is shorter]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    min_valid: Option<Duration>,
    /// Also set PACHD_ADDRESS (no Python client reads it; pachctl then warns on every command and ignores the
    /// context's server_cas, so a private CA fails)
    #[arg(long)]
    pachd_address_env: bool,
    /// The command to run and its arguments (put `--` before them)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Why the command did not run (or could not be waited for).
#[derive(Debug, thiserror::Error)]
enum ExecError {
    /// The agent could not hand out a token.
    #[error(transparent)]
    Cli(#[from] Error),
    /// No such program.
    #[error("cannot run {}: command not found (is it installed and on PATH?)", quoted(.0))]
    NotFound(OsString),
    /// The program exists but cannot be started.
    #[error("cannot run {}: {source}", quoted(.program))]
    CannotRun {
        /// The program.
        program: OsString,
        /// The cause.
        source: io::Error,
    },
    /// The private directory for pachctl's config could not be made.
    #[error(
        "cannot create a private directory in {} for the command's pachctl config: {source} (set TMPDIR to a \
         writable directory)",
        dir.display()
    )]
    TempDir {
        /// Where it was to be made.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The private pachctl config could not be written.
    #[error(transparent)]
    Config(#[from] pachctl::Error),
    /// Ctrl-C (or SIGTERM, SIGHUP) arrived before the command started.
    #[error("interrupted before {} started", quoted(.0))]
    Interrupted(OsString),
    /// Waiting for the command (or setting up signal handling) failed.
    #[error("cannot wait for {}: {source}", quoted(.program))]
    Wait {
        /// The program.
        program: OsString,
        /// The cause.
        source: io::Error,
    },
}

impl ExecError {
    fn exit_code(&self) -> u8 {
        match self {
            ExecError::Cli(e) => e.exit_code(),
            ExecError::NotFound(_) => EXIT_NOT_FOUND,
            ExecError::Interrupted(_) => EXIT_CANCELLED,
            ExecError::CannotRun { .. } => EXIT_CANNOT_RUN,
            ExecError::TempDir { .. } | ExecError::Config(_) | ExecError::Wait { .. } => EXIT_NO_SESSION,
        }
    }
}

fn quoted(program: &OsStr) -> String {
    output::go_quote(&program.to_string_lossy())
}

/// `pachagent exec`: the command's exit status, or ours when it could not run.
pub(crate) async fn run(g: &Globals, args: ExecArgs) -> ExitCode {
    init_tracing(LogFormat::Text, "warn");
    match exec(g, args).await {
        Ok(status) => ExitCode::from(exit_code(status)),
        Err(ExecError::Cli(e)) => super::report(&e),
        Err(e) => {
            let _ = output::error(&mut io::stderr(), &e);
            ExitCode::from(e.exit_code())
        }
    }
}

async fn exec(g: &Globals, args: ExecArgs) -> Result<ExitStatus, ExecError> {
    let Some((program, program_args)) = args.command.split_first() else {
        return Err(ExecError::NotFound(OsString::new()));
    };
    let mut agent = connect(g).await?;
    let wanted = args.min_valid.unwrap_or(DEFAULT_MIN_VALID);
    // Round up: "valid for at least 1.5s" must not become "at least 1s".
    let min_valid_seconds = wanted.as_secs() + u64::from(wanted.subsec_nanos() > 0);
    let req =
        GetTokenRequest { context: g.context.clone(), min_valid_seconds, fit_to_lifetime: args.min_valid.is_none() };
    let mut resp = agent.get_token(req).await.map_err(Error::from)?.into_inner();
    // An agent that fitted the request says what it applied (0 from an agent too old to fit).
    if resp.min_valid_seconds > 0 && resp.min_valid_seconds < min_valid_seconds {
        let note = format!(
            "tokens for {} live less than twice exec's default --min-valid of {}, so the command's first token is \
             only asked to stay valid {}; its pachctl config gets each renewed token",
            output::go_quote(&resp.context),
            humantime::format_duration(wanted),
            humantime::format_duration(Duration::from_secs(resp.min_valid_seconds))
        );
        let _ = output::note(&mut io::stderr(), &note);
    }
    let token = PachToken::new(std::mem::take(&mut resp.token));
    let server_cas = server_cas(&resp.pachd_ca_file, &resp.context);

    // Installed before the private directory exists, so that no Ctrl-C can end this process before the cleanup.
    let wait_error = |source| ExecError::Wait { program: program.clone(), source };
    let mut signals = Signals::install().map_err(wait_error)?;
    let dir = ExecDir::create()?;
    let config = dir.path.join("config.json");
    pachctl::write_standalone(&config, &resp.pachd_address, &token, server_cas.as_deref())?;
    if signals.arrived() {
        return Err(ExecError::Interrupted(program.clone()));
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(program_args)
        .env("PACH_PYTHON_AUTH_TOKEN", token.expose_secret())
        .env("PACH_CONFIG", &config)
        // Either would make pachctl look for a context that the private config does not have.
        .env_remove("PACH_CONTEXT")
        .env_remove("PACH_ENTERPRISE_CONTEXT");
    if args.pachd_address_env {
        cmd.env("PACHD_ADDRESS", &resp.pachd_address);
    } else {
        // One left in the caller's environment would point pachctl elsewhere and drop the context's CA.
        cmd.env_remove("PACHD_ADDRESS");
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(token);
    let mut child = spawned.map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ExecError::NotFound(program.clone()),
        _ => ExecError::CannotRun { program: program.clone(), source },
    })?;
    let keeper =
        keeper::Keeper::new(g.socket.clone(), resp.context.clone(), resp.pachd_address.clone(), config.clone());
    let gate = keeper.gate();
    let keeper = tokio::spawn(keeper.run(Some(agent)));
    let status = signals.wait(&mut child).await;
    keeper.abort();
    gate.close().await;
    let status = status.map_err(wait_error)?;
    if let Err(e) = dir.remove() {
        let _ = output::warning(&mut io::stderr(), &e);
    }
    Ok(status)
}

/// `server_cas` for pachctl (base64 PEM) when the context trusts a private CA. Best effort: a CA this process
/// cannot read only costs the command pachd's TLS check, which a warning explains.
fn server_cas(ca_file: &str, context: &str) -> Option<String> {
    if ca_file.is_empty() {
        return None;
    }
    match fs::read(ca_file) {
        Ok(pem) => Some(base64::engine::general_purpose::STANDARD.encode(pem)),
        Err(e) => {
            let message = format!(
                "cannot read the CA file {ca_file} of context {}: {e}; the command's clients will not trust pachd's \
                 certificate",
                output::go_quote(context)
            );
            let _ = output::warning(&mut io::stderr(), &message);
            None
        }
    }
}

/// The command's status as an exit code: its own, or 128 + N for death by signal N (what shells report).
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_NO_SESSION),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => EXIT_NO_SESSION,
    }
}

/// This process's handlers for the signals that would otherwise end it before the cleanup.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Whether any of the signals arrived since [`Signals::install`] (a user who pressed Ctrl-C meanwhile does
    /// not want the command to start).
    fn arrived(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        [&mut self.interrupt, &mut self.quit, &mut self.terminate, &mut self.hangup]
            .into_iter()
            .any(|s| s.poll_recv(&mut cx).is_ready())
    }

    async fn wait(&mut self, child: &mut tokio::process::Child) -> io::Result<ExitStatus> {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                // The terminal sends these to the whole foreground process group: the command has them already.
                Some(()) = self.interrupt.recv() => {}
                Some(()) = self.quit.recv() => {}
                Some(()) = self.terminate.recv() => forward(child, libc::SIGTERM),
                Some(()) = self.hangup.recv() => forward(child, libc::SIGHUP),
            }
        }
    }
}

fn forward(child: &tokio::process::Child, sig: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_like_a_shells() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(255 << 8)), 255);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
