//! The freedesktop Secret Service (gnome-keyring, KWallet) over the D-Bus session bus, through the
//! `secret-service` crate.
//!
//! A store keeps one D-Bus connection and one encrypted Secret Service session for its whole life (in the agent,
//! the life of its keyring helper, see [`super::helper`]), and opens new ones only when a call fails on the old
//! ones (the keyring daemon restarted, the bus went away). Opening a
//! connection and a session per call, as the `keyring` crate does, is not only a key exchange per call: a stream
//! of short-lived clients each opening a session makes gnome-keyring abort (`gkd_secret_service_get_pkcs11_session:
//! assertion 'client' failed`, then a `g_variant_new` error; gnome-keyring's own bug, seen by many clients), and
//! every other program's secrets go with it until the daemon is started again, locked.
//!
//! Items carry the attributes that `keyring` 3 gave them (`service`, `username`, `target` = `default`), so the
//! sessions that earlier pachagent versions stored are found. Calls block (the crate drives its own runtime), so
//! [`super::Store`] runs them on a separate thread under a timeout.
//!
//! The crate's errors wrap D-Bus errors whose names carry the meaning (a locked collection, no provider), so
//! [`classify_text`] reads their text: the one place that does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secret_service::blocking::{Item, SecretService};
use secret_service::{EncryptionType, Error as SsError};
use zeroize::Zeroizing;

use super::{Backend, Error, PROBE_VALUE, RawStore};

const BACKEND: Backend = Backend::SecretService;

/// The collection `target` that `keyring` 3 recorded for items in the default collection.
const DEFAULT_TARGET: &str = "default";

/// One service's entries in the Secret Service, over a connection kept between calls.
pub(super) struct SecretServiceStore {
    service: String,
    /// The connection and session the next call uses; `None` until the first call and after one failed.
    connection: Mutex<Option<Arc<SecretService<'static>>>>,
}

/// How many times a call starts over when the Secret Service lists an item it then cannot find.
const VANISHED_RETRIES: u32 = 3;

impl SecretServiceStore {
    pub(super) fn new(service: &str) -> Self {
        Self { service: service.to_owned(), connection: Mutex::new(None) }
    }

    /// Runs `op` on the kept connection (or a new one), and starts over when that can help:
    /// - after a short pause, on the same connection, when the service answered that an object it had just listed
    ///   does not exist. That happens while another client's write or delete is half done — notably one whose
    ///   process was killed in the middle (gnome-keyring lists a new item before its interface is there). Such a
    ///   state lasts milliseconds; failing on it would make an agent restarted after a crash refuse to start;
    /// - once, on a new connection, when the kept one fails otherwise (a restarted daemon no longer knows the
    ///   kept session, a bus that went away). A lock is the user's to lift: it is reported at once.
    ///
    /// A connection that failed is not kept for the next call, so a store opens at most one new session per call
    /// however the service misbehaves.
    fn call<T>(&self, account: &str, op: impl Fn(&SecretService<'static>) -> Result<T, Failure>) -> Result<T, Error> {
        let mut vanished_retries = 0;
        let mut renewed = false;
        loop {
            let (connection, kept) = self.connection().map_err(classify)?;
            let e = match op(&connection) {
                Ok(value) => return Ok(value),
                Err(Failure::Several(count)) => return Err(self.ambiguous(account, count)),
                Err(Failure::Service(e)) => e,
            };
            let text = e.to_string();
            let class = classify_text(&e, &text);
            if matches!(class, Class::Locked) {
                return Err(error(class, text));
            }
            if vanished(&text) && vanished_retries < VANISHED_RETRIES {
                vanished_retries += 1;
                tracing::debug!(attempt = vanished_retries, "the Secret Service named an item it could not find");
                std::thread::sleep(Duration::from_millis(50 * u64::from(vanished_retries)));
                continue;
            }
            self.forget(&connection);
            if kept && !renewed {
                renewed = true;
                tracing::debug!("a Secret Service call failed on the kept connection; trying a new one");
                continue;
            }
            return Err(error(class, text));
        }
    }

    /// The kept connection, or a new one (then kept); and whether it was kept from an earlier call. The new
    /// connection is opened outside the lock: a service that hangs on it must not hold up calls that find a
    /// connection already there.
    fn connection(&self) -> Result<(Arc<SecretService<'static>>, bool), SsError> {
        if let Some(connection) = self.connection.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Ok((Arc::clone(connection), true));
        }
        let opened = Arc::new(SecretService::connect(EncryptionType::Dh)?);
        let mut slot = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        // Another call may have opened one meanwhile; keep that one (this thread drops its own, off the runtime).
        let connection = Arc::clone(slot.get_or_insert(opened));
        Ok((connection, false))
    }

    /// Drops `failed` as the kept connection, unless another call has already replaced it.
    fn forget(&self, failed: &Arc<SecretService<'static>>) {
        let mut slot = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|kept| Arc::ptr_eq(kept, failed)) {
            *slot = None;
        }
    }
}

impl Drop for SecretServiceStore {
    /// Closing a connection blocks on the crate's own runtime, which panics on a thread that drives another
    /// runtime (the agent's, or `doctor`'s) — where a store is dropped. So the last handle is let go on a thread
    /// of its own; calls on a connection already run on such threads, so they may drop theirs where they are.
    fn drop(&mut self) {
        let kept = self.connection.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(connection) = kept {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Without a thread (the closure is then dropped here), leaving the connection open until the
                // process ends beats a panic: hence `ManuallyDrop`.
                let connection = std::mem::ManuallyDrop::new(connection);
                let closing = std::thread::Builder::new().name("secret-service-close".to_owned());
                if let Err(e) = closing.spawn(move || drop(std::mem::ManuallyDrop::into_inner(connection))) {
                    tracing::debug!(error = %e, "could not close the Secret Service connection");
                }
            } else {
                drop(connection);
            }
        }
    }
}

/// The attributes of (`service`, `account`)'s item.
fn attributes<'a>(service: &'a str, account: &'a str) -> HashMap<&'a str, &'a str> {
    HashMap::from([("service", service), ("username", account), ("target", DEFAULT_TARGET)])
}

/// Why a call on an entry did not go through.
enum Failure {
    /// The service answered with an error (or did not answer).
    Service(SsError),
    /// This many items match the entry: only a person can tell which is right.
    Several(usize),
}

impl From<SsError> for Failure {
    fn from(e: SsError) -> Self {
        Failure::Service(e)
    }
}

/// The one item of (`service`, `account`), unlocked if it was locked (which may ask the user), or `None`.
fn find<'a>(ss: &'a SecretService<'static>, service: &str, account: &str) -> Result<Option<Item<'a>>, Failure> {
    let search = ss.search_items(attributes(service, account))?;
    let count = search.unlocked.len() + search.locked.len();
    if count > 1 {
        return Err(Failure::Several(count));
    }
    if let Some(item) = search.unlocked.into_iter().next() {
        return Ok(Some(item));
    }
    match search.locked.into_iter().next() {
        Some(item) => {
            item.unlock()?;
            Ok(Some(item))
        }
        None => Ok(None),
    }
}

impl SecretServiceStore {
    fn ambiguous(&self, account: &str, count: usize) -> Error {
        Error::Corrupt {
            context: account.to_owned(),
            reason: format!(
                "{count} entries for it exist in the {BACKEND} store; remove them all (e.g. `secret-tool clear service \
                 {} username {account}`)",
                self.service
            ),
        }
    }

    /// Reads (`service`, `account`)'s secret.
    fn read(&self, service: &str, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        self.call(account, |ss| match find(ss, service, account)? {
            None => Ok(None),
            Some(item) => Ok(Some(Zeroizing::new(item.get_secret()?))),
        })
    }

    /// Writes (`service`, `account`)'s secret into its item, or into a new item in the default collection.
    fn write(&self, service: &str, account: &str, bytes: &[u8]) -> Result<(), Error> {
        self.call(account, |ss| match find(ss, service, account)? {
            Some(item) => Ok(item.set_secret(bytes, "text/plain")?),
            None => {
                let collection = ss.get_default_collection()?;
                if collection.is_locked()? {
                    collection.unlock()?;
                }
                let label = format!("{account}@{service}:{DEFAULT_TARGET} (pachagent)");
                collection.create_item(&label, attributes(service, account), bytes, true, "text/plain")?;
                Ok(())
            }
        })
    }

    /// Deletes (`service`, `account`)'s item; whether there was one.
    fn delete(&self, service: &str, account: &str) -> Result<bool, Error> {
        self.call(account, |ss| match find(ss, service, account)? {
            None => Ok(false),
            Some(item) => {
                item.delete()?;
                Ok(true)
            }
        })
    }
}

impl RawStore for SecretServiceStore {
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        self.read(&self.service, account)
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        self.write(&self.service, account, bytes)
    }

    fn remove(&self, account: &str) -> Result<bool, Error> {
        self.delete(&self.service, account)
    }

    /// Writes, reads back and deletes a probe entry ([`super::probe_entry`]). A lookup of a missing entry would
    /// not do: the Secret Service answers searches even when the collection is locked, and only reading or writing
    /// a secret shows the lock.
    fn probe(&self) -> Result<(), Error> {
        let (service, account) = super::probe_entry(&self.service);
        self.write(&service, &account, PROBE_VALUE)?;
        let read = self.read(&service, &account)?;
        self.delete(&service, &account)?;
        if read.as_deref().map(Vec::as_slice) == Some(PROBE_VALUE) {
            Ok(())
        } else {
            Err(Error::Platform {
                backend: BACKEND,
                reason: "the probe entry read back differently from what was written".to_owned(),
            })
        }
    }
}

/// Whether a D-Bus error says an object or its interface is (no longer, or not yet) there.
fn vanished(text: &str) -> bool {
    ["UnknownObject", "UnknownMethod", "UnknownInterface", "No such interface", "No such object"]
        .iter()
        .any(|needle| text.contains(needle))
}

/// Why a Secret Service without a `default` alias cannot be used, and how to give it one.
const NO_DEFAULT_KEYRING: &str = "the Secret Service has no default keyring; create one by logging in to a desktop \
                                  session once, or with `gnome-keyring-daemon --unlock` given a password on stdin";

/// What an error means for the user.
enum Class {
    Locked,
    NoDefaultKeyring,
    Unreachable,
    Other,
}

/// Sorts out the failures that have a next step other than "report a bug". The crate's errors wrap D-Bus errors
/// whose names carry the meaning, so their text is read.
fn classify_text(e: &SsError, text: &str) -> Class {
    const LOCKED: [&str; 3] = ["org.freedesktop.Secret.Error.IsLocked", "object locked", "prompt dismissed"];
    const UNREACHABLE: [&str; 7] = [
        "no secret service provider or dbus session found",
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "autolaunch",
        "Connection refused",
        "No such file or directory",
    ];
    match e {
        SsError::Locked | SsError::Prompt => Class::Locked,
        SsError::NoResult => Class::NoDefaultKeyring,
        _ if LOCKED.iter().any(|p| text.contains(p)) => Class::Locked,
        _ if UNREACHABLE.iter().any(|p| text.contains(p)) => Class::Unreachable,
        _ => Class::Other,
    }
}

/// Turns a Secret Service error into ours. Only `Display` text is used; none of it carries a secret.
fn classify(e: SsError) -> Error {
    let text = e.to_string();
    error(classify_text(&e, &text), text)
}

/// Our error for an error of `class` whose text is `text`.
fn error(class: Class, text: String) -> Error {
    match class {
        Class::Locked => Error::Locked { backend: BACKEND },
        Class::NoDefaultKeyring => Error::Unavailable { backend: BACKEND, reason: NO_DEFAULT_KEYRING.to_owned() },
        Class::Unreachable => Error::Unavailable { backend: BACKEND, reason: text },
        Class::Other => Error::Platform { backend: BACKEND, reason: text },
    }
}
