"""OpenAI's response objects, built from another vendor's answer: ``chat.completion``, its chunks
and ``usage``, with OpenAI's field names and order."""

from __future__ import annotations

import time
import uuid
from typing import Any

from server.pipeline.request import JSON, StreamChunk


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def usage(
    prompt: int, completion: int, *, cached: int | None = None, reasoning: int | None = None
) -> JSON:
    """``completion`` includes ``reasoning`` tokens, as OpenAI counts them."""
    out: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def message(content: str | None, calls: list[JSON]) -> JSON:
    out: JSON = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        out["tool_calls"] = calls
    return out


def tool_call(call_id: str, name: str, arguments: str, **extra: Any) -> JSON:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
        **extra,
    }


def completion(cid: str, model: str, choices: list[JSON], usage: JSON | None) -> JSON:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def choice(index: int, message: JSON, finish_reason: str | None) -> JSON:
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


class ChunkMaker:
    """The chunks of one streamed answer: same ``id``, ``created`` and ``model`` on each."""

    def __init__(self, cid: str, model: str) -> None:
        self.id = cid
        self.model = model
        self.created = int(time.time())

    def _base(self) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def delta(self, delta: JSON, finish_reason: str | None = None, index: int = 0) -> StreamChunk:
        return StreamChunk(
            data={
                **self._base(),
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
        )

    def usage(self, usage: JSON) -> StreamChunk:
        """The last chunk: no choices, only usage (sent whether or not the client asked: the
        gateway counts tokens from it and drops it for clients that did not ask)."""
        return StreamChunk(data={**self._base(), "choices": [], "usage": usage})
