//! The agent as a user meets it: log in with a token, ask who you are, restart, log out, and the guarantees of
//! its socket. Real `pachagent` and `pachd-dev` processes, a real keyring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{Keyring, PachdDev, TestAgent, files_containing};

fn rfc822_utc_line(line: &str) -> bool {
    // e.g. "session expires: 09 Feb 25 14:41 UTC"
    let Some(t) = line.strip_prefix("session expires: ") else { return false };
    chrono::NaiveDateTime::parse_from_str(t.trim_end_matches(" UTC"), "%d %b %y %H:%M").is_ok() && t.ends_with(" UTC")
}

async fn logged_in_agent(keyring: Keyring, pachd: &PachdDev, robot: &str, ttl: i64) -> (TestAgent, String) {
    let mut agent = TestAgent::new(keyring);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let token = pachd.robot_token(robot, ttl).await;
    let out = agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n"));
    out.ok();
    (agent, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_robot_token_login_answers_whoami_like_pachctl_and_survives_an_agent_restart() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, _token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;

    let who = agent.cli(&["whoami"]);
    who.ok();
    assert_eq!(who.stdout, "You are \"robot:ci\"\n", "a token that never expires has no expiry line");

    let status = agent.cli(&["status", "--json"]);
    let status = status.ok().json();
    let dev = &status["sessions"][0];
    assert_eq!(dev["context"], "dev");
    assert_eq!(dev["state"], "active");
    assert_eq!(dev["username"], "robot:ci");
    assert_eq!(dev["store_backend"], "secret-service");
    assert_eq!(dev["expiration"], serde_json::Value::Null);
    assert_eq!(status["store"]["backend"], "secret-service");
    assert_eq!(status["store"]["available"], true);

    assert_eq!(agent.stop(), Some(0), "SIGTERM stops the agent cleanly");
    assert!(!agent.socket.exists(), "the socket file is removed on exit");
    agent.start();
    let who = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, "You are \"robot:ci\"\n", "the session came back from the keyring");
    let log = agent.log_text();
    assert_eq!(log.matches("logged in").count(), 1, "no new login after the restart:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_shows_its_expiry_in_rfc822_utc_and_in_json() {
    let pachd = PachdDev::start(None, None);
    let (agent, _token) = logged_in_agent(Keyring::SecretService, &pachd, "nightly", 3600).await;
    let who = agent.cli(&["whoami"]);
    let lines: Vec<&str> = who.ok().stdout.lines().collect();
    assert_eq!(lines[0], "You are \"robot:nightly\"");
    assert!(rfc822_utc_line(lines[1]), "{lines:?}");
    assert_eq!(lines.len(), 2);

    let json = agent.cli(&["whoami", "--json"]).json();
    let exp = chrono::DateTime::parse_from_rfc3339(json["expiration"].as_str().unwrap()).unwrap();
    let left = exp.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&left), "about an hour left, got {left} s");
    assert_eq!(json["context"], "dev");
    assert_eq!(json["pachd_address"], pachd.address.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_in_the_kernel_keyutils_store_survive_an_agent_restart() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, _) = logged_in_agent(Keyring::Keyutils, &pachd, "ci", 0).await;
    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["store"]["backend"], "keyutils");
    assert_eq!(status["store"]["persistent"], false, "keyutils does not survive a reboot, and status says so");
    agent.kill();
    agent.start();
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:ci\"\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_token_at_pachd_and_removes_the_keyring_entry() {
    let pachd = PachdDev::start(None, None);
    let (agent, token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    assert!(agent.stored("dev").await.is_some(), "login wrote the keyring entry");
    assert_eq!(pachd.who_am_i(&token).await.unwrap(), "robot:ci");

    let out = agent.cli(&["logout"]);
    out.ok();
    assert!(out.stdout.contains("revoked"), "{out:#?}");
    let err = pachd.who_am_i(&token).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "pachd no longer accepts the old token");
    assert!(agent.stored("dev").await.is_none(), "the keyring entry is gone");

    let who = agent.cli(&["whoami"]);
    assert_eq!(who.code, 1, "no valid session: {who:#?}");
    assert!(who.stderr.contains("pachagent login --context dev"), "{who:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_with_pachd_down_still_logs_out_locally_and_says_the_token_was_not_revoked() {
    let mut pachd = PachdDev::start(None, None);
    let (agent, _token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    pachd.stop();
    let out = agent.cli(&["logout"]);
    out.ok();
    assert!(out.stdout.contains("not revoked"), "{out:#?}");
    assert!(agent.stored("dev").await.is_none());
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "logged_out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_pachd_does_not_know_is_refused_and_the_stored_session_stays() {
    let pachd = PachdDev::start(None, None);
    let (agent, token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    let out = agent.cli_stdin(&["login", "--token-stdin"], "0123456789abcdef0123456789abcdef\n");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("provided auth token is corrupted or has expired"), "pachd's words: {out:#?}");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:ci\"\n");
    assert_eq!(agent.stored("dev").await.unwrap().pach_token.expose_secret(), token, "the stored session is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_revoked_while_the_agent_was_down_comes_back_as_login_required() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    agent.stop();
    pachd.revoke(&token).await;
    agent.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = agent.cli(&["status", "--json"]).json();
        if status["sessions"][0]["state"] == "login_required" {
            assert!(status["sessions"][0]["last_error"].as_str().unwrap().contains("pachagent login"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tok = agent.cli(&["token"]);
    assert_eq!(tok.code, 1, "{tok:#?}");
    assert!(tok.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_the_bare_token_and_refuses_a_validity_the_session_cannot_give() {
    let pachd = PachdDev::start(None, None);
    let (agent, token) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 600).await;
    let out = agent.cli(&["token"]);
    assert_eq!(out.ok().stdout, format!("{token}\n"));
    let json = agent.cli(&["token", "--json"]).json();
    assert_eq!(json["token"], token.as_str());
    assert_eq!(json["username"], "robot:ci");
    assert_eq!(json["context"], "dev");

    assert_eq!(agent.cli(&["token", "--min-valid", "5m"]).ok().stdout, format!("{token}\n"));
    let out = agent.cli(&["token", "--min-valid", "1h"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.is_empty(), "no token on stdout when the promise cannot be kept");
    assert!(out.stderr.contains("less than the 1h asked for"), "{out:#?}");

    let log = agent.log_text();
    assert!(log.contains("handed out a token") && log.contains("caller_pid"), "audit trail:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_trail_names_each_connection_at_info_once_and_every_further_hand_out_at_debug() {
    let pachd = PachdDev::start(None, None);
    let (agent, _) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    let hand_outs = |level: &str| {
        let log = agent.log_text();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("handed out a token") && l.contains(&format!(" {level} ")))
            .map(str::to_owned)
            .collect();
        lines
    };
    let get_token =
        pachagent::proto::agent::GetTokenRequest { context: String::new(), min_valid_seconds: 0, ..Default::default() };
    for connection in 1..=2 {
        let mut client = pachagent::client::connect(&agent.socket).await.unwrap();
        for _ in 0..3 {
            client.get_token(get_token.clone()).await.unwrap();
        }
        let (info, debug) = (hand_outs("INFO"), hand_outs("DEBUG"));
        assert_eq!(info.len(), connection, "one info line per connection:\n{}", agent.log_text());
        assert_eq!(debug.len(), 2 * connection, "the other calls at debug:\n{}", agent.log_text());
        // This test process is the caller, named by its executable on every line.
        let me = std::env::current_exe().unwrap().display().to_string();
        assert!(info.iter().chain(&debug).all(|l| l.contains(&me)), "caller_exe is this test:\n{info:#?}");
    }
    // The CLI connects afresh each time, so each `pachagent token` is named at info.
    agent.cli(&["token"]).ok();
    assert_eq!(hand_outs("INFO").len(), 3, "{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_contexts_and_a_missing_agent_get_distinct_exit_codes_and_say_what_to_do() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, _) = logged_in_agent(Keyring::SecretService, &pachd, "ci", 0).await;
    let out = agent.cli(&["--context", "nope", "whoami"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("unknown context \"nope\""), "{out:#?}");

    agent.stop();
    let out = agent.cli(&["whoami"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("pachagent serve"), "says how to start it: {out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_starts_the_agent_in_the_background_when_none_is_running() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &[]);
    let token = pachd.robot_token("ci", 0).await;
    let out = agent.cli_stdin(&["login", "--token-stdin"], &token);
    out.ok();
    assert!(out.stdout.starts_with("You are \"robot:ci\""), "{out:#?}");
    assert!(agent.locked_pid().is_some(), "a background agent holds the lock");
    agent.wait_ready();
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:ci\"\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_on_the_same_socket_is_refused_with_the_first_ones_pid() {
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.start();
    let first = agent.locked_pid().unwrap();
    let out = agent.cli(&["serve"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains(&format!("another agent is running, pid {first}")), "{out:#?}");
    assert_eq!(agent.cli(&["status", "--json"]).json()["agent_pid"], first, "the first agent still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_left_by_a_killed_agent_is_replaced() {
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.start();
    agent.kill();
    assert!(agent.socket.exists(), "SIGKILL leaves the socket file behind");
    agent.start();
    agent.cli(&["status"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_is_owner_only_and_other_users_are_disconnected_and_logged() {
    use std::os::unix::fs::PermissionsExt;
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.socket), 0o600);
    assert_eq!(mode(agent.socket.parent().unwrap()), 0o700);

    assert_eq!(unsafe_getuid(), 0, "this test runs as root to start a client as nobody (scripts/test.sh runs as root)");
    // Open the file permissions on purpose: the agent's own peer check must still turn the stranger away.
    for dir in agent.socket.ancestors().skip(1).take_while(|d| d.starts_with(agent.dir.path())) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy of the programs nobody can run (`pachagent` hands `status` to `pachagent-cli` next to it).
    let bin_dir = agent.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, program) in
        [("pachagent", env!("CARGO_BIN_EXE_pachagent")), ("pachagent-cli", env!("CARGO_BIN_EXE_pachagent-cli"))]
    {
        std::fs::copy(program, bin_dir.join(name)).unwrap();
        std::fs::set_permissions(bin_dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = bin_dir.join("pachagent");

    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(&bin)
        .args(["--socket", agent.socket.to_str().unwrap(), "status"])
        .env("HOME", "/tmp")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "nobody must not get an answer: {stderr}");
    // The client refuses the root-owned agent and hangs up, possibly before the agent gets to the connection.
    let log = agent.wait_for_log("rejected a connection from another user", std::time::Duration::from_secs(10));
    assert!(log.contains("65534"), "{log}");
    agent.cli(&["status"]).ok();
}

fn unsafe_getuid() -> u32 {
    pachagent::config::current_uid()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_appears_in_the_agents_logs_or_in_any_file_it_wrote() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.env("RUST_LOG", "trace");
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let token = pachd.robot_token("ci", 600).await;
    agent.cli_stdin(&["login", "--token-stdin"], &token).ok();
    agent.cli(&["whoami", "--verify"]).ok();
    agent.cli(&["token"]).ok();
    agent.cli(&["status", "--json"]).ok();
    agent.cli(&["logout"]).ok();
    agent.stop();
    let log = agent.log_text();
    assert!(log.len() > 1000, "trace logging was on: {} bytes", log.len());
    assert!(!log.contains(&token), "the token is in the agent's log");
    let hits = files_containing(agent.dir.path(), &token);
    assert!(hits.is_empty(), "the token was written to {hits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_login_and_logout_events_and_health_reports_serving() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();

    let channel = pachagent::client::channel(&agent.socket).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: "pachagent.v1.Agent".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let mut client = pachagent::proto::agent::agent_client::AgentClient::new(channel);
    let mut events = client
        .watch(pachagent::proto::agent::WatchRequest { context: String::new(), all_contexts: false })
        .await
        .unwrap()
        .into_inner();
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &token).ok();
    agent.cli(&["logout"]).ok();
    use pachagent::proto::agent::EventKind;
    let first = tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.kind, EventKind::LoggedIn as i32);
    assert_eq!(first.username, "robot:ci");
    assert_eq!(first.context, "dev");
    let second = tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.kind, EventKind::LoggedOut as i32);
}
