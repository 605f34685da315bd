"""One connection after its handshake: the reader task that routes answers
to their callers by id and NOTIFYs to the queue, and sending with ids that
are never reused while in flight (PROTOCOL.md "Ids", "Requests",
"CANCEL", "Closing")."""

from __future__ import annotations

import asyncio
from typing import Callable, Collection

from .errors import (
    ConnectionClosed,
    NotSupported,
    PipesvcError,
    ProtocolError,
    RequestTooLarge,
    Timeout,
    decode_text,
    escaped,
)
from .framing import Frame, FrameReader, Kind, encode_frame, frame_length
from .messages import ServerHello, parse_error
from .notifications import NotificationQueue
from .streams import Channel

_MAX_ID = 0xFFFF_FFFF
#: Bytes queued in the transport past which a call waits for room to send
#: (below it, writing never blocks and a call does not wait at all).
_DRAIN_ABOVE = 256 * 1024


class Ids:
    """Request ids: 1, 2, ... wrapping past ``0xFFFFFFFF`` to 1, never 0 and
    never an id still in ``in_use`` (PROTOCOL.md "Ids")."""

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self, in_use: Collection[int]) -> int:
        """The next id not in ``in_use``."""
        for _ in range(len(in_use) + 1):
            self.last = self.last % _MAX_ID + 1
            if self.last not in in_use:
                return self.last
        raise PipesvcError("no free request id")  # pragma: no cover - 4 billion in flight


class Connection:
    """A connected, handshaken stream. Calls are sent with
    :meth:`roundtrip`; every answer is matched by id; when the stream ends
    every call still waiting fails with the reason."""

    def __init__(
        self,
        reader: FrameReader,
        writer: asyncio.StreamWriter,
        server: ServerHello,
        *,
        queue: NotificationQueue,
        on_goodbye: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self.server = server
        self._reader = reader
        self._writer = writer
        self._queue = queue
        self._on_goodbye = on_goodbye
        #: id -> the caller's future, or None for an abandoned call whose
        #: answer has not arrived (its id stays reserved until then).
        self._pending: dict[int, asyncio.Future[bytes] | None] = {}
        self._ids = Ids()
        #: Streams in flight (revision 2.2), by id; their ids are in _pending too.
        self._streams: dict[int, Channel] = {}
        #: The GOODBYE reason once the server said GOODBYE.
        self.goodbye: str | None = None
        #: Why the connection ended (``None`` while it runs).
        self.error: PipesvcError | None = None
        self.ended = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered yet (abandoned ones included)."""
        return len(self._pending)

    def _new_id(self) -> int:
        return self._ids.next(self._pending)

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self.goodbye is not None:
            raise ConnectionClosed(
                f"the server said GOODBYE ({escaped(self.goodbye)!r}); no new requests"
            )

    def _write(self, kind: int, frame_id: int, payload: bytes) -> None:
        if frame_length(len(payload)) > self.server.max_frame_len:
            raise RequestTooLarge(
                f"a frame of length {frame_length(len(payload))} is over the server's"
                f" maximum of {self.server.max_frame_len}; nothing was sent"
            )
        self._writer.write(encode_frame(kind, frame_id, payload))

    async def send_one_way(self, kind: int, payload: bytes, timeout: float | None) -> None:
        """Sends a frame that gets no answer (NOTIFY), waiting at most
        ``timeout`` for room in the stream."""
        self._check_open()
        self._write(kind, 0, payload)
        await self._drain(timeout, "room to send")

    async def _drain(self, timeout: float | None, what: str) -> None:
        try:
            await asyncio.wait_for(self._writer.drain(), timeout)
        except asyncio.TimeoutError:
            raise Timeout(what, timeout or 0.0) from None
        except (ConnectionError, OSError) as e:
            raise self.error or ConnectionClosed(str(e)) from None

    async def roundtrip(
        self, kind: int, payload: bytes, timeout: float | None, *, cancel_on_abandon: bool
    ) -> bytes:
        """Sends a request of ``kind`` with a new id and returns its answer's
        payload (an ERROR raises :class:`RemoteError`). ``timeout`` bounds
        everything (room to send, the answer). A caller that gives up (its
        task is cancelled, or the timeout passes) leaves its id reserved
        until the answer comes and, with ``cancel_on_abandon``, sends
        CANCEL for it."""
        self._check_open()
        frame_id = self._new_id()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._write(kind, frame_id, payload)
        self._pending[frame_id] = future
        self._idle.clear()
        # A timer rather than wait_for: no task per call on the hot path.
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._expire, future, frame_id, timeout)
        try:
            if self._writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                await self._drain(timeout, "room to send")
            return await future
        except (Timeout, asyncio.CancelledError):
            self._abandon(frame_id, cancel_on_abandon)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _expire(future: asyncio.Future[bytes], frame_id: int, timeout: float) -> None:
        if not future.done():
            future.set_exception(Timeout(f"the answer to request {frame_id}", timeout))

    def _abandon(self, frame_id: int, cancel: bool) -> None:
        if frame_id not in self._pending:
            return
        self._pending[frame_id] = None
        channel = self._streams.pop(frame_id, None)
        if channel is not None:
            channel.wake(PipesvcError(f"stream {frame_id} was cancelled by this client"))
        if cancel and self.error is None:
            try:
                self._writer.write(encode_frame(Kind.CANCEL, frame_id))
            except (ConnectionError, OSError, RuntimeError):
                pass  # the connection is going away; the reader reports it

    def _write_frame(self, kind: int, frame_id: int, payload: bytes) -> None:
        """Writes a stream's frame (ITEM, CREDIT, END) unless the
        connection has ended."""
        if self.error is None:
            self._write(kind, frame_id, payload)

    def open_channel(
        self, kind: int, payload: bytes, timeout: float | None
    ) -> tuple[Channel, Callable[[], None]]:
        """Opens a stream (a CALL of a streaming method, or a SUBSCRIBE):
        returns its channel and the function that cancels it. Past
        ``timeout`` (plus the grace), the client gives up and sends CANCEL."""
        self._check_open()
        window = self.server.stream_window
        if window is None or not self.server.streams:
            raise NotSupported("streams and topics need a server of protocol revision 2.2")
        frame_id = self._new_id()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        # The app may never await a stream's answer (it stops reading):
        # its error is taken here, so that asyncio does not report it.
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        channel = Channel(frame_id, window, self._write_frame, future, self.server.max_frame_len)
        self._write(kind, frame_id, payload)
        self._pending[frame_id] = future
        self._streams[frame_id] = channel
        self._idle.clear()

        def cancel() -> None:
            self._abandon(frame_id, True)

        if timeout is not None:
            def expire() -> None:
                if not future.done():
                    channel.wake(Timeout(f"the end of stream {frame_id}", timeout))
                    cancel()

            timer = loop.call_later(timeout, expire)
            future.add_done_callback(lambda _f: timer.cancel())
        return channel, cancel

    def probe(self, kind: int) -> tuple[int, asyncio.Future[bytes]]:
        """Sends an empty frame of any ``kind`` with a new id, and returns
        the id and the future of its answer (used to probe for kinds)."""
        self._check_open()
        frame_id = self._new_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._write(kind, frame_id, b"")
        self._pending[frame_id] = future
        self._idle.clear()
        return frame_id, future

    async def _read_loop(self) -> None:
        error: PipesvcError
        try:
            while True:
                frame = await self._reader.next()
                if frame is None:
                    error = self._closed_cleanly()
                    break
                if frame.kind == Kind.NOTIFY:
                    await self._queue.put(frame.payload)
                else:
                    self._dispatch(frame)
        except PipesvcError as e:
            error = e
        except (ConnectionError, OSError) as e:
            error = ConnectionClosed(f"the connection was lost ({e})")
        except asyncio.CancelledError:
            error = ConnectionClosed("the client closed the connection")
        self._end(error)

    def _closed_cleanly(self) -> PipesvcError:
        if self.goodbye is not None:
            return ConnectionClosed(f"the server shut down (GOODBYE {escaped(self.goodbye)!r})")
        return ConnectionClosed("the server closed the connection")

    def _dispatch(self, frame: Frame) -> None:
        if frame.kind in (Kind.RESPONSE, Kind.PONG):
            self._answer(frame.id, frame.payload, None)
        elif frame.kind == Kind.ERROR:
            if frame.id == 0:
                raise parse_error(frame.payload, connection=True)
            self._answer(frame.id, b"", parse_error(frame.payload, connection=False))
        elif frame.kind == Kind.ITEM:
            channel = self._streams.get(frame.id)
            if channel is not None:
                channel.on_item(frame.payload)
            elif frame.id in self._pending:
                # Items of a stream this client does not read (a streaming
                # method called with call(), or a cancelled stream): given
                # back at once, so that the stream runs to its answer.
                self._write(Kind.CREDIT, frame.id, len(frame.payload).to_bytes(4, "little"))
        elif frame.kind == Kind.CREDIT:
            channel = self._streams.get(frame.id)
            if channel is not None:
                channel.on_credit(frame.payload)
        elif frame.kind == Kind.GOODBYE:
            self.goodbye = decode_text(frame.payload)
            self._on_goodbye(self.goodbye)
        else:
            raise ProtocolError(f"the server sent a frame of kind {frame.kind} (id {frame.id})")

    def _answer(self, frame_id: int, payload: bytes, error: PipesvcError | None) -> None:
        if frame_id not in self._pending:
            return  # an answer to no request of ours: ignored (the caller's deadline rules)
        future = self._pending.pop(frame_id)
        if future is not None and not future.done():
            if error is None:
                future.set_result(payload)
            else:
                future.set_exception(error)
        channel = self._streams.pop(frame_id, None)
        if channel is not None:
            channel.wake()
        if not self._pending:
            self._idle.set()

    def _end(self, error: PipesvcError) -> None:
        self.error = error
        for future in self._pending.values():
            if future is not None and not future.done():
                future.set_exception(error)
        self._pending.clear()
        for channel in self._streams.values():
            channel.wake(error)
        self._streams.clear()
        self._idle.set()
        self._writer.transport.abort()
        self.ended.set()

    def abort(self) -> None:
        """Ends the connection at once; calls in flight fail."""
        if not self._task.done():
            self._task.cancel()

    async def close(self, timeout: float) -> None:
        """Waits up to ``timeout`` for the answers in flight, then closes
        (aborting what is left)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), max(timeout, 0.1))
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        self.abort()
        await asyncio.gather(self._task, return_exceptions=True)
