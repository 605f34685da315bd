"""Deadlines and cancellation against a real ``pipesvc serve``
(SCENARIOS.md DL-1, CAN-1, CAN-2)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Server
from helpers import until_in_flight
from pipesvc_client import Client, ErrorCode, RemoteError


async def test_the_server_stops_a_call_at_its_deadline(server: Server) -> None:
    """DL-1: the answer is the server's ``timed out`` (the client waits a
    grace longer), and the connection carries on."""
    async with await Client.connect(server.socket) as client:
        with pytest.raises(RemoteError) as timed_out:
            await client.call("sleep", {"ms": 60_000}, timeout=0.2)
        assert timed_out.value.code == ErrorCode.TIMED_OUT and not timed_out.value.connection
        assert (await client.status()).requests_timed_out == 1
        assert await client.call("echo", 1) == 1


async def test_a_cancelled_task_sends_cancel_and_the_server_counts_it(server: Server) -> None:
    """CAN-1."""
    async with await Client.connect(server.socket) as client:
        task = asyncio.create_task(client.call("sleep", {"ms": 60_000}, timeout=None))
        await until_in_flight(client, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = await client.status()
        assert status.requests_cancelled == 1
        assert status.errors.get(ErrorCode.CANCELLED) == 1
        assert await client.call("echo", "after") == "after"
        assert client.in_flight == 0


async def test_sixty_four_abandoned_calls_leave_the_connection_usable(server: Server) -> None:
    """CAN-2: 64 is ``serve``'s in-flight limit; cancelled, they free it."""
    async with await Client.connect(server.socket) as client:
        tasks = [
            asyncio.create_task(client.call("sleep", {"ms": 60_000}, timeout=None))
            for _ in range(64)
        ]
        await until_in_flight(client, 64)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert await client.call("echo", "usable", timeout=10) == "usable"
        assert (await client.status()).requests_cancelled == 64
