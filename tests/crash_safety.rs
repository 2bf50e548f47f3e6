//! An agent killed (SIGKILL, no chance to clean up) at random points of a login or a logout, fifty times in a
//! row: after each restart the stored session is the old one or the new one, whole (token and user agree), and a
//! session is never gone unless a logout asked for it. (Kills during renewals, on the Secret Service:
//! tests/refresh.rs.) These rounds use the kernel keyutils store: a hundred clients SIGKILLed in the middle of
//! Secret Service calls once crashed the suite's shared gnome-keyring daemon, which then came back locked for
//! every other test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use pachagent::proto::agent::agent_client::AgentClient;
use pachagent::proto::agent::{LoginMethod, LoginRequest, LogoutRequest};
use support::{Keyring, PachdDev, TestAgent};

const ROUNDS: u32 = 50;

/// A small deterministic generator: every run kills at different points, and a failing round can be replayed
/// from the seed printed with it.
struct Kills {
    seed: u64,
}

impl Kills {
    fn new() -> Self {
        Self { seed: u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15 }
    }

    /// A delay uniformly drawn from zero to `upto`.
    fn next(&mut self, upto: Duration) -> Duration {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let micros = u64::try_from(upto.as_micros()).unwrap().max(1);
        Duration::from_micros((self.seed >> 33) % micros)
    }
}

fn login_request(token: &str) -> LoginRequest {
    LoginRequest {
        context: "dev".into(),
        method: LoginMethod::PachToken.into(),
        pach_token: token.into(),
        force: true,
        ..Default::default()
    }
}

async fn client(agent: &TestAgent) -> pachagent::client::Client {
    AgentClient::new(pachagent::client::channel(&agent.socket).await.unwrap())
}

/// Logs in with `token` through the agent's API and waits for the login to end.
async fn login(agent: &TestAgent, token: &str) {
    let mut events = client(agent).await.login(login_request(token)).await.unwrap().into_inner();
    while events.message().await.unwrap().is_some() {}
}

/// The median of three durations: kills are spread over twice what a call takes here and now, whatever the
/// machine's load.
fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_at_random_points_of_a_login_restarts_with_the_old_session_or_the_new_one() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let warmup = pachd.robot_token("warmup", 0).await;
    let mut took = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        login(&agent, &warmup).await;
        took.push(start.elapsed());
    }
    let spread = median(took) * 2;
    let mut kills = Kills::new();
    let (mut old_kept, mut new_kept) = (0, 0);
    let mut current = (warmup, "robot:warmup".to_owned());
    for round in 0..ROUNDS {
        let robot = format!("round-{round}");
        let new = pachd.robot_token(&robot, 0).await;
        let wait = kills.next(spread);
        let request = login_request(&new);
        let mut api = client(&agent).await;
        let call = tokio::spawn(async move {
            if let Ok(events) = api.login(request).await {
                let mut events = events.into_inner();
                while let Ok(Some(_)) = events.message().await {}
            }
        });
        tokio::time::sleep(wait).await;
        agent.kill();
        let _ = call.await;
        agent.start();

        let stored = agent.stored("dev").await.unwrap_or_else(|| panic!("round {round}: the session is gone"));
        let kept = stored.pach_token.expose_secret().to_owned();
        let expected_user = if kept == new {
            new_kept += 1;
            format!("robot:{robot}")
        } else {
            assert_eq!(kept, current.0, "round {round} (killed after {wait:?}): a token that is neither old nor new");
            old_kept += 1;
            current.1.clone()
        };
        assert_eq!(stored.username, expected_user, "round {round}: the record's user belongs to its token");
        let who = agent.cli(&["whoami"]);
        assert_eq!(
            who.stdout,
            format!("You are \"{expected_user}\"\n"),
            "round {round}: {who:#?}\n{}",
            agent.log_text()
        );
        current = (kept, expected_user);
    }
    eprintln!("the old session was kept {old_kept} times, the new one {new_kept} times");
    // Kills spread over twice a login's duration land on both sides of the keyring write.
    assert!(old_kept > 0 && new_kept > 0, "old kept {old_kept} times, new {new_kept} times");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_at_random_points_of_a_logout_restarts_logged_in_or_logged_out_never_half_way() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let mut took = Vec::new();
    for i in 0..3 {
        login(&agent, &pachd.robot_token(&format!("warmup-{i}"), 0).await).await;
        let start = Instant::now();
        client(&agent).await.logout(LogoutRequest { context: "dev".into(), all: false }).await.unwrap();
        took.push(start.elapsed());
    }
    let spread = median(took) * 2;
    let mut kills = Kills::new();
    let (mut kept, mut gone, mut revoked_but_kept) = (0, 0, 0);
    for round in 0..ROUNDS {
        let robot = format!("round-{round}");
        let token = pachd.robot_token(&robot, 0).await;
        login(&agent, &token).await;
        let wait = kills.next(spread);
        let mut api = client(&agent).await;
        let call = tokio::spawn(async move { api.logout(LogoutRequest { context: "dev".into(), all: false }).await });
        tokio::time::sleep(wait).await;
        agent.kill();
        let _ = call.await;
        agent.start();

        let status = agent.cli(&["status", "--json"]).json();
        match agent.stored("dev").await {
            None => {
                assert_eq!(status["sessions"][0]["state"], "logged_out", "round {round}: {status}");
                gone += 1;
            }
            Some(stored) => {
                assert_eq!(stored.pach_token.expose_secret(), token, "round {round}: the stored token changed");
                assert_eq!(stored.username, format!("robot:{robot}"), "round {round}");
                if pachd.who_am_i(&token).await.is_ok() {
                    let who = agent.cli(&["whoami"]);
                    assert_eq!(who.ok().stdout, format!("You are \"robot:{robot}\"\n"), "round {round}");
                    kept += 1;
                } else {
                    // Revoked at pachd, killed before the keyring entry went: the agent must say so, not
                    // pretend the session is fine or drop it silently.
                    let who = agent.cli(&["whoami", "--verify"]);
                    assert_eq!(who.code, 1, "round {round}: a revoked token is not a session: {who:#?}");
                    assert!(who.stderr.contains("pachagent login --context dev"), "round {round}: {who:#?}");
                    revoked_but_kept += 1;
                }
            }
        }
    }
    eprintln!("{kept} rounds kept the session, {gone} logged out, {revoked_but_kept} revoked before the kill");
    assert!(kept + revoked_but_kept > 0 && gone > 0, "kills landed on both sides of the logout");
}
