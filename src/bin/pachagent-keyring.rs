//! `pachagent-keyring`, the agent's keyring helper: the agent starts it for its Secret Service calls and it
//! exits when the agent closes its input (see [`pachagent::store::helper`]). Not a command for people: it reads
//! requests on standard input and writes replies on standard output.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
use tracing_subscriber::layer::SubscriberExt as _;
#[cfg(target_os = "linux")]
use tracing_subscriber::util::SubscriberInitExt as _;
#[cfg(target_os = "linux")]
use tracing_subscriber::{Layer as _, fmt, registry};

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, service] = args.as_slice() else { return usage() };
    if flag != "--service" {
        return usage();
    }
    // Its warnings (a keyring that had to be reconnected) join the agent's log, on the stderr they share.
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    registry().with(layer.with_filter(pachagent::logging::log_filter("warn"))).init();
    pachagent::daemon::harden_helper();
    match pachagent::store::helper::serve(service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pachagent-keyring: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Elsewhere the agent keeps its keyring calls in its own process: the platform keyrings are small.
#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    usage()
}

fn usage() -> ExitCode {
    eprintln!("pachagent-keyring --service NAME: the pachagent agent runs this program itself; it is not a command");
    ExitCode::from(2)
}
