//! The agent process: takes the socket (or adopts the one systemd's socket activation hands it), opens the
//! secret store, restores sessions, serves the API until SIGINT/SIGTERM (or, with `--idle-exit`, until no
//! client and no session needs it), then drains and removes the socket it made.
//!
//! [`serve`] is what `pachagent serve` runs; [`run`] takes an already bound listener and a shutdown future so
//! that it can be driven from anywhere (the CLI, `pachagent dev`, tests). No RPC or token logic lives here.

mod handshake;
mod harden;
mod http2;
mod idle;
mod memory;
pub mod socket;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::AgentService;
use crate::config::{self, Config};
use crate::engine::SessionEngine;
use crate::proto::agent::agent_server::AgentServer;
use crate::store::{self, Store};

/// How long in-flight calls may take to finish after a stop signal before the agent exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The largest request message the agent decodes (tonic's default is 4 MiB). Every request is a context name,
/// a few flags and at most one token: an ID token with many groups stays under 16 KiB. Anything bigger is a
/// broken or hostile client, refused from the message's length prefix before the agent buffers it (tonic
/// answers OUT_OF_RANGE, "decoded message length too large").
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Calls one connection may have in flight at once. The CLI makes one or two; a program sharing one channel
/// among many tasks queues the rest on its side (HTTP/2 clients wait for a free stream), while a runaway client
/// cannot make the agent hold an unbounded number of calls for it.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The largest request header block: gRPC requests carry a path and a few short headers, well under 1 KiB.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How often an idle connection is pinged, and how long the answer may take before the connection is closed:
/// a client that died without closing its socket (or was frozen, e.g. SIGSTOP) stops holding its `Watch` stream
/// and buffers after about a minute and a half. Live clients answer pings in their HTTP/2 layer, even while
/// their program is not reading.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(20));

/// How `pachagent serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The socket to listen on (already resolved from `--socket`, `$PACHAGENT_SOCKET` or the default).
    pub socket: PathBuf,
    /// The configuration file (already resolved from `--config`, `$PACHAGENT_CONFIG` or the default).
    pub config: PathBuf,
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another agent holds the socket.
    #[error("another agent is running, pid {pid} (socket {})", socket.display())]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// The socket.
        socket: PathBuf,
    },
    /// The socket or its directory cannot be set up.
    #[error("cannot listen on {}: {reason}", socket.display())]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// Why, with the fix.
        reason: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The secret store cannot be used.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A helper program is not installed next to the agent.
    #[error(transparent)]
    Helper(#[from] crate::programs::CompanionError),
}

impl Error {
    /// The process exit code: 2 for a configuration problem, an agent already running or a missing helper, 1
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A missing program is not fixed by starting again (the service units do not restart on 2).
            Error::AlreadyRunning { .. }
            | Error::Config(_)
            | Error::Helper(_)
            | Error::Store(store::Error::Helper { .. }) => 2,
            _ => 1,
        }
    }
}

/// Hardens this process for holding live tokens: no core dumps, no ptrace by same-uid processes, owner-only
/// files (see `harden`). [`serve`] does it; so must anything else that runs the agent in-process (`dev`), and the
/// agent's helpers, which hold its tokens and keyring records for the length of a call.
pub fn harden() {
    harden::apply();
}

/// Runs the agent until SIGINT/SIGTERM. The caller has set up tracing.
///
/// # Errors
/// When the socket cannot be taken, the configuration is invalid or the secret store cannot be opened.
pub async fn serve(opts: ServeOptions, idle_exit: Option<Duration>) -> Result<(), Error> {
    harden();
    serve_until_idle(opts, stop_signal(), idle_exit).await
}

/// Runs the agent until `shutdown` completes: takes the socket, opens the store, restores sessions, serves.
/// `pachagent dev` runs it in-process next to its own IdP and pachd.
///
/// # Errors
/// As [`serve`].
pub async fn serve_until(opts: ServeOptions, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    serve_until_idle(opts, shutdown, None).await
}

/// As [`serve_until`], and with `idle_exit` the agent also stops by itself once no client has been connected
/// for that long and no session has a renewal, warning or expiry due within it (`pachagent serve
/// --idle-exit`, for socket activation). The sessions stay in the keyring for the next start.
///
/// # Errors
/// As [`serve`].
pub async fn serve_until_idle(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
    idle_exit: Option<Duration>,
) -> Result<(), Error> {
    let config = Config::load(&opts.config)?;
    crate::net::locate()?;
    let (listener, guard, activated) = match socket::activated(&opts.socket)? {
        Some((listener, guard)) => (listener, guard, true),
        None => {
            let (listener, guard) = socket::bind(&opts.socket)?;
            (listener, guard, false)
        }
    };
    // A stop asked for while the store opens or sessions are restored (each can wait on a frozen keyring for
    // seconds) is obeyed at once; what is stored stays for the next start.
    tokio::pin!(shutdown);
    let store = tokio::select! {
        store = Store::open_for_agent(config.store, &config.keyring_service) => store?,
        () = &mut shutdown => return stopped_while_starting(),
    };
    let local = listener.local_addr().ok().and_then(|a| a.as_pathname().map(std::path::Path::to_owned));
    info!(
        socket = %local.as_deref().unwrap_or(&opts.socket).display(),
        socket_activated = activated,
        config = %opts.config.display(),
        store = store.backend().name(),
        pid = std::process::id(),
        "agent listening"
    );
    let engine = SessionEngine::new(config, store);
    tokio::select! {
        () = engine.restore() => {}
        () = &mut shutdown => return stopped_while_starting(),
    }
    let verifier = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { engine.verify_all().await })
    };
    let reloader = tokio::spawn(reload_on_hangup(Arc::clone(&engine)));
    let resyncer = tokio::spawn(Arc::clone(&engine).resync_task());
    let scheduler = tokio::spawn(Arc::clone(&engine).schedule_task());
    let activity = idle::Activity::new();
    let idle = {
        let (activity, engine) = (activity.clone(), Arc::clone(&engine));
        async move {
            match idle_exit {
                Some(window) => idle::idle(activity, engine, window).await,
                None => std::future::pending().await,
            }
        }
    };
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = idle => {}
        }
    };
    let result = run_tracked(listener, engine, stop, activity).await;
    verifier.abort();
    reloader.abort();
    resyncer.abort();
    scheduler.abort();
    drop(guard);
    info!("agent stopped");
    result
}

/// What the agent says and returns when a stop came before it served.
fn stopped_while_starting() -> Result<(), Error> {
    info!("agent stopped while starting");
    Ok(())
}

/// Serves the API on `listener` until `shutdown` completes, then lets in-flight calls finish (up to a deadline)
/// and ends every `Watch` stream.
///
/// # Errors
/// None today: the server's connections fail one by one, never the whole server; the `Result` is for callers that
/// treat a stopped agent like any other.
pub async fn run(
    listener: UnixListener,
    engine: Arc<SessionEngine>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_tracked(listener, engine, shutdown, idle::Activity::new()).await
}

/// As [`run`], counting client connections in `activity`.
async fn run_tracked(
    listener: UnixListener,
    engine: Arc<SessionEngine>,
    shutdown: impl Future<Output = ()>,
    activity: idle::Activity,
) -> Result<(), Error> {
    use tokio_stream::StreamExt;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<AgentServer<AgentService>>().await;
    let health_service = health_service.max_decoding_message_size(MAX_REQUEST_BYTES);
    let service =
        AgentServer::new(AgentService::new(engine, stop_rx.clone())).max_decoding_message_size(MAX_REQUEST_BYTES);
    let mut drained = stop_rx.clone();
    let _trimmer = memory::Trimmer::start(activity.clone());
    let connections = handshake::http2_only(socket::same_user_connections(listener));
    let routes = tonic::service::Routes::new(health_service).add_service(service).prepare();
    let limits = http2::Limits {
        max_streams: MAX_STREAMS_PER_CONNECTION,
        max_header_list_bytes: MAX_HEADER_LIST_BYTES,
        keepalive: KEEPALIVE,
    };
    let server = http2::serve(
        routes,
        connections.map(move |accepted| accepted.map(|s| activity.track(s))),
        &limits,
        async move {
            let _ = drained.wait_for(|stop| *stop).await;
        },
    );
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => return Ok(()),
        () = shutdown => info!("stopping: finishing in-flight calls"),
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_DEADLINE, server).await.is_err() {
        warn!(deadline = ?DRAIN_DEADLINE, "calls still running at the drain deadline; stopping anyway");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
fn stop_signal() -> impl Future<Output = ()> {
    // On Unix, registered now, not when first polled: the socket answers before the serving loop polls this, and
    // a SIGTERM sent as soon as it answers (a service manager stopping a unit that just started) must stop the
    // agent cleanly, not kill it with the signal's default action.
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP re-reads the configuration, as daemons conventionally do.
async fn reload_on_hangup(engine: Arc<SessionEngine>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            if let Err(e) = engine.reload_config().await {
                warn!(error = %e, "SIGHUP: configuration not reloaded; the previous one stays in force");
            }
        }
    }
    #[cfg(not(unix))]
    drop(engine);
}
