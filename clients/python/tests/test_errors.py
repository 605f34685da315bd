"""Error codes from a real ``pipesvc serve`` (SCENARIOS.md ERR-2 to ERR-5, HS-5)."""

from __future__ import annotations

import pytest

from conftest import ServeFactory, Server
from pipesvc_client import Client, Encoding, ErrorCode, RemoteError, RequestTooLarge


async def test_unknown_method_and_bad_request_fail_only_that_call(server: Server) -> None:
    """ERR-2."""
    async with await Client.connect(server.socket) as client:
        with pytest.raises(RemoteError) as unknown:
            await client.call("no.such.method", {})
        assert unknown.value.code == ErrorCode.UNKNOWN_METHOD
        assert "no.such.method" in unknown.value.message and not unknown.value.connection
        for encoding in (Encoding.JSON, Encoding.MSGPACK):
            with pytest.raises(RemoteError) as bad:
                await client.call("sleep", {"ms": "x"}, encoding=encoding)
            assert bad.value.code == ErrorCode.BAD_REQUEST
            assert "params.ms" in bad.value.message
        assert await client.call("echo", "still here") == "still here"


async def test_a_method_the_policy_refuses_is_not_allowed(serve: ServeFactory) -> None:
    """ERR-3."""
    server = await serve("--allow", "same-user", "--allow", "echo=user:nobody")
    async with await Client.connect(server.socket) as client:
        with pytest.raises(RemoteError) as refused:
            await client.call("echo", 1)
        assert refused.value.code == ErrorCode.NOT_ALLOWED and "user:nobody" in refused.value.message
        assert await client.call("sleep", {"ms": 0}) is None


async def test_a_probe_of_an_unknown_kind_is_answered_unknown_kind(server: Server) -> None:
    """ERR-4."""
    async with await Client.connect(server.socket) as client:
        with pytest.raises(RemoteError) as unknown:
            await client.probe(200)
        assert unknown.value.code == ErrorCode.UNKNOWN_KIND and "200" in unknown.value.message
        assert await client.ping() == b""


async def test_a_request_over_the_servers_maximum_is_refused_before_sending(
    serve: ServeFactory,
) -> None:
    """ERR-5: nothing reaches the server (its bytes-in count does not move)."""
    server = await serve("--max-frame-len", "1024")
    async with await Client.connect(server.socket) as client:
        before = await client.status()
        with pytest.raises(RequestTooLarge):
            await client.request(b"x" * 1019)
        with pytest.raises(RequestTooLarge):
            await client.call("echo", "y" * 2000)
        assert await client.request(b"x" * 1018) == b"x" * 1018
        after = await client.status()
        assert after.bytes_in - before.bytes_in == 10 + 10 + 1018
        assert ErrorCode.FRAME_TOO_LARGE not in after.errors


async def test_a_server_at_its_connection_limit_refuses_with_overloaded(
    serve: ServeFactory,
) -> None:
    """HS-5."""
    server = await serve("--max-connections", "1")
    async with await Client.connect(server.socket):
        with pytest.raises(RemoteError) as refused:
            await Client.connect(server.socket)
        assert refused.value.code == ErrorCode.OVERLOADED and refused.value.connection
