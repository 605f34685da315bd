"""Opening the byte stream to a server: a Unix socket, or a named pipe
through the Proactor event loop on Windows, retried while the server is
absent or busy (PROTOCOL.md "Transport") until the connect timeout, then
checked for the server's identity before anything is sent."""

from __future__ import annotations

import asyncio
import errno
import sys
import time
from typing import Any, Protocol

from .endpoint import Endpoint
from .errors import ConnectError, Timeout
from .identity import PeerCredentials, ServerIdentity, check_server, peer_credentials

#: Windows errors that mean "try again": no server (yet), every instance busy.
ERROR_FILE_NOT_FOUND = 2
ERROR_PIPE_BUSY = 231
#: First and longest pause between two attempts.
RETRY_MIN = 0.01
RETRY_MAX = 0.2

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PipeLoop(Protocol):
    """The part of a Proactor event loop that opens named pipes."""

    async def create_pipe_connection(self, protocol_factory: Any, address: str) -> Any:
        """Opens ``address`` as a pipe client (asyncio's signature)."""


def is_retryable(error: OSError) -> bool:
    """Whether a failed attempt means the server is absent or busy (retry)
    rather than something waiting cannot fix."""
    winerror = getattr(error, "winerror", None)
    if winerror is not None:
        return winerror in (ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY)
    return error.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN)


async def _open_unix(endpoint: Endpoint) -> Streams:
    return await asyncio.open_unix_connection(endpoint.address)


async def open_pipe(loop: PipeLoop, address: str) -> Streams:
    """A named pipe as asyncio streams (the Proactor loop's pipe client)."""
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.create_pipe_connection(lambda: protocol, address)
    writer = asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())
    return reader, writer


async def _open_once(endpoint: Endpoint) -> Streams:
    if endpoint.windows:
        loop: Any = asyncio.get_running_loop()
        if not hasattr(loop, "create_pipe_connection"):
            raise ConnectError(f"{endpoint}: named pipes need asyncio's Proactor event loop")
        return await open_pipe(loop, endpoint.address)
    return await _open_unix(endpoint)


async def open_stream(
    endpoint: Endpoint, timeout: float, identity: ServerIdentity
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, PeerCredentials | None]:
    """Connects within ``timeout`` seconds, retrying an absent or busy
    server with a short backoff, then checks who the server is (see
    :mod:`pipesvc_client.identity`): a server that does not fit is closed
    with :class:`WrongServer` before any byte is sent."""
    deadline = time.monotonic() + timeout
    pause = RETRY_MIN
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            why = f" ({last.strerror or last})" if last else ""
            raise ConnectError(f"{endpoint}: no server within {timeout:g} s{why}")
        try:
            reader, writer = await asyncio.wait_for(_open_once(endpoint), left)
            break
        except asyncio.TimeoutError:
            raise Timeout(f"a connection to {endpoint}", timeout) from None
        except OSError as e:
            if not is_retryable(e):
                raise ConnectError(f"{endpoint}: {e.strerror or e}") from e
            last = e
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, RETRY_MAX)
    peer = None
    try:
        if not endpoint.windows:
            sock = writer.get_extra_info("socket")
            peer = peer_credentials(sock) if sock is not None else None
        check_server(endpoint, identity, peer)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer, peer


def platform_supports_pipes() -> bool:
    """Whether this platform reaches named pipes (Windows only)."""
    return sys.platform == "win32"
