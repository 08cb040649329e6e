"""OpenAI Chat Completions → a Gemini ``generateContent`` request body, as plain JSON in the
API's own field names (https://ai.google.dev/api/generate-content); the answer's way back is
``gemini_answer``. No ``google-genai`` types per request: building them and having the SDK dump
them again cost most of the Gemini path's CPU (``bench/README.md``, "Gemini on plain JSON").

Requests: system and developer messages become ``systemInstruction``; ``assistant`` turns become
``model`` turns; consecutive turns of one role merge; ``tool`` messages become ``functionResponse``
parts grouped in one user turn, each named after the call it answers (OpenAI's tool messages
carry only the call's id). Images become inline data — ``data:`` URLs decoded, ``http(s)`` URLs
fetched by Puente (``images``), since Gemini does not fetch arbitrary URLs.

Thought signatures: Gemini 3 refuses a replayed ``functionCall`` without the signature it came
with. Answers carry it on each tool call as ``extra_content.google.thought_signature`` (as Google's
own OpenAI-compatible endpoint does); a history without one gets Google's documented
``skip_thought_signature_validator`` on the turn's first call.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import orjson

from server.pipeline.request import JSON, ChatRequest
from server.providers import chat_params as p
from server.providers.images import Image, ImageBudget, ImageFetcher, parse_data_url

log = logging.getLogger("puente.gemini")

VENDOR = "Gemini"
# ``bytes`` travel as standard base64 in the API's JSON (proto3 JSON mapping).
SKIP_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode("ascii")

_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}
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
        "response_format",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
    ]
)


async def _image(part: p.ImageURL, images: ImageFetcher, budget: ImageBudget) -> JSON:
    image: Image
    budget.admit(part.param)
    if part.url.startswith("data:"):
        image = budget.spend(parse_data_url(part.url, part.param), part.param)
    elif part.url.startswith(("https://", "http://")):
        image = await images.fetch(part.url, part.param, budget)
    else:
        raise p.invalid(part.param, "Image URLs must be http(s) or data: URLs.")
    return {"inlineData": {"mimeType": image.media_type, "data": image.base64}}


def _signature(call: p.ToolCall, param: str) -> str | None:
    extra = call.extra.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if not isinstance(signature, str) or not signature:
        return None
    try:
        # Re-encoded, so what goes to Gemini is the canonical form of what Gemini gave.
        return base64.b64encode(base64.b64decode(signature, validate=True)).decode("ascii")
    except (binascii.Error, ValueError):
        raise p.invalid(
            f"{param}.extra_content.google.thought_signature",
            "A thought signature must be given back exactly as Puente sent it.",
        ) from None


def _function_response(message: JSON, param: str, names: dict[str, str]) -> JSON:
    call_id = message.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise p.invalid(
            f"{param}.tool_call_id",
            f"'{param}.tool_call_id' does not match a tool call of an earlier assistant message.",
        )
    text = p.plain_text(message.get("content"), f"{param}.content", VENDOR)
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini wants an object; a tool's JSON object goes as is, anything else under "result".
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


async def convert_messages(
    messages: list[JSON], images: ImageFetcher
) -> tuple[list[str], list[JSON]]:
    """The system texts and the ``contents`` (``{"role", "parts"}`` objects)."""
    system: list[str] = []
    contents: list[JSON] = []
    names: dict[str, str] = {}
    budget = images.budget()

    def add(role: str, parts: list[JSON]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, message in enumerate(messages):
        role, param = message["role"], f"messages[{i}]"
        content = message.get("content")
        if role in ("system", "developer"):
            if text := p.plain_text(content, f"{param}.content", VENDOR):
                system.append(text)
        elif role == "user":
            parts: list[JSON] = []
            for part in p.content_parts(content, f"{param}.content", VENDOR):
                if isinstance(part, p.Text):
                    parts.append({"text": part.text})
                else:
                    parts.append(await _image(part, images, budget))
            add("user", parts)
        elif role == "assistant":
            text = p.plain_text(content, f"{param}.content", VENDOR)
            parts = [{"text": text}] if text else []
            for j, call in enumerate(p.tool_calls(message, param)):
                names[call.id] = call.name
                piece: JSON = {"functionCall": {"name": call.name, "args": call.arguments}}
                signature = _signature(call, f"{param}.tool_calls[{j}]")
                if signature or j == 0:
                    piece["thoughtSignature"] = signature or SKIP_SIGNATURE
                parts.append(piece)
            add("model", parts)
        elif role == "tool":
            add("user", [_function_response(message, param, names)])
        else:
            raise p.unsupported(
                f"{param}.role", f"Messages with role '{role}' are not supported; use 'tool'."
            )
    return system, contents


def _number(body: JSON, key: str, *, integer: bool = False) -> Any:
    """A numeric field as Gemini's config takes it, or a 400 naming it."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise p.invalid(key, f"'{key}' must be {kind}.")
    return value


def _generation_config(body: JSON) -> JSON:
    """``generationConfig``: only what the client set, as the SDK left out what was None."""
    fmt = p.response_format(body)
    n = _number(body, "n", integer=True) or 1
    config: dict[str, Any] = {
        "temperature": _number(body, "temperature"),
        "topP": _number(body, "top_p"),
        "candidateCount": n if n > 1 else None,
        "maxOutputTokens": p.max_tokens(body),
        "stopSequences": p.stop_sequences(body) or None,
        "seed": _number(body, "seed", integer=True),
        "presencePenalty": _number(body, "presence_penalty"),
        "frequencyPenalty": _number(body, "frequency_penalty"),
        "responseMimeType": "application/json" if fmt.kind != "text" else None,
        "responseJsonSchema": fmt.schema,
    }
    return {key: value for key, value in config.items() if value is not None}


def _tools(body: JSON) -> tuple[list[JSON] | None, JSON | None]:
    """``tools`` and ``toolConfig``."""
    functions = p.functions(body, VENDOR)
    if not functions:
        return None, None
    declarations = []
    for f in functions:
        declaration: JSON = {"name": f.name}
        if f.description is not None:
            declaration["description"] = f.description
        declaration["parametersJsonSchema"] = f.parameters
        declarations.append(declaration)
    choice = p.tool_choice(body)
    config: JSON | None = None
    if choice is not None:
        calling: JSON = {"mode": _TOOL_MODES[choice.mode]}
        if choice.name:
            calling["allowedFunctionNames"] = [choice.name]
        config = {"functionCallingConfig": calling}
    return [{"functionDeclarations": declarations}], config


async def build_request(request: ChatRequest, images: ImageFetcher) -> JSON:
    """The JSON body of ``models/{model}:generateContent`` (and ``:streamGenerateContent``)."""
    body = request.body
    p.no_logprobs(body, VENDOR)
    ignored = sorted(set(body) - _READ)
    if ignored:
        log.debug("fields Gemini has no counterpart for, left out: %s", ", ".join(ignored))
    system, contents = await convert_messages(request.messages, images)
    if not contents:
        raise p.invalid(
            "messages", "Gemini needs at least one user or assistant message, not only system ones."
        )
    wire: JSON = {"contents": contents}
    if system:
        wire["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    tools, tool_config = _tools(body)
    if tools is not None:
        wire["tools"] = tools
    if tool_config is not None:
        wire["toolConfig"] = tool_config
    if config := _generation_config(body):
        wire["generationConfig"] = config
    return wire
