//! The authorization endpoint and its login page (RFC 6749 §4.1, OpenID Connect Core §3.1.2, RFC 7636, RFC 9207).
//!
//! Order matters: until the client and its redirect URI are known to be good, problems are shown to the user and
//! never redirected (an open redirector would send the browser anywhere, RFC 6749 §4.1.2.1). After that, every
//! refusal goes back to the client as `error=…&state=…&iss=…`.

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use url::Url;

use super::grants::{LoginRequest, TokenError};
use super::pages;
use super::provider::{Counters, Provider, split_scopes, valid_email};
use crate::devstack::http::{HttpRequest, HttpResponse};

/// How long a login page stays usable: long enough for a person, short enough that stale tabs die.
const LOGIN_PAGE_TTL: Duration = Duration::from_secs(10 * 60);
/// The length of an S256 code challenge (base64url of 32 bytes).
const S256_CHALLENGE_LEN: usize = 43;

impl Provider {
    /// GET `/authorize`: checks the request and shows the login page.
    pub(crate) fn authorize(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let q = req.query();
        if let Some(name) = q.repeated() {
            return error_page(&format!("The parameter {name} was given more than once."));
        }
        let Some(client_id) = q.get("client_id") else {
            return error_page("The request names no client (client_id is missing).");
        };
        let Some(client) = self.clients.get(client_id) else {
            return error_page(&format!("Unknown client {client_id:?}."));
        };
        let Some(redirect_uri) = q.get("redirect_uri") else {
            return error_page("The request has no redirect_uri.");
        };
        if !client.accepts_redirect(redirect_uri) {
            return error_page(&format!("{redirect_uri:?} is not a registered redirect URI of client {client_id:?}."));
        }
        let state = q.get("state");
        let refuse = |err: TokenError| self.redirect_error(redirect_uri, state, &err);
        match q.get("response_type") {
            Some("code") => {}
            Some(other) => {
                return refuse(TokenError::new(
                    "unsupported_response_type",
                    format!("response_type {other:?} is not supported; use code"),
                ));
            }
            None => return refuse(TokenError::new("invalid_request", "response_type is missing")),
        }
        let scopes = split_scopes(q.get("scope"));
        if let Err(err) = self.check_scopes(client_id, &scopes) {
            return refuse(err);
        }
        let code_challenge = match (q.get("code_challenge"), q.get("code_challenge_method")) {
            (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => Some(challenge.to_owned()),
            (Some(_), Some("S256")) => {
                return refuse(TokenError::new("invalid_request", "code_challenge is not an S256 challenge"));
            }
            (Some(_), _) => {
                return refuse(TokenError::new("invalid_request", "code_challenge_method must be S256"));
            }
            (None, Some(_)) => return refuse(TokenError::new("invalid_request", "code_challenge is missing")),
            (None, None) if client.requires_pkce() => {
                return refuse(TokenError::new(
                    "invalid_request",
                    "PKCE is required for this client: send code_challenge with code_challenge_method=S256",
                ));
            }
            (None, None) => None,
        };
        let request = LoginRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state: state.map(str::to_owned),
            nonce: q.get("nonce").map(str::to_owned),
            code_challenge,
            login_hint: q.get("login_hint").map(str::to_owned),
        };
        let hint = request.login_hint.clone().unwrap_or_default();
        let login_id = self.lock().begin_login(request, now, LOGIN_PAGE_TTL);
        HttpResponse::html(StatusCode::OK, pages::login(&self.issuer, &login_id, client_id, &hint, None))
    }

    /// POST `/login`: the user signed in with an email or cancelled.
    pub(crate) fn submit_login(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let Some(form) = req.form() else { return error_page("The login form was not sent as a form.") };
        let expired = || error_page("This login page has expired or was already used. Start the login again.");
        let Some(login_id) = form.get("login_id") else { return expired() };
        match form.get("action").unwrap_or("login") {
            "cancel" => {
                let Some(request) = self.lock().take_login(login_id, now) else { return expired() };
                let err = TokenError::new("access_denied", "the user cancelled the login");
                self.redirect_error(&request.redirect_uri, request.state.as_deref(), &err)
            }
            "login" => {
                let email = form.get("email").unwrap_or_default().trim();
                if !valid_email(email) {
                    let Some(client_id) = self.lock().login(login_id, now).map(|r| r.client_id.clone()) else {
                        return expired();
                    };
                    let page = pages::login(&self.issuer, login_id, &client_id, email, Some("Enter an email address."));
                    return HttpResponse::html(StatusCode::BAD_REQUEST, page);
                }
                let (code, redirect_uri, client_state) = {
                    let mut state = self.lock();
                    let Some(request) = state.take_login(login_id, now) else { return expired() };
                    let (redirect_uri, client_state) = (request.redirect_uri.clone(), request.state.clone());
                    (state.issue_code(request, email.to_owned(), now, self.opts.code_ttl), redirect_uri, client_state)
                };
                Counters::bump(&self.counters.logins);
                let mut params = vec![("code", code.as_str())];
                params.extend(client_state.as_deref().map(|s| ("state", s)));
                params.push(("iss", &self.issuer));
                redirect_with(&redirect_uri, &params)
            }
            _ => error_page("Unknown action."),
        }
    }

    /// Sends a refusal back to the client (RFC 6749 §4.1.2.1), with `iss` (RFC 9207).
    fn redirect_error(&self, redirect_uri: &str, state: Option<&str>, err: &TokenError) -> HttpResponse {
        let mut params = vec![("error", err.error), ("error_description", err.description.as_str())];
        params.extend(state.map(|s| ("state", s)));
        params.push(("iss", &self.issuer));
        redirect_with(redirect_uri, &params)
    }
}

/// A 302 to `uri` with `params` added to its query.
fn redirect_with(uri: &str, params: &[(&str, &str)]) -> HttpResponse {
    match Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            HttpResponse::redirect(url.as_str())
        }
        // Only registered (hence parsable) URIs get here; refuse rather than redirect to something half-built.
        Err(_) => error_page("The redirect URI cannot be parsed."),
    }
}

fn error_page(message: &str) -> HttpResponse {
    HttpResponse::html(StatusCode::BAD_REQUEST, pages::error("Login error", message))
}

fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == S256_CHALLENGE_LEN
        && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
