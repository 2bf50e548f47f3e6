//! The dev IdP's OAuth clients: who may ask for a login, where the browser may be sent back, and how a client
//! proves itself at the token endpoint.
//!
//! Two clients exist from the start (see [`super::DevIdp`]): the public native client `pachagent` and the
//! confidential `pachd`. More can be registered at run time through [`Clients::register`]. Secrets are compared in
//! constant time and never printed.

use std::collections::HashMap;
use std::sync::RwLock;

use subtle::ConstantTimeEq;
use url::Url;

use crate::secret::ClientSecret;

/// How a client authenticates at the token endpoint, which decides the rest of its rules.
#[derive(Debug, Clone)]
pub enum ClientKind {
    /// A native app (RFC 8252): no secret, PKCE with S256 required, and a loopback redirect URI matches on any
    /// port because the app listens on whatever port it got.
    Public,
    /// A server-side app: authenticates with `client_secret_basic` or `client_secret_post`, PKCE optional (pachd
    /// does not use it), redirect URIs match exactly.
    Confidential {
        /// The client secret.
        secret: ClientSecret,
    },
}

/// One registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// Public or confidential.
    pub kind: ClientKind,
    /// Where the browser may be sent back. For a public client, a loopback URI here stands for every port.
    pub redirect_uris: Vec<String>,
    /// Clients that may put this client into their ID token's `aud` with the scope
    /// `audience:server:client_id:<this id>` (Dex's trusted peers).
    pub trusted_peers: Vec<String>,
}

impl Client {
    /// Whether the client must send a PKCE challenge.
    pub fn requires_pkce(&self) -> bool {
        matches!(self.kind, ClientKind::Public)
    }

    /// Whether `candidate` is one of this client's redirect URIs.
    ///
    /// Confidential clients: exact string match. Public clients: RFC 8252 §7.3, a registered loopback URI
    /// (`http://127.0.0.1/callback`, `http://localhost/callback`) matches the same scheme, host (literally: `localhost`
    /// is not `127.0.0.1`), path and query on any port; other URIs match exactly.
    pub fn accepts_redirect(&self, candidate: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == candidate) {
            return true;
        }
        if !matches!(self.kind, ClientKind::Public) {
            return false;
        }
        let Ok(candidate) = Url::parse(candidate) else { return false };
        if candidate.fragment().is_some() || !candidate.username().is_empty() || candidate.password().is_some() {
            return false;
        }
        self.redirect_uris.iter().filter_map(|r| Url::parse(r).ok()).any(|registered| {
            is_loopback(&registered)
                && registered.scheme() == candidate.scheme()
                && registered.host_str() == candidate.host_str()
                && registered.path() == candidate.path()
                && registered.query() == candidate.query()
        })
    }

    /// Checks the secret a confidential client presented; public clients must present none.
    pub(crate) fn secret_matches(&self, presented: Option<&str>) -> bool {
        match (&self.kind, presented) {
            (ClientKind::Public, None) => true,
            (ClientKind::Confidential { secret }, Some(given)) => {
                bool::from(secret.expose_secret().as_bytes().ct_eq(given.as_bytes()))
            }
            _ => false,
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// The registry of clients, shared by every request. Reads vastly outnumber registrations.
#[derive(Debug, Default)]
pub struct Clients {
    by_id: RwLock<HashMap<String, Client>>,
}

impl Clients {
    /// Adds a client, replacing any earlier one with the same id.
    pub fn register(&self, client: Client) {
        self.write().insert(client.id.clone(), client);
    }

    /// The client with this id.
    pub fn get(&self, id: &str) -> Option<Client> {
        self.by_id.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    /// The registered ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.by_id.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect();
        ids.sort();
        ids
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Client>> {
        // Every update is a single insert, so a panic elsewhere cannot leave the map half-changed.
        self.by_id.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
