//! `pachagent dev`, the main job on its embedded defaults: a dev identity provider, pachd-dev and an agent on
//! loopback, logged in as dev@example.com, usable from another shell, renewing visibly, cleaned up on Ctrl-C.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Lines of a child's pipe, as they come.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line satisfying `pick`; returns it.
#[track_caller]
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, within: Duration, pick: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if pick(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no {what} within {within:?}; saw:\n{}", seen.join("\n"));
}

#[test]
fn pachagent_dev_logs_in_serves_another_shell_renews_and_cleans_up_on_ctrl_c() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a session bus with gnome-keyring: run it with scripts/test.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_pachagent"))
        .args(["dev", "--id-token-ttl", "10s"])
        .env("TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .env_remove("PACHAGENT_SOCKET")
        .env_remove("PACHAGENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(dev.stdout.take().unwrap());
    // The agent runs inside `dev`, holding live tokens: hardened as `serve` is.
    let status = std::fs::read_to_string(format!("/proc/{}/status", dev.id())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{}/status", dev.id())).unwrap().contains("Umask:\t0077") {
        assert!(Instant::now() < deadline, "dev never set umask 077:\n{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", dev.id())).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(), ["0", "0"], "no core dumps: {core}");
    let err = lines(dev.stderr.take().unwrap());
    let who = wait_line(&out, "the login", Duration::from_secs(60), |l| l.starts_with("You are "));
    assert_eq!(who, "You are \"user:dev@example.com\"");
    // Everything `dev` tells the user to type in another terminal, as printed.
    wait_line(&err, "the hint", Duration::from_secs(10), |l| l.contains("From another terminal:"));
    let mut hint = Vec::new();
    loop {
        let line = err.recv_timeout(Duration::from_secs(10)).expect("the hint's lines");
        if line.starts_with("Session events follow") {
            break;
        }
        if let Some(command) = line.strip_prefix("  ") {
            hint.push(command.to_owned());
        }
    }
    let value = |prefix: &str| {
        let line = hint.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {hint:?}"));
        line.split_once('=').unwrap().1.trim_matches('\'').to_owned()
    };
    let socket = value("export PACHAGENT_SOCKET=");
    assert!(hint.iter().any(|l| l.starts_with("export PACHAGENT_CONFIG=")), "{hint:?}");
    assert!(hint.iter().any(|l| l.contains(" exec -- ")), "the hint shows exec: {hint:?}");

    // "From another terminal": a shell whose PATH has no pachagent (as after `cargo run`) and the Python that
    // `pip install ./python` set up runs every printed line as it is.
    let python = support::python_with_sdk();
    let path = format!("{}:/usr/bin:/bin", python.parent().unwrap().display());
    let script = format!("set -e\n{}\n", hint.join("\n"));
    let shell = Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", &path)
        .env("HOME", tmp.path())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&shell.stdout), String::from_utf8_lossy(&shell.stderr));
    assert!(shell.status.success(), "the printed commands failed:\n{script}\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("You are \"user:dev@example.com\""), "{stdout}");
    assert!(stdout.contains("pachctl would read /"), "exec ran the command with its private config: {stdout}");
    assert_eq!(stdout.lines().filter(|l| *l == "user:dev@example.com").count(), 2, "both Python lines: {stdout}");
    assert!(stderr.contains("note: tokens for \"dev\" live less than twice"), "exec says it fitted: {stderr}");

    let refreshed = wait_line(&out, "a REFRESHED event", Duration::from_secs(30), |l| l.contains(" REFRESHED "));
    assert!(refreshed.contains("user:dev@example.com"), "{refreshed}");

    #[allow(unsafe_code)]
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pachagent dev did not stop within 20 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(&socket).exists(), "the temporary socket directory is gone");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with("pachagent-dev-")), "left behind: {left:?}");
}
