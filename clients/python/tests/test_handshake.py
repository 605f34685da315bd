"""The handshake against a real ``pipesvc serve`` (SCENARIOS.md HS-1, HS-2)."""

from __future__ import annotations

import pytest

from conftest import Server
from pipesvc_client import Client, Encoding, NotSupported
from pipesvc_client.framing import Kind


async def test_v2_handshake_reports_name_limit_encodings_and_kinds(serve: "object") -> None:
    """HS-1."""
    server: Server = await serve("--server-name", "py-test", "--max-frame-len", "65536")  # type: ignore[operator]
    async with await Client.connect(server.socket) as client:
        hello = client.server
        assert (hello.name, hello.max_frame_len, hello.version) == ("py-test", 65536, 2)
        assert hello.encodings == (Encoding.MSGPACK, Encoding.JSON)
        assert hello.kinds == (1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16)
        assert hello.streams and hello.stream_window == 262144


async def test_v1_connection_serves_requests_ping_and_status(server: Server) -> None:
    """HS-2: no HELLO reply; version 2 calls refused by the client itself."""
    async with await Client.connect(server.socket, version=1) as client:
        assert client.server.version == 1 and client.server.encodings == ()
        assert await client.request(b"v1") == b"v1"
        assert await client.ping(b"p") == b"p"
        status = await client.status()
        assert status.requests_served >= 1
        with pytest.raises(NotSupported):
            await client.call("echo", 1)
        with pytest.raises(NotSupported):
            await client.describe()
        with pytest.raises(NotSupported):
            await client.probe(Kind.DESCRIBE)
        assert await client.ping() == b""
