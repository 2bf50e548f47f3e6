//! The values the engine hands to the API layer, and its error type.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config;
use crate::pachd;
use crate::secret::PachToken;
use crate::store;

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No session.
    LoggedOut,
    /// A usable session.
    Active,
    /// A usable session being renewed.
    Refreshing,
    /// The session cannot be renewed or was refused by pachd: the user must log in.
    LoginRequired,
    /// The session's token is past its expiration.
    Expired,
}

/// How a session was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMethod {
    /// A Pachyderm token handed to the agent.
    PachToken,
    /// An ID token handed to the agent and traded with pachd.
    IdToken,
    /// The agent's own OIDC authorization-code login.
    Oidc,
    /// The OIDC device flow.
    Device,
    /// pachctl's pachd-mediated flow.
    Pachd,
}

impl SessionMethod {
    /// The name stored in the keyring record and shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMethod::PachToken => "pach-token",
            SessionMethod::IdToken => "id-token",
            SessionMethod::Oidc => "oidc",
            SessionMethod::Device => "device",
            SessionMethod::Pachd => "pachd",
        }
    }

    /// Reads a stored name; an unknown one (a newer agent's) is treated as a handed-in token, which the engine
    /// never tries to renew.
    pub fn parse(s: &str) -> Self {
        match s {
            "id-token" => SessionMethod::IdToken,
            "oidc" => SessionMethod::Oidc,
            "device" => SessionMethod::Device,
            "pachd" => SessionMethod::Pachd,
            _ => SessionMethod::PachToken,
        }
    }
}

/// A transition of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A login completed.
    LoggedIn,
    /// The session was renewed.
    Refreshed,
    /// The session ends soon and cannot be renewed.
    ExpiringSoon,
    /// The session ended.
    Expired,
    /// The user must log in again.
    LoginRequired,
    /// A renewal attempt failed; the agent retries.
    RefreshFailed,
    /// The user logged out.
    LoggedOut,
}

/// One session event, as `Watch` streams it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The context.
    pub context: String,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The session's expiration after the event.
    pub expiration: Option<DateTime<Utc>>,
    /// The session's user.
    pub username: String,
    /// A human explanation (never a secret).
    pub detail: String,
}

/// A context's session as `status` shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The context.
    pub context: String,
    /// Whether it is the active context.
    pub active: bool,
    /// The state.
    pub state: SessionState,
    /// The user (empty when logged out).
    pub username: String,
    /// When the token expires.
    pub expiration: Option<DateTime<Utc>>,
    /// When the next renewal is planned.
    pub refresh_at: Option<DateTime<Utc>>,
    /// How the session was obtained.
    pub method: Option<SessionMethod>,
    /// The secret store's backend name.
    pub store_backend: &'static str,
    /// pachd's address.
    pub pachd_address: String,
    /// The OIDC issuer, when there is one.
    pub issuer: Option<String>,
    /// The last problem seen with this session.
    pub last_error: Option<String>,
}

/// The secret store's health.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    /// Backend name.
    pub backend: &'static str,
    /// Whether the last operation worked.
    pub available: bool,
    /// Whether stored sessions survive a reboot.
    pub persistent: bool,
    /// The error, or a description of the store.
    pub detail: String,
}

/// The answer to "who am I".
#[derive(Debug, Clone)]
pub struct WhoAmI {
    /// The context.
    pub context: String,
    /// pachd's subject for the session.
    pub username: String,
    /// Expiration; `None` = never.
    pub expiration: Option<DateTime<Utc>>,
    /// pachd's address.
    pub pachd_address: String,
}

/// A token handed to a caller.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The context.
    pub context: String,
    /// The token.
    pub token: PachToken,
    /// Its owner.
    pub username: String,
    /// Its expiration; `None` = never.
    pub expiration: Option<DateTime<Utc>>,
    /// pachd's address.
    pub pachd_address: String,
    /// The validity the grant guarantees (what was asked, or less when fitted to the session's lifetime).
    pub min_valid: Duration,
    /// The context's CA file for pachd, when it has one.
    pub pachd_ca_file: Option<std::path::PathBuf>,
}

/// A completed login.
#[derive(Debug, Clone)]
pub struct LoginDone {
    /// The context.
    pub context: String,
    /// Who logged in.
    pub username: String,
    /// Session expiration.
    pub expiration: Option<DateTime<Utc>>,
    /// How.
    pub method: SessionMethod,
    /// A valid session already existed; nothing new was done.
    pub already_logged_in: bool,
}

/// What a logout did for one context.
#[derive(Debug, Clone)]
pub struct LogoutOutcome {
    /// The context.
    pub context: String,
    /// A session (or a stored entry) existed.
    pub was_logged_in: bool,
    /// pachd revoked the current token.
    pub revoked: bool,
    /// How many of the session's tokens pachd revoked: the current one and those renewals replaced that were
    /// handed out and had not expired yet.
    pub revoked_tokens: u32,
    /// How many stay valid because pachd could not be asked.
    pub unrevoked_tokens: u32,
    /// Why a token was not revoked.
    pub detail: Option<String>,
}

/// Who is calling, from the socket's peer credentials; used for the audit trail of token hand-outs.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid, when the platform tells it.
    pub pid: Option<i32>,
    /// The peer's executable, when it can be read.
    pub exe: Option<Arc<str>>,
    /// Whether this is the first token handed out on the caller's connection. Every hand-out is logged; the
    /// first of each connection at info, later ones at debug, so that a client asking in a loop over one
    /// connection does not write a log line per call.
    pub first_on_connection: bool,
}

/// Why an engine operation failed. Each message names the context and the command to run next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem (unknown context, no active context, unreadable file).
    #[error(transparent)]
    Config(config::Error),
    /// No session for the context.
    #[error("not logged in to {context:?}: run pachagent login --context {context}")]
    NotLoggedIn {
        /// The context.
        context: String,
    },
    /// The session was refused by pachd or cannot be renewed.
    #[error("the session for {context:?} needs a new login: run pachagent login --context {context}")]
    LoginRequired {
        /// The context.
        context: String,
    },
    /// The session's token has expired.
    #[error("the session for {context:?} has expired: run pachagent login --context {context}")]
    Expired {
        /// The context.
        context: String,
    },
    /// The session ends before the validity the caller asked for.
    #[error(
        "the session for {context:?} is valid for {} more, less than the {} asked for: run pachagent login --context {context}",
        humantime::format_duration(Duration::from_secs(left.as_secs())),
        humantime::format_duration(*wanted)
    )]
    TooShort {
        /// The context.
        context: String,
        /// Validity left.
        left: Duration,
        /// Validity asked.
        wanted: Duration,
    },
    /// The validity asked for is more than any token of this session lives: the identity provider (or pachd's
    /// session cap) issues shorter ones, so neither a renewal nor a new login can give it.
    #[error(
        "tokens for {context:?} live {}, less than the {} asked for: the identity provider issues tokens that short \
         (or pachd caps sessions there), so a new login will not help; ask for less (e.g. --min-valid {})",
        humantime::format_duration(Duration::from_secs(lifetime.as_secs())),
        humantime::format_duration(*wanted),
        humantime::format_duration(Duration::from_secs((lifetime.as_secs() / 2).max(1)))
    )]
    BeyondLifetime {
        /// The context.
        context: String,
        /// How long the session's tokens live.
        lifetime: Duration,
        /// Validity asked.
        wanted: Duration,
    },
    /// pachd refused what the user handed in (a token it does not know, an ID token that fails its checks).
    #[error("pachd refused the login to {context:?}: {message}")]
    Rejected {
        /// The context.
        context: String,
        /// pachd's message, verbatim.
        message: String,
    },
    /// pachd could not be used.
    #[error("{source} (context {context:?}): run pachagent doctor --context {context} to check the setup")]
    Pachd {
        /// The context.
        context: String,
        /// The cause.
        source: pachd::Error,
    },
    /// The secret store failed.
    #[error("{source} (context {context:?})")]
    Store {
        /// The context.
        context: String,
        /// The cause.
        source: store::Error,
    },
    /// The logout revoked (or tried to revoke) the token and forgot the session, but the keyring entry could
    /// not be deleted yet.
    #[error(
        "logged out of {context:?} only partly: {}the agent forgot the session, but its keyring entry could not \
         be deleted ({source}); the agent deletes it once the keyring answers again, or run pachagent logout \
         --context {context} after fixing the keyring",
        if *revoked { "the token was revoked at pachd and " } else { "" }
    )]
    LogoutIncomplete {
        /// The context.
        context: String,
        /// Whether pachd revoked the token.
        revoked: bool,
        /// Why the entry remains.
        source: store::Error,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request asks for something this agent cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The session's renewal ended for good (a dead refresh token, an ID token that failed a check): only a
    /// login helps. The session's token is still served while it lasts.
    #[error("the session for {context:?} can no longer be renewed ({source}): run pachagent login --context {context}")]
    RenewalRefused {
        /// The context.
        context: String,
        /// Why the renewal ended.
        source: crate::oidc::Error,
    },
    /// The identity provider failed or refused.
    #[error("{source} (context {context:?}): run pachagent doctor --context {context} to check the setup")]
    Oidc {
        /// The context.
        context: String,
        /// The cause.
        source: crate::oidc::Error,
    },
    /// The user did not finish the login in time.
    #[error("the login to {context:?} timed out after {}: run pachagent login --context {context} again (--timeout sets the wait)", humantime::format_duration(*after))]
    LoginTimedOut {
        /// The context.
        context: String,
        /// How long it waited.
        after: Duration,
    },
    /// Every caller left before the login finished.
    #[error("the login to {context:?} was cancelled")]
    LoginCancelled {
        /// The context.
        context: String,
    },
}
