"""Reading an OpenAI Chat Completions request for translation into another vendor's format.

``ChatRequest.parse`` checked the field types Puente relies on; this module reads the parts a
translation needs (content parts, tool calls, tools, ``tool_choice``, ``response_format`` …) into
small typed values, and refuses with a 400 naming the field what no translation can carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from server.errors import InvalidRequest
from server.pipeline.request import JSON


def unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


# -- content --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class ImageURL:
    url: str
    param: str
    """Where the URL is in the request (``messages[1].content[2].image_url.url``), for errors."""


Part = Text | ImageURL


def content_parts(content: Any, param: str, vendor: str) -> list[Part]:
    """A message's content as text and image parts; empty text is dropped (vendors refuse it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content else []
    parts: list[Part] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}.text", f"'{where}.text' must be a string.")
            if text:
                parts.append(Text(text))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise invalid(f"{where}.image_url.url", "An image_url part needs a 'url'.")
            parts.append(ImageURL(url, f"{where}.image_url.url"))
        elif kind == "refusal":
            refusal = part.get("refusal")
            if isinstance(refusal, str) and refusal:
                parts.append(Text(refusal))
        else:
            raise unsupported(
                f"{where}.type",
                f"Content parts of type '{kind}' are not supported by {vendor} through Puente; "
                "use text and image_url parts.",
            )
    return parts


def plain_text(content: Any, param: str, vendor: str) -> str:
    """Content that must be text (system, developer and tool messages): parts joined by a blank
    line."""
    texts = []
    for part in content_parts(content, param, vendor):
        if not isinstance(part, Text):
            raise unsupported(part.param, f"{vendor} takes only text in this message.")
        texts.append(part.text)
    return "\n\n".join(texts)


# -- tool calls made by the assistant -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    extra: JSON
    """The call as the client sent it back, for vendor extras (Gemini's thought signature)."""


def tool_calls(message: JSON, param: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for j, call in enumerate(message.get("tool_calls") or []):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(where, f"'{where}' needs a function with a name.")
        raw = function.get("arguments") or "{}"
        try:
            arguments = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise invalid(
                f"{where}.function.arguments", f"'{where}.function.arguments' is not valid JSON."
            ) from None
        if not isinstance(arguments, dict):
            raise invalid(
                f"{where}.function.arguments",
                f"'{where}.function.arguments' must be a JSON object.",
            )
        call_id = call.get("id")
        calls.append(ToolCall(str(call_id or f"call_{j}"), function["name"], arguments, call))
    return calls


# -- tools offered to the model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    description: str | None
    parameters: JSON
    strict: bool


def functions(body: JSON, vendor: str) -> list[Function]:
    found: list[Function] = []
    for i, tool in enumerate(body.get("tools") or []):
        if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise unsupported(
                f"tools[{i}].type", f"{vendor} takes only tools of type 'function' through Puente."
            )
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"tools[{i}].function.name", "Every function tool needs a name.")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        found.append(
            Function(
                name, function.get("description"), parameters, bool(function.get("strict", False))
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


def tool_choice(body: JSON) -> ToolChoice | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return ToolChoice("function", name)
    raise invalid(
        "tool_choice",
        "'tool_choice' must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
    )


# -- output shape and limits ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"]
    schema: JSON | None = None
    name: str | None = None


def response_format(body: JSON) -> ResponseFormat:
    fmt = body.get("response_format")
    if fmt is None:
        return ResponseFormat("text")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid(
                "response_format.json_schema.schema",
                "'response_format.json_schema.schema' must be a JSON Schema object.",
            )
        return ResponseFormat("json_schema", schema, spec.get("name"))
    raise invalid("response_format.type", f"Unknown response_format type '{kind}'.")


def max_tokens(body: JSON) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if value else None


def stop_sequences(body: JSON) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def single_choice(body: JSON, vendor: str) -> None:
    if (body.get("n") or 1) > 1:
        raise unsupported("n", f"{vendor} answers one choice per request; 'n' must be 1.")


def no_logprobs(body: JSON, vendor: str) -> None:
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", f"{vendor} does not return log probabilities.")
