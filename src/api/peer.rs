//! Who is on the other end of the socket. The daemon drops connections from other uids before they reach the
//! service (see `daemon::socket`); here the caller's pid and executable are read for the audit trail.

use tonic::Request;
use tonic::transport::server::UdsConnectInfo;

use crate::engine::Caller;

/// The caller of `req`, from the socket's peer credentials.
pub fn caller<T>(req: &Request<T>) -> Caller {
    let Some(cred) = req.extensions().get::<UdsConnectInfo>().and_then(|info| info.peer_cred) else {
        return Caller::default();
    };
    let pid = cred.pid();
    Caller { uid: cred.uid(), pid, exe: pid.and_then(executable_of) }
}

/// The executable of a process, where the platform shows it (`/proc/<pid>/exe` on Linux).
fn executable_of(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string())
}
