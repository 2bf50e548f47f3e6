//! The embedded dev OpenID Provider as an OAuth client sees it: every test starts a real `DevIdp` on a loopback
//! port and talks to it only over HTTP (reqwest with redirects off, like a careful client), checking the
//! protocol's rules: discovery, PKCE, one-time codes, redirect URIs, refresh rotation with reuse detection, the
//! device flow, cancellation, and ID tokens that verify against the published key set.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pachagent::devstack::idp::{self, Client, ClientKind, DevIdp, DevIdpOptions};
use pachagent::secret::ClientSecret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

const AGENT_REDIRECT: &str = "http://127.0.0.1:43117/callback";
const PACHD_REDIRECT: &str = "http://127.0.0.1:30657/authorization-code/callback";
const PACHD_SECRET: &str = "pachd-secret-for-tests";
const FULL_SCOPE: &str = "openid email profile offline_access";

/// A dev IdP on a random port plus a client that never follows redirects.
struct Harness {
    idp: DevIdp,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(DevIdpOptions::default()).await
    }

    async fn start_with(mut opts: DevIdpOptions) -> Self {
        opts.pachd_client_secret = Some(ClientSecret::new(PACHD_SECRET.into()));
        opts.pachd_redirect_uris = vec![PACHD_REDIRECT.into()];
        let idp = DevIdp::start(opts, idp::bind(idp::DEFAULT_LISTEN).await.unwrap()).await.unwrap();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { idp, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.idp.issuer())
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    /// POSTs a form to the token endpoint (or another) and returns status and JSON body.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).form(form).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.post("/token", form).await
    }

    /// The agent's authorization URL with PKCE.
    fn agent_authorize(&self, scope: &str, pkce: &Pkce, state: &str, nonce: &str) -> Url {
        let mut url = Url::parse(&self.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", "pachagent")
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", AGENT_REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        url
    }

    /// Logs the agent in as `email` through the pages and returns the code from the redirect.
    async fn agent_code(&self, scope: &str, pkce: &Pkce, email: &str) -> String {
        let back = idp::complete_login(&self.agent_authorize(scope, pkce, "st", "nonce-1"), email).await.unwrap();
        assert!(back.as_str().starts_with(AGENT_REDIRECT), "{back}");
        param(&back, "code").expect("a code in the redirect")
    }

    async fn redeem(&self, code: &str, pkce: &Pkce) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", AGENT_REDIRECT),
            ("client_id", "pachagent"),
            ("code_verifier", &pkce.verifier),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", "pachagent")])
            .await
    }

    async fn poll_device(&self, device_code: &str) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", "pachagent"),
        ])
        .await
    }

    /// Verifies an ID token's RS256 signature against the JWKS the discovery document names, and its iss/aud/exp.
    async fn verify(&self, id_token: &str, audience: &str) -> Value {
        let discovery = self.get_json("/.well-known/openid-configuration").await;
        let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = self.http.get(jwks_uri).send().await.unwrap().json().await.unwrap();
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let jwk = jwks.find(header.kid.as_deref().expect("the ID token names its key")).expect("the key is published");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[self.idp.issuer()]);
        validation.set_audience(&[audience]);
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        jsonwebtoken::decode::<Value>(id_token, &key, &validation).expect("the ID token verifies").claims
    }
}

struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        let verifier = format!("verifier-{}-{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self { verifier, challenge }
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[track_caller]
fn assert_oauth_error(outcome: &(StatusCode, Value), status: StatusCode, error: &str) {
    assert_eq!((outcome.0, outcome.1["error"].as_str()), (status, Some(error)), "{}", outcome.1);
    assert!(outcome.1["error_description"].is_string(), "{}", outcome.1);
}

/// The value of `name="…"` in the tag that contains `marker`.
fn attribute_near(html: &str, marker: &str, name: &str) -> String {
    let at = html.find(marker).unwrap_or_else(|| panic!("{marker} not in page:\n{html}"));
    let tag_start = html[..=at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
    let key = format!("{name}=\"");
    let start = tag.find(&key).unwrap() + key.len();
    tag[start..start + tag[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn discovery_lists_every_endpoint_and_capability_a_client_needs() {
    let h = Harness::start().await;
    let issuer = h.idp.issuer();
    assert!(issuer.starts_with("http://127.0.0.1:") && !issuer.ends_with('/'), "{issuer}");
    let d = h.get_json("/.well-known/openid-configuration").await;
    assert_eq!(d["issuer"], issuer);
    for (field, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("device_authorization_endpoint", "/device/code"),
    ] {
        assert_eq!(d[field], format!("{issuer}{path}"), "{field}");
    }
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(
        d["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"])
    );
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(d["subject_types_supported"], json!(["public"]));
    let auth_methods = d["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(auth_methods.contains(&json!("client_secret_basic")) && auth_methods.contains(&json!("none")));
    let scopes = d["scopes_supported"].as_array().unwrap();
    for scope in ["openid", "email", "offline_access", "audience:server:client_id:pachd"] {
        assert!(scopes.contains(&json!(scope)), "{scope} in {scopes:?}");
    }
    let jwks = h.get_json("/jwks").await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    // A 2048-bit modulus is 256 bytes, 342 base64url characters.
    assert_eq!(key["n"].as_str().unwrap().len(), 342);
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
}

#[tokio::test]
async fn a_code_and_pkce_login_through_the_pages_yields_an_id_token_signed_by_the_published_key() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let authorize = h.agent_authorize(FULL_SCOPE, &pkce, "state-42", "nonce-42");

    // The user's browser: the login page asks for an email and offers Cancel.
    let page = h.http.get(authorize).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="email""#), "{html}");
    assert!(html.contains(">Cancel</button>"), "{html}");
    let action = attribute_near(&html, "<form", "action");
    let login_id = attribute_near(&html, r#"name="login_id""#, "value");

    let submitted = h
        .http
        .post(&action)
        .form(&[("login_id", login_id.as_str()), ("email", "alice@example.com"), ("action", "login")])
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::FOUND);
    let back = Url::parse(submitted.headers()["location"].to_str().unwrap()).unwrap();
    assert!(back.as_str().starts_with(AGENT_REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("state-42"));
    assert_eq!(param(&back, "iss").as_deref(), Some(h.idp.issuer()), "RFC 9207 iss parameter");
    let code = param(&back, "code").unwrap();

    let (status, tokens) = h.redeem(&code, &pkce).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string(), "offline_access gives a refresh token");
    assert_eq!(tokens["expires_in"], 600, "ID tokens live 10 minutes by default");
    let claims = h.verify(tokens["id_token"].as_str().unwrap(), "pachagent").await;
    assert_eq!(claims["iss"], h.idp.issuer());
    assert_eq!(claims["aud"], "pachagent");
    assert_eq!(claims["azp"], "pachagent");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["nonce"], "nonce-42");
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty() && !s.contains('@')), "opaque sub: {claims}");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert_eq!(exp - iat, 600);
    assert!(iat.abs_diff(unix_now()) <= 5);
    assert_eq!(h.idp.counters().authorization_code_grants, 1);
}

#[tokio::test]
async fn a_wrong_pkce_verifier_or_none_at_all_is_refused() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let code = h.agent_code(FULL_SCOPE, &pkce, "bob@example.com").await;
    let wrong = Pkce::new();
    assert_oauth_error(&h.redeem(&code, &wrong).await, StatusCode::BAD_REQUEST, "invalid_grant");
    let missing = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", AGENT_REDIRECT),
            ("client_id", "pachagent"),
        ])
        .await;
    assert_oauth_error(&missing, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn a_code_works_once_and_its_reuse_revokes_the_refresh_token_it_produced() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let code = h.agent_code(FULL_SCOPE, &pkce, "carol@example.com").await;
    let (status, first) = h.redeem(&code, &pkce).await;
    assert_eq!(status, StatusCode::OK);
    assert_oauth_error(&h.redeem(&code, &pkce).await, StatusCode::BAD_REQUEST, "invalid_grant");
    let rt = first["refresh_token"].as_str().unwrap();
    assert_oauth_error(&h.refresh(rt).await, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn the_token_request_must_repeat_the_authorization_requests_redirect_uri() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let code = h.agent_code(FULL_SCOPE, &pkce, "dan@example.com").await;
    let other_port = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:1/callback"),
            ("client_id", "pachagent"),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    assert_oauth_error(&other_port, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.redeem(&code, &pkce).await.0, StatusCode::OK, "a refused attempt does not use the code up");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_is_shown_as_an_error_and_never_followed() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    for redirect in ["http://127.0.0.1:43117/elsewhere", "http://attacker.example/callback"] {
        let mut url = h.agent_authorize(FULL_SCOPE, &pkce, "s", "n");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let value = if k == "redirect_uri" { redirect.to_owned() } else { v.into_owned() };
                (k.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let r = h.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{redirect}");
        assert!(r.headers().get("location").is_none(), "{redirect}");
        assert!(r.text().await.unwrap().contains("not a registered redirect URI"));
    }
}

#[tokio::test]
async fn a_public_client_that_skips_pkce_is_sent_back_with_invalid_request() {
    let h = Harness::start().await;
    let mut url = Url::parse(&h.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", "pachagent")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", "http://localhost:5000/callback")
        .append_pair("scope", "openid")
        .append_pair("state", "no-pkce");
    let back = idp::complete_login(&url, "x@example.com").await.unwrap();
    assert!(back.as_str().starts_with("http://localhost:5000/callback?"), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&back, "state").as_deref(), Some("no-pkce"));
    assert!(param(&back, "code").is_none());
}

#[tokio::test]
async fn refresh_returns_a_new_refresh_token_and_a_new_id_token_each_time() {
    let h = Harness::start_with(DevIdpOptions { id_token_ttl: Duration::from_secs(90), ..Default::default() }).await;
    let pkce = Pkce::new();
    let (_, first) = h.redeem(&h.agent_code(FULL_SCOPE, &pkce, "erin@example.com").await, &pkce).await;
    let first_claims = h.verify(first["id_token"].as_str().unwrap(), "pachagent").await;
    let (status, second) = h.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"], "rotated");
    assert_ne!(second["id_token"], first["id_token"]);
    let claims = h.verify(second["id_token"].as_str().unwrap(), "pachagent").await;
    assert_eq!(claims["email"], "erin@example.com");
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 90);
    let (status, third) = h.refresh(second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(h.idp.counters().refresh_grants, 2);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_is_refused_and_revokes_the_whole_family() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let (_, first) = h.redeem(&h.agent_code(FULL_SCOPE, &pkce, "frank@example.com").await, &pkce).await;
    let old = first["refresh_token"].as_str().unwrap();
    let (_, second) = h.refresh(old).await;
    let newest = second["refresh_token"].as_str().unwrap();

    assert_oauth_error(&h.refresh(old).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_oauth_error(&h.refresh(newest).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.idp.counters().refresh_grants, 1, "only the first refresh was served");
}

#[tokio::test]
async fn the_device_flow_slows_down_fast_pollers_and_issues_tokens_after_approval() {
    let h = Harness::start_with(DevIdpOptions {
        device_poll_interval: Duration::from_secs(1),
        device_slow_down_step: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let (status, device) = h.post("/device/code", &[("client_id", "pachagent"), ("scope", FULL_SCOPE)]).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    let user_code = device["user_code"].as_str().unwrap();
    assert!(
        user_code.len() == 9
            && user_code.as_bytes()[4] == b'-'
            && user_code.replace('-', "").bytes().all(|b| b.is_ascii_uppercase()),
        "{user_code}"
    );
    assert_eq!(device["verification_uri"], h.url("/device"));
    assert_eq!(device["verification_uri_complete"], format!("{}?user_code={user_code}", h.url("/device")));
    assert_eq!((device["expires_in"].as_u64(), device["interval"].as_u64()), (Some(600), Some(1)));
    let device_code = device["device_code"].as_str().unwrap();

    assert_oauth_error(&h.poll_device(device_code).await, StatusCode::BAD_REQUEST, "authorization_pending");
    assert_oauth_error(&h.poll_device(device_code).await, StatusCode::BAD_REQUEST, "slow_down");

    // The user: the code page, then (with the code) the sign-in page, then "close this window".
    let entry = h.http.get(h.url("/device")).send().await.unwrap().text().await.unwrap();
    assert!(entry.contains(r#"name="user_code""#), "{entry}");
    let typed = format!("{}?user_code={}", h.url("/device"), user_code.to_lowercase().replace('-', ""));
    let confirm = h.http.get(typed).send().await.unwrap().text().await.unwrap();
    assert!(confirm.contains(user_code) && confirm.contains(r#"name="email""#), "{confirm}");
    let done = h
        .http
        .post(h.url("/device"))
        .form(&[("user_code", user_code), ("email", "grace@example.com"), ("action", "login")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("You can close this window"));

    // The interval is now 2 s; waiting it out gets the tokens.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, tokens) = h.poll_device(device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = h.verify(tokens["id_token"].as_str().unwrap(), "pachagent").await;
    assert_eq!(claims["email"], "grace@example.com");
    assert!(tokens["refresh_token"].is_string());
    assert_oauth_error(&h.poll_device(device_code).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.idp.counters().device_code_grants, 1);
}

#[tokio::test]
async fn a_device_login_the_user_cancels_gives_access_denied_and_a_late_one_expired_token() {
    let h = Harness::start_with(DevIdpOptions { device_code_ttl: Duration::from_secs(1), ..Default::default() }).await;
    let (_, denied) = h.post("/device/code", &[("client_id", "pachagent"), ("scope", "openid email")]).await;
    let (_, late) = h.post("/device/code", &[("client_id", "pachagent"), ("scope", "openid email")]).await;
    let cancel = h
        .http
        .post(h.url("/device"))
        .form(&[("user_code", denied["user_code"].as_str().unwrap()), ("action", "cancel")])
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    assert_oauth_error(
        &h.poll_device(denied["device_code"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "access_denied",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_oauth_error(
        &h.poll_device(late["device_code"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "expired_token",
    );
    let too_late = Url::parse(late["verification_uri_complete"].as_str().unwrap()).unwrap();
    assert!(idp::complete_device_login(&too_late, "late@example.com").await.is_err());
}

#[tokio::test]
async fn cancel_on_the_login_page_sends_access_denied_back_with_the_state() {
    let h = Harness::start().await;
    let back = idp::cancel_login(&h.agent_authorize(FULL_SCOPE, &Pkce::new(), "keep-me", "n")).await.unwrap();
    assert!(back.as_str().starts_with(AGENT_REDIRECT), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "error_description").is_some());
    assert_eq!(param(&back, "state").as_deref(), Some("keep-me"));
    assert!(param(&back, "code").is_none());
}

#[tokio::test]
async fn the_audience_scope_puts_pachd_into_aud_only_for_a_trusted_peer() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let scope = "openid email offline_access audience:server:client_id:pachd";
    let (_, tokens) = h.redeem(&h.agent_code(scope, &pkce, "heidi@example.com").await, &pkce).await;
    let claims = h.verify(tokens["id_token"].as_str().unwrap(), "pachd").await;
    assert_eq!(claims["aud"], json!(["pachd", "pachagent"]));
    assert_eq!(claims["azp"], "pachagent");
    // Refreshed ID tokens keep the audience.
    let (_, refreshed) = h.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    let claims = h.verify(refreshed["id_token"].as_str().unwrap(), "pachd").await;
    assert_eq!(claims["aud"], json!(["pachd", "pachagent"]));

    h.idp.clients().register(Client {
        id: "console".into(),
        kind: ClientKind::Confidential { secret: ClientSecret::new("c".into()) },
        redirect_uris: vec![],
        trusted_peers: vec![],
    });
    let untrusted = h.agent_authorize("openid audience:server:client_id:console", &pkce, "s", "n");
    let back = idp::complete_login(&untrusted, "heidi@example.com").await.unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_scope"));
}

#[tokio::test]
async fn the_confidential_pachd_client_must_authenticate_with_its_secret() {
    let h = Harness::start().await;
    let pachd_code = || async {
        let mut url = Url::parse(&h.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", "pachd")
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", PACHD_REDIRECT)
            .append_pair("scope", "email profile groups openid")
            .append_pair("state", "s")
            .append_pair("nonce", "n");
        let back = idp::complete_login(&url, "ivan@example.com").await.unwrap();
        param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"))
    };
    let form = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", PACHD_REDIRECT.to_owned()),
        ]
    };

    let code = pachd_code().await;
    let wrong =
        h.http.post(h.url("/token")).basic_auth("pachd", Some("wrong")).form(&form(&code)).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().contains_key("www-authenticate"));
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "invalid_client");
    let none = h.token(&[("grant_type", "authorization_code"), ("code", &code), ("client_id", "pachd")]).await;
    assert_oauth_error(&none, StatusCode::UNAUTHORIZED, "invalid_client");

    let basic =
        h.http.post(h.url("/token")).basic_auth("pachd", Some(PACHD_SECRET)).form(&form(&code)).send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    let id_token = basic.json::<Value>().await.unwrap()["id_token"].as_str().unwrap().to_owned();
    let claims = h.verify(&id_token, "pachd").await;
    assert_eq!((claims["email"].as_str(), claims["nonce"].as_str()), (Some("ivan@example.com"), Some("n")));

    let code = pachd_code().await;
    let mut posted = form(&code);
    posted.push(("client_id", "pachd".to_owned()));
    posted.push(("client_secret", PACHD_SECRET.to_owned()));
    assert_eq!(h.http.post(h.url("/token")).form(&posted).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn counters_are_served_over_http_for_benchmarks() {
    let h = Harness::start().await;
    let pkce = Pkce::new();
    let (_, tokens) = h.redeem(&h.agent_code(FULL_SCOPE, &pkce, "judy@example.com").await, &pkce).await;
    h.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    h.refresh("not-a-refresh-token").await;
    let counters = h.get_json("/dev/counters").await;
    assert_eq!(counters["logins"], 1);
    assert_eq!(counters["authorization_code_grants"], 1);
    assert_eq!(counters["refresh_grants"], 1);
    assert_eq!(counters["refused_token_requests"], 1);
    assert_eq!(counters, serde_json::to_value(h.idp.counters()).unwrap());
}

#[tokio::test]
async fn token_errors_are_rfc_6749_json() {
    let h = Harness::start().await;
    assert_oauth_error(&h.token(&[("client_id", "pachagent")]).await, StatusCode::BAD_REQUEST, "invalid_request");
    let unsupported = h.token(&[("grant_type", "password"), ("client_id", "pachagent")]).await;
    assert_oauth_error(&unsupported, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let unknown_client = h.token(&[("grant_type", "refresh_token"), ("client_id", "nobody")]).await;
    assert_oauth_error(&unknown_client, StatusCode::UNAUTHORIZED, "invalid_client");
    let r = h.http.post(h.url("/token")).json(&json!({"grant_type": "refresh_token"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let h = Harness::start().await;
    let discovery = h.url("/.well-known/openid-configuration");
    assert_eq!(h.http.get(&discovery).send().await.unwrap().status(), StatusCode::OK);
    let Harness { idp, http } = h;
    tokio::time::timeout(Duration::from_secs(10), idp.stop()).await.expect("stop returns");
    assert!(http.get(&discovery).send().await.is_err(), "nothing listens after stop");
}
