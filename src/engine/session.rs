//! One context's session as the engine keeps it in memory, and the timetable of its renewal.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{SessionMethod, SessionState};
use crate::config::Context;
use crate::pachd::Identity;
use crate::secret::{PachToken, RefreshToken};
use crate::store::StoredSession;

/// What pachd last said of the token; `Expired` is also derived from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Valid,
    LoginRequired,
    Expired,
}

/// When and how the next renewal happens.
#[derive(Debug, Clone, Default)]
pub(super) struct RefreshPlan {
    /// When to renew; `None` until the scheduler plans it.
    pub at: Option<DateTime<Utc>>,
    /// Renewals that failed in a row (for the backoff).
    pub failures: u32,
    /// A renewal is running or queued.
    pub in_flight: bool,
    /// The provider refused the refresh token for good (`invalid_grant`): only a login helps.
    pub dead: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub token: PachToken,
    pub username: String,
    pub expiration: Option<DateTime<Utc>>,
    pub method: SessionMethod,
    pub pachd_address: String,
    pub issuer: Option<String>,
    pub refresh_token: Option<RefreshToken>,
    pub verdict: Verdict,
    pub last_error: Option<String>,
    /// When pachd minted this token (its lifetime is `expiration - issued_at`).
    pub issued_at: DateTime<Utc>,
    pub refresh: RefreshPlan,
    /// The latest instant (unix seconds) until which a caller was promised this token stays valid; revoking it
    /// after a renewal waits for that, so a `GetToken{min_valid_seconds}` promise holds. Shared by clones.
    pub promised_until: Arc<AtomicI64>,
    /// The smallest expiry-warning lead already announced.
    pub warned: Option<Duration>,
    /// EXPIRED was announced for this token.
    pub expiry_announced: bool,
}

impl Session {
    pub fn new(
        ctx: &Context,
        token: PachToken,
        identity: Identity,
        method: SessionMethod,
        refresh_token: Option<RefreshToken>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            token,
            username: identity.username,
            expiration: identity.expiration,
            method,
            pachd_address: ctx.pachd.to_string(),
            issuer: ctx.issuer.clone(),
            refresh_token,
            verdict: Verdict::Valid,
            last_error: None,
            issued_at: now,
            refresh: RefreshPlan::default(),
            promised_until: Arc::new(AtomicI64::new(0)),
            warned: None,
            expiry_announced: false,
        }
    }

    pub fn from_stored(stored: StoredSession) -> Self {
        Self {
            method: SessionMethod::parse(&stored.method),
            expiration: stored.expiration,
            token: stored.pach_token,
            username: stored.username,
            pachd_address: stored.pachd_address,
            issuer: stored.issuer,
            refresh_token: stored.refresh_token,
            verdict: Verdict::Valid,
            last_error: None,
            issued_at: DateTime::from_timestamp(stored.stored_at, 0).unwrap_or_else(Utc::now),
            refresh: RefreshPlan::default(),
            promised_until: Arc::new(AtomicI64::new(0)),
            warned: None,
            expiry_announced: false,
        }
    }

    /// The keyring record; `stored_at` is when the token was minted, which the restored session's timetable
    /// needs.
    pub fn to_stored(&self) -> StoredSession {
        StoredSession {
            pach_token: self.token.clone(),
            username: self.username.clone(),
            expiration: self.expiration,
            method: self.method.as_str().to_owned(),
            pachd_address: self.pachd_address.clone(),
            issuer: self.issuer.clone(),
            refresh_token: self.refresh_token.clone(),
            stored_at: self.issued_at.timestamp(),
        }
    }

    pub fn state(&self, now: DateTime<Utc>) -> SessionState {
        match self.verdict {
            Verdict::LoginRequired => SessionState::LoginRequired,
            // A refresh token the provider refused for good: only a login helps, even while the token lives on.
            _ if self.refresh.dead => SessionState::LoginRequired,
            Verdict::Expired => SessionState::Expired,
            Verdict::Valid if self.expiration.is_some_and(|e| e <= now) => SessionState::Expired,
            Verdict::Valid if self.refresh.in_flight => SessionState::Refreshing,
            Verdict::Valid => SessionState::Active,
        }
    }

    /// Whether the token itself still works (pachd has not refused it and it has not expired), whatever the
    /// session's renewal prospects.
    pub fn still_valid(&self, now: DateTime<Utc>) -> bool {
        self.verdict == Verdict::Valid && self.expiration.is_none_or(|e| e > now)
    }

    /// Whether the agent can renew the session without the user.
    pub fn refreshable(&self) -> bool {
        self.refresh_token.is_some()
            && !self.refresh.dead
            && matches!(self.method, SessionMethod::Oidc | SessionMethod::Device)
    }

    /// How long the token stays valid; `None` when it never expires.
    pub fn left(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.expiration.map(|e| (e - now).to_std().unwrap_or_default())
    }

    /// The token's whole lifetime, as minted.
    pub fn lifetime(&self) -> Option<Duration> {
        self.expiration.map(|e| (e - self.issued_at).to_std().unwrap_or_default())
    }

    /// Records that a caller was promised validity until `until`.
    pub fn promise(&self, until: DateTime<Utc>) {
        self.promised_until.fetch_max(until.timestamp() + 1, Ordering::Relaxed);
    }

    /// The latest validity promised to a caller.
    pub fn promised(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.promised_until.load(Ordering::Relaxed), 0)
    }
}
