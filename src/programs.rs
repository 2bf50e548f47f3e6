//! The programs pachagent installs, and how one finds and hands over to another.
//!
//! pachagent is five executables over this one library, installed side by side (`cargo install`, a package):
//!
//! - [`FRONT`], `pachagent`: what users and scripts run. It answers the commands scripts call in loops
//!   (`token`, `whoami`) itself, so that those start like a small program, and hands every other command
//!   line, unchanged, to [`CLI`] (or `serve` to [`AGENT`]) by replacing itself with it (`execve`, same pid);
//!   also those two when `RUST_LOG` asks for logs, or when no agent answers (the CLI's message names the context).
//! - [`CLI`], `pachagent-cli`: every command, with its help, prompts, formatting, doctor, completions and the
//!   dev stack. Run through the front; it shows itself as `pachagent`.
//! - [`AGENT`], `pachagentd`: the resident agent (`pachagentd serve`, what `pachagent serve` becomes), without
//!   the CLI, so that the pages it keeps in memory are its own.
//! - [`KEYRING`], `pachagent-keyring`: the agent's Secret Service calls, in a process the agent starts when it
//!   needs the keyring and that exits when idle (see [`crate::store::helper`]). Not a command for people.
//! - [`NET`], `pachagent-net`: one call of the agent to the identity provider or pachd, in a process of its own
//!   (see [`crate::net`]). Not a command for people either.
//!
//! Each finds the others next to its own executable (links resolved), never through `PATH`: a companion from
//! another installation or another user could answer differently.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The front: the quick commands, and the name every program shows in usage and messages.
pub const FRONT: &str = "pachagent";
/// The full command line.
pub const CLI: &str = "pachagent-cli";
/// The agent.
pub const AGENT: &str = "pachagentd";
/// The agent's keyring helper (see [`crate::store::helper`]).
pub const KEYRING: &str = "pachagent-keyring";
/// The agent's helper for its calls to the identity provider and pachd (see [`crate::net`]).
pub const NET: &str = "pachagent-net";

/// Why a companion program could not be run.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot run {program:?}, which pachagent installs next to {name}: {source}; install pachagent so that \
     pachagent, pachagent-cli, pachagentd, pachagent-keyring and pachagent-net sit in one directory (`cargo \
     install --path .`), or, in a checkout, build them all (`cargo build --release --bins`)",
    program = .program.display(),
    name = FRONT
)]
pub struct CompanionError {
    /// The executable that was tried.
    pub program: PathBuf,
    /// What the system said.
    #[source]
    pub source: io::Error,
}

/// The path of the companion program `name`: the file of that name in the directory of the running executable,
/// links resolved (a link `~/bin/pachagent` to an installation finds that installation's companions).
///
/// # Errors
/// When the running executable's path cannot be read, or the companion is not there.
pub fn companion(name: &str) -> Result<PathBuf, CompanionError> {
    let failed = |program: PathBuf, source| CompanionError { program, source };
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|source| failed(PathBuf::from(name), source))?;
    // A canonical path is absolute, so this never becomes a bare name looked up in PATH.
    let dir = exe
        .parent()
        .filter(|dir| dir.is_absolute())
        .ok_or_else(|| failed(PathBuf::from(name), io::Error::other(format!("{} has no directory", exe.display()))))?;
    let program = dir.join(name);
    if !program.is_file() {
        return Err(failed(program, io::Error::new(io::ErrorKind::NotFound, "no such program")));
    }
    Ok(program)
}

/// Replaces this process with the companion `name`, run with `args` and shown as `pachagent` (its usage lines
/// and messages then name the command the user typed). Keeps the pid, the environment and the open descriptors
/// (a socket systemd handed over stays fd 3): to whoever started `pachagent`, nothing changes hands.
///
/// Returns only when the companion could not be run.
pub fn hand_over(name: &str, args: impl IntoIterator<Item = OsString>) -> CompanionError {
    let program = match companion(name) {
        Ok(program) => program,
        Err(e) => return e,
    };
    let source = Command::new(&program).arg0(FRONT).args(args).exec();
    CompanionError { program, source }
}
