"""OpenAI Chat Completions ⇄ Anthropic Messages (https://docs.anthropic.com/en/api/messages).

Requests: system and developer messages become ``system``; consecutive turns of one role merge
(the API wants user and assistant turns to alternate); ``tool`` messages become ``tool_result``
blocks in the next user turn; assistant ``tool_calls`` become ``tool_use`` blocks; images become
``base64`` or ``url`` sources (Anthropic fetches URLs itself). ``max_tokens`` is required by the
API, so the model's configured default fills in.

Answers and stream events are read in ``anthropic_answer``.
"""

from __future__ import annotations

import logging

from server.config import ModelConfig
from server.pipeline.request import JSON, ChatRequest
from server.providers import chat_params as p
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
    """The body of the Messages request (what ``AsyncAnthropic.messages.create`` would send)."""
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
    # Sampling parameters (API versions from 2026-10-21 refuse them, older ones and older models
    # take them; the SDK has no arguments for them): sent as given, the API decides.
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            params[key] = body[key]
    return params


def _tool(function: p.Function) -> JSON:
    tool: JSON = {"name": function.name, "input_schema": function.parameters}
    if function.description:
        tool["description"] = function.description
    if function.strict:
        tool["strict"] = True
    return tool
