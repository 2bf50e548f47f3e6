//! The Linux kernel keyutils backend: one `user` key per context in the caller's user keyring (`@u`).
//!
//! Owns the key layout (description `pachagent:<service>:<context>`, payload = the record) and the permission
//! dance that makes it work for daemons. `keyring`'s own keyutils credential is not used: it writes to the
//! session keyring, and in a process without a session keyring of its own (a daemon started outside a PAM
//! login, CI, containers) its writes vanish. The user keyring is shared by every process of the uid and, on
//! current kernels (measured on 6.18; older user-keyring(7) pages say otherwise), outlives the uid's last process,
//! so a key written here is found by the next daemon of the same user until reboot. Keys live in kernel memory
//! only: nothing survives a reboot.
//!
//! A key in `@u` is *possessed* only by processes whose session keyring links `@u`; the others hold just the
//! key's "user" permissions, which are view-only by default. So each key is created in this thread's own
//! keyring (which the thread always possesses), given user view/read/write/search/setattr, then linked into
//! `@u` and unlinked from the thread keyring. Updates overwrite the payload in place (`add_key` on `@u` again):
//! deleting and re-adding would briefly count twice against the uid's quota (20,000 bytes and 200 keys for
//! non-root users), because freed space returns to the quota only when the kernel's garbage collector runs.

use linux_keyutils::{Key, KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

use super::{Backend, Error, MAX_RECORD_BYTES, RawStore};

const BACKEND: Backend = Backend::Keyutils;

/// Entries of one service in the user keyring.
pub(super) struct UserKeyring {
    prefix: String,
}

impl UserKeyring {
    pub(super) fn new(service: &str) -> Self {
        Self { prefix: format!("pachagent:{service}:") }
    }

    fn description(&self, account: &str) -> String {
        format!("{}{account}", self.prefix)
    }

    /// The key for `account`, if the user keyring holds a live one.
    fn find(user: KeyRing, description: &str) -> Result<Option<Key>, Error> {
        match user.search(description) {
            Ok(key) => Ok(Some(key)),
            // A revoked or expired key is as good as absent: it is unreadable and the GC will remove it.
            Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired) => Ok(None),
            Err(e) => Err(platform("failed to search the user keyring", e)),
        }
    }

    /// Creates a key readable and writable by its owning uid whether or not `@u` is possessed.
    fn create(user: KeyRing, description: &str, bytes: &[u8]) -> Result<(), Error> {
        let thread = KeyRing::from_special_id(KeyRingIdentifier::Thread, true)
            .map_err(|e| platform("failed to create a thread keyring", e))?;
        let key = thread.add_key(description, bytes).map_err(|e| platform("failed to add a key", e))?;
        let result = Self::publish(user, key);
        if result.is_err() {
            // Do not leave a half-made key behind; the original error is the one worth reporting.
            let _ = key.invalidate();
        }
        // The thread keyring dies with this thread, but unlink now so the key's only link is in `@u`.
        let _ = thread.unlink_key(key);
        result
    }

    /// Opens a freshly made (and so possessed) key to its owning uid, then links it into `@u`.
    fn publish(user: KeyRing, key: Key) -> Result<(), Error> {
        let user_perms =
            Permission::VIEW | Permission::READ | Permission::WRITE | Permission::SEARCH | Permission::SETATTR;
        let perms = KeyPermissionsBuilder::builder().posessor(Permission::ALL).user(user_perms).build();
        key.set_perms(perms).map_err(|e| platform("failed to set the key's permissions", e))?;
        user.link_key(key).map_err(|e| platform("failed to link the key into the user keyring", e))
    }
}

impl RawStore for UserKeyring {
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let user = user_keyring()?;
        let Some(key) = Self::find(user, &self.description(account))? else {
            return Ok(None);
        };
        match key.read_to_vec() {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            // Gone between search and read: another process deleted it.
            Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired) => Ok(None),
            Err(e) => Err(platform("failed to read the key", e)),
        }
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(Error::TooLarge {
                backend: BACKEND,
                context: account.to_owned(),
                size: bytes.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let user = user_keyring()?;
        let description = self.description(account);
        let Some(existing) = Self::find(user, &description)? else {
            return Self::create(user, &description, bytes);
        };
        // `add_key` on a keyring that already links a user key of this description updates that key in place:
        // same serial, same permissions, only the size difference charged to the quota. It needs nothing but
        // access to `@u`, which the uid always has; KEYCTL_UPDATE by serial would need the key's user write
        // permission and refuses payloads over one page (4096 bytes).
        let updated = user.add_key(&description, bytes).map_err(|e| platform("failed to update the key", e))?;
        if updated == existing {
            return Ok(());
        }
        // The key found was not linked directly in `@u` (someone nested a keyring holding it), so `add_key` made a
        // new key with the kernel's default, possessor-only permissions. Open it to the uid if this process can;
        // otherwise drop it and create one properly.
        if Self::publish(user, updated).is_ok() {
            return Ok(());
        }
        let _ = user.unlink_key(updated);
        Self::create(user, &description, bytes)
    }

    fn remove(&self, account: &str) -> Result<bool, Error> {
        let user = user_keyring()?;
        let Some(key) = Self::find(user, &self.description(account))? else {
            return Ok(false);
        };
        // Invalidate rather than unlink: the key then disappears from every keyring at once, including any a
        // user linked it into by hand.
        match key.invalidate() {
            Ok(()) => Ok(true),
            Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired) => Ok(false),
            Err(e) => Err(platform("failed to remove the key", e)),
        }
    }

    fn probe(&self) -> Result<(), Error> {
        let user = user_keyring()?;
        // A search, not a write: proves the keyring is there and searchable without touching the quota. Finding a
        // context that happens to be called ".probe" is harmless.
        Self::find(user, &self.description(".probe"))?;
        Ok(())
    }
}

/// The caller's user keyring, created by the kernel if this uid has none yet.
fn user_keyring() -> Result<KeyRing, Error> {
    KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(|e| match e {
        KeyError::OperationNotSupported | KeyError::Unknown(libc::ENOSYS) => {
            Error::Unavailable { backend: BACKEND, reason: "the kernel does not support keyutils".to_owned() }
        }
        other => Error::Unavailable {
            backend: BACKEND,
            reason: format!("cannot open the user keyring: {}", describe(other)),
        },
    })
}

/// Maps a keyutils failure to our error, with what was being done.
fn platform(doing: &str, e: KeyError) -> Error {
    match e {
        KeyError::QuotaExceeded | KeyError::OutOfMemory => {
            Error::QuotaExceeded { backend: BACKEND, reason: format!("{doing}: {}", describe(e)) }
        }
        other => Error::Platform { backend: BACKEND, reason: format!("{doing}: {}", describe(other)) },
    }
}

/// A lowercase description of a keyutils error, with the errno name where it helps.
fn describe(e: KeyError) -> String {
    match e {
        KeyError::AccessDenied => "permission denied (EACCES)".to_owned(),
        KeyError::PermissionDenied => "operation not permitted (EPERM)".to_owned(),
        KeyError::QuotaExceeded => "the uid's key quota is used up (EDQUOT)".to_owned(),
        KeyError::OutOfMemory => "the kernel is out of memory for keys (ENOMEM)".to_owned(),
        KeyError::InvalidArguments => "invalid argument (EINVAL)".to_owned(),
        KeyError::InvalidDescription => "the description contains a NUL byte".to_owned(),
        KeyError::KeyDoesNotExist => "no such key (ENOKEY)".to_owned(),
        KeyError::OperationNotSupported => "operation not supported (ENOTSUP)".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}
