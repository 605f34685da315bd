"""Endpoints: the bare names of PROTOCOL.md "Transport" mapped as the Rust
client maps them, on both platforms (the rules of each are plain functions,
so that both are tested everywhere)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import ConfigError

PIPE_PREFIX = "\\\\.\\pipe\\"
#: Longest pipe name Windows accepts, in UTF-16 units.
WINDOWS_MAX_NAME_LEN = 256
#: Longest socket path (``sun_path`` less its NUL), as the Rust client checks.
UNIX_MAX_PATH_LEN = 107


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a server listens: a socket path (Unix) or a pipe name (Windows).

    ``private_dir`` is the per-user directory a bare name lives in (Unix),
    checked before connecting (see :mod:`pipesvc_client.identity`); ``None``
    for a path given in full and on Windows.
    """

    address: str
    private_dir: str | None = None
    windows: bool = False

    @staticmethod
    def from_name(name: str) -> "Endpoint":
        """The endpoint of ``name`` on this platform."""
        if sys.platform == "win32":
            return windows_endpoint(name)
        return unix_endpoint(name, default_private_dir())

    def __str__(self) -> str:
        return self.address


def _check_bare_name(name: str) -> None:
    if not name:
        raise ConfigError("endpoint name: the name is empty")
    if "\\" in name:
        raise ConfigError(
            f"endpoint name {name!r}: a bare name cannot contain a backslash"
            f" (a full pipe name starts with {PIPE_PREFIX})"
        )
    if "\0" in name:
        raise ConfigError(f"endpoint name {name!r}: the name contains a NUL character")


def windows_endpoint(name: str) -> Endpoint:
    """``\\\\.\\pipe\\NAME`` for a bare name; a full pipe name (prefix in any
    case) is taken as it is."""
    if name[: len(PIPE_PREFIX)].lower() == PIPE_PREFIX:
        _check_bare_name(name[len(PIPE_PREFIX) :])
        full = name
    else:
        _check_bare_name(name)
        full = PIPE_PREFIX + name
    units = len(full.encode("utf-16-le")) // 2
    if units > WINDOWS_MAX_NAME_LEN:
        raise ConfigError(
            f"endpoint {full!r}: the pipe name is {units} characters long;"
            f" Windows allows {WINDOWS_MAX_NAME_LEN}"
        )
    return Endpoint(full, None, windows=True)


def socket_file_name(name: str) -> str:
    """``NAME.sock``, unless the name already ends in ``.sock``."""
    if name.endswith(".sock") and name != ".sock":
        return name
    return name + ".sock"


def unix_endpoint(name: str, private_dir: str) -> Endpoint:
    """A name with ``/`` is a socket path; a bare name is
    ``PRIVATE_DIR/NAME.sock``."""
    if "/" in name:
        if "\0" in name:
            raise ConfigError(f"endpoint {name!r}: the path contains a NUL character")
        address, private = name, None
    else:
        _check_bare_name(name)
        if name in (".", ".."):
            raise ConfigError(f"endpoint {name!r}: `.` and `..` are not names")
        address, private = str(PurePosixPath(private_dir) / socket_file_name(name)), private_dir
    size = len(os.fsencode(address))
    if size > UNIX_MAX_PATH_LEN:
        raise ConfigError(
            f"endpoint {address}: the socket path is {size} bytes long;"
            f" Unix sockets allow {UNIX_MAX_PATH_LEN}"
        )
    return Endpoint(address, private)


def default_private_dir(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str:
    """``$XDG_RUNTIME_DIR/pipesvc`` when that is an absolute path, else
    ``/tmp/pipesvc-<uid>``."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return str(PurePosixPath(xdg) / "pipesvc")
    return f"/tmp/pipesvc-{os.getuid()}"  # type: ignore[attr-defined,unused-ignore]
