"""A Gemini ``GenerateContentResponse`` (https://ai.google.dev/api/generate-content#response-body),
whole or one streamed piece, read from its JSON → OpenAI's ``chat.completion`` and its chunks.

Read field by field, not through ``google-genai``'s types (validating each answer and each
stream piece into them was most of the Gemini path's CPU): each field Puente uses is checked for
its JSON type, and an answer that does not fit — a piece that is not an object, parts that are
not a list, a count that is not a non-negative integer — raises the SDK's
``UnknownApiResponseError``, which ``vendor_errors`` maps, as every other off-protocol answer, to
a 502 ``upstream_bad_response``. Fields Puente does not use are not looked at, so a new field
from Google changes nothing.

Finish reasons: ``MAX_TOKENS`` → ``length``; the safety family (``SAFETY``, ``RECITATION`` …) →
``content_filter``; any other → ``tool_calls`` when the candidate called a tool, else ``stop``.
An answer with no candidate at all is a prompt Gemini blocked (``promptFeedback.blockReason``):
an empty ``content_filter`` choice, as OpenAI would say it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from google.genai.errors import UnknownApiResponseError

from server.pipeline.request import JSON, StreamChunk
from server.providers import chat_shapes as shapes

log = logging.getLogger("puente.gemini")

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
# ``usageMetadata``'s counts (int32 in the API, so JSON numbers).
_COUNTS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "thoughtsTokenCount",
)


def off_protocol(what: str) -> UnknownApiResponseError:
    # ``vendor_errors`` logs the refusal by its class; which field it was is told here. Field
    # paths only: never a value, which is the vendor's (or the prompt's) content.
    log.debug("Gemini's answer does not fit its API: %s", what)
    return UnknownApiResponseError(f"Gemini's answer does not fit its API: {what}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise off_protocol(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise off_protocol(f"{where} is not a list")
    return value


def _text(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise off_protocol(f"{where} is not a string")
    return value


def _count(value: Any, where: str) -> int:
    # A negative count would pay the client's budget back; text or a float is no count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise off_protocol(f"{where} is not a token count")
    return value


def _signature(value: Any, where: str) -> str:
    """A ``bytes`` field: standard or URL-safe base64, with or without padding (proto3 JSON);
    given to the client in standard form, which is what it hands back."""
    if not isinstance(value, str):
        raise off_protocol(f"{where} is not base64")
    standard = value.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise off_protocol(f"{where} is not base64") from None
    return base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class Candidate:
    index: int
    texts: list[str]
    calls: list[JSON]
    """OpenAI ``tool_calls`` entries, already translated."""
    finish_reason: str | None
    """Gemini's, as sent."""


@dataclass(slots=True)
class Answer:
    response_id: str | None
    candidates: list[Candidate]
    usage: dict[str, int] | None
    """The counts in ``usageMetadata``; None when the piece has none."""


def _tool_call(part: dict[str, Any], call: Any, where: str) -> JSON:
    call = _object(call, f"{where}.functionCall")
    name = _text(call.get("name"), f"{where}.functionCall.name")
    args = _object(call.get("args"), f"{where}.functionCall.args")
    given_id = _text(call.get("id"), f"{where}.functionCall.id")
    extra: JSON = {}
    signature = part.get("thoughtSignature")
    if signature:
        signature = _signature(signature, f"{where}.thoughtSignature")
        extra["extra_content"] = {"google": {"thought_signature": signature}}
    arguments = orjson.dumps(args).decode()
    return shapes.tool_call(given_id or shapes.call_id(), name or "", arguments, **extra)


def _candidate(raw: Any, where: str) -> Candidate:
    if not isinstance(raw, dict):
        raise off_protocol(f"{where} is not an object")
    index = raw.get("index", 0)
    if index is None:
        index = 0
    _count(index, f"{where}.index")
    content = _object(raw.get("content"), f"{where}.content")
    texts: list[str] = []
    calls: list[JSON] = []
    for i, part in enumerate(_list(content.get("parts"), f"{where}.content.parts")):
        at = f"{where}.content.parts[{i}]"
        if not isinstance(part, dict):
            raise off_protocol(f"{at} is not an object")
        call = part.get("functionCall")
        if call is not None:
            calls.append(_tool_call(part, call, at))
            continue
        text = part.get("text")
        if text is None:
            continue
        if not isinstance(text, str):
            raise off_protocol(f"{at}.text is not a string")
        thought = part.get("thought")
        if thought is not None and not isinstance(thought, bool):
            raise off_protocol(f"{at}.thought is not a boolean")
        if text and not thought:  # thinking is not part of the answer
            texts.append(text)
    finish = _text(raw.get("finishReason"), f"{where}.finishReason")
    return Candidate(index, texts, calls, finish)


def read_answer(data: Any) -> Answer:
    """One ``GenerateContentResponse`` (the whole answer, or one piece of a stream)."""
    if not isinstance(data, dict):
        raise off_protocol("the answer is not a JSON object")
    candidates = [
        _candidate(raw, f"candidates[{i}]")
        for i, raw in enumerate(_list(data.get("candidates"), "candidates"))
    ]
    meta = data.get("usageMetadata")
    counts: dict[str, int] | None = None
    if meta is not None:
        meta = _object(meta, "usageMetadata")
        counts = {}
        for key in _COUNTS:
            value = meta.get(key)
            if value is not None:
                counts[key] = _count(value, f"usageMetadata.{key}")
    response_id = _text(data.get("responseId"), "responseId")
    return Answer(response_id, candidates, counts)


def usage(counts: dict[str, int] | None) -> JSON:
    """OpenAI counts thinking in ``completion_tokens``; Gemini's candidates count leaves it out."""
    if counts is None:
        return shapes.usage(0, 0)
    thoughts = counts.get("thoughtsTokenCount", 0)
    prompt = counts.get("promptTokenCount", 0) + counts.get("toolUsePromptTokenCount", 0)
    return shapes.usage(
        prompt,
        counts.get("candidatesTokenCount", 0) + thoughts,
        cached=counts.get("cachedContentTokenCount", 0),
        reasoning=thoughts,
    )


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def _new_id() -> str:
    return "chatcmpl-" + shapes.call_id()[5:]


def to_completion(data: Any, model: str) -> JSON:
    answer = read_answer(data)
    choices = []
    for candidate in answer.candidates:
        texts, calls = candidate.texts, candidate.calls
        reply = shapes.message("".join(texts) if texts or not calls else None, calls)
        finish = _finish(candidate.finish_reason, bool(calls)) or "stop"
        choices.append(shapes.choice(candidate.index, reply, finish))
    if not choices:
        # No candidate at all: the prompt itself was blocked (``promptFeedback.blockReason``).
        choices = [shapes.choice(0, shapes.message("", []), "content_filter")]
    return shapes.completion(answer.response_id or _new_id(), model, choices, usage(answer.usage))


class StreamTranslator:
    """Gemini's streamed ``GenerateContentResponse`` pieces → OpenAI chunks, for one answer."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.chunks: shapes.ChunkMaker | None = None
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index → tool calls sent so far
        self.finished: set[int] = set()
        self.counts: dict[str, int] | None = None

    def feed(self, data: Any) -> Iterator[StreamChunk]:
        """One piece, parsed from its ``data:`` line; read whole before any chunk comes out, so
        a malformed piece sends nothing of itself."""
        answer = read_answer(data)
        if self.chunks is None:
            self.chunks = shapes.ChunkMaker(answer.response_id or _new_id(), self.model)
        chunks = self.chunks
        if answer.usage is not None:
            self.counts = answer.usage
        for candidate in answer.candidates:
            index = candidate.index
            if index not in self.started:
                self.started.add(index)
                yield chunks.delta({"role": "assistant", "content": ""}, index=index)
            if candidate.texts:
                yield chunks.delta({"content": "".join(candidate.texts)}, index=index)
            for call in candidate.calls:
                n = self.calls.get(index, 0)
                self.calls[index] = n + 1
                yield chunks.delta({"tool_calls": [{"index": n, **call}]}, index=index)
            finish = _finish(candidate.finish_reason, index in self.calls)
            if finish is not None and index not in self.finished:
                self.finished.add(index)
                yield chunks.delta({}, finish, index=index)

    def finish(self) -> Iterator[StreamChunk]:
        chunks = self.chunks or shapes.ChunkMaker(_new_id(), self.model)
        if not self.started:
            # The prompt was blocked before any candidate: say so the way OpenAI would.
            yield chunks.delta({"role": "assistant", "content": ""})
            yield chunks.delta({}, "content_filter")
        elif self.started - self.finished:
            raise off_protocol(f"the stream for model '{self.model}' ended without a finish reason")
        yield chunks.usage(usage(self.counts))
