//! `pachagent-net`, the agent's helper for its calls to the identity provider and pachd: the agent starts one for
//! each call (see [`pachagent::net`]). Not a command for people: it reads one request on standard input, writes
//! the answer on standard output and exits.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        eprintln!(
            "pachagent-net takes no arguments: the pachagent agent runs this program itself; it is not a command"
        );
        return ExitCode::from(2);
    }
    pachagent::logging::init_helper();
    pachagent::daemon::harden();
    match pachagent::net::serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pachagent-net: {e}");
            ExitCode::FAILURE
        }
    }
}
