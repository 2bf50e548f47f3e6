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
