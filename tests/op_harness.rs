//! The login-test harness itself: the test OpenID Provider (`support/op.rs`, `tests/oidc/server.js`), the scripted
//! user (`tests/browser/fake_user.py`) and headless Chromium (`support/chromium.rs`) behave as a real provider and
//! a real user would, seen from an OAuth client. Each test plays the client by hand: PKCE, a loopback redirect
//! listener, the token endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/op.rs"]
mod op;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use op::{FAKE_USER, Forgery, Signing, TestOp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------------------------
// The client side, by hand.

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn discovery(op: &TestOp) -> Value {
    let resp = http().get(op.discovery_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn random_b64(bytes: usize) -> String {
    let mut raw = Vec::new();
    while raw.len() < bytes {
        raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    raw.truncate(bytes);
    URL_SAFE_NO_PAD.encode(raw)
}

/// One authorization-code + PKCE request: what the client keeps, and the URL the user's browser opens.
struct AuthRequest {
    url: String,
    redirect_uri: String,
    verifier: String,
    state: String,
    nonce: String,
}

fn auth_request(disc: &Value, client_id: &str, redirect_uri: &str, scope: &str) -> AuthRequest {
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random_b64(16), random_b64(16));
    let mut url = url::Url::parse(disc["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("prompt", "consent")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce);
    AuthRequest { url: url.into(), redirect_uri: redirect_uri.to_owned(), verifier, state, nonce }
}

const SCOPE: &str = "openid email profile offline_access";

/// A loopback redirect listener, like a client's: answers every request (browsers may open spare connections
/// and ask for /favicon.ico) and reports the first one that is not for the favicon.
struct Callback {
    port: u16,
    received: tokio::sync::mpsc::UnboundedReceiver<url::Url>,
    _server: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const CALLBACK_PAGE: &str = "Test client: authorization response received.";

async fn callback_listener() -> Callback {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) =
                    if target == "/favicon.ico" { ("404 Not Found", "") } else { ("200 OK", CALLBACK_PAGE) };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                if target != "/favicon.ico" {
                    let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap().join(&target).unwrap();
                    let _ = tx.send(url);
                }
            });
        }
    });
    Callback { port, received, _server: AbortOnDrop(server) }
}

impl Callback {
    fn redirect_uri(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn received(mut self) -> url::Url {
        tokio::time::timeout(Duration::from_secs(20), self.received.recv())
            .await
            .expect("the authorization response reached the client's listener")
            .unwrap()
    }
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The scripted user, attached (FAKE_USER_FOREGROUND=1): returns its exit status and its log.
async fn fake_user(url: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(FAKE_USER).arg(url).env("FAKE_USER_FOREGROUND", "1").kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("fake_user.py finished").unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn token(disc: &Value, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = http().post(disc["token_endpoint"].as_str().unwrap()).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn exchange_code(disc: &Value, req: &AuthRequest, code: &str, client_id: &str) -> Value {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &req.redirect_uri),
        ("client_id", client_id),
        ("code_verifier", &req.verifier),
    ];
    let (status, body) = token(disc, &form, None).await;
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

async fn refresh(disc: &Value, refresh_token: &str, client_id: &str) -> (u16, Value) {
    token(disc, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)], None)
        .await
}

/// The ID token's claims, after checking its RS256 signature against the provider's JWKS, its issuer and audience.
async fn verified_claims(disc: &Value, id_token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        http().get(disc["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the ID token's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[disc["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation).unwrap().claims
}

/// A complete login by the scripted user for `client_id`; returns the token response and the request.
async fn scripted_login(op: &TestOp, client_id: &str, email: &str) -> (Value, AuthRequest, Value) {
    let disc = discovery(op).await;
    let callback = callback_listener().await;
    let req = auth_request(&disc, client_id, &callback.redirect_uri("/callback"), SCOPE);
    let (status, log) = fake_user(&req.url, &[("FAKE_USER_EMAIL", email)]).await;
    assert_eq!(status, 0, "fake_user.py:\n{log}");
    let got = callback.received().await;
    assert_eq!(param(&got, "state").as_deref(), Some(req.state.as_str()), "{got}");
    assert_eq!(param(&got, "iss").as_deref(), Some(op.issuer()), "RFC 9207 iss parameter: {got}");
    let code = param(&got, "code").unwrap_or_else(|| panic!("no code in {got}; fake_user.py:\n{log}"));
    let tokens = exchange_code(&disc, &req, &code, client_id).await;
    (tokens, req, disc)
}

// ---------------------------------------------------------------------------------------------------------------
// Discovery

#[tokio::test]
async fn discovery_names_the_issuer_exactly_and_offers_pkce_the_device_flow_and_refresh() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let issuer = format!("http://127.0.0.1:{}", op.port());
    assert_eq!(op.issuer(), issuer);
    assert_eq!(disc["issuer"], issuer);
    assert_eq!(disc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(disc["device_authorization_endpoint"], format!("{issuer}/device/auth"));
    assert_eq!(disc["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(disc["revocation_endpoint"], format!("{issuer}/token/revocation"));
    let grants = disc["grant_types_supported"].as_array().unwrap();
    for grant in ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"] {
        assert!(grants.contains(&json!(grant)), "{grant} missing from {grants:?}");
    }
    let scopes = disc["scopes_supported"].as_array().unwrap();
    for scope in ["openid", "email", "profile", "offline_access", "audience:server:client_id:pachd"] {
        assert!(scopes.contains(&json!(scope)), "{scope} missing from {scopes:?}");
    }
}

#[tokio::test]
async fn discovery_reached_as_localhost_still_names_127_0_0_1_endpoints() {
    let op = TestOp::start();
    let url = format!("http://localhost:{}/.well-known/openid-configuration", op.port());
    let disc: Value = http().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(disc["authorization_endpoint"], op.url("/auth"));
}

#[tokio::test]
async fn an_auth0_style_issuer_keeps_its_trailing_slash_in_discovery_iss_and_the_id_token() {
    let op = TestOp::builder().trailing_slash().start();
    assert_eq!(op.issuer(), format!("http://127.0.0.1:{}/", op.port()));
    let disc = discovery(&op).await;
    assert_eq!(disc["issuer"], op.issuer());
    assert_eq!(disc["authorization_endpoint"], op.url("/auth"), "no double slash in endpoints");
    // scripted_login checks the `iss` authorization response parameter against op.issuer().
    let (tokens, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    let claims = verified_claims(&disc, tokens["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(claims["iss"], op.issuer());
}

// ---------------------------------------------------------------------------------------------------------------
// The scripted user

#[tokio::test]
async fn a_scripted_user_logs_in_with_pkce_and_the_refresh_token_works_once_then_rotates() {
    let op = TestOp::start();
    let started = Instant::now();
    let (tokens, req, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    eprintln!("login by fake_user.py + code exchange: {:?}", started.elapsed());

    let claims = verified_claims(&disc, tokens["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(claims["nonce"], req.nonce.as_str());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300, "default ID token TTL");

    let first_rt = tokens["refresh_token"].as_str().expect("a refresh token (offline_access + prompt=consent)");
    let (status, refreshed) = refresh(&disc, first_rt, op::PUBLIC_CLIENT).await;
    assert_eq!(status, 200, "{refreshed}");
    let second_rt = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(second_rt, first_rt, "the refresh token rotates");
    let claims = verified_claims(&disc, refreshed["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(claims["email"], "alice@example.com", "a refreshed ID token still carries the email");

    let (status, reused) = refresh(&disc, first_rt, op::PUBLIC_CLIENT).await;
    assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")), "{reused}");
    let (status, after_reuse) = refresh(&disc, second_rt, op::PUBLIC_CLIENT).await;
    assert_eq!(
        (status, after_reuse["error"].as_str()),
        (400, Some("invalid_grant")),
        "reuse detection revokes the whole grant: {after_reuse}"
    );

    let stats = op.stats();
    assert_eq!(stats["authorization_code"], 1, "{stats}");
    assert_eq!(stats["refresh_token"], 1, "{stats}");
    assert_eq!(stats["device_code"], 0, "{stats}");
    assert_eq!(stats["errors"]["refresh_token"], 2, "{stats}");
    assert_eq!(stats["authorizations"], 1, "{stats}");
}

#[tokio::test]
async fn a_login_name_without_at_sign_gets_an_example_com_email() {
    let op = TestOp::builder().id_token_ttl(Duration::from_secs(7)).start();
    let (tokens, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "bob").await;
    let claims = verified_claims(&disc, tokens["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!((claims["sub"].as_str(), claims["email"].as_str()), (Some("bob"), Some("bob@example.com")));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 7, "--id-token-ttl");
}

#[tokio::test]
async fn a_user_who_refuses_consent_sends_access_denied_to_the_client() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let callback = callback_listener().await;
    let req = auth_request(&disc, op::PUBLIC_CLIENT, &callback.redirect_uri("/callback"), SCOPE);
    let (status, log) = fake_user(&req.url, &[("FAKE_USER_ACTION", "deny")]).await;
    assert_eq!(status, 0, "{log}");
    let got = callback.received().await;
    assert_eq!(param(&got, "error").as_deref(), Some("access_denied"), "{got}");
    assert_eq!(param(&got, "state").as_deref(), Some(req.state.as_str()));
    assert_eq!(param(&got, "code"), None);
    assert_eq!(op.stats()["authorization_code"], 0);
}

#[tokio::test]
async fn the_scripted_user_detaches_at_once_and_still_delivers_the_code() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let callback = callback_listener().await;
    let req = auth_request(&disc, op::PUBLIC_CLIENT, &callback.redirect_uri("/callback"), SCOPE);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fake_user.log");
    // As `webbrowser` would run it, but waiting for the exit: the detached default must return at once.
    let started = Instant::now();
    let status = tokio::process::Command::new(FAKE_USER)
        .arg(&req.url)
        .env("FAKE_USER_LOG", &log)
        .env_remove("FAKE_USER_FOREGROUND")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(status.status.success());
    let returned_after = started.elapsed();
    let got = callback.received().await;
    assert!(param(&got, "code").is_some(), "{got}");
    assert!(returned_after < Duration::from_secs(2), "fake_user.py kept its caller waiting {returned_after:?}");
    // The log ends with "exit 0" once the detached process is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("fake_user: exit") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("delivering to the client") && text.contains("fake_user: exit 0"), "{text}");
}

#[tokio::test]
async fn the_scripted_user_completes_the_device_flow_from_the_complete_verification_uri() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let resp = http()
        .post(disc["device_authorization_endpoint"].as_str().unwrap())
        .form(&[("client_id", op::PUBLIC_CLIENT), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let device: Value = resp.json().await.unwrap();
    let device_code = device["device_code"].as_str().unwrap();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", op::PUBLIC_CLIENT),
    ];
    let (status, pending) = token(&disc, &poll, None).await;
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")));

    let (status, log) =
        fake_user(device["verification_uri_complete"].as_str().unwrap(), &[("FAKE_USER_EMAIL", "carol@example.org")])
            .await;
    assert_eq!(status, 0, "{log}");
    assert!(log.contains("Sign-in Success"), "{log}");

    let (status, tokens) = token(&disc, &poll, None).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verified_claims(&disc, tokens["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(claims["email"], "carol@example.org");
    assert!(tokens["refresh_token"].is_string(), "the device flow gives refresh tokens too: {tokens}");
    assert_eq!(op.grants("device_code"), 1);
}

#[tokio::test]
async fn a_user_who_aborts_the_device_confirmation_denies_the_device() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let device: Value = http()
        .post(disc["device_authorization_endpoint"].as_str().unwrap())
        .form(&[("client_id", op::PUBLIC_CLIENT), ("scope", SCOPE)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, log) =
        fake_user(device["verification_uri_complete"].as_str().unwrap(), &[("FAKE_USER_ACTION", "deny")]).await;
    assert_eq!(status, 0, "{log}");
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device["device_code"].as_str().unwrap()),
        ("client_id", op::PUBLIC_CLIENT),
    ];
    let (status, body) = token(&disc, &poll, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")), "{body}");
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

#[tokio::test]
async fn pachds_confidential_client_logs_in_on_any_port_with_its_secret() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let callback = callback_listener().await;
    let redirect = callback.redirect_uri("/authorization-code/callback");
    let req = auth_request(&disc, op::PACHD_CLIENT, &redirect, "openid email profile");
    let (status, log) = fake_user(&req.url, &[]).await;
    assert_eq!(status, 0, "{log}");
    let got = callback.received().await;
    let code = param(&got, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", req.verifier.as_str()),
    ];
    let (status, body) = token(&disc, &form, Some((op::PACHD_CLIENT, "wrong"))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, body) = token(&disc, &form, Some((op::PACHD_CLIENT, op::PACHD_SECRET))).await;
    assert_eq!(status, 200, "{body}");
    let claims = verified_claims(&disc, body["id_token"].as_str().unwrap(), op::PACHD_CLIENT).await;
    assert_eq!(claims["email"], "alice@example.com");
}

#[tokio::test]
async fn the_exact_redirect_client_accepts_only_its_registered_port() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let wrong = auth_request(&disc, op::EXACT_CLIENT, "http://127.0.0.1:47652/callback", SCOPE);
    let resp = http().get(&wrong.url).send().await.unwrap();
    assert_eq!(resp.status(), 400, "another port is refused without redirecting");
    let right = auth_request(&disc, op::EXACT_CLIENT, op::EXACT_REDIRECT_URI, SCOPE);
    let resp = http().get(&right.url).send().await.unwrap();
    assert_eq!(resp.status(), 303, "the registered URI starts the login");
    // The native public client takes any loopback port, but only the registered host and path.
    let other_path = auth_request(&disc, op::PUBLIC_CLIENT, "http://127.0.0.1:5555/elsewhere", SCOPE);
    assert_eq!(http().get(&other_path.url).send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn a_clients_file_replaces_the_default_clients() {
    let op = TestOp::builder()
        .clients(json!([{
            "client_id": "custom",
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1/cb"],
            "grant_types": ["authorization_code"],
        }]))
        .start();
    let disc = discovery(&op).await;
    let custom = auth_request(&disc, "custom", "http://127.0.0.1:1234/cb", SCOPE);
    assert_eq!(http().get(&custom.url).send().await.unwrap().status(), 303);
    let default = auth_request(&disc, op::PUBLIC_CLIENT, "http://127.0.0.1:1234/callback", SCOPE);
    assert_eq!(http().get(&default.url).send().await.unwrap().status(), 400, "the default clients are gone");
}

// ---------------------------------------------------------------------------------------------------------------
// Test controls

#[tokio::test]
async fn revoking_a_users_grants_makes_their_refresh_token_invalid_grant() {
    let op = TestOp::start();
    let (alice, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    let (bob, _, _) = scripted_login(&op, op::PUBLIC_CLIENT, "bob@example.com").await;
    assert_eq!(op.revoke_grants("alice@example.com"), 1);
    let (status, body) = refresh(&disc, alice["refresh_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, body) = refresh(&disc, bob["refresh_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(status, 200, "other users keep their grants: {body}");
    assert_eq!(op.revoke_grants("nobody@example.com"), 0);
}

#[tokio::test]
async fn a_provider_that_is_down_answers_503_everywhere_until_it_is_up_again() {
    let op = TestOp::start();
    let (tokens, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    op.set_down(true);
    assert_eq!(op.stats()["down"], true, "the test endpoints keep answering");
    assert_eq!(http().get(op.discovery_url()).send().await.unwrap().status(), 503);
    let (status, body) = refresh(&disc, tokens["refresh_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")));
    op.set_down(false);
    let (status, body) = refresh(&disc, tokens["refresh_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(status, 200, "the grant survived the outage: {body}");
}

/// The JOSE header and claims of a compact JWT, without any check.
fn jwt_parts(jwt: &str) -> (Value, Value, String) {
    let mut parts = jwt.split('.');
    let mut json = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let (header, claims) = (json(), json());
    (header, claims, parts.next().unwrap().to_owned())
}

async fn jwks(disc: &Value) -> jsonwebtoken::jwk::JwkSet {
    http().get(disc["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap()
}

/// Whether `jwt` carries a valid RS256 signature by the JWKS key its header names (claims unchecked).
fn rs256_verifies(jwt: &str, jwks: &jsonwebtoken::jwk::JwkSet) -> bool {
    let Some(jwk) = jsonwebtoken::decode_header(jwt).ok().and_then(|h| h.kid).and_then(|kid| jwks.find(&kid).cloned())
    else {
        return false;
    };
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut checked = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    checked.validate_exp = false;
    checked.validate_aud = false;
    checked.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(jwt, &key, &checked).is_ok()
}

#[tokio::test]
async fn a_forgery_replaces_the_next_id_token_only_with_the_claims_and_signature_asked_for() {
    let op = TestOp::start();
    let (tokens, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    let keys = jwks(&disc).await;
    let (genuine_header, genuine_claims, _) = jwt_parts(tokens["id_token"].as_str().unwrap());
    let mut rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    let mut next_id_token = async |forgery: Option<Forgery>| -> String {
        if let Some(f) = forgery {
            op.forge_next_id_token(&f);
        }
        let (status, body) = refresh(&disc, &rt, op::PUBLIC_CLIENT).await;
        assert_eq!(status, 200, "the grant itself succeeds: {body}");
        rt = body["refresh_token"].as_str().unwrap().to_owned();
        body["id_token"].as_str().unwrap().to_owned()
    };

    let forged = next_id_token(Some(Forgery::new().set("aud", "someone-else").set("azp", "x").remove("email"))).await;
    let (header, claims, _) = jwt_parts(&forged);
    assert_eq!(header, genuine_header, "the provider's own alg and kid");
    assert!(rs256_verifies(&forged, &keys), "signed with the provider's key");
    assert_eq!((claims["aud"].as_str(), claims["azp"].as_str()), (Some("someone-else"), Some("x")));
    assert!(claims.get("email").is_none(), "{claims}");
    assert_eq!(claims["sub"], genuine_claims["sub"], "the other claims are the genuine token's");
    assert_eq!(op.forged(), 1);
    let genuine = next_id_token(None).await;
    assert_eq!(jwt_parts(&genuine).1["email"], "alice@example.com", "only the next answer was forged");
    assert!(rs256_verifies(&genuine, &keys));

    let forged = next_id_token(Some(Forgery::new().signed(Signing::Stranger))).await;
    assert_eq!(jwt_parts(&forged).0["kid"], genuine_header["kid"], "under the provider's kid");
    assert!(!rs256_verifies(&forged, &keys), "by a key that is not the provider's");

    let forged = next_id_token(Some(Forgery::new().signed(Signing::UnknownKid))).await;
    let kid = jwt_parts(&forged).0["kid"].as_str().unwrap().to_owned();
    assert!(keys.find(&kid).is_none(), "a kid the JWKS does not list: {kid}");

    let forged = next_id_token(Some(Forgery::new().signed(Signing::None))).await;
    let (header, claims, signature) = jwt_parts(&forged);
    assert_eq!((header["alg"].as_str(), signature.as_str()), (Some("none"), ""), "{header}");
    assert_eq!(claims["email"], "alice@example.com");

    let forged = next_id_token(Some(Forgery::new().signed(Signing::Hs256WithPublicKey))).await;
    assert_eq!(jwt_parts(&forged).0["alg"], "HS256");
    let jwk = serde_json::to_value(keys.find(genuine_header["kid"].as_str().unwrap()).unwrap()).unwrap();
    let number =
        |field: &str| rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(jwk[field].as_str().unwrap()).unwrap());
    let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
        &rsa::RsaPublicKey::new(number("n"), number("e")).unwrap(),
        rsa::pkcs8::LineEnding::LF,
    )
    .unwrap();
    let mut hs256 = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    hs256.set_audience(&[op::PUBLIC_CLIENT]);
    let key = jsonwebtoken::DecodingKey::from_secret(pem.as_bytes());
    assert!(jsonwebtoken::decode::<Value>(&forged, &key, &hs256).is_ok(), "HMAC keyed with the public key's PEM");
    assert_eq!(op.forged(), 5);
}

#[tokio::test]
async fn after_a_key_rotation_id_tokens_carry_the_new_kid_which_the_jwks_lists_beside_the_old_one() {
    let op = TestOp::start();
    let (tokens, _, disc) = scripted_login(&op, op::PUBLIC_CLIENT, "alice@example.com").await;
    let old_kid = jwt_parts(tokens["id_token"].as_str().unwrap()).0["kid"].as_str().unwrap().to_owned();
    let fetches = op.jwks_fetches();
    let before = jwks(&disc).await;
    assert_eq!(op.jwks_fetches(), fetches + 1, "every GET of the JWKS is counted");
    assert_eq!(before.keys.len(), 1);

    let new_kid = op.rotate_keys();
    assert_ne!(new_kid, old_kid);
    let (status, body) = refresh(&disc, tokens["refresh_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap();
    assert_eq!(jwt_parts(id_token).0["kid"], new_kid.as_str());
    assert!(!rs256_verifies(id_token, &before), "the key set fetched before the rotation cannot verify it");
    let after = jwks(&disc).await;
    assert!(after.find(&old_kid).is_some() && after.find(&new_kid).is_some(), "both keys are listed");
    assert_eq!(verified_claims(&disc, id_token, op::PUBLIC_CLIENT).await["email"], "alice@example.com");
    assert_eq!(op.forged(), 0, "a rotation re-signs, it does not forge");
}

// ---------------------------------------------------------------------------------------------------------------
// A real browser

#[tokio::test]
async fn headless_chromium_logs_in_through_the_real_login_and_consent_pages() {
    let op = TestOp::start();
    let disc = discovery(&op).await;
    let callback = callback_listener().await;
    let req = auth_request(&disc, op::PUBLIC_CLIENT, &callback.redirect_uri("/callback"), SCOPE);

    let started = Instant::now();
    let browser = chromium::Chromium::start().await;
    let browser_up = started.elapsed();
    let text = browser.login_with_email(&req.url, "dave@example.com").await;
    eprintln!("Chromium: session up in {browser_up:?}, login done after {:?}", started.elapsed());
    assert_eq!(text, CALLBACK_PAGE);
    browser.close().await;

    let got = callback.received().await;
    assert_eq!(param(&got, "state").as_deref(), Some(req.state.as_str()));
    let code = param(&got, "code").unwrap();
    let tokens = exchange_code(&disc, &req, &code, op::PUBLIC_CLIENT).await;
    let claims = verified_claims(&disc, tokens["id_token"].as_str().unwrap(), op::PUBLIC_CLIENT).await;
    assert_eq!(claims["email"], "dave@example.com");
    assert_eq!(op.stats()["authorization_code"], 1);
}
