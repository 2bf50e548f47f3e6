//! Handing a context over from one session to the next (a renewal, a new login), and revoking every token of a
//! session at logout.
//!
//! The promise pachagent makes is that a program holding a token keeps working until that token's own expiration,
//! whatever the agent does meanwhile: a process that read `pachagent token` once, a command under `exec`, a
//! notebook's client. So a token that left the agent is never revoked by a renewal; it is kept in the session's
//! `retired` list (and keyring record) until it expires, and a logout revokes it with the current one. A token
//! nobody outside the agent got is revoked as soon as it is replaced.

use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use super::{Session, SessionEngine, read, write};
use crate::config::Context;
use crate::pachd;
use crate::store::RetiredToken;

/// What revoking a session's tokens at logout achieved.
#[derive(Debug, Default)]
pub(super) struct Revocation {
    /// The current token was revoked.
    pub current: bool,
    /// Tokens pachd revoked, the current one included.
    pub revoked: u32,
    /// Tokens pachd already refused (revoked elsewhere, or expired).
    pub already_invalid: u32,
    /// Tokens that could not be revoked and stay valid until `unrevoked_until`.
    pub unrevoked: u32,
    /// The latest expiration among the unrevoked tokens.
    pub unrevoked_until: Option<DateTime<Utc>>,
    /// One of the unrevoked tokens never expires.
    pub unrevoked_forever: bool,
    /// Why they could not be revoked (pachd's error, which never quotes a token).
    pub error: Option<String>,
}

impl SessionEngine {
    /// `fresh`, carrying the replaced tokens of the context's current session that a logout must still revoke.
    /// Tokens of a session for another pachd are not carried: they must never be sent to this one.
    pub(super) fn successor(&self, ctx: &Context, mut fresh: Session, now: DateTime<Utc>) -> Session {
        if let Some(current) = read(&self.sessions).get(&ctx.name)
            && current.pachd_address == fresh.pachd_address
        {
            fresh.retired = current.retired_after(now, &fresh.token);
        }
        if ctx.sync_pachctl {
            // It goes into pachctl's config file, where any pachctl run may read it.
            fresh.mark_handed_out();
        }
        fresh
    }

    /// Puts `fresh` (from [`SessionEngine::successor`], already stored) in place of the context's session, then
    /// stores it once more if the replaced token turned out to be one nobody got (see [`Self::swap_in`]), so
    /// that the keyring does not keep a revoked token for a later logout to count as alive.
    pub(super) async fn install(&self, ctx: &Context, fresh: Session) {
        if self.swap_in(ctx, fresh) {
            let stored = read(&self.sessions).get(&ctx.name).map(Session::to_stored);
            if let Some(stored) = stored
                && self.save(&ctx.name, &stored).await.is_err()
            {
                self.mark_out_of_sync(&ctx.name);
            }
        }
    }

    /// Puts `fresh` in place of the context's session. The replaced token is revoked at once when nobody outside
    /// the agent ever got it; the check is made under the write lock, so no hand-out can slip in between.
    /// Returns whether that happened (the stored record then still lists the revoked token).
    fn swap_in(&self, ctx: &Context, mut fresh: Session) -> bool {
        let unseen = {
            let mut sessions = write(&self.sessions);
            let unseen = sessions
                .get(&ctx.name)
                .filter(|old| !old.was_handed_out() && old.pachd_address == fresh.pachd_address)
                .map(|old| old.token.clone())
                .filter(|old| old.expose_secret() != fresh.token.expose_secret());
            if let Some(old) = &unseen {
                fresh.retired.retain(|r| r.token.expose_secret() != old.expose_secret());
            }
            sessions.insert(ctx.name.clone(), fresh);
            unseen
        };
        let Some(token) = unseen else { return false };
        if let Ok(client) = self.client(ctx) {
            let name = ctx.name.clone();
            tokio::spawn(async move {
                match client.revoke(&token).await {
                    Ok(_) => debug!(context = %name, "revoked the replaced token, which nobody had received"),
                    Err(e) => debug!(context = %name, error = %e, "could not revoke the replaced token"),
                }
            });
        }
        true
    }

    /// Revokes every token of `session` that pachd may still accept: the current one first, then the replaced
    /// ones. A pachd that cannot be reached is not asked again for the rest; they are reported as unrevoked. A
    /// session for another pachd than the context's (the context was re-pointed) sends nothing: its tokens must
    /// never reach another cluster.
    pub(super) async fn revoke_all(&self, ctx: &Context, session: &Session) -> Revocation {
        let mut outcome = Revocation::default();
        let live = session.live_tokens(Utc::now());
        if session.pachd_address != ctx.pachd.to_string() {
            let why = format!(
                "the session is for pachd at {}, but the context now points at {}, which must not receive its tokens",
                session.pachd_address, ctx.pachd
            );
            unrevoked(&mut outcome, &live, why);
            return outcome;
        }
        let client = match self.client(ctx) {
            Ok(client) => client,
            Err(e) => {
                unrevoked(&mut outcome, &live, e.to_string());
                return outcome;
            }
        };
        for (i, (token, current)) in live.iter().enumerate() {
            match client.revoke(&token.token).await {
                Ok(_) => {
                    outcome.revoked += 1;
                    outcome.current |= *current;
                }
                Err(pachd::Error::TokenRejected { .. } | pachd::Error::TokenExpired { .. }) => {
                    outcome.already_invalid += 1;
                }
                Err(e @ pachd::Error::Unreachable { .. }) => {
                    warn!(context = %ctx.name, error = %e, "could not reach pachd to revoke the session's tokens");
                    unrevoked(&mut outcome, &live[i..], e.to_string());
                    break;
                }
                Err(e) => {
                    warn!(context = %ctx.name, error = %e, "pachd refused to revoke one of the session's tokens");
                    unrevoked(&mut outcome, &live[i..=i], e.to_string());
                }
            }
        }
        outcome
    }
}

/// Records `rest` as tokens that stay valid, and why.
fn unrevoked(outcome: &mut Revocation, rest: &[(RetiredToken, bool)], error: String) {
    outcome.unrevoked += u32::try_from(rest.len()).unwrap_or(u32::MAX);
    outcome.unrevoked_forever |= rest.iter().any(|(r, _)| r.expiration.is_none());
    outcome.unrevoked_until = rest.iter().filter_map(|(r, _)| r.expiration).chain(outcome.unrevoked_until).max();
    outcome.error = Some(error);
}
