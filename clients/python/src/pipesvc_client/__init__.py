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
    "ServerHello",
    "ServerIdentity",
    "ServerTooOld",
    "Status",
    "Timeout",
    "WrongServer",
    "escaped",
]
