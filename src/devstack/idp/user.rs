//! A scripted user for the dev IdP's pages: what `pachagent dev` and tests use to log in without a browser.
//!
//! It does over HTTP what a person does in a browser (load the page, fill in the email, press a button) and stops
//! at the redirect back to the client without following it: delivering the code is the caller's business (an
//! agent's loopback listener, pachd-dev's callback, or a test that wants to tamper with it first).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use url::Url;

use super::pages;

/// A page load must not hang a login; the dev IdP answers in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a scripted login did not reach the redirect back to the client.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The HTTP client could not be built or the request failed.
    #[error("failed to load {url}: {source}")]
    Http {
        /// The page or form target.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The IdP answered something other than the expected page or redirect, e.g. an error page.
    #[error("the IdP answered {status} at {url}: {body}")]
    Unexpected {
        /// The page or form target.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body (an error page says what was wrong).
        body: String,
    },
    /// The page had no form this helper understands.
    #[error("the page at {url} has no login form")]
    NoForm {
        /// The page.
        url: String,
    },
    /// The redirect location is not a URL.
    #[error("the IdP redirected to {location:?}, which is not a URL")]
    BadLocation {
        /// The `Location` header.
        location: String,
    },
}

/// Which button the scripted user presses.
enum Choice<'a> {
    SignIn(&'a str),
    Cancel,
}

/// Opens `authorize_url`, signs in as `email` and returns where the IdP sends the browser next (the client's
/// `redirect_uri` with `code`, `state` and `iss`), without fetching it. When the IdP refuses the request outright
/// with a redirect (`error=…`), that redirect is returned as is.
///
/// # Errors
/// [`LoginError`] when the page cannot be loaded, shows an error, or does not lead to a redirect.
pub async fn complete_login(authorize_url: &Url, email: &str) -> Result<Url, LoginError> {
    login_page_choice(authorize_url, Choice::SignIn(email)).await
}

/// Opens `authorize_url` and presses "Cancel"; returns the redirect (`error=access_denied`) without fetching it.
///
/// # Errors
/// As [`complete_login`].
pub async fn cancel_login(authorize_url: &Url) -> Result<Url, LoginError> {
    login_page_choice(authorize_url, Choice::Cancel).await
}

/// Opens a device verification URL that carries the user code (`verification_uri_complete`) and signs in as
/// `email`, approving the device.
///
/// # Errors
/// [`LoginError`] when the code is unknown or expired, or a page cannot be loaded.
pub async fn complete_device_login(verification_uri_complete: &Url, email: &str) -> Result<(), LoginError> {
    let http = client(verification_uri_complete)?;
    let (action, fields) = load_form(&http, verification_uri_complete).await?;
    let response = post(&http, &action, fields, Choice::SignIn(email)).await?;
    if response.status() != StatusCode::OK {
        return Err(unexpected(&action, response).await);
    }
    Ok(())
}

async fn login_page_choice(authorize_url: &Url, choice: Choice<'_>) -> Result<Url, LoginError> {
    let http = client(authorize_url)?;
    let page = get(&http, authorize_url).await?;
    if page.status().is_redirection() {
        return location(authorize_url, &page);
    }
    let (action, fields) = form_from(authorize_url, page).await?;
    let response = post(&http, &action, fields, choice).await?;
    if !response.status().is_redirection() {
        return Err(unexpected(&action, response).await);
    }
    location(&action, &response)
}

fn client(url: &Url) -> Result<reqwest::Client, LoginError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .map_err(|source| LoginError::Http { url: url.to_string(), source })
}

async fn get(http: &reqwest::Client, url: &Url) -> Result<reqwest::Response, LoginError> {
    http.get(url.clone()).send().await.map_err(|source| LoginError::Http { url: url.to_string(), source })
}

async fn load_form(http: &reqwest::Client, url: &Url) -> Result<(Url, Vec<(String, String)>), LoginError> {
    form_from(url, get(http, url).await?).await
}

/// The form's target and hidden fields, from a 200 page.
async fn form_from(url: &Url, page: reqwest::Response) -> Result<(Url, Vec<(String, String)>), LoginError> {
    if page.status() != StatusCode::OK {
        return Err(unexpected(url, page).await);
    }
    let html = page.text().await.map_err(|source| LoginError::Http { url: url.to_string(), source })?;
    let (action, fields) = pages::form_of(&html).ok_or_else(|| LoginError::NoForm { url: url.to_string() })?;
    let action = url.join(&action).map_err(|_| LoginError::NoForm { url: url.to_string() })?;
    Ok((action, fields))
}

async fn post(
    http: &reqwest::Client,
    action: &Url,
    mut fields: Vec<(String, String)>,
    choice: Choice<'_>,
) -> Result<reqwest::Response, LoginError> {
    match choice {
        Choice::SignIn(email) => {
            fields.push(("email".into(), email.into()));
            fields.push(("action".into(), "login".into()));
        }
        Choice::Cancel => fields.push(("action".into(), "cancel".into())),
    }
    http.post(action.clone())
        .form(&fields)
        .send()
        .await
        .map_err(|source| LoginError::Http { url: action.to_string(), source })
}

fn location(base: &Url, response: &reqwest::Response) -> Result<Url, LoginError> {
    let raw = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    base.join(raw).map_err(|_| LoginError::BadLocation { location: raw.to_owned() })
}

async fn unexpected(url: &Url, response: reqwest::Response) -> LoginError {
    let status = response.status().as_u16();
    let mut body = response.text().await.unwrap_or_default();
    if let Some((at, _)) = body.char_indices().nth(2000) {
        body.truncate(at);
    }
    LoginError::Unexpected { url: url.to_string(), status, body }
}
