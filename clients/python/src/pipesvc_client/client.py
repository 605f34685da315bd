"""The asyncio client: connect, typed calls, byte requests, PING, STATUS,
DESCRIBE, notifications, connection states and reconnect.

Every wait is bounded (see :class:`ClientOptions`): reaching the server,
the handshake, each call, closing. A caller whose task is cancelled while
it awaits a call makes the client send CANCEL for it.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from .endpoint import Endpoint
from .errors import (
    ConfigError,
    ConnectError,
    ConnectionClosed,
    ErrorCode,
    NotSupported,
    PipesvcError,
    ProtocolError,
    RemoteError,
    Timeout,
    WrongServer,
)
from .framing import DEFAULT_MAX_FRAME_LEN, HANDSHAKE_FRAME_LEN, FrameReader, Kind
from .handshake import handshake
from .identity import PeerCredentials, ServerIdentity
from .connection import Connection
from .messages import (
    PROTOCOL_VERSION,
    Encoding,
    ServerHello,
    Status,
    call_payload,
    parse_status,
    subscribe_payload,
)
from .streams import Channel, Stream, Subscription
from .notifications import (
    DEFAULT_NOTIFICATION_BUFFER,
    DEFAULT_NOTIFICATION_BUFFER_BYTES,
    NotificationPolicy,
    NotificationQueue,
    Notifications,
)
from .transport import open_stream

#: How much longer than a CALL's deadline the client waits, so that it gets
#: the server's ``timed out`` rather than giving up first (as the Rust client).
DEADLINE_GRACE = 0.5
#: First and longest pause between two reconnect attempts.
RECONNECT_BACKOFF_MIN = 0.05
RECONNECT_BACKOFF_MAX = 5.0


class _Default(enum.Enum):
    TOKEN = 0


#: "Use the client's ``request_timeout``" (the default of every call's ``timeout``).
DEFAULT = _Default.TOKEN
#: A call's ``timeout``: seconds, ``None`` (no limit) or :data:`DEFAULT`.
TimeoutArg = float | None | _Default


@dataclass(frozen=True)
class ClientOptions:
    """How a :class:`Client` connects. Every wait has a limit:

    ============================================  ===========================
    wait                                          bounded by
    ============================================  ===========================
    reaching the server (retried while absent)    ``connect_timeout`` (5 s)
    the handshake, from the stream connected      ``handshake_timeout`` (5 s)
    a request, PING, STATUS, DESCRIBE             ``request_timeout`` (30 s)
                                                  or the call's own
    a typed call                                  its deadline + 0.5 s grace
    a NOTIFY (room to send)                       ``request_timeout``
    :meth:`Client.close` (answers in flight)      ``close_timeout`` (5 s)
    each reconnect attempt                        connect + handshake timeouts
    ============================================  ===========================

    Only a ``request_timeout`` of ``None`` (or a call's own ``None``)
    waits without limit.
    """

    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    request_timeout: float | None = 30.0
    close_timeout: float = 5.0
    #: The largest frame ``length`` this client accepts from the server;
    #: a larger one ends the connection (checked from its length alone).
    max_frame_len: int = DEFAULT_MAX_FRAME_LEN
    #: The protocol version to speak: 2 (default) or 1.
    version: int = PROTOCOL_VERSION
    #: The encoding of typed calls when the server offers it.
    encoding: Encoding = Encoding.MSGPACK
    notification_policy: NotificationPolicy = NotificationPolicy.BACKPRESSURE
    notification_buffer: int = DEFAULT_NOTIFICATION_BUFFER
    notification_buffer_bytes: int = DEFAULT_NOTIFICATION_BUFFER_BYTES
    #: Connect again in the background when the connection is lost (or
    #: after GOODBYE), from 50 ms doubling to 5 s between attempts. Calls
    #: in flight at the loss fail with :class:`ConnectionClosed` and are
    #: never sent again; calls made meanwhile wait (within their timeout).
    reconnect: bool = False
    #: How long the first connect waits for a service that is not there
    #: yet (retrying like a reconnect); 0: not beyond ``connect_timeout``.
    wait_for_service: float = 0.0
    server_identity: ServerIdentity = field(default_factory=ServerIdentity)

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming a setting that cannot work."""
        for name in ("connect_timeout", "handshake_timeout", "close_timeout"):
            if getattr(self, name) <= 0 and name != "close_timeout":
                raise ConfigError(f"{name} must be positive")
        if self.close_timeout < 0 or self.wait_for_service < 0:
            raise ConfigError("close_timeout and wait_for_service cannot be negative")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError("request_timeout must be positive (or None for no limit)")
        if self.version not in (1, 2):
            raise ConfigError(f"version {self.version}: this client speaks 1 and 2")
        if self.max_frame_len < HANDSHAKE_FRAME_LEN:
            raise ConfigError(f"max_frame_len must be at least {HANDSHAKE_FRAME_LEN}")
        if self.notification_buffer < 1 or self.notification_buffer_bytes < 1:
            raise ConfigError("notification_buffer and notification_buffer_bytes must be >= 1")


class ConnectionState(enum.Enum):
    """Where a client's connection is."""

    CONNECTED = "connected"
    #: The server said GOODBYE: answers to earlier calls still arrive, new
    #: calls wait for a reconnect (or fail without one).
    GOODBYE = "goodbye"
    #: Lost; connecting again in the background.
    RECONNECTING = "reconnecting"
    #: Lost, and reconnect is off: calls fail with :class:`ConnectionClosed`.
    LOST = "lost"
    #: Closed by the app.
    CLOSED = "closed"


#: A ``wait_for_state`` call: the states it waits for, resolved with the
#: first of them the client enters.
StateWaiter = tuple[tuple[ConnectionState, ...], "asyncio.Future[ConnectionState]"]


def _retryable(error: BaseException) -> bool:
    """Whether waiting for the service can fix ``error``."""
    if isinstance(error, RemoteError):
        return error.code in (ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN)
    if isinstance(error, WrongServer):
        return False
    return isinstance(error, (ConnectError, ConnectionClosed, Timeout))


class Client:
    """An asyncio client of one pipesvc service.

    >>> async with await Client.connect("myservice") as client:  # doctest: +SKIP
    ...     print(await client.call("echo", {"a": 1}))
    """

    def __init__(self, endpoint: Endpoint, options: ClientOptions) -> None:
        """Use :meth:`connect`."""
        self.endpoint = endpoint
        self.options = options
        self._queue = NotificationQueue(
            options.notification_policy,
            options.notification_buffer,
            options.notification_buffer_bytes,
        )
        self._conn: Connection | None = None
        self._state = ConnectionState.LOST
        self._changed = asyncio.Event()
        # wait_for_state's waiters, each resolved by the first state it asked
        # for: a transition is seen even when the state has moved on before
        # the waiter runs (GOODBYE and the close read together).
        self._state_waiters: list[StateWaiter] = []
        self._supervisor: asyncio.Task[None] | None = None
        #: The server process as the kernel reported it at the last connect.
        self.peer: PeerCredentials | None = None
        #: Connections made so far (1 after connect; more after reconnects).
        self.connections = 0

    @classmethod
    async def connect(
        cls, name: str | Endpoint, options: ClientOptions | None = None, **settings: Any
    ) -> "Client":
        """Connects to the service ``name`` (a bare name, a socket path or a
        pipe name; see PROTOCOL.md "Transport"). ``settings`` override
        fields of ``options``."""
        opts = replace(options or ClientOptions(), **settings)
        opts.validate()
        endpoint = name if isinstance(name, Endpoint) else Endpoint.from_name(name)
        client = cls(endpoint, opts)
        await client._first_connect()
        return client

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's state now."""
        return self._state

    @property
    def server(self) -> ServerHello:
        """What the server said of itself at the last handshake."""
        if self._conn is None:
            raise ConnectionClosed("not connected")
        return self._conn.server

    @property
    def in_flight(self) -> int:
        """Calls sent on the current connection and not answered yet
        (abandoned ones included: their ids stay reserved until answered)."""
        return 0 if self._conn is None else self._conn.in_flight

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()
        for wanted, reached in self._state_waiters:
            if state in wanted and not reached.done():
                reached.set_result(state)

    async def wait_for_state(self, *states: ConnectionState, timeout: float) -> ConnectionState:
        """Waits until the state is one of ``states`` (at most ``timeout``
        s) and returns it: the current state, or the first of ``states`` the
        client enters, even if it has left it again by the time the waiter
        runs."""
        if self._state in states:
            return self._state
        reached: asyncio.Future[ConnectionState] = asyncio.get_running_loop().create_future()
        waiter = (states, reached)
        self._state_waiters.append(waiter)
        try:
            return await asyncio.wait_for(reached, timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"state {' or '.join(s.value for s in states)}", timeout) from None
        finally:
            self._state_waiters.remove(waiter)

    # -- connecting --------------------------------------------------------

    async def _open(self) -> Connection:
        opts = self.options
        reader, writer, peer = await open_stream(
            self.endpoint, opts.connect_timeout, opts.server_identity
        )
        frames = FrameReader(reader, opts.max_frame_len)
        try:
            hello = await handshake(
                frames, writer, version=opts.version, timeout=opts.handshake_timeout
            )
        except BaseException:
            writer.transport.abort()
            raise
        self.peer = peer
        self.connections += 1
        return Connection(
            frames,
            writer,
            hello,
            queue=self._queue,
            on_goodbye=lambda _reason: self._set_state(ConnectionState.GOODBYE),
        )

    async def _first_connect(self) -> None:
        wait = self.options.wait_for_service
        deadline = time.monotonic() + wait
        pause = RECONNECT_BACKOFF_MIN
        while True:
            try:
                self._conn = await self._open()
                break
            except PipesvcError as e:
                if wait <= 0 or not _retryable(e) or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_BACKOFF_MAX)
        self._set_state(ConnectionState.CONNECTED)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        """Follows the connection: when it ends, reconnects (with reconnect
        on) or marks the client lost."""
        while True:
            conn = self._conn
            assert conn is not None
            await conn.ended.wait()
            if self._state is ConnectionState.CLOSED:
                return
            if not self.options.reconnect:
                self._set_state(ConnectionState.LOST)
                self._queue.end()
                return
            self._set_state(ConnectionState.RECONNECTING)
            self._conn = await self._reconnect()
            self._set_state(ConnectionState.CONNECTED)

    async def _reconnect(self) -> Connection:
        pause = RECONNECT_BACKOFF_MIN
        while True:
            try:
                return await self._open()
            except (PipesvcError, OSError):
                pass  # absent, restarting, refusing for now, wrong: try again
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_BACKOFF_MAX)

    async def _connection(self, deadline: float | None) -> Connection:
        """The live connection, waiting for a reconnect until ``deadline``
        (a ``time.monotonic()`` value)."""
        while True:
            state, conn = self._state, self._conn
            if state is ConnectionState.CONNECTED and conn is not None:
                return conn
            if state is ConnectionState.CLOSED:
                raise ConnectionClosed("the client was closed")
            if state is ConnectionState.LOST or not self.options.reconnect:
                if conn is not None and conn.error is not None:
                    raise conn.error
                raise ConnectionClosed(f"the connection is {state.value}")
            changed = self._changed
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout("a reconnect to the server", 0.0)
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                raise Timeout("a reconnect to the server", left or 0.0) from None

    async def _connection_after(self, old: Connection | None) -> Connection:
        """The live connection once it is another than ``old`` (a
        connection that said GOODBYE, or is ending): waits for the
        reconnect."""
        while True:
            changed = self._changed
            conn = await self._connection(None)
            if conn is not old:
                return conn
            await changed.wait()

    # -- calls -------------------------------------------------------------

    def _timeout(self, timeout: TimeoutArg) -> float | None:
        if timeout is DEFAULT:
            return self.options.request_timeout
        if timeout is not None and timeout <= 0:
            raise ConfigError("a call's timeout must be positive (or None for no limit)")
        return timeout

    async def _roundtrip(
        self, kind: int, payload: bytes, wait: float | None, *, cancel: bool, v2: bool = False
    ) -> bytes:
        deadline = None if wait is None else time.monotonic() + wait
        conn = await self._connection(deadline)
        if v2 and conn.server.version < 2:
            raise NotSupported(f"{Kind(kind).name} needs protocol version 2; this connection is 1")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await conn.roundtrip(kind, payload, left, cancel_on_abandon=cancel)

    def _encoding(self, wanted: Encoding | None) -> Encoding:
        offered = self.server.encodings
        if wanted is not None:
            if wanted not in offered:
                raise NotSupported(f"the server does not offer {wanted.name} (it offers {offered})")
            return wanted
        if self.options.encoding in offered:
            return self.options.encoding
        for byte in offered:
            if byte in (Encoding.JSON, Encoding.MSGPACK):
                return Encoding(byte)
        raise NotSupported(f"the server offers no encoding this client knows ({offered})")

    async def call_raw(
        self,
        method: str,
        params: bytes = b"",
        *,
        encoding: int,
        timeout: TimeoutArg = DEFAULT,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A CALL with params already encoded; returns the result's bytes.
        The deadline (``timeout`` s, sent in the CALL) is the server's to
        enforce; the client waits 0.5 s longer, then sends CANCEL."""
        limit = self._timeout(timeout)
        timeout_ms = 0 if limit is None else max(1, round(limit * 1000))
        payload = call_payload(method, encoding, timeout_ms, metadata, params)
        wait = None if limit is None else limit + DEADLINE_GRACE
        return await self._roundtrip(Kind.CALL, payload, wait, cancel=True, v2=True)

    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: TimeoutArg = DEFAULT,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        encoding: Encoding | None = None,
    ) -> Any:
        """Calls the typed method ``method`` with ``params`` (a value of the
        JSON data model) and returns its result. Errors of the call raise
        :class:`RemoteError` (``unknown method``, ``bad request``, ``timed
        out``...); the connection carries on."""
        if self._conn is not None and self._conn.server.version < 2:
            raise NotSupported("typed calls need protocol version 2; this connection is 1")
        chosen = self._encoding(encoding)
        raw = await self.call_raw(
            method, chosen.encode(params), encoding=chosen, timeout=timeout, metadata=metadata
        )
        return chosen.decode(raw)

    async def request(
        self,
        payload: bytes,
        *,
        timeout: TimeoutArg = DEFAULT,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> bytes:
        """A byte request to the service's byte handler. Without metadata it
        is a REQUEST (both versions; ``timeout`` is the client's wait); with
        metadata, a CALL of the empty method that carries the deadline."""
        if metadata is not None:
            return await self.call_raw("", payload, encoding=0, timeout=timeout, metadata=metadata)
        wait = self._timeout(timeout)
        return await self._roundtrip(Kind.REQUEST, payload, wait, cancel=True)

    async def stream(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        encoding: Encoding | None = None,
    ) -> Stream[Any]:
        """Opens a stream: a CALL of a streaming method (revision 2.2).
        Iterate it for the server's items; ``send``/``end`` upload items;
        ``result()`` is its last answer. ``timeout`` (default: none) is the
        whole stream's deadline, sent in the CALL. The connection's wait
        is bounded by ``request_timeout``."""
        chosen = self._encoding(encoding)
        timeout_ms = 0 if timeout is None else max(1, round(timeout * 1000))
        payload = call_payload(method, chosen, timeout_ms, metadata, chosen.encode(params))
        conn = await self._connection(self._deadline())
        wait = None if timeout is None else timeout + DEADLINE_GRACE
        channel, cancel = conn.open_channel(Kind.CALL, payload, wait)
        return Stream(channel, chosen, cancel)

    async def subscribe(self, topic: str, *, encoding: Encoding | None = None) -> Subscription[Any]:
        """Subscribes to ``topic`` (revision 2.2) and waits (at most
        ``request_timeout``) until the server confirms. With reconnect on,
        the subscription is made again after a reconnect and yields
        :class:`Resubscribed` there."""
        subscription: Subscription[Any] = Subscription(self, topic, self._encoding(encoding))
        await subscription.open()
        return subscription

    def _deadline(self) -> float | None:
        wait = self.options.request_timeout
        return None if wait is None else time.monotonic() + wait

    async def _subscribe_channel(
        self, topic: str, encoding: Encoding
    ) -> tuple[Channel, "Callable[[], None]", Connection]:
        """A SUBSCRIBE on the current connection; its channel, cancel and
        that connection."""
        conn = await self._connection(self._deadline())
        channel, cancel = conn.open_channel(Kind.SUBSCRIBE, subscribe_payload(topic, encoding), None)
        return channel, cancel, conn

    async def ping(self, payload: bytes = b"", *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """PING; returns the PONG's payload (the server repeats it)."""
        wait = self._timeout(timeout)
        return await self._roundtrip(Kind.PING, payload, wait, cancel=False)

    async def status(self, *, timeout: TimeoutArg = DEFAULT) -> Status:
        """The server's counters (STATUS)."""
        wait = self._timeout(timeout)
        return parse_status(await self._roundtrip(Kind.STATUS, b"", wait, cancel=False))

    async def describe(self, *, timeout: TimeoutArg = DEFAULT) -> dict[str, Any]:
        """The service's description (DESCRIBE): its methods with JSON
        Schemas of their params and results."""
        wait = self._timeout(timeout)
        raw = await self._roundtrip(Kind.DESCRIBE, b"", wait, cancel=False, v2=True)
        try:
            description = json.loads(raw)
        except ValueError as e:
            raise ProtocolError(f"a description that is not JSON: {e}") from None
        if not isinstance(description, dict):
            raise ProtocolError("a description that is not a JSON object")
        return description

    async def probe(self, kind: int, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Sends an empty frame of ``kind`` with a new id, to probe whether
        the server knows it (version 2: ``unknown kind`` if not)."""
        wait = self._timeout(timeout)
        return await self._roundtrip(kind, b"", wait, cancel=False, v2=True)

    async def notify(self, payload: bytes, *, timeout: TimeoutArg = DEFAULT) -> None:
        """Sends a NOTIFY to the server (never answered)."""
        wait = self._timeout(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        conn = await self._connection(deadline)
        await conn.send_one_way(Kind.NOTIFY, payload, wait)

    def notifications(self) -> Notifications:
        """The server's notifications (see :mod:`pipesvc_client.notifications`).
        Take it early: until it is taken, what does not fit the buffer is
        dropped (and reported as :class:`Lagged`)."""
        return Notifications(self._queue)

    @property
    def notification_queue(self) -> NotificationQueue:
        """The queue behind :meth:`notifications` (its ``bytes`` and
        ``peak_bytes`` say how much it holds)."""
        return self._queue

    async def close(self) -> None:
        """Waits for the answers in flight (at most ``close_timeout``), then
        closes. Further calls fail with :class:`ConnectionClosed`."""
        if self._state is ConnectionState.CLOSED:
            return
        self._set_state(ConnectionState.CLOSED)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close(self.options.close_timeout)
        self._queue.end()
