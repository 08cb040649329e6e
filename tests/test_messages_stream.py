"""Chat chunk streams → Anthropic's stream events: every event validated with the anthropic SDK's
own ``RawMessageStreamEvent``, the order checked, and the SDK's own accumulator rebuilding the
message a client would see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from server.api.messages.errors import stream_error
from server.api.messages.stream import Encoder, events
from server.errors import UpstreamProtocolError, UpstreamStatusError
from server.pipeline.request import StreamChunk
from server.providers.anthropic_native import NativeChunk

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> StreamChunk:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]
    )
    return StreamChunk(
        data={
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": choices,
        }
    )


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> StreamChunk:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return StreamChunk(
        data={"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    )


def call(
    index: int, *, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        piece["id"], piece["type"] = id, "function"
    if name is not None:
        piece["function"]["name"] = name
    return piece


async def _iterate(chunks: list[StreamChunk | Exception]) -> AsyncIterator[StreamChunk]:
    for item in chunks:
        await asyncio.sleep(0)
        if isinstance(item, Exception):
            raise item
        yield item


def parse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == event_line[7:]  # the event name is the payload's type
        out.append((event_line[7:], data))
    return out


def run(chunks: list[StreamChunk | Exception], **options: Any) -> list[tuple[str, dict[str, Any]]]:
    async def collect() -> bytes:
        encoder = Encoder("shown", **options)
        return b"".join([frame async for frame in events(_iterate(chunks), encoder)])

    return parse(asyncio.run(collect()))


def rebuild(stream: list[tuple[str, dict[str, Any]]]) -> Message:
    """What the anthropic SDK's ``messages.stream`` makes of these events."""
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for name, data in stream:
        if name == "ping":  # documented, and outside the SDK's event union (it skips pings)
            assert data == {"type": "ping"}
            continue
        event = EVENTS.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    return Message.model_validate(snapshot.model_dump())


def names(stream: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in stream]


def test_text_stream_order_and_usage() -> None:
    stream = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hola"}),
            chunk({"content": " Lima"}),
            chunk({}, "stop"),
            usage_chunk(30, 2, cached=10),
        ]
    )
    assert names(stream) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = rebuild(stream)
    assert message.model == "shown" and message.id.startswith("msg_")
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hola Lima")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 2)
    assert message.usage.cache_read_input_tokens == 10


def test_message_start_carries_input_tokens_when_the_first_chunk_counts() -> None:
    first = chunk({"role": "assistant", "content": ""})
    first.data["usage"] = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
    stream = run([first, chunk({"content": "x"}, "stop"), usage_chunk(12, 1)])
    assert stream[0][1]["message"]["usage"]["input_tokens"] == 12


def test_text_then_several_tool_calls_keep_every_argument() -> None:
    stream = run(
        [
            chunk({"role": "assistant", "content": "Let me check."}),
            chunk({"tool_calls": [call(0, id="c1", name="weather", args="")]}),
            chunk({"tool_calls": [call(0, args='{"city":')]}),
            chunk({"tool_calls": [call(0, args=' "Lima"}')]}),
            chunk({"tool_calls": [call(1, id="c2", name="time", args='{"city"')]}),
            chunk({"tool_calls": [call(1, args=': "Cusco"}')]}),
            chunk({}, "tool_calls"),
            usage_chunk(5, 20),
        ]
    )
    message = rebuild(stream)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first, second = message.content[1], message.content[2]
    assert first.type == "tool_use" and second.type == "tool_use"
    assert (first.id, first.name, first.input) == ("c1", "weather", {"city": "Lima"})
    assert (second.id, second.name, second.input) == ("c2", "time", {"city": "Cusco"})
    assert message.stop_reason == "tool_use"
    starts = [d["index"] for n, d in stream if n == "content_block_start"]
    stops = [d["index"] for n, d in stream if n == "content_block_stop"]
    assert starts == stops == [0, 1, 2]  # blocks one after the other, never interleaved


def test_a_call_whose_name_comes_late_loses_no_arguments() -> None:
    stream = run(
        [
            chunk({"tool_calls": [call(0, id="c1", args='{"a"')]}),
            chunk({"tool_calls": [call(0, name="f", args=": 1}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    block = rebuild(stream).content[0]
    assert block.type == "tool_use" and (block.name, block.input) == ("f", {"a": 1})


def test_interleaved_arguments_end_with_an_error_not_a_wrong_input() -> None:
    with pytest.raises(UpstreamProtocolError):
        run(
            [
                chunk({"tool_calls": [call(0, id="c1", name="f", args='{"a"')]}),
                chunk({"tool_calls": [call(1, id="c2", name="g", args="{}")]}),
                chunk({"tool_calls": [call(0, args=": 1}")]}),
            ]
        )


def test_reasoning_streams_as_thinking_when_asked() -> None:
    chunks = [
        chunk({"role": "assistant", "reasoning_content": "2+2"}),
        chunk({"reasoning_content": " is 4"}),
        chunk({"content": "4"}),
        chunk({}, "stop"),
    ]
    message = rebuild(run(chunks, thinking=True))
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].type == "thinking" and message.content[0].thinking == "2+2 is 4"
    assert [b.type for b in rebuild(run(chunks)).content] == ["text"]


def test_stop_sequence_and_length() -> None:
    matched = run([chunk({"content": "x"}, "stop", stop_reason="END")], stop_sequences=["END"])
    assert matched[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    cut = run([chunk({"content": "x"}, "length")])
    assert cut[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_an_empty_stream_is_still_a_whole_message() -> None:
    stream = run([])
    assert names(stream) == ["message_start", "ping", "message_delta", "message_stop"]
    assert rebuild(stream).content == []


def test_error_after_the_stream_began_is_anthropic_error_event() -> None:
    with pytest.raises(UpstreamStatusError):
        run([chunk({"content": "x"}), UpstreamStatusError(529, "Overloaded")])
    ((name, data),) = parse(stream_error(UpstreamStatusError(529, "Overloaded")))
    assert name == "error"
    assert ErrorResponse.model_validate(data).error.type == "overloaded_error"


def test_pings_while_the_upstream_is_silent() -> None:
    async def slow() -> AsyncIterator[StreamChunk]:
        yield chunk({"role": "assistant", "content": "Hola"})
        await asyncio.sleep(0.3)  # a long wait: longer than the ping interval below, always
        yield chunk({"content": " Lima"}, "stop")

    async def collect() -> bytes:
        stream = events(slow(), Encoder("shown"), ping_every=0.02)
        return b"".join([frame async for frame in stream])

    stream = parse(asyncio.run(collect()))
    kinds = names(stream)
    first_delta = kinds.index("content_block_delta")
    second_delta = kinds.index("content_block_delta", first_delta + 1)
    assert "ping" in kinds[first_delta:second_delta]  # sent while waiting, between the deltas
    message = rebuild(stream)
    assert message.content[0].type == "text" and message.content[0].text == "Hola Lima"


def test_leaving_early_closes_the_upstream() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[StreamChunk]:
        try:
            while True:
                yield chunk({"content": "x"})
                await asyncio.sleep(0)
        finally:
            closed.set()

    async def leave_after_three() -> bool:
        stream = events(endless(), Encoder("shown"))
        for _ in range(3):
            await anext(stream)
        await stream.aclose()  # what the SSE layer does when the client goes away
        return closed.is_set()

    assert asyncio.run(leave_after_three())


def test_claudes_own_events_are_relayed_as_they_came() -> None:
    vendor = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_vendor",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-test",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hm."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    ]
    chunks: list[StreamChunk | Exception] = [
        NativeChunk(chunk({"role": "assistant"}).data, vendor[:2]),
        NativeChunk(chunk({}).data, vendor[2:6]),
        NativeChunk(usage_chunk(5, 3).data, vendor[6:]),
    ]
    stream = run(chunks)
    assert [data for _, data in stream[1:]] == vendor[1:]  # no event of Puente's own added
    assert stream[0][1]["message"]["model"] == "shown"  # the name the client asked for
    message = rebuild(stream)
    assert message.content[0].type == "thinking" and message.content[0].signature == "s"
