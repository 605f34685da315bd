"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio

from pipesvc_client import Client


async def until_in_flight(client: Client, count: int) -> None:
    """Yields to the event loop until ``count`` calls of ``client`` have
    been written (each call writes its frame before its first suspension,
    so this only lets the tasks already scheduled run; no time passes)."""
    for _ in range(10_000):
        if client.in_flight >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{client.in_flight} calls in flight, expected {count}")
