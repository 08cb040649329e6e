"""A ``chat.completion`` → the Responses API's ``response`` object, as OpenAI shapes it.

Output items come in the order a model produces them: reasoning text (when the upstream gave
any, as vLLM's ``reasoning_content``), the assistant's text as one ``message`` with an
``output_text`` part, then one ``function_call`` per tool call. ``finish_reason`` decides the
status: ``length`` is ``incomplete`` (``max_output_tokens``), ``content_filter`` is
``incomplete`` (``content_filter``), anything else ``completed``.
"""

from __future__ import annotations

from typing import Any

from server.api.responses_api.request import JSON, Converted, new_id
from server.errors import PuenteError

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def incomplete_reason(finish_reason: Any) -> str | None:
    return _INCOMPLETE.get(str(finish_reason)) if finish_reason else None


def reasoning_item(text: str, item_id: str | None = None) -> JSON:
    return {
        "type": "reasoning",
        "id": item_id or new_id("rs"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def text_part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(text: str, status: str, item_id: str | None = None) -> JSON:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [text_part(text)],
    }


def function_call_item(call: JSON, item_id: str | None = None) -> JSON:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call.get("id") or new_id("call"),
        "name": function.get("name", ""),
        "arguments": function.get("arguments") or "",
        "status": "completed",
    }


def convert_usage(usage: JSON | None) -> JSON | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or 0
    written = prompt_details.get("cache_write_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": int(written)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def output_text(output: list[JSON]) -> str:
    return "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def error_object(error: PuenteError) -> JSON:
    # The openai types allow a fixed set of codes; these two say what a client may do next.
    code = "rate_limit_exceeded" if error.status_code == 429 else "server_error"
    return {"code": code, "message": error.message}


def response_object(
    converted: Converted,
    *,
    status: str,
    output: list[JSON],
    usage: JSON | None = None,
    incomplete: str | None = None,
    error: PuenteError | None = None,
    model: str | None = None,
) -> JSON:
    """The Response object; the same builder serves whole answers and every stream snapshot."""
    return {
        "id": converted.response_id,
        "object": "response",
        "created_at": converted.created_at,
        "status": status,
        "error": error_object(error) if error is not None else None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model or converted.model,
        "output": output,
        "output_text": output_text(output),
        "usage": usage,
        **converted.echo,
    }


def to_response(converted: Converted, completion: JSON) -> JSON:
    """The Response for a whole ``chat.completion`` (its first choice: Responses has no ``n``)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    incomplete = incomplete_reason(choice.get("finish_reason"))
    output: list[JSON] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(reasoning))
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(text, "incomplete" if incomplete else "completed"))
    elif message.get("refusal"):
        item = message_item("", "completed")
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for call in message.get("tool_calls") or []:
        output.append(function_call_item(call))
    return response_object(
        converted,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=convert_usage(completion.get("usage")),
        incomplete=incomplete,
        model=completion.get("model"),
    )
