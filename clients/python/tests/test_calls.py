"""Calls against a real ``pipesvc serve``: typed calls in both encodings,
byte requests, pipelining, PING, STATUS, DESCRIBE (SCENARIOS.md CALL-*)."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import Server
from pipesvc_client import Client, Encoding, ErrorCode

VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**53,
    1.5,
    "",
    "héllo \u2603",
    [1, "two", None],
    {"a": {"b": [1.25, False]}, "": "empty key"},
]


async def test_echo_round_trips_in_both_encodings(server: Server) -> None:
    """CALL-1."""
    async with await Client.connect(server.socket) as client:
        assert client.server.encodings[0] == Encoding.MSGPACK
        for encoding in (Encoding.JSON, Encoding.MSGPACK):
            for value in VALUES:
                assert await client.call("echo", value, encoding=encoding) == value
        assert await client.call("echo", {"default": 1}) == {"default": 1}


async def test_byte_requests_as_request_and_as_empty_method_call(server: Server) -> None:
    """CALL-2."""
    async with await Client.connect(server.socket) as client:
        assert await client.request(b"\x00\xffbytes") == b"\x00\xffbytes"
        metadata = {"traceparent": "00-abc-01"}
        assert await client.request(b"via call", metadata=metadata, timeout=5) == b"via call"


async def test_sixty_four_calls_in_flight_are_matched_by_id(server: Server) -> None:
    """CALL-4: the first sent sleeps longest, so answers come back in
    reverse order; each caller gets its own."""

    async def one(client: Client, index: int) -> tuple[int, Any]:
        await client.call("sleep", {"ms": (64 - index) * 3})
        return index, await client.call("echo", {"index": index})

    async with await Client.connect(server.socket) as client:
        sleeps = [client.call("sleep", {"ms": (64 - i) * 3}) for i in range(64)]
        assert await asyncio.gather(*sleeps) == [None] * 64
        answers = await asyncio.gather(*(one(client, i) for i in range(64)))
        assert all(value == {"index": index} for index, value in answers)
        requests = [client.request(str(i).encode()) for i in range(64)]
        assert await asyncio.gather(*requests) == [str(i).encode() for i in range(64)]


async def test_ping_returns_its_payload(server: Server) -> None:
    """CALL-5."""
    async with await Client.connect(server.socket) as client:
        assert await client.ping() == b""
        assert await client.ping(b"\x01payload") == b"\x01payload"


async def test_status_is_parsed_with_its_error_counts(server: Server) -> None:
    """CALL-6: one request, one unknown method; the counts say so."""
    async with await Client.connect(server.socket) as client:
        before = await client.status()
        assert before.format == 1 and before.connections_open >= 1
        await client.request(b"x")
        try:
            await client.call("no.such.method")
        except Exception:
            pass
        after = await client.status()
        assert after.requests_served == before.requests_served + 2
        assert after.errors.get(ErrorCode.UNKNOWN_METHOD, 0) == 1
        assert after.bytes_in > before.bytes_in and after.bytes_out > before.bytes_out
        assert after.requests_cancelled == 0 and after.requests_timed_out == 0
        assert after.uptime_ms >= before.uptime_ms


async def test_describe_lists_the_services_methods(server: Server) -> None:
    """CALL-7."""
    async with await Client.connect(server.socket) as client:
        description = await client.describe()
        assert description["service"] == "pipesvc" and description["protocol"] == 2
        assert description["encodings"] == ["msgpack", "json"]
        methods = {m["name"]: m for m in description["methods"]}
        assert {"echo", "sleep", "whoami"} <= set(methods)
        assert methods["sleep"]["request"]["required"] == ["ms"]
