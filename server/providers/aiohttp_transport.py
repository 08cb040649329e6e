"""An ``httpx2`` transport that sends over aiohttp, for the vendor SDKs.

The ``openai``, ``anthropic`` and ``google-genai`` SDKs build their requests and parse their
answers on ``httpx2``'s interface, but ``httpx2``'s own connection pool costs several times
aiohttp's CPU per request and degrades under concurrency (``bench/README.md``, "Every provider
kind"). This transport keeps the SDKs' interface and hands the bytes to one aiohttp session.

What stays as it was: each response still passes through ``sdk_limits.BoundedTransport`` (the
limits, and decompression in bounded steps: aiohttp is told not to decompress), and aiohttp's
errors come out as the ``httpx2`` errors the SDKs and ``vendor_errors`` already know:

    aiohttp                                   httpx2
    connect timeout                           ConnectTimeout
    read timeout (no bytes for ``read`` s)    ReadTimeout
    connection refused, DNS failure           ConnectError
    cut mid-answer, server disconnected       ReadError
    any other ClientError                     NetworkError

``httpx2_errors`` also maps the errors of Puente's own client (``http1``), on which the chat
paths post (``vendor_http``), the same way; an answer that is not HTTP is a
``RemoteProtocolError``.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import aiohttp
import httpx2

from server.providers import http1

# Set by aiohttp itself from the body and the URL; the SDKs' values would conflict.
_OWN_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


TRANSPORT_ERRORS = (http1.HTTPError, aiohttp.ClientError, TimeoutError)
"""What ``as_httpx2`` maps."""


def as_httpx2(exc: BaseException, connecting: bool) -> BaseException:
    """The ``httpx2`` error the SDK would have raised for one of ``TRANSPORT_ERRORS`` (``exc``
    itself for anything else)."""
    kind: type[httpx2.TransportError]
    if isinstance(exc, http1.ConnectTimeout):
        kind = httpx2.ConnectTimeout
    elif isinstance(exc, http1.Timeout):
        # As aiohttp's below: a wait for the answer's head counts as part of connecting.
        kind = httpx2.ConnectTimeout if connecting else httpx2.ReadTimeout
    elif isinstance(exc, http1.ConnectError):
        kind = httpx2.ConnectError
    elif isinstance(exc, http1.Disconnected):
        kind = httpx2.ReadError
    elif isinstance(exc, http1.ProtocolError):
        kind = httpx2.RemoteProtocolError
    elif isinstance(exc, http1.HTTPError):
        kind = httpx2.NetworkError
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx2.ConnectTimeout
    elif isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        # A bare TimeoutError is aiohttp's total timeout; the SDKs set none (per-phase only).
        kind = httpx2.ConnectTimeout if connecting else httpx2.ReadTimeout
        return kind(str(exc) or "timed out")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx2.ConnectError
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        kind = httpx2.ReadError
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = httpx2.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientError):
        kind = httpx2.NetworkError
    else:
        return exc
    return kind(str(exc))


@contextmanager
def httpx2_errors(connecting: bool) -> Iterator[None]:
    """``as_httpx2`` around a block."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise as_httpx2(exc, connecting) from exc


class _Body(httpx2.AsyncByteStream):
    """An aiohttp response's body, as it arrives (each network read, not fixed-size pieces)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        # The SDKs nest generators around a stream and close only the outer one: when a client
        # leaves mid-stream, this body is dropped unclosed. Its connection is closed when the
        # body goes, whoever forgot it (and never warns as an unclosed connection).
        weakref.finalize(self, response.release)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            with httpx2_errors(connecting=False):
                async for piece in self._response.content.iter_any():
                    yield piece
        finally:
            # Also when a reader stops early without closing the response (an SDK that reads an
            # error body, cut at its limit, and raises): the connection is closed, not leaked.
            self._response.release()

    async def aclose(self) -> None:
        # A finished body returns its connection to the pool; one left unread closes it, which
        # is what tells the vendor to stop generating.
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends each request over the session ``session`` returns (its owner builds it on first
    use and closes it: this transport does not)."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._session = session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout") or {}
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _OWN_HEADERS
        ]
        body = await request.aread()
        with httpx2_errors(connecting=True):
            response = await self._session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,  # the SDKs are given no redirects to follow either
                auto_decompress=False,  # BoundedTransport decompresses within the limits
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx2.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )
