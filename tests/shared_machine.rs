//! Another user of the same machine against this user's agent, for real: a second local account (made by the
//! test; CI runs as root) prepares each attack as that uid, and the victim's agent and commands must refuse it
//! with a message that says what to do, touching nothing of the victim's. The worst case is a machine without
//! `$XDG_RUNTIME_DIR` (SSH without pam_systemd, cron, `su`, containers), where the agent's directory is
//! `$TMPDIR/pachagent-<uid>` in a directory everyone writes to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::op::{self, TestOp};
use support::other_user::{self, OtherUser};
use support::{CliOutput, Keyring, PachdDev, TestAgent};

/// The victim: this test's own user, running the real CLI with nothing but `$TMPDIR` to find its agent by.
struct Victim {
    home: tempfile::TempDir,
    shared: PathBuf,
}

impl Victim {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let shared = other_user::shared_tmp(home.path());
        let private = home.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(private.join("config.toml"), "store = \"keyutils\"\nkeyring_service = \"pachagent-victim\"\n")
            .unwrap();
        Self { home, shared }
    }

    /// A file of the victim's that an attacker would like written to.
    fn precious(&self) -> PathBuf {
        let path = self.home.path().join("private").join("precious");
        if !path.exists() {
            std::fs::write(&path, "the victim's own words\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    }

    /// Where the victim's agent lives by default here: `$TMPDIR/pachagent-<uid>`.
    fn agent_dir(&self) -> PathBuf {
        self.shared.join(format!("pachagent-{}", pachagent::config::current_uid()))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pachagent"));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home.path().join("private"))
            .env("TMPDIR", &self.shared)
            .env("PACHAGENT_CONFIG", self.home.path().join("private").join("config.toml"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        let out = self.command(args).output().unwrap();
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// As `other`: makes `dir` first, sticky and writable by everyone like `/tmp`, and plants in it a link named
/// `name` to the victim's `target`.
fn plant_shared_dir_with_link(other: &OtherUser, dir: &Path, name: &str, target: &Path) {
    other.sh(&format!(
        "mkdir '{d}' && chmod 1777 '{d}' && ln -s '{t}' '{d}/{name}'",
        d = dir.display(),
        t = target.display()
    ));
}

/// A file's bytes and mode, to compare before and after an attack.
fn snapshot(path: &Path) -> (Vec<u8>, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.permissions().mode())
}

#[test]
fn an_agent_refuses_a_directory_another_user_made_first_and_never_writes_through_their_link() {
    let other = OtherUser::get();
    let victim = Victim::new();
    let precious = victim.precious();
    let before = snapshot(&precious);
    let dir = victim.agent_dir();
    plant_shared_dir_with_link(&other, &dir, "agent.sock.lock", &precious);

    let out = victim.cli(&["serve"]);
    assert_ne!(out.code, 0, "the agent must not start there: {out:#?}");
    let said = &out.stderr;
    assert!(said.contains(&format!("{} belongs to uid {}", dir.display(), other.uid)), "names dir and owner: {said}");
    assert!(said.contains("remove it"), "says what to do: {said}");
    assert_eq!(snapshot(&precious), before, "the victim's file is untouched");
    assert!(!dir.join("agent.sock").exists(), "no socket was made in the other user's directory");
}

#[test]
fn an_agent_refuses_a_link_another_user_put_where_its_directory_goes() {
    let other = OtherUser::get();
    let victim = Victim::new();
    let theirs = victim.shared.join("theirs");
    other.sh(&format!(
        "mkdir '{t}' && chmod 777 '{t}' && ln -s '{t}' '{d}'",
        t = theirs.display(),
        d = victim.agent_dir().display()
    ));
    let out = victim.cli(&["serve"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("is a symbolic link, not a directory"), "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0, "nothing was made through the link");
}

/// The other user's fake agent on the victim's default socket, recording what reaches it.
struct Impostor {
    log: PathBuf,
    _server: other_user::Running,
}

impl Impostor {
    fn start(other: &OtherUser, victim: &Victim) -> Self {
        let dir = victim.agent_dir();
        let notes = victim.shared.join("impostor-notes");
        other.sh(&format!("mkdir -m 755 '{}' && mkdir -m 755 '{}'", dir.display(), notes.display()));
        let log = notes.join("log");
        let socket = dir.join("agent.sock");
        let mut server =
            other.spawn("python3", &["-c", other_user::LISTENER, socket.to_str().unwrap(), log.to_str().unwrap()]);
        let mut line = String::new();
        std::io::BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening", "the impostor started");
        Self { log, _server: server }
    }

    /// Bytes the impostor received from all connections so far.
    fn bytes_received(&self) -> usize {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("bytes "))
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    }
}

#[test]
fn the_victims_commands_refuse_an_impostor_agent_and_send_it_nothing() {
    let other = OtherUser::get();
    let victim = Victim::new();
    let impostor = Impostor::start(&other, &victim);
    let socket = victim.agent_dir().join("agent.sock");
    for args in [&["token"][..], &["whoami"], &["login"], &["exec", "--", "true"], &["status"]] {
        let out = victim.cli(args);
        assert_eq!(out.code, 3, "{args:?} must refuse the impostor: {out:#?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:#?}");
        let said = &out.stderr;
        assert!(
            said.contains(&format!("the process serving {} runs as uid {}", socket.display(), other.uid)),
            "{args:?} names the socket and its owner: {said}"
        );
        assert!(said.contains("nothing was sent"), "{args:?}: {said}");
    }
    assert_eq!(impostor.bytes_received(), 0, "the impostor got not one byte (no request, no token)");

    // The Python package refuses it as well, before connecting at all (the directory is not the victim's).
    let python = support::python_with_sdk();
    let script = "import pachagent\ntry:\n    pachagent.token()\nexcept pachagent.UntrustedAgent as e:\n    print(e)\n";
    let py = Command::new(&python)
        .args(["-c", script])
        .env("TMPDIR", &victim.shared)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("PACHAGENT_SOCKET")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&py.stdout);
    assert!(said.contains(&format!("belongs to uid {}", other.uid)), "{said}\n{}", String::from_utf8_lossy(&py.stderr));
    assert_eq!(impostor.bytes_received(), 0);
}

#[test]
fn the_cli_never_opens_an_agent_log_through_a_link_another_user_planted() {
    let other = OtherUser::get();
    let victim = Victim::new();
    let precious = victim.precious();
    let before = snapshot(&precious);
    let dir = victim.agent_dir();
    plant_shared_dir_with_link(&other, &dir, "agent.log", &precious);
    let out = victim.cli(&["login"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains(&format!("belongs to uid {}", other.uid)), "{}", out.stderr);
    assert_eq!(snapshot(&precious), before, "not appended to");

    // In the victim's own directory, left open to everyone by mistake: tightened, and the link refused.
    let victim = Victim::new();
    let precious = victim.precious();
    let before = snapshot(&precious);
    let dir = victim.agent_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    other.sh(&format!("ln -s '{}' '{}/agent.log'", precious.display(), dir.display()));
    let out = victim.cli(&["login"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("agent.log is a symbolic link"), "{}", out.stderr);
    assert!(out.stderr.contains("remove it"), "{}", out.stderr);
    assert_eq!(snapshot(&precious), before, "not appended to");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o700, "the directory was tightened");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_localhost_redirect_is_not_left_for_another_user_to_take_on_ipv6() {
    let other = OtherUser::get();
    let op = TestOp::start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.set_context_option("dev", "redirect_host", toml::Value::String("localhost".into()));
    agent.env("BROWSER", op::FAKE_USER);
    agent.start();

    // With a random port, both loopback families are the agent's, and the login works through either.
    agent.cli(&["login"]).ok();
    assert!(agent.log_text().contains("logged in"), "{}", agent.log_text());

    // A fixed port another user already holds on [::1] is refused, not half taken.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let notes = tempfile::tempdir().unwrap();
    std::fs::set_permissions(notes.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = notes.path().join("log");
    let mut listener =
        other.spawn("python3", &["-c", other_user::LISTENER, &format!("[::1]:{port}"), log.to_str().unwrap()]);
    let mut line = String::new();
    std::io::BufReader::new(listener.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    agent.set_context_option("dev", "redirect_ports", toml::Value::Array(vec![i64::from(port).into()]));
    agent.cli(&["context", "use", "dev"]).ok();
    let started = Instant::now();
    let out = agent.cli(&["login", "--force"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains(&format!("{port} is taken on [::1]")), "names the port and the family: {}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once, no browser sent");
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty(), "the other user's listener got nothing");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout.lines().next(), Some("You are \"user:alice@example.com\""));
}
