"""Endpoint names, and the named-pipe code paths as far as they run off
Windows (SCENARIOS.md TR-1)."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from conftest import Server
from pipesvc_client import Client, ConfigError
from pipesvc_client.endpoint import Endpoint, default_private_dir, unix_endpoint, windows_endpoint
from pipesvc_client.transport import ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY, is_retryable


def test_bare_names_map_like_the_rust_client() -> None:
    """TR-1."""
    assert unix_endpoint("svc", "/run/user/7/pipesvc") == Endpoint(
        "/run/user/7/pipesvc/svc.sock", "/run/user/7/pipesvc"
    )
    assert unix_endpoint("svc.sock", "/d").address == "/d/svc.sock"
    assert unix_endpoint(".sock", "/d").address == "/d/.sock.sock"
    assert unix_endpoint("/tmp/x/s.sock", "/d") == Endpoint("/tmp/x/s.sock", None)
    assert default_private_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/pipesvc"
    assert default_private_dir({"XDG_RUNTIME_DIR": "relative"}).startswith("/tmp/pipesvc-")
    assert default_private_dir({}).startswith("/tmp/pipesvc-")
    assert windows_endpoint("svc") == Endpoint(r"\\.\pipe\svc", None, windows=True)
    assert windows_endpoint(r"\\.\PIPE\Svc").address == r"\\.\PIPE\Svc"
    for bad in ("", "a\\b", "nul\0", ".", "..", "x" * 200):
        with pytest.raises(ConfigError):
            unix_endpoint(bad, "/d")
    for bad in ("", "a\\b", "x" * 300):
        with pytest.raises(ConfigError):
            windows_endpoint(bad)


def test_absent_and_busy_are_retried_and_nothing_else() -> None:
    """TR-2's decision, on both platforms' errors."""
    def windows_error(code: int) -> OSError:
        error = OSError(code, "windows")
        error.winerror = code  # type: ignore[attr-defined]
        return error

    assert is_retryable(windows_error(ERROR_FILE_NOT_FOUND))
    assert is_retryable(windows_error(ERROR_PIPE_BUSY))
    assert not is_retryable(windows_error(5))  # access denied
    assert is_retryable(OSError(errno.ENOENT, "absent"))
    assert is_retryable(OSError(errno.ECONNREFUSED, "refused"))
    assert not is_retryable(OSError(errno.EACCES, "denied"))


async def test_a_named_pipe_connection_runs_the_whole_client(server: Server) -> None:
    """The named-pipe path (``open_pipe`` through a loop's
    ``create_pipe_connection``, retrying ``ERROR_PIPE_BUSY`` and
    ``ERROR_FILE_NOT_FOUND``) with the pipe played by ``serve``'s socket:
    what Windows would do is the one call this test replaces."""
    loop: Any = asyncio.get_running_loop()
    attempts: list[str] = []

    async def create_pipe_connection(factory: Any, address: str) -> Any:
        attempts.append(address)
        if len(attempts) < 3:
            code = ERROR_PIPE_BUSY if len(attempts) == 1 else ERROR_FILE_NOT_FOUND
            error = OSError(code, "not yet")
            error.winerror = code  # type: ignore[attr-defined]
            raise error
        return await loop.create_unix_connection(factory, server.socket)

    loop.create_pipe_connection = create_pipe_connection
    try:
        endpoint = windows_endpoint("py-test")
        async with await Client.connect(endpoint) as client:
            assert await client.call("echo", [1, "pipe"]) == [1, "pipe"]
            assert await client.request(b"bytes") == b"bytes"
        assert attempts == [r"\\.\pipe\py-test"] * 3
    finally:
        del loop.create_pipe_connection
