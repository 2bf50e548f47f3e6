//! `pachd-dev`: a pachd-compatible auth server for development and tests.
//!
//! Parses flags, sets up logging on stderr, starts the embedded dev IdP unless an issuer is given (or
//! `--no-issuer`), prints one ready line (`{"pachd":"grpc://…","issuer":"http://…","oidc_callback":"http://…"}`)
//! on stdout and serves until SIGINT or SIGTERM. All behaviour lives in `pachagent::devstack`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pachagent::devstack::idp::{self, DevIdp, DevIdpOptions};
use pachagent::devstack::pachd::{self, PachdDev, PachdDevOptions};

/// A pachd-compatible auth server (auth_v2.API) for development and tests. Tokens live in memory.
///
/// Without --issuer it starts its own dev OpenID Provider on loopback (login page asking for an email) and uses
/// it as the issuer, with pachd's confidential client registered.
#[derive(Debug, Parser)]
#[command(name = "pachd-dev", version)]
struct Cli {
    /// Address to serve gRPC on; port 0 picks a free port (printed in the ready line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Address of the OIDC HTTP server (pachd's OIDC port: /authorization-code/callback).
    #[arg(long, default_value = "127.0.0.1:0")]
    oidc_listen: String,
    /// OIDC issuer for Authenticate and GetOIDCLogin (discovery at <issuer>/.well-known/openid-configuration).
    /// Without it, pachd-dev starts its embedded dev IdP.
    #[arg(long, conflicts_with = "no_issuer")]
    issuer: Option<String>,
    /// Run with no OIDC issuer at all (no dev IdP): OIDC calls answer "OIDC ID provider configuration not found".
    #[arg(long)]
    no_issuer: bool,
    /// pachd's OAuth client id: the audience ID tokens must name, and the client of pachctl's login.
    #[arg(long, default_value = pachd::DEFAULT_CLIENT_ID)]
    client_id: String,
    /// File holding pachd's OAuth client secret, for exchanging codes at the callback. With the embedded IdP it
    /// becomes the pachd client's secret; without the file one is generated.
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Redirect URI put into login URLs [default: this server's http://<oidc-listen>/authorization-code/callback].
    #[arg(long)]
    oidc_redirect_uri: Option<String>,
    /// Scopes of pachctl's login, comma-separated (pachd's default: email,profile,groups,openid).
    #[arg(long, value_delimiter = ',', default_values_t = pachd::DEFAULT_SCOPES.map(String::from))]
    scopes: Vec<String>,
    /// Longest session Authenticate grants (pachd's SESSION_DURATION_MINUTES), e.g. 30d, 8h, 90s.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    session_ttl: Duration,
    /// File holding the root token; auth is then active from the start (like pachd's AUTH_ROOT_TOKEN).
    #[arg(long)]
    root_token_file: Option<PathBuf>,
    /// How long a GetOIDCLogin state lives (pachd: 3 minutes); shortened by tests.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration, hide = true)]
    oidc_state_ttl: Duration,
    /// Address of the embedded dev IdP (only without --issuer).
    #[arg(long, default_value = idp::DEFAULT_LISTEN)]
    idp_listen: String,
    /// Lifetime of the dev IdP's ID tokens, e.g. 10m, 90s.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    id_token_ttl: Duration,
    /// Serve gRPC over TLS with this PEM certificate (chain, leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Lifetime of the dev IdP's refresh tokens (each refresh issues a new one), e.g. 24h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    refresh_token_ttl: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pachd-dev: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let root_token = cli.root_token_file.as_deref().map(pachd::read_root_token_file).transpose()?;
    let client_secret = cli.client_secret_file.as_deref().map(pachd::read_client_secret_file).transpose()?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(pachd::ServerTls::from_files(cert, key)?),
        _ => None,
    };
    let grpc = pachd::bind(&cli.listen).await?;
    let oidc = pachd::bind(&cli.oidc_listen).await?;
    let oidc_addr = oidc.local_addr()?;
    let redirect_uri = cli.oidc_redirect_uri.unwrap_or_else(|| pachd::callback_url(oidc_addr));
    let dev_idp = match (&cli.issuer, cli.no_issuer) {
        (None, false) => {
            let opts = DevIdpOptions {
                id_token_ttl: cli.id_token_ttl,
                refresh_token_ttl: cli.refresh_token_ttl,
                pachd_client_id: cli.client_id.clone(),
                pachd_client_secret: client_secret.clone(),
                pachd_redirect_uris: vec![redirect_uri.clone()],
                ..DevIdpOptions::default()
            };
            Some(DevIdp::start(opts, idp::bind(&cli.idp_listen).await?).await?)
        }
        _ => None,
    };
    let opts = PachdDevOptions {
        issuer: cli.issuer.or_else(|| dev_idp.as_ref().map(|i| i.issuer().to_owned())),
        client_id: cli.client_id,
        client_secret: client_secret.or_else(|| dev_idp.as_ref().map(DevIdp::pachd_client_secret)),
        redirect_uri: Some(redirect_uri),
        scopes: cli.scopes,
        oidc_state_ttl: cli.oidc_state_ttl,
        session_ttl: cli.session_ttl,
        root_token,
        tls,
    };
    let dev = PachdDev::new(opts, oidc_addr)?;
    let addr = grpc.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", pachd::ready_line(addr, dev.tls(), dev.issuer(), &pachd::callback_url(oidc_addr)))?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, oidc = %oidc_addr, "pachd-dev is serving");
    dev.serve(grpc, oidc, shutdown_signal()).await?;
    if let Some(dev_idp) = dev_idp {
        dev_idp.stop().await;
    }
    tracing::info!("pachd-dev stopped");
    Ok(())
}

/// Logs go to stderr (stdout carries only the ready line), `info` unless `RUST_LOG` says otherwise; transport
/// crates never log past `info` (see `pachagent::logging`).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, fmt, registry};
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(pachagent::logging::log_filter("info"));
    registry().with(layer).init();
}

/// Completes on SIGINT or SIGTERM (Ctrl-C elsewhere), so the server drains and exits 0.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only SIGINT stops pachd-dev");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
