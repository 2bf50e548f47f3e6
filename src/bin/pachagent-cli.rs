//! `pachagent-cli`, every `pachagent` command: parses the command line, builds the runtime the command needs,
//! and hands over to [`pachagent::cli`], which prints and chooses the exit code. Users run it through
//! `pachagent`, which shows it under that name.

use std::process::ExitCode;

use clap::Parser;
use pachagent::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit here with clap's code 2, which is also ours.
    let args = Cli::parse();
    // `dev` serves many clients at once; a client command makes a few calls in sequence.
    let mut builder = if args.runs_services() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(args)),
        Err(e) => cli::report(&cli::Error::Runtime(e)),
    }
}
