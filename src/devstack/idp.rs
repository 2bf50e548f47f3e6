//! The embedded dev OpenID Provider: a small, standards-following OP on loopback for `pachd-dev`,
//! `pachagent dev` and tests.
//!
//! What it serves, relative to the issuer `http://127.0.0.1:<port>`:
//! - `/.well-known/openid-configuration` (discovery) and `/jwks` (a fresh RSA-2048 key per start, RS256);
//! - `/authorize` → a plain login page that asks for an email (no password) → `302` back with a one-time code;
//!   "Cancel" sends `error=access_denied` back instead;
//! - `/token`: `authorization_code` (PKCE S256), `refresh_token` (rotation with reuse detection) and
//!   `urn:ietf:params:oauth:grant-type:device_code`; RFC 6749 JSON errors;
//! - `/device/code` and the `/device` pages (RFC 8628);
//! - `/dev/counters`: a non-standard JSON view of [`IdpCounters`], so a benchmark can count refresh grants from
//!   outside the process.
//!
//! Two clients exist from the start:
//! - [`PACHAGENT_CLIENT_ID`] (`pachagent`): public, PKCE required, redirect `http://127.0.0.1/callback` or
//!   `http://localhost/callback` on any port (RFC 8252 §7.3; the host is matched literally);
//! - `pachd` ([`DevIdpOptions::pachd_client_id`]): confidential, with a generated or given secret and the redirect
//!   URIs of [`DevIdpOptions::pachd_redirect_uris`]; it trusts `pachagent`, so the scope
//!   `audience:server:client_id:pachd` puts `pachd` into the agent's ID token (`aud: ["pachd","pachagent"]`,
//!   `azp: "pachagent"`), as Dex does for trusted peers.
//!
//! Refresh tokens are issued only for the `offline_access` scope. Everything is in memory and dies with the
//! process. This module owns its HTTP server and state; it knows nothing of pachd or the agent.

mod authorize;
mod clients;
mod device;
mod grants;
mod keys;
mod pages;
mod provider;
mod token;
mod user;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use self::clients::{Client, ClientKind, Clients};
pub use self::keys::KeyError;
use self::provider::Provider;
pub use self::user::{LoginError, cancel_login, complete_device_login, complete_login};
use super::http;
use super::random;
use crate::secret::ClientSecret;

/// The public client the agent logs in as.
pub const PACHAGENT_CLIENT_ID: &str = "pachagent";
/// Dex's cross-client scope: `audience:server:client_id:<peer>` puts `<peer>` into `aud` when the peer trusts the
/// requester.
pub const AUDIENCE_SCOPE_PREFIX: &str = "audience:server:client_id:";
/// The user `pachagent dev` logs in as.
pub const DEV_EMAIL: &str = "dev@example.com";
/// Loopback on a port the system picks: the IdP is for this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// The redirect URIs registered for [`PACHAGENT_CLIENT_ID`]; any port matches.
pub const PACHAGENT_REDIRECT_URIS: [&str; 2] = ["http://127.0.0.1/callback", "http://localhost/callback"];

/// Lifetimes and clients of a [`DevIdp`]. Short defaults keep refresh paths exercised during development.
#[derive(Debug, Clone)]
pub struct DevIdpOptions {
    /// Lifetime of ID tokens (and of the unused access tokens). Default 10 minutes.
    pub id_token_ttl: Duration,
    /// Lifetime of each refresh token from its issue; every refresh starts a new one. Default 24 hours.
    pub refresh_token_ttl: Duration,
    /// Lifetime of an authorization code. Default 60 seconds.
    pub code_ttl: Duration,
    /// Lifetime of a device code. Default 10 minutes.
    pub device_code_ttl: Duration,
    /// The polling interval a device client is given. Default 5 seconds (RFC 8628 §3.2).
    pub device_poll_interval: Duration,
    /// How much each `slow_down` lengthens the interval. Default 5 seconds (RFC 8628 §3.5); tests shorten it.
    pub device_slow_down_step: Duration,
    /// The confidential client id of pachd. Default `pachd`.
    pub pachd_client_id: String,
    /// pachd's client secret; generated at start when `None`.
    pub pachd_client_secret: Option<ClientSecret>,
    /// Where the `pachd` client may be sent back (pachd-dev's `/authorization-code/callback`).
    pub pachd_redirect_uris: Vec<String>,
}

impl Default for DevIdpOptions {
    fn default() -> Self {
        Self {
            id_token_ttl: Duration::from_secs(10 * 60),
            refresh_token_ttl: Duration::from_secs(24 * 60 * 60),
            code_ttl: Duration::from_secs(60),
            device_code_ttl: Duration::from_secs(10 * 60),
            device_poll_interval: Duration::from_secs(5),
            device_slow_down_step: Duration::from_secs(5),
            pachd_client_id: super::pachd::DEFAULT_CLIENT_ID.to_owned(),
            pachd_client_secret: None,
            pachd_redirect_uris: Vec::new(),
        }
    }
}

/// What the IdP has served since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IdpCounters {
    /// Logins completed on the login or device page.
    pub logins: u64,
    /// Successful `authorization_code` grants.
    pub authorization_code_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Successful device-code grants.
    pub device_code_grants: u64,
    /// Token-endpoint requests answered with an error (including `authorization_pending`).
    pub refused_token_requests: u64,
}

/// Why the IdP could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The listener's address could not be read.
    #[error("failed to read the IdP's listen address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// No signing key could be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key generation task died.
    #[error("the key generation task failed: {0}")]
    KeyTask(#[source] tokio::task::JoinError),
}

/// Binds the IdP's listener, e.g. on [`DEFAULT_LISTEN`].
///
/// # Errors
/// [`Error::Bind`].
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_owned(), source })
}

/// A running dev IdP. [`DevIdp::stop`] shuts it down and waits; dropping it asks the server to stop without
/// waiting.
#[derive(Debug)]
pub struct DevIdp {
    provider: Arc<Provider>,
    addr: SocketAddr,
    pachd_secret: ClientSecret,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DevIdp {
    /// Generates the signing key, registers the two clients and serves on `listener` (the issuer is
    /// `http://<listener address>`).
    ///
    /// # Errors
    /// [`Error::LocalAddr`], [`Error::Key`] or [`Error::KeyTask`].
    pub async fn start(opts: DevIdpOptions, listener: TcpListener) -> Result<Self, Error> {
        let addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let issuer = format!("http://{addr}");
        // RSA generation is CPU work of up to a second; keep it off the async workers.
        let key = tokio::task::spawn_blocking(keys::SigningKey::generate).await.map_err(Error::KeyTask)??;
        let pachd_secret = opts.pachd_client_secret.clone().unwrap_or_else(|| ClientSecret::new(random::token()));
        let clients = Arc::new(Clients::default());
        clients.register(Client {
            id: PACHAGENT_CLIENT_ID.to_owned(),
            kind: ClientKind::Public,
            redirect_uris: PACHAGENT_REDIRECT_URIS.iter().map(|u| (*u).to_owned()).collect(),
            trusted_peers: Vec::new(),
        });
        clients.register(Client {
            id: opts.pachd_client_id.clone(),
            kind: ClientKind::Confidential { secret: pachd_secret.clone() },
            redirect_uris: opts.pachd_redirect_uris.clone(),
            trusted_peers: vec![PACHAGENT_CLIENT_ID.to_owned()],
        });
        let provider = Arc::new(Provider::new(issuer, opts, key, clients));
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = {
            let provider = Arc::clone(&provider);
            move |req: http::HttpRequest| {
                let provider = Arc::clone(&provider);
                async move { provider.handle(&req, SystemTime::now()) }
            }
        };
        let task = tokio::spawn(http::serve(listener, handler, async {
            let _ = stopped.await;
        }));
        info!(issuer = %provider.issuer, "dev IdP is serving");
        Ok(Self { provider, addr, pachd_secret, stop: Some(stop), task: Some(task) })
    }

    /// The issuer URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.provider.issuer
    }

    /// The address the IdP listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client registry: register more clients or look one up.
    pub fn clients(&self) -> &Clients {
        &self.provider.clients
    }

    /// The secret of the `pachd` client, for whoever plays pachd (pachd-dev exchanges codes with it).
    pub fn pachd_client_secret(&self) -> ClientSecret {
        self.pachd_secret.clone()
    }

    /// What the IdP has served so far.
    pub fn counters(&self) -> IdpCounters {
        self.provider.counters.snapshot()
    }

    /// Stops accepting, lets requests in flight finish, and returns when the server is gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        info!(issuer = %self.provider.issuer, "dev IdP stopped");
    }
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests;
