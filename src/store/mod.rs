//! Session storage in the operating system's secret store.
//!
//! Owns where a context's session lives between daemon runs: one entry per context (service = the store's
//! service name, account = the context name) holding a small versioned JSON record ([`StoredSession`]). The
//! record only ever goes to an OS secret store — the freedesktop Secret Service, the Linux kernel keyutils user
//! keyring, the macOS Keychain or the Windows Credential Manager — never to a plaintext file, and never to
//! the `keyring` crate's in-memory mock (on macOS and Windows, where that crate is used): every credential is
//! built for an explicitly chosen backend. [`Store::memory`] exists for engine unit tests only.
//!
//! Platform stores can stall (a Secret Service waiting on an unlock prompt nobody answers), so every call into
//! one runs on its own thread under [`CALL_TIMEOUT`] and fails with [`Error::TimedOut`] rather than hang. The
//! thread is a detached `std::thread`, not `tokio::task::spawn_blocking`: a runtime waits without a deadline for
//! its blocking tasks when it shuts down, so one stuck call would also stall the daemon's exit.
//!
//! This module knows nothing of the network, of OIDC or of gRPC; the session engine reaches it through
//! [`Store`].

mod error;
#[cfg(target_os = "linux")]
pub mod helper;
#[cfg(any(target_os = "macos", target_os = "windows"))]
mod keyring;
#[cfg(target_os = "linux")]
mod keyutils;
mod lanes;
mod memory;
mod record;
#[cfg(target_os = "linux")]
mod secret_service;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::config::StoreChoice;
use crate::secret::ClientSecret;
pub use error::Error;
pub use record::{RetiredToken, StoredSession};

/// How long one call into a platform store may take. Long enough for a D-Bus round trip with key exchange on a
/// loaded machine, short enough that `pachagent status` answers while someone waits for it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest record any backend accepts: the kernel's limit for a `user` key payload. Other stores take more,
/// but one limit everywhere means a session that fits one store fits them all.
pub const MAX_RECORD_BYTES: usize = 32_767;

/// The service name used when none is configured.
pub const DEFAULT_SERVICE: &str = "pachagent";

/// A place sessions can be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The freedesktop Secret Service (gnome-keyring, KWallet) over the D-Bus session bus.
    SecretService,
    /// The Linux kernel keyutils user keyring: kernel memory only, so lost at reboot.
    Keyutils,
    /// The macOS Keychain.
    Keychain,
    /// The Windows Credential Manager.
    CredentialManager,
    /// Process memory, for engine unit tests only.
    Memory,
}

impl Backend {
    /// The name used in configuration, logs and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::SecretService => "secret-service",
            Backend::Keyutils => "keyutils",
            Backend::Keychain => "keychain",
            Backend::CredentialManager => "credential-manager",
            Backend::Memory => "memory",
        }
    }

    /// Whether sessions kept here survive a reboot.
    pub fn persistent(self) -> bool {
        !matches!(self, Backend::Keyutils | Backend::Memory)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a probe writes and reads back.
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
const PROBE_VALUE: &[u8] = b"pachagent probe";

/// The service and account of a new probe entry for `service`'s store. The service is `<service>:probe`, which no
/// store can have (service names exclude `:`), so a probe never meets a context's entry. The account names this
/// process and this probe, so that no two probes ever read or delete each other's entry: not two processes opening
/// the store at once (an agent starting while `doctor` runs), nor two probes of one agent, one of which gave up on a
/// frozen keyring while its thread, which a timeout cannot stop, carries on when the keyring wakes.
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
fn probe_entry(service: &str) -> (String, String) {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (format!("{service}:probe"), format!("probe-{}-{n}", std::process::id()))
}

/// The raw operations a backend provides; records are already encoded. Implementations block and must be called
/// off the async runtime (see [`Store::call`]).
trait RawStore: Send + Sync + 'static {
    /// The stored bytes for `account`, or `None` when there is no entry.
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error>;
    /// Creates or overwrites the entry for `account`.
    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error>;
    /// Removes the entry for `account`; `true` when there was one.
    fn remove(&self, account: &str) -> Result<bool, Error>;
    /// A cheap round trip that fails the way real calls would (locked, unreachable).
    fn probe(&self) -> Result<(), Error>;
}

/// How a store reaches a backend: [`in_process`] or [`through_helper`].
type Reach = fn(Backend, &str) -> Result<Arc<dyn RawStore>, Error>;

/// Set by [`keep_keyring_calls_in_process`]. A function pointer, so that the agent, which never sets it, does not
/// link the in-process Secret Service.
static KEYRING_IN_PROCESS: std::sync::OnceLock<Reach> = std::sync::OnceLock::new();

/// Has [`Store::open_for_agent`] reach the Secret Service in this process rather than through `pachagent-keyring`:
/// for `pachagent dev`, a development stack in one process, which `cargo run` builds without the helpers.
pub fn keep_keyring_calls_in_process() {
    let _ = KEYRING_IN_PROCESS.set(in_process);
}

/// Every backend, in this process.
fn in_process(backend: Backend, service: &str) -> Result<Arc<dyn RawStore>, Error> {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::SecretService => Ok(Arc::new(secret_service::SecretServiceStore::new(service))),
        other => small_backend(other, service),
    }
}

/// The Secret Service through its helper process, the other backends in this process.
fn through_helper(backend: Backend, service: &str) -> Result<Arc<dyn RawStore>, Error> {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::SecretService => Ok(Arc::new(helper::KeyringHelper::new(service)?)),
        other => small_backend(other, service),
    }
}

/// The backends whose code is small enough for any process: the kernel keyring, the Keychain, the Credential
/// Manager; `Unavailable` for one this platform does not have.
fn small_backend(backend: Backend, service: &str) -> Result<Arc<dyn RawStore>, Error> {
    let _ = service;
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Keyutils => Ok(Arc::new(keyutils::UserKeyring::new(service))),
        #[cfg(target_os = "macos")]
        Backend::Keychain => Ok(Arc::new(keyring::KeyringStore::new(backend, service))),
        #[cfg(target_os = "windows")]
        Backend::CredentialManager => Ok(Arc::new(keyring::KeyringStore::new(backend, service))),
        other => Err(Error::Unavailable {
            backend: other,
            reason: format!("there is no {other} store on {}", std::env::consts::OS),
        }),
    }
}

/// A handle on the chosen secret store. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    service: Arc<str>,
    raw: Arc<dyn RawStore>,
    /// Keeps the calls on each entry in order (see [`lanes`]).
    lanes: Arc<lanes::Lanes>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).field("service", &self.service).finish()
    }
}

impl Store {
    /// Picks the backend for `choice`, checks that it answers, and returns a store on it. `service` is the
    /// keyring service name ([`DEFAULT_SERVICE`] normally; tests and `pachagent dev` use others).
    ///
    /// `Auto` on Linux uses the Secret Service when `DBUS_SESSION_BUS_ADDRESS` is set and a probe answers (a
    /// locked Secret Service is still chosen, so sessions stay where the user keeps them), and otherwise the
    /// keyutils user keyring, with a warning that sessions will not survive a reboot. `Auto` is the Keychain on
    /// macOS and the Credential Manager on Windows. Nothing ever falls back to a file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty service or one containing `:` or control characters;
    /// [`Error::Unavailable`] when the chosen backend does not exist on this platform or cannot be reached; and
    /// for an explicit choice, whatever its probe returns ([`Error::Locked`], [`Error::TimedOut`], …).
    pub async fn open(choice: StoreChoice, service: &str) -> Result<Store, Error> {
        Self::open_with(choice, service, in_process).await
    }

    /// [`Store::open`] for the resident agent: the same choice and checks, but the Secret Service is reached
    /// through `pachagent-keyring` (see [`helper`]), so that D-Bus and the Secret Service client never take up
    /// the agent's memory. The other backends are small and stay in the process.
    ///
    /// # Errors
    ///
    /// As [`Store::open`]; also [`Error::Helper`] when the helper is not installed or cannot be run.
    pub async fn open_for_agent(choice: StoreChoice, service: &str) -> Result<Store, Error> {
        let reach = KEYRING_IN_PROCESS.get().copied().unwrap_or(through_helper);
        Self::open_with(choice, service, reach).await
    }

    /// Opens the store, reaching each backend through `reach`. Which function that is decides what a program
    /// links: the agent's never names the in-process Secret Service.
    async fn open_with(choice: StoreChoice, service: &str, reach: Reach) -> Result<Store, Error> {
        check_name("service", service, true)?;
        let backend = match choice {
            StoreChoice::Auto => return Self::open_auto(service, reach).await,
            StoreChoice::SecretService => Backend::SecretService,
            StoreChoice::Keyutils => Backend::Keyutils,
            StoreChoice::Keychain => Backend::Keychain,
            StoreChoice::CredentialManager => Backend::CredentialManager,
        };
        Self::open_probed(backend, service, reach).await
    }

    /// A store on `backend` that has answered a probe.
    async fn open_probed(backend: Backend, service: &str, reach: Reach) -> Result<Store, Error> {
        let store = Self::platform(backend, service, reach)?;
        store.probe().await?;
        tracing::info!(backend = backend.name(), service, "session store opened");
        Ok(store)
    }

    #[cfg(target_os = "linux")]
    async fn open_auto(service: &str, reach: Reach) -> Result<Store, Error> {
        let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").filter(|v| !v.is_empty());
        let why_not = if bus.is_some() {
            let ss = Self::platform(Backend::SecretService, service, reach)?;
            match ss.probe().await {
                Ok(()) => {
                    tracing::info!(backend = ss.backend.name(), service, "session store opened");
                    return Ok(ss);
                }
                Err(Error::Locked { .. }) => {
                    tracing::warn!(
                        backend = ss.backend.name(),
                        service,
                        "session store opened, but the keyring is locked: sessions cannot be read or saved until \
                         it is unlocked"
                    );
                    return Ok(ss);
                }
                // A broken installation is not a missing Secret Service: falling back would hide the user's
                // sessions and keep new ones where a reboot loses them.
                Err(e @ Error::Helper { .. }) => return Err(e),
                Err(e) => e.to_string(),
            }
        } else {
            "DBUS_SESSION_BUS_ADDRESS is not set".to_owned()
        };
        let ku = Self::platform(Backend::Keyutils, service, reach)?;
        ku.probe().await?;
        tracing::warn!(
            backend = ku.backend.name(),
            service,
            secret_service = %why_not,
            "no usable Secret Service: keeping sessions in the kernel user keyring, where they do not survive a \
             reboot"
        );
        Ok(ku)
    }

    #[cfg(target_os = "macos")]
    async fn open_auto(service: &str, reach: Reach) -> Result<Store, Error> {
        Self::open_probed(Backend::Keychain, service, reach).await
    }

    #[cfg(target_os = "windows")]
    async fn open_auto(service: &str, reach: Reach) -> Result<Store, Error> {
        Self::open_probed(Backend::CredentialManager, service, reach).await
    }

    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    async fn open_auto(_service: &str, _reach: Reach) -> Result<Store, Error> {
        Err(Error::Unavailable {
            backend: Backend::SecretService,
            reason: "pachagent knows no secret store on this operating system".to_owned(),
        })
    }

    /// A store for `backend` without probing it, or `Unavailable` when this platform does not have it.
    fn platform(backend: Backend, service: &str, reach: Reach) -> Result<Store, Error> {
        let raw = reach(backend, service)?;
        Ok(Store { backend, service: Arc::from(service), raw, lanes: Arc::default() })
    }

    /// An in-memory store, shared by its clones and lost when the last one drops. For engine unit tests only:
    /// it answers at once, so it also works under `tokio::time::pause()`.
    pub fn memory() -> Store {
        Store {
            backend: Backend::Memory,
            service: Arc::from("memory"),
            raw: Arc::new(memory::MemoryStore::default()),
            lanes: Arc::default(),
        }
    }

    /// The backend this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The keyring service name entries are kept under.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A cheap health check for `status`: a real round trip to the backend that reveals a locked Secret Service.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`], [`Error::Unavailable`], [`Error::TimedOut`] or [`Error::Platform`], as the backend
    /// reports.
    pub async fn probe(&self) -> Result<(), Error> {
        // Every probe has an entry of its own, so probes need no queue.
        self.call(None, |raw| raw.probe()).await
    }

    /// The session stored for `context`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the entry is not a record this build reads (including one a newer pachagent
    /// wrote); the backend's errors otherwise.
    pub async fn load(&self, context: &str) -> Result<Option<StoredSession>, Error> {
        check_name("context", context, false)?;
        let account = context.to_owned();
        let bytes = self.call(Some(account.clone()), move |raw| raw.get(&account)).await?;
        let session = bytes.map(|b| record::decode(context, &b)).transpose()?;
        tracing::debug!(backend = self.backend.name(), context, found = session.is_some(), "session loaded");
        Ok(session)
    }

    /// Stores `session` as the entry for `context`, replacing any previous one.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the record exceeds [`MAX_RECORD_BYTES`] (or the backend's own limit);
    /// [`Error::QuotaExceeded`] when the user's keyutils quota is used up; the backend's errors otherwise.
    pub async fn save(&self, context: &str, session: &StoredSession) -> Result<(), Error> {
        check_name("context", context, false)?;
        let bytes = record::encode(context, session)?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(Error::TooLarge {
                backend: self.backend,
                context: context.to_owned(),
                size: bytes.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let account = context.to_owned();
        self.call(Some(account.clone()), move |raw| raw.set(&account, &bytes)).await.map_err(|e| match e {
            // Backends do not know the context's name in their size errors; add it here.
            Error::TooLarge { backend, size, limit, .. } => {
                Error::TooLarge { backend, context: context.to_owned(), size, limit }
            }
            other => other,
        })?;
        tracing::debug!(backend = self.backend.name(), context, "session saved");
        Ok(())
    }

    /// Stores the OAuth client secret of a confidential client for `context` (a separate entry, so that a
    /// logout never deletes it).
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn save_client_secret(&self, context: &str, secret: &ClientSecret) -> Result<(), Error> {
        check_name("context", context, false)?;
        let account = client_secret_account(context);
        let bytes = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
        self.call(Some(account.clone()), move |raw| raw.set(&account, &bytes)).await
    }

    /// The client secret stored for `context`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the entry is not UTF-8; the backend's errors otherwise.
    pub async fn load_client_secret(&self, context: &str) -> Result<Option<ClientSecret>, Error> {
        check_name("context", context, false)?;
        let account = client_secret_account(context);
        let bytes = self.call(Some(account.clone()), move |raw| raw.get(&account)).await?;
        bytes
            .map(|b| {
                String::from_utf8(b.to_vec()).map(ClientSecret::new).map_err(|_| Error::Corrupt {
                    context: context.to_owned(),
                    reason: "the stored client secret is not text: store it again with pachagent context add --client-secret-stdin".into(),
                })
            })
            .transpose()
    }

    /// Removes the client secret of `context`; `true` when there was one.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn delete_client_secret(&self, context: &str) -> Result<bool, Error> {
        check_name("context", context, false)?;
        let account = client_secret_account(context);
        self.call(Some(account.clone()), move |raw| raw.remove(&account)).await
    }

    /// Removes the entry for `context`; `true` when there was one.
    ///
    /// # Errors
    ///
    /// The backend's errors ([`Error::Locked`], [`Error::TimedOut`], …); a missing entry is not an error.
    pub async fn delete(&self, context: &str) -> Result<bool, Error> {
        check_name("context", context, false)?;
        let account = context.to_owned();
        let existed = self.call(Some(account.clone()), move |raw| raw.remove(&account)).await?;
        tracing::debug!(backend = self.backend.name(), context, existed, "session deleted");
        Ok(existed)
    }

    /// Runs one backend operation off the async runtime, bounded by [`CALL_TIMEOUT`]; an operation on `account`
    /// first waits for the earlier ones on it to finish (see [`lanes`]), within the same bound. The memory backend
    /// runs inline: it cannot block, and tests that pause time must not see a timeout fire.
    async fn call<T, F>(&self, account: Option<String>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn RawStore) -> Result<T, Error> + Send + 'static,
    {
        if self.backend == Backend::Memory {
            return op(&*self.raw);
        }
        let backend = self.backend;
        let raw = Arc::clone(&self.raw);
        let run = async {
            let turn = match &account {
                Some(account) => Some(self.lanes.turn(account).await),
                None => None,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("store-{}", backend.name()))
                .spawn(move || {
                    // The receiver is gone when the caller timed out; the result is then of no use to anyone.
                    let _ = tx.send(op(&*raw));
                    // The entry's next call may start only now that the backend has answered this one.
                    drop(turn);
                })
                .map_err(|e| Error::Platform { backend, reason: format!("failed to start a thread: {e}") })?;
            rx.await.map_err(|_| Error::Platform { backend, reason: "the store call panicked".to_owned() })?
        };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(backend = backend.name(), seconds = CALL_TIMEOUT.as_secs(), "store call timed out");
                Err(Error::TimedOut { backend, seconds: CALL_TIMEOUT.as_secs() })
            }
        }
    }
}

/// The entry holding a context's client secret. `#` cannot appear in a context name, so this never collides
/// with a session entry.
fn client_secret_account(context: &str) -> String {
    format!("{context}#client-secret")
}

/// Rejects names that cannot name an entry unambiguously. A service may not contain `:` because the keyutils
/// description `pachagent:<service>:<context>` would then be ambiguous; a context may.
fn check_name(what: &'static str, name: &str, is_service: bool) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 1024 {
        "it is longer than 1024 bytes"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else if is_service && name.contains(':') {
        "a service name may not contain ':'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { what, name: name.to_owned(), reason })
}
