//! The RPC semantics of pachd-dev: pachd's checks, in pachd's order, with pachd's errors.
//!
//! Handlers are thin: each reads the caller's token, calls a method of [`AuthService`] that returns
//! `Result<_, AuthError>`, and [`AuthError`]'s conversion picks the gRPC code in one place. State lives in
//! [`AuthState`] (whether auth is active and a [`TokenTable`] of hashed tokens) and, for pachctl's login, in the
//! OIDC [`StateTable`] shared with the HTTP callback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info};

use super::oidc_state::{OidcClient, StateTable};
use crate::devstack::idtoken;
use crate::devstack::tokens::{self, ROOT_SUBJECT, TokenInfo, TokenTable};
use crate::proto::auth::api_server::Api;
use crate::proto::auth::{
    ActivateRequest, ActivateResponse, AuthenticateRequest, AuthenticateResponse, GetOidcLoginRequest,
    GetOidcLoginResponse, GetRobotTokenRequest, GetRobotTokenResponse, RevokeAuthTokenRequest, RevokeAuthTokenResponse,
    WhoAmIRequest, WhoAmIResponse,
};
use crate::secret::PachToken;

/// The metadata key pachd reads the caller's token from (`auth.ContextTokenKey`).
pub(super) const TOKEN_KEY: &str = "authn-token";

/// The subject prefixes pachd puts in front of user and robot names.
const USER_PREFIX: &str = "user:";
const ROBOT_PREFIX: &str = "robot:";

/// A failed auth call, named after pachd's error; `Display` is pachd's message and [`AuthError::code`] its code.
#[derive(Debug, thiserror::Error)]
pub(super) enum AuthError {
    #[error("the auth service is not activated")]
    NotActivated,
    #[error("the auth service is already activated")]
    AlreadyActivated,
    #[error("no authentication token (try logging in)")]
    NotSignedIn,
    #[error("multiple authentication token keys found in context")]
    MultipleTokens,
    #[error("provided auth token is corrupted or has expired (try logging in again)")]
    BadToken,
    #[error("token expiration is in the past")]
    ExpiredToken,
    /// pachd's `ErrNotAuthorized` for a cluster permission (the resource name is empty, hence `CLUSTER .`).
    #[error(
        "{subject} is not authorized to perform this operation - needs permissions [{permission}] on CLUSTER . \
         Run `pachctl auth roles-for-permission` to find roles that grant a given permission."
    )]
    NotAuthorized { subject: String, permission: &'static str },
    #[error("robot names cannot contain colons (':')")]
    RobotNameWithColon,
    #[error("unrecognized authentication mechanism (old pachd?)")]
    UnrecognizedMechanism,
    #[error("OIDC ID provider configuration not found")]
    OidcNotConfigured,
    /// pachd's `errAuthFailed`: the callback recorded a conversion error for the state.
    #[error("authorization failed")]
    OidcAuthFailed,
    /// pachd's `errTokenDeleted`: the state's TTL passed while Authenticate waited.
    #[error("error during authorization: OIDC state token expired")]
    OidcStateExpired,
    /// pachd-dev is stopping while Authenticate waited on an OIDC state (a real pachd's call would simply die
    /// with its connection; this says so instead).
    #[error("pachd-dev is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    IdToken(#[from] idtoken::Error),
}

impl AuthError {
    /// pachd's code: its sentinel errors carry one; everything else is a plain Go error, hence Unknown.
    pub(super) fn code(&self) -> Code {
        match self {
            Self::NotActivated | Self::AlreadyActivated => Code::Unimplemented,
            Self::NotSignedIn | Self::BadToken => Code::Unauthenticated,
            Self::ExpiredToken => Code::Internal,
            Self::ShuttingDown => Code::Unavailable,
            // pachyderm-auth.md §2 lists PermissionDenied for a missing permission.
            Self::NotAuthorized { .. } => Code::PermissionDenied,
            Self::MultipleTokens
            | Self::RobotNameWithColon
            | Self::UnrecognizedMechanism
            | Self::OidcNotConfigured
            | Self::OidcAuthFailed
            | Self::OidcStateExpired
            | Self::IdToken(_) => Code::Unknown,
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

/// What pachd keeps in its database, for one pachd-dev process.
#[derive(Debug, Default)]
struct AuthState {
    /// pachd checks for the cluster role binding that Activate writes; pachd-dev keeps the fact.
    active: bool,
    tokens: TokenTable,
}

impl AuthState {
    fn activate(&mut self, root: &PachToken) {
        self.tokens.insert(root, TokenInfo::forever(ROOT_SUBJECT.to_owned()));
        self.active = true;
    }

    fn ensure_active(&self) -> Result<(), AuthError> {
        if self.active { Ok(()) } else { Err(AuthError::NotActivated) }
    }

    /// pachd's `getAuthenticatedUser`: active, exactly one token, known, not expired, in that order.
    fn caller(&self, token: Result<Option<&str>, AuthError>, now: SystemTime) -> Result<TokenInfo, AuthError> {
        self.ensure_active()?;
        let token = token?.ok_or(AuthError::NotSignedIn)?;
        let info = self.tokens.lookup(token).ok_or(AuthError::BadToken)?;
        if info.is_expired(now) {
            return Err(AuthError::ExpiredToken);
        }
        Ok(info.clone())
    }
}

/// The `auth_v2.API` implementation. The state lock is a std mutex held only between awaits.
#[derive(Debug)]
pub(super) struct AuthService {
    state: Mutex<AuthState>,
    /// pachd's OIDC client; `None` without an issuer ("OIDC ID provider configuration not found").
    oidc: Option<Arc<OidcClient>>,
    /// The OIDC states of pachctl logins. Present even without an issuer, as pachd's etcd collection is.
    states: Arc<StateTable>,
    session_ttl: Duration,
}

/// The caller's raw token from `authn-token`: `None` when absent, an error when sent more than once.
fn token_of(metadata: &MetadataMap) -> Result<Option<&str>, AuthError> {
    let mut values = metadata.get_all(TOKEN_KEY).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::MultipleTokens);
    }
    // A value that is not visible ASCII cannot be a token pachd-dev issued; it then simply matches nothing.
    Ok(first.map(|v| v.to_str().unwrap_or("\u{fffd}")))
}

impl AuthService {
    /// A service with auth active from the start when `root` is given (pachd's `AUTH_ROOT_TOKEN`).
    pub(super) fn new(
        oidc: Option<Arc<OidcClient>>,
        states: Arc<StateTable>,
        root: Option<&PachToken>,
        session_ttl: Duration,
    ) -> Self {
        let mut state = AuthState::default();
        if let Some(root) = root {
            state.activate(root);
            info!("auth is active: the root token came from the configuration");
        }
        Self { state: Mutex::new(state), oidc, states, session_ttl }
    }

    /// The configured issuer, if any.
    pub(super) fn issuer(&self) -> Option<&str> {
        self.oidc.as_deref().map(|o| o.verifier.issuer())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock cannot leave the table half-written (every update is one insert or
        // remove), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn activate_auth(&self, requested_root: String) -> Result<PachToken, AuthError> {
        let mut state = self.lock();
        if state.active {
            return Err(AuthError::AlreadyActivated);
        }
        let root = if requested_root.is_empty() { tokens::new_token() } else { PachToken::new(requested_root) };
        state.activate(&root);
        info!("auth activated through the Activate RPC");
        Ok(root)
    }

    pub(super) fn caller_of(&self, metadata: &MetadataMap, now: SystemTime) -> Result<TokenInfo, AuthError> {
        self.lock().caller(token_of(metadata), now)
    }

    pub(super) fn issue_robot_token(
        &self,
        metadata: &MetadataMap,
        robot: &str,
        ttl_secs: i64,
        now: SystemTime,
    ) -> Result<PachToken, AuthError> {
        let mut state = self.lock();
        let caller = state.caller(token_of(metadata), now)?;
        if caller.subject != ROOT_SUBJECT {
            return Err(AuthError::NotAuthorized {
                subject: caller.subject,
                permission: "CLUSTER_AUTH_GET_ROBOT_TOKEN",
            });
        }
        let name = robot.strip_prefix(ROBOT_PREFIX).unwrap_or(robot);
        if name.contains(':') {
            return Err(AuthError::RobotNameWithColon);
        }
        let subject = format!("{ROBOT_PREFIX}{name}");
        let info = match u64::try_from(ttl_secs) {
            Ok(secs) if secs > 0 => TokenInfo::expiring(subject, now, Duration::from_secs(secs)),
            _ => TokenInfo::forever(subject),
        };
        let token = tokens::new_token();
        debug!(subject = %info.subject, expires = info.expiration.is_some(), "robot token issued");
        state.tokens.insert(&token, info);
        Ok(token)
    }

    pub(super) fn revoke(&self, metadata: &MetadataMap, token: &str, now: SystemTime) -> Result<i64, AuthError> {
        let mut state = self.lock();
        state.caller(token_of(metadata), now)?;
        Ok(state.tokens.revoke(token))
    }

    pub(super) async fn exchange(&self, req: &AuthenticateRequest, now: SystemTime) -> Result<PachToken, AuthError> {
        self.lock().ensure_active()?;
        if !req.oidc_state.is_empty() {
            return self.exchange_oidc_state(&req.oidc_state).await;
        }
        if req.id_token.is_empty() {
            return Err(AuthError::UnrecognizedMechanism);
        }
        let verifier = &self.oidc.as_deref().ok_or(AuthError::OidcNotConfigured)?.verifier;
        let verified = verifier.verify(&req.id_token, now).await?;
        // pachd: whole seconds until the ID token expires, capped at the session duration.
        let left = verified.expiry.duration_since(now).unwrap_or_default();
        let ttl = Duration::from_secs(left.as_secs().min(self.session_ttl.as_secs()));
        let info = TokenInfo::expiring(format!("{USER_PREFIX}{}", verified.email), now, ttl);
        let token = tokens::new_token();
        debug!(subject = %info.subject, ttl_secs = ttl.as_secs(), "session token issued for an ID token");
        self.lock().tokens.insert(&token, info);
        Ok(token)
    }

    /// `Authenticate{oidc_state}`: waits for the callback, then a session of exactly the session duration
    /// (pachd does not tie it to the ID token here). Dropping the future (the client went away) ends the wait.
    async fn exchange_oidc_state(&self, state: &str) -> Result<PachToken, AuthError> {
        let email = self.states.wait_for_email(state).await?;
        let info = TokenInfo::expiring(format!("{USER_PREFIX}{email}"), SystemTime::now(), self.session_ttl);
        let token = tokens::new_token();
        debug!(subject = %info.subject, ttl_secs = self.session_ttl.as_secs(), "session token issued for an OIDC login");
        self.lock().tokens.insert(&token, info);
        Ok(token)
    }

    /// `GetOIDCLogin`: needs an issuer, not an active auth service.
    pub(super) async fn oidc_login(&self) -> Result<GetOidcLoginResponse, AuthError> {
        let client = self.oidc.as_deref().ok_or(AuthError::OidcNotConfigured)?;
        let (login_url, state) = client.login_url(&self.states).await?;
        Ok(GetOidcLoginResponse { login_url, state })
    }
}

/// Logs the outcome of one call without its body, then hands the status to tonic.
fn respond<T>(method: &'static str, result: Result<T, AuthError>) -> Result<Response<T>, Status> {
    match result {
        Ok(body) => {
            debug!(method, "ok");
            Ok(Response::new(body))
        }
        Err(err) => {
            debug!(method, code = ?err.code(), error = %err, "refused");
            Err(err.into())
        }
    }
}

#[tonic::async_trait]
impl Api for AuthService {
    async fn activate(&self, request: Request<ActivateRequest>) -> Result<Response<ActivateResponse>, Status> {
        let root = self.activate_auth(request.into_inner().root_token);
        respond("Activate", root.map(|t| ActivateResponse { pach_token: t.expose_secret().to_owned() }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let token = self.exchange(request.get_ref(), SystemTime::now()).await;
        respond("Authenticate", token.map(|t| AuthenticateResponse { pach_token: t.expose_secret().to_owned() }))
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let info = self.caller_of(request.metadata(), SystemTime::now());
        respond(
            "WhoAmI",
            info.map(|i| WhoAmIResponse { username: i.subject, expiration: i.expiration.map(Into::into) }),
        )
    }

    async fn get_oidc_login(
        &self,
        _request: Request<GetOidcLoginRequest>,
    ) -> Result<Response<GetOidcLoginResponse>, Status> {
        respond("GetOIDCLogin", self.oidc_login().await)
    }

    async fn get_robot_token(
        &self,
        request: Request<GetRobotTokenRequest>,
    ) -> Result<Response<GetRobotTokenResponse>, Status> {
        let req = request.get_ref();
        let token = self.issue_robot_token(request.metadata(), &req.robot, req.ttl, SystemTime::now());
        respond("GetRobotToken", token.map(|t| GetRobotTokenResponse { token: t.expose_secret().to_owned() }))
    }

    async fn revoke_auth_token(
        &self,
        request: Request<RevokeAuthTokenRequest>,
    ) -> Result<Response<RevokeAuthTokenResponse>, Status> {
        let number = self.revoke(request.metadata(), &request.get_ref().token, SystemTime::now());
        respond("RevokeAuthToken", number.map(|number| RevokeAuthTokenResponse { number }))
    }
}
