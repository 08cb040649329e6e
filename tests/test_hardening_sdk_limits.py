"""The vendor SDKs' shared pool bounds every answer (``server/providers/sdk_limits.py``): driven
in process through httpx2's own mock transport, so each limit is seen exactly at its edge."""

from __future__ import annotations

import gzip
import zlib

import httpx2
import pytest

from server.config import UpstreamLimits
from server.providers.sdk_limits import BoundedTransport, using

LIMITS = UpstreamLimits(max_body_bytes=1000, max_error_bytes=100, max_line_bytes=50)


def _client(response: httpx2.Response) -> httpx2.AsyncClient:
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return response

    client = httpx2.AsyncClient(transport=BoundedTransport(httpx2.MockTransport(answer)))
    client.seen = seen  # type: ignore[attr-defined]
    return client


async def _get(response: httpx2.Response) -> httpx2.Response:
    async with _client(response) as client:
        with using(LIMITS):
            return await client.get("http://vendor/x")


async def test_compression_is_asked_away() -> None:
    async with _client(httpx2.Response(200, content=b"{}")) as client:
        with using(LIMITS):
            await client.get("http://vendor/x", headers={"Accept-Encoding": "gzip, br"})
        assert client.seen[0].headers["accept-encoding"] == "identity"  # type: ignore[attr-defined]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_is_cut_at_the_body_limit(encoding: str) -> None:
    plain = b"a" * 10_000_000
    body = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    response = httpx2.Response(200, content=body, headers={"Content-Encoding": encoding})
    with pytest.raises(httpx2.DecodingError, match="larger than 1000 bytes"):
        await _get(response)


async def test_a_small_compressed_answer_is_decompressed() -> None:
    response = httpx2.Response(
        200, content=gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"}
    )
    assert (await _get(response)).json() == {"ok": True}


async def test_an_unknown_compression_is_refused() -> None:
    response = httpx2.Response(200, content=b"x", headers={"Content-Encoding": "br"})
    with pytest.raises(httpx2.DecodingError, match="'br'"):
        await _get(response)


async def test_an_error_body_is_cut_not_refused() -> None:
    response = await _get(httpx2.Response(500, content=b"e" * 10_000))
    assert response.content == b"e" * 100


async def test_a_stream_line_over_the_limit_fails_and_long_streams_do_not() -> None:
    headers = {"Content-Type": "text/event-stream"}
    fine = b"".join(b"data: %d\n\n" % i for i in range(1000))  # over max_body_bytes in all
    assert (await _get(httpx2.Response(200, content=fine, headers=headers))).content == fine
    long_line = b"data: " + b"x" * 100 + b"\n\n"
    with pytest.raises(httpx2.DecodingError, match="longer than 50 bytes"):
        await _get(httpx2.Response(200, content=long_line, headers=headers))


async def test_a_header_that_is_not_ascii_survives() -> None:
    response = httpx2.Response(429, headers=[(b"Retry-After", "５秒".encode())], content=b"{}")
    assert (await _get(response)).status_code == 429
