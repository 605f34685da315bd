"""A small blocking facade for scripts: the asyncio :class:`Client` run on
an event loop of its own, in a background thread.

>>> with BlockingClient("myservice") as client:  # doctest: +SKIP
...     print(client.call("echo", [1, 2]))
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Mapping, Sequence, TypeVar

from .client import DEFAULT, Client, ClientOptions, TimeoutArg
from .endpoint import Endpoint
from .messages import Encoding, Status
from .notifications import Notification, Notifications

T = TypeVar("T")


class BlockingClient:
    """The :class:`Client` surface as plain blocking methods. Every call
    is bounded as in the asyncio client; a call interrupted by
    ``KeyboardInterrupt`` is cancelled (CANCEL sent) before the exception
    propagates."""

    def __init__(
        self, name: str | Endpoint, options: ClientOptions | None = None, **settings: Any
    ) -> None:
        """Connects (blocking) to ``name``; see :meth:`Client.connect`."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._notifications: Notifications | None = None
        try:
            self.client: Client = self._run(Client.connect(name, options, **settings))
        except BaseException:
            self._stop()
            raise

    def _run(self, work: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await work

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: TimeoutArg = DEFAULT,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        encoding: Encoding | None = None,
    ) -> Any:
        """See :meth:`Client.call`."""
        return self._run(
            self.client.call(
                method, params, timeout=timeout, metadata=metadata, encoding=encoding
            )
        )

    def request(self, payload: bytes, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """See :meth:`Client.request`."""
        return self._run(self.client.request(payload, timeout=timeout))

    def ping(self, payload: bytes = b"", *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """See :meth:`Client.ping`."""
        return self._run(self.client.ping(payload, timeout=timeout))

    def status(self, *, timeout: TimeoutArg = DEFAULT) -> Status:
        """See :meth:`Client.status`."""
        return self._run(self.client.status(timeout=timeout))

    def describe(self, *, timeout: TimeoutArg = DEFAULT) -> dict[str, Any]:
        """See :meth:`Client.describe`."""
        return self._run(self.client.describe(timeout=timeout))

    def notify(self, payload: bytes) -> None:
        """See :meth:`Client.notify`."""
        self._run(self.client.notify(payload))

    def next_notification(self, timeout: float | None) -> Notification | None:
        """The next notification (``None`` once the stream has ended);
        waits at most ``timeout`` s (``TimeoutError`` past it)."""
        if self._notifications is None:
            self._notifications = self.client.notifications()
        return self._run(self._notifications.recv(timeout))

    def close(self) -> None:
        """Closes the client (bounded by its close timeout) and its loop."""
        if self._loop.is_closed():
            return
        try:
            self._run(self.client.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
