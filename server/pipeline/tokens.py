"""Counting a request's input tokens before answering it (``/v1/messages/count_tokens``,
``/v1/responses/input_tokens``): exactly where the target can count (Claude, and vLLM's own
tokenizer: ``TokenCounter``), else an estimate, documented as one.

Puente cannot count exactly without the target's tokenizer, so it estimates from the translated
request the way OpenAI's and Anthropic's own guidance does for English: about four characters per
token, plus a few tokens of framing per message. Text, tool schemas and tool arguments count;
an image counts as a flat 1,600 tokens (a 1,092 × 1,092 picture at Anthropic's rate of
width × height / 750). The answer says which in ``x-puente-token-count``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from server.pipeline.request import JSON

CHARS_PER_TOKEN = 4
PER_MESSAGE = 3
PER_IMAGE = 1600


def _characters(content: Any) -> tuple[int, int]:
    """(characters, images) in a chat message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    for part in content or []:
        if part.get("type") == "text":
            chars += len(part.get("text") or "")
        elif part.get("type") in ("image_url", "file"):
            images += 1
    return chars, images


def estimate(chat: JSON) -> int:
    """Input tokens of an OpenAI chat body, estimated."""
    chars = images = 0
    messages = chat.get("messages") or []
    for message in messages:
        c, i = _characters(message.get("content"))
        chars, images = chars + c, images + i
        for call in message.get("tool_calls") or []:
            chars += len(orjson.dumps(call.get("function") or {}))
    if chat.get("tools"):
        chars += len(orjson.dumps(chat["tools"]))
    text_tokens = math.ceil(chars / CHARS_PER_TOKEN)
    return text_tokens + PER_MESSAGE * len(messages) + PER_IMAGE * images
