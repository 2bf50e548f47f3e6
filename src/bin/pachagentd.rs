//! `pachagentd`, the agent: `pachagentd serve` is what `pachagent serve` runs. It parses the same global flags
//! and `serve` flags as `pachagent` and runs [`pachagent::daemon`], and links nothing of the CLI's commands,
//! formatting or dev stack, so that what stays resident is the agent's own code.

use std::process::ExitCode;

use clap::Parser;
use pachagent::cli::{self, agent};

fn main() -> ExitCode {
    let args = agent::AgentCli::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(agent::serve(args)),
        Err(e) => cli::report(&cli::Error::Runtime(e)),
    }
}

/// The C library's `pow`, from the `libm` crate (a Rust port of musl's). tokio's multi-thread scheduler calls `pow`
/// (a moving average of poll times) and nothing else in the agent uses the C maths library, yet linking it made
/// the agent load libm.so, whose relocations and ifunc resolvers left 0.45 MB of it resident for the agent's
/// life (/proc/PID/smaps, right after start). Defined here, the agent needs no libm.so.
#[allow(unsafe_code)]
// SAFETY: `pow` has no preconditions (every pair of doubles is valid input) and touches no memory, as the C
// function it stands in for; glibc's libc.so.6 does not define it, so nothing else is displaced.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
