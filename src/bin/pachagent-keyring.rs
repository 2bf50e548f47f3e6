//! `pachagent-keyring`, the agent's keyring helper: the agent starts it for its Secret Service calls and it
//! exits when the agent closes its input (see [`pachagent::store::helper`]). Not a command for people: it reads
//! requests on standard input and writes replies on standard output.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, service] = args.as_slice() else { return usage() };
    if flag != "--service" {
        return usage();
    }
    pachagent::logging::init_helper();
    pachagent::daemon::harden();
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
