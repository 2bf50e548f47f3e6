//! `pachagent dev`: the whole system on loopback — the embedded dev OpenID Provider, pachd-dev and an agent on a
//! private socket and config — logged in as a dev user, printing session events until Ctrl-C, then cleaned up
//! (the session revoked and its keyring entry deleted, the temporary directory removed).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::{DevArgs, Error, output};
use crate::client;
use crate::config::{Config, NewContext};
use crate::daemon::{self, ServeOptions};
use crate::devstack::idp::{self, AUDIENCE_SCOPE_PREFIX, DevIdp, DevIdpOptions, PACHAGENT_CLIENT_ID};
use crate::devstack::pachd::{self, PachdDev, PachdDevOptions};
use crate::proto::agent::{LoginMethod, LoginRequest, LogoutRequest, WatchRequest, login_event::Event};
use crate::secret::PachToken;

/// The one context `pachagent dev` configures.
const CONTEXT: &str = "dev";

/// How long the agent may take to start listening.
const AGENT_START: Duration = Duration::from_secs(15);

/// Runs the dev setup until Ctrl-C.
///
/// # Errors
/// [`Error::Dev`] when a part cannot start; agent errors as for other commands.
pub(super) async fn run(args: DevArgs, json: bool) -> Result<(), Error> {
    // The agent runs in this process and holds live tokens, as `serve` does: the same hardening.
    daemon::harden();
    // And so do its calls to the keyring, the identity provider and pachd: `cargo run -- dev` builds this program
    // alone, without the agent's helpers, and a development stack does not need to save the agent's memory.
    crate::net::answer_in_this_process();
    crate::store::keep_keyring_calls_in_process();
    let workdir = WorkDir::create().map_err(|e| failed("cannot create its temporary directory", e))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // The identity provider and pachd-dev, in this process.
    let grpc = pachd::bind("127.0.0.1:0").await.map_err(|e| failed("pachd-dev", e))?;
    let oidc = pachd::bind("127.0.0.1:0").await.map_err(|e| failed("pachd-dev", e))?;
    let oidc_addr = oidc.local_addr().map_err(|e| failed("pachd-dev", e))?;
    let callback = pachd::callback_url(oidc_addr);
    let idp_opts = DevIdpOptions {
        id_token_ttl: args.id_token_ttl,
        pachd_redirect_uris: vec![callback.clone()],
        ..DevIdpOptions::default()
    };
    let idp_listener = idp::bind(idp::DEFAULT_LISTEN).await.map_err(|e| failed("the dev identity provider", e))?;
    let idp = DevIdp::start(idp_opts, idp_listener).await.map_err(|e| failed("the dev identity provider", e))?;
    let pachd_opts = PachdDevOptions {
        issuer: Some(idp.issuer().to_owned()),
        client_secret: Some(idp.pachd_client_secret()),
        redirect_uri: Some(callback),
        root_token: Some(PachToken::new(uuid::Uuid::new_v4().simple().to_string())),
        ..PachdDevOptions::default()
    };
    let pachd_dev = PachdDev::new(pachd_opts, oidc_addr).map_err(|e| failed("pachd-dev", e))?;
    let pachd_address = format!("grpc://{}", grpc.local_addr().map_err(|e| failed("pachd-dev", e))?);
    let pachd_task = tokio::spawn(pachd_dev.serve(grpc, oidc, stopped(stop_rx.clone())));

    // The agent, with its own config and keyring service name.
    let config = workdir.path().join("config.toml");
    let socket = workdir.path().join("agent.sock");
    let service = format!("pachagent-dev-{}", std::process::id());
    std::fs::write(&config, format!("store = \"auto\"\nkeyring_service = \"{service}\"\n"))
        .map_err(|e| failed("cannot write the agent's config", e))?;
    let context = NewContext {
        pachd_address: pachd_address.clone(),
        issuer: Some(idp.issuer().to_owned()),
        client_id: Some(PACHAGENT_CLIENT_ID.to_owned()),
        scopes: vec![format!("{AUDIENCE_SCOPE_PREFIX}{}", pachd::DEFAULT_CLIENT_ID)],
        ..NewContext::default()
    };
    Config::add_context(&config, CONTEXT, context)?;
    let serve = ServeOptions { socket: socket.clone(), config: config.clone() };
    let agent_task = tokio::spawn(daemon::serve_until(serve, stopped(stop_rx.clone())));

    let result = session(&args, json, &socket, &config, &pachd_address, idp.issuer()).await;

    // Tear down in order: the agent first (it may still talk to pachd-dev), then pachd-dev, then the IdP.
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = agent_task.await {
        output::warning(&mut io::stderr(), &format!("the agent stopped with an error: {e}"))?;
    }
    let _ = pachd_task.await;
    idp.stop().await;
    drop(workdir);
    result
}

/// Logs in, shows how to use the agent from elsewhere, prints events until Ctrl-C, then logs out.
async fn session(
    args: &DevArgs,
    json: bool,
    socket: &Path,
    config: &Path,
    pachd_address: &str,
    issuer: &str,
) -> Result<(), Error> {
    let mut agent = wait_for_agent(socket).await?;
    let (mut out, mut err) = (io::stdout(), io::stderr());
    writeln!(err, "pachd-dev: {pachd_address}\nidentity provider: {issuer}\nagent socket: {}", socket.display())?;

    let req = LoginRequest {
        context: CONTEXT.into(),
        method: LoginMethod::Oidc.into(),
        browser_available: args.interactive,
        timeout_seconds: 300,
        ..Default::default()
    };
    let mut events = agent.login(req).await?.into_inner();
    let mut user = None;
    while let Some(event) = events.message().await? {
        match event.event {
            Some(Event::OpenUrl(open)) if args.interactive => {
                writeln!(err, "Log in as any email in the browser (opening it now):\n  {}", open.url)?;
                if let Err(e) = webbrowser::open(&open.url) {
                    output::browser_failed(&mut err, &e)?;
                }
            }
            Some(Event::OpenUrl(open)) => user = Some(tokio::spawn(play_user(open.url, args.email.clone()))),
            Some(Event::Done(done)) => output::login_done(&mut out, &mut err, &done, json)?,
            _ => {}
        }
    }
    if let Some(Ok(Err(e))) = match user {
        Some(task) => Some(task.await),
        None => None,
    } {
        return Err(Error::Dev(format!("the scripted login failed: {e}")));
    }

    let cli = cli_command();
    writeln!(
        err,
        "\nThe agent is logged in. From another terminal:\n  export PACHAGENT_SOCKET={}\n  export PACHAGENT_CONFIG={}\n  \
         {cli} whoami\n  {cli} status\n  {cli} exec -- sh -c 'echo \"pachctl would read $PACH_CONFIG\"'\n\
         With Python's clients (pip install ./python brings pachagent and pachyderm-sdk):\n  \
         python3 -c 'import pachagent; print(pachagent.client().auth.who_am_i().username)'\n  \
         {cli} exec -- python3 -c 'from pachyderm_sdk import Client; print(Client.from_config().auth.who_am_i().username)'\n\
         \nSession events follow; Ctrl-C stops everything and removes the session.",
        shell_quote(socket),
        shell_quote(config)
    )?;
    let mut watch = agent.watch(WatchRequest { context: String::new(), all_contexts: true }).await?.into_inner();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = watch.message() => match event? {
                Some(event) => output::watch_event(&mut out, &event, json)?,
                None => break,
            },
        }
    }
    writeln!(err, "\nStopping: logging out (the token is revoked and its keyring entry deleted)...")?;
    agent.logout(LogoutRequest { context: CONTEXT.into(), all: false }).await?;
    Ok(())
}

/// Plays the user at the dev IdP's login page, then follows the redirect to the agent's loopback callback.
async fn play_user(url: String, email: String) -> Result<(), String> {
    let url = url::Url::parse(&url).map_err(|e| format!("the login URL is not a URL: {e}"))?;
    let redirect = idp::complete_login(&url, &email).await.map_err(|e| e.to_string())?;
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let answer = http.get(redirect).send().await.map_err(|e| format!("cannot reach the agent's callback: {e}"))?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the agent's callback answered {}", answer.status()))
    }
}

async fn wait_for_agent(socket: &Path) -> Result<client::Client, Error> {
    let deadline = tokio::time::Instant::now() + AGENT_START;
    loop {
        match client::connect(socket).await {
            Ok(agent) => return Ok(agent),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Dev(format!("{what}: {e}"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.is_ok();
}

/// How another shell runs this installation's `pachagent`: `pachagent` when that is what its PATH finds, else its
/// path (after `cargo run`, the programs are in `target/` and not on PATH). `cargo run` builds only the program it
/// runs (`pachagent-cli`); when the front is not there, this program answers the same commands.
fn cli_command() -> String {
    let front = crate::programs::companion(crate::programs::FRONT).ok();
    let Some(exe) = front.or_else(|| std::env::current_exe().ok()) else { return "pachagent".to_owned() };
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("pachagent")).find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    match (found.and_then(|f| f.canonicalize().ok()), exe.canonicalize().ok()) {
        (Some(found), Some(exe)) if found == exe => "pachagent".to_owned(),
        _ => shell_quote(&exe),
    }
}

fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A private (0700) temporary directory for the agent's socket and config, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        // A name nobody can guess ahead, made with `create` (which fails on anything already there, a link
        // included), so another user cannot have planted it.
        let name = format!("pachagent-dev-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
