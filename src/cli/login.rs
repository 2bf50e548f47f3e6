//! `pachagent login`: the user's side of a login the agent runs.
//!
//! Owns what happens on this terminal: telling the agent whether a browser can be opened here, opening the URL
//! the agent sends (only http and https, and only when a browser is there), showing device codes and the wait,
//! and turning Ctrl-C into a cancelled login. The agent owns the flow itself: its choice of method, the
//! deadline, the token exchange and the session. Dropping the event stream is how this side cancels.

use std::future::Future;
use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use tonic::{Code, Streaming};

use super::browser::{self, BrowserSupport, EnvSnapshot};
use super::commands::{Globals, read_stdin};
use super::output::{self, BrowserPlan, LoginStep, WaitSpinner};
use super::{Error, LoginArgs};
use crate::client;
use crate::proto::agent::login_event::Event;
use crate::proto::agent::{LoginEvent, LoginMethod, LoginRequest};
use crate::secret::{IdToken, PachToken};

/// How often the spinner's "time left" is recomputed.
const TICK: Duration = Duration::from_secs(1);

/// A browser launch in progress; it reports at most [`browser::OPEN_TIMEOUT`] after it started.
type Opening = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// `pachagent login`.
pub(super) async fn login(g: &Globals, args: LoginArgs) -> Result<(), Error> {
    // Tokens are read before the agent is contacted, so that a mistake on stdin starts no agent.
    let req = if args.token_stdin {
        let token = PachToken::from_input(read_stdin("Pachyderm token")?);
        if token.is_empty() {
            return Err(Error::EmptyToken { flag: "--token-stdin" });
        }
        LoginRequest {
            context: g.context.clone(),
            method: LoginMethod::PachToken.into(),
            pach_token: token.expose_secret().to_owned(),
            force: args.force,
            ..Default::default()
        }
    } else if args.id_token_stdin {
        let token = IdToken::from_input(read_stdin("ID token")?);
        if token.is_empty() {
            return Err(Error::EmptyToken { flag: "--id-token-stdin" });
        }
        LoginRequest {
            context: g.context.clone(),
            method: LoginMethod::IdToken.into(),
            id_token: token.expose_secret().to_owned(),
            force: args.force,
            ..Default::default()
        }
    } else {
        let support = browser::detect(&EnvSnapshot::capture());
        return interactive(g, &args, support).await;
    };
    let mut agent = client::connect_or_start(&g.socket, &g.config).await?;
    let events = agent.login(req).await?.into_inner();
    follow(events, &View { json: g.json, tty: false, plan: BrowserPlan::NotAsked }).await
}

async fn interactive(g: &Globals, args: &LoginArgs, support: BrowserSupport) -> Result<(), Error> {
    let req = interactive_request(&g.context, args, support);
    let view = View { json: g.json, tty: io::stderr().is_terminal(), plan: browser_plan(args, support) };
    let mut agent = client::connect_or_start(&g.socket, &g.config).await?;
    let events = agent.login(req).await?.into_inner();
    follow(events, &view).await
}

/// The request for a login the agent runs. `--no-browser` still tells the agent that a browser flow is fine:
/// the user opens the URL themselves.
fn interactive_request(context: &str, args: &LoginArgs, support: BrowserSupport) -> LoginRequest {
    let method = if args.device { LoginMethod::Device } else { LoginMethod::Unspecified };
    LoginRequest {
        context: context.to_owned(),
        method: method.into(),
        force: args.force,
        timeout_seconds: whole_seconds(args.timeout),
        browser_available: args.no_browser || support.available,
        ..Default::default()
    }
}

/// Rounds up, so that "wait 1.5s" never becomes "wait 1s"; saturates far beyond any accepted `--timeout`.
fn whole_seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX)
}

/// What to do with URLs the agent sends.
fn browser_plan(args: &LoginArgs, support: BrowserSupport) -> BrowserPlan<'static> {
    if args.no_browser {
        BrowserPlan::NotAsked
    } else if support.available {
        BrowserPlan::Open
    } else {
        BrowserPlan::Unavailable(support.reason)
    }
}

/// Only web URLs go to the browser launcher: it would hand anything else (`file:`, custom schemes) to whatever
/// program the desktop associates with it.
fn is_web_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// How this run shows the login.
struct View {
    json: bool,
    /// stderr is a terminal: the wait is a spinner rather than a line.
    tty: bool,
    plan: BrowserPlan<'static>,
}

/// Prints the agent's events until the stream ends, opening URLs as the plan says. Ctrl-C drops the stream,
/// which is how the agent learns that nobody waits for this login any more.
async fn follow(mut events: Streaming<LoginEvent>, view: &View) -> Result<(), Error> {
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // When the handler cannot be installed, Ctrl-C keeps its default effect, which also drops the stream.
    let mut ctrl_c_armed = true;
    let mut tick = tokio::time::interval(TICK);
    let mut spinner: Option<WaitSpinner> = None;
    let mut opening: Option<Opening> = None;
    let mut failed = None;
    let mut done = false;
    loop {
        tokio::select! {
            // Ctrl-C first, so that a busy stream cannot delay the cancel.
            biased;
            signal = &mut ctrl_c, if ctrl_c_armed => match signal {
                Ok(()) => return Err(Error::Cancelled),
                Err(_) => ctrl_c_armed = false,
            },
            opened = async {
                match opening.as_mut() {
                    Some(launch) => launch.await,
                    None => std::future::pending().await,
                }
            }, if opening.is_some() => {
                opening = None;
                if let Err(cause) = opened {
                    match &spinner {
                        Some(s) => s.suspend(|| output::browser_failed(&mut err, &cause))?,
                        None => output::browser_failed(&mut err, &cause)?,
                    }
                }
            },
            _ = tick.tick(), if spinner.is_some() => {
                if let Some(s) = &spinner {
                    s.update(Utc::now());
                }
            },
            message = events.message() => {
                let Some(event) = message? else { break };
                // Erase the spinner before anything else is printed.
                spinner = None;
                match event.event {
                    Some(Event::MethodChosen(c)) => {
                        output::login_step(&mut out, &mut err, LoginStep::MethodChosen(&c), view.json)?;
                    }
                    Some(Event::OpenUrl(u)) => {
                        let mut plan = view.plan;
                        if plan == BrowserPlan::Open && !is_web_url(&u.url) {
                            plan = BrowserPlan::NotAsked;
                        }
                        output::login_step(&mut out, &mut err, LoginStep::OpenUrl(&u, plan), view.json)?;
                        if plan == BrowserPlan::Open {
                            opening = Some(Box::pin(browser::open(u.url)));
                        }
                    }
                    Some(Event::UserCode(c)) => {
                        output::login_step(&mut out, &mut err, LoginStep::UserCode(&c), view.json)?;
                    }
                    Some(Event::Waiting(w)) if view.tty && !view.json => {
                        spinner = Some(WaitSpinner::start(&w, Utc::now()));
                    }
                    Some(Event::Waiting(w)) => {
                        output::login_step(&mut out, &mut err, LoginStep::Waiting(&w), view.json)?;
                    }
                    Some(Event::Done(d)) => {
                        output::login_done(&mut out, &mut err, &d, view.json)?;
                        done = true;
                    }
                    // The stream ends next with a status carrying the same code and message; keep this one in
                    // case it does not.
                    Some(Event::Failed(f)) => failed = Some(tonic::Status::new(Code::from_i32(f.code), f.message)),
                    None => {}
                }
            },
        }
    }
    // A launch still under way when the login ended (a quick user, or a slow launcher) is given its time, so that
    // the browser is not cut off mid-start; what it reports no longer matters.
    if let Some(launch) = opening {
        let _ = launch.await;
    }
    match (failed, done) {
        (Some(status), _) => Err(status.into()),
        (None, true) => Ok(()),
        (None, false) => Err(Error::LoginIncomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LoginArgs {
        use clap::Parser;
        let argv = ["pachagent", "login"].into_iter().chain(extra.iter().copied());
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Login(a) => a,
            other => panic!("not login: {other:?}"),
        }
    }

    const HERE: BrowserSupport = BrowserSupport { available: true, reason: "a graphical session is running" };
    const SSH: BrowserSupport = BrowserSupport { available: false, reason: "this is an SSH session without a display" };

    #[test]
    fn a_plain_login_lets_the_agent_choose_and_says_whether_a_browser_is_here() {
        let req = interactive_request("prod", &args(&[]), HERE);
        assert_eq!(req.method(), LoginMethod::Unspecified);
        assert!(req.browser_available);
        assert_eq!(req.timeout_seconds, 300, "the default --timeout is 5m");
        assert_eq!(req.context, "prod");
        assert!(!req.force);
        assert!(!interactive_request("", &args(&[]), SSH).browser_available);
    }

    #[test]
    fn device_forces_the_device_flow() {
        let req = interactive_request("", &args(&["--device", "--force"]), HERE);
        assert_eq!(req.method(), LoginMethod::Device);
        assert!(req.force);
    }

    #[test]
    fn no_browser_still_accepts_a_browser_flow_but_never_opens_one() {
        let a = args(&["--no-browser"]);
        assert!(interactive_request("", &a, SSH).browser_available);
        assert_eq!(browser_plan(&a, HERE), BrowserPlan::NotAsked);
        assert_eq!(browser_plan(&args(&[]), HERE), BrowserPlan::Open);
        assert_eq!(browser_plan(&args(&[]), SSH), BrowserPlan::Unavailable(SSH.reason));
    }

    #[test]
    fn timeout_becomes_whole_seconds_rounded_up() {
        assert_eq!(interactive_request("", &args(&["--timeout", "90s"]), HERE).timeout_seconds, 90);
        assert_eq!(interactive_request("", &args(&["--timeout", "1h"]), HERE).timeout_seconds, 3600);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn only_web_urls_are_handed_to_the_browser() {
        assert!(is_web_url("https://login.example.com/authorize?state=x"));
        assert!(is_web_url("http://127.0.0.1:8765/"));
        assert!(!is_web_url("file:///etc/passwd"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("not a url"));
    }
}
