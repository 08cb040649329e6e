"""A Responses request → an OpenAI Chat Completions body (the pipeline's neutral request).

``input`` is first made a list of items, each with an id (``normalize_input``): that list is what
a stored response keeps and what ``previous_response_id`` prepends. Items then become chat
messages (``to_messages``):

- ``message`` (roles user, assistant, system, developer; parts ``input_text``, ``output_text``,
  ``refusal``, ``input_image``) → a chat message; ``instructions`` → a leading system message;
- ``function_call`` → an assistant message's ``tool_calls`` (consecutive calls, one message);
- ``function_call_output`` → a ``tool`` message;
- ``reasoning`` and the items of tools Puente cannot run → dropped (never refused);
- ``item_reference`` → the item with that id among the conversation's earlier items.

Function tools become chat tools; the tool types Puente cannot run (web search, file search,
image generation, shells, MCP, namespaces, custom tools …) are skipped and named, so the route
can log them and say so in ``x-puente-skipped-tools``. Settings with a chat equivalent are
translated; Responses-only fields are dropped; unknown fields are passed on, as the chat door
does, because clients send vendor extras.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequest, NotFound
from server.pipeline.request import JSON

log = logging.getLogger("puente.responses")

# Fields this module translates (or keeps for the echo), never passed on as they are.
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "stream",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "reasoning",
        "user",
        "metadata",
        "store",
        "previous_response_id",
        "include",
        "truncation",
        "prompt_cache_key",
    }
)

# Responses-only fields with no chat equivalent: an upstream chat server would refuse them.
_DROPPED = frozenset(
    {
        "background",
        "conversation",
        "context_management",
        "max_tool_calls",
        "prompt",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "top_logprobs",
    }
)

_SETTINGS = ("temperature", "top_p")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class Translated:
    """A request's chat body, and what the answer and the store need from the request."""

    chat: JSON
    items: list[JSON]
    """This request's input items, normalised and with ids (what ``input_items`` lists)."""
    skipped_tools: list[str]
    function_tools: list[JSON]
    """The function tools, in the Responses shape (echoed in the Response object)."""


def _text_of(parts: Any, where: str) -> str:
    """The text of a content given as a string or a list of text parts."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise InvalidRequest(f"'{where}' must be a string or a list of parts.", param=where)
    texts = []
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
    return "".join(texts)


def _chat_part(part: Any, where: str) -> JSON:
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"'{where}.text' must be a string.", param=f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(
                f"'{where}.image_url' is required: Puente has no file store for 'file_id'.",
                param=f"{where}.image_url",
            )
        image: JSON = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(
        f"'{where}.type' {kind!r} is not supported: use input_text, output_text or input_image.",
        param=f"{where}.type",
    )


def _message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(
            f"'{where}.role' must be one of user, assistant, system, developer.",
            param=f"{where}.role",
        )
    content = item.get("content")
    if role != "user":
        # Chat servers take only text from these roles.
        return {"role": role, "content": _text_of(content, f"{where}.content")}
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"'{where}.content' must be a string or a list of parts.", param=f"{where}.content"
        )
    parts = [_chat_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}  # what every chat server reads
    return {"role": role, "content": parts}


def _output_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _text_of(value, "output")
    raise InvalidRequest("'function_call_output.output' must be a string.", param="output")


def normalize_input(value: Any) -> list[JSON]:
    """``input`` as a list of items, each with an id (kept as given where it had one)."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or a list of items.", param="input")
    items = []
    for i, given in enumerate(value):
        if not isinstance(given, dict):
            raise InvalidRequest(f"'input[{i}]' must be an object.", param=f"input[{i}]")
        item = dict(given)
        kind = item.setdefault("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": content}]
            item.setdefault("id", new_id("msg"))
            item.setdefault("status", "completed")
        elif kind == "function_call":
            item.setdefault("id", new_id("fc"))
        elif kind == "function_call_output":
            item.setdefault("id", new_id("fco"))
        items.append(item)
    return items


def to_messages(items: list[JSON], known: dict[str, JSON]) -> list[JSON]:
    """Chat messages for ``items``; ``known`` resolves ``item_reference`` ids."""
    messages: list[JSON] = []
    for i, given in enumerate(items):
        where = f"input[{i}]"
        item = given
        if given.get("type") == "item_reference":
            ref = given.get("id")
            if not isinstance(ref, str) or ref not in known:
                raise NotFound(
                    f"Item with id '{ref}' not found.", param=f"{where}.id", code="not_found"
                )
            item = known[ref]
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _output_text(item.get("output", "")),
                }
            )
        else:
            # reasoning, and the calls of tools Puente did not run: nothing a chat model can read.
            log.debug("responses: dropped a %r input item", kind)
    return messages


def _tools(tools: Any) -> tuple[list[JSON], list[JSON], list[str]]:
    """(chat tools, Responses function tools, names of the skipped tool types)."""
    if tools is None:
        return [], [], []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list.", param="tools")
    chat, functions, skipped = [], [], []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"'tools[{i}]' must be an object.", param=f"tools[{i}]")
        if tool.get("type") != "function":
            skipped.append(str(tool.get("name") or tool.get("type")))
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"'tools[{i}].name' is required.", param=f"tools[{i}].name")
        function: JSON = {"name": name}
        for field in ("description", "parameters", "strict"):
            if tool.get(field) is not None:
                function[field] = tool[field]
        chat.append({"type": "function", "function": function})
        functions.append(
            {
                "type": "function",
                "name": name,
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict"),
            }
        )
    return chat, functions, skipped


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return "required" if choice.get("mode") == "required" else "auto"
    return "auto"  # a hosted tool's choice: the tool itself was skipped


def _response_format(text: Any) -> JSON | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object.", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest(
                "'text.format.schema' is required for json_schema.", param="text.format.schema"
            )
        schema: JSON = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for field in ("strict", "description"):
            if fmt.get(field) is not None:
                schema[field] = fmt[field]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "'text.format.type' must be one of text, json_object, json_schema.",
        param="text.format.type",
    )


def translate(body: JSON, history: list[JSON]) -> Translated:
    """``body`` (a Responses request) as a chat body, after the conversation's ``history``
    (the items and outputs of the responses before it, when it continues one)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is a required property", param="model", code="missing_required_parameter"
        )
    if "input" not in body:
        raise InvalidRequest(
            "'input' is a required property", param="input", code="missing_required_parameter"
        )
    items = normalize_input(body["input"])
    known = {
        item["id"]: item
        for item in [*history, *items]
        if isinstance(item.get("id"), str) and item.get("type") != "item_reference"
    }
    messages = to_messages(history, known) + to_messages(items, known)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string.", param="instructions")
        messages.insert(0, {"role": "system", "content": instructions})
    if not messages:
        raise InvalidRequest("'input' has no message a model can read.", param="input")

    chat: JSON = {k: v for k, v in body.items() if k not in _HANDLED and k not in _DROPPED}
    chat["model"] = model
    chat["messages"] = messages
    if body.get("stream"):
        chat["stream"] = True
    tools, functions, skipped = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        if (choice := _tool_choice(body.get("tool_choice"))) is not None:
            chat["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer.",
                param="max_output_tokens",
                code="invalid_value",
            )
        chat["max_completion_tokens"] = limit
    for name in _SETTINGS:
        if body.get(name) is not None:
            chat[name] = body[name]
    if (fmt := _response_format(body.get("text"))) is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if isinstance(body.get("user"), str):
        chat["user"] = body["user"]
    return Translated(chat, items, skipped, functions)
