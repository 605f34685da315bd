"""The handshake (PROTOCOL.md "Handshake"): the server's HELLO, this
client's HELLO, and on a version 2 connection the server's HELLO reply,
all within one timeout."""

from __future__ import annotations

import asyncio

from .errors import (
    ConnectionClosed,
    ErrorCode,
    ProtocolError,
    ServerTooOld,
    Timeout,
    decode_text,
    escaped,
)
from .framing import Frame, Kind, encode_frame, read_frame
from .messages import ServerHello, client_hello, parse_error, parse_hello, parse_hello_reply


async def _next(reader: asyncio.StreamReader, max_len: int, what: str) -> Frame:
    frame = await read_frame(reader, max_len)
    if frame is None:
        raise ConnectionClosed(f"the server closed the connection before its {what}")
    if frame.kind == Kind.ERROR and frame.id == 0:
        error = parse_error(frame.payload, connection=True)
        if error.code == ErrorCode.UNSUPPORTED_VERSION and what == "HELLO reply":
            raise ServerTooOld(
                "the server speaks only protocol version 1 (it answered the version 2"
                f" HELLO with {error}); connect with version=1"
            )
        raise error
    if frame.kind == Kind.GOODBYE:
        reason = escaped(decode_text(frame.payload))
        raise ConnectionClosed(f"the server is shutting down (GOODBYE {reason!r})")
    if frame.kind != Kind.HELLO:
        raise ProtocolError(f"the server sent a frame of kind {frame.kind} in place of its {what}")
    return frame


async def _first_hello(reader: asyncio.StreamReader, max_len: int) -> ServerHello:
    try:
        return parse_hello((await _next(reader, max_len, "HELLO")).payload)
    except ProtocolError as e:
        raise ProtocolError(f"not a pipesvc server (its first frame is no HELLO): {e}") from None


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int, max_len: int
) -> ServerHello:
    hello = await _first_hello(reader, max_len)
    writer.write(encode_frame(Kind.HELLO, 0, client_hello(version)))
    await writer.drain()
    if version < 2:
        return hello
    reply = await _next(reader, max_len, "HELLO reply")
    return parse_hello_reply(reply.payload, hello)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    version: int,
    max_frame_len: int,
    timeout: float,
) -> ServerHello:
    """Runs the handshake as a client speaking ``version`` (1 or 2); the
    whole of it must finish within ``timeout`` seconds. A refusal (ERROR
    with id 0) raises :class:`RemoteError`; a version 1 server met by a
    version 2 client, :class:`ServerTooOld`; anything unexpected,
    :class:`ProtocolError`."""
    try:
        return await asyncio.wait_for(_handshake(reader, writer, version, max_frame_len), timeout)
    except asyncio.TimeoutError:
        raise Timeout("the server's handshake", timeout) from None
    except (ConnectionError, OSError) as e:
        raise ConnectionClosed(f"the connection was lost during the handshake ({e})") from None
