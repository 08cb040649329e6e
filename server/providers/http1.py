"""Puente's own HTTP/1.1 client, for the upstream calls on the hot path (OpenAI-compatible chat,
completions and embeddings).

aiohttp's client builds a dozen objects per request (request and response objects, multidicts
of headers, a payload from a registry, timer handles, a response handler) and costs about a
quarter of Puente's CPU per request (``bench/CLIENT.md``). An upstream call needs much less: one
write of the request, httptools (already here, under uvicorn) to parse the answer, and a pool
of kept-alive connections. What it does:

- a keep-alive pool per origin (scheme, host, port), uncapped (per-model limits decide
  concurrency); a connection idle for ``idle_timeout`` seconds is closed. A connection goes
  back to the pool only when its answer arrived whole, the server did not ask to close it
  (``Connection: close``, HTTP/1.0, a body delimited by the close) and it is still open;
  anything else closes it, which is what tells an upstream that a client went away;
- ``https`` through asyncio's TLS, verifying the certificate against the system's roots;
- a connect timeout, a read timeout per wait for bytes, and an optional total deadline;
- bodies by ``Content-Length``, chunked, or until the close; head and body in one write;
- ``Accept-Encoding: identity``: an upstream that compresses anyway is decompressed (gzip,
  deflate) as it is read, in bounded steps, so a reader's byte limits bound the decompressed
  size; any other encoding is refused;
- no redirects followed, no cookies, no proxy.

Errors are the tree below, so the caller maps each to its own in one place::

    HTTPError
    ├── ConnectError       no connection could be made (refused, DNS, TLS): nothing was sent
    ├── Timeout            (also a TimeoutError) waiting for the next bytes, or the total
    │   └── ConnectTimeout     connecting
    ├── Disconnected       the connection closed before the answer was whole
    └── ProtocolError      the answer is not HTTP/1.1 as this client speaks it
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import lru_cache
from typing import NamedTuple, TypeVar, cast, overload
from urllib.parse import urlsplit

import httptools

# Bytes of a response's status line and headers together; past it, the answer is refused.
MAX_HEAD = 64 * 1024
# Body bytes held unread before the socket stops being read (and when it is read again).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# Decompressed bytes per step: small enough that a reader's limit notices a bomb early.
_STEP = 64 * 1024
_DECODED = ("gzip", "x-gzip", "deflate")
_T = TypeVar("_T")


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


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str
    """The ``Host`` header's value (the port left out where it is the scheme's own)."""


@lru_cache(maxsize=1024)
def split_url(url: str) -> tuple[Origin, str]:
    """``url`` as its origin and the request target (path and query); cached, as a provider
    posts to a few URLs many times."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    header = host if port == default else f"{host}:{port}"
    return Origin(scheme, parts.hostname, port, header), target


class Headers(Mapping[str, str]):
    """A response's headers, looked up by name in any case; repeated ones joined by ``, ``."""

    __slots__ = ("_items", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        items: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            items[key] = f"{items[key]}, {text}" if key in items else text
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Response:
    """An answer whose head has arrived; its body is read with ``read``, ``iter_any`` or
    ``iter_chunked`` (also reachable as ``content``, the names aiohttp's reader uses). ``release``
    hands the connection back (or closes it) and must be called."""

    __slots__ = (
        "_buffered",
        "_conn",
        "_deadline",
        "_decoder",
        "_done",
        "_error",
        "_loop",
        "_pieces",
        "_read_timeout",
        "_reusable",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )

    def __init__(
        self,
        conn: _Connection,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        deadline: float | None,
    ) -> None:
        self._conn: _Connection | None = conn
        self._loop = loop
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._reusable = False
        self._error: HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None
        self.status = 0
        self.headers = Headers([])
        self.content_length: int | None = None

    @property
    def content(self) -> Response:
        return self

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as they came, in order (names as the upstream cased them)."""
        return self.headers.raw

    # -- fed by the connection -----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._buffered > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self, reusable: bool) -> None:
        self._done = True
        self._reusable = reusable
        self._wake()

    def _fail(self, error: HTTPError) -> None:
        if not self._done and self._error is None:
            self._error = error
        self._wake()

    # -- read by the caller --------------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection feeds something, within the read timeout and the deadline."""
        loop = self._loop
        wait, error = self._read_timeout, _READ_TIMEOUT
        if self._deadline is not None:
            left = self._deadline - loop.time()
            if left <= 0:
                raise Timeout(_TOTAL_TIMEOUT)
            if left < wait:
                wait, error = left, _TOTAL_TIMEOUT
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(wait, _expire, waiter, error)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _next_raw(self) -> bytes | None:
        """What has arrived since the last call, as one piece; None at the end of the body."""
        while True:
            pieces = self._pieces
            if pieces:
                piece = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
                pieces.clear()
                self._buffered = 0
                if self._conn is not None:
                    self._conn.resume()
                return piece
            if self._error is not None:
                raise self._error
            if self._done:
                return None
            await self._wait()

    async def _next(self) -> bytes | None:
        decoder = self._decoder
        while True:
            raw = await self._next_raw()
            if decoder is None:
                return raw
            if raw is None:
                return None
            try:
                piece = decoder.decompress(raw, _STEP)
                tail = decoder.unconsumed_tail
            except zlib.error:
                raise ProtocolError("the answer's compression is broken") from None
            if tail:
                # Decompressed in steps: what this step left waits for the next call.
                self._pieces.appendleft(tail)
                self._buffered += len(tail)
            if piece:
                return piece

    async def read(self) -> bytes:
        """The whole body (callers bound it: ``bounded.read_body``)."""
        parts = []
        while (piece := await self._next()) is not None:
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives: what one network read brought, as one piece."""
        while (piece := await self._next()) is not None:
            yield piece

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``size`` bytes."""
        while (piece := await self._next()) is not None:
            for start in range(0, len(piece), size):
                yield piece[start : start + size]

    def release(self) -> None:
        """Back to the pool if the answer arrived whole and the connection may be reused;
        closed otherwise. Calling it again does nothing."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._done and self._reusable and self._error is None:
            conn.release()
        else:
            conn.close()

    def close(self) -> None:
        """Close the connection whatever state the answer is in."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.close()


_READ_TIMEOUT = "the upstream sent nothing within the read timeout"
_TOTAL_TIMEOUT = "the answer did not finish within the total timeout"


def _expire(waiter: asyncio.Future[None], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout(message))


class _Connection(asyncio.Protocol):
    """One connection; it carries one request at a time. httptools calls the ``on_*``
    methods while ``data_received`` feeds it."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None  # the answer being received
        self._head: Response | None = None  # ... until its head is whole
        self._head_waiter: asyncio.Future[None] | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # of a head still incomplete after the bytes read so far
        self._header_bytes = 0  # of the headers parsed
        self._until_close = False
        self._keep_alive = False
        self._informational = False
        self._paused = False
        self._spoiled = False
        self.lost = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but offer the same.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Bytes nobody asked for: the connection can no longer be trusted with a request.
            self.close()
            return
        head = self._head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(ProtocolError("the upstream switched protocols"))
            return
        except httptools.HttpParserError as exc:
            # A callback's own error (an encoding refused) comes wrapped by httptools.
            inner = exc.__context__
            self._broken(
                inner
                if isinstance(inner, ProtocolError)
                else ProtocolError(f"the answer is not valid HTTP/1.1 ({exc})")
            )
            return
        if head is not None and self._head is not None:
            # Still in the head after all of ``data``: every byte of it was head.
            self._head_bytes += len(data)
            if self._head_bytes > self._pool.max_head:
                self._broken(_too_long(self._pool.max_head))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._pool.forget(self)
        response = self._response
        if response is None:
            return
        self._response = None
        if self._head is not None:
            self._fail_head(Disconnected("the connection closed before the answer began"))
        elif self._until_close and not response._done:
            response._finish(reusable=False)  # a body delimited by the close is whole now
        else:
            response._fail(Disconnected("the connection closed before the answer was whole"))

    def pause_writing(self) -> None:
        pass  # a request is written once and never waited on

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is None:
            self._spoiled = True  # an answer to nothing: the connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))
        # A head that arrived whole in one read is bounded here (``data_received`` bounds one
        # still arriving, before httptools holds more of it).
        self._header_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        response = self._head
        raw, self._raw_headers = self._raw_headers, []
        if response is None:
            return
        if self._header_bytes > self._pool.max_head:
            raise _too_long(self._pool.max_head)
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True  # 100 Continue and the like: the answer follows
            return
        headers = Headers(raw)
        response.status = status
        response.headers = headers
        encoding = (headers.get("content-encoding") or "identity").strip().lower()
        if encoding in _DECODED:
            response._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib
        elif encoding != "identity":
            raise ProtocolError(f"the upstream answered in '{encoding}' compression")
        else:
            length = headers.get("content-length")
            response.content_length = int(length) if length and length.isdigit() else None
        self._until_close = (
            "content-length" not in headers
            and "transfer-encoding" not in headers
            and status not in (204, 304)
        )
        # HTTP/1.0 or ``Connection: close`` (read here: llhttp's flags are reset by the end).
        self._keep_alive = self._parser.should_keep_alive()
        self._head = None
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        if response is None:
            return
        self._response = None
        response._finish(self._keep_alive and not self._until_close)

    # -- used by the pool and the response -----------------------------------------------------

    def _broken(self, error: HTTPError) -> None:
        response = self._response
        if self._head is not None:
            self._fail_head(error)
        elif response is not None:
            response._fail(error)
        self._response = None
        self.close()

    def _fail_head(self, error: HTTPError) -> None:
        self._head = None
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def usable(self) -> bool:
        transport = self._transport
        return (
            not self.lost
            and not self._spoiled
            and transport is not None
            and not transport.is_closing()
        )

    async def send(self, request: bytes, read_timeout: float, deadline: float | None) -> Response:
        assert self._transport is not None
        loop = self._pool.loop()
        response = Response(self, loop, read_timeout, deadline)
        self._response = self._head = response
        self._head_bytes = self._header_bytes = 0
        self._until_close = False
        waiter = self._head_waiter = loop.create_future()
        self._transport.write(request)
        wait, error = read_timeout, _READ_TIMEOUT
        if deadline is not None and deadline - loop.time() < wait:
            wait, error = max(0.0, deadline - loop.time()), _TOTAL_TIMEOUT
        timer = loop.call_later(wait, _expire, waiter, error)
        try:
            await waiter
        except BaseException:
            # A timeout, a broken head, or the caller cancelled: the connection is spent.
            self._head = None
            self.close()
            raise
        finally:
            timer.cancel()
            self._head_waiter = None
        return response

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def release(self) -> None:
        if self.usable():
            self.resume()  # paused while its last bytes waited to be read
            self._pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._pool.forget(self)


def _too_long(limit: int) -> ProtocolError:
    return ProtocolError(f"the answer's headers are over {limit} bytes")


class Pool:
    """Kept-alive connections per origin; ``request`` sends on one and returns the answer."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_head: int = MAX_HEAD,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_head = max_head
        self._ssl = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        self.opened: Counter[Origin] = Counter()
        """Connections made so far, per origin (what tests and a debugger watch)."""
        self._open: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def idle(self, origin: Origin) -> int:
        """Connections to ``origin`` waiting in the pool."""
        return len(self._idle.get(origin, ()))

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float | None = None,
    ) -> Response:
        """Send ``method url`` with ``body`` and return the answer once its head arrived.
        ``read_timeout`` bounds each wait for bytes, ``total_timeout`` (from now) the whole
        answer, body included."""
        origin, target = split_url(url)
        request = _encode(method, target, origin, headers, body)
        loop = self.loop()
        deadline = loop.time() + total_timeout if total_timeout is not None else None
        conn = self._take(origin)
        if conn is None:
            connect = connect_timeout
            if deadline is not None:
                connect = min(connect, deadline - loop.time())
            conn = await self._connect(origin, connect)
        return await conn.send(request, read_timeout, deadline)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closing
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        if self._closed:
            raise ConnectError("the client is closed")
        loop = self.loop()
        conn = _Connection(self, origin)
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            conn.close()
            raise ConnectTimeout(f"no connection within {timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"cannot connect: {exc.strerror or exc}") from exc
        self._open.add(conn)
        self.opened[origin] += 1
        return conn

    def put(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        loop = self.loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.origin, deque()).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_timeout, self._sweep)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle for ``idle_timeout``; come back when the next one will be."""
        self._sweeper = None
        now = self.loop().time()
        expires = self.idle_timeout
        next_due: float | None = None
        for idle in self._idle.values():
            # Oldest first: each connection is appended when it comes back.
            while idle and now - idle[0].idle_since >= expires:
                idle.popleft().close()
            if idle:
                due = idle[0].idle_since + expires
                next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._sweeper = self.loop().call_at(next_due, self._sweep)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        if self._loop is not None:
            # Lets the transports finish closing before the loop goes on.
            await asyncio.sleep(0)


def _encode(
    method: str, target: str, origin: Origin, headers: Mapping[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\n\r\n")
    return "".join(lines).encode() + body
