"""Payloads of the frames: HELLO and the HELLO reply, CALL, ERROR, STATUS,
and the two encodings of typed values (PROTOCOL.md "Handshake", "CALL",
"Errors", "Status", "Encodings"). No I/O here."""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import msgpack

from .errors import ProtocolError, RemoteError, decode_text

MAGIC = b"PSVC"
#: The highest protocol version this client speaks.
PROTOCOL_VERSION = 2
#: Keys reserved for the protocol; a client does not send them.
RESERVED_METADATA_PREFIX = "pipesvc-"


class Encoding(enum.IntEnum):
    """Encodings of CALL params and results."""

    JSON = 1
    MSGPACK = 2

    def encode(self, value: Any) -> bytes:
        """``value`` (of the JSON data model) in this encoding."""
        if self is Encoding.JSON:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        """The value ``data`` holds in this encoding; empty is ``None``.
        Data that does not decode raises :class:`ProtocolError`."""
        if not data:
            return None
        try:
            if self is Encoding.JSON:
                return json.loads(data)
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as e:
            raise ProtocolError(f"a result that is not valid {self.name}: {e}") from None


@dataclass(frozen=True, slots=True)
class ServerHello:
    """What the server said of itself in its HELLO (and, on a version 2
    connection, its HELLO reply)."""

    #: The server name (untrusted text; show it with :func:`errors.escaped`).
    name: str
    #: The largest frame ``length`` the server accepts.
    max_frame_len: int
    #: The connection's version: 1 or 2.
    version: int = 1
    #: The encodings the server offers, in its order of preference (raw
    #: bytes: unknown ones kept as ints).
    encodings: tuple[int, ...] = ()
    #: The frame kinds the server accepts from a client (version 2).
    kinds: tuple[int, ...] = ()
    #: Initial credit of each stream direction, in bytes (revision 2.2
    #: servers; ``None`` from a server without streams).
    stream_window: int | None = None

    @property
    def streams(self) -> bool:
        """Whether the server speaks revision 2.2 (streams and topics)."""
        return self.stream_window is not None and 13 in self.kinds


def parse_hello(payload: bytes) -> ServerHello:
    """The server's first HELLO: magic, version 1, max frame length, name."""
    if len(payload) < 10 or payload[:4] != MAGIC:
        shown = payload[:16].hex(" ")
        raise ProtocolError(f"not a pipesvc server: its HELLO does not start with PSVC ({shown})")
    version, max_len = struct.unpack_from("<HI", payload, 4)
    if version != 1:
        raise ProtocolError(f"the server's HELLO names version {version}; the first HELLO is 1")
    return ServerHello(decode_text(payload[10:]), max_len)


#: The kinds this client accepts from a server (its HELLO's ``kinds``
#: field, revision 2.2): HELLO, RESPONSE, ERROR, NOTIFY, GOODBYE, PONG,
#: ITEM, CREDIT.
CLIENT_KINDS = bytes([1, 3, 4, 5, 6, 8, 13, 14])


def client_hello(version: int) -> bytes:
    """This client's HELLO payload: magic and the version it speaks; for
    version 2, the ``kinds`` field (revision 2.2; older servers ignore it)."""
    hello = MAGIC + struct.pack("<H", version)
    if version >= 2:
        hello += struct.pack("<BH", 2, len(CLIENT_KINDS)) + CLIENT_KINDS
    return hello


def parse_hello_reply(payload: bytes, first: ServerHello) -> ServerHello:
    """The HELLO reply of a version 2 connection: magic, version, then
    tag-length-value fields (unknown tags ignored; a field running past the
    end is a :class:`ProtocolError`)."""
    if len(payload) < 6 or payload[:4] != MAGIC:
        raise ProtocolError("the server's HELLO reply does not start with PSVC")
    (version,) = struct.unpack_from("<H", payload, 4)
    if version != 2:
        raise ProtocolError(f"the server's HELLO reply names version {version}, not 2")
    fields: dict[int, bytes] = {}
    at = 6
    while at < len(payload):
        if at + 3 > len(payload):
            raise ProtocolError("a field of the HELLO reply is cut short")
        tag, size = payload[at], struct.unpack_from("<H", payload, at + 1)[0]
        value = payload[at + 3 : at + 3 + size]
        if len(value) != size:
            raise ProtocolError(f"field {tag} of the HELLO reply runs past its end")
        fields.setdefault(tag, value)
        at += 3 + size
    window = None
    if 3 in fields:
        if len(fields[3]) != 4:
            raise ProtocolError("the HELLO reply's stream window is not a u32")
        (window,) = struct.unpack("<I", fields[3])
    return ServerHello(
        first.name,
        first.max_frame_len,
        version,
        tuple(fields.get(1, b"")),
        tuple(fields.get(2, b"")),
        window,
    )


def call_payload(
    method: str,
    encoding: int,
    timeout_ms: int,
    metadata: Mapping[str, str] | Sequence[tuple[str, str]],
    params: bytes,
) -> bytes:
    """A CALL payload. Keys starting ``pipesvc-`` are refused
    (``ValueError``), as are names, keys and values too long for their
    length fields."""
    name = method.encode()
    if len(name) > 255:
        raise ValueError(f"method name is {len(name)} bytes; at most 255")
    if not 0 <= timeout_ms <= 0xFFFF_FFFF:
        raise ValueError(f"timeout {timeout_ms} ms does not fit a u32")
    entries = list(metadata.items()) if isinstance(metadata, Mapping) else list(metadata)
    if len(entries) > 255:
        raise ValueError(f"{len(entries)} metadata entries; at most 255")
    out = bytearray(struct.pack("<BB", encoding, len(name)) + name)
    out += struct.pack("<IB", timeout_ms, len(entries))
    for key, value in entries:
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise ValueError(f"metadata key {key!r}: keys starting pipesvc- are reserved")
        k, v = key.encode(), value.encode()
        if len(k) > 255 or len(v) > 0xFFFF:
            raise ValueError(f"metadata entry {key!r} is too long (key 255, value 65535 bytes)")
        out += struct.pack("<B", len(k)) + k + struct.pack("<H", len(v)) + v
    return bytes(out + params)


def parse_error(payload: bytes, *, connection: bool) -> RemoteError:
    """An ERROR payload (u16 code, UTF-8 message) as a :class:`RemoteError`."""
    if len(payload) < 2:
        raise ProtocolError(f"an ERROR payload of {len(payload)} bytes (needs a u16 code)")
    (code,) = struct.unpack_from("<H", payload)
    return RemoteError(code, decode_text(payload[2:]), connection=connection)


@dataclass(frozen=True, slots=True)
class Status:
    """A server's counters, the answer to STATUS (PROTOCOL.md "Status")."""

    format: int
    uptime_ms: int
    connections_open: int
    connections_total: int
    requests_served: int
    bytes_in: int
    bytes_out: int
    #: ERROR frames sent, by code.
    errors: dict[int, int] = field(default_factory=dict)
    #: Requests answered ``cancelled`` (``None`` from a version 1 server).
    requests_cancelled: int | None = None
    #: Requests answered ``timed out`` (``None`` from a version 1 server).
    requests_timed_out: int | None = None
    #: Revision 2.2 counts (``None`` from older servers): streams open now,
    #: item entries sent, subscriptions open, events sent, events dropped.
    streams_open: int | None = None
    items_sent: int | None = None
    subscribers: int | None = None
    events_sent: int | None = None
    events_dropped: int | None = None


_STATUS_FIXED = struct.Struct("<HQQQQQQH")


def parse_status(payload: bytes) -> Status:
    """A STATUS answer; an unknown format or a short payload is a
    :class:`ProtocolError`; bytes after the known fields are ignored."""
    if len(payload) < 2:
        raise ProtocolError("a STATUS answer too short for its format")
    (fmt,) = struct.unpack_from("<H", payload)
    if fmt != 1:
        raise ProtocolError(f"a STATUS answer of format {fmt}; this client reads format 1")
    if len(payload) < _STATUS_FIXED.size:
        raise ProtocolError(f"a STATUS answer of {len(payload)} bytes; format 1 has 52 or more")
    fmt, uptime, open_, total, served, b_in, b_out, n = _STATUS_FIXED.unpack_from(payload)
    at = _STATUS_FIXED.size
    if len(payload) < at + 10 * n:
        raise ProtocolError(f"a STATUS answer announcing {n} error counts is cut short")
    errors = {}
    for _ in range(n):
        code, count = struct.unpack_from("<HQ", payload, at)
        errors[code] = count
        at += 10
    cancelled = timed_out = None
    if len(payload) >= at + 16:
        cancelled, timed_out = struct.unpack_from("<QQ", payload, at)
        at += 16
    push: tuple[int | None, ...] = (None,) * 5
    if len(payload) >= at + 40:
        push = struct.unpack_from("<5Q", payload, at)
    return Status(
        fmt, uptime, open_, total, served, b_in, b_out, errors, cancelled, timed_out, *push
    )


#: ITEM entry types (revision 2.2).
ENTRY_ITEM = 0
ENTRY_LAGGED = 1
ENTRY_SUBSCRIBED = 2
#: Bytes of an entry before its value: u8 type, u32 length.
ENTRY_HEADER = 5


def item_payload(values: Sequence[bytes]) -> bytes:
    """An ITEM payload carrying ``values`` as item entries (type 0)."""
    return b"".join(struct.pack("<BI", ENTRY_ITEM, len(v)) + v for v in values)


def parse_entries(payload: bytes) -> list[tuple[int, bytes]]:
    """The entries of an ITEM from the server, as (type, value). No entry,
    an entry running past the end, or a ``lagged`` value that is not 8
    bytes is a :class:`ProtocolError`; unknown types are kept (the caller
    ignores them)."""
    entries = []
    at = 0
    while at < len(payload):
        if at + ENTRY_HEADER > len(payload):
            raise ProtocolError("an ITEM entry's header is cut short")
        kind, size = struct.unpack_from("<BI", payload, at)
        value = payload[at + ENTRY_HEADER : at + ENTRY_HEADER + size]
        if len(value) != size:
            raise ProtocolError(f"an ITEM entry of {size} bytes runs past the end of its frame")
        if kind == ENTRY_LAGGED and size != 8:
            raise ProtocolError(f"a lagged entry of {size} bytes (must be 8)")
        entries.append((kind, value))
        at += ENTRY_HEADER + size
    if not entries:
        raise ProtocolError("an ITEM with no entry")
    return entries


def subscribe_payload(topic: str, encoding: int) -> bytes:
    """A SUBSCRIBE payload (``ValueError`` for a name of 0 or >255 bytes)."""
    name = topic.encode()
    if not 1 <= len(name) <= 255:
        raise ValueError(f"topic name is {len(name)} bytes; 1 to 255")
    return struct.pack("<BB", encoding, len(name)) + name
