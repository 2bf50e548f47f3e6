//! The front's own path: `pachagent token` and `pachagent whoami`, the commands scripts call in loops, answered
//! by the small `pachagent` program itself (see [`crate::programs`]).
//!
//! [`route`] reads a command line the way the full definition ([`super::Cli`]) does, but recognises only the
//! plain forms of these two commands: global flags, `--min-valid`, `--verify`, each at most once, with values
//! that do not look like flags. Anything else (help, a typo, a repeated flag, any other command) goes to
//! `pachagent-cli`, whose parser gives the usage error or the help; so this path never changes what a command
//! line means, it only answers some of them sooner. The handlers are the CLI's own ([`super::commands`]). Two
//! cases go to `pachagent-cli` after all, because explaining them takes code the front does not carry: a
//! `RUST_LOG` that asks for logs ([`asks_for_logs`]), and no agent answering (its message names the context to
//! log in to, read from the configuration).

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;
use std::time::Duration;

use super::commands;
use super::globals::{CONFIG_ENV, CONTEXT_ENV, GlobalArgs, Globals, SOCKET_ENV, parse_min_valid};

/// Which program answers a command line.
#[derive(Debug)]
pub enum Route {
    /// The front answers it.
    Quick(Quick),
    /// `serve`: the agent program.
    Agent,
    /// Everything else: the full command line.
    Cli,
}

/// A `token` or `whoami` command line the front answers itself.
#[derive(Debug)]
pub struct Quick {
    globals: GlobalArgs,
    command: QuickCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuickCommand {
    Token { min_valid: Option<Duration> },
    WhoAmI { verify: bool },
}

/// Which program answers `args` (the command line without the program name).
pub fn route(args: &[OsString]) -> Route {
    match read(args) {
        Ok(quick) => Route::Quick(quick),
        Err(route) => route,
    }
}

/// Reads a quick command line, or says which program should read it instead.
fn read(args: &[OsString]) -> Result<Quick, Route> {
    let mut globals = GlobalArgs::default();
    let mut command: Option<QuickCommand> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str().ok_or(Route::Cli)?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(OsStr::new(value))),
            _ => (arg, None),
        };
        let mut value = || -> Result<OsString, Route> {
            let v = inline.or_else(|| args.next().map(OsString::as_os_str)).ok_or(Route::Cli)?;
            // clap takes `--context -x` for two flags, and an empty value is left to it too.
            if v.is_empty() || v.as_encoded_bytes().starts_with(b"-") {
                return Err(Route::Cli);
            }
            Ok(v.to_owned())
        };
        match (name, &mut command) {
            ("--socket", _) => set_once(&mut globals.socket, value()?)?,
            ("--config", _) => set_once(&mut globals.config, value()?)?,
            ("--context", _) => set_once(&mut globals.context, value()?.into_string().map_err(|_| Route::Cli)?)?,
            ("--json", _) if inline.is_none() && !globals.json => globals.json = true,
            ("--min-valid", Some(QuickCommand::Token { min_valid: min_valid @ None })) => {
                let text = value()?.into_string().map_err(|_| Route::Cli)?;
                *min_valid = Some(parse_min_valid(&text).map_err(|_| Route::Cli)?);
            }
            ("--verify", Some(QuickCommand::WhoAmI { verify: verify @ false })) if inline.is_none() => *verify = true,
            ("token", None) => command = Some(QuickCommand::Token { min_valid: None }),
            ("whoami", None) => command = Some(QuickCommand::WhoAmI { verify: false }),
            ("serve", None) => return Err(Route::Agent),
            _ => return Err(Route::Cli),
        }
    }
    let command = command.ok_or(Route::Cli)?;
    // What clap reads from the environment when a flag is absent.
    if globals.socket.is_none() {
        globals.socket = std::env::var_os(SOCKET_ENV);
    }
    if globals.config.is_none() {
        globals.config = std::env::var_os(CONFIG_ENV);
    }
    if globals.context.is_none() {
        globals.context = match std::env::var_os(CONTEXT_ENV) {
            Some(context) => Some(context.into_string().map_err(|_| Route::Cli)?),
            None => None,
        };
    }
    Ok(Quick { globals, command })
}

/// Whether `RUST_LOG` asks for logs (set and not blank, as [`crate::logging`] reads it): the front has none of its
/// own, so such a command line goes to `pachagent-cli`, which logs.
pub fn asks_for_logs() -> bool {
    std::env::var_os("RUST_LOG").is_some_and(|v| !v.to_string_lossy().trim().is_empty())
}

/// A flag given twice is clap's error to report.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), Route> {
    if slot.is_some() {
        return Err(Route::Cli);
    }
    *slot = Some(value);
    Ok(())
}

/// Answers a quick command: prints the answer, or the error, and returns the exit code, as `pachagent-cli` would.
/// When no agent runs, the command line `args` goes to `pachagent-cli` after all, whose message names the context
/// to log in to (which means reading the configuration, code the front does not carry).
pub fn run(quick: Quick, args: Vec<OsString>) -> ExitCode {
    let g = Globals::resolve(quick.globals);
    let answered = match quick.command {
        QuickCommand::Token { min_valid } => commands::token(&g, min_valid),
        QuickCommand::WhoAmI { verify } => commands::whoami(&g, verify),
    };
    match answered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ super::Error::AgentNotRunning { .. }) => {
            // Returns only when pachagent-cli cannot be run: the message then lacks only the context's name.
            let _ = crate::programs::hand_over(crate::programs::CLI, args);
            super::report(&e)
        }
        Err(e) => super::report(&e),
    }
}

#[cfg(test)]
mod tests;
