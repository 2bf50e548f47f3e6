//! `pachd-dev`: a stand-in for pachd's auth API (`auth_v2.API`) that answers the way a real pachd does.
//!
//! It serves Activate, Authenticate (`id_token`), WhoAmI, GetRobotToken and RevokeAuthToken with pachd's gRPC
//! codes and message texts (see `pachyderm-auth.md`), plus `grpc.health.v1.Health`. State lives in memory:
//! whether auth is active and a table of hashed tokens. pachd-dev has one admin, `pach:root`;
//! it has no role bindings, groups or OIDC-state login.
//!
//! This file is the public surface (options, errors, start-up, serving); `service` holds the RPC semantics.

mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use self::service::AuthService;
use super::idtoken::Verifier;
use crate::proto::auth::api_server::ApiServer;
use crate::secret::PachToken;

/// pachd's OAuth client id in the Helm chart (`pachd.oauthClientID`); ID tokens must name it in `aud`.
pub const DEFAULT_CLIENT_ID: &str = "pachd";

/// pachd's `SESSION_DURATION_MINUTES` default (43200 min = 30 days): the longest session Authenticate grants.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How pachd-dev is configured; [`Default`] is auth off, no issuer, pachd's defaults otherwise.
#[derive(Debug, Clone)]
pub struct PachdDevOptions {
    /// The OIDC issuer whose ID tokens Authenticate accepts; `None` answers "OIDC ID provider configuration
    /// not found", as pachd does without an OIDC config.
    pub issuer: Option<String>,
    /// The client id that must appear in an ID token's `aud`.
    pub client_id: String,
    /// The cap on an Authenticate session (pachd's `SESSION_DURATION_MINUTES`).
    pub session_ttl: Duration,
    /// When set, auth is active from the start with this root token (pachd's `AUTH_ROOT_TOKEN`).
    pub root_token: Option<PachToken>,
}

impl Default for PachdDevOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
            root_token: None,
        }
    }
}

/// Why pachd-dev could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root token file could not be read.
    #[error("failed to read the root token file {}: {source}", path.display())]
    ReadRootToken {
        /// The file named by `--root-token-file`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The root token file holds only whitespace; an empty root token would let nobody in.
    #[error("the root token file {} is empty", path.display())]
    EmptyRootToken {
        /// The file named by `--root-token-file`.
        path: PathBuf,
    },
    /// The issuer is not a URL (pachd refuses such an OIDC config too).
    #[error("the OIDC issuer {issuer:?} is not a valid URL: {source}")]
    InvalidIssuer {
        /// The issuer as given.
        issuer: String,
        /// Why it does not parse.
        source: url::ParseError,
    },
    /// The HTTP client for discovery and JWKS could not be built.
    #[error("failed to build the HTTP client for the OIDC issuer: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("failed to serve gRPC: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// Reads a root token from a file, dropping surrounding whitespace (the newline `echo` adds).
///
/// # Errors
/// [`Error::ReadRootToken`] when the file cannot be read, [`Error::EmptyRootToken`] when it holds no token.
pub fn read_root_token_file(path: &Path) -> Result<PachToken, Error> {
    let raw = std::fs::read_to_string(path).map_err(|source| Error::ReadRootToken { path: path.to_owned(), source })?;
    let token = PachToken::from_input(raw);
    if token.is_empty() {
        return Err(Error::EmptyRootToken { path: path.to_owned() });
    }
    Ok(token)
}

/// Binds the gRPC listener; `127.0.0.1:0` picks a free port, which [`ready_line`] then reports.
///
/// # Errors
/// [`Error::Bind`].
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_owned(), source })
}

/// The one JSON line pachd-dev prints when ready, e.g. `{"pachd":"grpc://127.0.0.1:41234"}`, with
/// `"issuer"` when one is configured. Scripts and tests read the address from it.
pub fn ready_line(addr: SocketAddr, issuer: Option<&str>) -> String {
    // Written by hand so that `pachd` comes first; values go through serde_json for escaping.
    let mut line = format!(r#"{{"pachd":{}"#, serde_json::Value::from(format!("grpc://{addr}")));
    if let Some(issuer) = issuer {
        line.push_str(&format!(r#","issuer":{}"#, serde_json::Value::from(issuer)));
    }
    line.push('}');
    line
}

/// A configured pachd-dev, ready to serve. Split from [`PachdDev::serve`] so that a bad configuration fails
/// before anything announces readiness.
#[derive(Debug)]
pub struct PachdDev {
    service: AuthService,
}

impl PachdDev {
    /// Checks the options and prepares the service.
    ///
    /// # Errors
    /// [`Error::InvalidIssuer`] or [`Error::HttpClient`].
    pub fn new(opts: PachdDevOptions) -> Result<Self, Error> {
        let verifier = match opts.issuer {
            Some(issuer) => {
                url::Url::parse(&issuer).map_err(|source| Error::InvalidIssuer { issuer: issuer.clone(), source })?;
                Some(Verifier::new(issuer, opts.client_id).map_err(Error::HttpClient)?)
            }
            None => None,
        };
        Ok(Self { service: AuthService::new(verifier, opts.root_token.as_ref(), opts.session_ttl) })
    }

    /// The configured issuer, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.service.issuer()
    }

    /// Serves `auth_v2.API` and health on `listener` until `shutdown` completes, then drains open calls.
    ///
    /// # Errors
    /// [`Error::Serve`] when the transport fails.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ApiServer<AuthService>>().await;
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(ApiServer::new(self.service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// Configures and serves pachd-dev in one call: [`PachdDev::new`] then [`PachdDev::serve`].
///
/// # Errors
/// Any [`Error`].
pub async fn serve(
    opts: PachdDevOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    PachdDev::new(opts)?.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests;
