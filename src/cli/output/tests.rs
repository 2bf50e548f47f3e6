use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::proto::agent::{Done, LoginMethod, LogoutResult, MethodChosen, OpenUrl, StoreHealth, UserCode, Waiting};

fn ts(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = DateTime::parse_from_rfc3339(rfc3339).unwrap();
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

fn text(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn json_of(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> serde_json::Value {
    let s = text(f);
    assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "one line: {s:?}");
    serde_json::from_str(&s).unwrap()
}

#[test]
fn go_quote_escapes_quotes_and_backslashes() {
    assert_eq!(go_quote("user:alice@example.com"), r#""user:alice@example.com""#);
    assert_eq!(go_quote(r#"a"b"#), r#""a\"b""#);
    assert_eq!(go_quote(r"a\b"), r#""a\\b""#);
    assert_eq!(go_quote(""), r#""""#);
}

#[test]
fn go_quote_keeps_printable_unicode() {
    assert_eq!(go_quote("user:josé@exämple.com"), "\"user:josé@exämple.com\"");
    assert_eq!(go_quote("用户 ☃ 🦀"), "\"用户 ☃ 🦀\"");
}

#[test]
fn go_quote_escapes_control_and_invisible_characters_like_go() {
    assert_eq!(go_quote("a\nb"), r#""a\nb""#);
    assert_eq!(go_quote("\t\r\u{7}\u{8}\u{c}\u{b}"), r#""\t\r\a\b\f\v""#);
    assert_eq!(go_quote("\u{1b}[31m\u{0}\u{7f}"), r#""\x1b[31m\x00\x7f""#);
    assert_eq!(go_quote("\u{85}\u{a0}\u{200b}\u{feff}"), r#""\u0085\u00a0\u200b\ufeff""#);
    assert_eq!(go_quote("\u{f0000}"), r#""\U000f0000""#);
}

#[test]
fn rfc822_is_pachctls_session_expiry_format() {
    let t = Utc.with_ymd_and_hms(2025, 2, 9, 14, 41, 59).unwrap();
    assert_eq!(rfc822_utc(t), "09 Feb 25 14:41 UTC");
    let t = Utc.with_ymd_and_hms(2031, 12, 1, 3, 5, 0).unwrap();
    assert_eq!(rfc822_utc(t), "01 Dec 31 03:05 UTC");
}

#[test]
fn durations_are_humanized_to_the_minute() {
    let d = |s: i64| humanize(chrono::TimeDelta::seconds(s));
    assert_eq!(d(7 * 3600 + 12 * 60 + 59), "7h 12m");
    assert_eq!(d(3600), "1h 0m");
    assert_eq!(d(12 * 60 + 5), "12m");
    assert_eq!(d(45), "45s");
    assert_eq!(d(2 * 86_400 + 3 * 3600 + 59 * 60), "2d 3h");
    assert_eq!(d(0), "expired");
    assert_eq!(d(-30), "expired");
}

#[test]
fn whoami_prints_exactly_what_pachctl_prints() {
    let resp = WhoAmIResponse {
        context: "prod".into(),
        username: "user:alice@example.com".into(),
        expiration: ts("2025-02-09T14:41:00Z"),
        pachd_address: "grpcs://pachd.example.com:443".into(),
    };
    let out = text(|w| whoami(w, &resp, false));
    assert_eq!(out, "You are \"user:alice@example.com\"\nsession expires: 09 Feb 25 14:41 UTC\n");

    let never = WhoAmIResponse { username: "pach:root".into(), expiration: None, ..resp };
    assert_eq!(text(|w| whoami(w, &never, false)), "You are \"pach:root\"\n");
}

#[test]
fn whoami_json_has_a_stable_shape() {
    let resp = WhoAmIResponse {
        context: "prod".into(),
        username: "user:alice@example.com".into(),
        expiration: ts("2025-02-09T14:41:00Z"),
        pachd_address: "grpc://localhost:30650".into(),
    };
    assert_eq!(
        json_of(|w| whoami(w, &resp, true)),
        json!({"context": "prod", "username": "user:alice@example.com", "expiration": "2025-02-09T14:41:00Z",
               "pachd_address": "grpc://localhost:30650"})
    );
    let never = WhoAmIResponse { expiration: None, ..resp };
    assert_eq!(json_of(|w| whoami(w, &never, true))["expiration"], serde_json::Value::Null);
}

#[test]
fn token_prints_the_bare_token_or_json() {
    let resp = GetTokenResponse {
        token: String::new(),
        expiration: ts("2025-02-09T14:41:00Z"),
        username: "robot:ci".into(),
        context: "prod".into(),
        pachd_address: "grpc://p:30650".into(),
        ..Default::default()
    };
    let secret = PachToken::new("abc123".into());
    assert_eq!(text(|w| token(w, &resp, &secret, false)), "abc123\n");
    assert_eq!(
        json_of(|w| token(w, &resp, &secret, true)),
        json!({"context": "prod", "username": "robot:ci", "token": "abc123", "expiration": "2025-02-09T14:41:00Z"})
    );
}

/// An agent's answer holding `sessions`, with a healthy keyring and the active context `prod`.
fn status_of(sessions: Vec<SessionStatus>) -> GetStatusResponse {
    GetStatusResponse {
        sessions,
        store: Some(StoreHealth {
            backend: "secret-service".into(),
            available: true,
            persistent: true,
            detail: String::new(),
        }),
        active_context: "prod".into(),
        config_path: "/home/a/.config/pachagent/config.toml".into(),
        agent_pid: 4242,
        agent_version: "0.1.0".into(),
    }
}

fn sample_status() -> GetStatusResponse {
    status_of(vec![
        SessionStatus {
            context: "prod".into(),
            state: SessionState::Active.into(),
            username: "user:alice@example.com".into(),
            expiration: ts("2025-02-09T21:53:30Z"),
            refresh_at: ts("2025-02-09T21:00:00Z"),
            method: LoginMethod::Oidc.into(),
            store_backend: "secret-service".into(),
            pachd_address: "grpcs://pachd.example.com:443".into(),
            issuer: "https://login.example.com/".into(),
            last_error: String::new(),
            active: true,
        },
        SessionStatus {
            context: "dev".into(),
            state: SessionState::LoginRequired.into(),
            pachd_address: "grpc://localhost:30650".into(),
            last_error: "refresh failed: invalid_grant".into(),
            ..Default::default()
        },
    ])
}

/// The "now" of every status snapshot, so that durations in them never change.
fn status_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 9, 14, 41, 0).unwrap()
}

/// A session in every state the agent reports, as `GetStatus` would send them at [`status_now`].
fn every_state_status() -> GetStatusResponse {
    status_of(vec![
        SessionStatus {
            context: "prod".into(),
            state: SessionState::Active.into(),
            username: "user:alice@example.com".into(),
            expiration: ts("2025-02-09T14:58:00Z"),
            refresh_at: ts("2025-02-09T14:40:30Z"),
            method: LoginMethod::Oidc.into(),
            store_backend: "secret-service".into(),
            pachd_address: "grpcs://pachd.example.com:443".into(),
            issuer: "https://login.example.com/".into(),
            last_error: String::new(),
            active: true,
        },
        SessionStatus {
            context: "staging".into(),
            state: SessionState::Refreshing.into(),
            username: "user:alice@example.com".into(),
            expiration: ts("2025-02-09T14:44:10Z"),
            refresh_at: ts("2025-02-09T14:41:00Z"),
            method: LoginMethod::Device.into(),
            store_backend: "secret-service".into(),
            pachd_address: "grpcs://pachd.staging.example.com:443".into(),
            issuer: "https://login.example.com/".into(),
            ..Default::default()
        },
        SessionStatus {
            context: "dev".into(),
            state: SessionState::LoginRequired.into(),
            username: "user:alice@example.com".into(),
            expiration: ts("2025-02-09T15:26:00Z"),
            method: LoginMethod::Oidc.into(),
            store_backend: "secret-service".into(),
            pachd_address: "grpc://localhost:30650".into(),
            issuer: "http://localhost:5556/dex".into(),
            last_error: "the identity provider refused: invalid_grant: grant request is invalid\n\
                             run pachagent login --context dev"
                .into(),
            ..Default::default()
        },
        SessionStatus {
            context: "old".into(),
            state: SessionState::Expired.into(),
            username: "user:bob@example.com".into(),
            expiration: ts("2025-02-09T12:00:00Z"),
            method: LoginMethod::Pachd.into(),
            store_backend: "keyutils".into(),
            pachd_address: "grpc://10.0.0.7:30650".into(),
            ..Default::default()
        },
        SessionStatus {
            context: "lab".into(),
            state: SessionState::LoggedOut.into(),
            pachd_address: "grpc://lab.internal:30650".into(),
            ..Default::default()
        },
        SessionStatus {
            context: "ci".into(),
            state: SessionState::Active.into(),
            username: "robot:ci".into(),
            method: LoginMethod::PachToken.into(),
            store_backend: "secret-service".into(),
            pachd_address: "grpcs://pachd.example.com:443".into(),
            ..Default::default()
        },
    ])
}

#[test]
fn status_is_a_readable_table_for_sessions_in_every_state() {
    let out = text(|w| status(w, &every_state_status(), status_now(), false, false));
    assert!(!out.contains('\x1b'), "no colour when not asked for: {out:?}");
    insta::assert_snapshot!(out);
}

#[test]
fn status_colours_states_renewals_and_errors_only_when_asked_and_keeps_columns_aligned() {
    let plain = text(|w| status(w, &every_state_status(), status_now(), false, false));
    let coloured = text(|w| status(w, &every_state_status(), status_now(), false, true));
    assert_ne!(coloured, plain, "colour changes the output");
    let stripped = strip_ansi(&coloured);
    assert_eq!(stripped, plain, "the same text and alignment under the colours");
    // Escape characters are invisible in a snapshot: show them as `\e`.
    insta::assert_snapshot!(coloured.replace('\x1b', "\\e"));
}

#[test]
fn status_json_is_the_same_with_or_without_colour() {
    let plain = text(|w| status(w, &every_state_status(), status_now(), true, false));
    let coloured = text(|w| status(w, &every_state_status(), status_now(), true, true));
    assert_eq!(plain, coloured);
    assert!(!plain.contains('\x1b'));
}

#[test]
fn status_json_for_sessions_in_every_state_is_stable() {
    let value = json_of(|w| status(w, &every_state_status(), status_now(), true, false));
    insta::assert_snapshot!(serde_json::to_string_pretty(&value).unwrap());
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    use std::ffi::OsStr;
    assert!(use_colour(true, None));
    assert!(!use_colour(false, None), "a pipe or file gets no escape codes");
    assert!(!use_colour(true, Some(OsStr::new("1"))));
    assert!(!use_colour(true, Some(OsStr::new("false"))), "any non-empty value disables colour");
    assert!(use_colour(true, Some(OsStr::new(""))), "an empty NO_COLOR is unset (no-color.org)");
}

/// Removes ANSI SGR sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn status_json_has_a_stable_shape() {
    let now = Utc.with_ymd_and_hms(2025, 2, 9, 14, 41, 0).unwrap();
    let value = json_of(|w| status(w, &sample_status(), now, true, false));
    assert_eq!(
        value,
        json!({
            "active_context": "prod",
            "agent_pid": 4242,
            "store": {"backend": "secret-service", "available": true, "persistent": true, "detail": null},
            "sessions": [
                {"context": "prod", "active": true, "state": "active", "username": "user:alice@example.com",
                 "expiration": "2025-02-09T21:53:30Z", "refresh_at": "2025-02-09T21:00:00Z", "method": "oidc",
                 "store_backend": "secret-service", "pachd_address": "grpcs://pachd.example.com:443",
                 "issuer": "https://login.example.com/", "last_error": null},
                {"context": "dev", "active": false, "state": "login_required", "username": null,
                 "expiration": null, "refresh_at": null, "method": null, "store_backend": null,
                 "pachd_address": "grpc://localhost:30650", "issuer": null,
                 "last_error": "refresh failed: invalid_grant"}
            ]
        })
    );
}

#[test]
fn every_state_and_method_has_a_json_name() {
    let states = [
        (SessionState::Unspecified, "unknown"),
        (SessionState::LoggedOut, "logged_out"),
        (SessionState::Active, "active"),
        (SessionState::Refreshing, "refreshing"),
        (SessionState::LoginRequired, "login_required"),
        (SessionState::Expired, "expired"),
    ];
    for (state, name) in states {
        assert_eq!(state_name(state), name);
    }
    assert_eq!(method_name(LoginMethod::PachToken), Some("pach-token"));
    assert_eq!(method_name(LoginMethod::IdToken), Some("id-token"));
    assert_eq!(method_name(LoginMethod::Device), Some("device"));
    assert_eq!(method_name(LoginMethod::Pachd), Some("pachd"));
    assert_eq!(method_name(LoginMethod::Unspecified), None);
}

#[test]
fn logout_says_whether_pachd_revoked_the_token() {
    let resp = LogoutResponse {
        results: vec![
            LogoutResult {
                context: "prod".into(),
                revoked: true,
                revoked_tokens: 1,
                was_logged_in: true,
                ..Default::default()
            },
            LogoutResult {
                context: "dev".into(),
                revoked: false,
                detail: "pachd unreachable".into(),
                was_logged_in: true,
                unrevoked_tokens: 1,
                ..Default::default()
            },
            LogoutResult { context: "old".into(), revoked: false, was_logged_in: false, ..Default::default() },
            LogoutResult {
                context: "long".into(),
                revoked: true,
                revoked_tokens: 3,
                was_logged_in: true,
                ..Default::default()
            },
        ],
    };
    assert_eq!(
        text(|w| logout(w, &resp, false)),
        "prod: logged out; the token was revoked at pachd\n\
         dev: logged out locally; the token was not revoked at pachd: pachd unreachable\n\
         old: was not logged in\n\
         long: logged out; 3 tokens were revoked at pachd (the current one and 2 handed out before renewals)\n"
    );
    assert_eq!(
        json_of(|w| logout(w, &resp, true))["results"][1],
        json!({"context": "dev", "was_logged_in": true, "revoked": false, "revoked_tokens": 0,
               "unrevoked_tokens": 1, "detail": "pachd unreachable"})
    );
}

#[test]
fn watch_prints_one_line_per_event() {
    let ev = SessionEvent {
        context: "prod".into(),
        kind: EventKind::Refreshed.into(),
        at: ts("2025-02-09T14:41:00Z"),
        expiration: ts("2025-02-09T22:41:00Z"),
        detail: "via refresh token".into(),
        username: "user:alice@example.com".into(),
    };
    assert_eq!(
        text(|w| watch_event(w, &ev, false)),
        "2025-02-09T14:41:00Z prod REFRESHED user:alice@example.com expires 2025-02-09T22:41:00Z via refresh token\n"
    );
    assert_eq!(
        json_of(|w| watch_event(w, &ev, true)),
        json!({"at": "2025-02-09T14:41:00Z", "context": "prod", "kind": "refreshed",
               "username": "user:alice@example.com", "expiration": "2025-02-09T22:41:00Z",
               "detail": "via refresh token"})
    );
    let out = SessionEvent {
        kind: EventKind::LoggedOut.into(),
        expiration: None,
        username: String::new(),
        detail: String::new(),
        ..ev
    };
    assert_eq!(text(|w| watch_event(w, &out, false)), "2025-02-09T14:41:00Z prod LOGGED_OUT - expires -\n");
}

#[test]
fn login_done_prints_the_whoami_lines() {
    let done = Done {
        context: "prod".into(),
        username: "user:alice@example.com".into(),
        expiration: ts("2025-02-09T14:41:00Z"),
        method: LoginMethod::PachToken.into(),
        already_logged_in: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    login_done(&mut out, &mut err, &done, false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "You are \"user:alice@example.com\"\nsession expires: 09 Feb 25 14:41 UTC\n"
    );
    assert!(err.is_empty());

    let value = json_of(|w| login_done(w, &mut Vec::new(), &done, true));
    assert_eq!(
        value,
        json!({"event": "done", "context": "prod", "username": "user:alice@example.com",
               "expiration": "2025-02-09T14:41:00Z", "method": "pach-token", "already_logged_in": false})
    );
}

/// Runs a text printer that takes (out, err) and returns what each got.
fn both(f: impl FnOnce(&mut dyn Write, &mut dyn Write) -> io::Result<()>) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    f(&mut out, &mut err).unwrap();
    (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn step_text(step: LoginStep<'_>) -> String {
    let (out, err) = both(|o, e| login_step(o, e, step, false));
    assert!(out.is_empty(), "prompts never go to stdout: {out:?}");
    err
}

const AUTH_URL: &str = "https://login.example.com/authorize?x=1";

#[test]
fn the_url_is_always_printed_and_the_text_says_who_opens_it() {
    let url = OpenUrl { url: AUTH_URL.into(), ..Default::default() };
    assert_eq!(
        step_text(LoginStep::OpenUrl(&url, BrowserPlan::Open)),
        "Opening a browser to log in. If none opens, visit this URL:\n  https://login.example.com/authorize?x=1\n"
    );
    assert_eq!(
        step_text(LoginStep::OpenUrl(&url, BrowserPlan::NotAsked)),
        "Open this URL in a browser to log in:\n  https://login.example.com/authorize?x=1\n"
    );
}

#[test]
fn without_a_browser_the_port_forward_hint_is_explained() {
    let url = OpenUrl {
        url: AUTH_URL.into(),
        redirect_uri: "http://127.0.0.1:8765/callback".into(),
        port_forward_hint: "ssh -L 8765:127.0.0.1:8765 devbox".into(),
    };
    assert_eq!(
        step_text(LoginStep::OpenUrl(&url, BrowserPlan::Unavailable("this is an SSH session without a display"))),
        "Open this URL in a browser to log in (none can be opened here: this is an SSH session without a \
         display):\n  https://login.example.com/authorize?x=1\n\
         The login ends by sending that browser back to a port on this machine, so if it runs on another machine, \
         first forward the port from there:\n  ssh -L 8765:127.0.0.1:8765 devbox\n"
    );
    // A browser here (or --no-browser, where the agent was told a browser flow is fine) needs no tunnel.
    let text = step_text(LoginStep::OpenUrl(&url, BrowserPlan::NotAsked));
    assert!(!text.contains("ssh -L"), "{text}");
}

#[test]
fn the_device_code_stands_out() {
    let code = UserCode {
        user_code: "WDJB-MJHT".into(),
        verification_uri: "https://login.example.com/device".into(),
        verification_uri_complete: "https://login.example.com/device?user_code=WDJB-MJHT".into(),
    };
    assert_eq!(
        step_text(LoginStep::UserCode(&code)),
        "To log in, visit https://login.example.com/device and enter the code\n\n    WDJB-MJHT\n\n\
         or open this URL, which carries the code:\n  https://login.example.com/device?user_code=WDJB-MJHT\n"
    );
    let bare = UserCode { verification_uri_complete: String::new(), ..code };
    assert!(!step_text(LoginStep::UserCode(&bare)).contains("carries the code"));
}

#[test]
fn the_agents_choice_is_explained() {
    let chosen = MethodChosen {
        method: LoginMethod::Device.into(),
        reason: "No browser can be opened here, so using the device flow.".into(),
    };
    assert_eq!(
        step_text(LoginStep::MethodChosen(&chosen)),
        "No browser can be opened here, so using the device flow.\n"
    );
    let silent = MethodChosen { method: LoginMethod::Oidc.into(), reason: String::new() };
    assert_eq!(step_text(LoginStep::MethodChosen(&silent)), "Using the browser login.\n");
}

#[test]
fn waiting_off_a_terminal_is_one_line_with_the_deadline() {
    let w = Waiting { deadline: ts("2025-02-09T14:46:00Z") };
    assert_eq!(step_text(LoginStep::Waiting(&w)), "Waiting for the login to finish (until 2025-02-09T14:46:00Z)...\n");
}

#[test]
fn the_spinner_counts_down_to_the_second() {
    let now = Utc.with_ymd_and_hms(2025, 2, 9, 14, 41, 0).unwrap();
    let at = |s: i64| waiting_message(Some(now + chrono::TimeDelta::seconds(s)), now);
    assert_eq!(at(299), "Waiting for the login to finish: 4m 59s left (press Ctrl-C to cancel)");
    assert_eq!(at(65), "Waiting for the login to finish: 1m 05s left (press Ctrl-C to cancel)");
    assert_eq!(at(9), "Waiting for the login to finish: 9s left (press Ctrl-C to cancel)");
    assert_eq!(at(-3), "Waiting for the login to finish: 0s left (press Ctrl-C to cancel)");
    assert_eq!(at(2 * 3600 + 5 * 60), "Waiting for the login to finish: 2h 05m left (press Ctrl-C to cancel)");
    assert_eq!(waiting_message(None, now), "Waiting for the login to finish (press Ctrl-C to cancel)");
}

#[test]
fn a_failed_browser_launch_is_a_warning() {
    let (_, err) = both(|_, e| browser_failed(e, &io::Error::new(io::ErrorKind::NotFound, "no xdg-open")));
    assert_eq!(err, "pachagent: warning: could not open a browser (no xdg-open): open the URL above yourself\n");
}

#[test]
fn an_existing_session_is_reported_before_the_whoami_lines() {
    let done = Done {
        context: "prod".into(),
        username: "user:alice@example.com".into(),
        expiration: ts("2025-02-09T14:41:00Z"),
        method: LoginMethod::Oidc.into(),
        already_logged_in: true,
    };
    let (out, err) = both(|o, e| login_done(o, e, &done, false));
    assert_eq!(out, "You are \"user:alice@example.com\"\nsession expires: 09 Feb 25 14:41 UTC\n");
    assert_eq!(err, "Context \"prod\" already has a valid session; run pachagent login --force to log in again.\n");
    assert_eq!(json_of(|w| login_done(w, &mut Vec::new(), &done, true))["already_logged_in"], true);
}

#[test]
fn login_events_have_stable_json_shapes() {
    let json = |step: LoginStep<'_>| json_of(|w| login_step(w, &mut Vec::new(), step, true));
    let url = OpenUrl {
        url: AUTH_URL.into(),
        redirect_uri: "http://127.0.0.1:8765/callback".into(),
        port_forward_hint: "ssh -L 8765:127.0.0.1:8765 devbox".into(),
    };
    assert_eq!(
        json(LoginStep::OpenUrl(&url, BrowserPlan::Open)),
        json!({"event": "open_url", "url": AUTH_URL, "redirect_uri": "http://127.0.0.1:8765/callback",
               "port_forward_hint": "ssh -L 8765:127.0.0.1:8765 devbox"})
    );
    let bare = OpenUrl { url: AUTH_URL.into(), ..Default::default() };
    assert_eq!(
        json(LoginStep::OpenUrl(&bare, BrowserPlan::NotAsked)),
        json!({"event": "open_url", "url": AUTH_URL, "redirect_uri": null, "port_forward_hint": null})
    );
    let chosen = MethodChosen { method: LoginMethod::Oidc.into(), reason: "a browser is available".into() };
    assert_eq!(
        json(LoginStep::MethodChosen(&chosen)),
        json!({"event": "method_chosen", "method": "oidc", "reason": "a browser is available"})
    );
    let code = UserCode { user_code: "ABCD".into(), verification_uri: "https://i/device".into(), ..Default::default() };
    assert_eq!(
        json(LoginStep::UserCode(&code)),
        json!({"event": "user_code", "user_code": "ABCD", "verification_uri": "https://i/device",
               "verification_uri_complete": null})
    );
    let w = Waiting { deadline: ts("2025-02-09T14:46:00Z") };
    assert_eq!(json(LoginStep::Waiting(&w)), json!({"event": "waiting", "deadline": "2025-02-09T14:46:00Z"}));
}

#[test]
fn context_list_marks_the_active_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    Config::add_context(
        &path,
        "prod",
        crate::config::NewContext { pachd_address: "grpcs://pachd.example.com:443".into(), ..Default::default() },
    )
    .unwrap();
    let config = Config::add_context(
        &path,
        "dev",
        crate::config::NewContext { pachd_address: "localhost".into(), ..Default::default() },
    )
    .unwrap();
    let out = text(|w| contexts(w, &mut Vec::new(), &config, false));
    assert_eq!(
        out,
        "   NAME  PACHD                          METHOD  ISSUER\n\
         \x20  dev   grpc://localhost:30650         pachd   -\n\
         *  prod  grpcs://pachd.example.com:443  pachd   -\n"
    );
    let value = json_of(|w| contexts(w, &mut Vec::new(), &config, true));
    assert_eq!(value["active_context"], "prod");
    assert_eq!(
        value["contexts"][0],
        json!({"name": "dev", "active": false, "pachd_address": "grpc://localhost:30650", "method": "pachd",
               "issuer": null, "issuer_url": null, "issuer_ca_file": null, "client_id": null, "scopes": [],
               "redirect_ports": [], "redirect_host": "127.0.0.1", "ca_file": null})
    );
}

#[test]
fn context_list_shows_non_default_login_settings_under_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = Config::add_context(
        &path,
        "corp",
        crate::config::NewContext {
            pachd_address: "grpcs://pachd.corp:443".into(),
            issuer: Some("https://sso.corp/".into()),
            issuer_url: Some("http://dex.local:5556/".into()),
            client_id: Some("pachagent".into()),
            redirect_ports: vec![8765, 8766],
            redirect_host: Some(crate::config::RedirectHost::Localhost),
            method: Some(crate::config::Method::Device),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        text(|w| contexts(w, &mut Vec::new(), &config, false)),
        "   NAME  PACHD                   METHOD  ISSUER\n\
         *  corp  grpcs://pachd.corp:443  device  https://sso.corp/\n\
         \x20  discovery: http://dex.local:5556/\n\
         \x20  redirect: localhost on 8765, 8766\n"
    );
    let value = json_of(|w| contexts(w, &mut Vec::new(), &config, true));
    let ctx = &value["contexts"][0];
    assert_eq!(ctx["redirect_ports"], json!([8765, 8766]));
    assert_eq!(ctx["redirect_host"], "localhost");
    assert_eq!(ctx["issuer_url"], "http://dex.local:5556/");
    assert_eq!(ctx["method"], "device");
}
