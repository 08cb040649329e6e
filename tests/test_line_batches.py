"""``line_batches`` (server/providers/bounded.py) gives the body's lines, those of one network
read together, with a bound on a line's length; every provider's stream reads its upstream with
it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest

from server.providers.bounded import TooLarge, line_batches


class _Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _response(pieces: list[bytes]) -> aiohttp.ClientResponse:
    fake: Any = type("Response", (), {})()
    fake.content = _Content(pieces)
    return cast(aiohttp.ClientResponse, fake)


async def _batches(pieces: list[bytes], limit: int = 100) -> list[list[bytes]]:
    return [batch async for batch in line_batches(_response(pieces), limit)]


def _lines(pieces: list[bytes]) -> list[bytes]:
    """The body's lines read at once: without their ending (``\\n`` or ``\\r\\n``), and the
    text after the last newline as a last line."""
    *ended, tail = b"".join(pieces).split(b"\n")
    return [line.removesuffix(b"\r") for line in ended] + ([tail] if tail else [])


STREAMS = [
    [b'data: {"a":1}\n\ndata: {"b":2}\n\n', b"data: [DONE]\n\n"],
    [b"data: {", b'"a":1}\r\n\r\nevent: error\r', b'\ndata: {"c":3}\r\n\r\n'],
    [b"da", b"ta", b": x", b"\n", b"\n\n", b"tail without newline"],
    [b"\n\n\n"],
    [],
]


@pytest.mark.parametrize("pieces", STREAMS)
async def test_the_same_lines_however_the_body_is_cut(pieces: list[bytes]) -> None:
    batches = await _batches(pieces)
    assert [line for batch in batches for line in batch] == _lines(pieces)
    assert all(batches)  # no empty batch: a read that ends no line yields nothing


async def test_the_lines_of_one_read_come_together() -> None:
    pieces = [b"data: 1\n\ndata: 2\n\n", b"data: 3\n", b"\n"]
    assert await _batches(pieces) == [[b"data: 1", b"", b"data: 2", b""], [b"data: 3"], [b""]]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"x" * 101 + b"\n"],  # a whole line over the limit in one read
        [b"x" * 60, b"x" * 60],  # a line still unfinished past the limit: refused before its end
        [b"ok\n" + b"x" * 101],
    ],
)
async def test_a_line_past_the_limit_is_refused(pieces: list[bytes]) -> None:
    with pytest.raises(TooLarge):
        await _batches(pieces)
