//! `pachd-dev`: a pachd-compatible auth server for development and tests.
//!
//! Parses flags, sets up logging on stderr, prints one ready line (`{"pachd":"grpc://…"}`) on stdout and serves
//! until SIGINT or SIGTERM. All behaviour lives in `pachagent::devstack::pachd`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pachagent::devstack::pachd::{self, PachdDev, PachdDevOptions};

/// A pachd-compatible auth server (auth_v2.API) for development and tests. Tokens live in memory.
#[derive(Debug, Parser)]
#[command(name = "pachd-dev", version)]
struct Cli {
    /// Address to serve gRPC on; port 0 picks a free port (printed in the ready line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// OIDC issuer whose ID tokens Authenticate accepts (discovery at <issuer>/.well-known/openid-configuration).
    #[arg(long)]
    issuer: Option<String>,
    /// Client id that must appear in an ID token's `aud`.
    #[arg(long, default_value = pachd::DEFAULT_CLIENT_ID)]
    client_id: String,
    /// Longest session Authenticate grants (pachd's SESSION_DURATION_MINUTES), e.g. 30d, 8h, 90s.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    session_ttl: Duration,
    /// File holding the root token; auth is then active from the start (like pachd's AUTH_ROOT_TOKEN).
    #[arg(long)]
    root_token_file: Option<PathBuf>,
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
    let opts =
        PachdDevOptions { issuer: cli.issuer, client_id: cli.client_id, session_ttl: cli.session_ttl, root_token };
    let dev = PachdDev::new(opts)?;
    let listener = pachd::bind(&cli.listen).await?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", pachd::ready_line(addr, dev.issuer()))?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, "pachd-dev is serving");
    dev.serve(listener, shutdown_signal()).await?;
    tracing::info!("pachd-dev stopped");
    Ok(())
}

/// Logs go to stderr (stdout carries only the ready line), `info` unless `RUST_LOG` says otherwise.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The HTTP/2 and HTTP crates can print request headers, where `authn-token` travels, at their most
    // verbose levels; they stay at `info` whatever RUST_LOG asks, so no token reaches the logs.
    for directive in ["h2=info", "hyper=info", "hyper_util=info", "tower=info", "tonic=info", "reqwest=info"] {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
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
