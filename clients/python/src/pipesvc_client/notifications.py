"""The NOTIFY frames a server pushes, and the bounded queue that carries
them from the connection's reader to the app.

The queue is bounded in items and in payload bytes (one notification is
always taken into an empty queue, whatever its size). What a full queue
does is the :class:`NotificationPolicy`, as in the Rust client: by default
the reader waits for room (nothing lost; the server is slowed through the
connection, and answers queue behind the notifications), or the
notification is dropped and the stream says so with :class:`Lagged`, or
notifications are ignored. Until the app asks for its notifications
(:meth:`Client.notifications`), the queue fills without waiting and what
does not fit is dropped and reported by a ``Lagged`` item, so that a
client that never reads them never stalls.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass
from typing import AsyncIterator

#: Default number of notifications buffered.
DEFAULT_NOTIFICATION_BUFFER = 256
#: Default payload bytes buffered.
DEFAULT_NOTIFICATION_BUFFER_BYTES = 4 << 20


class NotificationPolicy(enum.Enum):
    """What a full notification queue does with the next notification."""

    #: Wait for the app to take one (lossless; responses wait behind).
    BACKPRESSURE = "backpressure"
    #: Drop it; the stream yields :class:`Lagged` with the number lost.
    DROP_NEWEST = "drop-newest"
    #: Never buffer notifications at all.
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Message:
    """A NOTIFY payload from the server."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Lagged:
    """``count`` notifications were lost here (dropped or unread)."""

    count: int


#: One item of the notification stream.
Notification = Message | Lagged


class _Listening(enum.Enum):
    NOT_YET = 0
    YES = 1
    GONE = 2


class NotificationQueue:
    """The queue shared by the reader of each connection (across
    reconnects) and the app's :class:`Notifications` stream."""

    def __init__(self, policy: NotificationPolicy, max_items: int, max_bytes: int) -> None:
        self.policy = policy
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: collections.deque[Notification] = collections.deque()
        #: Payload bytes held now.
        self.bytes = 0
        #: The most payload bytes ever held at once (for measurements).
        self.peak_bytes = 0
        self._lost = 0
        self._listening = _Listening.NOT_YET
        self._ended = False
        self._available = asyncio.Event()
        self._room = asyncio.Event()

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_items and self.bytes + size <= self.max_bytes

    async def put(self, payload: bytes) -> None:
        """Queues a notification, following the policy when it is full."""
        while True:
            if self.policy is NotificationPolicy.IGNORE or self._listening is _Listening.GONE:
                return
            if self._fits(len(payload)):
                if self._lost:
                    self._items.append(Lagged(self._lost))
                    self._lost = 0
                self._items.append(Message(payload))
                self.bytes += len(payload)
                self.peak_bytes = max(self.peak_bytes, self.bytes)
                self._available.set()
                return
            if self._listening is _Listening.NOT_YET or self.policy is NotificationPolicy.DROP_NEWEST:
                self._lost += 1
                return
            self._room.clear()
            await self._room.wait()

    def end(self) -> None:
        """No more notifications will come (the client is closed)."""
        self._ended = True
        self._available.set()

    def listen(self) -> None:
        """The app takes the stream from now on."""
        if self._listening is _Listening.NOT_YET:
            self._listening = _Listening.YES

    def stop(self) -> None:
        """The app dropped the stream: buffer nothing more."""
        self._listening = _Listening.GONE
        self._items.clear()
        self.bytes = 0
        self._room.set()

    def get_nowait(self) -> Notification | None:
        """The next item if one is there now, else ``None``."""
        if self._items:
            item = self._items.popleft()
            if isinstance(item, Message):
                self.bytes -= len(item.payload)
            self._room.set()
            return item
        if self._lost:
            lost, self._lost = self._lost, 0
            return Lagged(lost)
        return None

    async def get(self) -> Notification | None:
        """The next item, or ``None`` once ended and drained."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._ended:
                return None
            self._available.clear()
            await self._available.wait()


class Notifications:
    """The server's notifications, in the order they arrived, with a
    :class:`Lagged` marker wherever some were lost: ``async for item in
    client.notifications()``. Ends when the client is closed (or its
    connection is lost without reconnect)."""

    def __init__(self, queue: NotificationQueue) -> None:
        self._queue = queue
        queue.listen()

    async def recv(self, timeout: float | None = None) -> Notification | None:
        """The next notification, or ``None`` once the stream has ended.
        ``timeout`` bounds the wait (``asyncio.TimeoutError`` past it)."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def try_recv(self) -> Notification | None:
        """The next notification if one is buffered now, else ``None``."""
        return self._queue.get_nowait()

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Notification]:
        while (item := await self._queue.get()) is not None:
            yield item

    def close(self) -> None:
        """Stops buffering notifications (they are discarded from now on)."""
        self._queue.stop()
