//! The agent's socket: an owner-only directory, a single-instance lock, the socket file itself, and the filter
//! that closes connections from any other user.
//!
//! The directory is opened once and checked through that handle ([`PrivateDir`]: a real directory of this user's
//! that nobody else can write to, never a link), and the lock file and the socket are reached through it, so a
//! directory or a link another user planted first is refused instead of written through.
//!
//! The lock (`<socket>.lock`, holding the owner's pid) is the authority on whether an agent is alive: a socket
//! file without a locked lock file is stale and replaced.
//!
//! Under systemd socket activation ([`activated`]) the socket already exists and belongs to systemd: the agent
//! adopts the listening descriptor it was handed, still takes the lock beside it, and leaves the file in place
//! when it stops, so that the next connection starts the agent again.

use std::ffi::{OsStr, OsString};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::FileType;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tracing::warn;

use super::Error;
use crate::config::current_uid;
use crate::private_dir::{self, Open, PrivateDir, Strictness};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START` in sd_listen_fds(3)).
const LISTEN_FDS_START: RawFd = 3;

/// Whether fd 3 has been adopted: a second [`activated`] call in the same process must not own it twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// Holds the single-instance lock; removes the socket file when dropped, unless systemd owns it.
#[derive(Debug)]
pub struct SocketGuard {
    /// The directory and the socket's name in it, to remove: `None` for a socket systemd made and keeps.
    socket: Option<(PrivateDir, OsString)>,
    _lock: File,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // The lock file stays: removing it could let a starting agent lock a fresh inode while another holds
        // the old one.
        if let Some((dir, name)) = &self.socket {
            let _ = dir.remove(name);
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
        // The others stay open but must not reach the agent's helpers.
        for fd in (LISTEN_FDS_START + 1)..LISTEN_FDS_START.saturating_add(i32::try_from(count).unwrap_or(i32::MAX)) {
            close_on_exec(fd);
        }
    }
    if path != fallback {
        warn!(
            activated = %path.display(),
            configured = %fallback.display(),
            "serving the socket systemd passed, which is not the configured one: clients using the configured \
             path will not reach this agent"
        );
    }
    let (dir, name) = open_dir(&path, false)?;
    let lock = take_lock(&dir, &name, &path)?;
    listener.set_nonblocking(true).map_err(|e| fail(&path, format!("cannot make fd 3 non-blocking: {e}")))?;
    let listener = UnixListener::from_std(listener).map_err(|e| fail(&path, e.to_string()))?;
    Ok(Some((listener, SocketGuard { socket: None, _lock: lock })))
}

/// Marks a descriptor systemd passed close-on-exec; one that is not open is left alone.
#[allow(unsafe_code)]
fn close_on_exec(fd: RawFd) {
    // SAFETY: fcntl(2) on an integer descriptor touches no memory; EBADF for a closed one is ignored.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
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

/// Takes the single-instance lock and binds the socket (mode 0600, in a checked directory: see [`PrivateDir`]).
///
/// # Errors
/// [`Error::AlreadyRunning`] when a live agent holds the lock, [`Error::Socket`] otherwise (a directory or file
/// someone else planted included, named with the fix).
pub fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), Error> {
    let fail = |reason: String| Error::Socket { socket: path.to_owned(), reason };
    let (dir, name) = open_dir(path, true)?;
    let lock = take_lock(&dir, &name, path)?;
    let ours = |e: &private_dir::Entry| e.file_type == FileType::Socket && e.uid == current_uid();
    match dir.entry(&name).map_err(|e| fail(e.to_string()))? {
        // Stale: we hold the lock, so no agent is serving it.
        Some(e) if ours(&e) => dir.remove(&name).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?,
        Some(_) => return Err(fail("a file that is not a socket of yours is in the way: move or remove it".into())),
        None => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    // Bound by path; checked through the handle that the directory holding it is the one checked above.
    if !dir.entry(&name).map_err(|e| fail(e.to_string()))?.is_some_and(|e| ours(&e)) {
        return Err(fail("the socket's directory changed while the socket was being made: try again".into()));
    }
    dir.set_mode(&name, 0o600).map_err(|e| fail(format!("cannot make the socket owner-only: {e}")))?;
    Ok((listener, SocketGuard { socket: Some((dir, name)), _lock: lock }))
}

/// The socket's directory, opened and checked, and the socket's name in it.
fn open_dir(path: &Path, create: bool) -> Result<(PrivateDir, OsString), Error> {
    let fail = |reason: String| Error::Socket { socket: path.to_owned(), reason };
    let name = path.file_name().ok_or_else(|| fail("the socket path has no file name".into()))?.to_owned();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = PrivateDir::open(dir, Strictness::for_dir(dir), create).map_err(|e| fail(e.to_string()))?;
    Ok((dir, name))
}

/// Locks `<socket>.lock` in `dir` and writes our pid into it.
fn take_lock(dir: &PrivateDir, socket_name: &OsStr, path: &Path) -> Result<File, Error> {
    let fail = |reason: String| Error::Socket { socket: path.to_owned(), reason };
    let lock_path = lock_path(path);
    let mut name = socket_name.to_owned();
    name.push(".lock");
    let mut lock = dir.open_file(&name, Open::ReadWrite).map_err(|e| fail(format!("the lock file: {e}")))?;
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
