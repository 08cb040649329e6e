"""The upstream limits on the vendor SDKs' shared ``httpx2`` pool.

The SDKs read whole bodies and split event streams themselves, so the limits are kept one layer
down, in a transport that wraps each response's byte stream: an answer's bytes (decompressed) are
counted against ``max_body_bytes``, an error answer is cut at ``max_error_bytes``, and an event
stream fails once one line passes ``max_line_bytes``. Compression is asked away
(``Accept-Encoding: identity``); an upstream that compresses anyway is decompressed here, in
bounded steps, so a gzip bomb cannot grow past the limits either.

The pool is shared by every cloud model, so the limits of the model a request is for travel in a
context variable that the provider sets around the SDK call (``using``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar, Token

import httpx2

from server.config import UpstreamLimits

_limits: ContextVar[UpstreamLimits | None] = ContextVar("upstream_limits", default=None)
_DEFAULT = UpstreamLimits()
# zlib output per step while decompressing: small enough that a bomb is noticed early.
_STEP = 64 * 1024


class using:
    """The SDK calls made inside ``with using(limits):`` are bounded by ``limits``. A class, not
    a generator: it is entered on every cloud request."""

    __slots__ = ("_limits", "_token")

    def __init__(self, limits: UpstreamLimits) -> None:
        self._limits = limits
        self._token: Token[UpstreamLimits | None] | None = None

    def __enter__(self) -> None:
        self._token = _limits.set(self._limits)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _limits.reset(self._token)
            self._token = None


class BoundedStream(httpx2.AsyncByteStream):
    def __init__(
        self,
        inner: httpx2.AsyncByteStream,
        *,
        encoding: str,
        limit: int | None,
        truncate: bool,
        line_limit: int | None,
    ) -> None:
        self._inner = inner
        self._decoder = (
            zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by their header
            if encoding in ("gzip", "deflate", "x-gzip")
            else None
        )
        self._limit = limit
        self._truncate = truncate
        self._line_limit = line_limit
        self._seen = 0
        self._line = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for raw in self._inner:
            for piece in self._decode(raw):
                limit = self._limit
                if limit is not None and self._seen + len(piece) > limit:
                    if self._truncate:
                        yield piece[: limit - self._seen]
                        # The rest is never read: let the connection go now, not at GC.
                        await self._inner.aclose()
                        return
                    raise httpx2.DecodingError(f"the answer is larger than {limit} bytes")
                self._seen += len(piece)
                self._check_lines(piece)
                yield piece

    def _decode(self, raw: bytes) -> Iterator[bytes]:
        if self._decoder is None:
            yield raw
            return
        data = raw
        while data:
            try:
                piece = self._decoder.decompress(data, _STEP)
            except zlib.error:
                raise httpx2.DecodingError("the answer's compression is broken") from None
            data = self._decoder.unconsumed_tail
            if piece:
                yield piece

    def _check_lines(self, piece: bytes) -> None:
        if self._line_limit is None:
            return
        # The first segment continues the line in progress; the last one starts the next.
        segments = piece.split(b"\n")
        lengths = [self._line + len(segments[0]), *(len(s) for s in segments[1:])]
        if max(lengths) > self._line_limit:
            raise httpx2.DecodingError(f"a stream line is longer than {self._line_limit} bytes")
        self._line = lengths[-1]

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        limits = _limits.get() or _DEFAULT
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate", "x-gzip"):
            await response.aclose()
            raise httpx2.DecodingError(f"the upstream answered in '{encoding}' compression")
        is_error = response.status_code >= 400
        is_stream = response.headers.get("Content-Type", "").startswith("text/event-stream")
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        limit: int | None = limits.max_body_bytes
        if is_error:
            limit = limits.max_error_bytes
        elif is_stream:
            limit = None  # a stream's length is bounded by time, its lines by size
        stream = BoundedStream(
            response.stream,
            encoding=encoding,
            limit=limit,
            truncate=is_error,
            line_limit=limits.max_line_bytes if is_stream and not is_error else None,
        )
        # Raw bytes: an upstream's header that is not ASCII must not fail the rebuild.
        headers = [
            (k, v)
            for k, v in response.headers.raw
            if k.lower() not in (b"content-encoding", b"content-length")
        ]
        return httpx2.Response(
            response.status_code,
            headers=headers,
            stream=stream,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
