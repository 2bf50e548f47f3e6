//! Secrets stay where they belong: a whole session's life — browser login with a confidential client, a renewal,
//! `exec`, logout — run with `RUST_LOG=trace`, and then every secret of it (pach tokens, refresh tokens, ID and
//! access tokens, the authorization code, the PKCE verifier, the client secret) is looked for everywhere it must
//! not be: the agent's log, every command's output, every file under `$HOME`, `$TMPDIR` and the runtime dir, and
//! the command line and environment of the agent and of the browser it opened. The agent also runs with core dumps
//! off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::op::{self, TestOp};
use support::{CliOutput, Keyring, PachdDev, TestAgent, files_containing};

/// A `$BROWSER` that records its command line and environment in `dir`, then hands over to the scripted user.
fn recording_browser(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$$\nprintf '%s\\n' \"$0\" \"$@\" > '{dir}/argv.'$n\nenv > '{dir}/env.'$n\n\
             FAKE_USER_LOG='{dir}/fake-user.log' exec python3 '{fake}' \"$@\"\n",
            dir = dir.display(),
            fake = op::FAKE_USER,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// Every place a secret must not be, with a name for the report.
struct Haystacks {
    texts: Vec<(String, String)>,
}

impl Haystacks {
    fn add(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.texts.push((name.into(), text.into()));
    }

    fn output(&mut self, command: &str, out: &CliOutput) {
        self.add(format!("stdout of `pachagent {command}`"), out.stdout.clone());
        self.add(format!("stderr of `pachagent {command}`"), out.stderr.clone());
    }

    fn process(&mut self, what: &str, pid: u32) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        self.add(format!("command line of {what}"), String::from_utf8_lossy(&cmdline).replace('\0', " "));
        self.add(format!("environment of {what}"), String::from_utf8_lossy(&environ).replace('\0', "\n"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_a_whole_session_leaks_into_logs_output_files_or_child_processes() {
    let op = TestOp::builder().id_token_ttl(Duration::from_secs(60)).start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::CONFIDENTIAL_CLIENT]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    let records = tempfile::tempdir().unwrap();
    let tmp = agent.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    agent.env("TMPDIR", tmp.to_str().unwrap());
    agent.env("RUST_LOG", "trace");
    agent.env("BROWSER", recording_browser(records.path()).to_str().unwrap());
    let mut seen = Haystacks { texts: Vec::new() };

    let add = agent.cli_stdin(
        &["context", "add", "dev", "--pachd", &pachd.address, "--issuer", op.issuer()]
            .into_iter()
            .chain(["--client-id", op::CONFIDENTIAL_CLIENT, "--client-secret-stdin"])
            .collect::<Vec<_>>(),
        &format!("{}\n", op::CONFIDENTIAL_SECRET),
    );
    seen.output("context add", add.ok());
    agent.start();
    let agent_pid = agent.locked_pid().expect("the agent holds its lock");
    seen.process("the agent", agent_pid);
    // A crash must not write the agent's memory (live tokens) to a core file.
    let limits = std::fs::read_to_string(format!("/proc/{agent_pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "core dumps are off: {core}");

    let login = agent.cli(&["login"]);
    seen.output("login", login.ok());
    let first = agent.cli(&["token"]).ok().stdout.trim().to_owned();
    // Renewal: ask for more validity than is left of the first token (at most 54 s after the wait), but less than
    // a fresh one has: 60 s from a whole-second `iat`, less the renewal itself, which a loaded machine can stretch
    // past a second or two.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let renewed = agent.cli(&["token", "--min-valid", "55s"]);
    let second = renewed.ok().stdout.trim().to_owned();
    assert_ne!(first, second, "the session was renewed");
    seen.add("stderr of `pachagent token`", renewed.stderr.clone());
    let refresh_token = agent.stored("dev").await.unwrap().refresh_token.unwrap().expose_secret().to_owned();
    for command in [&["whoami", "--verify"][..], &["status", "--json"], &["status"], &["doctor"]] {
        let out = agent.cli(command);
        seen.output(&command.join(" "), &out);
    }
    let exec = agent.cli(&[
        "exec",
        "--min-valid",
        "10s",
        "--",
        "sh",
        "-c",
        "test -n \"$PACH_PYTHON_AUTH_TOKEN\" && test -s \"$PACH_CONFIG\"",
    ]);
    seen.output("exec", exec.ok());
    let logout = agent.cli(&["logout"]);
    seen.output("logout", logout.ok());
    agent.stop();

    seen.add("the agent's log", agent.log_text());
    assert!(agent.log_text().contains("TRACE"), "trace logging was on");
    let mut browsers = 0;
    for entry in std::fs::read_dir(records.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        browsers += usize::from(name.starts_with("argv."));
        if name.starts_with("argv.") || name.starts_with("env.") {
            seen.add(format!("the browser's {name}"), std::fs::read_to_string(entry.path()).unwrap());
        }
    }

    assert!(browsers > 0, "the login opened the browser");
    let mut secrets: Vec<(String, String)> = op.seen_secrets().into_iter().collect();
    secrets.push(("a pach token".into(), first));
    secrets.push(("the renewed pach token".into(), second));
    secrets.push(("the stored refresh token".into(), refresh_token));
    secrets.push(("the client secret".into(), op::CONFIDENTIAL_SECRET.into()));
    for kind in ["authorization code", "PKCE verifier", "refresh token", "ID token", "access token"] {
        assert!(secrets.iter().any(|(k, _)| k.starts_with(kind)), "the provider saw no {kind}: {:?}", secrets.len());
    }
    for (kind, secret) in &secrets {
        assert!(secret.len() >= 16, "{kind} is long enough to search for");
        for (place, text) in &seen.texts {
            assert!(!text.contains(secret.as_str()), "{kind} appears in {place}");
        }
        for dir in [agent.dir.path(), tmp.as_path()] {
            let hits = files_containing(dir, secret);
            assert!(hits.is_empty(), "{kind} was written to {hits:?}");
        }
    }
}
