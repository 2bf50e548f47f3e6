//! Interactive logins: the OIDC browser flow (authorization code + PKCE on a loopback redirect), the device flow
//! and pachd's own flow. One login runs per context however many callers ask: later callers join the flow in
//! progress and see the same URL or user code. When the last caller goes away before the end, the login is
//! cancelled (its loopback listener closes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Error, LoginDone, SessionEngine, SessionMethod, lock};
use crate::config::{Context, Method};
use crate::net::Provider;
use crate::oidc::callback::{self, Callback, Page};
use crate::oidc::{self, Tokens};

/// pachd keeps the state of its own login for three minutes (`threeMinutes` in pachd's oidc.go).
const PACHD_STATE_TTL: Duration = Duration::from_secs(180);

/// A session that ends sooner than this is not worth keeping: `login` without `--force` logs in again.
const STILL_VALID_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// Which flow the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedMethod {
    /// Let the agent choose from the context and the caller's surroundings.
    Auto,
    /// The OIDC browser flow.
    Oidc,
    /// The device flow.
    Device,
    /// pachd's own flow.
    Pachd,
}

/// How a caller wants to log in.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// The flow.
    pub method: RequestedMethod,
    /// Log in even when a valid session exists.
    pub force: bool,
    /// How long the user has.
    pub timeout: Duration,
    /// Whether the caller can open a browser on its machine.
    pub browser_available: bool,
}

/// A step of a login that callers are shown.
#[derive(Debug, Clone)]
pub enum LoginEvent {
    /// The agent chose a flow for an `Auto` login.
    MethodChosen {
        /// The flow.
        method: SessionMethod,
        /// Why.
        reason: String,
    },
    /// Open this URL in a browser.
    OpenUrl {
        /// The URL.
        url: String,
        /// The loopback redirect, when the agent listens for one.
        redirect_uri: Option<String>,
        /// How to forward the redirect port from a machine that has a browser.
        port_forward_hint: Option<String>,
    },
    /// Enter this code at this page.
    UserCode {
        /// The code.
        user_code: String,
        /// The page.
        verification_uri: String,
        /// The page with the code filled in.
        verification_uri_complete: Option<String>,
    },
    /// Waiting for the user until then.
    Waiting {
        /// The deadline.
        deadline: DateTime<Utc>,
    },
}

/// What a caller receives next.
#[derive(Debug, Clone)]
pub enum LoginStep {
    /// A step to show.
    Event(LoginEvent),
    /// The login succeeded (or a valid session already existed).
    Done(LoginDone),
    /// The login failed.
    Failed(Arc<Error>),
}

#[derive(Default)]
struct FlightState {
    events: Vec<LoginEvent>,
    outcome: Option<Result<LoginDone, Arc<Error>>>,
}

/// One login in progress.
pub(super) struct Flight {
    state: watch::Sender<FlightState>,
    waiters: AtomicUsize,
    cancel: watch::Sender<bool>,
}

impl Flight {
    fn push(&self, event: LoginEvent) {
        self.state.send_modify(|s| s.events.push(event));
    }

    fn finished(&self) -> bool {
        self.state.borrow().outcome.is_some()
    }
}

/// A caller's view of a login: every event so far, then the rest as they come.
pub struct LoginSubscription {
    flight: Option<Arc<Flight>>,
    rx: Option<watch::Receiver<FlightState>>,
    seen: usize,
    immediate: Option<LoginStep>,
    over: bool,
}

impl LoginSubscription {
    fn immediate(step: LoginStep) -> Self {
        Self { flight: None, rx: None, seen: 0, immediate: Some(step), over: false }
    }

    fn join(flight: Arc<Flight>) -> Self {
        flight.waiters.fetch_add(1, Ordering::SeqCst);
        let rx = flight.state.subscribe();
        Self { flight: Some(flight), rx: Some(rx), seen: 0, immediate: None, over: false }
    }

    /// The next step, or `None` after the outcome.
    pub async fn next(&mut self) -> Option<LoginStep> {
        if self.over {
            return None;
        }
        if let Some(step) = self.immediate.take() {
            self.over = true;
            return Some(step);
        }
        let rx = self.rx.as_mut()?;
        loop {
            {
                let state = rx.borrow_and_update();
                if let Some(event) = state.events.get(self.seen) {
                    self.seen += 1;
                    return Some(LoginStep::Event(event.clone()));
                }
                if let Some(outcome) = &state.outcome {
                    self.over = true;
                    return Some(match outcome {
                        Ok(done) => LoginStep::Done(done.clone()),
                        Err(e) => LoginStep::Failed(Arc::clone(e)),
                    });
                }
            }
            if rx.changed().await.is_err() {
                self.over = true;
                return None;
            }
        }
    }
}

impl Drop for LoginSubscription {
    fn drop(&mut self) {
        if let Some(flight) = &self.flight
            && flight.waiters.fetch_sub(1, Ordering::SeqCst) == 1
            && !flight.finished()
        {
            // The last caller left (Ctrl-C): stop waiting for a browser nobody watches.
            let _ = flight.cancel.send(true);
        }
    }
}

impl SessionEngine {
    /// Starts an interactive login for a context, or joins the one in progress. With a valid session and no
    /// `force`, the subscription reports it at once.
    ///
    /// # Errors
    /// Config errors (unknown context).
    pub fn login(self: &Arc<Self>, context: &str, opts: LoginOptions) -> Result<LoginSubscription, Error> {
        let ctx = self.config().context(context)?.clone();
        if !opts.force
            && let Some(done) = self.still_valid(&ctx.name)
        {
            return Ok(LoginSubscription::immediate(LoginStep::Done(done)));
        }
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&ctx.name)
            && !flight.finished()
        {
            info!(context = %ctx.name, "joining the login in progress");
            return Ok(LoginSubscription::join(Arc::clone(flight)));
        }
        let (cancel, cancelled) = watch::channel(false);
        let flight =
            Arc::new(Flight { state: watch::channel(FlightState::default()).0, waiters: AtomicUsize::new(0), cancel });
        flights.insert(ctx.name.clone(), Arc::clone(&flight));
        drop(flights);
        let subscription = LoginSubscription::join(Arc::clone(&flight));
        let engine = Arc::clone(self);
        tokio::spawn(async move { engine.fly(ctx, opts, flight, cancelled).await });
        Ok(subscription)
    }

    fn still_valid(&self, name: &str) -> Option<LoginDone> {
        let sessions = super::read(&self.sessions);
        let s = sessions.get(name)?;
        let now = Utc::now();
        if s.state(now) != super::SessionState::Active || s.expiration.is_some_and(|e| e - now < STILL_VALID_MARGIN) {
            return None;
        }
        Some(LoginDone {
            context: name.to_owned(),
            username: s.username.clone(),
            expiration: s.expiration,
            method: s.method,
            already_logged_in: true,
        })
    }

    async fn fly(
        self: Arc<Self>,
        ctx: Context,
        opts: LoginOptions,
        flight: Arc<Flight>,
        mut cancelled: watch::Receiver<bool>,
    ) {
        let timeout = opts.timeout;
        let outcome = tokio::select! {
            r = self.interactive(&ctx, &opts, &flight) => r,
            _ = cancelled.wait_for(|c| *c) => Err(Error::LoginCancelled { context: ctx.name.clone() }),
            () = tokio::time::sleep(timeout) => Err(Error::LoginTimedOut { context: ctx.name.clone(), after: timeout }),
        };
        match &outcome {
            Ok(done) => info!(context = %ctx.name, username = %done.username, "interactive login finished"),
            Err(e) => warn!(context = %ctx.name, error = %e, "interactive login failed"),
        }
        flight.state.send_modify(|s| s.outcome = Some(outcome.map_err(Arc::new)));
        let mut flights = lock(&self.flights);
        if flights.get(&ctx.name).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&ctx.name);
        }
    }

    async fn interactive(&self, ctx: &Context, opts: &LoginOptions, flight: &Flight) -> Result<LoginDone, Error> {
        let deadline = Utc::now() + chrono::Duration::from_std(opts.timeout).unwrap_or(chrono::Duration::minutes(5));
        let has_issuer = ctx.issuer.is_some() && ctx.client_id.is_some();
        let needs_issuer = |what: &str| {
            Error::InvalidRequest(format!(
                "context {:?} has no OIDC issuer and client id, which the {what} needs: set them with pachagent context add, or use the pachd login",
                ctx.name
            ))
        };
        let chosen = |method: SessionMethod, reason: String| {
            if opts.method == RequestedMethod::Auto {
                flight.push(LoginEvent::MethodChosen { method, reason });
            }
        };
        match (opts.method, ctx.method) {
            (RequestedMethod::Pachd, _) | (RequestedMethod::Auto, Method::Pachd) => {
                let why = if has_issuer {
                    "Logging in through pachd (the context's method is \"pachd\")."
                } else {
                    "Logging in through pachd (no OIDC issuer is configured for this context)."
                };
                chosen(SessionMethod::Pachd, why.into());
                self.pachd_login(ctx, opts, flight).await
            }
            (RequestedMethod::Device, _) | (RequestedMethod::Auto, Method::Device) => {
                if !has_issuer {
                    return Err(needs_issuer("device flow"));
                }
                chosen(SessionMethod::Device, "Using the device flow (the context's method is \"device\").".into());
                let provider = self.discover_provider(ctx).await?;
                self.device_login(ctx, &provider, deadline, flight).await
            }
            (RequestedMethod::Oidc, _) => {
                if !has_issuer {
                    return Err(needs_issuer("browser login"));
                }
                let provider = self.discover_provider(ctx).await?;
                self.browser_login(ctx, &provider, opts.browser_available, deadline, flight).await
            }
            (RequestedMethod::Auto, Method::Oidc) => {
                let provider = self.discover_provider(ctx).await?;
                if opts.browser_available {
                    chosen(SessionMethod::Oidc, "Logging in with your browser.".into());
                    self.browser_login(ctx, &provider, true, deadline, flight).await
                } else if provider.supports_device_flow() {
                    chosen(
                        SessionMethod::Device,
                        "No browser can be opened here (SSH session or no display), so using the device flow: \
                         finish the login on any device with a browser."
                            .into(),
                    );
                    self.device_login(ctx, &provider, deadline, flight).await
                } else {
                    chosen(
                        SessionMethod::Oidc,
                        "No browser can be opened here and the provider offers no device flow: open the URL in a \
                         browser on a machine that forwards the redirect port to this one."
                            .into(),
                    );
                    self.browser_login(ctx, &provider, false, deadline, flight).await
                }
            }
        }
    }

    async fn browser_login(
        &self,
        ctx: &Context,
        provider: &Provider,
        browser_here: bool,
        deadline: DateTime<Utc>,
        flight: &Flight,
    ) -> Result<LoginDone, Error> {
        let listener = callback::bind(&ctx.redirect_ports, ctx.redirect_host).await.map_err(|e| oidc_error(ctx, e))?;
        let redirect_uri = listener.redirect_uri();
        let request = provider.authorization_request(&redirect_uri).await.map_err(|e| oidc_error(ctx, e))?;
        let port = listener.port();
        let port_forward_hint = (!browser_here).then(|| format!("ssh -L {port}:127.0.0.1:{port} {}", host_name()));
        flight.push(LoginEvent::OpenUrl {
            url: request.url.clone(),
            redirect_uri: Some(redirect_uri),
            port_forward_hint,
        });
        flight.push(LoginEvent::Waiting { deadline });
        let state = request.state().to_owned();
        let (callback, responder) = listener.wait(&state).await.map_err(|e| oidc_error(ctx, e))?;
        let code = match callback {
            Callback::Code(code) => code,
            Callback::Refused { error, description } => {
                let err = oidc_error(ctx, oidc::Error::Refused { error, description });
                responder.answer(Page::Failed { message: err.to_string() });
                return Err(err);
            }
        };
        let result = async {
            let tokens = provider.exchange_code(request, code).await.map_err(|e| oidc_error(ctx, e))?;
            self.trade(ctx, tokens, SessionMethod::Oidc).await
        }
        .await;
        responder.answer(match &result {
            Ok(done) => Page::LoggedIn { username: done.username.clone() },
            Err(e) => Page::Failed { message: e.to_string() },
        });
        result
    }

    async fn device_login(
        &self,
        ctx: &Context,
        provider: &Provider,
        deadline: DateTime<Utc>,
        flight: &Flight,
    ) -> Result<LoginDone, Error> {
        let device = provider.start_device().await.map_err(|e| oidc_error(ctx, e))?;
        flight.push(LoginEvent::UserCode {
            user_code: device.user_code.clone(),
            verification_uri: device.verification_uri.clone(),
            verification_uri_complete: device.verification_uri_complete.clone(),
        });
        let deadline = deadline.min(device.expires_at);
        flight.push(LoginEvent::Waiting { deadline });
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        let tokens = provider.finish_device(&device, wait).await.map_err(|e| oidc_error(ctx, e))?;
        self.trade(ctx, tokens, SessionMethod::Device).await
    }

    async fn pachd_login(&self, ctx: &Context, opts: &LoginOptions, flight: &Flight) -> Result<LoginDone, Error> {
        let client = self.client(ctx)?;
        let login = client.get_oidc_login().await.map_err(|e| match e {
            crate::pachd::Error::Refused { message, .. } => Error::Unsupported(format!(
                "pachd at {} offers no OIDC login ({message}): ask the cluster admin to configure an identity provider, \
                 or log in with a token (pachagent login --token-stdin)",
                ctx.pachd
            )),
            source => Error::Pachd { context: ctx.name.clone(), source },
        })?;
        flight.push(LoginEvent::OpenUrl { url: login.login_url.clone(), redirect_uri: None, port_forward_hint: None });
        let wait = opts.timeout.min(PACHD_STATE_TTL);
        flight
            .push(LoginEvent::Waiting { deadline: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default() });
        let (token, identity) = tokio::time::timeout(wait, client.trade_oidc_state(&login.state))
            .await
            .map_err(|_| Error::LoginTimedOut { context: ctx.name.clone(), after: wait })?
            .map_err(|e| super::login_error(ctx, e))?;
        let _guard = self.context_lock(&ctx.name).lock_owned().await;
        self.commit_login(ctx, token, identity, SessionMethod::Pachd, None, None).await
    }

    /// Trades a verified ID token with pachd and stores the session with its refresh token.
    pub(super) async fn trade(&self, ctx: &Context, tokens: Tokens, method: SessionMethod) -> Result<LoginDone, Error> {
        require_email(ctx, &tokens)?;
        let client = self.client(ctx)?;
        let (token, identity) =
            client.trade_id_token(&tokens.id_token).await.map_err(|e| super::login_error(ctx, e))?;
        let _guard = self.context_lock(&ctx.name).lock_owned().await;
        let subject = Some(tokens.subject.clone());
        self.commit_login(ctx, token, identity, method, tokens.refresh_token, subject).await
    }
}

pub(super) fn oidc_error(ctx: &Context, source: oidc::Error) -> Error {
    Error::Oidc { context: ctx.name.clone(), source }
}

/// pachd names the user `user:<email>` from the ID token's `email` claim and rejects nothing without one: it
/// would mint a session for the bare `user:`, one name shared by everyone whose token lacks the claim.
pub(super) fn require_email(ctx: &Context, tokens: &Tokens) -> Result<(), Error> {
    if tokens.email.as_deref().is_some_and(|e| !e.is_empty()) {
        return Ok(());
    }
    Err(oidc_error(
        ctx,
        oidc::Error::InvalidIdToken(
            "it has no email claim, and pachd names users by their email (without one it would log you in as the \
             nameless \"user:\"): the context must request the email scope, and the provider must put the email in \
             the ID token"
                .into(),
        ),
    ))
}

/// This machine's name, for the `ssh -L` line a user runs elsewhere.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "THIS-HOST".to_owned())
}
