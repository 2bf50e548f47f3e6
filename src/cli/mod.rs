//! The `pachagent` command line: argument parsing, one handler per subcommand, and exit codes.
//!
//! Most subcommands are thin clients: they ask the agent over [`crate::client`] and
//! hand the answer to [`output`], the only place that prints. `login` also acts for the user on this machine:
//! it decides whether a browser can be opened here (`browser`), opens the URLs the agent sends, and turns Ctrl-C
//! into a cancelled login. `context` edits the configuration file directly (the agent need not run), keeps a
//! client secret in the keyring, and then asks a running agent to reload. `serve` hands over to the agent
//! program (`pachagentd`, which runs [`agent::serve`]). `quick` is the front's own path for `token` and
//! `whoami`, the commands scripts call in loops (see [`crate::programs`]). `service` installs the agent as a
//! user service (systemd socket activation or launchd), `doctor` checks a setup end to end, and
//! `completions`/`man` print text generated from this definition. No handler keeps a token or secret longer than it takes to send, store or print it.

pub mod agent;
mod browser;
mod commands;
mod completions;
mod dev;
mod doctor;
mod error;
mod exec;
pub mod globals;
mod login;
pub mod output;
mod prompt;
pub mod quick;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use globals::{GlobalArgs, ServeArgs};

pub use error::{
    EXIT_AGENT, EXIT_CANCELLED, EXIT_NO_SESSION, EXIT_OK, EXIT_UPSTREAM, EXIT_USAGE, Error, exit_code_for,
};

const LONG_ABOUT: &str = "\
pachagent keeps you logged in to Pachyderm. It is a small agent that runs in the background on your \
workstation: it logs in to Pachyderm clusters, keeps the session tokens in your operating system's keyring \
(never in files), refreshes them before they expire, and hands them to tools that ask for them over a Unix \
socket only you can open.

`pachagent serve` runs the agent (the program pachagentd, installed next to pachagent); `login`, `whoami`, \
`status`, `token`, `logout` and `watch` ask the running agent. `login` starts the agent when it is not running.

A context names one Pachyderm cluster (its pachd address) and how to log in to it. Add one with \
`pachagent context add`; commands use the active context unless you pass --context.";

const AFTER_HELP: &str = "\
Examples:
  pachagent context add prod --pachd grpcs://pachd.example.com:443
  pachagent login --token-stdin < robot-token.txt
  pachagent whoami
  pachagent status
  export PACH_TOKEN=\"$(pachagent token --min-valid 10m)\"
  pachagent exec -- pachctl list repo

Exit codes:
  0    success
  1    no valid session (not logged in, expired, login required): run `pachagent login`;
       also used for unexpected local failures
  2    usage or configuration error: bad arguments, unknown context, invalid config file, a
       request the agent refuses in its current state, or an incomplete installation
  3    the agent is not reachable: start it with `pachagent serve`, or run `pachagent login`
  4    upstream failure: pachd or the identity provider is unreachable or failed, or the agent failed
  130  an interactive login was cancelled with Ctrl-C";

/// `pachagent`: the agent and its command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "pachagent",
    // Whichever of pachagent's programs reads the command line, it is the `pachagent` command to the user.
    bin_name = "pachagent",
    version,
    about = "Keep Pachyderm sessions logged in and hand their tokens to your tools",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    max_term_width = 110
)]
pub struct Cli {
    #[command(flatten)]
    globals: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (until Ctrl-C or SIGTERM)
    #[command(long_about = globals::SERVE_LONG_ABOUT, after_help = globals::SERVE_AFTER_HELP)]
    Serve(ServeArgs),

    /// Run everything on this machine for a try-out: a dev identity provider, a pachd stand-in and an agent
    #[command(
        long_about = "Start a complete development setup on loopback and keep it running until Ctrl-C: an \
                      embedded OpenID Provider, pachd-dev (a pachd-compatible auth server) and an agent with its own \
                      temporary socket and configuration. Secrets go to the real OS keyring under a separate \
                      service name and are removed on exit. The agent logs in as dev@example.com (through your \
                      browser with --interactive), then the session events are printed as they happen (with the \
                      short dev lifetimes, refreshes show up within minutes). Use the printed export lines to run \
                      `pachagent whoami` and friends from another terminal.",
        after_help = "Examples:\n  cargo run --release -- dev\n  pachagent dev --interactive\n  pachagent dev --id-token-ttl 1m"
    )]
    Dev(DevArgs),

    /// Add, list, select or remove contexts (the clusters you log in to)
    #[command(subcommand)]
    Context(ContextCommand),

    /// Log in to the context's cluster
    #[command(
        long_about = "Log in to the context's cluster. With --token-stdin, hand the agent a Pachyderm token \
                      (e.g. a robot token); with --id-token-stdin, an OIDC ID token that the agent trades with \
                      pachd. Without either, the agent runs an interactive login and this command shows what to \
                      open or enter, and waits (up to --timeout; Ctrl-C cancels).\n\n\
                      The agent picks the interactive login: the context's method when it is `device` or \
                      `pachd`; else the browser login when this machine can open a browser; else the device-code \
                      login when the provider offers it; else the browser login, with the `ssh -L` line that \
                      lets a browser on another machine finish it. A browser is available on macOS and Windows, \
                      and elsewhere when $BROWSER is set, a graphical session runs ($DISPLAY or \
                      $WAYLAND_DISPLAY), or under WSL with wslview; an SSH session without a display has none. \
                      The URL to open is always printed on stderr.\n\n\
                      Starts the agent when it is not running. On success it prints who you are on stdout, like \
                      `pachagent whoami`.",
        after_help = "Examples:\n  pachagent login\n  \
                      pachagent login --device                  # e.g. over SSH\n  \
                      pachagent login --no-browser --timeout 10m\n  \
                      pachagent login --token-stdin < robot-token.txt\n  \
                      pachagent login --context prod --id-token-stdin < id-token.jwt\n  \
                      pachagent login --force"
    )]
    Login(LoginArgs),

    /// Log out: revoke the session's tokens at pachd and delete them from the keyring
    #[command(long_about = "Log out of the context (or of every context with --all): the agent revokes at pachd the \
                      session's token and every earlier token of it that was handed out and has not expired yet \
                      (renewals leave those valid for whoever holds them), then deletes the stored session, and \
                      says how many it revoked. When pachd cannot be reached the session is still deleted \
                      locally, and the output says which tokens stay valid until when.")]
    Logout(LogoutArgs),

    /// Print who you are logged in as and when the session expires
    #[command(
        long_about = "Print your Pachyderm identity (e.g. user:alan.watts@domain.com) and session expiration, \
                      exactly as `pachctl auth whoami` does. The answer comes from the agent's state; --verify \
                      asks pachd.",
        after_help = "Example output:\n  You are \"user:alice@example.com\"\n  session expires: 09 Feb 25 14:41 UTC"
    )]
    Whoami(WhoamiArgs),

    /// Show every context's session and the health of the keyring
    #[command(
        long_about = "Show every configured context: who is logged in, the session's state, the time left, when \
                      the agent renews it next, how it logged in, where the session is stored, and its pachd. The \
                      active context is marked with *, and a session's last error is shown under it. Then the \
                      health of the secret store and the agent's pid. Colours only on a terminal, never with \
                      NO_COLOR set. --json prints a stable object for scripts (its fields are in the README)."
    )]
    Status,

    /// Print the context's Pachyderm token (for scripts)
    #[command(
        long_about = "Print the context's Pachyderm token and a newline on stdout, refreshing it first when it \
                      would expire within --min-valid. Meant for command substitution; the token is never \
                      written anywhere else.",
        after_help = "Examples:\n  export PACH_TOKEN=\"$(pachagent token)\"\n  \
                      pachagent token --min-valid 30m --json"
    )]
    Token(TokenArgs),

    /// Print session events (logins, refreshes, expiry) as they happen
    #[command(long_about = "Print one line per session event of the context (or of every context with --all) until \
                      the agent stops or you press Ctrl-C. Text lines read `<time> <context> <KIND> <user> \
                      expires <time> <detail>`; --json prints one object per line.")]
    Watch(WatchArgs),

    /// Run a command with the context's session, for pachctl, python-pachyderm and other clients
    #[command(
        long_about = "Run a command as the context's user, authenticated for as long as it runs. It gets \
                      PACH_CONFIG, naming a private pachctl config whose only, active context holds the session \
                      (with the context's ca_file as server_cas), rewritten with the current token after every \
                      renewal: pachctl reads it on every command, and pachyderm_sdk's Client.from_config() reads \
                      it when called. It also gets PACH_PYTHON_AUTH_TOKEN, which pachyderm_sdk.Client() and \
                      python-pachyderm read once, when a client is made; that token stays valid until its own \
                      expiration (the agent never revokes a token it handed out), but is not renewed, so long \
                      Python jobs should use pachagent.client() or Client.from_config(). PACHD_ADDRESS is not set \
                      (no Python client reads it, and pachctl then ignores the context's server_cas) unless \
                      --pachd-address-env asks for it; PACH_CONTEXT is unset. Your own pachctl config is not used \
                      or changed. The token is renewed first when it would expire within --min-valid. The private \
                      config is removed when the command ends, and pachagent exits with the command's status \
                      (128 + N when signal N ended it; 127 when there is no such command).",
        after_help = "Examples:\n  pachagent exec -- pachctl list repo\n  \
                      pachagent exec --context prod --min-valid 1h -- python train.py"
    )]
    Exec(exec::ExecArgs),

    /// Print a shell completion script on stdout
    #[command(
        long_about = "Print the completion script for SHELL on stdout. Load it from your shell's startup file \
                      or save it where your shell looks for completions.",
        after_help = "Examples:\n  pachagent completions bash > ~/.local/share/bash-completion/completions/pachagent\n  \
                      pachagent completions zsh > \"${fpath[1]}/_pachagent\"\n  \
                      pachagent completions fish > ~/.config/fish/completions/pachagent.fish"
    )]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Check the configuration, the context's pachd and identity provider, the keyring and the agent's socket
    #[command(
        long_about = "Check, one by one, what logging in needs: the configuration parses; the context exists; \
                      pachd answers and has auth activated; the provider's discovery document names exactly the \
                      configured issuer and publishes signing keys; the provider supports the context's login \
                      method; the redirect port is free (and the exact callback URL to register); this machine's \
                      clock agrees with the provider's; the keyring answers and keeps sessions; the agent's \
                      socket is owner-only and served by you. Each line starts with ✔ (fine), ! (works, with a \
                      caveat) or ✘ (broken, with what to fix). Exits 0 when nothing is broken, 1 otherwise.",
        after_help = "Examples:\n  pachagent doctor\n  pachagent doctor --context prod --json"
    )]
    Doctor,

    /// Install, remove or inspect the agent as a service of your user (systemd or launchd)
    #[command(subcommand)]
    Service(service::ServiceCommand),

    /// Print the manual page (roff) on stdout
    #[command(after_help = "Example:\n  pachagent man > ~/.local/share/man/man1/pachagent.1")]
    Man,
}

#[derive(Debug, Subcommand)]
enum ContextCommand {
    /// Add a context (the first one becomes active)
    #[command(after_help = "Examples:\n  \
        pachagent context add local --pachd localhost:30650\n  \
        pachagent context add prod --pachd grpcs://pachd.example.com:443 \\\n      \
        --issuer https://login.example.com/ --client-id pachagent --scope groups\n  \
        pachagent context add corp --pachd grpcs://pachd.corp:443 --issuer https://sso.corp/ \\\n      \
        --client-id pachagent --redirect-port 8765 --redirect-host localhost \\\n      \
        --client-secret-stdin < secret.txt\n  \
        pachagent context add prod                 # on a terminal: asks for pachd, issuer and client id")]
    Add(ContextAddArgs),
    /// List contexts; the active one is marked with *
    List,
    /// Make a context the active one
    Use {
        /// The context's name
        name: String,
    },
    /// Remove a context and its stored client secret (log out of it first to delete its session)
    Remove {
        /// The context's name
        name: String,
    },
    /// Add a context for each of pachctl's contexts (same name and pachd address)
    #[command(
        long_about = "Add a context for each of pachctl's contexts, with the same name and pachd address. \
                      Contexts whose name already exists here, or that pachagent cannot use, are skipped and \
                      listed with the reason. When no context was active, pachctl's active context becomes the \
                      active one. pachctl's config is only read.",
        after_help = "Examples:\n  pachagent context import-pachctl\n  \
                      pachagent context import-pachctl --from /etc/pachyderm/config.json --sync-pachctl"
    )]
    ImportPachctl(ImportPachctlArgs),
}

#[derive(Debug, Args)]
struct ImportPachctlArgs {
    /// pachctl's config file [default: $PACH_CONFIG, else ~/.pachyderm/config.json]
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
    /// Keep pachctl's config in step for the imported contexts (see `pachagent context add --help`)
    #[arg(long)]
    sync_pachctl: bool,
}

#[derive(Debug, Args)]
struct ContextAddArgs {
    /// A name for the context: letters, digits, '-', '_' or '.'
    name: String,
    /// pachd's address, as pachctl accepts it: [grpc|grpcs|http|https://]host[:port] (default port 30650).
    /// Without it, a terminal asks for it (and for the issuer and client id); elsewhere it is an error
    #[arg(long, value_name = "ADDRESS")]
    pachd: Option<String>,
    /// PEM file with the CA that signs pachd's certificate (grpcs:// only)
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The OIDC issuer URL, for logins run by the agent
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Where to fetch the provider's discovery document when the issuer's host is not reachable from here
    #[arg(long, value_name = "URL", requires = "issuer")]
    issuer_url: Option<String>,
    /// PEM file with the CA that signs the identity provider's certificate
    #[arg(long, value_name = "FILE", requires = "issuer")]
    issuer_ca_file: Option<PathBuf>,
    /// The OAuth client id the agent logs in as (with --issuer)
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Read the OAuth client secret (confidential clients only) from stdin; it is kept in the keyring
    #[arg(long, requires = "client_id")]
    client_secret_stdin: bool,
    /// An extra scope to request at login (repeatable)
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// A fixed loopback port for the login redirect, for providers that match redirect URIs exactly
    /// (repeatable: the first free one is used) [default: a random port]
    #[arg(long = "redirect-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    redirect_ports: Vec<u16>,
    /// The host written in the redirect URI; it must match what is registered at the provider
    #[arg(long, value_enum, value_name = "HOST")]
    redirect_host: Option<RedirectHostArg>,
    /// How interactive logins run [default: oidc with --issuer, else pachd]
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Keep pachctl's own config ($PACH_CONFIG or ~/.pachyderm/config.json) in step: the context of the same name
    /// gets the current session token after every login and refresh, and a blank one on logout
    #[arg(long)]
    sync_pachctl: bool,
}

/// `--method` values, mirroring [`crate::config::Method`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    /// The agent runs the OIDC browser login itself and can refresh the session
    Oidc,
    /// The OIDC device-code login: enter a short code in a browser on any device
    Device,
    /// pachctl's flow through pachd; the session cannot be refreshed
    Pachd,
}

/// `--redirect-host` values, mirroring [`crate::config::RedirectHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RedirectHostArg {
    /// http://127.0.0.1:PORT/… (RFC 8252's advice)
    #[value(name = "127.0.0.1")]
    Loopback,
    /// http://localhost:PORT/… (what some providers insist on; the agent still listens on 127.0.0.1 only)
    Localhost,
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// Read a Pachyderm token (session or robot token) from stdin
    #[arg(long, conflicts_with_all = ["id_token_stdin", "device", "no_browser"])]
    token_stdin: bool,
    /// Read an OIDC ID token from stdin and trade it for a Pachyderm token
    #[arg(long, conflicts_with_all = ["device", "no_browser"])]
    id_token_stdin: bool,
    /// Use the device-code login: enter a short code in a browser on any device (for SSH sessions)
    #[arg(long)]
    device: bool,
    /// Never open a browser here; print the URL for you to open
    #[arg(long)]
    no_browser: bool,
    /// Log in again even when a valid session exists
    #[arg(long)]
    force: bool,
    /// How long to wait for you to finish an interactive login (e.g. 90s, 10m)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
}

/// The longest `--timeout`, the agent's own limit: a forgotten login should not hold a loopback port for long.
const MAX_LOGIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses `--timeout`: a human duration from one second to [`MAX_LOGIN_TIMEOUT`].
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > MAX_LOGIN_TIMEOUT {
        return Err(format!("use a duration from 1s to {}", humantime::format_duration(MAX_LOGIN_TIMEOUT)));
    }
    Ok(d)
}

#[derive(Debug, Args)]
struct LogoutArgs {
    /// Log out of every context
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct WhoamiArgs {
    /// Ask pachd instead of answering from the agent's state
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Refresh first unless the token stays valid this long (e.g. 10m, 1h30m)
    #[arg(long, value_name = "DURATION", value_parser = globals::parse_min_valid)]
    min_valid: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Log in through your browser (the dev IdP asks for an email) instead of automatically
    #[arg(long)]
    interactive: bool,
    /// Lifetime of the dev IdP's ID tokens, which bounds each Pachyderm session (e.g. 2m, 10m)
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    id_token_ttl: Duration,
    /// The email to log in as
    #[arg(long, default_value = crate::devstack::idp::DEV_EMAIL)]
    email: String,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Watch every context, not only one
    #[arg(long)]
    all: bool,
}

impl Cli {
    /// Whether the command runs services in this process (`dev`), which wants a multi-threaded runtime; client
    /// commands make a few calls in sequence and run on the current thread.
    pub fn runs_services(&self) -> bool {
        matches!(self.command, Command::Dev(_))
    }
}

/// Runs a parsed command line: prints errors as `pachagent: <message>` on stderr and returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let (globals, command) = (globals::Globals::resolve(cli.globals), cli.command);
    // The agent is a program of its own, which reads this command line as this one does.
    if let Command::Serve(_) = command {
        return report(&crate::programs::hand_over(crate::programs::AGENT, std::env::args_os().skip(1)).into());
    }
    // `exec` ends with its command's exit status, which is neither success nor one of this CLI's errors.
    if let Command::Exec(args) = command {
        return exec::run(&globals, args).await;
    }
    // `service` reports partial success (files written, service manager unreachable) with its own exit code.
    if let Command::Service(cmd) = command {
        return service::run(&globals, cmd).await;
    }
    // `doctor` exits 1 when a check fails, after printing every check.
    if let Command::Doctor = command {
        return doctor::run(&globals).await;
    }
    match commands::dispatch(globals, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints an error on stderr and returns its exit code; a closed stdout is not reported.
pub fn report(err: &Error) -> ExitCode {
    if err.is_broken_pipe() {
        return ExitCode::SUCCESS;
    }
    let _ = output::error(&mut std::io::stderr(), err);
    ExitCode::from(err.exit_code())
}

#[cfg(test)]
mod tests;
