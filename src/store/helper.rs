//! The Secret Service in a process of its own: `pachagent-keyring` makes the agent's keyring calls, and exits
//! when none has come for [`LINGER`].
//!
//! Why: D-Bus (zbus), the Secret Service client and its key exchange are the largest code the agent ran, and it
//! ran them only at start, at a login, a renewal or a logout. Every page of code a process has run stays in its
//! resident memory for its whole life; kept in a helper, those pages are paid for a few seconds at a time and the
//! resident agent is ~1 MB smaller (see the README's Performance section). The helper keeps one D-Bus connection
//! and one Secret Service session for its life, so a burst of calls (a login, then `status` probes) is one
//! session, as it was in the agent; gnome-keyring only suffers from a *stream* of short-lived sessions.
//!
//! The exchange is strictly one request, one reply, over the helper's standard input and output
//! (`proto/pachagent/keyring/v1/helper.proto`, length-delimited). Secrets travel only over those pipes, never on a
//! command line, and every buffer that held one is wiped.

use std::io::{self, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use super::{Backend, Error, RawStore};
use crate::frames;
use crate::programs;
use crate::proto::keyring_helper::{self as wire, failure::Kind, reply::Outcome, request::Call};

const BACKEND: Backend = Backend::SecretService;

/// How long a helper waits, idle, for the agent's next call before it is told to go.
pub const LINGER: Duration = Duration::from_secs(5);

/// The agent's side: a [`RawStore`] whose calls are made by a `pachagent-keyring` process, started on the first
/// call after an idle spell.
pub(super) struct KeyringHelper {
    /// Found when the store opens: an upgrade that replaces the programs under a running agent must not leave it
    /// looking for its helper next to a deleted executable.
    program: PathBuf,
    service: String,
    helper: Arc<Mutex<Option<Running>>>,
}

/// A helper process and the pipes to it.
struct Running {
    /// Always there until the helper is dropped, when it moves to the thread that reaps it.
    child: Option<Child>,
    pid: u32,
    requests: Option<ChildStdin>,
    /// Unbuffered: a buffer would keep copies of the records it passed on.
    replies: ChildStdout,
    last_call: Instant,
    /// Set when the helper stopped answering properly: it is killed rather than asked to finish.
    broken: bool,
}

/// How an exchange with a helper failed.
enum Lost {
    /// The request could not be written: the helper had already gone, so it did nothing.
    Unsent(io::Error),
    /// The request went out but no proper reply came back.
    Unanswered(io::Error),
}

impl KeyringHelper {
    /// The helper route for `service`'s entries.
    ///
    /// # Errors
    /// [`Error::Helper`] when `pachagent-keyring` is not installed next to the running program.
    pub(super) fn new(service: &str) -> Result<Self, Error> {
        let program = programs::companion(programs::KEYRING).map_err(|e| Error::Helper { reason: e.to_string() })?;
        Ok(Self { program, service: service.to_owned(), helper: Arc::new(Mutex::new(None)) })
    }

    /// Sends `call` to the running helper, or to a new one when there is none or the one there had gone away
    /// before reading it, and returns its answer. Calls take turns: a helper answers one at a time, and one that a
    /// frozen keyring holds up holds up the others, which the keyring would not answer either.
    fn ask(&self, call: Call) -> Result<Outcome, Error> {
        let mut request = wire::Request { call: Some(call) };
        let frame = Zeroizing::new(request.encode_length_delimited_to_vec());
        wipe_request(&mut request);
        let mut helper = lock(&self.helper);
        let mut restarted = false;
        loop {
            let running = match helper.as_mut() {
                Some(running) => running,
                None => {
                    restarted = true;
                    helper.insert(self.start()?)
                }
            };
            match running.exchange(&frame) {
                Ok(outcome) => {
                    running.last_call = Instant::now();
                    return from_outcome(outcome);
                }
                Err(lost) => {
                    running.broken = true;
                    // Dropping it kills and reaps it on a thread of its own.
                    helper.take();
                    match lost {
                        Lost::Unsent(e) if !restarted => {
                            tracing::debug!(error = %e, "the keyring helper had gone; starting another");
                        }
                        Lost::Unsent(e) | Lost::Unanswered(e) => {
                            return Err(Error::Helper {
                                reason: format!(
                                    "{} stopped answering ({e}); the next keyring call starts it again, and if \
                                     that keeps failing, restart the agent",
                                    programs::KEYRING
                                ),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Starts a helper, and the thread that sends it away once it has been idle for [`LINGER`].
    fn start(&self) -> Result<Running, Error> {
        let failed = |reason: String| Error::Helper { reason: format!("{reason}; restart the agent") };
        // A process group of its own: a Ctrl-C in the agent's terminal is for the agent, which ends its helper by
        // closing its input once it is done with it.
        let mut child = Command::new(&self.program)
            .process_group(0)
            .arg("--service")
            .arg(&self.service)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", self.program.display())))?;
        let pid = child.id();
        let (Some(requests), Some(replies)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("{} started without pipes", programs::KEYRING)));
        };
        let mut running = Running {
            child: Some(child),
            pid,
            requests: Some(requests),
            replies,
            last_call: Instant::now(),
            broken: false,
        };
        let helper = Arc::downgrade(&self.helper);
        let reaper = std::thread::Builder::new()
            .name("keyring-helper".to_owned())
            .spawn(move || dismiss_when_idle(&helper, pid));
        if let Err(e) = reaper {
            // Without the thread it would stay forever: not worth keeping.
            running.broken = true;
            drop(running);
            return Err(failed(format!("failed to start a thread: {e}")));
        }
        tracing::debug!(pid, "keyring helper started");
        Ok(running)
    }
}

impl RawStore for KeyringHelper {
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        match self.ask(Call::Get(account.to_owned()))? {
            Outcome::Found(found) => Ok(found.secret.map(Zeroizing::new)),
            other => Err(mismatched(&other)),
        }
    }

    fn set(&self, account: &str, bytes: &[u8]) -> Result<(), Error> {
        let set = wire::Set { account: account.to_owned(), secret: bytes.to_vec() };
        match self.ask(Call::Set(set))? {
            Outcome::Done(_) => Ok(()),
            other => Err(mismatched(&other)),
        }
    }

    fn remove(&self, account: &str) -> Result<bool, Error> {
        match self.ask(Call::Remove(account.to_owned()))? {
            Outcome::Removed(existed) => Ok(existed),
            other => Err(mismatched(&other)),
        }
    }

    fn probe(&self) -> Result<(), Error> {
        match self.ask(Call::Probe(wire::Probe {}))? {
            Outcome::Done(_) => Ok(()),
            other => Err(mismatched(&other)),
        }
    }
}

impl Running {
    fn exchange(&mut self, frame: &[u8]) -> Result<Outcome, Lost> {
        let requests = self.requests.as_mut().ok_or_else(|| Lost::Unsent(io::ErrorKind::BrokenPipe.into()))?;
        requests.write_all(frame).and_then(|()| requests.flush()).map_err(Lost::Unsent)?;
        let reply = frames::read(&mut self.replies)
            .and_then(|frame| frame.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "it exited")))
            .map_err(Lost::Unanswered)?;
        let reply = wire::Reply::decode(&reply[..]).map_err(|e| Lost::Unanswered(io::Error::other(e)))?;
        reply.outcome.ok_or_else(|| Lost::Unanswered(io::Error::other("an empty reply")))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A closed input tells the helper to close its Secret Service session and exit; a broken one is killed.
        // It is reaped on a thread of its own: one still inside a call to a frozen keyring exits only when the
        // keyring answers, and the agent stopping must not wait for that.
        drop(self.requests.take());
        let Some(mut child) = self.child.take() else { return };
        if self.broken {
            let _ = child.kill();
        }
        let reaper = std::thread::Builder::new().name("keyring-helper".to_owned()).spawn(move || {
            let _ = child.wait();
        });
        if let Err(e) = reaper {
            tracing::warn!(pid = self.pid, error = %e, "cannot start a thread to reap the keyring helper");
        }
    }
}

/// The reaper thread of helper `pid`: sends it away once no call has come for [`LINGER`]. Ends when it did, or
/// when the helper was replaced or the store dropped, since whoever did that also finished the helper.
fn dismiss_when_idle(helper: &Weak<Mutex<Option<Running>>>, pid: u32) {
    let mut wait = LINGER;
    loop {
        std::thread::sleep(wait);
        let Some(helper) = helper.upgrade() else { return };
        let mut slot = lock(&helper);
        let Some(running) = slot.as_ref().filter(|running| running.pid == pid) else { return };
        let idle = running.last_call.elapsed();
        if idle < LINGER {
            wait = LINGER - idle;
            continue;
        }
        let running = slot.take();
        drop(slot);
        tracing::debug!(pid, "keyring helper idle; sending it away");
        drop(running);
        return;
    }
}

/// The helper's side: answers requests on standard input with `service`'s entries in the Secret Service until
/// the input closes.
///
/// # Errors
///
/// When standard input or output fail, or a request is malformed: the agent then sees the helper gone.
#[cfg(target_os = "linux")]
pub fn serve(service: &str) -> io::Result<()> {
    let store = super::secret_service::SecretServiceStore::new(service);
    let (mut requests, mut replies) = frames::unbuffered_stdio()?;
    while let Some(frame) = frames::read(&mut requests)? {
        let mut request = wire::Request::decode(&frame[..]).map_err(io::Error::other)?;
        let mut reply = wire::Reply { outcome: Some(answer(&store, &mut request)) };
        wipe_request(&mut request);
        let frame = Zeroizing::new(reply.encode_length_delimited_to_vec());
        if let Some(Outcome::Found(found)) = &mut reply.outcome {
            found.secret.zeroize();
        }
        replies.write_all(&frame)?;
        replies.flush()?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn answer(store: &impl RawStore, request: &mut wire::Request) -> Outcome {
    let result = match &request.call {
        Some(Call::Get(account)) => {
            store.get(account).map(|secret| Outcome::Found(wire::Found { secret: secret.map(|s| s.to_vec()) }))
        }
        Some(Call::Set(set)) => store.set(&set.account, &set.secret).map(|()| Outcome::Done(wire::Done {})),
        Some(Call::Remove(account)) => store.remove(account).map(Outcome::Removed),
        Some(Call::Probe(_)) => store.probe().map(|()| Outcome::Done(wire::Done {})),
        None => Err(Error::Platform {
            backend: BACKEND,
            reason: "its helper got a request it does not know: install pachagent's programs from one build".into(),
        }),
    };
    result.unwrap_or_else(|e| Outcome::Failure(to_failure(e)))
}

fn wipe_request(request: &mut wire::Request) {
    if let Some(Call::Set(set)) = &mut request.call {
        set.secret.zeroize();
    }
}

fn from_outcome(outcome: Outcome) -> Result<Outcome, Error> {
    match outcome {
        Outcome::Failure(failure) => Err(from_failure(failure)),
        other => Ok(other),
    }
}

fn mismatched(outcome: &Outcome) -> Error {
    let what = match outcome {
        Outcome::Found(_) => "an entry",
        Outcome::Removed(_) => "a removal",
        Outcome::Done(_) => "a completion",
        Outcome::Failure(_) => "a failure",
    };
    Error::Helper {
        reason: format!(
            "{} answered with {what} to another call: install pachagent's programs from one build (cargo install \
             --path .) and restart the agent",
            programs::KEYRING
        ),
    }
}

fn to_failure(e: Error) -> wire::Failure {
    let mut failure = wire::Failure::default();
    let kind = match e {
        Error::Unavailable { reason, .. } => {
            failure.reason = reason;
            Kind::Unavailable
        }
        Error::Locked { .. } => Kind::Locked,
        Error::TimedOut { seconds, .. } => {
            failure.seconds = seconds;
            Kind::TimedOut
        }
        Error::TooLarge { size, limit, .. } => {
            (failure.size, failure.limit) = (size as u64, limit as u64);
            Kind::TooLarge
        }
        Error::QuotaExceeded { reason, .. } => {
            failure.reason = reason;
            Kind::QuotaExceeded
        }
        Error::Platform { reason, .. } | Error::Helper { reason } => {
            failure.reason = reason;
            Kind::Platform
        }
        Error::Corrupt { context, reason } => {
            (failure.context, failure.reason) = (context, reason);
            Kind::Corrupt
        }
        other @ Error::InvalidName { .. } => {
            failure.reason = other.to_string();
            Kind::Platform
        }
    };
    failure.set_kind(kind);
    failure
}

fn from_failure(failure: wire::Failure) -> Error {
    let backend = BACKEND;
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    match failure.kind() {
        Kind::Unavailable => Error::Unavailable { backend, reason: failure.reason },
        Kind::Locked => Error::Locked { backend },
        Kind::TimedOut => Error::TimedOut { backend, seconds: failure.seconds },
        // The store names the context.
        Kind::TooLarge => {
            Error::TooLarge { backend, context: String::new(), size: size(failure.size), limit: size(failure.limit) }
        }
        Kind::QuotaExceeded => Error::QuotaExceeded { backend, reason: failure.reason },
        Kind::Platform => Error::Platform { backend, reason: failure.reason },
        Kind::Corrupt => Error::Corrupt { context: failure.context, reason: failure.reason },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn ask(store: &MemoryStore, call: Call) -> Outcome {
        answer(store, &mut wire::Request { call: Some(call) })
    }

    #[test]
    fn the_helper_answers_each_call_with_its_outcome() {
        let store = MemoryStore::default();
        let set = wire::Set { account: "dev".into(), secret: b"record".to_vec() };
        assert!(matches!(ask(&store, Call::Set(set)), Outcome::Done(_)));
        let Outcome::Found(found) = ask(&store, Call::Get("dev".into())) else { panic!("not an entry") };
        assert_eq!(found.secret.as_deref(), Some(&b"record"[..]));
        assert!(matches!(ask(&store, Call::Remove("dev".into())), Outcome::Removed(true)));
        assert!(matches!(ask(&store, Call::Remove("dev".into())), Outcome::Removed(false)));
        let Outcome::Found(found) = ask(&store, Call::Get("dev".into())) else { panic!("not an entry") };
        assert_eq!(found.secret, None, "a missing entry is no entry, not an empty one");
        assert!(matches!(ask(&store, Call::Probe(wire::Probe {})), Outcome::Done(_)));
    }

    #[test]
    fn a_request_from_another_build_gets_an_error_that_says_to_reinstall() {
        let outcome = answer(&MemoryStore::default(), &mut wire::Request { call: None });
        let Outcome::Failure(failure) = outcome else { panic!("not a failure") };
        assert!(from_failure(failure).to_string().contains("install pachagent's programs from one build"), "the fix");
    }

    #[test]
    fn every_store_error_crosses_the_pipe_with_its_message() {
        let errors = [
            Error::Unavailable { backend: BACKEND, reason: "no bus".into() },
            Error::Locked { backend: BACKEND },
            Error::TimedOut { backend: BACKEND, seconds: 10 },
            Error::QuotaExceeded { backend: BACKEND, reason: "full".into() },
            Error::Platform { backend: BACKEND, reason: "dbus said no".into() },
            Error::Corrupt { context: "dev".into(), reason: "2 items match it".into() },
        ];
        for e in errors {
            let message = e.to_string();
            let frame = wire::Reply { outcome: Some(Outcome::Failure(to_failure(e))) }.encode_length_delimited_to_vec();
            let reply = frames::read(&mut &frame[..]).unwrap().unwrap();
            let Some(Outcome::Failure(failure)) = wire::Reply::decode(&reply[..]).unwrap().outcome else {
                panic!("not a failure")
            };
            assert_eq!(from_failure(failure).to_string(), message);
        }
        let locked = from_failure(to_failure(Error::Locked { backend: BACKEND }));
        assert!(matches!(locked, Error::Locked { .. }), "a lock stays a lock: the engine acts on it");
    }

    #[test]
    fn an_answer_to_another_call_is_an_error_not_a_result() {
        let e = mismatched(&Outcome::Removed(true));
        assert!(e.to_string().contains("answered with a removal to another call"), "{e}");
        assert!(e.to_string().contains("restart the agent"), "says what to do: {e}");
    }
}
