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
from .framing import Frame, FrameReader, Kind, encode_frame
from .messages import ServerHello, client_hello, parse_error, parse_hello, parse_hello_reply


async def _next(reader: FrameReader, what: str) -> Frame:
    frame = await reader.next()
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


async def _first_hello(reader: FrameReader) -> ServerHello:
    try:
        return parse_hello((await _next(reader, "HELLO")).payload)
    except ProtocolError as e:
        raise ProtocolError(f"not a pipesvc server (its first frame is no HELLO): {e}") from None


async def _handshake(
    reader: FrameReader, writer: asyncio.StreamWriter, version: int
) -> ServerHello:
    hello = await _first_hello(reader)
    writer.write(encode_frame(Kind.HELLO, 0, client_hello(version)))
    await writer.drain()
    if version < 2:
        return hello
    reply = await _next(reader, "HELLO reply")
    return parse_hello_reply(reply.payload, hello)


async def handshake(
    reader: FrameReader,
    writer: asyncio.StreamWriter,
    *,
    version: int,
    timeout: float,
) -> ServerHello:
    """Runs the handshake as a client speaking ``version`` (1 or 2); the
    whole of it must finish within ``timeout`` seconds. A refusal (ERROR
    with id 0) raises :class:`RemoteError`; a version 1 server met by a
    version 2 client, :class:`ServerTooOld`; anything unexpected,
    :class:`ProtocolError`. ``reader`` is then handed to the connection
    (it may hold frames that followed the handshake)."""
    try:
        return await asyncio.wait_for(_handshake(reader, writer, version), timeout)
    except asyncio.TimeoutError:
        raise Timeout("the server's handshake", timeout) from None
    except (ConnectionError, OSError) as e:
        raise ConnectionClosed(f"the connection was lost during the handshake ({e})") from None
