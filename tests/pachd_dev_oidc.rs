//! pachctl's login (`pachctl auth login`) against the real `pachd-dev` binary: GetOIDCLogin, a scripted user on
//! the IdP's login page, the browser landing on pachd-dev's `/authorization-code/callback`, and
//! `Authenticate{oidc_state}` turning the state into a session. The gRPC side uses the crate's generated client;
//! the user side is plain HTTP. Texts, codes and lifetimes are pachd's (pachyderm-auth.md §4).
//! pachd-dev logs at `info`; set `TEST_PACHD_LOG=debug` to see more when a test fails.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pachagent::devstack::idp::{self, Client, ClientKind, DevIdp, DevIdpOptions};
use pachagent::proto::auth::api_client::ApiClient;
use pachagent::proto::auth::{AuthenticateRequest, GetOidcLoginRequest, WhoAmIRequest};
use pachagent::secret::ClientSecret;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;
use url::Url;

const ROOT_TOKEN: &str = "root-token-for-oidc-tests";
const LOGGED_IN: &str = "You are now logged in. Go back to the terminal to use Pachyderm!";

/// A running `pachd-dev` with auth active; killed on drop. Its logs (stderr) are kept for inspection.
struct PachdDev {
    child: Child,
    ready: Value,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl PachdDev {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root-token");
        std::fs::write(&root, ROOT_TOKEN).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pachd-dev"))
            .arg("--root-token-file")
            .arg(&root)
            .args(args)
            .env("RUST_LOG", "info")
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
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                panic!("pachd-dev printed no ready line ({other:?}); logs:\n{}", logs.lock().unwrap());
            }
        };
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        Self { child, ready, logs, _dir: dir }
    }

    fn field(&self, name: &str) -> &str {
        self.ready[name].as_str().unwrap_or_else(|| panic!("no {name:?} in the ready line {}", self.ready))
    }

    fn callback(&self) -> &str {
        self.field("oidc_callback")
    }

    async fn api(&self) -> ApiClient<Channel> {
        ApiClient::connect(self.field("pachd").replacen("grpc://", "http://", 1)).await.unwrap()
    }

    async fn oidc_login(&self) -> (Url, String) {
        let resp = self.api().await.get_oidc_login(GetOidcLoginRequest {}).await.unwrap().into_inner();
        (Url::parse(&resp.login_url).unwrap(), resp.state)
    }

    /// Authenticate{oidc_state} in the background, as pachctl calls it right after printing the URL.
    fn authenticate_later(&self, state: &str) -> tokio::task::JoinHandle<Result<String, tonic::Status>> {
        let endpoint = self.field("pachd").replacen("grpc://", "http://", 1);
        let state = state.to_owned();
        tokio::spawn(async move {
            let req = AuthenticateRequest { oidc_state: state, id_token: String::new() };
            let mut api = ApiClient::connect(endpoint).await.unwrap();
            api.authenticate(req).await.map(|r| r.into_inner().pach_token)
        })
    }

    /// WhoAmI for `token`: the username and the expiry in Unix seconds.
    async fn who_am_i(&self, token: &str) -> (String, Option<i64>) {
        let mut req = tonic::Request::new(WhoAmIRequest {});
        req.metadata_mut().insert("authn-token", token.parse().unwrap());
        let resp = self.api().await.who_am_i(req).await.unwrap().into_inner();
        (resp.username, resp.expiration.map(|t| t.seconds))
    }

    /// Waits (a little) for a log line; pachd-dev writes logs asynchronously to the test. Sleeps on the runtime,
    /// never blocking it: the client's connection task must keep running (it is what tells the server a call
    /// was abandoned).
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.logs.lock().unwrap().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the logs:\n{}", self.logs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PachdDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name { value.to_owned() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

/// The user's browser arriving at a URL (pachd-dev's callback): status and body text.
async fn browse(url: &Url) -> (StatusCode, String) {
    let r = reqwest::get(url.clone()).await.unwrap();
    (r.status(), r.text().await.unwrap())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// pachd's text for a failed login, naming the first half of the state and its length.
fn failure_text(state: &str) -> String {
    format!(
        "authorization failed (OIDC state token: \"{}.../{}\"; Pachyderm logs may contain more information)\n",
        &state[..state.len() / 2],
        state.len()
    )
}

#[track_caller]
fn assert_status(result: &Result<String, tonic::Status>, code: Code, message: &str) {
    match result {
        Err(status) => assert_eq!((status.code(), status.message()), (code, message), "{status:?}"),
        Ok(_) => panic!("expected {code:?} {message:?}, got a token"),
    }
}

#[tokio::test]
async fn without_an_issuer_pachd_dev_runs_its_own_dev_idp_and_announces_every_url() {
    let dev = PachdDev::start(&[]);
    let (pachd, issuer, callback) = (dev.field("pachd"), dev.field("issuer"), dev.callback());
    assert!(pachd.starts_with("grpc://127.0.0.1:"), "{pachd}");
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");
    assert!(callback.starts_with("http://127.0.0.1:") && callback.ends_with("/authorization-code/callback"));
    let keys: Vec<&String> = dev.ready.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{}", dev.ready);

    let discovery: Value =
        reqwest::get(format!("{issuer}/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert_eq!(discovery["issuer"], issuer);
    let root = Url::parse(callback).unwrap().join("/").unwrap();
    assert_eq!(browse(&root).await, (StatusCode::OK, "200 OK".to_owned()), "pachd's health answer on the OIDC port");
}

#[tokio::test]
async fn pachctls_login_ends_in_a_user_session_that_lasts_the_session_duration() {
    let dev = PachdDev::start(&["--session-ttl", "2h"]);
    let (login_url, state) = dev.oidc_login().await;

    // The URL pachd would print: its client, its callback, its scopes, the state and a nonce.
    assert!(login_url.as_str().starts_with(&format!("{}/authorize?", dev.field("issuer"))), "{login_url}");
    assert_eq!(param(&login_url, "client_id").as_deref(), Some("pachd"));
    assert_eq!(param(&login_url, "redirect_uri").as_deref(), Some(dev.callback()));
    assert_eq!(param(&login_url, "response_type").as_deref(), Some("code"));
    assert_eq!(param(&login_url, "scope").as_deref(), Some("email profile groups openid"));
    assert_eq!(param(&login_url, "state").as_deref(), Some(state.as_str()));
    assert_eq!(state.len(), 31, "pachd's random.String(30)");
    assert_eq!(URL_SAFE_NO_PAD.decode(&state).unwrap().len(), 23);
    assert_eq!(param(&login_url, "nonce").map(|n| n.len()), Some(31));
    assert!(param(&login_url, "code_challenge").is_none(), "pachd does not use PKCE");

    let pending = dev.authenticate_later(&state);
    let landing = idp::complete_login(&login_url, "alice@example.com").await.unwrap();
    assert!(landing.as_str().starts_with(dev.callback()), "{landing}");
    assert_eq!(browse(&landing).await, (StatusCode::OK, LOGGED_IN.to_owned()));

    let token = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap().unwrap();
    assert_eq!(token.len(), 32);
    let (username, expiration) = dev.who_am_i(&token).await;
    assert_eq!(username, "user:alice@example.com");
    let expiration = expiration.expect("a user session expires");
    assert!((expiration - (unix_now() + 7200)).abs() <= 5, "session ends after 2 h, got {expiration}");
}

#[tokio::test]
async fn an_authenticate_still_waiting_when_the_state_expires_gets_pachds_message() {
    let dev = PachdDev::start(&["--oidc-state-ttl", "2s"]);
    let (login_url, state) = dev.oidc_login().await;
    let started = Instant::now();
    let result = dev.authenticate_later(&state).await.unwrap();
    assert_status(&result, Code::Unknown, "error during authorization: OIDC state token expired");
    assert!(started.elapsed() >= Duration::from_millis(1500), "it waited for the TTL: {:?}", started.elapsed());

    // The user finishing afterwards lands on a refusal.
    let landing = idp::complete_login(&login_url, "slow@example.com").await.unwrap();
    assert_eq!(browse(&landing).await, (StatusCode::UNAUTHORIZED, failure_text(&state)));
}

#[tokio::test]
async fn a_forged_state_at_the_callback_is_refused_with_pachds_text() {
    let dev = PachdDev::start(&[]);
    let (login_url, _state) = dev.oidc_login().await;
    let landing = idp::complete_login(&login_url, "mallory@example.com").await.unwrap();
    let forged_state = "forged-state-that-pachd-never-made";
    let forged = with_param(&landing, "state", forged_state);
    assert_eq!(browse(&forged).await, (StatusCode::UNAUTHORIZED, failure_text(forged_state)));

    let mut missing = Url::parse(dev.callback()).unwrap();
    missing.query_pairs_mut().append_pair("state", forged_state);
    let (status, text) = browse(&missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(text, "invalid OIDC callback request: missing OIDC state token or authorization code\n");
}

#[tokio::test]
async fn a_code_delivered_under_another_logins_state_fails_the_nonce_check() {
    let dev = PachdDev::start(&[]);
    let (first_url, _first_state) = dev.oidc_login().await;
    let (_second_url, second_state) = dev.oidc_login().await;
    let pending = dev.authenticate_later(&second_state);

    // An attacker logs in with the first URL and feeds the code to the victim's (second) state.
    let landing = idp::complete_login(&first_url, "mallory@example.com").await.unwrap();
    let swapped = with_param(&landing, "state", &second_state);
    assert_eq!(browse(&swapped).await, (StatusCode::UNAUTHORIZED, failure_text(&second_state)));

    let result = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap();
    assert_status(&result, Code::Unknown, "authorization failed");
    dev.wait_for_log("nonce does not match").await;
}

#[tokio::test]
async fn an_unknown_state_is_waited_on_until_the_client_gives_up() {
    let dev = PachdDev::start(&[]);
    let mut api = dev.api().await;
    let call = api.authenticate(AuthenticateRequest { oidc_state: "never-issued".into(), id_token: String::new() });
    assert!(tokio::time::timeout(Duration::from_millis(1500), call).await.is_err(), "still waiting after 1.5 s");
    // Dropping the call cancelled the stream; the server stops waiting too.
    dev.wait_for_log("Authenticate stopped waiting on an OIDC state: the client went away").await;
}

#[tokio::test]
async fn with_no_issuer_at_all_the_oidc_calls_answer_like_pachd_without_an_oidc_config() {
    let dev = PachdDev::start(&["--no-issuer"]);
    assert!(dev.ready.get("issuer").is_none(), "{}", dev.ready);
    let err = dev.api().await.get_oidc_login(GetOidcLoginRequest {}).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, "OIDC ID provider configuration not found"));
    let mut callback = Url::parse(dev.callback()).unwrap();
    callback.query_pairs_mut().append_pair("code", "c").append_pair("state", "abcdefgh");
    assert_eq!(browse(&callback).await, (StatusCode::UNAUTHORIZED, failure_text("abcdefgh")));
}

// Two workers: the in-process IdP must keep answering while the test thread waits for pachd-dev to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_external_issuer_the_code_is_exchanged_with_the_secret_from_the_file() {
    let idp = DevIdp::start(DevIdpOptions::default(), idp::bind(idp::DEFAULT_LISTEN).await.unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "file-secret\n").unwrap();
    let secret_arg = secret_file.to_str().unwrap();
    let dev =
        PachdDev::start(&["--issuer", idp.issuer(), "--client-secret-file", secret_arg, "--scopes", "openid,email"]);
    assert_eq!(dev.field("issuer"), idp.issuer());
    let register = |secret: &str| {
        idp.clients().register(Client {
            id: "pachd".into(),
            kind: ClientKind::Confidential { secret: ClientSecret::new(secret.into()) },
            redirect_uris: vec![dev.callback().to_owned()],
            trusted_peers: vec![],
        });
    };

    register("file-secret");
    let (login_url, state) = dev.oidc_login().await;
    assert_eq!(param(&login_url, "scope").as_deref(), Some("openid email"));
    let pending = dev.authenticate_later(&state);
    let landing = idp::complete_login(&login_url, "olivia@example.com").await.unwrap();
    assert_eq!(browse(&landing).await, (StatusCode::OK, LOGGED_IN.to_owned()));
    let token = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap().unwrap();
    assert_eq!(dev.who_am_i(&token).await.0, "user:olivia@example.com");

    // When the IdP expects another secret, the exchange fails and so does the login.
    register("rotated-secret");
    let (login_url, state) = dev.oidc_login().await;
    let landing = idp::complete_login(&login_url, "olivia@example.com").await.unwrap();
    assert_eq!(browse(&landing).await, (StatusCode::UNAUTHORIZED, failure_text(&state)));
    assert_eq!(idp.counters().authorization_code_grants, 1);
    idp.stop().await;
}

#[tokio::test]
async fn the_agents_own_login_at_the_dev_idp_yields_an_id_token_pachd_dev_accepts() {
    let dev = PachdDev::start(&["--id-token-ttl", "90s"]);
    let issuer = Url::parse(dev.field("issuer")).unwrap();
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:48123/callback";
    let mut authorize = issuer.join("/authorize").unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", "pachagent")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email offline_access audience:server:client_id:pachd")
        .append_pair("state", "s")
        .append_pair("nonce", "n")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let landing = idp::complete_login(&authorize, idp::DEV_EMAIL).await.unwrap();
    let code = param(&landing, "code").unwrap();
    let tokens: Value = reqwest::Client::new()
        .post(issuer.join("/token").unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", "pachagent"),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}")).to_owned();

    let req = AuthenticateRequest { id_token, oidc_state: String::new() };
    let token = dev.api().await.authenticate(req).await.unwrap().into_inner().pach_token;
    let (username, expiration) = dev.who_am_i(&token).await;
    assert_eq!(username, "user:dev@example.com");
    let expiration = expiration.unwrap();
    assert!((expiration - (unix_now() + 90)).abs() <= 5, "the session ends with the 90 s ID token: {expiration}");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_a_waiting_authenticate_instead_of_hanging_the_shutdown() {
    let mut dev = PachdDev::start(&[]);
    let (_login_url, state) = dev.oidc_login().await;
    let pending = dev.authenticate_later(&state);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = Command::new("kill").args(["-TERM", &dev.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let result = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("the call ends").unwrap();
    assert_status(&result, Code::Unavailable, "pachd-dev is shutting down");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pachd-dev still running 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
