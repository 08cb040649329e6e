"""What goes wrong in ``http1``, as a tree (``__init__``'s docstring draws it)."""

from __future__ import annotations


class HTTPError(Exception):
    """A request that failed in transport or framing (never an HTTP status)."""


class ConnectError(HTTPError):
    """No connection could be made; nothing was sent."""


class Timeout(HTTPError, TimeoutError):
    """Connecting, or a wait for the next bytes of the answer, took too long."""


class ConnectTimeout(Timeout):
    """No connection within the connect timeout; nothing was sent."""


class Disconnected(HTTPError):
    """The connection closed before the answer was whole."""


class ProtocolError(HTTPError):
    """The answer is not HTTP/1.1 as this client speaks it."""
