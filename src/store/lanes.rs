//! One queue per keyring entry, so that calls on an entry reach the backend in the order they were made.
//!
//! A call that times out keeps running on its thread (nothing can cancel a blocked D-Bus round trip), and a frozen
//! gnome-keyring works through its backlog when it wakes. Without an order, a save the engine gave up on could
//! land after the save or delete that replaced it (each is several D-Bus round trips, and two of them interleave),
//! and the keyring would keep an older session than the agent serves: after a restart, a login the user was told
//! had failed, or a refresh token the provider has already rotated away. With one queue per entry, a later call
//! starts only once the earlier one has finished; a caller that gave up while still queued leaves the queue
//! without touching the backend.
//!
//! The queue is a `tokio` mutex, which hands itself over in the order it was asked for. The caller takes it, and
//! the thread that runs the call holds it until the backend answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

/// A call that has held an entry's queue this long is taken to be hung for good (its D-Bus peer is gone without an
/// answer): the next caller starts a new queue rather than waiting behind it forever. Far above any answer a
/// working backend gives, so ordering is only given up for a call that will most likely never land.
const HUNG_AFTER: Duration = Duration::from_secs(120);

/// The queues of one store, by account. An entry's queue stays for the store's lifetime: accounts are a handful
/// of contexts and their client secrets.
#[derive(Default)]
pub(super) struct Lanes {
    by_account: Mutex<HashMap<String, Arc<Lane>>>,
}

#[derive(Default)]
struct Lane {
    order: Arc<tokio::sync::Mutex<()>>,
    /// When the call now running started, if one is.
    busy_since: Mutex<Option<Instant>>,
}

/// The right to call the backend for one account, held from the moment it is this caller's turn until the
/// backend has answered (it moves to the thread that makes the call).
pub(super) struct Turn {
    _order: OwnedMutexGuard<()>,
    lane: Arc<Lane>,
}

impl Lanes {
    /// Waits for `account`'s earlier calls to finish, then returns this caller's turn. Dropping the future while
    /// it waits leaves the queue.
    pub(super) async fn turn(&self, account: &str) -> Turn {
        let lane = self.lane(account, Instant::now());
        let order = Arc::clone(&lane.order).lock_owned().await;
        *lock(&lane.busy_since) = Some(Instant::now());
        Turn { _order: order, lane }
    }

    fn lane(&self, account: &str, now: Instant) -> Arc<Lane> {
        let mut lanes = lock(&self.by_account);
        let lane = lanes.entry(account.to_owned()).or_default();
        let hung = lock(&lane.busy_since).is_some_and(|since| now.saturating_duration_since(since) >= HUNG_AFTER);
        if hung {
            tracing::warn!(
                seconds = HUNG_AFTER.as_secs(),
                "a keyring call has not returned for minutes; later calls on its entry no longer wait for it"
            );
            *lane = Arc::new(Lane::default());
        }
        Arc::clone(lane)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *lock(&self.lane.busy_since) = None;
    }
}

/// The data under these locks is a plain value that a panic cannot leave half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_on_one_entry_take_their_turns_in_the_order_they_asked() {
        let lanes = Arc::new(Lanes::default());
        let first = lanes.turn("dev").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 1..=5 {
            let (lanes, tx) = (Arc::clone(&lanes), tx.clone());
            tokio::spawn(async move {
                let turn = lanes.turn("dev").await;
                tx.send(n).unwrap();
                drop(turn);
            });
            // Each waiter is queued before the next one asks.
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "no one goes while the first call runs");
        drop(first);
        let mut seen = Vec::new();
        for _ in 1..=5 {
            seen.push(rx.recv().await.unwrap());
        }
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn another_entry_does_not_wait() {
        let lanes = Lanes::default();
        let _dev = lanes.turn("dev").await;
        tokio::time::timeout(Duration::from_secs(1), lanes.turn("prod")).await.expect("prod's turn comes at once");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_while_queued_does_not_hold_up_the_next() {
        let lanes = Lanes::default();
        let first = lanes.turn("dev").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), lanes.turn("dev")).await;
        assert!(gave_up.is_err(), "the second caller waits while the first call runs");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), lanes.turn("dev")).await.expect("the third caller goes next");
    }

    #[tokio::test]
    async fn a_call_hung_for_minutes_no_longer_holds_up_its_entry() {
        let lanes = Lanes::default();
        let hung = lanes.turn("dev").await;
        let soon = lanes.lane("dev", Instant::now() + Duration::from_secs(1));
        assert!(soon.order.try_lock().is_err(), "a call running for a second is waited for");
        let later = lanes.lane("dev", Instant::now() + HUNG_AFTER);
        assert!(later.order.try_lock().is_ok(), "a call running for minutes is not");
        drop(hung);
    }
}
