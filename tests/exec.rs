//! `pachagent exec`: a command runs with the context's session in its environment and in a private pachctl
//! config, which is gone when the command ends; pachagent exits with the command's status. Real `pachagent` and
//! `pachd-dev` processes and the kernel keyutils store (no session bus needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use support::{Keyring, PachdDev, TestAgent, files_containing, signal};

/// An agent logged in to `pachd` with a robot token, whose CLI makes its temporary files in a directory of the
/// test (so that the test sees everything exec leaves behind).
async fn logged_in_agent(pachd: &PachdDev) -> (TestAgent, String, PathBuf) {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    let tmp = agent.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    agent.env("TMPDIR", tmp.to_str().unwrap());
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).ok();
    (agent, token, tmp)
}

#[track_caller]
fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "exec left {left:?} behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_gets_the_token_and_a_private_pachctl_config_that_is_gone_afterwards() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, token, tmp) = logged_in_agent(&pachd).await;
    // The user's own pachctl setup, which exec must neither use nor change.
    let own = agent.dir.path().join(".pachyderm").join("config.json");
    std::fs::create_dir_all(own.parent().unwrap()).unwrap();
    let own_text = r#"{"v2":{"active_context":"mine","contexts":{"mine":{"pachd_address":"grpc://elsewhere:1"}}}}"#;
    std::fs::write(&own, own_text).unwrap();
    agent.env("PACH_CONFIG", own.to_str().unwrap());
    agent.env("PACH_CONTEXT", "mine");

    let script = r#"printf '%s\n' "${PACHD_ADDRESS-unset}" "$PACH_PYTHON_AUTH_TOKEN" "$PACH_CONFIG" "${PACH_CONTEXT-unset}"
        stat -c %a "$PACH_CONFIG" "$(dirname "$PACH_CONFIG")"
        cat "$PACH_CONFIG""#;
    let out = agent.cli(&["exec", "--", "sh", "-c", script]);
    out.ok();
    let mut lines = out.stdout.lines();
    let mut next = || lines.next().unwrap().to_owned();
    assert_eq!(next(), "unset", "PACHD_ADDRESS, which no Python client reads and which makes pachctl drop server_cas");
    assert_eq!(next(), token, "PACH_PYTHON_AUTH_TOKEN");
    let config = PathBuf::from(next());
    assert!(config.starts_with(&tmp), "the private config is in the temp dir: {config:?}");
    assert_eq!(next(), "unset", "PACH_CONTEXT would name a context the private config lacks");
    assert_eq!(next(), "600", "the config file is owner-only");
    assert_eq!(next(), "700", "so is its directory");
    let json: String = lines.collect::<Vec<_>>().join("\n");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(json["v2"]["active_context"], "pachagent");
    let ctx = &json["v2"]["contexts"]["pachagent"];
    assert_eq!(ctx["pachd_address"], pachd.address.as_str());
    assert_eq!(ctx["session_token"], token.as_str());

    assert!(!config.exists() && !config.parent().unwrap().exists(), "the private config is removed");
    assert_empty(&tmp);
    assert_eq!(std::fs::read_to_string(&own).unwrap(), own_text, "the user's pachctl config is untouched");
    agent.stop();
    let leaks = files_containing(agent.dir.path(), &token);
    assert!(leaks.is_empty(), "the token is left in {leaks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pachagent_exits_with_the_commands_status_or_128_plus_the_signal_that_ended_it() {
    let pachd = PachdDev::start(None, None);
    let (agent, _token, tmp) = logged_in_agent(&pachd).await;
    assert_eq!(agent.cli(&["exec", "--", "sh", "-c", "exit 7"]).code, 7);
    assert_eq!(agent.cli(&["exec", "--", "true"]).code, 0);
    assert_eq!(agent.cli(&["exec", "--", "sh", "-c", "kill -TERM $$"]).code, 128 + libc::SIGTERM);
    assert_empty(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_does_not_exist_exits_127_with_a_clear_message() {
    let pachd = PachdDev::start(None, None);
    let (agent, token, tmp) = logged_in_agent(&pachd).await;
    let out = agent.cli(&["exec", "--", "no-such-command-for-pachagent"]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("\"no-such-command-for-pachagent\": command not found"), "{out:#?}");
    assert!(!out.stderr.contains(&token));
    assert_eq!(agent.cli(&["exec", "--", "/"]).code, 126, "a directory cannot be run");
    assert_empty(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_pachagent_reaches_the_command_and_the_config_is_still_removed() {
    let pachd = PachdDev::start(None, None);
    let (agent, _token, tmp) = logged_in_agent(&pachd).await;
    let script = "trap 'echo got-term; exit 5' TERM; echo ready >&2; while :; do sleep 0.05; done";
    let mut running = agent.spawn_cli(&["exec", "--", "sh", "-c", script]);
    running.wait_for_stderr("ready", |l| (l == "ready").then_some(()));
    signal(running.pid(), libc::SIGTERM);
    let out = running.finish(20);
    assert_eq!(out.code, 5, "the command's own status after its TERM trap: {out:#?}");
    assert_eq!(out.stdout, "got-term\n");
    assert_empty(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_session_nothing_runs_and_the_exit_code_is_1() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let marker = agent.dir.path().join("ran");
    let out = agent.cli(&["exec", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("pachagent login"), "{out:#?}");
    assert!(!marker.exists(), "the command did not run");
}

#[test]
fn without_an_agent_nothing_runs_and_the_exit_code_is_3() {
    let agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", "grpc://127.0.0.1:1", &[]);
    let marker = agent.dir.path().join("ran");
    let out = agent.cli(&["exec", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("pachagent serve"), "{out:#?}");
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_killed_exec_left_behind_is_removed_by_the_next_exec() {
    let pachd = PachdDev::start(None, None);
    let (agent, token, tmp) = logged_in_agent(&pachd).await;
    // The command kills its exec with SIGKILL: no cleanup can run.
    let killed = agent.cli(&["exec", "--", "sh", "-c", "kill -KILL $PPID; sleep 1"]);
    assert_eq!(killed.code, -1, "exec itself died of the signal (no exit code): {killed:#?}");
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left.len(), 1, "the killed exec's directory: {left:?}");
    assert_eq!(files_containing(&tmp, &token).len(), 1, "it holds a live token");
    let name = left[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("pachagent-exec-"), "named by its pid: {name}");

    // A live exec's directory is not the sweep's to remove (this test process stands in for one).
    let alive = tmp.join(format!("pachagent-exec-{}-alive", std::process::id()));
    std::fs::create_dir(&alive).unwrap();

    let next = agent.cli(&["exec", "--", "true"]);
    assert_eq!(next.code, 0, "{next:#?}");
    assert!(!left[0].exists(), "the next exec removed what the killed one left");
    assert!(alive.exists(), "a directory whose pid still runs stays");
    assert!(files_containing(&tmp, &token).is_empty(), "no token is left on disk");
}
