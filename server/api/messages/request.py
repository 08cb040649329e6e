"""An Anthropic Messages request → the pipeline's neutral request (an OpenAI chat body).

What is translated (https://docs.anthropic.com/en/api/messages):

- ``system`` (a string or text blocks) → one system message; ``cache_control`` is dropped.
- ``messages``: ``text`` → text parts; ``image`` (base64 or URL) → ``image_url`` parts (URLs are
  fetched, where a provider must, behind the SSRF guard of ``server/providers/images.py``);
  ``document`` with a text source → text, a base64 PDF → a ``file`` part for OpenAI, dropped
  elsewhere; ``tool_use`` → the assistant's ``tool_calls``; ``tool_result`` → ``tool`` messages
  (placed first: chat wants them right after the calls), ``is_error`` said in the text;
  ``thinking`` / ``redacted_thinking`` → dropped (no chat target takes them back).
- ``tools`` → function tools (server tools, which have no ``input_schema``, are dropped);
  ``tool_choice`` ``auto`` / ``any`` / ``tool`` / ``none`` → ``auto`` / ``required`` / a named
  function / ``none``, and ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``.
- ``stop_sequences`` → ``stop``; ``temperature``, ``top_p``; ``top_k`` as an extra field (vLLM
  takes it; OpenAI refuses unknown fields, so it is dropped there); ``metadata.user_id`` →
  ``user``; ``thinking`` enabled → ``reasoning_effort`` by ``output_config.effort`` or the
  budget (not for OpenAI, which refuses it for models that do not reason); a ``system`` message
  mid-conversation stays a system message in place.

Every other field (``container``, ``mcp_servers``, ``service_tier`` …) is dropped, not refused:
clients such as Claude Code send them to every model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from server.errors import InvalidRequest, MalformedJSON, param_path
from server.pipeline.request import JSON
from server.providers.anthropic_translate import TOOL_CHOICES

log = logging.getLogger("puente.messages")

# Anthropic tool_choice type → OpenAI mode (``tool`` is a named function).
_CHOICE_MODES = {anthropic: openai for openai, anthropic in TOOL_CHOICES.items()}

# thinking.budget_tokens → reasoning_effort: the smallest effort whose budget covers it.
_EFFORTS = ((4096, "low"), (16384, "medium"))


_TAGS = frozenset({"str", "list", "int", "float", "bool", "dict", "literal"})


class _Schema(BaseModel):
    # Unknown fields are accepted and dropped; only what the translation reads is checked.
    model_config = ConfigDict(extra="allow")


class _Block(_Schema):
    type: StrictStr


class _Message(_Schema):
    # "system" mid-conversation: Claude Code's mid-conversation-system beta.
    role: Literal["user", "assistant", "system"]
    content: StrictStr | list[_Block]


class _MessagesSchema(_Schema):
    model: Annotated[StrictStr, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[_Message], Field(min_length=1)]
    system: StrictStr | list[_Block] | None = None
    stop_sequences: list[StrictStr] | None = None
    stream: StrictBool | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: list[JSON] | None = None
    tool_choice: JSON | None = None
    metadata: JSON | None = None
    thinking: JSON | None = None


class _CountSchema(_MessagesSchema):
    """``count_tokens`` takes the same body without ``max_tokens``."""

    max_tokens: Annotated[int, Field(ge=1)] | None = None  # type: ignore[assignment]


def _first_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    # Drop the tags pydantic adds for the branch of a union that failed (``str``, ``list[…]``).
    loc = [p for p in err["loc"] if isinstance(p, int) or (p.isidentifier() and p not in _TAGS)]
    # Anthropic names the field with dots (``messages.0.role``); ``param`` is OpenAI's path.
    where = ".".join(str(p) for p in loc)
    detail = "Field required" if err["type"] == "missing" else err["msg"]
    return InvalidRequest(f"{where}: {detail}", param=param_path(loc) or None)


def _invalid(param: str, detail: str) -> InvalidRequest:
    """A 400 naming the field as Anthropic does in the message (``messages.0.content``) and as
    OpenAI does in ``param`` (``messages[0].content``)."""
    dotted = re.sub(r"\[(\d+)\]", r".\1", param)
    return InvalidRequest(f"{dotted}: {detail}", param=param)


def load_body(raw: bytes, *, counting: bool = False) -> JSON:
    """A client's bytes → a checked Messages body (400 ``invalid_request_error`` otherwise)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise MalformedJSON("The request body must be a JSON object.")
    try:
        (_CountSchema if counting else _MessagesSchema).model_validate(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    return body


@dataclass(frozen=True, slots=True)
class Target:
    """What the translation knows of the model that will answer: its provider's kind
    (``vllm``, ``openai_compatible``, ``openai``, ``anthropic``, ``gemini``), or "" when the
    model is unknown (the pipeline then answers 404 anyway)."""

    kind: str = ""
    vllm_only: bool = False
    """vLLM answers, and so would every fallback: vLLM's own options may be sent."""
    native: bool = False
    """A Claude model without a persona: the Messages body can go to Anthropic as it came."""

    @property
    def takes_top_k(self) -> bool:
        # OpenAI refuses fields it does not know; vLLM and most compatible servers take top_k.
        return self.kind != "openai"

    @property
    def takes_reasoning_effort(self) -> bool:
        # OpenAI refuses it for models that do not reason (gpt-4o …), and Claude Code asks for
        # thinking on every request; vLLM takes it (gpt-oss) or ignores it.
        return self.kind != "openai"

    @property
    def takes_long_user(self) -> bool:
        """OpenAI refuses a ``user`` over 64 characters (Claude Code's is a JSON object)."""
        return self.kind != "openai"

    @property
    def takes_files(self) -> bool:
        """Chat ``file`` parts (PDFs): OpenAI's API only."""
        return self.kind == "openai"

    @property
    def max_tokens_field(self) -> str:
        # OpenAI's reasoning models refuse ``max_tokens``; every other target reads either.
        return "max_completion_tokens" if self.kind == "openai" else "max_tokens"


# -- content blocks -------------------------------------------------------------------------------


def _text_of(blocks: Any) -> str:
    """The text of a string or of a list of blocks (other blocks left out), joined."""
    if isinstance(blocks, str):
        return blocks
    return "\n\n".join(
        b["text"]
        for b in blocks or []
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _image(block: JSON, param: str) -> JSON:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise _invalid(f"{param}.source", "a base64 image needs 'media_type' and 'data'")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{param}.source", "an image source must be of type 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: JSON, target: Target) -> list[JSON]:
    """A document as chat parts where the target can read it; [] (dropped) where not."""
    source = block.get("source")
    if not isinstance(source, dict):
        return []
    title = block.get("title")
    heading = f"{title}\n\n" if isinstance(title, str) and title else ""
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return [{"type": "text", "text": heading + source["data"]}]
    if kind == "content":
        text = _text_of(source.get("content"))
        return [{"type": "text", "text": heading + text}] if text else []
    if kind == "base64" and source.get("media_type") == "application/pdf" and target.takes_files:
        data_url = f"data:application/pdf;base64,{source.get('data', '')}"
        return [
            {"type": "file", "file": {"filename": title or "document.pdf", "file_data": data_url}}
        ]
    log.debug("document of source type %s dropped for a %s model", kind, target.kind or "?")
    return []


def _user_parts(block: JSON, param: str, target: Target) -> list[JSON]:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{param}.text", "Input should be a valid string")
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        return [_image(block, param)]
    if kind == "document":
        return _document(block, target)
    # search_result, container_upload, thinking …: nothing a chat model takes.
    log.debug("content block of type %s dropped", kind)
    return []


def _tool_result(block: JSON, param: str, target: Target) -> tuple[JSON, list[JSON]]:
    """A ``tool_result`` → the ``tool`` message, and image parts for the next user turn (chat's
    tool messages take text only)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{param}.tool_use_id", "Field required")
    content = block.get("content")
    texts: list[str] = []
    images: list[JSON] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image":
                images.append(_image(part, f"{param}.content[{j}]"))
            else:
                texts += [p["text"] for p in _user_parts(part, f"{param}.content[{j}]", target)]
    text = "\n\n".join(t for t in texts if t)
    if block.get("is_error"):
        # Chat has no error flag on a tool's answer; the model must still learn the call failed.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user(message: JSON, param: str, target: Target) -> list[JSON]:
    content = message["content"]
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content):
        where = f"{param}.content[{j}]"
        if block.get("type") == "tool_result":
            result, images = _tool_result(block, where, target)
            results.append(result)
            parts += images
        else:
            parts += _user_parts(block, where, target)
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _assistant(message: JSON, param: str) -> list[JSON]:
    content = message["content"]
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            where = f"{param}.content[{j}]"
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _invalid(where, "a tool_use block needs 'id' and 'name'")
            try:
                arguments = orjson.dumps(block.get("input") or {}).decode()
            except orjson.JSONEncodeError:  # parsed up to 1,024 levels; written up to 254
                raise _invalid(f"{where}.input", "nested too deeply") from None
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        # thinking, redacted_thinking, server tool blocks: not for a chat model.
    if not texts and not calls:
        return []
    out: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return [out]


def _messages(body: JSON, target: Target) -> list[JSON]:
    out: list[JSON] = []
    system = _text_of(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(body["messages"]):
        param = f"messages[{i}]"
        if message["role"] == "user":
            out += _user(message, param, target)
        elif message["role"] == "system":
            # Kept in place; models without a system role get it folded (``system_role``).
            if text := _text_of(message["content"]):
                out.append({"role": "system", "content": text})
        else:
            out += _assistant(message, param)
    return out


# -- tools and the rest ---------------------------------------------------------------------------


def _tools(body: JSON) -> list[JSON]:
    tools = []
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or "input_schema" not in tool:
            # Anthropic's server tools (web_search, bash, text_editor …) run at Anthropic.
            log.debug("tool %s dropped: not a custom tool", i)
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools[{i}].name", "Field required")
        function: JSON = {"name": name, "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: JSON, chat: JSON) -> None:
    kind = choice.get("type")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.name", "Field required")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _CHOICE_MODES:
        chat["tool_choice"] = _CHOICE_MODES[kind]
    else:
        raise _invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def thinking_enabled(body: JSON) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _reasoning_effort(body: JSON) -> str:
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort in ("low", "medium", "high"):
        return str(effort)
    budget = body["thinking"].get("budget_tokens")
    if not isinstance(budget, int):
        return "medium"  # adaptive without an effort: the model decides; medium is nearest
    for limit, effort in _EFFORTS:
        if budget <= limit:
            return effort
    return "high"


def to_chat(body: JSON, target: Target) -> JSON:
    """A checked Messages body → the OpenAI chat body that asks the same."""
    messages = _messages(body, target)
    if not any(m["role"] != "system" for m in messages):
        raise _invalid("messages", "at least one message needs content")
    chat: JSON = {"model": body["model"], "messages": messages}
    chat[target.max_tokens_field] = body["max_tokens"]
    if body.get("stream"):
        chat["stream"] = True
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("top_k") is not None and target.takes_top_k:
        chat["top_k"] = body["top_k"]
    if tools := _tools(body):
        chat["tools"] = tools
        if isinstance(body.get("tool_choice"), dict):
            _tool_choice(body["tool_choice"], chat)
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user and (len(user) <= 64 or target.takes_long_user):
        chat["user"] = user
    if thinking_enabled(body) and target.takes_reasoning_effort:
        chat["reasoning_effort"] = _reasoning_effort(body)
    return chat
