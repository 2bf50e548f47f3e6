//! Keeping the keyring in line with memory. A store call that fails leaves memory as the truth; one that timed
//! out may still land later (a frozen keyring daemon works through its queue when it wakes), so the context is
//! marked out of sync and rewritten from memory — or its entry deleted — as soon as the store answers again.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Error, Session, SessionEngine, lock, read};
use crate::store::{self, StoredSession};

/// How often the resync task retries while some context is out of sync.
const RESYNC_INTERVAL: Duration = Duration::from_secs(3);

impl SessionEngine {
    /// Stores a session record; a failure is recorded for `status` and, when the write may still land, the
    /// context is marked for resync.
    pub(super) async fn save(&self, name: &str, stored: &StoredSession) -> Result<(), Error> {
        match self.store.save(name, stored).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if matches!(e, store::Error::TimedOut { .. }) {
                    self.mark_out_of_sync(name);
                }
                Err(Error::Store { context: name.to_owned(), source: e })
            }
        }
    }

    pub(super) fn mark_out_of_sync(&self, name: &str) {
        lock(&self.out_of_sync).insert(name.to_owned());
        self.resync_needed.notify_one();
    }

    /// Rewrites every out-of-sync context from memory (or deletes its entry when memory has no session).
    pub async fn resync(&self) {
        let pending: Vec<String> = lock(&self.out_of_sync).iter().cloned().collect();
        for name in pending {
            let _guard = self.context_lock(&name).lock_owned().await;
            let session = read(&self.sessions).get(&name).map(Session::to_stored);
            let mut result = self.rewrite(&name, session.as_ref()).await;
            if result.is_err() {
                // A keyring that just woke up may still be working through the writes that timed out (this
                // rewrite is queued behind them, see `store::lanes`, and its own time may run out); one retry a
                // moment later usually gets through.
                tokio::time::sleep(Duration::from_millis(200)).await;
                result = self.rewrite(&name, session.as_ref()).await;
            }
            match result {
                Ok(_) => {
                    lock(&self.out_of_sync).remove(&name);
                    info!(context = %name, kept = session.is_some(), "keyring entry brought back in line with the agent");
                }
                Err(e) => {
                    warn!(context = %name, error = %e, "keyring still unavailable; will retry");
                }
            }
        }
    }

    async fn rewrite(&self, name: &str, session: Option<&StoredSession>) -> Result<bool, store::Error> {
        match session {
            Some(stored) => self.store.save(name, stored).await.map(|()| true),
            None => self.store.delete(name).await,
        }
    }

    /// Runs for the agent's lifetime: sleeps until a context falls out of sync, then retries until none is.
    pub async fn resync_task(self: Arc<Self>) {
        loop {
            self.resync_needed.notified().await;
            while !lock(&self.out_of_sync).is_empty() {
                tokio::time::sleep(RESYNC_INTERVAL).await;
                self.resync().await;
            }
        }
    }
}

impl SessionEngine {
    /// Keeps pachctl's own config in step for contexts that opted in (`sync_pachctl = true`): the current token
    /// after a login or renewal, none after a logout. A failure is logged and shown in `status`; it never fails the
    /// operation that triggered it.
    pub(super) async fn sync_pachctl(&self, ctx: &crate::config::Context, token: Option<&crate::secret::PachToken>) {
        if !ctx.sync_pachctl {
            return;
        }
        let path = crate::pachctl::config_path();
        let (name, address, token) = (ctx.name.clone(), ctx.pachd.to_string(), token.cloned());
        let file = path.clone();
        let outcome =
            tokio::task::spawn_blocking(move || crate::pachctl::sync_session(&file, &name, &address, token.as_ref()))
                .await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the pachctl sync task failed: {e}")),
        };
        match error {
            None => tracing::debug!(context = %ctx.name, file = %path.display(), "pachctl config updated"),
            Some(message) => {
                warn!(context = %ctx.name, error = %message, "could not update pachctl's config");
                self.update(&ctx.name, |s| s.last_error = Some(format!("pachctl sync: {message}")));
            }
        }
    }
}
