//! The agent's socket: an owner-only directory, a single-instance lock, the socket file itself, and the filter
//! that closes connections from any other user.
//!
//! The lock (`<socket>.lock`, holding the owner's pid) is the authority on whether an agent is alive: a socket
//! file without a locked lock file is stale and replaced.
//!
//! Under systemd socket activation ([`activated`]) the socket already exists and belongs to systemd: the agent
//! adopts the listening descriptor it was handed, still takes the lock beside it, and leaves the file in place
//! when it stops, so that the next connection starts the agent again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tracing::warn;

use super::Error;
use crate::config::current_uid;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START` in sd_listen_fds(3)).
const LISTEN_FDS_START: RawFd = 3;

/// Whether fd 3 has been adopted: a second [`activated`] call in the same process must not own it twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// Holds the single-instance lock; removes the socket file when dropped, unless systemd owns it.
#[derive(Debug)]
pub struct SocketGuard {
    /// The socket file to remove: `None` for a socket systemd made and keeps.
    socket: Option<PathBuf>,
    _lock: File,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // The lock file stays: removing it could let a starting agent lock a fresh inode while another holds
        // the old one.
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The listening socket systemd handed this process, if it did: `$LISTEN_PID` is our pid and `$LISTEN_FDS` is
/// at least 1. The socket is fd 3 (the first one, when several are passed); the lock is taken beside the path
/// it is bound to, or beside `fallback` when it has none. The socket is taken at most once per process.
///
/// The variables stay set: they name this pid, so no child mistakes them for its own, and removing them
/// (`std::env::remove_var`) is unsound once the runtime's threads exist.
///
/// # Errors
/// [`Error::AlreadyRunning`] when another agent holds the lock, [`Error::Socket`] when fd 3 is not a Unix
/// socket.
pub fn activated(fallback: &Path) -> Result<Option<(UnixListener, SocketGuard)>, Error> {
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.trim().parse::<u32>().ok()).unwrap_or(0);
    if !ours || count == 0 || ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let fail = |path: &Path, reason: String| Error::Socket { socket: path.to_owned(), reason };
    let listener = adopt_listen_fd().map_err(|e| fail(fallback, format!("systemd passed fd 3, but: {e}")))?;
    let path = match listener.local_addr() {
        Ok(addr) => addr.as_pathname().map_or_else(|| fallback.to_owned(), Path::to_owned),
        Err(e) => return Err(fail(fallback, format!("fd 3 from systemd is not a Unix socket: {e}"))),
    };
    if count > 1 {
        warn!(count, "systemd passed more than one socket; only the first (fd 3) is served");
    }
    if path != fallback {
        warn!(
            activated = %path.display(),
            configured = %fallback.display(),
            "serving the socket systemd passed, which is not the configured one: clients using the configured \
             path will not reach this agent"
        );
    }
    let lock = take_lock(&path)?;
    listener.set_nonblocking(true).map_err(|e| fail(&path, format!("cannot make fd 3 non-blocking: {e}")))?;
    let listener = UnixListener::from_std(listener).map_err(|e| fail(&path, e.to_string()))?;
    Ok(Some((listener, SocketGuard { socket: None, _lock: lock })))
}

/// Takes ownership of fd 3 as a Unix listener, marking it close-on-exec so that no child inherits it.
#[allow(unsafe_code)]
fn adopt_listen_fd() -> std::io::Result<std::os::unix::net::UnixListener> {
    // SAFETY: fcntl(2) on an integer descriptor touches no memory; it fails with EBADF when fd 3 is not open,
    // which is checked before anything takes ownership of it.
    if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd 3 is open (above) and was handed to this process at exec by its launcher ($LISTEN_PID is our
    // pid), so no descriptor opened since can carry that number and no other owner in the process exists;
    // `ADOPTED` makes this the only place that takes it, once.
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) })
}

/// Takes the single-instance lock and binds the socket (mode 0600, its directory 0700 when it is ours).
///
/// # Errors
/// [`Error::AlreadyRunning`] when a live agent holds the lock, [`Error::Socket`] otherwise.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), Error> {
    let fail = |reason: String| Error::Socket { socket: path.to_owned(), reason };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    prepare_dir(dir).map_err(&fail)?;
    let lock = take_lock(path)?;

    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Stale: we hold the lock, so no agent is serving it.
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(fail("a file that is not a socket is in the way: move or remove it".into())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot make the socket owner-only: {e}")))?;
    Ok((listener, SocketGuard { socket: Some(path.to_owned()), _lock: lock }))
}

/// Locks `<socket>.lock` and writes our pid into it.
fn take_lock(path: &Path) -> Result<File, Error> {
    let fail = |reason: String| Error::Socket { socket: path.to_owned(), reason };
    let lock_path = lock_path(path);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| fail(format!("cannot open the lock file {}: {e}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            return Err(Error::AlreadyRunning { pid: pid.trim().parse().unwrap_or(0), socket: path.to_owned() });
        }
        Err(TryLockError::Error(e)) => return Err(fail(format!("cannot lock {}: {e}", lock_path.display()))),
    }
    let write_pid = |lock: &mut File| -> std::io::Result<()> {
        lock.set_len(0)?;
        lock.rewind()?;
        write!(lock, "{}", std::process::id())?;
        lock.sync_all()
    };
    write_pid(&mut lock).map_err(|e| fail(format!("cannot write the lock file: {e}")))?;
    Ok(lock)
}

/// The lock file beside a socket.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Creates the directory owner-only; a directory we own is (re)made 0700, and one owned by someone else is
/// refused unless it is a sticky shared directory such as `/tmp`.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let uid = current_uid();
    if meta.uid() == uid {
        if meta.permissions().mode() & 0o777 != 0o700 && is_agent_dir(dir) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make {} owner-only: {e}", dir.display()))?;
        }
        Ok(())
    } else if meta.permissions().mode() & 0o1000 != 0 {
        Ok(())
    } else {
        Err(format!("{} belongs to uid {}, not to you (uid {uid}): choose another --socket", dir.display(), meta.uid()))
    }
}

/// Directories pachagent made for itself (the defaults), whose mode it may tighten; a directory the user named
/// (e.g. their home) is left as it is, since the socket file itself is 0600.
fn is_agent_dir(dir: &Path) -> bool {
    dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pachagent"))
}

/// Accepted connections whose peer runs as this agent's uid; any other is closed and logged.
pub fn same_user_connections(listener: UnixListener) -> impl Stream<Item = std::io::Result<UnixStream>> {
    let uid = current_uid();
    UnixListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => Some(Ok(stream)),
            Ok(cred) => {
                warn!(peer_uid = cred.uid(), peer_pid = cred.pid(), "rejected a connection from another user");
                None
            }
            Err(e) => {
                warn!(error = %e, "rejected a connection whose peer cannot be identified");
                None
            }
        },
        Err(e) => {
            // Accept failures (e.g. out of file descriptors) must not stop the agent.
            warn!(error = %e, "accept failed");
            None
        }
    })
}
