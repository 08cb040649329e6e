"""Reading an upstream's response without letting it decide how much memory Puente uses.

The response is aiohttp's or Puente's own client's (``http1``): both offer the reads below
(``Readable``), and both decompress a body piece by piece as it is read (aiohttp ≥ 3.14), so
counting the pieces read bounds the *decompressed* size too: a gzip bomb is cut where it crosses
the limit, not after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

_PIECE = 64 * 1024


class _Content(Protocol):
    def iter_chunked(self, n: int, /) -> AsyncIterator[bytes]: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...


class Readable(Protocol):
    """What is read of a response here: aiohttp's ``ClientResponse`` and ``http1.Response``."""

    @property
    def content_length(self) -> int | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> _Content: ...

    async def read(self) -> bytes: ...


class TooLarge(Exception):
    """The upstream sent more than the limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


async def read_body(response: Readable, limit: int) -> bytes:
    """The whole body, or ``TooLarge`` as soon as it passes ``limit`` bytes."""
    length = response.content_length
    if length is not None and length > limit:
        raise TooLarge(limit)
    headers = response.headers
    if (
        length is not None
        and headers.get("Content-Encoding", "identity") == "identity"
        and "Transfer-Encoding" not in headers
    ):
        # Not compressed, not chunked and announced within the limit: what is read is what was
        # announced, so one read is as bounded as counting pieces (and copies the body once).
        # A length beside chunked framing is not trusted either (aiohttp refuses such an answer
        # today; the bound must not depend on that): its pieces are counted.
        return await response.read()
    body = bytearray()
    async for piece in response.content.iter_chunked(_PIECE):
        body += piece
        if len(body) > limit:
            raise TooLarge(limit)
    return bytes(body)


async def read_prefix(response: Readable, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is left unread (the connection is closed
    rather than drained, so an endless error body costs nothing)."""
    body = bytearray()
    async for piece in response.content.iter_chunked(_PIECE):
        body += piece
        if len(body) >= limit:
            return bytes(body[:limit])
    return bytes(body)


async def line_batches(response: Readable, limit: int) -> AsyncIterator[list[bytes]]:
    """The body's lines without their ending (``\\n`` or ``\\r\\n``), those that one network read
    completed in one list: a stream relay steps once per read instead of once per line (an SSE
    event is two lines, and each step of an async generator costs about as much as reading the
    line). ``TooLarge`` for a line longer than ``limit`` bytes, before more of it is held."""
    pending = b""
    async for piece in response.content.iter_any():
        parts = (pending + piece if pending else piece).split(b"\n")
        pending = parts.pop()  # what follows the last newline: the start of a line
        if len(pending) > limit:
            raise TooLarge(limit)
        if parts:
            for line in parts:
                if len(line) > limit:
                    raise TooLarge(limit)
            yield [line[:-1] if line.endswith(b"\r") else line for line in parts]
    if pending:
        yield [pending]
