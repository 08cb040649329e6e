"""``chat.completion.chunk``s → the Responses event stream (``event: <type>``, ``data: {…}``).

The sequence, as OpenAI sends it: ``response.created``, ``response.in_progress``; per output item
``response.output_item.added``, its deltas (``response.output_text.delta`` inside a
``response.content_part.added`` / ``.done`` pair, or ``response.function_call_arguments.delta``),
its ``.done`` events and ``response.output_item.done``; then ``response.completed`` (with usage)
or ``response.incomplete``. Every event has ``type`` and a ``sequence_number``; ``output_index``
counts items densely in the order they were added.

Tool calls are keyed by the chunk's ``index`` and kept open until the end, so arguments that
arrive interleaved (several calls streamed in parallel) all land on their own item. A failure
while iterating ends the stream with ``response.failed`` (``Encoder.failed``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from server.api.responses_api.answer import (
    Echo,
    finished,
    function_call_item,
    message_item,
    output_text,
    reasoning_item,
    reasoning_text,
)
from server.api.responses_api.request import new_id
from server.api.sse import event_frame
from server.errors import PuenteError
from server.pipeline.request import JSON, StreamChunk


@dataclass(slots=True)
class _Call:
    output_index: int
    item: JSON
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Text:
    output_index: int
    item: JSON
    parts: list[str] = field(default_factory=list)


class Encoder:
    """One stream's state: sequence numbers, the items open, the Response being built."""

    def __init__(self, echo: Echo, model: str) -> None:
        self.echo = echo
        self.model = model
        self.sequence = 0
        self.output: list[JSON] = []
        self.text: _Text | None = None
        self.reasoning: _Text | None = None
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.usage: JSON | None = None
        self.response: JSON | None = None
        """The final Response, once the stream ended (completed, incomplete or failed)."""

    def event(self, kind: str, **fields: object) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event_frame(kind, orjson.dumps(payload))

    def _snapshot(self, status: str) -> JSON:
        return self.echo.response(self.model, status, list(self.output))

    def start(self) -> list[bytes]:
        return [
            self.event("response.created", response=self._snapshot("in_progress")),
            self.event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def _add(self, item: JSON) -> tuple[int, bytes]:
        index = len(self.output)
        self.output.append(item)
        added = {**item, "status": "in_progress"} if "status" in item else dict(item)
        return index, self.event("response.output_item.added", output_index=index, item=added)

    # -- chunks ----------------------------------------------------------------------------------

    def chunk(self, data: JSON) -> list[bytes]:
        frames: list[bytes] = []
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # Responses have one answer; n > 1 is not a Responses setting
            delta = choice.get("delta") or {}
            if (thought := reasoning_text(delta)) is not None:
                frames += self._reasoning_delta(thought)
            if isinstance(delta.get("content"), str) and delta["content"]:
                frames += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                frames += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return frames

    def _reasoning_delta(self, piece: str) -> list[bytes]:
        frames = []
        if self.reasoning is None:
            index, added = self._add(reasoning_item("", new_id("rs")))
            self.reasoning = _Text(index, self.output[index])
            frames.append(added)
        r = self.reasoning
        r.parts.append(piece)
        frames.append(
            self.event(
                "response.reasoning_text.delta",
                item_id=r.item["id"],
                output_index=r.output_index,
                content_index=0,
                delta=piece,
            )
        )
        return frames

    def _text_delta(self, piece: str) -> list[bytes]:
        frames = self._close_reasoning()
        if self.text is None:
            item = message_item("", new_id("msg"), status="in_progress")
            part = item["content"][0]
            item["content"] = []
            index, added = self._add(item)
            self.text = _Text(index, item)
            frames += [
                added,
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                ),
            ]
        t = self.text
        t.parts.append(piece)
        frames.append(
            self.event(
                "response.output_text.delta",
                item_id=t.item["id"],
                output_index=t.output_index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        )
        return frames

    def _call_delta(self, call: JSON) -> list[bytes]:
        frames = self._close_reasoning() + self._close_text()
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        open_call = self.calls.get(key)
        if open_call is None:
            item = function_call_item(
                call.get("id") or new_id("call"),
                function.get("name") or "",
                "",
                new_id("fc"),
                status="in_progress",
            )
            index, added = self._add(item)
            open_call = self.calls[key] = _Call(index, item)
            frames.append(added)
        elif function.get("name") and not open_call.item["name"]:
            open_call.item["name"] = function["name"]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            open_call.arguments.append(piece)
            frames.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=open_call.item["id"],
                    output_index=open_call.output_index,
                    delta=piece,
                )
            )
        return frames

    # -- closing items ---------------------------------------------------------------------------

    def _close_reasoning(self) -> list[bytes]:
        r, self.reasoning = self.reasoning, None
        if r is None:
            return []
        text = "".join(r.parts)
        r.item["content"] = [{"type": "reasoning_text", "text": text}]
        return [
            self.event(
                "response.reasoning_text.done",
                item_id=r.item["id"],
                output_index=r.output_index,
                content_index=0,
                text=text,
            ),
            self.event("response.output_item.done", output_index=r.output_index, item=r.item),
        ]

    def _close_text(self) -> list[bytes]:
        t, self.text = self.text, None
        if t is None:
            return []
        text = "".join(t.parts)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        t.item["content"] = [part]
        t.item["status"] = "completed"
        common = {"item_id": t.item["id"], "output_index": t.output_index, "content_index": 0}
        return [
            self.event("response.output_text.done", **common, text=text, logprobs=[]),
            self.event("response.content_part.done", **common, part=part),
            self.event("response.output_item.done", output_index=t.output_index, item=t.item),
        ]

    def _close_calls(self) -> list[bytes]:
        frames = []
        for call in sorted(self.calls.values(), key=lambda c: c.output_index):
            item = call.item
            item["arguments"] = "".join(call.arguments)
            item["status"] = "completed"
            frames += [
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=call.output_index,
                    name=item["name"],
                    arguments=item["arguments"],
                ),
                self.event("response.output_item.done", output_index=call.output_index, item=item),
            ]
        self.calls = {}
        return frames

    def end(self) -> list[bytes]:
        frames = self._close_reasoning() + self._close_text() + self._close_calls()
        response = finished(self._snapshot("completed"), self.finish_reason, self.usage)
        response["output_text"] = output_text(response["output"])
        self.response = response
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return [*frames, self.event(kind, response=response)]

    def failed(self, error: PuenteError) -> bytes:
        response = self._snapshot("failed")
        response["error"] = {"code": _failure_code(error), "message": error.message}
        self.response = response
        return self.event("response.failed", response=response)


def _failure_code(error: PuenteError) -> str:
    """A code among those the Responses API uses for a failed response."""
    if error.status_code == 429:
        return "rate_limit_exceeded"
    if error.status_code == 400:
        return "invalid_prompt"
    return "server_error"


async def events(
    chunks: AsyncIterator[StreamChunk],
    encoder: Encoder,
    *,
    on_fail: Callable[[PuenteError], None],
    on_done: Callable[[JSON], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The whole event stream. ``on_done`` gets the finished Response before the last event is
    sent (so a client that continues from it at once finds it stored); ``on_fail`` hears a
    failure after the stream began, which then ends with ``response.failed``."""
    for frame in encoder.start():
        yield frame
    try:
        async for chunk in chunks:
            for frame in encoder.chunk(chunk.data):
                yield frame
    except PuenteError as error:
        on_fail(error)
        yield encoder.failed(error)
        return
    frames = encoder.end()
    assert encoder.response is not None
    await on_done(encoder.response)
    for frame in frames:
        yield frame
