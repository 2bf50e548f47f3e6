//! `pachd-dev`: a stand-in for pachd's auth API (`auth_v2.API`) that answers the way a real pachd does.
//!
//! It serves Activate, Authenticate (`id_token` and `oidc_state`), WhoAmI, GetOIDCLogin, GetRobotToken and
//! RevokeAuthToken with pachd's gRPC codes and message texts (see `pachyderm-auth.md`), plus
//! `grpc.health.v1.Health`; and, like pachd's OIDC port, an HTTP server with `/authorization-code/callback`.
//! State lives in memory: whether auth is active, a table of hashed tokens, and the OIDC states of pending
//! pachctl logins. pachd-dev has one admin, `pach:root`; it has no role bindings or groups.
//!
//! This file is the public surface (options, errors, start-up, serving); `service` holds the RPC semantics,
//! `oidc_state` pachctl's login and `callback` the HTTP side of it.

mod callback;
mod oidc_state;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

pub use self::callback::CALLBACK_PATH;
use self::callback::Callback;
pub use self::oidc_state::{DEFAULT_SCOPES, DEFAULT_STATE_TTL};
use self::oidc_state::{OidcClient, StateTable};
use self::service::AuthService;
use super::http;
use super::idtoken::Verifier;
use crate::proto::auth::api_server::ApiServer;
use crate::secret::{ClientSecret, PachToken};

/// pachd's OAuth client id in the Helm chart (`pachd.oauthClientID`); ID tokens must name it in `aud`.
pub const DEFAULT_CLIENT_ID: &str = "pachd";

/// pachd's `SESSION_DURATION_MINUTES` default (43200 min = 30 days): the longest session Authenticate grants.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How pachd-dev is configured; [`Default`] is auth off, no issuer, pachd's defaults otherwise.
#[derive(Debug, Clone)]
pub struct PachdDevOptions {
    /// The OIDC issuer whose ID tokens Authenticate accepts and where GetOIDCLogin sends users; `None` answers
    /// "OIDC ID provider configuration not found", as pachd does without an OIDC config.
    pub issuer: Option<String>,
    /// pachd's OAuth client id: the audience ID tokens must name, and the client of pachctl's login.
    pub client_id: String,
    /// pachd's OAuth client secret, sent when exchanging a code at the callback (empty when `None`).
    pub client_secret: Option<ClientSecret>,
    /// The redirect URI in login URLs; `None` means pachd-dev's own callback
    /// (`http://<OIDC listen address>/authorization-code/callback`).
    pub redirect_uri: Option<String>,
    /// The scopes of pachctl's login ([`DEFAULT_SCOPES`] unless changed).
    pub scopes: Vec<String>,
    /// How long a GetOIDCLogin state lives (pachd: 3 minutes).
    pub oidc_state_ttl: Duration,
    /// The cap on an Authenticate session (pachd's `SESSION_DURATION_MINUTES`).
    pub session_ttl: Duration,
    /// When set, auth is active from the start with this root token (pachd's `AUTH_ROOT_TOKEN`).
    pub root_token: Option<PachToken>,
    /// When set, gRPC is served over TLS with this certificate and key (pachd's `pachd.tls`), so clients dial
    /// `grpcs://` and trust its CA through `server_cas`.
    pub tls: Option<ServerTls>,
}

/// A TLS server identity: a PEM certificate chain and its PEM private key.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate and key files.
    ///
    /// # Errors
    /// [`Error::ReadTls`] naming the file that could not be read.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| Error::ReadTls { path: path.to_owned(), source });
        Ok(Self { cert_pem: read(cert)?, key_pem: zeroize::Zeroizing::new(read(key)?) })
    }
}

impl Default for PachdDevOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: None,
            redirect_uri: None,
            scopes: DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            oidc_state_ttl: DEFAULT_STATE_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            root_token: None,
            tls: None,
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
    /// The client secret file could not be read.
    #[error("failed to read the client secret file {}: {source}", path.display())]
    ReadClientSecret {
        /// The file named by `--client-secret-file`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The client secret file holds only whitespace.
    #[error("the client secret file {} is empty", path.display())]
    EmptyClientSecret {
        /// The file named by `--client-secret-file`.
        path: PathBuf,
    },
    /// A TLS certificate or key file could not be read.
    #[error("failed to read the TLS file {}: {source}", path.display())]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A listener's address could not be read.
    #[error("failed to read a listen address: {0}")]
    LocalAddr(#[source] std::io::Error),
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

/// Reads pachd's OAuth client secret from a file, dropping surrounding whitespace.
///
/// # Errors
/// [`Error::ReadClientSecret`] when the file cannot be read, [`Error::EmptyClientSecret`] when it holds nothing.
pub fn read_client_secret_file(path: &Path) -> Result<ClientSecret, Error> {
    let raw =
        std::fs::read_to_string(path).map_err(|source| Error::ReadClientSecret { path: path.to_owned(), source })?;
    let secret = ClientSecret::from_input(raw);
    if secret.is_empty() {
        return Err(Error::EmptyClientSecret { path: path.to_owned() });
    }
    Ok(secret)
}

/// pachd-dev's own redirect URI for an OIDC listener on `addr`.
pub fn callback_url(addr: SocketAddr) -> String {
    format!("http://{addr}{CALLBACK_PATH}")
}

/// TCP_NODELAY on an accepted connection, as Go (pachd's language) sets on every TCP connection: HEADERS, DATA and
/// trailers written apart must not wait for the client's delayed ACK (a 40 ms stall on a new connection).
fn nodelay(accepted: std::io::Result<tokio::net::TcpStream>) -> std::io::Result<tokio::net::TcpStream> {
    let stream = accepted?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Binds a listener (gRPC or OIDC HTTP); `127.0.0.1:0` picks a free port, which [`ready_line`] then reports.
///
/// # Errors
/// [`Error::Bind`].
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_owned(), source })
}

/// The one JSON line pachd-dev prints when ready, e.g.
/// `{"pachd":"grpc://127.0.0.1:41234","issuer":"http://127.0.0.1:41235","oidc_callback":"http://127.0.0.1:41236/authorization-code/callback"}`,
/// `"issuer"` only when one is configured, and `grpcs://` when serving TLS. Scripts and tests read the
/// addresses from it.
pub fn ready_line(addr: SocketAddr, tls: bool, issuer: Option<&str>, oidc_callback: &str) -> String {
    let scheme = if tls { "grpcs" } else { "grpc" };
    // Written by hand so that `pachd` comes first; values go through serde_json for escaping.
    let mut line = format!(r#"{{"pachd":{}"#, serde_json::Value::from(format!("{scheme}://{addr}")));
    if let Some(issuer) = issuer {
        line.push_str(&format!(r#","issuer":{}"#, serde_json::Value::from(issuer)));
    }
    line.push_str(&format!(r#","oidc_callback":{}}}"#, serde_json::Value::from(oidc_callback)));
    line
}

/// A configured pachd-dev, ready to serve. Split from [`PachdDev::serve`] so that a bad configuration fails
/// before anything announces readiness.
#[derive(Debug)]
pub struct PachdDev {
    service: AuthService,
    callback: Callback,
    redirect_uri: String,
    tls: Option<ServerTls>,
}

impl PachdDev {
    /// Checks the options and prepares the service. `oidc_addr` is where the OIDC HTTP server will listen; it
    /// makes the default redirect URI.
    ///
    /// # Errors
    /// [`Error::InvalidIssuer`] or [`Error::HttpClient`].
    pub fn new(opts: PachdDevOptions, oidc_addr: SocketAddr) -> Result<Self, Error> {
        let redirect_uri = opts.redirect_uri.unwrap_or_else(|| callback_url(oidc_addr));
        let client = match opts.issuer {
            Some(issuer) => {
                url::Url::parse(&issuer).map_err(|source| Error::InvalidIssuer { issuer: issuer.clone(), source })?;
                let verifier = Verifier::new(issuer, opts.client_id).map_err(Error::HttpClient)?;
                Some(Arc::new(OidcClient {
                    verifier,
                    client_secret: opts.client_secret.unwrap_or_else(|| ClientSecret::new(String::new())),
                    redirect_uri: redirect_uri.clone(),
                    scopes: opts.scopes,
                }))
            }
            None => None,
        };
        let states = Arc::new(StateTable::new(opts.oidc_state_ttl));
        let service = AuthService::new(client.clone(), Arc::clone(&states), opts.root_token.as_ref(), opts.session_ttl);
        Ok(Self { service, callback: Callback { states, client }, redirect_uri, tls: opts.tls })
    }

    /// The configured issuer, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.service.issuer()
    }

    /// Whether gRPC is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The redirect URI that login URLs carry (pachd-dev's callback unless configured otherwise).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Serves `auth_v2.API` and health on `grpc`, and the OIDC callback on `oidc`, until `shutdown` completes;
    /// then both drain. Authenticate calls still waiting on an OIDC state end with the gRPC server.
    ///
    /// # Errors
    /// [`Error::Serve`] when the gRPC transport fails.
    pub async fn serve(
        self,
        grpc: TcpListener,
        oidc: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        // Authenticate calls waiting on an OIDC state would hold the gRPC drain open for as long as the state
        // lives (forever for an unknown one): end them when shutdown begins.
        let states = Arc::clone(&self.callback.states);
        let shutdown = async move {
            shutdown.await;
            states.close();
        };
        let callback = self.callback;
        let handler = move |req: http::HttpRequest| {
            let callback = callback.clone();
            async move { callback.handle(req).await }
        };
        let http_task = tokio::spawn(http::serve(oidc, handler, async {
            let _ = http_stopped.await;
        }));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ApiServer<AuthService>>().await;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &*tls.key_pem);
            server =
                server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)).map_err(Error::Serve)?;
        }
        let served = server
            .add_service(health_service)
            .add_service(ApiServer::new(self.service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc).map(nodelay), shutdown)
            .await
            .map_err(Error::Serve);
        let _ = stop_http.send(());
        let _ = http_task.await;
        served
    }
}

#[cfg(test)]
mod tests;
