//! The token endpoint (RFC 6749 §3.2, §4.1.3, §6; RFC 8628 §3.4) and client authentication (RFC 6749 §2.3.1).
//!
//! Errors are RFC 6749 §5.2 JSON: 400, or 401 with a `WWW-Authenticate` challenge for `invalid_client`. A refresh
//! token is issued only when the login asked for `offline_access`, as Dex and oidc-provider do.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::StatusCode;

use super::clients::Client;
use super::grants::{FamilyId, Grant, TokenError};
use super::provider::{Counters, DEVICE_CODE_GRANT, Provider, oauth_error, split_scopes};
use crate::devstack::http::{HttpRequest, HttpResponse, Params};

impl Provider {
    /// POST `/token`.
    pub(crate) fn token(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let response = self.token_inner(req, now);
        if response.status != StatusCode::OK {
            Counters::bump(&self.counters.refused_token_requests);
        }
        response
    }

    fn token_inner(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let form = match request_form(req) {
            Ok(form) => form,
            Err(err) => return oauth_error(StatusCode::BAD_REQUEST, &err),
        };
        let client = match self.authenticate_client(req, &form) {
            Ok(client) => client,
            Err(err) => return oauth_error(StatusCode::UNAUTHORIZED, &err),
        };
        let result = match form.get("grant_type") {
            None => Err(TokenError::new("invalid_request", "grant_type is missing")),
            Some("authorization_code") => self.code_grant(&client, &form, now),
            Some("refresh_token") => self.refresh_grant(&client, &form, now),
            Some(DEVICE_CODE_GRANT) => self.device_grant(&client, &form, now),
            Some(other) => {
                Err(TokenError::new("unsupported_grant_type", format!("grant_type {other:?} is not supported")))
            }
        };
        match result {
            Ok((grant, refresh_token)) => self.token_response(&grant, refresh_token, now),
            Err(err) => oauth_error(StatusCode::BAD_REQUEST, &err),
        }
    }

    fn code_grant(
        &self,
        client: &Client,
        form: &Params,
        now: SystemTime,
    ) -> Result<(Grant, Option<String>), TokenError> {
        let code = form.get("code").ok_or_else(|| TokenError::new("invalid_request", "code is missing"))?;
        let mut state = self.lock();
        let (grant, family) =
            state.redeem_code(code, &client.id, form.get("redirect_uri"), form.get("code_verifier"), now)?;
        let refresh = self.maybe_refresh_token(&mut state, &grant, family, now);
        drop(state);
        Counters::bump(&self.counters.authorization_code_grants);
        Ok((grant, refresh))
    }

    fn refresh_grant(
        &self,
        client: &Client,
        form: &Params,
        now: SystemTime,
    ) -> Result<(Grant, Option<String>), TokenError> {
        let token =
            form.get("refresh_token").ok_or_else(|| TokenError::new("invalid_request", "refresh_token is missing"))?;
        let requested = form.get("scope").map(|s| split_scopes(Some(s)));
        let mut state = self.lock();
        let (grant, family) = state.redeem_refresh(token, &client.id, requested.as_deref(), now)?;
        let refresh = state.issue_refresh(grant.clone(), family, now, self.opts.refresh_token_ttl);
        drop(state);
        Counters::bump(&self.counters.refresh_grants);
        Ok((grant, Some(refresh)))
    }

    fn device_grant(
        &self,
        client: &Client,
        form: &Params,
        now: SystemTime,
    ) -> Result<(Grant, Option<String>), TokenError> {
        let device_code =
            form.get("device_code").ok_or_else(|| TokenError::new("invalid_request", "device_code is missing"))?;
        let mut state = self.lock();
        let grant = state.poll_device(device_code, &client.id, now, self.opts.device_slow_down_step)?;
        let family = state.new_family();
        let refresh = self.maybe_refresh_token(&mut state, &grant, family, now);
        drop(state);
        Counters::bump(&self.counters.device_code_grants);
        Ok((grant, refresh))
    }

    fn maybe_refresh_token(
        &self,
        state: &mut super::grants::IdpState,
        grant: &Grant,
        family: FamilyId,
        now: SystemTime,
    ) -> Option<String> {
        grant
            .scopes
            .iter()
            .any(|s| s == "offline_access")
            .then(|| state.issue_refresh(grant.clone(), family, now, self.opts.refresh_token_ttl))
    }

    /// RFC 6749 §2.3.1: `client_secret_basic` or `client_secret_post` for confidential clients, `client_id` alone for
    /// public ones; one method per request.
    pub(crate) fn authenticate_client(&self, req: &HttpRequest, form: &Params) -> Result<Client, TokenError> {
        let failed = |why: &str| TokenError::new("invalid_client", format!("client authentication failed: {why}"));
        let (id, secret) = match req.header("authorization") {
            Some(header) => {
                let (id, secret) = parse_basic(header).ok_or_else(|| failed("malformed Authorization header"))?;
                if form.get("client_secret").is_some() {
                    return Err(failed("use one client authentication method, not two"));
                }
                if form.get("client_id").is_some_and(|posted| posted != id) {
                    return Err(failed("client_id differs from the Authorization header"));
                }
                (id, secret)
            }
            None => {
                let id = form.get("client_id").ok_or_else(|| failed("no client_id"))?;
                (id.to_owned(), form.get("client_secret").map(str::to_owned))
            }
        };
        let client = self.clients.get(&id).ok_or_else(|| failed("unknown client"))?;
        // An empty secret is no secret: Go's oauth2 sends `Basic base64("id:")` for public clients.
        let secret = secret.filter(|s| !s.is_empty());
        if !client.secret_matches(secret.as_deref()) {
            return Err(failed("wrong or missing client secret"));
        }
        Ok(client)
    }
}

/// The form of a token or device request, refusing other content types and repeated parameters.
pub(crate) fn request_form(req: &HttpRequest) -> Result<Params, TokenError> {
    let form = req.form().ok_or_else(|| {
        TokenError::new("invalid_request", "the request body must be application/x-www-form-urlencoded")
    })?;
    if let Some(name) = form.repeated() {
        return Err(TokenError::new("invalid_request", format!("the parameter {name} was given more than once")));
    }
    Ok(form)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` → (id, secret).
fn parse_basic(header: &str) -> Option<(String, Option<String>)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, Some(form_decode(secret)?)))
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a space); `None` on bad escapes or bad UTF-8.
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
