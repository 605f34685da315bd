"""The notification queue's policies, on their own (the flood against a
connection is in test_rogue.py)."""

from __future__ import annotations

import asyncio

from pipesvc_client import Lagged, Message, NotificationPolicy
from pipesvc_client.notifications import NotificationQueue, Notifications


async def test_backpressure_waits_for_room_and_loses_nothing() -> None:
    """A full queue holds the putter until the app takes one."""
    queue = NotificationQueue(NotificationPolicy.BACKPRESSURE, max_items=2, max_bytes=1 << 20)
    stream = Notifications(queue)
    await queue.put(b"1")
    await queue.put(b"2")
    third = asyncio.create_task(queue.put(b"3"))
    await asyncio.sleep(0)
    assert not third.done()
    assert await stream.recv() == Message(b"1")
    await asyncio.wait_for(third, 10)
    queue.end()
    assert [item async for item in stream] == [Message(b"2"), Message(b"3")]


async def test_before_the_stream_is_taken_overflow_is_dropped_and_counted() -> None:
    """A client that has not asked never stalls; the loss is reported."""
    queue = NotificationQueue(NotificationPolicy.BACKPRESSURE, max_items=2, max_bytes=1 << 20)
    for i in range(5):
        await queue.put(b"%d" % i)
    stream = Notifications(queue)
    queue.end()
    assert [item async for item in stream] == [Message(b"0"), Message(b"1"), Lagged(3)]


async def test_the_byte_bound_holds_and_one_large_item_always_fits() -> None:
    """Bytes are bounded, but an empty queue takes any one notification."""
    queue = NotificationQueue(NotificationPolicy.DROP_NEWEST, max_items=100, max_bytes=10)
    stream = Notifications(queue)
    await queue.put(b"x" * 50)
    await queue.put(b"y")
    assert queue.bytes == 50 and stream.try_recv() == Message(b"x" * 50)
    await queue.put(b"z" * 4)
    assert stream.try_recv() == Lagged(1) and stream.try_recv() == Message(b"z" * 4)


async def test_ignore_and_a_closed_stream_buffer_nothing() -> None:
    """IGNORE never buffers; a closed stream stops buffering."""
    ignoring = NotificationQueue(NotificationPolicy.IGNORE, 10, 100)
    await ignoring.put(b"a")
    assert ignoring.bytes == 0 and ignoring.get_nowait() is None
    queue = NotificationQueue(NotificationPolicy.BACKPRESSURE, 1, 100)
    stream = Notifications(queue)
    await queue.put(b"a")
    stream.close()
    await asyncio.wait_for(queue.put(b"b"), 10)
    assert queue.get_nowait() is None
