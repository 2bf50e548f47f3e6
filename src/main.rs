//! `pachagent`, the front: answers `token` and `whoami` itself, so that scripts calling them in a loop pay for a
//! small program, and hands every other command line, unchanged, to `pachagent-cli` (or `serve` to
//! `pachagentd`); also those two when `RUST_LOG` asks for logs or no agent answers. See [`pachagent::programs`].
//!
//! On glibc Linux this program is linked statically (build/link.rs), which is sound because it looks up nothing
//! through NSS: no user database (`home_dir`, `getpwuid`), no host names. Code that would must stay in
//! `pachagent-cli`; static glibc can only do it by loading the NSS modules of the glibc it was built with.

use std::ffi::OsString;
use std::process::ExitCode;

use pachagent::cli::{self, quick};
use pachagent::programs;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let program = match quick::route(&args) {
        quick::Route::Quick(command) if !quick::asks_for_logs() => return quick::run(command, args),
        quick::Route::Quick(_) | quick::Route::Cli => programs::CLI,
        quick::Route::Agent => programs::AGENT,
    };
    cli::report(&programs::hand_over(program, args).into())
}
