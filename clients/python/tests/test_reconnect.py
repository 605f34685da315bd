"""Connection states, reconnect and bounded close against real servers
(SCENARIOS.md REC-*, TR-2, TR-3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import GUARD, ServeFactory, Server
from helpers import until_in_flight
from pipesvc_client import (
    Client,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    Message,
)


async def test_a_reconnecting_client_outlives_a_server_restart(serve: ServeFactory) -> None:
    """REC-1: the notification stream carries on across the restart (the
    second server's greeting arrives on it)."""
    server = await serve()
    async with await Client.connect(server.socket, reconnect=True) as client:
        notifications = client.notifications()
        assert await notifications.recv(GUARD) == Message(b"Hello Pipe World")
        await server.stop()
        await client.wait_for_state(ConnectionState.RECONNECTING, timeout=GUARD)
        await serve()
        await client.wait_for_state(ConnectionState.CONNECTED, timeout=GUARD)
        assert await client.call("echo", "again") == "again"
        assert await notifications.recv(GUARD) == Message(b"Hello Pipe World")
        assert client.connections == 2


async def test_without_reconnect_a_lost_connection_stays_lost(server: Server) -> None:
    """REC-2: calls fail at once; the notification stream ends."""
    async with await Client.connect(server.socket) as client:
        notifications = client.notifications()
        server.kill()
        await client.wait_for_state(ConnectionState.LOST, timeout=GUARD)
        with pytest.raises(ConnectionClosed):
            await client.call("echo", 1)
        items = [item async for item in notifications]
        assert items in ([], [Message(b"Hello Pipe World")])


async def test_calls_in_flight_at_a_loss_fail_and_are_not_resent(serve: ServeFactory) -> None:
    """REC-3: the new server never sees the lost call."""
    server = await serve()
    async with await Client.connect(server.socket, reconnect=True) as client:
        lost = asyncio.create_task(client.call("sleep", {"ms": 60_000}, timeout=None))
        await until_in_flight(client, 1)
        server.kill()
        with pytest.raises(ConnectionClosed):
            await lost
        await server.stop()
        await serve()
        await client.wait_for_state(ConnectionState.CONNECTED, timeout=GUARD)
        status = await client.status(timeout=GUARD)
        assert status.requests_served == 0 and status.connections_total == 1


async def test_close_with_a_long_call_in_flight_is_bounded(server: Server) -> None:
    """REC-4: close waits at most its close timeout, then aborts; the call
    fails with ConnectionClosed."""
    client = await Client.connect(server.socket, close_timeout=0.2)
    running = asyncio.create_task(client.call("sleep", {"ms": 60_000}, timeout=None))
    await until_in_flight(client, 1)
    await asyncio.wait_for(client.close(), GUARD)
    assert client.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosed):
        await running


async def test_connecting_to_nothing_fails_naming_the_endpoint(private_dir: Path) -> None:
    """TR-2."""
    socket = str(private_dir / "nobody.sock")
    with pytest.raises(ConnectError) as failed:
        await Client.connect(socket, connect_timeout=0.2)
    assert socket in str(failed.value)


async def test_a_client_started_before_its_service_waits_for_it(serve: ServeFactory, private_dir: Path) -> None:
    """TR-3."""
    connecting = asyncio.create_task(
        Client.connect(str(private_dir / "s.sock"), connect_timeout=0.1, wait_for_service=GUARD)
    )
    await serve()
    async with await connecting as client:
        assert await client.call("echo", "waited") == "waited"
