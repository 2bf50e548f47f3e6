//! The CLI on a terminal: `context add` asks for what its flags left out, checks each answer before the next
//! question and asks again after a bad one, and asks nothing when the flags say it all; without a terminal a
//! missing value is an error naming its flag. `status` is coloured on a terminal, and only there, unless
//! `NO_COLOR` is set. The terminal is a real pseudo-terminal (openpty) that the test reads and types at.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::issuer::TestIssuer;
use support::{Keyring, PachdDev, TestAgent};

/// Nothing here waits on the network for long; a prompt that has not come by then never will.
const PROMPT_WITHIN: Duration = Duration::from_secs(30);

/// A command running with a pseudo-terminal as its stdin and stderr (and, if asked, stdout).
struct OnTerminal {
    child: Child,
    /// The terminal's side the user has: what is typed goes in, what the command writes (and the echo) comes out.
    keyboard: File,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

#[allow(unsafe_code)]
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty stores two descriptors it has just opened in the two ints; a null name, termios and window
    // size are allowed and mean the defaults.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were opened by openpty above, and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

impl OnTerminal {
    /// Starts `cmd` on a new terminal; stdout is the terminal too when `stdout_on_terminal`, else a pipe.
    fn start(mut cmd: Command, stdout_on_terminal: bool) -> Self {
        let (master, slave) = openpty();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap())).stderr(Stdio::from(slave.try_clone().unwrap()));
        if stdout_on_terminal {
            cmd.stdout(Stdio::from(slave));
        } else {
            drop(slave);
            cmd.stdout(Stdio::piped());
        }
        let child = cmd.spawn().expect("run pachagent");
        // The command holds the last copies of the terminal's other side: once it exits, reading ends.
        drop(cmd);
        let keyboard = File::from(master);
        let mut screen_end = keyboard.try_clone().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once no process has the terminal open any more.
                while let Ok(n @ 1..) = screen_end.read(&mut buf) {
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        Self { child, keyboard, screen, reader: Some(reader) }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `text` has appeared `times` times on the terminal.
    #[track_caller]
    fn wait_for(&self, text: &str, times: usize) {
        let deadline = Instant::now() + PROMPT_WITHIN;
        while self.screen().matches(text).count() < times {
            assert!(Instant::now() < deadline, "no {text:?} (×{times}) on the terminal:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.keyboard.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Ctrl-D at the start of a line: the end of the input.
    fn end_input(&mut self) {
        self.keyboard.write_all(&[0x04]).unwrap();
    }

    /// Waits for the command to exit; returns its exit code, its stdout (when piped) and the whole terminal.
    #[track_caller]
    fn finish(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + PROMPT_WITHIN;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the command did not exit:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            pipe.read_to_string(&mut stdout).unwrap();
        }
        self.reader.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), stdout, self.screen())
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pachagent ARGS` against `agent`'s socket and config, with none of the test run's own colour settings.
fn pachagent(agent: &TestAgent, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pachagent"));
    cmd.args(args)
        .env("HOME", agent.dir.path())
        .env("PACHAGENT_SOCKET", &agent.socket)
        .env("PACHAGENT_CONFIG", &agent.config)
        .env_remove("PACHAGENT_CONTEXT")
        .env_remove("NO_COLOR");
    cmd
}

/// The context `name` as `context list --json` reads it back from the config file.
#[track_caller]
fn context_in_file(agent: &TestAgent, name: &str) -> Option<serde_json::Value> {
    let list = agent.cli(&["context", "list", "--json"]);
    list.ok().json()["contexts"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned()
}

const PACHD_QUESTION: &str = "pachd address";
const ISSUER_QUESTION: &str = "OIDC issuer URL";
const CLIENT_ID_QUESTION: &str = "OAuth client id";
const TRY_AGAIN: &str = "Try again";

#[test]
fn context_add_on_a_terminal_asks_for_pachd_issuer_and_client_id_and_asks_again_after_each_bad_answer() {
    let issuer = TestIssuer::start();
    let agent = TestAgent::new(Keyring::Keyutils);
    let mut term = OnTerminal::start(pachagent(&agent, &["context", "add", "prod"]), false);

    term.wait_for(PACHD_QUESTION, 1);
    term.type_line("grpcs://pachd.example.com:443/api");
    term.wait_for(TRY_AGAIN, 1);
    assert!(term.screen().contains("no path"), "says what is wrong with the address:\n{}", term.screen());
    term.wait_for(PACHD_QUESTION, 2);
    term.type_line("grpcs://pachd.example.com:443");

    term.wait_for(ISSUER_QUESTION, 1);
    // Nothing listens on port 1: the issuer is checked now, not at the first login.
    term.type_line("http://127.0.0.1:1");
    term.wait_for(TRY_AGAIN, 2);
    assert!(term.screen().contains("is unreachable"), "says the issuer cannot be reached:\n{}", term.screen());
    term.wait_for(ISSUER_QUESTION, 2);
    term.type_line(issuer.issuer());

    term.wait_for(CLIENT_ID_QUESTION, 1);
    term.type_line("");
    term.wait_for(TRY_AGAIN, 3);
    term.wait_for(CLIENT_ID_QUESTION, 2);
    term.type_line("pachagent");

    let (code, stdout, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(
        stdout.starts_with("Added context \"prod\" (grpcs://pachd.example.com:443, login method oidc)"),
        "{stdout}"
    );
    let prod = context_in_file(&agent, "prod").expect("the context is in the config file");
    assert_eq!(prod["pachd_address"], "grpcs://pachd.example.com:443");
    assert_eq!(prod["issuer"], issuer.issuer());
    assert_eq!(prod["client_id"], "pachagent");
    assert_eq!(prod["method"], "oidc");
    let file = std::fs::read_to_string(&agent.config).unwrap();
    assert!(file.contains(issuer.issuer()), "{file}");
}

#[test]
fn context_add_on_a_terminal_with_no_issuer_uses_pachds_own_login_and_asks_no_client_id() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let mut term = OnTerminal::start(pachagent(&agent, &["context", "add", "local"]), false);
    term.wait_for(PACHD_QUESTION, 1);
    term.type_line("localhost");
    term.wait_for(ISSUER_QUESTION, 1);
    term.type_line("");
    let (code, stdout, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(CLIENT_ID_QUESTION), "{screen}");
    assert!(stdout.contains("(grpc://localhost:30650, login method pachd)"), "{stdout}");
    let local = context_in_file(&agent, "local").unwrap();
    assert_eq!(local["method"], "pachd");
    assert_eq!(local["issuer"], serde_json::Value::Null);
}

#[test]
fn context_add_on_a_terminal_asks_nothing_when_the_flags_say_it_all() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let term = OnTerminal::start(pachagent(&agent, &["context", "add", "dev", "--pachd", "localhost:30650"]), false);
    let (code, stdout, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(PACHD_QUESTION) && !screen.contains(ISSUER_QUESTION), "asked: {screen}");
    assert!(stdout.starts_with("Added context \"dev\""), "{stdout}");
}

#[test]
fn ending_the_input_at_a_question_changes_nothing_and_names_the_flag() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let mut term = OnTerminal::start(pachagent(&agent, &["context", "add", "prod"]), false);
    term.wait_for(PACHD_QUESTION, 1);
    term.end_input();
    let (code, _, screen) = term.finish();
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("nothing was changed") && screen.contains("pachagent context add prod --pachd ADDRESS"));
    assert!(context_in_file(&agent, "prod").is_none());
}

#[test]
fn context_add_without_a_terminal_and_without_pachd_is_a_usage_error_naming_the_flag() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let out = agent.cli(&["context", "add", "prod"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("missing --pachd"), "{out:#?}");
    assert!(out.stderr.contains("run pachagent context add prod --pachd ADDRESS"), "{out:#?}");
    assert!(context_in_file(&agent, "prod").is_none());
}

#[test]
fn status_is_coloured_on_a_terminal_and_plain_with_no_color_or_in_a_pipe() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    const ESC: char = '\u{1b}';

    let (code, _, screen) = OnTerminal::start(pachagent(&agent, &["status"]), true).finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("logged out") && screen.contains(ESC), "a terminal gets colours: {screen:?}");

    let mut no_color = pachagent(&agent, &["status"]);
    no_color.env("NO_COLOR", "1");
    let (code, _, screen) = OnTerminal::start(no_color, true).finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("logged out") && !screen.contains(ESC), "NO_COLOR wins: {screen:?}");

    let piped = pachagent(&agent, &["status"]).output().unwrap();
    let text = String::from_utf8(piped.stdout).unwrap();
    assert!(piped.status.success() && text.contains("logged out") && !text.contains(ESC), "a pipe: {text:?}");
}
