"""The errors the client raises, and the protocol's error codes.

Everything the client raises derives from :class:`PipesvcError`. Text that
comes from the server (ERROR messages, GOODBYE reasons, the server name) is
untrusted: it is kept as sent, and :func:`escaped` shows it without control
characters, so printing an error never lets a server drive a terminal.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """The error codes of PROTOCOL.md "Errors" (1 to 16; 15 and 16 from revision 2.2)."""

    MALFORMED_FRAME = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    UNKNOWN_KIND = 4
    HANDLER_FAILED = 5
    OVERLOADED = 6
    SHUTTING_DOWN = 7
    TIMED_OUT = 8
    UNEXPECTED_FRAME = 9
    DUPLICATE_ID = 10
    NOT_ALLOWED = 11
    UNKNOWN_METHOD = 12
    BAD_REQUEST = 13
    CANCELLED = 14
    TOO_SLOW = 15
    FLOW_CONTROL = 16

    @property
    def label(self) -> str:
        """The code's name as PROTOCOL.md writes it (``frame too large``)."""
        return self.name.lower().replace("_", " ")


def code_name(code: int) -> str:
    """The name of ``code``: the protocol's for 1 to 16, else a description
    of the range it is in (reserved, or defined by the service)."""
    try:
        return ErrorCode(code).label
    except ValueError:
        if code >= 1000:
            return f"service error {code}"
        return f"unknown error {code}"


def escaped(text: str) -> str:
    """``text`` with every character that is not printable (control
    characters, line breaks, bidirectional overrides...) written as a Python
    escape, so that server text can be shown safely."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def decode_text(raw: bytes) -> str:
    """Server text as a ``str``: UTF-8, with invalid bytes replaced rather
    than raising (the raw bytes are kept where it matters)."""
    return raw.decode("utf-8", errors="replace")


class PipesvcError(Exception):
    """Base class of every error this package raises."""


class ConfigError(PipesvcError, ValueError):
    """A setting that cannot work (a zero timeout, a bad endpoint name...),
    refused before anything is opened."""


class ConnectError(PipesvcError, ConnectionError):
    """The server could not be reached within the connect timeout (absent,
    busy, or refusing the connection at the socket level)."""


class WrongServer(ConnectError):
    """The process at the endpoint is not a server this client trusts (its
    user, or the directories on the way to its socket); nothing was sent."""


class ProtocolError(PipesvcError):
    """The server broke the protocol (garbage, a frame over the client's
    limit, a HELLO that does not parse...); the connection is closed."""


class ServerTooOld(PipesvcError):
    """A version 2 client met a server that speaks only version 1 (ERROR
    ``unsupported version`` in place of the HELLO reply)."""


class ConnectionClosed(PipesvcError, ConnectionError):
    """The connection ended (or was never there) before the call's answer
    arrived. ``reason`` says how it ended."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection closed: {reason}")
        self.reason = reason


class Timeout(PipesvcError, TimeoutError):
    """A bounded wait ran out. ``what`` names what was waited for."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {what}")
        self.what = what
        self.seconds = seconds


class RequestTooLarge(PipesvcError):
    """A frame the client was asked to send exceeds the server's maximum
    frame length (announced in its HELLO); nothing was sent."""


class NotSupported(PipesvcError):
    """The call needs something this connection does not have (a version 2
    call on a version 1 connection, an encoding the server does not offer)."""


class RemoteError(PipesvcError):
    """An ERROR frame from the server.

    ``code`` is the number as sent (an :class:`ErrorCode` when the protocol
    defines it), ``message`` the server's text (untrusted; ``str(error)``
    shows it escaped), ``connection`` whether the ERROR had id 0 (it ended
    the connection) rather than answering one request.
    """

    def __init__(self, code: int, message: str, *, connection: bool = False) -> None:
        self.code: int = ErrorCode(code) if 1 <= code <= len(ErrorCode) else code
        self.message = message
        self.connection = connection
        scope = " (connection)" if connection else ""
        text = f": {escaped(message)}" if message else ""
        super().__init__(f"{code_name(code)} ({code}){scope}{text}")

    @property
    def name(self) -> str:
        """The code's name (``cancelled``, ``service error 1001``...)."""
        return code_name(int(self.code))
