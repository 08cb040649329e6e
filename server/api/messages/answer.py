"""The pipeline's ``chat.completion`` → an Anthropic ``Message``.

Content: the reasoning text (vLLM's ``reasoning_content`` / ``reasoning``) becomes a ``thinking``
block when the request enabled thinking; the text a ``text`` block; each tool call a ``tool_use``
block with its arguments parsed. ``stop_reason`` comes from ``finish_reason`` through the one
table in ``anthropic_translate``; ``stop_sequence`` is known where the upstream says which one
matched (vLLM's ``stop_reason``). Usage: OpenAI's ``prompt_tokens`` include cached tokens,
Anthropic's ``input_tokens`` do not, so cached tokens are reported once, as cache reads.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from server.pipeline.request import JSON
from server.providers.anthropic_translate import STOP_REASONS

log = logging.getLogger("puente.messages")


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def usage(openai: Any) -> JSON:
    """OpenAI ``usage`` → Anthropic's (the inverse of ``anthropic_translate.usage``)."""
    openai = openai if isinstance(openai, dict) else {}
    details = openai.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    prompt = int(openai.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": int(openai.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop_reason(
    finish_reason: Any, matched: Any, stop_sequences: list[str], tool_calls: bool
) -> tuple[str, str | None]:
    """``finish_reason`` (and the stop string vLLM says matched) → ``stop_reason`` and
    ``stop_sequence``."""
    if isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    if tool_calls or finish_reason == "function_call":
        return "tool_use", None  # some servers say "stop" after a tool call
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def tool_input(arguments: Any, name: str) -> JSON:
    """A tool call's arguments as the object Anthropic clients expect in ``input``."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        # A small model can write broken JSON; an empty input lets the client's tool refuse it
        # instead of the whole answer failing.
        log.warning("tool call %s had arguments that are not a JSON object", name)
        return {}
    return parsed


def reasoning_of(node: JSON) -> str | None:
    """vLLM names it ``reasoning_content`` (older) or ``reasoning`` (newer)."""
    for key in ("reasoning_content", "reasoning"):
        value = node.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def to_message(completion: JSON, *, stop_sequences: list[str], thinking: bool) -> JSON:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reply = choice.get("message") or {}
    content: list[JSON] = []
    if thinking and (reasoning := reasoning_of(reply)):
        # Not Anthropic's model, so nothing to sign: clients send it back and Puente drops it.
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = reply.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = reply.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = reply.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                "name": name,
                "input": tool_input(function.get("arguments"), name),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences, bool(calls)
    )
    if isinstance(refusal, str) and refusal:
        reason = "refusal"
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(completion.get("usage")),
    }
