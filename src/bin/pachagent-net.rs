//! `pachagent-net`, the agent's helper for its calls to the identity provider and pachd: the agent starts one for
//! each call (see [`pachagent::net`]). Not a command for people: it reads one request on standard input, writes
//! the answer on standard output and exits.

use std::process::ExitCode;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt, registry};

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        eprintln!(
            "pachagent-net takes no arguments: the pachagent agent runs this program itself; it is not a command"
        );
        return ExitCode::from(2);
    }
    // Its warnings (a provider that rotated its keys) join the agent's log, on the stderr they share.
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    registry().with(layer.with_filter(pachagent::logging::log_filter("warn"))).init();
    pachagent::daemon::harden_helper();
    match pachagent::net::serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pachagent-net: {e}");
            ExitCode::FAILURE
        }
    }
}
