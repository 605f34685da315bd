"""An asyncio client for pipesvc services, written from PROTOCOL.md.

Start with :class:`Client` (``await Client.connect("name")``), or
:class:`BlockingClient` in scripts.
"""

from .blocking import BlockingClient
from .client import DEFAULT, DEADLINE_GRACE, Client, ClientOptions, ConnectionState
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
    RequestTooLarge,
    ServerTooOld,
    Timeout,
    WrongServer,
    escaped,
)
from .identity import ServerIdentity
from .messages import Encoding, ServerHello, Status
from .notifications import Lagged, Message, Notification, NotificationPolicy, Notifications
from .streams import Lagged as EventsLagged
from .streams import Resubscribed, Stream, Subscription

__all__ = [
    "BlockingClient",
    "Client",
    "ClientOptions",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionState",
    "DEADLINE_GRACE",
    "DEFAULT",
    "Encoding",
    "EventsLagged",
    "Endpoint",
    "ErrorCode",
    "Lagged",
    "Message",
    "NotSupported",
    "Notification",
    "NotificationPolicy",
    "Notifications",
    "PipesvcError",
    "ProtocolError",
    "RemoteError",
    "RequestTooLarge",
    "Resubscribed",
    "ServerHello",
    "ServerIdentity",
    "ServerTooOld",
    "Status",
    "Stream",
    "Subscription",
    "Timeout",
    "WrongServer",
    "escaped",
]
