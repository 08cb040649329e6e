"""``chat.completion.chunk``s → the Responses API's typed SSE events.

The sequence, as OpenAI sends it::

    response.created, response.in_progress
    per output item:  response.output_item.added
                      message:        response.content_part.added, response.output_text.delta…,
                                      response.output_text.done, response.content_part.done
                      function_call:  response.function_call_arguments.delta…, .done
                      reasoning:      response.reasoning_text.delta…, .done
                      response.output_item.done
    response.completed (with usage) | response.incomplete | response.failed

Every event has ``type`` and a dense ``sequence_number``; output items get dense
``output_index`` values in the order they start. Text closes when a tool call starts; tool calls
stay open until the end, because chat chunks may interleave their arguments by ``index``. A
``PuenteError`` raised by the upstream stream ends the sequence with ``response.failed`` (the
output so far included), never a silent cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.api.responses_api.answer import (
    convert_usage,
    function_call_item,
    incomplete_reason,
    message_item,
    reasoning_item,
    response_object,
    text_part,
)
from server.api.responses_api.request import JSON, Converted, new_id
from server.errors import PuenteError


def encode(event: JSON) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass(slots=True)
class _Open:
    """An output item being streamed."""

    kind: str  # "message" | "function_call" | "reasoning"
    index: int
    item_id: str
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    done: bool = False


class ResponseEvents:
    """One response's event sequence. ``final`` is the last Response object once it ended."""

    def __init__(self, converted: Converted) -> None:
        self.converted = converted
        self.final: JSON | None = None
        self._sequence = 0
        self._items: list[_Open] = []
        self._message: _Open | None = None
        self._reasoning: _Open | None = None
        self._calls: dict[int, _Open] = {}
        self._output: dict[int, JSON] = {}
        self._finish: Any = None
        self._usage: JSON | None = None

    def _event(self, kind: str, **fields: Any) -> JSON:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self, status: str, **extra: Any) -> JSON:
        output = [self._output[i] for i in sorted(self._output)]
        return response_object(self.converted, status=status, output=output, **extra)

    async def events(self, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        yield self._event("response.created", response=self._snapshot("in_progress"))
        yield self._event("response.in_progress", response=self._snapshot("in_progress"))
        try:
            async for chunk in chunks:
                for event in self._chunk(chunk):
                    yield event
        except PuenteError as error:
            for event in self._close_all("incomplete"):
                yield event
            yield self.failed(error)
            return
        reason = incomplete_reason(self._finish)
        for event in self._close_all("incomplete" if reason else "completed"):
            yield event
        status = "incomplete" if reason else "completed"
        self.final = self._snapshot(status, usage=convert_usage(self._usage), incomplete=reason)
        yield self._event(f"response.{status}", response=self.final)

    def failed(self, error: PuenteError) -> JSON:
        """The ``response.failed`` event that ends this sequence early."""
        self.final = self._snapshot("failed", error=error)
        return self._event("response.failed", response=self.final)

    # -- one chunk -------------------------------------------------------------------------------

    def _chunk(self, chunk: JSON) -> list[JSON]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not choices:
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta") or {}
        events: list[JSON] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._reasoning_delta(reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            events += self._text_delta(content)
        for call in delta.get("tool_calls") or []:
            events += self._call_delta(call)
        return events

    def _start(self, kind: str, item: JSON) -> tuple[_Open, JSON]:
        opened = _Open(kind, len(self._items), item["id"])
        self._items.append(opened)
        return opened, self._event(
            "response.output_item.added", output_index=opened.index, item=item
        )

    def _reasoning_delta(self, text: str) -> list[JSON]:
        events = []
        if self._reasoning is None or self._reasoning.done:
            item = reasoning_item("", new_id("rs"))
            item["content"], item["status"] = [], "in_progress"
            self._reasoning, added = self._start("reasoning", item)
            events.append(added)
        opened = self._reasoning
        opened.text.append(text)
        events.append(
            self._event(
                "response.reasoning_text.delta",
                item_id=opened.item_id,
                output_index=opened.index,
                content_index=0,
                delta=text,
            )
        )
        return events

    def _text_delta(self, text: str) -> list[JSON]:
        events = []
        if self._reasoning is not None and not self._reasoning.done:
            events += self._close(self._reasoning, "completed")
        if self._message is None or self._message.done:
            item = message_item("", "in_progress", new_id("msg"))
            item["content"] = []
            self._message, added = self._start("message", item)
            events.append(added)
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message.item_id,
                    output_index=self._message.index,
                    content_index=0,
                    part=text_part(""),
                )
            )
        opened = self._message
        opened.text.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=opened.item_id,
                output_index=opened.index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, call: JSON) -> list[JSON]:
        events: list[JSON] = []
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        opened = self._calls.get(index)
        if opened is None:
            for other in (self._reasoning, self._message):
                if other is not None and not other.done:
                    events += self._close(other, "completed")
            item = function_call_item(
                {"id": call.get("id"), "function": {"name": function.get("name")}},
                new_id("fc"),
            )
            item["status"] = "in_progress"
            opened, added = self._start("function_call", item)
            opened.call_id, opened.name = item["call_id"], item["name"]
            self._calls[index] = opened
            events.append(added)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            opened.text.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=opened.item_id,
                    output_index=opened.index,
                    delta=arguments,
                )
            )
        return events

    # -- closing -----------------------------------------------------------------------------------

    def _close_all(self, status: str) -> list[JSON]:
        events: list[JSON] = []
        for opened in self._items:
            if not opened.done:
                events += self._close(opened, status)
        return events

    def _close(self, opened: _Open, status: str) -> list[JSON]:
        opened.done = True
        text = "".join(opened.text)
        where = {"item_id": opened.item_id, "output_index": opened.index}
        events = []
        if opened.kind == "message":
            item = message_item(text, status, opened.item_id)
            events.append(
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                )
            )
            events.append(
                self._event(
                    "response.content_part.done", **where, content_index=0, part=text_part(text)
                )
            )
        elif opened.kind == "function_call":
            item = function_call_item(
                {"id": opened.call_id, "function": {"name": opened.name, "arguments": text}},
                opened.item_id,
            )
            item["status"] = status
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=opened.name,
                    arguments=text,
                )
            )
        else:
            item = reasoning_item(text, opened.item_id)
            item["status"] = status
            events.append(
                self._event("response.reasoning_text.done", **where, content_index=0, text=text)
            )
        self._output[opened.index] = item
        events.append(
            self._event("response.output_item.done", output_index=opened.index, item=item)
        )
        return events
