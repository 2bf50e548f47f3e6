//! pachd-dev's token table: what pachd keeps in Postgres `auth.auth_tokens`, held in memory.
//!
//! Like pachd, only the SHA-256 hex of a token is stored, so a dump of the table (or a debugger looking at it)
//! cannot replay a session. Tokens are minted the way pachd mints them (a UUIDv4 without dashes), so clients
//! see the same shape. This module owns no locking and no clock: callers pass `now`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::secret::PachToken;

/// The subject of the root token; in pachd-dev the only cluster admin.
pub(crate) const ROOT_SUBJECT: &str = "pach:root";

/// What a token stands for: a row of `auth.auth_tokens` without the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    /// The full subject, e.g. `user:alice@example.com`, `robot:ci` or `pach:root`.
    pub(crate) subject: String,
    /// `None` means the token never expires (pachd stores NULL).
    pub(crate) expiration: Option<SystemTime>,
}

impl TokenInfo {
    /// A token that expires `ttl` after `now`, at the microsecond precision Postgres would store.
    pub(crate) fn expiring(subject: String, now: SystemTime, ttl: Duration) -> Self {
        Self { subject, expiration: Some(truncate_to_micros(now + ttl)) }
    }

    /// A token that never expires (root, robots without a TTL).
    pub(crate) fn forever(subject: String) -> Self {
        Self { subject, expiration: None }
    }

    /// pachd's rule (`time.Now().After(expiration)`): a token is expired strictly after its expiration.
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.expiration.is_some_and(|exp| now > exp)
    }
}

/// Token hash → token info. Expired rows stay until revoked, as they do in pachd until its daily cleanup,
/// which is why an expired token answers "token expiration is in the past" rather than "corrupted".
#[derive(Debug, Default)]
pub(crate) struct TokenTable {
    by_hash: HashMap<String, TokenInfo>,
}

impl TokenTable {
    /// Stores `info` under the hash of `token`, replacing any earlier row for the same token.
    pub(crate) fn insert(&mut self, token: &PachToken, info: TokenInfo) {
        self.by_hash.insert(hash_token(token.expose_secret()), info);
    }

    /// Looks a raw token up by its hash.
    pub(crate) fn lookup(&self, raw_token: &str) -> Option<&TokenInfo> {
        self.by_hash.get(&hash_token(raw_token))
    }

    /// Deletes a raw token and returns the number of rows deleted (0 or 1), as RevokeAuthToken reports it.
    pub(crate) fn revoke(&mut self, raw_token: &str) -> i64 {
        i64::from(self.by_hash.remove(&hash_token(raw_token)).is_some())
    }
}

/// A fresh token as pachd makes them (`uuid.NewWithoutDashes()`): 32 lowercase hex characters.
pub(crate) fn new_token() -> PachToken {
    PachToken::new(uuid::Uuid::new_v4().simple().to_string())
}

/// `auth.HashToken`: the lowercase hex SHA-256 of the token.
pub(crate) fn hash_token(raw_token: &str) -> String {
    hex::encode(Sha256::digest(raw_token.as_bytes()))
}

fn truncate_to_micros(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_look_like_pachd_tokens() {
        let token = new_token();
        let raw = token.expose_secret();
        assert_eq!(raw.len(), 32);
        assert!(raw.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{raw}");
        assert_eq!(raw.as_bytes()[12], b'4', "UUIDv4 version nibble");
    }

    #[test]
    fn the_table_keeps_only_hashes_and_revokes_once() {
        let mut table = TokenTable::default();
        let token = PachToken::new("s3cr3t".into());
        table.insert(&token, TokenInfo::forever("robot:ci".into()));
        assert!(table.by_hash.keys().all(|k| k != "s3cr3t" && k.len() == 64));
        assert_eq!(table.lookup("s3cr3t").map(|i| i.subject.as_str()), Some("robot:ci"));
        assert_eq!(table.revoke("s3cr3t"), 1);
        assert_eq!(table.revoke("s3cr3t"), 0);
        assert!(table.lookup("s3cr3t").is_none());
    }

    #[test]
    fn a_token_expires_strictly_after_its_expiration() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let info = TokenInfo::expiring("robot:ci".into(), now, Duration::from_secs(1));
        assert!(!info.is_expired(now + Duration::from_secs(1)));
        assert!(info.is_expired(now + Duration::from_millis(1_001)));
        assert!(!TokenInfo::forever("pach:root".into()).is_expired(now));
    }
}
