"""Frames: the 10-byte header, the kinds, and reading frames from a byte
stream with the length checked before anything else is read (PROTOCOL.md
"Frame layout", "Maximum frame length")."""

from __future__ import annotations

import asyncio
import enum
import struct
from dataclasses import dataclass

from .errors import ProtocolError

#: Bytes of the header: u32 length, u8 kind, u8 flags, u32 id.
HEADER_LEN = 10
#: ``length`` counts the bytes after the length field: kind, flags, id, payload.
LENGTH_OVERHEAD = 6
#: pipesvc's default maximum ``length`` (8 MiB), also this client's default limit.
DEFAULT_MAX_FRAME_LEN = 8 * 1024 * 1024
#: The largest ``length`` of a frame sent before the server's HELLO is read.
HANDSHAKE_FRAME_LEN = 74

_HEADER = struct.Struct("<IBBI")


class Kind(enum.IntEnum):
    """Frame kinds (PROTOCOL.md "Kinds")."""

    HELLO = 1
    REQUEST = 2
    RESPONSE = 3
    ERROR = 4
    NOTIFY = 5
    GOODBYE = 6
    PING = 7
    PONG = 8
    STATUS = 9
    CALL = 10
    CANCEL = 11
    DESCRIBE = 12
    ITEM = 13
    CREDIT = 14
    END = 15
    SUBSCRIBE = 16


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: its kind (an int, so that unknown kinds can be carried),
    its id and its payload. Flags are always 0."""

    kind: int
    id: int
    payload: bytes = b""

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return encode_frame(self.kind, self.id, self.payload)


def encode_frame(kind: int, frame_id: int, payload: bytes = b"") -> bytes:
    """The bytes of a frame (header then payload)."""
    return _HEADER.pack(LENGTH_OVERHEAD + len(payload), kind, 0, frame_id) + payload


def frame_length(payload_len: int) -> int:
    """The ``length`` field of a frame with ``payload_len`` bytes of payload."""
    return LENGTH_OVERHEAD + payload_len


class FrameReader:
    """Frames from a byte stream, read in chunks and split by their length
    prefix (never by read boundaries). Each length is checked against
    ``max_len`` as soon as its 4 bytes are there, before the rest is waited
    for, so a hostile length allocates nothing."""

    def __init__(self, reader: asyncio.StreamReader, max_len: int, chunk: int = 65536) -> None:
        self._reader = reader
        self.max_len = max_len
        self._chunk = chunk
        self._buf = bytearray()

    def _parse(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "little")
        _check_length(length, self.max_len)
        if len(buf) < 4 + length:
            return None
        kind, flags = buf[4], buf[5]
        if flags != 0:
            raise ProtocolError(f"the server sent a frame with flags {flags} (must be 0)")
        frame = Frame(kind, int.from_bytes(buf[6:10], "little"), bytes(buf[10 : 4 + length]))
        del buf[: 4 + length]
        return frame

    async def next(self) -> Frame | None:
        """The next frame, or ``None`` at a clean end of the stream (between
        frames); see :func:`read_frame` for what is refused."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            data = await self._reader.read(self._chunk)
            if not data:
                if self._buf:
                    raise ProtocolError("the stream ended inside a frame")
                return None
            self._buf += data


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ProtocolError(
            f"the server sent a frame of length {length}, over this client's limit of {max_len}"
        )
    if length < LENGTH_OVERHEAD:
        raise ProtocolError(f"the server sent a malformed frame (length {length} < 6)")


async def read_frame(reader: asyncio.StreamReader, max_len: int) -> Frame | None:
    """One frame read exactly (nothing past it), for peers that hand the
    stream on: the next frame, or ``None`` at a clean end of the stream (between
    frames). A length over ``max_len`` or under 6, flags other than 0, or a
    stream ending inside a frame raise :class:`ProtocolError`; the length is
    checked before the rest is read, so a hostile length allocates nothing."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("the stream ended inside a frame's length") from None
    (length,) = struct.unpack("<I", head)
    _check_length(length, max_len)
    try:
        rest = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None
    kind, flags, frame_id = rest[0], rest[1], int.from_bytes(rest[2:6], "little")
    if flags != 0:
        raise ProtocolError(f"the server sent a frame with flags {flags} (must be 0)")
    return Frame(kind, frame_id, bytes(rest[6:]))
