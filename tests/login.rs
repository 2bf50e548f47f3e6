//! Interactive logins against a real OpenID Provider (npm `oidc-provider`) and pachd-dev: the browser flow with
//! PKCE on a loopback redirect, the device flow, and pachd's own flow; driven by a scripted user at a browser,
//! and once by real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::op::{self, TestOp};
use support::{Keyring, PachdDev, TestAgent, fake_user, query_param};

/// A real provider, pachd-dev trusting it for `client_id`'s ID tokens, and an agent whose context logs in as
/// `client_id`; `$BROWSER` is the scripted user.
fn oidc_stack(op: &TestOp, client_id: &str, context_flags: &[&str]) -> (PachdDev, TestAgent) {
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", client_id]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    let mut flags = vec!["--issuer", op.issuer(), "--client-id", client_id];
    flags.extend_from_slice(context_flags);
    agent.add_context("dev", &pachd.address, &flags);
    agent.env("BROWSER", op::FAKE_USER);
    agent.env("FAKE_USER_EMAIL", "alice@example.com");
    agent.start();
    (pachd, agent)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_login_with_pkce_stores_a_renewable_session_that_survives_a_restart() {
    let op = TestOp::start();
    let (_pachd, mut agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let out = agent.cli(&["login"]);
    out.ok();
    assert_eq!(first_line(&out.stdout), "You are \"user:alice@example.com\"", "{out:#?}");
    assert!(out.stdout.contains("session expires: "), "{out:#?}");
    assert!(out.stderr.contains("Logging in with your browser"), "the CLI says what it chose: {out:#?}");
    assert_eq!(op.grants("authorization_code"), 1);

    let stored = agent.stored("dev").await.expect("the session is in the keyring");
    assert!(stored.refresh_token.is_some(), "offline_access gave a refresh token, kept for renewal");
    assert_eq!(stored.method, "oidc");
    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["sessions"][0]["method"], "oidc");
    assert_eq!(status["sessions"][0]["issuer"], op.issuer());

    agent.stop();
    agent.start();
    assert_eq!(first_line(&agent.cli(&["whoami"]).ok().stdout), "You are \"user:alice@example.com\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_is_idempotent_and_force_logs_in_again() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    agent.cli(&["login"]).ok();
    let again = agent.cli(&["login"]);
    again.ok();
    assert!(again.stderr.contains("already has a valid session"), "{again:#?}");
    assert!(!again.stderr.contains("http://"), "no new URL: {again:#?}");
    assert_eq!(op.grants("authorization_code"), 1, "no second login at the provider");
    agent.cli(&["login", "--force"]).ok();
    assert_eq!(op.grants("authorization_code"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confidential_client_logs_in_with_its_secret_kept_in_the_keyring_only() {
    let op = TestOp::start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::CONFIDENTIAL_CLIENT]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    let add = agent.cli_stdin(
        &[
            "context",
            "add",
            "dev",
            "--pachd",
            &pachd.address,
            "--issuer",
            op.issuer(),
            "--client-id",
            op::CONFIDENTIAL_CLIENT,
            "--client-secret-stdin",
        ],
        &format!("{}\n", op::CONFIDENTIAL_SECRET),
    );
    add.ok();
    agent.env("BROWSER", op::FAKE_USER);
    agent.start();
    let out = agent.cli(&["login"]);
    assert_eq!(first_line(&out.ok().stdout), "You are \"user:alice@example.com\"");
    let config = std::fs::read_to_string(&agent.config).unwrap();
    assert!(!config.contains(op::CONFIDENTIAL_SECRET), "the secret is not in the config file:\n{config}");
    assert!(support::files_containing(agent.dir.path(), op::CONFIDENTIAL_SECRET).is_empty());
}

#[test]
fn the_device_flow_prints_a_code_that_another_device_approves() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut login = agent.spawn_cli(&["login", "--device"]);
    let url = login.wait_for_stderr("the complete verification URL", |l| {
        l.trim().starts_with("http").then(|| l.trim().to_owned()).filter(|u| u.contains("user_code="))
    });
    assert!(login.stderr_so_far().contains("enter the code"), "{}", login.stderr_so_far());
    assert_eq!(fake_user(&url, "bob@example.com", "approve"), 0, "the user approved on another device");
    let out = login.finish(30);
    assert_eq!(first_line(&out.ok().stdout), "You are \"user:bob@example.com\"");
    assert_eq!(op.grants("device_code"), 1);
}

#[test]
fn pachctls_own_flow_logs_in_through_pachds_callback_with_its_long_session() {
    let op = TestOp::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pachd-secret");
    std::fs::write(&secret, op::PACHD_SECRET).unwrap();
    let pachd = PachdDev::start_with_args(
        Some(op.issuer()),
        None,
        None,
        &[
            "--client-id",
            op::PACHD_CLIENT,
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--scopes",
            "openid,email,profile",
        ],
    );
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &[]);
    agent.env("BROWSER", op::FAKE_USER);
    agent.env("FAKE_USER_EMAIL", "carol@example.com");
    agent.start();
    let out = agent.cli(&["login"]);
    out.ok();
    assert!(out.stderr.contains("through pachd"), "{out:#?}");
    assert_eq!(first_line(&out.stdout), "You are \"user:carol@example.com\"");
    let json = agent.cli(&["whoami", "--json"]).json();
    let exp = chrono::DateTime::parse_from_rfc3339(json["expiration"].as_str().unwrap()).unwrap();
    let days = exp.signed_duration_since(chrono::Utc::now()).num_hours() / 24;
    assert_eq!(days, 29, "pachd's 30-day session, not the ID token's lifetime");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["method"], "pachd");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_who_cancels_at_the_provider_gets_access_denied_and_keeps_the_old_session() {
    let op = TestOp::start();
    let (pachd, mut agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let robot = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &robot).ok();
    agent.env("FAKE_USER_ACTION", "deny");
    let out = agent.cli(&["login", "--force"]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains("access_denied"), "{out:#?}");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:ci\"\n", "the stored session stays");
    assert_eq!(agent.stored("dev").await.unwrap().pach_token.expose_secret(), robot);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_while_the_provider_or_pachd_is_down_fails_with_exit_4_naming_it_and_keeps_the_old_session() {
    let op = TestOp::start();
    let (mut pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    agent.cli(&["login"]).ok();
    let kept = agent.stored("dev").await.unwrap().pach_token.expose_secret().to_owned();

    op.set_down(true);
    let out = agent.cli(&["login", "--force"]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains(op.issuer().trim_end_matches('/')), "names the provider: {out:#?}");
    op.set_down(false);

    // The provider login succeeds; trading its ID token with pachd cannot.
    pachd.stop();
    let out = agent.cli(&["login", "--force"]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains(&pachd.host_port()), "names pachd's address: {out:#?}");
    assert_eq!(agent.stored("dev").await.unwrap().pach_token.expose_secret(), kept, "the old session stays");
    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["sessions"][0]["username"], "user:alice@example.com", "{status}");
}

#[test]
fn a_login_nobody_finishes_times_out_and_closes_its_listener() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut login = agent.spawn_cli(&["login", "--no-browser", "--timeout", "2s"]);
    let url = login.login_url();
    let redirect = query_param(&url, "redirect_uri").unwrap();
    let out = login.finish(20);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains("timed out after 2s"), "{out:#?}");
    let port = url::Url::parse(&redirect).unwrap().port().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the loopback listener is closed");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "logged_out");
}

#[test]
fn ctrl_c_cancels_the_login_inside_the_agent_too() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut login = agent.spawn_cli(&["login", "--no-browser"]);
    let url = login.login_url();
    login.wait_for_stderr("the waiting line", |l| l.contains("Waiting").then_some(()));
    support::signal(login.pid(), libc::SIGINT);
    let out = login.finish(10);
    assert_eq!(out.code, 130, "{out:#?}");
    assert!(out.stderr.contains("login cancelled"), "{out:#?}");
    let port = url::Url::parse(&query_param(&url, "redirect_uri").unwrap()).unwrap().port().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the agent still listens for the cancelled login");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a raw HTTP request to the loopback listener and returns the status code.
fn raw_request(port: u16, request: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_malformed_callbacks_are_refused_while_the_real_login_keeps_waiting() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut login = agent.spawn_cli(&["login", "--no-browser"]);
    let url = login.login_url();
    let state = query_param(&url, "state").unwrap();
    let port = url::Url::parse(&query_param(&url, "redirect_uri").unwrap()).unwrap().port().unwrap();
    let host = format!("127.0.0.1:{port}");
    let get = |target: &str, host: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let cases = [
        ("a forged state", get("/callback?code=abc&state=forged", &host)),
        ("no state", get("/callback?code=abc", &host)),
        ("no code", get(&format!("/callback?state={state}"), &host)),
        ("two states", get(&format!("/callback?code=abc&state={state}&state={state}"), &host)),
        (
            "another host (DNS rebinding)",
            get(&format!("/callback?code=abc&state={state}"), &format!("evil.example:{port}")),
        ),
        (
            "a POST",
            format!(
                "POST /callback?code=abc&state={state} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ),
    ];
    for (what, request) in cases {
        assert_eq!(raw_request(port, &request), 400, "{what} must get a 400 page");
    }
    assert!(agent.stored("dev").await.is_none(), "nothing was stored by the forged requests");
    assert_eq!(fake_user(&url, "alice@example.com", "approve"), 0);
    let out = login.finish(30);
    assert_eq!(first_line(&out.ok().stdout), "You are \"user:alice@example.com\"");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the listener closed after the login");
}

#[test]
fn concurrent_logins_for_one_context_join_the_same_flow() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut first = agent.spawn_cli(&["login", "--no-browser"]);
    let url = first.login_url();
    let mut second = agent.spawn_cli(&["login", "--no-browser"]);
    assert_eq!(second.login_url(), url, "both callers see the same URL");
    assert_eq!(fake_user(&url, "alice@example.com", "approve"), 0);
    for login in [first, second] {
        assert_eq!(first_line(&login.finish(30).ok().stdout), "You are \"user:alice@example.com\"");
    }
    assert_eq!(op.grants("authorization_code"), 1);
}

#[test]
fn an_issuer_that_differs_only_by_a_trailing_slash_is_reported_as_exactly_that() {
    let op = TestOp::builder().trailing_slash().start();
    assert!(op.issuer().ends_with('/'));
    let without_slash = op.issuer().trim_end_matches('/').to_owned();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &["--issuer", &without_slash, "--client-id", op::PUBLIC_CLIENT]);
    agent.env("BROWSER", op::FAKE_USER);
    agent.start();
    let out = agent.cli(&["login"]);
    assert_eq!(out.code, 2, "a configuration error: {out:#?}");
    assert!(out.stderr.contains("has a trailing slash the configured one lacks"), "{out:#?}");
    assert!(out.stderr.contains(&format!("set issuer = {:?}", op.issuer())), "{out:#?}");
}

#[test]
fn an_id_token_for_another_audience_is_refused_by_pachd_with_its_message() {
    let op = TestOp::start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", "pachd"]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.env("BROWSER", op::FAKE_USER);
    agent.start();
    let out = agent.cli(&["login"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("oidc: expected audience \"pachd\" got [\"pachagent\"]"), "pachd's words: {out:#?}");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "logged_out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_headless_chromium_completes_the_browser_login() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op, op::PUBLIC_CLIENT, &[]);
    let mut login = agent.spawn_cli(&["login", "--no-browser"]);
    let url = login.login_url();
    let browser = support::chromium::Chromium::start().await;
    let page = browser.login_with_email(&url, "dana@example.com").await;
    assert!(page.contains("You are logged in to Pachyderm as user:dana@example.com"), "the browser's page: {page}");
    browser.close().await;
    let out = login.finish(30);
    assert_eq!(first_line(&out.ok().stdout), "You are \"user:dana@example.com\"");
}
