//! The dev IdP's request handling: routing, discovery, the JWKS, ID tokens and token responses. The flows live
//! next door (`authorize`, `token`, `device`), each an `impl Provider` block.
//!
//! Handlers are synchronous functions of the request and `now`; the state lock is a std mutex taken for one
//! lookup or update at a time and never across an await (there are none) or a signature.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hyper::header::{self, HeaderName};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::clients::Clients;
use super::grants::{Grant, IdpState, TokenError};
use super::keys::SigningKey;
use super::{AUDIENCE_SCOPE_PREFIX, DevIdpOptions, IdpCounters, pages};
use crate::devstack::http::{HttpRequest, HttpResponse};
use crate::devstack::random;

/// The grant type of RFC 8628.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Paths of the endpoints, relative to the issuer.
pub(crate) const AUTHORIZE_PATH: &str = "/authorize";
pub(crate) const TOKEN_PATH: &str = "/token";
pub(crate) const JWKS_PATH: &str = "/jwks";
pub(crate) const DEVICE_AUTHORIZATION_PATH: &str = "/device/code";
pub(crate) const COUNTERS_PATH: &str = "/dev/counters";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The scopes the IdP knows; unknown ones are ignored, as OpenID Connect Core §3.1.2.1 asks.
const SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];

/// Counts of what the IdP served, for tests and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) authorization_code_grants: AtomicU64,
    pub(crate) refresh_grants: AtomicU64,
    pub(crate) device_code_grants: AtomicU64,
    pub(crate) refused_token_requests: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> IdpCounters {
        IdpCounters {
            logins: self.logins.load(Ordering::Relaxed),
            authorization_code_grants: self.authorization_code_grants.load(Ordering::Relaxed),
            refresh_grants: self.refresh_grants.load(Ordering::Relaxed),
            device_code_grants: self.device_code_grants.load(Ordering::Relaxed),
            refused_token_requests: self.refused_token_requests.load(Ordering::Relaxed),
        }
    }
}

/// The dev IdP's shared state.
#[derive(Debug)]
pub(crate) struct Provider {
    pub(crate) issuer: String,
    pub(crate) opts: DevIdpOptions,
    pub(crate) key: SigningKey,
    pub(crate) clients: Arc<Clients>,
    state: Mutex<IdpState>,
    pub(crate) counters: Counters,
}

impl Provider {
    pub(crate) fn new(issuer: String, opts: DevIdpOptions, key: SigningKey, clients: Arc<Clients>) -> Self {
        Self { issuer, opts, key, clients, state: Mutex::new(IdpState::default()), counters: Counters::default() }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, IdpState> {
        // Every state update is a handful of map operations with no early return in between that could leave a
        // half-written entry, so the state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes one request.
    pub(crate) fn handle(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let path = req.path.as_str();
        let allowed: &[Method] = match path {
            DISCOVERY_PATH | JWKS_PATH | AUTHORIZE_PATH | COUNTERS_PATH => &[Method::GET],
            pages::LOGIN_PATH | TOKEN_PATH | DEVICE_AUTHORIZATION_PATH => &[Method::POST],
            pages::DEVICE_PATH => &[Method::GET, Method::POST],
            _ => return HttpResponse::json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        };
        if !allowed.contains(&req.method) {
            let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            return HttpResponse::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".to_owned())
                .with_header(header::ALLOW, &allow.join(", "));
        }
        match (path, req.method == Method::GET) {
            (DISCOVERY_PATH, _) => HttpResponse::json(StatusCode::OK, &self.discovery()),
            (JWKS_PATH, _) => HttpResponse::json(StatusCode::OK, &self.key.jwks())
                .with_header(header::CONTENT_TYPE, "application/jwk-set+json"),
            (COUNTERS_PATH, _) => HttpResponse::json(StatusCode::OK, &json!(self.counters.snapshot())),
            (AUTHORIZE_PATH, _) => self.authorize(req, now),
            (pages::LOGIN_PATH, _) => self.submit_login(req, now),
            (TOKEN_PATH, _) => self.token(req, now),
            (DEVICE_AUTHORIZATION_PATH, _) => self.device_authorization(req, now),
            (pages::DEVICE_PATH, true) => self.device_page(req, now),
            (_, _) => self.submit_device(req, now),
        }
    }

    /// The discovery document (OpenID Connect Discovery 1.0 §3, RFC 8414).
    fn discovery(&self) -> Value {
        let issuer = &self.issuer;
        let mut scopes: Vec<String> = SCOPES.iter().map(|s| (*s).to_owned()).collect();
        scopes.extend(self.clients.ids().into_iter().map(|id| format!("{AUDIENCE_SCOPE_PREFIX}{id}")));
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
            "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
            "jwks_uri": format!("{issuer}{JWKS_PATH}"),
            "device_authorization_endpoint": format!("{issuer}{DEVICE_AUTHORIZATION_PATH}"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": scopes,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "subject_types_supported": ["public"],
            "claims_supported": ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "jti", "nonce", "email",
                                 "email_verified"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Signs an ID token for `grant` (OpenID Connect Core §2). `aud` is the requesting client plus every client
    /// named by an `audience:server:client_id:` scope (checked when the login began), like Dex; `azp` is always the
    /// requester.
    fn id_token(&self, grant: &Grant, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let mut audience: Vec<&str> =
            grant.scopes.iter().filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX)).collect();
        if !audience.contains(&grant.client_id.as_str()) {
            audience.push(&grant.client_id);
        }
        let aud = match audience.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        let mut claims = json!({
            "iss": self.issuer,
            "sub": subject_of(&grant.email),
            "aud": aud,
            "azp": grant.client_id,
            "iat": unix(now),
            "exp": unix(now + self.opts.id_token_ttl),
            "auth_time": unix(grant.auth_time),
            // Two tokens issued in the same second would otherwise be byte-for-byte equal (RS256 is
            // deterministic); a unique id keeps every issued token distinguishable.
            "jti": random::b64url(16),
        });
        if let Some(nonce) = &grant.nonce {
            claims["nonce"] = json!(nonce);
        }
        if grant.scopes.iter().any(|s| s == "email") {
            claims["email"] = json!(grant.email);
            // The dev IdP takes the user's word for it; a real IdP would have checked the address.
            claims["email_verified"] = json!(true);
        }
        self.key.sign(&claims)
    }

    /// A successful token response (RFC 6749 §5.1) with a fresh ID token and, when given, a refresh token.
    pub(crate) fn token_response(&self, grant: &Grant, refresh_token: Option<String>, now: SystemTime) -> HttpResponse {
        let id_token = match self.id_token(grant, now) {
            Ok(token) => token,
            Err(err) => {
                warn!(error = %err, "failed to sign an ID token");
                return oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &TokenError::new("server_error", "signing failed"),
                );
            }
        };
        let mut body = json!({
            // Nothing here accepts access tokens; it is opaque and only present because RFC 6749 requires it.
            "access_token": random::token(),
            "token_type": "Bearer",
            "expires_in": self.opts.id_token_ttl.as_secs(),
            "id_token": id_token,
            "scope": grant.scopes.join(" "),
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        HttpResponse::json(StatusCode::OK, &body)
    }

    /// Whether `scopes` may be granted to `client_id`: `openid` present, and every audience scope names a client
    /// that lists the requester as a trusted peer (or the requester itself).
    pub(crate) fn check_scopes(&self, client_id: &str, scopes: &[String]) -> Result<(), TokenError> {
        if !scopes.iter().any(|s| s == "openid") {
            return Err(TokenError::new("invalid_scope", "the openid scope is required"));
        }
        for peer in scopes.iter().filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX)) {
            let trusted = peer == client_id
                || self.clients.get(peer).is_some_and(|p| p.trusted_peers.iter().any(|t| t == client_id));
            if !trusted {
                return Err(TokenError::new(
                    "invalid_scope",
                    format!("client {client_id} may not request the audience of client {peer}"),
                ));
            }
        }
        Ok(())
    }
}

/// A refused OAuth request as RFC 6749 §5.2 JSON; `invalid_client` answers 401 with a challenge.
pub(crate) fn oauth_error(status: StatusCode, err: &TokenError) -> HttpResponse {
    let body = json!({ "error": err.error, "error_description": err.description });
    let response = HttpResponse::json(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        response.with_header(HeaderName::from_static("www-authenticate"), "Basic realm=\"dev-idp\"")
    } else {
        response
    }
}

/// The scopes of a `scope` parameter, duplicates dropped, order kept.
pub(crate) fn split_scopes(scope: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.unwrap_or_default().split_ascii_whitespace() {
        if !scopes.iter().any(|seen| seen == s) {
            scopes.push(s.to_owned());
        }
    }
    scopes
}

/// A stable, opaque subject per email: a developer who logs in twice is the same user, and nobody is tempted to
/// read the email out of `sub` (pachd uses the `email` claim).
fn subject_of(email: &str) -> String {
    let digest = Sha256::digest(format!("pachagent-dev-idp:{}", email.to_ascii_lowercase()).as_bytes());
    hex::encode(&digest[..16])
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// Checks an email typed on a login page: one `@` with text on both sides, no spaces or control characters.
pub(crate) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}
