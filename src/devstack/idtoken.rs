//! ID-token verification as pachd does it for `Authenticate{id_token}`: go-oidc v3.5 semantics and messages.
//!
//! pachd runs OIDC discovery on every call (`oidc.NewProvider`), then go-oidc's `IDTokenVerifier.Verify`:
//! claims first (issuer, audience, expiry, not-before), then the signing algorithm, then the signature against
//! the discovery document's JWKS, refetching the key set once when no cached key verifies. Clients match on
//! the resulting texts, so the checks run in that order and every failure keeps go-oidc's words.
//! The checks on claims are pure functions of `now`; only discovery and the key set touch the network.

mod claims;
mod jwt;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use serde_json::Value;

use self::claims::Claims;
use self::jwt::{SignedJwt, jwt_payload};
use super::gofmt::{quote, quote_list};

/// How long an HTTP exchange with the issuer may take; a dev issuer answers in milliseconds, and a hung one
/// must not hang the RPC that waits on it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting is the part that hangs when a firewall drops packets; fail it sooner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// go-oidc's allowance for clock skew on `nbf` (the pachd doc: nbf ≤ now + 1 min).
const NBF_LEEWAY: Duration = Duration::from_secs(60);
/// The algorithms go-oidc v3.5 accepts from discovery; anything else listed there is ignored.
const SUPPORTED_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"];

/// Anything that stops an ID token from being accepted. `Display` is the text pachd puts in the gRPC status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Discovery failed; pachd returns go-oidc's `NewProvider` error unwrapped.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The token was refused by the verifier; pachd wraps it as `could not verify token: …`.
    #[error("could not verify token: {0}")]
    Verify(#[from] VerifyError),
    /// The verified token's `email` claim is not a string.
    #[error("could not get claims: {0}")]
    Claims(String),
}

/// go-oidc `NewProvider` failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The discovery request could not be sent or answered.
    #[error("Get {}: {detail}", quote(url))]
    Request {
        /// The discovery URL.
        url: String,
        /// The transport error and its causes.
        detail: String,
    },
    /// The issuer answered with something other than 200.
    #[error("{status}: {body}")]
    Status {
        /// HTTP status with its reason phrase, as Go's `resp.Status` prints it.
        status: String,
        /// The response body.
        body: String,
    },
    /// The discovery document is not the JSON object OIDC requires.
    #[error("oidc: failed to decode provider discovery object: {0}")]
    Decode(String),
    /// The discovery document names another issuer (go-oidc compares the strings exactly).
    #[error(
        "oidc: issuer did not match the issuer returned by provider, expected {} got {}",
        quote(expected),
        quote(got)
    )]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The `issuer` field of the discovery document.
        got: String,
    },
}

/// go-oidc `IDTokenVerifier.Verify` failures (pachd prefixes them with `could not verify token: `).
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// Not a JWT.
    #[error("oidc: malformed jwt: {0}")]
    Malformed(String),
    /// The payload is not a JSON object of the expected claim types.
    #[error("oidc: failed to unmarshal claims: {0}")]
    Claims(String),
    /// `iss` differs from the configured issuer.
    #[error("oidc: id token issued by a different provider, expected {} got {}", quote(expected), quote(got))]
    Issuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`.
        got: String,
    },
    /// pachd's client id is not among `aud`.
    #[error("oidc: expected audience {} got {}", quote(expected), quote_list(got))]
    Audience {
        /// pachd's client id.
        expected: String,
        /// The token's audiences.
        got: Vec<String>,
    },
    /// `exp` is in the past (or missing, which Go reads as the zero time).
    #[error("oidc: token is expired (Token Expiry: {expiry})")]
    Expired {
        /// The expiry as Go prints a `time.Time`.
        expiry: String,
    },
    /// `nbf` is more than the leeway in the future.
    #[error("oidc: current time {now} before the nbf (not before) time: {nbf}")]
    NotYetValid {
        /// Now, as Go prints it.
        now: String,
        /// The token's `nbf`, as Go prints it.
        nbf: String,
    },
    /// The header's `alg` is not one the provider advertises.
    #[error("oidc: id token signed with unsupported algorithm, expected {} got {}", quote_list(expected), quote(got))]
    UnsupportedAlgorithm {
        /// The algorithms accepted.
        expected: Vec<String>,
        /// The token's `alg`.
        got: String,
    },
    /// The key set could not be fetched.
    #[error("failed to verify signature: fetching keys {0}")]
    FetchKeys(String),
    /// No key of the issuer's key set verifies the signature.
    #[error("failed to verify signature: failed to verify id token signature")]
    BadSignature,
}

/// What pachd takes from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedIdToken {
    /// The `email` claim (empty when absent: pachd then creates the subject `user:`).
    pub(crate) email: String,
    /// The `exp` claim.
    pub(crate) expiry: SystemTime,
    /// The `nonce` claim (empty when absent); go-oidc leaves checking it to the caller, and pachd's callback does.
    pub(crate) nonce: String,
}

/// The endpoints pachd's OAuth client takes from discovery (go-oidc `Provider.Endpoint()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// `authorization_endpoint`: where GetOIDCLogin sends the browser.
    pub(crate) authorization: String,
    /// `token_endpoint`: where the callback exchanges the code.
    pub(crate) token: String,
}

/// What one discovery run yields.
struct Metadata {
    jwks_uri: String,
    algorithms: Vec<String>,
    endpoints: Endpoints,
}

/// Verifies ID tokens for one issuer and client id, caching the issuer's key set between calls.
#[derive(Debug)]
pub(crate) struct Verifier {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    /// `(jwks_uri, keys)` of the last fetch; replaced when a token's signature matches none of them.
    keys: Mutex<Option<(String, Vec<Jwk>)>>,
}

/// The parts of a discovery document go-oidc reads.
#[derive(Debug, Deserialize)]
struct Discovery {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    jwks_uri: String,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    authorization_endpoint: String,
    #[serde(default)]
    token_endpoint: String,
}

impl Verifier {
    /// A verifier for tokens whose `iss` is exactly `issuer` and whose `aud` contains `client_id`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend).
    pub(crate) fn new(issuer: String, client_id: String) -> Result<Self, reqwest::Error> {
        // Redirects are off: a discovery or JWKS URL that redirects elsewhere is a misconfiguration (or an
        // SSRF attempt), not something to follow silently.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self { http, issuer, client_id, keys: Mutex::new(None) })
    }

    /// The configured issuer.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id that must appear in `aud` (pachd's own OAuth client id).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Runs discovery and verifies `raw` as of `now`, in go-oidc's order.
    ///
    /// # Errors
    /// Any [`Error`]; its `Display` is pachd's message.
    pub(crate) async fn verify(&self, raw: &str, now: SystemTime) -> Result<VerifiedIdToken, Error> {
        let metadata = self.discover().await?;
        let payload = jwt_payload(raw)?;
        let claims = Claims::parse(&payload)?;
        claims.check(&self.issuer, &self.client_id, now)?;
        let signed = SignedJwt::parse(raw)?;
        let alg = signed.algorithm(&metadata.algorithms)?;
        self.verify_signature(&signed, alg, &metadata.jwks_uri).await?;
        Ok(VerifiedIdToken { email: claims.email()?, expiry: claims.expiry(), nonce: claims.nonce() })
    }

    /// Runs discovery (as pachd does on every OIDC call) and returns the OAuth endpoints.
    ///
    /// # Errors
    /// [`ProviderError`], with go-oidc's texts.
    pub(crate) async fn endpoints(&self) -> Result<Endpoints, ProviderError> {
        Ok(self.discover().await?.endpoints)
    }

    /// The HTTP client used for discovery and keys: no redirects, short timeouts. pachd's OAuth exchange uses the
    /// same client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `oidc.NewProvider`: fetches `<issuer without one trailing slash>/.well-known/openid-configuration`.
    async fn discover(&self) -> Result<Metadata, ProviderError> {
        let base = self.issuer.strip_suffix('/').unwrap_or(&self.issuer);
        let url = format!("{base}/.well-known/openid-configuration");
        let body = get(&self.http, &url).await.map_err(|e| match e {
            HttpError::Request(detail) => ProviderError::Request { url: url.clone(), detail },
            HttpError::Status { status, body } => ProviderError::Status { status, body },
        })?;
        let doc: Discovery = serde_json::from_str(&body).map_err(|e| ProviderError::Decode(e.to_string()))?;
        if doc.issuer != self.issuer {
            return Err(ProviderError::IssuerMismatch { expected: self.issuer.clone(), got: doc.issuer });
        }
        let algorithms = doc
            .id_token_signing_alg_values_supported
            .into_iter()
            .filter(|a| SUPPORTED_ALGORITHMS.contains(&a.as_str()));
        Ok(Metadata {
            jwks_uri: doc.jwks_uri,
            algorithms: algorithms.collect(),
            endpoints: Endpoints { authorization: doc.authorization_endpoint, token: doc.token_endpoint },
        })
    }

    async fn verify_signature(&self, jwt: &SignedJwt<'_>, alg: Algorithm, jwks_uri: &str) -> Result<(), VerifyError> {
        let cached = {
            let guard = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.as_ref().filter(|(uri, _)| uri == jwks_uri).map(|(_, keys)| keys.clone())
        };
        if cached.is_some_and(|keys| jwt.verifies_with(&keys, alg)) {
            return Ok(());
        }
        // Keys rotate: when no cached key fits, go-oidc fetches the set again before giving up.
        let keys = self.fetch_keys(jwks_uri).await.map_err(VerifyError::FetchKeys)?;
        let ok = jwt.verifies_with(&keys, alg);
        *self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((jwks_uri.to_owned(), keys));
        if ok { Ok(()) } else { Err(VerifyError::BadSignature) }
    }

    /// go-oidc `RemoteKeySet.updateKeys`; keys this verifier cannot use are skipped rather than failing the set.
    async fn fetch_keys(&self, jwks_uri: &str) -> Result<Vec<Jwk>, String> {
        let body = get(&self.http, jwks_uri).await.map_err(|e| match e {
            HttpError::Request(detail) => format!("oidc: get keys failed Get {}: {detail}", quote(jwks_uri)),
            HttpError::Status { status, body } => format!("oidc: get keys failed: {status} {body}"),
        })?;
        let set: Value = serde_json::from_str(&body).map_err(|e| format!("oidc: failed to decode keys: {e} {body}"))?;
        let keys = set.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(keys.into_iter().filter_map(|k| serde_json::from_value::<Jwk>(k).ok()).collect())
    }
}

enum HttpError {
    Request(String),
    Status { status: String, body: String },
}

async fn get(http: &reqwest::Client, url: &str) -> Result<String, HttpError> {
    let resp = http.get(url).send().await.map_err(|e| HttpError::Request(error_chain(&e.without_url())))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| HttpError::Request(error_chain(&e.without_url())))?;
    if status != reqwest::StatusCode::OK {
        return Err(HttpError::Status { status: status.to_string(), body });
    }
    Ok(body)
}

/// An error and its causes on one line, the way Go's wrapped errors read.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
