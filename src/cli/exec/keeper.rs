//! Keeps the private pachctl config of a running `exec` command current: after every renewal (and every
//! [`POLL`] in case an event was missed, an agent restarted, or pachctl wrote back a config it read before the
//! last renewal), the context's current token goes into the file, atomically and 0600, with everything else
//! in it kept. A command that runs pachctl again and again therefore always finds a token pachd accepts.
//!
//! It never fails the command: when the agent is away it reconnects, and when the session ends it says so once
//! on stderr and leaves the file as it was (the token there stays valid until its own expiration).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::client;
use crate::pachctl::{self, EXEC_CONTEXT};
use crate::proto::agent::{EventKind, GetTokenRequest, WatchRequest};
use crate::secret::PachToken;

use super::super::output;

/// How often the file is checked against the agent even without an event.
pub(super) const POLL: Duration = Duration::from_secs(15);

/// How long to wait before reconnecting to an agent that went away.
const RECONNECT: Duration = Duration::from_secs(2);

/// What the keeper needs to know about the command's session.
pub(super) struct Keeper {
    /// The agent's socket.
    socket: PathBuf,
    /// The context, as the agent resolved it at the start (a later `context use` does not move the command).
    context: String,
    /// pachd's address, which the file's context must keep pointing at.
    pachd_address: String,
    /// The private config file.
    file: PathBuf,
    /// What went wrong last, so each kind of trouble is reported once, not every poll.
    last_problem: Option<String>,
    /// Held by every write for its whole length, on the thread that writes; `false` once the command has ended.
    gate: WriteGate,
}

/// Lets the end of `exec` wait for a write in progress and forbid later ones before it removes the directory
/// (aborting the keeper's task does not stop a write already running on a blocking thread).
#[derive(Clone)]
pub(super) struct WriteGate(Arc<Mutex<bool>>);

impl WriteGate {
    pub(super) fn new() -> Self {
        Self(Arc::new(Mutex::new(true)))
    }

    /// Waits for the write in progress, if any, and refuses every later one.
    pub(super) async fn close(&self) {
        let gate = Arc::clone(&self.0);
        let closed = tokio::task::spawn_blocking(move || *gate.lock().unwrap_or_else(PoisonError::into_inner) = false);
        if closed.await.is_err() {
            // No blocking thread could run it: close it here (a write in progress is brief).
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
        }
    }
}

impl Keeper {
    /// A keeper of `file` for `context`'s session at `pachd_address`; [`Keeper::gate`] must be closed before the
    /// file's directory is removed.
    pub(super) fn new(socket: PathBuf, context: String, pachd_address: String, file: PathBuf) -> Self {
        Self { socket, context, pachd_address, file, last_problem: None, gate: WriteGate::new() }
    }

    /// The gate that ends the keeper's writes.
    pub(super) fn gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// Runs until aborted (when the command ends).
    pub(super) async fn run(mut self, mut agent: Option<client::Client>) {
        loop {
            let Some(client) = agent.as_mut() else {
                tokio::time::sleep(RECONNECT).await;
                agent = client::connect(&self.socket).await.ok();
                continue;
            };
            let request = WatchRequest { context: self.context.clone(), all_contexts: false };
            let mut events = match client.watch(request).await {
                Ok(stream) => stream.into_inner(),
                Err(_) => {
                    agent = None;
                    continue;
                }
            };
            // Whatever happened while nobody watched (a restart, a renewal) is caught up with first.
            self.update(client).await;
            loop {
                tokio::select! {
                    event = events.message() => match event {
                        Ok(Some(e)) if e.kind == EventKind::Refreshed as i32 || e.kind == EventKind::LoggedIn as i32 => {
                            self.update(client).await;
                        }
                        Ok(Some(e)) if e.kind == EventKind::LoggedOut as i32 => self.report(format!(
                            "the session for {} was logged out while the command ran; its token was revoked",
                            output::go_quote(&self.context)
                        )),
                        Ok(Some(_)) => {}
                        // The agent stopped (or restarted): reconnect and catch up.
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep(POLL) => self.update(client).await,
                }
            }
            agent = None;
        }
    }

    /// Writes the current token into the file when it holds another one.
    async fn update(&mut self, client: &mut client::Client) {
        let request = GetTokenRequest { context: self.context.clone(), min_valid_seconds: 0, fit_to_lifetime: false };
        let token = match client.get_token(request).await {
            Ok(resp) => {
                let mut resp = resp.into_inner();
                if resp.pachd_address != self.pachd_address {
                    // The context was re-pointed: that cluster's token must not go to the one the file names.
                    return self.report(format!(
                        "the context {} now points at {}, not at {} where the command started: its pachctl config \
                         keeps the token it has",
                        output::go_quote(&self.context),
                        resp.pachd_address,
                        self.pachd_address
                    ));
                }
                PachToken::new(std::mem::take(&mut resp.token))
            }
            Err(status) => {
                return self.report(format!(
                    "cannot renew the command's pachctl config: {}; the token in it stays valid until it expires",
                    status.message()
                ));
            }
        };
        let (file, address, gate) = (self.file.clone(), self.pachd_address.clone(), self.gate.clone());
        let written = tokio::task::spawn_blocking(move || {
            let open = gate.0.lock().unwrap_or_else(PoisonError::into_inner);
            if !*open {
                return Ok(());
            }
            pachctl::sync_session(&file, EXEC_CONTEXT, &address, Some(&token))
        })
        .await;
        match written {
            Ok(Ok(())) => self.last_problem = None,
            Ok(Err(e)) => self.report(format!("cannot renew the command's pachctl config: {e}")),
            Err(e) => self.report(format!("cannot renew the command's pachctl config: {e}")),
        }
    }

    fn report(&mut self, problem: String) {
        if self.last_problem.as_deref() != Some(problem.as_str()) {
            let _ = output::warning(&mut std::io::stderr(), &problem);
            self.last_problem = Some(problem);
        }
    }
}
