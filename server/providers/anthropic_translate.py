"""OpenAI Chat Completions ⇄ Anthropic Messages (https://docs.anthropic.com/en/api/messages).

Requests: system and developer messages become ``system``; consecutive turns of one role merge
(the API wants user and assistant turns to alternate); ``tool`` messages become ``tool_result``
blocks in the next user turn; assistant ``tool_calls`` become ``tool_use`` blocks; images become
``base64`` or ``url`` sources (Anthropic fetches URLs itself). ``max_tokens`` is required by the
API, so the model's configured default fills in.

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
from anthropic.types import Message, RawMessageStreamEvent

from server.config import ModelConfig
from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers import chat_params as p
from server.providers import chat_shapes as shapes
from server.providers.images import parse_data_url

log = logging.getLogger("puente.anthropic")

VENDOR = "Anthropic"
DEFAULT_MAX_TOKENS = 4096
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

# Anthropic's stop_reason → OpenAI's finish_reason. Read backwards by the Messages front door
# (server/api/messages/), the first stop_reason listed for a finish_reason is the one it becomes.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}

# OpenAI's tool_choice modes ↔ Anthropic's tool_choice types (a named tool is ``tool`` ↔
# ``function``); the Messages front door reads it backwards.
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}

# Fields of an OpenAI request this module reads; any other is left behind (and logged).
_READ = frozenset(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "n",
        "user",
        "logprobs",
        "top_logprobs",
        "seed",
    ]
)


# -- request --------------------------------------------------------------------------------------


def _image_block(part: p.ImageURL) -> JSON:
    if part.url.startswith("data:"):
        image = parse_data_url(part.url, part.param)
        if image.media_type not in MEDIA_TYPES:
            raise p.unsupported(
                part.param,
                f"Anthropic takes JPEG, PNG, GIF and WebP images, not '{image.media_type}'.",
            )
        source: JSON = {"type": "base64", "media_type": image.media_type, "data": image.base64}
    elif part.url.startswith(("https://", "http://")):
        source = {"type": "url", "url": part.url}
    else:
        raise p.invalid(part.param, "Image URLs must be http(s) or data: URLs.")
    return {"type": "image", "source": source}


def _blocks(parts: list[p.Part]) -> list[JSON]:
    return [
        {"type": "text", "text": part.text} if isinstance(part, p.Text) else _image_block(part)
        for part in parts
    ]


def _tool_result(message: JSON, param: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise p.invalid(f"{param}.tool_call_id", f"'{param}.tool_call_id' is required.")
    block: JSON = {"type": "tool_result", "tool_use_id": call_id}
    text = p.plain_text(message.get("content"), f"{param}.content", VENDOR)
    if text:
        block["content"] = text
    return block


def convert_messages(messages: list[JSON]) -> tuple[list[str], list[JSON]]:
    """The ``system`` texts and the alternating ``messages`` of a Messages request."""
    system: list[str] = []
    turns: list[JSON] = []

    def add(role: str, blocks: list[JSON]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        role, param = message["role"], f"messages[{i}]"
        content = message.get("content")
        if role in ("system", "developer"):
            text = p.plain_text(content, f"{param}.content", VENDOR)
            if text:
                system.append(text)
        elif role == "user":
            add("user", _blocks(p.content_parts(content, f"{param}.content", VENDOR)))
        elif role == "assistant":
            text = p.plain_text(content, f"{param}.content", VENDOR)
            blocks: list[JSON] = [{"type": "text", "text": text}] if text else []
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in p.tool_calls(message, param)
            ]
            add("assistant", blocks)
        elif role == "tool":
            add("user", [_tool_result(message, param)])
        else:
            raise p.unsupported(
                f"{param}.role", f"Messages with role '{role}' are not supported; use 'tool'."
            )
    return system, turns


def _tool_choice(body: JSON) -> JSON | None:
    choice = p.tool_choice(body)
    if choice is not None and choice.mode == "function":
        out: JSON = {"type": "tool", "name": choice.name}
    else:
        out = {"type": TOOL_CHOICES[choice.mode if choice is not None else "auto"]}
    if out["type"] == "none":
        return out
    if body.get("parallel_tool_calls") is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # the API's default (auto, parallel calls allowed) is what was asked
    return out


def build_params(request: ChatRequest, config: ModelConfig) -> JSON:
    """The keyword arguments of ``AsyncAnthropic.messages.create`` for this request."""
    body = request.body
    p.single_choice(body, VENDOR)
    p.no_logprobs(body, VENDOR)
    temperature = body.get("temperature")
    if temperature is not None and temperature > 1:
        raise p.invalid(
            "temperature",
            f"Anthropic models take a temperature between 0 and 1; {temperature:g} is out of "
            "range (Puente does not clamp it).",
        )
    ignored = sorted(set(body) - _READ)
    if ignored:
        log.debug("fields Anthropic has no counterpart for, left out: %s", ", ".join(ignored))

    system, messages = convert_messages(request.messages)
    fmt = p.response_format(body)
    if fmt.kind == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    params: JSON = {
        "model": request.upstream_model,
        "max_tokens": p.max_tokens(body) or config.max_tokens_default or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        params["system"] = [{"type": "text", "text": text} for text in system]
    if stops := p.stop_sequences(body):
        params["stop_sequences"] = stops
    if functions := p.functions(body, VENDOR):
        params["tools"] = [_tool(f) for f in functions]
        if (choice := _tool_choice(body)) is not None:
            params["tool_choice"] = choice
    if fmt.kind == "json_schema":
        params["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema}}
    if isinstance(body.get("user"), str):
        params["metadata"] = {"user_id": body["user"]}
    # The SDK has no arguments for sampling parameters (API versions from 2026-10-21 refuse them,
    # older ones and older models take them): sent as given, the API decides.
    sampling = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    if sampling:
        params["extra_body"] = sampling
    return params


def _tool(function: p.Function) -> JSON:
    tool: JSON = {"name": function.name, "input_schema": function.parameters}
    if function.description:
        tool["description"] = function.description
    if function.strict:
        tool["strict"] = True
    return tool


# -- answer ---------------------------------------------------------------------------------------


def _field(node: Any, name: str) -> Any:
    return node.get(name) if isinstance(node, dict) else getattr(node, name, None)


def usage(raw: Any) -> JSON:
    """Anthropic's ``input_tokens`` leaves out cache reads and writes; OpenAI's prompt has all.
    ``output_tokens`` includes thinking, as OpenAI's ``completion_tokens`` includes reasoning."""
    cache_read = _field(raw, "cache_read_input_tokens") or 0
    cache_write = _field(raw, "cache_creation_input_tokens") or 0
    prompt = (_field(raw, "input_tokens") or 0) + cache_read + cache_write
    thinking = _field(_field(raw, "output_tokens_details"), "thinking_tokens")
    return shapes.usage(
        prompt, _field(raw, "output_tokens") or 0, cached=cache_read, reasoning=thinking
    )


def to_completion(message: Message, model: str) -> JSON:
    text, calls = [], []
    for block in message.content:
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            arguments = orjson.dumps(block.input).decode()
            calls.append(shapes.tool_call(block.id, block.name, arguments))
    finish = FINISH_REASONS.get(message.stop_reason or "end_turn", "stop")
    reply = shapes.message("".join(text) if text or not calls else None, calls)
    return shapes.completion(
        message.id, model, [shapes.choice(0, reply, finish)], usage(message.usage)
    )


class StreamTranslator:
    """Anthropic's stream events → OpenAI chunks, for one answer."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.chunks = shapes.ChunkMaker("", model)
        self.tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self.usage: JSON = shapes.usage(0, 0)
        self.input_usage: Any = None
        self.finished = False

    def feed(self, event: RawMessageStreamEvent) -> Iterator[StreamChunk]:
        if event.type == "message_start":
            self.chunks = shapes.ChunkMaker(event.message.id, self.model)
            self.input_usage = event.message.usage
            self.usage = usage(event.message.usage)
            yield self.chunks.delta({"role": "assistant", "content": ""})
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                index = len(self.tool_index)
                self.tool_index[event.index] = index
                arguments = orjson.dumps(block.input).decode() if block.input else ""
                call = shapes.tool_call(block.id, block.name, arguments)
                yield self.chunks.delta({"tool_calls": [{"index": index, **call}]})
            elif block.type == "text" and block.text:
                yield self.chunks.delta({"content": block.text})
        elif event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                yield self.chunks.delta({"content": delta.text})
            elif delta.type == "input_json_delta" and delta.partial_json:
                index = self.tool_index.get(event.index, 0)
                piece = {"index": index, "function": {"arguments": delta.partial_json}}
                yield self.chunks.delta({"tool_calls": [piece]})
        elif event.type == "message_delta":
            # Usage here is cumulative; input counts appear only where they changed.
            latest: Any = event.usage
            if self.input_usage is not None:
                update = event.usage.model_dump(exclude_none=True)
                latest = self.input_usage.model_copy(update=update)
            self.usage = usage(latest)
            finish = FINISH_REASONS.get(event.delta.stop_reason or "end_turn", "stop")
            yield self.chunks.delta({}, finish)
        elif event.type == "message_stop":
            self.finished = True
            yield self.chunks.usage(self.usage)

    def check_finished(self) -> None:
        if not self.finished:
            raise UpstreamProtocolError(
                f"Anthropic ended the stream for model '{self.model}' before message_stop."
            )
