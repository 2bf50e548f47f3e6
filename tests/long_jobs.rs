//! Long jobs never break: every holder of a session keeps working across renewals. A process that read a token
//! once keeps it until the token's own expiration; a command under `exec` finds a current token in its pachctl
//! config for as long as it runs; a logout still revokes everything the session handed out, even after the
//! agent restarted. Real OpenID Provider with short-lived ID tokens, real pachd-dev, real keyring, and the real
//! `pachyderm-sdk` from PyPI for the clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use pachagent::proto::agent::{EventKind, WatchRequest};
use support::op::{self, TestOp};
use support::tls::TestCa;
use support::{CliOutput, Keyring, PachdDev, TestAgent, python_with_sdk, renewable_session};

const PACHD_LOOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pachd_loop.py");

/// `pachagent token --json`: the token and when it expires (to the second, rounded down).
#[track_caller]
fn token(agent: &TestAgent, extra: &[&str]) -> (String, SystemTime) {
    let mut args = vec!["token", "--json"];
    args.extend_from_slice(extra);
    let json = agent.cli(&args).ok().json();
    let expiration = chrono::DateTime::parse_from_rfc3339(json["expiration"].as_str().unwrap()).unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(expiration.timestamp_millis() as u64);
    (json["token"].as_str().unwrap().to_owned(), at)
}

/// Sleeps until `left` before `at`.
async fn until_left(at: SystemTime, left: Duration) {
    let wake = at.checked_sub(left).unwrap();
    tokio::time::sleep(wake.duration_since(SystemTime::now()).unwrap_or_default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_read_once_before_two_renewals_is_accepted_by_pachd_until_its_own_expiration() {
    let (_op, pachd, agent) = renewable_session(Duration::from_secs(40), Keyring::SecretService);
    let mut events = agent.grpc().await.watch(WatchRequest::default()).await.unwrap().into_inner();
    let (first, first_expires) = token(&agent, &[]);
    // Two renewals before the first token is half gone: each caller asks for more than the current token has
    // left (and less than a fresh one gives), as a script wanting a long-lived token would.
    let mut current = (first.clone(), first_expires);
    for renewal in 1..=2 {
        until_left(current.1, Duration::from_secs(28)).await;
        let next = token(&agent, &["--min-valid", "30s"]);
        assert_ne!(next.0, current.0, "renewal {renewal} gave a new token");
        support::next_event_after(&agent, &mut events, EventKind::Refreshed, Duration::from_secs(5)).await;
        assert_eq!(pachd.who_am_i(&first).await.unwrap(), "user:alice@example.com", "after renewal {renewal}");
        current = next;
    }
    // The job that read the first token goes on using it, right up to its end.
    while SystemTime::now() + Duration::from_millis(700) < first_expires {
        let who = pachd.who_am_i(&first).await;
        assert!(who.is_ok(), "pachd refused the first token before its expiration: {who:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `token --json` gives the expiration in whole seconds, up to a second early.
    until_left(first_expires, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(pachd.who_am_i(&first).await.is_err(), "pachd refuses it once it has expired");
    assert_eq!(pachd.who_am_i(&current.0).await.unwrap(), "user:alice@example.com", "the current one works");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_every_token_the_session_handed_out_even_after_an_agent_restart() {
    let (_op, pachd, mut agent) = renewable_session(Duration::from_secs(60), Keyring::SecretService);
    let (t1, expires) = token(&agent, &[]);
    until_left(expires, Duration::from_secs(56)).await;
    let (t2, expires) = token(&agent, &["--min-valid", "58s"]);
    until_left(expires, Duration::from_secs(56)).await;
    let (t3, _) = token(&agent, &["--min-valid", "58s"]);
    assert!(t1 != t2 && t2 != t3 && t1 != t3, "two renewals, three tokens");

    agent.stop();
    agent.start();
    assert_eq!(token(&agent, &[]).0, t3, "the restarted agent serves the current token");
    for t in [&t1, &t2, &t3] {
        assert_eq!(pachd.who_am_i(t).await.unwrap(), "user:alice@example.com", "every holder still works");
    }
    let out = agent.cli(&["logout"]);
    out.ok();
    assert_eq!(
        out.stdout,
        "dev: logged out; 3 tokens were revoked at pachd (the current one and 2 handed out before renewals)\n"
    );
    for t in [&t1, &t2, &t3] {
        let refused = pachd.who_am_i(t).await.expect_err("pachd still accepts a token of the logged-out session");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn asking_for_more_validity_than_the_provider_issues_says_so_and_that_a_login_will_not_help() {
    let (_op, _pachd, agent) = renewable_session(Duration::from_secs(60), Keyring::Keyutils);
    let out = agent.cli(&["token", "--min-valid", "5m"]);
    assert_eq!(out.code, 2, "a request to change, not a missing session: {out:#?}");
    assert!(out.stdout.is_empty(), "no token: {out:#?}");
    let said = &out.stderr;
    // The lifetime as the agent measured it: the ID token's minute less the login's own time.
    let lifetime = said.split("tokens for \"dev\" live ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    assert!(matches!(lifetime, "55s" | "56s" | "57s" | "58s" | "59s"), "names the provider's lifetime: {said}");
    assert!(said.contains("less than the 5m asked for"), "{said}");
    assert!(said.contains("a new login will not help"), "{said}");
    assert!(!said.contains("run pachagent login"), "it must not send the user to a login that cannot help: {said}");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "active", "the session stays");
}

/// Runs `tests/clients/pachd_loop.py MODE SECONDS INTERVAL` under `pachagent exec` (or directly with
/// `exec = false`), with the virtual environment's Python first on PATH.
fn pachd_loop(
    agent: &TestAgent,
    exec_args: Option<&[&str]>,
    mode: &str,
    seconds: u32,
) -> (CliOutput, serde_json::Value) {
    let python = python_with_sdk();
    let seconds = seconds.to_string();
    let out = match exec_args {
        Some(extra) => {
            let mut args = vec!["exec"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--", python.to_str().unwrap(), PACHD_LOOP, mode, &seconds, "1"]);
            agent.cli(&args)
        }
        None => {
            let out = Command::new(&python)
                .args([PACHD_LOOP, mode, &seconds, "1"])
                .env("PACHAGENT_SOCKET", &agent.socket)
                .env("PACHAGENT_CONFIG", &agent.config)
                .output()
                .unwrap();
            CliOutput {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };
    let summary = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("no summary ({e}): {out:#?}"));
    (out, summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_under_exec_that_reads_its_pachctl_config_every_second_is_never_refused_across_renewals() {
    let (op, _pachd, agent) = renewable_session(Duration::from_secs(8), Keyring::SecretService);
    let before = op.grants("refresh_token");
    // 8 s tokens renew about every 4 s: 20 s of calls span four renewals and two whole token lifetimes, so
    // only a config that exec keeps current can carry the command through.
    let (out, summary) = pachd_loop(&agent, Some(&[]), "from-config", 20);
    out.ok();
    let renewals = op.grants("refresh_token") - before;
    assert!(renewals >= 3, "only {renewals} renewals while the command ran");
    assert_eq!(summary["failures"], 0, "pachd refused the command: {summary}\n{}", out.stderr);
    assert!(summary["calls"].as_u64().unwrap() >= 15, "{summary}");
    assert!(summary["distinct_tokens"].as_u64().unwrap() >= 3, "the config got the renewed tokens: {summary}");
    assert_eq!(summary["users"], serde_json::json!(["user:alice@example.com"]));
    assert_eq!(summary["pachd_address_set"], false, "exec sets no PACHD_ADDRESS: {summary}");
    assert!(
        out.stderr.contains("note: tokens for \"dev\" live less than twice exec's default --min-valid of 5m"),
        "exec says why it asked for less than its default: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_pachagent_client_made_once_calls_pachd_every_second_across_renewals_without_a_failure() {
    let (op, _pachd, agent) = renewable_session(Duration::from_secs(8), Keyring::SecretService);
    let before = op.grants("refresh_token");
    let (out, summary) = pachd_loop(&agent, None, "agent", 20);
    assert_eq!(out.code, 0, "{out:#?}");
    let renewals = op.grants("refresh_token") - before;
    assert!(renewals >= 3, "only {renewals} renewals while the client ran");
    assert_eq!(summary["failures"], 0, "{summary}");
    assert!(summary["calls"].as_u64().unwrap() >= 15, "{summary}");
    assert!(summary["distinct_tokens"].as_u64().unwrap() >= 2, "the client followed the renewals: {summary}");
    assert_eq!(summary["users"], serde_json::json!(["user:alice@example.com"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn under_exec_a_cluster_with_a_private_ca_works_from_the_contexts_ca_file() {
    let ca = TestCa::new();
    let op = TestOp::builder().id_token_ttl(Duration::from_secs(60)).start();
    let flags = ca.pachd_flags();
    let mut args = vec!["--client-id", op::PUBLIC_CLIENT];
    args.extend(flags.iter().map(String::as_str));
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &args);
    assert!(pachd.address.starts_with("grpcs://127.0.0.1:"), "pachd-dev serves TLS: {}", pachd.address);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.set_context_option("dev", "ca_file", toml::Value::String(ca.ca().display().to_string()));
    agent.env("BROWSER", op::FAKE_USER);
    agent.start();
    agent.cli(&["login"]).ok();

    let script = r#"import base64, json, os
ctx = json.load(open(os.environ["PACH_CONFIG"]))["v2"]["contexts"]["pachagent"]
print(base64.b64decode(ctx["server_cas"]).decode(), end="")
from pachyderm_sdk import Client
print(Client.from_config().auth.who_am_i().username)
print("PACHD_ADDRESS" in os.environ)
"#;
    let python = python_with_sdk();
    let out = agent.cli(&["exec", "--", python.to_str().unwrap(), "-c", script]);
    out.ok();
    let pem = std::fs::read_to_string(ca.ca()).unwrap();
    let rest = out.stdout.strip_prefix(pem.as_str()).unwrap_or_else(|| panic!("server_cas is the CA: {out:#?}"));
    assert_eq!(rest, "user:alice@example.com\nFalse\n", "pachyderm_sdk trusted the CA from the config: {out:#?}");
}

#[test]
fn exec_sets_pachd_address_only_when_asked() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.env("PACHD_ADDRESS", "grpc://somewhere-else:1");
    agent.start();
    let token = tokio::runtime::Runtime::new().unwrap().block_on(pachd.robot_token("ci", 0));
    agent.cli_stdin(&["login", "--token-stdin"], &token).ok();
    let show = ["sh", "-c", "echo \"${PACHD_ADDRESS-unset}\""];
    let plain = agent.cli(&[&["exec", "--"][..], &show[..]].concat());
    assert_eq!(plain.ok().stdout, "unset\n", "not even the caller's own, which would send pachctl elsewhere");
    let asked = agent.cli(&[&["exec", "--pachd-address-env", "--"][..], &show[..]].concat());
    assert_eq!(asked.ok().stdout, format!("{}\n", pachd.address));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_robot_token_the_user_handed_in_survives_later_logins_and_their_logout() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let ci = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &ci).ok();
    let nightly = pachd.robot_token("nightly", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &nightly).ok();
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:nightly\"\n");
    assert_eq!(pachd.who_am_i(&ci).await.unwrap(), "robot:ci", "the first robot token is the user's, not the agent's");
    let out = agent.cli(&["logout"]);
    assert_eq!(out.ok().stdout, "dev: logged out; the token was revoked at pachd\n");
    assert!(pachd.who_am_i(&nightly).await.is_err(), "the session's own token is revoked");
    assert_eq!(pachd.who_am_i(&ci).await.unwrap(), "robot:ci", "the one it replaced is still the user's");
}
