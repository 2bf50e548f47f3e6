//! One OpenID Provider as the agent sees it: its discovery document (fetched and checked against the context's
//! issuer), its keys, and the requests the agent makes to it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreIdToken, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, Audience, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, RequestTokenError, Scope,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{CONNECT_TIMEOUT, Error, REQUEST_TIMEOUT};
use crate::secret::{ClientSecret, IdToken, RefreshToken};

/// The largest discovery document, key set or token response the agent reads; a provider sending more is
/// broken or hostile.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Clock skew tolerated on the ID token's `exp`/`iat` between this machine and the provider.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// The scope prefix Dex uses to put another client (pachd) into the ID token's audience.
const AUDIENCE_SCOPE_PREFIX: &str = "audience:server:client_id:";

/// Discovery fields openidconnect's core metadata does not model.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// What the agent needs to know to talk to a provider, from the context and the keyring.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The issuer exactly as ID tokens carry it in `iss`.
    pub issuer: String,
    /// Where to fetch discovery when the issuer's host is not reachable from here.
    pub issuer_url: Option<String>,
    /// Our client id at the provider.
    pub client_id: String,
    /// The client secret of a confidential client.
    pub client_secret: Option<ClientSecret>,
    /// A CA file for the provider's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// Every scope to request.
    pub scopes: Vec<String>,
}

/// A discovered provider, ready to run logins and refreshes.
pub struct Provider {
    settings: ProviderSettings,
    metadata: Metadata,
    http: openidconnect::reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

/// A started authorization-code login: the URL for the browser, and what the callback will be checked against.
pub struct AuthorizationRequest {
    /// Where the user's browser goes.
    pub url: String,
    /// The loopback URL the provider sends the browser back to.
    pub redirect_uri: String,
    state: CsrfToken,
    nonce: Nonce,
    pkce_verifier: PkceCodeVerifier,
}

impl AuthorizationRequest {
    /// The `state` the callback must carry.
    pub fn state(&self) -> &str {
        self.state.secret()
    }
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// A started device login: what to show the user, and what to poll with.
pub struct DeviceAuthorization {
    /// The code the user types.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The same page with the code filled in, when the provider offers it.
    pub verification_uri_complete: Option<String>,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
    response: CoreDeviceAuthorizationResponse,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization").field("verification_uri", &self.verification_uri).finish_non_exhaustive()
    }
}

/// What a login or refresh yields: a verified ID token to trade with pachd, and maybe a refresh token.
#[derive(Debug)]
pub struct Tokens {
    /// The verified ID token.
    pub id_token: IdToken,
    /// The refresh token, when the provider issued one (`offline_access`).
    pub refresh_token: Option<RefreshToken>,
    /// The `email` claim, from which pachd names the user.
    pub email: Option<String>,
    /// When the ID token expires.
    pub expires_at: DateTime<Utc>,
}

impl Provider {
    /// Fetches the provider's discovery document and keys, and checks that it is the issuer the context names.
    ///
    /// # Errors
    /// [`Error::IssuerMismatch`] (with the trailing-slash hint), [`Error::Unreachable`], [`Error::BadResponse`],
    /// [`Error::Settings`].
    pub async fn discover(settings: ProviderSettings) -> Result<Self, Error> {
        let http = http_client(&settings)?;
        let base = settings.issuer_url.as_deref().unwrap_or(&settings.issuer);
        let url = format!("{}/.well-known/openid-configuration", base.trim_end_matches('/'));
        let body = get(&http, &url).await?;
        let mut metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| Error::BadResponse { url: url.clone(), reason: format!("not a discovery document ({e})") })?;
        check_issuer(&settings, metadata.issuer().as_str())?;
        if let Some(reachable) = &settings.issuer_url {
            metadata = rewrite_endpoints(metadata, &settings.issuer, reachable)?;
        }
        let jwks_url = metadata.jwks_uri().url().to_string();
        let body = get(&http, &jwks_url).await?;
        let jwks: CoreJsonWebKeySet = serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
            url: jwks_url.clone(),
            reason: format!("not a JSON Web Key Set ({e})"),
        })?;
        if jwks.keys().is_empty() {
            return Err(Error::BadResponse { url: jwks_url, reason: "the key set is empty".into() });
        }
        let metadata = metadata.set_jwks(jwks);
        Ok(Self { settings, metadata, http })
    }

    /// The issuer as configured (and as the provider names itself).
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Whether the provider offers the device authorization grant.
    pub fn supports_device_flow(&self) -> bool {
        self.metadata.additional_metadata().device_authorization_endpoint.is_some()
    }

    fn client(&self) -> Client {
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(|s| openidconnect::ClientSecret::new(s.expose_secret().to_owned()));
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.settings.scopes.iter().filter(|s| s.as_str() != "openid").map(|s| Scope::new(s.clone()))
    }

    /// Builds the browser URL for an authorization-code login with PKCE (S256), `state` and `nonce`.
    ///
    /// # Errors
    /// [`Error::Settings`] when the redirect URI is not a URL.
    pub fn authorization_request(&self, redirect_uri: &str) -> Result<AuthorizationRequest, Error> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| Error::Settings(format!("bad redirect URI {redirect_uri:?}: {e}")))?;
        let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client().set_redirect_uri(redirect);
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.scopes() {
            request = request.add_scope(scope);
        }
        // Without it, providers such as oidc-provider drop offline_access and issue no refresh token.
        if self.settings.scopes.iter().any(|s| s == "offline_access") {
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, state, nonce) = request.url();
        Ok(AuthorizationRequest {
            url: url.to_string(),
            redirect_uri: redirect_uri.to_owned(),
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// Exchanges the code from the callback, then verifies the ID token (signature, issuer, audience, expiry and
    /// the nonce of this login).
    ///
    /// # Errors
    /// [`Error::Refused`] with the provider's error, [`Error::InvalidIdToken`] naming the failed check, transport
    /// errors.
    pub async fn exchange_code(&self, request: AuthorizationRequest, code: String) -> Result<Tokens, Error> {
        let redirect = RedirectUrl::new(request.redirect_uri.clone())
            .map_err(|e| Error::Settings(format!("bad redirect URI: {e}")))?;
        let client = self.client().set_redirect_uri(redirect);
        let token_url = self.token_url();
        let response: CoreTokenResponse = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Error::Unsupported(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(request.pkce_verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(&token_url, e))?;
        let nonce = request.nonce;
        self.verified(client.id_token_verifier(), &response, move |n: Option<&Nonce>| match n {
            Some(n) if n.secret() == nonce.secret() => Ok(()),
            Some(_) => Err("the nonce does not match this login".to_owned()),
            None => Err("the nonce is missing".to_owned()),
        })
    }

    /// Starts a device login.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the provider has no device endpoint, provider and transport errors.
    pub async fn start_device(&self) -> Result<DeviceAuthorization, Error> {
        let endpoint = self.metadata.additional_metadata().device_authorization_endpoint.clone().ok_or_else(|| {
            Error::Unsupported(
                "the identity provider does not offer the device flow: log in with the browser instead (pachagent login without --device)"
                    .into(),
            )
        })?;
        let url = endpoint.url().to_string();
        let client = self.client().set_device_authorization_url(endpoint);
        let mut request = client.exchange_device_code();
        for scope in self.scopes() {
            request = request.add_scope(scope);
        }
        let response: CoreDeviceAuthorizationResponse =
            request.request_async(&self.http).await.map_err(|e| token_error(&url, e))?;
        let expires_in = chrono::Duration::from_std(response.expires_in()).unwrap_or(chrono::Duration::minutes(10));
        Ok(DeviceAuthorization {
            user_code: response.user_code().secret().clone(),
            verification_uri: response.verification_uri().to_string(),
            verification_uri_complete: response.verification_uri_complete().map(|u| u.secret().clone()),
            expires_at: Utc::now() + expires_in,
            response,
        })
    }

    /// Polls the token endpoint at the provider's interval (slowing down when told to) until the user approves,
    /// denies, or `timeout` passes.
    ///
    /// # Errors
    /// [`Error::Refused`] (`access_denied`, `expired_token`), transport errors.
    pub async fn finish_device(&self, device: &DeviceAuthorization, timeout: Duration) -> Result<Tokens, Error> {
        let endpoint = self
            .metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| Error::Unsupported("the identity provider does not offer the device flow".into()))?;
        let client = self.client().set_device_authorization_url(endpoint);
        let token_url = self.token_url();
        let response: CoreTokenResponse = client
            .exchange_device_access_token(&device.response)
            .map_err(|e| Error::Unsupported(format!("the provider has no token endpoint: {e}")))?
            .request_async(&self.http, tokio::time::sleep, Some(timeout))
            .await
            .map_err(|e| token_error(&token_url, e))?;
        self.verified(client.id_token_verifier(), &response, |_: Option<&Nonce>| Ok(()))
    }

    /// Trades a refresh token for fresh tokens. With rotation, the answer carries the refresh token to use next.
    ///
    /// # Errors
    /// [`Error::Refused`] with `invalid_grant` when the refresh token is dead; transport errors otherwise.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<Tokens, Error> {
        let client = self.client();
        let token_url = self.token_url();
        let rt = openidconnect::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let response: CoreTokenResponse = client
            .exchange_refresh_token(&rt)
            .map_err(|e| Error::Unsupported(format!("the provider has no token endpoint: {e}")))?
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(&token_url, e))?;
        self.verified(client.id_token_verifier(), &response, |_: Option<&Nonce>| Ok(()))
    }

    fn token_url(&self) -> String {
        self.metadata.token_endpoint().map(|u| u.url().to_string()).unwrap_or_default()
    }

    fn verified<N>(
        &self,
        verifier: openidconnect::core::CoreIdTokenVerifier<'_>,
        response: &CoreTokenResponse,
        nonce: N,
    ) -> Result<Tokens, Error>
    where
        N: openidconnect::NonceVerifier,
    {
        use openidconnect::TokenResponse as _;
        let id_token: &CoreIdToken = response.id_token().ok_or_else(|| Error::BadResponse {
            url: self.token_url(),
            reason: "the answer has no id_token (does the client allow the openid scope?)".into(),
        })?;
        let raw = id_token.to_string();
        check_issuer_claim(&raw, &self.settings.issuer)?;
        let trusted: Vec<String> = self
            .settings
            .scopes
            .iter()
            .filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX).map(str::to_owned))
            .collect();
        let verifier = verifier
            .set_other_audience_verifier_fn(move |aud: &Audience| trusted.iter().any(|t| t == aud.as_str()))
            .set_time_fn(|| Utc::now() - CLOCK_SKEW);
        let claims = id_token.claims(&verifier, nonce).map_err(|e| Error::InvalidIdToken(e.to_string()))?;
        if claims.issue_time() > Utc::now() + CLOCK_SKEW {
            return Err(Error::InvalidIdToken("it was issued in the future (check this machine's clock)".into()));
        }
        Ok(Tokens {
            email: claims.email().map(|e| e.as_str().to_owned()),
            expires_at: claims.expiration(),
            id_token: IdToken::new(raw),
            refresh_token: response.refresh_token().map(|t| RefreshToken::new(t.secret().clone())),
        })
    }
}

fn http_client(settings: &ProviderSettings) -> Result<openidconnect::reqwest::Client, Error> {
    let mut builder = openidconnect::reqwest::Client::builder()
        // Following redirects would let a provider point the agent anywhere (SSRF); OIDC needs none.
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("pachagent/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Settings(format!("cannot read the provider CA file {}: {e}", path.display())))?;
        let certs = openidconnect::reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Settings(format!("the provider CA file {} is not PEM: {e}", path.display())))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Error::Settings(format!("cannot set up HTTPS for the provider: {e}")))
}

/// GETs a small JSON document, refusing redirects, error statuses and oversized bodies.
async fn get(http: &openidconnect::reqwest::Client, url: &str) -> Result<Vec<u8>, Error> {
    let unreachable = |reason: String| Error::Unreachable { url: url.to_owned(), reason };
    let mut response =
        http.get(url).header("accept", "application/json").send().await.map_err(|e| unreachable(error_chain(&e)))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    if !status.is_success() {
        let hint = if status.is_redirection() { " (redirects are not followed: check the issuer URL)" } else { "" };
        return Err(Error::BadResponse { url: url.to_owned(), reason: format!("HTTP {status}{hint}") });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Error::BadResponse {
                url: url.to_owned(),
                reason: format!("the answer is over {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The provider must call itself exactly what the context (and pachd) expect in `iss`.
fn check_issuer(settings: &ProviderSettings, advertised: &str) -> Result<(), Error> {
    let configured = settings.issuer.as_str();
    if advertised == configured {
        return Ok(());
    }
    Err(Error::IssuerMismatch(issuer_mismatch_message(configured, advertised, "its discovery document")))
}

/// Explains an issuer mismatch, with the precise hint when only a trailing slash or the host differs.
fn issuer_mismatch_message(configured: &str, actual: &str, source: &str) -> String {
    if configured.trim_end_matches('/') == actual.trim_end_matches('/') {
        let which = if actual.ends_with('/') {
            "has a trailing slash the configured one lacks"
        } else {
            "lacks the trailing slash the configured one has"
        };
        return format!(
            "the issuer in {source} is {actual:?} but the context says {configured:?}: it {which}; \
             set issuer = {actual:?} exactly (Auth0 issuers end with a slash), and the same in pachd's OIDC config"
        );
    }
    let host = |u: &str| Url::parse(u).ok().map(|u| (u.host_str().unwrap_or_default().to_owned(), u.path().to_owned()));
    if let (Some((h1, p1)), Some((h2, p2))) = (host(configured), host(actual))
        && h1 != h2
        && p1.trim_end_matches('/') == p2.trim_end_matches('/')
    {
        return format!(
            "the issuer in {source} is {actual:?} but the context says {configured:?}: only the host differs; if the \
             provider runs inside the cluster (Dex), set issuer = {actual:?} and issuer_url = {configured:?} \
             (the address this machine can reach)"
        );
    }
    format!(
        "the issuer in {source} is {actual:?} but the context says {configured:?}: set issuer to the provider's exact issuer"
    )
}

/// Checks `iss` before the library's verifier does, so that a slash or host difference gets its precise message.
fn check_issuer_claim(jwt: &str, expected: &str) -> Result<(), Error> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = jwt.split('.').nth(1).ok_or_else(|| Error::InvalidIdToken("it is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| Error::InvalidIdToken("its payload is not base64url".into()))?;
    let claims: Iss =
        serde_json::from_slice(&bytes).map_err(|_| Error::InvalidIdToken("its payload is not JSON".into()))?;
    match claims.iss.as_deref() {
        None => Err(Error::InvalidIdToken("it has no iss claim".into())),
        Some(iss) if iss == expected => Ok(()),
        Some(iss) => Err(Error::InvalidIdToken(issuer_mismatch_message(expected, iss, "the ID token"))),
    }
}

/// Points the provider's endpoints that live on the issuer's origin at the origin this machine can reach.
fn rewrite_endpoints(metadata: Metadata, issuer: &str, reachable: &str) -> Result<Metadata, Error> {
    let issuer = Url::parse(issuer).map_err(|e| Error::Settings(format!("issuer {issuer:?} is not a URL: {e}")))?;
    let reachable =
        Url::parse(reachable).map_err(|e| Error::Settings(format!("issuer_url {reachable:?} is not a URL: {e}")))?;
    let swap = |u: &Url| -> Url {
        if u.origin() != issuer.origin() {
            return u.clone();
        }
        let mut out = u.clone();
        let _ = out.set_scheme(reachable.scheme());
        let _ = out.set_host(reachable.host_str());
        let _ = out.set_port(reachable.port());
        out
    };
    let auth = openidconnect::AuthUrl::from_url(swap(metadata.authorization_endpoint().url()));
    let jwks = openidconnect::JsonWebKeySetUrl::from_url(swap(metadata.jwks_uri().url()));
    let token = metadata.token_endpoint().map(|t| openidconnect::TokenUrl::from_url(swap(t.url())));
    let device = metadata.additional_metadata().device_authorization_endpoint.clone();
    let mut metadata = metadata.set_authorization_endpoint(auth).set_jwks_uri(jwks).set_token_endpoint(token);
    metadata.additional_metadata_mut().device_authorization_endpoint =
        device.map(|d| DeviceAuthorizationUrl::from_url(swap(d.url())));
    Ok(metadata)
}

/// Maps a failed token-endpoint request.
fn token_error<RE, T>(url: &str, e: RequestTokenError<RE, openidconnect::StandardErrorResponse<T>>) -> Error
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponseType + std::fmt::Display,
{
    match e {
        RequestTokenError::ServerResponse(resp) => {
            Error::Refused { error: resp.error().to_string(), description: resp.error_description().cloned() }
        }
        RequestTokenError::Request(e) => Error::Unreachable { url: url.to_owned(), reason: error_chain(&e) },
        RequestTokenError::Parse(e, _) => {
            Error::BadResponse { url: url.to_owned(), reason: format!("not an OAuth answer ({e})") }
        }
        RequestTokenError::Other(reason) => Error::BadResponse { url: url.to_owned(), reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_extra_trailing_slash_is_reported_as_exactly_that() {
        let m =
            issuer_mismatch_message("https://tenant.auth0.com", "https://tenant.auth0.com/", "its discovery document");
        assert!(m.contains("has a trailing slash the configured one lacks"), "{m}");
        assert!(m.contains("set issuer = \"https://tenant.auth0.com/\""), "{m}");
        let m = issuer_mismatch_message("https://tenant.auth0.com/", "https://tenant.auth0.com", "the ID token");
        assert!(m.contains("lacks the trailing slash"), "{m}");
    }

    #[test]
    fn an_issuer_on_another_host_suggests_issuer_url() {
        let m =
            issuer_mismatch_message("http://localhost:30658/dex", "http://pachd:30658/dex", "its discovery document");
        assert!(m.contains("only the host differs") && m.contains("issuer_url"), "{m}");
    }

    #[test]
    fn the_iss_claim_is_checked_with_the_precise_message() {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let jwt =
            format!("{}.{}.sig", enc(serde_json::json!({"alg":"RS256"})), enc(serde_json::json!({"iss":"https://a/"})));
        assert!(check_issuer_claim(&jwt, "https://a/").is_ok());
        let err = check_issuer_claim(&jwt, "https://a").unwrap_err().to_string();
        assert!(err.contains("trailing slash"), "{err}");
        assert!(check_issuer_claim("garbage", "https://a").is_err());
    }
}
