//! `pachagentd`'s command line and what it runs: the global flags and `serve`, exactly as `pachagent` reads them
//! (the same [`GlobalArgs`] and [`ServeArgs`]), so that `pachagent serve …` can become `pachagentd serve …`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::Error;
use super::globals::{GlobalArgs, Globals, SERVE_AFTER_HELP, SERVE_LONG_ABOUT, ServeArgs};
use crate::daemon::{self, ServeOptions};

/// `pachagentd`'s command line: the global flags and `serve`, exactly as `pachagent` reads them.
#[derive(Debug, Parser)]
#[command(
    name = "pachagent",
    bin_name = "pachagent",
    version,
    about = "The pachagent agent: keeps Pachyderm sessions and serves them on a Unix socket",
    max_term_width = 110
)]
pub struct AgentCli {
    #[command(flatten)]
    globals: GlobalArgs,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run the agent in the foreground (until Ctrl-C or SIGTERM)
    #[command(long_about = SERVE_LONG_ABOUT, after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
}

/// Runs the agent for a parsed `pachagentd` command line, until it is stopped; prints an error and returns its
/// exit code when it cannot run.
pub async fn serve(cli: AgentCli) -> ExitCode {
    let AgentCommand::Serve(args) = cli.command;
    let g = Globals::resolve(cli.globals);
    super::commands::init_tracing(args.log_format, "info");
    let opts = ServeOptions { socket: g.socket, config: g.config };
    match daemon::serve(opts, args.idle_exit).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::report(&Error::Daemon(e)),
    }
}
