//! The printers of `login`: the steps the user acts on, the wait, and the result.
//!
//! Steps are prompts, not results, so their text goes to stderr and stdout keeps only what scripts read (the
//! `whoami` lines at the end). With `--json` every event is one object per line on stdout instead.

use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::format::{json_line, non_empty, rfc3339_opt};
use super::{go_quote, identity_lines, method_name, rfc3339, timestamp};
use crate::proto::agent::{Done, LoginMethod, MethodChosen, OpenUrl, UserCode, Waiting};

/// What the CLI does with a URL the agent asks to open, so that the text can say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserPlan<'a> {
    /// The CLI opens it in this machine's browser.
    Open,
    /// `--no-browser`: the user opens it.
    NotAsked,
    /// There is no browser here, for this reason.
    Unavailable(&'a str),
}

/// A login step the user acts on or waits through.
pub enum LoginStep<'a> {
    /// Which method the agent chose, and why.
    MethodChosen(&'a MethodChosen),
    /// A URL to open in a browser, and what the CLI does with it.
    OpenUrl(&'a OpenUrl, BrowserPlan<'a>),
    /// A device code to enter.
    UserCode(&'a UserCode),
    /// The agent waits for the user to finish (as a line: terminals get a [`WaitSpinner`] instead).
    Waiting(&'a Waiting),
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LoginEventJson<'a> {
    MethodChosen {
        method: Option<&'static str>,
        reason: &'a str,
    },
    OpenUrl {
        url: &'a str,
        redirect_uri: Option<&'a str>,
        port_forward_hint: Option<&'a str>,
    },
    UserCode {
        user_code: &'a str,
        verification_uri: &'a str,
        verification_uri_complete: Option<&'a str>,
    },
    Waiting {
        deadline: Option<String>,
    },
    Done {
        context: &'a str,
        username: &'a str,
        expiration: Option<String>,
        method: Option<&'static str>,
        already_logged_in: bool,
    },
}

/// Prints a login step: text on `err`, or one `{"event": …}` object per line on `out` with `--json`.
pub fn login_step(out: &mut dyn Write, err: &mut dyn Write, step: LoginStep<'_>, json: bool) -> io::Result<()> {
    if json {
        let value = match step {
            LoginStep::MethodChosen(c) => {
                LoginEventJson::MethodChosen { method: method_name(c.method()), reason: &c.reason }
            }
            LoginStep::OpenUrl(u, _) => LoginEventJson::OpenUrl {
                url: &u.url,
                redirect_uri: non_empty(&u.redirect_uri),
                port_forward_hint: non_empty(&u.port_forward_hint),
            },
            LoginStep::UserCode(c) => LoginEventJson::UserCode {
                user_code: &c.user_code,
                verification_uri: &c.verification_uri,
                verification_uri_complete: non_empty(&c.verification_uri_complete),
            },
            LoginStep::Waiting(w) => LoginEventJson::Waiting { deadline: rfc3339_opt(w.deadline.as_ref()) },
        };
        return json_line(out, &value);
    }
    match step {
        LoginStep::MethodChosen(c) => method_chosen_text(err, c),
        LoginStep::OpenUrl(u, plan) => open_url_text(err, u, plan),
        LoginStep::UserCode(c) => user_code_text(err, c),
        LoginStep::Waiting(w) => match timestamp(w.deadline.as_ref()) {
            Some(t) => writeln!(err, "Waiting for the login to finish (until {})...", rfc3339(t)),
            None => writeln!(err, "Waiting for the login to finish..."),
        },
    }
}

/// The agent's reason is a sentence for people that names the method; the method is named here only when the
/// agent gave no reason.
fn method_chosen_text(err: &mut dyn Write, c: &MethodChosen) -> io::Result<()> {
    if let Some(reason) = non_empty(c.reason.trim()) {
        return writeln!(err, "{reason}");
    }
    let method = match c.method() {
        LoginMethod::Oidc => "the browser login",
        LoginMethod::Device => "the device-code login",
        LoginMethod::Pachd => "pachd's browser login",
        LoginMethod::PachToken | LoginMethod::IdToken | LoginMethod::Unspecified => "the login the agent chose",
    };
    writeln!(err, "Using {method}.")
}

fn open_url_text(err: &mut dyn Write, u: &OpenUrl, plan: BrowserPlan<'_>) -> io::Result<()> {
    match plan {
        BrowserPlan::Open => writeln!(err, "Opening a browser to log in. If none opens, visit this URL:\n  {}", u.url),
        BrowserPlan::NotAsked => writeln!(err, "Open this URL in a browser to log in:\n  {}", u.url),
        BrowserPlan::Unavailable(why) => {
            writeln!(err, "Open this URL in a browser to log in (none can be opened here: {why}):\n  {}", u.url)?;
            if !u.port_forward_hint.is_empty() {
                writeln!(
                    err,
                    "The login ends by sending that browser back to a port on this machine, so if it runs on \
                     another machine, first forward the port from there:\n  {}",
                    u.port_forward_hint
                )?;
            }
            Ok(())
        }
    }
}

fn user_code_text(err: &mut dyn Write, c: &UserCode) -> io::Result<()> {
    writeln!(err, "To log in, visit {} and enter the code\n\n    {}\n", c.verification_uri, c.user_code)?;
    if !c.verification_uri_complete.is_empty() {
        writeln!(err, "or open this URL, which carries the code:\n  {}", c.verification_uri_complete)?;
    }
    Ok(())
}

/// The browser could not be opened: say so; the login goes on.
pub fn browser_failed(err: &mut dyn Write, cause: &io::Error) -> io::Result<()> {
    super::warning(err, &format!("could not open a browser ({cause}): open the URL above yourself"))
}

/// The spinner's text: the time left until `deadline` (to the second) and how to stop.
pub fn waiting_message(deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match deadline {
        Some(d) => {
            let left = (d - now).num_seconds().max(0);
            let (h, m, s) = (left / 3600, left % 3600 / 60, left % 60);
            let left = match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m {s:02}s"),
                (h, m) => format!("{h}h {m:02}m"),
            };
            format!("Waiting for the login to finish: {left} left (press Ctrl-C to cancel)")
        }
        None => "Waiting for the login to finish (press Ctrl-C to cancel)".to_owned(),
    }
}

/// How often the spinner's frame changes. Its text (the time left) changes when [`WaitSpinner::update`] is
/// called.
const SPIN_INTERVAL: Duration = Duration::from_millis(120);

/// A one-line spinner on stderr while the agent waits for the user; it erases itself when dropped, so whatever
/// is printed next starts on a clean line. Only for terminals: elsewhere print [`LoginStep::Waiting`].
pub struct WaitSpinner {
    bar: ProgressBar,
    deadline: Option<DateTime<Utc>>,
}

impl WaitSpinner {
    /// Starts the spinner for a `waiting` event.
    pub fn start(waiting: &Waiting, now: DateTime<Utc>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::default_spinner());
        let spinner = Self { bar, deadline: timestamp(waiting.deadline.as_ref()) };
        spinner.update(now);
        spinner.bar.enable_steady_tick(SPIN_INTERVAL);
        spinner
    }

    /// Refreshes the time left.
    pub fn update(&self, now: DateTime<Utc>) {
        self.bar.set_message(waiting_message(self.deadline, now));
    }

    /// Runs `print` with the spinner erased, then draws it again below what was printed.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }
}

impl Drop for WaitSpinner {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The end of a successful login: the `whoami` lines on `out` (after a note on `err` when a valid session
/// already existed), or a `{"event":"done",…}` object.
pub fn login_done(out: &mut dyn Write, err: &mut dyn Write, done: &Done, json: bool) -> io::Result<()> {
    if json {
        return json_line(
            out,
            &LoginEventJson::Done {
                context: &done.context,
                username: &done.username,
                expiration: rfc3339_opt(done.expiration.as_ref()),
                method: method_name(done.method()),
                already_logged_in: done.already_logged_in,
            },
        );
    }
    if done.already_logged_in {
        writeln!(
            err,
            "Context {} already has a valid session; run pachagent login --force to log in again.",
            go_quote(&done.context)
        )?;
    }
    identity_lines(out, &done.username, done.expiration.as_ref())
}
