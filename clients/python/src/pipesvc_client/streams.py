"""Streams and topics (PROTOCOL.md revision 2.2, "Streams", "Flow
control", "Topics"): the client's side of one stream (its items, both
directions' credit, its last answer), a :class:`Stream` for the app, and a
:class:`Subscription` that subscribes again after a reconnect.

Flow control keeps memory bounded: the server may send a stream's items
only within the credit this client granted (the HELLO reply's stream
window, then what was consumed, granted back once it is half the window),
so a stream holds at most one window plus one ITEM of unread items; an
ITEM past the credit ends the connection as a protocol error.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generic, TypeVar

from .errors import (
    ConnectionClosed,
    ErrorCode,
    PipesvcError,
    ProtocolError,
    RemoteError,
    RequestTooLarge,
    Timeout,
)
from .framing import Kind, frame_length
from .messages import (
    ENTRY_HEADER,
    ENTRY_ITEM,
    ENTRY_LAGGED,
    ENTRY_SUBSCRIBED,
    Encoding,
    item_payload,
    parse_entries,
)

if TYPE_CHECKING:
    from .client import Client
    from .connection import Connection

T = TypeVar("T")

#: The largest credit a receiver may leave its sender (2^31 - 1).
MAX_CREDIT = 0x7FFF_FFFF


@dataclass(frozen=True, slots=True)
class Lagged:
    """``count`` events of a topic were dropped here (the subscriber fell
    behind the topic's queue)."""

    count: int


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """The connection was lost and the topic subscribed again: events
    published in between were missed."""


Write = Callable[[int, int, bytes], None]


class Channel:
    """One stream on one connection: created by the connection before the
    CALL or SUBSCRIBE is sent, fed by its reader."""

    def __init__(
        self, stream_id: int, window: int, write: Write, answer: asyncio.Future[bytes],
        max_payload: int,
    ) -> None:
        self.id = stream_id
        self.window = window
        self._write = write
        #: The stream's last answer (RESPONSE payload, or the ERROR raised).
        self.answer = answer
        self._max_payload = max_payload
        self._entries: collections.deque[tuple[int, bytes]] = collections.deque()
        #: Bytes of ITEM payload the server may still send.
        self.server_credit = window
        #: Bytes of ITEM payload this client may still send.
        self.client_credit = window
        self._consumed = 0
        self.changed = asyncio.Event()
        #: Why the stream cannot go on (connection lost), else None.
        self.error: PipesvcError | None = None
        #: The most unread item bytes held at once (for measurements).
        self.peak_bytes = 0
        self._held = 0

    # -- from the reader ---------------------------------------------------

    def on_item(self, payload: bytes) -> None:
        """An ITEM from the server: checked against the credit, queued."""
        if self.server_credit <= 0:
            raise ProtocolError(
                f"flow control: the server sent an ITEM on stream {self.id} with no credit left"
            )
        entries = parse_entries(payload)
        self.server_credit -= len(payload)
        self._entries.extend(entries)
        self._held += len(payload)
        self.peak_bytes = max(self.peak_bytes, self._held)
        self.changed.set()

    def on_credit(self, payload: bytes) -> None:
        """A CREDIT from the server for this client's items."""
        if len(payload) < 4:
            raise ProtocolError(f"a CREDIT of {len(payload)} bytes (needs a u32)")
        self.client_credit += struct.unpack_from("<I", payload)[0]
        if self.client_credit > MAX_CREDIT:
            raise ProtocolError(f"flow control: credit past {MAX_CREDIT} on stream {self.id}")
        self.changed.set()

    def wake(self, error: PipesvcError | None = None) -> None:
        """The last answer arrived, or the connection ended (``error``)."""
        if error is not None and self.error is None:
            self.error = error
        self.changed.set()

    # -- for the app -------------------------------------------------------

    def _took(self, size: int) -> None:
        self._held -= size
        self._consumed += size
        if self._consumed * 2 >= self.window and not self.answer.done() and self.error is None:
            grant, self._consumed = self._consumed, 0
            self.server_credit += grant
            self._write(Kind.CREDIT, self.id, struct.pack("<I", grant))

    async def next_entry(self) -> tuple[int, bytes] | None:
        """The next entry, or ``None`` once the stream ended with a
        RESPONSE (its ERROR, or the connection's end, is raised)."""
        while True:
            if self._entries:
                kind, value = self._entries.popleft()
                self._took(ENTRY_HEADER + len(value))
                return kind, value
            if self.answer.done():
                self.answer.result()  # raises the stream's ERROR
                return None
            if self.error is not None:
                raise self.error
            self.changed.clear()
            await self.changed.wait()

    async def send(self, value: bytes) -> None:
        """Sends one item, waiting for credit (the server grants it as its
        method consumes)."""
        payload = item_payload([value])
        if frame_length(len(payload)) > self._max_payload:
            raise RequestTooLarge(
                f"an item of {len(value)} bytes does not fit the server's maximum frame"
            )
        while self.client_credit <= 0:
            if self.answer.done() or self.error is not None:
                break
            self.changed.clear()
            await self.changed.wait()
        if self.error is not None:
            raise self.error
        if self.answer.done():
            return  # the method already answered: what is sent now is ignored
        self._write(Kind.ITEM, self.id, payload)
        self.client_credit -= len(payload)


class Stream(Generic[T]):
    """A stream opened by :meth:`Client.stream`: ``async for item in
    stream`` yields the server's items (decoded), :meth:`send` and
    :meth:`end` upload the client's, :meth:`result` is the last answer.
    ``async with`` cancels it (CANCEL) if it is left before its end."""

    def __init__(self, channel: Channel, encoding: Encoding, cancel: Callable[[], None]) -> None:
        self._channel = channel
        self.encoding = encoding
        self._cancel = cancel
        self._ended_side = False

    @property
    def id(self) -> int:
        """The stream's id on its connection."""
        return self._channel.id

    @property
    def peak_unread_bytes(self) -> int:
        """The most item bytes this stream held unread at once."""
        return self._channel.peak_bytes

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        while (entry := await self._channel.next_entry()) is not None:
            if entry[0] == ENTRY_ITEM:
                yield self.encoding.decode(entry[1])

    async def send(self, item: Any) -> None:
        """Sends one item (client and bidirectional streams), waiting for
        credit."""
        if self._ended_side:
            raise PipesvcError("this stream's side was ended with end()")
        await self._channel.send(self.encoding.encode(item))

    async def end(self) -> None:
        """Sends END: no more items from this client."""
        if not self._ended_side and not self._channel.answer.done():
            self._channel._write(Kind.END, self._channel.id, b"")
        self._ended_side = True

    async def result(self) -> Any:
        """The stream's last answer (decoded), after reading (and dropping)
        any items not read yet; an ERROR is raised."""
        async for _ in self:
            pass
        return self.encoding.decode(await self._channel.answer)

    def cancel(self) -> None:
        """Stops the stream: CANCEL, unless it has ended."""
        if not self._channel.answer.done():
            self._cancel()

    async def __aenter__(self) -> "Stream[T]":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.cancel()


class Subscription(Generic[T]):
    """A topic subscription (:meth:`Client.subscribe`): ``async for item
    in subscription`` yields events (decoded), :class:`Lagged` where events
    were dropped, and :class:`Resubscribed` after a reconnect. Ends when
    the service closes the topic; ``close()`` unsubscribes."""

    def __init__(self, client: "Client", topic: str, encoding: Encoding) -> None:
        self._client = client
        self.topic = topic
        self.encoding = encoding
        self._channel: Channel | None = None
        self._cancel: Callable[[], None] = lambda: None
        self._conn: Connection | None = None
        self._closed = False
        self._resubscribed = False
        #: Subscriptions made so far (1, then one more per reconnect).
        self.subscriptions = 0

    async def open(self) -> None:
        """Subscribes on the client's current connection and waits (at most
        ``request_timeout``) for the ``subscribed`` entry; an ERROR (such as
        ``unknown method``) raises."""
        self._channel, self._cancel, self._conn = await self._client._subscribe_channel(
            self.topic, self.encoding
        )
        self.subscriptions += 1
        wait = self._client.options.request_timeout
        try:
            first = await asyncio.wait_for(self._channel.next_entry(), wait)
        except asyncio.TimeoutError:
            self._cancel()
            raise Timeout(f"the subscription to {self.topic!r}", wait or 0.0) from None
        if first is None or first[0] != ENTRY_SUBSCRIBED:
            raise ProtocolError(f"the subscription to {self.topic!r} did not start with subscribed")

    def __aiter__(self) -> AsyncIterator[T | Lagged | Resubscribed]:
        return self._events()

    async def _events(self) -> AsyncIterator[T | Lagged | Resubscribed]:
        while not self._closed:
            if self._resubscribed:
                self._resubscribed = False
                yield Resubscribed()
            assert self._channel is not None
            try:
                entry = await self._channel.next_entry()
            except ConnectionClosed:
                if self._closed or not self._client.options.reconnect:
                    raise
                await self._again()
                continue
            except RemoteError as e:
                # The connection's end (an ERROR with id 0), or the server's
                # GOODBYE ending every subscription with `shutting down`:
                # with reconnect on, subscribe again on the next connection.
                again = e.connection or e.code == ErrorCode.SHUTTING_DOWN
                if again and self._client.options.reconnect and not self._closed:
                    await self._again()
                    continue
                raise
            if entry is None:
                return
            kind, value = entry
            if kind == ENTRY_ITEM:
                yield self.encoding.decode(value)
            elif kind == ENTRY_LAGGED:
                yield Lagged(struct.unpack("<Q", value)[0])

    async def _again(self) -> None:
        """Subscribes again once the client has reconnected (on another
        connection than the one the subscription ended on)."""
        while True:
            await self._client._connection_after(self._conn)
            try:
                await self.open()
                self._resubscribed = True
                return
            except ConnectionClosed:
                continue
            except RemoteError as e:
                if e.code != ErrorCode.SHUTTING_DOWN:
                    raise
                # That server is stopping too: wait for the next one.

    def close(self) -> None:
        """Unsubscribes (CANCEL)."""
        self._closed = True
        if self._channel is not None and not self._channel.answer.done():
            self._cancel()

    async def __aenter__(self) -> "Subscription[T]":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()
