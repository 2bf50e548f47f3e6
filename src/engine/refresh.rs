//! Silent renewal of OIDC sessions, and the expiry warnings of sessions that cannot be renewed.
//!
//! A renewable session is refreshed when about a quarter of its token's lifetime is left, and no later than the
//! context's margin before expiry (with jitter): refresh grant → verified ID token → pachd `Authenticate` →
//! `WhoAmI` → keyring → memory. The replaced pach token is revoked at once when nobody outside the agent ever
//! got it; one that was handed out stays valid until its own expiration (programs that read a token once keep
//! using it) and is kept with the session so that a logout revokes it. The rotated refresh token is written to
//! the keyring before anything else uses it. One
//! renewal runs at a time per context; any number of callers needing one wait on it and re-check. Transient
//! failures retry with exponential backoff and jitter; a refresh token the provider refuses, or an ID token that
//! fails a check, moves the session to LOGIN_REQUIRED at once (see [`SessionEngine::renew`]). The scheduler
//! sleeps until the next due time, never longer than [`MAX_SLEEP`], and re-evaluates everything after a clock
//! jump (a laptop waking from suspend).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{Error, EventKind, Session, SessionEngine, SessionState, Verdict, login::oidc_error, read, write};
use crate::config::Context;
use crate::net::{Provider, Refreshed};
use crate::oidc::{ProviderSettings, Tokens};
use crate::secret::RefreshToken;

/// The scheduler never sleeps longer than this, so a suspended laptop re-evaluates its sessions soon after it
/// wakes (monotonic timers do not count the time spent suspended).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// First retry delay after a failed renewal; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(2);

/// The longest delay between renewal attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// When to renew a token minted at `issued` that expires at `exp`: a quarter of its lifetime before the end, or
/// `margin` before it when that is earlier (but never before half-life), minus up to 5% of the lifetime of
/// jitter (`jitter` in 0..1) so that many agents do not renew in step.
pub(super) fn plan_refresh(issued: DateTime<Utc>, exp: DateTime<Utc>, margin: Duration, jitter: f64) -> DateTime<Utc> {
    let lifetime = (exp - issued).to_std().unwrap_or_default();
    let lead = (lifetime / 4).max(margin.min(lifetime / 2));
    let spread = lifetime.mul_f64(0.05 * jitter.clamp(0.0, 1.0));
    exp - chrono::Duration::from_std(lead + spread).unwrap_or_default()
}

/// The delay before attempt `failures + 1`: exponential, capped, ±20% jitter.
pub(super) fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    exp.min(BACKOFF_MAX).mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A number in 0..1 that differs from call to call (for jitter; not for secrets).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a caller needs from `GetToken`.
pub(super) enum Grant {
    /// The token may be handed out.
    Ready(super::TokenGrant),
    /// Only a renewal can give the validity asked for.
    NeedsRefresh,
}

impl SessionEngine {
    /// A token for the context valid for at least `min_valid`, renewing first when needed and possible; each
    /// hand-out is logged with the caller.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`], [`Error::LoginRequired`], [`Error::Expired`], [`Error::TooShort`], config errors;
    /// a renewal's errors when one was needed.
    /// With `fit_to_lifetime`, `min_valid` is a default rather than a requirement: when the session's tokens live
    /// less than twice that, half their lifetime is asked instead (the grant says what was applied), so that a
    /// default never asks for more than the identity provider issues.
    pub async fn get_token(
        self: &Arc<Self>,
        context: &str,
        min_valid: Duration,
        fit_to_lifetime: bool,
        caller: &super::Caller,
    ) -> Result<super::TokenGrant, Error> {
        let config = self.config();
        let ctx = config.context(context)?;
        let min_valid = match read(&self.sessions).get(&ctx.name).and_then(Session::lifetime) {
            Some(lifetime) if fit_to_lifetime => min_valid.min(lifetime / 2),
            _ => min_valid,
        };
        let grant = match self.try_grant(ctx, min_valid, Utc::now())? {
            Grant::Ready(grant) => grant,
            Grant::NeedsRefresh => {
                self.refresh_now(&ctx.name, Some(min_valid)).await.map_err(|e| match e {
                    // Renewing cannot help any more: what the caller needs is a login, and to know why.
                    Error::Oidc { source, context } if source.ends_renewal() => {
                        Error::RenewalRefused { context, source }
                    }
                    other => other,
                })?;
                match self.try_grant(ctx, min_valid, Utc::now())? {
                    Grant::Ready(grant) => grant,
                    Grant::NeedsRefresh => return Err(self.too_short(&ctx.name, min_valid)),
                }
            }
        };
        // The first hand-out of each connection at info, the rest at debug (see `Caller::first_on_connection`).
        macro_rules! handed_out {
            ($level:ident) => {
                $level!(
                    context = %grant.context,
                    username = %grant.username,
                    caller_pid = caller.pid,
                    caller_uid = caller.uid,
                    caller_exe = caller.exe.as_deref().unwrap_or("?"),
                    "handed out a token"
                )
            };
        }
        if caller.first_on_connection {
            handed_out!(info);
        } else {
            handed_out!(debug);
        }
        Ok(grant)
    }

    fn try_grant(&self, ctx: &Context, min_valid: Duration, now: DateTime<Utc>) -> Result<Grant, Error> {
        let sessions = read(&self.sessions);
        let name = &ctx.name;
        let session = sessions.get(name).ok_or_else(|| Error::NotLoggedIn { context: name.clone() })?;
        let long_enough = session.left(now).is_none_or(|left| left >= min_valid);
        match session.state(now) {
            _ if session.still_valid(now) && long_enough => {
                // Under the read lock: a renewal swapping the session out (under the write lock) sees this.
                session.mark_handed_out();
                Ok(Grant::Ready(super::TokenGrant {
                    context: name.clone(),
                    token: session.token.clone(),
                    username: session.username.clone(),
                    expiration: session.expiration,
                    pachd_address: ctx.pachd.to_string(),
                    min_valid,
                    pachd_ca_file: ctx.ca_file.clone(),
                }))
            }
            // A renewal helps only if a fresh token can live that long.
            _ if session.refreshable() && session.lifetime().is_none_or(|l| l >= min_valid) => Ok(Grant::NeedsRefresh),
            // The sessions' read lock is held here: the error is made from this session, not by locking again.
            _ if session.refreshable() => Err(too_short_for(Some(session), name, min_valid, now)),
            SessionState::Active | SessionState::Refreshing => Err(too_short_for(Some(session), name, min_valid, now)),
            SessionState::Expired => Err(Error::Expired { context: name.clone() }),
            SessionState::LoginRequired | SessionState::LoggedOut => {
                Err(Error::LoginRequired { context: name.clone() })
            }
        }
    }

    /// The error for a validity the context's session cannot give (see [`too_short_for`]).
    fn too_short(&self, name: &str, wanted: Duration) -> Error {
        too_short_for(read(&self.sessions).get(name), name, wanted, Utc::now())
    }

    /// Renews a context's session now, unless a renewal that ran meanwhile already did the work: with `wanted`,
    /// when the token has less than that left; without, when the scheduled time has come.
    pub(super) async fn refresh_now(self: &Arc<Self>, name: &str, wanted: Option<Duration>) -> Result<(), Error> {
        let ctx = self.config().context(name)?.clone();
        let _guard = self.context_lock(name).lock_owned().await;
        let now = Utc::now();
        let (refresh_token, old) = {
            let mut sessions = write(&self.sessions);
            let session = sessions.get_mut(name).ok_or_else(|| Error::NotLoggedIn { context: name.to_owned() })?;
            let needed = match wanted {
                Some(min) => {
                    session.verdict != Verdict::Valid || session.left(now).is_some_and(|l| l < min || l.is_zero())
                }
                None => session.refresh.at.is_none_or(|at| at <= now),
            };
            let refresh_token = session.refresh_token.clone().filter(|_| session.refreshable());
            match (needed, refresh_token) {
                (true, Some(rt)) => {
                    session.refresh.in_flight = true;
                    (rt, session.clone())
                }
                (needed, _) => {
                    session.refresh.in_flight = false;
                    drop(sessions);
                    self.schedule_changed.notify_one();
                    return if needed { Err(Error::LoginRequired { context: name.to_owned() }) } else { Ok(()) };
                }
            }
        };
        let result = self.renew(&ctx, refresh_token, &old).await;
        if let Err(e) = &result {
            self.renewal_failed(&ctx, e, now);
        }
        self.schedule_changed.notify_one();
        result
    }

    /// One renewal: refresh grant, then the new ID token's checks, then pachd.
    ///
    /// The refresh token the provider rotated is stored before the new ID token is even looked at, and kept when
    /// that token is refused: the provider has already retired the old one, and reusing it would make a provider
    /// with reuse detection revoke the whole grant. An ID token that fails a check (or lacks the email pachd
    /// names the user by) ends the renewals like a dead refresh token does: the session shows LOGIN_REQUIRED
    /// with the failed check as its error, its still-valid pach token keeps being served until it expires, and
    /// the agent does not retry on its own. A provider handing out bad tokens is misconfigured or being tampered
    /// with, not briefly unwell, and every retry would rotate the refresh token for another bad answer. A login
    /// starts afresh; so does an agent restart, with the stored (rotated) refresh token, once.
    async fn renew(self: &Arc<Self>, ctx: &Context, refresh_token: RefreshToken, old: &Session) -> Result<(), Error> {
        let provider = self.cached_provider(ctx).await?;
        let forget_provider = |e: &crate::oidc::Error| {
            if !e.is_transient() {
                // A provider that answers but refuses may have been reconfigured: rediscover next time.
                super::lock(&self.providers).remove(&ctx.name);
            }
        };
        debug!(context = %ctx.name, "refresh grant sent; the provider may rotate the refresh token from here on");
        let refreshed: Refreshed = provider.refresh(&refresh_token).await.map_err(|e| {
            forget_provider(&e);
            oidc_error(ctx, e)
        })?;
        // Rotation: the provider now accepts only the new refresh token. Keep it before anything else happens,
        // with the old pach token (still valid), so that an agent killed from here on restarts usable, and a
        // refused ID token does not cost the grant.
        let latest_rt = refreshed.refresh_token.clone().unwrap_or(refresh_token);
        let mut interim = old.clone();
        interim.refresh_token = Some(latest_rt.clone());
        self.update(&ctx.name, |s| s.refresh_token = Some(latest_rt.clone()));
        if self.save(&ctx.name, &interim.to_stored()).await.is_err() {
            warn!(context = %ctx.name, "the rotated refresh token is kept in memory until the keyring answers again");
            self.mark_out_of_sync(&ctx.name);
        } else {
            debug!(context = %ctx.name, "rotated refresh token stored");
        }
        let tokens: Tokens = provider.verify_refreshed(refreshed).await.map_err(|e| {
            forget_provider(&e);
            oidc_error(ctx, e)
        })?;
        super::login::require_email(ctx, &tokens)?;
        same_subject(old.subject.as_deref(), &tokens.subject).map_err(|why| oidc_error(ctx, why))?;
        let client = self.client(ctx)?;
        let (token, identity) =
            client.trade_id_token(&tokens.id_token).await.map_err(|e| super::login_error(ctx, e))?;
        if let Err(why) = same_username(&old.username, &identity.username) {
            // pachd minted a session for someone else: it must not be served, nor left alive.
            if let Err(e) = client.revoke(&token).await {
                warn!(context = %ctx.name, error = %e, "could not revoke the other user's session the renewal got");
            }
            return Err(oidc_error(ctx, why));
        }
        let now = Utc::now();
        let mut fresh = Session::new(ctx, token, identity, old.method, Some(latest_rt), now);
        fresh.subject = Some(tokens.subject);
        fresh.refresh.at = fresh.expiration.map(|exp| plan_refresh(now, exp, ctx.refresh_margin, jitter()));
        let fresh = self.successor(ctx, fresh, now);
        if self.save(&ctx.name, &fresh.to_stored()).await.is_err() {
            warn!(context = %ctx.name, "the renewed session is kept in memory until the keyring answers again");
            self.mark_out_of_sync(&ctx.name);
        }
        let (username, expiration, token) = (fresh.username.clone(), fresh.expiration, fresh.token.clone());
        self.install(ctx, fresh).await;
        self.sync_pachctl(ctx, Some(&token)).await;
        info!(context = %ctx.name, expires = ?expiration, "session refreshed");
        self.emit_with(&ctx.name, EventKind::Refreshed, now, String::new(), &username, expiration);
        Ok(())
    }

    /// Records a failed renewal: a refresh token refused for good or an ID token refused ends the renewals
    /// (LOGIN_REQUIRED, no retry storm); anything else is retried with backoff, and reported as REFRESH_FAILED.
    fn renewal_failed(&self, ctx: &Context, e: &Error, started: DateTime<Utc>) {
        let fatal = matches!(e, Error::Oidc { source, .. } if source.ends_renewal());
        let now = Utc::now();
        let mut event = None;
        self.update(&ctx.name, |s| {
            s.refresh.in_flight = false;
            if fatal {
                // The token pachd issued stays valid until it expires and keeps being served; the session shows
                // LOGIN_REQUIRED because it cannot be renewed.
                s.refresh.dead = true;
                s.last_error = Some(format!("{e}: run pachagent login --context {}", ctx.name));
                event = Some((EventKind::LoginRequired, s.last_error.clone().unwrap_or_default()));
            } else {
                s.refresh.failures += 1;
                let delay = backoff(s.refresh.failures, jitter());
                s.refresh.at = Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
                s.last_error = Some(e.to_string());
                event = Some((
                    EventKind::RefreshFailed,
                    format!(
                        "{e}; retrying in {}",
                        humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
                    ),
                ));
            }
        });
        if let Some((kind, detail)) = event {
            warn!(context = %ctx.name, error = %e, attempt_started = %started, "session renewal failed");
            self.emit(&ctx.name, kind, now, detail);
        }
    }

    /// The context's provider as last discovered, discovering it when there is none yet.
    async fn cached_provider(&self, ctx: &Context) -> Result<Arc<Provider>, Error> {
        if let Some(p) = super::lock(&self.providers).get(&ctx.name) {
            return Ok(Arc::clone(p));
        }
        self.discover_provider(ctx).await
    }

    /// Discovers the context's provider afresh (an interactive login always does, so that it sees the provider
    /// as it is now) and keeps it for the renewals that follow.
    pub(super) async fn discover_provider(&self, ctx: &Context) -> Result<Arc<Provider>, Error> {
        let client_secret = self
            .store
            .load_client_secret(&ctx.name)
            .await
            .map_err(|source| Error::Store { context: ctx.name.clone(), source })?;
        let settings = ProviderSettings {
            issuer: ctx.issuer.clone().unwrap_or_default(),
            issuer_url: ctx.issuer_url.clone(),
            client_id: ctx.client_id.clone().unwrap_or_default(),
            client_secret,
            ca_file: ctx.issuer_ca_file.clone(),
            scopes: ctx.all_scopes(),
        };
        let provider = Arc::new(Provider::discover(settings).await.map_err(|e| oidc_error(ctx, e))?);
        super::lock(&self.providers).insert(ctx.name.clone(), Arc::clone(&provider));
        Ok(provider)
    }

    /// Runs for the agent's lifetime: renews sessions when due, announces coming and past expiries, and sleeps
    /// until the next due time (re-evaluating at once when a login, renewal or clock jump changes the picture).
    pub async fn schedule_task(self: Arc<Self>) {
        loop {
            let now = Utc::now();
            let next = self.run_due(now);
            let wait = next.map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or_default()).min(MAX_SLEEP);
            debug!(?wait, "scheduler sleeping");
            let (wall, mono) = (Utc::now(), Instant::now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.schedule_changed.notified() => {}
            }
            let drift = (Utc::now() - wall).to_std().unwrap_or_default().saturating_sub(mono.elapsed());
            if drift > Duration::from_secs(5) {
                info!(jump = ?drift, "the clock jumped (suspend or resume?): re-evaluating every session");
            }
        }
    }

    /// Starts the renewals that are due and emits due warnings; returns the next instant something is due.
    fn run_due(self: &Arc<Self>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let config = self.config();
        let mut next: Option<DateTime<Utc>> = None;
        let mut soonest = |t: DateTime<Utc>| next = Some(next.map_or(t, |n| n.min(t)));
        let mut due = Vec::new();
        let mut events = Vec::new();
        {
            let mut sessions = write(&self.sessions);
            for (name, s) in sessions.iter_mut() {
                let Ok(ctx) = config.context(name) else { continue };
                if s.refreshable() {
                    if s.refresh.at.is_none() {
                        s.refresh.at =
                            s.expiration.map(|exp| plan_refresh(s.issued_at, exp, ctx.refresh_margin, jitter()));
                    }
                    match s.refresh.at {
                        _ if s.refresh.in_flight => {}
                        Some(at) if at <= now => {
                            s.refresh.in_flight = true;
                            due.push(name.clone());
                        }
                        Some(at) => soonest(at),
                        None => {}
                    }
                } else if let Some(exp) = s.expiration
                    && s.verdict == Verdict::Valid
                    && exp > now
                {
                    // Cannot be renewed: warn at each lead time (only the nearest one that has passed).
                    let passed = ctx.expiry_warnings.iter().copied().filter(|lead| warn_at(exp, *lead) <= now).min();
                    if let Some(lead) = passed
                        && s.warned.is_none_or(|w| lead < w)
                    {
                        s.warned = Some(lead);
                        let left = (exp - now).to_std().unwrap_or_default();
                        let detail = format!(
                            "the session ends in {} and cannot be renewed: run pachagent login --context {name} before then",
                            humantime::format_duration(Duration::from_secs(left.as_secs()))
                        );
                        events.push((name.clone(), EventKind::ExpiringSoon, detail));
                    }
                    for lead in &ctx.expiry_warnings {
                        let at = warn_at(exp, *lead);
                        if at > now {
                            soonest(at);
                        }
                    }
                }
                if let Some(exp) = s.expiration
                    && !s.expiry_announced
                    && s.verdict != Verdict::LoginRequired
                {
                    if exp <= now {
                        s.expiry_announced = true;
                        let detail = format!("the session has ended: run pachagent login --context {name}");
                        events.push((name.clone(), EventKind::Expired, detail));
                    } else {
                        soonest(exp);
                    }
                }
            }
        }
        for (name, kind, detail) in events {
            self.emit(&name, kind, now, detail);
        }
        for name in due {
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = engine.refresh_now(&name, None).await {
                    debug!(context = %name, error = %e, "scheduled renewal did not complete");
                }
            });
        }
        next
    }
}

/// OpenID Connect Core 12.2: the ID token a refresh returns must name the same user (`sub`) as the session it
/// renews. A session stored before pachagent kept the `sub` has none to compare; its pachd username still is.
fn same_subject(session: Option<&str>, renewed: &str) -> Result<(), crate::oidc::Error> {
    match session {
        Some(sub) if sub != renewed => Err(crate::oidc::Error::InvalidIdToken(format!(
            "the renewal's ID token names another user (sub {renewed:?}) than the session it renews (sub {sub:?}): \
             the provider must not switch users on a refresh (OpenID Connect Core 12.2)"
        ))),
        _ => Ok(()),
    }
}

/// The session pachd minted for a renewal must be for the user the session was for.
fn same_username(session: &str, renewed: &str) -> Result<(), crate::oidc::Error> {
    if session == renewed {
        return Ok(());
    }
    Err(crate::oidc::Error::InvalidIdToken(format!(
        "pachd made the renewed session {renewed:?}'s, but the session being renewed is {session:?}'s (the ID token's \
         email changed): a renewal must not switch users"
    )))
}

/// The error for a validity a session cannot give: beyond what any of its tokens lives (a renewable session's
/// tokens all live about as long, so no login helps), or merely more than this token has left.
fn too_short_for(session: Option<&Session>, name: &str, wanted: Duration, now: DateTime<Utc>) -> Error {
    match session.filter(|s| s.refreshable()).and_then(Session::lifetime) {
        Some(lifetime) if lifetime < wanted => Error::BeyondLifetime { context: name.to_owned(), lifetime, wanted },
        _ => {
            let left = session.and_then(|s| s.left(now)).unwrap_or_default();
            Error::TooShort { context: name.to_owned(), left, wanted }
        }
    }
}

/// When to warn `lead` before `exp`; the earliest representable instant for a lead longer than the calendar
/// (a configured warning of a million years must not overflow the scheduler).
fn warn_at(exp: DateTime<Utc>, lead: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lead).ok().and_then(|l| exp.checked_sub_signed(l)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_long_session_renews_with_a_quarter_of_its_life_left() {
        let at = plan_refresh(t(0), t(3600), Duration::from_secs(300), 0.0);
        assert_eq!(at, t(2700));
    }

    #[test]
    fn a_short_session_renews_no_later_than_the_margin_but_not_before_half_life() {
        // 20 minutes: a quarter is 5 min, the margin 10 min wins.
        assert_eq!(plan_refresh(t(0), t(1200), Duration::from_secs(600), 0.0), t(600));
        // 5 seconds: the 5-minute margin would renew at once, forever; half-life bounds it.
        assert_eq!(plan_refresh(t(0), t(4), Duration::from_secs(300), 0.0), t(2));
    }

    #[test]
    fn jitter_moves_the_renewal_earlier_by_at_most_five_percent() {
        let earliest = plan_refresh(t(0), t(4000), Duration::from_secs(1), 1.0);
        assert_eq!(earliest, t(4000 - 1000 - 200));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_with_jitter() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(30, 0.5), Duration::from_secs(60));
        assert!(backoff(1, 0.0) >= Duration::from_millis(1600) && backoff(1, 1.0) <= Duration::from_millis(2400));
    }

    #[test]
    fn an_expiry_warning_longer_than_the_calendar_is_due_at_once_instead_of_overflowing() {
        assert_eq!(warn_at(t(100), Duration::from_secs(40)), t(60));
        assert_eq!(warn_at(t(100), Duration::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(warn_at(t(100), Duration::from_secs(u64::MAX / 2)), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn a_renewal_must_name_the_user_the_session_was_for() {
        assert!(same_subject(Some("alice"), "alice").is_ok());
        assert!(same_subject(None, "whoever").is_ok(), "a record from before subjects were kept");
        let err = same_subject(Some("alice"), "mallory").unwrap_err();
        assert!(err.ends_renewal(), "a provider switching users is not a hiccup to retry");
        assert!(err.to_string().contains("\"mallory\"") && err.to_string().contains("\"alice\""), "{err}");
        assert!(same_username("user:a@x.com", "user:a@x.com").is_ok());
        let err = same_username("user:a@x.com", "user:m@x.com").unwrap_err();
        assert!(err.ends_renewal() && err.to_string().contains("user:m@x.com"), "{err}");
    }

    #[test]
    fn jitter_is_in_the_unit_interval() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
