"""OpenAI Chat Completions ⇄ Gemini ``generateContent``
(https://ai.google.dev/api/generate-content), built on the ``google-genai`` SDK's types.

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
from collections.abc import Iterator
from typing import Any

import orjson
from google.genai import types

from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers import chat_params as p
from server.providers import chat_shapes as shapes
from server.providers.images import Image, ImageBudget, ImageFetcher, parse_data_url

log = logging.getLogger("puente.gemini")

VENDOR = "Gemini"
SKIP_SIGNATURE = b"skip_thought_signature_validator"

_CONTENT_FILTER = frozenset(
    [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    ]
)
_TOOL_MODES = {
    "auto": types.FunctionCallingConfigMode.AUTO,
    "none": types.FunctionCallingConfigMode.NONE,
    "required": types.FunctionCallingConfigMode.ANY,
    "function": types.FunctionCallingConfigMode.ANY,
}
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


# -- request --------------------------------------------------------------------------------------


async def _image(part: p.ImageURL, images: ImageFetcher, budget: ImageBudget) -> types.Part:
    image: Image
    budget.admit(part.param)
    if part.url.startswith("data:"):
        image = budget.spend(parse_data_url(part.url, part.param), part.param)
    elif part.url.startswith(("https://", "http://")):
        image = await images.fetch(part.url, part.param, budget)
    else:
        raise p.invalid(part.param, "Image URLs must be http(s) or data: URLs.")
    return types.Part(inline_data=types.Blob(mime_type=image.media_type, data=image.data))


def _signature(call: p.ToolCall, param: str) -> bytes | None:
    extra = call.extra.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if not isinstance(signature, str) or not signature:
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise p.invalid(
            f"{param}.extra_content.google.thought_signature",
            "A thought signature must be given back exactly as Puente sent it.",
        ) from None


def _function_response(message: JSON, param: str, names: dict[str, str]) -> types.Part:
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
    return types.Part(function_response=types.FunctionResponse(name=name, response=response))


async def convert_messages(
    messages: list[JSON], images: ImageFetcher
) -> tuple[list[str], list[types.Content]]:
    system: list[str] = []
    contents: list[types.Content] = []
    names: dict[str, str] = {}
    budget = images.budget()

    def add(role: str, parts: list[types.Part]) -> None:
        if not parts:
            return
        last = contents[-1] if contents else None
        if last is not None and last.role == role and last.parts is not None:
            last.parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))

    for i, message in enumerate(messages):
        role, param = message["role"], f"messages[{i}]"
        content = message.get("content")
        if role in ("system", "developer"):
            if text := p.plain_text(content, f"{param}.content", VENDOR):
                system.append(text)
        elif role == "user":
            parts = []
            for part in p.content_parts(content, f"{param}.content", VENDOR):
                if isinstance(part, p.Text):
                    parts.append(types.Part(text=part.text))
                else:
                    parts.append(await _image(part, images, budget))
            add("user", parts)
        elif role == "assistant":
            text = p.plain_text(content, f"{param}.content", VENDOR)
            parts = [types.Part(text=text)] if text else []
            for j, call in enumerate(p.tool_calls(message, param)):
                names[call.id] = call.name
                signature = _signature(call, f"{param}.tool_calls[{j}]")
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(name=call.name, args=call.arguments),
                        thought_signature=signature or (SKIP_SIGNATURE if j == 0 else None),
                    )
                )
            add("model", parts)
        elif role == "tool":
            add("user", [_function_response(message, param, names)])
        else:
            raise p.unsupported(
                f"{param}.role", f"Messages with role '{role}' are not supported; use 'tool'."
            )
    return system, contents


def _tool_config(body: JSON) -> types.ToolConfig | None:
    choice = p.tool_choice(body)
    if choice is None:
        return None
    return types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode=_TOOL_MODES[choice.mode],
            allowed_function_names=[choice.name] if choice.name else None,
        )
    )


def _number(body: JSON, key: str, *, integer: bool = False) -> Any:
    """A numeric field as Gemini's config takes it, or a 400 naming it (not the SDK's 500)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise p.invalid(key, f"'{key}' must be {kind}.")
    return value


async def build_request(
    request: ChatRequest, images: ImageFetcher
) -> tuple[list[types.Content], types.GenerateContentConfig]:
    """The ``contents`` and ``config`` of ``client.aio.models.generate_content``."""
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
    fmt = p.response_format(body)
    functions = p.functions(body, VENDOR)
    n = _number(body, "n", integer=True) or 1
    config = types.GenerateContentConfig(
        system_instruction=(
            types.Content(parts=[types.Part(text=t) for t in system]) if system else None
        ),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        candidate_count=n if n > 1 else None,
        max_output_tokens=p.max_tokens(body),
        stop_sequences=p.stop_sequences(body) or None,
        seed=_number(body, "seed", integer=True),
        presence_penalty=_number(body, "presence_penalty"),
        frequency_penalty=_number(body, "frequency_penalty"),
        response_mime_type="application/json" if fmt.kind != "text" else None,
        response_json_schema=fmt.schema,
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=f.name, description=f.description, parameters_json_schema=f.parameters
                    )
                    for f in functions
                ]
            )
        ]
        if functions
        else None,
        tool_config=_tool_config(body) if functions else None,
        # Puente answers tool calls to its client; the SDK must not try to run them itself.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    return contents, config


# -- answer ---------------------------------------------------------------------------------------


def usage(meta: types.GenerateContentResponseUsageMetadata | None) -> JSON:
    """OpenAI counts thinking in ``completion_tokens``; Gemini's candidates count leaves it out."""
    if meta is None:
        return shapes.usage(0, 0)
    counts = meta.model_dump(exclude_none=True).values()
    if any(isinstance(n, int) and n < 0 for n in counts):
        # A negative count would pay the client's budget back; refuse the answer instead.
        raise UpstreamProtocolError("Gemini reported usage that is not token counts.")
    thoughts = meta.thoughts_token_count or 0
    prompt = (meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0)
    return shapes.usage(
        prompt,
        (meta.candidates_token_count or 0) + thoughts,
        cached=meta.cached_content_token_count or 0,
        reasoning=thoughts,
    )


def _finish(reason: Any, has_calls: bool) -> str | None:
    if reason is None:
        return None
    name = str(getattr(reason, "value", reason))
    if name == "MAX_TOKENS":
        return "length"
    if name in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def _tool_call(part: types.Part) -> JSON:
    call = part.function_call
    assert call is not None
    extra: JSON = {}
    if part.thought_signature:
        signature = base64.b64encode(part.thought_signature).decode("ascii")
        extra["extra_content"] = {"google": {"thought_signature": signature}}
    arguments = orjson.dumps(call.args or {}).decode()
    return shapes.tool_call(call.id or shapes.call_id(), call.name or "", arguments, **extra)


def _split(candidate: types.Candidate) -> tuple[list[str], list[JSON]]:
    texts, calls = [], []
    for part in (candidate.content.parts if candidate.content else None) or []:
        if part.function_call is not None:
            calls.append(_tool_call(part))
        elif part.text and not part.thought:
            texts.append(part.text)
    return texts, calls


def response_id(response: types.GenerateContentResponse) -> str:
    return response.response_id or "chatcmpl-" + shapes.call_id()[5:]


def to_completion(response: types.GenerateContentResponse, model: str) -> JSON:
    choices = []
    for candidate in response.candidates or []:
        texts, calls = _split(candidate)
        reply = shapes.message("".join(texts) if texts or not calls else None, calls)
        finish = _finish(candidate.finish_reason, bool(calls)) or "stop"
        choices.append(shapes.choice(candidate.index or 0, reply, finish))
    if not choices:
        # No candidate at all: the prompt itself was blocked (``promptFeedback.blockReason``).
        choices = [shapes.choice(0, shapes.message("", []), "content_filter")]
    return shapes.completion(response_id(response), model, choices, usage(response.usage_metadata))


class StreamTranslator:
    """Gemini's streamed ``GenerateContentResponse`` pieces → OpenAI chunks, for one answer."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.chunks: shapes.ChunkMaker | None = None
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index → tool calls sent so far
        self.finished: set[int] = set()
        self.meta: types.GenerateContentResponseUsageMetadata | None = None

    def feed(self, response: types.GenerateContentResponse) -> Iterator[StreamChunk]:
        if self.chunks is None:
            self.chunks = shapes.ChunkMaker(response_id(response), self.model)
        chunks = self.chunks
        if response.usage_metadata is not None:
            self.meta = response.usage_metadata
        for candidate in response.candidates or []:
            index = candidate.index or 0
            if index not in self.started:
                self.started.add(index)
                yield chunks.delta({"role": "assistant", "content": ""}, index=index)
            texts, calls = _split(candidate)
            if texts:
                yield chunks.delta({"content": "".join(texts)}, index=index)
            for call in calls:
                n = self.calls.get(index, 0)
                self.calls[index] = n + 1
                yield chunks.delta({"tool_calls": [{"index": n, **call}]}, index=index)
            finish = _finish(candidate.finish_reason, index in self.calls)
            if finish is not None and index not in self.finished:
                self.finished.add(index)
                yield chunks.delta({}, finish, index=index)

    def finish(self) -> Iterator[StreamChunk]:
        chunks = self.chunks or shapes.ChunkMaker("chatcmpl-" + shapes.call_id()[5:], self.model)
        if not self.started:
            # The prompt was blocked before any candidate: say so the way OpenAI would.
            yield chunks.delta({"role": "assistant", "content": ""})
            yield chunks.delta({}, "content_filter")
        elif self.started - self.finished:
            raise UpstreamProtocolError(
                f"Gemini ended the stream for model '{self.model}' without a finish reason."
            )
        yield chunks.usage(usage(self.meta))
