//! One context's session as the engine keeps it in memory, the timetable of its renewal, and the tokens it
//! handed out that are still alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{SessionMethod, SessionState};
use crate::config::Context;
use crate::pachd::Identity;
use crate::secret::{PachToken, RefreshToken};
use crate::store::{RetiredToken, StoredSession};

/// How many replaced tokens a session keeps for its logout. Renewals come when a quarter of a token's life is
/// left, so normally one or two are alive at a time; callers forcing renewals with `min_valid` make more. Past
/// this many, the one that expires first is no longer tracked (it keeps working until it expires by itself:
/// its holder matters more than revoking it early). Sixteen cost about 1.3 KB of the record, which the kernel
/// keyutils store counts against a 20,000-byte quota for all of an ordinary user's keys.
pub(super) const MAX_RETIRED: usize = 16;

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
    /// The provider's `sub` for the user, for OIDC sessions (older records lack it).
    pub subject: Option<String>,
    pub verdict: Verdict,
    pub last_error: Option<String>,
    /// When pachd minted this token (its lifetime is `expiration - issued_at`).
    pub issued_at: DateTime<Utc>,
    pub refresh: RefreshPlan,
    /// Whether anyone outside the agent got this token (GetToken, pachctl sync). A token nobody got is revoked as
    /// soon as a renewal replaces it; one that was handed out is left to expire by itself, since programs that
    /// read it once keep using it. Shared by clones, so a renewal sees hand-outs made while it ran.
    pub handed_out: Arc<AtomicBool>,
    /// Replaced tokens of this session that were handed out and have not expired: a logout revokes them.
    pub retired: Vec<RetiredToken>,
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
            subject: None,
            verdict: Verdict::Valid,
            last_error: None,
            issued_at: now,
            refresh: RefreshPlan::default(),
            // A token the user handed in is theirs already.
            handed_out: Arc::new(AtomicBool::new(method == SessionMethod::PachToken)),
            retired: Vec::new(),
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
            subject: stored.subject,
            verdict: Verdict::Valid,
            last_error: None,
            issued_at: DateTime::from_timestamp(stored.stored_at, 0).unwrap_or_else(Utc::now),
            refresh: RefreshPlan::default(),
            // Whether the agent that stored it handed it out is not recorded: assume it did.
            handed_out: Arc::new(AtomicBool::new(true)),
            retired: stored.retired,
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
            subject: self.subject.clone(),
            stored_at: self.issued_at.timestamp(),
            retired: self.retired.clone(),
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

    /// Records that the token left the agent.
    pub fn mark_handed_out(&self) {
        self.handed_out.store(true, Ordering::Relaxed);
    }

    /// Whether the token left the agent. Read under the sessions' write lock when a session is replaced, so that
    /// no hand-out can slip in between the check and the replacement.
    pub fn was_handed_out(&self) -> bool {
        self.handed_out.load(Ordering::Relaxed)
    }

    /// The replaced tokens a session taking over from this one must keep for its logout: this session's own
    /// token (unless the new session has the very same one, or the user handed it in: a robot token is theirs to
    /// keep, and no later logout of another session revokes it) and its earlier ones, less those expired by
    /// `now`; the soonest to expire go first when there are more than [`MAX_RETIRED`].
    pub fn retired_after(&self, now: DateTime<Utc>, successor: &PachToken) -> Vec<RetiredToken> {
        let own = (self.method != SessionMethod::PachToken)
            .then(|| RetiredToken { token: self.token.clone(), expiration: self.expiration });
        let mut retired: Vec<RetiredToken> = self
            .retired
            .iter()
            .cloned()
            .chain(own)
            .filter(|r| r.expiration.is_none_or(|e| e > now))
            .filter(|r| r.token.expose_secret() != successor.expose_secret())
            .collect();
        if retired.len() > MAX_RETIRED {
            // Never-expiring tokens sort last: they are the ones a logout must not forget.
            retired.sort_by_key(|r| r.expiration.map_or(i64::MAX, |e| e.timestamp_millis()));
            let dropped = retired.len() - MAX_RETIRED;
            tracing::warn!(
                dropped,
                "more replaced tokens alive than a session keeps; the soonest to expire are no longer tracked and a \
                 logout will not revoke them (they still end at their own expiration)"
            );
            retired.drain(..dropped);
        }
        retired
    }

    /// Every token of the session pachd may still accept at `now`, each with whether it is the current one: the
    /// current one first (unless it has expired), then the replaced ones.
    pub fn live_tokens(&self, now: DateTime<Utc>) -> Vec<(RetiredToken, bool)> {
        let current = RetiredToken { token: self.token.clone(), expiration: self.expiration };
        std::iter::once((current, true))
            .chain(self.retired.iter().cloned().map(|r| (r, false)))
            .filter(|(r, _)| r.expiration.is_none_or(|e| e > now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn session(token: &str, expires: i64) -> Session {
        let toml = "[contexts.dev]\npachd_address = \"grpc://127.0.0.1:30650\"\n";
        let config = crate::config::Config::from_toml(std::path::Path::new("config.toml"), toml).unwrap();
        let ctx = config.context("dev").unwrap();
        let identity = Identity { username: "user:a@example.com".into(), expiration: Some(t(expires)) };
        Session::new(ctx, PachToken::new(token.into()), identity, SessionMethod::Oidc, None, t(0))
    }

    fn tokens(list: &[RetiredToken]) -> Vec<&str> {
        list.iter().map(|r| r.token.expose_secret()).collect()
    }

    #[test]
    fn a_renewal_keeps_the_replaced_token_and_the_earlier_ones_still_alive() {
        let mut old = session("t2", 100);
        old.retired = vec![
            RetiredToken { token: PachToken::new("t0".into()), expiration: Some(t(10)) },
            RetiredToken { token: PachToken::new("t1".into()), expiration: Some(t(60)) },
        ];
        let kept = old.retired_after(t(30), &PachToken::new("t3".into()));
        assert_eq!(tokens(&kept), ["t1", "t2"], "t0 expired at 10 s and is gone by 30 s");
    }

    #[test]
    fn a_login_that_brings_back_the_same_token_does_not_retire_it() {
        let old = session("same", 100);
        assert!(old.retired_after(t(1), &PachToken::new("same".into())).is_empty());
    }

    #[test]
    fn past_the_cap_the_soonest_to_expire_are_dropped_and_never_expiring_ones_kept() {
        let mut old = session("current", 10_000);
        old.retired = (0..MAX_RETIRED as i64 + 5)
            .map(|i| RetiredToken { token: PachToken::new(format!("r{i}")), expiration: Some(t(100 + i)) })
            .collect();
        old.retired.push(RetiredToken { token: PachToken::new("robot".into()), expiration: None });
        let kept = old.retired_after(t(0), &PachToken::new("next".into()));
        assert_eq!(kept.len(), MAX_RETIRED);
        let names = tokens(&kept);
        assert!(names.contains(&"robot") && names.contains(&"current"), "{names:?}");
        assert!(!names.contains(&"r0") && !names.contains(&"r6") && names.contains(&"r7"), "{names:?}");
    }

    #[test]
    fn a_logout_revokes_the_current_token_and_the_replaced_ones_not_yet_expired() {
        let mut s = session("now", 100);
        s.retired = vec![
            RetiredToken { token: PachToken::new("dead".into()), expiration: Some(t(5)) },
            RetiredToken { token: PachToken::new("alive".into()), expiration: Some(t(50)) },
        ];
        let live = s.live_tokens(t(20));
        let names: Vec<(&str, bool)> = live.iter().map(|(r, current)| (r.token.expose_secret(), *current)).collect();
        assert_eq!(names, [("now", true), ("alive", false)]);
        // Once the current token has expired, what is left to revoke is only replaced ones.
        let names: Vec<bool> = s.live_tokens(t(150)).iter().map(|(_, current)| *current).collect();
        assert!(names.is_empty(), "everything ended by 150 s");
        s.retired.push(RetiredToken { token: PachToken::new("robot".into()), expiration: None });
        let later = s.live_tokens(t(150));
        assert_eq!(later.len(), 1);
        assert!(!later[0].1, "the one left is not the current token");
    }

    #[test]
    fn a_token_the_user_handed_in_is_theirs_it_is_never_retired_or_revoked_by_a_new_login() {
        let toml = "[contexts.dev]\npachd_address = \"grpc://127.0.0.1:30650\"\n";
        let config = crate::config::Config::from_toml(std::path::Path::new("config.toml"), toml).unwrap();
        let identity = Identity { username: "robot:ci".into(), expiration: None };
        let robot = Session::new(
            config.context("dev").unwrap(),
            PachToken::new("robot".into()),
            identity,
            SessionMethod::PachToken,
            None,
            t(0),
        );
        assert!(robot.was_handed_out(), "the user has it: a new login must not revoke it as unseen");
        assert!(robot.retired_after(t(1), &PachToken::new("next".into())).is_empty(), "nor keep it for a logout");
    }

    #[test]
    fn a_restored_session_counts_as_handed_out_and_a_new_one_does_not() {
        assert!(!session("t", 100).was_handed_out());
        let restored = Session::from_stored(session("t", 100).to_stored());
        assert!(restored.was_handed_out(), "nothing recorded whether the previous agent handed it out");
    }
}
