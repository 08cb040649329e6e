"""A ``chat.completion`` → a Response object, as OpenAI's (``openai.types.responses.Response``).

``Echo`` holds what every Response repeats from its request (settings, tools, ids); the stream
(``stream.py``) builds its Responses from the same pieces, so a streamed and a whole answer
read alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.api.responses_api.request import new_id
from server.pipeline.request import JSON


@dataclass(slots=True)
class Echo:
    """One request's Response skeleton: its id, creation time and echoed settings."""

    body: JSON
    function_tools: list[JSON]
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(self, model: str, status: str, output: list[JSON]) -> JSON:
        body = self.body
        text = body.get("text") if isinstance(body.get("text"), dict) else None
        given = body.get("reasoning")
        reasoning: JSON = given if isinstance(given, dict) else {}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "output_text": output_text(output),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {
                "effort": reasoning.get("effort"),
                "summary": reasoning.get("summary"),
            },
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": (text or {}).get("format") or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": self.function_tools,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def output_text(output: list[JSON]) -> str:
    """The SDKs' ``output_text``: every output_text part of every message, joined."""
    return "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def usage(chat_usage: JSON | None) -> JSON | None:
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    written = details.get("cache_write_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": int(written)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def finished(response: JSON, finish_reason: str | None, chat_usage: JSON | None) -> JSON:
    """``response`` with its final status (from the chat finish reason) and usage."""
    response["usage"] = usage(chat_usage)
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    return response


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> JSON:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def reasoning_item(text: str, item_id: str | None = None) -> JSON:
    return {
        "id": item_id or new_id("rs"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def function_call_item(
    call_id: str, name: str, arguments: str, item_id: str | None = None, status: str = "completed"
) -> JSON:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_text(message: JSON) -> str | None:
    """The reasoning a chat server gave beside the answer (vLLM ``reasoning_content`` or
    ``reasoning``), if any."""
    value: Any = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) and value else None


def to_response(completion: JSON, echo: Echo, model: str) -> JSON:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    output: list[JSON] = []
    if (thought := reasoning_text(message)) is not None:
        output.append(reasoning_item(thought))
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item(content))
    elif isinstance(message.get("refusal"), str):
        item = message_item("")
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "",
            )
        )
    response = echo.response(model, "completed", output)
    return finished(response, choice.get("finish_reason"), completion.get("usage"))
