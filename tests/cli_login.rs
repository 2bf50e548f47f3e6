//! The user's side of `pachagent login`, run as the real binary against a scripted agent.
//!
//! The agent here plays a fixed list of login events on a private socket and records the request it got and
//! whether the caller hung up, so that each test pins one thing the CLI must do with what the agent says: what
//! it tells the agent about this machine's browser, what it prints where, which exit code it returns, and that
//! Ctrl-C ends the stream. The real agent's login flows are tested against a real provider elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pachagent::proto::agent::agent_server::{Agent, AgentServer};
use pachagent::proto::agent::login_event::Event;
use pachagent::proto::agent::{self as pb, LoginMethod};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Code, Request, Response, Status};

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// What the scripted agent does with a `Login` call.
#[derive(Clone)]
struct Script {
    events: Vec<Event>,
    /// How the stream ends after the events: `None` = OK, `Some` = this status; with `hold`, it never ends.
    end: Option<(Code, &'static str)>,
    hold: bool,
    /// A pause before the last event, as a user takes to log in.
    pause: Duration,
}

#[derive(Default)]
struct Seen {
    requests: Vec<pb::LoginRequest>,
    /// The caller dropped a held stream.
    hung_up: bool,
}

struct ScriptedAgent {
    script: Script,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl Agent for ScriptedAgent {
    async fn who_am_i(&self, _: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Err(Status::unimplemented("scripted agent"))
    }
    async fn get_token(&self, _: Request<pb::GetTokenRequest>) -> Result<Response<pb::GetTokenResponse>, Status> {
        Err(Status::unimplemented("scripted agent"))
    }
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        Err(Status::unimplemented("scripted agent"))
    }

    type LoginStream = Stream<pb::LoginEvent>;

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<Self::LoginStream>, Status> {
        self.seen.lock().unwrap().requests.push(req.into_inner());
        let (tx, rx) = mpsc::channel(16);
        let script = self.script.clone();
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            let last = script.events.len().saturating_sub(1);
            for (i, event) in script.events.into_iter().enumerate() {
                if i == last {
                    tokio::time::sleep(script.pause).await;
                }
                if tx.send(Ok(pb::LoginEvent { event: Some(event) })).await.is_err() {
                    return;
                }
            }
            if script.hold {
                tx.closed().await;
                seen.lock().unwrap().hung_up = true;
            } else if let Some((code, message)) = script.end {
                let _ = tx.send(Err(Status::new(code, message))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn logout(&self, _: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        Err(Status::unimplemented("scripted agent"))
    }

    type WatchStream = Stream<pb::SessionEvent>;

    async fn watch(&self, _: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("scripted agent"))
    }
    async fn reload_config(
        &self,
        _: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        Ok(Response::new(pb::ReloadConfigResponse::default()))
    }
}

/// A scripted agent serving on a tempdir socket from a runtime of its own, and the environment the CLI runs in.
struct Harness {
    dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Seen>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    env: Vec<(&'static str, String)>,
}

impl Harness {
    fn start(script: Script) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let service = ScriptedAgent { script, seen: Arc::clone(&seen) };
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = UnixListener::bind(&path).unwrap();
                ready_tx.send(()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(AgentServer::new(service))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self { dir, socket, seen, stop: Some(stop), thread: Some(thread), env: Vec::new() }
    }

    /// The CLI with a private config and socket, and no hint of a browser unless a test adds one.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pachagent"));
        for var in ["BROWSER", "DISPLAY", "WAYLAND_DISPLAY", "SSH_CONNECTION", "SSH_TTY", "WSL_DISTRO_NAME"] {
            cmd.env_remove(var);
        }
        cmd.env_remove("PACHAGENT_CONTEXT")
            .env("HOME", self.dir.path())
            .env("PACHAGENT_SOCKET", &self.socket)
            .env("PACHAGENT_CONFIG", self.dir.path().join("config.toml"))
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A `$BROWSER` that records the URL it is given in a file; returns that file.
    fn fake_browser(&mut self) -> PathBuf {
        let opened = self.dir.path().join("opened-url");
        let script = self.dir.path().join("fake-browser");
        std::fs::write(&script, format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        self.env.push(("BROWSER", script.display().to_string()));
        opened
    }

    fn request(&self) -> pb::LoginRequest {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.requests.len(), 1, "one login call");
        seen.requests[0].clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

const AUTH_URL: &str = "https://login.example.com/authorize?client_id=pachagent&state=s1";

fn deadline() -> prost_types::Timestamp {
    let t = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

fn done(already: bool) -> Event {
    Event::Done(pb::Done {
        context: "prod".into(),
        username: "user:alice@example.com".into(),
        expiration: Some(prost_types::Timestamp { seconds: 1_739_112_060, nanos: 0 }),
        method: LoginMethod::Oidc.into(),
        already_logged_in: already,
    })
}

fn chosen(method: LoginMethod, reason: &str) -> Event {
    Event::MethodChosen(pb::MethodChosen { method: method.into(), reason: reason.into() })
}

fn open_url(hint: &str) -> Event {
    Event::OpenUrl(pb::OpenUrl {
        url: AUTH_URL.into(),
        redirect_uri: "http://127.0.0.1:8765/callback".into(),
        port_forward_hint: hint.into(),
    })
}

fn waiting() -> Event {
    Event::Waiting(pb::Waiting { deadline: Some(deadline()) })
}

const WHOAMI: &str = "You are \"user:alice@example.com\"\nsession expires: 09 Feb 25 14:41 UTC\n";

fn script(events: Vec<Event>) -> Script {
    Script { events, end: None, hold: false, pause: Duration::ZERO }
}

/// Waits up to 10 s for `path` to hold something.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} was never written", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_a_desktop_the_url_is_printed_opened_in_the_browser_and_the_result_goes_to_stdout() {
    let mut h = Harness::start(script(vec![
        chosen(LoginMethod::Oidc, "Logging in with your browser."),
        open_url(""),
        waiting(),
        done(false),
    ]));
    let opened = h.fake_browser();
    let out = h.run(&["login", "--context", "prod"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, WHOAMI);
    assert!(out.stderr.starts_with("Logging in with your browser.\n"), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("Opening a browser to log in. If none opens, visit this URL:\n  {AUTH_URL}\n"))
    );
    assert!(out.stderr.contains("Waiting for the login to finish (until "), "no spinner off a terminal: {out:#?}");
    assert_eq!(wait_for_file(&opened), AUTH_URL);
    let req = h.request();
    assert_eq!(req.method(), LoginMethod::Unspecified);
    assert!(req.browser_available);
    assert_eq!(req.timeout_seconds, 300);
    assert_eq!(req.context, "prod");
}

#[test]
fn over_ssh_the_agent_hears_there_is_no_browser_and_the_port_forward_is_explained() {
    let mut h = Harness::start(script(vec![
        chosen(LoginMethod::Oidc, "no browser here and the provider has no device flow"),
        open_url("ssh -L 8765:127.0.0.1:8765 devbox"),
        waiting(),
        done(false),
    ]));
    h.env.push(("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22".into()));
    let out = h.run(&["login"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!h.request().browser_available);
    assert!(
        out.stderr.contains(&format!(
            "Open this URL in a browser to log in (none can be opened here: this is an SSH session without a \
             display):\n  {AUTH_URL}\n"
        )),
        "{out:#?}"
    );
    assert!(out.stderr.contains("first forward the port from there:\n  ssh -L 8765:127.0.0.1:8765 devbox\n"));
}

#[test]
fn no_browser_tells_the_agent_a_browser_flow_is_fine_but_opens_nothing() {
    let mut h = Harness::start(script(vec![open_url(""), waiting(), done(false)]));
    let opened = h.fake_browser();
    let out = h.run(&["login", "--no-browser", "--timeout", "90s"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let req = h.request();
    assert!(req.browser_available);
    assert_eq!(req.timeout_seconds, 90);
    assert!(out.stderr.contains(&format!("Open this URL in a browser to log in:\n  {AUTH_URL}\n")), "{out:#?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!opened.exists(), "--no-browser opened a browser");
}

#[test]
fn device_asks_for_the_device_flow_and_shows_the_code() {
    let h = Harness::start(script(vec![
        Event::UserCode(pb::UserCode {
            user_code: "WDJB-MJHT".into(),
            verification_uri: "https://login.example.com/device".into(),
            verification_uri_complete: "https://login.example.com/device?user_code=WDJB-MJHT".into(),
        }),
        waiting(),
        done(false),
    ]));
    let out = h.run(&["login", "--device"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(h.request().method(), LoginMethod::Device);
    assert!(out.stderr.starts_with(
        "To log in, visit https://login.example.com/device and enter the code\n\n    WDJB-MJHT\n\n\
         or open this URL, which carries the code:\n  https://login.example.com/device?user_code=WDJB-MJHT\n"
    ));
    assert_eq!(out.stdout, WHOAMI);
}

#[test]
fn a_failing_browser_is_reported_and_the_login_goes_on() {
    let slow = Script { pause: Duration::from_secs(2), ..script(vec![open_url(""), waiting(), done(false)]) };
    let mut h = Harness::start(slow);
    h.env.push(("BROWSER", "/nonexistent/browser".into()));
    h.env.push(("PATH", "/nonexistent".into()));
    let out = h.run(&["login"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("pachagent: warning: could not open a browser ("), "{out:#?}");
    assert_eq!(out.stdout, WHOAMI);
}

#[test]
fn an_existing_session_is_reported_on_stderr() {
    let h = Harness::start(script(vec![done(true)]));
    let out = h.run(&["login"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, WHOAMI);
    assert_eq!(
        out.stderr,
        "Context \"prod\" already has a valid session; run pachagent login --force to log in again.\n"
    );
    assert!(!h.request().force);
}

#[test]
fn a_failed_login_prints_the_agents_message_and_exits_with_its_code() {
    let message = "the login timed out after 5m: run pachagent login again";
    let h = Harness::start(Script {
        events: vec![
            open_url(""),
            waiting(),
            Event::Failed(pb::Failed { code: Code::DeadlineExceeded as i32, message: message.into() }),
        ],
        end: Some((Code::DeadlineExceeded, message)),
        hold: false,
        pause: Duration::ZERO,
    });
    let out = h.run(&["login", "--no-browser"]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.ends_with(&format!("pachagent: {message}\n")), "{out:#?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_prints_every_event_as_a_line_on_stdout() {
    let h = Harness::start(script(vec![
        chosen(LoginMethod::Oidc, "a browser is available"),
        open_url("ssh -L 8765:127.0.0.1:8765 devbox"),
        waiting(),
        done(false),
    ]));
    let out = h.run(&["login", "--json", "--no-browser"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let events: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["method_chosen", "open_url", "waiting", "done"]);
    assert_eq!(events[0]["method"], "oidc");
    assert_eq!(events[1]["port_forward_hint"], "ssh -L 8765:127.0.0.1:8765 devbox");
    assert_eq!(events[1]["redirect_uri"], "http://127.0.0.1:8765/callback");
    assert_eq!(events[3]["username"], "user:alice@example.com");
    assert!(out.stderr.is_empty(), "{out:#?}");
}

#[test]
fn ctrl_c_while_waiting_drops_the_login_and_exits_130() {
    let h =
        Harness::start(Script { events: vec![open_url(""), waiting()], end: None, hold: true, pause: Duration::ZERO });
    let mut child: Child = h.command(&["login", "--no-browser"]).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("Waiting for the login to finish") {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "stderr closed early: {seen}");
        seen.push_str(&line);
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is our own child's, not yet reaped.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    stderr.read_to_string(&mut seen).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.ends_with("pachagent: login cancelled\n"), "{seen}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.seen.lock().unwrap().hung_up {
        assert!(Instant::now() < deadline, "the agent never saw the login stream close");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_empty_client_secret_changes_nothing() {
    let h = Harness::start(script(Vec::new()));
    let mut child = h
        .command(&[
            "context",
            "add",
            "corp",
            "--pachd",
            "grpcs://pachd.corp:443",
            "--issuer",
            "https://sso.corp/",
            "--client-id",
            "pachagent",
            "--client-secret-stdin",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--client-secret-stdin"), "{stderr}");
    assert!(!h.dir.path().join("config.toml").exists(), "no context was written");
}

/// Runs `context add` with a client secret on stdin and a keyutils store under a service of this test's own.
#[test]
fn a_client_secret_goes_to_the_keyring_and_leaves_with_the_context() {
    let h = Harness::start(script(Vec::new()));
    let service = format!("pachagent-test-cli-{}", std::process::id());
    let config = h.dir.path().join("config.toml");
    std::fs::write(&config, format!("version = 1\nstore = \"keyutils\"\nkeyring_service = \"{service}\"\n")).unwrap();
    let mut child = h
        .command(&[
            "context",
            "add",
            "corp",
            "--pachd",
            "grpcs://pachd.corp:443",
            "--issuer",
            "https://sso.corp/",
            "--client-id",
            "pachagent",
            "--client-secret-stdin",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"  s3cret-value\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Its client secret is stored in the keyutils store, not in the file."), "{stdout}");
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(!file.contains("s3cret"), "the secret reached the config file:\n{file}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(pachagent::store::Store::open(pachagent::config::StoreChoice::Keyutils, &service)).unwrap();
    let stored = rt.block_on(store.load_client_secret("corp")).unwrap().expect("a stored secret");
    assert_eq!(stored.expose_secret(), "s3cret-value");

    let out = h.run(&["context", "remove", "corp"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("Deleted its client secret from the keyutils store."), "{out:#?}");
    assert!(rt.block_on(store.load_client_secret("corp")).unwrap().is_none());
}
