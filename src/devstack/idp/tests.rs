//! Unit tests of the dev IdP: handlers called directly with a chosen `now`, so lifetimes can be crossed without
//! waiting. The HTTP view of the same behaviour is in `tests/dev_idp.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::header::LOCATION;
use hyper::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::provider::{DEVICE_CODE_GRANT, Provider};
use super::*;
use crate::devstack::http::{HttpRequest, HttpResponse};

const ISSUER: &str = "http://127.0.0.1:5556";
const REDIRECT: &str = "http://127.0.0.1:38111/callback";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-for-rfc-7636-rules";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn provider(opts: DevIdpOptions) -> Provider {
    let clients = Arc::new(Clients::default());
    clients.register(Client {
        id: PACHAGENT_CLIENT_ID.into(),
        kind: ClientKind::Public,
        redirect_uris: PACHAGENT_REDIRECT_URIS.iter().map(|u| (*u).to_owned()).collect(),
        trusted_peers: vec![],
    });
    clients.register(Client {
        id: "pachd".into(),
        kind: ClientKind::Confidential { secret: ClientSecret::new("s3c:r+t".into()) },
        redirect_uris: vec!["http://127.0.0.1:1657/authorization-code/callback".into()],
        trusted_peers: vec![PACHAGENT_CLIENT_ID.into()],
    });
    Provider::new(ISSUER.into(), opts, keys::SigningKey::generate().unwrap(), clients)
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

fn get(p: &Provider, target: &str, now: SystemTime) -> HttpResponse {
    p.handle(&HttpRequest::new(Method::GET, target, &[], ""), now)
}

fn post(p: &Provider, path: &str, headers: &[(&str, &str)], body: &[(&str, &str)], now: SystemTime) -> HttpResponse {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(body).finish();
    p.handle(&HttpRequest::new(Method::POST, path, &all, &body), now)
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn location(r: &HttpResponse) -> Url {
    assert_eq!(r.status, StatusCode::FOUND, "{:?}", String::from_utf8_lossy(&r.body));
    Url::parse(r.header(&LOCATION).unwrap()).unwrap()
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Authorize as `pachagent` with PKCE and sign in; returns the code.
fn login(p: &Provider, scope: &str, now: SystemTime) -> String {
    let authorize = format!(
        "/authorize?client_id=pachagent&response_type=code&redirect_uri={}&scope={}&state=st&nonce=nn&\
         code_challenge={}&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>(),
        challenge(),
    );
    let page = get(p, &authorize, now);
    assert_eq!(page.status, StatusCode::OK);
    let (_, hidden) = pages::form_of(std::str::from_utf8(&page.body).unwrap()).unwrap();
    let login_id = hidden.iter().find(|(k, _)| k == "login_id").unwrap().1.clone();
    let done = post(p, "/login", &[], &[("login_id", &login_id), ("email", "dev@example.com")], now);
    let back = location(&done);
    assert_eq!((param(&back, "state").as_deref(), param(&back, "iss").as_deref()), (Some("st"), Some(ISSUER)));
    param(&back, "code").unwrap()
}

fn redeem(p: &Provider, code: &str, now: SystemTime) -> HttpResponse {
    let body = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", "pachagent"),
        ("code_verifier", VERIFIER),
    ];
    post(p, "/token", &[], &body, now)
}

fn refresh(p: &Provider, rt: &str, now: SystemTime) -> HttpResponse {
    post(p, "/token", &[], &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", "pachagent")], now)
}

#[test]
fn public_clients_match_loopback_redirects_on_any_port_but_only_with_the_same_host_and_path() {
    let p = provider(DevIdpOptions::default());
    let agent = p.clients.get(PACHAGENT_CLIENT_ID).unwrap();
    assert!(agent.accepts_redirect("http://127.0.0.1:54321/callback"));
    assert!(agent.accepts_redirect("http://localhost:8765/callback"));
    assert!(!agent.accepts_redirect("http://127.0.0.1:54321/other"));
    assert!(!agent.accepts_redirect("https://127.0.0.1:54321/callback"));
    assert!(!agent.accepts_redirect("http://evil.example:54321/callback"));
    assert!(!agent.accepts_redirect("http://127.0.0.1:54321/callback#frag"));
    let pachd = p.clients.get("pachd").unwrap();
    assert!(pachd.accepts_redirect("http://127.0.0.1:1657/authorization-code/callback"));
    assert!(!pachd.accepts_redirect("http://127.0.0.1:1658/authorization-code/callback"), "exact for confidential");
}

#[test]
fn problems_with_the_client_or_redirect_are_shown_never_redirected() {
    let p = provider(DevIdpOptions::default());
    for target in [
        "/authorize?client_id=nobody&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcallback&response_type=code",
        "/authorize?client_id=pachagent&redirect_uri=http%3A%2F%2Fevil.example%2Fcallback&response_type=code",
        "/authorize?client_id=pachagent&response_type=code",
        "/authorize?client_id=pachagent&client_id=pachd&response_type=code",
    ] {
        let r = get(&p, target, t0());
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}");
        assert!(r.header(&LOCATION).is_none(), "{target}");
    }
}

#[test]
fn a_public_client_without_pkce_is_sent_back_with_invalid_request() {
    let p = provider(DevIdpOptions::default());
    let r = get(
        &p,
        "/authorize?client_id=pachagent&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&response_type=code\
         &scope=openid&state=xyz",
        t0(),
    );
    let back = location(&r);
    assert_eq!(back.port(), Some(9));
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&back, "state").as_deref(), Some("xyz"));
    assert_eq!(param(&back, "iss").as_deref(), Some(ISSUER));
}

#[test]
fn a_code_expires_after_its_lifetime() {
    let p = provider(DevIdpOptions { code_ttl: Duration::from_secs(60), ..Default::default() });
    let code = login(&p, "openid email", t0());
    let late = redeem(&p, &code, t0() + Duration::from_secs(60));
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&late)["error"], "invalid_grant");
    let code = login(&p, "openid email", t0());
    assert_eq!(redeem(&p, &code, t0() + Duration::from_secs(59)).status, StatusCode::OK);
}

#[test]
fn refresh_tokens_come_only_with_offline_access_and_expire_after_their_lifetime() {
    let ttl = Duration::from_secs(3600);
    let p = provider(DevIdpOptions { refresh_token_ttl: ttl, ..Default::default() });
    let without = redeem(&p, &login(&p, "openid email", t0()), t0());
    assert!(json_of(&without).get("refresh_token").is_none());

    let with = json_of(&redeem(&p, &login(&p, "openid email offline_access", t0()), t0()));
    let rt = with["refresh_token"].as_str().unwrap();
    let next = json_of(&refresh(&p, rt, t0() + ttl - Duration::from_secs(1)));
    let rt2 = next["refresh_token"].as_str().unwrap();
    let expired = refresh(&p, rt2, t0() + ttl - Duration::from_secs(1) + ttl);
    assert_eq!(json_of(&expired)["error"], "invalid_grant");
    assert_eq!(p.counters.snapshot().refresh_grants, 1);
}

#[test]
fn id_tokens_carry_the_configured_lifetime_and_the_login_claims() {
    let p = provider(DevIdpOptions { id_token_ttl: Duration::from_secs(90), ..Default::default() });
    let body = json_of(&redeem(&p, &login(&p, "openid email audience:server:client_id:pachd", t0()), t0()));
    assert_eq!(body["expires_in"], 90);
    let payload = body["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let now = t0().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 90);
    assert_eq!(claims["aud"], serde_json::json!(["pachd", "pachagent"]));
    assert_eq!(claims["azp"], "pachagent");
    assert_eq!(claims["nonce"], "nn");
    assert_eq!(claims["email"], "dev@example.com");
}

#[test]
fn a_confidential_client_authenticates_with_an_url_encoded_basic_header() {
    let p = provider(DevIdpOptions::default());
    let body = [("grant_type", "refresh_token"), ("refresh_token", "nope")];
    let good = format!("Basic {}", STANDARD.encode("pachd:s3c%3Ar%2Bt"));
    let r = post(&p, "/token", &[("authorization", &good)], &body, t0());
    assert_eq!(json_of(&r)["error"], "invalid_grant", "authenticated, then refused for the grant");
    let bad = format!("Basic {}", STANDARD.encode("pachd:wrong"));
    let r = post(&p, "/token", &[("authorization", &bad)], &body, t0());
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&r)["error"], "invalid_client");
    assert!(r.header(&hyper::header::WWW_AUTHENTICATE).is_some());
}

#[test]
fn device_codes_slow_down_fast_pollers_and_expire() {
    let p = provider(DevIdpOptions {
        device_code_ttl: Duration::from_secs(600),
        device_poll_interval: Duration::from_secs(5),
        device_slow_down_step: Duration::from_secs(5),
        ..Default::default()
    });
    let started = json_of(&post(&p, "/device/code", &[], &[("client_id", "pachagent"), ("scope", "openid")], t0()));
    let device_code = started["device_code"].as_str().unwrap();
    let poll = |at: u64| {
        let body = [("grant_type", DEVICE_CODE_GRANT), ("device_code", device_code), ("client_id", "pachagent")];
        json_of(&post(&p, "/token", &[], &body, t0() + Duration::from_secs(at)))["error"].clone()
    };
    assert_eq!(poll(0), "authorization_pending");
    assert_eq!(poll(4), "slow_down");
    assert_eq!(poll(13), "slow_down", "the interval grew to 10 s");
    assert_eq!(poll(30), "authorization_pending");
    assert_eq!(poll(600), "expired_token");
}
