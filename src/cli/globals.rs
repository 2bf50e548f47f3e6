//! The flags every pachagent program reads (socket, config, context, JSON) and `serve`'s own.
//!
//! One definition for the three programs that read a command line (see [`crate::programs`]): `pachagent-cli`
//! flattens [`GlobalArgs`] into its command line, `pachagentd` parses the same globals and the same [`ServeArgs`]
//! ([`super::agent`]), and the front's quick commands read the same names and variables ([`super::quick`]) and
//! resolve them with [`Globals::resolve`]. So a command line means the same thing whichever program ends up reading it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config;

/// The help heading of the flags every subcommand accepts.
const GLOBAL: &str = "Global options";

/// `serve`'s long help, shown by `pachagent serve --help` and `pachagentd serve --help` alike.
pub(super) const SERVE_LONG_ABOUT: &str = "Run the agent in the foreground until SIGINT or SIGTERM. It listens on \
    --socket, reads --config, and logs to stderr (level `info`; set RUST_LOG to change it, e.g. \
    RUST_LOG=pachagent=debug). `pachagent login` starts it in the background when it is not running, logging to \
    agent.log next to the socket. The agent is the program pachagentd, installed next to pachagent.";

/// `serve`'s examples.
pub(super) const SERVE_AFTER_HELP: &str =
    "Examples:\n  pachagent serve\n  RUST_LOG=debug pachagent serve --log-format json";

/// The variable `--socket` falls back to.
pub(super) const SOCKET_ENV: &str = "PACHAGENT_SOCKET";
/// The variable `--config` falls back to.
pub(super) const CONFIG_ENV: &str = "PACHAGENT_CONFIG";
/// The variable `--context` falls back to.
pub(super) const CONTEXT_ENV: &str = "PACHAGENT_CONTEXT";

/// The flags every subcommand accepts, before or after it.
#[derive(Debug, Default, Args)]
pub struct GlobalArgs {
    /// The agent's socket [default: $XDG_RUNTIME_DIR/pachagent/agent.sock, else $TMPDIR/pachagent-UID/agent.sock]
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, help_heading = GLOBAL)]
    pub(super) socket: Option<OsString>,

    /// The configuration file [default: ~/.config/pachagent/config.toml]
    #[arg(long, global = true, value_name = "PATH", env = CONFIG_ENV, help_heading = GLOBAL)]
    pub(super) config: Option<OsString>,

    /// The context to use; empty means the active context (see `pachagent context list`)
    #[arg(long, global = true, value_name = "NAME", env = CONTEXT_ENV, help_heading = GLOBAL)]
    pub(super) context: Option<String>,

    /// Print JSON (one object per line) instead of text
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(super) json: bool,
}

/// What every handler needs from the global flags, with defaults applied.
pub(crate) struct Globals {
    pub(crate) socket: PathBuf,
    pub(crate) config: PathBuf,
    /// Empty means the active context.
    pub(crate) context: String,
    pub(crate) json: bool,
}

impl Globals {
    /// The global flags with their defaults applied.
    pub(crate) fn resolve(args: GlobalArgs) -> Self {
        // An empty `$PACHAGENT_SOCKET=` means "unset", as for the other variables the config module reads.
        let explicit = |p: Option<OsString>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
        Self {
            socket: config::socket_path(explicit(args.socket).as_deref()),
            config: config::config_path(explicit(args.config).as_deref()),
            context: args.context.unwrap_or_default(),
            json: args.json,
        }
    }
}

/// `serve`'s own flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Log line format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    /// Exit once no client has connected for this long and no session needs renewing or a warning within it
    /// (e.g. 10m; for socket activation, which starts the agent again on the next connection)
    #[arg(long, value_name = "DURATION", value_parser = parse_idle_exit)]
    pub(super) idle_exit: Option<Duration>,
}

/// Parses `--min-valid`: a human duration (`10m`, `1h 30m`).
pub(super) fn parse_min_valid(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Parses `--idle-exit`: a human duration of at least one second.
fn parse_idle_exit(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("use a duration of at least 1s".into());
    }
    Ok(d)
}

/// How the agent writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}
