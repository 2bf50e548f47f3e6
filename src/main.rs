//! `pachagent`, the front: answers `token` and `whoami` itself, so that scripts calling them in a loop pay for a
//! small program, and hands every other command line, unchanged, to `pachagent-cli` (or `serve` to
//! `pachagentd`). See [`pachagent::programs`].

use std::ffi::OsString;
use std::process::ExitCode;

use pachagent::cli::{self, quick};
use pachagent::programs;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let program = match quick::route(&args) {
        quick::Route::Quick(command) => return quick::run(command, args),
        quick::Route::Agent => programs::AGENT,
        quick::Route::Cli => programs::CLI,
    };
    cli::report(&programs::hand_over(program, args).into())
}
