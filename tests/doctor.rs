//! `pachagent doctor` against a real provider (the test OP) and pachd-dev, in good and broken setups: each
//! check says ✔ or ✘ with what to fix, and the exit code is 1 as soon as one fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::issuer::TestIssuer;
use support::op::{self, TestOp};
use support::{CliOutput, Keyring, PachdDev, TestAgent};

/// An agent whose context "dev" logs in as the OP's public client through `issuer` at `pachd`, with `extra` context flags.
fn agent_for(issuer: &str, pachd: &str, extra: &[&str]) -> TestAgent {
    let agent = TestAgent::new(Keyring::Keyutils);
    let mut flags = vec!["--issuer", issuer, "--client-id", op::PUBLIC_CLIENT];
    flags.extend_from_slice(extra);
    agent.add_context("dev", pachd, &flags);
    agent
}

/// The line of check `name`.
#[track_caller]
fn line<'a>(out: &'a CliOutput, name: &str) -> &'a str {
    let prefix = format!(" {name}: ");
    out.stdout.lines().find(|l| l.contains(&prefix)).unwrap_or_else(|| panic!("no {name} check: {out:#?}"))
}

#[track_caller]
fn passed(out: &CliOutput, name: &str) -> String {
    let l = line(out, name);
    assert!(l.starts_with('✔'), "{name} should pass: {out:#?}");
    l.to_owned()
}

#[track_caller]
fn failed(out: &CliOutput, name: &str) -> String {
    let l = line(out, name);
    assert!(l.starts_with('✘'), "{name} should fail: {out:#?}");
    l.to_owned()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_working_setup_passes_every_check_and_names_the_exact_callback_url_to_register() {
    let op = TestOp::start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let port = free_port().to_string();
    let mut agent = agent_for(op.issuer(), &pachd.address, &["--redirect-port", &port]);
    agent.start();

    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 0, "{out:#?}");
    passed(&out, "config");
    passed(&out, "context");
    assert!(passed(&out, "pachd").contains("has auth activated"));
    assert!(passed(&out, "issuer").contains(&format!("{:?}", op.issuer())));
    passed(&out, "signing keys");
    passed(&out, "login method");
    let redirect = passed(&out, "redirect");
    assert!(redirect.contains(&format!("register http://127.0.0.1:{port}/callback at the provider")), "{redirect}");
    passed(&out, "clock");
    assert!(line(&out, "keyring").starts_with('!'), "keyutils works but does not survive a reboot: {out:#?}");
    let agent_line = passed(&out, "agent");
    assert!(agent_line.contains("running as you"), "{agent_line}");

    let json = agent.cli(&["doctor", "--json"]);
    let json = json.ok().json();
    assert_eq!(json["ok"], true);
    assert!(json["checks"].as_array().unwrap().iter().any(|c| c["name"] == "pachd" && c["status"] == "pass"));
}

#[test]
fn an_issuer_that_differs_only_by_a_trailing_slash_is_flagged_with_the_exact_fix() {
    let op = TestOp::builder().trailing_slash().start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let without_slash = op.issuer().trim_end_matches('/').to_owned();
    let agent = agent_for(&without_slash, &pachd.address, &[]);

    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 1, "{out:#?}");
    passed(&out, "pachd");
    let issuer = failed(&out, "issuer");
    assert!(issuer.contains("has a trailing slash the configured one lacks"), "{issuer}");
    assert!(issuer.contains(&format!("set issuer = {:?}", op.issuer())), "{issuer}");
    assert_eq!(agent.cli(&["doctor", "--json"]).json()["ok"], false);
}

#[test]
fn pachd_down_fails_the_pachd_check_and_the_rest_still_run() {
    let op = TestOp::start();
    let mut pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let agent = agent_for(op.issuer(), &pachd.address, &[]);
    pachd.stop();

    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let line = failed(&out, "pachd");
    assert!(line.contains("unreachable"), "{line}");
    passed(&out, "issuer");
    let redirect = passed(&out, "redirect");
    assert!(redirect.contains("register http://127.0.0.1/callback with any port"), "{redirect}");
}

#[test]
fn a_pachd_without_auth_activated_is_told_apart_from_one_that_is_down() {
    // pachd-dev without a root token starts with auth off, like a fresh pachd.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pachd-dev"))
        .args(["--listen", "127.0.0.1:0", "--no-issuer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", ready["pachd"].as_str().unwrap(), &[]);

    let out = agent.cli(&["doctor"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 1, "{out:#?}");
    let line = failed(&out, "pachd");
    assert!(line.contains("auth is not activated") && line.contains("pachctl auth activate"), "{line}");
    assert!(!out.stdout.contains(" issuer: "), "a context with the pachd login has no provider to check: {out:#?}");
}

#[test]
fn a_redirect_port_in_use_fails_and_says_what_to_do() {
    let op = TestOp::start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let agent = agent_for(op.issuer(), &pachd.address, &["--redirect-port", &port]);

    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let line = failed(&out, "redirect");
    assert!(line.contains(&format!("every redirect port is in use ([{port}])")), "{line}");
    assert!(line.contains("--redirect-port"), "{line}");
    drop(taken);
}

#[test]
fn without_any_context_doctor_says_how_to_add_one() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 1, "{out:#?}");
    passed(&out, "config");
    let line = failed(&out, "context");
    assert!(line.contains("pachagent context add"), "{line}");
    assert!(line.starts_with("✘ context: no context is configured"), "{line}");
}

#[test]
fn a_clock_minutes_off_the_providers_fails_the_clock_check_and_a_few_seconds_off_passes() {
    let pachd = PachdDev::start(None, None);
    // The provider's `Date` runs 5 minutes ahead: as seen from here, this machine's clock is 5 minutes behind.
    let skewed = TestIssuer::builder().clock_offset(5 * 60).start();
    let agent = agent_for(skewed.issuer(), &pachd.address, &[]);
    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 1, "{out:#?}");
    passed(&out, "pachd");
    passed(&out, "issuer");
    let clock = failed(&out, "clock");
    assert!(clock.contains("off the provider's") && clock.contains("sync the clock (NTP)"), "{clock}");
    assert!(clock.contains("4m 59s") || clock.contains("5m"), "the size of the skew: {clock}");

    let close = TestIssuer::builder().clock_offset(-10).start();
    let agent = agent_for(close.issuer(), &pachd.address, &[]);
    let out = agent.cli(&["doctor"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(passed(&out, "clock").contains("within 30s"), "{out:#?}");
}
