//! Text generated from the command-line definition itself: shell completion scripts and the roff man page.
//!
//! Both come from [`Cli::command`], so they can never disagree with what the parser accepts. Nothing here
//! prints; the caller hands the bytes to [`super::output::generated`].

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The name the scripts complete, which is also the binary's name.
const BIN: &str = "pachagent";

/// The completion script for `shell`.
pub(super) fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    buf
}

/// The man page `pachagent(1)` in roff: synopsis, description, options, the list of subcommands, exit codes.
///
/// # Errors
/// Only when writing into memory fails, which it does not; the `io::Result` is clap_mangen's.
pub(super) fn man_page() -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    Ok(buf)
}
