//! One OpenID Provider as the agent sees it: its discovery document (fetched and checked against the context's
//! issuer), its keys, and the requests the agent makes to it.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, Audience, AuthorizationCode, ClaimsVerificationError, ClientId, CsrfToken,
    DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet, JwsSigningAlgorithm as _, Nonce,
    NonceVerifier as _, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::{HttpClient, HttpError};
use super::{CONNECT_TIMEOUT, Error, MAX_BODY_BYTES, REQUEST_TIMEOUT};
use crate::secret::{AuthCode, ClientSecret, IdToken, RefreshToken};

/// Clock skew tolerated on the ID token's `exp`, `iat` and `nbf` between this machine and the provider (pachd's
/// go-oidc allows the same minute on `nbf`).
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
    /// The provider's signing keys as last fetched; replaced when an ID token names a key published since.
    keys: RwLock<CoreJsonWebKeySet>,
    http: HttpClient,
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

    /// The `state`, `nonce` and PKCE verifier, for the agent to keep while the login runs (see `crate::net`).
    pub fn secrets(&self) -> (&str, &str, &str) {
        (self.state.secret(), self.nonce.secret(), self.pkce_verifier.secret())
    }

    /// A request made earlier (see [`AuthorizationRequest::secrets`]), to exchange its code.
    pub fn from_parts(url: String, redirect_uri: String, state: String, nonce: String, pkce_verifier: String) -> Self {
        Self {
            url,
            redirect_uri,
            state: CsrfToken::new(state),
            nonce: Nonce::new(nonce),
            pkce_verifier: PkceCodeVerifier::new(pkce_verifier),
        }
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

impl DeviceAuthorization {
    /// The provider's answer to the device authorization request, as JSON, to poll with later.
    ///
    /// # Errors
    /// [`Error::BadResponse`] when it cannot be written (it was read from JSON).
    pub fn answer_document(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&self.response)
            .map_err(|e| Error::BadResponse { url: self.verification_uri.clone(), reason: e.to_string() })
    }

    /// A device login started earlier, from its [`DeviceAuthorization::answer_document`].
    ///
    /// # Errors
    /// [`Error::BadResponse`] when the document is not a device authorization answer.
    pub fn from_answer(answer: &[u8], expires_at: DateTime<Utc>) -> Result<Self, Error> {
        let response: CoreDeviceAuthorizationResponse = serde_json::from_slice(answer).map_err(|e| {
            Error::BadResponse { url: "the device login kept by the agent".into(), reason: e.to_string() }
        })?;
        Ok(Self {
            user_code: response.user_code().secret().clone(),
            verification_uri: response.verification_uri().to_string(),
            verification_uri_complete: response.verification_uri_complete().map(|u| u.secret().clone()),
            expires_at,
            response,
        })
    }
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
    /// The `sub` claim: who the provider says the user is, for good (a renewal must not change it).
    pub subject: String,
    /// When the ID token expires.
    pub expires_at: DateTime<Utc>,
}

/// The token endpoint's answer to a refresh, its ID token not checked yet. With rotation the refresh token in it is
/// already the only one the provider accepts: keep it whatever [`Provider::verify_refreshed`] then says, or the
/// next refresh reuses a dead token and a provider with reuse detection revokes the whole grant.
pub struct Refreshed {
    /// The refresh token to use next, when the provider sent one (else the one just used stays valid).
    pub refresh_token: Option<RefreshToken>,
    /// The answer, or why it could not be read although it carried a refresh token.
    answer: Result<CoreTokenResponse, Error>,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshed").field("rotated", &self.refresh_token.is_some()).finish_non_exhaustive()
    }
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
        let keys = fetch_keys(&http, metadata.jwks_uri().url().as_str()).await?;
        Ok(Self { settings, metadata, keys: RwLock::new(keys), http })
    }

    /// A provider from the documents an earlier [`Provider::discover`] fetched and checked
    /// ([`Provider::discovery_document`], [`Provider::keys_document`]): the agent keeps them and its helper
    /// rebuilds the provider for each call, without asking the provider again.
    ///
    /// # Errors
    /// [`Error::BadResponse`] for documents that do not read back; [`Error::Settings`].
    pub fn from_documents(settings: ProviderSettings, discovery: &[u8], keys: &[u8]) -> Result<Self, Error> {
        let kept = |what: &str, e: serde_json::Error| Error::BadResponse {
            url: format!("the {what} kept by the agent"),
            reason: e.to_string(),
        };
        let http = http_client(&settings)?;
        let metadata: Metadata = serde_json::from_slice(discovery).map_err(|e| kept("discovery document", e))?;
        let keys: CoreJsonWebKeySet = serde_json::from_slice(keys).map_err(|e| kept("key set", e))?;
        Ok(Self { settings, metadata, keys: RwLock::new(keys), http })
    }

    /// The discovery document as checked (endpoints already moved to `issuer_url` when it is set), as JSON.
    ///
    /// # Errors
    /// [`Error::BadResponse`] when it cannot be written (it was read from JSON).
    pub fn discovery_document(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&self.metadata).map_err(|e| Error::BadResponse {
            url: self.settings.issuer.clone(),
            reason: format!("the discovery document cannot be kept: {e}"),
        })
    }

    /// The provider's key set as last fetched, as JSON.
    ///
    /// # Errors
    /// [`Error::BadResponse`] when it cannot be written (it was read from JSON).
    pub fn keys_document(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&*self.keys.read().unwrap_or_else(PoisonError::into_inner)).map_err(|e| Error::BadResponse {
            url: self.settings.issuer.clone(),
            reason: format!("the key set cannot be kept: {e}"),
        })
    }

    /// Fetches the provider's key set again, after an ID token named a key the agent has not seen: providers
    /// rotate their signing keys and publish the new one before they use it.
    async fn refetch_keys(&self) -> Result<(), Error> {
        let keys = fetch_keys(&self.http, self.metadata.jwks_uri().url().as_str()).await?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        tracing::info!(issuer = %self.settings.issuer, "fetched the identity provider's signing keys again");
        Ok(())
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
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner).clone();
        CoreClient::from_provider_metadata(
            self.metadata.clone().set_jwks(keys),
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

    /// Exchanges the code from the callback, then verifies the ID token (see [`Provider::verified`]), including
    /// the nonce of this login.
    ///
    /// # Errors
    /// [`Error::Refused`] with the provider's error, [`Error::InvalidIdToken`] naming the failed check, transport
    /// errors.
    pub async fn exchange_code(&self, request: AuthorizationRequest, code: AuthCode) -> Result<Tokens, Error> {
        let redirect = RedirectUrl::new(request.redirect_uri.clone())
            .map_err(|e| Error::Settings(format!("bad redirect URI: {e}")))?;
        let client = self.client().set_redirect_uri(redirect);
        let token_url = self.token_url();
        let response: CoreTokenResponse = client
            .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
            .map_err(|e| Error::Unsupported(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(request.pkce_verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(&token_url, e))?;
        self.verified(&response, Some(&request.nonce)).await
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
        self.verified(&response, None).await
    }

    /// Trades a refresh token for fresh tokens, whose ID token [`Provider::verify_refreshed`] then checks. With
    /// rotation, the answer carries the refresh token to use next, even when the rest of it is unusable.
    ///
    /// # Errors
    /// [`Error::Refused`] with `invalid_grant` when the refresh token is dead; transport errors; an answer that
    /// cannot be read and carries no refresh token.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<Refreshed, Error> {
        let client = self.client();
        let token_url = self.token_url();
        let rt = openidconnect::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let result: Result<CoreTokenResponse, _> = client
            .exchange_refresh_token(&rt)
            .map_err(|e| Error::Unsupported(format!("the provider has no token endpoint: {e}")))?
            .request_async(&self.http)
            .await;
        match result {
            Ok(response) => Ok(Refreshed {
                refresh_token: response.refresh_token().map(|t| RefreshToken::new(t.secret().clone())),
                answer: Ok(response),
            }),
            Err(RequestTokenError::Parse(e, body)) => {
                let unreadable = unreadable_answer(&token_url, &e, &body);
                // The provider may have rotated the refresh token even though what came with it is garbage.
                match salvage_refresh_token(&body) {
                    Some(rotated) => Ok(Refreshed { refresh_token: Some(rotated), answer: Err(unreadable) }),
                    None => Err(unreadable),
                }
            }
            Err(e) => Err(token_error(&token_url, e)),
        }
    }

    /// Verifies the ID token of a refresh's answer (see [`Provider::verified`]; a refresh carries no nonce to
    /// check).
    ///
    /// # Errors
    /// [`Error::InvalidIdToken`] naming the failed check; [`Error::BadResponse`] for an unreadable answer;
    /// transport errors when the provider's keys had to be fetched again.
    pub async fn verify_refreshed(&self, refreshed: Refreshed) -> Result<Tokens, Error> {
        let response = refreshed.answer?;
        self.verified(&response, None).await
    }

    fn token_url(&self) -> String {
        self.metadata.token_endpoint().map(|u| u.url().to_string()).unwrap_or_default()
    }

    /// The ID token's checks, each failure named in words a user can act on: the issuer exactly as configured;
    /// our client in the audience, any other audience trusted (a Dex audience scope) and then our client as the
    /// authorized party (`azp`); a public-key signature (no `none`, no HMAC: pachd verifies the same token
    /// against the provider's published keys) by a key the provider publishes, fetching its key set once more
    /// when the key is new; not expired, not issued or valid only in the future (a minute of clock skew either
    /// way); and this login's nonce when there is one.
    async fn verified(&self, response: &CoreTokenResponse, nonce: Option<&Nonce>) -> Result<Tokens, Error> {
        use openidconnect::TokenResponse as _;
        let id_token: &CoreIdToken = response.id_token().ok_or_else(|| Error::BadResponse {
            url: self.token_url(),
            reason: "the answer has no id_token (does the client allow the openid scope?)".into(),
        })?;
        let raw = id_token.to_string();
        let unverified = Unverified::parse(&raw)?;
        check_issuer_claim(&unverified, &self.settings.issuer)?;
        let claims = match self.check(id_token, nonce) {
            // The provider may have started signing with a key published since discovery: fetch its keys once
            // more and check again. A key still unknown then is refused; nothing here loops.
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                self.refetch_keys().await?;
                self.check(id_token, nonce)
            }
            checked => checked,
        }
        .map_err(|e| Error::InvalidIdToken(self.explain(&e, &unverified)))?;
        let now = Utc::now();
        if claims.issue_time() > now + CLOCK_SKEW {
            return Err(Error::InvalidIdToken(format!(
                "it was issued in the future (iat {}, more than a minute ahead of this machine's clock): check \
                 this machine's clock",
                claims.issue_time()
            )));
        }
        if let Some(nbf) = unverified.time("nbf")
            && nbf > now + CLOCK_SKEW
        {
            return Err(Error::InvalidIdToken(format!(
                "it is not valid yet (nbf {nbf}, more than a minute ahead of this machine's clock): check this \
                 machine's clock"
            )));
        }
        self.check_authorized_party(claims)?;
        Ok(Tokens {
            email: claims.email().map(|e| e.as_str().to_owned()),
            subject: claims.subject().as_str().to_owned(),
            expires_at: claims.expiration(),
            id_token: IdToken::new(raw),
            refresh_token: response.refresh_token().map(|t| RefreshToken::new(t.secret().clone())),
        })
    }

    /// The library's checks, with the keys known now.
    fn check<'t>(
        &self,
        id_token: &'t CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<&'t CoreIdTokenClaims, ClaimsVerificationError> {
        let trusted: Vec<String> = self
            .settings
            .scopes
            .iter()
            .filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX).map(str::to_owned))
            .collect();
        let client = self.client();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(self.signing_algs())
            .set_other_audience_verifier_fn(move |aud: &Audience| trusted.iter().any(|t| t == aud.as_str()))
            .set_time_fn(|| Utc::now() - CLOCK_SKEW);
        id_token.claims(&verifier, |got: Option<&Nonce>| match (nonce, got) {
            (None, _) => Ok(()),
            (Some(_), None) => Err("it carries no nonce, so nothing ties it to this login".to_owned()),
            // The library's comparison takes the same time whatever the nonces.
            (Some(expected), Some(_)) => expected.verify(got).map_err(|_| {
                "its nonce is not this login's: it was issued for another login (replayed or mixed up)".to_owned()
            }),
        })
    }

    /// The algorithms the provider says it signs ID tokens with, less those that are no public-key signature.
    fn signing_algs(&self) -> Vec<CoreJwsSigningAlgorithm> {
        let algs: Vec<CoreJwsSigningAlgorithm> = self
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| !a.uses_shared_secret() && **a != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        if algs.is_empty() { vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256] } else { algs }
    }

    /// OpenID Connect Core 3.1.3.7, steps 4 and 5, which the library leaves to its users: a token for several
    /// audiences must name us as the party it was issued to, and one that names a party must name us.
    fn check_authorized_party(&self, claims: &CoreIdTokenClaims) -> Result<(), Error> {
        let ours = self.settings.client_id.as_str();
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != ours => Err(Error::InvalidIdToken(format!(
                "its authorized party (azp) is {:?}, not this client {ours:?}: it was issued to another client",
                azp.as_str()
            ))),
            Some(_) => Ok(()),
            None if claims.audiences().len() > 1 => {
                let audiences: Vec<&str> = claims.audiences().iter().map(|a| a.as_str()).collect();
                Err(Error::InvalidIdToken(format!(
                    "it is for several audiences ({}) but names no authorized party (azp), so nothing says it was \
                     issued to this client {ours:?}",
                    audiences.join(", ")
                )))
            }
            None => Ok(()),
        }
    }

    /// A failed library check, in the words of the check.
    fn explain(&self, e: &ClaimsVerificationError, token: &Unverified) -> String {
        let kid = token.header_str("kid").map(|k| format!(" {k:?}")).unwrap_or_default();
        let alg = token.header_str("alg").unwrap_or("?");
        match e {
            ClaimsVerificationError::SignatureVerification(sig) => match sig {
                SignatureVerificationError::NoSignature => {
                    "it is not signed (alg \"none\"): an unsigned ID token proves nothing".to_owned()
                }
                SignatureVerificationError::DisallowedAlg(_) => {
                    let allowed: Vec<String> = self.signing_algs().iter().map(alg_name).collect();
                    format!(
                        "its signature algorithm (alg) {alg} is not accepted: ID tokens must carry a signature by \
                         one of the provider's published public keys ({})",
                        allowed.join(", ")
                    )
                }
                SignatureVerificationError::NoMatchingKey => format!(
                    "it is signed with a key (kid{kid}) that the provider does not publish, even after fetching \
                     its key set {} again",
                    self.metadata.jwks_uri().url()
                ),
                SignatureVerificationError::CryptoError(_) => format!(
                    "its signature does not verify with the provider's key{kid}: it was forged or altered on the way"
                ),
                other => format!("its signature cannot be checked: {other}"),
            },
            ClaimsVerificationError::InvalidAudience(_) => self.explain_audience(token),
            ClaimsVerificationError::InvalidIssuer(detail) => format!("its issuer (iss) is wrong: {detail}"),
            ClaimsVerificationError::Expired(_) => {
                let exp = token.time("exp").map(|t| format!(" at {t}")).unwrap_or_default();
                format!(
                    "it has expired{exp} (exp is more than a minute in the past); if the provider just issued it, \
                     check this machine's clock"
                )
            }
            ClaimsVerificationError::InvalidNonce(why) => why.clone(),
            other => other.to_string(),
        }
    }
}

impl Provider {
    /// Why the audience check failed: our client is not among them, or another one is that the context does not
    /// trust.
    fn explain_audience(&self, token: &Unverified) -> String {
        let ours = self.settings.client_id.as_str();
        let audiences: Vec<&str> = match token.claims.get("aud") {
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(many)) => many.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => return "it has no audience (aud) claim".into(),
        };
        match audiences.iter().find(|a| **a != ours) {
            _ if !audiences.contains(&ours) => format!(
                "its audience (aud) is {audiences:?}, which does not include this client {ours:?}: it was issued to \
                 another client (check the context's client_id)"
            ),
            Some(other) => format!(
                "its audience (aud) also names {other:?}, which this context does not trust: if that is pachd's \
                 client id, add the scope {AUDIENCE_SCOPE_PREFIX}{other} to the context"
            ),
            None => format!("its audience (aud) {audiences:?} was refused"),
        }
    }
}

/// An algorithm as JOSE names it (`RS256`).
fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{alg:?}"))
}

/// The JOSE header and claims of an ID token as sent, before any check: for the issuer's precise message, for
/// `nbf` (which the library does not model) once the signature holds, and for naming what failed.
struct Unverified {
    header: serde_json::Map<String, serde_json::Value>,
    claims: serde_json::Map<String, serde_json::Value>,
}

impl Unverified {
    fn parse(jwt: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
            return Err(Error::InvalidIdToken("it is not a JWT".into()));
        };
        let decode = |part: &str, what: &str| -> Result<serde_json::Map<String, serde_json::Value>, Error> {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| Error::InvalidIdToken(format!("its {what} is not base64url")))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| Error::InvalidIdToken(format!("its {what} is not a JSON object")))
        };
        Ok(Self { header: decode(header, "header")?, claims: decode(payload, "payload")? })
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(serde_json::Value::as_str)
    }

    /// A NumericDate claim (seconds since the epoch), to the second.
    fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        let value = self.claims.get(name)?;
        let secs = value.as_i64().or_else(|| value.as_f64().map(|f| f.floor() as i64))?;
        DateTime::from_timestamp(secs, 0)
    }
}

/// Fetches a key set and checks that it has keys.
async fn fetch_keys(http: &openidconnect::reqwest::Client, url: &str) -> Result<CoreJsonWebKeySet, Error> {
    let body = get(http, url).await?;
    let jwks: CoreJsonWebKeySet = serde_json::from_slice(&body)
        .map_err(|e| Error::BadResponse { url: url.to_owned(), reason: format!("not a JSON Web Key Set ({e})") })?;
    if jwks.keys().is_empty() {
        return Err(Error::BadResponse { url: url.to_owned(), reason: "the key set is empty".into() });
    }
    Ok(jwks)
}

/// The refresh token in a token-endpoint answer the library could not read.
fn salvage_refresh_token(body: &[u8]) -> Option<RefreshToken> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    answer.get("refresh_token")?.as_str().filter(|t| !t.is_empty()).map(|t| RefreshToken::new(t.to_owned()))
}

fn http_client(settings: &ProviderSettings) -> Result<HttpClient, Error> {
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
    let client = builder.build().map_err(|e| Error::Settings(format!("cannot set up HTTPS for the provider: {e}")))?;
    Ok(HttpClient::new(client))
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

/// Checks `iss` before the library's verifier does, so that a trailing-slash difference gets its precise message.
/// Discovery has already matched the provider's own name to the context's issuer, so a token naming another
/// issuer contradicts its provider: the advice is never to adopt the token's issuer (an attacker picks it).
fn check_issuer_claim(token: &Unverified, expected: &str) -> Result<(), Error> {
    let iss = match token.claims.get("iss").and_then(serde_json::Value::as_str) {
        None => return Err(Error::InvalidIdToken("it has no issuer (iss) claim".into())),
        Some(iss) if iss == expected => return Ok(()),
        Some(iss) => iss,
    };
    let message = if iss.trim_end_matches('/') == expected.trim_end_matches('/') {
        let which = if iss.ends_with('/') { "has a trailing slash that" } else { "lacks the trailing slash that" };
        format!(
            "its issuer (iss) {iss:?} {which} the provider's discovery document and the context ({expected:?}) \
             spell out: the provider names itself inconsistently (check its issuer setting); pachd compares iss \
             exactly and would refuse the token too"
        )
    } else {
        format!(
            "its issuer (iss) is {iss:?}, not {expected:?} as the provider's discovery document and the context \
             say: the token is not this provider's"
        )
    };
    Err(Error::InvalidIdToken(message))
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

/// A token-endpoint answer the library could not read. When the rest of it reads fine without the ID token, the ID
/// token is what is broken: a bad ID token (refused like a forged one), not an unusable answer.
fn unreadable_answer(url: &str, e: &dyn std::fmt::Display, body: &[u8]) -> Error {
    let without_id_token = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|mut answer| {
        answer.as_object_mut()?.remove("id_token")?.as_str()?;
        Some(answer)
    });
    if without_id_token.is_some_and(|rest| serde_json::from_value::<CoreTokenResponse>(rest).is_ok()) {
        return Error::InvalidIdToken(format!("it cannot be read as an ID token ({e})"));
    }
    Error::BadResponse { url: url.to_owned(), reason: format!("not an OAuth answer ({e})") }
}

/// Maps a failed token-endpoint request.
fn token_error<T>(url: &str, e: RequestTokenError<HttpError, openidconnect::StandardErrorResponse<T>>) -> Error
where
    T: openidconnect::ErrorResponseType + std::fmt::Display,
{
    match e {
        RequestTokenError::ServerResponse(resp) => {
            Error::Refused { error: resp.error().to_string(), description: resp.error_description().cloned() }
        }
        RequestTokenError::Request(e) => e.into_error(url),
        RequestTokenError::Parse(e, body) => unreadable_answer(url, &e, &body),
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
    fn an_unreadable_answer_blames_the_id_token_only_when_the_rest_of_it_reads() {
        let bad_id_token = br#"{"access_token":"a","token_type":"Bearer","refresh_token":"r2","id_token":"x.y.z"}"#;
        assert!(matches!(unreadable_answer("u", &"e", bad_id_token), Error::InvalidIdToken(_)));
        let no_access_token = br#"{"token_type":"Bearer","refresh_token":"r2","id_token":"x.y.z"}"#;
        assert!(matches!(unreadable_answer("u", &"e", no_access_token), Error::BadResponse { .. }));
        assert!(matches!(unreadable_answer("u", &"e", b"<html>"), Error::BadResponse { .. }));
        assert_eq!(salvage_refresh_token(no_access_token).unwrap().expose_secret(), "r2");
        assert!(salvage_refresh_token(br#"{"refresh_token":""}"#).is_none());
        assert!(salvage_refresh_token(b"<html>").is_none());
    }

    #[test]
    fn the_iss_claim_is_checked_with_the_precise_message() {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let jwt =
            format!("{}.{}.sig", enc(serde_json::json!({"alg":"RS256"})), enc(serde_json::json!({"iss":"https://a/"})));
        let token = Unverified::parse(&jwt).unwrap();
        assert!(check_issuer_claim(&token, "https://a/").is_ok());
        let err = check_issuer_claim(&token, "https://a").unwrap_err().to_string();
        assert!(err.contains("has a trailing slash that the provider's discovery document"), "{err}");
        let err = check_issuer_claim(&token, "https://b").unwrap_err().to_string();
        assert!(err.contains("is \"https://a/\", not \"https://b\"") && !err.contains("set issuer"), "{err}");
        assert!(Unverified::parse("garbage").is_err());
    }
}
