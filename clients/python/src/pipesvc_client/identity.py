"""Who is the server? Checked after connecting and before the first byte is
sent, so that a process squatting on the endpoint never sees a request.

Unix, like the Rust client (SECURITY.md): the server's uid as the kernel
reports it (``SO_PEERCRED``, Linux only), and the directories leading to
the socket (none may be in the hands of another user, nor writable by
others unless sticky; in a sticky shared directory the entry itself must
belong to a trusted user).

What Python cannot check here, said plainly:

* On Unix systems other than Linux, the peer's uid (``SO_PEERCRED``
  is Linux-only; macOS's ``LOCAL_PEERCRED`` is not exposed by the standard
  library): only the directories are checked there.
* On Windows, the pipe server's user (it needs ``GetNamedPipeServerProcessId``
  and the process token): not checked. Rely on a pipe name only your
  service creates first and on the pipe's security descriptor.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from .endpoint import Endpoint
from .errors import WrongServer

_WRITABLE_BY_OTHERS = 0o022


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Which server a client agrees to talk to.

    The default (``uid=None``, ``any=False``) is a server running as the
    client's own user or root. ``uid`` asks for exactly that uid (its
    directories may belong to it, the client or root). ``any=True`` checks
    nothing (only for endpoints nobody else can reach).
    """

    uid: int | None = None
    any: bool = False

    @staticmethod
    def anyone() -> "ServerIdentity":
        """No check at all."""
        return ServerIdentity(any=True)


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The server process as the kernel reports it (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials | None:
    """The peer's pid, uid and gid on Linux; ``None`` where the system does
    not report them to Python."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sys.platform != "linux":
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)


class _Trust:
    def __init__(self, me: int, wanted: int | None) -> None:
        self.me, self.wanted = me, wanted

    def server_ok(self, uid: int) -> bool:
        return uid == self.wanted if self.wanted is not None else uid in (self.me, 0)

    def owner_ok(self, uid: int) -> bool:
        return uid in (self.me, 0) or uid == self.wanted

    def users(self) -> str:
        base = "root (uid 0, you)" if self.me == 0 else f"uid {self.me} (you) or root"
        if self.wanted is not None and self.wanted not in (self.me, 0):
            return f"uid {self.wanted}, {base}"
        return base


def check_server(
    endpoint: Endpoint, wanted: ServerIdentity, peer: PeerCredentials | None
) -> None:
    """Raises :class:`WrongServer` unless the server and the way to its
    socket are trusted under ``wanted`` (Unix; a no-op on Windows)."""
    if wanted.any or endpoint.windows:
        return
    trust = _Trust(os.getuid(), wanted.uid)  # type: ignore[attr-defined,unused-ignore]
    if peer is not None and not trust.server_ok(peer.uid):
        expected = f"uid {wanted.uid}" if wanted.uid is not None else trust.users()
        raise WrongServer(
            f"{endpoint}: expected a server running as {expected}, found a server"
            f" running as uid {peer.uid} (pid {peer.pid})"
        )
    try:
        problem = check_path(trust, endpoint)
    except OSError as e:
        problem = f"a path that cannot be inspected ({e})"
    if problem:
        raise WrongServer(
            f"{endpoint}: expected a socket behind directories only {trust.users()}"
            f" can change, found {problem}"
        )


def check_path(trust: _Trust, endpoint: Endpoint) -> str | None:
    """What is wrong with the way to the socket, or ``None``."""
    if endpoint.private_dir is not None:
        private = Path(endpoint.private_dir)
        return _private_dir(trust, private) or _entry_in(trust, private.parent, private)
    socket_path = Path(endpoint.address)
    return _entry_in(trust, socket_path.parent, socket_path)


def _private_dir(trust: _Trust, path: Path) -> str | None:
    meta = os.lstat(path)
    mode = stat.S_IMODE(meta.st_mode)
    if stat.S_ISLNK(meta.st_mode):
        return f"the private directory {path} is a symbolic link"
    if not stat.S_ISDIR(meta.st_mode):
        return f"{path} is not a directory"
    if not trust.owner_ok(meta.st_uid):
        return f"the private directory {path} owned by uid {meta.st_uid}, who chooses the server there"
    if mode & _WRITABLE_BY_OTHERS:
        return f"the private directory {path} writable by others (mode {mode:o}), who can swap the socket"
    return None


def _entry_in(trust: _Trust, directory: Path, entry: Path) -> str | None:
    written = Path(os.path.abspath(directory))
    resolved = directory.resolve()
    for path in (written, resolved):
        for ancestor in (path, *path.parents):
            problem = _ancestor(trust, ancestor)
            if problem:
                return problem
    if os.lstat(resolved).st_mode & _WRITABLE_BY_OTHERS:
        owner = os.lstat(entry).st_uid
        if not trust.owner_ok(owner):
            return f"{entry} owned by uid {owner} in the shared directory {resolved}"
    return None


def _ancestor(trust: _Trust, path: Path) -> str | None:
    meta = os.lstat(path)
    if not trust.owner_ok(meta.st_uid):
        return f"{path} owned by uid {meta.st_uid}, who could swap the socket"
    mode = stat.S_IMODE(meta.st_mode)
    if stat.S_ISDIR(meta.st_mode) and mode & _WRITABLE_BY_OTHERS and not mode & stat.S_ISVTX:
        return f"{path} writable by others (mode {mode:o}, not sticky), so anyone could swap the socket"
    return None
