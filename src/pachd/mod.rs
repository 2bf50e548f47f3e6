//! Client of pachd's auth API (`auth_v2.API`): trade an ID token for a pach token, ask who a token belongs to,
//! revoke a token.
//!
//! It owns the gRPC channels to pachd and turns pachd's status codes and message texts into [`Error`] variants
//! named by what the caller must do next (re-login, wait for pachd, fix the cluster). It stores nothing.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::config::PachdAddress;
use crate::proto::auth::{self, api_client::ApiClient};
use crate::secret::{IdToken, PachToken};

/// The metadata key pachd reads the token from (`constants.ContextTokenKey`).
pub const TOKEN_METADATA_KEY: &str = "authn-token";

/// How long to wait for a TCP/TLS connection to pachd; a laptop off the VPN should fail fast, not hang a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The budget of one short RPC (WhoAmI, Authenticate with an ID token, RevokeAuthToken).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Who a token belongs to, as pachd says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject, e.g. `user:alice@example.com`, `robot:ci`, `pach:root`.
    pub username: String,
    /// When the token stops working; `None` for tokens that never expire.
    pub expiration: Option<DateTime<Utc>>,
}

/// The state of a pachd-mediated login: whoever holds it can collect the session, so it is kept secret.
pub type OidcState = crate::secret::Secret<OidcStateKind>;

/// Marker for [`OidcState`].
pub enum OidcStateKind {}
impl crate::secret::SecretKind for OidcStateKind {
    const NAME: &'static str = "OidcState";
}

/// A started pachd-mediated login.
#[derive(Debug)]
pub struct OidcLogin {
    /// Where the user's browser goes.
    pub login_url: String,
    /// What `Authenticate{oidc_state}` waits on.
    pub state: OidcState,
}

/// What went wrong talking to pachd, named by what happens next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// pachd could not be reached (down, wrong address, network, TLS handshake); try again later.
    #[error("pachd at {address} is unreachable: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// The transport's reason.
        reason: String,
    },
    /// The cluster has auth switched off.
    #[error("auth is not activated on pachd at {address}: activate it (pachctl auth activate) or check the address")]
    NotActivated {
        /// The address.
        address: String,
    },
    /// pachd does not know the token (never issued, revoked, or garbage-collected): log in again.
    #[error("pachd no longer accepts this token (revoked or expired): {message}")]
    TokenRejected {
        /// pachd's message.
        message: String,
    },
    /// The token is known but past its expiration: log in again.
    #[error("the session has expired at pachd: {message}")]
    TokenExpired {
        /// pachd's message.
        message: String,
    },
    /// pachd refused the request for another reason (e.g. an ID token that fails verification).
    #[error("pachd refused the request: {message}")]
    Refused {
        /// The gRPC code pachd sent.
        code: Code,
        /// pachd's message, verbatim.
        message: String,
    },
    /// The context's CA file cannot be used.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether the failure is transient (retrying later may succeed) rather than a verdict on the token.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    fn from_status(status: &Status, address: &str) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                let reason = if message.is_empty() { format!("{:?}", status.code()) } else { message };
                Error::Unreachable { address: address.to_owned(), reason }
            }
            Code::Unimplemented if message.contains("not activated") => {
                Error::NotActivated { address: address.to_owned() }
            }
            Code::Unauthenticated => Error::TokenRejected { message },
            Code::Internal if message.contains("token expiration is in the past") => Error::TokenExpired { message },
            code => Error::Refused { code, message },
        }
    }
}

/// A lazily connected client of one pachd. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct PachdClient {
    address: String,
    api: ApiClient<Channel>,
}

impl PachdClient {
    /// Prepares a client for `address`; nothing is dialled until the first call.
    ///
    /// # Errors
    /// [`Error::CaFile`] when the CA file cannot be read, [`Error::Unreachable`] when the address is unusable.
    pub fn new(address: &PachdAddress, ca_file: Option<&Path>) -> Result<Self, Error> {
        let shown = address.to_string();
        let unusable =
            |e: tonic::transport::Error| Error::Unreachable { address: shown.clone(), reason: e.to_string() };
        let mut endpoint = Endpoint::from_shared(address.endpoint_uri())
            .map_err(unusable)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if address.tls {
            let mut tls = ClientTlsConfig::new().with_native_roots().domain_name(address.host.clone());
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::CaFile { path: path.display().to_string(), reason: e.to_string() })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(unusable)?;
        }
        Ok(Self { address: shown, api: ApiClient::new(endpoint.connect_lazy()) })
    }

    /// The address this client dials, in canonical form.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Who `token` belongs to and when it expires.
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::TokenRejected`] and [`Error::TokenExpired`] mean the session is over.
    pub async fn who_am_i(&self, token: &PachToken) -> Result<Identity, Error> {
        let req = with_token(auth::WhoAmIRequest {}, token)?;
        let resp = self.api.clone().who_am_i(req).await.map_err(|s| Error::from_status(&s, &self.address))?;
        let resp = resp.into_inner();
        let expiration =
            resp.expiration.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32));
        Ok(Identity { username: resp.username, expiration })
    }

    /// Trades an OIDC ID token for a pach token (`Authenticate{id_token}`).
    ///
    /// # Errors
    /// [`Error::Refused`] with pachd's verification message when the ID token is not accepted.
    pub async fn authenticate_id_token(&self, id_token: &IdToken) -> Result<PachToken, Error> {
        let mut req = Request::new(auth::AuthenticateRequest {
            oidc_state: String::new(),
            id_token: id_token.expose_secret().to_owned(),
        });
        req.set_timeout(CALL_TIMEOUT);
        let resp = self.api.clone().authenticate(req).await.map_err(|s| Error::from_status(&s, &self.address))?;
        let token = PachToken::new(resp.into_inner().pach_token);
        if token.is_empty() {
            return Err(Error::Refused { code: Code::Internal, message: "pachd returned an empty token".into() });
        }
        Ok(token)
    }

    /// Starts pachctl's login: pachd creates a 3-minute state and returns the provider URL for the browser.
    ///
    /// # Errors
    /// [`Error::Refused`] when pachd has no OIDC provider configured, transport errors.
    pub async fn get_oidc_login(&self) -> Result<OidcLogin, Error> {
        let mut req = Request::new(auth::GetOidcLoginRequest {});
        req.set_timeout(CALL_TIMEOUT);
        let resp = self.api.clone().get_oidc_login(req).await.map_err(|s| Error::from_status(&s, &self.address))?;
        let resp = resp.into_inner();
        Ok(OidcLogin { login_url: resp.login_url, state: OidcState::new(resp.state) })
    }

    /// Waits until pachd's own callback has completed the login for `state`, and returns the session token.
    /// pachd blocks this call until then (or until the state expires); dropping the future cancels it.
    ///
    /// # Errors
    /// [`Error::Refused`] with pachd's message ("authorization failed", "OIDC state token expired").
    pub async fn authenticate_oidc_state(&self, state: &OidcState) -> Result<PachToken, Error> {
        let req = Request::new(auth::AuthenticateRequest {
            oidc_state: state.expose_secret().to_owned(),
            id_token: String::new(),
        });
        let resp = self.api.clone().authenticate(req).await.map_err(|s| Error::from_status(&s, &self.address))?;
        let token = PachToken::new(resp.into_inner().pach_token);
        if token.is_empty() {
            return Err(Error::Refused { code: Code::Internal, message: "pachd returned an empty token".into() });
        }
        Ok(token)
    }

    /// Revokes `token` at pachd, authenticating with the token itself. Returns how many tokens pachd deleted.
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::TokenRejected`] / [`Error::TokenExpired`] mean there was nothing left to revoke.
    pub async fn revoke(&self, token: &PachToken) -> Result<i64, Error> {
        let req = with_token(auth::RevokeAuthTokenRequest { token: token.expose_secret().to_owned() }, token)?;
        let resp = self.api.clone().revoke_auth_token(req).await.map_err(|s| Error::from_status(&s, &self.address))?;
        Ok(resp.into_inner().number)
    }
}

fn with_token<T>(message: T, token: &PachToken) -> Result<Request<T>, Error> {
    let mut req = Request::new(message);
    req.set_timeout(CALL_TIMEOUT);
    let value: MetadataValue<_> = token.expose_secret().parse().map_err(|_| Error::Refused {
        code: Code::InvalidArgument,
        message: "the token contains characters that cannot be sent to pachd (check what was pasted)".into(),
    })?;
    req.metadata_mut().insert(TOKEN_METADATA_KEY, value);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pachd_statuses_map_to_what_the_user_must_do() {
        let addr = "grpc://h:30650";
        let cases = [
            (Status::unavailable("connection refused"), "Unreachable"),
            (Status::unimplemented("the auth service is not activated"), "NotActivated"),
            (
                Status::unauthenticated("provided auth token is corrupted or has expired (try logging in again)"),
                "TokenRejected",
            ),
            (Status::unauthenticated("no authentication token (try logging in)"), "TokenRejected"),
            (Status::internal("token expiration is in the past"), "TokenExpired"),
            (Status::unknown("could not verify token: oidc: expected audience \"pachd\" got [\"x\"]"), "Refused"),
        ];
        for (status, want) in cases {
            let got = format!("{:?}", Error::from_status(&status, addr));
            assert!(got.starts_with(want), "{status:?} -> {got}");
        }
        assert!(Error::from_status(&Status::unavailable("x"), addr).is_transient());
        assert!(!Error::from_status(&Status::unauthenticated("x"), addr).is_transient());
    }

    #[test]
    fn a_refused_id_token_keeps_pachds_message_verbatim() {
        let msg = "could not verify token: oidc: id token issued by a different provider, expected \"a\" got \"b\"";
        let err = Error::from_status(&Status::unknown(msg), "grpc://h:1");
        assert!(err.to_string().ends_with(msg), "{err}");
    }
}
