"""A server's graceful stop, seen by the client (SCENARIOS.md BYE-1)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import GUARD, Server
from helpers import until_in_flight
from pipesvc_client import Client, ConnectionClosed, ConnectionState


async def test_sigterm_gives_goodbye_and_calls_in_flight_are_answered(server: Server) -> None:
    """BYE-1."""
    client = await Client.connect(server.socket)
    try:
        running = asyncio.create_task(client.call("sleep", {"ms": 1500}, timeout=None))
        await until_in_flight(client, 1)
        stopping = asyncio.create_task(server.stop())
        await client.wait_for_state(ConnectionState.GOODBYE, timeout=GUARD)
        with pytest.raises(ConnectionClosed):
            await client.call("echo", "too late")
        assert await running is None
        await client.wait_for_state(ConnectionState.LOST, timeout=GUARD)
        assert await stopping == 0
        with pytest.raises(ConnectionClosed) as lost:
            await client.ping()
        assert "GOODBYE" in str(lost.value)
    finally:
        await client.close()
