//! Secret values: Pachyderm tokens, OIDC ID tokens and (later) refresh tokens and client secrets.
//!
//! A secret here cannot be printed by accident: `Debug` shows a redaction marker, there is no `Display`,
//! `PartialEq` or `Serialize`, and the bytes are zeroed when the value is dropped. The one way out is
//! [`Secret::expose_secret`], which is easy to grep for. This module depends on no other module of the crate.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A secret string that redacts itself in `Debug` and is zeroed on drop.
pub struct Secret<K> {
    value: Zeroizing<String>,
    kind: std::marker::PhantomData<K>,
}

impl<K: SecretKind> Secret<K> {
    /// Wraps a secret; the caller's `String` is moved, so no unzeroed copy stays behind.
    pub fn new(value: String) -> Self {
        Self { value: Zeroizing::new(value), kind: std::marker::PhantomData }
    }

    /// Reads a secret from text such as stdin: surrounding whitespace (the trailing newline of `echo`) is dropped
    /// and the buffer it came from is zeroed.
    pub fn from_input(mut raw: String) -> Self {
        let trimmed = raw.trim().to_owned();
        raw.zeroize();
        Self::new(trimmed)
    }

    /// The secret itself. Every call site is a place where a secret leaves its wrapper: keep them few.
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// Whether the secret is the empty string (a field that was not set).
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

impl<K: SecretKind> Clone for Secret<K> {
    fn clone(&self) -> Self {
        Self::new(self.value.as_str().to_owned())
    }
}

impl<K: SecretKind> fmt::Debug for Secret<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}([redacted])", K::NAME)
    }
}

/// Names the kind of a secret in its redacted `Debug` output.
pub trait SecretKind {
    /// Shown instead of the value.
    const NAME: &'static str;
}

/// Marker for [`PachToken`].
pub enum PachTokenKind {}
impl SecretKind for PachTokenKind {
    const NAME: &'static str = "PachToken";
}

/// Marker for [`IdToken`].
pub enum IdTokenKind {}
impl SecretKind for IdTokenKind {
    const NAME: &'static str = "IdToken";
}

/// Marker for [`RefreshToken`].
pub enum RefreshTokenKind {}
impl SecretKind for RefreshTokenKind {
    const NAME: &'static str = "RefreshToken";
}

/// Marker for [`ClientSecret`].
pub enum ClientSecretKind {}
impl SecretKind for ClientSecretKind {
    const NAME: &'static str = "ClientSecret";
}

/// Marker for [`AuthCode`].
pub enum AuthCodeKind {}
impl SecretKind for AuthCodeKind {
    const NAME: &'static str = "AuthCode";
}

/// An OAuth authorization code from the login callback: single-use and short-lived, but whoever holds it (with
/// the PKCE verifier) can finish the login, so it is kept like the tokens it buys.
pub type AuthCode = Secret<AuthCodeKind>;

/// An OAuth refresh token: what lets the agent renew a session without the user.
pub type RefreshToken = Secret<RefreshTokenKind>;

/// An OAuth client secret (confidential clients only); kept in the keyring, never in the config file.
pub type ClientSecret = Secret<ClientSecretKind>;

/// A Pachyderm session, robot or root token: an opaque bearer string sent as `authn-token`.
pub type PachToken = Secret<PachTokenKind>;

/// An OIDC ID token (a signed JWT) to be traded with pachd's `Authenticate{id_token}`.
pub type IdToken = Secret<IdTokenKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let token = PachToken::new("0123456789abcdef0123456789abcdef".to_owned());
        let shown = format!("{token:?} {:#?}", Some(&token));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("PachToken([redacted])"), "{shown}");
    }

    #[test]
    fn input_is_trimmed_like_a_line_read_from_stdin() {
        let token = IdToken::from_input("  eyJ.a.b\n".to_owned());
        assert_eq!(token.expose_secret(), "eyJ.a.b");
    }
}
