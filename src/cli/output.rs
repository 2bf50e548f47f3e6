//! Everything the CLI prints: pachctl-compatible text for people and stable JSON for programs.
//!
//! This is the only module that formats output. Every printer writes to the `Write` it is given (stdout or
//! stderr, chosen by the caller; a buffer in tests) and takes the current time as an argument when it shows
//! relative times, so that each format is testable byte for byte. Tokens reach stdout only through [`token`].

mod contexts;
mod doctor;
mod format;
mod login;
mod service;

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use self::contexts::{context_changed, contexts};
pub use self::doctor::{Check, CheckOutcome, doctor};
use self::format::{Paint, Row, dash, json_line, marker, non_empty, rfc3339_opt, table};
pub use self::format::{go_quote, humanize, rfc822_utc, rfc3339, timestamp, use_colour};
pub use self::login::{BrowserPlan, LoginStep, WaitSpinner, browser_failed, login_done, login_step, waiting_message};
pub use self::service::{
    ServiceFile, ServiceUnitState, service_files, service_manual, service_not_installed, service_removed,
    service_started, service_status, service_written,
};
use crate::proto::agent::{
    EventKind, GetStatusResponse, GetTokenResponse, LoginMethod, LogoutResponse, SessionEvent, SessionState,
    SessionStatus, WhoAmIResponse,
};
use crate::secret::PachToken;

/// An error for people: `pachagent: <message>`.
pub fn error(err: &mut dyn Write, message: &dyn std::fmt::Display) -> io::Result<()> {
    writeln!(err, "pachagent: {message}")
}

/// Text generated for another program (a completion script, a man page), written as it is.
pub fn generated(out: &mut dyn Write, text: &[u8]) -> io::Result<()> {
    out.write_all(text)?;
    out.flush()
}

/// A warning that does not change the exit code: `pachagent: warning: <message>`.
pub fn warning(err: &mut dyn Write, message: &dyn std::fmt::Display) -> io::Result<()> {
    writeln!(err, "pachagent: warning: {message}")
}

/// Something the user should know that is neither an error nor a warning: `pachagent: note: <message>`.
pub fn note(err: &mut dyn Write, message: &dyn std::fmt::Display) -> io::Result<()> {
    writeln!(err, "pachagent: note: {message}")
}

/// pachctl's `auth whoami` lines: `You are "<username>"`, then `session expires: <RFC822 UTC>` when the
/// session expires at all.
fn identity_lines(out: &mut dyn Write, username: &str, expiration: Option<&prost_types::Timestamp>) -> io::Result<()> {
    writeln!(out, "You are {}", go_quote(username))?;
    if let Some(t) = timestamp(expiration) {
        writeln!(out, "session expires: {}", rfc822_utc(t))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct WhoAmIJson<'a> {
    context: &'a str,
    username: &'a str,
    expiration: Option<String>,
    pachd_address: &'a str,
}

/// `whoami`: pachctl's lines, or `{"context","username","expiration","pachd_address"}`.
pub fn whoami(out: &mut dyn Write, resp: &WhoAmIResponse, json: bool) -> io::Result<()> {
    if json {
        return json_line(
            out,
            &WhoAmIJson {
                context: &resp.context,
                username: &resp.username,
                expiration: rfc3339_opt(resp.expiration.as_ref()),
                pachd_address: &resp.pachd_address,
            },
        );
    }
    identity_lines(out, &resp.username, resp.expiration.as_ref())
}

/// A question on a terminal, written to stderr and answered on the same line.
pub fn question(err: &mut dyn Write, text: &str) -> io::Result<()> {
    write!(err, "{text}: ")?;
    err.flush()
}

/// Why an answer was not taken, before its question is asked again.
pub fn answer_refused(err: &mut dyn Write, why: &dyn std::fmt::Display) -> io::Result<()> {
    writeln!(err, "  {why}")?;
    writeln!(err, "  Try again (Ctrl-D gives up).")
}

/// Ctrl-D at a question leaves the cursor after it: end that line before the error is printed.
pub fn input_ended(err: &mut dyn Write) -> io::Result<()> {
    writeln!(err)
}

/// `login --token-stdin` on a terminal: how to end the input.
pub fn paste_prompt(err: &mut dyn Write, what: &str) -> io::Result<()> {
    writeln!(err, "Paste the {what}, then press Enter and Ctrl-D:")
}

#[derive(Serialize)]
struct LogoutJson<'a> {
    results: Vec<LogoutResultJson<'a>>,
}

#[derive(Serialize)]
struct LogoutResultJson<'a> {
    context: &'a str,
    was_logged_in: bool,
    revoked: bool,
    revoked_tokens: u32,
    unrevoked_tokens: u32,
    detail: Option<&'a str>,
}

/// `logout`: one line per context saying whether pachd revoked the token or it was only forgotten locally.
pub fn logout(out: &mut dyn Write, resp: &LogoutResponse, json: bool) -> io::Result<()> {
    if json {
        let results = resp
            .results
            .iter()
            .map(|r| LogoutResultJson {
                context: &r.context,
                was_logged_in: r.was_logged_in,
                revoked: r.revoked,
                revoked_tokens: r.revoked_tokens,
                unrevoked_tokens: r.unrevoked_tokens,
                detail: non_empty(&r.detail),
            })
            .collect();
        return json_line(out, &LogoutJson { results });
    }
    for r in &resp.results {
        let because = if r.detail.is_empty() { String::new() } else { format!(": {}", r.detail) };
        // An agent older than the counts sends none; its `revoked` still says whether the token went.
        let revoked = r.revoked_tokens.max(u32::from(r.revoked));
        match (r.was_logged_in, revoked) {
            (_, 1) if r.unrevoked_tokens == 0 => {
                writeln!(out, "{}: logged out; the token was revoked at pachd", r.context)?
            }
            (_, 0) if r.was_logged_in => {
                writeln!(out, "{}: logged out locally; the token was not revoked at pachd{because}", r.context)?
            }
            (_, 0) => writeln!(out, "{}: was not logged in{because}", r.context)?,
            (_, n) => {
                let earlier = match (r.revoked, n - u32::from(r.revoked)) {
                    (true, 0) => String::new(),
                    (true, 1) => " (the current one and 1 handed out before a renewal)".to_owned(),
                    (true, m) => format!(" (the current one and {m} handed out before renewals)"),
                    (false, _) => " (handed out before renewals; the current one was not)".to_owned(),
                };
                let rest = if r.unrevoked_tokens == 0 { String::new() } else { format!("; {}", r.detail) };
                let noun = if n == 1 { "token was" } else { "tokens were" };
                writeln!(out, "{}: logged out; {n} {noun} revoked at pachd{earlier}{rest}", r.context)?
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct TokenJson<'a> {
    context: &'a str,
    username: &'a str,
    token: &'a str,
    expiration: Option<String>,
}

/// `token`: the bare token and a newline (for `$(pachagent token)`), or `{"context","username","token",
/// "expiration"}`. The only printer that sees a token; callers pass stdout.
pub fn token(out: &mut dyn Write, resp: &GetTokenResponse, token: &PachToken, json: bool) -> io::Result<()> {
    if json {
        return json_line(
            out,
            &TokenJson {
                context: &resp.context,
                username: &resp.username,
                token: token.expose_secret(),
                expiration: rfc3339_opt(resp.expiration.as_ref()),
            },
        );
    }
    writeln!(out, "{}", token.expose_secret())
}

/// The name of a session state in JSON (`logged_out`); text uses the same with spaces.
pub fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Unspecified => "unknown",
        SessionState::LoggedOut => "logged_out",
        SessionState::Active => "active",
        SessionState::Refreshing => "refreshing",
        SessionState::LoginRequired => "login_required",
        SessionState::Expired => "expired",
    }
}

/// The name of a login method, as `context add --method` and the JSON output spell it; `None` when unset.
pub fn method_name(method: LoginMethod) -> Option<&'static str> {
    match method {
        LoginMethod::Unspecified => None,
        LoginMethod::PachToken => Some("pach-token"),
        LoginMethod::IdToken => Some("id-token"),
        LoginMethod::Oidc => Some("oidc"),
        LoginMethod::Device => Some("device"),
        LoginMethod::Pachd => Some("pachd"),
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    active_context: Option<&'a str>,
    agent_pid: u32,
    store: StoreJson<'a>,
    sessions: Vec<SessionJson<'a>>,
}

#[derive(Serialize)]
struct StoreJson<'a> {
    backend: &'a str,
    available: bool,
    persistent: bool,
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct SessionJson<'a> {
    context: &'a str,
    active: bool,
    state: &'static str,
    username: Option<&'a str>,
    expiration: Option<String>,
    refresh_at: Option<String>,
    method: Option<&'static str>,
    store_backend: Option<&'a str>,
    pachd_address: &'a str,
    issuer: Option<&'a str>,
    last_error: Option<&'a str>,
}

impl<'a> SessionJson<'a> {
    fn new(s: &'a SessionStatus) -> Self {
        Self {
            context: &s.context,
            active: s.active,
            state: state_name(s.state()),
            username: non_empty(&s.username),
            expiration: rfc3339_opt(s.expiration.as_ref()),
            refresh_at: rfc3339_opt(s.refresh_at.as_ref()),
            method: method_name(s.method()),
            store_backend: non_empty(&s.store_backend),
            pachd_address: &s.pachd_address,
            issuer: non_empty(&s.issuer),
            last_error: non_empty(&s.last_error),
        }
    }
}

/// `status`: a table of contexts (active one marked `*`, last errors under their row), then the store and
/// agent lines; or the stable JSON object. `now` turns expirations and renewal times into durations; `colour`
/// (see [`use_colour`]) paints states and errors, and never applies to JSON.
pub fn status(
    out: &mut dyn Write,
    resp: &GetStatusResponse,
    now: DateTime<Utc>,
    json: bool,
    colour: bool,
) -> io::Result<()> {
    let default_store = Default::default();
    let store = resp.store.as_ref().unwrap_or(&default_store);
    if json {
        return json_line(
            out,
            &StatusJson {
                active_context: non_empty(&resp.active_context),
                agent_pid: resp.agent_pid,
                store: StoreJson {
                    backend: &store.backend,
                    available: store.available,
                    persistent: store.persistent,
                    detail: non_empty(&store.detail),
                },
                sessions: resp.sessions.iter().map(SessionJson::new).collect(),
            },
        );
    }
    if resp.sessions.is_empty() {
        writeln!(out, "No contexts. Add one with: pachagent context add NAME --pachd ADDRESS")?;
    } else {
        let rows = resp.sessions.iter().map(|s| status_row(s, now, colour)).collect::<Vec<_>>();
        table(out, &["", "CONTEXT", "USER", "STATE", "EXPIRES", "NEXT REFRESH", "METHOD", "STORE", "PACHD"], &rows)?;
    }
    writeln!(out)?;
    let availability =
        if store.available { Paint::Green.apply("available", colour) } else { Paint::Red.apply("unavailable", colour) };
    let persistence = if store.persistent {
        "persistent".to_owned()
    } else {
        Paint::Yellow.apply("not persistent: sessions are lost at reboot", colour)
    };
    let detail = if store.detail.is_empty() { String::new() } else { format!(": {}", store.detail) };
    writeln!(out, "store: {} ({availability}, {persistence}){detail}", dash(&store.backend))?;
    let version =
        if resp.agent_version.is_empty() { String::new() } else { format!(", version {}", resp.agent_version) };
    writeln!(out, "agent: pid {}{version}, config {}", resp.agent_pid, dash(&resp.config_path))
}

fn status_row(s: &SessionStatus, now: DateTime<Utc>, colour: bool) -> Row {
    let refresh_due = refresh_due(s, now);
    let state_paint = match s.state() {
        SessionState::Active if refresh_due => Paint::Yellow,
        SessionState::Active => Paint::Green,
        SessionState::Refreshing => Paint::Cyan,
        SessionState::LoginRequired | SessionState::Expired => Paint::Red,
        SessionState::LoggedOut | SessionState::Unspecified => Paint::Dim,
    };
    let paints = if colour {
        let refresh_paint = refresh_due.then_some(Paint::Yellow);
        vec![None, None, None, Some(state_paint), None, refresh_paint]
    } else {
        Vec::new()
    };
    Row {
        cells: vec![
            marker(s.active),
            s.context.clone(),
            dash(&s.username),
            state_name(s.state()).replace('_', " "),
            expires_in(s, now),
            next_refresh(s, now),
            method_name(s.method()).unwrap_or("-").to_owned(),
            dash(&s.store_backend),
            s.pachd_address.clone(),
        ],
        paints,
        notes: s.last_error.lines().map(|l| Paint::Red.apply(&format!("last error: {l}"), colour)).collect(),
    }
}

fn expires_in(s: &SessionStatus, now: DateTime<Utc>) -> String {
    match (timestamp(s.expiration.as_ref()), s.username.is_empty()) {
        (Some(t), _) => humanize(t - now),
        (None, false) => "never".to_owned(),
        (None, true) => "-".to_owned(),
    }
}

/// Whether an active session's renewal time has come (the agent is about to renew it, or is retrying).
fn refresh_due(s: &SessionStatus, now: DateTime<Utc>) -> bool {
    s.state() == SessionState::Active && timestamp(s.refresh_at.as_ref()).is_some_and(|t| t <= now)
}

/// When the agent renews the session: `now` while it does, `due` once the time has come, `-` for a session it
/// cannot renew (a robot token, pachd's own login, no session).
fn next_refresh(s: &SessionStatus, now: DateTime<Utc>) -> String {
    if s.state() == SessionState::Refreshing {
        return "now".to_owned();
    }
    match timestamp(s.refresh_at.as_ref()) {
        Some(t) if t <= now => "due".to_owned(),
        Some(t) => humanize(t - now),
        None => "-".to_owned(),
    }
}

#[derive(Serialize)]
struct WatchJson<'a> {
    at: Option<String>,
    context: &'a str,
    kind: String,
    username: Option<&'a str>,
    expiration: Option<String>,
    detail: Option<&'a str>,
}

fn kind_name(kind: EventKind) -> &'static str {
    let name = kind.as_str_name();
    name.strip_prefix("EVENT_KIND_").unwrap_or(name)
}

/// `watch`: `<time> <context> <KIND> <username> expires <time> <detail>` (`-` for what is absent), or one
/// `{"at","context","kind","username","expiration","detail"}` object per line.
pub fn watch_event(out: &mut dyn Write, ev: &SessionEvent, json: bool) -> io::Result<()> {
    let at = rfc3339_opt(ev.at.as_ref());
    let expiration = rfc3339_opt(ev.expiration.as_ref());
    if json {
        return json_line(
            out,
            &WatchJson {
                at,
                context: &ev.context,
                kind: kind_name(ev.kind()).to_ascii_lowercase(),
                username: non_empty(&ev.username),
                expiration,
                detail: non_empty(&ev.detail),
            },
        );
    }
    let mut line = format!(
        "{} {} {} {} expires {}",
        at.as_deref().unwrap_or("-"),
        ev.context,
        kind_name(ev.kind()),
        dash(&ev.username),
        expiration.as_deref().unwrap_or("-"),
    );
    if !ev.detail.is_empty() {
        line.push(' ');
        // One event, one line: a multi-line detail would break line-based readers.
        line.push_str(&ev.detail.replace('\n', " "));
    }
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests;
