"""One connection to an upstream: it carries one request at a time, and feeds the answer to
httptools and what httptools parses to the ``Response``."""

from __future__ import annotations

import asyncio
import zlib
from typing import Protocol, cast

import httptools

from server.providers.http1.errors import Disconnected, HTTPError, ProtocolError
from server.providers.http1.origin import Origin
from server.providers.http1.response import Headers, Response, expire, next_wait

_DECODED = ("gzip", "x-gzip", "deflate")


class Home(Protocol):
    """What a connection asks of the pool it belongs to."""

    max_head: int

    def loop(self) -> asyncio.AbstractEventLoop: ...

    def put(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One connection; it carries one request at a time. httptools calls the ``on_*``
    methods while ``data_received`` feeds it."""

    def __init__(self, pool: Home, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None  # the answer being received
        self._head: Response | None = None  # ... until its head is whole
        self._head_waiter: asyncio.Future[None] | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []  # parsed from the read being fed, not yet handed over
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
        if self._body:
            self._hand_body()
        if head is not None and self._head is not None:
            # Still in the head after all of ``data``: every byte of it was head.
            self._head_bytes += len(data)
            if self._head_bytes > self._pool.max_head:
                self._broken(too_long(self._pool.max_head))

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
            raise too_long(self._pool.max_head)
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
        # Handed over once per read (``_hand_body``), not per piece: a stream's upstream often
        # sends each event as its own chunk, and one read brings several.
        self._body.append(body)

    def _hand_body(self) -> None:
        parts = self._body
        piece = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        response = self._response
        if response is not None:
            response._feed(piece)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        if response is None:
            return
        if self._body:
            self._hand_body()
        self._response = None
        response._finish(self._keep_alive and not self._until_close)

    # -- used by the pool and the response -----------------------------------------------------

    def _broken(self, error: HTTPError) -> None:
        if self._body:
            self._hand_body()  # what arrived whole before the error is still read first
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
        wait, error = next_wait(loop, read_timeout, deadline)
        timer = loop.call_later(max(0.0, wait), expire, waiter, error)
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


def too_long(limit: int) -> ProtocolError:
    return ProtocolError(f"the answer's headers are over {limit} bytes")
