//! One handler per subcommand: resolve paths, call the agent (or edit the config), hand the answer to `output`.

use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use tonic::Code;
use tracing_subscriber::EnvFilter;
use zeroize::Zeroize;

use super::{Cli, Command, ContextAddArgs, ContextCommand, Error, LogFormat, LoginArgs, MethodArg, output};
use crate::client::{self, ClientError};
use crate::config::{self, Config, Method, NewContext};
use crate::daemon::{self, ServeOptions};
use crate::proto::agent::login_event::Event;
use crate::proto::agent::{
    GetStatusRequest, GetTokenRequest, LoginMethod, LoginRequest, LogoutRequest, ReloadConfigRequest, WatchRequest,
    WhoAmIRequest,
};
use crate::secret::{IdToken, PachToken};

/// Far more than any Pachyderm token or ID token; more than this on stdin is a mistake, not a token.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// How long `context` commands wait for a running agent to reload; the file is already written, so a slow
/// agent only earns a warning.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler needs from the global flags, with defaults applied.
struct Globals {
    socket: PathBuf,
    config: PathBuf,
    /// Empty means the active context.
    context: String,
    json: bool,
}

pub(super) async fn dispatch(cli: Cli) -> Result<(), Error> {
    // An empty `$PACHAGENT_SOCKET=` means "unset", as for the other variables the config module reads.
    let explicit = |p: Option<std::ffi::OsString>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
    let g = Globals {
        socket: config::socket_path(explicit(cli.socket).as_deref()),
        config: config::config_path(explicit(cli.config).as_deref()),
        context: cli.context.unwrap_or_default(),
        json: cli.json,
    };
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info");
            let opts = ServeOptions { socket: g.socket, config: g.config };
            daemon::serve(opts).await.map_err(Error::Daemon)
        }
        command => {
            init_tracing(LogFormat::Text, "warn");
            client_command(&g, command).await
        }
    }
}

async fn client_command(g: &Globals, command: Command) -> Result<(), Error> {
    match command {
        // `dispatch` runs the agent itself; this function only sees client commands.
        Command::Serve(_) => Ok(()),
        Command::Context(cmd) => context(g, cmd).await,
        Command::Login(args) => login(g, args).await,
        Command::Logout(args) => {
            let mut agent = client::connect(&g.socket).await?;
            let req = LogoutRequest { context: g.context.clone(), all: args.all };
            let resp = agent.logout(req).await?.into_inner();
            Ok(output::logout(&mut io::stdout(), &resp, g.json)?)
        }
        Command::Whoami(args) => {
            let mut agent = client::connect(&g.socket).await?;
            let req = WhoAmIRequest { context: g.context.clone(), verify: args.verify };
            let resp = agent.who_am_i(req).await?.into_inner();
            Ok(output::whoami(&mut io::stdout(), &resp, g.json)?)
        }
        Command::Status => {
            let mut agent = client::connect(&g.socket).await?;
            let resp = agent.get_status(GetStatusRequest {}).await?.into_inner();
            Ok(output::status(&mut io::stdout(), &resp, Utc::now(), g.json)?)
        }
        Command::Token(args) => {
            let mut agent = client::connect(&g.socket).await?;
            // Round up: "valid for at least 1.5s" must not become "at least 1s".
            let min_valid_seconds = args.min_valid.map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
            let req = GetTokenRequest { context: g.context.clone(), min_valid_seconds };
            let mut resp = agent.get_token(req).await?.into_inner();
            let token = PachToken::new(std::mem::take(&mut resp.token));
            Ok(output::token(&mut io::stdout(), &resp, &token, g.json)?)
        }
        Command::Watch(args) => {
            let mut agent = client::connect(&g.socket).await?;
            let req = WatchRequest { context: g.context.clone(), all_contexts: args.all };
            let mut events = agent.watch(req).await?.into_inner();
            // Ctrl-C keeps its default effect (the process ends and the agent sees the stream close).
            while let Some(event) = events.message().await? {
                output::watch_event(&mut io::stdout(), &event, g.json)?;
            }
            Ok(())
        }
    }
}

/// Logs go to stderr: `info` for the agent, `warn` for client commands; `RUST_LOG` overrides either.
fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr);
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn login(g: &Globals, args: LoginArgs) -> Result<(), Error> {
    let mut req = LoginRequest { context: g.context.clone(), force: args.force, ..Default::default() };
    // The token is read before the agent is contacted, so that a mistake on stdin starts no agent.
    if args.token_stdin {
        let token = PachToken::from_input(read_stdin("Pachyderm token")?);
        if token.is_empty() {
            return Err(Error::EmptyToken { flag: "--token-stdin" });
        }
        req.method = LoginMethod::PachToken.into();
        req.pach_token = token.expose_secret().to_owned();
    } else if args.id_token_stdin {
        let token = IdToken::from_input(read_stdin("ID token")?);
        if token.is_empty() {
            return Err(Error::EmptyToken { flag: "--id-token-stdin" });
        }
        req.method = LoginMethod::IdToken.into();
        req.id_token = token.expose_secret().to_owned();
    }
    let mut agent = client::connect_or_start(&g.socket, &g.config).await?;
    let mut events = agent.login(req).await?.into_inner();
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let mut failed = None;
    let mut done = false;
    while let Some(event) = events.message().await? {
        match event.event {
            Some(Event::OpenUrl(e)) => output::login_step(&mut out, &mut err, output::LoginStep::OpenUrl(&e), g.json)?,
            Some(Event::UserCode(e)) => {
                output::login_step(&mut out, &mut err, output::LoginStep::UserCode(&e), g.json)?;
            }
            Some(Event::Waiting(e)) => output::login_step(&mut out, &mut err, output::LoginStep::Waiting(&e), g.json)?,
            Some(Event::Done(d)) => {
                output::login_done(&mut out, &mut err, &d, g.json)?;
                done = true;
            }
            // The stream ends next with a status carrying the same code and message; keep this one in case
            // it does not.
            Some(Event::Failed(f)) => failed = Some(tonic::Status::new(Code::from_i32(f.code), f.message)),
            None => {}
        }
    }
    match (failed, done) {
        (Some(status), _) => Err(status.into()),
        (None, true) => Ok(()),
        (None, false) => Err(Error::LoginIncomplete),
    }
}

/// Reads all of stdin (at most [`MAX_TOKEN_BYTES`]), prompting first when it is a terminal.
fn read_stdin(what: &str) -> Result<String, Error> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        output::paste_prompt(&mut io::stderr(), what)?;
    }
    // Room for everything up front, so that the buffer never reallocates and leaves a copy of the token behind.
    let mut buf = String::with_capacity(MAX_TOKEN_BYTES + 1);
    let limit = u64::try_from(MAX_TOKEN_BYTES + 1).unwrap_or(u64::MAX);
    if let Err(e) = stdin.lock().take(limit).read_to_string(&mut buf) {
        buf.zeroize();
        return Err(Error::Stdin(e));
    }
    if buf.len() > MAX_TOKEN_BYTES {
        buf.zeroize();
        return Err(Error::TokenTooLarge { max: MAX_TOKEN_BYTES });
    }
    Ok(buf)
}

async fn context(g: &Globals, cmd: ContextCommand) -> Result<(), Error> {
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let (config, message) = match cmd {
        ContextCommand::List => {
            let config = Config::load(&g.config)?;
            return Ok(output::contexts(&mut out, &mut err, &config, g.json)?);
        }
        ContextCommand::Add(args) => add_context(&g.config, args)?,
        ContextCommand::Use { name } => {
            let config = Config::use_context(&g.config, &name)?;
            (config, format!("Context {} is now active.", output::go_quote(&name)))
        }
        ContextCommand::Remove { name } => {
            let config = Config::remove_context(&g.config, &name)?;
            let mut message = format!("Removed context {}.", output::go_quote(&name));
            if config.active_context.is_none() && !config.contexts.is_empty() {
                message.push_str(" No context is active now: choose one with pachagent context use NAME.");
            }
            (config, message)
        }
    };
    if g.json {
        output::contexts(&mut out, &mut err, &config, true)?;
    } else {
        output::context_changed(&mut out, &message)?;
    }
    if let Some(warning) = reload_agent(&g.socket).await {
        output::warning(&mut err, &warning)?;
    }
    Ok(())
}

fn add_context(path: &Path, args: ContextAddArgs) -> Result<(Config, String), Error> {
    let method = args.method.map(|m| match m {
        MethodArg::Oidc => Method::Oidc,
        MethodArg::Pachd => Method::Pachd,
    });
    let new = NewContext {
        pachd_address: args.pachd,
        ca_file: args.ca_file,
        issuer: args.issuer,
        client_id: args.client_id,
        scopes: args.scopes,
        redirect_port: args.redirect_port,
        method,
    };
    let config = Config::add_context(path, &args.name, new)?;
    let mut message = format!("Added context {}", output::go_quote(&args.name));
    if let Ok(ctx) = config.context(&args.name) {
        message.push_str(&format!(" ({}, login method {})", ctx.pachd, ctx.method.as_str()));
    }
    message.push_str(&format!(" to {}.", config.path.display()));
    if config.active_context.as_deref() == Some(args.name.as_str()) {
        message.push_str(" It is the active context.");
    }
    Ok((config, message))
}

/// Asks a running agent to re-read the configuration. No agent is fine (it reads the file when it starts);
/// anything else is returned as a warning, since the file itself was written.
async fn reload_agent(socket: &Path) -> Option<String> {
    let mut agent = match client::connect(socket).await {
        Ok(agent) => agent,
        Err(ClientError::AgentNotRunning { .. }) => return None,
        Err(e) => return Some(format!("the configuration was saved, but the running agent was not told: {e}")),
    };
    match tokio::time::timeout(RELOAD_TIMEOUT, agent.reload_config(ReloadConfigRequest {})).await {
        Ok(Ok(_)) => None,
        Ok(Err(status)) => Some(format!(
            "the configuration was saved, but the running agent did not reload it: {}",
            Error::Status(status)
        )),
        Err(_) => Some(format!(
            "the configuration was saved, but the running agent did not confirm the reload within {}s",
            RELOAD_TIMEOUT.as_secs()
        )),
    }
}
