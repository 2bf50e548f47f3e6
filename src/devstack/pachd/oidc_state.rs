//! pachctl's login as pachd runs it: `GetOIDCLogin` → the user's browser at the IdP → pachd's
//! `/authorization-code/callback` → `Authenticate{oidc_state}` (pachyderm-auth.md §4).
//!
//! [`StateTable`] plays the etcd collection `/oidc-authns/<state>`: a `SessionInfo{nonce, email, conversion_err}`
//! per state that disappears after its TTL, and a watch that Authenticate blocks on. [`OidcClient`] is pachd's
//! OAuth client: it builds the login URL the way Go's `oauth2.Config.AuthCodeURL` does and exchanges the code
//! with the client secret. Everything pachd only logs stays in the logs; callers see pachd's short texts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::service::AuthError;
use crate::devstack::gofmt::{encode_values, query_escape, quote};
use crate::devstack::idtoken::{self, Verifier};
use crate::devstack::random;
use crate::secret::ClientSecret;

/// pachd's `threeMinutes`: how long a state (and so a login attempt) lives.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(3 * 60);

/// `auth.DefaultOIDCScopes`, in pachd's order.
pub const DEFAULT_SCOPES: [&str; 4] = ["email", "profile", "groups", "openid"];

/// One `SessionInfo` with the TTL etcd keeps for it.
#[derive(Debug)]
struct StateRecord {
    nonce: String,
    email: Option<String>,
    conversion_err: bool,
    expires_at: Instant,
}

/// The OIDC states of pending logins, and the watch Authenticate waits on.
#[derive(Debug)]
pub(super) struct StateTable {
    records: Mutex<HashMap<String, StateRecord>>,
    changed: Notify,
    ttl: Duration,
    /// Set at shutdown: waits end, so that the gRPC server's drain is not held up by a login nobody finishes.
    closed: AtomicBool,
}

impl StateTable {
    pub(super) fn new(ttl: Duration) -> Self {
        Self { records: Mutex::new(HashMap::new()), changed: Notify::new(), ttl, closed: AtomicBool::new(false) }
    }

    /// Ends every wait, present and future, with [`AuthError::ShuttingDown`].
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StateRecord>> {
        // Each update is one insert, remove or field write: a poisoned map is still a consistent map.
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `GetOIDCLoginURL`'s store step: a new state and nonce (`random.String(30)` each), kept for the TTL.
    pub(super) fn create(&self) -> (String, String) {
        let (state, nonce) = (random::pachd_string(), random::pachd_string());
        let now = Instant::now();
        let mut records = self.lock();
        // etcd deletes expired keys on its own; here the next write does it.
        let before = records.len();
        records.retain(|_, r| now < r.expires_at);
        let expired = records.len() < before;
        let record =
            StateRecord { nonce: nonce.clone(), email: None, conversion_err: false, expires_at: now + self.ttl };
        records.insert(state.clone(), record);
        drop(records);
        if expired {
            self.changed.notify_waiters();
        }
        (state, nonce)
    }

    /// The callback's store step (`handleOIDCExchange`): with a live state, the nonce is compared and either the
    /// email or `conversion_err` is written. Returns why the login failed, for the logs, or `Ok` on success.
    fn record(&self, state: &str, outcome: Result<(String, String), String>) -> Result<(), String> {
        let now = Instant::now();
        let mut records = self.lock();
        let Some(record) = records.get_mut(state).filter(|r| now < r.expires_at) else {
            // pachd's etcd update fails on a missing key; pachd-dev reports it like any failed login (401), since
            // no login can ever succeed for a state it never issued.
            return Err(match outcome {
                Ok(_) => "the OIDC state is unknown or expired".to_owned(),
                Err(why) => format!("{why} (and the OIDC state is unknown or expired)"),
            });
        };
        let outcome = outcome.and_then(|(nonce, email)| {
            if nonce == record.nonce {
                Ok(email)
            } else {
                Err("the ID token's nonce does not match the nonce of the OIDC state".to_owned())
            }
        });
        let result = match outcome {
            Ok(email) => {
                record.email = Some(email);
                Ok(())
            }
            Err(why) => {
                record.conversion_err = true;
                Err(why)
            }
        };
        drop(records);
        self.changed.notify_waiters();
        result
    }

    /// `OIDCStateToEmail`: waits until the state has an email or a conversion error, or disappears. A state that
    /// is unknown when the wait starts is waited on until the caller gives up, as pachd's etcd watch does; the
    /// future is cancel-safe (dropping it ends the wait).
    pub(super) async fn wait_for_email(&self, state: &str) -> Result<String, AuthError> {
        let mut guard = WaitGuard { state: half(state), finished: false };
        let mut seen = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change between the look and the await is not missed.
            changed.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) {
                guard.finished = true;
                return Err(AuthError::ShuttingDown);
            }
            let deadline = {
                let now = Instant::now();
                let mut records = self.lock();
                match records.get(state) {
                    Some(r) if now >= r.expires_at => {
                        records.remove(state);
                        None
                    }
                    Some(r) => {
                        seen = true;
                        if r.conversion_err {
                            guard.finished = true;
                            return Err(AuthError::OidcAuthFailed);
                        }
                        if let Some(email) = &r.email {
                            guard.finished = true;
                            return Ok(email.clone());
                        }
                        Some(r.expires_at)
                    }
                    None => None,
                }
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None if seen => {
                    guard.finished = true;
                    return Err(AuthError::OidcStateExpired);
                }
                None => changed.await,
            }
        }
    }
}

/// Logs a wait that ended because the caller went away (the RPC future was dropped).
struct WaitGuard {
    state: String,
    finished: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if !self.finished {
            info!(state = %self.state, "Authenticate stopped waiting on an OIDC state: the client went away");
        }
    }
}

/// pachd's `half`: the first half of a state and its length, enough to match logs to a login, too little to use.
pub(super) fn half(state: &str) -> String {
    let bytes = state.as_bytes();
    format!("{}.../{}", String::from_utf8_lossy(&bytes[..bytes.len() / 2]), bytes.len())
}

/// pachd's OAuth client for its own IdP login: client id and secret, redirect URI, scopes.
#[derive(Debug)]
pub(super) struct OidcClient {
    pub(super) verifier: Verifier,
    pub(super) client_secret: ClientSecret,
    pub(super) redirect_uri: String,
    pub(super) scopes: Vec<String>,
}

/// The part of a token response the callback needs.
#[derive(Debug, Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

impl OidcClient {
    /// `GetOIDCLoginURL`: discovery, a new state, and the IdP's authorization URL for it.
    pub(super) async fn login_url(&self, states: &StateTable) -> Result<(String, String), AuthError> {
        let endpoints = self.verifier.endpoints().await.map_err(idtoken::Error::from)?;
        let (state, nonce) = states.create();
        let url = auth_code_url(
            &endpoints.authorization,
            self.verifier.client_id(),
            &self.redirect_uri,
            &self.scopes,
            &state,
            &nonce,
        );
        debug!(state = %half(&state), "OIDC login started");
        Ok((url, state))
    }

    /// `handleOIDCExchange` without the HTTP: exchange, verify, compare the nonce, record. `Err` carries the reason
    /// for the logs only.
    pub(super) async fn finish(&self, states: &StateTable, code: &str, state: &str) -> Result<(), String> {
        let outcome = self.exchange(code).await;
        let result = states.record(state, outcome);
        match &result {
            Ok(()) => info!(state = %half(state), "OIDC login finished"),
            Err(why) => warn!(state = %half(state), reason = %why, "could not convert the authorization code"),
        }
        result
    }

    /// Code → verified ID token → (nonce, email).
    async fn exchange(&self, code: &str) -> Result<(String, String), String> {
        let endpoints = self.verifier.endpoints().await.map_err(|e| e.to_string())?;
        let raw =
            self.request_token(&endpoints.token, code).await.map_err(|e| format!("failed to exchange code: {e}"))?;
        let raw = raw.ok_or_else(|| "missing id token".to_owned())?;
        let verified = self
            .verifier
            .verify(&raw, std::time::SystemTime::now())
            .await
            .map_err(|e| format!("could not verify token: {e}"))?;
        Ok((verified.nonce, verified.email))
    }

    /// Go's `oauth2.Config.Exchange` with `AuthStyleAutoDetect`: client credentials in a Basic header first (each
    /// part query-escaped), and once more in the form if that is refused.
    async fn request_token(&self, token_url: &str, code: &str) -> Result<Option<String>, String> {
        let client_id = self.verifier.client_id();
        let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
        if !self.redirect_uri.is_empty() {
            form.push(("redirect_uri", &self.redirect_uri));
        }
        let secret = self.client_secret.expose_secret();
        let http = self.verifier.http();
        let basic = http
            .post(token_url)
            .basic_auth(query_escape(client_id), Some(query_escape(secret)))
            .form(&form)
            .send()
            .await;
        let response = match basic {
            Ok(r) if r.status().is_success() => r,
            _ => {
                let mut posted = form.clone();
                posted.push(("client_id", client_id));
                posted.push(("client_secret", secret));
                http.post(token_url).form(&posted).send().await.map_err(|e| e.without_url().to_string())?
            }
        };
        let status = response.status();
        let body = response.text().await.map_err(|e| e.without_url().to_string())?;
        if !status.is_success() {
            return Err(format!("oauth2: cannot fetch token: {status}\nResponse: {body}"));
        }
        let parsed: TokenResponse =
            serde_json::from_str(&body).map_err(|e| format!("oauth2: cannot parse json: {e}"))?;
        Ok(parsed.id_token.filter(|t| !t.is_empty()))
    }
}

/// Go's `oauth2.Config.AuthCodeURL(state, response_type=code, nonce=…)`: the endpoint, `?` (or `&` when it already
/// has a query) and `url.Values.Encode()` of the parameters, sorted by name.
pub(super) fn auth_code_url(
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
    nonce: &str,
) -> String {
    let scope = scopes.join(" ");
    let mut pairs = vec![("response_type", "code"), ("client_id", client_id)];
    if !redirect_uri.is_empty() {
        pairs.push(("redirect_uri", redirect_uri));
    }
    if !scopes.is_empty() {
        pairs.push(("scope", &scope));
    }
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    pairs.push(("nonce", nonce));
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{}", encode_values(&pairs))
}

/// The text pachd's callback answers (HTTP 401) for a failed login.
pub(super) fn failure_text(state: &str) -> String {
    format!(
        "authorization failed (OIDC state token: {}; Pachyderm logs may contain more information)",
        quote(&half(state))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record_email(table: &StateTable, state: &str, nonce: &str, email: &str) -> Result<(), String> {
        table.record(state, Ok((nonce.to_owned(), email.to_owned())))
    }

    #[test]
    fn login_urls_are_built_like_go_oauth2_auth_code_url() {
        let scopes: Vec<String> = DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        let callback = "http://127.0.0.1:1657/authorization-code/callback";
        assert_eq!(
            auth_code_url("http://idp/authorize", "pachd", callback, &scopes, "S", "N"),
            "http://idp/authorize?client_id=pachd&nonce=N&redirect_uri=http%3A%2F%2F127.0.0.1%3A1657%2F\
             authorization-code%2Fcallback&response_type=code&scope=email+profile+groups+openid&state=S"
        );
        assert_eq!(
            auth_code_url("http://idp/auth?x=1", "pachd", "", &[], "S", "N"),
            "http://idp/auth?x=1&client_id=pachd&nonce=N&response_type=code&state=S"
        );
    }

    #[test]
    fn failures_name_only_half_of_the_state() {
        assert_eq!(half("abcdefghij"), "abcde.../10");
        assert_eq!(
            failure_text("abcdefghijk"),
            r#"authorization failed (OIDC state token: "abcde.../11"; Pachyderm logs may contain more information)"#
        );
    }

    #[tokio::test]
    async fn a_waiting_authenticate_gets_the_email_the_callback_records() {
        let table = Arc::new(StateTable::new(DEFAULT_STATE_TTL));
        let (state, nonce) = table.create();
        assert_eq!((state.len(), nonce.len()), (31, 31));
        let waiter = tokio::spawn({
            let (table, state) = (Arc::clone(&table), state.clone());
            async move { table.wait_for_email(&state).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        record_email(&table, &state, &nonce, "ann@example.com").unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), "ann@example.com");
        // The record stays until its TTL, so a late Authenticate finds it at once.
        assert_eq!(table.wait_for_email(&state).await.unwrap(), "ann@example.com");
    }

    #[tokio::test]
    async fn a_nonce_mismatch_or_failed_exchange_fails_the_login() {
        let table = StateTable::new(DEFAULT_STATE_TTL);
        let (state, _nonce) = table.create();
        let err = record_email(&table, &state, "another-nonce", "eve@example.com").unwrap_err();
        assert!(err.contains("nonce"), "{err}");
        assert!(matches!(table.wait_for_email(&state).await, Err(AuthError::OidcAuthFailed)));

        let (state, _) = table.create();
        assert!(table.record(&state, Err("failed to exchange code: boom".into())).is_err());
        assert!(matches!(table.wait_for_email(&state).await, Err(AuthError::OidcAuthFailed)));
    }

    #[tokio::test]
    async fn a_state_that_expires_while_waited_on_reports_expiry() {
        let table = StateTable::new(Duration::from_millis(50));
        let (state, nonce) = table.create();
        assert!(matches!(table.wait_for_email(&state).await, Err(AuthError::OidcStateExpired)));
        assert!(record_email(&table, &state, &nonce, "late@example.com").is_err(), "the callback is too late too");
    }

    #[tokio::test]
    async fn closing_the_table_ends_every_wait() {
        let table = Arc::new(StateTable::new(DEFAULT_STATE_TTL));
        let waiter = tokio::spawn({
            let table = Arc::clone(&table);
            async move { table.wait_for_email("never-issued").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        table.close();
        assert!(matches!(waiter.await.unwrap(), Err(AuthError::ShuttingDown)));
    }

    #[tokio::test]
    async fn an_unknown_state_is_waited_on_until_the_caller_gives_up() {
        let table = StateTable::new(DEFAULT_STATE_TTL);
        let waited = tokio::time::timeout(Duration::from_millis(100), table.wait_for_email("never-issued")).await;
        assert!(waited.is_err());
        assert!(record_email(&table, "never-issued", "n", "x@example.com").is_err());
    }
}
