//! The on-store format of one context's session: a small versioned JSON record.
//!
//! Owns [`StoredSession`] and its encoding, so that every backend stores exactly the same bytes and a record
//! written through one store reads back through any other. The record never holds the ID token (large, and
//! useless once traded): the kernel keyutils quota for an ordinary user is 20,000 bytes for all keys. It holds
//! the refresh token of an OIDC session, since that is what renews the session after a restart, and the pach
//! tokens a renewal replaced while someone may still hold them, so that a logout after a restart still revokes
//! them.
//! Knows nothing of where the bytes go.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Error;
use crate::secret::{PachToken, RefreshToken};

/// The record version this build writes, and the highest it reads.
const VERSION: u32 = 1;

/// What one context's keyring entry holds. Stored as `{"v":1,...}`; never the ID token.
///
/// `Debug` is derived and safe: [`PachToken`] prints as `PachToken([redacted])`.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// The Pachyderm session token sent as `authn-token`.
    pub pach_token: PachToken,
    /// Who pachd says the token belongs to (e.g. `user:alice@example.com`).
    pub username: String,
    /// When the token expires, to the millisecond; `None` means it never expires.
    pub expiration: Option<DateTime<Utc>>,
    /// How the session was obtained: `pach-token`, `id-token`, `oidc`, `device` or `pachd`.
    pub method: String,
    /// The pachd the token was issued by.
    pub pachd_address: String,
    /// The OIDC issuer, when the session came from an OIDC login.
    pub issuer: Option<String>,
    /// The provider's refresh token, when the session can be renewed without the user.
    pub refresh_token: Option<RefreshToken>,
    /// The ID token's `sub` of an OIDC session: renewals must keep it (OpenID Connect Core 12.2).
    pub subject: Option<String>,
    /// When this record was written, in unix seconds.
    pub stored_at: i64,
    /// Tokens of this session that renewals replaced but that were handed out and have not expired yet: pachd
    /// still accepts them, and only a logout revokes them early.
    pub retired: Vec<RetiredToken>,
}

/// A pach token a renewal replaced, kept until it expires by itself so that a logout can revoke it.
///
/// `Debug` is derived and safe: [`PachToken`] prints as `PachToken([redacted])`.
#[derive(Debug, Clone)]
pub struct RetiredToken {
    /// The token.
    pub token: PachToken,
    /// When pachd stops accepting it by itself; `None` means never.
    pub expiration: Option<DateTime<Utc>>,
}

/// A retired token as written.
#[derive(Serialize)]
struct RetiredOut<'a> {
    token: &'a str,
    expiration_ms: Option<i64>,
}

/// A retired token as read.
#[derive(Deserialize)]
struct RetiredIn {
    token: String,
    expiration_ms: Option<i64>,
}

/// Borrowing view of a record for writing; the token is only ever borrowed, never copied.
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    pach_token: &'a str,
    username: &'a str,
    /// Whole seconds, rounded down: what builds before `expiration_ms` read, and they may only ever think the
    /// token ends earlier than it does.
    expiration: Option<i64>,
    /// The same instant in milliseconds. Whole seconds alone lost up to a second: a token ending at :59.999 came
    /// back as ending at :59, so an agent restarted in that last second took a live session for an expired one.
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_ms: Option<i64>,
    method: &'a str,
    pachd_address: &'a str,
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    stored_at: i64,
    /// Absent when empty; builds before it ignore it (and so forget those tokens, which expire by themselves).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retired: Vec<RetiredOut<'a>>,
}

/// Version 1 as read. Unknown fields are ignored on purpose: a later pachagent may add fields without bumping
/// `v`, and this build must still read what it understands.
#[derive(Deserialize)]
struct RecordV1 {
    pach_token: String,
    username: String,
    expiration: Option<i64>,
    /// Absent from records written before it existed; then `expiration` is all there is.
    #[serde(default)]
    expiration_ms: Option<i64>,
    method: String,
    pachd_address: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    stored_at: i64,
    #[serde(default)]
    retired: Vec<RetiredIn>,
}

/// Reads only the version, whatever else the record holds.
#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u64>,
}

/// Encodes a session as the bytes a backend stores.
///
/// # Errors
///
/// [`Error::Corrupt`] if serialisation fails, which only an out-of-memory condition could cause.
pub(super) fn encode(context: &str, session: &StoredSession) -> Result<Zeroizing<Vec<u8>>, Error> {
    let out = RecordOut {
        v: VERSION,
        pach_token: session.pach_token.expose_secret(),
        username: &session.username,
        expiration: session.expiration.map(|e| e.timestamp()),
        expiration_ms: session.expiration.map(|e| e.timestamp_millis()),
        method: &session.method,
        pachd_address: &session.pachd_address,
        issuer: session.issuer.as_deref(),
        refresh_token: session.refresh_token.as_ref().map(|t| t.expose_secret()),
        subject: session.subject.as_deref(),
        stored_at: session.stored_at,
        retired: session
            .retired
            .iter()
            .map(|r| RetiredOut {
                token: r.token.expose_secret(),
                expiration_ms: r.expiration.map(|e| e.timestamp_millis()),
            })
            .collect(),
    };
    // Reserve enough up front that the buffer holding the token is not reallocated: a reallocation would leave
    // an unzeroed copy behind. Tokens and addresses are ASCII, so twice their length covers any escaping.
    let estimate = 256
        + 2 * (out.pach_token.len()
            + out.username.len()
            + out.method.len()
            + out.pachd_address.len()
            + out.issuer.map_or(0, str::len)
            + out.refresh_token.map_or(0, str::len)
            + out.subject.map_or(0, str::len)
            + out.retired.iter().map(|r| 48 + r.token.len()).sum::<usize>());
    let mut buf = Zeroizing::new(Vec::with_capacity(estimate));
    serde_json::to_writer(&mut *buf, &out).map_err(|e| Error::Corrupt {
        context: context.to_owned(),
        reason: format!("failed to encode the session record: {e}"),
    })?;
    Ok(buf)
}

/// Decodes what a backend returned for `context`.
///
/// # Errors
///
/// [`Error::Corrupt`] when the bytes are not a record, lack a version, or carry a version newer than this
/// build reads. The reason never quotes the bytes, which hold a token.
pub(super) fn decode(context: &str, bytes: &[u8]) -> Result<StoredSession, Error> {
    let corrupt = |reason: String| Error::Corrupt { context: context.to_owned(), reason };
    // serde_json's messages name a line and column, never the input, so they are safe to show.
    let version: VersionOnly =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a session record ({e})")))?;
    match version.v {
        None => Err(corrupt("the record has no version field \"v\"".to_owned())),
        Some(v) if v > u64::from(VERSION) => Err(corrupt(format!(
            "a newer pachagent wrote it (record version {v}, this build reads up to {VERSION}): upgrade pachagent"
        ))),
        Some(v) if v < u64::from(VERSION) => Err(corrupt(format!("unknown record version {v}"))),
        Some(_) => {
            let r: RecordV1 = serde_json::from_slice(bytes)
                .map_err(|e| corrupt(format!("a version {VERSION} record with bad fields ({e})")))?;
            let out_of_range = || corrupt("the expiration is out of range".to_owned());
            let expiration = match (r.expiration_ms, r.expiration) {
                (Some(ms), _) => Some(DateTime::from_timestamp_millis(ms).ok_or_else(out_of_range)?),
                (None, Some(secs)) => Some(DateTime::from_timestamp(secs, 0).ok_or_else(out_of_range)?),
                (None, None) => None,
            };
            // One unreadable entry costs only itself: the session and the other tokens stay.
            let retired = r
                .retired
                .into_iter()
                .filter_map(|t| match t.expiration_ms.map(DateTime::from_timestamp_millis) {
                    Some(None) => {
                        tracing::warn!(context, "a replaced token's expiration is out of range; it is dropped");
                        None
                    }
                    expiration => {
                        Some(RetiredToken { token: PachToken::new(t.token), expiration: expiration.flatten() })
                    }
                })
                .collect();
            Ok(StoredSession {
                pach_token: PachToken::new(r.pach_token),
                username: r.username,
                expiration,
                method: r.method,
                pachd_address: r.pachd_address,
                issuer: r.issuer,
                refresh_token: r.refresh_token.map(RefreshToken::new),
                subject: r.subject,
                stored_at: r.stored_at,
                retired,
            })
        }
    }
}
