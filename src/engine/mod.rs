//! The session engine: the one owner of every context's session and the rules for using it.
//!
//! It logs in (from a pach token or an ID token handed to it), restores stored sessions at start and checks them
//! with pachd, hands out tokens that are valid for as long as the caller asks, logs out (revoke at pachd, then
//! delete the stored secret), and publishes every transition as an [`Event`]. It knows nothing of gRPC or the
//! socket: the `api` module translates. Locks are `std` locks held only for map lookups, never across an await,
//! so readers (`GetToken`, `WhoAmI`) never wait on a network call.

mod handover;
mod login;
mod persist;
mod refresh;
mod session;
mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tracing::{info, warn};

pub use self::login::{LoginEvent, LoginOptions, LoginStep, LoginSubscription, RequestedMethod};
use self::session::{Session, Verdict};
pub use self::types::*;
use crate::config::{self, Config, Context};
use crate::net::{self, Pachd};
use crate::pachd;
use crate::secret::{IdToken, PachToken, RefreshToken};
use crate::store::Store;

/// How many events a slow `Watch` subscriber may fall behind before it is told it missed some.
const EVENT_BUFFER: usize = 256;

/// The subject pachd gives an ID token without an `email` claim (`user:` and nothing after it).
const NAMELESS_USER: &str = "user:";

/// The session engine. Shared behind an `Arc` by the API server and the daemon's tasks.
pub struct SessionEngine {
    config: RwLock<Arc<Config>>,
    store: Store,
    sessions: RwLock<HashMap<String, Session>>,
    /// Serialises logins and logouts per context, so two of them cannot interleave their store writes.
    context_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: broadcast::Sender<Event>,
    /// Interactive logins in progress, by context.
    flights: Mutex<HashMap<String, Arc<login::Flight>>>,
    /// Contexts whose keyring entry may disagree with memory after a failed or timed-out store call.
    out_of_sync: Mutex<std::collections::BTreeSet<String>>,
    /// Wakes the resync task when a context falls out of sync.
    resync_needed: tokio::sync::Notify,
    /// Wakes the scheduler when a session's timetable changed.
    schedule_changed: tokio::sync::Notify,
    /// Discovered identity providers, by context (discovery is not repeated for every refresh).
    providers: Mutex<HashMap<String, Arc<net::Provider>>>,
}

impl SessionEngine {
    /// An engine over `config` and `store`, with no sessions loaded yet (see [`SessionEngine::restore`]).
    pub fn new(config: Config, store: Store) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Self {
            config: RwLock::new(Arc::new(config)),
            store,
            sessions: RwLock::new(HashMap::new()),
            context_locks: Mutex::new(HashMap::new()),
            events,
            flights: Mutex::new(HashMap::new()),
            out_of_sync: Mutex::new(std::collections::BTreeSet::new()),
            resync_needed: tokio::sync::Notify::new(),
            schedule_changed: tokio::sync::Notify::new(),
            providers: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&read(&self.config))
    }

    /// Subscribes to session events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Loads every configured context's stored session into memory (without asking pachd; see
    /// [`SessionEngine::verify_all`]). A context whose entry cannot be read stays logged out and the store error
    /// is reported in `status`.
    pub async fn restore(self: &Arc<Self>) {
        let config = self.config();
        // Concurrently: a slow keyring costs one timeout, not one per context.
        let mut loads = tokio::task::JoinSet::new();
        for ctx in config.contexts.values() {
            let (engine, ctx) = (Arc::clone(self), ctx.clone());
            loads.spawn(async move { engine.restore_context(&ctx).await });
        }
        while loads.join_next().await.is_some() {}
    }

    async fn restore_context(&self, ctx: &Context) {
        match self.store.load(&ctx.name).await {
            Ok(Some(stored)) => {
                let mut session = Session::from_stored(stored);
                if session.pachd_address != ctx.pachd.to_string() {
                    session.verdict = Verdict::LoginRequired;
                    session.last_error = Some(format!(
                        "the stored session is for pachd at {}, but the context now points at {}: run pachagent login --context {}",
                        session.pachd_address, ctx.pachd, ctx.name
                    ));
                }
                info!(context = %ctx.name, username = %session.username, "restored stored session");
                write(&self.sessions).insert(ctx.name.clone(), session);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(context = %ctx.name, error = %e, "cannot read the stored session");
            }
        }
    }

    /// Asks pachd about every session in memory: a revoked token becomes LOGIN_REQUIRED, an expired one EXPIRED,
    /// and an unreachable pachd leaves the session usable with the reason recorded.
    pub async fn verify_all(self: &Arc<Self>) {
        let names: Vec<String> = read(&self.sessions).keys().cloned().collect();
        let mut checks = tokio::task::JoinSet::new();
        for name in names {
            let engine = Arc::clone(self);
            checks.spawn(async move { (engine.verify(&name).await, name) });
        }
        while let Some(joined) = checks.join_next().await {
            if let Ok((Err(e), name)) = joined {
                warn!(context = %name, error = %e, "could not verify the restored session");
            }
        }
    }

    /// Checks one context's session with pachd and records the verdict.
    async fn verify(&self, name: &str) -> Result<(), Error> {
        let Some(session) = read(&self.sessions).get(name).cloned() else { return Ok(()) };
        if session.verdict != Verdict::Valid {
            return Ok(());
        }
        let ctx = self.config().context(name)?.clone();
        let client = self.client(&ctx)?;
        match client.who_am_i(&session.token).await {
            Ok(identity) => {
                self.update(name, |s| {
                    // A renewal or a login may have replaced the session while pachd answered: the answer is about
                    // the token that was checked, not about its successor.
                    if s.token.expose_secret() != session.token.expose_secret() {
                        return;
                    }
                    s.username = identity.username.clone();
                    s.expiration = identity.expiration;
                    // A renewal that ended for good (an ID token refused, say) keeps its error: pachd accepting the
                    // token it issued earlier says nothing about it.
                    if !s.refresh.dead {
                        s.last_error = None;
                    }
                });
                tracing::debug!(context = %name, "restored session checked with pachd");
                Ok(())
            }
            Err(e) => Err(self.record_pachd_verdict(&ctx, e)),
        }
    }

    /// Records what a pachd failure says about the session and turns it into the caller's error.
    fn record_pachd_verdict(&self, ctx: &Context, e: pachd::Error) -> Error {
        let now = Utc::now();
        if matches!(e, pachd::Error::TokenRejected { .. } | pachd::Error::TokenExpired { .. }) {
            // A renewable session may get a new token from its refresh token: renew at once.
            self.update(&ctx.name, |s| {
                if s.refreshable() {
                    s.refresh.at = Some(now);
                }
            });
            self.schedule_changed.notify_one();
        }
        match &e {
            pachd::Error::TokenRejected { .. } => {
                let detail =
                    format!("pachd no longer accepts the session's token: run pachagent login --context {}", ctx.name);
                if self.set_verdict(&ctx.name, Verdict::LoginRequired, &detail) {
                    self.emit(&ctx.name, EventKind::LoginRequired, now, detail);
                }
                Error::LoginRequired { context: ctx.name.clone() }
            }
            pachd::Error::TokenExpired { .. } => {
                let detail = format!("the session expired at pachd: run pachagent login --context {}", ctx.name);
                if self.set_verdict(&ctx.name, Verdict::Expired, &detail) {
                    self.emit(&ctx.name, EventKind::Expired, now, detail);
                }
                Error::Expired { context: ctx.name.clone() }
            }
            _ => {
                let message = e.to_string();
                self.update(&ctx.name, |s| s.last_error = Some(message.clone()));
                Error::Pachd { context: ctx.name.clone(), source: e }
            }
        }
    }

    /// Who the context's session belongs to; with `verify`, pachd is asked live.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`], [`Error::LoginRequired`], [`Error::Expired`], config and (with `verify`) pachd errors.
    pub async fn who_am_i(self: &Arc<Self>, context: &str, verify: bool) -> Result<WhoAmI, Error> {
        // Borrowed from this call's snapshot of the config: no copy of the context per call.
        let config = self.config();
        let ctx = config.context(context)?;
        if verify {
            self.verify(&ctx.name).await?;
        }
        let renewable =
            read(&self.sessions).get(&ctx.name).is_some_and(|s| s.refreshable() && !s.still_valid(Utc::now()));
        if renewable {
            // An expired (or refused) session that can be renewed is answered after the renewal, not as expired.
            self.refresh_now(&ctx.name, Some(std::time::Duration::ZERO)).await?;
        }
        let sessions = read(&self.sessions);
        let session = usable(&sessions, &ctx.name, Utc::now())?;
        Ok(WhoAmI {
            context: ctx.name.clone(),
            username: session.username.clone(),
            expiration: session.expiration,
            pachd_address: ctx.pachd.to_string(),
        })
    }

    /// Every configured context's session, in name order, and whether it is the active one.
    pub fn sessions(&self) -> Vec<SessionView> {
        let config = self.config();
        let sessions = read(&self.sessions);
        let now = Utc::now();
        config
            .contexts
            .values()
            .map(|ctx| {
                let active = config.active_context.as_deref() == Some(ctx.name.as_str());
                match sessions.get(&ctx.name) {
                    Some(s) => SessionView {
                        context: ctx.name.clone(),
                        active,
                        state: s.state(now),
                        username: s.username.clone(),
                        expiration: s.expiration,
                        refresh_at: if s.refreshable() { s.refresh.at } else { None },
                        method: Some(s.method),
                        store_backend: self.store.backend().name(),
                        pachd_address: ctx.pachd.to_string(),
                        issuer: s.issuer.clone().or_else(|| ctx.issuer.clone()),
                        last_error: s.last_error.clone(),
                    },
                    None => SessionView {
                        context: ctx.name.clone(),
                        active,
                        state: SessionState::LoggedOut,
                        username: String::new(),
                        expiration: None,
                        refresh_at: None,
                        method: None,
                        store_backend: self.store.backend().name(),
                        pachd_address: ctx.pachd.to_string(),
                        issuer: ctx.issuer.clone(),
                        last_error: None,
                    },
                }
            })
            .collect()
    }

    /// The secret store's health: a live probe, so a keyring locked since the last write shows up.
    pub async fn store_status(&self) -> StoreStatus {
        let backend = self.store.backend();
        let (available, detail) = match self.store.probe().await {
            Ok(()) => {
                self.resync().await;
                let pending = lock(&self.out_of_sync).len();
                let mut service = format!("service {:?}", self.store.service());
                if !backend.persistent() {
                    service.push_str("; sessions here do not survive a reboot");
                }
                match pending {
                    0 => (true, service),
                    n => (true, format!("{service}; {n} entries wait to be rewritten after an earlier failure")),
                }
            }
            Err(e) => (false, e.to_string()),
        };
        StoreStatus { backend: backend.name(), persistent: backend.persistent(), available, detail }
    }

    /// Logs in with a Pachyderm token the user already has (robot or session token): pachd's WhoAmI names its
    /// owner and expiry, then it is stored. A stored session is replaced only once the new one is stored.
    ///
    /// # Errors
    /// [`Error::Rejected`] when pachd does not accept the token, pachd and store errors.
    pub async fn login_with_pach_token(&self, context: &str, token: PachToken) -> Result<LoginDone, Error> {
        let ctx = self.config().context(context)?.clone();
        if token.is_empty() {
            return Err(Error::InvalidRequest("the token is empty: pipe it on stdin, e.g. pachctl auth get-robot-token ci -q | pachagent login --token-stdin".into()));
        }
        let _guard = self.context_lock(&ctx.name).lock_owned().await;
        let client = self.client(&ctx)?;
        let identity = client.who_am_i(&token).await.map_err(|e| login_error(&ctx, e))?;
        self.commit_login(&ctx, token, identity, SessionMethod::PachToken, None, None).await
    }

    /// Logs in by trading an OIDC ID token with pachd (`Authenticate{id_token}`); pachd verifies it against its
    /// issuer and returns a session token that lives at most as long as the ID token.
    ///
    /// # Errors
    /// [`Error::Rejected`] carrying pachd's verification message; [`Error::Oidc`] for a token without email
    /// (which pachd accepts as the nameless `user:`); pachd and store errors.
    pub async fn login_with_id_token(&self, context: &str, id_token: IdToken) -> Result<LoginDone, Error> {
        let ctx = self.config().context(context)?.clone();
        if id_token.is_empty() {
            return Err(Error::InvalidRequest(
                "the ID token is empty: pipe it on stdin to pachagent login --id-token-stdin".into(),
            ));
        }
        let _guard = self.context_lock(&ctx.name).lock_owned().await;
        let client = self.client(&ctx)?;
        let (token, identity) = client.trade_id_token(&id_token).await.map_err(|e| login_error(&ctx, e))?;
        drop(id_token);
        if identity.username == NAMELESS_USER {
            // pachd took an ID token without email: the session it minted is nobody's in particular.
            if let Err(e) = client.revoke(&token).await {
                warn!(context = %ctx.name, error = %e, "could not revoke the nameless session pachd minted");
            }
            return Err(Error::Oidc {
                context: ctx.name.clone(),
                source: crate::oidc::Error::InvalidIdToken(format!(
                    "it has no email claim, so pachd made its session the nameless {NAMELESS_USER:?} (the agent \
                     revoked it): hand in an ID token that carries the user's email"
                )),
            });
        }
        self.commit_login(&ctx, token, identity, SessionMethod::IdToken, None, None).await
    }

    /// Stores and installs a new session. The caller holds the context's lock.
    async fn commit_login(
        &self,
        ctx: &Context,
        token: PachToken,
        identity: pachd::Identity,
        method: SessionMethod,
        refresh_token: Option<RefreshToken>,
        subject: Option<String>,
    ) -> Result<LoginDone, Error> {
        let now = Utc::now();
        if identity.expiration.is_some_and(|e| e <= now) {
            return Err(Error::Expired { context: ctx.name.clone() });
        }
        let mut session = Session::new(ctx, token, identity, method, refresh_token, now);
        session.subject = subject;
        let session = self.successor(ctx, session, now);
        self.save(&ctx.name, &session.to_stored()).await?;
        let done = LoginDone {
            context: ctx.name.clone(),
            username: session.username.clone(),
            expiration: session.expiration,
            method,
            already_logged_in: false,
        };
        let token = session.token.clone();
        self.install(ctx, session).await;
        self.schedule_changed.notify_one();
        self.sync_pachctl(ctx, Some(&token)).await;
        info!(context = %ctx.name, username = %done.username, method = method.as_str(), "logged in");
        self.emit_with(&ctx.name, EventKind::LoggedIn, now, String::new(), &done.username, done.expiration);
        Ok(done)
    }

    /// Logs out of one context (or all): revoke the token at pachd, then delete the stored secret. A pachd that
    /// cannot be reached does not stop the local logout; the outcome says the token was not revoked.
    ///
    /// # Errors
    /// Config errors, and store errors when a secret could not be deleted (the outcome so far is in the message).
    pub async fn logout(&self, context: &str, all: bool) -> Result<Vec<LogoutOutcome>, Error> {
        let config = self.config();
        let targets: Vec<Context> =
            if all { config.contexts.values().cloned().collect() } else { vec![config.context(context)?.clone()] };
        let mut outcomes = Vec::with_capacity(targets.len());
        for ctx in &targets {
            outcomes.push(self.logout_one(ctx).await?);
        }
        Ok(outcomes)
    }

    async fn logout_one(&self, ctx: &Context) -> Result<LogoutOutcome, Error> {
        let _guard = self.context_lock(&ctx.name).lock_owned().await;
        let session = read(&self.sessions).get(&ctx.name).cloned();
        let mut outcome = LogoutOutcome {
            context: ctx.name.clone(),
            was_logged_in: session.is_some(),
            revoked: false,
            revoked_tokens: 0,
            unrevoked_tokens: 0,
            detail: None,
        };
        if let Some(session) = &session {
            let revocation = self.revoke_all(ctx, session).await;
            outcome.revoked = revocation.current;
            outcome.revoked_tokens = revocation.revoked;
            outcome.unrevoked_tokens = revocation.unrevoked;
            outcome.detail = match &revocation.error {
                Some(e) => {
                    let until = match revocation.unrevoked_until {
                        _ if revocation.unrevoked_forever => {
                            "with no expiry; revoke it with pachctl auth revoke".into()
                        }
                        Some(t) => format!("until {}", t.format("%Y-%m-%d %H:%M UTC")),
                        None => "until they expire".into(),
                    };
                    let which = match revocation.unrevoked {
                        1 => "the token stays".to_owned(),
                        n => format!("{n} tokens stay"),
                    };
                    warn!(context = %ctx.name, error = %e, "logged out locally without revoking at pachd");
                    Some(format!("not revoked at pachd ({e}); {which} valid {until}"))
                }
                None if revocation.revoked == 0 && revocation.already_invalid > 0 => {
                    Some("pachd already considered the token invalid".into())
                }
                None if revocation.revoked == 0 => {
                    Some("its tokens had all expired: nothing was left to revoke".into())
                }
                None => None,
            };
        }
        // The entry may exist even when nothing was restored (e.g. written by an agent with another config).
        let deleted = self.store.delete(&ctx.name).await;
        if session.is_some() {
            self.sync_pachctl(ctx, None).await;
        }
        if session.is_some() {
            write(&self.sessions).remove(&ctx.name);
            let now = Utc::now();
            let detail = outcome.detail.clone().unwrap_or_else(|| match outcome.revoked_tokens {
                1 => "token revoked at pachd".into(),
                n => format!("{n} tokens revoked at pachd"),
            });
            self.emit(&ctx.name, EventKind::LoggedOut, now, detail);
            info!(context = %ctx.name, revoked = outcome.revoked, "logged out");
        }
        match deleted {
            Ok(existed) => {
                outcome.was_logged_in |= existed;
                Ok(outcome)
            }
            Err(e) => {
                // Memory no longer has the session; the entry goes as soon as the store answers again.
                self.mark_out_of_sync(&ctx.name);
                Err(Error::LogoutIncomplete { context: ctx.name.clone(), revoked: outcome.revoked, source: e })
            }
        }
    }

    /// Re-reads the configuration file: new contexts get their stored sessions restored, removed ones leave
    /// memory (their keyring entries stay until `logout`).
    ///
    /// # Errors
    /// A config error; the configuration in force is kept.
    pub async fn reload_config(&self) -> Result<Arc<Config>, Error> {
        let path = self.config().path.clone();
        let fresh = Config::load(&path)?;
        let old = self.config();
        let added: Vec<Context> =
            fresh.contexts.values().filter(|c| old.contexts.get(&c.name) != Some(c)).cloned().collect();
        {
            let mut sessions = write(&self.sessions);
            sessions.retain(|name, _| fresh.contexts.get(name).is_some_and(|c| old.contexts.get(name) == Some(c)));
        }
        lock(&self.providers).clear();
        *write(&self.config) = Arc::new(fresh);
        for ctx in &added {
            self.restore_context(ctx).await;
        }
        info!(path = %path.display(), added = added.len(), "configuration reloaded");
        Ok(self.config())
    }

    /// The context's pachd. Each call is a helper of its own (see [`crate::net`]): there is no connection to keep.
    fn client(&self, ctx: &Context) -> Result<Pachd, Error> {
        Pachd::new(&ctx.pachd, ctx.ca_file.as_deref())
            .map_err(|source| Error::Pachd { context: ctx.name.clone(), source })
    }

    fn context_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.context_locks).entry(name.to_owned()).or_default())
    }

    /// Applies `f` to the context's session if there is one.
    fn update(&self, name: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = write(&self.sessions).get_mut(name) {
            f(s);
        }
    }

    /// Sets a verdict; returns whether it changed (so an event is emitted once per transition).
    fn set_verdict(&self, name: &str, verdict: Verdict, detail: &str) -> bool {
        let mut sessions = write(&self.sessions);
        let Some(s) = sessions.get_mut(name) else { return false };
        s.last_error = Some(detail.to_owned());
        let changed = s.verdict != verdict;
        s.verdict = verdict;
        changed
    }

    fn emit(&self, context: &str, kind: EventKind, at: DateTime<Utc>, detail: String) {
        let (username, expiration) =
            read(&self.sessions).get(context).map(|s| (s.username.clone(), s.expiration)).unwrap_or_default();
        self.emit_with(context, kind, at, detail, &username, expiration);
    }

    fn emit_with(
        &self,
        context: &str,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: String,
        username: &str,
        expiration: Option<DateTime<Utc>>,
    ) {
        // No subscribers is not an error: events are for whoever listens.
        let _ = self.events.send(Event {
            context: context.to_owned(),
            kind,
            at,
            expiration,
            username: username.to_owned(),
            detail,
        });
    }
}

/// The context's session if it can be used now.
fn usable<'a>(sessions: &'a HashMap<String, Session>, name: &str, now: DateTime<Utc>) -> Result<&'a Session, Error> {
    let session = sessions.get(name).ok_or_else(|| Error::NotLoggedIn { context: name.to_owned() })?;
    match session.state(now) {
        _ if session.still_valid(now) => Ok(session),
        // Active and Refreshing imply a valid token; a session here has just expired.
        SessionState::Expired | SessionState::Active | SessionState::Refreshing => {
            Err(Error::Expired { context: name.to_owned() })
        }
        SessionState::LoginRequired | SessionState::LoggedOut => Err(Error::LoginRequired { context: name.to_owned() }),
    }
}

fn login_error(ctx: &Context, e: pachd::Error) -> Error {
    match e {
        pachd::Error::TokenRejected { message }
        | pachd::Error::TokenExpired { message }
        | pachd::Error::Refused { message, .. } => Error::Rejected { context: ctx.name.clone(), message },
        source => Error::Pachd { context: ctx.name.clone(), source },
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl From<config::Error> for Error {
    fn from(e: config::Error) -> Self {
        Error::Config(e)
    }
}

impl SessionEngine {
    /// The next instant the engine has work of its own: a renewal, an expiry warning or an expiry to announce,
    /// or `now` while a renewal, an interactive login or a keyring resync is under way. `None` when nothing
    /// will ever be due without a caller (no sessions, or only sessions that neither renew nor expire).
    ///
    /// The agent's `--idle-exit` asks this; it only reads state, so asking never changes a timetable.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !lock(&self.flights).is_empty() || !lock(&self.out_of_sync).is_empty() {
            return Some(now);
        }
        let config = self.config();
        let sessions = read(&self.sessions);
        let mut next: Option<DateTime<Utc>> = None;
        let mut soonest = |t: DateTime<Utc>| next = Some(next.map_or(t, |n| n.min(t)).max(now));
        for (name, s) in sessions.iter() {
            let Ok(ctx) = config.context(name) else { continue };
            if s.refreshable() {
                match s.refresh.at {
                    _ if s.refresh.in_flight => soonest(now),
                    Some(at) => soonest(at),
                    // Not planned yet: the scheduler is about to plan it.
                    None if s.expiration.is_some() => soonest(now),
                    None => {}
                }
            } else if let Some(exp) = s.expiration
                && s.verdict == Verdict::Valid
                && exp > now
            {
                for lead in &ctx.expiry_warnings {
                    let Some(at) = chrono::Duration::from_std(*lead).ok().and_then(|l| exp.checked_sub_signed(l))
                    else {
                        continue;
                    };
                    // A lead that has passed is pending until announced (the scheduler announces the nearest).
                    if at > now || s.warned.is_none_or(|w| *lead < w) {
                        soonest(at);
                    }
                }
            }
            if let Some(exp) = s.expiration
                && !s.expiry_announced
                && s.verdict != Verdict::LoginRequired
            {
                soonest(exp);
            }
        }
        next
    }
}
