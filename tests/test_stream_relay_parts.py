"""The OpenAI-compatible provider's stream hands out the chunk it pulled before answering 200,
then the rest of the upstream's, through no extra generator (``_After``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from server.pipeline.request import StreamChunk
from server.providers.openai_compatible import _After


async def _chunks(*raws: bytes) -> AsyncIterator[StreamChunk]:
    for raw in raws:
        yield StreamChunk(raw)


async def test_the_first_chunk_then_the_rest_in_order() -> None:
    rest = _chunks(b'{"n":2}', b'{"n":3}')
    got = [chunk.encode() async for chunk in _After(StreamChunk(b'{"n":1}'), rest)]
    assert got == [b'{"n":1}', b'{"n":2}', b'{"n":3}']


async def test_an_ended_stream_gives_nothing() -> None:
    rest = _chunks()
    async for _ in rest:  # ended before the first chunk, as the provider found it
        pass
    assert [chunk async for chunk in _After(None, rest)] == []


def test_asking_whether_a_chunk_is_usage_only_keeps_its_bytes() -> None:
    # OpenAI's API sends "usage": null on every chunk when usage is asked for.
    raw = b'{"choices": [{"index": 0, "delta": {"content": "hola"}}], "usage": null}'
    for chunk in (StreamChunk(raw), StreamChunk(raw, orjson.loads(raw))):
        assert not chunk.is_usage_only
        assert chunk.encode() == raw  # relayed as it came, not written anew
    last = StreamChunk(b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}')
    assert last.is_usage_only
    last.data["model"] = "renamed"  # read to be changed: from then on it is written anew
    assert orjson.loads(last.encode())["model"] == "renamed"
