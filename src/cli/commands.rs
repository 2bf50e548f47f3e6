//! One handler per subcommand: resolve paths, call the agent (or edit the config), hand the answer to `output`.

use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use zeroize::Zeroize;

pub(crate) use super::globals::Globals;
use super::globals::LogFormat;
use super::{Command, ContextAddArgs, ContextCommand, Error, ImportPachctlArgs, MethodArg, RedirectHostArg, output};
use crate::client::{self, ClientError};
use crate::config::{self, Config, Method, NewContext, RedirectHost};
use crate::pachctl;
use crate::proto::agent::{
    GetStatusRequest, GetTokenRequest, LogoutRequest, ReloadConfigRequest, WatchRequest, WhoAmIRequest,
};
use crate::secret::{ClientSecret, PachToken};
use crate::store::{Backend, Store};

/// Far more than any Pachyderm token or ID token; more than this on stdin is a mistake, not a token.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// How long `context` commands wait for a running agent to reload; the file is already written, so a slow
/// agent only earns a warning.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn dispatch(g: Globals, command: Command) -> Result<(), Error> {
    match command {
        Command::Dev(args) => {
            // The embedded services log at `warn` so that the session events stay readable.
            init_tracing(LogFormat::Text, "warn");
            super::dev::run(args, g.json).await
        }
        command => {
            init_tracing(LogFormat::Text, "warn");
            client_command(&g, command).await
        }
    }
}

async fn client_command(g: &Globals, command: Command) -> Result<(), Error> {
    match command {
        // `dispatch` runs these itself, and `cli::run` runs `exec`, `service` and `doctor`, which choose their own
        // exit codes; this function only sees client commands.
        Command::Serve(_) | Command::Dev(_) | Command::Exec(_) | Command::Service(_) | Command::Doctor => Ok(()),
        Command::Completions { shell } => {
            Ok(output::generated(&mut io::stdout(), &super::completions::completion_script(shell))?)
        }
        Command::Man => Ok(output::generated(&mut io::stdout(), &super::completions::man_page()?)?),
        Command::Context(cmd) => context(g, cmd).await,
        Command::Login(args) => super::login::login(g, args).await,
        Command::Logout(args) => {
            let mut agent = connect(g).await?;
            let req = LogoutRequest { context: g.context.clone(), all: args.all };
            let resp = agent.logout(req).await?.into_inner();
            Ok(output::logout(&mut io::stdout(), &resp, g.json)?)
        }
        Command::Whoami(args) => whoami(g, args.verify).map_err(|e| name_the_context(g, e)),
        Command::Status => {
            let mut agent = connect(g).await?;
            let resp = agent.get_status(GetStatusRequest {}).await?.into_inner();
            let colour = output::use_colour(io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            Ok(output::status(&mut io::stdout(), &resp, Utc::now(), g.json, colour)?)
        }
        Command::Token(args) => token(g, args.min_valid).map_err(|e| name_the_context(g, e)),
        Command::Watch(args) => {
            let mut agent = connect(g).await?;
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

/// `whoami`: who the context's session is, from the agent's state (or pachd's, with `verify`).
pub(super) fn whoami(g: &Globals, verify: bool) -> Result<(), Error> {
    let req = WhoAmIRequest { context: g.context.clone(), verify };
    let resp = call_agent(g, "WhoAmI", |socket| client::call::who_am_i(socket, &req))?;
    Ok(output::whoami(&mut io::stdout(), &resp, g.json)?)
}

/// `token`: the context's token, valid for at least `min_valid`, on stdout.
pub(super) fn token(g: &Globals, min_valid: Option<Duration>) -> Result<(), Error> {
    // Round up: "valid for at least 1.5s" must not become "at least 1s".
    let min_valid_seconds = min_valid.map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let req = GetTokenRequest { context: g.context.clone(), min_valid_seconds, ..Default::default() };
    let mut resp = call_agent(g, "GetToken", |socket| client::call::get_token(socket, &req))?;
    let token = PachToken::new(std::mem::take(&mut resp.token));
    Ok(output::token(&mut io::stdout(), &resp, &token, g.json)?)
}

/// One call on a connection of its own, without a runtime ([`client::call`]): what `token` and `whoami`, which
/// scripts run in loops, cost as processes. When no agent runs, the error does not name the context yet: that
/// means reading the configuration, which the front leaves to `pachagent-cli` ([`name_the_context`]).
fn call_agent<A>(
    g: &Globals,
    method: &str,
    call: impl FnOnce(&Path) -> Result<A, client::call::CallError>,
) -> Result<A, Error> {
    tracing::debug!(socket = %g.socket.display(), method, "calling the agent");
    call(&g.socket).map_err(|e| match e {
        client::call::CallError::Reach(e) => reach_error(e),
        client::call::CallError::Status(status) => Error::Status(status),
    })
}

/// An "agent not running" error that names the context the command was for, so that the `login` it suggests is
/// the one to run.
fn name_the_context(g: &Globals, e: Error) -> Error {
    match e {
        Error::AgentNotRunning { socket, context: None } => {
            Error::AgentNotRunning { socket, context: target_context(g) }
        }
        e => e,
    }
}

/// A connection failure as the CLI reports it, before [`name_the_context`].
fn reach_error(e: ClientError) -> Error {
    match e {
        ClientError::AgentNotRunning { socket } => Error::AgentNotRunning { socket, context: None },
        e => Error::Client(e),
    }
}

/// Connects to the agent; when none runs, the error names the context the command was for.
pub(super) async fn connect(g: &Globals) -> Result<client::Client, Error> {
    client::connect(&g.socket).await.map_err(|e| name_the_context(g, reach_error(e)))
}

/// The context a command is for: `--context`, else the configuration's active one (when the file reads).
fn target_context(g: &Globals) -> Option<String> {
    if !g.context.is_empty() {
        return Some(g.context.clone());
    }
    Config::load(&g.config).ok()?.active_context
}

/// Logs go to stderr: `info` for the agent, `warn` for client commands; `RUST_LOG` overrides either.
pub(crate) fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, fmt, registry};
    let filter = crate::logging::log_filter(default_level);
    let layer = fmt::layer().with_writer(io::stderr);
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry().with(layer.with_ansi(io::stderr().is_terminal()).with_filter(filter)).try_init(),
        LogFormat::Json => registry().with(layer.json().with_filter(filter)).try_init(),
    };
}

/// Reads all of stdin (at most [`MAX_TOKEN_BYTES`]), prompting first when it is a terminal.
pub(super) fn read_stdin(what: &str) -> Result<String, Error> {
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
        ContextCommand::Add(args) => add_context(&g.config, args).await?,
        ContextCommand::ImportPachctl(args) => return import_pachctl(g, args).await,
        ContextCommand::Use { name } => {
            let config = Config::use_context(&g.config, &name)?;
            (config, format!("Context {} is now active.", output::go_quote(&name)))
        }
        ContextCommand::Remove { name } => {
            let config = Config::remove_context(&g.config, &name)?;
            let mut message = format!("Removed context {}.", output::go_quote(&name));
            match delete_client_secret(&config, &name).await {
                Ok(Some(backend)) => message.push_str(&format!(" Deleted its client secret from the {backend} store.")),
                Ok(None) => {}
                Err(e) => output::warning(
                    &mut err,
                    &format!("the context was removed, but its client secret (if any) could not be deleted: {e}"),
                )?,
            }
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

async fn add_context(path: &Path, mut args: ContextAddArgs) -> Result<(Config, String), Error> {
    if args.pachd.is_none() {
        if !super::prompt::can_ask() {
            let command = format!("pachagent context add {} --pachd ADDRESS", args.name);
            return Err(Error::MissingValue { flag: "--pachd", command });
        }
        super::prompt::complete(&mut args).await?;
    }
    // The secret is read first, so that a mistake on stdin changes nothing.
    let secret = if args.client_secret_stdin {
        let secret = ClientSecret::from_input(read_stdin("client secret")?);
        if secret.is_empty() {
            return Err(Error::EmptyClientSecret);
        }
        Some(secret)
    } else {
        None
    };
    let name = args.name;
    // The store is opened before the file is touched: an unusable keyring then leaves no context behind that
    // would fail at login for want of its secret.
    let store = match &secret {
        Some(_) => {
            let current = Config::load(path)?;
            let store = Store::open(current.store, &current.keyring_service)
                .await
                .map_err(|source| Error::ClientSecret { context: name.clone(), source, context_kept: false })?;
            Some(store)
        }
        None => None,
    };
    let new = NewContext {
        pachd_address: args.pachd.unwrap_or_default(),
        ca_file: args.ca_file,
        issuer: args.issuer,
        issuer_url: args.issuer_url,
        issuer_ca_file: args.issuer_ca_file,
        client_id: args.client_id,
        scopes: args.scopes,
        redirect_ports: args.redirect_ports,
        redirect_host: args.redirect_host.map(|h| match h {
            RedirectHostArg::Loopback => RedirectHost::Loopback,
            RedirectHostArg::Localhost => RedirectHost::Localhost,
        }),
        method: args.method.map(|m| match m {
            MethodArg::Oidc => Method::Oidc,
            MethodArg::Device => Method::Device,
            MethodArg::Pachd => Method::Pachd,
        }),
        sync_pachctl: args.sync_pachctl,
    };
    let config = Config::add_context(path, &name, new)?;
    let mut message = format!("Added context {}", output::go_quote(&name));
    if let Ok(ctx) = config.context(&name) {
        message.push_str(&format!(" ({}, login method {})", ctx.pachd, ctx.method.as_str()));
    }
    message.push_str(&format!(" to {}.", config.path.display()));
    if config.active_context.as_deref() == Some(name.as_str()) {
        message.push_str(" It is the active context.");
    }
    if let (Some(store), Some(secret)) = (store, secret) {
        if let Err(source) = store.save_client_secret(&name, &secret).await {
            // Undone, so that the command either does all of its work or none of it.
            let context_kept = Config::remove_context(path, &name).is_err();
            return Err(Error::ClientSecret { context: name, source, context_kept });
        }
        message.push_str(&format!(" Its client secret is stored in the {} store, not in the file.", store.backend()));
    }
    Ok((config, message))
}

/// What `context import-pachctl` did, for `--json`.
#[derive(Default, serde::Serialize)]
struct ImportReport {
    from: String,
    config_path: String,
    imported: Vec<Imported>,
    skipped: Vec<Skipped>,
    active_context: Option<String>,
}

#[derive(serde::Serialize)]
struct Imported {
    name: String,
    pachd_address: String,
}

#[derive(serde::Serialize)]
struct Skipped {
    name: String,
    reason: String,
}

/// `context import-pachctl`: a context for each of pachctl's that pachagent can use. pachctl's file is only read.
async fn import_pachctl(g: &Globals, args: ImportPachctlArgs) -> Result<(), Error> {
    let from = args.from.unwrap_or_else(pachctl::config_path);
    // The message names the file and the fix; a broken pachctl config is a configuration error (exit 2).
    let theirs = pachctl::read(&from).map_err(|e| Error::Config(config::Error::BadValue(e.to_string())))?;
    let before = Config::load(&g.config)?;
    let mut report = ImportReport {
        from: from.display().to_string(),
        config_path: g.config.display().to_string(),
        ..Default::default()
    };
    for (name, address) in theirs.contexts {
        let skip = |reason: &str| Skipped { name: name.clone(), reason: reason.to_owned() };
        if before.contexts.contains_key(&name) {
            report.skipped.push(skip("a context with that name exists already"));
            continue;
        }
        if address.is_empty() {
            report.skipped.push(skip("it has no pachd_address"));
            continue;
        }
        let new = NewContext { pachd_address: address, sync_pachctl: args.sync_pachctl, ..Default::default() };
        match Config::add_context(&g.config, &name, new) {
            Ok(config) => {
                let pachd_address = config.context(&name).map(|c| c.pachd.to_string()).unwrap_or_default();
                report.imported.push(Imported { name, pachd_address });
            }
            // An unusable name or address (e.g. a unix:// socket): pachctl accepts more than pachagent does.
            Err(config::Error::BadValue(reason)) => report.skipped.push(skip(&reason)),
            Err(config::Error::Exists(_)) => report.skipped.push(skip("a context with that name exists already")),
            Err(e) => return Err(e.into()),
        }
    }
    let mut config = Config::load(&g.config)?;
    if before.active_context.is_none()
        && let Some(active) = theirs.active.filter(|a| report.imported.iter().any(|i| &i.name == a))
    {
        config = Config::use_context(&g.config, &active)?;
    }
    report.active_context = config.active_context.clone();
    let mut out = io::stdout();
    if g.json {
        let line = serde_json::to_string(&report).map_err(io::Error::other)?;
        output::context_changed(&mut out, &line)?;
    } else {
        for line in import_lines(&report) {
            output::context_changed(&mut out, &line)?;
        }
    }
    if !report.imported.is_empty()
        && let Some(warning) = reload_agent(&g.socket).await
    {
        output::warning(&mut io::stderr(), &warning)?;
    }
    Ok(())
}

/// The text of `context import-pachctl`: a sentence per context, then a summary.
fn import_lines(report: &ImportReport) -> Vec<String> {
    let total = report.imported.len() + report.skipped.len();
    if total == 0 {
        return vec![format!("No contexts in pachctl's config {}.", report.from)];
    }
    let mut lines = Vec::new();
    for i in &report.imported {
        lines.push(format!("Imported context {} ({}).", output::go_quote(&i.name), i.pachd_address));
    }
    for s in &report.skipped {
        lines.push(format!("Skipped {}: {}.", output::go_quote(&s.name), s.reason.trim_end_matches('.')));
    }
    let mut summary = format!(
        "Imported {} of {total} pachctl contexts from {} into {}.",
        report.imported.len(),
        report.from,
        report.config_path
    );
    if let Some(active) = &report.active_context {
        summary.push_str(&format!(" The active context is {}.", output::go_quote(active)));
    }
    lines.push(summary);
    lines
}

/// Deletes the client secret of a removed context; `Some(backend)` when there was one.
async fn delete_client_secret(config: &Config, name: &str) -> Result<Option<Backend>, crate::store::Error> {
    let store = Store::open(config.store, &config.keyring_service).await?;
    Ok(store.delete_client_secret(name).await?.then_some(store.backend()))
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
