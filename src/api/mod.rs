//! The gRPC service on the agent's socket: validates requests, calls the session engine, and maps the engine's
//! errors to status codes in one place ([`to_status`]). It never talks to pachd, the IdP or the keyring itself,
//! and never logs message bodies.

mod convert;
pub mod peer;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

use self::convert::{event_to_proto, login_done_to_proto, login_event_to_proto, session_to_proto, timestamp};
use crate::engine::{self, SessionEngine};
use crate::proto::agent::{self as pb, agent_server::Agent};
use crate::secret::{IdToken, PachToken};
use crate::{config, oidc, pachd, store};

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `pachagent.v1.Agent` service.
pub struct AgentService {
    engine: Arc<SessionEngine>,
    shutdown: watch::Receiver<bool>,
}

impl AgentService {
    /// A service over `engine`; its streams end when `shutdown` turns true.
    pub fn new(engine: Arc<SessionEngine>, shutdown: watch::Receiver<bool>) -> Self {
        Self { engine, shutdown }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let req = req.into_inner();
        let who = self.engine.who_am_i(&req.context, req.verify).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::WhoAmIResponse {
            context: who.context,
            username: who.username,
            expiration: who.expiration.map(timestamp),
            pachd_address: who.pachd_address,
        }))
    }

    async fn get_token(&self, req: Request<pb::GetTokenRequest>) -> Result<Response<pb::GetTokenResponse>, Status> {
        let caller = peer::token_caller(&req);
        let req = req.into_inner();
        let min_valid = min_valid(req.min_valid_seconds);
        let grant = self
            .engine
            .get_token(&req.context, min_valid, req.fit_to_lifetime, &caller)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::GetTokenResponse {
            token: grant.token.expose_secret().to_owned(),
            expiration: grant.expiration.map(timestamp),
            username: grant.username,
            context: grant.context,
            pachd_address: grant.pachd_address,
            min_valid_seconds: grant.min_valid.as_secs(),
            pachd_ca_file: grant.pachd_ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
        }))
    }

    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        let store = self.engine.store_status().await;
        let config = self.engine.config();
        Ok(Response::new(pb::GetStatusResponse {
            sessions: self.engine.sessions().into_iter().map(session_to_proto).collect(),
            store: Some(pb::StoreHealth {
                backend: store.backend.to_owned(),
                available: store.available,
                persistent: store.persistent,
                detail: store.detail,
            }),
            active_context: config.active_context.clone().unwrap_or_default(),
            config_path: config.path.display().to_string(),
            agent_pid: std::process::id(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    type LoginStream = EventStream<pb::LoginEvent>;

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<Self::LoginStream>, Status> {
        let req = req.into_inner();
        let method = pb::LoginMethod::try_from(req.method).unwrap_or(pb::LoginMethod::Unspecified);
        let (tx, rx) = mpsc::channel(8);
        let pb::LoginRequest { context, pach_token, id_token, force, timeout_seconds, browser_available, .. } = req;
        let requested = match method {
            pb::LoginMethod::PachToken | pb::LoginMethod::IdToken => {
                let engine = Arc::clone(&self.engine);
                // Runs in its own task so that it completes (and is stored) even if the caller goes away.
                tokio::spawn(async move {
                    let result = if method == pb::LoginMethod::PachToken {
                        engine.login_with_pach_token(&context, PachToken::new(pach_token)).await
                    } else {
                        engine.login_with_id_token(&context, IdToken::new(id_token)).await
                    };
                    let _ = match result {
                        Ok(done) => tx.send(Ok(done_event(done))).await,
                        Err(e) => send_failure(&tx, &e).await,
                    };
                });
                return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
            }
            pb::LoginMethod::Oidc => engine::RequestedMethod::Oidc,
            pb::LoginMethod::Device => engine::RequestedMethod::Device,
            pb::LoginMethod::Pachd => engine::RequestedMethod::Pachd,
            pb::LoginMethod::Unspecified => engine::RequestedMethod::Auto,
        };
        let timeout = match timeout_seconds {
            0 => DEFAULT_LOGIN_TIMEOUT,
            s => Duration::from_secs(u64::from(s)).min(MAX_LOGIN_TIMEOUT),
        };
        let opts = engine::LoginOptions { method: requested, force, timeout, browser_available };
        let mut subscription = self.engine.login(&context, opts).map_err(|e| to_status(&e))?;
        // Forwards the login's steps; when the caller goes away the subscription drops, which cancels the login
        // if nobody else waits on it.
        tokio::spawn(async move {
            loop {
                let step = tokio::select! {
                    () = tx.closed() => break,
                    step = subscription.next() => step,
                };
                let sent = match step {
                    None => break,
                    Some(engine::LoginStep::Event(e)) => tx.send(Ok(login_event_to_proto(e))).await,
                    Some(engine::LoginStep::Done(done)) => tx.send(Ok(done_event(done))).await,
                    Some(engine::LoginStep::Failed(e)) => send_failure(&tx, &e).await,
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let req = req.into_inner();
        let outcomes = self.engine.logout(&req.context, req.all).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LogoutResponse {
            results: outcomes
                .into_iter()
                .map(|o| pb::LogoutResult {
                    context: o.context,
                    revoked: o.revoked,
                    detail: o.detail.unwrap_or_default(),
                    was_logged_in: o.was_logged_in,
                    revoked_tokens: o.revoked_tokens,
                    unrevoked_tokens: o.unrevoked_tokens,
                })
                .collect(),
        }))
    }

    type WatchStream = EventStream<pb::SessionEvent>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let only = if req.all_contexts {
            None
        } else {
            Some(self.engine.config().context(&req.context).map_err(|e| to_status(&e.into()))?.name.clone())
        };
        let mut shutdown = self.shutdown.clone();
        let mut events = BroadcastStream::new(self.engine.subscribe()).filter_map(move |item| match item {
            Ok(event) if only.as_deref().is_none_or(|c| c == event.context) => Some(Ok(event_to_proto(event))),
            Ok(_) => None,
            // A slow subscriber is told what it missed instead of slowing the engine down.
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(pb::SessionEvent {
                detail: format!("missed {n} events: call GetStatus for the current state"),
                at: Some(timestamp(chrono::Utc::now())),
                ..Default::default()
            })),
        });
        let (tx, rx) = mpsc::channel(16);
        // The forwarder ends when the agent stops (so shutdown is not held up by watchers) or the caller leaves.
        tokio::spawn(async move {
            let stopped = async move {
                let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
            };
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    () = &mut stopped => break,
                    () = tx.closed() => break,
                    item = events.next() => {
                        let Some(item) = item else { break };
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn reload_config(
        &self,
        _req: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let config = self.engine.reload_config().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ReloadConfigResponse {
            contexts: config.contexts.keys().cloned().collect(),
            active_context: config.active_context.clone().unwrap_or_default(),
        }))
    }
}

/// The longest validity a caller may ask of a token (a hundred years; anything longer means "forever", which only
/// a token that never expires gives).
const MAX_MIN_VALID: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A request's `min_valid_seconds` as a duration, clamped so that no later date arithmetic can overflow: no
/// session lives a century, and a token that never expires satisfies any validity.
fn min_valid(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_MIN_VALID.as_secs()))
}

/// The trailing metadata key of every error's stable reason (see the proto's header).
pub const ERROR_REASON_KEY: &str = "pachagent-error";

/// How long an interactive login waits for the user unless the caller says otherwise.
const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest wait a caller may ask for; a forgotten login should not hold a loopback port for days.
const MAX_LOGIN_TIMEOUT: Duration = Duration::from_secs(3600);

fn done_event(done: engine::LoginDone) -> pb::LoginEvent {
    pb::LoginEvent { event: Some(pb::login_event::Event::Done(login_done_to_proto(done))) }
}

/// Sends the `failed` event, then the status that ends the stream.
async fn send_failure(
    tx: &mpsc::Sender<Result<pb::LoginEvent, Status>>,
    e: &engine::Error,
) -> Result<(), mpsc::error::SendError<Result<pb::LoginEvent, Status>>> {
    let status = to_status(e);
    let failed = pb::Failed { code: status.code() as i32, message: status.message().to_owned() };
    tx.send(Ok(pb::LoginEvent { event: Some(pb::login_event::Event::Failed(failed)) })).await?;
    tx.send(Err(status)).await
}

/// The one place engine errors become gRPC statuses: NOT_FOUND for an unknown context, UNAUTHENTICATED for no
/// usable session, UNAVAILABLE when pachd cannot be reached, FAILED_PRECONDITION when local state (config,
/// keyring, cluster setup) must be fixed first.
pub fn to_status(e: &engine::Error) -> Status {
    let mut status = Status::new(code(e), e.to_string());
    if let Ok(reason) = reason(e).parse() {
        status.metadata_mut().insert(ERROR_REASON_KEY, reason);
    }
    status
}

fn code(e: &engine::Error) -> Code {
    match e {
        engine::Error::Config(config::Error::UnknownContext { .. }) => Code::NotFound,
        engine::Error::Config(_) => Code::FailedPrecondition,
        engine::Error::NotLoggedIn { .. }
        | engine::Error::LoginRequired { .. }
        | engine::Error::Expired { .. }
        | engine::Error::TooShort { .. }
        | engine::Error::RenewalRefused { .. }
        | engine::Error::Rejected { .. } => Code::Unauthenticated,
        engine::Error::Pachd { source, .. } => match source {
            pachd::Error::Unreachable { .. } => Code::Unavailable,
            pachd::Error::TokenRejected { .. } | pachd::Error::TokenExpired { .. } => Code::Unauthenticated,
            pachd::Error::NotActivated { .. } | pachd::Error::CaFile { .. } => Code::FailedPrecondition,
            pachd::Error::Refused { .. } => Code::Unknown,
        },
        engine::Error::Store { source, .. } | engine::Error::LogoutIncomplete { source, .. } => match source {
            store::Error::TimedOut { .. } => Code::Unavailable,
            _ => Code::FailedPrecondition,
        },
        engine::Error::InvalidRequest(_) => Code::InvalidArgument,
        engine::Error::Unsupported(_) => Code::FailedPrecondition,
        engine::Error::Oidc { source, .. } => match source {
            oidc::Error::Unreachable { .. } | oidc::Error::BadResponse { .. } => Code::Unavailable,
            oidc::Error::Refused { .. } | oidc::Error::InvalidIdToken(_) => Code::Aborted,
            oidc::Error::IssuerMismatch(_)
            | oidc::Error::Unsupported(_)
            | oidc::Error::Settings(_)
            | oidc::Error::Listener(_) => Code::FailedPrecondition,
        },
        engine::Error::BeyondLifetime { .. } => Code::OutOfRange,
        engine::Error::LoginTimedOut { .. } => Code::DeadlineExceeded,
        engine::Error::LoginCancelled { .. } => Code::Cancelled,
    }
}

/// The stable reason clients match on (`pachagent-error`); the proto's header lists them.
fn reason(e: &engine::Error) -> &'static str {
    match e {
        engine::Error::Config(config::Error::UnknownContext { .. }) => "unknown-context",
        engine::Error::Config(_) => "config",
        engine::Error::NotLoggedIn { .. } => "not-logged-in",
        engine::Error::LoginRequired { .. } => "login-required",
        engine::Error::Expired { .. } => "expired",
        engine::Error::TooShort { .. } => "too-short",
        engine::Error::BeyondLifetime { .. } => "beyond-lifetime",
        engine::Error::RenewalRefused { .. } => "renewal-refused",
        engine::Error::Rejected { .. } => "rejected",
        engine::Error::Pachd { source: pachd::Error::Unreachable { .. }, .. } => "pachd-unreachable",
        engine::Error::Pachd { .. } => "pachd",
        engine::Error::Store { .. } => "store",
        engine::Error::LogoutIncomplete { .. } => "logout-incomplete",
        engine::Error::InvalidRequest(_) => "invalid-request",
        engine::Error::Unsupported(_) => "unsupported",
        engine::Error::Oidc { source: oidc::Error::Unreachable { .. } | oidc::Error::BadResponse { .. }, .. } => {
            "provider-unreachable"
        }
        engine::Error::Oidc { .. } => "provider",
        engine::Error::LoginTimedOut { .. } => "login-timed-out",
        engine::Error::LoginCancelled { .. } => "login-cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validity_asked_for_is_clamped_to_a_century() {
        assert_eq!(min_valid(0), Duration::ZERO);
        assert_eq!(min_valid(600), Duration::from_secs(600));
        assert_eq!(min_valid(u64::MAX), MAX_MIN_VALID);
        // Whatever was asked, the engine can add it to any instant a session can have without overflowing.
        let far = chrono::DateTime::<chrono::Utc>::from_timestamp(253_402_300_799, 0).unwrap(); // 9999-12-31
        assert!(chrono::Duration::from_std(min_valid(u64::MAX)).ok().and_then(|d| far.checked_sub_signed(d)).is_some());
    }

    #[test]
    fn every_error_carries_its_stable_reason() {
        let status = to_status(&engine::Error::NotLoggedIn { context: "dev".into() });
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.metadata().get(ERROR_REASON_KEY).unwrap(), "not-logged-in");
        let beyond = engine::Error::BeyondLifetime {
            context: "dev".into(),
            lifetime: Duration::from_secs(60),
            wanted: Duration::from_secs(300),
        };
        let status = to_status(&beyond);
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.metadata().get(ERROR_REASON_KEY).unwrap(), "beyond-lifetime");
        assert!(status.message().contains("a new login will not help"), "{}", status.message());
    }
}
