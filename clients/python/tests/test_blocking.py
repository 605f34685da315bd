"""The blocking facade against a real ``pipesvc serve``."""

from __future__ import annotations

import asyncio

import pytest

from conftest import GUARD, Server
from pipesvc_client import BlockingClient, ErrorCode, Message, RemoteError


async def test_the_blocking_facade_makes_every_kind_of_call(server: Server) -> None:
    """Runs in a worker thread, as a script would (its loop is its own)."""

    def script() -> None:
        with BlockingClient(server.socket) as client:
            assert client.next_notification(GUARD) == Message(b"Hello Pipe World")
            assert client.call("echo", {"k": [1, 2]}) == {"k": [1, 2]}
            assert client.request(b"bytes") == b"bytes"
            assert client.ping(b"p") == b"p"
            assert client.status().requests_served >= 2
            assert client.describe()["service"] == "pipesvc"
            client.notify(b"hi")
            with pytest.raises(RemoteError) as timed_out:
                client.call("sleep", {"ms": 60_000}, timeout=0.1)
            assert timed_out.value.code == ErrorCode.TIMED_OUT

    await asyncio.to_thread(script)
