//! The agent when the keyring misbehaves: a gnome-keyring that is locked or stops answering, no session bus at
//! all, and a session keyring that does not possess the kernel user keyring. Each test runs the real
//! `pachagent serve` inside that environment (a private `dbus-run-session` with its own gnome-keyring, a stripped
//! environment, or `keyctl session -`) and talks to it from outside with the real CLI, checking what a user sees:
//! exit codes, messages that name the backend and the fix, how long answers take, and that no session is lost.
//! Nothing is skipped: a missing tool fails with the command that installs it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use support::keyring_env;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use keyring_env::{AgentIn, Prepare, Surroundings};
use support::PachdDev;

/// An agent that opens an answering store serves within this (start-up on a loaded machine, not a benchmark).
const SERVES_WITHIN: Duration = Duration::from_secs(20);
/// What does not wait for a store timeout (a locked keyring answers at once, so does a missing bus) is answered
/// within this; generous, for a loaded machine.
const ANSWERS_WITHIN: Duration = Duration::from_secs(12);
/// The store's timeout for one call is 5 s; nothing can time out sooner than this.
const TIMEOUT_FLOOR: Duration = Duration::from_secs(4);
/// A store call that timed out has been given up on within this (5 s plus slack).
const GIVES_UP_WITHIN: Duration = Duration::from_secs(15);

const WHOAMI_CI: &str = "You are \"robot:ci\"\n";

/// An agent on `store` in `surroundings` with a context `dev` on `pachd`, serving.
fn serving_agent(store: &str, surroundings: &Surroundings, pachd: &PachdDev) -> AgentIn {
    let mut agent = AgentIn::new(store);
    agent.add_context("dev", &pachd.address);
    agent.start(surroundings);
    agent.wait_serving(SERVES_WITHIN);
    agent
}

#[track_caller]
fn assert_contains(text: &str, wanted: &[&str], what: &str) {
    for w in wanted {
        assert!(text.contains(w), "{what} does not say {w:?}:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A locked gnome-keyring

#[tokio::test(flavor = "multi_thread")]
async fn a_keyring_locked_while_the_agent_runs_shows_in_status_and_fails_a_login_with_exit_2_keeping_the_session() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
    let item = agent.keyring_item("dev").expect("the login is in gnome-keyring");
    assert!(item.contains(&token), "the keyring item holds the session's token");

    agent.lock_keyring();

    let (status, took) = agent.status();
    assert!(took < ANSWERS_WITHIN, "status took {took:?}");
    assert_eq!(status["store"]["backend"], "secret-service");
    assert_eq!(status["store"]["available"], false, "{status}");
    let detail = status["store"]["detail"].as_str().unwrap();
    assert_contains(detail, &["secret-service keyring is locked", "unlock it"], "the store detail");
    let (text, _) = agent.cli(&["status"]);
    assert_contains(&text.ok().stdout, &["store: secret-service (unavailable", "locked"], "`pachagent status`");

    let other = pachd.robot_token("ci-2", 0).await;
    let (login, took) = agent.cli_stdin(&["login", "--token-stdin"], &format!("{other}\n"));
    assert_eq!(login.code, 2, "a locked keyring is the user's to fix: {login:#?}");
    assert_contains(&login.stderr, &["secret-service keyring is locked", "unlock it", "\"dev\""], "login's error");
    assert!(took < ANSWERS_WITHIN, "the failed login took {took:?}");

    let (who, _) = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, WHOAMI_CI, "the session logged in before the lock is still served");
    let item = agent.keyring_item("dev");
    assert!(item.is_none(), "a locked collection shows no secret, not even to secret-tool: {item:?}");

    let (code, took) = agent.stop(Duration::from_secs(15));
    assert_eq!((code, took < ANSWERS_WITHIN), (0, true), "stopped with {code} after {took:?}");
}

/// gnome-keyring killed mid-run (a crash, an OOM kill): the agent keeps serving the session from memory, says in
/// `status` that the store is gone, refuses a login it could not store (exit 2, the session kept), and once the
/// keyring is back (the user logs in to the desktop again) the store answers and a login is stored again, without
/// restarting the agent.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyring_daemon_killed_mid_run_is_reported_and_the_agent_stores_again_once_it_is_back() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();

    agent.kill_keyring();

    let (status, took) = agent.status();
    assert!(took < ANSWERS_WITHIN, "status took {took:?}");
    assert_eq!(status["store"]["available"], false, "{status}");
    assert!(!status["store"]["detail"].as_str().unwrap().is_empty(), "the store's error is shown: {status}");
    let (who, _) = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, WHOAMI_CI, "the session is served from memory");
    let other = pachd.robot_token("ci-2", 0).await;
    let (login, _) = agent.cli_stdin(&["login", "--token-stdin"], &format!("{other}\n"));
    assert_eq!(login.code, 2, "a login that cannot be stored fails: {login:#?}");
    assert_contains(&login.stderr, &["secret-service", "\"dev\""], "login's error");
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI, "and the session is kept");

    agent.revive_keyring();

    let (status, _) = agent.status();
    assert_eq!(status["store"]["available"], true, "the store answers again: {status}");
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{other}\n")).0.ok();
    let item = agent.keyring_item("dev").expect("the new login is in the revived keyring");
    assert!(item.contains(&other), "the keyring holds the new session");
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, "You are \"robot:ci-2\"\n");
    let sessions = agent.keyring_sessions();
    assert_eq!(sessions.len(), 1, "the agent opened one session on the revived keyring and kept it: {sessions:?}");
}

/// gnome-keyring aborts when client after client opens a Secret Service session and goes away (its own bug: the
/// suite's keyring died that way), taking every secret of the desktop session with it until it is started again,
/// locked. The agent's keyring calls are made by its helper, `pachagent-keyring`, which keeps one session while
/// calls keep coming: a burst of logins, status probes and a logout is one session. Once the agent is idle the
/// helper is gone and no session stays open, while the agent goes on serving from memory: the resident agent never
/// holds D-Bus or the Secret Service itself (the memory that saves is the README's Performance figure).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_keyring_calls_is_one_secret_service_session_and_an_idle_agent_holds_none() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let at_start = agent.keyring_sessions();
    assert_eq!(at_start.len(), 1, "the start-up probe and restore opened one session: {at_start:?}");
    for n in 0..4 {
        let token = pachd.robot_token(&format!("ci-{n}"), 0).await;
        agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
        let (status, _) = agent.status();
        assert_eq!(status["store"]["available"], true, "each status probes the keyring: {status}");
        assert_eq!(agent.keyring_sessions().len(), 1, "one session at a time");
    }
    let helper = helpers_of(agent.pid());
    assert_eq!(helper.iter().map(|(_, name)| name.as_str()).collect::<Vec<_>>(), ["pachagent-keyri"], "one helper");

    // A helper killed (the OOM killer, a user's kill) is replaced by the next call, which loses nothing.
    Command::new("kill").args(["-KILL", &helper[0].0.to_string()]).status().unwrap();
    let token = pachd.robot_token("ci-after-kill", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
    assert!(agent.keyring_item("dev").is_some_and(|item| item.contains(&token)), "the new helper stored the session");

    let idle_by = Instant::now() + pachagent::store::helper::LINGER + Duration::from_secs(10);
    while !(agent.keyring_sessions().is_empty() && helpers_of(agent.pid()).is_empty()) {
        assert!(Instant::now() < idle_by, "the helper stays: {:?}", helpers_of(agent.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        agent.cli(&["whoami"]).0.ok().stdout,
        "You are \"robot:ci-after-kill\"\n",
        "the idle agent serves from memory"
    );
    assert!(agent.keyring_sessions().is_empty(), "serving a token needs no keyring");

    let (status, _) = agent.status();
    assert_eq!(status["store"]["available"], true, "the next keyring call starts a helper again: {status}");
    assert_eq!(agent.keyring_sessions().len(), 1, "with one new session");
    agent.cli(&["logout"]).0.ok();
    assert!(agent.keyring_item("dev").is_none(), "the logout went through the helper");
    let (code, _) = agent.stop(Duration::from_secs(15));
    assert_eq!(code, 0);
}

/// The pids and names (as the kernel shortens them, 15 bytes) of the live processes whose parent is `pid`.
fn helpers_of(pid: u32) -> Vec<(u32, String)> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        let state = stat[close + 1..].split_whitespace().next();
        if ppid == Some(pid) && state != Some("Z") {
            names.push((stat[..open].trim().parse().unwrap(), stat[open + 1..close].to_owned()));
        }
    }
    names
}

/// `logout` on a locked keyring still revokes the token at pachd and forgets the session, but cannot remove the
/// keyring entry. Its error must say so (the engine documents "the outcome so far is in the message"): a user
/// told only "the keyring is locked, retry" does not know the token is already dead.
#[tokio::test(flavor = "multi_thread")]
async fn a_logout_while_the_keyring_is_locked_says_the_token_was_revoked_though_the_entry_stays() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
    agent.lock_keyring();

    let (logout, took) = agent.cli(&["logout"]);
    assert!(took < ANSWERS_WITHIN, "logout took {took:?}");
    assert_eq!(logout.code, 2, "{logout:#?}");
    assert_contains(&logout.stderr, &["secret-service keyring is locked", "unlock it"], "logout's error");
    let revoked = pachd.who_am_i(&token).await.map_err(|e| e.code());
    assert_eq!(revoked, Err(tonic::Code::Unauthenticated), "the token was revoked at pachd all the same");
    let (who, _) = agent.cli(&["whoami"]);
    assert_eq!(who.code, 1, "the agent forgot the session: {who:#?}");
    assert_contains(&logout.stderr, &["revoked"], "logout's error, which must tell what already happened,");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_store_auto_an_agent_started_on_a_locked_keyring_keeps_it_and_a_login_fails_with_exit_2() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("auto", &Surroundings::PrivateKeyring(Prepare::Locked), &pachd);

    let (status, took) = agent.status();
    assert!(took < ANSWERS_WITHIN, "status took {took:?}");
    assert_eq!(status["store"]["backend"], "secret-service", "the user's sessions are there once it is unlocked");
    assert_eq!(status["store"]["persistent"], true);
    assert_eq!(status["store"]["available"], false, "{status}");
    let detail = status["store"]["detail"].as_str().unwrap();
    assert_contains(detail, &["secret-service keyring is locked", "unlock it"], "the store detail");

    let token = pachd.robot_token("ci", 0).await;
    let (login, took) = agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n"));
    assert_eq!(login.code, 2, "{login:#?}");
    assert_contains(&login.stderr, &["secret-service keyring is locked", "unlock it"], "login's error");
    assert!(took < ANSWERS_WITHIN, "the failed login took {took:?}");
    assert!(agent.keyutils_record("dev").is_none(), "the session did not go to the kernel keyring instead");

    let (who, _) = agent.cli(&["whoami"]);
    assert_eq!(who.code, 1, "{who:#?}");
    assert_contains(&who.stderr, &["pachagent login"], "whoami's error");
}

#[test]
fn an_agent_configured_for_the_secret_service_refuses_to_start_on_a_locked_keyring_and_says_how_to_unlock_it() {
    let mut agent = AgentIn::new("secret-service");
    agent.start(&Surroundings::PrivateKeyring(Prepare::Locked));
    let (code, took) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 1, "{}", agent.log_text());
    assert!(took < ANSWERS_WITHIN, "it took {took:?} to give up");
    assert_contains(
        &agent.log_text(),
        &["pachagent: the secret-service keyring is locked: unlock it", "seahorse"],
        "the agent's last words",
    );
}

/// The line of `doctor` check `name`.
#[track_caller]
fn doctor_line<'a>(out: &'a support::CliOutput, name: &str) -> &'a str {
    let prefix = format!(" {name}: ");
    out.stdout.lines().find(|l| l.contains(&prefix)).unwrap_or_else(|| panic!("no {name} check: {out:#?}"))
}

#[test]
fn doctor_fails_the_keyring_check_once_the_keyring_is_locked_and_says_how_to_unlock_it() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("auto", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let before = agent.cli_on_keyring_bus(&["doctor"]);
    assert_eq!(before.code, 0, "{before:#?}");
    let keyring = doctor_line(&before, "keyring");
    assert!(keyring.starts_with('✔') && keyring.contains("secret-service store answers"), "{keyring}");

    agent.lock_keyring();

    let after = agent.cli_on_keyring_bus(&["doctor"]);
    assert_eq!(after.code, 1, "a locked keyring is a failed check: {after:#?}");
    let keyring = doctor_line(&after, "keyring");
    assert!(keyring.starts_with('✘'), "{after:#?}");
    assert_contains(keyring, &["secret-service keyring is locked", "unlock it", "seahorse"], "the keyring check");
    for check in ["config", "context", "pachd", "agent"] {
        assert!(doctor_line(&after, check).starts_with('✔'), "only the keyring is at fault: {after:#?}");
    }
    let json = agent.cli_on_keyring_bus(&["doctor", "--json"]).json();
    assert_eq!(json["ok"], false, "{json}");
    let check = json["checks"].as_array().unwrap().iter().find(|c| c["name"] == "keyring").unwrap();
    assert_eq!(check["status"], "fail", "{json}");
}

// ---------------------------------------------------------------------------------------------------------------
// A gnome-keyring that stops answering (SIGSTOP)

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_keyring_makes_status_and_login_give_up_after_five_seconds_and_the_agent_recovers_when_it_thaws() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();

    agent.freeze_keyring();

    let (status, took) = agent.status();
    assert!((TIMEOUT_FLOOR..GIVES_UP_WITHIN).contains(&took), "status took {took:?}");
    assert_eq!(status["store"]["available"], false, "{status}");
    let detail = status["store"]["detail"].as_str().unwrap();
    assert_contains(detail, &["secret-service store did not answer within 5 s", "store = \"keyutils\""], "detail");

    let late = pachd.robot_token("ci-late", 0).await;
    let (login, took) = agent.cli_stdin(&["login", "--token-stdin"], &format!("{late}\n"));
    assert_eq!(login.code, 4, "a store that does not answer is worth a retry: {login:#?}");
    assert_contains(&login.stderr, &["did not answer within 5 s", "unlock the keyring and retry"], "login's error");
    assert!((TIMEOUT_FLOOR..GIVES_UP_WITHIN).contains(&took), "the failed login took {took:?}");

    let (who, took) = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, WHOAMI_CI, "the session is served from memory");
    assert!(took < TIMEOUT_FLOOR, "whoami does not wait for the keyring: {took:?}");

    agent.thaw_keyring();
    let (status, took) = agent.status();
    assert_eq!(status["store"]["available"], true, "{status}");
    assert!(took < ANSWERS_WITHIN, "status took {took:?}");
    let (who, _) = agent.cli(&["whoami"]);
    assert_eq!(who.ok().stdout, WHOAMI_CI);
    assert!(agent.keyring_item("dev").is_some(), "the session is still in the keyring");
}

/// An agent on a private gnome-keyring logged in as `robot:ci`, and a second login (as `robot:ci-late`) that
/// failed with exit 4 because the keyring froze during it; the keyring is still frozen. Returns the agent and the
/// failed login's token, whose write gnome-keyring still holds in its queue.
async fn a_login_failed_on_a_frozen_keyring(pachd: &PachdDev) -> (AgentIn, String) {
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), pachd);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();

    agent.freeze_keyring();
    let late = pachd.robot_token("ci-late", 0).await;
    let (login, _) = agent.cli_stdin(&["login", "--token-stdin"], &format!("{late}\n"));
    assert_eq!(login.code, 4, "{login:#?}");
    (agent, late)
}

/// Checks the keyring's session for `dev` ten times over five seconds (gnome-keyring works through what queued up
/// while it was stopped): it must be `username`'s, and `token_is_right` must hold for its token.
#[track_caller]
fn assert_keyring_keeps(agent: &AgentIn, username: &str, token_is_right: impl Fn(&str) -> bool, why: &str) {
    for _ in 0..10 {
        let item = agent.keyring_item("dev").expect("a session is in the keyring");
        let record: serde_json::Value = serde_json::from_str(&item).unwrap();
        let token = record["pach_token"].as_str().unwrap_or_default();
        assert_eq!((&record["username"], token_is_right(token)), (&username.into(), true), "{why}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `login` said the login failed (exit 4), and the agent goes on serving the old session; so the keyring must go
/// on holding the old session too, also once gnome-keyring gets round to the write the agent gave up on. If it
/// does not, the next agent start silently switches the user to the login they were told had failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_that_failed_because_the_keyring_froze_does_not_replace_the_stored_session_once_it_thaws() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, late) = a_login_failed_on_a_frozen_keyring(&pachd).await;
    agent.thaw_keyring();

    let (status, _) = agent.status();
    assert_eq!(status["store"]["available"], true, "{status}");
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI, "the agent serves the session from before");
    assert_keyring_keeps(
        &agent,
        "robot:ci",
        |token| token != late,
        "the keyring now holds the login that `pachagent login` reported as failed, while the agent serves \
         robot:ci: an agent restart would switch to it",
    );
}

/// The write a failed login gave up on is still in gnome-keyring's queue when the next login is made, and both
/// go through once it wakes. The keyring must end up with the later login, as the agent does: if the late write
/// landed last, an agent restarted then would switch the user back to the login they were told had failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_given_up_on_a_frozen_keyring_never_lands_after_the_login_that_followed_it() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, _late) = a_login_failed_on_a_frozen_keyring(&pachd).await;
    // The next login's write waits on the frozen keyring too, behind the one given up on; then the keyring wakes.
    let newest = pachd.robot_token("ci-new", 0).await;
    let next = agent.spawn_cli_stdin(&["login", "--token-stdin"], Some(&format!("{newest}\n")));
    std::thread::sleep(Duration::from_secs(1));
    agent.thaw_keyring();
    let next = next.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "the login after the thaw ({}): {said}\n{}", next.status, agent.log_text());

    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, "You are \"robot:ci-new\"\n");
    assert_keyring_keeps(
        &agent,
        "robot:ci-new",
        |token| token == newest,
        "the keyring no longer holds the latest login",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_stops_within_seconds_even_while_a_call_waits_on_a_frozen_keyring() {
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("secret-service", &Surroundings::PrivateKeyring(Prepare::Unlocked), &pachd);
    agent.freeze_keyring();
    let (status, _) = agent.status();
    assert_eq!(status["store"]["available"], false, "{status}");
    // The probe behind that status still waits for gnome-keyring, on a thread nothing can cancel; and this one
    // is in flight when SIGTERM comes.
    let waiting = agent.spawn_cli(&["status", "--json"]);
    std::thread::sleep(Duration::from_secs(1));
    let (code, took) = agent.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", agent.log_text());
    assert!(took < ANSWERS_WITHIN, "SIGTERM took {took:?} to stop the agent");
    let answer = waiting.wait_with_output().unwrap();
    let answer =
        (answer.status.code(), String::from_utf8_lossy(&answer.stdout), String::from_utf8_lossy(&answer.stderr));
    eprintln!("the status in flight at SIGTERM: {answer:?}");
    assert_eq!(answer.0, Some(0), "the call in flight was answered before the agent left: {answer:?}");
    assert!(answer.1.contains("did not answer within 5 s"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_store_auto_an_agent_started_on_a_frozen_keyring_falls_back_to_keyutils_after_five_seconds() {
    let pachd = PachdDev::start(None, None);
    let mut agent = AgentIn::new("auto");
    agent.add_context("dev", &pachd.address);
    agent.start(&Surroundings::PrivateKeyring(Prepare::Frozen));
    let took = agent.wait_serving(Duration::from_secs(30));
    assert!((TIMEOUT_FLOOR..GIVES_UP_WITHIN + Duration::from_secs(5)).contains(&took), "serving after {took:?}");
    assert_contains(&agent.log_text(), &["no usable Secret Service", "did not answer within 5 s"], "the agent's log");

    let (status, took) = agent.status();
    assert!(took < TIMEOUT_FLOOR, "the kernel keyring answers at once: {took:?}");
    assert_eq!(status["store"]["backend"], "keyutils");
    assert_eq!(status["store"]["persistent"], false, "{status}");
    assert_eq!(status["store"]["available"], true, "{status}");
    assert_contains(status["store"]["detail"].as_str().unwrap(), &["do not survive a reboot"], "the store detail");

    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI);
    let stored = agent.keyutils_record("dev").expect("the session is in the kernel user keyring");
    assert_eq!(stored.pach_token.expose_secret(), token);
}

#[test]
fn an_agent_configured_for_the_secret_service_gives_up_on_a_frozen_keyring_after_five_seconds_and_names_the_fix() {
    let mut agent = AgentIn::new("secret-service");
    agent.start(&Surroundings::PrivateKeyring(Prepare::Frozen));
    let (code, took) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 1, "{}", agent.log_text());
    assert!((TIMEOUT_FLOOR..GIVES_UP_WITHIN).contains(&took), "it took {took:?} to give up");
    assert_contains(
        &agent.log_text(),
        &["pachagent: the secret-service store did not answer within 5 s", "store = \"keyutils\""],
        "the agent's last words",
    );
}

/// A stop asked for while the agent waits on a frozen keyring at start-up (a service manager giving up on a unit
/// that has just started, a Ctrl-C) is obeyed at once and cleanly: exit 0, well before the store's 5 s timeout,
/// and the socket removed.
#[test]
fn an_agent_stopped_while_it_waits_on_a_frozen_keyring_at_start_up_exits_at_once_and_cleanly() {
    let mut agent = AgentIn::new("secret-service");
    agent.start(&Surroundings::PrivateKeyring(Prepare::Frozen));
    // The agent takes its socket, then opens the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !agent.socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket within 20 s:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, took) = agent.stop(Duration::from_secs(15));
    assert_eq!(code, 0, "{}", agent.log_text());
    assert!(took < TIMEOUT_FLOOR, "it took {took:?} to stop: it waited for the keyring");
    assert_contains(&agent.log_text(), &["agent stopped while starting"], "the agent's log");
    assert!(!agent.socket.exists(), "the socket is left behind");
}

// ---------------------------------------------------------------------------------------------------------------
// No session bus

#[tokio::test(flavor = "multi_thread")]
async fn without_a_session_bus_store_auto_keeps_sessions_in_keyutils_and_status_says_they_do_not_survive_a_reboot() {
    let pachd = PachdDev::start(None, None);
    for surroundings in [Surroundings::NoBusVariable, Surroundings::DeadBus] {
        let mut agent = AgentIn::new("auto");
        agent.add_context("dev", &pachd.address);
        agent.start(&surroundings);
        let took = agent.wait_serving(SERVES_WITHIN);
        assert!(took < ANSWERS_WITHIN, "{surroundings:?}: serving after {took:?}");
        assert_contains(&agent.log_text(), &["no usable Secret Service"], "the agent's log");

        let (status, _) = agent.status();
        assert_eq!(status["store"]["backend"], "keyutils", "{surroundings:?}");
        assert_eq!(status["store"]["persistent"], false, "{surroundings:?}: {status}");
        assert_eq!(status["store"]["available"], true, "{surroundings:?}: {status}");
        assert_contains(status["store"]["detail"].as_str().unwrap(), &["do not survive a reboot"], "the detail");
        let (text, _) = agent.cli(&["status"]);
        assert_contains(&text.ok().stdout, &["sessions are lost at reboot"], "`pachagent status`");

        let token = pachd.robot_token("ci", 0).await;
        agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
        assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI, "{surroundings:?}");
        let stored = agent.keyutils_record("dev").expect("the session is in the kernel user keyring");
        assert_eq!(stored.pach_token.expose_secret(), token, "{surroundings:?}");
    }
}

#[test]
fn without_a_session_bus_an_agent_configured_for_the_secret_service_refuses_to_start_and_suggests_keyutils() {
    for surroundings in [Surroundings::NoBusVariable, Surroundings::DeadBus] {
        let mut agent = AgentIn::new("secret-service");
        agent.start(&surroundings);
        let (code, took) = agent.wait_exit(Duration::from_secs(30));
        assert_eq!(code, 1, "{surroundings:?}: {}", agent.log_text());
        assert!(took < ANSWERS_WITHIN, "{surroundings:?}: it took {took:?} to give up");
        assert_contains(
            &agent.log_text(),
            &[
                "pachagent: the secret-service store is unavailable",
                "start gnome-keyring-daemon",
                "store = \"keyutils\"",
            ],
            "the agent's last words",
        );
    }
}

#[test]
fn an_agent_configured_for_a_store_linux_does_not_have_refuses_to_start_and_names_it() {
    let mut agent = AgentIn::new("keychain");
    agent.start(&Surroundings::NoBusVariable);
    let (code, took) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 1, "{}", agent.log_text());
    assert!(took < ANSWERS_WITHIN, "it took {took:?} to give up");
    assert_contains(
        &agent.log_text(),
        &["pachagent: the keychain store is unavailable", "there is no keychain store on linux", "store = \"auto\""],
        "the agent's last words",
    );
}

// ---------------------------------------------------------------------------------------------------------------
// keyutils from a session keyring that does not possess the user keyring

/// Checks that `keyctl session -` gives a session keyring that does not link `@u`: otherwise the test below
/// would prove nothing.
fn assert_a_fresh_session_does_not_possess_the_user_keyring() {
    keyring_env::require("keyctl", "apt-get install keyutils (or run the tests with scripts/test.sh)");
    let out = Command::new("keyctl").args(["session", "-", "keyctl", "list", "@s"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "keyctl session - keyctl list @s: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!listing.contains("_uid."), "precondition: a `keyctl session -` keyring links @u:\n{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_session_keyring_does_not_possess_the_user_keyring_keeps_sessions_across_restarts() {
    assert_a_fresh_session_does_not_possess_the_user_keyring();
    let pachd = PachdDev::start(None, None);
    let mut agent = serving_agent("keyutils", &Surroundings::ForeignKeyutilsSession, &pachd);
    let (status, _) = agent.status();
    assert_eq!((&status["store"]["backend"], &status["store"]["available"]), (&"keyutils".into(), &true.into()));

    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).0.ok();
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI);
    let stored = agent.keyutils_record("dev").expect("another process of the user reads what the agent stored");
    assert_eq!(stored.pach_token.expose_secret(), token);

    // Killed without a chance to clean up, then started again in another new session.
    agent.kill();
    agent.start(&Surroundings::ForeignKeyutilsSession);
    agent.wait_serving(SERVES_WITHIN);
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, WHOAMI_CI, "the session came back from the user keyring");
    assert_eq!(agent.log_text().matches("logged in").count(), 1, "no new login:\n{}", agent.log_text());

    // The second agent replaces and removes the key the first one made.
    let other = pachd.robot_token("ci-2", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{other}\n")).0.ok();
    assert_eq!(agent.cli(&["whoami"]).0.ok().stdout, "You are \"robot:ci-2\"\n");
    let stored = agent.keyutils_record("dev").expect("the new session");
    assert_eq!(stored.pach_token.expose_secret(), other);
    agent.cli(&["logout"]).0.ok();
    assert!(agent.keyutils_record("dev").is_none(), "logout removed the key");
}
