//! pachd's OIDC HTTP server (`serveOIDC`): `/authorization-code/callback`, where the IdP sends the user's browser
//! back with a code, and `200 OK` on every other path for health checks.
//!
//! The browser sees only pachd's texts (success, or a 401 naming half of the state); why a login failed goes to
//! the logs, as in pachd, so that someone who can reach the port but has no account learns nothing.

use std::sync::Arc;

use hyper::StatusCode;
use hyper::header::HeaderName;

use super::oidc_state::{OidcClient, StateTable, failure_text};
use crate::devstack::http::{HttpRequest, HttpResponse};

/// The callback path; pachd's redirect URI ends with it.
pub const CALLBACK_PATH: &str = "/authorization-code/callback";

/// What the callback needs: the state table it writes and pachd's OAuth client (absent without an issuer).
#[derive(Debug, Clone)]
pub(super) struct Callback {
    pub(super) states: Arc<StateTable>,
    pub(super) client: Option<Arc<OidcClient>>,
}

impl Callback {
    /// Answers one request on the OIDC port.
    pub(super) async fn handle(&self, req: HttpRequest) -> HttpResponse {
        if req.path != CALLBACK_PATH {
            // Go's ServeMux sends every other path (and method) to the "/" handler.
            return HttpResponse::text(StatusCode::OK, "200 OK".to_owned());
        }
        let query = req.query();
        let (Some(code), Some(state)) = (query.get("code"), query.get("state")) else {
            return go_http_error(
                StatusCode::BAD_REQUEST,
                "invalid OIDC callback request: missing OIDC state token or authorization code",
            );
        };
        let result = match &self.client {
            Some(client) => client.finish(&self.states, code, state).await,
            None => {
                tracing::warn!("OIDC callback called, but no OIDC issuer is configured");
                Err("OIDC ID provider configuration not found".to_owned())
            }
        };
        match result {
            Ok(()) => HttpResponse::text(
                StatusCode::OK,
                "You are now logged in. Go back to the terminal to use Pachyderm!".to_owned(),
            ),
            Err(_) => go_http_error(StatusCode::UNAUTHORIZED, &failure_text(state)),
        }
    }
}

/// Go's `http.Error`: plain text, `nosniff`, a trailing newline.
fn go_http_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::text(status, format!("{message}\n"))
        .with_header(HeaderName::from_static("x-content-type-options"), "nosniff")
}
