//! The test harness: real binaries on real sockets. `PachdDev` runs the pachd-compatible server, `TestAgent`
//! runs `pachagent serve` with a private socket, config and keyring service name, and drives the real CLI.
//! Nothing here fakes the agent, the keyring or pachd's wire protocol.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chromium;
pub mod issuer;
pub mod keyring_env;
pub mod op;
pub mod other_user;
pub mod tls;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pachagent::proto::auth::{self, api_client::ApiClient};
use tonic::transport::Channel;

/// A provider whose ID tokens live `ttl`, pachd-dev trusting it, and an agent logged in through the browser flow
/// as alice@example.com (context `dev`).
pub fn renewable_session(ttl: Duration, keyring: Keyring) -> (op::TestOp, PachdDev, TestAgent) {
    renewable_session_with_env(ttl, keyring, &[])
}

/// As [`renewable_session`], with `env` set for the agent and every CLI run (e.g. a private session bus).
pub fn renewable_session_with_env(
    ttl: Duration,
    keyring: Keyring,
    env: &[(&str, &str)],
) -> (op::TestOp, PachdDev, TestAgent) {
    let op = op::TestOp::builder().id_token_ttl(ttl).start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let agent = logged_in_through_the_browser(&op, &pachd, keyring, env);
    (op, pachd, agent)
}

/// An agent with context `dev` for `pachd` and `op`, logged in through the browser flow as alice@example.com.
pub fn logged_in_through_the_browser(
    op: &op::TestOp,
    pachd: &PachdDev,
    keyring: Keyring,
    env: &[(&str, &str)],
) -> TestAgent {
    let mut agent = TestAgent::new(keyring);
    for (key, value) in env {
        agent.env(key, value);
    }
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.env("BROWSER", op::FAKE_USER);
    agent.env("FAKE_USER_EMAIL", "alice@example.com");
    agent.start();
    agent.cli(&["login"]).ok();
    agent
}

/// The Python interpreter that has the real `pachyderm-sdk` from PyPI and this repository's `pachagent` package:
/// `$PACHAGENT_TEST_PYTHON`, else the virtual environment `scripts/test.sh` makes in `target/python`. Panics
/// with what to run when there is none, never skips.
pub fn python_with_sdk() -> PathBuf {
    let path = std::env::var_os("PACHAGENT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python/bin/python"));
    let ok = Command::new(&path)
        .args(["-c", "import pachyderm_sdk, pachagent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import pachyderm_sdk and pachagent: run scripts/test.sh, which makes that virtual environment \
         (python3 -m venv target/python && target/python/bin/pip install ./python)",
        path.display()
    );
    path
}

/// A running `pachd-dev`, activated with a root token.
pub struct PachdDev {
    pub address: String,
    pub root_token: String,
    /// The JSON line pachd-dev printed when ready (`pachd`, `issuer`, `oidc_callback`).
    pub ready: serde_json::Value,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PachdDev {
    /// pachd-dev with auth active and, when given, trusting `issuer` for ID tokens.
    pub fn start(issuer: Option<&str>, session_ttl: Option<&str>) -> Self {
        Self::start_with(issuer, session_ttl, None)
    }

    /// pachd-dev listening on a given address (to restart it on the same port).
    pub fn start_with(issuer: Option<&str>, session_ttl: Option<&str>, listen: Option<&str>) -> Self {
        Self::start_with_args(issuer, session_ttl, listen, &[])
    }

    /// pachd-dev with extra flags (e.g. `--client-id`, `--client-secret-file`).
    pub fn start_with_args(
        issuer: Option<&str>,
        session_ttl: Option<&str>,
        listen: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root_token = format!("root-{}", uuid_like());
        let root_file = dir.path().join("root-token");
        std::fs::write(&root_file, &root_token).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pachd-dev"));
        cmd.arg("--root-token-file").arg(&root_file).arg("--listen").arg(listen.unwrap_or("127.0.0.1:0"));
        if let Some(i) = issuer {
            cmd.arg("--issuer").arg(i);
        }
        if let Some(ttl) = session_ttl {
            cmd.arg("--session-ttl").arg(ttl);
        }
        cmd.args(extra);
        let log = dir.path().join("pachd-dev.log");
        cmd.env("RUST_LOG", "pachagent=debug,info").stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start pachd-dev");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let address = ready["pachd"].as_str().expect("pachd address").to_owned();
        Self { address, root_token, child, log, _dir: dir, ready }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What pachd-dev logged (at debug level for pachagent's modules).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many sessions pachd-dev minted from ID tokens (`Authenticate{id_token}` calls that succeeded).
    pub fn id_token_logins(&self) -> usize {
        self.log().matches("session token issued for an ID token").count()
    }

    /// The `host:port` pachd-dev listens on.
    pub fn host_port(&self) -> String {
        self.address.trim_start_matches("grpc://").to_owned()
    }

    pub async fn api(&self) -> ApiClient<Channel> {
        let uri = self.address.replacen("grpc://", "http://", 1);
        ApiClient::connect(uri).await.unwrap()
    }

    /// A robot token minted with the root token; `ttl` seconds, 0 = never expires.
    pub async fn robot_token(&self, robot: &str, ttl: i64) -> String {
        let mut req = tonic::Request::new(auth::GetRobotTokenRequest { robot: robot.into(), ttl });
        req.metadata_mut().insert("authn-token", self.root_token.parse().unwrap());
        self.api().await.get_robot_token(req).await.unwrap().into_inner().token
    }

    /// pachd's own WhoAmI for a token: Ok(username) or the gRPC status.
    pub async fn who_am_i(&self, token: &str) -> Result<String, tonic::Status> {
        let mut req = tonic::Request::new(auth::WhoAmIRequest {});
        req.metadata_mut().insert("authn-token", token.parse().unwrap());
        self.api().await.who_am_i(req).await.map(|r| r.into_inner().username)
    }

    pub async fn revoke(&self, token: &str) {
        let mut req = tonic::Request::new(auth::RevokeAuthTokenRequest { token: token.into() });
        req.metadata_mut().insert("authn-token", self.root_token.parse().unwrap());
        self.api().await.revoke_auth_token(req).await.unwrap();
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PachdDev {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

/// Which real keyring backend an agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyring {
    /// gnome-keyring over D-Bus (the test command runs the suite inside `dbus-run-session`).
    SecretService,
    /// The kernel keyutils user keyring.
    Keyutils,
}

impl Keyring {
    pub fn name(self) -> &'static str {
        match self {
            Keyring::SecretService => "secret-service",
            Keyring::Keyutils => "keyutils",
        }
    }
}

/// An agent with its own socket, config and keyring service name, driven through the real CLI.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub service: String,
    pub keyring: Keyring,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
}

static AGENTS: AtomicUsize = AtomicUsize::new(0);

impl TestAgent {
    /// A configured but not yet started agent.
    pub fn new(keyring: Keyring) -> Self {
        if keyring == Keyring::SecretService {
            assert!(
                std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
                "these tests need a session bus with gnome-keyring: run them with scripts/test.sh"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let service = format!("pachagent-test-{}-{}", std::process::id(), AGENTS.fetch_add(1, Ordering::SeqCst));
        let config = dir.path().join("config").join("config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, format!("store = \"{}\"\nkeyring_service = \"{service}\"\n", keyring.name())).unwrap();
        let socket = dir.path().join("run").join("pachagent").join("agent.sock");
        let log = dir.path().join("agent.log");
        Self { socket, config, log, service, keyring, child: None, extra_env: Vec::new(), dir }
    }

    /// Sets an environment variable for the agent and CLI processes started from now on.
    pub fn env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.into(), value.into()));
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        // A RUST_LOG of the developer's would send the front's commands to pachagent-cli and add log lines.
        cmd.env_remove("PACHAGENT_CONTEXT")
            .env_remove("RUST_LOG")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg-run"))
            .env("PACHAGENT_SOCKET", &self.socket)
            .env("PACHAGENT_CONFIG", &self.config)
            .env("NO_COLOR", "1");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `pachagent serve` and waits until its socket answers.
    pub fn start(&mut self) {
        self.start_wrapped(&[]);
    }

    /// Starts `pachagent serve` through `wrapper` (a command line that ends by running its arguments, e.g. to
    /// set a resource limit) and waits until its socket answers.
    pub fn start_wrapped(&mut self, wrapper: &[&str]) {
        assert!(self.child.is_none(), "already started");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_pachagent"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = self.command(Path::new(program));
                cmd.args(args).arg(bin);
                cmd
            }
            None => self.command(bin),
        };
        cmd.arg("serve").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        if !self.extra_env.iter().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "pachagent=debug,info");
        }
        self.child = Some(cmd.spawn().expect("start pachagent serve"));
        self.wait_ready();
    }

    /// Waits until the agent's socket accepts connections (the agent may have been started by the CLI). When this
    /// harness started the agent, the socket must be that agent's: after a kill, a helper the dead agent was just
    /// starting can hold its listening socket for the instant before the helper's exec closes it, and a connection
    /// queued there is not the new agent answering.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(stream) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let listener = rustix::net::sockopt::socket_peercred(&stream).ok().map(|c| c.pid.as_raw_pid());
                let started = self.child.as_ref().map(|c| i32::try_from(c.id()).unwrap());
                if started.is_none() || listener == started {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the agent exited with {status} before listening:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the agent did not listen within 20 s:\n{}", self.log_text());
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!("the agent did not stop within 15 s of SIGTERM:\n{}", self.log_text());
    }

    /// The pid of the agent this harness started.
    pub fn agent_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the agent gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid recorded in the single-instance lock file (for agents the CLI started in the background).
    pub fn locked_pid(&self) -> Option<u32> {
        let lock = self.socket.with_file_name("agent.sock.lock");
        std::fs::read_to_string(lock).ok()?.trim().parse().ok()
    }

    pub fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Ok(bg) = std::fs::read_to_string(self.socket.with_file_name("agent.log")) {
            text.push_str(&bg);
        }
        text
    }

    /// Waits until the agent's log says `needle` (the agent logs what a client did when it gets to it, which on a
    /// loaded machine may be after the client is gone); returns the log. Fails with the log after `within`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the agent's log within {within:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with_stdin(args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> CliOutput {
        self.cli_with_stdin(args, Some(stdin))
    }

    fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        self.run_program(Path::new(env!("CARGO_BIN_EXE_pachagent")), args, stdin)
    }

    /// Runs one of pachagent's programs (or a copy of one) with this agent's environment.
    pub fn run_program(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run pachagent");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the CLI in the background (for logins that wait on a browser); its output is collected as it comes.
    pub fn spawn_cli(&self, args: &[&str]) -> RunningCli {
        let mut cmd = self.command(Path::new(env!("CARGO_BIN_EXE_pachagent")));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run pachagent");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        RunningCli { child, stdout, stderr }
    }

    /// Sets a key of a context in the config file (e.g. `refresh_margin`), as a user editing it would.
    pub fn set_context_option(&self, context: &str, key: &str, value: toml::Value) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        let contexts = doc.get_mut("contexts").and_then(toml::Value::as_table_mut).expect("a contexts table");
        let ctx = contexts.get_mut(context).and_then(toml::Value::as_table_mut).expect("the context");
        ctx.insert(key.to_owned(), value);
        std::fs::write(&self.config, toml::to_string(&doc).unwrap()).unwrap();
    }

    /// Adds a context through the CLI.
    pub fn add_context(&self, name: &str, pachd: &str, extra: &[&str]) {
        let mut args = vec!["context", "add", name, "--pachd", pachd];
        args.extend_from_slice(extra);
        self.cli(&args).ok();
    }

    /// The raw keyring record of a context, read straight from the backend (not through the agent).
    pub async fn stored(&self, context: &str) -> Option<pachagent::store::StoredSession> {
        assert!(
            !self.secrets_out_of_reach(),
            "stored() reads the Secret Service of the test's own session bus, not the agent's private one"
        );
        let store = pachagent::store::Store::open(self.store_choice(), &self.service).await.unwrap();
        store.load(context).await.unwrap()
    }

    /// Whether the agent keeps its sessions in the Secret Service of a bus other than this process's (a
    /// [`keyring_env::PrivateKeyring`] given with `env("DBUS_SESSION_BUS_ADDRESS", …)`): the in-process store,
    /// which connects to this process's bus, cannot see them.
    fn secrets_out_of_reach(&self) -> bool {
        self.keyring == Keyring::SecretService && self.extra_env.iter().any(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS")
    }

    fn store_choice(&self) -> pachagent::config::StoreChoice {
        match self.keyring {
            Keyring::SecretService => pachagent::config::StoreChoice::SecretService,
            Keyring::Keyutils => pachagent::config::StoreChoice::Keyutils,
        }
    }

    /// A gRPC client of the agent on its socket.
    pub async fn grpc(&self) -> pachagent::client::Client {
        pachagent::client::connect(&self.socket).await.unwrap()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
        // Only the agent of this test: the lock file may name a pid that has ended and been given to another
        // process since (pids wrap at 32768 here), and a SIGKILL to that one fails some other test.
        if let Some(pid) = self.locked_pid()
            && process_mentions(pid, &self.socket.display().to_string())
        {
            signal(pid, libc::SIGKILL);
        }
        // Leave no entry of this test's keyring service behind. Entries in a private keyring go away with it; the
        // shared one never had any.
        if !self.secrets_out_of_reach()
            && let Ok(cfg) = pachagent::config::Config::load(&self.config)
        {
            let names: Vec<String> = cfg.contexts.keys().cloned().collect();
            let choice = self.store_choice();
            let service = self.service.clone();
            // A thread of its own: Drop may run inside a test's runtime, where another cannot be started.
            let cleanup = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    if let Ok(store) = pachagent::store::Store::open(choice, &service).await {
                        for name in names {
                            let _ = store.delete(&name).await;
                        }
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}

/// Whether process `pid` still is the one a test means: its command line or environment contains `needle`
/// (a path of that test's own). A pid read from a file may have ended and been given to another process since.
pub fn process_mentions(pid: u32, needle: &str) -> bool {
    let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let needle = needle.as_bytes();
    [read("cmdline"), read("environ")].iter().any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

pub fn signal(pid: u32, sig: i32) {
    // 0 or a value that wraps to -1 would signal a whole process group, or every process.
    assert!((2..i32::MAX as u32).contains(&pid), "refusing to signal pid {pid}");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a pid we started; no memory involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn uuid_like() -> String {
    use std::time::SystemTime;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}{}", std::process::id())
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(path);
            }
        }
    }
    hits
}

type Collected = (std::sync::Arc<std::sync::Mutex<String>>, Option<std::thread::JoinHandle<()>>);

fn collect(pipe: impl std::io::Read + Send + 'static) -> Collected {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(pipe);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    (text, Some(reader))
}

/// A CLI process still running, e.g. a login waiting for the browser.
pub struct RunningCli {
    child: Child,
    stdout: Collected,
    stderr: Collected,
}

impl RunningCli {
    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits until a stderr line satisfies `pick`, and returns what `pick` extracted.
    #[track_caller]
    pub fn wait_for_stderr<T>(&mut self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.stderr_so_far().lines().find_map(&pick) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the CLI exited ({status}) before printing {what}:\n{}", self.stderr_so_far());
            }
            assert!(Instant::now() < deadline, "no {what} within 30 s:\n{}", self.stderr_so_far());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The login URL the CLI printed (an indented `http…` line).
    #[track_caller]
    pub fn login_url(&mut self) -> String {
        self.wait_for_stderr("a login URL", |l| l.trim_start().starts_with("http").then(|| l.trim().to_owned()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit (at most `secs` seconds) and returns everything it printed.
    #[track_caller]
    pub fn finish(mut self, secs: u64) -> CliOutput {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the CLI did not exit within {secs} s:\n{}", self.stderr_so_far());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in [self.stdout.1.take(), self.stderr.1.take()].into_iter().flatten() {
            let _ = reader.join();
        }
        CliOutput {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.0.lock().unwrap().clone(),
            stderr: self.stderr.0.lock().unwrap().clone(),
        }
    }
}

impl Drop for RunningCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the scripted user (`tests/browser/fake_user.py`) on `url` in the foreground and returns its exit code.
pub fn fake_user(url: &str, email: &str, action: &str) -> i32 {
    fake_user_logging(url, email, action, None)
}

/// As [`fake_user`], with every step (the redirect it delivered included) appended to `log`.
pub fn fake_user_logging(url: &str, email: &str, action: &str, log: Option<&Path>) -> i32 {
    let mut cmd = Command::new("python3");
    cmd.arg(op::FAKE_USER)
        .arg(url)
        .env("FAKE_USER_FOREGROUND", "1")
        .env("FAKE_USER_EMAIL", email)
        .env("FAKE_USER_ACTION", action);
    if let Some(log) = log {
        cmd.env("FAKE_USER_LOG", log);
    }
    cmd.status().expect("run python3 tests/browser/fake_user.py").code().unwrap_or(-1)
}

/// The value of a query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Waits on a `Watch` stream for an event of `kind`, failing with the agent's log after `within`; returns it and
/// the kinds of the events seen before it.
pub async fn next_event_after(
    agent: &TestAgent,
    events: &mut tonic::Streaming<pachagent::proto::agent::SessionEvent>,
    kind: pachagent::proto::agent::EventKind,
    within: Duration,
) -> (pachagent::proto::agent::SessionEvent, Vec<i32>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} event within {within:?}; the agent's log:\n{}", agent.log_text()))
            .unwrap()
            .unwrap();
        if event.kind == kind as i32 {
            return (event, seen);
        }
        seen.push(event.kind);
    }
}
