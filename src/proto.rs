//! Generated gRPC code for the pachagent API (`pachagent.v1`) and the subset of pachd's `auth_v2` API we use.
//!
//! Messages that carry tokens are generated without `Debug` (see `build.rs`); their hand-written `Debug` here
//! redacts the token so that a stray `?request` can never leak one.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

use std::fmt;

use chrono::{DateTime, Utc};

/// The pachagent API served on the agent's socket.
pub mod agent {
    tonic::include_proto!("pachagent.v1");
}

/// pachd's auth API (`auth_v2.API`), wire-compatible with Pachyderm 2.x.
pub mod auth {
    tonic::include_proto!("auth_v2");
}

/// Between the agent and its keyring helper (`store::helper`).
pub mod keyring_helper {
    tonic::include_proto!("pachagent.keyring.v1");
}

/// Between the agent and its network helper (`net`).
pub mod net_helper {
    tonic::include_proto!("pachagent.net.v1");
}

/// A protobuf timestamp for a UTC time, to the nanosecond.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A UTC time from a protobuf timestamp; `None` when it is unset or out of chrono's range (nanoseconds outside
/// 0..1e9 count as none).
pub fn time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000).unwrap_or(0);
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// Shows whether a secret field is set without showing it.
fn redacted(value: &str) -> &'static str {
    if value.is_empty() { "" } else { "[redacted]" }
}

impl fmt::Debug for agent::LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("context", &self.context)
            .field("method", &self.method)
            .field("pach_token", &redacted(&self.pach_token))
            .field("id_token", &redacted(&self.id_token))
            .field("force", &self.force)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("browser_available", &self.browser_available)
            .finish()
    }
}

impl fmt::Debug for agent::GetTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetTokenResponse")
            .field("token", &redacted(&self.token))
            .field("expiration", &self.expiration)
            .field("username", &self.username)
            .field("context", &self.context)
            .field("pachd_address", &self.pachd_address)
            .finish()
    }
}

macro_rules! redacting_debug {
    ($ty:ty, $name:literal, $($field:ident),+) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name)$(.field(stringify!($field), &redacted(&self.$field)))+.finish()
            }
        }
    };
}

redacting_debug!(auth::ActivateRequest, "ActivateRequest", root_token);
redacting_debug!(auth::ActivateResponse, "ActivateResponse", pach_token);
redacting_debug!(auth::AuthenticateRequest, "AuthenticateRequest", oidc_state, id_token);
redacting_debug!(auth::AuthenticateResponse, "AuthenticateResponse", pach_token);
redacting_debug!(auth::RevokeAuthTokenRequest, "RevokeAuthTokenRequest", token);
redacting_debug!(auth::GetRobotTokenResponse, "GetRobotTokenResponse", token);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_carrying_messages_redact_their_debug_output() {
        let req =
            agent::LoginRequest { pach_token: "s3cr3t-token".into(), context: "prod".into(), ..Default::default() };
        let resp = agent::GetTokenResponse { token: "s3cr3t-token".into(), ..Default::default() };
        let auth = auth::AuthenticateRequest { id_token: "s3cr3t-token".into(), oidc_state: String::new() };
        let shown = format!("{req:?} {resp:?} {auth:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("prod") && shown.contains("[redacted]"), "{shown}");
    }
}

impl fmt::Debug for keyring_helper::Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Set").field("account", &self.account).field("secret", &"[redacted]").finish()
    }
}

impl fmt::Debug for keyring_helper::Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found").field("secret", &self.secret.as_ref().map(|_| "[redacted]")).finish()
    }
}

/// The network helper's messages show only their names: most carry a token, an ID token, a refresh token or a
/// client secret somewhere.
macro_rules! opaque_debug {
    ($($message:ident),* $(,)?) => {
        $(impl fmt::Debug for net_helper::$message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($message), " { .. }"))
            }
        })*
    };
}

opaque_debug!(
    Request,
    Settings,
    Provider,
    AuthorizationUrl,
    Authorization,
    ExchangeCode,
    Device,
    FinishDevice,
    Refresh,
    Pachd,
    Reply,
    Discovered,
    Tokens,
    Verified,
    Refreshed,
    Identity,
    Traded,
    OidcLogin,
    OidcFailure,
    PachdFailure,
);
