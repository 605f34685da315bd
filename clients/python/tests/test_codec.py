"""Frames and payloads byte for byte against PROTOCOL.md's examples
(SCENARIOS.md CALL-3, ERR-1, ERR-8)."""

from __future__ import annotations

import struct

import pytest

from pipesvc_client import ErrorCode, RemoteError, escaped
from pipesvc_client.connection import Ids
from pipesvc_client.errors import code_name
from pipesvc_client.framing import Kind, encode_frame
from pipesvc_client.messages import (
    Encoding,
    ServerHello,
    call_payload,
    client_hello,
    parse_error,
    parse_hello,
    parse_hello_reply,
    parse_status,
)


def hex_bytes(text: str) -> bytes:
    """Bytes written as in PROTOCOL.md (hex pairs separated by spaces)."""
    return bytes.fromhex(text)


def test_a_call_is_encoded_as_in_the_protocol_example() -> None:
    """CALL-3: the two CALLs of "A complete exchange, version 2"."""
    echo = call_payload("echo", Encoding.JSON, 5000, {}, Encoding.JSON.encode({"a": 1}))
    assert encode_frame(Kind.CALL, 1, echo) == hex_bytes(
        "18 00 00 00 0a 00 01 00 00 00 01 04 65 63 68 6f 88 13 00 00 00 7b 22 61 22 3a 31 7d"
    )
    sleep = call_payload("sleep", Encoding.JSON, 0, [("trace", "ab")], b'{"ms":60000}')
    assert encode_frame(Kind.CALL, 2, sleep) == hex_bytes(
        "28 00 00 00 0a 00 02 00 00 00 01 05 73 6c 65 65 70 00 00 00 00 01 05 74 72 61 63 65"
        " 02 00 61 62 7b 22 6d 73 22 3a 36 30 30 30 30 7d"
    )
    with pytest.raises(ValueError, match="reserved"):
        call_payload("echo", 1, 0, {"pipesvc-x": "1"}, b"")
    assert encode_frame(Kind.REQUEST, 0x01020304, b"hi") == hex_bytes(
        "08 00 00 00 02 00 04 03 02 01 68 69"
    )
    # The client's HELLO of "A complete exchange, revision 2.2" (its kinds
    # field is ignored by servers before 2.2), and a version 1 HELLO.
    assert encode_frame(Kind.HELLO, 0, client_hello(2)) == hex_bytes(
        "17 00 00 00 01 00 00 00 00 00 50 53 56 43 02 00 02 08 00 01 03 04 05 06 08 0d 0e"
    )
    assert encode_frame(Kind.HELLO, 0, client_hello(1)) == hex_bytes(
        "0c 00 00 00 01 00 00 00 00 00 50 53 56 43 01 00"
    )


def test_the_hello_and_reply_of_the_example_parse() -> None:
    """HS-1 at the byte level: the example's HELLO and HELLO reply."""
    hello = parse_hello(hex_bytes("50 53 56 43 01 00 00 00 80 00 70 69 70 65 73 76 63"))
    assert hello == ServerHello("pipesvc", 8388608)
    reply = parse_hello_reply(
        hex_bytes("50 53 56 43 02 00 01 02 00 02 01 02 08 00 01 02 05 07 09 0a 0b 0c 09 01 00 ff"),
        hello,
    )
    assert reply.encodings == (2, 1) and reply.kinds == (1, 2, 5, 7, 9, 10, 11, 12)


def test_every_error_code_has_its_name_and_unknown_codes_stay_numbers() -> None:
    """ERR-1."""
    names = [code_name(code) for code in range(1, 17)]
    assert names == [
        "malformed frame", "frame too large", "unsupported version", "unknown kind",
        "handler failed", "overloaded", "shutting down", "timed out", "unexpected frame",
        "duplicate id", "not allowed", "unknown method", "bad request", "cancelled",
        "too slow", "flow control",
    ]
    reserved = parse_error(struct.pack("<H", 17) + b"future", connection=False)
    assert reserved.code == 17 and reserved.name == "unknown error 17"
    service = RemoteError(1000, "mine")
    assert service.code == 1000 and service.name == "service error 1000"
    assert parse_error(b"\x0e\x00cancelled", connection=False).code is ErrorCode.CANCELLED
    assert escaped("a\x1b[2Jb\u202e") == "a\\x1b[2Jb\\u202e"


def test_ids_skip_zero_and_ids_in_flight() -> None:
    """ERR-8."""
    ids = Ids(last=0xFFFF_FFFE)
    in_flight = {0xFFFF_FFFF: None, 1: None, 2: None}
    assert ids.next(in_flight) == 3
    assert Ids().next({}) == 1


def test_a_status_answer_is_parsed_and_bad_ones_refused() -> None:
    """CALL-6 at the byte level."""
    fixed = struct.pack("<HQQQQQQH", 1, 5, 1, 2, 3, 4, 5, 1) + struct.pack("<HQ", 12, 7)
    status = parse_status(fixed + struct.pack("<QQ", 8, 9) + b"later fields")
    assert (status.errors, status.requests_cancelled, status.requests_timed_out) == ({12: 7}, 8, 9)
    assert parse_status(fixed).requests_cancelled is None
    from pipesvc_client import ProtocolError

    with pytest.raises(ProtocolError, match="format 2"):
        parse_status(struct.pack("<H", 2) + fixed[2:])
    with pytest.raises(ProtocolError, match="cut short"):
        parse_status(fixed[:-4])


async def test_frames_are_reassembled_by_their_length_never_by_reads() -> None:
    """Frames split byte by byte, several in one read, a length over the
    limit refused from its 4 bytes, a stream ending inside a frame."""
    import asyncio

    from pipesvc_client import ProtocolError
    from pipesvc_client.framing import Frame, FrameReader

    wire = encode_frame(Kind.NOTIFY, 0, b"one") + encode_frame(Kind.RESPONSE, 7, b"x" * 300)
    for chunk in (1, 3, len(wire)):
        stream = asyncio.StreamReader()
        for at in range(0, len(wire), chunk):
            stream.feed_data(wire[at : at + chunk])
        stream.feed_eof()
        frames = FrameReader(stream, 1024, chunk=chunk)
        assert await frames.next() == Frame(Kind.NOTIFY, 0, b"one")
        assert await frames.next() == Frame(Kind.RESPONSE, 7, b"x" * 300)
        assert await frames.next() is None
    huge = asyncio.StreamReader()
    huge.feed_data(struct.pack("<I", 1025))
    with pytest.raises(ProtocolError, match="over this client's limit of 1024"):
        await FrameReader(huge, 1024).next()
    cut = asyncio.StreamReader()
    cut.feed_data(wire[:18])
    cut.feed_eof()
    reader = FrameReader(cut, 1024)
    assert await reader.next() == Frame(Kind.NOTIFY, 0, b"one")
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        await reader.next()
