//! `pachd-dev` behaves like pachd's auth API, as seen by a gRPC client that is not ours.
//!
//! Each test starts the real `pachd-dev` binary, reads its ready line, and talks to it with
//! `tests/raw_grpc_client.py` (Python grpcio, hand-encoded protobuf). Unless a test names an issuer, pachd-dev runs
//! with `--no-issuer` (no embedded dev IdP): these tests are about the auth API; pachctl's OIDC login is in
//! `tests/pachd_dev_oidc.rs`. Codes and messages are pachd's
//! (`pachyderm-auth.md`). The tests need `python3` with `grpcio` (`python3 -m pip install grpcio`); without them
//! they fail and say so, they never skip.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "support/issuer.rs"]
mod issuer;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use issuer::TestIssuer;
use serde_json::{Value, json};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/raw_grpc_client.py");
const ROOT_TOKEN: &str = "root-token-from-a-file";
const NOT_ACTIVATED: &str = "the auth service is not activated";
const NOT_SIGNED_IN: &str = "no authentication token (try logging in)";
const BAD_TOKEN: &str = "provided auth token is corrupted or has expired (try logging in again)";

/// A running `pachd-dev` process; killed on drop. Its stderr (the logs) is collected for inspection.
struct PachdDev {
    child: Child,
    address: String,
    ready: Value,
    logs: Arc<Mutex<String>>,
    /// Lines printed after the ready line (there should be none).
    more_stdout: mpsc::Receiver<Option<std::io::Result<String>>>,
    _dir: tempfile::TempDir,
}

impl PachdDev {
    /// Auth off, no issuer.
    fn start() -> Self {
        Self::start_with(&["--no-issuer"])
    }

    /// Auth active with [`ROOT_TOKEN`] from `--root-token-file`, plus `args` (`--no-issuer` unless they name an
    /// issuer).
    fn start_as_root(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root-token");
        std::fs::write(&file, format!("{ROOT_TOKEN}\n")).unwrap();
        let mut all = vec!["--root-token-file".to_owned(), file.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        if !args.contains(&"--issuer") {
            all.push("--no-issuer".to_owned());
        }
        Self::spawn(&all, dir)
    }

    /// Exactly `args`.
    fn start_with(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self::spawn(&args, tempfile::tempdir().unwrap())
    }

    fn spawn(args: &[String], dir: tempfile::TempDir) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pachd-dev"))
            .args(args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pachd-dev");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Anything after the ready line would break the "exactly one line" promise.
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(Some(Ok(line)));
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!("pachd-dev printed no ready line ({other:?}); logs:\n{}", logs.lock().unwrap());
            }
        };
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        let address = ready["pachd"].as_str().expect("ready line names the pachd address").to_owned();
        assert!(address.starts_with("grpc://127.0.0.1:"), "{address}");
        Self { child, address, ready, logs, more_stdout: rx, _dir: dir }
    }

    /// Runs calls in order through the Python client and returns one outcome per call.
    fn calls(&self, calls: &[Value]) -> Vec<Outcome> {
        let outcomes = raw_client(&self.address, calls);
        assert_eq!(outcomes.len(), calls.len(), "one outcome per call");
        outcomes
    }

    fn call(&self, method: &str, request: Value, token: Option<&str>) -> Outcome {
        self.calls(&[call(method, request, token)]).remove(0)
    }

    fn who_am_i(&self, token: Option<&str>) -> Outcome {
        self.call("WhoAmI", json!({}), token)
    }

    fn robot_token(&self, robot: &str, ttl: i64) -> String {
        let out = self.call("GetRobotToken", json!({"robot": robot, "ttl": ttl}), Some(ROOT_TOKEN));
        out.assert_ok();
        let token = out.response["token"].as_str().unwrap().to_owned();
        assert_pachd_token(&token);
        token
    }

    fn authenticate(&self, id_token: &str) -> Outcome {
        self.call("Authenticate", json!({"id_token": id_token}), None)
    }

    /// Secrets must never reach the logs, whatever the log level.
    fn assert_logs_never_show(&self, secrets: &[&str]) {
        // Give the log reader a moment to catch up with the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let logs = self.logs.lock().unwrap();
        assert!(logs.contains("pachd-dev is serving"), "the logs were captured:\n{logs}");
        for secret in secrets {
            assert!(!logs.contains(secret), "a token appeared in the logs:\n{logs}");
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "pachd-dev did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PachdDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the Python client saw for one call.
#[derive(Debug, serde::Deserialize)]
struct Outcome {
    code: String,
    details: String,
    response: Value,
}

impl Outcome {
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!((self.code.as_str(), self.details.as_str()), ("OK", ""), "{self:?}");
    }

    #[track_caller]
    fn assert_error(&self, code: &str, details: &str) {
        assert_eq!((self.code.as_str(), self.details.as_str()), (code, details), "{self:?}");
    }

    /// WhoAmI's `expiration` in Unix seconds, `None` when the token never expires.
    fn expiration(&self) -> Option<i64> {
        self.assert_ok();
        let exp = &self.response["expiration"];
        (!exp.is_null()).then(|| exp["seconds"].as_i64().unwrap())
    }
}

fn call(method: &str, request: Value, token: Option<&str>) -> Value {
    let path = if method.contains('/') { method.to_owned() } else { format!("/auth_v2.API/{method}") };
    let metadata: Vec<[&str; 2]> = token.map(|t| ["authn-token", t]).into_iter().collect();
    json!({"method": path, "request": request, "metadata": metadata})
}

fn raw_client(address: &str, calls: &[Value]) -> Vec<Outcome> {
    require_grpcio();
    let mut child = Command::new("python3")
        .arg(CLIENT)
        .arg(address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(serde_json::to_string(calls).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "raw_grpc_client.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("client output: {e}: {:?}", out.stdout))
}

/// Fails (never skips) when the Python side is missing, saying how to install it.
fn require_grpcio() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| match Command::new("python3").arg(CLIENT).arg("--check").output() {
        Err(e) => Err(format!(
            "python3 is required to run the raw gRPC client ({e}). Install Python 3 (e.g. `apt-get install python3 \
             python3-pip`), then `python3 -m pip install grpcio`."
        )),
        Ok(out) if !out.status.success() => Err(format!(
            "the raw gRPC client cannot run: {}Install grpcio with `python3 -m pip install grpcio`.",
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(_) => Ok(()),
    });
    if let Err(why) = checked {
        panic!("{why}");
    }
}

#[track_caller]
fn assert_pachd_token(token: &str) {
    assert_eq!(token.len(), 32, "pachd tokens are 32 characters: {token:?}");
    assert!(token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "pachd tokens are lowercase hex: {token:?}");
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Go's `time.Time.String()` for a whole-second UTC instant, as go-oidc prints an expiry.
fn go_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap().format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

#[track_caller]
fn assert_near(actual: i64, expected: i64, slack: i64) {
    assert!((actual - expected).abs() <= slack, "expected about {expected} (±{slack} s), got {actual}");
}

#[test]
fn without_a_root_token_every_auth_call_says_auth_is_not_activated() {
    let dev = PachdDev::start();
    let outcomes = dev.calls(&[
        call("WhoAmI", json!({}), Some("anything")),
        call("Authenticate", json!({"id_token": "x.y.z"}), None),
        call("GetRobotToken", json!({"robot": "ci"}), Some("anything")),
        call("RevokeAuthToken", json!({"token": "t"}), Some("anything")),
        call("/grpc.health.v1.Health/Check", json!({}), None),
    ]);
    for out in &outcomes[..4] {
        out.assert_error("UNIMPLEMENTED", NOT_ACTIVATED);
    }
    outcomes[4].assert_ok();
    assert_eq!(outcomes[4].response["status"], 1, "grpc.health.v1 reports SERVING");
    assert!(dev.ready.get("issuer").is_none(), "no issuer in the ready line: {}", dev.ready);
}

#[test]
fn activate_turns_auth_on_once_and_returns_a_generated_root_token() {
    let dev = PachdDev::start();
    let out = dev.call("Activate", json!({}), None);
    out.assert_ok();
    let root = out.response["pach_token"].as_str().unwrap().to_owned();
    assert_pachd_token(&root);

    let outcomes = dev.calls(&[call("WhoAmI", json!({}), Some(&root)), call("Activate", json!({}), None)]);
    assert_eq!(outcomes[0].response["username"], "pach:root");
    assert_eq!(outcomes[0].expiration(), None, "the root token never expires");
    outcomes[1].assert_error("UNIMPLEMENTED", "the auth service is already activated");
    dev.assert_logs_never_show(&[&root]);
}

#[test]
fn activate_keeps_a_root_token_the_caller_chose() {
    let dev = PachdDev::start();
    let outcomes = dev
        .calls(&[call("Activate", json!({"root_token": "my-root"}), None), call("WhoAmI", json!({}), Some("my-root"))]);
    assert_eq!(outcomes[0].response["pach_token"], "my-root");
    assert_eq!(outcomes[1].response["username"], "pach:root");
}

#[test]
fn a_root_token_file_activates_auth_at_start_as_pach_root_without_expiry() {
    let dev = PachdDev::start_as_root(&[]);
    let outcomes =
        dev.calls(&[call("WhoAmI", json!({}), Some(ROOT_TOKEN)), call("Activate", json!({"root_token": "x"}), None)]);
    assert_eq!(outcomes[0].response["username"], "pach:root");
    assert_eq!(outcomes[0].expiration(), None);
    outcomes[1].assert_error("UNIMPLEMENTED", "the auth service is already activated");
    dev.assert_logs_never_show(&[ROOT_TOKEN]);
}

#[test]
fn who_am_i_without_a_token_asks_the_user_to_log_in() {
    let dev = PachdDev::start_as_root(&[]);
    dev.who_am_i(None).assert_error("UNAUTHENTICATED", NOT_SIGNED_IN);
}

#[test]
fn an_unknown_token_is_reported_as_corrupted_or_expired() {
    let dev = PachdDev::start_as_root(&[]);
    dev.who_am_i(Some("0123456789abcdef0123456789abcdef")).assert_error("UNAUTHENTICATED", BAD_TOKEN);
}

#[test]
fn two_authn_token_keys_are_refused() {
    let dev = PachdDev::start_as_root(&[]);
    let twice = json!({
        "method": "/auth_v2.API/WhoAmI",
        "request": {},
        "metadata": [["authn-token", ROOT_TOKEN], ["authn-token", ROOT_TOKEN]],
    });
    dev.calls(&[twice])[0].assert_error("UNKNOWN", "multiple authentication token keys found in context");
}

#[test]
fn a_robot_token_names_the_robot_and_never_expires_without_a_ttl() {
    let dev = PachdDev::start_as_root(&[]);
    let forever = dev.robot_token("robot:ci", 0);
    let hour = dev.robot_token("nightly", 3600);
    let outcomes = dev.calls(&[call("WhoAmI", json!({}), Some(&forever)), call("WhoAmI", json!({}), Some(&hour))]);
    assert_eq!(outcomes[0].response["username"], "robot:ci", "a redundant robot: prefix is stripped");
    assert_eq!(outcomes[0].expiration(), None);
    assert_eq!(outcomes[1].response["username"], "robot:nightly");
    assert_near(outcomes[1].expiration().unwrap(), unix_now() + 3600, 5);
    dev.assert_logs_never_show(&[&forever, &hour, ROOT_TOKEN]);
}

#[test]
fn an_expired_token_is_reported_as_expired_rather_than_unknown() {
    let dev = PachdDev::start_as_root(&[]);
    let token = dev.robot_token("short-lived", 1);
    // pachd-dev reads the wall clock, so the test waits for the second to pass.
    std::thread::sleep(Duration::from_millis(2100));
    dev.who_am_i(Some(&token)).assert_error("INTERNAL", "token expiration is in the past");
}

#[test]
fn only_the_root_user_may_mint_robot_tokens() {
    let dev = PachdDev::start_as_root(&[]);
    let robot = dev.robot_token("ci", 0);
    let outcomes = dev.calls(&[
        call("GetRobotToken", json!({"robot": "other"}), Some(&robot)),
        call("GetRobotToken", json!({"robot": "other"}), None),
        call("GetRobotToken", json!({"robot": "robot:a:b"}), Some(ROOT_TOKEN)),
    ]);
    outcomes[0].assert_error(
        "PERMISSION_DENIED",
        "robot:ci is not authorized to perform this operation - needs permissions [CLUSTER_AUTH_GET_ROBOT_TOKEN] on \
         CLUSTER . Run `pachctl auth roles-for-permission` to find roles that grant a given permission.",
    );
    outcomes[1].assert_error("UNAUTHENTICATED", NOT_SIGNED_IN);
    outcomes[2].assert_error("UNKNOWN", "robot names cannot contain colons (':')");
}

#[test]
fn a_revoked_token_no_longer_works_and_revoking_needs_a_signed_in_caller() {
    let dev = PachdDev::start_as_root(&[]);
    let robot = dev.robot_token("ci", 0);
    let outcomes = dev.calls(&[
        call("RevokeAuthToken", json!({"token": robot}), None),
        call("RevokeAuthToken", json!({"token": robot}), Some(ROOT_TOKEN)),
        call("WhoAmI", json!({}), Some(&robot)),
        call("RevokeAuthToken", json!({"token": robot}), Some(ROOT_TOKEN)),
    ]);
    outcomes[0].assert_error("UNAUTHENTICATED", NOT_SIGNED_IN);
    outcomes[1].assert_ok();
    assert_eq!(outcomes[1].response["number"], 1, "one token deleted");
    outcomes[2].assert_error("UNAUTHENTICATED", BAD_TOKEN);
    assert_eq!(outcomes[3].response["number"], 0, "nothing left to delete");
}

#[test]
fn an_id_token_from_the_issuer_becomes_a_user_session_that_ends_with_the_id_token() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    assert_eq!(dev.ready["issuer"], op.issuer());
    let claims = op.claims_for("alice@example.com", "pachd", Duration::from_secs(600));
    let id_exp = claims["exp"].as_i64().unwrap();
    let id_token = op.mint(claims);

    let out = dev.authenticate(&id_token);
    out.assert_ok();
    let session = out.response["pach_token"].as_str().unwrap().to_owned();
    assert_pachd_token(&session);
    let me = dev.who_am_i(Some(&session));
    assert_eq!(me.response["username"], "user:alice@example.com");
    let exp = me.expiration().expect("a session token expires");
    assert!((id_exp - 2..=id_exp).contains(&exp), "session ends with the ID token ({id_exp}), got {exp}");
    dev.assert_logs_never_show(&[&session, &id_token]);
}

#[test]
fn a_session_never_outlives_the_session_ttl() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer(), "--session-ttl", "90s"]);
    let out = dev.authenticate(&op.id_token_for("bob@example.com", "pachd", Duration::from_secs(3600)));
    let session = out.response["pach_token"].as_str().unwrap().to_owned();
    let me = dev.who_am_i(Some(&session));
    assert_eq!(me.response["username"], "user:bob@example.com");
    assert_near(me.expiration().unwrap(), unix_now() + 90, 5);
}

#[test]
fn id_tokens_for_another_audience_are_refused_with_pachds_message() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    let mut two = op.claims_for("alice@example.com", "unused", Duration::from_secs(600));
    two["aud"] = json!(["console", "jupyter"]);
    let outcomes = dev.calls(&[
        call(
            "Authenticate",
            json!({"id_token": op.id_token_for("a@x", "someone-else", Duration::from_secs(600))}),
            None,
        ),
        call("Authenticate", json!({"id_token": op.mint(two)}), None),
    ]);
    outcomes[0]
        .assert_error("UNKNOWN", r#"could not verify token: oidc: expected audience "pachd" got ["someone-else"]"#);
    outcomes[1].assert_error(
        "UNKNOWN",
        r#"could not verify token: oidc: expected audience "pachd" got ["console" "jupyter"]"#,
    );
}

#[test]
fn a_custom_client_id_is_the_audience_pachd_dev_expects() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer(), "--client-id", "pachyderm"]);
    let token = op.id_token_for("carol@example.com", "pachyderm", Duration::from_secs(600));
    let outcomes = dev.calls(&[
        call("Authenticate", json!({"id_token": token}), None),
        call("Authenticate", json!({"id_token": op.id_token_for("c@x", "pachd", Duration::from_secs(600))}), None),
    ]);
    outcomes[0].assert_ok();
    outcomes[1].assert_error("UNKNOWN", r#"could not verify token: oidc: expected audience "pachyderm" got ["pachd"]"#);
}

#[test]
fn id_tokens_from_another_issuer_are_refused_even_when_only_a_trailing_slash_differs() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    let mut slash = op.claims_for("alice@example.com", "pachd", Duration::from_secs(600));
    slash["iss"] = json!(format!("{}/", op.issuer()));
    let mut other = op.claims_for("alice@example.com", "pachd", Duration::from_secs(600));
    other["iss"] = json!("https://accounts.example.com");
    let outcomes = dev.calls(&[
        call("Authenticate", json!({"id_token": op.mint(slash)}), None),
        call("Authenticate", json!({"id_token": op.mint(other)}), None),
    ]);
    let iss = op.issuer();
    outcomes[0].assert_error(
        "UNKNOWN",
        &format!(
            r#"could not verify token: oidc: id token issued by a different provider, expected "{iss}" got "{iss}/""#
        ),
    );
    outcomes[1].assert_error(
        "UNKNOWN",
        &format!(
            r#"could not verify token: oidc: id token issued by a different provider, expected "{iss}" got "https://accounts.example.com""#
        ),
    );
}

#[test]
fn an_issuer_with_a_trailing_slash_is_discovered_without_a_double_slash() {
    let op = TestIssuer::start_with_trailing_slash();
    assert!(op.issuer().ends_with('/'));
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    let out = dev.authenticate(&op.id_token_for("dana@example.com", "pachd", Duration::from_secs(600)));
    out.assert_ok();
    let me = dev.who_am_i(out.response["pach_token"].as_str());
    assert_eq!(me.response["username"], "user:dana@example.com");
}

#[test]
fn an_issuer_configured_without_the_providers_trailing_slash_fails_discovery() {
    let op = TestIssuer::start_with_trailing_slash();
    let configured = op.issuer().trim_end_matches('/').to_owned();
    let dev = PachdDev::start_as_root(&["--issuer", &configured]);
    let out = dev.authenticate(&op.id_token_for("dana@example.com", "pachd", Duration::from_secs(600)));
    out.assert_error(
        "UNKNOWN",
        &format!(
            r#"oidc: issuer did not match the issuer returned by provider, expected "{configured}" got "{}""#,
            op.issuer()
        ),
    );
}

#[test]
fn an_id_token_with_a_bad_signature_is_refused() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    let good = op.id_token_for("alice@example.com", "pachd", Duration::from_secs(600));
    let forged = op.mint_with_foreign_key(op.claims_for("mallory@example.com", "pachd", Duration::from_secs(600)));
    let outcomes = dev.calls(&[
        call("Authenticate", json!({"id_token": good}), None),
        call("Authenticate", json!({"id_token": forged}), None),
    ]);
    outcomes[0].assert_ok();
    outcomes[1].assert_error(
        "UNKNOWN",
        "could not verify token: failed to verify signature: failed to verify id token signature",
    );
    assert_eq!(op.jwks_fetches(), 2, "the key set is fetched once, then once more before giving up on a forgery");
}

#[test]
fn an_expired_id_token_is_refused_with_its_expiry() {
    let op = TestIssuer::start();
    let dev = PachdDev::start_as_root(&["--issuer", op.issuer()]);
    let mut claims = op.claims_for("alice@example.com", "pachd", Duration::ZERO);
    let exp = unix_now() - 60;
    claims["exp"] = json!(exp);
    let out = dev.authenticate(&op.mint(claims));
    out.assert_error(
        "UNKNOWN",
        &format!("could not verify token: oidc: token is expired (Token Expiry: {})", go_time(exp)),
    );
}

#[test]
fn authenticate_and_get_oidc_login_without_an_issuer_or_a_credential_answer_like_pachd() {
    let dev = PachdDev::start_as_root(&[]);
    let outcomes = dev.calls(&[
        call("Authenticate", json!({"id_token": "x.y.z"}), None),
        call("Authenticate", json!({}), None),
        call("GetOIDCLogin", json!({}), None),
    ]);
    outcomes[0].assert_error("UNKNOWN", "OIDC ID provider configuration not found");
    outcomes[1].assert_error("UNKNOWN", "unrecognized authentication mechanism (old pachd?)");
    outcomes[2].assert_error("UNKNOWN", "OIDC ID provider configuration not found");
}

#[test]
fn get_oidc_login_with_the_embedded_dev_idp_answers_a_login_url_and_state_on_the_wire() {
    let dev = PachdDev::start_with(&[]);
    let issuer = dev.ready["issuer"].as_str().expect("the dev IdP's issuer in the ready line").to_owned();
    let outcomes = dev.calls(&[call("GetOIDCLogin", json!({}), None), call("GetOIDCLogin", json!({}), None)]);
    outcomes[0].assert_ok();
    let state = outcomes[0].response["state"].as_str().unwrap();
    let login_url = outcomes[0].response["login_url"].as_str().unwrap();
    assert_eq!(state.len(), 31, "{state}");
    assert!(login_url.starts_with(&format!("{issuer}/authorize?client_id=pachd&nonce=")), "{login_url}");
    assert!(login_url.ends_with(&format!("&state={state}")), "{login_url}");
    assert_ne!(outcomes[1].response["state"], outcomes[0].response["state"], "every login gets its own state");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_pachd_dev_cleanly_after_printing_only_the_ready_line() {
    let mut dev = PachdDev::start_as_root(&[]);
    dev.who_am_i(Some(ROOT_TOKEN)).assert_ok();
    let status = dev.terminate();
    assert!(status.success(), "pachd-dev exits 0 on SIGTERM, got {status}");
    let extra: Vec<_> = dev.more_stdout.try_iter().flatten().collect();
    assert!(extra.is_empty(), "stdout carries only the ready line, also got {extra:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dev.logs.lock().unwrap().contains("pachd-dev stopped") {
        assert!(Instant::now() < deadline, "no shutdown log line:\n{}", dev.logs.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}
