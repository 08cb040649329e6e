"""A Responses API request → the pipeline's neutral request (an OpenAI Chat Completions body).

What maps where:

    input (string | items)      messages (after any stored history and ``instructions``)
      message                   a message of that role; ``developer`` becomes ``system``
        input_text/output_text  text parts (joined into a string for non-user roles)
        input_image             an ``image_url`` part
      function_call             an assistant message's ``tool_calls`` (consecutive calls merge)
      function_call_output      a ``tool`` message
      reasoning                 dropped: chat has no place for it, and it is never refused
      item_reference            the referenced stored item, in its place
    instructions                a system message first (not carried to the next turn, as OpenAI)
    tools (type function)       chat tools; other types are skipped and reported
    tool_choice                 the chat form; a choice naming a skipped tool becomes ``auto``
    max_output_tokens           max_completion_tokens
    text.format                 response_format
    reasoning.effort            reasoning_effort (Anthropic and Gemini translations drop it)
    everything else unknown     copied into the chat body unchanged (vendor extras)

Responses-only fields (``store``, ``metadata``, ``previous_response_id``, ``include``,
``truncation``, ``background`` …) are read here and never sent upstream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidRequest, NotFound

JSON = dict[str, Any]

log = logging.getLogger("puente.responses")

# Read here and not forwarded: they describe the response, not the generation.
_RESPONSES_ONLY = frozenset(
    {
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "text",
        "reasoning",
        "metadata",
        "store",
        "previous_response_id",
        "include",
        "truncation",
        "background",
        "conversation",
        "prompt",
        "stream",
        "stream_options",
        "max_tool_calls",
        "top_logprobs",
    }
)

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class Converted:
    """What the route needs from a parsed request."""

    chat: JSON
    """The OpenAI chat request body for the pipeline."""
    response_id: str
    created_at: int
    model: str
    stream: bool
    store: bool
    previous_response_id: str | None
    input_items: list[JSON]
    """This request's input as items (a string input becomes one user message), for the store."""
    echo: JSON
    """The request's settings as the Response object repeats them."""
    skipped_tools: list[str] = field(default_factory=list)


def _param_error(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{param}': {message}", param=param, code="invalid_value"
    )


def _text(content: Any, param: str) -> str:
    """Text of a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _param_error(f"{param}[{i}]", "expected an object.")
            if part.get("type") in _TEXT_PARTS:
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "refusal":
                texts.append(str(part.get("refusal", "")))
        return "".join(texts)
    raise _param_error(param, "expected a string or a list of content parts.")


def _user_parts(content: Any, param: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _param_error(param, "expected a string or a list of content parts.")
    parts: list[JSON] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"'{where}': only images given by 'image_url' (a URL or a data: URL) are"
                    " supported; 'file_id' needs OpenAI's file store.",
                    param=f"{where}.image_url",
                    code="unsupported_value",
                )
            image: JSON = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequest(
                f"'{where}': content part type {kind!r} is not supported; use input_text or"
                " input_image.",
                param=f"{where}.type",
                code="unsupported_value",
            )
    if all(part["type"] == "text" for part in parts):
        # Text alone goes as a string: every chat template reads that, not all read parts.
        return "\n".join(part["text"] for part in parts)
    return parts


class _Messages:
    """Builds chat messages from items, merging consecutive function calls into one turn."""

    def __init__(self) -> None:
        self.messages: list[JSON] = []

    def add(self, item: JSON, param: str) -> None:
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, param)
        elif kind == "function_call":
            self._call(item, param)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _param_error(f"{param}.call_id", "expected a string.")
            output = item.get("output", "")
            content = output if isinstance(output, str) else _text(output, f"{param}.output")
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind == "reasoning":
            return  # chat has no field for earlier reasoning; dropping it loses no instruction
        else:
            # Items of tools Puente cannot run (web_search_call, local_shell_call …) can only
            # come from another server's history; they carry nothing a chat model can read.
            log.info("responses: input item type %r skipped", kind)

    def _message(self, item: JSON, param: str) -> None:
        role = item.get("role")
        role = _ROLES.get(role) if isinstance(role, str) else None
        if role is None:
            raise _param_error(
                f"{param}.role", "expected one of 'user', 'assistant', 'system', 'developer'."
            )
        content = item.get("content")
        if role == "user":
            self.messages.append(
                {"role": "user", "content": _user_parts(content, f"{param}.content")}
            )
        else:
            self.messages.append({"role": role, "content": _text(content, f"{param}.content")})

    def _call(self, item: JSON, param: str) -> None:
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _param_error(f"{param}.{name}", "expected a string.")
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        elif last is not None and last["role"] == "assistant" and isinstance(last["content"], str):
            last["tool_calls"] = [call]  # the text the model said before calling
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def input_items(value: Any) -> list[JSON]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _param_error(f"input[{i}]", "expected an object.")
            if not isinstance(item.get("type", "message"), str):
                raise _param_error(f"input[{i}].type", "expected a string.")
        return list(value)
    if value is None:
        return []
    raise _param_error("input", "expected a string or a list of items.")


def resolve_references(items: Sequence[JSON], lookup: Callable[[str], JSON | None]) -> list[JSON]:
    """Each ``item_reference`` replaced by the item it names (``lookup`` searches the store)."""
    out = []
    for i, item in enumerate(items):
        if item.get("type") != "item_reference":
            out.append(item)
            continue
        ref = item.get("id")
        found = lookup(ref) if isinstance(ref, str) else None
        if found is None:
            raise NotFound(f"Item with id '{ref}' not found.", param=f"input[{i}].id")
        out.append(found)
    return out


def convert_tools(tools: Any) -> tuple[list[JSON], list[JSON], list[str]]:
    """(chat tools, the Responses tools kept, the types skipped)."""
    if tools is None:
        return [], [], []
    if not isinstance(tools, list):
        raise _param_error("tools", "expected a list.")
    chat, kept, skipped = [], [], []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _param_error(f"tools[{i}]", "expected an object.")
        kind = str(tool.get("type"))
        if kind != "function":
            skipped.append(kind)
            continue
        if not isinstance(tool.get("name"), str):
            raise _param_error(f"tools[{i}].name", "expected a string.")
        function: JSON = {"name": tool["name"]}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        chat.append({"type": "function", "function": function})
        kept.append(
            {
                "type": "function",
                "name": tool["name"],
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict"),
            }
        )
    if skipped:
        log.info("responses: tool types Puente cannot run were skipped: %s", ", ".join(skipped))
    return chat, kept, skipped


def convert_tool_choice(choice: Any, function_names: set[str]) -> str | JSON | None:
    if choice is None or isinstance(choice, str):
        return choice
    if not isinstance(choice, dict):
        raise _param_error("tool_choice", "expected a string or an object.")
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or name not in function_names:
            raise _param_error("tool_choice.name", "no function tool has that name.")
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        return mode if isinstance(mode, str) else "auto"
    return "auto"  # a hosted tool (web_search …) that was skipped


def convert_text_format(text: Any) -> JSON | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _param_error("text", "expected an object.")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _param_error("text.format.schema", "expected a JSON schema object.")
        schema: JSON = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise _param_error("text.format.type", "expected 'text', 'json_object' or 'json_schema'.")


def _echo(body: JSON, kept_tools: list[JSON], tool_choice: Any) -> JSON:
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "tools": kept_tools,
        "tool_choice": tool_choice if tool_choice is not None else "auto",
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "metadata": body.get("metadata") or {},
        "store": body.get("store", True),
        "previous_response_id": body.get("previous_response_id"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "background": False,
    }


def _check(body: JSON) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is a required property", param="model", code="missing_required_parameter"
        )
    for name in ("stream", "store", "parallel_tool_calls"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _param_error(name, "expected a boolean.")
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _param_error(name, "expected a string.")
    mot = body.get("max_output_tokens")
    if mot is not None and (not isinstance(mot, int) or isinstance(mot, bool) or mot < 1):
        raise _param_error("max_output_tokens", "expected an integer of at least 1.")
    for name in ("metadata", "reasoning"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _param_error(name, "expected an object.")


def convert(
    body: JSON, history: Sequence[JSON] = (), references: Mapping[str, JSON] | None = None
) -> Converted:
    """The chat request for a Responses request. ``history`` is the earlier conversation's items
    (from ``previous_response_id``), ``references`` items an ``item_reference`` may name."""
    _check(body)
    items = input_items(body.get("input"))
    refs = references or {}
    resolved = resolve_references(items, refs.get)
    chat_tools, kept_tools, skipped = convert_tools(body.get("tools"))

    messages = _Messages()
    if body.get("instructions"):
        messages.messages.append({"role": "system", "content": body["instructions"]})
    for i, item in enumerate(history):
        messages.add(item, f"previous_response_id[{i}]")
    for i, item in enumerate(resolved):
        messages.add(item, f"input[{i}]")
    if not messages.messages:
        raise InvalidRequest(
            "'input' is a required property", param="input", code="missing_required_parameter"
        )

    chat: JSON = {k: v for k, v in body.items() if k not in _RESPONSES_ONLY}
    chat["messages"] = messages.messages
    stream = bool(body.get("stream"))
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    tool_choice = body.get("tool_choice")
    if chat_tools:
        chat["tools"] = chat_tools
        names = {t["function"]["name"] for t in chat_tools}
        choice = convert_tool_choice(tool_choice, names)
        if choice is not None:
            chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    response_format = convert_text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        chat["reasoning_effort"] = effort

    return Converted(
        chat=chat,
        response_id=new_id("resp"),
        created_at=int(time.time()),
        model=body["model"],
        stream=stream,
        store=body.get("store", True) is not False,
        previous_response_id=body.get("previous_response_id"),
        input_items=resolved,
        echo=_echo(body, kept_tools, tool_choice),
        skipped_tools=skipped,
    )
