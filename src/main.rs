//! The `pachagent` binary: parses the command line, builds the runtime the command needs, and hands over to
//! [`pachagent::cli`], which prints and chooses the exit code.

use std::process::ExitCode;

use clap::Parser;
use pachagent::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit here with clap's code 2, which is also ours.
    let args = Cli::parse();
    // The agent serves many clients at once; a client command makes a few calls in sequence.
    let mut builder = if args.is_serve() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(args)),
        Err(e) => cli::report(&cli::Error::Runtime(e)),
    }
}
