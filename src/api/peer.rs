//! Who is on the other end of the socket. The daemon drops connections from other uids before they reach the
//! service (see `daemon::socket`); here the caller's pid and executable are read for the audit trail.
//!
//! They are read once per connection, when it is accepted: a connection's peer cannot change, and reading
//! `/proc` on every call would add a syscall (and an allocation) to each `GetToken` of a client that keeps its
//! connection open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UnixStream;
use tonic::Request;

use crate::engine::Caller;

/// The peer of one connection, as tonic hands it to every request on that connection.
#[derive(Debug, Clone)]
pub struct Peer {
    caller: Caller,
    /// Whether a token was already handed out on this connection (only the first is logged at info).
    handed_out: Arc<AtomicBool>,
}

impl Peer {
    /// The peer of an accepted connection, from its credentials.
    pub fn of(stream: &UnixStream) -> Self {
        let caller = match stream.peer_cred() {
            Ok(cred) => {
                let pid = cred.pid();
                Caller { uid: cred.uid(), pid, exe: pid.and_then(executable_of), first_on_connection: false }
            }
            Err(_) => Caller::default(),
        };
        Self { caller, handed_out: Arc::new(AtomicBool::new(false)) }
    }
}

/// The caller of `req`, from its connection's [`Peer`]; marks the connection as having received a token.
pub fn token_caller<T>(req: &Request<T>) -> Caller {
    let Some(peer) = req.extensions().get::<Peer>() else {
        return Caller::default();
    };
    let first = !peer.handed_out.swap(true, Ordering::Relaxed);
    Caller { first_on_connection: first, ..peer.caller.clone() }
}

/// The executable of a process, where the platform shows it (`/proc/<pid>/exe` on Linux).
fn executable_of(pid: i32) -> Option<Arc<str>> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| Arc::from(p.display().to_string()))
}
