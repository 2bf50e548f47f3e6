//! Backends reached through the `keyring` crate: the Keychain (macOS) and the Credential Manager (Windows). The
//! Secret Service has its own module (`super::secret_service`, Linux), which keeps its connection between calls.
//!
//! Owns the translation between `keyring` and this module: credentials are built directly for the one platform
//! store (never through `keyring`'s default builder, which silently falls back to an in-memory mock when no
//! store feature matches), and `keyring::Error` becomes a [`Error`] that says what the user should do. Calls
//! here block, so [`super::Store`] runs them on a separate thread under a timeout.

use keyring::credential::Credential;
use zeroize::Zeroizing;

use super::{Backend, Error, PROBE_VALUE, RawStore};

/// One service's entries in a `keyring` backend.
pub(super) struct KeyringStore {
    backend: Backend,
    service: String,
}

impl KeyringStore {
    pub(super) fn new(backend: Backend, service: &str) -> Self {
        Self { backend, service: service.to_owned() }
    }

    /// The platform credential for (`service`, `account`), built for this platform's store explicitly.
    fn credential(&self, service: &str, account: &str) -> Result<Box<Credential>, Error> {
        build(service, account).map_err(|e| classify(self.backend, &self.service, account, e))
    }

    fn fail(&self, account: &str, e: keyring::Error) -> Error {
        classify(self.backend, &self.service, account, e)
    }
}

#[cfg(target_os = "macos")]
fn build(service: &str, account: &str) -> keyring::Result<Box<Credential>> {
    Ok(Box::new(keyring::macos::MacCredential::new_with_target(None, service, account)?))
}

#[cfg(target_os = "windows")]
fn build(service: &str, account: &str) -> keyring::Result<Box<Credential>> {
    Ok(Box::new(keyring::windows::WinCredential::new_with_target(None, service, account)?))
}

impl RawStore for KeyringStore {
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let credential = self.credential(&self.service, account)?;
        match credential.get_secret() {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.fail(account, e)),
        }
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        let credential = self.credential(&self.service, account)?;
        match credential.set_secret(bytes) {
            Ok(()) => Ok(()),
            Err(keyring::Error::TooLong(_, limit)) => Err(Error::TooLarge {
                backend: self.backend,
                context: account.to_owned(),
                size: bytes.len(),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }),
            Err(e) => Err(self.fail(account, e)),
        }
    }

    fn remove(&self, account: &str) -> Result<bool, Error> {
        let credential = self.credential(&self.service, account)?;
        match credential.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.fail(account, e)),
        }
    }

    /// Writes, reads back and deletes a probe entry ([`super::probe_entry`]).
    fn probe(&self) -> Result<(), Error> {
        let (service, account) = super::probe_entry(&self.service);
        let credential = self.credential(&service, &account)?;
        credential.set_secret(PROBE_VALUE).map_err(|e| self.fail(&account, e))?;
        let read = credential.get_secret().map_err(|e| self.fail(&account, e))?;
        match credential.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => {}
            Err(e) => return Err(self.fail(&account, e)),
        }
        if read == PROBE_VALUE {
            Ok(())
        } else {
            Err(Error::Platform {
                backend: self.backend,
                reason: "the probe entry read back differently from what was written".to_owned(),
            })
        }
    }
}

/// Turns a `keyring` error into ours. Only `Display` text of the platform error is used, never `Debug`, which for
/// `BadEncoding` would print stored bytes.
fn classify(backend: Backend, service: &str, account: &str, e: keyring::Error) -> Error {
    match e {
        keyring::Error::NoStorageAccess(inner) => no_access(backend, &inner.to_string()),
        keyring::Error::PlatformFailure(inner) => platform_failure(backend, &inner.to_string()),
        keyring::Error::Ambiguous(found) => Error::Corrupt {
            context: account.to_owned(),
            reason: format!(
                "{} entries for it exist in the {backend} store; remove them all (e.g. `secret-tool clear service \
                 {service} username {account}`)",
                found.len()
            ),
        },
        keyring::Error::TooLong(what, limit) => {
            Error::Platform { backend, reason: format!("the {what} is longer than the platform limit of {limit}") }
        }
        keyring::Error::Invalid(what, why) => Error::Platform { backend, reason: format!("invalid {what}: {why}") },
        keyring::Error::BadEncoding(_) => Error::Platform { backend, reason: "unexpected encoding".to_owned() },
        keyring::Error::NoEntry => Error::Platform { backend, reason: "the entry vanished".to_owned() },
        other => Error::Platform { backend, reason: other.to_string() },
    }
}

/// `NoStorageAccess`: a Keychain or Credential Manager that is not there for this session.
fn no_access(backend: Backend, text: &str) -> Error {
    Error::Unavailable { backend, reason: text.to_owned() }
}

/// `PlatformFailure`: sort out the failures that have a next step other than "report a bug".
fn platform_failure(backend: Backend, text: &str) -> Error {
    // The Keychain's answer when it is locked and may not ask the user.
    if text.contains("User interaction is not allowed") {
        Error::Locked { backend }
    } else {
        Error::Platform { backend, reason: text.to_owned() }
    }
}
