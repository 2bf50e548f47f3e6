//! Backends reached through the `keyring` crate: the Secret Service (Linux), the Keychain (macOS) and the
//! Credential Manager (Windows).
//!
//! Owns the translation between `keyring` and this module: credentials are built directly for the one platform
//! store (never through `keyring`'s default builder, which silently falls back to an in-memory mock when no
//! store feature matches), and `keyring::Error` becomes a [`Error`] that says what the user should do. Calls
//! here block (`keyring`'s async Secret Service drives its own runtime), so [`super::Store`] runs them on a
//! separate thread under a timeout.
//!
//! `keyring` hides the platform error types, so a locked Secret Service is recognised by the text of the D-Bus
//! error it reports; [`classify`] is the one place that does it.

use keyring::credential::Credential;
use zeroize::Zeroizing;

use super::{Backend, Error, RawStore};

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

/// How many times a call starts over when the Secret Service lists an item it then cannot find.
const VANISHED_RETRIES: u32 = 3;

/// Runs `call`, again after a short pause when the Secret Service answered that an object it had just listed does
/// not exist. That happens when another client's write or delete is half done — notably one whose process was
/// killed in the middle (gnome-keyring lists the new item before its interface is there). Such a state lasts
/// milliseconds; failing on it would make an agent restarted after a crash refuse to start.
fn retrying_vanished<T>(mut call: impl FnMut() -> keyring::Result<T>) -> keyring::Result<T> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(keyring::Error::PlatformFailure(e)) if attempt < VANISHED_RETRIES && vanished(&e.to_string()) => {
                attempt += 1;
                tracing::debug!(attempt, "the Secret Service named an item it could not find; trying again");
                std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}

/// Whether a D-Bus error says an object or its interface is (no longer, or not yet) there.
fn vanished(text: &str) -> bool {
    ["UnknownObject", "UnknownMethod", "UnknownInterface", "No such interface", "No such object"]
        .iter()
        .any(|needle| text.contains(needle))
}

#[cfg(target_os = "linux")]
fn build(service: &str, account: &str) -> keyring::Result<Box<Credential>> {
    // `None` = the default collection, where `keyring` also looks for entries written without a target.
    Ok(Box::new(keyring::secret_service::SsCredential::new_with_target(None, service, account)?))
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
        match retrying_vanished(|| credential.get_secret()) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.fail(account, e)),
        }
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        let credential = self.credential(&self.service, account)?;
        match retrying_vanished(|| credential.set_secret(bytes)) {
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
        match retrying_vanished(|| credential.delete_credential()) {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.fail(account, e)),
        }
    }

    /// Writes, reads back and deletes a probe entry. A lookup of a missing entry would not do: the Secret Service
    /// answers searches even when the collection is locked, and only reading or writing a secret shows the lock.
    /// The probe lives under `<service>:probe`, a service no store can have (service names exclude `:`), so it
    /// never meets a context's entry. Its account names this process and this probe, so that no two probes ever
    /// read or delete each other's entry: not two processes opening the store at once (an agent starting while
    /// `doctor` runs), nor two probes of one agent, one of which gave up on a frozen keyring while its thread,
    /// which a timeout cannot stop, carries on when the keyring wakes.
    fn probe(&self) -> Result<(), Error> {
        const VALUE: &[u8] = b"pachagent probe";
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = format!("probe-{}-{n}", std::process::id());
        let service = format!("{}:probe", self.service);
        let credential = self.credential(&service, &account)?;
        retrying_vanished(|| credential.set_secret(VALUE)).map_err(|e| self.fail(&account, e))?;
        let read = retrying_vanished(|| credential.get_secret()).map_err(|e| self.fail(&account, e))?;
        match retrying_vanished(|| credential.delete_credential()) {
            Ok(()) | Err(keyring::Error::NoEntry) => {}
            Err(e) => return Err(self.fail(&account, e)),
        }
        if read == VALUE {
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

/// Why a Secret Service without a `default` alias cannot be used, and how to give it one.
const NO_DEFAULT_KEYRING: &str = "the Secret Service has no default keyring; create one by logging in to a desktop \
                                  session once, or with `gnome-keyring-daemon --unlock` given a password on stdin";

/// `NoStorageAccess`: for the Secret Service a locked item or collection, a dismissed unlock prompt, or a missing
/// default collection; for the Keychain and the Credential Manager, a store that is not there for this session.
fn no_access(backend: Backend, text: &str) -> Error {
    match backend {
        Backend::SecretService if text.contains("result not returned") => {
            Error::Unavailable { backend, reason: NO_DEFAULT_KEYRING.to_owned() }
        }
        Backend::SecretService => Error::Locked { backend },
        _ => Error::Unavailable { backend, reason: text.to_owned() },
    }
}

/// `PlatformFailure`: sort out the failures that have a next step other than "report a bug".
fn platform_failure(backend: Backend, text: &str) -> Error {
    const LOCKED: [&str; 4] = [
        "org.freedesktop.Secret.Error.IsLocked",
        "object locked",
        "prompt dismissed",
        "User interaction is not allowed",
    ];
    const UNREACHABLE: [&str; 7] = [
        "no secret service provider or dbus session found",
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "autolaunch",
        "Connection refused",
        "No such file or directory",
    ];
    if LOCKED.iter().any(|p| text.contains(p)) {
        Error::Locked { backend }
    } else if UNREACHABLE.iter().any(|p| text.contains(p)) {
        Error::Unavailable { backend, reason: text.to_owned() }
    } else {
        Error::Platform { backend, reason: text.to_owned() }
    }
}
