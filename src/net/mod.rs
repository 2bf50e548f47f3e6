//! The agent's calls to the identity provider and to pachd, made by `pachagent-net`: a helper process started
//! for each call, which answers it and exits.
//!
//! Why: the OpenID client, HTTP, TLS and the certificate store are most of the code the agent runs, and it runs
//! them only to log in, renew, log out or check a session. Every page of code a process has run stays in its
//! resident memory for its whole life; in a helper they are paid for the length of a call, and the resident agent
//! keeps its sessions, timers and socket in a fraction of the memory (see the README's Performance section).
//!
//! This module is the agent's side: [`Provider`] and [`Pachd`] have the methods the session engine calls, and
//! each call is one request to a new helper (`proto/pachagent/net/v1/helper.proto`). What a discovery fetched
//! (the provider's documents) is kept here, so renewals do not repeat it. Dropping a call's future kills its
//! helper: a cancelled login stops polling the provider at once. The helper's side is [`serve`].

mod serve;
mod wire;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use zeroize::Zeroizing;

pub use self::serve::{answer_in_this_process, serve};
use crate::config::PachdAddress;
use crate::oidc::{self, ProviderSettings, Tokens};
use crate::pachd::{self, Identity, OidcLogin, OidcState};
use crate::programs::{self, CompanionError};
use crate::proto::net_helper::{self as proto, reply::Outcome, request::Call};
use crate::secret::{AuthCode, IdToken, PachToken, RefreshToken};

/// Where `pachagent-net` is, found when the agent starts (see [`locate`]).
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Makes a call in this process instead, sending its answers on the channel (see [`answer_in_this_process`]).
type Direct = fn(Call, UnboundedSender<Outcome>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Set by [`answer_in_this_process`]: `pachagent dev`, a development stack in one process that `cargo run` builds
/// alone, runs the agent's calls itself. A function pointer, so that the agent, which never sets it, does not
/// link the code it points to.
static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Finds `pachagent-net` next to the running program, once, when the agent starts: a missing helper is then an
/// error at start, not at the first renewal, and an upgrade that replaces the programs under a running agent does
/// not leave it looking next to a deleted executable.
///
/// # Errors
/// When the helper is not installed next to the running program.
pub fn locate() -> Result<(), CompanionError> {
    if PROGRAM.get().is_none() && DIRECT.get().is_none() {
        let _ = PROGRAM.set(programs::companion(programs::NET)?);
    }
    Ok(())
}

/// A discovered identity provider: its settings and the documents its discovery fetched.
pub struct Provider {
    settings: ProviderSettings,
    discovery: Arc<[u8]>,
    /// The key set as last fetched; a helper that had to fetch it again (the provider rotated its keys) sends
    /// the new one back.
    keys: RwLock<Arc<[u8]>>,
    device_flow: bool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

/// A started browser login: the URL for the browser, and what the callback is checked against.
pub struct AuthorizationRequest {
    /// Where the user's browser goes.
    pub url: String,
    redirect_uri: String,
    state: Zeroizing<String>,
    nonce: Zeroizing<String>,
    pkce_verifier: Zeroizing<String>,
}

impl AuthorizationRequest {
    /// The `state` the callback must carry.
    pub fn state(&self) -> &str {
        &self.state
    }
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// A started device login: what to show the user, and what to poll with.
pub struct DeviceAuthorization {
    /// The code the user types.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The same page with the code filled in, when the provider offers it.
    pub verification_uri_complete: Option<String>,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
    /// The provider's answer, with the device code that collects the tokens.
    answer: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization").field("verification_uri", &self.verification_uri).finish_non_exhaustive()
    }
}

/// A refresh's answer: the refresh token to use next, which the helper sends as soon as the provider answers, and
/// the helper, still at work on the new ID token's checks (see [`Provider::verify_refreshed`]).
pub struct Refreshed {
    /// The refresh token to use next, when the provider sent one (else the one just used stays valid).
    pub refresh_token: Option<RefreshToken>,
    checking: Helper,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshed").field("rotated", &self.refresh_token.is_some()).finish_non_exhaustive()
    }
}

impl Provider {
    /// Fetches the provider's discovery document and keys, and checks that it is the issuer the context names.
    ///
    /// # Errors
    /// As [`oidc::Provider::discover`].
    pub async fn discover(settings: ProviderSettings) -> Result<Self, oidc::Error> {
        let call = Call::Discover(wire::settings(&settings));
        match ask(call).await.map_err(|e| e.for_provider(&settings))? {
            Outcome::Discovered(found) => Ok(Self {
                settings,
                discovery: found.discovery.into(),
                keys: RwLock::new(found.keys.into()),
                device_flow: found.device_flow,
            }),
            other => Err(wire::oidc_outcome_error(other, &settings)),
        }
    }

    /// Whether the provider offers the device authorization grant.
    pub fn supports_device_flow(&self) -> bool {
        self.device_flow
    }

    /// Builds the browser URL for an authorization-code login with PKCE (S256), `state` and `nonce`.
    ///
    /// # Errors
    /// As [`oidc::Provider::authorization_request`].
    pub async fn authorization_request(&self, redirect_uri: &str) -> Result<AuthorizationRequest, oidc::Error> {
        let call = Call::AuthorizationUrl(proto::AuthorizationUrl {
            provider: Some(self.wire()),
            redirect_uri: redirect_uri.to_owned(),
        });
        match self.ask(call).await? {
            Outcome::Authorization(mut a) => Ok(AuthorizationRequest {
                url: std::mem::take(&mut a.url),
                redirect_uri: std::mem::take(&mut a.redirect_uri),
                state: Zeroizing::new(std::mem::take(&mut a.state)),
                nonce: Zeroizing::new(std::mem::take(&mut a.nonce)),
                pkce_verifier: Zeroizing::new(std::mem::take(&mut a.pkce_verifier)),
            }),
            other => Err(wire::oidc_outcome_error(other, &self.settings)),
        }
    }

    /// Exchanges the code from the callback, then verifies the ID token, including the nonce of this login.
    ///
    /// # Errors
    /// As [`oidc::Provider::exchange_code`].
    pub async fn exchange_code(&self, request: AuthorizationRequest, code: AuthCode) -> Result<Tokens, oidc::Error> {
        let call = Call::ExchangeCode(proto::ExchangeCode {
            provider: Some(self.wire()),
            authorization: Some(proto::Authorization {
                url: request.url,
                redirect_uri: request.redirect_uri,
                state: request.state.to_string(),
                nonce: request.nonce.to_string(),
                pkce_verifier: request.pkce_verifier.to_string(),
            }),
            code: code.expose_secret().to_owned(),
        });
        let outcome = self.ask(call).await?;
        self.verified(outcome)
    }

    /// Starts a device login.
    ///
    /// # Errors
    /// As [`oidc::Provider::start_device`].
    pub async fn start_device(&self) -> Result<DeviceAuthorization, oidc::Error> {
        match self.ask(Call::StartDevice(self.wire())).await? {
            Outcome::Device(device) => Ok(DeviceAuthorization {
                user_code: device.user_code,
                verification_uri: device.verification_uri,
                verification_uri_complete: device.verification_uri_complete,
                expires_at: crate::proto::time(device.expires_at.as_ref()).unwrap_or_else(Utc::now),
                answer: Zeroizing::new(device.answer),
            }),
            other => Err(wire::oidc_outcome_error(other, &self.settings)),
        }
    }

    /// Polls the token endpoint until the user approves, denies, or `timeout` passes.
    ///
    /// # Errors
    /// As [`oidc::Provider::finish_device`].
    pub async fn finish_device(&self, device: &DeviceAuthorization, timeout: Duration) -> Result<Tokens, oidc::Error> {
        let call = Call::FinishDevice(proto::FinishDevice {
            provider: Some(self.wire()),
            device: Some(proto::Device {
                user_code: device.user_code.clone(),
                verification_uri: device.verification_uri.clone(),
                verification_uri_complete: device.verification_uri_complete.clone(),
                expires_at: Some(crate::proto::timestamp(device.expires_at)),
                answer: device.answer.to_vec(),
            }),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let outcome = self.ask(call).await?;
        self.verified(outcome)
    }

    /// Trades a refresh token for fresh tokens. The answer carries the refresh token to use next, even when the
    /// rest of it will not pass [`Provider::verify_refreshed`]: with rotation the provider has already retired the
    /// old one, so the caller keeps the new one before anything else.
    ///
    /// # Errors
    /// As [`oidc::Provider::refresh`].
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<Refreshed, oidc::Error> {
        let call = Call::Refresh(proto::Refresh {
            provider: Some(self.wire()),
            refresh_token: refresh_token.expose_secret().to_owned(),
        });
        let mut helper = Helper::start(call).await.map_err(|e| e.for_provider(&self.settings))?;
        match helper.next().await.map_err(|e| e.for_provider(&self.settings))? {
            Outcome::Refreshed(mut refreshed) => {
                Ok(Refreshed { refresh_token: refreshed.refresh_token.take().map(RefreshToken::new), checking: helper })
            }
            other => Err(wire::oidc_outcome_error(other, &self.settings)),
        }
    }

    /// The new ID token's checks, which the helper of [`Provider::refresh`] makes once it has sent the refresh
    /// token to use next.
    ///
    /// # Errors
    /// As [`oidc::Provider::verify_refreshed`].
    pub async fn verify_refreshed(&self, refreshed: Refreshed) -> Result<Tokens, oidc::Error> {
        let mut helper = refreshed.checking;
        let outcome = helper.next().await.map_err(|e| e.for_provider(&self.settings))?;
        helper.finish();
        self.verified(outcome)
    }

    fn wire(&self) -> proto::Provider {
        proto::Provider {
            settings: Some(wire::settings(&self.settings)),
            discovery: self.discovery.to_vec(),
            keys: self.keys.read().unwrap_or_else(PoisonError::into_inner).to_vec(),
        }
    }

    async fn ask(&self, call: Call) -> Result<Outcome, oidc::Error> {
        ask(call).await.map_err(|e| e.for_provider(&self.settings))
    }

    fn verified(&self, outcome: Outcome) -> Result<Tokens, oidc::Error> {
        match outcome {
            Outcome::Verified(verified) => self.keep_keys(verified),
            other => Err(wire::oidc_outcome_error(other, &self.settings)),
        }
    }

    /// The tokens of a helper's answer; the key set it checked them with is kept for the next call.
    fn keep_keys(&self, verified: proto::Verified) -> Result<Tokens, oidc::Error> {
        let proto::Verified { tokens, keys } = verified;
        if !keys.is_empty() {
            *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys.into();
        }
        tokens.map(wire::tokens).ok_or_else(|| oidc::Error::BadResponse {
            url: self.settings.issuer.clone(),
            reason: "the agent's helper sent no tokens".into(),
        })
    }
}

/// pachd's auth API for one context, each call made by a helper.
#[derive(Clone, Debug)]
pub struct Pachd {
    address: String,
    ca_file: Option<PathBuf>,
}

impl Pachd {
    /// A client of `address`; nothing is dialled until the first call.
    ///
    /// # Errors
    /// [`pachd::Error::CaFile`] when a TLS address's CA file cannot be read.
    pub fn new(address: &PachdAddress, ca_file: Option<&Path>) -> Result<Self, pachd::Error> {
        let ca_file = ca_file.filter(|_| address.tls);
        if let Some(path) = ca_file {
            std::fs::metadata(path)
                .map_err(|e| pachd::Error::CaFile { path: path.display().to_string(), reason: e.to_string() })?;
        }
        Ok(Self { address: address.to_string(), ca_file: ca_file.map(Path::to_owned) })
    }

    /// Who `token` belongs to (`WhoAmI`).
    ///
    /// # Errors
    /// As [`pachd::PachdClient::who_am_i`].
    pub async fn who_am_i(&self, token: &PachToken) -> Result<Identity, pachd::Error> {
        match self.ask(Call::WhoAmI(self.wire(token.expose_secret()))).await? {
            Outcome::Identity(identity) => Ok(wire::identity(identity)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Trades an ID token for a pach token (`Authenticate{id_token}`) and asks whose it is.
    ///
    /// # Errors
    /// As [`pachd::PachdClient::authenticate_id_token`] and [`pachd::PachdClient::who_am_i`].
    pub async fn trade_id_token(&self, id_token: &IdToken) -> Result<(PachToken, Identity), pachd::Error> {
        let outcome = self.ask(Call::TradeIdToken(self.wire(id_token.expose_secret()))).await?;
        self.traded(outcome)
    }

    /// Starts a pachd-mediated login (`GetOIDCLogin`).
    ///
    /// # Errors
    /// As [`pachd::PachdClient::get_oidc_login`].
    pub async fn get_oidc_login(&self) -> Result<OidcLogin, pachd::Error> {
        match self.ask(Call::GetOidcLogin(self.wire(""))).await? {
            Outcome::OidcLogin(mut login) => Ok(OidcLogin {
                login_url: std::mem::take(&mut login.login_url),
                state: OidcState::new(std::mem::take(&mut login.state)),
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Waits for a pachd-mediated login to finish (`Authenticate{oidc_state}`) and asks whose the token is.
    ///
    /// # Errors
    /// As [`pachd::PachdClient::authenticate_oidc_state`] and [`pachd::PachdClient::who_am_i`].
    pub async fn trade_oidc_state(&self, state: &OidcState) -> Result<(PachToken, Identity), pachd::Error> {
        let outcome = self.ask(Call::TradeOidcState(self.wire(state.expose_secret()))).await?;
        self.traded(outcome)
    }

    /// Revokes `token` (`RevokeAuthToken`); the number of tokens pachd revoked.
    ///
    /// # Errors
    /// As [`pachd::PachdClient::revoke`].
    pub async fn revoke(&self, token: &PachToken) -> Result<i64, pachd::Error> {
        match self.ask(Call::Revoke(self.wire(token.expose_secret()))).await? {
            Outcome::Revoked(n) => Ok(n),
            other => Err(self.unexpected(&other)),
        }
    }

    fn wire(&self, secret: &str) -> proto::Pachd {
        proto::Pachd {
            address: self.address.clone(),
            ca_file: self.ca_file.as_ref().map(|p| p.display().to_string()),
            secret: secret.to_owned(),
        }
    }

    async fn ask(&self, call: Call) -> Result<Outcome, pachd::Error> {
        match ask(call).await {
            Ok(Outcome::PachdFailure(failure)) => Err(wire::pachd_error(failure)),
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(pachd::Error::Unreachable { address: self.address.clone(), reason: e.to_string() }),
        }
    }

    fn traded(&self, outcome: Outcome) -> Result<(PachToken, Identity), pachd::Error> {
        match outcome {
            Outcome::Traded(mut traded) => {
                let token = PachToken::new(std::mem::take(&mut traded.pach_token));
                let identity = traded.identity.take().map(wire::identity);
                let identity = identity.ok_or_else(|| self.unexpected(&Outcome::Traded(traded)))?;
                Ok((token, identity))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, outcome: &Outcome) -> pachd::Error {
        pachd::Error::Unreachable { address: self.address.clone(), reason: HelperError::mismatch(outcome).to_string() }
    }
}

/// Why a helper gave no answer.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error(
        "the agent's helper {program} could not be run ({0}): install pachagent's programs side by side (cargo \
         install --path .)",
        program = programs::NET
    )]
    Start(String),
    #[error("the agent's helper {program} failed ({0})", program = programs::NET)]
    Failed(String),
}

impl HelperError {
    fn mismatch(outcome: &Outcome) -> Self {
        HelperError::Failed(format!(
            "it answered {} to another call: install pachagent's programs from one build",
            wire::outcome_name(outcome)
        ))
    }

    /// The error as the provider's: the identity provider could not be reached through the helper (transient,
    /// so a renewal retries).
    fn for_provider(self, settings: &ProviderSettings) -> oidc::Error {
        oidc::Error::Unreachable { url: settings.issuer.clone(), reason: self.to_string() }
    }
}

/// Runs one call in a new helper and returns its answer. A failure the helper reports is an answer too
/// ([`Outcome::OidcFailure`], [`Outcome::PachdFailure`]).
async fn ask(call: Call) -> Result<Outcome, HelperError> {
    let mut helper = Helper::start(call).await?;
    let outcome = helper.next().await?;
    helper.finish();
    Ok(outcome)
}

/// A helper at work on one call. Dropped before it is done, it is killed.
enum Helper {
    /// The child is taken when it is left to exit by itself ([`Helper::finish`]).
    Process { child: Option<Box<Child>>, replies: ChildStdout },
    /// `pachagent dev`: the call runs as a task of this process (see [`answer_in_this_process`]).
    InProcess { answers: UnboundedReceiver<Outcome>, task: tokio::task::JoinHandle<()> },
}

impl Helper {
    /// Starts a helper on `call`.
    async fn start(call: Call) -> Result<Self, HelperError> {
        if let Some(direct) = DIRECT.get() {
            let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
            return Ok(Helper::InProcess { answers, task: tokio::spawn(direct(call, tx)) });
        }
        let mut request = proto::Request { call: Some(call) };
        let frame = Zeroizing::new(request.encode_length_delimited_to_vec());
        wire::wipe_request(&mut request);
        let program = match PROGRAM.get() {
            Some(program) => program.clone(),
            None => programs::companion(programs::NET).map_err(|e| HelperError::Start(e.to_string()))?,
        };
        // A process group of its own: a Ctrl-C in the agent's terminal is for the agent, which ends or waits for
        // its helpers itself.
        let mut child = tokio::process::Command::new(&program)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HelperError::Start(format!("{}: {e}", program.display())))?;
        let (Some(mut requests), Some(replies)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HelperError::Start("it started without pipes".into()));
        };
        if let Err(e) = requests.write_all(&frame).await {
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(HelperError::Failed(format!("it did not take the request ({e}) and exited with {status}")));
        }
        // Closed: the helper reads to the end of its input.
        drop(requests);
        Ok(Helper::Process { child: Some(Box::new(child)), replies })
    }

    /// The helper's next answer.
    async fn next(&mut self) -> Result<Outcome, HelperError> {
        let (child, replies) = match self {
            Helper::Process { child, replies } => (child, replies),
            Helper::InProcess { answers, .. } => {
                return answers
                    .recv()
                    .await
                    .ok_or_else(|| HelperError::Failed("the call ended without an answer".into()));
            }
        };
        let frame = crate::frames::read_async(replies).await.map_err(|e| HelperError::Failed(e.to_string()))?;
        let Some(frame) = frame else {
            let status = match child {
                Some(child) => child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string()),
                None => "an unknown status".to_owned(),
            };
            return Err(HelperError::Failed(format!("it gave no answer and exited with {status}")));
        };
        let mut reply = proto::Reply::decode(&frame[..]).map_err(|e| HelperError::Failed(e.to_string()))?;
        reply.outcome.take().ok_or_else(|| HelperError::Failed("an empty answer".into()))
    }

    /// Lets a helper that has answered exit by itself, and reaps it.
    fn finish(mut self) {
        if let Helper::Process { child, .. } = &mut self
            && let Some(mut child) = child.take()
        {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // A process helper is killed by its `Child` (kill_on_drop).
        if let Helper::InProcess { task, .. } = self {
            task.abort();
        }
    }
}
