//! Engine values to protobuf messages.

use crate::engine::{Event, EventKind, LoginDone, LoginEvent, SessionMethod, SessionState, SessionView};
use crate::proto::agent as pb;

pub use crate::proto::timestamp;

fn method(m: SessionMethod) -> pb::LoginMethod {
    match m {
        SessionMethod::PachToken => pb::LoginMethod::PachToken,
        SessionMethod::IdToken => pb::LoginMethod::IdToken,
        SessionMethod::Oidc => pb::LoginMethod::Oidc,
        SessionMethod::Device => pb::LoginMethod::Device,
        SessionMethod::Pachd => pb::LoginMethod::Pachd,
    }
}

fn state(s: SessionState) -> pb::SessionState {
    match s {
        SessionState::LoggedOut => pb::SessionState::LoggedOut,
        SessionState::Active => pb::SessionState::Active,
        SessionState::Refreshing => pb::SessionState::Refreshing,
        SessionState::LoginRequired => pb::SessionState::LoginRequired,
        SessionState::Expired => pb::SessionState::Expired,
    }
}

fn kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::LoggedIn => pb::EventKind::LoggedIn,
        EventKind::Refreshed => pb::EventKind::Refreshed,
        EventKind::ExpiringSoon => pb::EventKind::ExpiringSoon,
        EventKind::Expired => pb::EventKind::Expired,
        EventKind::LoginRequired => pb::EventKind::LoginRequired,
        EventKind::RefreshFailed => pb::EventKind::RefreshFailed,
        EventKind::LoggedOut => pb::EventKind::LoggedOut,
    }
}

/// `status`'s row for one context.
pub fn session_to_proto(v: SessionView) -> pb::SessionStatus {
    pb::SessionStatus {
        context: v.context,
        state: state(v.state) as i32,
        username: v.username,
        expiration: v.expiration.map(timestamp),
        refresh_at: v.refresh_at.map(timestamp),
        method: v.method.map_or(pb::LoginMethod::Unspecified, method) as i32,
        store_backend: v.store_backend.to_owned(),
        pachd_address: v.pachd_address,
        issuer: v.issuer.unwrap_or_default(),
        last_error: v.last_error.unwrap_or_default(),
        active: v.active,
    }
}

/// A `Watch` event.
pub fn event_to_proto(e: Event) -> pb::SessionEvent {
    pb::SessionEvent {
        context: e.context,
        kind: kind(e.kind) as i32,
        at: Some(timestamp(e.at)),
        expiration: e.expiration.map(timestamp),
        detail: e.detail,
        username: e.username,
    }
}

/// The `done` event of a login.
pub fn login_done_to_proto(d: LoginDone) -> pb::Done {
    pb::Done {
        context: d.context,
        username: d.username,
        expiration: d.expiration.map(timestamp),
        method: method(d.method) as i32,
        already_logged_in: d.already_logged_in,
    }
}

/// A step of an interactive login.
pub fn login_event_to_proto(e: LoginEvent) -> pb::LoginEvent {
    use pb::login_event::Event;
    let event = match e {
        LoginEvent::MethodChosen { method: m, reason } => {
            Event::MethodChosen(pb::MethodChosen { method: method(m) as i32, reason })
        }
        LoginEvent::OpenUrl { url, redirect_uri, port_forward_hint } => Event::OpenUrl(pb::OpenUrl {
            url,
            redirect_uri: redirect_uri.unwrap_or_default(),
            port_forward_hint: port_forward_hint.unwrap_or_default(),
        }),
        LoginEvent::UserCode { user_code, verification_uri, verification_uri_complete } => {
            Event::UserCode(pb::UserCode {
                user_code,
                verification_uri,
                verification_uri_complete: verification_uri_complete.unwrap_or_default(),
            })
        }
        LoginEvent::Waiting { deadline } => Event::Waiting(pb::Waiting { deadline: Some(timestamp(deadline)) }),
    };
    pb::LoginEvent { event: Some(event) }
}
