//! The real `pachagent serve` inside keyring environments a test cannot get in-process: a D-Bus session of its
//! own whose gnome-keyring is locked or frozen, no session bus at all, or a `keyctl session -` that does not
//! possess the user keyring. Tests drive such an agent from outside with the real CLI over its socket, the way a
//! user would, and look at exit codes, messages and how long answers take.
//!
//! A private keyring session is `dbus-run-session -- sh -c SESSION_SCRIPT`: the script starts gnome-keyring
//! unlocked with a throwaway password, applies the [`Prepare`] step (lock the default collection, or SIGSTOP the
//! daemon), starts the agent and waits for it, then stops gnome-keyring (which does not always exit with its
//! bus). It writes the keyring's pid, the bus address and the agent's pid into the test's directory, so the test
//! can lock, freeze and thaw that keyring while the agent runs.
//!
//! [`PrivateKeyring`] is the same private bus and unlocked gnome-keyring without the script, for a [`TestAgent`]
//! test that must not share the suite's keyring: the test points its agent at the fixture's bus address.
//!
//! [`TestAgent`]: crate::support::TestAgent

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{CliOutput, process_mentions, signal};

/// Where gnome-keyring comes from when it is missing.
const INSTALL_KEYRING: &str = "apt-get install dbus gnome-keyring (or run the tests with scripts/test.sh, which \
                               installs them)";
/// Where keyctl comes from when it is missing.
const INSTALL_KEYCTL: &str = "apt-get install keyutils (or run the tests with scripts/test.sh, which installs it)";

/// The throwaway password of a private gnome-keyring.
const KEYRING_PASSWORD: &str = "pachagent-test";

/// No CLI run or agent start may take longer than this: the point of these tests is that nothing hangs.
const HANG: Duration = Duration::from_secs(60);

/// The exit code of the session script when it could not set up the keyring (not the agent's doing).
const SETUP_FAILED: i32 = 97;

/// Starts gnome-keyring on the private bus, prepares it as `$PREPARE` says, then runs its arguments (the agent).
const SESSION_SCRIPT: &str = r#"set -u
say() { printf 'keyring session: %s\n' "$*" >&2; }
bus() { dbus-send --session --print-reply=literal "$@"; }
printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null ||
    { say "gnome-keyring-daemon --unlock failed"; exit 97; }
# --unlock returns before the daemon owns its bus name. NameHasOwner does not start anything; a call to the name
# itself would have the bus activate a second gnome-keyring.
tries=0
until bus --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.NameHasOwner \
        string:org.freedesktop.secrets | grep -q true; do
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || { say "gnome-keyring never took org.freedesktop.secrets"; exit 97; }
    sleep 0.05
done
keyring=$(bus --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetConnectionUnixProcessID \
    string:org.freedesktop.secrets | awk '{ print $2 }')
[ -n "$keyring" ] || { say "cannot find gnome-keyring's pid"; exit 97; }
printf '%s\n' "$keyring" >"$STATE/keyring.pid"
printf '%s\n' "$DBUS_SESSION_BUS_ADDRESS" >"$STATE/bus.address"
collection=$(bus --dest=org.freedesktop.secrets /org/freedesktop/secrets org.freedesktop.Secret.Service.ReadAlias \
    string:default | tr -d '[:space:]')
case "$collection" in /org/*) ;; *) say "gnome-keyring has no default collection ($collection)"; exit 97 ;; esac
printf '%s\n' "$collection" >"$STATE/collection"
case "$PREPARE" in
    unlocked) ;;
    locked)
        bus --dest=org.freedesktop.secrets /org/freedesktop/secrets org.freedesktop.Secret.Service.Lock \
            "array:objpath:$collection" >/dev/null || { say "cannot lock $collection"; exit 97; }
        bus --dest=org.freedesktop.secrets "$collection" org.freedesktop.DBus.Properties.Get \
            string:org.freedesktop.Secret.Collection string:Locked | grep -q true ||
            { say "$collection did not lock"; exit 97; } ;;
    frozen) kill -STOP "$keyring" ;;
    *) say "unknown PREPARE=$PREPARE"; exit 97 ;;
esac
"$@" &
agent=$!
printf '%s\n' "$agent" >"$STATE/agent.pid.new" && mv "$STATE/agent.pid.new" "$STATE/agent.pid"
wait "$agent"
rc=$?
# Wake gnome-keyring in case a test froze it, then stop it: if it is still ours. A test may have killed it, and its
# pid may belong to another process by now (pids wrap at 32768), such as another test's keyring.
if tr '\0' '\n' <"/proc/$keyring/environ" 2>/dev/null | grep -qxF "XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR"; then
    kill -CONT "$keyring" 2>/dev/null
    kill "$keyring" 2>/dev/null
fi
exit "$rc"
"#;

/// What the private gnome-keyring looks like when the agent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// Unlocked and answering.
    Unlocked,
    /// Its default collection locked (as after a screen lock, or a login that did not unlock it).
    Locked,
    /// Stopped with SIGSTOP: on the bus, but never answering (as a daemon waiting on a prompt nobody sees).
    Frozen,
}

impl Prepare {
    fn name(self) -> &'static str {
        match self {
            Prepare::Unlocked => "unlocked",
            Prepare::Locked => "locked",
            Prepare::Frozen => "frozen",
        }
    }
}

/// The environment an agent runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Surroundings {
    /// A D-Bus session of its own with a gnome-keyring of its own.
    PrivateKeyring(Prepare),
    /// `DBUS_SESSION_BUS_ADDRESS` unset (and no `$XDG_RUNTIME_DIR/bus`, no `$DISPLAY` to autolaunch one).
    NoBusVariable,
    /// `DBUS_SESSION_BUS_ADDRESS` naming a socket that does not exist.
    DeadBus,
    /// A fresh anonymous session keyring (`keyctl session -`), which does not link, and so does not possess, `@u`:
    /// as for a daemon started outside a PAM login.
    ForeignKeyutilsSession,
}

static AGENTS: AtomicUsize = AtomicUsize::new(0);

/// An agent with its own socket, config and keyring service, run in some [`Surroundings`].
pub struct AgentIn {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub service: String,
    contexts: Vec<String>,
    /// What was started: `dbus-run-session`, `keyctl` (which execs the agent) or the agent itself.
    child: Option<Child>,
    /// The agent's own pid.
    agent_pid: Option<u32>,
    started: Option<Instant>,
    /// The gnome-keyring of the current private session.
    keyring_pid: Option<u32>,
}

impl AgentIn {
    /// An agent configured with `store = "<store>"` and a keyring service no other test uses; not started.
    pub fn new(store: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let service = format!("pachagent-fault-{}-{}", std::process::id(), AGENTS.fetch_add(1, Ordering::SeqCst));
        let config = dir.path().join("config").join("config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, format!("store = \"{store}\"\nkeyring_service = \"{service}\"\n")).unwrap();
        let socket = dir.path().join("run").join("pachagent").join("agent.sock");
        let log = dir.path().join("agent.log");
        Self {
            socket,
            config,
            log,
            service,
            contexts: Vec::new(),
            child: None,
            agent_pid: None,
            started: None,
            keyring_pid: None,
            dir,
        }
    }

    /// Adds a context through the CLI (no agent needed) and makes the first one active.
    pub fn add_context(&mut self, name: &str, pachd: &str) {
        let out = self.run_cli(&["context", "add", name, "--pachd", pachd], None, false);
        assert_eq!(out.code, 0, "context add: {out:#?}");
        self.contexts.push(name.to_owned());
    }

    /// The environment every process of this agent (agent and CLI) gets.
    fn base_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("PACHAGENT_CONTEXT")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg-run"))
            .env("PACHAGENT_SOCKET", &self.socket)
            .env("PACHAGENT_CONFIG", &self.config)
            .env("NO_COLOR", "1");
        cmd
    }

    /// Starts `pachagent serve` in `surroundings` and returns at once; see [`AgentIn::wait_serving`] and
    /// [`AgentIn::wait_exit`].
    pub fn start(&mut self, surroundings: &Surroundings) {
        assert!(self.child.is_none(), "already started");
        let agent = Path::new(env!("CARGO_BIN_EXE_pachagent"));
        let mut cmd = match surroundings {
            Surroundings::PrivateKeyring(prepare) => {
                for tool in ["dbus-run-session", "dbus-send", "gnome-keyring-daemon"] {
                    require(tool, INSTALL_KEYRING);
                }
                let state = self.dir.path().join("keyring-session");
                let _ = std::fs::remove_dir_all(&state);
                std::fs::create_dir_all(state.join("data")).unwrap();
                std::fs::create_dir_all(state.join("run")).unwrap();
                set_mode(&state.join("run"), 0o700);
                let mut cmd = self.base_command(Path::new("dbus-run-session"));
                cmd.args(["--", "sh", "-c", SESSION_SCRIPT, "sh"])
                    .arg(agent)
                    .env_remove("DBUS_SESSION_BUS_ADDRESS")
                    .env_remove("GNOME_KEYRING_CONTROL")
                    .env_remove("SSH_AUTH_SOCK")
                    // gnome-keyring keeps its files and control socket here, not in the user's own.
                    .env("XDG_DATA_HOME", state.join("data"))
                    .env("XDG_RUNTIME_DIR", state.join("run"))
                    .env("STATE", &state)
                    .env("PREPARE", prepare.name())
                    .env("KEYRING_PASSWORD", KEYRING_PASSWORD);
                cmd
            }
            Surroundings::NoBusVariable => {
                let mut cmd = self.base_command(agent);
                cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
                cmd
            }
            Surroundings::DeadBus => {
                let mut cmd = self.base_command(agent);
                let nowhere = self.dir.path().join("no-bus-here");
                cmd.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", nowhere.display()));
                cmd
            }
            Surroundings::ForeignKeyutilsSession => {
                require("keyctl", INSTALL_KEYCTL);
                // keyctl execs its command, so the child is the agent itself.
                let mut cmd = self.base_command(Path::new("keyctl"));
                cmd.args(["session", "-"]).arg(agent);
                cmd
            }
        };
        cmd.arg("serve");
        // No bus anyone could autolaunch, and no fallback to the user's own gnome-keyring.
        cmd.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").env("RUST_LOG", "pachagent=debug,info");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        writeln!(&log, "===== starting the agent in {surroundings:?}").unwrap();
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // The old session's files must not be mistaken for the new one's.
        self.keyring_pid = None;
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start the agent in {surroundings:?}: {e}"));
        self.started = Some(Instant::now());
        self.agent_pid = match surroundings {
            Surroundings::PrivateKeyring(_) => None,
            _ => Some(child.id()),
        };
        self.child = Some(child);
        if let Surroundings::PrivateKeyring(_) = surroundings {
            self.await_private_session();
        }
    }

    /// Waits for the session script to have started the agent, and reads the pids it wrote.
    fn await_private_session(&mut self) {
        let state = self.dir.path().join("keyring-session");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = read_pid(&state.join("agent.pid")) {
                self.agent_pid = Some(pid);
                self.keyring_pid = read_pid(&state.join("keyring.pid"));
                assert!(self.keyring_pid.is_some(), "no keyring.pid:\n{}", self.log_text());
                return;
            }
            if let Some(code) = self.exited() {
                assert_ne!(code, SETUP_FAILED, "the private gnome-keyring did not come up:\n{}", self.log_text());
                panic!("the keyring session ended ({code}) before starting the agent:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "no agent started within 30 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit code of what [`AgentIn::start`] started, once it has exited (-1 for a signal).
    fn exited(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        Some(status.code().unwrap_or(-1))
    }

    /// Waits until the agent serves (its gRPC health service says SERVING, which it does only once the store is
    /// open and the stored sessions are restored) and returns how long that took since [`AgentIn::start`]. Fails
    /// with the log when the agent exits first or takes longer than `within`.
    pub fn wait_serving(&mut self, within: Duration) -> Duration {
        let started = self.started.expect("start the agent first");
        loop {
            if reports_serving(&self.socket) {
                eprintln!("agent serving after {:.2?}", started.elapsed());
                return started.elapsed();
            }
            if let Some(code) = self.exited() {
                panic!("the agent exited with {code} instead of serving:\n{}", self.log_text());
            }
            assert!(started.elapsed() < within, "the agent did not serve within {within:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the agent to exit by itself; returns its exit code and how long it ran. Fails with the log
    /// when it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> (i32, Duration) {
        let started = self.started.expect("start the agent first");
        loop {
            if let Some(code) = self.exited() {
                self.child = None;
                eprintln!("agent exited with {code} after {:.2?}", started.elapsed());
                return (code, started.elapsed());
            }
            assert!(started.elapsed() < within, "the agent still runs after {within:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.agent_pid.expect("the agent has been started")
    }

    /// Whether `pid` is still this test's agent (not a process given its pid after it ended).
    fn is_our_agent(&self, pid: u32) -> bool {
        process_mentions(pid, &self.socket.display().to_string())
    }

    /// Whether `pid` is still this test's private gnome-keyring (or one its bus activated): a gnome-keyring whose
    /// runtime directory is this session's.
    fn is_our_keyring(&self, pid: u32) -> bool {
        let run = self.dir.path().join("keyring-session").join("run");
        is_gnome_keyring(pid) && process_mentions(pid, &format!("XDG_RUNTIME_DIR={}", run.display()))
    }

    /// SIGTERM to the agent; returns its exit code and how long it took to exit. Fails after `within`.
    pub fn stop(&mut self, within: Duration) -> (i32, Duration) {
        let pid = self.pid();
        if self.is_our_agent(pid) {
            signal(pid, libc::SIGTERM);
        }
        let asked = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                self.child = None;
                eprintln!("agent stopped with {code} {:.2?} after SIGTERM", asked.elapsed());
                return (code, asked.elapsed());
            }
            assert!(
                asked.elapsed() < within,
                "the agent did not stop within {within:?} of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the agent gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(pid) = self.agent_pid
            && self.child.is_some()
            && self.is_our_agent(pid)
        {
            signal(pid, libc::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The session script stops gnome-keyring when the agent ends; this is for when it could not.
        if let Some(pid) = self.keyring_pid.take()
            && self.is_our_keyring(pid)
        {
            signal(pid, libc::SIGCONT);
            signal(pid, libc::SIGKILL);
        }
    }

    /// What the agent (and the keyring session around it) wrote to stderr, over every start.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against the running agent; returns what it printed and how long it took.
    #[track_caller]
    pub fn cli(&mut self, args: &[&str]) -> (CliOutput, Duration) {
        self.cli_inner(args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    #[track_caller]
    pub fn cli_stdin(&mut self, args: &[&str], stdin: &str) -> (CliOutput, Duration) {
        self.cli_inner(args, Some(stdin))
    }

    /// Runs the CLI on the private keyring session's bus, as a command typed in the same desktop session would
    /// run: for commands that open the keyring themselves (`doctor`).
    #[track_caller]
    pub fn cli_on_keyring_bus(&mut self, args: &[&str]) -> CliOutput {
        let bus = self.bus_address();
        let out = self.run_cli_on(args, None, true, Some(&bus));
        eprintln!("`pachagent {}` on the keyring's bus: exit {}", args.join(" "), out.code);
        out
    }

    #[track_caller]
    fn cli_inner(&mut self, args: &[&str], stdin: Option<&str>) -> (CliOutput, Duration) {
        // `login` starts an agent when none answers; one started by the CLI would run outside the environment
        // under test and answer for it.
        if let Some(code) = self.exited() {
            panic!("the agent exited with {code} before `pachagent {}`:\n{}", args.join(" "), self.log_text());
        }
        let start = Instant::now();
        let out = self.run_cli(args, stdin, true);
        let took = start.elapsed();
        eprintln!("`pachagent {}`: exit {} after {took:.2?}", args.join(" "), out.code);
        (out, took)
    }

    fn run_cli(&self, args: &[&str], stdin: Option<&str>, agent_running: bool) -> CliOutput {
        self.run_cli_on(args, stdin, agent_running, None)
    }

    fn run_cli_on(&self, args: &[&str], stdin: Option<&str>, agent_running: bool, bus: Option<&str>) -> CliOutput {
        let dir = self.dir.path().join("cli");
        std::fs::create_dir_all(&dir).unwrap();
        let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
        let mut cmd = self.base_command(Path::new(env!("CARGO_BIN_EXE_pachagent")));
        // Most commands need no keyring; without a bus, an agent the CLI started by mistake could not use one either.
        match bus {
            // No display: a locked keyring must fail the call, not pop up an unlock prompt on the developer's screen.
            Some(bus) => cmd.env("DBUS_SESSION_BUS_ADDRESS", bus).env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY"),
            None => cmd.env_remove("DBUS_SESSION_BUS_ADDRESS"),
        };
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap());
        let mut child = cmd.spawn().expect("run pachagent");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let deadline = Instant::now() + HANG;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`pachagent {}` hung for {HANG:?} (agent running: {agent_running}):\n{}",
                    args.join(" "),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        CliOutput {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&out_path).unwrap(),
            stderr: std::fs::read_to_string(&err_path).unwrap(),
        }
    }

    /// Starts the CLI without waiting for it (stdout and stderr piped), for a call that is to be in flight while
    /// something else happens.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        self.spawn_cli_stdin(args, None)
    }

    /// As [`AgentIn::spawn_cli`], with `stdin` written to the command (then closed) when given.
    pub fn spawn_cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Child {
        let mut cmd = self.base_command(Path::new(env!("CARGO_BIN_EXE_pachagent")));
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run pachagent");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child
    }

    /// `pachagent status --json`, checked to come from this agent; returns it and how long it took.
    #[track_caller]
    pub fn status(&mut self) -> (serde_json::Value, Duration) {
        let (out, took) = self.cli(&["status", "--json"]);
        let json = out.ok().json();
        assert_eq!(json["agent_pid"], self.pid(), "status answered by another agent: {json}");
        (json, took)
    }

    /// The private session's bus address.
    fn bus_address(&self) -> String {
        let path = self.dir.path().join("keyring-session").join("bus.address");
        std::fs::read_to_string(path).expect("a private keyring session").trim().to_owned()
    }

    /// Calls a D-Bus method on the private session bus with `dbus-send`; returns its literal reply.
    #[track_caller]
    pub fn bus_call(&self, args: &[&str]) -> String {
        let out = Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus_address())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .args(["--session", "--print-reply=literal"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run dbus-send ({e}): {INSTALL_KEYRING}"));
        assert!(out.status.success(), "dbus-send {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Locks the private gnome-keyring's default collection, as a screen lock would, and checks that it is.
    #[track_caller]
    pub fn lock_keyring(&self) {
        let path = self.dir.path().join("keyring-session").join("collection");
        let collection = std::fs::read_to_string(path).unwrap().trim().to_owned();
        self.bus_call(&[
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            &format!("array:objpath:{collection}"),
        ]);
        let locked = self.bus_call(&[
            "--dest=org.freedesktop.secrets",
            &collection,
            "org.freedesktop.DBus.Properties.Get",
            "string:org.freedesktop.Secret.Collection",
            "string:Locked",
        ]);
        assert!(locked.contains("true"), "{collection} did not lock: {locked}");
    }

    /// Stops the private gnome-keyring with SIGSTOP: still on the bus, never answering.
    #[track_caller]
    pub fn freeze_keyring(&self) {
        let pid = self.keyring_pid.expect("a private keyring session");
        assert!(self.is_our_keyring(pid), "the private gnome-keyring {pid} is gone:\n{}", self.log_text());
        signal(pid, libc::SIGSTOP);
    }

    /// Lets a frozen gnome-keyring run again.
    pub fn thaw_keyring(&self) {
        let pid = self.keyring_pid.expect("a private keyring session");
        if self.is_our_keyring(pid) {
            signal(pid, libc::SIGCONT);
        }
    }

    /// Kills the private gnome-keyring (SIGKILL), as a crash or an OOM kill would: its bus name goes away.
    #[track_caller]
    pub fn kill_keyring(&mut self) {
        let pid = self.keyring_pid.take().expect("a private keyring session");
        assert!(self.is_our_keyring(pid), "the private gnome-keyring {pid} is gone:\n{}", self.log_text());
        signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_gnome_keyring(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!is_gnome_keyring(pid), "gnome-keyring {pid} did not die");
    }

    /// Brings the keyring back as logging in to the desktop again would: `gnome-keyring-daemon --replace --unlock`
    /// with the password on the private bus, which starts a daemon on the same keyring files, taking over from
    /// any (locked) one D-Bus activated meanwhile; returns once it owns its bus name.
    pub fn revive_keyring(&mut self) {
        let state = self.dir.path().join("keyring-session");
        let mut child = Command::new("gnome-keyring-daemon")
            .args(["--replace", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus_address())
            .env("XDG_DATA_HOME", state.join("data"))
            .env("XDG_RUNTIME_DIR", state.join("run"))
            .env_remove("GNOME_KEYRING_CONTROL")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run gnome-keyring-daemon ({e}): {INSTALL_KEYRING}"));
        child.stdin.take().unwrap().write_all(KEYRING_PASSWORD.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "gnome-keyring-daemon --unlock failed");
        let (address, deadline) = (self.bus_address(), Instant::now() + Duration::from_secs(10));
        loop {
            if let Some(pid) = secrets_owner(&address) {
                self.keyring_pid = Some(pid);
                return;
            }
            assert!(Instant::now() < deadline, "the revived gnome-keyring never took its bus name on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `secret-tool lookup service <service> username <context>` on the private bus: what a user finds in the
    /// keyring for a context, or `None`.
    pub fn keyring_item(&self, context: &str) -> Option<String> {
        // No display: a locked item must fail the lookup, not pop up an unlock prompt on the developer's screen.
        let out = Command::new("secret-tool")
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus_address())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .args(["lookup", "service", &self.service, "username", context])
            .output()
            .unwrap_or_else(|e| panic!("cannot run secret-tool ({e}): apt-get install libsecret-tools"));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The Secret Service sessions the private gnome-keyring has open (their object paths, sorted): one per
    /// client connection that opened one and is still there.
    pub fn keyring_sessions(&self) -> Vec<String> {
        let xml = self.bus_call(&[
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets/session",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ]);
        let mut sessions: Vec<String> = xml
            .split("<node name=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| !name.is_empty())
            .map(|name| format!("/org/freedesktop/secrets/session/{name}"))
            .collect();
        sessions.sort();
        sessions
    }

    /// The record of `context` in the kernel user keyring, read by this (other) process.
    pub fn keyutils_record(&self, context: &str) -> Option<pachagent::store::StoredSession> {
        let service = self.service.clone();
        let context = context.to_owned();
        // A thread of its own: callers may be inside a runtime, where another cannot be started.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let store =
                    pachagent::store::Store::open(pachagent::config::StoreChoice::Keyutils, &service).await.unwrap();
                store.load(&context).await.unwrap()
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for AgentIn {
    fn drop(&mut self) {
        self.kill();
        // Leave nothing of this test's service in the kernel user keyring (agents on `auto` or `keyutils`).
        let service = self.service.clone();
        let contexts = std::mem::take(&mut self.contexts);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let choice = pachagent::config::StoreChoice::Keyutils;
                if let Ok(store) = pachagent::store::Store::open(choice, &service).await {
                    for context in contexts {
                        let _ = store.delete(&context).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A D-Bus session bus and an unlocked gnome-keyring of one test's own, both children of the test, with the
/// keyring's files in a temporary directory. For tests that could take a keyring down (an agent SIGKILLed in the
/// middle of its keyring calls, again and again): if that gnome-keyring crashes, D-Bus activates a new, locked one
/// on this bus only, and the rest of the suite keeps its own. Dropping it stops both daemons and removes the files.
pub struct PrivateKeyring {
    /// The bus address, as `dbus-daemon` printed it.
    address: String,
    /// `dbus-daemon --nofork`.
    bus: Child,
    /// `gnome-keyring-daemon --foreground`, so that the test reaps it; `None` until it is started.
    keyring: Option<Child>,
    /// The bus socket, gnome-keyring's files (`data`), its runtime directory (`run`) and both daemons' logs.
    dir: tempfile::TempDir,
}

impl PrivateKeyring {
    /// Starts the bus, then gnome-keyring unlocked with a throwaway password; returns once the keyring owns
    /// `org.freedesktop.secrets` on that bus and its default collection is unlocked. Fails with the daemons' logs
    /// when either does not come up, and with an install hint when a tool is missing.
    pub fn start() -> Self {
        for tool in ["dbus-daemon", "dbus-send", "gnome-keyring-daemon"] {
            require(tool, INSTALL_KEYRING);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        set_mode(&dir.path().join("run"), 0o700);
        let mut cmd = Self::command_in(dir.path(), "dbus-daemon");
        // The bus gives its own environment to what it activates: a gnome-keyring it starts after this one died
        // keeps to this directory too, never to the suite's keyring files.
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.path().join("bus").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("dbus-daemon.log")).unwrap());
        let mut bus = cmd.spawn().unwrap_or_else(|e| panic!("cannot run dbus-daemon ({e}): {INSTALL_KEYRING}"));
        let mut address = String::new();
        let read = BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address);
        let address = address.trim().to_owned();
        if read.is_err() || address.is_empty() {
            let _ = bus.kill();
            let _ = bus.wait();
            let log = std::fs::read_to_string(dir.path().join("dbus-daemon.log")).unwrap_or_default();
            panic!("dbus-daemon printed no bus address:\n{log}");
        }
        // From here on, Drop stops whatever has been started when something fails.
        let mut this = Self { address, bus, keyring: None, dir };
        this.start_keyring();
        this
    }

    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `program` with the private directories, no display (nothing may prompt on the developer's screen) and no
    /// other gnome-keyring's control socket.
    fn command_in(dir: &Path, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env_remove("GNOME_KEYRING_CONTROL")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    /// `program` talking to this bus.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Self::command_in(self.dir.path(), program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        cmd
    }

    fn start_keyring(&mut self) {
        let mut cmd = self.command("gnome-keyring-daemon");
        cmd.args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("gnome-keyring.log")).unwrap());
        let mut keyring =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot run gnome-keyring-daemon ({e}): {INSTALL_KEYRING}"));
        // The password on stdin, then end of file.
        keyring.stdin.take().unwrap().write_all(KEYRING_PASSWORD.as_bytes()).unwrap();
        let pid = keyring.id();
        self.keyring = Some(keyring);
        // The daemon takes its bus name a little after it starts. NameHasOwner starts nothing, whereas a call to
        // the name itself would have the bus activate a second, locked gnome-keyring.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let owned = try_bus(
                &self.address,
                &[
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ],
            );
            if owned.is_some_and(|reply| reply.contains("true")) {
                break;
            }
            if let Some(status) = self.keyring.as_mut().unwrap().try_wait().unwrap() {
                panic!("gnome-keyring-daemon exited ({status}) before taking its bus name:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not take org.freedesktop.secrets on the private bus within 10 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let owner = secrets_owner(&self.address);
        assert_eq!(owner, Some(pid), "org.freedesktop.secrets is not owned by the gnome-keyring started here");
        let alias = ["/org/freedesktop/secrets", "org.freedesktop.Secret.Service.ReadAlias", "string:default"];
        let collection: String = self.call(&alias).split_whitespace().collect();
        assert!(collection.starts_with("/org/"), "the private gnome-keyring has no default collection: {collection}");
        let locked = self.call(&[
            &collection,
            "org.freedesktop.DBus.Properties.Get",
            "string:org.freedesktop.Secret.Collection",
            "string:Locked",
        ]);
        assert!(locked.contains("false"), "{collection} is locked after gnome-keyring-daemon --unlock: {locked}");
    }

    /// Calls the Secret Service on this bus (only once the daemon owns its name); fails on an error reply.
    #[track_caller]
    fn call(&self, args: &[&str]) -> String {
        let mut all = vec!["--dest=org.freedesktop.secrets"];
        all.extend_from_slice(args);
        try_bus(&self.address, &all).unwrap_or_else(|| panic!("dbus-send {all:?} failed:\n{}", self.logs()))
    }

    /// Both daemons' stderr, for failure messages.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- dbus-daemon:\n{}--- gnome-keyring-daemon:\n{}", read("dbus-daemon.log"), read("gnome-keyring.log"))
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        // When the test's gnome-keyring died, the bus may have activated another one (a child of the bus).
        let ours = self.keyring.as_ref().map(Child::id);
        let activated = secrets_owner(&self.address).filter(|&pid| Some(pid) != ours && is_gnome_keyring(pid));
        if let Some(mut keyring) = self.keyring.take() {
            // SIGCONT in case the test froze it; SIGTERM lets it close its files.
            signal(keyring.id(), libc::SIGCONT);
            signal(keyring.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while keyring.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = keyring.kill();
            let _ = keyring.wait();
        }
        if let Some(pid) = activated {
            signal(pid, libc::SIGCONT);
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_running(pid) && is_gnome_keyring(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Whether the agent on `socket` answers a gRPC health check with SERVING within half a second.
fn reports_serving(socket: &Path) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let socket = socket.to_owned();
    // A thread of its own: callers may be inside a runtime, where another cannot be started.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let check = async {
                let channel = pachagent::client::channel(&socket).await.ok()?;
                let request = HealthCheckRequest { service: "pachagent.v1.Agent".into() };
                let answer = HealthClient::new(channel).check(request).await.ok()?;
                Some(answer.into_inner().status == ServingStatus::Serving as i32)
            };
            tokio::time::timeout(Duration::from_millis(500), check).await.ok().flatten().unwrap_or(false)
        })
    })
    .join()
    .unwrap()
}

/// Fails with the install command unless `tool` is on PATH.
#[track_caller]
pub fn require(tool: &str, install: &str) {
    let found = Command::new("sh").args(["-c", "command -v \"$1\"", "sh", tool]).output().unwrap();
    assert!(found.status.success(), "{tool} is missing: {install}");
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `dbus-send --session --print-reply=literal ARGS` on the bus at `address` (never a display's): the reply, or
/// `None` on an error.
fn try_bus(address: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("dbus-send")
        .env("DBUS_SESSION_BUS_ADDRESS", address)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args(["--session", "--print-reply=literal"])
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid of whatever owns `org.freedesktop.secrets` on the bus at `address` (asking starts nothing).
fn secrets_owner(address: &str) -> Option<u32> {
    let reply = try_bus(
        address,
        &[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            "string:org.freedesktop.secrets",
        ],
    )?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is (still) a gnome-keyring-daemon, so that a recycled pid is never signalled.
fn is_gnome_keyring(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("gnome-keyring"))
}

/// Whether `pid` exists and is not a zombie (an exited child waiting for its parent).
fn is_running(pid: u32) -> bool {
    // The state follows the command name, which is in parentheses and may itself contain spaces or ')'.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
}
