//! The claims go-oidc checks and pachd reads, with Go's JSON and time semantics.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Error, NBF_LEEWAY, VerifyError};
use crate::devstack::gofmt::time_string;

/// An instant as go-oidc's `jsonTime` holds it: Unix seconds plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GoTime {
    secs: i64,
    nanos: u32,
}

impl GoTime {
    /// Go's zero `time.Time` (January 1, year 1), what a missing `exp` becomes.
    const ZERO: GoTime = GoTime { secs: -62_135_596_800, nanos: 0 };

    fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Self { secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() },
            Err(_) => Self { secs: 0, nanos: 0 },
        }
    }

    fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH + Duration::new(secs, self.nanos),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    }

    fn plus(self, d: Duration) -> Self {
        let nanos = u64::from(self.nanos) + u64::from(d.subsec_nanos());
        let carry = i64::try_from(nanos / 1_000_000_000).unwrap_or(0);
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self { secs: self.secs.saturating_add(secs).saturating_add(carry), nanos: (nanos % 1_000_000_000) as u32 }
    }

    /// `jsonTime.UnmarshalJSON`: an integer, or a float split into seconds and a fraction.
    fn from_json(v: &Value) -> Option<Self> {
        if let Some(secs) = v.as_i64() {
            return Some(Self { secs, nanos: 0 });
        }
        let f = v.as_f64()?;
        let secs = f.trunc();
        let nanos = ((f - secs) * 1e9) as i64;
        // Go's time.Unix normalises a negative fraction into the previous second.
        let (secs, nanos) = if nanos < 0 { (secs as i64 - 1, nanos + 1_000_000_000) } else { (secs as i64, nanos) };
        Some(Self { secs, nanos: u32::try_from(nanos).unwrap_or(0) })
    }

    fn go_string(self) -> String {
        time_string(self.secs, self.nanos)
    }
}

/// The claims go-oidc and pachd read, with Go's JSON semantics (null or absent means the zero value).
#[derive(Debug)]
pub(super) struct Claims {
    iss: String,
    aud: Vec<String>,
    exp: Option<GoTime>,
    nbf: Option<GoTime>,
    nonce: String,
    email: Option<Value>,
}

impl Claims {
    pub(super) fn parse(payload: &[u8]) -> Result<Self, VerifyError> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| VerifyError::Claims(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(VerifyError::Claims(format!(
                "json: cannot unmarshal {} into Go value of type oidc.idToken",
                go_json_type(&value)
            )));
        };
        let field = |name: &str| map.get(name).filter(|v| !v.is_null());
        let mismatch = |name: &str, v: &Value, go_type: &str| {
            VerifyError::Claims(format!(
                "json: cannot unmarshal {} into Go struct field idToken.{name} of type {go_type}",
                go_json_type(v)
            ))
        };
        let iss = match field("iss") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(mismatch("iss", v, "string")),
        };
        let aud = match field("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(v) => return Err(mismatch("aud", v, "oidc.audience")),
        };
        let time = |name: &str| match field(name) {
            None => Ok(None),
            Some(v) => GoTime::from_json(v).map(Some).ok_or_else(|| mismatch(name, v, "oidc.jsonTime")),
        };
        let nonce = match field("nonce") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(mismatch("nonce", v, "string")),
        };
        Ok(Self { iss, aud, exp: time("exp")?, nbf: time("nbf")?, nonce, email: field("email").cloned() })
    }

    /// go-oidc's claim checks, in its order: issuer, audience, expiry, not-before.
    pub(super) fn check(&self, issuer: &str, client_id: &str, now: SystemTime) -> Result<(), VerifyError> {
        if self.iss != issuer {
            return Err(VerifyError::Issuer { expected: issuer.to_owned(), got: self.iss.clone() });
        }
        if !self.aud.iter().any(|a| a == client_id) {
            return Err(VerifyError::Audience { expected: client_id.to_owned(), got: self.aud.clone() });
        }
        let now = GoTime::from_system_time(now);
        let exp = self.exp.unwrap_or(GoTime::ZERO);
        if exp < now {
            return Err(VerifyError::Expired { expiry: exp.go_string() });
        }
        if let Some(nbf) = self.nbf
            && now.plus(NBF_LEEWAY) < nbf
        {
            return Err(VerifyError::NotYetValid { now: now.go_string(), nbf: nbf.go_string() });
        }
        Ok(())
    }

    /// The `exp` claim (Go's zero time when absent, though such a token never passes [`Claims::check`]).
    pub(super) fn expiry(&self) -> SystemTime {
        self.exp.unwrap_or(GoTime::ZERO).to_system_time()
    }

    /// go-oidc's `IDToken.Nonce`: empty when the token has none.
    pub(super) fn nonce(&self) -> String {
        self.nonce.clone()
    }

    /// pachd's `IDTokenClaims.Email`.
    pub(super) fn email(&self) -> Result<String, Error> {
        match &self.email {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(Error::Claims(format!(
                "json: cannot unmarshal {} into Go struct field IDTokenClaims.email of type string",
                go_json_type(v)
            ))),
        }
    }
}

/// How Go's `encoding/json` names a JSON value's kind in its errors.
fn go_json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
