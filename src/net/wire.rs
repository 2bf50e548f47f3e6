//! The helper's messages to and from the agent's types: settings, tokens, identities, and the OIDC and pachd
//! errors, each of which keeps its variant (the engine acts on it) and its message.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use zeroize::Zeroize;

use super::HelperError;
use crate::oidc::{self, ProviderSettings, Tokens};
use crate::pachd::{self, Identity};
use crate::proto::{
    self as proto_time,
    net_helper::{
        self as proto, oidc_failure::Kind as OidcKind, pachd_failure::Kind as PachdKind, reply::Outcome, request::Call,
    },
};
use crate::secret::{ClientSecret, IdToken, RefreshToken};

pub(super) fn settings(s: &ProviderSettings) -> proto::Settings {
    proto::Settings {
        issuer: s.issuer.clone(),
        issuer_url: s.issuer_url.clone(),
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.as_ref().map(|c| c.expose_secret().to_owned()),
        ca_file: s.ca_file.as_ref().map(|p| p.display().to_string()),
        scopes: s.scopes.clone(),
    }
}

pub(super) fn settings_from(mut s: proto::Settings) -> ProviderSettings {
    ProviderSettings {
        issuer: std::mem::take(&mut s.issuer),
        issuer_url: s.issuer_url.take(),
        client_id: std::mem::take(&mut s.client_id),
        client_secret: s.client_secret.take().map(ClientSecret::new),
        ca_file: s.ca_file.take().map(PathBuf::from),
        scopes: std::mem::take(&mut s.scopes),
    }
}

pub(super) fn tokens(mut t: proto::Tokens) -> Tokens {
    Tokens {
        id_token: IdToken::new(std::mem::take(&mut t.id_token)),
        refresh_token: t.refresh_token.take().map(RefreshToken::new),
        email: t.email.take(),
        subject: std::mem::take(&mut t.subject),
        expires_at: time_or_past(t.expires_at.as_ref()),
    }
}

pub(super) fn tokens_to(t: &Tokens) -> proto::Tokens {
    proto::Tokens {
        id_token: t.id_token.expose_secret().to_owned(),
        refresh_token: t.refresh_token.as_ref().map(|r| r.expose_secret().to_owned()),
        email: t.email.clone(),
        subject: t.subject.clone(),
        expires_at: Some(proto_time::timestamp(t.expires_at)),
    }
}

pub(super) fn identity(i: proto::Identity) -> Identity {
    Identity { username: i.username, expiration: i.expiration.map(|t| time_or_past(Some(&t))) }
}

pub(super) fn identity_to(i: Identity) -> proto::Identity {
    proto::Identity { username: i.username, expiration: i.expiration.map(proto_time::timestamp) }
}

/// An expiry as sent; a missing or impossible one is the distant past, which nothing treats as valid.
fn time_or_past(t: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    proto_time::time(t).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn oidc_failure(e: oidc::Error) -> proto::OidcFailure {
    let mut f = proto::OidcFailure::default();
    let kind = match e {
        oidc::Error::Unreachable { url, reason } => {
            (f.url, f.reason) = (url, reason);
            OidcKind::Unreachable
        }
        oidc::Error::IssuerMismatch(m) => {
            f.reason = m;
            OidcKind::IssuerMismatch
        }
        oidc::Error::BadResponse { url, reason } => {
            (f.url, f.reason) = (url, reason);
            OidcKind::BadResponse
        }
        oidc::Error::Refused { error, description } => {
            (f.error, f.description) = (error, description);
            OidcKind::Refused
        }
        oidc::Error::InvalidIdToken(m) => {
            f.reason = m;
            OidcKind::InvalidIdToken
        }
        oidc::Error::Unsupported(m) => {
            f.reason = m;
            OidcKind::Unsupported
        }
        oidc::Error::Settings(m) => {
            f.reason = m;
            OidcKind::Settings
        }
        oidc::Error::Listener(m) => {
            f.reason = m;
            OidcKind::Listener
        }
    };
    f.set_kind(kind);
    f
}

pub(super) fn oidc_error(f: proto::OidcFailure) -> oidc::Error {
    match f.kind() {
        OidcKind::Unreachable => oidc::Error::Unreachable { url: f.url, reason: f.reason },
        OidcKind::IssuerMismatch => oidc::Error::IssuerMismatch(f.reason),
        OidcKind::BadResponse => oidc::Error::BadResponse { url: f.url, reason: f.reason },
        OidcKind::Refused => oidc::Error::Refused { error: f.error, description: f.description },
        OidcKind::InvalidIdToken => oidc::Error::InvalidIdToken(f.reason),
        OidcKind::Unsupported => oidc::Error::Unsupported(f.reason),
        OidcKind::Settings => oidc::Error::Settings(f.reason),
        OidcKind::Listener => oidc::Error::Listener(f.reason),
    }
}

/// The error an OIDC call's answer stands for: the failure it carries, or an answer to another call.
pub(super) fn oidc_outcome_error(outcome: Outcome, settings: &ProviderSettings) -> oidc::Error {
    match outcome {
        Outcome::OidcFailure(f) => oidc_error(f),
        other => HelperError::mismatch(&other).for_provider(settings),
    }
}

pub(super) fn pachd_failure(e: pachd::Error) -> proto::PachdFailure {
    let mut f = proto::PachdFailure::default();
    let kind = match e {
        pachd::Error::Unreachable { address, reason } => {
            (f.address, f.reason) = (address, reason);
            PachdKind::Unreachable
        }
        pachd::Error::NotActivated { address } => {
            f.address = address;
            PachdKind::NotActivated
        }
        pachd::Error::TokenRejected { message } => {
            f.message = message;
            PachdKind::TokenRejected
        }
        pachd::Error::TokenExpired { message } => {
            f.message = message;
            PachdKind::TokenExpired
        }
        pachd::Error::Refused { code, message } => {
            (f.code, f.message) = (code as i32, message);
            PachdKind::Refused
        }
        pachd::Error::CaFile { path, reason } => {
            (f.path, f.reason) = (path, reason);
            PachdKind::CaFile
        }
    };
    f.set_kind(kind);
    f
}

pub(super) fn pachd_error(f: proto::PachdFailure) -> pachd::Error {
    match f.kind() {
        PachdKind::Unreachable => pachd::Error::Unreachable { address: f.address, reason: f.reason },
        PachdKind::NotActivated => pachd::Error::NotActivated { address: f.address },
        PachdKind::TokenRejected => pachd::Error::TokenRejected { message: f.message },
        PachdKind::TokenExpired => pachd::Error::TokenExpired { message: f.message },
        PachdKind::Refused => pachd::Error::Refused { code: tonic::Code::from(f.code), message: f.message },
        PachdKind::CaFile => pachd::Error::CaFile { path: f.path, reason: f.reason },
    }
}

/// What an answer is, for the message about an answer to another call.
pub(super) fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Discovered(_) => "a discovery",
        Outcome::Authorization(_) => "a login URL",
        Outcome::Verified(_) => "tokens",
        Outcome::Device(_) => "a device code",
        Outcome::Refreshed(_) => "a refresh",
        Outcome::Identity(_) => "an identity",
        Outcome::Traded(_) => "a pach token",
        Outcome::OidcLogin(_) => "a pachd login",
        Outcome::Revoked(_) => "a revocation",
        Outcome::OidcFailure(_) => "an identity provider's error",
        Outcome::PachdFailure(_) => "a pachd error",
    }
}

/// Zeroes the secrets a request still holds once it is encoded or used.
pub(super) fn wipe_request(request: &mut proto::Request) {
    fn provider(p: Option<&mut proto::Provider>) {
        if let Some(s) = p.and_then(|p| p.settings.as_mut()) {
            s.client_secret.zeroize();
        }
    }
    match &mut request.call {
        Some(Call::Discover(s)) => s.client_secret.zeroize(),
        Some(Call::AuthorizationUrl(a)) => provider(a.provider.as_mut()),
        Some(Call::ExchangeCode(x)) => {
            provider(x.provider.as_mut());
            x.code.zeroize();
            if let Some(a) = &mut x.authorization {
                wipe_authorization(a);
            }
        }
        Some(Call::StartDevice(p)) => provider(Some(p)),
        Some(Call::FinishDevice(f)) => {
            provider(f.provider.as_mut());
            if let Some(d) = &mut f.device {
                d.answer.zeroize();
            }
        }
        Some(Call::Refresh(r)) => {
            provider(r.provider.as_mut());
            r.refresh_token.zeroize();
        }
        Some(
            Call::WhoAmI(p) | Call::TradeIdToken(p) | Call::GetOidcLogin(p) | Call::TradeOidcState(p) | Call::Revoke(p),
        ) => p.secret.zeroize(),
        None => {}
    }
}

/// Zeroes the secrets a reply still holds once it is encoded.
pub(super) fn wipe_reply(reply: &mut proto::Reply) {
    fn tokens(t: Option<&mut proto::Tokens>) {
        if let Some(t) = t {
            t.id_token.zeroize();
            t.refresh_token.zeroize();
        }
    }
    match &mut reply.outcome {
        Some(Outcome::Authorization(a)) => wipe_authorization(a),
        Some(Outcome::Verified(v)) => tokens(v.tokens.as_mut()),
        Some(Outcome::Refreshed(r)) => r.refresh_token.zeroize(),
        Some(Outcome::Device(d)) => d.answer.zeroize(),
        Some(Outcome::Traded(t)) => t.pach_token.zeroize(),
        Some(Outcome::OidcLogin(l)) => l.state.zeroize(),
        _ => {}
    }
}

fn wipe_authorization(a: &mut proto::Authorization) {
    a.state.zeroize();
    a.nonce.zeroize();
    a.pkce_verifier.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc_round_trip(e: oidc::Error) -> oidc::Error {
        oidc_error(oidc_failure(e))
    }

    fn pachd_round_trip(e: pachd::Error) -> pachd::Error {
        pachd_error(pachd_failure(e))
    }

    #[test]
    fn every_identity_provider_error_crosses_with_its_kind_and_message() {
        let errors = [
            oidc::Error::Unreachable { url: "https://idp/token".into(), reason: "connection refused".into() },
            oidc::Error::IssuerMismatch("the issuer has a trailing slash".into()),
            oidc::Error::BadResponse { url: "https://idp/jwks".into(), reason: "not JSON".into() },
            oidc::Error::Refused { error: "invalid_grant".into(), description: Some("revoked".into()) },
            oidc::Error::Refused { error: "temporarily_unavailable".into(), description: None },
            oidc::Error::InvalidIdToken("its nonce is not this login's".into()),
            oidc::Error::Unsupported("no device flow".into()),
            oidc::Error::Settings("bad CA file".into()),
            oidc::Error::Listener("port 8085 is taken".into()),
        ];
        for e in errors {
            let crossed = oidc_round_trip(e.clone());
            assert_eq!(crossed.to_string(), e.to_string());
            // The engine decides on these: a dead refresh token ends renewals, a dead IdP is retried.
            assert_eq!(crossed.is_invalid_grant(), e.is_invalid_grant(), "{e}");
            assert_eq!(crossed.ends_renewal(), e.ends_renewal(), "{e}");
            assert_eq!(crossed.is_transient(), e.is_transient(), "{e}");
            assert_eq!(std::mem::discriminant(&crossed), std::mem::discriminant(&e), "{e}");
        }
    }

    #[test]
    fn every_pachd_error_crosses_with_its_kind_code_and_message() {
        let errors = [
            pachd::Error::Unreachable { address: "grpcs://pachd:443".into(), reason: "tls handshake".into() },
            pachd::Error::NotActivated { address: "grpc://pachd:30650".into() },
            pachd::Error::TokenRejected { message: "token not found".into() },
            pachd::Error::TokenExpired { message: "token expiration is in the past".into() },
            pachd::Error::Refused { code: tonic::Code::PermissionDenied, message: "not an admin".into() },
            pachd::Error::CaFile { path: "/etc/ca.pem".into(), reason: "no such file".into() },
        ];
        for e in errors {
            let crossed = pachd_round_trip(e.clone());
            assert_eq!(crossed.to_string(), e.to_string());
            assert_eq!(crossed.is_transient(), e.is_transient(), "{e}");
            assert_eq!(std::mem::discriminant(&crossed), std::mem::discriminant(&e), "{e}");
            if let (pachd::Error::Refused { code: a, .. }, pachd::Error::Refused { code: b, .. }) = (&crossed, &e) {
                assert_eq!(a, b, "pachd's code is kept");
            }
        }
    }

    #[test]
    fn tokens_and_identities_cross_intact() {
        let expires_at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let sent = Tokens {
            id_token: IdToken::new("eyJ.id.token".into()),
            refresh_token: Some(RefreshToken::new("rt-1".into())),
            email: Some("dev@example.com".into()),
            subject: "sub-1".into(),
            expires_at,
        };
        let got = tokens(tokens_to(&sent));
        assert_eq!(got.id_token.expose_secret(), "eyJ.id.token");
        assert_eq!(got.refresh_token.as_ref().map(RefreshToken::expose_secret), Some("rt-1"));
        assert_eq!(
            (got.email.as_deref(), got.subject.as_str(), got.expires_at),
            (Some("dev@example.com"), "sub-1", expires_at)
        );
        let without = tokens(tokens_to(&Tokens { refresh_token: None, email: None, ..sent }));
        assert!(without.refresh_token.is_none() && without.email.is_none(), "absent stays absent, not empty");

        let never = identity(identity_to(Identity { username: "robot:ci".into(), expiration: None }));
        assert_eq!(never, Identity { username: "robot:ci".into(), expiration: None }, "a token that never expires");
        // pachd's expiry to the nanosecond: a token is served until the instant pachd stops accepting it.
        let precise = expires_at + chrono::Duration::nanoseconds(123_456_789);
        let until = identity(identity_to(Identity { username: "user:a".into(), expiration: Some(precise) }));
        assert_eq!(until.expiration, Some(precise));
    }

    #[test]
    fn requests_and_replies_hold_no_secret_once_wiped_and_never_show_one() {
        use prost::Message as _;
        let secret = "s3cr3t-token-value";
        let mut request = proto::Request {
            call: Some(Call::Refresh(proto::Refresh {
                provider: Some(proto::Provider {
                    settings: Some(proto::Settings { client_secret: Some(secret.into()), ..Default::default() }),
                    ..Default::default()
                }),
                refresh_token: secret.into(),
            })),
        };
        assert!(!format!("{request:?}").contains(secret), "Debug shows no secret");
        wipe_request(&mut request);
        let bytes = request.encode_to_vec();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the wiped request holds no secret");

        let mut reply = proto::Reply {
            outcome: Some(Outcome::Traded(proto::Traded { pach_token: secret.into(), identity: None })),
        };
        assert!(!format!("{reply:?}").contains(secret), "Debug shows no secret");
        wipe_reply(&mut reply);
        let bytes = reply.encode_to_vec();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the wiped reply holds no secret");
    }
}
