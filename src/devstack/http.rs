//! The small HTTP/1.1 server under the dev IdP and pachd-dev's OIDC callback.
//!
//! Handlers see a whole request ([`HttpRequest`], body read up to [`MAX_BODY`]) and return a whole
//! [`HttpResponse`]; they never touch hyper, so they can be called directly in unit tests. [`serve`] owns the
//! accept loop and every connection task, and on shutdown stops accepting, lets in-flight requests finish (for
//! at most [`DRAIN_TIMEOUT`]) and only then returns. Every answer is marked `Cache-Control: no-store`: pages carry
//! one-time values and token responses must not be cached (RFC 6749 §5.1).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The largest request body read: forms and token requests are a few hundred bytes.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request headers; a stalled socket must not hold a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A request read in full.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpRequest {
    /// A request built by hand, for handler tests.
    #[cfg(test)]
    pub(crate) fn new(method: Method, target: &str, headers: &[(&str, &str)], body: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(*name), HeaderValue::try_from(*value)) {
                map.append(name, value);
            }
        }
        Self {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    /// The decoded query parameters, in order.
    pub(crate) fn query(&self) -> Params {
        Params::parse(self.query.as_bytes())
    }

    /// The decoded `application/x-www-form-urlencoded` body; `None` when the body has another content type.
    pub(crate) fn form(&self) -> Option<Params> {
        let content_type = self.header(header::CONTENT_TYPE.as_str())?;
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        mime.eq_ignore_ascii_case("application/x-www-form-urlencoded").then(|| Params::parse(&self.body))
    }

    /// The value of a header when it is present once and readable as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }
}

/// URL-encoded parameters, in the order they came, repeated names kept.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`, empty values treated as absent (RFC 6749 §3.1).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// The first parameter name given more than once, if any (RFC 6749 §3.1 forbids repeats).
    pub(crate) fn repeated(&self) -> Option<&str> {
        self.0
            .iter()
            .enumerate()
            .find(|(i, (k, _))| self.0[..*i].iter().any(|(seen, _)| seen == k))
            .map(|(_, (k, _))| k.as_str())
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    pub(crate) body: Bytes,
}

impl HttpResponse {
    /// A response with a body of the given content type.
    pub(crate) fn new(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self { status, headers: vec![(header::CONTENT_TYPE, content_type.to_owned())], body: body.into() }
    }

    /// An HTML page.
    pub(crate) fn html(status: StatusCode, page: String) -> Self {
        Self::new(status, "text/html; charset=utf-8", page)
    }

    /// Plain text, as Go's `net/http` labels it.
    pub(crate) fn text(status: StatusCode, text: String) -> Self {
        Self::new(status, "text/plain; charset=utf-8", text)
    }

    /// A JSON document.
    pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// A `302 Found` to `location` (what OAuth servers use to send the browser back to a client).
    pub(crate) fn redirect(location: &str) -> Self {
        Self { status: StatusCode::FOUND, headers: vec![(header::LOCATION, location.to_owned())], body: Bytes::new() }
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// The value of a header set on this response.
    #[cfg(test)]
    pub(crate) fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn into_hyper(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        for (name, value) in self.headers {
            // Values are built from URLs and fixed strings; one that is not a legal header is dropped, not sent.
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Serves `handler` on `listener` until `shutdown` completes, then drains.
///
/// Accept errors (a process out of file descriptors, a connection reset before accept) are logged and the loop
/// goes on after a short pause, as a server should not die of one bad client.
pub(crate) async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // As Go's servers (every real provider pachd ships with, and pachd) do by default: a reply
                    // written in parts must not wait for the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, handler.clone(), stop_rx.clone()));
                }
                Err(err) => {
                    warn!(error = %err, "failed to accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!(open = connections.len(), "HTTP connections still open after the drain timeout; dropping them");
        connections.abort_all();
    }
}

/// One keep-alive connection: requests in order until the client closes or shutdown asks it to finish.
async fn connection<H, F>(stream: tokio::net::TcpStream, handler: H, mut stop: watch::Receiver<bool>)
where
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(dispatch(request, handler).await.into_hyper()) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The guard `wait_for` returns must not live on while the connection drains: it is not `Send`.
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::select! {
        result = conn.as_mut() => log_connection_end(result),
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            log_connection_end(conn.await);
        }
    }
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// Reads the body (bounded) and calls the handler.
async fn dispatch<H, F>(request: Request<Incoming>, handler: H) -> HttpResponse
where
    H: Fn(HttpRequest) -> F,
    F: Future<Output = HttpResponse>,
{
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return HttpResponse::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n".to_owned()),
    };
    let request = HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    debug!(method = %request.method, path = %request.path, "HTTP request");
    handler(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_plus_and_percent_and_spot_repeats() {
        let req = HttpRequest::new(Method::GET, "/x?a=1+2&b=%2Fc&a=3&empty=", &[], "");
        let q = req.query();
        assert_eq!(q.get("a"), Some("1 2"));
        assert_eq!(q.get("b"), Some("/c"));
        assert_eq!(q.get("empty"), None);
        assert_eq!(q.repeated(), Some("a"));
    }

    #[test]
    fn forms_are_read_only_with_the_form_content_type() {
        let form = "application/x-www-form-urlencoded; charset=UTF-8";
        let req = HttpRequest::new(Method::POST, "/t", &[("content-type", form)], "x=1");
        assert_eq!(req.form().and_then(|f| f.get("x").map(str::to_owned)).as_deref(), Some("1"));
        let json = HttpRequest::new(Method::POST, "/t", &[("content-type", "application/json")], "x=1");
        assert!(json.form().is_none());
    }

    #[test]
    fn html_is_escaped_for_text_and_attributes() {
        assert_eq!(escape_html(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
