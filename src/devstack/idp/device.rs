//! The device authorization grant (RFC 8628): the device authorization endpoint and the verification pages.
//!
//! The user opens `/device` (or `verification_uri_complete`, which carries the code), checks the code, enters an
//! email or cancels, and is told to close the window. The polling side lives in `token` and `grants`.

use std::time::SystemTime;

use hyper::StatusCode;
use serde_json::json;

use super::grants::DeviceDecision;
use super::pages;
use super::provider::{Counters, Provider, oauth_error, split_scopes, valid_email};
use super::token::request_form;
use crate::devstack::http::{HttpRequest, HttpResponse};
use crate::devstack::random::normalize_user_code;

impl Provider {
    /// POST `/device/code` (RFC 8628 §3.1, §3.2).
    pub(crate) fn device_authorization(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let form = match request_form(req) {
            Ok(form) => form,
            Err(err) => return oauth_error(StatusCode::BAD_REQUEST, &err),
        };
        let client = match self.authenticate_client(req, &form) {
            Ok(client) => client,
            Err(err) => return oauth_error(StatusCode::UNAUTHORIZED, &err),
        };
        let scopes = split_scopes(form.get("scope"));
        if let Err(err) = self.check_scopes(&client.id, &scopes) {
            return oauth_error(StatusCode::BAD_REQUEST, &err);
        }
        let (ttl, interval) = (self.opts.device_code_ttl, self.opts.device_poll_interval);
        let device = self.lock().begin_device(&client.id, scopes, now, ttl, interval);
        let verification_uri = format!("{}{}", self.issuer, pages::DEVICE_PATH);
        let complete = format!("{verification_uri}?user_code={}", device.user_code);
        HttpResponse::json(
            StatusCode::OK,
            &json!({
                "device_code": device.device_code,
                "user_code": device.user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": complete,
                "expires_in": ttl.as_secs(),
                // RFC 8628 counts in whole seconds; a sub-second test interval still asks for at least one.
                "interval": interval.as_secs().max(1),
            }),
        )
    }

    /// GET `/device`: the code form, or with `user_code` the sign-in form for that code.
    pub(crate) fn device_page(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let Some(typed) = req.query().get("user_code").map(str::to_owned) else {
            return HttpResponse::html(StatusCode::OK, pages::device_code(&self.issuer, None));
        };
        let pending = normalize_user_code(&typed).and_then(|code| self.lock().pending_device(&code, now));
        match pending {
            Some(device) => HttpResponse::html(
                StatusCode::OK,
                pages::device_login(&self.issuer, &device.user_code, &device.client_id, None),
            ),
            None => unknown_code(&self.issuer),
        }
    }

    /// POST `/device`: the user signed in or cancelled.
    pub(crate) fn submit_device(&self, req: &HttpRequest, now: SystemTime) -> HttpResponse {
        let Some(form) = req.form() else { return unknown_code(&self.issuer) };
        let Some(user_code) = form.get("user_code").and_then(normalize_user_code) else {
            return unknown_code(&self.issuer);
        };
        let (decision, page) = match form.get("action").unwrap_or("login") {
            "cancel" => (DeviceDecision::Deny, pages::device_cancelled()),
            _ => {
                let email = form.get("email").unwrap_or_default().trim();
                if !valid_email(email) {
                    let Some(device) = self.lock().pending_device(&user_code, now) else {
                        return unknown_code(&self.issuer);
                    };
                    let page = pages::device_login(
                        &self.issuer,
                        &device.user_code,
                        &device.client_id,
                        Some("Enter an email address."),
                    );
                    return HttpResponse::html(StatusCode::BAD_REQUEST, page);
                }
                (DeviceDecision::Approve { email: email.to_owned() }, pages::device_done(email))
            }
        };
        let approved = matches!(decision, DeviceDecision::Approve { .. });
        if self.lock().decide_device(&user_code, decision, now) {
            if approved {
                Counters::bump(&self.counters.logins);
            }
            HttpResponse::html(StatusCode::OK, page)
        } else {
            unknown_code(&self.issuer)
        }
    }
}

fn unknown_code(issuer: &str) -> HttpResponse {
    let page =
        pages::device_code(issuer, Some("That code is unknown, expired or already used. Check it and try again."));
    HttpResponse::html(StatusCode::BAD_REQUEST, page)
}
