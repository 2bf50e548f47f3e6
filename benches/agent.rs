//! The agent benchmark: `cargo bench --bench agent`.
//!
//! It starts `pachd-dev` (with its embedded dev IdP) and a release-built agent (`pachagentd`) on a private socket
//! and config, logs in non-interactively as `pachagent dev` does, then measures in one run:
//!
//! 1. the floor: a raw Unix-socket round trip between two processes, with request and reply as large as a
//!    `GetToken` exchange's messages (no gRPC);
//! 2. `WhoAmI` and `GetToken` latency at concurrency 1 (and `GetToken` each on a new connection, as a command
//!    makes it), and `WhoAmI` throughput and p99 at 16 and 64 clients (one connection each);
//! 3. `pachagent whoami` and `pachagent token` as processes (wall time), interleaved with runs of the process
//!    floor (`benches/agent/process_floor.rs`: a standard-library program that connects to a Unix socket, sends a
//!    request as large as `GetToken`'s, reads the reply and exits), so that each is also a ratio to the least a
//!    process can do;
//! 4. the agent's RSS at idle and after a million calls, and its CPU ticks over 30 s idle with a session;
//! 5. when Debian's `oidc-agent` is installed (as root the benchmark installs `oidc-agent-cli` itself), the same
//!    with oidc-agent holding a token from the same dev IdP: `oidc-token` timed in turns with `pachagent token`,
//!    and its processes' RSS beside the agent's (`benches/agent/oidc_agent.rs`);
//! 6. single flight: 1000 concurrent `GetToken` calls that all need a renewal, and the refresh grants the IdP
//!    saw for them.
//!
//! It prints a table (each figure with its ratio to the floor) and writes the same figures as one flat JSON
//! object to `target/bench/agent.json`. The session is logged out and every child process killed at the end,
//! also when a step fails.

// A benchmark aborting on a broken setup is intended; errors still travel as `Result`s where it is easy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pachagent::client::{self, Client};
use pachagent::config::{Config, NewContext};
use pachagent::devstack::idp::{self, AUDIENCE_SCOPE_PREFIX, DEV_EMAIL, PACHAGENT_CLIENT_ID};
use pachagent::devstack::pachd::DEFAULT_CLIENT_ID;
use pachagent::proto::agent::{
    GetTokenRequest, GetTokenResponse, LoginMethod, LoginRequest, LogoutRequest, WhoAmIRequest, login_event::Event,
};
use prost::Message as _;

#[path = "agent/oidc_agent.rs"]
mod oidc_agent;
use oidc_agent::OidcAgent;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The one context the benchmark configures.
const CONTEXT: &str = "bench";
/// Lifetime of the dev IdP's ID tokens, which bounds the Pachyderm session: far longer than the run, so that
/// only the burst triggers a renewal.
const ID_TOKEN_TTL: &str = "10m";
/// Round trips of the floor.
const FLOOR_CALLS: usize = 20_000;
/// Round trips (and calls at concurrency 1) made before timing starts.
const WARM_UP: usize = 1000;
/// Calls at concurrency 1, per RPC.
const C1_CALLS: usize = 20_000;
/// `GetToken` calls each on a new connection.
const NEW_CONNECTION_CALLS: usize = 2000;
/// Calls at concurrency 16.
const C16_CALLS: usize = 100_000;
/// Calls at concurrency 64.
const C64_CALLS: usize = 200_000;
/// Calls before the second RSS reading.
const MILLION: usize = 1_000_000;
/// Runs of each CLI command.
const CLI_RUNS: usize = 200;
/// The orders in which the four processes run, one per turn (whoami, token, the process floor, oidc-token): in
/// these four, each follows each other once (a Williams square), so that none always runs right after the same
/// one. A program run right after `oidc-token` competes with oidc-agent finishing its answer; in one fixed order,
/// `whoami` (run after it) came out a tenth of the floor slower than `token`, which a separate harness timed alike.
const TURN_ORDERS: [[usize; 4]; 4] = [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]];
/// The idle window for CPU ticks.
const IDLE: Duration = Duration::from_secs(30);
/// Concurrent callers in the single-flight burst.
const BURST: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--echo-server") {
        if let Err(e) = echo_server(&args[2..]) {
            eprintln!("echo server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = match runtime {
        Ok(rt) => rt.block_on(bench()),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        eprintln!("agent bench failed: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The run

async fn bench() -> Result<()> {
    let bins = Binaries::find()?;
    let mut stack = Stack::start(&bins).await?;
    let outcome = measure(&bins, &mut stack).await;
    // Cleanup happens whether or not the measurements succeeded: the session is revoked and its keyring entry
    // deleted by the agent, then the children die with `stack`.
    if let Err(e) = stack.logout().await {
        eprintln!("warning: logout failed: {e}");
    }
    drop(stack);
    let figures = outcome?;
    figures.print();
    let path = bins.target_dir.join("bench").join("agent.json");
    figures.write_json(&path)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

async fn measure(bins: &Binaries, stack: &mut Stack) -> Result<Figures> {
    let mut f = Figures::default();
    let agent_pid = stack.agent.id();
    let agent = stack.wait_ready().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    helpers_gone(agent_pid).await?;
    f.rss_start_mb = rss_mb(agent_pid)?;
    let mut agent = stack.login(agent).await?;
    // The C agent beside it, with a token from the same provider.
    // It is a comparison, not the subject: when it cannot be set up the run goes on without its rows, and says why.
    let oidc_agent = match OidcAgent::ensure_installed() {
        true => OidcAgent::start(&stack.issuer)
            .await
            .inspect_err(|e| eprintln!("warning: oidc-agent could not be set up ({e}): no side-by-side rows"))
            .ok(),
        false => None,
    };
    let counters_url = format!("{}/dev/counters", stack.issuer);

    // A fresh token's lifetime, as seen right after login.
    let first = agent
        .get_token(GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: 0, ..Default::default() })
        .await?
        .into_inner();
    let lifetime = seconds_left(&first).ok_or("the session never expires: the burst cannot force a renewal")?;

    // Idle: RSS logged in with no calls yet (`rss_start_mb` was before the login), then CPU over 30 s with the
    // session active.
    drop(agent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    helpers_gone(agent_pid).await?;
    (f.rss_idle_mb, f.rss_idle_anon_mb) = (rss_mb(agent_pid)?, anon_mb(agent_pid)?);
    f.oidc_agent_rss_mb = match &oidc_agent {
        Some(oidc) => oidc.rss_mb()?,
        None => f64::NAN,
    };
    eprintln!("idle RSS {:.2} MB; measuring idle CPU for {}s...", f.rss_idle_mb, IDLE.as_secs());
    let ticks0 = cpu_ticks(agent_pid)?;
    tokio::time::sleep(IDLE).await;
    f.idle_cpu_ticks_30s = (cpu_ticks(agent_pid)? - ticks0) as f64;

    // The floor, sized like a GetToken exchange (gRPC's 5-byte message prefix included).
    let request =
        GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: 0, ..Default::default() }.encoded_len() + 5;
    let reply = first.encoded_len() + 5;
    eprintln!("floor: {request}-byte request, {reply}-byte reply, {FLOOR_CALLS} round trips...");
    let floor = floor(&stack.dir, request, reply)?;
    f.floor_p50_us = percentile_us(&floor, 0.50);
    f.floor_p99_us = percentile_us(&floor, 0.99);

    // Concurrency 1.
    let mut calls = 0usize;
    eprintln!("c1: {C1_CALLS} WhoAmI, {C1_CALLS} GetToken...");
    let lat = one_client(&stack.socket, Rpc::WhoAmI, C1_CALLS).await?;
    calls += WARM_UP + C1_CALLS;
    (f.whoami_c1_p50_us, f.whoami_c1_p99_us, f.whoami_c1_p999_us) =
        (percentile_us(&lat, 0.50), percentile_us(&lat, 0.99), percentile_us(&lat, 0.999));
    let lat = one_client(&stack.socket, Rpc::GetToken, C1_CALLS).await?;
    calls += WARM_UP + C1_CALLS;
    (f.gettoken_c1_p50_us, f.gettoken_c1_p99_us, f.gettoken_c1_p999_us) =
        (percentile_us(&lat, 0.50), percentile_us(&lat, 0.99), percentile_us(&lat, 0.999));

    eprintln!("{NEW_CONNECTION_CALLS} GetToken on a new connection each...");
    let lat = new_connection_calls(&stack.socket, NEW_CONNECTION_CALLS).await?;
    calls += WARM_UP / 10 + NEW_CONNECTION_CALLS;
    (f.gettoken_new_conn_p50_us, f.gettoken_new_conn_p99_us) = (percentile_us(&lat, 0.50), percentile_us(&lat, 0.99));

    // Concurrency 16 and 64, one connection per client.
    for (clients, total) in [(16, C16_CALLS), (64, C64_CALLS)] {
        eprintln!("c{clients}: {total} WhoAmI...");
        let conns = connections(&stack.socket, clients).await?;
        let (lat, elapsed) = load(&conns, Rpc::WhoAmI, total).await?;
        calls += total;
        let rps = total as f64 / elapsed.as_secs_f64();
        if clients == 16 {
            (f.whoami_c16_rps, f.whoami_c16_p99_us) = (rps, percentile_us(&lat, 0.99));
        } else {
            (f.whoami_c64_rps, f.whoami_c64_p99_us) = (rps, percentile_us(&lat, 0.99));
        }
    }
    // Up to a million calls, half of them GetToken, for the second RSS reading.
    let conns = connections(&stack.socket, 16).await?;
    let rest = MILLION.saturating_sub(calls);
    eprintln!("{rest} more calls (c16, WhoAmI and GetToken) up to {MILLION}...");
    let (_, e1) = load(&conns, Rpc::GetToken, rest / 2).await?;
    let (_, e2) = load(&conns, Rpc::WhoAmI, rest - rest / 2).await?;
    f.gettoken_c16_rps = (rest / 2) as f64 / e1.as_secs_f64();
    drop(conns);
    tokio::time::sleep(Duration::from_secs(1)).await;
    (f.rss_after_1m_mb, f.rss_after_1m_anon_mb) = (rss_mb(agent_pid)?, anon_mb(agent_pid)?);
    eprintln!("RSS after {MILLION} calls {:.2} MB (last stretch {:.1}s)", f.rss_after_1m_mb, e2.as_secs_f64());

    // The CLI as a process, in turns with the process floor.
    eprintln!(
        "CLI: {CLI_RUNS} runs each of `pachagent whoami`, `pachagent token`, the process floor and oidc-token..."
    );
    let [whoami, token, process_floor, oidc_token] = process_runs(bins, stack, request, reply, oidc_agent.as_ref())?;
    (f.oidc_token_median_ms, f.oidc_token_p90_ms) = (percentile_ms(&oidc_token, 0.5), percentile_ms(&oidc_token, 0.9));
    (f.cli_whoami_median_ms, f.cli_whoami_p90_ms) = (percentile_ms(&whoami, 0.5), percentile_ms(&whoami, 0.9));
    (f.cli_token_median_ms, f.cli_token_p90_ms) = (percentile_ms(&token, 0.5), percentile_ms(&token, 0.9));
    (f.process_floor_median_ms, f.process_floor_p90_ms) =
        (percentile_ms(&process_floor, 0.5), percentile_ms(&process_floor, 0.9));

    // Single flight: every caller asks for more validity than is left but less than a fresh token has.
    let mut agent = connect(&stack.socket).await?;
    let now = agent
        .get_token(GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: 0, ..Default::default() })
        .await?
        .into_inner();
    let left = seconds_left(&now).ok_or("the session lost its expiry")?;
    if lifetime <= left + 2 {
        return Err(format!("too little of the token used ({left}s of {lifetime}s left) to force a renewal").into());
    }
    let min_valid = left + (lifetime - left) / 2;
    eprintln!("burst: {BURST} GetToken{{min_valid_seconds: {min_valid}}} with {left}s left of {lifetime}s...");
    let before = refresh_grants(&counters_url).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(BURST);
    let conns = Arc::new(connections(&stack.socket, 64).await?);
    for i in 0..BURST {
        let conns = Arc::clone(&conns);
        tasks.push(tokio::spawn(async move {
            let mut c = conns[i % conns.len()].clone();
            c.get_token(GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: min_valid, ..Default::default() })
                .await
        }));
    }
    let mut failures = 0usize;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(_))) {
            failures += 1;
        }
    }
    f.burst_ms = started.elapsed().as_secs_f64() * 1e3;
    f.burst_refreshes = (refresh_grants(&counters_url).await? - before) as f64;
    f.burst_failures = failures as f64;
    let after = agent
        .get_token(GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: 0, ..Default::default() })
        .await?
        .into_inner();
    eprintln!("burst done in {:.1} ms: {failures} failed, {}s left now", f.burst_ms, seconds_left(&after).unwrap_or(0));
    Ok(f)
}

// ---------------------------------------------------------------------------------------------------------------
// The processes

struct Binaries {
    pachagent: PathBuf,
    pachagentd: PathBuf,
    pachd_dev: PathBuf,
    process_floor: PathBuf,
    /// Where `bench/agent.json` goes.
    target_dir: PathBuf,
}

impl Binaries {
    /// The release binaries next to this bench (cargo builds a package's binaries for its benches), built with
    /// `cargo build --release --bins` when missing, and the process floor.
    fn find() -> Result<Self> {
        let exe = std::env::current_exe()?;
        // target/release/deps/agent-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).ok_or("cannot locate the target directory")?;
        let target_dir = profile_dir.parent().ok_or("cannot locate the target directory")?.to_owned();
        // PACHAGENT_BENCH_PROGRAMS=DIR measures the programs in DIR instead: an installation, or a build with
        // other flags. (The ones cargo builds for a bench carry the dev-dependencies' features too.)
        let elsewhere = std::env::var_os("PACHAGENT_BENCH_PROGRAMS").map(PathBuf::from);
        let pick = |built: Option<&str>, name: &str| match &elsewhere {
            Some(dir) => dir.join(name),
            None => built.map(PathBuf::from).filter(|p| p.exists()).unwrap_or_else(|| profile_dir.join(name)),
        };
        let bins = Self {
            pachagent: pick(option_env!("CARGO_BIN_EXE_pachagent"), "pachagent"),
            pachagentd: pick(option_env!("CARGO_BIN_EXE_pachagentd"), "pachagentd"),
            pachd_dev: pick(option_env!("CARGO_BIN_EXE_pachd-dev"), "pachd-dev"),
            process_floor: profile_dir.join("bench-process-floor"),
            target_dir,
        };
        let cli_missing = elsewhere.as_ref().is_some_and(|dir| {
            ["pachagent-cli", "pachagent-keyring", "pachagent-net"].iter().any(|p| !dir.join(p).exists())
        });
        if cli_missing || !bins.pachagent.exists() || !bins.pachagentd.exists() || !bins.pachd_dev.exists() {
            if elsewhere.is_some() {
                return Err("PACHAGENT_BENCH_PROGRAMS names a directory without pachagent, pachagent-cli, \
                            pachagentd, pachagent-keyring, pachagent-net and pachd-dev (the front hands some \
                            command lines to pachagent-cli; the agent calls the keyring, the identity provider and \
                            pachd through its helpers)"
                    .into());
            }
            cargo_build(&["--bins"])?;
        }
        build_process_floor(&bins.process_floor)?;
        Ok(bins)
    }
}

/// `cargo build --release ARGS` in this package.
fn cargo_build(args: &[&str]) -> Result<()> {
    eprintln!("cargo build --release {}...", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status =
        Command::new(cargo).args(["build", "--release"]).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).status()?;
    if !status.success() {
        return Err(format!("cargo build --release {} failed: {status}", args.join(" ")).into());
    }
    Ok(())
}

/// Compiles the process floor (`benches/agent/process_floor.rs`, standard library only) to `out` with rustc,
/// optimised, on every run (a second or two): as a cargo example it would be built against the library with
/// release features rather than the bench's, which rebuilds every dependency (a minute on 2 cores).
fn build_process_floor(out: &Path) -> Result<()> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("agent").join("process_floor.rs");
    eprintln!("rustc {}...", source.display());
    let status = Command::new("rustc")
        .args(["--edition", "2024", "-C", "opt-level=3", "-C", "codegen-units=1", "-o"])
        .arg(out)
        .arg(&source)
        .status()?;
    if !status.success() {
        return Err(format!("rustc {} failed: {status}", source.display()).into());
    }
    Ok(())
}

/// pachd-dev and the agent, killed (and their directory removed) when dropped.
struct Stack {
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
    issuer: String,
    pachd: Child,
    agent: Child,
    logged_in: bool,
}

impl Stack {
    async fn start(bins: &Binaries) -> Result<Self> {
        // tempfile creates the directory owner-only (0700).
        let dir = tempfile::Builder::new().prefix("pachagent-bench-").tempdir()?;
        // A root token activates auth from the start, as `pachagent dev` does.
        let root_token = dir.path().join("root-token");
        std::fs::write(&root_token, uuid::Uuid::new_v4().simple().to_string())?;
        let mut pachd = Command::new(&bins.pachd_dev)
            .args(["--id-token-ttl", ID_TOKEN_TTL])
            .arg("--root-token-file")
            .arg(&root_token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("pachd-dev.log"))?))
            .spawn()?;
        let ready = match read_ready_line(&mut pachd) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = pachd.kill();
                let _ = pachd.wait();
                return Err(e);
            }
        };
        let field = |k: &str| ready.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(pachd_address), Some(issuer)) = (field("pachd"), field("issuer")) else {
            return Err(format!("pachd-dev's ready line lacks pachd or issuer: {ready}").into());
        };

        let config = dir.path().join("config.toml");
        let socket = dir.path().join("agent.sock");
        let service = format!("pachagent-bench-{}", std::process::id());
        std::fs::write(&config, format!("store = \"auto\"\nkeyring_service = \"{service}\"\n"))?;
        let context = NewContext {
            pachd_address,
            issuer: Some(issuer.clone()),
            client_id: Some(PACHAGENT_CLIENT_ID.to_owned()),
            scopes: vec![format!("{AUDIENCE_SCOPE_PREFIX}{DEFAULT_CLIENT_ID}")],
            ..NewContext::default()
        };
        Config::add_context(&config, CONTEXT, context)?;
        let agent = pachagent::client::serve_command(&bins.pachagentd, &socket, &config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("agent.log"))?))
            .spawn();
        let agent = match agent {
            Ok(agent) => agent,
            Err(e) => {
                let _ = pachd.kill();
                let _ = pachd.wait();
                return Err(e.into());
            }
        };
        Ok(Self { dir, socket, config, issuer, pachd, agent, logged_in: false })
    }

    /// A client once the agent answers.
    async fn wait_ready(&mut self) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client::connect(&self.socket).await {
                Ok(agent) => return Ok(agent),
                Err(e) if Instant::now() > deadline => return Err(self.with_log(e)),
                Err(_) => {
                    if let Ok(Some(status)) = self.agent.try_wait() {
                        return Err(self.with_log(format!("the agent exited: {status}")));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Logs in with OIDC, playing the user at the dev IdP's login page.
    async fn login(&mut self, mut agent: Client) -> Result<Client> {
        let req = LoginRequest {
            context: CONTEXT.into(),
            method: LoginMethod::Oidc.into(),
            timeout_seconds: 60,
            ..Default::default()
        };
        let mut events = agent.login(req).await?.into_inner();
        let mut user = None;
        let mut done = false;
        while let Some(event) = events.message().await? {
            match event.event {
                Some(Event::OpenUrl(open)) => user = Some(tokio::spawn(play_user(open.url))),
                Some(Event::Done(_)) => done = true,
                Some(Event::Failed(failed)) => return Err(format!("login failed: {}", failed.message).into()),
                _ => {}
            }
        }
        if let Some(user) = user {
            user.await??;
        }
        if !done {
            return Err("the login stream ended without a result".into());
        }
        self.logged_in = true;
        Ok(agent)
    }

    async fn logout(&mut self) -> Result<()> {
        if !self.logged_in {
            return Ok(());
        }
        let mut agent = client::connect(&self.socket).await?;
        agent.logout(LogoutRequest { context: CONTEXT.into(), all: false }).await?;
        self.logged_in = false;
        Ok(())
    }

    fn with_log(&self, e: impl std::fmt::Display) -> BoxError {
        let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        format!("{e}\nagent log:\n{log}").into()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [&mut self.agent, &mut self.pachd] {
            terminate(child);
        }
    }
}

/// SIGTERM (so the agent removes its socket), then SIGKILL if it lingers.
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_ready_line(pachd: &mut Child) -> Result<serde_json::Value> {
    let stdout = pachd.stdout.take().ok_or("pachd-dev has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim().is_empty() {
        return Err("pachd-dev exited before its ready line".into());
    }
    Ok(serde_json::from_str(line.trim())?)
}

async fn play_user(url: String) -> Result<()> {
    let url = url::Url::parse(&url)?;
    let redirect = idp::complete_login(&url, DEV_EMAIL).await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let answer = http.get(redirect).send().await?;
    if !answer.status().is_success() {
        return Err(format!("the agent's callback answered {}", answer.status()).into());
    }
    Ok(())
}

async fn refresh_grants(url: &str) -> Result<u64> {
    let counters: serde_json::Value = reqwest::get(url).await?.error_for_status()?.json().await?;
    counters.get("refresh_grants").and_then(serde_json::Value::as_u64).ok_or_else(|| "no refresh_grants".into())
}

// ---------------------------------------------------------------------------------------------------------------
// Load

#[derive(Clone, Copy)]
enum Rpc {
    WhoAmI,
    GetToken,
}

async fn connect(socket: &Path) -> Result<Client> {
    Ok(client::connect(socket).await?)
}

async fn connections(socket: &Path, n: usize) -> Result<Vec<Client>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(connect(socket).await?);
    }
    Ok(all)
}

/// `calls` calls from one client on a single-threaded runtime of its own, as the CLI calls the agent: with one
/// caller, a multi-threaded client runtime would mostly time the hand-offs between its own threads. As for the
/// floor, the first [`WARM_UP`] calls are not timed (page faults, lazily built state on both sides).
async fn one_client(socket: &Path, rpc: Rpc, calls: usize) -> Result<Vec<u64>> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let client = connect(&socket).await?;
            load(std::slice::from_ref(&client), rpc, WARM_UP).await?;
            Ok(load(std::slice::from_ref(&client), rpc, calls).await?.0)
        })
    })
    .await?
}

/// Latencies (ns) of `GetToken` each on a connection of its own, made for it (connect, HTTP/2 handshake, call),
/// from one client on a single-threaded runtime: what every `pachagent token` process pays besides its start-up.
async fn new_connection_calls(socket: &Path, calls: usize) -> Result<Vec<u64>> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut lat = Vec::with_capacity(calls);
            for i in 0..calls + WARM_UP / 10 {
                let t = Instant::now();
                let mut client = connect(&socket).await?;
                client
                    .get_token(GetTokenRequest { context: CONTEXT.into(), min_valid_seconds: 0, ..Default::default() })
                    .await?;
                drop(client);
                if i >= WARM_UP / 10 {
                    lat.push(t.elapsed().as_nanos() as u64);
                }
            }
            Ok(lat)
        })
    })
    .await?
}

/// `total` calls spread over the clients, each client calling in a loop; returns every call's latency (ns)
/// and the wall time of the whole.
async fn load(clients: &[Client], rpc: Rpc, total: usize) -> Result<(Vec<u64>, Duration)> {
    let n = clients.len();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let calls = total / n + usize::from(i < total % n);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                match rpc {
                    Rpc::WhoAmI => {
                        client.who_am_i(WhoAmIRequest { context: CONTEXT.into(), verify: false }).await?;
                    }
                    Rpc::GetToken => {
                        client
                            .get_token(GetTokenRequest {
                                context: CONTEXT.into(),
                                min_valid_seconds: 0,
                                ..Default::default()
                            })
                            .await?;
                    }
                }
                lat.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, started.elapsed()))
}

/// Round trips over a Unix socket to an echo process: `request` bytes out, `reply` bytes back.
fn floor(dir: &tempfile::TempDir, request: usize, reply: usize) -> Result<Vec<u64>> {
    let socket = dir.path().join("floor.sock");
    let mut server = start_echo_server(&socket, request, reply)?;
    let result = (|| -> Result<Vec<u64>> {
        let mut stream = UnixStream::connect(&socket)?;
        let out = vec![7u8; request];
        let mut back = vec![0u8; reply];
        let mut lat = Vec::with_capacity(FLOOR_CALLS);
        for i in 0..FLOOR_CALLS + WARM_UP {
            let t = Instant::now();
            stream.write_all(&out)?;
            stream.read_exact(&mut back)?;
            if i >= WARM_UP {
                lat.push(t.elapsed().as_nanos() as u64);
            }
        }
        Ok(lat)
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// The floors' other process: for each connection in turn, reads `request` bytes and writes `reply` bytes until
/// the client hangs up; until it is killed.
fn echo_server(args: &[String]) -> Result<()> {
    let [socket, request, reply] = args else { return Err("usage: --echo-server SOCKET REQUEST REPLY".into()) };
    let (request, reply): (usize, usize) = (request.parse()?, reply.parse()?);
    let listener = UnixListener::bind(socket)?;
    println!("listening");
    std::io::stdout().flush()?;
    let mut buf = vec![0u8; request];
    let out = vec![9u8; reply];
    loop {
        let (mut stream, _) = listener.accept()?;
        while stream.read_exact(&mut buf).is_ok() {
            if stream.write_all(&out).is_err() {
                break;
            }
        }
    }
}

/// Starts the echo server on `socket` and waits until it listens.
fn start_echo_server(socket: &Path, request: usize, reply: usize) -> Result<Child> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("--echo-server")
        .arg(socket)
        .arg(request.to_string())
        .arg(reply.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    // The server says it listens by printing a line.
    let mut line = String::new();
    let read = server.stdout.take().ok_or("no stdout").map(|out| BufReader::new(out).read_line(&mut line));
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = server.kill();
        let _ = server.wait();
        return Err("the echo server did not start".into());
    }
    Ok(server)
}

/// Wall times of `pachagent whoami`, `pachagent token`, the process floor and (when there is one) `oidc-token`,
/// run in turns (so that whatever else the machine does weighs on them alike), [`CLI_RUNS`] each after five
/// untimed turns that warm the page cache. The turns take the orders of [`TURN_ORDERS`] in a cycle.
fn process_runs(
    bins: &Binaries,
    stack: &Stack,
    request: usize,
    reply: usize,
    oidc_agent: Option<&OidcAgent>,
) -> Result<[Vec<u64>; 4]> {
    let floor_socket = stack.dir.path().join("process-floor.sock");
    let mut server = start_echo_server(&floor_socket, request, reply)?;
    let floor_args = [floor_socket.into_os_string(), request.to_string().into(), reply.to_string().into()];
    let result = (|| -> Result<[Vec<u64>; 4]> {
        let mut runs: [Vec<u64>; 4] = Default::default();
        // The four commands, in the order of `runs`; `None` for oidc-token when there is no oidc-agent.
        let command = |which: usize| -> Option<Command> {
            let mut cmd = match which {
                0 | 1 => Command::new(&bins.pachagent),
                2 => Command::new(&bins.process_floor),
                _ => oidc_agent?.command("oidc-token"),
            };
            match which {
                0 => cmd.arg("whoami"),
                1 => cmd.arg("token"),
                2 => cmd.args(&floor_args),
                _ => cmd.arg(oidc_agent::ACCOUNT),
            };
            Some(cmd)
        };
        for turn in 0..CLI_RUNS + 5 {
            for which in TURN_ORDERS[turn % TURN_ORDERS.len()] {
                let Some(mut cmd) = command(which) else { continue };
                let t = timed_run(&mut cmd, stack)?;
                if turn >= 5 {
                    runs[which].push(t);
                }
            }
        }
        Ok(runs)
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Runs a command to its end with the agent's socket and config in its environment: its wall time in ns.
fn timed_run(cmd: &mut Command, stack: &Stack) -> Result<u64> {
    let t = Instant::now();
    // RUST_LOG would make the front hand its commands to pachagent-cli: not what is being timed.
    let status = cmd
        .env_remove("RUST_LOG")
        .env("PACHAGENT_SOCKET", &stack.socket)
        .env("PACHAGENT_CONFIG", &stack.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let elapsed = t.elapsed();
    if !status.success() {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        return Err(format!("`{} {}` failed: {status}", cmd.get_program().to_string_lossy(), args.join(" ")).into());
    }
    Ok(elapsed.as_nanos() as u64)
}

// ---------------------------------------------------------------------------------------------------------------
// /proc and statistics

fn rss_mb(pid: u32) -> Result<f64> {
    status_mb(pid, "VmRSS:")
}

/// The part of the RSS that is the process's own memory (heap, stacks) rather than mapped files (code).
fn anon_mb(pid: u32) -> Result<f64> {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))?
        .parse::<f64>()?;
    Ok(kb / 1024.0)
}

/// Waits until the agent has no child process: its keyring helper (`pachagent-keyring`) stays a few seconds
/// after the last keyring call (`pachagent-net` exits with its call). The agent's RSS is then all the memory the
/// idle agent holds; read while a helper still ran, it would leave the helper's out.
async fn helpers_gone(agent: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = Instant::now();
    loop {
        let children = children_of(agent)?;
        if children.is_empty() {
            eprintln!("agent without helpers after {:.1}s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the agent's helpers stay: pids {children:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live (not zombie) processes whose parent is `pid`.
fn children_of(pid: u32) -> Result<Vec<u32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // A process may end between the listing and the read.
        let Ok(fields) = stat_fields(child) else { continue };
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) && fields.first().is_some_and(|s| s != "Z") {
            children.push(child);
        }
    }
    Ok(children)
}

/// utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    let field = |n: usize| -> Result<u64> { Ok(fields.get(n - 3).ok_or("short /proc stat")?.parse::<u64>()?) };
    Ok(field(14)? + field(15)?)
}

/// The fields of `/proc/PID/stat` from the third on (state, ppid, ...), as `proc(5)` numbers them less 3.
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields are counted after its closing parenthesis (field 3 = state).
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

fn seconds_left(token: &GetTokenResponse) -> Option<u64> {
    let exp = token.expiration.as_ref()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(u64::try_from(exp.seconds).ok()?.saturating_sub(now))
}

/// SIGKILL to `pid`, ignoring a process that is already gone.
fn signal_kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn percentile_ns(samples: &[u64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

fn percentile_us(samples: &[u64], q: f64) -> f64 {
    percentile_ns(samples, q) / 1e3
}

fn percentile_ms(samples: &[u64], q: f64) -> f64 {
    percentile_ns(samples, q) / 1e6
}

// ---------------------------------------------------------------------------------------------------------------
// Report

#[derive(Default)]
struct Figures {
    floor_p50_us: f64,
    floor_p99_us: f64,
    whoami_c1_p50_us: f64,
    whoami_c1_p99_us: f64,
    whoami_c1_p999_us: f64,
    gettoken_c1_p50_us: f64,
    gettoken_c1_p99_us: f64,
    gettoken_c1_p999_us: f64,
    gettoken_new_conn_p50_us: f64,
    gettoken_new_conn_p99_us: f64,
    whoami_c16_rps: f64,
    whoami_c16_p99_us: f64,
    whoami_c64_rps: f64,
    whoami_c64_p99_us: f64,
    gettoken_c16_rps: f64,
    cli_whoami_median_ms: f64,
    cli_whoami_p90_ms: f64,
    cli_token_median_ms: f64,
    cli_token_p90_ms: f64,
    process_floor_median_ms: f64,
    process_floor_p90_ms: f64,
    oidc_token_median_ms: f64,
    oidc_token_p90_ms: f64,
    oidc_agent_rss_mb: f64,
    rss_start_mb: f64,
    rss_idle_mb: f64,
    rss_after_1m_mb: f64,
    rss_idle_anon_mb: f64,
    rss_after_1m_anon_mb: f64,
    idle_cpu_ticks_30s: f64,
    burst_refreshes: f64,
    burst_failures: f64,
    burst_ms: f64,
}

/// How a figure compares with the floor.
enum Ratio {
    /// A duration in µs: figure / floor p50.
    Latency,
    /// Calls per second: the floor's rate on one connection (1 / p50) / figure.
    Rate,
    Plain,
}

impl Figures {
    fn rows(&self) -> Vec<(&'static str, f64, &'static str, Ratio)> {
        use Ratio::{Latency, Plain, Rate};
        vec![
            ("floor_p50_us", self.floor_p50_us, "µs", Latency),
            ("floor_p99_us", self.floor_p99_us, "µs", Latency),
            ("whoami_c1_p50_us", self.whoami_c1_p50_us, "µs", Latency),
            ("whoami_c1_p99_us", self.whoami_c1_p99_us, "µs", Latency),
            ("whoami_c1_p999_us", self.whoami_c1_p999_us, "µs", Latency),
            ("gettoken_c1_p50_us", self.gettoken_c1_p50_us, "µs", Latency),
            ("gettoken_c1_p99_us", self.gettoken_c1_p99_us, "µs", Latency),
            ("gettoken_c1_p999_us", self.gettoken_c1_p999_us, "µs", Latency),
            ("gettoken_new_conn_p50_us", self.gettoken_new_conn_p50_us, "µs", Latency),
            ("gettoken_new_conn_p99_us", self.gettoken_new_conn_p99_us, "µs", Latency),
            ("whoami_c16_rps", self.whoami_c16_rps, "calls/s", Rate),
            ("whoami_c16_p99_us", self.whoami_c16_p99_us, "µs", Latency),
            ("whoami_c64_rps", self.whoami_c64_rps, "calls/s", Rate),
            ("whoami_c64_p99_us", self.whoami_c64_p99_us, "µs", Latency),
            ("gettoken_c16_rps", self.gettoken_c16_rps, "calls/s", Rate),
            // Processes are compared with the process floor and oidc-token (the `_vs_` rows), not the socket floor.
            ("cli_whoami_median_ms", self.cli_whoami_median_ms * 1e3, "µs", Plain),
            ("cli_whoami_p90_ms", self.cli_whoami_p90_ms * 1e3, "µs", Plain),
            ("cli_token_median_ms", self.cli_token_median_ms * 1e3, "µs", Plain),
            ("cli_token_p90_ms", self.cli_token_p90_ms * 1e3, "µs", Plain),
            ("process_floor_median_ms", self.process_floor_median_ms * 1e3, "µs", Plain),
            ("process_floor_p90_ms", self.process_floor_p90_ms * 1e3, "µs", Plain),
            ("cli_token_vs_process_floor", self.cli_token_median_ms / self.process_floor_median_ms, "×", Plain),
            ("cli_whoami_vs_process_floor", self.cli_whoami_median_ms / self.process_floor_median_ms, "×", Plain),
            ("oidc_token_median_ms", self.oidc_token_median_ms * 1e3, "µs", Plain),
            ("oidc_token_p90_ms", self.oidc_token_p90_ms * 1e3, "µs", Plain),
            ("oidc_token_vs_process_floor", self.oidc_token_median_ms / self.process_floor_median_ms, "×", Plain),
            ("cli_token_vs_oidc_token", self.cli_token_median_ms / self.oidc_token_median_ms, "×", Plain),
            ("cli_whoami_vs_oidc_token", self.cli_whoami_median_ms / self.oidc_token_median_ms, "×", Plain),
            ("rss_start_mb", self.rss_start_mb, "MB", Plain),
            ("rss_idle_mb", self.rss_idle_mb, "MB", Plain),
            ("rss_after_1m_mb", self.rss_after_1m_mb, "MB", Plain),
            ("rss_idle_anon_mb", self.rss_idle_anon_mb, "MB", Plain),
            ("rss_after_1m_anon_mb", self.rss_after_1m_anon_mb, "MB", Plain),
            ("oidc_agent_rss_idle_mb", self.oidc_agent_rss_mb, "MB", Plain),
            ("rss_idle_vs_oidc_agent", self.rss_idle_mb / self.oidc_agent_rss_mb, "×", Plain),
            ("idle_cpu_ticks_30s", self.idle_cpu_ticks_30s, "ticks", Plain),
            ("burst_refreshes", self.burst_refreshes, "grants", Plain),
            ("burst_failures", self.burst_failures, "calls", Plain),
            ("burst_ms", self.burst_ms * 1e3, "µs", Latency),
        ]
    }

    /// The figure as reported in JSON (the `_ms` rows are shown in µs in the table for the ratio only).
    fn json_value(name: &str, shown: f64) -> f64 {
        if name.ends_with("_ms") { shown / 1e3 } else { shown }
    }

    fn print(&self) {
        println!("\n{:<28} {:>14} {:<8} {:>12}", "figure", "value", "unit", "× floor p50");
        println!("{}", "-".repeat(66));
        for (name, value, unit, ratio) in self.rows() {
            if value.is_nan() {
                // A figure this run could not measure (no oidc-agent here).
                println!("{name:<28} {:>14}", "n/a");
                continue;
            }
            let ratio = match ratio {
                Ratio::Latency => format!("{:.1}", value / self.floor_p50_us),
                Ratio::Rate => format!("{:.2}", (1e6 / self.floor_p50_us) / value),
                Ratio::Plain => "-".to_owned(),
            };
            let (value, unit) = if name.ends_with("_ms") {
                (format!("{:.3}", Self::json_value(name, value)), "ms")
            } else {
                (format!("{value:.2}"), unit)
            };
            println!("{name:<28} {value:>14} {unit:<8} {ratio:>12}");
        }
        println!("(× floor for calls/s: the floor's one-connection rate divided by the figure)");
    }

    fn write_json(&self, path: &Path) -> Result<()> {
        let mut map = serde_json::Map::new();
        for (name, value, _, _) in self.rows().into_iter().filter(|row| !row.1.is_nan()) {
            let value = Self::json_value(name, value);
            let number = serde_json::Number::from_f64((value * 1000.0).round() / 1000.0).unwrap_or_else(|| 0.into());
            map.insert(name.to_owned(), serde_json::Value::Number(number));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(map))?;
        std::fs::write(path, text + "\n")?;
        println!("\n{}", std::fs::read_to_string(path)?);
        Ok(())
    }
}
