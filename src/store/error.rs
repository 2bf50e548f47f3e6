//! The store's error type: one variant per thing the user can do something about, each message naming the
//! backend and the next step. No message ever contains a secret.

use super::Backend;

/// Why a store operation failed. Messages say which backend and what to do, and never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached or does not exist here.
    #[error("the {backend} store is unavailable ({reason}): {}", backend.unavailable_hint())]
    Unavailable {
        /// The backend that was tried.
        backend: Backend,
        /// What went wrong, from the platform.
        reason: String,
    },
    /// The backend is there but locked; nothing can be read or written until the user unlocks it.
    #[error("the {backend} keyring is locked: {}", backend.unlock_hint())]
    Locked {
        /// The locked backend.
        backend: Backend,
    },
    /// The backend did not answer in time; the call was abandoned.
    #[error(
        "the {backend} store did not answer within {seconds} s (is an unlock prompt waiting?): unlock the keyring \
         and retry, or set store = \"keyutils\" in ~/.config/pachagent/config.toml"
    )]
    TimedOut {
        /// The backend that did not answer.
        backend: Backend,
        /// How long pachagent waited.
        seconds: u64,
    },
    /// What is stored for a context cannot be used.
    #[error(
        "the stored session of context \"{context}\" is unreadable ({reason}): run `pachagent logout --context \
         {context}` and log in again"
    )]
    Corrupt {
        /// The context whose entry is bad.
        context: String,
        /// Why it cannot be read; never quotes the stored bytes.
        reason: String,
    },
    /// The record is larger than the backend accepts.
    #[error(
        "the session record of context \"{context}\" is {size} bytes, more than the {limit} the {backend} store \
         accepts: shorten the pachd address or issuer"
    )]
    TooLarge {
        /// The backend that refused it.
        backend: Backend,
        /// The context being saved.
        context: String,
        /// The encoded record's size in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },
    /// The backend's per-user quota is used up.
    #[error(
        "the {backend} store is full ({reason}): remove unused keys (`keyctl show @u`, `keyctl unlink`) or raise \
         /proc/sys/kernel/keys/maxbytes and maxkeys"
    )]
    QuotaExceeded {
        /// The full backend.
        backend: Backend,
        /// What the platform said.
        reason: String,
    },
    /// A context or service name that cannot name an entry.
    #[error("cannot store {what} {name:?}: {reason}")]
    InvalidName {
        /// `context` or `service`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The agent's keyring helper could not be run, or stopped answering.
    #[error("the agent's keyring helper failed: {reason}")]
    Helper {
        /// What went wrong, and what to do.
        reason: String,
    },
    /// Any other failure reported by the platform.
    #[error("the {backend} store failed: {reason}")]
    Platform {
        /// The backend that failed.
        backend: Backend,
        /// What the platform said.
        reason: String,
    },
}

impl Backend {
    /// What to do when this backend is locked.
    fn unlock_hint(self) -> &'static str {
        match self {
            Backend::SecretService => {
                "unlock it (log in to the desktop session, or open Passwords and Keys / seahorse and unlock the \
                 default keyring), then retry"
            }
            Backend::Keychain => {
                "unlock the login keychain (Keychain Access, or `security unlock-keychain`), then retry"
            }
            Backend::CredentialManager => "log in to Windows interactively, then retry",
            Backend::Keyutils | Backend::Memory => "retry",
        }
    }

    /// What to do when this backend cannot be reached at all.
    fn unavailable_hint(self) -> &'static str {
        match self {
            Backend::SecretService => {
                "start gnome-keyring-daemon (or another Secret Service) on the session bus, or set store = \
                 \"keyutils\" in ~/.config/pachagent/config.toml"
            }
            Backend::Keyutils => "check that the kernel has keyutils (CONFIG_KEYS) and that keyctl(2) is not filtered",
            Backend::Keychain | Backend::CredentialManager => "set store = \"auto\" in ~/.config/pachagent/config.toml",
            Backend::Memory => "this cannot happen",
        }
    }
}
