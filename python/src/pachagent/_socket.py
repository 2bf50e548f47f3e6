"""Finding the agent's socket and making sure the agent behind it is this user's own.

The socket is found as the ``pachagent`` CLI finds it: ``$PACHAGENT_SOCKET``, else
``$XDG_RUNTIME_DIR/pachagent/agent.sock``, else ``$TMPDIR/pachagent-<uid>/agent.sock``. Before anything is sent,
the directory must be a real directory (not a link) that belongs to this user and that nobody else can write to
(so nobody else can swap the socket afterwards), the socket must be this user's, and the process listening on it
must run as this user (``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on macOS). A token is never asked of, and a
login URL never believed from, anyone else.
"""

import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Optional

from .errors import AgentNotRunning, UntrustedAgent


def socket_path() -> Path:
    """The agent's socket, chosen as the CLI chooses it."""
    explicit = os.environ.get("PACHAGENT_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "pachagent" / "agent.sock"
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return Path(tmp) / f"pachagent-{os.getuid()}" / "agent.sock"


def checked_socket(path: Optional[Path] = None) -> Path:
    """The socket, once its directory, its owner and the server's uid check out.

    Raises :class:`AgentNotRunning` when there is no agent there, :class:`UntrustedAgent` when any of them is not
    this user's.
    """
    path = socket_path() if path is None else path
    uid = os.getuid()
    directory = path.parent
    try:
        dir_info = os.lstat(directory)
    except FileNotFoundError:
        raise AgentNotRunning(_not_running(path)) from None
    if stat.S_ISLNK(dir_info.st_mode) or not stat.S_ISDIR(dir_info.st_mode):
        raise UntrustedAgent(
            f"{directory} is not a directory but {'a symbolic link' if stat.S_ISLNK(dir_info.st_mode) else 'a file'}: "
            f"the agent's socket must be in a directory of yours; remove it and start the agent again"
        )
    if dir_info.st_uid != uid:
        raise UntrustedAgent(
            f"{directory} belongs to uid {dir_info.st_uid}, not to you (uid {uid}): another user may be "
            f"impersonating the agent; nothing was sent. Remove it (or set PACHAGENT_SOCKET to a path of yours) "
            f"and start the agent again"
        )
    if dir_info.st_mode & 0o022:
        raise UntrustedAgent(
            f"{directory} can be written by other users (mode {stat.S_IMODE(dir_info.st_mode):o}), so its socket "
            f"could be replaced: chmod 700 {directory}, then start the agent again"
        )
    try:
        sock_info = os.lstat(path)
    except FileNotFoundError:
        raise AgentNotRunning(_not_running(path)) from None
    if not stat.S_ISSOCK(sock_info.st_mode):
        raise UntrustedAgent(f"{path} is not a socket: remove it and start the agent again")
    if sock_info.st_uid != uid:
        raise UntrustedAgent(f"{path} belongs to uid {sock_info.st_uid}, not to you (uid {uid}): nothing was sent")
    server = _server_uid(path)
    if server != uid:
        raise UntrustedAgent(
            f"the process serving {path} runs as uid {server}, not as you (uid {uid}): nothing was sent to it; "
            f"stop it and start your own agent"
        )
    return path


def _not_running(path: Path) -> str:
    return (
        f"the pachagent agent is not running (no agent at {path}): start it with `pachagent serve`, "
        f"or run `pachagent login`, which starts it"
    )


def _server_uid(path: Path) -> int:
    """The uid of the process listening on ``path``, from the kernel."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise AgentNotRunning(_not_running(path)) from None
        except OSError as e:
            raise AgentNotRunning(f"cannot connect to the agent at {path}: {e}") from None
        if sys.platform.startswith("linux"):
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, server_uid, _gid = struct.unpack("3i", creds)
            return server_uid
        if sys.platform == "darwin":
            # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
            sol_local, local_peercred = 0, 1
            creds = s.getsockopt(sol_local, local_peercred, 76)
            _version, server_uid = struct.unpack_from("2I", creds)
            return server_uid
        raise UntrustedAgent(f"cannot tell who serves {path} on {sys.platform}: nothing was sent")
