"""Notifications from a real ``pipesvc serve`` (SCENARIOS.md NOT-1)."""

from __future__ import annotations

from conftest import GUARD, Server
from pipesvc_client import Client, Message


async def test_the_greeting_notify_arrives(server: Server) -> None:
    """NOT-1: ``serve`` greets each client; a NOTIFY from the client is sent
    (and the connection carries on)."""
    async with await Client.connect(server.socket) as client:
        notifications = client.notifications()
        assert await notifications.recv(GUARD) == Message(b"Hello Pipe World")
        await client.notify(b"from python")
        assert await client.ping(b"after") == b"after"
        assert (await client.status()).bytes_in > 0
