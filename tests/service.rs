//! `pachagent service` and socket activation as a user meets them: the unit files it writes (equal to the
//! committed templates under `packaging/`), what it runs to enable them, and an agent that serves the
//! listening socket systemd hands it on fd 3.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Keyring, PachdDev, TestAgent, signal};

const BIN: &str = env!("CARGO_BIN_EXE_pachagent");
/// The agent program, which the units start directly (`pachagent serve` becomes it).
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_pachagentd");

fn packaging(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(file)).unwrap()
}

/// A home with its own XDG config directory, and a PATH holding only `tools` (for a stand-in `systemctl`).
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn units(&self) -> PathBuf {
        self.dir.path().join("xdg-config").join("systemd").join("user")
    }

    fn tools(&self) -> PathBuf {
        self.dir.path().join("tools")
    }

    /// A `systemctl` that records its arguments and answers like a user manager that has the units enabled.
    fn fake_systemctl(&self) {
        std::fs::create_dir_all(self.tools()).unwrap();
        let script = self.tools().join("systemctl");
        let calls = self.dir.path().join("systemctl.calls");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$2\" in is-enabled) echo enabled;; is-active) echo active;; \
                 esac\nexit 0\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("systemctl.calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn run(&self, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.tools()).unwrap();
        Command::new(BIN)
            .args(args)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("PATH", self.tools())
            .env_remove("PACHAGENT_SOCKET")
            .env_remove("PACHAGENT_CONFIG")
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn install_print_shows_the_committed_units_with_this_binary_in_exec_start_and_writes_nothing() {
    let home = Home::new();
    let out = home.run(&["service", "install", "--print"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let units = home.units();
    let expected = format!(
        "# {}\n{}\n# {}\n{}",
        units.join("pachagent.socket").display(),
        packaging("systemd/pachagent.socket"),
        units.join("pachagent.service").display(),
        packaging("systemd/pachagent.service").replace("@EXE@", AGENT_BIN),
    );
    assert_eq!(text(&out.stdout), expected);
    assert!(!units.exists(), "--print changes nothing");
}

#[test]
fn the_committed_units_have_the_socket_activation_and_hardening_a_user_manager_supports() {
    let socket = packaging("systemd/pachagent.socket");
    for line in
        ["ListenStream=%t/pachagent/agent.sock", "SocketMode=0600", "DirectoryMode=0700", "WantedBy=sockets.target"]
    {
        assert!(socket.lines().any(|l| l == line), "pachagent.socket lacks {line}");
    }
    let service = packaging("systemd/pachagent.service");
    for line in [
        "ExecStart=@EXE@ serve",
        "Requires=pachagent.socket",
        "NoNewPrivileges=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "MemoryDenyWriteExecute=yes",
        "RestartPreventExitStatus=2",
    ] {
        assert!(service.lines().any(|l| l == line), "pachagent.service lacks {line}");
    }
    // These need mount namespaces a user manager cannot set up, and PrivateTmp would hide a $TMPDIR socket.
    for absent in ["PrivateTmp=", "ProtectSystem=", "ProtectHome=", "User=", "DynamicUser="] {
        assert!(!service.lines().any(|l| l.starts_with(absent)), "pachagent.service must not set {absent}");
    }
    let plist = packaging("launchd/io.pachagent.agent.plist");
    assert!(plist.contains("<string>@EXE@</string>\n\t\t<string>serve</string>"));
}

/// `systemd-analyze verify` checks the units as systemd itself parses them, including that ExecStart names an
/// executable. When a machine has no systemd-analyze the test fails, unless the person running it says so with
/// `PACHAGENT_TEST_NO_SYSTEMD_ANALYZE=1`.
#[test]
fn systemd_analyze_verify_accepts_the_installed_units() {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert_eq!(
            std::env::var("PACHAGENT_TEST_NO_SYSTEMD_ANALYZE").as_deref(),
            Ok("1"),
            "systemd-analyze is not installed: install systemd, or set PACHAGENT_TEST_NO_SYSTEMD_ANALYZE=1"
        );
        return;
    }
    let home = Home::new();
    home.fake_systemctl();
    assert!(home.run(&["service", "install"]).status.success());
    let run = home.dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let units = home.units();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--user"])
        .arg(units.join("pachagent.socket"))
        .arg(units.join("pachagent.service"))
        .env("XDG_RUNTIME_DIR", &run)
        .env("HOME", home.dir.path())
        .env("XDG_CONFIG_HOME", home.dir.path().join("xdg-config"))
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify: {}", text(&out.stderr));
}

#[test]
fn install_writes_the_units_and_enables_the_socket_through_the_user_manager() {
    let home = Home::new();
    home.fake_systemctl();
    let out = home.run(&["service", "install"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let units = home.units();
    for name in ["pachagent.socket", "pachagent.service"] {
        let meta = std::fs::metadata(units.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644, "{name} is readable by the service manager");
    }
    let service = std::fs::read_to_string(units.join("pachagent.service")).unwrap();
    assert!(service.contains(&format!("\nExecStart={AGENT_BIN} serve\n")), "{service}");
    assert_eq!(home.systemctl_calls(), ["--user daemon-reload", "--user enable --now pachagent.socket"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Enabled pachagent.socket"), "{stdout}");
    assert!(stdout.contains(&home.dir.path().join("run/pachagent/agent.sock").display().to_string()), "{stdout}");

    let status = home.run(&["service", "status", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let lines: Vec<serde_json::Value> =
        text(&status.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "pachagent.socket");
    assert_eq!(lines[0]["installed"], true);
    assert_eq!(lines[0]["enabled"], "enabled");
    assert_eq!(lines[1]["active"], "active");

    let out = home.run(&["service", "uninstall"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!units.join("pachagent.socket").exists() && !units.join("pachagent.service").exists());
    assert!(
        home.systemctl_calls().contains(&"--user disable --now pachagent.socket pachagent.service".to_owned()),
        "{:?}",
        home.systemctl_calls()
    );
    let status = home.run(&["service", "status"]);
    assert_eq!(status.status.code(), Some(1), "not installed: {}", text(&status.stdout));
    assert!(text(&status.stdout).contains("not installed"));
}

#[test]
fn without_systemctl_install_still_writes_the_units_says_so_and_prints_what_to_run() {
    let home = Home::new();
    let out = home.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(1), "the service is not running, so this is not a success");
    assert!(home.units().join("pachagent.socket").exists() && home.units().join("pachagent.service").exists());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("systemctl is not installed here"), "{stderr}");
    assert!(
        stderr.contains("  systemctl --user daemon-reload\n  systemctl --user enable --now pachagent.socket\n"),
        "{stderr}"
    );
}

/// Starts `pachagent serve` the way systemd does: the listening socket on fd 3, `LISTEN_FDS=1`, and
/// `LISTEN_PID` set to the agent's own pid (the `sh` wrapper sets it to `$$` and execs, keeping the pid).
fn spawn_activated(agent: &TestAgent, listener: &std::os::unix::net::UnixListener, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&agent.log).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, BIN, "serve"])
        .args(extra)
        .env("HOME", agent.dir.path())
        .env("XDG_CONFIG_HOME", agent.dir.path().join("xdg-config"))
        .env("XDG_RUNTIME_DIR", agent.dir.path().join("xdg-run"))
        .env("PACHAGENT_SOCKET", &agent.socket)
        .env("PACHAGENT_CONFIG", &agent.config)
        .env("RUST_LOG", "pachagent=debug,info")
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the hook only calls dup2 and fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 gives a descriptor without close-on-exec; when the listener already is fd 3, clear it here.
            if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[track_caller]
fn wait_for_log(agent: &TestAgent, needle: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if agent.log_text().matches(needle).count() > 0 {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the agent exited with {status}:\n{}", agent.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {needle:?} in the agent's log within 20 s:\n{}", agent.log_text());
}

#[track_caller]
fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the agent did not exit within {within:?}");
}

/// The socket a systemd `.socket` unit would make: in an owner-only directory, mode 0600.
fn bind_like_systemd(socket: &Path) -> std::os::unix::net::UnixListener {
    let dir = socket.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    listener
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_activated_agent_serves_the_socket_it_is_handed_and_leaves_it_for_the_next_start() {
    let pachd = PachdDev::start(None, None);
    let agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    let listener = bind_like_systemd(&agent.socket);
    let inode = std::fs::metadata(&agent.socket).unwrap().ino();

    let mut first = spawn_activated(&agent, &listener, &[]);
    wait_for_log(&agent, "socket_activated=true", &mut first);
    let status = agent.cli(&["status", "--json"]);
    assert_eq!(status.ok().json()["agent_pid"], first.id(), "the agent on the handed socket answers");
    assert_eq!(agent.locked_pid(), Some(first.id()), "it still takes the single-instance lock beside the socket");
    let token = pachd.robot_token("activated", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).ok();

    signal(first.id(), libc::SIGTERM);
    assert_eq!(wait_exit(&mut first, Duration::from_secs(15)), Some(0), "SIGTERM stops it cleanly");
    let meta = std::fs::metadata(&agent.socket).expect("the socket file is systemd's and stays");
    assert_eq!(meta.ino(), inode, "the agent never re-bound the socket");

    // systemd starts the agent again on the next connection, handing it the same socket.
    let mut second = spawn_activated(&agent, &listener, &[]);
    wait_for_log(&agent, &format!("pid={}", second.id()), &mut second);
    let who = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, "You are \"robot:activated\"\n", "the session came back from the keyring");
    signal(second.id(), libc::SIGTERM);
    assert_eq!(wait_exit(&mut second, Duration::from_secs(15)), Some(0));
    drop(listener);
}

#[test]
fn an_agent_ignores_listen_fds_meant_for_another_process_and_binds_its_own_socket() {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.env("LISTEN_FDS", "1");
    agent.env("LISTEN_PID", "1");
    agent.start();
    assert!(!agent.log_text().contains("socket_activated=true"), "{}", agent.log_text());
    agent.cli(&["status"]).ok();
    assert_eq!(agent.stop(), Some(0));
    assert!(!agent.socket.exists(), "a socket the agent bound itself is removed on exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_idle_exit_an_activated_agent_exits_once_no_client_is_connected_and_comes_back_with_its_sessions() {
    let pachd = PachdDev::start(None, None);
    let agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    let listener = bind_like_systemd(&agent.socket);

    let mut first = spawn_activated(&agent, &listener, &["--idle-exit", "2s"]);
    wait_for_log(&agent, "socket_activated=true", &mut first);
    // A token that never expires: nothing for the agent to renew or warn about.
    let token = pachd.robot_token("idle", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).ok();

    // An open client connection (a `watch`) keeps the agent up well past the idle window.
    let watch = agent.spawn_cli(&["watch"]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(first.try_wait().unwrap(), None, "the agent exited under a connected client:\n{}", agent.log_text());
    signal(watch.pid(), libc::SIGTERM);
    drop(watch);
    let last_client = Instant::now();

    assert_eq!(wait_exit(&mut first, Duration::from_secs(15)), Some(0), "it exits by itself, cleanly");
    let idle = last_client.elapsed();
    assert!(idle >= Duration::from_millis(1900), "it waited out the idle window, exited after {idle:?}");
    assert!(idle < Duration::from_secs(8), "it exited soon after the idle window, after {idle:?}");
    assert!(agent.log_text().contains("no client and nothing due: exiting (--idle-exit)"), "{}", agent.log_text());
    assert!(agent.socket.exists(), "the socket stays for systemd to start the agent again");

    // The next connection starts the agent again; the session comes back from the keyring.
    let mut second = spawn_activated(&agent, &listener, &["--idle-exit", "2s"]);
    wait_for_log(&agent, &format!("pid={}", second.id()), &mut second);
    let who = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, "You are \"robot:idle\"\n");
    assert_eq!(wait_exit(&mut second, Duration::from_secs(15)), Some(0), "and it idles out again");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_idle_exit_the_agent_stays_up_while_a_session_expiry_is_due_within_the_window() {
    let pachd = PachdDev::start(None, None);
    let agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    let listener = bind_like_systemd(&agent.socket);

    let mut child = spawn_activated(&agent, &listener, &["--idle-exit", "3s"]);
    wait_for_log(&agent, "socket_activated=true", &mut child);
    // A session that cannot be renewed and ends in 6 s: its end must be announced (to `watch`) first.
    let token = pachd.robot_token("short", 6).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).ok();
    let last_client = Instant::now();

    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
    let waited = last_client.elapsed();
    assert!(waited >= Duration::from_secs(5), "it left before the session's end was due, after {waited:?}");
    assert!(waited < Duration::from_secs(12), "it exited soon after the session ended, after {waited:?}");
    drop(listener);
}

#[test]
fn install_warns_when_an_agent_started_outside_systemd_holds_the_socket() {
    let home = Home::new();
    home.fake_systemctl();
    let mut agent = TestAgent::new(Keyring::Keyutils);
    // The agent on the default socket of this home, as `pachagent login` would have started it.
    let socket = home.dir.path().join("run").join("pachagent").join("agent.sock");
    agent.socket = socket;
    agent.start();
    let pid = agent.locked_pid().unwrap();

    let out = home.run(&["service", "install"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("an agent started outside systemd is running (pid {pid})")), "{stderr}");
    assert!(stderr.contains(&format!("kill {pid}")), "{stderr}");
    assert_eq!(agent.stop(), Some(0));
}
