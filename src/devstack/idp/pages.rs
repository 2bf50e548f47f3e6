//! The dev IdP's HTML pages: plain forms that a person, a headless browser or [`super::complete_login`] can fill
//! in. No scripts, no styles from elsewhere; every value from a request is escaped.
//!
//! The field names are part of the contract with scripted users: the login form posts `login_id`, `email` and
//! `action` (`login` or `cancel`) to `/login`; the device pages use `user_code`, `email` and `action` on `/device`.

use crate::devstack::http::escape_html;

/// The login form's target, relative to the issuer.
pub(crate) const LOGIN_PATH: &str = "/login";
/// The device verification page, relative to the issuer.
pub(crate) const DEVICE_PATH: &str = "/device";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         input,button{{font-size:1rem;padding:.4rem;margin:.3rem 0}}.error{{color:#a00}}</style>\n\
         </head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n",
        title = escape_html(title),
    )
}

fn error_line(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape_html(e))).unwrap_or_default()
}

/// The login page of an authorization request: an email field, "Sign in" and "Cancel".
pub(crate) fn login(issuer: &str, login_id: &str, client_id: &str, email: &str, error: Option<&str>) -> String {
    let body = format!(
        "<p>Development login for <strong>{client}</strong>. There is no password: the email you enter is who you \
         are.</p>\n{error}<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"login_id\" value=\"{login_id}\">\n\
         <label for=\"email\">Email</label><br>\n\
         <input type=\"email\" id=\"email\" name=\"email\" value=\"{email}\" autocomplete=\"email\" required autofocus><br>\n\
         <button type=\"submit\" name=\"action\" value=\"login\">Sign in</button>\n\
         <button type=\"submit\" name=\"action\" value=\"cancel\" formnovalidate>Cancel</button>\n</form>\n",
        client = escape_html(client_id),
        error = error_line(error),
        action = escape_html(&format!("{issuer}{LOGIN_PATH}")),
        login_id = escape_html(login_id),
        email = escape_html(email),
    );
    page("Sign in", &body)
}

/// A problem the user must see and that must not go back to the client (unknown client, unregistered redirect).
pub(crate) fn error(title: &str, message: &str) -> String {
    page(title, &format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape_html(message)))
}

/// The first device page: type the code shown on the device.
pub(crate) fn device_code(issuer: &str, error: Option<&str>) -> String {
    let body = format!(
        "<p>Enter the code shown by the program you are signing in to.</p>\n{error}\
         <form method=\"get\" action=\"{action}\">\n<label for=\"user_code\">Code</label><br>\n\
         <input type=\"text\" id=\"user_code\" name=\"user_code\" placeholder=\"ABCD-EFGH\" autocomplete=\"off\" \
         required autofocus><br>\n<button type=\"submit\">Continue</button>\n</form>\n",
        error = error_line(error),
        action = escape_html(&format!("{issuer}{DEVICE_PATH}")),
    );
    page("Device login", &body)
}

/// The second device page: confirm the code and sign in with an email.
pub(crate) fn device_login(issuer: &str, user_code: &str, client_id: &str, error: Option<&str>) -> String {
    let body = format!(
        "<p><strong>{client}</strong> asks to sign you in. Check that it shows this code: \
         <strong>{code}</strong></p>\n{error}<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\n\
         <label for=\"email\">Email</label><br>\n\
         <input type=\"email\" id=\"email\" name=\"email\" autocomplete=\"email\" required autofocus><br>\n\
         <button type=\"submit\" name=\"action\" value=\"login\">Sign in</button>\n\
         <button type=\"submit\" name=\"action\" value=\"cancel\" formnovalidate>Cancel</button>\n</form>\n",
        client = escape_html(client_id),
        code = escape_html(user_code),
        error = error_line(error),
        action = escape_html(&format!("{issuer}{DEVICE_PATH}")),
    );
    page("Device login", &body)
}

/// The last device page.
pub(crate) fn device_done(email: &str) -> String {
    let body = format!(
        "<p>You are signed in as <strong>{}</strong>. You can close this window and go back to your terminal.</p>\n",
        escape_html(email)
    );
    page("Signed in", &body)
}

/// The device page after "Cancel".
pub(crate) fn device_cancelled() -> String {
    page("Sign-in cancelled", "<p>The device was not signed in. You can close this window.</p>\n")
}

/// The `action` attribute of the page's form and its hidden fields, the way [`super::complete_login`] reads
/// these pages back. Only our own markup is understood.
pub(crate) fn form_of(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form_at = html.find("<form ")?;
    let action = attribute(&html[form_at..], "action")?;
    let mut hidden = Vec::new();
    let mut rest = &html[form_at..];
    while let Some(at) = rest.find("<input type=\"hidden\"") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..tag_end];
        if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
            hidden.push((name, value));
        }
        rest = &rest[tag_end..];
    }
    Some((action, hidden))
}

/// The unescaped value of `name="…"` in the first tag of `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let tag = &html[..html.find('>').unwrap_or(html.len())];
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape_html(&tag[start..end]))
}

fn unescape_html(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}
