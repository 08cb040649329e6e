"""The pipeline's ``chat.completion.chunk`` stream → Anthropic's stream events, in its order
(https://docs.anthropic.com/en/docs/build-with-claude/streaming)::

    message_start, ping,
    (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta (stop_reason, usage), message_stop

Blocks never interleave: text, thinking and each tool call is a block of its own, opened when its
first piece arrives and closed when another kind starts. So an upstream that switches from text
to tool calls mid-stream, or sends several tool calls, gets one block per call, each with all of
its argument pieces. Chat upstreams send calls one after the other; a piece for a call whose block
is already closed cannot be placed and ends the stream with an error rather than a wrong input.

``message_start`` carries the input tokens when the first chunk does (vLLM's continuous usage
stats); the final ``message_delta`` always carries the real counts.

Chunks of a Claude model that got the request as it came (``NativeChunk``) carry Anthropic's own
events: those are relayed instead, as they came but for ``message.model`` (the name asked for).

A ``ping`` follows ``message_start``, as Anthropic sends one, and another whenever
``PING_INTERVAL`` passes without a chunk (a long prefill of a big prompt on a local engine): idle
proxies and clients with read timeouts then keep the connection. SDKs skip pings wherever they
come, even before ``message_start``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.api.messages.answer import message_id, reasoning_of, stop_reason, usage
from server.api.sse import event_frame
from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, StreamChunk
from server.providers.anthropic_native import NativeChunk

PING_INTERVAL = 10.0
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def event(payload: JSON) -> bytes:
    return event_frame(payload["type"], orjson.dumps(payload))


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""
    """Pieces received before the block could open (it needs the name)."""
    block: int | None = None
    closed: bool = False


@dataclass(slots=True)
class Encoder:
    """The events of one streamed answer; ``feed`` each chunk's data, then ``end``."""

    model: str
    stop_sequences: list[str] = field(default_factory=list)
    thinking: bool = False
    id: str = field(default_factory=message_id)
    _index: int = -1
    _open: tuple[str, int] | None = None  # ("text" | "thinking" | "tool", OpenAI call index)
    _calls: dict[int, _Call] = field(default_factory=dict)
    _finish: Any = None
    _matched: Any = None
    _usage: Any = None

    def start(self, first: JSON | None) -> bytes:
        message: JSON = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage((first or {}).get("usage")),
        }
        return event({"type": "message_start", "message": message}) + PING

    def feed(self, data: JSON) -> Iterator[bytes]:
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # Messages has one answer; n > 1 cannot be asked through this door
            delta = choice.get("delta") or {}
            if self.thinking and (reasoning := reasoning_of(delta)):
                yield from self._text("thinking", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield from self._text("text", content)
            for call in delta.get("tool_calls") or []:
                yield from self._tool(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")

    def end(self) -> bytes:
        out = b"".join(self._close())
        called = any(call.block is not None for call in self._calls.values())
        reason, sequence = stop_reason(self._finish, self._matched, self.stop_sequences, called)
        counts = usage(self._usage)
        out += event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": counts,
            }
        )
        return out + event({"type": "message_stop"})

    # -- blocks --------------------------------------------------------------------------------

    def _begin(self, block: JSON, kind: tuple[str, int]) -> Iterator[bytes]:
        yield from self._close()
        self._index += 1
        self._open = kind
        yield event({"type": "content_block_start", "index": self._index, "content_block": block})

    def _delta(self, delta: JSON) -> bytes:
        return event({"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close(self) -> Iterator[bytes]:
        if self._open is None:
            return
        if self._open[0] == "tool":
            self._calls[self._open[1]].closed = True
        self._open = None
        yield event({"type": "content_block_stop", "index": self._index})

    def _text(self, kind: str, text: str) -> Iterator[bytes]:
        if self._open != (kind, 0):
            block: JSON = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            yield from self._begin(block, (kind, 0))
        if kind == "text":
            yield self._delta({"type": "text_delta", "text": text})
        else:
            yield self._delta({"type": "thinking_delta", "thinking": text})

    def _tool(self, piece: JSON) -> Iterator[bytes]:
        index = piece.get("index", 0)
        call = self._calls.setdefault(index, _Call())
        function = piece.get("function") or {}
        call.id = call.id or str(piece.get("id") or "")
        call.name = call.name or str(function.get("name") or "")
        arguments = function.get("arguments") or ""
        if call.closed:
            if arguments:
                raise UpstreamProtocolError(
                    f"The upstream sent more arguments for tool call {index} after a later "
                    "call had started; Messages streams cannot interleave tool calls."
                )
            return
        if call.block is None:
            call.arguments += arguments
            if not call.name:
                return  # a block starts with its name: wait for it
            block = {
                "type": "tool_use",
                "id": call.id or "toolu_" + uuid.uuid4().hex[:24],
                "name": call.name,
                "input": {},
            }
            yield from self._begin(block, ("tool", index))
            call.block = self._index
            arguments, call.arguments = call.arguments, ""
        if arguments:
            yield self._delta({"type": "input_json_delta", "partial_json": arguments})


def _shown(payload: JSON, model: str) -> JSON:
    """A relayed event, with the name the client asked for in ``message_start``."""
    if payload.get("type") == "message_start" and isinstance(payload.get("message"), dict):
        return {**payload, "message": {**payload["message"], "model": model}}
    return payload


async def paced(
    chunks: AsyncIterator[StreamChunk], every: float
) -> AsyncGenerator[StreamChunk | None, None]:
    """The chunks, and None each time ``every`` seconds pass without one.

    One task of its own pulls the chunks, so the upstream is always read from the same task and a
    wait can time out without cancelling a read; a queue of one keeps it from reading ahead of
    the client. Leaving early (the client went away) cancels that task.
    """
    queue: asyncio.Queue[tuple[StreamChunk | None, Exception | None]] = asyncio.Queue(1)

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await queue.put((chunk, None))
        except Exception as error:  # raised again on the reader's side
            await queue.put((None, error))
        else:
            await queue.put((None, None))
        finally:
            # Cancelled while waiting for the reader, the chunks' generator is suspended, not
            # closed: close it now, so everything under it runs its ``finally`` here.
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    task = asyncio.create_task(pump(), name="messages stream")
    try:
        while True:
            try:
                chunk, error = await asyncio.wait_for(queue.get(), every)
            except TimeoutError:
                yield None
                continue
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def events(
    chunks: AsyncIterator[StreamChunk], encoder: Encoder, *, ping_every: float = PING_INTERVAL
) -> AsyncIterator[bytes]:
    """The whole event stream. A ``PuenteError`` from ``chunks`` propagates: the SSE layer ends
    the stream with the front door's ``event: error``."""
    started = native = False
    pacer = paced(chunks, ping_every)
    try:
        async for chunk in pacer:
            if chunk is None:
                yield PING
                continue
            if isinstance(chunk, NativeChunk):  # Anthropic's own events: relayed as they came
                native = True
                for payload in chunk.events:
                    yield event(_shown(payload, encoder.model))
                continue
            data = chunk.data
            if not started:
                started = True
                yield encoder.start(data)
            for frame in encoder.feed(data):
                yield frame
    finally:
        await pacer.aclose()  # ``async for`` leaves it suspended when this generator is closed
    if native:
        return
    if not started:
        yield encoder.start(None)
    yield encoder.end()
