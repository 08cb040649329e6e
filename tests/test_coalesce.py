"""SSE frames ready together leave in one write (server/api/coalesce.py): what was ready goes out
before anything waits, an error still ends the stream after the frames before it, a client that
leaves while the upstream is silent still ends the upstream's reading; and whole streams that
arrive in one network read still parse in the openai and anthropic SDKs' streaming clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from server.api.coalesce import relay
from server.errors import UpstreamStatusError
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


class Writes:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, body: bytes) -> None:
        self.bodies.append(body)
        await asyncio.sleep(0)  # a socket write may let others run


async def test_frames_ready_together_leave_together_and_none_waits_for_another() -> None:
    network = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        yield b"a"  # one network read: three frames
        yield b"b"
        yield b"c"
        await network.wait()  # the upstream is silent
        yield b"d"
        yield b"e"

    writes = Writes()
    relaying = asyncio.ensure_future(relay(frames(), writes))
    for _ in range(5):
        await asyncio.sleep(0)
    # What was ready left before the source waited, not held back for what comes next.
    assert writes.bodies == [b"abc"]
    network.set()
    await relaying
    assert writes.bodies == [b"abc", b"de"]


async def test_a_frame_that_waited_alone_leaves_alone() -> None:
    async def frames() -> AsyncIterator[bytes]:
        for frame in (b"1", b"2", b"3"):
            await asyncio.sleep(0.001)
            yield frame

    writes = Writes()
    await relay(frames(), writes)
    assert writes.bodies == [b"1", b"2", b"3"]


async def test_an_error_ends_the_stream_after_the_frames_before_it() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        raise UpstreamStatusError(500, "broke mid-stream")

    writes = Writes()
    with pytest.raises(UpstreamStatusError):
        await relay(frames(), writes)
    assert writes.bodies == [b"ab"]


async def test_a_client_gone_while_the_upstream_is_silent_ends_the_upstream_reading() -> None:
    ended: list[str] = []
    never = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await never.wait()  # the source waits on the network when the write fails
            yield b"b"
        except asyncio.CancelledError:
            ended.append("cancelled where it waited")
            raise
        finally:
            await asyncio.sleep(0)  # cleanup that awaits (closing a connection) still runs
            ended.append("finished")

    async def closed_socket(body: bytes) -> None:
        raise OSError("the client closed the connection")

    source = frames()
    with pytest.raises(OSError, match="closed the connection"):
        await relay(source, closed_socket)
    assert ended == ["cancelled where it waited", "finished"]
    await source.aclose()  # ended, not left running: closing it is a no-op


# -- whole streams in one read, through the SDKs ------------------------------------------------


@pytest.fixture(scope="module")
def puente(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    # No pause between the fake's chunks: the stream reaches Puente in one or a few reads.
    fake_upstream.programs["burst-model"] = {"delay": 0, "reply": "uno dos tres cuatro cinco"}
    config = {
        "models": [
            {
                "name": "burst",
                "provider": "openai_compatible",
                "base_url": fake_upstream.base_url,
                "model": "burst-model",
            }
        ]
    }
    workdir: Path = tmp_path_factory.mktemp("coalesce")
    with InProcessPuente(config, workdir) as server:
        yield server


def test_a_burst_stream_parses_in_the_openai_sdk(puente: InProcessPuente) -> None:
    client = openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="burst",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "uno dos tres cuatro cinco"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_a_burst_stream_parses_in_the_async_anthropic_sdk(puente: InProcessPuente) -> None:
    client = anthropic.AsyncAnthropic(base_url=puente.url, api_key="unused", max_retries=0)
    async with client.messages.stream(
        model="burst", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        kinds = [event.type async for event in stream]
        message = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert message.content[0].type == "text"
    assert message.content[0].text == "uno dos tres cuatro cinco"
    assert message.stop_reason == "end_turn"
    await client.close()


def test_a_burst_stream_parses_in_the_responses_api(puente: InProcessPuente) -> None:
    client = openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0)
    with client.responses.stream(model="burst", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "uno dos tres cuatro cinco"


async def test_the_last_frames_leave_with_the_end_of_the_stream() -> None:
    network = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        yield b"a"
        await network.wait()
        yield b"b"
        yield b"c"

    writes, ends = Writes(), Writes()
    relaying = asyncio.ensure_future(relay(frames(), writes, ends))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (writes.bodies, ends.bodies) == ([b"a"], [])
    network.set()
    await relaying
    # What was ready when the stream ended goes with its end, in one write.
    assert (writes.bodies, ends.bodies) == ([b"a"], [b"bc"])


async def test_a_stream_that_ends_after_waiting_still_ends() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(0.001)  # then ends with nothing more

    writes, ends = Writes(), Writes()
    await relay(frames(), writes, ends)
    assert (writes.bodies, ends.bodies) == ([b"a"], [b""])


async def test_a_stream_that_fails_does_not_end_through_last() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"a"
        raise UpstreamStatusError(500, "broke mid-stream")

    writes, ends = Writes(), Writes()
    with pytest.raises(UpstreamStatusError):
        await relay(frames(), writes, ends)
    assert (writes.bodies, ends.bodies) == ([b"a"], [])
