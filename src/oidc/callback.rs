//! The loopback listener the provider sends the browser back to at the end of a login.
//!
//! It binds 127.0.0.1, and also [::1] on the same port when the redirect URI says `localhost` (a browser may
//! resolve that to either, and a port left free on one family is a port another local user can take to receive
//! the code). At most [`MAX_CONNECTIONS`] requests are served at once (more wait in the kernel's queue), and an
//! accept that fails (out of file descriptors) is retried after a pause instead of ending the login. It answers
//! exactly one valid callback — a GET of `/callback` on the loopback host it
//! announced, carrying the login's `state` once — and turns everything else away with a 400 page while the login
//! keeps waiting: a forged or replayed `state`, a missing `code`, a duplicated parameter, a `Host` of another name
//! (DNS rebinding), another method, a request a web page made rather than a top-level navigation, a request
//! head over [`MAX_REQUEST_BYTES`] or one sent too slowly (slow-loris). The browser's page is answered only when
//! the login has finished, so it can say whether it worked. The listener closes as soon as the valid callback
//! has arrived.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use super::Error;
use crate::config::RedirectHost;
use crate::secret::AuthCode;

/// The path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// How long a connection may take to send its request head. A browser sends it at once; a client that trickles
/// it (slow-loris) is cut after this, and never delays the real callback, which has a connection of its own.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head accepted (hyper answers 431 past it). A real callback is well under 2 KiB: a code
/// and a state of some hundred bytes each, `iss`, and a browser's usual headers; 16 KiB leaves room for large
/// cookies on `localhost` without letting a client make the agent buffer more.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// How long the browser's page waits for the login to finish after the callback.
const RESULT_WAIT: Duration = Duration::from_secs(60);

/// Requests served at once. A browser opens one or two connections; more are a flood, which waits in the
/// kernel's queue (a slow one is cut after [`HEADER_TIMEOUT`]) instead of costing the agent a task and a file
/// descriptor each.
pub const MAX_CONNECTIONS: usize = 32;

/// The pause after a failed accept (e.g. EMFILE) before the next one: long enough not to spin, short enough
/// that the browser's redirect is picked up as soon as descriptors free up.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How many random ports are tried for a `localhost` listener before giving up, when each one is taken on
/// [::1] by someone else.
const RANDOM_PORT_TRIES: usize = 16;

/// A bound loopback listener, not yet serving.
#[derive(Debug)]
pub struct CallbackListener {
    listeners: Vec<TcpListener>,
    port: u16,
    host: RedirectHost,
}

/// What the provider's redirect carried.
#[derive(Debug)]
pub enum Callback {
    /// The authorization code to exchange.
    Code(AuthCode),
    /// The provider refused (e.g. the user pressed Cancel: `access_denied`).
    Refused {
        /// The OAuth error code.
        error: String,
        /// The provider's explanation.
        description: Option<String>,
    },
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// Answers the browser once the login has an outcome.
pub struct Responder(oneshot::Sender<Page>);

/// The page the browser finally shows.
#[derive(Debug, Clone)]
pub enum Page {
    /// The login worked.
    LoggedIn {
        /// Who is now logged in.
        username: String,
    },
    /// The login failed; the message says why.
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl Responder {
    /// Shows `page` in the browser.
    pub fn answer(self, page: Page) {
        // The browser may have gone away; nothing to do then.
        let _ = self.0.send(page);
    }
}

/// Binds 127.0.0.1 (and [::1], for `localhost`) on the first port of `ports` (tried in order) that is free on
/// both, or on a random port when `ports` is empty.
///
/// # Errors
/// [`Error::Listener`] naming the ports that were busy and the fix.
pub async fn bind(ports: &[u16], host: RedirectHost) -> Result<CallbackListener, Error> {
    let candidates: Vec<u16> = if ports.is_empty() { vec![0; RANDOM_PORT_TRIES] } else { ports.to_vec() };
    let mut failures = Vec::new();
    for port in candidates {
        match bind_port(port, host).await {
            Ok(listener) => return Ok(listener),
            Err(e) if port == 0 => failures.push(e),
            Err(e) => failures.push(format!("{port} ({e})")),
        }
    }
    failures.dedup();
    let families = match host {
        RedirectHost::Loopback => "127.0.0.1",
        RedirectHost::Localhost => "127.0.0.1 and [::1]",
    };
    Err(Error::Listener(format!(
        "cannot listen for the login redirect on {families} port {}: free one of them or change redirect_ports in \
         the context (each must be registered at the provider)",
        failures.join(", ")
    )))
}

/// One port on the families `host` needs; with port 0, the one the kernel picks for 127.0.0.1.
async fn bind_port(port: u16, host: RedirectHost) -> Result<CallbackListener, String> {
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.map_err(|e| e.to_string())?;
    let port = v4.local_addr().map_err(|e| e.to_string())?.port();
    let mut listeners = vec![v4];
    if host == RedirectHost::Localhost {
        match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            Ok(v6) => listeners.push(v6),
            // No IPv6 loopback on this machine: no browser reaches [::1] here, and nobody can listen there.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                debug!("no IPv6 loopback: the login listener binds 127.0.0.1 only");
            }
            Err(e) => return Err(format!("{port} is taken on [::1] ({e}), where a browser may send localhost")),
        }
    }
    Ok(CallbackListener { listeners, port, host })
}

impl CallbackListener {
    /// The redirect URI to register with the provider and send in the authorization request.
    pub fn redirect_uri(&self) -> String {
        format!("http://{}:{}{CALLBACK_PATH}", self.host.as_str(), self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until a request carries `state`, then stops listening and returns what it carried with the means
    /// to answer that browser. Invalid requests get a 400 page and change nothing.
    ///
    /// # Errors
    /// [`Error::Listener`] if accepting fails for good.
    pub async fn wait(self, state: &str) -> Result<(Callback, Responder), Error> {
        let (tx, mut rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            state: state.as_bytes().to_vec(),
            hosts: [
                format!("127.0.0.1:{}", self.port),
                format!("localhost:{}", self.port),
                format!("[::1]:{}", self.port),
            ],
            delivered: Mutex::new(Some(tx)),
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut failed_accepts = 0u64;
        loop {
            // A slot before an accept: past the cap, connections wait in the kernel's queue.
            let slot = tokio::select! {
                delivered = rx.recv() => {
                    return delivered.ok_or_else(|| Error::Listener("the callback listener stopped".into()));
                }
                slot = Arc::clone(&slots).acquire_owned() => {
                    slot.map_err(|_| Error::Listener("the callback listener stopped".into()))?
                }
            };
            let accepted = tokio::select! {
                delivered = rx.recv() => {
                    return delivered.ok_or_else(|| Error::Listener("the callback listener stopped".into()));
                }
                accepted = accept_any(&self.listeners) => accepted,
            };
            match accepted {
                Err(e) => {
                    // Out of descriptors, a connection reset before it was accepted: none of it ends the login.
                    // Said once at warn; a flood of them is somebody's doing and must not flood the log too.
                    failed_accepts += 1;
                    if failed_accepts == 1 {
                        warn!(error = %e, "accepting a connection on the login callback failed; retrying");
                    } else {
                        debug!(error = %e, failed_accepts, "accepting a connection on the login callback failed again");
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let service = service_fn(move |req| handle(req, Arc::clone(&shared)));
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .max_buf_size(MAX_REQUEST_BYTES)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            debug!(%peer, error = %e, "callback connection ended");
                        }
                    });
                }
            }
        }
    }
}

/// The next connection on any of the listeners (one or two).
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listeners {
        [one] => one.accept().await,
        [first, second, ..] => tokio::select! {
            accepted = first.accept() => accepted,
            accepted = second.accept() => accepted,
        },
        [] => std::future::pending().await,
    }
}

struct Shared {
    state: Vec<u8>,
    hosts: [String; 3],
    delivered: Mutex<Option<mpsc::Sender<(Callback, Responder)>>>,
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    match check(&req, &shared) {
        Err(why) => {
            warn!(reason = why, "refused a request on the login callback");
            Ok(page(StatusCode::BAD_REQUEST, "Not a valid login callback", why))
        }
        Ok(callback) => {
            let sender = shared.delivered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let Some(sender) = sender else {
                return Ok(page(
                    StatusCode::BAD_REQUEST,
                    "Already used",
                    "this login has already received its callback",
                ));
            };
            let (page_tx, page_rx) = oneshot::channel();
            if sender.send((callback, Responder(page_tx))).await.is_err() {
                return Ok(page(StatusCode::GONE, "Login over", "the login this link belongs to has ended"));
            }
            Ok(match tokio::time::timeout(RESULT_WAIT, page_rx).await {
                Ok(Ok(Page::LoggedIn { username })) => page(
                    StatusCode::OK,
                    "Logged in",
                    &format!(
                        "You are logged in to Pachyderm as {username}. You can close this window and go back to the terminal."
                    ),
                ),
                Ok(Ok(Page::Failed { message })) => page(StatusCode::UNAUTHORIZED, "Login failed", &message),
                _ => page(
                    StatusCode::ACCEPTED,
                    "Login received",
                    "The login was received and is being completed: see the terminal for the result.",
                ),
            })
        }
    }
}

/// Validates a request; `Err` carries the reason shown on the 400 page (never a secret).
fn check(req: &Request<Incoming>, shared: &Shared) -> Result<Callback, &'static str> {
    if req.method() != Method::GET {
        return Err("the login callback only answers GET");
    }
    if !is_top_level_navigation(req.headers()) {
        return Err("the login callback only answers the browser's own redirect, not a request made by a web page");
    }
    let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !shared.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err("this request names another host than the login's loopback address");
    }
    if req.uri().path() != CALLBACK_PATH {
        return Err("this is not the login callback path");
    }
    parse_query(req.uri().query().unwrap_or_default(), &shared.state)
}

/// Reads the callback's query string for the login whose `state` is `expected_state`: exactly one `state`, equal
/// to it (compared in constant time), then either a non-empty `code` or the provider's `error`. Any parameter of
/// those appearing twice is refused (parameter pollution). `Err` carries the reason shown on the 400 page, never a
/// secret. Public for the fuzz target.
///
/// # Errors
/// The reason the query is not this login's callback.
pub fn parse_query(query: &str, expected_state: &[u8]) -> Result<Callback, &'static str> {
    let mut state = None;
    let mut code = None;
    let mut error = None;
    let mut description = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "state" => &mut state,
            "code" => &mut code,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        if slot.is_some() {
            return Err("a parameter appears twice");
        }
        *slot = Some(value.into_owned());
    }
    let state = state.ok_or("the callback has no state")?;
    if !bool::from(state.as_bytes().ct_eq(expected_state)) {
        return Err("the state does not belong to the login in progress");
    }
    if let Some(error) = error {
        return Ok(Callback::Refused { error, description });
    }
    match code {
        Some(code) if !code.is_empty() => Ok(Callback::Code(AuthCode::new(code))),
        _ => Err("the callback has no authorization code"),
    }
}

/// Whether the request is the browser following the provider's redirect in its window: a top-level
/// navigation (`Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`). A page on another origin can make the
/// browser send requests here too — `fetch()` (mode `cors`), an image or script (`no-cors`), a frame (dest
/// `iframe`) — and those are refused, so that nothing but the real redirect can hand the agent a code, even if
/// the state leaked. Browsers without Fetch Metadata send no `Sec-Fetch-*` at all; for them, an `Origin` header
/// on a GET marks a script's request (navigations send none). `Sec-Fetch-Site` is not checked: the genuine
/// redirect comes from the provider's site, so it is `cross-site` (or `same-site` for a provider on loopback).
fn is_top_level_navigation(headers: &hyper::HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    match value("sec-fetch-mode") {
        Some(mode) => mode == "navigate" && value("sec-fetch-dest").is_none_or(|dest| dest == "document"),
        None => !headers.contains_key(hyper::header::ORIGIN),
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pachagent: {t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", hyper::header::HeaderValue::from_static("no-referrer"));
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> hyper::HeaderMap {
        pairs.iter().map(|(k, v)| (hyper::header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn the_browsers_own_redirect_passes_with_or_without_fetch_metadata() {
        // What Chromium and Firefox send when the provider's redirect lands here.
        let redirect =
            [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")];
        assert!(is_top_level_navigation(&headers(&redirect)));
        assert!(is_top_level_navigation(&headers(&[("sec-fetch-mode", "Navigate")])));
        assert!(is_top_level_navigation(&headers(&[])), "older browsers and command-line clients send none");
    }

    #[test]
    fn requests_made_by_pages_are_not_navigations() {
        assert!(!is_top_level_navigation(&headers(&[("sec-fetch-mode", "cors"), ("origin", "http://evil.example")])));
        assert!(!is_top_level_navigation(&headers(&[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "image")])));
        assert!(!is_top_level_navigation(&headers(&[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")])));
        assert!(!is_top_level_navigation(&headers(&[("origin", "null")])));
    }
}
