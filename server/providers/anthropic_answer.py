"""Anthropic's answers → OpenAI's: a whole ``Message`` and the stream's events, read as the
plain JSON they arrive as (https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming).

Read directly rather than built into the SDK's types first: ``construct_type`` cost about a third
of the provider's CPU per answer and per event (``bench/README.md``, "Anthropic on plain JSON").
What the SDK's types guaranteed is checked here instead, only for the fields read: a field of the
wrong type, a count that is not a non-negative integer or an event without its parts is an
``UpstreamProtocolError`` (502 ``upstream_bad_response``), never a crash. Block, delta and event
types Puente has no use for (thinking, signatures, citations, server tools, ones added later) are
skipped, as the SDK's types let them through.

Answers: text blocks join into ``content``, ``tool_use`` blocks into ``tool_calls``; thinking blocks
are not passed on. Streams: ``message_start`` → the role chunk, ``content_block_*`` → content and
tool-call deltas (OpenAI's ``index``, with ``id`` and ``name`` once), ``message_delta`` → the
``finish_reason`` chunk, ``message_stop`` → the usage chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson

from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, StreamChunk
from server.providers import chat_shapes as shapes
from server.providers.anthropic_translate import FINISH_REASONS

log = logging.getLogger("puente.anthropic")

# Anthropic's usage counts (``input_tokens`` leaves out the cache's reads and writes).
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class _Reader:
    """Checked access to the fields of one answer, refusing it with a message naming the field."""

    __slots__ = ("model",)

    def __init__(self, model: str) -> None:
        self.model = model

    def refuse(self, what: str) -> UpstreamProtocolError:
        log.warning("Anthropic answered off-protocol for %s: %s", self.model, what)
        return UpstreamProtocolError(
            f"Anthropic answered model '{self.model}' with something that is not its API ({what})."
        )

    def obj(self, node: JSON, key: str, where: str) -> JSON:
        value = node.get(key)
        if not isinstance(value, dict):
            raise self.refuse(f"{where}.{key} is not an object")
        return value

    def text(self, node: JSON, key: str, where: str, *, optional: bool = False) -> str:
        value = node.get(key)
        if isinstance(value, str) or (optional and value is None):
            return value or ""
        raise self.refuse(f"{where}.{key} is not a string")

    def index(self, event: JSON) -> int:
        value = event.get("index")
        if type(value) is not int or value < 0:  # bool is an int subclass
            raise self.refuse(f"{event.get('type')}.index is not a block index")
        return value

    def stop_reason(self, node: JSON, where: str) -> str:
        reason = node.get("stop_reason")
        if reason is not None and not isinstance(reason, str):
            raise self.refuse(f"{where}.stop_reason is not a string")
        # A stop reason added after this table was written still ends the answer.
        return FINISH_REASONS.get(reason or "end_turn", "stop")

    def usage(self, raw: Any, where: str) -> JSON:
        """Anthropic's ``input_tokens`` leaves out cache reads and writes; OpenAI's prompt has
        all. ``output_tokens`` includes thinking, as OpenAI's ``completion_tokens`` includes
        reasoning."""
        if raw is None:
            raw = {}  # no usage is no counts, as the SDK's types read it
        elif not isinstance(raw, dict):
            raise self.refuse(f"{where} is not an object")
        counts = [self.count(raw.get(key), f"{where}.{key}") for key in _COUNTS]
        prompt, output, cache_read, cache_write = counts
        thinking = None
        details = raw.get("output_tokens_details")
        if isinstance(details, dict) and details.get("thinking_tokens") is not None:
            thinking = self.count(details["thinking_tokens"], f"{where}.thinking_tokens")
        return shapes.usage(
            prompt + cache_read + cache_write, output, cached=cache_read, reasoning=thinking
        )

    def count(self, value: Any, where: str) -> int:
        if value is None:
            return 0
        if type(value) is not int or value < 0:
            raise self.refuse(f"{where} is not a token count")
        return value

    def tool_input(self, block: JSON, where: str) -> Any:
        value = block.get("input")
        if value is not None and not isinstance(value, dict):
            raise self.refuse(f"{where}.input is not an object")
        return value


def to_completion(message: Any, model: str) -> JSON:
    """A whole ``Message`` as a ``chat.completion`` for ``model`` (the name the client asked)."""
    read = _Reader(model)
    if not isinstance(message, dict):
        raise read.refuse("the answer is not an object")
    blocks = message.get("content")
    if not isinstance(blocks, list):
        raise read.refuse("content is not a list")
    text, calls = [], []
    for i, block in enumerate(blocks):
        where = f"content[{i}]"
        if not isinstance(block, dict):
            raise read.refuse(f"{where} is not an object")
        kind = block.get("type")
        if kind == "text":
            text.append(read.text(block, "text", where))
        elif kind == "tool_use":
            arguments = orjson.dumps(read.tool_input(block, where) or {}).decode()
            calls.append(
                shapes.tool_call(
                    read.text(block, "id", where), read.text(block, "name", where), arguments
                )
            )
        elif not isinstance(kind, str):
            raise read.refuse(f"{where}.type is not a string")
    finish = read.stop_reason(message, "message")
    reply = shapes.message("".join(text) if text or not calls else None, calls)
    return shapes.completion(
        read.text(message, "id", "message"),
        model,
        [shapes.choice(0, reply, finish)],
        read.usage(message.get("usage"), "usage"),
    )


class StreamTranslator:
    """Anthropic's stream events (parsed JSON objects) → OpenAI chunks, for one answer."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.read = _Reader(model)
        self.chunks = shapes.ChunkMaker("", model)
        self.tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self.usage: JSON = shapes.usage(0, 0)
        self.input_usage: JSON | None = None
        self.finished = False

    def feed(self, event: JSON) -> Iterator[StreamChunk]:
        kind = event.get("type")
        if kind == "content_block_delta":  # the most frequent, first
            yield from self._delta(event)
        elif kind == "message_start":
            message = self.read.obj(event, "message", "message_start")
            message_id = self.read.text(message, "id", "message_start")
            self.chunks = shapes.ChunkMaker(message_id, self.model)
            usage = message.get("usage")
            self.usage = self.read.usage(usage, "message_start.usage")
            self.input_usage = usage if isinstance(usage, dict) else None
            yield self.chunks.delta({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            yield from self._block_start(event)
        elif kind == "message_delta":
            delta = self.read.obj(event, "delta", "message_delta")
            latest = event.get("usage")
            if latest is not None and not isinstance(latest, dict):
                raise self.read.refuse("message_delta.usage is not an object")
            # Usage here is cumulative; input counts appear only where they changed.
            changed = {k: v for k, v in (latest or {}).items() if v is not None}
            self.usage = self.read.usage({**(self.input_usage or {}), **changed}, "usage")
            yield self.chunks.delta({}, self.read.stop_reason(delta, "message_delta"))
        elif kind == "message_stop":
            self.finished = True
            yield self.chunks.usage(self.usage)
        elif not isinstance(kind, str):
            raise self.read.refuse("an event has no type")

    def _block_start(self, event: JSON) -> Iterator[StreamChunk]:
        where = "content_block_start.content_block"
        index = self.read.index(event)
        block = self.read.obj(event, "content_block", "content_block_start")
        kind = block.get("type")
        if kind == "tool_use":
            position = len(self.tool_index)
            self.tool_index[index] = position
            given = self.read.tool_input(block, where)
            arguments = orjson.dumps(given).decode() if given else ""
            call_id, name = self.read.text(block, "id", where), self.read.text(block, "name", where)
            call = shapes.tool_call(call_id, name, arguments)
            yield self.chunks.delta({"tool_calls": [{"index": position, **call}]})
        elif kind == "text":
            if text := self.read.text(block, "text", where, optional=True):
                yield self.chunks.delta({"content": text})
        elif not isinstance(kind, str):
            raise self.read.refuse(f"{where}.type is not a string")

    def _delta(self, event: JSON) -> Iterator[StreamChunk]:
        index = self.read.index(event)
        delta = self.read.obj(event, "delta", "content_block_delta")
        kind = delta.get("type")
        if kind == "text_delta":
            yield self.chunks.delta({"content": self.read.text(delta, "text", "text_delta")})
        elif kind == "input_json_delta":
            if partial := self.read.text(delta, "partial_json", "input_json_delta"):
                position = self.tool_index.get(index, 0)
                piece = {"index": position, "function": {"arguments": partial}}
                yield self.chunks.delta({"tool_calls": [piece]})
        elif not isinstance(kind, str):
            raise self.read.refuse("content_block_delta.delta.type is not a string")

    def check_finished(self) -> None:
        if not self.finished:
            raise UpstreamProtocolError(
                f"Anthropic ended the stream for model '{self.model}' before message_stop."
            )
