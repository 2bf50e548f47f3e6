//! The HTTP client the OAuth requests (token, device authorization, refresh) go through.
//!
//! openidconnect's own reqwest glue reads a body of any size and hands back whatever came, so a broken or
//! hostile provider could fill the agent's memory, and a login portal's HTML page or a redirect would surface
//! as a puzzling JSON parse error. This client reads at most [`MAX_BODY_BYTES`], and says in plain words when
//! the answer is a redirect, an HTML page, a server error or nothing at all (which URL, and after how long).
//! OAuth error answers (`{"error": "invalid_grant"}`, even with a 5xx status) pass through untouched, so that
//! the library can report the provider's own error code.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use openidconnect::http::{self, HeaderValue, StatusCode, header};
use openidconnect::reqwest;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

use super::{Error, MAX_BODY_BYTES, REQUEST_TIMEOUT};

/// The provider's HTTP client: reqwest (redirects off, timeouts on) with the checks above.
#[derive(Debug, Clone)]
pub struct HttpClient(reqwest::Client);

impl HttpClient {
    /// Wraps a configured reqwest client.
    pub fn new(client: reqwest::Client) -> Self {
        Self(client)
    }
}

/// Plain GETs (discovery, keys) use the reqwest client directly and do their own checks.
impl Deref for HttpClient {
    type Target = reqwest::Client;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Why an OAuth request to the provider got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing (or not all of the answer) came back within the request budget.
    #[error("no answer within {}s (timed out): is the provider overloaded or a firewall dropping the traffic?", REQUEST_TIMEOUT.as_secs())]
    TimedOut,
    /// The connection failed (DNS, refused, TLS, reset).
    #[error("{0}")]
    Transport(String),
    /// The provider answered with a redirect, which OAuth endpoints never do.
    #[error("HTTP {status} redirect to {location:?}; redirects are not followed: check the provider's endpoint URLs")]
    Redirect {
        /// The status.
        status: StatusCode,
        /// Where it pointed.
        location: String,
    },
    /// A server error without an OAuth error body (a crashed provider or a proxy's error page).
    #[error("HTTP {0} from the provider")]
    ServerError(StatusCode),
    /// Something other than JSON came back, typically a login portal's or a proxy's HTML page.
    #[error(
        "HTTP {status} with {what} instead of JSON: is a proxy or captive portal in the way, or is the endpoint URL wrong?"
    )]
    NotJson {
        /// The status.
        status: StatusCode,
        /// What came instead ("an HTML page", "text/plain").
        what: String,
    },
    /// The answer is larger than any OAuth answer can be.
    #[error("the answer is over {MAX_BODY_BYTES} bytes, far more than any token response: refusing to read it")]
    TooLarge,
}

impl HttpError {
    /// The provider error this becomes: transient failures (timeouts, connection errors, 5xx) as
    /// [`Error::Unreachable`] so that renewals retry them, the rest as [`Error::BadResponse`].
    pub fn into_error(self, url: &str) -> Error {
        let reason = self.to_string();
        let url = url.to_owned();
        match self {
            HttpError::TimedOut | HttpError::Transport(_) | HttpError::ServerError(_) => {
                Error::Unreachable { url, reason }
            }
            HttpError::Redirect { .. } | HttpError::NotJson { .. } | HttpError::TooLarge => {
                Error::BadResponse { url, reason }
            }
        }
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(|e| HttpError::Transport(e.to_string()))?;
            let mut response = self.0.execute(request).await.map_err(transport)?;
            let status = response.status();
            if status.is_redirection() {
                let location = header_text(response.headers().get(header::LOCATION));
                return Err(HttpError::Redirect { status, location });
            }
            if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
                return Err(HttpError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            if !looks_like_json(content_type.as_ref(), &body) {
                if status.is_server_error() {
                    return Err(HttpError::ServerError(status));
                }
                let what = if is_html(content_type.as_ref(), &body) {
                    "an HTML page".to_owned()
                } else if body.is_empty() {
                    "an empty body".to_owned()
                } else {
                    header_text(content_type.as_ref())
                };
                return Err(HttpError::NotJson { status, what });
            }
            let mut builder = http::Response::builder().status(status);
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            builder.body(body).map_err(|e| HttpError::Transport(e.to_string()))
        })
    }
}

fn transport(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        return HttpError::TimedOut;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    HttpError::Transport(text)
}

fn header_text(value: Option<&HeaderValue>) -> String {
    value.and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_owned()
}

/// A JSON media type (`application/json`, `application/problem+json`), or no type and a body that opens like a
/// JSON object.
fn looks_like_json(content_type: Option<&HeaderValue>, body: &[u8]) -> bool {
    match content_type.and_then(|v| v.to_str().ok()) {
        Some(ct) => ct.to_ascii_lowercase().split(';').next().is_some_and(|m| m.trim().ends_with("json")),
        None => body.trim_ascii_start().first() == Some(&b'{'),
    }
}

fn is_html(content_type: Option<&HeaderValue>, body: &[u8]) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.to_ascii_lowercase().contains("html"))
        || body.trim_ascii_start().first() == Some(&b'<')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_recognised_by_its_media_type_or_its_first_byte() {
        let ct = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(looks_like_json(ct("application/json; charset=utf-8").as_ref(), b""));
        assert!(looks_like_json(ct("application/problem+json").as_ref(), b""));
        assert!(!looks_like_json(ct("text/html").as_ref(), b"{}"));
        assert!(looks_like_json(None, b"  {\"error\":\"x\"}"));
        assert!(!looks_like_json(None, b"<html>"));
        assert!(is_html(None, b"\n<!doctype html>"));
    }

    #[test]
    fn transient_failures_stay_retryable_and_the_rest_are_bad_answers() {
        let url = "https://idp.example/token";
        assert!(HttpError::TimedOut.into_error(url).is_transient());
        assert!(HttpError::ServerError(StatusCode::BAD_GATEWAY).into_error(url).is_transient());
        assert!(!HttpError::TooLarge.into_error(url).is_transient());
        let e = HttpError::Redirect { status: StatusCode::FOUND, location: "/token".into() }.into_error(url);
        assert!(e.to_string().contains(url) && e.to_string().contains("redirect"), "{e}");
    }
}
