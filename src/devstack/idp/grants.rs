//! What the dev IdP remembers between requests: login pages waiting for an email, authorization codes,
//! refresh-token families and device authorizations.
//!
//! Pure state: callers pass `now` and hold the lock; nothing here does I/O or reads the clock. Codes, refresh tokens
//! and device codes are stored under their SHA-256, so the table itself never holds a usable credential.
//! Refresh tokens rotate: each refresh marks the presented token used and issues a sibling in the same family;
//! presenting a used one again revokes the family (OAuth 2.0 Security BCP, refresh token rotation).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::devstack::random;
use crate::devstack::tokens::hash_token;

/// How long a used code, refresh token or device code is remembered past its expiry, so that a late replay is
/// still recognised as a replay instead of as an unknown value.
const REPLAY_MEMORY: Duration = Duration::from_secs(10 * 60);

/// A refused token request: an RFC 6749 §5.2 (or RFC 8628 §3.5) error code and a human description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenError {
    /// The `error` value, e.g. `invalid_grant`.
    pub(crate) error: &'static str,
    /// The `error_description` value.
    pub(crate) description: String,
}

impl TokenError {
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self { error, description: description.into() }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }
}

/// What the user's login granted: carried by codes, refresh tokens and approved device codes into ID tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) email: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) auth_time: SystemTime,
}

/// A checked authorization request, kept while the login page is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    /// The S256 `code_challenge`, when the client sent one.
    pub(crate) code_challenge: Option<String>,
    pub(crate) login_hint: Option<String>,
}

/// Identifies the chain of refresh tokens descending from one login.
pub(crate) type FamilyId = u64;

#[derive(Debug)]
struct CodeRecord {
    request: LoginRequest,
    grant: Grant,
    expires_at: SystemTime,
    family: FamilyId,
    redeemed: bool,
}

#[derive(Debug)]
struct RefreshRecord {
    family: FamilyId,
    grant: Grant,
    expires_at: SystemTime,
    rotated: bool,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceStatus {
    Pending,
    Approved { email: String, at: SystemTime },
    Denied,
    Redeemed,
}

#[derive(Debug)]
struct DeviceRecord {
    client_id: String,
    scopes: Vec<String>,
    user_code: String,
    expires_at: SystemTime,
    interval: Duration,
    last_poll: Option<SystemTime>,
    status: DeviceStatus,
}

/// A device authorization as the verification pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingDevice {
    pub(crate) client_id: String,
    pub(crate) user_code: String,
}

/// A new device authorization, as the device authorization endpoint returns it.
#[derive(Debug)]
pub(crate) struct NewDevice {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
}

/// The user's answer on the device page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceDecision {
    Approve { email: String },
    Deny,
}

/// All of the IdP's per-login state.
#[derive(Debug, Default)]
pub(crate) struct IdpState {
    logins: HashMap<String, (LoginRequest, SystemTime)>,
    codes: HashMap<String, CodeRecord>,
    refresh: HashMap<String, RefreshRecord>,
    revoked_families: HashSet<FamilyId>,
    next_family: FamilyId,
    devices: HashMap<String, DeviceRecord>,
    user_codes: HashMap<String, String>,
}

impl IdpState {
    /// Remembers a checked authorization request while its login page is open; returns the page's login id.
    pub(crate) fn begin_login(&mut self, request: LoginRequest, now: SystemTime, ttl: Duration) -> String {
        self.prune(now);
        let id = random::token();
        self.logins.insert(id.clone(), (request, now + ttl));
        id
    }

    /// The open login with this id.
    pub(crate) fn login(&self, id: &str, now: SystemTime) -> Option<&LoginRequest> {
        self.logins.get(id).filter(|(_, expires)| now < *expires).map(|(request, _)| request)
    }

    /// Ends an open login (the user submitted or cancelled); a login id works once.
    pub(crate) fn take_login(&mut self, id: &str, now: SystemTime) -> Option<LoginRequest> {
        let (request, expires) = self.logins.remove(id)?;
        (now < expires).then_some(request)
    }

    /// Issues a one-time authorization code for a finished login.
    pub(crate) fn issue_code(
        &mut self,
        request: LoginRequest,
        email: String,
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        self.prune(now);
        let code = random::token();
        let grant = Grant {
            client_id: request.client_id.clone(),
            email,
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            auth_time: now,
        };
        let family = self.new_family();
        self.codes
            .insert(hash_token(&code), CodeRecord { request, grant, expires_at: now + ttl, family, redeemed: false });
        code
    }

    /// Redeems a code at the token endpoint: same client, same redirect URI, PKCE verifier matching, used once.
    /// A second use revokes whatever the first one produced (RFC 6749 §4.1.2).
    pub(crate) fn redeem_code(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now: SystemTime,
    ) -> Result<(Grant, FamilyId), TokenError> {
        let unknown = || TokenError::invalid_grant("the authorization code is unknown or expired");
        let record = self.codes.get_mut(&hash_token(code)).ok_or_else(unknown)?;
        if record.request.client_id != client_id {
            return Err(TokenError::invalid_grant("the authorization code was issued to another client"));
        }
        if record.redeemed {
            let family = record.family;
            self.revoked_families.insert(family);
            return Err(TokenError::invalid_grant(
                "the authorization code was already used; the tokens issued for it are now revoked",
            ));
        }
        if now >= record.expires_at {
            return Err(unknown());
        }
        if redirect_uri != Some(record.request.redirect_uri.as_str()) {
            return Err(TokenError::invalid_grant("redirect_uri does not match the one of the authorization request"));
        }
        check_pkce(record.request.code_challenge.as_deref(), verifier)?;
        record.redeemed = true;
        Ok((record.grant.clone(), record.family))
    }

    /// Issues a refresh token in `family`, valid for `ttl` from now.
    pub(crate) fn issue_refresh(&mut self, grant: Grant, family: FamilyId, now: SystemTime, ttl: Duration) -> String {
        let token = random::token();
        self.refresh.insert(hash_token(&token), RefreshRecord { family, grant, expires_at: now + ttl, rotated: false });
        token
    }

    /// Redeems a refresh token for rotation: it is used up, and a reused one revokes its whole family.
    /// `requested` scopes (the optional `scope` parameter) must have been granted; they are checked before the
    /// token is used up, so a bad request does not cost the client its refresh token.
    pub(crate) fn redeem_refresh(
        &mut self,
        token: &str,
        client_id: &str,
        requested: Option<&[String]>,
        now: SystemTime,
    ) -> Result<(Grant, FamilyId), TokenError> {
        let record = self
            .refresh
            .get_mut(&hash_token(token))
            .ok_or_else(|| TokenError::invalid_grant("the refresh token is unknown"))?;
        if record.grant.client_id != client_id {
            return Err(TokenError::invalid_grant("the refresh token was issued to another client"));
        }
        if self.revoked_families.contains(&record.family) {
            return Err(TokenError::invalid_grant("the refresh token was revoked"));
        }
        if record.rotated {
            let family = record.family;
            self.revoked_families.insert(family);
            return Err(TokenError::invalid_grant(
                "the refresh token was already used; every refresh token of this login is now revoked",
            ));
        }
        if now >= record.expires_at {
            return Err(TokenError::invalid_grant("the refresh token expired"));
        }
        if let Some(extra) = requested.unwrap_or_default().iter().find(|s| !record.grant.scopes.contains(s)) {
            return Err(TokenError::new("invalid_scope", format!("the scope {extra:?} was not granted at login")));
        }
        record.rotated = true;
        Ok((record.grant.clone(), record.family))
    }

    /// Starts a device authorization (RFC 8628 §3.1).
    pub(crate) fn begin_device(
        &mut self,
        client_id: &str,
        scopes: Vec<String>,
        now: SystemTime,
        ttl: Duration,
        interval: Duration,
    ) -> NewDevice {
        self.prune(now);
        let device_code = random::token();
        let mut user_code = random::user_code();
        while self.user_codes.contains_key(&user_code) {
            user_code = random::user_code();
        }
        let record = DeviceRecord {
            client_id: client_id.to_owned(),
            scopes,
            user_code: user_code.clone(),
            expires_at: now + ttl,
            interval,
            last_poll: None,
            status: DeviceStatus::Pending,
        };
        let key = hash_token(&device_code);
        self.user_codes.insert(user_code.clone(), key.clone());
        self.devices.insert(key, record);
        NewDevice { device_code, user_code }
    }

    /// The pending device authorization a (normalized) user code names.
    pub(crate) fn pending_device(&self, user_code: &str, now: SystemTime) -> Option<PendingDevice> {
        let record = self.devices.get(self.user_codes.get(user_code)?)?;
        (record.status == DeviceStatus::Pending && now < record.expires_at)
            .then(|| PendingDevice { client_id: record.client_id.clone(), user_code: record.user_code.clone() })
    }

    /// Records the user's answer; `false` when the code is no longer pending.
    pub(crate) fn decide_device(&mut self, user_code: &str, decision: DeviceDecision, now: SystemTime) -> bool {
        let Some(record) = self.user_codes.get(user_code).and_then(|key| self.devices.get_mut(key)) else {
            return false;
        };
        if record.status != DeviceStatus::Pending || now >= record.expires_at {
            return false;
        }
        record.status = match decision {
            DeviceDecision::Approve { email } => DeviceStatus::Approved { email, at: now },
            DeviceDecision::Deny => DeviceStatus::Denied,
        };
        true
    }

    /// One poll of the token endpoint with a device code (RFC 8628 §3.4, §3.5). Polling faster than the interval
    /// answers `slow_down` and lengthens the interval by `slow_down_step` for every later poll.
    pub(crate) fn poll_device(
        &mut self,
        device_code: &str,
        client_id: &str,
        now: SystemTime,
        slow_down_step: Duration,
    ) -> Result<Grant, TokenError> {
        let record = self
            .devices
            .get_mut(&hash_token(device_code))
            .ok_or_else(|| TokenError::invalid_grant("the device code is unknown"))?;
        if record.client_id != client_id {
            return Err(TokenError::invalid_grant("the device code was issued to another client"));
        }
        if now >= record.expires_at && record.status != DeviceStatus::Redeemed {
            return Err(TokenError::new("expired_token", "the device code expired; start a new device login"));
        }
        match record.status.clone() {
            DeviceStatus::Redeemed => Err(TokenError::invalid_grant("the device code was already used")),
            DeviceStatus::Denied => Err(TokenError::new("access_denied", "the user declined the device login")),
            DeviceStatus::Approved { email, at } => {
                record.status = DeviceStatus::Redeemed;
                Ok(Grant {
                    client_id: record.client_id.clone(),
                    email,
                    scopes: record.scopes.clone(),
                    nonce: None,
                    auth_time: at,
                })
            }
            DeviceStatus::Pending => {
                let too_soon = record.last_poll.is_some_and(|last| now < last + record.interval);
                record.last_poll = Some(now);
                if too_soon {
                    record.interval += slow_down_step;
                    let secs = record.interval.as_secs_f64();
                    return Err(TokenError::new("slow_down", format!("polling too fast; wait {secs} s between polls")));
                }
                Err(TokenError::new("authorization_pending", "the user has not finished the device login yet"))
            }
        }
    }

    /// A new refresh-token family, for a login that did not come through a code.
    pub(crate) fn new_family(&mut self) -> FamilyId {
        self.next_family += 1;
        self.next_family
    }

    /// Drops what can no longer matter: expired login pages, and codes, refresh tokens and device codes expired
    /// for longer than [`REPLAY_MEMORY`].
    fn prune(&mut self, now: SystemTime) {
        let forgotten = |expires_at: SystemTime| now >= expires_at + REPLAY_MEMORY;
        self.logins.retain(|_, (_, expires)| now < *expires);
        self.codes.retain(|_, r| !forgotten(r.expires_at));
        self.refresh.retain(|_, r| !forgotten(r.expires_at));
        self.devices.retain(|_, r| !forgotten(r.expires_at));
        let devices = &self.devices;
        self.user_codes.retain(|_, key| devices.contains_key(key));
    }
}

/// RFC 7636 §4.6 with S256 only. A verifier without a challenge is refused too: a client that sends one expects
/// PKCE to protect it, and silently ignoring it would hide a downgrade (RFC 9700 §2.1.1).
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), TokenError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err(TokenError::invalid_grant("code_verifier was sent but the authorization request had no code_challenge"))
        }
        (Some(_), None) => Err(TokenError::new("invalid_request", "code_verifier is required (PKCE)")),
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !well_formed {
                return Err(TokenError::new(
                    "invalid_request",
                    "code_verifier must be 43 to 128 unreserved characters",
                ));
            }
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                Ok(())
            } else {
                Err(TokenError::invalid_grant("PKCE verification failed: code_verifier does not match code_challenge"))
            }
        }
    }
}
