//! `pachagent doctor`: checks, one by one, what a working login needs on this machine and at the context's
//! cluster and identity provider, and says what to fix.
//!
//! It reads the configuration, dials pachd and the provider, binds the redirect port for an instant, opens the
//! keyring and looks at the agent's socket. It changes nothing, needs no running agent, and keeps no token
//! (the pachd check sends none). Results go to [`super::output::doctor`].

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::commands::Globals;
use super::output::{self, Check, CheckOutcome};
use crate::config::{self, Config, Context, Method};
use crate::oidc::{self, Provider, ProviderSettings};
use crate::pachd::{self, PachdClient};
use crate::secret::PachToken;
use crate::store::{Backend, Store};

/// A clock further off than this breaks ID-token checks (`iat`/`exp` leeway is usually 30 s to a minute).
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How long the network checks may take each; doctor is run when something is already wrong.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check that applies, prints them, and exits 0 when none failed and 1 otherwise.
pub(super) async fn run(g: &Globals) -> ExitCode {
    let checks = checks(g).await;
    let failed = checks.iter().any(|c| c.outcome == CheckOutcome::Fail);
    if let Err(e) = output::doctor(&mut std::io::stdout(), &checks, g.json)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = output::error(&mut std::io::stderr(), &e);
        return ExitCode::FAILURE;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), outcome: CheckOutcome::Pass, detail: detail.into() }
}

fn fail(name: &str, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), outcome: CheckOutcome::Fail, detail: detail.into() }
}

fn warn(name: &str, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), outcome: CheckOutcome::Warn, detail: detail.into() }
}

async fn checks(g: &Globals) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(&g.config) {
        Ok(config) => {
            checks.push(pass("config", format!("{} parses", g.config.display())));
            Some(config)
        }
        Err(e) => {
            checks.push(fail("config", e.to_string()));
            None
        }
    };
    if let Some(config) = &config {
        match context(config, &g.context) {
            Ok(ctx) => {
                checks.push(pass("context", format!("{:?} (pachd {})", ctx.name, ctx.pachd)));
                checks.push(pachd_check(ctx).await);
                if matches!(ctx.method, Method::Oidc | Method::Device) {
                    checks.extend(provider_checks(ctx).await);
                }
            }
            Err(message) => checks.push(fail("context", message)),
        }
        checks.push(keyring_check(config).await);
    }
    checks.push(agent_check(&g.socket).await);
    checks
}

/// The context named by --context, else the active one.
fn context<'a>(config: &'a Config, name: &str) -> Result<&'a Context, String> {
    let name = if name.is_empty() {
        config.active_context.as_deref().ok_or_else(|| {
            if config.contexts.is_empty() {
                "no context is configured: add one with pachagent context add NAME --pachd ADDRESS".to_owned()
            } else {
                "no context is active: choose one with pachagent context use NAME, or pass --context".to_owned()
            }
        })?
    } else {
        name
    };
    config.context(name).map_err(|e| e.to_string())
}

/// WhoAmI without a token: an activated pachd answers Unauthenticated ("no authentication token"), one with
/// auth off answers Unimplemented ("not activated").
async fn pachd_check(ctx: &Context) -> Check {
    const NAME: &str = "pachd";
    let client = match PachdClient::new(&ctx.pachd, ctx.ca_file.as_deref()) {
        Ok(client) => client,
        Err(e) => return fail(NAME, e.to_string()),
    };
    let answer = tokio::time::timeout(NETWORK_TIMEOUT, client.who_am_i(&PachToken::new(String::new()))).await;
    match answer {
        Err(_) => fail(NAME, format!("pachd at {} did not answer within {NETWORK_TIMEOUT:?}", ctx.pachd)),
        Ok(Err(pachd::Error::TokenRejected { .. })) => {
            pass(NAME, format!("{} answers and has auth activated", ctx.pachd))
        }
        Ok(Ok(_)) => fail(NAME, format!("{} answered WhoAmI without a token: is auth activated there?", ctx.pachd)),
        Ok(Err(e)) => fail(NAME, e.to_string()),
    }
}

async fn provider_checks(ctx: &Context) -> Vec<Check> {
    let mut checks = Vec::new();
    let (Some(issuer), Some(client_id)) = (&ctx.issuer, &ctx.client_id) else {
        checks.push(fail(
            "issuer",
            format!(
                "the context logs in with method {} but has no issuer or client id: set them with pachagent context add",
                ctx.method.as_str()
            ),
        ));
        return checks;
    };
    let settings = ProviderSettings {
        issuer: issuer.clone(),
        issuer_url: ctx.issuer_url.clone(),
        client_id: client_id.clone(),
        client_secret: None,
        ca_file: ctx.issuer_ca_file.clone(),
        scopes: ctx.all_scopes(),
    };
    let base = ctx.issuer_url.as_deref().unwrap_or(issuer).trim_end_matches('/').to_owned();
    let discovery_url = format!("{base}/.well-known/openid-configuration");
    let provider = match tokio::time::timeout(NETWORK_TIMEOUT, Provider::discover(settings)).await {
        Err(_) => Err(format!("{discovery_url} did not answer within {NETWORK_TIMEOUT:?}")),
        Ok(Ok(provider)) => Ok(provider),
        Ok(Err(oidc::Error::BadResponse { url, reason })) if url != discovery_url => {
            checks.push(pass("issuer", format!("{discovery_url} names the issuer {issuer:?} exactly")));
            checks.push(fail("signing keys", format!("{url}: {reason}")));
            return checks;
        }
        Ok(Err(e)) => Err(e.to_string()),
    };
    let provider = match provider {
        Ok(provider) => provider,
        Err(message) => {
            checks.push(fail("issuer", message));
            return checks;
        }
    };
    checks.push(pass("issuer", format!("{discovery_url} names the issuer {issuer:?} exactly")));
    checks.push(pass("signing keys", "the provider publishes a non-empty key set (JWKS)"));
    checks.push(match ctx.method {
        Method::Device if !provider.supports_device_flow() => fail(
            "login method",
            "the context uses the device login, but the provider offers no device_authorization_endpoint: use \
             --method oidc",
        ),
        method => pass("login method", format!("the provider supports the {} login", method.as_str())),
    });
    if ctx.method == Method::Oidc {
        checks.push(redirect_check(ctx));
    }
    checks.push(clock_check(&discovery_url, ctx.issuer_ca_file.as_deref()).await);
    checks
}

/// The first free configured port, and the exact redirect URI to register at the provider.
fn redirect_check(ctx: &Context) -> Check {
    const NAME: &str = "redirect";
    let host = ctx.redirect_host.as_str();
    let path = oidc::callback::CALLBACK_PATH;
    if ctx.redirect_ports.is_empty() {
        return pass(
            NAME,
            format!("a random loopback port; register http://{host}{path} with any port (RFC 8252 loopback)"),
        );
    }
    let taken: Vec<u16> = ctx
        .redirect_ports
        .iter()
        .copied()
        .take_while(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
        .collect();
    match ctx.redirect_ports.get(taken.len()) {
        Some(port) => {
            let busy = if taken.is_empty() { String::new() } else { format!(" ({taken:?} in use)") };
            pass(NAME, format!("port {port} is free{busy}; register http://{host}:{port}{path} at the provider"))
        }
        None => fail(
            NAME,
            format!(
                "every redirect port is in use ({taken:?}): stop what listens there, or add another --redirect-port \
                 (and register it)"
            ),
        ),
    }
}

/// Compares this machine's clock with the provider's HTTP `Date`.
async fn clock_check(url: &str, ca_file: Option<&Path>) -> Check {
    const NAME: &str = "clock";
    let client = match http_client(ca_file) {
        Ok(client) => client,
        Err(e) => return fail(NAME, e),
    };
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(e) => return fail(NAME, format!("cannot ask {url} for the time: {e}")),
    };
    let Some(date) = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
    else {
        return warn(NAME, "the provider sends no Date header: cannot compare clocks");
    };
    let skew = (Utc::now() - date.with_timezone(&Utc)).abs().to_std().unwrap_or_default();
    // `Date` has whole seconds: allow the truncation on top of the limit.
    if skew > MAX_CLOCK_SKEW + Duration::from_secs(1) {
        fail(
            NAME,
            format!(
                "this machine's clock is {} off the provider's: ID tokens will be refused; sync the clock (NTP)",
                humantime::format_duration(Duration::from_secs(skew.as_secs()))
            ),
        )
    } else {
        pass(NAME, format!("within {MAX_CLOCK_SKEW:?} of the provider's"))
    }
}

fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(NETWORK_TIMEOUT).redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM CA file: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("cannot set up HTTPS: {e}"))
}

async fn keyring_check(config: &Config) -> Check {
    const NAME: &str = "keyring";
    let store = match Store::open(config.store, &config.keyring_service).await {
        Ok(store) => store,
        Err(e) => return fail(NAME, e.to_string()),
    };
    match store.probe().await {
        Ok(()) => {}
        // The error says how to unlock this backend; "does not answer" would send the user after the wrong thing.
        Err(e @ crate::store::Error::Locked { .. }) => {
            return fail(NAME, format!("{e}; sessions cannot be read or saved until then"));
        }
        Err(e) => return fail(NAME, format!("the {} store does not answer: {e}", store.backend())),
    }
    match store.backend() {
        Backend::Keyutils => warn(
            NAME,
            "the kernel keyutils store works, but keeps sessions only until reboot: log in again after one, or use \
             store = \"secret-service\"",
        ),
        backend => pass(NAME, format!("the {backend} store answers and keeps sessions across reboots")),
    }
}

/// The socket's owner and mode, and whether the agent behind it runs as this user.
async fn agent_check(socket: &Path) -> Check {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    const NAME: &str = "agent";
    let uid = config::current_uid();
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(_) => return pass(NAME, format!("not running (no {}); pachagent login starts it", socket.display())),
    };
    if !meta.file_type().is_socket() {
        return fail(NAME, format!("{} is not a socket: move it away", socket.display()));
    }
    if meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return fail(
            NAME,
            format!(
                "{} belongs to uid {} with mode {:o}: it must be yours and 0600",
                socket.display(),
                meta.uid(),
                meta.permissions().mode() & 0o777
            ),
        );
    }
    if let Some(dir) = socket.parent()
        && let Ok(dir_meta) = std::fs::metadata(dir)
        && dir_meta.uid() == uid
        && dir_meta.permissions().mode() & 0o077 != 0
        && dir_meta.permissions().mode() & 0o1000 == 0
    {
        return fail(NAME, format!("{} is open to others: chmod 700 it", dir.display()));
    }
    match tokio::net::UnixStream::connect(socket).await {
        Err(_) => pass(NAME, format!("not running (a stale {} is replaced at start)", socket.display())),
        Ok(stream) => match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => {
                let pid = cred.pid().map_or_else(String::new, |p| format!(" (pid {p})"));
                pass(NAME, format!("running as you{pid} on {}, mode 0600", socket.display()))
            }
            Ok(cred) => {
                fail(NAME, format!("the process on {} runs as uid {}, not as you", socket.display(), cred.uid()))
            }
            Err(e) => fail(NAME, format!("cannot tell who serves {}: {e}", socket.display())),
        },
    }
}
