//! An in-memory backend for engine unit tests only.
//!
//! Holds encoded records in a map, so the record format and its versioning are exercised exactly as with a real
//! store. The daemon, `pachagent dev` and integration tests never use it: they use a real OS store.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

use super::{Error, RawStore};

/// Records by account, zeroed when replaced or dropped.
#[derive(Default)]
pub(super) struct MemoryStore {
    entries: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl MemoryStore {
    /// The map; a panic while it was held cannot leave it half-written, so poisoning is ignored.
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Zeroizing<Vec<u8>>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RawStore for MemoryStore {
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        Ok(self.entries().get(account).cloned())
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        self.entries().insert(account.to_owned(), Zeroizing::new(bytes.to_vec()));
        Ok(())
    }

    fn remove(&self, account: &str) -> Result<bool, Error> {
        Ok(self.entries().remove(account).is_some())
    }

    fn probe(&self) -> Result<(), Error> {
        Ok(())
    }
}
