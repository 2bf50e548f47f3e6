//! The agent as an OpenID Connect client: discovery, the authorization-code flow with PKCE on a loopback
//! redirect, the device authorization grant, refresh, and ID-token verification.
//!
//! It owns the HTTP client used to talk to the provider (redirects off, timeouts on, the user's proxy settings
//! and an optional private CA) and turns provider failures into [`Error`] variants that say what to fix. It
//! stores nothing and knows nothing of pachd or gRPC. The loopback listener is in [`callback`].

pub mod callback;
mod http;
mod provider;

use std::time::Duration;

pub use self::provider::{AuthorizationRequest, DeviceAuthorization, Provider, ProviderSettings, Refreshed, Tokens};

/// How long to wait for a TCP/TLS connection to the provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The budget of one request to the provider (discovery, JWKS, token exchange).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest answer read from the provider (discovery document, key set, token, device and refresh
/// answers). Real ones are a few KiB (a large key set with many certificates stays well under 100 KiB); a
/// provider sending more is broken or hostile, and the agent must not hold it in memory.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What went wrong with the identity provider, named by what the user must do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The provider could not be reached (network, DNS, TLS, 5xx); trying later may work.
    #[error("the identity provider at {url} is unreachable: {reason}")]
    Unreachable {
        /// What was requested.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The provider's discovery document names another issuer than the context (the Auth0 trailing slash, or an
    /// in-cluster Dex host).
    #[error("{0}")]
    IssuerMismatch(String),
    /// The provider answered something that is not a usable discovery document, key set or token response.
    #[error("the identity provider sent an unusable answer from {url}: {reason}")]
    BadResponse {
        /// What was requested.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The provider refused (e.g. `access_denied` when the user cancelled, `invalid_grant` for a revoked
    /// refresh token, `invalid_client` for a wrong client id or secret).
    #[error("the identity provider refused: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        /// The OAuth error code.
        error: String,
        /// The provider's explanation.
        description: Option<String>,
    },
    /// The ID token failed a check; the message names the check.
    #[error("the ID token was rejected: {0}")]
    InvalidIdToken(String),
    /// The provider does not offer what the login needs.
    #[error("{0}")]
    Unsupported(String),
    /// The context's provider settings are unusable (bad URL, unreadable CA file).
    #[error("{0}")]
    Settings(String),
    /// The loopback listener for the redirect could not be opened.
    #[error("{0}")]
    Listener(String),
}

impl Error {
    /// A refresh token the provider will never accept again: the user must log in.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Error::Refused { error, .. } if error == "invalid_grant")
    }

    /// A refusal that retrying cannot change: the refresh token is dead (`invalid_grant`) or the client is not
    /// (or no longer) allowed (`invalid_client`, `unauthorized_client`, `access_denied`). Errors such as
    /// `temporarily_unavailable` or `server_error` are worth a retry.
    pub fn is_refusal_for_good(&self) -> bool {
        matches!(self, Error::Refused { error, .. }
            if matches!(error.as_str(), "invalid_grant" | "invalid_client" | "unauthorized_client" | "access_denied"))
    }

    /// Whether renewing again cannot help: a refusal for good (see [`Error::is_refusal_for_good`]), or an ID token
    /// that failed a check. A provider that hands out such tokens is misconfigured, or someone is tampering with
    /// its answers; neither passes by itself, and retrying would only fetch more of them.
    pub fn ends_renewal(&self) -> bool {
        self.is_refusal_for_good() || matches!(self, Error::InvalidIdToken(_))
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}
