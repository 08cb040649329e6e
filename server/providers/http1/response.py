"""An answer whose head has arrived, and the reading of its body as the connection feeds it."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Protocol, TypeVar, overload

from server.providers.http1.errors import HTTPError, ProtocolError, Timeout

# Body bytes held unread before the socket stops being read (it reads on once they are taken).
_HIGH_WATER = 256 * 1024
# Decompressed bytes per step: small enough that a reader's limit notices a bomb early.
_STEP = 64 * 1024
_T = TypeVar("_T")


class Carrier(Protocol):
    """What a response asks of the connection it came on."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


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
        conn: Carrier,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        deadline: float | None,
    ) -> None:
        self._conn: Carrier | None = conn
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
        wait, error = next_wait(loop, self._read_timeout, self._deadline)
        if wait <= 0:
            raise Timeout(error)
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(wait, expire, waiter, error)
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


READ_TIMEOUT = "the upstream sent nothing within the read timeout"
TOTAL_TIMEOUT = "the answer did not finish within the total timeout"


def next_wait(
    loop: asyncio.AbstractEventLoop, read_timeout: float, deadline: float | None
) -> tuple[float, str]:
    """How long the next wait for bytes may last, and what its timeout says: the read timeout,
    or what is left before the total ``deadline`` when that is shorter."""
    if deadline is not None:
        left = deadline - loop.time()
        if left < read_timeout:
            return left, TOTAL_TIMEOUT
    return read_timeout, READ_TIMEOUT


def expire(waiter: asyncio.Future[None], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout(message))
